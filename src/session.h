/*
 * session.h - one websocket peer's reader: CivetWeb's worker thread hands
 * it every frame the peer sends; it reassembles messages, takes the
 * handshake, decodes messages, refuses what is malformed, too big, too fast
 * or against RFC 6455, and hands the rest to the registry.
 *
 * A session is created by server.c once a /sync request is authenticated
 * and lives until CivetWeb's connection_close. Its state is its reader
 * thread's alone; the conn it serves is shared (conn.h).
 */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include "config.h"
#include "conn.h"

struct gw_session;
struct mg_context;

/* A session for c, taking over the caller's reference on c (the one
 * registry_conn_new returned); cfg must outlive it. NULL on ENOMEM (c is
 * then still the caller's). */
struct gw_session *session_new(struct gw_conn *c, const struct gw_config *cfg);

/* The request's connection ended: releases the conn (registry_release)
 * and frees s. NULL is fine. */
void session_free(struct gw_session *s);

/* Serves websockets on uri of ctx with sessions: the connection's user data
 * must be a session, set before the upgrade (begin_request). */
void session_serve(struct mg_context *ctx, const char *uri);

#endif
