/*
 * sched_svc.h - the schedule service: election (Raft among the voters),
 * the replicated schedules, `clusterctl cron` and `clusterctl voters`
 * (sched_svc.c). Needs the cluster (peers port) and tasks (task_submit
 * port) services registered before it.
 */
#ifndef CHORUS_SVC_SCHED_SVC_H
#define CHORUS_SVC_SCHED_SVC_H

struct host;

/* 0, or -1 when out of memory. */
int sched_svc_register(struct host *h);

#endif
