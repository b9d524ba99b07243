/*
 * metrics.h - event counters for /metrics: atomic, lock-free, global, and
 * the Prometheus text of them together with the registry's gauges (which
 * the caller reads with registry_stats: metrics knows no other module).
 */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "protocol.h"

enum gw_counter {
	GW_M_REJECT_400,        /* malformed handshake or message */
	GW_M_REJECT_401,        /* no or wrong key */
	GW_M_REJECT_403,        /* key not allowed for the role */
	GW_M_REJECT_409,        /* bot slot taken */
	GW_M_REJECT_429,        /* rate limit */
	GW_M_REJECT_503,        /* max_connections */
	GW_M_REJECT_1009,       /* message over body_size */
	GW_M_REJECT_1002,       /* protocol violation */
	GW_M_WRITE_TIMEOUTS,    /* peers dropped because they stopped reading */
	GW_M_READ_TIMEOUTS,     /* peers dropped for silence */
	GW_M_PACED,             /* times a mod was not read while the bot caught up */
	GW_M_CONNECTIONS,       /* websockets opened */
	GW_M_COUNT
};

void metrics_inc(enum gw_counter c);
uint64_t metrics_get(enum gw_counter c);

/* Gauges and message counts, as the registry has them (registry_stats). */
struct gw_stats {
	unsigned mods, bots, pending;  /* connections by role; not yet handshaken */
	unsigned channels;
	uint64_t queued_msgs, queued_bytes;
	uint64_t msgs[2][3];           /* [enum gw_dir][enum gw_status] */
	uint64_t dropped, duplicates;
};

/* Writes the whole Prometheus text exposition into buf: the counters here
 * and st. Returns its length, or the length needed when it does not fit
 * (like snprintf). */
size_t metrics_render(const struct gw_stats *st, int64_t uptime_s, char *buf, size_t cap);

#endif
