/*
 * dedup.c - per-sender windows of recent msg_ids (see dedup.h).
 *
 * Each sender has a ring of hashes in arrival order (to evict the oldest)
 * and an open-addressing index over the same hashes (to look one up in O(1)
 * on the message path). Senders live in a chained hash table and on an LRU
 * list; over max_ids the least recently active sender is dropped whole.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"

struct sender {
	struct sender *hnext;              /* hash chain */
	struct sender *lru_prev, *lru_next;
	uint64_t *ring;                    /* hashes, oldest at head */
	unsigned head, count, cap;         /* cap grows up to the window */
	uint64_t *slots;                   /* index: hash or 0 = empty */
	uint8_t *status;                   /* per slot */
	unsigned mask;                     /* slots - 1 */
	char id[];
};

struct gw_dedup {
	unsigned window;
	size_t max_ids, ids, nsenders;
	struct sender **buckets;
	size_t nbuckets;
	struct sender *lru_head, *lru_tail;   /* head = most recent */
};

static uint64_t hash_bytes(const char *s, uint64_t h)
{
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static uint64_t id_hash(const char *msg_id)
{
	/* FNV-1a then a final mix, so nearby ids spread over the index */
	uint64_t h = hash_bytes(msg_id, 1469598103934665603ULL);

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h ? h : 1;   /* 0 marks an empty slot */
}

struct gw_dedup *dedup_new(unsigned window, size_t max_ids)
{
	struct gw_dedup *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->window = window ? window : 1;
	d->max_ids = max_ids > d->window ? max_ids : d->window;
	d->nbuckets = 256;
	d->buckets = calloc(d->nbuckets, sizeof(*d->buckets));
	if (!d->buckets) {
		free(d);
		return NULL;
	}
	return d;
}

static void lru_unlink(struct gw_dedup *d, struct sender *s)
{
	if (s->lru_prev)
		s->lru_prev->lru_next = s->lru_next;
	else
		d->lru_head = s->lru_next;
	if (s->lru_next)
		s->lru_next->lru_prev = s->lru_prev;
	else
		d->lru_tail = s->lru_prev;
	s->lru_prev = s->lru_next = NULL;
}

static void lru_front(struct gw_dedup *d, struct sender *s)
{
	if (d->lru_head == s)
		return;
	if (s->lru_prev || s->lru_next || d->lru_tail == s)
		lru_unlink(d, s);
	s->lru_next = d->lru_head;
	if (d->lru_head)
		d->lru_head->lru_prev = s;
	d->lru_head = s;
	if (!d->lru_tail)
		d->lru_tail = s;
}

static long slot_find(const struct sender *s, uint64_t h);

static void sender_free(struct sender *s)
{
	free(s->ring);
	free(s->slots);
	free(s->status);
	free(s);
}

static void sender_remove(struct gw_dedup *d, struct sender *s)
{
	struct sender **pp = &d->buckets[hash_bytes(s->id, 0) & (d->nbuckets - 1)];

	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == s) {
			*pp = s->hnext;
			break;
		}
	}
	lru_unlink(d, s);
	d->ids -= s->cap;
	d->nsenders--;
	sender_free(s);
}

void dedup_free(struct gw_dedup *d)
{
	if (!d)
		return;
	while (d->lru_head)
		sender_remove(d, d->lru_head);
	free(d->buckets);
	free(d);
}

static struct sender *sender_find(struct gw_dedup *d, const char *id)
{
	struct sender *s = d->buckets[hash_bytes(id, 0) & (d->nbuckets - 1)];

	while (s && strcmp(s->id, id) != 0)
		s = s->hnext;
	return s;
}

static void grow_buckets(struct gw_dedup *d)
{
	size_t nb = d->nbuckets * 2;
	struct sender **nv = calloc(nb, sizeof(*nv));

	if (!nv)
		return;   /* longer chains, still correct */
	for (size_t i = 0; i < d->nbuckets; i++) {
		struct sender *s, *next;

		for (s = d->buckets[i]; s; s = next) {
			size_t b = hash_bytes(s->id, 0) & (nb - 1);

			next = s->hnext;
			s->hnext = nv[b];
			nv[b] = s;
		}
	}
	free(d->buckets);
	d->buckets = nv;
	d->nbuckets = nb;
}

/* Room for `cap` ids: a ring of cap and an index at most half full. The
 * index is rebuilt from the ring. Returns 0 or -1 (s unchanged). */
static int sender_resize(struct sender *s, unsigned cap)
{
	unsigned slots = 8, i;
	uint64_t *ring = malloc(cap * sizeof(*ring)), *idx;
	uint8_t *st;

	while (slots < cap * 2)
		slots *= 2;
	idx = calloc(slots, sizeof(*idx));
	st = calloc(slots, sizeof(*st));
	if (!ring || !idx || !st) {
		free(ring);
		free(idx);
		free(st);
		return -1;
	}
	for (i = 0; i < s->count; i++) {
		uint64_t h = s->ring[(s->head + i) % s->cap];
		long old = slot_find(s, h);
		unsigned k;

		for (k = (unsigned)h & (slots - 1); idx[k]; k = (k + 1) & (slots - 1))
			;
		idx[k] = h;
		st[k] = old >= 0 ? s->status[old] : 0;
		ring[i] = h;
	}
	free(s->ring);
	free(s->slots);
	free(s->status);
	s->ring = ring;
	s->slots = idx;
	s->status = st;
	s->mask = slots - 1;
	s->head = 0;
	s->cap = cap;
	return 0;
}

static struct sender *sender_new(struct gw_dedup *d, const char *id)
{
	size_t len = strlen(id), b;
	struct sender *s;

	s = calloc(1, sizeof(*s) + len + 1);
	if (!s)
		return NULL;
	/* start small: memory follows the ids actually remembered */
	if (sender_resize(s, d->window < 16 ? d->window : 16) < 0) {
		free(s);
		return NULL;
	}
	memcpy(s->id, id, len + 1);
	d->ids += s->cap;
	if (d->nsenders >= d->nbuckets * 2)
		grow_buckets(d);
	b = hash_bytes(id, 0) & (d->nbuckets - 1);
	s->hnext = d->buckets[b];
	d->buckets[b] = s;
	d->nsenders++;
	lru_front(d, s);
	return s;
}

/* Index slot holding h, or -1. */
static long slot_find(const struct sender *s, uint64_t h)
{
	if (!s->slots)
		return -1;
	for (unsigned i = (unsigned)h & s->mask;; i = (i + 1) & s->mask) {
		if (s->slots[i] == h)
			return (long)i;
		if (s->slots[i] == 0)
			return -1;
	}
}

/* Removes slot i, shifting back the entries of its probe run (no
 * tombstones, so lookups never degrade). */
static void slot_delete(struct sender *s, unsigned i)
{
	unsigned j = i;

	for (;;) {
		unsigned home;

		s->slots[i] = 0;
		for (;;) {
			j = (j + 1) & s->mask;
			if (s->slots[j] == 0)
				return;
			home = (unsigned)s->slots[j] & s->mask;
			/* move j back to i unless its home lies cyclically in (i, j] */
			if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
				continue;
			break;
		}
		s->slots[i] = s->slots[j];
		s->status[i] = s->status[j];
		i = j;
	}
}

int dedup_seen(struct gw_dedup *d, const char *sender, const char *msg_id, int *status)
{
	struct sender *s = sender_find(d, sender);
	long i;

	if (!s)
		return 0;
	lru_front(d, s);
	i = slot_find(s, id_hash(msg_id));
	if (i < 0)
		return 0;
	*status = s->status[i];
	return 1;
}

int dedup_record(struct gw_dedup *d, const char *sender, const char *msg_id, int status)
{
	struct sender *s = sender_find(d, sender);
	uint64_t h = id_hash(msg_id);
	long found;
	unsigned i;

	if (!s && !(s = sender_new(d, sender)))
		return -1;
	lru_front(d, s);
	found = slot_find(s, h);
	if (found >= 0) {
		s->status[found] = (uint8_t)status;
		return 0;
	}
	if (s->count == s->cap && s->cap < d->window) {
		unsigned old_cap = s->cap;

		if (sender_resize(s, s->cap * 2 < d->window ? s->cap * 2 : d->window) == 0)
			d->ids += s->cap - old_cap;
	}
	if (s->count == s->cap) {
		/* full window (or no memory to grow): forget the oldest id */
		long old = slot_find(s, s->ring[s->head]);

		if (old >= 0)
			slot_delete(s, (unsigned)old);
		s->head = (s->head + 1) % s->cap;
		s->count--;
	}
	s->ring[(s->head + s->count) % s->cap] = h;
	s->count++;
	for (i = (unsigned)h & s->mask; s->slots[i]; i = (i + 1) & s->mask)
		;
	s->slots[i] = h;
	s->status[i] = (uint8_t)status;
	/* over the global budget: forget whole senders, least recent first */
	while (d->ids > d->max_ids && d->lru_tail && d->lru_tail != s)
		sender_remove(d, d->lru_tail);
	return 0;
}

size_t dedup_senders(const struct gw_dedup *d)
{
	return d->nsenders;
}

size_t dedup_ids(const struct gw_dedup *d)
{
	return d->ids;
}
