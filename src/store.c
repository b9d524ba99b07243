/*
 * store.c - the durable queues' and histories' rows: written in one
 * transaction each (store_write), counted, and read back at start
 * (store_load). store_open.c opens the file and prepares the statements
 * used here; the DESIGN block there is the whole store's.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "store_int.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"

/* One row as loaded, before it is handed to the callback. */
struct loaded {
	struct gw_msg *m;
	enum gw_row state;
};

static int row_load(sqlite3_stmt *s, struct loaded *out);
static void log_sql_error(const char *event, uint64_t seq, const char *channel,
                          const char *errtext);

/* ---- rows ---------------------------------------------------------------- */

/* One line, key=value; never the message content. */
static void log_sql_error(const char *event, uint64_t seq, const char *channel,
                          const char *errtext)
{
	char num[24];

	snprintf(num, sizeof(num), "%" PRIu64, seq);
	log_event(GW_LOG_ERROR, event, "seq", num, "channel", channel,
	          "error", errtext, NULL);
}

const char *store_epoch(void)
{
	return store_enabled() ? store_db.epoch : NULL;
}

/* Binds (channel, dir, seq) of m to ?1..?3 of s. */
static int bind_key(sqlite3_stmt *s, const struct gw_msg *m)
{
	int rc = sqlite3_bind_text(s, 1, m->channel_id, -1, SQLITE_STATIC);

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, 2, (int)proto_dir_of(m->from));
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 3, (sqlite3_int64)m->seq);
	return rc;
}

/* Steps s once (bound), then resets it and forgets its bindings (they
 * point into messages). Returns SQLITE_DONE or an error. */
static int step_once(sqlite3_stmt *s, int rc)
{
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc;
}

/* The row of m and its stream's counter. (store_lock) */
static int put_locked(const struct gw_msg *m, enum gw_row state)
{
	sqlite3_stmt *s = store_db.put;
	/* The strings and the body are only read during the step: static. */
	int rc = bind_key(s, m);

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, 4, (int)state);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, 5, (int)m->from);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 6, m->msg_id, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 7, m->sender, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 8, m->received_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob64(s, 9, m->body, m->body_len, SQLITE_STATIC);
	rc = step_once(s, rc);
	if (rc == SQLITE_DONE)
		rc = step_once(store_db.stream, bind_key(store_db.stream, m));
	return rc;
}

static int valid(const struct gw_msg *m)
{
	return m != NULL && m->seq > 0 && m->seq <= INT64_MAX &&
	       (m->from == GW_ROLE_MOD || m->from == GW_ROLE_BOT);
}

int store_write(const struct gw_msg *put, enum gw_row state, struct gw_msg *const *del,
                size_t ndel, enum gw_row set)
{
	const struct gw_msg *bad = NULL;
	char errtext[256] = "";
	int rc = SQLITE_DONE;
	size_t i;

	if (!store_enabled() || (put == NULL && ndel == 0))
		return 0;
	if ((put && (!valid(put) || (state != GW_ROW_QUEUED && state != GW_ROW_HANDED))) ||
	    (set != GW_ROW_GONE && set != GW_ROW_QUEUED && set != GW_ROW_HANDED)) {
		log_sql_error("store write refused", put ? put->seq : 0,
		              put ? put->channel_id : NULL, "bad message, state or seq");
		return -1;
	}

	pthread_mutex_lock(&store_db.lock);
	if (store_db.db == NULL) {
		pthread_mutex_unlock(&store_db.lock);
		return 0;
	}
	/* one transaction: one sync for everything */
	if (sqlite3_exec(store_db.db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		rc = SQLITE_ERROR;
	if (put && rc == SQLITE_DONE) {
		rc = put_locked(put, state);
		bad = put;
	}
	for (i = 0; i < ndel && rc == SQLITE_DONE; i++) {
		sqlite3_stmt *s = set == GW_ROW_GONE ? store_db.del : store_db.set;
		int brc;

		if (!valid(del[i]))
			continue;    /* never stored: nothing to change */
		brc = bind_key(s, del[i]);
		if (brc == SQLITE_OK && set != GW_ROW_GONE)
			brc = sqlite3_bind_int(s, 4, (int)set);
		rc = step_once(s, brc);
		bad = del[i];
	}
	if (rc == SQLITE_DONE && sqlite3_exec(store_db.db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rc = SQLITE_ERROR;
	if (rc != SQLITE_DONE) {
		snprintf(errtext, sizeof(errtext), "%s", sqlite3_errmsg(store_db.db));
		sqlite3_exec(store_db.db, "ROLLBACK", NULL, NULL, NULL);
		snprintf(store_db.fault, sizeof(store_db.fault), "%s", errtext);
		store_db.fault_probe_ms = gw_now_mono();
	} else if (store_db.fault[0]) {
		store_db.fault[0] = '\0';
		log_event(GW_LOG_INFO, "store recovered", NULL);
	}
	pthread_mutex_unlock(&store_db.lock);

	if (rc != SQLITE_DONE) {
		log_sql_error("store write failed", bad ? bad->seq : 0, bad ? bad->channel_id : NULL,
		              errtext);
		return -1;
	}
	return 0;
}

int store_health(char *reason, size_t cap)
{
	int faulty;

	if (!store_enabled())
		return 0;
	pthread_mutex_lock(&store_db.lock);
	faulty = store_db.fault[0] != '\0';
	if (faulty)
		snprintf(reason, cap, "%s", store_db.fault);
	pthread_mutex_unlock(&store_db.lock);
	return faulty;
}

void store_probe(void)
{
	int64_t now = gw_now_mono();

	if (!store_enabled())
		return;
	pthread_mutex_lock(&store_db.lock);
	if (store_db.db && store_db.fault[0] && now - store_db.fault_probe_ms >= 1000) {
		store_db.fault_probe_ms = now;
		/* a write of one row that changes nothing: it takes the same path
		 * to disk as a message does */
		if (sqlite3_exec(store_db.db,
		                 "BEGIN IMMEDIATE; UPDATE meta SET value = value WHERE key = "
		                 "(SELECT key FROM meta LIMIT 1); COMMIT",
		                 NULL, NULL, NULL) == SQLITE_OK) {
			store_db.fault[0] = '\0';
			log_event(GW_LOG_INFO, "store recovered", NULL);
		} else {
			sqlite3_exec(store_db.db, "ROLLBACK", NULL, NULL, NULL);
		}
	}
	pthread_mutex_unlock(&store_db.lock);
}

int64_t store_count(void)
{
	int64_t n = -1;
	int rc;

	if (!store_enabled())
		return 0;
	pthread_mutex_lock(&store_db.lock);
	if (store_db.db == NULL) {
		pthread_mutex_unlock(&store_db.lock);
		return 0;
	}
	rc = sqlite3_step(store_db.count);
	if (rc == SQLITE_ROW)
		n = sqlite3_column_int64(store_db.count, 0);
	sqlite3_reset(store_db.count);
	pthread_mutex_unlock(&store_db.lock);
	return n;
}

/* Rebuilds the message of the current row of s into *out. Returns 1 if
 * done, 0 if the row cannot be a message (logged, skipped), -1 if memory
 * ran out. */
static int row_load(sqlite3_stmt *s, struct loaded *out)
{
	const char *text[3];
	const void *body;
	sqlite3_int64 seq = sqlite3_column_int64(s, 0);
	int dir = sqlite3_column_int(s, 1);
	int origin = sqlite3_column_int(s, 2);
	int handed = sqlite3_column_int(s, 8);
	size_t body_len;
	char num[24];
	int i;

	for (i = 0; i < 3; i++) {
		text[i] = (const char *)sqlite3_column_text(s, 3 + i);
		/* an embedded NUL would make the id shorter than stored */
		if (text[i] != NULL &&
		    strlen(text[i]) != (size_t)sqlite3_column_bytes(s, 3 + i))
			text[i] = NULL;
	}
	body = sqlite3_column_blob(s, 7);
	body_len = (size_t)sqlite3_column_bytes(s, 7);

	out->m = NULL;
	if (seq > 0 && (origin == GW_ROLE_MOD || origin == GW_ROLE_BOT) &&
	    dir == (int)proto_dir_of((enum gw_role)origin) &&
	    (handed == GW_ROW_QUEUED || handed == GW_ROW_HANDED) &&
	    body != NULL && body_len > 0 && *(const char *)body == '{') {
		out->m = proto_msg_new((enum gw_role)origin, text[0], text[1], text[2],
		                       body, body_len, sqlite3_column_int64(s, 6),
		                       (uint64_t)seq);
		/* Every field checked but the ids: NULL means a bad id, or
		 * memory; tell them apart with an id-free probe. */
		if (out->m == NULL) {
			struct gw_msg *probe = proto_msg_new(GW_ROLE_MOD, "c", "m", "s",
			                                     "{", 1, 0, 1);

			if (probe == NULL)
				return -1;
			proto_msg_unref(probe);
		}
	}
	if (out->m == NULL) {
		snprintf(num, sizeof(num), "%lld", (long long)seq);
		log_event(GW_LOG_WARN, "store row skipped: not a valid message",
		          "seq", num, NULL);
		return 0;
	}
	out->state = (enum gw_row)handed;
	return 1;
}

/* Hands every stream counter to cb (no lock held meanwhile: they are read
 * first). Returns 0 or -1. */
static int load_streams(int (*cb)(const char *channel, enum gw_dir dir, uint64_t seq, void *ud),
                        void *ud)
{
	struct row { char *channel; int dir; sqlite3_int64 seq; } *v = NULL, *nv;
	size_t n = 0, cap = 0, i;
	int rc, result = 0;

	pthread_mutex_lock(&store_db.lock);
	while ((rc = sqlite3_step(store_db.streams)) == SQLITE_ROW) {
		const char *ch = (const char *)sqlite3_column_text(store_db.streams, 0);

		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			if (!(nv = realloc(v, cap * sizeof(*v)))) {
				rc = SQLITE_NOMEM;
				break;
			}
			v = nv;
		}
		v[n].channel = ch ? strdup(ch) : NULL;
		v[n].dir = sqlite3_column_int(store_db.streams, 1);
		v[n].seq = sqlite3_column_int64(store_db.streams, 2);
		if (v[n].channel == NULL) {
			rc = SQLITE_NOMEM;
			break;
		}
		n++;
	}
	sqlite3_reset(store_db.streams);
	pthread_mutex_unlock(&store_db.lock);
	if (rc != SQLITE_DONE) {
		log_event(GW_LOG_ERROR, "store load failed", "error", "cannot read stream counters",
		          NULL);
		result = -1;
	}
	for (i = 0; i < n; i++) {
		if (result == 0 && v[i].seq > 0 && (v[i].dir == GW_TO_BOT || v[i].dir == GW_TO_MOD) &&
		    proto_id_valid(v[i].channel, strlen(v[i].channel)) &&
		    cb(v[i].channel, (enum gw_dir)v[i].dir, (uint64_t)v[i].seq, ud) != 0)
			result = -1;
		free(v[i].channel);
	}
	free(v);
	return result;
}

int store_load(int (*stream_cb)(const char *channel, enum gw_dir dir, uint64_t seq, void *ud),
               int (*cb)(struct gw_msg *m, enum gw_row state, void *ud), void *ud)
{
	struct loaded *v = NULL, *nv;
	size_t n = 0, cap = 0, i;
	char errtext[256] = "";
	int rc, ok, result = -1;

	if (!store_enabled())
		return 0;
	if (stream_cb != NULL && load_streams(stream_cb, ud) < 0)
		return -1;

	/* Everything is read first and handed over after: cb runs without
	 * the lock and with no statement pending, so it may write. */
	pthread_mutex_lock(&store_db.lock);
	if (store_db.db == NULL) {
		pthread_mutex_unlock(&store_db.lock);
		return 0;
	}
	while ((rc = sqlite3_step(store_db.load)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			nv = realloc(v, cap * sizeof(*v));
			if (nv == NULL) {
				rc = SQLITE_NOMEM;
				break;
			}
			v = nv;
		}
		ok = row_load(store_db.load, &v[n]);
		if (ok < 0) {
			rc = SQLITE_NOMEM;
			break;
		}
		n += (size_t)ok;
	}
	if (rc != SQLITE_DONE)
		snprintf(errtext, sizeof(errtext), "%s", rc == SQLITE_NOMEM ?
		         "out of memory" : sqlite3_errmsg(store_db.db));
	sqlite3_reset(store_db.load);
	pthread_mutex_unlock(&store_db.lock);

	if (rc != SQLITE_DONE) {
		log_event(GW_LOG_ERROR, "store load failed", "error", errtext, NULL);
		goto out;
	}
	if (n > INT_MAX) {
		log_event(GW_LOG_ERROR, "store load failed", "error", "too many rows", NULL);
		goto out;
	}
	result = (int)n;
out:
	for (i = 0; i < n; i++) {
		if (result >= 0 && cb != NULL) {
			if (cb(v[i].m, v[i].state, ud) != 0)
				result = -1;   /* cb owns v[i].m; free the rest */
		} else {
			proto_msg_unref(v[i].m);
		}
	}
	free(v);
	return result;
}
