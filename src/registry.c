/*
 * registry.c - connections, channels, the bot slot and the queues, under
 * one lock (see registry.h for why one). Routing appends frames to the
 * recipients' output buffers under the lock and flushes them after it (or
 * leaves that to the end of the sender's burst, see struct gw_defer).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "dedup.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "registry.h"
#include "store.h"

enum { TO_BOT, TO_MOD };

struct gw_channel {
	struct gw_channel *hnext;     /* hash chain */
	struct gw_conn *mods;         /* linked by chan_next */
	unsigned nmods;
	struct gw_ring ring[2];       /* TO_BOT, TO_MOD */
	uint64_t dropped[2];          /* overwritten since the last delivery */
	char id[];
};

/* A small set of conns to flush once the lock is released. */
struct flush_set {
	struct gw_conn *small[32];
	struct gw_conn **v;
	size_t n, cap;
};

static struct {
	pthread_mutex_t lock;        /* the registry lock: everything below */
	pthread_cond_t pong;         /* a pong arrived (bot probes wait on it) */
	int pong_ready;              /* pong is initialized */
	const struct gw_config *cfg;
	struct gw_conn *conns;       /* every conn, newest first */
	unsigned nconns, nmods, nbots;
	struct gw_conn *bot;         /* the registered bot, or NULL */
	struct gw_channel **buckets;
	size_t nbuckets, nchannels;
	uint64_t seq;                /* acceptance order */
	uint64_t queued_msgs, queued_bytes;
	uint64_t msgs[2][3];         /* [dir][enum gw_status] */
	uint64_t dropped, duplicates;
	struct gw_dedup *seen[2];    /* recent msg_ids of mods (by server_id), of the bot */
} reg = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int restore_one(struct gw_msg *m, int dir, void *ud);

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

int registry_init(const struct gw_config *cfg)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&reg.pong, &ca);
	pthread_condattr_destroy(&ca);
	reg.pong_ready = 1;
	reg.cfg = cfg;
	reg.nbuckets = 1024;
	reg.buckets = calloc(reg.nbuckets, sizeof(*reg.buckets));
	/* about 50 MB at most for the mods' windows, a little for the bot */
	reg.seen[GW_ROLE_MOD] = dedup_new(cfg->dedup_window, (size_t)1 << 20);
	reg.seen[GW_ROLE_BOT] = dedup_new(cfg->dedup_window, (size_t)cfg->dedup_window * 4);
	if (!reg.buckets || !reg.seen[0] || !reg.seen[1])
		return -1;
	if (store_load(restore_one, NULL, &reg.seq) < 0)
		return -1;
	return 0;
}

static void channel_free(struct gw_channel *ch)
{
	for (int d = 0; d < 2; d++) {
		struct gw_msg *m;

		while ((m = ring_pop(&ch->ring[d])) != NULL) {
			reg.queued_msgs--;
			reg.queued_bytes -= msg_cost(m);
			proto_msg_unref(m);
		}
		ring_clear(&ch->ring[d]);
	}
	free(ch);
}

void registry_free(void)
{
	for (size_t i = 0; reg.buckets && i < reg.nbuckets; i++) {
		struct gw_channel *ch, *next;

		for (ch = reg.buckets[i]; ch; ch = next) {
			next = ch->hnext;
			channel_free(ch);
		}
	}
	free(reg.buckets);
	reg.buckets = NULL;
	reg.nbuckets = reg.nchannels = 0;
	for (int r = 0; r < 2; r++) {
		dedup_free(reg.seen[r]);
		reg.seen[r] = NULL;
	}
	if (reg.pong_ready)
		pthread_cond_destroy(&reg.pong);
	reg.pong_ready = 0;
	reg.seq = reg.queued_msgs = reg.queued_bytes = 0;
}

/* Channel lookup; creates it when create is set. NULL if absent/ENOMEM. */
static struct gw_channel *channel_get(const char *id, int create)
{
	size_t b = hash_str(id) & (reg.nbuckets - 1);
	struct gw_channel *ch;
	size_t len;

	for (ch = reg.buckets[b]; ch; ch = ch->hnext)
		if (strcmp(ch->id, id) == 0)
			return ch;
	if (!create)
		return NULL;
	if (reg.nchannels >= reg.nbuckets * 2) {
		/* grow: rehash into twice the buckets */
		size_t nb = reg.nbuckets * 2;
		struct gw_channel **nv = calloc(nb, sizeof(*nv));

		if (nv) {
			for (size_t i = 0; i < reg.nbuckets; i++) {
				struct gw_channel *next;

				for (ch = reg.buckets[i]; ch; ch = next) {
					size_t nbk = hash_str(ch->id) & (nb - 1);

					next = ch->hnext;
					ch->hnext = nv[nbk];
					nv[nbk] = ch;
				}
			}
			free(reg.buckets);
			reg.buckets = nv;
			reg.nbuckets = nb;
			b = hash_str(id) & (nb - 1);
		}
	}
	len = strlen(id);
	ch = calloc(1, sizeof(*ch) + len + 1);
	if (!ch)
		return NULL;
	memcpy(ch->id, id, len + 1);
	ch->hnext = reg.buckets[b];
	reg.buckets[b] = ch;
	reg.nchannels++;
	return ch;
}

/* Frees a channel that holds nothing any more, so that ids sent once cost
 * nothing forever. */
static void channel_gc(struct gw_channel *ch)
{
	struct gw_channel **pp;

	if (ch->nmods || ring_count(&ch->ring[TO_BOT]) || ring_count(&ch->ring[TO_MOD]) ||
	    ch->dropped[TO_BOT] || ch->dropped[TO_MOD])
		return;
	for (pp = &reg.buckets[hash_str(ch->id) & (reg.nbuckets - 1)]; *pp; pp = &(*pp)->hnext) {
		if (*pp == ch) {
			*pp = ch->hnext;
			reg.nchannels--;
			channel_free(ch);
			return;
		}
	}
}

static void flush_add(struct flush_set *fs, struct gw_conn *c)
{
	if (!fs->v) {
		fs->v = fs->small;
		fs->cap = sizeof(fs->small) / sizeof(fs->small[0]);
	}
	if (fs->n == fs->cap) {
		size_t cap = fs->cap * 2;
		struct gw_conn **v = malloc(cap * sizeof(*v));

		if (!v) {
			conn_flush(c);   /* under the lock, but never blocks */
			return;
		}
		memcpy(v, fs->v, fs->n * sizeof(*v));
		if (fs->v != fs->small)
			free(fs->v);
		fs->v = v;
		fs->cap = cap;
	}
	conn_ref(c);
	fs->v[fs->n++] = c;
}

/* Flushes the conns of fs, or hands them to a reader's held-back flushes
 * (d, if not NULL); then releases fs. */
static void flush_all(struct flush_set *fs, struct gw_defer *d)
{
	for (size_t i = 0; i < fs->n; i++) {
		if (d)
			conn_defer(d, fs->v[i]);
		else
			conn_flush(fs->v[i]);
		conn_unref(fs->v[i]);
	}
	if (fs->v && fs->v != fs->small)
		free(fs->v);
}

/* Presence: tells the bot (if it asked for events) that mod came or went. */
static void notify_bot(const char *event, const struct gw_conn *mod, struct flush_set *fs)
{
	char buf[3 * GW_ID_MAX * 6 + 128];
	size_t n;

	if (!reg.bot || !reg.bot->hs.events)
		return;
	n = proto_event(event, mod->hs.channel_id, mod->hs.server_id, NULL, gw_now_real(), buf,
	                sizeof(buf));
	if (n && conn_queue(reg.bot, 1, buf, n) == 0)
		flush_add(fs, reg.bot);
}

/* Presence: tells every mod that asked for events that the bot came or went. */
static void notify_mods(const char *event, const char *bot_id, struct flush_set *fs)
{
	char buf[3 * GW_ID_MAX * 6 + 128];
	size_t n = proto_event(event, NULL, NULL, bot_id, gw_now_real(), buf, sizeof(buf));

	for (struct gw_conn *c = reg.conns; n && c; c = c->next)
		if (c->registered && c->hs.role == GW_ROLE_MOD && c->hs.events &&
		    conn_queue(c, 1, buf, n) == 0)
			flush_add(fs, c);
}

/* Forgets the stored row of m, if any: it was dropped. */
static void unstore(struct gw_msg *m)
{
	if (__atomic_exchange_n(&m->stored, 0, __ATOMIC_ACQ_REL))
		store_del(m->seq);
}

/* Queues m (reference stolen) for the offline side of ch: a new message at
 * the back, or one a dropped peer had not taken at the front (it is older
 * than everything queued). With a store, m is committed to disk before this
 * returns QUEUED - under the registry lock on purpose: the ack must not
 * promise more than the disk holds, and rows must follow acceptance order. */
static enum gw_status enqueue(struct gw_channel *ch, int dir, struct gw_msg *m, int front)
{
	struct gw_msg *old;
	int err;

	if (!front && reg.queued_bytes + msg_cost(m) > reg.cfg->queue_bytes_max) {
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
	old = front ? ring_push_front(&ch->ring[dir], reg.cfg->queue_max, m, &err)
	            : ring_push(&ch->ring[dir], reg.cfg->queue_max, m, &err);
	if (err) {
		unstore(m);
		proto_msg_unref(m);
		return GW_STATUS_FAILED;
	}
	if (old != m) {
		reg.queued_msgs++;
		reg.queued_bytes += msg_cost(m);
	}
	if (old) {
		if (old != m) {
			reg.queued_msgs--;
			reg.queued_bytes -= msg_cost(old);
		}
		if (ch->dropped[dir]++ == 0)
			log_event(GW_LOG_WARN, "queue full, oldest message dropped",
			          "channel", ch->id, "direction", dir == TO_BOT ? "to_bot" : "to_mod", NULL);
		reg.dropped++;
		unstore(old);
		proto_msg_unref(old);
	}
	return GW_STATUS_QUEUED;
}

/* store_load callback: rebuilds the rings in acceptance order. */
static int restore_one(struct gw_msg *m, int dir, void *ud)
{
	struct gw_channel *ch = dir == TO_BOT || dir == TO_MOD ? channel_get(m->channel_id, 1) : NULL;
	struct gw_msg *old;
	int err;

	(void)ud;
	__atomic_store_n(&m->stored, 1, __ATOMIC_RELEASE);
	if (!ch || !(old = ring_push(&ch->ring[dir], reg.cfg->queue_max, m, &err), !err)) {
		log_event(GW_LOG_ERROR, "cannot restore a queued message", "channel", m->channel_id, NULL);
		proto_msg_unref(m);
		return -1;
	}
	reg.queued_msgs++;
	reg.queued_bytes += msg_cost(m);
	if (old) {
		/* queue_max was lowered since they were queued: the oldest go, counted */
		reg.queued_msgs--;
		reg.queued_bytes -= msg_cost(old);
		ch->dropped[dir]++;
		reg.dropped++;
		unstore(old);
		proto_msg_unref(old);
	}
	return 0;
}

/* Sends everything ch holds for direction dir to c (oldest first). */
static void drain_ring(struct gw_channel *ch, int dir, struct gw_conn *c, int64_t now)
{
	struct gw_msg *m;

	while ((m = ring_pop(&ch->ring[dir])) != NULL) {
		reg.queued_msgs--;
		reg.queued_bytes -= msg_cost(m);
		if (conn_queue_msg(c, m, ch->dropped[dir], now) == 0) {
			ch->dropped[dir] = 0;
			proto_msg_unref(m);
		} else {
			/* c is going away already: keep m for the next one */
			enqueue(ch, dir, m, 1);
			break;
		}
	}
}

/* Hands msgs (a dropped peer's unsent messages) to successor c, or back to
 * the front of their queues when c is NULL. Frees the array. */
static void give_back(struct gw_msg **msgs, size_t n, int dir, struct gw_conn *c, int64_t now)
{
	size_t i;

	for (i = 0; c && i < n; i++) {
		if (conn_queue_msg(c, msgs[i], 0, now) < 0)
			break;
		proto_msg_unref(msgs[i]);
	}
	/* the rest, newest first, each to the front of its channel's queue */
	for (size_t k = n; k-- > i;) {
		struct gw_channel *ch = channel_get(msgs[k]->channel_id, 1);

		if (ch)
			enqueue(ch, dir, msgs[k], 1);
		else
			proto_msg_unref(msgs[k]);
	}
	free(msgs);
}

struct gw_conn *registry_conn_new(const char *remote, enum gw_key_kind key)
{
	struct gw_conn *c = NULL;

	pthread_mutex_lock(&reg.lock);
	if (reg.nconns < reg.cfg->max_connections && (c = conn_new()) != NULL) {
		snprintf(c->remote, sizeof(c->remote), "%s", remote);
		c->key = key;
		c->next = reg.conns;
		if (reg.conns)
			reg.conns->prev = c;
		reg.conns = c;
		reg.nconns++;
	}
	pthread_mutex_unlock(&reg.lock);
	return c;
}

/* Removes a registered c from its slot. (registry lock) */
static void unregister(struct gw_conn *c)
{
	if (!c->registered)
		return;
	c->registered = 0;
	if (c->hs.role == GW_ROLE_BOT) {
		if (reg.bot == c)
			reg.bot = NULL;
		reg.nbots--;
	} else {
		struct gw_channel *ch = c->channel;
		struct gw_conn **pp;

		for (pp = &ch->mods; *pp; pp = &(*pp)->chan_next) {
			if (*pp == c) {
				*pp = c->chan_next;
				break;
			}
		}
		c->chan_next = NULL;
		ch->nmods--;
		reg.nmods--;
	}
}

void registry_disconnect(struct gw_conn *c)
{
	struct flush_set fs = { .n = 0 };
	struct gw_msg **unsent;
	size_t n;
	int role, last = 0;
	struct gw_channel *ch;

	pthread_mutex_lock(&reg.lock);
	unsent = conn_detach(c, &n);
	role = c->hs.role;
	ch = c->channel;
	if (c->registered) {
		unregister(c);
		last = role == GW_ROLE_MOD && ch->nmods == 0;
		if (role == GW_ROLE_MOD)
			notify_bot("mod_disconnected", c, &fs);
		else
			notify_mods("bot_disconnected", c->hs.bot_id, &fs);
	}
	if (role == GW_ROLE_BOT || last) {
		give_back(unsent, n, role == GW_ROLE_BOT ? TO_BOT : TO_MOD, NULL, 0);
	} else {
		/* other mods of the channel had these */
		for (size_t i = 0; i < n; i++)
			proto_msg_unref(unsent[i]);
		free(unsent);
	}
	if (ch) {
		c->channel = NULL;
		channel_gc(ch);
	}
	pthread_mutex_unlock(&reg.lock);
	flush_all(&fs, NULL);
}

void registry_release(struct gw_conn *c)
{
	registry_disconnect(c);
	pthread_mutex_lock(&reg.lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		reg.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	reg.nconns--;
	pthread_mutex_unlock(&reg.lock);
	conn_unref(c);
}

/* The "connected" reply. A mod that asked for events learns whether the bot
 * is there; a bot that asked gets the list of mods online. (registry lock) */
static void reply_connected(struct gw_conn *c)
{
	char small[96], *buf = small;
	size_t n, cap = sizeof(small);

	if (!c->hs.events) {
		n = proto_connected(c->hs.role, small, sizeof(small));
	} else if (c->hs.role == GW_ROLE_MOD) {
		n = (size_t)snprintf(small, sizeof(small), "{\"status\":\"connected\",\"type\":\"mod\",\"bot\":%s}",
		                     reg.bot ? "true" : "false");
	} else {
		size_t need = 64;

		for (struct gw_conn *m = reg.conns; m; m = m->next)
			if (m->registered && m->hs.role == GW_ROLE_MOD)
				need += 6 * (strlen(m->hs.channel_id) + strlen(m->hs.server_id)) + 40;
		if (!(buf = malloc(need))) {
			buf = small;
			n = proto_connected(c->hs.role, small, sizeof(small));
		} else {
			cap = need;
			n = (size_t)snprintf(buf, cap, "{\"status\":\"connected\",\"type\":\"bot\",\"mods\":[");
			for (struct gw_conn *m = reg.conns; m; m = m->next) {
				if (!m->registered || m->hs.role != GW_ROLE_MOD)
					continue;
				n += (size_t)snprintf(buf + n, cap - n, "%s{\"channel_id\":", buf[n - 1] == '[' ? "" : ",");
				n += proto_json_string(m->hs.channel_id, buf + n, cap - n);
				n += (size_t)snprintf(buf + n, cap - n, ",\"server_id\":");
				n += proto_json_string(m->hs.server_id, buf + n, cap - n);
				n += (size_t)snprintf(buf + n, cap - n, "}");
			}
			n += (size_t)snprintf(buf + n, cap - n, "]}");
		}
	}
	conn_queue(c, 1, buf, n);
	if (buf != small)
		free(buf);
}

static enum gw_join join_mod(struct gw_conn *c)
{
	struct flush_set fs = { .n = 0 };
	struct gw_channel *ch;
	struct gw_conn *old;
	struct gw_msg **stolen = NULL;
	size_t n = 0;
	int64_t now = gw_now_real();

	pthread_mutex_lock(&reg.lock);
	ch = channel_get(c->hs.channel_id, 1);
	if (!ch) {
		pthread_mutex_unlock(&reg.lock);
		return GW_JOIN_CLOSED;
	}
	for (old = ch->mods; old; old = old->chan_next)
		if (strcmp(old->hs.server_id, c->hs.server_id) == 0)
			break;
	if (old) {
		/* same server_id on the same channel: the newcomer replaces it
		 * and receives what it had not taken */
		unregister(old);
		old->channel = NULL;
		conn_set_why(old, "replaced");
		stolen = conn_takeover(old, 1000, "Replaced by a new connection.", &n);
		log_event(GW_LOG_INFO, "mod replaced", "remote", old->remote,
		          "server_id", old->hs.server_id, "channel", ch->id, NULL);
	}
	pthread_mutex_lock(&c->lock);
	c->state = c->state == GW_CONN_OPEN ? GW_CONN_READY : c->state;
	pthread_mutex_unlock(&c->lock);
	c->chan_next = ch->mods;
	ch->mods = c;
	ch->nmods++;
	reg.nmods++;
	c->channel = ch;
	c->registered = 1;
	reply_connected(c);
	give_back(stolen, n, TO_MOD, c, now);
	drain_ring(ch, TO_MOD, c, now);
	notify_bot("mod_connected", c, &fs);
	pthread_mutex_unlock(&reg.lock);
	conn_flush(c);
	flush_all(&fs, NULL);
	return GW_JOIN_OK;
}

static enum gw_join join_bot(struct gw_conn *c)
{
	struct flush_set fs = { .n = 0 };
	struct gw_conn *old;
	struct gw_msg **stolen = NULL;
	size_t n = 0;
	int64_t now;

	pthread_mutex_lock(&reg.lock);
	while ((old = reg.bot) != NULL) {
		/* A bot holds the slot: is it alive? Ping it and wait for any
		 * pong, so a bot whose link died silently cannot lock us out. */
		struct timespec until;
		int64_t deadline = gw_now_mono() + (int64_t)reg.cfg->bot_probe_timeout * 1000;
		uint64_t pongs = __atomic_load_n(&old->pongs, __ATOMIC_ACQUIRE);

		conn_ref(old);
		conn_send(old, 9, "probe", 5);
		until.tv_sec = deadline / 1000;
		until.tv_nsec = (deadline % 1000) * 1000000;
		while (reg.bot == old && __atomic_load_n(&old->pongs, __ATOMIC_ACQUIRE) == pongs &&
		       gw_now_mono() < deadline)
			pthread_cond_timedwait(&reg.pong, &reg.lock, &until);
		if (reg.bot == old) {
			if (__atomic_load_n(&old->pongs, __ATOMIC_ACQUIRE) != pongs) {
				pthread_mutex_unlock(&reg.lock);
				conn_unref(old);
				return GW_JOIN_CONFLICT;
			}
			unregister(old);
			conn_set_why(old, "no answer to probe");
			stolen = conn_takeover(old, 1000, "Replaced: no answer to a probe.", &n);
			log_event(GW_LOG_WARN, "bot did not answer a probe, replaced", "remote", old->remote,
			          "bot_id", old->hs.bot_id, NULL);
		}
		conn_unref(old);
		/* else the old bot left meanwhile: look again */
	}
	pthread_mutex_lock(&c->lock);
	if (c->state != GW_CONN_OPEN) {
		/* our own peer went away while we waited */
		pthread_mutex_unlock(&c->lock);
		give_back(stolen, n, TO_BOT, NULL, 0);
		pthread_mutex_unlock(&reg.lock);
		return GW_JOIN_CLOSED;
	}
	c->state = GW_CONN_READY;
	pthread_mutex_unlock(&c->lock);
	reg.bot = c;
	reg.nbots++;
	c->registered = 1;
	now = gw_now_real();
	reply_connected(c);
	give_back(stolen, n, TO_BOT, c, now);
	for (size_t i = 0; i < reg.nbuckets; i++) {
		struct gw_channel *ch, *next;

		for (ch = reg.buckets[i]; ch; ch = next) {
			next = ch->hnext;
			drain_ring(ch, TO_BOT, c, now);
			channel_gc(ch);
		}
	}
	notify_mods("bot_connected", c->hs.bot_id, &fs);
	pthread_mutex_unlock(&reg.lock);
	conn_flush(c);
	flush_all(&fs, NULL);
	return GW_JOIN_OK;
}

enum gw_join registry_join(struct gw_conn *c)
{
	if (c->hs.role == GW_ROLE_MOD)
		return c->key == GW_KEY_BOT ? GW_JOIN_FORBIDDEN : join_mod(c);
	return c->key == GW_KEY_MOD ? GW_JOIN_FORBIDDEN : join_bot(c);
}

enum gw_status registry_route(struct gw_conn *c, struct gw_msg *m, int *duplicate,
                              struct gw_defer *defer)
{
	struct flush_set fs = { .n = 0 };
	struct gw_channel *ch;
	enum gw_status st = GW_STATUS_QUEUED;
	int64_t now = gw_now_real();
	int dir = c->hs.role == GW_ROLE_MOD ? TO_BOT : TO_MOD, first;
	struct gw_dedup *seen = reg.seen[c->hs.role];

	*duplicate = 0;
	pthread_mutex_lock(&reg.lock);
	if (dedup_seen(seen, m->sender, m->msg_id, &first)) {
		/* a retry of something already accepted: answer as the first time */
		*duplicate = 1;
		reg.duplicates++;
		pthread_mutex_unlock(&reg.lock);
		proto_msg_unref(m);
		return (enum gw_status)first;
	}
	m->seq = ++reg.seq;
	proto_msg_ref(m);   /* to remember its msg_id once routed */
	ch = channel_get(m->channel_id, 1);
	if (!ch) {
		st = GW_STATUS_FAILED;
	} else if (dir == TO_BOT && reg.bot) {
		if (conn_queue_msg(reg.bot, m, ch->dropped[dir], now) == 0) {
			ch->dropped[dir] = 0;
			st = GW_STATUS_COMPLETED;
			flush_add(&fs, reg.bot);
		}
	} else if (dir == TO_MOD) {
		uint64_t dropped = ch->dropped[dir];

		for (struct gw_conn *mod = ch->mods; mod; mod = mod->chan_next) {
			if (conn_queue_msg(mod, m, dropped, now) == 0) {
				ch->dropped[dir] = 0;
				st = GW_STATUS_COMPLETED;
				flush_add(&fs, mod);
			}
		}
	}
	if (st == GW_STATUS_COMPLETED)
		proto_msg_unref(m);
	else if (ch && st == GW_STATUS_QUEUED)
		st = enqueue(ch, dir, m, 0);
	else
		proto_msg_unref(m);
	if (ch)
		channel_gc(ch);
	reg.msgs[dir][st]++;
	if (st != GW_STATUS_FAILED)
		dedup_record(seen, m->sender, m->msg_id, (int)st);
	pthread_mutex_unlock(&reg.lock);
	proto_msg_unref(m);
	flush_all(&fs, defer);
	return st;
}

void registry_pong(struct gw_conn *c)
{
	pthread_mutex_lock(&reg.lock);
	__atomic_add_fetch(&c->pongs, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&reg.pong);
	pthread_mutex_unlock(&reg.lock);
}

void registry_tick(int64_t now)
{
	const struct gw_config *cfg = reg.cfg;
	char buf[96];
	size_t n;

	pthread_mutex_lock(&reg.lock);
	for (struct gw_conn *c = reg.conns; c; c = c->next) {
		enum gw_conn_state st;

		switch (conn_housekeep(c, now, (int64_t)cfg->write_timeout * 1000, &st)) {
		case 1:
			metrics_inc(GW_M_WRITE_TIMEOUTS);
			continue;
		case 2:
			continue;
		}
		if (st == GW_CONN_OPEN && now - c->created_ms >= (int64_t)cfg->handshake_timeout * 1000) {
			log_event(GW_LOG_INFO, "handshake timeout", "remote", c->remote, NULL);
			n = proto_error("Handshake timeout.", 408, NULL, buf, sizeof(buf));
			conn_queue(c, 1, buf, n);
			conn_set_why(c, "handshake timeout");
			conn_close(c, 1000, "Handshake timeout.", 1000);
		} else if (st == GW_CONN_READY) {
			int64_t seen = __atomic_load_n(&c->last_seen_ms, __ATOMIC_ACQUIRE);

			if (now - seen >= (int64_t)cfg->read_timeout * 1000) {
				log_event(GW_LOG_INFO, "read timeout, dropping peer", "remote", c->remote,
				          "role", proto_role_name(c->hs.role), NULL);
				conn_set_why(c, "read timeout");
				metrics_inc(GW_M_READ_TIMEOUTS);
				conn_close(c, 1000, "Read timeout.", 1000);
			} else if (now - c->last_ping_ms >= (int64_t)cfg->ping_interval * 1000) {
				c->last_ping_ms = now;
				conn_send(c, 9, NULL, 0);
			}
		}
	}
	pthread_mutex_unlock(&reg.lock);
}

void registry_revoke(unsigned kinds)
{
	pthread_mutex_lock(&reg.lock);
	for (struct gw_conn *c = reg.conns; c; c = c->next) {
		if (kinds & (1u << c->key)) {
			conn_set_why(c, "key revoked");
			conn_close(c, 1008, "Key revoked.", 1000);
		}
	}
	pthread_mutex_unlock(&reg.lock);
}

void registry_close_all(int code, const char *reason)
{
	pthread_mutex_lock(&reg.lock);
	for (struct gw_conn *c = reg.conns; c; c = c->next) {
		conn_set_why(c, "shutdown");
		conn_close(c, code, reason, 1000);
	}
	pthread_mutex_unlock(&reg.lock);
}

unsigned registry_count(void)
{
	unsigned n;

	pthread_mutex_lock(&reg.lock);
	n = reg.nconns;
	pthread_mutex_unlock(&reg.lock);
	return n;
}

void registry_stats(struct gw_stats *st)
{
	pthread_mutex_lock(&reg.lock);
	st->mods = reg.nmods;
	st->bots = reg.nbots;
	st->pending = reg.nconns - reg.nmods - reg.nbots;
	st->channels = (unsigned)reg.nchannels;
	st->queued_msgs = reg.queued_msgs;
	st->queued_bytes = reg.queued_bytes;
	memcpy(st->msgs, reg.msgs, sizeof(st->msgs));
	st->dropped = reg.dropped;
	st->duplicates = reg.duplicates;
	pthread_mutex_unlock(&reg.lock);
}
