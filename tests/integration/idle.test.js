'use strict';
// Idle AMQP connections (amqp_idle_close_ms). warren shares one AMQP
// connection among the sessions of a (vhost, login, passcode); once the last
// of them is gone the connection is closed after amqp_idle_close_ms, so that
// credentials used by one session only (OAuth 2 tokens as passcodes) do not
// leave a connection behind each.
//
// warren only: Web-STOMP has no AMQP connection of its own per credential.
// The test logs in as its own throw-away user, so counting that user's
// connections with rabbitmqctl is not disturbed by other test files.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const ctl = require('./lib/rabbitmqctl');
const { StompSession } = require('./lib/stomp');
const { unique, waitFor } = require('./lib/util');

const skip = T.suiteSkip() || ctl.ctlSkip() || T.warrenOnly('Web-STOMP opens no AMQP connection of its own');

const IDLE_MS = 300;

describe('idle AMQP connections', { skip }, () => {
  let target;
  const users = [];

  before(async () => {
    target = await T.startTarget({ amqp_idle_close_ms: String(IDLE_MS) });
  });
  after(async () => {
    for (const u of users) await ctl.deleteUser(u);
    await target?.stop();
  });

  const newUser = async () => {
    const u = unique('idle');
    users.push(u);
    await ctl.addUser(u, 'pw', ['/']);
    return u;
  };
  const connectionsOf = async (user) => (await ctl.listConnections(['pid', 'user'])).filter((c) => c.user === user);

  it('the connection of a user whose last session left is closed after amqp_idle_close_ms', async () => {
    const u = await newUser();
    const a = await StompSession.connect(target.url, { login: u, passcode: 'pw' });
    const k = unique('idle');
    const sub = await a.subscribeReceipt(`/topic/${k}`, { id: 'i' });
    await a.publishReceipt(`/topic/${k}`, 'before');
    assert.equal((await sub.next()).body, 'before');
    const open = await waitFor(async () => {
      const cs = await connectionsOf(u);
      return cs.length === 1 && cs;
    }, undefined, `one AMQP connection of ${u}`);
    assert.equal(open.length, 1);
    await a.disconnect();
    // Polled: only the broker can tell; bounded by waitFor's timeout, far above IDLE_MS.
    await waitFor(async () => (await connectionsOf(u)).length === 0, undefined, `no AMQP connection of ${u} left`);

    // The user can come back: a fresh connection serves the new session.
    const b = await StompSession.connect(target.url, { login: u, passcode: 'pw' });
    const sub2 = await b.subscribeReceipt(`/topic/${k}`, { id: 'j' });
    await b.publishReceipt(`/topic/${k}`, 'after');
    assert.equal((await sub2.next()).body, 'after');
    await b.disconnect();
    await waitFor(async () => (await connectionsOf(u)).length === 0, undefined, `no AMQP connection of ${u} left again`);
  });
});
