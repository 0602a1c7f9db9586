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
 *    hard term, an unknown type, an entry too large, too many entries.
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
	/* idx is unique: a valid log (1..n, no gap) holds exactly max(idx)
	 * entries, and max is one b-tree descent where count(*) reads all */
	[Q_LOG_MAX] = "SELECT coalesce(max(idx), 0) FROM log",
	[Q_LOG_ALL] = "SELECT idx, term, type, data FROM log ORDER BY idx",
	[Q_LOG_LAST] = "SELECT idx, term FROM log ORDER BY idx DESC LIMIT 1",
	[Q_LOG_TRUNCATE] = "DELETE FROM log WHERE idx >= ?1",
	[Q_LOG_APPEND] = "INSERT INTO log(idx, term, type, data) VALUES (?1, ?2, ?3, ?4)",
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

struct raftlog {
	sqlite3 *db;
	char path[PATH_MAX];
	int failed; /* a commit failed with an I/O error: no more writes (top comment) */
	char last_err[512];
	sqlite3_stmt *q[Q_COUNT];
	/* what the last load returned */
	struct raft_entry *loaded;
	uint32_t loaded_count;
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

/* Creates the schema in an empty file, or checks that the file holds one
 * we know. 0 or ERR_STORAGE with err set. */
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
	if (version == 0) {
		char sql[96];
		snprintf(sql, sizeof(sql), "PRAGMA application_id = %ld; PRAGMA user_version = %d",
		         (long)RAFTLOG_APP_ID, RAFTLOG_SCHEMA_VERSION);
		if (sqlite3_exec(l->db, raftlog_schema_v1, NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(l->db, sql, NULL, NULL, NULL) != SQLITE_OK)
			goto fail;
	}
	if (sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
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

/* Checks one log row against the rules of the file (see raftlog.h) and
 * fills e, data copied. prev: the entry before it (NULL for the first). */
static int entry_read(struct raftlog *l, sqlite3_stmt *s, const struct raft_hard *hard,
                      const struct raft_entry *prev, struct raft_entry *e)
{
	int64_t idx = sqlite3_column_int64(s, 0);
	uint64_t want = prev ? prev->index + 1 : 1;
	if (idx < 0 || (uint64_t)idx != want) {
		if (!prev)
			return rl_fail(l, ERR_STORAGE, "log starts at index %" PRId64 ", not 1", idx);
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

int raftlog_load(struct raftlog *l, struct raft_hard *hard, struct raft_point *base,
                 struct raft_snapshot *snap, const struct raft_entry **entries, uint32_t *n)
{
	assert(l && hard && base && snap && entries && n);
	raftlog_release_loaded(l);
	memset(hard, 0, sizeof(*hard));
	memset(base, 0, sizeof(*base)); /* SHIM: compaction not stored yet */
	memset(snap, 0, sizeof(*snap));
	*entries = NULL;
	*n = 0;

	/* one read transaction: the hard state and the log of the same commit */
	int ret = q_exec(l, Q_BEGIN_READ, "begin");
	if (ret != 0)
		return ret;
	struct raft_hard h;
	ret = hard_read(l, &h);
	if (ret != 0)
		goto out;

	sqlite3_stmt *s = l->q[Q_LOG_MAX];
	int rc = sqlite3_step(s);
	int64_t last = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
	q_done(s);
	if (rc != SQLITE_ROW) {
		ret = rl_sqlfail(l, "read last log index");
		goto out;
	}
	if (last > (int64_t)RAFT_LOG_ENTRIES_MAX) {
		ret = rl_fail(l, ERR_STORAGE, "log reaches index %" PRId64 ", beyond the limit %u",
		              last, RAFT_LOG_ENTRIES_MAX);
		goto out;
	}
	if (last < 0)
		last = 0; /* only idx < 1: the first row is refused below */
	struct raft_entry *es = NULL;
	if (last > 0) {
		es = calloc((size_t)last, sizeof(*es));
		if (!es) {
			ret = rl_fail(l, ERR_NOMEM, "log of %" PRId64 " entries: out of memory", last);
			goto out;
		}
	}
	l->loaded = es;
	s = l->q[Q_LOG_ALL];
	uint32_t got = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((int64_t)got == last) { /* rows at idx < 1, which precede the rest */
			ret = rl_fail(l, ERR_STORAGE, "log starts at index %" PRId64 ", not 1",
			              (int64_t)sqlite3_column_int64(s, 0));
			break;
		}
		ret = entry_read(l, s, &h, got ? &es[got - 1] : NULL, &es[got]);
		if (ret != 0)
			break;
		l->loaded_count = ++got;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = rl_sqlfail(l, "read log");
	q_done(s);
	/* got < last is impossible: rows 1..got with no gap and max = last */
	assert(ret != 0 || (int64_t)got == last);
out:
	rl_rollback(l); /* a read transaction: nothing to commit */
	if (ret != 0) {
		raftlog_release_loaded(l);
		return ret;
	}
	*hard = h;
	*entries = l->loaded;
	*n = l->loaded_count;
	return 0;
}

/* ---- persist ---- */

static const char failed_msg[] = "an earlier commit failed with an I/O error: stop and reopen";

/* Checks a ready against the state it would replace (Raft §5.2: the term
 * never goes back and one vote per term; §5.3: the log stays 1..n). Only
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
		if (e->index > RAFT_LOG_ENTRIES_MAX)
			return rl_fail(l, ERR_INVALID,
			               "append: index %" PRIu64 " is over the log limit %u", e->index,
			               RAFT_LOG_ENTRIES_MAX);
	}
	return 0;
}

/* The writes of one persist, inside its transaction. */
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

	if (rd->hard_changed) {
		sqlite3_stmt *s = l->q[Q_HARD_PUT];
		sqlite3_bind_int64(s, 1, (sqlite3_int64)new->term);
		if (new->has_vote)
			sqlite3_bind_blob(s, 2, new->vote.b, RAFT_ID_BYTES, SQLITE_STATIC);
		ret = q_exec(l, Q_HARD_PUT, "write hard state");
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

	/* the appended run must continue what is left of the log */
	sqlite3_stmt *s = l->q[Q_LOG_LAST];
	uint64_t last_index = 0, last_term = 0;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		last_index = (uint64_t)sqlite3_column_int64(s, 0);
		last_term = (uint64_t)sqlite3_column_int64(s, 1);
	}
	q_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return rl_sqlfail(l, "read last log entry");
	const struct raft_entry *first = &rd->append[0];
	if (first->index != last_index + 1)
		return rl_fail(l, ERR_INVALID, "append: index %" PRIu64 " follows %" PRIu64,
		               first->index, last_index);
	if (first->term < last_term)
		return rl_fail(l, ERR_INVALID,
		               "append: index %" PRIu64 " has term %" PRIu64
		               ", lower than index %" PRIu64 "'s term %" PRIu64,
		               first->index, first->term, last_index, last_term);

	static const uint8_t empty[1];
	s = l->q[Q_LOG_APPEND];
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

int raftlog_persist(struct raftlog *l, const struct raft_ready *rd)
{
	assert(l && rd);
	assert(rd->n_append == 0 || rd->append);
	if (l->failed)
		return rl_fail(l, ERR_STORAGE, "%s", failed_msg);
	if (!rd->hard_changed && !rd->truncate_from && !rd->n_append)
		return 0;
	int ret = q_exec(l, Q_BEGIN, "begin");
	if (ret != 0)
		return ret;
	ret = persist_tx(l, rd);
	if (ret != 0) {
		rl_rollback(l);
		return ret;
	}
	sqlite3_stmt *c = l->q[Q_COMMIT];
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

int raftlog_broken(const struct raftlog *l)
{
	return l->failed;
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

int raftlog_compact(struct raftlog *l, const struct raft_snapshot *snap,
                    const struct raft_point *base)
{
	(void)l; (void)snap; (void)base;
	return ERR_INVALID; /* SHIM */
}
