/*
 * test_sched.c - the schedules' state machine: what the leader plans, and
 * what applying it does, one policy at a time. "Commit" here is applying
 * the planned commands at once, as a healthy Raft would.
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
#include "lib/err.h"

static const uint8_t SELF[SCHED_ID_BYTES] = {1};
static uint8_t TASK[] = {0x0a, 0x04, 'e', 'c', 'h', 'o'};

#define T0_MS 1800000000000ull /* 2027-01-15T08:00:00Z */

struct run {
	uint32_t fires, skips, buffers, skipped_count;
	int64_t fired[1024];
};

static void spec_init(struct sched_spec *sp, const char *name, const char *expr)
{
	memset(sp, 0, sizeof(*sp));
	snprintf(sp->name, sizeof(sp->name), "%s", name);
	snprintf(sp->expr, sizeof(sp->expr), "%s", expr);
	sp->task = TASK;
	sp->task_len = sizeof(TASK);
}

static void add(struct sched *s, struct sched_spec *sp, uint64_t now_ms)
{
	char err[256];
	assert_int_equal(sched_check_add(s, sp, err, sizeof(err)), 0);
	struct sched_cmd c = {0};
	c.op = SCHED_OP_ADD;
	c.spec = sp;
	c.wall_ms = now_ms;
	assert_int_equal(sched_apply(s, &c, err, sizeof(err)), 0);
}

/* Plans at now and commits everything planned. */
static void lead(struct sched *s, uint64_t now_ms, struct run *r)
{
	struct sched_cmd out[SCHED_PLAN_MAX];
	for (int round = 0; round < 100; round++) {
		uint32_t n = sched_plan(s, now_ms, SELF, NULL, 0, out, SCHED_PLAN_MAX);
		if (n == 0)
			return;
		for (uint32_t i = 0; i < n; i++) {
			char err[256];
			assert_int_equal(sched_apply(s, &out[i], err, sizeof(err)), 0);
			if (out[i].op == SCHED_OP_FIRE) {
				if (r->fires < 1024)
					r->fired[r->fires] = out[i].scheduled_s;
				r->fires++;
			} else if (out[i].op == SCHED_OP_SKIP) {
				r->skips++;
				r->skipped_count += out[i].count;
			} else if (out[i].op == SCHED_OP_BUFFER) {
				r->buffers++;
			}
		}
	}
	fail_msg("the plan never settled");
}

static void done(struct sched *s, const char *name, int64_t occ, int outcome)
{
	struct sched_cmd c = {0};
	c.op = SCHED_OP_DONE;
	snprintf(c.name, sizeof(c.name), "%s", name);
	c.scheduled_s = occ;
	c.outcome = outcome;
	char err[128];
	assert_int_equal(sched_apply(s, &c, err, sizeof(err)), 0);
}

static void every_occurrence_fires_once(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "tick", "@every 1s");
	sp.overlap = SCHED_OVERLAP_ALLOW_ALL;
	add(s, &sp, T0_MS);
	struct run r = {0};
	for (uint64_t t = T0_MS; t <= T0_MS + 10000; t += 250)
		lead(s, t, &r);
	assert_int_equal(r.fires, 10);
	for (uint32_t i = 0; i < 10; i++)
		assert_int_equal(r.fired[i], (int64_t)(T0_MS / 1000) + 1 + i);
	/* planned again at the same time: nothing new */
	lead(s, T0_MS + 10000, &r);
	assert_int_equal(r.fires, 10);
	sched_destroy(s);
}

static void a_new_leader_neither_repeats_nor_drops(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "tick", "@every 1s");
	sp.overlap = SCHED_OVERLAP_ALLOW_ALL;
	add(s, &sp, T0_MS);
	struct sched_cmd out[SCHED_PLAN_MAX];
	/* the old leader planned 3 occurrences; only the first committed */
	uint32_t n = sched_plan(s, T0_MS + 3000, SELF, NULL, 0, out, SCHED_PLAN_MAX);
	assert_int_equal(n, 3);
	char err[128];
	assert_int_equal(sched_apply(s, &out[0], err, sizeof(err)), 0);
	/* planned, not applied: not planned again */
	assert_int_equal(sched_plan(s, T0_MS + 3000, SELF, NULL, 0, out, SCHED_PLAN_MAX), 0);
	/* a new leader re-plans from what is applied: occurrences 2 and 3 */
	sched_leader_reset(s);
	n = sched_plan(s, T0_MS + 3000, SELF, NULL, 0, out, SCHED_PLAN_MAX);
	assert_int_equal(n, 2);
	assert_int_equal(out[0].scheduled_s, (int64_t)(T0_MS / 1000) + 2);
	assert_int_equal(out[1].scheduled_s, (int64_t)(T0_MS / 1000) + 3);
	sched_destroy(s);
}

static void missed_occurrences_outside_the_window_are_one_skipped_range(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "ten", "@every 10s");
	sp.overlap = SCHED_OVERLAP_ALLOW_ALL;
	sp.catchup_ms = 60000;
	add(s, &sp, T0_MS);
	struct run r = {0};
	/* nobody could lead for an hour */
	lead(s, T0_MS + 3600 * 1000, &r);
	assert_int_equal(r.skips, 1);
	assert_int_equal(r.fires + r.skipped_count, 360);
	assert_true(r.fires >= 6 && r.fires <= 7); /* the last minute's, in order */
	for (uint32_t i = 1; i < r.fires; i++)
		assert_int_equal(r.fired[i] - r.fired[i - 1], 10);
	const struct sched_occ *h = sched_history(s, "ten", r.fires); /* newest first */
	assert_non_null(h);
	assert_int_equal(h->outcome, -1);
	assert_non_null(strstr(h->why, "catch-up"));
	sched_destroy(s);
}

static void overlap_skip_waits_for_the_run(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "job", "@every 1s");
	add(s, &sp, T0_MS);
	struct run r = {0};
	lead(s, T0_MS + 1000, &r);
	assert_int_equal(r.fires, 1);
	lead(s, T0_MS + 3000, &r); /* two more come while it runs */
	assert_int_equal(r.fires, 1);
	assert_int_equal(r.skips, 2);
	done(s, "job", r.fired[0], TASK_SUCCEEDED);
	lead(s, T0_MS + 4000, &r);
	assert_int_equal(r.fires, 2);
	sched_destroy(s);
}

static void buffer_one_keeps_one_waiting(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "job", "@every 1s");
	sp.overlap = SCHED_OVERLAP_BUFFER_ONE;
	add(s, &sp, T0_MS);
	struct run r = {0};
	lead(s, T0_MS + 1000, &r);
	lead(s, T0_MS + 3000, &r);
	assert_int_equal(r.fires, 1);
	assert_int_equal(r.buffers, 1);
	assert_int_equal(r.skips, 1);
	done(s, "job", r.fired[0], TASK_SUCCEEDED);
	lead(s, T0_MS + 3100, &r);
	assert_int_equal(r.fires, 2);
	assert_int_equal(r.fired[1], (int64_t)(T0_MS / 1000) + 2); /* the buffered one */
	sched_destroy(s);
}

static void pause_resume_skips_what_came_meanwhile(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "job", "@every 1s");
	sp.overlap = SCHED_OVERLAP_ALLOW_ALL;
	add(s, &sp, T0_MS);
	char err[128];
	struct sched_cmd c = {0};
	c.op = SCHED_OP_PAUSE;
	snprintf(c.name, sizeof(c.name), "job");
	snprintf(c.note, sizeof(c.note), "maintenance");
	assert_int_equal(sched_apply(s, &c, err, sizeof(err)), 0);
	struct run r = {0};
	lead(s, T0_MS + 30000, &r);
	assert_int_equal(r.fires, 0);
	struct sched_view v;
	assert_int_equal(sched_view(s, "job", &v), 0);
	assert_true(v.paused);
	assert_string_equal(v.note, "maintenance");
	c.op = SCHED_OP_RESUME;
	c.wall_ms = T0_MS + 30000;
	assert_int_equal(sched_apply(s, &c, err, sizeof(err)), 0);
	lead(s, T0_MS + 32000, &r);
	assert_int_equal(r.skips, 1);
	assert_int_equal(r.skipped_count, 30);
	assert_int_equal(r.fires, 2);
	sched_destroy(s);
}

static void limits_end_and_max_runs(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "few", "@every 1s");
	sp.overlap = SCHED_OVERLAP_ALLOW_ALL;
	sp.max_runs = 3;
	add(s, &sp, T0_MS);
	spec_init(&sp, "until", "@every 1s");
	sp.overlap = SCHED_OVERLAP_ALLOW_ALL;
	sp.end_s = (int64_t)(T0_MS / 1000) + 5;
	add(s, &sp, T0_MS);
	struct run r = {0};
	for (uint64_t t = T0_MS; t <= T0_MS + 20000; t += 500)
		lead(s, t, &r);
	assert_int_equal(r.fires, 3 + 5);
	sched_destroy(s);
}

static void jitter_is_fixed_per_occurrence_and_bounded(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "j", "@every 10s");
	sp.jitter_ms = 5000;
	sp.overlap = SCHED_OVERLAP_ALLOW_ALL;
	add(s, &sp, T0_MS);
	struct sched_cmd out[4];
	/* due at +10 s plus its jitter (< 5 s): not before +10 s */
	assert_int_equal(sched_plan(s, T0_MS + 9999, SELF, NULL, 0, out, 4), 0);
	uint64_t due = sched_next_plan_ms(s);
	assert_true(due >= T0_MS + 10000 && due < T0_MS + 15000);
	assert_int_equal(sched_plan(s, due - 1, SELF, NULL, 0, out, 4), 0);
	assert_int_equal(sched_plan(s, due, SELF, NULL, 0, out, 4), 1);
	sched_destroy(s);
}

static void triggers_do_not_move_the_watermark(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "daily", "0 3 * * *");
	add(s, &sp, T0_MS);
	struct sched_cmd c = {0};
	c.op = SCHED_OP_FIRE;
	c.kind = SCHED_FIRE_TRIGGER;
	snprintf(c.name, sizeof(c.name), "daily");
	c.scheduled_s = (int64_t)(T0_MS / 1000);
	c.wall_ms = T0_MS;
	char err[128];
	assert_int_equal(sched_apply(s, &c, err, sizeof(err)), 0);
	struct sched_view v;
	assert_int_equal(sched_view(s, "daily", &v), 0);
	assert_int_equal(v.runs, 1);
	assert_int_equal(v.n_active, 1);
	assert_int_equal(v.last_s, (int64_t)(T0_MS / 1000));
	assert_true(v.next_s > v.last_s);
	char key[128];
	sched_occurrence_key("daily", c.scheduled_s, SCHED_FIRE_TRIGGER, key, sizeof(key));
	assert_non_null(strstr(key, ":trigger"));
	sched_destroy(s);
}

static void bad_specs_are_refused_with_the_reason(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	char err[256];
	spec_init(&sp, "x", "61 * * * *");
	assert_int_equal(sched_check_add(s, &sp, err, sizeof(err)), ERR_INVALID);
	assert_string_equal(err, "minute: 61 is out of range 0-59");
	spec_init(&sp, "x", "0 0 30 2 *");
	assert_int_equal(sched_check_add(s, &sp, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "never fires"));
	spec_init(&sp, "bad name!", "@hourly");
	assert_int_equal(sched_check_add(s, &sp, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "name"));
	spec_init(&sp, "x", "@every 10s");
	sp.jitter_ms = 10000;
	assert_int_equal(sched_check_add(s, &sp, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "jitter"));
	spec_init(&sp, "x", "@hourly");
	sp.catchup_ms = 8ull * 24 * 3600 * 1000;
	assert_int_equal(sched_check_add(s, &sp, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "catch-up"));
	spec_init(&sp, "x", "@hourly");
	add(s, &sp, T0_MS);
	assert_int_equal(sched_check_add(s, &sp, err, sizeof(err)), ERR_INVALID);
	assert_non_null(strstr(err, "exists"));
	/* applying a duplicate (two leaders' proposals racing) is ignored */
	struct sched_cmd c = {0};
	c.op = SCHED_OP_ADD;
	c.spec = &sp;
	assert_int_equal(sched_apply(s, &c, err, sizeof(err)), ERR_INVALID);
	assert_int_equal(sched_count(s), 1);
	/* commands for unknown schedules */
	c.op = SCHED_OP_FIRE;
	snprintf(c.name, sizeof(c.name), "nope");
	assert_int_equal(sched_apply(s, &c, err, sizeof(err)), ERR_NOT_FOUND);
	sched_destroy(s);
}

/* The templates of all schedules together are bounded (the snapshot
 * must stay under its limit); removing schedules makes room again. */
static void templates_are_bounded_in_total(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	static uint8_t big[SCHED_TASK_BYTES_MAX];
	char err[256], name[32];
	uint32_t fit = SCHED_TASK_BYTES_TOTAL_MAX / SCHED_TASK_BYTES_MAX;
	struct sched_spec sp;
	for (uint32_t i = 0; i < fit; i++) {
		snprintf(name, sizeof(name), "big%u", i);
		spec_init(&sp, name, "@hourly");
		sp.task = big;
		sp.task_len = sizeof(big);
		assert_int_equal(sched_check_add(s, &sp, err, sizeof(err)), 0);
		add(s, &sp, T0_MS);
	}
	spec_init(&sp, "one-more", "@hourly");
	sp.task = big;
	sp.task_len = sizeof(big);
	assert_int_equal(sched_check_add(s, &sp, err, sizeof(err)), ERR_FULL);
	assert_non_null(strstr(err, "task templates"));
	struct sched_cmd c = {0};
	c.op = SCHED_OP_RM;
	snprintf(c.name, sizeof(c.name), "big0");
	assert_int_equal(sched_apply(s, &c, err, sizeof(err)), 0);
	assert_int_equal(sched_check_add(s, &sp, err, sizeof(err)), 0);
	sched_destroy(s);
}

static void pause_on_failure_pauses(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "fragile", "@every 1s");
	sp.pause_on_failure = 1;
	add(s, &sp, T0_MS);
	struct run r = {0};
	lead(s, T0_MS + 1000, &r);
	done(s, "fragile", r.fired[0], TASK_FAILED);
	struct sched_view v;
	assert_int_equal(sched_view(s, "fragile", &v), 0);
	assert_true(v.paused);
	assert_non_null(strstr(v.note, "failed"));
	lead(s, T0_MS + 5000, &r);
	assert_int_equal(r.fires, 1);
	sched_destroy(s);
}

static void backfill_fires_a_past_range(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "hourly", "@hourly");
	add(s, &sp, T0_MS);
	struct sched_cmd c = {0};
	c.op = SCHED_OP_BACKFILL;
	c.kind = SCHED_OVERLAP_ALLOW_ALL;
	snprintf(c.name, sizeof(c.name), "hourly");
	c.from_s = (int64_t)(T0_MS / 1000) - 5 * 3600;
	c.to_s = (int64_t)(T0_MS / 1000) - 1;
	char err[128];
	assert_int_equal(sched_apply(s, &c, err, sizeof(err)), 0);
	struct run r = {0};
	lead(s, T0_MS + 1000, &r);
	assert_int_equal(r.fires, 5);
	sched_destroy(s);
}

/* ---- on: all ---- */

static const uint8_t MEMBERS[][SCHED_ID_BYTES] = {{2}, {1}, {3}, {2}}; /* self among them, twice B */

static void apply_ok(struct sched *s, const struct sched_cmd *c)
{
	char err[128];
	assert_int_equal(sched_apply(s, c, err, sizeof(err)), 0);
}

/* DISPATCHED or DONE of one member's run (target NULL: all zero, as
 * written by older versions). */
static void run_cmd(struct sched *s, uint8_t op, const char *name, int64_t occ,
                    const uint8_t *target, uint64_t task_id, int outcome)
{
	struct sched_cmd c = {0};
	c.op = op;
	snprintf(c.name, sizeof(c.name), "%s", name);
	c.scheduled_s = occ;
	c.kind = SCHED_FIRE_SCHEDULED;
	if (target)
		memcpy(c.target, target, SCHED_ID_BYTES);
	c.task_id = task_id;
	c.outcome = outcome;
	apply_ok(s, &c);
}

static const struct sched_occ *run_of(struct sched *s, const char *name, int64_t occ,
                                      const uint8_t *target)
{
	for (uint32_t i = 0; i < SCHED_HISTORY_MAX; i++) {
		const struct sched_occ *h = sched_history(s, name, i);
		if (!h)
			break;
		if (h->fired_ms && h->scheduled_s == occ && memcmp(h->target, target, SCHED_ID_BYTES) == 0)
			return h;
	}
	return NULL;
}

static void on_all_one_fire_runs_on_every_member(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "everywhere", "@every 1s");
	snprintf(sp.on, sizeof(sp.on), "all");
	add(s, &sp, T0_MS);
	spec_init(&sp, "somewhere", "@every 1s");
	add(s, &sp, T0_MS);
	struct sched_cmd out[SCHED_PLAN_MAX];
	uint32_t n = sched_plan(s, T0_MS + 1000, SELF, MEMBERS, 4, out, SCHED_PLAN_MAX);
	assert_int_equal(n, 2);
	const int64_t occ = (int64_t)(T0_MS / 1000) + 1;
	struct sched_cmd *all = strcmp(out[0].name, "everywhere") == 0 ? &out[0] : &out[1];
	struct sched_cmd *one = all == &out[0] ? &out[1] : &out[0];
	/* one FIRE, the leader first, each member once */
	assert_int_equal(all->op, SCHED_OP_FIRE);
	assert_int_equal(all->n_targets, 3);
	assert_memory_equal(all->targets[0], SELF, SCHED_ID_BYTES);
	assert_memory_equal(all->targets[1], MEMBERS[0], SCHED_ID_BYTES);
	assert_memory_equal(all->targets[2], MEMBERS[2], SCHED_ID_BYTES);
	assert_int_equal(one->n_targets, 0);
	assert_memory_equal(one->target, SELF, SCHED_ID_BYTES);
	/* the codec carries it (what Raft replicates) */
	uint8_t *bytes = NULL;
	size_t len = 0;
	assert_int_equal(sched_cmd_encode(all, &bytes, &len), 0);
	struct sched_cmd fire;
	struct sched_cmd_store store;
	assert_int_equal(sched_cmd_decode(bytes, len, &fire, &store), 0);
	free(bytes);
	assert_int_equal(fire.n_targets, 3);
	apply_ok(s, &fire);
	apply_ok(s, one);
	struct sched_view v;
	assert_int_equal(sched_view(s, "everywhere", &v), 0);
	assert_int_equal(v.n_active, 3);
	assert_int_equal(v.runs, 1); /* occurrences, not members */
	for (uint32_t i = 0; i < 3; i++) {
		const struct sched_occ *h = run_of(s, "everywhere", occ, fire.targets[i]);
		assert_non_null(h);
		assert_false(h->dispatched);
	}
	assert_non_null(sched_history(s, "everywhere", 2));
	assert_null(sched_history(s, "everywhere", 3));
	/* the active runs, one per member */
	uint64_t cur = 0;
	const char *name;
	const struct sched_spec *spec;
	uint32_t seen = 0;
	for (const struct sched_occ *o; (o = sched_next_active(s, &cur, &name, &spec));)
		if (strcmp(name, "everywhere") == 0) {
			assert_memory_equal(o->target, fire.targets[seen], SCHED_ID_BYTES);
			seen++;
		}
	assert_int_equal(seen, 3);
	/* a repeated FIRE of the occurrence (a re-proposal) is ignored */
	apply_ok(s, &fire);
	assert_int_equal(sched_view(s, "everywhere", &v), 0);
	assert_int_equal(v.n_active, 3);
	assert_int_equal(v.runs, 1);
	assert_null(sched_history(s, "everywhere", 3));
	/* DISPATCHED and DONE of one member touch that member's run only */
	const uint8_t *b = fire.targets[1], *c3 = fire.targets[2];
	run_cmd(s, SCHED_OP_DISPATCHED, "everywhere", occ, b, 42, 0);
	assert_true(run_of(s, "everywhere", occ, b)->dispatched);
	assert_int_equal(run_of(s, "everywhere", occ, b)->task_id, 42);
	assert_false(run_of(s, "everywhere", occ, SELF)->dispatched);
	assert_false(run_of(s, "everywhere", occ, c3)->dispatched);
	run_cmd(s, SCHED_OP_DONE, "everywhere", occ, b, 42, TASK_SUCCEEDED);
	assert_int_equal(sched_view(s, "everywhere", &v), 0);
	assert_int_equal(v.n_active, 2);
	assert_true(run_of(s, "everywhere", occ, b)->done);
	assert_int_equal(run_of(s, "everywhere", occ, b)->outcome, TASK_SUCCEEDED);
	assert_false(run_of(s, "everywhere", occ, SELF)->done);
	assert_false(run_of(s, "everywhere", occ, c3)->done);
	/* overlap skip: one member's run not done holds the next occurrence */
	run_cmd(s, SCHED_OP_DONE, "everywhere", occ, c3, 0, TASK_FAILED);
	struct run r = {0};
	lead(s, T0_MS + 2000, &r);
	const struct sched_occ *last = sched_history(s, "everywhere", 0);
	assert_int_equal(last->outcome, -1);
	assert_int_equal(last->scheduled_s, occ + 1);
	assert_non_null(strstr(last->why, "overlap"));
	/* a DONE of an older version (no target) ends the occurrence's run */
	run_cmd(s, SCHED_OP_DONE, "everywhere", occ, NULL, 0, TASK_SUCCEEDED);
	assert_int_equal(sched_view(s, "everywhere", &v), 0);
	assert_int_equal(v.n_active, 0);
	assert_true(run_of(s, "everywhere", occ, SELF)->done);
	n = sched_plan(s, T0_MS + 3000, SELF, MEMBERS, 4, out, SCHED_PLAN_MAX);
	uint32_t fires = 0;
	for (uint32_t i = 0; i < n; i++)
		if (strcmp(out[i].name, "everywhere") == 0 && out[i].op == SCHED_OP_FIRE) {
			assert_int_equal(out[i].scheduled_s, occ + 2);
			assert_int_equal(out[i].n_targets, 3);
			fires++;
		}
	assert_int_equal(fires, 1);
	sched_cmd_store_free(&store);
	sched_destroy(s);
}

static void on_all_runs_that_do_not_fit_are_skipped_and_recorded(void **state)
{
	(void)state;
	struct sched *s = sched_create(NULL, NULL);
	struct sched_spec sp;
	spec_init(&sp, "wide", "@every 1s");
	snprintf(sp.on, sizeof(sp.on), "all");
	sp.overlap = SCHED_OVERLAP_ALLOW_ALL;
	add(s, &sp, T0_MS);
	/* 70 members: the leader and 63 others run (one schedule's slots) */
	uint8_t members[70][SCHED_ID_BYTES];
	memset(members, 0, sizeof(members));
	for (uint32_t i = 0; i < 70; i++) {
		members[i][0] = 0xee;
		members[i][1] = (uint8_t)i;
	}
	struct sched_cmd out[SCHED_PLAN_MAX];
	assert_int_equal(sched_plan(s, T0_MS + 1000, SELF, members, 70, out, SCHED_PLAN_MAX), 1);
	assert_int_equal(out[0].n_targets, SCHED_ACTIVE_MAX);
	/* the leader itself is not among the 70: one slot left for 2 members */
	assert_int_equal(sched_plan(s, T0_MS + 1000, SELF, members, 70, out, SCHED_PLAN_MAX), 0);
	sched_leader_reset(s);
	assert_int_equal(sched_plan(s, T0_MS + 1000, SELF, members, 62, out, SCHED_PLAN_MAX), 1);
	assert_int_equal(out[0].n_targets, 63);
	apply_ok(s, &out[0]);
	struct sched_view v;
	assert_int_equal(sched_view(s, "wide", &v), 0);
	assert_int_equal(v.n_active, 63);
	/* a trigger for 3 members: 63 + 3 do not fit; decided, skipped */
	struct sched_cmd c = {0};
	c.op = SCHED_OP_FIRE;
	c.kind = SCHED_FIRE_TRIGGER;
	snprintf(c.name, sizeof(c.name), "wide");
	c.scheduled_s = (int64_t)(T0_MS / 1000) + 1;
	c.wall_ms = T0_MS + 1200;
	c.targets = MEMBERS;
	c.n_targets = 3;
	apply_ok(s, &c);
	assert_int_equal(sched_view(s, "wide", &v), 0);
	assert_int_equal(v.n_active, 63);
	assert_int_equal(v.runs, 1);
	const struct sched_occ *h = sched_history(s, "wide", 0);
	assert_int_equal(h->outcome, -1);
	assert_int_equal(h->fired_ms, 0);
	assert_non_null(strstr(h->why, "do not fit"));
	/* allow_all plans with the width of the members: the next occurrence's
	 * 63 runs do not fit beside 63, it is skipped */
	assert_int_equal(sched_plan(s, T0_MS + 2000, SELF, members, 62, out, SCHED_PLAN_MAX), 1);
	assert_int_equal(out[0].op, SCHED_OP_SKIP);
	sched_destroy(s);
}

static void codec_refuses_bad_targets(void **state)
{
	(void)state;
	struct sched_cmd c = {0};
	c.op = SCHED_OP_FIRE;
	snprintf(c.name, sizeof(c.name), "x");
	uint8_t many[SCHED_ACTIVE_MAX + 1][SCHED_ID_BYTES];
	memset(many, 7, sizeof(many));
	c.targets = many;
	c.n_targets = SCHED_ACTIVE_MAX + 1;
	uint8_t *bytes = NULL;
	size_t len = 0;
	assert_int_equal(sched_cmd_encode(&c, &bytes, &len), ERR_PROTOCOL);
	/* on the wire: a target of 15 bytes, and one too many */
	Chorus__SchedCmd pb = CHORUS__SCHED_CMD__INIT;
	ProtobufCBinaryData t[SCHED_ACTIVE_MAX + 1];
	for (uint32_t i = 0; i <= SCHED_ACTIVE_MAX; i++) {
		t[i].data = many[i];
		t[i].len = SCHED_ID_BYTES;
	}
	pb.op = SCHED_OP_FIRE;
	pb.name = "x";
	pb.targets = t;
	uint8_t buf[4096];
	struct sched_cmd d;
	struct sched_cmd_store store;
	pb.n_targets = SCHED_ACTIVE_MAX;
	assert_true(chorus__sched_cmd__get_packed_size(&pb) <= sizeof(buf));
	len = chorus__sched_cmd__pack(&pb, buf);
	assert_int_equal(sched_cmd_decode(buf, len, &d, &store), 0);
	assert_int_equal(d.n_targets, SCHED_ACTIVE_MAX);
	assert_memory_equal(d.targets[SCHED_ACTIVE_MAX - 1], many[0], SCHED_ID_BYTES);
	sched_cmd_store_free(&store);
	pb.n_targets = SCHED_ACTIVE_MAX + 1;
	len = chorus__sched_cmd__pack(&pb, buf);
	assert_int_equal(sched_cmd_decode(buf, len, &d, &store), ERR_PROTOCOL);
	sched_cmd_store_free(&store);
	pb.n_targets = 2;
	t[1].len = SCHED_ID_BYTES - 1;
	len = chorus__sched_cmd__pack(&pb, buf);
	assert_int_equal(sched_cmd_decode(buf, len, &d, &store), ERR_PROTOCOL);
	sched_cmd_store_free(&store);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(every_occurrence_fires_once),
	    cmocka_unit_test(a_new_leader_neither_repeats_nor_drops),
	    cmocka_unit_test(missed_occurrences_outside_the_window_are_one_skipped_range),
	    cmocka_unit_test(overlap_skip_waits_for_the_run),
	    cmocka_unit_test(buffer_one_keeps_one_waiting),
	    cmocka_unit_test(pause_resume_skips_what_came_meanwhile),
	    cmocka_unit_test(limits_end_and_max_runs),
	    cmocka_unit_test(jitter_is_fixed_per_occurrence_and_bounded),
	    cmocka_unit_test(triggers_do_not_move_the_watermark),
	    cmocka_unit_test(bad_specs_are_refused_with_the_reason),
	    cmocka_unit_test(templates_are_bounded_in_total),
	    cmocka_unit_test(pause_on_failure_pauses),
	    cmocka_unit_test(backfill_fires_a_past_range),
	    cmocka_unit_test(on_all_one_fire_runs_on_every_member),
	    cmocka_unit_test(on_all_runs_that_do_not_fit_are_skipped_and_recorded),
	    cmocka_unit_test(codec_refuses_bad_targets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
