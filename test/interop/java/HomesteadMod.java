/*
 * HomesteadMod.java - a HomesteadGateway mod in one file, written to be copied
 * into a game-server mod or plugin. JDK 17 (java.net.http.WebSocket) and Gson,
 * which Minecraft servers already ship (Debian: libgoogle-gson-java).
 *
 *   export HOMESTEAD_KEY=...
 *   java -cp /usr/share/java/gson.jar HomesteadMod.java ws://host:3333/sync SERVER_ID CHANNEL_ID
 *
 * Each line typed on stdin is sent as a chat message (in a mod: each chat
 * line of the game); every frame processed is printed on stdout as one line
 * of JSON (in a mod: the bot's messages are broadcast to the players). At the
 * end of stdin it waits for the acks, closes with 1000 and exits.
 *
 * What it shows, in the order of a client's life (README, "Writing a mod or a
 * bot"): the handshake with the key in X-API-Key; messages with a msg_id kept
 * until their ack and sent again, same msg_id, after a reconnect; a big
 * message sent in fragments; received messages reassembled from the parts the
 * JDK hands over, and filtered by seq, so each is processed once even when a
 * resume sends it again; reconnecting with backoff as the close code says;
 * resuming with "since". Pings need nothing: the JDK answers them.
 */

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;

import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.WebSocket;
import java.net.http.WebSocketHandshakeException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

public final class HomesteadMod {
    /** Messages longer than this (in chars) go out in parts of this size. */
    static final int FRAGMENT_CHARS = 64 * 1024;
    static final long BACKOFF_MAX_MS = 30_000;

    final URI uri;
    final String key, serverId, channelId;
    final HttpClient http = HttpClient.newHttpClient();
    /* Java 17 prints in the locale's charset (ASCII under LANG=C): say UTF-8. */
    final PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true,
            StandardCharsets.UTF_8);

    /* Guarded by this: sent and not acknowledged yet, by msg_id, in the order
     * sent (resent in that order after a reconnect); the connection that
     * messages go out on, null while there is none. */
    final Map<String, String> pending = new LinkedHashMap<>();
    WebSocket live;
    /* Set once we close the connection ourselves: no reconnecting then. */
    volatile boolean closing;

    /* Where we are in the gateway's numbering, for "since": its epoch and the
     * last seq processed. Touched by the listener only (one connection at a
     * time, and the JDK calls a listener from one thread at a time). */
    String epoch;
    long lastSeq;

    HomesteadMod(URI uri, String key, String serverId, String channelId) {
        this.uri = uri;
        this.key = key;
        this.serverId = serverId;
        this.channelId = channelId;
    }

    public static void main(String[] args) throws Exception {
        String key = System.getenv("HOMESTEAD_KEY");
        if (args.length != 3 || key == null || key.isEmpty()) {
            System.err.println("usage: HOMESTEAD_KEY=K java HomesteadMod.java ws://host:3333/sync SERVER_ID CHANNEL_ID");
            System.exit(2);
        }
        HomesteadMod mod = new HomesteadMod(URI.create(args[0]), key, args[1], args[2]);
        new Thread(mod::readInput, "stdin").start();   // it ends the program
        mod.run();
    }

    static void log(String s) {
        System.err.println("homestead-mod: " + s);
    }

    /* ---- connect, and reconnect as the close code says (README, "Close codes") ---- */

    void run() throws InterruptedException {
        int attempt = 0;
        boolean rateLimited = false;   // the last link ended with 4004
        while (true) {
            Link link = new Link();
            int code;
            try {
                http.newWebSocketBuilder()
                        .header("X-API-Key", key)   // not in the URL: URLs end up in logs
                        .connectTimeout(Duration.ofSeconds(10))
                        .buildAsync(uri, link).get();
                WebSocket ws = link.connected.get();   // null: the link ended first
                if (ws != null) {
                    if (!rateLimited)   // 4004 again and again: the backoff keeps growing
                        attempt = 0;
                    resendPending(ws);
                }
                code = link.closed.get();
            } catch (ExecutionException e) {
                if (e.getCause() instanceof WebSocketHandshakeException h
                        && h.getResponse().statusCode() == 401) {
                    log("the gateway refused the key (HTTP 401); not retrying");
                    System.exit(3);
                }
                log("cannot connect: " + e.getCause());
                code = 1006;
            }
            synchronized (this) {
                live = null;
            }
            if (closing)
                return;
            rateLimited = code == 4004;
            long delay = Math.min(BACKOFF_MAX_MS, 1000L << Math.min(attempt++, 5));
            switch (link.refused) {
                case 400, 403 -> {
                    log("handshake refused (" + link.refused + "): fix the configuration; not retrying");
                    System.exit(3);
                }
                case 409 -> log("another bot holds the slot (409)");   // a mod never gets it
                default -> { }
            }
            switch (code) {
                case 1008 -> {
                    log("the key was revoked (1008); not retrying");
                    System.exit(3);
                }
                case 1009 -> dropTooBig();
                case 4000 -> {
                    log("replaced (4000): a newer connection uses server_id " + serverId
                            + " on this channel; is this mod running twice? waiting 30 s");
                    delay = Math.max(delay, 30_000);
                }
                default -> { }
            }
            log("reconnecting in " + delay / 1000.0 + " s");
            Thread.sleep(delay);
        }
    }

    /* 1009: the gateway reads our frames in order and acks each before the
     * next, so the message it refused is the oldest one not acknowledged.
     * Sending it again would only get the connection closed again. */
    synchronized void dropTooBig() {
        var it = pending.keySet().iterator();
        if (it.hasNext()) {
            log("message " + it.next() + " is over the gateway's body_size (1009); dropped");
            it.remove();
        }
    }

    String handshake() {
        JsonObject data = new JsonObject();
        data.addProperty("server_id", serverId);
        data.addProperty("channel_id", channelId);
        if (epoch != null) {   // resume: send again whatever came after lastSeq
            JsonObject since = new JsonObject();
            since.addProperty("epoch", epoch);
            since.addProperty("seq", lastSeq);
            data.add("since", since);
        }
        JsonObject hs = new JsonObject();
        hs.addProperty("type", "mod");
        hs.add("data", data);
        return hs.toString();
    }

    /* ---- one connection ---- */

    final class Link implements WebSocket.Listener {
        final StringBuilder text = new StringBuilder();
        final CompletableFuture<WebSocket> connected = new CompletableFuture<>();
        final CompletableFuture<Integer> closed = new CompletableFuture<>();
        int refused;   // the code of a handshake error frame

        @Override
        public void onOpen(WebSocket ws) {
            ws.sendText(handshake(), true);
            ws.request(1);
        }

        /* A message may come in several parts (the JDK splits big frames). */
        @Override
        public CompletionStage<?> onText(WebSocket ws, CharSequence part, boolean last) {
            text.append(part);
            if (last) {
                String frame = text.toString();
                text.setLength(0);
                handle(ws, frame);
            }
            ws.request(1);   // ask for the next frame: without it nothing more is read
            return null;
        }

        @Override
        public CompletionStage<?> onClose(WebSocket ws, int code, String reason) {
            if (!closing)
                log("the gateway closed the connection: " + code + " " + reason);
            end(code);
            return null;   // the JDK then answers the close frame
        }

        @Override
        public void onError(WebSocket ws, Throwable e) {
            log("connection lost: " + e);
            end(1006);
        }

        void end(int code) {
            connected.complete(null);
            closed.complete(code);
        }

        void handle(WebSocket ws, String frame) {
            JsonObject m = JsonParser.parseString(frame).getAsJsonObject();
            if (m.has("seq")) {   // a message from the bot
                long seq = m.get("seq").getAsLong();
                if (seq <= lastSeq)
                    return;   // processed before this resume
                lastSeq = seq;
                out.println(frame);   // in a mod: broadcast it in game
            } else if (m.has("status")) {
                String status = m.get("status").getAsString();
                if (status.equals("connected")) {
                    String e = m.get("epoch").getAsString();
                    if (!e.equals(epoch))   // a new numbering: start from its beginning
                        lastSeq = 0;
                    epoch = e;
                    out.println(frame);
                    connected.complete(ws);
                } else {   // an ack: completed, queued or failed
                    synchronized (HomesteadMod.this) {
                        pending.remove(m.get("msg_id").getAsString());
                        HomesteadMod.this.notifyAll();
                    }
                    out.println(frame);
                }
            } else if (m.has("code")) {
                out.println(frame);
                int code = m.get("code").getAsInt();
                if (!connected.isDone())
                    refused = code;   // the gateway closes with 1000 next
                else if (code == 429)   // rate limited: the same message, later
                    retryLater(m.get("msg_id").getAsString());
                else if (code == 400 && m.get("msg_id").isJsonPrimitive())
                    synchronized (HomesteadMod.this) {   // malformed: resending won't help
                        pending.remove(m.get("msg_id").getAsString());
                        HomesteadMod.this.notifyAll();
                    }
            }
        }
    }

    /* ---- sending ---- */

    String message(String id, String content) {
        JsonObject author = new JsonObject();
        author.addProperty("id", "console");
        author.addProperty("name", "Console");
        JsonObject dest = new JsonObject();
        dest.addProperty("channel_id", channelId);
        JsonObject m = new JsonObject();
        m.addProperty("msg_id", id);   // unique, and the same when resent
        m.addProperty("id", serverId);
        m.add("destination", dest);
        m.add("author", author);
        m.addProperty("content", content);
        return m.toString();
    }

    synchronized void send(String content) {
        String id = serverId + "-" + UUID.randomUUID();
        String frame = message(id, content);
        pending.put(id, frame);
        if (live != null)
            transmit(live, frame);
    }

    /* After the connected reply: what was not acknowledged goes first, in
     * order, then live opens the way for new messages. */
    synchronized void resendPending(WebSocket ws) {
        for (String frame : pending.values())
            transmit(ws, frame);
        live = ws;
    }

    void retryLater(String id) {
        CompletableFuture.delayedExecutor(1, TimeUnit.SECONDS).execute(() -> {
            synchronized (this) {
                String frame = pending.get(id);
                if (frame != null && live != null)
                    transmit(live, frame);
            }
        });
    }

    /* One message; over FRAGMENT_CHARS in parts (sendText(part, last=false)),
     * never cutting a surrogate pair. The JDK allows one send at a time:
     * callers hold the lock and each part is waited for. A failure means the
     * connection is gone: the message stays pending for the next one. */
    static void transmit(WebSocket ws, String frame) {
        try {
            int at = 0;
            do {
                int end = Math.min(frame.length(), at + FRAGMENT_CHARS);
                if (end < frame.length() && Character.isHighSurrogate(frame.charAt(end - 1)))
                    end--;
                ws.sendText(frame.substring(at, end), end == frame.length()).join();
                at = end;
            } while (at < frame.length());
        } catch (CompletionException | IllegalStateException e) {
            log("send failed: " + e.getMessage());
        }
    }

    /* ---- the game's side: stdin ---- */

    void readInput() {
        try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            for (String line; (line = in.readLine()) != null; )
                if (!line.isEmpty())
                    send(line);
        } catch (Exception e) {
            log("stdin: " + e);
        }
        finish();
    }

    /* End of input: wait (30 s at most) for the acks, then close with 1000. */
    void finish() {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        WebSocket ws;
        int left;
        synchronized (this) {
            try {
                while (!pending.isEmpty() && System.nanoTime() < deadline)
                    wait(100);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            ws = live;
            left = pending.size();
        }
        closing = true;
        if (ws != null) {
            try {
                ws.sendClose(WebSocket.NORMAL_CLOSURE, "bye").get(2, TimeUnit.SECONDS);
            } catch (Exception e) {
                ws.abort();
            }
        }
        if (left > 0)
            log(left + " message(s) not acknowledged");
        System.exit(left > 0 ? 1 : 0);
    }
}
