'use strict';
// Receipts on every client frame, SEND receipts only after the broker's
// confirm, and STOMP transactions (BEGIN/SEND/COMMIT/ABORT, disconnect
// mid-transaction, missing or unknown transaction ids).
//
// "Nothing was published" is checked without waiting for silence: a sentinel
// message sent afterwards must be the first (and only) one to arrive.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const amqp = require('./lib/amqp');
const { RawStomp } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');
const { expectError } = require('./lib/check');
const { unique } = require('./lib/util');

describe('receipts and transactions', { skip: T.suiteSkip() }, () => {
  let target;
  const { queueName } = useTarget((t) => (target = t));

  describe('receipts', () => {
    it('SUBSCRIBE, SEND, UNSUBSCRIBE, BEGIN, COMMIT, ABORT each get their RECEIPT', async () => {
      const q = queueName('rcpt');
      const c = await RawStomp.connect(target.url);
      await c.withReceipt('SUBSCRIBE', { id: 's1', destination: `/queue/${q}` });
      // The MESSAGE may overtake the SEND's RECEIPT: take both, any order.
      c.sendFrame('SEND', { destination: `/queue/${q}`, receipt: 'send-1' }, 'hello');
      const two = [await c.next(), await c.next()].sort((a, b) => a.command.localeCompare(b.command));
      assert.deepEqual(
        two.map((f) => f.command),
        ['MESSAGE', 'RECEIPT'],
      );
      assert.equal(two[0].text, 'hello');
      assert.equal(two[1].headers['receipt-id'], 'send-1');
      await c.withReceipt('UNSUBSCRIBE', { id: 's1' });
      await c.withReceipt('BEGIN', { transaction: 't1' });
      await c.withReceipt('COMMIT', { transaction: 't1' });
      await c.withReceipt('BEGIN', { transaction: 't2' });
      await c.withReceipt('ABORT', { transaction: 't2' });
      c.close();
    });

    it('DISCONNECT receipt arrives before the close', { skip: T.warrenOnly('Web-STOMP 3.x closes without sending it') }, async () => {
      const c = await RawStomp.connect(target.url);
      await c.withReceipt('DISCONNECT');
      await c.waitClose();
    });

    it('stompjs receipts for SUBSCRIBE and SEND', async () => {
      const q = queueName('rcptjs');
      const s = await StompSession.connect(target.url);
      const sub = await s.subscribeReceipt(`/queue/${q}`, { id: 'x' });
      const r = await s.publishReceipt(`/queue/${q}`, 'hi');
      assert.equal(r.command, 'RECEIPT');
      assert.equal((await sub.next()).body, 'hi');
      await sub.unsubscribeReceipt();
      await s.disconnect();
    });

    it('a receipted persistent SEND to a durable queue is confirmed (enqueued) when the RECEIPT arrives', async () => {
      const q = queueName('confirm');
      await amqp.declareQueue(q, { durable: true });
      const s = await StompSession.connect(target.url);
      for (let i = 1; i <= 3; i++) {
        await s.publishReceipt(`/amq/queue/${q}`, `p${i}`, { persistent: 'true' });
        const info = await amqp.checkQueue(q);
        assert.equal(info.messageCount, i, 'message already in the queue at RECEIPT time');
      }
      await s.disconnect();
    });

    it('many pipelined receipted SENDs each get a RECEIPT', async () => {
      const q = queueName('many');
      await amqp.declareQueue(q, { durable: true });
      const s = await StompSession.connect(target.url);
      const n = 50;
      await Promise.all(Array.from({ length: n }, (_, i) => s.publishReceipt(`/amq/queue/${q}`, `m${i}`, { persistent: 'true' })));
      assert.equal((await amqp.checkQueue(q)).messageCount, n);
      await s.disconnect();
    });

    it('a receipted SEND the broker nacks → ERROR with receipt-id', { skip: T.warrenOnly('Web-STOMP sends neither RECEIPT nor ERROR') }, async () => {
      const q = queueName('nack');
      await amqp.declareQueue(q, { durable: false, arguments: { 'x-max-length': 1, 'x-overflow': 'reject-publish' } });
      await amqp.publish('', q, 'fills the queue');
      const c = await RawStomp.connect(target.url);
      c.sendFrame('SEND', { destination: `/amq/queue/${q}`, receipt: 'nacked' }, 'rejected');
      await expectError(c, /./, { receiptId: 'nacked' });
    });

    it('Web-STOMP: a nacked receipted SEND gets no RECEIPT', { skip: T.webstompOnly('warren answers with ERROR') }, async () => {
      const q = queueName('nackws');
      const ok = queueName('nackok');
      await amqp.declareQueue(q, { durable: false, arguments: { 'x-max-length': 1, 'x-overflow': 'reject-publish' } });
      await amqp.declareQueue(ok, { durable: false });
      await amqp.publish('', q, 'fills the queue');
      const c = await RawStomp.connect(target.url);
      c.sendFrame('SEND', { destination: `/amq/queue/${q}`, receipt: 'nacked' }, 'rejected');
      c.sendFrame('SEND', { destination: `/amq/queue/${ok}`, receipt: 'fine' }, 'accepted');
      const f = await c.expect('RECEIPT');
      assert.equal(f.headers['receipt-id'], 'fine');
      c.close();
    });
  });

  describe('transactions', () => {
    it('BEGIN / SEND×N / COMMIT delivers in order, only after COMMIT', async () => {
      const q = queueName('tx');
      const s = await StompSession.connect(target.url);
      const sub = await s.subscribeReceipt(`/queue/${q}`, { id: 'tx' });
      const tx = s.client.begin('tx-1');
      for (let i = 1; i <= 5; i++) s.publish(`/queue/${q}`, `t${i}`, { transaction: tx.id });
      await s.publishReceipt(`/queue/${q}`, 'sentinel');
      assert.equal((await sub.next()).body, 'sentinel', 'nothing from the open transaction yet');
      tx.commit(); // stompjs cannot put a receipt on COMMIT
      const got = await sub.take(5);
      assert.deepEqual(
        got.map((m) => m.body),
        ['t1', 't2', 't3', 't4', 't5'],
      );
      await s.disconnect();
    });

    it('a transactional SEND receipt comes only after COMMIT', async () => {
      const q = queueName('txr');
      const c = await RawStomp.connect(target.url);
      c.sendFrame('BEGIN', { transaction: 't' });
      c.sendFrame('SEND', { destination: `/queue/${q}`, transaction: 't', receipt: 'in-tx' }, 'x');
      c.sendFrame('SEND', { destination: `/queue/${q}`, receipt: 'outside' }, 'y');
      const first = await c.expect('RECEIPT');
      assert.equal(first.headers['receipt-id'], 'outside');
      c.sendFrame('COMMIT', { transaction: 't', receipt: 'commit' });
      const ids = [(await c.expect('RECEIPT')).headers['receipt-id'], (await c.expect('RECEIPT')).headers['receipt-id']];
      assert.deepEqual(ids.sort(), ['commit', 'in-tx']);
      c.close();
    });

    it('ABORT publishes nothing', async () => {
      const q = queueName('abort');
      const s = await StompSession.connect(target.url);
      const sub = await s.subscribeReceipt(`/queue/${q}`, { id: 'ab' });
      const tx = s.client.begin('tx-abort');
      s.publish(`/queue/${q}`, 'aborted 1', { transaction: tx.id });
      s.publish(`/queue/${q}`, 'aborted 2', { transaction: tx.id });
      tx.abort(); // frames are processed in order: the sentinel comes after
      await s.publishReceipt(`/queue/${q}`, 'sentinel');
      assert.equal((await sub.next()).body, 'sentinel');
      await sub.unsubscribeReceipt();
      await s.disconnect();
      assert.equal((await amqp.checkQueue(q)).messageCount, 0);
    });

    it('disconnecting mid-transaction publishes nothing', async () => {
      const q = queueName('txdrop');
      await amqp.declareQueue(q, { durable: true });
      const c = await RawStomp.connect(target.url);
      await c.withReceipt('BEGIN', { transaction: 't' });
      c.sendFrame('SEND', { destination: `/amq/queue/${q}`, transaction: 't' }, 'lost');
      await c.withReceipt('SUBSCRIBE', { id: 'noop', destination: `/topic/${unique('noop')}` });
      c.close();
      await c.waitClose();
      await amqp.publish('', q, 'sentinel');
      const m = await amqp.get(q);
      assert.equal(m.content.toString(), 'sentinel');
      assert.equal(await amqp.get(q), false);
    });

    it(
      'a frame in a transaction is checked when it arrives: a bad 4th SEND fails before COMMIT, nothing is published',
      { skip: T.warrenOnly('Web-STOMP checks at COMMIT: the first three are published, then ERROR') },
      async () => {
        // issue 7: the COMMIT used to be half applied (3 of 4 published, then ERROR for the 4th's destination).
        const q = queueName('txhalf');
        await amqp.declareQueue(q, { durable: true });
        for (const bad of [
          { destination: '/bogus/x' },
          { destination: `/amq/queue/${q}`, priority: '300' },
          { destination: `/amq/queue/${q}`, 'correlation-id': 'c'.repeat(300) },
        ]) {
          const c = await RawStomp.connect(target.url);
          await c.withReceipt('BEGIN', { transaction: 't' });
          for (let i = 1; i <= 3; i++) c.sendFrame('SEND', { destination: `/amq/queue/${q}`, transaction: 't' }, `good ${i}`);
          c.sendFrame('SEND', { ...bad, transaction: 't', receipt: 'bad' }, 'bad');
          c.sendFrame('COMMIT', { transaction: 't', receipt: 'commit' });
          const e = await expectError(c, /Invalid destination|Invalid header|Unknown destination/, { receiptId: 'bad' });
          assert.ok(e.text.length > 0);
          await amqp.publish('', q, 'sentinel');
          const m = await amqp.get(q);
          assert.equal(m.content.toString(), 'sentinel', `nothing of the transaction was published (${JSON.stringify(bad).slice(0, 60)})`);
          assert.equal(await amqp.get(q), false);
        }
      },
    );

    it('BEGIN without transaction → ERROR "Missing transaction"', async () => {
      const c = await RawStomp.connect(target.url);
      c.sendFrame('BEGIN', { receipt: 'b' });
      await expectError(c, 'Missing transaction', { receiptId: 'b' });
      c.close();
    });

    it('COMMIT of an unknown transaction → ERROR "Bad transaction"', async () => {
      const c = await RawStomp.connect(target.url);
      c.sendFrame('COMMIT', { transaction: 'never-begun', receipt: 'c' });
      await expectError(c, 'Bad transaction', { receiptId: 'c' });
      c.close();
    });

    it('SEND in an unknown transaction → ERROR "Bad transaction"', async () => {
      const c = await RawStomp.connect(target.url);
      c.sendFrame('SEND', { destination: '/topic/x', transaction: 'nope' }, 'x');
      await expectError(c, 'Bad transaction');
      c.close();
    });

    it('ABORT of an unknown transaction → ERROR "Bad transaction"', async () => {
      const c = await RawStomp.connect(target.url);
      c.sendFrame('ABORT', { transaction: 'nope' });
      await expectError(c, 'Bad transaction');
      c.close();
    });
  });
});
