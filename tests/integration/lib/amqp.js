'use strict';
// amqplib on the AMQP side of the bridge: the backend services that publish
// to and consume from what browsers use. Connections are closed by
// closeAll() in the test file's after() hook.

const amqp = require('amqplib');
const { cfg } = require('./target');
const { AsyncQueue, waitFor, WAIT_MS } = require('./util');

const open = new Set();

/** Opens an AMQP connection as guest (or user/pass) on vhost ('/' default). */
async function connect({ vhost = '/', user = 'guest', pass = 'guest' } = {}) {
  const url = `amqp://${encodeURIComponent(user)}:${encodeURIComponent(pass)}@${cfg.amqpHost}:${cfg.amqpPort}/${encodeURIComponent(vhost)}`;
  const conn = await amqp.connect(url);
  conn.on('error', () => {});
  open.add(conn);
  conn.on('close', () => open.delete(conn));
  return conn;
}

let shared = null;
/** One lazily opened connection per vhost for the whole file. */
async function conn(vhost = '/') {
  shared = shared || new Map();
  if (!shared.has(vhost)) shared.set(vhost, connect({ vhost }));
  return shared.get(vhost);
}

/** A fresh confirm channel (errors close it, never the test). */
async function channel(vhost = '/') {
  const ch = await (await conn(vhost)).createConfirmChannel();
  ch.on('error', () => {});
  return ch;
}

/** Publishes and waits for the broker's confirm. */
async function publish(exchange, key, body, options = {}, vhost = '/') {
  const ch = await channel(vhost);
  try {
    ch.publish(exchange, key, Buffer.isBuffer(body) ? body : Buffer.from(body), options);
    await ch.waitForConfirms();
  } finally {
    await ch.close().catch(() => {});
  }
}

/**
 * Publishes with mandatory set; resolves 'returned' when no queue was bound
 * (basic.return arrives before the confirm), 'routed' otherwise.
 */
async function publishMandatory(exchange, key, body, options = {}, vhost = '/') {
  const ch = await channel(vhost);
  let returned = false;
  ch.on('return', () => {
    returned = true;
  });
  try {
    ch.publish(exchange, key, Buffer.from(body), { ...options, mandatory: true });
    await ch.waitForConfirms();
  } finally {
    await ch.close().catch(() => {});
  }
  return returned ? 'returned' : 'routed';
}

/**
 * Consumes queue into an AsyncQueue of amqplib messages (auto-ack unless
 * noAck:false). Returns { messages, next(), ch, cancel() }.
 */
async function consume(queue, { noAck = true, vhost = '/' } = {}) {
  const ch = await channel(vhost);
  const messages = new AsyncQueue(`AMQP message on ${queue}`);
  const { consumerTag } = await ch.consume(queue, (m) => m && messages.push(m), { noAck });
  return {
    ch,
    messages,
    next: (ms, what) => messages.next(ms, what),
    cancel: async () => {
      await ch.cancel(consumerTag).catch(() => {});
      await ch.close().catch(() => {});
    },
  };
}

/**
 * Declares a private queue bound to exchange with key and consumes it: the way
 * a test observes what a STOMP SEND published to an exchange.
 */
async function capture(exchange, key, vhost = '/') {
  const ch = await channel(vhost);
  const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true });
  await ch.bindQueue(queue, exchange, key);
  const c = await consume(queue, { vhost });
  return { ...c, queue };
}

/** Declares a queue (durable unless opts say otherwise) and returns its name. */
async function declareQueue(name, opts = {}, vhost = '/') {
  const ch = await channel(vhost);
  try {
    await ch.assertQueue(name, { durable: true, ...opts });
  } finally {
    await ch.close().catch(() => {});
  }
  return name;
}

async function declareExchange(name, type = 'topic', opts = {}, vhost = '/') {
  const ch = await channel(vhost);
  try {
    await ch.assertExchange(name, type, { durable: false, autoDelete: false, ...opts });
  } finally {
    await ch.close().catch(() => {});
  }
  return name;
}

/**
 * queue.declare passive: { queue, messageCount, consumerCount } or null if
 * absent; { queue, locked: true } for another connection's exclusive queue.
 */
async function checkQueue(name, vhost = '/') {
  const ch = await channel(vhost);
  try {
    return await ch.checkQueue(name);
  } catch (e) {
    if (e.code === 404) return null;
    if (e.code === 405) return { queue: name, locked: true };
    throw e;
  } finally {
    await ch.close().catch(() => {});
  }
}

/** Waits until the queue does not exist (auto-delete/exclusive clean-up is asynchronous). */
function waitQueueGone(name, vhost = '/', ms = WAIT_MS) {
  return waitFor(async () => (await checkQueue(name, vhost)) === null, ms, `queue ${name} to be deleted`);
}

/** Waits until the queue holds n ready messages. */
function waitQueueCount(name, n, vhost = '/', ms = WAIT_MS) {
  return waitFor(async () => (await checkQueue(name, vhost))?.messageCount === n, ms, `${n} messages in ${name}`);
}

async function deleteQueue(name, vhost = '/') {
  const ch = await channel(vhost);
  try {
    await ch.deleteQueue(name);
  } catch {
    /* already gone */
  } finally {
    await ch.close().catch(() => {});
  }
}

async function deleteExchange(name, vhost = '/') {
  const ch = await channel(vhost);
  try {
    await ch.deleteExchange(name);
  } catch {
    /* already gone */
  } finally {
    await ch.close().catch(() => {});
  }
}

/** basic.get one message (noAck), or false. */
async function get(queue, vhost = '/') {
  const ch = await channel(vhost);
  try {
    return await ch.get(queue, { noAck: true });
  } finally {
    await ch.close().catch(() => {});
  }
}

async function closeAll() {
  for (const c of [...open]) await c.close().catch(() => {});
  shared = null;
}

module.exports = {
  connect,
  conn,
  channel,
  publish,
  publishMandatory,
  consume,
  capture,
  declareQueue,
  declareExchange,
  checkQueue,
  waitQueueGone,
  waitQueueCount,
  deleteQueue,
  deleteExchange,
  get,
  closeAll,
};
