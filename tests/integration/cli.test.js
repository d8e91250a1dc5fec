'use strict';
// The command line of bridge/main.c: -t (check and exit), -c FILE, -o
// key=value, -V, -h, --help-config, startup errors (exit 1 with a message that
// names the culprit), and the graceful shutdown on SIGTERM/SIGINT with live
// sessions: every WebSocket gets close 1001 (going away), warren exits 0
// promptly, within its grace period even when a client never answers the
// close. Under the ASan build LeakSanitizer turns a leak into a non-zero exit
// code, so these tests also prove a leak-free shutdown.
//
// Only the signal tests need a broker; the rest run the binary alone.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { execFile } = require('node:child_process');
const T = require('./lib/target');
const amqp = require('./lib/amqp');
const { RawStomp } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');
const { withTimeout, unique, WAIT_MS } = require('./lib/util');

const repo = path.resolve(__dirname, '..', '..');
const bin = T.cfg.warrenBin;

function binSkip() {
  if (!T.isWarren) return 'warren-only: the warren command line';
  if (!bin) return 'WARREN_BIN unset';
  if (!fs.existsSync(bin)) return `warren binary ${bin} not found`;
  return false;
}

/** Runs warren with args; resolves with { code, signal, stdout, stderr } (never rejects on exit status). */
function run(args, ms = WAIT_MS) {
  return withTimeout(
    new Promise((resolve, reject) => {
      execFile(bin, args, { encoding: 'utf8', timeout: ms }, (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number' && !err.signal) {
          reject(err);
          return;
        }
        resolve({ code: err ? err.code : 0, signal: err ? err.signal : null, stdout, stderr });
      });
    }),
    ms + 1000,
    `warren ${args.join(' ')}`,
  );
}

/**
 * Keys of the sample configuration, in order: every key appears there as a
 * commented-out setting `# key = default` (examples in prose are indented).
 */
function sampleKeys() {
  const text = fs.readFileSync(path.join(repo, 'conf', 'warren.conf'), 'utf8');
  const keys = [];
  for (const m of text.matchAll(/^# ([a-z][a-z0-9_]*) =/gm)) if (!keys.includes(m[1])) keys.push(m[1]);
  return keys;
}

describe('cli: options and configuration', { skip: binSkip() }, () => {
  let dir;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-cli-'));
  });
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function writeConf(name, text) {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text);
    return p;
  }

  it('-t with a valid configuration file prints OK and exits 0 (without binding)', async () => {
    // Hold the port: -t must only check, never listen.
    const holder = net.createServer();
    await new Promise((r) => holder.listen(0, '127.0.0.1', r));
    const { port } = holder.address();
    try {
      const conf = writeConf(
        'ok.conf',
        `# a valid file\nlisten_addr = 127.0.0.1\nlisten_port = ${port}\nbrokers = 127.0.0.1:5672, [::1]:5673\n` +
          'max_frame_bytes = 40m   # with a comment\ndefault_pass = "a # b"\nws_frame = BINARY\n',
      );
      const r = await run(['-t', '-c', conf]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /configuration OK/);
      assert.equal(r.stderr, '');
    } finally {
      holder.close();
    }
  });

  it('-t with no file checks the defaults', async () => {
    const r = await run(['-t']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /configuration OK/);
  });

  it('-o after -c wins over the file', async () => {
    const conf = writeConf('bad-port.conf', 'listen_port = 0\ntls_listen_port = 0\n');
    const bad = await run(['-t', '-c', conf]);
    assert.equal(bad.code, 1);
    const good = await run(['-t', '-c', conf, '-o', 'listen_port=15999']);
    assert.equal(good.code, 0, good.stderr);
  });

  it('an unknown key via -o → exit 1 naming the key', async () => {
    const r = await run(['-t', '-o', 'no_such_key_xyz=1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no_such_key_xyz/);
    assert.doesNotMatch(r.stdout, /OK/);
  });

  it('an out-of-range value via -o → exit 1 naming the key and the range', async () => {
    const r = await run(['-t', '-o', 'max_frame_bytes=12']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /max_frame_bytes/);
    assert.match(r.stderr, /1024/);
  });

  it('-o without = → exit 1', async () => {
    const r = await run(['-t', '-o', 'listen_port']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /listen_port/);
    assert.match(r.stderr, /key=value/);
  });

  it('-c missing.conf → exit 1 naming the file', async () => {
    const missing = path.join(dir, 'missing.conf');
    const r = await run(['-t', '-c', missing]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(missing), r.stderr);
  });

  it('an error in the file → exit 1 with file:line: key', async () => {
    const conf = writeConf('bad.conf', '# comment\nlisten_port = 1234\nmax_frame_bytes = lots\n');
    const r = await run(['-t', '-c', conf]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(`${conf}:3`), r.stderr);
    assert.match(r.stderr, /max_frame_bytes/);
  });

  it('an unknown key in the file → exit 1 with file:line naming it', async () => {
    const conf = writeConf('unknown.conf', 'listen_port = 1234\n\nlisten_prot = 1\n');
    const r = await run(['-t', '-c', conf]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(`${conf}:3`), r.stderr);
    assert.match(r.stderr, /listen_prot/);
  });

  it('a check across keys fails at -t (tls_listen_port without a certificate)', async () => {
    const r = await run(['-t', '-o', 'tls_listen_port=15675']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /tls_/);
  });

  it('--help-config lists every key of conf/warren.conf with its default', async () => {
    const r = await run(['--help-config']);
    assert.equal(r.code, 0, r.stderr);
    const listed = new Map();
    for (const line of r.stdout.split('\n')) {
      const m = /^(\S+)\s+(\S+)\s+default\s/.exec(line);
      if (m) listed.set(m[1], line);
    }
    const keys = sampleKeys();
    assert.ok(keys.length >= 40, `conf/warren.conf has ${keys.length} keys`);
    for (const k of keys) assert.ok(listed.has(k), `--help-config lacks ${k}`);
    for (const k of listed.keys()) assert.ok(keys.includes(k), `${k} is not in conf/warren.conf`);
    assert.match(listed.get('listen_port'), /default 15674\b/);
    assert.match(listed.get('ws_path'), /default \/ws\b/);
  });

  it('-V prints the version from meson.build', async () => {
    const version = /version:\s*'([^']+)'/.exec(fs.readFileSync(path.join(repo, 'meson.build'), 'utf8'))[1];
    for (const flag of ['-V', '--version']) {
      const r = await run([flag]);
      assert.equal(r.code, 0);
      assert.equal(r.stdout.trim(), `warren ${version}`);
    }
  });

  it('-h prints the usage on stdout and exits 0', async () => {
    const r = await run(['-h']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^usage: warren /);
    assert.match(r.stdout, /--help-config/);
  });

  it('an unknown option or a stray argument → usage on stderr, exit 1', async () => {
    for (const args of [['--frobnicate'], ['-x'], ['extra-arg']]) {
      const r = await run(args);
      assert.equal(r.code, 1, `warren ${args.join(' ')}`);
      assert.match(r.stderr, /usage: warren /);
    }
  });

  it('a port already in use → exit 1 with a message naming it', async () => {
    const holder = net.createServer();
    await new Promise((r) => holder.listen(0, '127.0.0.1', r));
    const { port } = holder.address();
    try {
      const r = await run(['-o', 'listen_addr=127.0.0.1', '-o', `listen_port=${port}`, '-o', 'brokers=127.0.0.1:1']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}`));
    } finally {
      holder.close();
    }
  });

  it('an unreadable TLS certificate → exit 1 naming the files', async () => {
    const cert = path.join(dir, 'no-cert.pem');
    const key = path.join(dir, 'no-key.pem');
    const r = await run([
      '-o', 'listen_addr=127.0.0.1', '-o', 'listen_port=0', '-o', `tls_listen_port=${await T.freePort()}`,
      '-o', `tls_cert_file=${cert}`, '-o', `tls_key_file=${key}`, '-o', 'brokers=127.0.0.1:1',
    ]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(cert), r.stderr);
  });
});

describe('cli: signals', { skip: binSkip() || T.suiteSkip() }, () => {
  after(async () => {
    await amqp.closeAll();
  });

  /** Starts warren with several kinds of live connections; returns them. */
  async function busy(target) {
    const stomp = await StompSession.connect(target.url);
    const topic = `/topic/${unique('cli')}`;
    const sub = await stomp.subscribeReceipt(topic);
    await stomp.publishReceipt(topic, 'before the signal');
    await sub.next();
    const raw = await RawStomp.connect(target.url);
    await raw.withReceipt('SUBSCRIBE', { id: 'q', destination: `/queue/${unique('cli')}`, ack: 'client' });
    raw.sendFrame('BEGIN', { transaction: 'tx1' });
    raw.sendFrame('SEND', { destination: topic, transaction: 'tx1' }, 'uncommitted');
    const half = await RawStomp.open(target.url); // upgraded, no CONNECT yet
    const http = net.connect({ host: '127.0.0.1', port: target.port }); // half an HTTP request
    http.on('error', () => {});
    await withTimeout(new Promise((r) => http.once('connect', r)), WAIT_MS, 'TCP connect');
    http.write('GET /ws HTTP/1.1\r\nHost: x\r\n');
    return { stomp, raw, half, http };
  }

  for (const sig of ['SIGTERM', 'SIGINT']) {
    it(`${sig} with live sessions → exit 0 promptly, every client disconnected`, async () => {
      const target = await T.startTarget();
      const c = await busy(target);
      const httpClosed = new Promise((r) => c.http.once('close', r));
      const exit = new Promise((resolve) => target.child.once('exit', (code, signal) => resolve({ code, signal })));
      const t0 = Date.now();
      target.child.kill(sig);
      const r = await withTimeout(exit, 10000, `warren to exit on ${sig}`).catch(async (e) => {
        target.child.kill('SIGKILL');
        throw new Error(`${e.message}\n${target.output()}`);
      });
      const took = Date.now() - t0;
      assert.deepEqual(r, { code: 0, signal: null }, target.output());
      assert.ok(took < 5000, `exit took ${took} ms`);
      assert.match(target.output(), /shutting down/);
      assert.doesNotMatch(target.output(), /LeakSanitizer|AddressSanitizer|runtime error/);
      assert.equal((await c.stomp.waitClose()).code, 1001);
      assert.deepEqual(await c.raw.waitClose().then(({ code, reason }) => ({ code, reason })), {
        code: 1001,
        reason: 'server shutting down',
      });
      assert.equal((await c.half.waitClose()).code, 1001);
      await withTimeout(httpClosed, WAIT_MS, 'the half-sent HTTP request to be closed');
      await c.stomp.client.deactivate({ force: true }).catch(() => {});
    });
  }

  it('SIGTERM with a client that never answers the close → exit 0 within the grace period', async () => {
    const target = await T.startTarget();
    const c = await RawStomp.connect(target.url);
    await c.withReceipt('SUBSCRIBE', { id: 's', destination: `/topic/${unique('cli')}` });
    c.ws._socket.pause(); // reads nothing: our close reply never comes
    const t0 = Date.now();
    const r = await target.stop();
    const took = Date.now() - t0;
    assert.deepEqual(r, { code: 0, sig: null }, target.output());
    assert.ok(took < 5000, `exit took ${took} ms`);
    c.ws._socket.resume();
    await c.waitClose();
  });

  it('a second signal stops at once, still exit 0', async () => {
    const target = await T.startTarget();
    const c = await RawStomp.connect(target.url);
    c.ws._socket.pause();
    const exit = new Promise((resolve) => target.child.once('exit', (code, signal) => resolve({ code, signal })));
    target.child.kill('SIGTERM');
    const logged = new Promise((resolve) => {
      const check = () => /shutting down/.test(target.output()) && resolve();
      target.child.stderr.on('data', check);
      check();
    });
    await withTimeout(logged, WAIT_MS, 'the first signal to be handled');
    target.child.kill('SIGINT');
    const r = await withTimeout(exit, 10000, 'warren to exit');
    assert.deepEqual(r, { code: 0, signal: null }, target.output());
    c.close();
  });

  it('SIGTERM right after start (no client ever connected) → exit 0', async () => {
    const target = await T.startTarget();
    const r = await target.stop();
    assert.deepEqual(r, { code: 0, sig: null }, target.output());
  });
});
