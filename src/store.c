/*
 * store.c - the durable queue in one SQLite file: a row per message waiting
 * in a ring, written before its `queued` ack, deleted once delivered, read
 * back at start to rebuild the rings. See store.h for the contract.
 *
 * DESIGN
 * - One table, queue, keyed by the message's acceptance seq; a row holds
 *   exactly what proto_msg_new needs to rebuild the message byte for byte
 *   (the body is the outbound JSON as sent, minus its final '}').
 * - Durability: journal_mode=WAL and every put/del in its own autocommit
 *   transaction, so a row is committed when store_put returns. With
 *   synchronous=NORMAL a commit is a write(2) into the WAL, no fsync: it
 *   survives the process dying (kill -9) because the kernel still holds the
 *   page, but not a power loss; synchronous=FULL adds an fsync per commit
 *   and survives that too. The WAL is checkpointed into the file as it
 *   grows and on close.
 * - One gateway per file: locking_mode=EXCLUSIVE, and the write lock is
 *   taken at open (BEGIN IMMEDIATE) and kept until close, so a second
 *   process fails at start instead of both writing the same queues. In this
 *   mode SQLite keeps the WAL index in heap memory: no -shm file.
 * - Refuse rather than guess: a file that exists but cannot be opened,
 *   is not an SQLite database, fails quick_check, belongs to something
 *   else or has another schema version stops the start with one line
 *   saying what to do. Starting empty would silently lose every queued
 *   message in it.
 * - Threads: SQLITE_OPEN_FULLMUTEX serializes the connection; store_lock
 *   additionally keeps each prepared statement's bind/step/reset (and the
 *   error text read after it) in one piece. It is held across the disk
 *   write of a put or delete -- that is the point of the call -- and never
 *   while logging or calling back.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "path.h"

#define STORE_SCHEMA_VERSION 1
#define STORE_APP_ID 0x48474757      /* "HGGW" in the file header */
#define STORE_BUSY_MS 100            /* then "locked": we never share the file */

/* One row as loaded, before it is handed to the callback. */
struct loaded {
	struct gw_msg *m;
	int dir;
};

static struct {
	pthread_mutex_t lock;    /* store_lock: db's statements and error text */
	int enabled;             /* 1 while db is open; read without the lock */
	sqlite3 *db;
	sqlite3_stmt *put, *del, *count, *load;
} st = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int open_fail(char *err, size_t errlen, const char *path,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int sql_fail(char *err, size_t errlen, const char *path, int rc,
                    const char *what);
static int file_check(const char *path, char *err, size_t errlen);
static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t outlen);
static int pragma_int(sqlite3 *db, const char *sql, int64_t *out);
static int schema_check(sqlite3 *db, const char *path, char *err, size_t errlen);
static int statements_prepare(sqlite3 *db);
static void statements_finalize(void);
static int row_load(sqlite3_stmt *s, struct loaded *out, uint64_t *max_seq);
static void log_sql_error(const char *event, uint64_t seq, const char *channel,
                          const char *errtext);

/* ---- open ---------------------------------------------------------------- */

/* Writes "store PATH: <fmt>" into err. Returns -1. */
static int open_fail(char *err, size_t errlen, const char *path,
                     const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	if (err == NULL || errlen == 0)
		return -1;
	n = snprintf(err, errlen, "store %s: ", path);
	if (n >= 0 && (size_t)n < errlen) {
		va_start(ap, fmt);
		vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	/* One line, whatever SQLite's text holds (quick_check's has '\n'). */
	for (p = err; *p != '\0'; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return -1;
}

/* Explains an SQLite failure while opening: what it means for the
 * operator, and SQLite's own words. Returns -1. */
static int sql_fail(char *err, size_t errlen, const char *path, int rc,
                    const char *what)
{
	if (what == NULL || *what == '\0')
		what = sqlite3_errstr(rc);
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return open_fail(err, errlen, path, "locked by another process "
		                 "(is another gateway running on it?); stop it or "
		                 "set another [store] path");
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		return open_fail(err, errlen, path, "file is not a database or is "
		                 "corrupt (SQLite: %s); move it away or fix it", what);
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
	case SQLITE_READONLY:
	case SQLITE_AUTH:
		return open_fail(err, errlen, path, "cannot open it for reading and "
		                 "writing (SQLite: %s); check the permissions of the "
		                 "file and its folder", what);
	case SQLITE_FULL:
		return open_fail(err, errlen, path, "disk full (SQLite: %s); free "
		                 "some space", what);
	case SQLITE_IOERR:
		return open_fail(err, errlen, path, "I/O error (SQLite: %s); check "
		                 "the disk", what);
	default:
		return open_fail(err, errlen, path, "cannot use it (SQLite: %s); "
		                 "move it away or fix it", what);
	}
}


/* What SQLite would report vaguely ("unable to open database file"), said
 * precisely before it tries: the path is not a file, cannot be read and
 * written, or its folder cannot be created or written (the WAL lives
 * beside the file). A missing file is created here, private to the
 * gateway's user (SQLite gives the WAL the same mode). */
static int file_check(const char *path, char *err, size_t errlen)
{
	char dir[PATH_MAX], *slash;
	struct stat sb;
	int fd;

	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return open_fail(err, errlen, path, "path too long");
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		slash[slash == dir] = '\0';   /* "/file": its folder is "/" */
	if (path_mkdirs(dir) < 0)
		return open_fail(err, errlen, path, "cannot create its folder %s "
		                 "(%s); create it or set another [store] path",
		                 dir, strerror(errno));
	if (access(dir, W_OK | X_OK) < 0)
		return open_fail(err, errlen, path, "folder %s is not writable (%s); "
		                 "the gateway writes the file and its -wal beside it",
		                 dir, strerror(errno));
	if (stat(path, &sb) < 0) {
		if (errno != ENOENT)
			return open_fail(err, errlen, path, "cannot access it (%s); "
			                 "check the path and its permissions",
			                 strerror(errno));
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			return open_fail(err, errlen, path, "cannot create it (%s); "
			                 "check the folder's permissions",
			                 strerror(errno));
		if (fd >= 0)
			close(fd);
		return 0;
	}
	if (S_ISDIR(sb.st_mode))
		return open_fail(err, errlen, path, "is a directory, not a file; set "
		                 "[store] path to a file name");
	if (!S_ISREG(sb.st_mode))
		return open_fail(err, errlen, path, "is not a regular file; set "
		                 "[store] path to a file name");
	if (access(path, R_OK | W_OK) < 0)
		return open_fail(err, errlen, path, "cannot read and write it (%s); "
		                 "fix its owner or permissions", strerror(errno));
	return 0;
}

/* Runs a statement that answers one text value (a PRAGMA) into out.
 * Returns an SQLite result code (SQLITE_OK when a row came back). */
static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
	sqlite3_stmt *s;
	const unsigned char *v;
	int rc;

	out[0] = '\0';
	rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		v = sqlite3_column_text(s, 0);
		snprintf(out, outlen, "%s", v != NULL ? (const char *)v : "");
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	return rc;
}

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *s;
	int rc;

	*out = 0;
	rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(s, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(s);
	return rc;
}

/* Creates the schema in an empty database, or checks that a non-empty one
 * is a gateway store of our version. Returns 0 or -1 (err filled). */
static int schema_check(sqlite3 *db, const char *path, char *err, size_t errlen)
{
	static const char create[] =
		"BEGIN IMMEDIATE;"
		"CREATE TABLE queue("
		" seq INTEGER PRIMARY KEY,"
		" dir INTEGER NOT NULL,"          /* 0 to bot, 1 to mods */
		" origin INTEGER NOT NULL,"       /* enum gw_role of the sender */
		" channel TEXT NOT NULL,"
		" msg_id TEXT NOT NULL,"
		" sender TEXT NOT NULL,"
		" received_ms INTEGER NOT NULL,"
		" body BLOB NOT NULL);"
		"PRAGMA application_id = 1212630871;"   /* STORE_APP_ID */
		"PRAGMA user_version = 1;"              /* STORE_SCHEMA_VERSION */
		"COMMIT;";
	int64_t app_id, version, tables;
	char *msg = NULL;
	int rc;

	_Static_assert(STORE_APP_ID == 1212630871, "create[] spells the id");
	_Static_assert(STORE_SCHEMA_VERSION == 1, "create[] spells the version");

	if ((rc = pragma_int(db, "PRAGMA application_id", &app_id)) != SQLITE_OK ||
	    (rc = pragma_int(db, "PRAGMA user_version", &version)) != SQLITE_OK ||
	    (rc = pragma_int(db, "SELECT count(*) FROM sqlite_master", &tables)) != SQLITE_OK)
		return sql_fail(err, errlen, path, rc, sqlite3_errmsg(db));

	if (app_id == 0 && version == 0 && tables == 0) {
		rc = sqlite3_exec(db, create, NULL, NULL, &msg);
		if (rc != SQLITE_OK) {
			sql_fail(err, errlen, path, rc, msg);
			sqlite3_free(msg);
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return -1;
		}
		return 0;
	}
	if (app_id != STORE_APP_ID)
		return open_fail(err, errlen, path, "is an SQLite database but not a "
		                 "gateway store (application_id %" PRId64 ", %" PRId64
		                 " tables); move it away or set another [store] path",
		                 app_id, tables);
	if (version != STORE_SCHEMA_VERSION)
		return open_fail(err, errlen, path, "schema version %" PRId64 ", this "
		                 "gateway reads version %d; use the gateway that wrote "
		                 "it, or move the file away (its queued messages are "
		                 "then not delivered)", version, STORE_SCHEMA_VERSION);
	return 0;
}

/* Prepared once, reused with sqlite3_reset for the life of the store. A
 * failure here after schema_check means the table is not what version 1
 * says (edited by hand). */
static int statements_prepare(sqlite3 *db)
{
	int rc;

	rc = sqlite3_prepare_v3(db, "INSERT OR REPLACE INTO queue(seq, dir, origin, "
	                        "channel, msg_id, sender, received_ms, body) "
	                        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)", -1,
	                        SQLITE_PREPARE_PERSISTENT, &st.put, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v3(db, "DELETE FROM queue WHERE seq = ?1", -1,
		                        SQLITE_PREPARE_PERSISTENT, &st.del, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v3(db, "SELECT count(*) FROM queue", -1,
		                        SQLITE_PREPARE_PERSISTENT, &st.count, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v3(db, "SELECT seq, dir, origin, channel, msg_id, "
		                        "sender, received_ms, body FROM queue "
		                        "ORDER BY seq", -1,
		                        SQLITE_PREPARE_PERSISTENT, &st.load, NULL);
	return rc;
}

static void statements_finalize(void)
{
	sqlite3_finalize(st.put);
	sqlite3_finalize(st.del);
	sqlite3_finalize(st.count);
	sqlite3_finalize(st.load);
	st.put = st.del = st.count = st.load = NULL;
}

int store_open(const char *path, enum gw_sync sync, char *err, size_t errlen)
{
	static const char *const sync_sql[] = {
		[GW_SYNC_OFF] = "PRAGMA synchronous = OFF",
		[GW_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
		[GW_SYNC_FULL] = "PRAGMA synchronous = FULL",
	};
	sqlite3 *db = NULL;
	char text[256];
	int rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (st.db != NULL)
		return open_fail(err, errlen, path ? path : "", "a store is already "
		                 "open in this process");
	if (path == NULL || *path == '\0')
		return 0;    /* memory only */
	if ((unsigned)sync > GW_SYNC_FULL)
		return open_fail(err, errlen, path, "unknown sync mode %d", (int)sync);
	if (file_check(path, err, errlen) < 0)
		return -1;

	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	                     SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK) {
		sql_fail(err, errlen, path, rc, db ? sqlite3_errmsg(db) : NULL);
		goto fail;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, STORE_BUSY_MS);

	/* Exclusive before WAL: the WAL index then lives in this process's
	 * memory, and the first read already fails if another gateway holds
	 * the file. The first read is also where garbage is noticed. */
	rc = sqlite3_exec(db, "PRAGMA locking_mode = EXCLUSIVE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = pragma_text(db, "PRAGMA journal_mode = WAL", text, sizeof(text));
	if (rc != SQLITE_OK) {
		sql_fail(err, errlen, path, rc, sqlite3_errmsg(db));
		goto fail;
	}
	if (strcmp(text, "wal") != 0) {
		open_fail(err, errlen, path, "cannot switch to WAL mode (journal_mode "
		          "is %s); put the file on a local file system", text);
		goto fail;
	}
	rc = sqlite3_exec(db, sync_sql[sync], NULL, NULL, NULL);
	/* Take the write lock now and keep it (exclusive mode) until close. */
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "BEGIN IMMEDIATE; COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		sql_fail(err, errlen, path, rc, sqlite3_errmsg(db));
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		goto fail;
	}

	rc = pragma_text(db, "PRAGMA quick_check", text, sizeof(text));
	if (rc != SQLITE_OK) {
		sql_fail(err, errlen, path, rc, sqlite3_errmsg(db));
		goto fail;
	}
	if (strcmp(text, "ok") != 0) {
		open_fail(err, errlen, path, "database is corrupt (quick_check: %s); "
		          "move it away or fix it", text);
		goto fail;
	}
	if (schema_check(db, path, err, errlen) < 0)
		goto fail;
	rc = statements_prepare(db);
	if (rc != SQLITE_OK) {
		open_fail(err, errlen, path, "unexpected table layout (SQLite: %s); "
		          "move it away or fix it", sqlite3_errmsg(db));
		statements_finalize();
		goto fail;
	}

	pthread_mutex_lock(&st.lock);
	st.db = db;
	__atomic_store_n(&st.enabled, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&st.lock);
	return 0;
fail:
	sqlite3_close(db);   /* NULL is fine; releases the lock if we took it */
	return -1;
}

void store_close(void)
{
	sqlite3 *db;

	pthread_mutex_lock(&st.lock);
	__atomic_store_n(&st.enabled, 0, __ATOMIC_RELEASE);
	db = st.db;
	st.db = NULL;
	statements_finalize();
	pthread_mutex_unlock(&st.lock);
	/* Checkpoints the WAL into the file and removes it. */
	if (db != NULL && sqlite3_close(db) != SQLITE_OK)
		log_event(GW_LOG_ERROR, "store close failed", "error",
		          sqlite3_errmsg(db), NULL);
}

int store_enabled(void)
{
	return __atomic_load_n(&st.enabled, __ATOMIC_ACQUIRE);
}

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

int store_put(const struct gw_msg *m, enum gw_dir dir)
{
	sqlite3_stmt *s;
	char errtext[256];
	int rc;

	if (!store_enabled())
		return 0;
	if (m == NULL || (dir != GW_TO_BOT && dir != GW_TO_MOD) ||
	    m->seq == 0 || m->seq > INT64_MAX) {
		log_sql_error("store write refused", m ? m->seq : 0,
		              m ? m->channel_id : NULL, "bad message, direction or seq");
		return -1;
	}

	pthread_mutex_lock(&st.lock);
	if (st.db == NULL) {
		pthread_mutex_unlock(&st.lock);
		return 0;
	}
	s = st.put;
	/* The strings and the body are only read during the step: static. */
	rc = sqlite3_bind_int64(s, 1, (sqlite3_int64)m->seq);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, 2, dir);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, 3, (int)m->from);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 4, m->channel_id, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 5, m->msg_id, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(s, 6, m->sender, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 7, m->received_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob64(s, 8, m->body, m->body_len, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc != SQLITE_DONE)
		snprintf(errtext, sizeof(errtext), "%s", sqlite3_errmsg(st.db));
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);   /* keep no pointer into m */
	pthread_mutex_unlock(&st.lock);

	if (rc != SQLITE_DONE) {
		log_sql_error("store write failed", m->seq, m->channel_id, errtext);
		return -1;
	}
	return 0;
}

int store_del(const uint64_t *seqs, size_t n)
{
	char errtext[256] = "";
	uint64_t bad = 0;
	int rc = SQLITE_DONE, batch = n > 1;

	if (!store_enabled() || n == 0)
		return 0;

	pthread_mutex_lock(&st.lock);
	if (st.db == NULL) {
		pthread_mutex_unlock(&st.lock);
		return 0;
	}
	/* one transaction: one sync for the whole batch */
	if (batch && sqlite3_exec(st.db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		rc = SQLITE_ERROR;
	for (size_t i = 0; i < n && rc == SQLITE_DONE; i++) {
		if (seqs[i] == 0 || seqs[i] > INT64_MAX)
			continue;    /* never stored: nothing to delete */
		rc = sqlite3_bind_int64(st.del, 1, (sqlite3_int64)seqs[i]);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(st.del);
		sqlite3_reset(st.del);
		bad = seqs[i];
	}
	if (rc == SQLITE_DONE && batch && sqlite3_exec(st.db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rc = SQLITE_ERROR;
	if (rc != SQLITE_DONE) {
		snprintf(errtext, sizeof(errtext), "%s", sqlite3_errmsg(st.db));
		if (batch)
			sqlite3_exec(st.db, "ROLLBACK", NULL, NULL, NULL);
	}
	pthread_mutex_unlock(&st.lock);

	if (rc != SQLITE_DONE) {
		log_sql_error("store delete failed", bad, NULL, errtext);
		return -1;
	}
	return 0;
}

int64_t store_count(void)
{
	int64_t n = -1;
	int rc;

	if (!store_enabled())
		return 0;
	pthread_mutex_lock(&st.lock);
	if (st.db == NULL) {
		pthread_mutex_unlock(&st.lock);
		return 0;
	}
	rc = sqlite3_step(st.count);
	if (rc == SQLITE_ROW)
		n = sqlite3_column_int64(st.count, 0);
	sqlite3_reset(st.count);
	pthread_mutex_unlock(&st.lock);
	return n;
}

/* Rebuilds the message of the current row of s into *out. Returns 1 if
 * done, 0 if the row cannot be a message (logged, skipped), -1 if memory
 * ran out. */
static int row_load(sqlite3_stmt *s, struct loaded *out, uint64_t *max_seq)
{
	const char *text[3];
	const void *body;
	sqlite3_int64 seq = sqlite3_column_int64(s, 0);
	int dir = sqlite3_column_int(s, 1);
	int origin = sqlite3_column_int(s, 2);
	size_t body_len;
	char num[24];
	int i;

	if (seq > 0 && (uint64_t)seq > *max_seq)
		*max_seq = (uint64_t)seq;
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
	if (seq > 0 && (dir == GW_TO_BOT || dir == GW_TO_MOD) &&
	    (origin == GW_ROLE_MOD || origin == GW_ROLE_BOT) &&
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
	out->dir = dir;
	return 1;
}

int store_load(int (*cb)(struct gw_msg *m, enum gw_dir dir, void *ud), void *ud,
               uint64_t *max_seq)
{
	struct loaded *v = NULL, *nv;
	size_t n = 0, cap = 0, i;
	uint64_t max = 0;
	char errtext[256] = "";
	int rc, ok, result = -1;

	if (max_seq != NULL)
		*max_seq = 0;
	if (!store_enabled())
		return 0;

	/* Everything is read first and handed over after: cb runs without
	 * the lock and with no statement pending, so it may write. */
	pthread_mutex_lock(&st.lock);
	if (st.db == NULL) {
		pthread_mutex_unlock(&st.lock);
		return 0;
	}
	while ((rc = sqlite3_step(st.load)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			nv = realloc(v, cap * sizeof(*v));
			if (nv == NULL) {
				rc = SQLITE_NOMEM;
				break;
			}
			v = nv;
		}
		ok = row_load(st.load, &v[n], &max);
		if (ok < 0) {
			rc = SQLITE_NOMEM;
			break;
		}
		n += (size_t)ok;
	}
	if (rc != SQLITE_DONE)
		snprintf(errtext, sizeof(errtext), "%s", rc == SQLITE_NOMEM ?
		         "out of memory" : sqlite3_errmsg(st.db));
	sqlite3_reset(st.load);
	pthread_mutex_unlock(&st.lock);

	if (rc != SQLITE_DONE) {
		log_event(GW_LOG_ERROR, "store load failed", "error", errtext, NULL);
		goto out;
	}
	if (n > INT_MAX) {
		log_event(GW_LOG_ERROR, "store load failed", "error", "too many rows", NULL);
		goto out;
	}
	result = (int)n;
	if (max_seq != NULL)
		*max_seq = max;
out:
	for (i = 0; i < n; i++) {
		if (result >= 0 && cb != NULL) {
			if (cb(v[i].m, v[i].dir, ud) != 0)
				result = -1;   /* cb owns v[i].m; free the rest */
		} else {
			proto_msg_unref(v[i].m);
		}
	}
	free(v);
	return result;
}
