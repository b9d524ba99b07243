/*
 * defer.c - held-back flushes (see defer.h): a set of conns kept as an
 * open-addressing hash table of pointers, at most half full, so adding a
 * conn that is already in it costs one or two probes.
 */
#include <stdint.h>
#include <stdlib.h>

#include "conn.h"
#include "defer.h"

static size_t defer_hash(const struct gw_conn *c, size_t cap)
{
	uint64_t h = (uint64_t)(uintptr_t)c * 0x9E3779B97F4A7C15ULL;

	return (size_t)(h >> 32) & (cap - 1);
}

/* Puts c in a free slot of d (c is not in it, and there is room). */
static void defer_put(struct gw_defer *d, struct gw_conn *c)
{
	size_t h = defer_hash(c, d->cap);

	while (d->slot[h] != NULL)
		h = (h + 1) & (d->cap - 1);
	d->slot[h] = c;
	d->n++;
}

/* Doubles d's slots (at most 2 * GW_DEFER_MAX). Returns 0 or -1. */
static int defer_grow(struct gw_defer *d)
{
	size_t cap = d->cap ? 2 * d->cap : 16, i;
	struct gw_conn **old = d->slot, **v;

	if (cap > 2 * GW_DEFER_MAX || !(v = calloc(cap, sizeof(*v))))
		return -1;
	d->slot = v;
	d->cap = cap;
	d->n = 0;
	for (i = 0; i < cap / 2; i++)
		if (old && old[i])
			defer_put(d, old[i]);
	free(old);
	return 0;
}

void defer_add(struct gw_defer *d, struct gw_conn *c)
{
	if (d->cap) {
		for (size_t h = defer_hash(c, d->cap); d->slot[h] != NULL; h = (h + 1) & (d->cap - 1))
			if (d->slot[h] == c)
				return;
	}
	/* keep the table at most half full: short probe runs */
	if (2 * (d->n + 1) > d->cap && defer_grow(d) < 0) {
		defer_flush(d);
		if (!d->cap) {
			conn_flush(c);   /* no memory at all: now, then */
			return;
		}
	}
	conn_ref(c);
	defer_put(d, c);
}

void defer_flush(struct gw_defer *d)
{
	for (size_t i = 0; d->n > 0 && i < d->cap; i++) {
		struct gw_conn *c = d->slot[i];

		if (c) {
			d->slot[i] = NULL;
			d->n--;
			conn_flush(c);
			conn_unref(c);
		}
	}
}

void defer_pace(struct gw_defer *d, struct gw_conn *c)
{
	if (!d->pace) {
		conn_ref(c);
		d->pace = c;
	}
}

void defer_free(struct gw_defer *d)
{
	defer_flush(d);
	if (d->pace) {
		conn_unref(d->pace);
		d->pace = NULL;
	}
	free(d->slot);
	d->slot = NULL;
	d->cap = 0;
}
