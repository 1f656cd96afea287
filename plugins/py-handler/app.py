"""A Python handler whose payload picks its outcome, for Spool's end-to-end tests.

| payload | what happens |
|---|---|
| ``{"do":"retry","delay_ms":N}`` | retry after N ms (the queue's backoff without it); acks from attempt 2 on when ``"once":true`` |
| ``{"do":"dead-letter","reason":"..."}`` | dead-letter with the reason |
| ``{"do":"publish","topic":"t","body":...}`` | publishes ``body`` to ``t`` (header ``from: py-handler``), then acks |
| ``{"do":"kv"}`` | increments the kv counter ``count``, acks; with ``"topic":"t"`` publishes ``{"count":n}`` to ``t`` first |
| ``{"do":"config","key":"k","topic":"t"}`` | publishes ``{"key":k,"value":config(k)}`` to ``t``, then acks |
| ``{"do":"raise"}`` | raises (a trap) |
| anything else, or not JSON | acks |

Build: ``scripts/build.sh`` (componentize-py with ``guest-sdk/python`` on its path).
"""

import spool


@spool.handler
def handle(msg: spool.Message):
    try:
        command = msg.json()
    except ValueError:
        return spool.ack()
    if not isinstance(command, dict):
        return spool.ack()
    what = command.get("do")

    if what == "retry":
        if command.get("once") and msg.attempt > 1:
            return spool.ack()
        return spool.retry(command.get("delay_ms"))
    if what == "dead-letter":
        return spool.dead_letter(command.get("reason", ""))
    if what == "publish":
        return _publish(command["topic"], command.get("body"), {"from": "py-handler"})
    if what == "kv":
        count = int(spool.kv.get("count") or b"0") + 1
        spool.kv.set("count", str(count))
        spool.log.info(f"count is now {count}")
        if "topic" in command:
            return _publish(command["topic"], {"count": count}, None)
        return spool.ack()
    if what == "config":
        key = command["key"]
        return _publish(command["topic"], {"key": key, "value": spool.config(key)}, None)
    if what == "raise":
        raise RuntimeError(f"py-handler: raise requested by message {msg.id}")
    return spool.ack()


def _publish(topic, body, headers):
    """Publish and ack, or retry with the queue's backoff when the host refuses."""
    try:
        new_id = spool.publish(topic, body, headers)
    except spool.SpoolError as e:
        spool.log.warn(str(e))
        return spool.retry()
    spool.log.info(f"published {new_id} to {topic}")
    return spool.ack()
