/* test_crepl.c - the cache's replication decisions (node/core/crepl.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/cplace.h"
#include "core/crepl.h"
#include "core/cstore.h"
#include "core/hlc.h"
#include "lib/err.h"

#define T0 UINT64_C(1700000000000) /* a plausible wall clock, ms */
#define P 32

/* ---- waiting for replicas ---- */

static void replicas_needed_follow_the_consistency(void **state)
{
	(void)state;
	assert_int_equal(crepl_replicas_needed(3, CREPL_ONE), 0);
	assert_int_equal(crepl_replicas_needed(3, CREPL_QUORUM), 1);
	assert_int_equal(crepl_replicas_needed(3, CREPL_ALL), 2);
	assert_int_equal(crepl_replicas_needed(5, CREPL_QUORUM), 2);
	assert_int_equal(crepl_replicas_needed(2, CREPL_QUORUM), 1);
	assert_int_equal(crepl_replicas_needed(1, CREPL_ALL), 0);
	assert_int_equal(crepl_replicas_needed(0, CREPL_QUORUM), 0);
	assert_int_equal(crepl_replicas_needed(3, 0), 1); /* anything else is QUORUM */
}

static void a_quorum_write_is_done_at_the_first_ack(void **state)
{
	(void)state;
	struct crepl_quorum q;
	crepl_quorum_init(&q, 1, 1);
	crepl_quorum_sent(&q, true);
	crepl_quorum_sent(&q, true);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_WAIT);
	crepl_quorum_answer(&q, true);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_DONE);
	crepl_quorum_answer(&q, false); /* a late failure changes nothing */
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_DONE);
	assert_int_equal(q.outstanding, 0);
}

static void a_quorum_write_fails_when_both_replicas_fail(void **state)
{
	(void)state;
	struct crepl_quorum q;
	crepl_quorum_init(&q, 1, 1);
	crepl_quorum_sent(&q, true);
	crepl_quorum_sent(&q, true);
	crepl_quorum_answer(&q, false);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_WAIT); /* the other may still ack */
	crepl_quorum_answer(&q, false);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_FAIL);
}

/* cache_svc.c counted "asked - failed < need" with need counted down: an
 * ALL write acked by one replica and failed by the other waited forever. */
static void an_all_write_fails_when_one_acks_and_one_fails(void **state)
{
	(void)state;
	struct crepl_quorum q;
	crepl_quorum_init(&q, 2, 2);
	crepl_quorum_sent(&q, true);
	crepl_quorum_sent(&q, true);
	crepl_quorum_answer(&q, true);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_WAIT);
	crepl_quorum_answer(&q, false);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_FAIL);
	/* the same through the counters the service keeps */
	assert_int_equal(crepl_decide(1, 0, 0), CREPL_FAIL);
}

/* ...and a send that failed at once counted as failed but not asked: with
 * the other replica failing too, "asked - failed" wrapped below zero. */
static void a_send_failed_at_once_does_not_leave_a_write_waiting(void **state)
{
	(void)state;
	struct crepl_quorum q;
	crepl_quorum_init(&q, 1, 1);
	crepl_quorum_sent(&q, false); /* the link was full */
	crepl_quorum_sent(&q, true);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_WAIT);
	crepl_quorum_answer(&q, false);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_FAIL);
	assert_int_equal(q.failed, 2);
}

static void too_few_sends_fail_at_once(void **state)
{
	(void)state;
	struct crepl_quorum q;
	crepl_quorum_init(&q, 2, 2);
	crepl_quorum_sent(&q, true);
	crepl_quorum_sent(&q, false);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_FAIL);
	crepl_quorum_init(&q, 0, 0); /* ONE: done with no replica at all */
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_DONE);
}

static void a_read_hoping_for_more_waits_only_for_those_that_can_answer(void **state)
{
	(void)state;
	struct crepl_quorum q;
	crepl_quorum_init(&q, 1, 2);
	crepl_quorum_sent(&q, true);
	crepl_quorum_sent(&q, true);
	crepl_quorum_answer(&q, true);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_WAIT); /* the other may hold newer */
	crepl_quorum_answer(&q, true);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_DONE);
	/* one that cannot answer is not waited for beyond its failure */
	crepl_quorum_init(&q, 1, 2);
	crepl_quorum_sent(&q, true);
	crepl_quorum_sent(&q, true);
	crepl_quorum_answer(&q, true);
	crepl_quorum_answer(&q, false);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_DONE);
	/* a want below need is need */
	crepl_quorum_init(&q, 2, 1);
	assert_int_equal(q.want, 0);
	assert_int_equal(crepl_decide(0, 1, 1), CREPL_WAIT);
	assert_int_equal(crepl_decide(0, 1, 0), CREPL_DONE);
}

static void one_copy_is_no_quorum_once_others_were_seen(void **state)
{
	(void)state;
	assert_true(crepl_copies_enough(CREPL_QUORUM, 3, 3));
	assert_true(crepl_copies_enough(CREPL_QUORUM, 2, 3));
	assert_false(crepl_copies_enough(CREPL_QUORUM, 1, 3)); /* cut off */
	assert_false(crepl_copies_enough(CREPL_ALL, 1, 2));
	assert_true(crepl_copies_enough(CREPL_ONE, 1, 3));
	assert_true(crepl_copies_enough(CREPL_QUORUM, 1, 1)); /* a one-node cluster, or R = 1 */
}

/* ---- reads ---- */

static struct cstore_version ver(uint64_t hlc, uint8_t node)
{
	struct cstore_version v;
	memset(&v, 0, sizeof(v));
	v.hlc = hlc;
	v.node[15] = node;
	return v;
}

static void the_newest_answer_wins_and_the_older_ones_are_repaired(void **state)
{
	(void)state;
	struct cstore_version a = ver(10, 1), b = ver(10, 2), c = ver(9, 9);
	assert_true(crepl_read_newer(false, NULL, &c)); /* nothing seen yet */
	assert_true(crepl_read_newer(true, &a, &b));    /* same clock: the node id breaks the tie */
	assert_false(crepl_read_newer(true, &b, &a));
	assert_false(crepl_read_newer(true, &a, &a));
	assert_false(crepl_read_newer(true, &a, &c));
	assert_true(crepl_read_needs_repair(false, NULL, &a)); /* it had nothing */
	assert_true(crepl_read_needs_repair(true, &c, &a));
	assert_false(crepl_read_needs_repair(true, &a, &a));
	assert_false(crepl_read_needs_repair(true, &b, &a)); /* newer than what is sent: no */
}

static void settling_reads_need_every_owner(void **state)
{
	(void)state;
	assert_int_equal(crepl_read_need(3, 1, false, false), 1);
	assert_int_equal(crepl_read_need(3, 1, true, false), 2);
	assert_int_equal(crepl_read_need(3, 1, false, true), 2);
	assert_int_equal(crepl_read_need(5, 2, true, false), 4);
	assert_int_equal(crepl_read_need(1, 0, true, false), 0);
	/* settling: one owner's answer lost is a failure, not an answer from
	 * the others (the primary's own copy vouches for nothing) */
	struct crepl_quorum q;
	uint32_t need = crepl_read_need(3, 1, true, false);
	crepl_quorum_init(&q, need, need);
	crepl_quorum_sent(&q, true);
	crepl_quorum_sent(&q, true);
	crepl_quorum_answer(&q, true);
	crepl_quorum_answer(&q, false);
	assert_int_equal(crepl_quorum_verdict(&q), CREPL_FAIL);
	assert_int_equal(crepl_settle_until(7, 1), 10);
	assert_int_equal(crepl_settle_until(7, 0), 10);
	assert_int_equal(crepl_settle_until(0, 3), 7);
	/* another map heard of: settle as after a change, never shorter */
	assert_int_equal(crepl_settle_on_epoch(0, 5, 1, 111, 222), 8);
	assert_int_equal(crepl_settle_on_epoch(20, 5, 1, 111, 222), 20);
	assert_int_equal(crepl_settle_on_epoch(0, 5, 1, 111, 111), 0);
	assert_int_equal(crepl_settle_on_epoch(0, 5, 1, 111, 0), 0); /* no epoch given */
}

/* ---- the replica side ---- */

static struct cstore *store_new(void)
{
	struct cstore_config sc;
	memset(&sc, 0, sizeof(sc));
	sc.partition_count = P;
	sc.expire_to_tombstone = true;
	struct cstore *st = NULL;
	assert_int_equal(cstore_create(&sc, &st), 0);
	return st;
}

static struct cstore_item item(const char *key, const char *value, struct cstore_version v, uint16_t p)
{
	struct cstore_item it;
	memset(&it, 0, sizeof(it));
	it.key = (const unsigned char *)key;
	it.key_bytes = (uint32_t)strlen(key);
	it.value = (const unsigned char *)value;
	it.value_bytes = value ? (uint32_t)strlen(value) : 0;
	it.tombstone = value == NULL;
	it.version = v;
	it.partition = p;
	return it;
}

static void a_replica_holds_or_refuses_and_says_which(void **state)
{
	(void)state;
	struct cstore *st = store_new();
	struct hlc h;
	hlc_init(&h, CREPL_DRIFT_MS);
	struct cstore_item it = item("k", "v1", ver(hlc_pack(T0, 0), 1), 3);
	assert_int_equal(crepl_apply(&h, st, &it, T0), 0);
	assert_true(crepl_apply_held(0));
	assert_true(hlc_last(&h) > hlc_pack(T0, 0)); /* the clock moved past it */
	/* the same again, or an older one: stale, and still held */
	assert_int_equal(crepl_apply(&h, st, &it, T0), CSTORE_STALE);
	assert_true(crepl_apply_held(CSTORE_STALE));
	/* stamped beyond the drift bound: refused, not held, clock untouched */
	uint64_t last = hlc_last(&h);
	struct cstore_item ahead = item("k", "v2", ver(hlc_pack(T0 + CREPL_DRIFT_MS + 1, 0), 2), 3);
	assert_int_equal(crepl_apply(&h, st, &ahead, T0), ERR_INVALID);
	assert_false(crepl_apply_held(ERR_INVALID));
	assert_false(crepl_apply_held(ERR_NOMEM));
	assert_true(hlc_last(&h) == last);
	/* within the bound: taken */
	struct cstore_item near = item("k", "v3", ver(hlc_pack(T0 + CREPL_DRIFT_MS, 0), 2), 3);
	assert_int_equal(crepl_apply(&h, st, &near, T0), 0);
	struct cstore_item got;
	assert_int_equal(cstore_peek(st, "k", 1, T0, &got), 0);
	assert_memory_equal(got.value, "v3", 2);
	/* an empty key is no entry */
	struct cstore_item empty = item("", "x", ver(hlc_pack(T0, 5), 1), 3);
	assert_int_equal(crepl_apply(&h, st, &empty, T0), ERR_INVALID);
	cstore_destroy(st);
}

/* ---- anti-entropy ---- */

struct world {
	struct cplace_map map;
	uint8_t ids[5][CPLACE_ID_BYTES];
};

static void world_build(struct world *w, uint32_t n)
{
	memset(w, 0, sizeof(*w));
	for (uint32_t i = 0; i < n; i++) {
		memset(w->ids[i], 0x10 * (i + 1), CPLACE_ID_BYTES);
		w->ids[i][15] = (uint8_t)i;
	}
	struct cplace_params params;
	cplace_params_default(&params);
	params.partition_count = P;
	params.owner_count = 3;
	assert_int_equal(cplace_map_build(&w->map, &params, 42, (const uint8_t(*)[CPLACE_ID_BYTES])w->ids, n), 0);
}

/* A partition member `me` does not own, or -1. */
static int foreign_partition(const struct cplace_map *m, uint32_t me)
{
	for (uint32_t p = 0; p < m->partition_count; p++)
		if (cplace_rank(m, (uint16_t)p, me) < 0)
			return (int)p;
	return -1;
}

static uint32_t peer_of(const struct crepl_ae *ae, const uint8_t *id)
{
	for (uint32_t k = 0; k < ae->peer_count; k++)
		if (memcmp(ae->peers[k].id, id, CPLACE_ID_BYTES) == 0)
			return k;
	fail_msg("no peer for that id");
	return 0;
}

static void a_round_offers_what_each_member_owns_and_this_node_has(void **state)
{
	(void)state;
	struct world w;
	world_build(&w, 5);
	int me_i = cplace_member_find(&w.map, w.ids[0]);
	assert_true(me_i >= 0);
	uint32_t me = (uint32_t)me_i;
	struct cstore *st = store_new();
	int fp = foreign_partition(&w.map, me);
	assert_true(fp >= 0);
	struct cstore_item it = item("x", "1", ver(hlc_pack(T0, 0), 9), (uint16_t)fp);
	assert_int_equal(cstore_apply(st, &it, T0), 0);
	struct crepl_ae ae;
	memset(&ae, 0, sizeof(ae));
	assert_int_equal(crepl_ae_plan(&ae, &w.map, w.ids[0], st), 0);
	assert_int_equal(ae.peer_count, 4);
	uint32_t parts[P];
	uint64_t digests[P];
	for (uint32_t k = 0; k < ae.peer_count; k++) {
		uint32_t n = crepl_ae_offer(&ae, k, parts, digests);
		uint32_t peer = ae.peers[k].member;
		for (uint32_t i = 0; i < n; i++) {
			assert_true(cplace_rank(&w.map, (uint16_t)parts[i], peer) >= 0);
			bool mine = cplace_rank(&w.map, (uint16_t)parts[i], me) >= 0;
			assert_true(mine || (int)parts[i] == fp);
			struct cstore_partition_stats ps;
			assert_int_equal(cstore_partition_stats(st, (uint16_t)parts[i], &ps), 0);
			assert_true(digests[i] == ((int)parts[i] == fp ? ps.digest : 0));
		}
	}
	/* the held foreign partition goes to each of its owners */
	for (uint8_t r = 0; r < w.map.owner_count; r++) {
		uint32_t k = peer_of(&ae, cplace_owner_id(&w.map, (uint16_t)fp, r));
		uint32_t n = crepl_ae_offer(&ae, k, parts, digests);
		bool found = false;
		for (uint32_t i = 0; i < n; i++)
			found |= (int)parts[i] == fp;
		assert_true(found);
	}
	/* a node not in the map plans nothing */
	uint8_t stranger[CPLACE_ID_BYTES];
	memset(stranger, 0xee, sizeof(stranger));
	assert_int_equal(crepl_ae_plan(&ae, &w.map, stranger, st), ERR_NOT_FOUND);
	crepl_ae_clear(&ae);
	cstore_destroy(st);
	cplace_map_free(&w.map);
}

static void the_receiver_names_the_partitions_whose_digests_differ(void **state)
{
	(void)state;
	struct cstore *a = store_new(), *b = store_new();
	struct cstore_item x = item("x", "1", ver(100, 1), 4), y = item("y", "2", ver(101, 1), 5);
	assert_int_equal(cstore_apply(a, &x, T0), 0);
	assert_int_equal(cstore_apply(a, &y, T0), 0);
	assert_int_equal(cstore_apply(b, &x, T0), 0);
	uint32_t parts[3] = {4, 5, 6};
	uint64_t digests[3];
	for (int i = 0; i < 3; i++) {
		struct cstore_partition_stats ps;
		assert_int_equal(cstore_partition_stats(a, (uint16_t)parts[i], &ps), 0);
		digests[i] = ps.digest;
	}
	uint32_t differ[3];
	assert_int_equal(crepl_ae_differ(b, P, parts, digests, 3, differ), 1);
	assert_int_equal(differ[0], 5);
	uint32_t bad[2] = {P, 4}; /* out of range: skipped */
	uint64_t bad_digests[2] = {1, digests[0]};
	assert_int_equal(crepl_ae_differ(b, P, bad, bad_digests, 2, differ), 0);
	cstore_destroy(a);
	cstore_destroy(b);
}

/* A node holding a partition it no longer owns, planned, with each owner's
 * peer index. */
struct handover {
	struct world w;
	struct cstore *st;
	struct crepl_ae ae;
	uint32_t fp;
	uint32_t owner_peer[3];
};

static void handover_setup(struct handover *h)
{
	world_build(&h->w, 5);
	h->st = store_new();
	uint32_t me = (uint32_t)cplace_member_find(&h->w.map, h->w.ids[0]);
	int fp = foreign_partition(&h->w.map, me);
	assert_true(fp >= 0);
	h->fp = (uint32_t)fp;
	struct cstore_item it = item("x", "1", ver(hlc_pack(T0, 0), 9), (uint16_t)fp);
	assert_int_equal(cstore_apply(h->st, &it, T0), 0);
	memset(&h->ae, 0, sizeof(h->ae));
	assert_int_equal(crepl_ae_plan(&h->ae, &h->w.map, h->w.ids[0], h->st), 0);
	for (uint8_t r = 0; r < 3; r++)
		h->owner_peer[r] = peer_of(&h->ae, cplace_owner_id(&h->w.map, (uint16_t)fp, r));
}

static void handover_teardown(struct handover *h)
{
	crepl_ae_clear(&h->ae);
	cstore_destroy(h->st);
	cplace_map_free(&h->w.map);
}

static void a_partition_goes_once_every_owner_said_equal(void **state)
{
	(void)state;
	struct handover h;
	handover_setup(&h);
	assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, h.fp)); /* nobody answered yet */
	crepl_ae_answer(&h.ae, h.owner_peer[0], NULL, 0);
	crepl_ae_answer(&h.ae, h.owner_peer[1], NULL, 0);
	assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, h.fp)); /* one owner has not */
	crepl_ae_answer(&h.ae, h.owner_peer[2], NULL, 0);
	assert_true(crepl_ae_droppable(&h.ae, &h.w.map, h.st, h.fp));
	/* never a partition this node owns, nor one it does not hold */
	for (uint32_t p = 0; p < P; p++)
		if (p != h.fp)
			assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, p));
	handover_teardown(&h);
}

static void a_partition_that_changed_during_the_round_stays(void **state)
{
	(void)state;
	struct handover h;
	handover_setup(&h);
	for (int r = 0; r < 3; r++)
		crepl_ae_answer(&h.ae, h.owner_peer[r], NULL, 0);
	/* a primary with an older map sent a write meanwhile */
	struct cstore_item late = item("z", "late", ver(hlc_pack(T0, 7), 3), (uint16_t)h.fp);
	assert_int_equal(cstore_apply(h.st, &late, T0), 0);
	assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, h.fp));
	handover_teardown(&h);
}

static void an_owner_that_differs_counts_once_it_acknowledged_every_push(void **state)
{
	(void)state;
	struct handover h;
	handover_setup(&h);
	uint32_t fp = h.fp;
	crepl_ae_answer(&h.ae, h.owner_peer[0], NULL, 0);
	crepl_ae_answer(&h.ae, h.owner_peer[1], NULL, 0);
	/* the third took new writes since: its digest differs, for ever */
	crepl_ae_answer(&h.ae, h.owner_peer[2], &fp, 1);
	assert_true(crepl_ae_wants(&h.ae, h.owner_peer[2], fp));
	assert_false(crepl_ae_wants(&h.ae, h.owner_peer[0], fp));
	assert_true(crepl_ae_push_any(&h.ae));
	assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, fp)); /* nothing pushed yet */
	crepl_ae_push_sent(&h.ae, h.owner_peer[2], true);
	assert_int_equal(crepl_ae_pushes_out(&h.ae), 1);
	assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, fp)); /* not acknowledged yet */
	crepl_ae_push_done(&h.ae, h.owner_peer[2], true);
	assert_int_equal(crepl_ae_pushes_out(&h.ae), 0);
	assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, fp)); /* the pass is not over */
	crepl_ae_pass_done(&h.ae);
	assert_true(crepl_ae_droppable(&h.ae, &h.w.map, h.st, fp));
	handover_teardown(&h);
}

static void a_push_not_acknowledged_or_not_whole_keeps_the_partition(void **state)
{
	(void)state;
	uint32_t fp;
	for (int variant = 0; variant < 3; variant++) {
		struct handover h;
		handover_setup(&h);
		fp = h.fp;
		crepl_ae_answer(&h.ae, h.owner_peer[0], NULL, 0);
		crepl_ae_answer(&h.ae, h.owner_peer[1], NULL, 0);
		crepl_ae_answer(&h.ae, h.owner_peer[2], &fp, 1);
		if (variant == 0) { /* refused (an error), or timed out */
			crepl_ae_push_sent(&h.ae, h.owner_peer[2], true);
			crepl_ae_push_done(&h.ae, h.owner_peer[2], false);
		} else if (variant == 1) { /* the link was full */
			crepl_ae_push_sent(&h.ae, h.owner_peer[2], false);
		} else { /* a batch was full: part of it waits for the next round */
			crepl_ae_skipped(&h.ae, h.owner_peer[2], fp);
			crepl_ae_push_sent(&h.ae, h.owner_peer[2], true);
			crepl_ae_push_done(&h.ae, h.owner_peer[2], true);
		}
		crepl_ae_pass_done(&h.ae);
		assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, fp));
		handover_teardown(&h);
	}
}

/* A member whose map differs may drop, under its map, what it confirms
 * under ours: it gets everything offered, and confirms nothing. */
static void a_member_with_another_map_is_pushed_to_but_confirms_nothing(void **state)
{
	(void)state;
	struct handover h;
	handover_setup(&h);
	uint32_t fp = h.fp;
	crepl_ae_answer(&h.ae, h.owner_peer[0], NULL, 0);
	crepl_ae_answer(&h.ae, h.owner_peer[1], NULL, 0);
	crepl_ae_answer_other_map(&h.ae, h.owner_peer[2]);
	assert_true(crepl_ae_wants(&h.ae, h.owner_peer[2], fp));
	crepl_ae_push_sent(&h.ae, h.owner_peer[2], true);
	crepl_ae_push_done(&h.ae, h.owner_peer[2], true);
	crepl_ae_pass_done(&h.ae);
	assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, fp)); /* even acknowledged */
	handover_teardown(&h);
}

static void an_answer_about_partitions_not_offered_is_ignored(void **state)
{
	(void)state;
	struct handover h;
	handover_setup(&h);
	uint32_t me = (uint32_t)cplace_member_find(&h.w.map, h.w.ids[0]);
	/* a partition neither this node nor peer 0 has anything to do with */
	uint32_t k = 0, stray = UINT32_MAX;
	uint32_t member = h.ae.peers[k].member;
	for (uint32_t p = 0; p < P && stray == UINT32_MAX; p++)
		if (cplace_rank(&h.w.map, (uint16_t)p, member) < 0 && cplace_rank(&h.w.map, (uint16_t)p, me) < 0)
			stray = p;
	assert_true(stray != UINT32_MAX);
	uint32_t differ[2] = {stray, 1000};
	crepl_ae_answer(&h.ae, k, differ, 2);
	assert_false(crepl_ae_wants(&h.ae, k, stray));
	assert_false(crepl_ae_wants(&h.ae, k, 1000));
	handover_teardown(&h);
}

static void a_new_map_or_an_unsent_offer_keeps_the_partition(void **state)
{
	(void)state;
	struct handover h;
	handover_setup(&h);
	crepl_ae_answer(&h.ae, h.owner_peer[0], NULL, 0);
	crepl_ae_answer(&h.ae, h.owner_peer[1], NULL, 0);
	crepl_ae_unsent(&h.ae, h.owner_peer[2]);
	crepl_ae_answer(&h.ae, h.owner_peer[2], NULL, 0); /* it answered, but was never offered p */
	assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, h.fp));
	handover_teardown(&h);

	handover_setup(&h);
	for (int r = 0; r < 3; r++)
		crepl_ae_answer(&h.ae, h.owner_peer[r], NULL, 0);
	h.w.map.epoch++; /* the map changed during the round */
	assert_false(crepl_ae_droppable(&h.ae, &h.w.map, h.st, h.fp));
	handover_teardown(&h);

	struct crepl_ae empty; /* no round at all */
	memset(&empty, 0, sizeof(empty));
	assert_false(crepl_ae_droppable(&empty, &h.w.map, NULL, 0));
}

/* ---- hints ---- */

static int member_all(void *ctx, const uint8_t *id)
{
	(void)ctx;
	(void)id;
	return 1;
}

static int member_not_b(void *ctx, const uint8_t *id)
{
	(void)ctx;
	return id[0] != 'b';
}

static void hints_go_in_batches_per_member_and_stay_until_delivered(void **state)
{
	(void)state;
	struct crepl_hints q;
	crepl_hints_init(&q, 100, 1 << 20);
	uint8_t a[CPLACE_ID_BYTES], b[CPLACE_ID_BYTES];
	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	assert_int_equal(crepl_hints_add(&q, a, 0, (const uint8_t *)"e1", 2), 0);
	assert_int_equal(crepl_hints_add(&q, b, 0, (const uint8_t *)"e2", 2), 0);
	assert_int_equal(crepl_hints_add(&q, a, 1, (const uint8_t *)"e3", 2), 0);
	assert_int_equal(crepl_hints_add(&q, a, 0, (const uint8_t *)"e4", 2), 0);
	assert_int_equal(crepl_hints_add(&q, a, 0, NULL, 0), ERR_INVALID);
	assert_int_equal(q.count, 4);
	assert_int_equal(q.bytes, 8);
	/* b is not in the map: its hint waits */
	struct crepl_hint *h = crepl_hints_next(&q, NULL, member_not_b, NULL);
	assert_non_null(h);
	assert_memory_equal(h->entry, "e1", 2);
	struct crepl_hint *batch[8];
	uint32_t n = crepl_hints_gather(&q, h, batch, 8);
	assert_int_equal(n, 2); /* e1 and e4: same member, same cache */
	assert_memory_equal(batch[1]->entry, "e4", 2);
	crepl_hints_sent(batch, n);
	struct crepl_hint *h2 = crepl_hints_next(&q, h, member_not_b, NULL);
	assert_non_null(h2);
	assert_memory_equal(h2->entry, "e3", 2); /* e2 is b's, e4 in flight */
	assert_null(crepl_hints_next(&q, h2, member_not_b, NULL));
	/* a failed batch stays and may go again */
	crepl_hints_done(&q, batch, n, false);
	assert_int_equal(q.count, 4);
	h = crepl_hints_next(&q, NULL, member_all, NULL);
	n = crepl_hints_gather(&q, h, batch, 8);
	assert_int_equal(n, 2);
	crepl_hints_sent(batch, n);
	crepl_hints_done(&q, batch, n, true);
	assert_int_equal(q.count, 2);
	assert_int_equal(q.bytes, 4);
	assert_int_equal(q.delivered, 2);
	assert_memory_equal(q.head->entry, "e2", 2);
	assert_memory_equal(q.tail->entry, "e3", 2);
	crepl_hints_clear(&q);
	assert_null(q.head);
	assert_int_equal(q.count, 0);
}

static void hints_beyond_the_limits_drop_the_oldest_not_in_flight(void **state)
{
	(void)state;
	struct crepl_hints q;
	crepl_hints_init(&q, 3, 1 << 20);
	uint8_t a[CPLACE_ID_BYTES];
	memset(a, 'a', sizeof(a));
	const char *e[] = {"h0", "h1", "h2", "h3", "h4"};
	for (int i = 0; i < 3; i++)
		assert_int_equal(crepl_hints_add(&q, a, 0, (const uint8_t *)e[i], 2), 0);
	struct crepl_hint *batch[1] = {q.head};
	crepl_hints_sent(batch, 1); /* h0 in flight */
	assert_int_equal(crepl_hints_add(&q, a, 0, (const uint8_t *)e[3], 2), 0);
	assert_int_equal(q.count, 4); /* the oldest is in flight: it stays for now */
	assert_int_equal(q.dropped, 0);
	crepl_hints_done(&q, batch, 1, false);
	assert_int_equal(crepl_hints_add(&q, a, 0, (const uint8_t *)e[4], 2), 0);
	assert_int_equal(q.count, 3);
	assert_int_equal(q.dropped, 2);
	assert_memory_equal(q.head->entry, "h2", 2);
	/* bytes bound the same way */
	crepl_hints_clear(&q);
	crepl_hints_init(&q, 100, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(crepl_hints_add(&q, a, 0, (const uint8_t *)e[i], 2), 0);
	assert_int_equal(q.count, 2);
	assert_int_equal(q.bytes, 4);
	assert_memory_equal(q.head->entry, "h3", 2);
	crepl_hints_clear(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(replicas_needed_follow_the_consistency),
	    cmocka_unit_test(a_quorum_write_is_done_at_the_first_ack),
	    cmocka_unit_test(a_quorum_write_fails_when_both_replicas_fail),
	    cmocka_unit_test(an_all_write_fails_when_one_acks_and_one_fails),
	    cmocka_unit_test(a_send_failed_at_once_does_not_leave_a_write_waiting),
	    cmocka_unit_test(too_few_sends_fail_at_once),
	    cmocka_unit_test(a_read_hoping_for_more_waits_only_for_those_that_can_answer),
	    cmocka_unit_test(one_copy_is_no_quorum_once_others_were_seen),
	    cmocka_unit_test(the_newest_answer_wins_and_the_older_ones_are_repaired),
	    cmocka_unit_test(settling_reads_need_every_owner),
	    cmocka_unit_test(a_replica_holds_or_refuses_and_says_which),
	    cmocka_unit_test(a_round_offers_what_each_member_owns_and_this_node_has),
	    cmocka_unit_test(the_receiver_names_the_partitions_whose_digests_differ),
	    cmocka_unit_test(a_partition_goes_once_every_owner_said_equal),
	    cmocka_unit_test(a_partition_that_changed_during_the_round_stays),
	    cmocka_unit_test(an_owner_that_differs_counts_once_it_acknowledged_every_push),
	    cmocka_unit_test(a_push_not_acknowledged_or_not_whole_keeps_the_partition),
	    cmocka_unit_test(a_member_with_another_map_is_pushed_to_but_confirms_nothing),
	    cmocka_unit_test(an_answer_about_partitions_not_offered_is_ignored),
	    cmocka_unit_test(a_new_map_or_an_unsent_offer_keeps_the_partition),
	    cmocka_unit_test(hints_go_in_batches_per_member_and_stay_until_delivered),
	    cmocka_unit_test(hints_beyond_the_limits_drop_the_oldest_not_in_flight),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
