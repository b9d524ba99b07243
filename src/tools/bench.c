/*
 * bench.c - homestead-bench: a load generator for the gateway that is not
 * itself the bottleneck.
 *
 *   homestead-bench flood|fanout|rate|idle|churn|big|queue [options]
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
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#include "wsc.h"

#define EXIT_FAILED      1    /* ran, but not every message arrived exactly once */
#define EXIT_USAGE       2
#define EXIT_CONNECT     3    /* could not set up (refused key, gateway down) */

#define MAX_FRAME        ((size_t)64 << 20)
#define PEER_TIMEOUT_NS  (5 * NS_PER_S)   /* connect + upgrade + handshake, or close */
#define NS_PER_S         1000000000LL
#define EVENTS_MAX       512
#define IN_SMALL         4096      /* input buffer of an idle/churn peer */
#define IN_BIG           (256 * 1024)

enum scenario { SC_FLOOD, SC_FANOUT, SC_RATE, SC_IDLE, SC_CHURN, SC_BIG, SC_QUEUE };
static const char *const scenario_names[] = { "flood", "fanout", "rate", "idle", "churn", "big",
                                              "queue" };

enum role { ROLE_MOD, ROLE_BOT };

enum pstate {
	P_FREE,        /* slot unused */
	P_CONNECTING,  /* TCP connect in progress */
	P_UPGRADE,     /* request sent, waiting for 101 */
	P_HANDSHAKE,   /* JSON handshake sent, waiting for "connected" */
	P_READY,
	P_CLOSING,     /* close frame sent, waiting for the gateway's */
	P_DONE,        /* closed cleanly */
	P_FAILED,
};

enum phase { PH_SETUP, PH_RUN, PH_DRAIN, PH_SAMPLE, PH_DONE };

/* One message a mod sent. */
struct rec {
	int64_t sent_ns;
	uint16_t got;     /* deliveries to the bot */
	uint8_t acked;    /* acks received */
	uint8_t pad;
	uint32_t before;  /* queue: acks of its channel received before it was sent */
	uint32_t rank;    /* queue: its place in its channel's ack order */
};

/* queue: one channel's order. */
struct qchan {
	uint32_t acked;       /* "queued" acks received */
	uint32_t max_before;  /* the largest rec.before delivered so far */
};

struct peer {
	int fd;
	uint32_t idx;           /* mods: 0..mods-1; the bot: mods */
	enum role role;
	enum pstate state;
	int pollout;            /* EPOLLOUT registered */
	int dirty;              /* on the flush list */
	struct peer *dirty_next;
	int64_t t0;             /* when the connect started */
	char sid[64];           /* server_id / bot_id */
	const char *chan;
	char accept[WSC_ACCEPT_LEN + 1];

	unsigned char *in;
	size_t in_len, in_cap;
	unsigned char *out;
	size_t out_off, out_len, out_cap;
	struct wsc_asm asm_;

	/* traffic */
	uint64_t sent;          /* messages sent (= next seq) */
	uint64_t quota;         /* messages to send (UINT64_MAX: until the time is up) */
	uint32_t unacked;
	struct rec *recs;       /* mods (and the bot in fanout): one per message sent */
	size_t rec_cap;
	uint8_t *seen;          /* fanout mods: deliveries of each bot message */
	size_t seen_cap;
	uint32_t rx_rank;       /* queue: 1 + the largest rank delivered of this mod's */
};

struct opts {
	enum scenario sc;
	struct wsc_url url;
	char url_text[512];
	const char *key;
	int mods, channels, window;
	size_t size;
	uint64_t count;
	double duration, drain, sample;
	double rate;
	int pid;
	int concurrency;
	char prefix[32];
	int verbose;
};

static struct {
	struct opts o;
	int epfd;
	struct addrinfo *addr;
	struct peer **peers;     /* mod i at [i], then the bot (if any) */
	int npeers;
	struct peer *bot;
	struct peer *dirty;
	char *content;           /* o.size bytes of message text */
	char **chans;
	enum phase phase;
	int64_t t_start, t_run, t_send_end, t_first_send, t_last_rx, t_drain_end, t_up;
	int64_t t_last_ack, t_bot;   /* queue: the last ack; when the bot started to connect */
	int64_t phase_deadline;
	uint32_t rng;

	/* counters (queue: acks_completed counts "queued" acks) */
	uint64_t sent, acks, acks_completed, acks_other, dup_acks, delivered, dups, foreign,
	         bad_content, errors, lost_peers, out_of_order;
	uint64_t bytes_delivered;
	int ready, failed, connecting, started;
	uint64_t cycles_ok, no_echo;   /* churn: closed; of those, without a close frame */
	int auth_refused;
	char first_error[200];

	/* rate */
	uint64_t rate_next;      /* index of the next message to offer */
	int64_t *lat;            /* latency samples, ns */
	size_t nlat, lat_cap;

	/* fanout: bot messages sent (each to be seen once by every mod) */
	uint64_t fan_expected;

	struct qchan *qch;       /* queue: one per channel */

	/* resource use */
	struct rusage ru0, ru1;
	int64_t ru_t0, ru_t1;
	long long gw_ticks0, gw_ticks1;
	long gw_rss0, gw_rss1, gw_hwm, gw_threads0, gw_threads1;
} B;

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
	"\n"
	"  --url URL          ws://host:port/sync (default ws://127.0.0.1:3333/sync)\n"
	"  --host H --port P  instead of --url\n"
	"  --key K            API key (default: $HOMESTEAD_KEY)\n"
	"  --mods N           mods (flood/rate/queue 16, fanout 50, idle 1000, big 4)\n"
	"  --channels K       channels the mods spread over (flood/rate/queue: = mods)\n"
	"  --window W         unacked messages per sender (flood/fanout/queue 32, big 4)\n"
	"  --size S           content bytes (100; big 1048576)\n"
	"  --count N          messages in all (0: until --duration is over)\n"
	"  --duration S       seconds of sending (5; churn 10)\n"
	"  --rate R           rate: messages/s offered (14000)\n"
	"  --drain S          seconds to wait for the last acks/deliveries (10; queue: per phase)\n"
	"  --sample S         idle: seconds of gateway sampling once all are up (5)\n"
	"  --concurrency C    connects in flight (256; churn 16)\n"
	"  --pid PID          the gateway's pid, to report its CPU, RSS and threads\n"
	"  --prefix P         msg_id/server_id prefix (default hb<pid>)\n"
	"  -v, --verbose      progress on stderr\n"
	"  -h, --help\n"
	"\n"
	"Exit status: 0 all delivered exactly once (or all connections ok), 1 not,\n"
	"2 usage, 3 could not set up (gateway down, key refused).\n";

static int64_t now_ns(void);
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void error_once(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static uint32_t rng_next(void);
static void on_signal(int sig);
static int num(const char *s, double min, double max, double *out);
static int parse_args(int argc, char **argv);
static int raise_nofile(int need);
static void proc_sample(long long *ticks, long *rss, long *hwm, long *threads);
static void usage_begin(void);
static void usage_end(void);
static int setup(void);
static struct peer *peer_new(uint32_t idx, enum role role, size_t in_cap);
static void peer_free(struct peer *p);
static int peer_connect(struct peer *p);
static void peer_close(struct peer *p, enum pstate st);
static void peer_fail(struct peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int out_reserve(struct peer *p, size_t more);
static void mark_dirty(struct peer *p);
static void queue_frame(struct peer *p, int opcode, const void *data, size_t len);
static void flush_dirty(void);
static void peer_flush(struct peer *p);
static void set_pollout(struct peer *p, int on);
static void on_event(struct peer *p, uint32_t ev);
static void on_connected(struct peer *p);
static int on_upgrade(struct peer *p);
static void on_frames(struct peer *p);
static void on_text(struct peer *p, const char *s, size_t len);
static void on_ready(struct peer *p);
static void on_ack(struct peer *p, const char *id, size_t idlen, const char *status,
                   size_t slen, int duplicate);
static void on_delivery(struct peer *p, const char *id, size_t idlen, size_t content_len,
                        int64_t now);
static int id_parse(const char *id, size_t len, long *a, uint64_t *seq);
static struct rec *rec_at(struct peer *p, uint64_t seq);
static void queue_acked(struct peer *p, struct rec *r);
static void queue_order(struct peer *from, const struct rec *r);
static void send_message(struct peer *p, int64_t now);
static void fill_window(struct peer *p, int64_t now);
static void rate_tick(int64_t now);
static void start_connects(int64_t now);
static void check_timeouts(int64_t now);
static int all_settled(void);
static int setup_peers(void);
static void start_run(int64_t now);
static void tick(int64_t now);
static int cmp_i64(const void *a, const void *b);
static double pct(double q);
static void usage_fields(char *buf, size_t cap);
static void verify(uint64_t *missing, uint64_t *unacked);
static int report_traffic(void);
static int report_conns(void);

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void note(const char *fmt, ...)
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
static void error_once(const char *fmt, ...)
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

static uint32_t rng_next(void)
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
	o->rate = 14000;
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
	              o->sc == SC_FLOOD || o->sc == SC_RATE || o->sc == SC_QUEUE ? o->mods : 1;
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

/* ---- process figures ------------------------------------------------------ */

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

static void usage_begin(void)
{
	getrusage(RUSAGE_SELF, &B.ru0);
	B.ru_t0 = now_ns();
	proc_sample(&B.gw_ticks0, &B.gw_rss0, &B.gw_hwm, &B.gw_threads0);
}

static void usage_end(void)
{
	getrusage(RUSAGE_SELF, &B.ru1);
	B.ru_t1 = now_ns();
	proc_sample(&B.gw_ticks1, &B.gw_rss1, &B.gw_hwm, &B.gw_threads1);
}

/* ---- peers ---------------------------------------------------------------- */

static struct peer *peer_new(uint32_t idx, enum role role, size_t in_cap)
{
	struct peer *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->fd = -1;
	p->idx = idx;
	p->role = role;
	p->in_cap = in_cap;
	if (!(p->in = malloc(in_cap))) {
		free(p);
		return NULL;
	}
	return p;
}

static void peer_free(struct peer *p)
{
	if (!p)
		return;
	if (p->fd >= 0)
		close(p->fd);
	free(p->in);
	free(p->out);
	free(p->recs);
	free(p->seen);
	wsc_asm_free(&p->asm_);
	free(p);
}

/* Starts a non-blocking connect. 0, or -1 (p failed). */
static int peer_connect(struct peer *p)
{
	struct epoll_event ev;
	int one = 1, rc;

	p->state = P_CONNECTING;
	p->t0 = now_ns();
	p->in_len = p->out_len = p->out_off = 0;
	p->pollout = 1;
	B.started++;
	B.connecting++;
	p->fd = socket(B.addr->ai_family, B.addr->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
	               B.addr->ai_protocol);
	if (p->fd < 0) {
		peer_fail(p, "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rc = connect(p->fd, B.addr->ai_addr, B.addr->ai_addrlen);
	if (rc < 0 && errno != EINPROGRESS) {
		peer_fail(p, "connect: %s", strerror(errno));
		return -1;
	}
	ev.events = EPOLLIN | EPOLLOUT;
	ev.data.ptr = p;
	if (epoll_ctl(B.epfd, EPOLL_CTL_ADD, p->fd, &ev) < 0) {
		peer_fail(p, "epoll_ctl: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Ends p's connection (the socket is closed; the slot and its records stay). */
static void peer_close(struct peer *p, enum pstate st)
{
	if (p->state == P_CONNECTING || p->state == P_UPGRADE || p->state == P_HANDSHAKE)
		B.connecting--;
	if (p->state == P_READY && B.phase != PH_DONE && st == P_FAILED)
		B.lost_peers++;
	if (p->fd >= 0)
		close(p->fd);   /* also leaves the epoll set */
	p->fd = -1;
	p->state = st;
	p->in_len = p->out_len = p->out_off = 0;
	p->asm_.opcode = 0;
}

static void peer_fail(struct peer *p, const char *fmt, ...)
{
	char why[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* the first is said and kept for the report; idle and churn count them */
	error_once("%s %s: %s", p->role == ROLE_BOT ? "bot" : "mod", p->sid, why);
	if (p->state != P_FAILED)
		B.failed++;
	peer_close(p, P_FAILED);
}

static int out_reserve(struct peer *p, size_t more)
{
	size_t cap;
	unsigned char *nb;

	if (p->out_off > 0 && p->out_off == p->out_len)
		p->out_off = p->out_len = 0;
	if (p->out_len + more <= p->out_cap)
		return 0;
	if (p->out_off > 0) {   /* slide what is left to the front */
		memmove(p->out, p->out + p->out_off, p->out_len - p->out_off);
		p->out_len -= p->out_off;
		p->out_off = 0;
		if (p->out_len + more <= p->out_cap)
			return 0;
	}
	cap = p->out_cap ? p->out_cap : 4096;
	while (cap < p->out_len + more)
		cap *= 2;
	if (!(nb = realloc(p->out, cap)))
		return -1;
	p->out = nb;
	p->out_cap = cap;
	return 0;
}

static void mark_dirty(struct peer *p)
{
	if (p->dirty)
		return;
	p->dirty = 1;
	p->dirty_next = B.dirty;
	B.dirty = p;
}

static void queue_frame(struct peer *p, int opcode, const void *data, size_t len)
{
	if (p->fd < 0)
		return;
	if (out_reserve(p, wsc_frame_size(len)) < 0) {
		peer_fail(p, "out of memory");
		return;
	}
	p->out_len += wsc_frame_encode(p->out + p->out_len, 1, opcode, data, len, rng_next());
	mark_dirty(p);
}

static void set_pollout(struct peer *p, int on)
{
	struct epoll_event ev;

	if (p->pollout == on || p->fd < 0)
		return;
	ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
	ev.data.ptr = p;
	epoll_ctl(B.epfd, EPOLL_CTL_MOD, p->fd, &ev);
	p->pollout = on;
}

/* One send of everything p has; the rest waits for EPOLLOUT. */
static void peer_flush(struct peer *p)
{
	ssize_t n;

	if (p->fd < 0 || p->state == P_CONNECTING)
		return;
	if (p->out_off < p->out_len) {
		n = send(p->fd, p->out + p->out_off, p->out_len - p->out_off, MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			peer_fail(p, "send: %s", strerror(errno));
			return;
		}
		if (n > 0)
			p->out_off += (size_t)n;
	}
	if (p->out_off == p->out_len)
		p->out_off = p->out_len = 0;
	set_pollout(p, p->out_len > 0);
}

static void flush_dirty(void)
{
	struct peer *p;

	while ((p = B.dirty)) {
		B.dirty = p->dirty_next;
		p->dirty = 0;
		peer_flush(p);
	}
}

/* ---- input ---------------------------------------------------------------- */

static void on_event(struct peer *p, uint32_t ev)
{
	ssize_t n;
	size_t cap;
	unsigned char *nb;

	if (p->fd < 0)
		return;
	if (p->state == P_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			peer_fail(p, "connect: %s", strerror(err));
			return;
		}
		if (!(ev & (EPOLLOUT | EPOLLIN | EPOLLHUP | EPOLLERR)))
			return;
		on_connected(p);
		return;
	}
	if (ev & EPOLLOUT)
		mark_dirty(p);
	if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	if (p->in_len == p->in_cap) {   /* a frame bigger than the buffer */
		cap = p->in_cap * 2;
		if (cap > MAX_FRAME + 64 || !(nb = realloc(p->in, cap))) {
			peer_fail(p, "frame too big");
			return;
		}
		p->in = nb;
		p->in_cap = cap;
	}
	n = recv(p->fd, p->in + p->in_len, p->in_cap - p->in_len, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		if (p->state == P_CLOSING) {   /* ended after our close, but no close frame */
			B.cycles_ok++;
			B.no_echo++;
			peer_close(p, P_DONE);
			return;
		}
		peer_fail(p, n == 0 ? "connection closed by the gateway" : "recv: %s",
		          strerror(errno));
		return;
	}
	p->in_len += (size_t)n;
	if (p->state == P_UPGRADE && on_upgrade(p) < 0)
		return;
	if (p->state >= P_HANDSHAKE && p->state <= P_CLOSING)
		on_frames(p);
}

static void on_connected(struct peer *p)
{
	char key[WSC_KEY_LEN + 1], req[4096];
	size_t n;

	wsc_new_key(key, p->accept);
	n = wsc_upgrade_request(req, sizeof(req), &B.o.url, key, B.o.key);
	if (n == 0 || out_reserve(p, n) < 0) {
		peer_fail(p, "cannot build the upgrade request");
		return;
	}
	memcpy(p->out + p->out_len, req, n);
	p->out_len += n;
	p->state = P_UPGRADE;
	mark_dirty(p);
}

/* 0 when upgraded (or still waiting), -1 when p failed. */
static int on_upgrade(struct peer *p)
{
	struct wsc_http h;
	enum wsc_parse pr = wsc_http_parse((const char *)p->in, p->in_len, p->accept, &h);
	char hs[256];
	int n;

	if (pr == WSC_MORE)
		return 0;
	if (pr == WSC_ERROR) {
		peer_fail(p, "answer to the upgrade is not HTTP");
		return -1;
	}
	if (h.status != 101) {
		if (h.status == 401 || h.status == 403)
			B.auth_refused = 1;
		peer_fail(p, "upgrade refused: HTTP %d", h.status);
		return -1;
	}
	if (!h.accept_ok || !h.upgrade_ok) {
		peer_fail(p, "bad upgrade answer");
		return -1;
	}
	memmove(p->in, p->in + h.head_len, p->in_len - h.head_len);
	p->in_len -= h.head_len;
	if (p->role == ROLE_BOT)
		n = snprintf(hs, sizeof(hs), "{\"type\":\"bot\",\"data\":{\"bot_id\":\"%s\"}}", p->sid);
	else
		n = snprintf(hs, sizeof(hs),
		             "{\"type\":\"mod\",\"data\":{\"server_id\":\"%s\",\"channel_id\":\"%s\"}}",
		             p->sid, p->chan);
	p->state = P_HANDSHAKE;
	queue_frame(p, WSC_OP_TEXT, hs, (size_t)n);
	return 0;
}

static void on_frames(struct peer *p)
{
	const unsigned char *msg;
	struct wsc_frame f;
	const char *why;
	enum wsc_parse pr;
	size_t off = 0, mlen;
	int op;

	while (p->fd >= 0) {
		pr = wsc_frame_parse(p->in + off, p->in_len - off, MAX_FRAME, &f, &why);
		if (pr == WSC_MORE) {
			if (f.frame_len > p->in_cap) {   /* grow once to the frame's size */
				size_t cap = p->in_cap;
				unsigned char *nb;

				while (cap < f.frame_len)
					cap *= 2;
				if (!(nb = realloc(p->in, cap))) {
					peer_fail(p, "out of memory");
					return;
				}
				p->in = nb;
				p->in_cap = cap;
			}
			break;
		}
		if (pr == WSC_ERROR) {
			peer_fail(p, "bad frame from the gateway: %s", why);
			return;
		}
		off += f.frame_len;
		switch (f.opcode) {
		case WSC_OP_PING:
			queue_frame(p, WSC_OP_PONG, f.payload, f.len);
			break;
		case WSC_OP_PONG:
			break;
		case WSC_OP_CLOSE:
			if (p->state == P_CLOSING) {
				B.cycles_ok++;
				peer_close(p, P_DONE);
			} else {
				peer_fail(p, "closed by the gateway (%d)", f.close_code);
			}
			return;
		default:
			if (wsc_asm_feed(&p->asm_, &f, MAX_FRAME, &msg, &mlen, &op, &why) == WSC_ERROR) {
				peer_fail(p, "bad message from the gateway: %s", why);
				return;
			}
			if (f.fin)
				on_text(p, (const char *)msg, mlen);
			break;
		}
	}
	if (p->fd < 0)
		return;
	if (off > 0) {
		memmove(p->in, p->in + off, p->in_len - off);
		p->in_len -= off;
	}
}

/* One whole text message from the gateway. */
static void on_text(struct peer *p, const char *s, size_t len)
{
	struct wsc_json_iter it;
	const char *k, *v, *status = NULL, *id = NULL, *code = NULL, *content = NULL, *message = NULL;
	size_t kl, vl, slen = 0, idlen = 0, clen = 0, mlen = 0;
	enum wsc_json_type t;
	int duplicate = 0, rc;

	wsc_json_begin(&it, s, len);
	while ((rc = wsc_json_next(&it, &k, &kl, &v, &vl, &t)) == 1) {
		if (kl == 6 && memcmp(k, "status", 6) == 0 && t == WSC_JSON_STRING)
			status = v, slen = vl;
		else if (kl == 6 && memcmp(k, "msg_id", 6) == 0 && t == WSC_JSON_STRING)
			id = v, idlen = vl;
		else if (kl == 7 && memcmp(k, "content", 7) == 0 && t == WSC_JSON_STRING)
			content = v, clen = vl;
		else if (kl == 4 && memcmp(k, "code", 4) == 0)
			code = v;
		else if (kl == 7 && memcmp(k, "message", 7) == 0 && t == WSC_JSON_STRING)
			message = v, mlen = vl;
		else if (kl == 9 && memcmp(k, "duplicate", 9) == 0 && t == WSC_JSON_TRUE)
			duplicate = 1;
	}
	if (rc < 0) {
		error_once("%s %s: not JSON: %.60s", p->role == ROLE_BOT ? "bot" : "mod", p->sid, s);
		return;
	}
	if (code) {
		error_once("%s %s: gateway error %.*s: %.*s", p->role == ROLE_BOT ? "bot" : "mod",
		           p->sid, 3, code, (int)mlen, message ? message : "");
		if (p->state == P_HANDSHAKE)
			peer_fail(p, "handshake refused");
		return;
	}
	if (p->state == P_HANDSHAKE) {
		if (status && wsc_span_eq(status, slen, "connected"))
			on_ready(p);
		return;
	}
	if (status && id)
		on_ack(p, id, idlen, status, slen, duplicate);
	else if (content && id)
		on_delivery(p, id, idlen, clen, now_ns());
}

static void on_ready(struct peer *p)
{
	p->state = P_READY;
	B.connecting--;
	B.ready++;
	if (B.o.sc == SC_CHURN) {   /* and close it at once */
		unsigned char buf[WSC_HEAD_MAX + 125];
		size_t n = wsc_close_encode(buf, 1000, "Bye.", rng_next());

		if (out_reserve(p, n) == 0) {
			memcpy(p->out + p->out_len, buf, n);
			p->out_len += n;
			mark_dirty(p);
		}
		p->state = P_CLOSING;
		p->t0 = now_ns();
	}
}

/* Parses "PREFIX.<a>.<seq>" where a is digits or "b". Returns 0 and the
 * parts (a = -1 for "b"), -1 if the id is not ours. */
static int id_parse(const char *id, size_t len, long *a, uint64_t *seq)
{
	size_t pl = strlen(B.o.prefix), i;
	uint64_t v = 0;

	if (len < pl + 4 || memcmp(id, B.o.prefix, pl) != 0 || id[pl] != '.')
		return -1;
	i = pl + 1;
	if (id[i] == 'b') {
		*a = -1;
		i++;
	} else {
		*a = 0;
		if (id[i] < '0' || id[i] > '9')
			return -1;
		while (i < len && id[i] >= '0' && id[i] <= '9')
			*a = *a * 10 + (id[i++] - '0');
	}
	if (i >= len || id[i] != '.')
		return -1;
	for (i++; i < len; i++) {
		if (id[i] < '0' || id[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(id[i] - '0');
	}
	*seq = v;
	return 0;
}

static struct rec *rec_at(struct peer *p, uint64_t seq)
{
	size_t cap;
	struct rec *nr;

	if (seq >= p->rec_cap) {
		cap = p->rec_cap ? p->rec_cap : 1024;
		while (cap <= seq)
			cap *= 2;
		if (!(nr = realloc(p->recs, cap * sizeof(*nr))))
			return NULL;
		memset(nr + p->rec_cap, 0, (cap - p->rec_cap) * sizeof(*nr));
		p->recs = nr;
		p->rec_cap = cap;
	}
	return &p->recs[seq];
}

static void on_ack(struct peer *p, const char *id, size_t idlen, const char *status,
                   size_t slen, int duplicate)
{
	struct rec *r;
	uint64_t seq;
	long a;

	if (id_parse(id, idlen, &a, &seq) < 0 ||
	    (p->role == ROLE_MOD ? a != (long)p->idx : a != -1) || seq >= p->sent) {
		B.foreign++;
		return;
	}
	r = &p->recs[seq];
	B.acks++;
	if (r->acked++)
		B.dup_acks++;
	if (duplicate)
		B.dup_acks++;
	if (wsc_span_eq(status, slen, B.o.sc == SC_QUEUE ? "queued" : "completed")) {
		B.acks_completed++;
		if (B.o.sc == SC_QUEUE && r->acked == 1 && !duplicate)
			queue_acked(p, r);
	} else {
		B.acks_other++;
	}
	if (B.o.sc == SC_QUEUE)
		B.t_last_ack = now_ns();
	if (p->unacked > 0)
		p->unacked--;
	fill_window(p, 0);
}

static void on_delivery(struct peer *p, const char *id, size_t idlen, size_t content_len,
                        int64_t now)
{
	struct peer *from;
	struct rec *r;
	uint64_t seq;
	long a;

	if (id_parse(id, idlen, &a, &seq) < 0) {
		B.foreign++;
		return;
	}
	if (content_len != B.o.size)
		B.bad_content++;
	B.t_last_rx = now;
	if (a < 0) {   /* a bot message at a mod (fanout) */
		if (p->role != ROLE_MOD || !B.bot || seq >= B.bot->sent) {
			B.foreign++;
			return;
		}
		if (seq >= p->seen_cap) {
			size_t cap = p->seen_cap ? p->seen_cap : 4096;
			uint8_t *ns;

			while (cap <= seq)
				cap *= 2;
			if (!(ns = realloc(p->seen, cap)))
				return;
			memset(ns + p->seen_cap, 0, cap - p->seen_cap);
			p->seen = ns;
			p->seen_cap = cap;
		}
		if (p->seen[seq]++ == 0) {
			B.delivered++;
			B.bytes_delivered += content_len;
		} else {
			B.dups++;
		}
		return;
	}
	if (p->role != ROLE_BOT || a >= B.o.mods || seq >= B.peers[a]->sent) {
		B.foreign++;
		return;
	}
	from = B.peers[a];
	r = &from->recs[seq];
	if (r->got++ == 0) {
		B.delivered++;
		B.bytes_delivered += content_len;
		if (B.o.sc == SC_RATE) {
			if (B.nlat == B.lat_cap) {
				size_t cap = B.lat_cap ? B.lat_cap * 2 : 65536;
				int64_t *nl = realloc(B.lat, cap * sizeof(*nl));

				if (!nl)
					return;
				B.lat = nl;
				B.lat_cap = cap;
			}
			B.lat[B.nlat++] = now - r->sent_ns;
		}
		if (B.o.sc == SC_QUEUE)
			queue_order(from, r);
	} else {
		B.dups++;
	}
}

/* queue: r, p's message, is its channel's next "queued" ack. */
static void queue_acked(struct peer *p, struct rec *r)
{
	r->rank = B.qch[p->idx % (uint32_t)B.o.channels].acked++;
}

/* queue: checks the first delivery r of a message from `from` (see the top). */
static void queue_order(struct peer *from, const struct rec *r)
{
	struct qchan *c = &B.qch[from->idx % (uint32_t)B.o.channels];

	if (!r->acked)
		return;   /* counted as unacked */
	if (r->rank < from->rx_rank || r->rank < c->max_before)
		B.out_of_order++;
	if (r->rank >= from->rx_rank)
		from->rx_rank = r->rank + 1;
	if (r->before > c->max_before)
		c->max_before = r->before;
}

/* ---- traffic -------------------------------------------------------------- */

/* Builds one message from p straight into its output buffer. */
static void send_message(struct peer *p, int64_t now)
{
	char head[512];
	size_t hl, plen, h;
	unsigned char *o;
	uint32_t mask = rng_next();
	struct rec *r;
	int n;

	if (!(r = rec_at(p, p->sent))) {
		peer_fail(p, "out of memory");
		return;
	}
	if (p->role == ROLE_BOT)
		n = snprintf(head, sizeof(head),
		             "{\"msg_id\":\"%s.b.%llu\",\"id\":\"%s\",\"author\":{\"id\":\"bench\"},"
		             "\"content\":\"", B.o.prefix, (unsigned long long)p->sent, B.chans[0]);
	else
		n = snprintf(head, sizeof(head),
		             "{\"msg_id\":\"%s.%u.%llu\",\"id\":\"%s\",\"destination\":{\"channel_id\":"
		             "\"%s\"},\"author\":{\"id\":\"bench\"},\"content\":\"", B.o.prefix, p->idx,
		             (unsigned long long)p->sent, p->sid, p->chan);
	hl = (size_t)n;
	plen = hl + B.o.size + 2;
	if (out_reserve(p, WSC_HEAD_MAX + plen) < 0) {
		peer_fail(p, "out of memory");
		return;
	}
	o = p->out + p->out_len;
	h = wsc_frame_head(o, 1, WSC_OP_TEXT, plen, mask);
	memcpy(o + h, head, hl);
	memcpy(o + h + hl, B.content, B.o.size);
	memcpy(o + h + hl + B.o.size, "\"}", 2);
	wsc_mask(o + h, plen, mask);
	p->out_len += h + plen;
	r->sent_ns = now ? now : now_ns();
	if (B.o.sc == SC_QUEUE)
		r->before = B.qch[p->idx % (uint32_t)B.o.channels].acked;
	if (!B.t_first_send)
		B.t_first_send = r->sent_ns;
	p->sent++;
	p->unacked++;
	B.sent++;
	mark_dirty(p);
}

/* Sends until p has a full window (flood, fanout, big). */
static void fill_window(struct peer *p, int64_t now)
{
	if (B.phase != PH_RUN || B.o.sc == SC_RATE || p->state != P_READY)
		return;
	if ((B.o.sc == SC_FANOUT) != (p->role == ROLE_BOT))
		return;   /* fanout: only the bot sends; flood, big: only mods */
	if (!now)
		now = now_ns();
	if (now >= B.t_send_end)
		return;
	while (p->unacked < (uint32_t)B.o.window && p->sent < p->quota && p->fd >= 0)
		send_message(p, now);
}

/* Rate: offers every message due by now, round robin over the mods. */
static void rate_tick(int64_t now)
{
	uint64_t due = (uint64_t)((double)(now - B.t_run) * B.o.rate / 1e9) + 1;
	struct peer *p;

	if (B.o.count && due > B.o.count)
		due = B.o.count;
	while (B.rate_next < due && now < B.t_send_end) {
		p = B.peers[B.rate_next % (uint64_t)B.o.mods];
		B.rate_next++;
		if (p->state == P_READY)
			send_message(p, now_ns());
	}
}

/* Starts connects up to the concurrency limit (set-up, idle, churn). */
static void start_connects(int64_t now)
{
	int i;

	if (B.bot && B.o.sc != SC_QUEUE && B.bot->state != P_READY) {   /* the bot first */
		if (B.bot->state == P_FREE)
			peer_connect(B.bot);
		return;
	}
	for (i = 0; i < setup_peers() && B.connecting < B.o.concurrency; i++) {
		struct peer *p = B.peers[i];

		if (B.o.sc == SC_CHURN) {
			if (p->state != P_FREE && p->state != P_DONE && p->state != P_FAILED)
				continue;
			if (now >= B.t_send_end)
				return;
			snprintf(p->sid, sizeof(p->sid), "%s-c%llu", B.o.prefix,
			         (unsigned long long)B.started);
		} else if (p->state != P_FREE) {
			continue;
		}
		peer_connect(p);
	}
}

/* Fails peers stuck in set-up or closing for PEER_TIMEOUT_NS. */
static void check_timeouts(int64_t now)
{
	int i;

	for (i = 0; i < B.npeers; i++) {
		struct peer *p = B.peers[i];

		if (p->state >= P_CONNECTING && p->state <= P_HANDSHAKE && now - p->t0 > PEER_TIMEOUT_NS)
			peer_fail(p, "no answer within %lld s", PEER_TIMEOUT_NS / NS_PER_S);
		else if (p->state == P_CLOSING && now - p->t0 > PEER_TIMEOUT_NS)
			peer_fail(p, "no close frame from the gateway within %lld s",
			          PEER_TIMEOUT_NS / NS_PER_S);
	}
}

/* Every message acked and delivered (or nothing more can come). */
static int all_settled(void)
{
	uint64_t want;

	if (B.o.sc == SC_FANOUT)
		want = B.bot ? B.bot->sent * (uint64_t)B.o.mods : 0;
	else
		want = B.sent;
	return B.acks >= B.sent && B.delivered >= want;
}

/* Peers brought up before the run (queue: the mods; its bot comes later). */
static int setup_peers(void)
{
	return B.o.sc == SC_QUEUE ? B.o.mods : B.npeers;
}

static void start_run(int64_t now)
{
	int i;

	B.phase = PH_RUN;
	B.t_run = now;
	B.t_send_end = now + (int64_t)(B.o.duration * 1e9);
	note("all %d peers up; sending", B.ready);
	usage_begin();
	for (i = 0; i < B.npeers; i++)
		fill_window(B.peers[i], now);
}

static void tick(int64_t now)
{
	int i, senders_left;

	if (B.phase != PH_DONE && B.phase != PH_SAMPLE)
		check_timeouts(now);
	switch (B.phase) {
	case PH_SETUP:
		if (B.o.sc == SC_CHURN) {
			B.phase = PH_RUN;
			B.t_run = now;
			B.t_send_end = now + (int64_t)(B.o.duration * 1e9);
			usage_begin();
			start_connects(now);
			break;
		}
		start_connects(now);
		if (B.auth_refused || (B.failed && B.o.sc != SC_IDLE)) {
			B.phase = PH_DONE;
			break;
		}
		if (B.ready + B.failed < setup_peers()) {
			if (now > B.phase_deadline) {
				error_once("set-up took over %.0f s", (double)(B.phase_deadline - B.t_start) / 1e9);
				B.phase = PH_DONE;
			}
			break;
		}
		if (B.o.sc == SC_IDLE) {
			B.t_up = now;
			note("%d mods up, %d failed; sampling for %.1f s", B.ready, B.failed, B.o.sample);
			B.phase = PH_SAMPLE;
			B.phase_deadline = now + (int64_t)(B.o.sample * 1e9);
			usage_begin();
			break;
		}
		start_run(now);
		break;
	case PH_RUN:
		if (B.o.sc == SC_CHURN) {
			start_connects(now);
			if (now >= B.t_send_end) {
				B.phase = PH_DRAIN;
				B.t_drain_end = now + PEER_TIMEOUT_NS;
			}
			break;
		}
		if (B.o.sc == SC_RATE)
			rate_tick(now);
		senders_left = 0;
		for (i = 0; i < B.npeers; i++) {
			struct peer *p = B.peers[i];

			if (p->state == P_READY && p->sent < p->quota &&
			    (B.o.sc != SC_FANOUT || p == B.bot) && (B.o.sc != SC_RATE || p != B.bot))
				senders_left++;
		}
		if (B.o.sc == SC_RATE)
			senders_left = now < B.t_send_end && (!B.o.count || B.rate_next < B.o.count);
		if (now >= B.t_send_end || !senders_left || B.lost_peers) {
			note("sending done: %llu messages; draining", (unsigned long long)B.sent);
			B.phase = PH_DRAIN;
			B.t_drain_end = now + (int64_t)(B.o.drain * 1e9);
		}
		break;
	case PH_DRAIN:
		if (B.o.sc == SC_CHURN) {
			int busy = 0;

			for (i = 0; i < B.npeers; i++)
				busy += B.peers[i]->state >= P_CONNECTING && B.peers[i]->state <= P_CLOSING;
			if (!busy || now >= B.t_drain_end) {
				usage_end();
				B.phase = PH_DONE;
			}
			break;
		}
		if (B.o.sc == SC_QUEUE && B.bot->state == P_FREE) {
			/* every ack in: the figures are the queuing's; now the bot drains */
			if (B.acks < B.sent && now < B.t_drain_end && !B.lost_peers)
				break;
			usage_end();
			if (B.lost_peers) {
				B.phase = PH_DONE;
				break;
			}
			note("%llu acks; the bot drains", (unsigned long long)B.acks);
			B.t_bot = now;
			B.t_drain_end = now + (int64_t)(B.o.drain * 1e9);
			peer_connect(B.bot);
			break;
		}
		if (all_settled() || now >= B.t_drain_end || B.lost_peers ||
		    (B.bot && B.bot->state == P_FAILED)) {
			if (B.o.sc != SC_QUEUE)
				usage_end();
			B.phase = PH_DONE;
		}
		break;
	case PH_SAMPLE:
		if (now >= B.phase_deadline) {
			usage_end();
			B.phase = PH_DONE;
		}
		break;
	case PH_DONE:
		break;
	}
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

/* Bench CPU over the measured span, % of one core; and the gateway's. */
static void usage_fields(char *buf, size_t cap)
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
		snprintf(buf + n, cap - n, " gw_cpu=%.0f%% gw_rss_mb=%.1f gw_hwm_mb=%.1f gw_threads=%ld",
		         100.0 * gw / wall, (double)B.gw_rss1 / 1024.0, (double)B.gw_hwm / 1024.0,
		         B.gw_threads1);
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

static int report_traffic(void)
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
	usage_fields(use, sizeof(use));
	if (B.o.sc == SC_RATE) {
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
		rated = B.acks_completed;
		snprintf(extra, sizeof(extra), " drained=%llu drain_secs=%.3f drain_rate=%.0f",
		         (unsigned long long)B.delivered, dsecs,
		         dsecs > 0 ? (double)B.delivered / dsecs : 0);
	}
	printf("scenario=%s mods=%d channels=%d window=%d size=%zu msgs=%llu",
	       scenario_names[B.o.sc], B.o.mods, B.o.channels, B.o.sc == SC_RATE ? 0 : B.o.window,
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

static int report_conns(void)
{
	char use[256];
	double secs;
	int ok;

	usage_fields(use, sizeof(use));
	if (B.o.sc == SC_IDLE) {
		secs = (double)((B.t_up ? B.t_up : now_ns()) - B.t_start) / 1e9;
		ok = B.ready == B.o.mods && B.failed == 0 && !B.lost_peers;
		printf("scenario=idle mods=%d up=%d failed=%d up_secs=%.3f connect_rate=%.0f "
		       "held_secs=%.1f all_up=%s%s\n",
		       B.o.mods, B.ready, B.failed, secs, secs > 0 ? B.ready / secs : 0, B.o.sample,
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

/* ---- main ----------------------------------------------------------------- */

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

int main(int argc, char **argv)
{
	struct epoll_event ev[EVENTS_MAX];
	struct sigaction sa;
	int64_t now, wait_ns;
	int n, i, rc;

	if (parse_args(argc, argv) < 0)
		return EXIT_USAGE;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* precise sleeps for the rate scenario's pacing */
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

	while (B.phase != PH_DONE) {
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
