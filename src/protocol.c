/*
 * protocol.c - the /sync wire format: handshakes and messages in, acks,
 * errors and outbound messages out. See protocol.h for the contract. The
 * module is cut into files that share proto_int.h:
 *   protocol.c      this overview, and the rules every piece applies: a
 *                   valid id, a usable handshake
 *   proto_arena.c   Jansson's allocator: a bump arena per decode
 *   proto_decode.c  Jansson: handshakes, and messages as the reference
 *   proto_fast.c    the one-pass scanner that takes ordinary messages first
 *   proto_encode.c  outbound bytes: message bodies and frames (struct
 *                   gw_msg's one block), replies, events
 * Timestamps are written and checked by clock.c.
 *
 * DESIGN
 * - Pure functions over caller memory, no globals, no locks, no I/O: every
 *   function may be called from any thread at any time.
 * - Messages take a fast path first (proto_fast.c): one strict pass over
 *   the bytes, no tree. What it does not take goes the general way
 *   (proto_decode.c), which is also the reference the fast path must match
 *   byte for byte (proto_decode_message_ref; tests and fuzzer).
 */
#include "proto_int.h"

#include <string.h>

int proto_utf8_valid(const void *s, size_t n)
{
	const unsigned char *u = s;
	size_t i = 0, k;

	while (i < n) {
		if ((k = utf8_seq(u + i, n - i)) == 0)
			return 0;
		i += k;
	}
	return 1;
}

/* An id is what we key, log and compare on: 1..GW_ID_MAX bytes, no C0
 * controls, DEL or C1 controls (U+0080..U+009F, encoded C2 80..C2 9F).
 * s is known to be valid UTF-8 (it came out of Jansson). */
int proto_id_valid(const char *s, size_t n)
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

/* A non-empty id no longer than GW_ID_MAX (read no further than that). */
static int id_usable(const char *id)
{
	return id != NULL && id[0] != '\0' && strnlen(id, GW_ID_MAX + 1) <= GW_ID_MAX;
}

/* 1 if hs looks like the output of a successful proto_decode_handshake:
 * a known role and its ids non-empty and no longer than an id can be.
 * Guards against a caller passing a zeroed or stale struct. */
int proto_hs_usable(const struct gw_handshake *hs)
{
	if (hs == NULL)
		return 0;
	switch (hs->role) {
	case GW_ROLE_MOD:
		return id_usable(hs->server_id) && id_usable(hs->channel_id);
	case GW_ROLE_BOT:
		return id_usable(hs->bot_id);
	default:
		return 0;
	}
}

const char *proto_role_name(enum gw_role role)
{
	return role == GW_ROLE_BOT ? "bot" : "mod";
}
