/*
 * server.c - CivetWeb callbacks. Each /sync peer is served by one CivetWeb
 * worker thread: begin_request authenticates and reserves a slot (answering
 * 401/503 with a real HTTP response, before any upgrade), the ready handler
 * binds our gw_conn to the socket, the data handler gets one call per frame
 * and feeds whole messages to the protocol and the registry, the close
 * handler detaches the peer, and connection_close releases the slot.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "civetweb.h"
#include "clock.h"
#include "conn.h"
#include "log.h"
#include "metrics.h"
#include "protocol.h"
#include "registry.h"
#include "server.h"
#include "store.h"

#define TICK_MS 250   /* housekeeping period: timeouts are whole seconds */

static struct {
	struct mg_context *ctx;
	const struct gw_config *cfg;
	pthread_mutex_t keys_lock;       /* protects the three keys */
	char api_key[GW_KEY_MAX], mod_key[GW_KEY_MAX], bot_key[GW_KEY_MAX];
	int64_t started_ms;
	int port;
} srv = { .keys_lock = PTHREAD_MUTEX_INITIALIZER };

/* Constant-time comparison: the time taken does not depend on where the
 * strings differ, only on the length of the configured key. */
static int key_equal(const char *given, const char *key)
{
	size_t gl = strlen(given), kl = strlen(key);
	unsigned char diff = (unsigned char)(gl != kl);

	for (size_t i = 0; i < kl; i++)
		diff |= (unsigned char)(key[i] ^ (i < gl ? given[i] : 0));
	return kl > 0 && diff == 0;
}

/* Which key the client presented; -1 if none matches. */
static int key_kind(const char *given)
{
	int kind = -1;

	if (!given || !*given)
		return -1;
	pthread_mutex_lock(&srv.keys_lock);
	/* every comparison runs: no early exit that a clock could see */
	if (key_equal(given, srv.bot_key))
		kind = GW_KEY_BOT;
	if (key_equal(given, srv.mod_key))
		kind = GW_KEY_MOD;
	if (key_equal(given, srv.api_key))
		kind = GW_KEY_SHARED;
	pthread_mutex_unlock(&srv.keys_lock);
	return kind;
}

static void send_json(struct mg_connection *mc, int status, const char *json)
{
	mg_printf(mc,
	          "HTTP/1.1 %d %s\r\n"
	          "Content-Type: application/json\r\n"
	          "Content-Length: %zu\r\n"
	          "Cache-Control: no-store\r\n"
	          "Connection: close\r\n\r\n%s",
	          status, mg_get_response_code_text(mc, status), strlen(json), json);
}

static void send_error(struct mg_connection *mc, int status, const char *message)
{
	char buf[160];

	proto_error(message, status, NULL, buf, sizeof(buf));
	send_json(mc, status, buf);
}

static void remote_of(const struct mg_request_info *ri, char *buf, size_t cap)
{
	if (strchr(ri->remote_addr, ':'))
		snprintf(buf, cap, "[%s]:%d", ri->remote_addr, ri->remote_port);
	else
		snprintf(buf, cap, "%s:%d", ri->remote_addr, ri->remote_port);
}

static void handle_health(struct mg_connection *mc)
{
	struct gw_stats st;
	char buf[256];

	registry_stats(&st);
	snprintf(buf, sizeof(buf),
	         "{\"status\":\"healthy\",\"uptime_s\":%lld,\"bot\":%s,\"mods\":%u,\"queued\":%llu}",
	         (long long)((gw_now_mono() - srv.started_ms) / 1000), st.bots ? "true" : "false",
	         st.mods, (unsigned long long)st.queued_msgs);
	send_json(mc, 200, buf);
}

static void handle_metrics(struct mg_connection *mc)
{
	char buf[8192];
	size_t n = metrics_render(buf, sizeof(buf), (gw_now_mono() - srv.started_ms) / 1000);

	if (n >= sizeof(buf)) {
		send_error(mc, 500, "Metrics too large.");
		return;
	}
	mg_printf(mc,
	          "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
	          "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
	          n, buf);
}

/* The key from ?api_key= or X-API-Key. */
static void request_key(struct mg_connection *mc, const struct mg_request_info *ri,
                        char *key, size_t cap)
{
	const char *h;

	key[0] = '\0';
	if (ri->query_string &&
	    mg_get_var(ri->query_string, strlen(ri->query_string), "api_key", key, cap) > 0)
		return;
	h = mg_get_header(mc, "X-API-Key");
	if (h && strlen(h) < cap)
		snprintf(key, cap, "%s", h);
}

static int on_begin_request(struct mg_connection *mc)
{
	const struct mg_request_info *ri = mg_get_request_info(mc);
	const char *uri = ri->local_uri ? ri->local_uri : "";
	const char *up;
	char remote[64], key[GW_KEY_MAX + 1];
	struct gw_conn *c;
	int kind;

	if (strcmp(uri, "/sync") != 0) {
		if (strcmp(ri->request_method, "GET") != 0 && strcmp(ri->request_method, "HEAD") != 0)
			send_error(mc, 405, "Method not allowed.");
		else if (strcmp(uri, "/health") == 0)
			handle_health(mc);
		else if (strcmp(uri, "/metrics") == 0)
			handle_metrics(mc);
		else
			send_error(mc, 404, "Not found.");
		return 1;
	}
	remote_of(ri, remote, sizeof(remote));
	up = mg_get_header(mc, "Upgrade");
	if (strcmp(ri->request_method, "GET") != 0 || !up || strcasecmp(up, "websocket") != 0) {
		send_error(mc, 400, "Expected a WebSocket upgrade.");
		return 1;
	}
	/* RFC 6455 4.2.1: the nonce is 16 bytes in base64 (CivetWeb accepts
	 * anything, even an empty one) */
	up = mg_get_header(mc, "Sec-WebSocket-Key");
	if (!up || strlen(up) != 24 || strspn(up, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                                          "0123456789+/") != 22 || strcmp(up + 22, "==") != 0) {
		send_error(mc, 400, "Bad Sec-WebSocket-Key.");
		return 1;
	}
	request_key(mc, ri, key, sizeof(key));
	kind = key_kind(key);
	memset(key, 0, sizeof(key));
	if (kind < 0) {
		log_event(GW_LOG_WARN, "rejected", "remote", remote, "reason", "unauthorized",
		          "code", "401", NULL);
		metrics_inc(GW_M_REJECT_401);
		send_error(mc, 401, "Unauthorized.");
		return 1;
	}
	/* A keep-alive connection that asked before without upgrading. */
	c = mg_get_user_connection_data(mc);
	if (c) {
		mg_set_user_connection_data(mc, NULL);
		registry_release(c);
	}
	c = registry_conn_new(remote, (enum gw_key_kind)kind);
	if (!c) {
		log_event(GW_LOG_WARN, "rejected", "remote", remote, "reason", "max_connections",
		          "code", "503", NULL);
		metrics_inc(GW_M_REJECT_503);
		send_error(mc, 503, "Too many connections.");
		return 1;
	}
	mg_set_user_connection_data(mc, c);
	return 0;   /* CivetWeb goes on with the upgrade */
}

static void on_connection_close(const struct mg_connection *mc)
{
	struct gw_conn *c = mg_get_user_connection_data(mc);

	if (c)
		registry_release(c);
}

static int on_ws_connect(const struct mg_connection *mc, void *ud)
{
	(void)ud;
	/* begin_request accepted it; anything else never gets here */
	return mg_get_user_connection_data(mc) ? 0 : 1;
}

static void on_ws_ready(struct mg_connection *mc, void *ud)
{
	struct gw_conn *c = mg_get_user_connection_data(mc);

	(void)ud;
	if (c && conn_attach(c, mg_get_socket_fd(mc)) == 0) {
		metrics_inc(GW_M_CONNECTIONS);
		log_event(GW_LOG_DEBUG, "websocket open", "remote", c->remote, NULL);
	}
}

/* Sends {"message":..,"code":..} then a close frame; the caller returns 0
 * from the data handler so CivetWeb ends the connection. */
static int reply_and_close(struct gw_conn *c, const char *message, int code, int close_code,
                           const char *why)
{
	char buf[160];
	size_t n = proto_error(message, code, NULL, buf, sizeof(buf));

	conn_queue(c, 1, buf, n);
	conn_close(c, close_code, message, 1000);
	conn_set_why(c, why);
	return 0;
}

static int close_with(struct gw_conn *c, int close_code, const char *reason, const char *why)
{
	if (close_code == 1002)
		metrics_inc(GW_M_REJECT_1002);
	else if (close_code == 1009)
		metrics_inc(GW_M_REJECT_1009);
	conn_close(c, close_code, reason, 1000);
	conn_set_why(c, why);
	return 0;
}

static int on_handshake(struct gw_conn *c, const char *data, size_t len)
{
	enum gw_reject rj = proto_decode_handshake(data, len, &c->hs);
	enum gw_join j;

	if (rj != GW_OK) {
		metrics_inc(GW_M_REJECT_400);
		log_event(GW_LOG_INFO, "rejected", "remote", c->remote, "reason", "bad handshake",
		          "code", "400", NULL);
		return reply_and_close(c, rj == GW_REJECT_UNKNOWN_TYPE ? "Unknown handshake."
		                                                        : "Malformed handshake.",
		                       400, 1000, "bad handshake");
	}
	j = registry_join(c);
	if (j == GW_JOIN_FORBIDDEN) {
		log_event(GW_LOG_WARN, "rejected", "remote", c->remote, "reason", "key not allowed for role",
		          "role", proto_role_name(c->hs.role), "code", "403", NULL);
		metrics_inc(GW_M_REJECT_403);
		return reply_and_close(c, "Key not allowed for this role.", 403, 1000, "forbidden");
	}
	if (j == GW_JOIN_CONFLICT) {
		log_event(GW_LOG_WARN, "rejected", "remote", c->remote, "reason", "bot already connected",
		          "bot_id", c->hs.bot_id, "code", "409", NULL);
		metrics_inc(GW_M_REJECT_409);
		return reply_and_close(c, "Bot already connected.", 409, 1000, "conflict");
	}
	if (j != GW_JOIN_OK)
		return 0;
	c->joined = 1;
	if (c->hs.role == GW_ROLE_MOD)
		log_event(GW_LOG_INFO, "mod connected", "remote", c->remote, "server_id", c->hs.server_id,
		          "channel", c->hs.channel_id, NULL);
	else
		log_event(GW_LOG_INFO, "bot connected", "remote", c->remote, "bot_id", c->hs.bot_id, NULL);
	return 1;
}

/* Token bucket, rate_limit messages per second with bursts of twice that.
 * Reader thread only. Returns 1 if this message may pass. */
static int rate_ok(struct gw_conn *c)
{
	double rate = srv.cfg->rate_limit, burst = 2 * rate;
	int64_t now = gw_now_mono();

	if (rate <= 0)
		return 1;
	if (c->tokens_ms == 0)
		c->tokens = burst;
	else
		c->tokens += (double)(now - c->tokens_ms) * rate / 1000.0;
	if (c->tokens > burst)
		c->tokens = burst;
	c->tokens_ms = now;
	if (c->tokens < 1.0)
		return 0;
	c->tokens -= 1.0;
	return 1;
}

static const char *status_name(enum gw_status st)
{
	return st == GW_STATUS_COMPLETED ? "completed" : st == GW_STATUS_QUEUED ? "queued" : "failed";
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
	conn_send(c, 1, buf, n);
	return 1;
}

static __attribute__((noinline)) int refuse_rate(struct gw_conn *c, struct gw_msg *m)
{
	char idjson[GW_ID_MAX * 6 + 8], buf[GW_ID_MAX * 6 + 128];
	size_t n;

	proto_json_string(m->msg_id, idjson, sizeof(idjson));
	proto_msg_unref(m);
	metrics_inc(GW_M_REJECT_429);
	n = proto_error("Rate limit exceeded.", 429, idjson, buf, sizeof(buf));
	conn_send(c, 1, buf, n);
	return 1;
}

static int on_message(struct gw_conn *c, const char *data, size_t len)
{
	char id[GW_ID_MAX + 1], buf[GW_ACK_MAX];
	struct gw_msg *m;
	enum gw_status st;
	int duplicate;
	size_t n;

	if (!c->joined)
		return on_handshake(c, data, len);
	if (proto_decode_message(data, len, &c->hs, gw_now_real(), &m, NULL, 0) != GW_OK)
		return refuse_malformed(c, data, len);
	if (!rate_ok(c))
		return refuse_rate(c, m);
	snprintf(id, sizeof(id), "%s", m->msg_id);
	if (!c->defer)
		c->defer = calloc(1, sizeof(*c->defer));   /* NULL: flush at once */
	st = registry_route(c, m, &duplicate, c->defer);   /* m is the registry's now */
	n = proto_ack(status_name(st), c->hs.role, id, duplicate, buf, sizeof(buf));
	if (!c->defer)
		conn_send(c, 1, buf, n);
	else if (conn_queue(c, 1, buf, n) == 0)
		conn_defer(c->defer, c);
	return 1;
}

static int valid_close_code(int code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
	       (code >= 3000 && code <= 4999);
}

static int on_frame(struct gw_conn *c, int bits, char *data, size_t len);

/* Acks and routed frames wait while the peer's burst goes on: when more of
 * its frames are already buffered, they are sent after the last one. */
static int on_ws_data(struct mg_connection *mc, int bits, char *data, size_t len, void *ud)
{
	struct gw_conn *c = mg_get_user_connection_data(mc);
	int rc;

	(void)ud;
	if (!c)
		return 0;
	rc = on_frame(c, bits, data, len);
	if (c->defer && (rc == 0 || !mg_websocket_frame_buffered(mc)))
		conn_flush_deferred(c->defer);
	return rc;
}

static int on_frame(struct gw_conn *c, int bits, char *data, size_t len)
{
	int op = bits & 0x0F, fin = bits & 0x80;

	__atomic_store_n(&c->last_seen_ms, gw_now_mono(), __ATOMIC_RELEASE);
	if (bits & MG_WEBSOCKET_FRAME_TOO_BIG)
		return close_with(c, 1009, "Message too big.", "message too big");
	if (bits & MG_WEBSOCKET_UNMASKED)
		return close_with(c, 1002, "Unmasked frame.", "protocol error");
	if (bits & 0x70)
		return close_with(c, 1002, "Reserved bits set.", "protocol error");
	if (op >= 8 && (!fin || len > 125))
		return close_with(c, 1002, "Bad control frame.", "protocol error");
	switch (op) {
	case 8: {  /* close: answer with the same code, then end */
		int code = len >= 2 ? ((unsigned char)data[0] << 8) | (unsigned char)data[1] : 1000;

		if (len == 1 || !valid_close_code(code))
			return close_with(c, 1002, "Bad close frame.", "protocol error");
		return close_with(c, code, NULL, "closed by peer");
	}
	case 9:
		conn_send(c, 10, data, len);
		return 1;
	case 10:
		registry_pong(c);
		return 1;
	case 1:
	case 2:
		if (c->rx_opcode)
			return close_with(c, 1002, "Expected a continuation frame.", "protocol error");
		if (fin)
			return on_message(c, data, len);
		c->rx_opcode = op;
		c->rx_len = 0;
		/* keep this first fragment */
		__attribute__((fallthrough));
	case 0: {
		if (!c->rx_opcode)
			return close_with(c, 1002, "Unexpected continuation frame.", "protocol error");
		if (len > srv.cfg->body_size - c->rx_len)
			return close_with(c, 1009, "Message too big.", "message too big");
		if (c->rx_len + len > c->rx_cap) {
			size_t cap = c->rx_cap ? c->rx_cap : 4096;
			unsigned char *p;

			while (cap < c->rx_len + len)
				cap *= 2;
			if (!(p = realloc(c->rx, cap)))
				return close_with(c, 1011, "Out of memory.", "out of memory");
			c->rx = p;
			c->rx_cap = cap;
		}
		memcpy(c->rx + c->rx_len, data, len);
		c->rx_len += len;
		if (!fin)
			return 1;
		c->rx_opcode = 0;
		{
			int rc = on_message(c, (const char *)c->rx, c->rx_len);

			if (c->rx_cap > 65536) {  /* do not keep a big buffer around */
				free(c->rx);
				c->rx = NULL;
				c->rx_cap = 0;
			}
			return rc;
		}
	}
	default:
		return close_with(c, 1002, "Reserved opcode.", "protocol error");
	}
}

static void on_ws_close(const struct mg_connection *mc, void *ud)
{
	struct gw_conn *c = mg_get_user_connection_data(mc);

	(void)ud;
	if (!c)
		return;
	if (c->defer)
		conn_flush_deferred(c->defer);
	registry_disconnect(c);
	if (c->joined)
		log_event(GW_LOG_INFO, c->hs.role == GW_ROLE_MOD ? "mod disconnected" : "bot disconnected",
		          "remote", c->remote, c->hs.role == GW_ROLE_MOD ? "server_id" : "bot_id",
		          c->hs.role == GW_ROLE_MOD ? c->hs.server_id : c->hs.bot_id,
		          "reason", conn_why(c), NULL);
	else
		log_event(GW_LOG_DEBUG, "websocket closed before handshake", "remote", c->remote,
		          "reason", conn_why(c), NULL);
}

static int on_log_message(const struct mg_connection *mc, const char *message)
{
	(void)mc;
	log_event(GW_LOG_DEBUG, "civetweb", "message", message, NULL);
	return 1;
}

static void copy_keys(const struct gw_config *cfg)
{
	pthread_mutex_lock(&srv.keys_lock);
	memcpy(srv.api_key, cfg->api_key, sizeof(srv.api_key));
	memcpy(srv.mod_key, cfg->mod_key, sizeof(srv.mod_key));
	memcpy(srv.bot_key, cfg->bot_key, sizeof(srv.bot_key));
	pthread_mutex_unlock(&srv.keys_lock);
}

int server_start(const struct gw_config *cfg, char *err, size_t errlen)
{
	char ports[96], threads[16], req_timeout[16], frame[24];
	struct mg_callbacks cb;
	struct mg_server_port sp[4];
	struct mg_init_data init;
	struct mg_error_data ed;
	char ebuf[256] = "";
	const char *opts[32];
	int i = 0, n;

	srv.cfg = cfg;
	srv.started_ms = gw_now_mono();
	copy_keys(cfg);
	/* queued messages first: never start empty on a store we cannot read */
	if (store_open(cfg->store_path, cfg->store_sync, err, errlen) < 0)
		return -1;
	if (registry_init(cfg) < 0) {
		snprintf(err, errlen, "cannot restore the queues (out of memory or a store error)");
		registry_free();
		store_close();
		return -1;
	}
	if (conn_loop_start(registry_tick, TICK_MS) < 0) {
		snprintf(err, errlen, "cannot start the I/O thread: out of memory or file descriptors");
		registry_free();
		store_close();
		return -1;
	}
	{
		struct gw_stats st;
		char queued[24];

		registry_stats(&st);
		snprintf(queued, sizeof(queued), "%llu", (unsigned long long)st.queued_msgs);
		if (store_enabled())
			log_event(GW_LOG_INFO, "store open", "path", cfg->store_path, "queued", queued,
			          NULL);
	}
	if (strchr(cfg->listen, ':'))
		snprintf(ports, sizeof(ports), "[%s]:%d", cfg->listen, cfg->http_port);
	else
		snprintf(ports, sizeof(ports), "%s:%d", cfg->listen, cfg->http_port);
	/* one worker per websocket, plus room for /health and /metrics */
	snprintf(threads, sizeof(threads), "%u", cfg->max_connections + 8);
	snprintf(req_timeout, sizeof(req_timeout), "%d", cfg->read_timeout * 1000);
	snprintf(frame, sizeof(frame), "%zu", cfg->body_size);
	opts[i++] = "listening_ports";          opts[i++] = ports;
	opts[i++] = "num_threads";              opts[i++] = threads;
	opts[i++] = "tcp_nodelay";              opts[i++] = "1";
	opts[i++] = "request_timeout_ms";       opts[i++] = req_timeout;
	opts[i++] = "websocket_timeout_ms";     opts[i++] = "60000";
	opts[i++] = "websocket_max_frame_size"; opts[i++] = frame;
	opts[i++] = "enable_keep_alive";        opts[i++] = "no";
	opts[i++] = "max_request_size";         opts[i++] = "4096";
	opts[i++] = "listen_backlog";           opts[i++] = "1024";
	opts[i++] = "connection_queue";         opts[i++] = "256";
	opts[i++] = NULL;

	memset(&cb, 0, sizeof(cb));
	cb.begin_request = on_begin_request;
	cb.connection_close = on_connection_close;
	cb.log_message = on_log_message;
	memset(&init, 0, sizeof(init));
	init.callbacks = &cb;
	init.configuration_options = opts;
	memset(&ed, 0, sizeof(ed));
	ed.text = ebuf;
	ed.text_buffer_size = sizeof(ebuf);
	srv.ctx = mg_start2(&init, &ed);
	if (!srv.ctx) {
		snprintf(err, errlen, "cannot listen on %s: %s", ports, ebuf[0] ? ebuf : "unknown error");
		conn_loop_stop();
		registry_free();
		store_close();
		return -1;
	}
	mg_set_websocket_handler(srv.ctx, "/sync", on_ws_connect, on_ws_ready, on_ws_data,
	                         on_ws_close, NULL);
	n = mg_get_server_ports(srv.ctx, 4, sp);
	srv.port = n > 0 ? sp[0].port : cfg->http_port;
	return 0;
}

int server_port(void)
{
	return srv.port;
}

void server_set_keys(const struct gw_config *cfg)
{
	unsigned revoked = 0;

	/* a connection opened with a key that is no longer the configured one
	 * of its kind loses its right to be here */
	pthread_mutex_lock(&srv.keys_lock);
	if (strcmp(srv.api_key, cfg->api_key) != 0)
		revoked |= 1u << GW_KEY_SHARED;
	if (strcmp(srv.mod_key, cfg->mod_key) != 0)
		revoked |= 1u << GW_KEY_MOD;
	if (strcmp(srv.bot_key, cfg->bot_key) != 0)
		revoked |= 1u << GW_KEY_BOT;
	pthread_mutex_unlock(&srv.keys_lock);
	copy_keys(cfg);
	if (revoked)
		registry_revoke(revoked);
}

void server_stop(int grace_ms)
{
	int64_t until = gw_now_mono() + grace_ms;

	if (!srv.ctx)
		return;
	registry_close_all(1001, "Going away.");
	while (registry_count() > 0 && gw_now_mono() < until)
		usleep(10000);
	mg_stop(srv.ctx);
	srv.ctx = NULL;
	conn_loop_stop();
	registry_free();
	store_close();   /* every queued message is on disk already */
}
