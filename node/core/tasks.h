/*
 * tasks.h - the task table: a pure state machine for tasks, batches and
 * pool queues on one node.
 *
 * Owns every task that is not yet final-and-persisted: queued tasks per pool
 * (FIFO), tasks dispatched to workers, tasks waiting out a retry backoff,
 * and fan-out batches with their max-concurrency and deadline.
 *
 * Pure: it reads no clock, does no I/O and draws no random numbers. The
 * caller passes the time (`const struct now *`, lib/clock.h) into every call
 * that needs it and carries out the effects that the core requests through
 * `struct tasks_effects` (hand a task to a worker, kill a running task, tell
 * waiters a task finished). Changes to persist are collected and handed out
 * by tasks_flush(), so the shell can write each changed task once per loop
 * iteration (group commit).
 *
 * Time (ARCHITECTURE.md, lib/clock.h): every timeout, retry backoff and batch
 * deadline runs on now->mono_ms, so a step of the wall clock (NTP, `date -s`)
 * fires none of them. What users see (submitted_ms, started_ms, finished_ms,
 * a batch's created_ms and deadline_ms) is wall time, because it is persisted
 * and must mean the same after a restart, when the monotonic clock starts
 * again from another origin. A recovered batch's wall deadline is turned back
 * into a monotonic one at recovery (tasks_recover_batch).
 *
 * Cost: timeouts, backoff expiries and batch deadlines sit in one timer heap
 * (lib/timerheap.h), so tasks_next_deadline is O(1) and tasks_tick is
 * O(k log n) for k due timers; tasks and batches are found through
 * lib/idmap.h; a batch keeps a list of its held tasks, so expiring or
 * cancelling it touches only them.
 *
 * Lifecycle of a task (OTP restart policies, see docs/tasks.md):
 *   queued -> running -> succeeded | failed | timed_out
 *   running -> (crash/timeout, transient, attempts left) -> queued after a
 *              backoff of backoff_ms * 2^(attempt-1), capped
 *   queued|running -> cancelled   (cancel); -> timed_out (batch deadline)
 *   running at restart of the node -> per restart policy (recovery)
 * A final task stays in the table until the caller has persisted it and
 * calls tasks_release_final(); then it is freed.
 *
 * Errors are lib/err.h codes (ERR_FULL, ERR_NOT_FOUND, ERR_NOMEM), never the
 * public CH_ERR_* codes: the shell maps them where a reply leaves the node.
 *
 * Threading and re-entry: none; one caller (the node's loop thread). The
 * effects are called from inside tasks_* calls and must not call back into
 * the core (no tasks_* function that changes the table): every such function
 * asserts on entry that no other one is running. A shell whose effect would
 * raise an event (a worker reporting `started` from inside a dispatch) queues
 * it and delivers it after the core call returned (io/workers.h,
 * workers_deliver).
 */
#ifndef CHORUS_CORE_TASKS_H
#define CHORUS_CORE_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "lib/clock.h"
#include "lib/timerheap.h"

enum task_state {
	TASK_UNKNOWN = 0,
	TASK_QUEUED = 1,
	TASK_RUNNING = 2,
	TASK_SUCCEEDED = 3,
	TASK_FAILED = 4,
	TASK_TIMED_OUT = 5,
	TASK_CANCELLED = 6,
	TASK_LOST = 7,
};
const char *task_state_name(int state);
int task_state_is_final(int state);

enum task_restart {
	TASK_RESTART_TEMPORARY = 0,
	TASK_RESTART_TRANSIENT = 1,
};

struct task_opts {
	uint32_t timeout_ms;   /* 0 = none after defaults applied */
	uint8_t restart;       /* enum task_restart */
	uint32_t max_attempts; /* >= 1 after defaults applied */
	uint32_t backoff_ms;   /* first retry delay */
};

/* One task. Strings and buffers are owned by the task (malloc'd) and freed
 * by task_free(). */
struct task {
	uint64_t id;
	uint64_t batch_id;     /* 0 = none */
	uint32_t batch_index;
	char *handler;
	uint8_t *payload;
	size_t payload_len;
	char **argv;           /* exec handler: argc strings, NULL-terminated */
	uint32_t argc;
	char **require;        /* tags a member must have to run it; NULL-terminated */
	uint32_t require_count;
	/* Placed here by a coordinator (cluster fan-out): never journaled by
	 * this node, never retried here; the coordinator owns its policy. */
	uint8_t ephemeral;
	/* Set by the dispatch effect when the task went to a local worker,
	 * which reports when it really starts (tasks_on_started): its timeout
	 * runs from then, not from the dispatch (a prefetched job may wait
	 * behind another). Left 0 for a task placed elsewhere: its timeout
	 * runs from the dispatch. */
	uint8_t timeout_at_start;
	uint8_t handed_back;   /* ephemeral, never started here: shown queued to its coordinator */
	uint16_t placements;   /* times placed on another member (in memory; part of the key) */
	uint8_t origin[16];    /* coordinator's node id */
	uint64_t origin_task;  /* coordinator's task id */
	struct task_opts opts;
	uint32_t pool;         /* index into the pools */

	int state;             /* enum task_state */
	uint32_t attempts;     /* attempts started so far */
	int32_t exit_code;
	uint8_t *output;
	size_t output_len;
	char *error;           /* NULL = none */
	char *node;            /* name of the node that ran it, NULL = none */
	uint8_t abnormal;      /* ended by a crash, timeout or lost node (not persisted) */
	uint64_t submitted_ms, started_ms, finished_ms; /* wall clock; 0 = not yet */

	/* bookkeeping of the table (not persisted: monotonic times mean
	 * nothing after a restart) */
	uint64_t not_before_mono_ms; /* backoff: do not dispatch before */
	uint64_t deadline_mono_ms;   /* running: kill at (0 = none) */
	struct timer timer;          /* armed at deadline or not_before */
	int dispatched;          /* handed to a worker, result pending */
	int kill_requested;      /* kill effect issued; waiting for the worker */
	int kill_reason;         /* enum task_state to end in once killed */
	struct task *qnext, *qprev; /* pool queue / backoff / final lists */
	struct task *bnext, *bprev; /* its batch's list of held tasks */
	struct task *dnext;         /* dirty chain (changed since last flush) */
	unsigned list;              /* which list the task is on */
	int dirty;
	int no_retry;               /* batch deadline: end, do not retry */
	/* Its row is committed (or it came from the journal): only then may
	 * it be dispatched. A task admitted in an iteration whose commit
	 * failed is withdrawn (tasks_abort_new) and leaves no trace. */
	int durable;
};
void task_free(struct task *t);
/* Deep copy (for results handed out of the table). NULL on ENOMEM. */
struct task *task_clone(const struct task *t);

/* A fan-out batch. */
struct batch {
	uint64_t id;
	uint32_t total;
	uint32_t done;            /* final tasks */
	uint32_t in_flight;       /* dispatched and not final */
	uint32_t max_concurrency; /* 0 = unlimited */
	uint64_t deadline_ms;     /* wall clock, absolute (persisted), 0 = none */
	uint64_t created_ms;      /* wall clock */
	/* Streamed (tasks_open_batch): the input is still open, so `total`
	 * is the count submitted so far and grows by tasks_batch_append; at
	 * most `window` of its tasks are unfinished at once. Not persisted: a
	 * batch recovered after a restart is closed at its journaled total
	 * (the client that streamed it lost its coordinator). */
	uint8_t input_open;
	uint32_t window;
};

/* Effects requested by the core. All are called synchronously from inside
 * tasks_* calls; the callee must not call back into the core (asserted:
 * see the header comment). */
struct tasks_effects {
	void *ctx;
	/* Hand the task to a worker of t->pool. Return 0 if taken, -1 if the
	 * pool has no free slot (the task stays queued, at the head), 1 if no
	 * worker can ever take it (the task fails with t->error if the effect
	 * set it, else "not dispatchable"). */
	int (*dispatch)(void *ctx, struct task *t);
	/* (set t->error with malloc'd text before returning 1, or leave it) */
	/* Kill the worker running t (timeout or cancel). The worker's exit is
	 * reported back through tasks_on_worker_lost(). */
	void (*kill)(void *ctx, const struct task *t);
	/* t reached a final state (it is persisted by the next tasks_flush;
	 * tell waiters only after that commit). */
	void (*final)(void *ctx, const struct task *t);
	/* A batch's done count changed. */
	void (*batch_progress)(void *ctx, const struct batch *b);
};

struct tasks_limits {
	const char *node_name;          /* t->node before dispatch (the effect may change it) */
	uint32_t pool_count;            /* >= 1 */
	uint32_t queue_tasks_max;       /* non-final tasks held; beyond: ERR_FULL */
	uint32_t default_timeout_ms;    /* applied when a task gives 0 (0 = none) */
	uint32_t default_max_attempts;  /* transient tasks giving 0 */
	uint32_t default_backoff_ms;
	uint32_t backoff_max_ms;
	uint32_t batches_max;
};

struct tasks;

/* Creates an empty table. first_task_id/first_batch_id: next ids to hand
 * out (the caller restores them from the journal). NULL on ENOMEM. */
struct tasks *tasks_create(const struct tasks_limits *lim, const struct tasks_effects *fx,
                           uint64_t first_task_id, uint64_t first_batch_id);
void tasks_destroy(struct tasks *ts);

/* Takes ownership of t (fields handler/payload/argv/opts/pool set by the
 * caller; id, state and times are set here). Applies default options,
 * assigns an id, persists (effect) and queues it. Returns 0 and the id, or
 * ERR_FULL / ERR_NOMEM (t is not taken: caller frees). */
int tasks_submit(struct tasks *ts, struct task *t, const struct now *now, uint64_t *id);

/* Creates a batch of n tasks (array of n owned tasks, all taken on success).
 * deadline_ms: relative, 0 = none; it runs on now->mono_ms and is recorded
 * as a wall-clock instant in the batch (persisted). Returns 0 and the batch
 * id, or ERR_FULL / ERR_NOMEM (nothing taken). */
int tasks_submit_batch(struct tasks *ts, struct task **tv, uint32_t n, uint32_t max_concurrency,
                       uint32_t deadline_ms, const struct now *now, uint64_t *batch_id);

/* Streamed fan-outs (docs/design.md "Streamed fan-outs"). Opens a batch
 * whose input stays open: tv[0..n) (all taken on success; n may be 0,
 * n <= window) are its first tasks, more come by tasks_batch_append, and
 * tasks_close_batch fixes the total. An open batch is never forgotten
 * (tasks_release_final, tasks_drop_batch), even with every task so far
 * final. window >= 1. Returns 0 and the batch id, or ERR_FULL / ERR_NOMEM
 * (nothing taken). */
int tasks_open_batch(struct tasks *ts, struct task **tv, uint32_t n, uint32_t max_concurrency,
                     uint32_t deadline_ms, uint32_t window, const struct now *now,
                     uint64_t *batch_id);
/* How many more tasks the open batch takes now: its window less its
 * unfinished tasks, and no more than the table's room. 0 when the batch
 * is not held or not open. */
uint32_t tasks_batch_room(const struct tasks *ts, uint64_t batch_id);
/* Appends tv[0..n) to an open batch at indexes total..total+n-1 (all taken
 * on success). ERR_NOT_FOUND (not held), ERR_CLOSED (input closed, or its
 * deadline passed), ERR_FULL (n > tasks_batch_room), ERR_NOMEM; nothing
 * taken on error. */
int tasks_batch_append(struct tasks *ts, uint64_t batch_id, struct task **tv, uint32_t n,
                       const struct now *now);
/* Closes an open batch's input: its total is final. 0 (also when already
 * closed), ERR_NOT_FOUND. */
int tasks_close_batch(struct tasks *ts, uint64_t batch_id);

/* Re-admits a task loaded from the journal at start-up (state queued or
 * running). A running one was interrupted by the crash: it is charged one
 * attempt and follows its restart policy, as if its worker had crashed (a
 * retry's backoff starts again from now: it was never persisted). Recover
 * its batch first. Returns 0 (t taken) or ERR_NOMEM (t not taken). */
int tasks_recover(struct tasks *ts, struct task *t, const struct now *now);
/* Re-creates a batch record at start-up (done counted by the caller). Its
 * wall-clock deadline becomes a monotonic one: now->mono_ms + (deadline -
 * now->wall_ms), never less than now (a deadline passed while the node was
 * down fires at the next tick) and never longer than the batch's whole
 * span deadline - created_ms (the wall clock may have stepped back). 0, or
 * ERR_NOMEM. */
int tasks_recover_batch(struct tasks *ts, const struct batch *b, const struct now *now);

/* Dispatches whatever may run now (queued, backoff over, pool has room,
 * batch under its concurrency) among durable tasks and batches: "nothing
 * starts before it is journaled". A task admitted since the last
 * tasks_flush_done() waits (a pool's queue stops at it, so the FIFO order
 * holds); the shell pumps right after each successful commit. */
void tasks_pump(struct tasks *ts, const struct now *now);

/* A worker started running t (it was queued behind another job): its
 * started_ms and its timeout start again from now. */
void tasks_on_started(struct tasks *ts, uint64_t task_id, const struct now *now);

/* A worker returned a result. ok=1: succeeded; ok=0: handler failed
 * (a failure is an answer, not a crash: never retried). Ownership of
 * output/error is NOT taken (they are copied). */
void tasks_on_result(struct tasks *ts, uint64_t task_id, int ok, const uint8_t *output,
                     size_t output_len, int32_t exit_code, const char *error,
                     const char *node, const struct now *now);

/* The worker holding task_id died (crash, or killed by us). was_running=1
 * for the job it was running (charged as a crash, timeout or cancel),
 * 0 for jobs queued behind it (put back at the head of the queue, no
 * attempt charged). */
void tasks_on_worker_lost(struct tasks *ts, uint64_t task_id, int was_running, const char *why,
                          const struct now *now);

/* The attempt running task_id ended abnormally elsewhere than in a local
 * worker: final_state TASK_LOST (its node died), TASK_TIMED_OUT or
 * TASK_FAILED (it crashed there). A transient task with attempts left is
 * retried; otherwise it ends in final_state with `why`. A kill requested
 * for cancel still ends it cancelled. */
void tasks_on_lost(struct tasks *ts, uint64_t task_id, int final_state, const char *why,
                   const struct now *now);

/* Hands every task and batch changed since the last flush (ephemeral tasks
 * are never handed out) to the callbacks
 * (in change order), e.g. inside one sqlite transaction. Returns the first
 * non-zero callback result (the rest are not called, and nothing is marked
 * clean); 0 when all were written. Call tasks_flush_done() after the
 * commit succeeded: only then are the changes clean. */
int tasks_flush(struct tasks *ts, int (*put_task)(void *arg, const struct task *t),
                int (*put_batch)(void *arg, const struct batch *b), void *arg);
/* The commit succeeded: every change is clean, and every task and batch
 * admitted since the last call is durable (may be dispatched). */
void tasks_flush_done(struct tasks *ts);
/* The commit failed: every task and batch admitted since the last
 * tasks_flush_done() is withdrawn as if never submitted (their submitters
 * were answered CH_ERR_STORAGE): `gone` (may be NULL) is called for each
 * task before it is freed, the submitted counter and any final count it
 * reached are taken back. Changes to durable tasks stay dirty and are
 * written by the next flush. Returns the number of tasks withdrawn. */
uint64_t tasks_abort_new(struct tasks *ts, void (*gone)(void *arg, const struct task *t),
                         void *arg);
/* Withdraws one task, or one batch with all its tasks, admitted since the
 * last tasks_flush_done() (the shell could not record what goes with it,
 * e.g. its idempotency key). 0, or ERR_NOT_FOUND when not held or already
 * durable. */
int tasks_withdraw(struct tasks *ts, uint64_t task_id);
int tasks_withdraw_batch(struct tasks *ts, uint64_t batch_id);
/* Tasks or batches changed since the last flush (something to write). */
int tasks_has_dirty(const struct tasks *ts);
/* The ids the next tasks_submit / tasks_submit_batch will hand out (the
 * shell reserves them in its id high-water mark first). */
void tasks_next_ids(const struct tasks *ts, uint64_t *task_id, uint64_t *batch_id);

/* Time passes: fires timeouts (kill effect), backoff expiries and batch
 * deadlines that are due at now->mono_ms, earliest first. */
void tasks_tick(struct tasks *ts, const struct now *now);
/* The earliest monotonic time (compare with now->mono_ms) at which
 * tasks_tick has something to do; UINT64_MAX = never. O(1). */
uint64_t tasks_next_deadline(const struct tasks *ts);

/* Cancels a task: queued -> cancelled now; running -> kill, cancelled when
 * the worker is gone. Returns 0, ERR_NOT_FOUND (not in the table: final
 * or unknown; the caller checks the journal). */
int tasks_cancel(struct tasks *ts, uint64_t task_id, const struct now *now);
/* Cancels every unfinished task of a batch; returns how many. Touches only
 * the batch's own tasks. */
uint32_t tasks_cancel_batch(struct tasks *ts, uint64_t batch_id, const struct now *now);

/* The outcome of an earlier attempt of task_id that was given up for lost
 * (its member was declared dead) arrived after all. If the task is not final,
 * that outcome is its result: a retry still queued is dropped, a copy
 * running is killed (kill effect) and its later outcome ignored. Returns 1
 * when taken, 0 when the task is already final or unknown. */
int tasks_on_late_result(struct tasks *ts, uint64_t task_id, int ok, const uint8_t *output,
                         size_t output_len, int32_t exit_code, const char *error, const char *node,
                         const struct now *now);

/* An ephemeral task dispatched to a local worker that never started it (the
 * node was paused: the worker handed it back). It ends here, cancelled and
 * marked handed_back, which its coordinator sees as "not started": placed
 * elsewhere without an attempt charged. Returns 1 when taken. */
int tasks_on_handed_back(struct tasks *ts, uint64_t task_id, const struct now *now);

/* Frees final tasks that have been persisted (the caller committed). */
void tasks_release_final(struct tasks *ts);

/* The unfinished ephemeral task a coordinator placed here under its own
 * task id, or NULL. Scans the table, O(held): only a coordinator's cancel
 * asks, which is rare, and a second index would cost every submit. */
const struct task *tasks_find_origin(const struct tasks *ts, const uint8_t origin[16],
                                     uint64_t origin_task);

/* Look-ups: NULL when not held. */
const struct task *tasks_get(const struct tasks *ts, uint64_t id);
const struct batch *tasks_get_batch(const struct tasks *ts, uint64_t id);
/* Forgets a batch whose tasks are all final (the caller persisted it) and
 * whose input is closed. */
void tasks_drop_batch(struct tasks *ts, uint64_t id);

struct tasks_counters {
	uint64_t queued, running, backoff;  /* current */
	uint64_t submitted, succeeded, failed, timed_out, cancelled, lost, retried;
	uint64_t held;                      /* tasks in the table */
};
void tasks_counters(const struct tasks *ts, struct tasks_counters *c);
uint32_t tasks_pool_queued(const struct tasks *ts, uint32_t pool);

/* Stops dispatching (drain on SIGTERM). Transient tasks that end abnormally
 * while draining still go back to the queue: they run after the restart. */
void tasks_set_draining(struct tasks *ts, int draining);

#endif
