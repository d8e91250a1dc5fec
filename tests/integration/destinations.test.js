'use strict';
// Destinations in both directions (STOMP SEND → AMQP, AMQP → STOMP MESSAGE):
// /exchange/, /topic/, /queue/, /amq/queue/, /reply-queue/, /temp-queue/ in
// reply-to, bare names; the header ↔ AMQP property mapping; the MESSAGE
// destination rebuilt from exchange and routing key; invalid destinations.

const { describe, it, before } = require('node:test');
const assert = require('node:assert/strict');
const T = require('./lib/target');
const { useTarget } = require('./lib/fixture');
const amqp = require('./lib/amqp');
const { RawStomp } = require('./lib/raw');
const { StompSession } = require('./lib/stomp');
const { expectError } = require('./lib/check');
const { unique } = require('./lib/util');

describe('destinations', { skip: T.suiteSkip() }, () => {
  let target;
  let s; // one stompjs session shared by the well-behaved cases
  const { cleanup, queueName, exchangeName } = useTarget((t) => (target = t));

  before(async () => {
    s = await StompSession.connect(target.url);
    cleanup(() => s.disconnect());
  });

  describe('SEND → AMQP', () => {
    it('/exchange/X/key publishes to X with routing key', async () => {
      const x = await exchangeName('sendx');
      const cap = await amqp.capture(x, 'a.b');
      await s.publishReceipt(`/exchange/${x}/a.b`, 'to exchange');
      const m = await cap.next();
      assert.equal(m.fields.exchange, x);
      assert.equal(m.fields.routingKey, 'a.b');
      assert.equal(m.content.toString(), 'to exchange');
      await cap.cancel();
    });

    it('/topic/K publishes to amq.topic with key K', async () => {
      const k = `${unique('sendt')}.x`;
      const cap = await amqp.capture('amq.topic', k);
      await s.publishReceipt(`/topic/${k}`, 'to topic');
      const m = await cap.next();
      assert.equal(m.fields.exchange, 'amq.topic');
      assert.equal(m.fields.routingKey, k);
      assert.equal(m.content.toString(), 'to topic');
      await cap.cancel();
    });

    it('/queue/Q declares a durable queue Q and publishes to it', async () => {
      const q = queueName('sendq');
      await s.publishReceipt(`/queue/${q}`, 'to queue');
      // Re-declaring with the same flags succeeds only if they match.
      await amqp.declareQueue(q, { durable: true, autoDelete: false, exclusive: false });
      const m = await amqp.get(q);
      assert.equal(m.content.toString(), 'to queue');
      assert.equal(m.fields.exchange, '');
      assert.equal(m.fields.routingKey, q);
    });

    it('/amq/queue/Q publishes to an existing queue', async () => {
      const q = queueName('sendaq');
      await amqp.declareQueue(q, { durable: false });
      await s.publishReceipt(`/amq/queue/${q}`, 'to amq queue');
      const m = await amqp.get(q);
      assert.equal(m.content.toString(), 'to amq queue');
    });

    it('/reply-queue/R publishes to queue R through the default exchange', async () => {
      const q = queueName('sendrq');
      await amqp.declareQueue(q, { durable: false });
      await s.publishReceipt(`/reply-queue/${q}`, 'to reply queue');
      const m = await amqp.get(q);
      assert.equal(m.content.toString(), 'to reply queue');
    });

    it('a bare name means /queue/name', async () => {
      const q = queueName('bare');
      await s.publishReceipt(q, 'bare');
      const m = await amqp.get(q);
      assert.equal(m.content.toString(), 'bare');
      assert.equal(m.fields.routingKey, q);
    });

    it('headers map to AMQP properties and the headers table', async () => {
      const q = queueName('props');
      await amqp.declareQueue(q, { durable: true });
      await s.publishReceipt(`/amq/queue/${q}`, '{"a":1}', {
        'content-type': 'application/json',
        'content-encoding': 'identity',
        'correlation-id': 'corr-1',
        'reply-to': 'some-reply-queue',
        persistent: 'true',
        priority: '5',
        expiration: '60000',
        'amqp-message-id': 'msg-42',
        type: 'greeting',
        'app-id': 'itest',
        timestamp: '1700000000',
        'x-custom': 'custom value',
        'plain-header': 'with:colon',
      });
      const m = await amqp.get(q);
      const p = m.properties;
      assert.equal(m.content.toString(), '{"a":1}');
      assert.equal(p.contentType, 'application/json');
      assert.equal(p.contentEncoding, 'identity');
      assert.equal(p.correlationId, 'corr-1');
      assert.equal(p.replyTo, 'some-reply-queue');
      assert.equal(p.deliveryMode, 2);
      assert.equal(p.priority, 5);
      assert.equal(p.expiration, '60000');
      assert.equal(p.messageId, 'msg-42');
      assert.equal(p.type, 'greeting');
      assert.equal(p.appId, 'itest');
      assert.equal(p.timestamp, 1700000000);
      assert.equal(String(p.headers['x-custom']), 'custom value');
      assert.equal(String(p.headers['plain-header']), 'with:colon');
      assert.equal(p.headers.destination, undefined, 'destination is not copied');
    });

    it('persistent absent or false leaves delivery_mode unset', async () => {
      const q = queueName('nonpers');
      await amqp.declareQueue(q, { durable: false });
      await s.publishReceipt(`/amq/queue/${q}`, 'a', { persistent: 'false' });
      await s.publishReceipt(`/amq/queue/${q}`, 'b');
      for (const body of ['a', 'b']) {
        const m = await amqp.get(q);
        assert.equal(m.content.toString(), body);
        assert.notEqual(m.properties.deliveryMode, 2);
      }
    });
  });

  describe('AMQP → MESSAGE', () => {
    it('/exchange/X/pattern binds with the pattern; MESSAGE carries properties and headers', async () => {
      const x = await exchangeName('subx');
      const sub = await s.subscribeReceipt(`/exchange/${x}/a.*`, { id: 'sub-x' });
      await amqp.publish(x, 'a.b', 'hello browser', {
        contentType: 'text/plain',
        correlationId: 'c-7',
        deliveryMode: 2,
        priority: 3,
        type: 'kind',
        appId: 'backend',
        messageId: 'amqp-id-1',
        replyTo: 'backend-replies',
        headers: {
          'x-str': 'v',
          'x-int': { '!': 'int', value: 42 },
          'x-long': { '!': 'long', value: 1234567 },
          'custom-header': 'value',
        },
      });
      await amqp.publish(x, 'other.b', 'not for us');
      await amqp.publish(x, 'a.c', 'second');
      const m = await sub.next();
      const h = m.headers;
      assert.equal(m.body, 'hello browser');
      assert.equal(h.destination, `/exchange/${x}/a.b`);
      assert.equal(h.subscription, 'sub-x');
      assert.ok(h['message-id'], 'message-id');
      assert.equal(h.redelivered, 'false');
      assert.equal(h['content-length'], String(Buffer.byteLength('hello browser')));
      assert.equal(h['content-type'], 'text/plain');
      assert.equal(h['correlation-id'], 'c-7');
      assert.equal(h.persistent, 'true');
      assert.equal(h.priority, '3');
      assert.equal(h.type, 'kind');
      assert.equal(h['app-id'], 'backend');
      assert.equal(h['amqp-message-id'], 'amqp-id-1');
      assert.equal(h['reply-to'], '/reply-queue/backend-replies');
      assert.equal(h['x-str'], 'v');
      assert.equal(h['x-int'], '42');
      assert.equal(h['x-long'], '1234567');
      assert.equal(h['custom-header'], 'value');
      const m2 = await sub.next();
      assert.equal(m2.body, 'second', 'non-matching key was not delivered');
      assert.notEqual(m2.headers['message-id'], h['message-id'], 'message-ids are unique');
      assert.equal(m2.headers.persistent, undefined, 'no persistent header without delivery_mode 2');
      sub.unsubscribe();
    });

    it('/exchange/X without pattern binds with the empty key (fanout)', async () => {
      const x = await exchangeName('subfan', 'fanout');
      const sub = await s.subscribeReceipt(`/exchange/${x}`, { id: 'sub-fan' });
      await amqp.publish(x, 'whatever', 'fanned');
      const m = await sub.next();
      assert.equal(m.body, 'fanned');
      assert.equal(m.headers.destination, `/exchange/${x}/whatever`);
      sub.unsubscribe();
    });

    it('/topic/K receives amq.topic messages; destination is /topic/<key>', async () => {
      const base = unique('subt');
      const sub = await s.subscribeReceipt(`/topic/${base}.*`, { id: 'sub-t' });
      await amqp.publish('amq.topic', `${base}.one`, 'topic msg');
      const m = await sub.next();
      assert.equal(m.body, 'topic msg');
      assert.equal(m.headers.destination, `/topic/${base}.one`);
      sub.unsubscribe();
    });

    it('/topic/K SEND reaches a /topic/K subscriber', async () => {
      const k = unique('tt');
      const sub = await s.subscribeReceipt(`/topic/${k}`, { id: 'sub-tt' });
      await s.publishReceipt(`/topic/${k}`, 'browser to browser', { 'my-header': 'kept' });
      const m = await sub.next();
      assert.equal(m.body, 'browser to browser');
      assert.equal(m.headers['my-header'], 'kept');
      sub.unsubscribe();
    });

    it('/queue/Q declares durable Q and consumes it; destination is /queue/Q', async () => {
      const q = queueName('subq');
      const sub = await s.subscribeReceipt(`/queue/${q}`, { id: 'sub-q' });
      await amqp.declareQueue(q, { durable: true, autoDelete: false, exclusive: false });
      await amqp.publish('', q, 'queued');
      const m = await sub.next();
      assert.equal(m.body, 'queued');
      assert.equal(m.headers.destination, `/queue/${q}`);
      sub.unsubscribe();
    });

    it('/amq/queue/Q consumes an existing queue; MESSAGE destination shows /queue/Q', async () => {
      const q = queueName('subaq');
      await amqp.declareQueue(q, { durable: false });
      const sub = await s.subscribeReceipt(`/amq/queue/${q}`, { id: 'sub-aq' });
      await amqp.publish('', q, 'from amq queue');
      const m = await sub.next();
      assert.equal(m.body, 'from amq queue');
      assert.equal(m.headers.destination, `/queue/${q}`);
      sub.unsubscribe();
    });

    it('/reply-queue/R consumes existing queue R', async () => {
      const q = queueName('subrq');
      await amqp.declareQueue(q, { durable: false });
      const sub = await s.subscribeReceipt(`/reply-queue/${q}`, { id: 'sub-rq' });
      await amqp.publish('', q, 'reply');
      const m = await sub.next();
      assert.equal(m.body, 'reply');
      sub.unsubscribe();
    });

    it('persistent:true SEND shows persistent:true on MESSAGE', async () => {
      const q = queueName('persrt');
      const sub = await s.subscribeReceipt(`/queue/${q}`, { id: 'sub-pers' });
      await s.publishReceipt(`/queue/${q}`, 'p', { persistent: 'true' });
      const m = await sub.next();
      assert.equal(m.headers.persistent, 'true');
      sub.unsubscribe();
    });
  });

  describe('request/reply', () => {
    it('reply-to:/temp-queue/N is rewritten; the AMQP reply comes back on that subscription', async () => {
      const svc = queueName('svc');
      await amqp.declareQueue(svc, { durable: false });
      const server = await amqp.consume(svc);
      s.publish(`/amq/queue/${svc}`, 'ping', { 'reply-to': '/temp-queue/rpc', 'correlation-id': 'r1' });
      const req = await server.next();
      assert.equal(req.content.toString(), 'ping');
      const replyTo = req.properties.replyTo;
      assert.ok(replyTo && !replyTo.startsWith('/temp-queue/'), `rewritten reply-to: ${replyTo}`);
      await amqp.publish('', replyTo, 'pong', { correlationId: 'r1' });
      const reply = await s.unhandled.next();
      assert.equal(reply.body, 'pong');
      assert.equal(reply.headers.subscription, '/temp-queue/rpc');
      assert.equal(reply.headers['correlation-id'], 'r1');
      // The same temp queue is reused for the next request.
      s.publish(`/amq/queue/${svc}`, 'ping2', { 'reply-to': '/temp-queue/rpc' });
      const req2 = await server.next();
      assert.equal(req2.properties.replyTo, replyTo);
      await server.cancel();
    });

    it('a STOMP client replies to an AMQP requester through /reply-queue/', async () => {
      const svc = queueName('svc2');
      const sub = await s.subscribeReceipt(`/queue/${svc}`, { id: 'svc2' });
      const ch = await amqp.channel();
      const { queue: replies } = await ch.assertQueue('', { exclusive: true });
      const back = await amqp.consume(replies);
      await amqp.publish('', svc, 'question', { replyTo: replies });
      const m = await sub.next();
      assert.equal(m.headers['reply-to'], `/reply-queue/${replies}`);
      await s.publishReceipt(m.headers['reply-to'], 'answer');
      const a = await back.next();
      assert.equal(a.content.toString(), 'answer');
      sub.unsubscribe();
      await back.cancel();
      await ch.close();
    });
  });

  describe('invalid destinations', () => {
    const errorCase = async (frame, headers, message) => {
      const c = await RawStomp.connect(target.url);
      c.sendFrame(frame, headers, frame === 'SEND' ? 'x' : '');
      const f = await expectError(c, message);
      assert.ok(f.text.length > 0, 'ERROR body explains');
      c.close();
    };

    it('SEND to an unknown prefix → ERROR "Unknown destination"', () =>
      errorCase('SEND', { destination: '/nonsense/x' }, 'Unknown destination'));

    it('SUBSCRIBE to an unknown prefix → ERROR "Unknown destination"', () =>
      errorCase('SUBSCRIBE', { id: '1', destination: '/nonsense/x' }, 'Unknown destination'));

    it('SEND to /temp-queue/ → ERROR "Invalid destination"', () =>
      errorCase('SEND', { destination: '/temp-queue/x' }, 'Invalid destination'));

    it('SUBSCRIBE to /temp-queue/ → ERROR', () =>
      errorCase('SUBSCRIBE', { id: '1', destination: '/temp-queue/x' }, /destination/i));
  });
});
