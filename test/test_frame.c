/*
 * test_frame.c - client frames read in place: header lengths, masks,
 * incomplete frames, the size limit, unmasked frames.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "frame.h"

static const unsigned char mask[4] = { 0x12, 0x34, 0x56, 0x78 };

/* A masked client frame of n payload bytes (each byte i is 'a' + i % 26)
 * into out; returns its size. */
static size_t client_frame(unsigned char *out, int b0, size_t n)
{
	size_t h = 0;

	out[h++] = (unsigned char)b0;
	if (n < 126) {
		out[h++] = (unsigned char)(0x80 | n);
	} else if (n < 65536) {
		out[h++] = 0x80 | 126;
		out[h++] = (unsigned char)(n >> 8);
		out[h++] = (unsigned char)n;
	} else {
		out[h++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			out[h++] = (unsigned char)((uint64_t)n >> (8 * i));
	}
	memcpy(out + h, mask, 4);
	h += 4;
	for (size_t i = 0; i < n; i++)
		out[h + i] = (unsigned char)('a' + i % 26) ^ mask[i & 3];
	return h + n;
}

static void check_payload(const struct gw_frame *f, size_t n)
{
	assert_int_equal(f->len, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(f->data[i], 'a' + i % 26);
}

/* Each of the three length forms, whole and cut at every byte. */
static void test_lengths_and_partial(void **state)
{
	static const size_t sizes[] = { 0, 1, 7, 125, 126, 300, 65535, 65536, 70001 };
	unsigned char *buf = malloc(70001 + 14), *copy = malloc(70001 + 14);

	(void)state;
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t total = client_frame(buf, 0x81, sizes[k]);
		struct gw_frame f;
		size_t step = total > 1000 ? 997 : 1;

		for (size_t have = 0; have < total; have += step) {
			memcpy(copy, buf, total);
			f.bits = -1;
			assert_int_equal(frame_parse(copy, have, 1 << 20, &f), 0);
			assert_int_equal(f.bits, -1);   /* untouched */
		}
		memcpy(copy, buf, total);
		assert_int_equal(frame_parse(copy, total, 1 << 20, &f), total);
		assert_int_equal(f.bits, 0x81);
		check_payload(&f, sizes[k]);
	}
	free(buf);
	free(copy);
}

/* Two frames back to back: the first takes only its own bytes. */
static void test_two_frames(void **state)
{
	unsigned char buf[64];
	size_t a = client_frame(buf, 0x01, 5), b = client_frame(buf + a, 0x80, 9);
	struct gw_frame f;

	(void)state;
	assert_int_equal(frame_parse(buf, a + b, 100, &f), a);
	assert_int_equal(f.bits, 0x01);   /* not FIN: a first fragment */
	check_payload(&f, 5);
	assert_int_equal(frame_parse(buf + a, b, 100, &f), b);
	assert_int_equal(f.bits, 0x80);
	check_payload(&f, 9);
}

/* Over the limit: refused once the header is whole, the payload unread. */
static void test_too_big(void **state)
{
	unsigned char buf[16] = { 0x82, 0x80 | 127, 0, 0, 0, 0, 0x7F, 0xFF, 0x00, 0x00 };
	unsigned char small[300];
	struct gw_frame f;

	(void)state;
	assert_int_equal(frame_parse(buf, 9, 1 << 20, &f), 0);
	assert_int_equal(frame_parse(buf, 10, 1 << 20, &f), 10);
	assert_true(f.bits & GW_FRAME_TOO_BIG);
	assert_int_equal(f.bits & 0xFF, 0x82);
	assert_null(f.data);
	assert_int_equal(f.len, 0x7FFF0000u);
	/* the limit is the payload: max itself passes, one more does not */
	assert_int_equal(frame_parse(small, client_frame(small, 0x81, 200), 200, &f), 208);
	assert_false(f.bits & GW_FRAME_TOO_BIG);
	assert_int_equal(frame_parse(small, client_frame(small, 0x81, 200), 199, &f), 4);
	assert_true(f.bits & GW_FRAME_TOO_BIG);
	assert_int_equal(f.len, 200);
}

/* No mask: flagged, the payload taken as it is. */
static void test_unmasked(void **state)
{
	unsigned char buf[] = { 0x81, 3, 'a', 'b', 'c' };
	struct gw_frame f;

	(void)state;
	assert_int_equal(frame_parse(buf, sizeof(buf), 100, &f), 5);
	assert_true(f.bits & GW_FRAME_UNMASKED);
	assert_int_equal(f.len, 3);
	assert_memory_equal(f.data, "abc", 3);
}

/* Unmasking by words gives what byte by byte gives, at every length. */
static void test_unmask_lengths(void **state)
{
	unsigned char a[64], b[64];

	(void)state;
	for (size_t n = 0; n <= sizeof(a); n++) {
		for (size_t i = 0; i < n; i++)
			a[i] = b[i] = (unsigned char)(i * 37 + 11);
		frame_unmask(a, n, mask);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(a[i], b[i] ^ mask[i & 3]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lengths_and_partial),
		cmocka_unit_test(test_two_frames),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_unmasked),
		cmocka_unit_test(test_unmask_lengths),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
