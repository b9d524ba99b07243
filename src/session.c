/*
 * session.c - one websocket peer's input (see session.h). Its reader thread
 * (reader.c) hands it every frame the peer sends; everything in struct
 * gw_session is that thread's alone, so none of it is locked.
 *
 * A frame goes: RFC 6455 checks -> control frames answered -> fragments
 * reassembled up to body_size -> the first message is the handshake
 * (registry_join), the others are decoded (proto_decode_message), rate
 * limited and routed (registry_route), each acked once. Acks and routed
 * frames go into the reader's held-back flushes (defer.h), sent once per
 * batch of sockets it read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "defer.h"
#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "protocol.h"
#include "registry.h"
#include "session.h"

/* A peer over rate_limit in this many consecutive seconds is closed (4004):
 * a burst is refused message by message, a flood ends the connection. */
#define GW_RATE_PERSIST_S 5

struct gw_session {
	struct gw_conn *conn;        /* the registry's reference */
	const struct gw_config *cfg;
	int joined;                  /* handshake accepted */
	double tokens;               /* rate_limit bucket: messages that may still pass */
	int64_t tokens_ms;           /* when it was last refilled (monotonic) */
	int64_t refused_sec;         /* the last second (monotonic) a message was refused in */
	int refused_run;             /* consecutive seconds with a refusal, up to it */
	struct gw_defer *defer;      /* the reader's held-back flushes, during a call */
	unsigned char *rx;           /* a fragmented message being reassembled */
	size_t rx_len, rx_cap;
	int rx_opcode;               /* 0 = none in progress */
};

struct gw_session *session_new(struct gw_conn *c, const struct gw_config *cfg)
{
	struct gw_session *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->conn = c;
	s->cfg = cfg;
	return s;
}

void session_free(struct gw_session *s)
{
	if (!s)
		return;
	registry_release(s->conn);
	free(s->rx);
	free(s);
}

/* Sends {"message":..,"code":..} then a close frame; returns 0: the
 * caller ends the connection. */
static int reply_and_close(struct gw_conn *c, const char *message, int code, const char *why)
{
	char buf[160];
	size_t n = proto_error(message, code, NULL, buf, sizeof(buf));

	conn_queue(c, GW_OP_TEXT, buf, n);
	conn_close(c, GW_CLOSE_NORMAL, message, GW_CLOSE_GRACE_MS);
	conn_set_why(c, why);
	return 0;
}

/* code: an enum gw_close_code, or the code the peer closed with. */
static int close_with(struct gw_conn *c, int code, const char *reason, const char *why)
{
	if (code == GW_CLOSE_PROTOCOL)
		metrics_inc(GW_M_REJECT_1002);
	else if (code == GW_CLOSE_TOO_BIG)
		metrics_inc(GW_M_REJECT_1009);
	conn_close(c, code, reason, GW_CLOSE_GRACE_MS);
	conn_set_why(c, why);
	return 0;
}

/* The handshake is decoded: joins the registry, or refuses. */
static int join(struct gw_session *s)
{
	struct gw_conn *c = s->conn;
	enum gw_join j = registry_join(c, s->defer);

	proto_handshake_release(&c->hs);   /* since served its purpose */
	if (j == GW_JOIN_FORBIDDEN) {
		log_event(GW_LOG_WARN, "rejected", "remote", c->remote, "reason", "key not allowed for role",
		          "role", proto_role_name(c->hs.role), "code", "403", NULL);
		metrics_inc(GW_M_REJECT_403);
		return reply_and_close(c, "Key not allowed for this role.", 403, "forbidden");
	}
	if (j == GW_JOIN_CONFLICT) {
		log_event(GW_LOG_WARN, "rejected", "remote", c->remote, "reason", "bot already connected",
		          "bot_id", c->hs.bot_id, "code", "409", NULL);
		metrics_inc(GW_M_REJECT_409);
		return reply_and_close(c, "Bot already connected.", 409, "conflict");
	}
	if (j != GW_JOIN_OK)
		return 0;
	s->joined = 1;
	if (c->hs.role == GW_ROLE_MOD)
		log_event(GW_LOG_INFO, "mod connected", "remote", c->remote, "server_id", c->hs.server_id,
		          "channel", c->hs.channel_id, NULL);
	else
		log_event(GW_LOG_INFO, "bot connected", "remote", c->remote, "bot_id", c->hs.bot_id, NULL);
	return 1;
}

static int on_handshake(struct gw_session *s, const char *data, size_t len)
{
	struct gw_conn *c = s->conn;
	enum gw_reject rj = proto_decode_handshake(data, len, &c->hs);

	if (rj != GW_OK) {
		metrics_inc(GW_M_REJECT_400);
		log_event(GW_LOG_INFO, "rejected", "remote", c->remote, "reason", "bad handshake",
		          "code", "400", NULL);
		return reply_and_close(c, rj == GW_REJECT_UNKNOWN_TYPE ? "Unknown handshake."
		                                                        : "Malformed handshake.",
		                       400, "bad handshake");
	}
	/* A bot's join may wait bot_probe_timeout for the bot it replaces to
	 * answer a ping, which that bot's reader, maybe this very thread, has
	 * to read: the reader runs it elsewhere (session_join). */
	if (c->hs.role == GW_ROLE_BOT)
		return GW_SESSION_BLOCKED;
	return join(s);
}

int session_join(struct gw_session *s)
{
	struct gw_defer own = GW_DEFER_INIT;
	int rc;

	s->defer = &own;
	rc = join(s);
	s->defer = NULL;
	defer_free(&own);   /* flushes */
	return rc;
}

/* Token bucket, rate_limit messages per second with bursts of twice that.
 * Reader thread only. Returns 1 if this message may pass. */
static int rate_ok(struct gw_session *s)
{
	double rate = s->cfg->rate_limit, burst = 2 * rate;
	int64_t now = gw_now_mono();

	if (rate <= 0)
		return 1;
	if (s->tokens_ms == 0)
		s->tokens = burst;
	else
		s->tokens += (double)(now - s->tokens_ms) * rate / 1000.0;
	if (s->tokens > burst)
		s->tokens = burst;
	s->tokens_ms = now;
	if (s->tokens < 1.0)
		return 0;
	s->tokens -= 1.0;
	return 1;
}

/* The refusals keep their big buffers (a msg_id may need 6 bytes per byte
 * escaped) out of on_message's frame: a reader thread keeps every stack
 * page it ever touched, for 10,000 mods that is 40 MB a page. */

/* 400 for a message the decoder refused, echoing its msg_id: decoded again
 * for that, with room for any msg_id (refusals are rare). */
static __attribute__((noinline)) int refuse_malformed(struct gw_conn *c, const char *data,
                                                      size_t len)
{
	char idjson[GW_ID_MAX * 6 + 8], buf[GW_ID_MAX * 6 + 128];
	struct gw_msg *m = NULL;
	size_t n;

	(void)proto_decode_message(data, len, &c->hs, gw_now_real(), &m, idjson, sizeof(idjson));
	proto_msg_unref(m);   /* not NULL only if memory came back meanwhile */
	log_event(GW_LOG_DEBUG, "malformed message", "remote", c->remote, NULL);
	metrics_inc(GW_M_REJECT_400);
	n = proto_error("Malformed message.", 400, idjson, buf, sizeof(buf));
	conn_send(c, GW_OP_TEXT, buf, n);
	return 1;
}

static __attribute__((noinline)) int refuse_rate(struct gw_session *s, struct gw_msg *m)
{
	char idjson[GW_ID_MAX * 6 + 8], buf[GW_ID_MAX * 6 + 128];
	struct gw_conn *c = s->conn;
	int64_t sec = gw_now_mono() / 1000;
	size_t n;

	proto_json_string(m->msg_id, idjson, sizeof(idjson));
	proto_msg_unref(m);
	metrics_inc(GW_M_REJECT_429);
	n = proto_error("Rate limit exceeded.", 429, idjson, buf, sizeof(buf));
	conn_send(c, GW_OP_TEXT, buf, n);
	if (sec != s->refused_sec) {
		s->refused_run = sec == s->refused_sec + 1 ? s->refused_run + 1 : 1;
		s->refused_sec = sec;
	}
	if (s->refused_run < GW_RATE_PERSIST_S)
		return 1;
	log_event(GW_LOG_WARN, "rate limit exceeded persistently, dropping peer", "remote",
	          c->remote, NULL);
	return close_with(c, GW_CLOSE_RATE_LIMIT, "Rate limit exceeded.", "rate limit");
}

static int on_message(struct gw_session *s, const char *data, size_t len)
{
	struct gw_conn *c = s->conn;
	struct gw_msg *m;

	if (!s->joined)
		return on_handshake(s, data, len);
	if (proto_decode_message(data, len, &c->hs, gw_now_real(), &m, NULL, 0) != GW_OK)
		return refuse_malformed(c, data, len);
	if (!rate_ok(s))
		return refuse_rate(s, m);
	registry_route(c, m, s->defer);   /* routes and acks; m is the registry's now */
	return 1;
}

static int valid_close_code(int code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
	       (code >= 3000 && code <= 4999);
}


/* A fragment of a message (the first one included); the last one hands
 * the whole message on. */
static int on_fragment(struct gw_session *s, const char *data, size_t len, int fin)
{
	struct gw_conn *c = s->conn;
	int rc;

	if (len > s->cfg->body_size - s->rx_len)
		return close_with(c, GW_CLOSE_TOO_BIG, "Message too big.", "message too big");
	if (s->rx_len + len > s->rx_cap) {
		size_t cap = s->rx_cap ? s->rx_cap : 4096;
		unsigned char *p;

		while (cap < s->rx_len + len)
			cap *= 2;
		if (!(p = realloc(s->rx, cap)))
			return close_with(c, GW_CLOSE_INTERNAL, "Out of memory.", "out of memory");
		s->rx = p;
		s->rx_cap = cap;
	}
	memcpy(s->rx + s->rx_len, data, len);
	s->rx_len += len;
	if (!fin)
		return 1;
	s->rx_opcode = 0;
	rc = on_message(s, (const char *)s->rx, s->rx_len);
	if (s->rx_cap > 65536) {  /* do not keep a big buffer around */
		free(s->rx);
		s->rx = NULL;
		s->rx_cap = 0;
	}
	return rc;
}

static int on_frame(struct gw_session *s, int bits, char *data, size_t len)
{
	struct gw_conn *c = s->conn;
	int op = bits & 0x0F, fin = bits & 0x80;

	__atomic_store_n(&c->last_seen_ms, gw_now_mono(), __ATOMIC_RELEASE);
	if (bits & GW_FRAME_TOO_BIG)
		return close_with(c, GW_CLOSE_TOO_BIG, "Message too big.", "message too big");
	if (bits & GW_FRAME_UNMASKED)
		return close_with(c, GW_CLOSE_PROTOCOL, "Unmasked frame.", "protocol error");
	if (bits & 0x70)
		return close_with(c, GW_CLOSE_PROTOCOL, "Reserved bits set.", "protocol error");
	if (op >= GW_OP_CLOSE && (!fin || len > 125))
		return close_with(c, GW_CLOSE_PROTOCOL, "Bad control frame.", "protocol error");
	switch (op) {
	case GW_OP_CLOSE: {  /* answer with the same code, then end */
		int code = len >= 2 ? ((unsigned char)data[0] << 8) | (unsigned char)data[1]
		                    : GW_CLOSE_NORMAL;

		if (len == 1 || !valid_close_code(code))
			return close_with(c, GW_CLOSE_PROTOCOL, "Bad close frame.", "protocol error");
		if (len > 2 && !proto_utf8_valid(data + 2, len - 2))
			return close_with(c, GW_CLOSE_BAD_DATA, "Close reason is not UTF-8.",
			                  "invalid UTF-8");
		return close_with(c, code, NULL, "closed by peer");
	}
	case GW_OP_PING:
		conn_pong(c, data, len);
		defer_add(s->defer, c);   /* sent with the batch: one pong per burst */
		return 1;
	case GW_OP_PONG:
		registry_pong(c);
		return 1;
	case GW_OP_TEXT:
	case GW_OP_BINARY:
		if (s->rx_opcode)
			return close_with(c, GW_CLOSE_PROTOCOL, "Expected a continuation frame.",
			                  "protocol error");
		if (fin)
			return on_message(s, data, len);
		s->rx_opcode = op;
		s->rx_len = 0;
		/* keep this first fragment */
		__attribute__((fallthrough));
	case GW_OP_CONT:
		if (!s->rx_opcode)
			return close_with(c, GW_CLOSE_PROTOCOL, "Unexpected continuation frame.",
			                  "protocol error");
		return on_fragment(s, data, len, fin);
	default:
		return close_with(c, GW_CLOSE_PROTOCOL, "Reserved opcode.", "protocol error");
	}
}

int session_frame(struct gw_session *s, struct gw_defer *d, int bits, unsigned char *data,
                  size_t len)
{
	int rc;

	s->defer = d;
	rc = on_frame(s, bits, (char *)data, len);
	s->defer = NULL;
	return rc;
}

struct gw_conn *session_conn(const struct gw_session *s)
{
	return s->conn;
}

void session_end(struct gw_session *s, struct gw_defer *d, const char *why)
{
	struct gw_defer own = GW_DEFER_INIT;
	struct gw_conn *c = s->conn;

	if (why)
		conn_set_why(c, why);
	s->defer = d ? d : &own;
	defer_flush(s->defer);
	registry_disconnect(c, s->defer);
	defer_flush(s->defer);
	s->defer = NULL;
	defer_free(&own);
	if (s->joined)
		log_event(GW_LOG_INFO, c->hs.role == GW_ROLE_MOD ? "mod disconnected" : "bot disconnected",
		          "remote", c->remote, c->hs.role == GW_ROLE_MOD ? "server_id" : "bot_id",
		          c->hs.role == GW_ROLE_MOD ? c->hs.server_id : c->hs.bot_id,
		          "reason", conn_why(c), NULL);
	else
		log_event(GW_LOG_DEBUG, "websocket closed before handshake", "remote", c->remote,
		          "reason", conn_why(c), NULL);
}
