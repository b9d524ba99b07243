/*
 * test_registry.c - the housekeeping tick's walk over the connections: it
 * visits every conn once per tick (each ready conn gets one ping per
 * ping_interval, one close 4001 at its read timeout), in batches with the
 * registry lock released in between, and a conn released while the lock is
 * out does not break the walk.
 *
 * Conns are made as the server makes them (registry_conn_new), bound to one
 * end of a socketpair instead of an upgraded socket and made ready without
 * a handshake; the test reads what the tick sends from the other end. No
 * I/O thread, no store.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "registry.h"

#define NCONNS (2 * GW_TICK_BATCH + 10)
#define WAIT_MS 5000            /* the most a test waits for the tick thread */

struct fixture {
	struct gw_config cfg;
	struct gw_conn *c[NCONNS];  /* in creation order: the walk goes newest first */
	int peer[NCONNS];           /* the client's end of each conn's socketpair */
	int64_t t0;                 /* monotonic ms, before any conn was made */
};

/* Frames a gateway sent to a peer, by opcode. */
struct seen {
	int pings, closes, close_code;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int sv[2];

	assert_non_null(f);
	config_defaults(&f->cfg, "/tmp");
	f->cfg.store_path[0] = '\0';
	f->cfg.max_connections = NCONNS;
	f->cfg.read_timeout = 3600;   /* pings first; the read timeout test lowers it */
	assert_int_equal(registry_init(&f->cfg), 0);
	f->t0 = gw_now_mono();
	for (int i = 0; i < NCONNS; i++) {
		f->c[i] = registry_conn_new("127.0.0.1:1", GW_KEY_SHARED);
		assert_non_null(f->c[i]);
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
		assert_int_equal(conn_attach(f->c[i], sv[0]), 0);
		assert_int_equal(conn_make_ready(f->c[i]), 0);
		f->peer[i] = sv[1];
	}
	*state = f;
	return 0;
}

/* Releases conn i as the server does when its websocket closes. */
static void release(struct fixture *f, int i)
{
	int fd = f->c[i]->fd;

	registry_release(f->c[i]);
	close(fd);
	close(f->peer[i]);
	f->c[i] = NULL;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < NCONNS; i++)
		if (f->c[i])
			release(f, i);
	assert_int_equal(registry_count(), 0);
	registry_free();
	free(f);
	return 0;
}

/* Reads what peer fd has now and counts its frames (unmasked, as a server
 * sends them; payloads under 126 bytes). */
static struct seen frames(int fd)
{
	unsigned char buf[4096];
	struct seen s = { 0, 0, 0 };
	size_t len = 0, at = 0;
	ssize_t n;

	while ((n = read(fd, buf + len, sizeof(buf) - len)) > 0)
		len += (size_t)n;
	while (at + 2 <= len && at + 2 + (buf[at + 1] & 0x7F) <= len) {
		int op = buf[at] & 0x0F;
		size_t plen = buf[at + 1] & 0x7F;

		if (op == 9)
			s.pings++;
		if (op == 8) {
			s.closes++;
			if (plen >= 2)
				s.close_code = buf[at + 2] << 8 | buf[at + 3];
		}
		at += 2 + plen;
	}
	assert_int_equal(at, len);   /* whole frames only */
	return s;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { 0, ms * 1000000L };

	nanosleep(&ts, NULL);
}

static void test_tick_pings_each_conn_once(void **state)
{
	struct fixture *f = *state;
	int64_t due = f->t0 + (int64_t)f->cfg.ping_interval * 1000;

	registry_tick(due - 1000);   /* not due yet */
	for (int i = 0; i < NCONNS; i++)
		assert_int_equal(frames(f->peer[i]).pings, 0);
	registry_tick(due + 1000);
	for (int i = 0; i < NCONNS; i++)
		assert_int_equal(frames(f->peer[i]).pings, 1);
	registry_tick(due + 1250);   /* pinged a tick ago: not again */
	for (int i = 0; i < NCONNS; i++)
		assert_int_equal(frames(f->peer[i]).pings, 0);
}

static void test_tick_read_timeout_closes_each_conn(void **state)
{
	struct fixture *f = *state;

	f->cfg.read_timeout = 60;
	registry_tick(f->t0 + 61 * 1000);
	for (int i = 0; i < NCONNS; i++) {
		struct seen s = frames(f->peer[i]);

		assert_int_equal(s.closes, 1);
		assert_int_equal(s.close_code, GW_CLOSE_READ_TIMEOUT);
		assert_true(conn_closing(f->c[i]));
	}
}

struct ticker {
	pthread_t thread;
	int64_t now;
};

static void *tick_main(void *arg)
{
	struct ticker *t = arg;

	registry_tick(t->now);
	return NULL;
}

struct releaser {
	struct fixture *f;
	int idx[3];
};

static void *release_main(void *arg)
{
	struct releaser *r = arg;

	for (int i = 0; i < 3; i++)
		release(r->f, r->idx[i]);
	return NULL;
}

/* Parks the tick inside its first batch, then releases the conn its walk
 * goes on from, one it has passed and one ahead: every conn still there
 * gets its ping, once. */
static void test_tick_walk_survives_releases(void **state)
{
	struct fixture *f = *state;
	/* walk position w is creation index NCONNS - 1 - w (newest first) */
	int last_of_batch = NCONNS - GW_TICK_BATCH, next = last_of_batch - 1;
	int passed = NCONNS - 1 - 10, ahead = next - 40;
	struct ticker t = { .now = f->t0 + (int64_t)f->cfg.ping_interval * 1000 + 1000 };
	struct releaser rel;
	pthread_t releaser;
	int got[NCONNS] = { 0 };
	int64_t deadline;
	int before;

	/* the tick blocks on this conn's lock, the last of its first batch
	 * (the test takes a conn's own lock only to park the walk there) */
	pthread_mutex_lock(&f->c[last_of_batch]->lock);
	assert_int_equal(pthread_create(&t.thread, NULL, tick_main, &t), 0);
	deadline = gw_now_mono() + WAIT_MS;
	do {
		before = 0;
		for (int i = last_of_batch + 1; i < NCONNS; i++) {
			got[i] += frames(f->peer[i]).pings;
			before += got[i] > 0;
		}
		if (before < GW_TICK_BATCH - 1)
			sleep_ms(1);
	} while (before < GW_TICK_BATCH - 1 && gw_now_mono() < deadline);
	assert_int_equal(before, GW_TICK_BATCH - 1);

	/* the walk is parked with the registry lock out; the releases take the
	 * registry lock, then conn locks: not from the thread holding one */
	rel.f = f;
	rel.idx[0] = next;
	rel.idx[1] = passed;
	rel.idx[2] = ahead;
	assert_int_equal(pthread_create(&releaser, NULL, release_main, &rel), 0);
	assert_int_equal(pthread_join(releaser, NULL), 0);
	pthread_mutex_unlock(&f->c[last_of_batch]->lock);
	assert_int_equal(pthread_join(t.thread, NULL), 0);

	for (int i = 0; i < NCONNS; i++) {
		if (!f->c[i])
			continue;
		got[i] += frames(f->peer[i]).pings;
		assert_int_equal(got[i], 1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tick_pings_each_conn_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tick_read_timeout_closes_each_conn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tick_walk_survives_releases, setup, teardown),
	};

	log_open(GW_LOG_WARN, NULL, 1);   /* console only, no line per read timeout */
	return cmocka_run_group_tests_name("registry", tests, NULL, NULL);
}
