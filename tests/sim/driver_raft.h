/*
 * driver_raft.h - the simulator's driver for the Raft core
 * (node/core/raft.c), and the world its scenarios look at.
 *
 * Every node runs a real `struct raft` fed its node's MONOTONIC clock, in
 * the shell's order: take a ready, write what it says to persist, fsync,
 * and only when the fsync is durable send its messages, apply its
 * committed entries and advance. Messages arriving while a node waits for
 * its fsync are queued (bounded), as the node's loop would hold them.
 * Messages leave as bytes from the real codec (node/codec/raft_codec.c).
 *
 * The disk: each node's durable hard state and log live in the world (they
 * survive a crash); what a ready asked to persist is pending until its
 * fsync completes, and a crash throws the pending part away.
 *
 * Invariants checked on every step:
 *   - election safety: at most one leader per term, ever;
 *   - quorum durability: an entry is applied only when a majority of the
 *     voters hold it DURABLY (same index, same term) — so a leader cut off
 *     in a minority can never commit, and an fsync lost in a crash never
 *     loses a committed entry;
 *   - state machine safety: every node applies the same entry at each
 *     index (the first applier's term and value are the truth);
 *   - log matching over durable logs is implied by the two above and
 *     checked at the end of a run on every pair of logs.
 */
#ifndef CHORUS_SIM_DRIVER_RAFT_H
#define CHORUS_SIM_DRIVER_RAFT_H

#include "core/raft.h"
#include "sim.h"

#define RAFT_SIM_ELECTION_MS 300
#define RAFT_SIM_HEARTBEAT_MS 50
#define RAFT_SIM_INBOX_MAX 1024
#define RAFT_SIM_CHUNK 64

extern const struct sim_driver sim_driver_raft;

struct raft_sim_disk {
	struct raft_hard hard;
	struct raft_entry *log;   /* log[k] has index base.index + 1 + k */
	uint64_t n_log, cap_log;
	struct raft_point base;   /* index 0: never compacted */
	struct raft_snapshot snap;
};

struct raft_world {
	struct sim *sim;
	uint32_t n;
	struct raft_id *ids;
	struct raft_sim_disk *disks;
	uint32_t *restarts;
	/* election safety: leader_of[term] = node + 1 (0 = none seen) */
	uint32_t *leader_of;
	uint64_t terms_cap;
	/* state machine safety: the first applied term and value per index */
	uint64_t *truth_term;
	uint32_t *truth_value;
	uint64_t *truth_digest; /* the state after applying up to the index */
	uint64_t truth_cap;
	/* compaction: a node snapshots once it applied snap_every entries past
	 * its last snapshot (0: never), keeping a few entries; snapshots go
	 * in chunks of RAFT_SIM_CHUNK bytes, so most take several */
	uint32_t snap_every;
	uint64_t snapshots, installs;
	uint64_t applied_max;   /* highest index anyone applied */
	uint64_t *applied_by;   /* per node, in this life */
	uint64_t applies;       /* entries applied, all nodes */
	uint64_t elections;     /* distinct terms with a leader */
	uint32_t next_value;
	/* schedule mode: entries are schedule commands; every node applies them
	 * to a real sched core, leaders plan an @every 1s schedule */
	int sched_mode;
	int sched_added;          /* the ADD was applied somewhere */
	int sched_frozen;         /* leaders stop planning (the quiet end) */
	uint8_t *fired;           /* per second since sched_base_s: 0, 1 fired, 2 skipped */
	uint64_t fired_cap;
	int64_t sched_base_s;
	uint64_t fires, skips;
};

struct raft_world *raft_world_new(const struct sim_run *run);
/* Schedule mode (before any node starts): see struct raft_world. */
void raft_world_sched_mode(struct raft_world *w);
void raft_world_snapshots(struct raft_world *w, uint32_t every);
/* Schedule mode, at the end of a run: every second between the first and
 * the last decided one was decided exactly once (fired or skipped). */
int raft_world_check_sched(struct raft_world *w, char *why, size_t why_bytes);
void raft_world_free(struct raft_world *w);
struct raft *raft_world_core(const struct raft_world *w, uint32_t node); /* NULL when down */
/* Starts (or restarts, from its durable disk) a node. */
void raft_world_start(struct raft_world *w, uint32_t node);
/* The node that is leader with the highest term among the up nodes, or
 * SIM_NONE. */
uint32_t raft_world_leader(const struct raft_world *w);
/* Proposes the next value on node (when it is a leader). 0 or an ERR_*. */
int raft_world_propose(struct raft_world *w, uint32_t node);
/* Every pair of durable logs agrees on every index both hold up to the
 * lower of their commit indexes... and terms match where indexes and terms
 * do (log matching); 0 when it holds. */
int raft_world_check_logs(struct raft_world *w, char *why, size_t why_bytes);

#endif
