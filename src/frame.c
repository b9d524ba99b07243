/*
 * frame.c - a client's websocket frames, read in place (see frame.h).
 */
#include <string.h>

#include "frame.h"

void frame_unmask(unsigned char *p, size_t n, const unsigned char mask[4])
{
	uint64_t m8;
	uint32_t m4;
	size_t i = 0;

	memcpy(&m4, mask, 4);
	m8 = (uint64_t)m4 << 32 | m4;   /* the mask repeats every 4 bytes: any byte order */
	for (; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		w ^= m8;
		memcpy(p + i, &w, 8);
	}
	for (; i < n; i++)
		p[i] ^= mask[i & 3];
}

size_t frame_parse(unsigned char *buf, size_t have, uint64_t max, struct gw_frame *f)
{
	size_t hl = 2;
	uint64_t len;
	int masked;

	if (have < 2)
		return 0;
	masked = buf[1] & 0x80;
	len = buf[1] & 0x7F;
	if (len == 126) {
		hl = 4;
		if (have < hl)
			return 0;
		len = (uint64_t)buf[2] << 8 | buf[3];
	} else if (len == 127) {
		hl = 10;
		if (have < hl)
			return 0;
		len = 0;
		for (int i = 2; i < 10; i++)
			len = len << 8 | buf[i];
	}
	if (len > max) {
		f->bits = buf[0] | GW_FRAME_TOO_BIG | (masked ? 0 : GW_FRAME_UNMASKED);
		f->data = NULL;
		f->len = len;
		return hl;
	}
	if (masked)
		hl += 4;
	if (have < hl || have - hl < len)
		return 0;
	if (masked)
		frame_unmask(buf + hl, (size_t)len, buf + hl - 4);
	f->bits = buf[0] | (masked ? 0 : GW_FRAME_UNMASKED);
	f->data = buf + hl;
	f->len = len;
	return hl + (size_t)len;
}
