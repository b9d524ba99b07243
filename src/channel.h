/*
 * channel.h - the channel table and each channel's two streams (to the
 * bot, to the mods). A stream numbers the messages it accepts (seq, from
 * 1, never reused while the store file lives, named by the epoch) and
 * holds them in two rings: its queue (handed to nobody yet, for an offline
 * recipient) and its history (handed to a recipient, kept so that a client
 * that reconnects with "since" gets what it had not processed). Queued and
 * kept messages are also rows in the durable store (store.h), written
 * before their ack. All queues share one byte budget (queue_bytes_max), all
 * histories another (history_bytes_max, the oldest kept message goes
 * first). A channel is made on first use and lives as long as the gateway
 * (its counters must not restart).
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
#include "store.h"

struct gw_conn;

struct gw_stream {
	uint64_t seq;                 /* the last seq given, 0 if none */
	struct gw_ring queue;         /* handed to nobody yet, oldest first */
	struct gw_ring hist;          /* handed, the last `history`, oldest first */
	uint64_t dropped;             /* overwritten in the queue since the last delivery */
};

struct gw_channel {
	struct gw_channel *hnext;     /* hash chain */
	struct gw_conn *mods;         /* the registry's: linked by chan_next */
	unsigned nmods;
	struct gw_stream stream[2];   /* by enum gw_dir */
	uint64_t resume_from;         /* the registry's scratch while a bot resumes */
	char id[];
};

/* Sizes of all queues and histories, for /health and /metrics. */
struct gw_queue_totals {
	uint64_t msgs, bytes;         /* queued */
	uint64_t kept, kept_bytes;    /* in histories */
	uint64_t dropped;             /* overwritten in queues since start */
	unsigned channels;
};

/* Makes the table and rebuilds the streams from the store (store_open
 * first): counters, queues and histories, in acceptance order, and the
 * epoch (a new one without a store). seen(m, status) is told of every
 * message restored (for dedup). Returns 0, or -1 (out of memory or a store
 * error, logged). */
int channels_init(const struct gw_config *cfg,
                  void (*seen)(const struct gw_msg *m, enum gw_status st));

/* Frees every channel and message (their rows stay in the store). */
void channels_free(void);

/* The epoch naming every stream's seqs. */
const char *channels_epoch(void);

/* The channel named id, made if missing when create is set. NULL if absent
 * or out of memory. */
struct gw_channel *channel_get(const char *id, int create);

/* Frees ch if it holds nothing and has numbered nothing. */
void channel_gc(struct gw_channel *ch);

/* 1 if m may be queued without passing queue_bytes_max. */
int channel_room(const struct gw_msg *m);

/* Accepts m into its stream: gives it the next seq and writes its row
 * (state GW_ROW_HANDED if it is about to be handed to a recipient, else
 * GW_ROW_QUEUED), together with the deletion of rows let go since the last
 * write. Returns 0, or -1 when the store failed (then m has no seq and was
 * not accepted). Does not keep m: channel_keep or channel_enqueue next. */
int channel_accept(struct gw_channel *ch, struct gw_msg *m, enum gw_row state);

/* Keeps m (steals the reference) in its stream's history: it was handed
 * to a recipient. The oldest kept messages go past `history` or
 * history_bytes_max (their rows at the next write), m itself when history
 * is 0. A seq already kept is not kept twice. */
void channel_keep(struct gw_channel *ch, struct gw_msg *m);

/* Takes m (the newest kept message of its stream, else nothing happens)
 * back out of the history: it goes back to the queue. Returns 1 if it was
 * there. */
int channel_unkeep(struct gw_channel *ch, struct gw_msg *m);

/* Queues m (steals the reference): at the back, or with front set at the
 * front (it is older than everything queued: what a dropped peer had not
 * taken). A full queue overwrites its oldest message, counted in dropped;
 * at the front, m itself is the one dropped. A row that said handed (a
 * message put back, or refused by every recipient) says queued again.
 * Never fails. */
void channel_enqueue(struct gw_channel *ch, struct gw_msg *m, int front);

/* Removes the oldest queued message of direction dir (the caller owns it;
 * its row stays), or returns NULL. */
struct gw_msg *channel_pop(struct gw_channel *ch, enum gw_dir dir);

/* Calls fn(ch, ud) for every channel; fn may free ch (channel_gc). */
void channels_each(void (*fn)(struct gw_channel *ch, void *ud), void *ud);

void channels_totals(struct gw_queue_totals *t);

#endif
