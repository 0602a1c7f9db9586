/*
 * store.c - the journal: tasks, batches and node metadata in one sqlite
 * database (DATA_DIR/chorus.db) in WAL mode.
 *
 * Owns the sqlite connection and every prepared statement (prepared once in
 * store_open, reset and unbound after each use). Only the loop thread calls
 * in here, so the connection is opened with SQLITE_OPEN_NOMUTEX.
 *
 * Subtle parts:
 *  - store_task_put is on the hot path (every state change of every task).
 *    It is one UPSERT whose DO UPDATE arm writes only the mutable columns, so
 *    an update never rewrites the payload or argv.
 *  - store_purge deletes old final tasks; without care that could make
 *    store_max_ids go backwards (all tasks purged -> max id 0) and ids would
 *    be handed out twice. Before deleting, purge records the high-water marks
 *    in meta (task_id_hw, batch_id_hw) and store_max_ids takes the larger.
 *  - DELETE ... LIMIT is a compile-time option of sqlite, so bounded deletes
 *    go through a subquery on id.
 *  - Errors: every sqlite failure is logged with sqlite3_errmsg and returned
 *    as CH_ERR_STORAGE; corrupt rows (argv that is not a JSON array of
 *    strings) likewise.
 */
#include "io/store.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "chorus.h"
#include "core/tasks.h"
#include "io/log.h"
#include "io/walscan.h"
#include "lib/clock.h"

#define STORE_SCHEMA_VERSION 3
#define STORE_BUSY_TIMEOUT_MS 5000
#define STORE_DB_NAME "chorus.db"
#define STORE_TASK_STATES 8
#define STORE_FREE_BYTES_MIN (256u * 1024u) /* below: a failed open says "full" */


/* Every statement, prepared once at open. */
enum {
	Q_BEGIN,
	Q_COMMIT,
	Q_ROLLBACK,
	Q_TASK_PUT,
	Q_TASK_LIVE,
	Q_TASK_END,
	Q_BATCH_PUT,
	Q_LOAD_UNFINISHED,
	Q_LOAD_OPEN_BATCHES,
	Q_TASK_GET,
	Q_BATCH_GET,
	Q_BATCH_TASKS,
	Q_LIST_ANY,
	Q_LIST_STATE,
	Q_LIST_LIVE,
	Q_LIST_ENDED,
	Q_PURGE_SAVEPOINT,
	Q_PURGE_RELEASE,
	Q_PURGE_ROLLBACK_TO,
	Q_PURGE_TASK_HW,
	Q_PURGE_BATCH_HW,
	Q_PURGE_TASKS,
	Q_PURGE_BATCHES,
	Q_MAX_IDS,
	Q_META_GET,
	Q_META_PUT,
	Q_COUNT_STATES,
	Q_IDEM_GET,
	Q_IDEM_PUT,
	Q_PURGE_IDEM,
	Q_COUNT,
};

#define TASK_COLS                                                                              \
	"id, batch_id, batch_index, handler, payload, argv, timeout_ms, restart, max_attempts, " \
	"backoff_ms, pool, state, attempts, exit_code, output, error, node, submitted_ms, "      \
	"started_ms, finished_ms, require"

#define BATCH_COLS                                                                  \
	"b.id, b.total, b.max_concurrency, b.deadline_ms, b.created_ms, "            \
	"(SELECT count(*) FROM tasks t WHERE t.batch_id = b.id AND t.state >= 3)"

static const char *const store_sql[Q_COUNT] = {
	[Q_BEGIN] = "BEGIN IMMEDIATE",
	[Q_COMMIT] = "COMMIT",
	[Q_ROLLBACK] = "ROLLBACK",
	[Q_TASK_PUT] = "INSERT INTO tasks(" TASK_COLS ") VALUES "
		       "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
		       "?18, ?19, ?20, ?21) "
		       "ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
		       "attempts = excluded.attempts, exit_code = excluded.exit_code, "
		       "output = excluded.output, error = excluded.error, node = excluded.node, "
		       "started_ms = excluded.started_ms, finished_ms = excluded.finished_ms",
	/* The narrow updates of a task whose row exists (store_task_update):
	 * only the columns its state can have changed, so sqlite neither builds
	 * a 21-column record to throw away (the upsert's insert arm) nor
	 * touches an index whose column is not set (a live task's update
	 * leaves tasks_by_finished alone). */
	[Q_TASK_LIVE] = "UPDATE tasks SET state = ?2, attempts = ?3, started_ms = ?4, node = ?5, "
			"error = ?6 WHERE id = ?1",
	[Q_TASK_END] = "UPDATE tasks SET state = ?2, attempts = ?3, started_ms = ?4, node = ?5, "
		       "error = ?6, exit_code = ?7, output = ?8, finished_ms = ?9 WHERE id = ?1",
	[Q_BATCH_PUT] = "INSERT INTO batches(id, total, max_concurrency, deadline_ms, created_ms) "
			"VALUES (?1, ?2, ?3, ?4, ?5) "
			"ON CONFLICT(id) DO UPDATE SET total = excluded.total, "
			"max_concurrency = excluded.max_concurrency, "
			"deadline_ms = excluded.deadline_ms, created_ms = excluded.created_ms",
	[Q_LOAD_UNFINISHED] = "SELECT " TASK_COLS " FROM tasks WHERE state IN (1, 2) ORDER BY id",
	[Q_LOAD_OPEN_BATCHES] = "SELECT " BATCH_COLS " FROM batches b WHERE EXISTS "
				"(SELECT 1 FROM tasks t WHERE t.batch_id = b.id AND t.state IN (1, 2)) "
				"ORDER BY b.id",
	[Q_TASK_GET] = "SELECT " TASK_COLS " FROM tasks WHERE id = ?1",
	[Q_BATCH_GET] = "SELECT " BATCH_COLS " FROM batches b WHERE b.id = ?1",
	[Q_BATCH_TASKS] = "SELECT " TASK_COLS " FROM tasks WHERE batch_id = ?1 AND batch_index >= ?2 "
			  "ORDER BY batch_index LIMIT ?3",
	[Q_LIST_ANY] = "SELECT " TASK_COLS " FROM tasks ORDER BY id DESC LIMIT ?1",
	/* The indexes on state are partial (schema version 3): a query uses one
	 * only when its WHERE holds the index's condition word for word, hence
	 * the redundant terms. Succeeded tasks have no index: newest first is
	 * the rowid backwards, and they are most of the journal. */
	[Q_LIST_STATE] = "SELECT " TASK_COLS " FROM tasks WHERE state = ?1 ORDER BY id DESC LIMIT ?2",
	[Q_LIST_LIVE] = "SELECT " TASK_COLS " FROM tasks WHERE state = ?1 AND state IN (1, 2) "
			"ORDER BY id DESC LIMIT ?2",
	[Q_LIST_ENDED] = "SELECT " TASK_COLS " FROM tasks WHERE state = ?1 AND state >= 4 "
			 "ORDER BY id DESC LIMIT ?2",
	[Q_PURGE_SAVEPOINT] = "SAVEPOINT store_purge",
	[Q_PURGE_RELEASE] = "RELEASE store_purge",
	[Q_PURGE_ROLLBACK_TO] = "ROLLBACK TO store_purge",
	/* "WHERE true" resolves the INSERT ... SELECT ... ON CONFLICT ambiguity. */
	[Q_PURGE_TASK_HW] = "INSERT INTO meta(key, value) SELECT 'task_id_hw', "
			    "CAST(coalesce(max(id), 0) AS TEXT) FROM tasks WHERE true "
			    "ON CONFLICT(key) DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), "
			    "CAST(excluded.value AS INTEGER)) AS TEXT)",
	[Q_PURGE_BATCH_HW] = "INSERT INTO meta(key, value) SELECT 'batch_id_hw', "
			     "CAST(coalesce(max(id), 0) AS TEXT) FROM batches WHERE true "
			     "ON CONFLICT(key) DO UPDATE SET value = CAST(max(CAST(value AS INTEGER), "
			     "CAST(excluded.value AS INTEGER)) AS TEXT)",
	[Q_PURGE_TASKS] = "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE state >= 3 "
			  "AND finished_ms > 0 AND finished_ms < ?1 LIMIT ?2)",
	/* Only batches created before the cut-off: a batch just put whose tasks
	 * are not journaled yet must not be taken for an empty one. */
	[Q_PURGE_BATCHES] = "DELETE FROM batches WHERE id IN (SELECT b.id FROM batches b WHERE "
			    "b.created_ms < ?1 AND NOT EXISTS "
			    "(SELECT 1 FROM tasks t WHERE t.batch_id = b.id) LIMIT ?2)",
	[Q_MAX_IDS] = "SELECT max(coalesce((SELECT max(id) FROM tasks), 0), "
		      "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'task_id_hw'), 0)), "
		      "max(coalesce((SELECT max(id) FROM batches), 0), "
		      "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'batch_id_hw'), 0))",
	[Q_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[Q_META_PUT] = "INSERT INTO meta(key, value) VALUES (?1, ?2) "
		       "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
	[Q_COUNT_STATES] = "SELECT state, count(*) FROM tasks GROUP BY state",
	[Q_IDEM_GET] = "SELECT kind, id FROM idem WHERE key = ?1",
	[Q_IDEM_PUT] = "INSERT INTO idem(key, kind, id, created_ms) VALUES (?1, ?2, ?3, ?4)",
	[Q_PURGE_IDEM] = "DELETE FROM idem WHERE key IN (SELECT key FROM idem WHERE created_ms < ?1 "
			 "LIMIT ?2)",
};

static const char *const store_schema_v1 =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
	"CREATE TABLE tasks("
	"  id INTEGER PRIMARY KEY,"
	"  batch_id INTEGER NOT NULL DEFAULT 0,"
	"  batch_index INTEGER NOT NULL DEFAULT 0,"
	"  handler TEXT NOT NULL,"
	"  payload BLOB,"
	"  argv TEXT,"
	"  timeout_ms INTEGER NOT NULL DEFAULT 0,"
	"  restart INTEGER NOT NULL DEFAULT 0,"
	"  max_attempts INTEGER NOT NULL DEFAULT 1,"
	"  backoff_ms INTEGER NOT NULL DEFAULT 0,"
	"  pool INTEGER NOT NULL DEFAULT 0,"
	"  state INTEGER NOT NULL,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  exit_code INTEGER NOT NULL DEFAULT 0,"
	"  output BLOB,"
	"  error TEXT,"
	"  node TEXT,"
	"  submitted_ms INTEGER NOT NULL DEFAULT 0,"
	"  started_ms INTEGER NOT NULL DEFAULT 0,"
	"  finished_ms INTEGER NOT NULL DEFAULT 0,"
	"  require TEXT);"
	"CREATE INDEX tasks_by_state ON tasks(state);"
	"CREATE INDEX tasks_by_batch ON tasks(batch_id, batch_index);"
	"CREATE INDEX tasks_by_finished ON tasks(finished_ms);"
	"CREATE TABLE batches("
	"  id INTEGER PRIMARY KEY,"
	"  total INTEGER NOT NULL,"
	"  max_concurrency INTEGER NOT NULL DEFAULT 0,"
	"  deadline_ms INTEGER NOT NULL DEFAULT 0,"
	"  created_ms INTEGER NOT NULL DEFAULT 0);";

/* Version 2: idempotency keys (a resent submit or map answers with the
 * first one's id). The key is the primary key: unique by construction. */
static const char *const store_schema_v2 =
	"CREATE TABLE idem("
	"  key BLOB PRIMARY KEY,"
	"  kind INTEGER NOT NULL,"
	"  id INTEGER NOT NULL,"
	"  created_ms INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE INDEX idem_by_created ON idem(created_ms);";

/* Version 3: partial indexes, so a task's writes touch fewer index pages
 * (docs/performance.md, "Journal: fewer, narrower writes"). Version 2
 * indexed every row's state and finished_ms: a task's entry moved through
 * the middle of tasks_by_state at each state change (page splits there,
 * and pages dirtied per commit), and tasks_by_finished held a (0, id)
 * entry for every live task, moved at its end. Now
 *  - tasks_live: only queued and running tasks (the restart's load, the
 *    open batches' check), a small index whatever the journal's size;
 *  - tasks_ended: failed, timed out, cancelled and lost tasks (listing by
 *    those states); a succeeded task has no entry;
 *  - tasks_finished: ended tasks by finished_ms (purge), appended at the
 *    end. */
static const char *const store_schema_v3 =
	"DROP INDEX IF EXISTS tasks_by_state;"
	"DROP INDEX IF EXISTS tasks_by_finished;"
	"CREATE INDEX IF NOT EXISTS tasks_live ON tasks(state) WHERE state IN (1, 2);"
	"CREATE INDEX IF NOT EXISTS tasks_ended ON tasks(state) WHERE state >= 4;"
	"CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_ms) WHERE finished_ms > 0;";

struct store {
	sqlite3 *db;
	int in_tx; /* between store_begin and store_commit/rollback */
	int quiet; /* failures logged at debug level: the caller reports them */
	int64_t changes_at_begin; /* sqlite3_total_changes64 at store_begin */
	int created;              /* this open created the journal (schema) */
	char last_err[256];
	sqlite3_stmt *q[Q_COUNT];
	char path[PATH_MAX]; /* chorus.db, for its size */
	struct store_stats stats; /* commit counters (sizes filled on demand) */
};

/* ---- small helpers ---- */

static void q_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* Logs the connection's last error and returns CH_ERR_STORAGE. */
static int store_fail(struct store *st, const char *what)
{
	snprintf(st->last_err, sizeof(st->last_err), "%s: %s", what, sqlite3_errmsg(st->db));
	log_msg(st->quiet ? LOG_DEBUG : LOG_ERROR, "store", "%s", st->last_err);
	return CH_ERR_STORAGE;
}

void store_set_quiet(struct store *st, int quiet)
{
	st->quiet = quiet;
}

const char *store_last_error(const struct store *st)
{
	return st->last_err[0] ? st->last_err : "unknown error";
}

/* Steps a statement that returns no rows; resets it. */
static int q_exec(struct store *st, int qi, const char *what)
{
	sqlite3_stmt *s = st->q[qi];
	int rc = sqlite3_step(s);
	int ret = 0;
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		ret = store_fail(st, what);
	q_done(s);
	return ret;
}

const char *store_sync_name(int sync)
{
	switch (sync) {
	case STORE_SYNC_OFF: return "off";
	case STORE_SYNC_NORMAL: return "normal";
	case STORE_SYNC_FULL: return "full";
	case STORE_SYNC_EXTRA: return "extra";
	default: return "unknown";
	}
}

int store_sync_parse(const char *s)
{
	if (!s)
		return -1;
	for (int i = STORE_SYNC_OFF; i <= STORE_SYNC_EXTRA; i++)
		if (strcasecmp(s, store_sync_name(i)) == 0)
			return i;
	return -1;
}

/* mkdir -p; new directories get mode 0700. 0 or -1 with errno. */
int store_make_dirs(const char *dir)
{
	char path[PATH_MAX];
	size_t len = strlen(dir);
	if (len == 0 || len >= sizeof(path)) {
		errno = len ? ENAMETOOLONG : ENOENT;
		return -1;
	}
	memcpy(path, dir, len + 1);
	while (len > 1 && path[len - 1] == '/')
		path[--len] = '\0';
	for (size_t i = 1; i <= len; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		char saved = path[i];
		path[i] = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST)
			return -1;
		path[i] = saved;
	}
	struct stat sb;
	if (stat(path, &sb) != 0)
		return -1;
	if (!S_ISDIR(sb.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

/* Runs a one-row pragma and copies its first column (text) out. */
static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t out_len)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			const unsigned char *v = sqlite3_column_text(s, 0);
			snprintf(out, out_len, "%s", v ? (const char *)v : "");
			rc = SQLITE_OK;
		} else if (rc == SQLITE_DONE) {
			if (out_len)
				out[0] = '\0';
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(s);
	return rc;
}

/* Creates the schema or checks that it is one we know. */
static int store_migrate(struct store *st, const char *path, char *err, size_t err_len)
{
	char v[32];
	if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	/* read inside the write transaction: two processes must not both migrate */
	if (pragma_text(st->db, "PRAGMA user_version", v, sizeof(v)) != SQLITE_OK)
		goto fail_tx;
	int version = atoi(v);
	if (version > STORE_SCHEMA_VERSION) {
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		snprintf(err, err_len,
			 "%s: schema version %d is newer than this chorusd supports (%d); "
			 "run a newer chorusd",
			 path, version, STORE_SCHEMA_VERSION);
		return CH_ERR_STORAGE;
	}
	if (version == 0) {
		if (sqlite3_exec(st->db, store_schema_v1, NULL, NULL, NULL) != SQLITE_OK)
			goto fail_tx;
		st->created = 1;
	}
	if (version < 2 && sqlite3_exec(st->db, store_schema_v2, NULL, NULL, NULL) != SQLITE_OK)
		goto fail_tx;
	/* O(tasks) once: the new indexes are built from the table */
	if (version < 3 && sqlite3_exec(st->db, store_schema_v3, NULL, NULL, NULL) != SQLITE_OK)
		goto fail_tx;
	if (version < STORE_SCHEMA_VERSION) {
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
		if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
			goto fail_tx;
	}
	if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail_tx;
	if (version == 0)
		log_info("store", "%s: created schema version %d", path, STORE_SCHEMA_VERSION);
	else if (version < STORE_SCHEMA_VERSION)
		log_info("store", "%s: schema version %d migrated to %d", path, version,
		         STORE_SCHEMA_VERSION);
	return 0;
fail_tx:
	snprintf(err, err_len, "%s: schema: %s", path, sqlite3_errmsg(st->db));
	sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	st->created = 0;
	return CH_ERR_STORAGE;
fail:
	snprintf(err, err_len, "%s: schema: %s", path, sqlite3_errmsg(st->db));
	return CH_ERR_STORAGE;
}

/* Says so in err when the file system holding dir has (next to) no room
 * left: "disk I/O error" alone does not tell an operator what to do. */
static void disk_full_hint(const char *dir, char *err, size_t err_len)
{
	struct statvfs sv;
	if (statvfs(dir, &sv) != 0)
		return;
	uint64_t free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (free_bytes >= STORE_FREE_BYTES_MIN)
		return;
	size_t n = strlen(err);
	if (n < err_len)
		snprintf(err + n, err_len - n,
		         " (the file system holding %s is full: %llu bytes free; free space and "
		         "start again)",
		         dir, (unsigned long long)free_bytes);
}

/* What sqlite's WAL recovery is about to drop without a word: said once,
 * before sqlite opens the journal (and rewrites the WAL). */
static void wal_report(const char *db_path)
{
	char wal[PATH_MAX];
	if ((size_t)snprintf(wal, sizeof(wal), "%s-wal", db_path) >= sizeof(wal))
		return;
	struct walscan ws;
	int rc = walscan_file(wal, &ws);
	if (rc < 0) {
		log_warn("store", "%s: cannot read it to check it (%s)", wal, strerror(errno));
		return;
	}
	if (rc > 0)
		return; /* no WAL: the last stop was clean */
	if (ws.header_bad) {
		log_error("store", "%s: its header is damaged, so sqlite ignores the whole file: the "
		                   "commits it held since the last checkpoint are lost (task ids stay "
		                   "unique: DATA_DIR/ids)",
		          wal);
	} else if (ws.commits_lost && ws.last_txn_only) {
		log_warn("store", "%s: the last transaction (%" PRIu32 " frame(s) from frame %" PRIu32
		                  ") was cut short: a crash inside a commit, or the last commits before a "
		                  "power loss with synchronous = normal; sqlite drops it and keeps the %" PRIu32
		                  " commit(s) before it (task ids stay unique: DATA_DIR/ids)",
		         wal, ws.frames_lost, ws.first_bad + 1, ws.commits_valid);
	} else if (ws.commits_lost) {
		log_error("store", "%s: frame %" PRIu32 " is damaged: %" PRIu32 " commit(s) after it (%" PRIu32
		                   " frame(s)) are dropped by sqlite; %" PRIu32 " commit(s) before it are "
		                   "kept. This is damage to the disk or the file (a crash or power loss "
		                   "cuts only the last transaction short). Task ids stay unique "
		                   "(DATA_DIR/ids)",
		          wal, ws.first_bad + 1, ws.commits_lost, ws.frames_lost, ws.commits_valid);
	} else {
		log_info("store", "%s: %" PRIu32 " commit(s) to replay after an unclean stop", wal,
		         ws.commits_valid);
	}
}

/* sqlite keeps counts of its memory behind a global mutex unless told not
 * to, before its first use in the process: every allocation (Debian's sqlite
 * has no lookaside, so every cursor of every statement is a malloc) then
 * took and left that mutex. Nothing here reads those counts. Called again
 * after sqlite started it says SQLITE_MISUSE and changes nothing, which is
 * fine: only speed differs. */
static void store_sqlite_setup(void)
{
	static int done;
	if (!done) {
		done = 1;
		(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	}
}

int store_open(struct store **out, const char *dir, int synchronous, char *err, size_t err_len)
{
	assert(out && dir);
	assert(synchronous >= STORE_SYNC_OFF && synchronous <= STORE_SYNC_EXTRA);
	*out = NULL;
	if (err_len)
		err[0] = '\0';

	if (store_make_dirs(dir) != 0 || access(dir, W_OK | X_OK) != 0) {
		snprintf(err, err_len, "data dir %s: %s", dir, strerror(errno));
		return CH_ERR_STORAGE;
	}
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, STORE_DB_NAME) >= sizeof(path)) {
		snprintf(err, err_len, "data dir %s: %s", dir, strerror(ENAMETOOLONG));
		return CH_ERR_STORAGE;
	}

	wal_report(path);
	store_sqlite_setup();

	struct store *st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(err, err_len, "store: out of memory");
		return CH_ERR_NOMEM;
	}
	memcpy(st->path, path, sizeof(st->path));
	int rc = sqlite3_open_v2(path, &st->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, err_len, "%s: %s", path,
			 st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(st->db, 1);
	sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);

	/* Exclusive locking, set before the first access to the WAL: sqlite
	 * then keeps the WAL index in the process's memory instead of a
	 * shared -shm file, and takes no file locks per transaction. The loop
	 * begins and commits a transaction every iteration, and each one cost
	 * four fcntl locks (on the latency path of every request). Only this
	 * connection uses the journal: the data dir is locked (host.c) before
	 * it is opened, and other programs read it only once the node stopped. */
	char lock_mode[32];
	if (pragma_text(st->db, "PRAGMA locking_mode = EXCLUSIVE", lock_mode, sizeof(lock_mode)) !=
	    SQLITE_OK) {
		snprintf(err, err_len, "%s: %s", path, sqlite3_errmsg(st->db));
		goto fail;
	}
	char mode[32];
	if (pragma_text(st->db, "PRAGMA journal_mode = WAL", mode, sizeof(mode)) != SQLITE_OK) {
		snprintf(err, err_len, "%s: %s", path, sqlite3_errmsg(st->db));
		goto fail;
	}
	if (strcasecmp(mode, "wal") != 0) {
		snprintf(err, err_len, "%s: cannot use WAL journal (got '%s')", path, mode);
		goto fail;
	}
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s", store_sync_name(synchronous));
	if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(st->db, "PRAGMA foreign_keys = OFF", NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(err, err_len, "%s: %s", path, sqlite3_errmsg(st->db));
		goto fail;
	}

	rc = store_migrate(st, path, err, err_len);
	if (rc != 0) {
		disk_full_hint(dir, err, err_len);
		store_close(st);
		return rc;
	}

	for (int i = 0; i < Q_COUNT; i++) {
		assert(store_sql[i]);
		if (sqlite3_prepare_v3(st->db, store_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i],
				       NULL) != SQLITE_OK) {
			snprintf(err, err_len, "%s: prepare: %s", path, sqlite3_errmsg(st->db));
			goto fail;
		}
	}
	log_debug("store", "opened %s (synchronous=%s)", path, store_sync_name(synchronous));
	*out = st;
	return 0;
fail:
	disk_full_hint(dir, err, err_len);
	store_close(st);
	return CH_ERR_STORAGE;
}

int store_created(const struct store *st)
{
	return st->created;
}

int store_quick_check(struct store *st, char *msg, size_t msg_len)
{
	sqlite3_stmt *s = NULL;
	if (msg_len)
		msg[0] = '\0';
	if (sqlite3_prepare_v2(st->db, "PRAGMA quick_check(8)", -1, &s, NULL) != SQLITE_OK) {
		snprintf(msg, msg_len, "%s", sqlite3_errmsg(st->db));
		return CH_ERR_STORAGE;
	}
	int rc, ok = 1;
	size_t off = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const unsigned char *v = sqlite3_column_text(s, 0);
		const char *line = v ? (const char *)v : "";
		if (strcmp(line, "ok") == 0)
			continue;
		ok = 0;
		if (off < msg_len) {
			int n = snprintf(msg + off, msg_len - off, "%s%s", off ? "; " : "", line);
			off += n > 0 ? (size_t)n : 0;
		}
	}
	if (rc != SQLITE_DONE) {
		ok = 0;
		if (off < msg_len)
			snprintf(msg + off, msg_len - off, "%s%s", off ? "; " : "",
			         sqlite3_errmsg(st->db));
	}
	sqlite3_finalize(s);
	return ok ? 0 : CH_ERR_STORAGE;
}

void store_close(struct store *st)
{
	if (!st)
		return;
	if (st->in_tx) {
		log_warn("store", "closing with an open transaction: rolled back");
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
	}
	for (int i = 0; i < Q_COUNT; i++)
		sqlite3_finalize(st->q[i]);
	if (st->db && sqlite3_close(st->db) != SQLITE_OK)
		log_error("store", "close: %s", sqlite3_errmsg(st->db));
	free(st);
}

/* ---- transactions ---- */

int store_begin(struct store *st)
{
	assert(!st->in_tx); /* nesting is a bug of the caller */
	int rc = q_exec(st, Q_BEGIN, "begin");
	if (rc == 0) {
		st->in_tx = 1;
		st->changes_at_begin = sqlite3_total_changes64(st->db);
	}
	return rc;
}

int store_tx_wrote(const struct store *st)
{
	return sqlite3_total_changes64(st->db) != st->changes_at_begin;
}

const uint64_t store_commit_bounds_us[STORE_COMMIT_BUCKETS - 1] = {
	100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
};

int store_commit(struct store *st)
{
	assert(st->in_tx);
	/* only commits that wrote are timed: the loop commits every
	 * iteration, and empty commits would drown the ones that fsync */
	int wrote = store_tx_wrote(st);
	uint64_t t0 = wrote ? clock_mono_ns() : 0;
	int rc = q_exec(st, Q_COMMIT, "commit");
	/* A failed COMMIT may leave the transaction open (SQLITE_BUSY) or have
	 * rolled it back already; ask sqlite which. */
	st->in_tx = !sqlite3_get_autocommit(st->db);
	if (rc != 0) {
		st->stats.commit_failures++;
	} else if (wrote) {
		uint64_t ns = clock_mono_ns() - t0;
		int b = 0;
		while (b < STORE_COMMIT_BUCKETS - 1 && ns > store_commit_bounds_us[b] * 1000u)
			b++;
		st->stats.commit_buckets[b]++;
		st->stats.commit_sum_ns += ns;
		st->stats.commits++;
	}
	return rc;
}

void store_stats_get(const struct store *st, struct store_stats *out)
{
	*out = st->stats;
	struct stat sb;
	char wal[PATH_MAX + 8];
	out->db_bytes = stat(st->path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
	snprintf(wal, sizeof(wal), "%s-wal", st->path);
	out->wal_bytes = stat(wal, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

int store_rollback(struct store *st)
{
	if (sqlite3_get_autocommit(st->db)) { /* already rolled back by sqlite */
		st->in_tx = 0;
		return 0;
	}
	int rc = q_exec(st, Q_ROLLBACK, "rollback");
	st->in_tx = !sqlite3_get_autocommit(st->db);
	return rc;
}

/* ---- tasks ---- */

/* A string list (argv, required tags) as a compact JSON array; *json
 * malloc'd (free()). NULL when there is no list. */
static int strings_to_json(const struct task *t, char *const *list, uint32_t n, const char *what,
                           char **json)
{
	*json = NULL;
	if (!list)
		return 0;
	json_t *arr = json_array();
	if (!arr)
		return CH_ERR_NOMEM;
	for (uint32_t i = 0; i < n; i++) {
		assert(list[i]);
		json_t *s = json_string(list[i]);
		if (!s) { /* not UTF-8: refuse rather than journal garbage */
			json_decref(arr);
			log_error("store", "task %llu: %s[%u] is not valid UTF-8",
				  (unsigned long long)t->id, what, i);
			return CH_ERR_INVALID;
		}
		json_array_append_new(arr, s);
	}
	*json = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	return *json ? 0 : CH_ERR_NOMEM;
}

int store_task_put(struct store *st, const struct task *t)
{
	assert(t && t->handler);
	assert(t->state >= 0 && t->state < STORE_TASK_STATES);
	char *argv_json, *require_json;
	int rc = strings_to_json(t, t->argv, t->argc, "argv", &argv_json);
	if (rc != 0)
		return rc;
	rc = strings_to_json(t, t->require, t->require_count, "require", &require_json);
	if (rc != 0) {
		free(argv_json);
		return rc;
	}

	sqlite3_stmt *s = st->q[Q_TASK_PUT];
	sqlite3_bind_int64(s, 1, (sqlite3_int64)t->id);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)t->batch_id);
	sqlite3_bind_int64(s, 3, t->batch_index);
	sqlite3_bind_text(s, 4, t->handler, -1, SQLITE_STATIC);
	if (t->payload_len)
		sqlite3_bind_blob64(s, 5, t->payload, t->payload_len, SQLITE_STATIC);
	if (argv_json)
		sqlite3_bind_text(s, 6, argv_json, -1, free);
	sqlite3_bind_int64(s, 7, t->opts.timeout_ms);
	sqlite3_bind_int(s, 8, t->opts.restart);
	sqlite3_bind_int64(s, 9, t->opts.max_attempts);
	sqlite3_bind_int64(s, 10, t->opts.backoff_ms);
	sqlite3_bind_int64(s, 11, t->pool);
	sqlite3_bind_int(s, 12, t->state);
	sqlite3_bind_int64(s, 13, t->attempts);
	sqlite3_bind_int(s, 14, t->exit_code);
	if (t->output_len)
		sqlite3_bind_blob64(s, 15, t->output, t->output_len, SQLITE_STATIC);
	if (t->error)
		sqlite3_bind_text(s, 16, t->error, -1, SQLITE_STATIC);
	if (t->node)
		sqlite3_bind_text(s, 17, t->node, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 18, (sqlite3_int64)t->submitted_ms);
	sqlite3_bind_int64(s, 19, (sqlite3_int64)t->started_ms);
	sqlite3_bind_int64(s, 20, (sqlite3_int64)t->finished_ms);
	if (require_json)
		sqlite3_bind_text(s, 21, require_json, -1, free);
	return q_exec(st, Q_TASK_PUT, "task put");
}

int store_task_update(struct store *st, const struct task *t)
{
	assert(t && t->handler);
	assert(t->state >= 0 && t->state < STORE_TASK_STATES);
	/* what a live task's update leaves out is only ever set when it ends
	 * (tasks.c: finish, tasks_on_result) and never cleared after; should a
	 * live task carry any of it, it is written all the same */
	int final = task_state_is_final(t->state) || t->output_len || t->finished_ms ||
	            t->exit_code;
	int qi = final ? Q_TASK_END : Q_TASK_LIVE;
	sqlite3_stmt *s = st->q[qi];
	sqlite3_bind_int64(s, 1, (sqlite3_int64)t->id);
	sqlite3_bind_int(s, 2, t->state);
	sqlite3_bind_int64(s, 3, t->attempts);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)t->started_ms);
	if (t->node)
		sqlite3_bind_text(s, 5, t->node, -1, SQLITE_STATIC);
	if (t->error)
		sqlite3_bind_text(s, 6, t->error, -1, SQLITE_STATIC);
	if (final) {
		sqlite3_bind_int(s, 7, t->exit_code);
		if (t->output_len)
			sqlite3_bind_blob64(s, 8, t->output, t->output_len, SQLITE_STATIC);
		sqlite3_bind_int64(s, 9, (sqlite3_int64)t->finished_ms);
	}
	int rc = q_exec(st, qi, final ? "task end" : "task update");
	if (rc != 0)
		return rc;
	/* no row (the caller took it for written, or it was purged): the
	 * whole row, rather than a change silently lost */
	if (sqlite3_changes(st->db) == 0) {
		log_debug("store", "task %llu: no row to update: written whole",
		          (unsigned long long)t->id);
		return store_task_put(st, t);
	}
	return 0;
}

static char *col_strdup(sqlite3_stmt *s, int i, int *oom)
{
	const unsigned char *v = sqlite3_column_text(s, i);
	if (!v)
		return NULL;
	char *c = strdup((const char *)v);
	if (!c)
		*oom = 1;
	return c;
}

static uint8_t *col_blob(sqlite3_stmt *s, int i, size_t *len, int *oom)
{
	const void *v = sqlite3_column_blob(s, i);
	int n = sqlite3_column_bytes(s, i);
	*len = 0;
	if (!v || n <= 0)
		return NULL;
	uint8_t *b = malloc((size_t)n);
	if (!b) {
		*oom = 1;
		return NULL;
	}
	memcpy(b, v, (size_t)n);
	*len = (size_t)n;
	return b;
}

static int strings_from_json(const struct task *t, const char *text, const char *what,
                             char ***list, uint32_t *count)
{
	json_error_t jerr;
	json_t *arr = json_loads(text, 0, &jerr);
	if (!arr || !json_is_array(arr) || json_array_size(arr) >= UINT32_MAX) {
		json_decref(arr);
		log_error("store", "task %llu: corrupt %s in journal", (unsigned long long)t->id,
		          what);
		return CH_ERR_STORAGE;
	}
	size_t n = json_array_size(arr);
	*list = calloc(n + 1, sizeof(char *));
	if (!*list) {
		json_decref(arr);
		return CH_ERR_NOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const char *v = json_string_value(json_array_get(arr, i));
		if (!v) {
			json_decref(arr);
			log_error("store", "task %llu: corrupt %s in journal",
				  (unsigned long long)t->id, what);
			return CH_ERR_STORAGE;
		}
		(*list)[i] = strdup(v);
		if (!(*list)[i]) {
			json_decref(arr);
			return CH_ERR_NOMEM;
		}
		*count = (uint32_t)(i + 1); /* task_free frees what is there */
	}
	json_decref(arr);
	return 0;
}

/* Builds a task from the current row (TASK_COLS order). */
static int row_to_task(sqlite3_stmt *s, struct task **out)
{
	*out = NULL;
	struct task *t = calloc(1, sizeof(*t));
	if (!t)
		return CH_ERR_NOMEM;
	int oom = 0;
	t->id = (uint64_t)sqlite3_column_int64(s, 0);
	t->batch_id = (uint64_t)sqlite3_column_int64(s, 1);
	t->batch_index = (uint32_t)sqlite3_column_int64(s, 2);
	t->handler = col_strdup(s, 3, &oom);
	t->payload = col_blob(s, 4, &t->payload_len, &oom);
	t->opts.timeout_ms = (uint32_t)sqlite3_column_int64(s, 6);
	t->opts.restart = (uint8_t)sqlite3_column_int(s, 7);
	t->opts.max_attempts = (uint32_t)sqlite3_column_int64(s, 8);
	t->opts.backoff_ms = (uint32_t)sqlite3_column_int64(s, 9);
	t->pool = (uint32_t)sqlite3_column_int64(s, 10);
	t->state = sqlite3_column_int(s, 11);
	t->attempts = (uint32_t)sqlite3_column_int64(s, 12);
	t->exit_code = sqlite3_column_int(s, 13);
	t->output = col_blob(s, 14, &t->output_len, &oom);
	t->error = col_strdup(s, 15, &oom);
	t->node = col_strdup(s, 16, &oom);
	t->submitted_ms = (uint64_t)sqlite3_column_int64(s, 17);
	t->started_ms = (uint64_t)sqlite3_column_int64(s, 18);
	t->finished_ms = (uint64_t)sqlite3_column_int64(s, 19);
	int rc = oom ? CH_ERR_NOMEM : 0;
	if (rc == 0 && !t->handler) {
		log_error("store", "task %llu: no handler in journal", (unsigned long long)t->id);
		rc = CH_ERR_STORAGE;
	}
	const unsigned char *argv = sqlite3_column_text(s, 5);
	if (rc == 0 && argv)
		rc = strings_from_json(t, (const char *)argv, "argv", &t->argv, &t->argc);
	const unsigned char *require = sqlite3_column_text(s, 20);
	if (rc == 0 && require)
		rc = strings_from_json(t, (const char *)require, "require", &t->require,
		                       &t->require_count);
	if (rc != 0) {
		task_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

/* Steps a task query and hands each row to cb; resets the statement. */
static int q_each_task(struct store *st, int qi, const char *what,
		       int (*cb)(void *arg, struct task *t), void *arg)
{
	sqlite3_stmt *s = st->q[qi];
	int ret = 0, rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct task *t;
		ret = row_to_task(s, &t);
		if (ret != 0)
			break;
		if (cb(arg, t) != 0)
			break;
	}
	if (ret == 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = store_fail(st, what);
	q_done(s);
	return ret;
}

int store_load_unfinished(struct store *st, int (*cb)(void *arg, struct task *t), void *arg)
{
	return q_each_task(st, Q_LOAD_UNFINISHED, "load unfinished", cb, arg);
}

int store_task_get(struct store *st, uint64_t id, struct task **out)
{
	sqlite3_stmt *s = st->q[Q_TASK_GET];
	*out = NULL;
	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	int rc = sqlite3_step(s), ret;
	if (rc == SQLITE_ROW)
		ret = row_to_task(s, out);
	else if (rc == SQLITE_DONE)
		ret = CH_ERR_NOT_FOUND;
	else
		ret = store_fail(st, "task get");
	q_done(s);
	return ret;
}

int store_batch_tasks(struct store *st, uint64_t batch_id, uint32_t from, uint32_t max,
		      int (*cb)(void *arg, struct task *t), void *arg)
{
	sqlite3_stmt *s = st->q[Q_BATCH_TASKS];
	sqlite3_bind_int64(s, 1, (sqlite3_int64)batch_id);
	sqlite3_bind_int64(s, 2, from);
	sqlite3_bind_int64(s, 3, max);
	return q_each_task(st, Q_BATCH_TASKS, "batch tasks", cb, arg);
}

int store_task_list(struct store *st, int state, uint32_t limit,
		    int (*cb)(void *arg, struct task *t), void *arg)
{
	if (state == 0) {
		sqlite3_bind_int64(st->q[Q_LIST_ANY], 1, limit);
		return q_each_task(st, Q_LIST_ANY, "task list", cb, arg);
	}
	int qi = state == TASK_QUEUED || state == TASK_RUNNING ? Q_LIST_LIVE
	         : state >= TASK_FAILED                          ? Q_LIST_ENDED
	                                                         : Q_LIST_STATE;
	sqlite3_bind_int(st->q[qi], 1, state);
	sqlite3_bind_int64(st->q[qi], 2, limit);
	return q_each_task(st, qi, "task list", cb, arg);
}

/* ---- batches ---- */

int store_batch_put(struct store *st, const struct batch *b)
{
	sqlite3_stmt *s = st->q[Q_BATCH_PUT];
	sqlite3_bind_int64(s, 1, (sqlite3_int64)b->id);
	sqlite3_bind_int64(s, 2, b->total);
	sqlite3_bind_int64(s, 3, b->max_concurrency);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)b->deadline_ms);
	sqlite3_bind_int64(s, 5, (sqlite3_int64)b->created_ms);
	return q_exec(st, Q_BATCH_PUT, "batch put");
}

static void row_to_batch(sqlite3_stmt *s, struct batch *b)
{
	memset(b, 0, sizeof(*b));
	b->id = (uint64_t)sqlite3_column_int64(s, 0);
	b->total = (uint32_t)sqlite3_column_int64(s, 1);
	b->max_concurrency = (uint32_t)sqlite3_column_int64(s, 2);
	b->deadline_ms = (uint64_t)sqlite3_column_int64(s, 3);
	b->created_ms = (uint64_t)sqlite3_column_int64(s, 4);
	b->done = (uint32_t)sqlite3_column_int64(s, 5);
}

int store_load_open_batches(struct store *st, int (*cb)(void *arg, const struct batch *b),
			    void *arg)
{
	sqlite3_stmt *s = st->q[Q_LOAD_OPEN_BATCHES];
	int rc, ret = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct batch b;
		row_to_batch(s, &b);
		if (cb(arg, &b) != 0)
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = store_fail(st, "load open batches");
	q_done(s);
	return ret;
}

int store_batch_get(struct store *st, uint64_t id, struct batch *out)
{
	sqlite3_stmt *s = st->q[Q_BATCH_GET];
	sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
	int rc = sqlite3_step(s), ret = 0;
	if (rc == SQLITE_ROW)
		row_to_batch(s, out);
	else if (rc == SQLITE_DONE)
		ret = CH_ERR_NOT_FOUND;
	else
		ret = store_fail(st, "batch get");
	q_done(s);
	return ret;
}

/* ---- maintenance ---- */

int store_purge(struct store *st, uint64_t before_ms, uint32_t max_rows)
{
	if (max_rows == 0)
		return 0;
	/* A savepoint works inside the loop's transaction and outside of one,
	 * and makes the high-water marks and the deletes one unit. */
	int rc = q_exec(st, Q_PURGE_SAVEPOINT, "purge savepoint");
	if (rc != 0)
		return rc;
	int deleted = 0;
	rc = q_exec(st, Q_PURGE_TASK_HW, "purge: task high-water mark");
	if (rc == 0)
		rc = q_exec(st, Q_PURGE_BATCH_HW, "purge: batch high-water mark");
	if (rc == 0) {
		sqlite3_stmt *s = st->q[Q_PURGE_TASKS];
		sqlite3_bind_int64(s, 1, (sqlite3_int64)before_ms);
		sqlite3_bind_int64(s, 2, max_rows);
		rc = q_exec(st, Q_PURGE_TASKS, "purge tasks");
		if (rc == 0)
			deleted = sqlite3_changes(st->db);
	}
	if (rc == 0) {
		sqlite3_stmt *s = st->q[Q_PURGE_BATCHES];
		sqlite3_bind_int64(s, 1, (sqlite3_int64)before_ms);
		sqlite3_bind_int64(s, 2, max_rows);
		rc = q_exec(st, Q_PURGE_BATCHES, "purge batches");
	}
	if (rc == 0) {
		/* keys live as long as results: a repeat within the retention
		 * time is answered with the first id */
		sqlite3_stmt *s = st->q[Q_PURGE_IDEM];
		sqlite3_bind_int64(s, 1, (sqlite3_int64)before_ms);
		sqlite3_bind_int64(s, 2, max_rows);
		rc = q_exec(st, Q_PURGE_IDEM, "purge keys");
	}
	if (rc != 0) {
		q_exec(st, Q_PURGE_ROLLBACK_TO, "purge rollback");
		q_exec(st, Q_PURGE_RELEASE, "purge release");
		return rc;
	}
	rc = q_exec(st, Q_PURGE_RELEASE, "purge release");
	if (rc != 0)
		return rc;
	assert(deleted >= 0 && (uint32_t)deleted <= max_rows);
	return deleted;
}

int store_max_ids(struct store *st, uint64_t *task_id, uint64_t *batch_id)
{
	sqlite3_stmt *s = st->q[Q_MAX_IDS];
	int rc = sqlite3_step(s), ret = 0;
	if (rc == SQLITE_ROW) {
		*task_id = (uint64_t)sqlite3_column_int64(s, 0);
		*batch_id = (uint64_t)sqlite3_column_int64(s, 1);
	} else {
		ret = store_fail(st, "max ids");
	}
	q_done(s);
	return ret;
}

int store_meta_get(struct store *st, const char *key, char *val, size_t val_len)
{
	sqlite3_stmt *s = st->q[Q_META_GET];
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s), ret = 0;
	if (rc == SQLITE_ROW) {
		const unsigned char *v = sqlite3_column_text(s, 0);
		size_t n = v ? (size_t)sqlite3_column_bytes(s, 0) : 0;
		if (n >= val_len) {
			log_error("store", "meta %s: value of %zu bytes does not fit %zu", key, n,
				  val_len);
			ret = CH_ERR_TOO_LARGE;
		} else {
			if (n)
				memcpy(val, v, n);
			val[n] = '\0';
		}
	} else if (rc == SQLITE_DONE) {
		ret = CH_ERR_NOT_FOUND;
	} else {
		ret = store_fail(st, "meta get");
	}
	q_done(s);
	return ret;
}

int store_meta_put(struct store *st, const char *key, const char *val)
{
	sqlite3_stmt *s = st->q[Q_META_PUT];
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, val, -1, SQLITE_STATIC);
	return q_exec(st, Q_META_PUT, "meta put");
}

int store_count_states(struct store *st, uint64_t counts[8])
{
	sqlite3_stmt *s = st->q[Q_COUNT_STATES];
	memset(counts, 0, sizeof(uint64_t) * STORE_TASK_STATES);
	int rc, ret = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int state = sqlite3_column_int(s, 0);
		if (state < 0 || state >= STORE_TASK_STATES) {
			log_warn("store", "journal holds tasks in unknown state %d", state);
			continue;
		}
		counts[state] = (uint64_t)sqlite3_column_int64(s, 1);
	}
	if (rc != SQLITE_DONE)
		ret = store_fail(st, "count states");
	q_done(s);
	return ret;
}

/* ---- idempotency keys ---- */

int store_key_get(struct store *st, const void *key, size_t key_len, int *kind, uint64_t *id)
{
	sqlite3_stmt *s = st->q[Q_IDEM_GET];
	sqlite3_bind_blob64(s, 1, key, key_len, SQLITE_STATIC);
	int rc = sqlite3_step(s), ret = 0;
	if (rc == SQLITE_ROW) {
		*kind = sqlite3_column_int(s, 0);
		*id = (uint64_t)sqlite3_column_int64(s, 1);
	} else if (rc == SQLITE_DONE) {
		ret = CH_ERR_NOT_FOUND;
	} else {
		ret = store_fail(st, "key get");
	}
	q_done(s);
	return ret;
}

int store_key_put(struct store *st, const void *key, size_t key_len, int kind, uint64_t id,
                  uint64_t created_ms)
{
	assert(kind == STORE_KEY_TASK || kind == STORE_KEY_BATCH);
	sqlite3_stmt *s = st->q[Q_IDEM_PUT];
	sqlite3_bind_blob64(s, 1, key, key_len, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, kind);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)id);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)created_ms);
	return q_exec(st, Q_IDEM_PUT, "key put");
}
