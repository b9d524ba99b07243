/*
 * fuzz_protocol.c - libFuzzer harness for protocol.c. Each input is tried as
 * a handshake, as a message from a mod (server_id srv-1, channel chan-1) and
 * as one from the bot, and as a msg_id for the reply encoders. Besides the
 * sanitizers it checks what the rest of the gateway relies on:
 *  - every reply and every outbound frame is one valid JSON object;
 *  - the echoed msg_id is valid JSON text and fits its buffer;
 *  - an accepted message carries the content, msg_id and route it was sent
 *    with, and its body is what the frame starts with;
 *  - the fast path decides and writes exactly what Jansson alone does.
 *
 *   make fuzzers        (into build/fuzz/; make fuzz also runs it)
 *   cp -r test/data/fuzz/protocol /tmp/corpus
 *   build/fuzz/fuzz_protocol -dict=test/data/fuzz/protocol.dict /tmp/corpus
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "protocol.h"

#define FUZZ_NOW_MS 1765189860123LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

/* text must parse as exactly one JSON value (objects only unless any). */
static json_t *check_json(const char *text, size_t len, int any)
{
	json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES |
	                       (any ? JSON_DECODE_ANY : 0), NULL);

	check(v != NULL);
	check(any || json_is_object(v));
	return v;
}

static const char *member(const json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	check(json_is_string(v));
	return json_string_value(v);
}

static void fuzz_handshake(const char *text, size_t size)
{
	struct gw_handshake hs;
	char buf[256];
	size_t n;

	if (proto_decode_handshake(text, size, &hs) != GW_OK)
		return;
	if (hs.role == GW_ROLE_MOD)
		check(hs.server_id[0] != '\0' && hs.channel_id[0] != '\0');
	else
		check(hs.role == GW_ROLE_BOT && hs.bot_id[0] != '\0');
	check(hs.resume || (hs.nsince == 0 && hs.since == NULL));
	for (size_t i = 0; i < hs.nsince; i++)
		check(hs.since[i].channel_id[0] != '\0');
	n = proto_connected(hs.role, hs.resume ? hs.epoch : NULL, hs.resume ? 0 : -1, 7, buf,
	                    sizeof(buf) - 1);
	check(n > 0);
	buf[n++] = '}';
	json_decref(check_json(buf, n, 0));
	proto_handshake_free(&hs);
}

static void fuzz_accepted(const char *text, size_t size, struct gw_msg *m,
                          const struct gw_handshake *hs)
{
	json_t *in, *out;
	size_t need, n;
	char *frame, *ack;

	check(m->refs == 1 && m->from == hs->role && m->received_ms == FUZZ_NOW_MS);
	check(strlen(m->body) == m->body_len);

	need = proto_msg_frame(m, FUZZ_NOW_MS + 1, size, NULL, 0);
	frame = malloc(need + 1);
	check(frame != NULL);
	check(proto_msg_frame(m, FUZZ_NOW_MS + 1, size, frame, need + 1) == need);
	check(memcmp(frame, m->body, m->body_len) == 0);
	out = check_json(frame, need, 0);

	/* What went in is what goes out (the input parsed: it was accepted). */
	in = json_loadb(text, size, 0, NULL);
	check(in != NULL);
	check(json_equal(json_object_get(in, "content"), json_object_get(out, "content")));
	check(json_equal(json_object_get(in, "msg_id"), json_object_get(out, "msg_id")));
	check(json_equal(json_object_get(json_object_get(in, "author"), "id"),
	                 json_object_get(json_object_get(out, "author"), "id")));
	if (json_object_get(in, "meta") != NULL && !json_is_null(json_object_get(in, "meta")))
		check(json_equal(json_object_get(in, "meta"), json_object_get(out, "meta")));
	check(strcmp(member(out, "msg_id"), m->msg_id) == 0);
	check(strcmp(member(out, "channel_id"), m->channel_id) == 0);
	check(strcmp(member(out, "type"), proto_role_name(hs->role)) == 0);
	check(clock_valid_rfc3339(member(out, "ts")));
	check(clock_valid_rfc3339(member(out, "received_at")));
	check(clock_valid_rfc3339(member(out, "forwarded_at")));
	check(json_integer_value(json_object_get(out, "dropped")) == (json_int_t)size ||
	      (size == 0 && json_object_get(out, "dropped") == NULL));
	if (hs->role == GW_ROLE_MOD)
		check(strcmp(member(out, "server_id"), m->sender) == 0);
	json_decref(in);
	json_decref(out);
	free(frame);

	ack = malloc(6 * GW_ID_MAX + 128);
	check(ack != NULL);
	n = proto_ack("completed", hs->role, m->msg_id, 1, ack, 6 * GW_ID_MAX + 128);
	check(n > 0);
	out = check_json(ack, n, 0);
	check(strcmp(member(out, "msg_id"), m->msg_id) == 0);
	json_decref(out);
	free(ack);

	proto_msg_ref(m);
	proto_msg_unref(m);
}

/* The fast path and Jansson alone give the same verdict, the same bytes
 * and the same echoed msg_id. */
static void same_as_reference(const char *text, size_t size, const struct gw_handshake *hs,
                              enum gw_reject why, const struct gw_msg *m, const char *idjson)
{
	char ref_id[GW_ID_MAX + 3];
	struct gw_msg *r = NULL;

	check(proto_decode_message_ref(text, size, hs, FUZZ_NOW_MS, &r, ref_id,
	                               sizeof(ref_id)) == why);
	check(strcmp(idjson, ref_id) == 0);
	if (why == GW_OK) {
		check(r != NULL && m != NULL && r->body_len == m->body_len);
		check(memcmp(r->body, m->body, m->body_len) == 0);
		check(strcmp(r->msg_id, m->msg_id) == 0 && strcmp(r->sender, m->sender) == 0);
		check(strcmp(r->channel_id, m->channel_id) == 0);
	}
	proto_msg_unref(r);
}

static void fuzz_message(const char *text, size_t size,
                         const struct gw_handshake *hs)
{
	char idjson[GW_ID_MAX + 3], reply[GW_ID_MAX + 128];
	struct gw_msg *m = NULL;
	enum gw_reject why;
	json_t *v;
	size_t n;

	why = proto_decode_message(text, size, hs, FUZZ_NOW_MS, &m, idjson,
	                           sizeof(idjson));
	same_as_reference(text, size, hs, why, m, idjson);
	if (why == GW_OK) {
		check(m != NULL);
		fuzz_accepted(text, size, m, hs);
		proto_msg_unref(m);
		return;
	}
	check(m == NULL);
	check(why == GW_REJECT_MALFORMED || why == GW_REJECT_TOO_DEEP);
	check(memchr(idjson, '\0', sizeof(idjson)) != NULL);
	v = check_json(idjson, strlen(idjson), 1);
	json_decref(v);
	n = proto_error("Malformed message.", 400, idjson, reply, sizeof(reply));
	check(n > 0);
	json_decref(check_json(reply, n, 0));
}

/* The raw bytes as a msg_id and a ts: whatever they are, replies stay JSON. */
static void fuzz_encoders(const uint8_t *data, size_t size)
{
	char id[GW_ID_MAX + 1], reply[6 * GW_ID_MAX + 128];
	size_t n = size < GW_ID_MAX ? size : GW_ID_MAX, len;
	json_t *o;

	if (n > 0)
		memcpy(id, data, n);
	id[n] = '\0';
	(void)clock_valid_rfc3339(id);
	len = proto_ack("queued", GW_ROLE_BOT, id, 0, reply, sizeof(reply));
	check(len > 0);
	o = check_json(reply, len, 0);
	check(json_is_string(json_object_get(o, "msg_id")));
	json_decref(o);
	len = proto_error(id, 400, NULL, reply, sizeof(reply));
	check(len > 0);
	json_decref(check_json(reply, len, 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char mod_hs[] =
		"{\"type\":\"mod\",\"data\":{\"server_id\":\"srv-1\",\"channel_id\":\"chan-1\"}}";
	static const char bot_hs[] = "{\"type\":\"bot\",\"data\":{\"bot_id\":\"bot-1\"}}";
	static struct gw_handshake mod, bot;
	static int ready;
	const char *text = (const char *)data;

	if (!ready) {
		check(proto_decode_handshake(mod_hs, sizeof(mod_hs) - 1, &mod) == GW_OK);
		check(proto_decode_handshake(bot_hs, sizeof(bot_hs) - 1, &bot) == GW_OK);
		ready = 1;
	}
	fuzz_handshake(text, size);
	fuzz_message(text, size, &mod);
	fuzz_message(text, size, &bot);
	fuzz_encoders(data, size);
	return 0;
}
