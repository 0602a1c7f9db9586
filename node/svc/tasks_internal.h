/*
 * tasks_internal.h - what the files of the tasks service share (not for
 * other modules): its state, its bounds, and the functions one file calls
 * in the other. tasks_svc.c holds the service (requests, waiters, effects,
 * the loop's calls); tasks_stream.c the streamed fan-outs (open batches
 * that grow by chunks, unordered results).
 */
#ifndef CHORUS_SVC_TASKS_INTERNAL_H
#define CHORUS_SVC_TASKS_INTERNAL_H

#include <assert.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chorus.h"
#include "codec/codec.h"
#include "config.h"
#include "core/tasks.h"
#include "io/dispatch.h"
#include "io/ids.h"
#include "io/log.h"
#include "io/rpc.h"
#include "io/store.h"
#include "io/workers.h"
#include "lib/arena.h"
#include "lib/err.h"
#include "lib/idmap.h"
#include "lib/prom.h"
#include "lib/timerheap.h"
#include "proto/seal.h"
#include "svc/ports.h"
#include "svc/service.h"
#include "worker/handlers.h"

#define BATCH_RESULTS_DEFAULT 1000
#define BATCH_RESULTS_MAX 10000
#define LIST_LIMIT_MAX 10000
#define PURGE_INTERVAL_MS 1000
#define PURGE_ROWS_MAX 2000
#define WAIT_MS_MAX (24u * 3600u * 1000u)
#define REQUIRE_TAGS_MAX 16
#define REQUIRE_TAG_BYTES_MAX 31
#define MAX_ATTEMPTS_MAX 1000
#define RUNNING_JOURNAL_MS 2
/* Attempts coordinators placed here, remembered so that the same attempt
 * sent again (after a re-handshake, from another session) never runs twice:
 * bounded in count, in the bytes of outcomes kept, and in time. */
#define PLACED_RECS_MAX 65536
#define PLACED_RECS_BYTES_MAX (64u << 20)
#define PLACED_REC_TTL_MS (10u * 60u * 1000u)
/* a worker job must fit its frame cap (HANDLERS_JOB_FRAME_BYTES_MAX) */
#define PAYLOAD_BYTES_MAX (HANDLERS_JOB_FRAME_BYTES_MAX - 1024u * 1024u)
/* Streamed fan-outs: the window (unfinished tasks, plus results not yet
 * acknowledged when unordered) a batch gets when the client asks for none,
 * and the most it may ask for; the tasks one MapAppendReq may carry. */
#define STREAM_WINDOW_DEFAULT 4096u
#define STREAM_WINDOW_MAX 65536u
#define STREAM_CHUNK_TASKS_MAX 65536u
#define STREAM_CHUNK_SLACK_BYTES 1024u

/* BatchAwaitReq modes (answer_batch) */
#define AWAIT_UNORDERED 1u

enum waiter_kind { WAIT_TASK, WAIT_BATCH };

/* Fan-out listing (tasks_fanouts.c): finished batches kept for it. */
#define FANOUTS_FINISHED_KEPT 100u
#define FANOUT_HANDLER_BYTES 64u

struct tasks_svc;

/* One fan-out this node coordinates, for its listing. */
struct fanout_rec {
	uint64_t id;
	uint32_t total; /* last seen from the core */
	uint32_t succeeded, failed, timed_out, cancelled, lost;
	uint64_t submitted_ms, finished_ms; /* wall; finished 0 = running */
	int cancel_asked;
	char handler[FANOUT_HANDLER_BYTES];
	struct fanout_rec *newer, *older;
};

struct waiter {
	struct tasks_svc *svc;
	int kind;
	struct rpc_call *call;
	uint64_t id;              /* task or batch */
	uint32_t from_index, max_results;
	int is_submit;            /* answer as SubmitResp */
	unsigned await_how;       /* batch: AWAIT_* */
	uint32_t room_wanted;     /* batch: answer when the window has this much room */
	struct timer deadline;    /* monotonic */
	struct waiter *next, *prev;   /* all waiters */
	struct waiter *id_next;       /* waiters on the same id */
	/* A watch of the task_submit port instead of a parked call (call
	 * NULL): cb runs with the task's result (ports.h). `dropped`:
	 * unwatched while a watch's cb ran, freed when next looked at. */
	void (*watch)(void *arg, int code, const Chorus__TaskResult *r);
	void *watch_arg;
	int dropped;
};

/* One attempt a coordinator placed here: (origin, origin_task, attempt). */
struct placed_rec {
	uint64_t key;
	uint8_t origin[16];
	uint64_t origin_task;
	uint32_t origin_attempt;
	uint64_t task_id;         /* the ephemeral task running it */
	struct task *final;       /* a copy of its outcome once final, else NULL */
	size_t final_bytes;
	uint64_t created_ms;      /* monotonic */
	int owed;                 /* a PlaceResp said "pending": its outcome is owed
	                             to the coordinator (kept past the caps) */
	struct placed_rec *next, *prev; /* oldest first */
};

/* Batched placement (PlaceReq, tasks_svc.c "attempts placed in batches"):
 * one parked PlaceReq and its items. An item ends when its task does (a
 * watch), at once (refused, or answered from a remembered outcome), or when
 * the request's wait runs out. The request is answered after the commit of
 * an iteration in which at least one item ended: the rest go back
 * "pending", and the coordinator asks for them again. */
#define PLACE_ITEMS_MAX 4096u
struct place_wait;
struct place_item {
	uint64_t origin_task;
	uint32_t origin_attempt;
	uint64_t task_id;          /* the task it waits on (0: none) */
	struct place_wait *pw;
	int done;
	int code;                  /* done: 0, or the CH_ERR_* it was refused with */
	char *error;               /* done, code != 0 (malloc'd) */
	Chorus__TaskResult *result;/* done, code 0: an owned copy (result_dup) */
	int watched;               /* a watch waits on task_id */
};
struct place_wait {
	struct tasks_svc *svc;
	struct rpc_call *call;
	uint8_t origin[16];
	uint32_t n, done;
	int ready;                 /* on the ready list */
	struct timer deadline;     /* in place_timers: the request's wait ran out */
	struct place_wait *next, *prev;   /* every parked PlaceReq */
	struct place_wait *ready_next;
	struct place_item items[];
};

/* A finished task of an unordered stream, not yet acknowledged. */
struct stream_fin {
	uint32_t index;
	uint64_t task_id;
};

/* A streamed batch whose input is open (or, unordered, whose results are
 * not all acknowledged): what appended tasks are made of, and the ring of
 * finished-unacknowledged results (at most the window: the window counts
 * them, so the ring never overflows). In memory only: after a restart the
 * batch is closed and its results are read back in order. */
struct stream {
	uint64_t batch_id;
	struct task *tmpl;        /* handler, options, pool; payload empty */
	int unordered;
	struct stream_fin *fin;   /* ring of `window` entries (unordered only) */
	uint32_t fin_cap, fin_head, fin_count;
};

/* A growable list of ids (tasks that ended, batches that progressed). */
struct idvec {
	uint64_t *v;
	uint32_t n, cap;
};

/* Per-handler metrics of the tasks this node owns (tasks_svc.c, the end
 * of the file): a bounded label set, handlers past the cap count as
 * "other" (the last slot). */
#define TASKS_METRIC_HANDLERS_MAX 64
struct task_handler_metrics {
	char name[HANDLER_NAME_MAX + 1];
	uint64_t finished[TASK_LOST + 1]; /* by final state */
	struct prom_hist wait, run;       /* submit -> start, start -> end (seconds) */
};
struct tasks_metrics {
	struct task_handler_metrics h[TASKS_METRIC_HANDLERS_MAX + 1];
	uint32_t n; /* named slots in use; h[TASKS_METRIC_HANDLERS_MAX] is "other" */
};

struct tasks_svc {
	struct host *host;
	const struct config *cfg;
	struct store *store;
	struct tasks *tasks;
	struct workers *workers;
	struct handler_registry reg;
	int reg_ready;
	uint32_t pool_count;
	char pool_names[WORKERS_POOLS_MAX][WORKERS_POOL_NAME_MAX + 1];
	uint8_t pool_degraded[WORKERS_POOLS_MAX]; /* as last reported as an event */

	struct waiter *waiters;
	struct idmap task_waiters, batch_waiters;
	struct timerheap deadlines;
	struct idvec ended, progressed, closed;
	struct idvec withdrawn;    /* watched tasks a failed commit withdrew */
	struct idmap streams;      /* batch id -> struct stream */
	struct idmap fanouts;      /* batch id -> struct fanout_rec (tasks_fanouts.c) */
	struct fanout_rec *fan_newest, *fan_oldest;
	uint32_t fan_finished;
	struct batch stored_batch; /* the last batch read from the journal (id 0: none) */
	int nomem_logged;

	uint64_t next_purge_ms;    /* monotonic */
	struct idmap placed_by_key, placed_by_task;
	struct placed_rec *placed_head, *placed_tail;
	size_t placed_bytes;
	uint64_t drain_deadline_ms;
	struct placement_port *placement;
	struct place_wait *place_waits, *place_ready;
	struct timerheap place_timers;
	struct task_sink_port sink;
	struct task_submit_port submit_port;
	int commit_failed;        /* the last commit failed */
	int journaled_submit;     /* a client's task was admitted in this iteration */
	int crash_after_commit;   /* CHORUS_TEST_CRASH_AFTER_COMMIT (tests only) */
	int crash_after_dispatch; /* CHORUS_TEST_CRASH_AFTER_DISPATCH (tests only) */
	uint32_t temporary_dispatches; /* own temporary tasks dispatched by the last pump */
	uint32_t watch_depth;     /* > 0 while a watch's cb runs (unwatch then only marks) */
	struct tasks_metrics metrics;
};

struct batch_collect {
	struct task **tasks;
	uint32_t n, cap, expect;
	size_t bytes, bytes_max;   /* a page shrinks to fit the frame cap */
	int gap;
};

/* ---- tasks_svc.c, used by tasks_stream.c ---- */
void idvec_push(struct tasks_svc *s, struct idvec *iv, uint64_t id);
uint32_t handler_pool(const struct tasks_svc *s, const char *handler);
int spec_check(struct tasks_svc *s, const char *handler, const Chorus__TaskOptions *o,
               size_t payload_len, char *msg, size_t len);
size_t result_bytes(const struct task *t);
int key_find(struct tasks_svc *s, struct rpc_call *c, const ProtobufCBinaryData *key, int kind,
             uint64_t *id);
int key_record(struct tasks_svc *s, struct rpc_call *c, const ProtobufCBinaryData *key, int kind,
               uint64_t id);
int ids_lease(struct tasks_svc *s, struct rpc_call *c, uint32_t tasks, uint32_t batches);
uint32_t batch_total(struct tasks_svc *s, uint64_t batch_id);

void tasks_metrics_final(struct tasks_svc *s, const struct task *t);
/* service_ops.metrics (tasks_metrics.c) */
struct prom;
void tasks_svc_metrics(void *svc, struct prom *p);

/* ---- tasks_svc.c, used by tasks_place.c ---- */
/* The task with this id: *t (the core's, or *owned loaded from the journal
 * and to be freed by the caller); 0, or -1 when unknown. */
int task_lookup(struct tasks_svc *s, uint64_t id, const struct task **t, struct task **owned);
struct placed_rec *placed_find(struct tasks_svc *s, const uint8_t origin[16], uint64_t task,
                               uint32_t attempt);
void placed_add(struct tasks_svc *s, const uint8_t origin[16], uint64_t task, uint32_t attempt,
                uint64_t task_id);

/* ---- tasks_place.c (batched placement, the member side), used by
 * tasks_svc.c ---- */
void handle_place(void *svc, struct rpc_call *c, const Chorus__Envelope *env);
/* Answers the PlaceReqs whose items ended this iteration (after commit). */
void place_serve(struct tasks_svc *s);
void place_wait_free(struct tasks_svc *s, struct place_wait *pw);
/* A waiter of kind on id (wait_ms, deadline: armed in the timer heap);
 * NULL when out of memory. */
struct waiter *waiter_new(struct tasks_svc *s, int kind, uint64_t id, uint32_t wait_ms,
                          int deadline);
void waiter_free(struct tasks_svc *s, struct waiter *w);

/* ---- tasks_stream.c, used by tasks_svc.c ---- */
void fanout_begin(struct tasks_svc *s, uint64_t batch_id, const char *handler);
void fanout_on_final(struct tasks_svc *s, const struct task *t);
void fanout_on_progress(struct tasks_svc *s, uint64_t batch_id);
void fanout_cancelled(struct tasks_svc *s, uint64_t batch_id);
/* Running fan-outs then finished ones, each newest first, at most limit:
 * *out (calloc'd, caller frees; strings point into the records, valid
 * until the loop's next call into the service). 0, or -1 out of memory. */
int fanouts_list(struct tasks_svc *s, uint32_t limit, Chorus__BatchInfo **out, size_t *n);
void fanouts_free(struct tasks_svc *s);
struct stream *stream_find(const struct tasks_svc *s, uint64_t batch_id);
void stream_free(struct tasks_svc *s, struct stream *st);
uint32_t stream_room(const struct tasks_svc *s, uint64_t batch_id);
void stream_maybe_free(struct tasks_svc *s, struct stream *st);
void stream_ack(struct stream *st, uint32_t index);
void stream_on_final(struct tasks_svc *s, const struct task *t);
void stream_collect(struct tasks_svc *s, const struct stream *st, struct batch_collect *bc);
size_t biggest_payload(const ProtobufCBinaryData *p, size_t n);
void handle_map_stream(struct tasks_svc *s, struct rpc_call *c, const Chorus__MapReq *m);
void handle_map_append(void *svc, struct rpc_call *c, const Chorus__Envelope *env);

#endif
