/*
 * fuzz_config.c - libFuzzer harness for config.c. Each input is written to
 * DIR/gateway.ini (DIR a private mkdtemp folder in $FUZZ_TMPDIR, else
 * /dev/shm, else /tmp, removed at exit) and read with config_defaults + config_load +
 * config_finish, as main() does.
 * Besides the sanitizers it checks what the operator and the rest of the
 * gateway rely on:
 *  - an error is one line that starts with the file's name, and leaves the
 *    config exactly as it was;
 *  - no key value (api_key, websocket, mod_key, bot_key) is ever quoted
 *    back in a message;
 *  - an accepted file gives a config inside every documented range:
 *    a listen address inet_pton accepts, valid keys, absolute clean (or
 *    empty) paths, known level and sync names, and read_timeout >
 *    ping_interval once config_finish accepted it.
 * GATEWAY_API_KEY is unset so every run is the same.
 *
 *   make fuzzers        (into build/fuzz/; make fuzz also runs it)
 *   cp -r test/data/fuzz/config /tmp/corpus
 *   build/fuzz/fuzz_config -dict=test/data/fuzz/config.dict /tmp/corpus
 * (scripts/fuzz.sh does this for both harnesses.)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64], path[128];

static void check(int ok)
{
	if (!ok)
		abort();
}

static void cleanup(void)
{
	if (path[0])
		unlink(path);
	if (dir[0])
		rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* FUZZ_TMPDIR (scripts/fuzz.sh removes it, even after a crash), else
	 * tmpfs if there is one: a disk file rewritten per input is ~15x
	 * slower. */
	const char *bases[] = { getenv("FUZZ_TMPDIR"), "/dev/shm", "/tmp" };

	(void)argc;
	(void)argv;
	unsetenv("GATEWAY_API_KEY");
	for (size_t i = 0; i < sizeof(bases) / sizeof(*bases) && !dir[0]; i++) {
		if (!bases[i] || !*bases[i] || strlen(bases[i]) > sizeof(dir) - 24)
			continue;
		snprintf(dir, sizeof(dir), "%s/fuzz-config.XXXXXX", bases[i]);
		if (!mkdtemp(dir))
			dir[0] = '\0';
	}
	if (!dir[0]) {
		perror("fuzz_config: mkdtemp");
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/gateway.ini", dir);
	atexit(cleanup);
	return 0;
}

static int key_ok(const char *k)
{
	size_t n = strnlen(k, GW_KEY_MAX);

	check(n < GW_KEY_MAX);
	for (; *k; k++)
		if (*k < 0x21 || *k > 0x7e)
			return 0;
	return 1;
}

/* Empty, or absolute and clean: no "//", "/./", "/../", no trailing '/'. */
static int path_ok(const char *p)
{
	size_t n = strnlen(p, PATH_MAX);

	check(n < PATH_MAX);
	if (n == 0)
		return 1;
	if (p[0] != '/')
		return 0;
	if (n > 1 && p[n - 1] == '/')
		return 0;
	return !strstr(p, "//") && !strstr(p, "/./") && !strstr(p, "/../") &&
	       !(n >= 2 && strcmp(p + n - 2, "/.") == 0) &&
	       !(n >= 3 && strcmp(p + n - 3, "/..") == 0);
}

static void check_ranges(const struct gw_config *c)
{
	unsigned char a[16];

	check(strnlen(c->listen, sizeof(c->listen)) < sizeof(c->listen));
	check(inet_pton(AF_INET, c->listen, a) == 1 || inet_pton(AF_INET6, c->listen, a) == 1);
	check(c->http_port >= 0 && c->http_port <= 65535);
	check(key_ok(c->api_key) && key_ok(c->mod_key) && key_ok(c->bot_key));
	check(c->body_size >= GW_MB && c->body_size <= 1024 * GW_MB && c->body_size % GW_MB == 0);
	check(c->queue_max >= 1 && c->queue_max <= 100000);
	check(c->queue_bytes_max >= GW_MB && c->queue_bytes_max <= 1024 * GW_MB &&
	      c->queue_bytes_max % GW_MB == 0);
	check(c->max_connections >= 1 && c->max_connections <= 100000);
	check(c->handshake_timeout >= 1 && c->handshake_timeout <= 86400);
	check(c->ping_interval >= 1 && c->ping_interval <= 86400);
	check(c->read_timeout >= 1 && c->read_timeout <= 86400);
	check(c->write_timeout >= 1 && c->write_timeout <= 86400);
	check(c->bot_probe_timeout >= 1 && c->bot_probe_timeout <= 86400);
	check(c->dedup_window >= 1 && c->dedup_window <= 1000000);
	check(c->rate_limit <= 1000000);
	check(path_ok(c->store_path) && path_ok(c->log_dir));
	check(strcmp(config_sync_name(c->store_sync), "?") != 0);
	check(strcmp(config_level_name(c->log_level), "?") != 0);
	check(c->log_rotation >= 1 && c->log_rotation <= 3650);
	check(strnlen(c->source, PATH_MAX) < PATH_MAX);
}

/* One line, naming the file, never quoting a key's value: a message about
 * a key is "FILE:LINE: key 'K' in [gateway]: REASON", without the value
 * (a value quoted back would follow ": " as '...'). */
static void check_error(const char *err, size_t cap)
{
	static const char *const secret_keys[] = { "api_key", "websocket", "mod_key", "bot_key" };
	size_t plen = strlen(path);
	const char *body = err;
	char needle[64];

	check(memchr(err, '\0', cap) != NULL);
	check(strchr(err, '\n') == NULL);
	if (strncmp(err, path, plen) == 0) {
		body = err + plen;
		if (*body == ':')
			body += 1 + strspn(body + 1, "0123456789");
		if (strncmp(body, ": ", 2) == 0)
			body += 2;
	} else {
		check(strncmp(err, "GATEWAY_API_KEY", 15) == 0 ||
		      strncmp(err, "api_key is empty", 16) == 0);
	}
	for (size_t i = 0; i < sizeof(secret_keys) / sizeof(*secret_keys); i++) {
		snprintf(needle, sizeof(needle), "key '%s' in [gateway]: '", secret_keys[i]);
		check(strncmp(body, needle, strlen(needle)) != 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct gw_config cfg, before;
	char err[1024];
	FILE *f = fopen(path, "we");

	check(f != NULL);
	check(size == 0 || fwrite(data, 1, size, f) == size);
	check(fclose(f) == 0);

	config_defaults(&cfg, dir);
	check_ranges(&cfg);
	before = cfg;
	memset(err, 'x', sizeof(err));
	if (config_load(&cfg, path, err, sizeof(err)) != 0) {
		check_error(err, sizeof(err));
		check(memcmp(&cfg, &before, sizeof(cfg)) == 0);
		return 0;
	}
	check_ranges(&cfg);
	check(strcmp(cfg.source, path) == 0);
	memset(err, 'x', sizeof(err));
	if (config_finish(&cfg, err, sizeof(err)) != 0) {
		check_error(err, sizeof(err));
		check(cfg.api_key[0] == '\0' || cfg.read_timeout <= cfg.ping_interval);
		return 0;
	}
	check_ranges(&cfg);
	check(cfg.api_key[0] != '\0' && cfg.read_timeout > cfg.ping_interval);
	return 0;
}
