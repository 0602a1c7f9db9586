/*
 * ids.c - id high-water marks and the node's identity outside the journal
 * (see ids.h for why).
 *
 * Subtle part: a file is replaced, never rewritten in place, so a crash
 * leaves the old version or the new one, never a torn mix: write
 * NAME.tmp, fsync it, rename over NAME, fsync the directory (the rename
 * itself must be durable before an id of the new lease leaves the node).
 */
#include "io/ids.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chorus.h"

#define IDS_FILE "ids"
#define IDENTITY_FILE "node_id"
#define IDS_FILE_BYTES_MAX 256
#define IDENTITY_HEX_BYTES 32

struct ids {
	char dir[PATH_MAX];
	uint64_t task_next, batch_next; /* leased: ids below may be out */
	int existed;
};

static int fail(char *err, size_t err_len, const char *fmt, const char *path, int e)
{
	snprintf(err, err_len, fmt, path, strerror(e));
	return CH_ERR_STORAGE;
}

/* Replaces DIR/NAME with text, durably (see the top of the file). */
static int file_replace(const char *dir, const char *name, const char *text, char *err,
                        size_t err_len)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name) >= sizeof(tmp))
		return fail(err, err_len, "%s: %s", dir, ENAMETOOLONG);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return fail(err, err_len, "cannot write %s: %s", tmp, errno);
	size_t len = strlen(text);
	ssize_t n = write(fd, text, len);
	int e = n < 0 ? errno : ENOSPC; /* short write of a few bytes: no room */
	if (n == (ssize_t)len && fsync(fd) != 0)
		e = errno, n = -1;
	if (n != (ssize_t)len) {
		close(fd);
		unlink(tmp);
		return fail(err, err_len, "cannot write %s: %s", tmp, e);
	}
	if (close(fd) != 0) {
		e = errno;
		unlink(tmp);
		return fail(err, err_len, "cannot write %s: %s", tmp, e);
	}
	if (rename(tmp, path) != 0) {
		e = errno;
		unlink(tmp);
		return fail(err, err_len, "cannot replace %s: %s", path, e);
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return fail(err, err_len, "cannot sync %s: %s", dir, errno);
	int rc = fsync(dfd);
	e = errno;
	close(dfd);
	if (rc != 0)
		return fail(err, err_len, "cannot sync %s: %s", dir, e);
	return 0;
}

/* Reads DIR/NAME into buf (NUL-terminated). CH_ERR_NOT_FOUND when absent. */
static int file_read(const char *dir, const char *name, char *buf, size_t buf_len, char *err,
                     size_t err_len)
{
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return fail(err, err_len, "%s: %s", dir, ENAMETOOLONG);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return CH_ERR_NOT_FOUND;
		return fail(err, err_len, "cannot read %s: %s", path, errno);
	}
	ssize_t n = read(fd, buf, buf_len - 1);
	int e = errno;
	close(fd);
	if (n < 0)
		return fail(err, err_len, "cannot read %s: %s", path, e);
	buf[n] = '\0';
	return 0;
}

int ids_open(struct ids **out, const char *dir, char *err, size_t err_len)
{
	*out = NULL;
	struct ids *x = calloc(1, sizeof(*x));
	if (!x) {
		snprintf(err, err_len, "out of memory");
		return CH_ERR_NOMEM;
	}
	if ((size_t)snprintf(x->dir, sizeof(x->dir), "%s", dir) >= sizeof(x->dir)) {
		free(x);
		return fail(err, err_len, "%s: %s", dir, ENAMETOOLONG);
	}
	char buf[IDS_FILE_BYTES_MAX];
	int rc = file_read(dir, IDS_FILE, buf, sizeof(buf), err, err_len);
	if (rc == CH_ERR_NOT_FOUND) {
		*out = x;
		return 0;
	}
	if (rc != 0) {
		free(x);
		return rc;
	}
	uint64_t t = 0, b = 0;
	int version = 0;
	if (sscanf(buf, "chorus-ids %d task_next %" SCNu64 " batch_next %" SCNu64, &version, &t,
	           &b) != 3 ||
	    version != 1 || t == 0 || b == 0) {
		snprintf(err, err_len,
		         "%s/%s is not an id high-water mark file: refusing to guess (ids could be "
		         "reused); restore it, or remove it only together with the whole data dir",
		         dir, IDS_FILE);
		free(x);
		return CH_ERR_STORAGE;
	}
	x->task_next = t;
	x->batch_next = b;
	x->existed = 1;
	*out = x;
	return 0;
}

void ids_close(struct ids *x)
{
	free(x);
}

int ids_existed(const struct ids *x)
{
	return x->existed;
}

void ids_marks(const struct ids *x, uint64_t *task_next, uint64_t *batch_next)
{
	*task_next = x->task_next;
	*batch_next = x->batch_next;
}

int ids_reserve(struct ids *x, uint64_t task_end, uint64_t batch_end, char *err, size_t err_len)
{
	if (task_end <= x->task_next && batch_end <= x->batch_next)
		return 0;
	uint64_t t = task_end > x->task_next ? task_end + IDS_LEASE : x->task_next;
	uint64_t b = batch_end > x->batch_next ? batch_end + IDS_LEASE : x->batch_next;
	char text[IDS_FILE_BYTES_MAX];
	snprintf(text, sizeof(text), "chorus-ids 1\ntask_next %" PRIu64 "\nbatch_next %" PRIu64 "\n",
	         t, b);
	int rc = file_replace(x->dir, IDS_FILE, text, err, err_len);
	if (rc != 0)
		return rc;
	x->task_next = t;
	x->batch_next = b;
	x->existed = 1;
	return 0;
}

int ids_identity_get(const char *dir, char *hex, size_t hex_len, char *err, size_t err_len)
{
	char buf[IDENTITY_HEX_BYTES + 8];
	int rc = file_read(dir, IDENTITY_FILE, buf, sizeof(buf), err, err_len);
	if (rc != 0)
		return rc;
	size_t n = strcspn(buf, "\n");
	int ok = n == IDENTITY_HEX_BYTES && hex_len > IDENTITY_HEX_BYTES;
	for (size_t i = 0; ok && i < n; i++)
		ok = (buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f');
	if (!ok) {
		snprintf(err, err_len, "%s/%s does not hold a node id (32 hex digits)", dir,
		         IDENTITY_FILE);
		return CH_ERR_STORAGE;
	}
	memcpy(hex, buf, n);
	hex[n] = '\0';
	return 0;
}

int ids_identity_put(const char *dir, const char *hex, char *err, size_t err_len)
{
	char text[IDENTITY_HEX_BYTES + 2];
	snprintf(text, sizeof(text), "%s\n", hex);
	return file_replace(dir, IDENTITY_FILE, text, err, err_len);
}
