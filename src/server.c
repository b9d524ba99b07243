/*
 * server.c - the HTTP side: CivetWeb's set-up, the routes (/health,
 * /metrics, 404s) and authentication. Every request runs begin_request on a
 * CivetWeb worker thread; a /sync request with a good key reserves a slot
 * (registry_conn_new) and gets a session (session.c), or a real HTTP 401 /
 * 503 before any upgrade. Once the 101 is sent, the worker hands the
 * socket and the session to a reader thread (reader.c, CivetWeb patch
 * 0017) and is free again: an open websocket holds no worker.
 *
 * CivetWeb's workers start on demand (patch 0016): prespawn_threads at
 * start, one more when a request finds none idle; those not needed for
 * worker_idle seconds end again.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <unistd.h>

#include "civetweb.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "protocol.h"
#include "reader.h"
#include "registry.h"
#include "server.h"
#include "session.h"
#include "store.h"

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
	char buf[1536], fault[160], text[180], reason[1200] = "";
	int degraded = store_health(fault, sizeof(fault));

	registry_stats(&st);
	if (degraded) {
		/* what SQLite said, as a JSON string (it may hold quotes) */
		snprintf(text, sizeof(text), "store: %s", fault);
		proto_json_string(text, reason, sizeof(reason));
	}
	snprintf(buf, sizeof(buf),
	         "{\"status\":\"%s\"%s%s,\"uptime_s\":%lld,\"bot\":%s,\"mods\":%u,\"queued\":%llu}",
	         degraded ? "degraded" : "healthy", reason[0] ? ",\"reason\":" : "", reason,
	         (long long)((gw_now_mono() - srv.started_ms) / 1000), st.bots ? "true" : "false",
	         st.mods, (unsigned long long)st.queued_msgs);
	send_json(mc, 200, buf);
}

static void handle_metrics(struct mg_connection *mc)
{
	char buf[8192];
	struct gw_stats st;
	size_t n;

	registry_stats(&st);
	n = metrics_render(&st, (gw_now_mono() - srv.started_ms) / 1000, buf, sizeof(buf));

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
	struct gw_session *s;
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
	s = mg_get_user_connection_data(mc);
	if (s) {
		mg_set_user_connection_data(mc, NULL);
		session_free(s);
	}
	c = registry_conn_new(remote, (enum gw_key_kind)kind);
	if (c && !(s = session_new(c, srv.cfg))) {
		registry_release(c);
		c = NULL;
	}
	if (!c && registry_stopping()) {
		send_error(mc, 503, "Shutting down.");
		return 1;
	}
	if (!c) {
		log_event(GW_LOG_WARN, "rejected", "remote", remote, "reason", "max_connections",
		          "code", "503", NULL);
		metrics_inc(GW_M_REJECT_503);
		send_error(mc, 503, "Too many connections.");
		return 1;
	}
	mg_set_user_connection_data(mc, s);
	return 0;   /* CivetWeb goes on with the upgrade */
}

static int on_ws_connect(const struct mg_connection *mc, void *ud)
{
	(void)ud;
	/* begin_request accepted it; anything else never gets here */
	return mg_get_user_connection_data(mc) ? 0 : 1;
}

/* The 101 is sent: the socket and the session go to a reader. */
static void on_ws_ready(struct mg_connection *mc, void *ud)
{
	struct gw_session *s = mg_get_user_connection_data(mc);
	struct mg_socket_lease *lease;
	struct gw_conn *c;
	const char *early;
	size_t n;
	int fd;

	(void)ud;
	if (!s)
		return;
	c = session_conn(s);
	fd = mg_websocket_take_socket(mc, &lease, &early, &n);
	if (fd < 0) {
		/* out of memory: CivetWeb keeps the socket, and its read loop
		 * ends at once on the shutdown; connection_close frees s */
		conn_set_why(c, "out of memory");
		if (mg_get_socket_fd(mc) >= 0)
			shutdown(mg_get_socket_fd(mc), SHUT_RDWR);
		return;
	}
	mg_set_user_connection_data(mc, NULL);
	if (conn_attach(c, fd) == 0) {
		metrics_inc(GW_M_CONNECTIONS);
		log_event(GW_LOG_DEBUG, "websocket open", "remote", c->remote, NULL);
		/* opened while the gateway stops, after its close walk: 1001 too */
		if (registry_stopping()) {
			conn_set_why(c, "shutdown");
			conn_close(c, GW_CLOSE_GOING_AWAY, "Going away.", GW_CLOSE_GRACE_MS);
		}
	} else {
		conn_set_why(c, "out of memory");
		shutdown(fd, SHUT_RDWR);   /* its reader sees EOF and ends it */
	}
	reader_add(s, fd, early, n, lease);
}

/* The only frames CivetWeb still reads are those of a socket it could not
 * hand over: it ends. */
static int on_ws_data(struct mg_connection *mc, int bits, char *data, size_t len, void *ud)
{
	(void)mc;
	(void)bits;
	(void)data;
	(void)len;
	(void)ud;
	return 0;
}

static void lease_end(void *lease)
{
	mg_socket_lease_end(srv.ctx, lease);
}

static void on_connection_close(const struct mg_connection *mc)
{
	session_free(mg_get_user_connection_data(mc));
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

/* Threads besides CivetWeb's workers: main, the I/O loop (conn.c),
 * CivetWeb's master and its spawner (patch 0016), and up to 8 readers. */
#define GW_OWN_THREADS 12

/* CivetWeb's workers answer HTTP requests and upgrades, each for a moment
 * (a socket reaches one only with its request head complete, patch 0010):
 * this many at once at most, past them requests wait in the queue. */
#define GW_WORKERS_MAX 256

/* What a /proc/sys file holds as a number, or -1. */
static long proc_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* The kernel bounds threads as well as num_threads does: a request that
 * needs a worker past its limits would wait for one. Says so in one line
 * at start-up; need counts the workers and the gateway's own threads. */
static void check_thread_limits(unsigned need)
{
	long threads_max = proc_long("/proc/sys/kernel/threads-max");
	long pid_max = proc_long("/proc/sys/kernel/pid_max");
	long maps = proc_long("/proc/sys/vm/max_map_count");
	long nproc = -1;   /* -1: unlimited or unknown */
	struct rlimit rl;
	char s_need[24], s_tm[24], s_pm[24], s_np[24], s_mm[24];

	if (getrlimit(RLIMIT_NPROC, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		nproc = rl.rlim_cur > (rlim_t)LONG_MAX ? LONG_MAX : (long)rl.rlim_cur;
	/* every thread stack is two mappings (the stack and its guard page) */
	if ((threads_max < 0 || threads_max >= (long)need) &&
	    (pid_max < 0 || pid_max >= (long)need) && (nproc < 0 || nproc >= (long)need) &&
	    (maps < 0 || maps / 2 >= (long)need))
		return;
	snprintf(s_need, sizeof(s_need), "%u", need);
	snprintf(s_tm, sizeof(s_tm), "%ld", threads_max);
	snprintf(s_pm, sizeof(s_pm), "%ld", pid_max);
	snprintf(s_np, sizeof(s_np), "%ld", nproc);
	snprintf(s_mm, sizeof(s_mm), "%ld", maps);
	log_event(GW_LOG_WARN, "kernel thread limits are below what max_connections needs: "
	          "raise them or lower max_connections", "threads_needed", s_need,
	          "threads_max", s_tm, "pid_max", s_pm, "rlimit_nproc", nproc < 0 ? "unlimited" : s_np,
	          "max_map_count", s_mm, NULL);
}

int server_start(const struct gw_config *cfg, char *err, size_t errlen)
{
	char ports[96], threads[16], req_timeout[16], per_ip[16], frame[24], idle[16];
	struct mg_callbacks cb;
	struct mg_server_port sp[4];
	struct mg_init_data init;
	struct mg_error_data ed;
	char ebuf[256] = "";
	const char *opts[32];
	unsigned workers;
	int i = 0, n;

	srv.cfg = cfg;
	srv.started_ms = gw_now_mono();
	copy_keys(cfg);
	if (strchr(cfg->listen, ':'))
		snprintf(ports, sizeof(ports), "[%s]:%d", cfg->listen, cfg->http_port);
	else
		snprintf(ports, sizeof(ports), "%s:%d", cfg->listen, cfg->http_port);
	/* workers answer requests, websockets are the readers': one per
	 * request in flight, plus room for /health and /metrics; they start
	 * when needed and end when not (patch 0016) */
	workers = (cfg->max_connections < GW_WORKERS_MAX ? cfg->max_connections : GW_WORKERS_MAX) + 8;
	snprintf(threads, sizeof(threads), "%u", workers);
	snprintf(idle, sizeof(idle), "%d", cfg->worker_idle * 1000);
	check_thread_limits(workers + GW_OWN_THREADS);
	/* CivetWeb's master thread closes a socket whose request head is not
	 * complete within request_timeout_ms, before any worker sees it; the
	 * same bound applies to its blocking writes of HTTP answers */
	snprintf(req_timeout, sizeof(req_timeout), "%d", cfg->request_timeout * 1000);
	snprintf(per_ip, sizeof(per_ip), "%u", cfg->max_per_ip);
	snprintf(frame, sizeof(frame), "%zu", cfg->body_size);
	opts[i++] = "listening_ports";          opts[i++] = ports;
	opts[i++] = "num_threads";              opts[i++] = threads;
	opts[i++] = "prespawn_threads";         opts[i++] = "4";
	opts[i++] = "worker_idle_ms";           opts[i++] = idle;
	opts[i++] = "tcp_nodelay";              opts[i++] = "1";
	opts[i++] = "request_timeout_ms";       opts[i++] = req_timeout;
	opts[i++] = "websocket_timeout_ms";     opts[i++] = "60000";
	opts[i++] = "websocket_max_frame_size"; opts[i++] = frame;
	opts[i++] = "enable_keep_alive";        opts[i++] = "no";
	opts[i++] = "max_request_size";         opts[i++] = "4096";
	opts[i++] = "listen_backlog";           opts[i++] = "1024";
	opts[i++] = "connection_queue";         opts[i++] = "256";
	opts[i++] = "max_connections_per_ip";   opts[i++] = per_ip;
	/* nothing is accepted before every handler is set (server_start) */
	opts[i++] = "accept_at_start";          opts[i++] = "no";
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
		return -1;
	}
	if (reader_start(cfg, lease_end) < 0) {
		mg_stop(srv.ctx);
		srv.ctx = NULL;
		snprintf(err, errlen, "cannot start the reader threads");
		return -1;
	}
	mg_set_websocket_handler(srv.ctx, "/sync", on_ws_connect, on_ws_ready, on_ws_data, NULL,
	                         NULL);
	mg_start_accepting(srv.ctx);
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

void server_close_listeners(void)
{
	if (srv.ctx)
		mg_stop_listening(srv.ctx);
}

void server_stop(int grace_ms)
{
	int64_t until = gw_now_mono() + grace_ms;

	server_close_listeners();
	if (!srv.ctx)
		return;
	registry_close_all(GW_CLOSE_GOING_AWAY, "Going away.");
	while (registry_count() > 0 && gw_now_mono() < until)
		usleep(10000);
	/* whoever did not finish closing in time is cut now (SPEC 8a: exit
	 * within 5 s whatever peers do); the readers end them, and their
	 * sockets' leases, before mg_stop frees what the leases count in */
	registry_abort_all();
	reader_stop();
	mg_stop(srv.ctx);
	srv.ctx = NULL;
}
