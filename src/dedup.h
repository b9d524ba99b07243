/*
 * dedup.h - remembers, per sender, the last `window` msg_ids it sent and the
 * status each was acked with, so a client retrying after a reconnect gets
 * the first answer again instead of a second delivery.
 *
 * Memory is bounded twice: `window` ids per sender, and room for at most
 * `max_ids` ids over all senders (each sender's room grows with use, 16 at
 * first; the least recently active sender is forgotten first), about 50
 * bytes per id at most. An id is kept as a 64-bit hash of (msg_id): two different ids of
 * one sender collide with probability about window / 2^64.
 *
 * Not thread-safe: the registry lock protects it.
 */
#ifndef GW_DEDUP_H
#define GW_DEDUP_H

#include <stddef.h>

struct gw_dedup;

/* NULL on ENOMEM. window >= 1. */
struct gw_dedup *dedup_new(unsigned window, size_t max_ids);
void dedup_free(struct gw_dedup *d);

/* 1 if sender sent msg_id within its window (*status = what it was acked
 * with), else 0. Marks the sender as recently active. */
int dedup_seen(struct gw_dedup *d, const char *sender, const char *msg_id, int *status);

/* Remembers msg_id for sender with status (evicting its oldest id, and the
 * least recently active senders while over max_ids). Returns 0, or -1 on
 * ENOMEM (then the id is simply not remembered). */
int dedup_record(struct gw_dedup *d, const char *sender, const char *msg_id, int status);

/* Senders remembered, and the room for ids they hold (what max_ids bounds). */
size_t dedup_senders(const struct gw_dedup *d);
size_t dedup_ids(const struct gw_dedup *d);

#endif
