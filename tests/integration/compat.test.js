'use strict';
// Drop-in compatibility (issue 8): frames a client written against RabbitMQ's STOMP / Web-STOMP plugin sends, and
// what it gets back. Every case runs against both targets (WARREN_TEST_TARGET=webstomp for the plugin); where warren
// differs on purpose, doc/compatibility.md says so and the case says which target does what.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const { RawStomp } = require('./lib/raw');
const { unique } = require('./lib/util');

describe('compat', { skip: T.suiteSkip() }, () => {
  let target;
  useTarget((t) => (target = t));

  // RabbitMQ reads a body on any frame and ignores it where the command has none; raw-socket clients and test tools
  // write "CONNECT\n...\n\n\n\0".
  it('a body on a frame that has none is ignored (EOLs or anything else)', async () => {
    for (const body of ['\n', '\r\n', '\n\n', 'junk']) {
      const c = await RawStomp.open(target.url);
      c.sendRaw(`CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n${body}\0`);
      const f = await c.next();
      assert.equal(f.command, 'CONNECTED', `CONNECT with body ${JSON.stringify(body)}: ${f.command} ${f.text}`);
      const q = unique('compat-body');
      const frames = [
        `SUBSCRIBE\nid:s1\ndestination:/queue/${q}\nreceipt:r1\n\n${body}\0`,
        `BEGIN\ntransaction:t1\nreceipt:r2\n\n${body}\0`,
        `ABORT\ntransaction:t1\nreceipt:r3\n\n${body}\0`,
        `UNSUBSCRIBE\nid:s1\nreceipt:r4\n\n${body}\0`,
        `DISCONNECT\nreceipt:r5\n\n${body}\0`,
      ];
      for (const [i, fr] of frames.entries()) {
        c.sendRaw(fr);
        const r = await c.next();
        assert.equal(r.command, 'RECEIPT', `${fr.split('\n')[0]} with body ${JSON.stringify(body)}: ${r.command} ${r.text}`);
        assert.equal(r.headers['receipt-id'], `r${i + 1}`);
      }
      c.close();
    }
  });
});
