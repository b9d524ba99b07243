/*
 * bench_report.c - homestead-bench's figures: its own CPU (getrusage) and
 * the gateway's CPU, RSS and threads (/proc/PID, with --pid) over the
 * measured span, the check that every message arrived exactly once, and
 * the one line of key=value figures on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

static void proc_sample(long long *ticks, long *rss, long *hwm, long *threads);
static int cmp_i64(const void *a, const void *b);
static double pct(double q);
static void usage_fields(char *buf, size_t cap, uint64_t msgs);
static void verify(uint64_t *missing, uint64_t *unacked);

/* ---- process figures ------------------------------------------------------ */

/* The gateway's utime+stime (clock ticks), VmRSS and VmHWM (kB) and thread
 * count, from /proc/PID; -1 where not readable. */
static void proc_sample(long long *ticks, long *rss, long *hwm, long *threads)
{
	char path[64], buf[4096], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	*ticks = -1;
	*rss = *hwm = *threads = -1;
	if (B.o.pid <= 0)
		return;
	snprintf(path, sizeof(path), "/proc/%d/stat", B.o.pid);
	if ((f = fopen(path, "re"))) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = '\0';
		fclose(f);
		/* after "(comm)": state is field 3; utime 14, stime 15 */
		if ((p = strrchr(buf, ')')) &&
		    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
			*ticks = (long long)(ut + st);
	}
	snprintf(path, sizeof(path), "/proc/%d/status", B.o.pid);
	if ((f = fopen(path, "re"))) {
		while (fgets(buf, sizeof(buf), f)) {
			if (strncmp(buf, "VmRSS:", 6) == 0)
				*rss = strtol(buf + 6, NULL, 10);
			else if (strncmp(buf, "VmHWM:", 6) == 0)
				*hwm = strtol(buf + 6, NULL, 10);
			else if (strncmp(buf, "Threads:", 8) == 0)
				*threads = strtol(buf + 8, NULL, 10);
		}
		fclose(f);
	}
}

void usage_begin(void)
{
	getrusage(RUSAGE_SELF, &B.ru0);
	B.ru_t0 = now_ns();
	proc_sample(&B.gw_ticks0, &B.gw_rss0, &B.gw_hwm, &B.gw_threads0);
}

void usage_end(void)
{
	getrusage(RUSAGE_SELF, &B.ru1);
	B.ru_t1 = now_ns();
	proc_sample(&B.gw_ticks1, &B.gw_rss1, &B.gw_hwm, &B.gw_threads1);
}

/* ---- report --------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct(double q)
{
	size_t i;

	if (!B.nlat)
		return 0;
	i = (size_t)(q * (double)(B.nlat - 1) + 0.5);
	return (double)B.lat[i] / 1000.0;
}

/* Bench CPU over the measured span, % of one core; and the gateway's: % of
 * one core and, when msgs is not 0, its CPU time per message in µs
 * (utime+stime over the span / msgs: the ticks of /proc, 10 ms each, so a
 * span of a few seconds gives two or three significant digits). */
static void usage_fields(char *buf, size_t cap, uint64_t msgs)
{
	double wall = (double)(B.ru_t1 - B.ru_t0) / 1e9, cpu, gw;
	long hz = sysconf(_SC_CLK_TCK);
	size_t n;

	if (wall <= 0)
		wall = 1e-9;
	cpu = (double)(B.ru1.ru_utime.tv_sec - B.ru0.ru_utime.tv_sec + B.ru1.ru_stime.tv_sec -
	               B.ru0.ru_stime.tv_sec) +
	      (double)(B.ru1.ru_utime.tv_usec - B.ru0.ru_utime.tv_usec + B.ru1.ru_stime.tv_usec -
	               B.ru0.ru_stime.tv_usec) / 1e6;
	n = (size_t)snprintf(buf, cap, " bench_cpu=%.0f%%", 100.0 * cpu / wall);
	if (B.o.pid > 0 && B.gw_ticks0 >= 0 && B.gw_ticks1 >= 0 && n < cap) {
		gw = (double)(B.gw_ticks1 - B.gw_ticks0) / (double)hz;
		n += (size_t)snprintf(buf + n, cap - n,
		                      " gw_cpu=%.0f%% gw_rss_mb=%.1f gw_hwm_mb=%.1f gw_threads=%ld",
		                      100.0 * gw / wall, (double)B.gw_rss1 / 1024.0,
		                      (double)B.gw_hwm / 1024.0, B.gw_threads1);
		if (msgs && n < cap)
			snprintf(buf + n, cap - n, " gw_us_per_msg=%.2f", gw * 1e6 / (double)msgs);
	}
}

/* Counts missing and duplicated deliveries and acks over the whole table. */
static void verify(uint64_t *missing, uint64_t *unacked)
{
	int i;
	uint64_t s;

	*missing = *unacked = 0;
	if (B.o.sc == SC_FANOUT) {
		for (s = 0; B.bot && s < B.bot->sent; s++) {
			if (!B.bot->recs[s].acked)
				(*unacked)++;
			for (i = 0; i < B.o.mods; i++)
				if (s >= B.peers[i]->seen_cap || !B.peers[i]->seen[s])
					(*missing)++;
		}
		return;
	}
	for (i = 0; i < B.o.mods; i++)
		for (s = 0; s < B.peers[i]->sent; s++) {
			if (!B.peers[i]->recs[s].got)
				(*missing)++;
			if (!B.peers[i]->recs[s].acked)
				(*unacked)++;
		}
}

int report_traffic(void)
{
	uint64_t missing, unacked, msgs = B.sent, rated = B.delivered;
	double secs, dsecs;
	char use[256], extra[256] = "";
	const char *ack = B.o.sc == SC_QUEUE ? "queued" : "completed";
	int ok;

	verify(&missing, &unacked);
	secs = B.t_last_rx > B.t_first_send ? (double)(B.t_last_rx - B.t_first_send) / 1e9 : 0;
	ok = !B.first_error[0] && missing == 0 && B.dups == 0 && unacked == 0 && B.acks_other == 0 &&
	     B.dup_acks == 0 && B.bad_content == 0 && B.sent > 0 && !B.lost_peers &&
	     B.out_of_order == 0;
	if (B.o.sc == SC_QUEUE)
		rated = B.acks_completed;
	usage_fields(use, sizeof(use), rated);
	if (SC_IS_RATE(B.o.sc)) {
		qsort(B.lat, B.nlat, sizeof(*B.lat), cmp_i64);
		snprintf(extra, sizeof(extra),
		         " offered=%.0f achieved=%.0f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f",
		         B.o.rate, secs > 0 ? (double)B.delivered / secs : 0, pct(0.50), pct(0.90),
		         pct(0.99), B.nlat ? (double)B.lat[B.nlat - 1] / 1000.0 : 0);
	} else if (B.o.sc == SC_BIG) {
		snprintf(extra, sizeof(extra), " mb_per_s=%.1f",
		         secs > 0 ? (double)B.bytes_delivered / 1048576.0 / secs : 0);
	} else if (B.o.sc == SC_QUEUE) {   /* rate: first send to last ack; drain: bot on */
		secs = B.t_last_ack > B.t_first_send ? (double)(B.t_last_ack - B.t_first_send) / 1e9 : 0;
		dsecs = B.t_bot && B.t_last_rx > B.t_bot ? (double)(B.t_last_rx - B.t_bot) / 1e9 : 0;
		snprintf(extra, sizeof(extra), " drained=%llu drain_secs=%.3f drain_rate=%.0f",
		         (unsigned long long)B.delivered, dsecs,
		         dsecs > 0 ? (double)B.delivered / dsecs : 0);
	}
	printf("scenario=%s mods=%d channels=%d window=%d size=%zu msgs=%llu",
	       scenario_names[B.o.sc], B.o.mods, B.o.channels, SC_IS_RATE(B.o.sc) ? 0 : B.o.window,
	       B.o.size, (unsigned long long)msgs);
	if (B.o.sc == SC_FANOUT)
		printf(" deliveries=%llu", (unsigned long long)B.delivered);
	printf(" secs=%.3f rate=%.0f%s delivered_ok=%s dup=%llu missing=%llu",
	       secs, secs > 0 ? (double)rated / secs : 0, extra, ok ? "yes" : "no",
	       (unsigned long long)B.dups, (unsigned long long)missing);
	if (B.o.sc == SC_QUEUE)
		printf(" out_of_order=%llu", (unsigned long long)B.out_of_order);
	printf(" acks_%s=%s not_%s=%llu unacked=%llu%s%s%s\n", ack,
	       B.acks_other == 0 && unacked == 0 && B.dup_acks == 0 ? "yes" : "no", ack,
	       (unsigned long long)B.acks_other, (unsigned long long)unacked, use,
	       B.first_error[0] ? " error=" : "", B.first_error[0] ? "see-stderr" : "");
	if (B.foreign)   /* frames for ids we never sent: another bench, old queues */
		fprintf(stderr, "homestead-bench: %llu frames with msg_ids not ours\n",
		        (unsigned long long)B.foreign);
	return ok ? 0 : EXIT_FAILED;
}

int report_conns(void)
{
	char use[256];
	double secs;
	int ok;

	usage_fields(use, sizeof(use), 0);
	if (B.o.sc == SC_IDLE) {
		secs = (double)((B.t_up ? B.t_up : now_ns()) - B.t_start) / 1e9;
		ok = B.ready == B.o.mods && B.failed == 0 && !B.lost_peers;
		printf("scenario=idle mods=%d up=%d failed=%d up_secs=%.3f connect_rate=%.0f "
		       "held_secs=%.1f all_up=%s%s\n",
		       B.o.mods, B.ready, B.failed, secs, secs > 0 ? B.ready / secs : 0,
		       B.ru_t0 ? (double)(B.ru_t1 - B.ru_t0) / 1e9 : 0.0,
		       ok ? "yes" : "no", use);
		return ok ? 0 : EXIT_FAILED;
	}
	secs = (double)(B.ru_t1 - B.ru_t0) / 1e9;
	ok = B.failed == 0 && B.cycles_ok > 0;
	printf("scenario=churn concurrency=%d secs=%.3f cycles=%llu rate=%.0f failed=%d "
	       "no_close_echo=%llu all_ok=%s%s",
	       B.o.concurrency, secs, (unsigned long long)B.cycles_ok,
	       secs > 0 ? (double)B.cycles_ok / secs : 0, B.failed, (unsigned long long)B.no_echo,
	       ok ? "yes" : "no", use);
	if (B.o.pid > 0)
		printf(" gw_threads_start=%ld gw_rss_start_mb=%.1f", B.gw_threads0,
		       (double)B.gw_rss0 / 1024.0);
	putchar('\n');
	return ok ? 0 : EXIT_FAILED;
}

