/*
 * log.h - one line per event, to the console (stderr) and to a daily file
 * DIR/gateway-YYYY-MM-DD.log (UTC dates); files older than `rotation` days
 * are deleted when a new day starts and at open.
 *
 * Line format:  2026-11-28T05:38:56.123Z INFO mod connected remote=1.2.3.4:5 server_id=s1
 * Values are quoted ("...") and escaped when they contain spaces, quotes,
 * '=' or control bytes, so a client cannot forge a line. Registered secrets
 * are replaced by "***" wherever they would appear.
 *
 * All functions are thread-safe.
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <time.h>

#include "config.h"

#define GW_LOG_LINE_MAX 4096    /* longest line, '\n' included; cut with "..." */

/* Starts logging at `level`. dir may be NULL or "" (console only). Creates
 * dir (and its parents) if missing and opens today's file there; files dated
 * more than rotation_days before today are deleted, so today's and the
 * rotation_days previous days' files remain. Returns 0, or -1 with errno set
 * (dir not usable; logging then goes to the console only). */
int log_open(enum gw_log_level level, const char *dir, int rotation_days);

/* Reopens the current file (SIGHUP) and applies a new level. */
void log_reopen(enum gw_log_level level);

/* Flushes and closes the file; console logging continues. */
void log_close(void);

/* Never write this string (a key) in any line: it becomes "***". Up to 8
 * secrets; empty strings are ignored. log_clear_secrets() forgets them all. */
void log_add_secret(const char *secret);
void log_clear_secrets(void);

/* Writes one line: event text, then NULL-terminated key, value pairs of
 * strings (a NULL value prints as -). Lines below the level are dropped.
 *   log_event(GW_LOG_INFO, "mod connected", "remote", addr, "server_id", id, NULL); */
void log_event(enum gw_log_level level, const char *event, ...)
	__attribute__((sentinel));

/* 1 if a line at this level would be written (skip building costly values). */
int log_enabled(enum gw_log_level level);

/* Tests only: take the time from now() instead of CLOCK_REALTIME (NULL
 * restores the real clock), to check the switch to a new day's file. */
void log_set_clock(void (*now)(struct timespec *ts));

#endif
