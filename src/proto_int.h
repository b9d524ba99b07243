/*
 * proto_int.h - what the pieces of the protocol module share (the pieces
 * are listed at the top of protocol.c). Private to protocol.c and
 * proto_*.c; everyone else uses protocol.h.
 */
#ifndef GW_PROTO_INT_H
#define GW_PROTO_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol.h"

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

/* ---- proto_arena.c ------------------------------------------------------- */

/* The stack memory one decode lends Jansson; lives in the decoding frame. */
struct proto_arena {
	char *base;
	size_t used, cap;
	struct proto_arena *outer;   /* the one to restore (nested decodes) */
};

/* Until proto_arena_leave(a), Jansson's allocations on this thread come
 * from mem (cap bytes, 16-byte aligned) while they fit (proto_init). */
void proto_arena_enter(struct proto_arena *a, void *mem, size_t cap);
void proto_arena_leave(struct proto_arena *a);

/* ---- protocol.c ---------------------------------------------------------- */

/* 1 if hs is what a successful proto_decode_handshake fills, else 0. */
int proto_hs_usable(const struct gw_handshake *hs);

/* ---- proto_encode.c ------------------------------------------------------ */

/* A new message built from validated parts, its body written (NULL when
 * out of memory). hint: expected size of the body. */
struct gw_msg *proto_msg_build(const struct msg_in *in, const struct gw_handshake *hs,
                               int64_t now_ms, size_t hint);

/* v's compact JSON into dst, or "null"; always NUL-terminated (cap > 0). */
void proto_msg_id_echo(json_t *v, char *dst, size_t cap);

/* ---- JSON text, as Jansson's lexer reads it ------------------------------ */

/* Inline: the fast path's scanner and the string writer (proto_encode.c)
 * run them per character. */

/* Nonzero if one of the 8 bytes in w is a '"', a '\\', a control byte or
 * not ASCII: the bytes a string scan must look at one by one. (A byte
 * v - 1 borrows from, with its top bit clear, was zero; a borrow can only
 * make a false hit above a true one.) */
static inline uint64_t word_special(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ULL, tops = 0x8080808080808080ULL;
	uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');

	return (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w) | w) & tops;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes available), or 0
 * if it is invalid: bad lead or continuation byte, overlong form, surrogate,
 * or beyond U+10FFFF. */
static inline size_t utf8_seq(const unsigned char *s, size_t n)
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

/* The value of 4 hex digits at s (any case), or 0x10000 if one is not. */
static inline unsigned hex4(const char *s)
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

#endif
