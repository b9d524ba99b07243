/*
 * test_store.c - unit tests for store.c: rows round-trip to the same bytes
 * in seq order, survive close/reopen and a kill -9 of the writer, memory-
 * only mode, replace/delete idempotence, and refusals (locked by another
 * process, garbage, corrupt, directory or unreadable path, foreign or
 * newer schema) with one clear line. Prints a puts/s figure.
 *
 * Each test works in its own folder under $TMPDIR (or /tmp), removed after.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"
#include "store.h"

#define NOW_MS 1765189860123LL          /* 2025-12-08T10:31:00.123Z */
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

struct fixture {
	char dir[PATH_MAX];
	char path[PATH_MAX + 32];           /* dir/data/gateway.db */
};

/* What store_load handed over, in call order. */
struct collected {
	struct gw_msg *m[1024];
	int dir[1024];
	size_t n;
	size_t stop_after;                  /* 0 = never stop */
};

/* ---- helpers ------------------------------------------------------------- */

/* A real decoded message: mods on channel `channel` as srv-1, the bot as
 * bot-1 into `channel`; i varies ids and content, pad adds content bytes. */
static struct gw_msg *msg_make(enum gw_role role, const char *channel,
                               unsigned i, uint64_t seq, size_t pad)
{
	struct gw_handshake hs;
	struct gw_msg *m = NULL;
	char hsjson[256], idjson[64];
	char *json, *filler;
	size_t cap = 512 + pad;

	filler = malloc(pad + 1);
	json = malloc(cap);
	assert_non_null(filler);
	assert_non_null(json);
	memset(filler, 'x', pad);
	filler[pad] = '\0';
	if (role == GW_ROLE_MOD) {
		snprintf(hsjson, sizeof(hsjson), "{\"type\":\"mod\",\"data\":"
		         "{\"server_id\":\"srv-1\",\"channel_id\":\"%s\"}}", channel);
		snprintf(json, cap, "{\"msg_id\":\"m-%u\",\"id\":\"srv-1\","
		         "\"destination\":{\"channel_id\":\"%s\"},\"author\":{\"id\":"
		         "\"u1\",\"name\":\"Zo\\u00eb\"},\"content\":\"hello %u \\u2603 "
		         "\\\"q\\\"%s\",\"meta\":{\"n\":%u,\"r\":0.1}}",
		         i, channel, i, filler, i);
	} else {
		snprintf(hsjson, sizeof(hsjson),
		         "{\"type\":\"bot\",\"data\":{\"bot_id\":\"bot-1\"}}");
		snprintf(json, cap, "{\"msg_id\":\"b-%u\",\"id\":\"%s\",\"author\":"
		         "{\"id\":\"u2\"},\"content\":\"reply %u%s\","
		         "\"ts\":\"2025-12-08T10:30:00Z\"}", i, channel, i, filler);
	}
	assert_int_equal(proto_decode_handshake(hsjson, strlen(hsjson), &hs), GW_OK);
	assert_int_equal(proto_decode_message(json, strlen(json), &hs, NOW_MS + i,
	                                      &m, idjson, sizeof(idjson)), GW_OK);
	m->seq = seq;
	free(json);
	free(filler);
	return m;
}

/* Same message: same fields and the same bytes on the wire. */
static void msg_assert_same(const struct gw_msg *a, const struct gw_msg *b)
{
	size_t na, nb;
	char *fa, *fb;

	assert_int_equal(a->seq, b->seq);
	assert_int_equal(a->from, b->from);
	assert_int_equal(a->received_ms, b->received_ms);
	assert_string_equal(a->channel_id, b->channel_id);
	assert_string_equal(a->msg_id, b->msg_id);
	assert_string_equal(a->sender, b->sender);
	na = proto_msg_frame(a, NOW_MS + 99, 3, NULL, 0);
	nb = proto_msg_frame(b, NOW_MS + 99, 3, NULL, 0);
	assert_int_equal(na, nb);
	fa = malloc(na + 1);
	fb = malloc(nb + 1);
	assert_non_null(fa);
	assert_non_null(fb);
	proto_msg_frame(a, NOW_MS + 99, 3, fa, na + 1);
	proto_msg_frame(b, NOW_MS + 99, 3, fb, nb + 1);
	assert_memory_equal(fa, fb, na);
	free(fa);
	free(fb);
}

static int collect(struct gw_msg *m, enum gw_dir dir, void *ud)
{
	struct collected *c = ud;

	assert_true(c->n < ARRAY_LEN(c->m));
	c->m[c->n] = m;
	c->dir[c->n] = dir;
	c->n++;
	return c->stop_after != 0 && c->n >= c->stop_after ? 1 : 0;
}

static void collected_free(struct collected *c)
{
	for (size_t i = 0; i < c->n; i++)
		proto_msg_unref(c->m[i]);
	c->n = 0;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	chmod(p, 0700);
	return remove(p);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/test_store.XXXXXX",
	         tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/data/gateway.db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	store_close();
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void open_ok(const char *path, enum gw_sync sync)
{
	char err[512];

	if (store_open(path, sync, err, sizeof(err)) != 0)
		fail_msg("store_open: %s", err);
}

/* Opens path expecting a refusal; returns the message (static). */
static const char *open_refused(const char *path)
{
	static char err[512];

	err[0] = '\0';
	assert_int_equal(store_open(path, GW_SYNC_NORMAL, err, sizeof(err)), -1);
	assert_int_equal(store_enabled(), 0);
	assert_non_null(strstr(err, path));          /* names the file */
	assert_null(strchr(err, '\n'));              /* one line */
	print_message("    refused: %s\n", err);
	return err;
}

static void put_ok(struct gw_msg *m, enum gw_dir dir)
{
	assert_int_equal(store_put(m, dir), 0);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs SQL on path with a plain connection (the store must be closed). */
static void sql_run(const char *path, const char *sql)
{
	sqlite3 *db;
	char *msg = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

static void file_write(const char *path, const void *data, size_t len, off_t at)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0600);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, data, len, at), (ssize_t)len);
	close(fd);
}

/* Creates f->dir/data, the store file's folder. */
static void data_dir_make(const struct fixture *f)
{
	char dir[PATH_MAX + 8];

	snprintf(dir, sizeof(dir), "%s/data", f->dir);
	assert_int_equal(mkdir(dir, 0700), 0);
}

/* ---- round trips --------------------------------------------------------- */

static void test_roundtrip(void **state)
{
	struct fixture *f = *state;
	/* seq, role, dir; put out of order, both directions, two channels */
	static const struct { uint64_t seq; enum gw_role role; enum gw_dir dir; const char *ch; } rows[] = {
		{ 7, GW_ROLE_MOD, GW_TO_BOT, "chan-1" },
		{ 2, GW_ROLE_BOT, GW_TO_MOD, "chan-1" },
		{ 11, GW_ROLE_BOT, GW_TO_MOD, "chan-2" },
		{ 3, GW_ROLE_MOD, GW_TO_BOT, "chan-2" },
		{ 5, GW_ROLE_MOD, GW_TO_BOT, "chan-1" },
		{ 9, GW_ROLE_BOT, GW_TO_MOD, "chan-1" },
	};
	static const size_t order[] = { 1, 3, 4, 0, 5, 2 };   /* by seq, 5 deleted */
	struct gw_msg *m[ARRAY_LEN(rows)];
	struct collected c = { .n = 0 };
	uint64_t max = 12345;
	size_t i, k;

	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(store_enabled(), 1);
	assert_int_equal(store_count(), 0);
	for (i = 0; i < ARRAY_LEN(rows); i++) {
		m[i] = msg_make(rows[i].role, rows[i].ch, (unsigned)i, rows[i].seq, 0);
		put_ok(m[i], rows[i].dir);
	}
	assert_int_equal(store_count(), 6);
	assert_int_equal(store_del(&(uint64_t){ 5 }, 1), 0);
	assert_int_equal(store_count(), 5);

	assert_int_equal(store_load(collect, &c, &max), 5);
	assert_int_equal(max, 11);
	assert_int_equal(c.n, 5);
	for (k = 0, i = 0; i < ARRAY_LEN(order); i++) {
		size_t r = order[i];

		if (rows[r].seq == 5)
			continue;
		assert_int_equal(c.m[k]->refs, 1);
		assert_int_equal(c.dir[k], rows[r].dir);
		msg_assert_same(c.m[k], m[r]);
		k++;
	}
	collected_free(&c);
	for (i = 0; i < ARRAY_LEN(rows); i++)
		proto_msg_unref(m[i]);
	/* loading does not consume */
	assert_int_equal(store_count(), 5);
}

static void test_reopen(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *m[4];
	uint64_t max;
	struct stat sb;
	char wal[PATH_MAX + 64];

	open_ok(f->path, GW_SYNC_FULL);
	for (unsigned i = 0; i < 4; i++) {
		m[i] = msg_make(i % 2 ? GW_ROLE_BOT : GW_ROLE_MOD, "chan-1", i, i + 1, 100);
		put_ok(m[i], i % 2 ? GW_TO_MOD : GW_TO_BOT);
	}
	store_close();
	assert_int_equal(store_enabled(), 0);
	store_close();                                  /* idempotent */
	/* the WAL was checkpointed into the file and removed */
	snprintf(wal, sizeof(wal), "%s-wal", f->path);
	assert_int_equal(stat(wal, &sb), -1);
	/* the queue holds chat content: private to the gateway's user */
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	open_ok(f->path, GW_SYNC_OFF);
	assert_int_equal(store_count(), 4);
	assert_int_equal(store_load(collect, &c, &max), 4);
	assert_int_equal(max, 4);
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(c.dir[i], i % 2 ? GW_TO_MOD : GW_TO_BOT);
		msg_assert_same(c.m[i], m[i]);
		proto_msg_unref(m[i]);
	}
	collected_free(&c);
}

static void test_memory_only(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *m = msg_make(GW_ROLE_MOD, "chan-1", 1, 1, 0);
	uint64_t max = 99;
	char err[128] = "untouched";
	struct stat sb;

	assert_int_equal(store_open("", GW_SYNC_NORMAL, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(store_enabled(), 0);
	assert_int_equal(store_put(m, GW_TO_BOT), 0);
	assert_int_equal(store_del(&(uint64_t){ 1 }, 1), 0);
	assert_int_equal(store_count(), 0);
	assert_int_equal(store_load(collect, &c, &max), 0);
	assert_int_equal(max, 0);
	assert_int_equal(c.n, 0);
	store_close();
	/* nothing written anywhere; a real open still works afterwards */
	assert_int_equal(stat(f->path, &sb), -1);
	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(store_enabled(), 1);
	proto_msg_unref(m);
}

static void test_replace_and_delete(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *a = msg_make(GW_ROLE_MOD, "chan-1", 1, 42, 0);
	struct gw_msg *b = msg_make(GW_ROLE_BOT, "chan-9", 2, 42, 0);

	open_ok(f->path, GW_SYNC_NORMAL);
	put_ok(a, GW_TO_BOT);
	put_ok(a, GW_TO_BOT);                     /* a retry: same row */
	assert_int_equal(store_count(), 1);
	put_ok(b, GW_TO_MOD);                     /* same seq: replaced */
	assert_int_equal(store_count(), 1);
	assert_int_equal(store_load(collect, &c, NULL), 1);
	assert_int_equal(c.dir[0], GW_TO_MOD);
	msg_assert_same(c.m[0], b);
	collected_free(&c);

	assert_int_equal(store_del(&(uint64_t){ 42 }, 1), 0);
	assert_int_equal(store_del(&(uint64_t){ 42 }, 1), 0);             /* already gone */
	assert_int_equal(store_del(&(uint64_t){ 7 }, 1), 0);              /* never there */
	assert_int_equal(store_count(), 0);

	/* refused without touching the file */
	assert_int_equal(store_put(a, (enum gw_dir)2), -1);
	assert_int_equal(store_put(NULL, GW_TO_BOT), -1);
	a->seq = 0;
	assert_int_equal(store_put(a, GW_TO_BOT), -1);
	assert_int_equal(store_count(), 0);
	proto_msg_unref(a);
	proto_msg_unref(b);
}

/* A callback that stops the load gets -1; nothing leaks (ASan). */
/* A batch goes in one transaction: the rows named go, the others stay,
 * missing and never-stored seqs are no error. */
static void test_delete_batch(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	const uint64_t gone[] = { 2, 4, 99, 0, 6 };
	struct gw_msg *m[6];
	size_t i;

	open_ok(f->path, GW_SYNC_FULL);
	for (i = 0; i < 6; i++) {
		m[i] = msg_make(GW_ROLE_MOD, "chan-1", (unsigned)i, i + 1, 0);
		put_ok(m[i], GW_TO_BOT);
	}
	assert_int_equal(store_del(gone, ARRAY_LEN(gone)), 0);
	assert_int_equal(store_count(), 3);
	assert_int_equal(store_load(collect, &c, NULL), 3);
	msg_assert_same(c.m[0], m[0]);
	msg_assert_same(c.m[1], m[2]);
	msg_assert_same(c.m[2], m[4]);
	collected_free(&c);
	assert_int_equal(store_del(gone, 0), 0);        /* nothing asked */
	assert_int_equal(store_count(), 3);
	for (i = 0; i < 6; i++)
		proto_msg_unref(m[i]);
}

static void test_load_stop(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .stop_after = 2 };

	open_ok(f->path, GW_SYNC_NORMAL);
	for (unsigned i = 1; i <= 5; i++) {
		struct gw_msg *m = msg_make(GW_ROLE_MOD, "chan-1", i, i, 0);

		put_ok(m, GW_TO_BOT);
		proto_msg_unref(m);
	}
	assert_int_equal(store_load(collect, &c, NULL), -1);
	assert_int_equal(c.n, 2);
	collected_free(&c);
	assert_int_equal(store_load(NULL, NULL, NULL), 5);
}

/* Rows that cannot be messages are skipped (and kept); their seq still
 * counts for max_seq so new messages never reuse it. */
static void test_bad_rows_skipped(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *m = msg_make(GW_ROLE_BOT, "chan-1", 1, 3, 0);
	uint64_t max;

	open_ok(f->path, GW_SYNC_NORMAL);
	put_ok(m, GW_TO_MOD);
	store_close();
	sql_run(f->path,
	        "INSERT INTO queue VALUES(5, 7, 0, 'c', 'm', 's', 0, X'7B7D');"
	        "INSERT INTO queue VALUES(6, 0, 0, '', 'm', 's', 0, X'7B7D');"
	        "INSERT INTO queue VALUES(8, 0, 0, 'c', 'm', 's', 0, X'');"
	        "INSERT INTO queue VALUES(9, 0, 0, 'c', 'm', 's', 0, 'not json');"
	        "INSERT INTO queue VALUES(10, 0, 1, 'c', 'm\x01', 's', 0, X'7B7D');");

	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(store_load(collect, &c, &max), 1);
	assert_int_equal(max, 10);
	msg_assert_same(c.m[0], m);
	collected_free(&c);
	assert_int_equal(store_count(), 6);
	proto_msg_unref(m);
}

/* ---- refusals ------------------------------------------------------------ */

/* A second gateway on the same file: a process forked before this one
 * opens path tries once this one holds it, and must be refused. */
static void open_refused_in_child(const char *path)
{
	int go[2], back[2], status;
	char err[512] = "", byte = 'g';
	ssize_t n, got = 0;
	pid_t pid;

	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(back), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char cerr[512] = "";
		int rc;

		close(go[1]);
		close(back[0]);
		if (read(go[0], &byte, 1) != 1)
			_exit(2);
		rc = store_open(path, GW_SYNC_NORMAL, cerr, sizeof(cerr));
		if (rc == 0)
			snprintf(cerr, sizeof(cerr), "OPENED");
		if (write(back[1], cerr, strlen(cerr)) < 0)
			_exit(3);
		_exit(rc == -1 ? 0 : 1);
	}
	close(go[0]);
	close(back[1]);
	open_ok(path, GW_SYNC_NORMAL);
	assert_int_equal(write(go[1], &byte, 1), 1);
	while ((n = read(back[0], err + got, sizeof(err) - 1 - (size_t)got)) > 0)
		got += n;
	err[got] = '\0';
	close(go[1]);
	close(back[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	print_message("    refused: %s\n", err);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_non_null(strstr(err, "locked"));
	assert_non_null(strstr(err, path));
}

static void test_locked_by_other_process(void **state)
{
	struct fixture *f = *state;
	struct gw_msg *m;
	int status;
	pid_t pid;

	open_refused_in_child(f->path);       /* a file this open created */
	m = msg_make(GW_ROLE_MOD, "chan-1", 1, 1, 0);
	put_ok(m, GW_TO_BOT);           /* the holder is unaffected */
	proto_msg_unref(m);
	store_close();
	open_refused_in_child(f->path);       /* an existing store */
	assert_int_equal(store_count(), 1);

	/* once closed, another process can open it */
	store_close();
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char cerr[512];

		if (store_open(f->path, GW_SYNC_NORMAL, cerr, sizeof(cerr)) != 0)
			_exit(1);
		_exit(store_count() == 1 ? 0 : 2);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_garbage_file(void **state)
{
	struct fixture *f = *state;
	unsigned char junk[4096], after[4096];
	const char *err;
	int fd;

	fd = open("/dev/urandom", O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	junk[0] = 'X';   /* never the SQLite magic by chance */
	data_dir_make(f);
	file_write(f->path, junk, sizeof(junk), 0);

	err = open_refused(f->path);
	assert_non_null(strstr(err, "not a database"));
	assert_non_null(strstr(err, "move it away"));

	/* left exactly as it was */
	fd = open(f->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, after, sizeof(after)), (ssize_t)sizeof(after));
	assert_int_equal(read(fd, after, 1), 0);
	close(fd);
	assert_memory_equal(junk, after, sizeof(junk));
}

/* A real store whose pages were overwritten after the header. */
static void test_corrupt_file(void **state)
{
	struct fixture *f = *state;
	unsigned char junk[8192];
	const char *err;

	open_ok(f->path, GW_SYNC_NORMAL);
	for (unsigned i = 1; i <= 200; i++) {
		struct gw_msg *m = msg_make(GW_ROLE_MOD, "chan-1", i, i, 900);

		put_ok(m, GW_TO_BOT);
		proto_msg_unref(m);
	}
	store_close();
	memset(junk, 0xA5, sizeof(junk));
	file_write(f->path, junk, sizeof(junk), 3 * 4096);

	err = open_refused(f->path);
	assert_non_null(strstr(err, "corrupt"));
}

static void test_unusable_path(void **state)
{
	struct fixture *f = *state;
	char path[PATH_MAX + 64];
	const char *err;

	/* a folder where the file should be */
	data_dir_make(f);
	assert_int_equal(mkdir(f->path, 0700), 0);
	err = open_refused(f->path);
	assert_non_null(strstr(err, "is a directory"));

	/* a file where a folder should be */
	snprintf(path, sizeof(path), "%s/data/gateway.db/x", f->dir);
	assert_int_equal(rmdir(f->path), 0);
	file_write(f->path, "", 0, 0);
	err = open_refused(path);
	assert_non_null(strstr(err, "cannot create its folder"));

	/* an unreadable file: only meaningful when permissions apply to us */
	if (geteuid() != 0) {
		assert_int_equal(chmod(f->path, 0), 0);
		err = open_refused(f->path);
		assert_non_null(strstr(err, "cannot read and write"));
	} else {
		print_message("    running as root: chmod 000 case skipped\n");
	}
}

static void test_schema_refused(void **state)
{
	struct fixture *f = *state;
	const char *err;

	/* a newer (or older) gateway's store */
	open_ok(f->path, GW_SYNC_NORMAL);
	store_close();
	sql_run(f->path, "PRAGMA user_version = 99");
	err = open_refused(f->path);
	assert_non_null(strstr(err, "schema version 99"));

	/* somebody else's database */
	assert_int_equal(unlink(f->path), 0);
	sql_run(f->path, "CREATE TABLE songs(title TEXT)");
	err = open_refused(f->path);
	assert_non_null(strstr(err, "not a gateway store"));

	/* ours, but the table was changed by hand */
	assert_int_equal(unlink(f->path), 0);
	sql_run(f->path, "PRAGMA application_id = 1212630871; PRAGMA user_version = 1;"
	        "CREATE TABLE queue(seq INTEGER PRIMARY KEY, body BLOB)");
	err = open_refused(f->path);
	assert_non_null(strstr(err, "unexpected table layout"));
}

static void test_open_twice(void **state)
{
	struct fixture *f = *state;
	char err[256];

	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(store_open(f->path, GW_SYNC_NORMAL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "already open"));
	assert_int_equal(store_enabled(), 1);   /* the first one stays */
}

/* ---- durability ---------------------------------------------------------- */

/* A writer that dies without store_close (kill -9, or _exit) loses nothing
 * it was told is committed. */
static void test_survives_kill9(void **state)
{
	struct fixture *f = *state;
	static const int deaths[] = { SIGKILL, 0 };   /* 0: _exit(0) */
	char wal[PATH_MAX + 64];
	struct stat sb;

	snprintf(wal, sizeof(wal), "%s-wal", f->path);

	for (size_t d = 0; d < ARRAY_LEN(deaths); d++) {
		struct collected c = { .n = 0 };
		uint64_t max;
		int status;
		pid_t pid;

		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			char cerr[512];

			if (store_open(f->path, GW_SYNC_NORMAL, cerr, sizeof(cerr)) != 0)
				_exit(1);
			for (unsigned i = 1; i <= 100; i++) {
				struct gw_msg *m = msg_make(i % 3 ? GW_ROLE_MOD : GW_ROLE_BOT,
				                            i % 2 ? "chan-1" : "chan-2", i, i, 0);

				if (store_put(m, i % 3 ? GW_TO_BOT : GW_TO_MOD) != 0)
					_exit(2);
				/* no unref: the process dies with it */
			}
			if (deaths[d] != 0)
				kill(getpid(), deaths[d]);
			_exit(0);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (deaths[d] != 0) {
			assert_true(WIFSIGNALED(status));
			assert_int_equal(WTERMSIG(status), deaths[d]);
		} else {
			assert_true(WIFEXITED(status));
			assert_int_equal(WEXITSTATUS(status), 0);
		}

		/* the rows are only in the WAL: nothing was checkpointed */
		assert_int_equal(stat(wal, &sb), 0);
		assert_true(sb.st_size > 0);

		open_ok(f->path, GW_SYNC_NORMAL);
		assert_int_equal(store_load(collect, &c, &max), 100);
		assert_int_equal(max, 100);
		for (unsigned i = 1; i <= 100; i++) {
			struct gw_msg *m = msg_make(i % 3 ? GW_ROLE_MOD : GW_ROLE_BOT,
			                            i % 2 ? "chan-1" : "chan-2", i, i, 0);

			assert_int_equal(c.dir[i - 1], i % 3 ? GW_TO_BOT : GW_TO_MOD);
			msg_assert_same(c.m[i - 1], m);
			proto_msg_unref(m);
		}
		collected_free(&c);
		store_close();
		assert_int_equal(unlink(f->path), 0);
	}
}

/* ---- threads and throughput ---------------------------------------------- */

struct worker {
	pthread_t t;
	unsigned id;
	int failures;
};

/* Each thread puts its own seqs and deletes every other one. */
static void *worker_run(void *arg)
{
	struct worker *w = arg;

	for (unsigned i = 0; i < 500; i++) {
		uint64_t seq = (uint64_t)w->id * 1000 + i + 1;
		struct gw_msg *m = msg_make(GW_ROLE_BOT, "chan-t", i, seq, 0);

		w->failures += store_put(m, GW_TO_MOD) != 0;
		if (i % 2)
			w->failures += store_del(&(uint64_t){ seq }, 1) != 0;
		proto_msg_unref(m);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct fixture *f = *state;
	struct worker w[4];

	open_ok(f->path, GW_SYNC_NORMAL);
	for (unsigned i = 0; i < ARRAY_LEN(w); i++) {
		w[i].id = i;
		w[i].failures = 0;
		assert_int_equal(pthread_create(&w[i].t, NULL, worker_run, &w[i]), 0);
	}
	for (unsigned i = 0; i < ARRAY_LEN(w); i++) {
		assert_int_equal(pthread_join(w[i].t, NULL), 0);
		assert_int_equal(w[i].failures, 0);
	}
	assert_int_equal(store_count(), 4 * 250);
}

/* Informational: puts/s and deletes/s on this machine, no assertion. */
static void test_throughput(void **state)
{
	struct fixture *f = *state;
	enum { N = 20000, N_FULL = 1000 };
	struct gw_msg *m = msg_make(GW_ROLE_MOD, "chan-1", 1, 1, 200);
	double t0, t_put, t_del;
	uint64_t seq;

	open_ok(f->path, GW_SYNC_NORMAL);
	t0 = now_s();
	for (seq = 1; seq <= N; seq++) {
		m->seq = seq;
		put_ok(m, GW_TO_BOT);
	}
	t_put = now_s() - t0;
	assert_int_equal(store_count(), N);
	t0 = now_s();
	for (seq = 1; seq <= N; seq++)
		assert_int_equal(store_del(&(uint64_t){ seq }, 1), 0);
	t_del = now_s() - t0;
	assert_int_equal(store_count(), 0);
	print_message("    sync=normal: %d puts in %.3f s = %.0f puts/s; "
	              "%d deletes = %.0f deletes/s (body %zu bytes)\n",
	              N, t_put, N / t_put, N, N / t_del, m->body_len);
	store_close();

	open_ok(f->path, GW_SYNC_FULL);
	t0 = now_s();
	for (seq = 1; seq <= N_FULL; seq++) {
		m->seq = seq;
		put_ok(m, GW_TO_BOT);
	}
	t_put = now_s() - t0;
	print_message("    sync=full:   %d puts in %.3f s = %.0f puts/s\n",
	              N_FULL, t_put, N_FULL / t_put);
	proto_msg_unref(m);
}

/* ---- main ---------------------------------------------------------------- */

int main(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replace_and_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_rows_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_locked_by_other_process, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unusable_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_schema_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_twice, setup, teardown),
		cmocka_unit_test_setup_teardown(test_survives_kill9, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_throughput, setup, teardown),
	};

	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
