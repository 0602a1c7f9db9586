/*
 * driver_swim.h - the simulator's driver for the SWIM membership core
 * (node/core/swim.c), and the world its scenarios look at.
 *
 * Every node runs a real `struct swim` fed its node's MONOTONIC clock;
 * messages leave as bytes from the real codec (node/codec/gossip.c) and are
 * decoded by it on arrival. The node's incarnation is persisted on the
 * simulated disk whenever it changes (write + fsync, as chorusd does) and a
 * restarted node starts one above what was durable. Member strings are
 * shared between all nodes through one swim_interner (N nodes x N members
 * would otherwise hold N^2 copies).
 *
 * Node i has address "s:<i>", name "n<i>", an id whose bytes 8..11 are i,
 * tags {"zone-a","ssd"} (odd i) or {"zone-b"} (even i), capacity 4.
 */
#ifndef CHORUS_SIM_DRIVER_SWIM_H
#define CHORUS_SIM_DRIVER_SWIM_H

#include "core/swim.h"
#include "sim.h"

#define SWIM_SIM_PERIOD_MS 200
#define SWIM_SIM_PROBE_TIMEOUT_MS 100

extern const struct sim_driver sim_driver_swim;

/* What the world records about each node, as a subject of others' views. */
struct swim_sim_node {
	uint8_t id[SWIM_ID_BYTES];
	char name[24], addr[24];
	uint32_t last_incarnation;  /* the core's own, when it went down */
	uint64_t killed_at;         /* 0 = not killed */
	uint64_t first_suspect_at, first_dead_at;
	uint32_t dead_by;           /* dead events about it from others */
	uint32_t left_by;
	int falsely_dead;           /* declared dead while up and the net whole */
};

struct swim_world {
	struct sim *sim;
	uint32_t n;
	struct swim_sim_node *nodes;
	uint32_t members_max;
	uint32_t reap_after_periods;  /* 0 = 150 (30 s at 200 ms) */
	/* while the network has no cuts: */
	uint64_t false_dead_events;   /* an up node declared dead */
	uint32_t false_dead_members;
	uint64_t false_suspect_events;/* an up node suspected */
	/* whatever the network: */
	uint64_t dead_of_up_events;   /* an up node declared dead */
	uint64_t collateral_dead_events; /* ... where neither side is or was `isolated` */
	uint32_t isolated;            /* the node a scenario cut off, or UINT32_MAX */
	uint32_t was_isolated;      /* the last node isolated (kept after the heal) */
	int wall_clock_bug;           /* SIM_SWIM_WALL_CLOCK_BUG: feed the core wall time (must fail clockjump) */
	uint32_t trace;               /* node + 1 whose view changes are printed (SIM_TRACE) */
	struct swim_interner interner;
	struct interner *in;
};

/* A world of n nodes (none started) on a new simulator. members_max 0 =
 * 16384. */
struct swim_world *swim_world_new(const struct sim_run *run, uint32_t members_max);
void swim_world_free(struct swim_world *w);

struct swim *swim_world_core(const struct swim_world *w, uint32_t node); /* NULL when down */
void swim_world_start(struct swim_world *w, uint32_t node);
void swim_world_kill(struct swim_world *w, uint32_t node);
int swim_world_join(struct swim_world *w, uint32_t node, uint32_t seed_node);
void swim_world_leave(struct swim_world *w, uint32_t node);
/* Every node started, knowing every other as alive (steady state); then
 * one period runs. */
void swim_world_bootstrap_all(struct swim_world *w);

/* Does `obs` hold `subj` in a state within mask (bit 31 = unknown)? */
int swim_world_view_is(const struct swim_world *w, uint32_t obs, uint32_t subj, unsigned mask);
#define SWIM_SIM_GONE ((1u << SWIM_DEAD) | (1u << SWIM_LEFT) | (1u << 31))
int swim_world_all_up_see(const struct swim_world *w, uint32_t subj, unsigned mask);
/* Every up node sees exactly the up nodes as alive, and no suspects. */
int swim_world_converged(const struct swim_world *w);

/* Interner statistics (distinct blocks held, bytes). */
void swim_world_interned(const struct swim_world *w, uint64_t *blocks, uint64_t *bytes);

#endif
