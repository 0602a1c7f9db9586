/*
 * test_prom.c - the Prometheus text builder (lib/prom.c): the exact text
 * of families, samples and histograms, escaping, and what it refuses.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/prom.h"

static void empty_builder_gives_empty_text(void **state)
{
	(void)state;
	struct prom p;
	prom_init(&p);
	size_t len = 99;
	assert_string_equal(prom_text(&p, &len), "");
	assert_int_equal(len, 0);
	prom_free(&p);
}

static void counter_and_gauge_with_help_type_and_labels(void **state)
{
	(void)state;
	struct prom p;
	prom_init(&p);
	prom_family(&p, "chorus_tasks_total", PROM_COUNTER, "Tasks by final state.");
	prom_sample(&p, "chorus_tasks_total", 12, "state", "succeeded", "handler", "echo", NULL);
	prom_sample(&p, "chorus_tasks_total", 0, "state", "failed", "handler", "echo", NULL);
	prom_family(&p, "chorus_up", PROM_GAUGE, "Up.");
	prom_sample(&p, "chorus_up", 1, NULL);
	size_t len;
	const char *t = prom_text(&p, &len);
	assert_string_equal(t, "# HELP chorus_tasks_total Tasks by final state.\n"
	                       "# TYPE chorus_tasks_total counter\n"
	                       "chorus_tasks_total{state=\"succeeded\",handler=\"echo\"} 12\n"
	                       "chorus_tasks_total{state=\"failed\",handler=\"echo\"} 0\n"
	                       "# HELP chorus_up Up.\n"
	                       "# TYPE chorus_up gauge\n"
	                       "chorus_up 1\n");
	assert_int_equal(len, strlen(t));
	assert_int_equal(p.errors, 0);
	assert_int_equal(p.oom, 0);
	prom_free(&p);
}

static void label_values_and_help_are_escaped(void **state)
{
	(void)state;
	struct prom p;
	prom_init(&p);
	prom_family(&p, "chorus_x", PROM_GAUGE, "A \\ help\nline with \"quotes\".");
	prom_sample(&p, "chorus_x", 1, "v", "a\"b\\c\nd", NULL);
	assert_string_equal(prom_text(&p, NULL),
	                    "# HELP chorus_x A \\\\ help\\nline with \"quotes\".\n"
	                    "# TYPE chorus_x gauge\n"
	                    "chorus_x{v=\"a\\\"b\\\\c\\nd\"} 1\n");
	assert_int_equal(p.errors, 0);
	prom_free(&p);
}

static void invalid_utf8_is_replaced_valid_kept(void **state)
{
	(void)state;
	struct prom p;
	prom_init(&p);
	prom_family(&p, "chorus_x", PROM_GAUGE, "x");
	/* é kept; a lone continuation byte, a truncated sequence, an overlong
	 * '/' and a surrogate replaced byte by byte */
	prom_sample(&p, "chorus_x", 1, "v", "\xC3\xA9|\x80|\xE2\x82|\xC0\xAF|\xED\xA0\x80", NULL);
	const char *t = prom_text(&p, NULL);
	const char *line = strstr(t, "chorus_x{");
	assert_non_null(line);
	assert_string_equal(line, "chorus_x{v=\"\xC3\xA9|\xEF\xBF\xBD|\xEF\xBF\xBD\xEF\xBF\xBD|"
	                          "\xEF\xBF\xBD\xEF\xBF\xBD|\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"} 1\n");
	prom_free(&p);
}

static void values_print_exactly(void **state)
{
	(void)state;
	struct prom p;
	prom_init(&p);
	prom_family(&p, "chorus_v", PROM_GAUGE, "v");
	prom_sample(&p, "chorus_v", 0.1, "k", "a", NULL);
	prom_sample(&p, "chorus_v", -3, "k", "b", NULL);
	prom_sample(&p, "chorus_v", 1e300, "k", "c", NULL);
	prom_sample(&p, "chorus_v", NAN, "k", "d", NULL);
	prom_sample(&p, "chorus_v", INFINITY, "k", "e", NULL);
	prom_sample(&p, "chorus_v", -INFINITY, "k", "f", NULL);
	prom_sample(&p, "chorus_v", 18446744073709551615.0, "k", "g", NULL);
	prom_sample(&p, "chorus_v", 1.0 / 3.0, "k", "h", NULL);
	const char *t = prom_text(&p, NULL);
	assert_non_null(strstr(t, "chorus_v{k=\"a\"} 0.1\n"));
	assert_non_null(strstr(t, "chorus_v{k=\"b\"} -3\n"));
	assert_non_null(strstr(t, "chorus_v{k=\"c\"} 1e+300\n"));
	assert_non_null(strstr(t, "chorus_v{k=\"d\"} NaN\n"));
	assert_non_null(strstr(t, "chorus_v{k=\"e\"} +Inf\n"));
	assert_non_null(strstr(t, "chorus_v{k=\"f\"} -Inf\n"));
	assert_non_null(strstr(t, "chorus_v{k=\"g\"} 1.8446744073709552e+19\n"));
	const char *h = strstr(t, "chorus_v{k=\"h\"} ");
	assert_non_null(h);
	assert_true(strtod(h + strlen("chorus_v{k=\"h\"} "), NULL) == 1.0 / 3.0);
	assert_int_equal(p.errors, 0);
	prom_free(&p);
}

static void histogram_buckets_are_cumulative_with_inf_sum_count(void **state)
{
	(void)state;
	struct prom p;
	prom_init(&p);
	const double le[] = {0.001, 0.01, 0.1};
	const uint64_t counts[] = {2, 0, 3};
	prom_family(&p, "chorus_d_seconds", PROM_HISTOGRAM, "Durations.");
	prom_histogram(&p, "chorus_d_seconds", le, counts, 3, 4, 1.25, "type", "submit", NULL);
	prom_histogram(&p, "chorus_d_seconds", le, counts, 0, 0, 0, NULL);
	assert_string_equal(prom_text(&p, NULL),
	                    "# HELP chorus_d_seconds Durations.\n"
	                    "# TYPE chorus_d_seconds histogram\n"
	                    "chorus_d_seconds_bucket{type=\"submit\",le=\"0.001\"} 2\n"
	                    "chorus_d_seconds_bucket{type=\"submit\",le=\"0.01\"} 2\n"
	                    "chorus_d_seconds_bucket{type=\"submit\",le=\"0.1\"} 5\n"
	                    "chorus_d_seconds_bucket{type=\"submit\",le=\"+Inf\"} 9\n"
	                    "chorus_d_seconds_sum{type=\"submit\"} 1.25\n"
	                    "chorus_d_seconds_count{type=\"submit\"} 9\n"
	                    "chorus_d_seconds_bucket{le=\"+Inf\"} 0\n"
	                    "chorus_d_seconds_sum 0\n"
	                    "chorus_d_seconds_count 0\n");
	assert_int_equal(p.errors, 0);
	prom_free(&p);
}

static void repeated_family_is_refused_and_counted(void **state)
{
	(void)state;
	struct prom p;
	prom_init(&p);
	prom_family(&p, "chorus_a", PROM_GAUGE, "a");
	prom_sample(&p, "chorus_a", 1, NULL);
	prom_family(&p, "chorus_a", PROM_COUNTER, "again");
	/* its samples are refused too: they would land under no family */
	prom_sample(&p, "chorus_a", 2, NULL);
	assert_string_equal(prom_text(&p, NULL), "# HELP chorus_a a\n# TYPE chorus_a gauge\n"
	                                         "chorus_a 1\n");
	assert_int_equal(p.errors, 2);
	prom_free(&p);
}

static void bad_names_and_stray_samples_are_refused(void **state)
{
	(void)state;
	struct prom p;
	prom_init(&p);
	prom_sample(&p, "chorus_a", 1, NULL);         /* before any family */
	prom_family(&p, "9bad", PROM_GAUGE, "x");      /* leading digit */
	prom_family(&p, "bad-name", PROM_GAUGE, "x");  /* dash */
	prom_family(&p, "", PROM_GAUGE, "x");
	prom_family(&p, "chorus_b", PROM_GAUGE, "b");
	prom_sample(&p, "chorus_c", 1, NULL);          /* another family's */
	prom_sample(&p, "chorus_b_sum", 1, NULL);      /* a gauge has no _sum */
	prom_sample(&p, "chorus_b", 1, "__reserved", "x", NULL);
	prom_sample(&p, "chorus_b", 1, "bad:label", "x", NULL);
	prom_sample(&p, "chorus_b", 1, "le", "1", NULL); /* le belongs to buckets */
	prom_sample(&p, "chorus_b", 1, "ok", (const char *)NULL, NULL);
	prom_sample(&p, "chorus_b", 3, "ok", "y", NULL);
	assert_int_equal(p.errors, 10);
	assert_string_equal(prom_text(&p, NULL), "# HELP chorus_b b\n# TYPE chorus_b gauge\n"
	                                         "chorus_b{ok=\"y\"} 3\n");
	prom_free(&p);
}

static void histogram_misuse_is_refused(void **state)
{
	(void)state;
	struct prom p;
	prom_init(&p);
	const double down[] = {1, 0.5};
	const double nan_le[] = {NAN};
	const uint64_t c[] = {1, 1};
	prom_family(&p, "chorus_g", PROM_GAUGE, "g");
	prom_histogram(&p, "chorus_g", down, c, 0, 0, 0, NULL); /* not a histogram */
	prom_family(&p, "chorus_h_seconds", PROM_HISTOGRAM, "h");
	prom_histogram(&p, "chorus_h_seconds", down, c, 2, 0, 0, NULL);  /* descending */
	prom_histogram(&p, "chorus_h_seconds", nan_le, c, 1, 0, 0, NULL); /* NaN bound */
	prom_histogram(&p, "chorus_other", down, c, 0, 0, 0, NULL);     /* wrong family */
	assert_int_equal(p.errors, 4);
	/* its parts may be written one by one too */
	prom_sample(&p, "chorus_h_seconds_count", 0, NULL);
	assert_int_equal(p.errors, 4);
	prom_free(&p);
}

static void large_output_grows_without_loss(void **state)
{
	(void)state;
	struct prom p;
	prom_init(&p);
	prom_family(&p, "chorus_many", PROM_GAUGE, "many");
	char v[32];
	for (int i = 0; i < 20000; i++) {
		snprintf(v, sizeof(v), "%d", i);
		prom_sample(&p, "chorus_many", i, "i", v, NULL);
	}
	size_t len;
	const char *t = prom_text(&p, &len);
	assert_int_equal(p.oom, 0);
	assert_int_equal(strlen(t), len);
	assert_non_null(strstr(t, "chorus_many{i=\"19999\"} 19999\n"));
	int lines = 0;
	for (const char *c = t; *c; c++)
		lines += *c == '\n';
	assert_int_equal(lines, 20002);
	prom_free(&p);
	/* freed builder is reusable after init, and free twice is harmless */
	prom_free(&p);
}

static void hist_observe_puts_bounds_in_their_bucket(void **state)
{
	(void)state;
	struct prom_hist h;
	memset(&h, 0, sizeof(h));
	const double le[] = {0.5, 1};
	prom_hist_observe(&h, le, 2, 0.5);  /* le is inclusive */
	prom_hist_observe(&h, le, 2, 0.75);
	prom_hist_observe(&h, le, 2, 1);
	prom_hist_observe(&h, le, 2, 7);    /* above every bound */
	assert_int_equal(h.counts[0], 1);
	assert_int_equal(h.counts[1], 2);
	assert_int_equal(h.counts[2], 1);
	assert_true(h.sum == 9.25);
	/* the seconds bounds ascend (prom_histogram refuses them otherwise) */
	for (int i = 1; i < PROM_SECONDS_BUCKETS; i++)
		assert_true(prom_seconds_le[i] > prom_seconds_le[i - 1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty_builder_gives_empty_text),
		cmocka_unit_test(counter_and_gauge_with_help_type_and_labels),
		cmocka_unit_test(label_values_and_help_are_escaped),
		cmocka_unit_test(invalid_utf8_is_replaced_valid_kept),
		cmocka_unit_test(values_print_exactly),
		cmocka_unit_test(histogram_buckets_are_cumulative_with_inf_sum_count),
		cmocka_unit_test(repeated_family_is_refused_and_counted),
		cmocka_unit_test(bad_names_and_stray_samples_are_refused),
		cmocka_unit_test(histogram_misuse_is_refused),
		cmocka_unit_test(large_output_grows_without_loss),
		cmocka_unit_test(hist_observe_puts_bounds_in_their_bucket),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
