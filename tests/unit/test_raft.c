/*
 * test_raft.c - the Raft core's rules one by one, on small in-memory
 * clusters: a harness delivers each node's ready (persist, then send, then
 * apply) and the messages between nodes, with cuts, and advances time by
 * hand. The simulator (tests/sim) runs the same core over many seeds with
 * loss, crashes and partitions; these tests pin single rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/raft.h"
#include "lib/err.h"

#define N_MAX 5
#define QUEUE_MAX 4096
#define ELECTION_MS 100
#define HEARTBEAT_MS 20

struct qmsg {
	struct raft_msg m;
	struct raft_entry *ents; /* deep copies */
	uint8_t *chunk;          /* a copy of a snapshot chunk */
	int to;
};

struct node {
	struct raft *r;
	/* what it persisted */
	struct raft_hard hard;
	struct raft_entry *log;  /* log[k] has index base.index + 1 + k */
	uint32_t n_log, cap_log;
	struct raft_point base;  /* index 0: never compacted */
	struct raft_snapshot snap;
	int n_voters0;
	/* what it applied: data entries' first byte, in order */
	uint8_t applied[1024];
	uint32_t n_applied;
	uint32_t restores;       /* snapshots it restored from */
};

struct cluster {
	int n;
	struct node nodes[N_MAX];
	struct raft_id ids[N_MAX];
	int cut[N_MAX]; /* cut[i]: node i neither sends nor receives */
	uint32_t snap_pad;        /* bytes of filler in each snapshot (to need chunks) */
	int drop_chunks;          /* snapshot chunks still to lose on the way */
	struct qmsg q[QUEUE_MAX];
	int nq;
	uint64_t now_ms;
};

static int index_of(const struct cluster *c, const struct raft_id *id)
{
	for (int i = 0; i < c->n; i++)
		if (raft_id_eq(&c->ids[i], id))
			return i;
	return -1;
}

static void entry_copy(struct raft_entry *dst, const struct raft_entry *src)
{
	*dst = *src;
	dst->data = malloc(src->len ? src->len : 1);
	assert_non_null(dst->data);
	if (src->len)
		memcpy(dst->data, src->data, src->len);
}

static void node_log_free(struct node *nd)
{
	for (uint32_t i = 0; i < nd->n_log; i++)
		free(nd->log[i].data);
	free(nd->log);
	nd->log = NULL;
	nd->n_log = nd->cap_log = 0;
}

static struct raft_point base_of(const struct raft_id *ids, int n)
{
	struct raft_point b;
	memset(&b, 0, sizeof(b));
	b.n_voters = (uint32_t)n;
	memcpy(b.voters, ids, (size_t)n * sizeof(ids[0]));
	return b;
}

/* The harness's state machine as snapshot bytes: a count, the applied
 * bytes, then snap_pad bytes of a pattern (checked on restore). */
static uint8_t *snapshot_bytes(const struct cluster *c, const struct node *nd, uint64_t *len)
{
	*len = 4 + nd->n_applied + c->snap_pad;
	uint8_t *b = malloc(*len);
	assert_non_null(b);
	memcpy(b, &nd->n_applied, 4);
	memcpy(b + 4, nd->applied, nd->n_applied);
	for (uint32_t k = 0; k < c->snap_pad; k++)
		b[4 + nd->n_applied + k] = (uint8_t)(k * 7 + 3);
	return b;
}

static void restore(struct node *nd, const struct raft_snapshot *sn)
{
	assert_true(sn->len >= 4);
	uint32_t n;
	memcpy(&n, sn->data, 4);
	assert_true(n <= sizeof(nd->applied) && 4 + n <= sn->len);
	memcpy(nd->applied, sn->data + 4, n);
	nd->n_applied = n;
	for (uint64_t k = 4 + n; k < sn->len; k++)
		assert_int_equal(sn->data[k], (uint8_t)((k - 4 - n) * 7 + 3));
	nd->restores++;
}

static void disk_snapshot_put(struct node *nd, const struct raft_snapshot *sn)
{
	free(nd->snap.data);
	nd->snap = *sn;
	nd->snap.data = malloc(sn->len ? sn->len : 1);
	assert_non_null(nd->snap.data);
	memcpy(nd->snap.data, sn->data, sn->len);
}

/* the stored log loses every entry up to index */
static void disk_compact(struct node *nd, const struct raft_point *b)
{
	uint32_t drop = 0;
	while (drop < nd->n_log && nd->log[drop].index <= b->index)
		free(nd->log[drop++].data);
	memmove(nd->log, nd->log + drop, (nd->n_log - drop) * sizeof(*nd->log));
	nd->n_log -= drop;
	nd->base = *b;
}

static void node_start(struct cluster *c, int i, int n_voters)
{
	struct node *nd = &c->nodes[i];
	struct raft_config cfg = {c->ids[i], ELECTION_MS, HEARTBEAT_MS, 1000 + (uint64_t)i};
	nd->n_voters0 = n_voters;
	struct raft_point base = nd->base.index ? nd->base : base_of(c->ids, n_voters);
	nd->r = raft_create(&cfg, &nd->hard, &base, nd->snap.at.index ? &nd->snap : NULL, nd->log,
	                    nd->n_log, c->now_ms);
	assert_non_null(nd->r);
	nd->n_applied = 0; /* the state machine is rebuilt from snapshot and log */
	if (nd->snap.at.index)
		restore(nd, &nd->snap);
}

/* Node i snapshots what it applied and compacts, keeping `keep` entries. */
static void compact(struct cluster *c, int i, uint64_t keep)
{
	struct node *nd = &c->nodes[i];
	struct raft_status st;
	raft_status(nd->r, &st);
	uint64_t len;
	uint8_t *data = snapshot_bytes(c, nd, &len);
	struct raft_point b;
	assert_int_equal(raft_snapshot_take(nd->r, st.applied_index, data, len, keep, &b), 0);
	const struct raft_snapshot *sn = raft_snapshot_get(nd->r);
	assert_non_null(sn);
	assert_int_equal(sn->at.index, st.applied_index);
	disk_snapshot_put(nd, sn);
	disk_compact(nd, &b);
}

static void cluster_init(struct cluster *c, int n, int n_voters)
{
	memset(c, 0, sizeof(*c));
	c->n = n;
	for (int i = 0; i < n; i++)
		c->ids[i].b[0] = (uint8_t)(i + 1);
	for (int i = 0; i < n; i++)
		node_start(c, i, n_voters);
}

static void cluster_free(struct cluster *c)
{
	for (int i = 0; i < c->n; i++) {
		raft_destroy(c->nodes[i].r);
		node_log_free(&c->nodes[i]);
		free(c->nodes[i].snap.data);
	}
	for (int k = 0; k < c->nq; k++) {
		for (uint32_t e = 0; e < c->q[k].m.n_entries; e++)
			free(c->q[k].ents[e].data);
		free(c->q[k].ents);
		free(c->q[k].chunk);
	}
}

/* One node's ready: persist, queue its messages, apply, advance. */
static void handle_ready(struct cluster *c, int i)
{
	struct node *nd = &c->nodes[i];
	while (raft_has_ready(nd->r)) {
		struct raft_ready rd;
		raft_ready(nd->r, &rd);
		if (rd.hard_changed)
			nd->hard = rd.hard;
		if (rd.snapshot) {
			disk_snapshot_put(nd, rd.snapshot);
			disk_compact(nd, &rd.snapshot->at);
		}
		if (rd.truncate_from) {
			while (nd->n_log && nd->base.index + nd->n_log >= rd.truncate_from)
				free(nd->log[--nd->n_log].data);
		}
		for (uint32_t k = 0; k < rd.n_append; k++) {
			assert_int_equal(rd.append[k].index, nd->base.index + nd->n_log + 1);
			if (nd->n_log == nd->cap_log) {
				nd->cap_log = nd->cap_log ? nd->cap_log * 2 : 16;
				nd->log = realloc(nd->log, nd->cap_log * sizeof(*nd->log));
				assert_non_null(nd->log);
			}
			entry_copy(&nd->log[nd->n_log++], &rd.append[k]);
		}
		for (uint32_t k = 0; k < rd.n_msgs; k++) {
			int to = index_of(c, &rd.msgs[k].to);
			if (to < 0 || c->cut[i] || c->cut[to])
				continue;
			assert_true(c->nq < QUEUE_MAX);
			struct qmsg *q = &c->q[c->nq++];
			q->m = rd.msgs[k];
			q->to = to;
			q->ents = NULL;
			if (q->m.n_entries) {
				q->ents = calloc(q->m.n_entries, sizeof(*q->ents));
				assert_non_null(q->ents);
				for (uint32_t e = 0; e < q->m.n_entries; e++)
					entry_copy(&q->ents[e], &rd.msgs[k].entries[e]);
			}
			q->m.entries = q->ents;
			q->chunk = NULL;
			if (q->m.type == RAFT_MSG_SNAPSHOT) {
				if (c->drop_chunks > 0) {
					c->drop_chunks--;
					c->nq--;
					continue;
				}
				q->chunk = malloc(q->m.chunk_len ? q->m.chunk_len : 1);
				assert_non_null(q->chunk);
				if (q->m.chunk_len)
					memcpy(q->chunk, rd.msgs[k].chunk, q->m.chunk_len);
				q->m.chunk = q->chunk;
			}
		}
		if (rd.snapshot)
			restore(nd, rd.snapshot);
		for (uint32_t k = 0; k < rd.n_apply; k++)
			if (rd.apply[k].type == RAFT_ENTRY_DATA && nd->n_applied < sizeof(nd->applied))
				nd->applied[nd->n_applied++] = rd.apply[k].len ? rd.apply[k].data[0] : 0;
		raft_advance(nd->r, &rd);
	}
}

/* Delivers everything until no node has anything more to say. */
static void settle(struct cluster *c)
{
	for (int round = 0; round < 1000; round++) {
		for (int i = 0; i < c->n; i++)
			if (c->nodes[i].r)
				handle_ready(c, i);
		if (c->nq == 0)
			return;
		int nq = c->nq;
		struct qmsg *batch = malloc((size_t)nq * sizeof(*batch));
		assert_non_null(batch);
		memcpy(batch, c->q, (size_t)nq * sizeof(*batch));
		c->nq = 0;
		for (int k = 0; k < nq; k++) {
			struct qmsg *q = &batch[k];
			if (c->nodes[q->to].r && !c->cut[q->to])
				(void)raft_step(c->nodes[q->to].r, c->now_ms, &q->m);
			for (uint32_t e = 0; e < q->m.n_entries; e++)
				free(q->ents[e].data);
			free(q->ents);
			free(q->chunk);
		}
		free(batch);
	}
	fail_msg("the cluster never settled");
}

/* Time passes in steps of 5 ms, every message delivered in between. */
static void run_ms(struct cluster *c, uint64_t ms)
{
	uint64_t end = c->now_ms + ms;
	while (c->now_ms < end) {
		c->now_ms += 5;
		for (int i = 0; i < c->n; i++)
			if (c->nodes[i].r)
				raft_tick(c->nodes[i].r, c->now_ms);
		settle(c);
	}
}

static int leader_of(const struct cluster *c, uint64_t *term)
{
	int found = -1;
	for (int i = 0; i < c->n; i++) {
		if (!c->nodes[i].r || c->cut[i])
			continue;
		struct raft_status st;
		raft_status(c->nodes[i].r, &st);
		if (st.role == RAFT_LEADER) {
			found = i;
			if (term)
				*term = st.term;
		}
	}
	return found;
}

static struct raft_status status_of(const struct cluster *c, int i)
{
	struct raft_status st;
	raft_status(c->nodes[i].r, &st);
	return st;
}

/* at most one leader per term, over every pair */
static void assert_one_leader_per_term(const struct cluster *c)
{
	for (int i = 0; i < c->n; i++)
		for (int j = i + 1; j < c->n; j++) {
			if (!c->nodes[i].r || !c->nodes[j].r)
				continue;
			struct raft_status a = status_of(c, i), b = status_of(c, j);
			if (a.role == RAFT_LEADER && b.role == RAFT_LEADER)
				assert_int_not_equal(a.term, b.term);
		}
}

static void propose(struct cluster *c, int leader, uint8_t v)
{
	uint64_t idx = 0;
	assert_int_equal(raft_propose(c->nodes[leader].r, c->now_ms, &v, 1, &idx), 0);
	assert_true(idx > 0);
}

/* ---- tests ---- */

static void a_single_voter_elects_itself_and_commits(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 1, 1);
	run_ms(&c, 3 * ELECTION_MS);
	uint64_t term = 0;
	assert_int_equal(leader_of(&c, &term), 0);
	assert_int_equal(term, 1);
	propose(&c, 0, 7);
	settle(&c);
	struct raft_status st = status_of(&c, 0);
	assert_int_equal(st.commit_index, 2); /* the no-op, then ours */
	assert_int_equal(c.nodes[0].n_applied, 1);
	assert_int_equal(c.nodes[0].applied[0], 7);
	/* term and vote were persisted before anything else */
	assert_int_equal(c.nodes[0].hard.term, 1);
	assert_true(c.nodes[0].hard.has_vote);
	cluster_free(&c);
}

static void three_voters_elect_one_leader_and_replicate(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	run_ms(&c, 5 * ELECTION_MS);
	assert_one_leader_per_term(&c);
	int l = leader_of(&c, NULL);
	assert_true(l >= 0);
	for (uint8_t v = 1; v <= 5; v++)
		propose(&c, l, v);
	run_ms(&c, 2 * HEARTBEAT_MS);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(c.nodes[i].n_applied, 5);
		assert_memory_equal(c.nodes[i].applied, "\1\2\3\4\5", 5);
		assert_int_equal(status_of(&c, i).commit_index, 6);
	}
	cluster_free(&c);
}

static void a_leader_cut_off_in_a_minority_commits_nothing_and_steps_down(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	assert_true(l >= 0);
	uint64_t commit = status_of(&c, l).commit_index;
	c.cut[l] = 1;
	propose(&c, l, 9);
	run_ms(&c, ELECTION_MS / 2);
	assert_int_equal(status_of(&c, l).commit_index, commit);
	/* check-quorum: within two election timeouts it is no leader */
	run_ms(&c, 2 * ELECTION_MS);
	assert_int_not_equal(status_of(&c, l).role, RAFT_LEADER);
	assert_int_equal(status_of(&c, l).commit_index, commit);
	/* the majority elected another and goes on */
	int l2 = leader_of(&c, NULL);
	assert_true(l2 >= 0 && l2 != l);
	propose(&c, l2, 4);
	run_ms(&c, 2 * HEARTBEAT_MS);
	assert_int_equal(c.nodes[l2].applied[c.nodes[l2].n_applied - 1], 4);
	/* healed: the old leader's uncommitted 9 is replaced, never applied */
	c.cut[l] = 0;
	run_ms(&c, 3 * ELECTION_MS);
	assert_one_leader_per_term(&c);
	for (uint32_t k = 0; k < c.nodes[l].n_applied; k++)
		assert_int_not_equal(c.nodes[l].applied[k], 9);
	assert_int_equal(c.nodes[l].applied[c.nodes[l].n_applied - 1], 4);
	cluster_free(&c);
}

static void prevote_keeps_a_returning_node_from_deposing_the_leader(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	run_ms(&c, 5 * ELECTION_MS);
	uint64_t term = 0;
	int l = leader_of(&c, &term);
	assert_true(l >= 0);
	int f = (l + 1) % 3;
	c.cut[f] = 1;
	run_ms(&c, 10 * ELECTION_MS); /* it times out again and again */
	/* without pre-vote its term would have climbed */
	assert_int_equal(status_of(&c, f).term, term);
	c.cut[f] = 0;
	run_ms(&c, 3 * ELECTION_MS);
	uint64_t term2 = 0;
	assert_int_equal(leader_of(&c, &term2), l);
	assert_int_equal(term2, term);
	cluster_free(&c);
}

static void votes_go_once_per_term_and_only_to_up_to_date_logs(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	struct raft *r = c.nodes[0].r;
	/* node 0 has an entry of term 2 in its log */
	raft_destroy(r);
	c.nodes[0].hard.term = 2;
	struct raft_entry e = {2, 1, RAFT_ENTRY_NOOP, 0, NULL};
	struct raft_config cfg = {c.ids[0], ELECTION_MS, HEARTBEAT_MS, 1};
	struct raft_point b3 = base_of(c.ids, 3);
	c.nodes[0].r = r = raft_create(&cfg, &c.nodes[0].hard, &b3, NULL, &e, 1, 0);
	assert_non_null(r);
	/* a candidate of term 3 with an empty log: refused (§5.4.1) */
	struct raft_msg m = {0};
	m.type = RAFT_MSG_VOTE;
	m.from = c.ids[1];
	m.to = c.ids[0];
	m.term = 3;
	assert_int_equal(raft_step(r, 1, &m), 0);
	struct raft_ready rd;
	raft_ready(r, &rd);
	assert_int_equal(rd.n_msgs, 1);
	assert_int_equal(rd.msgs[0].type, RAFT_MSG_VOTE_RESP);
	assert_false(rd.msgs[0].granted);
	assert_int_equal(rd.hard.term, 3); /* the term moved, durable first */
	assert_true(rd.hard_changed);
	raft_advance(r, &rd);
	/* a candidate of term 3 with the same log: granted */
	m.from = c.ids[2];
	m.last_index = 1;
	m.last_term = 2;
	assert_int_equal(raft_step(r, 2, &m), 0);
	raft_ready(r, &rd);
	assert_true(rd.msgs[0].granted);
	assert_true(rd.hard_changed && rd.hard.has_vote);
	raft_advance(r, &rd);
	/* another candidate, same term, same log: refused (one vote a term) */
	m.from = c.ids[1];
	assert_int_equal(raft_step(r, 3, &m), 0);
	raft_ready(r, &rd);
	assert_false(rd.msgs[0].granted);
	raft_advance(r, &rd);
	/* the same candidate asking again (a resend): granted again */
	m.from = c.ids[2];
	assert_int_equal(raft_step(r, 4, &m), 0);
	raft_ready(r, &rd);
	assert_true(rd.msgs[0].granted);
	raft_advance(r, &rd);
	cluster_free(&c);
}

static void a_conflicting_suffix_is_replaced(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 1, 1);
	struct raft *r = c.nodes[0].r;
	/* entries 1-2 of term 1 arrive, then a new leader of term 2 says entry
	 * 2 is its own: entry 2 of term 1 goes, nothing committed is touched */
	struct raft_entry ents[2] = {{1, 1, RAFT_ENTRY_DATA, 1, (uint8_t *)"a"},
	                             {1, 2, RAFT_ENTRY_DATA, 1, (uint8_t *)"b"}};
	struct raft_id leader = {{9}};
	struct raft_msg m = {0};
	m.type = RAFT_MSG_APPEND;
	m.from = leader;
	m.to = c.ids[0];
	m.term = 1;
	m.n_entries = 2;
	m.entries = ents;
	m.commit = 1;
	assert_int_equal(raft_step(r, 1, &m), 0);
	settle(&c);
	assert_int_equal(status_of(&c, 0).last_index, 2);
	assert_int_equal(status_of(&c, 0).commit_index, 1);
	struct raft_entry e2 = {2, 2, RAFT_ENTRY_DATA, 1, (uint8_t *)"c"};
	m.term = 2;
	m.prev_index = 1;
	m.prev_term = 1;
	m.n_entries = 1;
	m.entries = &e2;
	m.commit = 2;
	assert_int_equal(raft_step(r, 2, &m), 0);
	struct raft_ready rd;
	raft_ready(r, &rd);
	assert_int_equal(rd.truncate_from, 2);
	assert_int_equal(rd.n_append, 1);
	assert_int_equal(rd.append[0].term, 2);
	raft_advance(r, &rd);
	assert_int_equal(raft_entry_at(r, 2)->data[0], 'c');
	assert_int_equal(status_of(&c, 0).commit_index, 2);
	/* a leader asking to rewrite a committed entry is refused */
	struct raft_entry bad = {3, 1, RAFT_ENTRY_DATA, 1, (uint8_t *)"x"};
	m.term = 3;
	m.prev_index = 0;
	m.prev_term = 0;
	m.entries = &bad;
	m.commit = 0;
	assert_int_equal(raft_step(r, 3, &m), ERR_PROTOCOL);
	assert_int_equal(raft_entry_at(r, 1)->data[0], 'a');
	cluster_free(&c);
}

static void a_follower_missing_entries_catches_up(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	int f = (l + 1) % 3;
	c.cut[f] = 1;
	for (int v = 0; v < 150; v++) /* more than one append message holds */
		propose(&c, l, (uint8_t)v);
	run_ms(&c, 2 * HEARTBEAT_MS);
	assert_int_equal(c.nodes[l].n_applied, 150);
	c.cut[f] = 0;
	run_ms(&c, 5 * HEARTBEAT_MS);
	assert_int_equal(c.nodes[f].n_applied, 150);
	assert_memory_equal(c.nodes[f].applied, c.nodes[l].applied, 150);
	cluster_free(&c);
}

static void a_restarted_node_keeps_its_term_vote_and_log(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	propose(&c, l, 1);
	propose(&c, l, 2);
	run_ms(&c, 2 * HEARTBEAT_MS);
	for (int i = 0; i < 3; i++) {
		struct raft_status before = status_of(&c, i);
		raft_destroy(c.nodes[i].r);
		node_start(&c, i, 3);
		struct raft_status after = status_of(&c, i);
		assert_int_equal(after.term, before.term);
		assert_int_equal(after.last_index, before.last_index);
		assert_int_equal(after.role, RAFT_FOLLOWER);
	}
	run_ms(&c, 5 * ELECTION_MS);
	int l2 = leader_of(&c, NULL);
	assert_true(l2 >= 0);
	/* a new leader commits the old entries through its no-op; each node
	 * applies them again from its log (the state machine is rebuilt) */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(c.nodes[i].n_applied, 2);
		assert_memory_equal(c.nodes[i].applied, "\1\2", 2);
	}
	cluster_free(&c);
}

static void voters_change_one_at_a_time(void **state)
{
	(void)state;
	struct cluster c;
	/* 4 nodes, 3 voters: node 3 starts as a non-voter */
	cluster_init(&c, 4, 3);
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	assert_true(l >= 0 && l < 3);
	uint64_t idx = 0;
	struct raft *lr = c.nodes[l].r;
	/* already a voter: refused */
	assert_int_equal(raft_change_voter(lr, c.now_ms, &c.ids[(l + 1) % 3], 1, &idx), ERR_INVALID);
	assert_int_equal(raft_change_voter(lr, c.now_ms, &c.ids[3], 1, &idx), 0);
	/* a second change before the first is committed: refused */
	assert_int_equal(raft_change_voter(lr, c.now_ms, &c.ids[(l + 1) % 3], 0, &idx), ERR_FULL);
	run_ms(&c, 3 * HEARTBEAT_MS);
	assert_int_equal(status_of(&c, l).voter_count, 4);
	assert_int_equal(status_of(&c, 3).voter_count, 4);
	/* now remove one: allowed */
	int gone = (l + 1) % 3;
	assert_int_equal(raft_change_voter(lr, c.now_ms, &c.ids[gone], 0, &idx), 0);
	run_ms(&c, 3 * HEARTBEAT_MS);
	assert_int_equal(status_of(&c, l).voter_count, 3);
	/* the new set commits without the removed node */
	c.cut[gone] = 1;
	propose(&c, l, 5);
	run_ms(&c, 3 * HEARTBEAT_MS);
	assert_int_equal(c.nodes[3].applied[c.nodes[3].n_applied - 1], 5);
	/* not the leader: refused */
	int other = (l + 2) % 3 == gone ? 3 : (l + 2) % 3;
	assert_int_equal(raft_change_voter(c.nodes[other].r, c.now_ms, &c.ids[gone], 1, &idx),
	                 ERR_DENIED);
	assert_int_equal(raft_propose(c.nodes[other].r, c.now_ms, "x", 1, &idx), ERR_DENIED);
	cluster_free(&c);
}

static void drop_queue(struct cluster *c)
{
	for (int k = 0; k < c->nq; k++) {
		for (uint32_t e = 0; e < c->q[k].m.n_entries; e++)
			free(c->q[k].ents[e].data);
		free(c->q[k].ents);
	}
	c->nq = 0;
}

/* Feeds node 0 a message from node `from` and runs its ready. */
static void feed(struct cluster *c, int from, struct raft_msg m)
{
	m.from = c->ids[from];
	m.to = c->ids[0];
	assert_int_equal(raft_step(c->nodes[0].r, c->now_ms, &m), 0);
	handle_ready(c, 0);
	drop_queue(c); /* what it sent is not delivered */
}

static void only_entries_of_the_current_term_commit_by_counting(void **state)
{
	(void)state;
	/* Raft §5.4.2 (Figure 8): node 0 holds index 2 from term 2, never
	 * committed; it leads term 3. A majority holding index 2 does not
	 * commit it; a majority holding the term-3 no-op at index 3 does. */
	struct cluster c;
	cluster_init(&c, 3, 3);
	raft_destroy(c.nodes[0].r);
	struct raft_entry ents[2] = {{1, 1, RAFT_ENTRY_DATA, 1, (uint8_t *)"a"},
	                             {2, 2, RAFT_ENTRY_DATA, 1, (uint8_t *)"b"}};
	c.nodes[0].r = NULL;
	c.nodes[0].hard.term = 2;
	c.nodes[0].cap_log = 16;
	c.nodes[0].log = calloc(16, sizeof(struct raft_entry));
	assert_non_null(c.nodes[0].log);
	for (int k = 0; k < 2; k++)
		entry_copy(&c.nodes[0].log[c.nodes[0].n_log++], &ents[k]);
	node_start(&c, 0, 3);
	c.now_ms = 3 * ELECTION_MS;
	raft_tick(c.nodes[0].r, c.now_ms); /* pre-vote */
	handle_ready(&c, 0);
	drop_queue(&c);
	struct raft_msg m = {0};
	m.type = RAFT_MSG_PREVOTE_RESP;
	m.term = 3;
	m.granted = 1;
	feed(&c, 1, m);
	m.type = RAFT_MSG_VOTE_RESP;
	feed(&c, 1, m);
	struct raft_status st = status_of(&c, 0);
	assert_int_equal(st.role, RAFT_LEADER);
	assert_int_equal(st.term, 3);
	assert_int_equal(st.last_index, 3); /* its no-op */
	m.type = RAFT_MSG_APPEND_RESP;
	m.success = 1;
	m.match_index = 2;
	feed(&c, 1, m);
	assert_int_equal(status_of(&c, 0).commit_index, 0);
	m.match_index = 3;
	feed(&c, 1, m);
	assert_int_equal(status_of(&c, 0).commit_index, 3);
	cluster_free(&c);
}

static void learners_follow_the_log_without_voting(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 4, 3); /* node 3 is no voter */
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	assert_true(l >= 0 && l < 3);
	assert_false(status_of(&c, 3).has_leader); /* nobody talks to it yet */
	uint64_t match, ago;
	assert_int_equal(raft_learner_progress(c.nodes[l].r, &c.ids[3], &match, &ago), ERR_NOT_FOUND);
	raft_set_learners(c.nodes[l].r, &c.ids[3], 1);
	assert_int_equal(raft_learner_progress(c.nodes[l].r, &c.ids[3], &match, &ago), 0);
	assert_int_equal(match, 0); /* not heard yet: not caught up */
	propose(&c, l, 42);
	run_ms(&c, 3 * HEARTBEAT_MS);
	/* the leader sees it caught up, heard within a heartbeat */
	assert_int_equal(raft_learner_progress(c.nodes[l].r, &c.ids[3], &match, &ago), 0);
	assert_int_equal(match, status_of(&c, l).commit_index);
	assert_true(ago <= HEARTBEAT_MS);
	assert_int_equal(raft_learner_progress(c.nodes[(l + 1) % 3].r, &c.ids[3], &match, &ago),
	                 ERR_NOT_FOUND); /* only the leader knows */
	struct raft_status st = status_of(&c, 3);
	assert_true(st.has_leader);
	assert_true(raft_id_eq(&st.leader, &c.ids[l]));
	assert_int_equal(st.commit_index, status_of(&c, l).commit_index);
	assert_int_equal(c.nodes[3].applied[c.nodes[3].n_applied - 1], 42);
	assert_int_equal(st.voter_count, 3);
	/* it never counts: with the other two voters cut off, nothing commits */
	int a = (l + 1) % 3, b = (l + 2) % 3;
	c.cut[a] = c.cut[b] = 1;
	uint64_t commit = status_of(&c, l).commit_index;
	propose(&c, l, 43);
	run_ms(&c, ELECTION_MS / 2);
	assert_int_equal(status_of(&c, l).commit_index, commit);
	/* and it never campaigns */
	run_ms(&c, 10 * ELECTION_MS);
	assert_int_not_equal(status_of(&c, 3).role, RAFT_LEADER);
	assert_int_not_equal(status_of(&c, 3).role, RAFT_CANDIDATE);
	cluster_free(&c);
}

static void malformed_messages_are_refused(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 1, 1);
	struct raft *r = c.nodes[0].r;
	struct raft_msg m = {0};
	m.type = RAFT_MSG_APPEND;
	m.from = c.ids[0]; /* from itself */
	m.to = c.ids[0];
	assert_int_equal(raft_step(r, 1, &m), ERR_PROTOCOL);
	m.from.b[0] = 9;
	m.to.b[0] = 8; /* not for it */
	assert_int_equal(raft_step(r, 1, &m), ERR_PROTOCOL);
	m.to = c.ids[0];
	m.type = 77;
	assert_int_equal(raft_step(r, 1, &m), ERR_PROTOCOL);
	m.type = RAFT_MSG_APPEND;
	m.term = 1;
	m.n_entries = RAFT_APPEND_ENTRIES_MAX + 1;
	struct raft_entry e = {1, 1, RAFT_ENTRY_DATA, 0, NULL};
	m.entries = &e;
	assert_int_equal(raft_step(r, 1, &m), ERR_PROTOCOL);
	m.n_entries = 1;
	e.term = 5; /* an entry of a later term than its leader's */
	assert_int_equal(raft_step(r, 1, &m), ERR_PROTOCOL);
	e.term = 1;
	e.type = RAFT_ENTRY_CONFIG;
	e.len = 3; /* not a whole number of ids */
	e.data = (uint8_t *)"abc";
	assert_int_equal(raft_step(r, 1, &m), ERR_PROTOCOL);
	e.len = RAFT_ENTRY_BYTES_MAX + 1;
	e.type = RAFT_ENTRY_DATA;
	assert_int_equal(raft_step(r, 1, &m), ERR_PROTOCOL);
	e.len = 1;
	m.term = UINT64_MAX; /* would wrap the term */
	assert_int_equal(raft_step(r, 1, &m), ERR_PROTOCOL);
	m.term = 1;
	uint8_t twice[2 * RAFT_ID_BYTES] = {7};
	twice[RAFT_ID_BYTES] = 7; /* the same id twice */
	e.type = RAFT_ENTRY_CONFIG;
	e.data = twice;
	e.len = sizeof(twice);
	assert_int_equal(raft_step(r, 1, &m), ERR_PROTOCOL);
	uint8_t zero[RAFT_ID_BYTES] = {0};
	e.data = zero;
	e.len = sizeof(zero);
	assert_int_equal(raft_step(r, 1, &m), ERR_PROTOCOL);
	e.type = RAFT_ENTRY_DATA;
	/* nothing of it was taken */
	assert_int_equal(status_of(&c, 0).last_index, 0);
	assert_int_equal(status_of(&c, 0).term, 0);
	/* bad creation input */
	struct raft_config cfg = {c.ids[0], ELECTION_MS, ELECTION_MS, 1};
	struct raft_point b1 = base_of(c.ids, 1);
	assert_null(raft_create(&cfg, NULL, &b1, NULL, NULL, 0, 0)); /* heartbeat >= election */
	cfg.heartbeat_ms = HEARTBEAT_MS;
	struct raft_entry gap = {0, 2, RAFT_ENTRY_NOOP, 0, NULL};
	assert_null(raft_create(&cfg, NULL, &b1, NULL, &gap, 1, 0)); /* index 2 first */
	cluster_free(&c);
}

/* Compaction keeps a cluster going: entries before the base are gone from
 * memory and disk, proposals go on, and a restart rebuilds the state from
 * the snapshot and the entries after it. */
static void compaction_keeps_state_across_restarts(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	assert_true(l >= 0);
	for (uint8_t v = 1; v <= 40; v++)
		propose(&c, l, v);
	run_ms(&c, 2 * HEARTBEAT_MS);
	for (int i = 0; i < 3; i++)
		compact(&c, i, 5);
	struct raft_status st = status_of(&c, l);
	assert_int_equal(st.snapshot_index, st.applied_index);
	assert_int_equal(st.first_index, st.applied_index - 5 + 1);
	assert_null(raft_entry_at(c.nodes[l].r, st.first_index - 1));
	assert_non_null(raft_entry_at(c.nodes[l].r, st.first_index));
	for (uint8_t v = 41; v <= 50; v++)
		propose(&c, l, v);
	run_ms(&c, 2 * HEARTBEAT_MS);
	for (int i = 0; i < 3; i++) {
		struct raft_status before = status_of(&c, i);
		raft_destroy(c.nodes[i].r);
		node_start(&c, i, 3);
		struct raft_status after = status_of(&c, i);
		assert_int_equal(after.last_index, before.last_index);
		assert_int_equal(after.snapshot_index, before.snapshot_index);
		assert_int_equal(after.first_index, before.first_index);
	}
	run_ms(&c, 5 * ELECTION_MS);
	l = leader_of(&c, NULL);
	assert_true(l >= 0);
	propose(&c, l, 51);
	run_ms(&c, 2 * HEARTBEAT_MS);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(c.nodes[i].n_applied, 51);
		for (uint32_t k = 0; k < 51; k++)
			assert_int_equal(c.nodes[i].applied[k], k + 1);
		assert_true(c.nodes[i].restores >= 1);
	}
	cluster_free(&c);
}

/* A follower that misses entries the leader compacted gets the snapshot,
 * in chunks (some lost on the way and sent again), and goes on from it. */
static void a_follower_behind_the_base_gets_the_snapshot_in_chunks(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	c.snap_pad = 5 * RAFT_SNAPSHOT_CHUNK_BYTES / 2; /* three chunks */
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	int f = (l + 1) % 3;
	c.cut[f] = 1;
	for (uint8_t v = 1; v <= 60; v++)
		propose(&c, l, v);
	run_ms(&c, 2 * HEARTBEAT_MS);
	compact(&c, l, 3);
	assert_true(status_of(&c, l).first_index > status_of(&c, f).last_index + 1);
	c.drop_chunks = 2;
	c.cut[f] = 0;
	run_ms(&c, 4 * ELECTION_MS);
	assert_int_equal(leader_of(&c, NULL), l); /* the transfer deposed nobody */
	assert_int_equal(c.drop_chunks, 0);
	struct raft_status fs = status_of(&c, f);
	assert_int_equal(fs.snapshot_index, status_of(&c, l).snapshot_index);
	assert_int_equal(c.nodes[f].restores, 1);
	assert_int_equal(c.nodes[f].base.index, fs.snapshot_index);
	assert_int_equal(c.nodes[f].snap.len, 4 + 60 + c.snap_pad);
	propose(&c, l, 61);
	run_ms(&c, 2 * HEARTBEAT_MS);
	assert_int_equal(c.nodes[f].n_applied, 61);
	for (uint32_t k = 0; k < 61; k++)
		assert_int_equal(c.nodes[f].applied[k], k + 1);
	assert_int_equal(status_of(&c, f).commit_index, status_of(&c, l).commit_index);
	/* and it restarts from what it stored */
	raft_destroy(c.nodes[f].r);
	node_start(&c, f, 3);
	run_ms(&c, 3 * ELECTION_MS);
	assert_int_equal(c.nodes[f].n_applied, 61);
	cluster_free(&c);
}

/* A former leader with entries nobody else has: the snapshot from the new
 * leader replaces its whole log, and what it never committed is never
 * applied. */
static void a_snapshot_replaces_a_conflicting_log(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	propose(&c, l, 1);
	run_ms(&c, 2 * HEARTBEAT_MS);
	c.cut[l] = 1;
	propose(&c, l, 99);
	propose(&c, l, 98);
	run_ms(&c, 3 * ELECTION_MS);
	int l2 = leader_of(&c, NULL);
	assert_true(l2 >= 0 && l2 != l);
	for (uint8_t v = 2; v <= 30; v++)
		propose(&c, l2, v);
	run_ms(&c, 2 * HEARTBEAT_MS);
	compact(&c, l2, 0);
	c.cut[l] = 0;
	run_ms(&c, 4 * ELECTION_MS);
	assert_int_equal(c.nodes[l].restores, 1);
	assert_int_equal(c.nodes[l].n_applied, 30);
	for (uint32_t k = 0; k < 30; k++)
		assert_int_equal(c.nodes[l].applied[k], k + 1);
	/* its disk holds no entry from before the snapshot, nor 99/98 */
	for (uint32_t k = 0; k < c.nodes[l].n_log; k++)
		assert_true(c.nodes[l].log[k].index > c.nodes[l].base.index);
	assert_int_equal(status_of(&c, l).last_index, status_of(&c, l2).last_index);
	cluster_free(&c);
}

static void snapshot_take_and_snapshot_messages_are_checked(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	propose(&c, l, 1);
	run_ms(&c, 2 * HEARTBEAT_MS);
	struct raft *r = c.nodes[l].r;
	struct raft_status st = status_of(&c, l);
	struct raft_point b;
	assert_int_equal(raft_snapshot_take(r, st.applied_index + 1, malloc(1), 1, 0, &b), ERR_INVALID);
	assert_int_equal(raft_snapshot_take(r, 0, malloc(1), 1, 0, &b), ERR_INVALID);
	assert_int_equal(raft_snapshot_take(r, 1, malloc(1), RAFT_SNAPSHOT_BYTES_MAX + 1, 0, &b),
	                 ERR_TOO_LARGE);
	compact(&c, l, 0);
	/* not again at the same index */
	assert_int_equal(raft_snapshot_take(r, st.applied_index, malloc(1), 1, 0, &b), ERR_INVALID);
	assert_null(raft_snapshot_get(c.nodes[(l + 1) % 3].r));

	/* malformed chunks change nothing */
	int f = (l + 1) % 3;
	struct raft_status before = status_of(&c, f);
	uint8_t chunk[8] = {0};
	struct raft_msg m;
	memset(&m, 0, sizeof(m));
	m.type = RAFT_MSG_SNAPSHOT;
	m.from = c.ids[l];
	m.to = c.ids[f];
	m.term = st.term;
	m.snap.index = 500;
	m.snap.term = st.term;
	m.snap.n_voters = 1;
	m.snap.voters[0] = c.ids[0];
	m.snap_total = 8;
	m.chunk = chunk;
	m.chunk_len = 9; /* beyond the total */
	assert_int_equal(raft_step(c.nodes[f].r, c.now_ms, &m), ERR_PROTOCOL);
	m.chunk_len = 8;
	m.snap_offset = 1; /* chunk runs past the end */
	assert_int_equal(raft_step(c.nodes[f].r, c.now_ms, &m), ERR_PROTOCOL);
	m.snap_offset = 0;
	m.snap.n_voters = 0; /* no voters */
	assert_int_equal(raft_step(c.nodes[f].r, c.now_ms, &m), ERR_PROTOCOL);
	m.snap.n_voters = 2;
	m.snap.voters[1] = c.ids[0]; /* twice */
	assert_int_equal(raft_step(c.nodes[f].r, c.now_ms, &m), ERR_PROTOCOL);
	m.snap.n_voters = 1;
	m.snap.term = st.term + 1; /* a term above the message's */
	assert_int_equal(raft_step(c.nodes[f].r, c.now_ms, &m), ERR_PROTOCOL);
	m.snap.term = st.term;
	m.snap_total = RAFT_SNAPSHOT_BYTES_MAX + 1;
	assert_int_equal(raft_step(c.nodes[f].r, c.now_ms, &m), ERR_PROTOCOL);
	struct raft_status after = status_of(&c, f);
	assert_int_equal(after.snapshot_index, before.snapshot_index);
	assert_int_equal(after.commit_index, before.commit_index);

	/* creation refuses a snapshot outside the log */
	struct raft_config cfg = {c.ids[0], ELECTION_MS, HEARTBEAT_MS, 1};
	struct raft_point base = base_of(c.ids, 3);
	struct raft_snapshot sn = {.at = base_of(c.ids, 3), .data = chunk, .len = 8};
	sn.at.index = 5;
	sn.at.term = 1;
	struct raft_hard hard = {.term = 1};
	assert_null(raft_create(&cfg, &hard, &base, &sn, NULL, 0, 0)); /* beyond an empty log */
	base.index = 5;
	base.term = 1;
	assert_null(raft_create(&cfg, &hard, &base, NULL, NULL, 0, 0)); /* a base needs a snapshot */
	struct raft *ok = raft_create(&cfg, &hard, &base, &sn, NULL, 0, 0);
	assert_non_null(ok);
	assert_int_equal(raft_snapshot_get(ok)->at.index, 5);
	raft_status(ok, &st);
	assert_int_equal(st.commit_index, 5);
	assert_int_equal(st.applied_index, 5);
	assert_int_equal(st.last_index, 5);
	raft_destroy(ok);
	cluster_free(&c);
}

/* The voter set rides in the snapshot and the base: compacted past a
 * config entry, a restarted node and a follower installing the snapshot
 * both know the set it made. */
static void voters_survive_compaction(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 4, 3);
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	assert_true(l >= 0 && l < 3);
	c.cut[3] = 1; /* the new voter misses all of it, and needs the snapshot */
	uint64_t idx;
	assert_int_equal(raft_change_voter(c.nodes[l].r, c.now_ms, &c.ids[3], 1, &idx), 0);
	c.cut[3] = 0;
	run_ms(&c, 3 * HEARTBEAT_MS);
	c.cut[3] = 1;
	for (uint8_t v = 1; v <= 20; v++)
		propose(&c, l, v);
	run_ms(&c, 3 * HEARTBEAT_MS);
	for (int i = 0; i < 3; i++)
		compact(&c, i, 0);
	assert_true(status_of(&c, l).first_index > idx); /* the config entry is gone */
	for (int i = 0; i < 3; i++) {
		raft_destroy(c.nodes[i].r);
		node_start(&c, i, 3);
		assert_int_equal(status_of(&c, i).voter_count, 4);
	}
	c.cut[3] = 0;
	run_ms(&c, 8 * ELECTION_MS);
	l = leader_of(&c, NULL);
	assert_true(l >= 0);
	propose(&c, l, 21);
	run_ms(&c, 3 * HEARTBEAT_MS);
	assert_int_equal(status_of(&c, 3).voter_count, 4);
	assert_int_equal(c.nodes[3].n_applied, 21);
	cluster_free(&c);
}

/* A snapshot's last entry already in the follower's log with its term: the
 * entries after it stay (§7); with another term, the whole log goes. */
static void an_install_keeps_a_matching_suffix_only(void **state)
{
	(void)state;
	struct raft_id ids[3] = {{{1}}, {{2}}, {{3}}};
	for (int mismatch = 0; mismatch <= 1; mismatch++) {
		struct raft_entry log[5];
		uint8_t b[5];
		for (int i = 0; i < 5; i++) {
			b[i] = (uint8_t)(i + 1);
			log[i] = (struct raft_entry){1, (uint64_t)i + 1, RAFT_ENTRY_DATA, 1, &b[i]};
		}
		struct raft_hard hard = {.term = 2};
		struct raft_point base = base_of(ids, 3);
		struct raft_config cfg = {ids[1], ELECTION_MS, HEARTBEAT_MS, 1};
		struct raft *r = raft_create(&cfg, &hard, &base, NULL, log, 5, 0);
		assert_non_null(r);
		uint8_t data[8] = {3, 0, 0, 0, 1, 2, 3, 0};
		struct raft_msg m;
		memset(&m, 0, sizeof(m));
		m.type = RAFT_MSG_SNAPSHOT;
		m.from = ids[0];
		m.to = ids[1];
		m.term = 2;
		m.snap = base_of(ids, 3);
		m.snap.index = 3;
		m.snap.term = mismatch ? 2 : 1;
		m.snap_total = 7;
		m.chunk = data;
		m.chunk_len = 7;
		assert_int_equal(raft_step(r, 10, &m), 0);
		struct raft_ready rd;
		raft_ready(r, &rd);
		assert_non_null(rd.snapshot);
		assert_int_equal(rd.snapshot->at.index, 3);
		struct raft_status st;
		raft_status(r, &st);
		assert_int_equal(st.first_index, 4);
		assert_int_equal(st.commit_index, 3);
		if (mismatch) {
			assert_int_equal(rd.truncate_from, 4); /* 4 and 5 go too */
			assert_int_equal(st.last_index, 3);
		} else {
			assert_int_equal(rd.truncate_from, 0); /* 4 and 5 stay */
			assert_int_equal(st.last_index, 5);
			assert_int_equal(raft_entry_at(r, 5)->data[0], 5);
		}
		/* acknowledged as installed, at the snapshot's index */
		int acked = 0;
		for (uint32_t k = 0; k < rd.n_msgs; k++)
			acked |= rd.msgs[k].type == RAFT_MSG_SNAPSHOT_RESP && rd.msgs[k].success &&
			         rd.msgs[k].match_index == 3;
		assert_true(acked);
		raft_advance(r, &rd);
		raft_destroy(r);
	}
}

/* While a follower fetches the snapshot, the leader does not replace it
 * (the transfer would start over); once it is installed, it may. */
static void a_transfer_in_progress_holds_compaction(void **state)
{
	(void)state;
	struct cluster c;
	cluster_init(&c, 3, 3);
	c.snap_pad = 3 * RAFT_SNAPSHOT_CHUNK_BYTES; /* four chunks */
	run_ms(&c, 5 * ELECTION_MS);
	int l = leader_of(&c, NULL);
	int f = (l + 1) % 3;
	c.cut[f] = 1;
	for (uint8_t v = 1; v <= 30; v++)
		propose(&c, l, v);
	run_ms(&c, 3 * HEARTBEAT_MS);
	compact(&c, l, 0);
	/* one chunk goes, then the link drops every further one */
	c.cut[f] = 0;
	c.drop_chunks = 1000000;
	run_ms(&c, HEARTBEAT_MS);
	propose(&c, l, 31);
	run_ms(&c, HEARTBEAT_MS);
	struct raft_status st = status_of(&c, l);
	uint64_t len;
	uint8_t *data = snapshot_bytes(&c, &c.nodes[l], &len);
	struct raft_point b;
	assert_int_equal(raft_snapshot_take(c.nodes[l].r, st.applied_index, data, len, 0, &b),
	                 ERR_BUSY);
	/* the transfer ends: compaction goes on */
	c.drop_chunks = 0;
	run_ms(&c, 4 * ELECTION_MS);
	assert_int_equal(c.nodes[f].restores, 1);
	compact(&c, l, 0);
	cluster_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(a_single_voter_elects_itself_and_commits),
	    cmocka_unit_test(three_voters_elect_one_leader_and_replicate),
	    cmocka_unit_test(a_leader_cut_off_in_a_minority_commits_nothing_and_steps_down),
	    cmocka_unit_test(prevote_keeps_a_returning_node_from_deposing_the_leader),
	    cmocka_unit_test(votes_go_once_per_term_and_only_to_up_to_date_logs),
	    cmocka_unit_test(a_conflicting_suffix_is_replaced),
	    cmocka_unit_test(a_follower_missing_entries_catches_up),
	    cmocka_unit_test(a_restarted_node_keeps_its_term_vote_and_log),
	    cmocka_unit_test(voters_change_one_at_a_time),
	    cmocka_unit_test(only_entries_of_the_current_term_commit_by_counting),
	    cmocka_unit_test(learners_follow_the_log_without_voting),
	    cmocka_unit_test(malformed_messages_are_refused),
	    cmocka_unit_test(compaction_keeps_state_across_restarts),
	    cmocka_unit_test(a_follower_behind_the_base_gets_the_snapshot_in_chunks),
	    cmocka_unit_test(a_snapshot_replaces_a_conflicting_log),
	    cmocka_unit_test(snapshot_take_and_snapshot_messages_are_checked),
	    cmocka_unit_test(voters_survive_compaction),
	    cmocka_unit_test(an_install_keeps_a_matching_suffix_only),
	    cmocka_unit_test(a_transfer_in_progress_holds_compaction),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
