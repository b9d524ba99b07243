/*
 * store.h - the durable queues and histories: every message a channel holds
 * (queued for an offline recipient, or handed to one and kept for resume) is
 * also a row in one SQLite file ([store] path), written before its ack, and
 * deleted when the history lets it go, so the queues, the histories, the
 * stream counters and the epoch survive a restart or a kill -9. With an
 * empty path the store is off (memory only) and every call below is a no-op
 * that succeeds.
 *
 * Durability: WAL journal. A write is committed when store_write returns 0.
 * With sync = normal or full a committed row survives a crash of the
 * process (kill -9, abort, OOM kill); only sync = full also survives a
 * power loss or kernel crash. sync = off leaves durability to the OS.
 *
 * Threads: store_open, store_load and store_close are called by main()
 * while no other thread uses the store. store_write, store_count,
 * store_epoch and store_enabled are thread-safe.
 */
#ifndef GW_STORE_H
#define GW_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "protocol.h"

/* Opens (creating it and its folder if missing) the store at path with the
 * given [store] sync; path "" means memory only. The file is checked
 * (quick_check, schema version) and locked for this process: a second
 * gateway on the same file is refused. Returns 0, or -1 with one line in
 * err naming the path, what is wrong and what to do (never starts empty on
 * a file that exists but cannot be used). -1 also if already open. */
int store_open(const char *path, enum gw_sync sync, char *err, size_t errlen);

/* Finalizes the statements and closes the file (checkpointing the WAL into
 * it). The store is then off, as after store_open(""). Idempotent. */
void store_close(void);

/* 1 if a file is open, 0 in memory-only mode. Thread-safe. */
int store_enabled(void);

/* A row's state. */
enum gw_row {
	GW_ROW_QUEUED = 0,   /* waiting for a recipient */
	GW_ROW_HANDED = 1,   /* handed to one: kept as history */
	GW_ROW_GONE = 2,     /* store_write: delete the rows */
};

/* The epoch kept in the file (valid while it is open), or NULL when off. */
const char *store_epoch(void);

/* In one transaction: writes put's row (may be NULL) in state `state`
 * (replacing a row with its channel, direction and seq) and raises its
 * stream's counter, then sets the rows of the n messages in v to `set`:
 * GW_ROW_GONE deletes them (a missing row is not an error). Messages are
 * borrowed. Returns 0 once committed, -1 on error (logged here, once;
 * nothing was changed). Thread-safe; blocks on the disk write (and fsync
 * with sync = full). */
int store_write(const struct gw_msg *put, enum gw_row state, struct gw_msg *const *v,
                size_t n, enum gw_row set);

/* Reads the stream counters, handing each to stream_cb(channel, dir, seq,
 * ud), then every row in write order, handing each as a new message (its
 * seq set) to cb(m, state, ud), which owns that reference whatever it
 * returns. The callbacks run with no store lock held; a non-zero return
 * stops the load (the rest are freed) and store_load returns -1. Rows that
 * cannot form a message (bad direction or id) are skipped with a warning
 * and left in the file. Returns the number of messages handed to cb, or -1
 * on error (logged). */
int store_load(int (*stream_cb)(const char *channel, enum gw_dir dir, uint64_t seq, void *ud),
               int (*cb)(struct gw_msg *m, enum gw_row state, void *ud), void *ud);

/* Number of rows, 0 when off, -1 on error. Thread-safe. */
int64_t store_count(void);

/* 1 if the last write failed (disk full, I/O error...), with the error in
 * reason (cap bytes, NUL-terminated); 0 if the store is healthy or off.
 * Thread-safe. */
int store_health(char *reason, size_t cap);

/* While the store is faulty, at most once a second: tries a small write
 * and, if it works, says the store recovered. Thread-safe. */
void store_probe(void);

#endif
