/*
 * scenarios_raft.c - the Raft core under the simulator (driver_raft.h has
 * the invariants, checked on every step of every scenario).
 *
 *   raft-chaos     proposals every 20 ms on whoever leads (a leader cut
 *                  off in a minority included), with symmetric and
 *                  one-way partitions, message loss and duplication, and
 *                  crashes that lose unsynced writes; then a quiet end: a
 *                  leader is elected, every node applies the same log, and
 *                  durable logs match pairwise.
 *   raft-elect     the leader crashes, again and again: time to a new
 *                  leader (virtual ms), reported as p50 / p99.
 *   raft-minority  the leader and one follower of five are cut off: the
 *                  old leader keeps being proposed to, commits nothing,
 *                  and steps down within two election timeouts
 *                  (check-quorum); the majority elects a leader and
 *                  commits.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver_raft.h"
#include "lib/err.h"

enum { SC_CHAOS = 101, SC_ELECT, SC_MINORITY, SC_SCHED };

static struct sim_run run_of(const char *scenario, uint32_t n, uint64_t seed)
{
	return (struct sim_run){.scenario = scenario, .n = n, .seed = seed};
}

static void propose_on_leaders(struct raft_world *w)
{
	for (uint32_t i = 0; i < w->n; i++) {
		struct raft *r = raft_world_core(w, i);
		if (!r)
			continue;
		struct raft_status st;
		raft_status(r, &st);
		if (st.role == RAFT_LEADER)
			(void)raft_world_propose(w, i);
	}
}

/* Runs `ms` of virtual time proposing every 20 ms. -1 once failed. */
static int run_proposing(struct raft_world *w, uint64_t ms)
{
	uint64_t end = sim_now(w->sim) + ms;
	while (sim_now(w->sim) < end) {
		if (!w->sched_mode)
			propose_on_leaders(w);
		if (sim_run_for(w->sim, 20) != 0)
			return -1;
	}
	return 0;
}

static int wait_leader(struct raft_world *w, uint64_t within_ms, uint32_t *leader)
{
	uint64_t end = sim_now(w->sim) + within_ms;
	while (sim_now(w->sim) < end) {
		uint32_t l = raft_world_leader(w);
		if (l != SIM_NONE) {
			if (leader)
				*leader = l;
			return 0;
		}
		if (sim_run_for(w->sim, 10) != 0)
			return -1;
	}
	return -1;
}

static int chaos(const struct sim_run *run, int sched_mode)
{
	struct raft_world *w = raft_world_new(run);
	if (sched_mode)
		raft_world_sched_mode(w);
	/* odd seeds compact: snapshots, and followers catching up from them */
	if (run->seed % 2)
		raft_world_snapshots(w, 10 + (uint32_t)(run->seed % 23));
	struct sim *s = w->sim;
	struct rng *rng = sim_rng(s);
	for (uint32_t i = 0; i < w->n; i++)
		raft_world_start(w, i);
	sim_net_loss_ppm(s, 20000);
	sim_net_dup_ppm(s, 10000);
	uint64_t restart_at[16] = {0};
	uint64_t end = sim_now(s) + 60000;
	while (!sim_failed(s) && sim_now(s) < end) {
		if (run_proposing(w, 500 + rng_below(rng, 2000)) != 0)
			break;
		for (uint32_t i = 0; i < w->n; i++)
			if (restart_at[i] && sim_now(s) >= restart_at[i]) {
				restart_at[i] = 0;
				raft_world_start(w, i);
			}
		switch (rng_below(rng, 5)) {
		case 0: { /* a symmetric split, either side the larger */
			sim_net_heal(s);
			for (uint32_t i = 0; i < w->n; i++)
				sim_net_group(s, i, (uint8_t)rng_below(rng, 2));
			sim_net_cut(s, 0, 1, 1);
			sim_net_cut(s, 1, 0, 1);
			break;
		}
		case 1: { /* one node hears but is not heard, or the reverse */
			sim_net_heal(s);
			sim_net_group(s, rng_below(rng, w->n), 1);
			uint8_t a = (uint8_t)rng_below(rng, 2);
			sim_net_cut(s, a, (uint8_t)(1 - a), 1);
			break;
		}
		case 3: /* a wall clock steps (NTP), up to 2 s either way */
			if (sched_mode) {
				uint32_t k = rng_below(rng, w->n);
				sim_clock_jump(s, k, (int64_t)rng_below(rng, 4001) - 2000);
				break;
			}
			sim_net_heal(s);
			break;
		case 2: { /* a crash; it comes back later */
			uint32_t k = rng_below(rng, w->n);
			if (sim_node_up(s, k) && k < 16) {
				sim_node_crash(s, k);
				restart_at[k] = sim_now(s) + 300 + rng_below(rng, 3000);
			}
			break;
		}
		default:
			sim_net_heal(s);
			break;
		}
	}
	/* the quiet end: everybody back, nothing cut, no loss */
	sim_net_heal(s);
	sim_net_loss_ppm(s, 0);
	sim_net_dup_ppm(s, 0);
	for (uint32_t i = 0; i < w->n; i++)
		if (!sim_node_up(s, i))
			raft_world_start(w, i);
	if (!sim_failed(s)) {
		uint32_t l = SIM_NONE;
		if (wait_leader(w, 10000, &l) != 0 && !sim_failed(s))
			sim_fail(s, "no leader within 10 s of the heal");
		(void)run_proposing(w, 2000);
		w->sched_frozen = 1; /* nothing new: the last commits reach everybody */
		(void)sim_run_for(s, 2000);
	}
	if (!sim_failed(s)) {
		char why[256];
		if (raft_world_check_logs(w, why, sizeof(why)))
			sim_fail(s, "%s", why);
		uint64_t max = 0;
		for (uint32_t i = 0; i < w->n; i++)
			if (w->applied_by[i] > max)
				max = w->applied_by[i];
		for (uint32_t i = 0; i < w->n; i++)
			if (w->applied_by[i] != max)
				sim_fail(s, "node %u applied %" PRIu64 " entries after the quiet end, others %" PRIu64, i,
				         w->applied_by[i], max);
		if (max < 50)
			sim_fail(s, "only %" PRIu64 " entries committed in 64 s", max);
		if (sched_mode && !sim_failed(s)) {
			if (raft_world_check_sched(w, why, sizeof(why)))
				sim_fail(s, "%s", why);
			if (w->fires < 20)
				sim_fail(s, "only %" PRIu64 " occurrences fired in 64 s", w->fires);
		}
	}
	if (run->verbose)
		printf("%s n=%u seed=%" PRIu64 ": %" PRIu64 " entries, %" PRIu64 " leaders, %" PRIu64
		       " applies, %" PRIu64 " fired, %" PRIu64 " skipped, %" PRIu64 " snapshots, %" PRIu64
		       " installed\n",
		       run->scenario, run->n, run->seed, w->applied_max, w->elections, w->applies, w->fires,
		       w->skips, w->snapshots, w->installs);
	int failed = sim_failed(s);
	raft_world_free(w);
	return failed;
}

static int sc_chaos(const struct sim_run *run)
{
	return chaos(run, 0);
}

static int sc_sched(const struct sim_run *run)
{
	return chaos(run, 1);
}

static int sc_elect_samples(const struct sim_run *run, struct sim_samples *out)
{
	struct raft_world *w = raft_world_new(run);
	struct sim *s = w->sim;
	for (uint32_t i = 0; i < w->n; i++)
		raft_world_start(w, i);
	uint32_t l = SIM_NONE;
	if (wait_leader(w, 5000, &l) != 0) {
		sim_fail(s, "no first leader within 5 s");
	}
	for (int k = 0; k < 20 && !sim_failed(s); k++) {
		(void)run_proposing(w, 500);
		l = raft_world_leader(w);
		if (l == SIM_NONE)
			continue;
		sim_node_crash(s, l);
		uint64_t t0 = sim_now(s);
		uint32_t l2 = SIM_NONE;
		if (wait_leader(w, 10000, &l2) != 0) {
			sim_fail(s, "no new leader within 10 s of the crash of node %u", l);
			break;
		}
		sim_sample_add(out, (double)(sim_now(s) - t0));
		(void)run_proposing(w, 300);
		raft_world_start(w, l);
	}
	int failed = sim_failed(s);
	raft_world_free(w);
	return failed;
}

static int sc_elect(const struct sim_run *run)
{
	struct sim_samples samples = {0};
	int failed = sc_elect_samples(run, &samples);
	printf("raft-elect n=%u seed=%" PRIu64 ": new leader after a crash p50 %.0f ms, p99 %.0f ms (%u samples)\n",
	       run->n, run->seed, sim_pct(&samples, 50), sim_pct(&samples, 99), samples.n);
	return failed;
}

static int sc_minority(const struct sim_run *run)
{
	struct raft_world *w = raft_world_new(run);
	struct sim *s = w->sim;
	for (uint32_t i = 0; i < w->n; i++)
		raft_world_start(w, i);
	uint32_t l = SIM_NONE;
	if (wait_leader(w, 5000, &l) != 0)
		sim_fail(s, "no first leader within 5 s");
	(void)run_proposing(w, 500);
	if (!sim_failed(s)) {
		struct raft_status st;
		raft_status(raft_world_core(w, l), &st);
		uint64_t commit = st.commit_index;
		/* the leader and one follower on one side */
		sim_net_group(s, l, 1);
		sim_net_group(s, (l + 1) % w->n, 1);
		sim_net_cut(s, 0, 1, 1);
		sim_net_cut(s, 1, 0, 1);
		uint64_t t0 = sim_now(s);
		uint64_t stepped_down = 0;
		while (sim_now(s) < t0 + 5000 && !sim_failed(s)) {
			(void)raft_world_propose(w, l);
			(void)sim_run_for(s, 20);
			raft_status(raft_world_core(w, l), &st);
			if (st.commit_index != commit)
				sim_fail(s, "the leader cut off in a minority committed %" PRIu64 " -> %" PRIu64, commit,
				         st.commit_index);
			if (!stepped_down && st.role != RAFT_LEADER)
				stepped_down = sim_now(s);
		}
		if (!stepped_down || stepped_down - t0 > 2 * 2 * RAFT_SIM_ELECTION_MS)
			sim_fail(s, "the minority leader did not step down within two election timeouts");
		uint32_t l2 = raft_world_leader(w);
		if (l2 == SIM_NONE || sim_net_group_of(s, l2) != 0)
			sim_fail(s, "the majority has no leader after 5 s");
		sim_net_heal(s);
		(void)run_proposing(w, 2000);
		(void)sim_run_for(s, 1000);
		char why[256];
		if (!sim_failed(s) && raft_world_check_logs(w, why, sizeof(why)))
			sim_fail(s, "%s", why);
	}
	int failed = sim_failed(s);
	raft_world_free(w);
	return failed;
}

static const struct sim_scenario SCENARIOS[] = {
    {"raft-chaos", "partitions, loss, crashes with unsynced writes lost; Raft's safety invariants", sc_chaos},
    {"raft-elect", "crash the leader 20 times: time to a new leader", sc_elect},
    {"raft-minority", "a leader cut off with one follower of five commits nothing, steps down", sc_minority},
    {"sched-chaos", "raft-chaos with an every-second schedule and clock steps: each second decided once", sc_sched},
    {NULL, NULL, NULL},
};

static void raft_ci(uint64_t seed, int big)
{
	uint32_t runs = big ? 200 : 20;
	const uint32_t sizes[] = {3, 5};
	for (uint32_t si = 0; si < 2; si++) {
		uint32_t n = sizes[si];
		uint32_t failed = 0;
		for (uint32_t i = 0; i < runs; i++) {
			struct sim_run run = run_of("raft-chaos", n, sim_derive_seed(seed, SC_CHAOS, n, i));
			failed += (uint32_t)(sc_chaos(&run) != 0);
		}
		printf("raft-chaos N=%u: %u runs of 64 s, %u failed\n", n, runs, failed);
		failed = 0;
		for (uint32_t i = 0; i < runs; i++) {
			struct sim_run run = run_of("sched-chaos", n, sim_derive_seed(seed, SC_SCHED, n, i));
			failed += (uint32_t)(sc_sched(&run) != 0);
		}
		printf("sched-chaos N=%u: %u runs of 64 s with an every-second schedule, %u failed\n", n, runs,
		       failed);
		struct sim_samples samples = {0};
		for (uint32_t i = 0; i < 3; i++) {
			struct sim_run run = run_of("raft-elect", n, sim_derive_seed(seed, SC_ELECT, n, i));
			(void)sc_elect_samples(&run, &samples);
		}
		double p99 = sim_pct(&samples, 99);
		printf("raft-elect N=%u: new leader after a leader crash p50 %.0f ms, p99 %.0f ms (%u samples; "
		       "election timeout %d-%d ms)\n",
		       n, sim_pct(&samples, 50), p99, samples.n, RAFT_SIM_ELECTION_MS, 2 * RAFT_SIM_ELECTION_MS);
		if (p99 > 2000) {
			struct sim_run run = run_of("raft-elect", n, sim_derive_seed(seed, SC_ELECT, n, 0));
			sim_fail_run(&run, "new leader p99 %.0f ms over 2 s", p99);
		}
		if (n == 5) {
			struct sim_run run = run_of("raft-minority", n, sim_derive_seed(seed, SC_MINORITY, n, 0));
			(void)sc_minority(&run);
			printf("raft-minority N=5 (seed %" PRIu64 "): nothing committed in the minority\n", run.seed);
		}
		fflush(stdout);
	}
}

const struct sim_suite sim_suite_raft = {.driver = "raft", .scenarios = SCENARIOS, .ci = raft_ci};
