'use strict';
// Accepting: what bridge/acceptor.c and the refusals of bridge/server.c do
// before a connection reaches a worker (warren only: these are warren keys).
//
// - out of descriptors: under `ulimit -n 64` with max_connections set far
//   above it, a peer holding every descriptor makes accept() fail with EMFILE;
//   warren pauses accepting (100 ms doubling to 1 s) instead of spinning, logs
//   at most once a second, and accepts again once descriptors are free (CPU
//   time from /proc/<pid>/stat, log lines counted over a second);
// - max_connections = 0 is derived from RLIMIT_NOFILE (256 with 1 worker →
//   256 − (64 + 16 + 8) = 168): the 169th connection gets HTTP 503;
// - max_connections_per_ip = 2: every peer here is 127.0.0.1, so the third
//   connection is refused and a slot comes back when one leaves;
// - TLS: a connection refused at max_connections gets no clear-text HTTP 503
//   inside its handshake, just a close; with tls_ca_file a TLS 1.2 session is
//   resumed (SSL_CTX_set_session_id_context).

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');
const { execFile } = require('node:child_process');
const T = require('./lib/target');
const { RawStomp } = require('./lib/raw');
const { withTimeout, waitFor, WAIT_MS } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly('warren configuration keys (descriptor limits, per-address limit, TLS files)');

const started = [];
async function start(opts, spawnOpts) {
  const t = await T.startTarget(opts, spawnOpts);
  started.push(t);
  return t;
}

after(async () => {
  for (const t of started) {
    const r = await t.stop();
    assert.deepEqual(r, { code: 0, sig: null }, `warren exit status\n${t.output()}`);
  }
});

function upgradeRequest() {
  return (
    'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`
  );
}

/** Sends `request` on a fresh TCP connection; resolves with everything received until the close. */
function rawExchange(port, request) {
  return withTimeout(
    new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      const chunks = [];
      sock.on('data', (d) => chunks.push(d));
      sock.on('error', () => {});
      sock.once('connect', () => sock.write(request));
      sock.once('close', () => resolve(Buffer.concat(chunks)));
    }),
    WAIT_MS,
    'the server to answer and close',
  );
}

/** Opens a TCP connection and resolves with it once connected (nothing sent). */
function tcpOpen(port) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      sock.once('connect', () => resolve(sock));
      sock.once('error', reject);
    }),
    WAIT_MS,
    'TCP connect',
  );
}

/** utime + stime of `pid` in clock ticks (/proc/<pid>/stat fields 14 and 15). */
function cpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** Counts the lines of warren's output matching `re` during `ms`. */
async function countLines(target, re, ms) {
  let n = 0;
  let rest = '';
  const onData = (d) => {
    const lines = (rest + d.toString()).split('\n');
    rest = lines.pop();
    for (const l of lines) if (re.test(l)) n++;
  };
  target.child.stdout.on('data', onData);
  target.child.stderr.on('data', onData);
  await new Promise((r) => setTimeout(r, ms));
  target.child.stdout.off('data', onData);
  target.child.stderr.off('data', onData);
  return n;
}

function waitLog(target, re) {
  return waitFor(async () => (re.test(target.output()) ? true : null), WAIT_MS, `log line ${re}`);
}

function openssl(args) {
  return withTimeout(
    new Promise((resolve, reject) =>
      execFile('openssl', args, (err, stdout, stderr) => (err ? reject(new Error(`openssl: ${err.message}\n${stderr}`)) : resolve())),
    ),
    WAIT_MS,
    'openssl',
  );
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A self-signed server certificate, and a CA with one client certificate it signed. */
async function makeCerts() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-accept-'));
  const p = (n) => path.join(dir, n);
  await openssl(['req', '-x509', ...EC, '-keyout', p('key.pem'), '-out', p('cert.pem'), '-days', '1', '-subj', '/CN=localhost']);
  await openssl(['req', '-x509', ...EC, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '1', '-subj', '/CN=warren test CA']);
  await openssl(['req', ...EC, '-keyout', p('client.key'), '-out', p('client.csr'), '-subj', '/CN=client']);
  await openssl(['x509', '-req', '-in', p('client.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial',
    '-out', p('client.pem'), '-days', '1']);
  return { dir, p };
}

describe('accept: out of descriptors', { skip }, () => {
  it('EMFILE pauses accepting instead of spinning: little CPU, at most a log line a second, accepting again after', async (tc) => {
    const t = await start({ workers: '1', max_connections: '100000', login_timeout_ms: '60000' }, { nofile: 64 });
    const socks = [];
    try {
      for (let i = 0; i < 80; i++) socks.push(await tcpOpen(t.port)); // the kernel's backlog takes what warren cannot
      await waitLog(t, /accept failed: Too many open files/);
      const ticks0 = cpuTicks(t.child.pid);
      const lines = await countLines(t, /accept failed/, 1000);
      const ticks = cpuTicks(t.child.pid) - ticks0; // clock ticks, usually 100 a second
      tc.diagnostic(`out of descriptors for 1 s: ${ticks} ticks of CPU, ${lines} 'accept failed' lines`);
      assert.ok(ticks <= 25, `warren used ${ticks} ticks of CPU in 1 s while out of descriptors`);
      assert.ok(lines <= 2, `${lines} 'accept failed' lines in 1 s`);
    } finally {
      for (const s of socks) s.destroy();
    }
    // Descriptors are free again: the listener comes back by itself.
    const c = await waitFor(() => RawStomp.connect(t.url), WAIT_MS, 'a session once descriptors are free');
    c.close();
  });

  it('max_connections = 0 is derived from RLIMIT_NOFILE: 256 with 1 worker → 168, the next gets HTTP 503', async () => {
    const t = await start({ workers: '1', login_timeout_ms: '60000' }, { nofile: 256 });
    await waitLog(t, /max_connections: 168 from RLIMIT_NOFILE 256/);
    const socks = [];
    try {
      for (let i = 0; i < 168; i++) socks.push(await tcpOpen(t.port));
      const r = await rawExchange(t.port, upgradeRequest()); // accepted after the 168 (the backlog is in order)
      assert.match(r.toString('latin1'), /^HTTP\/1\.1 503 /);
      assert.doesNotMatch(t.output(), /accept failed/);
    } finally {
      for (const s of socks) s.destroy();
    }
  });
});

describe('accept: max_connections_per_ip', { skip }, () => {
  it('max_connections_per_ip = 2: the third connection from 127.0.0.1 gets HTTP 503, a slot comes back when one leaves', async () => {
    const t = await start({ max_connections_per_ip: '2' });
    const a = await waitFor(() => RawStomp.connect(t.url), WAIT_MS, 'a first slot'); // the start-up probe may hold one a moment
    const b = await waitFor(() => RawStomp.connect(t.url), WAIT_MS, 'a second slot');
    const r = await rawExchange(t.port, upgradeRequest());
    assert.match(r.toString('latin1'), /^HTTP\/1\.1 503 /);
    assert.match(t.output(), /connection limit per address \(2\) reached; refused/);
    a.ws.close(1000);
    await a.waitClose();
    // Given back by the worker that freed it (asynchronously): poll by connecting.
    const c = await waitFor(() => RawStomp.connect(t.url), WAIT_MS, 'a free slot after one client left');
    const again = await rawExchange(t.port, upgradeRequest());
    assert.match(again.toString('latin1'), /^HTTP\/1\.1 503 /);
    b.close();
    c.close();
  });
});

describe('accept: TLS', { skip }, () => {
  let certs;
  after(() => certs && fs.rmSync(certs.dir, { recursive: true, force: true }));

  it('a TLS connection refused at max_connections gets no clear-text HTTP 503, just a close', async () => {
    certs = certs || (await makeCerts());
    const tlsPort = await T.freePort();
    const t = await start({ max_connections: '1', tls_listen_port: String(tlsPort), tls_cert_file: certs.p('cert.pem'),
      tls_key_file: certs.p('key.pem') });
    // Holds the only slot (retried: the start-up probe's connection may still hold it for a moment).
    const first = await waitFor(() => RawStomp.connect(t.url), WAIT_MS, 'the only slot');
    // Raw bytes, so nothing hides what the server sends: a ClientHello-like record, then whatever comes back.
    const got = await rawExchange(tlsPort, Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]));
    assert.equal(got.length, 0, `no bytes in answer, got ${JSON.stringify(got.toString('latin1').slice(0, 40))}`);
    // A real TLS client sees a closed connection, not a record it cannot parse.
    const err = await withTimeout(
      new Promise((resolve) => {
        const s = tls.connect({ host: '127.0.0.1', port: tlsPort, rejectUnauthorized: false });
        s.once('secureConnect', () => resolve(new Error('handshake completed')));
        s.once('error', resolve);
      }),
      WAIT_MS,
      'the TLS client to fail',
    );
    assert.doesNotMatch(String(err.code || err.message), /WRONG_VERSION_NUMBER|PACKET_LENGTH|handshake completed/);
    await waitLog(t, /connection limit \(1\) reached; refused/);
    first.close();
  });

  for (const WORKERS of ['1', '2'])
  it(`tls_ca_file, ${WORKERS} worker(s): a TLS 1.2 session is resumed, and the resumed connection works`, async () => {
    certs = certs || (await makeCerts());
    const tlsPort = await T.freePort();
    await start({ tls_listen_port: String(tlsPort), tls_cert_file: certs.p('cert.pem'), tls_key_file: certs.p('key.pem'),
      tls_ca_file: certs.p('ca.pem'), workers: WORKERS });
    const opts = { host: '127.0.0.1', port: tlsPort, rejectUnauthorized: false, maxVersion: 'TLSv1.2',
      cert: fs.readFileSync(certs.p('client.pem')), key: fs.readFileSync(certs.p('client.key')) };
    const connect = (extra) =>
      withTimeout(
        new Promise((resolve, reject) => {
          const s = tls.connect({ ...opts, ...extra });
          s.once('secureConnect', () => resolve(s));
          s.once('error', reject);
        }),
        WAIT_MS,
        'TLS handshake',
      );
    const s1 = await connect({});
    const session = s1.getSession();
    assert.ok(session, 'a session to resume');
    // s1 stays open, so with 2 workers s2 goes to the other one (the least loaded): the ticket works on any worker.
    const s2 = await connect({ session });
    s1.destroy();
    assert.equal(s2.isSessionReused(), true, 'the session was resumed');
    const reply = await withTimeout(
      new Promise((resolve) => {
        const chunks = [];
        s2.on('data', (d) => chunks.push(d));
        s2.on('error', () => {});
        s2.once('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
        s2.write('GET /ws HTTP/1.1\r\nHost: x\r\n\r\n');
      }),
      WAIT_MS,
      'the HTTP reply over the resumed session',
    );
    assert.match(reply, /^HTTP\/1\.1 426 /);
  });
});
