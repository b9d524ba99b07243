/*
 * proto_fast.c - the fast path: proto_decode_message tries this first and
 * leaves what it does not take to Jansson (proto_decode_message_ref,
 * proto_decode.c).
 *
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
#include "proto_int.h"

#include <string.h>

#include "clock.h"

static const char *skip_ws(const char *p, const char *end);
static const char *scan_string(const char *p, const char *end, struct text *t);
static const char *skip_nested(const char *p, const char *end, size_t max_depth);
static int text_is(const struct text *t, const char *s);
static int member_bit(const struct text *t, int parent);
static const char *fast_object(const char *p, const char *end, int parent,
                               struct msg_in *in, struct text *dest, int *seen);
static struct gw_msg *fast_decode(const char *data, size_t len,
                                  const struct gw_handshake *hs, int64_t now_ms);

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p;
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

/* The fast path: a new message, or NULL to let Jansson decide (see the top).
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
	if (in.msg_id.esc || !proto_id_valid(in.msg_id.p, in.msg_id.n) ||
	    in.channel_id.esc || !proto_id_valid(in.channel_id.p, in.channel_id.n) ||
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
	m = proto_msg_build(&in, hs, now_ms, len + 2 * GW_ID_MAX + 256);
out:
	json_decref(in.meta);
	return m;
}

enum gw_reject proto_decode_message(const char *data, size_t len,
                                    const struct gw_handshake *hs,
                                    int64_t now_ms, struct gw_msg **out,
                                    char *msg_id_json, size_t idlen)
{
	/* The fast path first, outside the arena's frame: a reader thread
	 * keeps every stack page it touched, and the fast path needs few. */
	proto_msg_id_echo(NULL, msg_id_json, idlen);
	if (data != NULL && proto_hs_usable(hs) &&
	    (*out = fast_decode(data, len, hs, now_ms)) != NULL)
		return GW_OK;
	return proto_decode_message_ref(data, len, hs, now_ms, out, msg_id_json, idlen);
}
