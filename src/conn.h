/*
 * conn.h - one websocket peer: its socket, its output and its liveness.
 *
 * Frames are never written with blocking calls. conn_queue_*() appends a
 * complete frame to the peer's output buffer and conn_flush() sends what the
 * socket takes right now (MSG_DONTWAIT); the rest waits for EPOLLOUT on the
 * I/O thread (conn_loop_*). So a slow or stuck peer costs memory, bounded by
 * out_max, and time only for itself: after write_timeout without progress
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

#define GW_OUT_MIN ((size_t)64 << 20) /* the least pending output a peer may have */
#define GW_FEED_LOW ((size_t)1 << 20) /* a backlog is rendered while less is pending */
#define GW_CLOSE_GRACE_MS 1000        /* a closing peer's time to answer */
#define GW_PACE_STALL_MS 250          /* a recipient that took nothing this long is not waited for */

/* WebSocket opcodes (RFC 6455 5.2). */
enum gw_opcode {
	GW_OP_CONT = 0,
	GW_OP_TEXT = 1,
	GW_OP_BINARY = 2,
	GW_OP_CLOSE = 8,
	GW_OP_PING = 9,
	GW_OP_PONG = 10,
};

/* Close codes the gateway sends (RFC 6455 7.4.1, SPEC 8a); README has the
 * table, with whether a client should reconnect after each. */
enum gw_close_code {
	GW_CLOSE_NONE = 0,           /* conn_close: no close frame */
	GW_CLOSE_NORMAL = 1000,      /* after a handshake error frame (seed) */
	GW_CLOSE_GOING_AWAY = 1001,  /* shutdown */
	GW_CLOSE_PROTOCOL = 1002,    /* RFC 6455 violation */
	GW_CLOSE_BAD_DATA = 1007,    /* invalid UTF-8 where text is required */
	GW_CLOSE_POLICY = 1008,      /* key revoked: do not reconnect with it */
	GW_CLOSE_TOO_BIG = 1009,     /* message over body_size */
	GW_CLOSE_INTERNAL = 1011,    /* out of memory */
	GW_CLOSE_REPLACED = 4000,    /* a newer connection took this server_id */
	GW_CLOSE_READ_TIMEOUT = 4001, /* silent for read_timeout */
	GW_CLOSE_TOO_SLOW = 4002,    /* write timeout or output over its limit */
	GW_CLOSE_BOT_REPLACED = 4003, /* a new bot came; this one missed the probe */
	GW_CLOSE_RATE_LIMIT = 4004,  /* over rate_limit, persistently */
};

enum gw_conn_state {
	GW_CONN_NEW,      /* HTTP request seen, not upgraded yet */
	GW_CONN_OPEN,     /* websocket open, waiting for the handshake */
	GW_CONN_READY,    /* handshake done: routable */
	GW_CONN_CLOSING,  /* close frame queued; waiting for the peer */
	GW_CONN_DEAD,     /* detached from its socket */
};

/* What conn_housekeep found. */
enum gw_housekeep {
	GW_HK_NONE,            /* nothing: c is fine */
	GW_HK_WRITE_TIMEOUT,   /* its output made no progress for write_timeout: drop it */
	GW_HK_CLOSE_EXPIRED,   /* aborted: the peer did not finish closing in time */
	GW_HK_OVER_LIMIT,      /* its output went over out_max (or no memory): drop it */
};

enum gw_key_kind { GW_KEY_SHARED, GW_KEY_MOD, GW_KEY_BOT };

struct gw_mark;           /* a routed message inside the output buffer */
struct gw_later;          /* a routed message waiting to be rendered (backlog) */
struct gw_channel;        /* registry.c */

/*
 * One peer. Each group of fields has one owner, named in its heading;
 * nobody else writes them.
 */
struct gw_conn {
	/* set by conn_new / registry_conn_new, read-only afterwards */
	uint64_t id;           /* for logs */
	char remote[64];       /* "addr:port" */
	enum gw_key_kind key;  /* which key opened it */
	int64_t created_ms;    /* monotonic */
	int refs;              /* atomic */
	size_t out_max;        /* pending output past which it is dropped */

	/* conn.c, under lock: the socket and its output */
	pthread_mutex_t lock;
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
	struct gw_later *later;      /* the backlog: rendered as the output drains */
	size_t later_head, later_len, later_cap;
	size_t later_bytes;          /* frame bytes of its live entries (they count) */
	size_t charge;               /* what c adds to the output total */
	int over_limit;              /* an append failed: it takes nothing more */
	int64_t write_progress_ms;   /* monotonic: last progress or when output began */
	int64_t behind_since_ms;     /* monotonic: its charge went over out_max / 2 (0: under a
	                              * quarter); written under lock, atomic */
	int64_t close_deadline_ms;   /* monotonic: abort if still open then (0 = none) */
	unsigned char pong[125];     /* the latest ping's payload, answered at the next send */
	unsigned char pong_len;
	int pong_due;
	struct gw_conn *next_free;   /* the I/O thread's graveyard (loop lock) */

	/* registry_tick's (one thread) */
	int64_t last_ping_ms;  /* monotonic: the tick's last ping */

	/* any thread, atomic: liveness and the reason for closing */
	int64_t last_seen_ms;  /* monotonic: last frame from the peer (session) */
	uint64_t pongs;        /* pongs received: a bot probe waits for it to move */
	const char *why;       /* static text, see conn_set_why */

	/* session.c: written once before the conn becomes READY (under the
	 * registry lock), read-only afterwards */
	struct gw_handshake hs;

	/* registry.c, under the registry lock: links and registration */
	struct gw_conn *prev, *next;     /* all conns */
	struct gw_conn *chan_prev, *chan_next; /* mods of one channel */
	struct gw_conn *name_next;       /* registered mod: its bucket of reg.names */
	struct gw_channel *channel;      /* registered mod: its channel */
	int registered;
	uint64_t from_seq;               /* registered mod: first seq of its stream it was handed */
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

/* Appends one frame. Returns 0, or -1 if c is closing/dead or its output
 * is over its out_max (then the peer is aborted). Does not send: call
 * conn_flush(), or defer_add() (defer.h). */
int conn_queue(struct gw_conn *c, enum gw_opcode op, const void *data, size_t len);

/* 1 if c is behind but draining: over half its out_max waits for it, it
 * took bytes within GW_PACE_STALL_MS, and it has been over half for less
 * than patience_ms. Its senders may then wait for it (reader.c), so a
 * reader that is merely slower than its senders is paced, not dropped;
 * one that stops, or stays behind for patience_ms, is not waited for and
 * meets its limits. */
int conn_backed_up(struct gw_conn *c, int64_t patience_ms);

/* The patience for conn_backed_up: write_timeout, and at most half of
 * read_timeout, since a paced sender is not read (nor are its pongs). */
static inline int64_t conn_pace_patience_ms(int write_timeout_s, int read_timeout_s)
{
	int s = write_timeout_s < read_timeout_s / 2 ? write_timeout_s : read_timeout_s / 2;

	return (int64_t)s * 1000;
}

/* Appends a routed message frame carrying `dropped`; takes its own
 * reference on m until the frame has been sent. While c has a backlog, or
 * GW_FEED_LOW bytes or more are pending, the message waits unrendered in
 * the backlog (its bytes count against out_max as if rendered): a slow
 * reader's output then costs its messages once, not again as frames.
 * Returns 0 or -1 as above. */
int conn_queue_msg(struct gw_conn *c, struct gw_msg *m, uint64_t dropped,
                   int64_t now_real_ms);

/* Appends m to c's backlog: messages already held elsewhere (a queue, the
 * history), handed to c in order but rendered only as its output drains
 * below GW_FEED_LOW, so a big queue or resume is never all in memory twice
 * nor over out_max (SPEC 8a). Takes its own reference. Returns 0, or -1 if
 * c is closing or out of memory. Does not send: flush as with conn_queue. */
int conn_queue_backlog(struct gw_conn *c, struct gw_msg *m, uint64_t dropped);

/* Unsent output over all conns, bytes (rendered frames and live backlog). */
size_t conn_output_total(void);

/* What c adds to conn_output_total(). */
size_t conn_charge(struct gw_conn *c);

/* Answers a ping (payload data, len <= 125). Only the latest ping of a
 * burst is answered (RFC 6455 5.5.3): the pong goes out with the next send,
 * so a ping flood costs no memory, and one send per burst at most. Does
 * not send: flush (conn_flush, or defer_add). */
void conn_pong(struct gw_conn *c, const void *data, size_t len);

/* Sends what the socket takes now. Never blocks. On a socket error the peer
 * is aborted (its reader wakes up and closes it). */
void conn_flush(struct gw_conn *c);

/* 1 if c is closing or gone: it takes no more frames. */
int conn_closing(struct gw_conn *c);
/* 1 while c is upgraded but not handshaken (GW_CONN_OPEN). Thread-safe. */
int conn_handshaking(struct gw_conn *c);

/* The handshake is done: OPEN becomes READY. Returns 0, or -1 if c is no
 * longer open (its peer went away meanwhile). */
int conn_make_ready(struct gw_conn *c);

/* conn_queue + conn_flush. */
int conn_send(struct gw_conn *c, enum gw_opcode op, const void *data, size_t len);

/* Starts closing: queues a close frame (code, reason), flushes, half-closes
 * the socket and gives the peer `grace_ms` to answer before aborting. Safe
 * from any thread; a no-op if already closing. `code` is an enum
 * gw_close_code, or the code a peer closed with (echoed); GW_CLOSE_NONE
 * sends no close frame. */
void conn_close(struct gw_conn *c, int code, const char *reason, int grace_ms);

/* Drops a peer that does not keep up, without losing what it may still
 * read: output stops at the end of the frame being sent, a close frame
 * (code, reason) follows, then FIN; its input is read and ignored until it
 * closes, for linger_ms at most (never a reset while it may still read).
 * Returns the messages whose frames were cut off (oldest first, references
 * move to the caller; *n their count) so they can be delivered again.
 * NULL with *n 0 if c was closing already. */
struct gw_msg **conn_drop(struct gw_conn *c, int code, const char *reason, int linger_ms,
                          size_t *n);

/* Ends c at once: its socket is shut down both ways, which wakes its
 * reader (the peer may lose what it had not read yet: only for when its
 * time to close is up). */
void conn_abort(struct gw_conn *c);

/* Called once by the websocket close handler: the socket is no longer
 * ours. Returns the routed messages the peer had not fully taken, oldest
 * first, as a malloc'd array the caller owns (with their references), and
 * their count in *n (the array may be NULL when *n is 0). */
struct gw_msg **conn_detach(struct gw_conn *c, size_t *n);

/* Housekeeping for one conn, called by the tick: says when its output made
 * no progress for write_timeout_ms or went over its limit (the caller drops
 * it), aborts it when its time to close expired, frees its output buffers
 * when it has been quiet for 2 s, and tells its state. */
enum gw_housekeep conn_housekeep(struct gw_conn *c, int64_t now, int64_t write_timeout_ms,
                                 enum gw_conn_state *state);

/*
 * The I/O thread: waits for writable sockets, frees released conns, calls
 * tick(now) every tick_ms, and reports delivered messages. A routed message
 * whose frame left completely and that is `stored` (a row in the durable
 * store holds it) is handed to delivered(msgs, n) on this thread, with no
 * conn lock held, in batches: the callee owns the array's references and
 * frees nothing else (the transport never touches the store itself).
 */
int conn_loop_start(void (*tick)(int64_t now_mono),
                    void (*delivered)(struct gw_msg **msgs, size_t n), int tick_ms);

/* Stops the I/O thread after one last report of delivered messages. */
void conn_loop_stop(void);

/* Hands c's place to a successor: returns the routed messages c had not
 * fully sent (oldest first, references move to the caller; *n their count)
 * so the successor can deliver them, then closes c with `code`: the frame
 * being sent is finished, the close frame follows, the rest is discarded.
 * After this c sends no more routed messages. */
struct gw_msg **conn_takeover(struct gw_conn *c, int code, const char *reason, size_t *n);

#endif
