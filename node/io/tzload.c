/*
 * tzload.c - reads TZif files from tzdata and caches the parsed zones (see
 * tzload.h). The parsing itself is the pure core's (core/tz.c).
 */
#include "io/tzload.h"

#include "lib/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIR_BYTES_MAX 512u

struct tzcache {
	char dir[DIR_BYTES_MAX];
	uint32_t count;
	struct tz *zones[TZCACHE_ZONES_MAX];
};

struct tzcache *tzcache_new(const char *dir)
{
	struct tzcache *c = calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	snprintf(c->dir, sizeof c->dir, "%s", dir != NULL ? dir : TZLOAD_DIR_DEFAULT);
	return c;
}

void tzcache_free(struct tzcache *c)
{
	if (c == NULL)
		return;
	for (uint32_t i = 0; i < c->count; i++)
		tz_free(c->zones[i]);
	free(c);
}

static bool name_char_ok(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '_' || ch == '-' || ch == '+' || ch == '/';
}

int tzload_check_name(const char *name, char *err, size_t err_bytes)
{
	size_t n = strnlen(name, TZ_NAME_BYTES_MAX);
	bool ok = n > 0 && n < TZ_NAME_BYTES_MAX;
	for (size_t i = 0; ok && i < n; i++) {
		if (!name_char_ok(name[i]) && name[i] != '.')
			ok = false;
		/* a component may not be empty or start with '.' ("..", ".hidden") */
		bool starts = i == 0 || name[i - 1] == '/';
		if (starts && (name[i] == '/' || name[i] == '.'))
			ok = false;
	}
	if (ok && name[n - 1] == '/')
		ok = false;
	if (!ok) {
		snprintf(err, err_bytes,
		         "bad time zone name \"%.*s\" (an IANA name like Europe/London: letters, digits, _ - + /)",
		         (int)(TZ_NAME_BYTES_MAX - 1), name);
		return ERR_INVALID;
	}
	return ERR_OK;
}

/* Reads and parses dir/name. */
static int load(const char *dir, const char *name, struct tz **out, char *err, size_t err_bytes)
{
	char path[DIR_BYTES_MAX + TZ_NAME_BYTES_MAX + 2];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		if (fd < 0 && e != ENOENT && e != ENOTDIR)
			snprintf(err, err_bytes, "time zone \"%s\": %s: %s", name, path, strerror(e));
		else
			snprintf(err, err_bytes, "unknown time zone \"%s\"", name);
		return ERR_NOT_FOUND;
	}
	if (st.st_size > (off_t)TZLOAD_FILE_BYTES_MAX) {
		close(fd);
		snprintf(err, err_bytes, "time zone \"%s\": file is larger than %u bytes", name,
		         TZLOAD_FILE_BYTES_MAX);
		return ERR_TOO_LARGE;
	}
	uint8_t *buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		close(fd);
		snprintf(err, err_bytes, "time zone \"%s\": out of memory", name);
		return ERR_NOMEM;
	}
	size_t len = 0, want = (size_t)st.st_size;
	for (int round = 0; len < want && round < 1024; round++) {
		ssize_t r = read(fd, buf + len, want - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	int rc = tz_parse(buf, len, name, out, err, err_bytes);
	free(buf);
	return rc;
}

int tzcache_get(struct tzcache *c, const char *name, const struct tz **out, char *err,
                size_t err_bytes)
{
	*out = NULL;
	if (strcmp(name, "UTC") == 0) {
		*out = tz_utc();
		return ERR_OK;
	}
	int rc = tzload_check_name(name, err, err_bytes);
	if (rc != ERR_OK)
		return rc;
	for (uint32_t i = 0; i < c->count; i++)
		if (strcmp(c->zones[i]->name, name) == 0) {
			*out = c->zones[i];
			return ERR_OK;
		}
	if (c->count >= TZCACHE_ZONES_MAX) {
		snprintf(err, err_bytes, "time zone \"%s\": the cache holds %u zones already", name,
		         TZCACHE_ZONES_MAX);
		return ERR_FULL;
	}
	struct tz *z;
	rc = load(c->dir, name, &z, err, err_bytes);
	if (rc != ERR_OK)
		return rc;
	c->zones[c->count++] = z;
	*out = z;
	return ERR_OK;
}
