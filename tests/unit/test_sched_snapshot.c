/*
 * test_sched_snapshot.c - snapshots of the schedule table (Raft log
 * compaction): sched_export / sched_import (core/sched.c) and
 * sched_snapshot_pack / sched_snapshot_load (codec/sched_codec.c).
 *
 * The table a snapshot loads into must be the table it was taken from:
 * every lookup answers the same, the same plan comes out of it (once the
 * original's leader state is reset, as the snapshot holds none), the same
 * commands change both the same way, and it packs to the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/sched_codec.h"
#include "core/sched.h"
#include "core/tasks.h"
#include "core/tz.h"
#include "lib/err.h"

static const uint8_t SELF[SCHED_ID_BYTES] = {1, 2, 3};
static const uint8_t OTHER[SCHED_ID_BYTES] = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};

#define T0_MS 1800000000000ull /* 2027-01-15T08:00:00Z, on the hour */
#define T0_S ((int64_t)(T0_MS / 1000))

/* ---- helpers ---- */

/* The zones a node knows: "Etc/UTC" always, "Mars/Olympus" when *ctx. */
static int resolve(void *ctx, const char *name, const struct tz **zone, char *err, size_t err_len)
{
	int knows_mars = ctx ? *(const int *)ctx : 0;
	if (strcmp(name, "Etc/UTC") == 0 || (knows_mars && strcmp(name, "Mars/Olympus") == 0)) {
		*zone = tz_utc();
		return 0;
	}
	snprintf(err, err_len, "zone \"%s\": not in tzdata", name);
	return ERR_NOT_FOUND;
}

static int KNOWS_MARS = 1;

/* A spec with a real template (a packed TaskSpec, as every applied ADD
 * holds); free with sched_spec_free. */
static void spec_make(struct sched_spec *sp, const char *name, const char *expr, const char *tz)
{
	Chorus__TaskOptions opts = CHORUS__TASK_OPTIONS__INIT;
	opts.timeout_ms = 30000;
	opts.max_attempts = 3;
	Chorus__CronSpec pb = CHORUS__CRON_SPEC__INIT;
	pb.name = (char *)name;
	pb.expr = (char *)expr;
	pb.tz = (char *)tz;
	pb.handler = "echo";
	pb.payload.data = (uint8_t *)"hello";
	pb.payload.len = 5;
	pb.opts = &opts;
	char err[256];
	assert_int_equal(sched_spec_from_pb(&pb, sp, err, sizeof(err)), 0);
}

static void apply_ok(struct sched *s, const struct sched_cmd *c)
{
	char err[256];
	int rc = sched_apply(s, c, err, sizeof(err));
	if (rc != 0)
		fail_msg("apply op %u on %s: %d %s", c->op, c->name, rc, err);
}

static void add_spec(struct sched *s, struct sched_spec *sp, uint64_t wall_ms)
{
	struct sched_cmd c = {0};
	c.op = SCHED_OP_ADD;
	c.spec = sp;
	c.wall_ms = wall_ms;
	snprintf(c.name, sizeof(c.name), "%s", sp->name);
	apply_ok(s, &c);
	sched_spec_free(sp);
}

static struct sched_cmd cmd(uint8_t op, const char *name, int64_t occ, uint64_t wall_ms)
{
	struct sched_cmd c;
	memset(&c, 0, sizeof(c));
	c.op = op;
	snprintf(c.name, sizeof(c.name), "%s", name);
	c.scheduled_s = occ;
	c.wall_ms = wall_ms;
	return c;
}

static void fire(struct sched *s, const char *name, int64_t occ, uint8_t kind, uint64_t wall_ms,
                 const uint8_t *target)
{
	struct sched_cmd c = cmd(SCHED_OP_FIRE, name, occ, wall_ms);
	c.kind = kind;
	memcpy(c.target, target, SCHED_ID_BYTES);
	apply_ok(s, &c);
}

static void dispatched(struct sched *s, const char *name, int64_t occ, uint8_t kind,
                       uint64_t task_id)
{
	struct sched_cmd c = cmd(SCHED_OP_DISPATCHED, name, occ, 0);
	c.kind = kind;
	c.task_id = task_id;
	apply_ok(s, &c);
}

static void done(struct sched *s, const char *name, int64_t occ, uint8_t kind, int outcome,
                 const char *why)
{
	struct sched_cmd c = cmd(SCHED_OP_DONE, name, occ, 0);
	c.kind = kind;
	c.outcome = outcome;
	snprintf(c.note, sizeof(c.note), "%s", why);
	apply_ok(s, &c);
}

static void pause_(struct sched *s, const char *name, const char *note)
{
	struct sched_cmd c = cmd(SCHED_OP_PAUSE, name, 0, 0);
	snprintf(c.note, sizeof(c.note), "%s", note);
	apply_ok(s, &c);
}

static void resume(struct sched *s, const char *name, uint64_t wall_ms)
{
	struct sched_cmd c = cmd(SCHED_OP_RESUME, name, 0, wall_ms);
	apply_ok(s, &c);
}

/* A table with a schedule in each state the snapshot must carry. */
static struct sched *build_table(void)
{
	struct sched *s = sched_create(resolve, NULL);
	assert_non_null(s);
	struct sched_spec sp;

	/* 100 runs: the history ring wrapped; two runs not done, one dispatched */
	spec_make(&sp, "hist", "@every 1s", "");
	sp.overlap = SCHED_OVERLAP_ALLOW_ALL;
	sp.max_runs = 1000;
	add_spec(s, &sp, T0_MS);
	for (int64_t k = 1; k <= 100; k++) {
		fire(s, "hist", T0_S + k, SCHED_FIRE_SCHEDULED, T0_MS + (uint64_t)k * 1000 + 7,
		     k % 2 ? SELF : OTHER);
		if (k <= 99)
			dispatched(s, "hist", T0_S + k, SCHED_FIRE_SCHEDULED, 5000 + (uint64_t)k);
		if (k <= 98)
			done(s, "hist", T0_S + k, SCHED_FIRE_SCHEDULED,
			     k % 7 ? TASK_SUCCEEDED : TASK_FAILED, k % 7 ? "" : "exit status 3");
	}

	/* max_runs reached, then paused with a note */
	spec_make(&sp, "paused", "@every 5s", "");
	sp.max_runs = 3;
	add_spec(s, &sp, T0_MS);
	for (int64_t k = 1; k <= 3; k++) {
		fire(s, "paused", T0_S + 5 * k, SCHED_FIRE_SCHEDULED, T0_MS + 5000 * (uint64_t)k, SELF);
		done(s, "paused", T0_S + 5 * k, SCHED_FIRE_SCHEDULED, TASK_SUCCEEDED, "");
	}
	pause_(s, "paused", "maintenance window: do not run before the upgrade");

	/* buffer_all: one run going, five occurrences waiting */
	spec_make(&sp, "buf", "@every 1s", "");
	sp.overlap = SCHED_OVERLAP_BUFFER_ALL;
	add_spec(s, &sp, T0_MS);
	fire(s, "buf", T0_S + 1, SCHED_FIRE_SCHEDULED, T0_MS + 1000, SELF);
	dispatched(s, "buf", T0_S + 1, SCHED_FIRE_SCHEDULED, 777);
	for (int64_t k = 2; k <= 6; k++) {
		struct sched_cmd c = cmd(SCHED_OP_BUFFER, "buf", T0_S + k, T0_MS + 1000 * (uint64_t)k);
		apply_ok(s, &c);
	}

	/* a backfill in progress (overlap skip: one at a time) */
	spec_make(&sp, "bf", "@hourly", "");
	add_spec(s, &sp, T0_MS);
	struct sched_cmd c = cmd(SCHED_OP_BACKFILL, "bf", 0, T0_MS);
	c.kind = SCHED_OVERLAP_SKIP;
	c.from_s = T0_S - 5 * 3600;
	c.to_s = T0_S - 1;
	apply_ok(s, &c);
	fire(s, "bf", T0_S - 5 * 3600, SCHED_FIRE_BACKFILL, T0_MS + 10, SELF);
	done(s, "bf", T0_S - 5 * 3600, SCHED_FIRE_BACKFILL, TASK_SUCCEEDED, "");
	fire(s, "bf", T0_S - 4 * 3600, SCHED_FIRE_BACKFILL, T0_MS + 20, SELF);

	/* a zone and an expression this node cannot use: kept, broken */
	spec_make(&sp, "mars", "0 3 * * *", "Mars/Olympus");
	add_spec(s, &sp, T0_MS);
	spec_make(&sp, "badexpr", "61 * * * *", "");
	add_spec(s, &sp, T0_MS);

	/* every option set; a failed trigger paused it (pause_on_failure) */
	spec_make(&sp, "utc", "*/5 * * * *", "Etc/UTC");
	sp.jitter_ms = 30000;
	sp.start_s = T0_S + 60;
	sp.end_s = T0_S + 30 * 86400;
	sp.catchup_ms = 120000;
	sp.pause_on_failure = 1;
	sp.overlap = SCHED_OVERLAP_CANCEL_OTHER;
	snprintf(sp.on, sizeof(sp.on), "tag:gpu");
	add_spec(s, &sp, T0_MS);
	fire(s, "utc", T0_S + 3, SCHED_FIRE_TRIGGER, T0_MS + 3000, OTHER);
	dispatched(s, "utc", T0_S + 3, SCHED_FIRE_TRIGGER, 99);
	done(s, "utc", T0_S + 3, SCHED_FIRE_TRIGGER, TASK_FAILED, "killed by signal 9");

	/* resumed: what came while paused is still to be skipped */
	spec_make(&sp, "resumed", "@every 2s", "");
	add_spec(s, &sp, T0_MS);
	pause_(s, "resumed", "");
	resume(s, "resumed", T0_MS + 60000);

	/* a recorded skipped range */
	spec_make(&sp, "skips", "@every 1s", "");
	add_spec(s, &sp, T0_MS);
	c = cmd(SCHED_OP_SKIP, "skips", 0, T0_MS + 51000);
	c.from_s = T0_S + 1;
	c.to_s = T0_S + 50;
	c.count = 50;
	snprintf(c.note, sizeof(c.note), "skipped: missed by more than the catch-up window (60s)");
	apply_ok(s, &c);

	spec_make(&sp, "idle", "@daily", "");
	add_spec(s, &sp, T0_MS);
	return s;
}

static void occ_same(const struct sched_occ *a, const struct sched_occ *b)
{
	assert_int_equal(a->scheduled_s, b->scheduled_s);
	assert_int_equal(a->fired_ms, b->fired_ms);
	assert_memory_equal(a->target, b->target, SCHED_ID_BYTES);
	assert_int_equal(a->task_id, b->task_id);
	assert_int_equal(a->kind, b->kind);
	assert_int_equal(a->dispatched, b->dispatched);
	assert_int_equal(a->done, b->done);
	assert_int_equal(a->outcome, b->outcome);
	assert_int_equal(a->count, b->count);
	assert_int_equal(a->to_s, b->to_s);
	assert_string_equal(a->why, b->why);
}

static void spec_same(const struct sched_spec *a, const struct sched_spec *b)
{
	assert_string_equal(a->name, b->name);
	assert_string_equal(a->expr, b->expr);
	assert_string_equal(a->tz, b->tz);
	assert_string_equal(a->on, b->on);
	assert_int_equal(a->overlap, b->overlap);
	assert_int_equal(a->pause_on_failure, b->pause_on_failure);
	assert_int_equal(a->catchup_ms, b->catchup_ms);
	assert_int_equal(a->start_s, b->start_s);
	assert_int_equal(a->end_s, b->end_s);
	assert_int_equal(a->max_runs, b->max_runs);
	assert_int_equal(a->jitter_ms, b->jitter_ms);
	assert_int_equal(a->task_len, b->task_len);
	assert_memory_equal(a->task, b->task, a->task_len);
}

/* a and b answer every lookup the same; `broken` too unless skip_broken */
static void tables_same_(const struct sched *a, const struct sched *b, int skip_broken)
{
	assert_int_equal(sched_count(a), sched_count(b));
	uint32_t ca = 0, cb = 0;
	const char *na, *nb;
	while ((na = sched_next_name(a, &ca)) != NULL) {
		nb = sched_next_name(b, &cb);
		assert_non_null(nb);
		assert_string_equal(na, nb);
		struct sched_view va, vb;
		assert_int_equal(sched_view(a, na, &va), 0);
		assert_int_equal(sched_view(b, nb, &vb), 0);
		spec_same(va.spec, vb.spec);
		assert_int_equal(va.paused, vb.paused);
		assert_string_equal(va.note, vb.note);
		if (!skip_broken) {
			assert_int_equal(va.broken, vb.broken);
			assert_string_equal(va.broken_why, vb.broken_why);
		}
		assert_int_equal(va.runs, vb.runs);
		assert_int_equal(va.last_s, vb.last_s);
		if (!skip_broken)
			assert_int_equal(va.next_s, vb.next_s);
		assert_int_equal(va.n_active, vb.n_active);
		assert_int_equal(va.n_buffer, vb.n_buffer);
		uint32_t i = 0;
		for (;; i++) {
			const struct sched_occ *ha = sched_history(a, na, i), *hb = sched_history(b, nb, i);
			if (!ha) {
				assert_null(hb);
				break;
			}
			assert_non_null(hb);
			occ_same(ha, hb);
		}
		/* what no lookup shows: the buffer, resume_s and the backfill */
		struct sched_state sa, sb;
		assert_int_equal(sched_export(a, ca - 1, &sa), 0);
		assert_int_equal(sched_export(b, cb - 1, &sb), 0);
		assert_string_equal(sa.spec->name, na);
		assert_int_equal(sa.resume_s, sb.resume_s);
		assert_int_equal(sa.n_buffer, sb.n_buffer);
		if (sa.n_buffer)
			assert_memory_equal(sa.buffer, sb.buffer, sa.n_buffer * sizeof(sa.buffer[0]));
		assert_int_equal(sa.bf_from_s, sb.bf_from_s);
		assert_int_equal(sa.bf_next_s, sb.bf_next_s);
		assert_int_equal(sa.bf_to_s, sb.bf_to_s);
		assert_int_equal(sa.bf_overlap, sb.bf_overlap);
		assert_int_equal(sa.bf_fired, sb.bf_fired);
		assert_int_equal(sa.n_hist[0] + sa.n_hist[1], i);
		assert_int_equal(sb.n_hist[0] + sb.n_hist[1], i);
	}
	assert_null(sched_next_name(b, &cb));
	uint64_t ka = 0, kb = 0;
	const struct sched_occ *oa, *ob;
	const char *an, *bn;
	const struct sched_spec *as, *bs;
	while ((oa = sched_next_active(a, &ka, &an, &as)) != NULL) {
		ob = sched_next_active(b, &kb, &bn, &bs);
		assert_non_null(ob);
		assert_string_equal(an, bn);
		occ_same(oa, ob);
	}
	assert_null(sched_next_active(b, &kb, &bn, &bs));
}

static void tables_same(const struct sched *a, const struct sched *b)
{
	tables_same_(a, b, 0);
}

static struct sched *reload(const struct sched *s, uint8_t **bytes, size_t *len, void *tz_ctx)
{
	assert_int_equal(sched_snapshot_pack(s, bytes, len), 0);
	char err[256] = "x";
	struct sched *t = sched_snapshot_load(*bytes, *len, resolve, tz_ctx, err, sizeof(err));
	if (!t)
		fail_msg("load: %s", err);
	assert_string_equal(err, "");
	return t;
}

static void packs_same(const struct sched *a, const struct sched *b)
{
	uint8_t *ba, *bb;
	size_t la, lb;
	assert_int_equal(sched_snapshot_pack(a, &ba, &la), 0);
	assert_int_equal(sched_snapshot_pack(b, &bb, &lb), 0);
	assert_int_equal(la, lb);
	assert_memory_equal(ba, bb, la);
	free(ba);
	free(bb);
}

/* ---- round trip ---- */

static void a_loaded_table_answers_as_the_original(void **state)
{
	(void)state;
	struct sched *s = build_table();
	/* the states were built as meant */
	struct sched_view v;
	assert_int_equal(sched_view(s, "hist", &v), 0);
	assert_int_equal(v.runs, 100);
	assert_int_equal(v.n_active, 2);
	assert_non_null(sched_history(s, "hist", SCHED_HISTORY_MAX - 1));
	assert_null(sched_history(s, "hist", SCHED_HISTORY_MAX));
	assert_int_equal(sched_history(s, "hist", 0)->scheduled_s, T0_S + 100);
	assert_int_equal(sched_history(s, "hist", SCHED_HISTORY_MAX - 1)->scheduled_s, T0_S + 37);
	struct sched_state st;
	assert_int_equal(sched_export(s, 3, &st), 0); /* in name order: hist is the fourth */
	assert_string_equal(st.spec->name, "hist");
	assert_true(st.n_hist[1] > 0); /* the ring wrapped: two spans */
	assert_int_equal(sched_view(s, "paused", &v), 0);
	assert_true(v.paused && v.runs == 3 && v.next_s == 0);
	assert_int_equal(sched_view(s, "buf", &v), 0);
	assert_int_equal(v.n_buffer, 5);
	assert_int_equal(sched_view(s, "mars", &v), 0);
	assert_true(v.broken);
	assert_non_null(strstr(v.broken_why, "Mars/Olympus"));
	assert_int_equal(sched_view(s, "badexpr", &v), 0);
	assert_true(v.broken);
	assert_int_equal(sched_view(s, "utc", &v), 0);
	assert_true(v.paused);
	assert_non_null(strstr(v.note, "failed"));

	uint8_t *b1, *b2;
	size_t l1, l2;
	struct sched *t = reload(s, &b1, &l1, NULL);
	tables_same(s, t);
	/* deterministic: the loaded table packs to the same bytes */
	assert_int_equal(sched_snapshot_pack(t, &b2, &l2), 0);
	assert_int_equal(l1, l2);
	assert_memory_equal(b1, b2, l1);
	/* protobuf-c reads the same message and writes the same bytes */
	Chorus__SchedSnapshot *pb = chorus__sched_snapshot__unpack(NULL, l1, b1);
	assert_non_null(pb);
	assert_int_equal(pb->version, 1);
	assert_int_equal(pb->n_schedules, sched_count(s));
	assert_non_null(pb->end);
	assert_int_equal(pb->end->count, sched_count(s));
	assert_int_equal(chorus__sched_snapshot__get_packed_size(pb), l1);
	uint8_t *b3 = malloc(l1);
	chorus__sched_snapshot__pack(pb, b3);
	assert_memory_equal(b1, b3, l1);
	free(b3);
	chorus__sched_snapshot__free_unpacked(pb, NULL);
	print_message("snapshot of %u schedules in varied states: %zu bytes\n", sched_count(s), l1);
	free(b1);
	free(b2);
	sched_destroy(t);
	sched_destroy(s);
}

static void broken_is_this_nodes_view_not_the_snapshots(void **state)
{
	(void)state;
	struct sched *s = build_table();
	uint8_t *b;
	size_t l;
	/* a node that knows the zone loads the schedule usable */
	struct sched *t = reload(s, &b, &l, &KNOWS_MARS);
	struct sched_view v;
	assert_int_equal(sched_view(t, "mars", &v), 0);
	assert_false(v.broken);
	assert_true(v.next_s > 0);
	assert_int_equal(sched_view(t, "badexpr", &v), 0);
	assert_true(v.broken); /* no node reads this expression */
	tables_same_(s, t, 1);
	packs_same(s, t);
	free(b);
	sched_destroy(t);
	sched_destroy(s);
}

/* ---- the same plan and the same future ---- */

struct plan {
	struct sched_cmd *c;
	uint32_t n, cap;
};

static int by_name(const void *x, const void *y)
{
	const struct sched_cmd *a = x, *b = y;
	int c = strcmp(a->name, b->name);
	if (c)
		return c;
	/* then planning order, kept in task_id while sorting (0 in plans) */
	return a->task_id < b->task_id ? -1 : a->task_id > b->task_id;
}

/* Every command planned at now (until the plan is empty), sorted by
 * schedule, each schedule's in planning order: the heap hands out the
 * schedules due at the same time in no particular order. */
static void plan_all(struct sched *s, uint64_t now_ms, struct plan *p)
{
	p->n = 0;
	struct sched_cmd out[SCHED_PLAN_MAX];
	for (int round = 0; round < 100; round++) {
		uint32_t n = sched_plan(s, now_ms, SELF, NULL, 0, out, SCHED_PLAN_MAX);
		if (n == 0)
			break;
		if (p->n + n > p->cap) {
			p->cap = (p->n + n) * 2;
			p->c = realloc(p->c, p->cap * sizeof(*p->c));
			assert_non_null(p->c);
		}
		memcpy(&p->c[p->n], out, n * sizeof(*out));
		p->n += n;
	}
	for (uint32_t i = 0; i < p->n; i++) {
		assert_int_equal(p->c[i].task_id, 0);
		p->c[i].task_id = i;
	}
	qsort(p->c, p->n, sizeof(*p->c), by_name);
	for (uint32_t i = 0; i < p->n; i++)
		p->c[i].task_id = 0;
}

static void plans_same(const struct plan *a, const struct plan *b)
{
	assert_int_equal(a->n, b->n);
	for (uint32_t i = 0; i < a->n; i++) {
		const struct sched_cmd *x = &a->c[i], *y = &b->c[i];
		assert_int_equal(x->op, y->op);
		assert_int_equal(x->kind, y->kind);
		assert_string_equal(x->name, y->name);
		assert_string_equal(x->note, y->note);
		assert_int_equal(x->scheduled_s, y->scheduled_s);
		assert_int_equal(x->from_s, y->from_s);
		assert_int_equal(x->to_s, y->to_s);
		assert_int_equal(x->count, y->count);
		assert_int_equal(x->wall_ms, y->wall_ms);
		assert_memory_equal(x->target, y->target, SCHED_ID_BYTES);
		assert_int_equal(x->outcome, y->outcome);
	}
}

static void apply_plan(struct sched *s, const struct plan *p)
{
	for (uint32_t i = 0; i < p->n; i++)
		apply_ok(s, &p->c[i]);
}

/* One step on both: the same plan comes out, and is committed on both. */
static uint32_t step_both(struct sched *a, struct sched *b, uint64_t now_ms)
{
	struct plan pa = {0}, pb = {0};
	assert_int_equal(sched_next_plan_ms(a), sched_next_plan_ms(b));
	plan_all(a, now_ms, &pa);
	plan_all(b, now_ms, &pb);
	plans_same(&pa, &pb);
	apply_plan(a, &pa);
	apply_plan(b, &pa);
	assert_int_equal(sched_next_plan_ms(a), sched_next_plan_ms(b));
	uint32_t n = pa.n;
	free(pa.c);
	free(pb.c);
	return n;
}

static void both(struct sched *a, struct sched *b, const struct sched_cmd *c)
{
	apply_ok(a, c);
	apply_ok(b, c);
}

static void a_loaded_table_plans_and_changes_as_the_original(void **state)
{
	(void)state;
	struct sched *s = build_table();
	uint8_t *bytes;
	size_t len;
	struct sched *t = reload(s, &bytes, &len, NULL);
	free(bytes);
	/* the snapshot holds no plan: compare with the original's new leader */
	sched_leader_reset(s);
	assert_int_equal(sched_next_plan_ms(t), 0);
	assert_int_equal(sched_next_plan_ms(s), sched_next_plan_ms(t));

	/* 2 minutes on: catch-up skips, fires, buffers, the resumed range */
	uint32_t planned = step_both(s, t, T0_MS + 120000);
	assert_true(planned > 50);
	tables_same(s, t);

	/* what the leader and clients do next, on both */
	struct sched_cmd c = cmd(SCHED_OP_DONE, "buf", T0_S + 1, 0);
	c.outcome = TASK_SUCCEEDED;
	both(s, t, &c);
	c = cmd(SCHED_OP_DONE, "bf", T0_S - 4 * 3600, 0);
	c.kind = SCHED_FIRE_BACKFILL;
	c.outcome = TASK_SUCCEEDED;
	both(s, t, &c);
	c = cmd(SCHED_OP_DISPATCHED, "hist", T0_S + 100, 0);
	c.task_id = 6100;
	both(s, t, &c);
	c = cmd(SCHED_OP_RESUME, "paused", 0, T0_MS + 121000);
	both(s, t, &c);
	c = cmd(SCHED_OP_RESUME, "utc", 0, T0_MS + 121000);
	both(s, t, &c);
	c = cmd(SCHED_OP_PAUSE, "idle", 0, 0);
	snprintf(c.note, sizeof(c.note), "not needed");
	both(s, t, &c);
	c = cmd(SCHED_OP_RM, "skips", 0, 0);
	both(s, t, &c);
	c = cmd(SCHED_OP_BACKFILL, "hist", 0, T0_MS + 121000);
	c.kind = SCHED_OVERLAP_ALLOW_ALL;
	c.from_s = T0_S - 600;
	c.to_s = T0_S - 541;
	both(s, t, &c);
	struct sched_spec sp;
	spec_make(&sp, "new", "@every 3s", "");
	c = cmd(SCHED_OP_ADD, "new", 0, T0_MS + 121000);
	c.spec = &sp;
	both(s, t, &c);
	sched_spec_free(&sp);
	tables_same(s, t);

	for (uint64_t now = T0_MS + 122000; now <= T0_MS + 180000; now += 1700) {
		step_both(s, t, now);
		/* the leader finishes the oldest run of every schedule */
		uint64_t k = 0;
		const char *name;
		const struct sched_spec *spec;
		const struct sched_occ *o = sched_next_active(s, &k, &name, &spec);
		if (o) {
			c = cmd(SCHED_OP_DONE, name, o->scheduled_s, 0);
			c.kind = o->kind;
			c.outcome = TASK_SUCCEEDED;
			both(s, t, &c);
		}
	}
	tables_same(s, t);
	packs_same(s, t);
	sched_destroy(t);
	sched_destroy(s);
}

/* ---- edges ---- */

/* `on: all`: several runs of one occurrence, one per member; the loaded
 * table tells them apart as the original does. */
static void an_all_schedules_runs_per_member_survive(void **state)
{
	(void)state;
	static const uint8_t THIRD[SCHED_ID_BYTES] = {7};
	const uint8_t members[3][SCHED_ID_BYTES] = {
	    {1, 2, 3}, {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9}, {7}};
	struct sched *s = sched_create(resolve, NULL);
	struct sched_spec sp;
	spec_make(&sp, "all", "@every 10s", "");
	snprintf(sp.on, sizeof(sp.on), "all");
	add_spec(s, &sp, T0_MS);
	struct sched_cmd c = cmd(SCHED_OP_FIRE, "all", T0_S + 10, T0_MS + 10000);
	c.targets = members;
	c.n_targets = 3;
	apply_ok(s, &c);
	struct sched_cmd d = cmd(SCHED_OP_DISPATCHED, "all", T0_S + 10, 0);
	memcpy(d.target, OTHER, SCHED_ID_BYTES);
	d.task_id = 5;
	apply_ok(s, &d);
	uint8_t *bytes;
	size_t len;
	struct sched *t = reload(s, &bytes, &len, NULL);
	free(bytes);
	tables_same(s, t);
	/* the same member's run ends in both */
	struct sched_cmd e = cmd(SCHED_OP_DONE, "all", T0_S + 10, 0);
	memcpy(e.target, THIRD, SCHED_ID_BYTES);
	e.outcome = TASK_SUCCEEDED;
	both(s, t, &e);
	tables_same(s, t);
	struct sched_view v;
	assert_int_equal(sched_view(t, "all", &v), 0);
	assert_int_equal(v.n_active, 2);
	assert_int_equal(v.runs, 1);
	uint64_t cur = 0;
	const char *name;
	const struct sched_spec *spec;
	const struct sched_occ *o = sched_next_active(t, &cur, &name, &spec);
	assert_non_null(o);
	assert_memory_equal(o->target, SELF, SCHED_ID_BYTES);
	o = sched_next_active(t, &cur, &name, &spec);
	assert_non_null(o);
	assert_memory_equal(o->target, OTHER, SCHED_ID_BYTES);
	assert_true(o->dispatched);
	assert_int_equal(o->task_id, 5);
	sched_destroy(t);
	sched_destroy(s);
}

static void an_empty_table_packs_and_loads(void **state)
{
	(void)state;
	struct sched *s = sched_create(resolve, NULL);
	uint8_t *b;
	size_t l;
	struct sched *t = reload(s, &b, &l, NULL);
	assert_int_equal(sched_count(t), 0);
	assert_int_equal(sched_next_plan_ms(t), UINT64_MAX);
	static const uint8_t EMPTY[] = {0x08, 0x01, 0x1a, 0x00}; /* version 1, end {count 0} */
	assert_int_equal(l, sizeof(EMPTY));
	assert_memory_equal(b, EMPTY, l);
	packs_same(s, t);
	free(b);
	sched_destroy(t);
	sched_destroy(s);
}

/* NULL, with a message, and nothing leaked (valgrind checks the latter) */
static void refused(const uint8_t *b, size_t l, const char *want)
{
	char err[256] = "";
	struct sched *t = sched_snapshot_load(b, l, resolve, NULL, err, sizeof(err));
	if (t)
		fail_msg("loaded %zu bytes that should be refused (%s)", l, want ? want : "");
	assert_true(err[0] != '\0');
	if (want && !strstr(err, want))
		fail_msg("error \"%s\" does not say \"%s\"", err, want);
}

static uint64_t rng_next(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void random_and_cut_bytes_are_refused(void **state)
{
	(void)state;
	uint64_t seed = 0x5eed5eed12345ull;
	uint8_t buf[512];
	for (int i = 0; i < 300; i++) {
		size_t l = (size_t)(rng_next(&seed) % sizeof(buf));
		for (size_t k = 0; k < l; k++)
			buf[k] = (uint8_t)rng_next(&seed);
		refused(buf, l, NULL);
	}
	refused(NULL, 0, "version");
	refused(NULL, 5, NULL);

	/* every cut of a snapshot is refused, at a schedule's edge too */
	struct sched *s = sched_create(resolve, NULL);
	struct sched_spec sp;
	spec_make(&sp, "a", "@every 1s", "");
	add_spec(s, &sp, T0_MS);
	spec_make(&sp, "b", "@every 1s", "");
	add_spec(s, &sp, T0_MS);
	fire(s, "b", T0_S + 1, SCHED_FIRE_SCHEDULED, T0_MS + 1000, SELF);
	spec_make(&sp, "c", "@hourly", "");
	add_spec(s, &sp, T0_MS);
	uint8_t *b;
	size_t l;
	assert_int_equal(sched_snapshot_pack(s, &b, &l), 0);
	for (size_t cut = 0; cut < l; cut++)
		refused(b, cut, NULL);
	/* the cut after whole schedules says why */
	Chorus__SchedSnapshot *pb = chorus__sched_snapshot__unpack(NULL, l, b);
	assert_non_null(pb);
	Chorus__SchedSnapshotEnd *end = pb->end;
	pb->end = NULL;
	size_t n = chorus__sched_snapshot__get_packed_size(pb);
	uint8_t *cut = malloc(n);
	chorus__sched_snapshot__pack(pb, cut);
	refused(cut, n, "cut short");
	free(cut);
	pb->end = end;
	chorus__sched_snapshot__free_unpacked(pb, NULL);

	/* flipped bits: refused, or a table that packs and loads stably */
	struct sched *big = build_table();
	uint8_t *bb;
	size_t bl;
	assert_int_equal(sched_snapshot_pack(big, &bb, &bl), 0);
	uint32_t loaded = 0;
	for (int i = 0; i < 400; i++) {
		uint8_t *m = malloc(bl);
		memcpy(m, bb, bl);
		for (int f = 0; f < 1 + i % 3; f++) {
			size_t at = (size_t)(rng_next(&seed) % bl);
			m[at] ^= (uint8_t)(1u << (rng_next(&seed) % 8));
		}
		char err[256] = "";
		struct sched *t = sched_snapshot_load(m, bl, resolve, NULL, err, sizeof(err));
		if (t) {
			loaded++;
			uint8_t *b2;
			size_t l2;
			struct sched *t2 = reload(t, &b2, &l2, NULL);
			tables_same(t, t2);
			packs_same(t, t2);
			free(b2);
			sched_destroy(t2);
			sched_destroy(t);
		} else {
			assert_true(err[0] != '\0');
		}
		free(m);
	}
	print_message("400 corrupted snapshots: %u still loaded (a value changed), the rest refused\n",
	              loaded);
	free(bb);
	sched_destroy(big);
	free(b);
	sched_destroy(s);
}

/* A snapshot written by protobuf-c from states built here. */
struct crafted {
	Chorus__SchedSnapshot snap;
	Chorus__SchedSnapshotEnd end;
	Chorus__SchedState st[3];
	Chorus__SchedState *stp[3];
	Chorus__CronSpec spec[3];
	Chorus__TaskSpec task;
	Chorus__SchedOcc occ[SCHED_ACTIVE_MAX + 1];
	Chorus__SchedOcc *occp[SCHED_ACTIVE_MAX + 1];
};

static void crafted_init(struct crafted *c, uint32_t n)
{
	memset(c, 0, sizeof(*c));
	chorus__sched_snapshot__init(&c->snap);
	chorus__sched_snapshot_end__init(&c->end);
	c->snap.version = 1;
	c->snap.end = &c->end;
	c->end.count = n;
	c->snap.n_schedules = n;
	c->snap.schedules = c->stp;
	for (uint32_t i = 0; i < n; i++) {
		chorus__sched_state__init(&c->st[i]);
		chorus__cron_spec__init(&c->spec[i]);
		c->spec[i].name = i == 0 ? "one" : i == 1 ? "two" : "three";
		c->spec[i].expr = "@every 1s";
		c->spec[i].handler = "echo";
		c->st[i].spec = &c->spec[i];
		c->stp[i] = &c->st[i];
	}
	for (uint32_t i = 0; i <= SCHED_ACTIVE_MAX; i++) {
		chorus__sched_occ__init(&c->occ[i]);
		c->occ[i].scheduled_s = T0_S + i;
		c->occ[i].fired_ms = T0_MS + i * 1000;
		c->occp[i] = &c->occ[i];
	}
}

static void crafted_refused(struct crafted *c, const char *want)
{
	size_t n = chorus__sched_snapshot__get_packed_size(&c->snap);
	uint8_t *b = malloc(n ? n : 1);
	chorus__sched_snapshot__pack(&c->snap, b);
	refused(b, n, want);
	free(b);
}

static void snapshots_over_a_limit_are_refused(void **state)
{
	(void)state;
	struct crafted c;
	/* the crafted snapshot itself loads */
	crafted_init(&c, 3);
	size_t n = chorus__sched_snapshot__get_packed_size(&c.snap);
	uint8_t *b = malloc(n);
	chorus__sched_snapshot__pack(&c.snap, b);
	char err[256];
	struct sched *t = sched_snapshot_load(b, n, resolve, NULL, err, sizeof(err));
	assert_non_null(t);
	assert_int_equal(sched_count(t), 3);
	sched_destroy(t);
	free(b);

	crafted_init(&c, 3);
	c.spec[2].name = "one";
	crafted_refused(&c, "exists");

	crafted_init(&c, 3);
	c.st[1].n_active = SCHED_ACTIVE_MAX + 1;
	c.st[1].active = c.occp;
	crafted_refused(&c, "runs not done");
	c.st[1].n_active = 0;
	c.st[1].n_history = SCHED_HISTORY_MAX + 1;
	c.st[1].history = c.occp;
	crafted_refused(&c, "history");
	c.st[1].n_history = 0;
	int64_t buffer[SCHED_BUFFER_MAX + 1] = {0};
	c.st[1].n_buffer = SCHED_BUFFER_MAX + 1;
	c.st[1].buffer = buffer;
	crafted_refused(&c, "buffered");

	char name[SCHED_NAME_BYTES_MAX + 2];
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	crafted_init(&c, 3);
	c.spec[1].name = name;
	crafted_refused(&c, "name");

	char note[SCHED_NOTE_BYTES_MAX + 2];
	memset(note, 'x', sizeof(note) - 1);
	note[sizeof(note) - 1] = '\0';
	crafted_init(&c, 3);
	c.st[0].note = note;
	crafted_refused(&c, "note");

	crafted_init(&c, 1);
	c.st[0].n_active = 1;
	c.st[0].active = c.occp;
	c.occ[0].target.data = (uint8_t *)"short";
	c.occ[0].target.len = 5;
	crafted_refused(&c, "target");

	crafted_init(&c, 1);
	c.st[0].spec = NULL;
	crafted_refused(&c, "no spec");

	crafted_init(&c, 1);
	c.spec[0].handler = "";
	crafted_refused(&c, "handler");

	crafted_init(&c, 2);
	c.snap.version = 2;
	crafted_refused(&c, "version 2");

	crafted_init(&c, 2);
	c.end.count = 3;
	crafted_refused(&c, "its end says 3");
}

static void import_checks_every_field_and_leaves_the_table_unchanged(void **state)
{
	(void)state;
	struct sched *s = sched_create(resolve, NULL);
	struct sched_spec sp;
	spec_make(&sp, "x", "@every 1s", "");
	struct sched_occ occ[SCHED_HISTORY_MAX + 1];
	memset(occ, 0, sizeof(occ));
	int64_t buffer[1] = {T0_S};
	char err[256];
	struct sched_state st;
	char note[SCHED_NOTE_BYTES_MAX + 2];
	memset(note, 'x', sizeof(note) - 1);
	note[sizeof(note) - 1] = '\0';

	memset(&st, 0, sizeof(st));
	st.spec = &sp;
	st.note = note;
	assert_int_equal(sched_import(s, &st, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "note"));
	st.note = "";
	st.n_active = SCHED_ACTIVE_MAX + 1;
	st.active = occ;
	assert_int_equal(sched_import(s, &st, err, sizeof(err)), ERR_INVALID);
	st.n_active = 0;
	st.hist[0] = occ;
	st.hist[1] = occ;
	st.n_hist[0] = 40;
	st.n_hist[1] = 40;
	assert_int_equal(sched_import(s, &st, err, sizeof(err)), ERR_INVALID);
	st.n_hist[0] = UINT32_MAX;
	assert_int_equal(sched_import(s, &st, err, sizeof(err)), ERR_INVALID);
	st.n_hist[0] = st.n_hist[1] = 0;
	st.n_buffer = 1;
	st.buffer = NULL;
	assert_int_equal(sched_import(s, &st, err, sizeof(err)), ERR_INVALID);
	st.buffer = buffer;
	memset(occ[0].why, 'w', sizeof(occ[0].why)); /* not terminated */
	st.hist[0] = occ;
	st.n_hist[0] = 1;
	assert_int_equal(sched_import(s, &st, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "reason"));
	occ[0].why[0] = '\0';
	memset(sp.name, 'n', sizeof(sp.name)); /* not terminated */
	assert_int_equal(sched_import(s, &st, err, sizeof(err)), ERR_INVALID);
	snprintf(sp.name, sizeof(sp.name), "x");
	uint32_t task_len = sp.task_len;
	sp.task_len = SCHED_TASK_BYTES_MAX + 1;
	assert_int_equal(sched_import(s, &st, err, sizeof(err)), ERR_INVALID);
	sp.task_len = task_len;
	assert_int_equal(sched_count(s), 0);
	assert_int_equal(sched_next_plan_ms(s), UINT64_MAX);

	/* now it goes in, due for planning at once; a second time it does not */
	assert_int_equal(sched_import(s, &st, err, sizeof(err)), 0);
	assert_int_equal(sched_count(s), 1);
	assert_int_equal(sched_next_plan_ms(s), 0);
	assert_int_equal(sched_import(s, &st, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "exists"));
	assert_int_equal(sched_count(s), 1);
	sched_spec_free(&sp);
	sched_destroy(s);
}

static void import_takes_the_history_in_any_split(void **state)
{
	(void)state;
	struct sched *a = build_table();
	struct sched *b = sched_create(resolve, NULL);
	struct sched_occ flat[SCHED_HISTORY_MAX];
	char err[256];
	uint32_t n = sched_count(a);
	for (uint32_t i = 0; i < n; i++) {
		struct sched_state st;
		assert_int_equal(sched_export(a, i, &st), 0);
		/* flatten, then split the other way round */
		uint32_t h = 0;
		for (int span = 0; span < 2; span++)
			for (uint32_t k = 0; k < st.n_hist[span]; k++)
				flat[h++] = st.hist[span][k];
		uint32_t first = h / 3;
		st.hist[0] = flat;
		st.n_hist[0] = first;
		st.hist[1] = flat + first;
		st.n_hist[1] = h - first;
		assert_int_equal(sched_import(b, &st, err, sizeof(err)), 0);
	}
	assert_int_equal(sched_export(a, n, &(struct sched_state){0}), ERR_NOT_FOUND);
	tables_same(a, b);
	packs_same(a, b);
	sched_destroy(b);
	sched_destroy(a);
}

/* ---- size ---- */

static void ten_thousand_schedules_pack_and_load(void **state)
{
	(void)state;
	enum { N = 10000 };
	struct sched *s = sched_create(resolve, NULL);
	for (uint32_t i = 0; i < N; i++) {
		char name[32], expr[32];
		snprintf(name, sizeof(name), "job-%05u", i);
		snprintf(expr, sizeof(expr), "@every %us", 60 + i % 600);
		struct sched_spec sp;
		spec_make(&sp, name, expr, "");
		add_spec(s, &sp, T0_MS);
	}
	uint8_t *b;
	size_t l;
	struct sched *t = reload(s, &b, &l, NULL);
	assert_int_equal(sched_count(t), N);
	tables_same(s, t);
	packs_same(s, t);
	print_message("%u idle schedules: %zu bytes, %.1f bytes per schedule\n", N, l,
	              (double)l / N);
	free(b);
	sched_destroy(t);

	/* schedules that have run: a full history, one run not done */
	enum { M = 100 };
	struct sched *f = sched_create(resolve, NULL);
	for (uint32_t i = 0; i < M; i++) {
		char name[32];
		snprintf(name, sizeof(name), "job-%05u", i);
		struct sched_spec sp;
		spec_make(&sp, name, "@every 60s", "");
		add_spec(f, &sp, T0_MS);
		for (int64_t k = 1; k <= SCHED_HISTORY_MAX + 1; k++) {
			int64_t occ = T0_S + 60 * k;
			fire(f, name, occ, SCHED_FIRE_SCHEDULED, (uint64_t)occ * 1000 + 3, SELF);
			dispatched(f, name, occ, SCHED_FIRE_SCHEDULED, 1000000 + (uint64_t)k);
			if (k <= SCHED_HISTORY_MAX)
				done(f, name, occ, SCHED_FIRE_SCHEDULED, TASK_SUCCEEDED, "");
		}
	}
	t = reload(f, &b, &l, NULL);
	tables_same(f, t);
	print_message("%u schedules with a full history (%d decisions): %.1f bytes per schedule\n", M,
	              SCHED_HISTORY_MAX, (double)l / M);
	free(b);
	sched_destroy(t);
	sched_destroy(f);
	sched_destroy(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(a_loaded_table_answers_as_the_original),
	    cmocka_unit_test(an_all_schedules_runs_per_member_survive),
	    cmocka_unit_test(broken_is_this_nodes_view_not_the_snapshots),
	    cmocka_unit_test(a_loaded_table_plans_and_changes_as_the_original),
	    cmocka_unit_test(an_empty_table_packs_and_loads),
	    cmocka_unit_test(random_and_cut_bytes_are_refused),
	    cmocka_unit_test(snapshots_over_a_limit_are_refused),
	    cmocka_unit_test(import_checks_every_field_and_leaves_the_table_unchanged),
	    cmocka_unit_test(import_takes_the_history_in_any_split),
	    cmocka_unit_test(ten_thousand_schedules_pack_and_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
