/*
 * raft.c - the Raft core (raft.h has the contract and the rules with their
 * sources). The subtle parts:
 *   - a leader counts its own log toward a majority only up to what the
 *     caller has made durable (`persisted`), as any follower's ack does;
 *   - queued messages name log ranges, resolved into pointers only in
 *     raft_ready (the log may grow or, on a follower, be truncated between
 *     a send and the ready); a leader that steps down drops its queued
 *     appends, so no range ever names entries that changed underneath it;
 *   - pre-vote responses carry the proposed term, not a real one: they
 *     never move anybody's term.
 */
#include "core/raft.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/rng.h"

#define OUTBOX_MAX 256

struct peer {
	struct raft_id id;
	uint64_t next, match;
	uint64_t heard_ms;  /* monotonic, last answer from it (check-quorum) */
	uint8_t granted;    /* this election: it granted the (pre-)vote */
	uint8_t pending;    /* an append with entries (or a chunk) awaits its answer */
	/* sending it the snapshot: which one, the bytes it has, when the
	 * last chunk went */
	uint64_t snap_index, snap_off, snap_sent_ms;
};

/* A queued message: entries by range, chunks by offset, resolved in
 * raft_ready. */
struct out_msg {
	struct raft_msg m;
	uint64_t ent_from; /* first index (n_entries in m) */
};

struct raft {
	struct raft_config cfg;
	struct rng rng;
	int role;
	uint64_t term;
	struct raft_id vote;
	int has_vote;
	struct raft_id leader;
	int has_leader;

	struct raft_entry *log; /* log[i] has index offset + 1 + i */
	uint64_t n_log, cap_log;
	uint64_t offset, offset_term; /* the base: the point before log[0] */
	struct raft_snapshot snap;    /* data owned; at.index 0: none */
	int snap_pending;             /* installed from the leader: in the next ready */
	struct raft_snapshot rx;      /* a follower's snapshot being received */
	uint64_t rx_got;
	uint64_t commit, applied, persisted;
	uint64_t term_start; /* leader: index of its no-op */
	uint64_t truncate_from; /* pending for the next ready; 0 = none */
	int hard_dirty;

	struct raft_id base_voters[RAFT_VOTERS_MAX]; /* in force at offset */
	uint32_t n_base_voters;
	struct raft_id voters[RAFT_VOTERS_MAX];
	uint32_t n_voters;
	uint64_t config_index; /* index of the config entry in force, 0 = initial */
	struct peer peers[RAFT_VOTERS_MAX]; /* every voter but self */
	uint32_t n_peers;
	struct peer learners[RAFT_LEARNERS_MAX];
	uint32_t n_learners;
	int self_voter;

	uint64_t now_ms;
	uint64_t election_deadline_ms;
	uint64_t heartbeat_deadline_ms;
	uint64_t quorum_check_ms;    /* leader: next check-quorum */
	uint64_t leader_heard_ms;    /* follower: last append from the leader */
	int heard_leader;

	struct out_msg out[OUTBOX_MAX];
	uint32_t n_out;
	uint64_t dropped;

	/* the ready handed out, resolved */
	struct raft_msg ready_msgs[OUTBOX_MAX];
	uint64_t ready_append_from, ready_apply_to;
};

const char *raft_role_name(int role)
{
	switch (role) {
	case RAFT_FOLLOWER: return "follower";
	case RAFT_PRECANDIDATE: return "precandidate";
	case RAFT_CANDIDATE: return "candidate";
	case RAFT_LEADER: return "leader";
	default: return "?";
	}
}

const char *raft_msg_name(int type)
{
	switch (type) {
	case RAFT_MSG_PREVOTE: return "prevote";
	case RAFT_MSG_PREVOTE_RESP: return "prevote_resp";
	case RAFT_MSG_VOTE: return "vote";
	case RAFT_MSG_VOTE_RESP: return "vote_resp";
	case RAFT_MSG_APPEND: return "append";
	case RAFT_MSG_APPEND_RESP: return "append_resp";
	case RAFT_MSG_SNAPSHOT: return "snapshot";
	case RAFT_MSG_SNAPSHOT_RESP: return "snapshot_resp";
	default: return "?";
	}
}

int raft_id_eq(const struct raft_id *a, const struct raft_id *b)
{
	return memcmp(a->b, b->b, RAFT_ID_BYTES) == 0;
}

/* ---- the log ---- */

static uint64_t last_index(const struct raft *r)
{
	return r->offset + r->n_log;
}

/* The entry at index, which must be held: offset < index <= last. */
static struct raft_entry *ent(const struct raft *r, uint64_t index)
{
	assert(index > r->offset && index <= last_index(r));
	return &r->log[index - r->offset - 1];
}

/* 0 for an index not known here (compacted away, or beyond the log) */
static uint64_t term_at(const struct raft *r, uint64_t index)
{
	if (index == r->offset)
		return r->offset_term;
	if (index < r->offset || index > last_index(r))
		return 0;
	return ent(r, index)->term;
}

static uint64_t last_term(const struct raft *r)
{
	return term_at(r, last_index(r));
}

static int log_append(struct raft *r, uint64_t term, uint8_t type, const void *data, uint32_t len)
{
	if (r->n_log >= RAFT_LOG_ENTRIES_MAX || last_index(r) >= RAFT_INDEX_MAX)
		return ERR_FULL;
	if (r->n_log == r->cap_log) {
		uint64_t cap = r->cap_log ? r->cap_log * 2 : 64;
		struct raft_entry *p = realloc(r->log, (size_t)cap * sizeof(*p));
		if (!p)
			return ERR_NOMEM;
		r->log = p;
		r->cap_log = cap;
	}
	struct raft_entry *e = &r->log[r->n_log];
	e->data = malloc(len ? len : 1);
	if (!e->data)
		return ERR_NOMEM;
	if (len)
		memcpy(e->data, data, len);
	e->len = len;
	e->term = term;
	e->type = type;
	e->index = last_index(r) + 1;
	r->n_log++;
	return 0;
}

static void config_refresh(struct raft *r);

/* Drops log[from..]; never a committed entry (Raft §5.3, Leader
 * Completeness makes it impossible for a correct leader to ask). */
static void log_truncate(struct raft *r, uint64_t from)
{
	assert(from > r->commit && from > r->offset);
	for (uint64_t i = from; i <= last_index(r); i++)
		free(ent(r, i)->data);
	r->n_log = from - 1 - r->offset;
	if (r->persisted > last_index(r))
		r->persisted = last_index(r);
	if (!r->truncate_from || from < r->truncate_from)
		r->truncate_from = from;
	if (r->ready_append_from > from)
		r->ready_append_from = from;
	if (r->config_index >= from)
		config_refresh(r);
}

/* ---- voters ---- */

static struct peer *peer_find(struct raft *r, const struct raft_id *id)
{
	for (uint32_t i = 0; i < r->n_peers; i++)
		if (raft_id_eq(&r->peers[i].id, id))
			return &r->peers[i];
	return NULL;
}

static struct peer *learner_find(struct raft *r, const struct raft_id *id)
{
	for (uint32_t i = 0; i < r->n_learners; i++)
		if (raft_id_eq(&r->learners[i].id, id))
			return &r->learners[i];
	return NULL;
}

static int is_voter(const struct raft *r, const struct raft_id *id)
{
	for (uint32_t i = 0; i < r->n_voters; i++)
		if (raft_id_eq(&r->voters[i], id))
			return 1;
	return 0;
}

void raft_set_learners(struct raft *r, const struct raft_id *ids, uint32_t n)
{
	struct peer kept[RAFT_LEARNERS_MAX];
	uint32_t k = 0;
	for (uint32_t i = 0; i < n && k < RAFT_LEARNERS_MAX; i++) {
		if (is_voter(r, &ids[i]) || raft_id_eq(&ids[i], &r->cfg.self))
			continue;
		struct peer *old = learner_find(r, &ids[i]);
		if (old) {
			kept[k++] = *old;
		} else {
			memset(&kept[k], 0, sizeof(kept[k]));
			kept[k].id = ids[i];
			kept[k].next = last_index(r) + 1;
			k++;
		}
	}
	memcpy(r->learners, kept, k * sizeof(kept[0]));
	r->n_learners = k;
}

int raft_learner_progress(const struct raft *r, const struct raft_id *id, uint64_t *match,
                          uint64_t *heard_ago_ms)
{
	if (r->role != RAFT_LEADER)
		return ERR_NOT_FOUND;
	for (uint32_t i = 0; i < r->n_learners; i++) {
		const struct peer *p = &r->learners[i];
		if (!raft_id_eq(&p->id, id))
			continue;
		*match = p->match;
		*heard_ago_ms = r->now_ms > p->heard_ms ? r->now_ms - p->heard_ms : 0;
		return 0;
	}
	return ERR_NOT_FOUND;
}

static void voters_set(struct raft *r, const struct raft_id *v, uint32_t n)
{
	assert(n <= RAFT_VOTERS_MAX);
	struct peer old[RAFT_VOTERS_MAX];
	uint32_t n_old = r->n_peers;
	memcpy(old, r->peers, sizeof(old));
	memcpy(r->voters, v, n * sizeof(*v));
	r->n_voters = n;
	r->n_peers = 0;
	r->self_voter = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (raft_id_eq(&v[i], &r->cfg.self)) {
			r->self_voter = 1;
			continue;
		}
		struct peer *p = &r->peers[r->n_peers++];
		memset(p, 0, sizeof(*p));
		p->id = v[i];
		p->next = last_index(r) + 1;
		p->heard_ms = r->now_ms; /* a new voter gets an election timeout to answer */
		for (uint32_t j = 0; j < n_old; j++)
			if (raft_id_eq(&old[j].id, &v[i]))
				*p = old[j];
	}
}

/* The voter set in force: the last config entry in the log (in force once
 * appended, committed or not: dissertation §4.1), else the initial set. */
static void learners_prune(struct raft *r)
{
	uint32_t k = 0;
	for (uint32_t i = 0; i < r->n_learners; i++)
		if (!is_voter(r, &r->learners[i].id))
			r->learners[k++] = r->learners[i];
	r->n_learners = k;
}

/* The config entry in force at index (the last at or before it), NULL
 * when it is the base's. */
static const struct raft_entry *config_at(const struct raft *r, uint64_t index)
{
	if (index > last_index(r))
		index = last_index(r);
	for (uint64_t i = index; i > r->offset; i--) {
		const struct raft_entry *e = ent(r, i);
		if (e->type == RAFT_ENTRY_CONFIG)
			return e;
	}
	return NULL;
}

/* The voters in force at index into p (index >= offset). */
static void point_voters(const struct raft *r, uint64_t index, struct raft_point *p)
{
	const struct raft_entry *e = config_at(r, index);
	if (e) {
		p->n_voters = e->len / RAFT_ID_BYTES;
		memcpy(p->voters, e->data, e->len);
	} else {
		p->n_voters = r->n_base_voters;
		memcpy(p->voters, r->base_voters, r->n_base_voters * sizeof(r->base_voters[0]));
	}
}

static void config_refresh(struct raft *r)
{
	const struct raft_entry *e = config_at(r, last_index(r));
	if (e) {
		r->config_index = e->index;
		voters_set(r, (const struct raft_id *)e->data, e->len / RAFT_ID_BYTES);
	} else {
		r->config_index = r->offset; /* the base's set, committed */
		voters_set(r, r->base_voters, r->n_base_voters);
	}
	learners_prune(r);
}

static uint32_t quorum(const struct raft *r)
{
	return r->n_voters / 2 + 1;
}

/* ---- messages ---- */

static struct out_msg *send_msg(struct raft *r, int type, const struct raft_id *to)
{
	if (r->n_out == OUTBOX_MAX) {
		r->dropped++; /* Raft tolerates a lost message; a tick resends */
		return NULL;
	}
	struct out_msg *o = &r->out[r->n_out++];
	memset(o, 0, sizeof(*o));
	o->m.type = (uint8_t)type;
	o->m.from = r->cfg.self;
	o->m.to = *to;
	o->m.term = r->term;
	return o;
}

static void drop_queued_appends(struct raft *r)
{
	uint32_t k = 0;
	for (uint32_t i = 0; i < r->n_out; i++)
		if (r->out[i].m.type != RAFT_MSG_APPEND && r->out[i].m.type != RAFT_MSG_SNAPSHOT)
			r->out[k++] = r->out[i];
	r->n_out = k;
}

/* ---- roles ---- */

static void reset_election_timer(struct raft *r)
{
	uint32_t e = r->cfg.election_ms;
	r->election_deadline_ms = r->now_ms + e + rng_below(&r->rng, e);
}

static void set_term(struct raft *r, uint64_t term)
{
	assert(term > r->term);
	r->term = term;
	r->has_vote = 0;
	memset(&r->vote, 0, sizeof(r->vote));
	r->hard_dirty = 1;
}

static void become_follower(struct raft *r, uint64_t term, const struct raft_id *leader)
{
	if (r->role == RAFT_LEADER)
		drop_queued_appends(r);
	if (term > r->term)
		set_term(r, term);
	r->role = RAFT_FOLLOWER;
	r->has_leader = leader != NULL;
	if (leader)
		r->leader = *leader;
	reset_election_timer(r);
}

/* The next chunk of the snapshot to a follower whose next entry is no
 * longer held. One chunk in flight; resent when unanswered for half an
 * election timeout (it was lost, or the follower restarted). */
static void send_snapshot(struct raft *r, struct peer *p)
{
	if (!r->snap.at.index)
		return; /* cannot be: a compacted log always has a snapshot */
	if (p->snap_index != r->snap.at.index) {
		p->snap_index = r->snap.at.index; /* a new one: from its start */
		p->snap_off = 0;
		p->pending = 0;
	}
	if (p->pending && r->now_ms - p->snap_sent_ms < r->cfg.election_ms / 2)
		return;
	struct out_msg *o = send_msg(r, RAFT_MSG_SNAPSHOT, &p->id);
	if (!o)
		return;
	if (p->snap_off > r->snap.len)
		p->snap_off = 0;
	o->m.snap = r->snap.at;
	o->m.snap_total = r->snap.len;
	o->m.snap_offset = p->snap_off;
	uint64_t left = r->snap.len - p->snap_off;
	uint32_t chunk = r->cfg.snapshot_chunk_bytes;
	if (chunk == 0 || chunk > RAFT_SNAPSHOT_CHUNK_BYTES)
		chunk = RAFT_SNAPSHOT_CHUNK_BYTES;
	o->m.chunk_len = (uint32_t)(left < chunk ? left : chunk);
	o->m.commit = r->commit;
	p->pending = 1;
	p->snap_sent_ms = r->now_ms;
}

static void send_append(struct raft *r, struct peer *p)
{
	if (p->next < 1)
		p->next = 1;
	if (p->next > last_index(r) + 1)
		p->next = last_index(r) + 1;
	if (p->next <= r->offset) {
		send_snapshot(r, p);
		return;
	}
	struct out_msg *o = send_msg(r, RAFT_MSG_APPEND, &p->id);
	if (!o)
		return;
	o->m.prev_index = p->next - 1;
	o->m.prev_term = term_at(r, o->m.prev_index);
	o->m.commit = r->commit;
	uint64_t bytes = 0;
	uint32_t n = 0;
	for (uint64_t i = p->next; i <= last_index(r) && n < RAFT_APPEND_ENTRIES_MAX; i++) {
		bytes += ent(r, i)->len;
		if (n > 0 && bytes > RAFT_APPEND_BYTES_MAX)
			break;
		n++;
	}
	o->m.n_entries = n;
	o->ent_from = p->next;
	if (n)
		p->pending = 1;
}

static void broadcast_append(struct raft *r)
{
	for (uint32_t i = 0; i < r->n_peers; i++)
		send_append(r, &r->peers[i]);
	for (uint32_t i = 0; i < r->n_learners; i++)
		send_append(r, &r->learners[i]);
	r->heartbeat_deadline_ms = r->now_ms + r->cfg.heartbeat_ms;
}

static void maybe_commit(struct raft *r);

/* A partly received snapshot is dropped (it may be large) once this node
 * no longer follows, or needs it no more. */
static void rx_drop(struct raft *r)
{
	free(r->rx.data);
	memset(&r->rx, 0, sizeof(r->rx));
	r->rx_got = 0;
}

static void become_leader(struct raft *r)
{
	assert(r->role == RAFT_CANDIDATE);
	r->role = RAFT_LEADER;
	r->leader = r->cfg.self;
	r->has_leader = 1;
	for (uint32_t i = 0; i < r->n_peers; i++) {
		r->peers[i].next = last_index(r) + 1;
		r->peers[i].match = 0;
		r->peers[i].pending = 0;
		r->peers[i].heard_ms = r->now_ms;
	}
	for (uint32_t i = 0; i < r->n_learners; i++) {
		r->learners[i].next = last_index(r) + 1;
		r->learners[i].match = 0;
		r->learners[i].pending = 0;
	}
	r->quorum_check_ms = r->now_ms + r->cfg.election_ms;
	/* a no-op of this term: committing it commits everything before
	 * (§5.4.2: only entries of the leader's own term are committed by
	 * counting replicas) */
	if (log_append(r, r->term, RAFT_ENTRY_NOOP, NULL, 0) != 0) {
		/* no room for it: no leader can work here; step down */
		become_follower(r, r->term, NULL);
		return;
	}
	r->term_start = last_index(r);
	broadcast_append(r);
	maybe_commit(r);
}

static uint32_t granted_count(const struct raft *r)
{
	uint32_t n = r->self_voter ? 1 : 0;
	for (uint32_t i = 0; i < r->n_peers; i++)
		n += r->peers[i].granted;
	return n;
}

static void become_candidate(struct raft *r)
{
	rx_drop(r);
	set_term(r, r->term + 1);
	r->role = RAFT_CANDIDATE;
	r->vote = r->cfg.self;
	r->has_vote = 1;
	r->has_leader = 0;
	reset_election_timer(r);
	for (uint32_t i = 0; i < r->n_peers; i++)
		r->peers[i].granted = 0;
	if (granted_count(r) >= quorum(r)) {
		become_leader(r);
		return;
	}
	for (uint32_t i = 0; i < r->n_peers; i++) {
		struct out_msg *o = send_msg(r, RAFT_MSG_VOTE, &r->peers[i].id);
		if (o) {
			o->m.last_index = last_index(r);
			o->m.last_term = last_term(r);
		}
	}
}

static void become_precandidate(struct raft *r)
{
	r->role = RAFT_PRECANDIDATE;
	r->has_leader = 0;
	reset_election_timer(r);
	for (uint32_t i = 0; i < r->n_peers; i++)
		r->peers[i].granted = 0;
	if (granted_count(r) >= quorum(r)) {
		become_candidate(r);
		return;
	}
	for (uint32_t i = 0; i < r->n_peers; i++) {
		struct out_msg *o = send_msg(r, RAFT_MSG_PREVOTE, &r->peers[i].id);
		if (o) {
			o->m.term = r->term + 1; /* the term it would stand in */
			o->m.last_index = last_index(r);
			o->m.last_term = last_term(r);
		}
	}
}

/* ---- commitment ---- */

static int cmp_u64_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

static void maybe_commit(struct raft *r)
{
	if (r->role != RAFT_LEADER)
		return;
	uint64_t m[RAFT_VOTERS_MAX];
	uint32_t n = 0;
	if (r->self_voter)
		m[n++] = r->persisted;
	for (uint32_t i = 0; i < r->n_peers; i++)
		m[n++] = r->peers[i].match;
	if (n == 0)
		return;
	qsort(m, n, sizeof(m[0]), cmp_u64_desc);
	uint64_t candidate = m[quorum(r) - 1]; /* held by a majority */
	/* §5.4.2: only an entry of the current term is committed by counting */
	if (candidate > r->commit && term_at(r, candidate) == r->term) {
		r->commit = candidate;
		/* followers learn the new commit index now, not at the next beat */
		broadcast_append(r);
		/* a leader no longer in the voter set steps down once the change
		 * that removed it is committed (dissertation §4.2.2) */
		if (!r->self_voter && r->commit >= r->config_index)
			become_follower(r, r->term, NULL);
	}
}

/* ---- lifetime ---- */

static int point_valid(const struct raft_point *p)
{
	if (p->n_voters > RAFT_VOTERS_MAX || p->term > RAFT_TERM_MAX || p->index > RAFT_INDEX_MAX)
		return 0;
	static const uint8_t zero[RAFT_ID_BYTES];
	for (uint32_t i = 0; i < p->n_voters; i++) {
		if (memcmp(p->voters[i].b, zero, RAFT_ID_BYTES) == 0)
			return 0;
		for (uint32_t j = 0; j < i; j++)
			if (raft_id_eq(&p->voters[i], &p->voters[j]))
				return 0;
	}
	return 1;
}

struct raft *raft_create(const struct raft_config *cfg, const struct raft_hard *hard,
                         const struct raft_point *base, const struct raft_snapshot *snap,
                         const struct raft_entry *log, uint32_t n_log, uint64_t now_ms)
{
	if (!cfg || !base || !point_valid(base) || (base->index == 0 && base->term != 0) ||
	    (base->index > 0 && !snap) || cfg->election_ms == 0 || cfg->heartbeat_ms == 0 ||
	    cfg->heartbeat_ms >= cfg->election_ms)
		return NULL;
	if (snap && (!point_valid(&snap->at) || snap->at.index < base->index ||
	             snap->at.index > base->index + n_log || snap->at.index == 0 ||
	             snap->at.n_voters == 0 || snap->len > RAFT_SNAPSHOT_BYTES_MAX ||
	             (snap->len && !snap->data)))
		return NULL;
	struct raft *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->cfg = *cfg;
	rng_seed(&r->rng, cfg->seed);
	r->now_ms = now_ms;
	if (hard) {
		r->term = hard->term;
		r->has_vote = hard->has_vote;
		r->vote = hard->vote;
	}
	r->offset = base->index;
	r->offset_term = base->term;
	memcpy(r->base_voters, base->voters, base->n_voters * sizeof(base->voters[0]));
	r->n_base_voters = base->n_voters;
	for (uint32_t i = 0; i < n_log; i++) {
		const struct raft_entry *e = &log[i];
		uint64_t prev_term = i > 0 ? log[i - 1].term : base->term;
		if (e->index != base->index + i + 1 || e->term > r->term || e->term < prev_term ||
		    e->len > RAFT_ENTRY_BYTES_MAX ||
		    (e->type == RAFT_ENTRY_CONFIG &&
		     (e->len % RAFT_ID_BYTES || e->len / RAFT_ID_BYTES > RAFT_VOTERS_MAX)) ||
		    log_append(r, e->term, e->type, e->data, e->len) != 0) {
			raft_destroy(r);
			return NULL;
		}
	}
	if (base->term > r->term) {
		raft_destroy(r);
		return NULL;
	}
	r->persisted = last_index(r); /* it came from storage */
	if (snap) {
		if (term_at(r, snap->at.index) != snap->at.term) {
			raft_destroy(r);
			return NULL;
		}
		r->snap.at = snap->at;
		r->snap.len = snap->len;
		r->snap.data = malloc(snap->len ? snap->len : 1);
		if (!r->snap.data) {
			raft_destroy(r);
			return NULL;
		}
		if (snap->len)
			memcpy(r->snap.data, snap->data, snap->len);
		/* the caller restores its state machine from it: applied, and
		 * committed (only committed state is ever snapshotted) */
		r->commit = r->applied = snap->at.index;
	}
	config_refresh(r);
	r->role = RAFT_FOLLOWER;
	reset_election_timer(r);
	return r;
}

void raft_destroy(struct raft *r)
{
	if (!r)
		return;
	for (uint64_t i = 0; i < r->n_log; i++)
		free(r->log[i].data);
	free(r->log);
	free(r->snap.data);
	free(r->rx.data);
	free(r);
}

/* ---- time ---- */

void raft_tick(struct raft *r, uint64_t now_ms)
{
	if (now_ms > r->now_ms)
		r->now_ms = now_ms;
	if (r->role == RAFT_LEADER) {
		if (r->now_ms >= r->quorum_check_ms) {
			/* check-quorum (§6.2): a majority answered within the last
			 * election timeout, or this leader steps down */
			uint32_t heard = r->self_voter ? 1 : 0;
			for (uint32_t i = 0; i < r->n_peers; i++)
				if (r->now_ms - r->peers[i].heard_ms < r->cfg.election_ms)
					heard++;
			if (heard < quorum(r)) {
				become_follower(r, r->term, NULL);
				return;
			}
			r->quorum_check_ms = r->now_ms + r->cfg.election_ms;
		}
		if (r->now_ms >= r->heartbeat_deadline_ms)
			broadcast_append(r);
		return;
	}
	if (r->now_ms >= r->election_deadline_ms) {
		if (r->self_voter)
			become_precandidate(r);
		else
			reset_election_timer(r);
	}
}

uint64_t raft_next_deadline(const struct raft *r)
{
	if (r->role == RAFT_LEADER)
		return r->heartbeat_deadline_ms < r->quorum_check_ms ? r->heartbeat_deadline_ms
		                                                     : r->quorum_check_ms;
	return r->election_deadline_ms;
}

/* ---- messages in ---- */

static int log_up_to_date(const struct raft *r, uint64_t idx, uint64_t term)
{
	/* §5.4.1: the later last term wins; equal terms, the longer log */
	return term > last_term(r) || (term == last_term(r) && idx >= last_index(r));
}

/* A follower that heard from its leader within the minimum election
 * timeout ignores (pre-)votes (§4.2.3): a healthy leader is not deposed by
 * a node that was cut off and came back. */
static int in_lease(const struct raft *r)
{
	return r->role == RAFT_FOLLOWER && r->heard_leader && r->has_leader &&
	       r->now_ms - r->leader_heard_ms < r->cfg.election_ms;
}

static void on_prevote(struct raft *r, const struct raft_msg *m)
{
	struct out_msg *o = send_msg(r, RAFT_MSG_PREVOTE_RESP, &m->from);
	if (!o)
		return;
	int grant = m->term > r->term && !in_lease(r) && r->role != RAFT_LEADER &&
	            log_up_to_date(r, m->last_index, m->last_term);
	o->m.granted = (uint8_t)grant;
	/* granted: the term asked about; refused: ours (it may be higher) */
	o->m.term = grant ? m->term : r->term;
}

static void on_vote(struct raft *r, const struct raft_msg *m)
{
	int grant = m->term == r->term &&
	            (!r->has_vote || raft_id_eq(&r->vote, &m->from)) &&
	            log_up_to_date(r, m->last_index, m->last_term);
	if (grant) {
		r->vote = m->from;
		r->has_vote = 1;
		r->hard_dirty = 1;
		reset_election_timer(r);
	}
	struct out_msg *o = send_msg(r, RAFT_MSG_VOTE_RESP, &m->from);
	if (o)
		o->m.granted = (uint8_t)grant;
}

static void on_vote_resp(struct raft *r, const struct raft_msg *m, int pre)
{
	if (r->role != (pre ? RAFT_PRECANDIDATE : RAFT_CANDIDATE))
		return;
	if (pre && m->term != r->term + 1)
		return; /* an answer to an older round */
	struct peer *p = peer_find(r, &m->from);
	if (!p || !m->granted)
		return;
	p->granted = 1;
	if (granted_count(r) >= quorum(r)) {
		if (pre)
			become_candidate(r);
		else
			become_leader(r);
	}
}

/* Where a follower's log stops matching prev: the first index of the
 * conflicting term, so the leader skips a whole term per round trip. */
static uint64_t conflict_hint(const struct raft *r, uint64_t prev_index)
{
	if (prev_index > last_index(r))
		return last_index(r);
	uint64_t t = term_at(r, prev_index);
	uint64_t i = prev_index;
	while (i > r->commit && i > 1 && term_at(r, i - 1) == t)
		i--;
	return i - 1;
}

static void heard_leader(struct raft *r, const struct raft_msg *m)
{
	if (r->role != RAFT_FOLLOWER || !r->has_leader || !raft_id_eq(&r->leader, &m->from))
		become_follower(r, r->term, &m->from);
	r->leader_heard_ms = r->now_ms;
	r->heard_leader = 1;
	reset_election_timer(r);
}

static int on_append(struct raft *r, const struct raft_msg *m)
{
	struct out_msg *o;
	heard_leader(r, m);
	if (m->prev_index < r->offset) {
		/* it starts inside what this node compacted: committed here, so
		 * the same in the leader's log (Leader Completeness); say how
		 * far it matches and the leader goes on from there */
		o = send_msg(r, RAFT_MSG_APPEND_RESP, &m->from);
		if (o) {
			o->m.success = 1;
			o->m.match_index = r->commit;
		}
		return 0;
	}
	if (m->prev_index > last_index(r) ||
	    (m->prev_index > 0 && term_at(r, m->prev_index) != m->prev_term)) {
		o = send_msg(r, RAFT_MSG_APPEND_RESP, &m->from);
		if (o)
			o->m.match_index = conflict_hint(r, m->prev_index);
		return 0;
	}
	for (uint32_t k = 0; k < m->n_entries; k++) {
		const struct raft_entry *e = &m->entries[k];
		uint64_t idx = m->prev_index + 1 + k;
		if (idx <= last_index(r)) {
			if (term_at(r, idx) == e->term)
				continue; /* already there (a resend) */
			if (idx <= r->commit)
				return ERR_PROTOCOL; /* would rewrite a committed entry */
			log_truncate(r, idx);
		}
		int rc = log_append(r, e->term, e->type, e->data, e->len);
		if (rc != 0)
			return rc;
		if (e->type == RAFT_ENTRY_CONFIG)
			config_refresh(r);
	}
	uint64_t last_new = m->prev_index + m->n_entries;
	uint64_t c = m->commit < last_new ? m->commit : last_new;
	if (c > r->commit)
		r->commit = c;
	o = send_msg(r, RAFT_MSG_APPEND_RESP, &m->from);
	if (o) {
		o->m.success = 1;
		o->m.match_index = last_new;
	}
	return 0;
}

/* A follower's snapshot from the leader is whole: it becomes the base of
 * the log. When the log holds the snapshot's last entry with its term,
 * what follows is kept (§7); otherwise the whole log goes. */
static void snapshot_install(struct raft *r)
{
	struct raft_snapshot *sn = &r->rx;
	uint64_t idx = sn->at.index;
	if (idx <= last_index(r) && term_at(r, idx) == sn->at.term) {
		uint64_t drop = idx - r->offset;
		for (uint64_t i = 0; i < drop; i++)
			free(r->log[i].data);
		memmove(r->log, r->log + drop, (size_t)(r->n_log - drop) * sizeof(r->log[0]));
		r->n_log -= drop;
	} else {
		for (uint64_t i = 0; i < r->n_log; i++)
			free(r->log[i].data);
		r->n_log = 0;
		/* storage: the snapshot deletes up to idx, this the rest */
		r->truncate_from = idx + 1;
	}
	r->offset = idx;
	r->offset_term = sn->at.term;
	memcpy(r->base_voters, sn->at.voters, sn->at.n_voters * sizeof(sn->at.voters[0]));
	r->n_base_voters = sn->at.n_voters;
	if (r->n_log == 0 || r->persisted < idx)
		r->persisted = idx;
	if (r->commit < idx)
		r->commit = idx;
	r->applied = idx; /* the caller restores from it in the next ready */
	free(r->snap.data);
	r->snap = *sn;
	memset(&r->rx, 0, sizeof(r->rx));
	r->rx_got = 0;
	r->snap_pending = 1;
	config_refresh(r);
}

static void on_snapshot(struct raft *r, const struct raft_msg *m)
{
	heard_leader(r, m);
	struct out_msg *o;
	if (m->snap.index <= r->commit) {
		rx_drop(r);
		/* it has all that already (a resend, or it caught up) */
		o = send_msg(r, RAFT_MSG_SNAPSHOT_RESP, &m->from);
		if (o) {
			o->m.snap = m->snap;
			o->m.snap.n_voters = 0;
			o->m.success = 1;
			o->m.match_index = r->commit;
			o->m.snap_offset = m->snap_total;
		}
		return;
	}
	if (r->rx.data && (r->rx.at.index != m->snap.index || r->rx.at.term != m->snap.term ||
	                   r->rx.len != m->snap_total)) {
		free(r->rx.data); /* another snapshot: start over */
		memset(&r->rx, 0, sizeof(r->rx));
		r->rx_got = 0;
	}
	if (!r->rx.data && m->snap_offset == 0) {
		r->rx.data = malloc(m->snap_total ? m->snap_total : 1);
		if (r->rx.data) {
			r->rx.at = m->snap;
			r->rx.len = m->snap_total;
			r->rx_got = 0;
		}
	}
	if (r->rx.data && m->snap_offset == r->rx_got) {
		if (m->chunk_len)
			memcpy(r->rx.data + r->rx_got, m->chunk, m->chunk_len);
		r->rx_got += m->chunk_len;
	}
	o = send_msg(r, RAFT_MSG_SNAPSHOT_RESP, &m->from);
	if (o) {
		o->m.snap = m->snap;
		o->m.snap.n_voters = 0;
		o->m.snap_offset = r->rx.data ? r->rx_got : 0;
	}
	if (r->rx.data && r->rx_got == r->rx.len) {
		snapshot_install(r);
		if (o) {
			o->m.success = 1;
			o->m.match_index = r->offset;
		}
	}
}

static void on_snapshot_resp(struct raft *r, const struct raft_msg *m)
{
	if (r->role != RAFT_LEADER)
		return;
	struct peer *p = peer_find(r, &m->from);
	if (!p)
		p = learner_find(r, &m->from);
	if (!p)
		return;
	p->heard_ms = r->now_ms;
	if (m->success) {
		p->pending = 0;
		if (m->match_index > last_index(r))
			return;
		if (m->match_index > p->match)
			p->match = m->match_index;
		if (p->next < p->match + 1)
			p->next = p->match + 1;
		p->snap_index = 0;
		maybe_commit(r);
		if (r->role == RAFT_LEADER && p->next <= last_index(r))
			send_append(r, p);
		return;
	}
	if (m->snap.index != r->snap.at.index || m->snap.index != p->snap_index)
		return; /* about another snapshot: the next beat sends the current one */
	p->pending = 0;
	p->snap_off = m->snap_offset <= r->snap.len ? m->snap_offset : 0;
	send_append(r, p);
}

static void on_append_resp(struct raft *r, const struct raft_msg *m)
{
	if (r->role != RAFT_LEADER)
		return;
	struct peer *p = peer_find(r, &m->from);
	if (!p)
		p = learner_find(r, &m->from); /* follows, never counts */
	if (!p)
		return;
	p->heard_ms = r->now_ms;
	p->pending = 0;
	if (m->success) {
		if (m->match_index > last_index(r))
			return; /* cannot be: an answer to another leader's log */
		if (m->match_index > p->match)
			p->match = m->match_index;
		if (p->next < p->match + 1)
			p->next = p->match + 1;
		maybe_commit(r);
		if (r->role == RAFT_LEADER && p->next <= last_index(r))
			send_append(r, p);
		return;
	}
	/* refused: back off to the hint (never below what it has matched) */
	uint64_t next = m->match_index + 1;
	if (next > p->next - 1 && p->next > 1)
		next = p->next - 1;
	if (next <= p->match)
		next = p->match + 1;
	p->next = next ? next : 1;
	send_append(r, p);
}

/* A voter set on the wire: whole ids, none all-zero, none twice. */
static int config_valid(const struct raft_entry *e)
{
	if (e->len == 0 || e->len % RAFT_ID_BYTES || e->len / RAFT_ID_BYTES > RAFT_VOTERS_MAX)
		return 0;
	static const uint8_t zero[RAFT_ID_BYTES];
	uint32_t n = e->len / RAFT_ID_BYTES;
	for (uint32_t i = 0; i < n; i++) {
		if (memcmp(e->data + i * RAFT_ID_BYTES, zero, RAFT_ID_BYTES) == 0)
			return 0;
		for (uint32_t j = 0; j < i; j++)
			if (memcmp(e->data + i * RAFT_ID_BYTES, e->data + j * RAFT_ID_BYTES, RAFT_ID_BYTES) == 0)
				return 0;
	}
	return 1;
}

static int msg_valid(const struct raft *r, const struct raft_msg *m)
{
	if (!raft_id_eq(&m->to, &r->cfg.self) || raft_id_eq(&m->from, &r->cfg.self))
		return 0;
	/* terms and indexes a real cluster never reaches: a forged or broken
	 * peer must not wrap our term or our log */
	if (m->term > RAFT_TERM_MAX || m->last_term > RAFT_TERM_MAX || m->prev_term > RAFT_TERM_MAX ||
	    m->last_index > RAFT_INDEX_MAX || m->prev_index > RAFT_INDEX_MAX ||
	    m->commit > RAFT_INDEX_MAX + RAFT_APPEND_ENTRIES_MAX ||
	    m->match_index > RAFT_INDEX_MAX + RAFT_APPEND_ENTRIES_MAX)
		return 0;
	if (m->type < RAFT_MSG_PREVOTE || m->type > RAFT_MSG_SNAPSHOT_RESP)
		return 0;
	if (m->type == RAFT_MSG_SNAPSHOT) {
		if (!point_valid(&m->snap) || m->snap.index == 0 || m->snap.n_voters == 0 ||
		    m->snap.term == 0 || m->snap.term > m->term || m->snap_total > RAFT_SNAPSHOT_BYTES_MAX ||
		    m->snap_offset > m->snap_total || m->chunk_len > m->snap_total - m->snap_offset ||
		    m->chunk_len > RAFT_SNAPSHOT_CHUNK_BYTES || (m->chunk_len && !m->chunk))
			return 0;
	}
	if (m->type == RAFT_MSG_SNAPSHOT_RESP &&
	    (m->snap.index > RAFT_INDEX_MAX || m->snap_offset > RAFT_SNAPSHOT_BYTES_MAX))
		return 0;
	if (m->type == RAFT_MSG_APPEND) {
		if (m->n_entries > RAFT_APPEND_ENTRIES_MAX || (m->n_entries && !m->entries))
			return 0;
		uint64_t prev_term = m->prev_term;
		for (uint32_t k = 0; k < m->n_entries; k++) {
			const struct raft_entry *e = &m->entries[k];
			if (e->term < prev_term || e->term > m->term || e->len > RAFT_ENTRY_BYTES_MAX ||
			    (e->len && !e->data) || e->type > RAFT_ENTRY_CONFIG ||
			    (e->type == RAFT_ENTRY_CONFIG && !config_valid(e)))
				return 0;
			prev_term = e->term;
		}
		if (m->prev_index > UINT64_MAX - RAFT_APPEND_ENTRIES_MAX)
			return 0;
	}
	return 1;
}

int raft_step(struct raft *r, uint64_t now_ms, const struct raft_msg *m)
{
	if (now_ms > r->now_ms)
		r->now_ms = now_ms;
	if (!msg_valid(r, m))
		return ERR_PROTOCOL;
	if (m->type == RAFT_MSG_PREVOTE) {
		on_prevote(r, m); /* never moves a term */
		return 0;
	}
	if (m->type == RAFT_MSG_PREVOTE_RESP) {
		if (!m->granted && m->term > r->term)
			become_follower(r, m->term, NULL); /* a real, higher term */
		else
			on_vote_resp(r, m, 1);
		return 0;
	}
	if (m->term > r->term) {
		if (m->type == RAFT_MSG_VOTE && in_lease(r))
			return 0; /* §4.2.3: ignored, term unchanged */
		int from_leader = m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_SNAPSHOT;
		become_follower(r, m->term, from_leader ? &m->from : NULL);
	} else if (m->term < r->term) {
		/* a stale leader learns the newer term from our answer */
		if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_SNAPSHOT) {
			struct out_msg *o = send_msg(r, RAFT_MSG_APPEND_RESP, &m->from);
			if (o)
				o->m.match_index = 0;
		} else if (m->type == RAFT_MSG_VOTE) {
			struct out_msg *o = send_msg(r, RAFT_MSG_VOTE_RESP, &m->from);
			(void)o;
		}
		return 0;
	}
	switch (m->type) {
	case RAFT_MSG_VOTE: on_vote(r, m); return 0;
	case RAFT_MSG_VOTE_RESP: on_vote_resp(r, m, 0); return 0;
	case RAFT_MSG_APPEND:
		if (r->role == RAFT_LEADER)
			return ERR_PROTOCOL; /* two leaders in one term: cannot be */
		return on_append(r, m);
	case RAFT_MSG_APPEND_RESP: on_append_resp(r, m); return 0;
	case RAFT_MSG_SNAPSHOT:
		if (r->role == RAFT_LEADER)
			return ERR_PROTOCOL;
		on_snapshot(r, m);
		return 0;
	case RAFT_MSG_SNAPSHOT_RESP: on_snapshot_resp(r, m); return 0;
	default: return ERR_PROTOCOL;
	}
}

/* ---- proposals ---- */

int raft_propose(struct raft *r, uint64_t now_ms, const void *data, uint32_t len,
                 uint64_t *index)
{
	if (now_ms > r->now_ms)
		r->now_ms = now_ms;
	if (r->role != RAFT_LEADER)
		return ERR_DENIED;
	if (len > RAFT_ENTRY_BYTES_MAX)
		return ERR_TOO_LARGE;
	int rc = log_append(r, r->term, RAFT_ENTRY_DATA, data, len);
	if (rc != 0)
		return rc;
	if (index)
		*index = last_index(r);
	for (uint32_t i = 0; i < r->n_peers; i++)
		if (!r->peers[i].pending)
			send_append(r, &r->peers[i]);
	for (uint32_t i = 0; i < r->n_learners; i++)
		if (!r->learners[i].pending)
			send_append(r, &r->learners[i]);
	return 0;
}

int raft_change_voter(struct raft *r, uint64_t now_ms, const struct raft_id *id, int add,
                      uint64_t *index)
{
	if (now_ms > r->now_ms)
		r->now_ms = now_ms;
	if (r->role != RAFT_LEADER)
		return ERR_DENIED;
	/* one change at a time, and only once this term's no-op is committed
	 * (the 2015 erratum to single-server changes) */
	if (r->config_index > r->commit || term_at(r, r->commit) != r->term)
		return ERR_FULL;
	struct raft_id v[RAFT_VOTERS_MAX];
	uint32_t n = 0, found = 0;
	for (uint32_t i = 0; i < r->n_voters; i++) {
		if (raft_id_eq(&r->voters[i], id)) {
			found = 1;
			if (!add)
				continue;
		}
		v[n++] = r->voters[i];
	}
	if (add) {
		if (found || n == RAFT_VOTERS_MAX)
			return ERR_INVALID;
		v[n++] = *id;
	} else if (!found || n == 0) {
		return ERR_INVALID;
	}
	int rc = log_append(r, r->term, RAFT_ENTRY_CONFIG, v, n * RAFT_ID_BYTES);
	if (rc != 0)
		return rc;
	config_refresh(r);
	if (index)
		*index = last_index(r);
	broadcast_append(r);
	maybe_commit(r);
	return 0;
}

/* ---- ready ---- */

int raft_has_ready(const struct raft *r)
{
	return r->hard_dirty || r->truncate_from || r->persisted < last_index(r) || r->n_out ||
	       r->applied < r->commit || r->snap_pending;
}

void raft_ready(struct raft *r, struct raft_ready *rd)
{
	memset(rd, 0, sizeof(*rd));
	rd->hard_changed = r->hard_dirty;
	rd->hard.term = r->term;
	rd->hard.vote = r->vote;
	rd->hard.has_vote = r->has_vote;
	rd->truncate_from = r->truncate_from;
	if (r->snap_pending)
		rd->snapshot = &r->snap;
	if (r->persisted < last_index(r)) {
		rd->append = ent(r, r->persisted + 1);
		rd->n_append = (uint32_t)(last_index(r) - r->persisted);
	}
	r->ready_append_from = r->persisted + 1;
	uint32_t n = 0;
	for (uint32_t i = 0; i < r->n_out; i++) {
		struct raft_msg *m = &r->ready_msgs[n];
		*m = r->out[i].m;
		if (m->type == RAFT_MSG_SNAPSHOT) {
			/* the chunk of the snapshot held now; one queued for a
			 * snapshot since replaced is dropped (a beat resends) */
			if (m->snap.index != r->snap.at.index || m->snap_offset + m->chunk_len > r->snap.len)
				continue;
			m->chunk = m->chunk_len ? r->snap.data + m->snap_offset : NULL;
		} else if (m->n_entries) {
			/* the range names entries of this leader's log, which only
			 * grows while it leads (queued appends go when it stops,
			 * and those of compacted entries at compaction) */
			assert(r->out[i].ent_from > r->offset &&
			       r->out[i].ent_from + m->n_entries - 1 <= last_index(r));
			m->entries = ent(r, r->out[i].ent_from);
		}
		n++;
	}
	rd->msgs = r->ready_msgs;
	rd->n_msgs = n;
	/* apply only what is committed and durable here */
	uint64_t to = r->commit < last_index(r) ? r->commit : last_index(r);
	if (to > r->applied) {
		rd->apply = ent(r, r->applied + 1);
		rd->n_apply = (uint32_t)(to - r->applied);
	}
	r->ready_apply_to = to;
}

void raft_advance(struct raft *r, const struct raft_ready *rd)
{
	if (rd->hard_changed && rd->hard.term == r->term)
		r->hard_dirty = 0;
	r->truncate_from = 0;
	if (rd->snapshot)
		r->snap_pending = 0;
	if (rd->n_append) {
		uint64_t last = rd->append[rd->n_append - 1].index;
		if (last > r->persisted && last <= last_index(r))
			r->persisted = last;
	}
	/* messages were sent: the outbox empties */
	r->n_out = 0;
	if (r->ready_apply_to > r->applied)
		r->applied = r->ready_apply_to;
	/* the leader's own entries now count toward a majority */
	maybe_commit(r);
}

/* ---- snapshots ---- */

int raft_snapshot_take(struct raft *r, uint64_t index, uint8_t *data, uint64_t len,
                       uint64_t keep, struct raft_point *base)
{
	if (len > RAFT_SNAPSHOT_BYTES_MAX) {
		free(data);
		return ERR_TOO_LARGE;
	}
	if (index == 0 || index > r->applied || index <= r->snap.at.index || index < r->offset ||
	    (len && !data)) {
		free(data);
		return ERR_INVALID;
	}
	/* a follower fetching the snapshot held keeps it alive: replacing it
	 * would restart the transfer from its first byte, and a leader that
	 * compacts faster than a transfer takes would never let it end. A
	 * follower silent for ten election timeouts (down: its chunks are
	 * resent, unanswered) no longer holds it. */
	if (r->role == RAFT_LEADER && r->snap.at.index) {
		for (uint32_t i = 0; i < r->n_peers + r->n_learners; i++) {
			const struct peer *p = i < r->n_peers ? &r->peers[i] : &r->learners[i - r->n_peers];
			if (p->snap_index == r->snap.at.index && p->next <= r->offset &&
			    r->now_ms - p->heard_ms < 10ull * r->cfg.election_ms) {
				free(data);
				return ERR_BUSY;
			}
		}
	}
	struct raft_snapshot sn = {.data = data, .len = len};
	sn.at.index = index;
	sn.at.term = term_at(r, index);
	point_voters(r, index, &sn.at);
	/* the new base: keep entries for followers a little behind */
	uint64_t c = index > keep ? index - keep : 0;
	if (c < r->offset)
		c = r->offset;
	struct raft_point b = {.index = c, .term = term_at(r, c)};
	point_voters(r, c, &b);
	/* queued appends of entries about to go: dropped (a beat resends,
	 * as the snapshot when they are gone) */
	uint32_t k = 0;
	for (uint32_t i = 0; i < r->n_out; i++) {
		const struct out_msg *o = &r->out[i];
		if (o->m.type == RAFT_MSG_APPEND && o->m.n_entries && o->ent_from <= c) {
			struct peer *p = peer_find(r, &o->m.to);
			if (!p)
				p = learner_find(r, &o->m.to);
			if (p)
				p->pending = 0;
			continue;
		}
		r->out[k++] = *o;
	}
	r->n_out = k;
	uint64_t drop = c - r->offset;
	for (uint64_t i = 0; i < drop; i++)
		free(r->log[i].data);
	memmove(r->log, r->log + drop, (size_t)(r->n_log - drop) * sizeof(r->log[0]));
	r->n_log -= drop;
	r->offset = c;
	r->offset_term = b.term;
	memcpy(r->base_voters, b.voters, b.n_voters * sizeof(b.voters[0]));
	r->n_base_voters = b.n_voters;
	free(r->snap.data);
	r->snap = sn;
	if (r->config_index < c)
		r->config_index = c; /* the set in force is the base's (unchanged) */
	if (base)
		*base = b;
	return 0;
}

const struct raft_snapshot *raft_snapshot_get(const struct raft *r)
{
	return r->snap.at.index ? &r->snap : NULL;
}

/* ---- status ---- */

void raft_status(const struct raft *r, struct raft_status *st)
{
	memset(st, 0, sizeof(*st));
	st->role = r->role;
	st->leader_ready = r->role == RAFT_LEADER && r->applied >= r->term_start;
	st->term = r->term;
	st->has_leader = r->has_leader;
	st->leader = r->leader;
	st->commit_index = r->commit;
	st->applied_index = r->applied;
	st->last_index = last_index(r);
	st->first_index = r->offset + 1;
	st->snapshot_index = r->snap.at.index;
	st->voter_count = r->n_voters;
	memcpy(st->voters, r->voters, r->n_voters * sizeof(r->voters[0]));
	for (uint32_t v = 0; v < r->n_voters; v++) {
		const struct peer *p = NULL;
		for (uint32_t i = 0; i < r->n_peers; i++)
			if (raft_id_eq(&r->peers[i].id, &r->voters[v]))
				p = &r->peers[i];
		st->heard_ago_ms[v] = p && r->now_ms > p->heard_ms ? r->now_ms - p->heard_ms : 0;
		st->match[v] = p ? p->match : r->persisted;
	}
}

const struct raft_entry *raft_entry_at(const struct raft *r, uint64_t index)
{
	if (index <= r->offset || index > last_index(r))
		return NULL;
	return ent(r, index);
}
