/*
 * main.c - chorus_sim: command line and the registry of simulator suites.
 *
 * A new driver (Raft, cache replication) brings a driver_X.c, a
 * scenarios_X.c exporting `const struct sim_suite sim_suite_X`, and one line
 * in SUITES below.
 *
 * Seeds: --seed S, else $CHORUS_SIM_SEED, else (for --ci) one derived from
 * the time and pid, so every CI run explores new seeds. The top-level seed
 * and the line that replays the whole run are printed first; every failure
 * prints the line that replays that one run.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

extern const struct sim_suite sim_suite_swim;
extern const struct sim_suite sim_suite_raft;
extern const struct sim_suite sim_suite_cache;

static const struct sim_suite *const SUITES[] = {
	&sim_suite_swim,
	&sim_suite_raft,
	&sim_suite_cache,
};
#define SUITE_COUNT (sizeof SUITES / sizeof SUITES[0])

static const struct sim_scenario *scenario_find(const char *name)
{
	for (size_t i = 0; i < SUITE_COUNT; i++)
		for (const struct sim_scenario *sc = SUITES[i]->scenarios; sc->name; sc++)
			if (!strcmp(sc->name, name)) return sc;
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: chorus_sim [--ci] [--big] [--suite NAME] [--seed S] [-v]\n"
	           "       chorus_sim --scenario NAME --n N --seed S [--loss PCT] [-v]\n"
	           "  --ci     every suite's CI plan (asserting scenarios, N = 10, 100, 1000, and the table);\n"
	           "           exit 1 on a violation\n"
	           "  --big    also N = 10,000 in the table (about 11 GB of memory, many minutes), and\n"
	           "           the long plans (many more seeds per scenario)\n"
	           "  --suite  only that suite's plan (swim, raft, cache)\n"
	           "  --seed   top-level seed (default: $CHORUS_SIM_SEED, else derived from the time);\n"
	           "           every failure prints the seed and command that replay it\n"
	           "scenarios:\n");
	for (size_t i = 0; i < SUITE_COUNT; i++)
		for (const struct sim_scenario *sc = SUITES[i]->scenarios; sc->name; sc++)
			fprintf(f, "  %-18s %s: %s\n", sc->name, SUITES[i]->driver, sc->help);
}

static double wall_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	uint64_t seed = 0;
	int have_seed = 0, big = 0, verbose = 0;
	const char *scenario = NULL, *suite = NULL;
	uint32_t one_n = 100, loss_pct = 10;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--ci")) {
			/* the default run is the CI run */
		} else if (!strcmp(argv[i], "--big")) {
			big = 1;
		} else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			seed = strtoull(argv[++i], NULL, 10);
			have_seed = 1;
		} else if (!strcmp(argv[i], "--suite") && i + 1 < argc) {
			suite = argv[++i];
		} else if (!strcmp(argv[i], "--scenario") && i + 1 < argc) {
			scenario = argv[++i];
		} else if (!strcmp(argv[i], "--n") && i + 1 < argc) {
			one_n = (uint32_t)strtoul(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--loss") && i + 1 < argc) {
			loss_pct = (uint32_t)strtoul(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "-v")) {
			verbose = 1;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (one_n < 2 || one_n > 16384 || loss_pct > 100) {
		usage(stderr);
		return 2;
	}
	if (!have_seed && getenv("CHORUS_SIM_SEED")) {
		seed = strtoull(getenv("CHORUS_SIM_SEED"), NULL, 10);
		have_seed = 1;
	}

	if (scenario) {
		const struct sim_scenario *sc = scenario_find(scenario);
		if (!sc || !have_seed) {
			usage(stderr);
			return 2;
		}
		struct sim_run run = {.scenario = sc->name, .n = one_n, .seed = seed, .verbose = verbose,
		                      .loss_pct = !strcmp(sc->name, "loss") ? loss_pct : 0};
		int failed = sc->run(&run) || sim_failures();
		printf("%s n=%u seed=%" PRIu64 ": %s\n", sc->name, one_n, seed, failed ? "FAILED" : "ok");
		return failed ? 1 : 0;
	}

	if (!have_seed) {
		/* a new seed every CI run: the seed space gets explored */
		uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
		seed = rng_splitmix64(&x) % 1000000000ULL;
	}
	double t0 = wall_s();
	int known = !suite;
	for (size_t i = 0; i < SUITE_COUNT; i++) known |= suite && !strcmp(suite, SUITES[i]->driver);
	if (!known) {
		usage(stderr);
		return 2;
	}
	printf("chorus_sim seed=%" PRIu64 " (replay this whole run: chorus_sim --ci%s%s%s --seed %" PRIu64 ")\n", seed,
	       big ? " --big" : "", suite ? " --suite " : "", suite ? suite : "", seed);
	fflush(stdout);
	for (size_t i = 0; i < SUITE_COUNT; i++)
		if (!suite || !strcmp(suite, SUITES[i]->driver)) SUITES[i]->ci(seed, big);
	printf("\nchorus_sim: %s in %.1f s (seed %" PRIu64 ")\n",
	       sim_failures() ? "FAILED" : "all invariants held", wall_s() - t0, seed);
	if (sim_failures())
		printf("replay: chorus_sim --ci%s%s%s --seed %" PRIu64 " (or the per-run lines above)\n", big ? " --big" : "",
		       suite ? " --suite " : "", suite ? suite : "", seed);
	return sim_failures() ? 1 : 0;
}
