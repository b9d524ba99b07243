/*
 * clock.c - the clocks and RFC 3339 timestamps. See clock.h.
 *
 * Timestamps are written with integer arithmetic rather than gmtime_r
 * (civil_date), so formatting one takes no lock; parsing only checks the
 * text, it never converts it.
 */
#include "clock.h"

#include <time.h>

static char *put_digits(char *p, unsigned v, int width);
static void civil_date(int64_t days, int64_t *year, unsigned *month, unsigned *day);
static int parse_digits(const char *s, int width, int *v);

int64_t gw_now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t gw_now_real(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- RFC 3339 ------------------------------------------------------------ */

/* Writes v as exactly width decimal digits; returns the end. */
static char *put_digits(char *p, unsigned v, int width)
{
	int i;

	for (i = width - 1; i >= 0; i--) {
		p[i] = (char)('0' + v % 10);
		v /= 10;
	}
	return p + width;
}

/* The proleptic Gregorian date of day `days` since 1970-01-01. Counts in
 * 400-year eras (146097 days) of years starting on March 1, so the leap
 * day is the last day of its year; pure arithmetic, unlike gmtime_r, which
 * takes glibc's time zone lock on every call. */
static void civil_date(int64_t days, int64_t *year, unsigned *month, unsigned *day)
{
	int64_t z = days + 719468;   /* days since 0000-03-01 */
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);                        /* 0..146096 */
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* 0..399 */
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);              /* 0..365 */
	unsigned mp = (5 * doy + 2) / 153;                                  /* 0 = March */

	*day = doy - (153 * mp + 2) / 5 + 1;
	*month = mp < 10 ? mp + 3 : mp - 9;
	*year = (int64_t)yoe + era * 400 + (*month <= 2);
}

void clock_format_rfc3339(int64_t unix_ms, char *buf)
{
	/* Years 0000..9999 keep the text at 24 characters. */
	static const int64_t min_ms = -62167219200000LL;   /* 0000-01-01 */
	static const int64_t max_ms = 253402300799999LL;   /* 9999-12-31 */
	int64_t days, ms, year;
	unsigned month, day, sec;
	char *p = buf;

	if (unix_ms < min_ms)
		unix_ms = min_ms;
	if (unix_ms > max_ms)
		unix_ms = max_ms;
	days = unix_ms / 86400000;
	ms = unix_ms % 86400000;
	if (ms < 0) {           /* floor, for times before 1970 */
		ms += 86400000;
		days--;
	}
	civil_date(days, &year, &month, &day);
	sec = (unsigned)(ms / 1000);
	p = put_digits(p, (unsigned)year, 4);
	*p++ = '-';
	p = put_digits(p, month, 2);
	*p++ = '-';
	p = put_digits(p, day, 2);
	*p++ = 'T';
	p = put_digits(p, sec / 3600, 2);
	*p++ = ':';
	p = put_digits(p, sec / 60 % 60, 2);
	*p++ = ':';
	p = put_digits(p, sec % 60, 2);
	*p++ = '.';
	p = put_digits(p, (unsigned)(ms % 1000), 3);
	*p++ = 'Z';
	*p = '\0';
}

/* Reads exactly width ASCII digits; stops at the first non-digit (so never
 * past a NUL). Returns 1 or 0. */
static int parse_digits(const char *s, int width, int *v)
{
	int i;

	*v = 0;
	for (i = 0; i < width; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		*v = *v * 10 + (s[i] - '0');
	}
	return 1;
}

/* RFC 3339 section 5.6 date-time: full-date "T" partial-time time-offset,
 * "T" and "Z" in either case, any number of fraction digits, second 60
 * allowed (leap second). */
int clock_valid_rfc3339(const char *s)
{
	static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int year, mon, day, hour, min, sec, oh, om, leap, dim;

	if (s == NULL)
		return 0;
	if (!parse_digits(s, 4, &year) || s[4] != '-' ||
	    !parse_digits(s + 5, 2, &mon) || s[7] != '-' ||
	    !parse_digits(s + 8, 2, &day) || (s[10] != 'T' && s[10] != 't'))
		return 0;
	s += 11;
	if (!parse_digits(s, 2, &hour) || s[2] != ':' ||
	    !parse_digits(s + 3, 2, &min) || s[5] != ':' ||
	    !parse_digits(s + 6, 2, &sec))
		return 0;
	s += 8;
	if (mon < 1 || mon > 12 || day < 1 || hour > 23 || min > 59 || sec > 60)
		return 0;
	leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	dim = mdays[mon - 1] + (mon == 2 && leap);
	if (day > dim)
		return 0;

	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return 0;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		if (!parse_digits(s + 1, 2, &oh) || s[3] != ':' ||
		    !parse_digits(s + 4, 2, &om) || oh > 23 || om > 59)
			return 0;
		s += 6;
	} else {
		return 0;
	}
	return *s == '\0';
}
