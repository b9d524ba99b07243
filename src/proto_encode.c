/*
 * proto_encode.c - the bytes that go out: an accepted message's body, built
 * once into the block that also holds its struct gw_msg (proto_msg_build,
 * proto_msg_new), its frames, and the small replies and events.
 *
 * DESIGN
 * - An accepted message is serialized exactly once, straight into the one
 *   allocation that also holds struct gw_msg and its id strings. The
 *   outbound object is built from the validated values only: unknown
 *   top-level fields are dropped, `author` carries just id and name, and
 *   `meta` passes through as parsed (key order kept; reals printed with the
 *   fewest digits, 15 to 17, that keep every value exact).
 * - Send-time fields (forwarded_at, dropped) are appended with memcpy by
 *   proto_msg_frame, so a delivery never touches the JSON library.
 */
#include "proto_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* Bounded writer for the small replies: remembers overflow instead of
 * checking every call site. */
struct out {
	char *p;
	size_t cap;
	size_t len;
	int full;
};

/* Appends a string literal. */
#define OUT_LIT(o, lit) out_raw((o), (lit), sizeof(lit) - 1)

/* Growing buffer that json_dump_callback appends to. */
struct dump_buf {
	char *p;
	size_t len;
	size_t cap;
};

static int real_precision(json_t *v);
static int dump_reserve(struct dump_buf *d, size_t size);
static int dump_append(const char *buf, size_t size, void *arg);
static int dump_put(struct dump_buf *d, const char *s, size_t n);
static char *put_escape(char *w, unsigned char c);
static int dump_str(struct dump_buf *d, const char *s, size_t n);
static char *put_utf8(char *w, unsigned cp);
static int dump_json_text(struct dump_buf *d, const char *s, size_t n);
static int dump_text(struct dump_buf *d, const struct text *t);
static void out_raw(struct out *o, const char *s, size_t n);
static void out_str(struct out *o, const char *s);
static size_t out_end(struct out *o);
static size_t put_u64(char *p, uint64_t v);

/* ---- the message body ---------------------------------------------------- */

/* Smallest printf precision (15..17) that reproduces every real in v, so
 * that 0.1 in meta goes out as 0.1 and not 0.10000000000000001 (Jansson's
 * default of 17 digits), while no value changes. Depth is bounded by the
 * pre-parse scan. */
static int real_precision(json_t *v)
{
	const char *key;
	json_t *item;
	size_t i;
	int p = 15, q;

	switch (json_typeof(v)) {
	case JSON_REAL: {
		double d = json_real_value(v);
		char buf[40];

		for (; p < 17; p++) {
			snprintf(buf, sizeof(buf), "%.*g", p, d);
			if (strtod(buf, NULL) == d)
				break;
		}
		return p;
	}
	case JSON_OBJECT:
		json_object_foreach(v, key, item) {
			q = real_precision(item);
			if (q > p)
				p = q;
		}
		return p;
	case JSON_ARRAY:
		json_array_foreach(v, i, item) {
			q = real_precision(item);
			if (q > p)
				p = q;
		}
		return p;
	default:
		return p;
	}
}

/* Writes the compact JSON of v into dst, or "null" if v is NULL or its text
 * does not fit in cap - 1 bytes. Always NUL-terminated if cap > 0 (empty if
 * cap < 5). */
void proto_msg_id_echo(json_t *v, char *dst, size_t cap)
{
	size_t n;

	if (dst == NULL || cap == 0)
		return;
	/* A string's JSON text is at least its length + 2: skip the dump. */
	if (v != NULL && !(json_is_string(v) && json_string_length(v) + 2 > cap - 1)) {
		n = json_dumpb(v, dst, cap - 1, JSON_COMPACT | JSON_ENCODE_ANY |
		               JSON_REAL_PRECISION(real_precision(v)));
		if (n > 0 && n <= cap - 1) {
			dst[n] = '\0';
			return;
		}
	}
	if (cap >= 5)
		memcpy(dst, "null", 5);
	else
		dst[0] = '\0';
}

/* Room for size more bytes; 0 or -1 (ENOMEM). */
static int dump_reserve(struct dump_buf *d, size_t size)
{
	size_t cap = d->cap;
	char *p;

	if (size <= cap - d->len)
		return 0;
	while (size > cap - d->len) {
		if (cap > SIZE_MAX / 2)
			return -1;
		cap *= 2;
	}
	p = realloc(d->p, cap);
	if (p == NULL)
		return -1;
	d->p = p;
	d->cap = cap;
	return 0;
}

static int dump_append(const char *buf, size_t size, void *arg)
{
	struct dump_buf *d = arg;

	if (dump_reserve(d, size) < 0)
		return -1;
	memcpy(d->p + d->len, buf, size);
	d->len += size;
	return 0;
}

/* Appends size bytes; 0 or -1 (ENOMEM). */
static int dump_put(struct dump_buf *d, const char *s, size_t n)
{
	return dump_append(s, n, d);
}

#define DUMP_LIT(d, lit) dump_put((d), (lit), sizeof(lit) - 1)

/* Appends the canonical escape of one byte that needs one: '"', '\\' or a
 * control byte - the way Jansson's compact output writes it. */
static char *put_escape(char *w, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";

	*w++ = '\\';
	switch (c) {
	case '"':  *w++ = '"'; break;
	case '\\': *w++ = '\\'; break;
	case '\b': *w++ = 'b'; break;
	case '\f': *w++ = 'f'; break;
	case '\n': *w++ = 'n'; break;
	case '\r': *w++ = 'r'; break;
	case '\t': *w++ = 't'; break;
	default:
		*w++ = 'u';
		*w++ = '0';
		*w++ = '0';
		*w++ = hex[c >> 4];
		*w++ = hex[c & 0xF];
		break;
	}
	return w;
}

/* Appends a JSON string literal of the n bytes at s (valid UTF-8 without
 * NUL, as decoded), escaped exactly as Jansson's compact output would be. */
static int dump_str(struct dump_buf *d, const char *s, size_t n)
{
	size_t i, run = 0;
	char *w;

	/* reserve the worst case once, then write in place */
	if (n > (SIZE_MAX - 2) / 6 || dump_reserve(d, 6 * n + 2) < 0)
		return -1;
	w = d->p + d->len;
	*w++ = '"';
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c != '"' && c != '\\') {
			run++;
			continue;
		}
		memcpy(w, s + i - run, run);
		w += run;
		run = 0;
		w = put_escape(w, c);
	}
	memcpy(w, s + n - run, run);
	w += run;
	*w++ = '"';
	d->len = (size_t)(w - d->p);
	return 0;
}


/* Appends raw JSON string text (between the quotes, validated by
 * scan_string) in the same canonical form as dump_str of its decoded
 * value: each escape is resolved, then re-escaped only if it must be. The
 * result is never longer than the input. */
static int dump_json_text(struct dump_buf *d, const char *s, size_t n)
{
	const char *end = s + n, *bs;
	unsigned cp, lo;
	char *w;

	if (n > SIZE_MAX - 2 || dump_reserve(d, n + 2) < 0)
		return -1;
	w = d->p + d->len;
	*w++ = '"';
	while ((bs = memchr(s, '\\', (size_t)(end - s))) != NULL) {
		memcpy(w, s, (size_t)(bs - s));
		w += bs - s;
		s = bs + 2;
		switch (bs[1]) {
		case 'u':
			cp = hex4(s);
			s += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF) {   /* validated: a low one follows */
				lo = hex4(s + 2);
				s += 6;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			}
			break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		default:  cp = (unsigned char)bs[1]; break;   /* " \ / */
		}
		if (cp < 0x20 || cp == '"' || cp == '\\')
			w = put_escape(w, (unsigned char)cp);
		else
			w = put_utf8(w, cp);
	}
	memcpy(w, s, (size_t)(end - s));
	w += end - s;
	*w++ = '"';
	d->len = (size_t)(w - d->p);
	return 0;
}

static int dump_text(struct dump_buf *d, const struct text *t)
{
	return t->raw ? dump_json_text(d, t->p, t->n) : dump_str(d, t->p, t->n);
}

/* Writes code point cp (not a surrogate, <= U+10FFFF) as UTF-8. */
static char *put_utf8(char *w, unsigned cp)
{
	if (cp < 0x80) {
		*w++ = (char)cp;
	} else if (cp < 0x800) {
		*w++ = (char)(0xC0 | (cp >> 6));
		*w++ = (char)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		*w++ = (char)(0xE0 | (cp >> 12));
		*w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
		*w++ = (char)(0x80 | (cp & 0x3F));
	} else {
		*w++ = (char)(0xF0 | (cp >> 18));
		*w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
		*w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
		*w++ = (char)(0x80 | (cp & 0x3F));
	}
	return w;
}

/* One allocation laid out as
 *   struct gw_msg | msg_id NUL | channel_id NUL | sender NUL | body NUL
 * The outbound object is written directly behind the header, field by
 * field (only meta goes through Jansson's encoder), without its final '}'.
 * hint: expected size of the body. */
struct gw_msg *proto_msg_build(const struct msg_in *in, const struct gw_handshake *hs,
                               int64_t now_ms, size_t hint)
{
	size_t id_len = in->msg_id.n;
	size_t ch_len = in->channel_id.n;
	size_t snd_len = strlen(in->sender);
	size_t head = sizeof(struct gw_msg) + id_len + 1 + ch_len + 1 + snd_len + 1;
	struct dump_buf d;
	struct gw_msg *m;
	char received[25], *p;
	int rc = 0;

	d.len = head;
	d.cap = head + hint;
	d.p = malloc(d.cap);
	if (d.p == NULL)
		return NULL;
	clock_format_rfc3339(now_ms, received);
	rc |= hs->role == GW_ROLE_MOD ? DUMP_LIT(&d, "{\"type\":\"mod\",\"channel_id\":")
	                              : DUMP_LIT(&d, "{\"type\":\"bot\",\"channel_id\":");
	rc |= dump_text(&d, &in->channel_id);
	rc |= DUMP_LIT(&d, ",\"msg_id\":");
	rc |= dump_text(&d, &in->msg_id);
	if (hs->role == GW_ROLE_MOD) {
		rc |= DUMP_LIT(&d, ",\"server_id\":");
		rc |= dump_str(&d, hs->server_id, strlen(hs->server_id));
	}
	rc |= DUMP_LIT(&d, ",\"author\":{\"id\":");
	rc |= dump_text(&d, &in->author_id);
	if (in->author_name.p != NULL) {
		rc |= DUMP_LIT(&d, ",\"name\":");
		rc |= dump_text(&d, &in->author_name);
	}
	rc |= DUMP_LIT(&d, "},\"content\":");
	rc |= dump_text(&d, &in->content);
	if (in->meta != NULL) {
		rc |= DUMP_LIT(&d, ",\"meta\":");
		rc |= json_dump_callback(in->meta, dump_append, &d,
		                         JSON_COMPACT | JSON_REAL_PRECISION(real_precision(in->meta)));
	}
	rc |= DUMP_LIT(&d, ",\"ts\":");
	if (in->ts.p != NULL) {
		rc |= dump_text(&d, &in->ts);
	} else {
		rc |= DUMP_LIT(&d, "\"");
		rc |= dump_put(&d, received, 24);
		rc |= DUMP_LIT(&d, "\"");
	}
	rc |= DUMP_LIT(&d, ",\"received_at\":\"");
	rc |= dump_put(&d, received, 24);
	rc |= DUMP_LIT(&d, "\"");
	rc |= dump_put(&d, "", 1);   /* the NUL that ends body */
	if (rc != 0) {
		free(d.p);
		return NULL;
	}
	if (d.cap > d.len && (p = realloc(d.p, d.len)) != NULL)
		d.p = p;   /* give back the slack; keep the block if that fails */

	m = (struct gw_msg *)d.p;
	memset(m, 0, sizeof(*m));
	m->refs = 1;
	m->from = hs->role;
	m->received_ms = now_ms;
	p = d.p + sizeof(*m);
	m->msg_id = p;
	memcpy(p, in->msg_id.p, id_len);
	p[id_len] = '\0';
	p += id_len + 1;
	m->channel_id = p;
	memcpy(p, in->channel_id.p, ch_len);
	p[ch_len] = '\0';
	p += ch_len + 1;
	m->sender = p;
	memcpy(p, in->sender, snd_len + 1);
	m->body = d.p + head;
	m->body_len = d.len - head - 1;
	return m;
}

struct gw_msg *proto_msg_new(enum gw_role from, const char *channel_id,
                             const char *msg_id, const char *sender,
                             const char *body, size_t body_len,
                             int64_t received_ms, uint64_t seq)
{
	size_t id_len, ch_len, snd_len, head;
	struct gw_msg *m;
	char *p;

	if ((from != GW_ROLE_MOD && from != GW_ROLE_BOT) || channel_id == NULL ||
	    msg_id == NULL || sender == NULL || body == NULL)
		return NULL;
	id_len = strlen(msg_id);
	ch_len = strlen(channel_id);
	snd_len = strlen(sender);
	if (!proto_id_valid(msg_id, id_len) || !proto_id_valid(channel_id, ch_len) ||
	    !proto_id_valid(sender, snd_len))
		return NULL;
	/* The same layout as proto_msg_build: header | msg_id | channel_id |
	 * sender | body, each NUL-terminated, in one block. */
	head = sizeof(*m) + id_len + 1 + ch_len + 1 + snd_len + 1;
	if (body_len > SIZE_MAX - head - 1)
		return NULL;
	p = malloc(head + body_len + 1);
	if (p == NULL)
		return NULL;

	m = (struct gw_msg *)p;
	memset(m, 0, sizeof(*m));
	m->refs = 1;
	m->from = from;
	m->received_ms = received_ms;
	m->seq = seq;
	p += sizeof(*m);
	m->msg_id = p;
	memcpy(p, msg_id, id_len + 1);
	p += id_len + 1;
	m->channel_id = p;
	memcpy(p, channel_id, ch_len + 1);
	p += ch_len + 1;
	m->sender = p;
	memcpy(p, sender, snd_len + 1);
	p += snd_len + 1;
	m->body = p;
	memcpy(p, body, body_len);
	p[body_len] = '\0';
	m->body_len = body_len;
	return m;
}

void proto_msg_ref(struct gw_msg *m)
{
	__atomic_add_fetch(&m->refs, 1, __ATOMIC_ACQ_REL);
}

void proto_msg_unref(struct gw_msg *m)
{
	if (m != NULL && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(m);   /* header, ids and body are one block */
}

/* ---- frames, replies, events --------------------------------------------- */

/* Writes v in decimal; returns the number of digits (at most 20). */
static size_t put_u64(char *p, uint64_t v)
{
	char tmp[20];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

size_t proto_msg_frame(const struct gw_msg *m, int64_t now_ms, uint64_t dropped,
                       char *buf, size_t cap)
{
	static const char fwd[] = ",\"forwarded_at\":\"";
	static const char drp[] = ",\"dropped\":";
	char tail[sizeof(fwd) + 25 + sizeof(drp) + 20 + 2];
	char *t = tail;
	size_t tail_len, total;

	memcpy(t, fwd, sizeof(fwd) - 1);
	t += sizeof(fwd) - 1;
	clock_format_rfc3339(now_ms, t);
	t += 24;
	*t++ = '"';
	if (dropped > 0) {
		memcpy(t, drp, sizeof(drp) - 1);
		t += sizeof(drp) - 1;
		t += put_u64(t, dropped);
	}
	*t++ = '}';
	tail_len = (size_t)(t - tail);

	total = m->body_len + tail_len;
	if (buf == NULL || total > cap)
		return total;
	/* Written whenever it fits, NUL-terminated when there is room: a
	 * caller that sized buf from a first call without the +1 still gets
	 * its frame, and one that checks like snprintf (>= cap) is safe too. */
	memcpy(buf, m->body, m->body_len);
	memcpy(buf + m->body_len, tail, tail_len);
	if (total < cap)
		buf[total] = '\0';
	return total;
}

static void out_raw(struct out *o, const char *s, size_t n)
{
	if (o->full || n > o->cap - o->len) {
		o->full = 1;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

/* Appends s as a quoted JSON string. Escapes '"', '\\' and control bytes;
 * bytes that are not valid UTF-8 become U+FFFD so the reply is always
 * valid JSON in a valid text frame. NULL is written as null. */
static void out_str(struct out *o, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t n, k, run;
	char esc[6];

	if (s == NULL) {
		OUT_LIT(o, "null");
		return;
	}
	n = strlen(s);
	OUT_LIT(o, "\"");
	while (n > 0 && !o->full) {
		/* Copy the longest run that needs no escaping in one go. */
		for (run = 0; run < n; run += k) {
			if (u[run] < 0x20 || u[run] == '"' || u[run] == '\\')
				break;
			k = utf8_seq(u + run, n - run);
			if (k == 0)
				break;
		}
		out_raw(o, (const char *)u, run);
		u += run;
		n -= run;
		if (n == 0)
			break;
		switch (u[0]) {
		case '"':  OUT_LIT(o, "\\\""); break;
		case '\\': OUT_LIT(o, "\\\\"); break;
		case '\n': OUT_LIT(o, "\\n"); break;
		case '\r': OUT_LIT(o, "\\r"); break;
		case '\t': OUT_LIT(o, "\\t"); break;
		case '\b': OUT_LIT(o, "\\b"); break;
		case '\f': OUT_LIT(o, "\\f"); break;
		default:
			if (u[0] < 0x20) {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[u[0] >> 4];
				esc[5] = hex[u[0] & 0xF];
				out_raw(o, esc, 6);
			} else {
				OUT_LIT(o, "\\ufffd");   /* invalid UTF-8 byte */
			}
			break;
		}
		u++;
		n--;
	}
	OUT_LIT(o, "\"");
}

/* NUL-terminates; returns the length, or 0 if anything did not fit. */
static size_t out_end(struct out *o)
{
	out_raw(o, "", 1);   /* the NUL */
	if (o->full) {
		if (o->cap > 0)
			o->p[0] = '\0';
		return 0;
	}
	return o->len - 1;
}

size_t proto_json_string(const char *s, char *buf, size_t cap)
{
	struct out o = { buf, buf != NULL ? cap : 0, 0, 0 };

	out_str(&o, s);
	return out_end(&o);
}

size_t proto_event(const char *event, const char *channel_id, const char *server_id,
                   const char *bot_id, int64_t now_ms, char *buf, size_t cap)
{
	struct out o = { buf, buf != NULL ? cap : 0, 0, 0 };
	char ts[25];

	clock_format_rfc3339(now_ms, ts);
	OUT_LIT(&o, "{\"type\":\"event\",\"event\":");
	out_str(&o, event);
	if (channel_id != NULL) {
		OUT_LIT(&o, ",\"channel_id\":");
		out_str(&o, channel_id);
	}
	if (server_id != NULL) {
		OUT_LIT(&o, ",\"server_id\":");
		out_str(&o, server_id);
	}
	if (bot_id != NULL) {
		OUT_LIT(&o, ",\"bot_id\":");
		out_str(&o, bot_id);
	}
	OUT_LIT(&o, ",\"ts\":\"");
	out_raw(&o, ts, 24);
	OUT_LIT(&o, "\"}");
	return out_end(&o);
}

size_t proto_connected(enum gw_role role, char *buf, size_t cap)
{
	struct out o = { buf, buf != NULL ? cap : 0, 0, 0 };

	OUT_LIT(&o, "{\"status\":\"connected\",\"type\":\"");
	out_raw(&o, proto_role_name(role), 3);
	OUT_LIT(&o, "\"}");
	return out_end(&o);
}

size_t proto_ack(const char *status, enum gw_role role, const char *msg_id,
                 int duplicate, char *buf, size_t cap)
{
	struct out o = { buf, buf != NULL ? cap : 0, 0, 0 };

	OUT_LIT(&o, "{\"status\":");
	out_str(&o, status);
	OUT_LIT(&o, ",\"type\":\"");
	out_raw(&o, proto_role_name(role), 3);
	OUT_LIT(&o, "\"");
	if (msg_id != NULL) {
		OUT_LIT(&o, ",\"msg_id\":");
		out_str(&o, msg_id);
	}
	if (duplicate)
		OUT_LIT(&o, ",\"duplicate\":true");
	OUT_LIT(&o, "}");
	return out_end(&o);
}

size_t proto_error(const char *message, int code, const char *msg_id_json,
                   char *buf, size_t cap)
{
	struct out o = { buf, buf != NULL ? cap : 0, 0, 0 };
	char num[24];
	int n;

	OUT_LIT(&o, "{\"message\":");
	out_str(&o, message);
	n = snprintf(num, sizeof(num), ",\"code\":%d", code);
	out_raw(&o, num, (size_t)n);
	if (msg_id_json != NULL) {
		OUT_LIT(&o, ",\"msg_id\":");
		out_raw(&o, msg_id_json, strlen(msg_id_json));
	}
	OUT_LIT(&o, "}");
	return out_end(&o);
}
