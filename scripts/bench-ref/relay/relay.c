/*
 * relay.c - a BENCHMARK REFERENCE, not a product: the least a server can do
 * for homestead-bench's traffic, to show the ceiling the protocol's shape
 * leaves on this machine. One thread, one epoll set, level-triggered.
 *
 * It answers the upgrade (the key checked: X-API-Key or ?api_key=, else
 * 401), answers a handshake {"type":"mod"|"bot",...} with
 * {"status":"connected","type":...}, and then forwards every text frame
 * VERBATIM: a mod's to the bot, a bot's to every mod (any channel). Each
 * frame gets a fixed ack {"status":"completed","msg_id":...} ("failed" if
 * nobody took it) with the frame's msg_id, found by a scan of the top-level
 * members. No JSON is
 * built, nothing is validated, stored, deduplicated or queued; pings get
 * pongs. Output waits in a per-connection buffer that is sent once per
 * epoll batch (a connection with bytes left waits for EPOLLOUT).
 *
 * Usage: relay --port P   (the key from HOMESTEAD_KEY); listens on 127.0.0.1.
 * Built by scripts/bench-compare.sh into BUILD_DIR/ref/relay with
 * src/tools/wsc.c (SHA-1, frame headers, the JSON scan).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wsc.h"

#define MAX_FRAME (2u << 20)   /* the gateway's default body_size */
#define MAX_HEAD  16384

enum role { R_HTTP, R_HELLO, R_MOD, R_BOT };

struct rc {
	int fd;
	enum role role;
	int dirty;           /* on the flush list */
	int closing;         /* close after the output is out */
	unsigned char *in;
	size_t in_len, in_cap;
	unsigned char *out;
	size_t out_off, out_len, out_cap;
	struct rc *next_dirty;
};

static const char *key;
static size_t key_len;
static int ep;
static struct rc *bot;
static struct rc **conns;    /* by fd */
static size_t nconns;
static struct rc *dirty;

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static int reserve(unsigned char **buf, size_t *cap, size_t need)
{
	size_t c = *cap ? *cap : 4096;
	unsigned char *n;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	n = realloc(*buf, c);
	if (!n)
		return -1;
	*buf = n;
	*cap = c;
	return 0;
}

static void mark(struct rc *c)
{
	if (!c->dirty) {
		c->dirty = 1;
		c->next_dirty = dirty;
		dirty = c;
	}
}

static int out_add(struct rc *c, const void *p, size_t n)
{
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (reserve(&c->out, &c->out_cap, c->out_len + n) < 0)
		return -1;
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
	mark(c);
	return 0;
}

/* An unmasked server frame of `op` around p[0..n). */
static int out_frame(struct rc *c, int op, const void *p, size_t n)
{
	unsigned char h[10];
	size_t hl = 2;

	h[0] = (unsigned char)(0x80 | op);
	if (n < 126) {
		h[1] = (unsigned char)n;
	} else if (n < 65536) {
		h[1] = 126, h[2] = (unsigned char)(n >> 8), h[3] = (unsigned char)n, hl = 4;
	} else {
		h[1] = 127, hl = 10;
		for (int i = 0; i < 8; i++)
			h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
	}
	return out_add(c, h, hl) < 0 || out_add(c, p, n) < 0 ? -1 : 0;
}

static void drop(struct rc *c)
{
	if (c == bot)
		bot = NULL;
	if (c->dirty) {   /* unlink from the flush list */
		struct rc **pp = &dirty;
		while (*pp != c)
			pp = &(*pp)->next_dirty;
		*pp = c->next_dirty;
	}
	conns[c->fd] = NULL;
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

static int flush(struct rc *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -1;
			struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.fd = c->fd };
			epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
			return 0;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	if (c->closing)
		return -1;
	return 0;
}

static int key_ok(const char *head, size_t len)
{
	size_t vl;
	const char *v = wsc_http_header(head, len, "X-API-Key", &vl);
	const char *eol = memchr(head, '\r', len), *q;

	if (v)
		return vl == key_len && memcmp(v, key, vl) == 0;
	q = eol ? memmem(head, (size_t)(eol - head), "api_key=", 8) : NULL;
	if (!q)
		return 0;
	q += 8;
	return (size_t)(eol - q) > key_len && memcmp(q, key, key_len) == 0 &&
	       (q[key_len] == ' ' || q[key_len] == '&');
}

/* The upgrade request: 1 done, 0 more to come, -1 refused. */
static int on_http(struct rc *c)
{
	const char *s = (const char *)c->in;
	const char *end = memmem(s, c->in_len, "\r\n\r\n", 4), *k;
	char accept[WSC_ACCEPT_LEN + 1], kz[64], resp[256];
	size_t hl, kl;
	int n;

	if (!end)
		return c->in_len > MAX_HEAD ? -1 : 0;
	hl = (size_t)(end - s) + 4;
	k = wsc_http_header(s, hl, "Sec-WebSocket-Key", &kl);
	if (!k || kl >= sizeof(kz) || !key_ok(s, hl)) {
		static const char no[] = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
		                         "Connection: close\r\n\r\n";
		out_add(c, no, sizeof(no) - 1);
		c->closing = 1;
		return 1;
	}
	memcpy(kz, k, kl);
	kz[kl] = 0;
	wsc_accept_key(kz, accept);
	n = snprintf(resp, sizeof(resp), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	             "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
	out_add(c, resp, (size_t)n);
	memmove(c->in, c->in + hl, c->in_len - hl);
	c->in_len -= hl;
	c->role = R_HELLO;
	return 1;
}

static int on_text(struct rc *c, const char *p, size_t n)
{
	const char *v;
	size_t vl;
	enum wsc_json_type t;

	if (c->role == R_HELLO) {
		static const char mod[] = "{\"status\":\"connected\",\"type\":\"mod\"}";
		static const char bt[] = "{\"status\":\"connected\",\"type\":\"bot\"}";
		if (wsc_json_get(p, n, "type", &v, &vl, &t) != 1)
			return -1;
		if (wsc_span_eq(v, vl, "bot")) {
			if (bot)
				return -1;
			bot = c;
			c->role = R_BOT;
			return out_frame(c, 1, bt, sizeof(bt) - 1);
		}
		c->role = R_MOD;
		return out_frame(c, 1, mod, sizeof(mod) - 1);
	}
	if (wsc_json_get(p, n, "msg_id", &v, &vl, &t) == 1 && vl < 300) {
		char ack[400];
		int to = 0, an;

		if (c->role == R_BOT) {
			for (size_t fd = 0; fd < nconns; fd++)
				if (conns[fd] && conns[fd]->role == R_MOD)
					to += out_frame(conns[fd], 1, p, n) == 0;
		} else if (bot) {
			to = out_frame(bot, 1, p, n) == 0;
		}
		an = snprintf(ack, sizeof(ack), "{\"status\":\"%s\",\"msg_id\":\"%.*s\"}",
		              to ? "completed" : "failed", (int)vl, v);
		return out_frame(c, 1, ack, (size_t)an);
	}
	return 0;
}

/* Every whole frame in c's input. -1 ends the connection. */
static int on_frames(struct rc *c)
{
	size_t off = 0;
	int rc = 0;

	while (rc == 0 && off < c->in_len) {
		struct wsc_head h;
		unsigned char *p;

		if (wsc_head_parse(c->in + off, c->in_len - off, &h) != WSC_DONE)
			break;
		if (!h.masked || h.len > MAX_FRAME || !h.fin)
			return -1;
		if (c->in_len - off < h.head_len + h.len)
			break;
		p = c->in + off + h.head_len;
		wsc_mask(p, (size_t)h.len, h.mask);
		if (h.opcode == WSC_OP_TEXT)
			rc = on_text(c, (const char *)p, (size_t)h.len);
		else if (h.opcode == WSC_OP_PING)
			rc = out_frame(c, WSC_OP_PONG, p, (size_t)h.len);
		else if (h.opcode == WSC_OP_CLOSE) {
			out_frame(c, WSC_OP_CLOSE, p, h.len >= 2 ? 2 : 0);
			c->closing = 1;
			rc = 1;
		}
		off += h.head_len + (size_t)h.len;
	}
	if (off > 0) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	return rc < 0 ? -1 : 0;
}

static void on_readable(struct rc *c)
{
	for (;;) {
		ssize_t n;

		if (reserve(&c->in, &c->in_cap, c->in_len + 65536) < 0) {
			drop(c);
			return;
		}
		n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			drop(c);
			return;
		}
		if (n < 0)
			return;
		c->in_len += (size_t)n;
		if (c->role == R_HTTP && on_http(c) <= 0) {
			if (c->in_len > MAX_HEAD)
				drop(c);
			return;
		}
		if (!c->closing && on_frames(c) < 0) {
			drop(c);
			return;
		}
		/* level-triggered: what a short read left, the next wait brings */
		if ((size_t)n < 65536 || c->closing)
			return;
	}
}

static void on_accept(int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = 0 };
		struct rc *c;

		if (fd < 0)
			return;
		if ((size_t)fd >= nconns) {
			size_t n = nconns ? nconns : 1024;
			while (n <= (size_t)fd)
				n *= 2;
			struct rc **nc = realloc(conns, n * sizeof(*nc));
			if (!nc) {
				close(fd);
				continue;
			}
			memset(nc + nconns, 0, (n - nconns) * sizeof(*nc));
			conns = nc;
			nconns = n;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		conns[fd] = c;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ev.data.fd = fd;
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct epoll_event evs[256], ev = { .events = EPOLLIN };
	int lfd, one = 1, port = 0;

	for (int i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "--port") == 0)
			port = atoi(argv[++i]);
	key = getenv("HOMESTEAD_KEY");
	if (!key || !*key || port <= 0 || port > 65535) {
		fprintf(stderr, "usage: HOMESTEAD_KEY=K relay --port P\n");
		return 2;
	}
	key_len = strlen(key);
	signal(SIGPIPE, SIG_IGN);
	a.sin_port = htons((uint16_t)port);
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 4096) < 0)
		die("bind");
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		die("epoll_create1");
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	fprintf(stderr, "relay: listening on 127.0.0.1:%d\n", port);
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);

		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			struct rc *c;

			if (fd == lfd) {
				on_accept(lfd);
				continue;
			}
			c = (size_t)fd < nconns ? conns[fd] : NULL;
			if (!c)
				continue;
			if (evs[i].events & EPOLLOUT) {
				struct epoll_event in = { .events = EPOLLIN, .data.fd = fd };
				epoll_ctl(ep, EPOLL_CTL_MOD, fd, &in);
				mark(c);
			}
			if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				on_readable(c);
		}
		while (dirty) {   /* one send per connection per batch */
			struct rc *c = dirty;
			dirty = c->next_dirty;
			c->dirty = 0;
			if (flush(c) < 0)
				drop(c);
		}
	}
}
