/*
 * bench_cron_add.c - adds many schedules to a running cluster through
 * libchorus, from several threads at once (one clusterctl process per
 * schedule would measure process start-up, not the cluster). Used by
 * bench_sched.py for the 100,000-schedule figure; not a test.
 *
 *   bench_cron_add ADDR SECRET_FILE PREFIX COUNT THREADS EXPR
 *
 * Adds PREFIX0 .. PREFIX{COUNT-1}, each `EXPR` running the echo handler,
 * and prints one JSON line: {"added":N,"failed":N,"seconds":S}. A schedule
 * refused with CH_ERR_NOT_LEADER is retried (libchorus already forwards);
 * any other refusal counts as failed and the first one is printed. Exit 0
 * when every schedule was added, 1 otherwise, 2 for bad usage.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chorus.h"

#define THREADS_MAX 64

struct job {
	ch_client *c;
	const char *prefix, *expr;
	uint32_t from, to;
};

static atomic_uint g_added, g_failed;
static atomic_int g_printed;

static void *worker(void *arg)
{
	struct job *j = arg;
	for (uint32_t i = j->from; i < j->to; i++) {
		char name[64];
		snprintf(name, sizeof(name), "%s%u", j->prefix, i);
		struct ch_cron_spec spec;
		memset(&spec, 0, sizeof(spec));
		spec.name = name;
		spec.expr = j->expr;
		spec.handler = "echo";
		spec.payload = "x";
		spec.payload_len = 1;
		char err[256];
		int rc = CH_ERR_NOT_LEADER;
		for (int tries = 0; tries < 20 && rc == CH_ERR_NOT_LEADER; tries++)
			rc = ch_cron_add(j->c, &spec, NULL, err, sizeof(err));
		if (rc == CH_OK) {
			atomic_fetch_add(&g_added, 1);
		} else {
			atomic_fetch_add(&g_failed, 1);
			if (atomic_exchange(&g_printed, 1) == 0)
				fprintf(stderr, "bench_cron_add: %s: %s (%s)\n", name, ch_strerror(rc), err);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: bench_cron_add ADDR SECRET_FILE PREFIX COUNT THREADS EXPR\n");
		return 2;
	}
	uint32_t count = (uint32_t)strtoul(argv[4], NULL, 10);
	uint32_t threads = (uint32_t)strtoul(argv[5], NULL, 10);
	if (threads == 0 || threads > THREADS_MAX) {
		fprintf(stderr, "bench_cron_add: THREADS is 1..%d\n", THREADS_MAX);
		return 2;
	}
	char err[256];
	struct ch_client_options o = {.timeout_ms = 30000, .contexts = threads};
	ch_client *c = NULL;
	int rc = ch_client_connect(&c, argv[1], argv[2], &o, err, sizeof(err));
	if (rc != CH_OK) {
		fprintf(stderr, "bench_cron_add: connect %s: %s (%s)\n", argv[1], ch_strerror(rc), err);
		return 1;
	}
	struct job jobs[THREADS_MAX];
	pthread_t tids[THREADS_MAX];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint32_t t = 0; t < threads; t++) {
		jobs[t] = (struct job){c, argv[3], argv[6], (uint32_t)((uint64_t)count * t / threads),
		                       (uint32_t)((uint64_t)count * (t + 1) / threads)};
		if (pthread_create(&tids[t], NULL, worker, &jobs[t]) != 0) {
			fprintf(stderr, "bench_cron_add: cannot start a thread\n");
			return 1;
		}
	}
	for (uint32_t t = 0; t < threads; t++)
		pthread_join(tids[t], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("{\"added\":%u,\"failed\":%u,\"seconds\":%.3f}\n", atomic_load(&g_added),
	       atomic_load(&g_failed), secs);
	ch_client_close(c);
	return atomic_load(&g_failed) ? 1 : 0;
}
