/*
 * protocol.c - the /sync wire format: handshakes and messages in, acks,
 * errors and outbound messages out. See protocol.h for the contract.
 *
 * DESIGN
 * - Pure functions over caller memory, no globals, no locks, no I/O: every
 *   function may be called from any thread at any time.
 * - Messages take a fast path first (see "the fast path" below): one
 *   strict pass over the bytes, no tree. What it does not take goes the
 *   general way, described next, which is also the reference the fast path
 *   must match byte for byte (proto_decode_message_ref; tests and fuzzer).
 * - Untrusted bytes go through two gates before any field is looked at:
 *   a linear scan that bounds nesting (json_too_deep, so the parser's
 *   recursion stays shallow whatever the peer sends), then Jansson with
 *   JSON_REJECT_DUPLICATES (a key given twice is ambiguous: which one was
 *   validated and which one would a recipient read?) and without
 *   JSON_ALLOW_NUL. Jansson also refuses invalid UTF-8, lone surrogates,
 *   integers beyond int64 and reals beyond double; all of that is
 *   GW_REJECT_MALFORMED.
 * - An optional member given as JSON null counts as absent (common output
 *   of serializers that do not omit empty fields); any other wrong type is
 *   malformed. Ids (msg_id, server_id, channel_id, bot_id, a bot's id) are
 *   1..GW_ID_MAX bytes without control characters: they are keys, log
 *   values and echoed in acks. author.id and content only need to be
 *   non-empty strings.
 * - Out of memory while decoding is reported as GW_REJECT_MALFORMED: the
 *   message was not taken, and the sender may retry.
 * - An accepted message is serialized exactly once, straight into the one
 *   allocation that also holds struct gw_msg and its id strings. The
 *   outbound object is built from the validated values only: unknown
 *   top-level fields are dropped, `author` carries just id and name, and
 *   `meta` passes through as parsed (key order kept; reals printed with the
 *   fewest digits, 15 to 17, that keep every value exact).
 * - Send-time fields (forwarded_at, dropped) are appended with memcpy by
 *   proto_msg_frame, so a delivery never touches the JSON library.
 */
#include "protocol.h"
#include "clock.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A string member's value: decoded bytes (raw = 0, from Jansson), or the
 * text between the quotes straight from the frame (raw = 1, the fast path,
 * validated), which equals its decoded value unless it has escapes (esc).
 * Decoded, it never holds a NUL. p is NULL for an absent optional member. */
struct text {
	const char *p;
	size_t n;
	int raw, esc;
};

/* The validated parts of an inbound message; they point into the parsed
 * root (Jansson) or into the frame itself (fast path). */
struct msg_in {
	struct text msg_id;      /* decoded */
	struct text channel_id;  /* decoded */
	struct text author_id;
	struct text author_name;
	struct text content;
	struct text ts;          /* decoded */
	json_t *meta;            /* NULL if absent */
	const char *sender;
};

static int json_too_deep(const char *data, size_t len);
static enum gw_reject json_parse(const char *data, size_t len, json_t **root);
static size_t utf8_seq(const unsigned char *s, size_t n);
static int id_valid(const char *s, size_t n);
static int json_is_id(const json_t *v);
static int json_is_text(const json_t *v);
static json_t *json_optional(const json_t *obj, const char *key);
static int id_copy(const json_t *obj, const char *key, char *dst);
static int real_precision(json_t *v);
static void msg_id_echo(json_t *v, char *dst, size_t cap);
static int hs_usable(const struct gw_handshake *hs);
static int msg_check(json_t *root, const struct gw_handshake *hs,
                     struct msg_in *in);
static struct gw_msg *msg_new(const struct msg_in *in, const struct gw_handshake *hs,
                              int64_t now_ms, size_t hint);
static int dump_append(const char *buf, size_t size, void *arg);
static void out_raw(struct out *o, const char *s, size_t n);
static void out_str(struct out *o, const char *s);
static size_t out_end(struct out *o);
static size_t put_u64(char *p, uint64_t v);

/* ---- decoding ------------------------------------------------------------ */

/* 1 if brackets nest deeper than GW_JSON_MAX_DEPTH outside strings. Runs in
 * one pass with O(1) state, so a megabyte of '[' costs a microsecond-scale
 * scan and no recursion. For any text Jansson accepts, the string tracking
 * here matches its lexer exactly; for text it refuses, this is only an
 * early bound and Jansson reports the error. */
static int json_too_deep(const char *data, size_t len)
{
	size_t i, depth = 0;
	int in_string = 0;

	for (i = 0; i < len; i++) {
		char c = data[i];

		if (in_string) {
			if (c == '\\')
				i++;    /* skip the escaped byte, maybe a quote */
			else if (c == '"')
				in_string = 0;
			continue;
		}
		switch (c) {
		case '"':
			in_string = 1;
			break;
		case '[':
		case '{':
			if (++depth > GW_JSON_MAX_DEPTH)
				return 1;
			break;
		case ']':
		case '}':
			if (depth > 0)
				depth--;
			break;
		default:
			break;
		}
	}
	return 0;
}

/*
 * Jansson allocates every value, key and string of a parse separately, and
 * malloc/free were half the cost of a message. While a decode runs, its
 * allocations come from a bump arena on that decode's own stack instead;
 * freeing them is a no-op and the arena vanishes when the decode returns,
 * after every Jansson object of it was released. What does not fit (big
 * messages) falls back to malloc. proto_init() installs the functions.
 */
struct arena {
	char *base;
	size_t used, cap;
};

static _Thread_local struct arena *arena;

static void *arena_malloc(size_t n)
{
	struct arena *a = arena;

	n = (n + 15) & ~(size_t)15;
	if (a && n <= a->cap - a->used) {
		void *p = a->base + a->used;

		a->used += n;
		return p;
	}
	return malloc(n);
}

static void arena_free(void *p)
{
	struct arena *a = arena;

	if (a && (char *)p >= a->base && (char *)p < a->base + a->cap)
		return;   /* released with the arena */
	free(p);
}

void proto_init(void)
{
	json_set_alloc_funcs(arena_malloc, arena_free);
}

/* Bytes of stack a decode lends Jansson. A handshake needs little; every
 * idle connection keeps the stack pages its decode touched, so keep it
 * small there. */
#define ARENA_HANDSHAKE 2048
#define ARENA_MESSAGE 12288

/* Parses untrusted bytes. On GW_OK *root is a new reference (an object or
 * an array); otherwise *root is NULL. */
static enum gw_reject json_parse(const char *data, size_t len, json_t **root)
{
	json_error_t err;

	*root = NULL;
	if (data == NULL)
		return GW_REJECT_MALFORMED;
	if (json_too_deep(data, len))
		return GW_REJECT_TOO_DEEP;
	*root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
	return *root ? GW_OK : GW_REJECT_MALFORMED;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes available), or 0
 * if it is invalid: bad lead or continuation byte, overlong form, surrogate,
 * or beyond U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t len, i;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		len = 2;
		cp = s[0] & 0x1F;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		len = 3;
		cp = s[0] & 0x0F;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
		return 0;
	return len;
}

/* An id is what we key, log and compare on: 1..GW_ID_MAX bytes, no C0
 * controls, DEL or C1 controls (U+0080..U+009F, encoded C2 80..C2 9F).
 * s is known to be valid UTF-8 (it came out of Jansson). */
static int id_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i;

	if (n == 0 || n > GW_ID_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		if (u[i] < 0x20 || u[i] == 0x7F)
			return 0;
		if (u[i] == 0xC2 && i + 1 < n && u[i + 1] >= 0x80 && u[i + 1] <= 0x9F)
			return 0;
	}
	return 1;
}

static int json_is_id(const json_t *v)
{
	return json_is_string(v) &&
	       id_valid(json_string_value(v), json_string_length(v));
}

/* A non-empty string: content, author fields. */
static int json_is_text(const json_t *v)
{
	return json_is_string(v) && json_string_length(v) > 0;
}

/* Borrowed member, with JSON null read as absent. */
static json_t *json_optional(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_null(v) ? NULL : v;
}

/* Copies obj[key] into dst (GW_ID_MAX + 1 bytes) if it is a valid id.
 * Returns 0 or -1. */
static int id_copy(const json_t *obj, const char *key, char *dst)
{
	const json_t *v = json_object_get(obj, key);

	if (!json_is_id(v))
		return -1;
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

static enum gw_reject decode_handshake(const char *data, size_t len,
                                       struct gw_handshake *hs);

enum gw_reject proto_decode_handshake(const char *data, size_t len,
                                      struct gw_handshake *hs)
{
	_Alignas(16) char mem[ARENA_HANDSHAKE];
	struct arena a = { mem, 0, sizeof(mem) }, *outer = arena;
	enum gw_reject why;

	arena = &a;
	why = decode_handshake(data, len, hs);
	arena = outer;
	return why;
}

static enum gw_reject decode_handshake(const char *data, size_t len,
                                       struct gw_handshake *hs)
{
	struct gw_handshake tmp;
	json_t *root, *type, *d, *events;
	const char *name;
	enum gw_reject why;

	why = json_parse(data, len, &root);
	if (why != GW_OK)
		goto out;
	why = GW_REJECT_MALFORMED;
	if (!json_is_object(root))
		goto out;
	type = json_object_get(root, "type");
	if (!json_is_string(type))
		goto out;

	memset(&tmp, 0, sizeof(tmp));
	name = json_string_value(type);
	if (strcmp(name, "mod") == 0) {
		tmp.role = GW_ROLE_MOD;
	} else if (strcmp(name, "bot") == 0) {
		tmp.role = GW_ROLE_BOT;
	} else {
		why = GW_REJECT_UNKNOWN_TYPE;
		goto out;
	}

	d = json_object_get(root, "data");
	if (!json_is_object(d))
		goto out;
	if (tmp.role == GW_ROLE_MOD) {
		if (id_copy(d, "server_id", tmp.server_id) < 0 ||
		    id_copy(d, "channel_id", tmp.channel_id) < 0)
			goto out;
	} else if (id_copy(d, "bot_id", tmp.bot_id) < 0) {
		goto out;
	}
	events = json_optional(d, "events");
	if (events != NULL && !json_is_boolean(events))
		goto out;
	tmp.events = json_is_true(events);

	*hs = tmp;
	why = GW_OK;
out:
	json_decref(root);
	return why;
}

/* 1 if hs looks like the output of a successful proto_decode_handshake:
 * a known role and its ids non-empty and terminated within their arrays.
 * Guards against a caller passing a zeroed or stale struct. */
static int hs_usable(const struct gw_handshake *hs)
{
	if (hs == NULL)
		return 0;
	switch (hs->role) {
	case GW_ROLE_MOD:
		return hs->server_id[0] != '\0' && hs->channel_id[0] != '\0' &&
		       memchr(hs->server_id, '\0', sizeof(hs->server_id)) != NULL &&
		       memchr(hs->channel_id, '\0', sizeof(hs->channel_id)) != NULL;
	case GW_ROLE_BOT:
		return hs->bot_id[0] != '\0' &&
		       memchr(hs->bot_id, '\0', sizeof(hs->bot_id)) != NULL;
	default:
		return 0;
	}
}

/* v's decoded text (v is a string). */
static struct text text_of(const json_t *v)
{
	struct text t = { json_string_value(v), json_string_length(v), 0, 0 };

	return t;
}

/* Fills *in from root if it is a valid message for hs (hs_usable).
 * Returns 0 or -1. */
static int msg_check(json_t *root, const struct gw_handshake *hs,
                     struct msg_in *in)
{
	json_t *msg_id, *id, *dest, *author, *v;

	memset(in, 0, sizeof(*in));
	msg_id = json_object_get(root, "msg_id");
	if (!json_is_id(msg_id))
		return -1;
	in->msg_id = text_of(msg_id);

	id = json_object_get(root, "id");
	if (!json_is_id(id))
		return -1;
	switch (hs->role) {
	case GW_ROLE_MOD:
		/* A mod speaks as itself, into the channel it registered. */
		if (strcmp(json_string_value(id), hs->server_id) != 0)
			return -1;
		dest = json_object_get(root, "destination");
		if (!json_is_object(dest))
			return -1;
		if (!json_is_string(json_object_get(dest, "channel_id")) ||
		    strcmp(json_string_value(json_object_get(dest, "channel_id")),
		           hs->channel_id) != 0)
			return -1;
		in->channel_id.p = hs->channel_id;
		in->channel_id.n = strlen(hs->channel_id);
		in->sender = hs->server_id;
		break;
	case GW_ROLE_BOT:
		/* `destination`, if a bot sends one, is not used: id routes. */
		in->channel_id = text_of(id);
		in->sender = hs->bot_id;
		break;
	default:
		return -1;
	}

	author = json_object_get(root, "author");
	if (!json_is_object(author))
		return -1;
	v = json_object_get(author, "id");
	if (!json_is_text(v))
		return -1;
	in->author_id = text_of(v);
	v = json_optional(author, "name");
	if (v != NULL && !json_is_text(v))
		return -1;
	if (v != NULL)
		in->author_name = text_of(v);

	v = json_object_get(root, "content");
	if (!json_is_text(v))
		return -1;
	in->content = text_of(v);

	in->meta = json_optional(root, "meta");
	if (in->meta != NULL && !json_is_object(in->meta))
		return -1;
	v = json_optional(root, "ts");
	if (v != NULL &&
	    (!json_is_string(v) || !clock_valid_rfc3339(json_string_value(v))))
		return -1;
	if (v != NULL)
		in->ts = text_of(v);
	return 0;
}

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
static void msg_id_echo(json_t *v, char *dst, size_t cap)
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

/* The outbound object, members in wire order. New reference, or NULL when
 * out of memory. Input values are shared (refcounted), not copied. */
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

static unsigned hex4(const char *s);
static char *put_utf8(char *w, unsigned cp);

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

/* One allocation laid out as
 *   struct gw_msg | msg_id NUL | channel_id NUL | sender NUL | body NUL
 * The outbound object is written directly behind the header, field by
 * field (only meta goes through Jansson's encoder), without its final '}'.
 * hint: expected size of the body. */
static struct gw_msg *msg_new(const struct msg_in *in, const struct gw_handshake *hs,
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

/* ---- the fast path ------------------------------------------------------- */

/*
 * Nearly every message is one flat object of the expected members, with
 * string values and at most a `meta` object. For those, one pass over the
 * bytes finds each member and validates it exactly as Jansson would (the
 * same UTF-8, escape and surrogate rules), and the outbound object is
 * written from the spans: no tree, no copies, no allocation but the
 * message. Jansson still parses `meta` (its values are re-encoded), but
 * only that span.
 *
 * The fast path never rejects: anything it does not take - an unknown or
 * repeated member, a number, an escaped id, a wrong type, a syntax error -
 * makes it give up, and the message goes through Jansson, which stays the
 * reference for what is accepted and what a refusal says. The fuzzer holds
 * the two to the same output on every input the fast path takes.
 */

/* The value of 4 hex digits at s (any case), or 0x10000 if one is not. */
static unsigned hex4(const char *s)
{
	unsigned v = 0;
	int i;

	for (i = 0; i < 4; i++) {
		char c = s[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return 0x10000;
	}
	return v;
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

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p;
}

/* Nonzero if one of the 8 bytes in w is a '"', a '\\', a control byte or
 * not ASCII: the bytes a string scan must look at one by one. (A byte
 * v - 1 borrows from, with its top bit clear, was zero; a borrow can only
 * make a false hit above a true one.) */
static uint64_t word_special(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ULL, tops = 0x8080808080808080ULL;
	uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');

	return (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w) | w) & tops;
}

/* p is at a '"'. Validates one JSON string as Jansson's lexer does: no raw
 * control bytes, valid UTF-8, known escapes, \u escapes that are not NUL
 * and whose surrogates pair up. Fills *t with the text between the quotes
 * (raw, and esc if it has escapes) and returns the byte after the closing
 * quote, or NULL. */
static const char *scan_string(const char *p, const char *end, struct text *t)
{
	const unsigned char *u = (const unsigned char *)p + 1;
	const unsigned char *e = (const unsigned char *)end;
	unsigned cp;
	size_t k;

	t->p = (const char *)u;
	t->raw = 1;
	t->esc = 0;
	while (u < e) {
		uint64_t w;

		if (e - u >= 8) {
			memcpy(&w, u, 8);
			if (!word_special(w)) {
				u += 8;
				continue;
			}
		}
		if (*u == '"') {
			t->n = (size_t)((const char *)u - t->p);
			return (const char *)u + 1;
		}
		if (*u < 0x20)
			return NULL;
		if (*u < 0x80 && *u != '\\') {
			u++;
			continue;
		}
		if (*u >= 0x80) {
			if ((k = utf8_seq(u, (size_t)(e - u))) == 0)
				return NULL;
			u += k;
			continue;
		}
		t->esc = 1;
		if (e - u < 2)
			return NULL;
		switch (u[1]) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
			u += 2;
			continue;
		case 'u':
			break;
		default:
			return NULL;
		}
		if (e - u < 6 || (cp = hex4((const char *)u + 2)) == 0 || cp > 0xFFFF ||
		    (cp >= 0xDC00 && cp <= 0xDFFF))
			return NULL;
		u += 6;
		if (cp >= 0xD800 && cp <= 0xDBFF) {
			if (e - u < 6 || u[0] != '\\' || u[1] != 'u' ||
			    (cp = hex4((const char *)u + 2)) < 0xDC00 || cp > 0xDFFF)
				return NULL;
			u += 6;
		}
	}
	return NULL;
}

/* p is at a '{' or '['. Returns the byte after the value's matching
 * bracket, or NULL if the brackets do not match before end, a string in it
 * is invalid or it nests over max_depth. Only brackets and strings are
 * checked: Jansson validates the rest. */
static const char *skip_nested(const char *p, const char *end, size_t max_depth)
{
	struct text t;
	size_t depth = 0;

	while (p < end) {
		switch (*p) {
		case '"':
			if ((p = scan_string(p, end, &t)) == NULL)
				return NULL;
			continue;
		case '{':
		case '[':
			if (++depth > max_depth)
				return NULL;
			break;
		case '}':
		case ']':
			if (--depth == 0)
				return p + 1;
			break;
		default:
			break;
		}
		p++;
	}
	return NULL;
}

/* The members the fast path knows, as bits. */
enum {
	F_MSG_ID = 1 << 0, F_ID = 1 << 1, F_DEST = 1 << 2, F_AUTHOR = 1 << 3,
	F_CONTENT = 1 << 4, F_META = 1 << 5, F_TS = 1 << 6,
	F_AUTHOR_ID = 1 << 7, F_AUTHOR_NAME = 1 << 8, F_CHANNEL = 1 << 9,
};

/* 1 if t, without escapes, equals the C string s (an escaped text is
 * never taken as equal: Jansson decides those). */
static int text_is(const struct text *t, const char *s)
{
	return !t->esc && strlen(s) == t->n && memcmp(t->p, s, t->n) == 0;
}

/* Which member key t names in an object inside `parent` (0: the top
 * level, else F_AUTHOR or F_DEST), or 0 if it is not one the fast path
 * takes. */
static int member_bit(const struct text *t, int parent)
{
	static const struct {
		int parent, bit;
		const char *name;
	} names[] = {
		{ 0, F_MSG_ID, "msg_id" }, { 0, F_ID, "id" }, { 0, F_DEST, "destination" },
		{ 0, F_AUTHOR, "author" }, { 0, F_CONTENT, "content" }, { 0, F_META, "meta" },
		{ 0, F_TS, "ts" }, { F_AUTHOR, F_AUTHOR_ID, "id" },
		{ F_AUTHOR, F_AUTHOR_NAME, "name" }, { F_DEST, F_CHANNEL, "channel_id" },
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].parent == parent && text_is(t, names[i].name))
			return names[i].bit;
	return 0;
}

/* Parses the members of the object whose '{' p is after, into *in; parent
 * is 0 for the top level, F_AUTHOR or F_DEST inside those. Returns the byte
 * after its '}', or NULL to give up. *seen collects the members found. */
static const char *fast_object(const char *p, const char *end, int parent,
                               struct msg_in *in, struct text *dest, int *seen)
{
	struct text key, val, *slot;
	const char *meta;
	int bit;

	p = skip_ws(p, end);
	if (p < end && *p == '}')
		return p + 1;
	for (;;) {
		if (p == end || *p != '"' || (p = scan_string(p, end, &key)) == NULL)
			return NULL;
		bit = member_bit(&key, parent);
		if (bit == 0 || (*seen & bit))
			return NULL;   /* unknown or repeated: Jansson decides */
		*seen |= bit;
		p = skip_ws(p, end);
		if (p == end || *p != ':')
			return NULL;
		p = skip_ws(p + 1, end);
		if (p == end)
			return NULL;
		if (*p == '{' && (bit == F_AUTHOR || bit == F_DEST)) {
			p = fast_object(p + 1, end, bit, in, dest, seen);
		} else if (*p == '{' && bit == F_META) {
			/* the object is depth 2 of the frame, as json_too_deep counts */
			meta = p;
			if ((p = skip_nested(p, end, GW_JSON_MAX_DEPTH - 1)) == NULL)
				return NULL;
			in->meta = json_loadb(meta, (size_t)(p - meta), JSON_REJECT_DUPLICATES, NULL);
			if (in->meta == NULL)
				return NULL;
		} else if (*p == 'n' && (bit & (F_META | F_TS | F_AUTHOR_NAME))) {
			/* null: an optional member left out */
			if (end - p < 4 || memcmp(p, "null", 4) != 0)
				return NULL;
			p += 4;
		} else if (*p == '"') {
			switch (bit) {
			case F_MSG_ID:      slot = &in->msg_id; break;
			case F_ID:          slot = &in->channel_id; break;
			case F_CONTENT:     slot = &in->content; break;
			case F_TS:          slot = &in->ts; break;
			case F_AUTHOR_ID:   slot = &in->author_id; break;
			case F_AUTHOR_NAME: slot = &in->author_name; break;
			case F_CHANNEL:     slot = dest; break;
			default:            return NULL;
			}
			if ((p = scan_string(p, end, &val)) == NULL)
				return NULL;
			*slot = val;
		} else {
			return NULL;
		}
		if (p == NULL)
			return NULL;
		p = skip_ws(p, end);
		if (p < end && *p == '}')
			return p + 1;
		if (p == end || *p != ',')
			return NULL;
		p = skip_ws(p + 1, end);
	}
}

/* The fast path: a new message, or NULL to let Jansson decide (see above).
 * hs is usable. */
static struct gw_msg *fast_decode(const char *data, size_t len,
                                  const struct gw_handshake *hs, int64_t now_ms)
{
	const char *end = data + len, *p;
	struct msg_in in;
	struct text dest = { NULL, 0, 0, 0 };
	struct gw_msg *m = NULL;
	char ts[64];
	int seen = 0;
	int need = F_MSG_ID | F_ID | F_AUTHOR | F_AUTHOR_ID | F_CONTENT;

	memset(&in, 0, sizeof(in));
	p = skip_ws(data, end);
	if (p == end || *p != '{')
		return NULL;
	p = fast_object(p + 1, end, 0, &in, &dest, &seen);
	if (p == NULL || skip_ws(p, end) != end)
		goto out;
	if (hs->role == GW_ROLE_MOD)
		need |= F_DEST | F_CHANNEL;
	if ((seen & need) != need)
		goto out;
	/* What msg_check demands. Ids, compared and copied as they are, must
	 * not have escapes; the other texts are decoded when written. */
	if (in.msg_id.esc || !id_valid(in.msg_id.p, in.msg_id.n) ||
	    in.channel_id.esc || !id_valid(in.channel_id.p, in.channel_id.n) ||
	    in.author_id.n == 0 || in.content.n == 0 ||
	    (in.author_name.p != NULL && in.author_name.n == 0))
		goto out;
	if (hs->role == GW_ROLE_MOD) {
		/* id is the sender's own server_id; the channel its own */
		if (!text_is(&in.channel_id, hs->server_id) || !text_is(&dest, hs->channel_id))
			goto out;
		in.channel_id = dest;
		in.sender = hs->server_id;
	} else {
		in.sender = hs->bot_id;
	}
	if (in.ts.p != NULL) {
		if (in.ts.esc || in.ts.n >= sizeof(ts))
			goto out;
		memcpy(ts, in.ts.p, in.ts.n);
		ts[in.ts.n] = '\0';
		if (!clock_valid_rfc3339(ts))
			goto out;
	}
	m = msg_new(&in, hs, now_ms, len + 2 * GW_ID_MAX + 256);
out:
	json_decref(in.meta);
	return m;
}

static enum gw_reject decode_message(const char *data, size_t len,
                                     const struct gw_handshake *hs, int64_t now_ms,
                                     struct gw_msg **out, char *msg_id_json, size_t idlen);

/* Jansson alone, its allocations in an arena on this frame's stack. */
enum gw_reject proto_decode_message_ref(const char *data, size_t len,
                                        const struct gw_handshake *hs,
                                        int64_t now_ms, struct gw_msg **out,
                                        char *msg_id_json, size_t idlen)
{
	_Alignas(16) char mem[ARENA_MESSAGE];
	struct arena a = { mem, 0, sizeof(mem) }, *outer = arena;
	enum gw_reject why;

	arena = &a;
	why = decode_message(data, len, hs, now_ms, out, msg_id_json, idlen);
	arena = outer;
	return why;
}

enum gw_reject proto_decode_message(const char *data, size_t len,
                                    const struct gw_handshake *hs,
                                    int64_t now_ms, struct gw_msg **out,
                                    char *msg_id_json, size_t idlen)
{
	/* The fast path first, outside the arena's frame: a reader thread
	 * keeps every stack page it touched, and the fast path needs few. */
	msg_id_echo(NULL, msg_id_json, idlen);
	if (data != NULL && hs_usable(hs) && (*out = fast_decode(data, len, hs, now_ms)) != NULL)
		return GW_OK;
	return proto_decode_message_ref(data, len, hs, now_ms, out, msg_id_json, idlen);
}

static enum gw_reject decode_message(const char *data, size_t len,
                                     const struct gw_handshake *hs, int64_t now_ms,
                                     struct gw_msg **out, char *msg_id_json, size_t idlen)
{
	struct msg_in in;
	json_t *root;
	enum gw_reject why;

	*out = NULL;
	msg_id_echo(NULL, msg_id_json, idlen);
	why = json_parse(data, len, &root);
	if (why != GW_OK)
		goto out;
	why = GW_REJECT_MALFORMED;
	if (!json_is_object(root))
		goto out;
	if (!hs_usable(hs) || msg_check(root, hs, &in) < 0) {
		msg_id_echo(json_object_get(root, "msg_id"), msg_id_json, idlen);
		goto out;
	}
	/* The compact object is about the input's size, plus the fields the
	 * gateway adds; a larger one grows, a smaller one is trimmed. */
	*out = msg_new(&in, hs, now_ms, len + 2 * GW_ID_MAX + 256);
	if (*out == NULL) {
		/* Out of memory: no reason code of its own; the peer is told
		 * its message was refused and may retry. */
		msg_id_echo(json_object_get(root, "msg_id"), msg_id_json, idlen);
		goto out;
	}
	why = GW_OK;
out:
	json_decref(root);
	return why;
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
	if (!id_valid(msg_id, id_len) || !id_valid(channel_id, ch_len) ||
	    !id_valid(sender, snd_len))
		return NULL;
	/* The same layout as msg_new: header | msg_id | channel_id | sender |
	 * body, each NUL-terminated, in one block. */
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

/* ---- encoding ------------------------------------------------------------ */

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

const char *proto_role_name(enum gw_role role)
{
	return role == GW_ROLE_BOT ? "bot" : "mod";
}
