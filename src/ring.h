/*
 * ring.h - a ring of messages, oldest first, holding at most `cap` (given
 * with each push); a push into a full ring overwrites (and returns) the
 * oldest. A channel keeps two per direction: its queue and its history.
 * Not thread-safe: the registry lock protects every ring.
 */
#ifndef GW_RING_H
#define GW_RING_H

#include <stddef.h>
#include "protocol.h"

struct gw_ring {
	struct gw_msg **slots;  /* NULL until the first push; grows up to the cap */
	unsigned size, head, count;
};

/* Appends m (steals the caller's reference). If the ring already held cap
 * messages the oldest is removed and returned (the caller owns that
 * reference), else NULL; with cap 0, m itself is returned. Returns NULL and
 * sets *err = -1 if memory runs out (m is then still the caller's); *err is
 * 0 otherwise. */
struct gw_msg *ring_push(struct gw_ring *r, unsigned cap, struct gw_msg *m, int *err);

/* Puts m in front (it is older than everything in the ring): used to give
 * back what a dropped peer had not taken. When full, m itself is the oldest
 * and is returned instead (the caller owns it). Steals the reference
 * otherwise. */
struct gw_msg *ring_push_front(struct gw_ring *r, unsigned cap, struct gw_msg *m, int *err);

/* Removes and returns the oldest / the newest message (caller owns it), or
 * NULL. */
struct gw_msg *ring_pop(struct gw_ring *r);
struct gw_msg *ring_pop_back(struct gw_ring *r);

/* The i-th oldest message (borrowed), or NULL past the end. */
struct gw_msg *ring_at(const struct gw_ring *r, unsigned i);

/* Drops every message and the slots. */
void ring_clear(struct gw_ring *r);

static inline unsigned ring_count(const struct gw_ring *r) { return r->count; }

#endif
