'use strict';
// Session budgets (issue 7, DESIGN.md invariant 4), with small limits so that
// each runs in a second against the real broker:
//
// - max_transaction_bytes bounds what all of a session's open transactions
//   buffer together: the frame that would pass it gets ERROR `Transaction too
//   large` (with its receipt-id) and nothing of the transactions is published.
// - max_pending_ops: a burst of SUBSCRIBE/UNSUBSCRIBE pairs (150) in one WebSocket
//   message is read only as fast as the broker answers (no ERROR), and the
//   session works normally afterwards.
// - max_unconfirmed_bytes: receipted SENDs whose bytes pass the budget wait
//   in the input until confirms make room: every RECEIPT comes, in order, and
//   every message is enqueued.
//
// The floods that show the memory figures (a 4 MiB-per-frame compressed
// transaction flood, 50k SUBSCRIBE/UNSUBSCRIBE pairs) are in
// budgets-flood.test.js (suite hostile). warren only: the keys are warren's.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const amqp = require('./lib/amqp');
const { RawStomp, encodeFrame } = require('./lib/raw');
const { expectError } = require('./lib/check');
const { WAIT_MS } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly('max_transaction_bytes, max_pending_ops and max_unconfirmed_bytes are warren keys');

describe('budgets: transactions in bytes, pending operations, unconfirmed bytes', { skip }, () => {
  let target;
  const { queueName } = useTarget((t) => (target = t), {
    max_transaction_bytes: 65536,
    max_pending_ops: 16,
    max_unconfirmed_bytes: 4096,
  });

  it('max_transaction_bytes: all open transactions together; the frame past it → ERROR, nothing published', async () => {
    const q = queueName('txbytes');
    await amqp.declareQueue(q, { durable: true });
    const c = await RawStomp.connect(target.url);
    await c.withReceipt('BEGIN', { transaction: 't1' });
    await c.withReceipt('BEGIN', { transaction: 't2' });
    const body = 'x'.repeat(30000);
    // (a transactional SEND's RECEIPT waits for its COMMIT: none here)
    c.sendFrame('SEND', { destination: `/amq/queue/${q}`, transaction: 't1' }, body);
    c.sendFrame('SEND', { destination: `/amq/queue/${q}`, transaction: 't2' }, body);
    c.sendFrame('SEND', { destination: `/amq/queue/${q}`, transaction: 't2', receipt: 'third' }, body);
    const e = await expectError(c, 'Transaction too large', { receiptId: 'third' });
    assert.match(e.text, /65536 bytes \(max_transaction_bytes\)/);
    await amqp.publish('', q, 'sentinel');
    assert.equal((await amqp.get(q)).content.toString(), 'sentinel');
    assert.equal(await amqp.get(q), false);
  });

  it('max_pending_ops: 150 SUBSCRIBE/UNSUBSCRIBE pairs in one message are read as the broker answers, no ERROR', async () => {
    const q = queueName('pending');
    const c = await RawStomp.connect(target.url);
    const frames = [];
    for (let i = 0; i < 150; i++) {
      frames.push(encodeFrame('SUBSCRIBE', { id: `s${i}`, destination: `/topic/${q}.${i}` }));
      frames.push(encodeFrame('UNSUBSCRIBE', { id: `s${i}` }));
    }
    frames.push(encodeFrame('SUBSCRIBE', { id: 'real', destination: `/queue/${q}`, receipt: 'flood-done' }));
    c.sendRaw(Buffer.concat(frames));
    const r = await c.expect('RECEIPT', 4 * WAIT_MS);
    assert.equal(r.headers['receipt-id'], 'flood-done');
    c.sendFrame('SEND', { destination: `/queue/${q}` }, 'after the flood');
    const m = await c.expect('MESSAGE');
    assert.equal(m.text, 'after the flood');
    assert.equal(c.isClosed, false);
    c.close();
  });

  it('max_unconfirmed_bytes: 40 receipted 3000-byte SENDs (budget 4096) all get their RECEIPT, in order', async () => {
    const q = queueName('unconf');
    await amqp.declareQueue(q, { durable: true });
    const c = await RawStomp.connect(target.url);
    const frames = [];
    for (let i = 0; i < 40; i++) frames.push(encodeFrame('SEND', { destination: `/amq/queue/${q}`, receipt: `u${i}` }, 'y'.repeat(3000)));
    c.sendRaw(Buffer.concat(frames));
    for (let i = 0; i < 40; i++) {
      const r = await c.expect('RECEIPT');
      assert.equal(r.headers['receipt-id'], `u${i}`);
    }
    assert.equal((await amqp.checkQueue(q)).messageCount, 40);
    c.close();
  });
});
