'use strict';
// A broker that stops reading blocks nothing else (bridge/upstream-link.c publish_body(), the watchdog in
// bridge/upstream.c): a TCP proxy between warren and the broker stops reading warren's side, as RabbitMQ does when it
// blocks a publishing connection (or a host that vanished without a reset), while a session floods large SENDs.
// warren's connection thread never sits in a send: it holds what does not fit, the watchdog cuts that connection after
// amqp_write_timeout_ms (its session gets ERROR 'Broker connection lost' saying so), another session of the same login
// gets a new connection, and SIGTERM exits within the grace. Before: the thread sat in send() for as long as the broker
// did not read, no ERROR ever came, and SIGTERM hung in pthread_join.
//
// "warren's socket is full" is read from /proc/net/tcp: the receive queue of the proxy's side of the connection.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const T = require('./lib/target');
const { RawStomp } = require('./lib/raw');
const { unique, waitFor, WAIT_MS } = require('./lib/util');

const skip = T.suiteSkip() || T.warrenOnly("warren's own AMQP connections: Web-STOMP's are RabbitMQ's");

/** A TCP proxy to the broker; freeze() stops reading from the connections open so far (new ones pass). */
function proxy() {
  const links = [];
  const srv = net.createServer((c) => {
    const b = net.connect(T.cfg.amqpPort, T.cfg.amqpHost);
    const l = { c, b, frozen: false };
    links.push(l);
    c.on('data', (d) => {
      if (!b.write(d)) c.pause();
    });
    b.on('drain', () => l.frozen || c.resume());
    b.pipe(c);
    for (const [x, y] of [[c, b], [b, c]]) {
      x.on('error', () => y.destroy());
      x.on('close', () => y.destroy());
    }
  });
  return new Promise((resolve) =>
    srv.listen(0, '127.0.0.1', () =>
      resolve({
        port: srv.address().port,
        freeze() {
          for (const l of links) {
            l.frozen = true;
            l.c.pause();
          }
        },
        /** Bytes warren wrote that the frozen proxy left unread (/proc/net/tcp rx_queue of its accepted sockets). */
        unread() {
          const port = srv.address().port.toString(16).toUpperCase().padStart(4, '0');
          let n = 0;
          for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
            const f = line.trim().split(/\s+/);
            if (f.length > 4 && f[1].endsWith(`:${port}`) && f[3] === '01') n += parseInt(f[4].split(':')[1], 16);
          }
          return n;
        },
        close() {
          for (const l of links) {
            l.c.destroy();
            l.b.destroy();
          }
          srv.close();
        },
      }),
    ),
  );
}

const BODY = 'x'.repeat(2 << 20);

describe('a broker that stops reading', { skip }, () => {
  it('amqp_write_timeout_ms=1000: the flooding session gets ERROR Broker connection lost, another session of the login works', async () => {
    const px = await proxy();
    const target = await T.startTarget({ brokers: `127.0.0.1:${px.port}`, workers: 1, amqp_write_timeout_ms: 1000 });
    const clients = [];
    try {
      const q = unique('stuck');
      const a = await RawStomp.connect(target.url);
      clients.push(a);
      px.freeze();
      for (let i = 0; i < 16; i++) a.sendFrame('SEND', { destination: `/queue/${q}` }, BODY);
      const f = await a.next(WAIT_MS, 'the ERROR of the connection the broker does not read');
      assert.equal(f.command, 'ERROR');
      assert.equal(f.headers.message, 'Broker connection lost');
      assert.match(f.text, /amqp_write_timeout_ms/);
      // The same login, a new connection through the proxy (which reads new connections).
      const b = await RawStomp.connect(target.url);
      clients.push(b);
      b.sendFrame('SEND', { destination: `/queue/${q}`, receipt: 'b' }, 'after the cut');
      const r = await b.next(WAIT_MS, 'RECEIPT on the new connection');
      assert.equal(r.command, 'RECEIPT');
      assert.match(target.output(), /the broker read nothing of it for over 1000 ms; cut/);
    } finally {
      for (const c of clients) c.close();
      await target.stop();
      px.close();
    }
  });

  it('SIGTERM while a connection thread has more to write than the broker reads: warren exits within its grace', async (t) => {
    const px = await proxy();
    const target = await T.startTarget({ brokers: `127.0.0.1:${px.port}`, workers: 1 });
    let a;
    try {
      a = await RawStomp.connect(target.url);
      px.freeze();
      for (let i = 0; i < 16; i++) a.sendFrame('SEND', { destination: `/queue/${unique('stuck')}` }, BODY);
      await waitFor(() => px.unread() >= 64 << 10, undefined, "warren's socket to the frozen proxy to fill");
      const t0 = Date.now();
      await target.stop();
      const took = Date.now() - t0;
      t.diagnostic(`SIGTERM to exit with a full socket: ${took} ms`);
      assert.ok(took < 6000, `warren took ${took} ms to exit`);
    } finally {
      a?.close();
      await target.stop().catch(() => {});
      px.close();
    }
  });
});
