#!/usr/bin/env node
// scripts/bench.mjs — warren's benchmark client: STOMP over WebSocket load against any Web-STOMP-compatible endpoint.
//
//   node scripts/bench.mjs --url ws://127.0.0.1:15674/ws [--scenario fanout|queue|idle] [options] [--json]
//
// Scenarios (each prints one result line, or JSON with --json):
//   fanout  P publishers send M messages each to /topic/<run>; S subscribers each receive all P*M (ack:auto).
//           Reports delivered msgs/s (S*P*M / wall time) and end-to-end latency percentiles (send stamp in the body).
//   queue   P publishers send M messages each to /queue/<run> (a durable queue, as /queue/ declares by default: use a
//           throw-away broker); S competing consumers with ack:client-individual and prefetch 100 drain it.
//           Reports msgs/s and latency.
//   idle    opens N STOMP sessions (CONNECT + one SUBSCRIBE each) and holds them; reports the memory growth per session
//           when --pid is given (the sum of VmRSS over a comma-separated pid list, before and after: pass warren's pid
//           AND the broker's beam.smp pid for warren, since its sessions also cost the broker channels and queues, and
//           the beam.smp pid alone for Web-STOMP) and the connect rate. With --deflate the sessions negotiate
//           permessage-deflate (as browsers do) and each receives one 512-byte message before the second reading. --gc-cmd CMD runs CMD before each reading (scripts/bench
//           passes a rabbitmqctl eval that garbage-collects every Erlang process).
// Publishers keep at most --window unreceipted SENDs in flight (a receipt every --window/2 frames), so the broker's
// confirms pace them the same way on every target. Raw frames over the `ws` package: the client does as little as
// possible so the server is what is measured. The machine is small and noisy: run each case several times and compare
// medians (scripts/bench does that for warren and Web-STOMP in the same run).
import { WebSocket } from 'ws';
import { readFileSync } from 'node:fs';
import { execSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

const args = parseArgs(process.argv.slice(2));
const url = args.url || 'ws://127.0.0.1:15674/ws';
const scenario = args.scenario || 'fanout';
const publishers = +(args.publishers ?? 2);
const subscribers = +(args.subscribers ?? 4);
const messages = +(args.messages ?? 5000);
const size = +(args.size ?? 256);
const windowSize = +(args.window ?? 200);
const sessions = +(args.sessions ?? 500);
const login = args.login || 'guest';
const passcode = args.passcode || 'guest';
const timeoutMs = +(args.timeout ?? 120000);

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2);
    if (key === 'json' || key === 'deflate') out[key] = true;
    else out[key] = argv[++i];
  }
  return out;
}

function frame(cmd, headers, body = '') {
  let s = cmd + '\n';
  for (const [k, v] of Object.entries(headers)) s += `${k}:${v}\n`;
  return s + '\n' + body + '\0';
}

// Minimal STOMP session over one WebSocket: parses frames (NUL-terminated; bodies here never contain NUL).
class Session {
  constructor() {
    this.handlers = new Map(); // receipt-id -> resolve
    this.onMessage = null;
    this.buf = '';
  }
  open() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(url, ['v12.stomp'], { perMessageDeflate: !!args.deflate });
      this.ws.on('error', reject);
      this.ws.on('open', () => {
        this.ws.send(frame('CONNECT', { 'accept-version': '1.2', host: '/', login, passcode, 'heart-beat': '0,0' }));
      });
      this.ws.on('message', (data) => {
        this.buf += data.toString();
        let nul;
        while ((nul = this.buf.indexOf('\0')) >= 0) {
          const raw = this.buf.slice(0, nul).replace(/^\n+/, '');
          this.buf = this.buf.slice(nul + 1);
          if (raw.length === 0) continue;
          const f = parseFrame(raw);
          if (f.cmd === 'CONNECTED') resolve(this);
          else if (f.cmd === 'MESSAGE' && this.onMessage) this.onMessage(f);
          else if (f.cmd === 'RECEIPT') {
            const h = this.handlers.get(f.headers['receipt-id']);
            this.handlers.delete(f.headers['receipt-id']);
            if (h) h();
          } else if (f.cmd === 'ERROR') {
            reject(new Error(`ERROR ${f.headers.message}: ${f.body}`));
            console.error(`server ERROR: ${f.headers.message}: ${f.body}`);
            process.exit(2);
          }
        }
      });
    });
  }
  send(cmd, headers, body) {
    this.ws.send(frame(cmd, headers, body));
  }
  receipt(cmd, headers, body) {
    const id = randomBytes(6).toString('hex');
    return new Promise((resolve) => {
      this.handlers.set(id, resolve);
      this.send(cmd, { ...headers, receipt: id }, body);
    });
  }
  close() {
    try {
      this.ws.terminate();
    } catch {}
  }
}

function parseFrame(raw) {
  const end = raw.indexOf('\n\n');
  const head = end >= 0 ? raw.slice(0, end) : raw;
  const body = end >= 0 ? raw.slice(end + 2) : '';
  const lines = head.split('\n');
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0 && !(l.slice(0, i) in headers)) headers[l.slice(0, i)] = l.slice(i + 1);
  }
  return { cmd: lines[0], headers, body };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function publish(session, destination, count, payloadPad) {
  let inflight = [];
  for (let i = 0; i < count; i++) {
    const body = `${process.hrtime.bigint()}|${payloadPad}`;
    if ((i + 1) % Math.max(1, windowSize >> 1) === 0 || i === count - 1) {
      inflight.push(session.receipt('SEND', { destination, 'content-type': 'text/plain' }, body));
      if (inflight.length >= 2) await inflight.shift();
    } else {
      session.send('SEND', { destination, 'content-type': 'text/plain' }, body);
    }
  }
  await Promise.all(inflight);
}

function withTimeout(p, what) {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, rej) => (t = setTimeout(() => rej(new Error(`timeout: ${what}`)), timeoutMs))),
  ]);
}

async function flow(kind) {
  const run = `bench.${Date.now()}.${randomBytes(3).toString('hex')}`;
  const destination = kind === 'fanout' ? `/topic/${run}` : `/queue/${run}`;
  const pad = 'x'.repeat(Math.max(0, size - 24));
  const perSub = kind === 'fanout' ? publishers * messages : 0;
  const total = kind === 'fanout' ? subscribers * perSub : publishers * messages;
  const latencies = [];
  let received = 0;
  let done;
  const allIn = new Promise((r) => (done = r));
  const subs = [];
  for (let i = 0; i < subscribers; i++) {
    const s = await new Session().open();
    const manual = kind === 'queue';
    s.onMessage = (f) => {
      const stamp = BigInt(f.body.slice(0, f.body.indexOf('|')));
      latencies.push(Number(process.hrtime.bigint() - stamp) / 1e6);
      if (manual) s.send('ACK', { id: f.headers.ack });
      if (++received === total) done();
    };
    await s.receipt('SUBSCRIBE', {
      id: 'sub-0',
      destination,
      ack: manual ? 'client-individual' : 'auto',
      'prefetch-count': '100',
    });
    subs.push(s);
  }
  const pubs = [];
  for (let i = 0; i < publishers; i++) pubs.push(await new Session().open());
  const t0 = process.hrtime.bigint();
  await withTimeout(Promise.all(pubs.map((p) => publish(p, destination, messages, pad))), 'publish');
  await withTimeout(allIn, `receive ${total} (got ${received})`);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  for (const s of [...subs, ...pubs]) s.close();
  latencies.sort((a, b) => a - b);
  return {
    scenario: kind,
    url,
    publishers,
    subscribers,
    messages,
    size,
    delivered: total,
    seconds: +secs.toFixed(3),
    msgs_per_s: Math.round(total / secs),
    p50_ms: +percentile(latencies, 50).toFixed(2),
    p99_ms: +percentile(latencies, 99).toFixed(2),
  };
}

// Sum of VmRSS over a comma-separated pid list (warren and the broker, or the broker alone for Web-STOMP).
function rssKiB(pids) {
  let sum = 0;
  for (const pid of String(pids).split(',').filter(Boolean)) {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    sum += m ? +m[1] : 0;
  }
  return sum;
}

// RSS after asking the broker's VM to collect garbage (--gc-cmd), so that memory freed by earlier runs does not count.
function settledRss(pid) {
  if (args['gc-cmd']) execSync(args['gc-cmd'], { stdio: 'ignore' });
  return rssKiB(pid);
}

async function idle() {
  const pid = args.pid || '';
  const before = pid ? settledRss(pid) : 0;
  const run = `bench.idle.${Date.now()}`;
  const t0 = process.hrtime.bigint();
  const all = [];
  const batch = 50;
  for (let i = 0; i < sessions; i += batch) {
    const group = [];
    for (let j = i; j < Math.min(sessions, i + batch); j++)
      group.push(
        new Session().open().then((s) => s.receipt('SUBSCRIBE', { id: 'sub-0', destination: `/topic/${run}` }).then(() => s)),
      );
    all.push(...(await withTimeout(Promise.all(group), 'connect')));
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (args.deflate) {
    // Every session receives one message above the compression threshold, as a chat room's would: that is what
    // makes a server allocate its per-connection compressor.
    let got = 0;
    let done;
    const allIn = new Promise((r) => (done = r));
    for (const s of all) s.onMessage = () => ++got === all.length && done();
    all[0].send('SEND', { destination: `/topic/${run}` }, 'x'.repeat(512));
    await withTimeout(allIn, 'broadcast');
  }
  const after = pid ? settledRss(pid) : 0;
  for (const s of all) s.close();
  return {
    scenario: 'idle',
    url,
    sessions,
    deflate: !!args.deflate,
    seconds: +secs.toFixed(3),
    sessions_per_s: Math.round(sessions / secs),
    rss_before_kib: before,
    rss_after_kib: after,
    kib_per_session: pid ? +((after - before) / sessions).toFixed(1) : null,
  };
}

const result = scenario === 'idle' ? await idle() : await flow(scenario);
if (args.json) console.log(JSON.stringify(result));
else console.log(Object.entries(result).map(([k, v]) => `${k}=${v}`).join(' '));
process.exit(0);
