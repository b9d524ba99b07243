/*
 * chaos.c - `make chaos`: a black-box check of the gateway's promise "a
 * message the gateway acknowledged is never lost, never doubled, and arrives
 * in order" (SPEC §7, §7a), under kill -9, SIGTERM, resets, stalled readers
 * and mods that leave and come back.
 *
 * DESIGN. One process plays every peer and the operator.
 * - Gateway control (main thread): test/harness.c starts the real binary on
 *   a durable store (sync = full) with short liveness timeouts, kills and
 *   restarts it on the same port. Every stop moves the gateway's generation
 *   on; a connection remembers the generations it may belong to, which is
 *   how a duplicate across a kill -9 is told from any other.
 * - Chaos scheduler (main thread): every event (kill -9, SIGTERM, reset,
 *   pause, leave) and its time is drawn from the seed before anything
 *   starts, so one seed is one schedule. Peers get their orders through an
 *   atomic command slot.
 * - Peers: one thread each (6 mods on 3 channels, 1 bot) on a blocking
 *   socket, one frame per send, as real mods and bots are. A peer is a
 *   sender (each message has a unique msg_id and is resent after every
 *   reconnect until it is acked) and a receiver (it resumes with `since`,
 *   drops a seq it already processed, and records every message it
 *   processes, with the connection it came on).
 * - Calm phase and checker (main thread): chaos stops, everyone catches up
 *   (bounded), the peers are joined, and the checker reads their records
 *   (no locks needed then) and prints one summary block.
 * Threads share atomics only (the command slots, each message's acked
 * flag and delivered mask, which the calm phase polls, the generation, the
 * stalled peers), and the table of epoch strings under its lock.
 *
 * WHAT FAILS THE RUN (SPEC §7a; acked = completed or queued, a duplicate
 * ack too):
 * - lost: an acked mod message the bot never processed, or an acked bot
 *   message no mod of its channel processed (deliveries missing at a mod
 *   connected all the time the message was being accepted are reported
 *   too, as information);
 * - duplicates_other: one recipient processed a msg_id twice (after the seq
 *   filter), and no kill -9 lies between the two connections it came on;
 * - order_violations: a new msg_id at a seq not above the last processed
 *   (same epoch and stream), or one sender's messages processed out of the
 *   order of their acks;
 * - gaps: seqs jumped over within an epoch and stream (after a mod's first
 *   message; a to-bot stream from seq 1), plus "missed" of resumed:false;
 * - unacked messages after the calm phase, misrouted messages.
 * A gateway without seq/epoch is still checked by msg_id: loss,
 * duplicates and per-sender order need no seq.
 *
 * It talks to 127.0.0.1 only, on a port below 32768: outside the ephemeral
 * range, so none of our own client sockets can hold the port while the
 * gateway is down. Exit: 0 pass, 1 the promise was broken, 2 set-up error,
 * 3 watchdog.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "harness.h"
#include "wsc.h"
#include "wsclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CHAOS_MODS      6
#define CHAOS_CHANNELS  3                     /* two mods on each */
#define CHAOS_BOT       CHAOS_MODS            /* the bot's peer index */
#define CHAOS_PEERS     (CHAOS_MODS + 1)
#define CHAOS_KEY       "chaos-key"
#define MSG_MAX         4096     /* messages one sender makes, at most */
#define REC_MAX         16384    /* processings one recipient records, at most */
#define CONN_MAX        1024     /* connections of one peer */
#define GEN_MAX         64       /* gateway incarnations */
#define EVENT_MAX       64
#define EPOCH_MAX       32
#define CONTENT_MAX     16000    /* an ordinary message's content, at most */
/*
 * A paused reader must fill every buffer on its way within its pause, or
 * the gateway never sees a stalled write: our receive buffer (small), the
 * gateway's kernel send buffer (autotuned from the segment size and the
 * congestion window: with 64 KB loopback segments megabytes, with 1 KB
 * segments about a megabyte), then the gateway's own output. So segments
 * are small, and a stalled peer gets heavy messages while it does not read.
 */
#define RCVBUF_BYTES    4096
#define MSS_BYTES       1024
#define HEAVY_BOT       65536    /* content of a bot message to a stalled mod */
#define HEAVY_MOD       16384    /* content of a mod message to a stalled bot */
#define CHAOS_MS        60000    /* default length of the chaos phase */
#define CALM_MS         20000    /* bound of the calm phase */
#define DIAL_MS         1000
#define HANDSHAKE_MS    2000
#define CLOSE_WAIT_MS   500      /* a clean close waits this long for the echo */
#define SEND_TIMEOUT_S  2        /* SO_SNDTIMEO: no send blocks longer */
#define DEAD_WAIT_MS    1000     /* after a failed send, EOF is awaited this long */
#define OUTSTANDING_MAX 256      /* sent on one connection and not acked yet */

enum cmd { CMD_NONE, CMD_RESET, CMD_PAUSE, CMD_LEAVE };
enum ev_kind { EV_KILL9, EV_SIGTERM, EV_RESET, EV_PAUSE, EV_LEAVE };
enum ack { ACK_NONE, ACK_COMPLETED, ACK_QUEUED };

/* Why a connection ended: ours (reset, leave, stop) or the gateway's. */
enum end_cause { END_OPEN, END_RESET, END_LEAVE, END_STOP, END_DROP, END_KILL9, END_SIGTERM,
                 END_CLOSED, END_CAUSES };
static const char *const end_names[END_CAUSES] = {
	"none", "reset", "leave", "stop", "pause-drop", "kill9", "sigterm", "gateway-close",
};

/* Close codes the peers saw from the gateway, one slot each. */
static const int close_codes[] = { 1000, 1001, 1006, 4000, 4001, 4002, 4003, 0 };
#define CLOSE_SLOTS (sizeof close_codes / sizeof close_codes[0])

/* One message, in its sender's table. */
struct chaos_msg {
	atomic_uint delivered;   /* peers (one bit each) that processed it */
	atomic_int acked;        /* 1 once completed/queued, a duplicate ack too */
	/* The rest is the sending peer's until it is joined; channel is set
	 * before the sender's `created` count moves past it. */
	int channel;
	int size;                /* content bytes */
	int conn;                /* connection it was last sent on; -1 = due */
	int attempts;
	int64_t first_sent_ms, sent_ms, retry_ms, ack_ms;
	int gen_first, gen_last;  /* gateway generations of its first and last send */
	int status;              /* enum ack */
	int dup;                 /* the settling ack said duplicate:true */
	int rank;                /* order of its acceptance; -1 = not known */
};

/* One processed message, as its recipient recorded it. */
struct delivery {
	int sender, n;
	long long seq;           /* -1 when the frame had none */
	int epoch;               /* interned; -1 unknown */
	int conn;                /* index in the recipient's conns */
};

/* One connection of a peer, from its connected reply to its end. */
struct conn_rec {
	int64_t start_ms, end_ms;
	int gen_lo, gen_hi;      /* the gateway generations it may belong to */
	int cause;               /* enum end_cause */
	int paused;              /* the peer stopped reading on it */
};

struct peer_stats {
	int resets, pauses, leaves, dial_fails, refused;
	int rejected;            /* {"code":N} answers to a message */
	int misrouted, unknown;  /* not meant for this peer / not a msg_id of ours */
	int filtered;            /* dropped by the seq filter: processed already */
	int seq_lower;           /* a new msg_id at seq <= the last processed */
	long skipped;            /* seqs jumped over within an epoch and stream */
	long missed;             /* sum of "missed" in resumed:false replies */
	long dropped;            /* sum of "dropped" on processed messages */
	long with_seq, no_seq, epoch_changes;
	int closes[CLOSE_SLOTS]; /* close frames (1006 = none) from the gateway */
	int overflow;            /* a table was full: the check is incomplete */
};

/* A mod or the bot: its thread owns everything here but the atomics. */
struct peer {
	int idx, is_bot, channel;
	char id[32];
	uint64_t rng;            /* intervals, sizes, backoff: from the seed */
	pthread_t thread;
	atomic_int cmd, cmd_ms;  /* the scheduler's order, taken by the peer */
	atomic_int connected;
	/* connection */
	struct ws *w;
	int conn;                /* index in conns of the live one, -1 */
	int send_dead;           /* a send failed: waiting for EOF */
	int64_t pause_until, away_until, next_dial, next_send, dead_since;
	/* sender */
	struct chaos_msg *msgs;
	char *out;               /* a message's text, built here */
	atomic_int created, nacked;
	int first_due, next_rank;
	/* receiver */
	int epoch;                           /* interned, -1 unknown */
	long long last_seq[CHAOS_CHANNELS];  /* per stream; a mod has one */
	struct delivery *recs;
	int nrecs;
	struct conn_rec conns[CONN_MAX];
	int nconns;
	struct peer_stats st;
};

struct event {
	int at_ms, kind, peer, dur_ms;
};

/* What the checker found. */
struct result {
	long sent, acked, unacked, delivered, lost, lost_bot, lost_mods, missing_connected;
	long dup_kill9, dup_other, dup_resent, order, gaps;
	long lost_by[END_CAUSES], lost_completed, lost_queued;
};

/* Shared by all threads. The main thread writes; peers read. */
static struct {
	atomic_int port;          /* the gateway's port (a restart may move it) */
	atomic_int gen;           /* the gateway's generation: +1 at each stop */
	atomic_int down;          /* END_KILL9/END_SIGTERM while restarting, else 0 */
	atomic_int calm, stop;    /* phases: chaos over / peers leave */
	atomic_uint stalled;      /* peers (one bit each) paused right now */
	int gen_end[GEN_MAX];     /* how generation g ended: set before gen passes g */
	pthread_mutex_t epoch_lock;   /* protects epochs, nepochs */
	char epochs[EPOCH_MAX][80];
	int nepochs;
	int verbose;
	int64_t t0;               /* start of the chaos phase */
} run = { .epoch_lock = PTHREAD_MUTEX_INITIALIZER };

/* The gateway process and what its stops did: main thread only. */
static struct {
	struct gw_proc proc;
	int kills, sigterms, term_bad, final_rc;
	int64_t term_max_ms;
} gw;

static struct peer peers[CHAOS_PEERS];
static char filler[HEAVY_BOT + 1];

static uint64_t rng_next(uint64_t *s);
static int rng_range(uint64_t *s, int lo, int hi);
static int ms_left(int64_t deadline);
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void watchdog_fire(int sig);
static int epoch_intern(const char *v, size_t len);
static int json_str(const char *t, size_t len, const char *key, char *out, size_t cap);
static long long json_num(const char *t, size_t len, const char *key);
static int json_is(const char *t, size_t len, const char *key, enum wsc_json_type want);
static int msg_id_parse(const char *v, int *sender, int *n);
static const char *msg_name(char *out, size_t cap, int sender, int n);
static int gateway_start(const char *bin, int port);
static int gateway_bounce(int kind);
static struct ws *conn_dial(int port);
static void conn_abort(struct ws *w);
static int close_slot(int code);
static void peer_end(struct peer *p, int cause);
static void peer_resume(struct peer *p);
static int peer_gateway_cause(struct peer *p);
static int peer_connect(struct peer *p);
static void peer_close(struct peer *p, int cause);
static void peer_command(struct peer *p, int64_t now);
static int peer_frame(struct peer *p, struct ws_frame *f);
static void peer_read(struct peer *p, int64_t now);
static void *peer_main(void *arg);
static void sender_make(struct peer *p, int64_t now);
static void sender_flush(struct peer *p, int64_t now);
static void sender_ack(struct peer *p, const char *t, size_t len);
static void receiver_connected(struct peer *p, const char *t, size_t len);
static void receiver_message(struct peer *p, const char *t, size_t len);
static int receiver_since(struct peer *p, char *out, size_t cap);
static unsigned recipients_of(int sender, const struct chaos_msg *m);
static int schedule_make(uint64_t seed, int chaos_ms, struct event *ev);
static void schedule_print(uint64_t seed, const struct event *ev, int nev, int chaos_ms);
static int schedule_run(const struct event *ev, int nev, int chaos_ms);
static int calm_wait(int64_t *took_ms);
static int calm_done(void);
static void check_run(struct result *r);
static int check_recipients(struct result *r);
static int summary_print(uint64_t seed, const struct result *r, int caught_up, int64_t calm_ms);
static int peers_init(uint64_t seed);
static void usage(void);

/* ---- small helpers ------------------------------------------------------ */

/* splitmix64: tiny, and the same sequence everywhere for one seed. */
static uint64_t
rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static int
rng_range(uint64_t *s, int lo, int hi)
{
	return lo + (int)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* Time left until deadline, never negative: a negative timeout means "no
 * limit" to test/wsclient.c. */
static int
ms_left(int64_t deadline)
{
	int64_t left = deadline - now_ms();

	return left > 0 ? (int)left : 0;
}

/* A line on stderr with the run's clock, only with --verbose; one write,
 * so that the peers' lines do not interleave. */
static void
note(const char *fmt, ...)
{
	char line[256];
	va_list ap;

	if (!run.verbose)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "chaos: %6.1fs %s\n", (double)(now_ms() - run.t0) / 1000.0, line);
}

/* Every wait is bounded; this is the bound of them all. The gateway dies
 * with us (the harness's PR_SET_PDEATHSIG). */
static void
watchdog_fire(int sig)
{
	static const char msg[] = "chaos: watchdog: the run took too long, aborted\n";
	ssize_t ignored = write(2, msg, sizeof msg - 1);

	(void)sig;
	(void)ignored;
	_exit(3);
}

/* Epochs are strings; peers keep a small number for them. */
static int
epoch_intern(const char *v, size_t len)
{
	int i, id = -1;

	if (len >= sizeof run.epochs[0])
		len = sizeof run.epochs[0] - 1;
	pthread_mutex_lock(&run.epoch_lock);
	for (i = 0; i < run.nepochs && id < 0; i++)
		if (strlen(run.epochs[i]) == len && memcmp(run.epochs[i], v, len) == 0)
			id = i;
	if (id < 0 && run.nepochs < EPOCH_MAX) {
		memcpy(run.epochs[run.nepochs], v, len);
		run.epochs[run.nepochs][len] = '\0';
		id = run.nepochs++;
	}
	pthread_mutex_unlock(&run.epoch_lock);
	return id;
}

/* A top-level string member into out (escapes left as they are); 0 or -1. */
static int
json_str(const char *t, size_t len, const char *key, char *out, size_t cap)
{
	enum wsc_json_type type;
	const char *v;
	size_t vlen;

	if (wsc_json_get(t, len, key, &v, &vlen, &type) != 1 || type != WSC_JSON_STRING ||
	    vlen >= cap)
		return -1;
	memcpy(out, v, vlen);
	out[vlen] = '\0';
	return 0;
}

/* A top-level whole number member, or -1 when absent or not a number. */
static long long
json_num(const char *t, size_t len, const char *key)
{
	enum wsc_json_type type;
	const char *v;
	char num[32];
	size_t vlen;

	if (wsc_json_get(t, len, key, &v, &vlen, &type) != 1 || type != WSC_JSON_NUMBER ||
	    vlen >= sizeof num)
		return -1;
	memcpy(num, v, vlen);
	num[vlen] = '\0';
	return strtoll(num, NULL, 10);
}

/* 1 if the top-level member key is there with a value of type want. */
static int
json_is(const char *t, size_t len, const char *key, enum wsc_json_type want)
{
	enum wsc_json_type type;
	const char *v;
	size_t vlen;

	return wsc_json_get(t, len, key, &v, &vlen, &type) == 1 && type == want;
}

/* Our msg_ids are "m<peer>-<n>" (mods) and "b-<n>" (the bot). */
static int
msg_id_parse(const char *v, int *sender, int *n)
{
	char tail;

	if (sscanf(v, "m%d-%d%c", sender, n, &tail) == 2 && *sender >= 0 &&
	    *sender < CHAOS_MODS)
		return 0;
	*sender = CHAOS_BOT;
	return sscanf(v, "b-%d%c", n, &tail) == 1 ? 0 : -1;
}

/* The msg_id of message n of sender, into out. */
static const char *
msg_name(char *out, size_t cap, int sender, int n)
{
	if (sender == CHAOS_BOT)
		snprintf(out, cap, "b-%d", n);
	else
		snprintf(out, cap, "m%d-%d", sender, n);
	return out;
}

/* ---- gateway process control (main thread) ------------------------------ */

/*
 * Writes the run's ini and starts the gateway. The store is durable
 * (sync = full) so that acked messages survive kill -9; queues and dedup
 * windows are large so that no legitimate overwrite or forgotten msg_id
 * looks like a loss or a duplicate; the timeouts are short so that dead
 * and stalled peers are noticed within the run.
 */
static int
gateway_start(const char *bin, int port)
{
	char ini[1024];

	snprintf(ini, sizeof ini,
	         "[gateway]\nlisten = 127.0.0.1\nhttp_port = %d\napi_key = " CHAOS_KEY "\n"
	         "queue_max = 100000\nqueue_bytes_max = 256\ndedup_window = 100000\n"
	         "handshake_timeout = 5\nping_interval = 1\nread_timeout = 3\n"
	         "write_timeout = 1\nbot_probe_timeout = 1\n"
	         "[store]\npath = gw.db\nsync = full\n"
	         "[log]\nlevel = info\ndirectory = logs\n", port);
	setenv("GW_BIN", bin, 1);
	if (gw_start_ini(&gw.proc, ini) < 0)
		return -1;
	atomic_store(&run.port, gw.proc.port);
	return 0;
}

/* Stops the gateway (kill -9 or SIGTERM) and starts it again on the same
 * store and port at once. 0, or -1 if it would not come back. */
static int
gateway_bounce(int kind)
{
	int g = atomic_load(&run.gen), rc, end;
	int64_t t = now_ms();

	atomic_store(&run.down, kind == EV_KILL9 ? END_KILL9 : END_SIGTERM);
	rc = gw_stop(&gw.proc, kind == EV_KILL9 ? SIGKILL : SIGTERM, 6000);
	end = END_KILL9;
	if (kind == EV_SIGTERM) {
		gw.sigterms++;
		if (now_ms() - t > gw.term_max_ms)
			gw.term_max_ms = now_ms() - t;
		if (rc != 0)
			gw.term_bad++;
		/* a SIGTERM that had to end in SIGKILL is a kill -9 for the check */
		if (rc >= 0)
			end = END_SIGTERM;
	} else {
		gw.kills++;
	}
	if (g < GEN_MAX)
		run.gen_end[g] = end;
	atomic_store(&run.gen, g + 1);
	note("gateway %s (exit %d), restarting", kind == EV_KILL9 ? "killed -9" : "SIGTERMed", rc);
	if (gw_restart(&gw.proc) < 0)
		return -1;
	atomic_store(&run.port, gw.proc.port);
	atomic_store(&run.down, 0);
	return 0;
}

/* ---- connections -------------------------------------------------------- */

/*
 * Opens a websocket to the gateway as a real client does, with the options
 * the chaos needs set before connect() (the window and the segment size are
 * negotiated in the handshake), and wraps it in a
 * struct ws so that test/wsclient.c reads and writes its frames. The
 * upgrade is src/tools/wsc.c's. Returns the ws or NULL.
 */
static struct ws *
conn_dial(int port)
{
	struct timeval tv = { SEND_TIMEOUT_S, 0 };
	struct sockaddr_in sa;
	struct pollfd pfd;
	struct wsc_url u;
	struct wsc_http h;
	struct ws *w = NULL;
	char url[64], key[WSC_KEY_LEN + 1], accept[WSC_ACCEPT_LEN + 1], req[1024];
	const char *why;
	int64_t deadline = now_ms() + DIAL_MS;
	int fd, one = 1, rcvbuf = RCVBUF_BYTES, mss = MSS_BYTES, err = 0;
	enum wsc_parse pr = WSC_MORE;
	socklen_t elen = sizeof err;
	size_t len;
	ssize_t n;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return NULL;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if (errno != EINPROGRESS || poll(&pfd, 1, DIAL_MS) <= 0 ||
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err != 0)
			goto fail;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

	snprintf(url, sizeof url, "ws://127.0.0.1:%d/sync", port);
	if (wsc_url_parse(url, &u, &why) < 0)
		goto fail;
	wsc_new_key(key, accept);
	len = wsc_upgrade_request(req, sizeof req, &u, key, CHAOS_KEY);
	if (len == 0 || send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len)
		goto fail;
	if ((w = calloc(1, sizeof *w)) == NULL || (w->buf = malloc(8192)) == NULL)
		goto fail;
	w->fd = fd;
	w->cap = 8192;
	while ((pr = wsc_http_parse((char *)w->buf, w->len, accept, &h)) == WSC_MORE) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (w->len == w->cap || poll(&pfd, 1, ms_left(deadline)) <= 0)
			goto fail;
		n = recv(fd, w->buf + w->len, w->cap - w->len, 0);
		if (n <= 0)
			goto fail;
		w->len += (size_t)n;
	}
	if (pr != WSC_DONE || h.status != 101 || !h.accept_ok || !h.upgrade_ok)
		goto fail;
	/* frames may have come in the same read as the head */
	memmove(w->buf, w->buf + h.head_len, w->len - h.head_len);
	w->len -= h.head_len;
	w->http_status = 101;
	return w;
fail:
	if (w != NULL)
		ws_free(w);     /* closes fd */
	else
		close(fd);
	return NULL;
}

/* An abrupt end: SO_LINGER 0 makes close() send a RST, and whatever the
 * kernel held for us, read or not, is gone, as when a host drops a link. */
static void
conn_abort(struct ws *w)
{
	struct linger lg = { 1, 0 };

	setsockopt(w->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	ws_free(w);
}

static int
close_slot(int code)
{
	size_t i;

	for (i = 0; i + 1 < CLOSE_SLOTS; i++)
		if (close_codes[i] == code)
			return (int)i;
	return CLOSE_SLOTS - 1;
}

/* ---- peer: connection life --------------------------------------------- */

/* Closes the live connection's record with cause and schedules a redial. */
static void
peer_end(struct peer *p, int cause)
{
	struct conn_rec *c = &p->conns[p->conn];

	c->end_ms = now_ms();
	c->cause = cause;
	note("%s: connection %d ended: %s", p->id, p->conn, end_names[cause]);
	if (p->w != NULL)
		ws_free(p->w);
	p->w = NULL;
	p->conn = -1;
	atomic_store(&p->connected, 0);
	peer_resume(p);
	p->next_dial = now_ms() + rng_range(&p->rng, 50, 300);
}

/* Ends a pause: the peer reads again, and gets ordinary messages. */
static void
peer_resume(struct peer *p)
{
	p->pause_until = 0;
	atomic_fetch_and(&run.stalled, ~(1u << p->idx));
}

/* Why the gateway ended our connection: a restart in progress or since,
 * our own pause (dropped for write or read timeout), or a close of its own. */
static int
peer_gateway_cause(struct peer *p)
{
	int down = atomic_load(&run.down), g = p->conns[p->conn].gen_hi;

	if (down)
		return down;
	if (atomic_load(&run.gen) > g && g < GEN_MAX)
		return run.gen_end[g];
	return p->conns[p->conn].paused ? END_DROP : END_CLOSED;
}

/*
 * Dials, sends the handshake (with `since` once an epoch is known) and
 * waits for the connected reply. 0 with p->w live, or -1 (redial later).
 */
static int
peer_connect(struct peer *p)
{
	char hs[512], since[256] = "", status[16];
	struct ws_frame f;
	int gen_lo = atomic_load(&run.gen), rc = -1, i, code = 0;
	int64_t deadline;
	struct ws *w;

	if (p->nconns >= CONN_MAX) {
		p->st.overflow++;
		return -1;
	}
	if ((w = conn_dial(atomic_load(&run.port))) == NULL) {
		p->st.dial_fails++;
		return -1;
	}
	if (receiver_since(p, since, sizeof since) < 0)
		since[0] = '\0';
	if (p->is_bot)
		snprintf(hs, sizeof hs, "{\"type\":\"bot\",\"data\":{\"bot_id\":\"%s\"%s}}", p->id,
		         since);
	else
		snprintf(hs, sizeof hs, "{\"type\":\"mod\",\"data\":{\"server_id\":\"%s\","
		         "\"channel_id\":\"chan-%d\"%s}}", p->id, p->channel, since);
	i = p->nconns;
	memset(&p->conns[i], 0, sizeof p->conns[i]);
	p->w = w;
	p->conn = i;
	deadline = now_ms() + HANDSHAKE_MS;
	if (ws_send_text(w, hs) < 0)
		goto out;
	while (rc < 0 && ws_recv_frame(w, &f, ms_left(deadline)) == 0) {
		if (f.opcode == WSC_OP_PING) {
			ws_send_frame(w, 1, WSC_OP_PONG, f.data, f.len, 1, 0);
		} else if (f.opcode == WSC_OP_CLOSE) {
			ws_frame_free(&f);
			break;
		} else if (f.opcode == WSC_OP_TEXT || f.opcode == WSC_OP_BINARY) {
			if (json_num((char *)f.data, f.len, "code") > 0) {
				code = (int)json_num((char *)f.data, f.len, "code");
				ws_frame_free(&f);
				break;
			}
			if (json_str((char *)f.data, f.len, "status", status, sizeof status) == 0 &&
			    strcmp(status, "connected") == 0) {
				receiver_connected(p, (char *)f.data, f.len);
				rc = 0;
			}
		}
		ws_frame_free(&f);
	}
out:
	if (rc < 0) {
		p->st.refused++;
		note("%s: handshake failed (code %d)", p->id, code);
		ws_free(w);
		p->w = NULL;
		p->conn = -1;
		return -1;
	}
	p->nconns++;
	p->conns[i].start_ms = now_ms();
	p->conns[i].gen_lo = gen_lo;
	p->conns[i].gen_hi = atomic_load(&run.gen);
	p->send_dead = 0;
	atomic_store(&p->connected, 1);
	note("%s: connection %d up (generation %d..%d)", p->id, i, gen_lo, p->conns[i].gen_hi);
	return 0;
}

/* A clean close as a well-behaved client does it: close frame, then read
 * (and process) what still comes until the echo, for a bounded time. */
static void
peer_close(struct peer *p, int cause)
{
	int64_t deadline = now_ms() + CLOSE_WAIT_MS;
	struct ws_frame f;
	int done = 0;

	if (ws_send_frame(p->w, 1, WSC_OP_CLOSE, "\x03\xe8", 2, 1, 0) < 0)
		done = 1;
	while (!done && ws_recv_frame(p->w, &f, ms_left(deadline)) == 0) {
		if (f.opcode == WSC_OP_CLOSE)
			done = 1;
		else if (f.opcode == WSC_OP_TEXT || f.opcode == WSC_OP_BINARY)
			peer_frame(p, &f);
		ws_frame_free(&f);
	}
	peer_end(p, cause);
}

/* Carries out the scheduler's order, if any; the calm phase ends pauses
 * and absences at once. */
static void
peer_command(struct peer *p, int64_t now)
{
	int cmd = atomic_exchange(&p->cmd, CMD_NONE), ms = atomic_load(&p->cmd_ms);

	if (atomic_load(&run.calm)) {
		peer_resume(p);
		p->away_until = 0;
		return;
	}
	switch (cmd) {
	case CMD_RESET:
		if (p->w == NULL)
			break;
		p->st.resets++;
		conn_abort(p->w);
		p->w = NULL;
		peer_end(p, END_RESET);
		break;
	case CMD_PAUSE:
		if (p->w == NULL)
			break;
		p->st.pauses++;
		p->pause_until = now + ms;
		atomic_fetch_or(&run.stalled, 1u << p->idx);
		p->conns[p->conn].paused = 1;
		note("%s: stops reading for %d ms", p->id, ms);
		break;
	case CMD_LEAVE:
		p->st.leaves++;
		if (p->w != NULL)
			peer_close(p, END_LEAVE);
		p->away_until = now + ms;
		note("%s: away for %d ms", p->id, ms);
		break;
	default:
		break;
	}
}

/* Handles one frame from the gateway; returns 1 when the connection ended. */
static int
peer_frame(struct peer *p, struct ws_frame *f)
{
	const char *t = (const char *)f->data;
	char type[16];

	switch (f->opcode) {
	case WSC_OP_PING:
		ws_send_frame(p->w, 1, WSC_OP_PONG, f->data, f->len, 1, 0);
		return 0;
	case WSC_OP_CLOSE:
		p->st.closes[close_slot(f->close_code)]++;
		ws_send_frame(p->w, 1, WSC_OP_CLOSE, f->data, f->len >= 2 ? 2 : 0, 1, 0);
		return 1;
	case WSC_OP_TEXT:
	case WSC_OP_BINARY:
		break;
	default:
		return 0;
	}
	if (json_is(t, f->len, "status", WSC_JSON_STRING)) {
		sender_ack(p, t, f->len);
	} else if (json_num(t, f->len, "code") > 0) {
		/* an answer to a message of ours: it was not accepted */
		p->st.rejected++;
		sender_ack(p, t, f->len);
	} else if (json_str(t, f->len, "type", type, sizeof type) == 0 &&
	           strcmp(type, "event") != 0) {
		receiver_message(p, t, f->len);
	}
	return 0;
}

/* Reads what is there (a short wait when nothing is), unless paused. */
static void
peer_read(struct peer *p, int64_t now)
{
	struct ws_frame f;
	int i, rc, wait = (int)(p->next_send - now), ended = 0;

	if (wait < 0)
		wait = 0;
	if (wait > 50)
		wait = 50;
	if (now < p->pause_until) {
		/* a stalled reader: the gateway's output to us piles up */
		sleep_ms(wait > 0 ? wait : 1);
		return;
	}
	peer_resume(p);
	for (i = 0; i < 64 && !ended; i++) {
		rc = ws_recv_frame(p->w, &f, i == 0 ? wait : 0);
		if (rc == -1)
			break;
		if (rc != 0) {
			p->st.closes[close_slot(1006)]++;
			ended = 1;
			break;
		}
		ended = peer_frame(p, &f);
		ws_frame_free(&f);
	}
	if (!ended && p->send_dead && now - p->dead_since > DEAD_WAIT_MS)
		ended = 1;
	if (ended)
		peer_end(p, peer_gateway_cause(p));
}

/* The peer's thread: connect, take orders, send, read, until told to stop. */
static void *
peer_main(void *arg)
{
	struct peer *p = arg;
	int64_t now;

	while (!atomic_load(&run.stop)) {
		now = now_ms();
		peer_command(p, now);
		sender_make(p, now);
		if (p->w == NULL) {
			if (now < p->away_until || now < p->next_dial)
				sleep_ms(20);
			else if (peer_connect(p) < 0)
				p->next_dial = now_ms() + rng_range(&p->rng, 50, 300);
			continue;
		}
		sender_flush(p, now);
		peer_read(p, now);
	}
	if (p->w != NULL)
		peer_close(p, END_STOP);
	return NULL;
}

/* ---- sender state: owns p->msgs ----------------------------------------- */

/* New chat on its schedule, connected or not (a mod whose link is down
 * still has players talking); none once the calm phase starts. */
static void
sender_make(struct peer *p, int64_t now)
{
	int n = atomic_load(&p->created);
	struct chaos_msg *m;

	if (now < p->next_send || atomic_load(&run.calm) || n >= MSG_MAX)
		return;
	m = &p->msgs[n];
	m->channel = p->is_bot ? rng_range(&p->rng, 0, CHAOS_CHANNELS - 1) : p->channel;
	m->size = p->is_bot ? rng_range(&p->rng, 4000, CONTENT_MAX) : rng_range(&p->rng, 500, 4000);
	if (atomic_load(&run.stalled) & recipients_of(p->idx, m))
		m->size = p->is_bot ? HEAVY_BOT : HEAVY_MOD;
	m->conn = -1;
	m->rank = -1;
	atomic_store(&p->created, n + 1);
	p->next_send = now + (p->is_bot ? rng_range(&p->rng, 20, 40) : rng_range(&p->rng, 60, 140));
}

/* Sends every message not acked and not yet sent on this connection, oldest
 * first, one frame per send; a failed ack waits a little before it goes
 * again. A bounded batch, so that reading is never held up long. */
static void
sender_flush(struct peer *p, int64_t now)
{
	int n = atomic_load(&p->created), i, sent = 0, outstanding = 0;
	size_t cap = HEAVY_BOT + 512;
	struct chaos_msg *m;

	if (p->send_dead)
		return;
	while (p->first_due < n && atomic_load(&p->msgs[p->first_due].acked))
		p->first_due++;
	for (i = p->first_due; i < n && sent < 32; i++) {
		m = &p->msgs[i];
		if (atomic_load(&m->acked) || m->retry_ms > now)
			continue;
		if (m->conn == p->conn) {
			outstanding++;
			continue;
		}
		if (outstanding >= OUTSTANDING_MAX)
			break;
		if (p->is_bot)
			snprintf(p->out, cap, "{\"msg_id\":\"b-%d\",\"id\":\"chan-%d\","
			         "\"author\":{\"id\":\"user-%d\"},\"content\":\"b-%d %.*s\"}",
			         i, m->channel, i % 7, i, m->size, filler);
		else
			snprintf(p->out, cap, "{\"msg_id\":\"m%d-%d\",\"id\":\"%s\","
			         "\"destination\":{\"channel_id\":\"chan-%d\"},\"author\":{\"id\":"
			         "\"player-%d\"},\"content\":\"m%d-%d %.*s\"}",
			         p->idx, i, p->id, m->channel, i % 5, p->idx, i, m->size, filler);
		if (ws_send_text(p->w, p->out) < 0) {
			p->send_dead = 1;
			p->dead_since = now;
			break;
		}
		if (m->attempts++ == 0) {
			m->first_sent_ms = now;
			m->gen_first = p->conns[p->conn].gen_lo;
		}
		m->gen_last = p->conns[p->conn].gen_hi;
		m->sent_ms = now;
		m->conn = p->conn;
		outstanding++;
		sent++;
	}
}

/* An ack (or a refusal, which counts as `failed`) for one of our messages. */
static void
sender_ack(struct peer *p, const char *t, size_t len)
{
	char id[64], status[16];
	int sender, n;
	struct chaos_msg *m;

	if (json_str(t, len, "msg_id", id, sizeof id) < 0 || msg_id_parse(id, &sender, &n) < 0 ||
	    sender != p->idx || n < 0 || n >= atomic_load(&p->created)) {
		/* the connected reply, or something not ours */
		if (json_str(t, len, "status", status, sizeof status) < 0 ||
		    strcmp(status, "connected") != 0)
			p->st.unknown++;
		return;
	}
	m = &p->msgs[n];
	if (atomic_load(&m->acked))
		return;
	if (json_str(t, len, "status", status, sizeof status) < 0 || strcmp(status, "failed") == 0) {
		m->conn = -1;
		m->retry_ms = now_ms() + rng_range(&p->rng, 100, 400);
		return;
	}
	m->status = strcmp(status, "queued") == 0 ? ACK_QUEUED : ACK_COMPLETED;
	m->dup = json_is(t, len, "duplicate", WSC_JSON_TRUE);
	/* The rank is the order of acceptance only when this ack is for the
	 * one acceptance: not after a duplicate ack (it was accepted earlier,
	 * when we do not know), nor when it was sent to more than one gateway
	 * generation (a restarted gateway may accept it a second time). */
	m->rank = m->dup || m->gen_first != m->gen_last ? -1 : p->next_rank++;
	m->ack_ms = now_ms();
	atomic_store(&m->acked, 1);
	atomic_fetch_add(&p->nacked, 1);
}

/* ---- receiver state: owns p->epoch, p->last_seq, p->recs --------------- */

/* The connected reply: a new epoch resets the positions; a resume that
 * could not give everything says how much was missed. */
static void
receiver_connected(struct peer *p, const char *t, size_t len)
{
	enum wsc_json_type type;
	const char *v;
	size_t vlen;
	long long missed;
	int e, i;

	if (wsc_json_get(t, len, "epoch", &v, &vlen, &type) == 1 && type == WSC_JSON_STRING) {
		e = epoch_intern(v, vlen);
		if (e != p->epoch) {
			if (p->epoch >= 0)
				p->st.epoch_changes++;
			p->epoch = e;
			for (i = 0; i < CHAOS_CHANNELS; i++)
				p->last_seq[i] = 0;
		}
	}
	if (json_is(t, len, "resumed", WSC_JSON_FALSE) && (missed = json_num(t, len, "missed")) > 0)
		p->st.missed += missed;
}

/* The `since` member of our handshake (with its leading comma), or "" when
 * no epoch is known yet: the first connection asks for nothing. */
static int
receiver_since(struct peer *p, char *out, size_t cap)
{
	size_t o;
	int i, n;

	out[0] = '\0';
	if (p->epoch < 0)
		return 0;
	if (!p->is_bot) {
		n = snprintf(out, cap, ",\"since\":{\"epoch\":\"%s\",\"seq\":%lld}",
		             run.epochs[p->epoch], p->last_seq[0]);
		return n > 0 && (size_t)n < cap ? 0 : -1;
	}
	n = snprintf(out, cap, ",\"since\":{\"epoch\":\"%s\",\"channels\":{", run.epochs[p->epoch]);
	for (i = 0, o = (size_t)n; i < CHAOS_CHANNELS && o < cap; i++) {
		n = snprintf(out + o, cap - o, "%s\"chan-%d\":%lld", i ? "," : "", i, p->last_seq[i]);
		o += (size_t)n;
	}
	if (o + 3 > cap)
		return -1;
	memcpy(out + o, "}}", 3);
	return 0;
}

/* Who must process message m of sender: the bot for a mod's, both mods of
 * the channel for the bot's. */
static unsigned
recipients_of(int sender, const struct chaos_msg *m)
{
	return sender == CHAOS_BOT ? 3u << (2 * m->channel) : 1u << CHAOS_BOT;
}

/*
 * A routed message: the seq filter of the resume protocol (drop a seq
 * already processed in this epoch and stream), the checks that need the
 * arrival order (a new msg_id at a seq not above the last is out of order;
 * a jump over a seq is a gap), then the record.
 */
static void
receiver_message(struct peer *p, const char *t, size_t len)
{
	char id[64], chan[32], want[32];
	struct chaos_msg *m;
	int sender, n, stream;
	long long seq, dropped;
	unsigned bit = 1u << p->idx;

	if (json_str(t, len, "msg_id", id, sizeof id) < 0 || msg_id_parse(id, &sender, &n) < 0 ||
	    n < 0 || n >= atomic_load(&peers[sender].created)) {
		p->st.unknown++;
		return;
	}
	m = &peers[sender].msgs[n];
	snprintf(want, sizeof want, "chan-%d", m->channel);
	if (!(recipients_of(sender, m) & bit) || json_str(t, len, "channel_id", chan, sizeof chan) < 0 ||
	    strcmp(chan, want) != 0) {
		p->st.misrouted++;
		return;
	}
	if ((dropped = json_num(t, len, "dropped")) > 0)
		p->st.dropped += dropped;
	stream = p->is_bot ? m->channel : 0;
	seq = json_num(t, len, "seq");
	if (seq < 0) {
		p->st.no_seq++;
	} else {
		p->st.with_seq++;
		if (seq <= p->last_seq[stream]) {
			p->st.filtered++;
			if (!(atomic_load(&m->delivered) & bit))
				p->st.seq_lower++;
			return;
		}
		/* a to-bot stream has one recipient: it must see every seq; a mod
		 * may join a to-mod stream anywhere, and from then on sees all */
		if (seq > p->last_seq[stream] + 1 && (p->last_seq[stream] > 0 || p->is_bot))
			p->st.skipped += seq - p->last_seq[stream] - 1;
		p->last_seq[stream] = seq;
	}
	if (p->nrecs >= REC_MAX) {
		p->st.overflow++;
		return;
	}
	p->recs[p->nrecs++] = (struct delivery){ sender, n, seq, p->epoch, p->conn };
	atomic_fetch_or(&m->delivered, bit);
}

/* ---- chaos scheduler (main thread) -------------------------------------- */

/*
 * Draws the whole schedule from the seed: 4 or 5 kill -9 and one SIGTERM
 * spread over the phase (one per slot, jittered), 8 resets, 6 pauses of
 * 3-4 s (long enough to fill the buffers and pass write_timeout) and 4
 * mods leaving for 1-5 s, at random times and targets. Sorted by time.
 */
static int
schedule_make(uint64_t seed, int chaos_ms, struct event *ev)
{
	uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
	int n = 0, gw_events, term, slot, i, j;
	struct event tmp;

	gw_events = rng_range(&s, 4, 5) + 1;
	term = rng_range(&s, 0, gw_events - 1);
	slot = chaos_ms / (gw_events + 1);
	for (i = 0; i < gw_events; i++)
		ev[n++] = (struct event){ slot * (i + 1) + rng_range(&s, -slot / 4, slot / 4),
		                          i == term ? EV_SIGTERM : EV_KILL9, -1, 0 };
	for (i = 0; i < 8; i++)
		ev[n++] = (struct event){ rng_range(&s, 1000, chaos_ms - 2000), EV_RESET,
		                          rng_range(&s, 0, CHAOS_PEERS - 1), 0 };
	for (i = 0; i < 6; i++)
		ev[n++] = (struct event){ rng_range(&s, 1000, chaos_ms - 5000), EV_PAUSE,
		                          rng_range(&s, 0, CHAOS_PEERS - 1), rng_range(&s, 3000, 4000) };
	for (i = 0; i < 4; i++)
		ev[n++] = (struct event){ rng_range(&s, 1000, chaos_ms - 6000), EV_LEAVE,
		                          rng_range(&s, 0, CHAOS_MODS - 1), rng_range(&s, 1000, 5000) };
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && ev[j - 1].at_ms > ev[j].at_ms; j--) {
			tmp = ev[j];
			ev[j] = ev[j - 1];
			ev[j - 1] = tmp;
		}
	return n;
}

/* Plays the schedule against the clock; -1 if the gateway would not come
 * back after a stop. A progress line every 10 s keeps CI logs alive. */
static int
schedule_run(const struct event *ev, int nev, int chaos_ms)
{
	static const int cmds[] = { [EV_RESET] = CMD_RESET, [EV_PAUSE] = CMD_PAUSE,
	                            [EV_LEAVE] = CMD_LEAVE };
	int i = 0, k, next_report = 10000;
	long made, acked;
	int64_t t;

	for (;;) {
		t = now_ms() - run.t0;
		if (t >= next_report) {
			for (k = 0, made = acked = 0; k < CHAOS_PEERS; k++) {
				made += atomic_load(&peers[k].created);
				acked += atomic_load(&peers[k].nacked);
			}
			printf("chaos: %2d s: messages %ld, acked %ld, gateway stops %d\n",
			       next_report / 1000, made, acked, gw.kills + gw.sigterms);
			fflush(stdout);
			next_report += 10000;
		}
		if (i < nev && t >= ev[i].at_ms) {
			if (ev[i].kind == EV_KILL9 || ev[i].kind == EV_SIGTERM) {
				if (gateway_bounce(ev[i].kind) < 0)
					return -1;
			} else {
				atomic_store(&peers[ev[i].peer].cmd_ms, ev[i].dur_ms);
				atomic_store(&peers[ev[i].peer].cmd, cmds[ev[i].kind]);
			}
			i++;
			continue;
		}
		if (t >= chaos_ms)
			return 0;
		sleep_ms(20);
	}
}

/* Prints the schedule and a hash of it: the same seed must print the same
 * lines, whatever the machine. */
static void
schedule_print(uint64_t seed, const struct event *ev, int nev, int chaos_ms)
{
	static const char *const kinds[] = { "kill9", "sigterm", "reset", "pause", "leave" };
	uint64_t hash = 1469598103934665603ull;   /* FNV-1a */
	int i;

	for (i = 0; i < nev; i++) {
		hash = (hash ^ (uint64_t)(ev[i].at_ms * 31 + ev[i].kind * 7 + ev[i].peer)) *
		       1099511628211ull;
		hash = (hash ^ (uint64_t)ev[i].dur_ms) * 1099511628211ull;
	}
	printf("chaos: seed=%" PRIu64 " schedule=%016" PRIx64 " (%d events over %d s):", seed,
	       hash, nev, chaos_ms / 1000);
	for (i = 0; i < nev; i++) {
		printf("%s %.1fs %s", i % 6 ? "," : "\nchaos:  ", ev[i].at_ms / 1000.0,
		       kinds[ev[i].kind]);
		if (ev[i].peer >= 0)
			printf(" %s", peers[ev[i].peer].id);
		if (ev[i].dur_ms > 0)
			printf(" %.1fs", ev[i].dur_ms / 1000.0);
	}
	printf("\n");
}

/* Calm phase: no more chaos and no new messages, until everyone caught up
 * (calm_done) or CALM_MS passed. Returns 1 if they caught up. */
static int
calm_wait(int64_t *took_ms)
{
	int64_t start = now_ms();
	int done = 0;

	atomic_store(&run.calm, 1);
	while (now_ms() - start < CALM_MS && !(done = calm_done()))
		sleep_ms(100);
	*took_ms = now_ms() - start;
	return done;
}

/* Every message acked, every recipient caught up with every acked
 * message, everyone connected. Reads atomics only. */
static int
calm_done(void)
{
	int k, i, n;
	struct chaos_msg *m;

	for (k = 0; k < CHAOS_PEERS; k++) {
		n = atomic_load(&peers[k].created);
		if (!atomic_load(&peers[k].connected) || atomic_load(&peers[k].nacked) != n)
			return 0;
		for (i = 0; i < n; i++) {
			m = &peers[k].msgs[i];
			if ((atomic_load(&m->delivered) & recipients_of(k, m)) != recipients_of(k, m))
				return 0;
		}
	}
	return 1;
}

/* ---- checker (main thread, after the peers are joined) ------------------ */

/* Per recipient, from its records: duplicates (the same msg_id processed
 * twice; at a kill -9 boundary when a kill -9 ended a generation between
 * the two connections) and each sender's order (within an epoch, its
 * messages must be processed in the order their first-time acks came).
 * Returns the order violations. */
static int
check_recipients(struct result *r)
{
	static int first[CHAOS_PEERS][MSG_MAX];   /* record index + 1 */
	int k, i, g, boundary, order = 0, last_rank[CHAOS_PEERS], last_epoch[CHAOS_PEERS];
	int last_n[CHAOS_PEERS];
	char name[32], name2[32];
	struct delivery *d;
	struct chaos_msg *m;
	struct conn_rec *c1, *c2;
	struct peer *p;

	for (k = 0; k < CHAOS_PEERS; k++) {
		p = &peers[k];
		memset(first, 0, sizeof first);
		for (i = 0; i < CHAOS_PEERS; i++)
			last_rank[i] = -1, last_epoch[i] = -2, last_n[i] = -1;
		for (i = 0; i < p->nrecs; i++) {
			d = &p->recs[i];
			m = &peers[d->sender].msgs[d->n];
			if (first[d->sender][d->n] == 0) {
				first[d->sender][d->n] = i + 1;
				r->delivered++;
				if (m->rank < 0)
					continue;
				if (d->epoch == last_epoch[d->sender] && m->rank < last_rank[d->sender]) {
					if (order++ < 20 && run.verbose)
						fprintf(stderr, "chaos: order at %s: %s (rank %d, connection %d) "
						        "after %s (rank %d)\n", p->id,
						        msg_name(name, sizeof name, d->sender, d->n), m->rank,
						        d->conn, msg_name(name2, sizeof name2, d->sender,
						        last_n[d->sender]), last_rank[d->sender]);
					continue;
				}
				last_rank[d->sender] = m->rank;
				last_n[d->sender] = d->n;
				last_epoch[d->sender] = d->epoch;
				continue;
			}
			c1 = &p->conns[p->recs[first[d->sender][d->n] - 1].conn];
			c2 = &p->conns[d->conn];
			for (g = c1->gen_lo, boundary = 0; g < c2->gen_hi && g < GEN_MAX; g++)
				boundary |= run.gen_end[g] == END_KILL9;
			if (boundary) {
				r->dup_kill9++;
				continue;
			}
			/* the sender resent it to a restarted gateway, which no
			 * longer knew the msg_id: said apart, as it has its own fix */
			r->dup_resent += m->gen_last > m->gen_first;
			if (r->dup_other++ < 20 && run.verbose)
				fprintf(stderr, "chaos: duplicate at %s of %s: connections %d (generations "
				        "%d..%d, ended %s) and %d (%d..%d); sent %d times, generations "
				        "%d..%d\n", p->id, msg_name(name, sizeof name, d->sender, d->n),
				        p->recs[first[d->sender][d->n] - 1].conn, c1->gen_lo, c1->gen_hi,
				        end_names[c1->cause], d->conn, c2->gen_lo, c2->gen_hi, m->attempts,
				        m->gen_first, m->gen_last);
		}
	}
	return order;
}

/* Every sender's table against what the recipients processed: sent,
 * acked, lost (each blamed on the recipient boundary that followed it),
 * missing deliveries at mods that stayed connected; then the recipients'
 * own findings (gaps, order) and their records (check_recipients). */
static void
check_run(struct result *r)
{
	int k, i, q, cause;
	char name[32];
	unsigned need;
	int64_t end, first_end;
	struct chaos_msg *m;
	struct peer *p;

	memset(r, 0, sizeof *r);
	for (k = 0; k < CHAOS_PEERS; k++) {
		p = &peers[k];
		for (i = 0; i < atomic_load(&p->created); i++) {
			m = &p->msgs[i];
			r->sent += m->attempts > 0;
			if (!atomic_load(&m->acked)) {
				r->unacked += m->attempts > 0;
				continue;
			}
			r->acked++;
			need = recipients_of(k, m);
			/* information: a mod connected on one connection all the
			 * time the message was being accepted must have it */
			for (q = 0; k == CHAOS_BOT && !m->dup && q < CHAOS_MODS; q++) {
				if (!(need & (1u << q)) || (atomic_load(&m->delivered) & (1u << q)))
					continue;
				for (int c = 0; c < peers[q].nconns; c++) {
					end = peers[q].conns[c].cause == END_OPEN ? INT64_MAX :
					      peers[q].conns[c].end_ms;
					if (peers[q].conns[c].start_ms <= m->sent_ms && end >= m->ack_ms) {
						r->missing_connected++;
						break;
					}
				}
			}
			if (atomic_load(&m->delivered) & need)
				continue;
			/* lost: blamed on the first end of a recipient's connection
			 * after the message was first sent */
			r->lost++;
			if (k == CHAOS_BOT)
				r->lost_mods++;
			else
				r->lost_bot++;
			if (m->status == ACK_QUEUED)
				r->lost_queued++;
			else
				r->lost_completed++;
			cause = END_OPEN;
			first_end = INT64_MAX;
			for (q = 0; q < CHAOS_PEERS; q++) {
				if (!(need & (1u << q)))
					continue;
				for (int c = 0; c < peers[q].nconns; c++) {
					struct conn_rec *cr = &peers[q].conns[c];

					if (cr->cause != END_OPEN && cr->end_ms >= m->first_sent_ms &&
					    cr->end_ms < first_end) {
						first_end = cr->end_ms;
						cause = cr->cause;
					}
				}
			}
			r->lost_by[cause]++;
			if (run.verbose && r->lost <= 20)
				fprintf(stderr, "chaos: lost %s (ack %s at %.1fs), next recipient "
				        "boundary: %s\n", msg_name(name, sizeof name, k, i),
				        m->status == ACK_QUEUED ? "queued" : "completed",
				        (double)(m->ack_ms - run.t0) / 1000.0, end_names[cause]);
		}
		r->gaps += p->st.skipped + p->st.missed;
		r->order += p->st.seq_lower;
	}
	r->order += check_recipients(r);
}

/* Prints the summary block; returns the exit status (0 pass, 1 fail). */
static int
summary_print(uint64_t seed, const struct result *r, int caught_up, int64_t calm_ms)
{
	struct peer_stats t;
	int k, drops = 0, conns = 0, overflow = 0, fail;
	size_t i;

	memset(&t, 0, sizeof t);
	for (k = 0; k < CHAOS_PEERS; k++) {
		struct peer_stats *s = &peers[k].st;

		t.resets += s->resets, t.pauses += s->pauses, t.leaves += s->leaves;
		t.rejected += s->rejected, t.misrouted += s->misrouted, t.unknown += s->unknown;
		t.filtered += s->filtered, t.skipped += s->skipped, t.missed += s->missed;
		t.dropped += s->dropped, t.with_seq += s->with_seq, t.no_seq += s->no_seq;
		t.refused += s->refused, t.dial_fails += s->dial_fails;
		t.epoch_changes += s->epoch_changes;
		for (i = 0; i < CLOSE_SLOTS; i++)
			t.closes[i] += s->closes[i];
		overflow += s->overflow;
		conns += peers[k].nconns;
		for (int c = 0; c < peers[k].nconns; c++)
			drops += peers[k].conns[c].cause == END_DROP;
	}
	printf("chaos: seed=%" PRIu64 " sent=%ld acked=%ld delivered=%ld lost=%ld "
	       "duplicates_kill9=%ld duplicates_other=%ld order_violations=%ld gaps=%ld "
	       "kills=%d sigterms=%d resets=%d pauses=%d drops=%d\n",
	       seed, r->sent, r->acked, r->delivered, r->lost, r->dup_kill9, r->dup_other, r->order,
	       r->gaps, gw.kills, gw.sigterms, t.resets, t.pauses, drops);
	printf("chaos: lost_to_bot=%ld lost_to_mods=%ld (acked completed=%ld queued=%ld) "
	       "missing_while_connected=%ld unacked=%ld duplicates_other_resent_after_restart=%ld "
	       "leaves=%d connections=%d\n", r->lost_bot, r->lost_mods, r->lost_completed,
	       r->lost_queued, r->missing_connected, r->unacked, r->dup_resent, t.leaves, conns);
	printf("chaos: lost by the recipient boundary that followed:");
	for (k = 0; k < END_CAUSES; k++)
		printf(" %s=%ld", end_names[k], r->lost_by[k]);
	printf("\nchaos: seq=%s filtered=%d skipped=%ld missed=%ld epoch_changes=%ld "
	       "dropped_reported=%ld rejected=%d misrouted=%d unknown=%d refused=%d\n",
	       t.with_seq > 0 ? (t.no_seq > 0 ? "partly" : "yes") : "no", t.filtered, t.skipped,
	       t.missed, t.epoch_changes, t.dropped, t.rejected, t.misrouted, t.unknown,
	       t.refused);
	printf("chaos: closes from the gateway:");
	for (i = 0; i < CLOSE_SLOTS; i++)
		printf(" %s%d=%d", close_codes[i] == 1006 ? "eof/" : "", close_codes[i],
		       t.closes[i]);
	printf(" (0=other)\nchaos: calm phase %.1f s, caught up: %s; SIGTERM exits not 0 "
	       "within 6 s: %d (slowest %.1f s); final stop exit %d\n", (double)calm_ms / 1000.0,
	       caught_up ? "yes" : "no", gw.term_bad, (double)gw.term_max_ms / 1000.0,
	       gw.final_rc);
	fail = r->lost || r->dup_other || r->order || r->gaps || r->unacked || t.misrouted ||
	       overflow;
	if (fail)
		printf("chaos: FAIL:%s%s%s%s%s%s%s\n", r->lost ? " lost" : "",
		       r->dup_other ? " duplicates_other" : "", r->order ? " order_violations" : "",
		       r->gaps ? " gaps" : "", r->unacked ? " unacked" : "",
		       t.misrouted ? " misrouted" : "", overflow ? " table_overflow" : "");
	else
		printf("chaos: PASS\n");
	return fail ? 1 : 0;
}

/* ---- main: set-up, chaos, calm, stop, check ----------------------------- */

/* The peers before their threads start: ids, channels, tables, and a
 * random stream each from the seed. -1 if out of memory. */
static int
peers_init(uint64_t seed)
{
	struct peer *p;
	int i;

	for (i = 0; i < HEAVY_BOT; i++)
		filler[i] = (char)('a' + i % 26);
	for (i = 0; i < CHAOS_PEERS; i++) {
		p = &peers[i];
		p->idx = i;
		p->is_bot = i == CHAOS_BOT;
		p->channel = i / 2;
		p->conn = -1;
		p->epoch = -1;
		p->rng = seed * 1000003u + (uint64_t)i;
		if (p->is_bot)
			snprintf(p->id, sizeof p->id, "chaos-bot");
		else
			snprintf(p->id, sizeof p->id, "srv-%d-%d", p->channel, i % 2);
		p->msgs = calloc(MSG_MAX, sizeof *p->msgs);
		p->recs = calloc(REC_MAX, sizeof *p->recs);
		p->out = malloc(HEAVY_BOT + 512);
		if (p->msgs == NULL || p->recs == NULL || p->out == NULL)
			return -1;
	}
	return 0;
}

static void
usage(void)
{
	fprintf(stderr, "usage: chaos --gateway BIN [--seed N] [--port N] [--seconds S] "
	        "[--verbose]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct event ev[EVENT_MAX];
	struct result res;
	const char *bin = NULL;
	uint64_t seed = 1;
	int i, nev, port = 0, chaos_ms = CHAOS_MS, caught_up = 0, rc, status;
	int64_t calm_ms = 0;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--gateway") == 0 && i + 1 < argc)
			bin = argv[++i];
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
			port = atoi(argv[++i]);
		else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			chaos_ms = atoi(argv[++i]) * 1000;
		else if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0)
			run.verbose = 1;
		else
			usage();
	}
	if (bin == NULL || chaos_ms < 15000 || chaos_ms > 120000)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, watchdog_fire);
	alarm((unsigned)(chaos_ms + CALM_MS) / 1000 + 60);

	if (peers_init(seed) < 0)
		return 2;
	nev = schedule_make(seed, chaos_ms, ev);
	schedule_print(seed, ev, nev, chaos_ms);

	for (i = 0, rc = -1; i < 3 && rc < 0; i++) {
		int try_port = port > 0 ? port : gw_free_port();

		if (try_port < 0 || (rc = gateway_start(bin, try_port)) < 0)
			gw_cleanup(&gw.proc);
		if (port > 0)
			break;
	}
	if (rc < 0) {
		fprintf(stderr, "chaos: the gateway did not start\n");
		return 2;
	}
	printf("chaos: gateway on 127.0.0.1:%d, folder %s\n", gw.proc.port, gw.proc.dir);

	run.t0 = now_ms();
	for (i = 0; i < CHAOS_PEERS; i++)
		if (pthread_create(&peers[i].thread, NULL, peer_main, &peers[i]) != 0)
			return 2;
	rc = schedule_run(ev, nev, chaos_ms);
	if (rc == 0)
		caught_up = calm_wait(&calm_ms);
	atomic_store(&run.stop, 1);
	for (i = 0; i < CHAOS_PEERS; i++)
		pthread_join(peers[i].thread, NULL);
	gw.final_rc = gw_stop(&gw.proc, SIGTERM, 6000);

	check_run(&res);
	status = summary_print(seed, &res, caught_up, calm_ms);
	if (rc < 0) {
		printf("chaos: FAIL: the gateway did not come back after a stop\n");
		status = 2;
	}
	if (status == 0)
		gw_cleanup(&gw.proc);
	else
		printf("chaos: the gateway's folder is kept: %s\n", gw.proc.dir);
	return status;
}
