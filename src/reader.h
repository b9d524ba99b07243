/*
 * reader.h - the readers: a few threads that read every open websocket,
 * each from its own epoll set.
 *
 * CivetWeb's worker answers the upgrade and hands the socket over
 * (reader_add); from then on one reader thread owns the peer's input and
 * its session: it reads what the socket has, cuts it into frames
 * (frame.h), hands each to the session and, once per batch of ready
 * sockets, flushes the acks and routed frames the batch produced (one send
 * per peer per batch). Output goes through conn.c as before.
 *
 * A peer ends when it closes or errs (EOF, reset, or our own abort, which
 * is a shutdown(SHUT_RDWR) its reader sees as EOF), when its session
 * decides to close (then its input is read and discarded for a while: a
 * close with unread input would reset the connection and the peer could
 * lose our close frame), or when a frame it started stalls for
 * request_timeout without a byte.
 */
#ifndef GW_READER_H
#define GW_READER_H

#include <stddef.h>

#include "config.h"

struct gw_session;

/* Starts the reader threads. closed(token) is called, on a reader thread,
 * after a handed-over socket was closed (token as given to reader_add).
 * cfg must outlive the readers. Returns 0, or -1 (nothing is left
 * running). */
int reader_start(const struct gw_config *cfg, void (*closed)(void *token));

/* Hands the upgraded socket fd and its session s over to a reader, with
 * early (n bytes): what the peer sent already, its first frames. The reader
 * owns fd, s and token from now on, on success and failure alike (on
 * failure it ends them at once). Returns 0, or -1. Thread-safe. */
int reader_add(struct gw_session *s, int fd, const void *early, size_t n, void *token);

/* Ends every peer still open (their sessions end, sockets close) and stops
 * the threads. Call after the peers were asked to close. */
void reader_stop(void);

#endif
