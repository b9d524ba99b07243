/*
 * wsc.h - client-side WebSocket primitives (RFC 6455) shared by
 * homestead-client, homestead-bench and the tests' client (test/wsclient.c):
 * the upgrade request and the check of its answer, masked frame encoding, an
 * incremental frame parser, message reassembly, and a small scanner for the
 * gateway's flat JSON frames.
 *
 * No I/O and no policy: the callers own their sockets, buffers and
 * timeouts. Nothing here allocates on the hot path: the parser returns
 * payloads that point into the caller's buffer, the encoder writes into one.
 * Every function is thread-safe (no globals) except wsc_random's fallback
 * generator, which tolerates races (its output only needs to vary).
 */
#ifndef GW_WSC_H
#define GW_WSC_H

#include <stddef.h>
#include <stdint.h>

#define WSC_KEY_LEN     24   /* base64 of the 16-byte Sec-WebSocket-Key */
#define WSC_ACCEPT_LEN  28   /* base64 of a SHA-1 digest */
#define WSC_HEAD_MAX    14   /* longest client frame header (with mask) */

/* ---- hashing, encoding, randomness -------------------------------------- */

/* SHA-1 of len bytes into out. */
void wsc_sha1(const void *data, size_t len, unsigned char out[20]);

/* Base64 (standard alphabet, padded) of len bytes into out, which must hold
 * 4 * ((len + 2) / 3) + 1 bytes. Returns the length written, NUL excluded. */
size_t wsc_base64(const void *data, size_t len, char *out);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(sha1(key + GUID)).
 * out gets WSC_ACCEPT_LEN chars and a NUL. */
void wsc_accept_key(const char *key, char out[WSC_ACCEPT_LEN + 1]);

/* Fills buf with len bytes from getrandom(), or from a time-seeded
 * generator when that is not available (masks and nonces need to vary, not
 * to be secret). */
void wsc_random(void *buf, size_t len);

/* ---- URL and upgrade ---------------------------------------------------- */

struct wsc_url {
	char host[256];     /* name or address, IPv6 without brackets */
	char port[8];       /* "3333" when the URL has none (ws:// default: 80) */
	char path[2048];    /* path and query, at least "/" */
	char hostport[272]; /* as written in the URL, for the Host header */
};

/* Parses ws://host[:port][/path][?query]. Returns 0, or -1 with a reason
 * (static text) in *why: not ws://, TLS asked for (wss://), too long. */
int wsc_url_parse(const char *url, struct wsc_url *u, const char **why);

/* Writes the HTTP upgrade request for u into buf (NUL-terminated):
 * GET path, Host, Upgrade, Connection, Sec-WebSocket-Key: key (from
 * wsc_new_key), Sec-WebSocket-Version 13 and, when api_key is non-NULL and
 * non-empty, X-API-Key: api_key (so the key never sits in a URL that a
 * proxy or the gateway could log). Returns the length, or 0 if cap is too
 * small. */
size_t wsc_upgrade_request(char *buf, size_t cap, const struct wsc_url *u,
                           const char *key, const char *api_key);

/* A fresh random Sec-WebSocket-Key (base64 of 16 bytes) into key, and the
 * Sec-WebSocket-Accept value the server must answer with into accept. */
void wsc_new_key(char key[WSC_KEY_LEN + 1], char accept[WSC_ACCEPT_LEN + 1]);

/* The answer to the upgrade request. */
struct wsc_http {
	int status;            /* 101 on success */
	size_t head_len;       /* bytes of the head, blank line included */
	long long content_len; /* Content-Length, or -1 */
	int accept_ok;         /* status 101 and Sec-WebSocket-Accept matched */
	int upgrade_ok;        /* status 101 and Upgrade: websocket present */
};

enum wsc_parse { WSC_ERROR = -1, WSC_MORE = 0, WSC_DONE = 1 };

/* Parses the response head at the start of buf[0..len). Returns WSC_MORE if
 * the blank line has not arrived yet, WSC_ERROR if this is not an HTTP
 * response (or the head exceeds 16 kB), WSC_DONE with *h filled. Bytes
 * after h->head_len are the body, or the first frames after a 101.
 * expect_accept is wsc_new_key's accept (NULL skips the check). */
enum wsc_parse wsc_http_parse(const char *buf, size_t len, const char *expect_accept,
                              struct wsc_http *h);

/* The value of header `name` (any case) in a response head of head_len
 * bytes (wsc_http_parse's h->head_len): trimmed, borrowed from head, not
 * NUL-terminated, its length in *vlen. NULL if the head has no such header. */
const char *wsc_http_header(const char *head, size_t head_len, const char *name, size_t *vlen);

/* ---- frames ------------------------------------------------------------- */

enum wsc_op {
	WSC_OP_CONT = 0, WSC_OP_TEXT = 1, WSC_OP_BINARY = 2,
	WSC_OP_CLOSE = 8, WSC_OP_PING = 9, WSC_OP_PONG = 10,
};

/* Bytes a client frame with a len-byte payload takes (header + mask + len). */
size_t wsc_frame_size(size_t len);

/* Encodes one masked client frame (FIN set when fin) of `opcode` with
 * payload data[0..len) into out, which must hold wsc_frame_size(len) bytes.
 * mask is the 4-byte masking key (any value; callers use wsc_random or a
 * cheap generator). Returns the bytes written. data may be NULL if len 0. */
size_t wsc_frame_encode(unsigned char *out, int fin, int opcode, const void *data,
                        size_t len, uint32_t mask);

/* For building a payload in place: writes the header of a masked client
 * frame of len payload bytes into out (WSC_HEAD_MAX bytes at most) and
 * returns its length; the caller puts the payload right after it and masks
 * it there with wsc_mask. */
size_t wsc_frame_head(unsigned char *out, int fin, int opcode, size_t len, uint32_t mask);

/* XORs p[0..len) with the masking key in place (as wsc_frame_encode). */
void wsc_mask(unsigned char *p, size_t len, uint32_t mask);

/* Encodes a close frame with code (0 = no code) and an optional reason
 * (cut to fit 123 bytes). out must hold WSC_HEAD_MAX + 125 bytes. */
size_t wsc_close_encode(unsigned char *out, int code, const char *reason, uint32_t mask);

/* A frame header as it is on the wire, not judged. */
struct wsc_head {
	int fin;
	int rsv;            /* the RSV bits as they are in the first byte (0x70) */
	int opcode;         /* any of 0..15 */
	int masked;
	uint32_t mask;      /* when masked: the key, as wsc_mask takes it */
	uint64_t len;       /* payload length */
	size_t head_len;    /* header bytes, the masking key included */
};

/*
 * Decodes the frame header at the start of buf[0..len) and checks nothing:
 * RSV bits, any opcode, a mask and any length pass. For a peer that must
 * take what comes (the tests' client); a client judges frames with
 * wsc_frame_parse, which reads its headers with this. Returns WSC_DONE with
 * *h filled, or WSC_MORE while the header is not all in; never WSC_ERROR.
 */
enum wsc_parse wsc_head_parse(const unsigned char *buf, size_t len, struct wsc_head *h);

/* One server frame, as found by wsc_frame_parse. */
struct wsc_frame {
	int fin;
	int opcode;
	const unsigned char *payload; /* borrowed: points into the parsed buffer */
	size_t len;                   /* payload length */
	size_t frame_len;             /* header + payload: bytes to consume */
	int close_code;               /* opcode 8: the code, 1005 if none */
};

/*
 * Looks for one whole frame at the start of buf[0..len). Returns:
 *   WSC_DONE  - *f filled; consume f->frame_len bytes after use;
 *   WSC_MORE  - incomplete; f->frame_len is the total size of the frame when
 *               its header is in (so the caller can grow its buffer), else 0;
 *   WSC_ERROR - a frame a client must refuse: masked (servers never mask),
 *               RSV bits, reserved opcode, fragmented or long control frame,
 *               payload over max_payload. *why gets a reason (static text).
 * Never allocates; never copies.
 */
enum wsc_parse wsc_frame_parse(const unsigned char *buf, size_t len, size_t max_payload,
                               struct wsc_frame *f, const char **why);

/*
 * Reassembles fragmented text/binary messages. Unfragmented frames (the
 * usual case) pass through without a copy; fragments are gathered in an
 * owned, growing buffer that is reused for the next message.
 */
struct wsc_asm {
	unsigned char *buf;
	size_t len, cap;
	int opcode;        /* of the message in progress; 0 = none */
};

/* Feeds one data frame (opcode 0, 1 or 2). Returns WSC_DONE with *msg and *len
 * set to the whole message (borrowed: the frame's payload or a->buf, valid
 * until the next call), WSC_MORE if more fragments are due, WSC_ERROR on an
 * orphan continuation, a new message inside a fragmented one, a message
 * over max bytes or out of memory (*why says which). *opcode gets the
 * message's opcode (1 or 2). */
enum wsc_parse wsc_asm_feed(struct wsc_asm *a, const struct wsc_frame *f, size_t max,
                            const unsigned char **msg, size_t *len, int *opcode,
                            const char **why);
void wsc_asm_free(struct wsc_asm *a);

/* ---- JSON scanning ------------------------------------------------------ */

/*
 * Walks the members of one JSON object without building anything: for the
 * hot path of the bench and for quick looks at acks. It checks the
 * structure it walks (strings, nesting, separators) but not number syntax
 * or escapes in detail; use Jansson where the value matters.
 *
 *   struct wsc_json_iter it;
 *   wsc_json_begin(&it, text, len);
 *   while (wsc_json_next(&it, &k, &klen, &v, &vlen, &type) == 1) ...
 *
 * A string value is returned without its quotes, escapes left as they are.
 */
enum wsc_json_type { WSC_JSON_STRING, WSC_JSON_NUMBER, WSC_JSON_OBJECT, WSC_JSON_ARRAY,
                     WSC_JSON_TRUE, WSC_JSON_FALSE, WSC_JSON_NULL };

struct wsc_json_iter {
	const char *p, *end;
	int started;
};

void wsc_json_begin(struct wsc_json_iter *it, const char *s, size_t len);

/* Returns 1 with the next member (key and value borrowed from the text),
 * 0 at the end of the object, -1 on malformed text. */
int wsc_json_next(struct wsc_json_iter *it, const char **key, size_t *klen, const char **val,
                  size_t *vlen, enum wsc_json_type *type);

/* The value of top-level member `key` of the object in s[0..len); returns
 * 1 and the span (as wsc_json_next), 0 if absent, -1 if malformed. */
int wsc_json_get(const char *s, size_t len, const char *key, const char **val, size_t *vlen,
                 enum wsc_json_type *type);

/* 1 if the span v[0..vlen) equals the NUL-terminated s. */
int wsc_span_eq(const char *v, size_t vlen, const char *s);

#endif
