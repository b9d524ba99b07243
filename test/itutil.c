/*
 * itutil.c - see itutil.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itutil.h"

json_t *it_recv_json(struct ws *w, int timeout_ms, int *close_code)
{
	char *t = ws_recv_text(w, timeout_ms, close_code);
	json_t *j;

	if (!t)
		return NULL;
	j = json_loads(t, 0, NULL);
	if (!j)
		fprintf(stderr, "it: not JSON: %s\n", t);
	free(t);
	return j;
}

static int send_json(struct ws *w, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);
	int rc = s ? ws_send_text(w, s) : -1;

	free(s);
	json_decref(j);
	return rc;
}

int it_mod_send(struct ws *w, const char *msg_id, const char *server_id, const char *channel,
                const char *content)
{
	return send_json(w, json_pack("{s:s, s:s, s:{s:s}, s:{s:s, s:s}, s:s}", "msg_id", msg_id,
	                              "id", server_id, "destination", "channel_id", channel, "author",
	                              "id", "player-1", "name", "Steve", "content", content));
}

int it_bot_send(struct ws *w, const char *msg_id, const char *channel, const char *content)
{
	return send_json(w, json_pack("{s:s, s:s, s:{s:s, s:s}, s:s}", "msg_id", msg_id, "id",
	                              channel, "author", "id", "user-1", "name", "Alex", "content",
	                              content));
}

json_t *it_wait_ack(struct ws *w, const char *msg_id, int timeout_ms)
{
	json_t *j;

	while ((j = it_recv_json(w, timeout_ms, NULL)) != NULL) {
		if (json_object_get(j, "status") && strcmp(it_str(j, "msg_id"), msg_id) == 0)
			return j;
		json_decref(j);
	}
	return NULL;
}

json_t *it_wait_msg(struct ws *w, int timeout_ms)
{
	json_t *j;

	while ((j = it_recv_json(w, timeout_ms, NULL)) != NULL) {
		if (json_object_get(j, "content"))
			return j;
		json_decref(j);
	}
	return NULL;
}

const char *it_str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}
