/*
 * cache_svc.h - the cache service (issue #12, docs/cache.md): named caches
 * partitioned over the alive members by rendezvous hashing
 * (core/cplace.h), each partition held by a primary and its replicas,
 * versions from a hybrid logical clock (core/hlc.h), entries in a local
 * store per cache (core/cstore.h). Answers CacheReq from clients (any node:
 * a node that is not the key's primary forwards to it) and CacheRepl from
 * peers; provides the cache port (svc/ports.h) to the RESP front door.
 * Needs the cluster service (peers port) registered before it.
 */
#ifndef CHORUS_SVC_CACHE_SVC_H
#define CHORUS_SVC_CACHE_SVC_H

struct host;

/* 0, or -1 when out of memory. */
int cache_svc_register(struct host *h);

#endif
