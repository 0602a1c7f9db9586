/*
 * scenarios_swim.c - SWIM membership scenarios, invariants and the measured
 * table (docs/membership.md), on the SWIM driver (driver_swim.c).
 *
 * Scenarios (each a replayable run; --scenario NAME --n N --seed S):
 *   detect     killed nodes are declared dead by every alive member; no live
 *              member is declared dead (1% loss, 1% duplication)
 *   partition  two random halves split (asserted: each side holds the other
 *              as suspect or dead), then heal; every view converges
 *   asym       one node's outgoing messages are dropped (it still hears
 *              everyone): the others declare it dead, nobody else is declared
 *              dead by anyone but it; after healing every view converges
 *   partial    one node is cut from a quarter of the cluster both ways, both
 *              still reach the rest: nobody is declared dead (indirect probes)
 *   loss       no live member is declared dead at 5% and 10% loss
 *   join       nodes join through one seed that comes up 6 periods late
 *   leave      a leaving node is marked left, never dead, by everyone
 *   restart    a killed node restarts from its disk (incarnation + 1), rejoins
 *   restart-unsynced  the same with a disk whose fsyncs never complete: the
 *              node comes back with nothing persisted and must refute its
 *              own death above the old incarnation
 *   clockjump  two nodes' wall clocks jump by +1 h and -1 h: nobody suspects
 *              anybody (SWIM runs on monotonic time), no loss
 * Invariants checked during runs: every up node holds itself alive (or left),
 * its incarnation never falls within one life, its state counts add up; plus
 * each scenario's own (no false dead, no collateral dead, no suspicion).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver_swim.h"
#include "sim.h"

#define PERIOD_MS SWIM_SIM_PERIOD_MS

static int run_periods(struct swim_world *w, uint32_t p) { return sim_run_for(w->sim, (uint64_t)p * PERIOD_MS); }

/* ---- invariants ---- */

struct life {
	const void *core;
	uint32_t incarnation;
};

struct base_checks {
	struct swim_world *w;
	struct life *lives;
};

static int check_self(struct sim *s, void *ctx, uint32_t node, char *why, size_t why_bytes)
{
	struct base_checks *bc = ctx;
	if (node == SIM_NONE || !sim_node_up(s, node)) return 0;
	struct swim *sw = swim_world_core(bc->w, node);
	const struct swim_member *me = swim_self(sw);
	if (me->state != SWIM_ALIVE && me->state != SWIM_LEFT) {
		snprintf(why, why_bytes, "node %u holds itself %s", node, swim_state_name(me->state));
		return 1;
	}
	struct life *l = &bc->lives[node];
	if (l->core == sw && me->incarnation < l->incarnation) {
		snprintf(why, why_bytes, "node %u's incarnation fell from %u to %u", node, l->incarnation, me->incarnation);
		return 1;
	}
	l->core = sw;
	l->incarnation = me->incarnation;
	return 0;
}

static int check_counts(struct sim *s, void *ctx, uint32_t node, char *why, size_t why_bytes)
{
	(void)node;
	struct base_checks *bc = ctx;
	for (uint32_t i = 0; i < sim_n(s); i++) {
		if (!sim_node_up(s, i)) continue;
		struct swim *sw = swim_world_core(bc->w, i);
		uint32_t sum = 0;
		for (int st = SWIM_ALIVE; st <= SWIM_LEFT; st++) sum += swim_count(sw, st);
		if (sum != swim_member_count(sw)) {
			snprintf(why, why_bytes, "node %u: state counts %u != members %u", i, sum, swim_member_count(sw));
			return 1;
		}
	}
	return 0;
}

static int check_no_false_dead(struct sim *s, void *ctx, uint32_t node, char *why, size_t why_bytes)
{
	(void)s;
	(void)node;
	struct swim_world *w = ctx;
	if (!w->false_dead_members) return 0;
	snprintf(why, why_bytes, "%u live member(s) declared dead with the network whole", w->false_dead_members);
	return 1;
}

static int check_no_dead_of_up(struct sim *s, void *ctx, uint32_t node, char *why, size_t why_bytes)
{
	(void)s;
	(void)node;
	struct swim_world *w = ctx;
	if (!w->dead_of_up_events) return 0;
	snprintf(why, why_bytes, "a live member was declared dead (%" PRIu64 " events)", w->dead_of_up_events);
	return 1;
}

static int check_no_collateral(struct sim *s, void *ctx, uint32_t node, char *why, size_t why_bytes)
{
	(void)s;
	(void)node;
	struct swim_world *w = ctx;
	if (!w->collateral_dead_events) return 0;
	snprintf(why, why_bytes, "a live member other than the isolated one was declared dead by a node other than "
	         "it (%" PRIu64 " events)", w->collateral_dead_events);
	return 1;
}

static int check_no_suspicion(struct sim *s, void *ctx, uint32_t node, char *why, size_t why_bytes)
{
	(void)s;
	(void)node;
	struct swim_world *w = ctx;
	if (!w->false_suspect_events) return 0;
	snprintf(why, why_bytes, "a live member was suspected (%" PRIu64 " events)", w->false_suspect_events);
	return 1;
}

/* A world with the base checks registered. */
struct world_run {
	struct swim_world *w;
	struct base_checks bc;
};

static void world_open(struct world_run *r, const struct sim_run *run, uint32_t members_max)
{
	r->w = swim_world_new(run, members_max);
	r->bc.w = r->w;
	r->bc.lives = calloc(run->n, sizeof(*r->bc.lives));
	if (!r->bc.lives) exit(2);
	sim_check_add(r->w->sim, "self-alive-and-incarnation-monotonic", check_self, &r->bc, 0);
	sim_check_add(r->w->sim, "state-counts", check_counts, &r->bc, 10 * PERIOD_MS);
}

static int world_close(struct world_run *r)
{
	int failed = sim_failed(r->w->sim) || sim_check_all(r->w->sim) != 0;
	swim_world_free(r->w);
	free(r->bc.lives);
	return failed;
}

static struct sim_run run_of(const char *scenario, uint32_t n, uint64_t seed, uint32_t loss_pct, int verbose)
{
	return (struct sim_run){.scenario = scenario, .n = n, .seed = seed, .loss_pct = loss_pct, .verbose = verbose};
}

static uint32_t ilog2_ceil(uint32_t n)
{
	uint32_t e = 0;
	while ((1u << e) < n) e++;
	return e;
}

/* ---- detect: kill nodes, measure detection and dissemination ---- */

struct detect_result {
	struct sim_samples first_suspect, detect, dissem, total;
	double msgs_per_member_period;
};

static int sc_detect(const struct sim_run *run, uint32_t kills, struct detect_result *res)
{
	struct world_run r;
	uint32_t n = run->n;
	world_open(&r, run, n > 8192 ? n + 64 : 0);
	struct swim_world *w = r.w;
	struct sim *s = w->sim;
	sim_net_loss_ppm(s, 10000); /* 1% */
	sim_net_dup_ppm(s, 10000);
	sim_check_add(s, "no-false-dead", check_no_false_dead, w, 0);
	swim_world_bootstrap_all(w);
	run_periods(w, 3);
	uint64_t sent0 = sim_sent(s), t0 = sim_now(s);
	run_periods(w, 10);
	res->msgs_per_member_period = (double)(sim_sent(s) - sent0) / n / ((double)(sim_now(s) - t0) / PERIOD_MS);
	uint32_t victims[64];
	if (kills > 64) kills = 64;
	if (kills > n / 2) kills = n / 2 ? n / 2 : 1;
	for (uint32_t k = 0; k < kills && !sim_failed(s); k++) {
		uint32_t v;
		do v = rng_below(sim_rng(s), n);
		while (!sim_node_up(s, v));
		victims[k] = v;
		swim_world_kill(w, v);
		run_periods(w, 3);
	}
	uint32_t done = 0, limit = 400;
	uint64_t all_dead_at[64] = {0};
	for (uint32_t p = 0; p < limit && done < kills && !sim_failed(s); p++) {
		run_periods(w, 1);
		for (uint32_t k = 0; k < kills; k++) {
			if (all_dead_at[k]) continue;
			if (swim_world_all_up_see(w, victims[k], SWIM_SIM_GONE)) {
				all_dead_at[k] = sim_now(s);
				done++;
			}
		}
	}
	for (uint32_t k = 0; k < kills && !sim_failed(s); k++) {
		struct swim_sim_node *v = &w->nodes[victims[k]];
		if (!all_dead_at[k]) {
			sim_fail(s, "%s was not declared dead by every alive member within %u periods", v->name, limit);
			break;
		}
		double per = PERIOD_MS;
		sim_sample_add(&res->first_suspect, (double)(v->first_suspect_at - v->killed_at) / per);
		sim_sample_add(&res->detect, (double)(v->first_dead_at - v->killed_at) / per);
		sim_sample_add(&res->dissem, (double)(all_dead_at[k] - v->first_dead_at) / per);
		sim_sample_add(&res->total, (double)(all_dead_at[k] - v->killed_at) / per);
	}
	return world_close(&r);
}

/* ---- partition: symmetric split into two halves, then heal ---- */

static int split_formed(struct swim_world *w, unsigned mask)
{
	uint32_t n = w->n, side[2] = {0, 0};
	/* counts first (O(N)); the full O(N^2) check only when they pass */
	for (uint32_t i = 0; i < n; i++) side[sim_net_group_of(w->sim, i) & 1]++;
	for (uint32_t o = 0; o < n; o++) {
		struct swim *sw = swim_world_core(w, o);
		uint32_t out = n - swim_member_count(sw);
		for (int st = SWIM_ALIVE; st <= SWIM_LEFT; st++)
			if ((mask >> st) & 1) out += swim_count(sw, st);
		if (out < side[1 - (sim_net_group_of(w->sim, o) & 1)]) return 0;
	}
	for (uint32_t o = 0; o < n; o++)
		for (uint32_t j = 0; j < n; j++)
			if (sim_net_group_of(w->sim, o) != sim_net_group_of(w->sim, j) && !swim_world_view_is(w, o, j, mask))
				return 0;
	return 1;
}

static int heal_and_converge(struct swim_world *w, const char *what, double *heal_periods)
{
	struct sim *s = w->sim;
	sim_net_heal(s);
	w->isolated = UINT32_MAX;
	uint64_t t_heal = sim_now(s);
	uint32_t limit = 600;
	int ok = 0;
	for (uint32_t p = 0; p < limit && !sim_failed(s); p++) {
		run_periods(w, 1);
		if (swim_world_converged(w)) {
			ok = 1;
			break;
		}
	}
	if (heal_periods) *heal_periods = (double)(sim_now(s) - t_heal) / PERIOD_MS;
	if (!ok && !sim_failed(s)) {
		uint32_t worst = UINT32_MAX;
		for (uint32_t o = 0; o < w->n; o++) {
			uint32_t a = swim_count(swim_world_core(w, o), SWIM_ALIVE);
			if (a < worst) worst = a;
		}
		sim_fail(s, "%s: views did not converge within %u periods of the heal (smallest alive view %u/%u)", what,
		         limit, worst, w->n);
	}
	return ok;
}

static int sc_partition(const struct sim_run *run, double *heal_periods, double *split_periods)
{
	struct world_run r;
	world_open(&r, run, 0);
	struct swim_world *w = r.w;
	struct sim *s = w->sim;
	uint32_t n = run->n;
	/* At N = 1,000 the split takes ~200 periods to form, longer than the
	 * default reap time (150): each side would forget the other, and the
	 * heal would then hang on the occasional push-pull to a seed. The
	 * scenario is about detection and refutation across a split, so
	 * nothing is reaped while it lasts. */
	w->reap_after_periods = 2000;
	sim_net_loss_ppm(s, 10000);
	swim_world_bootstrap_all(w);
	run_periods(w, 5);
	for (uint32_t i = 0; i < n; i++) sim_net_group(s, i, (uint8_t)rng_below(sim_rng(s), 2));
	sim_net_group(s, 0, 0);
	sim_net_group(s, 1, 1); /* both halves non-empty */
	sim_net_cut(s, 0, 1, 1);
	sim_net_cut(s, 1, 0, 1);
	uint64_t t_split = sim_now(s);
	/* until each side sees the whole other side gone (or a cap under reap_after) */
	uint32_t cap = 120;
	for (uint32_t p = 0; p < cap && !sim_failed(s); p++) {
		run_periods(w, 1);
		/* cheap count check first, the full O(N^2) check only when it passes */
		uint32_t side_size[2] = {0, 0};
		for (uint32_t i = 0; i < n; i++) side_size[sim_net_group_of(s, i)]++;
		int split = 1;
		for (uint32_t o = 0; o < n && split; o++) {
			struct swim *sw = swim_world_core(w, o);
			uint32_t gone = swim_count(sw, SWIM_DEAD) + swim_count(sw, SWIM_LEFT) + (n - swim_member_count(sw));
			if (gone < side_size[1 - sim_net_group_of(s, o)]) split = 0;
		}
		if (split && split_formed(w, SWIM_SIM_GONE)) break;
	}
	/* the split must have formed before we heal it: each side holds every
	 * member of the other as suspect or dead. At N = 1,000 that takes longer
	 * than the 120 periods above (half the cluster's worth of suspicions to
	 * disseminate at ~2.3 messages per member per period), so wait for it,
	 * past the reap time if need be (reaped counts as gone). */
	unsigned not_alive = SWIM_SIM_GONE | (1u << SWIM_SUSPECT);
	uint32_t form_cap = 600, p = 0;
	while (!sim_failed(s) && !split_formed(w, not_alive) && p++ < form_cap) run_periods(w, 1);
	*split_periods = (double)(sim_now(s) - t_split) / PERIOD_MS;
	if (!sim_failed(s) && !split_formed(w, not_alive))
		sim_fail(s, "the partition never formed: after %.0f periods some node still holds a member of the other "
		         "side alive", *split_periods);
	if (!sim_failed(s)) heal_and_converge(w, "partition", heal_periods);
	return world_close(&r);
}

/* ---- asym: one node's messages are dropped, it still hears everyone ---- */

static int sc_asym(const struct sim_run *run, double *heal_periods)
{
	struct world_run r;
	world_open(&r, run, 0);
	struct swim_world *w = r.w;
	struct sim *s = w->sim;
	uint32_t n = run->n;
	/* no loss: the asymmetric cut is the only fault, so any other death
	 * is a real false positive */
	sim_check_add(s, "no-collateral-dead", check_no_collateral, w, 0);
	swim_world_bootstrap_all(w);
	run_periods(w, 5);
	uint32_t v = rng_below(sim_rng(s), n);
	w->isolated = w->was_isolated = v;
	if (run->verbose) printf("isolated n%u at t=%llu\n", v, (unsigned long long)sim_now(s));
	sim_net_group(s, v, 1);
	sim_net_cut(s, 1, 0, 1); /* v -> others dropped; others -> v delivered */
	int formed = 0;
	for (uint32_t p = 0; p < 120 && !formed && !sim_failed(s); p++) {
		run_periods(w, 1);
		formed = swim_world_all_up_see(w, v, SWIM_SIM_GONE);
	}
	if (!sim_failed(s) && !formed)
		sim_fail(s, "node %u could not be heard for 120 periods but is not dead in every view", v);
	if (!sim_failed(s)) heal_and_converge(w, "asym", heal_periods);
	return world_close(&r);
}

/* ---- partial: a node cut from some nodes but not all ---- */

static int sc_partial(const struct sim_run *run)
{
	struct world_run r;
	world_open(&r, run, 0);
	struct swim_world *w = r.w;
	struct sim *s = w->sim;
	uint32_t n = run->n;
	/* no loss: the partial cut is the only fault */
	sim_check_add(s, "no-dead-of-up", check_no_dead_of_up, w, 0);
	swim_world_bootstrap_all(w);
	run_periods(w, 5);
	uint32_t a = rng_below(sim_rng(s), n), cut = n / 4 ? n / 4 : 1;
	sim_net_group(s, a, 1);
	for (uint32_t k = 0; k < cut;) {
		uint32_t b = rng_below(sim_rng(s), n);
		if (sim_net_group_of(s, b) != 0) continue;
		sim_net_group(s, b, 2);
		k++;
	}
	sim_net_cut(s, 1, 2, 1);
	sim_net_cut(s, 2, 1, 1);
	run_periods(w, 60);
	if (!sim_failed(s)) heal_and_converge(w, "partial", NULL);
	return world_close(&r);
}

/* ---- loss: false positives ---- */

static int sc_loss(const struct sim_run *run, uint32_t periods, uint32_t *false_members)
{
	struct world_run r;
	world_open(&r, run, run->n > 8192 ? run->n + 64 : 0);
	struct swim_world *w = r.w;
	struct sim *s = w->sim;
	uint32_t n = run->n;
	sim_net_loss_ppm(s, run->loss_pct * 10000);
	sim_net_dup_ppm(s, 10000);
	if (run->loss_pct <= 10) sim_check_add(s, "no-false-dead", check_no_false_dead, w, 0);
	swim_world_bootstrap_all(w);
	run_periods(w, periods);
	*false_members = w->false_dead_members;
	if (run->verbose) {
		uint64_t probes = 0, failed = 0, suspected = 0, refuted = 0, dead = 0, dropped = 0, q = 0, lhm = 0, nm = 0;
		for (uint32_t i = 0; i < n; i++) {
			struct swim *sw = swim_world_core(w, i);
			const struct swim_stats *st = swim_stats(sw);
			probes += st->probes;
			failed += st->probes_failed;
			suspected += st->suspected;
			refuted += st->refuted;
			dead += st->declared_dead;
			dropped += st->updates_dropped;
			nm += st->nacks_missed;
			q += swim_queued_updates(sw);
			lhm += swim_lhm(sw);
		}
		fprintf(stderr,
		        "probes %" PRIu64 " failed %" PRIu64 " suspected(events) %" PRIu64 " refuted %" PRIu64
		        " dead(events) %" PRIu64 " dropped %" PRIu64 " nacks_missed %" PRIu64 " avg queue %.1f avg lhm %.2f\n",
		        probes, failed, suspected, refuted, dead, dropped, nm, (double)q / n, (double)lhm / n);
	}
	return world_close(&r);
}

/* ---- join through a seed that comes up late (backoff) ---- */

static int sc_join(const struct sim_run *run, double *converge_periods)
{
	struct world_run r;
	world_open(&r, run, 0);
	struct swim_world *w = r.w;
	struct sim *s = w->sim;
	uint32_t n = run->n;
	sim_net_loss_ppm(s, 10000);
	uint64_t t0 = sim_now(s);
	/* every node but the seed starts within the first 2 periods and joins */
	for (uint32_t i = 1; i < n && !sim_failed(s); i++) {
		sim_run_until(s, t0 + rng_below(sim_rng(s), 2 * PERIOD_MS));
		swim_world_start(w, i);
		if (swim_world_join(w, i, 0) != 0) sim_fail(s, "swim_join refused a valid seed");
	}
	/* the seed comes up 6 periods late: the joiners must be retrying */
	sim_run_until(s, t0 + 6 * PERIOD_MS);
	swim_world_start(w, 0);
	sim_node_poke(s, 0);
	int ok = 0;
	for (uint32_t p = 0; p < 600 && !ok && !sim_failed(s); p++) {
		run_periods(w, 1);
		ok = swim_world_converged(w);
	}
	*converge_periods = (double)(sim_now(s) - t0) / PERIOD_MS - 6;
	if (!ok && !sim_failed(s)) sim_fail(s, "views did not converge within 600 periods after the seed came up");
	for (uint32_t i = 1; i < n && ok && !sim_failed(s); i++)
		if (swim_stats(swim_world_core(w, i))->join_attempts < 2)
			sim_fail(s, "%s joined without retrying although the seed was down", w->nodes[i].name);
	return world_close(&r);
}

/* ---- graceful leave ---- */

static int sc_leave(const struct sim_run *run, double *periods_out)
{
	struct world_run r;
	world_open(&r, run, 0);
	struct swim_world *w = r.w;
	struct sim *s = w->sim;
	sim_net_loss_ppm(s, 10000);
	swim_world_bootstrap_all(w);
	run_periods(w, 5);
	uint32_t v = rng_below(sim_rng(s), run->n);
	uint64_t t0 = sim_now(s);
	swim_world_leave(w, v);
	int ok = 0, stopped = 0;
	for (uint32_t p = 0; p < 300 && !ok && !sim_failed(s); p++) {
		run_periods(w, 1);
		if (!stopped && swim_leave_done(swim_world_core(w, v))) {
			w->nodes[v].last_incarnation = swim_self_incarnation(swim_world_core(w, v));
			sim_node_stop(s, v);
			stopped = 1;
		}
		ok = stopped && swim_world_all_up_see(w, v, 1u << SWIM_LEFT);
	}
	*periods_out = (double)(sim_now(s) - t0) / PERIOD_MS;
	if (!ok && !sim_failed(s)) sim_fail(s, "a left member was not marked left by everyone (stopped=%d)", stopped);
	if (w->nodes[v].dead_by && !sim_failed(s))
		sim_fail(s, "a left member was declared dead %u time(s)", w->nodes[v].dead_by);
	return world_close(&r);
}

/* ---- restart with the same id ---- */

static int sc_restart(const struct sim_run *run, int unsynced, double *periods_out)
{
	struct world_run r;
	world_open(&r, run, 0);
	struct swim_world *w = r.w;
	struct sim *s = w->sim;
	uint32_t n = run->n;
	sim_net_loss_ppm(s, 10000);
	if (unsynced) sim_disk_latency(s, UINT32_MAX, UINT32_MAX); /* nothing ever becomes durable */
	swim_world_bootstrap_all(w);
	run_periods(w, 5);
	uint32_t v = 1 + rng_below(sim_rng(s), n - 1);
	swim_world_kill(w, v);
	int ok = 0;
	for (uint32_t p = 0; p < 400 && !ok && !sim_failed(s); p++) {
		run_periods(w, 1);
		ok = swim_world_all_up_see(w, v, SWIM_SIM_GONE);
	}
	if (!ok && !sim_failed(s)) sim_fail(s, "the killed member was not declared dead");
	uint32_t dead_inc = w->nodes[v].last_incarnation;
	uint64_t t0 = sim_now(s);
	if (!sim_failed(s)) {
		swim_world_start(w, v); /* incarnation = durable + 1 (or 0 when nothing was) */
		if (unsynced && swim_self_incarnation(swim_world_core(w, v)) != 0)
			sim_fail(s, "an unsynced disk kept an incarnation");
		if (swim_world_join(w, v, 0) != 0) sim_fail(s, "swim_join refused a valid seed");
		ok = 0;
		for (uint32_t p = 0; p < 400 && !ok && !sim_failed(s); p++) {
			run_periods(w, 1);
			ok = swim_world_converged(w);
		}
		if (!ok && !sim_failed(s)) sim_fail(s, "the restarted member is not alive in every view");
		if (ok && swim_self_incarnation(swim_world_core(w, v)) <= dead_inc)
			sim_fail(s, "restarted incarnation %u is not above %u", swim_self_incarnation(swim_world_core(w, v)),
			         dead_inc);
	}
	*periods_out = (double)(sim_now(s) - t0) / PERIOD_MS;
	return world_close(&r);
}

/* ---- clock jump: wall clocks step, SWIM must not notice ---- */

static int sc_clockjump(const struct sim_run *run)
{
	struct world_run r;
	world_open(&r, run, 0);
	struct swim_world *w = r.w;
	struct sim *s = w->sim;
	uint32_t n = run->n;
	/* no loss: any suspicion is the clock's doing */
	sim_check_add(s, "no-suspicion", check_no_suspicion, w, 0);
	swim_world_bootstrap_all(w);
	run_periods(w, 5);
	uint32_t a = rng_below(sim_rng(s), n), b = (a + 1 + rng_below(sim_rng(s), n - 1)) % n;
	uint64_t wall0 = sim_node_clock(s, a).wall_ms;
	sim_clock_jump(s, a, 3600 * 1000);
	sim_clock_jump(s, b, -3600 * 1000);
	if (sim_node_clock(s, a).wall_ms < wall0 + 3600 * 1000) sim_fail(s, "the wall clock did not jump");
	run_periods(w, 40);
	return world_close(&r);
}

/* ---- one-run entry points (replay) ---- */

static int one_detect(const struct sim_run *run)
{
	struct detect_result d;
	memset(&d, 0, sizeof d);
	int f = sc_detect(run, run->n >= 1000 ? 10 : run->n >= 100 ? 2 : 1, &d);
	for (uint32_t k = 0; k < d.detect.n; k++)
		printf("kill %u: first suspect %.1f, first dead %.1f, dissemination %.1f, dead everywhere %.1f periods\n", k,
		       d.first_suspect.v[k], d.detect.v[k], d.dissem.v[k], d.total.v[k]);
	printf("messages/member/period %.2f\n", d.msgs_per_member_period);
	return f;
}

static int one_partial_run(const struct sim_run *run) { return sc_partial(run); }

static int one_partition(const struct sim_run *run)
{
	double heal = 0, split = 0;
	int f = sc_partition(run, &heal, &split);
	printf("split %.0f periods, heal %.0f periods\n", split, heal);
	return f;
}

static int one_asym(const struct sim_run *run)
{
	double heal = 0;
	int f = sc_asym(run, &heal);
	printf("heal %.0f periods\n", heal);
	return f;
}

static int one_loss(const struct sim_run *run)
{
	uint32_t fp = 0;
	int f = sc_loss(run, 100, &fp);
	printf("live members declared dead: %u\n", fp);
	return f;
}

static int one_join(const struct sim_run *run)
{
	double x = 0;
	int f = sc_join(run, &x);
	printf("all views full %.0f periods after the seed came up\n", x);
	return f;
}

static int one_leave(const struct sim_run *run)
{
	double x = 0;
	int f = sc_leave(run, &x);
	printf("marked left everywhere after %.0f periods\n", x);
	return f;
}

static int one_restart(const struct sim_run *run)
{
	double x = 0;
	int f = sc_restart(run, 0, &x);
	printf("alive in every view %.0f periods after the restart\n", x);
	return f;
}

static int one_restart_unsynced(const struct sim_run *run)
{
	double x = 0;
	int f = sc_restart(run, 1, &x);
	printf("alive in every view %.0f periods after the restart\n", x);
	return f;
}

static const struct sim_scenario SCENARIOS[] = {
	{"detect", "kill nodes; all must be declared dead, no live one", one_detect},
	{"partition", "split into halves (asserted), heal, converge", one_partition},
	{"asym", "one node unheard (hears all): dead to others, no collateral, heal", one_asym},
	{"partial", "one node cut from a quarter of the cluster: nobody dies", one_partial_run},
	{"loss", "no live member declared dead at --loss PCT (<= 10)", one_loss},
	{"join", "join through a seed that comes up late", one_join},
	{"leave", "a leaving node is marked left, never dead", one_leave},
	{"restart", "restart from the disk, rejoin, higher incarnation", one_restart},
	{"restart-unsynced", "restart after losing every unsynced write", one_restart_unsynced},
	{"clockjump", "wall clocks jump +-1 h: nobody is suspected", sc_clockjump},
	{NULL, NULL, NULL},
};

/* ---- the CI plan and the measured table ---- */

enum { SC_DETECT = 1, SC_PARTITION, SC_LOSS, SC_JOIN, SC_LEAVE, SC_RESTART, SC_ASYM, SC_PARTIAL, SC_CLOCKJUMP,
       SC_RESTART_UNSYNCED };

struct row {
	uint32_t n;
	struct detect_result d;
	uint32_t fp[3];
	int have_partition;
	double heal, split;
	double secs;
};

static double wall_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_table(struct row *rows, uint32_t count)
{
	printf("\n| N | detect p50 / p99 | dead everywhere p50 / p99 | dissemination p50 / p99 (3*log2 N) | "
	       "msgs/member/period | false positives 5%% / 10%% / 20%% loss | partition heal |\n");
	printf("|---|---|---|---|---|---|---|\n");
	for (uint32_t i = 0; i < count; i++) {
		struct row *r = &rows[i];
		double d50 = sim_pct(&r->d.detect, 50), d99 = sim_pct(&r->d.detect, 99);
		double t50 = sim_pct(&r->d.total, 50), t99 = sim_pct(&r->d.total, 99);
		double s50 = sim_pct(&r->d.dissem, 50), s99 = sim_pct(&r->d.dissem, 99);
		printf("| %u | %.1f / %.1f | %.1f / %.1f | %.1f / %.1f (%u) | %.2f | %u / %u / %u | ", r->n, d50, d99, t50,
		       t99, s50, s99, 3 * ilog2_ceil(r->n), r->d.msgs_per_member_period, r->fp[0], r->fp[1], r->fp[2]);
		if (r->have_partition) printf("%.0f periods (split %.0f) |\n", r->heal, r->split);
		else printf("- |\n");
	}
	printf("\nTimes in protocol periods (%d ms). detect = kill to first `dead`; dead everywhere = kill to "
	       "the last alive member marking it dead; dissemination = first `dead` to last. Samples per N: "
	       "see docs/membership.md.\n",
	       PERIOD_MS);
}

static void life_cycle(uint64_t seed, uint32_t n, uint32_t runs)
{
	for (uint32_t i = 0; i < runs; i++) {
		double x = 0;
		struct sim_run run = run_of("join", n, sim_derive_seed(seed, SC_JOIN, n, i), 0, 0);
		sc_join(&run, &x);
		printf("N=%u join via a late seed (seed %" PRIu64 "): all views full %.0f periods after the seed came up\n",
		       n, run.seed, x);
		run = run_of("leave", n, sim_derive_seed(seed, SC_LEAVE, n, i), 0, 0);
		sc_leave(&run, &x);
		printf("N=%u leave (seed %" PRIu64 "): everyone marked it left after %.0f periods\n", n, run.seed, x);
		run = run_of("restart", n, sim_derive_seed(seed, SC_RESTART, n, i), 0, 0);
		sc_restart(&run, 0, &x);
		printf("N=%u restart (seed %" PRIu64 "): alive in every view %.0f periods after the restart\n", n, run.seed,
		       x);
	}
	double x = 0;
	struct sim_run run = run_of("restart-unsynced", n, sim_derive_seed(seed, SC_RESTART_UNSYNCED, n, 0), 0, 0);
	sc_restart(&run, 1, &x);
	printf("N=%u restart with nothing synced (seed %" PRIu64 "): alive in every view after %.0f periods\n", n,
	       run.seed, x);
	run = run_of("asym", n, sim_derive_seed(seed, SC_ASYM, n, 0), 0, 0);
	sc_asym(&run, &x);
	printf("N=%u asymmetric partition (seed %" PRIu64 "): converged %.0f periods after the heal\n", n, run.seed, x);
	run = run_of("partial", n, sim_derive_seed(seed, SC_PARTIAL, n, 0), 0, 0);
	sc_partial(&run);
	printf("N=%u partial partition (seed %" PRIu64 "): nobody declared dead\n", n, run.seed);
	run = run_of("clockjump", n, sim_derive_seed(seed, SC_CLOCKJUMP, n, 0), 0, 0);
	sc_clockjump(&run);
	printf("N=%u wall clock jumps +-1 h (seed %" PRIu64 "): nobody suspected\n", n, run.seed);
}

static void swim_ci(uint64_t seed, int big)
{
	uint32_t sizes[4] = {10, 100, 1000, 10000};
	uint32_t size_count = big ? 4 : 3;
	struct row rows[4];
	memset(rows, 0, sizeof rows);
	printf("swim: period=%d ms probe_timeout=%d ms\n", PERIOD_MS, SWIM_SIM_PROBE_TIMEOUT_MS);
	for (uint32_t si = 0; si < size_count; si++) {
		uint32_t n = sizes[si];
		struct row *r = &rows[si];
		r->n = n;
		double t = wall_s();
		/* detection samples */
		uint32_t runs = n <= 10 ? 10 : n <= 100 ? 5 : 1;
		uint32_t kills = n <= 10 ? 1 : n <= 100 ? 2 : 10;
		for (uint32_t i = 0; i < runs; i++) {
			struct detect_result d;
			memset(&d, 0, sizeof d);
			struct sim_run run = run_of("detect", n, sim_derive_seed(seed, SC_DETECT, n, i), 0, 0);
			sc_detect(&run, kills, &d);
			for (uint32_t k = 0; k < d.detect.n; k++) {
				sim_sample_add(&r->d.first_suspect, d.first_suspect.v[k]);
				sim_sample_add(&r->d.detect, d.detect.v[k]);
				sim_sample_add(&r->d.dissem, d.dissem.v[k]);
				sim_sample_add(&r->d.total, d.total.v[k]);
			}
			if (i == 0) r->d.msgs_per_member_period = d.msgs_per_member_period;
		}
		if (n >= 1000) {
			double s99 = sim_pct(&r->d.dissem, 99);
			if (s99 > 3.0 * ilog2_ceil(n)) {
				struct sim_run run = run_of("detect", n, sim_derive_seed(seed, SC_DETECT, n, 0), 0, 0);
				sim_fail_run(&run, "dissemination p99 %.1f periods over 3*log2(N) = %u", s99, 3 * ilog2_ceil(n));
			}
		}
		/* false positives */
		uint32_t losses[3] = {5, 10, 20};
		for (int li = 0; li < 3; li++) {
			struct sim_run run = run_of("loss", n, sim_derive_seed(seed, SC_LOSS, n, losses[li]), losses[li], 0);
			sc_loss(&run, n >= 10000 ? 40 : 100, &r->fp[li]);
		}
		/* partition and heal (N <= 100 in CI: at N = 1,000 the split alone
		 * takes ~200-360 periods, about 30 s of CPU; run it with
		 * --scenario partition --n 1000); the life cycle */
		if (n <= 100) {
			r->have_partition = 1;
			struct sim_run run = run_of("partition", n, sim_derive_seed(seed, SC_PARTITION, n, 0), 0, 0);
			sc_partition(&run, &r->heal, &r->split);
		}
		if (n <= 100) life_cycle(seed, n, 3);
		r->secs = wall_s() - t;
		printf("N=%u done in %.1f s\n", n, r->secs);
		fflush(stdout);
	}
	/* messages per member per period stay flat in N */
	double lo = 1e9, hi = 0;
	for (uint32_t i = 0; i < size_count; i++) {
		double m = rows[i].d.msgs_per_member_period;
		if (m < lo) lo = m;
		if (m > hi) hi = m;
	}
	if (hi > 1.5 * lo) {
		struct sim_run run = run_of("detect", 0, seed, 0, 0);
		sim_fail_run(&run, "messages per member per period not flat in N: %.2f .. %.2f", lo, hi);
	}
	print_table(rows, size_count);
}

const struct sim_suite sim_suite_swim = {.driver = "swim", .scenarios = SCENARIOS, .ci = swim_ci};
