'use strict';
// warren-bench and warren-bench-amqp (bench/), as a correctness test, never a timed one: a one-second run of each
// scenario against the target (warren or Web-STOMP) and of the native AMQP pair against the broker must print a RESULT
// line that parses, with messages delivered, no loss, no duplicates and no errors, and exit 0. Throughput and latency
// are not checked here (scripts/bench and doc/performance.md are where they are measured).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const T = require('./lib/target');
const amqp = require('./lib/amqp');
const { unique } = require('./lib/util');

const bench = process.env.WARREN_BENCH_BIN;
const benchAmqp = process.env.WARREN_BENCH_AMQP_BIN;
const skip = T.suiteSkip() || (!bench || !fs.existsSync(bench) ? 'WARREN_BENCH_BIN unset (run under meson test)' : false);

/** Runs a generator; resolves with its exit code, the parsed RESULT fields and stderr. */
function run(bin, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.once('error', reject);
    child.once('exit', (code) => {
      const lines = out.split('\n').filter((l) => l.startsWith('RESULT '));
      const fields = {};
      if (lines.length === 1) {
        for (const kv of lines[0].slice(7).split(' ')) {
          const i = kv.indexOf('=');
          fields[kv.slice(0, i)] = kv.slice(i + 1);
        }
      }
      resolve({ code, lines, fields, err });
    });
  });
}

function assertClean(res, what) {
  const ctx = `${what}: ${res.lines.join('\n')}\n${res.err}`;
  assert.equal(res.lines.length, 1, `one RESULT line: ${ctx}`);
  assert.equal(res.fields.errors, '0', ctx);
  if ('loss' in res.fields) {
    assert.equal(res.fields.loss, '0', ctx);
    assert.equal(res.fields.dup, '0', ctx);
  }
  for (const k of ['p50_us', 'p99_us', 'cpu_self']) if (k in res.fields) assert.ok(Number.isFinite(Number(res.fields[k])), `${k}: ${ctx}`);
  assert.equal(res.code, 0, ctx);
}

describe('warren-bench', { skip }, () => {
  let target;
  const queues = [];
  before(async () => {
    target = await T.startTarget();
  });
  after(async () => {
    for (const q of queues) await amqp.deleteQueue(q).catch(() => {});
    await amqp.closeAll();
    await target?.stop();
  });

  // The test user, not guest: other files change guest's rights on the shared broker for a moment.
  const creds = () => ['--login', T.cfg.user, '--passcode', T.cfg.pass];
  const common = () => ['--url', target.url, ...creds(), '--duration', '1', '--drain', '10'];
  const queueDest = () => {
    const q = unique('bench');
    queues.push(q);
    return ['--dest', `/queue/${q}`];
  };

  it('fanout 1 → 3: every subscriber gets every message, in a parsed RESULT line', async () => {
    const res = await run(bench, [...common(), '--scenario', 'fanout', '--pubs', '1', '--subs', '3', '--window', '16']);
    assertClean(res, 'fanout');
    assert.equal(res.fields.scenario, 'fanout');
    assert.ok(Number(res.fields.sent) > 0 && Number(res.fields.recv) > 0, res.lines[0]);
  });

  it('fixed rate: the open loop sends on schedule and loses nothing', async () => {
    const res = await run(bench, [...common(), '--scenario', 'fanout', '--rate', '200', '--size', '1000']);
    assertClean(res, 'rate');
    assert.ok(Number(res.fields.sent) >= 150, res.lines[0]);
  });

  it('queue 2 → 2 client-individual with prefetch: each message once', async () => {
    const res = await run(bench, [...common(), ...queueDest(), '--scenario', 'queue', '--pubs', '2', '--subs', '2',
      '--ack', 'client-individual', '--prefetch', '20']);
    assertClean(res, 'queue');
  });

  it('receipts and request/reply over /temp-queue/', async () => {
    assertClean(await run(bench, [...common(), ...queueDest(), '--scenario', 'receipts', '--window', '8']), 'receipts');
    assertClean(await run(bench, [...common(), ...queueDest(), '--scenario', 'reqreply', '--window', '8']), 'reqreply');
  });

  it('idle sessions and churn', async () => {
    const idle = await run(bench, [...common(), '--scenario', 'idle', '--sessions', '20', '--conc', '8']);
    assertClean(idle, 'idle');
    assert.equal(idle.fields.sessions, '20');
    const churn = await run(bench, [...common(), '--scenario', 'churn', '--conc', '2']);
    assertClean(churn, 'churn');
    assert.ok(Number(churn.fields.cycles) > 0, churn.lines[0]);
  });

  it('warren-bench-amqp: fanout and queue through the broker itself', { skip: !benchAmqp && 'WARREN_BENCH_AMQP_BIN unset' }, async () => {
    const args = ['--host', T.cfg.amqpHost, '--port', String(T.cfg.amqpPort), '--user', T.cfg.user, '--pass', T.cfg.pass,
      '--duration', '1', '--drain', '10'];
    assertClean(await run(benchAmqp, [...args, '--scenario', 'fanout', '--subs', '2']), 'amqp fanout');
    assertClean(await run(benchAmqp, [...args, '--scenario', 'queue', '--ack', 'client-individual', '--prefetch', '10']), 'amqp queue');
  });
});
