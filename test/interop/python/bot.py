#!/usr/bin/python3
"""bot.py - a HomesteadGateway bot in one file, with aiohttp, written to be
copied into a chat bot (a Discord bot, say).

    apt-get install python3-aiohttp
    HOMESTEAD_KEY=... /usr/bin/python3 bot.py ws://host:3333/sync BOT_ID CHANNEL_ID

Each line typed on stdin is sent to CHANNEL_ID as a chat message (in a bot:
each message posted in the chat channel bridged to it); every frame processed
is printed on stdout as one line of JSON (in a bot: posted to the chat channel
of its channel_id). At the end of stdin it waits for the acks, closes with
1000 and exits.

What it shows, in the order of a client's life (README, "Writing a mod or a
bot"): the handshake with the key in X-API-Key; messages with a msg_id kept
until their ack and sent again, same msg_id, after a reconnect; received
messages filtered by seq per channel, so each is processed once even when a
resume sends it again; reconnecting with backoff as the close code says;
resuming with "since". Pings need nothing: aiohttp answers them (autoping).
"""

import asyncio
import json
import os
import sys
import uuid

import aiohttp

BACKOFF_MAX = 30.0
# aiohttp refuses bigger messages (its default is 4 MiB); keep this at or
# above the gateway's body_size.
MAX_MSG_SIZE = 16 * 1024 * 1024
# aiohttp pings the gateway this often and drops the link when no pong comes
# back within half of it: a dead link is noticed even when TCP does not know.
HEARTBEAT = 30.0


def log(s):
    print(f"homestead-bot: {s}", file=sys.stderr, flush=True)


async def transmit(ws, frame):
    """Sends one frame. A failure means the link is gone: the message stays
    pending and goes again on the next connection."""
    try:
        await ws.send_str(frame)
    except (ConnectionError, aiohttp.ClientError) as e:
        log(f"send failed: {e}")


class Bot:
    def __init__(self, url, key, bot_id):
        self.url, self.key, self.bot_id = url, key, bot_id
        self.pending = {}     # msg_id -> frame, sent and not acked yet, in the order sent
        self.live = None      # the connection messages go out on, once connected
        self.epoch = None     # for "since": the gateway's epoch...
        self.last_seq = {}    # ...and the last seq processed, per channel
        self.acked = asyncio.Event()
        self.input_done = False

    def handshake(self):
        data = {"bot_id": self.bot_id}
        if self.epoch:  # resume after these
            data["since"] = {"epoch": self.epoch, "channels": self.last_seq}
        return {"type": "bot", "data": data}

    async def run(self, session):
        """Connect, and reconnect as the close code says (README, "Close codes")."""
        attempt = 0
        rate_limited = False  # the last link ended with 4004
        while True:
            refused = 0  # the code of a handshake error frame
            try:
                async with session.ws_connect(self.url, headers={"X-API-Key": self.key},
                                              heartbeat=HEARTBEAT,
                                              max_msg_size=MAX_MSG_SIZE) as ws:
                    await ws.send_json(self.handshake())
                    async for msg in ws:  # whole messages: aiohttp joins fragments
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        code = await self.handle(ws, msg.data)
                        if code:
                            refused = code
                        elif self.live is ws and not rate_limited:
                            attempt = 0  # (4004 again and again: the backoff keeps growing)
                    self.live = None
                    if self.done():  # we closed it: all sent and acked
                        return
                    code = ws.close_code or 1006
                    log(f"the connection closed: {code} {ws.exception() or ''}")
            except aiohttp.WSServerHandshakeError as e:
                if e.status == 401:
                    log("the gateway refused the key (HTTP 401); not retrying")
                    sys.exit(3)
                log(f"cannot connect: HTTP {e.status}")
                code = 1006
            except (aiohttp.ClientError, OSError) as e:
                log(f"cannot connect: {e!r}")
                code = 1006
            self.live = None
            if self.done():
                return
            rate_limited = code == 4004
            delay = min(BACKOFF_MAX, 2.0 ** attempt)
            attempt += 1
            if refused in (400, 403) or code == 1008:
                log(f"refused ({refused or code}): fix the key or the handshake; not retrying")
                sys.exit(3)
            if refused == 409:
                log("another bot holds the slot (409)")
            if code == 1009:
                # The gateway acks our frames in order: the one it refused as
                # too big is the oldest not acked. Sent again, it would only
                # be refused again.
                first = next(iter(self.pending), None)
                if first is not None:
                    log(f"message {first} is over the gateway's body_size (1009); dropped")
                    del self.pending[first]
            if code == 4000:
                log("replaced (4000) by a newer connection; is this bot running twice? waiting 30 s")
                delay = max(delay, 30.0)
            log(f"reconnecting in {delay} s")
            await asyncio.sleep(delay)

    async def handle(self, ws, frame):
        """One frame; returns the code of a handshake error, else 0."""
        m = json.loads(frame)
        if "seq" in m:  # a message from a mod
            if m["seq"] <= self.last_seq.get(m["channel_id"], 0):
                return 0  # processed before this resume
            self.last_seq[m["channel_id"]] = m["seq"]
            print(frame, flush=True)  # in a bot: post it to the chat channel
        elif m.get("status") == "connected":
            if m["epoch"] != self.epoch:  # a new numbering: start from its beginning
                self.last_seq.clear()
            self.epoch = m["epoch"]
            print(frame, flush=True)
            for f in list(self.pending.values()):  # what was not acked, in order, first
                await transmit(ws, f)
            self.live = ws
        elif "status" in m:  # an ack: completed, queued or failed
            self.pending.pop(m["msg_id"], None)
            self.acked.set()
            print(frame, flush=True)
        elif "code" in m:
            print(frame, flush=True)
            if self.live is not ws:
                return m["code"]  # a handshake error: the gateway closes with 1000 next
            if m["code"] == 429:  # rate limited: the same message, later
                asyncio.get_running_loop().call_later(1, self.resend, m["msg_id"])
            elif m["code"] == 400 and m.get("msg_id"):  # malformed: resending won't help
                self.pending.pop(m["msg_id"], None)
                self.acked.set()
        return 0

    def resend(self, msg_id):
        if msg_id in self.pending and self.live is not None:
            asyncio.ensure_future(transmit(self.live, self.pending[msg_id]))

    async def send(self, channel, content):
        msg_id = f"{self.bot_id}-{uuid.uuid4()}"  # unique, and the same when resent
        frame = json.dumps({"msg_id": msg_id, "id": channel,
                            "author": {"id": "discord-user", "name": "Discord"},
                            "content": content}, ensure_ascii=False)
        self.pending[msg_id] = frame
        if self.live is not None:
            await transmit(self.live, frame)

    def done(self):
        return self.input_done and not self.pending

    async def finish(self):
        """End of input: wait (30 s at most) for the acks, then close with 1000."""
        self.input_done = True
        try:
            await asyncio.wait_for(self.all_acked(), 30)
        except asyncio.TimeoutError:
            log(f"{len(self.pending)} message(s) not acknowledged")
            sys.exit(1)
        if self.live is not None:
            await self.live.close()  # code 1000

    async def all_acked(self):
        while self.pending:
            self.acked.clear()
            await self.acked.wait()


async def read_input(bot, channel):
    """The chat's side: stdin, one message per line (a line may be
    megabytes long: the reader's limit is raised to match)."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=MAX_MSG_SIZE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        text = line.decode("utf-8").rstrip("\n")
        if text:
            await bot.send(channel, text)
    await bot.finish()


async def main():
    key = os.environ.get("HOMESTEAD_KEY")
    if len(sys.argv) != 4 or not key:
        print("usage: HOMESTEAD_KEY=K /usr/bin/python3 bot.py ws://host:3333/sync BOT_ID CHANNEL_ID",
              file=sys.stderr)
        sys.exit(2)
    url, bot_id, channel = sys.argv[1:]
    sys.stdout.reconfigure(encoding="utf-8")
    bot = Bot(url, key, bot_id)
    async with aiohttp.ClientSession() as session:
        connection = asyncio.create_task(bot.run(session))
        await read_input(bot, channel)
        try:
            await asyncio.wait_for(connection, 5)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
