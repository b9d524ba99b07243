/*
 * defer.h - held-back flushes: the one way to send after the fact.
 *
 * Whoever appends frames to other conns while holding a lock (the
 * registry), or in the middle of a burst of frames from its own peer (a
 * session), adds those conns to a gw_defer and flushes it once, later: one
 * send per peer per burst instead of one per frame, and no send under the
 * registry lock. A gw_defer belongs to one thread at a time and holds a
 * reference on each conn in it; it starts as GW_DEFER_INIT (no memory until
 * the first add).
 */
#ifndef GW_DEFER_H
#define GW_DEFER_H

#include <stddef.h>

struct gw_conn;

#define GW_DEFER_MAX 1024   /* conns held at most; then they are flushed */

struct gw_defer {
	struct gw_conn **slot;   /* open addressing, cap slots (a power of 2) */
	size_t n, cap;
	/* a recipient that is behind but draining (conn_backed_up), when one was
	 * routed to: the sender of the frame may wait for it (a reference; the
	 * reader takes it, see reader.c) */
	struct gw_conn *pace;
};

#define GW_DEFER_INIT { NULL, 0, 0, NULL }

/* Adds c to d once. When d is full, what it holds is flushed first; when it
 * cannot get memory at all, c is flushed at once. A flush never blocks, so
 * either is fine under any lock. */
void defer_add(struct gw_defer *d, struct gw_conn *c);

/* Flushes every conn in d and empties it (keeping its memory). */
void defer_flush(struct gw_defer *d);

/* Notes that c is behind but draining (keeps the first one noted). */
void defer_pace(struct gw_defer *d, struct gw_conn *c);

/* defer_flush, then frees d's memory and drops its pace (d is
 * GW_DEFER_INIT again). */
void defer_free(struct gw_defer *d);

#endif
