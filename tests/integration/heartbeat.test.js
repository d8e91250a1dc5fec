'use strict';
// STOMP heart-beats over WebSocket: the values negotiated in CONNECTED, a
// client that goes silent is disconnected, a client that keeps beating is
// not, and server beats arrive at the negotiated rate. Waits are bounded by
// events (beats, close) with generous timeouts; timers only drive the
// client's own beats.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { RawStomp } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');

/**
 * Effective intervals per STOMP 1.2 §Heart-beating from the client's
 * heart-beat:cx,cy and the server's sx,sy: { serverSends, clientSends } in ms,
 * 0 = off.
 */
function effective(client, server) {
  const [cx, cy] = client.split(',').map(Number);
  const [sx, sy] = server.split(',').map(Number);
  return {
    serverSends: sx === 0 || cy === 0 ? 0 : Math.max(sx, cy),
    clientSends: cx === 0 || sy === 0 ? 0 : Math.max(cx, sy),
  };
}

describe('heart-beats', { skip: T.suiteSkip() }, () => {
  let target;

  before(async () => {
    // Like Web-STOMP: nothing faster than one beat a second either way.
    target = await T.startTarget({ heartbeat_send_min_ms: 1000, heartbeat_recv_min_ms: 1000 });
  });
  after(async () => {
    await target?.stop();
  });

  for (const [client, serverSends, clientSends] of [
    ['0,0', 0, 0],
    ['2000,3000', 3000, 2000],
    ['5000,0', 0, 5000],
    ['0,4000', 4000, 0],
    ['500,500', 1000, 1000],
  ]) {
    it(`heart-beat:${client} negotiates server→client ${serverSends} ms, client→server ${clientSends} ms`, async () => {
      const c = await RawStomp.connect(target.url, { 'heart-beat': client });
      const hb = c.connected.headers['heart-beat'];
      assert.match(hb, /^\d+,\d+$/);
      assert.deepEqual(effective(client, hb), { serverSends, clientSends });
      c.close();
    });
  }

  it('no heart-beat header means no heart-beats', async () => {
    const c = await RawStomp.connect(target.url, { 'heart-beat': null });
    const hb = c.connected.headers['heart-beat'] ?? '0,0';
    assert.deepEqual(effective('0,0', hb), { serverSends: 0, clientSends: 0 });
    c.close();
  });

  it('a client that stops sending heart-beats is disconnected', async () => {
    const c = await RawStomp.connect(target.url, { 'heart-beat': '1000,0' });
    const t0 = Date.now();
    const { clientSends } = effective('1000,0', c.connected.headers['heart-beat']);
    assert.equal(clientSends, 1000);
    const closed = await c.waitClose(20000);
    const after = closed.at - t0;
    assert.ok(after >= 1000, `closed after ${after} ms, before one interval passed`);
  });

  it('a client that keeps beating stays connected', async () => {
    const c = await RawStomp.connect(target.url, { 'heart-beat': '1000,1000' });
    const timer = setInterval(() => c.sendRaw('\n'), 300);
    try {
      // Four server beats span more than three client intervals.
      await c.waitBeats(4, 20000);
      assert.equal(c.isClosed, false);
      await c.withReceipt('SUBSCRIBE', { id: 'alive', destination: '/topic/hb-alive' });
    } finally {
      clearInterval(timer);
      c.close();
    }
  });

  it('server heart-beats arrive at the negotiated rate', async () => {
    const c = await RawStomp.connect(target.url, { 'heart-beat': '0,1000' });
    const { serverSends } = effective('0,1000', c.connected.headers['heart-beat']);
    assert.equal(serverSends, 1000);
    const t0 = Date.now();
    await c.waitBeats(4, 20000);
    const spans = c.beatTimes.map((t, i) => t - (i ? c.beatTimes[i - 1] : t0));
    const total = c.beatTimes[3] - t0;
    // At least one beat per interval (with slack for a loaded machine), and
    // not a flood.
    assert.ok(total <= 4 * serverSends * 1.5 + 1000, `4 beats took ${total} ms: ${spans}`);
    assert.ok(spans.slice(1).every((s) => s >= 100), `beats too close together: ${spans}`);
    c.close();
  });

  it('stompjs with heart-beats on both sides stays connected and works', async () => {
    const s = await StompSession.connect(target.url, { heartbeat: [1000, 1000] });
    const raw = await RawStomp.connect(target.url, { 'heart-beat': '0,1000' });
    await raw.waitBeats(4, 20000); // a few seconds of stompjs beating
    raw.close();
    assert.equal(s.isClosed, false);
    const sub = await s.subscribeReceipt('/topic/hb-stompjs', { id: 'h' });
    await s.publishReceipt('/topic/hb-stompjs', 'beating');
    assert.equal((await sub.next()).body, 'beating');
    await s.disconnect();
  });
});
