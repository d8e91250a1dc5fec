'use strict';
// The per-file fixture most integration files share: the target is started
// before the file's tests, and after them the cleanups registered along the
// way run (in order, failures ignored), the AMQP helper's connections close and
// the target stops.
//
//   let target;
//   const { cleanup, queueName, exchangeName } = useTarget((t) => (target = t), { max_frame_bytes: 65536 });
//
// Call it at the top of a describe(); hooks the file registers afterwards run
// after this before() (so the target is there) and should tear down through
// cleanup(fn), which runs before the target stops.

const { before, after } = require('node:test');
const T = require('./target');
const amqp = require('./amqp');
const { unique } = require('./util');

function useTarget(onStart, options) {
  const cleanups = [];
  let target;
  before(async () => {
    target = await T.startTarget(options);
    onStart(target);
  });
  after(async () => {
    for (const f of cleanups) await f().catch(() => {});
    await amqp.closeAll();
    await target?.stop();
  });
  const cleanup = (fn) => cleanups.push(fn);
  /** A unique queue name; the queue (if declared by anyone) is deleted at the end. */
  const queueName = (tag) => {
    const q = unique(tag);
    cleanup(() => amqp.deleteQueue(q));
    return q;
  };
  /** A fresh exchange of `type`, deleted at the end. */
  const exchangeName = async (tag, type = 'topic') => {
    const x = unique(tag);
    await amqp.declareExchange(x, type);
    cleanup(() => amqp.deleteExchange(x));
    return x;
  };
  return { cleanup, queueName, exchangeName };
}

/**
 * For files that start targets per test and log in as throw-away users (so that counting a user's AMQP connections
 * with rabbitmqctl is not disturbed by other files): start(options) starts a target with `defaults` merged under
 * options, newUser() adds a user with password 'pw' on '/', connectionsOf(user) lists its connections at the broker.
 * Everything is stopped and deleted after the file's tests.
 */
function usePerTestTargets(defaults = {}, tag = 'user') {
  const ctl = require('./rabbitmqctl');
  const targets = [];
  const users = [];
  after(async () => {
    for (const u of users) await ctl.deleteUser(u);
    for (const t of targets) await t.stop();
  });
  const start = async (options) => {
    const t = await T.startTarget({ ...defaults, ...options });
    targets.push(t);
    return t;
  };
  const newUser = async () => {
    const u = unique(tag);
    users.push(u);
    await ctl.addUser(u, 'pw', ['/']);
    return u;
  };
  const connectionsOf = async (user) => (await ctl.listConnections(['pid', 'user'])).filter((c) => c.user === user);
  return { start, newUser, connectionsOf };
}

module.exports = { useTarget, usePerTestTargets };
