/*
 * bench.c - homestead-bench: a load generator for the gateway that is not
 * itself the bottleneck.
 *
 *   homestead-bench flood|fanout|rate|idle|churn|big|queue|tflood|trate [options]
 *
 * DESIGN. One thread, one epoll set, non-blocking sockets; every peer (a
 * mod or the bot) is a struct peer with its own input and output buffers,
 * reused for the whole run. A loop pass is: epoll_wait, read what is ready
 * and handle every whole frame in place (wsc.c: no copy, no malloc), let the
 * scenario generate what is due, then flush each peer that has output with
 * one send() of everything it has (so a window of frames goes out as one
 * write). Messages are built straight into the output buffer and masked in
 * place.
 *
 * Every message sent is remembered in a table keyed by its msg_id
 * (PREFIX.MOD.SEQ for mods, PREFIX.b.SEQ for the bot): its send time
 * (CLOCK_MONOTONIC), how often it arrived, and its ack. At the end the table
 * says whether every message arrived exactly once and every ack was
 * "completed"; the one-line report says so, and the exit status is 0 only
 * then. Received JSON is scanned (wsc_json_*) rather than parsed: the bench
 * only needs msg_id, status and the content's length.
 *
 * Each scenario has three phases, each bounded in time: set-up (connect,
 * upgrade, handshake: the bot first, so mods' messages find it), run (send
 * for --duration or until --count), drain (wait for the last acks and
 * deliveries, --drain seconds at most). idle and churn count connections
 * instead of messages. With --pid the gateway's CPU time, RSS and threads
 * are read from /proc before and after.
 *
 * queue runs without the bot: every ack must be "queued" (the rate is that of
 * the store), and its figures are taken over that phase. Its drain connects
 * the bot, which must get everything exactly once; a delivery is out of order
 * if it comes after a message of its sender acked after it, or after a
 * message of its channel sent after it was acked (so accepted after it; acks
 * of different mods may come in either order, so that is all that is known).
 *
 * tflood and trate are flood and rate with clients shaped like real mods
 * and bots instead: threads, blocking sockets, one frame per send()
 * (bench_thread.c). They share the set-up, the message table and the report.
 *
 * This file: the options, the set-up and the event loop; bench.h lists the
 * others.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define EVENTS_MAX       512
#define IN_SMALL         4096      /* input buffer of an idle/churn peer */
#define IN_BIG           (256 * 1024)

const char *const scenario_names[] = { "flood", "fanout", "rate", "idle", "churn", "big",
                                       "queue", "tflood", "trate" };

struct bench B;

static volatile sig_atomic_t stop_signal;

static const char usage[] =
	"Usage: homestead-bench SCENARIO [options]\n"
	"\n"
	"Scenarios (each prints one line of key=value figures):\n"
	"  flood   N mods on K channels -> 1 bot, W unacked per mod, S-byte content\n"
	"  fanout  bot -> M mods on one channel, W unacked bot messages\n"
	"  rate    fixed offered load R msg/s over N mods; latency mod send -> bot receive\n"
	"  idle    hold N handshaken mods; time to bring them up; gateway RSS/CPU (--pid)\n"
	"  churn   connect + upgrade + handshake + close, as fast as it goes, for D s\n"
	"  big     1 MB messages, 4 mods -> bot, 4 unacked each; MB/s\n"
	"  queue   as flood but no bot: every ack \"queued\" (msg/s into the store); then one\n"
	"          bot drains it all: exactly once, per channel in the order acked\n"
	"  tflood  flood with clients shaped like real ones: each mod a sender thread and\n"
	"          a reader thread on a blocking socket, one frame per send(); the bot a\n"
	"          thread; W unacked per mod\n"
	"  trate   rate with those clients: mod i sends its k-th message at\n"
	"          (k * N + i) / R s, 10,000 msg/s by default\n"
	"\n"
	"  --url URL          ws://host:port/sync (default ws://127.0.0.1:3333/sync)\n"
	"  --host H --port P  instead of --url\n"
	"  --key K            API key (default: $HOMESTEAD_KEY)\n"
	"  --mods N           mods (flood/rate/queue/tflood/trate 16, fanout 50, idle 1000,\n"
	"                     big 4)\n"
	"  --channels K       channels the mods spread over (flood/rate/queue/tflood/trate:\n"
	"                     = mods)\n"
	"  --window W         unacked messages per sender (flood/fanout/queue/tflood 32, big 4)\n"
	"  --size S           content bytes (100; big 1048576)\n"
	"  --count N          messages in all (0: until --duration is over; tflood and\n"
	"                     trate also stop at 400,000 msg/s resp. --rate times\n"
	"                     --duration, what their message tables are sized for)\n"
	"  --duration S       seconds of sending (5; churn 10)\n"
	"  --rate R           rate, trate: messages/s offered (14000; trate 10000)\n"
	"  --drain S          seconds to wait for the last acks/deliveries (10; queue: per phase)\n"
	"  --sample S         idle: seconds of gateway sampling once all are up (5; 0: hold\n"
	"                     them until SIGINT or SIGTERM, then report)\n"
	"  --concurrency C    connects in flight (256; churn 16)\n"
	"  --pid PID          the gateway's pid, to report its CPU, RSS and threads\n"
	"  --prefix P         msg_id/server_id prefix (default hb<pid>)\n"
	"  -v, --verbose      progress on stderr\n"
	"  -h, --help\n"
	"\n"
	"Exit status: 0 all delivered exactly once (or all connections ok), 1 not,\n"
	"2 usage, 3 could not set up (gateway down, key refused).\n";

static void on_signal(int sig);
static int num(const char *s, double min, double max, double *out);
static int parse_args(int argc, char **argv);
static int raise_nofile(int need);
static int setup(void);
static int loop_run(void);

int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

void note(const char *fmt, ...)
{
	va_list ap;

	if (!B.o.verbose)
		return;
	fprintf(stderr, "homestead-bench: %.3f s: ", (double)(now_ns() - B.t_start) / 1e9);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Keeps the first error for the report (and says it on stderr). */
void error_once(const char *fmt, ...)
{
	va_list ap;

	B.errors++;
	if (B.first_error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(B.first_error, sizeof(B.first_error), fmt, ap);
	va_end(ap);
	fprintf(stderr, "homestead-bench: %s\n", B.first_error);
}

uint32_t rng_next(void)
{
	B.rng ^= B.rng << 13;
	B.rng ^= B.rng >> 17;
	B.rng ^= B.rng << 5;
	return B.rng;
}

static void on_signal(int sig)
{
	stop_signal = sig;
}

int stop_requested(void)
{
	return (int)stop_signal;
}

/* ---- options -------------------------------------------------------------- */

static int num(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv)
{
	enum { O_URL = 256, O_HOST, O_PORT, O_KEY, O_MODS, O_CHANNELS, O_WINDOW, O_SIZE, O_COUNT,
	       O_DURATION, O_RATE, O_DRAIN, O_SAMPLE, O_CONC, O_PID, O_PREFIX };
	static const struct option longopts[] = {
		{ "url", required_argument, NULL, O_URL },
		{ "host", required_argument, NULL, O_HOST },
		{ "port", required_argument, NULL, O_PORT },
		{ "key", required_argument, NULL, O_KEY },
		{ "mods", required_argument, NULL, O_MODS },
		{ "channels", required_argument, NULL, O_CHANNELS },
		{ "window", required_argument, NULL, O_WINDOW },
		{ "size", required_argument, NULL, O_SIZE },
		{ "count", required_argument, NULL, O_COUNT },
		{ "duration", required_argument, NULL, O_DURATION },
		{ "rate", required_argument, NULL, O_RATE },
		{ "drain", required_argument, NULL, O_DRAIN },
		{ "sample", required_argument, NULL, O_SAMPLE },
		{ "concurrency", required_argument, NULL, O_CONC },
		{ "pid", required_argument, NULL, O_PID },
		{ "prefix", required_argument, NULL, O_PREFIX },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	/* ranges: min, max per numeric option (O_MODS .. O_PID) */
	static const double range[][2] = {
		{ 1, 100000 }, { 1, 100000 }, { 1, 100000 }, { 1, 256 << 20 }, { 0, 1e9 },
		{ 0.1, 3600 }, { 1, 1e6 }, { 0, 600 }, { 0, 600 }, { 1, 100000 }, { 1, 4194304 },
	};
	struct opts *o = &B.o;
	const char *host = NULL, *port = NULL, *url = NULL, *why;
	double v, vals[11];
	int set[11] = { 0 }, opt, i;
	size_t i_sc;

	if (argc < 2 || argv[1][0] == '-') {
		if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
			fputs(usage, stdout);
			exit(0);
		}
		fputs(usage, stderr);
		return -1;
	}
	for (i_sc = 0; i_sc < sizeof(scenario_names) / sizeof(*scenario_names); i_sc++)
		if (strcmp(argv[1], scenario_names[i_sc]) == 0)
			break;
	if (i_sc == sizeof(scenario_names) / sizeof(*scenario_names)) {
		fprintf(stderr, "homestead-bench: unknown scenario '%s'\n", argv[1]);
		return -1;
	}
	o->sc = (enum scenario)i_sc;
	snprintf(o->prefix, sizeof(o->prefix), "hb%ld", (long)getpid());
	optind = 2;
	while ((opt = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (opt) {
		case O_URL: url = optarg; break;
		case O_HOST: host = optarg; break;
		case O_PORT: port = optarg; break;
		case O_KEY: o->key = optarg; break;
		case O_PREFIX:
			if (!*optarg || strlen(optarg) >= sizeof(o->prefix) ||
			    strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
			    strlen(optarg)) {
				fprintf(stderr, "homestead-bench: --prefix: letters, digits, _ and - only\n");
				return -1;
			}
			snprintf(o->prefix, sizeof(o->prefix), "%s", optarg);
			break;
		case 'v': o->verbose = 1; break;
		case 'h': fputs(usage, stdout); exit(0);
		default:
			if (opt < O_MODS || opt > O_PID)
				return -1;
			i = opt - O_MODS;
			if (num(optarg, range[i][0], range[i][1], &v) < 0) {
				fprintf(stderr, "homestead-bench: --%s: '%s' is not a number in %g..%g\n",
				        longopts[opt - O_URL].name, optarg, range[i][0], range[i][1]);
				return -1;
			}
			vals[i] = v;
			set[i] = 1;
			break;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "homestead-bench: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}

	/* scenario defaults (the targets of the performance issue) */
	o->mods = o->sc == SC_FANOUT ? 50 : o->sc == SC_IDLE ? 1000 : o->sc == SC_BIG ? 4 : 16;
	o->window = o->sc == SC_BIG ? 4 : 32;
	o->size = o->sc == SC_BIG ? 1048576 : 100;
	o->duration = o->sc == SC_CHURN ? 10 : 5;
	o->rate = o->sc == SC_TRATE ? 10000 : 14000;
	o->drain = 10;
	o->sample = 5;
	o->concurrency = o->sc == SC_CHURN ? 16 : 256;
#define TAKE(idx, field, type) if (set[idx]) o->field = (type)vals[idx]
	TAKE(0, mods, int);
	TAKE(2, window, int);
	TAKE(3, size, size_t);
	TAKE(4, count, uint64_t);
	TAKE(5, duration, double);
	TAKE(6, rate, double);
	TAKE(7, drain, double);
	TAKE(8, sample, double);
	TAKE(9, concurrency, int);
	TAKE(10, pid, int);
#undef TAKE
	o->channels = set[1] ? (int)vals[1] :
	              o->sc == SC_FLOOD || SC_IS_RATE(o->sc) || o->sc == SC_QUEUE ||
	              o->sc == SC_TFLOOD ? o->mods : 1;
	if (o->channels > o->mods)
		o->channels = o->mods;

	if (!o->key)
		o->key = getenv("HOMESTEAD_KEY");
	if (!o->key || !*o->key) {
		fprintf(stderr, "homestead-bench: no key: pass --key K or set HOMESTEAD_KEY\n");
		return -1;
	}
	if (url && (host || port)) {
		fprintf(stderr, "homestead-bench: --url or --host/--port, not both\n");
		return -1;
	}
	if (!url) {
		snprintf(o->url_text, sizeof(o->url_text), "ws://%s%s%s:%s/sync",
		         host && strchr(host, ':') ? "[" : "", host ? host : "127.0.0.1",
		         host && strchr(host, ':') ? "]" : "", port ? port : "3333");
		url = o->url_text;
	} else {
		snprintf(o->url_text, sizeof(o->url_text), "%s", url);
	}
	if (wsc_url_parse(url, &o->url, &why) < 0) {
		fprintf(stderr, "homestead-bench: bad URL '%s': %s\n", url, why);
		return -1;
	}
	return 0;
}

/* ---- set-up and event loop ------------------------------------------------ */

static int raise_nofile(int need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -1;
	if (rl.rlim_cur >= (rlim_t)need)
		return 0;
	rl.rlim_cur = rl.rlim_max >= (rlim_t)need ? (rlim_t)need : rl.rlim_max;
	if (rl.rlim_cur < (rlim_t)need) {   /* root may raise the hard limit too */
		struct rlimit up = { (rlim_t)need, (rlim_t)need };

		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			return 0;
	}
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < (rlim_t)need) {
		fprintf(stderr, "homestead-bench: need %d file descriptors, the limit is %llu "
		        "(raise it with ulimit -n)\n", need, (unsigned long long)rl.rlim_cur);
		return -1;
	}
	return 0;
}

static int setup(void)
{
	struct addrinfo hints;
	int i, n, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(B.o.url.host, B.o.url.port, &hints, &B.addr);
	if (rc != 0) {
		fprintf(stderr, "homestead-bench: cannot resolve %s: %s\n", B.o.url.host,
		        gai_strerror(rc));
		return -1;
	}
	n = B.o.sc == SC_CHURN ? B.o.concurrency : B.o.mods;
	if (raise_nofile(n + 64) < 0)
		return -1;
	if ((B.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return -1;
	B.chans = calloc((size_t)B.o.channels, sizeof(*B.chans));
	B.peers = calloc((size_t)n + 1, sizeof(*B.peers));
	B.content = malloc(B.o.size);
	if (B.o.sc == SC_QUEUE && !(B.qch = calloc((size_t)B.o.channels, sizeof(*B.qch))))
		return -1;
	if (!B.chans || !B.peers || !B.content)
		return -1;
	for (i = 0; i < (int)B.o.size; i++)
		B.content[i] = (char)('a' + i % 26);
	for (i = 0; i < B.o.channels; i++)
		if (asprintf(&B.chans[i], "%s-ch%d", B.o.prefix, i) < 0)
			return -1;
	for (i = 0; i < n; i++) {
		int light = B.o.sc == SC_IDLE || B.o.sc == SC_CHURN;
		struct peer *p = peer_new((uint32_t)i, ROLE_MOD, light ? IN_SMALL : IN_BIG);

		if (!p)
			return -1;
		snprintf(p->sid, sizeof(p->sid), "%s-m%d", B.o.prefix, i);
		p->chan = B.chans[i % B.o.channels];
		B.peers[i] = p;
	}
	B.npeers = n;
	if (B.o.sc != SC_IDLE && B.o.sc != SC_CHURN) {
		/* after the mods, so peers[i] is mod i; it connects first */
		struct peer *bot = peer_new((uint32_t)n, ROLE_BOT, IN_BIG);

		if (!bot)
			return -1;
		snprintf(bot->sid, sizeof(bot->sid), "%s-bot", B.o.prefix);
		bot->chan = B.chans[0];
		B.peers[n] = bot;
		B.bot = bot;
		B.npeers = n + 1;
	}
	/* quotas: --count split over the senders */
	for (i = 0; i < B.npeers; i++) {
		struct peer *p = B.peers[i];
		uint64_t senders = B.o.sc == SC_FANOUT ? 1 : (uint64_t)B.o.mods, share;

		p->quota = UINT64_MAX;
		if (p == B.bot && B.o.sc != SC_FANOUT)
			p->quota = 0;
		if (!B.o.count)
			continue;
		if (B.o.sc == SC_FANOUT) {
			p->quota = p == B.bot ? B.o.count : 0;
			continue;
		}
		if (p == B.bot)
			continue;
		share = B.o.count / senders + (p->idx < B.o.count % senders ? 1 : 0);
		p->quota = share;
	}
	return 0;
}

/* The event loop from set-up to report (every scenario but tflood and
 * trate). Returns the exit status. */
static int loop_run(void)
{
	struct epoll_event ev[EVENTS_MAX];
	int64_t now, wait_ns;
	int n, i, rc;

	while (B.phase != PH_DONE) {
		if (stop_signal && B.phase == PH_SAMPLE && B.o.sample == 0) {
			usage_end();   /* the end of an idle hold asked for (--sample 0) */
			break;
		}
		if (stop_signal) {
			error_once("stopped by signal %d", (int)stop_signal);
			usage_end();
			break;
		}
		now = now_ns();
		tick(now);
		flush_dirty();
		if (B.phase == PH_DONE)
			break;
		/* how long to sleep: the rate's next message, else 1 ms..10 ms */
		wait_ns = 10 * 1000000LL;
		if (B.phase == PH_RUN && B.o.sc == SC_RATE) {
			int64_t next = B.t_run + (int64_t)((double)B.rate_next * 1e9 / B.o.rate);

			wait_ns = next - now_ns();
			if (wait_ns < 0)
				wait_ns = 0;
		} else if (B.phase == PH_SETUP || B.o.sc == SC_CHURN) {
			wait_ns = 1000000LL;
		}
		{
			struct timespec ts = { (time_t)(wait_ns / NS_PER_S), (long)(wait_ns % NS_PER_S) };

			n = epoll_pwait2(B.epfd, ev, EVENTS_MAX, &ts, NULL);
			if (n < 0 && errno == ENOSYS)
				n = epoll_wait(B.epfd, ev, EVENTS_MAX, (int)((wait_ns + 999999) / 1000000));
		}
		if (n < 0 && errno != EINTR) {
			error_once("epoll_wait: %s", strerror(errno));
			break;
		}
		/* the bot first: its receive times are the latency figures */
		for (i = 0; i < n; i++)
			if (ev[i].data.ptr == B.bot)
				on_event(ev[i].data.ptr, ev[i].events);
		for (i = 0; i < n; i++)
			if (ev[i].data.ptr != B.bot)
				on_event(ev[i].data.ptr, ev[i].events);
		flush_dirty();
	}
	if (!B.ru_t1)
		usage_end();

	if (B.auth_refused) {
		fprintf(stderr, "homestead-bench: the key was refused (HTTP 401/403)\n");
		rc = EXIT_CONNECT;
	} else if (B.o.sc == SC_IDLE || B.o.sc == SC_CHURN) {
		rc = report_conns();
	} else if (B.ready + B.failed < setup_peers() || (B.failed && B.t_run == 0)) {
		fprintf(stderr, "homestead-bench: set-up failed: %d of %d peers up\n", B.ready,
		        setup_peers());
		rc = EXIT_CONNECT;
	} else {
		rc = report_traffic();
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	int i, rc;

	if (parse_args(argc, argv) < 0)
		return EXIT_USAGE;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* precise sleeps for the rate scenarios' pacing (threads inherit it) */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	B.t_start = now_ns();
	B.rng = (uint32_t)(B.t_start ^ getpid()) | 1;
	if (setup() < 0) {
		fprintf(stderr, "homestead-bench: set-up failed: %s\n", strerror(errno));
		return EXIT_CONNECT;
	}
	B.phase = PH_SETUP;
	B.phase_deadline = B.t_start + (int64_t)(60 * 1e9);
	note("%s: %d peers to %s", scenario_names[B.o.sc], B.npeers, B.o.url_text);

	rc = SC_IS_THREADED(B.o.sc) ? thread_run() : loop_run();
	fflush(stdout);
	for (i = 0; i < B.npeers; i++)
		peer_free(B.peers[i]);
	for (i = 0; i < B.o.channels && B.chans; i++)
		free(B.chans[i]);
	free(B.chans);
	free(B.peers);
	free(B.content);
	free(B.lat);
	free(B.qch);
	if (B.addr)
		freeaddrinfo(B.addr);
	return rc;
}
