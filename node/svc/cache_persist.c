/*
 * cache_persist.c - the cache's optional persistence ([cache] persist;
 * docs/cache.md, "Persistence"): every entry of every cache this node
 * holds, written to one sqlite file (a snapshot) on a clean stop and, with
 * persist_interval, periodically; loaded back at start, before the node
 * serves a key, after which anti-entropy and the replicas bring it up to
 * date (last writer wins, as for any replicated entry).
 *
 * The file (application_id PERSIST_APP_ID, user_version
 * CACHE_PERSIST_SCHEMA_VERSION, repeated in meta):
 *   meta(key TEXT PRIMARY KEY, value)     schema, rows, written_wall_ms
 *   caches(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)
 *   entries(cache, key BLOB, value BLOB (NULL for a tombstone), hlc, node
 *           BLOB (16 bytes), expire_ms (absolute wall ms, 0 = none),
 *           tombstone (0 or 1), tombstone_ms (when it was deleted))
 * entries has no key constraint: rows are appended as the store is walked,
 * and an entry met twice (a resize moved it under the cursor) is two rows
 * that load resolves by last writer wins, as it does for everything.
 *
 * Subtle parts:
 *  - The switch is a rename. A snapshot is written to PATH.tmp with
 *    journal_mode = OFF and synchronous = OFF (nothing in it counts until it
 *    is whole), then closed, fsynced, renamed over PATH, and the directory
 *    fsynced. A crash at any point leaves PATH as it was: the previous
 *    snapshot or none. A PATH.tmp found at start is one cut short; it is
 *    removed. A failed write (a full disk, an I/O error) removes PATH.tmp
 *    and leaves PATH alone.
 *  - A periodic snapshot must not stall the loop: each tick writes at most
 *    PERSIST_TICK_ROWS rows or PERSIST_TICK_BYTES of keys and values, or
 *    visits PERSIST_TICK_BUCKETS buckets, in one transaction, walking the
 *    store with its replication cursor (cstore_replication_scan: live
 *    entries and tombstones; every entry present for the whole pass is
 *    met). The store changes between ticks, so the snapshot is fuzzy, as
 *    any snapshot taken without stopping writes: each entry as it was when
 *    its bucket was visited. After each step the kernel is asked to start
 *    writing the file out (sync_file_range), so the fsync of the last step
 *    does not wait for the whole file. The stop snapshot is written in one
 *    go, in one transaction, with the loop no longer running.
 *  - Loading streams rows straight from sqlite into the stores
 *    (cstore_apply copies each key and value; sqlite's own cache is a few
 *    MiB), so the entries are never held twice. An entry that expired
 *    while the node was down is loaded as a tombstone with its version, as
 *    the running store would have turned it (expire_to_tombstone): an
 *    older live copy on a replica must not come back through anti-entropy.
 *  - What is read back is input from outside. A file whose first bytes
 *    are not a sqlite header with PERSIST_APP_ID (another program's file,
 *    the journal, an empty file) is not ours: it is left untouched and the
 *    node refuses to start, since its next snapshot would replace the file
 *    (a rename over PATH). A file that is ours but another schema version,
 *    a schema other than persist_schema to the letter (a view or trigger
 *    could make a read run for ever), fails quick_check, holds a row that
 *    breaks the rules (cache_persist_row_check), or whose row count
 *    disagrees with its meta, is refused as a whole: the caches start empty
 *    and the file is kept as PATH.bad-<wall ms> for a human to look at,
 *    never overwritten. If it cannot be moved aside, nothing is written to
 *    PATH for the rest of the run. The reading connection is defensive
 *    (SQLITE_DBCONFIG_DEFENSIVE, no trusted schema, no views, no triggers)
 *    and no string or blob may be longer than a key and a value may be.
 *  - The path: a snapshot must never take the place of the node's own
 *    files, so PATH may not be the journal (by identity), a symbolic link,
 *    or any file in or under the data dir but DATA_DIR/cache.db; and an
 *    exclusive flock on PATH.lock, held for the whole run, keeps two nodes
 *    from sharing one file.
 *  - Versions: the loaded versions are this node's past (its writes and
 *    what it accepted), so the node's HLC is raised past the greatest
 *    (hlc_restore): a wall clock that went back across the restart must not
 *    make new writes lose to loaded ones. But never further than the
 *    clock's drift ahead of the wall clock: replicas refuse a version more
 *    than that ahead of theirs, so a clock restored past it would have every
 *    later write of this node refused. A row stamped further ahead is left
 *    out (counted, one WARN line); one more than a day ahead is damage and
 *    refuses the file.
 *  - FLUSH marks (cache_sync.c): each cache's flush_hlc is in meta
 *    (flush_hlc.<cache id>); rows older than their cache's mark are left
 *    out at load (a periodic snapshot may have walked them before the FLUSH
 *    came), and the mark is loaded with the rows, so a restarted node goes
 *    on refusing what the FLUSH removed.
 *  - The stop snapshot runs after the host armed its 10 s watchdog for
 *    transport teardown (host.c, teardown_stuck); a large cache can take
 *    longer to write, so that watchdog is paused while it writes, and the
 *    snapshot has a deadline of its own ([cache] persist_stop_timeout),
 *    looked at between steps of the walk and before the fsync and the
 *    rename: past it, the snapshot is given up (the previous one stays). A
 *    step stuck in the kernel (an fsync on a dead NFS server) is ended by an
 *    alarm PERSIST_STUCK_GRACE_S after the deadline.
 *
 * One thread: the node's loop (or the unit tests).
 */
#include "svc/cache_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#define PERSIST_APP_ID 0x43484348 /* "CHCH" */
#define PERSIST_CACHE_KIB 4096    /* sqlite's page cache, per connection */
#define PERSIST_CHECK_LINES 4     /* quick_check findings quoted */
#define PERSIST_FUTURE_MS_MAX (24ull * 3600 * 1000)
#define PERSIST_JOURNAL_NAME "chorus.db" /* io/store.c's STORE_DB_NAME, in the data dir */
#define PERSIST_HEADER_BYTES 100  /* sqlite's database header */
#define PERSIST_HEADER_APP_ID 68  /* where the header holds the application_id */
#define PERSIST_DEADLINE_SCANS 64 /* scan calls between two looks at the clock */
#define PERSIST_STUCK_GRACE_S 10  /* the stop snapshot's alarm, after its deadline */
#define PERSIST_FLUSH_KEY "flush_hlc." /* meta: flush_hlc.<cache id> = its FLUSH mark */

struct cache_persist {
	char path[CONFIG_PATH_MAX];
	char tmp[CONFIG_PATH_MAX + 8];
	char lock[CONFIG_PATH_MAX + 8];
	char dir[CONFIG_PATH_MAX];
	int lock_fd;              /* PATH.lock, flock'ed for the whole run */
	uint64_t interval_ms;
	uint64_t stop_timeout_ms; /* write_all gives up after it (0 never) */
	uint32_t max_drift_ms;
	uint64_t row_bytes_max;   /* sqlite's length limit while loading (0 its own) */
	int disabled;             /* a bad file could not be moved aside */
	/* the snapshot being written to tmp (db != NULL) */
	sqlite3 *db;
	sqlite3_stmt *ins;
	int fd;                   /* tmp, for writeback while writing (-1 none) */
	uint32_t cache;           /* index of the cache being walked */
	uint64_t cursor;          /* its replication cursor */
	uint64_t rows, bytes;     /* written so far */
	uint64_t tick_rows, tick_bytes;
	uint64_t now_wall_ms;     /* of the current step: old tombstones are left out */
	int visit_rc;             /* the visitor's first sqlite failure */
	uint64_t started_ns;
	uint64_t deadline_ns;     /* of the write in progress (0 none) */
	uint32_t scans;           /* scan calls since the clock was last read */
	uint64_t next_ms;         /* monotonic: when the next periodic one starts */
	char err[2 * CONFIG_PATH_MAX + 512]; /* the last failure, for the log */
	/* counts */
	uint64_t written, failed;
	uint64_t failing;         /* periodic attempts failed in a row */
	uint64_t tick_rows_max;   /* the most rows one periodic step wrote */
};

/* ---- the file's schema ---- */

static const char *const persist_schema =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
	"CREATE TABLE caches(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
	"CREATE TABLE entries("
	"  cache INTEGER NOT NULL,"
	"  key BLOB NOT NULL,"
	"  value BLOB,"
	"  hlc INTEGER NOT NULL,"
	"  node BLOB NOT NULL,"
	"  expire_ms INTEGER NOT NULL,"
	"  tombstone INTEGER NOT NULL,"
	"  tombstone_ms INTEGER NOT NULL);";

#define ENTRY_COLS "cache, key, value, hlc, node, expire_ms, tombstone, tombstone_ms"

/* ---- rows (pure) ---- */

const char *cache_persist_verdict_name(int verdict)
{
	switch (verdict) {
	case PERSIST_ROW_LOAD: return "load";
	case PERSIST_ROW_EXPIRED: return "expired";
	case PERSIST_ROW_GONE: return "gone";
	case PERSIST_ROW_AHEAD: return "ahead";
	case PERSIST_ROW_BAD: return "bad";
	default: return "unknown";
	}
}

/* The row's verdict but for PERSIST_ROW_AHEAD. */
static int row_verdict(const struct cache_persist_row *r, uint64_t now_wall_ms, char *why,
                       size_t why_len)
{
#define BAD(...)                                     \
	do {                                         \
		snprintf(why, why_len, __VA_ARGS__); \
		return PERSIST_ROW_BAD;              \
	} while (0)
	if (why_len)
		why[0] = '\0';
	if (!r->types_ok)
		BAD("a column holds the wrong type");
	if (r->cache < 0 || r->cache >= CONFIG_CACHES_MAX)
		BAD("cache id %" PRId64 " is out of range", r->cache);
	if (r->key_bytes == 0)
		BAD("an empty key");
	if (r->node_bytes != CSTORE_NODE_ID_BYTES)
		BAD("a version node id of %zu bytes", r->node_bytes);
	if (r->hlc <= 0)
		BAD("a version hlc of %" PRId64, r->hlc);
	if (hlc_physical_ms((uint64_t)r->hlc) > now_wall_ms + PERSIST_FUTURE_MS_MAX)
		BAD("a version %" PRIu64 " ms ahead of the wall clock",
		    hlc_physical_ms((uint64_t)r->hlc) - now_wall_ms);
	if (r->tombstone != 0 && r->tombstone != 1)
		BAD("a tombstone flag of %" PRId64, r->tombstone);
	if (r->expire_ms < 0 || r->tombstone_ms < 0)
		BAD("a negative time");
	if (r->tombstone) {
		if (r->has_value)
			BAD("a tombstone with a value");
		if (r->expire_ms != 0)
			BAD("a tombstone with an expiry");
		if (r->tombstone_ms == 0)
			BAD("a tombstone without its time");
		if ((uint64_t)r->tombstone_ms + TOMBSTONE_HORIZON_MS <= now_wall_ms)
			return PERSIST_ROW_GONE;
		return PERSIST_ROW_LOAD;
	}
	if (!r->has_value)
		BAD("a live entry without a value");
	if (r->tombstone_ms != 0)
		BAD("a live entry with a tombstone time");
	if (r->expire_ms == 0 || (uint64_t)r->expire_ms > now_wall_ms)
		return PERSIST_ROW_LOAD;
	/* expired while the node was down: the store would have made it a
	 * tombstone with its version (expire_to_tombstone), which keeps an
	 * older live copy on a replica from coming back through anti-entropy;
	 * past the horizon that tombstone would be collected already */
	if ((uint64_t)r->expire_ms + TOMBSTONE_HORIZON_MS <= now_wall_ms)
		return PERSIST_ROW_GONE;
	return PERSIST_ROW_EXPIRED;
#undef BAD
}

int cache_persist_row_check(const struct cache_persist_row *r, uint64_t now_wall_ms,
                            uint32_t max_drift_ms, char *why, size_t why_len)
{
	int verdict = row_verdict(r, now_wall_ms, why, why_len);
	if (verdict == PERSIST_ROW_BAD)
		return verdict;
	/* a version the replicas would refuse (hlc_update's rule): loading it
	 * would raise this node's clock past what they accept */
	if (hlc_physical_ms((uint64_t)r->hlc) > now_wall_ms + max_drift_ms)
		return PERSIST_ROW_AHEAD;
	return verdict;
}

char *cache_persist_escape(const char *in, char *out, size_t out_len)
{
	if (out_len == 0)
		return out;
	size_t n = 0;
	for (; *in; in++) {
		unsigned char c = (unsigned char)*in;
		int plain = c >= 0x20 && c < 0x7f && c != '\\';
		if (n + (plain ? 1 : 4) + 1 > out_len)
			break;
		if (plain)
			out[n++] = (char)c;
		else
			n += (size_t)snprintf(out + n, out_len - n, "\\x%02x", c);
	}
	out[n] = '\0';
	return out;
}

/* ---- small helpers ---- */

static int sync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

/* A one-row query's first column as an integer (*out = 0 when no row).
 * SQLITE_OK or sqlite's code. */
static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *s = NULL;
	*out = 0;
	int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			*out = sqlite3_column_int64(s, 0);
		rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
	}
	sqlite3_finalize(s);
	return rc;
}

/* ---- the path ---- */

int cache_persist_path_check(const char *path, const char *data_dir, char *err, size_t err_len)
{
	struct stat sb;
	int exists = lstat(path, &sb) == 0;
	if (!exists && errno != ENOENT) {
		snprintf(err, err_len, "[cache] persist: %s: %s", path, strerror(errno));
		return ERR_STORAGE;
	}
	if (exists && S_ISLNK(sb.st_mode)) {
		/* a snapshot replaces PATH by a rename: the link would go, and
		 * what it points to is not what would be read back */
		snprintf(err, err_len, "[cache] persist: %s is a symbolic link: name the file itself",
		         path);
		return ERR_DENIED;
	}
	if (exists && !S_ISREG(sb.st_mode)) {
		snprintf(err, err_len, "[cache] persist: %s is not a regular file", path);
		return ERR_DENIED;
	}
	if (!data_dir || !data_dir[0])
		return 0;
	/* the journal by identity, wherever PATH is (a hard link) */
	static const char *const journal[] = {"", "-wal", "-shm"};
	for (size_t k = 0; exists && k < sizeof(journal) / sizeof(journal[0]); k++) {
		char j[CONFIG_PATH_MAX + 32];
		struct stat jb;
		snprintf(j, sizeof(j), "%s/%s%s", data_dir, PERSIST_JOURNAL_NAME, journal[k]);
		if (stat(j, &jb) == 0 && jb.st_dev == sb.st_dev && jb.st_ino == sb.st_ino) {
			snprintf(err, err_len, "[cache] persist: %s is the node's journal (%s): name "
			                       "another file", path, j);
			return ERR_DENIED;
		}
	}
	/* in the data dir (or under it), only DATA_DIR/cache.db: every other
	 * name there is the node's or may become the node's */
	char dir[CONFIG_PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	const char *base = slash ? path + (slash - dir) + 1 : path;
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	char real_dir[PATH_MAX], real_data[PATH_MAX];
	if (!realpath(dir, real_dir)) {
		snprintf(err, err_len, "[cache] persist: directory %s: %s", dir, strerror(errno));
		return ERR_STORAGE;
	}
	if (!realpath(data_dir, real_data))
		return 0; /* no data dir (yet): nothing of the node's is there */
	size_t n = strlen(real_data);
	int inside = strncmp(real_dir, real_data, n) == 0 &&
	             (real_dir[n] == '\0' || real_dir[n] == '/' || n == 1);
	if (!inside || (real_dir[n] == '\0' && strcmp(base, CACHE_PERSIST_FILE) == 0))
		return 0;
	snprintf(err, err_len, "[cache] persist: %s is inside the data dir %s, beside the node's "
	                       "journal and identity: only %s/%s (persist = on) may be the snapshot "
	                       "there", path, real_data, real_data, CACHE_PERSIST_FILE);
	return ERR_DENIED;
}

/* ---- create ---- */

int cache_persist_create(const struct cache_persist_options *o, uint64_t now_mono_ms,
                         struct cache_persist **out, char *err, size_t err_len)
{
	*out = NULL;
	const char *path = o->path;
	size_t n = strlen(path);
	if (n == 0 || path[0] != '/' || path[n - 1] == '/' || n + 32 >= CONFIG_PATH_MAX) {
		snprintf(err, err_len, "[cache] persist: '%s' is not an absolute file path", path);
		return ERR_INVALID;
	}
	struct cache_persist *p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, err_len, "out of memory");
		return ERR_NOMEM;
	}
	p->fd = -1;
	p->lock_fd = -1;
	memcpy(p->path, path, n + 1);
	snprintf(p->tmp, sizeof(p->tmp), "%s.tmp", path);
	snprintf(p->lock, sizeof(p->lock), "%s.lock", path);
	memcpy(p->dir, path, n + 1);
	char *slash = strrchr(p->dir, '/');
	if (slash == p->dir)
		slash[1] = '\0'; /* a file in / */
	else
		*slash = '\0';
	/* the directory must be there, writable (PATH.tmp, the rename) and
	 * readable (its fsync opens it) now: a snapshot that can never be
	 * written would fail only at the first stop */
	if (access(p->dir, R_OK | W_OK | X_OK) != 0) {
		snprintf(err, err_len, "[cache] persist: directory %s: %s (the node must read, write "
		                       "and enter it)", p->dir, strerror(errno));
		free(p);
		return ERR_STORAGE;
	}
	int rc = cache_persist_path_check(path, o->data_dir, err, err_len);
	if (rc != 0) {
		free(p);
		return rc;
	}
	p->lock_fd = open(p->lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (p->lock_fd < 0) {
		snprintf(err, err_len, "[cache] persist: cannot open %s: %s", p->lock, strerror(errno));
		free(p);
		return ERR_STORAGE;
	}
	if (flock(p->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		int busy = errno == EWOULDBLOCK;
		if (busy)
			snprintf(err, err_len, "[cache] persist: %s is in use by another chorusd (it holds "
			                       "%s): give each node a snapshot file of its own", path,
			         p->lock);
		else
			snprintf(err, err_len, "[cache] persist: cannot lock %s: %s", p->lock,
			         strerror(errno));
		close(p->lock_fd);
		free(p);
		return busy ? ERR_BUSY : ERR_STORAGE;
	}
	p->interval_ms = o->interval_ms;
	p->stop_timeout_ms = o->stop_timeout_ms;
	p->max_drift_ms = o->max_drift_ms;
	p->row_bytes_max = o->row_bytes_max;
	p->next_ms = o->interval_ms ? now_mono_ms + o->interval_ms : UINT64_MAX;
	*out = p;
	return 0;
}

/* ---- writing ---- */

/* Ends a snapshot being written, without keeping it. */
static void snap_abort(struct cache_persist *p)
{
	if (!p->db)
		return;
	sqlite3_finalize(p->ins);
	p->ins = NULL;
	sqlite3_close(p->db); /* statements finalized: never refused */
	p->db = NULL;
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	if (unlink(p->tmp) != 0 && errno != ENOENT)
		log_warn("cache", "cannot remove the unfinished snapshot %s: %s", p->tmp,
		         strerror(errno));
}

static int snap_sqlfail(struct cache_persist *p, const char *what)
{
	snprintf(p->err, sizeof(p->err), "%s: %s: %s", p->tmp, what, sqlite3_errmsg(p->db));
	return ERR_STORAGE;
}

static int snap_begin(struct cache_persist *p, const struct cache *caches, uint32_t n_caches)
{
	assert(!p->db);
	if (unlink(p->tmp) != 0 && errno != ENOENT) {
		snprintf(p->err, sizeof(p->err), "%s: cannot remove it: %s", p->tmp, strerror(errno));
		return ERR_STORAGE;
	}
	/* created here, not by sqlite, so that only the node's user can read
	 * it (the cache's data, as the data dir is 0700) wherever it lives; an
	 * empty file is a new database to sqlite. The descriptor stays open
	 * for snap_writeback. */
	p->fd = open(p->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (p->fd < 0) {
		snprintf(p->err, sizeof(p->err), "%s: cannot create it: %s", p->tmp, strerror(errno));
		return ERR_STORAGE;
	}
	int rc = sqlite3_open_v2(p->tmp, &p->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(p->err, sizeof(p->err), "%s: %s", p->tmp,
		         p->db ? sqlite3_errmsg(p->db) : sqlite3_errstr(rc));
		sqlite3_close(p->db);
		p->db = NULL;
		close(p->fd);
		p->fd = -1;
		unlink(p->tmp);
		return ERR_STORAGE;
	}
	sqlite3_extended_result_codes(p->db, 1);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -%d; "
	         "PRAGMA application_id = %d; PRAGMA user_version = %d",
	         PERSIST_CACHE_KIB, PERSIST_APP_ID, CACHE_PERSIST_SCHEMA_VERSION);
	if (sqlite3_exec(p->db, sql, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(p->db, persist_schema, NULL, NULL, NULL) != SQLITE_OK) {
		rc = snap_sqlfail(p, "schema");
		goto fail;
	}
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(p->db, "INSERT INTO caches(id, name) VALUES (?1, ?2)", -1, &s, NULL) !=
	    SQLITE_OK) {
		rc = snap_sqlfail(p, "prepare");
		goto fail;
	}
	for (uint32_t i = 0; i < n_caches; i++) {
		sqlite3_bind_int64(s, 1, i);
		sqlite3_bind_text(s, 2, caches[i].cfg->name, -1, SQLITE_STATIC);
		int step = sqlite3_step(s);
		sqlite3_reset(s);
		if (step != SQLITE_DONE) {
			sqlite3_finalize(s);
			rc = snap_sqlfail(p, "caches");
			goto fail;
		}
	}
	sqlite3_finalize(s);
	if (sqlite3_prepare_v3(p->db, "INSERT INTO entries(" ENTRY_COLS ") VALUES "
	                              "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	                       -1, SQLITE_PREPARE_PERSISTENT, &p->ins, NULL) != SQLITE_OK) {
		rc = snap_sqlfail(p, "prepare");
		goto fail;
	}
	p->cache = 0;
	p->cursor = 0;
	p->rows = p->bytes = 0;
	p->visit_rc = 0;
	p->started_ns = clock_mono_ns();
	p->deadline_ns = 0;
	p->scans = 0;
	return 0;
fail:
	snap_abort(p);
	return rc;
}

/* One entry of the store into the snapshot (scan callback: no store call). */
static void snap_visit(void *ctx, const struct cstore_item *it)
{
	struct cache_persist *p = ctx;
	if (p->visit_rc)
		return;
	/* a tombstone past the horizon is about to be collected: a replica
	 * would not keep it either */
	if (it->tombstone && it->tombstone_ms + TOMBSTONE_HORIZON_MS <= p->now_wall_ms)
		return;
	sqlite3_stmt *s = p->ins;
	sqlite3_bind_int64(s, 1, p->cache);
	sqlite3_bind_blob64(s, 2, it->key, it->key_bytes, SQLITE_STATIC);
	if (it->tombstone)
		sqlite3_bind_null(s, 3);
	else if (it->value_bytes == 0)
		sqlite3_bind_zeroblob(s, 3, 0); /* an empty value, not NULL */
	else
		sqlite3_bind_blob64(s, 3, it->value, it->value_bytes, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)it->version.hlc);
	sqlite3_bind_blob(s, 5, it->version.node, CSTORE_NODE_ID_BYTES, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, it->tombstone ? 0 : (sqlite3_int64)it->expire_ms);
	sqlite3_bind_int64(s, 7, it->tombstone ? 1 : 0);
	sqlite3_bind_int64(s, 8, it->tombstone ? (sqlite3_int64)it->tombstone_ms : 0);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE) {
		p->visit_rc = rc;
		return;
	}
	p->rows++;
	p->tick_rows++;
	p->bytes += it->key_bytes + it->value_bytes;
	p->tick_bytes += it->key_bytes + it->value_bytes;
}

/* Whether the write in progress is past its deadline (p->err set then). */
static int snap_late(struct cache_persist *p, const char *where)
{
	if (!p->deadline_ns || clock_mono_ns() < p->deadline_ns)
		return 0;
	snprintf(p->err, sizeof(p->err), "%s: given up %s, after %" PRIu64 " ms ([cache] "
	                                 "persist_stop_timeout) and %" PRIu64 " rows",
	         p->tmp, where, (clock_mono_ns() - p->started_ns) / 1000000, p->rows);
	return 1;
}

/* Writes the next part of the snapshot in one transaction: at most about
 * rows_max rows or bytes_max key and value bytes, or buckets_max buckets
 * visited (UINT64_MAX each: all of it). When the walk reaches the end the
 * meta rows (the FLUSH marks among them) go in the same transaction. 1 when
 * the snapshot is complete, 0 when there is more, or ERR_STORAGE, ERR_BUSY
 * (the store refused the cursor) or ERR_TIMEOUT (past p->deadline_ns, looked
 * at every PERSIST_DEADLINE_SCANS scan calls) with p->err set. */
static int snap_write(struct cache_persist *p, const struct cache *caches, uint32_t n_caches,
                      uint64_t now_wall_ms, uint64_t rows_max, uint64_t bytes_max,
                      uint64_t buckets_max)
{
	assert(p->db);
	p->now_wall_ms = now_wall_ms;
	p->tick_rows = p->tick_bytes = 0;
	if (sqlite3_exec(p->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		return snap_sqlfail(p, "begin");
	uint64_t buckets = 0;
	while (p->cache < n_caches) {
		uint64_t next = 0;
		int rc = cstore_replication_scan(caches[p->cache].st, p->cursor, PERSIST_SCAN_BUCKETS,
		                                 now_wall_ms, snap_visit, p, &next);
		if (rc != 0) {
			snprintf(p->err, sizeof(p->err), "cache %s: the store refused the walk's cursor "
			                                 "(%s); the snapshot starts over next time",
			         caches[p->cache].cfg->name, err_name(rc));
			return ERR_BUSY;
		}
		if (p->visit_rc) {
			snprintf(p->err, sizeof(p->err), "%s: insert: %s", p->tmp,
			         sqlite3_errmsg(p->db));
			return ERR_STORAGE;
		}
		p->cursor = next;
		if (next == 0)
			p->cache++;
		buckets += PERSIST_SCAN_BUCKETS;
		if (++p->scans % PERSIST_DEADLINE_SCANS == 0 && snap_late(p, "while walking the caches"))
			return ERR_TIMEOUT;
		if (p->tick_rows >= rows_max || p->tick_bytes >= bytes_max || buckets >= buckets_max)
			break;
	}
	int done = p->cache >= n_caches;
	if (done) {
		char sql[256];
		snprintf(sql, sizeof(sql),
		         "INSERT INTO meta(key, value) VALUES ('schema', %d), ('rows', %" PRIu64 "), "
		         "('written_wall_ms', %" PRIu64 ")",
		         CACHE_PERSIST_SCHEMA_VERSION, p->rows, now_wall_ms);
		if (sqlite3_exec(p->db, sql, NULL, NULL, NULL) != SQLITE_OK)
			return snap_sqlfail(p, "meta");
		for (uint32_t i = 0; i < n_caches; i++) {
			if (!caches[i].flush_hlc)
				continue;
			snprintf(sql, sizeof(sql), "INSERT INTO meta(key, value) VALUES ('"
			                           PERSIST_FLUSH_KEY "%u', %" PRId64 ")",
			         i, (int64_t)caches[i].flush_hlc);
			if (sqlite3_exec(p->db, sql, NULL, NULL, NULL) != SQLITE_OK)
				return snap_sqlfail(p, "meta");
		}
	}
	if (sqlite3_exec(p->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		return snap_sqlfail(p, "commit");
	return done;
}

/* Starts the writeback of what a periodic step wrote, without waiting
 * for it: the fsync at the end then has little left to wait for, and the
 * step that switches the snapshot in does not hold the loop for the whole
 * file (docs/cache.md: about half as long for an 80 MiB file). Linux
 * only; a failure here is found again by that fsync. */
static void snap_writeback(struct cache_persist *p)
{
	if (p->fd >= 0)
		(void)sync_file_range(p->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

/* The snapshot is whole: made durable and put in PATH's place. 0, or
 * ERR_STORAGE / ERR_TIMEOUT (past p->deadline_ns) with p->err set (PATH
 * untouched). */
static int snap_finish(struct cache_persist *p)
{
	sqlite3_finalize(p->ins);
	p->ins = NULL;
	int ret = ERR_STORAGE;
	int rc = sqlite3_close(p->db);
	p->db = NULL;
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	if (rc != SQLITE_OK) {
		snprintf(p->err, sizeof(p->err), "%s: close: %s", p->tmp, sqlite3_errstr(rc));
		goto fail;
	}
	if (snap_late(p, "before its fsync")) {
		ret = ERR_TIMEOUT;
		goto fail;
	}
	/* synchronous = OFF: nothing was synced while writing; once here, the
	 * whole file at once (before the rename, so PATH is never a file whose
	 * pages are not on disk) */
	if (sync_path(p->tmp, 0) != 0) {
		snprintf(p->err, sizeof(p->err), "%s: fsync: %s", p->tmp, strerror(errno));
		goto fail;
	}
	if (snap_late(p, "before its rename")) {
		ret = ERR_TIMEOUT;
		goto fail;
	}
	if (rename(p->tmp, p->path) != 0) {
		snprintf(p->err, sizeof(p->err), "rename %s to %s: %s", p->tmp, p->path,
		         strerror(errno));
		goto fail;
	}
	if (sync_path(p->dir, O_DIRECTORY) != 0) {
		/* the new file is in place; only its name may not survive a power
		 * loss (the previous one would come back) */
		log_warn("cache", "snapshot %s written, but fsync of %s failed: %s", p->path, p->dir,
		         strerror(errno));
	}
	return 0;
fail:
	unlink(p->tmp);
	return ret;
}

int cache_persist_write_all(struct cache_persist *p, const struct cache *caches, uint32_t n_caches,
                            uint64_t now_wall_ms)
{
	if (p->disabled) {
		log_error("cache", "no snapshot written: %s is a bad snapshot that could not be moved "
		                   "aside (see the error at start)", p->path);
		return ERR_STORAGE;
	}
	snap_abort(p); /* a periodic one in progress: this one replaces it */
	int rc = snap_begin(p, caches, n_caches);
	if (rc == 0) {
		if (p->stop_timeout_ms)
			p->deadline_ns = p->started_ns + p->stop_timeout_ms * 1000000;
		rc = snap_write(p, caches, n_caches, now_wall_ms, UINT64_MAX, UINT64_MAX, UINT64_MAX);
		if (rc == 1)
			rc = snap_finish(p);
		else
			snap_abort(p);
	}
	if (rc != 0) {
		p->failed++;
		log_error("cache", "snapshot not written: %s; the previous snapshot %s is kept", p->err,
		          p->path);
		return rc;
	}
	p->written++;
	struct stat sb;
	uint64_t ms = (clock_mono_ns() - p->started_ns) / 1000000;
	log_info("cache", "snapshot of %" PRIu64 " entries (%" PRIu64 " bytes of keys and values) "
	                  "written to %s in %" PRIu64 " ms, file %lld bytes",
	         p->rows, p->bytes, p->path, ms,
	         stat(p->path, &sb) == 0 ? (long long)sb.st_size : -1LL);
	return 0;
}

void cache_persist_step(struct cache_persist *p, const struct cache *caches, uint32_t n_caches,
                        const struct now *now)
{
	if (p->disabled || !p->interval_ms)
		return;
	if (!p->db) {
		if (now->mono_ms < p->next_ms)
			return;
		if (snap_begin(p, caches, n_caches) != 0) {
			p->failed++;
			p->failing++;
			p->next_ms = now->mono_ms + p->interval_ms;
			log_limited(LOG_ERROR, "cache", "persist", 30000,
			            "periodic snapshot not written: %s; the previous snapshot %s is kept",
			            p->err, p->path);
			return;
		}
	}
	int rc = snap_write(p, caches, n_caches, now->wall_ms, PERSIST_TICK_ROWS, PERSIST_TICK_BYTES,
	                    PERSIST_TICK_BUCKETS);
	if (p->tick_rows > p->tick_rows_max)
		p->tick_rows_max = p->tick_rows;
	if (rc == 0) {
		snap_writeback(p);
		return; /* more next tick */
	}
	if (rc == 1)
		rc = snap_finish(p);
	else
		snap_abort(p);
	/* the next one starts an interval after this one ended, so a
	 * snapshot that takes longer than the interval never runs back to back */
	p->next_ms = now->mono_ms + p->interval_ms;
	if (rc != 0) {
		p->failed++;
		p->failing++;
		log_limited(LOG_ERROR, "cache", "persist", 30000,
		            "periodic snapshot not written: %s; the previous snapshot %s is kept",
		            p->err, p->path);
		return;
	}
	p->written++;
	uint64_t ms = (clock_mono_ns() - p->started_ns) / 1000000;
	if (p->failing)
		log_info("cache", "periodic snapshot written again after %" PRIu64 " failed attempt(s)",
		         p->failing);
	p->failing = 0;
	log_debug("cache", "periodic snapshot of %" PRIu64 " entries written to %s in %" PRIu64 " ms",
	          p->rows, p->path, ms);
}

uint64_t cache_persist_deadline(const struct cache_persist *p)
{
	if (p->disabled || !p->interval_ms)
		return UINT64_MAX;
	return p->db ? 0 : p->next_ms; /* 0: a snapshot is being written, go on */
}

void cache_persist_stats(const struct cache_persist *p, struct cache_persist_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->written = p->written;
	st->failed = p->failed;
	st->writing = p->db != NULL;
	st->rows = p->rows;
	st->tick_rows_max = p->tick_rows_max;
	st->disabled = p->disabled;
}

void cache_persist_destroy(struct cache_persist *p)
{
	if (!p)
		return;
	snap_abort(p);
	/* the lock goes with the descriptor; the file stays (removing it would
	 * race with a node taking it) */
	if (p->lock_fd >= 0)
		close(p->lock_fd);
	free(p);
}

/* ---- loading ---- */

struct load {
	struct cache_persist *p;
	sqlite3 *db;
	uint64_t now_wall_ms;
	int map[CONFIG_CACHES_MAX];        /* file's cache id -> index in caches, -1 none */
	char names[CONFIG_CACHES_MAX][CONFIG_CACHE_NAME_BYTES_MAX + 1];
	uint64_t unknown[CONFIG_CACHES_MAX]; /* rows of caches not configured here */
	uint64_t flush[CONFIG_CACHES_MAX];   /* the file's FLUSH marks by its cache id, 0 none */
	char why[384];
};

static int load_sqlfail(struct load *l, const char *what)
{
	snprintf(l->why, sizeof(l->why), "%s: %s", what, sqlite3_errmsg(l->db));
	return ERR_STORAGE;
}

/* What a file's first bytes say it is: ours (sqlite's header with our
 * application_id), empty, zeros (what a power loss can leave of a file
 * never synced), or anything else, with why. */
enum { KIND_OURS, KIND_EMPTY, KIND_ZEROS, KIND_FOREIGN };

static int file_kind(const char *path, char *why, size_t why_len)
{
	/* O_NONBLOCK: a FIFO put there must not hang the start */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		snprintf(why, why_len, "cannot open it: %s", strerror(errno));
		return KIND_FOREIGN;
	}
	struct stat sb;
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		snprintf(why, why_len, "not a regular file");
		return KIND_FOREIGN;
	}
	uint8_t h[PERSIST_HEADER_BYTES];
	size_t got = 0;
	while (got < sizeof(h)) {
		ssize_t k = read(fd, h + got, sizeof(h) - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			snprintf(why, why_len, "cannot read it: %s", strerror(errno));
			close(fd);
			return KIND_FOREIGN;
		}
		if (k == 0)
			break;
		got += (size_t)k;
	}
	close(fd);
	if (got == 0) {
		snprintf(why, why_len, "an empty file");
		return KIND_EMPTY;
	}
	size_t zeros = 0;
	while (zeros < got && h[zeros] == 0)
		zeros++;
	if (zeros == got) {
		snprintf(why, why_len, "zero bytes where sqlite's header would be");
		return KIND_ZEROS;
	}
	if (got < sizeof(h) || memcmp(h, "SQLite format 3", 16) != 0) {
		snprintf(why, why_len, "not a sqlite database");
		return KIND_FOREIGN;
	}
	const uint8_t *a = h + PERSIST_HEADER_APP_ID;
	uint32_t app = (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
	if (app != PERSIST_APP_ID) {
		snprintf(why, why_len, "a sqlite database with application_id %" PRIu32 ", where a "
		                       "Chorus cache snapshot has %d", app, PERSIST_APP_ID);
		return KIND_FOREIGN;
	}
	return KIND_OURS;
}

/* The reading connection takes the file for hostile: defensive mode (no
 * writable schema, no shadow-table writes), functions in the schema not
 * trusted, no views, no triggers, and no string or blob longer than a row
 * of this node can be. 0, or ERR_INVALID with l->why (sqlite refused a
 * setting: not the file's doing). */
static int load_harden(struct load *l)
{
	static const struct {
		int op, on;
		const char *name;
	} set[] = {
		{SQLITE_DBCONFIG_DEFENSIVE, 1, "defensive"},
		{SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, "trusted_schema"},
		{SQLITE_DBCONFIG_ENABLE_VIEW, 0, "enable_view"},
		{SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, "enable_trigger"},
	};
	for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++) {
		int now = -1;
		if (sqlite3_db_config(l->db, set[i].op, set[i].on, &now) != SQLITE_OK ||
		    now != set[i].on) {
			snprintf(l->why, sizeof(l->why), "sqlite refused the %s setting", set[i].name);
			return ERR_INVALID;
		}
	}
	if (l->p->row_bytes_max) {
		int len = l->p->row_bytes_max > INT_MAX ? INT_MAX : (int)l->p->row_bytes_max;
		(void)sqlite3_limit(l->db, SQLITE_LIMIT_LENGTH, len); /* returns the old limit */
	}
	return 0;
}

/* The file's schema is persist_schema to the letter: its sqlite_master,
 * row by row, against that of an empty database made from persist_schema.
 * A view, a trigger, an index or a column more is refused before anything
 * reads the tables (a view named entries with a recursive CTE would make
 * the load run for ever). 0, ERR_STORAGE with l->why, or ERR_NOMEM. */
static int load_schema(struct load *l)
{
	static const char *const q = "SELECT type, name, tbl_name, sql FROM sqlite_master "
	                             "ORDER BY type, name";
	sqlite3 *ref = NULL;
	sqlite3_stmt *a = NULL, *b = NULL;
	int ret = 0;
	if (sqlite3_open_v2(":memory:", &ref, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	            SQLITE_OK ||
	    sqlite3_exec(ref, persist_schema, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(ref, q, -1, &b, NULL) != SQLITE_OK) {
		snprintf(l->why, sizeof(l->why), "cannot make the schema to compare with: %s",
		         ref ? sqlite3_errmsg(ref) : "out of memory");
		ret = ERR_NOMEM;
		goto out;
	}
	if (sqlite3_prepare_v2(l->db, q, -1, &a, NULL) != SQLITE_OK) {
		ret = load_sqlfail(l, "reading its schema");
		goto out;
	}
	for (;;) {
		int ra = sqlite3_step(a), rb = sqlite3_step(b);
		if (ra != SQLITE_ROW && ra != SQLITE_DONE) {
			ret = load_sqlfail(l, "reading its schema");
			break;
		}
		if (rb != SQLITE_ROW && rb != SQLITE_DONE) {
			snprintf(l->why, sizeof(l->why), "cannot read the schema to compare with: %s",
			         sqlite3_errmsg(ref));
			ret = ERR_NOMEM;
			break;
		}
		if (ra == SQLITE_DONE && rb == SQLITE_DONE)
			break;
		int same = ra == rb;
		for (int c = 0; same && c < 4; c++) {
			const char *x = (const char *)sqlite3_column_text(a, c);
			const char *y = (const char *)sqlite3_column_text(b, c);
			same = (!x && !y) || (x && y && strcmp(x, y) == 0);
		}
		if (same)
			continue;
		sqlite3_stmt *at = ra == SQLITE_ROW ? a : b;
		const char *type = (const char *)sqlite3_column_text(at, 0);
		const char *name = (const char *)sqlite3_column_text(at, 1);
		snprintf(l->why, sizeof(l->why), "its schema is not a snapshot's: %s %s %s",
		         type ? type : "?", name ? name : "?", ra == SQLITE_ROW ? "differs" : "is missing");
		ret = ERR_STORAGE;
		break;
	}
out:
	sqlite3_finalize(a);
	sqlite3_finalize(b);
	sqlite3_close(ref); /* NULL ok */
	return ret;
}

/* The header, the schema, quick_check and meta. 0, or ERR_STORAGE /
 * ERR_NOMEM with l->why. */
static int load_check(struct load *l, int64_t *rows, int64_t *written_ms)
{
	int64_t app = 0, version = 0, schema = 0;
	if (query_int(l->db, "PRAGMA application_id", &app) != SQLITE_OK)
		return load_sqlfail(l, "reading its header");
	if (app != PERSIST_APP_ID) {
		snprintf(l->why, sizeof(l->why), "not a Chorus cache snapshot (application_id %" PRId64
		                                 ", want %d)", app, PERSIST_APP_ID);
		return ERR_STORAGE;
	}
	if (query_int(l->db, "PRAGMA user_version", &version) != SQLITE_OK)
		return load_sqlfail(l, "reading its header");
	if (version != CACHE_PERSIST_SCHEMA_VERSION) {
		snprintf(l->why, sizeof(l->why), "schema version %" PRId64 ", this chorusd reads %d",
		         version, CACHE_PERSIST_SCHEMA_VERSION);
		return ERR_STORAGE;
	}
	int rc = load_schema(l);
	if (rc != 0)
		return rc;
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA quick_check(%d)", PERSIST_CHECK_LINES);
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(l->db, sql, -1, &s, NULL) != SQLITE_OK)
		return load_sqlfail(l, "quick_check");
	size_t off = 0;
	int ok = 1;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *line = (const char *)sqlite3_column_text(s, 0);
		if (line && strcmp(line, "ok") == 0)
			continue;
		ok = 0;
		if (off < sizeof(l->why)) {
			int k = snprintf(l->why + off, sizeof(l->why) - off, "%s%s",
			                 off ? "; " : "quick_check: ", line ? line : "");
			off = k > 0 ? off + (size_t)k : off;
		}
	}
	if (rc != SQLITE_DONE) {
		ok = 0;
		if (off < sizeof(l->why))
			snprintf(l->why + off, sizeof(l->why) - off, "%squick_check: %s", off ? "; " : "",
			         sqlite3_errmsg(l->db));
	}
	sqlite3_finalize(s);
	for (char *c = l->why; *c; c++) /* one log line */
		if (*c == '\n')
			*c = ' ';
	if (!ok)
		return ERR_STORAGE;
	if (query_int(l->db, "SELECT value FROM meta WHERE key = 'schema'", &schema) != SQLITE_OK ||
	    query_int(l->db, "SELECT value FROM meta WHERE key = 'rows'", rows) != SQLITE_OK ||
	    query_int(l->db, "SELECT value FROM meta WHERE key = 'written_wall_ms'", written_ms) !=
	            SQLITE_OK)
		return load_sqlfail(l, "meta");
	if (schema != CACHE_PERSIST_SCHEMA_VERSION || *rows < 0) {
		snprintf(l->why, sizeof(l->why), "meta says schema %" PRId64 " and %" PRId64 " rows: "
		                                 "not a whole snapshot", schema, *rows);
		return ERR_STORAGE;
	}
	return 0;
}

/* The caches table: the file's ids mapped to this node's caches. */
static int load_caches(struct load *l, const struct cache *caches, uint32_t n_caches)
{
	for (int i = 0; i < CONFIG_CACHES_MAX; i++)
		l->map[i] = -1;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(l->db, "SELECT id, name FROM caches ORDER BY id", -1, &s, NULL) !=
	    SQLITE_OK)
		return load_sqlfail(l, "caches");
	int rc, ret = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(s, 0);
		const char *name = (const char *)sqlite3_column_text(s, 1);
		size_t len = name ? strlen(name) : 0;
		if (sqlite3_column_type(s, 0) != SQLITE_INTEGER || id < 0 || id >= CONFIG_CACHES_MAX ||
		    len == 0 || len > CONFIG_CACHE_NAME_BYTES_MAX) {
			snprintf(l->why, sizeof(l->why), "caches: a row with id %" PRId64 " and a name of "
			                                 "%zu bytes", id, len);
			ret = ERR_STORAGE;
			break;
		}
		memcpy(l->names[id], name, len + 1);
		for (uint32_t i = 0; i < n_caches; i++)
			if (strcmp(caches[i].cfg->name, name) == 0)
				l->map[id] = (int)i;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = load_sqlfail(l, "caches");
	sqlite3_finalize(s);
	return ret;
}

static void count_ahead(struct cache_persist_load_stats *st, uint64_t hlc, uint64_t now_wall_ms)
{
	uint64_t lead = hlc_physical_ms(hlc) - now_wall_ms;
	st->ahead++;
	if (lead > st->ahead_ms_max)
		st->ahead_ms_max = lead;
}

/* The FLUSH marks in meta (flush_hlc.<the file's cache id> = an hlc): the
 * rows older than their cache's mark are left out. A mark further ahead of
 * the wall clock than the drift is left out as such a row is. */
static int load_flush_marks(struct load *l, struct cache_persist_load_stats *st)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(l->db, "SELECT key, value FROM meta WHERE substr(key, 1, ?1) = ?2",
	                       -1, &s, NULL) != SQLITE_OK)
		return load_sqlfail(l, "meta");
	const size_t prefix = strlen(PERSIST_FLUSH_KEY);
	sqlite3_bind_int(s, 1, (int)prefix);
	sqlite3_bind_text(s, 2, PERSIST_FLUSH_KEY, -1, SQLITE_STATIC);
	int rc, ret = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *key = (const char *)sqlite3_column_text(s, 0);
		const char *digits = key ? key + prefix : "";
		char *end = NULL;
		unsigned long id = strtoul(digits, &end, 10);
		int64_t mark = sqlite3_column_int64(s, 1);
		if (digits[0] < '0' || digits[0] > '9' || *end || id >= CONFIG_CACHES_MAX ||
		    sqlite3_column_type(s, 1) != SQLITE_INTEGER || mark <= 0) {
			snprintf(l->why, sizeof(l->why), "meta: a FLUSH mark that is not a cache id and "
			                                 "an hlc (%s)", key ? key : "");
			ret = ERR_STORAGE;
			break;
		}
		if (hlc_physical_ms((uint64_t)mark) > l->now_wall_ms + l->p->max_drift_ms) {
			count_ahead(st, (uint64_t)mark, l->now_wall_ms);
			continue;
		}
		l->flush[id] = (uint64_t)mark;
		if ((uint64_t)mark > st->hlc_max)
			st->hlc_max = (uint64_t)mark;
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = load_sqlfail(l, "meta");
	sqlite3_finalize(s);
	return ret;
}

/* Reads one row's columns (pointers into sqlite's row: valid until the
 * next step). */
static void row_read(sqlite3_stmt *s, struct cache_persist_row *r)
{
	memset(r, 0, sizeof(*r));
	int value_type = sqlite3_column_type(s, 2);
	r->types_ok = sqlite3_column_type(s, 0) == SQLITE_INTEGER &&
	              sqlite3_column_type(s, 1) == SQLITE_BLOB &&
	              (value_type == SQLITE_BLOB || value_type == SQLITE_NULL) &&
	              sqlite3_column_type(s, 3) == SQLITE_INTEGER &&
	              sqlite3_column_type(s, 4) == SQLITE_BLOB &&
	              sqlite3_column_type(s, 5) == SQLITE_INTEGER &&
	              sqlite3_column_type(s, 6) == SQLITE_INTEGER &&
	              sqlite3_column_type(s, 7) == SQLITE_INTEGER;
	if (!r->types_ok)
		return;
	r->cache = sqlite3_column_int64(s, 0);
	r->key = sqlite3_column_blob(s, 1);
	r->key_bytes = (size_t)sqlite3_column_bytes(s, 1);
	r->has_value = value_type == SQLITE_BLOB;
	if (r->has_value) {
		r->value = sqlite3_column_blob(s, 2);
		r->value_bytes = (size_t)sqlite3_column_bytes(s, 2);
	}
	r->hlc = sqlite3_column_int64(s, 3);
	r->node = sqlite3_column_blob(s, 4);
	r->node_bytes = (size_t)sqlite3_column_bytes(s, 4);
	r->expire_ms = sqlite3_column_int64(s, 5);
	r->tombstone = sqlite3_column_int64(s, 6);
	r->tombstone_ms = sqlite3_column_int64(s, 7);
}

static int load_rows(struct load *l, const struct cache *caches, uint16_t partition_count,
                     uint64_t now_wall_ms, struct cache_persist_load_stats *st)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(l->db, "SELECT " ENTRY_COLS " FROM entries", -1, &s, NULL) !=
	    SQLITE_OK)
		return load_sqlfail(l, "entries");
	int rc, ret = 0;
	char why[160];
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct cache_persist_row r;
		row_read(s, &r);
		st->rows++;
		int verdict = cache_persist_row_check(&r, now_wall_ms, l->p->max_drift_ms, why,
		                                      sizeof(why));
		if (verdict == PERSIST_ROW_BAD) {
			snprintf(l->why, sizeof(l->why), "row %" PRIu64 ": %s", st->rows, why);
			ret = ERR_STORAGE;
			break;
		}
		if (verdict == PERSIST_ROW_AHEAD) {
			count_ahead(st, (uint64_t)r.hlc, now_wall_ms);
			continue;
		}
		/* every version kept is this node's past, used or not */
		if ((uint64_t)r.hlc > st->hlc_max)
			st->hlc_max = (uint64_t)r.hlc;
		if ((uint64_t)r.hlc < l->flush[r.cache]) {
			st->flushed++; /* walked before a FLUSH the snapshot's end knew of */
			continue;
		}
		if (verdict == PERSIST_ROW_GONE) {
			st->gone++;
			continue;
		}
		if (!l->names[r.cache][0]) {
			snprintf(l->why, sizeof(l->why), "row %" PRIu64 ": cache id %" PRId64 " is not in "
			                                 "the caches table", st->rows, r.cache);
			ret = ERR_STORAGE;
			break;
		}
		int idx = l->map[r.cache];
		if (idx < 0) {
			l->unknown[r.cache]++;
			st->unknown_cache++;
			continue;
		}
		struct cstore_item it;
		memset(&it, 0, sizeof(it));
		if (r.key_bytes > UINT32_MAX || r.value_bytes > UINT32_MAX) {
			st->refused++;
			continue;
		}
		int tomb = r.tombstone || verdict == PERSIST_ROW_EXPIRED;
		it.key = r.key;
		it.key_bytes = (uint32_t)r.key_bytes;
		it.value = tomb ? NULL : r.value;
		it.value_bytes = tomb ? 0 : (uint32_t)r.value_bytes;
		it.version.hlc = (uint64_t)r.hlc;
		memcpy(it.version.node, r.node, CSTORE_NODE_ID_BYTES);
		it.expire_ms = tomb ? 0 : (uint64_t)r.expire_ms;
		it.tombstone = tomb;
		/* the partition from the key, as the service computes it now (the
		 * partition count may have changed since the file was written) */
		it.partition = cplace_partition(r.key, r.key_bytes, partition_count);
		int arc = cstore_apply(caches[idx].st, &it, now_wall_ms);
		if (arc == 0 && verdict == PERSIST_ROW_EXPIRED)
			st->expired++;
		else if (arc == 0 && tomb)
			st->tombstones++;
		else if (arc == 0)
			st->loaded++;
		else if (arc == CSTORE_STALE)
			st->stale++;
		else
			st->refused++; /* over this node's limits now (ERR_TOO_LARGE), out of memory */
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = load_sqlfail(l, "entries");
	sqlite3_finalize(s);
	return ret;
}

/* The file is ours but unusable (the caller emptied the caches): it is
 * kept aside. */
static void load_refuse(struct cache_persist *p, uint64_t now_wall_ms, const char *why)
{
	char shown[512]; /* why may quote the file (sqlite's messages name its objects) */
	cache_persist_escape(why, shown, sizeof(shown));
	char aside[CONFIG_PATH_MAX + 32];
	snprintf(aside, sizeof(aside), "%s.bad-%" PRIu64, p->path, now_wall_ms);
	if (rename(p->path, aside) == 0) {
		(void)sync_path(p->dir, O_DIRECTORY);
		log_error("cache", "snapshot %s is unusable (%s): the caches start empty and catch up "
		                   "from the replicas; the file is kept as %s",
		          p->path, shown, aside);
		return;
	}
	p->disabled = 1;
	log_error("cache", "snapshot %s is unusable (%s): the caches start empty; it cannot be moved "
	                   "aside to %s (%s), so no snapshot is written in this run: move it away "
	                   "and restart",
	          p->path, shown, aside, strerror(errno));
}

/* Before anything is read: a PATH.tmp left by a snapshot cut short is
 * removed, if it looks like one (nothing else is ever written there); PATH
 * must be a Chorus snapshot or nothing. 0 and *present, or ERR_DENIED with
 * err set (the file is left as it is). */
static int load_files(struct cache_persist *p, int *present, char *err, size_t err_len)
{
	char why[160];
	struct stat sb;
	*present = 0;
	if (lstat(p->tmp, &sb) == 0) {
		int kind = KIND_FOREIGN;
		if (S_ISREG(sb.st_mode))
			kind = file_kind(p->tmp, why, sizeof(why));
		else
			snprintf(why, sizeof(why), "not a regular file");
		if (kind == KIND_FOREIGN) {
			snprintf(err, err_len, "[cache] persist: %s is not a snapshot cut short (%s): it "
			                       "is left as it is; move it away, or set [cache] persist to "
			                       "another path", p->tmp, why);
			return ERR_DENIED;
		}
		if (unlink(p->tmp) == 0)
			log_warn("cache", "removed %s: a snapshot cut short (the node stopped while "
			                  "writing it); loading the previous one", p->tmp);
		else
			log_warn("cache", "cannot remove %s, a snapshot cut short: %s", p->tmp,
			         strerror(errno));
	}
	if (lstat(p->path, &sb) != 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, err_len, "[cache] persist: %s: %s", p->path, strerror(errno));
		return ERR_DENIED;
	}
	int kind = KIND_FOREIGN;
	if (S_ISREG(sb.st_mode))
		kind = file_kind(p->path, why, sizeof(why));
	else
		snprintf(why, sizeof(why), "not a regular file");
	if (kind != KIND_OURS) {
		/* another program's file, the journal, an empty file: moving it
		 * aside (or writing over it at the next snapshot) could destroy
		 * what is not ours */
		snprintf(err, err_len, "[cache] persist: %s is not a Chorus cache snapshot (%s); it is "
		                       "left as it is and the node does not start, since its next "
		                       "snapshot would replace it: move the file away, or set [cache] "
		                       "persist to another path", p->path, why);
		return ERR_DENIED;
	}
	*present = 1;
	return 0;
}

int cache_persist_load(struct cache_persist *p, struct cache *caches, uint32_t n_caches,
                       uint16_t partition_count, uint64_t now_wall_ms,
                       struct cache_persist_load_stats *st, char *err, size_t err_len)
{
	memset(st, 0, sizeof(*st));
	uint64_t t0 = clock_mono_ns();
	int present = 0;
	int rc = load_files(p, &present, err, err_len);
	if (rc != 0)
		return rc;
	if (!present) {
		log_info("cache", "no snapshot at %s: the caches start empty", p->path);
		return 0;
	}
	struct stat sb;
	if (stat(p->path, &sb) != 0)
		sb.st_size = -1;
	struct load *l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, err_len, "[cache] persist: cannot load %s: out of memory", p->path);
		return ERR_NOMEM;
	}
	l->p = p;
	l->now_wall_ms = now_wall_ms;
	int64_t rows = 0, written_ms = 0;
	rc = sqlite3_open_v2(p->path, &l->db,
	                     SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
	if (rc != SQLITE_OK) {
		snprintf(l->why, sizeof(l->why), "open: %s",
		         l->db ? sqlite3_errmsg(l->db) : sqlite3_errstr(rc));
		rc = ERR_STORAGE;
	} else {
		rc = load_harden(l);
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA cache_size = -%d", PERSIST_CACHE_KIB);
		if (rc == 0)
			(void)sqlite3_exec(l->db, sql, NULL, NULL, NULL); /* a hint: the default is fine */
		if (rc == 0)
			rc = load_check(l, &rows, &written_ms);
		if (rc == 0)
			rc = load_caches(l, caches, n_caches);
		if (rc == 0)
			rc = load_flush_marks(l, st);
		if (rc == 0)
			rc = load_rows(l, caches, partition_count, now_wall_ms, st);
		if (rc == 0 && (uint64_t)rows != st->rows) {
			snprintf(l->why, sizeof(l->why), "%" PRIu64 " rows where meta says %" PRId64
			                                 ": not a whole snapshot", st->rows, rows);
			rc = ERR_STORAGE;
		}
	}
	sqlite3_close(l->db); /* every statement finalized */
	if (rc != 0) {
		uint64_t refused_rows = st->rows;
		for (uint32_t i = 0; i < n_caches; i++)
			cstore_flush(caches[i].st);
		memset(st, 0, sizeof(*st));
		st->rows = refused_rows;
		if (rc == ERR_STORAGE) {
			load_refuse(p, now_wall_ms, l->why);
			st->bad = 1;
		} else {
			/* not the file's doing (memory, a setting sqlite refused): it
			 * stays where it is, and the node does not start */
			char shown[512];
			snprintf(err, err_len, "[cache] persist: cannot load %s: %s", p->path,
			         cache_persist_escape(l->why, shown, sizeof(shown)));
		}
		free(l);
		return rc;
	}
	for (int i = 0; i < CONFIG_CACHES_MAX; i++)
		if (l->flush[i] && l->map[i] >= 0 && l->flush[i] > caches[l->map[i]].flush_hlc)
			caches[l->map[i]].flush_hlc = l->flush[i];
	for (int i = 0; i < CONFIG_CACHES_MAX; i++) {
		char name[4 * CONFIG_CACHE_NAME_BYTES_MAX + 1];
		if (l->unknown[i])
			log_warn("cache", "snapshot %s: %" PRIu64 " entries of cache '%s', which this node "
			                  "does not have, were left out",
			         p->path, l->unknown[i], cache_persist_escape(l->names[i], name, sizeof(name)));
	}
	if (st->refused)
		log_warn("cache", "snapshot %s: %" PRIu64 " entries over this node's cache limits were "
		                  "left out", p->path, st->refused);
	if (st->ahead)
		log_warn("cache", "snapshot %s: %" PRIu64 " versions stamped more than %" PRIu32 " ms "
		                  "(the clock's drift) ahead of this node's wall clock, up to %" PRIu64
		                  " ms, were left out: replicas refuse such versions, and the clock "
		                  "raised to them would have every later write of this node refused",
		         p->path, st->ahead, p->max_drift_ms, st->ahead_ms_max);
	st->written_wall_ms = written_ms > 0 ? (uint64_t)written_ms : 0;
	uint64_t age_s = (uint64_t)written_ms < now_wall_ms ? (now_wall_ms - (uint64_t)written_ms) / 1000
	                                                    : 0;
	log_info("cache", "loaded %" PRIu64 " entries and %" PRIu64 " tombstones from snapshot %s "
	                  "(written %" PRIu64 " s ago, %lld bytes) in %" PRIu64 " ms; %" PRIu64
	                  " expired meanwhile (kept as tombstones), %" PRIu64 " deleted or expired "
	                  "too long ago, %" PRIu64 " older than a FLUSH and %" PRIu64 " older "
	                  "duplicates left out",
	         st->loaded, st->tombstones, p->path, age_s, (long long)sb.st_size,
	         (clock_mono_ns() - t0) / 1000000, st->expired, st->gone, st->flushed, st->stale);
	free(l);
	return 0;
}

/* ---- the service's hooks ---- */

/* The stop snapshot's backstop: a step stuck in the kernel past the
 * deadline (an fsync on a dead file server) ends the process, as the
 * host's teardown watchdog would have; PATH.tmp is removed at the next
 * start and the previous snapshot loaded. */
static void persist_stuck(int sig)
{
	(void)sig;
	static const char msg[] = "chorusd: the cache's stop snapshot is stuck past "
	                          "[cache] persist_stop_timeout: exiting without it\n";
	ssize_t n = write(2, msg, sizeof(msg) - 1);
	(void)n;
	_exit(0);
}

int cache_persist_svc_start(struct cache_svc *s, const struct now *now, char *err, size_t err_len)
{
	if (!s->cfg->cache_persist)
		return 0;
	char path[CONFIG_PATH_MAX + 16];
	if (s->cfg->cache_persist_path[0])
		snprintf(path, sizeof(path), "%s", s->cfg->cache_persist_path);
	else if (s->cfg->data_dir[0] == '/')
		snprintf(path, sizeof(path), "%s/%s", s->cfg->data_dir, CACHE_PERSIST_FILE);
	else {
		/* the data dir is relative to where chorusd started: so is the file */
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd))) {
			snprintf(err, err_len, "[cache] persist: cannot find the working directory: %s",
			         strerror(errno));
			return -1;
		}
		int n = snprintf(path, sizeof(path), "%s/%s/%s", cwd, s->cfg->data_dir,
		                 CACHE_PERSIST_FILE);
		if (n < 0 || (size_t)n >= sizeof(path)) {
			snprintf(err, err_len, "[cache] persist: the path of %s/%s is too long",
			         s->cfg->data_dir, CACHE_PERSIST_FILE);
			return -1;
		}
	}
	struct cache_persist_options o = {
		.path = path,
		.data_dir = s->cfg->data_dir,
		.interval_ms = s->cfg->cache_persist_interval_ms,
		.stop_timeout_ms = s->cfg->cache_persist_stop_timeout_ms,
		.max_drift_ms = s->hlc.max_drift_ms,
		.row_bytes_max = (uint64_t)s->cfg->cache_key_bytes_max + s->cfg->cache_value_bytes_max +
		                 PERSIST_ROW_SLACK_BYTES,
	};
	if (cache_persist_create(&o, now->mono_ms, &s->persist, err, err_len) != 0)
		return -1;
	struct cache_persist_load_stats st;
	int rc = cache_persist_load(s->persist, s->caches, s->n_caches,
	                            (uint16_t)s->cfg->cache_partitions, now->wall_ms, &st, err, err_len);
	if (rc != 0 && rc != ERR_STORAGE) {
		cache_persist_destroy(s->persist);
		s->persist = NULL;
		return -1;
	}
	/* Cassandra's gc_grace_seconds problem: a delete made elsewhere while
	 * this node was down left a tombstone that is collected after the
	 * horizon; past it, a loaded copy of the key has nothing to lose to */
	if (st.written_wall_ms && s->cfg->cache_replicas > 1 &&
	    st.written_wall_ms + TOMBSTONE_HORIZON_MS < now->wall_ms)
		log_warn("cache", "the snapshot is %" PRIu64 " s old, older than the %u s tombstone "
		                  "horizon: a key deleted on other members meanwhile may come back from "
		                  "it (move the file away before the start to begin empty)",
		         (now->wall_ms - st.written_wall_ms) / 1000, TOMBSTONE_HORIZON_MS / 1000);
	/* the same, ahead of time: a kill -9 (or a power loss) long after the
	 * last periodic snapshot leaves one older than the horizon */
	if (s->cfg->cache_replicas > 1 && s->cfg->cache_persist_interval_ms > TOMBSTONE_HORIZON_MS)
		log_warn("cache", "[cache] persist_interval (%" PRIu64 " s) is longer than the %u s "
		                  "tombstone horizon: after a kill -9 or a power loss, the last periodic "
		                  "snapshot may be older than the horizon and bring back keys deleted "
		                  "meanwhile", s->cfg->cache_persist_interval_ms / 1000,
		         TOMBSTONE_HORIZON_MS / 1000);
	/* within the drift by construction (load leaves further versions out) */
	if (st.hlc_max && hlc_restore(&s->hlc, now->wall_ms, st.hlc_max) != 0)
		log_warn("cache", "the snapshot's newest version %" PRIu64 " cannot be restored into "
		                  "the clock", st.hlc_max);
	return 0;
}

void cache_persist_svc_stop(struct cache_svc *s)
{
	if (!s->persist)
		return;
	/* only after the loop ran and drained (SIGTERM, or a fatal error that
	 * drains): a node whose start failed holds nothing new, and its
	 * stores may not even be loaded */
	if (s->host && host_draining(s->host)) {
		/* the host's teardown watchdog is paused (see the top comment);
		 * the snapshot's own deadline is looked at between its steps, and
		 * this alarm ends a step stuck past it */
		unsigned left = alarm(0);
		uint64_t stuck_s = s->cfg->cache_persist_stop_timeout_ms / 1000 + PERSIST_STUCK_GRACE_S;
		void (*was)(int) = signal(SIGALRM, persist_stuck);
		alarm(stuck_s > UINT_MAX ? UINT_MAX : (unsigned)stuck_s);
		(void)cache_persist_write_all(s->persist, s->caches, s->n_caches,
		                              host_now(s->host)->wall_ms);
		alarm(0);
		signal(SIGALRM, was);
		if (left)
			alarm(left);
	}
	cache_persist_destroy(s->persist);
	s->persist = NULL;
}
