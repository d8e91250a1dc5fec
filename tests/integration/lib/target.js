'use strict';
// Which server the suite talks to, and how to start it.
//
// WARREN_TEST_TARGET=warren (default): start the warren binary named by
// WARREN_BIN (or the first non-option argv) on a free loopback port, pointed at
// the broker in WARREN_TEST_AMQP_PORT, wait until it accepts TCP connections,
// and kill it when the test file ends.
// WARREN_TEST_TARGET=webstomp: RabbitMQ's Web-STOMP plugin at
// ws://127.0.0.1:$WARREN_TEST_WEBSTOMP_PORT/ws, the behaviour warren copies.
// Run the suite against it to prove the tests themselves.
//
// Everything else comes from the WARREN_TEST_* variables that scripts/test
// (or `scripts/rabbitmq start DIR --web-stomp`) exports. When they are missing
// the files skip, unless CI is set, where a missing broker is a failure.

const { spawn } = require('node:child_process');
const net = require('node:net');
const fs = require('node:fs');
const { withTimeout, WAIT_MS } = require('./util');

const env = process.env;
const kind = (env.WARREN_TEST_TARGET || 'warren').toLowerCase();
const isWarren = kind === 'warren';
const isWebStomp = kind === 'webstomp';

const cfg = {
  kind,
  amqpPort: env.WARREN_TEST_AMQP_PORT ? Number(env.WARREN_TEST_AMQP_PORT) : null,
  amqpHost: env.WARREN_TEST_AMQP_HOST || '127.0.0.1',
  webstompPort: env.WARREN_TEST_WEBSTOMP_PORT ? Number(env.WARREN_TEST_WEBSTOMP_PORT) : null,
  vhost: env.WARREN_TEST_VHOST || 'warren-test',
  user: env.WARREN_TEST_USER || 'warren',
  pass: env.WARREN_TEST_PASS || 'warren-pass',
  nodename: env.WARREN_TEST_RABBITMQ_NODENAME || null,
  rabbitmqctl: env.WARREN_TEST_RABBITMQCTL || null,
  warrenBin: env.WARREN_BIN || process.argv.slice(2).find((a) => !a.startsWith('-')) || null,
};

/** Why this file cannot run here, or null. */
function missing() {
  if (!isWarren && !isWebStomp) return `unknown WARREN_TEST_TARGET '${kind}' (warren|webstomp)`;
  if (!cfg.amqpPort) return 'no broker configured (WARREN_TEST_AMQP_PORT unset; run under scripts/test)';
  if (isWebStomp && !cfg.webstompPort) return 'WARREN_TEST_WEBSTOMP_PORT unset';
  if (isWarren && !cfg.warrenBin) return 'WARREN_BIN unset';
  if (isWarren && !fs.existsSync(cfg.warrenBin)) return `warren binary ${cfg.warrenBin} not found`;
  return null;
}

/**
 * Option for describe(): skip when run by hand without a broker; under CI a
 * missing broker is an error, not a silent pass.
 */
function suiteSkip() {
  const why = missing();
  if (why && env.CI) throw new Error(`integration test cannot run: ${why}`);
  return why || false;
}

/** describe()/it() option: only against warren (a deliberate difference). */
function warrenOnly(why) {
  return isWarren ? false : `warren-only: ${why}`;
}

/** describe()/it() option: only against Web-STOMP. */
function webstompOnly(why) {
  return isWebStomp ? false : `Web-STOMP-only: ${why}`;
}

/** Resolves with a TCP port that was free a moment ago on 127.0.0.1. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function tryConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/**
 * Starts warren with `-o key=value` for the defaults below merged with
 * options (null removes a default), under `ulimit -n nofile` when given. Resolves when the port accepts a TCP
 * connection; rejects with warren's output when it exits first.
 */
async function startWarren(options = {}, { nofile } = {}) {
  const port = await freePort();
  const opts = {
    listen_addr: '127.0.0.1',
    listen_port: String(port),
    ws_path: '/ws',
    brokers: `${cfg.amqpHost}:${cfg.amqpPort}`,
    default_user: 'guest',
    default_pass: 'guest',
    log_level: env.WARREN_TEST_LOG_LEVEL || 'info',
    // Two workers unless told otherwise, so cross-worker bugs show (scripts/test runs the sanitizer build with 1).
    workers: env.WARREN_TEST_WORKERS || '2',
    ...options,
  };
  const args = [];
  for (const [k, v] of Object.entries(opts)) if (v !== null && v !== undefined) args.push('-o', `${k}=${v}`);
  // nofile: a descriptor limit (soft and hard) set by a shell that then execs warren (same pid).
  const child = nofile
    ? spawn('/bin/sh', ['-c', `ulimit -n ${Number(nofile)} && exec "$0" "$@"`, cfg.warrenBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(cfg.warrenBin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d) => {
    output += d.toString();
    if (output.length > 200000) output = output.slice(-100000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  const exit = new Promise((resolve) => child.once('exit', (code, sig) => resolve((exited = { code, sig }))));
  const deadline = Date.now() + WAIT_MS;
  while (!(await tryConnect(port))) {
    if (exited) throw new Error(`warren exited (${JSON.stringify(exited)}) before listening:\n${output}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`warren did not listen on ${port} within ${WAIT_MS} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    kind: 'warren',
    port,
    url: `ws://127.0.0.1:${port}${opts.ws_path}`,
    child,
    output: () => output,
    /**
     * SIGTERM, wait for the exit, and fail if warren crashed, exited non-zero
     * or a sanitizer reported anything during the run.
     */
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        try {
          await withTimeout(exit, 10000, 'warren to exit on SIGTERM');
        } catch (e) {
          child.kill('SIGKILL');
          await exit;
          throw new Error(`${e.message}\n${output}`);
        }
      }
      const clean = exited.code === 0 || (exited.code === null && exited.sig === 'SIGTERM');
      if (!clean || /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/.test(output)) {
        throw new Error(`warren ended badly (${JSON.stringify(exited)}):\n${output.slice(-20000)}`);
      }
      return exited;
    },
  };
}

/**
 * The server under test: a fresh warren (with options) or Web-STOMP. The
 * result has url, kind and stop().
 */
async function startTarget(options = {}, spawnOpts = {}) {
  if (isWebStomp) {
    return {
      kind: 'webstomp',
      port: cfg.webstompPort,
      url: `ws://127.0.0.1:${cfg.webstompPort}/ws`,
      output: () => '',
      async stop() {},
    };
  }
  return startWarren(options, spawnOpts);
}

module.exports = { cfg, kind, isWarren, isWebStomp, suiteSkip, warrenOnly, webstompOnly, startTarget, freePort };
