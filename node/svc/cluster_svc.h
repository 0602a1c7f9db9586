/*
 * cluster_svc.h - the cluster service: SWIM membership (gossip requests,
 * the members list) and placing tasks on other members, over io/cluster.c.
 * Provides the "placement" port, uses the "task_sink" port (svc/ports.h).
 */
#ifndef CHORUS_SVC_CLUSTER_SVC_H
#define CHORUS_SVC_CLUSTER_SVC_H

struct host;

int cluster_svc_register(struct host *h);

#endif
