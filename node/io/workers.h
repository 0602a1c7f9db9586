/*
 * workers.h - the supervisor: pools of long-lived worker processes.
 *
 * Owns the worker processes (fork()ed from chorusd, each running
 * handlers_worker_run on one end of a socketpair). Each pool has a fixed
 * number of workers; a worker takes job after job. Up to `prefetch` jobs may
 * be queued at one worker, or `prefetch_short` while the pool's jobs are
 * short (WORKERS_SHORT_EWMA_US); it runs them in order, so the head of its
 * list is the running job, and the supervisor reports a job as started when
 * the one before it finishes.
 *
 * Batching: jobs dispatched to a worker in one pass of the loop go out in
 * one send() (at the next delivering call, below); a worker reads as many
 * as it was sent in one read() and may write many results in one write()
 * (node/worker/handlers.h). A worker that dies is read from its shared
 * progress slot: its jobs it had reached are reported lost as running
 * (was_running=1, their results died with it), the others as not started.
 *
 * Supervision (OTP one_for_one): a worker that exits (crash, or SIGKILL from
 * workers_kill_task) is restarted. More than `intensity` restarts within
 * `period_ms` in a pool marks the pool degraded: further restarts wait
 * `degraded_backoff_ms` each, and status reports it, until a period passes
 * without crashes.
 *
 * Frames on the socketpair: u32 little-endian length, then a protobuf
 * WorkerJob (node -> worker) or WorkerResult (worker -> node). A frame
 * longer than output_max + 64 KiB from a worker is a protocol error: the
 * worker is killed.
 *
 * Threading: the node's loop thread only. The loop polls the fds from
 * workers_pollfds() and calls workers_on_readable(); it calls
 * workers_reap() when SIGCHLD arrives (signalfd) and workers_tick()
 * regularly, and workers_deliver() after each core call that may have
 * dispatched (tasks_pump), outside any core call.
 */
#ifndef CHORUS_IO_WORKERS_H
#define CHORUS_IO_WORKERS_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

struct handler_registry;

#define WORKERS_POOLS_MAX 16
#define WORKERS_PER_POOL_MAX 256
#define WORKERS_POOL_NAME_MAX 31

struct workers_pool_config {
	char name[WORKERS_POOL_NAME_MAX + 1];
	uint32_t worker_count;
};

struct workers_config {
	uint32_t pool_count;
	struct workers_pool_config pools[WORKERS_POOLS_MAX];
	uint32_t prefetch;            /* jobs queued per worker, >= 1 */
	/* jobs queued per worker while the pool's recent jobs are short (run
	 * time EWMA < WORKERS_SHORT_EWMA_US); 0 or <= prefetch: always
	 * `prefetch` */
	uint32_t prefetch_short;
	/* what counts as short and as long (0 = WORKERS_SHORT_EWMA_US and
	 * WORKERS_HEAD_LONG_US; tests under valgrind set wider bounds) */
	uint32_t short_ewma_us;
	uint32_t head_long_us;
	uint32_t intensity;           /* restarts allowed ... */
	uint32_t period_ms;           /* ... within this window */
	uint32_t degraded_backoff_ms; /* delay between restarts when degraded */
	size_t output_max;            /* bytes of output kept per task */
};

#define WORKERS_PREFETCH_SHORT_DEFAULT 64
#define WORKERS_SHORT_EWMA_US 1000u
/* a worker whose head job has run this long (as far as the node knows)
 * gets no more than `prefetch` jobs, whatever the pool's average */
#define WORKERS_HEAD_LONG_US 2000u

struct workers_job {
	uint64_t task_id;
	const char *handler;
	const uint8_t *payload;
	size_t payload_len;
	const char *const *argv;      /* NULL or NULL-terminated */
	uint32_t timeout_ms;
	/* held until workers_release_held: the job is not written to its
	 * worker before the caller has journaled that the task started (a
	 * temporary task must never start twice, even across a crash) */
	int hold;
};

/* Callbacks into the node. They are called only from workers_deliver,
 * workers_on_readable, workers_reap, workers_tick and workers_stop (during
 * its grace period), never from inside workers_dispatch or
 * workers_kill_task: those run inside the task core's effects, and the core
 * must not be re-entered (node/core/tasks.h). Per task, `started` comes
 * before its `result` or `lost`. Callbacks may call workers_dispatch and
 * workers_kill_task. */
struct workers_events {
	void *ctx;
	void (*started)(void *ctx, uint64_t task_id, uint64_t now_ms);
	/* Ownership of output/error stays with the supervisor; both are valid
	 * only during the call. output may be NULL when output_len is 0. */
	void (*result)(void *ctx, uint64_t task_id, int ok, const uint8_t *output, size_t output_len,
	               int32_t exit_code, const char *error, uint64_t now_ms);
	/* The worker died with these tasks (head first: the running one). */
	void (*lost)(void *ctx, uint64_t task_id, int was_running, const char *why, uint64_t now_ms);
	/* Optional: the worker handed the job back unstarted (the node was held
	 * up since it gave it: workers_beat). NULL: reported as lost, not
	 * running. */
	void (*withdrawn)(void *ctx, uint64_t task_id, uint64_t now_ms);
};

struct workers;

/* Forks all workers. reg must outlive the supervisor. now_ms: a monotonic
 * clock reading (the supervisor is told the time, it never reads it except
 * through the events' now_ms, which it gets from workers_now_ms()). */
int workers_start(struct workers **out, const struct workers_config *cfg,
                  const struct handler_registry *reg, const struct workers_events *ev,
                  char *err, size_t err_len);
/* Monotonic milliseconds (CLOCK_MONOTONIC). */
uint64_t workers_now_ms(void);

/* Queues a job at the least-loaded live worker of the pool. 0, or -1 when
 * every worker is at its limit (`prefetch`, or `prefetch_short` while the
 * pool's jobs are short) or none is alive (or the supervisor is stopping),
 * or WORKERS_ERR_JOB_TOO_BIG when the encoded job would exceed
 * HANDLERS_JOB_FRAME_BYTES_MAX (the node should cap payloads well below).
 * The job's bytes are sent by the next delivering call (workers_deliver /
 * workers_on_readable / workers_reap / workers_tick / workers_release_held),
 * all of one worker's in one send(). A job that lands on an idle worker is
 * running from then: its `started` is queued (with the time of this call)
 * and delivered by that same call. */
#define WORKERS_ERR_JOB_TOO_BIG (-2)
int workers_dispatch(struct workers *w, uint32_t pool, const struct workers_job *job);
/* Sends the jobs dispatched with `hold` (and what was queued behind them
 * on the same worker). Call it once what they need is durable. */
void workers_release_held(struct workers *w);
/* 1 while some dispatched job is held. */
int workers_any_held(const struct workers *w);
/* Sends the jobs dispatched since the last call and delivers the events
 * queued by workers_dispatch (`started`). Call it outside any task core
 * call, right after tasks_pump. */
void workers_deliver(struct workers *w);
/* Free job slots in a pool right now (at the current limit). */
uint32_t workers_free_slots(const struct workers *w, uint32_t pool);

/* SIGKILLs the worker holding task_id (running or queued there). Every task
 * at that worker is reported through `lost` once the worker is reaped.
 * Returns 0, or -1 if no worker holds it. */
int workers_kill_task(struct workers *w, uint64_t task_id);

/* Fills up to max pollfds (POLLIN on each live worker's fd); returns count. */
int workers_pollfds(const struct workers *w, struct pollfd *fds, int max);
/* Reads and handles whatever is ready on fd. */
void workers_on_readable(struct workers *w, int fd);
/* Reaps exited children (waitpid(-1, WNOHANG): the node must have no
 * other children it wants to wait for) and reports their jobs lost, then
 * restarts the dead workers it may restart now. */
void workers_reap(struct workers *w);
/* Restarts dead workers when allowed. */
void workers_tick(struct workers *w, uint64_t now_ms);

/* The loop's heartbeat, once per iteration (monotonic ms). Workers start
 * jobs only while it is fresh. When the loop was held up for more than
 * pause_ms since the last beat (SIGSTOP, a stall), the jobs handed out
 * before are handed back unstarted (events.withdrawn) instead of run late:
 * their coordinators may have placed them elsewhere meanwhile. Returns the
 * gap in ms when it was such a pause, else 0. */
uint64_t workers_beat(struct workers *w, uint64_t now_ms, uint64_t pause_ms);
/* Starts a new epoch now: every job handed out and not started yet is
 * handed back (events.withdrawn) when its worker reaches it. */
void workers_new_epoch(struct workers *w);
/* 1 when task_id was handed to a worker that has not reached it yet
 * (prefetched behind another job). */
int workers_job_waiting(const struct workers *w, uint64_t task_id);

/* 1 when the worker holding task_id has reached it (it is running, or ran
 * and its result is on the way); 0 when it has not or no worker holds it. */
int workers_job_begun(const struct workers *w, uint64_t task_id);

struct workers_pool_status {
	const char *name;
	uint32_t workers, alive, busy, restarts;
	int degraded;
	uint32_t queued;  /* jobs waiting at workers behind the running ones */
};
void workers_pool_status(const struct workers *w, uint32_t pool, struct workers_pool_status *st);
/* Jobs currently held by workers (all pools). */
uint32_t workers_jobs_held(const struct workers *w);

/* Closes the job sockets for writing (workers finish the jobs they already
 * hold, then exit on EOF), waits up to grace_ms for them while still
 * delivering `result`s, then SIGKILLs the rest and reports their jobs
 * through `lost`. No restarts or dispatches once it starts. Frees w. */
void workers_stop(struct workers *w, uint32_t grace_ms);

#endif
