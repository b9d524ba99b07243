/*
 * channel.c - the channel table (a chained hash table that doubles as it
 * fills) and the queues of each channel (see channel.h). Every counter of
 * queued messages and bytes is kept here, where messages enter and leave.
 */
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "log.h"
#include "store.h"

static struct {
	const struct gw_config *cfg;
	struct gw_channel **buckets;
	size_t nbuckets, nchannels;
	uint64_t msgs, bytes;        /* queued, over all channels */
	uint64_t dropped;            /* overwritten since start */
} tab;

static int restore_one(struct gw_msg *m, enum gw_dir dir, void *ud);


static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static size_t msg_cost(const struct gw_msg *m)
{
	return sizeof(*m) + m->body_len + 64;
}

static void channel_free(struct gw_channel *ch)
{
	for (int d = 0; d < 2; d++) {
		struct gw_msg *m;

		while ((m = ring_pop(&ch->ring[d])) != NULL) {
			tab.msgs--;
			tab.bytes -= msg_cost(m);
			proto_msg_unref(m);
		}
		ring_clear(&ch->ring[d]);
	}
	free(ch);
}

struct gw_channel *channel_get(const char *id, int create)
{
	size_t b = hash_str(id) & (tab.nbuckets - 1);
	struct gw_channel *ch;
	size_t len;

	for (ch = tab.buckets[b]; ch; ch = ch->hnext)
		if (strcmp(ch->id, id) == 0)
			return ch;
	if (!create)
		return NULL;
	if (tab.nchannels >= tab.nbuckets * 2) {
		/* grow: rehash into twice the buckets */
		size_t nb = tab.nbuckets * 2;
		struct gw_channel **nv = calloc(nb, sizeof(*nv));

		if (nv) {
			for (size_t i = 0; i < tab.nbuckets; i++) {
				struct gw_channel *next;

				for (ch = tab.buckets[i]; ch; ch = next) {
					size_t nbk = hash_str(ch->id) & (nb - 1);

					next = ch->hnext;
					ch->hnext = nv[nbk];
					nv[nbk] = ch;
				}
			}
			free(tab.buckets);
			tab.buckets = nv;
			tab.nbuckets = nb;
			b = hash_str(id) & (nb - 1);
		}
	}
	len = strlen(id);
	ch = calloc(1, sizeof(*ch) + len + 1);
	if (!ch)
		return NULL;
	memcpy(ch->id, id, len + 1);
	ch->hnext = tab.buckets[b];
	tab.buckets[b] = ch;
	tab.nchannels++;
	return ch;
}

void channel_gc(struct gw_channel *ch)
{
	struct gw_channel **pp;

	if (ch->nmods || ring_count(&ch->ring[GW_TO_BOT]) || ring_count(&ch->ring[GW_TO_MOD]) ||
	    ch->dropped[GW_TO_BOT] || ch->dropped[GW_TO_MOD])
		return;
	for (pp = &tab.buckets[hash_str(ch->id) & (tab.nbuckets - 1)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == ch) {
			*pp = ch->hnext;
			tab.nchannels--;
			channel_free(ch);
			return;
		}
	}
}

void channel_unstore(struct gw_msg *m)
{
	if (__atomic_exchange_n(&m->stored, 0, __ATOMIC_ACQ_REL))
		store_del(&m->seq, 1);
}

/* Under the registry lock on purpose, store writes included (channel.h). */
enum gw_status channel_enqueue(struct gw_channel *ch, enum gw_dir dir, struct gw_msg *m,
                               int front)
{
	struct gw_msg *old;
	int err;

	if (!front && tab.bytes + msg_cost(m) > tab.cfg->queue_bytes_max) {
		proto_msg_unref(m);
		return GW_STATUS_FAILED;
	}
	if (store_enabled() && !__atomic_load_n(&m->stored, __ATOMIC_ACQUIRE)) {
		if (store_put(m, dir) == 0) {
			__atomic_store_n(&m->stored, 1, __ATOMIC_RELEASE);
		} else if (!front) {
			proto_msg_unref(m);
			return GW_STATUS_FAILED;
		}
	}
	old = front ? ring_push_front(&ch->ring[dir], tab.cfg->queue_max, m, &err)
	            : ring_push(&ch->ring[dir], tab.cfg->queue_max, m, &err);
	if (err) {
		channel_unstore(m);
		proto_msg_unref(m);
		return GW_STATUS_FAILED;
	}
	if (old != m) {
		tab.msgs++;
		tab.bytes += msg_cost(m);
	}
	if (old) {
		if (old != m) {
			tab.msgs--;
			tab.bytes -= msg_cost(old);
		}
		if (ch->dropped[dir]++ == 0)
			log_event(GW_LOG_WARN, "queue full, oldest message dropped",
			          "channel", ch->id, "direction", dir == GW_TO_BOT ? "to_bot" : "to_mod", NULL);
		tab.dropped++;
		channel_unstore(old);
		proto_msg_unref(old);
	}
	return GW_STATUS_QUEUED;
}

/* store_load callback: rebuilds the rings in acceptance order. */
static int restore_one(struct gw_msg *m, enum gw_dir dir, void *ud)
{
	struct gw_channel *ch = channel_get(m->channel_id, 1);
	struct gw_msg *old;
	int err;

	(void)ud;
	__atomic_store_n(&m->stored, 1, __ATOMIC_RELEASE);
	if (!ch || !(old = ring_push(&ch->ring[dir], tab.cfg->queue_max, m, &err), !err)) {
		log_event(GW_LOG_ERROR, "cannot restore a queued message", "channel", m->channel_id, NULL);
		proto_msg_unref(m);
		return -1;
	}
	tab.msgs++;
	tab.bytes += msg_cost(m);
	if (old) {
		/* queue_max was lowered since they were queued: the oldest go, counted */
		tab.msgs--;
		tab.bytes -= msg_cost(old);
		ch->dropped[dir]++;
		tab.dropped++;
		channel_unstore(old);
		proto_msg_unref(old);
	}
	return 0;
}

int channels_init(const struct gw_config *cfg, uint64_t *max_seq)
{
	tab.cfg = cfg;
	tab.nbuckets = 1024;
	tab.buckets = calloc(tab.nbuckets, sizeof(*tab.buckets));
	if (!tab.buckets)
		return -1;
	return store_load(restore_one, NULL, max_seq) < 0 ? -1 : 0;
}

static void free_one(struct gw_channel *ch, void *ud)
{
	(void)ud;
	channel_free(ch);
}

void channels_free(void)
{
	channels_each(free_one, NULL);
	free(tab.buckets);
	memset(&tab, 0, sizeof(tab));
}

struct gw_msg *channel_pop(struct gw_channel *ch, enum gw_dir dir)
{
	struct gw_msg *m = ring_pop(&ch->ring[dir]);

	if (m) {
		tab.msgs--;
		tab.bytes -= msg_cost(m);
	}
	return m;
}

void channels_each(void (*fn)(struct gw_channel *ch, void *ud), void *ud)
{
	for (size_t i = 0; tab.buckets && i < tab.nbuckets; i++) {
		struct gw_channel *ch, *next;

		for (ch = tab.buckets[i]; ch; ch = next) {
			next = ch->hnext;
			fn(ch, ud);
		}
	}
}

void channels_totals(struct gw_queue_totals *t)
{
	t->msgs = tab.msgs;
	t->bytes = tab.bytes;
	t->dropped = tab.dropped;
	t->channels = (unsigned)tab.nchannels;
}
