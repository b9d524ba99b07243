/*
 * conn.h - one websocket peer: its socket, its output and its liveness.
 *
 * Frames are never written with blocking calls. conn_queue_*() appends a
 * complete frame to the peer's output buffer and conn_flush() sends what the
 * socket takes right now (MSG_DONTWAIT); the rest waits for EPOLLOUT on the
 * I/O thread (conn_loop_*). So a slow or stuck peer costs memory, bounded by
 * GW_OUT_MAX, and time only for itself: after write_timeout without progress
 * the housekeeping tick aborts it. No frame is ever left half-written on a
 * live connection: a peer is either drained or dropped.
 *
 * Lifetime: a conn is created when /sync is requested (before the upgrade),
 * attached to its socket when the upgrade completes, and detached in the
 * websocket close handler - from then on nobody touches the socket, which
 * CivetWeb closes and reuses after that. References keep the object alive
 * past that point; the last unref hands it to the I/O thread, which frees it
 * between two epoll_wait calls so a pending event never sees freed memory.
 *
 * Every function here is thread-safe unless it says otherwise.
 */
#ifndef GW_CONN_H
#define GW_CONN_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include "protocol.h"

#define GW_OUT_MAX ((size_t)64 << 20) /* pending output past which a peer is dropped */

enum gw_conn_state {
	GW_CONN_NEW,      /* HTTP request seen, not upgraded yet */
	GW_CONN_OPEN,     /* websocket open, waiting for the handshake */
	GW_CONN_READY,    /* handshake done: routable */
	GW_CONN_CLOSING,  /* close frame queued; waiting for the peer */
	GW_CONN_DEAD,     /* detached from its socket */
};

enum gw_key_kind { GW_KEY_SHARED, GW_KEY_MOD, GW_KEY_BOT };

struct gw_mark;           /* a routed message inside the output buffer */
struct gw_defer;          /* flushes a reader thread holds back, see below */

struct gw_conn {
	pthread_mutex_t lock;  /* protects the fields marked (L) */
	int refs;              /* atomic */
	uint64_t id;           /* for logs */
	char remote[64];       /* "addr:port", set before attach */
	enum gw_key_kind key;  /* which key opened it */

	/* (L) socket and output */
	enum gw_conn_state state;
	int fd;
	unsigned char *out;          /* being sent by the flusher */
	size_t out_len, out_sent, out_cap;
	unsigned char *pend;         /* appended to meanwhile */
	size_t pend_len, pend_cap;
	uint64_t appended, sent_total;   /* stream positions, bytes */
	int flushing, again, shut_wr;    /* a thread is sending; look again; FIN when drained */
	pthread_cond_t idle;         /* signalled when flushing ends */
	struct gw_mark *marks;
	size_t mark_head, mark_len, mark_cap;
	int64_t write_progress_ms;   /* monotonic: last progress or when output began */
	int64_t close_deadline_ms;   /* monotonic: abort if still open then (0 = none) */

	/* liveness, monotonic ms (atomic) */
	int64_t created_ms, last_seen_ms, last_ping_ms;
	uint64_t pongs;       /* pongs received (atomic): a probe waits for it to move */

	/* identity: written once by the reader thread before the conn becomes
	 * READY (under the registry lock), read-only afterwards */
	struct gw_handshake hs;

	/* reader thread only */
	int joined;           /* handshake accepted */
	double tokens;        /* rate_limit bucket: messages that may still pass */
	int64_t tokens_ms;    /* when it was last refilled (monotonic) */
	const char *why;      /* atomic: why it is closing (static text), see conn_set_why */
	struct gw_defer *defer;  /* flushes held back during a burst (NULL until used) */
	/* reader thread only: a fragmented message being reassembled */
	unsigned char *rx;
	size_t rx_len, rx_cap;
	int rx_opcode;        /* 0 = none in progress */

	/* registry lock: links and registration */
	struct gw_conn *prev, *next;     /* all conns */
	struct gw_conn *next_free;       /* the I/O thread's graveyard */
	struct gw_conn *chan_next;       /* mods of one channel */
	struct gw_channel *channel;      /* registered mod: its channel */
	int registered;
};

/* Records why c is closing, for the disconnect log line: the first reason
 * given wins. Thread-safe. */
static inline void conn_set_why(struct gw_conn *c, const char *why)
{
	const char *none = NULL;

	__atomic_compare_exchange_n(&c->why, &none, why, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline const char *conn_why(struct gw_conn *c)
{
	const char *why = __atomic_load_n(&c->why, __ATOMIC_ACQUIRE);

	return why ? why : "connection lost";
}

/* New conn with one reference (the caller's), state NEW. NULL on ENOMEM. */
struct gw_conn *conn_new(void);
void conn_ref(struct gw_conn *c);
void conn_unref(struct gw_conn *c);   /* NULL is fine */

/* Binds c to its upgraded socket fd (non-blocking) and watches it for
 * EPOLLOUT. Returns 0, or -1 (then c is not usable). */
int conn_attach(struct gw_conn *c, int fd);

/* Appends one frame (opcode 1 text, 2 binary, 8 close, 9 ping, 10 pong).
 * Returns 0, or -1 if c is closing/dead or its output is over GW_OUT_MAX
 * (then the peer is aborted). Does not send: call conn_flush(). */
int conn_queue(struct gw_conn *c, int opcode, const void *data, size_t len);

/* Appends a routed message frame carrying `dropped`; takes its own
 * reference on m until the frame has been sent. Returns 0 or -1 as above. */
int conn_queue_msg(struct gw_conn *c, struct gw_msg *m, uint64_t dropped,
                   int64_t now_real_ms);

/* Sends what the socket takes now. Never blocks. On a socket error the peer
 * is aborted (its reader wakes up and closes it). */
void conn_flush(struct gw_conn *c);

/*
 * Held-back flushes. A reader thread handling a burst of frames from its
 * peer (several already in its read buffer) appends acks and routed frames
 * to other conns but flushes them once, after the burst's last frame: one
 * send per peer per burst instead of one per frame. A gw_defer belongs to
 * one reader thread; it holds a reference on each conn in it.
 */
#define GW_DEFER_MAX 64

struct gw_defer {
	size_t n;
	struct gw_conn *v[GW_DEFER_MAX];          /* in the order added */
	struct gw_conn *slot[2 * GW_DEFER_MAX];   /* the same, hashed: no duplicates */
};

/* Adds c (once) to d; flushes everything in d first if d is full. */
void conn_defer(struct gw_defer *d, struct gw_conn *c);

/* Flushes every conn in d and empties it. */
void conn_flush_deferred(struct gw_defer *d);

/* conn_queue + conn_flush. */
int conn_send(struct gw_conn *c, int opcode, const void *data, size_t len);

/* Starts closing: queues a close frame (code, reason), flushes, half-closes
 * the socket and gives the peer `grace_ms` to answer before aborting. Safe
 * from any thread; a no-op if already closing. code 0 = no close frame. */
void conn_close(struct gw_conn *c, int code, const char *reason, int grace_ms);

/* Called once by the websocket close handler: the socket is no longer
 * ours. Returns the routed messages the peer had not fully taken, oldest
 * first, as a malloc'd array the caller owns (with their references), and
 * their count in *n (the array may be NULL when *n is 0). */
struct gw_msg **conn_detach(struct gw_conn *c, size_t *n);

/* Housekeeping for one conn, called by the tick, under one lock: aborts it
 * when its output made no progress for write_timeout_ms (returns 1) or its
 * close grace expired (returns 2), else returns 0; frees its output buffers
 * when it has been quiet for 2 s; tells its state. */
int conn_housekeep(struct gw_conn *c, int64_t now, int64_t write_timeout_ms,
                   enum gw_conn_state *state);


/* The I/O thread: waits for writable sockets, frees released conns, and
 * calls tick(now) every tick_ms. */
int conn_loop_start(void (*tick)(int64_t now_mono), int tick_ms);
void conn_loop_stop(void);

/* Hands c's place to a successor: returns the routed messages c had not
 * fully sent (oldest first, references move to the caller; *n their count)
 * so the successor can deliver them, then closes c - with a close frame
 * `code` if its output was drained, else at once (it is not keeping up).
 * After this c sends no more routed messages. */
struct gw_msg **conn_takeover(struct gw_conn *c, int code, const char *reason, size_t *n);

#endif
