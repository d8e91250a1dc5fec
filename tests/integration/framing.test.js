'use strict';
// STOMP framing over WebSocket: several frames in one WebSocket message, one
// frame split over several, CRLF line ends, EOLs between frames, header
// escaping, binary bodies with NULs (content-length), non-UTF-8 bodies (must
// come back as binary WebSocket messages), 1 MiB messages both ways, and
// permessage-deflate.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const amqp = require('./lib/amqp');
const { RawStomp, encodeFrame } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');
const { unique } = require('./lib/util');

const MiB = 1024 * 1024;

/** Collects n frames (any order) and returns them sorted by command. */
async function takeFrames(c, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await c.next());
  return out.sort((a, b) => a.command.localeCompare(b.command) || (a.headers['receipt-id'] ?? '').localeCompare(b.headers['receipt-id'] ?? ''));
}

describe('framing', { skip: T.suiteSkip() }, () => {
  let target;

  before(async () => {
    target = await T.startTarget();
  });
  after(async () => {
    await amqp.closeAll();
    await target?.stop();
  });

  it('two STOMP frames in one WebSocket message', async () => {
    const k = unique('two');
    const c = await RawStomp.connect(target.url);
    const both = Buffer.concat([
      encodeFrame('SUBSCRIBE', { id: 's', destination: `/topic/${k}`, receipt: 'a' }),
      encodeFrame('SEND', { destination: `/topic/${k}`, receipt: 'b' }, 'together'),
    ]);
    c.sendRaw(both);
    const fs = await takeFrames(c, 3);
    assert.deepEqual(
      fs.map((f) => f.command),
      ['MESSAGE', 'RECEIPT', 'RECEIPT'],
    );
    assert.equal(fs[0].text, 'together');
    assert.deepEqual([fs[1].headers['receipt-id'], fs[2].headers['receipt-id']], ['a', 'b']);
    c.close();
  });

  it('one STOMP frame split over several WebSocket messages', async () => {
    const k = unique('split');
    const c = await RawStomp.connect(target.url);
    await c.withReceipt('SUBSCRIBE', { id: 's', destination: `/topic/${k}` });
    const frame = encodeFrame('SEND', { destination: `/topic/${k}`, 'x-h': 'v' }, 'split body');
    c.sendRaw(frame.subarray(0, 7)); // inside the headers
    c.sendRaw(frame.subarray(7, frame.length - 4)); // inside the body
    c.sendRaw(frame.subarray(frame.length - 4));
    const m = await c.expect('MESSAGE');
    assert.equal(m.text, 'split body');
    assert.equal(m.headers['x-h'], 'v');
    c.close();
  });

  it('a frame sent one byte per WebSocket message', async () => {
    const k = unique('bytes');
    const c = await RawStomp.connect(target.url);
    await c.withReceipt('SUBSCRIBE', { id: 's', destination: `/topic/${k}` });
    const frame = encodeFrame('SEND', { destination: `/topic/${k}` }, 'drip');
    for (const b of frame) c.sendRaw(Buffer.from([b]), { binary: true });
    assert.equal((await c.expect('MESSAGE')).text, 'drip');
    c.close();
  });

  it('CRLF line ends and EOLs between frames are accepted', async () => {
    const k = unique('crlf');
    const c = await RawStomp.connect(target.url);
    c.sendRaw(`\n\r\nSUBSCRIBE\r\nid:s\r\ndestination:/topic/${k}\r\nreceipt:r1\r\n\r\n\0\n\n`);
    assert.equal((await c.expect('RECEIPT')).headers['receipt-id'], 'r1');
    c.sendRaw(`SEND\r\ndestination:/topic/${k}\r\n\r\ncrlf body\0\r\n`);
    assert.equal((await c.expect('MESSAGE')).text, 'crlf body');
    c.close();
  });

  it('escaped header values round-trip (STOMP 1.2)', async () => {
    const k = unique('esc');
    const c = await RawStomp.connect(target.url, { 'accept-version': '1.2' });
    await c.withReceipt('SUBSCRIBE', { id: 's', destination: `/topic/${k}` });
    const value = 'colon:newline\nbackslash\\cr\rend';
    c.sendFrame('SEND', { destination: `/topic/${k}`, 'x-escaped': value }, 'e');
    const m = await c.expect('MESSAGE');
    assert.equal(m.headers['x-escaped'], value);
    c.close();
  });

  it('UTF-8 bodies arrive as text WebSocket messages by default', async () => {
    const k = unique('text');
    const c = await RawStomp.connect(target.url);
    await c.withReceipt('SUBSCRIBE', { id: 's', destination: `/topic/${k}` });
    c.sendFrame('SEND', { destination: `/topic/${k}` }, 'héllo wörld ✓');
    const m = await c.expect('MESSAGE');
    assert.equal(m.text, 'héllo wörld ✓');
    assert.equal(m.binary, false);
    c.close();
  });

  it('a body with NUL bytes round-trips with content-length', async () => {
    const k = unique('nul');
    const body = Buffer.from([0x61, 0x00, 0x62, 0x00, 0x00, 0x63, 0x0a, 0x00]);
    const c = await RawStomp.connect(target.url);
    await c.withReceipt('SUBSCRIBE', { id: 's', destination: `/topic/${k}` });
    c.sendFrame('SEND', { destination: `/topic/${k}` }, body, { binary: true });
    const m = await c.expect('MESSAGE');
    assert.equal(m.headers['content-length'], String(body.length));
    assert.deepEqual(m.body, body);
    c.close();
  });

  it('stompjs binaryBody with NULs round-trips', async () => {
    const k = unique('nuljs');
    const body = new Uint8Array([0, 1, 2, 0, 3, 0]);
    const s = await StompSession.connect(target.url);
    const sub = await s.subscribeReceipt(`/topic/${k}`, { id: 'b' });
    await s.publishReceipt(`/topic/${k}`, body, { 'content-type': 'application/octet-stream' });
    const m = await sub.next();
    assert.deepEqual(Buffer.from(m.binaryBody), Buffer.from(body));
    await s.disconnect();
  });

  it('a non-UTF-8 body comes back as a binary WebSocket message', { skip: T.warrenOnly('Web-STOMP sends it as an invalid text message') }, async () => {
    const k = unique('bin');
    const body = Buffer.from([0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80]);
    const c = await RawStomp.connect(target.url);
    await c.withReceipt('SUBSCRIBE', { id: 's', destination: `/topic/${k}` });
    c.sendFrame('SEND', { destination: `/topic/${k}` }, body, { binary: true });
    const m1 = await c.expect('MESSAGE');
    assert.equal(m1.binary, true);
    assert.deepEqual(m1.body, body);
    // Same from the AMQP side.
    await amqp.publish('amq.topic', k, body);
    const m2 = await c.expect('MESSAGE');
    assert.equal(m2.binary, true);
    assert.deepEqual(m2.body, body);
    c.close();
  });

  it('ws_frame=binary sends every frame as a binary WebSocket message', { skip: T.warrenOnly('needs its own server config') }, async () => {
    const w = await T.startTarget({ ws_frame: 'binary' });
    try {
      const k = unique('wsbin');
      const c = await RawStomp.connect(w.url);
      await c.withReceipt('SUBSCRIBE', { id: 's', destination: `/topic/${k}` });
      c.sendFrame('SEND', { destination: `/topic/${k}` }, 'plain text');
      const m = await c.expect('MESSAGE');
      assert.equal(m.binary, true);
      assert.equal(m.text, 'plain text');
      c.close();
    } finally {
      await w.stop();
    }
  });

  it('1 MiB message STOMP → AMQP and AMQP → STOMP', async () => {
    const q = unique('big');
    const big = Buffer.alloc(MiB);
    for (let i = 0; i < big.length; i++) big[i] = 0x20 + (i % 90);
    const s = await StompSession.connect(target.url);
    await s.publishReceipt(`/queue/${q}`, big.toString('latin1'));
    const got = await amqp.get(q);
    assert.equal(got.content.length, MiB);
    assert.ok(got.content.equals(big), 'STOMP → AMQP body intact');

    const sub = await s.subscribeReceipt(`/amq/queue/${q}`, { id: 'big' });
    await amqp.publish('', q, big);
    const m = await sub.next();
    assert.equal(m.headers['content-length'], String(MiB));
    assert.equal(m.body.length, MiB);
    assert.equal(m.body, big.toString('latin1'));
    await s.disconnect();
    await amqp.deleteQueue(q);
  });

  it('permessage-deflate is negotiated and carries frames both ways', async () => {
    const k = unique('deflate');
    const c = await RawStomp.open(target.url, { perMessageDeflate: true });
    assert.match(c.ws.extensions, /permessage-deflate/);
    assert.equal((await c.handshake()).command, 'CONNECTED');
    await c.withReceipt('SUBSCRIBE', { id: 's', destination: `/topic/${k}` });
    const body = 'compress me '.repeat(20000);
    c.sendFrame('SEND', { destination: `/topic/${k}` }, body);
    assert.equal((await c.expect('MESSAGE')).text, body);
    c.close();
  });

  it('stompjs over permessage-deflate', async () => {
    const k = unique('deflatejs');
    const s = await StompSession.connect(target.url, { perMessageDeflate: true });
    assert.match(s.client.webSocket.extensions, /permessage-deflate/);
    const sub = await s.subscribeReceipt(`/topic/${k}`, { id: 'd' });
    await s.publishReceipt(`/topic/${k}`, 'zipped '.repeat(1000));
    assert.equal((await sub.next()).body, 'zipped '.repeat(1000));
    await s.disconnect();
  });
});
