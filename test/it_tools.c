/*
 * it_tools.c - the companion tools against the real gateway: homestead-client
 * processes driven through pipes (a mod and a bot talking, a reconnect that
 * resends an unacknowledged message with its msg_id, a refused key, what
 * the client does after each close code, resume and --state), and a short
 * homestead-bench run of every scenario. The tools
 * are found beside the gateway binary (gw_binary()). Resume is also played
 * against a scripted gateway in this file (struct fake): it speaks spec 7a
 * (epoch, seq, since) step by step, as the test says.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "itutil.h"
#include "wsc.h"

#define T 5000      /* ms: generous wait for a line */
#define PROCS_MAX 8

/* One tool process: its stdin (we write), stdout (we read), stderr in a file. */
struct proc {
	pid_t pid;
	int in, out;
	char err_path[64];
	char buf[1 << 16];
	size_t len;
};

/* The scripted gateway: one listening socket, one connection at a time. */
struct fake {
	int lfd, fd, port;
	unsigned char buf[1 << 16];
	size_t len;
};

static struct gw_proc gw;
static struct proc procs[PROCS_MAX];
static struct fake fk = { .lfd = -1, .fd = -1 };
static char tool_dir[PATH_MAX];
static char state_dir[64];

static const char *tool(const char *name)
{
	static char path[2][PATH_MAX + 32];
	static int i;

	i ^= 1;
	snprintf(path[i], sizeof(path[i]), "%s/%s", tool_dir, name);
	return path[i];
}

static void url_of(char *buf, size_t cap)
{
	snprintf(buf, cap, "ws://127.0.0.1:%d/sync", gw.port);
}

/* Starts argv with pipes on stdin/stdout; stderr goes to a file. */
static struct proc *proc_start(const char *const *argv)
{
	struct proc *p = NULL;
	int in[2], out[2], err, i;
	pid_t parent = getpid();

	for (i = 0; i < PROCS_MAX; i++)
		if (procs[i].pid == 0) {
			p = &procs[i];
			break;
		}
	if (!p || pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		return NULL;
	snprintf(p->err_path, sizeof(p->err_path), "/tmp/it_tools.%d.%d.err", (int)parent, i);
	err = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	fflush(NULL);
	p->pid = fork();
	if (p->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(err, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	close(err);
	p->in = in[1];
	p->out = out[0];
	p->len = 0;
	return p;
}

static void proc_write(struct proc *p, const char *text)
{
	assert_int_equal(write(p->in, text, strlen(text)), (ssize_t)strlen(text));
}

static void proc_close_stdin(struct proc *p)
{
	if (p->in >= 0)
		close(p->in);
	p->in = -1;
}

/* Prints the tool's stderr (for a failing test). */
static void proc_dump(struct proc *p, const char *why)
{
	char text[8192];
	ssize_t n;
	int fd = open(p->err_path, O_RDONLY | O_CLOEXEC);

	fprintf(stderr, "it_tools: %s; stdout so far: %.*s\n--- stderr:\n", why, (int)p->len, p->buf);
	if (fd >= 0) {
		while ((n = read(fd, text, sizeof(text))) > 0)
			fwrite(text, 1, (size_t)n, stderr);
		close(fd);
	}
	fputs("---\n", stderr);
}

/*
 * Reads stdout until a whole line contains needle; copies it into line
 * (cut to cap) and drops the lines before it. 0, or -1 on timeout/EOF.
 */
static int proc_line_raw(struct proc *p, const char *needle, int timeout_ms, char *line,
                         size_t cap)
{
	int64_t deadline = now_ms() + timeout_ms;
	struct pollfd pfd = { .fd = p->out, .events = POLLIN };
	char *nl, *start;
	ssize_t n;

	for (;;) {
		start = p->buf;
		while ((nl = memchr(start, '\n', p->len - (size_t)(start - p->buf)))) {
			*nl = '\0';
			if (strstr(start, needle)) {
				snprintf(line, cap, "%s", start);
				p->len -= (size_t)(nl + 1 - p->buf);
				memmove(p->buf, nl + 1, p->len);
				return 0;
			}
			start = nl + 1;
		}
		/* keep only the incomplete tail */
		p->len -= (size_t)(start - p->buf);
		memmove(p->buf, start, p->len);
		if (now_ms() >= deadline || p->len == sizeof(p->buf))
			break;
		if (poll(&pfd, 1, (int)(deadline - now_ms())) <= 0)
			break;
		n = read(p->out, p->buf + p->len, sizeof(p->buf) - p->len);
		if (n <= 0)
			break;
		p->len += (size_t)n;
	}
	proc_dump(p, needle);
	return -1;
}

/* The same, parsed as JSON (caller decrefs), or NULL. */
static json_t *proc_line(struct proc *p, const char *needle, int timeout_ms)
{
	static char line[1 << 16];
	json_t *j;

	if (proc_line_raw(p, needle, timeout_ms, line, sizeof(line)) < 0)
		return NULL;
	if (!(j = json_loads(line, 0, NULL)))
		fprintf(stderr, "it_tools: not JSON: %s\n", line);
	return j;
}

/* Waits for the exit; returns its status (128+signal), or -1 after
 * timeout_ms (then kills it). */
static int proc_wait(struct proc *p, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	int status, rc = -1;

	for (;;) {
		pid_t r = waitpid(p->pid, &status, WNOHANG);

		if (r == p->pid) {
			rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			break;
		}
		if (now_ms() >= deadline) {
			proc_dump(p, "still running");
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &status, 0);
			break;
		}
		sleep_ms(10);
	}
	p->pid = 0;
	proc_close_stdin(p);
	close(p->out);
	unlink(p->err_path);
	return rc;
}

static void procs_kill_all(void)
{
	for (int i = 0; i < PROCS_MAX; i++)
		if (procs[i].pid > 0) {
			kill(procs[i].pid, SIGKILL);
			proc_wait(&procs[i], 2000);
		}
}

/* Waits until the tool's stderr holds needle: 0, or -1 after timeout_ms. */
static int proc_err_wait(struct proc *p, const char *needle, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	char text[8192];
	ssize_t n;
	int fd;

	do {
		if ((fd = open(p->err_path, O_RDONLY | O_CLOEXEC)) >= 0) {
			n = read(fd, text, sizeof(text) - 1);
			close(fd);
			text[n > 0 ? n : 0] = '\0';
			if (strstr(text, needle))
				return 0;
		}
		sleep_ms(10);
	} while (now_ms() < deadline);
	proc_dump(p, needle);
	return -1;
}

/* How many times the tool's stderr holds needle so far. */
static int proc_err_count(struct proc *p, const char *needle)
{
	static char text[1 << 16];
	const char *at;
	ssize_t n;
	int fd, count = 0;

	if ((fd = open(p->err_path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	text[n > 0 ? n : 0] = '\0';
	for (at = text; (at = strstr(at, needle)) != NULL; at += strlen(needle))
		count++;
	return count;
}

/* The content of the next message the tool prints ("" if none comes). */
static const char *next_content(struct proc *p, int timeout_ms)
{
	static char content[256];
	json_t *j = proc_line(p, "\"content\"", timeout_ms);

	snprintf(content, sizeof(content), "%s", j ? it_str(j, "content") : "");
	json_decref(j);
	return content;
}

/* --- the scripted gateway ------------------------------------------------- */

static void fake_close(void)
{
	if (fk.fd >= 0)
		close(fk.fd);
	if (fk.lfd >= 0)
		close(fk.lfd);
	fk.fd = fk.lfd = -1;
}

/* Listens on a free loopback port (fk.port): 0 or -1. */
static int fake_listen(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	for (int i = 0; i < 20; i++) {
		a.sin_port = htons((uint16_t)(fk.port = gw_free_port()));
		fk.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fk.lfd < 0 || fk.port <= 0)
			return -1;
		if (bind(fk.lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fk.lfd, 4) == 0)
			return 0;
		close(fk.lfd);   /* taken meanwhile: another */
	}
	fk.lfd = -1;
	return -1;
}

/* Reads more from the connection, within T: 0, or -1. */
static int fake_more(void)
{
	struct pollfd pfd = { .fd = fk.fd, .events = POLLIN };
	ssize_t n;

	if (fk.len == sizeof(fk.buf) || poll(&pfd, 1, T) <= 0)
		return -1;
	n = recv(fk.fd, fk.buf + fk.len, sizeof(fk.buf) - fk.len, 0);
	if (n <= 0)
		return -1;
	fk.len += (size_t)n;
	return 0;
}

/* Sends text as one unmasked text frame (server frames are not masked). */
static void fake_send(const char *text)
{
	unsigned char frame[4 + 4096];
	size_t len = strlen(text), head = len < 126 ? 2 : 4;

	assert_true(len < 4096);
	frame[0] = 0x81;
	frame[1] = (unsigned char)(len < 126 ? len : 126);
	frame[2] = (unsigned char)(len >> 8);
	frame[3] = (unsigned char)len;
	memcpy(frame + head, text, len);
	assert_int_equal(send(fk.fd, frame, head + len, MSG_NOSIGNAL), (ssize_t)(head + len));
}

/* Sends a close frame with code and reason. */
static void fake_send_close(int code, const char *reason)
{
	unsigned char frame[4 + 125];
	size_t len = strlen(reason);

	assert_true(len <= 123);
	frame[0] = 0x88;
	frame[1] = (unsigned char)(2 + len);
	frame[2] = (unsigned char)(code >> 8);
	frame[3] = (unsigned char)code;
	memcpy(frame + 4, reason, len);
	assert_int_equal(send(fk.fd, frame, 4 + len, MSG_NOSIGNAL), (ssize_t)(4 + len));
}

/* Takes the client's next connection: answers its upgrade and returns its
 * handshake (caller decrefs), or NULL. An earlier connection is dropped
 * (closed: the client sees its gateway go and reconnects). */
static json_t *fake_accept(void)
{
	char key[64] = "", accept[WSC_ACCEPT_LEN + 1], answer[256], *k, *end;
	struct pollfd pfd = { .fd = fk.lfd, .events = POLLIN };
	struct wsc_head h;
	json_t *j;

	if (fk.fd >= 0)
		close(fk.fd);
	fk.len = 0;
	if (poll(&pfd, 1, T) <= 0 || (fk.fd = accept4(fk.lfd, NULL, NULL, SOCK_CLOEXEC)) < 0)
		return NULL;
	do {
		if (fake_more() < 0)
			return NULL;
		fk.buf[fk.len] = '\0';
	} while (!(end = strstr((char *)fk.buf, "\r\n\r\n")));
	if ((k = strcasestr((char *)fk.buf, "\r\nSec-WebSocket-Key:")) != NULL)
		sscanf(k + 20, " %63[^\r]", key);
	wsc_accept_key(key, accept);
	snprintf(answer, sizeof(answer), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
	send(fk.fd, answer, strlen(answer), MSG_NOSIGNAL);
	fk.len -= (size_t)(end + 4 - (char *)fk.buf);
	memmove(fk.buf, end + 4, fk.len);
	/* the handshake: one masked text frame */
	while (wsc_head_parse(fk.buf, fk.len, &h) == WSC_MORE || fk.len < h.head_len + h.len)
		if (fake_more() < 0)
			return NULL;
	wsc_mask(fk.buf + h.head_len, (size_t)h.len, h.mask);
	j = json_loadb((char *)fk.buf + h.head_len, (size_t)h.len, 0, NULL);
	fk.len -= h.head_len + (size_t)h.len;
	memmove(fk.buf, fk.buf + h.head_len + h.len, fk.len);
	return j;
}

/* A routed message as the gateway sends it, with its seq. */
static void fake_msg(const char *type, const char *channel, long long seq, const char *content)
{
	char text[512];

	snprintf(text, sizeof(text), "{\"type\":\"%s\",\"channel_id\":\"%s\",\"msg_id\":\"m%lld\","
	         "\"author\":{\"id\":\"a\"},\"content\":\"%s\",\"seq\":%lld}", type, channel, seq,
	         content, seq);
	fake_send(text);
}

/* The connected reply, with `rest` (members after "type"). */
#define CONNECTED(type, rest) "{\"status\":\"connected\",\"type\":\"" type "\"," rest "}"

/* The handshake's data.since, borrowed from hs (NULL if none). */
static json_t *since_of(json_t *hs)
{
	return json_object_get(json_object_get(hs, "data"), "since");
}

/* --- state files ---------------------------------------------------------- */

/* A path in this test's state folder (made on first use, emptied by down). */
static const char *state_path(const char *name)
{
	static char path[128];

	if (!state_dir[0]) {
		snprintf(state_dir, sizeof(state_dir), "/tmp/it_tools.state.XXXXXX");
		assert_non_null(mkdtemp(state_dir));
	}
	snprintf(path, sizeof(path), "%s/%s", state_dir, name);
	return path;
}

static void state_put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

/*
 * Reads the state file at path until streams[channel] is seq, checking that
 * every read finds a whole JSON file (it is replaced by rename, never
 * rewritten in place). Returns it (caller decrefs) or NULL after T.
 */
static json_t *state_wait(const char *path, const char *channel, long long seq)
{
	int64_t deadline = now_ms() + T;
	json_error_t jerr;
	struct stat st;
	json_t *j;

	while (now_ms() < deadline) {
		if (stat(path, &st) == 0) {
			j = json_load_file(path, 0, &jerr);
			if (!j) {
				fprintf(stderr, "it_tools: torn state file: %s\n", jerr.text);
				return NULL;
			}
			if (json_integer_value(json_object_get(json_object_get(j, "streams"), channel)) == seq)
				return j;
			json_decref(j);
		}
		sleep_ms(2);
	}
	fprintf(stderr, "it_tools: %s never had %s at %lld\n", path, channel, seq);
	return NULL;
}

/* Entries in the state folder (a leftover temp file would show). */
static int state_files(void)
{
	DIR *d = opendir(state_dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static int up(void **state)
{
	(void)state;
	return gw_start(&gw, NULL);
}

/* body_size = 1 MB, for the message too big. */
static int up_small_body(void **state)
{
	(void)state;
	return gw_start(&gw, "body_size = 1\n");
}

/* For the tests that play the gateway themselves. */
static int up_fake(void **state)
{
	(void)state;
	return fake_listen();
}

static int down(void **state)
{
	DIR *d;
	struct dirent *e;

	(void)state;
	procs_kill_all();
	fake_close();
	gw_stop(&gw, SIGTERM, 5000);
	gw_cleanup(&gw);
	if (state_dir[0] && (d = opendir(state_dir))) {
		while ((e = readdir(d)) != NULL)
			if (e->d_name[0] != '.')
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
		rmdir(state_dir);
	}
	state_dir[0] = '\0';
	return 0;
}

static struct proc *start_mod(const char *sid, const char *channel, const char *extra)
{
	char url[128];
	const char *argv[] = { tool("homestead-client"), "mod", "--url", url, "--server-id", sid,
	                       "--channel", channel, extra, NULL };

	url_of(url, sizeof(url));
	return proc_start(argv);
}

/* homestead-client `mode` on 127.0.0.1:port (quick reconnects) with up to
 * three more arguments (NULL ends them). */
static struct proc *start_peer(int port, const char *mode, const char *a1, const char *a2,
                               const char *a3)
{
	char url[128];
	const char *argv[] = { tool("homestead-client"), mode, "--url", url, "--backoff-ms=50",
	                       a1, a2, a3, NULL };

	snprintf(url, sizeof(url), "ws://127.0.0.1:%d/sync", port);
	return proc_start(argv);
}

/* --- homestead-client ------------------------------------------------- */

static void test_client_mod_bot_exchange(void **state)
{
	char url[128];
	const char *bot_argv[] = { tool("homestead-client"), "bot", "--url", url, "--bot-id", "b1",
	                           "--author", "discord-1", "--name", "Alex", NULL };
	struct proc *bot, *mod;
	json_t *j;

	(void)state;
	url_of(url, sizeof(url));
	bot = proc_start(bot_argv);
	assert_non_null(bot);
	j = proc_line(bot, "\"connected\"", T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "type"), "bot");
	json_decref(j);
	mod = start_mod("srv-1", "chan-1", NULL);
	assert_non_null(mod);
	j = proc_line(mod, "\"connected\"", T);
	assert_non_null(j);
	json_decref(j);

	/* mod -> bot: a typed line arrives as a message; the mod prints its ack */
	proc_write(mod, "hello from the game\n");
	j = proc_line(bot, "hello from the game", T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "type"), "mod");
	assert_string_equal(it_str(j, "channel_id"), "chan-1");
	assert_string_equal(it_str(j, "server_id"), "srv-1");
	assert_string_equal(it_str(j, "content"), "hello from the game");
	assert_true(strncmp(it_str(j, "msg_id"), "srv-1-", 6) == 0);
	json_decref(j);
	j = proc_line(mod, "\"status\":\"completed\"", T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "type"), "mod");
	json_decref(j);

	/* bot -> mod: '#channel ' picks the channel */
	proc_write(bot, "#chan-1 hello from discord\n");
	j = proc_line(mod, "hello from discord", T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "type"), "bot");
	assert_string_equal(it_str(j, "channel_id"), "chan-1");
	assert_string_equal(it_str(json_object_get(j, "author"), "id"), "discord-1");
	assert_string_equal(it_str(json_object_get(j, "author"), "name"), "Alex");
	json_decref(j);
	j = proc_line(bot, "\"status\":\"completed\"", T);
	assert_non_null(j);
	json_decref(j);

	/* EOF: both leave cleanly */
	proc_close_stdin(mod);
	assert_int_equal(proc_wait(mod, T), 0);
	proc_close_stdin(bot);
	assert_int_equal(proc_wait(bot, T), 0);
}

/* Waits until every thread of pid is stopped (SIGSTOP reaches a running
 * thread on another core a little later than the call returns). */
static void wait_stopped(pid_t pid)
{
	char path[64];
	int64_t deadline = now_ms() + T;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	while (now_ms() < deadline) {
		DIR *d = opendir(path);
		struct dirent *e;
		int running = 0;

		if (!d)
			return;
		while ((e = readdir(d)) != NULL) {
			char stat[400], buf[512], *p;
			FILE *f;

			if (e->d_name[0] == '.')
				continue;
			snprintf(stat, sizeof(stat), "%s/%s/stat", path, e->d_name);
			if (!(f = fopen(stat, "r")))
				continue;
			if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) && p[2] != 'T' && p[2] != 't')
				running = 1;
			fclose(f);
		}
		closedir(d);
		if (!running)
			return;
		sleep_ms(5);
	}
}

static void test_client_resends_unacked_after_reconnect(void **state)
{
	struct proc *mod;
	struct ws *bot;
	char id[128];
	json_t *j;
	int n = 0;

	(void)state;
	mod = start_mod("srv-r", "chan-r", "--backoff-ms=100");
	assert_non_null(mod);
	j = proc_line(mod, "\"connected\"", T);
	assert_non_null(j);
	json_decref(j);

	/* The gateway freezes: the line goes out but no ack can come. Then it
	 * dies (memory store: the message is gone) and comes back. */
	kill(gw.pid, SIGSTOP);
	wait_stopped(gw.pid);
	proc_write(mod, "sent while frozen\n");
	sleep_ms(300);
	gw_stop(&gw, SIGKILL, 2000);
	assert_int_equal(gw_restart(&gw), 0);

	/* The client reconnects on its own and sends the line again, same msg_id. */
	j = proc_line(mod, "\"connected\"", T);
	assert_non_null(j);
	json_decref(j);
	snprintf(id, sizeof(id), "srv-r-%d-1", (int)mod->pid);
	j = proc_line(mod, id, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "status"), "queued");
	json_decref(j);

	/* A line typed after the reconnect goes through too. */
	proc_write(mod, "after the reconnect\n");
	snprintf(id, sizeof(id), "srv-r-%d-2", (int)mod->pid);
	j = proc_line(mod, id, T);
	assert_non_null(j);
	json_decref(j);

	/* The bot gets each exactly once, in order. */
	bot = gw_bot(&gw, "b1");
	assert_non_null(bot);
	j = it_wait_msg(bot, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "content"), "sent while frozen");
	snprintf(id, sizeof(id), "srv-r-%d-1", (int)mod->pid);
	assert_string_equal(it_str(j, "msg_id"), id);
	json_decref(j);
	j = it_wait_msg(bot, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "content"), "after the reconnect");
	json_decref(j);
	while ((j = it_wait_msg(bot, 300)) != NULL) {
		n++;
		json_decref(j);
	}
	assert_int_equal(n, 0);
	ws_free(bot);

	proc_close_stdin(mod);
	assert_int_equal(proc_wait(mod, T), 0);
}

/* --- what the client does after each close code (README, "Close codes") -- */

/* 4000: a second connection with our server_id took the slot. The client
 * says so and waits --replaced-backoff (far over its usual backoff here)
 * before it takes the slot back: two instances with one server_id would
 * otherwise knock each other off many times a second. */
static void test_client_replaced_backs_off(void **state)
{
	struct proc *mod;
	struct ws *w;
	int64_t t0;
	json_t *j;

	(void)state;
	mod = start_peer(gw.port, "mod", "--server-id=srv-x", "--channel=chan-x",
	                 "--replaced-backoff=2");
	assert_non_null(mod);
	j = proc_line(mod, "\"connected\"", T);
	assert_non_null(j);
	json_decref(j);
	t0 = now_ms();
	w = gw_mod(&gw, "srv-x", "chan-x");
	assert_non_null(w);
	assert_int_equal(proc_err_wait(mod, "replaced (close 4000): another connection with "
	                               "server_id srv-x on channel chan-x", T), 0);
	assert_int_equal(proc_err_wait(mod, "reconnecting in 2.0 s", T), 0);
	/* back after the 2 s, not before; the test's connection is replaced then */
	j = proc_line(mod, "\"connected\"", 2000 + T);
	assert_non_null(j);
	json_decref(j);
	assert_true(now_ms() - t0 >= 2000);
	assert_int_equal(ws_wait_close(w, T), 4000);
	ws_free(w);
	assert_int_equal(proc_err_count(mod, "connecting to"), 2);
	proc_close_stdin(mod);
	assert_int_equal(proc_wait(mod, T), 0);
}

/* 1008: the key was rotated away on SIGHUP: the client says why and exits 3
 * instead of knocking with a key that will not open again. */
static void test_client_key_revoked_exits_3(void **state)
{
	struct proc *mod;
	json_t *j;

	(void)state;
	mod = start_peer(gw.port, "mod", "--server-id=srv-k", "--channel=chan-k", NULL);
	assert_non_null(mod);
	j = proc_line(mod, "\"connected\"", T);
	assert_non_null(j);
	json_decref(j);
	assert_int_equal(gw_config_replace(&gw, "test-key", "rotated1"), 0);
	kill(gw.pid, SIGHUP);
	assert_int_equal(proc_err_wait(mod, "revoked the key (close 1008)", T), 0);
	assert_int_equal(proc_wait(mod, T), 3);
}

/* 1009: a message over body_size ends the link once; the client drops it,
 * says so, reconnects and carries on with the next one. */
static void test_client_too_big_not_resent(void **state)
{
	const size_t big = 1300000;   /* body_size is 1 MB */
	struct proc *mod;
	char id[128], *line;
	json_t *j;

	(void)state;
	mod = start_peer(gw.port, "mod", "--server-id=srv-b", "--channel=chan-b", "--wait=3");
	assert_non_null(mod);
	j = proc_line(mod, "\"connected\"", T);
	assert_non_null(j);
	json_decref(j);
	line = malloc(big + 2);
	assert_non_null(line);
	memset(line, 'x', big);
	memcpy(line + big, "\n", 2);
	proc_write(mod, line);
	free(line);
	proc_write(mod, "small after\n");
	assert_int_equal(proc_err_wait(mod, "over the gateway's body_size: dropped", T), 0);
	snprintf(id, sizeof(id), "srv-b-%d-2", (int)mod->pid);
	j = proc_line(mod, id, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "status"), "queued");
	json_decref(j);
	/* nothing left pending: end of input ends it at once, with 0 */
	proc_close_stdin(mod);
	assert_int_equal(proc_err_count(mod, "1009"), 1);
	assert_int_equal(proc_err_count(mod, "connected to"), 2);
	assert_int_equal(proc_wait(mod, T), 0);
}

/* 1001: the gateway restarts; the client reconnects with its backoff and
 * goes on. */
static void test_client_reconnects_after_restart(void **state)
{
	struct proc *mod;
	char id[128];
	json_t *j;

	(void)state;
	mod = start_peer(gw.port, "mod", "--server-id=srv-g", "--channel=chan-g", NULL);
	assert_non_null(mod);
	j = proc_line(mod, "\"connected\"", T);
	assert_non_null(j);
	json_decref(j);
	assert_int_equal(gw_stop(&gw, SIGTERM, 5000), 0);
	assert_int_equal(proc_err_wait(mod, "closed the connection: 1001", T), 0);
	assert_int_equal(gw_restart(&gw), 0);
	j = proc_line(mod, "\"connected\"", T);
	assert_non_null(j);
	json_decref(j);
	proc_write(mod, "after the restart\n");
	snprintf(id, sizeof(id), "srv-g-%d-1", (int)mod->pid);
	j = proc_line(mod, id, T);
	assert_non_null(j);
	assert_string_equal(it_str(j, "status"), "queued");
	json_decref(j);
	proc_close_stdin(mod);
	assert_int_equal(proc_wait(mod, T), 0);
}

static void test_client_bad_key_exits_3(void **state)
{
	char url[128];
	const char *argv[] = { tool("homestead-client"), "mod", "--url", url, "--key", "wrong",
	                       "--server-id", "s", "--channel", "c", "--backoff-ms", "100", NULL };
	int64_t t0 = now_ms();
	struct proc *p;

	(void)state;
	url_of(url, sizeof(url));
	p = proc_start(argv);
	assert_non_null(p);
	assert_int_equal(proc_wait(p, T), 3);
	assert_true(now_ms() - t0 < 3000);   /* no retries */
}

static void test_client_usage_errors(void **state)
{
	const char *no_channel[] = { tool("homestead-client"), "mod", "--server-id", "s", NULL };
	const char *bad_mode[] = { tool("homestead-client"), "admin", NULL };
	const char *wss[] = { tool("homestead-client"), "bot", "--bot-id", "b", "--url",
	                      "wss://example.org/sync", NULL };
	struct proc *p;

	(void)state;
	p = proc_start(no_channel);
	assert_int_equal(proc_wait(p, T), 2);
	p = proc_start(bad_mode);
	assert_int_equal(proc_wait(p, T), 2);
	p = proc_start(wss);
	assert_int_equal(proc_wait(p, T), 2);
}

/* 4004: a link that ends for the rate limit does not start the backoff
 * again at its least (400 ms here): 800 ms, then 1600 ms while links keep
 * ending so. The scripted gateway closes each link right after the
 * connected reply. */
static void test_client_rate_limit_backs_off_longer(void **state)
{
	struct proc *mod;
	int64_t t;
	json_t *hs;
	int i;

	(void)state;
	mod = start_peer(fk.port, "mod", "--server-id=s1", "--channel=42", "--backoff-ms=400");
	assert_non_null(mod);
	hs = fake_accept();
	assert_non_null(hs);
	json_decref(hs);
	for (i = 1; i <= 2; i++) {
		fake_send(CONNECTED("mod", "\"epoch\":\"E1\""));
		fake_send_close(4004, "Rate limit exceeded.");
		t = now_ms();
		hs = fake_accept();
		assert_non_null(hs);
		json_decref(hs);
		assert_true(now_ms() - t >= 400 << i);
	}
	assert_int_equal(proc_err_count(mod, "(close 4004)"), 2);
	fake_close();
	proc_close_stdin(mod);
	assert_int_equal(proc_wait(mod, T), 0);
}

/* --- resume (spec 7a) against the scripted gateway --------------------- */

static void test_client_resume_mod(void **state)
{
	struct proc *mod;
	json_t *hs, *since;

	(void)state;
	mod = start_peer(fk.port, "mod", "--server-id=s1", "--channel=42", NULL);
	assert_non_null(mod);
	/* the first handshake has no position to give */
	hs = fake_accept();
	assert_non_null(hs);
	assert_string_equal(it_str(json_object_get(hs, "data"), "channel_id"), "42");
	assert_null(since_of(hs));
	json_decref(hs);
	fake_send(CONNECTED("mod", "\"epoch\":\"E1\""));
	fake_msg("bot", "42", 1, "one");
	fake_msg("bot", "42", 2, "two");
	assert_string_equal(next_content(mod, T), "one");
	assert_string_equal(next_content(mod, T), "two");

	/* dropped: the next handshake says what was printed; a seq not past it
	 * is not printed again; a message without seq is printed, as before */
	hs = fake_accept();
	since = since_of(hs);
	assert_string_equal(it_str(since, "epoch"), "E1");
	assert_int_equal(json_integer_value(json_object_get(since, "seq")), 2);
	json_decref(hs);
	fake_send(CONNECTED("mod", "\"epoch\":\"E1\",\"resumed\":true"));
	fake_msg("bot", "42", 2, "two again");
	fake_msg("bot", "42", 1, "one again");
	fake_msg("bot", "42", 3, "three");
	fake_send("{\"type\":\"bot\",\"channel_id\":\"42\",\"msg_id\":\"x\",\"author\":{\"id\":\"a\"},"
	          "\"content\":\"no seq\"}");
	assert_string_equal(next_content(mod, T), "three");
	assert_string_equal(next_content(mod, T), "no seq");

	/* another epoch: positions start again at 0; what was missed is said */
	hs = fake_accept();
	since = since_of(hs);
	assert_int_equal(json_integer_value(json_object_get(since, "seq")), 3);
	json_decref(hs);
	fake_send(CONNECTED("mod", "\"epoch\":\"E2\",\"resumed\":false,\"missed\":4"));
	fake_msg("bot", "42", 1, "new one");
	assert_string_equal(next_content(mod, T), "new one");
	assert_int_equal(proc_err_wait(mod, "4 message(s) could not be resumed", T), 0);
	hs = fake_accept();
	since = since_of(hs);
	assert_string_equal(it_str(since, "epoch"), "E2");
	assert_int_equal(json_integer_value(json_object_get(since, "seq")), 1);
	json_decref(hs);

	fake_close();   /* no gateway: end of input ends the client at once */
	proc_close_stdin(mod);
	assert_int_equal(proc_wait(mod, T), 0);
}

static void test_client_state_file_bot(void **state)
{
	char arg[160], old[160], content[32];
	const char *path = state_path("bot.json");
	json_t *hs, *since, *j;
	struct proc *bot;
	long long seq;

	(void)state;
	snprintf(arg, sizeof(arg), "--state=%s", path);
	snprintf(old, sizeof(old), "%s.old", path);
	bot = start_peer(fk.port, "bot", "--bot-id=b1", arg, NULL);
	assert_non_null(bot);
	hs = fake_accept();   /* no file yet: no positions */
	assert_non_null(hs);
	assert_null(since_of(hs));
	json_decref(hs);
	fake_send(CONNECTED("bot", "\"epoch\":\"E1\""));
	fake_msg("mod", "42", 1, "a1");
	fake_msg("mod", "42", 2, "a2");
	fake_msg("mod", "43", 1, "b1");
	assert_string_equal(next_content(bot, T), "a1");
	assert_string_equal(next_content(bot, T), "a2");
	assert_string_equal(next_content(bot, T), "b1");
	j = state_wait(path, "43", 1);
	assert_non_null(j);
	assert_string_equal(it_str(j, "type"), "bot");
	assert_string_equal(it_str(j, "epoch"), "E1");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "streams"), "42")), 2);
	json_decref(j);
	assert_int_equal(link(path, old), 0);   /* a rewrite in place would show there */

	/* killed (nothing written at exit) and started again: the file resumes it */
	kill(bot->pid, SIGKILL);
	proc_wait(bot, T);
	bot = start_peer(fk.port, "bot", "--bot-id=b1", arg, NULL);
	assert_non_null(bot);
	hs = fake_accept();
	since = since_of(hs);
	assert_string_equal(it_str(since, "epoch"), "E1");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(since, "channels"), "42")), 2);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(since, "channels"), "43")), 1);
	json_decref(hs);
	fake_send(CONNECTED("bot", "\"epoch\":\"E1\",\"resumed\":true"));
	fake_msg("mod", "42", 2, "a2 again");
	fake_msg("mod", "43", 1, "b1 again");
	fake_msg("mod", "42", 3, "a3");
	assert_string_equal(next_content(bot, T), "a3");
	j = state_wait(path, "42", 3);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "streams"), "43")), 1);
	json_decref(j);
	/* replaced by rename: the old name still holds the old positions */
	j = state_wait(old, "42", 2);
	assert_non_null(j);
	json_decref(j);
	assert_int_equal(unlink(old), 0);

	/* many writes while this test reads: every read finds a whole file, and
	 * no temp file is left */
	for (seq = 4; seq <= 200; seq++) {
		snprintf(content, sizeof(content), "a%lld", seq);
		fake_msg("mod", "42", seq, content);
	}
	j = state_wait(path, "42", 200);
	assert_non_null(j);
	json_decref(j);
	assert_int_equal(state_files(), 1);

	fake_close();
	proc_close_stdin(bot);
	assert_int_equal(proc_wait(bot, T), 0);
}

static void test_client_bad_state_exits_2(void **state)
{
	static const char *const bad[][2] = {
		{ "{\"type\":\"mod\",", "line 1" },
		{ "{\"type\":\"bot\",\"epoch\":\"E\",\"streams\":{}}", "a bot's positions" },
		{ "{\"type\":\"mod\",\"streams\":{}}", "\"epoch\"" },
		{ "{\"type\":\"mod\",\"epoch\":\"E\",\"streams\":{\"42\":\"x\"}}", "\"streams\"" },
	};
	struct pollfd pfd = { .fd = fk.lfd, .events = POLLIN };
	const char *path = state_path("mod.json");
	char arg[160];
	struct proc *p;
	size_t i;

	(void)state;
	snprintf(arg, sizeof(arg), "--state=%s", path);
	for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		state_put(path, bad[i][0]);
		p = start_peer(fk.port, "mod", "--server-id=s1", "--channel=42", arg);
		assert_non_null(p);
		assert_int_equal(proc_err_wait(p, "cannot use --state", T), 0);
		assert_int_equal(proc_err_wait(p, bad[i][1], T), 0);
		assert_int_equal(proc_wait(p, T), 2);
	}
	assert_int_equal(poll(&pfd, 1, 0), 0);   /* none of them connected */
}

/* --- resume against the real gateway ----------------------------------- */

/* A --state file of another epoch: the gateway takes the handshake's since.
 * One that speaks 7a names its epoch, which replaces the file's, and its
 * seq 1 (under the file's 5) is printed all the same; an older one sends no
 * seq and the file stays as it was. */
static void test_client_state_handshake_gateway(void **state)
{
	const char *path = state_path("mod.json");
	char arg[160], epoch[128];
	struct proc *mod;
	struct ws *bot;
	json_t *j, *m;

	(void)state;
	state_put(path, "{\"type\":\"mod\",\"epoch\":\"other\",\"streams\":{\"chan-s\":5}}");
	snprintf(arg, sizeof(arg), "--state=%s", path);
	mod = start_peer(gw.port, "mod", "--server-id=srv-s", "--channel=chan-s", arg);
	assert_non_null(mod);
	j = proc_line(mod, "\"connected\"", T);
	assert_non_null(j);
	snprintf(epoch, sizeof(epoch), "%s", it_str(j, "epoch"));
	json_decref(j);
	bot = gw_bot(&gw, "b1");
	assert_non_null(bot);
	assert_int_equal(it_bot_send(bot, "b-1", "chan-s", "hello resume"), 0);
	m = proc_line(mod, "hello resume", T);
	assert_non_null(m);
	if (json_is_integer(json_object_get(m, "seq"))) {
		assert_true(epoch[0] != '\0');
		j = state_wait(path, "chan-s", json_integer_value(json_object_get(m, "seq")));
		assert_non_null(j);
		assert_string_equal(it_str(j, "epoch"), epoch);
	} else {
		proc_close_stdin(mod);   /* exit writes what changed: nothing */
		assert_int_equal(proc_wait(mod, T), 0);
		j = state_wait(path, "chan-s", 5);
		assert_non_null(j);
		assert_string_equal(it_str(j, "epoch"), "other");
	}
	json_decref(j);
	json_decref(m);
	ws_free(bot);
	if (mod->pid > 0) {
		proc_close_stdin(mod);
		assert_int_equal(proc_wait(mod, T), 0);
	}
}

/* A bot restarted with --state prints what it missed and nothing twice. */
static void test_client_state_restart_gateway(void **state)
{
	const char *path = state_path("bot.json");
	char arg[160], health[512] = "";
	struct proc *bot;
	struct ws *mod;
	json_t *j;
	int64_t deadline;

	(void)state;
	snprintf(arg, sizeof(arg), "--state=%s", path);
	bot = start_peer(gw.port, "bot", "--bot-id=b1", arg, NULL);
	assert_non_null(bot);
	j = proc_line(bot, "\"connected\"", T);
	assert_non_null(j);
	json_decref(j);
	mod = gw_mod(&gw, "srv-t", "chan-t");
	assert_non_null(mod);
	assert_int_equal(it_mod_send(mod, "t-1", "srv-t", "chan-t", "first"), 0);
	assert_int_equal(it_mod_send(mod, "t-2", "srv-t", "chan-t", "second"), 0);
	assert_string_equal(next_content(bot, T), "first");
	j = proc_line(bot, "second", T);
	assert_non_null(j);
	if (json_is_integer(json_object_get(j, "seq"))) {   /* a 7a gateway: wait for the file */
		json_t *s = state_wait(path, "chan-t", json_integer_value(json_object_get(j, "seq")));

		assert_non_null(s);
		json_decref(s);
	}
	json_decref(j);
	kill(bot->pid, SIGKILL);
	proc_wait(bot, T);
	/* once the gateway has seen the bot go, "third" is queued for it */
	for (deadline = now_ms() + T; now_ms() < deadline; sleep_ms(20))
		if (http_get(gw.port, "/health", NULL, health, sizeof(health), T) == 200 &&
		    strstr(health, "\"bot\":false"))
			break;
	assert_non_null(strstr(health, "\"bot\":false"));
	assert_int_equal(it_mod_send(mod, "t-3", "srv-t", "chan-t", "third"), 0);

	bot = start_peer(gw.port, "bot", "--bot-id=b1", arg, NULL);
	assert_non_null(bot);
	assert_string_equal(next_content(bot, T), "third");
	assert_int_equal(it_mod_send(mod, "t-4", "srv-t", "chan-t", "fourth"), 0);
	assert_string_equal(next_content(bot, T), "fourth");   /* nothing printed twice between */
	ws_free(mod);
	proc_close_stdin(bot);
	assert_int_equal(proc_wait(bot, T), 0);
}

/* --- homestead-bench smoke run ---------------------------------------- */

/* Runs one scenario with small counts; its line must say ok. */
static void bench(const char *scenario, const char *a1, const char *a2, const char *a3,
                  const char *a4, const char *ok)
{
	char url[128], pid[16], line[2048] = "";
	const char *argv[] = { tool("homestead-bench"), scenario, "--url", url, "--pid", pid,
	                       a1, a2, a3, a4, NULL };
	struct proc *p;
	int rc;

	url_of(url, sizeof(url));
	snprintf(pid, sizeof(pid), "%d", (int)gw.pid);
	p = proc_start(argv);
	assert_non_null(p);
	proc_close_stdin(p);
	proc_line_raw(p, "scenario=", 20000, line, sizeof(line));
	rc = proc_wait(p, 20000);
	if (rc != 0 || !strstr(line, ok))
		fprintf(stderr, "it_tools: bench %s: exit %d: %s\n", scenario, rc, line);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(line, ok));
	assert_non_null(strstr(line, "scenario="));
}

static void test_bench_smoke(void **state)
{
	(void)state;
	bench("flood", "--mods=4", "--channels=2", "--count=400", "--window=8", "delivered_ok=yes");
	bench("fanout", "--mods=5", "--count=100", "--window=8", "--size=50", "delivered_ok=yes");
	bench("rate", "--mods=4", "--rate=400", "--duration=1", "--drain=5", "delivered_ok=yes");
	bench("big", "--mods=2", "--window=2", "--count=6", "--size=1000000", "delivered_ok=yes");
	bench("idle", "--mods=50", "--sample=1", "--concurrency=10", "--drain=1", "all_up=yes");
	bench("churn", "--duration=2", "--concurrency=4", "--drain=1", "--prefix=itc", "all_ok=yes");
	bench("tflood", "--mods=4", "--channels=2", "--count=400", "--window=8", "delivered_ok=yes");
	bench("trate", "--mods=4", "--rate=400", "--duration=1", "--drain=5", "delivered_ok=yes");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_client_mod_bot_exchange, up, down),
		cmocka_unit_test_setup_teardown(test_client_resends_unacked_after_reconnect, up, down),
		cmocka_unit_test_setup_teardown(test_client_replaced_backs_off, up, down),
		cmocka_unit_test_setup_teardown(test_client_key_revoked_exits_3, up, down),
		cmocka_unit_test_setup_teardown(test_client_too_big_not_resent, up_small_body, down),
		cmocka_unit_test_setup_teardown(test_client_reconnects_after_restart, up, down),
		cmocka_unit_test_setup_teardown(test_client_bad_key_exits_3, up, down),
		cmocka_unit_test_setup_teardown(test_client_usage_errors, up, down),
		cmocka_unit_test_setup_teardown(test_client_rate_limit_backs_off_longer, up_fake, down),
		cmocka_unit_test_setup_teardown(test_client_resume_mod, up_fake, down),
		cmocka_unit_test_setup_teardown(test_client_state_file_bot, up_fake, down),
		cmocka_unit_test_setup_teardown(test_client_bad_state_exits_2, up_fake, down),
		cmocka_unit_test_setup_teardown(test_client_state_handshake_gateway, up, down),
		cmocka_unit_test_setup_teardown(test_client_state_restart_gateway, up, down),
		cmocka_unit_test_setup_teardown(test_bench_smoke, up, down),
	};
	char bin[PATH_MAX];

	snprintf(bin, sizeof(bin), "%s", gw_binary());
	snprintf(tool_dir, sizeof(tool_dir), "%s", dirname(bin));
	setenv("HOMESTEAD_KEY", "test-key", 1);   /* --key stays off the process list */
	signal(SIGPIPE, SIG_IGN);
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("it_tools", tests, NULL, NULL);
}
