/*
 * test_ring.c - rings: order, overwrite of the oldest, push to the front.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ring.h"

static struct gw_msg *msg(const char *id)
{
	static const char bot[] = "{\"type\":\"bot\",\"data\":{\"bot_id\":\"b\"}}";
	struct gw_handshake hs;
	char json[160], idjson[64];
	struct gw_msg *m = NULL;

	assert_int_equal(proto_decode_handshake(bot, strlen(bot), &hs), GW_OK);
	snprintf(json, sizeof(json),
	         "{\"msg_id\":\"%s\",\"id\":\"c1\",\"author\":{\"id\":\"a\"},\"content\":\"x\"}", id);
	assert_int_equal(proto_decode_message(json, strlen(json), &hs, 0, &m, idjson, sizeof(idjson)),
	                 GW_OK);
	proto_handshake_free(&hs);
	return m;
}

static void test_fifo_and_overwrite(void **state)
{
	struct gw_ring r = { 0 };
	struct gw_msg *old;
	char id[16];
	int err;

	(void)state;
	for (int i = 0; i < 5; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		old = ring_push(&r, 3, msg(id), &err);
		assert_int_equal(err, 0);
		if (i < 3) {
			assert_null(old);
		} else {
			/* the oldest comes back to the caller */
			snprintf(id, sizeof(id), "m%d", i - 3);
			assert_string_equal(old->msg_id, id);
			proto_msg_unref(old);
		}
	}
	assert_int_equal(ring_count(&r), 3);
	for (int i = 2; i < 5; i++) {
		struct gw_msg *m = ring_pop(&r);

		snprintf(id, sizeof(id), "m%d", i);
		assert_string_equal(m->msg_id, id);
		proto_msg_unref(m);
	}
	assert_null(ring_pop(&r));
	ring_clear(&r);
}

static void test_push_front(void **state)
{
	struct gw_ring r = { 0 };
	struct gw_msg *m, *x;
	int err;

	(void)state;
	assert_null(ring_push(&r, 3, msg("b"), &err));
	assert_null(ring_push_front(&r, 3, msg("a"), &err));
	assert_null(ring_push(&r, 3, msg("c"), &err));
	/* full: a message older than all of them is the one to lose */
	x = msg("z");
	assert_ptr_equal(ring_push_front(&r, 3, x, &err), x);
	proto_msg_unref(x);
	m = ring_pop(&r);
	assert_string_equal(m->msg_id, "a");
	proto_msg_unref(m);
	m = ring_pop(&r);
	assert_string_equal(m->msg_id, "b");
	proto_msg_unref(m);
	ring_clear(&r);   /* frees "c" too */
	assert_int_equal(ring_count(&r), 0);
}

/* Slots grow by doubling past their first 16 while the ring wraps; order,
 * ring_at and both ends survive every growth. */
static void test_growth_and_both_ends(void **state)
{
	struct gw_ring r = { 0 };
	struct gw_msg *m;
	char id[16];
	int err, i;

	(void)state;
	for (i = 0; i < 10; i++) {      /* wrap the first 16 slots */
		snprintf(id, sizeof(id), "m%d", i);
		assert_null(ring_push(&r, 100, msg(id), &err));
	}
	for (i = 0; i < 6; i++)
		proto_msg_unref(ring_pop(&r));
	for (i = 10; i < 60; i++) {     /* m6..m59: three growths */
		snprintf(id, sizeof(id), "m%d", i);
		assert_null(ring_push(&r, 100, msg(id), &err));
		assert_int_equal(err, 0);
	}
	assert_int_equal(ring_count(&r), 54);
	assert_true(r.size >= 54 && r.size <= 100);
	for (i = 0; i < 54; i++) {
		snprintf(id, sizeof(id), "m%d", i + 6);
		assert_string_equal(ring_at(&r, (unsigned)i)->msg_id, id);
	}
	assert_null(ring_at(&r, 54));
	m = ring_pop_back(&r);
	assert_string_equal(m->msg_id, "m59");
	proto_msg_unref(m);
	m = ring_pop(&r);
	assert_string_equal(m->msg_id, "m6");
	proto_msg_unref(m);
	assert_int_equal(ring_count(&r), 52);
	/* a cap of 0 keeps nothing: the pushed message comes straight back */
	m = msg("none");
	assert_ptr_equal(ring_push(&r, 0, m, &err), m);
	proto_msg_unref(m);
	ring_clear(&r);
	assert_null(ring_pop_back(&r));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fifo_and_overwrite),
		cmocka_unit_test(test_push_front),
		cmocka_unit_test(test_growth_and_both_ends),
	};

	return cmocka_run_group_tests_name("ring", tests, NULL, NULL);
}
