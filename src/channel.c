/*
 * channel.c - the channel table (a chained hash table that doubles as it
 * fills) and each channel's streams (see channel.h). Every counter of
 * queued and kept messages is kept here, where messages enter and leave.
 *
 * The histories of all streams are also linked, oldest first, through
 * gw_msg's hist_prev/hist_next, so that history_bytes_max lets the oldest
 * kept message of the whole gateway go first. Rows of messages let go
 * (overwritten in a queue, out of a history) are deleted with the next
 * store write, in its transaction: one commit per accepted message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "channel.h"
#include "log.h"
#include "store.h"

static struct {
	const struct gw_config *cfg;
	struct gw_channel **buckets;
	size_t nbuckets, nchannels;
	uint64_t msgs, bytes;        /* queued, over all channels */
	uint64_t kept, kept_bytes;   /* in histories */
	uint64_t dropped;            /* overwritten since start */
	struct gw_msg *oldest, *newest;   /* every history, linked */
	struct gw_msg **gone;        /* let go: their rows go at the next write */
	size_t ngone, gone_cap;
	char epoch[GW_EPOCH_MAX + 1];
	void (*seen)(const struct gw_msg *, enum gw_status);
} tab;

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

/* m left its stream without being delivered or kept: its row goes with the
 * next write (if it has one). Takes over the caller's reference. */
static void let_go(struct gw_msg *m)
{
	if (store_enabled() && m->seq > 0) {
		if (tab.ngone == tab.gone_cap) {
			size_t cap = tab.gone_cap ? 2 * tab.gone_cap : 64;
			struct gw_msg **v = realloc(tab.gone, cap * sizeof(*v));

			if (!v) {
				/* no room to remember it: delete it now */
				store_write(NULL, GW_ROW_QUEUED, &m, 1, GW_ROW_GONE);
				proto_msg_unref(m);
				return;
			}
			tab.gone = v;
			tab.gone_cap = cap;
		}
		tab.gone[tab.ngone++] = m;
		return;
	}
	proto_msg_unref(m);
}

static void gone_clear(void)
{
	for (size_t i = 0; i < tab.ngone; i++)
		proto_msg_unref(tab.gone[i]);
	tab.ngone = 0;
}

/* Unlinks m from the list of every history. */
static void hist_unlink(struct gw_msg *m)
{
	if (m->hist_prev)
		m->hist_prev->hist_next = m->hist_next;
	else
		tab.oldest = m->hist_next;
	if (m->hist_next)
		m->hist_next->hist_prev = m->hist_prev;
	else
		tab.newest = m->hist_prev;
	m->hist_prev = m->hist_next = NULL;
	tab.kept--;
	tab.kept_bytes -= msg_cost(m);
}

static struct gw_stream *stream_of(struct gw_channel *ch, const struct gw_msg *m)
{
	return &ch->stream[proto_dir_of(m->from)];
}

static void channel_free(struct gw_channel *ch)
{
	for (int d = 0; d < 2; d++) {
		struct gw_msg *m;

		while ((m = channel_pop(ch, (enum gw_dir)d)) != NULL)
			proto_msg_unref(m);
		while ((m = ring_pop(&ch->stream[d].hist)) != NULL) {
			hist_unlink(m);
			proto_msg_unref(m);
		}
		ring_clear(&ch->stream[d].queue);
		ring_clear(&ch->stream[d].hist);
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

	for (int d = 0; d < 2; d++)
		if (ch->stream[d].seq || ring_count(&ch->stream[d].queue) ||
		    ring_count(&ch->stream[d].hist) || ch->stream[d].dropped)
			return;
	if (ch->nmods)
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

int channel_room(const struct gw_msg *m)
{
	return tab.bytes + msg_cost(m) <= tab.cfg->queue_bytes_max;
}

int channel_accept(struct gw_channel *ch, struct gw_msg *m, enum gw_row state)
{
	struct gw_stream *st = stream_of(ch, m);

	m->seq = st->seq + 1;
	if (store_enabled()) {
		if (store_write(m, state, tab.gone, tab.ngone, GW_ROW_GONE) < 0) {
			m->seq = 0;
			return -1;
		}
		gone_clear();
		__atomic_store_n(&m->stored, state == GW_ROW_QUEUED, __ATOMIC_RELEASE);
	}
	st->seq++;
	return 0;
}

/* Lets the oldest kept message of the gateway go. Each stream's history
 * and the list of all are appended to together and lose their newest
 * together (channel_unkeep), so the oldest of all is the oldest of its
 * own stream. */
static void hist_evict_oldest(void)
{
	struct gw_msg *m = tab.oldest;
	struct gw_channel *ch = channel_get(m->channel_id, 0);

	if (ch && ring_at(&stream_of(ch, m)->hist, 0) == m)
		ring_pop(&stream_of(ch, m)->hist);
	hist_unlink(m);
	let_go(m);
}

void channel_keep(struct gw_channel *ch, struct gw_msg *m)
{
	struct gw_stream *st = stream_of(ch, m);
	struct gw_msg *newest = ring_count(&st->hist) ? ring_at(&st->hist, ring_count(&st->hist) - 1)
	                                              : NULL;
	struct gw_msg *old;
	int err;

	if (newest && newest->seq >= m->seq) {
		proto_msg_unref(m);   /* kept already: a message put back, handed again */
		return;
	}
	old = ring_push(&st->hist, tab.cfg->history, m, &err);
	if (err || old == m) {
		let_go(m);   /* not kept (no history, or no memory): a resume says missed */
		return;
	}
	m->hist_prev = tab.newest;
	m->hist_next = NULL;
	if (tab.newest)
		tab.newest->hist_next = m;
	else
		tab.oldest = m;
	tab.newest = m;
	tab.kept++;
	tab.kept_bytes += msg_cost(m);
	if (old) {
		hist_unlink(old);
		let_go(old);
	}
	while (tab.kept_bytes > tab.cfg->history_bytes_max && tab.oldest && tab.oldest != m)
		hist_evict_oldest();
}

int channel_unkeep(struct gw_channel *ch, struct gw_msg *m)
{
	struct gw_stream *st = stream_of(ch, m);
	unsigned n = ring_count(&st->hist);

	if (n == 0 || ring_at(&st->hist, n - 1) != m)
		return 0;
	ring_pop_back(&st->hist);
	hist_unlink(m);
	proto_msg_unref(m);   /* the history's reference */
	return 1;
}

void channel_enqueue(struct gw_channel *ch, struct gw_msg *m, int front)
{
	struct gw_stream *st = stream_of(ch, m);
	enum gw_dir dir = proto_dir_of(m->from);
	struct gw_msg *old;
	int err;

	/* a row that says handed (put back, or refused by every recipient)
	 * says queued again, so that a restart queues it too */
	if (store_enabled() && !__atomic_exchange_n(&m->stored, 1, __ATOMIC_ACQ_REL))
		store_write(NULL, GW_ROW_QUEUED, &m, 1, GW_ROW_QUEUED);
	old = front ? ring_push_front(&st->queue, tab.cfg->queue_max, m, &err)
	            : ring_push(&st->queue, tab.cfg->queue_max, m, &err);
	if (err) {
		old = m;   /* no memory: lost like an overwritten one, and counted */
	} else if (old != m) {
		tab.msgs++;
		tab.bytes += msg_cost(m);
	}
	if (!old)
		return;
	if (old != m) {
		tab.msgs--;
		tab.bytes -= msg_cost(old);
	}
	if (st->dropped++ == 0)
		log_event(GW_LOG_WARN, "queue full, oldest message dropped", "channel", ch->id,
		          "direction", dir == GW_TO_BOT ? "to_bot" : "to_mod", NULL);
	tab.dropped++;
	let_go(old);
}

struct gw_msg *channel_pop(struct gw_channel *ch, enum gw_dir dir)
{
	struct gw_msg *m = ring_pop(&ch->stream[dir].queue);

	if (m) {
		tab.msgs--;
		tab.bytes -= msg_cost(m);
	}
	return m;
}

/* store_load callbacks: the counters, then the rows in write order. */
static int restore_stream(const char *channel, enum gw_dir dir, uint64_t seq, void *ud)
{
	struct gw_channel *ch = channel_get(channel, 1);

	(void)ud;
	if (!ch)
		return -1;
	if (seq > ch->stream[dir].seq)
		ch->stream[dir].seq = seq;
	return 0;
}

static int restore_one(struct gw_msg *m, enum gw_row state, void *ud)
{
	struct gw_channel *ch = channel_get(m->channel_id, 1);
	struct gw_stream *st;

	(void)ud;
	if (!ch) {
		log_event(GW_LOG_ERROR, "cannot restore a stored message", "channel", m->channel_id,
		          NULL);
		proto_msg_unref(m);
		return -1;
	}
	st = stream_of(ch, m);
	if (m->seq > st->seq)
		st->seq = m->seq;   /* a file older than its counters */
	if (tab.seen)
		tab.seen(m, state == GW_ROW_QUEUED ? GW_STATUS_QUEUED : GW_STATUS_COMPLETED);
	if (state == GW_ROW_QUEUED) {
		__atomic_store_n(&m->stored, 1, __ATOMIC_RELEASE);
		channel_enqueue(ch, m, 0);   /* a lowered queue_max drops the oldest, counted */
	} else {
		channel_keep(ch, m);         /* a lowered history lets the oldest go */
	}
	return 0;
}

/* A new epoch when there is no store: 16 hex digits. */
static void epoch_new(char *out)
{
	unsigned char b[8];
	uint64_t t = (uint64_t)time(NULL) * 2654435761u;

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		memcpy(b, &t, sizeof(b));
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

int channels_init(const struct gw_config *cfg,
                  void (*seen)(const struct gw_msg *m, enum gw_status st))
{
	tab.cfg = cfg;
	tab.seen = seen;
	tab.nbuckets = 1024;
	tab.buckets = calloc(tab.nbuckets, sizeof(*tab.buckets));
	if (!tab.buckets)
		return -1;
	if (store_epoch())
		snprintf(tab.epoch, sizeof(tab.epoch), "%s", store_epoch());
	else
		epoch_new(tab.epoch);
	if (store_load(restore_stream, restore_one, NULL) < 0)
		return -1;
	/* what the limits let go at load leaves the file now */
	if (tab.ngone && store_write(NULL, GW_ROW_QUEUED, tab.gone, tab.ngone, GW_ROW_GONE) == 0)
		gone_clear();
	return 0;
}

const char *channels_epoch(void)
{
	return tab.epoch;
}

static void free_one(struct gw_channel *ch, void *ud)
{
	(void)ud;
	channel_free(ch);
}

void channels_free(void)
{
	channels_each(free_one, NULL);
	gone_clear();
	free(tab.gone);
	free(tab.buckets);
	memset(&tab, 0, sizeof(tab));
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
	t->kept = tab.kept;
	t->kept_bytes = tab.kept_bytes;
	t->dropped = tab.dropped;
	t->channels = (unsigned)tab.nchannels;
}
