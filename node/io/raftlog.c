/*
 * raftlog.c - one node's Raft hard state, log and bookkeeping in
 * DATA_DIR/raft.db (see raftlog.h for the schema and the contract).
 *
 * Owns the sqlite connection and its prepared statements (prepared once at
 * open, reset and unbound after each use), and the arrays the last load
 * returned.
 *
 * Subtle parts:
 *  - Durability. WAL with synchronous = FULL: a COMMIT returns after the WAL
 *    is fsynced, and the WAL header is synced when a new WAL generation
 *    starts. Both pragmas are read back, not trusted. The directory is
 *    fsynced once at open so that raft.db itself survives a power loss
 *    right after a new node created it (sqlite syncs the directory for the
 *    -wal file, not for the database file).
 *  - A COMMIT that failed with an I/O error is not retried: after a failed
 *    fsync the kernel may have dropped the dirty pages and report success
 *    next time (PostgreSQL's "fsyncgate", 2018). The raftlog marks itself
 *    failed and refuses every later write, so the node stops instead of
 *    acknowledging lost state. Other failures (a full disk, a busy lock)
 *    wrote nothing durable, and the same ready may be persisted again.
 *  - Persist reads the stored hard state and last entry inside its write
 *    transaction instead of caching them: the file is the one truth, and a
 *    primary-key lookup costs nothing next to the fsync.
 *  - sqlite's WAL recovery silently drops every commit after a damaged
 *    frame. For the journal that is a loss to report (store.c); here it
 *    would be a node forgetting a vote it gave (two leaders in one term),
 *    so open scans raft.db-wal first and refuses when acknowledged commits
 *    would go. With synchronous = FULL each commit is fsynced before the
 *    next starts, so only the last transaction can be cut by a crash, and
 *    it was never acknowledged: that case opens, with a warning.
 *  - Everything read back is checked as bad input (never an assert): a vote
 *    that is not RAFT_ID_BYTES, a gap, a term going back, a term above the
 *    hard term, an unknown type, an entry too large, too many entries, a
 *    base or snapshot that does not fit the log around it.
 *  - Compaction (Raft §7). The log holds base.index+1 .. last; `base` is
 *    the point just before it and `snapshot` the state machine at an index
 *    in [base.index, last]. Both are written together with the deletion of
 *    the entries they replace, in one transaction, so a crash never leaves
 *    a log that starts after a gap. The limits count entries held (last -
 *    base.index <= RAFT_LOG_ENTRIES_MAX); indexes go up to RAFT_INDEX_MAX.
 *  - Snapshot bytes. Written with one bound blob (sqlite copies it once
 *    into the row it builds); read with incremental blob I/O straight into
 *    the buffer load returns, so a large snapshot is not held twice. sqlite
 *    refuses any blob over SQLITE_LIMIT_LENGTH (10^9 bytes in a stock
 *    build), below RAFT_SNAPSHOT_BYTES_MAX: such a write fails with
 *    ERR_STORAGE and says so.
 */
#include "io/raftlog.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <sqlite3.h>

#include "io/log.h"
#include "io/walscan.h"
#include "lib/err.h"

#define RAFTLOG_BUSY_TIMEOUT_MS 5000
#define RAFTLOG_CHECK_LINES_MAX 8 /* quick_check findings quoted in a refusal */

enum {
	Q_BEGIN,
	Q_BEGIN_READ,
	Q_COMMIT,
	Q_ROLLBACK,
	Q_HARD_GET,
	Q_HARD_PUT,
	Q_LOG_MAX,
	Q_LOG_ALL,
	Q_LOG_LAST,
	Q_LOG_TRUNCATE,
	Q_LOG_APPEND,
	Q_LOG_TERM,
	Q_LOG_COMPACT,
	Q_BASE_GET,
	Q_BASE_PUT,
	Q_SNAP_GET,
	Q_SNAP_AT,
	Q_SNAP_PUT,
	Q_META_GET,
	Q_META_PUT,
	Q_COUNT,
};

static const char *const raftlog_sql[Q_COUNT] = {
	[Q_BEGIN] = "BEGIN IMMEDIATE",
	[Q_BEGIN_READ] = "BEGIN DEFERRED",
	[Q_COMMIT] = "COMMIT",
	[Q_ROLLBACK] = "ROLLBACK",
	/* two rows at most: a second one is damage we want to name */
	[Q_HARD_GET] = "SELECT term, vote FROM hard ORDER BY id LIMIT 2",
	[Q_HARD_PUT] = "INSERT INTO hard(id, term, vote) VALUES (1, ?1, ?2) "
		       "ON CONFLICT(id) DO UPDATE SET term = excluded.term, vote = excluded.vote",
	/* idx is unique: a valid log (base+1..last, no gap) holds exactly
	 * max(idx) - base entries, and max is one b-tree descent where
	 * count(*) reads all */
	[Q_LOG_MAX] = "SELECT coalesce(max(idx), 0) FROM log",
	[Q_LOG_ALL] = "SELECT idx, term, type, data FROM log ORDER BY idx",
	[Q_LOG_LAST] = "SELECT idx, term FROM log ORDER BY idx DESC LIMIT 1",
	[Q_LOG_TRUNCATE] = "DELETE FROM log WHERE idx >= ?1",
	[Q_LOG_APPEND] = "INSERT INTO log(idx, term, type, data) VALUES (?1, ?2, ?3, ?4)",
	[Q_LOG_TERM] = "SELECT term FROM log WHERE idx = ?1",
	[Q_LOG_COMPACT] = "DELETE FROM log WHERE idx <= ?1",
	/* as hard: a second row is damage we want to name */
	[Q_BASE_GET] = "SELECT idx, term, voters FROM base ORDER BY id LIMIT 2",
	[Q_BASE_PUT] = "INSERT INTO base(id, idx, term, voters) VALUES (1, ?1, ?2, ?3) "
		       "ON CONFLICT(id) DO UPDATE SET idx = excluded.idx, term = excluded.term, "
		       "voters = excluded.voters",
	/* typeof() and length() of a blob do not read its pages: the bytes
	 * are read afterwards with incremental blob I/O (top comment) */
	[Q_SNAP_GET] = "SELECT idx, term, voters, id, typeof(data), length(data) FROM snapshot "
		       "ORDER BY id LIMIT 2",
	/* the point alone, for the checks of a write */
	[Q_SNAP_AT] = "SELECT idx, term, voters FROM snapshot ORDER BY id LIMIT 2",
	[Q_SNAP_PUT] = "INSERT INTO snapshot(id, idx, term, voters, data) VALUES (1, ?1, ?2, ?3, ?4) "
		       "ON CONFLICT(id) DO UPDATE SET idx = excluded.idx, term = excluded.term, "
		       "voters = excluded.voters, data = excluded.data",
	[Q_META_GET] = "SELECT val FROM meta WHERE key = ?1",
	[Q_META_PUT] = "INSERT INTO meta(key, val) VALUES (?1, ?2) "
		       "ON CONFLICT(key) DO UPDATE SET val = excluded.val",
};

static const char *const raftlog_schema_v1 =
	"CREATE TABLE hard("
	"  id INTEGER PRIMARY KEY CHECK (id = 1),"
	"  term INTEGER NOT NULL,"
	"  vote BLOB);"
	"INSERT INTO hard(id, term, vote) VALUES (1, 0, NULL);"
	"CREATE TABLE log("
	"  idx INTEGER PRIMARY KEY,"
	"  term INTEGER NOT NULL,"
	"  type INTEGER NOT NULL,"
	"  data BLOB);"
	"CREATE TABLE meta(key TEXT PRIMARY KEY, val BLOB);";

/* What version 2 adds to version 1 (the upgrade runs only this). */
_Static_assert(RAFTLOG_SCHEMA_VERSION == 2, "raftlog_migrate knows versions 1 and 2");
static const char *const raftlog_schema_v2 =
	"CREATE TABLE base("
	"  id INTEGER PRIMARY KEY CHECK (id = 1),"
	"  idx INTEGER NOT NULL,"
	"  term INTEGER NOT NULL,"
	"  voters BLOB NOT NULL);"
	"CREATE TABLE snapshot("
	"  id INTEGER PRIMARY KEY CHECK (id = 1),"
	"  idx INTEGER NOT NULL,"
	"  term INTEGER NOT NULL,"
	"  voters BLOB NOT NULL,"
	"  data BLOB NOT NULL);";

struct raftlog {
	sqlite3 *db;
	char path[PATH_MAX];
	int failed; /* a commit failed with an I/O error: no more writes (top comment) */
	char last_err[512];
	sqlite3_stmt *q[Q_COUNT];
	/* what the last load returned */
	struct raft_entry *loaded;
	uint32_t loaded_count;
	uint8_t *loaded_snap; /* the snapshot's bytes (NULL: none, or empty) */
};

/* ---- errors ---- */

static int rl_fail(struct raftlog *l, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Sets last_err to "PATH: message" and returns code. */
static int rl_fail(struct raftlog *l, int code, const char *fmt, ...)
{
	int n = snprintf(l->last_err, sizeof(l->last_err), "%s: ", l->path);
	if (n < 0 || (size_t)n >= sizeof(l->last_err))
		n = 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(l->last_err + n, sizeof(l->last_err) - (size_t)n, fmt, ap);
	va_end(ap);
	return code;
}

/* An sqlite failure: "PATH: what: sqlite's message", ERR_STORAGE. */
static int rl_sqlfail(struct raftlog *l, const char *what)
{
	return rl_fail(l, ERR_STORAGE, "%s: %s", what, sqlite3_errmsg(l->db));
}

const char *raftlog_last_error(const struct raftlog *l)
{
	return l->last_err[0] ? l->last_err : "no error";
}

/* ---- statements ---- */

static void q_done(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* Steps a statement that returns no rows, resets it. 0 or ERR_STORAGE. */
static int q_exec(struct raftlog *l, int qi, const char *what)
{
	int rc = sqlite3_step(l->q[qi]);
	int ret = 0;
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		ret = rl_sqlfail(l, what);
	q_done(l->q[qi]);
	return ret;
}

/* Ends a transaction that wrote nothing we keep (or failed). sqlite may
 * have rolled it back already (an I/O error does). */
static void rl_rollback(struct raftlog *l)
{
	if (sqlite3_get_autocommit(l->db))
		return;
	if (sqlite3_step(l->q[Q_ROLLBACK]) != SQLITE_DONE) {
		/* nothing better to do: the next BEGIN fails and says why */
	}
	q_done(l->q[Q_ROLLBACK]);
}

/* ---- open ---- */

/* A one-row pragma's first column as text. SQLITE_OK or sqlite's code. */
static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t out_len)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (out_len)
		out[0] = '\0';
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			const unsigned char *v = sqlite3_column_text(s, 0);
			snprintf(out, out_len, "%s", v ? (const char *)v : "");
			rc = SQLITE_OK;
		} else if (rc == SQLITE_DONE) {
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(s);
	return rc;
}

/* PRAGMA quick_check: 0 when it says ok; else ERR_STORAGE with its first
 * findings in msg. */
static int quick_check(sqlite3 *db, char *msg, size_t msg_len)
{
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA quick_check(%d)", RAFTLOG_CHECK_LINES_MAX);
	sqlite3_stmt *s = NULL;
	if (msg_len)
		msg[0] = '\0';
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) {
		snprintf(msg, msg_len, "%s", sqlite3_errmsg(db));
		return ERR_STORAGE;
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
			size_t end = n > 0 ? off + (size_t)n : off;
			for (; off < end && off < msg_len; off++) /* one line in a log */
				if (msg[off] == '\n')
					msg[off] = ' ';
		}
	}
	if (rc != SQLITE_DONE) {
		ok = 0;
		if (off < msg_len)
			snprintf(msg + off, msg_len - off, "%s%s", off ? "; " : "", sqlite3_errmsg(db));
	}
	sqlite3_finalize(s);
	return ok ? 0 : ERR_STORAGE;
}

/* Creates the schema in an empty file, upgrades a version 1 file (adds
 * base and snapshot), or checks that the file holds a schema we know; all
 * in one transaction, so an upgrade cut by a crash leaves version 1 as it
 * was. 0 or ERR_STORAGE with err set. */
static int raftlog_migrate(struct raftlog *l, char *err, size_t err_len)
{
	char v[32], app[32], tables[32];
	if (sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	/* read inside the write transaction: two openers must not both create */
	if (pragma_text(l->db, "PRAGMA user_version", v, sizeof(v)) != SQLITE_OK ||
	    pragma_text(l->db, "PRAGMA application_id", app, sizeof(app)) != SQLITE_OK ||
	    pragma_text(l->db, "SELECT count(*) FROM sqlite_master", tables, sizeof(tables)) !=
	            SQLITE_OK)
		goto fail;
	long version = strtol(v, NULL, 10);
	long app_id = strtol(app, NULL, 10);
	if (version == 0 && atol(tables) != 0) {
		snprintf(err, err_len,
		         "%s: holds tables but no raft log schema (user_version 0): not a raft.db",
		         l->path);
		goto refuse;
	}
	if (version != 0 && app_id != RAFTLOG_APP_ID) {
		snprintf(err, err_len, "%s: not a Chorus raft log (application_id %ld, want %ld)",
		         l->path, app_id, (long)RAFTLOG_APP_ID);
		goto refuse;
	}
	if (version > RAFTLOG_SCHEMA_VERSION) {
		snprintf(err, err_len,
		         "%s: schema version %ld is newer than this chorusd supports (%d); run a "
		         "newer chorusd",
		         l->path, version, RAFTLOG_SCHEMA_VERSION);
		goto refuse;
	}
	if (version < 0) {
		snprintf(err, err_len, "%s: schema version %ld is not one chorusd wrote", l->path,
		         version);
		goto refuse;
	}
	char sql[96];
	if (version == 0) {
		snprintf(sql, sizeof(sql), "PRAGMA application_id = %ld; PRAGMA user_version = %d",
		         (long)RAFTLOG_APP_ID, RAFTLOG_SCHEMA_VERSION);
		if (sqlite3_exec(l->db, raftlog_schema_v1, NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(l->db, raftlog_schema_v2, NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(l->db, sql, NULL, NULL, NULL) != SQLITE_OK)
			goto fail;
	} else if (version == 1) {
		/* a node from before compaction: its log starts at 1, no base row */
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", RAFTLOG_SCHEMA_VERSION);
		if (sqlite3_exec(l->db, raftlog_schema_v2, NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(l->db, sql, NULL, NULL, NULL) != SQLITE_OK)
			goto fail;
	}
	if (sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	if (version == 1)
		log_info("raftlog", "%s: schema upgraded from version 1 to %d (log compaction)",
		         l->path, RAFTLOG_SCHEMA_VERSION);
	return 0;
fail:
	snprintf(err, err_len, "%s: schema: %s", l->path, sqlite3_errmsg(l->db));
refuse:
	if (!sqlite3_get_autocommit(l->db))
		sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
	return ERR_STORAGE;
}

/* Scans PATH-wal before sqlite replays it (see the top comment). 0, or
 * ERR_STORAGE with err set when acknowledged commits would be dropped. */
static int wal_check(const char *path, char *err, size_t err_len)
{
	char wal[PATH_MAX + 8];
	snprintf(wal, sizeof(wal), "%s-wal", path);
	struct walscan ws;
	int rc = walscan_file(wal, &ws);
	if (rc > 0)
		return 0; /* no WAL: the last stop was clean */
	if (rc < 0) {
		snprintf(err, err_len, "%s: cannot read it to check it: %s", wal, strerror(errno));
		return ERR_STORAGE;
	}
	if (ws.header_bad) {
		/* a crash while a new WAL generation's header was written leaves
		 * this too (the frames behind it were checkpointed), so it is not
		 * proof of a loss */
		log_warn("raftlog", "%s: its header is damaged, so sqlite ignores the whole file", wal);
	} else if (ws.commits_lost && ws.last_txn_only) {
		log_warn("raftlog", "%s: the last transaction (%" PRIu32 " frame(s) from frame %" PRIu32
		                    ") was cut short by a crash inside its commit; it was never "
		                    "acknowledged and is dropped",
		         wal, ws.frames_lost, ws.first_bad + 1);
	} else if (ws.commits_lost) {
		snprintf(err, err_len,
		         "%s: frame %" PRIu32 " is damaged: sqlite would drop the %" PRIu32
		         " acknowledged commit(s) after it (terms, votes or entries this node has "
		         "answered with), so it is refused; restore the data dir or remove this "
		         "node and add it back with an empty one",
		         wal, ws.first_bad + 1, ws.commits_lost);
		return ERR_STORAGE;
	}
	return 0;
}

/* fsync(dir): a new file's name is durable only once its directory is. */
static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

int raftlog_open(struct raftlog **out, const char *dir, char *err, size_t err_len)
{
	assert(out && dir && err);
	*out = NULL;
	if (err_len)
		err[0] = '\0';
	if (access(dir, W_OK | X_OK) != 0) {
		snprintf(err, err_len, "data dir %s: %s", dir, strerror(errno));
		return ERR_STORAGE;
	}
	struct raftlog *l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, err_len, "raftlog: out of memory");
		return ERR_NOMEM;
	}
	if ((size_t)snprintf(l->path, sizeof(l->path), "%s/%s", dir, RAFTLOG_DB_NAME) >=
	    sizeof(l->path)) {
		snprintf(err, err_len, "data dir %s: %s", dir, strerror(ENAMETOOLONG));
		goto fail;
	}
	if (wal_check(l->path, err, err_len) != 0)
		goto fail;
	int rc = sqlite3_open_v2(l->path, &l->db,
	                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                         NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, err_len, "%s: %s", l->path,
		         l->db ? sqlite3_errmsg(l->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(l->db, 1);
	sqlite3_busy_timeout(l->db, RAFTLOG_BUSY_TIMEOUT_MS);

	/* Before anything writes: a damaged file is refused as it is. */
	char msg[384];
	if (quick_check(l->db, msg, sizeof(msg)) != 0) {
		snprintf(err, err_len, "%s: damaged, refused (quick_check: %s)", l->path, msg);
		goto fail;
	}

	char mode[32], sync[32];
	if (pragma_text(l->db, "PRAGMA journal_mode = WAL", mode, sizeof(mode)) != SQLITE_OK ||
	    sqlite3_exec(l->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK ||
	    /* a snapshot passes through the WAL: truncate it back after each
	     * checkpoint rather than keep a snapshot's worth of it for good */
	    sqlite3_exec(l->db, "PRAGMA journal_size_limit = 67108864", NULL, NULL, NULL) != SQLITE_OK ||
	    pragma_text(l->db, "PRAGMA synchronous", sync, sizeof(sync)) != SQLITE_OK) {
		snprintf(err, err_len, "%s: %s", l->path, sqlite3_errmsg(l->db));
		goto fail;
	}
	if (strcasecmp(mode, "wal") != 0) {
		snprintf(err, err_len, "%s: cannot use WAL journal (got '%s')", l->path, mode);
		goto fail;
	}
	if (strcmp(sync, "2") != 0) { /* 2 = FULL */
		snprintf(err, err_len, "%s: synchronous is %s, not FULL (2)", l->path, sync);
		goto fail;
	}

	if (raftlog_migrate(l, err, err_len) != 0)
		goto fail;
	for (int i = 0; i < Q_COUNT; i++) {
		assert(raftlog_sql[i]);
		if (sqlite3_prepare_v3(l->db, raftlog_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &l->q[i],
		                       NULL) != SQLITE_OK) {
			snprintf(err, err_len, "%s: prepare: %s", l->path, sqlite3_errmsg(l->db));
			goto fail;
		}
	}
	if (sync_dir(dir) != 0) {
		snprintf(err, err_len, "data dir %s: fsync: %s", dir, strerror(errno));
		goto fail;
	}
	*out = l;
	return 0;
fail:
	raftlog_close(l);
	return ERR_STORAGE;
}

void raftlog_close(struct raftlog *l)
{
	if (!l)
		return;
	raftlog_release_loaded(l);
	for (int i = 0; i < Q_COUNT; i++)
		sqlite3_finalize(l->q[i]);
	/* finalized above, so close cannot be refused for open statements;
	 * sqlite3_close(NULL) is a no-op */
	sqlite3_close(l->db);
	free(l);
}

/* ---- load ---- */

void raftlog_release_loaded(struct raftlog *l)
{
	for (uint32_t i = 0; i < l->loaded_count; i++)
		free(l->loaded[i].data);
	free(l->loaded);
	l->loaded = NULL;
	l->loaded_count = 0;
	free(l->loaded_snap);
	l->loaded_snap = NULL;
}

/* Reads and checks the hard state row. 0, ERR_STORAGE. */
static int hard_read(struct raftlog *l, struct raft_hard *hard)
{
	sqlite3_stmt *s = l->q[Q_HARD_GET];
	int ret = 0;
	memset(hard, 0, sizeof(*hard));
	int rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		ret = rl_fail(l, ERR_STORAGE, "hard state row is missing");
		goto out;
	}
	if (rc != SQLITE_ROW) {
		ret = rl_sqlfail(l, "read hard state");
		goto out;
	}
	if (sqlite3_column_type(s, 0) != SQLITE_INTEGER || sqlite3_column_int64(s, 0) < 0) {
		ret = rl_fail(l, ERR_STORAGE, "hard state term is not an integer >= 0");
		goto out;
	}
	hard->term = (uint64_t)sqlite3_column_int64(s, 0);
	int vt = sqlite3_column_type(s, 1);
	if (vt == SQLITE_BLOB) {
		const void *v = sqlite3_column_blob(s, 1);
		int vlen = sqlite3_column_bytes(s, 1);
		if (vlen != RAFT_ID_BYTES) {
			ret = rl_fail(l, ERR_STORAGE, "hard state vote is %d bytes, not %d or NULL", vlen,
			              RAFT_ID_BYTES);
			goto out;
		}
		memcpy(hard->vote.b, v, RAFT_ID_BYTES);
		hard->has_vote = 1;
	} else if (vt != SQLITE_NULL) {
		ret = rl_fail(l, ERR_STORAGE, "hard state vote is not a blob");
		goto out;
	}
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		ret = rl_fail(l, ERR_STORAGE, "hard state has more than one row");
	else if (rc != SQLITE_DONE)
		ret = rl_sqlfail(l, "read hard state");
out:
	q_done(s);
	if (ret != 0)
		memset(hard, 0, sizeof(*hard));
	return ret;
}

/* What is wrong with a base or snapshot point that is about to be written
 * or was read: 0, or 1 with the reason in why. Raft needs at least one
 * voter; an all-zero id means "none" (struct raft_hard); a voter listed
 * twice would count twice in a quorum. */
static int point_fault(const struct raft_point *p, char *why, size_t why_len)
{
	static const struct raft_id zero;
	if (p->index > RAFT_INDEX_MAX) {
		snprintf(why, why_len, "over the index limit %llu", RAFT_INDEX_MAX);
		return 1;
	}
	if (p->term > (uint64_t)INT64_MAX) {
		snprintf(why, why_len, "term %" PRIu64 " does not fit the file", p->term);
		return 1;
	}
	if (p->n_voters == 0 || p->n_voters > RAFT_VOTERS_MAX) {
		snprintf(why, why_len, "%" PRIu32 " voters, want 1..%d", p->n_voters, RAFT_VOTERS_MAX);
		return 1;
	}
	for (uint32_t i = 0; i < p->n_voters; i++) {
		if (raft_id_eq(&p->voters[i], &zero)) {
			snprintf(why, why_len, "voter %" PRIu32 " is the all-zero id", i);
			return 1;
		}
		for (uint32_t j = 0; j < i; j++) {
			if (raft_id_eq(&p->voters[i], &p->voters[j])) {
				snprintf(why, why_len, "voter %" PRIu32 " repeats voter %" PRIu32, i, j);
				return 1;
			}
		}
	}
	return 0;
}

/* Fills p from columns 0..2 (idx, term, voters) of the row statement s is
 * on, checked as input from outside. what: "base" or "snapshot". 0,
 * ERR_STORAGE. */
static int point_parse(struct raftlog *l, sqlite3_stmt *s, const char *what, struct raft_point *p)
{
	memset(p, 0, sizeof(*p));
	if (sqlite3_column_type(s, 0) != SQLITE_INTEGER || sqlite3_column_int64(s, 0) < 0)
		return rl_fail(l, ERR_STORAGE, "%s index is not an integer >= 0", what);
	p->index = (uint64_t)sqlite3_column_int64(s, 0);
	if (sqlite3_column_type(s, 1) != SQLITE_INTEGER || sqlite3_column_int64(s, 1) < 0)
		return rl_fail(l, ERR_STORAGE, "%s term is not an integer >= 0", what);
	p->term = (uint64_t)sqlite3_column_int64(s, 1);
	if (sqlite3_column_type(s, 2) != SQLITE_BLOB)
		return rl_fail(l, ERR_STORAGE, "%s voters is not a blob", what);
	const void *v = sqlite3_column_blob(s, 2);
	int len = sqlite3_column_bytes(s, 2);
	if (len < 0 || len % RAFT_ID_BYTES != 0)
		return rl_fail(l, ERR_STORAGE, "%s voters: %d bytes, not a whole number of %d-byte ids",
		               what, len, RAFT_ID_BYTES);
	if (len / RAFT_ID_BYTES > RAFT_VOTERS_MAX)
		return rl_fail(l, ERR_STORAGE, "%s voters: %d ids, more than the limit %d", what,
		               len / RAFT_ID_BYTES, RAFT_VOTERS_MAX);
	p->n_voters = (uint32_t)(len / RAFT_ID_BYTES);
	if (len > 0)
		memcpy(p->voters, v, (size_t)len);
	char why[96];
	if (point_fault(p, why, sizeof(why)))
		return rl_fail(l, ERR_STORAGE, "%s at index %" PRIu64 ": %s", what, p->index, why);
	return 0;
}

/* Steps statement qi over a one-row table (base, snapshot) and parses the
 * point in its first columns. *present 0 and p zero when the table is
 * empty. The statement stays on the row for more columns; the caller ends
 * it with row_single() and q_done(). 0, ERR_STORAGE. */
static int point_step(struct raftlog *l, int qi, const char *what, struct raft_point *p,
                      int *present)
{
	memset(p, 0, sizeof(*p));
	*present = 0;
	int rc = sqlite3_step(l->q[qi]);
	if (rc == SQLITE_DONE)
		return 0;
	if (rc != SQLITE_ROW)
		return rl_fail(l, ERR_STORAGE, "read %s: %s", what, sqlite3_errmsg(l->db));
	int ret = point_parse(l, l->q[qi], what, p);
	if (ret == 0)
		*present = 1;
	return ret;
}

/* After the row of a one-row table: a second one is damage to name (the
 * CHECK (id = 1) can be switched off by whoever wrote the file). */
static int row_single(struct raftlog *l, int qi, const char *what)
{
	int rc = sqlite3_step(l->q[qi]);
	if (rc == SQLITE_ROW)
		return rl_fail(l, ERR_STORAGE, "%s has more than one row", what);
	if (rc != SQLITE_DONE)
		return rl_fail(l, ERR_STORAGE, "read %s: %s", what, sqlite3_errmsg(l->db));
	return 0;
}

/* Reads the base row (Q_BASE_GET) or the snapshot's point (Q_SNAP_AT). */
static int point_read(struct raftlog *l, int qi, const char *what, struct raft_point *p,
                      int *present)
{
	assert(qi == Q_BASE_GET || qi == Q_SNAP_AT);
	int ret = point_step(l, qi, what, p, present);
	if (ret == 0 && *present)
		ret = row_single(l, qi, what);
	q_done(l->q[qi]);
	if (ret != 0) {
		memset(p, 0, sizeof(*p));
		*present = 0;
	}
	return ret;
}

/* The snapshot's len bytes, from the row with this rowid, into
 * l->loaded_snap: incremental blob I/O reads them into our buffer without
 * a second copy inside sqlite. 0, ERR_STORAGE, ERR_NOMEM. */
static int snap_bytes_read(struct raftlog *l, int64_t rowid, uint64_t len)
{
	assert(!l->loaded_snap && len > 0 && len <= RAFT_SNAPSHOT_BYTES_MAX);
	sqlite3_blob *b = NULL;
	int ret = 0;
	if (sqlite3_blob_open(l->db, "main", "snapshot", "data", rowid, 0, &b) != SQLITE_OK) {
		ret = rl_sqlfail(l, "read snapshot data");
		goto out;
	}
	if ((uint64_t)sqlite3_blob_bytes(b) != len) { /* one read transaction: cannot change */
		ret = rl_fail(l, ERR_STORAGE, "snapshot data: %d bytes, the row said %" PRIu64,
		              sqlite3_blob_bytes(b), len);
		goto out;
	}
	l->loaded_snap = malloc((size_t)len);
	if (!l->loaded_snap) {
		ret = rl_fail(l, ERR_NOMEM, "snapshot of %" PRIu64 " bytes: out of memory", len);
		goto out;
	}
	/* len <= RAFT_SNAPSHOT_BYTES_MAX (512 MiB) fits the int of blob_read */
	if (sqlite3_blob_read(b, l->loaded_snap, (int)len, 0) != SQLITE_OK)
		ret = rl_sqlfail(l, "read snapshot data");
out:
	sqlite3_blob_close(b); /* NULL is a no-op */
	return ret;
}

/* Reads and checks the snapshot row with its bytes (into l->loaded_snap).
 * snap zero and *present 0 when there is none. 0, ERR_STORAGE, ERR_NOMEM. */
static int snap_load(struct raftlog *l, struct raft_snapshot *snap, int *present)
{
	sqlite3_stmt *s = l->q[Q_SNAP_GET];
	memset(snap, 0, sizeof(*snap));
	int64_t rowid = 0, len = 0;
	int ret = point_step(l, Q_SNAP_GET, "snapshot", &snap->at, present);
	if (ret == 0 && *present) {
		rowid = sqlite3_column_int64(s, 3);
		const unsigned char *type = sqlite3_column_text(s, 4);
		len = sqlite3_column_int64(s, 5);
		if (snap->at.index == 0)
			ret = rl_fail(l, ERR_STORAGE, "snapshot is at index 0");
		else if (!type || strcmp((const char *)type, "blob") != 0)
			ret = rl_fail(l, ERR_STORAGE, "snapshot data is not a blob");
		else if (len < 0 || (uint64_t)len > RAFT_SNAPSHOT_BYTES_MAX)
			ret = rl_fail(l, ERR_STORAGE,
			              "snapshot holds %" PRId64 " bytes, more than the limit %llu", len,
			              RAFT_SNAPSHOT_BYTES_MAX);
		else
			ret = row_single(l, Q_SNAP_GET, "snapshot");
	}
	q_done(s);
	if (ret == 0 && len > 0)
		ret = snap_bytes_read(l, rowid, (uint64_t)len);
	if (ret != 0) {
		memset(snap, 0, sizeof(*snap));
		*present = 0;
		return ret;
	}
	snap->data = l->loaded_snap;
	snap->len = (uint64_t)len;
	return 0;
}

/* Checks one log row against the rules of the file (see raftlog.h) and
 * fills e, data copied. prev: the entry before it (NULL for the first,
 * which follows the base). */
static int entry_read(struct raftlog *l, sqlite3_stmt *s, const struct raft_hard *hard,
                      const struct raft_point *base, const struct raft_entry *prev,
                      struct raft_entry *e)
{
	int64_t idx = sqlite3_column_int64(s, 0);
	uint64_t want = prev ? prev->index + 1 : base->index + 1;
	if (idx < 0 || (uint64_t)idx != want) {
		if (!prev)
			return rl_fail(l, ERR_STORAGE, "log starts at index %" PRId64 ", not %" PRIu64,
			               idx, want);
		return rl_fail(l, ERR_STORAGE, "log index %" PRId64 " follows %" PRIu64, idx,
		               prev->index);
	}
	e->index = want;
	if (sqlite3_column_type(s, 1) != SQLITE_INTEGER || sqlite3_column_int64(s, 1) < 0)
		return rl_fail(l, ERR_STORAGE, "log index %" PRIu64 ": term is not an integer >= 0",
		               e->index);
	e->term = (uint64_t)sqlite3_column_int64(s, 1);
	if (prev && e->term < prev->term)
		return rl_fail(l, ERR_STORAGE,
		               "log index %" PRIu64 " has term %" PRIu64 ", lower than index %" PRIu64
		               "'s term %" PRIu64,
		               e->index, e->term, prev->index, prev->term);
	if (!prev && e->term < base->term)
		return rl_fail(l, ERR_STORAGE,
		               "log index %" PRIu64 " has term %" PRIu64
		               ", lower than the base's term %" PRIu64 " (index %" PRIu64 ")",
		               e->index, e->term, base->term, base->index);
	if (e->term > hard->term)
		return rl_fail(l, ERR_STORAGE,
		               "log index %" PRIu64 " has term %" PRIu64
		               ", above the hard state's term %" PRIu64,
		               e->index, e->term, hard->term);
	int64_t type = sqlite3_column_int64(s, 2);
	if (sqlite3_column_type(s, 2) != SQLITE_INTEGER || type < RAFT_ENTRY_NOOP ||
	    type > RAFT_ENTRY_CONFIG)
		return rl_fail(l, ERR_STORAGE, "log index %" PRIu64 " has an unknown type", e->index);
	e->type = (uint8_t)type;
	int dt = sqlite3_column_type(s, 3);
	if (dt != SQLITE_BLOB && dt != SQLITE_NULL)
		return rl_fail(l, ERR_STORAGE, "log index %" PRIu64 ": data is not a blob", e->index);
	const void *data = sqlite3_column_blob(s, 3);
	int len = sqlite3_column_bytes(s, 3);
	if (len < 0 || (uint64_t)len > RAFT_ENTRY_BYTES_MAX)
		return rl_fail(l, ERR_STORAGE,
		               "log index %" PRIu64 " holds %d bytes, more than the entry limit %u",
		               e->index, len, RAFT_ENTRY_BYTES_MAX);
	e->len = (uint32_t)len;
	e->data = NULL;
	if (len > 0) {
		e->data = malloc((size_t)len);
		if (!e->data)
			return rl_fail(l, ERR_NOMEM, "log index %" PRIu64 ": out of memory", e->index);
		memcpy(e->data, data, (size_t)len);
	}
	return 0;
}

/* Reads the log that follows base into l->loaded (base.index+1 .. last,
 * no gap). 0, ERR_STORAGE, ERR_NOMEM. */
static int log_load(struct raftlog *l, const struct raft_hard *hard, const struct raft_point *base)
{
	sqlite3_stmt *s = l->q[Q_LOG_MAX];
	int rc = sqlite3_step(s);
	int64_t last = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
	q_done(s);
	if (rc != SQLITE_ROW)
		return rl_sqlfail(l, "read last log index");
	/* the bounds are checked before anything is allocated or read */
	if (last > (int64_t)RAFT_INDEX_MAX)
		return rl_fail(l, ERR_STORAGE, "log reaches index %" PRId64 ", beyond the index limit %llu",
		               last, RAFT_INDEX_MAX);
	/* rows at or below the base (only those: last <= base) leave no room,
	 * and the first of them is refused below */
	int64_t room = last > (int64_t)base->index ? last - (int64_t)base->index : 0;
	if (room > (int64_t)RAFT_LOG_ENTRIES_MAX)
		return rl_fail(l, ERR_STORAGE,
		               "log spans index %" PRIu64 " to %" PRId64 ": %" PRId64
		               " entries, beyond the limit %u",
		               base->index + 1, last, room, RAFT_LOG_ENTRIES_MAX);
	struct raft_entry *es = NULL;
	if (room > 0) {
		es = calloc((size_t)room, sizeof(*es));
		if (!es)
			return rl_fail(l, ERR_NOMEM, "log of %" PRId64 " entries: out of memory", room);
	}
	l->loaded = es;
	s = l->q[Q_LOG_ALL];
	uint32_t got = 0;
	int ret = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((int64_t)got == room) { /* rows at or below the base, which precede the rest */
			ret = rl_fail(l, ERR_STORAGE, "log starts at index %" PRId64 ", not %" PRIu64,
			              (int64_t)sqlite3_column_int64(s, 0), base->index + 1);
			break;
		}
		ret = entry_read(l, s, hard, base, got ? &es[got - 1] : NULL, &es[got]);
		if (ret != 0)
			break;
		l->loaded_count = ++got;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = rl_sqlfail(l, "read log");
	q_done(s);
	/* got < room is impossible: rows base+1..base+got with no gap and
	 * max = last */
	assert(ret != 0 || (int64_t)got == room);
	return ret;
}

/* The rules that tie the base, the snapshot and the log together
 * (raftlog.h; the terms against the hard state are checked as they are
 * read). n: the entries loaded after the base. */
static int points_check(struct raftlog *l, const struct raft_point *base,
                        const struct raft_snapshot *snap, int has_snap, uint32_t n)
{
	if (base->index > 0 && !has_snap)
		return rl_fail(l, ERR_STORAGE,
		               "the log is compacted up to index %" PRIu64 " but there is no snapshot",
		               base->index);
	if (!has_snap)
		return 0;
	uint64_t at = snap->at.index, last = base->index + n;
	if (at < base->index)
		return rl_fail(l, ERR_STORAGE, "snapshot at index %" PRIu64 " is below the base %" PRIu64,
		               at, base->index);
	if (at > last)
		return rl_fail(l, ERR_STORAGE,
		               "snapshot at index %" PRIu64 " is beyond the last index %" PRIu64, at,
		               last);
	/* the snapshot is a point of this log: same term as the entry there */
	uint64_t term = at == base->index ? base->term : l->loaded[at - base->index - 1].term;
	if (snap->at.term != term)
		return rl_fail(l, ERR_STORAGE,
		               "snapshot at index %" PRIu64 " has term %" PRIu64
		               ", the log's term there is %" PRIu64,
		               at, snap->at.term, term);
	return 0;
}

int raftlog_load(struct raftlog *l, struct raft_hard *hard, struct raft_point *base,
                 struct raft_snapshot *snap, const struct raft_entry **entries, uint32_t *n)
{
	assert(l && hard && base && snap && entries && n);
	raftlog_release_loaded(l);
	memset(hard, 0, sizeof(*hard));
	memset(base, 0, sizeof(*base));
	memset(snap, 0, sizeof(*snap));
	*entries = NULL;
	*n = 0;

	/* one read transaction: every table as of the same commit */
	int ret = q_exec(l, Q_BEGIN_READ, "begin");
	if (ret != 0)
		return ret;
	struct raft_hard h;
	struct raft_point b;
	struct raft_snapshot sn;
	int has_base = 0, has_snap = 0;
	ret = hard_read(l, &h);
	if (ret == 0)
		ret = point_read(l, Q_BASE_GET, "base", &b, &has_base);
	if (ret == 0 && b.term > h.term) /* the log's terms are checked against both */
		ret = rl_fail(l, ERR_STORAGE,
		              "base at index %" PRIu64 " has term %" PRIu64
		              ", above the hard state's term %" PRIu64,
		              b.index, b.term, h.term);
	if (ret == 0)
		ret = snap_load(l, &sn, &has_snap);
	if (ret == 0)
		ret = log_load(l, &h, &b);
	if (ret == 0)
		ret = points_check(l, &b, &sn, has_snap, l->loaded_count);
	rl_rollback(l); /* a read transaction: nothing to commit */
	if (ret != 0) {
		raftlog_release_loaded(l);
		return ret;
	}
	*hard = h;
	*base = b;
	*snap = sn;
	*entries = l->loaded;
	*n = l->loaded_count;
	return 0;
}

/* ---- persist ---- */

static const char failed_msg[] = "an earlier commit failed with an I/O error: stop and reopen";

/* Checks a ready against the state it would replace (Raft §5.2: the term
 * never goes back and one vote per term; §5.3: the log has no gap). Only
 * the parts that need no disk; the rest is checked inside the transaction. */
static int ready_check(struct raftlog *l, const struct raft_ready *rd,
                       const struct raft_hard *old, const struct raft_hard *new)
{
	if (new->term > (uint64_t)INT64_MAX)
		return rl_fail(l, ERR_INVALID, "term %" PRIu64 " does not fit the file", new->term);
	if (new->term < old->term)
		return rl_fail(l, ERR_INVALID, "term would go back from %" PRIu64 " to %" PRIu64,
		               old->term, new->term);
	if (new->term == old->term && old->has_vote &&
	    (!new->has_vote || !raft_id_eq(&new->vote, &old->vote)))
		return rl_fail(l, ERR_INVALID, "the vote of term %" PRIu64 " would change",
		               new->term);
	const struct raft_snapshot *sn = rd->snapshot;
	if (sn) {
		char why[96];
		assert(sn->len == 0 || sn->data);
		if (sn->at.index == 0)
			return rl_fail(l, ERR_INVALID, "snapshot is at index 0");
		if (point_fault(&sn->at, why, sizeof(why)))
			return rl_fail(l, ERR_INVALID, "snapshot at index %" PRIu64 ": %s", sn->at.index,
			               why);
		if (sn->at.term > new->term)
			return rl_fail(l, ERR_INVALID,
			               "snapshot at index %" PRIu64 " has term %" PRIu64
			               ", above the hard state's term %" PRIu64,
			               sn->at.index, sn->at.term, new->term);
		if (sn->len > RAFT_SNAPSHOT_BYTES_MAX)
			return rl_fail(l, ERR_INVALID,
			               "snapshot of %" PRIu64 " bytes, more than the limit %llu", sn->len,
			               RAFT_SNAPSHOT_BYTES_MAX);
	}
	for (uint32_t i = 0; i < rd->n_append; i++) {
		const struct raft_entry *e = &rd->append[i];
		if (i > 0 && e->index != rd->append[i - 1].index + 1)
			return rl_fail(l, ERR_INVALID, "append: index %" PRIu64 " follows %" PRIu64,
			               e->index, rd->append[i - 1].index);
		if (i > 0 && e->term < rd->append[i - 1].term)
			return rl_fail(l, ERR_INVALID,
			               "append: index %" PRIu64 " has term %" PRIu64
			               ", lower than the one before",
			               e->index, e->term);
		if (e->term > new->term)
			return rl_fail(l, ERR_INVALID,
			               "append: index %" PRIu64 " has term %" PRIu64
			               ", above the hard state's term %" PRIu64,
			               e->index, e->term, new->term);
		if (e->len > RAFT_ENTRY_BYTES_MAX)
			return rl_fail(l, ERR_INVALID,
			               "append: index %" PRIu64 " holds %" PRIu32
			               " bytes, more than the entry limit %u",
			               e->index, e->len, RAFT_ENTRY_BYTES_MAX);
		if (e->type > RAFT_ENTRY_CONFIG)
			return rl_fail(l, ERR_INVALID, "append: index %" PRIu64 " has unknown type %u",
			               e->index, e->type);
		if (e->index > RAFT_INDEX_MAX)
			return rl_fail(l, ERR_INVALID,
			               "append: index %" PRIu64 " is over the index limit %llu", e->index,
			               RAFT_INDEX_MAX);
	}
	return 0;
}

/* The last point of the stored log: its last entry, or the base when it
 * holds none. Read, not cached (top comment), so it is right inside a
 * transaction that already deleted or installed something. */
static int log_last(struct raftlog *l, const struct raft_point *base, uint64_t *index,
                    uint64_t *term)
{
	sqlite3_stmt *s = l->q[Q_LOG_LAST];
	*index = base->index;
	*term = base->term;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_int64(s, 0) > (int64_t)base->index) {
		*index = (uint64_t)sqlite3_column_int64(s, 0);
		*term = (uint64_t)sqlite3_column_int64(s, 1);
	}
	q_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return rl_sqlfail(l, "read last log entry");
	return 0;
}

/* The term at index: the base's, or that of the stored entry. *found 0 when
 * the log holds no such point (below the base, beyond the end). */
static int term_at(struct raftlog *l, const struct raft_point *base, uint64_t index,
                   uint64_t *term, int *found)
{
	*term = 0;
	*found = 0;
	if (index == base->index) {
		*term = base->term;
		*found = 1;
		return 0;
	}
	if (index < base->index || index > RAFT_INDEX_MAX)
		return 0;
	sqlite3_stmt *s = l->q[Q_LOG_TERM];
	sqlite3_bind_int64(s, 1, (sqlite3_int64)index);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*term = (uint64_t)sqlite3_column_int64(s, 0);
		*found = 1;
	}
	q_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return rl_sqlfail(l, "read log term");
	return 0;
}

/* Writes the base row (snap NULL) or the snapshot row (point snap->at). */
static int point_write(struct raftlog *l, const struct raft_point *p,
                       const struct raft_snapshot *snap)
{
	static const uint8_t empty[1];
	int qi = snap ? Q_SNAP_PUT : Q_BASE_PUT;
	sqlite3_stmt *s = l->q[qi];
	assert(p->n_voters >= 1 && p->n_voters <= RAFT_VOTERS_MAX);
	sqlite3_bind_int64(s, 1, (sqlite3_int64)p->index);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)p->term);
	sqlite3_bind_blob(s, 3, p->voters, (int)(p->n_voters * RAFT_ID_BYTES), SQLITE_STATIC);
	if (snap) {
		/* a zero-length blob, not NULL, when empty; bound, not copied:
		 * sqlite copies it once into the row it builds */
		int rc = sqlite3_bind_blob64(s, 4, snap->len ? (const void *)snap->data
		                                             : (const void *)empty,
		                             snap->len, SQLITE_STATIC);
		if (rc != SQLITE_OK) {
			int ret = rl_fail(l, ERR_STORAGE,
			                  "write snapshot of %" PRIu64 " bytes: %s (sqlite's limit is %d)",
			                  snap->len, sqlite3_errstr(rc),
			                  sqlite3_limit(l->db, SQLITE_LIMIT_LENGTH, -1));
			q_done(s);
			return ret;
		}
	}
	return q_exec(l, qi, snap ? "write snapshot" : "write base");
}

/* Stores snap and base and deletes the entries up to base->index: the
 * writes compaction and a snapshot install share. */
static int compaction_write(struct raftlog *l, const struct raft_snapshot *snap,
                            const struct raft_point *base)
{
	int ret = point_write(l, &snap->at, snap);
	if (ret == 0)
		ret = point_write(l, base, NULL);
	if (ret == 0) {
		sqlite3_bind_int64(l->q[Q_LOG_COMPACT], 1, (sqlite3_int64)base->index);
		ret = q_exec(l, Q_LOG_COMPACT, "delete compacted entries");
	}
	return ret;
}

/* A snapshot from the leader (Raft §7, InstallSnapshot): it replaces the
 * stored one and becomes the base; the entries it covers go. The entries
 * after it may stay only when the log holds its last entry with the same
 * term; otherwise the whole log is discarded, and the core says so with
 * truncate_from <= at.index + 1. *base becomes the snapshot's point. */
static int snapshot_install(struct raftlog *l, const struct raft_ready *rd,
                            struct raft_point *base)
{
	const struct raft_snapshot *sn = rd->snapshot;
	struct raft_point old;
	int has_old;
	int ret = point_read(l, Q_SNAP_AT, "snapshot", &old, &has_old);
	if (ret != 0)
		return ret;
	/* the state machine never goes back to an older state */
	if (sn->at.index < base->index)
		return rl_fail(l, ERR_INVALID,
		               "snapshot at index %" PRIu64 " is below the stored base %" PRIu64,
		               sn->at.index, base->index);
	if (has_old && sn->at.index < old.index)
		return rl_fail(l, ERR_INVALID,
		               "snapshot at index %" PRIu64 " is older than the stored one at index %" PRIu64,
		               sn->at.index, old.index);
	uint64_t last_index, last_term;
	ret = log_last(l, base, &last_index, &last_term);
	if (ret != 0)
		return ret;
	uint64_t kept_last = last_index;
	if (rd->truncate_from && rd->truncate_from - 1 < kept_last)
		kept_last = rd->truncate_from - 1;
	if (kept_last > sn->at.index) {
		uint64_t term;
		int found;
		ret = term_at(l, base, sn->at.index, &term, &found);
		if (ret != 0)
			return ret;
		if (!found)
			return rl_fail(l, ERR_STORAGE, "log has no entry at index %" PRIu64
			                               " (base %" PRIu64 ", last %" PRIu64 ")",
			               sn->at.index, base->index, last_index);
		if (term != sn->at.term)
			return rl_fail(l, ERR_INVALID,
			               "snapshot at index %" PRIu64 " has term %" PRIu64
			               " but the log it keeps has term %" PRIu64
			               " there (Raft §7: a log that does not match is discarded whole)",
			               sn->at.index, sn->at.term, term);
	}
	ret = compaction_write(l, sn, &sn->at);
	if (ret == 0)
		*base = sn->at;
	return ret;
}

/* A truncation without a snapshot in the ready: the entries up to the
 * base and the snapshot are committed (a snapshot holds applied entries
 * only), and Raft never removes a committed entry (§5.4); the file would
 * also be one load refuses (a snapshot beyond the last index). With a
 * snapshot in the ready, any truncate_from <= at.index + 1 means the same:
 * nothing after the snapshot stays. */
static int truncate_check(struct raftlog *l, uint64_t from, const struct raft_point *base)
{
	struct raft_point sp;
	int has_sp;
	int ret = point_read(l, Q_SNAP_AT, "snapshot", &sp, &has_sp);
	if (ret != 0)
		return ret;
	uint64_t committed = has_sp && sp.index > base->index ? sp.index : base->index;
	if (from <= committed)
		return rl_fail(l, ERR_INVALID,
		               "truncate from index %" PRIu64 ": the entries up to %" PRIu64
		               " are committed (base %" PRIu64 ", snapshot %" PRIu64 ")",
		               from, committed, base->index, has_sp ? sp.index : 0);
	return 0;
}

/* Appends rd's entries after what is left of the log. */
static int append_tx(struct raftlog *l, const struct raft_ready *rd, const struct raft_point *base)
{
	const struct raft_entry *first = &rd->append[0], *end = &rd->append[rd->n_append - 1];
	/* the limit counts entries held, not the index (snapshots compact) */
	if (end->index > base->index && end->index - base->index > RAFT_LOG_ENTRIES_MAX)
		return rl_fail(l, ERR_INVALID,
		               "append: index %" PRIu64 " would make the log hold %" PRIu64
		               " entries, over the log limit %u",
		               end->index, end->index - base->index, RAFT_LOG_ENTRIES_MAX);

	/* the appended run must continue what is left of the log */
	uint64_t last_index, last_term;
	int ret = log_last(l, base, &last_index, &last_term);
	if (ret != 0)
		return ret;
	if (first->index != last_index + 1)
		return rl_fail(l, ERR_INVALID, "append: index %" PRIu64 " follows %" PRIu64,
		               first->index, last_index);
	if (first->term < last_term)
		return rl_fail(l, ERR_INVALID,
		               "append: index %" PRIu64 " has term %" PRIu64
		               ", lower than index %" PRIu64 "'s term %" PRIu64,
		               first->index, first->term, last_index, last_term);

	static const uint8_t empty[1];
	sqlite3_stmt *s = l->q[Q_LOG_APPEND];
	for (uint32_t i = 0; i < rd->n_append; i++) {
		const struct raft_entry *e = &rd->append[i];
		assert(e->len == 0 || e->data);
		sqlite3_bind_int64(s, 1, (sqlite3_int64)e->index);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)e->term);
		sqlite3_bind_int(s, 3, e->type);
		/* a zero-length blob, not NULL: the column always holds a blob */
		sqlite3_bind_blob(s, 4, e->len ? (const void *)e->data : (const void *)empty,
		                  (int)e->len, SQLITE_STATIC);
		ret = q_exec(l, Q_LOG_APPEND, "append to log");
		if (ret != 0)
			return ret;
	}
	return 0;
}

/* The writes of one persist, inside its transaction, in the order of
 * raftlog.h: hard state, snapshot, truncation, appends. */
static int persist_tx(struct raftlog *l, const struct raft_ready *rd)
{
	struct raft_hard old;
	int ret = hard_read(l, &old);
	if (ret != 0)
		return ret;
	const struct raft_hard *new = rd->hard_changed ? &rd->hard : &old;
	ret = ready_check(l, rd, &old, new);
	if (ret != 0)
		return ret;
	/* the point the log follows: the stored base, then the snapshot's */
	struct raft_point base;
	int has_base = 0;
	memset(&base, 0, sizeof(base));
	if (rd->snapshot || rd->truncate_from || rd->n_append) {
		ret = point_read(l, Q_BASE_GET, "base", &base, &has_base);
		if (ret != 0)
			return ret;
	}

	if (rd->hard_changed) {
		sqlite3_stmt *s = l->q[Q_HARD_PUT];
		sqlite3_bind_int64(s, 1, (sqlite3_int64)new->term);
		if (new->has_vote)
			sqlite3_bind_blob(s, 2, new->vote.b, RAFT_ID_BYTES, SQLITE_STATIC);
		ret = q_exec(l, Q_HARD_PUT, "write hard state");
		if (ret != 0)
			return ret;
	}
	if (rd->snapshot) {
		ret = snapshot_install(l, rd, &base);
		if (ret != 0)
			return ret;
	}
	if (rd->truncate_from && !rd->snapshot) {
		ret = truncate_check(l, rd->truncate_from, &base);
		if (ret != 0)
			return ret;
	}
	if (rd->truncate_from) {
		sqlite3_bind_int64(l->q[Q_LOG_TRUNCATE], 1,
		                   rd->truncate_from > (uint64_t)INT64_MAX ? INT64_MAX
		                                                           : (int64_t)rd->truncate_from);
		ret = q_exec(l, Q_LOG_TRUNCATE, "truncate log");
		if (ret != 0)
			return ret;
	}
	if (rd->n_append == 0)
		return 0;
	return append_tx(l, rd, &base);
}

/* Commits the write transaction: fsynced on return (synchronous = FULL).
 * An I/O error marks the raftlog failed (top comment). */
static int rl_commit(struct raftlog *l)
{
	sqlite3_stmt *c = l->q[Q_COMMIT];
	int ret = 0;
	int rc = sqlite3_step(c);
	if (rc != SQLITE_DONE) {
		ret = rl_sqlfail(l, "commit");
		if ((rc & 0xff) == SQLITE_IOERR)
			l->failed = 1;
	}
	q_done(c);
	if (ret != 0)
		rl_rollback(l);
	return ret;
}

int raftlog_persist(struct raftlog *l, const struct raft_ready *rd)
{
	assert(l && rd);
	assert(rd->n_append == 0 || rd->append);
	if (l->failed)
		return rl_fail(l, ERR_STORAGE, "%s", failed_msg);
	if (!rd->hard_changed && !rd->snapshot && !rd->truncate_from && !rd->n_append)
		return 0;
	int ret = q_exec(l, Q_BEGIN, "begin");
	if (ret != 0)
		return ret;
	ret = persist_tx(l, rd);
	if (ret != 0) {
		rl_rollback(l);
		return ret;
	}
	return rl_commit(l);
}

int raftlog_broken(const struct raftlog *l)
{
	return l->failed;
}

/* ---- compact ---- */

/* The checks of a compaction that need no disk. */
static int compact_check(struct raftlog *l, const struct raft_snapshot *snap,
                         const struct raft_point *base)
{
	char why[96];
	if (snap->at.index == 0)
		return rl_fail(l, ERR_INVALID, "compact: the snapshot is at index 0");
	if (point_fault(&snap->at, why, sizeof(why)))
		return rl_fail(l, ERR_INVALID, "compact: snapshot at index %" PRIu64 ": %s",
		               snap->at.index, why);
	if (point_fault(base, why, sizeof(why)))
		return rl_fail(l, ERR_INVALID, "compact: base at index %" PRIu64 ": %s", base->index,
		               why);
	if (snap->len > RAFT_SNAPSHOT_BYTES_MAX)
		return rl_fail(l, ERR_INVALID,
		               "compact: snapshot of %" PRIu64 " bytes, more than the limit %llu",
		               snap->len, RAFT_SNAPSHOT_BYTES_MAX);
	if (base->index > snap->at.index)
		return rl_fail(l, ERR_INVALID,
		               "compact: base index %" PRIu64 " is above the snapshot's %" PRIu64,
		               base->index, snap->at.index);
	return 0;
}

/* A point handed to compact must be a point of the stored log: same term
 * as the entry (or base) at its index. */
static int compact_point_check(struct raftlog *l, const struct raft_point *stored_base,
                               const char *what, const struct raft_point *p)
{
	uint64_t term;
	int found;
	int ret = term_at(l, stored_base, p->index, &term, &found);
	if (ret != 0)
		return ret;
	if (!found)
		return rl_fail(l, ERR_STORAGE, "log has no entry at index %" PRIu64 " (base %" PRIu64 ")",
		               p->index, stored_base->index);
	if (term != p->term)
		return rl_fail(l, ERR_INVALID,
		               "compact: %s at index %" PRIu64 " has term %" PRIu64
		               ", the log's term there is %" PRIu64,
		               what, p->index, p->term, term);
	return 0;
}

static int compact_tx(struct raftlog *l, const struct raft_snapshot *snap,
                      const struct raft_point *base)
{
	struct raft_point old_base, old_snap;
	int has_base, has_snap;
	uint64_t last_index, last_term;
	int ret = point_read(l, Q_BASE_GET, "base", &old_base, &has_base);
	if (ret == 0)
		ret = point_read(l, Q_SNAP_AT, "snapshot", &old_snap, &has_snap);
	if (ret == 0)
		ret = log_last(l, &old_base, &last_index, &last_term);
	if (ret != 0)
		return ret;
	/* a snapshot of entries this node applied, so has stored */
	if (snap->at.index > last_index)
		return rl_fail(l, ERR_INVALID,
		               "compact: snapshot at index %" PRIu64
		               " is above the last stored index %" PRIu64,
		               snap->at.index, last_index);
	/* compaction never goes back: what was deleted is gone */
	if (base->index < old_base.index)
		return rl_fail(l, ERR_INVALID,
		               "compact: base index %" PRIu64 " is below the stored base %" PRIu64,
		               base->index, old_base.index);
	if (has_snap && snap->at.index < old_snap.index)
		return rl_fail(l, ERR_INVALID,
		               "compact: snapshot at index %" PRIu64
		               " is older than the stored one at index %" PRIu64,
		               snap->at.index, old_snap.index);
	ret = compact_point_check(l, &old_base, "base", base);
	if (ret == 0)
		ret = compact_point_check(l, &old_base, "snapshot", &snap->at);
	if (ret == 0)
		ret = compaction_write(l, snap, base);
	return ret;
}

int raftlog_compact(struct raftlog *l, const struct raft_snapshot *snap,
                    const struct raft_point *base)
{
	assert(l && snap && base);
	assert(snap->len == 0 || snap->data);
	if (l->failed)
		return rl_fail(l, ERR_STORAGE, "%s", failed_msg);
	int ret = compact_check(l, snap, base);
	if (ret != 0)
		return ret;
	ret = q_exec(l, Q_BEGIN, "begin");
	if (ret != 0)
		return ret;
	ret = compact_tx(l, snap, base);
	if (ret != 0) {
		rl_rollback(l);
		return ret;
	}
	return rl_commit(l);
}

/* ---- meta ---- */

static int key_check(struct raftlog *l, const char *key)
{
	size_t n = key ? strlen(key) : 0;
	if (n == 0 || n > RAFTLOG_META_KEY_BYTES_MAX)
		return rl_fail(l, ERR_INVALID, "meta key of %zu bytes: want 1..%d", n,
		               RAFTLOG_META_KEY_BYTES_MAX);
	return 0;
}

int raftlog_meta_get(struct raftlog *l, const char *key, uint8_t *buf, size_t cap, size_t *len)
{
	assert(l && len && (buf || cap == 0));
	*len = 0;
	int ret = key_check(l, key);
	if (ret != 0)
		return ret;
	sqlite3_stmt *s = l->q[Q_META_GET];
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const void *v = sqlite3_column_blob(s, 0);
		size_t vlen = (size_t)sqlite3_column_bytes(s, 0);
		*len = vlen;
		if (vlen > cap)
			ret = rl_fail(l, ERR_TOO_LARGE, "meta %s: %zu bytes, room for %zu", key, vlen, cap);
		else if (vlen)
			memcpy(buf, v, vlen);
	} else if (rc == SQLITE_DONE) {
		ret = ERR_NOT_FOUND;
	} else {
		ret = rl_sqlfail(l, "read meta");
	}
	q_done(s);
	return ret;
}

int raftlog_meta_put(struct raftlog *l, const char *key, const void *val, size_t len)
{
	assert(l && (val || len == 0));
	if (l->failed)
		return rl_fail(l, ERR_STORAGE, "%s", failed_msg);
	int ret = key_check(l, key);
	if (ret != 0)
		return ret;
	if (len > RAFTLOG_META_VAL_BYTES_MAX)
		return rl_fail(l, ERR_TOO_LARGE, "meta %s: %zu bytes, more than the limit %u", key,
		               len, RAFTLOG_META_VAL_BYTES_MAX);
	static const uint8_t empty[1];
	sqlite3_stmt *s = l->q[Q_META_PUT];
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_blob(s, 2, len ? val : empty, (int)len, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc != SQLITE_DONE) {
		ret = rl_sqlfail(l, "write meta");
		/* autocommit: the failure may be the commit's fsync */
		if ((rc & 0xff) == SQLITE_IOERR)
			l->failed = 1;
	}
	q_done(s);
	return ret;
}
