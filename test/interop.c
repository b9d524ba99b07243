/*
 * interop.c - `make interop`: the example clients of test/interop/ (a Java
 * mod, a Node bot, a Python bot), run as their authors would run them,
 * against the real gateway, each pairing (Java mod x Node bot, Java mod x
 * Python bot) in two scenarios:
 *
 * - stream: both connect, stay idle 5.5 s (ping_interval 1, read_timeout 3:
 *   only the libraries' pongs keep them in), then 200 messages go each way,
 *   among them a 1 MiB one and a 200 kB one (the Java mod sends both in
 *   fragments), emoji, CJK, combining marks, quotes, tabs and U+2028. Each
 *   side must process every message exactly once, in order, byte for byte,
 *   with seq 1..200, every ack `completed`, and one connection each.
 * - reset: the same 200 each way, paced, while the driver's TCP proxy in
 *   front of each client first stops passing the gateway's bytes on (so
 *   what the gateway handed over is lost on the way, as on a dying link)
 *   and then resets both sides: the bot mid-stream, then the mod. Each
 *   client reconnects with backoff and resumes with `since`; each side must
 *   still process every message exactly once and in order, seq 1..200 with
 *   no gap, acks `completed` or `queued` (never `failed`), and the second
 *   connected reply must say "resumed":true.
 *
 * The clients are driven through their own interface: lines on stdin are
 * messages to send, stdout is one JSON frame per line (connected replies,
 * acks, messages after their seq filter). The end of stdin makes a client
 * wait for its acks, close with 1000 and exit 0, which is checked too.
 *
 * Everything is on 127.0.0.1, on ports below 32768; every wait is bounded.
 * Usage: interop --examples DIR [--gateway BIN] [--pair node|python]... [--verbose]
 * Exit: 0 all passed, 1 a check failed, 2 set-up error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY            "interop-key"
#define CHANNEL        "1444253682777587804"
#define N_MSGS         200
#define BIG_AT         100                 /* the 1 MiB message */
#define BIG_LEN        (1024 * 1024)
#define MID_AT         150                 /* a 200 kB one */
#define MID_LEN        (200 * 1000)
#define CONNECT_MS     60000               /* the JVM compiles the mod first */
#define DELIVER_MS     60000
#define TOO_BIG_MS     120000              /* see codes_run: 1009 may take tries */
#define EXIT_MS        40000
#define PAIRS_MAX      4                   /* proxied connections at once */
#define REPORT_MAX     5                   /* mismatches printed per check */

/* One client process and what it printed, classified. */
struct client {
	const char *name;
	pid_t pid;
	int in_fd;                 /* its stdin; -1 once closed */
	int out_fd;                /* its stdout, read by the reader thread */
	char err_path[320];        /* its stderr */
	pthread_t reader;
	int reader_on;
	pthread_mutex_t mu;        /* guards the arrays below */
	json_t *connected;         /* connected replies */
	json_t *acks;              /* {"status":...,"msg_id":...} */
	json_t *msgs;              /* messages (frames with a seq) */
	json_t *other;             /* error frames, anything else */
};

/* A TCP proxy in front of one client: the driver freezes (stops reading
 * from the gateway) and cuts (RST both ways) what passes through it. */
struct proxy {
	int lfd, port, gw_port;
	int ctl[2];                /* commands: 'f' freeze, 'c' cut, 'q' quit */
	pthread_t thread;
	int on;
	struct {
		int cfd, gfd;      /* client side, gateway side; -1 when unused */
		int c_eof, g_eof;
	} pair[PAIRS_MAX];
	int frozen;
	long cut_unread;           /* bytes from the gateway thrown away by cuts */
};

/* An example client's command line. */
struct example {
	char url[64], file[300];
	const char *argv[8];
};

struct scenario {
	const char *bot;           /* "node" or "python" */
	int reset;
};

static const char *examples_dir = "test/interop";
static int failures;
static int verbose;            /* print the clients' stderr every time */

static int gateway_start(struct gw_proc *gw, int body_mb, int read_timeout);
static char *content_make(char dir, int i, size_t *len);
static const char *const *example_argv(struct example *e, const char *kind, int port,
                                      const char *id);
static int client_start(struct client *c, const char *name, const char *const *argv,
                        const char *dir, const char *key);
static void *client_read(void *arg);
static size_t client_count(struct client *c, json_t *arr);
static int client_feed(struct client *c, const char *line, size_t len);
static int client_finish(struct client *c, int timeout_ms, int close_input);
static void client_free(struct client *c);
static void client_tail(struct client *c);
static int proxy_start(struct proxy *p, int gw_port);
static void proxy_command(struct proxy *p, char cmd);
static void proxy_drop(struct proxy *p, int i, int reset);
static void proxy_pass(struct proxy *p, int i, int from_gw);
static void proxy_accept(struct proxy *p);
static void *proxy_main(void *arg);
static void proxy_stop(struct proxy *p);
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *str_of(json_t *o, const char *key);
static int client_said(struct client *c, const char *needle);
static int client_wait_said(struct client *c, const char *needle, int ms);
static void check_small_pair(const char *what, struct client *snd, struct client *rcv, char dir);
static void check_stream(const char *what, struct client *snd, struct client *rcv, char dir,
                         int reset);
static void check_connections(struct client *c, int reset);
static int scenario_run(const struct scenario *s, const char *gateway);
static int codes_run(const char *botkind, const char *gateway);

/* ---- set-up ------------------------------------------------------------ */

/* The harness's test settings (ping_interval 1, read_timeout as given: 3
 * where liveness is tested), body_size body_mb MB, queues
 * and histories large enough that nothing is overwritten while a client is
 * away, on a port below 32768 (a few tried). */
static int
gateway_start(struct gw_proc *gw, int body_mb, int read_timeout)
{
	char ini[1024];
	int tries, port;

	for (tries = 0; tries < 5; tries++) {
		if ((port = gw_free_port()) < 0)
			return -1;
		snprintf(ini, sizeof ini,
		         "[gateway]\nlisten = 127.0.0.1\nhttp_port = %d\napi_key = " KEY "\n"
		         "handshake_timeout = 5\nping_interval = 1\nread_timeout = %d\n"
		         "write_timeout = 2\nbot_probe_timeout = 1\nbody_size = %d\n"
		         "queue_max = 1000\nhistory = 1000\n"
		         "[store]\npath =\n[log]\nlevel = info\ndirectory = logs\n", port,
		         read_timeout, body_mb);
		if (gw_start_ini(gw, ini) == 0)
			return 0;
		gw_cleanup(gw);
	}
	return -1;
}

/* The content of message i in direction dir ('M' mod to bot, 'B' bot to
 * mod): a prefix that names it, then text that a careless client would
 * break. New string, its length in *len. */
static char *
content_make(char dir, int i, size_t *len)
{
	static const char *const texts[] = {
		"plain ASCII, the most common chat line",
		"h\xc3\xa9llo \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd \xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c"
		"\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x8e\xae \xe3\x81\x93\xe3\x82\x93\xe3\x81\xab"
		"\xe3\x81\xa1\xe3\x81\xaf \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
		"quotes \" backslash \\ tab\t slash / <b>&amp;</b> line sep \xe2\x80\xa8 end",
		"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80 \xe6\xbc\xa2\xe5\xad\x97"
		"\xe3\x81\x8b\xe3\x81\xaa e\xcc\x81 \xf0\x9d\x84\x9e \xef\xbc\xa1\xef\xbc\xa2",
	};
	/* 13 bytes, 7 UTF-16 units: a surrogate pair every few chars, so the
	 * mod's fragment boundaries land on some */
	static const char pattern[] = "\xe4\xbd\xa0\xe5\xa5\xbd\xf0\x9f\x91\x8b" "abc";
	size_t want = i == BIG_AT ? BIG_LEN : i == MID_AT ? MID_LEN : 0, n;
	char *s;

	if (want) {
		if (!(s = malloc(want + 1)))
			return NULL;
		n = (size_t)snprintf(s, want, "%c%03d ", dir, i);
		while (n + sizeof pattern - 1 <= want) {
			memcpy(s + n, pattern, sizeof pattern - 1);
			n += sizeof pattern - 1;
		}
		while (n < want)
			s[n++] = 'x';
		s[n] = '\0';
		*len = n;
		return s;
	}
	if (asprintf(&s, "%c%03d %s", dir, i, texts[i % 4]) < 0)
		return NULL;
	*len = strlen(s);
	return s;
}

/* ---- client processes ---------------------------------------------------- */

/* The command line of an example client: kind "java" (the mod; id is its
 * server_id), "node" or "python" (a bot; id is its bot_id), connecting to
 * 127.0.0.1:port. Returns e->argv; the strings live in e. */
static const char *const *
example_argv(struct example *e, const char *kind, int port, const char *id)
{
	int i = 0;

	snprintf(e->url, sizeof e->url, "ws://127.0.0.1:%d/sync", port);
	if (strcmp(kind, "java") == 0) {
		snprintf(e->file, sizeof e->file, "%s/java/HomesteadMod.java", examples_dir);
		e->argv[i++] = "java";
		e->argv[i++] = "-cp";
		e->argv[i++] = "/usr/share/java/gson.jar";
	} else if (strcmp(kind, "node") == 0) {
		snprintf(e->file, sizeof e->file, "%s/node/bot.js", examples_dir);
		e->argv[i++] = "node";
	} else {
		snprintf(e->file, sizeof e->file, "%s/python/bot.py", examples_dir);
		e->argv[i++] = "/usr/bin/python3";   /* Debian's, with python3-aiohttp */
	}
	e->argv[i++] = e->file;
	e->argv[i++] = e->url;
	e->argv[i++] = id;
	e->argv[i++] = CHANNEL;
	e->argv[i] = NULL;
	return e->argv;
}

/* Starts argv with stdin and stdout on pipes and stderr in dir/NAME.err,
 * HOMESTEAD_KEY=key in its environment, and a thread reading its stdout.
 * 0 or -1. */
static int
client_start(struct client *c, const char *name, const char *const *argv, const char *dir,
             const char *key)
{
	int in[2], out[2], err;

	memset(c, 0, sizeof *c);
	c->name = name;
	c->in_fd = c->out_fd = -1;
	pthread_mutex_init(&c->mu, NULL);
	c->connected = json_array();
	c->acks = json_array();
	c->msgs = json_array();
	c->other = json_array();
	snprintf(c->err_path, sizeof c->err_path, "%s/%s.err", dir, name);
	if (pipe2(in, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(out, O_CLOEXEC) < 0) {
		close(in[0]);
		close(in[1]);
		return -1;
	}
	c->pid = fork();
	if (c->pid == 0) {
		err = open(c->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (err < 0 || dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err, 2) < 0)
			_exit(127);
		setenv("HOMESTEAD_KEY", key, 1);
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "interop: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	if (c->pid < 0) {
		close(in[1]);
		close(out[0]);
		return -1;
	}
	c->in_fd = in[1];
	c->out_fd = out[0];
	if (pthread_create(&c->reader, NULL, client_read, c) != 0)
		return -1;
	c->reader_on = 1;
	return 0;
}

/* The reader thread: one JSON frame per line, sorted into the arrays. */
static void *
client_read(void *arg)
{
	struct client *c = arg;
	FILE *f = fdopen(c->out_fd, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	json_t *j, *into;
	json_error_t jerr;

	if (!f)
		return NULL;
	while ((n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			line[--n] = '\0';
		j = json_loadb(line, (size_t)n, 0, &jerr);
		if (!j)
			j = json_stringn(line, (size_t)n);
		if (json_object_get(j, "seq"))
			into = c->msgs;
		else if (json_is_string(json_object_get(j, "status")) &&
		         strcmp(json_string_value(json_object_get(j, "status")), "connected") == 0)
			into = c->connected;
		else if (json_object_get(j, "status") && json_object_get(j, "msg_id"))
			into = c->acks;
		else
			into = c->other;
		pthread_mutex_lock(&c->mu);
		json_array_append_new(into, j);
		pthread_mutex_unlock(&c->mu);
	}
	free(line);
	fclose(f);
	c->out_fd = -1;
	return NULL;
}

static size_t
client_count(struct client *c, json_t *arr)
{
	size_t n;

	pthread_mutex_lock(&c->mu);
	n = json_array_size(arr);
	pthread_mutex_unlock(&c->mu);
	return n;
}

/* Writes one line to the client's stdin (blocks while it reads a big one). */
static int
client_feed(struct client *c, const char *line, size_t len)
{
	struct iovec iov[2] = { { (void *)line, len }, { (void *)"\n", 1 } };
	ssize_t w;

	while (iov[1].iov_len) {
		w = writev(c->in_fd, iov[0].iov_len ? iov : iov + 1, iov[0].iov_len ? 2 : 1);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		if ((size_t)w >= iov[0].iov_len) {
			w -= (ssize_t)iov[0].iov_len;
			iov[0].iov_len = 0;
			iov[1].iov_len -= (size_t)w;
		} else {
			iov[0].iov_base = (char *)iov[0].iov_base + w;
			iov[0].iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Closes its stdin (if close_input) and waits for it to exit (at the end
 * of its input it waits for its acks first). Returns its exit status,
 * 128+signal, or -1 if it had to be killed. */
static int
client_finish(struct client *c, int timeout_ms, int close_input)
{
	int64_t end = now_ms() + timeout_ms;
	int st;

	if (close_input && c->in_fd >= 0) {
		close(c->in_fd);
		c->in_fd = -1;
	}
	if (c->pid <= 0)
		return -1;
	while (now_ms() < end) {
		if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
			c->pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		sleep_ms(20);
	}
	kill(c->pid, SIGKILL);
	waitpid(c->pid, &st, 0);
	c->pid = 0;
	return -1;
}

static void
client_free(struct client *c)
{
	if (c->in_fd >= 0)
		close(c->in_fd);
	c->in_fd = -1;
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		c->pid = 0;
	}
	if (c->reader_on)
		pthread_join(c->reader, NULL);
	c->reader_on = 0;
	json_decref(c->connected);
	json_decref(c->acks);
	json_decref(c->msgs);
	json_decref(c->other);
	pthread_mutex_destroy(&c->mu);
}

/* After a failure: the last lines the client wrote on stderr. */
static void
client_tail(struct client *c)
{
	char cmd[400];

	fprintf(stderr, "---- %s stderr (last 20 lines)\n", c->name);
	snprintf(cmd, sizeof cmd, "tail -n 20 '%s' >&2", c->err_path);
	if (system(cmd) != 0)
		fprintf(stderr, "(none)\n");
}

/* ---- the proxy --------------------------------------------------------------- */

static int
proxy_start(struct proxy *p, int gw_port)
{
	struct sockaddr_in sa;
	int i, tries;

	memset(p, 0, sizeof *p);
	p->gw_port = gw_port;
	p->lfd = -1;
	for (i = 0; i < PAIRS_MAX; i++)
		p->pair[i].cfd = p->pair[i].gfd = -1;
	if (pipe2(p->ctl, O_CLOEXEC) < 0)
		return -1;
	for (tries = 0; tries < 20 && p->lfd < 0; tries++) {
		if ((p->port = gw_free_port()) < 0)
			break;
		p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		memset(&sa, 0, sizeof sa);
		sa.sin_family = AF_INET;
		sa.sin_port = htons((uint16_t)p->port);
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (p->lfd >= 0 && (bind(p->lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
		                    listen(p->lfd, 8) < 0)) {
			close(p->lfd);
			p->lfd = -1;
		}
	}
	if (p->lfd < 0 || pthread_create(&p->thread, NULL, proxy_main, p) != 0) {
		if (p->lfd >= 0)
			close(p->lfd);
		close(p->ctl[0]);
		close(p->ctl[1]);
		return -1;
	}
	p->on = 1;
	return 0;
}

static void
proxy_command(struct proxy *p, char cmd)
{
	while (write(p->ctl[1], &cmd, 1) < 0 && errno == EINTR)
		;
}

static void
proxy_drop(struct proxy *p, int i, int reset)
{
	struct linger lg = { 1, 0 };

	if (reset) {   /* linger 0: close sends RST, unread bytes are thrown away */
		setsockopt(p->pair[i].cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		setsockopt(p->pair[i].gfd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	}
	close(p->pair[i].cfd);
	close(p->pair[i].gfd);
	p->pair[i].cfd = p->pair[i].gfd = -1;
}

/* Copies what one side has to the other (blocking write: both ends are
 * clients that keep reading). On EOF, passes the half-close on; the pair
 * goes when both sides have ended. */
static void
proxy_pass(struct proxy *p, int i, int from_gw)
{
	char buf[65536];
	int src = from_gw ? p->pair[i].gfd : p->pair[i].cfd;
	int dst = from_gw ? p->pair[i].cfd : p->pair[i].gfd;
	ssize_t n = read(src, buf, sizeof buf), w;
	size_t off = 0;

	if (n <= 0) {
		if (n < 0 && errno == EINTR)
			return;
		shutdown(dst, SHUT_WR);
		if (from_gw)
			p->pair[i].g_eof = 1;
		else
			p->pair[i].c_eof = 1;
		if (n < 0 || (p->pair[i].g_eof && p->pair[i].c_eof))
			proxy_drop(p, i, n < 0);
		return;
	}
	while (off < (size_t)n) {
		w = write(dst, buf + off, (size_t)n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			proxy_drop(p, i, 1);
			return;
		}
		off += (size_t)w;
	}
}

static void
proxy_accept(struct proxy *p)
{
	struct sockaddr_in sa;
	int cfd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC), gfd, i;

	if (cfd < 0)
		return;
	for (i = 0; i < PAIRS_MAX && p->pair[i].cfd >= 0; i++)
		;
	gfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)p->gw_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (i == PAIRS_MAX || gfd < 0 || connect(gfd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		close(cfd);
		if (gfd >= 0)
			close(gfd);
		return;
	}
	p->pair[i].cfd = cfd;
	p->pair[i].gfd = gfd;
	p->pair[i].c_eof = p->pair[i].g_eof = 0;
}

/* The proxy's thread: one poll loop over the listener, the command pipe
 * and every pair (not the gateway sides while frozen). */
static void *
proxy_main(void *arg)
{
	struct proxy *p = arg;
	struct pollfd fds[2 + 2 * PAIRS_MAX];
	int who[2 + 2 * PAIRS_MAX];
	int i, n, unread;
	char cmd;

	for (;;) {
		n = 0;
		fds[n++] = (struct pollfd){ .fd = p->ctl[0], .events = POLLIN };
		fds[n++] = (struct pollfd){ .fd = p->lfd, .events = POLLIN };
		for (i = 0; i < PAIRS_MAX; i++) {
			if (p->pair[i].cfd < 0)
				continue;
			if (!p->pair[i].c_eof) {
				who[n] = i;
				fds[n++] = (struct pollfd){ .fd = p->pair[i].cfd, .events = POLLIN };
			}
			if (!p->pair[i].g_eof && !p->frozen) {
				who[n] = PAIRS_MAX + i;
				fds[n++] = (struct pollfd){ .fd = p->pair[i].gfd, .events = POLLIN };
			}
		}
		if (poll(fds, (nfds_t)n, 1000) < 0 && errno != EINTR)
			break;
		if (fds[0].revents) {
			if (read(p->ctl[0], &cmd, 1) != 1 || cmd == 'q')
				break;
			if (cmd == 'f')
				p->frozen = 1;
			if (cmd == 'c') {
				for (i = 0; i < PAIRS_MAX; i++) {
					if (p->pair[i].cfd < 0)
						continue;
					if (ioctl(p->pair[i].gfd, FIONREAD, &unread) == 0)
						p->cut_unread += unread;
					proxy_drop(p, i, 1);
				}
				p->frozen = 0;
			}
			continue;   /* the pairs may have changed */
		}
		if (fds[1].revents & POLLIN)
			proxy_accept(p);
		for (i = 2; i < n; i++) {
			int k = who[i] % PAIRS_MAX;

			if (fds[i].revents && p->pair[k].cfd >= 0)
				proxy_pass(p, k, who[i] >= PAIRS_MAX);
		}
	}
	for (i = 0; i < PAIRS_MAX; i++)
		if (p->pair[i].cfd >= 0)
			proxy_drop(p, i, 0);
	return NULL;
}

static void
proxy_stop(struct proxy *p)
{
	if (!p->on)
		return;
	proxy_command(p, 'q');
	pthread_join(p->thread, NULL);
	close(p->lfd);
	close(p->ctl[0]);
	close(p->ctl[1]);
	p->on = 0;
}

/* ---- checks ------------------------------------------------------------------ */

static void
fail(const char *fmt, ...)
{
	va_list ap;

	failures++;
	fprintf(stderr, "  FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static const char *
str_of(json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? v : "";
}

/* What rcv processed from snd: all N_MSGS messages of direction dir, once,
 * in order, byte for byte, seq 1..N_MSGS; and snd's acks: one per message,
 * completed (or, in the reset scenario, queued), naming what was
 * delivered. Called once both have exited: no lock needed. */
static void
check_stream(const char *what, struct client *snd, struct client *rcv, char dir, int reset)
{
	size_t n = json_array_size(rcv->msgs), na = json_array_size(snd->acks), i, k, len;
	int bad = 0;
	char *want;
	json_t *m, *a;

	if (n != N_MSGS)
		fail("%s: %s processed %zu messages, not %d", what, rcv->name, n, N_MSGS);
	for (i = 0; i < n && bad < REPORT_MAX; i++) {
		m = json_array_get(rcv->msgs, i);
		if (!(want = content_make(dir, (int)i, &len)))
			return;
		if (json_string_length(json_object_get(m, "content")) != len ||
		    memcmp(json_string_value(json_object_get(m, "content")), want, len) != 0) {
			fail("%s: message %zu is not what was sent (%.12s..., %zu bytes; sent %.12s..., "
			     "%zu bytes)", what, i, str_of(m, "content"),
			     json_string_length(json_object_get(m, "content")), want, len);
			bad++;
		}
		free(want);
		if (json_integer_value(json_object_get(m, "seq")) != (json_int_t)i + 1) {
			fail("%s: message %zu has seq %lld (a gap or a repeat)", what, i,
			     (long long)json_integer_value(json_object_get(m, "seq")));
			bad++;
		}
		if (json_object_get(m, "dropped")) {
			fail("%s: message %zu says dropped", what, i);
			bad++;
		}
		for (k = 0; k < i; k++)
			if (strcmp(str_of(m, "msg_id"), str_of(json_array_get(rcv->msgs, k), "msg_id")) == 0) {
				fail("%s: msg_id %s processed twice", what, str_of(m, "msg_id"));
				bad++;
			}
	}
	if (na != N_MSGS)
		fail("%s: %s printed %zu acks, not %d", what, snd->name, na, N_MSGS);
	for (i = 0; i < na && bad < REPORT_MAX; i++) {
		a = json_array_get(snd->acks, i);
		if (strcmp(str_of(a, "status"), "completed") != 0 &&
		    !(reset && strcmp(str_of(a, "status"), "queued") == 0)) {
			fail("%s: ack %zu is %s", what, i, str_of(a, "status"));
			bad++;
		}
		for (k = 0; k < n; k++)
			if (strcmp(str_of(a, "msg_id"), str_of(json_array_get(rcv->msgs, k), "msg_id")) == 0)
				break;
		if (k == n) {
			fail("%s: ack for %s, a message %s never processed", what, str_of(a, "msg_id"),
			     rcv->name);
			bad++;
		}
	}
	for (i = 0; i < json_array_size(snd->other); i++) {
		char *t = json_dumps(json_array_get(snd->other, i), JSON_ENCODE_ANY);

		fail("%s: %s got %s", what, snd->name, t ? t : "?");
		free(t);
	}
}

/* One connection all along; or, after a reset, a second one that resumed. */
static void
check_connections(struct client *c, int reset)
{
	size_t n = json_array_size(c->connected);
	json_t *r;

	if (n != (size_t)(reset ? 2 : 1)) {
		fail("%s connected %zu times, not %d", c->name, n, reset ? 2 : 1);
		return;
	}
	if (reset) {
		r = json_array_get(c->connected, 1);
		if (!json_is_true(json_object_get(r, "resumed")) || json_object_get(r, "missed"))
			fail("%s: the reconnect did not resume (resumed %s, missed %lld)", c->name,
			     json_is_true(json_object_get(r, "resumed")) ? "true" : "false",
			     (long long)json_integer_value(json_object_get(r, "missed")));
	}
}

/* ---- a scenario ------------------------------------------------------------------ */

static int
scenario_run(const struct scenario *s, const char *gateway)
{
	struct gw_proc gw;
	struct proxy pm = { 0 }, pb = { 0 };
	struct client mod, bot;
	struct example em, eb;
	char what[80], bot_name[32];
	int before = failures, mod_started = 0, bot_started = 0, i, rc;
	int64_t t0 = now_ms(), end;
	size_t len;
	char *line;

	snprintf(what, sizeof what, "java mod x %s bot, %s", s->bot, s->reset ? "reset" : "stream");
	printf("[ RUN      ] %s\n", what);
	fflush(stdout);
	setenv("GW_BIN", gateway, 1);
	memset(&gw, 0, sizeof gw);
	/* the reset scenario stalls links on purpose: liveness is the stream's
	 * test, a slow minute must not turn a stall into a read timeout */
	if (gateway_start(&gw, 2, s->reset ? 20 : 3) < 0 || proxy_start(&pm, gw.port) < 0 || proxy_start(&pb, gw.port) < 0) {
		fail("%s: set-up (gateway or proxy) failed", what);
		goto out;
	}
	snprintf(bot_name, sizeof bot_name, "%s-bot", s->bot);
	if (client_start(&bot, bot_name, example_argv(&eb, s->bot, pb.port, "discord-bot"), gw.dir,
	                 KEY) < 0 ||
	    !(bot_started = 1) ||
	    client_start(&mod, "java-mod", example_argv(&em, "java", pm.port, "survival-1"), gw.dir,
	                 KEY) < 0 ||
	    !(mod_started = 1)) {
		fail("%s: cannot start the clients", what);
		goto out;
	}

	end = now_ms() + CONNECT_MS;
	while ((client_count(&mod, mod.connected) < 1 || client_count(&bot, bot.connected) < 1) &&
	       now_ms() < end)
		sleep_ms(20);
	if (now_ms() >= end) {
		fail("%s: the clients did not connect within %d s", what, CONNECT_MS / 1000);
		goto out;
	}
	if (!s->reset)   /* only the libraries' pongs keep the links up now */
		sleep_ms(5500);

	for (i = 0; i < N_MSGS; i++) {
		if (s->reset) {
			sleep_ms(3);
			if (i == 60)
				proxy_command(&pb, 'f');
			if (i == 80)
				proxy_command(&pb, 'c');
			if (i == 130) {
				/* the bot back first, so that its messages are
				 * among what the mod's cut loses */
				end = now_ms() + 15000;
				while (client_count(&bot, bot.connected) < 2 && now_ms() < end)
					sleep_ms(20);
				proxy_command(&pm, 'f');
			}
			if (i == 150)
				proxy_command(&pm, 'c');
		}
		if (!(line = content_make('M', i, &len)) || client_feed(&mod, line, len) < 0) {
			free(line);
			fail("%s: cannot write to the mod", what);
			goto out;
		}
		free(line);
		if (!(line = content_make('B', i, &len)) || client_feed(&bot, line, len) < 0) {
			free(line);
			fail("%s: cannot write to the bot", what);
			goto out;
		}
		free(line);
	}

	end = now_ms() + DELIVER_MS;
	while ((client_count(&mod, mod.msgs) < N_MSGS || client_count(&bot, bot.msgs) < N_MSGS ||
	        client_count(&mod, mod.acks) < N_MSGS || client_count(&bot, bot.acks) < N_MSGS) &&
	       now_ms() < end)
		sleep_ms(20);
	if ((rc = client_finish(&mod, EXIT_MS, 1)) != 0)
		fail("%s: the mod exited with %d, not 0", what, rc);
	if ((rc = client_finish(&bot, EXIT_MS, 1)) != 0)
		fail("%s: the bot exited with %d, not 0", what, rc);
	pthread_join(mod.reader, NULL);
	pthread_join(bot.reader, NULL);
	mod.reader_on = bot.reader_on = 0;

	check_stream("mod -> bot", &mod, &bot, 'M', s->reset);
	check_stream("bot -> mod", &bot, &mod, 'B', s->reset);
	check_connections(&mod, s->reset);
	check_connections(&bot, s->reset);
	/* Bytes the gateway had handed over and the client never saw: without
	 * them the reset would not have needed the resume. */
	if (s->reset && (pb.cut_unread <= 0 || pm.cut_unread <= 0))
		fail("%s: a cut lost nothing in flight (bot %ld, mod %ld bytes): resume not tested",
		     what, pb.cut_unread, pm.cut_unread);
	else if (s->reset && verbose)
		printf("  cuts threw away %ld bytes on their way to the bot, %ld to the mod\n",
		       pb.cut_unread, pm.cut_unread);
	if (gw_log_contains(&gw, "read timeout"))
		fail("%s: the gateway dropped a peer for read timeout", what);
out:
	if (failures > before || verbose) {
		if (mod_started)
			client_tail(&mod);
		if (bot_started)
			client_tail(&bot);
	}
	if (mod_started)
		client_free(&mod);
	if (bot_started)
		client_free(&bot);
	proxy_stop(&pm);
	proxy_stop(&pb);
	if (gw.pid > 0 && gw_stop(&gw, SIGTERM, 5000) != 0)
		fail("%s: the gateway did not stop cleanly", what);
	gw_cleanup(&gw);
	printf("[ %s ] %s (%.1f s)\n", failures > before ? " FAILED " : "      OK", what,
	       (double)(now_ms() - t0) / 1000);
	fflush(stdout);
	return failures > before ? -1 : 0;
}

/* ---- close codes ------------------------------------------------------------ */

/* 1 if the client's stderr holds needle. */
static int
client_said(struct client *c, const char *needle)
{
	FILE *f = fopen(c->err_path, "r");
	char line[1024];
	int found = 0;

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof line, f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

/* Waits up to ms for the client to say needle on stderr; 0 or -1. */
static int
client_wait_said(struct client *c, const char *needle, int ms)
{
	int64_t end = now_ms() + ms;

	while (!client_said(c, needle))
		if (now_ms() >= end)
			return -1;
		else
			sleep_ms(50);
	return 0;
}

/* What rcv processed from snd in the 1009 test: the two small messages,
 * in order (the big one between them never delivered), each acked. */
static void
check_small_pair(const char *what, struct client *snd, struct client *rcv, char dir)
{
	size_t i, n = json_array_size(rcv->msgs), len;
	char *want;

	if (n != 2 || json_array_size(snd->acks) != 2) {
		fail("%s: %s processed %zu messages and %s got %zu acks, not 2 and 2", what,
		     rcv->name, n, snd->name, json_array_size(snd->acks));
		return;
	}
	for (i = 0; i < 2; i++) {
		json_t *m = json_array_get(rcv->msgs, i);

		if (!(want = content_make(dir, (int)i * 2, &len)))
			return;
		if (strcmp(str_of(m, "content"), want) != 0)
			fail("%s: message %zu is %.20s..., not %.20s...", what, i, str_of(m, "content"),
			     want);
		free(want);
		if (strcmp(str_of(json_array_get(snd->acks, i), "status"), "failed") == 0)
			fail("%s: ack %zu is failed", what, i);
	}
}

/*
 * The close-code table as the clients follow it, against a gateway with
 * body_size = 1:
 * - a wrong key (HTTP 401): each client stops at once (exit 3);
 * - 1009: each sends a small message, one just over 1 MiB, another small one;
 *   the gateway closes with 1009, the client reconnects, drops the big one
 *   (never delivered) and resends the second small one;
 * - 409: a second bot is refused while the first answers pings; it keeps
 *   trying with backoff (it does not exit);
 * - 4000: a second mod with the same server_id replaces the first, which
 *   says why and waits 30 s (it does not reconnect at once).
 */
static int
codes_run(const char *botkind, const char *gateway)
{
	struct gw_proc gw;
	struct client mod, bot, bot2, mod2, bad;
	struct example em, eb, eb2, em2, ex;
	char what[80], name[32];
	int before = failures, started = 0, i, rc, st;
	int64_t t0 = now_ms(), end;
	size_t len, n;
	char *line;
	const char *kinds[2] = { "java", botkind };

	snprintf(what, sizeof what, "java mod x %s bot, close codes", botkind);
	printf("[ RUN      ] %s\n", what);
	fflush(stdout);
	setenv("GW_BIN", gateway, 1);
	memset(&gw, 0, sizeof gw);
	if (gateway_start(&gw, 1, 3) < 0) {
		fail("%s: set-up failed", what);
		goto out;
	}

	/* A wrong key: HTTP 401, no retry. */
	for (i = 0; i < 2; i++) {
		snprintf(name, sizeof name, "%s-badkey", kinds[i]);
		if (client_start(&bad, name, example_argv(&ex, kinds[i], gw.port, i ? "b" : "m"), gw.dir,
		                 "wrong-key") < 0) {
			fail("%s: cannot start %s", what, name);
			goto out;
		}
		if ((rc = client_finish(&bad, EXIT_MS, 0)) != 3) {
			fail("%s: %s with a wrong key exited with %d, not 3", what, name, rc);
			client_tail(&bad);
		}
		client_free(&bad);
	}

	snprintf(name, sizeof name, "%s-bot", botkind);
	if (client_start(&bot, name, example_argv(&eb, botkind, gw.port, "discord-bot"), gw.dir,
	                 KEY) < 0 ||
	    !(++started) ||
	    client_start(&mod, "java-mod", example_argv(&em, "java", gw.port, "survival-1"), gw.dir,
	                 KEY) < 0 ||
	    !(++started)) {
		fail("%s: cannot start the clients", what);
		goto out;
	}
	end = now_ms() + CONNECT_MS;
	while ((client_count(&mod, mod.connected) < 1 || client_count(&bot, bot.connected) < 1) &&
	       now_ms() < end)
		sleep_ms(20);

	/* 1009: messages 0 and 2 are small, 1 is 1.5 MB (over body_size 1). */
	for (i = 0; i < 3; i++) {
		char dir;

		for (dir = 'A'; dir <= 'B'; dir++) {
			if (i == 1) {
				/* just over: the gateway does not always drain a
				 * refused frame before closing, and a client whose
				 * write is reset never reads the 1009 (it sees a
				 * reset, reconnects and sends the message again) */
				len = 1024 * 1024 + 10000;
				if ((line = malloc(len)))
					memset(line, 'z', len);
			} else {
				line = content_make(dir == 'A' ? 'M' : 'B', i, &len);
			}
			if (!line || client_feed(dir == 'A' ? &mod : &bot, line, len) < 0) {
				free(line);
				fail("%s: cannot write to a client", what);
				goto out;
			}
			free(line);
		}
	}
	/* A client still writing the big frame when the gateway closes may be
	 * reset before it reads the 1009 (the gateway does not always drain
	 * the refused frame): it sees 1006 and sends the message again, until
	 * one try shows it the 1009. Usually one or two tries; many on a
	 * loaded machine. */
	end = now_ms() + TOO_BIG_MS;
	while ((client_count(&mod, mod.acks) < 2 || client_count(&bot, bot.acks) < 2 ||
	        client_count(&mod, mod.msgs) < 2 || client_count(&bot, bot.msgs) < 2) &&
	       now_ms() < end)
		sleep_ms(20);
	if (!client_said(&mod, "(1009); dropped") || !client_said(&bot, "(1009); dropped"))
		fail("%s: a client did not drop its too big message after 1009", what);

	/* 409: a second bot while the first answers the probe. */
	snprintf(name, sizeof name, "%s-bot2", botkind);
	if (client_start(&bot2, name, example_argv(&eb2, botkind, gw.port, "discord-bot-2"), gw.dir,
	                 KEY) < 0) {
		fail("%s: cannot start a second bot", what);
		goto out;
	}
	started++;
	if (client_wait_said(&bot2, "(409)", 20000) < 0 ||
	    client_wait_said(&bot2, "reconnecting in", 5000) < 0)
		fail("%s: the second bot did not say 409 and back off", what);
	sleep_ms(1500);
	if (waitpid(bot2.pid, &st, WNOHANG) != 0)
		fail("%s: the second bot exited after 409 (it should keep trying)", what);

	/* 4000: a second mod with the same server_id. */
	if (client_start(&mod2, "java-mod2", example_argv(&em2, "java", gw.port, "survival-1"),
	                 gw.dir, KEY) < 0) {
		fail("%s: cannot start a second mod", what);
		goto out;
	}
	started++;
	if (client_wait_said(&mod, "replaced (4000)", CONNECT_MS) < 0 ||
	    client_wait_said(&mod, "reconnecting in 30", 2000) < 0)
		fail("%s: the replaced mod did not say 4000 and wait 30 s", what);
	n = client_count(&mod, mod.connected);
	sleep_ms(3000);
	if (client_count(&mod, mod.connected) != n)
		fail("%s: the replaced mod connected again within 3 s (it should wait 30 s)", what);

	for (i = 0; i < 4; i++) {
		struct client *c = i == 0 ? &mod : i == 1 ? &bot : i == 2 ? &bot2 : &mod2;

		if ((rc = client_finish(c, EXIT_MS, 1)) != 0)
			fail("%s: %s exited with %d, not 0", what, c->name, rc);
		pthread_join(c->reader, NULL);
		c->reader_on = 0;
	}
	check_small_pair("mod -> bot (1009)", &mod, &bot, 'M');
	check_small_pair("bot -> mod (1009)", &bot, &mod, 'B');
out:
	for (i = 0; i < started; i++) {
		struct client *c = i == 0 ? &bot : i == 1 ? &mod : i == 2 ? &bot2 : &mod2;

		if (failures > before || verbose)
			client_tail(c);
		client_free(c);
	}
	if (gw.pid > 0 && gw_stop(&gw, SIGTERM, 5000) != 0)
		fail("%s: the gateway did not stop cleanly", what);
	gw_cleanup(&gw);
	printf("[ %s ] %s (%.1f s)\n", failures > before ? " FAILED " : "      OK", what,
	       (double)(now_ms() - t0) / 1000);
	fflush(stdout);
	return failures > before ? -1 : 0;
}

int
main(int argc, char **argv)
{
	const char *gateway = "build/homestead-gateway", *pairs[4];
	int npairs = 0, passed = 0, failed = 0, i, r;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--examples") == 0 && i + 1 < argc)
			examples_dir = argv[++i];
		else if (strcmp(argv[i], "--gateway") == 0 && i + 1 < argc)
			gateway = argv[++i];
		else if (strcmp(argv[i], "--verbose") == 0)
			verbose = 1;
		else if (strcmp(argv[i], "--pair") == 0 && i + 1 < argc && npairs < 4 &&
		         (strcmp(argv[i + 1], "node") == 0 || strcmp(argv[i + 1], "python") == 0))
			pairs[npairs++] = argv[++i];
		else {
			fprintf(stderr, "usage: interop [--examples DIR] [--gateway BIN] "
			                "[--pair node|python]... [--verbose]\n");
			return 2;
		}
	}
	if (!npairs) {
		pairs[npairs++] = "node";
		pairs[npairs++] = "python";
	}
	signal(SIGPIPE, SIG_IGN);
	for (i = 0; i < npairs; i++)
		for (r = 0; r < 2; r++) {
			struct scenario s = { pairs[i], r };

			if (scenario_run(&s, gateway) == 0)
				passed++;
			else
				failed++;
		}
	for (i = 0; i < npairs; i++) {
		if (codes_run(pairs[i], gateway) == 0)
			passed++;
		else
			failed++;
	}
	printf("interop: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
