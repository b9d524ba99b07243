/*
 * store_int.h - what store_open.c (the file) and store.c (its rows) share:
 * the open database and its prepared statements. Private to the store.
 */
#ifndef GW_STORE_INT_H
#define GW_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "store.h"

struct store_state {
	pthread_mutex_t lock;    /* store_lock: db's statements and error text */
	int enabled;             /* 1 while db is open; read without the lock */
	sqlite3 *db;
	sqlite3_stmt *put, *stream, *del, *set, *count, *load, *streams;
	char epoch[GW_EPOCH_MAX + 1];
	char fault[256];         /* the last write's error, "" when it worked (lock) */
	int64_t fault_probe_ms;  /* monotonic: the last try to recover (lock) */
};

extern struct store_state store_db;   /* store_open.c */

#endif
