/*
 * driver_raft.c - see driver_raft.h. The node's loop, in miniature: a
 * ready is persisted (pending until its fsync is durable), then its
 * messages are sent, its committed entries applied, and the core advanced;
 * messages that arrive meanwhile wait in a bounded inbox.
 */
#include "driver_raft.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/raft_codec.h"
#include "codec/sched_codec.h"
#include "core/sched.h"
#include "lib/err.h"

struct inbox_msg {
	uint32_t from;
	uint8_t *bytes;
	size_t len;
};

struct rnode {
	struct raft_world *w;
	uint32_t node;
	struct raft *r;
	int waiting;
	uint64_t sync_id;
	struct raft_ready rd;
	/* what the held ready asked to persist */
	int hard_changed;
	struct raft_hard hard;
	uint64_t truncate_from;
	struct raft_entry *app;
	uint32_t n_app;
	struct raft_snapshot psnap; /* a snapshot from the leader, to persist */
	uint64_t digest;            /* the state machine: a fold of what it applied */
	struct sched *sched;       /* schedule mode: this node's state machine */
	int was_leader;
	struct inbox_msg inbox[RAFT_SIM_INBOX_MAX];
	uint32_t in_head, in_count;
	uint64_t dropped;
};

static uint64_t mono(const struct rnode *rn)
{
	return sim_node_clock(rn->w->sim, rn->node).mono_ms;
}

static uint32_t node_of(const struct raft_world *w, const struct raft_id *id)
{
	for (uint32_t i = 0; i < w->n; i++)
		if (raft_id_eq(&w->ids[i], id))
			return i;
	return SIM_NONE;
}

static int grow(void **p, uint64_t *cap, uint64_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	uint64_t c = *cap ? *cap : 64;
	while (c < need)
		c *= 2;
	void *q = realloc(*p, (size_t)c * elem);
	if (!q)
		return -1;
	memset((char *)q + *cap * elem, 0, (size_t)(c - *cap) * elem);
	*p = q;
	*cap = c;
	return 0;
}

static void entry_copy(struct raft_entry *dst, const struct raft_entry *src)
{
	*dst = *src;
	dst->data = malloc(src->len ? src->len : 1);
	if (!dst->data)
		abort();
	if (src->len)
		memcpy(dst->data, src->data, src->len);
}

static uint64_t fold(uint64_t digest, const struct raft_entry *e, uint32_t value)
{
	uint64_t x = digest ^ (value + e->term * 31u + e->index * 1000003u);
	return x * 1099511628211ull;
}

static void snapshot_free(struct raft_snapshot *sn)
{
	free(sn->data);
	memset(sn, 0, sizeof(*sn));
}

static void snapshot_copy(struct raft_snapshot *dst, const struct raft_snapshot *src)
{
	*dst = *src;
	dst->data = malloc(src->len ? src->len : 1);
	if (!dst->data)
		abort();
	if (src->len)
		memcpy(dst->data, src->data, src->len);
}

/* ---- invariants, checked where they can break ---- */

static void check_leader(struct rnode *rn)
{
	struct raft_world *w = rn->w;
	struct raft_status st;
	raft_status(rn->r, &st);
	if (st.role != RAFT_LEADER)
		return;
	uint64_t cap = w->terms_cap;
	if (grow((void **)&w->leader_of, &cap, st.term + 1, sizeof(uint32_t)) != 0)
		abort();
	w->terms_cap = cap;
	if (w->leader_of[st.term] == 0) {
		w->leader_of[st.term] = rn->node + 1;
		w->elections++;
	} else if (w->leader_of[st.term] != rn->node + 1) {
		sim_fail(w->sim, "election safety: nodes %u and %u both led term %" PRIu64,
		         w->leader_of[st.term] - 1, rn->node, st.term);
	}
}

static uint32_t entry_value(const struct raft_entry *e)
{
	uint32_t v = 0;
	if (e->type == RAFT_ENTRY_DATA && e->len == 4) {
		memcpy(&v, e->data, 4);
	} else if (e->type == RAFT_ENTRY_DATA) {
		v = 2166136261u;
		for (uint32_t i = 0; i < e->len; i++)
			v = (v ^ e->data[i]) * 16777619u;
	}
	return v;
}

/* Schedule mode: the first application of each index is the truth; an
 * occurrence fired twice, or decided twice, is the bug this looks for. */
static void sched_truth(struct raft_world *w, const struct sched_cmd *c)
{
	int64_t from = c->op == SCHED_OP_SKIP ? c->from_s : c->scheduled_s;
	int64_t to = c->op == SCHED_OP_SKIP ? c->to_s : c->scheduled_s;
	if (c->op != SCHED_OP_FIRE && c->op != SCHED_OP_SKIP)
		return;
	if (c->op == SCHED_OP_FIRE && c->kind != SCHED_FIRE_SCHEDULED)
		return;
	if (!w->sched_base_s)
		w->sched_base_s = from - 1;
	for (int64_t t = from; t <= to; t++) {
		if (t <= w->sched_base_s)
			continue;
		uint64_t i = (uint64_t)(t - w->sched_base_s);
		uint64_t cap = w->fired_cap;
		if (grow((void **)&w->fired, &cap, i + 1, 1) != 0)
			abort();
		w->fired_cap = cap;
		if (w->fired[i])
			sim_fail(w->sim, "occurrence %lld %s, and %s before", (long long)t,
			         c->op == SCHED_OP_FIRE ? "fired" : "skipped",
			         w->fired[i] == 1 ? "fired" : "skipped");
		w->fired[i] = c->op == SCHED_OP_FIRE ? 1 : 2;
	}
	if (c->op == SCHED_OP_FIRE)
		w->fires++;
	else
		w->skips++;
}

static void sched_apply_entry(struct rnode *rn, const struct raft_entry *e, int first)
{
	if (!rn->sched || e->type != RAFT_ENTRY_DATA)
		return;
	struct sched_cmd c;
	struct sched_cmd_store store;
	if (sched_cmd_decode(e->data, e->len, &c, &store) != 0) {
		sched_cmd_store_free(&store);
		sim_fail(rn->w->sim, "node %u: entry %" PRIu64 " is not a schedule command", rn->node,
		         e->index);
		return;
	}
	char err[200];
	(void)sched_apply(rn->sched, &c, err, sizeof(err));
	if (first)
		sched_truth(rn->w, &c);
	if (c.op == SCHED_OP_ADD)
		rn->w->sched_added = 1;
	sched_cmd_store_free(&store);
}

static void check_apply(struct rnode *rn, const struct raft_entry *e)
{
	struct raft_world *w = rn->w;
	/* quorum durability: a majority of the voters hold it on disk */
	struct raft_status st;
	raft_status(rn->r, &st);
	uint32_t holders = 0;
	for (uint32_t v = 0; v < st.voter_count; v++) {
		uint32_t k = node_of(w, &st.voters[v]);
		if (k == SIM_NONE)
			continue;
		const struct raft_sim_disk *d = &w->disks[k];
		if (e->index <= d->base.index ||
		    (e->index <= d->base.index + d->n_log &&
		     d->log[e->index - d->base.index - 1].term == e->term))
			holders++; /* in its log, or in the snapshot that compacted it */
	}
	if (holders < st.voter_count / 2 + 1)
		sim_fail(w->sim, "node %u applied index %" PRIu64 " (term %" PRIu64 ") held durably by only %u of %u voters",
		         rn->node, e->index, e->term, holders, st.voter_count);
	/* state machine safety */
	uint64_t cap = w->truth_cap;
	if (grow((void **)&w->truth_term, &cap, e->index + 1, sizeof(uint64_t)) != 0)
		abort();
	cap = w->truth_cap;
	if (grow((void **)&w->truth_value, &cap, e->index + 1, sizeof(uint32_t)) != 0)
		abort();
	cap = w->truth_cap;
	if (grow((void **)&w->truth_digest, &cap, e->index + 1, sizeof(uint64_t)) != 0)
		abort();
	w->truth_cap = cap;
	rn->digest = fold(rn->digest, e, entry_value(e));
	if (w->truth_term[e->index] == 0)
		w->truth_digest[e->index] = rn->digest;
	else if (w->truth_digest[e->index] != rn->digest)
		sim_fail(w->sim, "node %u: its state after index %" PRIu64 " differs from another's",
		         rn->node, e->index);
	int first = w->truth_term[e->index] == 0;
	if (w->sched_mode)
		sched_apply_entry(rn, e, first);
	if (w->truth_term[e->index] == 0) {
		w->truth_term[e->index] = e->term;
		w->truth_value[e->index] = entry_value(e);
	} else if (w->truth_term[e->index] != e->term || w->truth_value[e->index] != entry_value(e)) {
		sim_fail(w->sim, "state machine safety: node %u applied (term %" PRIu64 ", value %u) at index %" PRIu64
		         ", another applied (term %" PRIu64 ", value %u)",
		         rn->node, e->term, entry_value(e), e->index, w->truth_term[e->index],
		         w->truth_value[e->index]);
	}
	if (e->index != w->applied_by[rn->node] + 1)
		sim_fail(w->sim, "node %u applied index %" PRIu64 " after %" PRIu64, rn->node, e->index,
		         w->applied_by[rn->node]);
	w->applied_by[rn->node] = e->index;
	if (e->index > w->applied_max)
		w->applied_max = e->index;
	w->applies++;
}

/* ---- snapshots ---- */

/* [u64 index][u64 digest][schedule table (schedule mode)][filler] */
static uint8_t *snapshot_make(struct rnode *rn, uint64_t index, uint64_t *len)
{
	uint8_t *table = NULL;
	size_t table_len = 0;
	if (rn->sched && sched_snapshot_pack(rn->sched, &table, &table_len) != 0)
		abort();
	/* filler: several chunks, and sometimes one */
	uint32_t pad = rn->sched ? 0 : (uint32_t)(index % 300);
	*len = 16 + table_len + pad;
	uint8_t *b = malloc(*len);
	if (!b)
		abort();
	memcpy(b, &index, 8);
	memcpy(b + 8, &rn->digest, 8);
	if (table_len)
		memcpy(b + 16, table, table_len);
	free(table);
	for (uint32_t k = 0; k < pad; k++)
		b[16 + table_len + k] = (uint8_t)(k ^ index);
	return b;
}

/* The state machine from a snapshot, checked against what the first node
 * to apply up to its index had. */
static void snapshot_restore(struct rnode *rn, const struct raft_snapshot *sn)
{
	struct raft_world *w = rn->w;
	uint64_t index, digest;
	if (sn->len < 16) {
		sim_fail(w->sim, "node %u: a snapshot of %" PRIu64 " bytes", rn->node, sn->len);
		return;
	}
	memcpy(&index, sn->data, 8);
	memcpy(&digest, sn->data + 8, 8);
	if (index != sn->at.index)
		sim_fail(w->sim, "node %u: snapshot at %" PRIu64 " says %" PRIu64, rn->node, sn->at.index,
		         index);
	if (rn->sched) {
		char err[256];
		struct sched *t = sched_snapshot_load(sn->data + 16, (size_t)(sn->len - 16), NULL, NULL,
		                                      err, sizeof(err));
		if (!t) {
			sim_fail(w->sim, "node %u: the schedules at %" PRIu64 " do not load: %s", rn->node,
			         index, err);
			return;
		}
		sched_destroy(rn->sched);
		rn->sched = t;
		rn->was_leader = 0; /* a follower installs; plans start afresh */
	}
	for (uint64_t k = 16; !rn->sched && k < sn->len; k++)
		if (sn->data[k] != (uint8_t)((k - 16) ^ index)) {
			sim_fail(w->sim, "node %u: snapshot at %" PRIu64 " damaged at byte %" PRIu64,
			         rn->node, index, k);
			break;
		}
	if (index >= w->truth_cap || w->truth_term[index] == 0 || w->truth_digest[index] != digest)
		sim_fail(w->sim, "node %u: snapshot at %" PRIu64 " is not the state there", rn->node,
		         index);
	rn->digest = digest;
	w->applied_by[rn->node] = index;
}

static void disk_compact(struct raft_sim_disk *d, const struct raft_point *b)
{
	uint64_t drop = 0;
	while (drop < d->n_log && d->log[drop].index <= b->index)
		free(d->log[drop++].data);
	memmove(d->log, d->log + drop, (size_t)(d->n_log - drop) * sizeof(*d->log));
	d->n_log -= drop;
	d->base = *b;
}

/* Compaction, as the shell does it: snapshot at the applied index, the
 * core drops its log, the disk stores the snapshot and drops the entries
 * (one synchronous transaction). */
static void maybe_compact(struct rnode *rn)
{
	struct raft_world *w = rn->w;
	if (!w->snap_every)
		return;
	struct raft_status st;
	raft_status(rn->r, &st);
	if (st.applied_index < st.snapshot_index + w->snap_every)
		return;
	uint64_t len;
	uint8_t *data = snapshot_make(rn, st.applied_index, &len);
	struct raft_point b;
	uint64_t keep = st.applied_index % 9;
	int rc = raft_snapshot_take(rn->r, st.applied_index, data, len, keep, &b);
	if (rc == ERR_BUSY)
		return; /* a follower fetches the last one: later */
	if (rc != 0) {
		sim_fail(w->sim, "node %u: cannot snapshot at %" PRIu64, rn->node, st.applied_index);
		return;
	}
	struct raft_sim_disk *d = &w->disks[rn->node];
	snapshot_free(&d->snap);
	snapshot_copy(&d->snap, raft_snapshot_get(rn->r));
	disk_compact(d, &b);
	w->snapshots++;
}

/* ---- the loop ---- */

static void finish(struct rnode *rn)
{
	struct raft_world *w = rn->w;
	for (uint32_t i = 0; i < rn->rd.n_msgs; i++) {
		const struct raft_msg *m = &rn->rd.msgs[i];
		uint32_t to = node_of(w, &m->to);
		if (to == SIM_NONE)
			continue;
		uint8_t *bytes = NULL;
		size_t len = 0;
		if (raft_codec_encode(m, &bytes, &len) != 0) {
			sim_fail(w->sim, "node %u: cannot encode a %s", rn->node, raft_msg_name(m->type));
			continue;
		}
		sim_send(w->sim, rn->node, to, bytes, len);
		free(bytes);
	}
	if (rn->rd.snapshot) {
		snapshot_restore(rn, rn->rd.snapshot);
		w->installs++;
	}
	for (uint32_t i = 0; i < rn->rd.n_apply; i++)
		check_apply(rn, &rn->rd.apply[i]);
	raft_advance(rn->r, &rn->rd);
	check_leader(rn);
	maybe_compact(rn);
}

static void process(struct rnode *rn)
{
	while (!rn->waiting && raft_has_ready(rn->r)) {
		raft_ready(rn->r, &rn->rd);
		if (rn->rd.hard_changed || rn->rd.truncate_from || rn->rd.n_append || rn->rd.snapshot) {
			if (rn->rd.snapshot)
				snapshot_copy(&rn->psnap, rn->rd.snapshot);
			rn->hard_changed = rn->rd.hard_changed;
			rn->hard = rn->rd.hard;
			rn->truncate_from = rn->rd.truncate_from;
			rn->n_app = rn->rd.n_append;
			rn->app = rn->n_app ? calloc(rn->n_app, sizeof(*rn->app)) : NULL;
			if (rn->n_app && !rn->app)
				abort();
			for (uint32_t i = 0; i < rn->n_app; i++)
				entry_copy(&rn->app[i], &rn->rd.append[i]);
			rn->waiting = 1;
			rn->sync_id = sim_disk_fsync(rn->w->sim, rn->node);
			return;
		}
		finish(rn);
	}
}

static int step_bytes(struct rnode *rn, const uint8_t *bytes, size_t len)
{
	struct raft_in in;
	int rc = raft_codec_decode(&in, bytes, len);
	if (rc != 0)
		return rc;
	rc = raft_step(rn->r, mono(rn), &in.msg);
	raft_in_release(&in);
	check_leader(rn);
	return rc;
}

static void drv_synced(void *core, uint64_t sync_id)
{
	struct rnode *rn = core;
	if (!rn->waiting || sync_id != rn->sync_id)
		return;
	struct raft_sim_disk *d = &rn->w->disks[rn->node];
	if (rn->hard_changed)
		d->hard = rn->hard;
	if (rn->psnap.at.index) {
		snapshot_free(&d->snap);
		d->snap = rn->psnap; /* the disk owns it now */
		memset(&rn->psnap, 0, sizeof(rn->psnap));
		disk_compact(d, &d->snap.at);
	}
	if (rn->truncate_from)
		while (d->n_log && d->base.index + d->n_log >= rn->truncate_from)
			free(d->log[--d->n_log].data);
	for (uint32_t i = 0; i < rn->n_app; i++) {
		if (rn->app[i].index != d->base.index + d->n_log + 1)
			sim_fail(rn->w->sim, "node %u: persisting index %" PRIu64 " after %" PRIu64, rn->node,
			         rn->app[i].index, d->base.index + d->n_log);
		if (grow((void **)&d->log, &d->cap_log, d->n_log + 1, sizeof(*d->log)) != 0)
			abort();
		d->log[d->n_log++] = rn->app[i]; /* the disk owns the data now */
	}
	free(rn->app);
	rn->app = NULL;
	rn->n_app = 0;
	rn->waiting = 0;
	finish(rn);
	process(rn);
	while (!rn->waiting && rn->in_count) {
		struct inbox_msg *m = &rn->inbox[rn->in_head];
		rn->in_head = (rn->in_head + 1) % RAFT_SIM_INBOX_MAX;
		rn->in_count--;
		if (step_bytes(rn, m->bytes, m->len) != 0)
			sim_fail(rn->w->sim, "node %u refused a message another node built", rn->node);
		free(m->bytes);
		process(rn);
	}
	sim_node_poke(rn->w->sim, rn->node);
}

static int propose_sched(struct rnode *rn, const struct sched_cmd *c, uint64_t mono_ms)
{
	uint8_t *bytes = NULL;
	size_t len = 0;
	if (sched_cmd_encode(c, &bytes, &len) != 0)
		return -1;
	int rc = raft_propose(rn->r, mono_ms, bytes, (uint32_t)len, NULL);
	free(bytes);
	return rc;
}

/* Schedule mode: a leader adds the schedule once, then plans it. */
static void sched_lead(struct rnode *rn, struct now now)
{
	struct raft_status st;
	raft_status(rn->r, &st);
	int leader = st.role == RAFT_LEADER;
	if (leader != rn->was_leader)
		sched_leader_reset(rn->sched);
	rn->was_leader = leader;
	if (!leader || !st.leader_ready || rn->w->sched_frozen)
		return; /* a new leader decides only once it has applied every earlier entry */
	/* everything in its log applied and still no schedule: add it (a lost
	 * proposal is made again by a later leader, never twice) */
	if (sched_count(rn->sched) == 0 && st.applied_index == st.last_index) {
		static uint8_t task[] = {0x0a, 0x04, 'e', 'c', 'h', 'o'};
		struct sched_spec spec;
		memset(&spec, 0, sizeof(spec));
		snprintf(spec.name, sizeof(spec.name), "tick");
		snprintf(spec.expr, sizeof(spec.expr), "@every 1s");
		spec.overlap = SCHED_OVERLAP_ALLOW_ALL;
		spec.catchup_ms = 5000;
		spec.task = task;
		spec.task_len = sizeof(task);
		struct sched_cmd c = {0};
		c.op = SCHED_OP_ADD;
		c.spec = &spec;
		c.wall_ms = now.wall_ms;
		snprintf(c.name, sizeof(c.name), "tick");
		(void)propose_sched(rn, &c, now.mono_ms);
	}
	struct sched_cmd cmds[32];
	uint8_t self[SCHED_ID_BYTES];
	memcpy(self, rn->w->ids[rn->node].b, SCHED_ID_BYTES);
	uint32_t n = sched_plan(rn->sched, now.wall_ms, self, &self, 1, cmds, 32);
	for (uint32_t i = 0; i < n; i++)
		if (propose_sched(rn, &cmds[i], now.mono_ms) != 0) {
			sched_leader_reset(rn->sched);
			break;
		}
	/* the next occurrence, or the next planning visit */
	process(rn);
}

static void *drv_create(struct sim *s, uint32_t node, struct now now)
{
	struct raft_world *w = sim_driver_ctx(s);
	struct rnode *rn = calloc(1, sizeof(*rn));
	if (!rn)
		return NULL;
	rn->w = w;
	rn->node = node;
	struct raft_config cfg = {
	    .self = w->ids[node],
	    .election_ms = RAFT_SIM_ELECTION_MS,
	    .heartbeat_ms = RAFT_SIM_HEARTBEAT_MS,
	    .seed = sim_derive_seed(sim_run_info(s)->seed, 77, node, w->restarts[node]++),
	    .snapshot_chunk_bytes = RAFT_SIM_CHUNK,
	};
	const struct raft_sim_disk *d = &w->disks[node];
	struct raft_point base = d->base;
	if (base.index == 0) {
		base.n_voters = w->n;
		memcpy(base.voters, w->ids, w->n * sizeof(w->ids[0]));
	}
	rn->r = raft_create(&cfg, &d->hard, &base, d->snap.at.index ? &d->snap : NULL, d->log,
	                    (uint32_t)d->n_log, now.mono_ms);
	if (!rn->r) {
		free(rn);
		return NULL;
	}
	/* the state machine is rebuilt from the snapshot and the log */
	w->applied_by[node] = 0;
	if (w->sched_mode) {
		rn->sched = sched_create(NULL, NULL);
		if (!rn->sched) {
			raft_destroy(rn->r);
			free(rn);
			return NULL;
		}
	}
	if (d->snap.at.index)
		snapshot_restore(rn, &d->snap);
	return rn;
}

static void drv_destroy(void *core)
{
	struct rnode *rn = core;
	/* a crash: what was pending never reached the disk */
	for (uint32_t i = 0; i < rn->n_app; i++)
		free(rn->app[i].data);
	free(rn->app);
	snapshot_free(&rn->psnap);
	while (rn->in_count) {
		free(rn->inbox[rn->in_head].bytes);
		rn->in_head = (rn->in_head + 1) % RAFT_SIM_INBOX_MAX;
		rn->in_count--;
	}
	raft_destroy(rn->r);
	sched_destroy(rn->sched);
	free(rn);
}

static uint64_t drv_next_deadline(void *core)
{
	struct rnode *rn = core;
	if (rn->waiting)
		return UINT64_MAX; /* the loop is in its fsync: poked when done */
	uint64_t next = raft_next_deadline(rn->r);
	struct raft_status st;
	raft_status(rn->r, &st);
	if (rn->sched && rn->was_leader && st.leader_ready && !rn->w->sched_frozen) {
		/* the plan's next visit is wall time: in this node's monotonic */
		struct now n = sim_node_clock(rn->w->sim, rn->node);
		uint64_t at = sched_next_plan_ms(rn->sched);
		uint64_t m = at == UINT64_MAX ? UINT64_MAX : at <= n.wall_ms ? n.mono_ms : n.mono_ms + (at - n.wall_ms);
		if (m < next)
			next = m;
	}
	return next;
}

static void drv_tick(void *core, struct now now)
{
	struct rnode *rn = core;
	if (rn->waiting)
		return; /* the loop is in its fsync; it ticks after */
	raft_tick(rn->r, now.mono_ms);
	check_leader(rn);
	process(rn);
	if (rn->sched && !rn->waiting)
		sched_lead(rn, now);
}

static int drv_on_message(void *core, struct now now, uint32_t from, const uint8_t *bytes, size_t len)
{
	(void)now;
	(void)from;
	struct rnode *rn = core;
	if (rn->waiting) {
		if (rn->in_count == RAFT_SIM_INBOX_MAX) {
			rn->dropped++; /* a full inbox drops, as a full socket would */
			return 0;
		}
		struct inbox_msg *m = &rn->inbox[(rn->in_head + rn->in_count) % RAFT_SIM_INBOX_MAX];
		m->bytes = malloc(len ? len : 1);
		if (!m->bytes)
			abort();
		memcpy(m->bytes, bytes, len);
		m->len = len;
		m->from = from;
		rn->in_count++;
		return 0;
	}
	int rc = step_bytes(rn, bytes, len);
	process(rn);
	return rc;
}

const struct sim_driver sim_driver_raft = {
    .name = "raft",
    .create = drv_create,
    .destroy = drv_destroy,
    .next_deadline_ms = drv_next_deadline,
    .tick = drv_tick,
    .on_message = drv_on_message,
    .synced = drv_synced,
};

/* ---- the world ---- */

struct raft_world *raft_world_new(const struct sim_run *run)
{
	struct raft_world *w = calloc(1, sizeof(*w));
	if (!w)
		abort();
	w->n = run->n;
	w->ids = calloc(run->n, sizeof(*w->ids));
	w->disks = calloc(run->n, sizeof(*w->disks));
	w->restarts = calloc(run->n, sizeof(*w->restarts));
	w->applied_by = calloc(run->n, sizeof(*w->applied_by));
	if (!w->ids || !w->disks || !w->restarts || !w->applied_by)
		abort();
	for (uint32_t i = 0; i < run->n; i++) {
		w->ids[i].b[0] = 0xfa;
		memcpy(w->ids[i].b + 8, &i, sizeof(i));
	}
	w->sim = sim_create(&sim_driver_raft, w, run);
	if (!w->sim)
		abort();
	return w;
}

void raft_world_sched_mode(struct raft_world *w)
{
	w->sched_mode = 1;
}

void raft_world_snapshots(struct raft_world *w, uint32_t every)
{
	w->snap_every = every;
}

int raft_world_check_sched(struct raft_world *w, char *why, size_t why_bytes)
{
	uint64_t first = 0, last = 0;
	for (uint64_t i = 1; i < w->fired_cap; i++)
		if (w->fired[i]) {
			if (!first)
				first = i;
			last = i;
		}
	for (uint64_t i = first; first && i <= last; i++)
		if (!w->fired[i]) {
			snprintf(why, why_bytes, "occurrence %lld was never decided (between %lld and %lld)",
			         (long long)(w->sched_base_s + (int64_t)i),
			         (long long)(w->sched_base_s + (int64_t)first),
			         (long long)(w->sched_base_s + (int64_t)last));
			return 1;
		}
	return 0;
}

void raft_world_free(struct raft_world *w)
{
	if (!w)
		return;
	sim_destroy(w->sim);
	for (uint32_t i = 0; i < w->n; i++) {
		for (uint64_t k = 0; k < w->disks[i].n_log; k++)
			free(w->disks[i].log[k].data);
		free(w->disks[i].log);
		free(w->disks[i].snap.data);
	}
	free(w->ids);
	free(w->disks);
	free(w->restarts);
	free(w->applied_by);
	free(w->leader_of);
	free(w->truth_term);
	free(w->truth_value);
	free(w->truth_digest);
	free(w->fired);
	free(w);
}

struct raft *raft_world_core(const struct raft_world *w, uint32_t node)
{
	if (!sim_node_up(w->sim, node))
		return NULL;
	struct rnode *rn = sim_node_core(w->sim, node);
	return rn ? rn->r : NULL;
}

void raft_world_start(struct raft_world *w, uint32_t node)
{
	if (sim_node_start(w->sim, node) == 0)
		sim_node_poke(w->sim, node);
}

uint32_t raft_world_leader(const struct raft_world *w)
{
	uint32_t best = SIM_NONE;
	uint64_t best_term = 0;
	for (uint32_t i = 0; i < w->n; i++) {
		struct raft *r = raft_world_core(w, i);
		if (!r)
			continue;
		struct raft_status st;
		raft_status(r, &st);
		if (st.role == RAFT_LEADER && (best == SIM_NONE || st.term > best_term)) {
			best = i;
			best_term = st.term;
		}
	}
	return best;
}

int raft_world_propose(struct raft_world *w, uint32_t node)
{
	if (!sim_node_up(w->sim, node))
		return ERR_CLOSED;
	struct rnode *rn = sim_node_core(w->sim, node);
	if (rn->waiting)
		return ERR_FULL; /* inside its fsync; the shell would queue it */
	uint32_t v = ++w->next_value;
	int rc = raft_propose(rn->r, mono(rn), &v, sizeof(v), NULL);
	process(rn);
	sim_node_poke(w->sim, node);
	return rc;
}

int raft_world_check_logs(struct raft_world *w, char *why, size_t why_bytes)
{
	for (uint32_t a = 0; a < w->n; a++) {
		for (uint32_t b = a + 1; b < w->n; b++) {
			const struct raft_sim_disk *x = &w->disks[a], *y = &w->disks[b];
			uint64_t lx = x->base.index + x->n_log, ly = y->base.index + y->n_log;
			uint64_t n = lx < ly ? lx : ly;
			uint64_t lo = x->base.index > y->base.index ? x->base.index : y->base.index;
			/* log matching: the same index and term means the same
			 * entry and the same log before it; scan from the end,
			 * over the indexes both still hold */
			int same_from_here = 0;
			for (uint64_t i = n; i > lo; i--) {
				const struct raft_entry *p = &x->log[i - x->base.index - 1];
				const struct raft_entry *q = &y->log[i - y->base.index - 1];
				if (p->term == q->term)
					same_from_here = 1;
				if (same_from_here && (p->term != q->term || p->type != q->type || p->len != q->len ||
				                       (p->len && memcmp(p->data, q->data, p->len) != 0))) {
					snprintf(why, why_bytes,
					         "log matching: nodes %u and %u differ at index %" PRIu64
					         " below a matching entry",
					         a, b, i);
					return 1;
				}
			}
		}
	}
	return 0;
}
