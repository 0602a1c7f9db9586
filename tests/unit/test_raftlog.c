/*
 * test_raftlog.c - the Raft state file (node/io/raftlog.c): round trips of
 * the hard state and the log across close/open, truncation, a persist that
 * fails half-way and leaves nothing, readies that would break Raft, files
 * damaged or tampered with (each refused with its own message), a
 * zero-length file, the meta table and the limits; compaction (a snapshot
 * stored locally or installed from a leader, the log before it deleted),
 * its refusals, its rows damaged, a 20 MiB snapshot and the upgrade of a
 * version 1 file.
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
	struct raft_snapshot snap; /* rd.snapshot, when set; data owned here */
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
	free(f->snap.data);
	memset(&f->snap, 0, sizeof(f->snap));
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
		assert_int_equal(ld.e[i].index, ld.base.index + 1 + i);
	if (ld.snap.at.index == 0) {
		assert_null(ld.snap.data);
		assert_int_equal(ld.snap.len, 0);
	}
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
	open_refused(f, "schema version 7 is newer than this chorusd supports (2)");
	raw_sql(f, "PRAGMA user_version = 3");
	open_refused(f, "schema version 3 is newer than this chorusd supports (2)");
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
	/* the bound counts the entries from the base to the last row, and is
	 * checked before anything is allocated or read: one row far away
	 * stands for the gap the rows below it would fill */
	char sql[128];
	snprintf(sql, sizeof(sql), "INSERT INTO log(idx, term, type, data) VALUES (%u, 1, 1, NULL)",
	         RAFT_LOG_ENTRIES_MAX + 1);
	raw_sql(f, sql);
	struct raft_hard hard;
	const struct raft_entry *e;
	uint32_t n;
	assert_int_equal(raftlog_load(f->l, &hard, &base_, &snap_, &e, &n), ERR_STORAGE);
	assert_contains(raftlog_last_error(f->l),
	                "raft.db: log spans index 1 to 4194305: 4194305 entries, beyond the limit "
	                "4194304");
	/* indexes are bounded by RAFT_INDEX_MAX, not by the entry count */
	snprintf(sql, sizeof(sql), "INSERT INTO log(idx, term, type, data) VALUES (%llu, 1, 1, NULL)",
	         RAFT_INDEX_MAX + 1);
	raw_sql(f, sql);
	assert_int_equal(raftlog_load(f->l, &hard, &base_, &snap_, &e, &n), ERR_STORAGE);
	assert_contains(raftlog_last_error(f->l),
	                "raft.db: log reaches index 281474976710657, beyond the index limit "
	                "281474976710656");
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

/* ---- compaction ---- */

/* A point with voters 1..n_voters. */
static struct raft_point point(uint64_t index, uint64_t term, uint32_t n_voters)
{
	struct raft_point p;
	memset(&p, 0, sizeof(p));
	p.index = index;
	p.term = term;
	p.n_voters = n_voters;
	for (uint32_t i = 0; i < n_voters; i++)
		p.voters[i] = id_of((uint8_t)(i + 1));
	return p;
}

static uint8_t snap_byte(uint64_t index, uint64_t i)
{
	return (uint8_t)(index * 7 + i * 13 + (i >> 12));
}

/* A snapshot at `at` of len bytes of a pattern from its index; *s owns
 * them. */
static void snap_fill(struct raft_snapshot *s, struct raft_point at, uint64_t len)
{
	s->at = at;
	s->len = len;
	s->data = NULL;
	if (len) {
		s->data = malloc(len);
		assert_non_null(s->data);
		for (uint64_t i = 0; i < len; i++)
			s->data[i] = snap_byte(at.index, i);
	}
}

static void assert_snap(const struct raft_snapshot *s, uint64_t index, uint64_t term,
                        uint32_t n_voters, uint64_t len)
{
	struct raft_point want = point(index, term, n_voters);
	assert_int_equal(s->at.index, index);
	assert_int_equal(s->at.term, term);
	assert_int_equal(s->at.n_voters, n_voters);
	assert_memory_equal(s->at.voters, want.voters, n_voters * sizeof(want.voters[0]));
	assert_int_equal(s->len, len);
	if (len == 0)
		assert_null(s->data);
	for (uint64_t i = 0; i < len; i++)
		if (s->data[i] != snap_byte(index, i))
			fail_msg("snapshot byte %llu differs", (unsigned long long)i);
}

static void assert_base(const struct raft_point *b, uint64_t index, uint64_t term,
                        uint32_t n_voters)
{
	struct raft_point want = point(index, term, n_voters);
	assert_int_equal(b->index, index);
	assert_int_equal(b->term, term);
	assert_int_equal(b->n_voters, n_voters);
	assert_memory_equal(b->voters, want.voters, n_voters * sizeof(want.voters[0]));
}

static int compact(struct fixture *f, struct raft_point at, uint64_t len, struct raft_point base)
{
	struct raft_snapshot s;
	snap_fill(&s, at, len);
	int rc = raftlog_compact(f->l, &s, &base);
	free(s.data);
	return rc;
}

static void compact_ok(struct fixture *f, struct raft_point at, uint64_t len,
                       struct raft_point base)
{
	if (compact(f, at, len, base) != 0)
		fail_msg("raftlog_compact: %s", raftlog_last_error(f->l));
}

/* The ready carries a snapshot from a leader at `at` (len bytes). */
static void ready_snapshot(struct fixture *f, struct raft_point at, uint64_t len)
{
	snap_fill(&f->snap, at, len);
	f->rd.snapshot = &f->snap;
}

/* Hard term 3; entries 1..2 in term 1, 3..10 in term 2. */
static void persist_ten(struct fixture *f)
{
	ready_hard(f, 3, 0);
	for (uint64_t i = 1; i <= 10; i++)
		ready_entry(f, i, i <= 2 ? 1 : 2, RAFT_ENTRY_DATA, 8);
	persist_ok(f);
}

static void compact_then_load_round_trips(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_ten(f);
	/* the snapshot at 8, the log kept from 6 for followers a little behind */
	compact_ok(f, point(8, 2, 3), 1000, point(5, 2, 2));
	reopen(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 3);
	assert_base(&ld.base, 5, 2, 2);
	assert_snap(&ld.snap, 8, 2, 3, 1000);
	assert_int_equal(ld.n, 5);
	assert_int_equal(ld.e[0].index, 6);
	assert_int_equal(ld.e[4].index, 10);
	assert_pattern(&ld.e[0], 8);

	/* the log goes on after the base */
	persist_entries(f, 3, 11, 12, 3);
	/* a later compaction replaces both; up to the last entry, with an
	 * empty state machine */
	compact_ok(f, point(12, 3, 1), 0, point(12, 3, 1));
	ld = load_ok(f);
	assert_base(&ld.base, 12, 3, 1);
	assert_snap(&ld.snap, 12, 3, 1, 0);
	assert_int_equal(ld.n, 0);
	assert_null(ld.e);
	persist_entries(f, 3, 13, 13, 3);
	reopen(f);
	ld = load_ok(f);
	assert_int_equal(ld.n, 1);
	assert_int_equal(ld.e[0].index, 13);
	/* a compaction at the same base with a newer snapshot */
	compact_ok(f, point(13, 3, 2), 10, point(12, 3, 1));
	ld = load_ok(f);
	assert_base(&ld.base, 12, 3, 1);
	assert_snap(&ld.snap, 13, 3, 2, 10);
	assert_int_equal(ld.n, 1);
	/* the entries after the snapshot may still be replaced */
	persist_entries(f, 4, 14, 15, 3);
	ready_hard(f, 4, 0);
	f->rd.truncate_from = 14;
	ready_entry(f, 14, 4, RAFT_ENTRY_NOOP, 0);
	persist_ok(f);
	ld = load_ok(f);
	assert_int_equal(ld.n, 2);
	assert_int_equal(ld.e[1].index, 14);
	assert_int_equal(ld.e[1].term, 4);
	/* the arrays and the snapshot bytes of a load are freed by the next
	 * load, by release and by close (valgrind checks) */
	ld = load_ok(f);
	raftlog_release_loaded(f->l);
	ld = load_ok(f);
}

static void compact_keeping_everything_stores_a_base_at_zero(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_ten(f);
	compact_ok(f, point(4, 2, 3), 64, point(0, 0, 3));
	reopen(f);
	struct loaded ld = load_ok(f);
	assert_base(&ld.base, 0, 0, 3);
	assert_snap(&ld.snap, 4, 2, 3, 64);
	assert_int_equal(ld.n, 10);
}

static void snapshot_install_keeps_the_matching_suffix(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_ten(f);
	/* the leader's snapshot at 7 matches the entry held there (Raft §7:
	 * the entries after it stay); with it, the next entries */
	ready_snapshot(f, point(7, 2, 3), 300);
	ready_entry(f, 11, 3, RAFT_ENTRY_DATA, 8);
	persist_ok(f);
	reopen(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 3);
	assert_base(&ld.base, 7, 2, 3);
	assert_snap(&ld.snap, 7, 2, 3, 300);
	assert_int_equal(ld.n, 4);
	assert_int_equal(ld.e[0].index, 8);
	assert_int_equal(ld.e[3].index, 11);
	assert_int_equal(ld.e[3].term, 3);

	/* a snapshot alone, at the last entry, is not a no-op */
	ready_snapshot(f, point(11, 3, 3), 5);
	persist_ok(f);
	ld = load_ok(f);
	assert_base(&ld.base, 11, 3, 3);
	assert_snap(&ld.snap, 11, 3, 3, 5);
	assert_int_equal(ld.n, 0);
}

static void snapshot_install_discards_the_whole_log(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_ten(f);
	/* a snapshot far ahead of the log: everything goes, the appends
	 * follow the snapshot */
	ready_hard(f, 5, 0);
	ready_snapshot(f, point(40, 4, 2), 100);
	f->rd.truncate_from = 41;
	ready_entry(f, 41, 5, RAFT_ENTRY_NOOP, 0);
	ready_entry(f, 42, 5, RAFT_ENTRY_DATA, 8);
	persist_ok(f);
	reopen(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 5);
	assert_base(&ld.base, 40, 4, 2);
	assert_snap(&ld.snap, 40, 4, 2, 100);
	assert_int_equal(ld.n, 2);
	assert_int_equal(ld.e[0].index, 41);
	assert_int_equal(ld.e[1].term, 5);

	/* one inside the log that does not match it (term 5 at index 42 held,
	 * 6 in the snapshot): the rest of the log goes too */
	ready_hard(f, 6, 0);
	ready_snapshot(f, point(42, 6, 3), 7);
	f->rd.truncate_from = 43;
	persist_ok(f);
	ld = load_ok(f);
	assert_base(&ld.base, 42, 6, 3);
	assert_int_equal(ld.n, 0);
	/* and the next append follows it */
	persist_entries(f, 6, 43, 44, 6);
	ld = load_ok(f);
	assert_int_equal(ld.n, 2);
	assert_int_equal(ld.e[0].index, 43);
}

static void snapshot_install_breaking_the_rules_is_refused_whole(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_ten(f);
	compact_ok(f, point(6, 2, 3), 10, point(4, 2, 3));

	/* keeping a suffix after an entry of another term (Raft §7) */
	ready_snapshot(f, point(8, 3, 3), 1);
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l),
	                "snapshot at index 8 has term 3 but the log it keeps has term 2 there");
	ready_clear(f);
	/* older than what is stored: the state machine never goes back */
	ready_snapshot(f, point(5, 2, 3), 1);
	f->rd.truncate_from = 6;
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l),
	                "snapshot at index 5 is older than the stored one at index 6");
	ready_clear(f);
	ready_snapshot(f, point(3, 2, 3), 1);
	f->rd.truncate_from = 4;
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l), "snapshot at index 3 is below the stored base 4");
	ready_clear(f);
	/* a term above the hard state's */
	ready_snapshot(f, point(20, 4, 3), 1);
	f->rd.truncate_from = 21;
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l),
	                "snapshot at index 20 has term 4, above the hard state's term 3");
	ready_clear(f);
	/* bad voters */
	ready_snapshot(f, point(20, 3, 0), 1);
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l), "snapshot at index 20: 0 voters, want 1..9");
	ready_clear(f);
	ready_snapshot(f, point(20, 3, 2), 1);
	f->snap.at.voters[1] = f->snap.at.voters[0];
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l), "snapshot at index 20: voter 1 repeats voter 0");
	ready_clear(f);
	/* a truncation of committed entries: up to the snapshot (6), not
	 * only the base (4) */
	f->rd.truncate_from = 6;
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l),
	                "truncate from index 6: the entries up to 6 are committed (base 4, snapshot 6)");
	ready_clear(f);
	f->rd.truncate_from = 2;
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	ready_clear(f);
	/* appends that do not follow the snapshot */
	ready_snapshot(f, point(20, 3, 3), 1);
	f->rd.truncate_from = 21;
	ready_entry(f, 22, 3, RAFT_ENTRY_DATA, 1);
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l), "append: index 22 follows 20");
	ready_clear(f);
	ready_snapshot(f, point(20, 3, 3), 1);
	f->rd.truncate_from = 21;
	ready_entry(f, 21, 2, RAFT_ENTRY_DATA, 1);
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l),
	                "append: index 21 has term 2, lower than index 20's term 3");
	ready_clear(f);

	/* nothing of them was written */
	struct loaded ld = load_ok(f);
	assert_base(&ld.base, 4, 2, 3);
	assert_snap(&ld.snap, 6, 2, 3, 10);
	assert_int_equal(ld.n, 6);
}

static void compact_breaking_the_rules_is_refused(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_ten(f);
	compact_ok(f, point(6, 2, 3), 10, point(4, 2, 3));
	static const struct {
		uint64_t at, at_term, base, base_term;
		uint32_t at_voters, base_voters;
		const char *msg;
	} cases[] = {
		{6, 2, 7, 2, 3, 3, "compact: base index 7 is above the snapshot's 6"},
		{11, 2, 5, 2, 3, 3, "compact: snapshot at index 11 is above the last stored index 10"},
		{8, 2, 3, 2, 3, 3, "compact: base index 3 is below the stored base 4"},
		{5, 2, 4, 2, 3, 3, "compact: snapshot at index 5 is older than the stored one at index 6"},
		{8, 2, 5, 2, 0, 3, "compact: snapshot at index 8: 0 voters, want 1..9"},
		{8, 2, 5, 2, 3, 0, "compact: base at index 5: 0 voters, want 1..9"},
		{8, 2, 5, 2, 10, 3, "compact: snapshot at index 8: 10 voters, want 1..9"},
		{8, 3, 5, 2, 3, 3, "compact: snapshot at index 8 has term 3, the log's term there is 2"},
		{8, 2, 5, 1, 3, 3, "compact: base at index 5 has term 1, the log's term there is 2"},
		{8, 2, 4, 1, 3, 3, "compact: base at index 4 has term 1, the log's term there is 2"},
		{0, 0, 0, 0, 3, 3, "compact: the snapshot is at index 0"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct raft_point at = point(cases[i].at, cases[i].at_term, 0);
		struct raft_point base = point(cases[i].base, cases[i].base_term, 0);
		at.n_voters = cases[i].at_voters; /* possibly over the limit: ids past it unset */
		base.n_voters = cases[i].base_voters;
		for (uint32_t v = 0; v < RAFT_VOTERS_MAX; v++)
			at.voters[v] = base.voters[v] = id_of((uint8_t)(v + 1));
		int rc = compact(f, at, 3, base);
		if (rc != ERR_INVALID)
			fail_msg("case %zu: compact returned %d (%s)", i, rc, raftlog_last_error(f->l));
		assert_contains(raftlog_last_error(f->l), cases[i].msg);
	}
	/* the all-zero id means "no vote", never a voter */
	struct raft_point at = point(8, 2, 2);
	memset(at.voters[1].b, 0, RAFT_ID_BYTES);
	assert_int_equal(compact(f, at, 3, point(5, 2, 3)), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l),
	                "compact: snapshot at index 8: voter 1 is the all-zero id");
	/* over the snapshot limit: checked before the bytes are read */
	struct raft_snapshot big = {.at = point(8, 2, 3), .data = (uint8_t *)"x",
	                            .len = RAFT_SNAPSHOT_BYTES_MAX + 1};
	struct raft_point base = point(5, 2, 3);
	assert_int_equal(raftlog_compact(f->l, &big, &base), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l),
	                "compact: snapshot of 536870913 bytes, more than the limit 536870912");

	struct loaded ld = load_ok(f);
	assert_base(&ld.base, 4, 2, 3);
	assert_snap(&ld.snap, 6, 2, 3, 10);
	assert_int_equal(ld.n, 6);
}

static void failed_compact_applies_nothing(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_ten(f);
	/* the base's write fails after the snapshot's, in the transaction */
	raw_sql(f, "CREATE TRIGGER fail_base BEFORE INSERT ON base "
	           "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
	assert_int_equal(compact(f, point(8, 2, 3), 100, point(5, 2, 3)), ERR_STORAGE);
	assert_contains(raftlog_last_error(f->l), "raft.db: write base: injected failure");
	assert_false(raftlog_broken(f->l));
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.base.index, 0);
	assert_int_equal(ld.snap.at.index, 0);
	assert_int_equal(ld.n, 10);
	/* the same, through a persist installing a snapshot */
	ready_snapshot(f, point(8, 2, 3), 100);
	ready_entry(f, 11, 3, RAFT_ENTRY_DATA, 8);
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_STORAGE);
	assert_contains(raftlog_last_error(f->l), "injected failure");
	ld = load_ok(f);
	assert_int_equal(ld.base.index, 0);
	assert_int_equal(ld.n, 10);
	/* a retry goes through once the cause is gone */
	raw_sql(f, "DROP TRIGGER fail_base");
	persist_ok(f);
	assert_int_equal(compact(f, point(11, 3, 3), 100, point(9, 2, 3)), 0);
	ld = load_ok(f);
	assert_base(&ld.base, 9, 2, 3);
	assert_snap(&ld.snap, 11, 3, 3, 100);
	assert_int_equal(ld.n, 2);
}

/* A valid compacted file: hard term 3, base 5 (term 2), snapshot at 8
 * (term 2, 50 bytes), entries 6..10 in term 2. */
static void write_compacted_file(struct fixture *f)
{
	open_log(f);
	persist_ten(f);
	compact_ok(f, point(8, 2, 3), 50, point(5, 2, 3));
	raftlog_close(f->l);
	f->l = NULL;
}

static void corrupt_compaction_rows_are_refused_with_their_message(void **state)
{
	struct fixture *f = *state;
	static const struct corruption cases[] = {
		{"DELETE FROM snapshot",
		 "raft.db: the log is compacted up to index 5 but there is no snapshot"},
		{"UPDATE snapshot SET idx = 11", "raft.db: snapshot at index 11 is beyond the last index 10"},
		{"DELETE FROM log WHERE idx > 7", "raft.db: snapshot at index 8 is beyond the last index 7"},
		{"DELETE FROM log WHERE idx > 8", ""}, /* a snapshot at the last index is valid */
		{"UPDATE snapshot SET idx = 4", "raft.db: snapshot at index 4 is below the base 5"},
		{"UPDATE snapshot SET idx = 0", "raft.db: snapshot is at index 0"},
		{"DELETE FROM log WHERE idx = 6", "raft.db: log starts at index 7, not 6"},
		{"INSERT INTO log(idx, term, type, data) VALUES (5, 2, 1, NULL)",
		 "raft.db: log starts at index 5, not 6"},
		{"UPDATE base SET idx = 3", "raft.db: log starts at index 6, not 4"},
		{"DELETE FROM log; INSERT INTO log(idx, term, type, data) VALUES (2, 1, 1, NULL)",
		 "raft.db: log starts at index 2, not 6"},
		{"UPDATE base SET voters = x'0102'",
		 "raft.db: base voters: 2 bytes, not a whole number of 16-byte ids"},
		{"UPDATE base SET voters = x''", "raft.db: base at index 5: 0 voters, want 1..9"},
		{"UPDATE base SET voters = 'voters'", "raft.db: base voters is not a blob"},
		{"UPDATE snapshot SET voters = zeroblob(16)",
		 "raft.db: snapshot at index 8: voter 0 is the all-zero id"},
		{"UPDATE snapshot SET voters = zeroblob(160)",
		 "raft.db: snapshot voters: 10 ids, more than the limit 9"},
		{"UPDATE snapshot SET voters = x'01010101010101010101010101010101"
		 "01010101010101010101010101010101'", /* the same id twice */
		 "raft.db: snapshot at index 8: voter 1 repeats voter 0"},
		{"UPDATE base SET term = 3",
		 "raft.db: log index 6 has term 2, lower than the base's term 3 (index 5)"},
		{"UPDATE base SET term = 4",
		 "raft.db: base at index 5 has term 4, above the hard state's term 3"},
		{"UPDATE base SET idx = 'five'", "raft.db: base index is not an integer >= 0"},
		{"UPDATE snapshot SET term = -2", "raft.db: snapshot term is not an integer >= 0"},
		{"UPDATE snapshot SET term = 1",
		 "raft.db: snapshot at index 8 has term 1, the log's term there is 2"},
		{"UPDATE snapshot SET data = 'text'", "raft.db: snapshot data is not a blob"},
		{"UPDATE log SET term = 3 WHERE idx >= 8",
		 "raft.db: snapshot at index 8 has term 2, the log's term there is 3"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		assert_int_equal(mkdir(f->dir, 0700), 0);
		write_compacted_file(f);
		raw_sql(f, cases[i].sql);
		open_log(f);
		struct raft_hard hard;
		struct raft_point base;
		struct raft_snapshot snap;
		const struct raft_entry *e = (const void *)&hard;
		uint32_t n = 99;
		int rc = raftlog_load(f->l, &hard, &base, &snap, &e, &n);
		if (cases[i].msg[0] == '\0') { /* a valid file after all */
			if (rc != 0)
				fail_msg("case %zu (%s): %s", i, cases[i].sql, raftlog_last_error(f->l));
		} else {
			if (rc != ERR_STORAGE)
				fail_msg("case %zu (%s): load returned %d", i, cases[i].sql, rc);
			assert_contains(raftlog_last_error(f->l), cases[i].msg);
			assert_null(e);
			assert_int_equal(n, 0);
			assert_int_equal(base.index, 0);
			assert_null(snap.data);
		}
		raftlog_close(f->l);
		f->l = NULL;
	}
}

static void version_1_file_is_upgraded_in_place(void **state)
{
	struct fixture *f = *state;
	/* a file as a chorusd from before compaction left it */
	raw_sql(f, "PRAGMA application_id = 1129465428; PRAGMA user_version = 1;"
	           "CREATE TABLE hard(id INTEGER PRIMARY KEY CHECK (id = 1),"
	           "  term INTEGER NOT NULL, vote BLOB);"
	           "INSERT INTO hard(id, term, vote) VALUES (1, 2, zeroblob(16));"
	           "CREATE TABLE log(idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,"
	           "  type INTEGER NOT NULL, data BLOB);"
	           "INSERT INTO log(idx, term, type, data) VALUES"
	           "  (1, 1, 0, x''), (2, 1, 1, x'0102'), (3, 2, 2, zeroblob(16));"
	           "CREATE TABLE meta(key TEXT PRIMARY KEY, val BLOB);"
	           "INSERT INTO meta(key, val) VALUES ('bootstrapped', x'01');");
	log_setup(LOG_WARN, 0); /* the upgrade's notice is expected */
	open_log(f);
	log_setup(LOG_INFO, 0);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.hard.term, 2);
	assert_true(ld.hard.has_vote);
	assert_int_equal(ld.base.index, 0);
	assert_int_equal(ld.base.n_voters, 0);
	assert_int_equal(ld.snap.at.index, 0);
	assert_int_equal(ld.n, 3);
	assert_int_equal(ld.e[2].type, RAFT_ENTRY_CONFIG);
	uint8_t buf[4];
	size_t len;
	assert_int_equal(raftlog_meta_get(f->l, "bootstrapped", buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 1);

	/* the file says version 2 now, and compacts */
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	sqlite3_stmt *s = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(s, 0), RAFTLOG_SCHEMA_VERSION);
	sqlite3_finalize(s);
	sqlite3_close(db);
	compact_ok(f, point(3, 2, 1), 4, point(2, 1, 1));
	reopen(f);
	ld = load_ok(f);
	assert_base(&ld.base, 2, 1, 1);
	assert_int_equal(ld.n, 1);
	assert_int_equal(ld.e[0].index, 3);
}

static void twenty_mib_snapshot_round_trips(void **state)
{
	struct fixture *f = *state;
	const uint64_t len = 20u << 20;
	open_log(f);
	persist_ten(f);
	compact_ok(f, point(10, 2, 3), len, point(10, 2, 3));
	reopen(f);
	struct loaded ld = load_ok(f);
	assert_snap(&ld.snap, 10, 2, 3, len);
	/* and installed from a leader, replacing it */
	ready_hard(f, 4, 0);
	ready_snapshot(f, point(30, 4, 3), len + 1);
	f->rd.truncate_from = 31;
	persist_ok(f);
	reopen(f);
	ld = load_ok(f);
	assert_snap(&ld.snap, 30, 4, 3, len + 1);
	assert_int_equal(ld.n, 0);
}

static void indexes_beyond_the_entry_limit_follow_a_snapshot(void **state)
{
	struct fixture *f = *state;
	open_log(f);
	persist_ten(f);
	/* a long-lived cluster: the log is far past RAFT_LOG_ENTRIES_MAX in
	 * index, holding few entries */
	const uint64_t at = 3ull * RAFT_LOG_ENTRIES_MAX;
	ready_snapshot(f, point(at, 3, 3), 16);
	f->rd.truncate_from = at + 1;
	ready_entry(f, at + 1, 3, RAFT_ENTRY_DATA, 8);
	ready_entry(f, at + 2, 3, RAFT_ENTRY_DATA, 8);
	persist_ok(f);
	reopen(f);
	struct loaded ld = load_ok(f);
	assert_int_equal(ld.base.index, at);
	assert_int_equal(ld.n, 2);
	assert_pattern(&ld.e[1], 8);
	/* the count of entries held is what is bounded */
	ready_entry(f, at + RAFT_LOG_ENTRIES_MAX + 1, 3, RAFT_ENTRY_DATA, 1);
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l),
	                "append: index 16777217 would make the log hold 4194305 entries, over the "
	                "log limit 4194304");
	ready_clear(f);
	/* and the index by RAFT_INDEX_MAX */
	ready_entry(f, RAFT_INDEX_MAX + 1, 3, RAFT_ENTRY_DATA, 1);
	assert_int_equal(raftlog_persist(f->l, &f->rd), ERR_INVALID);
	assert_contains(raftlog_last_error(f->l),
	                "append: index 281474976710657 is over the index limit 281474976710656");
	ready_clear(f);
	char sql[128];
	snprintf(sql, sizeof(sql), "INSERT INTO log(idx, term, type, data) VALUES (%llu, 3, 1, NULL)",
	         (unsigned long long)(at + RAFT_LOG_ENTRIES_MAX + 1));
	raw_sql(f, sql);
	struct raft_hard hard;
	const struct raft_entry *e;
	uint32_t n;
	assert_int_equal(raftlog_load(f->l, &hard, &base_, &snap_, &e, &n), ERR_STORAGE);
	assert_contains(raftlog_last_error(f->l),
	                "raft.db: log spans index 12582913 to 16777217: 4194305 entries, beyond "
	                "the limit 4194304");
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
		cmocka_unit_test_setup_teardown(compact_then_load_round_trips, setup, teardown),
		cmocka_unit_test_setup_teardown(compact_keeping_everything_stores_a_base_at_zero, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(snapshot_install_keeps_the_matching_suffix, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(snapshot_install_discards_the_whole_log, setup, teardown),
		cmocka_unit_test_setup_teardown(snapshot_install_breaking_the_rules_is_refused_whole,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(compact_breaking_the_rules_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(failed_compact_applies_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(corrupt_compaction_rows_are_refused_with_their_message,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(version_1_file_is_upgraded_in_place, setup, teardown),
		cmocka_unit_test_setup_teardown(twenty_mib_snapshot_round_trips, setup, teardown),
		cmocka_unit_test_setup_teardown(indexes_beyond_the_entry_limit_follow_a_snapshot, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(meta_round_trips_and_reports_missing_keys, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(meta_limits_are_enforced, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
