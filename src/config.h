/*
 * config.h - the gateway's configuration: built-in defaults, an ini file read
 * with inih, GATEWAY_API_KEY from the environment, validated once.
 *
 * The result is a plain struct that main() fills before any thread starts and
 * treats as read-only afterwards (SIGHUP re-reads keys into a fresh copy).
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <limits.h>
#include <stddef.h>

#define GW_KEY_MAX 256          /* longest accepted key, bytes */
#define GW_MB ((size_t)1048576)

enum gw_log_level { GW_LOG_DEBUG, GW_LOG_INFO, GW_LOG_WARN, GW_LOG_ERROR };
enum gw_sync { GW_SYNC_OFF, GW_SYNC_NORMAL, GW_SYNC_FULL };

struct gw_config {
	/* [gateway] */
	char listen[64];                 /* IPv4 or IPv6 literal */
	int http_port;                   /* 1..65535 (0 = any free port) */
	char api_key[GW_KEY_MAX];
	char mod_key[GW_KEY_MAX];        /* "" = not set */
	char bot_key[GW_KEY_MAX];        /* "" = not set */
	size_t body_size;                /* bytes (configured in MB) */
	unsigned queue_max;
	size_t queue_bytes_max;          /* bytes (configured in MB) */
	unsigned max_connections;
	int handshake_timeout;           /* seconds, all durations */
	int ping_interval;
	int read_timeout;
	int write_timeout;
	int bot_probe_timeout;
	unsigned dedup_window;
	unsigned rate_limit;             /* messages/s, 0 = off */
	unsigned history;                /* delivered messages kept per stream for resume */
	size_t history_bytes_max;        /* bytes (configured in MB) over all histories */
	int request_timeout;             /* seconds for a whole HTTP request head */
	unsigned max_per_ip;             /* sockets at once from one address */
	size_t output_bytes_max;         /* bytes (configured in MB) unsent over all peers */
	int worker_idle;                 /* seconds: a CivetWeb worker not needed this long ends */
	/* [store] */
	char store_path[PATH_MAX];       /* absolute, or "" = memory only */
	enum gw_sync store_sync;
	/* [log] */
	enum gw_log_level log_level;
	char log_dir[PATH_MAX];          /* absolute */
	int log_rotation;                /* days */
	/* where it came from: the file read, or "" for built-in defaults */
	char source[PATH_MAX];
};

/* Fills *cfg with the built-in defaults; relative paths resolve against
 * base_dir (the executable's folder). Never fails. */
void config_defaults(struct gw_config *cfg, const char *base_dir);

/* Reads the ini file at path over the defaults already in *cfg, resolving
 * relative paths against the file's folder (the built-in relative defaults
 * data/gateway.db and logs too, when the file does not set them). A key
 * given twice: the later line wins. On error returns -1, leaves *cfg as it
 * was, and writes one line (no '\n') to err, e.g.
 *   "FILE:LINE: key 'K' in [S]: 'VALUE' REASON (accepted: RANGE)"
 *   "FILE:LINE: unknown key 'K' in [S] (accepted: k1, k2, ...)"
 *   "FILE:LINE: syntax error[: REASON]"    "FILE: cannot read: STRERROR"
 * Key values (api_key, websocket, mod_key, bot_key) are never shown.
 * Returns 0 on success. Not thread-safe (call before threads start). */
int config_load(struct gw_config *cfg, const char *path, char *err, size_t errlen);

/* Applies GATEWAY_API_KEY if set (set but empty or invalid is an error),
 * then checks what only the whole config can tell: a non-empty api_key,
 * read_timeout > ping_interval. Returns 0, or -1 with one line in err. */
int config_finish(struct gw_config *cfg, char *err, size_t errlen);

/* The config file to use when no -c is given: "gateway.ini" beside the
 * executable if it exists. Writes it to out and returns 1, or returns 0 when
 * there is none (run on defaults). exe_dir is the executable's folder. */
int config_find(const char *exe_dir, char *out, size_t outlen);

/* Names for logs and --check-config output. */
const char *config_level_name(enum gw_log_level level);
const char *config_sync_name(enum gw_sync sync);

#endif
