/* test_events.c - the ring of recent events (node/io/events.c) and the
 * refused-frames watch of the events service (node/svc/events_svc.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "io/events.h"
#include "svc/events_svc.h"

#define T0 UINT64_C(1796150000000) /* a plausible wall clock, ms (a whole second) */

static struct events *ring(uint32_t capacity)
{
	struct events *ev = events_create(capacity);
	assert_non_null(ev);
	events_set_rate(ev, 0);
	return ev;
}

static void add_n(struct events *ev, uint32_t n, uint64_t wall_ms)
{
	for (uint32_t i = 0; i < n; i++) {
		char msg[32];
		snprintf(msg, sizeof(msg), "event %u", i);
		assert_true(events_add(ev, wall_ms, "member", "n1", msg) != 0);
	}
}

static void empty_ring_has_nothing(void **state)
{
	(void)state;
	struct events *ev = ring(4);
	const struct event *out[4];
	assert_true(events_first_seq(ev) == 0);
	assert_true(events_last_seq(ev) == 0);
	assert_int_equal(events_since(ev, 0, out, 4), 0);
	assert_int_equal(events_since(ev, 100, out, 4), 0);
	events_destroy(ev);
	events_destroy(NULL); /* harmless */
}

static void seqs_grow_and_since_pages_oldest_first(void **state)
{
	(void)state;
	struct events *ev = ring(8);
	assert_true(events_add(ev, T0, "leader", "n2", "leader for term 3") == 1);
	assert_true(events_add(ev, T0 + 1, "member", "n3", "suspect (was alive)") == 2);
	assert_true(events_add(ev, T0 + 2, "member", "n3", "dead (was suspect)") == 3);
	assert_true(events_first_seq(ev) == 1);
	assert_true(events_last_seq(ev) == 3);
	const struct event *out[8];
	assert_int_equal(events_since(ev, 0, out, 8), 3);
	assert_true(out[0]->seq == 1 && out[2]->seq == 3);
	assert_string_equal(out[0]->kind, "leader");
	assert_string_equal(out[0]->subject, "n2");
	assert_string_equal(out[0]->message, "leader for term 3");
	assert_true(out[1]->wall_ms == T0 + 1);
	/* after a seq: only the newer ones; max bounds a page */
	assert_int_equal(events_since(ev, 1, out, 8), 2);
	assert_true(out[0]->seq == 2);
	assert_int_equal(events_since(ev, 0, out, 2), 2);
	assert_true(out[1]->seq == 2);
	assert_int_equal(events_since(ev, 3, out, 8), 0);
	/* beyond the newest (another run of the node): nothing */
	assert_int_equal(events_since(ev, 50, out, 8), 0);
	assert_int_equal(events_since(ev, 0, out, 0), 0);
	events_destroy(ev);
}

static void the_ring_wraps_and_keeps_the_newest(void **state)
{
	(void)state;
	struct events *ev = ring(4);
	add_n(ev, 10, T0);
	assert_true(events_last_seq(ev) == 10);
	assert_true(events_first_seq(ev) == 7);
	const struct event *out[8];
	/* an `after` older than the ring: from the oldest held (the reader sees
	 * it lost 2..6 from the first seq it gets) */
	assert_int_equal(events_since(ev, 1, out, 8), 4);
	assert_true(out[0]->seq == 7 && out[3]->seq == 10);
	assert_string_equal(out[0]->message, "event 6");
	assert_string_equal(out[3]->message, "event 9");
	assert_int_equal(events_since(ev, 8, out, 8), 2);
	assert_true(out[0]->seq == 9);
	/* many laps */
	add_n(ev, 4 * 1000 + 3, T0);
	assert_true(events_last_seq(ev) == 4013);
	assert_true(events_first_seq(ev) == 4010);
	assert_int_equal(events_since(ev, 0, out, 8), 4);
	for (int i = 0; i < 4; i++)
		assert_true(out[i]->seq == 4010u + (unsigned)i);
	events_destroy(ev);
}

static void the_default_capacity_is_events_ring(void **state)
{
	(void)state;
	struct events *ev = ring(0);
	add_n(ev, EVENTS_RING + 5, T0);
	assert_true(events_first_seq(ev) == 6);
	assert_true(events_last_seq(ev) == EVENTS_RING + 5);
	events_destroy(ev);
}

static void long_fields_are_cut_and_control_bytes_become_spaces(void **state)
{
	(void)state;
	struct events *ev = ring(4);
	char big[1000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	events_add(ev, T0, big, big, big);
	const struct event *out[1];
	assert_int_equal(events_since(ev, 0, out, 1), 1);
	assert_int_equal(strlen(out[0]->kind), EVENT_KIND_BYTES - 1);
	assert_int_equal(strlen(out[0]->subject), EVENT_SUBJECT_BYTES - 1);
	assert_int_equal(strlen(out[0]->message), EVENT_MESSAGE_BYTES - 1);
	/* a line stays a line: newlines, tabs, escapes, DEL */
	events_add(ev, T0, "task_failed", "7", "line one\nline two\r\t\x1b[31mred\x7f!");
	assert_int_equal(events_since(ev, 1, out, 1), 1);
	assert_string_equal(out[0]->message, "line one line two   [31mred !");
	/* NULL strings are empty */
	events_add(ev, T0, "node_started", NULL, NULL);
	assert_int_equal(events_since(ev, 2, out, 1), 1);
	assert_string_equal(out[0]->subject, "");
	assert_string_equal(out[0]->message, "");
	events_destroy(ev);
}

/* A field of n bytes holds n - 1; a multi-byte character across the cut
 * goes whole, never in part. */
static void a_cut_never_splits_a_utf8_character(void **state)
{
	(void)state;
	struct events *ev = ring(16);
	const struct event *out[1];
	const char *chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x8e\xb5"}; /* é € 🎵 */
	uint64_t seq = 0;
	for (int c = 0; c < 3; c++) {
		size_t clen = strlen(chars[c]);
		/* every offset of the character relative to the cut */
		for (size_t pad = 0; pad < 4; pad++) {
			char subject[EVENT_SUBJECT_BYTES + 16];
			size_t prefix = EVENT_SUBJECT_BYTES - 1 - pad;
			memset(subject, 'a', prefix);
			memcpy(subject + prefix, chars[c], clen);
			subject[prefix + clen] = 'z';
			subject[prefix + clen + 1] = '\0';
			seq = events_add(ev, T0, "member", subject, "m");
			assert_int_equal(events_since(ev, seq - 1, out, 1), 1);
			size_t len = strlen(out[0]->subject);
			if (pad >= clen) /* it fits whole (and the 'z' after it when room is left) */
				assert_int_equal(len, prefix + clen + (pad > clen ? 1 : 0));
			else             /* it is dropped whole */
				assert_int_equal(len, prefix);
			if (len > prefix)
				assert_memory_equal(out[0]->subject + prefix, chars[c], clen);
		}
	}
	/* a field of exactly its room of multi-byte characters is kept */
	char euros[EVENT_KIND_BYTES];
	size_t n = 0;
	while (n + 3 < sizeof(euros)) {
		memcpy(euros + n, "\xe2\x82\xac", 3);
		n += 3;
	}
	euros[n] = '\0';
	seq = events_add(ev, T0, euros, "s", "m");
	assert_int_equal(events_since(ev, seq - 1, out, 1), 1);
	assert_string_equal(out[0]->kind, euros);
	events_destroy(ev);
}

struct seen {
	uint64_t seqs[16];
	int n;
};

static void remember(void *arg, const struct event *e)
{
	struct seen *s = arg;
	if (s->n < 16)
		s->seqs[s->n++] = e->seq;
}

static void subscribers_hear_each_event_until_they_leave(void **state)
{
	(void)state;
	struct events *ev = ring(4);
	struct seen a = {0}, b = {0};
	assert_int_equal(events_subscribe(ev, remember, &a), 0);
	assert_int_equal(events_subscribe(ev, remember, &b), 0);
	add_n(ev, 2, T0);
	assert_int_equal(a.n, 2);
	assert_int_equal(b.n, 2);
	assert_true(a.seqs[1] == 2);
	events_unsubscribe(ev, remember, &a);
	add_n(ev, 1, T0);
	assert_int_equal(a.n, 2);
	assert_int_equal(b.n, 3);
	assert_true(b.seqs[2] == 3);
	/* the table is bounded; a slot freed is taken again */
	struct seen more[EVENTS_SUBSCRIBERS_MAX];
	int taken = 0;
	for (int i = 0; i < EVENTS_SUBSCRIBERS_MAX; i++)
		taken += events_subscribe(ev, remember, &more[i]) == 0;
	assert_int_equal(taken, EVENTS_SUBSCRIBERS_MAX - 1); /* b holds one */
	events_unsubscribe(ev, remember, &b);
	assert_int_equal(events_subscribe(ev, remember, &a), 0);
	events_destroy(ev);
}

static void a_storm_of_one_kind_is_cut_to_the_rate_with_a_summary(void **state)
{
	(void)state;
	struct events *ev = events_create(64);
	assert_non_null(ev);
	events_set_rate(ev, 5);
	uint32_t kept = 0;
	for (int i = 0; i < 530; i++)
		kept += events_add(ev, T0 + 10, "task_failed", "1", "boom") != 0;
	assert_int_equal(kept, 5);
	/* another kind is not held back by the storm */
	assert_true(events_add(ev, T0 + 20, "member", "n2", "dead (was suspect)") != 0);
	assert_true(events_suppressed(ev) == 525);
	/* within the same second: no summary yet */
	assert_int_equal(events_flush(ev, T0 + 999), 0);
	assert_int_equal(events_flush(ev, T0 + 1000), 1);
	const struct event *out[16];
	uint32_t n = events_since(ev, 0, out, 16);
	assert_int_equal(n, 7);
	assert_string_equal(out[6]->kind, "task_failed");
	assert_string_equal(out[6]->subject, "");
	assert_non_null(strstr(out[6]->message, "525 more task_failed"));
	/* summarised once only */
	assert_int_equal(events_flush(ev, T0 + 5000), 0);
	/* a new second starts a new count; its storm is summarised by the next
	 * event of the kind, before it */
	for (int i = 0; i < 8; i++)
		events_add(ev, T0 + 2000, "task_failed", "2", "boom");
	uint64_t seq = events_add(ev, T0 + 3000, "task_failed", "3", "boom");
	assert_true(seq != 0);
	n = events_since(ev, seq - 2, out, 16);
	assert_int_equal(n, 2);
	assert_non_null(strstr(out[0]->message, "3 more task_failed"));
	assert_string_equal(out[1]->subject, "3");
	events_destroy(ev);
}

static void no_rate_means_every_event_is_kept(void **state)
{
	(void)state;
	struct events *ev = ring(2048);
	add_n(ev, 1500, T0);
	assert_true(events_last_seq(ev) == 1500);
	assert_true(events_suppressed(ev) == 0);
	assert_int_equal(events_flush(ev, T0 + 5000), 0);
	events_destroy(ev);
}

/* ---- the refused-frames watch ---- */

struct emitted {
	char peer[64], kind[32];
	uint64_t rise, total;
	int n;
};

static void emit(void *arg, const char *peer, const char *kind, uint64_t rise, uint64_t total)
{
	struct emitted *e = arg;
	snprintf(e->peer, sizeof(e->peer), "%s", peer);
	snprintf(e->kind, sizeof(e->kind), "%s", kind);
	e->rise = rise;
	e->total = total;
	e->n++;
}

static void refused_frames_over_the_threshold_make_one_event_a_quiet_period(void **state)
{
	(void)state;
	static struct refused_watch w;
	refused_watch_init(&w, 100, 60000);
	struct emitted e = {0};
	uint64_t c[REFUSED_KINDS] = {0};
	/* below the threshold: nothing */
	c[4] = 100; /* oversized */
	assert_int_equal(refused_watch_step(&w, "10.0.0.9", c, 10000, emit, &e), 0);
	/* a jump of more than 100 between two looks */
	c[4] = 301;
	assert_int_equal(refused_watch_step(&w, "10.0.0.9", c, 20000, emit, &e), 1);
	assert_string_equal(e.peer, "10.0.0.9");
	assert_string_equal(e.kind, "oversized");
	assert_true(e.rise == 201 && e.total == 301);
	/* still jumping: quiet for a minute */
	c[4] = 600;
	assert_int_equal(refused_watch_step(&w, "10.0.0.9", c, 30000, emit, &e), 0);
	c[4] = 900;
	assert_int_equal(refused_watch_step(&w, "10.0.0.9", c, 80000, emit, &e), 1);
	assert_true(e.rise == 300);
	/* another kind of the same peer, and another peer, are their own */
	c[1] = 500; /* tampered */
	assert_int_equal(refused_watch_step(&w, "10.0.0.9", c, 81000, emit, &e), 1);
	assert_string_equal(e.kind, "tampered");
	uint64_t d[REFUSED_KINDS] = {0};
	d[0] = 150; /* a new peer counts from 0 */
	assert_int_equal(refused_watch_step(&w, "10.0.0.7", d, 81000, emit, &e), 1);
	assert_string_equal(e.kind, "forged");
	/* a counter that went down (the peer's entry was remade) */
	d[0] = 20;
	assert_int_equal(refused_watch_step(&w, "10.0.0.7", d, 200000, emit, &e), 0);
	assert_int_equal(e.n, 4);
}

static void the_refused_watch_table_makes_room_for_new_peers(void **state)
{
	(void)state;
	static struct refused_watch w;
	refused_watch_init(&w, 100, 60000);
	struct emitted e = {0};
	uint64_t c[REFUSED_KINDS] = {0};
	char peer[32];
	for (int i = 0; i < REFUSED_PEERS_MAX + 10; i++) {
		snprintf(peer, sizeof(peer), "10.1.0.%d", i);
		(void)refused_watch_step(&w, peer, c, (uint64_t)i + 1, emit, &e);
	}
	assert_int_equal(w.n, REFUSED_PEERS_MAX);
	assert_int_equal(e.n, 0);
	/* the newest are held */
	c[5] = 1000;
	snprintf(peer, sizeof(peer), "10.1.0.%d", REFUSED_PEERS_MAX + 9);
	assert_int_equal(refused_watch_step(&w, peer, c, 100, emit, &e), 1);
	assert_string_equal(e.kind, "malformed");
	/* a long peer string is cut, not overrun */
	char longpeer[300];
	memset(longpeer, 'p', sizeof(longpeer) - 1);
	longpeer[sizeof(longpeer) - 1] = '\0';
	assert_int_equal(refused_watch_step(&w, longpeer, c, 200, emit, &e), 1);
	assert_int_equal(strlen(e.peer), REFUSED_PEER_BYTES - 1);
	assert_int_equal(refused_watch_step(&w, longpeer, c, 300, emit, &e), 0); /* the same peer */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty_ring_has_nothing),
		cmocka_unit_test(seqs_grow_and_since_pages_oldest_first),
		cmocka_unit_test(the_ring_wraps_and_keeps_the_newest),
		cmocka_unit_test(the_default_capacity_is_events_ring),
		cmocka_unit_test(long_fields_are_cut_and_control_bytes_become_spaces),
		cmocka_unit_test(a_cut_never_splits_a_utf8_character),
		cmocka_unit_test(subscribers_hear_each_event_until_they_leave),
		cmocka_unit_test(a_storm_of_one_kind_is_cut_to_the_rate_with_a_summary),
		cmocka_unit_test(no_rate_means_every_event_is_kept),
		cmocka_unit_test(refused_frames_over_the_threshold_make_one_event_a_quiet_period),
		cmocka_unit_test(the_refused_watch_table_makes_room_for_new_peers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
