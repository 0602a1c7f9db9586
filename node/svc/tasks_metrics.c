/*
 * tasks_metrics.c - the tasks service's metric families (docs/metrics.md):
 * tasks by state and handler, queue wait and run time by handler, pools.
 * Part of the tasks service (tasks_svc.c).
 */
#include "svc/tasks_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/prom.h"

/* ---- metrics (docs/metrics.md) ---- */

static struct task_handler_metrics *handler_metrics(struct tasks_svc *s, const char *name)
{
	struct tasks_metrics *m = &s->metrics;
	if (!name)
		name = "";
	for (uint32_t i = 0; i < m->n; i++)
		if (strcmp(m->h[i].name, name) == 0)
			return &m->h[i];
	if (m->n < TASKS_METRIC_HANDLERS_MAX && strlen(name) <= HANDLER_NAME_MAX) {
		struct task_handler_metrics *hm = &m->h[m->n++];
		snprintf(hm->name, sizeof(hm->name), "%s", name);
		return hm;
	}
	return &m->h[TASKS_METRIC_HANDLERS_MAX];
}

/* A task this node owns reached its final state. A task placed here by
 * another node's fan-out (ephemeral) is its coordinator's to count, so
 * the cluster's sum counts every task once. */
void tasks_metrics_final(struct tasks_svc *s, const struct task *t)
{
	if (t->ephemeral || t->state < TASK_SUCCEEDED || t->state > TASK_LOST)
		return;
	struct task_handler_metrics *hm = handler_metrics(s, t->handler);
	hm->finished[t->state]++;
	if (t->started_ms && t->submitted_ms && t->started_ms >= t->submitted_ms)
		prom_hist_observe(&hm->wait, prom_seconds_le, PROM_SECONDS_BUCKETS,
		                  (double)(t->started_ms - t->submitted_ms) / 1000.0);
	if (t->started_ms && t->finished_ms && t->finished_ms >= t->started_ms)
		prom_hist_observe(&hm->run, prom_seconds_le, PROM_SECONDS_BUCKETS,
		                  (double)(t->finished_ms - t->started_ms) / 1000.0);
}

void tasks_svc_metrics(void *svc, struct prom *p)
{
	struct tasks_svc *s = svc;
	struct tasks_metrics *m = &s->metrics;
	struct tasks_counters c;
	tasks_counters(s->tasks, &c);
	prom_family(p, "chorus_tasks", PROM_GAUGE,
	            "Unfinished tasks held here, by state (retry_wait: waiting out a backoff).");
	prom_sample(p, "chorus_tasks", (double)c.queued, "state", "queued", NULL);
	prom_sample(p, "chorus_tasks", (double)c.running, "state", "running", NULL);
	prom_sample(p, "chorus_tasks", (double)c.backoff, "state", "retry_wait", NULL);
	prom_family(p, "chorus_tasks_submitted_total", PROM_COUNTER,
	            "Tasks admitted by this node since it started.");
	prom_sample(p, "chorus_tasks_submitted_total", (double)c.submitted, NULL);
	prom_family(p, "chorus_tasks_retried_total", PROM_COUNTER,
	            "Attempts of transient tasks queued again after an abnormal end.");
	prom_sample(p, "chorus_tasks_retried_total", (double)c.retried, NULL);

	uint32_t slots[TASKS_METRIC_HANDLERS_MAX + 1];
	uint32_t ns = 0;
	for (uint32_t i = 0; i < m->n; i++)
		slots[ns++] = i;
	const struct task_handler_metrics *other = &m->h[TASKS_METRIC_HANDLERS_MAX];
	int other_used = 0;
	for (int st = TASK_SUCCEEDED; st <= TASK_LOST; st++)
		other_used |= other->finished[st] != 0;
	if (other_used)
		slots[ns++] = TASKS_METRIC_HANDLERS_MAX;
	prom_family(p, "chorus_tasks_total", PROM_COUNTER,
	            "Tasks owned by this node that finished since it started, by final state and "
	            "handler (handlers past the first 64 as \"other\").");
	for (uint32_t k = 0; k < ns; k++) {
		const struct task_handler_metrics *hm = &m->h[slots[k]];
		const char *hn = slots[k] == TASKS_METRIC_HANDLERS_MAX ? "other" : hm->name;
		for (int st = TASK_SUCCEEDED; st <= TASK_LOST; st++)
			prom_sample(p, "chorus_tasks_total", (double)hm->finished[st], "state",
			            task_state_name(st), "handler", hn, NULL);
	}
	prom_family(p, "chorus_task_queue_wait_seconds", PROM_HISTOGRAM,
	            "Time from a task's submission to its (last) attempt's start, by handler.");
	for (uint32_t k = 0; k < ns; k++) {
		const struct task_handler_metrics *hm = &m->h[slots[k]];
		prom_histogram(p, "chorus_task_queue_wait_seconds", prom_seconds_le, hm->wait.counts,
		               PROM_SECONDS_BUCKETS, hm->wait.counts[PROM_SECONDS_BUCKETS], hm->wait.sum,
		               "handler", slots[k] == TASKS_METRIC_HANDLERS_MAX ? "other" : hm->name,
		               NULL);
	}
	prom_family(p, "chorus_task_run_seconds", PROM_HISTOGRAM,
	            "Time from a task's (last) attempt's start to its end, by handler.");
	for (uint32_t k = 0; k < ns; k++) {
		const struct task_handler_metrics *hm = &m->h[slots[k]];
		prom_histogram(p, "chorus_task_run_seconds", prom_seconds_le, hm->run.counts,
		               PROM_SECONDS_BUCKETS, hm->run.counts[PROM_SECONDS_BUCKETS], hm->run.sum,
		               "handler", slots[k] == TASKS_METRIC_HANDLERS_MAX ? "other" : hm->name,
		               NULL);
	}

	/* the worker pools */
	if (!s->workers)
		return; /* stopping */
	struct workers_pool_status ws[WORKERS_POOLS_MAX];
	for (uint32_t q = 0; q < s->pool_count; q++)
		workers_pool_status(s->workers, q, &ws[q]);
	prom_family(p, "chorus_pool_queue_depth", PROM_GAUGE,
	            "Tasks queued for a pool, not yet handed to a worker.");
	for (uint32_t q = 0; q < s->pool_count; q++)
		prom_sample(p, "chorus_pool_queue_depth", tasks_pool_queued(s->tasks, q), "pool",
		            s->pool_names[q], NULL);
	prom_family(p, "chorus_pool_prefetched", PROM_GAUGE,
	            "Jobs handed to a pool's workers, waiting behind the running ones.");
	for (uint32_t q = 0; q < s->pool_count; q++)
		prom_sample(p, "chorus_pool_prefetched", ws[q].queued, "pool", s->pool_names[q], NULL);
	prom_family(p, "chorus_pool_workers", PROM_GAUGE,
	            "A pool's worker processes: configured, alive, busy (running a task).");
	for (uint32_t q = 0; q < s->pool_count; q++) {
		prom_sample(p, "chorus_pool_workers", ws[q].workers, "pool", s->pool_names[q], "state",
		            "configured", NULL);
		prom_sample(p, "chorus_pool_workers", ws[q].alive, "pool", s->pool_names[q], "state",
		            "alive", NULL);
		prom_sample(p, "chorus_pool_workers", ws[q].busy, "pool", s->pool_names[q], "state",
		            "busy", NULL);
	}
	prom_family(p, "chorus_worker_restarts_total", PROM_COUNTER,
	            "Worker processes of a pool restarted after they died.");
	for (uint32_t q = 0; q < s->pool_count; q++)
		prom_sample(p, "chorus_worker_restarts_total", ws[q].restarts, "pool", s->pool_names[q],
		            NULL);
	prom_family(p, "chorus_pool_degraded", PROM_GAUGE,
	            "1 while a pool is degraded (restart intensity exceeded), else 0.");
	for (uint32_t q = 0; q < s->pool_count; q++)
		prom_sample(p, "chorus_pool_degraded", ws[q].degraded ? 1 : 0, "pool", s->pool_names[q],
		            NULL);
}

