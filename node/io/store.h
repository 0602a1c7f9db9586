/*
 * store.h - the journal: one sqlite database (WAL) in the node's data dir.
 *
 * Owns everything chorusd persists: tasks (spec, state, result), batches
 * and node metadata (node id, id counters). The node's loop opens one write
 * transaction per loop iteration (store_begin ... store_commit), so every
 * request handled in that iteration shares one commit (group commit); it
 * sends acknowledgements only after store_commit returned 0.
 *
 * Durability: `synchronous` is a setting (OFF, NORMAL, FULL, EXTRA). In WAL
 * mode NORMAL survives a process crash (kill -9) but may lose the last
 * commits on power loss; FULL survives power loss. See README.
 *
 * Schema (version 3; version 1 lacks idem, version 2 has full indexes on
 * state and finished_ms; both are migrated at open):
 *   meta(key TEXT PRIMARY KEY, value TEXT)
 *   tasks(id INTEGER PRIMARY KEY, batch_id, batch_index, handler, payload BLOB,
 *         argv TEXT (JSON array), timeout_ms, restart, max_attempts, backoff_ms,
 *         pool, state, attempts, exit_code, output BLOB, error, node,
 *         submitted_ms, started_ms, finished_ms)
 *     index on (batch_id, batch_index); partial ones (store.c, version 3) on
 *     state for queued and running tasks, on state for failed, timed out,
 *     cancelled and lost ones, and on finished_ms for ended ones
 *   batches(id INTEGER PRIMARY KEY, total, max_concurrency, deadline_ms, created_ms)
 *   idem(key BLOB PRIMARY KEY, kind (1 task, 2 batch), id, created_ms)
 *     index on (created_ms)
 *
 * Statements are prepared once at open. Threading: one thread (the loop).
 */
#ifndef CHORUS_IO_STORE_H
#define CHORUS_IO_STORE_H

#include <stddef.h>
#include <stdint.h>

struct task;
struct batch;
struct store;

enum store_sync { STORE_SYNC_OFF = 0, STORE_SYNC_NORMAL = 1, STORE_SYNC_FULL = 2, STORE_SYNC_EXTRA = 3 };
/* Parses "off|normal|full|extra"; -1 when none. */
int store_sync_parse(const char *s);
const char *store_sync_name(int sync);

/* Opens (creating) DIR/chorus.db. 0, or CH_ERR_STORAGE with err set (not
 * logged: the caller says it once; a full file system is named). */
/* mkdir -p dir (0700). 0, or -1 with errno. */
int store_make_dirs(const char *dir);
int store_open(struct store **out, const char *dir, int synchronous, char *err, size_t err_len);
void store_close(struct store *st);
/* 1 when this open created the journal (an empty or missing chorus.db). */
int store_created(const struct store *st);
/* sqlite's PRAGMA quick_check: 0 when it says ok, else CH_ERR_STORAGE and
 * its first findings in msg. O(size of the journal). */
int store_quick_check(struct store *st, char *msg, size_t msg_len);

/* Quiet: failures are logged at debug level only, because the caller
 * reports them itself (the loop's commit: once, then reminders). */
void store_set_quiet(struct store *st, int quiet);
/* The last failure, "what: sqlite's message" (never NULL). */
const char *store_last_error(const struct store *st);

int store_begin(struct store *st);   /* BEGIN IMMEDIATE; nesting not allowed */
int store_commit(struct store *st);  /* COMMIT */
int store_rollback(struct store *st);
/* The transaction begun last changed rows (an empty commit proves nothing
 * about the disk). */
int store_tx_wrote(const struct store *st);

/* Journal metrics (/metrics): commits that wrote rows, their latency in
 * STORE_COMMIT_BUCKETS buckets with upper bounds store_commit_bounds_us
 * (the last bucket counts the slower ones), commits that failed, and the
 * journal's size on disk (chorus.db and its WAL, stat'ed at the call). */
#define STORE_COMMIT_BUCKETS 15
extern const uint64_t store_commit_bounds_us[STORE_COMMIT_BUCKETS - 1];
struct store_stats {
	uint64_t commits, commit_failures;
	uint64_t commit_buckets[STORE_COMMIT_BUCKETS];
	uint64_t commit_sum_ns;
	uint64_t db_bytes, wal_bytes;
};
void store_stats_get(const struct store *st, struct store_stats *out);

/* Insert or update the whole row (INSERT OR REPLACE is fine; keep it cheap:
 * update only mutable columns when the row exists: see store.c).
 * Added: CH_ERR_INVALID (nothing written) when an argv string is not UTF-8,
 * since argv is journaled as a JSON array. */
int store_task_put(struct store *st, const struct task *t);
/* The hot path's write for a task whose row exists (tasks.h: t->durable):
 * one narrow UPDATE by id of the columns its state can have changed: a
 * live (queued, running) task's state, attempts, started_ms, node and
 * error; a final task's (or one carrying a result) also exit_code, output
 * and finished_ms. The
 * spec (handler, payload, argv, options) is never written again. When no
 * row has that id it writes the whole row (store_task_put), so a wrong
 * guess costs a statement, never a change. */
int store_task_update(struct store *st, const struct task *t);
int store_batch_put(struct store *st, const struct batch *b);

/* Loads tasks whose state is queued or running, oldest first; calls cb
 * with a malloc'd task (cb owns it). Stops early if cb returns non-zero. */
int store_load_unfinished(struct store *st, int (*cb)(void *arg, struct task *t), void *arg);
/* Loads batches that still have unfinished tasks; b is a stack copy with
 * `done` counted from the tasks table. */
int store_load_open_batches(struct store *st, int (*cb)(void *arg, const struct batch *b),
                            void *arg);

/* One task by id; *out malloc'd (caller task_free). CH_ERR_NOT_FOUND. */
int store_task_get(struct store *st, uint64_t id, struct task **out);
/* Batch record (done counted). CH_ERR_NOT_FOUND. */
int store_batch_get(struct store *st, uint64_t id, struct batch *out);
/* Tasks of a batch with batch_index >= from, in index order, at most max;
 * cb owns each task. */
int store_batch_tasks(struct store *st, uint64_t batch_id, uint32_t from, uint32_t max,
                      int (*cb)(void *arg, struct task *t), void *arg);
/* Newest first; state 0 = any. A limit (or max above) of 0 yields no rows:
 * callers apply their own default. Callbacks must not call into the store. */
int store_task_list(struct store *st, int state, uint32_t limit,
                    int (*cb)(void *arg, struct task *t), void *arg);

/* Deletes final tasks with finished_ms < before_ms, and batches left empty.
 * At most `max_rows` per call (bounded work per loop iteration). Returns
 * the number deleted, or a negative code. */
int store_purge(struct store *st, uint64_t before_ms, uint32_t max_rows);

/* Highest task id and batch id in the journal (0 if none). Never goes
 * back after a purge: purge keeps high-water marks in meta under the
 * reserved keys "task_id_hw" and "batch_id_hw". */
int store_max_ids(struct store *st, uint64_t *task_id, uint64_t *batch_id);

/* meta key/value (node id and the like). get: CH_ERR_NOT_FOUND. */
int store_meta_get(struct store *st, const char *key, char *val, size_t val_len);
int store_meta_put(struct store *st, const char *key, const char *val);

/* Counts by state (index = enum task_state, 0..7). O(tasks): a scan of the
 * table (the state indexes are partial). */
int store_count_states(struct store *st, uint64_t counts[8]);

/* Idempotency keys: opaque bytes (at most STORE_KEY_BYTES_MAX) naming the
 * task or batch a request created. get: 0 with kind and id, or
 * CH_ERR_NOT_FOUND. put: inside the loop's transaction, so a repeat later
 * in the same iteration sees it and a failed commit forgets it; a key
 * already there is a CH_ERR_STORAGE (look it up first). Purged with the
 * results (store_purge: created before the cut-off). */
#define STORE_KEY_BYTES_MAX 256
enum store_key_kind { STORE_KEY_TASK = 1, STORE_KEY_BATCH = 2 };
int store_key_get(struct store *st, const void *key, size_t key_len, int *kind, uint64_t *id);
int store_key_put(struct store *st, const void *key, size_t key_len, int kind, uint64_t id,
                  uint64_t created_ms);

#endif
