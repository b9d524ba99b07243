/*
 * reader.c - the reader threads (see reader.h).
 *
 * Each thread has an epoll set (level-triggered EPOLLIN), an eventfd that
 * brings it new sockets and the order to stop, a scratch buffer every
 * socket is read into, and one gw_defer for the flushes of a batch. A
 * socket's unparsed bytes (the start of a frame) move into a buffer of its
 * own only while a frame is incomplete, so an idle peer costs its struct
 * and nothing else.
 *
 * Sockets with a deadline - a frame stalled half-way, a close that
 * lingers, a pause - are also on the thread's timed list, walked every
 * TIMED_MS, or every PACE_MS while a socket is paced.
 *
 * Pacing: when a socket's frames went to a recipient that is behind but
 * draining (conn_backed_up: the bot, over half its output limit), the
 * socket leaves EPOLLIN and its deadline becomes the next look at the
 * recipient, PACE_MS away; it is read again once the recipient is no
 * longer behind. Its peer waits in its own send (TCP holds its bytes);
 * nobody else waits, and a recipient that stops draining, or stays behind
 * for write_timeout (at most half of read_timeout: the paced peer's pongs
 * wait too), is not waited for: its limits deal with it.
 *
 * A bot's handshake may block (session_join waits for the bot it replaces
 * to answer a probe, and that bot may be read by this very thread): its
 * socket leaves the epoll set, a thread of its own runs the join, and the
 * socket comes back through the incoming list, as a new one does.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "defer.h"
#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "reader.h"
#include "session.h"

#define READERS_MAX 8
#define SCRATCH (64 * 1024)      /* one read takes at most this */
#define TIMED_MS 100             /* how often deadlines are looked at */
#define LINGER_MS 2000           /* a close reads what the peer still sends this long */
#define LINGER_BYTES ((uint64_t)64 << 20)   /* ... or this much (or 2 x body_size) */
#define PACE_MS 1                /* a paced socket looks at its recipient this often */

struct rsock {
	int fd;
	struct gw_session *s;        /* NULL once the session ended (lingering) */
	void *token;
	unsigned char *buf;          /* bytes not parsed yet: an incomplete frame */
	size_t len, cap;
	uint64_t linger_left;        /* lingering: bytes it may still discard */
	int64_t deadline_ms;         /* monotonic; 0: none (not on the timed list) */
	struct rsock *prev, *next;   /* the thread's sockets (under t->lock) */
	struct rsock *tprev, *tnext; /* the timed list (thread only) */
	struct rsock *next_new;      /* handed over, not picked up yet (under t->lock) */
	struct gw_conn *pace_on;     /* paced: the recipient it waits for (a reference) */
	struct reader *t;            /* its thread */
	int joining;                 /* a join thread has the session (under t->lock) */
	int join_rc;                 /* what session_join said (enum gw_session_rc) */
};

struct reader {
	pthread_t thread;
	int epfd, evfd;
	pthread_mutex_t lock;        /* protects all, incoming, stopping */
	struct rsock *all, *incoming;
	int stopping;
	struct rsock *timed;         /* thread only */
	unsigned npaced;             /* sockets paced (thread only) */
	struct gw_defer defer;       /* thread only */
	unsigned char *scratch;      /* thread only */
};

static struct {
	struct reader t[READERS_MAX];
	unsigned n;
	unsigned next;               /* atomic: round robin */
	const struct gw_config *cfg;
	uint64_t max_frame, linger_bytes;
	void (*closed)(void *token);
} rd;

static void timed_set(struct reader *t, struct rsock *r, int64_t deadline)
{
	if (deadline && !r->deadline_ms) {
		r->tprev = NULL;
		r->tnext = t->timed;
		if (t->timed)
			t->timed->tprev = r;
		t->timed = r;
	} else if (!deadline && r->deadline_ms) {
		if (r->tprev)
			r->tprev->tnext = r->tnext;
		else
			t->timed = r->tnext;
		if (r->tnext)
			r->tnext->tprev = r->tprev;
	}
	r->deadline_ms = deadline;
}

/* A frame half-way ends the connection after request_timeout without a
 * byte; none: no deadline. */
static void stall_deadline(struct reader *t, struct rsock *r)
{
	timed_set(t, r, r->len ? gw_now_mono() + (int64_t)rd.cfg->request_timeout * 1000 : 0);
}

/* r waits for nobody: its reference goes, and (if `rearm`) it is read
 * again, its deadline the stall one as after any read. */
static void unpace(struct reader *t, struct rsock *r, int rearm)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = r };

	if (!r->pace_on)
		return;
	conn_unref(r->pace_on);
	r->pace_on = NULL;
	t->npaced--;
	if (!rearm)
		return;
	if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, r->fd, &ev) < 0)
		log_event(GW_LOG_WARN, "reader: epoll_ctl failed", NULL);
	stall_deadline(t, r);
}

/* The frames just read from r went to c, which is behind but draining
 * (t->defer.pace, whose reference this takes): r is not read until c
 * caught up. */
static void pace(struct reader *t, struct rsock *r, struct gw_conn *c)
{
	struct epoll_event ev = { .events = 0, .data.ptr = r };

	if (r->pace_on || epoll_ctl(t->epfd, EPOLL_CTL_MOD, r->fd, &ev) < 0) {
		conn_unref(c);
		return;
	}
	metrics_inc(GW_M_PACED);
	r->pace_on = c;
	t->npaced++;
	timed_set(t, r, gw_now_mono() + PACE_MS);
}

/* The socket is done with: closed, and forgotten. */
static void rsock_free(struct reader *t, struct rsock *r)
{
	timed_set(t, r, 0);
	unpace(t, r, 0);
	pthread_mutex_lock(&t->lock);
	if (r->prev)
		r->prev->next = r->next;
	else
		t->all = r->next;
	if (r->next)
		r->next->prev = r->prev;
	pthread_mutex_unlock(&t->lock);
	/* closing drops it from the epoll set too (we hold its only fd) */
	close(r->fd);
	if (rd.closed)
		rd.closed(r->token);
	free(r->buf);
	free(r);
}

/* The peer's session ends; its socket stays open if `linger`, else it is
 * closed now. why: for the disconnect line when nothing said otherwise. */
static void end_session(struct reader *t, struct rsock *r, const char *why, int linger)
{
	if (r->s) {
		session_end(r->s, &t->defer, why);   /* flushes before and after */
		session_free(r->s);
		r->s = NULL;
	}
	free(r->buf);
	r->buf = NULL;
	r->len = r->cap = 0;
	if (!linger) {
		rsock_free(t, r);
		return;
	}
	unpace(t, r, 1);   /* a lingering close reads on */
	/* FIN now (the close frame was flushed before), then read what still
	 * comes until the peer closes too */
	shutdown(r->fd, SHUT_WR);
	r->linger_left = rd.linger_bytes;
	timed_set(t, r, gw_now_mono() + LINGER_MS);
}

/* A lingering socket is readable: discard what came. */
static void linger_read(struct reader *t, struct rsock *r)
{
	size_t want = r->linger_left < SCRATCH ? (size_t)r->linger_left : SCRATCH;
	ssize_t n = want ? recv(r->fd, t->scratch, want, MSG_DONTWAIT) : 0;

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		rsock_free(t, r);   /* EOF, an error, or the budget is spent */
		return;
	}
	r->linger_left -= (uint64_t)n;
}

static void *join_main(void *arg);
static int keep(struct rsock *r, const unsigned char *p, size_t n);

/* Hands r's session to a join thread (GW_SESSION_BLOCKED): r leaves the
 * epoll set until the thread hands it back. */
static void join_elsewhere(struct reader *t, struct rsock *r)
{
	pthread_attr_t a;
	pthread_t th;
	int rc = -1;

	epoll_ctl(t->epfd, EPOLL_CTL_DEL, r->fd, NULL);
	timed_set(t, r, 0);
	unpace(t, r, 0);
	defer_flush(&t->defer);   /* what the peer is owed goes first */
	pthread_mutex_lock(&t->lock);
	r->joining = 1;
	pthread_mutex_unlock(&t->lock);
	if (pthread_attr_init(&a) == 0) {
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		rc = pthread_create(&th, &a, join_main, r);
		pthread_attr_destroy(&a);
	}
	if (rc != 0)
		join_main(r);   /* no thread: here, then (it may block this reader) */
}

/* Hands the whole frames at the start of p (n bytes) to the session.
 * Returns the bytes they took, or SIZE_MAX when the session ended or went
 * to a join thread (r's buffer then holds what follows). */
static size_t parse(struct reader *t, struct rsock *r, unsigned char *p, size_t n)
{
	size_t off = 0, used;
	struct gw_frame f;

	while ((used = frame_parse(p + off, n - off, rd.max_frame, &f)) > 0) {
		int rc;

		off += used;
		rc = session_frame(r->s, &t->defer, f.bits, f.data, (size_t)f.len);
		if (rc == GW_SESSION_GO_ON)
			continue;
		if (rc == GW_SESSION_BLOCKED && keep(r, p + off, n - off) == 0) {
			join_elsewhere(t, r);
			return SIZE_MAX;
		}
		end_session(t, r, rc == GW_SESSION_BLOCKED ? "out of memory" : NULL, 1);
		return SIZE_MAX;
	}
	return off;
}

/* Makes room for need bytes in r's buffer. Returns 0, or -1. */
static int grow(struct rsock *r, size_t need)
{
	size_t cap = r->cap ? r->cap : 4096;
	unsigned char *b;

	if (need <= r->cap)
		return 0;
	while (cap < need)
		cap *= 2;
	if (!(b = realloc(r->buf, cap)))
		return -1;
	r->buf = b;
	r->cap = cap;
	return 0;
}

/* Keeps the n bytes at p (an incomplete frame) as r's buffer's content. */
static int keep(struct rsock *r, const unsigned char *p, size_t n)
{
	if (grow(r, n) < 0)
		return -1;
	if (n && p != r->buf)
		memmove(r->buf, p, n);
	r->len = n;
	return 0;
}

/* Hands the whole frames among r's n unparsed bytes at p (the scratch
 * buffer, or r's own) to the session and keeps the start of an incomplete
 * one, which may then stall request_timeout without a byte. */
static void digest(struct reader *t, struct rsock *r, unsigned char *p, size_t n)
{
	size_t used = parse(t, r, p, n);
	struct gw_conn *wait_for = t->defer.pace;   /* the frames' recipient, if behind */

	t->defer.pace = NULL;
	if (used == SIZE_MAX || keep(r, p + used, n - used) < 0) {
		if (wait_for)
			conn_unref(wait_for);
		if (used == SIZE_MAX)   /* r's session ended, or is joining elsewhere */
			return;
		end_session(t, r, "out of memory", 0);
		return;
	}
	if (r->len == 0 && r->cap > SCRATCH) {   /* a big frame passed: let its buffer go */
		free(r->buf);
		r->buf = NULL;
		r->cap = 0;
	}
	if (wait_for)
		pace(t, r, wait_for);   /* its deadline is the pause's */
	else
		stall_deadline(t, r);
}

/* r is readable: one read (the others' turn comes before the next), then
 * every whole frame it completed. */
static void serve(struct reader *t, struct rsock *r)
{
	unsigned char *p;
	size_t room;
	ssize_t n;

	if (!r->s) {
		linger_read(t, r);
		return;
	}
	if (r->len == 0) {
		p = t->scratch;   /* the usual case: no frame half-way */
		room = SCRATCH;
	} else {
		/* the rest of a frame: read after what we have (the frame is at
		 * most body_size, so the buffer stays within twice that) */
		if (grow(r, r->len + SCRATCH / 4) < 0) {
			end_session(t, r, "out of memory", 0);
			return;
		}
		p = r->buf;
		room = r->cap - r->len;
	}
	n = recv(r->fd, p + r->len, room, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		end_session(t, r, NULL, 0);   /* EOF or an error: the peer is gone */
		return;
	}
	digest(t, r, p, r->len + (size_t)n);
}

/* Deadlines: stalled frames end, lingering closes finish, paused sockets
 * are read again once their recipient caught up (or stopped draining, or
 * has been behind for the patience). */
static void expire(struct reader *t, int64_t now)
{
	struct rsock *r = t->timed, *next;

	for (; r; r = next) {
		next = r->tnext;
		if (now < r->deadline_ms)
			continue;
		if (r->pace_on) {
			if (conn_backed_up(r->pace_on, conn_pace_patience_ms(rd.cfg->write_timeout,
			                                                      rd.cfg->read_timeout)))
				r->deadline_ms = now + PACE_MS;
			else
				unpace(t, r, 1);
			continue;
		}
		if (r->s)
			end_session(t, r, "stalled frame", 0);
		else
			rsock_free(t, r);
	}
}

/* Picks up the sockets handed over; returns 1 if the thread is to stop. */
static int take_new(struct reader *t)
{
	struct rsock *r, *next;
	uint64_t v;
	int stop;

	if (read(t->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_event(GW_LOG_WARN, "reader: eventfd read failed", NULL);
	pthread_mutex_lock(&t->lock);
	r = t->incoming;
	t->incoming = NULL;
	stop = t->stopping;
	pthread_mutex_unlock(&t->lock);
	for (; r; r = next) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = r };

		next = r->next_new;
		if (r->joining) {   /* back from a join thread */
			pthread_mutex_lock(&t->lock);
			r->joining = 0;
			pthread_mutex_unlock(&t->lock);
			if (r->join_rc != GW_SESSION_GO_ON) {
				end_session(t, r, NULL, 1);
				if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, r->fd, &ev) < 0)
					rsock_free(t, r);   /* no lingering then */
				continue;
			}
		}
		if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, r->fd, &ev) < 0)
			end_session(t, r, "out of memory", 0);
		else if (r->len)   /* frames that came with the upgrade, or after a join */
			digest(t, r, r->buf, r->len);
	}
	return stop;
}

/* A join thread: the bot's join, then r goes back to its reader. */
static void *join_main(void *arg)
{
	struct rsock *r = arg;
	struct reader *t = r->t;
	uint64_t one = 1;

	r->join_rc = session_join(r->s);
	/* the wake-up inside the lock: once the reader took r back it may
	 * stop and close its eventfd */
	pthread_mutex_lock(&t->lock);
	r->next_new = t->incoming;
	t->incoming = r;
	if (write(t->evfd, &one, sizeof(one)) < 0)
		log_event(GW_LOG_WARN, "reader: eventfd write failed", NULL);
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

static void *reader_main(void *arg)
{
	struct reader *t = arg;
	struct epoll_event ev[64];
	int64_t next_timed = gw_now_mono() + TIMED_MS;

	pthread_setname_np(pthread_self(), "reader");   /* for top -H and perf */
	for (;;) {
		int64_t now = gw_now_mono();
		int i, n, stop = 0;
		int timeout;

		if (t->npaced && next_timed > now + PACE_MS)   /* one was paced meanwhile */
			next_timed = now + PACE_MS;
		timeout = t->timed ? (next_timed > now ? (int)(next_timed - now) : 0) : -1;

		n = epoll_wait(t->epfd, ev, 64, timeout);
		for (i = 0; i < n; i++) {
			if (ev[i].data.ptr == NULL)
				stop |= take_new(t);
			else
				serve(t, ev[i].data.ptr);
		}
		/* one flush per batch: a peer gets the acks of its burst in one
		 * send, the bot every mod's messages of the batch in one */
		defer_flush(&t->defer);
		now = gw_now_mono();
		if (now >= next_timed) {   /* an empty timed list: nothing to do */
			expire(t, now);
			next_timed = now + (t->npaced ? PACE_MS : TIMED_MS);
		}
		if (stop)
			break;
	}
	/* stopping: whoever is still here ends now; a socket out with a join
	 * thread is waited for (the join ends within bot_probe_timeout, at
	 * once when the bot it waits on leaves, as every other peer does now) */
	for (;;) {
		struct rsock *r;
		int left;

		pthread_mutex_lock(&t->lock);
		for (r = t->all; r && r->joining; r = r->next)
			;
		left = t->all != NULL;   /* if r is NULL, all of them are joining */
		pthread_mutex_unlock(&t->lock);
		if (r) {
			end_session(t, r, "shutdown", 0);
			continue;
		}
		if (!left)
			break;
		epoll_wait(t->epfd, ev, 64, 100);   /* the eventfd: one came back */
		take_new(t);
	}
	defer_free(&t->defer);
	return NULL;
}

/* Ends a socket no reader took. */
static void refuse(struct gw_session *s, int fd, void *token, const char *why)
{
	session_end(s, NULL, why);
	session_free(s);
	close(fd);
	if (rd.closed)
		rd.closed(token);
}

int reader_add(struct gw_session *s, int fd, const void *early, size_t n, void *token)
{
	unsigned nt = __atomic_load_n(&rd.n, __ATOMIC_ACQUIRE);
	struct reader *t = &rd.t[__atomic_fetch_add(&rd.next, 1, __ATOMIC_RELAXED) % (nt ? nt : 1)];
	struct rsock *r = nt ? calloc(1, sizeof(*r)) : NULL;
	uint64_t one = 1;
	int stopping;

	if (r && n && keep(r, early, n) < 0) {
		free(r);
		r = NULL;
	}
	if (!r) {
		refuse(s, fd, token, nt ? "out of memory" : "shutdown");
		return -1;
	}
	r->fd = fd;
	r->s = s;
	r->token = token;
	r->t = t;
	pthread_mutex_lock(&t->lock);
	stopping = t->stopping;
	if (!stopping) {
		r->next = t->all;
		if (t->all)
			t->all->prev = r;
		t->all = r;
		r->next_new = t->incoming;
		t->incoming = r;
		/* inside the lock: a stopping reader closes its eventfd */
		if (write(t->evfd, &one, sizeof(one)) < 0)
			log_event(GW_LOG_WARN, "reader: eventfd write failed", NULL);
	}
	pthread_mutex_unlock(&t->lock);
	if (stopping) {   /* the gateway stops: its readers are gone or going */
		free(r->buf);
		free(r);
		refuse(s, fd, token, "shutdown");
		return -1;
	}
	return 0;
}

/* Frees a stopped reader's resources; its lock and stopping flag stay
 * valid for a late reader_add. */
static void reader_close(struct reader *t)
{
	if (t->epfd >= 0)
		close(t->epfd);
	if (t->evfd >= 0)
		close(t->evfd);
	t->epfd = t->evfd = -1;
	free(t->scratch);
	t->scratch = NULL;
}

int reader_start(const struct gw_config *cfg, void (*closed)(void *token))
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned want = cpus < 2 ? 2 : cpus > READERS_MAX ? READERS_MAX : (unsigned)cpus, n;

	rd.cfg = cfg;
	rd.closed = closed;
	rd.max_frame = cfg->body_size;
	rd.linger_bytes = 2 * (uint64_t)cfg->body_size > LINGER_BYTES ? 2 * (uint64_t)cfg->body_size
	                                                               : LINGER_BYTES;
	for (n = 0; n < want; n++) {
		struct reader *t = &rd.t[n];
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };

		pthread_mutex_init(&t->lock, NULL);
		t->stopping = 0;
		t->epfd = epoll_create1(EPOLL_CLOEXEC);
		t->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		t->scratch = malloc(SCRATCH);
		if (t->epfd < 0 || t->evfd < 0 || !t->scratch ||
		    epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->evfd, &ev) < 0 ||
		    pthread_create(&t->thread, NULL, reader_main, t) != 0) {
			reader_close(t);
			pthread_mutex_destroy(&t->lock);
			__atomic_store_n(&rd.n, n, __ATOMIC_RELEASE);
			reader_stop();
			return -1;
		}
	}
	__atomic_store_n(&rd.n, n, __ATOMIC_RELEASE);
	return 0;
}

void reader_stop(void)
{
	unsigned n = __atomic_load_n(&rd.n, __ATOMIC_ACQUIRE);
	uint64_t one = 1;

	for (unsigned i = 0; i < n; i++) {
		struct reader *t = &rd.t[i];

		pthread_mutex_lock(&t->lock);
		t->stopping = 1;
		pthread_mutex_unlock(&t->lock);
		if (write(t->evfd, &one, sizeof(one)) < 0)
			log_event(GW_LOG_WARN, "reader: eventfd write failed", NULL);
	}
	for (unsigned i = 0; i < n; i++) {
		pthread_join(rd.t[i].thread, NULL);
		reader_close(&rd.t[i]);
	}
}
