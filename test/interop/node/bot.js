#!/usr/bin/env node
// bot.js - a HomesteadGateway bot in one file, with `ws`, written to be
// copied into a chat bot (a Discord bot, say).
//
//   npm ci
//   HOMESTEAD_KEY=... node bot.js ws://host:3333/sync BOT_ID CHANNEL_ID
//
// Each line typed on stdin is sent to CHANNEL_ID as a chat message (in a bot:
// each message posted in the chat channel bridged to it); every frame
// processed is printed on stdout as one line of JSON (in a bot: posted to the
// chat channel of its channel_id). At the end of stdin it waits for the acks,
// closes with 1000 and exits.
//
// What it shows, in the order of a client's life (README, "Writing a mod or
// a bot"): the handshake with the key in X-API-Key; messages with a msg_id
// kept until their ack and sent again, same msg_id, after a reconnect;
// received messages filtered by seq per channel, so each is processed once
// even when a resume sends it again; reconnecting with backoff as the close
// code says; resuming with "since". Pings need nothing: ws answers them.
'use strict';

const WebSocket = require('ws');
const readline = require('node:readline');
const { randomUUID } = require('node:crypto');

const BACKOFF_MAX_MS = 30000;
// No ping from the gateway for this long: the link is dead even if TCP does
// not know it yet (the gateway pings every ping_interval, 30 s by default).
const SILENCE_MS = 90000;

const [url, botId, channelId] = process.argv.slice(2);
const key = process.env.HOMESTEAD_KEY;
if (!url || !botId || !channelId || !key) {
  console.error('usage: HOMESTEAD_KEY=K node bot.js ws://host:3333/sync BOT_ID CHANNEL_ID');
  process.exit(2);
}

const log = (s) => console.error(`homestead-bot: ${s}`);

const pending = new Map(); // msg_id -> frame, sent and not acked yet, in the order sent
let live = null;           // the connection messages go out on, once connected
let epoch = null;          // for "since": the gateway's epoch...
const lastSeq = {};        // ...and the last seq processed, per channel
let attempt = 0;
let rateLimited = false;   // the last link ended with 4004
let inputDone = false;

function handshake() {
  const data = { bot_id: botId };
  if (epoch) data.since = { epoch, channels: lastSeq }; // resume after these
  return JSON.stringify({ type: 'bot', data });
}

function connect() {
  const ws = new WebSocket(url, { headers: { 'X-API-Key': key } }); // not in the URL: URLs end up in logs
  let refused = 0; // the code of a handshake error frame, or of an HTTP refusal
  let silence;
  const alive = () => {
    clearTimeout(silence);
    silence = setTimeout(() => ws.terminate(), SILENCE_MS);
  };

  ws.on('unexpected-response', (req, res) => {
    refused = res.statusCode; // 401: wrong key; 503: too many connections
    ws.terminate();           // 'error' and 'close' follow
  });
  ws.on('open', () => {
    alive();
    ws.send(handshake());
  });
  ws.on('ping', alive); // ws has already answered it
  ws.on('message', (data) => {
    alive();
    const frame = data.toString('utf8'); // ws hands over whole messages, fragments joined
    const m = JSON.parse(frame);
    if (m.seq !== undefined) { // a message from a mod
      if (m.seq <= (lastSeq[m.channel_id] || 0)) return; // processed before this resume
      lastSeq[m.channel_id] = m.seq;
      console.log(frame); // in a bot: post it to the chat channel
    } else if (m.status === 'connected') {
      if (m.epoch !== epoch) for (const c of Object.keys(lastSeq)) delete lastSeq[c]; // a new numbering
      epoch = m.epoch;
      console.log(frame);
      if (!rateLimited) attempt = 0; // 4004 again and again: the backoff keeps growing
      for (const f of pending.values()) ws.send(f); // what was not acked, in order, first
      live = ws;
    } else if (m.status) { // an ack: completed, queued or failed
      pending.delete(m.msg_id);
      console.log(frame);
      if (inputDone) finish();
    } else if (m.code) {
      console.log(frame);
      if (!live) refused = m.code; // a handshake error: the gateway closes with 1000 next
      else if (m.code === 429) setTimeout(() => resend(m.msg_id), 1000); // rate limited: later
      else if (m.code === 400 && m.msg_id) pending.delete(m.msg_id); // malformed: resending won't help
    }
  });
  ws.on('error', (err) => log(`connection error: ${err.message}`)); // 'close' follows
  ws.on('close', (code, reason) => {
    clearTimeout(silence);
    if (live === ws) live = null;
    log(`the connection closed: ${code} ${reason}`);
    if (inputDone && pending.size === 0) return; // done: node exits once stdout is written
    reconnect(code, refused);
  });
}

// What to do after a close: README, "Close codes".
function reconnect(code, refused) {
  rateLimited = code === 4004;
  let delay = Math.min(BACKOFF_MAX_MS, 1000 * 2 ** attempt++);
  if (refused === 401 || refused === 400 || refused === 403 || code === 1008) {
    log(`refused (${refused || code}): fix the key or the handshake; not retrying`);
    process.exit(3);
  }
  if (refused === 409) log('another bot holds the slot (409)');
  if (code === 1009) {
    // The gateway acks our frames in order: the one it refused as too big is
    // the oldest not acked. Sending it again would only be refused again.
    const [first] = pending.keys();
    if (first !== undefined) {
      log(`message ${first} is over the gateway's body_size (1009); dropped`);
      pending.delete(first);
    }
  }
  if (code === 4000) {
    log('replaced (4000) by a newer connection; is this bot running twice? waiting 30 s');
    delay = Math.max(delay, 30000);
  }
  log(`reconnecting in ${delay / 1000} s`);
  setTimeout(connect, delay);
}

function resend(msgId) {
  const f = pending.get(msgId);
  if (f && live) live.send(f);
}

function send(channel, content) {
  const msgId = `${botId}-${randomUUID()}`; // unique, and the same when resent
  const frame = JSON.stringify({
    msg_id: msgId,
    id: channel,
    author: { id: 'discord-user', name: 'Discord' },
    content,
  });
  pending.set(msgId, frame);
  if (live) live.send(frame);
}

// End of input: close with 1000 once everything is acked (30 s at most).
function finish() {
  if (pending.size === 0 && live) live.close(1000, 'bye');
}

readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
  .on('line', (line) => { if (line) send(channelId, line); })
  .on('close', () => {
    inputDone = true;
    if (pending.size === 0) {
      if (!live) process.exit(0);
      finish();
      return;
    }
    setTimeout(() => {
      log(`${pending.size} message(s) not acknowledged`);
      process.exit(1);
    }, 30000).unref();
  });

connect();
