/*
 * ids.h - what must outlive the journal: the task and batch id high-water
 * marks and the node's identity, in two small files beside chorus.db.
 *
 * A task id must never be reused by a node: a client holding an old id must
 * never read another task. The journal alone cannot promise that: a
 * zero-length chorus.db starts an empty journal, and damaged WAL frames are
 * dropped by sqlite without a word, taking the highest ids with them. So
 * ids are leased from a file outside the database (DATA_DIR/ids): before
 * an id at or above the leased mark is handed out, the mark is moved
 * IDS_LEASE ids ahead and the file is replaced atomically (write a
 * temporary file, fsync, rename, fsync the directory). At start the next
 * id is the larger of the journal's highest id + 1 and the leased mark, so
 * after any loss of the journal ids go on above everything handed out,
 * leaving a gap of at most IDS_LEASE.
 *
 * DATA_DIR/node_id holds the node's identity (32 hex digits), so that a
 * journal younger than the identity (lost, replaced) is noticed.
 *
 * Files: "chorus-ids 1\ntask_next N\nbatch_next M\n" and "<hex>\n".
 * Threading: the loop thread only. Errors: 0 or CH_ERR_STORAGE (err set).
 */
#ifndef CHORUS_IO_IDS_H
#define CHORUS_IO_IDS_H

#include <stddef.h>
#include <stdint.h>

#define IDS_LEASE 10000u /* ids leased per write of the file */

struct ids;

/* Reads DIR/ids (absent: marks 0, ids_existed() = 0). A file that exists
 * but does not parse is an error: it must not be guessed around. */
int ids_open(struct ids **out, const char *dir, char *err, size_t err_len);
void ids_close(struct ids *x);
int ids_existed(const struct ids *x);

/* The leased marks: every id below them may have been handed out. */
void ids_marks(const struct ids *x, uint64_t *task_next, uint64_t *batch_next);

/* Makes sure task ids below task_end and batch ids below batch_end are
 * leased, writing the file (IDS_LEASE ahead) when they are not. */
int ids_reserve(struct ids *x, uint64_t task_end, uint64_t batch_end, char *err,
                size_t err_len);

/* DIR/node_id: 0 and the hex id (hex_len >= 33), CH_ERR_NOT_FOUND when
 * absent, CH_ERR_STORAGE when unreadable or malformed. */
int ids_identity_get(const char *dir, char *hex, size_t hex_len, char *err, size_t err_len);
int ids_identity_put(const char *dir, const char *hex, char *err, size_t err_len);

#endif
