/*
 * metrics.c - counters and the Prometheus text format (version 0.0.4).
 */
#include <stdarg.h>
#include <stdio.h>

#include "metrics.h"

static uint64_t counters[GW_M_COUNT];

void metrics_inc(enum gw_counter c)
{
	__atomic_add_fetch(&counters[c], 1, __ATOMIC_RELAXED);
}

uint64_t metrics_get(enum gw_counter c)
{
	return __atomic_load_n(&counters[c], __ATOMIC_RELAXED);
}

struct out {
	char *buf;
	size_t cap, len;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(o->len < o->cap ? o->buf + o->len : NULL, o->len < o->cap ? o->cap - o->len : 0,
	              fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len += (size_t)n;
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

size_t metrics_render(const struct gw_stats *st, int64_t uptime_s, char *buf, size_t cap)
{
	static const struct { enum gw_counter c; const char *reason; } rejects[] = {
		{ GW_M_REJECT_400, "400" }, { GW_M_REJECT_401, "401" }, { GW_M_REJECT_403, "403" },
		{ GW_M_REJECT_409, "409" }, { GW_M_REJECT_429, "429" }, { GW_M_REJECT_503, "503" },
		{ GW_M_REJECT_1002, "1002" }, { GW_M_REJECT_1009, "1009" },
	};
	struct out o = { buf, cap, 0 };
	family(&o, "homestead_connections", "gauge", "Open websocket connections by role.");
	put(&o, "homestead_connections{role=\"mod\"} %u\n", st->mods);
	put(&o, "homestead_connections{role=\"bot\"} %u\n", st->bots);
	put(&o, "homestead_connections{role=\"pending\"} %u\n", st->pending);
	family(&o, "homestead_connections_total", "counter", "Websockets opened since start.");
	put(&o, "homestead_connections_total %llu\n",
	    (unsigned long long)metrics_get(GW_M_CONNECTIONS));
	family(&o, "homestead_messages_total", "counter",
	       "Messages accepted, by direction and ack status.");
	for (int d = 0; d < 2; d++)
		for (int s = 0; s < 3; s++)
			put(&o, "homestead_messages_total{direction=\"%s\",status=\"%s\"} %llu\n",
			    d == GW_TO_MOD ? "to_mod" : "to_bot", proto_status_name((enum gw_status)s),
			    (unsigned long long)st->msgs[d][s]);
	family(&o, "homestead_duplicates_total", "counter",
	       "Resent msg_ids acknowledged again but not routed.");
	put(&o, "homestead_duplicates_total %llu\n", (unsigned long long)st->duplicates);
	family(&o, "homestead_queue_messages", "gauge", "Messages waiting in queues.");
	put(&o, "homestead_queue_messages %llu\n", (unsigned long long)st->queued_msgs);
	family(&o, "homestead_queue_bytes", "gauge", "Bytes held by queued messages.");
	put(&o, "homestead_queue_bytes %llu\n", (unsigned long long)st->queued_bytes);
	family(&o, "homestead_dropped_total", "counter",
	       "Queued messages overwritten by newer ones (queue_max).");
	put(&o, "homestead_dropped_total %llu\n", (unsigned long long)st->dropped);
	family(&o, "homestead_rejected_total", "counter",
	       "Requests, handshakes, messages or frames refused, by code.");
	for (size_t i = 0; i < sizeof(rejects) / sizeof(rejects[0]); i++)
		put(&o, "homestead_rejected_total{reason=\"%s\"} %llu\n", rejects[i].reason,
		    (unsigned long long)metrics_get(rejects[i].c));
	family(&o, "homestead_write_timeouts_total", "counter",
	       "Peers dropped because they stopped reading.");
	put(&o, "homestead_write_timeouts_total %llu\n",
	    (unsigned long long)metrics_get(GW_M_WRITE_TIMEOUTS));
	family(&o, "homestead_read_timeouts_total", "counter", "Peers dropped for silence.");
	put(&o, "homestead_read_timeouts_total %llu\n",
	    (unsigned long long)metrics_get(GW_M_READ_TIMEOUTS));
	family(&o, "homestead_paced_total", "counter",
	       "Times a mod was held back (not read) while a slow bot caught up.");
	put(&o, "homestead_paced_total %llu\n", (unsigned long long)metrics_get(GW_M_PACED));
	family(&o, "homestead_uptime_seconds", "gauge", "Seconds since start.");
	put(&o, "homestead_uptime_seconds %lld\n", (long long)uptime_s);
	return o.len;
}
