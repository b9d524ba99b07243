/*
 * store.h - the durable queue: every message waiting in a ring is also a
 * row in one SQLite file ([store] path), written before its `queued` ack
 * and deleted once delivered, so the rings can be rebuilt after a restart
 * or a kill -9. With an empty path the store is off (memory only) and every
 * call below is a no-op that succeeds.
 *
 * Durability: WAL journal. A row is committed when store_put returns 0.
 * With sync = normal or full a committed row survives a crash of the
 * process (kill -9, abort, OOM kill); only sync = full also survives a
 * power loss or kernel crash. sync = off leaves durability to the OS.
 *
 * Threads: store_open, store_load and store_close are called by main()
 * while no other thread uses the store. store_put, store_del, store_count
 * and store_enabled are thread-safe.
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

/* Writes m (borrowed) queued in direction dir,
 * keyed by m->seq; a row with that seq is replaced. Returns 0 once the row
 * is committed, -1 on error (logged here, once). Thread-safe; blocks on the
 * disk write (and fsync with sync = full). */
int store_put(const struct gw_msg *m, enum gw_dir dir);

/* Deletes the rows of the n seqs (delivered or dropped) in one
 * transaction: all or none. A missing row is not an error. Returns 0 or -1
 * (logged). Thread-safe; blocks on the disk write. */
int store_del(const uint64_t *seqs, size_t n);

/* Reads every row in seq order and hands each as a new message to
 * cb(m, dir, ud), which owns that reference whatever it returns. cb is
 * called with no store lock held (it may call store_put/store_del); a
 * non-zero return stops the load (the rest are freed) and store_load
 * returns -1. Rows that cannot form a message (bad direction or id) are
 * skipped with a warning and left in the file. *max_seq (may be NULL)
 * receives the largest seq in the file, 0 if none. Returns the number of
 * messages handed to cb, or -1 on error (logged). */
int store_load(int (*cb)(struct gw_msg *m, enum gw_dir dir, void *ud), void *ud,
               uint64_t *max_seq);

/* Number of rows, 0 when off, -1 on error. Thread-safe. */
int64_t store_count(void);

#endif
