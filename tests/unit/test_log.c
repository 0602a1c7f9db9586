/*
 * test_log.c - log lines (node/io/log.c): the text and JSON formats, level
 * filtering, escaping, and log_limited's suppression count. stderr (fd 2)
 * is replaced by a pipe for each test and the lines are read back from it.
 * log_limited runs on a fake clock (log_set_clock), so no test sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/log.h"

struct capture {
	int read_fd;
	int saved_stderr;
	char buf[65536];
	size_t len;
};

static uint64_t fake_now_ms;
static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return fake_now_ms;
}

static int setup(void **state)
{
	struct capture *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	int p[2];
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	c->saved_stderr = dup(STDERR_FILENO);
	assert_true(c->saved_stderr >= 0);
	assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
	close(p[1]);
	c->read_fd = p[0];
	log_setup(LOG_INFO, 0);
	log_limited_reset();
	fake_now_ms = 1000000;
	log_set_clock(fake_clock, NULL);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct capture *c = *state;
	dup2(c->saved_stderr, STDERR_FILENO);
	close(c->saved_stderr);
	close(c->read_fd);
	log_set_clock(NULL, NULL);
	log_setup(LOG_INFO, 0);
	free(c);
	return 0;
}

/* Everything written so far (the writes are synchronous: no waiting). */
static const char *drain(struct capture *c)
{
	for (;;) {
		ssize_t n = read(c->read_fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
		if (n <= 0)
			break;
		c->len += (size_t)n;
	}
	c->buf[c->len] = '\0';
	return c->buf;
}

static size_t count_lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void assert_matches(const char *text, const char *pattern)
{
	regex_t re;
	assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
	int rc = regexec(&re, text, 0, NULL, 0);
	regfree(&re);
	if (rc != 0)
		fail_msg("'%s' does not match /%s/", text, pattern);
}

static void text_line_has_time_level_component_and_message(void **state)
{
	struct capture *c = *state;
	log_info("link", "handshake from %s:%d", "127.0.0.1", 5000);
	const char *out = drain(c);
	assert_matches(out, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
			    "INFO  link: handshake from 127\\.0\\.0\\.1:5000\n$");
}

static void every_level_has_its_tag(void **state)
{
	struct capture *c = *state;
	log_setup(LOG_DEBUG, 0);
	log_debug("a", "d");
	log_info("a", "i");
	log_warn("a", "w");
	log_error("a", "e");
	const char *out = drain(c);
	assert_int_equal(count_lines(out), 4);
	assert_non_null(strstr(out, "Z DEBUG a: d\n"));
	assert_non_null(strstr(out, "Z INFO  a: i\n"));
	assert_non_null(strstr(out, "Z WARN  a: w\n"));
	assert_non_null(strstr(out, "Z ERROR a: e\n"));
}

static void lines_below_the_level_are_dropped(void **state)
{
	struct capture *c = *state;
	log_setup(LOG_WARN, 0);
	log_debug("x", "no");
	log_info("x", "no");
	log_warn("x", "yes");
	log_limited(LOG_INFO, "x", "k", 10, "no either");
	const char *out = drain(c);
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "WARN  x: yes"));
}

static void text_escapes_newlines_so_a_message_cannot_forge_a_line(void **state)
{
	struct capture *c = *state;
	log_error("task", "output: %s", "a\nERROR fake: b\x01");
	const char *out = drain(c);
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "task: output: a\\nERROR fake: b\\x01\n"));
}

static void long_message_is_cut_and_marked(void **state)
{
	struct capture *c = *state;
	char big[10000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_info("big", "%s", big);
	const char *out = drain(c);
	assert_int_equal(count_lines(out), 1);
	assert_true(strlen(out) < 4200);
	assert_non_null(strstr(out, "x...\n"));
}

static json_t *parse_line(const char *line);

static void json_line_with_many_escapes_stays_one_valid_line(void **state)
{
	struct capture *c = *state;
	log_setup(LOG_INFO, 1);
	char ctl[3000];
	memset(ctl, '\x01', sizeof(ctl) - 1); /* each becomes \u0001: 6 bytes */
	ctl[sizeof(ctl) - 1] = '\0';
	log_info("big", "%s", ctl);
	const char *out = drain(c);
	assert_int_equal(count_lines(out), 1);
	json_t *o = parse_line(out);
	assert_int_equal(strlen(json_string_value(json_object_get(o, "msg"))), sizeof(ctl) - 1);
	json_decref(o);
}

static json_t *parse_line(const char *line)
{
	json_error_t jerr;
	json_t *o = json_loads(line, 0, &jerr);
	if (!o)
		fail_msg("not JSON (%s): %s", jerr.text, line);
	return o;
}

static void json_line_parses_back_with_every_field(void **state)
{
	struct capture *c = *state;
	log_setup(LOG_INFO, 1);
	log_warn("store", "quote \" backslash \\ newline \n tab \t ctl \x02 done");
	const char *out = drain(c);
	assert_int_equal(count_lines(out), 1);
	json_t *o = parse_line(out);
	assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
	assert_string_equal(json_string_value(json_object_get(o, "component")), "store");
	assert_string_equal(json_string_value(json_object_get(o, "msg")),
			    "quote \" backslash \\ newline \n tab \t ctl \x02 done");
	assert_matches(json_string_value(json_object_get(o, "ts")),
		       "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$");
	assert_null(json_object_get(o, "suppressed"));
	json_decref(o);
	/* the key order of the documented example */
	assert_int_equal(strncmp(out, "{\"ts\":", 6), 0);
}

static void json_line_survives_bytes_that_are_not_utf8(void **state)
{
	struct capture *c = *state;
	log_setup(LOG_INFO, 1);
	log_error("task", "bad \xff\xfe bytes");
	const char *out = drain(c);
	json_t *o = parse_line(out);
	assert_string_equal(json_string_value(json_object_get(o, "msg")), "bad ?? bytes");
	json_decref(o);
}

static void limited_prints_first_then_suppresses_within_the_interval(void **state)
{
	struct capture *c = *state;
	for (int i = 0; i < 5; i++) {
		log_limited(LOG_WARN, "link", "bad-frame", 1000, "bad frame %d", i);
		fake_now_ms += 100; /* 0..400 ms: inside the interval */
	}
	const char *out = drain(c);
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "link: bad frame 0\n"));

	fake_now_ms += 1000; /* interval over: next line reports the four dropped */
	log_limited(LOG_WARN, "link", "bad-frame", 1000, "bad frame %d", 5);
	out = drain(c);
	assert_int_equal(count_lines(out), 2);
	assert_non_null(strstr(out, "link: bad frame 5 (4 similar suppressed)\n"));

	fake_now_ms += 5000; /* nothing suppressed since: no suffix */
	log_limited(LOG_WARN, "link", "bad-frame", 1000, "bad frame %d", 6);
	out = drain(c);
	assert_non_null(strstr(out, "link: bad frame 6\n"));
}

static void limited_keys_are_per_component_and_key(void **state)
{
	struct capture *c = *state;
	log_limited(LOG_WARN, "link", "a", 1000, "one");
	log_limited(LOG_WARN, "link", "b", 1000, "two");
	log_limited(LOG_WARN, "http", "a", 1000, "three");
	log_limited(LOG_WARN, "link", "a", 1000, "four");
	const char *out = drain(c);
	assert_int_equal(count_lines(out), 3);
	assert_null(strstr(out, "four"));
}

static void limited_json_reports_suppressed_count(void **state)
{
	struct capture *c = *state;
	log_setup(LOG_INFO, 1);
	log_limited(LOG_INFO, "w", "k", 50, "x");
	log_limited(LOG_INFO, "w", "k", 50, "x");
	log_limited(LOG_INFO, "w", "k", 50, "x");
	fake_now_ms += 50;
	c->len = 0;
	drain(c);
	c->len = 0;
	log_limited(LOG_INFO, "w", "k", 50, "x");
	const char *out = drain(c);
	json_t *o = parse_line(out);
	assert_int_equal(json_integer_value(json_object_get(o, "suppressed")), 2);
	assert_string_equal(json_string_value(json_object_get(o, "msg")), "x (2 similar suppressed)");
	json_decref(o);
}

static void limited_table_is_bounded_and_evicts_the_oldest(void **state)
{
	struct capture *c = *state;
	char key[16];
	/* fill every slot, key0 printed first (oldest) */
	for (int i = 0; i < LOG_LIMIT_KEYS; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		log_limited(LOG_INFO, "t", key, 60000, "%s", key);
		fake_now_ms++;
	}
	assert_int_equal(count_lines(drain(c)), LOG_LIMIT_KEYS);
	/* one more key evicts k0; k1 is still limited */
	log_limited(LOG_INFO, "t", "extra", 60000, "extra");
	log_limited(LOG_INFO, "t", "k1", 60000, "k1 again");
	log_limited(LOG_INFO, "t", "k0", 60000, "k0 again");
	const char *out = drain(c);
	assert_int_equal(count_lines(out), LOG_LIMIT_KEYS + 2);
	assert_null(strstr(out, "k1 again"));
	assert_non_null(strstr(out, "k0 again"));
}

static void level_names_parse_back(void **state)
{
	(void)state;
	for (int l = LOG_DEBUG; l <= LOG_ERROR; l++)
		assert_int_equal(log_level_parse(log_level_name(l)), l);
	assert_int_equal(log_level_parse("WARN"), LOG_WARN);
	assert_int_equal(log_level_parse("loud"), -1);
	assert_int_equal(log_level_parse(NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(text_line_has_time_level_component_and_message, setup,
						teardown),
		cmocka_unit_test_setup_teardown(every_level_has_its_tag, setup, teardown),
		cmocka_unit_test_setup_teardown(lines_below_the_level_are_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(text_escapes_newlines_so_a_message_cannot_forge_a_line,
						setup, teardown),
		cmocka_unit_test_setup_teardown(long_message_is_cut_and_marked, setup, teardown),
		cmocka_unit_test_setup_teardown(json_line_parses_back_with_every_field, setup, teardown),
		cmocka_unit_test_setup_teardown(json_line_with_many_escapes_stays_one_valid_line, setup,
						teardown),
		cmocka_unit_test_setup_teardown(json_line_survives_bytes_that_are_not_utf8, setup,
						teardown),
		cmocka_unit_test_setup_teardown(limited_prints_first_then_suppresses_within_the_interval,
						setup, teardown),
		cmocka_unit_test_setup_teardown(limited_keys_are_per_component_and_key, setup, teardown),
		cmocka_unit_test_setup_teardown(limited_json_reports_suppressed_count, setup, teardown),
		cmocka_unit_test_setup_teardown(limited_table_is_bounded_and_evicts_the_oldest, setup,
						teardown),
		cmocka_unit_test(level_names_parse_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
