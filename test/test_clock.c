/*
 * test_clock.c - unit tests for clock.c: RFC 3339 timestamps written (fixed
 * cases, and against gmtime_r over the whole range) and checked.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L   /* gmtime_r */
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clock.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define NOW_MS 1765189860123LL          /* 2025-12-08T10:31:00.123Z */
#define NOW_TEXT "2025-12-08T10:31:00.123Z"

static void test_format_time(void **state)
{
	static const struct { int64_t ms; const char *text; } cases[] = {
		{ 0, "1970-01-01T00:00:00.000Z" },
		{ NOW_MS, NOW_TEXT },
		{ 1709251199999LL, "2024-02-29T23:59:59.999Z" },
		{ 1709251200000LL, "2024-03-01T00:00:00.000Z" },
		{ -1, "1969-12-31T23:59:59.999Z" },
		{ -1000, "1969-12-31T23:59:59.000Z" },
		{ -1001, "1969-12-31T23:59:58.999Z" },
		{ -2203891200000LL, "1900-03-01T00:00:00.000Z" },
		{ 253402300799999LL, "9999-12-31T23:59:59.999Z" },
		{ INT64_MAX, "9999-12-31T23:59:59.999Z" },
		{ INT64_MIN, "0000-01-01T00:00:00.000Z" },
	};
	char buf[32];

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		memset(buf, 'z', sizeof(buf));
		clock_format_rfc3339(cases[i].ms, buf);
		assert_string_equal(buf, cases[i].text);
		assert_int_equal(buf[25], 'z');
		assert_true(clock_valid_rfc3339(buf));
	}
}

/* Against gmtime_r, over the whole range, ten thousand times. */
static void test_format_time_gmtime(void **state)
{
	uint64_t x = 88172645463325252ULL;   /* xorshift64 */
	const int64_t span = 253402300800000LL + 62167219200000LL;
	char buf[32], want[96];
	struct tm tm;
	time_t secs;

	(void)state;
	for (int i = 0; i < 10000; i++) {
		int64_t ms;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		ms = (int64_t)(x % (uint64_t)span) - 62167219200000LL;
		secs = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
		assert_non_null(gmtime_r(&secs, &tm));
		snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		         tm.tm_sec, (int)(ms - (int64_t)secs * 1000));
		clock_format_rfc3339(ms, buf);
		assert_string_equal(buf, want);
	}
}

static void test_rfc3339(void **state)
{
	static const char *const good[] = {
		"2025-12-08T10:30:00Z", "2025-12-08t10:30:00z", "2025-12-08T10:30:00.5+01:00",
		"2025-12-08T10:30:00.123456789-23:59", "2024-02-29T00:00:00Z",
		"2000-02-29T00:00:00Z", "1985-04-12T23:20:50.52Z", "1990-12-31T23:59:60Z",
		"1996-12-19T16:39:57-08:00", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00",
		"2025-01-31T00:00:00Z", "2025-04-30T00:00:00Z",
	};
	static const char *const bad[] = {
		"", "2025", "2025-12-08", "2025-12-08T10:30:00", "2025-12-08T10:30Z",
		"2025-12-08 10:30:00Z", "2025-12-08X10:30:00Z", "2025-12-08T10:30:00ZZ",
		"2025-12-08T10:30:00Z ", " 2025-12-08T10:30:00Z", "2025-12-8T10:30:00Z",
		"25-12-08T10:30:00Z", "2025-00-08T10:30:00Z", "2025-13-08T10:30:00Z",
		"2025-12-00T10:30:00Z", "2025-12-32T10:30:00Z", "2025-02-29T10:30:00Z",
		"1900-02-29T10:30:00Z", "2025-04-31T10:30:00Z", "2025-12-08T24:00:00Z",
		"2025-12-08T10:60:00Z", "2025-12-08T10:30:61Z", "2025-12-08T10:30:00.Z",
		"2025-12-08T10:30:00,5Z", "2025-12-08T10:30:00+0100", "2025-12-08T10:30:00+01",
		"2025-12-08T10:30:00+24:00", "2025-12-08T10:30:00+01:60", "2025-12-08T10:30:00UTC",
		"2025-12-08T1:30:00Z", "+2025-12-08T10:30:00Z", "2025/12/08T10:30:00Z",
		"2025-12-08T10:30:00.5", "2025-12-08T10:30:00-", "\xef\xbc\x92\xef\xbc\x90",
		"2025-12-08T10:30:00\xc2\xa0Z", "1765189800",
	};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(good); i++)
		if (!clock_valid_rfc3339(good[i]))
			fail_msg("rejected valid: %s", good[i]);
	for (i = 0; i < ARRAY_LEN(bad); i++)
		if (clock_valid_rfc3339(bad[i]))
			fail_msg("accepted invalid: %s", bad[i]);
	assert_false(clock_valid_rfc3339(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_time),
		cmocka_unit_test(test_format_time_gmtime),
		cmocka_unit_test(test_rfc3339),
	};

	return cmocka_run_group_tests_name("clock", tests, NULL, NULL);
}
