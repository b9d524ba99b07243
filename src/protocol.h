/*
 * protocol.h - the /sync wire format: decode and validate handshakes and
 * messages, encode acks, errors and outbound messages. Pure: no I/O, no
 * locks, no globals; every function is thread-safe.
 *
 * An accepted message becomes a struct gw_msg holding its outbound JSON
 * ready to send, minus the fields only known at send time: `body` is the
 * serialized object WITHOUT its closing '}', so a sender appends
 * ,"forwarded_at":"..."[,"dropped":N]} per delivery (proto_msg_frame).
 */
#ifndef GW_PROTOCOL_H
#define GW_PROTOCOL_H

#include <stdint.h>
#include <stddef.h>

enum gw_role { GW_ROLE_MOD, GW_ROLE_BOT };

/* Where a routed message goes: a mod's to the bot, the bot's to the mods
 * of a channel. The values are kept in the durable store. */
enum gw_dir { GW_TO_BOT, GW_TO_MOD };

/* What an ack says of an accepted message (its "status"). */
enum gw_status { GW_STATUS_COMPLETED, GW_STATUS_QUEUED, GW_STATUS_FAILED };

static inline const char *proto_status_name(enum gw_status st)
{
	return st == GW_STATUS_COMPLETED ? "completed" : st == GW_STATUS_QUEUED ? "queued" : "failed";
}

/* Why an inbound frame was refused (each maps to a code on the wire). */
enum gw_reject {
	GW_OK = 0,
	GW_REJECT_MALFORMED,    /* 400: not JSON, wrong type, missing field... */
	GW_REJECT_TOO_DEEP,     /* 400: nesting over GW_JSON_MAX_DEPTH */
	GW_REJECT_UNKNOWN_TYPE, /* 400: handshake type not mod/bot */
};

#define GW_JSON_MAX_DEPTH 32   /* checked before parsing: bounded stack use */
#define GW_ID_MAX 256          /* longest msg_id/server_id/channel_id, bytes */
#define GW_ACK_MAX (2 * GW_ID_MAX + 96)   /* any ack of an accepted msg_id fits */
#define GW_EPOCH_MAX 64        /* longest epoch a client may send back, bytes */

/* A bot's resume position on one channel's to-bot stream. */
struct gw_since_chan {
	const char *channel_id;
	uint64_t seq;
};

/* A decoded handshake. Its ids point into one block it owns (ids), and at
 * "" where its role has none: a conn keeps its handshake for its whole
 * life, and fixed arrays for every id a role could have were 0.8 KiB of
 * each idle peer. */
struct gw_handshake {
	enum gw_role role;
	const char *server_id;          /* mods, else "" */
	const char *channel_id;         /* mods, else "" */
	const char *bot_id;             /* bot, else "" */
	int events;                     /* asked for presence events */
	/* "since": what the peer last processed (resume, SPEC 7a) */
	int resume;                     /* the handshake carried since */
	const char *epoch;              /* the sequence it names, else "" */
	uint64_t since_seq;             /* mod: last seq of its channel's to-mod stream */
	size_t nsince;                  /* bot: per channel, in one malloc'd block */
	struct gw_since_chan *since;    /* freed by proto_handshake_release */
	char *ids;                      /* the ids and epoch: proto_handshake_free */
};

/* A handshake holding nothing (ids all ""). */
#define GW_HANDSHAKE_INIT { GW_ROLE_MOD, "", "", "", 0, 0, "", 0, 0, NULL, NULL }

/* One accepted message. Created by proto_decode_message with refs = 1;
 * shared by queues and connections through proto_msg_ref/unref (atomic). */
struct gw_msg {
	int refs;
	enum gw_role from;
	char *channel_id;      /* route key */
	char *msg_id;
	char *sender;          /* mod: server_id, bot: bot_id */
	char *body;            /* outbound JSON minus the final '}' */
	size_t body_len;
	int64_t received_ms;   /* Unix ms */
	uint64_t seq;          /* set by the router: per channel and direction, from 1 */
	int stored;            /* atomic: 1 while a store row holds it as queued */
	/* channel.c, under the registry lock: every history, oldest first */
	struct gw_msg *hist_prev, *hist_next;
	/* msg_id, channel_id and sender point into this same allocation */
};

/* Makes Jansson allocate from a per-decode arena (faster; see proto_arena.c).
 * Optional; call once before threads start. */
void proto_init(void);

/* Decodes a handshake frame. Returns GW_OK and fills *hs (whatever it
 * held is overwritten, not freed), or a reject reason and leaves *hs
 * untouched; never allocates on error. On GW_OK hs owns its ids (free them
 * with proto_handshake_free) and a bot's since channels (release them with
 * proto_handshake_release once used). */
enum gw_reject proto_decode_handshake(const char *data, size_t len,
                                      struct gw_handshake *hs);

/* 1 if the n bytes at s are a valid id (1..GW_ID_MAX bytes, no control
 * characters, valid UTF-8), else 0. */
int proto_id_valid(const char *s, size_t n);

/* 1 if the n bytes at s are valid UTF-8 (RFC 3629), else 0. Pure. */
int proto_utf8_valid(const void *s, size_t n);

/* Frees what hs holds of its since (the rest stays valid). */
void proto_handshake_release(struct gw_handshake *hs);

/* Frees everything hs holds; it is GW_HANDSHAKE_INIT afterwards. */
void proto_handshake_free(struct gw_handshake *hs);

/* The direction a message from `from` travels. */
static inline enum gw_dir proto_dir_of(enum gw_role from)
{
	return from == GW_ROLE_MOD ? GW_TO_BOT : GW_TO_MOD;
}

/* Decodes and validates one message from a peer that completed handshake
 * hs, received at now_ms. On GW_OK *out is a new message (caller owns one
 * reference). On a reject *out is NULL and msg_id_json receives the JSON
 * text of the sender's msg_id value if there was one ("null" otherwise),
 * for the error reply; it is always NUL-terminated within idlen. */
enum gw_reject proto_decode_message(const char *data, size_t len,
                                    const struct gw_handshake *hs,
                                    int64_t now_ms, struct gw_msg **out,
                                    char *msg_id_json, size_t idlen);

/* The same with Jansson alone, without the fast path: the reference the
 * fast path must match byte for byte (tests and fuzzers compare them). */
enum gw_reject proto_decode_message_ref(const char *data, size_t len,
                                        const struct gw_handshake *hs,
                                        int64_t now_ms, struct gw_msg **out,
                                        char *msg_id_json, size_t idlen);

/* Rebuilds a message from its parts (the durable store's rows), laid out
 * exactly like proto_decode_message's output, so proto_msg_unref frees it
 * and proto_msg_frame gives the same bytes. body is the outbound JSON
 * without its final '}' (a gw_msg's body), body_len bytes, copied. The ids
 * must be 1..GW_ID_MAX bytes without control characters, as decode ensures.
 * Returns a new message (refs = 1, caller owns it), or NULL if an argument
 * is invalid (NULL pointer, unknown role, bad id) or memory runs out. */
struct gw_msg *proto_msg_new(enum gw_role from, const char *channel_id,
                             const char *msg_id, const char *sender,
                             const char *body, size_t body_len,
                             int64_t received_ms, uint64_t seq);

void proto_msg_ref(struct gw_msg *m);
void proto_msg_unref(struct gw_msg *m);   /* frees at zero; NULL is fine */

/* Writes the complete outbound JSON for one delivery into buf: body +
 * ,"forwarded_at":"<now>" + (seq > 0 ? ,"seq":N : "") + (dropped > 0 ?
 * ,"dropped":N : "") + "}".
 * Returns the length, or the length needed if it exceeds cap (like
 * snprintf, nothing useful written then). */
size_t proto_msg_frame(const struct gw_msg *m, int64_t now_ms, uint64_t dropped,
                       char *buf, size_t cap);

/* The "connected" reply, WITHOUT its final '}' so that presence fields can
 * follow; epoch may be NULL (left out), resumed < 0 leaves out resumed and
 * missed (no since was given), missed is written when resumed is 0:
 *   {"status":"connected","type":"mod","epoch":"E","resumed":false,"missed":3
 * NUL-terminated; returns its length, or 0 if it does not fit (cap >= 200
 * always fits). */
size_t proto_connected(enum gw_role role, const char *epoch, int resumed, uint64_t missed,
                       char *buf, size_t cap);

/* Small replies. Each writes NUL-terminated JSON into buf (cap >= 64 +
 * length of msg_id) and returns its length, or 0 if it does not fit.
 *   {"status":"queued","type":"mod","msg_id":"m1"[,"duplicate":true]}
 *   {"message":"Malformed message.","code":400[,"msg_id":<json>]}  */
size_t proto_ack(const char *status, enum gw_role role, const char *msg_id,
                 int duplicate, char *buf, size_t cap);
size_t proto_error(const char *message, int code, const char *msg_id_json,
                   char *buf, size_t cap);

/* s as a quoted JSON string (escaped; invalid UTF-8 becomes U+FFFD) into
 * buf, NUL-terminated. Returns its length, or 0 if it does not fit (6 *
 * strlen(s) + 3 always fits). */
size_t proto_json_string(const char *s, char *buf, size_t cap);

/* A presence event, NUL-terminated in buf; members given NULL are left out:
 *   {"type":"event","event":"mod_connected","channel_id":"c","server_id":"s","ts":"..."}
 *   {"type":"event","event":"bot_connected","bot_id":"b","ts":"..."}
 * Returns the length, or 0 if it does not fit (3 * GW_ID_MAX * 6 + 128
 * always fits). */
size_t proto_event(const char *event, const char *channel_id, const char *server_id,
                   const char *bot_id, int64_t now_ms, char *buf, size_t cap);

/* "mod" / "bot" */
const char *proto_role_name(enum gw_role role);

/* Timestamps (received_at, forwarded_at, ts, an event's ts) are written
 * and a sender's ts is checked by clock.h: clock_format_rfc3339,
 * clock_valid_rfc3339. */

#endif
