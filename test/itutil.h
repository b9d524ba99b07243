/*
 * itutil.h - small helpers shared by the integration tests: JSON frames
 * in and out, and building messages as mods and bots send them.
 */
#ifndef GW_ITUTIL_H
#define GW_ITUTIL_H

#include <jansson.h>
#include "harness.h"
#include "wsclient.h"

/* Next text message as JSON (NULL on timeout/close; *close_code as in
 * ws_recv_text). Caller json_decref()s. */
json_t *it_recv_json(struct ws *w, int timeout_ms, int *close_code);

/* Sends a mod message {msg_id, id, destination.channel_id, author, content}. */
int it_mod_send(struct ws *w, const char *msg_id, const char *server_id, const char *channel,
                const char *content);
/* Sends a bot message {msg_id, id=channel, author, content}. */
int it_bot_send(struct ws *w, const char *msg_id, const char *channel, const char *content);

/* Receives the next frame, skipping routed messages if skip_msgs, until one
 * has "status" (an ack) for msg_id; returns it or NULL. */
json_t *it_wait_ack(struct ws *w, const char *msg_id, int timeout_ms);

/* Next routed message (a frame with "content"); skips acks. */
json_t *it_wait_msg(struct ws *w, int timeout_ms);

const char *it_str(json_t *o, const char *key);   /* borrowed, or "" */

#endif
