/*
 * session.h - one websocket peer's input: its reader thread (reader.h)
 * hands it every frame the peer sends; it reassembles messages, takes the
 * handshake, decodes messages, refuses what is malformed, too big, too fast
 * or against RFC 6455, and hands the rest to the registry.
 *
 * A session is created by server.c once a /sync request is authenticated.
 * If the upgrade does not happen, CivetWeb's connection_close frees it;
 * after the upgrade it goes to a reader with the socket, which ends it
 * (session_end) and frees it. Its state is the thread's that holds it; the
 * conn it serves is shared (conn.h).
 */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include "config.h"
#include "conn.h"

struct gw_session;
struct gw_defer;

/* A session for c, taking over the caller's reference on c (the one
 * registry_conn_new returned); cfg must outlive it. NULL on ENOMEM (c is
 * then still the caller's). */
struct gw_session *session_new(struct gw_conn *c, const struct gw_config *cfg);

/* Releases the conn (registry_release) and frees s. NULL is fine. */
void session_free(struct gw_session *s);

/* The conn s serves. */
struct gw_conn *session_conn(const struct gw_session *s);

/* What session_frame and session_join say. */
enum gw_session_rc {
	GW_SESSION_END = 0,     /* it decided to close (its close frame is queued): end it */
	GW_SESSION_GO_ON = 1,   /* next frame, please */
	GW_SESSION_BLOCKED = 2, /* a bot's handshake: its join may wait for another
	                         * bot's pong; call session_join, not on a reader
	                         * thread, and only then hand it the next frame */
};

/* One frame from the peer: bits is the header's first byte with the
 * GW_FRAME_* flags (frame.h), data its unmasked payload (the session may
 * change it). Flushes needed go into d. Returns an enum gw_session_rc. */
int session_frame(struct gw_session *s, struct gw_defer *d, int bits, unsigned char *data,
                  size_t len);

/* After GW_SESSION_BLOCKED: joins the registry (may block up to
 * bot_probe_timeout) and returns GW_SESSION_END or GW_SESSION_GO_ON.
 * Flushes what it queued. */
int session_join(struct gw_session *s);

/* The peer's connection ends (it closed, or we did): leaves the registry
 * (whatever the peer had not taken is handed on) and logs the disconnect
 * with why (if nothing gave a reason before; NULL: none). d as above, or
 * NULL. Then free s with session_free. */
void session_end(struct gw_session *s, struct gw_defer *d, const char *why);

#endif
