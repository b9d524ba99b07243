/*
 * test_protocol.c - unit tests for protocol.c: handshakes, message
 * validation (table- and mutation-driven), the outbound shape byte for
 * byte, Unicode round-trips, replies and reference counting. (RFC 3339
 * text: test_clock.c.)
 *
 * Run from the repository root (data files under test/data/protocol/).
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L   /* strtok_r, clock_gettime */
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "protocol.h"

#define DATA_DIR "test/data/protocol/"
#define LIT(s) s, sizeof(s) - 1   /* a literal and its length */
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define NOW_MS 1765189860123LL          /* 2025-12-08T10:31:00.123Z */
#define NOW_TEXT "2025-12-08T10:31:00.123Z"

static struct gw_handshake hs_mod;      /* server_id srv-1, channel chan-1 */
static struct gw_handshake hs_bot;      /* bot_id bot-1 */

/* ---- helpers ------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (f == NULL)
		fail_msg("cannot open %s (run from the repository root)", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static enum gw_reject hs_decode(const char *json, struct gw_handshake *hs)
{
	return proto_decode_handshake(json, strlen(json), hs);
}

/* Decodes json both ways - fast path first, and Jansson alone - and checks
 * they agree on the verdict, the echoed msg_id and every byte of the
 * message. Returns the verdict; *out gets the message (or NULL). */
static enum gw_reject decode_both(const struct gw_handshake *hs, const char *json,
                                  size_t len, struct gw_msg **out, char *idjson, size_t idlen)
{
	char *ref_id = malloc(idlen + 1);
	struct gw_msg *r = (struct gw_msg *)(uintptr_t)1;
	enum gw_reject why;

	assert_non_null(ref_id);
	why = proto_decode_message(json, len, hs, NOW_MS, out, idjson, idlen);
	assert_int_equal(proto_decode_message_ref(json, len, hs, NOW_MS, &r, ref_id, idlen), why);
	if (idlen > 0)
		assert_string_equal(idjson, ref_id);
	free(ref_id);
	if (why == GW_OK) {
		assert_non_null(r);
		assert_int_equal(r->body_len, (*out)->body_len);
		assert_memory_equal(r->body, (*out)->body, r->body_len);
		assert_string_equal(r->msg_id, (*out)->msg_id);
		assert_string_equal(r->channel_id, (*out)->channel_id);
		assert_string_equal(r->sender, (*out)->sender);
		proto_msg_unref(r);
	} else {
		assert_null(r);
	}
	return why;
}

/* Decodes, checks msg_id_json is valid JSON text, frees the message. */
static enum gw_reject decode_len(const struct gw_handshake *hs, const char *json,
                                 size_t len, char *idjson, size_t idlen)
{
	struct gw_msg *m = (struct gw_msg *)(uintptr_t)1;
	enum gw_reject why;

	why = decode_both(hs, json, len, &m, idjson, idlen);
	if (why == GW_OK) {
		assert_non_null(m);
		proto_msg_unref(m);
	} else {
		assert_null(m);
	}
	return why;
}

static enum gw_reject decode(const struct gw_handshake *hs, const char *json,
                             char *idjson)
{
	return decode_len(hs, json, strlen(json), idjson, 512);
}

/* Decodes an accepted message and returns it (caller unrefs). */
static struct gw_msg *accept(const struct gw_handshake *hs, const char *json,
                             size_t len)
{
	char idjson[512];
	struct gw_msg *m = NULL;

	assert_int_equal(decode_both(hs, json, len, &m, idjson, sizeof(idjson)), GW_OK);
	assert_non_null(m);
	return m;
}

/* The full frame of m parsed back; checks it is exactly one JSON object. */
static json_t *frame_parse(const struct gw_msg *m, int64_t now_ms,
                           uint64_t dropped, char **text)
{
	size_t need = proto_msg_frame(m, now_ms, dropped, NULL, 0);
	char *buf = malloc(need + 1);
	json_error_t err;
	json_t *o;

	assert_non_null(buf);
	assert_int_equal(proto_msg_frame(m, now_ms, dropped, buf, need + 1), need);
	assert_int_equal(strlen(buf), need);
	o = json_loadb(buf, need, JSON_REJECT_DUPLICATES, &err);
	if (o == NULL)
		fail_msg("frame is not JSON (%s): %s", err.text, buf);
	assert_true(json_is_object(o));
	if (text != NULL)
		*text = buf;
	else
		free(buf);
	return o;
}

static const char *str_member(const json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_string(v))
		fail_msg("member %s missing or not a string", key);
	return json_string_value(v);
}

/* "k1,k2,..." of o's members in order. */
static void key_order(json_t *o, char *buf, size_t cap)
{
	void *it;

	buf[0] = '\0';
	for (it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
		if (buf[0] != '\0')
			strncat(buf, ",", cap - strlen(buf) - 1);
		strncat(buf, json_object_iter_key(it), cap - strlen(buf) - 1);
	}
}

/* A valid message from role with the given content; caller frees. */
static char *message_with_content(enum gw_role role, const char *content)
{
	json_t *o;
	char *s;

	if (role == GW_ROLE_MOD)
		o = json_pack("{s:s, s:s, s:{s:s}, s:{s:s}, s:s}", "msg_id", "m-1",
		              "id", "srv-1", "destination", "channel_id", "chan-1",
		              "author", "id", "p-1", "content", content);
	else
		o = json_pack("{s:s, s:s, s:{s:s}, s:s}", "msg_id", "m-1",
		              "id", "chan-1", "author", "id", "u-1", "content", content);
	assert_non_null(o);
	s = json_dumps(o, JSON_COMPACT);
	assert_non_null(s);
	json_decref(o);
	return s;
}

static int group_setup(void **state)
{
	(void)state;
	if (hs_decode("{\"type\":\"mod\",\"data\":{\"server_id\":\"srv-1\","
	              "\"channel_id\":\"chan-1\"}}", &hs_mod) != GW_OK)
		return -1;
	if (hs_decode("{\"type\":\"bot\",\"data\":{\"bot_id\":\"bot-1\"}}",
	              &hs_bot) != GW_OK)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	proto_handshake_free(&hs_mod);
	proto_handshake_free(&hs_bot);
	return 0;
}

/* ---- handshakes ---------------------------------------------------------- */

static void test_handshake_mod(void **state)
{
	struct gw_handshake hs;

	(void)state;
	memset(&hs, 0x55, sizeof(hs));
	assert_int_equal(hs_decode("{\"type\":\"mod\",\"data\":{\"server_id\":"
	                           "\"minecraft-server-001\",\"channel_id\":"
	                           "\"123456789\"},\"extra\":[1,2]}", &hs), GW_OK);
	assert_int_equal(hs.role, GW_ROLE_MOD);
	assert_string_equal(hs.server_id, "minecraft-server-001");
	assert_string_equal(hs.channel_id, "123456789");
	assert_string_equal(hs.bot_id, "");
	assert_int_equal(hs.events, 0);
	proto_handshake_free(&hs);
}

static void test_handshake_bot(void **state)
{
	struct gw_handshake hs;

	(void)state;
	memset(&hs, 0x55, sizeof(hs));
	assert_int_equal(hs_decode("  {\"data\":{\"bot_id\":\"discord-bot-123\","
	                           "\"events\":true},\"type\":\"bot\"}\n", &hs), GW_OK);
	assert_int_equal(hs.role, GW_ROLE_BOT);
	assert_string_equal(hs.bot_id, "discord-bot-123");
	assert_string_equal(hs.server_id, "");
	assert_string_equal(hs.channel_id, "");
	assert_int_equal(hs.events, 1);
	proto_handshake_free(&hs);
}

static void test_handshake_events(void **state)
{
	struct gw_handshake hs;

	(void)state;
	assert_int_equal(hs_decode("{\"type\":\"mod\",\"data\":{\"server_id\":\"s\","
	                           "\"channel_id\":\"c\",\"events\":true}}", &hs), GW_OK);
	assert_int_equal(hs.events, 1);
	proto_handshake_free(&hs);
	assert_int_equal(hs_decode("{\"type\":\"mod\",\"data\":{\"server_id\":\"s\","
	                           "\"channel_id\":\"c\",\"events\":false}}", &hs), GW_OK);
	assert_int_equal(hs.events, 0);
	proto_handshake_free(&hs);
	assert_int_equal(hs_decode("{\"type\":\"bot\",\"data\":{\"bot_id\":\"b\","
	                           "\"events\":null}}", &hs), GW_OK);
	assert_int_equal(hs.events, 0);
	proto_handshake_free(&hs);
}

/* since: a mod's {epoch, seq}, a bot's {epoch, channels}; anything else in
 * it is a malformed handshake, with nothing left allocated. */
static void test_handshake_since(void **state)
{
	static const char *const bad[] = {
		"{\"type\":\"mod\",\"data\":{\"server_id\":\"s\",\"channel_id\":\"c\",\"since\":5}}",
		"{\"type\":\"mod\",\"data\":{\"server_id\":\"s\",\"channel_id\":\"c\",\"since\":{\"seq\":1}}}",
		"{\"type\":\"mod\",\"data\":{\"server_id\":\"s\",\"channel_id\":\"c\","
		"\"since\":{\"epoch\":\"e\",\"seq\":-1}}}",
		"{\"type\":\"mod\",\"data\":{\"server_id\":\"s\",\"channel_id\":\"c\","
		"\"since\":{\"epoch\":\"e\",\"seq\":1.5}}}",
		"{\"type\":\"mod\",\"data\":{\"server_id\":\"s\",\"channel_id\":\"c\","
		"\"since\":{\"epoch\":\"\",\"seq\":1}}}",
		"{\"type\":\"bot\",\"data\":{\"bot_id\":\"b\",\"since\":{\"epoch\":\"e\"}}}",
		"{\"type\":\"bot\",\"data\":{\"bot_id\":\"b\",\"since\":{\"epoch\":\"e\","
		"\"channels\":{\"c1\":1,\"c2\":\"2\"}}}}",
		"{\"type\":\"bot\",\"data\":{\"bot_id\":\"b\",\"since\":{\"epoch\":\"e\","
		"\"channels\":{\"c1\":9007199254740993}}}}",
	};
	struct gw_handshake hs;

	(void)state;
	assert_int_equal(hs_decode("{\"type\":\"mod\",\"data\":{\"server_id\":\"s\","
	                           "\"channel_id\":\"c\",\"since\":{\"epoch\":\"a1b2\",\"seq\":42}}}",
	                           &hs), GW_OK);
	assert_int_equal(hs.resume, 1);
	assert_string_equal(hs.epoch, "a1b2");
	assert_int_equal(hs.since_seq, 42);
	assert_int_equal(hs.nsince, 0);
	proto_handshake_free(&hs);
	assert_int_equal(hs_decode("{\"type\":\"bot\",\"data\":{\"bot_id\":\"b\",\"since\":"
	                           "{\"epoch\":\"e9\",\"channels\":{\"c1\":3,\"c2\":0}}}}", &hs), GW_OK);
	assert_int_equal(hs.resume, 1);
	assert_string_equal(hs.epoch, "e9");
	assert_int_equal(hs.nsince, 2);
	assert_string_equal(hs.since[0].channel_id, "c1");
	assert_int_equal(hs.since[0].seq, 3);
	assert_string_equal(hs.since[1].channel_id, "c2");
	assert_int_equal(hs.since[1].seq, 0);
	proto_handshake_release(&hs);
	assert_null(hs.since);
	assert_string_equal(hs.epoch, "e9");   /* the rest stays valid */
	assert_string_equal(hs.bot_id, "b");
	proto_handshake_free(&hs);
	assert_int_equal(hs_decode("{\"type\":\"bot\",\"data\":{\"bot_id\":\"b\",\"since\":null}}",
	                           &hs), GW_OK);
	assert_int_equal(hs.resume, 0);
	assert_string_equal(hs.epoch, "");
	proto_handshake_free(&hs);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(hs_decode(bad[i], &hs), GW_REJECT_MALFORMED);
}

/* Ids at the limit pass, one byte over fails; multi-byte counts bytes. */
static void test_handshake_id_length(void **state)
{
	char id[GW_ID_MAX + 2], json[GW_ID_MAX * 2 + 128];
	struct gw_handshake hs;

	(void)state;
	memset(id, 'x', GW_ID_MAX);
	id[GW_ID_MAX] = '\0';
	snprintf(json, sizeof(json), "{\"type\":\"bot\",\"data\":{\"bot_id\":\"%s\"}}", id);
	assert_int_equal(hs_decode(json, &hs), GW_OK);
	assert_int_equal(strlen(hs.bot_id), GW_ID_MAX);
	proto_handshake_free(&hs);

	strcat(id, "x");
	snprintf(json, sizeof(json), "{\"type\":\"bot\",\"data\":{\"bot_id\":\"%s\"}}", id);
	assert_int_equal(hs_decode(json, &hs), GW_REJECT_MALFORMED);
	snprintf(json, sizeof(json), "{\"type\":\"mod\",\"data\":{\"server_id\":\"%s\","
	         "\"channel_id\":\"c\"}}", id);
	assert_int_equal(hs_decode(json, &hs), GW_REJECT_MALFORMED);
	snprintf(json, sizeof(json), "{\"type\":\"mod\",\"data\":{\"server_id\":\"s\","
	         "\"channel_id\":\"%s\"}}", id);
	assert_int_equal(hs_decode(json, &hs), GW_REJECT_MALFORMED);

	/* 128 two-byte characters = 256 bytes: fine; one more: too long */
	json[0] = '\0';
	strcat(json, "{\"type\":\"bot\",\"data\":{\"bot_id\":\"");
	for (int i = 0; i < GW_ID_MAX / 2; i++)
		strcat(json, "\xc3\xa9");
	strcat(json, "\"}}");
	assert_int_equal(hs_decode(json, &hs), GW_OK);
	proto_handshake_free(&hs);
	json[strlen(json) - 3] = '\0';
	strcat(json, "e\"}}");
	assert_int_equal(hs_decode(json, &hs), GW_REJECT_MALFORMED);
}

struct hs_case {
	const char *name;
	const char *json;
	size_t len;             /* 0: strlen */
	enum gw_reject want;
};

#define HS_MOD(data) "{\"type\":\"mod\",\"data\":" data "}"
#define HS_BOT(data) "{\"type\":\"bot\",\"data\":" data "}"
#define MAL GW_REJECT_MALFORMED

static const struct hs_case hs_cases[] = {
	{ "hs empty input", "", 0, MAL },
	{ "hs whitespace only", "   \n", 0, MAL },
	{ "hs not json", "hello", 0, MAL },
	{ "hs truncated", "{\"type\":\"mod\",\"data\":{\"server_id\":\"s\"", 0, MAL },
	{ "hs trailing garbage", HS_BOT("{\"bot_id\":\"b\"}") " x", 0, MAL },
	{ "hs two objects", HS_BOT("{\"bot_id\":\"b\"}") HS_BOT("{\"bot_id\":\"b\"}"), 0, MAL },
	{ "hs top-level array", "[" HS_BOT("{\"bot_id\":\"b\"}") "]", 0, MAL },
	{ "hs top-level string", "\"mod\"", 0, MAL },
	{ "hs top-level number", "1", 0, MAL },
	{ "hs top-level null", "null", 0, MAL },
	{ "hs empty object", "{}", 0, MAL },
	{ "hs type missing", "{\"data\":{\"bot_id\":\"b\"}}", 0, MAL },
	{ "hs type number", "{\"type\":1,\"data\":{\"bot_id\":\"b\"}}", 0, MAL },
	{ "hs type null", "{\"type\":null,\"data\":{\"bot_id\":\"b\"}}", 0, MAL },
	{ "hs type object", "{\"type\":{},\"data\":{\"bot_id\":\"b\"}}", 0, MAL },
	{ "hs type array", "{\"type\":[\"bot\"],\"data\":{\"bot_id\":\"b\"}}", 0, MAL },
	{ "hs type unknown", "{\"type\":\"relay\",\"data\":{\"bot_id\":\"b\"}}", 0,
	  GW_REJECT_UNKNOWN_TYPE },
	{ "hs type case", "{\"type\":\"BOT\",\"data\":{\"bot_id\":\"b\"}}", 0,
	  GW_REJECT_UNKNOWN_TYPE },
	{ "hs type empty", "{\"type\":\"\",\"data\":{\"bot_id\":\"b\"}}", 0,
	  GW_REJECT_UNKNOWN_TYPE },
	{ "hs type unknown no data", "{\"type\":\"x\"}", 0, GW_REJECT_UNKNOWN_TYPE },
	{ "hs type duplicated", "{\"type\":\"bot\",\"type\":\"mod\",\"data\":"
	  "{\"bot_id\":\"b\",\"server_id\":\"s\",\"channel_id\":\"c\"}}", 0, MAL },
	{ "hs data missing", "{\"type\":\"bot\"}", 0, MAL },
	{ "hs data null", HS_BOT("null"), 0, MAL },
	{ "hs data string", HS_BOT("\"bot_id\""), 0, MAL },
	{ "hs data array", HS_BOT("[{\"bot_id\":\"b\"}]"), 0, MAL },
	{ "hs mod data empty", HS_MOD("{}"), 0, MAL },
	{ "hs mod server_id missing", HS_MOD("{\"channel_id\":\"c\"}"), 0, MAL },
	{ "hs mod server_id empty", HS_MOD("{\"server_id\":\"\",\"channel_id\":\"c\"}"), 0, MAL },
	{ "hs mod server_id number", HS_MOD("{\"server_id\":1,\"channel_id\":\"c\"}"), 0, MAL },
	{ "hs mod server_id null", HS_MOD("{\"server_id\":null,\"channel_id\":\"c\"}"), 0, MAL },
	{ "hs mod server_id object", HS_MOD("{\"server_id\":{},\"channel_id\":\"c\"}"), 0, MAL },
	{ "hs mod channel_id missing", HS_MOD("{\"server_id\":\"s\"}"), 0, MAL },
	{ "hs mod channel_id empty", HS_MOD("{\"server_id\":\"s\",\"channel_id\":\"\"}"), 0, MAL },
	{ "hs mod channel_id number", HS_MOD("{\"server_id\":\"s\",\"channel_id\":123456789}"), 0, MAL },
	{ "hs mod channel_id bool", HS_MOD("{\"server_id\":\"s\",\"channel_id\":true}"), 0, MAL },
	{ "hs mod with bot_id only", HS_MOD("{\"bot_id\":\"b\"}"), 0, MAL },
	{ "hs bot bot_id missing", HS_BOT("{}"), 0, MAL },
	{ "hs bot bot_id empty", HS_BOT("{\"bot_id\":\"\"}"), 0, MAL },
	{ "hs bot bot_id number", HS_BOT("{\"bot_id\":7}"), 0, MAL },
	{ "hs bot bot_id array", HS_BOT("{\"bot_id\":[\"b\"]}"), 0, MAL },
	{ "hs bot with mod fields only", HS_BOT("{\"server_id\":\"s\",\"channel_id\":\"c\"}"), 0, MAL },
	{ "hs events string", HS_BOT("{\"bot_id\":\"b\",\"events\":\"yes\"}"), 0, MAL },
	{ "hs events number", HS_BOT("{\"bot_id\":\"b\",\"events\":1}"), 0, MAL },
	{ "hs id control char", HS_BOT("{\"bot_id\":\"a\\u0001b\"}"), 0, MAL },
	{ "hs id tab", HS_BOT("{\"bot_id\":\"a\\tb\"}"), 0, MAL },
	{ "hs id newline", HS_MOD("{\"server_id\":\"s\\n\",\"channel_id\":\"c\"}"), 0, MAL },
	{ "hs id DEL", HS_MOD("{\"server_id\":\"s\",\"channel_id\":\"c\\u007f\"}"), 0, MAL },
	{ "hs id C1 control", HS_BOT("{\"bot_id\":\"b\\u0085\"}"), 0, MAL },
	{ "hs id NUL escape", HS_BOT("{\"bot_id\":\"b\\u0000x\"}"), 0, MAL },
	{ "hs raw NUL in string", HS_BOT("{\"bot_id\":\"b\0x\"}"),
	  sizeof(HS_BOT("{\"bot_id\":\"b\0x\"}")) - 1, MAL },
	{ "hs raw NUL after object", HS_BOT("{\"bot_id\":\"b\"}") "\0",
	  sizeof(HS_BOT("{\"bot_id\":\"b\"}")), MAL },
	{ "hs invalid UTF-8 id", HS_BOT("{\"bot_id\":\"b\xff\"}"), 0, MAL },
	{ "hs overlong UTF-8", HS_BOT("{\"bot_id\":\"\xc0\xaf\"}"), 0, MAL },
	{ "hs lone surrogate escape", HS_BOT("{\"bot_id\":\"\\ud800\"}"), 0, MAL },
	{ "hs huge number elsewhere", HS_BOT("{\"bot_id\":\"b\",\"n\":1e999}"), 0, MAL },
	{ "hs too deep",
	  HS_BOT("{\"bot_id\":\"b\",\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"),
	  0, GW_REJECT_TOO_DEEP },
	{ "hs depth at limit ok",
	  HS_BOT("{\"bot_id\":\"b\",\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"),
	  0, GW_OK },
	{ "hs unicode ids ok", HS_MOD("{\"server_id\":\"\xe6\xbc\xa2\\u5b57\","
	  "\"channel_id\":\"\xf0\x9f\x98\x80\"}"), 0, GW_OK },
};

static void run_hs_case(void **state)
{
	const struct hs_case *c = *state;
	struct gw_handshake hs, before;
	size_t len = c->len ? c->len : strlen(c->json);

	memset(&hs, 0xA5, sizeof(hs));
	before = hs;
	assert_int_equal(proto_decode_handshake(c->json, len, &hs), c->want);
	if (c->want != GW_OK)   /* *hs untouched on error */
		assert_memory_equal(&hs, &before, sizeof(hs));
	else
		proto_handshake_free(&hs);
}

/* ---- message validation -------------------------------------------------- */

#define MOD_BASE "{\"msg_id\":\"m-1\",\"id\":\"srv-1\",\"destination\":" \
	"{\"channel_id\":\"chan-1\"},\"author\":{\"id\":\"p-1\",\"name\":\"Steve\"}," \
	"\"content\":\"Hello\",\"meta\":{\"world\":\"overworld\"}," \
	"\"ts\":\"2025-12-08T10:30:00Z\"}"
#define BOT_BASE "{\"msg_id\":\"m-1\",\"id\":\"chan-1\",\"author\":" \
	"{\"id\":\"u-1\",\"name\":\"Alex\"},\"content\":\"Hi\"," \
	"\"meta\":{\"platform\":\"discord\",\"roles\":[\"admin\"]}," \
	"\"ts\":\"2025-12-08T10:31:00Z\"}"

/* A mutation of the base message: the member at `path` ("a" or "a.b") is
 * removed (value NULL) or replaced by the JSON text `value`. */
struct mut_case {
	char name[96];
	enum gw_role role;
	const char *path;
	const char *value;
	enum gw_reject want;
};

static const char *const bad_values[] = {
	NULL, "\"\"", "1", "0.5", "true", "null", "[]", "{}", "[\"m-1\"]",
};
static const char *const mod_required[] = {
	"msg_id", "id", "destination", "destination.channel_id", "author",
	"author.id", "content",
};
static const char *const bot_required[] = {
	"msg_id", "id", "author", "author.id", "content",
};

struct opt_case {
	const char *path;
	const char *value;
	enum gw_reject want;
};

static const struct opt_case opt_cases[] = {
	{ "author.name", NULL, GW_OK },
	{ "author.name", "null", GW_OK },
	{ "author.name", "\"\"", MAL },
	{ "author.name", "1", MAL },
	{ "author.name", "{}", MAL },
	{ "author.extra", "[1,2]", GW_OK },
	{ "meta", NULL, GW_OK },
	{ "meta", "null", GW_OK },
	{ "meta", "{}", GW_OK },
	{ "meta", "\"\"", MAL },
	{ "meta", "\"text\"", MAL },
	{ "meta", "[]", MAL },
	{ "meta", "[{}]", MAL },
	{ "meta", "1", MAL },
	{ "meta", "true", MAL },
	{ "ts", NULL, GW_OK },
	{ "ts", "null", GW_OK },
	{ "ts", "\"2025-12-08T10:30:00.123456+05:30\"", GW_OK },
	{ "ts", "\"\"", MAL },
	{ "ts", "\"yesterday\"", MAL },
	{ "ts", "\"2025-12-08\"", MAL },
	{ "ts", "\"2025-13-08T10:30:00Z\"", MAL },
	{ "ts", "\"2025-12-08 10:30:00Z\"", MAL },
	{ "ts", "1765189800", MAL },
	{ "ts", "{}", MAL },
	{ "content", "\" \"", GW_OK },
	{ "extra_field", "{\"x\":[1,2,3]}", GW_OK },
	{ "type", "\"bot\"", GW_OK },
	{ "received_at", "\"forged\"", GW_OK },
	{ "msg_id", "\"\\u0001\"", MAL },
	{ "msg_id", "\"m\\n1\"", MAL },
};

static struct mut_case mut_cases[ARRAY_LEN(bad_values) *
                                 (ARRAY_LEN(mod_required) + ARRAY_LEN(bot_required)) +
                                 2 * ARRAY_LEN(opt_cases) + 8];
static size_t mut_count;

static void mut_add(enum gw_role role, const char *path, const char *value,
                    enum gw_reject want)
{
	struct mut_case *c = &mut_cases[mut_count++];

	assert_true(mut_count <= ARRAY_LEN(mut_cases));
	snprintf(c->name, sizeof(c->name), "%s msg: %s %s%s%s",
	         proto_role_name(role), path, value ? "= " : "removed",
	         value ? value : "", want == GW_OK ? " -> ok" : "");
	c->role = role;
	c->path = path;
	c->value = value;
	c->want = want;
}

static void mut_build(void)
{
	size_t i, j;

	for (i = 0; i < ARRAY_LEN(mod_required); i++)
		for (j = 0; j < ARRAY_LEN(bad_values); j++)
			mut_add(GW_ROLE_MOD, mod_required[i], bad_values[j], MAL);
	for (i = 0; i < ARRAY_LEN(bot_required); i++)
		for (j = 0; j < ARRAY_LEN(bad_values); j++)
			mut_add(GW_ROLE_BOT, bot_required[i], bad_values[j], MAL);
	for (i = 0; i < ARRAY_LEN(opt_cases); i++) {
		mut_add(GW_ROLE_MOD, opt_cases[i].path, opt_cases[i].value, opt_cases[i].want);
		mut_add(GW_ROLE_BOT, opt_cases[i].path, opt_cases[i].value, opt_cases[i].want);
	}
	/* A bot's destination is not used: anything there is fine. */
	mut_add(GW_ROLE_BOT, "destination", "{\"channel_id\":\"other\"}", GW_OK);
	mut_add(GW_ROLE_BOT, "destination", "\"\"", GW_OK);
	mut_add(GW_ROLE_BOT, "destination", "7", GW_OK);
	/* Identity and routing checks. */
	mut_add(GW_ROLE_MOD, "id", "\"srv-2\"", MAL);
	mut_add(GW_ROLE_MOD, "id", "\"SRV-1\"", MAL);
	mut_add(GW_ROLE_MOD, "destination.channel_id", "\"chan-2\"", MAL);
	mut_add(GW_ROLE_MOD, "destination.channel_id", "\"chan-1 \"", MAL);
	mut_add(GW_ROLE_BOT, "id", "\"chan\\u0007\"", MAL);
}

static void run_mut_case(void **state)
{
	const struct mut_case *c = *state;
	char key[32], idjson[512], want_id[512];
	const char *dot = strchr(c->path, '.');
	json_t *root, *parent, *v = NULL;
	char *text;
	enum gw_reject why;

	root = json_loads(c->role == GW_ROLE_MOD ? MOD_BASE : BOT_BASE, 0, NULL);
	assert_non_null(root);
	parent = root;
	if (dot != NULL) {
		snprintf(key, sizeof(key), "%.*s", (int)(dot - c->path), c->path);
		parent = json_object_get(root, key);
		assert_non_null(parent);
		snprintf(key, sizeof(key), "%s", dot + 1);
	} else {
		snprintf(key, sizeof(key), "%s", c->path);
	}
	if (c->value == NULL) {
		json_object_del(parent, key);
	} else {
		v = json_loads(c->value, JSON_DECODE_ANY, NULL);
		assert_non_null(v);
		assert_int_equal(json_object_set(parent, key, v), 0);
	}
	text = json_dumps(root, JSON_COMPACT);
	assert_non_null(text);

	why = decode(c->role == GW_ROLE_MOD ? &hs_mod : &hs_bot, text, idjson);
	assert_int_equal(why, c->want);
	if (why != GW_OK) {
		/* The reply echoes msg_id exactly as the sender gave it. */
		if (strcmp(c->path, "msg_id") != 0)
			snprintf(want_id, sizeof(want_id), "\"m-1\"");
		else if (v == NULL)
			snprintf(want_id, sizeof(want_id), "null");
		else {
			char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			snprintf(want_id, sizeof(want_id), "%s", d);
			free(d);
		}
		assert_string_equal(idjson, want_id);
	}
	json_decref(v);
	json_decref(root);
	free(text);
}

struct raw_case {
	const char *name;
	enum gw_role role;
	const char *json;
	size_t len;
	enum gw_reject want;
	const char *idjson;
};

#define MOD_WITH(field) "{\"msg_id\":\"m-1\",\"id\":\"srv-1\",\"destination\":" \
	"{\"channel_id\":\"chan-1\"},\"author\":{\"id\":\"p-1\"}," field "}"

static const struct raw_case raw_cases[] = {
	{ "msg empty input", GW_ROLE_MOD, "", 0, MAL, "null" },
	{ "msg not json", GW_ROLE_MOD, "Hello from the game server!", 0, MAL, "null" },
	{ "msg not json bot", GW_ROLE_BOT, "msg_id=1", 0, MAL, "null" },
	{ "msg truncated", GW_ROLE_MOD, "{\"msg_id\":\"m-1\",\"id\":", 0, MAL, "null" },
	{ "msg top-level array", GW_ROLE_MOD, "[" MOD_BASE "]", 0, MAL, "null" },
	{ "msg top-level array bot", GW_ROLE_BOT, "[" BOT_BASE "]", 0, MAL, "null" },
	{ "msg top-level string", GW_ROLE_BOT, "\"hi\"", 0, MAL, "null" },
	{ "msg top-level number", GW_ROLE_BOT, "42", 0, MAL, "null" },
	{ "msg empty object", GW_ROLE_BOT, "{}", 0, MAL, "null" },
	{ "msg trailing garbage", GW_ROLE_MOD, MOD_BASE "x", 0, MAL, "null" },
	{ "msg two objects", GW_ROLE_BOT, BOT_BASE BOT_BASE, 0, MAL, "null" },
	{ "msg duplicate key", GW_ROLE_MOD, MOD_WITH("\"content\":\"a\",\"content\":\"b\""),
	  0, MAL, "null" },
	{ "msg duplicate key in meta", GW_ROLE_MOD,
	  MOD_WITH("\"content\":\"a\",\"meta\":{\"k\":1,\"k\":2}"), 0, MAL, "null" },
	{ "msg invalid UTF-8 byte", GW_ROLE_MOD, MOD_WITH("\"content\":\"a\xff\""), 0, MAL, "null" },
	{ "msg lone continuation", GW_ROLE_MOD, MOD_WITH("\"content\":\"\x80\""), 0, MAL, "null" },
	{ "msg truncated sequence", GW_ROLE_MOD, MOD_WITH("\"content\":\"\xe2\x82\""), 0, MAL, "null" },
	{ "msg overlong slash", GW_ROLE_MOD, MOD_WITH("\"content\":\"\xc0\xaf\""), 0, MAL, "null" },
	{ "msg UTF-8 surrogate", GW_ROLE_MOD, MOD_WITH("\"content\":\"\xed\xa0\x80\""), 0, MAL, "null" },
	{ "msg beyond U+10FFFF", GW_ROLE_MOD, MOD_WITH("\"content\":\"\xf4\x90\x80\x80\""), 0, MAL, "null" },
	{ "msg invalid UTF-8 in key", GW_ROLE_MOD, MOD_WITH("\"content\":\"a\",\"\xfe\":1"), 0, MAL, "null" },
	{ "msg lone high surrogate", GW_ROLE_MOD, MOD_WITH("\"content\":\"\\ud83d\""), 0, MAL, "null" },
	{ "msg lone low surrogate", GW_ROLE_MOD, MOD_WITH("\"content\":\"\\ude00x\""), 0, MAL, "null" },
	{ "msg NUL escape in content", GW_ROLE_MOD, MOD_WITH("\"content\":\"a\\u0000b\""), 0, MAL, "null" },
	{ "msg raw NUL in content", GW_ROLE_MOD, MOD_WITH("\"content\":\"a\0b\""),
	  sizeof(MOD_WITH("\"content\":\"a\0b\"")) - 1, MAL, "null" },
	{ "msg raw control in content", GW_ROLE_MOD, MOD_WITH("\"content\":\"a\nb\""), 0, MAL, "null" },
	{ "msg huge integer in meta", GW_ROLE_MOD,
	  MOD_WITH("\"content\":\"a\",\"meta\":{\"n\":99999999999999999999}"), 0, MAL, "null" },
	{ "msg huge real in meta", GW_ROLE_MOD,
	  MOD_WITH("\"content\":\"a\",\"meta\":{\"n\":1e400}"), 0, MAL, "null" },
	{ "msg NaN in meta", GW_ROLE_MOD, MOD_WITH("\"content\":\"a\",\"meta\":{\"n\":NaN}"), 0, MAL, "null" },
	{ "msg escaped content ok", GW_ROLE_MOD, MOD_WITH("\"content\":\"a\\nb\\u0001\\\"\""),
	  0, GW_OK, NULL },
	{ "msg brackets in strings ok", GW_ROLE_MOD,
	  MOD_WITH("\"content\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{\""),
	  0, GW_OK, NULL },
	{ "msg escaped quote then brackets ok", GW_ROLE_MOD,
	  MOD_WITH("\"content\":\"\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\\\"") , 0, GW_OK, NULL },
	{ "msg depth 32 ok", GW_ROLE_MOD,
	  MOD_WITH("\"content\":\"a\",\"meta\":{\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"),
	  0, GW_OK, NULL },
	{ "msg depth 33 too deep", GW_ROLE_MOD,
	  MOD_WITH("\"content\":\"a\",\"meta\":{\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"),
	  0, GW_REJECT_TOO_DEEP, "null" },
	{ "msg deep in extra field", GW_ROLE_BOT,
	  "{\"msg_id\":\"m-9\",\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
	  0, GW_REJECT_TOO_DEEP, "null" },
	{ "msg bot null id", GW_ROLE_BOT, "{\"msg_id\":\"m-1\",\"id\":null,\"author\":"
	  "{\"id\":\"u\"},\"content\":\"c\"}", 0, MAL, "\"m-1\"" },
	{ "msg mod destination mismatch", GW_ROLE_MOD,
	  "{\"msg_id\":\"m-2\",\"id\":\"srv-1\",\"destination\":{\"channel_id\":\"chan-2\"},"
	  "\"author\":{\"id\":\"p\"},\"content\":\"c\"}", 0, MAL, "\"m-2\"" },
	{ "msg mod id is channel", GW_ROLE_MOD,
	  "{\"msg_id\":\"m-2\",\"id\":\"chan-1\",\"destination\":{\"channel_id\":\"chan-1\"},"
	  "\"author\":{\"id\":\"p\"},\"content\":\"c\"}", 0, MAL, "\"m-2\"" },
	{ "msg mod destination at top level", GW_ROLE_MOD,
	  "{\"msg_id\":\"m-2\",\"id\":\"srv-1\",\"channel_id\":\"chan-1\","
	  "\"author\":{\"id\":\"p\"},\"content\":\"c\"}", 0, MAL, "\"m-2\"" },
	{ "msg msg_id echoed with quotes", GW_ROLE_BOT, "{\"msg_id\":\"a\\\"b\\\\c\"}", 0, MAL,
	  "\"a\\\"b\\\\c\"" },
	{ "msg msg_id echoed unicode", GW_ROLE_BOT, "{\"msg_id\":\"\\u00e9\xf0\x9f\x98\x80/\"}",
	  0, MAL, "\"\xc3\xa9\xf0\x9f\x98\x80/\"" },
	{ "msg msg_id echoed number", GW_ROLE_BOT, "{\"msg_id\":42}", 0, MAL, "42" },
	{ "msg msg_id echoed real", GW_ROLE_BOT, "{\"msg_id\":0.1}", 0, MAL, "0.1" },
	{ "msg msg_id echoed object", GW_ROLE_BOT, "{\"msg_id\":{\"a\":[1,true,null]}}",
	  0, MAL, "{\"a\":[1,true,null]}" },
	{ "msg msg_id echoed control", GW_ROLE_BOT, "{\"msg_id\":\"\\u0001\\n\"}", 0, MAL,
	  "\"\\u0001\\n\"" },
	{ "msg msg_id absent", GW_ROLE_BOT, "{\"id\":\"chan-1\"}", 0, MAL, "null" },
};

static void run_raw_case(void **state)
{
	const struct raw_case *c = *state;
	size_t len = c->len ? c->len : strlen(c->json);
	char idjson[512];

	assert_int_equal(decode_len(c->role == GW_ROLE_MOD ? &hs_mod : &hs_bot,
	                            c->json, len, idjson, sizeof(idjson)), c->want);
	if (c->idjson != NULL)
		assert_string_equal(idjson, c->idjson);
}

static void test_valid_examples(void **state)
{
	char idjson[64];

	(void)state;
	assert_int_equal(decode(&hs_mod, MOD_BASE, idjson), GW_OK);
	assert_int_equal(decode(&hs_bot, BOT_BASE, idjson), GW_OK);
	assert_int_equal(decode(&hs_mod, MOD_WITH("\"content\":\"x\""), idjson), GW_OK);
}

/* The README's pretty-printed examples, with their own handshakes. */
static void test_readme_examples(void **state)
{
	struct gw_handshake mod, bot;
	struct gw_msg *m;
	size_t len;
	char *text;

	(void)state;
	assert_int_equal(hs_decode("{\"type\":\"mod\",\"data\":{\"server_id\":"
	                           "\"minecraft-server-001\",\"channel_id\":\"123456789\"}}",
	                           &mod), GW_OK);
	assert_int_equal(hs_decode("{\"type\":\"bot\",\"data\":{\"bot_id\":"
	                           "\"discord-bot-123\"}}", &bot), GW_OK);

	text = read_file(DATA_DIR "mod_message.json", &len);
	m = accept(&mod, text, len);
	assert_string_equal(m->channel_id, "123456789");
	assert_string_equal(m->sender, "minecraft-server-001");
	assert_string_equal(m->msg_id, "msg-unique-123");
	assert_true(m->body_len < len);        /* whitespace gone */
	proto_msg_unref(m);
	free(text);

	text = read_file(DATA_DIR "bot_message.json", &len);
	m = accept(&bot, text, len);
	assert_string_equal(m->channel_id, "123456789");
	assert_string_equal(m->sender, "discord-bot-123");
	assert_string_equal(m->msg_id, "discord-msg-456");
	assert_int_equal(m->from, GW_ROLE_BOT);
	proto_msg_unref(m);
	free(text);
	proto_handshake_free(&mod);
	proto_handshake_free(&bot);
}

static void test_msg_id_length(void **state)
{
	char json[1024], idjson[512], id[GW_ID_MAX + 2];

	(void)state;
	memset(id, 'm', GW_ID_MAX);
	id[GW_ID_MAX] = '\0';
	snprintf(json, sizeof(json), "{\"msg_id\":\"%s\",\"id\":\"chan-1\",\"author\":"
	         "{\"id\":\"u\"},\"content\":\"c\"}", id);
	assert_int_equal(decode(&hs_bot, json, idjson), GW_OK);

	strcat(id, "m");
	snprintf(json, sizeof(json), "{\"msg_id\":\"%s\",\"id\":\"chan-1\",\"author\":"
	         "{\"id\":\"u\"},\"content\":\"c\"}", id);
	assert_int_equal(decode(&hs_bot, json, idjson), MAL);
	/* still echoed: it fits the reply buffer */
	assert_int_equal(strlen(idjson), GW_ID_MAX + 1 + 2);

	snprintf(json, sizeof(json), "{\"msg_id\":\"m\",\"id\":\"%s\",\"author\":"
	         "{\"id\":\"u\"},\"content\":\"c\"}", id);
	assert_int_equal(decode(&hs_bot, json, idjson), MAL);
	assert_string_equal(idjson, "\"m\"");
}

/* msg_id_json never overflows: an echo that does not fit becomes null, a
 * buffer too small for null is left empty. */
static void test_msg_id_echo_limits(void **state)
{
	static const char huge_fmt[] = "{\"msg_id\":\"%s\"}";
	char *big, *json, idjson[64];
	size_t n = 100000;

	(void)state;
	big = malloc(n + 1);
	json = malloc(n + 64);
	if (!big || !json)
		abort();   /* tells the compiler, unlike assert_non_null */
	memset(big, 'q', n);
	big[n] = '\0';
	snprintf(json, n + 64, huge_fmt, big);
	assert_int_equal(decode_len(&hs_bot, json, strlen(json), idjson, sizeof(idjson)), MAL);
	assert_string_equal(idjson, "null");

	/* exactly fits: 61 chars + quotes = 63 = idlen - 1 */
	big[61] = '\0';
	snprintf(json, n + 64, huge_fmt, big);
	assert_int_equal(decode_len(&hs_bot, json, strlen(json), idjson, sizeof(idjson)), MAL);
	assert_int_equal(strlen(idjson), 63);
	big[61] = 'q';
	big[62] = '\0';
	snprintf(json, n + 64, huge_fmt, big);
	assert_int_equal(decode_len(&hs_bot, json, strlen(json), idjson, sizeof(idjson)), MAL);
	assert_string_equal(idjson, "null");

	/* an array msg_id too large to echo */
	assert_int_equal(decode_len(&hs_bot, LIT("{\"msg_id\":[1,2,3,4,5,6,7,8,9]}"),
	                            idjson, 8), MAL);
	assert_string_equal(idjson, "null");

	/* tiny buffers */
	memset(idjson, 'z', sizeof(idjson));
	assert_int_equal(decode_len(&hs_bot, LIT("{\"msg_id\":\"abcd\"}"), idjson, 4), MAL);
	assert_int_equal(idjson[0], '\0');
	assert_int_equal(idjson[4], 'z');
	assert_int_equal(decode_len(&hs_bot, LIT("{\"msg_id\":\"ab\"}"), idjson, 5), MAL);
	assert_string_equal(idjson, "\"ab\"");
	assert_int_equal(decode_len(&hs_bot, LIT("{\"msg_id\":1}"), idjson, 2), MAL);
	assert_string_equal(idjson, "1");
	assert_int_equal(decode_len(&hs_bot, LIT("{\"msg_id\":1}"), NULL, 0), MAL);
	free(big);
	free(json);
}

/* Nesting far past the limit is refused by the scan, before any parse. */
static void test_deep_nesting_fast(void **state)
{
	size_t n = 1000, big = 4 * 1024 * 1024, i;
	char *buf = malloc(big + 64), idjson[64];
	struct gw_handshake hs;
	struct timespec t0, t1;
	double ms;

	(void)state;
	assert_non_null(buf);
	/* 1000-deep arrays, closed */
	for (i = 0; i < n; i++)
		buf[i] = '[';
	for (i = 0; i < n; i++)
		buf[n + i] = ']';
	assert_int_equal(proto_decode_handshake(buf, 2 * n, &hs), GW_REJECT_TOO_DEEP);
	assert_int_equal(decode_len(&hs_mod, buf, 2 * n, idjson, sizeof(idjson)),
	                 GW_REJECT_TOO_DEEP);
	assert_string_equal(idjson, "null");

	/* 1000-deep objects inside a plausible message */
	i = (size_t)sprintf(buf, "{\"msg_id\":\"m\",\"meta\":");
	for (size_t k = 0; k < n; k++)
		i += (size_t)sprintf(buf + i, "{\"a\":");
	buf[i++] = '1';
	for (size_t k = 0; k < n + 1; k++)
		buf[i++] = '}';
	assert_int_equal(decode_len(&hs_bot, buf, i, idjson, sizeof(idjson)),
	                 GW_REJECT_TOO_DEEP);

	/* 4 MB of '[' (unclosed): linear scan, stops early */
	memset(buf, '[', big);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(decode_len(&hs_bot, buf, big, idjson, sizeof(idjson)),
	                 GW_REJECT_TOO_DEEP);
	/* the same inside an unterminated string: depth 1, then a parse error */
	buf[0] = '{';
	buf[1] = '"';
	assert_int_equal(decode_len(&hs_bot, buf, big, idjson, sizeof(idjson)), MAL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	assert_true(ms < 2000.0);   /* generous for sanitizer builds */
	free(buf);
}

/* A handshake that did not come from proto_decode_handshake. */
static void test_bad_handshake_struct(void **state)
{
	struct gw_handshake hs;
	char idjson[64], longid[GW_ID_MAX + 2];

	(void)state;
	assert_int_equal(proto_decode_handshake(NULL, 0, &hs), MAL);
	assert_int_equal(decode_len(&hs_bot, NULL, 0, idjson, sizeof(idjson)), MAL);
	memset(&hs, 0, sizeof(hs));   /* mod without ids */
	assert_int_equal(decode(&hs, "{\"msg_id\":\"m\",\"id\":\"\",\"destination\":"
	                        "{\"channel_id\":\"\"},\"author\":{\"id\":\"a\"},"
	                        "\"content\":\"c\"}", idjson), MAL);
	hs.role = GW_ROLE_BOT;         /* bot without bot_id */
	assert_int_equal(decode(&hs, BOT_BASE, idjson), MAL);
	assert_int_equal(decode(NULL, BOT_BASE, idjson), MAL);
	assert_string_equal(idjson, "\"m-1\"");
	memset(longid, 'x', GW_ID_MAX + 1);   /* ids longer than any decode gives */
	longid[GW_ID_MAX + 1] = '\0';
	hs.server_id = hs.channel_id = hs.bot_id = longid;
	hs.role = GW_ROLE_MOD;
	assert_int_equal(decode(&hs, MOD_BASE, idjson), MAL);
	hs.role = GW_ROLE_BOT;
	assert_int_equal(decode(&hs, BOT_BASE, idjson), MAL);
	hs = hs_bot;
	hs.role = (enum gw_role)7;     /* no such role */
	assert_int_equal(decode(&hs, BOT_BASE, idjson), MAL);
}

/* ---- outbound shape ------------------------------------------------------ */

static void test_outbound_mod_exact(void **state)
{
	static const char expect[] =
		"{\"type\":\"mod\",\"channel_id\":\"chan-1\",\"msg_id\":\"m-1\","
		"\"server_id\":\"srv-1\",\"author\":{\"id\":\"p-1\",\"name\":\"Steve\"},"
		"\"content\":\"Hello\",\"meta\":{\"world\":\"overworld\"},"
		"\"ts\":\"2025-12-08T10:30:00Z\",\"received_at\":\"" NOW_TEXT "\","
		"\"forwarded_at\":\"2025-12-08T10:31:00.125Z\"}";
	struct gw_msg *m = accept(&hs_mod, MOD_BASE, strlen(MOD_BASE));
	char buf[1024];
	size_t n;

	(void)state;
	assert_int_equal(m->refs, 1);
	assert_int_equal(m->seq, 0);
	assert_int_equal(m->from, GW_ROLE_MOD);
	assert_int_equal(m->received_ms, NOW_MS);
	assert_string_equal(m->msg_id, "m-1");
	assert_string_equal(m->channel_id, "chan-1");
	assert_string_equal(m->sender, "srv-1");
	assert_int_equal(strlen(m->body), m->body_len);
	assert_int_equal(m->body_len, sizeof(expect) - 1 - 43);   /* minus forwarded_at */

	n = proto_msg_frame(m, NOW_MS + 2, 0, buf, sizeof(buf));
	assert_int_equal(n, sizeof(expect) - 1);
	assert_string_equal(buf, expect);
	proto_msg_unref(m);
}

static void test_outbound_bot_exact(void **state)
{
	static const char expect[] =
		"{\"type\":\"bot\",\"channel_id\":\"chan-1\",\"msg_id\":\"m-1\","
		"\"author\":{\"id\":\"u-1\",\"name\":\"Alex\"},\"content\":\"Hi\","
		"\"meta\":{\"platform\":\"discord\",\"roles\":[\"admin\"]},"
		"\"ts\":\"2025-12-08T10:31:00Z\",\"received_at\":\"" NOW_TEXT "\","
		"\"forwarded_at\":\"2025-12-08T10:31:00.200Z\",\"dropped\":3}";
	struct gw_msg *m = accept(&hs_bot, BOT_BASE, strlen(BOT_BASE));
	char buf[1024];

	(void)state;
	assert_int_equal(m->from, GW_ROLE_BOT);
	assert_string_equal(m->channel_id, "chan-1");
	assert_string_equal(m->sender, "bot-1");
	assert_int_equal(proto_msg_frame(m, NOW_MS + 77, 3, buf, sizeof(buf)),
	                 sizeof(expect) - 1);
	assert_string_equal(buf, expect);
	proto_msg_unref(m);
}

/* Parsed back: key order, defaults, what is dropped and what passes. */
static void test_outbound_fields(void **state)
{
	static const char in[] =
		"{\"content\":\"a/b \\/ c\",\"extra\":{\"x\":1},\"author\":{\"name\":\"N\","
		"\"id\":\"p\",\"avatar\":\"http://x\"},\"type\":\"bot\",\"destination\":"
		"{\"channel_id\":\"chan-1\",\"more\":1},\"id\":\"srv-1\",\"msg_id\":\"m-7\","
		"\"meta\":{\"z\":0.1,\"a\":[1,2.5,{\"k\":null}],\"big\":9007199254740993,"
		"\"neg\":-0.0,\"e\":1e-7,\"third\":0.30000000000000004}}";
	struct gw_msg *m = accept(&hs_mod, in, sizeof(in) - 1);
	json_t *o, *meta_in, *author;
	char keys[256], *text;

	(void)state;
	o = frame_parse(m, NOW_MS + 5, 0, &text);
	key_order(o, keys, sizeof(keys));
	assert_string_equal(keys, "type,channel_id,msg_id,server_id,author,content,"
	                    "meta,ts,received_at,forwarded_at");
	assert_string_equal(str_member(o, "type"), "mod");
	assert_string_equal(str_member(o, "channel_id"), "chan-1");
	assert_string_equal(str_member(o, "msg_id"), "m-7");
	assert_string_equal(str_member(o, "server_id"), "srv-1");
	assert_string_equal(str_member(o, "content"), "a/b / c");
	assert_string_equal(str_member(o, "ts"), NOW_TEXT);     /* defaulted */
	assert_string_equal(str_member(o, "received_at"), NOW_TEXT);
	assert_string_equal(str_member(o, "forwarded_at"), "2025-12-08T10:31:00.128Z");
	assert_null(json_object_get(o, "dropped"));
	assert_null(strstr(text, "\\/"));                       /* '/' not escaped */

	author = json_object_get(o, "author");
	key_order(author, keys, sizeof(keys));
	assert_string_equal(keys, "id,name");                   /* avatar dropped */

	meta_in = json_loads("{\"z\":0.1,\"a\":[1,2.5,{\"k\":null}],\"big\":"
	                     "9007199254740993,\"neg\":-0.0,\"e\":1e-7,"
	                     "\"third\":0.30000000000000004}", 0, NULL);
	assert_true(json_equal(json_object_get(o, "meta"), meta_in));
	key_order(json_object_get(o, "meta"), keys, sizeof(keys));
	assert_string_equal(keys, "z,a,big,neg,e,third");
	/* numbers keep their value and integers stay integers */
	assert_non_null(strstr(text, "\"big\":9007199254740993"));
	assert_non_null(strstr(text, "\"third\":0.30000000000000004"));
	json_decref(meta_in);
	json_decref(o);
	free(text);
	proto_msg_unref(m);
}

/* Reals print shortest when the message allows it. */
static void test_outbound_reals(void **state)
{
	static const char in[] =
		"{\"msg_id\":\"m\",\"id\":\"chan-1\",\"author\":{\"id\":\"u\"},"
		"\"content\":\"c\",\"meta\":{\"a\":0.1,\"b\":1e2,\"c\":-2.5e-8}}";
	struct gw_msg *m = accept(&hs_bot, in, sizeof(in) - 1);

	(void)state;
	assert_non_null(strstr(m->body, "\"meta\":{\"a\":0.1,\"b\":100.0,\"c\":-2.5e-8}"));
	proto_msg_unref(m);
}

/* Output longer than the input (short reals printed with 17 digits): the
 * body grows past the first guess and every value survives. */
static void test_outbound_grows(void **state)
{
	char json[8192], *text;
	size_t n;
	struct gw_msg *m;
	json_t *o, *arr;

	(void)state;
	n = (size_t)snprintf(json, sizeof(json), "{\"msg_id\":\"m\",\"id\":\"chan-1\","
	                     "\"author\":{\"id\":\"u\"},\"content\":\"c\",\"meta\":"
	                     "{\"x\":0.30000000000000004,\"a\":[1e-7");
	for (int i = 0; i < 400; i++)
		n += (size_t)snprintf(json + n, sizeof(json) - n, ",1e-7");
	n += (size_t)snprintf(json + n, sizeof(json) - n, "]}}");
	assert_true(n < sizeof(json) - 1);
	m = accept(&hs_bot, json, n);
	assert_true(m->body_len > n + 2 * GW_ID_MAX + 256);
	o = frame_parse(m, NOW_MS, 0, &text);
	arr = json_object_get(json_object_get(o, "meta"), "a");
	assert_int_equal(json_array_size(arr), 401);
	for (size_t i = 0; i < json_array_size(arr); i++)
		assert_true(json_real_value(json_array_get(arr, i)) == 1e-7);
	assert_true(json_real_value(json_object_get(json_object_get(o, "meta"), "x")) ==
	            0.30000000000000004);
	json_decref(o);
	free(text);
	proto_msg_unref(m);
}

static void test_outbound_bot_fields(void **state)
{
	static const char in[] =
		"{\"msg_id\":\"b-1\",\"id\":\"chan-9\",\"author\":{\"id\":\"u\"},"
		"\"content\":\"c\",\"destination\":{\"channel_id\":\"elsewhere\"},"
		"\"ts\":\"2025-12-08T10:30:00.5+01:00\"}";
	struct gw_msg *m = accept(&hs_bot, in, sizeof(in) - 1);
	json_t *o = frame_parse(m, NOW_MS, 0, NULL);
	char keys[256];

	(void)state;
	key_order(o, keys, sizeof(keys));
	assert_string_equal(keys, "type,channel_id,msg_id,author,content,ts,"
	                    "received_at,forwarded_at");
	assert_string_equal(str_member(o, "type"), "bot");
	assert_string_equal(str_member(o, "channel_id"), "chan-9");
	assert_string_equal(m->channel_id, "chan-9");
	assert_string_equal(str_member(o, "ts"), "2025-12-08T10:30:00.5+01:00");
	key_order(json_object_get(o, "author"), keys, sizeof(keys));
	assert_string_equal(keys, "id");
	json_decref(o);
	proto_msg_unref(m);
}

static void test_frame_dropped_and_cap(void **state)
{
	struct gw_msg *m = accept(&hs_bot, BOT_BASE, strlen(BOT_BASE));
	size_t n0, n1, nmax;
	char buf[1024];
	json_t *o;

	(void)state;
	n0 = proto_msg_frame(m, NOW_MS, 0, buf, sizeof(buf));
	assert_int_equal(n0, m->body_len + 17 + 24 + 2);
	assert_null(strstr(buf, "dropped"));
	n1 = proto_msg_frame(m, NOW_MS, 1, buf, sizeof(buf));
	assert_int_equal(n1, n0 + 12);
	assert_non_null(strstr(buf, ",\"dropped\":1}"));
	nmax = proto_msg_frame(m, NOW_MS, UINT64_MAX, buf, sizeof(buf));
	assert_non_null(strstr(buf, ",\"dropped\":18446744073709551615}"));
	o = frame_parse(m, NOW_MS, 42, NULL);
	assert_int_equal(json_integer_value(json_object_get(o, "dropped")), 42);
	json_decref(o);

	/* too small: returns the need and writes nothing */
	memset(buf, 'z', sizeof(buf));
	assert_int_equal(proto_msg_frame(m, NOW_MS, 0, buf, n0 - 1), n0);
	assert_int_equal(buf[0], 'z');
	assert_int_equal(proto_msg_frame(m, NOW_MS, 0, buf, 0), n0);
	/* exactly the frame, no room for a NUL: written, not terminated */
	assert_int_equal(proto_msg_frame(m, NOW_MS, 0, buf, n0), n0);
	assert_int_equal(buf[0], '{');
	assert_int_equal(buf[n0 - 1], '}');
	assert_int_equal(buf[n0], 'z');
	assert_int_equal(proto_msg_frame(m, NOW_MS, 0, NULL, 0), n0);
	assert_int_equal(proto_msg_frame(m, NOW_MS, 0, buf, n0 + 1), n0);
	assert_int_equal(buf[n0], '\0');
	assert_int_equal(buf[n0 - 1], '}');
	assert_int_equal(nmax, n0 + 11 + 20);
	proto_msg_unref(m);
}

static void test_large_content(void **state)
{
	size_t n = 2 * 1024 * 1024, len;
	char *content = malloc(n + 1), *json;
	struct gw_msg *m;
	json_t *o;

	(void)state;
	assert_non_null(content);
	for (size_t i = 0; i < n; i++)
		content[i] = (char)('a' + i % 26);
	content[n] = '\0';
	json = message_with_content(GW_ROLE_MOD, content);
	len = strlen(json);
	m = accept(&hs_mod, json, len);
	assert_true(m->body_len > n && m->body_len < n + 512);
	o = frame_parse(m, NOW_MS, 0, NULL);
	assert_string_equal(str_member(o, "content"), content);
	json_decref(o);
	proto_msg_unref(m);
	free(json);
	free(content);
}

/* ---- Unicode ------------------------------------------------------------- */

/* Each line of unicode.txt as content: bytes out == bytes in, and (unless
 * JSON must escape it) written raw, not as \u escapes. */
static void test_unicode_roundtrip(void **state)
{
	size_t len, lines = 0;
	char *file = read_file(DATA_DIR "unicode.txt", &len), *line, *save = NULL;

	(void)state;
	for (line = strtok_r(file, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		for (int r = 0; r < 2; r++) {
			enum gw_role role = r ? GW_ROLE_BOT : GW_ROLE_MOD;
			char *json = message_with_content(role, line), *text;
			struct gw_msg *m = accept(role == GW_ROLE_MOD ? &hs_mod : &hs_bot,
			                          json, strlen(json));
			json_t *o = frame_parse(m, NOW_MS, 0, &text);
			const json_t *c = json_object_get(o, "content");
			int plain = 1;

			assert_int_equal(json_string_length(c), strlen(line));
			assert_memory_equal(json_string_value(c), line, strlen(line));
			for (const char *p = line; *p; p++)
				if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
					plain = 0;
			if (plain)
				assert_non_null(strstr(text, line));
			json_decref(o);
			free(text);
			free(json);
			proto_msg_unref(m);
		}
		lines++;
	}
	assert_true(lines >= 10);
	free(file);
}

/* \u escapes in, raw UTF-8 out; Unicode in ids and author too. */
static void test_unicode_escapes(void **state)
{
	static const char in[] =
		"{\"msg_id\":\"\\u6d88\\u606f-1\",\"id\":\"chan-1\",\"author\":"
		"{\"id\":\"\\u00fcser\",\"name\":\"Z\\u00f6e \\ud83e\\udd8a\"},"
		"\"content\":\"\\u00e9\\u6f22\\ud83d\\ude00e\\u0301\\u2028\\uffff\\udbff\\udfff\"}";
	static const char want[] =
		"\xc3\xa9\xe6\xbc\xa2\xf0\x9f\x98\x80" "e\xcc\x81\xe2\x80\xa8\xef\xbf\xbf\xf4\x8f\xbf\xbf";
	struct gw_msg *m = accept(&hs_bot, in, sizeof(in) - 1);
	char *text;
	json_t *o = frame_parse(m, NOW_MS, 0, &text);

	(void)state;
	assert_string_equal(m->msg_id, "\xe6\xb6\x88\xe6\x81\xaf-1");
	assert_string_equal(str_member(o, "content"), want);
	assert_non_null(strstr(text, "\"content\":\"" "\xc3\xa9\xe6\xbc\xa2"));
	assert_non_null(strstr(text, "\"name\":\"Z\xc3\xb6" "e \xf0\x9f\xa6\x8a\""));
	assert_null(strstr(text, "\\u"));
	json_decref(o);
	free(text);
	proto_msg_unref(m);
}

/* Every kind of byte a string scan must stop at, at every offset of the
 * first words of a content: the fast path and Jansson agree each time. */
static void test_scan_every_offset(void **state)
{
	static const struct { const char *text; enum gw_reject want; } specials[] = {
		{ "\\\"", GW_OK }, { "\\\\", GW_OK }, { "\\n", GW_OK }, { "\\u00e9", GW_OK },
		{ "\\ud83d\\ude00", GW_OK }, { "\x7f", GW_OK }, { "\xc3\xa9", GW_OK },
		{ "\xe2\x82\xac", GW_OK }, { "\xf0\x9f\x98\x80", GW_OK },
		{ "\n", GW_REJECT_MALFORMED }, { "\x1f", GW_REJECT_MALFORMED },
		{ "\xff", GW_REJECT_MALFORMED }, { "\xc3", GW_REJECT_MALFORMED },
		{ "\xed\xa0\x80", GW_REJECT_MALFORMED }, { "\"", GW_REJECT_MALFORMED },
		{ "\\ud83d", GW_REJECT_MALFORMED }, { "\\u0000", GW_REJECT_MALFORMED },
	};
	char content[64], json[256], idjson[512];
	struct gw_msg *m;

	(void)state;
	for (size_t k = 0; k < ARRAY_LEN(specials); k++) {
		for (int at = 0; at < 20; at++) {
			memset(content, 'a', (size_t)at);
			snprintf(content + at, sizeof(content) - (size_t)at, "%sbcdefghijklmnop",
			         specials[k].text);
			snprintf(json, sizeof(json), "{\"msg_id\":\"m\",\"id\":\"chan-1\",\"author\":"
			         "{\"id\":\"a\"},\"content\":\"%s\"}", content);
			m = NULL;
			assert_int_equal(decode_both(&hs_bot, json, strlen(json), &m, idjson,
			                             sizeof(idjson)), specials[k].want);
			proto_msg_unref(m);
		}
	}
}

/* ---- replies ------------------------------------------------------------- */

static void test_connected(void **state)
{
	char buf[128];

	(void)state;
	/* without its final '}': presence fields may follow */
	assert_int_equal(proto_connected(GW_ROLE_MOD, NULL, -1, 0, buf, sizeof(buf)), 34);
	assert_string_equal(buf, "{\"status\":\"connected\",\"type\":\"mod\"");
	assert_int_equal(proto_connected(GW_ROLE_BOT, NULL, -1, 0, buf, sizeof(buf)), 34);
	assert_string_equal(buf, "{\"status\":\"connected\",\"type\":\"bot\"");
	assert_int_equal(proto_connected(GW_ROLE_BOT, NULL, -1, 0, buf, 34), 0);
	assert_int_equal(buf[0], '\0');
	assert_int_equal(proto_connected(GW_ROLE_BOT, NULL, -1, 0, buf, 35), 34);
	proto_connected(GW_ROLE_MOD, "e1", -1, 0, buf, sizeof(buf));
	assert_string_equal(buf, "{\"status\":\"connected\",\"type\":\"mod\",\"epoch\":\"e1\"");
	proto_connected(GW_ROLE_MOD, "e1", 1, 0, buf, sizeof(buf));
	assert_string_equal(buf, "{\"status\":\"connected\",\"type\":\"mod\",\"epoch\":\"e1\","
	                         "\"resumed\":true");
	proto_connected(GW_ROLE_BOT, "e1", 0, 12, buf, sizeof(buf));
	assert_string_equal(buf, "{\"status\":\"connected\",\"type\":\"bot\",\"epoch\":\"e1\","
	                         "\"resumed\":false,\"missed\":12");
	assert_string_equal(proto_role_name(GW_ROLE_MOD), "mod");
	assert_string_equal(proto_role_name(GW_ROLE_BOT), "bot");
}

static void test_ack_plain(void **state)
{
	char buf[128];

	(void)state;
	assert_int_equal(proto_ack("queued", GW_ROLE_MOD, "m1", 0, buf, sizeof(buf)),
	                 strlen("{\"status\":\"queued\",\"type\":\"mod\",\"msg_id\":\"m1\"}"));
	assert_string_equal(buf, "{\"status\":\"queued\",\"type\":\"mod\",\"msg_id\":\"m1\"}");
	proto_ack("completed", GW_ROLE_BOT, "m2", 1, buf, sizeof(buf));
	assert_string_equal(buf, "{\"status\":\"completed\",\"type\":\"bot\","
	                    "\"msg_id\":\"m2\",\"duplicate\":true}");
	proto_ack("failed", GW_ROLE_BOT, NULL, 0, buf, sizeof(buf));
	assert_string_equal(buf, "{\"status\":\"failed\",\"type\":\"bot\"}");
}

static void test_ack_tricky_ids(void **state)
{
	static const char *const ids[] = {
		"a\"b", "back\\slash", "\"\\\"\\", "nl\ncr\rtab\tff\fbs\b",
		"\x01\x02\x1f\x7f", "</script>", "\xf0\x9f\x98\x80\xe6\xbc\xa2",
		"e\xcc\x81", "\xe2\x80\xa8", "{\"json\":[1]}", "",
	};
	char buf[512];
	size_t i, n;

	(void)state;
	for (i = 0; i < ARRAY_LEN(ids); i++) {
		json_error_t err;
		json_t *o;

		n = proto_ack("completed", GW_ROLE_MOD, ids[i], (int)(i & 1), buf, sizeof(buf));
		assert_true(n > 0);
		assert_int_equal(strlen(buf), n);
		o = json_loads(buf, JSON_REJECT_DUPLICATES, &err);
		if (o == NULL)
			fail_msg("ack not JSON (%s): %s", err.text, buf);
		assert_string_equal(str_member(o, "msg_id"), ids[i]);
		assert_string_equal(str_member(o, "status"), "completed");
		assert_string_equal(str_member(o, "type"), "mod");
		assert_int_equal(json_is_true(json_object_get(o, "duplicate")), (int)(i & 1));
		json_decref(o);

		/* an exact fit works, one byte less does not */
		assert_int_equal(proto_ack("completed", GW_ROLE_MOD, ids[i], 0, buf, sizeof(buf)),
		                 n - (i & 1 ? 17 : 0));
		n = strlen(buf);
		assert_int_equal(proto_ack("completed", GW_ROLE_MOD, ids[i], 0, buf, n + 1), n);
		assert_int_equal(proto_ack("completed", GW_ROLE_MOD, ids[i], 0, buf, n), 0);
		assert_int_equal(buf[0], '\0');
	}
	/* the longest plain ack is 64 + strlen(msg_id) bytes plus the NUL */
	assert_int_equal(proto_ack("completed", GW_ROLE_BOT, "abc", 1, buf, 65 + 3), 64 + 3);
}

/* The worst ack of a msg_id the decoder accepts fits GW_ACK_MAX: the
 * longest id, all quotes (an accepted id has no control bytes). */
static void test_ack_max(void **state)
{
	char json[4 * GW_ID_MAX], id[2 * GW_ID_MAX + 1], buf[GW_ACK_MAX];
	struct gw_msg *m;

	(void)state;
	for (int i = 0; i < GW_ID_MAX; i++)
		memcpy(id + 2 * i, "\\\"", 2);
	id[2 * GW_ID_MAX] = '\0';
	snprintf(json, sizeof(json), "{\"msg_id\":\"%s\",\"id\":\"chan-1\",\"author\":"
	         "{\"id\":\"a\"},\"content\":\"c\"}", id);
	m = accept(&hs_bot, json, strlen(json));
	assert_int_equal(strlen(m->msg_id), GW_ID_MAX);
	assert_true(proto_ack("completed", GW_ROLE_BOT, m->msg_id, 1, buf, sizeof(buf)) > 0);
	proto_msg_unref(m);
}

/* Bytes that are not UTF-8 cannot reach the wire raw. */
static void test_ack_invalid_utf8(void **state)
{
	char buf[128];
	json_t *o;

	(void)state;
	static const char *const bad[] = {
		"\xe0\x80\x80", "\xf0\x80\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80",
		"\xf5\x80", "\xc1\xbf", "\x80", "\xe2\x82", "\xf0\x9f\x98",
	};

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		assert_true(proto_ack("queued", GW_ROLE_MOD, bad[i], 0, buf, sizeof(buf)) > 0);
		o = json_loads(buf, 0, NULL);
		assert_non_null(o);
		assert_non_null(strstr(buf, "\\ufffd"));
		json_decref(o);
	}
	assert_true(proto_ack("queued", GW_ROLE_MOD, "a\xff" "b\xc3", 0, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "{\"status\":\"queued\",\"type\":\"mod\","
	                    "\"msg_id\":\"a\\ufffdb\\ufffd\"}");
	o = json_loads(buf, 0, NULL);
	assert_non_null(o);
	assert_string_equal(str_member(o, "msg_id"), "a\xef\xbf\xbd" "b\xef\xbf\xbd");
	json_decref(o);
}

static void test_error_replies(void **state)
{
	char buf[256], idjson[128];
	json_t *o;

	(void)state;
	assert_int_equal(proto_error("Malformed handshake.", 400, NULL, buf, sizeof(buf)),
	                 strlen("{\"message\":\"Malformed handshake.\",\"code\":400}"));
	assert_string_equal(buf, "{\"message\":\"Malformed handshake.\",\"code\":400}");
	proto_error("Malformed message.", 400, "null", buf, sizeof(buf));
	assert_string_equal(buf, "{\"message\":\"Malformed message.\",\"code\":400,"
	                    "\"msg_id\":null}");
	proto_error("Bot already connected.", 409, NULL, buf, sizeof(buf));
	assert_string_equal(buf, "{\"message\":\"Bot already connected.\",\"code\":409}");
	proto_error("say \"hi\"\n", -1, NULL, buf, sizeof(buf));
	assert_string_equal(buf, "{\"message\":\"say \\\"hi\\\"\\n\",\"code\":-1}");

	/* the echo from a rejected message goes in verbatim and parses back */
	assert_int_equal(decode_len(&hs_mod, "{\"msg_id\":\"q\\\"\\\\\\u0001\xf0\x9f\x98\x80\"}",
	                            strlen("{\"msg_id\":\"q\\\"\\\\\\u0001\xf0\x9f\x98\x80\"}"),
	                            idjson, sizeof(idjson)), MAL);
	assert_true(proto_error("Malformed message.", 400, idjson, buf, sizeof(buf)) > 0);
	o = json_loads(buf, JSON_REJECT_DUPLICATES, NULL);
	assert_non_null(o);
	assert_string_equal(str_member(o, "msg_id"), "q\"\\\x01\xf0\x9f\x98\x80");
	assert_int_equal(json_integer_value(json_object_get(o, "code")), 400);
	json_decref(o);

	assert_int_equal(proto_error("Malformed message.", 400, "null", buf, 20), 0);
	assert_int_equal(buf[0], '\0');
}

/* ---- reference counting -------------------------------------------------- */

static void test_refcount(void **state)
{
	struct gw_msg *m = accept(&hs_mod, MOD_BASE, strlen(MOD_BASE));

	(void)state;
	assert_int_equal(m->refs, 1);
	proto_msg_ref(m);
	proto_msg_ref(m);
	assert_int_equal(m->refs, 3);
	proto_msg_unref(m);
	proto_msg_unref(m);
	assert_int_equal(m->refs, 1);
	proto_msg_unref(m);     /* freed here: ASan would flag a leak or reuse */
	proto_msg_unref(NULL);
}

static void *ref_worker(void *arg)
{
	struct gw_msg *m = arg;

	for (int i = 0; i < 100000; i++) {
		proto_msg_ref(m);
		proto_msg_unref(m);
	}
	proto_msg_unref(m);     /* the reference handed to this thread */
	return NULL;
}

static void test_refcount_threads(void **state)
{
	struct gw_msg *m = accept(&hs_bot, BOT_BASE, strlen(BOT_BASE));
	pthread_t t[4];

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(t); i++) {
		proto_msg_ref(m);
		assert_int_equal(pthread_create(&t[i], NULL, ref_worker, m), 0);
	}
	for (size_t i = 0; i < ARRAY_LEN(t); i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(__atomic_load_n(&m->refs, __ATOMIC_ACQUIRE), 1);
	proto_msg_unref(m);
}

/* ---- proto_msg_new ------------------------------------------------------- */

/* Rebuilds m from its fields and checks the copy is the same message: same
 * fields and the same frame, byte for byte, with and without `dropped`. */
static void check_rebuild(const struct gw_msg *m)
{
	char a[4096], b[4096];
	struct gw_msg *r;
	size_t na, nb;

	r = proto_msg_new(m->from, m->channel_id, m->msg_id, m->sender, m->body,
	                  m->body_len, m->received_ms, 42);
	assert_non_null(r);
	assert_int_equal(r->refs, 1);
	assert_int_equal(r->from, m->from);
	assert_string_equal(r->channel_id, m->channel_id);
	assert_string_equal(r->msg_id, m->msg_id);
	assert_string_equal(r->sender, m->sender);
	assert_int_equal(r->body_len, m->body_len);
	assert_int_equal(r->received_ms, m->received_ms);
	assert_int_equal(r->seq, 42);
	/* the strings live in the message's own block, after the header */
	assert_true(r->msg_id == (char *)(r + 1));
	assert_true(r->body > r->sender && r->body[r->body_len] == '\0');

	/* the seq is a send-time field: ,"seq":42 before the final '}' */
	nb = proto_msg_frame(r, NOW_MS + 5, 0, b, sizeof(b));
	assert_true(nb < sizeof(b) && nb > 10);
	assert_memory_equal(b + nb - 10, ",\"seq\":42}", 10);
	r->seq = m->seq;
	na = proto_msg_frame(m, NOW_MS + 5, 0, a, sizeof(a));
	nb = proto_msg_frame(r, NOW_MS + 5, 0, b, sizeof(b));
	assert_true(na < sizeof(a));
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	na = proto_msg_frame(m, NOW_MS, 7, a, sizeof(a));
	nb = proto_msg_frame(r, NOW_MS, 7, b, sizeof(b));
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	proto_msg_unref(r);    /* one block: ASan flags a leak or a bad free */
}

static void test_msg_new_roundtrip(void **state)
{
	static const char mod_meta[] =
		"{\"msg_id\":\"m-7\",\"id\":\"srv-1\",\"destination\":"
		"{\"channel_id\":\"chan-1\"},\"author\":{\"id\":\"u1\",\"name\":"
		"\"Zo\u00eb \\\"Z\\\"\"},\"content\":\"h\u00e9llo\\n\u2603\","
		"\"meta\":{\"x\":0.1,\"y\":[1,null,true]},\"ts\":\"2025-12-08T10:30:00Z\"}";
	struct gw_msg *m;

	(void)state;
	m = accept(&hs_mod, MOD_BASE, strlen(MOD_BASE));
	check_rebuild(m);
	proto_msg_unref(m);
	m = accept(&hs_bot, BOT_BASE, strlen(BOT_BASE));
	check_rebuild(m);
	proto_msg_unref(m);
	m = accept(&hs_mod, mod_meta, strlen(mod_meta));
	check_rebuild(m);
	proto_msg_unref(m);
}

static void test_msg_new_invalid(void **state)
{
	struct gw_msg *m;
	char long_id[GW_ID_MAX + 2];

	(void)state;
	memset(long_id, 'a', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	assert_null(proto_msg_new(GW_ROLE_MOD, NULL, "m", "s", LIT("{"), 0, 1));
	assert_null(proto_msg_new(GW_ROLE_MOD, "c", NULL, "s", LIT("{"), 0, 1));
	assert_null(proto_msg_new(GW_ROLE_MOD, "c", "m", NULL, LIT("{"), 0, 1));
	assert_null(proto_msg_new(GW_ROLE_MOD, "c", "m", "s", NULL, 0, 0, 1));
	assert_null(proto_msg_new((enum gw_role)7, "c", "m", "s", LIT("{"), 0, 1));
	assert_null(proto_msg_new(GW_ROLE_BOT, "", "m", "s", LIT("{"), 0, 1));
	assert_null(proto_msg_new(GW_ROLE_BOT, "c", "m\n", "s", LIT("{"), 0, 1));
	assert_null(proto_msg_new(GW_ROLE_BOT, "c", "m", long_id, LIT("{"), 0, 1));
	long_id[GW_ID_MAX] = '\0';   /* exactly GW_ID_MAX bytes: fine */
	m = proto_msg_new(GW_ROLE_BOT, long_id, "m", "s", LIT("{\"a\":1"), 0, 1);
	assert_non_null(m);
	assert_int_equal(strlen(m->channel_id), GW_ID_MAX);
	assert_string_equal(m->body, "{\"a\":1");
	proto_msg_unref(m);
}

/* ---- main ---------------------------------------------------------------- */

int main(void)
{
	static const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_mod),
		cmocka_unit_test(test_handshake_bot),
		cmocka_unit_test(test_handshake_events),
		cmocka_unit_test(test_handshake_id_length),
		cmocka_unit_test(test_handshake_since),
		cmocka_unit_test(test_valid_examples),
		cmocka_unit_test(test_readme_examples),
		cmocka_unit_test(test_msg_id_length),
		cmocka_unit_test(test_msg_id_echo_limits),
		cmocka_unit_test(test_deep_nesting_fast),
		cmocka_unit_test(test_bad_handshake_struct),
		cmocka_unit_test(test_outbound_mod_exact),
		cmocka_unit_test(test_outbound_bot_exact),
		cmocka_unit_test(test_outbound_fields),
		cmocka_unit_test(test_outbound_reals),
		cmocka_unit_test(test_outbound_grows),
		cmocka_unit_test(test_outbound_bot_fields),
		cmocka_unit_test(test_frame_dropped_and_cap),
		cmocka_unit_test(test_large_content),
		cmocka_unit_test(test_unicode_roundtrip),
		cmocka_unit_test(test_unicode_escapes),
		cmocka_unit_test(test_scan_every_offset),
		cmocka_unit_test(test_connected),
		cmocka_unit_test(test_ack_plain),
		cmocka_unit_test(test_ack_tricky_ids),
		cmocka_unit_test(test_ack_max),
		cmocka_unit_test(test_ack_invalid_utf8),
		cmocka_unit_test(test_error_replies),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_refcount_threads),
		cmocka_unit_test(test_msg_new_roundtrip),
		cmocka_unit_test(test_msg_new_invalid),
	};
	static struct CMUnitTest hs_tests[ARRAY_LEN(hs_cases)];
	static struct CMUnitTest raw_tests[ARRAY_LEN(raw_cases)];
	static struct CMUnitTest mut_tests[ARRAY_LEN(mut_cases)];
	size_t i;
	int failed = 0;

	for (i = 0; i < ARRAY_LEN(hs_cases); i++) {
		hs_tests[i].name = hs_cases[i].name;
		hs_tests[i].test_func = run_hs_case;
		hs_tests[i].initial_state = (void *)(uintptr_t)&hs_cases[i];
	}
	for (i = 0; i < ARRAY_LEN(raw_cases); i++) {
		raw_tests[i].name = raw_cases[i].name;
		raw_tests[i].test_func = run_raw_case;
		raw_tests[i].initial_state = (void *)(uintptr_t)&raw_cases[i];
	}
	mut_build();
	for (i = 0; i < mut_count; i++) {
		mut_tests[i].name = mut_cases[i].name;
		mut_tests[i].test_func = run_mut_case;
		mut_tests[i].initial_state = &mut_cases[i];
	}

	failed += cmocka_run_group_tests_name("protocol", tests, group_setup, group_teardown);
	failed += _cmocka_run_group_tests("protocol handshake table", hs_tests,
	                                  ARRAY_LEN(hs_tests), group_setup, group_teardown);
	failed += _cmocka_run_group_tests("protocol message table", raw_tests,
	                                  ARRAY_LEN(raw_tests), group_setup, group_teardown);
	failed += _cmocka_run_group_tests("protocol message mutations", mut_tests,
	                                  mut_count, group_setup, group_teardown);
	return failed != 0;
}
