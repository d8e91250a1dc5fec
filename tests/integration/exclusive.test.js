'use strict';
// Exclusive means exclusive to the session (issue 7). RabbitMQ ties
// /temp-queue/ reply queues and exclusive:true queues to the AMQP connection
// that declared them, and warren's sessions of one login share that connection
// (one worker here, so they surely do): without a wall, session B could
// SUBSCRIBE to A's reply queue (its name travels in reply-to) and take A's
// replies. warren refuses B any consume, declare, bind or delete of such a
// queue, x-queue-name included, with ERROR resource_locked in the broker's
// words; A keeps getting its replies, and once A has ended the name is free.
// Web-STOMP gives each session its own connection, so the broker itself
// refuses B there: the file runs against both.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const amqp = require('./lib/amqp');
const { RawStomp } = require('./lib/raw');
const { expectBrokerError } = require('./lib/check');
const { unique, waitFor, WAIT_MS } = require('./lib/util');

const skip = T.suiteSkip();

describe('exclusive queues stay with their session', { skip }, () => {
  let target;
  const { cleanup, queueName } = useTarget((t) => (target = t), { workers: 1 });

  /** A fresh session b sends `frame` naming a queue a holds: ERROR resource_locked (or, Web-STOMP, at least the close). */
  const refused = async (command, headers, name) => {
    const b = await RawStomp.connect(target.url);
    b.sendFrame(command, { ...headers, receipt: 'r-b' }, command === 'SEND' ? 'x' : '');
    const e = await expectBrokerError(b, 'resource_locked');
    if (T.isWarren || e) {
      assert.match(e.text, new RegExp(`cannot obtain exclusive access to locked queue '${name.replace(/[.]/g, '\\.')}' in vhost '/'`));
    }
  };

  it("another session of the login cannot take a /temp-queue/ reply queue; the requester keeps its replies", async () => {
    const svc = queueName('svc');
    await amqp.declareQueue(svc, { durable: false });
    const server = await amqp.consume(svc);
    const a = await RawStomp.connect(target.url);
    a.sendFrame('SEND', { destination: `/amq/queue/${svc}`, 'reply-to': '/temp-queue/r' }, 'request');
    const req = await server.next();
    const replyQ = req.properties.replyTo;
    assert.ok(replyQ && (await amqp.checkQueue(replyQ)), `reply queue ${replyQ}`);

    await refused('SUBSCRIBE', { id: 'steal', destination: `/amq/queue/${replyQ}` }, replyQ);
    await refused('SUBSCRIBE', { id: 'steal', destination: `/queue/${replyQ}` }, replyQ);
    await refused('SUBSCRIBE', { id: 'steal', destination: `/reply-queue/${replyQ}` }, replyQ);
    // x-queue-name: a declare and a bind of A's queue (and, durable, a delete at UNSUBSCRIBE).
    await refused('SUBSCRIBE', { id: 'steal', destination: `/topic/${unique('k')}`, 'x-queue-name': replyQ }, replyQ);
    await refused('SUBSCRIBE', { id: 'steal', destination: `/topic/${unique('k')}`, 'x-queue-name': replyQ, durable: 'true', 'auto-delete': 'false' }, replyQ);
    await refused('SEND', { destination: `/queue/${replyQ}` }, replyQ);

    // A still gets every reply; in warren a STOMP replier of the same login may publish to it (Web-STOMP checks the
    // queue with a passive declare, which the broker refuses from another connection).
    await amqp.publish('', replyQ, 'reply-1');
    const m1 = await a.expect('MESSAGE');
    assert.equal(m1.text, 'reply-1');
    if (T.isWarren) {
      const b = await RawStomp.connect(target.url);
      await b.withReceipt('SEND', { destination: `/reply-queue/${replyQ}` }, 'reply-2');
      assert.equal((await a.expect('MESSAGE')).text, 'reply-2');
      await b.withReceipt('DISCONNECT');
      b.close();
    }

    // Once A has ended, the queue is gone and the name free.
    a.sendFrame('DISCONNECT');
    await a.waitClose();
    await amqp.waitQueueGone(replyQ);
    cleanup(() => amqp.deleteQueue(replyQ));
    if (T.isWarren) { // (Web-STOMP's reply queues are amq.gen-…, a reserved prefix nobody may declare)
      // The broker may still be finishing A's queue (its delete is nowait, its channel's close behind it) when the name
      // is declared again: the declare-ok can then be followed by `not_found` for the consume. Each try is a session
      // of its own (an ERROR ends it); the name must become free.
      await waitFor(async () => {
        const c = await RawStomp.connect(target.url);
        try {
          await c.withReceipt('SUBSCRIBE', { id: 'c', destination: `/queue/${replyQ}`, durable: 'false' });
          return true;
        } finally {
          c.close();
        }
      }, WAIT_MS, `a SUBSCRIBE to the free name ${replyQ}`);
    }
    await server.cancel();
  });

  it('an exclusive:true subscription queue is the session\'s alone, and goes with it', async () => {
    const q = queueName('excl');
    const a = await RawStomp.connect(target.url);
    await a.withReceipt('SUBSCRIBE', { id: 'a', destination: `/topic/${unique('k')}`, 'x-queue-name': q, exclusive: 'true' });
    await refused('SUBSCRIBE', { id: 'steal', destination: `/amq/queue/${q}` }, q);
    await refused('SUBSCRIBE', { id: 'steal', destination: `/exchange/amq.fanout`, 'x-queue-name': q, exclusive: 'true' }, q);
    await amqp.publish('', q, 'mine');
    assert.equal((await a.expect('MESSAGE')).text, 'mine');
    a.close(); // dropped, no DISCONNECT
    await amqp.waitQueueGone(q);
  });
});
