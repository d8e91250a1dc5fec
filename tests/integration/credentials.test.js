'use strict';
// Credentials stay fresh (amqp_auth_reuse_ms, bridge/upstream.c conn_fresh()):
// sessions of one credential share an AMQP connection only within a window
// after the broker authenticated it, so a password changed (or a user
// deleted) in RabbitMQ stops working for new sessions within that window,
// while the sessions already open carry on; a connection nobody may join any
// more closes as soon as its last session leaves.
//
// One worker (connection counts), a throw-away user per test.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { usePerTestTargets } = require('./lib/fixture');
const ctl = require('./lib/rabbitmqctl');
const { RawStomp } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');
const { unique, waitFor } = require('./lib/util');

const skip = T.suiteSkip() || ctl.ctlSkip() || (!T.isWarren && 'warren-only: amqp_auth_reuse_ms');

describe('credentials stay fresh', { skip }, () => {
  const { start, newUser, connectionsOf } = usePerTestTargets({ workers: 1 }, 'cred');

  it('amqp_auth_reuse_ms=0: a changed password refuses the next session at once; the open one works on', async () => {
    const t = await start({ amqp_auth_reuse_ms: 0, amqp_idle_close_ms: 3600000 });
    const u = await newUser();
    const a = await StompSession.connect(t.url, { login: u, passcode: 'pw' });
    const k = unique('cred');
    const sub = await a.subscribeReceipt(`/topic/${k}`, { id: 'a' });
    await ctl.ctl('change_password', u, 'pw2');
    // The old password: a fresh login at the broker, refused (before, the session joined a's connection).
    const old = await RawStomp.open(t.url);
    const f = await old.handshake({ login: u, passcode: 'pw' });
    assert.equal(f.command, 'ERROR');
    assert.equal(f.headers.message, 'Bad CONNECT');
    assert.match(f.text, new RegExp(`Access refused for user '${u}'`));
    await old.waitClose();
    // The session opened before the change carries on.
    await a.publishReceipt(`/topic/${k}`, 'still here');
    assert.equal((await sub.next()).body, 'still here');
    // The new password: its own connection.
    const c = await StompSession.connect(t.url, { login: u, passcode: 'pw2' });
    await waitFor(async () => (await connectionsOf(u)).length === 2, undefined, `2 AMQP connections of ${u}`);
    // a's connection takes nobody any more: it closes when a leaves, not amqp_idle_close_ms (an hour) later.
    await a.disconnect();
    await waitFor(async () => (await connectionsOf(u)).length === 1, undefined, `a's connection of ${u} to close`);
    await c.disconnect();
  });

  it('within amqp_auth_reuse_ms sessions of one credential share one connection', async () => {
    const t = await start({ amqp_auth_reuse_ms: 3600000 });
    const u = await newUser();
    const a = await StompSession.connect(t.url, { login: u, passcode: 'pw' });
    const b = await StompSession.connect(t.url, { login: u, passcode: 'pw' });
    const cs = await waitFor(async () => {
      const c = await connectionsOf(u);
      return c.length === 1 && c;
    }, undefined, `one AMQP connection of ${u}`);
    assert.equal(cs.length, 1);
    await a.disconnect();
    await b.disconnect();
  });
});
