/*
 * service.h - chorusd as a host of services.
 *
 * A service (tasks, cluster, status; schedules, the cache and HTTP later) is
 * one module in node/svc/ behind `struct service_ops`. It registers its
 * request types in the request table (io/dispatch.h) and itself with the
 * host, from one function its module exports (tasks_svc_register(), ...),
 * called by the composition root (node/main.c). Adding a service touches no
 * other service's files and not the loop.
 *
 * The loop (node/io/host.c), one thread, each iteration:
 *   1. poll: the wake eventfd (nng threads), the signalfd, every service's
 *      fds; timeout = the earliest next_deadline() of any service (and at
 *      most 100 ms);
 *   2. read the clock once: struct now {mono_ms, wall_ms} for everything
 *      below;
 *   3. BEGIN the iteration's transaction;
 *   4. signals: TERM/INT start the drain, others go to on_signal();
 *   5. requests: every frame that arrived, through the request table to the
 *      services' handlers;
 *   6. on_poll() of each service whose fds are ready, in registration order;
 *   7. tick() of each service, in registration order;
 *   8. flush() of each service into the transaction, then COMMIT (group
 *      commit), then after_commit(committed) of each service, then the
 *      outbox is sent (so nothing is promised before it is durable);
 *   9. the drain advances (below).
 * Drain (SIGTERM): intake stops at once (REQ_REFUSE_DRAINING requests are
 * refused), then services drain one at a time in reverse registration order
 * (as OTP stops a supervisor's children): drain() once, then drained() each
 * iteration until it says 1. Then one last iteration runs with
 * host_closing() true (answer every parked call), and stop() runs in
 * reverse registration order.
 *
 * Start: start() in registration order, before the listener opens. A
 * service must not start threads or connections in start() (workers fork
 * there, and a fork must not copy another thread's locks): defer them to
 * the first tick.
 *
 * Services talk to each other only through ports: a named struct of
 * function pointers one service provides (host_port_set) and another looks
 * up (host_port_get), declared in node/svc/ports.h.
 */
#ifndef CHORUS_SVC_SERVICE_H
#define CHORUS_SVC_SERVICE_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/clock.h"
#include "proto/chorus.pb-c.h"

struct host;
struct store;
struct ids;
struct config;
struct dispatch;
struct rpc;
struct arena;
struct seal_keyring;
struct prom;
struct events;

struct service_ops {
	const char *name;
	/* 0, or -1 with a message in err (the node does not start). */
	int (*start)(void *svc, struct host *h, const struct now *now, char *err, size_t err_len);
	/* Earliest monotonic ms at which tick() has work; UINT64_MAX = none. */
	uint64_t (*next_deadline)(void *svc);
	/* fds to poll (at most max); on_poll gets them back with revents. */
	int (*poll_fds)(void *svc, struct pollfd *fds, int max);
	void (*on_poll)(void *svc, const struct pollfd *fds, int n, const struct now *now);
	/* A signal other than TERM/INT (e.g. SIGCHLD, SIGHUP). */
	void (*on_signal)(void *svc, int signo, const struct now *now);
	void (*tick)(void *svc, const struct now *now);
	/* Writes what changed into the open transaction: 0, or non-zero when
	 * a write failed (the transaction is rolled back). */
	int (*flush)(void *svc, struct store *st);
	/* After COMMIT (committed = 1) or its failure (0): wake waiters, free
	 * what is durable now. Answers queued here are sent right after. */
	void (*after_commit)(void *svc, int committed, const struct now *now);
	/* Drain: drain() once when this service's turn comes, then drained()
	 * each iteration until 1. */
	void (*drain)(void *svc, const struct now *now);
	int (*drained)(void *svc, const struct now *now);
	/* Adds this service's part of `clusterctl status` (allocations from
	 * the arena, freed after the answer). */
	void (*status)(void *svc, Chorus__StatusResp *st, struct arena *a);
	/* Adds this service's metric families to the Prometheus text being
	 * built (lib/prom.h; /metrics and `clusterctl metrics`). Loop thread. */
	void (*metrics)(void *svc, struct prom *p);
	void (*stop)(void *svc);
};

/* Registers a service (ops is static, svc the module's state). */
int host_register(struct host *h, const struct service_ops *ops, void *svc);

/* ---- what the host offers its services ---- */
const struct config *host_config(const struct host *h);
struct store *host_store(struct host *h);
/* The id high-water marks kept outside the journal (io/ids.h): reserve
 * ids there before handing them out. */
struct ids *host_ids(struct host *h);
struct dispatch *host_dispatch(struct host *h);
struct rpc *host_rpc(struct host *h);
const uint8_t *host_node_id(const struct host *h);   /* 16 bytes */
const char *host_node_id_hex(const struct host *h);
const struct seal_keyring *host_keyring(const struct host *h);
uint64_t host_started_wall_ms(const struct host *h);
/* The current iteration's time (read once per iteration). */
const struct now *host_now(const struct host *h);
/* 1 from SIGTERM on; host_closing: the last iteration (answer everything). */
int host_draining(const struct host *h);
/* A fatal error in a service: the node drains as on SIGTERM and exits 1. */
void host_request_stop(struct host *h);
int host_closing(const struct host *h);
/* Wakes the loop; callable from any thread. */
void host_wake(void *host);
/* Every service's status() into st (the status service calls it). */
void host_status_fill(struct host *h, Chorus__StatusResp *st, struct arena *a);

/* Every service's metrics() (and the host's own: journal, request table,
 * sessions, refused frames) into p, in registration order. */
void host_metrics_fill(struct host *h, struct prom *p);

/* ---- events (io/events.h): the node's recent cluster events ----
 * A service reports something an operator wants to see as it happens
 * (a member's state changed, a new leader, a task failed or was lost, a
 * pool degraded, a schedule skipped occurrences, partitions moved, refused
 * frames over a threshold). kind is a short fixed word ("member",
 * "leader", "task_failed", ...), subject what it is about (a member name,
 * a task id, a pool, a schedule), the message one line for people. Kept
 * in a bounded ring (EVENTS_RING entries); `clusterctl events` and the
 * HTTP service read it. Loop thread only. */
void host_event(struct host *h, const char *kind, const char *subject, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
struct events *host_events(struct host *h);

/* Ports: a provider sets, users get (NULL when no service provides it). */
int host_port_set(struct host *h, const char *name, void *port);
void *host_port_get(const struct host *h, const char *name);

#endif
