'use strict';
// AMQP connection sharing. warren multiplexes the sessions of one (user,
// vhost) onto ONE AMQP connection; Web-STOMP opens one per session (the test
// checks that instead). Either way, a closed session's exclusive queues must
// go away even while the user's other sessions (and so warren's shared
// connection) live on.
//
// Each test logs in as its own throw-away user so that counting that user's
// connections with rabbitmqctl is not disturbed by other test files.
//
// Sharing is per worker (each worker has its own AMQP connections), so this
// file runs warren with one worker; workers.test.js covers several.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const amqp = require('./lib/amqp');
const ctl = require('./lib/rabbitmqctl');
const { RawStomp } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');
const { unique, waitFor } = require('./lib/util');

const skip = T.suiteSkip() || ctl.ctlSkip();

describe('connection sharing', { skip }, () => {
  let target;
  const { cleanup } = useTarget((t) => (target = t), { workers: 1 });

  const newUser = async () => {
    const u = unique('user');
    cleanup(() => ctl.deleteUser(u));
    await ctl.addUser(u, 'pw', ['/', T.cfg.vhost]);
    return u;
  };
  /**
   * The user's AMQP connections as [{ pid, vhost }]: network connections from
   * list_connections plus the owners of the user's channels (Web-STOMP uses
   * Erlang direct connections, which only show up through their channels).
   */
  const connectionsOf = async (user) => {
    const byPid = new Map();
    for (const c of await ctl.listConnections(['pid', 'user', 'vhost'])) {
      if (c.user === user) byPid.set(c.pid, { pid: c.pid, vhost: c.vhost });
    }
    for (const c of await ctl.listChannels(['connection', 'user', 'vhost'])) {
      if (c.user === user) byPid.set(c.connection, { pid: c.connection, vhost: c.vhost });
    }
    return [...byPid.values()];
  };
  /** Waits until user has at least n connections, then returns them all. */
  const waitConnections = (user, n) =>
    waitFor(async () => {
      const cs = await connectionsOf(user);
      return cs.length >= n && cs;
    }, undefined, `${n} AMQP connection(s) of ${user}`);

  const perSession = T.isWarren ? 0 : 1; // extra connections per extra session

  it(`two sessions of one user: ${T.isWarren ? 'one shared AMQP connection' : 'one connection each (Web-STOMP)'}`, async () => {
    const u = await newUser();
    const a = await StompSession.connect(target.url, { login: u, passcode: 'pw' });
    const b = await StompSession.connect(target.url, { login: u, passcode: 'pw' });
    // Both sessions work over it, each with its own subscriptions.
    const k = unique('share');
    const subA = await a.subscribeReceipt(`/topic/${k}`, { id: 'same-id' });
    const subB = await b.subscribeReceipt(`/topic/${k}`, { id: 'same-id' });
    const want = 1 + perSession;
    const cs = await waitConnections(u, want);
    assert.equal(cs.length, want, JSON.stringify(cs));
    await a.publishReceipt(`/topic/${k}`, 'to both');
    assert.equal((await subA.next()).body, 'to both');
    assert.equal((await subB.next()).body, 'to both');
    await a.disconnect();
    await b.publishReceipt(`/topic/${k}`, 'after a left');
    assert.equal((await subB.next()).body, 'after a left');
    await b.disconnect();
  });

  it('sessions on different vhosts use different connections', async () => {
    const u = await newUser();
    const a = await StompSession.connect(target.url, { login: u, passcode: 'pw', host: '/' });
    const b = await StompSession.connect(target.url, { login: u, passcode: 'pw', host: T.cfg.vhost });
    const c = await StompSession.connect(target.url, { login: u, passcode: 'pw', host: T.cfg.vhost });
    for (const s of [a, b, c]) await s.subscribeReceipt(`/topic/${unique('v')}`, { id: 'v' });
    const cs = await waitConnections(u, 2 + perSession);
    assert.equal(cs.length, 2 + perSession, JSON.stringify(cs));
    assert.deepEqual([...new Set(cs.map((x) => x.vhost))].sort(), ['/', T.cfg.vhost].sort());
    for (const s of [a, b, c]) await s.disconnect();
  });

  it('a closed session\'s exclusive queues are deleted while the user\'s other sessions stay', async () => {
    const u = await newUser();
    const stay = await StompSession.connect(target.url, { login: u, passcode: 'pw' });
    const leave = await StompSession.connect(target.url, { login: u, passcode: 'pw' });
    const topicQ = unique('exq');
    const svc = unique('svc');
    cleanup(() => amqp.deleteQueue(svc));
    await leave.subscribeReceipt(`/topic/${unique('k')}`, { id: 't', 'x-queue-name': topicQ });
    assert.ok(await amqp.checkQueue(topicQ), 'subscription queue exists');
    // A temp queue too: learn its real name from the request's reply_to.
    await amqp.declareQueue(svc, { durable: false });
    const server = await amqp.consume(svc);
    leave.publish(`/amq/queue/${svc}`, 'req', { 'reply-to': '/temp-queue/x' });
    const tempQ = (await server.next()).properties.replyTo;
    assert.ok(await amqp.checkQueue(tempQ), 'temp queue exists');
    await server.cancel();

    await leave.disconnect();
    await amqp.waitQueueGone(topicQ);
    await amqp.waitQueueGone(tempQ);

    // The remaining session is unaffected.
    const k = unique('stay');
    const sub = await stay.subscribeReceipt(`/topic/${k}`, { id: 's' });
    await stay.publishReceipt(`/topic/${k}`, 'fine');
    assert.equal((await sub.next()).body, 'fine');
    await stay.disconnect();
  });

  it('a dropped socket (no DISCONNECT) also releases its exclusive queues', async () => {
    const u = await newUser();
    const stay = await StompSession.connect(target.url, { login: u, passcode: 'pw' });
    const c = await RawStomp.connect(target.url, { login: u, passcode: 'pw' });
    const q = unique('dropq');
    await c.withReceipt('SUBSCRIBE', { id: 'd', destination: `/exchange/amq.fanout`, 'x-queue-name': q });
    assert.ok(await amqp.checkQueue(q));
    c.close();
    await amqp.waitQueueGone(q);
    await stay.disconnect();
  });
});
