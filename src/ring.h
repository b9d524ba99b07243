/*
 * ring.h - a ring of messages waiting for an offline recipient: one per
 * channel and direction, holding at most `cap` messages; a push into a full
 * ring overwrites (and returns) the oldest. Not thread-safe: the registry
 * lock protects every ring.
 */
#ifndef GW_RING_H
#define GW_RING_H

#include <stddef.h>
#include "protocol.h"

struct gw_ring {
	struct gw_msg **slots;  /* NULL until the first push */
	unsigned cap, head, count;
};

/* Appends m (steals the caller's reference). If the ring was full the
 * oldest message is removed and returned (the caller owns that reference),
 * else NULL. Returns NULL and sets *err = -1 if memory runs out (m is then
 * still the caller's); *err is 0 otherwise. */
struct gw_msg *ring_push(struct gw_ring *r, unsigned cap, struct gw_msg *m, int *err);

/* Puts m in front (it is older than everything queued): used to give back
 * what a dropped peer had not taken. When full, m itself is the oldest and
 * is returned instead (the caller owns it). Steals the reference otherwise. */
struct gw_msg *ring_push_front(struct gw_ring *r, unsigned cap, struct gw_msg *m, int *err);

/* Removes and returns the oldest message (caller owns it), or NULL. */
struct gw_msg *ring_pop(struct gw_ring *r);

/* Drops every message and the slots. */
void ring_clear(struct gw_ring *r);

static inline unsigned ring_count(const struct gw_ring *r) { return r->count; }

#endif
