'use strict';
// Acknowledgement modes: auto, client (cumulative), client-individual; NACK
// with and without requeue; redelivery of unacked messages after a
// disconnect; ACK by `id` (1.2) and by `message-id` (1.1); prefetch-count.
// What the broker still holds is checked on the AMQP side (queue.declare
// passive message counts) once the STOMP session is gone.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const amqp = require('./lib/amqp');
const { RawStomp } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');
const { unique } = require('./lib/util');

describe('ack', { skip: T.suiteSkip() }, () => {
  let target;
  const { cleanup } = useTarget((t) => (target = t));

  /** A fresh durable queue holding bodies (published and confirmed). */
  const filledQueue = async (tag, bodies, args) => {
    const q = unique(tag);
    cleanup(() => amqp.deleteQueue(q));
    await amqp.declareQueue(q, { durable: true, arguments: args });
    for (const b of bodies) await amqp.publish('', q, b);
    return q;
  };

  const ackReceipt = (s, m, headers = {}) => s.receipt((receipt) => m.ack({ ...headers, receipt }));
  const nackReceipt = (s, m, headers = {}) => s.receipt((receipt) => m.nack({ ...headers, receipt }));

  it('ack:auto needs no ACK: nothing is left after disconnect', async () => {
    const q = await filledQueue('auto', ['1', '2']);
    const s = await StompSession.connect(target.url);
    const sub = s.subscribe(`/amq/queue/${q}`, { id: 'a', ack: 'auto' });
    const ms = await sub.take(2);
    assert.deepEqual(
      ms.map((m) => m.body),
      ['1', '2'],
    );
    assert.equal(ms[0].headers.ack, undefined, 'no ack header in auto mode');
    await s.disconnect();
    await amqp.waitQueueCount(q, 0);
  });

  it('ack:client is cumulative: ACK of the 3rd settles 1-3, the 4th comes back', async () => {
    const q = await filledQueue('client', ['1', '2', '3', '4']);
    const s = await StompSession.connect(target.url);
    const sub = s.subscribe(`/amq/queue/${q}`, { id: 'c', ack: 'client' });
    const ms = await sub.take(4);
    assert.ok(ms[2].headers.ack, 'MESSAGE has an ack header in 1.2');
    await ackReceipt(s, ms[2]);
    await s.disconnect();
    await amqp.waitQueueCount(q, 1);
    const left = await amqp.get(q);
    assert.equal(left.content.toString(), '4');
    assert.equal(left.fields.redelivered, true);
  });

  it('ack:client-individual settles only the acked message', async () => {
    const q = await filledQueue('indiv', ['1', '2', '3']);
    const s = await StompSession.connect(target.url);
    const sub = s.subscribe(`/amq/queue/${q}`, { id: 'i', ack: 'client-individual' });
    const ms = await sub.take(3);
    await ackReceipt(s, ms[1]);
    await s.disconnect();
    await amqp.waitQueueCount(q, 2);
    const bodies = [(await amqp.get(q)).content.toString(), (await amqp.get(q)).content.toString()].sort();
    assert.deepEqual(bodies, ['1', '3']);
  });

  it('NACK requeue:true redelivers with redelivered:true', async () => {
    const q = await filledQueue('nackrq', ['again']);
    const s = await StompSession.connect(target.url);
    const sub = s.subscribe(`/amq/queue/${q}`, { id: 'n', ack: 'client-individual' });
    const m1 = await sub.next();
    assert.equal(m1.headers.redelivered, 'false');
    await nackReceipt(s, m1, { requeue: 'true' });
    const m2 = await sub.next();
    assert.equal(m2.body, 'again');
    assert.equal(m2.headers.redelivered, 'true');
    await ackReceipt(s, m2);
    await s.disconnect();
    await amqp.waitQueueCount(q, 0);
  });

  it('NACK without requeue header requeues (default true)', async () => {
    const q = await filledQueue('nackdef', ['x']);
    const s = await StompSession.connect(target.url);
    const sub = s.subscribe(`/amq/queue/${q}`, { id: 'n', ack: 'client-individual' });
    await nackReceipt(s, await sub.next());
    const m2 = await sub.next();
    assert.equal(m2.headers.redelivered, 'true');
    await s.disconnect();
  });

  it('NACK requeue:false drops the message to the dead-letter queue', async () => {
    const dlq = unique('dlq');
    cleanup(() => amqp.deleteQueue(dlq));
    await amqp.declareQueue(dlq, { durable: false });
    const q = await filledQueue('nackdl', ['dead', 'alive'], {
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': dlq,
    });
    const dead = await amqp.consume(dlq);
    const s = await StompSession.connect(target.url);
    const sub = s.subscribe(`/amq/queue/${q}`, { id: 'n', ack: 'client-individual' });
    const [m1, m2] = await sub.take(2);
    assert.equal(m1.body, 'dead');
    await nackReceipt(s, m1, { requeue: 'false' });
    const d = await dead.next();
    assert.equal(d.content.toString(), 'dead');
    await ackReceipt(s, m2);
    await s.disconnect();
    await amqp.waitQueueCount(q, 0);
    await dead.cancel();
  });

  it('unacked messages are redelivered after the connection drops', async () => {
    const q = await filledQueue('redeliver', ['keep me']);
    const s1 = await StompSession.connect(target.url);
    const sub1 = s1.subscribe(`/amq/queue/${q}`, { id: 'r', ack: 'client' });
    const m1 = await sub1.next();
    assert.equal(m1.headers.redelivered, 'false');
    await s1.kill();
    const s2 = await StompSession.connect(target.url);
    const sub2 = s2.subscribe(`/amq/queue/${q}`, { id: 'r', ack: 'client' });
    const m2 = await sub2.next();
    assert.equal(m2.body, 'keep me');
    assert.equal(m2.headers.redelivered, 'true');
    await ackReceipt(s2, m2);
    await s2.disconnect();
    await amqp.waitQueueCount(q, 0);
  });

  it('STOMP 1.2: ACK by id (the MESSAGE ack header)', async () => {
    const q = await filledQueue('ack12', ['a', 'b']);
    const c = await RawStomp.connect(target.url, { 'accept-version': '1.2' });
    c.sendFrame('SUBSCRIBE', { id: 's', destination: `/amq/queue/${q}`, ack: 'client-individual' });
    const m1 = await c.expect('MESSAGE');
    const m2 = await c.expect('MESSAGE');
    assert.ok(m1.headers.ack);
    await c.withReceipt('ACK', { id: m1.headers.ack });
    await c.withReceipt('ACK', { id: m2.headers.ack });
    c.close();
    await amqp.waitQueueCount(q, 0);
  });

  it('STOMP 1.1: ACK by message-id and subscription', async () => {
    const q = await filledQueue('ack11', ['a', 'b']);
    const c = await RawStomp.connect(target.url, { 'accept-version': '1.1' });
    assert.equal(c.connected.headers.version, '1.1');
    c.sendFrame('SUBSCRIBE', { id: 's', destination: `/amq/queue/${q}`, ack: 'client-individual' });
    const m1 = await c.expect('MESSAGE');
    const m2 = await c.expect('MESSAGE');
    await c.withReceipt('ACK', { 'message-id': m1.headers['message-id'], subscription: 's' });
    // 1.1 NACK exists too; requeue and see it again.
    await c.withReceipt('NACK', { 'message-id': m2.headers['message-id'], subscription: 's' });
    const m3 = await c.expect('MESSAGE');
    assert.equal(m3.text, 'b');
    assert.equal(m3.headers.redelivered, 'true');
    await c.withReceipt('ACK', { 'message-id': m3.headers['message-id'], subscription: 's' });
    c.close();
    await amqp.waitQueueCount(q, 0);
  });

  it('prefetch-count limits unacknowledged deliveries', async () => {
    const q = await filledQueue('prefetch', ['1', '2', '3', '4', '5']);
    const s = await StompSession.connect(target.url);
    const sub = s.subscribe(`/amq/queue/${q}`, { id: 'p', ack: 'client-individual', 'prefetch-count': '2' });
    const [m1, m2] = await sub.take(2);
    assert.deepEqual([m1.body, m2.body], ['1', '2']);
    // With a window of 2 the broker holds the other 3 back.
    await amqp.waitQueueCount(q, 3);
    assert.equal(sub.messages.length, 0, 'no third delivery while two are unacked');
    await ackReceipt(s, m1);
    const m3 = await sub.next();
    assert.equal(m3.body, '3');
    await amqp.waitQueueCount(q, 2);
    await s.disconnect();
  });
});
