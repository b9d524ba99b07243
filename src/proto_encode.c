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
 * - Every string is written by one function, out_str, into one kind of
 *   buffer, struct out (the body's grows, a reply's is the caller's array):
 *   the same escapes everywhere, and a fast-path text (still escaped as the
 *   sender wrote it) comes out as its decoded value would.
 */
#include "proto_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* Where encoders write: the caller's array (grows = 0), or a malloc'd block
 * that doubles as needed (grows = 1). What does not fit, or memory running
 * out, sets full and nothing more is written: one check at the end instead
 * of one per call. */
struct out {
	char *p;
	size_t len, cap;
	int grows;
	int full;
};

/* Appends a string literal. */
#define OUT_LIT(o, lit) out_raw((o), (lit), sizeof(lit) - 1)

static int out_reserve(struct out *o, size_t n);
static inline void out_raw(struct out *o, const char *s, size_t n);
static int out_dump(const char *buf, size_t size, void *arg);
static size_t out_end(struct out *o);
static char *put_escape(char *w, unsigned char c);
static char *put_utf8(char *w, unsigned cp);
static const unsigned char *unescape(const unsigned char *u, unsigned *cp);
static void out_str(struct out *o, const char *s, size_t n, int raw);
static void out_cstr(struct out *o, const char *s);
static void out_text(struct out *o, const struct text *t);
static int real_precision(json_t *v);
static size_t put_u64(char *p, uint64_t v);

/* ---- the string writer --------------------------------------------------- */

/* Room for n more bytes: 0, or -1 with o->full set. */
static int out_reserve(struct out *o, size_t n)
{
	size_t cap = o->cap;
	char *p;

	if (o->full)
		return -1;
	if (n <= cap - o->len)
		return 0;
	if (!o->grows)
		goto full;
	while (n > cap - o->len) {
		if (cap > SIZE_MAX / 2)
			goto full;
		cap *= 2;
	}
	p = realloc(o->p, cap);
	if (p == NULL)
		goto full;
	o->p = p;
	o->cap = cap;
	return 0;
full:
	o->full = 1;
	return -1;
}

static inline void out_raw(struct out *o, const char *s, size_t n)
{
	if ((o->full || n > o->cap - o->len) && out_reserve(o, n) < 0)
		return;
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

/* out_raw for json_dump_callback. */
static int out_dump(const char *buf, size_t size, void *arg)
{
	struct out *o = arg;

	out_raw(o, buf, size);
	return o->full ? -1 : 0;
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

/* Writes the escape of one character that needs one: '"', '\\' or a
 * control character (\b \f \n \r \t by name, the others as \u00xx with
 * lower-case hex). Returns the end (at most 6 bytes). */
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

/* u is at a '\\' in JSON string text that scan_string validated. Sets *cp
 * to the character its escape stands for (a surrogate pair as one) and
 * returns the byte after the escape. */
static const unsigned char *unescape(const unsigned char *u, unsigned *cp)
{
	const char *s = (const char *)u + 2;
	unsigned lo;

	switch (u[1]) {
	case 'u':
		*cp = hex4(s);
		s += 4;
		if (*cp >= 0xD800 && *cp <= 0xDBFF) {   /* validated: a low one follows */
			lo = hex4(s + 2);
			s += 6;
			*cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
		}
		break;
	case 'b': *cp = '\b'; break;
	case 'f': *cp = '\f'; break;
	case 'n': *cp = '\n'; break;
	case 'r': *cp = '\r'; break;
	case 't': *cp = '\t'; break;
	default:  *cp = u[1]; break;   /* " \ / */
	}
	return (const unsigned char *)s;
}

/*
 * Appends the n bytes at s as a quoted JSON string; the one writer behind
 * every encoder here. '"', '\\' and control characters are escaped
 * (put_escape), everything else is copied, except that a byte which does
 * not start a valid UTF-8 sequence becomes \ufffd, so the output is valid
 * JSON in a valid text frame whatever s holds.
 *
 * raw: s is the text between the quotes of a JSON string, validated by
 * scan_string (the fast path's spans). Each escape in it is resolved first
 * and its character written as above, so the result is the same as for
 * its decoded value; it is never longer than the input.
 *
 * NULL is written as null.
 */
static void out_str(struct out *o, const char *s, size_t n, int raw)
{
	const unsigned char *u, *end, *run;
	char esc[6], *w;
	unsigned cp;
	size_t k;
	uint64_t word;

	if (s == NULL) {
		OUT_LIT(o, "null");
		return;
	}
	u = (const unsigned char *)s;
	end = u + n;
	OUT_LIT(o, "\"");
	while (!o->full) {
		/* The longest run that goes out as it is, in one copy. Validated
		 * text holds nothing else to change but its escapes. */
		run = u;
		if (raw) {
			u = memchr(run, '\\', (size_t)(end - run));
			if (u == NULL)
				u = end;
		}
		for (; u < end; u += k) {
			if (end - u >= 8) {
				memcpy(&word, u, 8);
				if (!word_special(word)) {
					k = 8;   /* plain ASCII */
					continue;
				}
			}
			if (*u < 0x20 || *u == '"' || *u == '\\')
				break;
			if ((k = utf8_seq(u, (size_t)(end - u))) == 0)
				break;
		}
		out_raw(o, (const char *)run, (size_t)(u - run));
		if (u == end)
			break;
		if (raw && *u == '\\') {
			u = unescape(u, &cp);
		} else if (*u >= 0x80) {
			OUT_LIT(o, "\\ufffd");   /* not valid UTF-8 */
			u++;
			continue;
		} else {
			cp = *u++;
		}
		if (cp < 0x20 || cp == '"' || cp == '\\')
			w = put_escape(esc, (unsigned char)cp);
		else
			w = put_utf8(esc, cp);
		out_raw(o, esc, (size_t)(w - esc));
	}
	OUT_LIT(o, "\"");
}

/* A C string, or null. */
static void out_cstr(struct out *o, const char *s)
{
	out_str(o, s, s != NULL ? strlen(s) : 0, 0);
}

static void out_text(struct out *o, const struct text *t)
{
	out_str(o, t->p, t->n, t->raw);
}

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
	struct out o = { NULL, head, head + hint, 1, 0 };
	struct gw_msg *m;
	char received[25], *p;

	o.p = malloc(o.cap);
	if (o.p == NULL)
		return NULL;
	clock_format_rfc3339(now_ms, received);
	if (hs->role == GW_ROLE_MOD)
		OUT_LIT(&o, "{\"type\":\"mod\",\"channel_id\":");
	else
		OUT_LIT(&o, "{\"type\":\"bot\",\"channel_id\":");
	out_text(&o, &in->channel_id);
	OUT_LIT(&o, ",\"msg_id\":");
	out_text(&o, &in->msg_id);
	if (hs->role == GW_ROLE_MOD) {
		OUT_LIT(&o, ",\"server_id\":");
		out_cstr(&o, hs->server_id);
	}
	OUT_LIT(&o, ",\"author\":{\"id\":");
	out_text(&o, &in->author_id);
	if (in->author_name.p != NULL) {
		OUT_LIT(&o, ",\"name\":");
		out_text(&o, &in->author_name);
	}
	OUT_LIT(&o, "},\"content\":");
	out_text(&o, &in->content);
	if (in->meta != NULL) {
		OUT_LIT(&o, ",\"meta\":");
		if (json_dump_callback(in->meta, out_dump, &o, JSON_COMPACT |
		                       JSON_REAL_PRECISION(real_precision(in->meta))) != 0)
			o.full = 1;
	}
	OUT_LIT(&o, ",\"ts\":");
	if (in->ts.p != NULL) {
		out_text(&o, &in->ts);
	} else {
		OUT_LIT(&o, "\"");
		out_raw(&o, received, 24);
		OUT_LIT(&o, "\"");
	}
	OUT_LIT(&o, ",\"received_at\":\"");
	out_raw(&o, received, 24);
	OUT_LIT(&o, "\"");
	out_raw(&o, "", 1);   /* the NUL that ends body */
	if (o.full) {
		free(o.p);
		return NULL;
	}
	if (o.cap > o.len && (p = realloc(o.p, o.len)) != NULL)
		o.p = p;   /* give back the slack; keep the block if that fails */

	m = (struct gw_msg *)o.p;
	memset(m, 0, sizeof(*m));
	m->refs = 1;
	m->from = hs->role;
	m->received_ms = now_ms;
	p = o.p + sizeof(*m);
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
	m->body = o.p + head;
	m->body_len = o.len - head - 1;
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
	static const char sq[] = ",\"seq\":";
	static const char drp[] = ",\"dropped\":";
	char tail[sizeof(fwd) + 25 + sizeof(sq) + 20 + sizeof(drp) + 20 + 2];
	char *t = tail;
	size_t tail_len, total;

	memcpy(t, fwd, sizeof(fwd) - 1);
	t += sizeof(fwd) - 1;
	clock_format_rfc3339(now_ms, t);
	t += 24;
	*t++ = '"';
	if (m->seq > 0) {
		memcpy(t, sq, sizeof(sq) - 1);
		t += sizeof(sq) - 1;
		t += put_u64(t, m->seq);
	}
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

size_t proto_json_string(const char *s, char *buf, size_t cap)
{
	struct out o = { buf, 0, buf != NULL ? cap : 0, 0, 0 };

	out_cstr(&o, s);
	return out_end(&o);
}

size_t proto_event(const char *event, const char *channel_id, const char *server_id,
                   const char *bot_id, int64_t now_ms, char *buf, size_t cap)
{
	struct out o = { buf, 0, buf != NULL ? cap : 0, 0, 0 };
	char ts[25];

	clock_format_rfc3339(now_ms, ts);
	OUT_LIT(&o, "{\"type\":\"event\",\"event\":");
	out_cstr(&o, event);
	if (channel_id != NULL) {
		OUT_LIT(&o, ",\"channel_id\":");
		out_cstr(&o, channel_id);
	}
	if (server_id != NULL) {
		OUT_LIT(&o, ",\"server_id\":");
		out_cstr(&o, server_id);
	}
	if (bot_id != NULL) {
		OUT_LIT(&o, ",\"bot_id\":");
		out_cstr(&o, bot_id);
	}
	OUT_LIT(&o, ",\"ts\":\"");
	out_raw(&o, ts, 24);
	OUT_LIT(&o, "\"}");
	return out_end(&o);
}

size_t proto_connected(enum gw_role role, const char *epoch, int resumed, uint64_t missed,
                       char *buf, size_t cap)
{
	struct out o = { buf, 0, buf != NULL ? cap : 0, 0, 0 };
	char num[24];

	OUT_LIT(&o, "{\"status\":\"connected\",\"type\":\"");
	out_raw(&o, proto_role_name(role), 3);
	out_raw(&o, "\"", 1);
	if (epoch) {
		OUT_LIT(&o, ",\"epoch\":");
		out_str(&o, epoch, strlen(epoch), 0);
	}
	if (resumed > 0) {
		OUT_LIT(&o, ",\"resumed\":true");
	} else if (resumed == 0) {
		OUT_LIT(&o, ",\"resumed\":false,\"missed\":");
		out_raw(&o, num, put_u64(num, missed));
	}
	return out_end(&o);
}

size_t proto_ack(const char *status, enum gw_role role, const char *msg_id,
                 int duplicate, char *buf, size_t cap)
{
	struct out o = { buf, 0, buf != NULL ? cap : 0, 0, 0 };

	OUT_LIT(&o, "{\"status\":");
	out_cstr(&o, status);
	OUT_LIT(&o, ",\"type\":\"");
	out_raw(&o, proto_role_name(role), 3);
	OUT_LIT(&o, "\"");
	if (msg_id != NULL) {
		OUT_LIT(&o, ",\"msg_id\":");
		out_cstr(&o, msg_id);
	}
	if (duplicate)
		OUT_LIT(&o, ",\"duplicate\":true");
	OUT_LIT(&o, "}");
	return out_end(&o);
}

size_t proto_error(const char *message, int code, const char *msg_id_json,
                   char *buf, size_t cap)
{
	struct out o = { buf, 0, buf != NULL ? cap : 0, 0, 0 };
	char num[24];
	int n;

	OUT_LIT(&o, "{\"message\":");
	out_cstr(&o, message);
	n = snprintf(num, sizeof(num), ",\"code\":%d", code);
	out_raw(&o, num, (size_t)n);
	if (msg_id_json != NULL) {
		OUT_LIT(&o, ",\"msg_id\":");
		out_raw(&o, msg_id_json, strlen(msg_id_json));
	}
	OUT_LIT(&o, "}");
	return out_end(&o);
}
