// Browser test of the demo chat page (demo/): headless Chromium, driven by
// playwright-core, loads the page, connects over STOMP/WebSocket, sends a chat
// message, sees it come back, and sees it cross between two pages.
//
//   node tests/browser/chat.test.mjs [WARREN_EXE [DEMO_DIR]]
//
// Two servers are checked with the same page and the same steps:
//   - warren (WARREN_EXE, started here on a free port with http_root set to
//     the demo and brokers=127.0.0.1:$WARREN_TEST_AMQP_PORT), page served by
//     warren at /, STOMP at /ws;
//   - RabbitMQ's own Web-STOMP plugin ($WARREN_TEST_WEBSTOMP_PORT), page served
//     by a tiny static server in this file and pointed there with ?url=, which
//     proves the page (and so this test) independently of warren.
// The environment comes from scripts/rabbitmq (scripts/test exports it); a
// server whose variables or binary are missing is skipped, with the reason.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const warrenExe = process.argv[2] || process.env.WARREN_EXE || '';
const demoDir = process.argv[3] || path.join(repo, 'demo');
const chromiumPath = process.env.WARREN_CHROMIUM || '/usr/bin/chromium';
const amqpPort = process.env.WARREN_TEST_AMQP_PORT;
const webStompPort = process.env.WARREN_TEST_WEBSTOMP_PORT;
const STEP_MS = 20000;

let browser;
let root; // the served directory: demo/ plus vendor/stomp.umd.min.js

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Resolves once something accepts TCP connections on port; rejects when
// `alive()` turns false or after timeoutMs.
async function waitForPort(port, alive, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error('server exited before listening');
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// A copy of the demo with the stompjs bundle, as scripts/run lays it out.
function makeRoot() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-demo-'));
  for (const f of fs.readdirSync(demoDir)) {
    if (/\.(html|js|css)$/.test(f)) fs.copyFileSync(path.join(demoDir, f), path.join(dir, f));
  }
  fs.mkdirSync(path.join(dir, 'vendor'));
  const bundle = path.join(repo, 'node_modules', '@stomp', 'stompjs', 'bundles', 'stomp.umd.min.js');
  fs.copyFileSync(bundle, path.join(dir, 'vendor', 'stomp.umd.min.js'));
  return dir;
}

function staticServer(dir) {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };
  const srv = http.createServer((req, res) => {
    let p = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (p.endsWith('/')) p += 'index.html';
    const file = path.join(dir, path.normalize(p));
    if (!file.startsWith(dir) || !fs.existsSync(file)) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

async function openChat(url, nick) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const sep = url.includes('?') ? '&' : '?';
  const resp = await page.goto(`${url}${sep}nick=${nick}`, { timeout: STEP_MS });
  assert.equal(resp.status(), 200, `GET ${url}`);
  try {
    await page.waitForSelector('#status[data-state="connected"]', { timeout: STEP_MS });
  } catch (e) {
    const status = await page.locator('#status').evaluate((el) => `${el.dataset.state}: ${el.textContent} ${el.title}`);
    throw new Error(`page never connected (${status}); page errors: ${errors.join('; ')}`);
  }
  return { page, context, errors };
}

async function say(chat, text) {
  await chat.page.fill('#text', text);
  await chat.page.click('#send');
}

// Waits until the page shows a message with this text from this nick.
async function seen(chat, nick, text, cls) {
  const li = chat.page.locator(`#messages li.${cls}[data-nick="${nick}"]`, { hasText: text });
  await li.first().waitFor({ timeout: STEP_MS });
}

async function chatScenario(url) {
  const tag = Date.now().toString(36);
  const alice = await openChat(url, 'alice');
  const bob = await openChat(url, 'bob');
  try {
    await say(alice, `hello bob ${tag}`);
    await seen(alice, 'alice', `hello bob ${tag}`, 'mine');
    await seen(bob, 'alice', `hello bob ${tag}`, 'theirs');
    await say(bob, `hi alice ${tag} <b>not bold</b>`);
    await seen(alice, 'bob', `hi alice ${tag} <b>not bold</b>`, 'theirs');
    assert.equal(await alice.page.locator('#messages b').count(), 0, 'message text is not parsed as HTML');
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  } finally {
    await alice.context.close();
    await bob.context.close();
  }
}

before(async () => {
  root = makeRoot();
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    // playwright gives each launch a fresh temporary profile (user data dir).
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 60000,
  });
});

after(async () => {
  if (browser) await browser.close();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

test('demo chat against RabbitMQ Web-STOMP (page check)', {
  skip: webStompPort ? false : 'WARREN_TEST_WEBSTOMP_PORT not set (run scripts/test)',
  timeout: 120000,
}, async () => {
  const srv = await staticServer(root);
  try {
    const { port } = srv.address();
    await chatScenario(`http://127.0.0.1:${port}/index.html?url=ws://127.0.0.1:${webStompPort}/ws`);
  } finally {
    srv.close();
  }
});

test('demo chat served by warren', {
  skip: !amqpPort ? 'WARREN_TEST_AMQP_PORT not set (run scripts/test)'
    : !warrenExe ? 'no warren binary given (bridge/meson.build defines no warren_exe yet)' : false,
  timeout: 120000,
}, async () => {
  assert.ok(fs.existsSync(warrenExe), `warren binary ${warrenExe} does not exist (build failed?)`);
  const port = await freePort();
  const args = ['-o', 'listen_addr=127.0.0.1', '-o', `listen_port=${port}`, '-o', `http_root=${root}`,
    '-o', `brokers=127.0.0.1:${amqpPort}`];
  const child = spawn(warrenExe, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  let exited = false;
  const exit = new Promise((resolve) => child.on('exit', (code, sig) => { exited = true; resolve({ code, sig }); }));
  try {
    await waitForPort(port, () => !exited, 15000);
    await chatScenario(`http://127.0.0.1:${port}/`);
  } catch (e) {
    e.message += `\n--- warren ${args.join(' ')} output:\n${output}`;
    throw e;
  } finally {
    if (!exited) child.kill('SIGTERM');
    const how = await Promise.race([exit, new Promise((r) => setTimeout(() => r(null), 10000))]);
    if (!how) child.kill('SIGKILL');
  }
});
