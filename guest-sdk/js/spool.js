/**
 * Write Spool plugins in JavaScript: wrap one function with `handler` or `filter`.
 *
 * A Spool plugin is a WebAssembly component implementing a world of `wit/spool.wit`.
 * componentize-js turns an ES module into one when the module exports what the world exports
 * (`handle` for a handler, `route` for a filter). This module converts between the generated
 * shapes (tagged objects, `Uint8Array`s, `BigInt`s) and plain JavaScript:
 *
 * ```js
 * import { handler, ack, retry, publish, log } from './spool.js';
 *
 * export const handle = handler((msg) => {
 *   const order = msg.json();
 *   if (order.amount > 1000) publish('orders.review', { id: order.id });
 *   log.info(`order ${order.id}`);
 *   return ack();
 * });
 * ```
 *
 * An exception that escapes the function traps the plugin: that message fails with category
 * `trap` and is retried with the queue's backoff (then dead-lettered), like any failure.
 *
 * @module spool
 */

import * as host from 'spool:plugin/host@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A host call was refused or failed (e.g. no route for a topic, a filter calling publish). */
export class SpoolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SpoolError';
  }
}

/** One message as the plugin sees it. */
export class Message {
  /** @param {object} raw the message record as componentize-js passes it */
  constructor(raw) {
    /** Stable id, the same across redeliveries. @type {string} */
    this.id = raw.id;
    /** @type {string} */
    this.queue = raw.queue;
    /** The topic it was published to, or null. @type {string|null} */
    this.topic = raw.topic ?? null;
    /** @type {Uint8Array} */
    this.payload = raw.payload;
    /** The header pairs as sent. @type {Array<[string, string]>} */
    this.headerList = raw.headers;
    /** Headers by name; the first value wins when a name repeats. @type {Object<string,string>} */
    this.headers = {};
    for (const [name, value] of raw.headers) {
      if (!(name in this.headers)) this.headers[name] = value;
    }
    /** 1 on the first delivery, 2 on the first retry... @type {number} */
    this.attempt = raw.attempt;
    /** @type {string|null} */
    this.correlationId = raw.correlationId ?? null;
    /** Unix time in milliseconds. @type {number} */
    this.enqueuedAt = Number(raw.enqueuedAt);
  }

  /** The payload decoded as UTF-8. @returns {string} */
  get text() {
    return decoder.decode(this.payload);
  }

  /** The payload parsed as JSON; throws a `SyntaxError` when it is not JSON. */
  json() {
    return JSON.parse(this.text);
  }

  /**
   * The first header called `name`, compared case-insensitively.
   * @param {string} name
   * @returns {string|undefined}
   */
  header(name) {
    const wanted = name.toLowerCase();
    const found = this.headerList.find(([key]) => key.toLowerCase() === wanted);
    return found ? found[1] : undefined;
  }
}

// Outcomes of a handler.

/** Done: the message is acknowledged and never delivered again. */
export function ack() {
  return { tag: 'ack' };
}

/**
 * Try again after `delayMs` milliseconds, or the queue's backoff when omitted.
 * @param {number} [delayMs]
 */
export function retry(delayMs) {
  // The WIT type is option<u64>, which componentize-js represents as a BigInt or undefined.
  return { tag: 'retry', val: delayMs == null ? undefined : BigInt(Math.round(delayMs)) };
}

/**
 * Give up now: the message goes to the dead-letter queue with `reason`.
 * @param {string} reason
 */
export function deadLetter(reason) {
  return { tag: 'dead-letter', val: String(reason) };
}

// Decisions of a filter.

/**
 * Deliver unchanged to `queues`; none means the route's own queue.
 * @param {string[]} [queues]
 */
export function deliver(queues = []) {
  return { tag: 'deliver', val: [...queues] };
}

/** Deliver nowhere. */
export function drop() {
  return { tag: 'drop' };
}

/**
 * Deliver a rewritten message (payload as for `publish`) to `queues`.
 * @param {Uint8Array|string|object} payload
 * @param {Object<string,string>|Array<[string,string]>} [headers]
 * @param {string[]} [queues]
 */
export function transform(payload, headers, queues = []) {
  return {
    tag: 'transform',
    val: { queues: [...queues], payload: toBytes(payload), headers: toPairs(headers) },
  };
}

// Host calls.

/**
 * Publish to `topic` through the router; returns the new message's id. `payload` may be a
 * `Uint8Array`, a string (sent as UTF-8) or any other value (sent as JSON). The message is
 * written together with this handler's ack and never otherwise. Throws `SpoolError`.
 * @param {string} topic
 * @param {Uint8Array|string|object} payload
 * @param {Object<string,string>|Array<[string,string]>} [headers]
 * @returns {string}
 */
export function publish(topic, payload, headers) {
  return call(`publish to ${topic}`, () => host.publish(topic, toBytes(payload), toPairs(headers)));
}

/** Tell the host the handler is still working, extending the message's lease. */
export function heartbeat() {
  host.heartbeat();
}

/**
 * A value of `[plugins.NAME.config]` in spool.toml, or `fallback`.
 * @param {string} key
 * @param {string} [fallback]
 * @returns {string|undefined}
 */
export function config(key, fallback) {
  return host.config(key) ?? fallback;
}

/** Lines in the host's log, tagged with the plugin, its version and the message id. */
export const log = {
  trace: (message) => host.log('trace', String(message)),
  debug: (message) => host.log('debug', String(message)),
  info: (message) => host.log('info', String(message)),
  warn: (message) => host.log('warn', String(message)),
  error: (message) => host.log('error', String(message)),
};

/** A small key-value store private to this plugin, shared by all its versions. */
export const kv = {
  /** The bytes stored under `key`, or undefined. @returns {Uint8Array|undefined} */
  get: (key) => call(`kv get ${key}`, () => host.kvGet(key)),
  /** The value under `key` as text, or undefined. @returns {string|undefined} */
  getText: (key) => {
    const value = kv.get(key);
    return value === undefined ? undefined : decoder.decode(value);
  },
  /** Store `value` (as for `publish`) under `key`; durable once it returns. */
  set: (key, value) => call(`kv set ${key}`, () => host.kvSet(key, toBytes(value))),
  /** Remove `key` (no error when it is absent). */
  delete: (key) => call(`kv delete ${key}`, () => host.kvDelete(key)),
};

// Making a function the plugin's export.

/**
 * Wrap `fn(msg) => outcome` as the `handle` export: `export const handle = handler(fn)`.
 * Returning nothing acknowledges the message.
 * @param {(msg: Message) => object|undefined} fn
 */
export function handler(fn) {
  return (raw) => fn(new Message(raw)) ?? ack();
}

/**
 * Wrap `fn(msg) => decision` as the `route` export: `export const route = filter(fn)`.
 * Returning nothing delivers the message unchanged to the route's queue.
 * @param {(msg: Message) => object|undefined} fn
 */
export function filter(fn) {
  return (raw) => fn(new Message(raw)) ?? deliver();
}

function call(what, f) {
  try {
    return f();
  } catch (e) {
    // A WIT `result` error arrives as a thrown value carrying the host's text as `payload`.
    const detail = e && e.payload !== undefined ? e.payload : e;
    throw new SpoolError(`${what}: ${detail}`);
  }
}

function toBytes(payload) {
  if (payload instanceof Uint8Array) return payload;
  if (typeof payload === 'string') return encoder.encode(payload);
  return encoder.encode(JSON.stringify(payload ?? null));
}

function toPairs(headers) {
  if (headers == null) return [];
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  return entries.map(([key, value]) => [String(key), String(value)]);
}
