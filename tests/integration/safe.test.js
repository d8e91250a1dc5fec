'use strict';
// Safe by default (issue 7): loopback-only users (loopback_users, default
// guest) refused from a client address that is not loopback, default_pass never
// tried for a login the client named, peer bytes escaped in warren's log, and
// `x-stream-offset: timestamp=T` read by a stream queue as a time.
//
// The non-loopback client is this machine talking to one of its own
// non-loopback addresses (os.networkInterfaces()): warren listens on 0.0.0.0
// and the client connects to, say, 192.0.2.2, so the peer warren sees is
// 192.0.2.2. Without such an address those cases skip, saying so. Against
// Web-STOMP they need its listener on that address too (scripts/rabbitmq
// start DIR --web-stomp --conf 'web_stomp.tcp.ip = 0.0.0.0'); by default it
// listens on 127.0.0.1 only and they skip.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const amqp = require('./lib/amqp');
const { RawStomp } = require('./lib/raw');
const { expectError } = require('./lib/check');
const { unique, waitFor, outsideAddress, reachable } = require('./lib/util');


describe('safe defaults', { skip: T.suiteSkip() }, () => {
  let target;
  let outside = null; // ws:// URL reaching the target through a non-loopback address, or null
  let outsideWhy = 'no non-loopback IPv4 address on this machine';
  const addr = outsideAddress();

  before(async () => {
    // loopback_users is left at its default (guest); default_user/default_pass are guest/guest.
    target = await T.startTarget({ listen_addr: '0.0.0.0' });
    if (addr && (await reachable(addr, target.port))) outside = target.url.replace('127.0.0.1', addr);
    else if (addr) outsideWhy = `the target does not listen on ${addr}`;
  });
  after(async () => {
    await amqp.closeAll();
    await target?.stop();
  });

  const fromOutside = () => (outside ? false : outsideWhy);

  describe('loopback_users (default guest)', () => {
    it('no login (default_user guest) from a non-loopback address → ERROR "Bad CONNECT" non-loopback access denied', async (t) => {
      if (fromOutside()) return t.skip(fromOutside());
      const c = await RawStomp.open(outside);
      c.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/' });
      const f = await expectError(c, 'Bad CONNECT');
      assert.equal(f.text.trim(), 'non-loopback access denied');
      c.close();
    });

    it('login:guest with the right passcode from a non-loopback address → refused the same way', async (t) => {
      if (fromOutside()) return t.skip(fromOutside());
      const c = await RawStomp.open(outside);
      c.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: 'guest', passcode: 'guest' });
      const f = await expectError(c, 'Bad CONNECT');
      assert.equal(f.text.trim(), 'non-loopback access denied');
      c.close();
    });

    it('another user from a non-loopback address → CONNECTED', async (t) => {
      if (fromOutside()) return t.skip(fromOutside());
      const c = await RawStomp.connect(outside, { login: T.cfg.user, passcode: T.cfg.pass });
      await c.withReceipt('SUBSCRIBE', { id: 's', destination: '/topic/safe-outside' });
      c.close();
    });

    it('guest from loopback → CONNECTED', async () => {
      const c = await RawStomp.connect(target.url, { login: 'guest', passcode: 'guest' });
      c.close();
      const d = await RawStomp.connect(target.url, { login: null, passcode: null });
      d.close();
    });

    it('loopback_users = (empty) turns the check off', { skip: T.warrenOnly('a warren key') }, async (t) => {
      if (!addr) return t.skip(outsideWhy);
      const w = await T.startTarget({ listen_addr: '0.0.0.0', loopback_users: '' });
      try {
        const c = await RawStomp.connect(w.url.replace('127.0.0.1', addr), { login: null, passcode: null });
        c.close();
      } finally {
        await w.stop();
      }
    });

    it('a listed user is refused from outside, whatever its name', { skip: T.warrenOnly('a warren key') }, async (t) => {
      if (!addr) return t.skip(outsideWhy);
      const w = await T.startTarget({ listen_addr: '0.0.0.0', loopback_users: `nobody, ${T.cfg.user}` });
      try {
        const c = await RawStomp.open(w.url.replace('127.0.0.1', addr));
        c.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: T.cfg.user, passcode: T.cfg.pass });
        const f = await expectError(c, 'Bad CONNECT');
        assert.equal(f.text.trim(), 'non-loopback access denied');
        c.close();
        const g = await RawStomp.connect(w.url.replace('127.0.0.1', addr), { login: null, passcode: null }); // guest: not listed
        g.close();
      } finally {
        await w.stop();
      }
    });
  });

  describe('default_pass', () => {
    // Web-STOMP fills a missing passcode with default_pass even when the client
    // named its own login (rabbit_stomp_processor:creds/3); warren does not
    // (doc/compatibility.md): the configured password is never tried for a
    // user the client chose.
    it('login without passcode is not given default_pass', async () => {
      const c = await RawStomp.open(target.url);
      c.sendFrame('CONNECT', { 'accept-version': '1.2', host: '/', login: 'guest' }); // default_pass is guest's password
      const f = await c.next();
      if (T.isWarren) {
        assert.equal(f.command, 'ERROR', `got ${f.command}`);
        assert.equal(f.headers.message, 'Bad CONNECT');
        assert.match(f.text, /^Access refused for user 'guest'/);
        await c.waitClose();
      } else {
        assert.equal(f.command, 'CONNECTED', 'Web-STOMP uses default_pass');
      }
      c.close();
    });

    it('neither login nor passcode → default_user with default_pass', async () => {
      const c = await RawStomp.connect(target.url, { login: null, passcode: null });
      c.close();
    });
  });

  describe('log lines', { skip: T.warrenOnly("warren's own log") }, () => {
    it('an escaped newline in a header value cannot forge a log line', async () => {
      const forged = 'FORGED-LINE-' + unique('log');
      const c = await RawStomp.connect(target.url);
      // STOMP 1.2 escaping (raw.js escapes non-CONNECT frames): warren unescapes \n to a real newline.
      c.sendFrame('SEND', { destination: `/nowhere/x\n2030-01-01T00:00:00.000Z INFO [1.2.3.4:5] ${forged}\x1b[2J` }, 'x');
      await expectError(c, 'Unknown destination');
      c.close();
      await waitFor(() => target.output().includes(forged), 5000, 'the ERROR to be logged');
      const lines = target.output().split('\n');
      const line = lines.find((l) => l.includes(forged));
      assert.ok(/^\d{4}-\d\d-\d\dT\S+ INFO \[/.test(line), `the forged text is inside warren's line: ${line}`);
      assert.ok(line.includes(`/nowhere/x\\n2030-01-01T00:00:00.000Z INFO [1.2.3.4:5] ${forged}\\x1b[2J`), line);
      for (const l of lines) assert.ok(!/[\x00-\x08\x0b-\x1f\x7f]/.test(l), `control byte in a log line: ${JSON.stringify(l)}`);
    });
  });

  describe('x-stream-offset', () => {
    it('timestamp=T starts a stream consumer at time T, not at offset T', async () => {
      const q = unique('stream-ts');
      await amqp.declareQueue(q, { durable: true, arguments: { 'x-queue-type': 'stream' } });
      try {
        await amqp.publish('', q, 'old-1');
        await amqp.publish('', q, 'old-2');
        // T: the first whole second after the old messages were written; publish the new ones after it.
        await new Promise((r) => setTimeout(r, 1100));
        const ts = Math.ceil(Date.now() / 1000);
        await new Promise((r) => setTimeout(r, ts * 1000 - Date.now() + 300));
        await amqp.publish('', q, 'new-1');
        await amqp.publish('', q, 'new-2');
        const c = await RawStomp.connect(target.url);
        c.sendFrame('SUBSCRIBE', {
          id: 's',
          destination: `/amq/queue/${q}`,
          ack: 'client',
          'prefetch-count': '10',
          'x-stream-offset': `timestamp=${ts}`,
        });
        const m = await c.expect('MESSAGE');
        assert.equal(m.text, 'new-1');
        assert.equal((await c.expect('MESSAGE')).text, 'new-2');
        c.close();
      } finally {
        await amqp.deleteQueue(q);
      }
    });
  });
});
