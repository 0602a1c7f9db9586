/*
 * test_views.c - client/views.c: the JSON of each object is valid whatever
 * bytes peers put in its strings, has the keys clusterctl --json and the
 * HTTP API promise, and formats schedule times through the caller's clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "views.h"

/* Dumps v and parses it back: the text is valid JSON. */
static json_t *round_trip(json_t *v)
{
	assert_non_null(v);
	char *text = view_dump(v);
	assert_non_null(text);
	json_error_t je;
	json_t *back = json_loads(text, 0, &je);
	free(text);
	assert_non_null(back);
	return back;
}

static void status_with_odd_strings_is_valid_json(void **state)
{
	(void)state;
	char bad[] = { 'n', (char)0xff, (char)0xc3, '"', '\\', '\n', 0 };
	char *tags[] = { bad, NULL };
	Chorus__MemberInfo m = CHORUS__MEMBER_INFO__INIT;
	m.name = bad;
	m.addr = NULL; /* a missing string reads as "" */
	m.tags = tags;
	m.n_tags = 2;
	Chorus__MemberInfo *mv[] = { &m };
	Chorus__StatusResp st = CHORUS__STATUS_RESP__INIT;
	st.name = bad;
	st.node_id = "";
	st.version = bad;
	st.listen = "tcp://x";
	st.members = mv;
	st.n_members = 1;
	st.tags = tags;
	st.n_tags = 1;
	json_t *o = round_trip(view_status(&st));
	assert_string_equal(json_string_value(json_object_get(o, "name")), "n??\"\\\n");
	json_t *m0 = json_array_get(json_object_get(o, "members"), 0);
	assert_string_equal(json_string_value(json_object_get(m0, "addr")), "");
	assert_int_equal(json_array_size(json_object_get(m0, "tags")), 2);
	assert_non_null(json_object_get(o, "raft_voters"));
	json_decref(o);
}

static void task_output_that_is_not_utf8_goes_as_base64(void **state)
{
	(void)state;
	uint8_t out[] = { 0xff, 0x00, 'a' };
	Chorus__TaskResult r = CHORUS__TASK_RESULT__INIT;
	r.task_id = 7;
	r.state = CHORUS__TASK_STATE__TASK_SUCCEEDED;
	r.output.data = out;
	r.output.len = sizeof out;
	r.batch_id = 3;
	r.batch_index = 2;
	json_t *o = round_trip(view_task(&r, 1));
	assert_null(json_object_get(o, "output"));
	assert_string_equal(json_string_value(json_object_get(o, "output_base64")), "/wBh");
	assert_string_equal(json_string_value(json_object_get(o, "state")), "succeeded");
	assert_int_equal(json_integer_value(json_object_get(o, "index")), 2);
	assert_int_equal(json_integer_value(json_object_get(o, "batch_id")), 3);
	assert_string_equal(json_string_value(json_object_get(o, "error")), "");
	json_decref(o);
	/* outside a batch: no index, no batch_id; an out-of-range state is "unknown" */
	r.state = (Chorus__TaskState)99;
	o = round_trip(view_task(&r, 0));
	assert_null(json_object_get(o, "index"));
	assert_null(json_object_get(o, "batch_id"));
	assert_string_equal(json_string_value(json_object_get(o, "state")), "unknown");
	json_decref(o);
}

static void batch_has_the_contract_keys(void **state)
{
	(void)state;
	Chorus__BatchInfo b = CHORUS__BATCH_INFO__INIT;
	b.batch_id = 9;
	b.total = 2000;
	b.done = 2000;
	b.succeeded = 1999;
	b.failed = 1;
	b.state = "done";
	b.handler = "echo";
	json_t *o = round_trip(view_batch(&b));
	static const char *const keys[] = { "batch_id", "total", "done", "succeeded", "failed",
	                                    "cancelled", "lost", "running", "queued",
	                                    "submitted_ms", "finished_ms", "state", "handler" };
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		assert_non_null(json_object_get(o, keys[i]));
	assert_int_equal(json_integer_value(json_object_get(o, "total")), 2000);
	json_decref(o);
}

static void fixed_clock(void *ctx, const char *zone, int64_t t, char *buf, size_t len)
{
	(void)ctx;
	snprintf(buf, len, "%s@%lld", zone, (long long)t);
}

static void schedule_times_use_the_callers_clock_and_utc_without_one(void **state)
{
	(void)state;
	Chorus__CronSpec spec = CHORUS__CRON_SPEC__INIT;
	spec.name = "nightly";
	spec.tz = "Europe/Paris";
	Chorus__CronRun run = CHORUS__CRON_RUN__INIT;
	run.scheduled_s = 86400;
	run.outcome = "succeeded";
	Chorus__CronRun *runs[] = { &run };
	Chorus__CronInfo ci = CHORUS__CRON_INFO__INIT;
	ci.spec = &spec;
	ci.next_s = 86400;
	ci.history = runs;
	ci.n_history = 1;
	struct view_clock clk = { fixed_clock, NULL };
	json_t *o = round_trip(view_cron_info(&ci, 1, &clk));
	assert_string_equal(json_string_value(json_object_get(o, "next")), "Europe/Paris@86400");
	assert_true(json_is_null(json_object_get(o, "last"))); /* 0 = none */
	assert_string_equal(json_string_value(json_object_get(o, "state")), "active");
	assert_string_equal(json_string_value(json_object_get(o, "restart")), "temporary");
	json_t *h = json_array_get(json_object_get(o, "history"), 0);
	assert_string_equal(json_string_value(json_object_get(h, "scheduled")), "Europe/Paris@86400");
	json_decref(o);
	o = round_trip(view_cron_info(&ci, 0, NULL));
	assert_string_equal(json_string_value(json_object_get(o, "next")),
	                    "1970-01-02T00:00:00+00:00");
	assert_null(json_object_get(o, "history"));
	json_decref(o);
	/* paused with a note; no spec at all still gives every key */
	Chorus__CronInfo bare = CHORUS__CRON_INFO__INIT;
	bare.paused = 1;
	bare.note = "maintenance";
	o = round_trip(view_cron_info(&bare, 0, NULL));
	assert_string_equal(json_string_value(json_object_get(o, "state")), "paused: maintenance");
	assert_string_equal(json_string_value(json_object_get(o, "tz")), "UTC");
	json_decref(o);
}

static void cancel_views(void **state)
{
	(void)state;
	Chorus__CancelResp c = CHORUS__CANCEL_RESP__INIT;
	c.state = CHORUS__TASK_STATE__TASK_CANCELLED;
	c.cancelled = 5;
	json_t *o = round_trip(view_cancel_task(12, &c));
	assert_string_equal(json_string_value(json_object_get(o, "state")), "cancelled");
	assert_int_equal(json_integer_value(json_object_get(o, "task_id")), 12);
	json_decref(o);
	o = round_trip(view_cancel_batch(4, &c));
	assert_int_equal(json_integer_value(json_object_get(o, "cancelled")), 5);
	json_decref(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(status_with_odd_strings_is_valid_json),
		cmocka_unit_test(task_output_that_is_not_utf8_goes_as_base64),
		cmocka_unit_test(batch_has_the_contract_keys),
		cmocka_unit_test(schedule_times_use_the_callers_clock_and_utc_without_one),
		cmocka_unit_test(cancel_views),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
