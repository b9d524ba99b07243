/*
 * frame.h - a client's websocket frames (RFC 6455 5.2), read in place.
 *
 * The readers (reader.c) keep what a peer sent in one buffer; frame_parse
 * takes the frame at its start: it checks the header, unmasks the payload
 * where it lies and says how many bytes the frame took. It judges nothing
 * but the header's shape: opcodes, RSV bits and control frame rules are
 * the session's (session.c). Pure: no state, no allocation, no locks.
 */
#ifndef GW_FRAME_H
#define GW_FRAME_H

#include <stddef.h>
#include <stdint.h>

/* Flags in gw_frame.bits above the header's first byte. */
#define GW_FRAME_UNMASKED 0x100   /* no mask: a client must mask (5.1) */
#define GW_FRAME_TOO_BIG 0x200    /* announced more than max: payload not read */

struct gw_frame {
	int bits;              /* first header byte (FIN 0x80, RSV 0x70, opcode 0x0F) | flags */
	unsigned char *data;   /* the payload, unmasked; NULL when GW_FRAME_TOO_BIG */
	uint64_t len;          /* its length (the announced one when GW_FRAME_TOO_BIG) */
};

/* The frame at the start of buf (have bytes). Returns the bytes it takes
 * (header and payload; only the header when GW_FRAME_TOO_BIG), with f
 * filled in and the payload unmasked in buf; or 0 when buf does not hold
 * the whole frame yet (f untouched). A frame announcing more than max
 * payload bytes is GW_FRAME_TOO_BIG as soon as its header is complete. */
size_t frame_parse(unsigned char *buf, size_t have, uint64_t max, struct gw_frame *f);

/* XORs n bytes of p with the 4-byte mask, starting at the mask's byte 0. */
void frame_unmask(unsigned char *p, size_t n, const unsigned char mask[4]);

#endif
