/*
 * harness.c - runs the real gateway binary for the integration tests.
 *
 * gw_start makes a folder /tmp/homestead-it.XXXXXX, writes gateway.ini there
 * (test defaults merged with the caller's overrides), starts the binary on a
 * free loopback port with its console output in stderr.log, and waits for
 * GET /health to answer 200. Every child started here is remembered until it
 * is reaped; an atexit handler SIGKILLs whatever is left, and each child
 * also gets PR_SET_PDEATHSIG so a test that crashes does not leave a gateway
 * behind either. With GW_VALGRIND set, children run under valgrind and the
 * waits are longer.
 *
 * Not thread-safe: start and stop gateways from one thread (the child dies
 * with the thread that forked it, because of PR_SET_PDEATHSIG).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "harness.h"
#include "wsclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HARNESS_CHILDREN_MAX  64
#define HARNESS_TRIES         5        /* ports tried when bind fails */
#define HARNESS_KEY           "test-key"
#define HARNESS_ARGV_MAX      64

static const char harness_defaults[] =
    "[gateway]\n"
    "listen = 127.0.0.1\n"
    "http_port = %PORT%\n"
    "api_key = " HARNESS_KEY "\n"
    "handshake_timeout = 2\n"
    "ping_interval = 1\n"
    "read_timeout = 3\n"
    "write_timeout = 2\n"
    "bot_probe_timeout = 1\n"
    "max_connections = 64\n"
    "\n"
    "[store]\n"
    "path =\n"
    "\n"
    "[log]\n"
    "level = debug\n"
    "directory = logs\n";

/* Children started and not yet reaped; 0 marks a free slot. */
static pid_t harness_children[HARNESS_CHILDREN_MAX];
static int harness_atexit_set;

static int valgrind_on(void);
static void children_kill_all(void);
static void child_track(pid_t pid);
static void child_untrack(pid_t pid);
static int argv_build(const char **argv, const char *const *args);
static pid_t child_spawn(const char *const *argv, int out_fd);
static int child_wait(pid_t pid, int timeout_ms, int *status);
static int status_code(int status);
static char *file_read(const char *path);
static int file_write(const char *path, const char *text);
static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw);
static int line_parse(const char *line, size_t len, char *name, size_t cap);
static char *text_splice(const char *text, size_t off, size_t del, const char *ins);
static int ini_set(char **text, const char *section, const char *key,
                   const char *line);
static char *ini_merge(const char *base, const char *overrides);
static char *port_apply(const char *ini, int port);
static int port_parse(const char *ini);
static int gw_launch(struct gw_proc *p, int *bind_failed);
static int gw_run_config(struct gw_proc *p, const char *ini, int port_fixed);
static void log_print(struct gw_proc *p, const char *why);
static void sanitizer_check(struct gw_proc *p);
static struct ws *gw_join(struct gw_proc *p, const char *handshake);
static void json_quote(char *out, size_t cap, const char *s);

int
gw_config_replace(struct gw_proc *p, const char *from, const char *to)
{
	char text[8192], *at;
	size_t n;
	FILE *f = fopen(p->config, "r");

	if (!f)
		return -1;
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	if (strlen(from) != strlen(to) || !(at = strstr(text, from)))
		return -1;
	memcpy(at, to, strlen(to));
	if (!(f = fopen(p->config, "w")))
		return -1;
	n = fputs(text, f) < 0;
	return fclose(f) != 0 || n ? -1 : 0;
}

/* ---- small helpers -------------------------------------------------- */

int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int
valgrind_on(void)
{
	const char *v = getenv("GW_VALGRIND");

	return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

const char *
gw_binary(void)
{
	const char *bin = getenv("GW_BIN");

	return bin != NULL && bin[0] != '\0' ? bin : "build/homestead-gateway";
}

pid_t
gw_exec(const struct gw_proc *p)
{
	pid_t pid = fork();

	if (pid == 0) {
		int nul = open("/dev/null", O_WRONLY);

		dup2(nul, 1);
		dup2(nul, 2);
		execl(gw_binary(), gw_binary(), "-c", p->config, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* ---- children ------------------------------------------------------- */

static void
children_kill_all(void)
{
	int i;

	for (i = 0; i < HARNESS_CHILDREN_MAX; i++) {
		if (harness_children[i] <= 0)
			continue;
		kill(harness_children[i], SIGKILL);
		waitpid(harness_children[i], NULL, 0);
		harness_children[i] = 0;
	}
}

static void
child_track(pid_t pid)
{
	int i;

	if (!harness_atexit_set) {
		atexit(children_kill_all);
		harness_atexit_set = 1;
	}
	for (i = 0; i < HARNESS_CHILDREN_MAX; i++) {
		if (harness_children[i] == 0) {
			harness_children[i] = pid;
			return;
		}
	}
	fprintf(stderr, "harness: more than %d children; pid %d untracked\n",
	        HARNESS_CHILDREN_MAX, (int)pid);
}

static void
child_untrack(pid_t pid)
{
	int i;

	for (i = 0; i < HARNESS_CHILDREN_MAX; i++)
		if (harness_children[i] == pid)
			harness_children[i] = 0;
}

/* Fills argv with [valgrind ...] binary args... NULL; returns 0 or -1. */
static int
argv_build(const char **argv, const char *const *args)
{
	static const char *const vg[] = {
		"valgrind", "--error-exitcode=99", "--leak-check=full", "--max-threads=1000",
		"--errors-for-leak-kinds=definite", "--quiet",
	};
	int n = 0;
	size_t i;

	if (valgrind_on())
		for (i = 0; i < sizeof vg / sizeof vg[0]; i++)
			argv[n++] = vg[i];
	argv[n++] = gw_binary();
	for (i = 0; args != NULL && args[i] != NULL; i++) {
		if (n >= HARNESS_ARGV_MAX - 1)
			return -1;
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	return 0;
}

/*
 * Forks and execs argv with stdin from /dev/null and stdout+stderr on
 * out_fd. Returns the child's pid (tracked) or -1. Between fork and exec the
 * child only makes async-signal-safe calls: the test may have threads.
 */
static pid_t
child_spawn(const char *const *argv, int out_fd)
{
	struct rlimit rl;
	sigset_t none;
	pid_t parent = getpid(), pid;
	int null_fd, fd, max_fd = 1024;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		max_fd = rl.rlim_cur > 65536 ? 65536 : (int)rl.rlim_cur;
	null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null_fd < 0)
		return -1;
	sigemptyset(&none);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(null_fd);
		return -1;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
			_exit(127);
		/* Test sockets must not live on in the gateway: a peer would
		 * never see EOF when the test closes its end. */
#ifdef SYS_close_range
		if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
#endif
			for (fd = 3; fd < max_fd; fd++)
				close(fd);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execvp(argv[0], (char *const *)argv);
		{
			static const char msg[] = "harness: exec failed\n";
			ssize_t ignored = write(2, msg, sizeof msg - 1);
			(void)ignored;
		}
		_exit(127);
	}
	close(null_fd);
	child_track(pid);
	return pid;
}

/* Waits up to timeout_ms for pid; 0 and *status when it ended, -1 if not. */
static int
child_wait(pid_t pid, int timeout_ms, int *status)
{
	int64_t deadline = now_ms() + timeout_ms;
	pid_t rc;

	for (;;) {
		rc = waitpid(pid, status, WNOHANG);
		if (rc == pid) {
			child_untrack(pid);
			return 0;
		}
		if (rc < 0 && errno != EINTR) {
			/* Not our child any more (reaped elsewhere). */
			child_untrack(pid);
			*status = 0;
			return 0;
		}
		if (now_ms() >= deadline)
			return -1;
		sleep_ms(10);
	}
}

static int
status_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

/* ---- files ---------------------------------------------------------- */

/* The port is free now, not reserved: gw_start retries on another if the
 * gateway cannot bind it. */
int
gw_free_port(void)
{
	static unsigned seed;
	struct sockaddr_in sa;
	int fd, port, ok;

	if (!seed)
		seed = (unsigned)getpid() ^ (unsigned)now_ms();
	/* below 32768: above is the kernel's ephemeral range, where a port can
	 * be taken by any client's connect meanwhile */
	for (int i = 0; i < 200; i++) {
		seed = seed * 1103515245u + 12345u;
		port = 20000 + (int)((seed >> 8) % 12000);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		memset(&sa, 0, sizeof sa);
		sa.sin_family = AF_INET;
		sa.sin_port = htons((uint16_t)port);
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
		close(fd);
		if (ok)
			return port;
	}
	return -1;
}

/* Returns the whole file as a new NUL-terminated string, or NULL. */
static char *
file_read(const char *path)
{
	char *text = NULL, *nb;
	size_t len = 0, cap = 0;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	for (;;) {
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 65536;
			nb = realloc(text, cap + 1);
			if (nb == NULL)
				goto fail;
			text = nb;
		}
		n = read(fd, text + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	text[len] = '\0';
	return text;
fail:
	close(fd);
	free(text);
	return NULL;
}

static int
file_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");
	int rc = 0;

	if (f == NULL)
		return -1;
	if (fputs(text, f) == EOF)
		rc = -1;
	if (fclose(f) != 0)
		rc = -1;
	return rc;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* ---- ini merging ---------------------------------------------------- */

/*
 * Classifies one ini line: 0 blank or comment, 1 section header (its name
 * into name), 2 key line (its key into name), 3 anything else.
 */
static int
line_parse(const char *line, size_t len, char *name, size_t cap)
{
	const char *end = line + len, *s, *e;

	while (line < end && (*line == ' ' || *line == '\t'))
		line++;
	while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	if (line == end || *line == ';' || *line == '#')
		return 0;
	if (*line == '[') {
		e = memchr(line, ']', (size_t)(end - line));
		if (e == NULL)
			return 3;
		s = line + 1;
		snprintf(name, cap, "%.*s", (int)(e - s), s);
		return 1;
	}
	for (e = line; e < end && *e != '=' && *e != ':'; e++)
		;
	if (e == end)
		return 3;
	while (e > line && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	snprintf(name, cap, "%.*s", (int)(e - line), line);
	return 2;
}

/* Returns a new string: text with del bytes at off replaced by ins. */
static char *
text_splice(const char *text, size_t off, size_t del, const char *ins)
{
	size_t tlen = strlen(text), ilen = strlen(ins);
	char *out = malloc(tlen - del + ilen + 1);

	if (out == NULL)
		return NULL;
	memcpy(out, text, off);
	memcpy(out + off, ins, ilen);
	memcpy(out + off + ilen, text + off + del, tlen - off - del + 1);
	return out;
}

/*
 * In *text (owned, replaced by a new string), puts `line` in `section`
 * ("" = before any header): over the first line of that key if key is
 * given and present, else after the section's last key line, else in a new
 * section at the end. Returns 0 or -1.
 */
static int
ini_set(char **text, const char *section, const char *key, const char *line)
{
	char name[128], *ins = NULL, *out = NULL;
	const char *t = *text, *p, *eol, *next;
	size_t insert_at = 0;
	int in_sec = section[0] == '\0', found = in_sec, kind;

	if (t[0] != '\0' && t[strlen(t) - 1] != '\n') {
		out = text_splice(t, strlen(t), 0, "\n");
		if (out == NULL)
			return -1;
		free(*text);
		*text = out;
		t = out;
	}
	for (p = t; *p != '\0'; p = next) {
		eol = strchr(p, '\n');
		next = eol != NULL ? eol + 1 : p + strlen(p);
		kind = line_parse(p, (size_t)(next - p), name, sizeof name);
		if (kind == 1) {
			in_sec = strcasecmp(name, section) == 0;
			if (in_sec && !found) {
				found = 1;
				insert_at = (size_t)(next - t);
			}
		} else if (kind == 2 && in_sec) {
			if (key != NULL && strcasecmp(name, key) == 0) {
				if (asprintf(&ins, "%s\n", line) < 0)
					return -1;
				out = text_splice(t, (size_t)(p - t), (size_t)(next - p), ins);
				goto done;
			}
			insert_at = (size_t)(next - t);
		}
	}
	if (found) {
		if (asprintf(&ins, "%s\n", line) < 0)
			return -1;
		out = text_splice(t, insert_at, 0, ins);
	} else {
		if (asprintf(&ins, "\n[%s]\n%s\n", section, line) < 0)
			return -1;
		out = text_splice(t, strlen(t), 0, ins);
	}
done:
	free(ins);
	if (out == NULL)
		return -1;
	free(*text);
	*text = out;
	return 0;
}

/* Returns base with the overrides' lines merged in (new string), or NULL.
 * Lines before any section header in overrides belong to [gateway]. */
static char *
ini_merge(const char *base, const char *overrides)
{
	char section[128] = "gateway", name[128], *text, *line;
	const char *p, *eol, *next;
	int kind, rc = 0;

	text = strdup(base);
	if (text == NULL || overrides == NULL)
		return text;
	for (p = overrides; *p != '\0' && rc == 0; p = next) {
		eol = strchr(p, '\n');
		next = eol != NULL ? eol + 1 : p + strlen(p);
		kind = line_parse(p, (size_t)(next - p), name, sizeof name);
		if (kind == 0)
			continue;
		if (kind == 1) {
			snprintf(section, sizeof section, "%s", name);
			continue;
		}
		line = strndup(p, (size_t)(eol != NULL ? eol - p : next - p));
		if (line == NULL) {
			rc = -1;
			break;
		}
		/* A line that is no key=value is kept as is (hostile configs). */
		rc = ini_set(&text, section, kind == 2 ? name : NULL, line);
		free(line);
	}
	if (rc != 0) {
		free(text);
		return NULL;
	}
	return text;
}

/* Returns ini with every "%PORT%" replaced by port (new string), or NULL. */
static char *
port_apply(const char *ini, int port)
{
	char num[16], *text, *out;
	const char *hit;
	size_t off = 0;

	snprintf(num, sizeof num, "%d", port);
	text = strdup(ini);
	while (text != NULL && (hit = strstr(text + off, "%PORT%")) != NULL) {
		off = (size_t)(hit - text);
		out = text_splice(text, off, 6, num);
		free(text);
		text = out;
		off += strlen(num);
	}
	return text;
}

/* The http_port of an ini without %PORT%, or -1. */
static int
port_parse(const char *ini)
{
	char name[128];
	const char *p, *eol, *next, *v;
	int port = -1;

	for (p = ini; *p != '\0'; p = next) {
		eol = strchr(p, '\n');
		next = eol != NULL ? eol + 1 : p + strlen(p);
		if (line_parse(p, (size_t)(next - p), name, sizeof name) == 2 &&
		    strcasecmp(name, "http_port") == 0) {
			v = strpbrk(p, "=:");
			port = atoi(v + 1 + strspn(v + 1, " \t\""));
		}
	}
	return port > 0 && port < 65536 ? port : -1;
}

/* ---- gateway lifecycle ---------------------------------------------- */

static void
log_print(struct gw_proc *p, const char *why)
{
	char *text = file_read(p->log_path);

	fprintf(stderr, "harness: %s (port %d, folder %s kept); its output:\n"
	        "----\n%s----\n", why, p->port, p->dir, text ? text : "(none)\n");
	free(text);
}

/*
 * Starts the binary on p->config and waits for GET /health = 200. Returns
 * 0, or -1 with the child gone (*bind_failed set when its log blames the
 * port).
 */
static int
gw_launch(struct gw_proc *p, int *bind_failed)
{
	const char *argv[HARNESS_ARGV_MAX];
	const char *args[] = { "-c", p->config, NULL };
	int64_t deadline = now_ms() + (valgrind_on() ? 60000 : 10000);
	char body[512], *log;
	int fd, status;

	*bind_failed = 0;
	if (argv_build(argv, args) < 0)
		return -1;
	fd = open(p->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
	          0644);
	if (fd < 0)
		return -1;
	p->pid = child_spawn(argv, fd);
	close(fd);
	if (p->pid < 0) {
		p->pid = 0;
		return -1;
	}
	while (now_ms() < deadline) {
		if (child_wait(p->pid, 0, &status) == 0) {
			p->pid = 0;
			log = file_read(p->log_path);
			*bind_failed = log != NULL && (strcasestr(log, "in use") ||
			                               strcasestr(log, "bind"));
			free(log);
			return -1;
		}
		if (http_get(p->port, "/health", NULL, body, sizeof body, 1000) == 200)
			return 0;
		sleep_ms(20);
	}
	kill(p->pid, SIGKILL);
	child_wait(p->pid, 5000, &status);
	p->pid = 0;
	return -1;
}

/*
 * Writes ini (with %PORT% filled in) to p->config and launches, trying
 * other ports when the gateway could not bind (unless the port is fixed by
 * the ini). Returns 0 or -1 (the log printed).
 */
static int
gw_run_config(struct gw_proc *p, const char *ini, int port_fixed)
{
	char *text;
	int tries, rc = -1, bind_failed = 0;

	for (tries = 0; tries < HARNESS_TRIES; tries++) {
		p->port = port_fixed > 0 ? port_fixed : gw_free_port();
		if (p->port < 0)
			break;
		text = port_apply(ini, p->port);
		if (text == NULL || file_write(p->config, text) < 0) {
			free(text);
			fprintf(stderr, "harness: cannot write %s\n", p->config);
			return -1;
		}
		free(text);
		rc = gw_launch(p, &bind_failed);
		if (rc == 0 || !bind_failed || port_fixed > 0)
			break;
	}
	if (rc != 0)
		log_print(p, p->pid == 0 && bind_failed ? "gateway could not bind" :
		          "gateway did not become healthy");
	return rc;
}

int
gw_start_ini(struct gw_proc *p, const char *ini)
{
	char sub[320];

	memset(p, 0, sizeof *p);
	snprintf(p->dir, sizeof p->dir, "/tmp/homestead-it.XXXXXX");
	if (mkdtemp(p->dir) == NULL) {
		fprintf(stderr, "harness: mkdtemp: %s\n", strerror(errno));
		p->dir[0] = '\0';
		return -1;
	}
	snprintf(p->config, sizeof p->config, "%s/gateway.ini", p->dir);
	snprintf(p->log_path, sizeof p->log_path, "%s/stderr.log", p->dir);
	snprintf(sub, sizeof sub, "%s/logs", p->dir);
	mkdir(sub, 0755);
	snprintf(sub, sizeof sub, "%s/data", p->dir);
	mkdir(sub, 0755);
	return gw_run_config(p, ini, strstr(ini, "%PORT%") ? 0 : port_parse(ini));
}

int
gw_start(struct gw_proc *p, const char *overrides)
{
	char *ini = ini_merge(harness_defaults, overrides);
	int rc;

	if (ini == NULL) {
		memset(p, 0, sizeof *p);
		return -1;
	}
	rc = gw_start_ini(p, ini);
	free(ini);
	return rc;
}

int
gw_restart(struct gw_proc *p)
{
	char line[64], old[320], *ini;
	int tries, rc = -1, bind_failed = 0;

	if (p->pid > 0 || p->dir[0] == '\0')
		return -1;
	/* Keep the previous run's output beside the new one. */
	snprintf(old, sizeof old, "%s.1", p->log_path);
	rename(p->log_path, old);
	for (tries = 0; tries < HARNESS_TRIES; tries++) {
		if (tries > 0) {
			/* The old port is taken: move to a free one. */
			ini = file_read(p->config);
			p->port = gw_free_port();
			snprintf(line, sizeof line, "http_port = %d", p->port);
			if (ini == NULL || p->port < 0 ||
			    ini_set(&ini, "gateway", "http_port", line) < 0 ||
			    file_write(p->config, ini) < 0) {
				free(ini);
				break;
			}
			free(ini);
		}
		rc = gw_launch(p, &bind_failed);
		if (rc == 0 || !bind_failed)
			break;
	}
	if (rc != 0)
		log_print(p, "gateway did not restart");
	return rc;
}

int
gw_stop(struct gw_proc *p, int sig, int timeout_ms)
{
	int status;

	if (p->pid <= 0)
		return -1;
	/* Valgrind's leak check at exit is slow. */
	if (valgrind_on() && timeout_ms < 30000)
		timeout_ms *= 6;
	kill(p->pid, sig);
	if (child_wait(p->pid, timeout_ms, &status) == 0) {
		p->pid = 0;
		sanitizer_check(p);
		return status_code(status);
	}
	fprintf(stderr, "harness: gateway pid %d still running %d ms after "
	        "signal %d; killing it\n", (int)p->pid, timeout_ms, sig);
	kill(p->pid, SIGKILL);
	child_wait(p->pid, 5000, &status);
	p->pid = 0;
	return -1;
}

/* A sanitizer or valgrind report in the gateway's output fails the whole
 * suite loudly, whatever the test itself checked. */
static void
sanitizer_check(struct gw_proc *p)
{
	static const char *marks[] = { "ERROR: AddressSanitizer", "WARNING: ThreadSanitizer",
	                               "runtime error:", "ERROR: LeakSanitizer",
	                               "definitely lost: " };

	for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
		if (gw_log_contains(p, marks[i]) &&
		    !(i == 4 && gw_log_contains(p, "definitely lost: 0 bytes"))) {
			log_print(p, "sanitizer report in the gateway's output");
			_exit(70);
		}
	}
}

void
gw_cleanup(struct gw_proc *p)
{
	int status;

	if (p->pid > 0) {
		kill(p->pid, SIGKILL);
		child_wait(p->pid, 5000, &status);
		p->pid = 0;
	}
	if (p->dir[0] != '\0')
		sanitizer_check(p);
	if (p->dir[0] != '\0')
		nftw(p->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	p->dir[0] = '\0';
}

int
gw_log_contains(struct gw_proc *p, const char *needle)
{
	char *text = file_read(p->log_path);
	int found;

	found = text != NULL && strstr(text, needle) != NULL;
	free(text);
	return found;
}

int
gw_run(char *out, size_t cap, const char *const *args)
{
	const char *argv[HARNESS_ARGV_MAX];
	int64_t deadline = now_ms() + (valgrind_on() ? 60000 : 10000);
	struct pollfd pfd;
	size_t len = 0;
	char chunk[4096];
	int fds[2], status, rc = -1, left;
	ssize_t n;
	pid_t pid;

	if (out != NULL && cap > 0)
		out[0] = '\0';
	if (argv_build(argv, args) < 0 || pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	pid = child_spawn(argv, fds[1]);
	close(fds[1]);
	if (pid < 0) {
		close(fds[0]);
		return -1;
	}
	pfd.fd = fds[0];
	pfd.events = POLLIN;
	for (;;) {
		left = (int)(deadline - now_ms());
		if (left <= 0)
			break;
		n = poll(&pfd, 1, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		n = read(fds[0], chunk, sizeof chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		/* Keep reading past cap so the child never blocks on a full pipe. */
		if (out != NULL && len + 1 < cap) {
			size_t take = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;
			memcpy(out + len, chunk, take);
			len += take;
			out[len] = '\0';
		}
	}
	close(fds[0]);
	left = (int)(deadline - now_ms());
	if (child_wait(pid, left > 0 ? left : 0, &status) == 0) {
		rc = status_code(status);
	} else {
		fprintf(stderr, "harness: %s did not finish in time; killed\n",
		        gw_binary());
		kill(pid, SIGKILL);
		child_wait(pid, 5000, &status);
	}
	return rc;
}

/* ---- peers ---------------------------------------------------------- */

/* Writes s as a JSON string (quotes included) into out. */
static void
json_quote(char *out, size_t cap, const char *s)
{
	size_t o = 0;

	if (cap < 3) {
		if (cap > 0)
			out[0] = '\0';
		return;
	}
	out[o++] = '"';
	for (; *s != '\0' && o + 8 < cap; s++) {
		if (*s == '"' || *s == '\\') {
			out[o++] = '\\';
			out[o++] = *s;
		} else if ((unsigned char)*s < 0x20) {
			o += (size_t)snprintf(out + o, cap - o, "\\u%04x",
			                      (unsigned)(unsigned char)*s);
		} else {
			out[o++] = *s;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
}

/* Connects with the test key, sends handshake, waits for "connected". */
static struct ws *
gw_join(struct gw_proc *p, const char *handshake)
{
	int ms = 2000 * gw_slack(p);
	struct ws *w;
	char *ack;
	int code;

	w = ws_connect(p->port, "/sync?api_key=" HARNESS_KEY, NULL, ms);
	if (w == NULL || w->http_status != 101) {
		if (w != NULL)
			fprintf(stderr, "harness: upgrade refused: %d %s\n",
			        w->http_status, w->http_body);
		goto fail;
	}
	if (ws_send_text(w, handshake) < 0)
		goto fail;
	ack = ws_recv_text(w, ms, &code);
	if (ack == NULL || strstr(ack, "connected") == NULL) {
		fprintf(stderr, "harness: handshake %s answered %s (close %d)\n",
		        handshake, ack ? ack : "nothing", code);
		free(ack);
		goto fail;
	}
	free(ack);
	return w;
fail:
	ws_free(w);
	return NULL;
}

struct ws *
gw_mod(struct gw_proc *p, const char *server_id, const char *channel)
{
	char sid[256], ch[256], hs[600];

	json_quote(sid, sizeof sid, server_id);
	json_quote(ch, sizeof ch, channel);
	snprintf(hs, sizeof hs,
	         "{\"type\":\"mod\",\"data\":{\"server_id\":%s,\"channel_id\":%s}}",
	         sid, ch);
	return gw_join(p, hs);
}

struct ws *
gw_bot(struct gw_proc *p, const char *bot_id)
{
	char bid[256], hs[400];

	json_quote(bid, sizeof bid, bot_id);
	snprintf(hs, sizeof hs, "{\"type\":\"bot\",\"data\":{\"bot_id\":%s}}", bid);
	return gw_join(p, hs);
}

long
gw_rss_kb(struct gw_proc *p)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)p->pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

int
gw_runtime(struct gw_proc *p)
{
	const char *vg = getenv("GW_VALGRIND");
	char path[64], line[512];
	FILE *f;
	int kind = 0;

	if (vg && vg[0] && strcmp(vg, "0") != 0)
		return 'v';
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)p->pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (!kind && fgets(line, sizeof(line), f))
		kind = strstr(line, "libasan") ? 'a' : strstr(line, "libtsan") ? 't' : 0;
	fclose(f);
	return kind;
}

int
gw_slack(struct gw_proc *p)
{
	switch (gw_runtime(p)) {
	case 'a': return 2;
	case 't': return 3;
	case 'v': return 6;
	default: return 1;
	}
}
