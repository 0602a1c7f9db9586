/*
 * sim.h - the deterministic cluster simulator's core: a virtual clock, a
 * virtual network, a virtual disk per node, and invariant checkers, for any
 * pure core that a driver adapts (tests/sim/README.md).
 *
 * A driver (struct sim_driver) adapts one protocol core: it creates the core
 * for a node, says when the core next wants a tick, ticks it, hands it a
 * message AS BYTES (decoded by the real codec, as the shell would), and
 * destroys it when the node crashes. The core sends through sim_send(),
 * persists through sim_disk_*(). A driver is one file (driver_swim.c); its
 * scenarios another (scenarios_swim.c); main.c registers the suite.
 *
 * Time. Virtual time (`sim_now`, ms) is the one global order. Each node sees
 * its own clocks (lib/clock.h `struct now`): mono_ms = virtual + a per-node
 * boot offset (never jumps), wall_ms = virtual + a per-node wall offset that
 * scenarios may jump either way (NTP steps). Drivers hand cores the clock the
 * core's contract names; deadlines come back in node monotonic time.
 *
 * Network. Latency 1-3 ms with a 10% tail up to 23 ms, loss and duplication
 * (ppm), and reachability by groups: every node is in a group (0 by default);
 * cut[a][b] drops everything sent from group a to group b. Symmetric
 * partitions cut both ways, asymmetric ones one way, partial ones cut a
 * group from some groups but not others.
 *
 * Disk. Per node, a few named records. sim_disk_write() changes what the
 * running node reads back at once but is durable only after an fsync that
 * was *requested after the write* completes (latency from its own PRNG). A
 * crash throws away everything not durable, fsyncs in flight included.
 *
 * Determinism. One seed: the network/scenario PRNG (sim_rng) is seeded with
 * it; clocks and the disk draw from PRNGs derived from it, so adding a disk
 * write or a clock offset does not shift the network's draws. Events at the
 * same virtual time run in insertion order.
 *
 * Invariants. A scenario registers checkers (sim_check_add): per step (run
 * after every event with the node it touched) or periodic. A checker or
 * sim_fail() stops the run and prints the failing seed and the command line
 * that replays it.
 *
 * Threading: none. One struct sim per run; runs do not share state.
 */
#ifndef CHORUS_SIM_H
#define CHORUS_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "lib/clock.h"
#include "lib/rng.h"

#define SIM_NONE UINT32_MAX
#define SIM_GROUPS_MAX 8
#define SIM_DISK_RECORDS_MAX 8
#define SIM_DISK_RECORD_BYTES_MAX 256
#define SIM_CHECKS_MAX 16

struct sim;

struct sim_driver {
	const char *name;
	/* Creates the core of `node` (first start or restart after a crash:
	 * whatever it persisted is on the disk). Returns the driver's per-node
	 * state, or NULL (the run fails). */
	void *(*create)(struct sim *s, uint32_t node, struct now now);
	/* The process is gone (crash or end of run): free everything, flush
	 * nothing. */
	void (*destroy)(void *core);
	/* Node monotonic ms of the next tick wanted; UINT64_MAX = none. */
	uint64_t (*next_deadline_ms)(void *core);
	void (*tick)(void *core, struct now now);
	/* A message from node `from`. Nonzero: the core refused bytes another
	 * core built, which stops the run (a codec or protocol bug). */
	int (*on_message)(void *core, struct now now, uint32_t from, const uint8_t *bytes, size_t len);
	/* Optional: the fsync `sync_id` (from sim_disk_fsync) is durable. */
	void (*synced)(void *core, uint64_t sync_id);
};

/* What identifies a run, printed with every failure to replay it. */
struct sim_run {
	const char *scenario;
	uint32_t n;
	uint64_t seed;
	uint32_t loss_pct;   /* printed as --loss when non-zero */
	int verbose;
};

/* ---- lifetime ---- */
struct sim *sim_create(const struct sim_driver *d, void *driver_ctx, const struct sim_run *run);
/* Destroys every live core, then the simulator. */
void sim_destroy(struct sim *s);
void *sim_driver_ctx(const struct sim *s);
const struct sim_run *sim_run_info(const struct sim *s);
uint32_t sim_n(const struct sim *s);
struct rng *sim_rng(struct sim *s); /* network and scenario choices */

/* ---- nodes ---- */
int sim_node_start(struct sim *s, uint32_t node);   /* 0, or -1 (create failed: run failed) */
void sim_node_crash(struct sim *s, uint32_t node);  /* unsynced disk writes are lost */
/* Stops a node that shut down cleanly (its disk is what it synced). */
void sim_node_stop(struct sim *s, uint32_t node);
int sim_node_up(const struct sim *s, uint32_t node);
void *sim_node_core(const struct sim *s, uint32_t node);
/* The node's core may have a new deadline (after a scenario called it). */
void sim_node_poke(struct sim *s, uint32_t node);
struct now sim_node_clock(const struct sim *s, uint32_t node);

/* ---- time ---- */
uint64_t sim_now(const struct sim *s);
/* Runs every event up to and including virtual time t (stops early once
 * the run failed). Returns 0, or -1 when the run has failed. */
int sim_run_until(struct sim *s, uint64_t t);
int sim_run_for(struct sim *s, uint64_t ms);
/* The node's wall clock steps by delta_ms (either way); mono never does. */
void sim_clock_jump(struct sim *s, uint32_t node, int64_t delta_ms);

/* ---- network ---- */
void sim_net_loss_ppm(struct sim *s, uint32_t ppm);
void sim_net_dup_ppm(struct sim *s, uint32_t ppm);
void sim_net_group(struct sim *s, uint32_t node, uint8_t group);
uint8_t sim_net_group_of(const struct sim *s, uint32_t node);
/* Drop (or stop dropping) everything from group `from` to group `to`. */
void sim_net_cut(struct sim *s, uint8_t from, uint8_t to, int cut);
/* No cuts, every node back in group 0. */
void sim_net_heal(struct sim *s);
/* Any cut in force? */
int sim_net_cut_any(const struct sim *s);
/* Can a message from a reach b right now (cuts only; loss aside)? */
int sim_net_reaches(const struct sim *s, uint32_t a, uint32_t b);
/* Called by drivers: send len bytes (copied) from node `from` to `to`. */
void sim_send(struct sim *s, uint32_t from, uint32_t to, const uint8_t *bytes, size_t len);
uint64_t sim_sent(const struct sim *s);        /* messages handed to sim_send */
uint64_t sim_sent_bytes(const struct sim *s);

/* ---- disk ---- */
/* 0, or -1 (record name or size over the limits: a driver bug, fails the run). */
int sim_disk_write(struct sim *s, uint32_t node, const char *name, const void *data, size_t len);
/* Bytes read into buf (what the node last wrote, synced or not), or -1
 * when the record does not exist. */
int sim_disk_read(const struct sim *s, uint32_t node, const char *name, void *buf, size_t cap);
/* Requests an fsync; returns its id (synced() is called when durable). */
uint64_t sim_disk_fsync(struct sim *s, uint32_t node);
/* fsync latency range in ms (default 1..5); UINT32_MAX = never completes. */
void sim_disk_latency(struct sim *s, uint32_t min_ms, uint32_t max_ms);

/* ---- invariants and failures ---- */
/* Returns 0 when the invariant holds, else writes why and returns nonzero.
 * node = the node the last event touched (per-step checks) or SIM_NONE
 * (periodic checks). */
typedef int (*sim_check_fn)(struct sim *s, void *ctx, uint32_t node, char *why, size_t why_bytes);
/* every_ms = 0: after every event; else every every_ms of virtual time. */
void sim_check_add(struct sim *s, const char *name, sim_check_fn fn, void *ctx, uint64_t every_ms);
/* Runs every registered check now (e.g. at the end of a scenario). */
int sim_check_all(struct sim *s);
/* Records a failure of this run, prints it with the replay command line. */
void sim_fail(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sim_failed(const struct sim *s);
/* A failure outside any one run (a cross-run figure). */
void sim_fail_run(const struct sim_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Failures printed so far in this process. */
uint32_t sim_failures(void);

/* ---- statistics helpers ---- */
#define SIM_SAMPLES_MAX 256
struct sim_samples {
	double v[SIM_SAMPLES_MAX];
	uint32_t n;
};
void sim_sample_add(struct sim_samples *s, double v);
double sim_pct(struct sim_samples *s, double p); /* nearest rank; -1 when empty */
/* A run's seed from the top-level seed (stable across versions). */
uint64_t sim_derive_seed(uint64_t seed, uint32_t scenario, uint32_t n, uint32_t run);

/* ---- scenarios: what main.c registers, one suite per driver ---- */
struct sim_scenario {
	const char *name;        /* unique across suites: --scenario NAME */
	const char *help;
	/* One replayable run (run->scenario = name). 0 when every invariant
	 * held; failures are printed by sim_fail. */
	int (*run)(const struct sim_run *run);
};

struct sim_suite {
	const char *driver;
	const struct sim_scenario *scenarios; /* ends with a NULL name */
	/* The CI plan: every run's seed derived from `seed`; `big` adds the
	 * sizes too large for CI. Prints what it measured. */
	void (*ci)(uint64_t seed, int big);
};

#endif
