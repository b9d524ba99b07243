/*
 * registry.h - who is connected, to which channel, and what waits for whom.
 *
 * One mutex (the registry lock) protects the connection list, the channel
 * table, the bot slot and every queue, so a routing decision, the queue it
 * falls back to and a reconnect's flush are one atomic step: per channel and
 * direction, delivery order is acceptance order.
 *
 * Lock order: registry lock -> conn lock (conn.h) -> the I/O loop's lock
 * (conn.c); the store's lock (store.c) is taken under the registry lock
 * or under none. Nothing blocks under the registry lock but a store write
 * (a `queued` ack promises the disk): frames are only appended to output
 * buffers, and the recipients go into the caller's held-back flushes
 * (struct gw_defer, defer.h), sent after the lock is released.
 */
#ifndef GW_REGISTRY_H
#define GW_REGISTRY_H

#include <stdint.h>
#include "config.h"
#include "conn.h"
#include "defer.h"
#include "metrics.h"
#include "protocol.h"

/* Outcome of a handshake. */
enum gw_join { GW_JOIN_OK, GW_JOIN_FORBIDDEN, GW_JOIN_CONFLICT, GW_JOIN_CLOSED };

/* Not thread-safe: call before the server starts / after it stopped. */
int registry_init(const struct gw_config *cfg);
void registry_free(void);

/* A /sync request arrived: returns a new conn registered in the list (the
 * registry holds the reference returned; take your own with conn_ref if you
 * keep it past registry_release), or NULL when max_connections are open. */
struct gw_conn *registry_conn_new(const char *remote, enum gw_key_kind key);

/* The request's connection ends: unregisters c if needed and drops the
 * registry's reference. Call exactly once per registry_conn_new. */
void registry_release(struct gw_conn *c);

/* Handshake done on c (c->hs filled). Registers it and queues the
 * "connected" reply followed by everything queued for it; c and whoever is
 * told of its arrival are added to d (the caller flushes it). A mod
 * replaces a mod with the same server_id on the channel; a bot takes the
 * slot unless a live bot answers a probe ping within bot_probe_timeout
 * (GW_JOIN_CONFLICT). Blocks the calling (reader) thread for up to
 * bot_probe_timeout. */
enum gw_join registry_join(struct gw_conn *c, struct gw_defer *d);

/* Routes m from c (steals the caller's reference) and appends its ack to
 * c's output; c and the recipients are added to d (the caller flushes it).
 * Returns the status acked. When the same sender sent m's msg_id within
 * its last dedup_window messages, m is not routed again: the ack repeats
 * the first status with "duplicate":true. A `failed` message is not
 * remembered (a retry is a new attempt). A message from a closing c is
 * neither routed nor acked (GW_STATUS_FAILED is returned). */
enum gw_status registry_route(struct gw_conn *c, struct gw_msg *m, struct gw_defer *d);

/* The peer's reader ended: unregisters c and puts what it had not taken
 * back in front of its queues; whoever is told of its leaving goes into d.
 * Idempotent. */
void registry_disconnect(struct gw_conn *c, struct gw_defer *d);

/* The I/O thread's report (conn_loop_start): these stored messages were
 * delivered. Deletes their rows in one transaction, outside every conn
 * lock; takes over the references and frees msgs' elements (not msgs). */
void registry_delivered(struct gw_msg **msgs, size_t n);

/* A pong arrived on c (wakes a bot probe waiting on it). */
void registry_pong(struct gw_conn *c);

/* The tick visits the conns this many at a time, with the registry lock
 * released in between. */
#define GW_TICK_BATCH 256

/* Every conn is visited once a round, a round starts every GW_TICK_ROUND_MS
 * and goes in slices: registry_tick is called every GW_TICK_SLICE_MS and
 * visits at most max(GW_TICK_SLICE_MIN, conns / GW_TICK_SLICES) of them. */
#define GW_TICK_ROUND_MS 250
#define GW_TICK_SLICE_MS 25
#define GW_TICK_SLICES 8
#define GW_TICK_SLICE_MIN 1024

/* Periodic: pings, read and handshake timeouts, write stalls, the output
 * cap. Call every GW_TICK_SLICE_MS from one thread (the I/O thread): when
 * no round is under way and GW_TICK_ROUND_MS passed since the last began,
 * a round begins; each call goes on with the round's next slice. Each conn
 * present for a whole round is visited once in it (with few conns, a
 * round is one call); the registry lock is held only briefly, never
 * across the walk. */
void registry_tick(int64_t now_mono);

/* Closes with 1008 "Key revoked." every websocket opened with a key of a
 * kind in `kinds` (bit 1 << enum gw_key_kind). */
void registry_revoke(unsigned kinds);

/* Closes every websocket with code/reason (shutdown); from then on no new
 * conn is made (registry_conn_new returns NULL) and registry_stopping()
 * says 1, so one attached after the walk is closed by its session. */
void registry_close_all(int code, const char *reason);

/* 1 once registry_close_all ran. Thread-safe, lock-free. */
int registry_stopping(void);

/* Wakes every conn's reader now (conn_abort): the end of a shutdown's
 * grace, so no reader sleeps past it. */
void registry_abort_all(void);

/* Number of conns still in the list. */
unsigned registry_count(void);

void registry_stats(struct gw_stats *st);

#endif
