/*
 * main.c - homestead-gateway: arguments, configuration, signals, and the
 * start/stop order: log, store, registry (the queues, restored from the
 * store), the I/O thread, the server; on SIGINT/SIGTERM the reverse, after
 * every websocket got 1001, then exit 0. Signals are blocked in every
 * thread and taken here with sigwait, so no handler runs inside CivetWeb
 * or our locks.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "log.h"
#include "protocol.h"
#include "registry.h"
#include "server.h"
#include "store.h"


static const char usage[] =
	"Usage: homestead-gateway [-c|--config FILE] [--check-config] [--version] [-h|--help]\n"
	"\n"
	"Routes chat messages over WebSockets between game-server mods and one bot.\n"
	"\n"
	"  -c, --config FILE  read FILE (default: gateway.ini beside the executable,\n"
	"                     else built-in defaults)\n"
	"      --check-config check the configuration, print it (keys hidden), exit\n"
	"      --version      print the version and exit\n"
	"  -h, --help         print this help and exit\n"
	"\n"
	"Environment: GATEWAY_API_KEY overrides [gateway] api_key.\n"
	"Signals: SIGINT/SIGTERM stop cleanly; SIGHUP re-reads keys and reopens logs.\n";

static void exe_dir(char *out, size_t cap)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

	if (n <= 0) {
		if (!getcwd(out, cap))
			snprintf(out, cap, ".");
		return;
	}
	buf[n] = '\0';
	snprintf(out, cap, "%s", dirname(buf));
}

/* Defaults, then the file (if any), then the environment. */
static int load_config(struct gw_config *cfg, const char *path, const char *dir, char *err,
                       size_t errlen)
{
	char found[PATH_MAX];

	config_defaults(cfg, dir);
	if (!path && config_find(dir, found, sizeof(found)))
		path = found;
	if (path && config_load(cfg, path, err, errlen) < 0)
		return -1;
	return config_finish(cfg, err, errlen);
}

static void print_config(const struct gw_config *c)
{
	printf("config OK: %s\n", c->source[0] ? c->source : "(built-in defaults)");
	printf("[gateway]\nlisten = %s\nhttp_port = %d\napi_key = (set)\nmod_key = %s\n"
	       "bot_key = %s\nbody_size = %zu\nqueue_max = %u\nqueue_bytes_max = %zu\n"
	       "max_connections = %u\nhandshake_timeout = %d\nping_interval = %d\n"
	       "read_timeout = %d\nwrite_timeout = %d\nbot_probe_timeout = %d\n"
	       "dedup_window = %u\nrate_limit = %u\nhistory = %u\nhistory_bytes_max = %zu\n"
	       "request_timeout = %d\nmax_per_ip = %u\noutput_bytes_max = %zu\nworker_idle = %d\n",
	       c->listen, c->http_port, c->mod_key[0] ? "(set)" : "", c->bot_key[0] ? "(set)" : "",
	       c->body_size / GW_MB, c->queue_max, c->queue_bytes_max / GW_MB, c->max_connections,
	       c->handshake_timeout, c->ping_interval, c->read_timeout, c->write_timeout,
	       c->bot_probe_timeout, c->dedup_window, c->rate_limit, c->history,
	       c->history_bytes_max / GW_MB, c->request_timeout, c->max_per_ip,
	       c->output_bytes_max / GW_MB, c->worker_idle);
	printf("[store]\npath = %s\nsync = %s\n[log]\nlevel = %s\ndirectory = %s\nrotation = %d\n",
	       c->store_path, config_sync_name(c->store_sync), config_level_name(c->log_level),
	       c->log_dir, c->log_rotation);
}

static void set_secrets(const struct gw_config *cfg)
{
	log_clear_secrets();
	log_add_secret(cfg->api_key);
	log_add_secret(cfg->mod_key);
	log_add_secret(cfg->bot_key);
}

/* SIGHUP: reopen the log file and take new keys; the rest of the file
 * needs a restart (said in the log when it changed). */
static void reload(const char *path, const char *dir)
{
	static struct gw_config fresh;
	char err[1024];

	if (load_config(&fresh, path, dir, err, sizeof(err)) < 0) {
		log_event(GW_LOG_ERROR, "reload failed, keeping the running configuration", "error", err,
		          NULL);
		return;
	}
	set_secrets(&fresh);
	log_reopen(fresh.log_level);
	server_set_keys(&fresh);
	log_event(GW_LOG_INFO, "reloaded keys and reopened logs", NULL);
}

/* Brings the gateway up in order, or undoes what it did and says why in
 * err. Queued messages first: never start empty on a store we cannot read. */
static int start(const struct gw_config *cfg, char *err, size_t errlen)
{
	char queued[24];
	struct gw_stats st;

	if (store_open(cfg->store_path, cfg->store_sync, err, errlen) < 0)
		return -1;
	if (registry_init(cfg) < 0) {
		snprintf(err, errlen, "cannot restore the queues (out of memory or a store error)");
		goto fail_registry;
	}
	if (conn_loop_start(registry_tick, registry_delivered, GW_TICK_SLICE_MS) < 0) {
		snprintf(err, errlen, "cannot start the I/O thread: out of memory or file descriptors");
		goto fail_registry;
	}
	registry_stats(&st);
	snprintf(queued, sizeof(queued), "%llu", (unsigned long long)st.queued_msgs);
	if (store_enabled())
		log_event(GW_LOG_INFO, "store open", "path", cfg->store_path, "queued", queued, NULL);
	if (server_start(cfg, err, errlen) < 0)
		goto fail_loop;
	return 0;
fail_loop:
	conn_loop_stop();
fail_registry:
	registry_free();
	store_close();
	return -1;
}

/* The reverse of start(), once every websocket was told 1001. */
static void stop(int grace_ms)
{
	server_stop(grace_ms);
	conn_loop_stop();
	registry_free();
	store_close();   /* every queued message is on disk already */
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static struct gw_config cfg;
	const char *path = NULL;
	char dir[PATH_MAX], err[1024], port[16];
	int opt, check = 0, sig;
	sigset_t set;

	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'C': check = 1; break;
		case 'V': printf("homestead-gateway %s (civetweb 1.15)\n", GW_VERSION); return 0;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "homestead-gateway: unexpected argument '%s'\n%s", argv[optind], usage);
		return 2;
	}
	exe_dir(dir, sizeof(dir));
	if (load_config(&cfg, path, dir, err, sizeof(err)) < 0) {
		fprintf(stderr, "homestead-gateway: %s\n", err);
		return 2;
	}
	if (check) {
		print_config(&cfg);
		return 0;
	}

	/* One worker thread per websocket and bursts of big messages: without
	 * this glibc grows an arena per thread and keeps freed megabytes, so RSS
	 * would not come back down after a burst. Big buffers are mapped and
	 * returned whole; the heap is trimmed past 256 KiB free. */
	mallopt(M_ARENA_MAX, 4);
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	mallopt(M_TRIM_THRESHOLD, 256 * 1024);

	/* Before any thread exists: they all inherit this mask. */
	signal(SIGPIPE, SIG_IGN);
	/* a file over RLIMIT_FSIZE is a failed write (EFBIG) the store reports,
	 * not the end of the process */
	signal(SIGXFSZ, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	proto_init();
	set_secrets(&cfg);
	if (log_open(cfg.log_level, cfg.log_dir, cfg.log_rotation) < 0)
		fprintf(stderr, "homestead-gateway: cannot write logs to %s: %s (console only)\n",
		        cfg.log_dir, strerror(errno));
	if (strcmp(cfg.api_key, "gateway") == 0)
		log_event(GW_LOG_WARN, "api_key is the well-known default 'gateway': set your own key", NULL);
	if (start(&cfg, err, sizeof(err)) < 0) {
		log_event(GW_LOG_ERROR, "cannot start", "error", err, NULL);
		log_close();
		return 1;
	}
	snprintf(port, sizeof(port), "%d", server_port());
	log_event(GW_LOG_INFO, "listening", "address", cfg.listen, "port", port, "version", GW_VERSION,
	          "config", cfg.source[0] ? cfg.source : "built-in defaults", NULL);

	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			reload(path, dir);
			continue;
		}
		break;
	}
	log_event(GW_LOG_INFO, "stopping", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM", NULL);
	stop(1500);
	log_event(GW_LOG_INFO, "stopped", NULL);
	log_close();
	return 0;
}
