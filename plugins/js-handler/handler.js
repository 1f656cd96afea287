/**
 * A JavaScript handler whose payload picks its outcome, for Spool's end-to-end tests.
 *
 * | payload | what happens |
 * |---|---|
 * | `{"do":"retry","delay_ms":N}` | retry after N ms (the queue's backoff without it); acks from attempt 2 on when `"once":true` |
 * | `{"do":"dead-letter","reason":"..."}` | dead-letter with the reason |
 * | `{"do":"publish","topic":"t","body":...}` | publishes `body` to `t` (header `from: js-handler`), then acks |
 * | `{"do":"kv"}` | increments the kv counter `count`, acks; with `"topic":"t"` publishes `{"count":n}` to `t` first |
 * | `{"do":"config","key":"k","topic":"t"}` | publishes `{"key":k,"value":config(k)}` to `t`, then acks |
 * | `{"do":"throw"}` | throws (a trap) |
 * | anything else, or not JSON | acks |
 *
 * Build: `scripts/build.sh` (scripts/componentize.mjs with componentize-js).
 */
import * as spool from '../../guest-sdk/js/spool.js';

export const handle = spool.handler((msg) => {
  let command;
  try {
    command = msg.json();
  } catch {
    return spool.ack();
  }
  if (command === null || typeof command !== 'object') return spool.ack();

  switch (command.do) {
    case 'retry':
      if (command.once && msg.attempt > 1) return spool.ack();
      return spool.retry(command.delay_ms);
    case 'dead-letter':
      return spool.deadLetter(command.reason ?? '');
    case 'publish':
      return publishThenAck(command.topic, command.body ?? null, { from: 'js-handler' });
    case 'kv': {
      const count = Number(spool.kv.getText('count') ?? '0') + 1;
      spool.kv.set('count', String(count));
      spool.log.info(`count is now ${count}`);
      if (command.topic) return publishThenAck(command.topic, { count });
      return spool.ack();
    }
    case 'config':
      return publishThenAck(command.topic, { key: command.key, value: spool.config(command.key) ?? null });
    case 'throw':
      throw new Error(`js-handler: throw requested by message ${msg.id}`);
    default:
      return spool.ack();
  }
});

/** Publish and ack, or retry with the queue's backoff when the host refuses. */
function publishThenAck(topic, body, headers) {
  try {
    const id = spool.publish(topic, body, headers);
    spool.log.info(`published ${id} to ${topic}`);
    return spool.ack();
  } catch (e) {
    spool.log.warn(e.message);
    return spool.retry();
  }
}
