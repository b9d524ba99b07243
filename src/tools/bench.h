/*
 * bench.h - homestead-bench's private header: the state of the run that the
 * five files share, and what each offers the others.
 *
 *   bench.c           options, set-up, the event loop, main
 *   bench_peer.c      peers: connect, upgrade, handshake, buffered output,
 *                     frames in, the gateway's JSON scanned
 *   bench_scenario.c  the scenarios: what is sent when, the phases, what
 *                     each ack and delivery counts for
 *   bench_thread.c    tflood and trate: the same peers as real clients are
 *                     written, a thread (or two) and a blocking socket each
 *   bench_report.c    the gateway's figures from /proc, the one-line report
 *
 * One thread, nothing locked, except in tflood and trate (bench_thread.c
 * says what its threads share). B, the run, is the one global (bench.c).
 */
#ifndef GW_TOOLS_BENCH_H
#define GW_TOOLS_BENCH_H

#include <netdb.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

#include "wsc.h"

#define EXIT_FAILED      1    /* ran, but not every message arrived exactly once */
#define EXIT_USAGE       2
#define EXIT_CONNECT     3    /* could not set up (refused key, gateway down) */

#define NS_PER_S         1000000000LL
#define PEER_TIMEOUT_NS  (5 * NS_PER_S)   /* connect + upgrade + handshake, or close */

enum scenario { SC_FLOOD, SC_FANOUT, SC_RATE, SC_IDLE, SC_CHURN, SC_BIG, SC_QUEUE, SC_TFLOOD,
                SC_TRATE };
extern const char *const scenario_names[];   /* by enum scenario */

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

/* rate and trate: latency samples are taken; tflood and trate: threads. */
#define SC_IS_RATE(sc)     ((sc) == SC_RATE || (sc) == SC_TRATE)
#define SC_IS_THREADED(sc) ((sc) == SC_TFLOOD || (sc) == SC_TRATE)

/* One message a mod sent. In tflood and trate, sent_ns is written by the
 * mod's sender and read by the bot's thread (atomically), got is the bot
 * thread's, acked the mod's reader's. */
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

/* The run: B, one per process (bench.c). */
struct bench {
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
};

extern struct bench B;

/* ---- bench.c -------------------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t now_ns(void);
/* Progress on stderr, with -v only. */
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Counts an error; the first is said on stderr and kept for the report. */
void error_once(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The next number of a cheap generator (masks; no need to be secret). */
uint32_t rng_next(void);
/* The signal that stopped the run (SIGINT, SIGTERM), else 0. */
int stop_requested(void);

/* ---- bench_peer.c --------------------------------------------------------- */

/* What a frame from the gateway says; spans borrowed from its text. */
struct reply {
	const char *status, *id, *content, *code, *message;
	size_t slen, idlen, clen, mlen;
	int duplicate;
};

/* Scans one text message from the gateway into *r: 0, or -1 if it is not a
 * JSON object. Thread-safe. */
int reply_scan(const char *s, size_t len, struct reply *r);

/* A peer with an input buffer of in_cap bytes, not connected; NULL if out
 * of memory. peer_free closes and frees it (NULL is fine). */
struct peer *peer_new(uint32_t idx, enum role role, size_t in_cap);
void peer_free(struct peer *p);
/* Starts a non-blocking connect: 0, or -1 (p failed). */
int peer_connect(struct peer *p);
/* Ends p's connection as failed, with a reason for the report. */
void peer_fail(struct peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Checks the upgrade answer h for p: a good 101 is taken out of p's input
 * (0); otherwise why says what is wrong (-1). */
int upgrade_take(struct peer *p, const struct wsc_http *h, char *why, size_t cap);
/* p's JSON handshake (mod or bot) into buf: its length. */
int handshake_text(const struct peer *p, char *buf, size_t cap);
/* Room for `more` bytes at the end of p's output: 0, or -1 out of memory. */
int out_reserve(struct peer *p, size_t more);
/* Puts p on the list flush_dirty sends from. */
void mark_dirty(struct peer *p);
/* One send per peer with output; what is left waits for EPOLLOUT. */
void flush_dirty(void);
/* An epoll event for p: connect done, bytes in, room to send. */
void on_event(struct peer *p, uint32_t ev);

/* ---- bench_scenario.c ----------------------------------------------------- */

/* Parses a msg_id "PREFIX.<a>.<seq>" where a is digits or "b". Returns 0 and
 * the parts (a = -1 for "b"), -1 if the id is not ours. Thread-safe. */
int msg_id_parse(const char *id, size_t len, long *a, uint64_t *seq);
/* The most bytes message_encode writes. */
size_t message_max(void);
/* Encodes p's message number seq as one masked text frame into out
 * (message_max() bytes); returns its length. Thread-safe (reads B.o only). */
size_t message_encode(const struct peer *p, uint64_t seq, unsigned char *out, uint32_t mask);

/* An ack (status) or a delivery (content) for p, from the gateway. */
void on_ack(struct peer *p, const char *id, size_t idlen, const char *status, size_t slen,
            int duplicate);
void on_delivery(struct peer *p, const char *id, size_t idlen, size_t content_len, int64_t now);
/* Peers brought up before the run (queue: the mods; its bot comes later). */
int setup_peers(void);
/* One pass of the scenario: connects, sends what is due, moves the phase. */
void tick(int64_t now);

/* ---- bench_thread.c ------------------------------------------------------- */

/* Runs tflood or trate from set-up to report, with B's peers already made
 * (bench.c's setup). Returns the exit status (report_traffic's, or
 * EXIT_CONNECT). */
int thread_run(void);

/* ---- bench_report.c ------------------------------------------------------- */

/* Start and end of the measured span: own rusage, the gateway's /proc. */
void usage_begin(void);
void usage_end(void);
/* The one-line report on stdout; 0 if everything arrived exactly once (all
 * connections were fine), else EXIT_FAILED. */
int report_traffic(void);
int report_conns(void);

#endif
