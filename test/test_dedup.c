/*
 * test_dedup.c - per-sender windows of msg_ids: hits, eviction by window and
 * by the global budget, statuses, and bounded memory under many senders.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>

#include "dedup.h"

static void test_seen_after_record(void **state)
{
	struct gw_dedup *d = dedup_new(8, 1000);
	int st = -1;

	(void)state;
	assert_false(dedup_seen(d, "s1", "m1", &st));
	assert_int_equal(dedup_record(d, "s1", "m1", 1), 0);
	assert_true(dedup_seen(d, "s1", "m1", &st));
	assert_int_equal(st, 1);
	/* another sender's id space is separate */
	assert_false(dedup_seen(d, "s2", "m1", &st));
	dedup_record(d, "s2", "m1", 0);
	assert_true(dedup_seen(d, "s2", "m1", &st));
	assert_int_equal(st, 0);
	assert_int_equal(dedup_senders(d), 2);
	dedup_free(d);
}

static void test_window_forgets_oldest(void **state)
{
	struct gw_dedup *d = dedup_new(4, 1000);
	char id[16];
	int st;

	(void)state;
	for (int i = 0; i < 5; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		dedup_record(d, "s", id, i % 2);
	}
	assert_false(dedup_seen(d, "s", "m0", &st));
	for (int i = 1; i < 5; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		assert_true(dedup_seen(d, "s", id, &st));
		assert_int_equal(st, i % 2);
	}
	dedup_free(d);
}

static void test_large_window_exact(void **state)
{
	struct gw_dedup *d = dedup_new(10000, 1000000);
	char id[32];
	int st;

	(void)state;
	/* grows from 16 to 10000 while keeping every id and status */
	for (int i = 0; i < 25000; i++) {
		snprintf(id, sizeof(id), "msg-%d", i);
		assert_false(dedup_seen(d, "s", id, &st));
		dedup_record(d, "s", id, i & 1);
	}
	for (int i = 0; i < 25000; i++) {
		snprintf(id, sizeof(id), "msg-%d", i);
		if (i < 15000) {
			assert_false(dedup_seen(d, "s", id, &st));
		} else {
			assert_true(dedup_seen(d, "s", id, &st));
			assert_int_equal(st, i & 1);
		}
	}
	dedup_free(d);
}

static void test_rerecord_updates_status(void **state)
{
	struct gw_dedup *d = dedup_new(4, 100);
	int st;

	(void)state;
	dedup_record(d, "s", "m", 1);
	dedup_record(d, "s", "m", 0);
	assert_true(dedup_seen(d, "s", "m", &st));
	assert_int_equal(st, 0);
	dedup_free(d);
}

static void test_budget_evicts_least_recent_sender(void **state)
{
	struct gw_dedup *d = dedup_new(16, 48);   /* room for three fresh senders */
	int st;

	(void)state;
	dedup_record(d, "a", "1", 0);
	dedup_record(d, "b", "1", 0);
	dedup_record(d, "c", "1", 0);
	assert_true(dedup_seen(d, "a", "1", &st));   /* a is now the most recent */
	dedup_record(d, "d", "1", 0);                /* over budget: b goes */
	assert_false(dedup_seen(d, "b", "1", &st));
	assert_true(dedup_seen(d, "a", "1", &st));
	assert_true(dedup_seen(d, "c", "1", &st));
	assert_true(dedup_seen(d, "d", "1", &st));
	assert_int_equal(dedup_senders(d), 3);
	dedup_free(d);
}

static void test_many_senders_bounded(void **state)
{
	struct gw_dedup *d = dedup_new(1024, 65536);
	char sid[32];

	(void)state;
	for (int i = 0; i < 100000; i++) {
		snprintf(sid, sizeof(sid), "sender-%d", i);
		dedup_record(d, sid, "m", 0);
		assert_true(dedup_ids(d) <= 65536);
	}
	assert_true(dedup_senders(d) <= 65536 / 16);
	dedup_free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seen_after_record),
		cmocka_unit_test(test_window_forgets_oldest),
		cmocka_unit_test(test_large_window_exact),
		cmocka_unit_test(test_rerecord_updates_status),
		cmocka_unit_test(test_budget_evicts_least_recent_sender),
		cmocka_unit_test(test_many_senders_bounded),
	};

	return cmocka_run_group_tests_name("dedup", tests, NULL, NULL);
}
