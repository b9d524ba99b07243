/*
 * ring.c - rings of queued messages (see ring.h). Slots are allocated on
 * the first push so that a channel nobody queues for costs nothing.
 */
#include <stdlib.h>
#include "ring.h"

static int ring_alloc(struct gw_ring *r, unsigned cap)
{
	if (r->slots)
		return 0;
	r->slots = calloc(cap, sizeof(*r->slots));
	if (!r->slots)
		return -1;
	r->cap = cap;
	r->head = r->count = 0;
	return 0;
}

struct gw_msg *ring_push(struct gw_ring *r, unsigned cap, struct gw_msg *m, int *err)
{
	struct gw_msg *old = NULL;

	*err = 0;
	if (ring_alloc(r, cap) < 0) {
		*err = -1;
		return NULL;
	}
	if (r->count == r->cap) {
		old = r->slots[r->head];
		r->slots[r->head] = m;
		r->head = (r->head + 1) % r->cap;
		return old;
	}
	r->slots[(r->head + r->count) % r->cap] = m;
	r->count++;
	return NULL;
}

struct gw_msg *ring_push_front(struct gw_ring *r, unsigned cap, struct gw_msg *m, int *err)
{
	*err = 0;
	if (ring_alloc(r, cap) < 0) {
		*err = -1;
		return NULL;
	}
	if (r->count == r->cap)
		return m;
	r->head = (r->head + r->cap - 1) % r->cap;
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
	r->head = (r->head + 1) % r->cap;
	r->count--;
	return m;
}

void ring_clear(struct gw_ring *r)
{
	struct gw_msg *m;

	while ((m = ring_pop(r)) != NULL)
		proto_msg_unref(m);
	free(r->slots);
	r->slots = NULL;
	r->cap = r->head = r->count = 0;
}
