/*
 * ring.c - rings of messages (see ring.h). Slots are allocated on the first
 * push and grow by doubling up to the ring's capacity, so a channel nobody
 * queues for costs nothing and a quiet one little.
 */
#include <stdlib.h>
#include <string.h>
#include "ring.h"

#define RING_MIN 16

/* Makes room for one more message below cap (count < cap). Returns 0 or -1. */
static int ring_grow(struct gw_ring *r, unsigned cap)
{
	unsigned size, tail;
	struct gw_msg **v;

	if (r->count < r->size)
		return 0;
	size = r->size ? 2 * r->size : RING_MIN;
	if (size > cap)
		size = cap;
	v = malloc(size * sizeof(*v));
	if (!v)
		return -1;
	/* oldest first, at the start of the new slots */
	tail = r->size - r->head;
	if (r->count) {
		memcpy(v, r->slots + r->head, (tail < r->count ? tail : r->count) * sizeof(*v));
		if (tail < r->count)
			memcpy(v + tail, r->slots, (r->count - tail) * sizeof(*v));
	}
	free(r->slots);
	r->slots = v;
	r->size = size;
	r->head = 0;
	return 0;
}

struct gw_msg *ring_push(struct gw_ring *r, unsigned cap, struct gw_msg *m, int *err)
{
	struct gw_msg *old = NULL;

	*err = 0;
	if (cap == 0)
		return m;   /* holds nothing: m itself is the one pushed out */
	if (r->count >= cap) {
		/* full: the oldest goes (a lowered cap drops the excess later) */
		old = ring_pop(r);
	} else if (ring_grow(r, cap) < 0) {
		*err = -1;
		return NULL;
	}
	r->slots[(r->head + r->count) % r->size] = m;
	r->count++;
	return old;
}

struct gw_msg *ring_push_front(struct gw_ring *r, unsigned cap, struct gw_msg *m, int *err)
{
	*err = 0;
	if (r->count >= cap)
		return m;
	if (ring_grow(r, cap) < 0) {
		*err = -1;
		return NULL;
	}
	r->head = (r->head + r->size - 1) % r->size;
	r->slots[r->head] = m;
	r->count++;
	return NULL;
}

struct gw_msg *ring_pop(struct gw_ring *r)
{
	struct gw_msg *m;

	if (r->count == 0)
		return NULL;
	m = r->slots[r->head];
	r->slots[r->head] = NULL;
	r->head = (r->head + 1) % r->size;
	r->count--;
	return m;
}

struct gw_msg *ring_pop_back(struct gw_ring *r)
{
	struct gw_msg *m;
	unsigned i;

	if (r->count == 0)
		return NULL;
	i = (r->head + r->count - 1) % r->size;
	m = r->slots[i];
	r->slots[i] = NULL;
	r->count--;
	return m;
}

struct gw_msg *ring_at(const struct gw_ring *r, unsigned i)
{
	return i < r->count ? r->slots[(r->head + i) % r->size] : NULL;
}

void ring_clear(struct gw_ring *r)
{
	struct gw_msg *m;

	while ((m = ring_pop(r)) != NULL)
		proto_msg_unref(m);
	free(r->slots);
	r->slots = NULL;
	r->size = r->head = r->count = 0;
}
