/*
 * cache_compute.h - the cache's get-or-compute (CACHE_GET_OR_COMPUTE;
 * docs/cache.md "Get-or-compute"): a key's value, or, when it holds none,
 * the output of a task run once for it while every other caller of that
 * key waits (ConCache's get_or_store, cluster-wide: the key's primary runs
 * the compute). Part of the cache service (cache_internal.h); its hooks
 * in cache_svc.c are the calls below. One thread: the node's loop.
 */
#ifndef CHORUS_SVC_CACHE_COMPUTE_H
#define CHORUS_SVC_CACHE_COMPUTE_H

#include <stddef.h>
#include <stdint.h>

#include "svc/ports.h"

struct cache_svc;
struct cache;
struct config;

/* At the service's start, after the caches: 0, or -1 with a message in
 * err (out of memory). A node without the task_submit port refuses every
 * get-or-compute (CH_ERR_UNAVAILABLE) but starts. */
int cache_compute_start(struct cache_svc *s, char *err, size_t err_len);
/* At the service's stop, once every operation of the service was answered
 * (an internal read or write of a compute is one): the computes still
 * waiting for their task are answered CH_ERR_SHUTTING_DOWN, their watches
 * dropped (the tasks go on, unwatched). */
void cache_compute_stop(struct cache_svc *s);

/* At the node a request comes in by, before routing it: checks what needs
 * no primary (a handler named, the payload's size, the ttl). 0, or 1 when
 * it answered the request (cb called) with an error. */
int cache_compute_check(struct cache_svc *s, const Chorus__CacheReq *req, cache_reply_fn cb,
                        void *arg);
/* At the key's primary: answers through cb, exactly once, maybe before it
 * returns. req need not outlive the call. */
void cache_compute_primary(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req,
                           cache_reply_fn cb, void *arg);

/* How long a node waits for the primary's answer to a forwarded request:
 * twice the cache timeout, or, for a get-or-compute, how long the primary
 * may wait for its compute (cache_compute_wait_ms) plus three cache
 * timeouts (its read before and its write after). */
uint32_t cache_forward_timeout_ms(const struct config *cfg, const Chorus__CacheReq *req);
/* How long a primary waits for a compute's task before it gives up on it
 * (cancels it and answers CH_ERR_TIMEOUT): the task's time limit (its own,
 * else the node's default, else COMPUTE_LIMIT_MS_DEFAULT) times its
 * attempts, plus the backoffs between them and COMPUTE_QUEUE_MS for the
 * wait for a worker, at most CH_CACHE_COMPUTE_WAIT_MS_MAX. */
uint32_t cache_compute_wait_ms(const struct config *cfg, const Chorus__TaskOptions *o);

#endif
