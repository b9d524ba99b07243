/*
 * channel.h - the channel table and each channel's queues. A channel is
 * made on first use and holds its mods (the registry links them) and, per
 * direction, a ring of messages waiting for an offline recipient; it is
 * freed once it holds nothing, so ids used once cost nothing for ever.
 * Queued messages are also rows in the durable store (store.h), written
 * before they count as queued, and all queues share one byte budget
 * (queue_bytes_max).
 *
 * Not thread-safe: the registry lock protects everything here.
 */
#ifndef GW_CHANNEL_H
#define GW_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "protocol.h"
#include "ring.h"

struct gw_conn;

struct gw_channel {
	struct gw_channel *hnext;     /* hash chain */
	struct gw_conn *mods;         /* the registry's: linked by chan_next */
	unsigned nmods;
	struct gw_ring ring[2];       /* by enum gw_dir */
	uint64_t dropped[2];          /* overwritten since the last delivery */
	char id[];
};

/* Sizes of all queues, for /health and /metrics. */
struct gw_queue_totals {
	uint64_t msgs, bytes;
	uint64_t dropped;             /* overwritten since start */
	unsigned channels;
};

/* Makes the table and rebuilds the queues from the store (store_open
 * first), in acceptance order. *max_seq receives the largest seq found.
 * Returns 0, or -1 (out of memory or a store error, logged). */
int channels_init(const struct gw_config *cfg, uint64_t *max_seq);

/* Frees every channel and queued message (their rows stay in the store). */
void channels_free(void);

/* The channel named id, made if missing when create is set. NULL if absent
 * or out of memory. */
struct gw_channel *channel_get(const char *id, int create);

/* Frees ch if it holds nothing (no mods, messages or drop count). */
void channel_gc(struct gw_channel *ch);

/* Queues m (steals the reference) in direction dir: a new message at the
 * back, or, with front set, one a dropped peer had not taken at the front
 * (it is older than everything queued). With a store, m is committed to
 * disk first: the `queued` ack must not promise more than the disk holds,
 * and rows must follow acceptance order. A full ring overwrites its oldest
 * message, counted in ch->dropped. Returns GW_STATUS_QUEUED, or
 * GW_STATUS_FAILED (over the byte budget, store error, out of memory) when
 * m was not kept. */
enum gw_status channel_enqueue(struct gw_channel *ch, enum gw_dir dir, struct gw_msg *m,
                               int front);

/* Removes the oldest message queued in direction dir (the caller owns it;
 * its store row stays until it is delivered), or returns NULL. */
struct gw_msg *channel_pop(struct gw_channel *ch, enum gw_dir dir);

/* Forgets m's store row, if it has one: m was dropped, not delivered. */
void channel_unstore(struct gw_msg *m);

/* Calls fn(ch, ud) for every channel; fn may free ch (channel_gc). */
void channels_each(void (*fn)(struct gw_channel *ch, void *ud), void *ud);

void channels_totals(struct gw_queue_totals *t);

#endif
