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
      ];
      // Web-STOMP 3.10 closes on DISCONNECT without its RECEIPT (doc/compatibility.md).
      if (T.isWarren) frames.push(`DISCONNECT\nreceipt:r5\n\n${body}\0`);
      for (const [i, fr] of frames.entries()) {
        c.sendRaw(fr);
        const r = await c.next();
        assert.equal(r.command, 'RECEIPT', `${fr.split('\n')[0]} with body ${JSON.stringify(body)}: ${r.command} ${r.text}`);
        assert.equal(r.headers['receipt-id'], `r${i + 1}`);
      }
      c.close();
    }
  });

  /** A raw session of `version` (CONNECTED read). */
  const session = async (version) => {
    const c = await RawStomp.open(target.url);
    c.sendRaw(`CONNECT\naccept-version:${version}\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n\0`);
    const f = await c.expect('CONNECTED');
    assert.equal(f.headers.version, version);
    return c;
  };

  // RabbitMQ supports NACK on 1.0 as an extension (with `requeue`); the message is given back at once.
  it('NACK on a STOMP 1.0 session requeues the message', async () => {
    const c = await session('1.0');
    const q = unique('compat-nack10');
    await c.withReceipt('SUBSCRIBE', { id: 's1', destination: `/queue/${q}`, ack: 'client' });
    c.sendFrame('SEND', { destination: `/queue/${q}` }, 'hello');
    const m = await c.expect('MESSAGE');
    assert.equal(m.headers.redelivered, 'false');
    await c.withReceipt('NACK', { 'message-id': m.headers['message-id'] });
    const again = await c.expect('MESSAGE');
    assert.equal(again.text, 'hello');
    assert.equal(again.headers.redelivered, 'true');
    await c.withReceipt('ACK', { 'message-id': again.headers['message-id'] });
    c.close();
  });

  // SUBSCRIBE without `id`: RabbitMQ takes it in every version; the destination names the subscription (consumer tag
  // Q_<destination>, so message-ids read Q_...), MESSAGE has no `subscription`, UNSUBSCRIBE names the destination.
  for (const version of ['1.0', '1.1', '1.2']) {
    it(`SUBSCRIBE without id on ${version}: Q_ message-ids, UNSUBSCRIBE by destination`, async () => {
      const c = await session(version);
      const q = unique('compat-noid');
      await c.withReceipt('SUBSCRIBE', { destination: `/queue/${q}`, ack: 'client-individual' });
      c.sendFrame('SEND', { destination: `/queue/${q}` }, 'one');
      const m = await c.expect('MESSAGE');
      assert.equal(m.text, 'one');
      assert.match(m.headers['message-id'], new RegExp(`^Q_/queue/${q}@@session-`));
      assert.equal(m.headers.subscription, undefined);
      if (version === '1.2') {
        assert.equal(m.headers.ack, m.headers['message-id']);
        await c.withReceipt('ACK', { id: m.headers.ack });
      } else {
        await c.withReceipt('ACK', { 'message-id': m.headers['message-id'] });
      }
      await c.withReceipt('UNSUBSCRIBE', { destination: `/queue/${q}` });
      c.close();
    });
  }

  // RabbitMQ's own suite sends 16 MiB messages (destinations.py, test_send_multiple_with_a_large_message); Web-STOMP has
  // no frame limit, warren's defaults take them (max_frame_bytes 32 MiB).
  it('a 16 MiB message goes through with the default limits', { timeout: 120000 }, async () => {
    const c = await session('1.2');
    const q = unique('compat-big');
    await c.withReceipt('SUBSCRIBE', { id: 'big', destination: `/queue/${q}` });
    const body = Buffer.alloc(16 * 1024 * 1024, 'b');
    c.sendFrame('SEND', { destination: `/queue/${q}` }, body);
    const m = await c.expect('MESSAGE', 110000);
    assert.equal(m.body.length, body.length);
    c.close();
  });

  // RabbitMQ's parser skips any mix of NUL and EOL between frames ("noise"); clients write "\n\0" after a frame.
  it('NULs between frames are skipped like heart-beat EOLs', async () => {
    const c = await session('1.2');
    const q = unique('compat-nul');
    c.sendRaw(`\n\0SUBSCRIBE\nid:1\ndestination:/queue/${q}\nreceipt:r1\n\n\0\n\0`);
    assert.equal((await c.expect('RECEIPT')).headers['receipt-id'], 'r1');
    c.sendRaw('\0');
    c.sendRaw(`\0SEND\ndestination:/queue/${q}\ncontent-type:text/plain\n\nhello\n\0\n`);
    assert.equal((await c.expect('MESSAGE')).text, 'hello\n');
    c.close();
  });

  // Web-STOMP's CONNECTED lists server, session, heart-beat, version, in that order (RabbitMQ's own suite matches the
  // frame as a whole).
  it('CONNECTED headers come in Web-STOMP\'s order', async () => {
    const c = await RawStomp.open(target.url);
    c.sendRaw('CONNECT\nlogin:guest\npasscode:guest\n\n\0');
    const f = await c.expect('CONNECTED');
    assert.deepEqual(f.rawHeaders.map(([k]) => k), ['server', 'session', 'heart-beat', 'version']);
    // The broker's own name first, as Web-STOMP sends it (warren adds its own after it).
    assert.match(f.headers.server, /^RabbitMQ\/\d+\.\d+\.\d+( warren\/\S+)?$/);
    assert.equal(f.headers.version, '1.0');
    c.close();
  });

  // RabbitMQ's words, byte for byte: `message` and body of each ERROR as RabbitMQ's STOMP plugin writes them (3.10 here,
  // and its current plugin's own tests: quoted destinations without the type, 'T_1' for a duplicate, trailing newlines
  // where it has them). `warren` gives warren's own body where it deliberately says more (doc/compatibility.md);
  // `web: false` marks ERRORs Web-STOMP 3.10 loses over WebSocket (it closes before the frame is flushed).
  const C12 = 'CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0';
  const C10 = 'CONNECT\nhost:/\nlogin:guest\npasscode:guest\n\n\0';
  const send = (d) => [C12, `SEND\ndestination:${d}\n\nx\0`];
  const invalid = (d, what, kind) => ({ name: `SEND ${d}`, frames: send(d), message: 'Invalid destination', body: `'${what}' is not a valid ${kind} destination\n` });
  const words = [
    { name: 'bad password', frames: ['CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:bad\n\n\0'], message: 'Bad CONNECT',
      body: "Access refused for user 'guest'\n" },
    { name: 'unknown vhost', frames: ['CONNECT\naccept-version:1.2\nhost://\nlogin:guest\npasscode:guest\n\n\0'], message: 'Bad CONNECT',
      body: "Virtual host '//' access denied" },
    { name: 'no common version', frames: ['CONNECT\naccept-version:3.0\nhost:/\nlogin:guest\npasscode:guest\n\n\0'], message: 'Version mismatch',
      body: 'Supported versions are 1.0,1.1,1.2\n' },
    invalid('/exchange//foo', '//foo', 'exchange'),
    invalid('/exchange/bah/baz/boo', '/bah/baz/boo', 'exchange'),
    invalid('/exchange/', '/', 'exchange'),
    invalid('/exchange', '', 'exchange'),
    invalid('/queue/bah/baz', '/bah/baz', 'queue'),
    invalid('/queue/', '/', 'queue'),
    invalid('/queue', '', 'queue'),
    invalid('/topic/bah/baz', '/bah/baz', 'topic'),
    invalid('/topic', '', 'topic'),
    invalid('/amq/queue/a/b', '/a/b', 'amqqueue'),
    invalid('/temp-queue/a/b', '/a/b', 'temp_queue'),
    { name: 'SEND to an unknown prefix', frames: send('/something/interesting'), message: 'Unknown destination',
      body: "'/something/interesting' is not a valid destination.\nValid destination types are: /temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/.\n" },
    { name: 'SEND to an empty destination', frames: send(''), message: 'Invalid destination', body: 'Destination cannot be blank' },
    { name: 'SUBSCRIBE to /temp-queue/', frames: [C12, 'SUBSCRIBE\nid:1\ndestination:/temp-queue/x\n\n\0'], message: 'Invalid destination',
      body: "'/temp-queue/x' is not a valid destination for 'SUBSCRIBE'\n" },
    { name: 'SEND without destination', frames: [C12, 'SEND\n\nx\0'], message: 'Missing destination', body: `"SEND" must include a 'destination' header\n` },
    { name: 'SUBSCRIBE without destination', frames: [C12, 'SUBSCRIBE\nid:1\n\n\0'], message: 'Missing destination',
      body: `"SUBSCRIBE" must include a 'destination' header\n` },
    { name: 'duplicated id', frames: [C12, 'SUBSCRIBE\nid:1\ndestination:/topic/a\n\n\0', 'SUBSCRIBE\nid:1\ndestination:/topic/b\n\n\0'],
      message: 'Duplicated subscription identifier', body: "A subscription identified by 'T_1' already exists.", web: false },
    { name: 'message-id on SEND', frames: [C12, 'SEND\ndestination:/topic/a\nmessage-id:x\n\nx\0'], message: 'Invalid header',
      body: "'message-id' is not allowed on 'SEND'.\n" },
    { name: 'missing exchange', frames: [C12, 'SEND\ndestination:/exchange/does.not.exist\n\nx\0'], message: 'not_found',
      body: "no exchange 'does.not.exist' in vhost '/'", web: false },
    { name: 'unknown command', frames: [C12, 'FOO\n\n\0'], message: 'Bad command', body: 'Could not interpret command "FOO"\n' },
    { name: 'UNSUBSCRIBE of nothing', frames: [C12, 'UNSUBSCRIBE\nid:zz\n\n\0'], message: 'No subscription found',
      body: `UNSUBSCRIBE must refer to an existing subscription.\nSubscription to "id='zz'" not found.\n` },
    { name: 'UNSUBSCRIBE of a temp-queue id', frames: [C12, 'UNSUBSCRIBE\nid:/temp-queue/x\n\n\0'], message: 'Invalid id',
      body: 'UNSUBSCRIBE \'id\' may not start with /temp-queue/\n' },
    { name: 'ACK without id (1.2)', frames: [C12, 'ACK\n\n\0'], message: 'Missing header', body: '"ACK" must include the "id" header\n' },
    { name: 'ACK without message-id (1.0)', frames: [C10, 'ACK\n\n\0'], message: 'Missing header', body: '"ACK" must include the "message-id" header\n' },
    { name: 'NACK with a bad id', frames: [C12, 'NACK\nid:bogus\n\n\0'], message: 'Invalid header', body: '"NACK" must include a valid "id" header\n' },
    { name: 'BEGIN without transaction', frames: [C12, 'BEGIN\n\n\0'], message: 'Missing transaction', body: `"BEGIN" must include a 'transaction' header\n` },
    { name: 'COMMIT of nothing', frames: [C12, 'COMMIT\ntransaction:nope\n\n\0'], message: 'Bad transaction', body: 'Invalid transaction identifier: "nope"\n' },
    { name: 'SEND in an unknown transaction', frames: [C12, 'SEND\ndestination:/queue/x\ntransaction:nope\n\nx\0'], message: 'Bad transaction',
      body: 'Invalid transaction identifier: "nope"\n' },
    { name: 'durable without id', frames: [C12, 'SUBSCRIBE\ndestination:/topic/a\ndurable:true\n\n\0'], message: 'Missing Header',
      body: "Header 'id' is required for durable subscriptions" },
  ];
  for (const w of words) {
    const skip = T.isWebStomp && w.web === false ? 'Web-STOMP 3.10 closes before this ERROR reaches a WebSocket client' : false;
    it(`ERROR words: ${w.name}`, { skip }, async () => {
      const c = await RawStomp.open(target.url);
      for (const f of w.frames) c.sendRaw(f);
      let f;
      do f = await c.next();
      while (f.command !== 'ERROR');
      assert.equal(f.headers.message, w.message);
      if (T.isWarren && w.warren) assert.match(f.text, w.warren);
      else assert.equal(f.text, w.body);
      c.close();
    });
  }
});
