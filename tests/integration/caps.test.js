'use strict';
// Caps on what a peer can make warren create (bridge/upstream.c conn_within_caps(), DESIGN.md invariant 4): every
// distinct credential costs an AMQP connection and a thread in warren, and the credentials come from peers that have
// not logged in yet. amqp_max_connections caps them over the whole process, amqp_max_connections_per_credential per
// credential; a session that would need one more gets ERROR 'Too many broker connections' naming the key. A refused
// login stops counting as soon as its session was told (its connection thread exits at once).
//
// Threads are counted in /proc/PID/task; one worker, so the counts are this file's own. The failed-login throttle
// (login_failure_delay_max_ms) is off: it would make the bogus logins of this one address take turns, one at a time.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const T = require('./lib/target');
const { RawStomp } = require('./lib/raw');
const { unique, waitFor } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly("warren's own caps: Web-STOMP has one AMQP connection per client");

const threads = (t) => fs.readdirSync(`/proc/${t.child.pid}/task`).length;

/** CONNECT with these credentials; resolves with the reply frame (and the client, closed by the caller). */
async function login(t, login, passcode) {
  const c = await RawStomp.open(t.url);
  const f = await c.handshake({ login, passcode });
  return { c, f };
}

describe('AMQP connection caps', { skip }, () => {
  it('amqp_max_connections=3: 20 bogus logins at once cost at most 3 connection threads, each gets an ERROR, a valid login works after', async (t) => {
    const target = await T.startTarget({ workers: 1, amqp_max_connections: 3, login_failure_delay_max_ms: 0 });
    const clients = [];
    try {
      const base = threads(target);
      let most = base;
      const sampler = setInterval(() => (most = Math.max(most, threads(target))), 5);
      const replies = await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const r = await login(target, unique(`nobody-${i}`), 'wrong');
          clients.push(r.c);
          return r.f;
        }),
      );
      clearInterval(sampler);
      const byMessage = {};
      for (const f of replies) {
        assert.equal(f.command, 'ERROR', `${f.command} ${JSON.stringify(f.headers)}`);
        byMessage[f.headers.message] = (byMessage[f.headers.message] || 0) + 1;
        if (f.headers.message === 'Too many broker connections') assert.match(f.text, /amqp_max_connections = 3/);
        else assert.equal(f.headers.message, 'Bad CONNECT', f.text);
      }
      t.diagnostic(`threads: ${base} before, at most ${most} during; ERRORs: ${JSON.stringify(byMessage)}`);
      assert.ok(most <= base + 3, `${most - base} connection threads for bogus logins, the cap is 3`);
      // How many meet the cap depends on how fast the broker refuses (a refused login's thread leaves at once); the
      // refusal itself is tested deterministically in test-upstream.c (test_conn_limit). The bound on threads is the point.
      // The refused logins' threads are gone: they count no more, and a valid login gets a connection.
      await waitFor(() => threads(target) === base, undefined, 'the threads of the refused logins to exit');
      const ok = await RawStomp.connect(target.url);
      clients.push(ok);
    } finally {
      for (const c of clients) c.close();
      await target.stop();
    }
  });

  it('amqp_max_connections_per_credential=1: a second connection of one credential is refused, another credential is not', async () => {
    // amqp_auth_reuse_ms=0: a second session of the credential needs a new connection once the first is up.
    const target = await T.startTarget({ workers: 1, amqp_max_connections_per_credential: 1, amqp_auth_reuse_ms: 0, login_failure_delay_max_ms: 0 });
    const clients = [];
    try {
      const a = await RawStomp.connect(target.url);
      clients.push(a);
      const b = await login(target, 'guest', 'guest');
      clients.push(b.c);
      assert.equal(b.f.command, 'ERROR');
      assert.equal(b.f.headers.message, 'Too many broker connections');
      assert.match(b.f.text, /amqp_max_connections_per_credential = 1/);
      // Another credential is counted apart (refused by the broker, not by the cap).
      const other = await login(target, unique('nobody'), 'wrong');
      clients.push(other.c);
      assert.equal(other.f.headers.message, 'Bad CONNECT');
      // When a leaves, its connection (which nobody may join any more) closes, and the credential may have a new one.
      a.close();
      const c = await waitFor(async () => {
        const r = await login(target, 'guest', 'guest');
        clients.push(r.c);
        return r.f.command === 'CONNECTED' && r.c;
      }, undefined, 'a new connection of the credential once the first closed');
      assert.ok(c);
    } finally {
      for (const c of clients) c.close();
      await target.stop();
    }
  });
});
