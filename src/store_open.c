/*
 * store_open.c - the store's file: opening it (checks, locking, WAL,
 * the schema and its migration from version 1, the prepared statements)
 * and closing it. store.c reads and writes its rows. See store.h for the
 * contract; this DESIGN block is the whole store's.
 *
 * DESIGN
 * - Table messages: a row per message, unique by (channel, dir, seq), in
 *   write order (id); it holds exactly what proto_msg_new needs to rebuild
 *   the message byte for byte (the body is the outbound JSON as sent, minus
 *   its final '}') and whether it was handed to a recipient yet. Table
 *   streams: the last seq given per channel and direction, so a seq is
 *   never given twice while the file lives, whatever was deleted. Table
 *   meta: the epoch that names those sequences.
 * - Version 1 files (one table, queue, keyed by a global seq) are migrated
 *   in one transaction at open: each stream's rows numbered from 1.
 * - Durability: journal_mode=WAL and every write in one transaction, so a
 *   row is committed when store_write returns. With
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
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "path.h"

#define STORE_SCHEMA_VERSION 2
#define STORE_APP_ID 0x48474757      /* "HGGW" in the file header */
#define STORE_BUSY_MS 100            /* then "locked": we never share the file */

struct store_state store_db = { .lock = PTHREAD_MUTEX_INITIALIZER };

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

#define SCHEMA_V2 \
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;" \
	"CREATE TABLE streams(channel TEXT NOT NULL, dir INTEGER NOT NULL," \
	" seq INTEGER NOT NULL, PRIMARY KEY(channel, dir)) WITHOUT ROWID;" \
	"CREATE TABLE messages(" \
	" id INTEGER PRIMARY KEY,"        /* write order */ \
	" channel TEXT NOT NULL," \
	" dir INTEGER NOT NULL,"          /* enum gw_dir */ \
	" seq INTEGER NOT NULL,"          /* per channel and direction */ \
	" handed INTEGER NOT NULL,"       /* enum gw_row */ \
	" origin INTEGER NOT NULL,"       /* enum gw_role of the sender */ \
	" msg_id TEXT NOT NULL," \
	" sender TEXT NOT NULL," \
	" received_ms INTEGER NOT NULL," \
	" body BLOB NOT NULL," \
	" UNIQUE(channel, dir, seq));"

/* A new epoch: 16 hex digits from getrandom (or the clock). */
static void epoch_new(char out[17])
{
	unsigned char b[8];
	uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		memcpy(b, &t, sizeof(b));
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* Runs sql (a transaction) on db; on failure rolls back and fills err. */
static int exec_fail(sqlite3 *db, const char *sql, const char *path, char *err, size_t errlen)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

	if (rc == SQLITE_OK)
		return 0;
	sql_fail(err, errlen, path, rc, msg);
	sqlite3_free(msg);
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* Creates the schema in an empty database, migrates a version 1 store, or
 * checks that a non-empty one is a gateway store of our version. Returns 0
 * or -1 (err filled). */
static int schema_check(sqlite3 *db, const char *path, char *err, size_t errlen)
{
	static const char create[] =
		"BEGIN IMMEDIATE;" SCHEMA_V2
		"INSERT INTO meta VALUES('epoch', '%s');"
		"PRAGMA application_id = 1212630871;"   /* STORE_APP_ID */
		"PRAGMA user_version = 2;"              /* STORE_SCHEMA_VERSION */
		"COMMIT;";
	/* version 1: one table, queue(seq global, dir, origin, channel, msg_id,
	 * sender, received_ms, body), every row queued */
	static const char migrate[] =
		"BEGIN IMMEDIATE;"
		"ALTER TABLE queue RENAME TO queue_v1;" SCHEMA_V2
		"INSERT INTO meta VALUES('epoch', '%s');"
		"INSERT INTO messages(channel, dir, seq, handed, origin, msg_id, sender,"
		" received_ms, body) SELECT channel, dir, row_number() OVER"
		" (PARTITION BY channel, dir ORDER BY seq), 0, origin, msg_id, sender,"
		" received_ms, body FROM queue_v1 ORDER BY seq;"
		"INSERT INTO streams SELECT channel, dir, max(seq) FROM messages"
		" GROUP BY channel, dir;"
		"DROP TABLE queue_v1;"
		"PRAGMA user_version = 2;"
		"COMMIT;";
	char sql[sizeof(migrate) + sizeof(create) + 32], epoch[17];
	int64_t app_id, version, tables;
	int rc;

	_Static_assert(STORE_APP_ID == 1212630871, "create[] spells the id");
	_Static_assert(STORE_SCHEMA_VERSION == 2, "create[] spells the version");

	if ((rc = pragma_int(db, "PRAGMA application_id", &app_id)) != SQLITE_OK ||
	    (rc = pragma_int(db, "PRAGMA user_version", &version)) != SQLITE_OK ||
	    (rc = pragma_int(db, "SELECT count(*) FROM sqlite_master", &tables)) != SQLITE_OK)
		return sql_fail(err, errlen, path, rc, sqlite3_errmsg(db));

	epoch_new(epoch);
	if (app_id == 0 && version == 0 && tables == 0) {
		snprintf(sql, sizeof(sql), create, epoch);
		return exec_fail(db, sql, path, err, errlen);
	}
	if (app_id != STORE_APP_ID)
		return open_fail(err, errlen, path, "is an SQLite database but not a "
		                 "gateway store (application_id %" PRId64 ", %" PRId64
		                 " tables); move it away or set another [store] path",
		                 app_id, tables);
	if (version == 1) {
		snprintf(sql, sizeof(sql), migrate, epoch);
		if (exec_fail(db, sql, path, err, errlen) < 0)
			return -1;
		log_event(GW_LOG_INFO, "store migrated to version 2", "path", path, NULL);
		return 0;
	}
	if (version != STORE_SCHEMA_VERSION)
		return open_fail(err, errlen, path, "schema version %" PRId64 ", this "
		                 "gateway reads version %d; use the gateway that wrote "
		                 "it, or move the file away (its queued messages are "
		                 "then not delivered)", version, STORE_SCHEMA_VERSION);
	return 0;
}

/* Prepared once, reused with sqlite3_reset for the life of the store. A
 * failure here after schema_check means the tables are not what version 2
 * says (edited by hand). */
static int statements_prepare(sqlite3 *db)
{
	static const struct { sqlite3_stmt **s; const char *sql; } v[] = {
		{ &store_db.put, "INSERT OR REPLACE INTO messages(channel, dir, seq, handed, origin,"
		           " msg_id, sender, received_ms, body)"
		           " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)" },
		{ &store_db.stream, "INSERT INTO streams VALUES(?1, ?2, ?3) ON CONFLICT(channel, dir)"
		              " DO UPDATE SET seq = max(seq, excluded.seq)" },
		{ &store_db.del, "DELETE FROM messages WHERE channel = ?1 AND dir = ?2 AND seq = ?3" },
		{ &store_db.set, "UPDATE messages SET handed = ?4"
		           " WHERE channel = ?1 AND dir = ?2 AND seq = ?3" },
		{ &store_db.count, "SELECT count(*) FROM messages" },
		{ &store_db.load, "SELECT seq, dir, origin, channel, msg_id, sender, received_ms, body,"
		            " handed FROM messages ORDER BY id" },
		/* a row above its counter (a file edited by hand) still counts:
		 * its seq is never given again */
		{ &store_db.streams, "SELECT channel, dir, max(seq) FROM (SELECT channel, dir, seq"
		               " FROM streams UNION ALL SELECT channel, dir, seq FROM messages)"
		               " GROUP BY channel, dir" },
	};
	char text[GW_EPOCH_MAX + 1];
	int rc = SQLITE_OK;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]) && rc == SQLITE_OK; i++)
		rc = sqlite3_prepare_v3(db, v[i].sql, -1, SQLITE_PREPARE_PERSISTENT, v[i].s, NULL);
	if (rc == SQLITE_OK)
		rc = pragma_text(db, "SELECT value FROM meta WHERE key = 'epoch'", text, sizeof(text));
	if (rc == SQLITE_OK && !proto_id_valid(text, strlen(text)))
		rc = SQLITE_CORRUPT;
	if (rc == SQLITE_OK)
		memcpy(store_db.epoch, text, sizeof(text));
	return rc;
}

static void statements_finalize(void)
{
	sqlite3_stmt **v[] = { &store_db.put, &store_db.stream, &store_db.del, &store_db.set, &store_db.count, &store_db.load,
	                       &store_db.streams };

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		sqlite3_finalize(*v[i]);
		*v[i] = NULL;
	}
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
	if (store_db.db != NULL)
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
		          "move it away or fix it", rc == SQLITE_CORRUPT ? "no valid epoch in table meta"
		                                                         : sqlite3_errmsg(db));
		statements_finalize();
		goto fail;
	}

	pthread_mutex_lock(&store_db.lock);
	store_db.db = db;
	__atomic_store_n(&store_db.enabled, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&store_db.lock);
	return 0;
fail:
	sqlite3_close(db);   /* NULL is fine; releases the lock if we took it */
	return -1;
}

void store_close(void)
{
	sqlite3 *db;

	pthread_mutex_lock(&store_db.lock);
	__atomic_store_n(&store_db.enabled, 0, __ATOMIC_RELEASE);
	db = store_db.db;
	store_db.db = NULL;
	statements_finalize();
	pthread_mutex_unlock(&store_db.lock);
	/* Checkpoints the WAL into the file and removes it. */
	if (db != NULL && sqlite3_close(db) != SQLITE_OK)
		log_event(GW_LOG_ERROR, "store close failed", "error",
		          sqlite3_errmsg(db), NULL);
}

int store_enabled(void)
{
	return __atomic_load_n(&store_db.enabled, __ATOMIC_ACQUIRE);
}
