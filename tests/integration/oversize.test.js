'use strict';
// A message larger than a subscriber may be sent (issue 7): its STOMP MESSAGE
// alone is over client_send_limit_bytes, so the transport could never queue
// it. Before, warren closed each consumer in turn as "too slow" (no ERROR,
// nothing queued), the broker requeued the message, and the next consumer died
// of it too. Now the subscriber gets ERROR `Message too large` naming it, the
// message is rejected at the broker (requeue=false: the queue's dead-letter
// exchange gets it) before that session closes, and the messages behind it
// reach the next consumer.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const amqp = require('./lib/amqp');
const { RawStomp } = require('./lib/raw');
const { expectError } = require('./lib/check');
const { unique, waitFor } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly('Web-STOMP has no client_send_limit_bytes');
const LIMIT = 65536;

describe('oversize deliveries', { skip }, () => {
  let target;
  const { cleanup, queueName } = useTarget((t) => (target = t), {
    workers: 1,
    client_send_limit_bytes: LIMIT,
    client_send_buffer_bytes: LIMIT / 2,
  });

  it('ERROR naming the message, dead-lettered, the messages behind it reach the next consumer', async () => {
    const q = queueName('big');
    const dlq = queueName('dlq');
    const dlx = unique('dlx');
    await amqp.declareExchange(dlx, 'fanout');
    cleanup(() => amqp.deleteExchange(dlx));
    await amqp.declareQueue(dlq, { durable: false });
    const ch = await amqp.channel();
    await ch.bindQueue(dlq, dlx, '');
    await ch.close();
    await amqp.declareQueue(q, { durable: false, arguments: { 'x-dead-letter-exchange': dlx } });
    const big = 'B'.repeat(LIMIT + 1000);
    await amqp.publish('', q, 'small-1');
    await amqp.publish('', q, big, { messageId: 'the-big-one' });
    for (let i = 2; i <= 5; i++) await amqp.publish('', q, `small-${i}`);

    const a = await RawStomp.connect(target.url);
    a.sendFrame('SUBSCRIBE', { id: 'a', destination: `/amq/queue/${q}`, ack: 'client-individual', 'prefetch-count': '1' });
    const m1 = await a.expect('MESSAGE');
    assert.equal(m1.text, 'small-1');
    a.sendFrame('ACK', { id: m1.headers.ack });
    const e = await expectError(a, 'Message too large');
    assert.equal(e.headers.subscription, 'a');
    assert.match(e.text, new RegExp(`^Message 'T_a@@session-[^']*' from '/queue/${q}' takes \\d+ bytes as a STOMP MESSAGE`));
    assert.match(e.text, new RegExp(`client_send_limit_bytes ${LIMIT}`));

    // Rejected, not requeued: the dead-letter queue has it.
    await waitFor(async () => (await amqp.checkQueue(dlq))?.messageCount === 1, undefined, 'the big message dead-lettered');
    const dead = await amqp.get(dlq);
    assert.equal(dead.content.length, big.length);
    assert.equal(dead.properties.messageId, 'the-big-one');

    // The next consumer is not killed: it gets everything behind the big one.
    const b = await RawStomp.connect(target.url);
    b.sendFrame('SUBSCRIBE', { id: 'b', destination: `/amq/queue/${q}`, ack: 'auto' });
    const got = [];
    for (let i = 2; i <= 5; i++) got.push((await b.expect('MESSAGE')).text);
    assert.deepEqual(got, ['small-2', 'small-3', 'small-4', 'small-5']);
    await b.withReceipt('DISCONNECT');
    b.close();
  });

  it('ack:auto: what the session already sent is acked, not redelivered', async () => {
    const q = queueName('bigauto');
    await amqp.declareQueue(q, { durable: false });
    await amqp.publish('', q, 'first');
    await amqp.publish('', q, 'X'.repeat(LIMIT * 2));
    await amqp.publish('', q, 'after');
    const a = await RawStomp.connect(target.url);
    a.sendFrame('SUBSCRIBE', { id: 'a', destination: `/amq/queue/${q}`, ack: 'auto', 'prefetch-count': '10' });
    assert.equal((await a.expect('MESSAGE')).text, 'first');
    await expectError(a, 'Message too large');
    const b = await RawStomp.connect(target.url);
    b.sendFrame('SUBSCRIBE', { id: 'b', destination: `/amq/queue/${q}`, ack: 'auto' });
    const m = await b.expect('MESSAGE');
    assert.equal(m.text, 'after'); // neither 'first' again nor the big one
    b.close();
  });
});
