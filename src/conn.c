/*
 * conn.c - websocket peers: non-blocking framed output, and the I/O thread that drains slow sockets, frees released conns and
 * reports delivered messages. See conn.h for the lifetime rules this file
 * enforces. It knows frames and sockets, not channels or the store.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "log.h"

struct gw_mark {
	struct gw_msg *msg;
	uint64_t end;         /* stream position just past this message's frame */
};

struct gw_later {
	struct gw_msg *msg;
	uint64_t dropped;
	size_t live;          /* its frame's bytes if they count (later_bytes), else 0 */
};

static size_t out_total;   /* atomic: the sum of every conn's charge */

/* The I/O thread's state. */
static struct {
	int epfd;
	int wake[2];               /* pipe: wakes epoll_wait (to stop, or to report) */
	pthread_t thread;
	void (*tick)(int64_t);
	void (*delivered)(struct gw_msg **, size_t);
	int tick_ms;
	pthread_mutex_t lock;      /* protects the fields below (a leaf lock) */
	int running, stopping;
	struct gw_conn *graveyard; /* released conns, linked by next_free */
	struct gw_msg **done;      /* delivered stored messages, to report */
	size_t ndone, done_cap;
} loop = { .epfd = -1, .wake = { -1, -1 }, .lock = PTHREAD_MUTEX_INITIALIZER };

static uint64_t next_id;

struct gw_conn *conn_new(void)
{
	struct gw_conn *c = calloc(1, sizeof(*c));
	int64_t now = gw_now_mono();

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->idle, NULL);
	c->hs = (struct gw_handshake)GW_HANDSHAKE_INIT;
	c->refs = 1;
	c->id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
	c->fd = -1;
	c->state = GW_CONN_NEW;
	c->out_max = GW_OUT_MIN;
	c->created_ms = c->last_seen_ms = c->last_ping_ms = now;
	return c;
}

void conn_ref(struct gw_conn *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

static void wake_loop(void)
{
	ssize_t w = write(loop.wake[1], "x", 1);

	(void)w;   /* a full pipe wakes it as well */
}

/* m's frame left completely. If a store row holds m, the I/O thread tells
 * the registry, which deletes it: now, not when m was handed to us, so a
 * kill -9 cannot lose it. Takes over the caller's reference. */
static void delivered(struct gw_msg *m)
{
	int wake = 0;

	if (!__atomic_load_n(&m->stored, __ATOMIC_ACQUIRE)) {
		proto_msg_unref(m);
		return;
	}
	pthread_mutex_lock(&loop.lock);
	if (loop.ndone == loop.done_cap) {
		size_t cap = loop.done_cap ? 2 * loop.done_cap : 64;
		struct gw_msg **v = realloc(loop.done, cap * sizeof(*v));

		if (v) {
			loop.done = v;
			loop.done_cap = cap;
		}
	}
	if (loop.ndone < loop.done_cap) {
		wake = loop.ndone == 0 && loop.running;
		loop.done[loop.ndone++] = m;
		m = NULL;
	}
	pthread_mutex_unlock(&loop.lock);
	if (wake)
		wake_loop();
	/* ENOMEM: the row stays; a restart delivers m again (at least once) */
	proto_msg_unref(m);
}

/* Messages whose frames left completely are delivered. (L) */
static void release_marks(struct gw_conn *c)
{
	while (c->mark_head < c->mark_len && c->marks[c->mark_head].end <= c->sent_total)
		delivered(c->marks[c->mark_head++].msg);
	if (c->mark_head == c->mark_len)
		c->mark_head = c->mark_len = 0;
}

/* Frees the marks and backlog of a dead conn without counting them
 * delivered. */
static void discard_marks(struct gw_conn *c)
{
	while (c->mark_head < c->mark_len)
		proto_msg_unref(c->marks[c->mark_head++].msg);
	c->mark_head = c->mark_len = 0;
	while (c->later_head < c->later_len)
		proto_msg_unref(c->later[c->later_head++].msg);
	c->later_head = c->later_len = 0;
}

static void conn_free(struct gw_conn *c)
{
	discard_marks(c);
	free(c->later);
	free(c->marks);
	free(c->out);
	free(c->pend);
	proto_handshake_free(&c->hs);
	pthread_cond_destroy(&c->idle);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void conn_unref(struct gw_conn *c)
{
	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	/* The I/O thread may hold this pointer in an event batch: let it free
	 * the conn between two epoll_wait calls. */
	pthread_mutex_lock(&loop.lock);
	if (loop.running) {
		c->next_free = loop.graveyard;
		loop.graveyard = c;
		c = NULL;
	}
	pthread_mutex_unlock(&loop.lock);
	if (c)
		conn_free(c);
}

int conn_attach(struct gw_conn *c, int fd)
{
	/* one-shot: the I/O thread hears of this socket only after a send
	 * found it full (conn_flush re-arms it then), not after every ACK */
	struct epoll_event ev = { .events = EPOLLOUT | EPOLLONESHOT, .data.ptr = c };
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	c->fd = fd;
	c->state = GW_CONN_OPEN;
	if (loop.epfd >= 0 && epoll_ctl(loop.epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		rc = -1;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* Bytes queued and not yet sent. (L) */
static size_t pending_locked(const struct gw_conn *c)
{
	return (c->out_len - c->out_sent) + c->pend_len;
}

/* Brings c's share of the output total up to date. (L) */
static void recharge(struct gw_conn *c)
{
	size_t now = pending_locked(c) + c->later_bytes;

	if (now > c->charge)
		__atomic_add_fetch(&out_total, now - c->charge, __ATOMIC_RELAXED);
	else if (now < c->charge)
		__atomic_sub_fetch(&out_total, c->charge - now, __ATOMIC_RELAXED);
	c->charge = now;
	/* atomic: conn_backed_up looks without the lock first */
	if (now >= c->out_max / 2) {
		if (!c->behind_since_ms)
			__atomic_store_n(&c->behind_since_ms, gw_now_mono(), __ATOMIC_RELAXED);
	} else if (now < c->out_max / 4 && c->behind_since_ms) {
		__atomic_store_n(&c->behind_since_ms, 0, __ATOMIC_RELAXED);
	}
}

/* An append failed (over out_max, or no memory): c takes nothing more, so
 * what it receives has no gap, and the tick drops it (4002). (L) */
static void over_limit(struct gw_conn *c)
{
	if (!c->over_limit)
		log_event(GW_LOG_WARN, "output limit reached, dropping peer", "remote", c->remote,
		          NULL);
	c->over_limit = 1;
}

/* Makes room for `need` more bytes in `pend`, the buffer appenders fill
 * (the flusher sends from `out` meanwhile, without the lock). (L) */
static int pend_reserve(struct gw_conn *c, size_t need)
{
	size_t cap;
	unsigned char *p;

	if (c->pend_len + need <= c->pend_cap)
		return 0;
	if (pending_locked(c) + c->later_bytes + need > c->out_max)
		return -1;   /* a live backlog counts as if rendered */
	/* start small: most peers only ever get short replies, and the buffer
	 * freed after a quiet spell stays resident as a hole in the heap */
	cap = c->pend_cap ? c->pend_cap : 256;
	while (cap < c->pend_len + need)
		cap *= 2;
	p = realloc(c->pend, cap);
	if (!p)
		return -1;
	c->pend = p;
	c->pend_cap = cap;
	return 0;
}

static size_t frame_header(unsigned char *h, enum gw_opcode op, size_t len)
{
	h[0] = (unsigned char)(0x80 | (op & 0x0F));
	if (len < 126) {
		h[1] = (unsigned char)len;
		return 2;
	}
	if (len <= 0xFFFF) {
		h[1] = 126;
		h[2] = (unsigned char)(len >> 8);
		h[3] = (unsigned char)len;
		return 4;
	}
	h[1] = 127;
	for (int i = 0; i < 8; i++)
		h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

/* Shuts the socket down so the reader thread wakes up and closes. (L) */
static void abort_locked(struct gw_conn *c)
{
	if (c->state == GW_CONN_DEAD || c->fd < 0)
		return;
	c->state = GW_CONN_CLOSING;
	shutdown(c->fd, SHUT_RDWR);
}

/* Waits until no thread is sending on c's socket. (L) */
static void wait_flusher(struct gw_conn *c)
{
	while (c->flushing)
		pthread_cond_wait(&c->idle, &c->lock);
}

/* Appends a frame header and payload (and a mark for m) to `pend`. (L) */
static int queue_locked(struct gw_conn *c, enum gw_opcode op, const void *data, size_t len,
                        struct gw_msg *m, uint64_t dropped, int64_t now_real)
{
	unsigned char h[10];
	size_t hl, body;

	if (c->state == GW_CONN_CLOSING || c->state == GW_CONN_DEAD || c->fd < 0 || c->over_limit)
		return -1;
	body = m ? proto_msg_frame(m, now_real, dropped, NULL, 0) : len;
	hl = frame_header(h, op, body);
	if (m && c->mark_len == c->mark_cap) {
		size_t cap = c->mark_cap ? c->mark_cap * 2 : 16;
		struct gw_mark *p;

		if (c->mark_head > 0) {
			/* reuse the space of released marks first */
			memmove(c->marks, c->marks + c->mark_head,
			        (c->mark_len - c->mark_head) * sizeof(*c->marks));
			c->mark_len -= c->mark_head;
			c->mark_head = 0;
		} else if (!(p = realloc(c->marks, cap * sizeof(*p)))) {
			goto fail;
		} else {
			c->marks = p;
			c->mark_cap = cap;
		}
	}
	if (pend_reserve(c, hl + body + 1) < 0)
		goto fail;
	if (pending_locked(c) == 0)
		c->write_progress_ms = gw_now_mono();
	memcpy(c->pend + c->pend_len, h, hl);
	c->pend_len += hl;
	if (m) {
		/* +1: proto_msg_frame writes a NUL we do not send */
		proto_msg_frame(m, now_real, dropped, (char *)c->pend + c->pend_len, body + 1);
		c->pend_len += body;
		proto_msg_ref(m);
		c->marks[c->mark_len].msg = m;
		c->marks[c->mark_len].end = c->appended + hl + body;
		c->mark_len++;
	} else if (len) {
		memcpy(c->pend + c->pend_len, data, len);
		c->pend_len += len;
	}
	c->appended += hl + body;
	return 0;
fail:
	/* Too much waiting for this peer, or no memory: drop it rather than
	 * leave a gap in what it receives. */
	over_limit(c);
	return -1;
}

/* Appends m to the backlog; `live` if its bytes count against out_max. (L) */
static int later_add(struct gw_conn *c, struct gw_msg *m, uint64_t dropped, int live)
{
	size_t size = 0;

	if (c->state == GW_CONN_CLOSING || c->state == GW_CONN_DEAD || c->fd < 0 || c->over_limit)
		return -1;
	if (live) {
		size = proto_msg_frame(m, gw_now_real(), dropped, NULL, 0) + 10;
		if (pending_locked(c) + c->later_bytes + size > c->out_max)
			goto fail;
	}
	if (c->later_len == c->later_cap) {
		size_t cap = c->later_cap ? 2 * c->later_cap : 64;
		struct gw_later *p;

		if (c->later_head > 0) {
			memmove(c->later, c->later + c->later_head,
			        (c->later_len - c->later_head) * sizeof(*c->later));
			c->later_len -= c->later_head;
			c->later_head = 0;
		} else if (!(p = realloc(c->later, cap * sizeof(*p)))) {
			goto fail;
		} else {
			c->later = p;
			c->later_cap = cap;
		}
	}
	proto_msg_ref(m);
	c->later[c->later_len].msg = m;
	c->later[c->later_len].dropped = dropped;
	c->later[c->later_len].live = size;
	c->later_len++;
	c->later_bytes += size;
	return 0;
fail:
	over_limit(c);
	return -1;
}

/* Renders the backlog's oldest messages while little output is pending. (L) */
static void feed_locked(struct gw_conn *c)
{
	int64_t now = 0;

	while (c->later_head < c->later_len && pending_locked(c) < GW_FEED_LOW) {
		struct gw_later *l = &c->later[c->later_head];
		size_t live = l->live;

		if (!now)
			now = gw_now_real();
		c->later_bytes -= live;   /* its frame is what counts now */
		if (queue_locked(c, GW_OP_TEXT, NULL, 0, l->msg, l->dropped, now) < 0) {
			c->later_bytes += live;
			break;
		}
		proto_msg_unref(l->msg);
		c->later_head++;
	}
	if (c->later_head == c->later_len)
		c->later_head = c->later_len = 0;
}

int conn_queue(struct gw_conn *c, enum gw_opcode op, const void *data, size_t len)
{
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = queue_locked(c, op, data, len, NULL, 0, 0);
	recharge(c);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int conn_queue_msg(struct gw_conn *c, struct gw_msg *m, uint64_t dropped, int64_t now_real_ms)
{
	int rc;

	pthread_mutex_lock(&c->lock);
	if (c->later_head < c->later_len || pending_locked(c) >= GW_FEED_LOW)
		rc = later_add(c, m, dropped, 1);   /* rendered as the output drains */
	else
		rc = queue_locked(c, GW_OP_TEXT, NULL, 0, m, dropped, now_real_ms);
	recharge(c);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int conn_queue_backlog(struct gw_conn *c, struct gw_msg *m, uint64_t dropped)
{
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = later_add(c, m, dropped, 0);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int conn_backed_up(struct gw_conn *c, int64_t patience_ms)
{
	int64_t now;
	int rc;

	if (!__atomic_load_n(&c->behind_since_ms, __ATOMIC_RELAXED))
		return 0;   /* the usual case, on every message routed to c */
	now = gw_now_mono();
	pthread_mutex_lock(&c->lock);
	rc = c->behind_since_ms && c->state != GW_CONN_CLOSING && c->state != GW_CONN_DEAD &&
	     c->fd >= 0 && !c->over_limit && now - c->write_progress_ms < GW_PACE_STALL_MS &&
	     now - c->behind_since_ms < patience_ms;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

size_t conn_output_total(void)
{
	return __atomic_load_n(&out_total, __ATOMIC_RELAXED);
}

size_t conn_charge(struct gw_conn *c)
{
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->charge;
	pthread_mutex_unlock(&c->lock);
	return n;
}

/*
 * One thread at a time sends on a socket: the flusher. It swaps the
 * appenders' buffer in and sends it without holding the lock, so frames
 * appended meanwhile by other threads go out together in its next send
 * (several messages, one syscall) and nobody waits on a send but the
 * flusher. A thread that finds a flusher at work just says "again" and
 * leaves; so does the I/O thread on EPOLLOUT, which is how a socket that
 * filled up (EAGAIN) resumes.
 */
void conn_flush(struct gw_conn *c)
{
	pthread_mutex_lock(&c->lock);
	if (c->flushing) {
		c->again = 1;
		pthread_mutex_unlock(&c->lock);
		return;
	}
	c->flushing = 1;
	for (;;) {
		const unsigned char *p;
		size_t len;
		ssize_t n;
		int fd;

		if (c->out_sent == c->out_len) {
			unsigned char *t = c->out;
			size_t tcap = c->out_cap;

			feed_locked(c);
			if (c->pong_due) {
				/* at most one pong waits, whatever the pings */
				c->pong_due = 0;
				(void)queue_locked(c, GW_OP_PONG, c->pong, c->pong_len, NULL, 0, 0);
			}
			if (c->pend_len == 0 || c->fd < 0 || c->state == GW_CONN_DEAD)
				break;
			c->out = c->pend;
			c->out_cap = c->pend_cap;
			c->out_len = c->pend_len;
			c->out_sent = 0;
			c->pend = t;
			c->pend_cap = tcap;
			c->pend_len = 0;
		}
		fd = c->fd;
		p = c->out + c->out_sent;
		len = c->out_len - c->out_sent;
		c->again = 0;
		pthread_mutex_unlock(&c->lock);
		n = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		pthread_mutex_lock(&c->lock);
		if (n > 0) {
			c->out_sent += (size_t)n;
			c->sent_total += (uint64_t)n;
			c->write_progress_ms = gw_now_mono();
			release_marks(c);
			recharge(c);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct epoll_event ev = { .events = EPOLLOUT | EPOLLONESHOT, .data.ptr = c };

			if (c->again)
				continue;   /* EPOLLOUT came while we were sending */
			/* the I/O thread resumes us when the socket has room */
			if (loop.epfd >= 0 && c->fd >= 0)
				epoll_ctl(loop.epfd, EPOLL_CTL_MOD, c->fd, &ev);
			break;
		}
		/* The peer is gone: wake its reader, which tears it down. */
		abort_locked(c);
		break;
	}
	if (c->shut_wr && pending_locked(c) == 0 && c->fd >= 0 && c->state != GW_CONN_DEAD) {
		/* FIN right after the close frame: the peer answers and hangs up */
		shutdown(c->fd, SHUT_WR);
		c->shut_wr = 0;
	}
	recharge(c);
	c->flushing = 0;
	pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->lock);
}

void conn_abort(struct gw_conn *c)
{
	pthread_mutex_lock(&c->lock);
	abort_locked(c);
	pthread_mutex_unlock(&c->lock);
}

void conn_pong(struct gw_conn *c, const void *data, size_t len)
{
	if (len > sizeof(c->pong))
		return;
	pthread_mutex_lock(&c->lock);
	memcpy(c->pong, data, len);
	c->pong_len = (unsigned char)len;
	c->pong_due = 1;
	pthread_mutex_unlock(&c->lock);
}

int conn_closing(struct gw_conn *c)
{
	int closing;

	pthread_mutex_lock(&c->lock);
	closing = c->state == GW_CONN_CLOSING || c->state == GW_CONN_DEAD;
	pthread_mutex_unlock(&c->lock);
	return closing;
}

int conn_handshaking(struct gw_conn *c)
{
	int open;

	pthread_mutex_lock(&c->lock);
	open = c->state == GW_CONN_OPEN;
	pthread_mutex_unlock(&c->lock);
	return open;
}

int conn_make_ready(struct gw_conn *c)
{
	int rc = -1;

	pthread_mutex_lock(&c->lock);
	if (c->state == GW_CONN_OPEN) {
		c->state = GW_CONN_READY;
		rc = 0;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int conn_send(struct gw_conn *c, enum gw_opcode op, const void *data, size_t len)
{
	int rc = conn_queue(c, op, data, len);

	if (rc == 0)
		conn_flush(c);
	return rc;
}

/* Starts closing c (see conn_close). Returns 1 if the caller is to flush
 * after unlocking. (L) */
static int close_locked(struct gw_conn *c, int code, const char *reason, int grace_ms)
{
	unsigned char p[125];
	size_t rl = reason ? strlen(reason) : 0;

	if (c->state == GW_CONN_CLOSING || c->state == GW_CONN_DEAD || c->fd < 0)
		return 0;
	if (rl > sizeof(p) - 2)
		rl = sizeof(p) - 2;
	p[0] = (unsigned char)(code >> 8);
	p[1] = (unsigned char)code;
	if (rl)
		memcpy(p + 2, reason, rl);
	if (code != GW_CLOSE_NONE)
		queue_locked(c, GW_OP_CLOSE, p, rl + 2, NULL, 0, 0);
	recharge(c);
	c->state = GW_CONN_CLOSING;
	c->shut_wr = 1;
	c->close_deadline_ms = gw_now_mono() + grace_ms;
	return 1;
}

void conn_close(struct gw_conn *c, int code, const char *reason, int grace_ms)
{
	int flush;

	pthread_mutex_lock(&c->lock);
	flush = close_locked(c, code, reason, grace_ms);
	pthread_mutex_unlock(&c->lock);
	if (flush)
		conn_flush(c);
}

/* Moves out the messages whose frames did not leave completely: they were
 * not taken. Call with no flusher at work. (L) */
static struct gw_msg **take_after(struct gw_conn *c, uint64_t pos, size_t *n)
{
	struct gw_msg **unsent = NULL;
	size_t first, i, k = 0, total;

	release_marks(c);
	first = c->mark_head;
	while (first < c->mark_len && c->marks[first].end <= pos)
		first++;    /* kept: they leave before the cut */
	/* then the backlog, which comes after every rendered frame */
	total = (c->mark_len - first) + (c->later_len - c->later_head);
	if (total)
		unsent = malloc(total * sizeof(*unsent));
	for (i = first; i < c->mark_len; i++) {
		if (unsent)
			unsent[k++] = c->marks[i].msg;   /* the reference moves */
		else
			proto_msg_unref(c->marks[i].msg);   /* ENOMEM: lost, said below */
	}
	for (i = c->later_head; i < c->later_len; i++) {
		if (unsent)
			unsent[k++] = c->later[i].msg;
		else
			proto_msg_unref(c->later[i].msg);
	}
	if (!unsent && total)
		log_event(GW_LOG_ERROR, "out of memory, unsent messages lost", "remote", c->remote, NULL);
	c->mark_len = first;
	if (c->mark_head == c->mark_len)
		c->mark_head = c->mark_len = 0;
	c->later_head = c->later_len = 0;
	c->later_bytes = 0;
	*n = k;
	return unsent;
}

static struct gw_msg **take_unsent(struct gw_conn *c, size_t *n)
{
	return take_after(c, c->sent_total, n);
}

/* The length of our own frame whose header is at p (we write headers of
 * 2, 4 or 10 bytes, unmasked). */
static size_t frame_len(const unsigned char *p)
{
	uint64_t len = p[1] & 0x7F;
	size_t hl = 2;

	if (len == 126) {
		len = (uint64_t)p[2] << 8 | p[3];
		hl = 4;
	} else if (len == 127) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | p[2 + i];
		hl = 10;
	}
	return hl + (size_t)len;
}

/* Stops c's output at the end of the frame being sent: the frames after
 * it are discarded. Call with no flusher at work. (L) */
static void cut_output(struct gw_conn *c)
{
	size_t at = 0, keep;

	/* `out` holds whole frames from offset 0: keep the one being sent */
	while (at < c->out_len && at + frame_len(c->out + at) <= c->out_sent)
		at += frame_len(c->out + at);
	keep = at < c->out_sent ? at + frame_len(c->out + at) : c->out_sent;
	c->out_len = keep;
	c->pend_len = 0;
	c->appended = c->sent_total + (keep - c->out_sent);
	c->write_progress_ms = gw_now_mono();   /* the close frame gets its own time */
	c->over_limit = 0;                      /* room for the close frame */
}

struct gw_msg **conn_drop(struct gw_conn *c, int code, const char *reason, int linger_ms,
                          size_t *n)
{
	struct gw_msg **cut;
	int flush;

	*n = 0;
	pthread_mutex_lock(&c->lock);
	if (c->state == GW_CONN_CLOSING || c->state == GW_CONN_DEAD || c->fd < 0) {
		pthread_mutex_unlock(&c->lock);
		return NULL;
	}
	wait_flusher(c);
	cut_output(c);
	cut = take_after(c, c->appended, n);
	/* closing in the same lock: nothing newer than the cut can slip in */
	flush = close_locked(c, code, reason, linger_ms);
	pthread_mutex_unlock(&c->lock);
	if (flush)
		conn_flush(c);
	return cut;
}

struct gw_msg **conn_detach(struct gw_conn *c, size_t *n)
{
	struct gw_msg **unsent;

	pthread_mutex_lock(&c->lock);
	/* the socket closes after we return: nobody may be sending on it */
	wait_flusher(c);
	if (c->fd >= 0 && loop.epfd >= 0)
		epoll_ctl(loop.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	c->fd = -1;
	c->state = GW_CONN_DEAD;
	unsent = take_unsent(c, n);
	free(c->out);
	free(c->pend);
	c->out = c->pend = NULL;
	c->out_len = c->out_sent = c->out_cap = c->pend_len = c->pend_cap = 0;
	recharge(c);
	pthread_mutex_unlock(&c->lock);
	return unsent;
}

struct gw_msg **conn_takeover(struct gw_conn *c, int code, const char *reason, size_t *n)
{
	struct gw_msg **unsent;
	int flush = 0;

	pthread_mutex_lock(&c->lock);
	/* no frame may leave after we decide what was not taken */
	wait_flusher(c);
	/* the successor gets every message not wholly sent, the one on its way
	 * included (a resuming client drops the seq it sees twice); the old
	 * peer still gets that frame's end, so the close frame can follow */
	unsent = take_unsent(c, n);
	if (c->state != GW_CONN_CLOSING && c->state != GW_CONN_DEAD && c->fd >= 0) {
		cut_output(c);
		flush = close_locked(c, code, reason, GW_CLOSE_GRACE_MS);
	}
	pthread_mutex_unlock(&c->lock);
	if (flush)
		conn_flush(c);
	return unsent;
}

enum gw_housekeep conn_housekeep(struct gw_conn *c, int64_t now, int64_t write_timeout_ms,
                                 enum gw_conn_state *state)
{
	enum gw_housekeep aborted = GW_HK_NONE;

	pthread_mutex_lock(&c->lock);
	if (c->state == GW_CONN_CLOSING && c->fd >= 0) {
		/* its time to finish closing is up: now, even with a reset */
		if (c->close_deadline_ms && now >= c->close_deadline_ms) {
			aborted = GW_HK_CLOSE_EXPIRED;
			abort_locked(c);
		}
	} else if (c->state != GW_CONN_DEAD && c->fd >= 0 && c->over_limit) {
		conn_set_why(c, "output limit");   /* the caller drops it (conn_drop) */
		aborted = GW_HK_OVER_LIMIT;
	} else if (c->state != GW_CONN_DEAD && c->fd >= 0 && pending_locked(c) > 0 &&
	           now - c->write_progress_ms >= write_timeout_ms) {
		conn_set_why(c, "write timeout");   /* the caller drops it (conn_drop) */
		aborted = GW_HK_WRITE_TIMEOUT;
	}
	/* an idle peer keeps no output buffers: thousands of quiet mods */
	if (aborted == GW_HK_NONE && !c->flushing && pending_locked(c) == 0 &&
	    (c->out || c->pend) && now - c->write_progress_ms >= 2000) {
		free(c->out);
		free(c->pend);
		c->out = c->pend = NULL;
		c->out_len = c->out_sent = c->out_cap = c->pend_len = c->pend_cap = 0;
	}
	*state = c->state;
	pthread_mutex_unlock(&c->lock);
	return aborted;
}

static void free_graveyard(void)
{
	struct gw_conn *c, *next;

	pthread_mutex_lock(&loop.lock);
	c = loop.graveyard;
	loop.graveyard = NULL;
	pthread_mutex_unlock(&loop.lock);
	for (; c; c = next) {
		next = c->next_free;
		conn_free(c);
	}
}

/* Hands the delivered stored messages to the registry, outside any lock. */
static void report_delivered(void)
{
	struct gw_msg **v;
	size_t n;

	pthread_mutex_lock(&loop.lock);
	v = loop.done;
	n = loop.ndone;
	loop.done = NULL;
	loop.ndone = loop.done_cap = 0;
	pthread_mutex_unlock(&loop.lock);
	if (n && loop.delivered) {
		loop.delivered(v, n);
	} else {
		for (size_t i = 0; i < n; i++)
			proto_msg_unref(v[i]);
	}
	free(v);
}

/* Empties the wake pipe; returns 1 if the loop is to stop. */
static int woken(void)
{
	char buf[64];
	int stop;

	while (read(loop.wake[0], buf, sizeof(buf)) == (ssize_t)sizeof(buf))
		;
	pthread_mutex_lock(&loop.lock);
	stop = loop.stopping;
	pthread_mutex_unlock(&loop.lock);
	return stop;
}

static void *loop_main(void *arg)
{
	struct epoll_event ev[64];
	int64_t next_tick = gw_now_mono() + loop.tick_ms;

	(void)arg;
	pthread_setname_np(pthread_self(), "io");   /* for top -H and perf */
	for (;;) {
		int64_t now = gw_now_mono();
		int i, n, timeout = next_tick > now ? (int)(next_tick - now) : 0;

		free_graveyard();
		n = epoll_wait(loop.epfd, ev, 64, timeout);
		for (i = 0; i < n; i++) {
			struct gw_conn *c = ev[i].data.ptr;

			if (c == NULL) {   /* the wake pipe */
				if (woken())
					goto out;
				continue;
			}
			/* Still registered means not detached, so not freed: the
			 * graveyard is only emptied above, outside this batch. */
			conn_flush(c);
		}
		report_delivered();
		now = gw_now_mono();
		if (now >= next_tick) {
			loop.tick(now);
			next_tick = now + loop.tick_ms;
		}
	}
out:
	report_delivered();
	return NULL;
}

int conn_loop_start(void (*tick)(int64_t now_mono),
                    void (*on_delivered)(struct gw_msg **msgs, size_t n), int tick_ms)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

	loop.tick = tick;
	loop.delivered = on_delivered;
	loop.tick_ms = tick_ms;
	loop.stopping = 0;
	loop.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop.epfd < 0 || pipe2(loop.wake, O_CLOEXEC | O_NONBLOCK) < 0 ||
	    epoll_ctl(loop.epfd, EPOLL_CTL_ADD, loop.wake[0], &ev) < 0)
		goto fail;
	loop.running = 1;
	if (pthread_create(&loop.thread, NULL, loop_main, NULL) != 0) {
		loop.running = 0;
		goto fail;
	}
	return 0;
fail:
	conn_loop_stop();
	return -1;
}

void conn_loop_stop(void)
{
	int running;

	pthread_mutex_lock(&loop.lock);
	running = loop.running;
	loop.stopping = 1;
	pthread_mutex_unlock(&loop.lock);
	if (running) {
		wake_loop();
		pthread_join(loop.thread, NULL);
		pthread_mutex_lock(&loop.lock);
		loop.running = 0;
		pthread_mutex_unlock(&loop.lock);
		free_graveyard();
	}
	report_delivered();   /* anything flushed after the thread's last look */
	for (int i = 0; i < 2; i++) {
		if (loop.wake[i] >= 0)
			close(loop.wake[i]);
		loop.wake[i] = -1;
	}
	if (loop.epfd >= 0)
		close(loop.epfd);
	loop.epfd = -1;
}
