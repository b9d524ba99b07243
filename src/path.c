/*
 * path.c - file-system paths: lexical clean-up and absolute paths for the
 * configuration, mkdir -p for the log and store folders.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "path.h"

/* Lexical clean of an absolute path: no "//", "." or "..", no trailing
 * '/'. The file need not exist (unlike realpath). Output fits in place: it
 * is never longer than the input. */
static void path_clean(char *path)
{
	char out[2 * PATH_MAX + 2];
	const char *r = path, *seg;
	size_t o = 0, n;

	while (*r) {
		while (*r == '/')
			r++;
		seg = r;
		while (*r && *r != '/')
			r++;
		n = (size_t)(r - seg);
		if (n == 0 || (n == 1 && seg[0] == '.'))
			continue;
		if (n == 2 && seg[0] == '.' && seg[1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;            /* the '/' before it */
			continue;
		}
		if (o + 1 + n >= sizeof(out))
			break;          /* cannot happen: out is as big as path's buffer */
		out[o++] = '/';
		memcpy(out + o, seg, n);
		o += n;
	}
	if (o == 0)
		out[o++] = '/';
	memcpy(path, out, o);
	path[o] = '\0';
}

int path_absolute(char *out, size_t outlen, const char *base, const char *rel)
{
	char tmp[2 * PATH_MAX + 2];
	int n;

	if (rel[0] == '/')
		n = snprintf(tmp, sizeof(tmp), "%s", rel);
	else
		n = snprintf(tmp, sizeof(tmp), "%s/%s", base, rel);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -1;
	path_clean(tmp);
	if (strlen(tmp) >= outlen)
		return -1;
	memcpy(out, tmp, strlen(tmp) + 1);
	return 0;
}

int path_mkdirs(const char *dir)
{
	char tmp[PATH_MAX];
	struct stat st;
	size_t i, n = strlen(dir);

	if (n == 0 || n >= sizeof(tmp)) {
		errno = n ? ENAMETOOLONG : ENOENT;
		return -1;
	}
	memcpy(tmp, dir, n + 1);
	for (i = 1; i <= n; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		tmp[i] = '\0';
		if (mkdir(tmp, 0750) < 0 && errno != EEXIST)
			return -1;
		tmp[i] = dir[i];
	}
	if (stat(dir, &st) < 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}
