'use strict';
// Drop-in compatibility (issue 8): frames a client written against RabbitMQ's STOMP / Web-STOMP plugin sends, and
// what it gets back. Every case runs against both targets (WARREN_TEST_TARGET=webstomp for the plugin); where warren
// differs on purpose, doc/compatibility.md says so and the case says which target does what.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const { RawStomp } = require('./lib/raw');
const { unique } = require('./lib/util');

describe('compat', { skip: T.suiteSkip() }, () => {
  let target;
  useTarget((t) => (target = t));

  // RabbitMQ reads a body on any frame and ignores it where the command has none; raw-socket clients and test tools
  // write "CONNECT\n...\n\n\n\0".
  it('a body on a frame that has none is ignored (EOLs or anything else)', async () => {
    for (const body of ['\n', '\r\n', '\n\n', 'junk']) {
      const c = await RawStomp.open(target.url);
      c.sendRaw(`CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n${body}\0`);
      const f = await c.next();
      assert.equal(f.command, 'CONNECTED', `CONNECT with body ${JSON.stringify(body)}: ${f.command} ${f.text}`);
      const q = unique('compat-body');
      const frames = [
        `SUBSCRIBE\nid:s1\ndestination:/queue/${q}\nreceipt:r1\n\n${body}\0`,
        `BEGIN\ntransaction:t1\nreceipt:r2\n\n${body}\0`,
        `ABORT\ntransaction:t1\nreceipt:r3\n\n${body}\0`,
        `UNSUBSCRIBE\nid:s1\nreceipt:r4\n\n${body}\0`,
      ];
      // Web-STOMP 3.10 closes on DISCONNECT without its RECEIPT (doc/compatibility.md).
      if (T.isWarren) frames.push(`DISCONNECT\nreceipt:r5\n\n${body}\0`);
      for (const [i, fr] of frames.entries()) {
        c.sendRaw(fr);
        const r = await c.next();
        assert.equal(r.command, 'RECEIPT', `${fr.split('\n')[0]} with body ${JSON.stringify(body)}: ${r.command} ${r.text}`);
        assert.equal(r.headers['receipt-id'], `r${i + 1}`);
      }
      c.close();
    }
  });

  /** A raw session of `version` (CONNECTED read). */
  const session = async (version) => {
    const c = await RawStomp.open(target.url);
    c.sendRaw(`CONNECT\naccept-version:${version}\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n\0`);
    const f = await c.expect('CONNECTED');
    assert.equal(f.headers.version, version);
    return c;
  };

  // RabbitMQ supports NACK on 1.0 as an extension (with `requeue`); the message is given back at once.
  it('NACK on a STOMP 1.0 session requeues the message', async () => {
    const c = await session('1.0');
    const q = unique('compat-nack10');
    await c.withReceipt('SUBSCRIBE', { id: 's1', destination: `/queue/${q}`, ack: 'client' });
    c.sendFrame('SEND', { destination: `/queue/${q}` }, 'hello');
    const m = await c.expect('MESSAGE');
    assert.equal(m.headers.redelivered, 'false');
    await c.withReceipt('NACK', { 'message-id': m.headers['message-id'] });
    const again = await c.expect('MESSAGE');
    assert.equal(again.text, 'hello');
    assert.equal(again.headers.redelivered, 'true');
    await c.withReceipt('ACK', { 'message-id': again.headers['message-id'] });
    c.close();
  });

  // SUBSCRIBE without `id`: RabbitMQ takes it in every version; the destination names the subscription (consumer tag
  // Q_<destination>, so message-ids read Q_...), MESSAGE has no `subscription`, UNSUBSCRIBE names the destination.
  for (const version of ['1.0', '1.1', '1.2']) {
    it(`SUBSCRIBE without id on ${version}: Q_ message-ids, UNSUBSCRIBE by destination`, async () => {
      const c = await session(version);
      const q = unique('compat-noid');
      await c.withReceipt('SUBSCRIBE', { destination: `/queue/${q}`, ack: 'client-individual' });
      c.sendFrame('SEND', { destination: `/queue/${q}` }, 'one');
      const m = await c.expect('MESSAGE');
      assert.equal(m.text, 'one');
      assert.match(m.headers['message-id'], new RegExp(`^Q_/queue/${q}@@session-`));
      assert.equal(m.headers.subscription, undefined);
      if (version === '1.2') {
        assert.equal(m.headers.ack, m.headers['message-id']);
        await c.withReceipt('ACK', { id: m.headers.ack });
      } else {
        await c.withReceipt('ACK', { 'message-id': m.headers['message-id'] });
      }
      await c.withReceipt('UNSUBSCRIBE', { destination: `/queue/${q}` });
      c.close();
    });
  }
});
