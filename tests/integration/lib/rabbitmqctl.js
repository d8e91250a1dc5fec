'use strict';
// rabbitmqctl against the test node: WARREN_TEST_RABBITMQCTL (the wrapper
// scripts/rabbitmq writes) or `rabbitmqctl -n $WARREN_TEST_RABBITMQ_NODENAME`.
// List commands use the JSON formatter so results are arrays of objects.

const { execFile } = require('node:child_process');
const { cfg } = require('./target');

function command() {
  if (cfg.rabbitmqctl) return [cfg.rabbitmqctl, []];
  if (cfg.nodename) return ['rabbitmqctl', ['-q', '-n', cfg.nodename]];
  return null;
}

/** Why rabbitmqctl cannot be used, or false. */
function ctlSkip() {
  return command() ? false : 'neither WARREN_TEST_RABBITMQCTL nor WARREN_TEST_RABBITMQ_NODENAME set';
}

/** Runs rabbitmqctl args; resolves with stdout. */
function ctl(...args) {
  const [bin, pre] = command();
  return new Promise((resolve, reject) => {
    execFile(bin, [...pre, ...args], { timeout: 60000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`rabbitmqctl ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** rabbitmqctl <what> [-p vhost] items... --formatter json → array of objects. */
async function list(what, items, vhost) {
  const args = [what];
  if (vhost) args.push('-p', vhost);
  args.push('--formatter', 'json', ...items);
  const out = await ctl(...args);
  const s = out.trim();
  return s ? JSON.parse(s) : [];
}

const listConnections = (items = ['name', 'user', 'vhost', 'client_properties']) => list('list_connections', items);
const listChannels = (items = ['connection', 'name', 'user', 'vhost', 'consumer_count']) => list('list_channels', items);
const listQueues = (vhost = '/', items = ['name', 'durable', 'auto_delete', 'exclusive', 'type', 'arguments']) =>
  list('list_queues', items, vhost);

/** A throw-away user with all permissions on the given vhosts. */
async function addUser(name, pass, vhosts = ['/']) {
  await ctl('add_user', name, pass);
  for (const v of vhosts) await ctl('set_permissions', '-p', v, name, '.*', '.*', '.*');
}

const deleteUser = (name) => ctl('delete_user', name).catch(() => {});

module.exports = { ctl, ctlSkip, list, listConnections, listChannels, listQueues, addUser, deleteUser };
