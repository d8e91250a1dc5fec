'use strict';
// Durable topic subscriptions (id + durable:true + auto-delete:false survive
// a disconnect; UNSUBSCRIBE with durable:true deletes them) and the queue
// declaration headers: x-queue-name, x-queue-type, x-message-ttl,
// x-max-length, durable/auto-delete/exclusive overrides.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const amqp = require('./lib/amqp');
const ctl = require('./lib/rabbitmqctl');
const { RawStomp } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');
const { expectError } = require('./lib/check');
const { unique, waitFor } = require('./lib/util');

/** rabbitmqctl list_queues row for name (with arguments as an object), or undefined. */
async function queueInfo(name, vhost = '/') {
  const row = (await ctl.listQueues(vhost)).find((q) => q.name === name);
  if (!row) return undefined;
  return { ...row, args: Object.fromEntries((row.arguments || []).map(([k, , v]) => [k, v])) };
}

describe('durable subscriptions and queue arguments', { skip: T.suiteSkip() }, () => {
  let target;
  const { queueName } = useTarget((t) => (target = t));

  it('a durable topic subscription keeps messages sent while the client is away', async () => {
    const k = unique('dur');
    const headers = { id: 'dur-sub', durable: 'true', 'auto-delete': 'false' };
    const s1 = await StompSession.connect(target.url);
    const sub1 = await s1.subscribeReceipt(`/topic/${k}`, headers);
    await amqp.publish('amq.topic', k, 'while here');
    assert.equal((await sub1.next()).body, 'while here');
    await s1.disconnect();

    await amqp.publish('amq.topic', k, 'while away 1');
    await amqp.publish('amq.topic', k, 'while away 2');

    const s2 = await StompSession.connect(target.url);
    const sub2 = s2.subscribe(`/topic/${k}`, headers);
    const got = await sub2.take(2);
    assert.deepEqual(
      got.map((m) => m.body),
      ['while away 1', 'while away 2'],
    );
    assert.equal(got[0].headers.destination, `/topic/${k}`);
    await sub2.unsubscribeReceipt({ durable: 'true' });
    await s2.disconnect();
  });

  it('UNSUBSCRIBE durable:true deletes the durable subscription queue', async () => {
    const k = unique('durdel');
    const headers = { id: 'dd', durable: 'true', 'auto-delete': 'false' };
    const s1 = await StompSession.connect(target.url);
    await s1.subscribeReceipt(`/topic/${k}`, headers);
    await s1.disconnect();
    assert.equal(await amqp.publishMandatory('amq.topic', k, 'kept'), 'routed', 'queue still bound while away');
    const s2 = await StompSession.connect(target.url);
    const sub2 = s2.subscribe(`/topic/${k}`, headers);
    assert.equal((await sub2.next()).body, 'kept');
    await sub2.unsubscribeReceipt({ durable: 'true' });
    await s2.disconnect();
    // No queue is bound to the key any more: a mandatory publish comes back.
    assert.equal(await amqp.publishMandatory('amq.topic', k, 'gone'), 'returned');
  });

  it('x-queue-name names the durable subscription queue', async () => {
    const k = unique('durn');
    const qn = queueName('durq');
    const headers = { id: 'dn', durable: 'true', 'auto-delete': 'false', 'x-queue-name': qn };
    const s1 = await StompSession.connect(target.url);
    await s1.subscribeReceipt(`/topic/${k}`, headers);
    assert.ok(await amqp.checkQueue(qn), 'queue exists under the given name');
    await s1.disconnect();
    assert.ok(await amqp.checkQueue(qn), 'queue survives the disconnect');
    await amqp.publish('amq.topic', k, 'kept');
    assert.equal((await amqp.checkQueue(qn)).messageCount, 1);

    const s2 = await StompSession.connect(target.url);
    const sub2 = s2.subscribe(`/topic/${k}`, headers);
    assert.equal((await sub2.next()).body, 'kept');
    await s2.disconnect();
  });

  it('durable:true without auto-delete:false is removed when its consumer goes', async () => {
    const k = unique('durad');
    const qn = queueName('durad');
    const s = await StompSession.connect(target.url);
    await s.subscribeReceipt(`/topic/${k}`, { id: 'x', durable: 'true', 'x-queue-name': qn });
    assert.ok(await amqp.checkQueue(qn));
    await s.disconnect();
    await amqp.waitQueueGone(qn);
  });

  it('durable:true without id → ERROR "Missing Header"', async () => {
    const c = await RawStomp.connect(target.url, { 'accept-version': '1.0' });
    c.sendFrame('SUBSCRIBE', { destination: `/topic/${unique('noid')}`, durable: 'true' });
    await expectError(c, 'Missing Header');
    c.close();
  });

  it('x-queue-name on an /exchange/ subscription', async () => {
    const qn = queueName('exq');
    const s = await StompSession.connect(target.url);
    const sub = await s.subscribeReceipt('/exchange/amq.direct/key-' + qn, { id: 'e', 'x-queue-name': qn });
    const info = await amqp.checkQueue(qn);
    assert.equal(info.consumerCount, 1);
    await amqp.publish('amq.direct', 'key-' + qn, 'direct');
    assert.equal((await sub.next()).body, 'direct');
    await s.disconnect();
    // Non-durable exchange subscriptions are exclusive/auto-delete by default.
    await amqp.waitQueueGone(qn);
  });

  it('/queue/Q durable:false declares an exclusive auto-delete queue', async () => {
    const q = queueName('nondur');
    const s = await StompSession.connect(target.url);
    await s.subscribeReceipt(`/queue/${q}`, { id: 'nd', durable: 'false' });
    assert.ok(await amqp.checkQueue(q));
    await s.disconnect();
    await amqp.waitQueueGone(q);
  });

  it('x-max-length on SEND declares the queue with that limit', async () => {
    const q = queueName('maxlen');
    const s = await StompSession.connect(target.url);
    for (let i = 1; i <= 5; i++) await s.publishReceipt(`/queue/${q}`, `m${i}`, { 'x-max-length': '2' });
    assert.equal((await amqp.checkQueue(q)).messageCount, 2);
    const m = await amqp.get(q);
    assert.equal(m.content.toString(), 'm4', 'oldest dropped first');
    await s.disconnect();
  });

  describe('queue arguments seen by the broker', { skip: ctl.ctlSkip() }, () => {
    it('x-message-ttl and x-max-length reach queue.declare as integers', async () => {
      const q = queueName('args');
      const s = await StompSession.connect(target.url);
      await s.subscribeReceipt(`/queue/${q}`, { id: 'a', 'x-message-ttl': '60000', 'x-max-length': '10' });
      const info = await waitFor(() => queueInfo(q), undefined, `queue ${q} listed`);
      assert.equal(info.args['x-message-ttl'], 60000);
      assert.equal(info.args['x-max-length'], 10);
      assert.equal(info.durable, true);
      await s.disconnect();
    });

    it('x-queue-type:quorum declares a quorum queue', async () => {
      const q = queueName('quorum');
      const s = await StompSession.connect(target.url);
      const sub = await s.subscribeReceipt(`/queue/${q}`, { id: 'q', 'x-queue-type': 'quorum' });
      const info = await waitFor(() => queueInfo(q), undefined, `queue ${q} listed`);
      assert.equal(info.type, 'quorum');
      await s.publishReceipt(`/queue/${q}`, 'in quorum', { persistent: 'true' });
      assert.equal((await sub.next()).body, 'in quorum');
      await s.disconnect();
    });
  });
});
