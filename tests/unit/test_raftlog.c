/*
 * test_raftlog.c - the Raft state file (node/io/raftlog.c): round trips of
 * the hard state and the log across close/open, truncation, a persist that
 * fails half-way and leaves nothing, readies that would break Raft, files
 * damaged or tampered with (each refused with its own message), a
 * zero-length file, the meta table and the limits.
 * Each test gets its own temporary data dir (mkdtemp), removed afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/raft.h"
#include "io/log.h"
#include "io/raftlog.h"
#include "lib/err.h"

#define ENTRIES_MAX 16 /* in one test ready */

struct fixture {
	char dir[64];
	char path[96]; /* dir/raft.db */
	struct raftlog *l;
	/* a ready being built, and the data its entries point to */
	struct raft_ready rd;
	struct raft_entry ents[ENTRIES_MAX];
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	strcpy(f->dir, "/tmp/chorus-raftlog-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/%s", f->dir, RAFTLOG_DB_NAME);
	*state = f;
	return 0;
}

static void ready_clear(struct fixture *f)
{
	for (uint32_t i = 0; i < ENTRIES_MAX; i++)
		free(f->ents[i].data);
	memset(f->ents, 0, sizeof(f->ents));
	memset(&f->rd, 0, sizeof(f->rd));
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	raftlog_close(f->l);
	ready_clear(f);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void open_log(struct fixture *f)
{
	char err[512];
	int rc = raftlog_open(&f->l, f->dir, err, sizeof(err));
	if (rc != 0)
		fail_msg("raftlog_open: %s", err);
}

static void reopen(struct fixture *f)
{
	raftlog_close(f->l);
	f->l = NULL;
	open_log(f);
}

static struct raft_id id_of(uint8_t b)
{
	struct raft_id id;
	memset(id.b, b, sizeof(id.b));
	return id;
}

static void ready_hard(struct fixture *f, uint64_t term, int vote_for)
{
	f->rd.hard_changed = 1;
	f->rd.hard.term = term;
	f->rd.hard.has_vote = vote_for != 0;
	if (vote_for)
		f->rd.hard.vote = id_of((uint8_t)vote_for);
}

/* Adds an entry to the ready; its data is `len` bytes of a pattern from
 * its index. */
static void ready_entry(struct fixture *f, uint64_t index, uint64_t term, uint8_t type,
                        uint32_t len)
{
	assert_true(f->rd.n_append < ENTRIES_MAX);
	struct raft_entry *e = &f->ents[f->rd.n_append++];
	e->index = index;
	e->term = term;
	e->type = type;
	e->len = len;
	e->data = len ? malloc(len) : NULL;
	for (uint32_t i = 0; i < len; i++)
		e->data[i] = (uint8_t)(index * 31 + i);
	f->rd.append = f->ents;
}

static void persist_ok(struct fixture *f)
{
	int rc = raftlog_persist(f->l, &f->rd);
	if (rc != 0)
		fail_msg("raftlog_persist: %s", raftlog_last_error(f->l));
	ready_clear(f);
}

/* Term 1..: entries 1..n, each in term t_of[i] (or 1). */
static void persist_entries(struct fixture *f, uint64_t hard_term, uint64_t from, uint64_t to,
                            uint64_t term)
{
	ready_hard(f, hard_term, 0);
	for (uint64_t i = from; i <= to; i++)
		ready_entry(f, i, term, RAFT_ENTRY_DATA, 8);
	persist_ok(f);
}

/* what load returns besides hard state and entries (not checked by every test) */
static struct raft_point base_;
static struct raft_snapshot snap_;

struct loaded {
	struct raft_hard hard;
	struct raft_point base;
	struct raft_snapshot snap;
	const struct raft_entry *e;
	uint32_t n;
};

static struct loaded load_ok(struct fixture *f)
{
	struct loaded ld;
	int rc = raftlog_load(f->l, &ld.hard, &ld.base, &ld.snap, &ld.e, &ld.n);
	if (rc != 0)
		fail_msg("raftlog_load: %s", raftlog_last_error(f->l));
	for (uint32_t i = 0; i < ld.n; i++)
		assert_int_equal(ld.e[i].index, i + 1);
	return ld;
}

static void assert_pattern(const struct raft_entry *e, uint32_t len)
{
	assert_int_equal(e->len, len);
	for (uint32_t i = 0; i < len; i++)
		if (e->data[i] != (uint8_t)(e->index * 31 + i))
			fail_msg("index %llu: byte %u differs", (unsigned long long)e->index, i);
}

/* Runs SQL on raft.db with a connection of its own, as an operator or a
 * damaged disk would change it. */
static void raw_sql(struct fixture *f, const char *sql)
{
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

static void assert_contains(const char *s, const char *sub)
{
	if (!strstr(s, sub))
		fail_msg("'%s' does not contain '%s'", s, sub);
}

/* ---- round trips ---- */

static void new_dir_opens_as_empty_state(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 0);
	assert_false(ld.hard.has_vote);
	assert_int_equal(ld.n, 0);
	assert_null(ld.e);
	/* the file is WAL (a property of the file, seen from outside) */
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	sqlite3_stmt *s = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	sqlite3_close(db);
}

static void hard_state_round_trips_with_and_without_vote(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	ready_hard(f, 3, 7);
	persist_ok(f);
	reopen(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 3);
	assert_true(ld.hard.has_vote);
	struct raft_id want = id_of(7);
	assert_memory_equal(ld.hard.vote.b, want.b, RAFT_ID_BYTES);

	ready_hard(f, 4, 0); /* a new term starts with no vote */
	persist_ok(f);
	reopen(f);
	ld = load_ok(f);
	assert_int_equal(ld.hard.term, 4);
	assert_false(ld.hard.has_vote);
	struct raft_id zero = {{0}};
	assert_memory_equal(ld.hard.vote.b, zero.b, RAFT_ID_BYTES);

	/* a vote in the current term, then the same hard state again */
	ready_hard(f, 4, 9);
	persist_ok(f);
	ready_hard(f, 4, 9);
	persist_ok(f);
	reopen(f);
	ld = load_ok(f);
	assert_int_equal(ld.hard.term, 4);
	assert_true(ld.hard.has_vote);
	want = id_of(9);
	assert_memory_equal(ld.hard.vote.b, want.b, RAFT_ID_BYTES);
}

static void entries_round_trip_empty_and_one_mib(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	ready_hard(f, 2, 1);
	ready_entry(f, 1, 1, RAFT_ENTRY_NOOP, 0);
	ready_entry(f, 2, 1, RAFT_ENTRY_DATA, RAFT_ENTRY_BYTES_MAX);
	ready_entry(f, 3, 2, RAFT_ENTRY_CONFIG, 2 * RAFT_ID_BYTES);
	ready_entry(f, 4, 2, RAFT_ENTRY_DATA, 1);
	persist_ok(f);
	reopen(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 2);
	assert_int_equal(ld.n, 4);
	assert_int_equal(ld.e[0].term, 1);
	assert_int_equal(ld.e[0].type, RAFT_ENTRY_NOOP);
	assert_int_equal(ld.e[0].len, 0);
	assert_int_equal(ld.e[1].type, RAFT_ENTRY_DATA);
	assert_pattern(&ld.e[1], RAFT_ENTRY_BYTES_MAX);
	assert_int_equal(ld.e[2].term, 2);
	assert_int_equal(ld.e[2].type, RAFT_ENTRY_CONFIG);
	assert_pattern(&ld.e[2], 2 * RAFT_ID_BYTES);
	assert_pattern(&ld.e[3], 1);

	/* what raft_create needs, it takes as loaded */
	struct raft_config cfg = {.self = id_of(1), .election_ms = 1000, .heartbeat_ms = 100,
	                          .seed = 1};
	ld.base.n_voters = 1;
	ld.base.voters[0] = id_of(1);
	struct raft *r = raft_create(&cfg, &ld.hard, &ld.base, NULL, ld.e, ld.n, 0);
	assert_non_null(r);
	raftlog_release_loaded(f->l); /* raft_create copied them */
	struct raft_status st;
	raft_status(r, &st);
	assert_int_equal(st.last_index, 4);
	assert_int_equal(st.term, 2);
	raft_destroy(r);
}

static void appends_accumulate_and_load_twice(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_entries(f, 1, 1, 3, 1);
	persist_entries(f, 2, 4, 5, 2);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.n, 5);
	ld = load_ok(f); /* the first load's arrays are freed, not leaked */
	assert_int_equal(ld.n, 5);
	assert_int_equal(ld.e[4].term, 2);
	assert_pattern(&ld.e[4], 8);
}

static void truncation_then_append_replaces_the_suffix(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_entries(f, 1, 1, 5, 1);
	/* a new leader of term 2 replaced index 3.. (Raft §5.3) */
	ready_hard(f, 2, 0);
	f->rd.truncate_from = 3;
	ready_entry(f, 3, 2, RAFT_ENTRY_NOOP, 0);
	ready_entry(f, 4, 2, RAFT_ENTRY_DATA, 100);
	persist_ok(f);
	reopen(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.n, 4);
	assert_int_equal(ld.e[1].term, 1);
	assert_int_equal(ld.e[2].term, 2);
	assert_int_equal(ld.e[2].type, RAFT_ENTRY_NOOP);
	assert_pattern(&ld.e[3], 100);

	/* a truncation alone (entries the core had not persisted are gone) */
	f->rd.truncate_from = 2;
	persist_ok(f);
	ld = load_ok(f);
	assert_int_equal(ld.n, 1);
	/* and one past the end deletes nothing */
	f->rd.truncate_from = 9;
	persist_ok(f);
	ld = load_ok(f);
	assert_int_equal(ld.n, 1);
}

static void nothing_to_persist_is_a_no_op(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	assert_int_equal(raftlog_persist(f->l, &f->rd), 0);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 0);
	assert_int_equal(ld.n, 0);
}

/* ---- failures leave the previous state ---- */

static void assert_state_is_term_2_with_3_entries(struct fixture *f)
{
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 2);
	assert_false(ld.hard.has_vote);
	assert_int_equal(ld.n, 3);
	for (uint32_t i = 0; i < 3; i++) {
		assert_int_equal(ld.e[i].term, 1);
		assert_pattern(&ld.e[i], 8);
	}
}

static void failed_persist_applies_nothing(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_entries(f, 2, 1, 3, 1);
	/* the last insert of the next persist fails, after its hard state,
	 * truncation and first appends were written in the transaction */
	raw_sql(f, "CREATE TRIGGER fail_5 BEFORE INSERT ON log WHEN NEW.idx = 5 "
	           "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
	ready_hard(f, 3, 4);
	f->rd.truncate_from = 2;
	ready_entry(f, 2, 3, RAFT_ENTRY_NOOP, 0);
	ready_entry(f, 3, 3, RAFT_ENTRY_DATA, 10);
	ready_entry(f, 4, 3, RAFT_ENTRY_DATA, 10);
	ready_entry(f, 5, 3, RAFT_ENTRY_DATA, 10);
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_STORAGE);
	assert_contains(raftlog_last_error(f->l), "injected failure");
	assert_contains(raftlog_last_error(f->l), "raft.db: append to log");
	assert_false(raftlog_broken(f->l)); /* not an I/O error: a retry is allowed */
	assert_state_is_term_2_with_3_entries(f);
	reopen(f);
	assert_state_is_term_2_with_3_entries(f);

	/* the failure did not stick: the same ready goes through once the
	 * cause is gone */
	raw_sql(f, "DROP TRIGGER fail_5");
	persist_ok(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 3);
	assert_int_equal(ld.n, 5);
	assert_int_equal(ld.e[4].term, 3);
}

/* A ready that would break Raft or the file's rules is refused whole. */
static void refuse(struct fixture *f, const char *msg)
{
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l), msg);
	ready_clear(f);
	assert_state_is_term_2_with_3_entries(f);
}

static void ready_breaking_the_rules_is_refused_whole(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_entries(f, 2, 1, 3, 1);

	ready_hard(f, 2, 0);
	ready_entry(f, 4, 2, RAFT_ENTRY_DATA, RAFT_ENTRY_BYTES_MAX + 1);
	refuse(f, "append: index 4 holds 1048577 bytes, more than the entry limit 1048576");

	ready_hard(f, 2, 0);
	ready_entry(f, 5, 2, RAFT_ENTRY_DATA, 1);
	refuse(f, "append: index 5 follows 3");

	ready_entry(f, 4, 1, RAFT_ENTRY_DATA, 1);
	ready_entry(f, 6, 1, RAFT_ENTRY_DATA, 1);
	refuse(f, "append: index 6 follows 4");

	ready_entry(f, 4, 3, RAFT_ENTRY_DATA, 1);
	refuse(f, "append: index 4 has term 3, above the hard state's term 2");

	ready_hard(f, 2, 0);
	f->rd.truncate_from = 3;
	ready_entry(f, 3, 0, RAFT_ENTRY_DATA, 1);
	refuse(f, "append: index 3 has term 0, lower than index 2's term 1");

	ready_entry(f, 4, 1, 9, 1);
	refuse(f, "append: index 4 has unknown type 9");

	ready_hard(f, 1, 0);
	refuse(f, "term would go back from 2 to 1");

	ready_entry(f, RAFT_LOG_ENTRIES_MAX + 1, 1, RAFT_ENTRY_DATA, 1);
	refuse(f, "over the log limit");

	/* one vote per term (Raft §5.2): once cast, it stays */
	ready_hard(f, 3, 5);
	persist_ok(f);
	ready_hard(f, 3, 6);
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l), "the vote of term 3 would change");
	ready_hard(f, 3, 0);
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	ready_clear(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 3);
	struct raft_id want = id_of(5);
	assert_memory_equal(ld.hard.vote.b, want.b, RAFT_ID_BYTES);
}

/* ---- a file damaged or changed behind our back ---- */

struct corruption {
	const char *sql;
	const char *msg;
};

/* A valid file: hard term 3, entries 1..7 (index 1..2 term 1, 3..7 term 2). */
static void write_valid_file(struct fixture *f)
{
	open_log(f);
	ready_hard(f, 3, 2);
	for (uint64_t i = 1; i <= 7; i++)
		ready_entry(f, i, i <= 2 ? 1 : 2, RAFT_ENTRY_DATA, 4);
	persist_ok(f);
	raftlog_close(f->l);
	f->l = NULL;
}

static void corrupt_rows_are_refused_with_their_message(void **state)
{
	struct fixture *f = *state;
	static const struct corruption cases[] = {
		{"DELETE FROM log WHERE idx = 6", "raft.db: log index 7 follows 5"},
		{"DELETE FROM log WHERE idx = 1", "raft.db: log starts at index 2, not 1"},
		{"UPDATE log SET term = 1 WHERE idx = 4",
		 "raft.db: log index 4 has term 1, lower than index 3's term 2"},
		{"UPDATE hard SET vote = x'010203'", "raft.db: hard state vote is 3 bytes, not 16 or NULL"},
		{"UPDATE hard SET vote = 'sixteen chars!!!'", "raft.db: hard state vote is not a blob"},
		{"UPDATE log SET term = 4 WHERE idx = 7",
		 "raft.db: log index 7 has term 4, above the hard state's term 3"},
		{"UPDATE hard SET term = 1", "raft.db: log index 3 has term 2, above the hard state's term 1"},
		{"UPDATE hard SET term = -1", "raft.db: hard state term is not an integer >= 0"},
		{"UPDATE log SET term = 'two' WHERE idx = 2",
		 "raft.db: log index 2: term is not an integer >= 0"},
		{"UPDATE log SET type = 3 WHERE idx = 5", "raft.db: log index 5 has an unknown type"},
		{"UPDATE log SET data = 'text' WHERE idx = 5", "raft.db: log index 5: data is not a blob"},
		{"UPDATE log SET data = zeroblob(1048577) WHERE idx = 6",
		 "raft.db: log index 6 holds 1048577 bytes, more than the entry limit 1048576"},
		{"DELETE FROM hard", "raft.db: hard state row is missing"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		assert_int_equal(mkdir(f->dir, 0700), 0);
		write_valid_file(f);
		raw_sql(f, cases[i].sql);
		open_log(f); /* the rows are checked by load */
		struct raft_hard hard;
		const struct raft_entry *e = (const void *)&hard;
		uint32_t n = 99;
		int rc = raftlog_load(f->l, &hard, &base_, &snap_, &e, &n);
		if (rc != ERR_STORAGE)
			fail_msg("case %zu (%s): load returned %d", i, cases[i].sql, rc);
		assert_contains(raftlog_last_error(f->l), cases[i].msg);
		assert_null(e);
		assert_int_equal(n, 0);
		/* a persist reads the same hard state and refuses it too */
		if (strstr(cases[i].msg, "raft.db: hard state")) {
			ready_hard(f, 9, 0);
			assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_STORAGE);
			assert_contains(raftlog_last_error(f->l), cases[i].msg);
			ready_clear(f);
		}
		raftlog_close(f->l);
		f->l = NULL;
	}
}

static void zero_length_file_opens_as_empty_state(void **state)
{
	struct fixture *f = *state;
	int fd = open(f->path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	assert_true(fd >= 0);
	close(fd);
	open_log(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 0);
	assert_int_equal(ld.n, 0);
	persist_entries(f, 1, 1, 2, 1);
	reopen(f);
	ld = load_ok(f);
	assert_int_equal(ld.n, 2);
}

static void write_file(const char *path, long off, const void *buf, size_t len)
{
	int fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, len, off), (ssize_t)len);
	close(fd);
}

static void open_refused(struct fixture *f, const char *msg)
{
	char err[512];
	struct raftlog *l = NULL;
	assert_int_equal(raftlog_open(&l, f->dir, err, sizeof(err)), ERR_STORAGE);
	assert_null(l);
	assert_contains(err, f->path);
	assert_contains(err, msg);
}

static void file_that_is_not_a_database_is_refused(void **state)
{
	struct fixture *f = *state;
	char junk[8192];
	memset(junk, 'x', sizeof(junk));
	write_file(f->path, 0, junk, sizeof(junk));
	open_refused(f, "file is not a database");
}

static void damaged_page_is_refused_by_quick_check(void **state)
{
	struct fixture *f = *state;
	write_valid_file(f); /* closed: the WAL is checkpointed into raft.db */
	/* page 3 is the log table's root (1: schema, 2: hard); 4096-byte pages */
	uint8_t junk[4096];
	memset(junk, 0xa5, sizeof(junk));
	write_file(f->path, 2 * 4096, junk, sizeof(junk));
	open_refused(f, "damaged, refused (quick_check: ");
}

static void copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb");
	assert_non_null(in);
	FILE *out = fopen(to, "wb");
	assert_non_null(out);
	char buf[8192];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

#define WAL_HEADER_BYTES 32
#define WAL_FRAME_BYTES (24 + 4096)

/* Into the fixture's dir: raft.db and raft.db-wal as a node left them when
 * it stopped without closing (hard term 2, entries 1..3, then hard term 3
 * alone, each its own commit). Returns the WAL's size. */
static long write_unclosed_file(struct fixture *f)
{
	char src[] = "/tmp/chorus-raftlog-src-XXXXXX";
	assert_non_null(mkdtemp(src));
	char err[512], from[96], to[128];
	struct raftlog *l = NULL;
	assert_int_equal(raftlog_open(&l, src, err, sizeof(err)), 0);
	struct raftlog *saved = f->l;
	f->l = l;
	persist_entries(f, 2, 1, 3, 1);
	ready_hard(f, 3, 0);
	persist_ok(f);
	f->l = saved;
	snprintf(from, sizeof(from), "%s/raft.db", src);
	copy_file(from, f->path); /* while open: the WAL is not checkpointed away */
	snprintf(from, sizeof(from), "%s/raft.db-wal", src);
	snprintf(to, sizeof(to), "%s-wal", f->path);
	copy_file(from, to);
	raftlog_close(l);
	nftw(src, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	struct stat sb;
	assert_int_equal(stat(to, &sb), 0);
	assert_true(sb.st_size >= WAL_HEADER_BYTES + 3 * WAL_FRAME_BYTES);
	return (long)sb.st_size;
}

static void wal_damaged_before_its_end_is_refused(void **state)
{
	struct fixture *f = *state;
	write_unclosed_file(f);
	/* sqlite would replay frame 1 and silently drop every commit after
	 * frame 2: this node's term and entries would go back to nothing */
	char wal[128];
	snprintf(wal, sizeof(wal), "%s-wal", f->path);
	uint8_t junk[16];
	memset(junk, 0x5a, sizeof(junk));
	write_file(wal, WAL_HEADER_BYTES + WAL_FRAME_BYTES + 24 + 100, junk, sizeof(junk));
	open_refused(f, "raft.db-wal: frame 2 is damaged: sqlite would drop the ");
}

static void wal_cut_in_its_last_commit_opens_without_it(void **state)
{
	struct fixture *f = *state;
	long size = write_unclosed_file(f);
	/* the last commit (hard term 3) damaged, as a crash inside it can
	 * leave it: it was never acknowledged, so the file opens without it */
	char wal[128];
	snprintf(wal, sizeof(wal), "%s-wal", f->path);
	uint8_t junk[16];
	memset(junk, 0x5a, sizeof(junk));
	write_file(wal, size - 200, junk, sizeof(junk));
	log_setup(LOG_ERROR, 0); /* the warning is expected */
	open_log(f);
	log_setup(LOG_INFO, 0);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 2);
	assert_int_equal(ld.n, 3);
}

static void foreign_database_is_refused(void **state)
{
	struct fixture *f = *state;
	raw_sql(f, "CREATE TABLE tasks(id INTEGER PRIMARY KEY)");
	open_refused(f, "holds tables but no raft log schema");
	raw_sql(f, "PRAGMA user_version = 2");
	open_refused(f, "not a Chorus raft log (application_id 0");
	raw_sql(f, "PRAGMA application_id = 1129465428; PRAGMA user_version = 7");
	open_refused(f, "schema version 7 is newer than this chorusd supports (1)");
}

static void missing_data_dir_is_refused(void **state)
{
	struct fixture *f = *state;
	char dir[128], err[256];
	snprintf(dir, sizeof(dir), "%s/nope", f->dir);
	struct raftlog *l = NULL;
	assert_int_equal(raftlog_open(&l, dir, err, sizeof(err)), ERR_STORAGE);
	assert_null(l);
	assert_contains(err, "No such file or directory");
}

static void log_beyond_the_entry_limit_is_refused(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	ready_hard(f, 1, 0);
	persist_ok(f);
	/* the bound is checked before anything is allocated or read */
	char sql[128];
	snprintf(sql, sizeof(sql), "INSERT INTO log(idx, term, type, data) VALUES (%u, 1, 1, NULL)",
	         RAFT_LOG_ENTRIES_MAX + 1);
	raw_sql(f, sql);
	struct raft_hard hard;
	const struct raft_entry *e;
	uint32_t n;
	assert_int_equal(raftlog_load(f->l, &hard, &base_, &snap_, &e, &n), ERR_STORAGE);
	assert_contains(raftlog_last_error(f->l),
	                "raft.db: log reaches index 4194305, beyond the limit 4194304");
}

static void rows_below_index_1_are_refused(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_entries(f, 1, 1, 2, 1);
	raw_sql(f, "INSERT INTO log(idx, term, type, data) VALUES (-3, 1, 1, NULL)");
	struct raft_hard hard;
	const struct raft_entry *e;
	uint32_t n;
	assert_int_equal(raftlog_load(f->l, &hard, &base_, &snap_, &e, &n), ERR_STORAGE);
	assert_contains(raftlog_last_error(f->l), "raft.db: log starts at index -3, not 1");
	/* alone: max(idx) is below 1 */
	raw_sql(f, "DELETE FROM log WHERE idx > 0");
	assert_int_equal(raftlog_load(f->l, &hard, &base_, &snap_, &e, &n), ERR_STORAGE);
	assert_contains(raftlog_last_error(f->l), "raft.db: log starts at index -3, not 1");
}

/* ---- meta ---- */

static void meta_round_trips_and_reports_missing_keys(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	uint8_t buf[64];
	size_t len = 99;
	assert_int_equal(raftlog_meta_get(f->l, "bootstrapped", buf, sizeof(buf), &len),
	                 ERR_NOT_FOUND);
	assert_int_equal(len, 0);

	uint8_t one = 1;
	assert_int_equal(raftlog_meta_put(f->l, "bootstrapped", &one, 1), 0);
	struct raft_id voters[3] = {id_of(1), id_of(2), id_of(3)};
	assert_int_equal(raftlog_meta_put(f->l, "voters", voters, sizeof(voters)), 0);
	assert_int_equal(raftlog_meta_put(f->l, "empty", NULL, 0), 0);
	reopen(f);

	assert_int_equal(raftlog_meta_get(f->l, "bootstrapped", buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 1);
	assert_int_equal(buf[0], 1);
	assert_int_equal(raftlog_meta_get(f->l, "voters", buf, sizeof(buf), &len), 0);
	assert_int_equal(len, sizeof(voters));
	assert_memory_equal(buf, voters, sizeof(voters));
	assert_int_equal(raftlog_meta_get(f->l, "empty", buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 0);

	/* replaced, not added */
	uint8_t two[2] = {2, 2};
	assert_int_equal(raftlog_meta_put(f->l, "bootstrapped", two, 2), 0);
	assert_int_equal(raftlog_meta_get(f->l, "bootstrapped", buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 2);

	/* a buffer too small says how much is needed and is left alone */
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(raftlog_meta_get(f->l, "voters", buf, 10, &len), ERR_TOO_LARGE);
	assert_int_equal(len, sizeof(voters));
	assert_int_equal(buf[0], 0xee);
}

static void meta_limits_are_enforced(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	size_t len;
	uint8_t b = 0;
	assert_int_equal(raftlog_meta_put(f->l, "", &b, 1), ERR_INVALID);
	char key[RAFTLOG_META_KEY_BYTES_MAX + 2];
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	assert_int_equal(raftlog_meta_put(f->l, key, &b, 1), ERR_INVALID);
	assert_int_equal(raftlog_meta_get(f->l, key, &b, 1, &len), ERR_INVALID);
	key[RAFTLOG_META_KEY_BYTES_MAX] = '\0'; /* exactly the limit */
	assert_int_equal(raftlog_meta_put(f->l, key, &b, 1), 0);

	uint8_t *big = calloc(1, RAFTLOG_META_VAL_BYTES_MAX + 1);
	assert_non_null(big);
	assert_int_equal(raftlog_meta_put(f->l, "big", big, RAFTLOG_META_VAL_BYTES_MAX + 1),
	                 ERR_TOO_LARGE);
	assert_int_equal(raftlog_meta_put(f->l, "big", big, RAFTLOG_META_VAL_BYTES_MAX), 0);
	assert_int_equal(raftlog_meta_get(f->l, "big", big, RAFTLOG_META_VAL_BYTES_MAX, &len), 0);
	assert_int_equal(len, RAFTLOG_META_VAL_BYTES_MAX);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(new_dir_opens_as_empty_state, setup, teardown),
		cmocka_unit_test_setup_teardown(hard_state_round_trips_with_and_without_vote, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(entries_round_trip_empty_and_one_mib, setup, teardown),
		cmocka_unit_test_setup_teardown(appends_accumulate_and_load_twice, setup, teardown),
		cmocka_unit_test_setup_teardown(truncation_then_append_replaces_the_suffix, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(nothing_to_persist_is_a_no_op, setup, teardown),
		cmocka_unit_test_setup_teardown(failed_persist_applies_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(ready_breaking_the_rules_is_refused_whole, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(corrupt_rows_are_refused_with_their_message, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(zero_length_file_opens_as_empty_state, setup, teardown),
		cmocka_unit_test_setup_teardown(file_that_is_not_a_database_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(damaged_page_is_refused_by_quick_check, setup, teardown),
		cmocka_unit_test_setup_teardown(wal_damaged_before_its_end_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(wal_cut_in_its_last_commit_opens_without_it, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(foreign_database_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(missing_data_dir_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(log_beyond_the_entry_limit_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(rows_below_index_1_are_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(meta_round_trips_and_reports_missing_keys, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(meta_limits_are_enforced, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
