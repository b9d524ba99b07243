/*
 * client.h - homestead-client's private header: the state the three files
 * share and what each offers the others.
 *
 *   client.c       options, signals, the main loop, exit codes, and the
 *                  --state file (positions read at start, written after
 *                  each read)
 *   client_conn.c  the connection: connect and upgrade, frames in and out,
 *                  dropping it, the backoff before the next attempt
 *   client_msg.c   the modes: stdin lines (mod, bot) and random chat (sim)
 *                  made into messages, the unacknowledged ones kept for a
 *                  resend, what the gateway's replies mean, and resume
 *                  (positions, "since", messages already processed dropped)
 *
 * One thread, one struct client: nothing is locked.
 */
#ifndef GW_TOOLS_CLIENT_H
#define GW_TOOLS_CLIENT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "wsc.h"

#define EXIT_GAVE_UP     1
#define EXIT_USAGE       2
#define EXIT_AUTH        3

enum mode { MODE_MOD, MODE_BOT, MODE_SIM };
enum state { ST_DOWN, ST_HANDSHAKE, ST_READY };

/* A message sent (or to be sent) and not yet acknowledged. */
struct pending {
	char *msg_id;
	char *json;     /* the message as sent: resent as is */
	size_t len;
	int sent;       /* sent on the current connection */
};

/* A stream this peer receives, by channel (mod: its channel's to-mod
 * stream; bot: each channel's to-bot stream), and the last seq processed on
 * it, in the epoch held (struct client's epoch). */
struct stream {
	char *channel;
	long long seq;
};

struct client {
	/* options */
	enum mode mode;
	struct wsc_url url;
	const char *url_text, *key;
	const char *server_id, *channel, *bot_id, *author_id, *author_name;
	int backoff_ms, backoff_max_ms, wait_ms, read_timeout_ms;
	int replaced_backoff_ms;   /* the least wait after a 4000 (replaced) */
	int min_interval_ms, max_interval_ms;
	long count;
	int raw;

	/* connection */
	enum state state;
	int fd;
	unsigned char *rbuf;
	size_t rlen, rcap;
	struct wsc_asm asm_;
	int64_t deadline_ms;       /* handshake: until "connected" */
	int64_t last_rx_ms;
	int attempt;               /* failed attempts since the last success */
	int64_t next_try_ms;
	int close_code;            /* the gateway's close frame on this link, 0 none yet */
	int rate_limited;          /* links in a row that ended with 4004 */

	/* messages */
	struct pending *pend;
	size_t npend, pcap;
	unsigned long long counter;
	long sim_sent;
	int64_t sim_next_ms;

	/* resume */
	const char *state_path;    /* --state FILE, or NULL: positions in memory only */
	char *epoch;               /* the gateway's sequence, NULL until one is named */
	struct stream *streams;
	size_t nstreams, scap;
	int state_dirty;           /* positions changed since the file was written */
	int state_failing;         /* the last write failed (said once) */

	/* stdin */
	int stdin_open;
	char *line;
	size_t llen, lcap;

	int quitting;              /* EOF or count reached: drain, then leave */
	int64_t quit_deadline_ms;
};

/* Set by SIGINT and SIGTERM (client.c); the loops stop on it. */
extern volatile sig_atomic_t stop_signal;

/* ---- client.c ------------------------------------------------------------- */

/* CLOCK_MONOTONIC in milliseconds. */
int64_t now_ms(void);
/* One line on stderr, "homestead-client: " first. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Writes the --state file, closes the socket, frees everything, flushes
 * stdout and exits with rc. */
void finish(struct client *c, int rc) __attribute__((noreturn));
/* Writes the positions to the --state file if they changed since the last
 * write (temp file, fsync, rename: the file is always whole). A failure is
 * said once and tried again at the next call; positions stay in memory. */
void state_save(struct client *c);

/* ---- client_conn.c -------------------------------------------------------- */

/* Connects, upgrades and sends the handshake: 0 (state ST_HANDSHAKE), -1
 * when the next attempt is scheduled; exits on a refused key. */
int conn_open(struct client *c);
/* Drops the connection (why said if not NULL), acts on the gateway's close
 * code (exits on 1008; 4000 waits --replaced-backoff; 1009 drops the message
 * too big) and schedules the next try; pending messages stay, to be resent
 * after the next handshake. */
void conn_down(struct client *c, const char *why);
/* Reads what the socket has: 1 got bytes, 0 nothing yet, -1 EOF/error. */
int recv_some(struct client *c);
/* Handles every whole frame received: 0, or -1 when the connection ended. */
int on_frames(struct client *c);
/* One masked frame (FIN set), sent within the write timeout: 0 or -1. */
int send_frame(struct client *c, int opcode, const void *data, size_t len);
/* Sends a close frame with code and waits a little for the gateway's. */
void send_close(struct client *c, int code);

/* ---- client_msg.c --------------------------------------------------------- */

/* The JSON handshake of c's mode: 0 or -1. */
int send_handshake(struct client *c);
/* One whole text or binary message from the gateway (printed; acks settle
 * pending messages): 0, or -1 when the connection is to be dropped. */
int on_message(struct client *c, const unsigned char *data, size_t len);
/* Reads stdin and takes every whole line: 0, or -1 at EOF. */
int read_stdin(struct client *c);
/* sim: sends the next chat line when it is due. */
void sim_tick(struct client *c, int64_t now);
/* After a close 1009: drops the largest message sent on the link just
 * dropped and not acknowledged (it is over body_size), and says so. */
void pending_drop_too_big(struct client *c);
/* Frees every pending message. */
void pending_free(struct client *c);
/* Forgets every position and holds epoch (copied; NULL: none): 0 or -1. */
int positions_reset(struct client *c, const char *epoch);
/* Records seq as the last one processed on channel's stream: 0 or -1. */
int positions_set(struct client *c, const char *channel, long long seq);
/* Frees the positions and the epoch. */
void positions_free(struct client *c);

#endif
