/*
 * log.c - one line per event to stderr and to DIR/gateway-YYYY-MM-DD.log.
 *
 * Every line is built whole in a buffer (at most GW_LOG_LINE_MAX bytes,
 * newline included) and written with one write(2) per destination while
 * log_lock is held: holding the lock across the write is the point, it keeps
 * lines whole and in order, and keeps the file descriptor from being
 * switched under a writer at midnight. The file is opened O_APPEND, so a
 * line is on disk (in the page cache) as soon as log_event() returns.
 *
 * Secrets are removed twice: from each piece of text before it is escaped
 * (so a key cut by the length cap or hidden by escaping cannot leak), and
 * from the finished line (a key split over `name=value`, or one made up by
 * escaping, cannot appear either).
 *
 * Day change: each write compares the UTC day of its timestamp with the
 * open file's; on a change the new file is opened and files older than
 * `rotation` days are deleted -- only names of the exact form
 * gateway-YYYY-MM-DD.log with a real date, only regular files.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "log.h"
#include "path.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRETS_MAX 8
#define NO_DAY LONG_MIN
/* Build room: twice a line, so the final secret pass sees a little past the
 * cap (a secret straddling it is still recognised). */
#define BUILD_MAX (2 * GW_LOG_LINE_MAX)

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
/* Protected by log_lock: everything below. */
static enum gw_log_level log_level = GW_LOG_INFO;
static char log_dir[PATH_MAX];          /* "" = console only */
static int log_rotation = 3;
static int log_fd = -1;
static long log_day = NO_DAY;           /* UTC day number of log_fd's file */
static int log_file_failing;            /* reported; quiet until it works */
static char *secrets[SECRETS_MAX];
static size_t nsecrets;
static int secrets_overflow_reported;
static void (*log_clock)(struct timespec *ts);

struct line {
	char buf[BUILD_MAX];
	size_t len;
	int cut;                /* something did not fit */
};

static const char *const level_tags[] = { "DEBUG", "INFO", "WARN", "ERROR" };

/* --- dates --- */

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static long days_from_civil(int y, int m, int d)
{
	long era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153L * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
	static const int dm[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return dm[m - 1];
}

static void clock_now(struct timespec *ts)
{
	if (log_clock)
		log_clock(ts);
	else
		clock_gettime(CLOCK_REALTIME, ts);
}

/* --- building a line --- */

static void put(struct line *l, const char *s, size_t n)
{
	if (n > sizeof(l->buf) - l->len) {
		n = sizeof(l->buf) - l->len;
		l->cut = 1;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void put_c(struct line *l, char c)
{
	put(l, &c, 1);
}

/* Length of the registered secret starting at s, or 0 (longest wins). */
static size_t secret_at(const char *s, size_t avail)
{
	size_t i, n, best = 0;

	for (i = 0; i < nsecrets; i++) {
		n = strlen(secrets[i]);
		if (n <= avail && n > best && secrets[i][0] == s[0] &&
		    memcmp(s, secrets[i], n) == 0)
			best = n;
	}
	return best;
}

static int needs_quotes(const char *s)
{
	if (!*s)
		return 1;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= 0x20 || c == 0x7f || c == '"' || c == '=' || c == '\\')
			return 1;
	}
	return 0;
}

static void put_escaped(struct line *l, unsigned char c, int quoted)
{
	char hex[5];

	switch (c) {
	case '\n': put(l, "\\n", 2); return;
	case '\r': put(l, "\\r", 2); return;
	case '\t': put(l, "\\t", 2); return;
	case '"':
	case '\\':
		if (quoted) {
			put_c(l, '\\');
			put_c(l, (char)c);
			return;
		}
		break;
	default:
		if (c < 0x20 || c == 0x7f) {
			snprintf(hex, sizeof(hex), "\\x%02x", c);
			put(l, hex, 4);
			return;
		}
	}
	put_c(l, (char)c);
}

enum text { TEXT_EVENT, TEXT_KEY, TEXT_VALUE };

/* Appends s: secrets become ***, then per kind: the event keeps its spaces
 * with control bytes escaped; a key is reduced to a safe token; a value is
 * quoted and escaped when it must be. */
static void put_text(struct line *l, const char *s, enum text kind)
{
	size_t i, n, len = strlen(s);
	int quoted = kind == TEXT_VALUE && needs_quotes(s);

	if (kind == TEXT_KEY && !*s) {
		put_c(l, '_');
		return;
	}
	if (quoted)
		put_c(l, '"');
	for (i = 0; i < len && !l->cut; i++) {
		unsigned char c = (unsigned char)s[i];

		n = secret_at(s + i, len - i);
		if (n) {
			put(l, "***", 3);
			i += n - 1;
		} else if (kind == TEXT_KEY) {
			put_c(l, (c > 0x20 && c < 0x7f && c != '=' && c != '"')
			      ? (char)c : '_');
		} else {
			put_escaped(l, c, quoted);
		}
	}
	if (quoted)
		put_c(l, '"');
}

static void line_begin(struct line *l, const struct timespec *ts,
		       const struct tm *tm, enum gw_log_level level,
		       const char *event)
{
	char stamp[64];
	int n;

	l->len = 0;
	l->cut = 0;
	n = snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s ",
		     tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday,
		     tm->tm_hour, tm->tm_min, tm->tm_sec,
		     (int)(ts->tv_nsec / 1000000), level_tags[level]);
	if (n > 0)
		put(l, stamp, (size_t)n < sizeof(stamp) ? (size_t)n : sizeof(stamp) - 1);
	put_text(l, event ? event : "-", TEXT_EVENT);
}

static void line_pair(struct line *l, const char *key, const char *value)
{
	put_c(l, ' ');
	put_text(l, key, TEXT_KEY);
	put_c(l, '=');
	if (value)
		put_text(l, value, TEXT_VALUE);
	else
		put_c(l, '-');
}

/* Final secret pass and the length cap; returns the length of out, which
 * ends with '\n' (and "..." before it when something was cut). */
static size_t line_end(struct line *l, char *out)
{
	const size_t body = GW_LOG_LINE_MAX - 4;        /* room for "...\n" */
	size_t i = 0, o = 0, n;
	int cut = l->cut;

	while (i < l->len) {
		n = secret_at(l->buf + i, l->len - i);
		if (n) {
			if (o + 3 > body) {
				cut = 1;
				break;
			}
			memcpy(out + o, "***", 3);
			o += 3;
			i += n;
			continue;
		}
		if (o == body) {
			cut = 1;
			break;
		}
		out[o++] = l->buf[i++];
	}
	if (cut) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o++] = '\n';
	return o;
}

/* --- output --- */

static int write_all(int fd, const char *s, size_t n)
{
	ssize_t w;

	while (n) {
		w = write(fd, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Says once, on the console only, that the file cannot be written. */
static void file_report(const char *what, const char *name, int err)
{
	static struct line l;   /* under log_lock; too big for thread stacks */
	static char out[GW_LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	char ebuf[128];
	size_t n;

	if (log_file_failing)
		return;
	log_file_failing = 1;
	clock_now(&ts);
	gmtime_r(&ts.tv_sec, &tm);
	line_begin(&l, &ts, &tm, GW_LOG_ERROR, what);
	line_pair(&l, "path", name);
	line_pair(&l, "error", strerror_r(err, ebuf, sizeof(ebuf)));
	line_pair(&l, "note", "logging to the console only until it works");
	n = line_end(&l, out);
	write_all(STDERR_FILENO, out, n);
}

static void file_close(void)
{
	if (log_fd >= 0)
		close(log_fd);
	log_fd = -1;
	log_day = NO_DAY;
}

static void file_name(char *out, size_t outlen, const struct tm *tm)
{
	snprintf(out, outlen, "%s/gateway-%04d-%02d-%02d.log", log_dir,
		 tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday);
}

/* Deletes gateway-YYYY-MM-DD.log files dated before today - rotation. */
static void file_prune(long today)
{
	DIR *d;
	struct dirent *e;
	struct stat st;
	int y, m, dd, i;
	const char *s;

	d = opendir(log_dir);
	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		s = e->d_name;
		if (strlen(s) != 22 || strncmp(s, "gateway-", 8) != 0 ||
		    s[12] != '-' || s[15] != '-' || strcmp(s + 18, ".log") != 0)
			continue;
		for (i = 8; i < 18; i++)
			if (i != 12 && i != 15 && (s[i] < '0' || s[i] > '9'))
				break;
		if (i != 18)
			continue;
		y = (s[8] - '0') * 1000 + (s[9] - '0') * 100 +
		    (s[10] - '0') * 10 + (s[11] - '0');
		m = (s[13] - '0') * 10 + (s[14] - '0');
		dd = (s[16] - '0') * 10 + (s[17] - '0');
		if (m < 1 || m > 12 || dd < 1 || dd > days_in_month(y, m))
			continue;
		if (days_from_civil(y, m, dd) >= today - log_rotation)
			continue;
		if (fstatat(dirfd(d), s, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode))
			unlinkat(dirfd(d), s, 0);
	}
	closedir(d);
}

/* Opens the file for tm's day (closing any other) and prunes. On failure
 * the day is still recorded, so we retry at the next day or log_reopen(),
 * not on every line. Returns 0 or -1 with errno set. */
static int file_open(const struct tm *tm)
{
	char name[PATH_MAX + 64];
	long day = days_from_civil(tm->tm_year + 1900, tm->tm_mon + 1,
				   tm->tm_mday);
	int err;

	file_close();
	log_day = day;
	file_name(name, sizeof(name), tm);
	log_fd = open(name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY,
		      0640);
	if (log_fd < 0) {
		err = errno;
		file_report("log file cannot be opened", name, err);
		errno = err;
		return -1;
	}
	log_file_failing = 0;
	file_prune(day);
	return 0;
}

static void file_write(const struct tm *tm, const char *s, size_t n)
{
	char name[PATH_MAX + 64];
	long day;

	if (!log_dir[0])
		return;
	day = days_from_civil(tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday);
	if (day != log_day && file_open(tm) < 0)
		return;
	if (log_fd < 0)
		return;
	if (write_all(log_fd, s, n) < 0) {
		int err = errno;

		file_name(name, sizeof(name), tm);
		file_report("log file write failed", name, err);
	} else {
		log_file_failing = 0;
	}
}


/* --- public --- */

int log_open(enum gw_log_level level, const char *dir, int rotation_days)
{
	struct timespec ts;
	struct tm tm;
	int ret = 0, err = 0;

	pthread_mutex_lock(&log_lock);
	file_close();
	log_level = level;
	log_rotation = rotation_days > 0 ? rotation_days : 1;
	log_dir[0] = '\0';
	log_file_failing = 0;
	if (!dir || !*dir)
		goto out;
	if (strlen(dir) >= sizeof(log_dir)) {
		err = ENAMETOOLONG;
		ret = -1;
		goto out;
	}
	if (path_mkdirs(dir) < 0 || access(dir, W_OK | X_OK) < 0) {
		err = errno;
		ret = -1;
		goto out;
	}
	memcpy(log_dir, dir, strlen(dir) + 1);
	clock_now(&ts);
	gmtime_r(&ts.tv_sec, &tm);
	/* Opened here, not at the first line, so a bad folder stops the start;
	 * the caller reports it, not us. */
	log_file_failing = 1;
	if (file_open(&tm) < 0) {
		err = errno;
		log_dir[0] = '\0';
		ret = -1;
	}
	log_file_failing = 0;
out:
	pthread_mutex_unlock(&log_lock);
	if (ret < 0)
		errno = err;
	return ret;
}

void log_reopen(enum gw_log_level level)
{
	struct timespec ts;
	struct tm tm;

	pthread_mutex_lock(&log_lock);
	log_level = level;
	if (log_dir[0]) {
		clock_now(&ts);
		gmtime_r(&ts.tv_sec, &tm);
		file_open(&tm);
	}
	pthread_mutex_unlock(&log_lock);
}

void log_close(void)
{
	pthread_mutex_lock(&log_lock);
	file_close();
	log_dir[0] = '\0';
	log_file_failing = 0;
	pthread_mutex_unlock(&log_lock);
}

void log_add_secret(const char *secret)
{
	size_t i;
	char *copy;
	int full = 0;

	if (!secret || !*secret)
		return;
	pthread_mutex_lock(&log_lock);
	for (i = 0; i < nsecrets; i++)
		if (strcmp(secrets[i], secret) == 0)
			goto out;
	if (nsecrets == SECRETS_MAX) {
		full = !secrets_overflow_reported;
		secrets_overflow_reported = 1;
		goto out;
	}
	copy = strdup(secret);
	if (copy)
		secrets[nsecrets++] = copy;
out:
	pthread_mutex_unlock(&log_lock);
	if (full)
		log_event(GW_LOG_ERROR, "log: too many secrets, one is not hidden",
			  "max", "8", NULL);
}

void log_clear_secrets(void)
{
	size_t i;

	pthread_mutex_lock(&log_lock);
	for (i = 0; i < nsecrets; i++) {
		/* Wipe: the memory may be reused by a later, logged, buffer. */
		explicit_bzero(secrets[i], strlen(secrets[i]));
		free(secrets[i]);
		secrets[i] = NULL;
	}
	nsecrets = 0;
	secrets_overflow_reported = 0;
	pthread_mutex_unlock(&log_lock);
}

void log_event(enum gw_log_level level, const char *event, ...)
{
	static struct line l;   /* under log_lock: 8 KiB off thread stacks */
	static char out[GW_LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	const char *key, *value;
	va_list ap;
	size_t n;

	if ((unsigned)level > GW_LOG_ERROR)
		level = GW_LOG_ERROR;
	pthread_mutex_lock(&log_lock);
	if (level < log_level)
		goto out;
	clock_now(&ts);
	gmtime_r(&ts.tv_sec, &tm);
	line_begin(&l, &ts, &tm, level, event);
	va_start(ap, event);
	while ((key = va_arg(ap, const char *)) != NULL) {
		value = va_arg(ap, const char *);
		line_pair(&l, key, value);
	}
	va_end(ap);
	n = line_end(&l, out);
	write_all(STDERR_FILENO, out, n);
	file_write(&tm, out, n);
out:
	pthread_mutex_unlock(&log_lock);
}

int log_enabled(enum gw_log_level level)
{
	int on;

	pthread_mutex_lock(&log_lock);
	on = level >= log_level;
	pthread_mutex_unlock(&log_lock);
	return on;
}

void log_set_clock(void (*now)(struct timespec *ts))
{
	pthread_mutex_lock(&log_lock);
	log_clock = now;
	pthread_mutex_unlock(&log_lock);
}
