/*
 * registry.c - connections, channels, the bot slot and the queues, under
 * one lock (see registry.h for why one). Routing appends frames to the
 * recipients' output buffers under the lock and adds the recipients to the
 * caller's held-back flushes (struct gw_defer), sent after the lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "channel.h"
#include "clock.h"
#include "dedup.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "store.h"

static struct {
	pthread_mutex_t lock;        /* the registry lock: everything below */
	pthread_cond_t pong;         /* a pong arrived (bot probes wait on it) */
	int pong_ready;              /* pong is initialized */
	const struct gw_config *cfg;
	struct gw_conn *conns;       /* every conn, newest first */
	struct gw_conn *tick_next;   /* the next conn the tick visits (see registry_tick) */
	int64_t round_due;           /* monotonic: when the tick's next round may begin */
	unsigned nconns, nmods, nbots;
	struct gw_conn *bot;         /* the registered bot, or NULL */
	struct gw_conn **names;      /* registered mods by (channel, server_id): */
	size_t names_cap;            /* buckets, a power of two (0: none yet) */
	uint64_t msgs[2][3];         /* [dir][enum gw_status] */
	uint64_t duplicates;
	struct gw_dedup *seen[2];    /* recent msg_ids of mods (by server_id), of the bot */
	int stopping;                /* registry_close_all ran: no new conns (also atomic) */
} reg = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* channels_init: a message restored from the store was accepted before;
 * its sender's retry is a duplicate. */
static void restore_seen(const struct gw_msg *m, enum gw_status st)
{
	dedup_record(reg.seen[m->from], m->sender, m->msg_id, (int)st);
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
	reg.round_due = 0;   /* the first tick begins a round */
	/* about 50 MB at most for the mods' windows, a little for the bot */
	reg.seen[GW_ROLE_MOD] = dedup_new(cfg->dedup_window, (size_t)1 << 20);
	reg.seen[GW_ROLE_BOT] = dedup_new(cfg->dedup_window, (size_t)cfg->dedup_window * 4);
	if (!reg.seen[0] || !reg.seen[1])
		return -1;
	return channels_init(cfg, restore_seen);
}

void registry_free(void)
{
	channels_free();
	free(reg.names);
	reg.names = NULL;
	reg.names_cap = 0;
	for (int r = 0; r < 2; r++) {
		dedup_free(reg.seen[r]);
		reg.seen[r] = NULL;
	}
	if (reg.pong_ready)
		pthread_cond_destroy(&reg.pong);
	reg.pong_ready = 0;
}

/* Presence: tells the bot (if it asked for events) that mod came or went. */
static void notify_bot(const char *event, const struct gw_conn *mod, struct gw_defer *d)
{
	char buf[3 * GW_ID_MAX * 6 + 128];
	size_t n;

	if (!reg.bot || !reg.bot->hs.events)
		return;
	n = proto_event(event, mod->hs.channel_id, mod->hs.server_id, NULL, gw_now_real(), buf,
	                sizeof(buf));
	if (n && conn_queue(reg.bot, GW_OP_TEXT, buf, n) == 0)
		defer_add(d, reg.bot);
}

/* Presence: tells every mod that asked for events that the bot came or went. */
static void notify_mods(const char *event, const char *bot_id, struct gw_defer *d)
{
	char buf[3 * GW_ID_MAX * 6 + 128];
	size_t n = proto_event(event, NULL, NULL, bot_id, gw_now_real(), buf, sizeof(buf));

	for (struct gw_conn *c = reg.conns; n && c; c = c->next)
		if (c->registered && c->hs.role == GW_ROLE_MOD && c->hs.events &&
		    conn_queue(c, GW_OP_TEXT, buf, n) == 0)
			defer_add(d, c);
}

/* Hands the queue of (ch, dir) to c, oldest first, each handed message
 * kept in the history. */
static void drain_queue(struct gw_channel *ch, enum gw_dir dir, struct gw_conn *c)
{
	struct gw_stream *st = &ch->stream[dir];
	struct gw_msg *m;

	while ((m = channel_pop(ch, dir)) != NULL) {
		if (conn_queue_backlog(c, m, st->dropped) < 0) {
			channel_enqueue(ch, m, 1);   /* c is going away already: the next one */
			break;
		}
		st->dropped = 0;
		channel_keep(ch, m);
	}
}

/* How many messages of (ch, dir) after `since` a resume cannot hand over
 * (let go from the history, overwritten in the queue). */
static uint64_t resume_missed(struct gw_channel *ch, enum gw_dir dir, uint64_t since)
{
	struct gw_stream *st = &ch->stream[dir];
	uint64_t held = 0;
	unsigned i;

	if (st->seq <= since)
		return 0;
	for (i = 0; i < ring_count(&st->hist); i++)
		held += ring_at(&st->hist, i)->seq > since;
	for (i = 0; i < ring_count(&st->queue); i++)
		held += ring_at(&st->queue, i)->seq > since;
	return held < st->seq - since ? st->seq - since - held : 0;
}

/* A resume: hands c every kept message of (ch, dir) after `since`, then
 * the queue. */
static void resume(struct gw_channel *ch, enum gw_dir dir, uint64_t since, struct gw_conn *c)
{
	struct gw_stream *st = &ch->stream[dir];

	for (unsigned i = 0; i < ring_count(&st->hist); i++) {
		struct gw_msg *m = ring_at(&st->hist, i);

		if (m->seq > since && conn_queue_backlog(c, m, 0) < 0)
			return;
	}
	drain_queue(ch, dir, c);
}

/* channels_each with a bot arriving: without since its queues go to it;
 * with since, each to-bot stream from the seq the bot named for its
 * channel (resume_from, 0 if it named none). */
struct bot_join {
	struct gw_conn *bot;
	uint64_t missed;
};

static void bot_count_missed(struct gw_channel *ch, void *ud)
{
	struct bot_join *j = ud;

	j->missed += resume_missed(ch, GW_TO_BOT, ch->resume_from);
}

static void bot_hand(struct gw_channel *ch, void *ud)
{
	struct bot_join *j = ud;

	if (j->bot->hs.resume)
		resume(ch, GW_TO_BOT, ch->resume_from, j->bot);
	else
		drain_queue(ch, GW_TO_BOT, j->bot);
	ch->resume_from = 0;
}

static void resume_reset(struct gw_channel *ch, void *ud)
{
	(void)ud;
	ch->resume_from = 0;
}

/* Hands msgs (a dropped peer's unsent messages, oldest first) to successor
 * c, or back to the front of their queues when c is NULL (out of the
 * history: they were not delivered). Frees the array. */
static void give_back(struct gw_msg **msgs, size_t n, struct gw_conn *c)
{
	size_t i;

	for (i = 0; c && i < n; i++) {
		if (conn_queue_backlog(c, msgs[i], 0) < 0)
			break;
		proto_msg_unref(msgs[i]);
	}
	/* the rest, newest first, each to the front of its channel's queue */
	for (size_t k = n; k-- > i;) {
		struct gw_channel *ch = channel_get(msgs[k]->channel_id, 1);

		if (ch) {
			channel_unkeep(ch, msgs[k]);
			channel_enqueue(ch, msgs[k], 1);
		} else {
			proto_msg_unref(msgs[k]);
		}
	}
	free(msgs);
}

struct gw_conn *registry_conn_new(const char *remote, enum gw_key_kind key)
{
	struct gw_conn *c = NULL;

	pthread_mutex_lock(&reg.lock);
	if (!reg.stopping && reg.nconns < reg.cfg->max_connections && (c = conn_new()) != NULL) {
		snprintf(c->remote, sizeof(c->remote), "%s", remote);
		c->key = key;
		/* a single allowed message always fits (SPEC 8a) */
		if (2 * reg.cfg->body_size > c->out_max)
			c->out_max = 2 * reg.cfg->body_size;
		c->next = reg.conns;
		if (reg.conns)
			reg.conns->prev = c;
		reg.conns = c;
		reg.nconns++;
	}
	pthread_mutex_unlock(&reg.lock);
	return c;
}

/* The bucket of the mod named sid on ch. (registry lock, names_cap > 0) */
static struct gw_conn **name_bucket(const struct gw_channel *ch, const char *sid)
{
	uint64_t h = 14695981039346656037u ^ (uint64_t)(uintptr_t)ch;   /* FNV-1a */

	for (const unsigned char *p = (const unsigned char *)sid; *p; p++)
		h = (h ^ *p) * 1099511628211u;
	return &reg.names[(h ^ h >> 29) & (reg.names_cap - 1)];
}

/* The registered mod of ch named sid, or NULL: a join finds the one it
 * replaces without walking the channel, which thousands may share. */
static struct gw_conn *name_find(const struct gw_channel *ch, const char *sid)
{
	struct gw_conn *o = reg.names_cap ? *name_bucket(ch, sid) : NULL;

	while (o && (o->channel != ch || strcmp(o->hs.server_id, sid) != 0))
		o = o->name_next;
	return o;
}

/* Room for one more registered mod: buckets double when they would be
 * fewer than the mods (at most max_connections; they never shrink).
 * -1 out of memory. */
static int names_reserve(void)
{
	size_t cap = reg.names_cap ? 2 * reg.names_cap : 64, old_cap = reg.names_cap;
	struct gw_conn **old = reg.names, **nb;

	if (reg.nmods < reg.names_cap)
		return 0;
	if (!(nb = calloc(cap, sizeof(*nb))))
		return -1;
	reg.names = nb;
	reg.names_cap = cap;
	for (size_t i = 0; i < old_cap; i++) {
		for (struct gw_conn *o = old[i], *next; o; o = next) {
			struct gw_conn **b = name_bucket(o->channel, o->hs.server_id);

			next = o->name_next;
			o->name_next = *b;
			*b = o;
		}
	}
	free(old);
	return 0;
}

/* c->channel is set; names_reserve made room. */
static void name_add(struct gw_conn *c)
{
	struct gw_conn **b = name_bucket(c->channel, c->hs.server_id);

	c->name_next = *b;
	*b = c;
}

static void name_del(struct gw_conn *c)
{
	struct gw_conn **pp = name_bucket(c->channel, c->hs.server_id);

	while (*pp != c)
		pp = &(*pp)->name_next;
	*pp = c->name_next;
	c->name_next = NULL;
}

/* Removes a registered c from its slot. (registry lock) */
static void unregister(struct gw_conn *c)
{
	if (!c->registered)
		return;
	c->registered = 0;
	if (c->hs.role == GW_ROLE_BOT) {
		if (reg.bot == c) {
			reg.bot = NULL;
			/* a new bot's probe of this one need not wait any longer */
			pthread_cond_broadcast(&reg.pong);
		}
		reg.nbots--;
	} else {
		struct gw_channel *ch = c->channel;

		if (c->chan_prev)
			c->chan_prev->chan_next = c->chan_next;
		else
			ch->mods = c->chan_next;
		if (c->chan_next)
			c->chan_next->chan_prev = c->chan_prev;
		c->chan_prev = c->chan_next = NULL;
		name_del(c);
		ch->nmods--;
		reg.nmods--;
	}
}

/* c leaves: out of its slot (told to whoever asked for presence events),
 * and of msgs (what it was not sent, oldest first; the array is freed) a
 * mod's go back unless another mod of the channel holds them (it was there
 * when they came), a bot's all go back. (registry lock) */
static void leave(struct gw_conn *c, struct gw_msg **msgs, size_t n, struct gw_defer *d)
{
	struct gw_channel *ch = c->channel;
	uint64_t held_from = UINT64_MAX;
	size_t k = 0;

	if (c->registered) {
		unregister(c);
		if (c->hs.role == GW_ROLE_MOD)
			notify_bot("mod_disconnected", c, d);
		else
			notify_mods("bot_disconnected", c->hs.bot_id, d);
	}
	for (struct gw_conn *o = n && ch && c->hs.role == GW_ROLE_MOD ? ch->mods : NULL; o;
	     o = o->chan_next)
		held_from = o->from_seq < held_from ? o->from_seq : held_from;
	for (size_t i = 0; i < n; i++) {
		if (msgs[i]->seq < held_from)
			msgs[k++] = msgs[i];
		else
			proto_msg_unref(msgs[i]);
	}
	give_back(msgs, k, NULL);
	c->channel = NULL;
	if (ch)
		channel_gc(ch);
}

void registry_disconnect(struct gw_conn *c, struct gw_defer *d)
{
	struct gw_msg **unsent;
	size_t n;

	pthread_mutex_lock(&reg.lock);
	unsent = conn_detach(c, &n);
	leave(c, unsent, n, d);
	pthread_mutex_unlock(&reg.lock);
}

void registry_release(struct gw_conn *c)
{
	struct gw_defer d = GW_DEFER_INIT;

	registry_disconnect(c, &d);
	defer_free(&d);
	pthread_mutex_lock(&reg.lock);
	if (reg.tick_next == c)
		reg.tick_next = c->next;   /* the tick's walk goes on from the next one */
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

/* The "connected" reply, with the epoch, and how a resume went (resumed
 * < 0: none asked). A mod that asked for events learns whether the bot is
 * there; a bot that asked gets the list of mods online. (registry lock) */
static void reply_connected(struct gw_conn *c, int resumed, uint64_t missed)
{
	char small[GW_EPOCH_MAX * 6 + 160], *buf = small;
	size_t n, cap = sizeof(small);

	n = proto_connected(c->hs.role, channels_epoch(), resumed, missed, small, sizeof(small));
	if (c->hs.events && c->hs.role == GW_ROLE_MOD) {
		n += (size_t)snprintf(small + n, cap - n, ",\"bot\":%s", reg.bot ? "true" : "false");
	} else if (c->hs.events) {
		size_t need = n + 64;

		for (struct gw_conn *m = reg.conns; m; m = m->next)
			if (m->registered && m->hs.role == GW_ROLE_MOD)
				need += 6 * (strlen(m->hs.channel_id) + strlen(m->hs.server_id)) + 40;
		if ((buf = malloc(need)) != NULL) {
			cap = need;
			memcpy(buf, small, n);
			n += (size_t)snprintf(buf + n, cap - n, ",\"mods\":[");
			for (struct gw_conn *m = reg.conns; m; m = m->next) {
				if (!m->registered || m->hs.role != GW_ROLE_MOD)
					continue;
				n += (size_t)snprintf(buf + n, cap - n, "%s{\"channel_id\":",
				                      buf[n - 1] == '[' ? "" : ",");
				n += proto_json_string(m->hs.channel_id, buf + n, cap - n);
				n += (size_t)snprintf(buf + n, cap - n, ",\"server_id\":");
				n += proto_json_string(m->hs.server_id, buf + n, cap - n);
				n += (size_t)snprintf(buf + n, cap - n, "}");
			}
			n += (size_t)snprintf(buf + n, cap - n, "]");
		} else {
			buf = small;   /* no memory for the list: the reply without it */
		}
	}
	buf[n++] = '}';
	conn_queue(c, GW_OP_TEXT, buf, n);
	if (buf != small)
		free(buf);
}

static enum gw_join join_mod(struct gw_conn *c, struct gw_defer *d)
{
	struct gw_channel *ch;
	struct gw_conn *old;
	struct gw_msg **stolen = NULL;
	size_t n = 0;

	pthread_mutex_lock(&reg.lock);
	ch = channel_get(c->hs.channel_id, 1);
	if (ch && names_reserve() < 0) {
		channel_gc(ch);
		ch = NULL;
	}
	if (!ch) {
		pthread_mutex_unlock(&reg.lock);
		return GW_JOIN_CLOSED;
	}
	old = name_find(ch, c->hs.server_id);
	if (old) {
		/* same server_id on the same channel: the newcomer replaces it
		 * and receives what it had not taken */
		unregister(old);
		old->channel = NULL;
		conn_set_why(old, "replaced");
		stolen = conn_takeover(old, GW_CLOSE_REPLACED, "Replaced by a new connection.", &n);
		log_event(GW_LOG_INFO, "mod replaced", "remote", old->remote,
		          "server_id", old->hs.server_id, "channel", ch->id, NULL);
	}
	(void)conn_make_ready(c);   /* if its peer left meanwhile, disconnect follows */
	c->chan_prev = NULL;
	c->chan_next = ch->mods;
	if (ch->mods)
		ch->mods->chan_prev = c;
	ch->mods = c;
	ch->nmods++;
	reg.nmods++;
	c->channel = ch;
	c->registered = 1;
	name_add(c);
	if (c->hs.resume) {
		/* what it had not processed: kept or queued, after its seq (all of
		 * this epoch when it names another); what the old connection held
		 * is among it */
		int same = strcmp(c->hs.epoch, channels_epoch()) == 0;
		uint64_t since = same ? c->hs.since_seq : 0;
		uint64_t missed = resume_missed(ch, GW_TO_MOD, since);

		reply_connected(c, same && missed == 0, missed);
		give_back(stolen, n, NULL);
		c->from_seq = since + 1;
		resume(ch, GW_TO_MOD, since, c);
	} else {
		reply_connected(c, -1, 0);
		c->from_seq = ch->stream[GW_TO_MOD].seq + 1;
		give_back(stolen, n, c);
		drain_queue(ch, GW_TO_MOD, c);
	}
	notify_bot("mod_connected", c, d);
	defer_add(d, c);
	pthread_mutex_unlock(&reg.lock);
	return GW_JOIN_OK;
}

static enum gw_join join_bot(struct gw_conn *c, struct gw_defer *d)
{
	struct bot_join j = { NULL, 0 };
	struct gw_conn *old;
	struct gw_msg **stolen = NULL;
	size_t n = 0;

	pthread_mutex_lock(&reg.lock);
	while ((old = reg.bot) != NULL) {
		/* A bot holds the slot: is it alive? Ping it and wait for any
		 * pong, so a bot whose link died silently cannot lock us out. */
		struct timespec until;
		int64_t deadline = gw_now_mono() + (int64_t)reg.cfg->bot_probe_timeout * 1000;
		uint64_t pongs = __atomic_load_n(&old->pongs, __ATOMIC_ACQUIRE);

		conn_ref(old);
		conn_send(old, GW_OP_PING, "probe", 5);
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
			stolen = conn_takeover(old, GW_CLOSE_BOT_REPLACED, "Replaced: no answer to a probe.", &n);
			log_event(GW_LOG_WARN, "bot did not answer a probe, replaced", "remote", old->remote,
			          "bot_id", old->hs.bot_id, NULL);
		}
		conn_unref(old);
		/* else the old bot left meanwhile: look again */
	}
	if (conn_make_ready(c) < 0) {
		/* our own peer went away while we waited */
		give_back(stolen, n, NULL);
		pthread_mutex_unlock(&reg.lock);
		return GW_JOIN_CLOSED;
	}
	reg.bot = c;
	reg.nbots++;
	c->registered = 1;
	j.bot = c;
	if (c->hs.resume) {
		int same = strcmp(c->hs.epoch, channels_epoch()) == 0;

		/* what the old connection held is among what a resume hands */
		give_back(stolen, n, NULL);
		channels_each(resume_reset, NULL);
		for (size_t i = 0; same && i < c->hs.nsince; i++) {
			struct gw_channel *ch = channel_get(c->hs.since[i].channel_id, 0);

			if (ch)
				ch->resume_from = c->hs.since[i].seq;
		}
		channels_each(bot_count_missed, &j);
		reply_connected(c, same && j.missed == 0, j.missed);
	} else {
		reply_connected(c, -1, 0);
		give_back(stolen, n, c);
	}
	channels_each(bot_hand, &j);
	notify_mods("bot_connected", c->hs.bot_id, d);
	defer_add(d, c);
	pthread_mutex_unlock(&reg.lock);
	return GW_JOIN_OK;
}

enum gw_join registry_join(struct gw_conn *c, struct gw_defer *d)
{
	if (c->hs.role == GW_ROLE_MOD)
		return c->key == GW_KEY_BOT ? GW_JOIN_FORBIDDEN : join_mod(c, d);
	return c->key == GW_KEY_MOD ? GW_JOIN_FORBIDDEN : join_bot(c, d);
}

/* The ack of m, appended to c's output under the registry lock: a close
 * the registry starts (shutdown, revocation, replacement, a drop) comes
 * either before the message was routed or after its ack. */
static void ack(struct gw_conn *c, const struct gw_msg *m, enum gw_status st, int duplicate,
                struct gw_defer *d)
{
	char buf[GW_ACK_MAX];
	size_t n = proto_ack(proto_status_name(st), c->hs.role, m->msg_id, duplicate, buf,
	                     sizeof(buf));

	if (n && conn_queue(c, GW_OP_TEXT, buf, n) == 0)
		defer_add(d, c);
}

enum gw_status registry_route(struct gw_conn *c, struct gw_msg *m, struct gw_defer *d)
{
	struct gw_channel *ch = NULL;
	struct gw_stream *sm;
	enum gw_status st = GW_STATUS_FAILED;
	int64_t now = gw_now_real();
	enum gw_dir dir = proto_dir_of(c->hs.role);
	int first, handed = 0;
	struct gw_dedup *seen = reg.seen[c->hs.role];
	struct gw_conn *bot;

	pthread_mutex_lock(&reg.lock);
	if (conn_closing(c)) {
		/* what a closing peer still sends is neither routed nor acked: it
		 * sends it again after it reconnects */
		pthread_mutex_unlock(&reg.lock);
		proto_msg_unref(m);
		return GW_STATUS_FAILED;
	}
	if (dedup_seen(seen, m->sender, m->msg_id, &first)) {
		/* a retry of something already accepted: answer as the first time */
		reg.duplicates++;
		ack(c, m, (enum gw_status)first, 1, d);
		pthread_mutex_unlock(&reg.lock);
		proto_msg_unref(m);
		return (enum gw_status)first;
	}
	ch = channel_get(m->channel_id, 1);
	if (!ch)
		goto out;
	sm = &ch->stream[dir];
	/* the bot gets it now, after what still waits for it (a rare leftover
	 * of a drop) */
	bot = dir == GW_TO_BOT ? reg.bot : NULL;
	if (bot && ring_count(&sm->queue)) {
		drain_queue(ch, dir, bot);
		defer_add(d, bot);
		if (ring_count(&sm->queue))
			bot = NULL;   /* it is going away: queue behind them */
	}
	if (!(bot || (dir == GW_TO_MOD && ch->mods)) && !channel_room(m))
		goto out;
	if (channel_accept(ch, m, bot || (dir == GW_TO_MOD && ch->mods) ? GW_ROW_HANDED
	                                                                 : GW_ROW_QUEUED) < 0)
		goto out;
	if (bot && conn_queue_msg(bot, m, sm->dropped, now) == 0) {
		handed = 1;
		defer_add(d, bot);
		/* the bot is behind but draining: its mods wait for it rather
		 * than push it over its limit (the bot direction only: a slow
		 * mod must not hold the bot back from the others) */
		if (!d->pace && conn_backed_up(bot, conn_pace_patience_ms(reg.cfg->write_timeout,
		                                                          reg.cfg->read_timeout)))
			defer_pace(d, bot);
	}
	for (struct gw_conn *mod = dir == GW_TO_MOD ? ch->mods : NULL; mod; mod = mod->chan_next) {
		if (conn_queue_msg(mod, m, sm->dropped, now) == 0) {
			handed = 1;
			defer_add(d, mod);
		}
	}
	proto_msg_ref(m);   /* the stream's */
	if (handed) {
		sm->dropped = 0;
		channel_keep(ch, m);
		st = GW_STATUS_COMPLETED;
	} else {
		channel_enqueue(ch, m, 0);   /* nobody there, or nobody took it */
		st = GW_STATUS_QUEUED;
	}
	dedup_record(seen, m->sender, m->msg_id, (int)st);
out:
	if (ch)
		channel_gc(ch);   /* a failed first message leaves no channel behind */
	reg.msgs[dir][st]++;
	ack(c, m, st, 0, d);
	pthread_mutex_unlock(&reg.lock);
	proto_msg_unref(m);
	return st;
}

void registry_delivered(struct gw_msg **msgs, size_t n)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		/* its row says queued (not let go meanwhile): now handed */
		if (__atomic_exchange_n(&msgs[i]->stored, 0, __ATOMIC_ACQ_REL))
			msgs[k++] = msgs[i];
		else
			proto_msg_unref(msgs[i]);
	}
	if (store_write(NULL, GW_ROW_QUEUED, msgs, k, GW_ROW_HANDED) < 0) {
		/* still queued on disk: a restart delivers them again, and
		 * resuming clients drop what they have */
		log_event(GW_LOG_WARN, "store: delivered messages stay marked queued", NULL);
	}
	for (size_t i = 0; i < k; i++)
		proto_msg_unref(msgs[i]);
}

void registry_pong(struct gw_conn *c)
{
	pthread_mutex_lock(&reg.lock);
	__atomic_add_fetch(&c->pongs, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&reg.pong);
	pthread_mutex_unlock(&reg.lock);
}

/* c stopped reading: it leaves its slot now (a reconnect finds it free)
 * and what it was not sent goes back, while it may still read what is on
 * its way and the close frame. (registry lock) */
static void drop_slow(struct gw_conn *c, const char *event)
{
	struct gw_defer d = GW_DEFER_INIT;
	struct gw_msg **cut;
	size_t n;

	log_event(GW_LOG_WARN, event, "remote", c->remote,
	          "role", c->registered ? proto_role_name(c->hs.role) : "none", NULL);
	cut = conn_drop(c, GW_CLOSE_TOO_SLOW, "Too slow.", reg.cfg->read_timeout * 1000, &n);
	leave(c, cut, n, &d);
	/* under the registry lock, but a flush never blocks */
	defer_free(&d);
}

/* Unsent output over all peers past output_bytes_max: the peer holding the
 * most is dropped (4002), then the next, until it fits. A peer holding no
 * more than its backlog's feed (GW_FEED_LOW and one message) is taking what
 * it is given at its pace: never dropped for this. (registry lock) */
static void enforce_output_max(void)
{
	for (unsigned tries = reg.nconns; tries-- > 0 &&
	     conn_output_total() > reg.cfg->output_bytes_max;) {
		struct gw_conn *worst = NULL;
		size_t most = GW_FEED_LOW + reg.cfg->body_size;

		for (struct gw_conn *c = reg.conns; c; c = c->next) {
			size_t ch = conn_charge(c);

			if (ch > most && !conn_closing(c)) {
				most = ch;
				worst = c;
			}
		}
		if (!worst)
			return;
		conn_set_why(worst, "output_bytes_max");
		metrics_inc(GW_M_WRITE_TIMEOUTS);
		drop_slow(worst, "output_bytes_max reached, dropping the peer with the most output");
	}
}

/* One conn's housekeeping, without the registry lock: it takes it only to
 * act on what it found (a drop, a close), the rare case. The closes are
 * under the lock so that, as every close the registry starts, they come
 * before a message of c is routed or after its ack. */
static void tick_conn(struct gw_conn *c, int64_t now)
{
	const struct gw_config *cfg = reg.cfg;
	enum gw_conn_state st;
	enum gw_housekeep hk;
	char buf[96];
	size_t n;

	hk = conn_housekeep(c, now, (int64_t)cfg->write_timeout * 1000, &st);
	if (hk == GW_HK_WRITE_TIMEOUT || hk == GW_HK_OVER_LIMIT) {
		pthread_mutex_lock(&reg.lock);
		if (!conn_closing(c)) {   /* not replaced or gone meanwhile */
			metrics_inc(GW_M_WRITE_TIMEOUTS);
			drop_slow(c, hk == GW_HK_WRITE_TIMEOUT ? "write timeout, dropping peer"
			                                       : "output over its limit, dropping peer");
		}
		pthread_mutex_unlock(&reg.lock);
		return;
	}
	if (hk == GW_HK_CLOSE_EXPIRED)
		return;
	if (st == GW_CONN_OPEN && now - c->created_ms >= (int64_t)cfg->handshake_timeout * 1000) {
		n = proto_error("Handshake timeout.", 408, NULL, buf, sizeof(buf));
		pthread_mutex_lock(&reg.lock);
		if (conn_handshaking(c)) {   /* not joined meanwhile (under this lock) */
			log_event(GW_LOG_INFO, "handshake timeout", "remote", c->remote, NULL);
			conn_queue(c, GW_OP_TEXT, buf, n);
			conn_set_why(c, "handshake timeout");
			conn_close(c, GW_CLOSE_NORMAL, "Handshake timeout.", GW_CLOSE_GRACE_MS);
		}
		pthread_mutex_unlock(&reg.lock);
	} else if (st == GW_CONN_READY) {
		int64_t seen = __atomic_load_n(&c->last_seen_ms, __ATOMIC_ACQUIRE);

		if (now - seen >= (int64_t)cfg->read_timeout * 1000) {
			log_event(GW_LOG_INFO, "read timeout, dropping peer", "remote", c->remote,
			          "role", proto_role_name(c->hs.role), NULL);
			pthread_mutex_lock(&reg.lock);
			conn_set_why(c, "read timeout");
			metrics_inc(GW_M_READ_TIMEOUTS);
			conn_close(c, GW_CLOSE_READ_TIMEOUT, "Read timeout.", GW_CLOSE_GRACE_MS);
			pthread_mutex_unlock(&reg.lock);
		} else if (now - c->last_ping_ms >= (int64_t)cfg->ping_interval * 1000) {
			c->last_ping_ms = now;
			conn_send(c, GW_OP_PING, NULL, 0);
		}
	}
}

/* The walk holds the registry lock only to take the next GW_TICK_BATCH
 * conns (a reference each) and move reg.tick_next past them: with 10,000
 * idle mods, a walk under the lock held every message's routing for
 * milliseconds four times a second. A conn released meanwhile moves
 * tick_next on (registry_release), so every conn listed when the round
 * began and still listed is visited once; one added meanwhile (at the
 * head) waits for the next round. A round goes in slices: a walk of 10,000
 * conns took 2 ms of the I/O thread's time at once (a CPU of two), which
 * showed in every peer's p99. */
void registry_tick(int64_t now)
{
	struct gw_conn *batch[GW_TICK_BATCH];
	unsigned quota, seen = 0;
	int n;

	pthread_mutex_lock(&reg.lock);
	if (!reg.tick_next) {
		if (now < reg.round_due) {
			pthread_mutex_unlock(&reg.lock);
			return;
		}
		reg.round_due = now + GW_TICK_ROUND_MS;
		reg.tick_next = reg.conns;
	}
	quota = reg.nconns / GW_TICK_SLICES;
	if (quota < GW_TICK_SLICE_MIN)
		quota = GW_TICK_SLICE_MIN;
	do {
		for (n = 0; n < GW_TICK_BATCH && reg.tick_next; n++) {
			batch[n] = reg.tick_next;
			conn_ref(batch[n]);
			reg.tick_next = reg.tick_next->next;
		}
		pthread_mutex_unlock(&reg.lock);
		for (int i = 0; i < n; i++) {
			tick_conn(batch[i], now);
			conn_unref(batch[i]);
		}
		seen += (unsigned)n;
		pthread_mutex_lock(&reg.lock);
	} while (n == GW_TICK_BATCH && seen < quota && reg.tick_next);
	enforce_output_max();
	pthread_mutex_unlock(&reg.lock);
	store_probe();   /* a faulty store recovers without waiting for a message */
}

void registry_revoke(unsigned kinds)
{
	pthread_mutex_lock(&reg.lock);
	for (struct gw_conn *c = reg.conns; c; c = c->next) {
		if (kinds & (1u << c->key)) {
			conn_set_why(c, "key revoked");
			conn_close(c, GW_CLOSE_POLICY, "Key revoked.", GW_CLOSE_GRACE_MS);
		}
	}
	pthread_mutex_unlock(&reg.lock);
}

void registry_close_all(int code, const char *reason)
{
	pthread_mutex_lock(&reg.lock);
	/* before the walk: a conn attached after it sees the flag (session.c) */
	__atomic_store_n(&reg.stopping, 1, __ATOMIC_SEQ_CST);
	for (struct gw_conn *c = reg.conns; c; c = c->next) {
		conn_set_why(c, "shutdown");
		conn_close(c, code, reason, GW_CLOSE_GRACE_MS);
	}
	pthread_mutex_unlock(&reg.lock);
}

int registry_stopping(void)
{
	return __atomic_load_n(&reg.stopping, __ATOMIC_SEQ_CST);
}

void registry_abort_all(void)
{
	pthread_mutex_lock(&reg.lock);
	for (struct gw_conn *c = reg.conns; c; c = c->next)
		conn_abort(c);
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
	struct gw_queue_totals q;

	pthread_mutex_lock(&reg.lock);
	st->mods = reg.nmods;
	st->bots = reg.nbots;
	st->pending = reg.nconns - reg.nmods - reg.nbots;
	channels_totals(&q);
	st->channels = q.channels;
	st->queued_msgs = q.msgs;
	st->queued_bytes = q.bytes;
	memcpy(st->msgs, reg.msgs, sizeof(st->msgs));
	st->dropped = q.dropped;
	st->duplicates = reg.duplicates;
	pthread_mutex_unlock(&reg.lock);
}
