'use strict';
// Configuration reload on SIGHUP (bridge/main.c, doc/config.md "Reloading"):
// warren runs from a real config file; the file is rewritten and SIGHUP sent.
// A reloadable key (max_frame_bytes) applies to sessions opened afterwards
// while an open session keeps the value it started with; a reload that changes
// a restart-only key (listen_port) or has a syntax error is refused with a log
// line naming the key or file:line, and warren keeps serving with the running
// configuration. Under the ASan build the final SIGTERM proves that the
// configurations replaced by several reloads are freed (no leak).
//
// Synchronisation is on warren's stderr (the log lines), never on sleeps.

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const T = require('./lib/target');
const { RawStomp } = require('./lib/raw');
const { withTimeout, unique, WAIT_MS } = require('./lib/util');

function skip() {
  if (!T.isWarren) return 'warren-only: SIGHUP reload';
  if (!T.cfg.warrenBin) return 'WARREN_BIN unset';
  return T.suiteSkip();
}

const SMALL = 65536;
const LARGE = 262144;
const BETWEEN = 100000; // a body between the two limits

/** Starts warren with -c file; resolves once it logged that it listens. */
async function startWithFile(file, port) {
  const child = spawn(T.cfg.warrenBin, ['-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const waiters = [];
  const exit = new Promise((resolve) => child.once('exit', (code, sig) => resolve({ code, sig })));
  const onData = (d) => {
    output += d.toString();
    for (const w of waiters.splice(0)) if (!w.check()) waiters.push(w);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  /** Resolves once `re` has matched `n` times in the output (a global regex). */
  function waitLog(re, n, what) {
    const count = () => (output.match(re) || []).length;
    return withTimeout(
      new Promise((resolve) => {
        const w = { check: () => count() >= n && (resolve(), true) };
        if (!w.check()) waiters.push(w);
      }),
      WAIT_MS,
      `${what}\n${output}`,
    );
  }
  await Promise.race([
    waitLog(new RegExp(`listening on 127\\.0\\.0\\.1:${port}`, 'g'), 1, 'warren to listen'),
    exit.then((r) => {
      throw new Error(`warren exited ${JSON.stringify(r)}:\n${output}`);
    }),
  ]);
  return { child, exit, waitLog, output: () => output, url: `ws://127.0.0.1:${port}/ws` };
}

function confText(port, frameBytes, extra = '') {
  return (
    `# reload test\nlisten_addr = 127.0.0.1\nlisten_port = ${port}\nws_path = /ws\n` +
    `brokers = ${T.cfg.amqpHost}:${T.cfg.amqpPort}\ndefault_user = guest\ndefault_pass = guest\nlog_level = info\n` +
    `max_frame_bytes = ${frameBytes}\nmax_body_bytes = ${frameBytes}\n${extra}`
  );
}

/** SEND of a BETWEEN-byte body with a receipt: resolves with the reply frame's command. */
async function sendBetween(c, topic) {
  c.sendFrame('SEND', { destination: topic, receipt: 'big' }, 'x'.repeat(BETWEEN));
  return (await c.next(WAIT_MS, 'reply to the large SEND')).command;
}

describe('reload: SIGHUP', { skip: skip() }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-reload-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('applies reloadable keys to new sessions only, refuses restart-only changes and syntax errors, no leak', async () => {
    const port = await T.freePort();
    const file = path.join(dir, 'warren.conf');
    fs.writeFileSync(file, confText(port, SMALL));
    const w = await startWithFile(file, port);
    const topic = `/topic/${unique('reload')}`;
    const open = [];
    try {
      const a = await RawStomp.connect(w.url);
      open.push(a);

      fs.writeFileSync(file, confText(port, LARGE));
      w.child.kill('SIGHUP');
      await w.waitLog(/configuration reloaded/g, 1, 'the first reload');

      const b = await RawStomp.connect(w.url);
      open.push(b);
      assert.equal(await sendBetween(b, topic), 'RECEIPT', 'B (opened after the reload) takes the larger limit');
      assert.equal(await sendBetween(a, topic), 'ERROR', 'A (open before the reload) keeps the smaller limit');
      await a.waitClose();

      // A restart-only key changed: refused, naming it; the running config stays.
      fs.writeFileSync(file, confText(port + 1, SMALL));
      w.child.kill('SIGHUP');
      await w.waitLog(/ERROR.*reload refused: listen_port changed/g, 1, 'the listen_port reload to be refused');
      // A syntax error: refused with file:line.
      fs.writeFileSync(file, confText(port, SMALL, 'max_frame_bytes = lots\n'));
      w.child.kill('SIGHUP');
      const at = file.replace(/[.\\/]/g, '\\$&');
      await w.waitLog(new RegExp(`ERROR.*reload refused: ${at}:11: max_frame_bytes`, 'g'), 1, 'the bad file to be refused');
      const c = await RawStomp.connect(w.url);
      open.push(c);
      assert.equal(await sendBetween(c, topic), 'RECEIPT', 'refused reloads keep the running (larger) limit');

      // Several more reloads while sessions come and go; the old configurations must be freed.
      for (let i = 0; i < 3; i++) {
        fs.writeFileSync(file, confText(port, i % 2 ? LARGE : SMALL));
        w.child.kill('SIGHUP');
        await w.waitLog(/configuration reloaded/g, 2 + i, `reload ${2 + i}`);
        open.push(await RawStomp.connect(w.url));
      }
      assert.equal(await sendBetween(open[open.length - 1], topic), 'ERROR', 'the last reload set the smaller limit');
    } finally {
      for (const c of open) c.close();
      w.child.kill('SIGTERM');
      const r = await withTimeout(w.exit, 10000, 'warren to exit on SIGTERM').catch((e) => {
        w.child.kill('SIGKILL');
        throw new Error(`${e.message}\n${w.output()}`);
      });
      assert.deepEqual(r, { code: 0, sig: null }, w.output());
      assert.doesNotMatch(w.output(), /LeakSanitizer|AddressSanitizer|runtime error/);
    }
  });
});
