/*
 * resp_svc.h - the cache's Redis-protocol front door: a RESP2 listener
 * (chorusd --resp HOST:PORT, [resp] in the config file) that turns Redis
 * commands into cache requests (the "cache" port, svc/ports.h) so that
 * redis-cli, redis-benchmark and Redis client libraries work against any
 * node. Off unless a listen address is set; docs/resp.md says what is
 * supported and how it differs from Redis.
 *
 * Registered after the cache service (it looks the "cache" port up at
 * start). Threading: the loop thread only.
 */
#ifndef CHORUS_SVC_RESP_SVC_H
#define CHORUS_SVC_RESP_SVC_H

struct host;

int resp_svc_register(struct host *h);

#endif
