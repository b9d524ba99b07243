/*
 * harness.h - start the real build/homestead-gateway on a free loopback port
 * with a generated config, and stop it. Used by every integration test.
 */
#ifndef GW_TEST_HARNESS_H
#define GW_TEST_HARNESS_H

#include <sys/types.h>

struct gw_proc {
	pid_t pid;
	int port;
	char dir[256];        /* temp folder: gateway.ini, logs/, data/ */
	char config[300];     /* dir/gateway.ini */
	char log_path[300];   /* dir/stderr.log: the gateway's console output */
};

/* Writes dir/gateway.ini with sensible short test timeouts, then the lines
 * in `extra` (ini text, may be NULL; a later key overrides an earlier one
 * only if the gateway accepts duplicates - so `extra` should use keys not in
 * the defaults, or pass the full ini in `ini` instead). Starts the gateway
 * and waits until GET /health answers (up to 10 s). Returns 0 or -1.
 * Defaults written: [gateway] listen=127.0.0.1, http_port=<free>,
 * api_key=test-key, handshake_timeout=2, ping_interval=1, read_timeout=3,
 * write_timeout=2, bot_probe_timeout=1; [store] path= ; [log] level=debug,
 * directory=logs. Keys named in `overrides` ("key=value\n" lines, per
 * section "[section]\n" headers) replace these defaults. */
int gw_start(struct gw_proc *p, const char *overrides);

/* Like gw_start but the caller gives the whole ini file text; "%PORT%" in
 * it is replaced by the chosen port. */
int gw_start_ini(struct gw_proc *p, const char *ini);

/* Starts the binary again on the same folder and config (after gw_stop,
 * e.g. to check that the store survived a kill -9). Tries the same port
 * first, else rewrites http_port to a free one (p->port follows). The
 * previous console output is kept as stderr.log.1. Returns 0 or -1. */
int gw_restart(struct gw_proc *p);

/* Sends sig (SIGTERM usually), waits up to timeout_ms; returns the exit
 * status (WEXITSTATUS), 128+signal if killed by a signal, -1 on timeout
 * (then SIGKILLs it). */
int gw_stop(struct gw_proc *p, int sig, int timeout_ms);

/* Removes the temp folder. */
void gw_cleanup(struct gw_proc *p);

/* 1 if the gateway's console output contains needle. */
int gw_log_contains(struct gw_proc *p, const char *needle);

/* Path of the gateway binary (GW_BIN env or build/homestead-gateway). */
const char *gw_binary(void);

/* Runs the binary with args (NULL-terminated) and captures stdout+stderr;
 * returns exit status. For CLI/config tests. */
int gw_run(char *out, size_t cap, const char *const *args);

/* Handy: ws_connect to p with key and a mod/bot handshake; returns the
 * connected ws (after reading the "connected" ack), or NULL. */
struct ws *gw_mod(struct gw_proc *p, const char *server_id, const char *channel);
struct ws *gw_bot(struct gw_proc *p, const char *bot_id);

#endif
