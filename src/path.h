/*
 * path.h - file-system paths: absolute paths built without touching the
 * disk, and mkdir -p. Thread-safe (no globals).
 */
#ifndef GW_PATH_H
#define GW_PATH_H

#include <stddef.h>

/* out = base + "/" + rel, or rel when it is absolute, cleaned lexically: no
 * "//", "." or "..", no trailing '/' (the file need not exist, unlike
 * realpath). base must be absolute. Returns 0, or -1 if it does not fit. */
int path_absolute(char *out, size_t outlen, const char *base, const char *rel);

/* mkdir -p dir (mode 0750 for what it creates); dir must then be a
 * folder. Returns 0, or -1 with errno set. */
int path_mkdirs(const char *dir);

#endif
