/*
 * tasks_svc.h - the tasks service: submit, fan-out (map), await, batch
 * results, cancel and list over the request table; the task core
 * (core/tasks.c), the journal's task rows (io/store.c) and the worker
 * supervisor (io/workers.c) behind them. Provides the "task_sink" port,
 * uses the "placement" port (svc/ports.h).
 */
#ifndef CHORUS_SVC_TASKS_SVC_H
#define CHORUS_SVC_TASKS_SVC_H

struct host;

/* Registers the service with the host. 0 or -1 (ENOMEM). */
int tasks_svc_register(struct host *h);

#endif
