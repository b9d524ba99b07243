/*
 * test_store.c - unit tests for store.c: rows round-trip to the same bytes
 * and the same state in write order, keyed by (channel, direction, seq),
 * survive close/reopen and a kill -9 of the writer, memory-only mode,
 * replace/delete idempotence, a write as one transaction, stream counters
 * that only go up, the epoch, the migration of a version 1 file, and
 * refusals (locked by another process, garbage, corrupt, directory or
 * unreadable path, foreign or newer schema) with one clear line. Prints a
 * puts/s figure.
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

/* One stream counter as store_load reported it. */
struct counter {
	char channel[GW_ID_MAX + 1];
	enum gw_dir dir;
	uint64_t seq;
};

/* What store_load handed over, in call order. */
struct collected {
	struct gw_msg *m[1024];
	enum gw_row state[1024];
	size_t n;
	size_t stop_after;                  /* rows: 0 = never stop */
	struct counter s[64];
	size_t ns;
	size_t stop_streams_after;          /* counters: 0 = never stop */
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
	proto_handshake_free(&hs);
	m->seq = seq;
	free(json);
	free(filler);
	return m;
}

/* Another message with the same key (channel, direction, seq): the store
 * finds rows by key, whatever the message holds. */
static struct gw_msg *key_make(enum gw_role role, const char *channel, uint64_t seq)
{
	return msg_make(role, channel, 900, seq, 3);
}

/* Same message: same fields, the same body bytes and the same bytes on the
 * wire. */
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
	assert_int_equal(a->body_len, b->body_len);
	assert_memory_equal(a->body, b->body, a->body_len);
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

/* store_load's stream_cb: every counter comes before any row, once. */
static int collect_stream(const char *channel, enum gw_dir dir, uint64_t seq, void *ud)
{
	struct collected *c = ud;

	assert_int_equal(c->n, 0);
	assert_true(c->ns < ARRAY_LEN(c->s));
	assert_true(dir == GW_TO_BOT || dir == GW_TO_MOD);
	for (size_t i = 0; i < c->ns; i++)
		assert_false(c->s[i].dir == dir && strcmp(c->s[i].channel, channel) == 0);
	assert_true(strlen(channel) < sizeof(c->s[0].channel));
	snprintf(c->s[c->ns].channel, sizeof(c->s[0].channel), "%s", channel);
	c->s[c->ns].dir = dir;
	c->s[c->ns].seq = seq;
	c->ns++;
	return c->stop_streams_after != 0 && c->ns >= c->stop_streams_after ? 1 : 0;
}

static int collect(struct gw_msg *m, enum gw_row state, void *ud)
{
	struct collected *c = ud;

	assert_true(c->n < ARRAY_LEN(c->m));
	assert_int_equal(m->refs, 1);
	c->m[c->n] = m;
	c->state[c->n] = state;
	c->n++;
	return c->stop_after != 0 && c->n >= c->stop_after ? 1 : 0;
}

static int load(struct collected *c)
{
	return store_load(collect_stream, collect, c);
}

/* The counter load reported for (channel, dir), 0 if none. */
static uint64_t counter_of(const struct collected *c, const char *channel, enum gw_dir dir)
{
	for (size_t i = 0; i < c->ns; i++)
		if (c->s[i].dir == dir && strcmp(c->s[i].channel, channel) == 0)
			return c->s[i].seq;
	return 0;
}

/* The index of the loaded row with m's key, or -1. */
static int find(const struct collected *c, const struct gw_msg *m)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->m[i]->from == m->from && c->m[i]->seq == m->seq &&
		    strcmp(c->m[i]->channel_id, m->channel_id) == 0)
			return (int)i;
	return -1;
}

static void collected_free(struct collected *c)
{
	for (size_t i = 0; i < c->n; i++)
		proto_msg_unref(c->m[i]);
	c->n = 0;
	c->ns = 0;
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

/* A write of m's row alone, in state. */
static void put_ok(const struct gw_msg *m, enum gw_row state)
{
	assert_int_equal(store_write(m, state, NULL, 0, GW_ROW_GONE), 0);
}

/* A write that deletes the rows of the n messages in v. */
static void del_ok(struct gw_msg *const *v, size_t n)
{
	assert_int_equal(store_write(NULL, GW_ROW_QUEUED, v, n, GW_ROW_GONE), 0);
}

/* A write that sets the state of m's row. */
static void set_ok(struct gw_msg *m, enum gw_row state)
{
	assert_int_equal(store_write(NULL, GW_ROW_QUEUED, &m, 1, state), 0);
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

/* The integer the first row of sql answers on path (the store must be
 * closed). */
static int64_t sql_int(const char *path, const char *sql)
{
	sqlite3_stmt *s;
	sqlite3 *db;
	int64_t v;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
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

/* How a writer child ends without store_close. */
enum death { DEATH_KILL9, DEATH_EXIT };

/* Child side: tells the parent over fd that its writes returned, then ends
 * as asked: killed -9 by the parent, or replaced by true(1), which exits 0
 * with nothing of this process run, as _exit(0) would, but without
 * valgrind's leak report of the store it never closed. Never returns. */
static void child_end(int fd, enum death how) __attribute__((noreturn));
static void child_end(int fd, enum death how)
{
	if (write(fd, "d", 1) != 1)
		_exit(3);
	if (how == DEATH_EXIT)
		execlp("true", "true", (char *)NULL);
	else
		for (;;)
			pause();
	_exit(4);
}

/* Parent side: waits for the child's word on fd (none: it failed before),
 * ends it as asked and checks that it ended so. */
static void child_reap(pid_t pid, int fd, enum death how)
{
	char byte;
	int status;

	assert_int_equal(read(fd, &byte, 1), 1);
	if (how == DEATH_KILL9)
		assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (how == DEATH_KILL9) {
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);
	} else {
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
}

/* ---- round trips --------------------------------------------------------- */

static void test_roundtrip(void **state)
{
	struct fixture *f = *state;
	/* both directions, two channels, seqs out of order, and keys that share
	 * two of their three parts: rows are keyed by all three */
	static const struct {
		uint64_t seq; enum gw_role role; const char *ch; enum gw_row st;
	} rows[] = {
		{ 7, GW_ROLE_MOD, "chan-1", GW_ROW_QUEUED },
		{ 2, GW_ROLE_BOT, "chan-1", GW_ROW_HANDED },
		{ 11, GW_ROLE_BOT, "chan-2", GW_ROW_QUEUED },
		{ 3, GW_ROLE_MOD, "chan-2", GW_ROW_HANDED },
		{ 5, GW_ROLE_MOD, "chan-1", GW_ROW_QUEUED },     /* deleted */
		{ 9, GW_ROLE_BOT, "chan-1", GW_ROW_QUEUED },
		{ 7, GW_ROLE_BOT, "chan-1", GW_ROW_QUEUED },     /* row 0's, other dir */
		{ 7, GW_ROLE_MOD, "chan-2", GW_ROW_HANDED },     /* row 0's, other channel */
	};
	struct gw_msg *m[ARRAY_LEN(rows)], *gone;
	struct collected c = { .n = 0 };
	size_t i, k;

	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(store_enabled(), 1);
	assert_int_equal(store_count(), 0);
	for (i = 0; i < ARRAY_LEN(rows); i++) {
		m[i] = msg_make(rows[i].role, rows[i].ch, (unsigned)i, rows[i].seq, 0);
		put_ok(m[i], rows[i].st);
	}
	assert_int_equal(store_count(), 8);
	gone = key_make(GW_ROLE_MOD, "chan-1", 5);     /* by key, not by pointer */
	del_ok(&gone, 1);
	proto_msg_unref(gone);
	assert_int_equal(store_count(), 7);

	/* write order, each with its state; the counters first */
	assert_int_equal(load(&c), 7);
	assert_int_equal(c.n, 7);
	for (k = 0, i = 0; i < ARRAY_LEN(rows); i++) {
		if (i == 4)
			continue;
		assert_int_equal(c.state[k], rows[i].st);
		msg_assert_same(c.m[k], m[i]);
		k++;
	}
	assert_int_equal(c.ns, 4);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_BOT), 7);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_MOD), 9);
	assert_int_equal(counter_of(&c, "chan-2", GW_TO_BOT), 7);
	assert_int_equal(counter_of(&c, "chan-2", GW_TO_MOD), 11);
	collected_free(&c);
	for (i = 0; i < ARRAY_LEN(rows); i++)
		proto_msg_unref(m[i]);
	/* loading does not consume */
	assert_int_equal(store_count(), 7);
	assert_int_equal(load(&c), 7);
	assert_int_equal(c.ns, 4);
	collected_free(&c);
}

static void test_reopen(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *m[4];
	struct stat sb;
	char wal[PATH_MAX + 64];

	/* mod, bot, mod, bot on chan-1: seqs 1, 1, 2, 2; the second two handed */
	open_ok(f->path, GW_SYNC_FULL);
	for (unsigned i = 0; i < 4; i++) {
		m[i] = msg_make(i % 2 ? GW_ROLE_BOT : GW_ROLE_MOD, "chan-1", i, i / 2 + 1, 100);
		put_ok(m[i], i / 2 ? GW_ROW_HANDED : GW_ROW_QUEUED);
	}
	store_close();
	assert_int_equal(store_enabled(), 0);
	store_close();                                  /* idempotent */
	/* the WAL was checkpointed into the file and removed */
	snprintf(wal, sizeof(wal), "%s-wal", f->path);
	assert_int_equal(stat(wal, &sb), -1);
	/* the store holds chat content: private to the gateway's user */
	assert_int_equal(stat(f->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	open_ok(f->path, GW_SYNC_OFF);
	assert_int_equal(store_count(), 4);
	assert_int_equal(load(&c), 4);
	assert_int_equal(c.ns, 2);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_BOT), 2);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_MOD), 2);
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(c.state[i], i / 2 ? GW_ROW_HANDED : GW_ROW_QUEUED);
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
	struct gw_msg *k = key_make(GW_ROLE_MOD, "chan-1", 1);
	char err[128] = "untouched";
	struct stat sb;

	assert_int_equal(store_open("", GW_SYNC_NORMAL, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(store_enabled(), 0);
	assert_null(store_epoch());
	assert_int_equal(store_write(m, GW_ROW_QUEUED, NULL, 0, GW_ROW_GONE), 0);
	assert_int_equal(store_write(m, GW_ROW_HANDED, &k, 1, GW_ROW_GONE), 0);
	assert_int_equal(store_write(NULL, GW_ROW_QUEUED, &k, 1, GW_ROW_GONE), 0);
	assert_int_equal(store_write(NULL, GW_ROW_QUEUED, &k, 1, GW_ROW_HANDED), 0);
	assert_int_equal(store_count(), 0);
	assert_int_equal(load(&c), 0);
	assert_int_equal(c.n, 0);
	assert_int_equal(c.ns, 0);
	store_close();
	/* nothing written anywhere; a real open still works afterwards */
	assert_int_equal(stat(f->path, &sb), -1);
	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(store_enabled(), 1);
	proto_msg_unref(m);
	proto_msg_unref(k);
}

static void test_replace_and_delete(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *a = msg_make(GW_ROLE_MOD, "chan-1", 1, 42, 0);
	struct gw_msg *a2 = msg_make(GW_ROLE_MOD, "chan-1", 2, 42, 0);   /* a's key */
	struct gw_msg *b = msg_make(GW_ROLE_BOT, "chan-1", 3, 42, 0);    /* other dir */
	struct gw_msg *d = msg_make(GW_ROLE_MOD, "chan-9", 4, 42, 0);    /* other channel */
	struct gw_msg *never = key_make(GW_ROLE_MOD, "chan-1", 7);
	struct gw_msg *v[2];
	enum gw_role from;

	open_ok(f->path, GW_SYNC_NORMAL);
	put_ok(a, GW_ROW_QUEUED);
	put_ok(a, GW_ROW_QUEUED);                 /* a retry: same row */
	assert_int_equal(store_count(), 1);
	put_ok(a2, GW_ROW_HANDED);                /* same key: replaced, state too */
	assert_int_equal(store_count(), 1);
	assert_int_equal(load(&c), 1);
	assert_int_equal(c.state[0], GW_ROW_HANDED);
	msg_assert_same(c.m[0], a2);
	collected_free(&c);

	/* the same seq in another stream is another row */
	put_ok(b, GW_ROW_QUEUED);
	put_ok(d, GW_ROW_QUEUED);
	assert_int_equal(store_count(), 3);
	assert_int_equal(load(&c), 3);
	assert_true(find(&c, a2) >= 0);
	msg_assert_same(c.m[find(&c, a2)], a2);
	msg_assert_same(c.m[find(&c, b)], b);
	msg_assert_same(c.m[find(&c, d)], d);
	collected_free(&c);

	del_ok(&a, 1);
	del_ok(&a, 1);                            /* already gone */
	del_ok(&never, 1);                        /* never there */
	assert_int_equal(store_count(), 2);
	v[0] = b;
	v[1] = d;
	del_ok(v, 2);
	assert_int_equal(store_count(), 0);

	/* refused without touching the file */
	assert_int_equal(store_write(a, (enum gw_row)7, NULL, 0, GW_ROW_GONE), -1);
	assert_int_equal(store_write(a, GW_ROW_GONE, NULL, 0, GW_ROW_GONE), -1);
	assert_int_equal(store_write(a, GW_ROW_QUEUED, NULL, 0, (enum gw_row)9), -1);
	from = a->from;
	a->from = (enum gw_role)5;
	assert_int_equal(store_write(a, GW_ROW_QUEUED, NULL, 0, GW_ROW_GONE), -1);
	a->from = from;
	a->seq = (uint64_t)INT64_MAX + 1;
	assert_int_equal(store_write(a, GW_ROW_QUEUED, NULL, 0, GW_ROW_GONE), -1);
	a->seq = 0;
	assert_int_equal(store_write(a, GW_ROW_QUEUED, NULL, 0, GW_ROW_GONE), -1);
	/* nothing asked: nothing done */
	assert_int_equal(store_write(NULL, GW_ROW_QUEUED, NULL, 0, GW_ROW_GONE), 0);
	assert_int_equal(store_count(), 0);
	/* the refusals raised no counter */
	assert_int_equal(load(&c), 0);
	assert_int_equal(c.ns, 3);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_BOT), 42);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_MOD), 42);
	assert_int_equal(counter_of(&c, "chan-9", GW_TO_BOT), 42);
	collected_free(&c);
	proto_msg_unref(a);
	proto_msg_unref(a2);
	proto_msg_unref(b);
	proto_msg_unref(d);
	proto_msg_unref(never);
}

/* A batch goes in one transaction: the rows named go, the others stay
 * (the same seq in another stream included), missing and never-stored
 * keys are no error. */
static void test_delete_batch(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *m[6], *gone[6];
	struct gw_msg *o = msg_make(GW_ROLE_BOT, "chan-1", 10, 2, 0);   /* seq 2, to mods */
	struct gw_msg *p = msg_make(GW_ROLE_MOD, "chan-2", 11, 4, 0);   /* seq 4, chan-2 */
	size_t i;

	open_ok(f->path, GW_SYNC_FULL);
	for (i = 0; i < 6; i++) {
		m[i] = msg_make(GW_ROLE_MOD, "chan-1", (unsigned)i, i + 1, 0);
		put_ok(m[i], GW_ROW_QUEUED);
	}
	put_ok(o, GW_ROW_QUEUED);
	put_ok(p, GW_ROW_HANDED);
	gone[0] = key_make(GW_ROLE_MOD, "chan-1", 2);
	gone[1] = key_make(GW_ROLE_MOD, "chan-1", 4);
	gone[2] = key_make(GW_ROLE_MOD, "chan-1", 99);   /* missing */
	gone[3] = key_make(GW_ROLE_MOD, "chan-1", 0);    /* never stored */
	gone[4] = key_make(GW_ROLE_MOD, "chan-1", 6);
	gone[5] = key_make(GW_ROLE_BOT, "chan-1", 3);    /* missing: seq 3 is to-bot */
	del_ok(gone, ARRAY_LEN(gone));
	assert_int_equal(store_count(), 5);
	assert_int_equal(load(&c), 5);
	msg_assert_same(c.m[0], m[0]);
	msg_assert_same(c.m[1], m[2]);
	msg_assert_same(c.m[2], m[4]);
	msg_assert_same(c.m[3], o);
	msg_assert_same(c.m[4], p);
	assert_int_equal(c.state[4], GW_ROW_HANDED);
	collected_free(&c);
	del_ok(gone, 0);                                 /* nothing asked */
	assert_int_equal(store_count(), 5);
	for (i = 0; i < 6; i++) {
		proto_msg_unref(m[i]);
		proto_msg_unref(gone[i]);
	}
	proto_msg_unref(o);
	proto_msg_unref(p);
}

/* A callback that stops the load gets -1; nothing leaks (ASan, valgrind). */
static void test_load_stop(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .stop_after = 2 };

	open_ok(f->path, GW_SYNC_NORMAL);
	for (unsigned i = 1; i <= 5; i++) {
		struct gw_msg *m = msg_make(i % 2 ? GW_ROLE_MOD : GW_ROLE_BOT, "chan-1", i,
		                            (i + 1) / 2, 0);

		put_ok(m, GW_ROW_QUEUED);
		proto_msg_unref(m);
	}
	assert_int_equal(load(&c), -1);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.ns, 2);
	collected_free(&c);

	/* stopped at the counters: no row is handed over */
	c.stop_after = 0;
	c.stop_streams_after = 1;
	assert_int_equal(load(&c), -1);
	assert_int_equal(c.ns, 1);
	assert_int_equal(c.n, 0);
	collected_free(&c);

	assert_int_equal(store_load(NULL, NULL, NULL), 5);
}

/* Rows that cannot be messages are skipped (and kept), and the seqs they
 * took still count: a stream's counter does not go back to the last row
 * that loads. */
static void test_bad_rows_skipped(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *m = msg_make(GW_ROLE_BOT, "chan-1", 1, 3, 0);
	struct gw_msg *w[4], *next;

	open_ok(f->path, GW_SYNC_NORMAL);
	put_ok(m, GW_ROW_QUEUED);
	for (unsigned i = 0; i < 4; i++) {
		w[i] = msg_make(GW_ROLE_MOD, "chan-2", i, i + 1, 0);
		put_ok(w[i], i % 2 ? GW_ROW_HANDED : GW_ROW_QUEUED);
	}
	store_close();
	/* chan-2's two newest rows spoiled after they were written; then rows
	 * nobody could have written */
	sql_run(f->path,
	        "UPDATE messages SET msg_id = 'm\x01' WHERE channel = 'chan-2' AND seq = 3;"
	        "UPDATE messages SET body = X'' WHERE channel = 'chan-2' AND seq = 4;"
	        "INSERT INTO messages(channel, dir, seq, handed, origin, msg_id, sender,"
	        " received_ms, body) VALUES"
	        "('c', 7, 5, 0, 0, 'm', 's', 0, X'7B7D'),"            /* unknown dir */
	        "('', 0, 6, 0, 0, 'm', 's', 0, X'7B7D'),"             /* empty channel */
	        "('c', 0, 8, 0, 0, 'm', 's', 0, X''),"                /* empty body */
	        "('c', 0, 9, 0, 0, 'm', 's', 0, 'not json'),"         /* not an object */
	        "('c', 1, 10, 0, 1, 'm\x01', 's', 0, X'7B7D'),"       /* control in id */
	        "('c', 1, 11, 0, 0, 'm', 's', 0, X'7B7D'),"           /* mod's, to mods */
	        "('c', 0, 12, 5, 0, 'm', 's', 0, X'7B7D'),"           /* unknown state */
	        "('c', 0, 13, 0, 2, 'm', 's', 0, X'7B7D'),"           /* unknown origin */
	        "('c', 0, 0, 0, 0, 'm', 's', 0, X'7B7D'),"            /* seq 0 */
	        "('c', 0, -4, 0, 0, 'm', 's', 0, X'7B7D'),"           /* negative seq */
	        "('c', 0, 14, 0, 0, CAST(X'6D006D' AS TEXT), 's', 0, X'7B7D');");  /* NUL */

	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(load(&c), 3);
	msg_assert_same(c.m[0], m);
	msg_assert_same(c.m[1], w[0]);
	msg_assert_same(c.m[2], w[1]);
	assert_int_equal(c.state[0], GW_ROW_QUEUED);
	assert_int_equal(c.state[2], GW_ROW_HANDED);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_MOD), 3);
	assert_int_equal(counter_of(&c, "chan-2", GW_TO_BOT), 4);   /* not 2 */
	collected_free(&c);
	assert_int_equal(store_count(), 5 + 11);

	/* the next message of chan-2 takes seq 5; the spoiled rows stay */
	next = msg_make(GW_ROLE_MOD, "chan-2", 9, 5, 0);
	put_ok(next, GW_ROW_QUEUED);
	assert_int_equal(store_count(), 5 + 11 + 1);
	assert_int_equal(load(&c), 4);
	msg_assert_same(c.m[3], next);
	assert_int_equal(counter_of(&c, "chan-2", GW_TO_BOT), 5);
	collected_free(&c);
	proto_msg_unref(next);
	for (unsigned i = 0; i < 4; i++)
		proto_msg_unref(w[i]);
	proto_msg_unref(m);
}

/* Rows that cannot be messages keep their seqs from being given again,
 * whether their stream's counter knows them or not (a file edited or
 * damaged by hand, as the version 1 store's max_seq covered every row): a
 * gateway that goes on from the counters and the rows it got must not
 * replace them. */
static void test_bad_rows_counted(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *m;
	uint64_t next, k1, k2, k3;

	open_ok(f->path, GW_SYNC_NORMAL);
	for (unsigned i = 1; i <= 2; i++) {
		m = msg_make(GW_ROLE_MOD, "chan-1", i, i, 0);
		put_ok(m, GW_ROW_QUEUED);
		proto_msg_unref(m);
	}
	store_close();
	sql_run(f->path,
	        "INSERT INTO messages(channel, dir, seq, handed, origin, msg_id, sender,"
	        " received_ms, body) VALUES"
	        "('chan-1', 0, 5, 0, 0, 'm\x01', 's', 0, X'7B7D'),"   /* control in id */
	        "('chan-1', 0, 7, 9, 0, 'm', 's', 0, X'7B7D'),"       /* unknown state */
	        "('chan-2', 1, 4, 0, 1, 'm', 's', 0, X''),"           /* empty body */
	        "('chan-3', 0, 3, 0, 1, 'm', 's', 0, X'7B7D');");     /* bot's, to bot */

	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(load(&c), 2);
	assert_int_equal(store_count(), 6);
	/* what the gateway does (channel.c restore_stream and restore_one):
	 * a stream goes on after its counter and its last loaded row */
	next = counter_of(&c, "chan-1", GW_TO_BOT);
	for (size_t i = 0; i < c.n; i++)
		if (c.m[i]->seq > next)
			next = c.m[i]->seq;
	k1 = counter_of(&c, "chan-1", GW_TO_BOT);
	k2 = counter_of(&c, "chan-2", GW_TO_MOD);
	k3 = counter_of(&c, "chan-3", GW_TO_BOT);
	collected_free(&c);
	for (unsigned i = 1; i <= 5; i++) {
		m = msg_make(GW_ROLE_MOD, "chan-1", 10 + i, next + i, 0);
		put_ok(m, GW_ROW_QUEUED);
		proto_msg_unref(m);
	}
	if (store_count() != 6 + 5)
		fail_msg("bad rows replaced: %" PRId64 " rows, want 11 (chan-1 to-bot went "
		         "on from seq %" PRIu64 "; its bad rows hold seqs 5 and 7)",
		         store_count(), next);
	assert_int_equal(k1, 7);
	assert_int_equal(k2, 4);
	assert_int_equal(k3, 3);
}

/* ---- states and transactions --------------------------------------------- */

/* A row loads in the state last written, by a put or a set; a set is not a
 * new row (its place in write order stays) and creates none. */
static void test_states(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *a = msg_make(GW_ROLE_MOD, "chan-1", 1, 1, 0);
	struct gw_msg *b = msg_make(GW_ROLE_BOT, "chan-1", 2, 1, 0);
	struct gw_msg *d = msg_make(GW_ROLE_MOD, "chan-1", 3, 2, 0);
	struct gw_msg *missing = key_make(GW_ROLE_MOD, "chan-3", 50);
	struct gw_msg *v[3] = { a, b, d };

	open_ok(f->path, GW_SYNC_NORMAL);
	put_ok(a, GW_ROW_QUEUED);
	assert_int_equal(load(&c), 1);
	assert_int_equal(c.state[0], GW_ROW_QUEUED);
	collected_free(&c);

	set_ok(a, GW_ROW_HANDED);
	assert_int_equal(store_count(), 1);
	assert_int_equal(load(&c), 1);
	assert_int_equal(c.state[0], GW_ROW_HANDED);
	msg_assert_same(c.m[0], a);                 /* the content untouched */
	collected_free(&c);

	set_ok(a, GW_ROW_QUEUED);                   /* and back */
	assert_int_equal(load(&c), 1);
	assert_int_equal(c.state[0], GW_ROW_QUEUED);
	collected_free(&c);

	/* a put in HANDED; then batches of sets in one write each */
	put_ok(b, GW_ROW_HANDED);
	put_ok(d, GW_ROW_QUEUED);
	assert_int_equal(store_write(NULL, GW_ROW_QUEUED, v, 3, GW_ROW_HANDED), 0);
	assert_int_equal(load(&c), 3);
	for (size_t i = 0; i < 3; i++) {
		msg_assert_same(c.m[i], v[i]);      /* a, b, d: write order kept */
		assert_int_equal(c.state[i], GW_ROW_HANDED);
	}
	collected_free(&c);
	v[1] = d;                                   /* a and d queued again */
	assert_int_equal(store_write(NULL, GW_ROW_QUEUED, v, 2, GW_ROW_QUEUED), 0);
	v[1] = b;

	/* a set of a row that is not there: no error, no row, no counter */
	set_ok(missing, GW_ROW_HANDED);
	assert_int_equal(store_count(), 3);

	store_close();
	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(load(&c), 3);
	msg_assert_same(c.m[0], a);
	msg_assert_same(c.m[1], b);
	msg_assert_same(c.m[2], d);
	assert_int_equal(c.state[0], GW_ROW_QUEUED);
	assert_int_equal(c.state[1], GW_ROW_HANDED);
	assert_int_equal(c.state[2], GW_ROW_QUEUED);
	assert_int_equal(c.ns, 2);
	assert_int_equal(counter_of(&c, "chan-3", GW_TO_BOT), 0);
	collected_free(&c);

	/* a put of a row that is there sets its state too */
	put_ok(b, GW_ROW_QUEUED);
	assert_int_equal(store_count(), 3);
	assert_int_equal(load(&c), 3);
	assert_int_equal(c.state[find(&c, b)], GW_ROW_QUEUED);
	collected_free(&c);
	proto_msg_unref(a);
	proto_msg_unref(b);
	proto_msg_unref(d);
	proto_msg_unref(missing);
}

/* Expects the rows of chan-1 to-bot to be exactly seqs[0..n) in write
 * order, each in state st, and its counter to be counter. */
static void chan1_assert(const uint64_t *seqs, size_t n, enum gw_row st, uint64_t counter)
{
	struct collected c = { .n = 0 };

	assert_int_equal(store_count(), (int64_t)n);
	assert_int_equal(load(&c), (int)n);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(c.m[i]->channel_id, "chan-1");
		assert_int_equal(c.m[i]->from, GW_ROLE_MOD);
		assert_int_equal(c.m[i]->seq, seqs[i]);
		assert_int_equal(c.state[i], st);
	}
	assert_int_equal(c.ns, 1);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_BOT), counter);
	collected_free(&c);
}

/* A write with a row and deletions (or sets) is one transaction: all of it
 * or none of it, whichever part fails. */
static void test_write_one_transaction(void **state)
{
	struct fixture *f = *state;
	struct gw_msg *m[8], *v[2];
	char *msg_id;
	size_t i;

	open_ok(f->path, GW_SYNC_NORMAL);
	for (i = 1; i < ARRAY_LEN(m); i++)
		m[i] = msg_make(GW_ROLE_MOD, "chan-1", (unsigned)i, i, 0);
	m[0] = NULL;
	for (i = 1; i <= 4; i++)
		put_ok(m[i], GW_ROW_QUEUED);

	/* both parts */
	v[0] = m[1];
	v[1] = m[2];
	assert_int_equal(store_write(m[5], GW_ROW_QUEUED, v, 2, GW_ROW_GONE), 0);
	chan1_assert((const uint64_t[]){ 3, 4, 5 }, 3, GW_ROW_QUEUED, 5);

	/* refused before anything is written: a bad put, a bad state, a bad
	 * set; the deletions are not done either */
	v[0] = m[3];
	v[1] = m[4];
	m[6]->seq = 0;
	assert_int_equal(store_write(m[6], GW_ROW_QUEUED, v, 2, GW_ROW_GONE), -1);
	m[6]->seq = 6;
	assert_int_equal(store_write(m[6], GW_ROW_GONE, v, 2, GW_ROW_GONE), -1);
	assert_int_equal(store_write(m[6], (enum gw_row)-1, v, 2, GW_ROW_GONE), -1);
	assert_int_equal(store_write(m[6], GW_ROW_QUEUED, v, 2, (enum gw_row)3), -1);
	assert_int_equal(store_write(NULL, GW_ROW_QUEUED, v, 2, (enum gw_row)3), -1);
	chan1_assert((const uint64_t[]){ 3, 4, 5 }, 3, GW_ROW_QUEUED, 5);

	/* a put that passes those checks but not the table's (NOT NULL):
	 * nothing written, no counter raised, the deletions undone */
	msg_id = m[6]->msg_id;
	m[6]->msg_id = NULL;
	assert_int_equal(store_write(m[6], GW_ROW_QUEUED, v, 2, GW_ROW_GONE), -1);
	assert_int_equal(store_write(m[6], GW_ROW_QUEUED, v, 2, GW_ROW_HANDED), -1);
	m[6]->msg_id = msg_id;
	chan1_assert((const uint64_t[]){ 3, 4, 5 }, 3, GW_ROW_QUEUED, 5);

	/* a deletion (or a set) that fails after the put and another deletion
	 * were done: a trigger keeps row 4 */
	store_close();
	sql_run(f->path,
	        "CREATE TRIGGER keep_4 BEFORE DELETE ON messages WHEN old.seq = 4"
	        " BEGIN SELECT RAISE(ABORT, 'row 4 is kept'); END;"
	        "CREATE TRIGGER still_4 BEFORE UPDATE ON messages WHEN old.seq = 4"
	        " BEGIN SELECT RAISE(ABORT, 'row 4 stays as it is'); END;");
	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(store_write(m[7], GW_ROW_QUEUED, v, 2, GW_ROW_GONE), -1);
	chan1_assert((const uint64_t[]){ 3, 4, 5 }, 3, GW_ROW_QUEUED, 5);
	assert_int_equal(store_write(m[7], GW_ROW_HANDED, v, 2, GW_ROW_HANDED), -1);
	chan1_assert((const uint64_t[]){ 3, 4, 5 }, 3, GW_ROW_QUEUED, 5);
	/* and the store goes on: the same write without row 4 */
	assert_int_equal(store_write(m[7], GW_ROW_QUEUED, v, 1, GW_ROW_GONE), 0);
	chan1_assert((const uint64_t[]){ 4, 5, 7 }, 3, GW_ROW_QUEUED, 7);
	for (i = 1; i < ARRAY_LEN(m); i++)
		proto_msg_unref(m[i]);
}

/* ---- counters and epoch -------------------------------------------------- */

/* A stream's counter outlives its rows and only goes up. */
static void test_counters(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct gw_msg *m[3], *hi, *lo, *b, *self, *top;

	open_ok(f->path, GW_SYNC_NORMAL);
	for (unsigned i = 0; i < 3; i++) {
		m[i] = msg_make(GW_ROLE_MOD, "chan-1", i, i + 1, 0);
		put_ok(m[i], i ? GW_ROW_HANDED : GW_ROW_QUEUED);
	}
	del_ok(m, 3);
	assert_int_equal(store_count(), 0);
	assert_int_equal(load(&c), 0);
	assert_int_equal(c.ns, 1);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_BOT), 3);
	collected_free(&c);
	store_close();
	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(load(&c), 0);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_BOT), 3);
	collected_free(&c);

	/* seq 5, then seq 3 (and 5 again): the counter stays 5 */
	hi = msg_make(GW_ROLE_MOD, "chan-1", 5, 5, 0);
	lo = msg_make(GW_ROLE_MOD, "chan-1", 6, 3, 0);
	put_ok(hi, GW_ROW_QUEUED);
	put_ok(lo, GW_ROW_QUEUED);
	put_ok(hi, GW_ROW_HANDED);
	assert_int_equal(load(&c), 2);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_BOT), 5);
	collected_free(&c);
	del_ok(&hi, 1);
	del_ok(&lo, 1);
	assert_int_equal(load(&c), 0);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_BOT), 5);
	collected_free(&c);

	/* each stream its own: the other direction, another channel */
	b = msg_make(GW_ROLE_BOT, "chan-1", 7, 2, 0);
	put_ok(b, GW_ROW_QUEUED);
	/* a row written and deleted in one write still counts */
	self = msg_make(GW_ROLE_MOD, "chan-2", 8, 9, 0);
	assert_int_equal(store_write(self, GW_ROW_QUEUED, &self, 1, GW_ROW_GONE), 0);
	/* the largest seq a row can have */
	top = msg_make(GW_ROLE_BOT, "chan-3", 9, (uint64_t)INT64_MAX, 0);
	put_ok(top, GW_ROW_QUEUED);
	store_close();
	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(store_count(), 2);
	assert_int_equal(load(&c), 2);
	msg_assert_same(c.m[0], b);
	msg_assert_same(c.m[1], top);
	assert_int_equal(c.ns, 4);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_BOT), 5);
	assert_int_equal(counter_of(&c, "chan-1", GW_TO_MOD), 2);
	assert_int_equal(counter_of(&c, "chan-2", GW_TO_BOT), 9);
	assert_true(counter_of(&c, "chan-3", GW_TO_MOD) == (uint64_t)INT64_MAX);
	collected_free(&c);
	for (unsigned i = 0; i < 3; i++)
		proto_msg_unref(m[i]);
	proto_msg_unref(hi);
	proto_msg_unref(lo);
	proto_msg_unref(b);
	proto_msg_unref(self);
	proto_msg_unref(top);
}

/* 1 if s is 16 lower-case hex digits. */
static int epoch_well_formed(const char *s)
{
	if (s == NULL || strlen(s) != 16)
		return 0;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	return 1;
}

/* The epoch is made with the file and kept for its life; another file has
 * another. */
static void test_epoch(void **state)
{
	struct fixture *f = *state;
	struct gw_msg *m = msg_make(GW_ROLE_MOD, "chan-1", 1, 1, 0);
	char first[32], other[PATH_MAX + 32];

	assert_null(store_epoch());                  /* closed */
	open_ok(f->path, GW_SYNC_NORMAL);
	assert_true(epoch_well_formed(store_epoch()));
	snprintf(first, sizeof(first), "%s", store_epoch());
	print_message("    epoch %s\n", first);
	put_ok(m, GW_ROW_QUEUED);                    /* writes leave it alone */
	del_ok(&m, 1);
	assert_string_equal(store_epoch(), first);
	store_close();
	assert_null(store_epoch());

	open_ok(f->path, GW_SYNC_FULL);
	assert_string_equal(store_epoch(), first);
	store_close();

	snprintf(other, sizeof(other), "%s/other/gateway.db", f->dir);
	open_ok(other, GW_SYNC_NORMAL);
	assert_true(epoch_well_formed(store_epoch()));
	assert_string_not_equal(store_epoch(), first);
	store_close();

	/* a new file on the same path is a new life */
	assert_int_equal(unlink(f->path), 0);
	open_ok(f->path, GW_SYNC_NORMAL);
	assert_true(epoch_well_formed(store_epoch()));
	assert_string_not_equal(store_epoch(), first);
	store_close();
	proto_msg_unref(m);
}

/* ---- migration ----------------------------------------------------------- */

/* Creates a version 1 store at path (its folder must exist), as the
 * gateway before store v2 wrote it: one table keyed by a global seq. */
static sqlite3 *v1_create(const char *path)
{
	sqlite3 *db;
	char *msg = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_exec(db,
	                 "PRAGMA application_id = 1212630871; PRAGMA user_version = 1;"
	                 "CREATE TABLE queue(seq INTEGER PRIMARY KEY, dir INTEGER NOT NULL,"
	                 " origin INTEGER NOT NULL, channel TEXT NOT NULL,"
	                 " msg_id TEXT NOT NULL, sender TEXT NOT NULL,"
	                 " received_ms INTEGER NOT NULL, body BLOB NOT NULL);",
	                 NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("v1 schema: %s", msg);
	return db;
}

/* Inserts m as a version 1 row with global seq g (msg_id, if not NULL,
 * instead of m's). */
static void v1_insert(sqlite3 *db, uint64_t g, const struct gw_msg *m, const char *msg_id)
{
	sqlite3_stmt *s;

	assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO queue VALUES(?1, ?2, ?3, ?4, ?5,"
	                                    " ?6, ?7, ?8)", -1, &s, NULL), SQLITE_OK);
	sqlite3_bind_int64(s, 1, (sqlite3_int64)g);
	sqlite3_bind_int(s, 2, (int)proto_dir_of(m->from));
	sqlite3_bind_int(s, 3, (int)m->from);
	sqlite3_bind_text(s, 4, m->channel_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, msg_id ? msg_id : m->msg_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 6, m->sender, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 7, m->received_ms);
	sqlite3_bind_blob64(s, 8, m->body, m->body_len, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(s), SQLITE_DONE);
	sqlite3_finalize(s);
}

/* A version 1 store is migrated once, at open: every row queued, its body
 * byte for byte, numbered from 1 per stream in the old seq order, the
 * counters set; the file is then version 2 and opens as such. */
static void test_migrate_v1(void **state)
{
	struct fixture *f = *state;
	/* inserted in this order; want: the seq in its stream after migration */
	static const struct {
		uint64_t g; enum gw_role role; const char *ch; uint64_t want; int bad;
	} rows[] = {
		{ 42, GW_ROLE_MOD, "chan-a", 3, 0 },
		{ 3, GW_ROLE_MOD, "chan-a", 1, 0 },
		{ 17, GW_ROLE_BOT, "chan-b", 1, 0 },
		{ 100, GW_ROLE_BOT, "chan-b", 2, 0 },
		{ 5, GW_ROLE_BOT, "chan-a", 1, 0 },
		{ 50, GW_ROLE_MOD, "chan-b", 2, 1 },     /* cannot load: still counted */
		{ 8, GW_ROLE_MOD, "chan-b", 1, 0 },
		{ 60, GW_ROLE_BOT, "chan-a", 3, 0 },     /* raw bytes in its body */
		{ 11, GW_ROLE_BOT, "chan-a", 2, 0 },
		{ 9, GW_ROLE_MOD, "chan-a", 2, 0 },
	};
	/* the rows by old seq: 3 5 8 9 11 17 42 (50) 60 100 */
	static const size_t order[] = { 1, 4, 6, 9, 8, 2, 0, 7, 3 };
	static const char raw[] = "{\"content\":\"\xc3\xa9\xe2\x98\x83 \\u0000\t\\\"\"";
	struct collected c = { .n = 0 };
	struct gw_msg *m[ARRAY_LEN(rows)], *next;
	char epoch[32], empty[PATH_MAX + 32];
	sqlite3 *db;
	size_t i;

	data_dir_make(f);
	db = v1_create(f->path);
	for (i = 0; i < ARRAY_LEN(rows); i++) {
		if (i == 7)
			m[i] = proto_msg_new(rows[i].role, rows[i].ch, "b-raw", "bot-1", raw,
			                     sizeof(raw) - 1, NOW_MS + 60, rows[i].g);
		else
			m[i] = msg_make(rows[i].role, rows[i].ch, (unsigned)i, rows[i].g, 0);
		assert_non_null(m[i]);
		v1_insert(db, rows[i].g, m[i], rows[i].bad ? "m\x01" : NULL);
	}
	sqlite3_close(db);

	open_ok(f->path, GW_SYNC_NORMAL);
	assert_true(epoch_well_formed(store_epoch()));
	snprintf(epoch, sizeof(epoch), "%s", store_epoch());
	assert_int_equal(store_count(), 10);             /* the bad row kept */
	assert_int_equal(load(&c), 9);
	for (i = 0; i < ARRAY_LEN(order); i++) {
		struct gw_msg *want = m[order[i]];

		want->seq = rows[order[i]].want;
		assert_int_equal(c.state[i], GW_ROW_QUEUED);
		msg_assert_same(c.m[i], want);
	}
	assert_int_equal(c.ns, 4);
	assert_int_equal(counter_of(&c, "chan-a", GW_TO_BOT), 3);
	assert_int_equal(counter_of(&c, "chan-a", GW_TO_MOD), 3);
	assert_int_equal(counter_of(&c, "chan-b", GW_TO_BOT), 2);
	assert_int_equal(counter_of(&c, "chan-b", GW_TO_MOD), 2);
	collected_free(&c);

	/* the gateway goes on from there */
	set_ok(m[1], GW_ROW_HANDED);                     /* chan-a to-bot seq 1 */
	next = msg_make(GW_ROLE_MOD, "chan-a", 77, 4, 0);
	put_ok(next, GW_ROW_QUEUED);
	store_close();
	assert_int_equal(sql_int(f->path, "PRAGMA user_version"), 2);
	assert_int_equal(sql_int(f->path, "PRAGMA application_id"), 1212630871);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM sqlite_master"
	                                  " WHERE name LIKE 'queue%'"), 0);

	/* opened again: not migrated again */
	open_ok(f->path, GW_SYNC_NORMAL);
	assert_string_equal(store_epoch(), epoch);
	assert_int_equal(store_count(), 11);
	assert_int_equal(load(&c), 10);
	for (i = 0; i < ARRAY_LEN(order); i++) {
		assert_int_equal(c.state[i], i == 0 ? GW_ROW_HANDED : GW_ROW_QUEUED);
		msg_assert_same(c.m[i], m[order[i]]);
	}
	msg_assert_same(c.m[9], next);
	assert_int_equal(c.ns, 4);
	assert_int_equal(counter_of(&c, "chan-a", GW_TO_BOT), 4);
	assert_int_equal(counter_of(&c, "chan-b", GW_TO_BOT), 2);
	collected_free(&c);
	store_close();

	/* an empty version 1 store: no rows, no counters, version 2 */
	snprintf(empty, sizeof(empty), "%s/data/empty.db", f->dir);
	sqlite3_close(v1_create(empty));
	open_ok(empty, GW_SYNC_NORMAL);
	assert_true(epoch_well_formed(store_epoch()));
	assert_int_equal(store_count(), 0);
	assert_int_equal(load(&c), 0);
	assert_int_equal(c.ns, 0);
	store_close();
	assert_int_equal(sql_int(empty, "PRAGMA user_version"), 2);

	for (i = 0; i < ARRAY_LEN(rows); i++)
		proto_msg_unref(m[i]);
	proto_msg_unref(next);
}

/* A version 1 gateway killed with rows only in its WAL: they are migrated
 * too. */
static void test_migrate_v1_wal(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	char wal[PATH_MAX + 64];
	struct stat sb;
	int done[2];
	pid_t pid;

	data_dir_make(f);
	snprintf(wal, sizeof(wal), "%s-wal", f->path);
	assert_int_equal(pipe(done), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		sqlite3 *db = v1_create(f->path);

		close(done[0]);
		if (sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL) != SQLITE_OK)
			_exit(1);
		for (unsigned i = 1; i <= 6; i++) {
			struct gw_msg *m = msg_make(i % 2 ? GW_ROLE_MOD : GW_ROLE_BOT, "chan-w",
			                            i, 0, 0);

			v1_insert(db, 10 * i, m, NULL);
			proto_msg_unref(m);
		}
		child_end(done[1], DEATH_KILL9);
	}
	close(done[1]);
	child_reap(pid, done[0], DEATH_KILL9);
	close(done[0]);
	assert_int_equal(stat(wal, &sb), 0);
	assert_true(sb.st_size > 0);

	open_ok(f->path, GW_SYNC_NORMAL);
	assert_int_equal(load(&c), 6);
	for (unsigned i = 1; i <= 6; i++) {
		struct gw_msg *m = msg_make(i % 2 ? GW_ROLE_MOD : GW_ROLE_BOT, "chan-w", i,
		                            (i + 1) / 2, 0);

		assert_int_equal(c.state[i - 1], GW_ROW_QUEUED);
		msg_assert_same(c.m[i - 1], m);
		proto_msg_unref(m);
	}
	assert_int_equal(counter_of(&c, "chan-w", GW_TO_BOT), 3);
	assert_int_equal(counter_of(&c, "chan-w", GW_TO_MOD), 3);
	collected_free(&c);
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
	put_ok(m, GW_ROW_QUEUED);       /* the holder is unaffected */
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

		put_ok(m, GW_ROW_QUEUED);
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

	/* ours, but the tables were changed by hand */
	assert_int_equal(unlink(f->path), 0);
	sql_run(f->path, "PRAGMA application_id = 1212630871; PRAGMA user_version = 2;"
	        "CREATE TABLE messages(seq INTEGER PRIMARY KEY, body BLOB)");
	err = open_refused(f->path);
	assert_non_null(strstr(err, "unexpected table layout"));

	/* ours, but its epoch is gone: refused, not given a new one */
	assert_int_equal(unlink(f->path), 0);
	open_ok(f->path, GW_SYNC_NORMAL);
	store_close();
	sql_run(f->path, "DELETE FROM meta");
	err = open_refused(f->path);
	assert_non_null(strstr(err, "unexpected table layout"));

	/* a version 1 store changed by hand: its migration fails and leaves
	 * the file as it was */
	assert_int_equal(unlink(f->path), 0);
	sql_run(f->path, "PRAGMA application_id = 1212630871; PRAGMA user_version = 1;"
	        "CREATE TABLE queue(seq INTEGER PRIMARY KEY, body BLOB);"
	        "INSERT INTO queue VALUES(1, X'7B7D')");
	err = open_refused(f->path);
	assert_non_null(strstr(err, "move it away"));
	assert_int_equal(sql_int(f->path, "PRAGMA user_version"), 1);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM queue"), 1);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM sqlite_master"), 1);
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

/* The i-th message of test_survives_kill9 (i from 1): roles and channels
 * mixed, each stream numbered from 1, every fourth handed. */
static struct gw_msg *kill9_msg(unsigned i, enum gw_row *st)
{
	enum gw_role role = i % 3 ? GW_ROLE_MOD : GW_ROLE_BOT;
	uint64_t seq = 0;

	for (unsigned j = 1; j <= i; j++)
		seq += (j % 3 != 0) == (i % 3 != 0) && j % 2 == i % 2;
	*st = i % 4 ? GW_ROW_QUEUED : GW_ROW_HANDED;
	return msg_make(role, i % 2 ? "chan-1" : "chan-2", i, seq, 0);
}

/* A writer that dies without store_close (kill -9 from outside, or an exit
 * that runs nothing of it) loses nothing it was told is committed: rows,
 * states and counters. */
static void test_survives_kill9(void **state)
{
	struct fixture *f = *state;
	static const enum death deaths[] = { DEATH_KILL9, DEATH_EXIT };
	char wal[PATH_MAX + 64];
	struct stat sb;

	snprintf(wal, sizeof(wal), "%s-wal", f->path);

	for (size_t d = 0; d < ARRAY_LEN(deaths); d++) {
		struct collected c = { .n = 0 };
		enum gw_row st;
		int done[2];
		pid_t pid;

		assert_int_equal(pipe(done), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			char cerr[512];

			close(done[0]);
			if (store_open(f->path, GW_SYNC_NORMAL, cerr, sizeof(cerr)) != 0)
				_exit(1);
			for (unsigned i = 1; i <= 100; i++) {
				struct gw_msg *m = kill9_msg(i, &st);

				if (store_write(m, st, NULL, 0, GW_ROW_GONE) != 0)
					_exit(2);
				proto_msg_unref(m);
			}
			child_end(done[1], deaths[d]);
		}
		close(done[1]);
		child_reap(pid, done[0], deaths[d]);
		close(done[0]);

		/* the rows are only in the WAL: nothing was checkpointed */
		assert_int_equal(stat(wal, &sb), 0);
		assert_true(sb.st_size > 0);

		open_ok(f->path, GW_SYNC_NORMAL);
		assert_int_equal(load(&c), 100);
		/* i % 6 picks the stream: 33 + 34 + 17 + 16 rows */
		assert_int_equal(c.ns, 4);
		assert_int_equal(counter_of(&c, "chan-1", GW_TO_BOT), 33);
		assert_int_equal(counter_of(&c, "chan-2", GW_TO_BOT), 34);
		assert_int_equal(counter_of(&c, "chan-1", GW_TO_MOD), 17);
		assert_int_equal(counter_of(&c, "chan-2", GW_TO_MOD), 16);
		for (unsigned i = 1; i <= 100; i++) {
			struct gw_msg *m = kill9_msg(i, &st);

			assert_int_equal(c.state[i - 1], st);
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

/* Each thread puts its own seqs of one shared stream, hands every third
 * and deletes every other one. */
static void *worker_run(void *arg)
{
	struct worker *w = arg;

	for (unsigned i = 0; i < 500; i++) {
		uint64_t seq = (uint64_t)w->id * 1000 + i + 1;
		struct gw_msg *m = msg_make(GW_ROLE_BOT, "chan-t", i, seq, 0);

		w->failures += store_write(m, GW_ROW_QUEUED, NULL, 0, GW_ROW_GONE) != 0;
		if (i % 3 == 0)
			w->failures += store_write(NULL, GW_ROW_QUEUED, &m, 1, GW_ROW_HANDED) != 0;
		if (i % 2)
			w->failures += store_write(NULL, GW_ROW_QUEUED, &m, 1, GW_ROW_GONE) != 0;
		proto_msg_unref(m);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct fixture *f = *state;
	struct collected c = { .n = 0 };
	struct worker w[4];
	size_t handed = 0;

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
	assert_int_equal(load(&c), 4 * 250);
	/* the counter is the highest seq any thread wrote */
	assert_int_equal(c.ns, 1);
	assert_int_equal(counter_of(&c, "chan-t", GW_TO_MOD), 3 * 1000 + 500);
	for (size_t i = 0; i < c.n; i++) {
		unsigned k = (unsigned)((c.m[i]->seq - 1) % 1000);

		assert_int_equal(k % 2, 0);
		assert_int_equal(c.state[i], k % 3 == 0 ? GW_ROW_HANDED : GW_ROW_QUEUED);
		handed += c.state[i] == GW_ROW_HANDED;
	}
	assert_int_equal(handed, 4 * 84);   /* k even and k % 3 == 0: 0, 6, ..., 498 */
	collected_free(&c);
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
		put_ok(m, GW_ROW_QUEUED);
	}
	t_put = now_s() - t0;
	assert_int_equal(store_count(), N);
	t0 = now_s();
	for (seq = 1; seq <= N; seq++) {
		m->seq = seq;
		del_ok(&m, 1);
	}
	t_del = now_s() - t0;
	assert_int_equal(store_count(), 0);
	print_message("    sync=normal: %d puts in %.3f s = %.0f puts/s; "
	              "%d deletes = %.0f deletes/s (body %zu bytes)\n",
	              N, t_put, N / t_put, N, N / t_del, m->body_len);
	store_close();

	open_ok(f->path, GW_SYNC_FULL);
	t0 = now_s();
	for (seq = 1; seq <= N_FULL; seq++) {
		m->seq = N + seq;
		put_ok(m, GW_ROW_QUEUED);
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
		cmocka_unit_test_setup_teardown(test_bad_rows_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_states, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_one_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_epoch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_v1_wal, setup, teardown),
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
