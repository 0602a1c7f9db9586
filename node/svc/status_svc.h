/*
 * status_svc.h - the status service: `clusterctl status`, assembled from
 * the host (identity, sessions, refused frames, the request table's
 * counters) and every service's status() contribution.
 */
#ifndef CHORUS_SVC_STATUS_SVC_H
#define CHORUS_SVC_STATUS_SVC_H

struct host;

int status_svc_register(struct host *h);

#endif
