/*
 * harness.h - start the real build/homestead-gateway on a free loopback port
 * with a generated config, and stop it. Used by every integration test.
 */
#ifndef GW_TEST_HARNESS_H
#define GW_TEST_HARNESS_H

#include <stdint.h>
#include <sys/types.h>

struct gw_proc {
	pid_t pid;
	int port;
	char dir[256];        /* temp folder: gateway.ini, logs/, data/ */
	char config[300];     /* dir/gateway.ini */
	char log_path[300];   /* dir/stderr.log: the gateway's console output */
};

/* Makes a folder /tmp/homestead-it.XXXXXX (with logs/ and data/), writes
 * dir/gateway.ini with short test timeouts, starts the gateway on a free
 * loopback port (another port is tried if it cannot bind) and waits until
 * GET /health answers 200 (10 s; 60 s under GW_VALGRIND). Returns 0 or -1;
 * on -1 the gateway's output is printed to stderr, nothing is left running
 * and the folder is kept for gw_log_contains: call gw_cleanup either way.
 * Defaults written: [gateway] listen=127.0.0.1, http_port=<free>,
 * api_key=test-key, handshake_timeout=2, ping_interval=1, read_timeout=3,
 * write_timeout=2, bot_probe_timeout=1, max_connections=64; [store] path= ; [log] level=debug,
 * directory=logs. `overrides` (may be NULL) is ini text merged into these:
 * a key replaces the default of that name in its section, a new key or
 * section is appended; lines before any "[section]" belong to [gateway];
 * a line that is not key=value is appended as is (for bad-config tests).
 * Environment: GW_BIN (see gw_binary), GW_VALGRIND (run under valgrind,
 * --error-exitcode=99, so gw_stop then returns 99 on memory errors). */
int gw_start(struct gw_proc *p, const char *overrides);

/* Like gw_start but the caller gives the whole ini file text; "%PORT%" in
 * it is replaced by the chosen port (without %PORT%, its http_port is used
 * as is and no other port is tried). */
int gw_start_ini(struct gw_proc *p, const char *ini);

/* Starts the binary again on the same folder and config (after gw_stop,
 * e.g. to check that the store survived a kill -9). Tries the same port
 * first, else rewrites http_port to a free one (p->port follows). The
 * previous console output is kept as stderr.log.1. Returns 0 or -1. */
int gw_restart(struct gw_proc *p);

/* Sends sig (SIGTERM usually), waits up to timeout_ms (x6 under
 * GW_VALGRIND, up to 30 s); returns the exit status (WEXITSTATUS), 128+signal
 * if killed by a signal, -1 on timeout (then SIGKILLs it) or if not running.
 * The folder stays (for logs, or gw_restart). */
int gw_stop(struct gw_proc *p, int sig, int timeout_ms);

/* SIGKILLs the gateway if still running and removes the temp folder.
 * Safe to call twice, and after a failed gw_start. */
void gw_cleanup(struct gw_proc *p);

/* Replaces the first `from` in p's config file with `to` (same length),
 * e.g. to rotate a key before a SIGHUP. Returns 0, or -1 if the file
 * cannot be read or written or holds no `from`. */
int gw_config_replace(struct gw_proc *p, const char *from, const char *to);

/* 1 if the gateway's console output contains needle. */
int gw_log_contains(struct gw_proc *p, const char *needle);

/* What the running gateway runs under: 'v' valgrind, 'a' ASan, 't' TSan,
 * 0 plain (then its RSS means something). */
int gw_runtime(struct gw_proc *p);

/* How many times longer timing bounds should be for the running gateway:
 * 1 plain, 2 ASan, 3 TSan, 6 valgrind (slower there, not stuck). */
int gw_slack(struct gw_proc *p);

/* A loopback TCP port below 32768 that was free a moment ago, or -1. */
int gw_free_port(void);

/* Monotonic clock in ms, and a sleep that resumes after signals. */
int64_t now_ms(void);
void sleep_ms(int ms);

/* The running gateway's resident memory (VmRSS) in kB, or -1. */
long gw_rss_kb(struct gw_proc *p);

/* Path of the gateway binary (GW_BIN env or build/homestead-gateway). */
const char *gw_binary(void);

/* Forks and execs the plain binary (never under valgrind: for timing
 * start-ups) on p's config, its output to /dev/null. The child's pid, or -1;
 * the caller waits for it. */
pid_t gw_exec(const struct gw_proc *p);

/* Runs the binary (under valgrind with GW_VALGRIND) with args, a
 * NULL-terminated list of arguments after the program name, e.g.
 * {"--check-config", "-c", path, NULL}; args may be NULL. Captures
 * stdout+stderr into out (NUL-terminated, cut to cap - 1; out may be NULL
 * if cap is 0). Returns the exit status, 128+signal if killed, or -1 if it
 * could not start or ran over 10 s (then it is SIGKILLed). For CLI/config
 * tests; the working directory is inherited. */
int gw_run(char *out, size_t cap, const char *const *args);

/* Handy: ws_connect to p with ?api_key=test-key and a mod/bot handshake;
 * returns the connected ws (after reading the "connected" ack, 2 s at
 * most), or NULL (the reason printed to stderr). Free with ws_free. */
struct ws *gw_mod(struct gw_proc *p, const char *server_id, const char *channel);
struct ws *gw_bot(struct gw_proc *p, const char *bot_id);

#endif
