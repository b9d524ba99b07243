'use strict';
/*
 * gateway.js - a BENCHMARK REFERENCE, not a product: the part of the
 * HomesteadGateway /sync protocol that homestead-bench's flood, fanout, big
 * and idle scenarios use, written the usual way for Node with the `ws`
 * package in one process, so the C gateway can be compared with it on the
 * same work.
 *
 * Implemented: the key (?api_key= or X-API-Key, else 401 before the upgrade);
 * the handshake ({"type":"mod","data":{server_id,channel_id}} or
 * {"type":"bot","data":{bot_id}}, answered {"status":"connected","type":...};
 * 400 malformed or unknown type, 409 a bot already connected; a mod with the
 * server_id of one on the same channel replaces it); messages decoded with
 * JSON.parse and validated like the gateway (ids 1..256 bytes without control
 * characters, a mod's id and destination.channel_id its own, author.id and
 * content non-empty, meta an object, ts RFC 3339); the outbound object (type,
 * channel_id, msg_id, server_id, author, content, meta, ts, received_at,
 * forwarded_at) serialized once per message; one ack per message:
 * "completed" if a recipient took it, else "failed"; pings. Routing is in
 * memory only: mod -> the bot, bot -> every mod of channel `id`. Not
 * implemented: queues, durability, dedup, presence events, rate limits,
 * metrics, reload; a slow peer's output is buffered by `ws` without bound.
 *
 * Usage: node gateway.js --port P --key K   (or PORT, HOMESTEAD_KEY);
 * listens on 127.0.0.1. `ws` is found through NODE_PATH (Debian's node-ws
 * installs it under /usr/share/nodejs).
 */
const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');

const MAX_MESSAGE = 2 << 20;      // the gateway's default body_size
const HANDSHAKE_MS = 60000;
const PING_MS = 30000;
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i;

function option(name, env, fallback) {
  const i = process.argv.indexOf('--' + name);
  if (i > 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  return process.env[env] || fallback;
}

const port = Number(option('port', 'PORT', '3333'));
const apiKey = Buffer.from(option('key', 'HOMESTEAD_KEY', ''));
if (apiKey.length === 0) {
  console.error('gateway.js: no key: pass --key K or set HOMESTEAD_KEY');
  process.exit(2);
}

// The routing table: the bot, and the mods by channel then server_id.
let bot = null;
const channels = new Map();

const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
const isText = (v) => typeof v === 'string' && v.length > 0;
const isId = (v) => isText(v) && Buffer.byteLength(v) <= 256 && !/[\x00-\x1f\x7f]/.test(v);
const isTs = (v) => typeof v === 'string' && RFC3339.test(v) && !Number.isNaN(Date.parse(v));
const refusal = (message, code) => JSON.stringify({ message, code });

function keyOk(given) {
  const b = Buffer.from(given || '');
  return b.length === apiKey.length && crypto.timingSafeEqual(b, apiKey);
}

function onHandshake(ws, data) {
  let h = null;
  try { h = JSON.parse(data); } catch (e) { /* malformed */ }
  let refuse = null;
  const d = isObject(h) && isObject(h.data) ? h.data : {};
  if (!isObject(h) || typeof h.type !== 'string') {
    refuse = refusal('Malformed handshake.', 400);
  } else if (h.type !== 'mod' && h.type !== 'bot') {
    refuse = refusal('Unknown handshake.', 400);
  } else if (h.type === 'mod' ? !isId(d.server_id) || !isId(d.channel_id) : !isId(d.bot_id)) {
    refuse = refusal('Malformed handshake.', 400);
  } else if (h.type === 'bot' && bot) {
    refuse = refusal('Bot already connected.', 409);
  }
  if (refuse) {
    ws.send(refuse);
    ws.close(1000);
    return;
  }
  ws.role = h.type;
  if (ws.role === 'bot') {
    bot = ws;
  } else {
    ws.serverId = d.server_id;
    ws.channelId = d.channel_id;
    let mods = channels.get(ws.channelId);
    if (!mods) channels.set(ws.channelId, (mods = new Map()));
    const old = mods.get(ws.serverId);
    if (old) old.close(1000);   // replaced by the newcomer
    mods.set(ws.serverId, ws);
  }
  ws.send(JSON.stringify({ status: 'connected', type: ws.role }));
}

function unregister(ws) {
  if (ws.role === 'bot' && bot === ws) {
    bot = null;
  } else if (ws.role === 'mod') {
    const mods = channels.get(ws.channelId);
    if (mods && mods.get(ws.serverId) === ws) {
      mods.delete(ws.serverId);
      if (mods.size === 0) channels.delete(ws.channelId);
    }
  }
}

// Decodes, validates, routes and acks one message from ws.
function onMessage(ws, data) {
  const now = new Date().toISOString();
  let m = null;
  try { m = JSON.parse(data); } catch (e) { /* malformed */ }
  const ok = isObject(m) && isId(m.msg_id) && isId(m.id) && isObject(m.author) &&
    isText(m.author.id) && (m.author.name == null || isText(m.author.name)) &&
    isText(m.content) && (m.meta == null || isObject(m.meta)) && (m.ts == null || isTs(m.ts)) &&
    (ws.role === 'bot' || (m.id === ws.serverId && isObject(m.destination) &&
                           m.destination.channel_id === ws.channelId));
  if (!ok) {
    const msgId = isObject(m) && m.msg_id !== undefined ? m.msg_id : null;
    ws.send(JSON.stringify({ message: 'Malformed message.', code: 400, msg_id: msgId }));
    return;
  }
  const out = { type: ws.role, channel_id: ws.role === 'mod' ? ws.channelId : m.id,
                msg_id: m.msg_id };
  if (ws.role === 'mod') out.server_id = ws.serverId;
  out.author = m.author.name == null ? { id: m.author.id }
                                     : { id: m.author.id, name: m.author.name };
  out.content = m.content;
  if (m.meta != null) out.meta = m.meta;
  out.ts = m.ts == null ? now : m.ts;
  out.received_at = now;
  out.forwarded_at = new Date().toISOString();
  const text = JSON.stringify(out);

  let status = 'failed';
  const to = ws.role === 'mod' ? (bot ? [bot] : []) : (channels.get(m.id) || new Map()).values();
  for (const r of to) {
    if (r.readyState !== r.OPEN) continue;
    r.send(text);
    status = 'completed';
  }
  ws.send(JSON.stringify({ status, type: ws.role, msg_id: m.msg_id }));
}

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'Content-Type': 'application/json' });
  res.end(refusal('Not found.', 404));
});
const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  const key = url.searchParams.get('api_key') || req.headers['x-api-key'];
  if (url.pathname !== '/sync' || !keyOk(key)) {
    const [code, text] = url.pathname !== '/sync' ? [404, 'Not found'] : [401, 'Unauthorized'];
    const body = refusal(text + '.', code);
    socket.end(`HTTP/1.1 ${code} ${text}\r\nContent-Type: application/json\r\n` +
               `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

wss.on('connection', (ws) => {
  ws.isAlive = true;
  ws.on('pong', () => { ws.isAlive = true; });
  const timer = setTimeout(() => {
    ws.send(refusal('Handshake timeout.', 408));
    ws.close(1000);
  }, HANDSHAKE_MS);
  ws.on('message', (data) => {
    if (ws.role) {
      onMessage(ws, data.toString());
    } else {
      clearTimeout(timer);
      onHandshake(ws, data.toString());
    }
  });
  ws.on('close', () => { clearTimeout(timer); unregister(ws); });
  ws.on('error', () => ws.terminate());
});

// Liveness: a peer that did not answer the last ping is dropped.
const pinger = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) { ws.terminate(); continue; }
    ws.isAlive = false;
    ws.ping();
  }
}, PING_MS);
wss.on('close', () => clearInterval(pinger));

server.listen(port, '127.0.0.1');
