/**
 * A JavaScript routing filter whose payload picks the decision, for Spool's end-to-end tests.
 *
 * | payload | decision |
 * |---|---|
 * | `{"route":"drop"}` | drop |
 * | `{"route":"to","queues":["a","b"]}` | deliver unchanged to those queues |
 * | `{"route":"transform","queues":[...]}` | deliver `{"original":<payload>,"tag":config("tag")}` with header `filtered-by: js-filter` |
 * | anything else, or not JSON | deliver to the route's own queue |
 *
 * Build: `scripts/build.sh` (scripts/componentize.mjs with componentize-js).
 */
import * as spool from '../../guest-sdk/js/spool.js';

export const route = spool.filter((msg) => {
  let command;
  try {
    command = msg.json();
  } catch {
    return spool.deliver();
  }
  switch (command?.route) {
    case 'drop':
      return spool.drop();
    case 'to':
      return spool.deliver(command.queues ?? []);
    case 'transform':
      return spool.transform(
        { original: command, tag: spool.config('tag') ?? null },
        { 'filtered-by': 'js-filter' },
        command.queues ?? [],
      );
    default:
      return spool.deliver();
  }
});
