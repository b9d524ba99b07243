/*
 * wsc.c - client-side WebSocket primitives: see wsc.h.
 *
 * Everything works on caller buffers. The frame parser is the hot path of
 * homestead-bench: it reads the header, checks what a client must check and
 * returns a pointer into the buffer, so parsing a frame costs a few
 * comparisons. Masking, the other per-byte cost, runs eight bytes at a time.
 */
#include "wsc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define WSC_GUID        "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WSC_HTTP_MAX    16384

static uint32_t rol32(uint32_t x, int n);
static void sha1_block(uint32_t h[5], const unsigned char *p);
static void mask_copy(unsigned char *dst, const unsigned char *src, size_t len, uint32_t mask);
static const char *skip_ws(const char *p, const char *end);
static const char *skip_string(const char *p, const char *end);
static const char *skip_value(const char *p, const char *end, enum wsc_json_type *type);

/* ---- SHA-1 (FIPS 180-4), base64, randomness ----------------------------- */

static uint32_t rol32(uint32_t x, int n)
{
	return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
	uint32_t w[80], a, b, c, d, e, f, k, t;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
	for (i = 16; i < 80; i++)
		w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
	for (i = 0; i < 80; i++) {
		if (i < 20) {
			f = (b & c) | (~b & d);
			k = 0x5A827999;
		} else if (i < 40) {
			f = b ^ c ^ d;
			k = 0x6ED9EBA1;
		} else if (i < 60) {
			f = (b & c) | (b & d) | (c & d);
			k = 0x8F1BBCDC;
		} else {
			f = b ^ c ^ d;
			k = 0xCA62C1D6;
		}
		t = rol32(a, 5) + f + e + k + w[i];
		e = d;
		d = c;
		c = rol32(b, 30);
		b = a;
		a = t;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

void wsc_sha1(const void *data, size_t len, unsigned char out[20])
{
	uint32_t h[5] = { 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0 };
	const unsigned char *p = data;
	unsigned char tail[128];
	size_t full = len / 64 * 64, rest = len - full, tail_len, i;
	uint64_t bits = (uint64_t)len * 8;

	for (i = 0; i < full; i += 64)
		sha1_block(h, p + i);
	/* 0x80, zeros, the bit length big-endian in the last 8 bytes; one more
	 * block when the rest leaves no room for them */
	memset(tail, 0, sizeof(tail));
	if (rest > 0)
		memcpy(tail, p + full, rest);
	tail[rest] = 0x80;
	tail_len = rest < 56 ? 64 : 128;
	for (i = 0; i < 8; i++)
		tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
	sha1_block(h, tail);
	if (tail_len == 128)
		sha1_block(h, tail + 64);
	for (i = 0; i < 5; i++) {
		out[4 * i] = (unsigned char)(h[i] >> 24);
		out[4 * i + 1] = (unsigned char)(h[i] >> 16);
		out[4 * i + 2] = (unsigned char)(h[i] >> 8);
		out[4 * i + 3] = (unsigned char)h[i];
	}
}

size_t wsc_base64(const void *data, size_t len, char *out)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = data;
	size_t i, o = 0;
	uint32_t v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		out[o++] = abc[v >> 6 & 63];
		out[o++] = abc[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)p[i] << 16;
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		out[o++] = '=';
		out[o++] = '=';
	} else if (len - i == 2) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		out[o++] = abc[v >> 6 & 63];
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

void wsc_accept_key(const char *key, char out[WSC_ACCEPT_LEN + 1])
{
	char joined[128];
	unsigned char digest[20];
	int n = snprintf(joined, sizeof(joined), "%s%s", key, WSC_GUID);

	if (n < 0 || (size_t)n >= sizeof(joined))
		n = 0;   /* absurd key: no accept value can match it */
	wsc_sha1(joined, (size_t)n, digest);
	wsc_base64(digest, sizeof(digest), out);
}

void wsc_random(void *buf, size_t len)
{
	static uint64_t state;
	unsigned char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = getrandom(p, len, GRND_NONBLOCK);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (!(n < 0 && errno == EINTR)) {
			break;
		}
	}
	if (len > 0 && state == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		state = ((uint64_t)ts.tv_nsec << 20 ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid()) | 1;
	}
	while (len > 0) {
		state ^= state << 13;
		state ^= state >> 7;
		state ^= state << 17;
		*p++ = (unsigned char)(state >> 24);
		len--;
	}
}

/* ---- URL and upgrade ---------------------------------------------------- */

int wsc_url_parse(const char *url, struct wsc_url *u, const char **why)
{
	const char *p, *host, *host_end, *port = NULL, *path;
	size_t hl, pl;

	memset(u, 0, sizeof(*u));
	if (strncasecmp(url, "wss://", 6) == 0) {
		*why = "wss:// (TLS) is not supported: use ws:// or a TLS terminator in front";
		return -1;
	}
	if (strncasecmp(url, "ws://", 5) != 0) {
		*why = "the URL must start with ws://";
		return -1;
	}
	host = url + 5;
	path = host + strcspn(host, "/?#");
	if (*host == '[') {                 /* [v6]:port */
		host_end = memchr(host, ']', (size_t)(path - host));
		if (!host_end) {
			*why = "unterminated [IPv6] address";
			return -1;
		}
		p = host_end + 1;
		host++;
		if (p < path && *p == ':')
			port = p + 1;
		else if (p != path) {
			*why = "junk after ]";
			return -1;
		}
	} else {
		host_end = memchr(host, ':', (size_t)(path - host));
		if (host_end)
			port = host_end + 1;
		else
			host_end = path;
	}
	hl = (size_t)(host_end - host);
	if (hl == 0 || hl >= sizeof(u->host)) {
		*why = "missing or too long host";
		return -1;
	}
	memcpy(u->host, host, hl);
	if (port) {
		pl = (size_t)(path - port);
		if (pl == 0 || pl >= sizeof(u->port) || strspn(port, "0123456789") < pl) {
			*why = "bad port";
			return -1;
		}
		memcpy(u->port, port, pl);
	} else {
		strcpy(u->port, "80");
	}
	if ((size_t)(path - (url + 5)) >= sizeof(u->hostport)) {
		*why = "host too long";
		return -1;
	}
	memcpy(u->hostport, url + 5, (size_t)(path - (url + 5)));
	if (*path == '#')
		path = "";
	pl = strcspn(path, "#");
	if (pl + 2 > sizeof(u->path)) {
		*why = "path too long";
		return -1;
	}
	if (*path != '/')
		u->path[0] = '/';
	memcpy(u->path + strlen(u->path), path, pl);
	return 0;
}

void wsc_new_key(char key[WSC_KEY_LEN + 1], char accept[WSC_ACCEPT_LEN + 1])
{
	unsigned char nonce[16];

	wsc_random(nonce, sizeof(nonce));
	wsc_base64(nonce, sizeof(nonce), key);
	wsc_accept_key(key, accept);
}

size_t wsc_upgrade_request(char *buf, size_t cap, const struct wsc_url *u, const char *key,
                           const char *api_key)
{
	int n;

	n = snprintf(buf, cap,
	             "GET %s HTTP/1.1\r\n"
	             "Host: %s\r\n"
	             "Upgrade: websocket\r\n"
	             "Connection: Upgrade\r\n"
	             "Sec-WebSocket-Key: %s\r\n"
	             "Sec-WebSocket-Version: 13\r\n"
	             "%s%s%s"
	             "\r\n",
	             u->path, u->hostport, key, api_key && *api_key ? "X-API-Key: " : "",
	             api_key && *api_key ? api_key : "", api_key && *api_key ? "\r\n" : "");
	if (n < 0 || (size_t)n >= cap)
		return 0;
	return (size_t)n;
}

const char *wsc_http_header(const char *head, size_t head_len, const char *name, size_t *vlen)
{
	size_t nlen = strlen(name);
	const char *end = head + head_len, *line, *eol, *v;

	line = memchr(head, '\n', head_len);
	while (line && ++line < end) {
		eol = memchr(line, '\n', (size_t)(end - line));
		if (!eol)
			break;
		if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
		    line[nlen] == ':') {
			v = line + nlen + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			while (eol > v && (eol[-1] == '\r' || eol[-1] == ' ' || eol[-1] == '\t'))
				eol--;
			*vlen = (size_t)(eol - v);
			return v;
		}
		line = eol;
	}
	return NULL;
}

enum wsc_parse wsc_http_parse(const char *buf, size_t len, const char *expect_accept,
                              struct wsc_http *h)
{
	const char *end, *v;
	size_t vlen;
	int major, minor, status, n = 0;
	char first[64];

	memset(h, 0, sizeof(*h));
	h->content_len = -1;
	if (len >= 5 && memcmp(buf, "HTTP/", 5) != 0)
		return WSC_ERROR;
	if (len < 5 && memcmp(buf, "HTTP/", len) != 0)
		return WSC_ERROR;
	end = memmem(buf, len, "\r\n\r\n", 4);
	if (!end)
		return len > WSC_HTTP_MAX ? WSC_ERROR : WSC_MORE;
	h->head_len = (size_t)(end - buf) + 4;
	snprintf(first, sizeof(first), "%.*s", (int)(h->head_len < 63 ? h->head_len : 63), buf);
	if (sscanf(first, "HTTP/%d.%d %d%n", &major, &minor, &status, &n) != 3 || n == 0 ||
	    status < 100 || status > 999)
		return WSC_ERROR;
	h->status = status;
	v = wsc_http_header(buf, h->head_len, "Content-Length", &vlen);
	if (v && vlen > 0 && vlen < 19 && strspn(v, "0123456789") >= vlen)
		h->content_len = strtoll(v, NULL, 10);
	if (status == 101) {
		v = wsc_http_header(buf, h->head_len, "Upgrade", &vlen);
		h->upgrade_ok = v && vlen == 9 && strncasecmp(v, "websocket", 9) == 0;
		v = wsc_http_header(buf, h->head_len, "Sec-WebSocket-Accept", &vlen);
		h->accept_ok = !expect_accept ||
		               (v && vlen == strlen(expect_accept) && memcmp(v, expect_accept, vlen) == 0);
	}
	return WSC_DONE;
}

/* ---- frames ------------------------------------------------------------- */

size_t wsc_frame_size(size_t len)
{
	return len + 4 + (len < 126 ? 2 : len <= 0xffff ? 4 : 10);
}

/* dst = src ^ mask, eight bytes at a time: for 1 MB messages this is the
 * bench's biggest cost per byte. */
static void mask_copy(unsigned char *dst, const unsigned char *src, size_t len, uint32_t mask)
{
	unsigned char key[4];
	uint64_t k8, w;
	size_t i = 0;

	memcpy(key, &mask, 4);
	memcpy(&k8, key, 4);
	memcpy((unsigned char *)&k8 + 4, key, 4);
	for (; i + 8 <= len; i += 8) {
		memcpy(&w, src + i, 8);
		w ^= k8;
		memcpy(dst + i, &w, 8);
	}
	for (; i < len; i++)
		dst[i] = src[i] ^ key[i & 3];
}

size_t wsc_frame_encode(unsigned char *out, int fin, int opcode, const void *data, size_t len,
                        uint32_t mask)
{
	size_t hdr = wsc_frame_head(out, fin, opcode, len, mask);

	if (len > 0)
		mask_copy(out + hdr, data, len, mask);
	return hdr + len;
}

void wsc_mask(unsigned char *p, size_t len, uint32_t mask)
{
	mask_copy(p, p, len, mask);
}

size_t wsc_frame_head(unsigned char *out, int fin, int opcode, size_t len, uint32_t mask)
{
	size_t hdr = 2, i;

	out[0] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (len < 126) {
		out[1] = (unsigned char)(0x80 | len);
	} else if (len <= 0xffff) {
		out[1] = 0x80 | 126;
		out[2] = (unsigned char)(len >> 8);
		out[3] = (unsigned char)len;
		hdr = 4;
	} else {
		out[1] = 0x80 | 127;
		for (i = 0; i < 8; i++)
			out[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
		hdr = 10;
	}
	memcpy(out + hdr, &mask, 4);
	return hdr + 4;
}

size_t wsc_close_encode(unsigned char *out, int code, const char *reason, uint32_t mask)
{
	unsigned char body[125];
	size_t n = 0, rl;

	if (code > 0) {
		body[0] = (unsigned char)(code >> 8);
		body[1] = (unsigned char)code;
		n = 2;
		if (reason) {
			rl = strlen(reason);
			if (rl > sizeof(body) - 2)
				rl = sizeof(body) - 2;
			memcpy(body + 2, reason, rl);
			n += rl;
		}
	}
	return wsc_frame_encode(out, 1, WSC_OP_CLOSE, body, n, mask);
}

enum wsc_parse wsc_head_parse(const unsigned char *buf, size_t len, struct wsc_head *h)
{
	uint64_t plen;
	size_t hdr = 2, i;

	if (len < 2)
		return WSC_MORE;
	plen = buf[1] & 0x7f;
	if (plen == 126)
		hdr = 4;
	else if (plen == 127)
		hdr = 10;
	if (buf[1] & 0x80)
		hdr += 4;
	if (len < hdr)
		return WSC_MORE;
	if (plen == 126) {
		plen = (uint64_t)buf[2] << 8 | buf[3];
	} else if (plen == 127) {
		plen = 0;
		for (i = 0; i < 8; i++)
			plen = plen << 8 | buf[2 + i];
	}
	h->fin = (buf[0] & 0x80) != 0;
	h->rsv = buf[0] & 0x70;
	h->opcode = buf[0] & 0x0f;
	h->masked = (buf[1] & 0x80) != 0;
	h->mask = 0;
	if (h->masked)
		memcpy(&h->mask, buf + hdr - 4, 4);
	h->len = plen;
	h->head_len = hdr;
	return WSC_DONE;
}

enum wsc_parse wsc_frame_parse(const unsigned char *buf, size_t len, size_t max_payload,
                               struct wsc_frame *f, const char **why)
{
	struct wsc_head h;
	uint64_t plen;
	int op;

	f->frame_len = 0;
	if (len < 2)
		return WSC_MORE;
	op = buf[0] & 0x0f;
	if (buf[0] & 0x70) {
		*why = "reserved bits set";
		return WSC_ERROR;
	}
	if ((op > 2 && op < 8) || op > 10) {
		*why = "reserved opcode";
		return WSC_ERROR;
	}
	if (buf[1] & 0x80) {
		*why = "masked frame from the server";
		return WSC_ERROR;
	}
	if (op >= 8 && ((buf[1] & 0x7f) > 125 || !(buf[0] & 0x80))) {
		*why = "fragmented or oversized control frame";
		return WSC_ERROR;
	}
	if (wsc_head_parse(buf, len, &h) == WSC_MORE)
		return WSC_MORE;
	plen = h.len;
	if (plen > max_payload) {
		*why = "frame larger than allowed";
		return WSC_ERROR;
	}
	f->frame_len = h.head_len + (size_t)plen;
	if (len < f->frame_len)
		return WSC_MORE;
	f->fin = h.fin;
	f->opcode = op;
	f->payload = buf + h.head_len;
	f->len = (size_t)plen;
	f->close_code = 0;
	if (op == WSC_OP_CLOSE) {
		if (plen == 1) {
			*why = "close frame with a 1-byte payload";
			return WSC_ERROR;
		}
		f->close_code = plen >= 2 ? (f->payload[0] << 8 | f->payload[1]) : 1005;
	}
	return WSC_DONE;
}

enum wsc_parse wsc_asm_feed(struct wsc_asm *a, const struct wsc_frame *f, size_t max,
                            const unsigned char **msg, size_t *len, int *opcode,
                            const char **why)
{
	size_t cap;
	unsigned char *nb;

	if (f->opcode != WSC_OP_CONT) {
		if (a->opcode) {
			*why = "new message inside a fragmented one";
			return WSC_ERROR;
		}
		if (f->len > max) {
			*why = "message larger than allowed";
			return WSC_ERROR;
		}
		if (f->fin) {   /* the usual case: no copy */
			*msg = f->payload;
			*len = f->len;
			*opcode = f->opcode;
			return WSC_DONE;
		}
		a->opcode = f->opcode;
		a->len = 0;
	} else if (!a->opcode) {
		*why = "continuation without a message";
		return WSC_ERROR;
	}
	if (f->len > max - a->len) {
		*why = "message larger than allowed";
		return WSC_ERROR;
	}
	if (a->len + f->len > a->cap) {
		cap = a->cap ? a->cap : 4096;
		while (cap < a->len + f->len)
			cap *= 2;
		if (!(nb = realloc(a->buf, cap))) {
			*why = "out of memory";
			return WSC_ERROR;
		}
		a->buf = nb;
		a->cap = cap;
	}
	if (f->len)
		memcpy(a->buf + a->len, f->payload, f->len);
	a->len += f->len;
	if (!f->fin)
		return WSC_MORE;
	*msg = a->buf;
	*len = a->len;
	*opcode = a->opcode;
	a->opcode = 0;
	return WSC_DONE;
}

void wsc_asm_free(struct wsc_asm *a)
{
	free(a->buf);
	memset(a, 0, sizeof(*a));
}

/* ---- JSON scanning ------------------------------------------------------ */

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p at the opening quote; returns just past the closing one, or NULL. An
 * escaped quote is one preceded by an odd run of backslashes. */
static const char *skip_string(const char *p, const char *end)
{
	const char *q = p + 1, *b;

	for (;;) {
		q = memchr(q, '"', (size_t)(end - q));
		if (!q)
			return NULL;
		for (b = q; b > p + 1 && b[-1] == '\\'; b--)
			;
		if (((q - b) & 1) == 0)
			return q + 1;
		q++;
	}
}

/* p at the start of a value; returns just past it, or NULL. Objects and
 * arrays are skipped by counting brackets outside strings. */
static const char *skip_value(const char *p, const char *end, enum wsc_json_type *type)
{
	int depth = 0;

	if (p >= end)
		return NULL;
	switch (*p) {
	case '"':
		*type = WSC_JSON_STRING;
		return skip_string(p, end);
	case '{':
	case '[':
		*type = *p == '{' ? WSC_JSON_OBJECT : WSC_JSON_ARRAY;
		for (; p < end; p++) {
			if (*p == '"') {
				if (!(p = skip_string(p, end)))
					return NULL;
				p--;
			} else if (*p == '{' || *p == '[') {
				depth++;
			} else if (*p == '}' || *p == ']') {
				if (--depth == 0)
					return p + 1;
			}
		}
		return NULL;
	case 't':
		*type = WSC_JSON_TRUE;
		return end - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
	case 'f':
		*type = WSC_JSON_FALSE;
		return end - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
	case 'n':
		*type = WSC_JSON_NULL;
		return end - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
	default:
		*type = WSC_JSON_NUMBER;
		if (*p != '-' && (*p < '0' || *p > '9'))
			return NULL;
		while (p < end && ((*p && strchr("+-.eE", *p)) || (*p >= '0' && *p <= '9')))
			p++;
		return p;
	}
}

void wsc_json_begin(struct wsc_json_iter *it, const char *s, size_t len)
{
	it->p = s;
	it->end = s + len;
	it->started = 0;
}

int wsc_json_next(struct wsc_json_iter *it, const char **key, size_t *klen, const char **val,
                  size_t *vlen, enum wsc_json_type *type)
{
	const char *p = skip_ws(it->p, it->end), *q;

	if (!it->started) {
		if (p >= it->end || *p != '{')
			return -1;
		p = skip_ws(p + 1, it->end);
		it->started = 1;
		if (p < it->end && *p == '}') {
			it->p = p + 1;
			it->started = 2;
			return 0;
		}
	} else if (it->started == 2) {
		return 0;
	} else {
		if (p >= it->end)
			return -1;
		if (*p == '}') {
			it->p = p + 1;
			it->started = 2;
			return 0;
		}
		if (*p != ',')
			return -1;
		p = skip_ws(p + 1, it->end);
	}
	if (p >= it->end || *p != '"' || !(q = skip_string(p, it->end)))
		return -1;
	*key = p + 1;
	*klen = (size_t)(q - p) - 2;
	p = skip_ws(q, it->end);
	if (p >= it->end || *p != ':')
		return -1;
	p = skip_ws(p + 1, it->end);
	if (!(q = skip_value(p, it->end, type)))
		return -1;
	if (*type == WSC_JSON_STRING) {
		*val = p + 1;
		*vlen = (size_t)(q - p) - 2;
	} else {
		*val = p;
		*vlen = (size_t)(q - p);
	}
	it->p = q;
	return 1;
}

int wsc_json_get(const char *s, size_t len, const char *key, const char **val, size_t *vlen,
                 enum wsc_json_type *type)
{
	struct wsc_json_iter it;
	const char *k;
	size_t kl;
	int rc;

	wsc_json_begin(&it, s, len);
	while ((rc = wsc_json_next(&it, &k, &kl, val, vlen, type)) == 1)
		if (wsc_span_eq(k, kl, key))
			return 1;
	return rc;
}

int wsc_span_eq(const char *v, size_t vlen, const char *s)
{
	return strlen(s) == vlen && memcmp(v, s, vlen) == 0;
}
