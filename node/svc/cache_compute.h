/*
 * cache_compute.h - the cache's get-or-compute (CACHE_GET_OR_COMPUTE;
 * docs/cache.md "Get-or-compute"): a key's value, or, when it holds none,
 * the output of a task run once for it while every other caller of that
 * key waits (ConCache's get_or_store, cluster-wide: the key's primary runs
 * the compute; the node a caller comes in by shares one forward among the
 * callers of one request). Part of the cache service (cache_internal.h);
 * its hooks in cache_svc.c are the calls below. One thread: the node's
 * loop.
 */
#ifndef CHORUS_SVC_CACHE_COMPUTE_H
#define CHORUS_SVC_CACHE_COMPUTE_H

#include <stddef.h>
#include <stdint.h>

#include "svc/ports.h"

struct cache_svc;
struct cache;
struct config;

/* Get-or-compute forwards one node keeps in flight to one primary: each
 * holds one of the link's request slots (node/io/cluster.c, 256) for as
 * long as its compute runs, and the rest are for everything else that node
 * is sent (cache requests, replica copies, Raft, task placement). */
#define CACHE_COMPUTE_FORWARDS_PEER_MAX 32u

/* At the service's start, after the caches: 0, or -1 with a message in
 * err (out of memory). A node without the task_submit port refuses every
 * get-or-compute (CH_ERR_UNAVAILABLE) but starts. */
int cache_compute_start(struct cache_svc *s, char *err, size_t err_len);
/* At the service's stop, once every operation of the service was answered
 * (an internal read or write of a compute is one, and so is a forward):
 * the computes still waiting for their task are answered
 * CH_ERR_SHUTTING_DOWN, their watches dropped (the tasks go on,
 * unwatched). */
void cache_compute_stop(struct cache_svc *s);
/* Each tick (at least every MAP_CHECK_MS): callers of a compute whose
 * forwarding node stopped waiting for them are answered CH_ERR_TIMEOUT and
 * no longer count against compute_waiters_max. */
void cache_compute_tick(struct cache_svc *s, uint64_t now_mono_ms);

/* At the node a request comes in by, before routing it: checks what needs
 * no primary (a handler named, the payload's size, the ttl). 0, or 1 when
 * it answered the request (cb called) with an error. */
int cache_compute_check(struct cache_svc *s, const Chorus__CacheReq *req, cache_reply_fn cb,
                        void *arg);
/* At the node a request comes in by, when `to` leads the key: the request
 * is forwarded, or joins the forward of the same request (cache c, key,
 * compute spec, ttl, consistency) already in flight to `to`, whose answer
 * is every caller's. CH_ERR_FULL past CACHE_COMPUTE_FORWARDS_PEER_MAX
 * forwards to `to`, or past compute_waiters_max callers of one forward.
 * Answers through cb, exactly once, maybe before it returns. */
void cache_compute_forward(struct cache_svc *s, struct cache *c, const uint8_t *to,
                           const Chorus__CacheReq *req, cache_reply_fn cb, void *arg);
/* At the key's primary: answers through cb, exactly once, maybe before it
 * returns. req need not outlive the call. */
void cache_compute_primary(struct cache_svc *s, struct cache *c, const Chorus__CacheReq *req,
                           cache_reply_fn cb, void *arg);
/* The caller whose callback argument is arg went away (its session was
 * dropped) before its answer: 1 when it waited on a compute or a forward
 * here, and no longer does (cb will never be called: the caller frees what
 * arg holds); 0 when it is not known here (cb will be called as usual). */
int cache_compute_cancel(struct cache_svc *s, void *arg);

/* How long a node waits for the primary's answer to a forwarded request:
 * twice the cache timeout, or, for a get-or-compute, the wait it carries
 * (CacheReq.wait_ms), else how long the primary may wait for its compute
 * (cache_compute_wait_ms) plus three cache timeouts (its read before and
 * its write after). */
uint32_t cache_forward_timeout_ms(const struct config *cfg, const Chorus__CacheReq *req);
/* How long a primary waits for a compute's task before it gives up on it
 * (cancels it and answers CH_ERR_TIMEOUT): the run, that is the task's
 * time limit (its own, else the node's default, else
 * COMPUTE_LIMIT_MS_DEFAULT) times its attempts plus the backoffs between
 * them, and on top the wait for a worker, as long as the run and at least
 * CH_CACHE_COMPUTE_QUEUE_MS; at most CH_CACHE_COMPUTE_WAIT_MS_MAX. */
uint32_t cache_compute_wait_ms(const struct config *cfg, const Chorus__TaskOptions *o);
/* The wait a primary gives a compute a forwarded caller starts: its own
 * (own_ms), or less when the node that forwarded the request waits
 * forwarded_ms in all (0: not said) and elapsed_ms of it went by here
 * already, reserve_ms kept for the write and the answer's way back. 0 when
 * nothing is left for a compute. Pure. */
uint32_t cache_compute_wait_within(uint32_t own_ms, uint32_t forwarded_ms, uint64_t elapsed_ms,
                                   uint64_t reserve_ms);

#endif
