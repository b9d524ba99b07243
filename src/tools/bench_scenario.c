/*
 * bench_scenario.c - homestead-bench's scenarios. tick() moves the run
 * through its phases (set-up, run, drain, or sample for idle) and starts
 * what is due: connects up to --concurrency, a window of messages per
 * sender, or the rate's next messages. Messages are built straight into a
 * peer's output buffer. Each ack and delivery is checked against the table
 * of messages sent (by msg_id) and counted; queue checks the order too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static struct rec *rec_at(struct peer *p, uint64_t seq);
static void queue_acked(struct peer *p, struct rec *r);
static void queue_order(struct peer *from, const struct rec *r);
static void send_message(struct peer *p, int64_t now);
static void fill_window(struct peer *p, int64_t now);
static void rate_tick(int64_t now);
static void start_connects(int64_t now);
static void check_timeouts(int64_t now);
static int all_settled(void);
static void start_run(int64_t now);

/* ---- acks and deliveries -------------------------------------------------- */

int msg_id_parse(const char *id, size_t len, long *a, uint64_t *seq)
{
	size_t pl = strlen(B.o.prefix), i;
	uint64_t v = 0;

	if (len < pl + 4 || memcmp(id, B.o.prefix, pl) != 0 || id[pl] != '.')
		return -1;
	i = pl + 1;
	if (id[i] == 'b') {
		*a = -1;
		i++;
	} else {
		*a = 0;
		if (id[i] < '0' || id[i] > '9')
			return -1;
		while (i < len && id[i] >= '0' && id[i] <= '9')
			*a = *a * 10 + (id[i++] - '0');
	}
	if (i >= len || id[i] != '.')
		return -1;
	for (i++; i < len; i++) {
		if (id[i] < '0' || id[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(id[i] - '0');
	}
	*seq = v;
	return 0;
}

static struct rec *rec_at(struct peer *p, uint64_t seq)
{
	size_t cap;
	struct rec *nr;

	if (seq >= p->rec_cap) {
		cap = p->rec_cap ? p->rec_cap : 1024;
		while (cap <= seq)
			cap *= 2;
		if (!(nr = realloc(p->recs, cap * sizeof(*nr))))
			return NULL;
		memset(nr + p->rec_cap, 0, (cap - p->rec_cap) * sizeof(*nr));
		p->recs = nr;
		p->rec_cap = cap;
	}
	return &p->recs[seq];
}

void on_ack(struct peer *p, const char *id, size_t idlen, const char *status,
            size_t slen, int duplicate)
{
	struct rec *r;
	uint64_t seq;
	long a;

	if (msg_id_parse(id, idlen, &a, &seq) < 0 ||
	    (p->role == ROLE_MOD ? a != (long)p->idx : a != -1) || seq >= p->sent) {
		B.foreign++;
		return;
	}
	r = &p->recs[seq];
	B.acks++;
	if (r->acked++)
		B.dup_acks++;
	if (duplicate)
		B.dup_acks++;
	if (wsc_span_eq(status, slen, B.o.sc == SC_QUEUE ? "queued" : "completed")) {
		B.acks_completed++;
		if (B.o.sc == SC_QUEUE && r->acked == 1 && !duplicate)
			queue_acked(p, r);
	} else {
		B.acks_other++;
	}
	if (B.o.sc == SC_QUEUE)
		B.t_last_ack = now_ns();
	if (p->unacked > 0)
		p->unacked--;
	fill_window(p, 0);
}

void on_delivery(struct peer *p, const char *id, size_t idlen, size_t content_len,
                 int64_t now)
{
	struct peer *from;
	struct rec *r;
	uint64_t seq;
	long a;

	if (msg_id_parse(id, idlen, &a, &seq) < 0) {
		B.foreign++;
		return;
	}
	if (content_len != B.o.size)
		B.bad_content++;
	B.t_last_rx = now;
	if (a < 0) {   /* a bot message at a mod (fanout) */
		if (p->role != ROLE_MOD || !B.bot || seq >= B.bot->sent) {
			B.foreign++;
			return;
		}
		if (seq >= p->seen_cap) {
			size_t cap = p->seen_cap ? p->seen_cap : 4096;
			uint8_t *ns;

			while (cap <= seq)
				cap *= 2;
			if (!(ns = realloc(p->seen, cap)))
				return;
			memset(ns + p->seen_cap, 0, cap - p->seen_cap);
			p->seen = ns;
			p->seen_cap = cap;
		}
		if (p->seen[seq]++ == 0) {
			B.delivered++;
			B.bytes_delivered += content_len;
		} else {
			B.dups++;
		}
		return;
	}
	if (p->role != ROLE_BOT || a >= B.o.mods || seq >= B.peers[a]->sent) {
		B.foreign++;
		return;
	}
	from = B.peers[a];
	r = &from->recs[seq];
	if (r->got++ == 0) {
		B.delivered++;
		B.bytes_delivered += content_len;
		if (B.o.sc == SC_RATE) {
			if (B.nlat == B.lat_cap) {
				size_t cap = B.lat_cap ? B.lat_cap * 2 : 65536;
				int64_t *nl = realloc(B.lat, cap * sizeof(*nl));

				if (!nl)
					return;
				B.lat = nl;
				B.lat_cap = cap;
			}
			B.lat[B.nlat++] = now - r->sent_ns;
		}
		if (B.o.sc == SC_QUEUE)
			queue_order(from, r);
	} else {
		B.dups++;
	}
}

/* queue: r, p's message, is its channel's next "queued" ack. */
static void queue_acked(struct peer *p, struct rec *r)
{
	r->rank = B.qch[p->idx % (uint32_t)B.o.channels].acked++;
}

/* queue: checks the first delivery r of a message from `from` (see the top). */
static void queue_order(struct peer *from, const struct rec *r)
{
	struct qchan *c = &B.qch[from->idx % (uint32_t)B.o.channels];

	if (!r->acked)
		return;   /* counted as unacked */
	if (r->rank < from->rx_rank || r->rank < c->max_before)
		B.out_of_order++;
	if (r->rank >= from->rx_rank)
		from->rx_rank = r->rank + 1;
	if (r->before > c->max_before)
		c->max_before = r->before;
}

/* ---- traffic -------------------------------------------------------------- */

size_t message_max(void)
{
	return WSC_HEAD_MAX + 512 + B.o.size + 2;
}

size_t message_encode(const struct peer *p, uint64_t seq, unsigned char *out, uint32_t mask)
{
	char head[512];
	size_t hl, plen, h;
	int n;

	if (p->role == ROLE_BOT)
		n = snprintf(head, sizeof(head),
		             "{\"msg_id\":\"%s.b.%llu\",\"id\":\"%s\",\"author\":{\"id\":\"bench\"},"
		             "\"content\":\"", B.o.prefix, (unsigned long long)seq, B.chans[0]);
	else
		n = snprintf(head, sizeof(head),
		             "{\"msg_id\":\"%s.%u.%llu\",\"id\":\"%s\",\"destination\":{\"channel_id\":"
		             "\"%s\"},\"author\":{\"id\":\"bench\"},\"content\":\"", B.o.prefix, p->idx,
		             (unsigned long long)seq, p->sid, p->chan);
	hl = (size_t)n;
	plen = hl + B.o.size + 2;
	h = wsc_frame_head(out, 1, WSC_OP_TEXT, plen, mask);
	memcpy(out + h, head, hl);
	memcpy(out + h + hl, B.content, B.o.size);
	memcpy(out + h + hl + B.o.size, "\"}", 2);
	wsc_mask(out + h, plen, mask);
	return h + plen;
}

/* Builds one message from p straight into its output buffer. */
static void send_message(struct peer *p, int64_t now)
{
	struct rec *r;

	if (!(r = rec_at(p, p->sent))) {
		peer_fail(p, "out of memory");
		return;
	}
	if (out_reserve(p, message_max()) < 0) {
		peer_fail(p, "out of memory");
		return;
	}
	p->out_len += message_encode(p, p->sent, p->out + p->out_len, rng_next());
	r->sent_ns = now ? now : now_ns();
	if (B.o.sc == SC_QUEUE)
		r->before = B.qch[p->idx % (uint32_t)B.o.channels].acked;
	if (!B.t_first_send)
		B.t_first_send = r->sent_ns;
	p->sent++;
	p->unacked++;
	B.sent++;
	mark_dirty(p);
}

/* Sends until p has a full window (flood, fanout, big). */
static void fill_window(struct peer *p, int64_t now)
{
	if (B.phase != PH_RUN || B.o.sc == SC_RATE || p->state != P_READY)
		return;
	if ((B.o.sc == SC_FANOUT) != (p->role == ROLE_BOT))
		return;   /* fanout: only the bot sends; flood, big: only mods */
	if (!now)
		now = now_ns();
	if (now >= B.t_send_end)
		return;
	while (p->unacked < (uint32_t)B.o.window && p->sent < p->quota && p->fd >= 0)
		send_message(p, now);
}

/* Rate: offers every message due by now, round robin over the mods. */
static void rate_tick(int64_t now)
{
	uint64_t due = (uint64_t)((double)(now - B.t_run) * B.o.rate / 1e9) + 1;
	struct peer *p;

	if (B.o.count && due > B.o.count)
		due = B.o.count;
	while (B.rate_next < due && now < B.t_send_end) {
		p = B.peers[B.rate_next % (uint64_t)B.o.mods];
		B.rate_next++;
		if (p->state == P_READY)
			send_message(p, now_ns());
	}
}

/* Starts connects up to the concurrency limit (set-up, idle, churn). */
static void start_connects(int64_t now)
{
	int i;

	if (B.bot && B.o.sc != SC_QUEUE && B.bot->state != P_READY) {   /* the bot first */
		if (B.bot->state == P_FREE)
			peer_connect(B.bot);
		return;
	}
	for (i = 0; i < setup_peers() && B.connecting < B.o.concurrency; i++) {
		struct peer *p = B.peers[i];

		if (B.o.sc == SC_CHURN) {
			if (p->state != P_FREE && p->state != P_DONE && p->state != P_FAILED)
				continue;
			if (now >= B.t_send_end)
				return;
			snprintf(p->sid, sizeof(p->sid), "%s-c%llu", B.o.prefix,
			         (unsigned long long)B.started);
		} else if (p->state != P_FREE) {
			continue;
		}
		peer_connect(p);
	}
}

/* Fails peers stuck in set-up or closing for PEER_TIMEOUT_NS. */
static void check_timeouts(int64_t now)
{
	int i;

	for (i = 0; i < B.npeers; i++) {
		struct peer *p = B.peers[i];

		if (p->state >= P_CONNECTING && p->state <= P_HANDSHAKE && now - p->t0 > PEER_TIMEOUT_NS)
			peer_fail(p, "no answer within %lld s", PEER_TIMEOUT_NS / NS_PER_S);
		else if (p->state == P_CLOSING && now - p->t0 > PEER_TIMEOUT_NS)
			peer_fail(p, "no close frame from the gateway within %lld s",
			          PEER_TIMEOUT_NS / NS_PER_S);
	}
}

/* Every message acked and delivered (or nothing more can come). */
static int all_settled(void)
{
	uint64_t want;

	if (B.o.sc == SC_FANOUT)
		want = B.bot ? B.bot->sent * (uint64_t)B.o.mods : 0;
	else
		want = B.sent;
	return B.acks >= B.sent && B.delivered >= want;
}

/* Peers brought up before the run (queue: the mods; its bot comes later). */
int setup_peers(void)
{
	return B.o.sc == SC_QUEUE ? B.o.mods : B.npeers;
}

static void start_run(int64_t now)
{
	int i;

	B.phase = PH_RUN;
	B.t_run = now;
	B.t_send_end = now + (int64_t)(B.o.duration * 1e9);
	note("all %d peers up; sending", B.ready);
	usage_begin();
	for (i = 0; i < B.npeers; i++)
		fill_window(B.peers[i], now);
}

void tick(int64_t now)
{
	int i, senders_left;

	if (B.phase != PH_DONE && B.phase != PH_SAMPLE)
		check_timeouts(now);
	switch (B.phase) {
	case PH_SETUP:
		if (B.o.sc == SC_CHURN) {
			B.phase = PH_RUN;
			B.t_run = now;
			B.t_send_end = now + (int64_t)(B.o.duration * 1e9);
			usage_begin();
			start_connects(now);
			break;
		}
		start_connects(now);
		if (B.auth_refused || (B.failed && B.o.sc != SC_IDLE)) {
			B.phase = PH_DONE;
			break;
		}
		if (B.ready + B.failed < setup_peers()) {
			if (now > B.phase_deadline) {
				error_once("set-up took over %.0f s", (double)(B.phase_deadline - B.t_start) / 1e9);
				B.phase = PH_DONE;
			}
			break;
		}
		if (B.o.sc == SC_IDLE) {
			B.t_up = now;
			note("%d mods up, %d failed; sampling for %.1f s", B.ready, B.failed, B.o.sample);
			B.phase = PH_SAMPLE;
			B.phase_deadline = now + (int64_t)(B.o.sample * 1e9);
			usage_begin();
			break;
		}
		start_run(now);
		break;
	case PH_RUN:
		if (B.o.sc == SC_CHURN) {
			start_connects(now);
			if (now >= B.t_send_end) {
				B.phase = PH_DRAIN;
				B.t_drain_end = now + PEER_TIMEOUT_NS;
			}
			break;
		}
		if (B.o.sc == SC_RATE)
			rate_tick(now);
		senders_left = 0;
		for (i = 0; i < B.npeers; i++) {
			struct peer *p = B.peers[i];

			if (p->state == P_READY && p->sent < p->quota &&
			    (B.o.sc != SC_FANOUT || p == B.bot) && (B.o.sc != SC_RATE || p != B.bot))
				senders_left++;
		}
		if (B.o.sc == SC_RATE)
			senders_left = now < B.t_send_end && (!B.o.count || B.rate_next < B.o.count);
		if (now >= B.t_send_end || !senders_left || B.lost_peers) {
			note("sending done: %llu messages; draining", (unsigned long long)B.sent);
			B.phase = PH_DRAIN;
			B.t_drain_end = now + (int64_t)(B.o.drain * 1e9);
		}
		break;
	case PH_DRAIN:
		if (B.o.sc == SC_CHURN) {
			int busy = 0;

			for (i = 0; i < B.npeers; i++)
				busy += B.peers[i]->state >= P_CONNECTING && B.peers[i]->state <= P_CLOSING;
			if (!busy || now >= B.t_drain_end) {
				usage_end();
				B.phase = PH_DONE;
			}
			break;
		}
		if (B.o.sc == SC_QUEUE && B.bot->state == P_FREE) {
			/* every ack in: the figures are the queuing's; now the bot drains */
			if (B.acks < B.sent && now < B.t_drain_end && !B.lost_peers)
				break;
			usage_end();
			if (B.lost_peers) {
				B.phase = PH_DONE;
				break;
			}
			note("%llu acks; the bot drains", (unsigned long long)B.acks);
			B.t_bot = now;
			B.t_drain_end = now + (int64_t)(B.o.drain * 1e9);
			peer_connect(B.bot);
			break;
		}
		if (all_settled() || now >= B.t_drain_end || B.lost_peers ||
		    (B.bot && B.bot->state == P_FAILED)) {
			if (B.o.sc != SC_QUEUE)
				usage_end();
			B.phase = PH_DONE;
		}
		break;
	case PH_SAMPLE:
		if (B.o.sample > 0 && now >= B.phase_deadline) {
			usage_end();
			B.phase = PH_DONE;
		}
		break;
	case PH_DONE:
		break;
	}
}

