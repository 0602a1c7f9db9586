/*
 * walscan.h - reads a sqlite WAL file before sqlite does, to say what
 * sqlite's recovery will drop without a word.
 *
 * sqlite replays a WAL up to the first frame whose checksum or salt does not
 * match, and ignores everything after it. Frames after that point that still
 * carry the WAL's current salts were written in this WAL's generation: they
 * are commits sqlite is about to lose (random damage, or the torn tail of a
 * power loss). Frames with other salts are leftovers of an earlier
 * generation, the WAL's normal end. Format: sqlite.org/fileformat2.html.
 */
#ifndef CHORUS_WALSCAN_H
#define CHORUS_WALSCAN_H

#include <stddef.h>
#include <stdint.h>

struct walscan {
	uint32_t frames_valid;   /* replayed by sqlite */
	uint32_t commits_valid;  /* of which commit frames */
	/* set only when a commit frame is among them (a transaction cut
	 * short by a crash, never committed, is no loss): */
	uint32_t frames_lost;    /* after the last good commit, with the current salts */
	uint32_t commits_lost;   /* of which commit frames */
	uint32_t first_bad;      /* index of the first bad frame, from 0 (when frames_lost) */
	int last_txn_only;       /* the one commit lost is the file's last frame */
	int header_bad;          /* a header that sqlite will not use: the whole WAL is ignored */
};

/* Scans a WAL image in memory. Returns 0 (out filled) or -1 when there is
 * no WAL to speak of (shorter than its header). */
int walscan_buf(const uint8_t *wal, size_t len, struct walscan *out);

/* Scans the file at path. Returns 0 (out filled), 1 when there is no such
 * file or it is shorter than a header, -1 when it cannot be read (errno;
 * EFBIG over 256 MiB: sqlite checkpoints long before). */
int walscan_file(const char *path, struct walscan *out);

#endif
