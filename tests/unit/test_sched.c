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
		uint32_t n = sched_plan(s, now_ms, SELF, out, SCHED_PLAN_MAX);
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
	uint32_t n = sched_plan(s, T0_MS + 3000, SELF, out, SCHED_PLAN_MAX);
	assert_int_equal(n, 3);
	char err[128];
	assert_int_equal(sched_apply(s, &out[0], err, sizeof(err)), 0);
	/* planned, not applied: not planned again */
	assert_int_equal(sched_plan(s, T0_MS + 3000, SELF, out, SCHED_PLAN_MAX), 0);
	/* a new leader re-plans from what is applied: occurrences 2 and 3 */
	sched_leader_reset(s);
	n = sched_plan(s, T0_MS + 3000, SELF, out, SCHED_PLAN_MAX);
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
	assert_int_equal(sched_plan(s, T0_MS + 9999, SELF, out, 4), 0);
	uint64_t due = sched_next_plan_ms(s);
	assert_true(due >= T0_MS + 10000 && due < T0_MS + 15000);
	assert_int_equal(sched_plan(s, due - 1, SELF, out, 4), 0);
	assert_int_equal(sched_plan(s, due, SELF, out, 4), 1);
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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
