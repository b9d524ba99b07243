/*
 * proto_decode.c - Jansson's side of decoding: handshakes, and messages the
 * general way, which is also the reference the fast path (proto_fast.c)
 * must match byte for byte (proto_decode_message_ref; tests and fuzzer).
 * Decoded messages are written by proto_encode.c (proto_msg_build).
 *
 * DESIGN
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
 * - Each decode lends Jansson an arena on its own stack (proto_arena.c).
 */
#include "proto_int.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"

static int json_too_deep(const char *data, size_t len);
static enum gw_reject json_parse(const char *data, size_t len, json_t **root);
static int json_is_id(const json_t *v);
static int json_is_text(const json_t *v);
static json_t *json_optional(const json_t *obj, const char *key);
static int id_get(const json_t *obj, const char *key, const char **id);
static int ids_own(struct gw_handshake *hs);
static enum gw_reject decode_handshake(const char *data, size_t len,
                                       struct gw_handshake *hs);
static struct text text_of(const json_t *v);
static int msg_check(json_t *root, const struct gw_handshake *hs,
                     struct msg_in *in);
static enum gw_reject decode_message(const char *data, size_t len,
                                     const struct gw_handshake *hs, int64_t now_ms,
                                     struct gw_msg **out, char *msg_id_json, size_t idlen);

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

static int json_is_id(const json_t *v)
{
	return json_is_string(v) &&
	       proto_id_valid(json_string_value(v), json_string_length(v));
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

/* Points *id at obj[key]'s text (borrowed from the parse) if it is a valid
 * id. Returns 0 or -1. */
static int id_get(const json_t *obj, const char *key, const char **id)
{
	const json_t *v = json_object_get(obj, key);

	if (!json_is_id(v))
		return -1;
	*id = json_string_value(v);
	return 0;
}

/* Copies hs's ids and epoch, borrowed from the parse, into one block that
 * hs owns, sized to them. Returns 0 or -1. */
static int ids_own(struct gw_handshake *hs)
{
	const char **ids[] = { &hs->server_id, &hs->channel_id, &hs->bot_id, &hs->epoch };
	size_t len[4], total = 1;
	char *p;

	for (int i = 0; i < 4; i++)
		total += len[i] = (*ids[i])[0] ? strlen(*ids[i]) + 1 : 0;
	if (!(p = hs->ids = malloc(total)))
		return -1;
	for (int i = 0; i < 4; i++) {
		if (len[i]) {
			memcpy(p, *ids[i], len[i]);
			*ids[i] = p;
			p += len[i];
		}
	}
	return 0;
}

/* A seq in since: an integer from 0 to 2^53 (what every JSON library
 * reads exactly). Returns 0 or -1. */
static int seq_of(const json_t *v, uint64_t *seq)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > ((json_int_t)1 << 53))
		return -1;
	*seq = (uint64_t)json_integer_value(v);
	return 0;
}

/* The bot's since.channels object, as one malloc'd block: the array, then
 * the channel ids. Returns 0 or -1. */
static int since_channels(const json_t *chans, struct gw_handshake *hs)
{
	size_t n = json_object_size(chans), bytes = 0, i = 0;
	const char *key;
	json_t *v;
	char *p;

	json_object_foreach((json_t *)chans, key, v) {
		size_t kl = strlen(key);

		if (!proto_id_valid(key, kl))
			return -1;
		bytes += kl + 1;
	}
	if (n == 0)
		return 0;
	hs->since = malloc(n * sizeof(*hs->since) + bytes);
	if (!hs->since)
		return -1;
	p = (char *)(hs->since + n);
	json_object_foreach((json_t *)chans, key, v) {
		size_t kl = strlen(key);

		if (seq_of(v, &hs->since[i].seq) < 0) {
			free(hs->since);
			hs->since = NULL;
			return -1;
		}
		memcpy(p, key, kl + 1);
		hs->since[i++].channel_id = p;
		p += kl + 1;
	}
	hs->nsince = n;
	return 0;
}

/* data.since (absent or null: no resume). A mod: {"epoch":E,"seq":N}; a
 * bot: {"epoch":E,"channels":{"C":N,...}}. Returns 0 or -1. */
static int since_parse(const json_t *d, struct gw_handshake *hs)
{
	const json_t *s = json_optional(d, "since"), *e;

	if (s == NULL)
		return 0;
	e = json_object_get(s, "epoch");
	if (!json_is_object(s) || !json_is_id(e) || json_string_length(e) > GW_EPOCH_MAX)
		return -1;
	hs->epoch = json_string_value(e);   /* borrowed until ids_own */
	hs->resume = 1;
	if (hs->role == GW_ROLE_MOD)
		return seq_of(json_object_get(s, "seq"), &hs->since_seq);
	if (!json_is_object(json_object_get(s, "channels")))
		return -1;
	return since_channels(json_object_get(s, "channels"), hs);
}

void proto_handshake_release(struct gw_handshake *hs)
{
	free(hs->since);
	hs->since = NULL;
	hs->nsince = 0;
}

void proto_handshake_free(struct gw_handshake *hs)
{
	proto_handshake_release(hs);
	free(hs->ids);
	*hs = (struct gw_handshake)GW_HANDSHAKE_INIT;
}

enum gw_reject proto_decode_handshake(const char *data, size_t len,
                                      struct gw_handshake *hs)
{
	_Alignas(16) char mem[ARENA_HANDSHAKE];
	struct proto_arena a;
	enum gw_reject why;

	proto_arena_enter(&a, mem, sizeof(mem));
	why = decode_handshake(data, len, hs);
	proto_arena_leave(&a);
	return why;
}

static enum gw_reject decode_handshake(const char *data, size_t len,
                                       struct gw_handshake *hs)
{
	struct gw_handshake tmp = GW_HANDSHAKE_INIT;
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
		if (id_get(d, "server_id", &tmp.server_id) < 0 ||
		    id_get(d, "channel_id", &tmp.channel_id) < 0)
			goto out;
	} else if (id_get(d, "bot_id", &tmp.bot_id) < 0) {
		goto out;
	}
	events = json_optional(d, "events");
	if (events != NULL && !json_is_boolean(events))
		goto out;
	tmp.events = json_is_true(events);
	if (since_parse(d, &tmp) < 0)
		goto out;
	if (ids_own(&tmp) < 0) {
		proto_handshake_release(&tmp);
		goto out;
	}

	*hs = tmp;
	why = GW_OK;
out:
	json_decref(root);
	return why;
}

/* v's decoded text (v is a string). */
static struct text text_of(const json_t *v)
{
	struct text t = { json_string_value(v), json_string_length(v), 0, 0 };

	return t;
}

/* Fills *in from root if it is a valid message for hs (proto_hs_usable).
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

/* Jansson alone, its allocations in an arena on this frame's stack. */
enum gw_reject proto_decode_message_ref(const char *data, size_t len,
                                        const struct gw_handshake *hs,
                                        int64_t now_ms, struct gw_msg **out,
                                        char *msg_id_json, size_t idlen)
{
	_Alignas(16) char mem[ARENA_MESSAGE];
	struct proto_arena a;
	enum gw_reject why;

	proto_arena_enter(&a, mem, sizeof(mem));
	why = decode_message(data, len, hs, now_ms, out, msg_id_json, idlen);
	proto_arena_leave(&a);
	return why;
}

static enum gw_reject decode_message(const char *data, size_t len,
                                     const struct gw_handshake *hs, int64_t now_ms,
                                     struct gw_msg **out, char *msg_id_json, size_t idlen)
{
	struct msg_in in;
	json_t *root;
	enum gw_reject why;

	*out = NULL;
	proto_msg_id_echo(NULL, msg_id_json, idlen);
	why = json_parse(data, len, &root);
	if (why != GW_OK)
		goto out;
	why = GW_REJECT_MALFORMED;
	if (!json_is_object(root))
		goto out;
	if (!proto_hs_usable(hs) || msg_check(root, hs, &in) < 0) {
		proto_msg_id_echo(json_object_get(root, "msg_id"), msg_id_json, idlen);
		goto out;
	}
	/* The compact object is about the input's size, plus the fields the
	 * gateway adds; a larger one grows, a smaller one is trimmed. */
	*out = proto_msg_build(&in, hs, now_ms, len + 2 * GW_ID_MAX + 256);
	if (*out == NULL) {
		/* Out of memory: no reason code of its own; the peer is told
		 * its message was refused and may retry. */
		proto_msg_id_echo(json_object_get(root, "msg_id"), msg_id_json, idlen);
		goto out;
	}
	why = GW_OK;
out:
	json_decref(root);
	return why;
}
