'use strict';
// Broker-side failures (DESIGN.md invariant 3): when the AMQP connection
// drops, every session on it gets an ERROR saying so and is closed; warren
// reconnects (with backoff, over several configured brokers) and serves new
// sessions as soon as a broker is reachable. Also: an unreachable or mute
// broker answers CONNECT with an ERROR instead of a hang, the broker deleting
// a subscribed queue ends only that session, and a refused login does not
// poison the (user, vhost) connection pool.
//
// warren only: Web-STOMP runs inside the broker and has no broker connection
// to lose. The broker node is shared with the other test files, so nothing
// here is broker-wide: each test logs in as its own throw-away user and only
// that user's AMQP connections are closed (rabbitmqctl close_all_user_connections), or
// warren reaches the broker through a TCP proxy of this file that can refuse,
// accept or cut connections (no other client uses it).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const T = require('./lib/target');
const amqp = require('./lib/amqp');
const ctl = require('./lib/rabbitmqctl');
const { RawStomp } = require('./lib/raw');
const { expectError } = require('./lib/check');
const { unique, waitFor, withTimeout, WAIT_MS } = require('./lib/util');

const skip = T.suiteSkip() || ctl.ctlSkip() || T.warrenOnly('Web-STOMP has no broker connection of its own to lose');

const CONNECT_TIMEOUT_MS = 1000;
// Short backoff so that the tests do not wait on it (it only delays, never decides).
const BACKOFF = { amqp_reconnect_min_ms: 50, amqp_reconnect_max_ms: 200 };

/**
 * A TCP proxy to the test broker on a port of our choosing. listen() accepts
 * and forwards, close() stops listening (connections are then refused), cut()
 * drops every proxied connection at once (the broker vanishes without an AMQP
 * connection.close). mute:true accepts but never forwards (a broker that
 * never answers the AMQP handshake).
 */
class Proxy {
  constructor(port, { mute = false } = {}) {
    this.port = port;
    this.mute = mute;
    this.sockets = new Set();
    this.pairs = [];
    this.accepted = 0;
    this.toBroker = 0; // bytes received from warren (forwarded unless mute)
    this.waiters = [];
    this.silent = false;
    this.server = null;
  }

  /** Resolves once more than n bytes came from warren in total. */
  fromWarren(n) {
    if (this.toBroker > n) return Promise.resolve();
    return withTimeout(new Promise((resolve) => this.waiters.push({ n, resolve })), WAIT_MS, `more than ${n} bytes from warren`);
  }

  count(d) {
    this.toBroker += d.length;
    this.waiters = this.waiters.filter((w) => (this.toBroker > w.n ? w.resolve() : true));
  }

  track(s) {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => s.destroy());
  }

  onConnection(down) {
    this.accepted += 1;
    this.track(down);
    down.on('data', (d) => this.count(d));
    if (this.mute) return;
    const up = net.connect({ host: T.cfg.amqpHost, port: T.cfg.amqpPort });
    this.track(up);
    down.pipe(up);
    up.pipe(down);
    this.pairs.push({ down, up });
    down.on('close', () => up.destroy());
    // A silent broker stays silent even if the real one gives up on us.
    up.on('close', () => this.silent || down.destroy());
  }

  listen() {
    this.server = net.createServer((s) => this.onConnection(s));
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', resolve);
    });
  }

  /**
   * Stops forwarding on the open connections, towards warren (the broker's
   * replies, confirms and heartbeats are held) and, with both:true, towards
   * the broker too: a broker that went silent without closing TCP.
   */
  hold({ both = false } = {}) {
    this.silent = both;
    for (const { down, up } of this.pairs) {
      up.unpipe(down);
      up.pause();
      if (both) {
        down.unpipe(up);
        down.pause();
      }
    }
  }

  /** Drops every connection (both directions); resolves once they are all closed here. */
  async cut() {
    const all = [...this.sockets];
    const closed = all.map((s) => new Promise((r) => (s.destroyed ? r() : s.once('close', r))));
    for (const s of all) s.destroy();
    await withTimeout(Promise.all(closed), WAIT_MS, 'proxied sockets to close');
  }

  /** Stops accepting (later connects are refused) and cuts what is open. */
  async close() {
    const s = this.server;
    this.server = null;
    // server.close() reports only once every connection has ended: cut them first.
    const stopped = s ? new Promise((r) => s.close(r)) : Promise.resolve();
    await this.cut();
    await withTimeout(stopped, WAIT_MS, 'proxy to stop listening');
  }
}

/** CONNECT as user/pass on vhost '/'; resolves with the session once CONNECTED. */
const login = (url, user, pass) => RawStomp.connect(url, { login: user, passcode: pass, host: '/' });

/** Opens a socket and sends CONNECT; resolves with { c, reply } (reply: first frame). */
async function tryLogin(url, user, pass) {
  const c = await RawStomp.open(url);
  const reply = await c.handshake({ login: user, passcode: pass, host: '/' });
  return { c, reply };
}

/**
 * The session still works end to end: SUBSCRIBE to a fresh topic (RECEIPT),
 * SEND to it with a receipt, and get both the MESSAGE and the RECEIPT (in
 * either order: the RECEIPT waits for the broker's confirm).
 */
async function roundTrip(c, what) {
  const dest = `/topic/${unique('rt')}`;
  const id = unique('sub');
  await c.withReceipt('SUBSCRIBE', { id, destination: dest });
  const receipt = unique('send');
  const body = `round trip: ${what}`;
  c.sendFrame('SEND', { destination: dest, receipt }, body);
  const frames = await c.frames.take(2, WAIT_MS, `MESSAGE and RECEIPT (${what})`);
  const msg = frames.find((f) => f.command === 'MESSAGE');
  const rcpt = frames.find((f) => f.command === 'RECEIPT');
  assert.ok(msg && rcpt, `MESSAGE and RECEIPT, got ${frames.map((f) => f.command).join(', ')}`);
  assert.equal(msg.text, body);
  assert.equal(msg.headers.subscription, id);
  assert.equal(rcpt.headers['receipt-id'], receipt);
  await c.withReceipt('UNSUBSCRIBE', { id });
}

/** ERROR saying the broker connection was lost, then the close, nothing after it. */
async function expectBrokerLost(c) {
  const f = await expectError(c, 'Broker connection lost');
  assert.equal(f.headers['content-type'], 'text/plain');
  assert.ok(f.text.length > 0, 'ERROR body says why');
  return f;
}

/**
 * ERROR for an unreachable broker, within `ms` of CONNECT, then the close.
 * open: how to get the WebSocket (default: RawStomp.open(url)).
 */
async function expectUnreachable(url, ms, open = () => RawStomp.open(url)) {
  const c = await open();
  const started = Date.now();
  const reply = await c.handshake({ login: 'guest', passcode: 'guest', host: '/' });
  const took = Date.now() - started;
  assert.equal(reply.command, 'ERROR', `${reply.command} ${reply.text}`);
  assert.match(reply.headers.message ?? '', /unreachable/i);
  assert.match(reply.text, /127\.0\.0\.1:\d+/, 'ERROR body names the broker that was tried');
  assert.ok(took < ms, `ERROR after ${took} ms (bound ${ms} ms)`);
  await c.waitClose();
  assert.equal(c.frames.length, 0, 'no frame after ERROR');
  return reply;
}

describe('broker failures', { skip }, () => {
  let target;
  const warrens = [];
  const proxies = [];
  const users = [];
  const cleanup = [];

  const start = async (options = {}) => {
    // One worker: these cases count and cut one upstream's AMQP connections (workers.test.js covers several workers).
    const w = await T.startTarget({ amqp_connect_timeout_ms: CONNECT_TIMEOUT_MS, ...BACKOFF, workers: 1, ...options });
    warrens.push(w);
    return w;
  };
  const proxy = async (opts) => {
    const p = new Proxy(await T.freePort(), opts);
    proxies.push(p);
    return p;
  };
  const newUser = async () => {
    const u = unique('buser');
    users.push(u);
    await ctl.addUser(u, 'pw', ['/']);
    return u;
  };
  /** The pids of user's AMQP connections at the broker. */
  const connectionsOf = async (user) =>
    (await ctl.listConnections(['pid', 'user'])).filter((x) => x.user === user).map((x) => x.pid);
  /** Waits until user has exactly n AMQP connections; returns their pids. */
  const waitConnections = (user, n) =>
    waitFor(async () => {
      const cs = await connectionsOf(user);
      return cs.length === n && cs;
    }, undefined, `${n} AMQP connection(s) of ${user}`);

  /**
   * The broker closes user's AMQP connections (connection.close 320
   * CONNECTION_FORCED "test kill"). Only this file's throw-away users.
   */
  const kill = (user) => ctl.ctl('close_all_user_connections', user, 'test kill');

  before(async () => {
    target = await start();
  });
  after(async () => {
    for (const f of cleanup) await f().catch(() => {});
    for (const p of proxies) await p.close().catch(() => {});
    for (const u of users) await ctl.deleteUser(u);
    await amqp.closeAll();
    const errors = [];
    for (const w of warrens) await w.stop().catch((e) => errors.push(e));
    if (errors.length) throw errors[0];
  });

  it('the broker closes the AMQP connection: every session on it gets ERROR and is closed; the next session reconnects', async () => {
    const u = await newUser();
    const subscribed = await login(target.url, u, 'pw');
    const idle = await login(target.url, u, 'pw');
    await subscribed.withReceipt('SUBSCRIBE', { id: 'kill', destination: `/topic/${unique('kill')}` });
    const [name] = await waitConnections(u, 1);

    await kill(u);
    const fs = [await expectBrokerLost(subscribed), await expectBrokerLost(idle)];
    for (const f of fs) assert.match(f.text, /test kill/, 'the broker\'s reason is passed on');

    const again = await login(target.url, u, 'pw');
    await roundTrip(again, 'after the broker closed the connection');
    const [renewed] = await waitConnections(u, 1);
    assert.notEqual(renewed, name, 'a new AMQP connection');
    again.close();
  });

  it('sessions of other users (other AMQP connections) are not affected', async () => {
    const victim = await newUser();
    const bystander = await newUser();
    const v = await login(target.url, victim, 'pw');
    const b = await login(target.url, bystander, 'pw');
    await waitConnections(victim, 1);
    await kill(victim);
    await expectBrokerLost(v);
    await roundTrip(b, 'bystander');
    b.close();
  });

  it('unreachable broker: CONNECT gets ERROR (no hang) and the close; warren stays up and answers the next one the same way', async () => {
    const dead = await T.freePort();
    const w = await start({ brokers: `127.0.0.1:${dead}` });
    const bound = CONNECT_TIMEOUT_MS + BACKOFF.amqp_reconnect_max_ms + 5000;
    const f = await expectUnreachable(w.url, bound);
    assert.match(f.text, new RegExp(`127\\.0\\.0\\.1:${dead}`));
    await expectUnreachable(w.url, bound);
    await expectUnreachable(w.url, bound);
  });

  it('a session refused while waiting for the broker frees its connection slot at once (reading was paused)', async () => {
    const dead = await T.freePort();
    const w = await start({ brokers: `127.0.0.1:${dead}`, max_connections: 1 });
    // The slot may still be held by the TCP probe that saw warren listening.
    const first = () => waitFor(() => RawStomp.open(w.url), WAIT_MS, 'the connection slot after the start-up probe', 20);
    await expectUnreachable(w.url, CONNECT_TIMEOUT_MS + BACKOFF.amqp_reconnect_max_ms + 5000, first);
    // warren frees the slot when it reads our close reply and FIN; the bound
    // stays well under its 5 s close linger, which used to hold the slot.
    const next = await waitFor(() => RawStomp.open(w.url), 3000, 'the only connection slot to be free again', 20);
    next.close();
  });

  it('a broker that accepts TCP but never answers: ERROR after amqp_connect_timeout_ms, not a hang', async () => {
    const mute = await proxy({ mute: true });
    await mute.listen();
    const w = await start({ brokers: `127.0.0.1:${mute.port}` });
    await expectUnreachable(w.url, CONNECT_TIMEOUT_MS * 2 + BACKOFF.amqp_reconnect_max_ms + 5000);
    assert.ok(mute.accepted >= 1, 'warren did reach the mute broker');
    await mute.close();
  });

  it('SIGTERM while a login to a mute broker is pending: warren exits at once, not after amqp_connect_timeout_ms', async () => {
    const mute = await proxy({ mute: true });
    await mute.listen();
    const w = await start({ brokers: `127.0.0.1:${mute.port}`, amqp_connect_timeout_ms: 60000 });
    const c = await RawStomp.open(w.url);
    c.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: 'guest', passcode: 'guest' });
    await mute.fromWarren(0); // the AMQP protocol header: the login is under way
    await w.stop(); // fails unless warren exits cleanly within its 10 s bound
    await c.waitClose();
    await mute.close();
  });

  it('failover: the first configured broker is down, sessions connect through the second and work', async () => {
    const dead = await T.freePort();
    const w = await start({ brokers: `127.0.0.1:${dead},${T.cfg.amqpHost}:${T.cfg.amqpPort}` });
    const u1 = await newUser();
    const u2 = await newUser();
    const a = await login(w.url, u1, 'pw');
    const b = await login(w.url, u2, 'pw');
    await roundTrip(a, 'failover, first user');
    await roundTrip(b, 'failover, second user');
    // Cross-user delivery: both AMQP connections reach the same broker.
    const dest = `/topic/${unique('fo')}`;
    await b.withReceipt('SUBSCRIBE', { id: 'fo', destination: dest });
    await a.withReceipt('SEND', { destination: dest }, 'from a to b');
    assert.equal((await b.expect('MESSAGE')).text, 'from a to b');
    // And after losing the broker it reconnects through the same list.
    await waitConnections(u1, 1);
    await kill(u1);
    await expectBrokerLost(a);
    const a2 = await login(w.url, u1, 'pw');
    await roundTrip(a2, 'failover, after reconnect');
    for (const c of [a2, b]) c.close();
  });

  it('the broker comes and goes: unreachable → ERROR, reachable → served at once, cut → ERROR and reconnect', async () => {
    const p = await proxy();
    const w = await start({ brokers: `127.0.0.1:${p.port}` });
    await expectUnreachable(w.url, CONNECT_TIMEOUT_MS + BACKOFF.amqp_reconnect_max_ms + 5000);

    await p.listen();
    const u = await newUser();
    const a = await login(w.url, u, 'pw');
    const b = await login(w.url, u, 'pw');
    await roundTrip(a, 'through the proxy');
    assert.equal(p.accepted, 1, 'the two sessions share one AMQP connection');

    // The TCP connection vanishes without connection.close (network failure).
    await p.cut();
    await expectBrokerLost(a);
    await expectBrokerLost(b);
    const c = await login(w.url, u, 'pw');
    await roundTrip(c, 'after the connection was cut');
    assert.equal(p.accepted, 2, 'one new AMQP connection');

    // The broker goes away for good: sessions learn it, new ones are refused.
    await p.close();
    await expectBrokerLost(c);
    await expectUnreachable(w.url, CONNECT_TIMEOUT_MS + BACKOFF.amqp_reconnect_max_ms + 5000);
  });

  it('a receipted SEND in flight when the connection drops: no RECEIPT, the ERROR carries its receipt-id', async () => {
    const p = await proxy();
    await p.listen();
    const w = await start({ brokers: `127.0.0.1:${p.port}` });
    const u = await newUser();
    const c = await login(w.url, u, 'pw');
    const key = unique('inflight');
    const seen = await amqp.capture('amq.topic', key);
    // The broker gets the message but its confirm never reaches warren.
    p.hold();
    c.sendFrame('SEND', { destination: `/topic/${key}`, receipt: 'in-flight' }, 'unconfirmed');
    assert.equal((await seen.next()).content.toString(), 'unconfirmed');
    await p.cut();
    const f = await expectBrokerLost(c);
    assert.equal(f.headers['receipt-id'], 'in-flight', 'the lost SEND is reported, never silently dropped');
    await seen.cancel();
  });

  it('a session waiting for CONNECTED when the connection drops gets the same ERROR', async () => {
    const p = await proxy();
    await p.listen();
    const w = await start({ brokers: `127.0.0.1:${p.port}` });
    const u = await newUser();
    const first = await login(w.url, u, 'pw');
    p.hold(); // channel.open-ok for the next session is held
    const sent = p.toBroker;
    const c = await RawStomp.open(w.url);
    c.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: u, passcode: 'pw' });
    await p.fromWarren(sent); // warren's channel.open went through the proxy
    await p.cut();
    await expectBrokerLost(first);
    await expectBrokerLost(c);
    assert.equal(c.wsMessages.length, 1, 'ERROR only, no CONNECTED');
  });

  it('a broker that goes silent without closing TCP is detected by AMQP heartbeats', async () => {
    const p = await proxy();
    await p.listen();
    const w = await start({ brokers: `127.0.0.1:${p.port}`, amqp_heartbeat_s: 1 });
    const u = await newUser();
    const c = await login(w.url, u, 'pw');
    await roundTrip(c, 'before the broker goes silent');
    p.hold({ both: true });
    const f = await expectBrokerLost(c);
    assert.match(f.text, /heartbeat|timed? ?out/i);
    await p.close();
  });

  it('the broker deletes a subscribed queue: ERROR "Server cancelled subscription" with `subscription`; the other session on the connection works on', async () => {
    const u = await newUser();
    const q = unique('delq');
    cleanup.push(() => amqp.deleteQueue(q));
    await amqp.declareQueue(q, { durable: false });
    const victim = await login(target.url, u, 'pw');
    const other = await login(target.url, u, 'pw');
    await victim.withReceipt('SUBSCRIBE', { id: 'doomed', destination: `/amq/queue/${q}` });
    await other.withReceipt('SUBSCRIBE', { id: 'other-q', destination: `/topic/${unique('keep')}` });
    const [name] = await waitConnections(u, 1);

    await amqp.deleteQueue(q);
    const f = await expectError(victim, 'Server cancelled subscription');
    assert.equal(f.headers.subscription, 'doomed');

    await roundTrip(other, 'after the queue of another session was deleted');
    assert.deepEqual(await connectionsOf(u), [name], 'still the same AMQP connection');
    other.close();
  });

  it('a wrong passcode while a good session is open: Bad CONNECT; the good session and new good logins are unaffected', async () => {
    const u = await newUser();
    const good = await login(target.url, u, 'pw');
    await good.withReceipt('SUBSCRIBE', { id: 'g', destination: `/topic/${unique('g')}` });

    const bad = await RawStomp.open(target.url);
    bad.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: u, passcode: 'wrong' });
    const f = await expectError(bad, 'Bad CONNECT');
    assert.match(f.text, new RegExp(u));

    await roundTrip(good, 'after a refused login of the same user');
    const next = await login(target.url, u, 'pw');
    await roundTrip(next, 'new session after a refused login');
    const cs = await waitConnections(u, 1);
    assert.equal(cs.length, 1, 'good sessions still share one connection');
    for (const c of [good, next]) c.close();
  });

  it('a wrong passcode first (no connection for the user yet): Bad CONNECT, then the right one connects', async () => {
    const u = await newUser();
    for (let i = 0; i < 2; i++) {
      const { c, reply } = await tryLogin(target.url, u, `wrong-${i}`);
      assert.equal(reply.command, 'ERROR');
      assert.equal(reply.headers.message, 'Bad CONNECT');
      await c.waitClose();
    }
    const good = await login(target.url, u, 'pw');
    await roundTrip(good, 'after two refused logins');
    good.close();
  });

  it('good and bad logins of one user at the same moment: each gets its own answer', async () => {
    const u = await newUser();
    const [g, b] = await Promise.all([RawStomp.open(target.url), RawStomp.open(target.url)]);
    g.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: u, passcode: 'pw' });
    b.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: u, passcode: 'wrong' });
    const [gr, br] = await Promise.all([g.next(), b.next()]);
    assert.equal(gr.command, 'CONNECTED', `${gr.command} ${gr.text}`);
    assert.equal(br.command, 'ERROR');
    assert.equal(br.headers.message, 'Bad CONNECT');
    await b.waitClose();
    await roundTrip(g, 'concurrent good login');
    g.close();
  });
});
