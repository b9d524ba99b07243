/*
 * clock.h - time for the gateway: the monotonic and wall clocks in
 * milliseconds, and timestamps as RFC 3339 text (written and checked).
 * No globals, no locks: every function is thread-safe.
 */
#ifndef GW_CLOCK_H
#define GW_CLOCK_H

#include <stdint.h>

/* Monotonic and wall clocks in ms. */
int64_t gw_now_mono(void);
int64_t gw_now_real(void);

/* RFC 3339 UTC with milliseconds: 2025-12-08T10:31:00.123Z (24 chars + NUL).
 * buf must hold 25 bytes. Times outside years 0000..9999 are clamped to
 * them. */
void clock_format_rfc3339(int64_t unix_ms, char *buf);

/* 1 if s is a valid RFC 3339 date-time (e.g. 2025-12-08T10:30:00Z,
 * 2025-12-08T10:30:00.5+01:00), else 0. NULL is not. */
int clock_valid_rfc3339(const char *s);

#endif
