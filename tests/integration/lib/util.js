'use strict';
// Small promise helpers shared by the integration tests: a queue of events that
// tests await with a generous timeout (never a sleep), condition polling for
// state only visible by asking (rabbitmqctl, checkQueue), unique names so that
// test files run in parallel against one broker.

const crypto = require('node:crypto');

/** Default time a test waits for something that should happen (ms). */
const WAIT_MS = 15000;

/** Rejects with a message naming what was awaited if p does not settle in ms. */
function withTimeout(p, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * FIFO of events (frames, messages). push() from callbacks, await next()
 * in tests. fail(err) makes every pending and future next() reject once the
 * queue is drained (e.g. the socket closed).
 */
class AsyncQueue {
  constructor(label) {
    this.label = label || 'event';
    this.items = [];
    this.waiters = [];
    this.error = null;
  }

  push(item) {
    const w = this.waiters.shift();
    if (w) w.resolve(item);
    else this.items.push(item);
  }

  fail(err) {
    if (this.error) return;
    this.error = err;
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  get length() {
    return this.items.length;
  }

  next(ms = WAIT_MS, what) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    if (this.error) return Promise.reject(this.error);
    let waiter;
    const p = new Promise((resolve, reject) => {
      waiter = { resolve, reject };
      this.waiters.push(waiter);
    });
    return withTimeout(p, ms, what || this.label).catch((e) => {
      // Forget the timed-out waiter so a later push is not lost.
      this.waiters = this.waiters.filter((w) => w !== waiter);
      throw e;
    });
  }

  /** Waits for n items and returns them in order. */
  async take(n, ms = WAIT_MS, what) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(await this.next(ms, `${what || this.label} #${i + 1} of ${n}`));
    return out;
  }
}

/**
 * Calls fn() until it returns a truthy value (returned) or throws an error
 * that is not "retry", every intervalMs, failing after ms. For state that can
 * only be polled (broker listings), not for synchronising with our own events.
 */
async function waitFor(fn, ms = WAIT_MS, what = 'condition', intervalMs = 100) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

let counter = 0;
/** A name unique across processes and runs: it-<tag>-<pid>-<n>-<random>. */
function unique(tag) {
  counter += 1;
  return `it-${tag}-${process.pid}-${counter}-${crypto.randomBytes(3).toString('hex')}`;
}

/** Promise that resolves once emitter emits event (first argument list). */
function once(emitter, event, ms = WAIT_MS) {
  return withTimeout(new Promise((resolve) => emitter.once(event, (...a) => resolve(a))), ms, `'${event}'`);
}

/** A non-loopback IPv4 address of this machine, or null (to reach warren as a remote client would). */
function outsideAddress() {
  for (const list of Object.values(require('node:os').networkInterfaces())) {
    for (const a of list || []) if (a.family === 'IPv4' && !a.internal && !a.address.startsWith('127.')) return a.address;
  }
  return null;
}

/** Resolves true when a TCP connection to host:port succeeds. */
function reachable(host, port) {
  return new Promise((resolve) => {
    const s = require('node:net').connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

module.exports = { WAIT_MS, withTimeout, AsyncQueue, waitFor, unique, once, outsideAddress, reachable };
