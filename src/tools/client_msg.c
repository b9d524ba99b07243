/*
 * client_msg.c - homestead-client's modes and messages. mod and bot make a
 * message of each line of stdin (a bot line may start with "#CHANNEL "), or
 * take it as is with --raw; sim makes up chat at random intervals. Every
 * message is kept in the pending list, in order, until its ack comes, and
 * resent with the same msg_id after a reconnect. on_message prints what the
 * gateway sends and settles the pending messages its acks name.
 *
 * Resume: the gateway numbers every message it routes ("seq", per channel
 * and direction) within an "epoch" its connected reply names. The client
 * keeps, per stream it receives, the last seq it printed; every handshake
 * after the first epoch is known says so ("since"), and a message whose seq
 * is not past its stream's position is one already printed: it is dropped.
 * A connected reply naming another epoch starts every position again at 0.
 * Messages without seq (an older gateway) are printed and change nothing.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

#define LINE_MAX_BYTES   ((size_t)64 << 20)

static const char *const sim_authors[] = { "Steve", "Alex", "Notch", "Herobrine", "Jeb" };
static const char *const sim_lines[] = {
	"hello from the server!", "anyone up for the nether?", "gg", "brb, creeper outside",
	"who took my diamonds", "server restart in 5 minutes?", "lol", "found a village at 200 -340",
	"need iron, trading wheat", "good night everyone",
};

static int send_json_text(struct client *c, json_t *j);
static int send_pending(struct client *c);
static int pending_add(struct client *c, const char *msg_id, char *json);
static void pending_remove(struct client *c, const char *msg_id);
static char *message_new(struct client *c, const char *channel, const char *content,
                         char *msg_id, size_t idlen);
static void take_line(struct client *c, char *line, size_t len);
static struct stream *stream_find(struct client *c, const char *channel);
static json_t *since_new(struct client *c);
static void resume_connected(struct client *c, json_t *reply);
static int resume_seen(struct client *c, json_t *msg, const char **channel, long long *seq);

/* ---- frames out ----------------------------------------------------------- */

static int send_json_text(struct client *c, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);
	int rc = s ? send_frame(c, WSC_OP_TEXT, s, strlen(s)) : -1;

	free(s);
	json_decref(j);
	return rc;
}

int send_handshake(struct client *c)
{
	json_t *data;

	if (c->mode == MODE_BOT)
		data = json_pack("{s:s}", "bot_id", c->bot_id);
	else
		data = json_pack("{s:s, s:s}", "server_id", c->server_id, "channel_id", c->channel);
	/* once an epoch is known, say where to resume (spec 7a) */
	if (data && c->epoch && json_object_set_new(data, "since", since_new(c)) < 0) {
		json_decref(data);
		return -1;
	}
	return send_json_text(c, json_pack("{s:s, s:o}", "type", c->mode == MODE_BOT ? "bot" : "mod",
	                                   "data", data));
}

/* Sends every pending message not yet sent on this connection, in order. */
static int send_pending(struct client *c)
{
	size_t i;

	for (i = 0; i < c->npend; i++) {
		if (c->pend[i].sent)
			continue;
		/* sent, even if only in part: after a 1009 it may be the one */
		c->pend[i].sent = 1;
		if (send_frame(c, WSC_OP_TEXT, c->pend[i].json, c->pend[i].len) < 0) {
			conn_down(c, "send failed");
			return -1;
		}
	}
	return 0;
}

/* ---- messages ------------------------------------------------------------- */

/* Keeps json (steals it) until msg_id is acknowledged. */
static int pending_add(struct client *c, const char *msg_id, char *json)
{
	struct pending *np;
	size_t cap;

	if (c->npend == c->pcap) {
		cap = c->pcap ? c->pcap * 2 : 64;
		if (!(np = realloc(c->pend, cap * sizeof(*np)))) {
			free(json);
			return -1;
		}
		c->pend = np;
		c->pcap = cap;
	}
	np = &c->pend[c->npend];
	np->msg_id = strdup(msg_id ? msg_id : "");
	np->json = json;
	np->len = strlen(json);
	np->sent = 0;
	if (!np->msg_id) {
		free(json);
		return -1;
	}
	c->npend++;
	return 0;
}

static void pending_remove(struct client *c, const char *msg_id)
{
	size_t i;

	for (i = 0; i < c->npend; i++) {
		if (strcmp(c->pend[i].msg_id, msg_id) != 0)
			continue;
		free(c->pend[i].msg_id);
		free(c->pend[i].json);
		memmove(&c->pend[i], &c->pend[i + 1], (c->npend - i - 1) * sizeof(*c->pend));
		c->npend--;
		return;
	}
}

/*
 * After a 1009: the message over body_size was sent on the link just
 * dropped and not acknowledged (the acks of those before it came first).
 * The largest of those is at least as large, so over body_size too, and
 * sending it again would only end the next link the same way: it goes.
 */
void pending_drop_too_big(struct client *c)
{
	struct pending *big = NULL;
	size_t i;

	for (i = 0; i < c->npend; i++)
		if (c->pend[i].sent && (!big || c->pend[i].len > big->len))
			big = &c->pend[i];
	if (!big) {
		say("no message of ours was pending: nothing dropped");
		return;
	}
	say("message %s (%zu bytes) is over the gateway's body_size: dropped, not sent again",
	    big->msg_id[0] ? big->msg_id : "without msg_id", big->len);
	free(big->msg_id);
	free(big->json);
	i = (size_t)(big - c->pend);
	memmove(big, big + 1, (c->npend - i - 1) * sizeof(*big));
	c->npend--;
}

void pending_free(struct client *c)
{
	size_t i;

	for (i = 0; i < c->npend; i++) {
		free(c->pend[i].msg_id);
		free(c->pend[i].json);
	}
	free(c->pend);
	c->pend = NULL;
	c->npend = c->pcap = 0;
}

/* A new message's JSON text (malloc'd) with a fresh msg_id copied to msg_id. */
static char *message_new(struct client *c, const char *channel, const char *content,
                         char *msg_id, size_t idlen)
{
	json_t *j, *author;
	char *s;

	snprintf(msg_id, idlen, "%s-%ld-%llu", c->mode == MODE_BOT ? c->bot_id : c->server_id,
	         (long)getpid(), ++c->counter);
	author = json_pack("{s:s}", "id", c->mode == MODE_SIM ?
	                   sim_authors[rand() % (int)(sizeof(sim_authors) / sizeof(*sim_authors))] :
	                   c->author_id);
	if (author && c->author_name)
		json_object_set_new(author, "name", json_string(c->author_name));
	if (c->mode == MODE_BOT)
		j = json_pack("{s:s, s:s, s:o, s:s}", "msg_id", msg_id, "id", channel, "author", author,
		              "content", content);
	else
		j = json_pack("{s:s, s:s, s:{s:s}, s:o, s:s}", "msg_id", msg_id, "id", c->server_id,
		              "destination", "channel_id", c->channel, "author", author,
		              "content", content);
	if (!j)
		return NULL;
	s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return s;
}

/* One line of stdin (without its newline): a message, sent if connected. */
static void take_line(struct client *c, char *line, size_t len)
{
	char id[600], *json = NULL;
	const char *channel = c->channel, *content = line;
	json_error_t jerr;
	json_t *j;

	if (len > 0 && line[len - 1] == '\r')
		line[--len] = '\0';
	if (len == 0)
		return;
	if (c->raw) {
		if (!(j = json_loadb(line, len, 0, &jerr))) {
			say("line is not JSON (%s): not sent", jerr.text);
			return;
		}
		snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "msg_id")) ?
		         json_string_value(json_object_get(j, "msg_id")) : "");
		json_decref(j);
		json = strndup(line, len);
	} else {
		if (c->mode == MODE_BOT && line[0] == '#') {
			size_t w = strcspn(line + 1, " \t");

			if (w == 0 || line[1 + w] == '\0') {
				say("'#channel' needs a message after it: not sent");
				return;
			}
			line[1 + w] = '\0';
			channel = line + 1;
			content = line + 2 + w;
			content += strspn(content, " \t");
		}
		if (!channel) {
			say("no channel for this line: start it with '#CHANNEL ' or pass --channel");
			return;
		}
		if (!*content)
			return;
		json = message_new(c, channel, content, id, sizeof(id));
	}
	if (!json || pending_add(c, id, json) < 0) {
		say("out of memory: line dropped");
		return;
	}
	if (c->state == ST_READY)
		send_pending(c);
}

/* Reads stdin and takes every complete line. -1 on EOF. */
int read_stdin(struct client *c)
{
	char *nl, *nb;
	size_t off = 0;
	ssize_t n;

	if (c->lcap - c->llen < 65536) {
		if (c->lcap > LINE_MAX_BYTES) {
			say("line longer than %zu bytes: dropped", LINE_MAX_BYTES);
			c->llen = 0;
		} else {
			if (!(nb = realloc(c->line, c->lcap ? c->lcap * 2 : 131072)))
				return -1;
			c->line = nb;
			c->lcap = c->lcap ? c->lcap * 2 : 131072;
		}
	}
	n = read(STDIN_FILENO, c->line + c->llen, c->lcap - c->llen - 1);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0) {
		if (c->llen > 0) {   /* a last line without newline */
			c->line[c->llen] = '\0';
			take_line(c, c->line, c->llen);
			c->llen = 0;
		}
		return -1;
	}
	c->llen += (size_t)n;
	while ((nl = memchr(c->line + off, '\n', c->llen - off))) {
		*nl = '\0';
		take_line(c, c->line + off, (size_t)(nl - (c->line + off)));
		off = (size_t)(nl - c->line) + 1;
	}
	memmove(c->line, c->line + off, c->llen - off);
	c->llen -= off;
	return 0;
}

void sim_tick(struct client *c, int64_t now)
{
	char line[256];
	int span = c->max_interval_ms - c->min_interval_ms;

	if (c->quitting || now < c->sim_next_ms)
		return;
	snprintf(line, sizeof(line), "%s",
	         sim_lines[rand() % (int)(sizeof(sim_lines) / sizeof(*sim_lines))]);
	take_line(c, line, strlen(line));
	c->sim_sent++;
	c->sim_next_ms = now + c->min_interval_ms + (span > 0 ? rand() % (span + 1) : 0);
	if (c->count > 0 && c->sim_sent >= c->count) {
		c->quitting = 1;
		c->quit_deadline_ms = now + c->wait_ms;
	}
}

/* ---- resume --------------------------------------------------------------- */

static struct stream *stream_find(struct client *c, const char *channel)
{
	size_t i;

	for (i = 0; i < c->nstreams; i++)
		if (strcmp(c->streams[i].channel, channel) == 0)
			return &c->streams[i];
	return NULL;
}

int positions_set(struct client *c, const char *channel, long long seq)
{
	struct stream *st = stream_find(c, channel);
	size_t cap;

	if (!st) {
		if (c->nstreams == c->scap) {
			cap = c->scap ? c->scap * 2 : 8;
			if (!(st = realloc(c->streams, cap * sizeof(*st))))
				return -1;
			c->streams = st;
			c->scap = cap;
		}
		st = &c->streams[c->nstreams];
		if (!(st->channel = strdup(channel)))
			return -1;
		c->nstreams++;
	}
	st->seq = seq;
	c->state_dirty = 1;
	return 0;
}

int positions_reset(struct client *c, const char *epoch)
{
	char *e = NULL;

	if (epoch && !(e = strdup(epoch)))
		return -1;
	positions_free(c);
	c->epoch = e;
	c->state_dirty = 1;
	return 0;
}

void positions_free(struct client *c)
{
	size_t i;

	for (i = 0; i < c->nstreams; i++)
		free(c->streams[i].channel);
	free(c->streams);
	free(c->epoch);
	c->streams = NULL;
	c->epoch = NULL;
	c->nstreams = c->scap = 0;
}

/* The handshake's "since" (new reference): mod {epoch, seq} for its
 * channel; bot {epoch, channels: {C: N}} (channels not listed count as 0). */
static json_t *since_new(struct client *c)
{
	struct stream *st;
	json_t *ch;
	size_t i;

	if (c->mode != MODE_BOT) {
		st = stream_find(c, c->channel);
		return json_pack("{s:s, s:I}", "epoch", c->epoch, "seq",
		                 (json_int_t)(st ? st->seq : 0));
	}
	if (!(ch = json_object()))
		return NULL;
	for (i = 0; i < c->nstreams; i++)
		if (json_object_set_new(ch, c->streams[i].channel,
		                        json_integer(c->streams[i].seq)) < 0) {
			json_decref(ch);
			return NULL;
		}
	return json_pack("{s:s, s:o}", "epoch", c->epoch, "channels", ch);
}

/* A connected reply: its epoch becomes the one held (positions back to 0
 * if it is another); a resume that fell short is said. */
static void resume_connected(struct client *c, json_t *reply)
{
	const char *epoch = json_string_value(json_object_get(reply, "epoch"));
	json_t *missed = json_object_get(reply, "missed");
	int other;

	if (!epoch || !*epoch)
		return;   /* a gateway without resume */
	other = c->epoch && strcmp(c->epoch, epoch) != 0;
	if ((!c->epoch || other) && positions_reset(c, epoch) < 0)
		say("out of memory: positions not kept");
	if (json_is_false(json_object_get(reply, "resumed"))) {
		if (json_is_integer(missed))
			say("resume: %lld message(s) could not be resumed%s",
			    (long long)json_integer_value(missed),
			    other ? " (the gateway started a new epoch: positions reset)" : "");
		else
			say("resume: not resumed%s",
			    other ? " (the gateway started a new epoch: positions reset)" : "");
	}
}

/*
 * Looks at a routed message's seq. Returns 1 when it was already processed
 * (seq not past its stream's position: drop it), else 0 with *channel and
 * *seq set to record it once printed (*channel NULL: nothing to record, no
 * seq or no epoch). *channel is borrowed from msg or c.
 */
static int resume_seen(struct client *c, json_t *msg, const char **channel, long long *seq)
{
	json_t *s = json_object_get(msg, "seq");
	struct stream *st;

	*channel = NULL;
	if (!c->epoch || !json_is_integer(s) || json_integer_value(s) < 1 ||
	    json_object_get(msg, "status"))
		return 0;
	*seq = (long long)json_integer_value(s);
	*channel = c->mode == MODE_BOT ? json_string_value(json_object_get(msg, "channel_id")) :
	           c->channel;
	if (!*channel)
		return 0;
	st = stream_find(c, *channel);
	return st && *seq <= st->seq;
}

/* ---- frames in ------------------------------------------------------------ */

/* A text or binary message: printed as one line; acks settle pending ones.
 * Returns -1 when the connection is to be dropped (handshake refused). */
int on_message(struct client *c, const unsigned char *data, size_t len)
{
	const char *status, *id, *msg, *channel;
	json_error_t jerr;
	json_t *j, *code;
	long long seq;
	char *line;

	if (!(j = json_loadb((const char *)data, len, 0, &jerr))) {
		say("frame is not JSON (%s): %.*s", jerr.text, (int)(len > 200 ? 200 : len), data);
		return 0;
	}
	if (resume_seen(c, j, &channel, &seq)) {
		json_decref(j);   /* printed before: the gateway resent it */
		return 0;
	}
	if (memchr(data, '\n', len) || memchr(data, '\r', len)) {
		line = json_dumps(j, JSON_COMPACT);
		if (line)
			puts(line);
		free(line);
	} else {
		fwrite(data, 1, len, stdout);
		fputc('\n', stdout);
	}
	fflush(stdout);
	/* printed, then recorded: the file is written after this read */
	if (channel && positions_set(c, channel, seq) < 0)
		say("out of memory: position of channel %s not kept", channel);

	status = json_string_value(json_object_get(j, "status"));
	id = json_string_value(json_object_get(j, "msg_id"));
	code = json_object_get(j, "code");
	msg = json_string_value(json_object_get(j, "message"));
	if (c->state == ST_HANDSHAKE) {
		if (status && strcmp(status, "connected") == 0) {
			resume_connected(c, j);
			c->state = ST_READY;
			c->attempt = 0;
			say("connected to %s as %s", c->url.hostport, c->mode == MODE_BOT ? "bot" : "mod");
			json_decref(j);
			return send_pending(c) < 0 ? -1 : 0;
		}
		if (code) {
			long long cv = json_integer_value(code);

			say("handshake refused: %lld %s", cv, msg ? msg : "");
			json_decref(j);
			if (cv == 403) {
				say("the key is not allowed for this role (not retrying)");
				finish(c, EXIT_AUTH);
			}
			if (cv == 400) {
				say("the same handshake would be refused again (not retrying)");
				finish(c, EXIT_USAGE);
			}
			return -1;   /* 409 (another bot answered its probe), 408: backoff */
		}
	} else if (status && id) {
		if (strcmp(status, "failed") == 0)
			say("message %s failed: the gateway could neither deliver nor queue it", id);
		pending_remove(c, id);
	} else if (code && id) {
		say("message %s refused: %lld %s", id, json_integer_value(code), msg ? msg : "");
		pending_remove(c, id);
	} else if (code) {
		say("gateway error: %lld %s", json_integer_value(code), msg ? msg : "");
	}
	json_decref(j);
	return 0;
}

