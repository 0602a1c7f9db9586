/*
 * raftlog.h - the durable storage of one node's Raft state: the hard state
 * (term, vote), the log, and a small key/value table, in their own sqlite
 * database DATA_DIR/raft.db (WAL, synchronous = FULL).
 *
 * Why a file of its own: Raft needs the term, the vote and every appended
 * entry on disk before any message that depends on them is sent (Raft §5.2,
 * §5.3; Ongaro's dissertation §3.8). The task journal (store.h) lets the
 * operator choose `synchronous`; this file is FULL whatever they chose, and
 * its commits never wait behind a journal transaction.
 *
 * Shape: the node's loop takes a raft_ready from the core (core/raft.h),
 * calls raftlog_persist() with it, and only after that returned 0 sends the
 * ready's messages and calls raft_advance(). At start-up raftlog_load() gives
 * what raft_create() needs.
 *
 * Schema (PRAGMA user_version 2, application_id RAFTLOG_APP_ID; a version 1
 * file is upgraded in place by adding the two new tables):
 *   hard(id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER, vote BLOB NULL)
 *     one row; vote is RAFT_ID_BYTES bytes or NULL (no vote in this term)
 *   log(idx INTEGER PRIMARY KEY, term INTEGER, type INTEGER, data BLOB)
 *   meta(key TEXT PRIMARY KEY, val BLOB)
 *   base(id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER, term INTEGER,
 *        voters BLOB)
 *     the point just before the first entry of `log` once compacted; no
 *     row: nothing was ever compacted (base index 0)
 *   snapshot(id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER,
 *            term INTEGER, voters BLOB, data BLOB)
 *     the latest snapshot; voters is n * RAFT_ID_BYTES
 *   (base and snapshot are written together, with the deletion of the
 *   entries up to the base, in one transaction.)
 *
 * What is on disk is input from outside: load checks it (indexes
 * base.index+1 .. last with no gap, terms non-decreasing, not below the
 * base's and not above the hard term, known entry types, sizes within
 * RAFT_ENTRY_BYTES_MAX, at most RAFT_LOG_ENTRIES_MAX entries held, indexes
 * up to RAFT_INDEX_MAX, a 16-byte vote or none, the base and the snapshot
 * points of that log) and refuses anything else with ERR_STORAGE and a
 * message naming the row. Open runs PRAGMA quick_check.
 *
 * Errors: ERR_* of lib/err.h. Messages from open go to its err buffer; the
 * others to raftlog_last_error(). Nothing here logs an error itself: the
 * caller decides whether it is fatal and says it once. (Open logs a warning
 * when the WAL's last, never acknowledged, transaction was cut by a crash.)
 *
 * Threading: one thread (the node's loop); the connection is NOMUTEX.
 */
#ifndef CHORUS_IO_RAFTLOG_H
#define CHORUS_IO_RAFTLOG_H

#include <stddef.h>
#include <stdint.h>

#include "core/raft.h"

#define RAFTLOG_DB_NAME "raft.db"
#define RAFTLOG_SCHEMA_VERSION 2
#define RAFTLOG_APP_ID 0x43524654        /* "CRFT": this file is a raft log, not a journal */
#define RAFTLOG_META_KEY_BYTES_MAX 64
#define RAFTLOG_META_VAL_BYTES_MAX (64u * 1024u)

struct raftlog;

/* Opens (creating) DIR/raft.db; DIR must exist. 0, or ERR_STORAGE (or
 * ERR_NOMEM) with a message in err: unreadable or damaged file (quick_check),
 * a raft.db-wal damaged before its end (sqlite would silently drop commits
 * this node acknowledged), a schema of a newer chorusd, a file that is not a
 * raft log. A zero-length raft.db is a new node's empty state. *out is the
 * caller's; raftlog_close. */
int raftlog_open(struct raftlog **out, const char *dir, char *err, size_t err_len);
/* NULL is allowed. Frees what the last load returned. */
void raftlog_close(struct raftlog *l);

/* What was persisted: the hard state; the base (index 0, term 0, no voters
 * when never compacted: the caller supplies its initial voters); the
 * snapshot (snap->at.index 0 and data NULL when none); and every log entry
 * in index order (entries[i].index == base->index + 1 + i). *entries (NULL
 * when *n == 0), their data and snap->data are owned by the raftlog until
 * raftlog_release_loaded, the next load or raftlog_close: raft_create
 * copies them. Beyond the rules above, load checks base.index <= snapshot
 * index <= the last index, a snapshot whenever base.index > 0, entry terms
 * >= the base term, the snapshot's term that of the log at its index,
 * voter blobs of whole ids (1..RAFT_VOTERS_MAX in a base or snapshot row,
 * none all-zero or repeated), snapshot data of at most
 * RAFT_SNAPSHOT_BYTES_MAX. 0, ERR_STORAGE when the file breaks a rule
 * (nothing returned), ERR_NOMEM. */
int raftlog_load(struct raftlog *l, struct raft_hard *hard, struct raft_point *base,
                 struct raft_snapshot *snap, const struct raft_entry **entries, uint32_t *n);
/* Frees the arrays of the last load early (the log may be large). */
void raftlog_release_loaded(struct raftlog *l);

/* Makes the persistent part of a ready durable in ONE transaction: the hard
 * state (when rd->hard_changed), the snapshot (rd->snapshot: it replaces the
 * stored one, becomes the base, and every entry up to its index is
 * deleted), the truncation (rd->truncate_from: every index >= it is
 * deleted; 0: none), then rd->append[0..n_append). Returns once the commit
 * is fsynced. Nothing is written when there is nothing to persist.
 *   0            durable;
 *   ERR_INVALID  the ready would leave a state that load refuses or that
 *                breaks Raft (term going back, a second vote in a term, a
 *                gap, an entry over RAFT_ENTRY_BYTES_MAX, more than
 *                RAFT_LOG_ENTRIES_MAX entries held, a snapshot older than
 *                the stored one, a log kept after a snapshot whose entry
 *                at its index has another term (Raft §7), a truncation
 *                without a snapshot at or below the stored snapshot or
 *                base (committed entries)): a bug of the caller;
 *   ERR_STORAGE  sqlite failed (also: a snapshot over sqlite's blob limit,
 *                SQLITE_LIMIT_LENGTH, 10^9 bytes in a stock build, which
 *                is below RAFT_SNAPSHOT_BYTES_MAX).
 * On any failure nothing of the ready is applied, and the messages that
 * depend on it must not be sent. ERR_STORAGE may be retried with the same
 * ready (a full disk, a lock) unless raftlog_broken() says otherwise. */
int raftlog_persist(struct raftlog *l, const struct raft_ready *rd);
/* Local compaction (after raft_snapshot_take): stores snap (replacing the
 * stored snapshot) and base, and deletes every entry with index <=
 * base->index, in one fsynced transaction; the hard state is not touched.
 * 0; ERR_INVALID when base->index > snap->at.index, snap->at.index is 0 or
 * above the last stored entry or below the stored snapshot's, base->index
 * is below the stored base (compaction never goes back), a point's term is
 * not the log's at its index, voters are not 1..RAFT_VOTERS_MAX distinct
 * non-zero ids, or snap->len > RAFT_SNAPSHOT_BYTES_MAX; ERR_STORAGE as
 * persist (raftlog_broken after an I/O error in the commit). */
int raftlog_compact(struct raftlog *l, const struct raft_snapshot *snap,
                    const struct raft_point *base);

/* 1 once a commit (persist or meta_put) failed with an I/O error: the file
 * may have lost pages the kernel will not report again (a failed fsync), so
 * every later write fails too and the node must stop; a retry cannot help. */
int raftlog_broken(const struct raftlog *l);
/* The last failure of load, persist or meta_*, with its reason (never NULL). */
const char *raftlog_last_error(const struct raftlog *l);

/* Bookkeeping kept durably next to the log (e.g. "bootstrapped", the initial
 * voter set as bytes). Keys are 1..RAFTLOG_META_KEY_BYTES_MAX bytes, values
 * at most RAFTLOG_META_VAL_BYTES_MAX.
 * get: 0 with the value in buf[0..*len); ERR_NOT_FOUND when absent;
 *      ERR_TOO_LARGE when it is longer than cap (*len says how long; buf
 *      untouched); ERR_INVALID for a bad key; ERR_STORAGE.
 * put: inserts or replaces, durable (fsync) on return. 0, ERR_INVALID for a
 *      bad key, ERR_TOO_LARGE, ERR_STORAGE. */
int raftlog_meta_get(struct raftlog *l, const char *key, uint8_t *buf, size_t cap, size_t *len);
int raftlog_meta_put(struct raftlog *l, const char *key, const void *val, size_t len);

#endif
