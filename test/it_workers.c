/*
 * it_workers.c - threads on demand, against the real binary: CivetWeb's
 * workers start when requests need them (patch 0016), and an open
 * websocket holds none (its socket is a reader thread's, patch 0017).
 *
 * - start-up: with max_connections = 100000, /health answers within 0.5 s
 *   of exec (median of 3 starts); at that moment the gateway has used at
 *   most 0.5 s of CPU and holds at most 30 MB (those two only when it runs
 *   without a sanitizer), and it runs a handful of threads.
 * - the thread count does not follow the open websockets: 200 open mods
 *   run on the threads the gateway started with.
 * - a churn burst (500 connect + handshake + close, 100 at a time) leaves
 *   threads and RSS back near where they started (worker_idle = 1 s).
 * Figures are printed either way.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itutil.h"

#define PRESPAWN    4       /* server.c's prespawn_threads */
#define SPARE       2       /* workers a burst of upgrades may start */

/* main, the I/O loop, CivetWeb's master and spawner, and the readers (one
 * per CPU, 2 to 8: reader.c) */
static long own_threads(void)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	return 4 + (cpus < 2 ? 2 : cpus > 8 ? 8 : cpus);
}

/* A number from /proc/PID/status ("Threads:", "VmRSS:"), or -1. */
static long status_field(pid_t pid, const char *name)
{
	char path[64], line[256];
	size_t len = strlen(name);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, name, len) == 0) {
			v = atol(line + len);
			break;
		}
	fclose(f);
	return v;
}

static long threads_of(pid_t pid)
{
	return status_field(pid, "Threads:");
}

/* utime + stime of pid in ms, or -1. */
static long cpu_ms(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* after "(comm)": state is field 3, utime and stime are 14 and 15 */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
	                 &st) != 2)
		return -1;
	return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

/* Waits until pid runs at most max threads; returns the count seen last. */
static long threads_down_to(pid_t pid, long max, int timeout_ms)
{
	int64_t until = now_ms() + timeout_ms;
	long n = threads_of(pid);

	while (n > max && now_ms() < until) {
		sleep_ms(50);
		n = threads_of(pid);
	}
	return n;
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return (x > y) - (x < y);
}

/* --- start-up with max_connections = 100000 ------------------------------- */

struct start_figures {
	long health_ms, cpu_ms, rss_kb, threads;
};

/* Execs the gateway on p's config and polls /health every 2 ms: the time
 * from just before fork to the first 200, and the gateway's CPU, RSS and
 * threads right then. Stops it again (SIGTERM, exit 0 expected). Returns
 * 0, or -1 if /health did not answer within limit_ms. */
static int start_once(struct gw_proc *p, int limit_ms, struct start_figures *f)
{
	int64_t t0 = now_ms();
	pid_t pid = gw_exec(p);
	int st = -1, status, rc = -1;

	if (pid < 0)
		return -1;
	while (now_ms() - t0 < limit_ms) {
		st = http_get(p->port, "/health", NULL, NULL, 0, 1000);
		if (st == 200)
			break;
		usleep(2000);
	}
	if (st == 200) {
		f->health_ms = (long)(now_ms() - t0);
		f->cpu_ms = cpu_ms(pid);
		f->rss_kb = status_field(pid, "VmRSS:");
		f->threads = threads_of(pid);
		rc = 0;
	}
	kill(pid, SIGTERM);
	for (int i = 0; i < 1000 && waitpid(pid, &status, WNOHANG) == 0; i++)
		sleep_ms(10);
	if (waitpid(pid, &status, WNOHANG) == 0) {   /* still there after 10 s */
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return -1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		rc = -1;
	return rc;
}

static void test_start_100k(void **state)
{
	enum { STARTS = 3 };
	struct gw_proc gw;
	struct start_figures f[STARTS];
	long ms[STARTS], cpu[STARTS], rss[STARTS], thr[STARTS];
	int slack, runtime;

	(void)state;
	/* the harness writes the config and tells what the binary runs under */
	assert_int_equal(gw_start(&gw, "[gateway]\nmax_connections = 100000\n"), 0);
	slack = gw_slack(&gw);
	runtime = gw_runtime(&gw);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	for (int i = 0; i < STARTS; i++) {
		memset(&f[i], 0, sizeof(f[i]));
		assert_int_equal(start_once(&gw, 10000 * slack, &f[i]), 0);
		ms[i] = f[i].health_ms;
		cpu[i] = f[i].cpu_ms;
		rss[i] = f[i].rss_kb;
		thr[i] = f[i].threads;
		print_message("max_connections = 100000, start %d: /health after %ld ms, CPU %ld ms, "
		              "RSS %ld kB, %ld threads\n", i, ms[i], cpu[i], rss[i], thr[i]);
	}
	gw_cleanup(&gw);
	qsort(ms, STARTS, sizeof(*ms), cmp_long);
	qsort(cpu, STARTS, sizeof(*cpu), cmp_long);
	qsort(rss, STARTS, sizeof(*rss), cmp_long);
	qsort(thr, STARTS, sizeof(*thr), cmp_long);
	print_message("median: /health after %ld ms, CPU %ld ms, RSS %ld kB, %ld threads\n",
	              ms[STARTS / 2], cpu[STARTS / 2], rss[STARTS / 2], thr[STARTS / 2]);
	assert_true(ms[STARTS / 2] <= 500 * slack);
	/* a sanitizer's own threads come on top of ours */
	assert_true(thr[STARTS / 2] <= own_threads() + PRESPAWN + (runtime ? 4 : 1));
	if (runtime == 0) {
		assert_true(cpu[STARTS / 2] <= 500);
		assert_true(rss[STARTS / 2] <= 30 * 1024);
	}
}

/* --- open websockets hold no thread ------------------------------------- */

/* Opens n mods (server_ids tag-0..) into ws[]; all or fail. */
static void open_mods(struct gw_proc *gw, struct ws **ws, int n, const char *tag)
{
	char id[64];

	for (int i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "%s-%d", tag, i);
		ws[i] = gw_mod(gw, id, "workers");
		if (!ws[i])
			fail_msg("mod %s did not connect", id);
	}
}

static void close_mods(struct ws **ws, int n)
{
	for (int i = 0; i < n; i++) {
		ws_free(ws[i]);
		ws[i] = NULL;
	}
}

static void test_websockets_hold_no_thread(void **state)
{
	enum { N = 200 };
	static struct ws *ws[N];
	struct gw_proc gw;
	long start, open_n, after;
	int slack;

	(void)state;
	assert_int_equal(gw_start(&gw, "[gateway]\nmax_connections = 1000\nworker_idle = 1\n"), 0);
	slack = gw_slack(&gw);
	start = threads_of(gw.pid);
	open_mods(&gw, ws, N, "open");
	open_n = threads_of(gw.pid);
	/* each was served (gw_mod waits for the handshake's answer); /health too */
	assert_int_equal(http_get(gw.port, "/health", NULL, NULL, 0, 2000 * slack), 200);
	close_mods(ws, N);
	after = threads_down_to(gw.pid, start, 5000 * slack);
	print_message("threads: %ld at start, %ld with %d websockets, %ld after they closed\n",
	              start, open_n, N, after);
	assert_true(start <= own_threads() + PRESPAWN + (gw_runtime(&gw) ? 4 : 1));
	assert_true(open_n <= start + SPARE);
	assert_true(after <= start);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	assert_false(gw_log_contains(&gw, "Cannot start"));
	gw_cleanup(&gw);
}

/* --- churn ---------------------------------------------------------------- */

static void test_churn_comes_back(void **state)
{
	enum { ROUNDS = 5, BATCH = 100 };
	static struct ws *ws[BATCH];
	struct gw_proc gw;
	long start, peak = 0, after, rss0, rss_peak = 0, rss1;
	int64_t t0;
	char tag[32];
	int slack;

	(void)state;
	assert_int_equal(gw_start(&gw, "[gateway]\nmax_connections = 1000\nworker_idle = 1\n"), 0);
	slack = gw_slack(&gw);
	/* one round first, so that what is allocated once (arenas, tables) is
	 * in the baseline */
	open_mods(&gw, ws, BATCH, "warm");
	close_mods(ws, BATCH);
	threads_down_to(gw.pid, own_threads() + PRESPAWN + (gw_runtime(&gw) ? 4 : 1), 5000 * slack);
	start = threads_of(gw.pid);
	rss0 = gw_rss_kb(&gw);
	t0 = now_ms();
	for (int r = 0; r < ROUNDS; r++) {
		long n;

		snprintf(tag, sizeof(tag), "churn%d", r);
		open_mods(&gw, ws, BATCH, tag);
		n = threads_of(gw.pid);
		if (n > peak)
			peak = n;
		if (gw_rss_kb(&gw) > rss_peak)
			rss_peak = gw_rss_kb(&gw);
		close_mods(ws, BATCH);
	}
	print_message("churn: %d connect+handshake+close in %lld ms\n", ROUNDS * BATCH,
	              (long long)(now_ms() - t0));
	after = threads_down_to(gw.pid, start + 1, 5000 * slack);
	sleep_ms(600);   /* the spawner joins what ended: their stacks are freed */
	rss1 = gw_rss_kb(&gw);
	print_message("churn: threads %ld -> peak %ld -> %ld, RSS %ld -> peak %ld -> %ld kB\n",
	              start, peak, after, rss0, rss_peak, rss1);
	assert_true(peak <= start + SPARE);
	assert_true(after <= start);
	if (gw_runtime(&gw) == 0)
		assert_true(rss1 <= rss0 + 4096);
	assert_int_equal(gw_stop(&gw, SIGTERM, 10000), 0);
	gw_cleanup(&gw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_start_100k),
		cmocka_unit_test(test_websockets_hold_no_thread),
		cmocka_unit_test(test_churn_comes_back),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("it_workers", tests, NULL, NULL);
}
