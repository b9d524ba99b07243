/*
 * server.h - the HTTP side: CivetWeb set-up, /health, /metrics and the
 * key check for /sync, whose websockets session.c serves. Thin: decisions
 * live in registry.c, session.c and protocol.c.
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <stddef.h>
#include "config.h"

/* Starts listening (CivetWeb and its workers); the registry and the I/O
 * thread must be up already. cfg must outlive the server. Returns 0, or -1
 * with one line in err (e.g. port in use). */
int server_start(const struct gw_config *cfg, char *err, size_t errlen);

/* The port actually bound. */
int server_port(void);

/* Replaces the keys (SIGHUP); closes with 1008 every connection whose key
 * is no longer accepted. cfg is copied. */
void server_set_keys(const struct gw_config *cfg);

/* Refuses new connections from now on (the listening socket is shut at
 * once; sockets that have not sent a whole request head are closed), while
 * the open websockets go on. Idempotent; does nothing before server_start
 * or after server_stop. Call from the thread that calls server_stop. */
void server_close_listeners(void);

/* Closes every websocket with 1001 "Going away.", waits up to grace_ms for
 * them to end, then stops CivetWeb (its workers are joined). */
void server_stop(int grace_ms);

#endif
