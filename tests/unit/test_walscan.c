/*
 * test_walscan.c - the WAL scanner against WAL files that sqlite itself
 * wrote: intact, damaged in the middle, with a damaged header, cut inside
 * the last frame, and with leftover frames of an earlier generation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "io/walscan.h"

#define TXNS 10
#define PAGE 4096

struct wal_image {
	uint8_t *buf;
	size_t len;
};

/* A WAL with 1 + TXNS commits (a table, then TXNS inserts), read while the
 * connection is still open (closing would checkpoint and delete it). */
static struct wal_image make_wal(void)
{
	char dir[] = "/tmp/chorus-walscan-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char db_path[128], wal_path[140];
	snprintf(db_path, sizeof(db_path), "%s/t.db", dir);
	snprintf(wal_path, sizeof(wal_path), "%s-wal", db_path);
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; "
	                                  "PRAGMA wal_autocheckpoint = 0; "
	                                  "CREATE TABLE t (v BLOB)",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	for (int i = 0; i < TXNS; i++)
		assert_int_equal(
		    sqlite3_exec(db, "INSERT INTO t VALUES (randomblob(3000))", NULL, NULL, NULL),
		    SQLITE_OK);
	FILE *f = fopen(wal_path, "rb");
	assert_non_null(f);
	struct wal_image w = {malloc(4u << 20), 0};
	assert_non_null(w.buf);
	w.len = fread(w.buf, 1, 4u << 20, f);
	fclose(f);
	sqlite3_close(db);
	unlink(wal_path);
	unlink(db_path);
	char shm[140];
	snprintf(shm, sizeof(shm), "%s-shm", db_path);
	unlink(shm);
	rmdir(dir);
	assert_true(w.len > 32 + 2 * (24 + PAGE));
	return w;
}

static size_t frame_off(uint32_t i)
{
	return 32 + (size_t)i * (24 + PAGE);
}

static uint32_t frame_count(const struct wal_image *w)
{
	return (uint32_t)((w->len - 32) / (24 + PAGE));
}

static void intact_wal_loses_nothing(void **state)
{
	(void)state;
	struct wal_image w = make_wal();
	struct walscan ws;
	assert_int_equal(walscan_buf(w.buf, w.len, &ws), 0);
	assert_false(ws.header_bad);
	assert_int_equal(ws.commits_valid, 1 + TXNS);
	assert_int_equal(ws.frames_valid, frame_count(&w));
	assert_int_equal(ws.commits_lost, 0);
	free(w.buf);
}

static void damage_in_the_middle_reports_the_commits_after_it(void **state)
{
	(void)state;
	struct wal_image w = make_wal();
	uint32_t n = frame_count(&w);
	uint32_t bad = n / 2;
	w.buf[frame_off(bad) + 24 + 100] ^= 0x5a; /* one byte of the page */
	struct walscan ws;
	assert_int_equal(walscan_buf(w.buf, w.len, &ws), 0);
	assert_false(ws.header_bad);
	assert_true(ws.commits_lost > 0);
	assert_int_equal(ws.commits_valid + ws.commits_lost, 1 + TXNS);
	assert_int_equal(ws.first_bad, bad);
	assert_true(ws.frames_valid <= bad);
	assert_int_equal(ws.frames_valid + ws.frames_lost, n);
	assert_false(ws.last_txn_only);
	free(w.buf);
}

static void a_damaged_last_transaction_is_told_apart(void **state)
{
	(void)state;
	struct wal_image w = make_wal();
	uint32_t n = frame_count(&w);
	w.buf[frame_off(n - 1) + 24 + 7] ^= 0x01; /* the last frame: the last commit */
	struct walscan ws;
	assert_int_equal(walscan_buf(w.buf, w.len, &ws), 0);
	assert_int_equal(ws.commits_lost, 1);
	assert_true(ws.last_txn_only);
	assert_int_equal(ws.commits_valid, TXNS);
	free(w.buf);
}

static void a_damaged_header_loses_the_whole_wal(void **state)
{
	(void)state;
	struct wal_image w = make_wal();
	w.buf[12] ^= 0x01; /* the checkpoint sequence: the header checksum fails */
	struct walscan ws;
	assert_int_equal(walscan_buf(w.buf, w.len, &ws), 0);
	assert_true(ws.header_bad);
	free(w.buf);
}

static void a_last_frame_cut_short_is_no_loss(void **state)
{
	(void)state;
	struct wal_image w = make_wal();
	uint32_t n = frame_count(&w);
	struct walscan ws;
	/* cut inside the last frame: the last transaction is gone (never
	 * fully written), nothing after it to lose */
	assert_int_equal(walscan_buf(w.buf, frame_off(n - 1) + 1000, &ws), 0);
	assert_int_equal(ws.commits_lost, 0);
	assert_int_equal(ws.commits_valid, TXNS); /* its last insert is not there */
	free(w.buf);
}

static void frames_of_an_earlier_generation_are_the_normal_end(void **state)
{
	(void)state;
	struct wal_image w = make_wal();
	uint32_t n = frame_count(&w);
	/* from frame k on, another salt: what a restarted WAL leaves behind */
	uint32_t k = n / 2;
	for (uint32_t i = k; i < n; i++)
		w.buf[frame_off(i) + 8] ^= 0xff;
	struct walscan ws;
	assert_int_equal(walscan_buf(w.buf, w.len, &ws), 0);
	assert_int_equal(ws.commits_lost, 0);
	assert_true(ws.commits_valid < 1 + TXNS);
	free(w.buf);
}

static void short_or_garbage_input_never_crashes(void **state)
{
	(void)state;
	struct walscan ws;
	uint8_t junk[100];
	memset(junk, 0xab, sizeof(junk));
	assert_int_equal(walscan_buf(junk, 10, &ws), -1);
	assert_int_equal(walscan_buf(junk, sizeof(junk), &ws), 0);
	assert_true(ws.header_bad);
	assert_int_equal(walscan_file("/nonexistent/chorus-wal", &ws), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(intact_wal_loses_nothing),
	    cmocka_unit_test(damage_in_the_middle_reports_the_commits_after_it),
	    cmocka_unit_test(a_damaged_last_transaction_is_told_apart),
	    cmocka_unit_test(a_damaged_header_loses_the_whole_wal),
	    cmocka_unit_test(a_last_frame_cut_short_is_no_loss),
	    cmocka_unit_test(frames_of_an_earlier_generation_are_the_normal_end),
	    cmocka_unit_test(short_or_garbage_input_never_crashes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
