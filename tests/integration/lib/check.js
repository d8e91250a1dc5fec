'use strict';
// Assertions shared by the test files, written once for both targets.
//
// warren follows the STOMP spec where Web-STOMP does not: every ERROR frame is
// followed by the server closing the connection. Web-STOMP keeps most
// connections open after an ERROR, and after a broker (channel) error it may
// close before the ERROR is flushed (rabbitmq-server#6737).

const assert = require('node:assert/strict');
const { isWarren } = require('./target');
const { WAIT_MS } = require('./util');

/**
 * Expects an ERROR frame from a RawStomp whose message header matches
 * `message` (string: exact, RegExp: test). Against warren the server must
 * then close the connection, and nothing may follow the ERROR. Returns the
 * ERROR frame.
 */
async function expectError(c, message, { receiptId } = {}) {
  const f = await c.expect('ERROR');
  if (message instanceof RegExp) assert.match(f.headers.message ?? '', message);
  else if (message !== undefined) assert.equal(f.headers.message, message);
  if (isWarren) {
    if (receiptId !== undefined) assert.equal(f.headers['receipt-id'], receiptId, 'ERROR carries receipt-id');
    await c.waitClose();
    assert.equal(c.frames.length, 0, 'no frame after ERROR');
  }
  return f;
}

/**
 * A broker-side (channel) error: warren sends ERROR then closes; Web-STOMP
 * closes, with the ERROR or without it (lost in the race). Returns the ERROR
 * frame or null.
 */
async function expectBrokerError(c, message) {
  let f = null;
  try {
    f = await c.expect('ERROR');
  } catch (e) {
    if (isWarren || !c.isClosed) throw e;
  }
  if (f && message !== undefined) {
    if (message instanceof RegExp) assert.match(f.headers.message ?? '', message);
    else assert.equal(f.headers.message, message);
  }
  await c.waitClose();
  return f;
}

/** The server must close the connection (with or without ERROR first). */
async function expectClosed(c, ms = WAIT_MS) {
  const frames = [];
  for (;;) {
    try {
      frames.push(await c.next(ms));
    } catch {
      break;
    }
  }
  const closed = await c.waitClose(ms);
  return { frames, closed };
}

module.exports = { expectError, expectBrokerError, expectClosed };
