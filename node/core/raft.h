/*
 * raft.h - the Raft consensus core (Ongaro & Ousterhout, "In Search of an
 * Understandable Consensus Algorithm", 2014; Ongaro's dissertation, 2014,
 * for pre-vote §9.6, check-quorum §6.2 and single-server membership
 * changes §4.1). Pure: no sockets, files, clocks or OS randomness. The
 * caller passes the monotonic time in and a seed for the election timeouts.
 *
 * Shape (as etcd's raft.Ready): the core never performs I/O itself. Each
 * call (tick, step, propose) changes state in memory; the caller then takes
 * a `struct raft_ready` that says, in this order,
 *   1. what to make durable: the hard state (term, vote) and the log suffix
 *      to write (after truncating from `truncate_from` when a conflicting
 *      suffix was replaced),
 *   2. the messages to send, which may go out only once (1) is durable
 *      (Raft's rule: term and vote durable before any answer, entries
 *      durable before they are acknowledged),
 *   3. the entries newly committed, to apply in order,
 * and calls raft_advance() once it has done all three. That fits a loop that
 * group-commits: many steps, one fsync, then the sends.
 *
 * Rules carried here, with where they come from:
 *   - terms and votes: one vote per term, durable before answering (§5.2);
 *   - the up-to-date check on votes (§5.4.1);
 *   - randomized election timeouts in [timeout, 2*timeout) (§5.2);
 *   - pre-vote: a would-be candidate first asks whether it could win,
 *     without raising its term, so a node cut off and back does not force
 *     a healthy leader out (dissertation §9.6);
 *   - a follower that heard from a leader within the minimum election
 *     timeout ignores (pre-)vote requests (§4.2.3, disruptive servers);
 *   - check-quorum: a leader that has not heard from a majority for an
 *     election timeout steps down (§6.2), so a leader cut off in a minority
 *     stops acting as leader; it can never commit anyway;
 *   - log matching via prevLogIndex/prevLogTerm, conflicting suffixes
 *     truncated (§5.3), with the follower's hint to skip back fast;
 *   - a leader commits only entries of its own term by counting replicas
 *     (§5.4.2); a no-op at the start of each term commits the rest;
 *   - membership: one voter added or removed at a time, the new set in
 *     force as soon as its entry is in the log; a change is refused while
 *     another is uncommitted or before the leader committed an entry of its
 *     term (dissertation §4.1 and its 2015 erratum).
 *
 * Snapshots and compaction (§7): the caller serializes its state machine at
 * an applied index and hands the bytes to raft_snapshot_take(), which drops
 * the log up to a point at or before it (keeping some entries so a follower
 * a little behind still gets appends). A follower that needs an entry no
 * longer held gets the snapshot instead, in chunks (RAFT_MSG_SNAPSHOT, one
 * chunk in flight per follower, resumed from the offset it acknowledged);
 * once whole, the follower's ready carries it: persist it, then restore the
 * state machine from it before applying anything after it.
 *
 * Not here: leadership transfer.
 *
 * Threading: none; one struct raft per node, owned by its caller.
 */
#ifndef CHORUS_CORE_RAFT_H
#define CHORUS_CORE_RAFT_H

#include <stddef.h>
#include <stdint.h>

#define RAFT_ID_BYTES 16
#define RAFT_VOTERS_MAX 9
#define RAFT_ENTRY_BYTES_MAX (1u << 20)     /* one entry's data */
#define RAFT_APPEND_ENTRIES_MAX 64          /* entries in one append message */
#define RAFT_APPEND_BYTES_MAX (4u << 20)    /* data in one append message */
#define RAFT_INFLIGHT_MAX 4                 /* unanswered appends per follower */
#define RAFT_MSGS_MAX 64                    /* messages in one ready */
#define RAFT_LOG_ENTRIES_MAX (1u << 22)     /* entries held (snapshots compact the log) */
#define RAFT_TERM_MAX (1ull << 48)          /* a message with a larger term is refused */
#define RAFT_INDEX_MAX (1ull << 48)         /* and one with a larger index */
#define RAFT_SNAPSHOT_BYTES_MAX (512ull << 20) /* under sqlite's 10^9-byte blob limit */
#define RAFT_SNAPSHOT_CHUNK_BYTES (1u << 20)

struct raft_id {
	uint8_t b[RAFT_ID_BYTES];
};

enum raft_role {
	RAFT_FOLLOWER = 0,
	RAFT_PRECANDIDATE,
	RAFT_CANDIDATE,
	RAFT_LEADER,
};
const char *raft_role_name(int role);

enum raft_entry_type {
	RAFT_ENTRY_NOOP = 0,   /* a leader's first entry of its term */
	RAFT_ENTRY_DATA = 1,   /* for the state machine */
	RAFT_ENTRY_CONFIG = 2, /* the voter set: data = n * RAFT_ID_BYTES */
};

struct raft_entry {
	uint64_t term;
	uint64_t index;
	uint8_t type;
	uint32_t len;
	uint8_t *data; /* owned by whoever holds the entry */
};

enum raft_msg_type {
	RAFT_MSG_PREVOTE = 1,
	RAFT_MSG_PREVOTE_RESP,
	RAFT_MSG_VOTE,
	RAFT_MSG_VOTE_RESP,
	RAFT_MSG_APPEND,
	RAFT_MSG_APPEND_RESP,
	RAFT_MSG_SNAPSHOT,
	RAFT_MSG_SNAPSHOT_RESP,
};

/* A point of the log: an index, its term, and the voter set in force
 * there (the last config entry at or before it). */
struct raft_point {
	uint64_t index, term;
	uint32_t n_voters;
	struct raft_id voters[RAFT_VOTERS_MAX];
};

/* The state machine after applying every entry up to at.index, as bytes
 * only the caller understands. data is owned by whoever holds it. */
struct raft_snapshot {
	struct raft_point at;
	uint8_t *data;
	uint64_t len;
};
const char *raft_msg_name(int type);

/* One message. In a ready, entries point into the core's log (valid until
 * raft_advance); handed to raft_step, they are copied if kept. */
struct raft_msg {
	uint8_t type;
	struct raft_id from, to;
	uint64_t term;      /* PREVOTE: the term it would stand in; otherwise the sender's */
	/* PREVOTE, VOTE: the candidate's last log entry */
	uint64_t last_index, last_term;
	/* *_RESP */
	uint8_t granted;    /* PREVOTE_RESP, VOTE_RESP */
	uint8_t success;    /* APPEND_RESP */
	uint64_t match_index; /* APPEND_RESP: success: last index now matching; else a hint */
	/* APPEND */
	uint64_t prev_index, prev_term, commit;
	uint32_t n_entries;
	const struct raft_entry *entries;
	/* SNAPSHOT: bytes [snap_offset, snap_offset + chunk_len) of the
	 * leader's snapshot at snap (snap_total bytes in all).
	 * SNAPSHOT_RESP: snap.index and the bytes received so far in
	 * snap_offset; success once installed. */
	struct raft_point snap;
	uint64_t snap_total, snap_offset;
	uint32_t chunk_len;
	const uint8_t *chunk;
};

struct raft_hard {
	uint64_t term;
	struct raft_id vote; /* all zero: none */
	int has_vote;
};

struct raft_config {
	struct raft_id self;
	uint32_t election_ms;  /* the minimum election timeout; randomized up to 2x */
	uint32_t heartbeat_ms; /* leader's append period when idle; < election_ms / 2 */
	uint64_t seed;         /* election timeouts */
	uint32_t snapshot_chunk_bytes; /* 0: RAFT_SNAPSHOT_CHUNK_BYTES (smaller: tests) */
};

/* What the caller does after a call: persist, then send, then apply. */
struct raft_ready {
	int hard_changed;
	struct raft_hard hard;
	/* the log from truncate_from on is gone (0: nothing truncated) */
	uint64_t truncate_from;
	/* entries to append to durable storage, in order (point into the log) */
	const struct raft_entry *append;
	uint32_t n_append;
	/* messages, to send once the above is durable */
	const struct raft_msg *msgs;
	uint32_t n_msgs;
	/* a snapshot received from the leader: persist it (it replaces the
	 * stored one and the log up to its index; truncate_from says when the
	 * rest of the log went too) with the rest of (1), and restore the
	 * state machine from it before applying `apply` */
	const struct raft_snapshot *snapshot;
	/* committed entries to apply, in order (point into the log) */
	const struct raft_entry *apply;
	uint32_t n_apply;
};

struct raft_status {
	int role;
	/* a leader that has applied everything before its term (its no-op is
	 * committed and applied): only then does its state machine show every
	 * committed entry, so only then may it decide from that state */
	int leader_ready;
	uint64_t term;
	struct raft_id leader; /* valid when has_leader */
	int has_leader;
	uint64_t commit_index, applied_index, last_index;
	uint64_t first_index;    /* the first entry held (after compaction) */
	uint64_t snapshot_index; /* 0: none */
	uint32_t voter_count;
	struct raft_id voters[RAFT_VOTERS_MAX];
	/* leader: ms since each voter last answered (0 for itself), and the
	 * index it is known to match */
	uint64_t heard_ago_ms[RAFT_VOTERS_MAX];
	uint64_t match[RAFT_VOTERS_MAX];
};

struct raft;

/* Creates a node from what it persisted: hard state, the base (the point
 * just before the first log entry: index 0 and the initial voter set for a
 * log never compacted; a fresh single node: itself), the snapshot (NULL:
 * none; at.index between base->index and the last entry; copied) and the
 * log entries (copied; indexes base->index + 1.. in order). Returns NULL
 * on bad input (entries out of order, too many voters, a snapshot outside
 * the log) or out of memory. */
struct raft *raft_create(const struct raft_config *cfg, const struct raft_hard *hard,
                         const struct raft_point *base, const struct raft_snapshot *snap,
                         const struct raft_entry *log, uint32_t n_log, uint64_t now_ms);
void raft_destroy(struct raft *r);

/* Time passes: election timeouts, heartbeats, check-quorum. */
void raft_tick(struct raft *r, uint64_t now_ms);
/* The next monotonic ms raft_tick wants to run at. */
uint64_t raft_next_deadline(const struct raft *r);

/* A message from a peer. ERR_PROTOCOL when malformed (to this node, from
 * an unknown type, entries out of order); the message is then ignored. */
int raft_step(struct raft *r, uint64_t now_ms, const struct raft_msg *m);

/* Appends an entry as leader (data copied). ERR_DENIED when not leader,
 * ERR_TOO_LARGE over RAFT_ENTRY_BYTES_MAX, ERR_FULL when the log is full. */
int raft_propose(struct raft *r, uint64_t now_ms, const void *data, uint32_t len,
                 uint64_t *index);
/* Adds (add = 1) or removes a voter, as leader. ERR_DENIED when not leader,
 * ERR_FULL (a change is still uncommitted, or no entry of this term is
 * committed yet: try again), ERR_INVALID (already a voter / not a voter /
 * would leave no voter / over RAFT_VOTERS_MAX). */
int raft_change_voter(struct raft *r, uint64_t now_ms, const struct raft_id *id, int add,
                      uint64_t *index);

/* Learners: members that are not voters but follow the log (a leader
 * sends them appends, so they know the leader and hold the schedules;
 * they never vote or count toward a majority). The shell sets them from
 * its membership; at most RAFT_LEARNERS_MAX, ids that are voters are
 * ignored. */
#define RAFT_LEARNERS_MAX 64
void raft_set_learners(struct raft *r, const struct raft_id *ids, uint32_t n);
/* Leader: how far a learner follows, to promote only one that is caught
 * up (etcd's rule for learners): the index it is known to match and the ms
 * since it last answered. 0, or ERR_NOT_FOUND (not a learner, or this node
 * does not lead). */
int raft_learner_progress(const struct raft *r, const struct raft_id *id, uint64_t *match,
                          uint64_t *heard_ago_ms);

/* Compaction: the caller's state machine, serialized after applying every
 * entry up to `index` (<= the applied index, > the last snapshot's), is
 * `data` (len bytes; the core takes it over and frees it). The core keeps
 * it to send to followers that fall behind, and drops the log up to `index
 * - keep` (at most). *base is the new base: the caller persists the
 * snapshot and deletes the entries up to base->index (raftlog_compact).
 * Call it between raft_advance and the next raft_ready, never inside a
 * ready. 0, ERR_INVALID (index out of range: data is freed), ERR_TOO_LARGE
 * over RAFT_SNAPSHOT_BYTES_MAX (freed), ERR_BUSY (freed) while a follower
 * fetches the snapshot held (replacing it would restart the transfer;
 * try later). */
int raft_snapshot_take(struct raft *r, uint64_t index, uint8_t *data, uint64_t len,
                       uint64_t keep, struct raft_point *base);
/* The snapshot held (NULL: none). */
const struct raft_snapshot *raft_snapshot_get(const struct raft *r);

/* 1 when there is something to do (persist, send or apply). */
int raft_has_ready(const struct raft *r);
/* Fills rd; valid until raft_advance. */
void raft_ready(struct raft *r, struct raft_ready *rd);
/* The caller persisted, sent and applied what rd said. */
void raft_advance(struct raft *r, const struct raft_ready *rd);

void raft_status(const struct raft *r, struct raft_status *st);
/* An entry of the log by index (NULL when outside it). */
const struct raft_entry *raft_entry_at(const struct raft *r, uint64_t index);

int raft_id_eq(const struct raft_id *a, const struct raft_id *b);

#endif
