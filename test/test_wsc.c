/*
 * test_wsc.c - unit tests of the tools' WebSocket primitives (src/tools/wsc.c):
 * hashes against published vectors, the upgrade request and answer, frames
 * built byte by byte as a server sends them, reassembly, and the JSON
 * scanner on the gateway's shapes and on hostile text.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsc.h"

static void hex(const unsigned char *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_sha1_vectors(void **state)
{
	unsigned char d[20];
	char h[41], *million;

	(void)state;
	wsc_sha1("", 0, d);
	hex(d, 20, h);
	assert_string_equal(h, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
	wsc_sha1("abc", 3, d);
	hex(d, 20, h);
	assert_string_equal(h, "a9993e364706816aba3e25717850c26c9cd0d89d");
	/* 56 bytes: the padding needs a second block */
	wsc_sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d);
	hex(d, 20, h);
	assert_string_equal(h, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
	million = malloc(1000000);
	assert_non_null(million);
	memset(million, 'a', 1000000);
	wsc_sha1(million, 1000000, d);
	free(million);
	hex(d, 20, h);
	assert_string_equal(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

static void test_base64_and_accept(void **state)
{
	char out[64], acc[WSC_ACCEPT_LEN + 1], key[WSC_KEY_LEN + 1];

	(void)state;
	assert_int_equal(wsc_base64("", 0, out), 0);
	assert_string_equal(out, "");
	wsc_base64("f", 1, out);
	assert_string_equal(out, "Zg==");
	wsc_base64("fo", 2, out);
	assert_string_equal(out, "Zm8=");
	wsc_base64("foobar", 6, out);
	assert_string_equal(out, "Zm9vYmFy");
	/* RFC 6455 section 1.3 */
	wsc_accept_key("dGhlIHNhbXBsZSBub25jZQ==", acc);
	assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	wsc_new_key(key, acc);
	assert_int_equal(strlen(key), WSC_KEY_LEN);
	assert_int_equal(strlen(acc), WSC_ACCEPT_LEN);
}

static void test_url_parse(void **state)
{
	struct wsc_url u;
	const char *why;

	(void)state;
	assert_int_equal(wsc_url_parse("ws://127.0.0.1:3333/sync", &u, &why), 0);
	assert_string_equal(u.host, "127.0.0.1");
	assert_string_equal(u.port, "3333");
	assert_string_equal(u.path, "/sync");
	assert_string_equal(u.hostport, "127.0.0.1:3333");
	assert_int_equal(wsc_url_parse("ws://[::1]:99/sync?api_key=k", &u, &why), 0);
	assert_string_equal(u.host, "::1");
	assert_string_equal(u.port, "99");
	assert_string_equal(u.path, "/sync?api_key=k");
	assert_int_equal(wsc_url_parse("ws://example.org", &u, &why), 0);
	assert_string_equal(u.port, "80");
	assert_string_equal(u.path, "/");
	assert_int_equal(wsc_url_parse("ws://h?x=1", &u, &why), 0);
	assert_string_equal(u.path, "/?x=1");
	assert_int_equal(wsc_url_parse("wss://h/sync", &u, &why), -1);
	assert_int_equal(wsc_url_parse("http://h/sync", &u, &why), -1);
	assert_int_equal(wsc_url_parse("ws://h:x1/sync", &u, &why), -1);
	assert_int_equal(wsc_url_parse("ws://:80/", &u, &why), -1);
	assert_int_equal(wsc_url_parse("ws://[::1/", &u, &why), -1);
}

static void test_upgrade_request_and_answer(void **state)
{
	struct wsc_url u;
	struct wsc_http h;
	const char *why;
	char req[1024], acc[WSC_ACCEPT_LEN + 1], ans[512];
	size_t n;

	(void)state;
	wsc_url_parse("ws://gw:3333/sync", &u, &why);
	n = wsc_upgrade_request(req, sizeof(req), &u, "dGhlIHNhbXBsZSBub25jZQ==", "k1");
	assert_true(n > 0);
	assert_non_null(strstr(req, "GET /sync HTTP/1.1\r\nHost: gw:3333\r\n"));
	assert_non_null(strstr(req, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
	assert_non_null(strstr(req, "X-API-Key: k1\r\n"));
	assert_true(n >= 4 && memcmp(req + n - 4, "\r\n\r\n", 4) == 0);
	assert_int_equal(wsc_upgrade_request(req, 20, &u, "x", "k1"), 0);

	wsc_accept_key("dGhlIHNhbXBsZSBub25jZQ==", acc);
	snprintf(ans, sizeof(ans), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n\x81\x02hi", acc);
	/* every prefix is "more", never an error */
	for (size_t i = 0; i < strlen(ans) - 4; i++)
		assert_int_equal(wsc_http_parse(ans, i, acc, &h), WSC_MORE);
	assert_int_equal(wsc_http_parse(ans, strlen(ans), acc, &h), WSC_DONE);
	assert_int_equal(h.status, 101);
	assert_true(h.accept_ok && h.upgrade_ok);
	assert_int_equal(h.head_len, strlen(ans) - 4);
	assert_int_equal(wsc_http_parse(ans, strlen(ans), "wrong", &h), WSC_DONE);
	assert_false(h.accept_ok);

	snprintf(ans, sizeof(ans), "HTTP/1.1 401 Unauthorized\r\nContent-Length: 39\r\n\r\n");
	assert_int_equal(wsc_http_parse(ans, strlen(ans), acc, &h), WSC_DONE);
	assert_int_equal(h.status, 401);
	assert_int_equal(h.content_len, 39);
	assert_false(h.accept_ok);
	assert_int_equal(wsc_http_parse("SSH-2.0-x\r\n\r\n", 13, acc, &h), WSC_ERROR);
	assert_int_equal(wsc_http_parse("HTTP/1.1 abc\r\n\r\n", 16, acc, &h), WSC_ERROR);
}

/* Parses a frame the encoder made, after unmasking it as a server would. */
static void test_encode_roundtrip(void **state)
{
	static const size_t sizes[] = { 0, 1, 125, 126, 127, 65535, 65536, 100000 };
	unsigned char *buf = malloc(100000 + WSC_HEAD_MAX), *payload = malloc(100000);
	struct wsc_frame f;
	const char *why;

	(void)state;
	for (size_t i = 0; i < 100000; i++)
		payload[i] = (unsigned char)(i * 7);
	for (size_t s = 0; s < sizeof(sizes) / sizeof(*sizes); s++) {
		size_t len = sizes[s], n, hdr;
		uint32_t mask = 0x12345678u + (uint32_t)s;
		unsigned char key[4];

		n = wsc_frame_encode(buf, 1, WSC_OP_TEXT, payload, len, mask);
		assert_int_equal(n, wsc_frame_size(len));
		assert_int_equal(buf[0], 0x81);
		assert_true(buf[1] & 0x80);
		hdr = n - len;
		memcpy(key, buf + hdr - 4, 4);
		for (size_t i = 0; i < len; i++)
			buf[hdr + i] ^= key[i & 3];
		assert_memory_equal(buf + hdr, payload, len);
		/* as a server frame: clear the mask bit, drop the key */
		memmove(buf + hdr - 4, buf + hdr, len);
		buf[1] &= 0x7f;
		assert_int_equal(wsc_frame_parse(buf, n - 4, 1 << 20, &f, &why), WSC_DONE);
		assert_int_equal(f.len, len);
		assert_int_equal(f.frame_len, n - 4);
		assert_memory_equal(f.payload, payload, len);
		if (len > 0)
			assert_int_equal(wsc_frame_parse(buf, n - 5, 1 << 20, &f, &why), WSC_MORE);
	}
	/* in-place building gives the same bytes */
	{
		unsigned char *b2 = malloc(1000 + WSC_HEAD_MAX);
		size_t h = wsc_frame_head(b2, 1, WSC_OP_TEXT, 1000, 0xa1b2c3d4u);

		memcpy(b2 + h, payload, 1000);
		wsc_mask(b2 + h, 1000, 0xa1b2c3d4u);
		assert_int_equal(wsc_frame_encode(buf, 1, WSC_OP_TEXT, payload, 1000, 0xa1b2c3d4u),
		                 h + 1000);
		assert_memory_equal(buf, b2, h + 1000);
		free(b2);
	}
	free(buf);
	free(payload);
}

static void test_parse_server_frames(void **state)
{
	/* two frames back to back: a text and a close 1001 "bye" */
	static const unsigned char two[] = { 0x81, 0x02, 'o', 'k', 0x88, 0x05, 0x03, 0xe9,
	                                     'b', 'y', 'e' };
	static const unsigned char big16[4] = { 0x82, 126, 0x01, 0x00 };  /* 256 bytes */
	static const unsigned char big64[10] = { 0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0 };
	struct wsc_frame f;
	const char *why;

	(void)state;
	assert_int_equal(wsc_frame_parse(two, sizeof(two), 100, &f, &why), WSC_DONE);
	assert_int_equal(f.opcode, WSC_OP_TEXT);
	assert_true(f.fin);
	assert_int_equal(f.len, 2);
	assert_int_equal(f.frame_len, 4);
	assert_int_equal(wsc_frame_parse(two + 4, sizeof(two) - 4, 100, &f, &why), WSC_DONE);
	assert_int_equal(f.opcode, WSC_OP_CLOSE);
	assert_int_equal(f.close_code, 1001);
	/* the header tells the size before the payload is in */
	assert_int_equal(wsc_frame_parse(big16, 4, 1000, &f, &why), WSC_MORE);
	assert_int_equal(f.frame_len, 260);
	assert_int_equal(wsc_frame_parse(big16, 3, 1000, &f, &why), WSC_MORE);
	assert_int_equal(f.frame_len, 0);
	assert_int_equal(wsc_frame_parse(big64, 10, 1000, &f, &why), WSC_ERROR);
	assert_int_equal(wsc_frame_parse(two, 1, 100, &f, &why), WSC_MORE);
	assert_int_equal(wsc_frame_parse(two, 0, 100, &f, &why), WSC_MORE);

	{
		static const unsigned char bad[][4] = {
			{ 0x81, 0x82, 0, 0 },   /* masked by the server */
			{ 0xc1, 0x00, 0, 0 },   /* RSV1 */
			{ 0x83, 0x00, 0, 0 },   /* reserved opcode */
			{ 0x89, 126, 0, 200 },  /* control frame over 125 */
			{ 0x09, 0x00, 0, 0 },   /* fragmented ping */
			{ 0x88, 0x01, 3, 0 },   /* close with one byte */
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
			assert_int_equal(wsc_frame_parse(bad[i], 4, 1000, &f, &why), WSC_ERROR);
	}
}

/* The unjudging header decoder: what wsc_frame_parse refuses, it reads. */
static void test_head_parse(void **state)
{
	/* masked, RSV1+RSV3, reserved opcode 3, 16-bit length 300 */
	static const unsigned char odd[8] = { 0x53, 0x80 | 126, 0x01, 0x2c, 1, 2, 3, 4 };
	static const unsigned char big64[10] = { 0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0 };
	unsigned char p[4] = { 'a', 'b', 'c', 'd' };
	struct wsc_head h;

	(void)state;
	for (size_t i = 0; i < sizeof(odd); i++)
		assert_int_equal(wsc_head_parse(odd, i, &h), WSC_MORE);
	assert_int_equal(wsc_head_parse(odd, sizeof(odd), &h), WSC_DONE);
	assert_false(h.fin);
	assert_int_equal(h.rsv, 0x50);
	assert_int_equal(h.opcode, 3);
	assert_true(h.masked);
	assert_int_equal(h.len, 300);
	assert_int_equal(h.head_len, 8);
	/* the key as wsc_mask takes it: the wire's bytes 1 2 3 4 */
	wsc_mask(p, 4, h.mask);
	assert_memory_equal(p, "\x60\x60\x60\x60", 4);
	/* what a client refuses is still read */
	assert_int_equal(wsc_head_parse(big64, 10, &h), WSC_DONE);
	assert_int_equal(h.len, (uint64_t)1 << 32);
	assert_int_equal(h.head_len, 10);
	assert_false(h.masked);
	assert_int_equal(h.mask, 0);
	assert_int_equal(wsc_head_parse(big64, 9, &h), WSC_MORE);
}

static void test_http_header(void **state)
{
	static const char head[] = "HTTP/1.1 200 OK\r\ncontent-length:  12 \r\n"
	                           "Transfer-Encoding: chunked\r\nX-Empty:\r\n\r\nbody: no";
	size_t hl = strlen(head) - strlen("body: no"), vl;
	const char *v;

	(void)state;
	v = wsc_http_header(head, hl, "Content-Length", &vl);
	assert_non_null(v);
	assert_int_equal(vl, 2);
	assert_memory_equal(v, "12", 2);
	v = wsc_http_header(head, hl, "transfer-encoding", &vl);
	assert_non_null(v);
	assert_int_equal(vl, 7);
	assert_memory_equal(v, "chunked", 7);
	/* an empty value is found, empty; the body is not the head */
	assert_non_null(wsc_http_header(head, hl, "X-Empty", &vl));
	assert_int_equal(vl, 0);
	assert_null(wsc_http_header(head, hl, "body", &vl));
	assert_null(wsc_http_header(head, hl, "Content", &vl));
}

static void test_reassembly(void **state)
{
	static const unsigned char frags[] = { 0x01, 0x02, 'a', 'b', 0x89, 0x00, 0x00, 0x01, 'c',
	                                       0x80, 0x02, 'd', 'e' };
	struct wsc_asm a = { 0 };
	struct wsc_frame f;
	const unsigned char *msg;
	const char *why;
	size_t off = 0, len;
	int op, done = 0;

	(void)state;
	while (off < sizeof(frags)) {
		assert_int_equal(wsc_frame_parse(frags + off, sizeof(frags) - off, 100, &f, &why),
		                 WSC_DONE);
		off += f.frame_len;
		if (f.opcode == WSC_OP_PING)
			continue;   /* control frames may come between fragments */
		if (wsc_asm_feed(&a, &f, 100, &msg, &len, &op, &why) == WSC_DONE) {
			assert_int_equal(op, WSC_OP_TEXT);
			assert_int_equal(len, 5);
			assert_memory_equal(msg, "abcde", 5);
			done++;
		}
	}
	assert_int_equal(done, 1);
	/* an orphan continuation, a new message inside one, one too big */
	{
		static const unsigned char cont[] = { 0x80, 0x01, 'x' }, start[] = { 0x01, 0x01, 'x' },
		                           text[] = { 0x81, 0x01, 'x' };

		wsc_frame_parse(cont, 3, 100, &f, &why);
		assert_int_equal(wsc_asm_feed(&a, &f, 100, &msg, &len, &op, &why), WSC_ERROR);
		wsc_frame_parse(start, 3, 100, &f, &why);
		assert_int_equal(wsc_asm_feed(&a, &f, 100, &msg, &len, &op, &why), WSC_MORE);
		wsc_frame_parse(text, 3, 100, &f, &why);
		assert_int_equal(wsc_asm_feed(&a, &f, 100, &msg, &len, &op, &why), WSC_ERROR);
		a.opcode = 0;
		wsc_frame_parse(start, 3, 100, &f, &why);
		assert_int_equal(wsc_asm_feed(&a, &f, 1, &msg, &len, &op, &why), WSC_MORE);
		wsc_frame_parse(cont, 3, 100, &f, &why);
		assert_int_equal(wsc_asm_feed(&a, &f, 1, &msg, &len, &op, &why), WSC_ERROR);
	}
	wsc_asm_free(&a);
}

static void test_json_scan(void **state)
{
	static const char msg[] =
		"{\"type\":\"mod\",\"channel_id\":\"c\\\"1\",\"msg_id\":\"m-1\",\"author\":{\"id\":\"p\","
		"\"name\":\"}{\"},\"content\":\"a\\\\\",\"meta\":{\"x\":[1,{\"y\":\"]\"}]},\"n\":-1.5e3,"
		"\"duplicate\":true,\"z\":null}";
	const char *v;
	size_t vl;
	enum wsc_json_type t;

	(void)state;
	assert_int_equal(wsc_json_get(msg, strlen(msg), "msg_id", &v, &vl, &t), 1);
	assert_int_equal(t, WSC_JSON_STRING);
	assert_true(wsc_span_eq(v, vl, "m-1"));
	assert_int_equal(wsc_json_get(msg, strlen(msg), "channel_id", &v, &vl, &t), 1);
	assert_true(wsc_span_eq(v, vl, "c\\\"1"));
	assert_int_equal(wsc_json_get(msg, strlen(msg), "content", &v, &vl, &t), 1);
	assert_true(wsc_span_eq(v, vl, "a\\\\"));
	assert_int_equal(wsc_json_get(msg, strlen(msg), "meta", &v, &vl, &t), 1);
	assert_int_equal(t, WSC_JSON_OBJECT);
	assert_true(wsc_span_eq(v, vl, "{\"x\":[1,{\"y\":\"]\"}]}"));
	assert_int_equal(wsc_json_get(msg, strlen(msg), "n", &v, &vl, &t), 1);
	assert_true(wsc_span_eq(v, vl, "-1.5e3"));
	assert_int_equal(wsc_json_get(msg, strlen(msg), "duplicate", &v, &vl, &t), 1);
	assert_int_equal(t, WSC_JSON_TRUE);
	assert_int_equal(wsc_json_get(msg, strlen(msg), "z", &v, &vl, &t), 1);
	assert_int_equal(t, WSC_JSON_NULL);
	/* only top-level keys count */
	assert_int_equal(wsc_json_get(msg, strlen(msg), "name", &v, &vl, &t), 0);
	assert_int_equal(wsc_json_get("{}", 2, "a", &v, &vl, &t), 0);
	assert_int_equal(wsc_json_get(" { \"a\" : 1 } ", 13, "a", &v, &vl, &t), 1);

	/* malformed: an error, never a read past the end */
	{
		static const char *const bad[] = { "", "[]", "{", "{\"a\"", "{\"a\":", "{\"a\":\"x",
		                                   "{\"a\":1", "{\"a\":1,", "{a:1}", "{\"a\":{\"b\":1}",
		                                   "{\"a\":tru}", "{\"a\":1 \"b\":2}" };
		for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
			/* exactly the text, no NUL after it: a sanitizer sees any overread */
			size_t n = strlen(bad[i]);
			char *copy = malloc(n ? n : 1);

			memcpy(copy, bad[i], n);
			assert_int_equal(wsc_json_get(copy, n, "zz", &v, &vl, &t), -1);
			free(copy);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha1_vectors),
		cmocka_unit_test(test_base64_and_accept),
		cmocka_unit_test(test_url_parse),
		cmocka_unit_test(test_upgrade_request_and_answer),
		cmocka_unit_test(test_encode_roundtrip),
		cmocka_unit_test(test_parse_server_frames),
		cmocka_unit_test(test_head_parse),
		cmocka_unit_test(test_http_header),
		cmocka_unit_test(test_reassembly),
		cmocka_unit_test(test_json_scan),
	};

	return cmocka_run_group_tests_name("test_wsc", tests, NULL, NULL);
}
