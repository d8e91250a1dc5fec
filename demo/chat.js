// warren demo: a chat room over STOMP (@stomp/stompjs) on WebSocket.
//
// Connects to ws(s)://<this host>/ws, the endpoint warren serves next to this
// page, or to the server given with ?url=ws://host:port/ws (RabbitMQ's
// Web-STOMP plugin works the same). Everyone subscribed to /topic/chat.room
// (?room=NAME picks /topic/chat.NAME) sees every message; messages are JSON
// {id, nick, text, ts}. Other publishers' non-JSON bodies are shown as text.
(function () {
  'use strict';

  const params = new URLSearchParams(location.search);
  const defaultUrl = location.host
    ? (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws'
    : 'ws://localhost:15674/ws';
  const brokerURL = params.get('url') || defaultUrl;
  const room = (params.get('room') || 'room').replace(/[^A-Za-z0-9_.-]/g, '');
  const destination = '/topic/chat.' + room;
  const clientId = Math.random().toString(36).slice(2, 10);

  const $ = (id) => document.getElementById(id);
  const statusEl = $('status');
  const list = $('messages');
  const form = $('compose');
  const nickEl = $('nick');
  const textEl = $('text');
  const sendEl = $('send');
  $('url').textContent = brokerURL;
  $('dest').textContent = destination;

  let stored = null;
  try { stored = localStorage.getItem('warren-chat-nick'); } catch (e) { /* private mode */ }
  nickEl.value = params.get('nick') || stored || 'guest-' + Math.floor(1000 + Math.random() * 9000);
  nickEl.addEventListener('change', () => {
    try { localStorage.setItem('warren-chat-nick', nickEl.value.trim()); } catch (e) { /* ignore */ }
  });

  function setState(state, label, detail) {
    statusEl.dataset.state = state;
    statusEl.textContent = label;
    statusEl.title = detail || '';
    sendEl.disabled = state !== 'connected';
  }

  function time(ts) {
    const d = new Date(typeof ts === 'number' ? ts : Date.now());
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function append(li) {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.appendChild(li);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function showSystem(text) {
    const li = document.createElement('li');
    li.className = 'system';
    li.textContent = text;
    append(li);
  }

  function showMessage(msg) {
    const li = document.createElement('li');
    li.className = msg.id && msg.id.startsWith(clientId + '-') ? 'mine' : 'theirs';
    li.dataset.nick = msg.nick;
    const meta = document.createElement('span');
    meta.className = 'meta';
    const nick = document.createElement('span');
    nick.className = 'nick';
    nick.textContent = msg.nick;
    meta.appendChild(nick);
    meta.appendChild(document.createTextNode(time(msg.ts)));
    const text = document.createElement('span');
    text.className = 'text';
    text.textContent = msg.text;
    li.appendChild(meta);
    li.appendChild(text);
    append(li);
  }

  function onMessage(frame) {
    let msg;
    try {
      msg = JSON.parse(frame.body);
    } catch (e) {
      msg = null;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.text !== 'string') {
      msg = { nick: '(amqp)', text: frame.body, ts: Date.now() };
    }
    msg.nick = String(msg.nick || 'anonymous').slice(0, 24);
    showMessage(msg);
  }

  const client = new StompJs.Client({
    brokerURL,
    connectHeaders: { login: 'guest', passcode: 'guest' },
    reconnectDelay: 2000,
    heartbeatIncoming: 10000,
    heartbeatOutgoing: 10000,
  });

  let seq = 0;
  client.onConnect = () => {
    // Report "connected" only once the broker confirmed the subscription, so a
    // message sent from another tab after that is sure to arrive here.
    const receipt = 'sub-' + clientId + '-' + ++seq;
    client.watchForReceipt(receipt, () => {
      setState('connected', 'connected');
      showSystem('joined ' + destination);
    });
    client.subscribe(destination, onMessage, { receipt });
  };
  client.onStompError = (frame) => {
    const why = frame.headers.message || 'error';
    setState('error', 'error: ' + why, frame.body);
    showSystem('server error: ' + why);
  };
  client.onWebSocketClose = (evt) => {
    if (statusEl.dataset.state !== 'error') {
      setState('disconnected', 'disconnected', 'code ' + evt.code + (evt.reason ? ': ' + evt.reason : ''));
    }
    setTimeout(() => {
      if (!client.connected && client.active) setState('connecting', 'reconnecting\u2026');
    }, 1000);
  };

  form.addEventListener('submit', (evt) => {
    evt.preventDefault();
    const text = textEl.value.trim();
    if (!text || !client.connected) return;
    const msg = {
      id: clientId + '-' + ++seq,
      nick: nickEl.value.trim() || 'anonymous',
      text,
      ts: Date.now(),
    };
    client.publish({
      destination,
      body: JSON.stringify(msg),
      headers: { 'content-type': 'application/json' },
    });
    textEl.value = '';
    textEl.focus();
  });

  setState('connecting', 'connecting\u2026');
  client.activate();
  window.warrenChat = { client, destination, brokerURL };
})();
