'use strict';
// CONNECT/STOMP handshake: version negotiation, CONNECTED headers, default
// user, authentication failures, vhost selection through `host`, and the
// WebSocket subprotocol negotiation (v10.stomp/v11.stomp/v12.stomp).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const amqp = require('./lib/amqp');
const { RawStomp } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');
const { expectError } = require('./lib/check');
const { unique } = require('./lib/util');

describe('connect', { skip: T.suiteSkip() }, () => {
  let target;
  // warren's default user is the test user so that "no login" is observable;
  // Web-STOMP's is guest.
  const defaultUser = T.isWarren ? T.cfg.user : 'guest';

  before(async () => {
    target = await T.startTarget({ default_user: T.cfg.user, default_pass: T.cfg.pass });
  });
  after(async () => {
    await amqp.closeAll();
    await target?.stop();
  });

  it('CONNECT gets CONNECTED with version, heart-beat, session and server', async () => {
    const c = await RawStomp.connect(target.url, { 'accept-version': '1.2' });
    const h = c.connected.headers;
    assert.equal(h.version, '1.2');
    assert.match(h['heart-beat'], /^\d+,\d+$/);
    assert.ok(h.session && h.session.length > 0, 'session header');
    assert.match(h.server, /^[\w.-]+\/\S+/);
    c.close();
  });

  it('STOMP frame is accepted like CONNECT', async () => {
    const c = await RawStomp.connect(target.url, { 'accept-version': '1.1,1.2' }, { command: 'STOMP' });
    assert.equal(c.connected.headers.version, '1.2');
    await c.withReceipt('SUBSCRIBE', { id: 's1', destination: '/topic/connect-stomp-frame' });
    c.close();
  });

  for (const [offered, expected] of [
    ['1.0', '1.0'],
    ['1.0,1.1', '1.1'],
    ['1.1', '1.1'],
    ['1.0,1.1,1.2', '1.2'],
    ['1.2,1.0', '1.2'],
    ['1.1,2.0', '1.1'],
  ]) {
    it(`accept-version:${offered} negotiates ${expected}`, async () => {
      const c = await RawStomp.connect(target.url, { 'accept-version': offered });
      assert.equal(c.connected.headers.version, expected);
      c.close();
    });
  }

  it('no accept-version means STOMP 1.0', async () => {
    const c = await RawStomp.connect(target.url, { 'accept-version': null });
    const v = c.connected.headers.version;
    assert.ok(v === undefined || v === '1.0', `version ${v}`);
    c.close();
  });

  it('no common version → ERROR "Version mismatch" listing supported versions', async () => {
    const c = await RawStomp.open(target.url);
    c.sendFrame('CONNECT', { 'accept-version': '2.0,3.1', host: '/', login: 'guest', passcode: 'guest' });
    const f = await expectError(c, 'Version mismatch');
    assert.match(f.headers.version, /1\.2/);
    c.close();
  });

  it('stompjs connects and sees the CONNECTED headers', async () => {
    const s = await StompSession.connect(target.url, { heartbeat: [4000, 5000] });
    assert.equal(s.connected.headers.version, '1.2');
    assert.ok(s.connected.headers.session);
    assert.ok(s.connected.headers['heart-beat']);
    await s.disconnect();
  });

  it('no login/passcode logs in as the default user', async () => {
    const q = unique('defuser');
    const c = await RawStomp.connect(target.url, { login: null, passcode: null });
    // user-id must equal the authenticated user, or the broker refuses the
    // publish: a receipted SEND proves who we are.
    await c.withReceipt('SEND', { destination: `/queue/${q}`, 'user-id': defaultUser }, 'who');
    const m = await amqp.get(q);
    assert.ok(m, 'message in queue');
    assert.equal(m.properties.userId, defaultUser);
    c.close();
    await amqp.deleteQueue(q);
  });

  it('explicit login is used', async () => {
    const q = unique('login');
    const c = await RawStomp.connect(target.url, { login: T.cfg.user, passcode: T.cfg.pass });
    await c.withReceipt('SEND', { destination: `/queue/${q}`, 'user-id': T.cfg.user }, 'me');
    const m = await amqp.get(q);
    assert.equal(m.properties.userId, T.cfg.user);
    c.close();
    await amqp.deleteQueue(q);
  });

  it('bad passcode → ERROR "Bad CONNECT"', async () => {
    const c = await RawStomp.open(target.url);
    c.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: 'guest', passcode: 'wrong' });
    const f = await expectError(c, 'Bad CONNECT');
    assert.ok(f.text.length > 0, 'ERROR has a body');
    c.close();
  });

  it('unknown user → ERROR "Bad CONNECT"', async () => {
    const c = await RawStomp.open(target.url);
    c.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: unique('nobody'), passcode: 'x' });
    await expectError(c, 'Bad CONNECT');
    c.close();
  });

  it('bad login closes the socket', { skip: T.warrenOnly('Web-STOMP keeps it open until its login timeout') }, async () => {
    const c = await RawStomp.open(target.url);
    c.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: 'guest', passcode: 'wrong' });
    await c.expect('ERROR');
    await c.waitClose();
  });

  it('stompjs sees the Bad CONNECT error', async () => {
    await assert.rejects(
      StompSession.connect(target.url, { login: 'guest', passcode: 'wrong' }),
      (e) => e.frame?.headers.message === 'Bad CONNECT',
    );
  });

  it(`host:${T.cfg.vhost} selects that vhost`, async () => {
    const q = unique('vhost');
    const c = await RawStomp.connect(target.url, { host: T.cfg.vhost });
    await c.withReceipt('SEND', { destination: `/queue/${q}` }, 'in the other vhost');
    const m = await amqp.get(q, T.cfg.vhost);
    assert.equal(m.content.toString(), 'in the other vhost');
    assert.equal(await amqp.checkQueue(q, '/'), null, 'not declared in /');
    c.close();
    await amqp.deleteQueue(q, T.cfg.vhost);
  });

  it('unknown vhost → ERROR "Bad CONNECT" naming that vhost', async () => {
    const c = await RawStomp.open(target.url);
    const vhost = unique('novhost');
    c.sendFrame('CONNECT', { 'accept-version': '1.2', host: vhost, login: 'guest', passcode: 'guest' });
    const f = await expectError(c, 'Bad CONNECT');
    assert.match(f.text, new RegExp(`Virtual host '${vhost}' access denied`));
    c.close();
  });

  for (const [offered, expected] of [
    [['v12.stomp', 'v11.stomp', 'v10.stomp'], 'v12.stomp'],
    [['v10.stomp', 'v11.stomp'], 'v11.stomp'],
    [['v10.stomp'], 'v10.stomp'],
    [[], ''],
  ]) {
    it(`subprotocols [${offered}] → '${expected}'`, async () => {
      const c = await RawStomp.open(target.url, { protocols: offered });
      assert.equal(c.ws.protocol, expected);
      const f = await c.handshake({ 'accept-version': '1.0,1.1,1.2' });
      assert.equal(f.command, 'CONNECTED');
      c.close();
    });
  }
});
