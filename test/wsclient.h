/*
 * wsclient.h - a small blocking WebSocket client for the tests, written on
 * raw sockets so it can also misbehave on purpose (unmasked frames, bad
 * opcodes, stalled frames, not reading). Independent of CivetWeb.
 * One struct ws per connection; not thread-safe per connection.
 */
#ifndef GW_TEST_WSCLIENT_H
#define GW_TEST_WSCLIENT_H

#include <stddef.h>
#include <stdint.h>

struct ws {
	int fd;
	unsigned char *buf;   /* received, not yet consumed bytes */
	size_t len, cap;
	int http_status;      /* status of the upgrade answer */
	char http_body[512];  /* body when the upgrade was refused */
};

struct ws_frame {
	int fin;
	int opcode;           /* 1 text, 2 binary, 8 close, 9 ping, 10 pong, 0 cont */
	unsigned char *data;  /* malloc'd, NUL-terminated; free with ws_frame_free */
	size_t len;
	int close_code;       /* for opcode 8: code, or 1005 if none */
};

/* Connects to 127.0.0.1:port and asks to upgrade `path` (e.g.
 * "/sync?api_key=k"); extra_headers is NULL or "Name: v\r\n..." lines.
 * Returns a new ws with http_status 101 on success. On a refused upgrade
 * returns the ws with http_status/http_body set and fd closed (-1).
 * If the answer never came, was not HTTP, or a 101 carried a wrong
 * Sec-WebSocket-Accept: http_status 0, the reason in http_body, fd -1.
 * Returns NULL if the TCP connect fails. */
struct ws *ws_connect(int port, const char *path, const char *extra_headers,
                      int timeout_ms);
void ws_free(struct ws *w);           /* closes the socket */

/* Sends one frame: masked unless mask == 0; rsv bits ORed into byte 0. */
int ws_send_frame(struct ws *w, int fin, int opcode, const void *data, size_t len,
                  int mask, int rsv);
int ws_send_text(struct ws *w, const char *text);    /* one masked text frame */
int ws_send_raw(struct ws *w, const void *bytes, size_t len);

/* Receives one frame within timeout_ms (< 0: no limit). Returns 0 and
 * fills *f; -1 on timeout (a partly received frame stays buffered for the
 * next call), -2 on EOF/error. Masked server frames are unmasked. */
int ws_recv_frame(struct ws *w, struct ws_frame *f, int timeout_ms);
void ws_frame_free(struct ws_frame *f);

/* Receives the next text/binary message (answers pings with pongs, skips
 * pongs), reassembling fragments. Returns a malloc'd NUL-terminated string,
 * or NULL on timeout/close; *close_code gets the close code if a close
 * frame arrived (else 0). close_code may be NULL. A close frame is echoed
 * back (same code), as a real client does. */
char *ws_recv_text(struct ws *w, int timeout_ms, int *close_code);

/* Waits for the connection to end: returns the close code received (1005
 * when a close frame had no code), 1006 for EOF without close frame, or -1
 * on timeout. Discards data frames, answers pings and echoes the close
 * frame meanwhile. */
int ws_wait_close(struct ws *w, int timeout_ms);

/* Plain HTTP GET on 127.0.0.1:port ("Connection: close"); returns the
 * status, or -1 if the connect failed or no HTTP head came in time. The body
 * (Content-Length, chunked, or up to EOF) is copied into body, truncated to
 * cap - 1 bytes and NUL-terminated; body may be NULL when cap is 0. */
int http_get(int port, const char *path, const char *extra_headers,
             char *body, size_t cap, int timeout_ms);

/* Helpers, also used by the tests' in-process server. */
/* SHA-1 of len bytes into out (20 bytes). */
void ws_sha1(const void *data, size_t len, unsigned char out[20]);
/* Base64 (standard alphabet, padded) of len bytes into out, which must hold
 * 4 * ((len + 2) / 3) + 1 bytes; returns the length written (NUL excluded). */
size_t ws_base64(const void *data, size_t len, char *out);
/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(sha1(key + GUID)). */
void ws_accept_key(const char *key, char out[29]);

#endif
