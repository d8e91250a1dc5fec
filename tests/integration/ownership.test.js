'use strict';
// Own only what you created (issue 7): a session deletes, when it ends, only
// the queues whose names it made up itself (stomp-subscription-…, the
// stomp.gen-… of /temp-queue/); a queue the client named, even auto-delete,
// may be another session's and is left to the broker. Before, a session that
// merely declared an existing `durable:false` /queue/ deleted it on the way
// out, cancelling everyone else's subscription to it.
//
// One worker: both sessions share one AMQP connection, as sessions of a login do.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const { RawStomp } = require('./lib/raw');
const { unique, withTimeout, WAIT_MS } = require('./lib/util');

describe('queue ownership', { skip: T.suiteSkip() }, () => {
  let target;
  const { queueName } = useTarget((t) => (target = t), { workers: 1 });

  it('a session that only declared an auto-delete /queue/ does not delete it: the subscriber keeps receiving', async () => {
    const q = queueName('room');
    const sub = await RawStomp.connect(target.url);
    await sub.withReceipt('SUBSCRIBE', { id: 'r', destination: `/queue/${q}`, durable: 'false' });
    const passer = await RawStomp.connect(target.url);
    await passer.withReceipt('SEND', { destination: `/queue/${q}`, durable: 'false' }, 'hello');
    assert.equal((await sub.expect('MESSAGE')).text, 'hello');
    await passer.withReceipt('DISCONNECT', {});
    await passer.waitClose();
    const other = await RawStomp.connect(target.url);
    await other.withReceipt('SEND', { destination: `/queue/${q}`, durable: 'false' }, 'after the passer left');
    const f = await withTimeout(sub.next(), WAIT_MS, 'the next frame of the subscriber');
    assert.equal(f.command, 'MESSAGE', `${f.command} ${JSON.stringify(f.headers)} ${f.text}`);
    assert.equal(f.text, 'after the passer left');
    other.close();
    sub.close();
  });
});
