/*
 * handlers.h - the handler registry and the worker process main loop.
 *
 * Owns the table of handlers a worker can run: the built-ins (echo, sleep,
 * sha256, fail, crash, exec) and those registered by plugins. The table is
 * filled in the node before workers fork, so every worker inherits it.
 *
 * Built-ins:
 *   echo    output = payload
 *   sleep   payload = milliseconds as decimal text; sleeps, outputs nothing
 *   sha256  output = lowercase hex SHA-256 of the payload (libsodium)
 *   fail    fails with error = payload (or "failed on purpose")
 *   crash   abort()s the worker process
 *   exec    runs argv (argv[0] must be allowlisted, checked by the node at
 *           submit and again in the worker); payload on stdin; stdout is the
 *           output (capped at output_max, then the child is killed and the
 *           task fails); exit code kept; a non-zero exit fails the task.
 *           The child dies with its worker (PR_SET_PDEATHSIG).
 */
#ifndef CHORUS_WORKER_HANDLERS_H
#define CHORUS_WORKER_HANDLERS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "chorus_plugin.h"

#define HANDLERS_MAX 256
#define HANDLER_NAME_MAX 63

/* Largest WorkerJob frame a worker accepts (payload + argv + framing). */
#define HANDLERS_JOB_FRAME_BYTES_MAX (64u * 1024u * 1024u)

/* Exit statuses of a worker process (handlers_worker_main). */
#define HANDLERS_EXIT_EOF 0       /* the node closed the socket */
#define HANDLERS_EXIT_BAD_FRAME 3 /* oversized, truncated or undecodable job */
#define HANDLERS_EXIT_WRITE 4     /* could not write a result back */
#define HANDLERS_EXIT_NOMEM 5

struct handler_entry {
	char name[HANDLER_NAME_MAX + 1];
	chorus_handler_fn fn;     /* NULL for exec (special-cased) */
	int builtin;
};

struct handler_registry {
	struct handler_entry entries[HANDLERS_MAX];
	uint32_t count;
	char **exec_allow;        /* NULL-terminated absolute paths; owned */
	uint32_t exec_allow_count;
	void *plugin_handles[32];
	uint32_t plugin_count;
};

/* Fills reg with the built-ins. exec_allow: NULL-terminated list (copied). */
int handlers_init(struct handler_registry *reg, const char *const *exec_allow);
void handlers_free(struct handler_registry *reg);
/* Loads a plugin and runs its init. 0, or -1 with a message in err. */
int handlers_load_plugin(struct handler_registry *reg, const char *path, char *err, size_t err_len);
/* NULL when unknown. */
const struct handler_entry *handlers_find(const struct handler_registry *reg, const char *name);
/* 1 when path is allowlisted for exec. */
int handlers_exec_allowed(const struct handler_registry *reg, const char *path);

/* Runs one job in the current (worker) process. Output is appended to a
 * malloc'd buffer capped at output_max bytes. ok=1 on success. The caller
 * frees *output and *error.
 * Failures set error: "unknown handler NAME", "output exceeds N bytes" (the
 * bytes that fit are kept), the handler's own message, and for exec also
 * "exec: PATH is not in the exec allowlist", "timed out after N ms"
 * (timeout_ms 0 = none), "exit status N: <first 4 KiB of stderr>" and
 * "killed by signal N". exit_code: the child's exit status, or 128 + signal
 * when it was killed. A plugin handler that overruns output_max fails too.
 * timeout_ms is enforced here for exec only; any other handler that runs
 * too long is stopped by the node killing its worker. */
struct handler_run_result {
	int ok;
	uint8_t *output;
	size_t output_len;
	int32_t exit_code;
	char *error;              /* NULL when none */
};
void handlers_run(const struct handler_registry *reg, const char *handler, const uint8_t *payload,
                  size_t payload_len, const char *const *argv, uint32_t timeout_ms,
                  size_t output_max, struct handler_run_result *res);

/* A page the node shares with its workers (mmap'd MAP_SHARED before they
 * fork): the loop's heartbeat and its pause epoch. A worker starts a job
 * only while the heartbeat is fresh (a stopped or stalled node hands out
 * nothing new: its coordinator may be re-placing that work), and hands a
 * job back, unstarted, when the epoch moved on since the job was given. */
struct handlers_beat {
	_Atomic uint64_t alive_ms; /* CLOCK_MONOTONIC of the loop's last iteration, 0 = none yet */
	_Atomic uint64_t epoch;    /* bumped when the loop finds it was held up */
	_Atomic uint64_t stale_ms; /* a heartbeat older than this is stale (0 = 1000) */
};

/* The worker process main: reads length-prefixed WorkerJob messages from fd,
 * runs each in order, writes a length-prefixed WorkerResult back for each,
 * until EOF. Never returns (calls _exit). beat may be NULL (no pause
 * detection).
 *
 * Batching: a read takes whatever the socket holds (many job frames); a
 * result may wait in the worker to go out with later ones in one write,
 * but only while the next job is already here and its handler is known to
 * be short (its last HANDLERS_SHORT_SAMPLES_MIN+ runs average under
 * HANDLERS_SHORT_EWMA_US and the last one took under
 * HANDLERS_SHORT_LAST_US), up to HANDLERS_RESULTS_BATCH_MAX results or
 * HANDLERS_RESULTS_BATCH_BYTES. Everything waiting goes out before any
 * other job starts and before the worker waits for more jobs.
 *
 * progress (may be NULL): counters in memory shared with the node (see
 * struct handlers_progress). */
struct handlers_progress {
	/* jobs this worker has reached (run or handed back), set before each
	 * one runs: if the worker dies, the node tells from it which of its
	 * jobs ran (their results may have died with it) and which never
	 * started */
	_Atomic uint64_t begun;
	/* microseconds spent running jobs, added after each: the node's
	 * measure of how short a pool's jobs are, free of its own latency */
	_Atomic uint64_t run_us;
};
#define HANDLERS_READ_CHUNK_BYTES (64u * 1024u)
#define HANDLERS_RESULTS_BATCH_MAX 64u
#define HANDLERS_RESULTS_BATCH_BYTES (256u * 1024u)
#define HANDLERS_SHORT_EWMA_US 200u
#define HANDLERS_SHORT_LAST_US 1000u
#define HANDLERS_SHORT_SAMPLES_MIN 2u
void handlers_worker_main(const struct handler_registry *reg, int fd,
                          const struct handlers_beat *beat) __attribute__((noreturn));
void handlers_worker_run(const struct handler_registry *reg, int fd,
                         const struct handlers_beat *beat, struct handlers_progress *progress)
	__attribute__((noreturn));

#endif
