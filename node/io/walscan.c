/*
 * walscan.c - see walscan.h. Pure over a buffer; walscan_file reads the file
 * whole (a WAL is bounded by sqlite's auto-checkpoint, a few MiB here).
 */
#include "io/walscan.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WAL_HEADER 32
#define FRAME_HEADER 24
#define WAL_MAGIC 0x377f0682u /* low bit: checksums of big-endian words */
#define WAL_VERSION 3007000u
#define WAL_FILE_MAX (256u * 1024u * 1024u)

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* sqlite's WAL checksum: over 32-bit words, two at a time, continuing
 * from s[0], s[1]. n is a multiple of 8. */
static void wal_sum(int big, const uint8_t *p, size_t n, uint32_t s[2])
{
	uint32_t s0 = s[0], s1 = s[1];
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint32_t a = big ? be32(p + i) : le32(p + i);
		uint32_t b = big ? be32(p + i + 4) : le32(p + i + 4);
		s0 += a + s1;
		s1 += b + s0;
	}
	s[0] = s0;
	s[1] = s1;
}

int walscan_buf(const uint8_t *wal, size_t len, struct walscan *out)
{
	memset(out, 0, sizeof(*out));
	if (len < WAL_HEADER)
		return -1;
	uint32_t magic = be32(wal);
	uint32_t page = be32(wal + 8);
	int big = (int)(magic & 1);
	uint32_t sum[2] = {0, 0};
	wal_sum(big, wal, 24, sum);
	/* a page size is a power of two from 512 to 65536 */
	if ((magic & ~1u) != WAL_MAGIC || be32(wal + 4) != WAL_VERSION || page < 512 || page > 65536 ||
	    (page & (page - 1)) ||
	    sum[0] != be32(wal + 24) || sum[1] != be32(wal + 28)) {
		out->header_bad = 1;
		return 0;
	}
	const uint8_t *salt = wal + 16;
	size_t frame = FRAME_HEADER + (size_t)page;
	size_t nframes = (len - WAL_HEADER) / frame;
	uint32_t valid = 0, valid_commits = 0; /* up to the last valid commit */
	uint32_t run = 0, run_commits = 0;      /* valid frames since it */
	size_t i = 0;
	for (; i < nframes; i++) {
		const uint8_t *f = wal + WAL_HEADER + i * frame;
		if (memcmp(f + 8, salt, 8) != 0 || be32(f) == 0)
			break;
		wal_sum(big, f, 8, sum);
		wal_sum(big, f + FRAME_HEADER, page, sum);
		if (sum[0] != be32(f + 16) || sum[1] != be32(f + 20))
			break;
		run++;
		if (be32(f + 4) != 0) { /* a commit frame ends a transaction */
			run_commits++;
			valid += run;
			valid_commits += run_commits;
			run = run_commits = 0;
		}
	}
	out->frames_valid = valid;
	out->commits_valid = valid_commits;
	if (i < nframes) {
		/* the frames of a transaction never committed are no loss; a
		 * commit frame written after the damage is */
		uint32_t lost = run, lost_commits = 0;
		size_t last_commit = 0;
		for (size_t j = i; j < nframes; j++) {
			const uint8_t *f = wal + WAL_HEADER + j * frame;
			if (memcmp(f + 8, salt, 8) != 0)
				continue;
			lost++;
			if (be32(f + 4) != 0) {
				lost_commits++;
				last_commit = j;
			}
		}
		if (lost_commits) {
			out->frames_lost = lost;
			out->commits_lost = lost_commits;
			out->first_bad = (uint32_t)i;
			/* one commit, the file's last, past the break: what a crash
			 * inside that commit can leave (sqlite writes the commit
			 * frame before it rewrites the checksums of frames the same
			 * transaction overwrote in place), not necessarily damage */
			out->last_txn_only = lost_commits == 1 && last_commit + 1 == nframes;
		}
	}
	return 0;
}

int walscan_file(const char *path, struct walscan *out)
{
	memset(out, 0, sizeof(*out));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 1 : -1;
	struct stat stbuf;
	if (fstat(fd, &stbuf) != 0 || stbuf.st_size < 0) {
		close(fd);
		return -1;
	}
	if ((uint64_t)stbuf.st_size > WAL_FILE_MAX) {
		close(fd);
		errno = EFBIG;
		return -1;
	}
	size_t len = (size_t)stbuf.st_size;
	if (len < WAL_HEADER) {
		close(fd);
		return 1;
	}
	uint8_t *buf = malloc(len);
	if (!buf) {
		close(fd);
		return -1;
	}
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	int rc = walscan_buf(buf, got, out);
	free(buf);
	return rc < 0 ? 1 : 0;
}
