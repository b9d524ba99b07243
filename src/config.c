/*
 * config.c - built-in defaults, the ini file (read with inih), and
 * GATEWAY_API_KEY, validated once into a struct gw_config.
 *
 * How a file is read: inih does the ini grammar (sections, `key = value`,
 * trimming) and calls key_set() for each pair; our own line reader sits in
 * front of it (ini_parse_stream) and gives it one clean line at a time. The
 * reader counts lines (so every error names FILE:LINE), strips comments --
 * `;` or `#` at the start of a line, or after whitespace outside double
 * quotes, so `"a ; b"` stays a value -- strips leading whitespace (no
 * configparser-style continuation lines: an indented line is just a line),
 * and refuses unknown sections even when they are empty.
 *
 * Rules an operator may meet:
 *   - unknown section or key, bad number, out-of-range value: refused with
 *     "FILE:LINE: key 'K' in [S]: REASON (accepted: RANGE)";
 *   - a value may be wrapped in one pair of double quotes, which are removed;
 *   - a key given twice: the later line wins (so does api_key vs websocket);
 *   - relative paths resolve against the file's folder, and the built-in
 *     relative defaults (data/gateway.db, logs) do too when a file is used,
 *     so removing a line that equals its default changes nothing;
 *   - key values are never echoed in a message.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "config.h"
#include "path.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_STORE_PATH "data/gateway.db"
#define DEFAULT_LOG_DIR    "logs"
#define ECHO_MAX           40     /* value bytes quoted back in a message */
#define LINE_MAX_BYTES     (PATH_MAX + 256)  /* a quoted path plus its key */
#define KEY_RANGE          "1..255 printable ASCII characters without spaces"

enum kind {
	K_ADDR,         /* IPv4/IPv6 literal */
	K_INT,          /* whole number into an int */
	K_UINT,         /* whole number into an unsigned */
	K_MB,           /* whole MB into a size_t of bytes */
	K_KEY,          /* a shared key, never echoed */
	K_PATH,         /* a path, made absolute */
	K_LEVEL,
	K_SYNC,
};

struct key_spec {
	const char *section;
	const char *name;
	enum kind kind;
	unsigned long min, max;
	size_t offset;          /* into struct gw_config */
	const char *accepted;   /* the "(accepted: ...)" text */
};

#define OFF(f) offsetof(struct gw_config, f)

static const struct key_spec keys[] = {
	{ "gateway", "listen", K_ADDR, 0, 0, OFF(listen),
	  "an IPv4 or IPv6 address such as 0.0.0.0, 127.0.0.1 or ::" },
	{ "gateway", "http_port", K_INT, 0, 65535, OFF(http_port),
	  "0..65535, 0 = any free port" },
	{ "gateway", "api_key", K_KEY, 0, 0, OFF(api_key), KEY_RANGE },
	{ "gateway", "websocket", K_KEY, 0, 0, OFF(api_key), KEY_RANGE },
	{ "gateway", "mod_key", K_KEY, 0, 0, OFF(mod_key), "empty or " KEY_RANGE },
	{ "gateway", "bot_key", K_KEY, 0, 0, OFF(bot_key), "empty or " KEY_RANGE },
	{ "gateway", "body_size", K_MB, 1, 1024, OFF(body_size), "1..1024 MB" },
	{ "gateway", "queue_max", K_UINT, 1, 100000, OFF(queue_max), "1..100000" },
	{ "gateway", "queue_bytes_max", K_MB, 1, 1024, OFF(queue_bytes_max),
	  "1..1024 MB" },
	{ "gateway", "max_connections", K_UINT, 1, 100000, OFF(max_connections),
	  "1..100000" },
	{ "gateway", "handshake_timeout", K_INT, 1, 86400, OFF(handshake_timeout),
	  "1..86400 seconds" },
	{ "gateway", "ping_interval", K_INT, 1, 86400, OFF(ping_interval),
	  "1..86400 seconds" },
	{ "gateway", "read_timeout", K_INT, 1, 86400, OFF(read_timeout),
	  "1..86400 seconds" },
	{ "gateway", "write_timeout", K_INT, 1, 86400, OFF(write_timeout),
	  "1..86400 seconds" },
	{ "gateway", "bot_probe_timeout", K_INT, 1, 86400, OFF(bot_probe_timeout),
	  "1..86400 seconds" },
	{ "gateway", "dedup_window", K_UINT, 1, 1000000, OFF(dedup_window),
	  "1..1000000" },
	{ "gateway", "rate_limit", K_UINT, 0, 1000000, OFF(rate_limit),
	  "0..1000000 messages/s, 0 = off" },
	{ "gateway", "history", K_UINT, 0, 100000, OFF(history),
	  "0..100000 messages per channel and direction, 0 = none" },
	{ "gateway", "history_bytes_max", K_MB, 1, 1024, OFF(history_bytes_max),
	  "1..1024 MB" },
	{ "gateway", "request_timeout", K_INT, 1, 86400, OFF(request_timeout),
	  "1..86400 seconds" },
	{ "gateway", "max_per_ip", K_UINT, 1, 100000, OFF(max_per_ip), "1..100000" },
	{ "gateway", "output_bytes_max", K_MB, 1, 1024, OFF(output_bytes_max),
	  "1..1024 MB" },
	{ "gateway", "worker_idle", K_INT, 1, 86400, OFF(worker_idle), "1..86400 seconds" },
	{ "store", "path", K_PATH, 0, 0, OFF(store_path),
	  "a file path, relative to this file's folder; empty = memory only" },
	{ "store", "sync", K_SYNC, 0, 0, OFF(store_sync), "off, normal, full" },
	{ "log", "level", K_LEVEL, 0, 0, OFF(log_level),
	  "debug, info, warn, error" },
	{ "log", "directory", K_PATH, 0, 0, OFF(log_dir),
	  "a folder path, relative to this file's folder; empty = console only" },
	{ "log", "rotation", K_INT, 1, 3650, OFF(log_rotation), "1..3650 days" },
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const char *const sections[] = { "gateway", "store", "log" };
#define SECTIONS_ACCEPTED "[gateway], [store], [log]"

static const char *const level_names[] = { "debug", "info", "warn", "error" };
static const char *const sync_names[] = { "off", "normal", "full" };

/* One config_load() call. */
struct parse {
	struct gw_config cfg;   /* working copy, copied out only on success */
	const char *path;       /* as the caller gave it: used in messages */
	char dir[PATH_MAX];     /* the file's folder, absolute */
	FILE *fp;
	char *line;             /* getline buffer */
	size_t cap;
	int lineno;             /* of the line inih is working on */
	int err_line;           /* line of the first error we found, 0 = none */
	int read_failed;        /* errno of a read error, 0 = none */
	char err[1024];
};


/* --- messages --- */

/* Records the first error only: inih goes on after a failed handler, and a
 * later line must not hide the first problem. */
__attribute__((format(printf, 2, 3)))
static int parse_fail(struct parse *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->err_line)
		return 0;
	n = snprintf(p->err, sizeof(p->err), "%s:%d: ", p->path, p->lineno);
	if (n < 0 || (size_t)n >= sizeof(p->err))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(p->err + n, sizeof(p->err) - (size_t)n, fmt, ap);
	va_end(ap);
	p->err_line = p->lineno;
	return 0;
}

/* 'value' for a message: printable ASCII kept, other bytes as '?', long
 * values cut with "...". A value can be anything the operator typed, and
 * the message may end up in a log or a terminal. */
static void echo(char *out, size_t outlen, const char *v)
{
	size_t i, o = 0;

	if (outlen < 8)
		return;
	out[o++] = '\'';
	for (i = 0; v[i] && o + 5 < outlen; i++) {
		if (i == ECHO_MAX) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		out[o++] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
	}
	out[o++] = '\'';
	out[o] = '\0';
}

static int key_fail(struct parse *p, const struct key_spec *k,
		    const char *name, const char *reason, const char *value)
{
	char shown[ECHO_MAX + 8];

	if (!value)
		return parse_fail(p, "key '%s' in [%s]: %s (accepted: %s)",
				  name, k->section, reason, k->accepted);
	echo(shown, sizeof(shown), value);
	return parse_fail(p, "key '%s' in [%s]: %s %s (accepted: %s)",
			  name, k->section, shown, reason, k->accepted);
}

/* --- values --- */

/* 0 ok, -1 not a whole number, -2 out of range. Digits only: no sign, no
 * spaces, no hex, no trailing junk; overflow counts as out of range. */
static int parse_number(const char *s, unsigned long min, unsigned long max,
			unsigned long *out)
{
	unsigned long v = 0;
	int big = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (max - (unsigned long)(*s - '0')) / 10)
			big = 1;        /* keep scanning: junk still wins */
		else
			v = v * 10 + (unsigned long)(*s - '0');
	}
	if (big || v < min || v > max)
		return -2;
	*out = v;
	return 0;
}

static int key_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > GW_KEY_MAX - 1)
		return 0;
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e)
			return 0;
	return 1;
}

static int name_index(const char *const *names, size_t n, const char *v)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcasecmp(names[i], v) == 0)
			return (int)i;
	return -1;
}

/* Applies one value; returns 1, or 0 after parse_fail(). */
static int key_apply(struct parse *p, const struct key_spec *k,
		     const char *name, const char *value)
{
	char *field = (char *)&p->cfg + k->offset;
	char tmp[PATH_MAX];
	unsigned long n;
	int i;

	switch (k->kind) {
	case K_ADDR: {
		unsigned char buf[16];

		if (!*value)
			return key_fail(p, k, name, "value is empty", NULL);
		if (strlen(value) >= sizeof(p->cfg.listen) ||
		    (inet_pton(AF_INET, value, buf) != 1 &&
		     inet_pton(AF_INET6, value, buf) != 1))
			return key_fail(p, k, name,
					"is not an IPv4 or IPv6 address", value);
		memcpy(p->cfg.listen, value, strlen(value) + 1);   /* fits */
		return 1;
	}
	case K_INT:
	case K_UINT:
	case K_MB:
		if (!*value)
			return key_fail(p, k, name, "value is empty", NULL);
		switch (parse_number(value, k->min, k->max, &n)) {
		case -1:
			return key_fail(p, k, name, "is not a whole number", value);
		case -2:
			return key_fail(p, k, name, "is out of range", value);
		}
		if (k->kind == K_INT)
			*(int *)(void *)field = (int)n;
		else if (k->kind == K_UINT)
			*(unsigned *)(void *)field = (unsigned)n;
		else
			*(size_t *)(void *)field = (size_t)n * GW_MB;
		return 1;
	case K_KEY:
		/* api_key may be empty here: GATEWAY_API_KEY can still supply
		 * it, and config_finish() refuses an empty one. */
		if (*value && !key_valid(value))
			return key_fail(p, k, name, "value is not a valid key", NULL);
		memcpy(field, value, strlen(value) + 1);   /* fits: checked */
		return 1;
	case K_PATH:
		for (i = 0; value[i]; i++)
			if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f)
				return key_fail(p, k, name,
						"contains a control character", value);
		if (!*value) {
			field[0] = '\0';
			return 1;
		}
		if (path_absolute(tmp, sizeof(tmp), p->dir, value) < 0)
			return key_fail(p, k, name,
					"is too long once made absolute", value);
		memcpy(field, tmp, strlen(tmp) + 1);
		return 1;
	case K_LEVEL:
		i = name_index(level_names, 4, value);
		if (i < 0)
			return key_fail(p, k, name, "is not a log level", value);
		p->cfg.log_level = (enum gw_log_level)i;
		return 1;
	case K_SYNC:
		i = name_index(sync_names, 3, value);
		if (i < 0)
			return key_fail(p, k, name, "is not a sync mode", value);
		p->cfg.store_sync = (enum gw_sync)i;
		return 1;
	}
	return 0;
}

static int section_known(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
		if (strcmp(sections[i], s) == 0)
			return 1;
	return 0;
}

/* "listen, http_port, ..." for the section, for unknown-key messages. */
static void keys_list(char *out, size_t outlen, const char *section)
{
	size_t i, o = 0;
	int n;

	out[0] = '\0';
	for (i = 0; i < NKEYS; i++) {
		if (strcmp(keys[i].section, section) != 0)
			continue;
		n = snprintf(out + o, outlen - o, "%s%s", o ? ", " : "",
			     keys[i].name);
		if (n < 0 || (size_t)n >= outlen - o)
			return;
		o += (size_t)n;
	}
}

/* inih handler: one `name = value` in `section`. Returns 1 to go on, 0 on
 * error (inih then reports this line). */
static int key_set(void *user, const char *section, const char *name,
		   const char *value)
{
	struct parse *p = user;
	const struct key_spec *k = NULL;
	char shown[ECHO_MAX + 8], list[512], unq[LINE_MAX_BYTES];
	size_t i, n;

	if (p->err_line)
		return 0;
	if (!*section) {
		echo(shown, sizeof(shown), name);
		return parse_fail(p, "key %s is outside any section (accepted: "
				  SECTIONS_ACCEPTED ")", shown);
	}
	if (!section_known(section)) {
		echo(shown, sizeof(shown), section);
		return parse_fail(p, "unknown section %s (accepted: "
				  SECTIONS_ACCEPTED ")", shown);
	}
	for (i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].section, section) == 0 &&
		    strcmp(keys[i].name, name) == 0)
			k = &keys[i];
	if (!k) {
		echo(shown, sizeof(shown), name);
		keys_list(list, sizeof(list), section);
		return parse_fail(p, "unknown key %s in [%s] (accepted: %s)",
				  shown, section, list);
	}

	/* One pair of surrounding double quotes is removed, as in TOML. */
	n = strlen(value);
	if (n >= sizeof(unq))
		return key_fail(p, k, name, "value is too long", NULL);
	memcpy(unq, value, n + 1);
	if (n > 0 && unq[0] == '"') {
		if (n < 2 || unq[n - 1] != '"')
			return k->kind == K_KEY ?
				key_fail(p, k, name, "value has no closing "
					 "double quote", NULL) :
				key_fail(p, k, name, "has no closing double "
					 "quote", value);
		unq[n - 1] = '\0';
		memmove(unq, unq + 1, n - 1);
	}
	return key_apply(p, k, name, unq);
}

/* --- the line reader in front of inih --- */

/* Start of an inline comment: ';' or '#' after a space or tab, outside
 * double quotes. Returns the offset to cut at, or len. */
static size_t comment_start(const char *s, size_t len)
{
	size_t i;
	int quoted = 0;

	for (i = 0; i < len; i++) {
		if (s[i] == '"')
			quoted = !quoted;
		else if (!quoted && (s[i] == ';' || s[i] == '#') && i > 0 &&
			 (s[i - 1] == ' ' || s[i - 1] == '\t'))
			return i;
	}
	return len;
}

__attribute__((format(printf, 2, 3)))
static char *reader_fail(struct parse *p, const char *fmt, ...)
{
	va_list ap;
	char reason[256];

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	parse_fail(p, "syntax error: %s", reason);
	return NULL;    /* ends the parse */
}

/* ini_reader: hands inih the next line, cleaned (see the top comment).
 * Returning NULL ends the parse, as at end of file. */
static char *line_next(char *str, int num, void *stream)
{
	struct parse *p = stream;
	ssize_t got;
	size_t len, cut;
	char *s, *end;

	if (p->err_line)
		return NULL;    /* first error found: stop there */
	errno = 0;
	got = getline(&p->line, &p->cap, p->fp);
	if (got < 0) {
		if (ferror(p->fp))
			p->read_failed = errno ? errno : EIO;
		return NULL;
	}
	p->lineno++;
	len = (size_t)got;
	if (memchr(p->line, '\0', len))
		return reader_fail(p, "NUL byte in line");
	while (len && (p->line[len - 1] == '\n' || p->line[len - 1] == '\r'))
		p->line[--len] = '\0';
	s = p->line;
	if (p->lineno == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
		s += 3;
		len -= 3;
	}
	while (len && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	if (*s == ';' || *s == '#')
		len = 0;
	cut = comment_start(s, len);
	while (cut && (s[cut - 1] == ' ' || s[cut - 1] == '\t'))
		cut--;
	s[cut] = '\0';

	if (*s == '[') {
		end = strchr(s, ']');
		if (!end)
			return reader_fail(p, "no ']' after the section name");
		if (end[1])
			return reader_fail(p, "text after ']'");
		*end = '\0';
		if (!section_known(s + 1)) {
			char shown[ECHO_MAX + 8];

			echo(shown, sizeof(shown), s + 1);
			parse_fail(p, "unknown section %s (accepted: "
				   SECTIONS_ACCEPTED ")", shown);
			return NULL;
		}
		*end = ']';
	} else if (*s && !strpbrk(s, "=:")) {
		return reader_fail(p, "expected 'key = value'");
	}
	if (num < 2 || cut + 2 > (size_t)num)
		return reader_fail(p, "line is longer than %d bytes", num - 2);
	memcpy(str, s, cut);
	str[cut] = '\n';
	str[cut + 1] = '\0';
	return str;
}

/* --- paths --- */

/* --- public --- */

void config_defaults(struct gw_config *cfg, const char *base_dir)
{
	char cwd[PATH_MAX], base[PATH_MAX];

	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->listen, sizeof(cfg->listen), "0.0.0.0");
	cfg->http_port = 3333;
	snprintf(cfg->api_key, sizeof(cfg->api_key), "gateway");
	cfg->body_size = 2 * GW_MB;
	cfg->queue_max = 8;
	cfg->queue_bytes_max = 64 * GW_MB;
	cfg->max_connections = 1024;
	cfg->handshake_timeout = 60;
	cfg->ping_interval = 30;
	cfg->read_timeout = 60;
	cfg->write_timeout = 5;
	cfg->bot_probe_timeout = 5;
	cfg->dedup_window = 1024;
	cfg->rate_limit = 0;
	cfg->history = 1000;
	cfg->history_bytes_max = 64 * GW_MB;
	cfg->request_timeout = 10;
	cfg->max_per_ip = 256;
	cfg->output_bytes_max = 256 * GW_MB;
	cfg->worker_idle = 60;
	cfg->store_sync = GW_SYNC_NORMAL;
	cfg->log_level = GW_LOG_INFO;
	cfg->log_rotation = 3;

	/* Never fails: without a usable base, the paths stay relative to the
	 * working directory, which is where they would resolve anyway. */
	if (!getcwd(cwd, sizeof(cwd)))
		snprintf(cwd, sizeof(cwd), ".");
	if (!base_dir || !*base_dir)
		base_dir = cwd;
	if (cwd[0] != '/' ||
	    path_absolute(base, sizeof(base), cwd, base_dir) < 0)
		snprintf(base, sizeof(base), "%s", base_dir);
	if (base[0] != '/' ||
	    path_absolute(cfg->store_path, sizeof(cfg->store_path), base,
			  DEFAULT_STORE_PATH) < 0 ||
	    path_absolute(cfg->log_dir, sizeof(cfg->log_dir), base,
			  DEFAULT_LOG_DIR) < 0) {
		snprintf(cfg->store_path, sizeof(cfg->store_path), "%s",
			 DEFAULT_STORE_PATH);
		snprintf(cfg->log_dir, sizeof(cfg->log_dir), "%s",
			 DEFAULT_LOG_DIR);
	}
}

int config_load(struct gw_config *cfg, const char *path, char *err,
		size_t errlen)
{
	struct parse *p;
	char cwd[PATH_MAX], *slash;
	int saved_max_line, ret = -1, rc;
	bool saved_inline;

	p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		return -1;
	}
	p->cfg = *cfg;
	p->path = path;

	errno = 0;
	if (!getcwd(cwd, sizeof(cwd)) ||
	    path_absolute(p->cfg.source, sizeof(p->cfg.source), cwd, path) < 0) {
		snprintf(err, errlen, "%s: cannot read: %s", path,
			 strerror(errno ? errno : ENAMETOOLONG));
		goto out;
	}
	snprintf(p->dir, sizeof(p->dir), "%s", p->cfg.source);
	slash = strrchr(p->dir, '/');
	if (slash == p->dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';

	/* As if the default lines were in this file (see the top comment). */
	if (path_absolute(p->cfg.store_path, sizeof(p->cfg.store_path), p->dir,
			  DEFAULT_STORE_PATH) < 0 ||
	    path_absolute(p->cfg.log_dir, sizeof(p->cfg.log_dir), p->dir,
			  DEFAULT_LOG_DIR) < 0) {
		snprintf(err, errlen, "%s: cannot read: %s", path,
			 strerror(ENAMETOOLONG));
		goto out;
	}

	p->fp = fopen(path, "re");
	if (!p->fp) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		goto out;
	}

	/* Debian's libinih exports its build options as variables. We want
	 * lines long enough for a 255-byte key or a PATH_MAX path (the default
	 * is 200), and no inline comments of its own: line_next() already
	 * removed them, quote-aware, and inih would cut "a ; b" in two. The
	 * buffer is a VLA on inih's stack, hence a bounded size. */
	saved_max_line = ini_max_line;
	saved_inline = ini_allow_inline_comments;
	ini_max_line = LINE_MAX_BYTES;
	ini_allow_inline_comments = false;
	rc = ini_parse_stream(line_next, p, key_set, p);
	ini_max_line = saved_max_line;
	ini_allow_inline_comments = saved_inline;

	if (rc > 0 && (!p->err_line || rc < p->err_line)) {
		/* inih found a line it could not parse before any of ours. */
		snprintf(err, errlen, "%s:%d: syntax error", path, rc);
	} else if (p->err_line) {
		snprintf(err, errlen, "%s", p->err);
	} else if (p->read_failed) {
		snprintf(err, errlen, "%s: cannot read: %s", path,
			 strerror(p->read_failed));
	} else if (rc < 0) {
		snprintf(err, errlen, "%s: cannot read: %s", path,
			 strerror(ENOMEM));
	} else {
		*cfg = p->cfg;
		ret = 0;
	}
out:
	if (p->fp)
		fclose(p->fp);
	/* The file may hold keys: leave no copy in freed memory. */
	if (p->line)
		explicit_bzero(p->line, p->cap);
	free(p->line);
	explicit_bzero(p, sizeof(*p));
	free(p);
	return ret;
}

int config_finish(struct gw_config *cfg, char *err, size_t errlen)
{
	const char *env = getenv("GATEWAY_API_KEY");
	const char *src = cfg->source[0] ? cfg->source : "built-in defaults";

	if (env) {
		if (!*env) {
			snprintf(err, errlen, "GATEWAY_API_KEY: value is empty "
				 "(accepted: " KEY_RANGE ")");
			return -1;
		}
		if (!key_valid(env)) {
			snprintf(err, errlen, "GATEWAY_API_KEY: value is not a "
				 "valid key (accepted: " KEY_RANGE ")");
			return -1;
		}
		snprintf(cfg->api_key, sizeof(cfg->api_key), "%s", env);
	}
	if (!cfg->api_key[0]) {
		snprintf(err, errlen, "api_key is empty: set a key in [gateway] "
			 "or GATEWAY_API_KEY (accepted: " KEY_RANGE ")");
		return -1;
	}
	/* A pong answers a ping: with read_timeout <= ping_interval an idle
	 * but healthy peer would be dropped before it is even pinged. */
	if (cfg->read_timeout <= cfg->ping_interval) {
		snprintf(err, errlen, "%s: key 'read_timeout' in [gateway]: %d is "
			 "not greater than ping_interval %d (accepted: "
			 "read_timeout > ping_interval)", src, cfg->read_timeout,
			 cfg->ping_interval);
		return -1;
	}
	return 0;
}

int config_find(const char *exe_dir, char *out, size_t outlen)
{
	struct stat st;
	int n;

	if (!exe_dir || !*exe_dir)
		return 0;
	n = snprintf(out, outlen, "%s%sgateway.ini", exe_dir,
		     exe_dir[strlen(exe_dir) - 1] == '/' ? "" : "/");
	if (n < 0 || (size_t)n >= outlen)
		goto none;
	if (stat(out, &st) == 0 && S_ISREG(st.st_mode))
		return 1;
none:
	if (outlen)
		out[0] = '\0';
	return 0;
}

const char *config_level_name(enum gw_log_level level)
{
	if ((unsigned)level < sizeof(level_names) / sizeof(level_names[0]))
		return level_names[level];
	return "?";
}

const char *config_sync_name(enum gw_sync sync)
{
	if ((unsigned)sync < sizeof(sync_names) / sizeof(sync_names[0]))
		return sync_names[sync];
	return "?";
}
