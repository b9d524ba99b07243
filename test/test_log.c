/*
 * test_log.c - log.c: the line format, escaping (no forged lines), secrets
 * never written, level filtering, the 4 KiB cap, rotation at open and at a
 * day change, console-only after log_close() or a failing file, and whole
 * lines under concurrent writers.
 *
 * Each test logs into its own temporary folder; the console (fd 2) is
 * captured to a file around the calls that log, so CMocka's own messages
 * still reach the terminal.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static char dir[128];           /* this test's log folder */
static struct timespec fake_now;
static int saved_stderr = -1;
static char console_path[160];

/* --- helpers --- */

__attribute__((format(printf, 3, 4)))
static void fmt(char *buf, size_t size, const char *f, ...)
{
	va_list ap;
	int n;

	va_start(ap, f);
	n = vsnprintf(buf, size, f, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < size);
}

static void fake_clock(struct timespec *ts)
{
	*ts = fake_now;
}

static void set_time(int y, int mo, int d, int h, int mi, int s, long ms)
{
	struct tm tm = { 0 };

	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	fake_now.tv_sec = timegm(&tm);
	fake_now.tv_nsec = ms * 1000000;
	log_set_clock(fake_clock);
}

/* Whole file, NUL-terminated, or NULL if missing. Caller frees. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return NULL;
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static char *day_file(int y, int m, int d)
{
	static char path[256];

	fmt(path, sizeof(path), "%s/gateway-%04d-%02d-%02d.log", dir, y, m, d);
	return path;
}

static char *read_day(int y, int m, int d)
{
	return slurp(day_file(y, m, d));
}

static void touch(const char *name)
{
	char path[256];
	int fd;

	fmt(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	close(fd);
}

static int exists(const char *name)
{
	char path[256];
	struct stat st;

	fmt(path, sizeof(path), "%s/%s", dir, name);
	return lstat(path, &st) == 0;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* Console capture: fd 2 goes to a file until console_end(). */
static void console_begin(void)
{
	int fd;

	fmt(console_path, sizeof(console_path), "%s.console", dir);
	fd = open(console_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	fflush(stderr);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
}

/* Restores fd 2; returns what was written to it (caller frees). */
static char *console_end(void)
{
	assert_int_equal(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
	close(saved_stderr);
	saved_stderr = -1;
	return slurp(console_path);
}

static int setup(void **state)
{
	(void)state;
	fmt(dir, sizeof(dir), "/tmp/gw-test-log.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	log_set_clock(NULL);
	return 0;
}

static int teardown(void **state)
{
	char cmd[512];

	(void)state;
	if (saved_stderr >= 0)
		console_end();
	log_close();
	log_clear_secrets();
	log_set_clock(NULL);
	fmt(cmd, sizeof(cmd), "rm -rf '%s' '%s.console'", dir, dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* --- format --- */

static void test_line_format(void **state)
{
	char *file, *console;

	(void)state;
	set_time(2026, 11, 28, 5, 38, 56, 123);
	console_begin();
	assert_int_equal(log_open(GW_LOG_DEBUG, dir, 3), 0);
	log_event(GW_LOG_INFO, "mod connected", "remote", "1.2.3.4:5",
		  "server_id", "s1", NULL);
	log_event(GW_LOG_DEBUG, "d", NULL);
	log_event(GW_LOG_WARN, "w", "none", NULL, "empty", "", NULL);
	log_event(GW_LOG_ERROR, "e", "k", "v", NULL);
	console = console_end();
	file = read_day(2026, 11, 28);
	assert_non_null(file);
	assert_string_equal(file,
		"2026-11-28T05:38:56.123Z INFO mod connected remote=1.2.3.4:5 "
		"server_id=s1\n"
		"2026-11-28T05:38:56.123Z DEBUG d\n"
		"2026-11-28T05:38:56.123Z WARN w none=- empty=\"\"\n"
		"2026-11-28T05:38:56.123Z ERROR e k=v\n");
	assert_string_equal(console, file);     /* the same lines on both */
	free(file);
	free(console);
}

/* With the real clock: the stamp matches the pattern and today's file. */
static void test_real_clock(void **state)
{
	regex_t re;
	char *file, *console, want[32];
	time_t now = time(NULL);
	struct tm tm;

	(void)state;
	gmtime_r(&now, &tm);
	console_begin();
	assert_int_equal(log_open(GW_LOG_INFO, dir, 3), 0);
	log_event(GW_LOG_INFO, "started", "version", "0.1.0", NULL);
	console = console_end();
	file = read_day(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
	if (!file) {    /* midnight passed between the two calls */
		now = time(NULL);
		gmtime_r(&now, &tm);
		file = read_day(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
	}
	assert_non_null(file);
	assert_int_equal(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:"
		"[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z INFO started version=0\\.1\\.0\n$",
		REG_EXTENDED | REG_NOSUB), 0);
	assert_int_equal(regexec(&re, file, 0, NULL, 0), 0);
	regfree(&re);
	fmt(want, sizeof(want), "%04d-%02d-%02dT", tm.tm_year + 1900,
	    tm.tm_mon + 1, tm.tm_mday);
	assert_memory_equal(file, want, strlen(want));
	free(file);
	free(console);
}

static void test_escaping(void **state)
{
	char *file, *console;

	(void)state;
	set_time(2026, 1, 2, 3, 4, 5, 6);
	console_begin();
	assert_int_equal(log_open(GW_LOG_INFO, dir, 3), 0);
	log_event(GW_LOG_INFO, "values",
		  "plain", "abc",
		  "space", "a b",
		  "quote", "say \"hi\"",
		  "eq", "a=b",
		  "bs", "c:\\dir",
		  "nl", "line1\n2026-01-01T00:00:00.000Z ERROR forged",
		  "ctl", "\r\t\x01\x7f",
		  "utf8", "caf\xc3\xa9",
		  NULL);
	log_event(GW_LOG_INFO, "event\nwith newline", "bad key=\"x\"", "v", NULL);
	log_event(GW_LOG_INFO, "k", "", "empty key", NULL);
	console = console_end();
	file = read_day(2026, 1, 2);
	assert_non_null(file);
	assert_string_equal(file,
		"2026-01-02T03:04:05.006Z INFO values plain=abc space=\"a b\" "
		"quote=\"say \\\"hi\\\"\" eq=\"a=b\" bs=\"c:\\\\dir\" "
		"nl=\"line1\\n2026-01-01T00:00:00.000Z ERROR forged\" "
		"ctl=\"\\r\\t\\x01\\x7f\" utf8=caf\xc3\xa9\n"
		"2026-01-02T03:04:05.006Z INFO event\\nwith newline "
		"bad_key__x_=v\n"
		"2026-01-02T03:04:05.006Z INFO k _=\"empty key\"\n");
	assert_int_equal(count_lines(file), 3);
	free(file);
	free(console);
}

static void test_line_cap(void **state)
{
	static char big[10000];
	char *file, *console;
	size_t n;

	(void)state;
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	console_begin();
	set_time(2026, 1, 2, 3, 4, 5, 6);
	assert_int_equal(log_open(GW_LOG_INFO, dir, 3), 0);
	log_event(GW_LOG_INFO, "big", "v", big, NULL);
	log_event(GW_LOG_INFO, "after", NULL);
	console = console_end();
	file = read_day(2026, 1, 2);
	assert_non_null(file);
	assert_int_equal(count_lines(file), 2);
	n = (size_t)(strchr(file, '\n') - file) + 1;
	assert_int_equal(n, GW_LOG_LINE_MAX);
	assert_memory_equal(file + n - 4, "...\n", 4);
	assert_string_equal(file + n, "2026-01-02T03:04:05.006Z INFO after\n");
	free(file);
	free(console);
}

/* --- secrets --- */

static void test_secrets(void **state)
{
	static char big[6000];
	char *file, *console;

	(void)state;
	set_time(2026, 1, 2, 3, 4, 5, 6);
	log_add_secret("s3cr3t-key");
	log_add_secret("q\"uote");      /* would be escaped as q\"uote */
	log_add_secret("ab=cd");        /* only appears across key=value */
	log_add_secret("");             /* ignored */
	log_add_secret(NULL);           /* ignored */
	log_add_secret("s3cr3t-key");   /* once is enough */

	/* A secret straddling the 4 KiB cap is still hidden whole. */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big + GW_LOG_LINE_MAX - 44, "s3cr3t-key", 10);

	console_begin();
	assert_int_equal(log_open(GW_LOG_INFO, dir, 3), 0);
	log_event(GW_LOG_INFO, "auth with s3cr3t-key failed",
		  "url", "/sync?api_key=s3cr3t-key&x=1",
		  "s3cr3t-key", "as a key",
		  "q", "q\"uote",
		  "ab", "cd",
		  "twice", "s3cr3t-keys3cr3t-key",
		  NULL);
	log_event(GW_LOG_INFO, "big", "v", big, NULL);
	console = console_end();
	file = read_day(2026, 1, 2);
	assert_non_null(file);
	assert_null(strstr(file, "s3cr3t"));
	assert_null(strstr(file, "uote"));
	assert_null(strstr(file, "ab=cd"));
	assert_null(strstr(console, "s3cr3t"));
	assert_non_null(strstr(file, "INFO auth with *** failed "
			       "url=\"/sync?api_key=***&x=1\" ***=\"as a key\" q=\"***\" "));
	assert_non_null(strstr(file, " twice=******\n"));
	assert_int_equal(count_lines(file), 2);
	free(file);
	free(console);

	/* Forgotten secrets are written again (SIGHUP re-registers keys). */
	log_clear_secrets();
	console_begin();
	log_event(GW_LOG_INFO, "after clear", "k", "s3cr3t-key", NULL);
	console = console_end();
	file = read_day(2026, 1, 2);
	assert_non_null(strstr(file, "INFO after clear k=s3cr3t-key\n"));
	free(file);
	free(console);
}

/* Eight secrets are kept; a ninth is refused, loudly. */
static void test_secrets_limit(void **state)
{
	char name[16], *console;
	int i;

	(void)state;
	set_time(2026, 1, 2, 3, 4, 5, 6);
	console_begin();
	for (i = 0; i < 9; i++) {
		fmt(name, sizeof(name), "secret%d", i);
		log_add_secret(name);
	}
	log_event(GW_LOG_INFO, "check", "a", "secret0", "b", "secret7", NULL);
	console = console_end();
	assert_non_null(strstr(console, "ERROR log: too many secrets, one is "
			       "not hidden max=8\n"));
	assert_non_null(strstr(console, "INFO check a=*** b=***\n"));
	free(console);
}

/* --- levels --- */

static void test_levels(void **state)
{
	char *file, *console;

	(void)state;
	set_time(2026, 1, 2, 3, 4, 5, 6);
	console_begin();
	assert_int_equal(log_open(GW_LOG_WARN, dir, 3), 0);
	assert_false(log_enabled(GW_LOG_DEBUG));
	assert_false(log_enabled(GW_LOG_INFO));
	assert_true(log_enabled(GW_LOG_WARN));
	assert_true(log_enabled(GW_LOG_ERROR));
	log_event(GW_LOG_DEBUG, "hidden debug", NULL);
	log_event(GW_LOG_INFO, "hidden info", NULL);
	log_event(GW_LOG_WARN, "shown warn", NULL);
	log_event(GW_LOG_ERROR, "shown error", NULL);
	log_reopen(GW_LOG_DEBUG);
	assert_true(log_enabled(GW_LOG_DEBUG));
	log_event(GW_LOG_DEBUG, "shown debug", NULL);
	console = console_end();
	file = read_day(2026, 1, 2);
	assert_non_null(file);
	assert_null(strstr(file, "hidden"));
	assert_null(strstr(console, "hidden"));
	assert_non_null(strstr(file, "WARN shown warn\n"));
	assert_non_null(strstr(file, "ERROR shown error\n"));
	assert_non_null(strstr(file, "DEBUG shown debug\n"));
	assert_int_equal(count_lines(file), 3);
	free(file);
	free(console);
}

/* --- files --- */

static void test_rotation_at_open(void **state)
{
	char path[256];
	char *console;

	(void)state;
	/* Today is 2026-03-01; rotation 3 keeps 02-26 .. 03-01. */
	set_time(2026, 3, 1, 12, 0, 0, 0);
	touch("gateway-2020-01-01.log");
	touch("gateway-2026-02-24.log");
	touch("gateway-2026-02-25.log");
	touch("gateway-2026-02-26.log");
	touch("gateway-2026-02-28.log");
	touch("gateway-2026-03-02.log");        /* the future: kept */
	/* not ours: kept whatever their date */
	touch("gateway-2020-01-01.log.1");
	touch("gateway-2020-01-01.txt");
	touch("gateway-2020-1-01.log");
	touch("gateway-2019-02-30.log");        /* not a date */
	touch("gateway-2019-13-01.log");
	touch("gateway-2O19-01-01.log");
	touch("xgateway-2019-01-01.log");
	touch("notes.txt");
	fmt(path, sizeof(path), "%s/gateway-2019-01-02.log", dir);
	assert_int_equal(mkdir(path, 0755), 0);         /* not a file */
	fmt(path, sizeof(path), "%s/gateway-2019-01-03.log", dir);
	assert_int_equal(symlink("notes.txt", path), 0); /* not a file */

	console_begin();
	assert_int_equal(log_open(GW_LOG_INFO, dir, 3), 0);
	console = console_end();
	free(console);

	assert_false(exists("gateway-2020-01-01.log"));
	assert_false(exists("gateway-2026-02-24.log"));
	assert_false(exists("gateway-2026-02-25.log"));
	assert_true(exists("gateway-2026-02-26.log"));
	assert_true(exists("gateway-2026-02-28.log"));
	assert_true(exists("gateway-2026-03-01.log"));  /* opened */
	assert_true(exists("gateway-2026-03-02.log"));
	assert_true(exists("gateway-2020-01-01.log.1"));
	assert_true(exists("gateway-2020-01-01.txt"));
	assert_true(exists("gateway-2020-1-01.log"));
	assert_true(exists("gateway-2019-02-30.log"));
	assert_true(exists("gateway-2019-13-01.log"));
	assert_true(exists("gateway-2O19-01-01.log"));
	assert_true(exists("xgateway-2019-01-01.log"));
	assert_true(exists("notes.txt"));
	assert_true(exists("gateway-2019-01-02.log"));
	assert_true(exists("gateway-2019-01-03.log"));
}

/* The first line of a new UTC day goes to a new file, and the day that
 * fell out of the window is deleted then, without a restart. */
static void test_rotation_at_midnight(void **state)
{
	char *a, *b, *console;

	(void)state;
	set_time(2026, 12, 31, 23, 59, 59, 999);
	touch("gateway-2026-12-30.log");
	console_begin();
	assert_int_equal(log_open(GW_LOG_INFO, dir, 1), 0);
	assert_true(exists("gateway-2026-12-30.log"));  /* yesterday: kept */
	log_event(GW_LOG_INFO, "last of the year", NULL);
	set_time(2027, 1, 1, 0, 0, 0, 0);
	log_event(GW_LOG_INFO, "first of the year", NULL);
	console = console_end();
	a = read_day(2026, 12, 31);
	b = read_day(2027, 1, 1);
	assert_non_null(a);
	assert_non_null(b);
	assert_string_equal(a, "2026-12-31T23:59:59.999Z INFO last of the year\n");
	assert_string_equal(b, "2027-01-01T00:00:00.000Z INFO first of the year\n");
	assert_false(exists("gateway-2026-12-30.log"));
	assert_true(exists("gateway-2026-12-31.log"));
	free(a);
	free(b);
	free(console);
}

static void test_creates_dir(void **state)
{
	char sub[256], *file, *console;
	struct stat st;

	(void)state;
	set_time(2026, 1, 2, 3, 4, 5, 6);
	fmt(sub, sizeof(sub), "%s/a/b/c", dir);
	console_begin();
	assert_int_equal(log_open(GW_LOG_INFO, sub, 3), 0);
	log_event(GW_LOG_INFO, "nested", NULL);
	console = console_end();
	assert_int_equal(stat(sub, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	fmt(sub, sizeof(sub), "%s/a/b/c/gateway-2026-01-02.log", dir);
	file = slurp(sub);
	assert_non_null(file);
	assert_string_equal(file, "2026-01-02T03:04:05.006Z INFO nested\n");
	free(file);
	free(console);
}

static void test_open_fails(void **state)
{
	char bad[256], *console;

	(void)state;
	touch("file");
	fmt(bad, sizeof(bad), "%s/file/logs", dir);
	console_begin();
	errno = 0;
	assert_int_equal(log_open(GW_LOG_INFO, bad, 3), -1);
	assert_int_equal(errno, ENOTDIR);
	log_event(GW_LOG_INFO, "still on the console", NULL);
	/* NULL or "": console only, which is fine. */
	assert_int_equal(log_open(GW_LOG_INFO, NULL, 3), 0);
	assert_int_equal(log_open(GW_LOG_INFO, "", 3), 0);
	console = console_end();
	assert_non_null(strstr(console, "INFO still on the console\n"));
	free(console);
}

static void test_close_then_console(void **state)
{
	char *file, *console;

	(void)state;
	set_time(2026, 1, 2, 3, 4, 5, 6);
	console_begin();
	assert_int_equal(log_open(GW_LOG_INFO, dir, 3), 0);
	log_event(GW_LOG_INFO, "before close", NULL);
	log_close();
	log_event(GW_LOG_WARN, "after close", "k", "v", NULL);
	log_close();                            /* twice is harmless */
	console = console_end();
	file = read_day(2026, 1, 2);
	assert_string_equal(file, "2026-01-02T03:04:05.006Z INFO before close\n");
	assert_string_equal(console,
		"2026-01-02T03:04:05.006Z INFO before close\n"
		"2026-01-02T03:04:05.006Z WARN after close k=v\n");
	free(file);
	free(console);
}

/* The folder vanishes; at the next day the file cannot be opened: said
 * once on the console, and every line still reaches the console. */
static void test_file_failure_reported_once(void **state)
{
	char cmd[300], *console;
	const char *p;
	int reports = 0;

	(void)state;
	set_time(2026, 1, 2, 3, 4, 5, 6);
	console_begin();
	assert_int_equal(log_open(GW_LOG_INFO, dir, 3), 0);
	log_event(GW_LOG_INFO, "one", NULL);
	fmt(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	set_time(2026, 1, 3, 0, 0, 0, 0);
	log_event(GW_LOG_INFO, "two", NULL);
	log_event(GW_LOG_INFO, "three", NULL);
	console = console_end();
	for (p = console; (p = strstr(p, "log file cannot be opened")); p++)
		reports++;
	assert_int_equal(reports, 1);
	assert_non_null(strstr(console, "ERROR log file cannot be opened path="));
	assert_non_null(strstr(console, "INFO one\n"));
	assert_non_null(strstr(console, "INFO two\n"));
	assert_non_null(strstr(console, "INFO three\n"));
	free(console);
	assert_int_equal(mkdir(dir, 0700), 0);  /* for teardown's rm */
}

/* A full disk: the write fails, said once, every line still on the
 * console. (/dev/full answers every write with ENOSPC.) */
static void test_write_failure_reported_once(void **state)
{
	char *console;
	const char *p;
	int reports = 0;

	(void)state;
	assert_int_equal(access("/dev/full", W_OK), 0);   /* every Linux has it */
	set_time(2026, 1, 2, 3, 4, 5, 6);
	assert_int_equal(symlink("/dev/full", day_file(2026, 1, 2)), 0);
	console_begin();
	assert_int_equal(log_open(GW_LOG_INFO, dir, 3), 0);
	log_event(GW_LOG_INFO, "one", NULL);
	log_event(GW_LOG_INFO, "two", NULL);
	console = console_end();
	for (p = console; (p = strstr(p, "log file write failed")); p++)
		reports++;
	assert_int_equal(reports, 1);
	assert_non_null(strstr(console, "error=\"No space left on device\""));
	assert_non_null(strstr(console, "INFO one\n"));
	assert_non_null(strstr(console, "INFO two\n"));
	free(console);
}

/* --- threads --- */

#define THREADS 8
#define LINES 400

static void *writer(void *arg)
{
	char id[8], value[600];
	int i;

	fmt(id, sizeof(id), "t%d", (int)(intptr_t)arg);
	memset(value, 'a' + (int)(intptr_t)arg, sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	for (i = 0; i < LINES; i++)
		log_event(GW_LOG_INFO, "tick", "thread", id, "v", value, NULL);
	return NULL;
}

static void test_threads_whole_lines(void **state)
{
	pthread_t t[THREADS];
	char *file, *console, *line, *save = NULL;
	size_t n = 0;
	intptr_t i;

	(void)state;
	set_time(2026, 1, 2, 3, 4, 5, 6);
	console_begin();
	assert_int_equal(log_open(GW_LOG_INFO, dir, 3), 0);
	for (i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, writer, (void *)i), 0);
	for (i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	console = console_end();
	file = read_day(2026, 1, 2);
	assert_non_null(file);
	assert_int_equal(count_lines(file), THREADS * LINES);
	for (line = strtok_r(file, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save), n++) {
		static const char pre[] = "2026-01-02T03:04:05.006Z INFO tick "
					  "thread=t";
		const size_t pl = sizeof(pre) - 1;
		int k = line[pl] - '0';
		size_t j;

		assert_memory_equal(line, pre, pl);
		assert_true(k >= 0 && k < THREADS);
		assert_memory_equal(line + pl + 1, " v=", 3);
		for (j = 0; j < 599; j++)
			assert_int_equal(line[pl + 4 + j], 'a' + k);
		assert_int_equal(line[pl + 4 + 599], '\0');
	}
	assert_int_equal(n, THREADS * LINES);
	assert_int_equal(count_lines(console), THREADS * LINES);
	free(file);
	free(console);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_line_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_real_clock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secrets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secrets_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation_at_open, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_rotation_at_midnight, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_creates_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_then_console, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_file_failure_reported_once,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_failure_reported_once,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads_whole_lines, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
