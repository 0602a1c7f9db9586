/*
 * chorus.h - libchorus, the C client library for a Chorus cluster.
 *
 * The only public header of Chorus. Types are opaque; the wire format
 * (protobuf, sealed with libsodium) never shows through, so it can change
 * without breaking programs built against this header.
 *
 * Threading: a ch_client may be shared by any number of threads. Each
 * blocking call uses one of the client's request contexts; at most
 * `contexts` calls (see ch_client_options) are on the wire at once, further
 * callers wait for a free context. Async callbacks run on an nng thread:
 * keep them short and do not call blocking ch_ functions from inside them.
 *
 * Errors: every call returns 0 or a negative CH_ERR_* code; when `err` is
 * given it receives a human-readable message. ch_strerror() names each code.
 */
#ifndef CHORUS_H
#define CHORUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CH_VERSION_STRING "0.1.0"
#define CH_PROTOCOL_VERSION 1

enum ch_error {
	CH_OK = 0,
	CH_ERR_INVALID = -1,      /* bad argument or malformed request */
	CH_ERR_NOMEM = -2,
	CH_ERR_IO = -3,           /* file or socket error */
	CH_ERR_TIMEOUT = -4,      /* deadline passed */
	CH_ERR_UNREACHABLE = -5,  /* no node answers at the address */
	CH_ERR_AUTH = -6,         /* wrong cluster secret / handshake failed */
	CH_ERR_PROTOCOL = -7,     /* unexpected or undecodable frame */
	CH_ERR_NOT_FOUND = -8,    /* no such task or batch */
	CH_ERR_UNKNOWN_HANDLER = -9,
	CH_ERR_DENIED = -10,      /* exec command not allowlisted */
	CH_ERR_TOO_LARGE = -11,   /* frame or payload over the cap */
	CH_ERR_FULL = -12,        /* queue full: retry later (nothing accepted) */
	CH_ERR_SHUTTING_DOWN = -13,
	CH_ERR_STORAGE = -14,     /* the node could not journal the request */
	CH_ERR_CLOSED = -15,      /* the client, or a batch's input, is closed */
	CH_ERR_INTERNAL = -16,
	CH_ERR_NOT_LEADER = -17,  /* no leader elected (yet), or it changed: retry */
	CH_ERR_UNAVAILABLE = -18, /* too few replicas alive for the consistency asked */
	CH_ERR_MOVED = -19,       /* the key's partition moved (a stale map): retry */
	CH_ERR_TASK_FAILED = -20, /* a task the call ran did not succeed (its error in err) */
};

/* The cache (issue #12; the ch_cache_* calls below): consistency per
 * request (how many of the key's replicas must answer, as Dynamo's levels),
 * and PUT's flags (the numbers CacheReq carries on the wire, Redis's SET
 * options). */
enum ch_cache_consistency {
	CH_CACHE_DEFAULT = 0, /* the cache's own (quorum unless configured) */
	CH_CACHE_ONE = 1,     /* the primary alone */
	CH_CACHE_QUORUM = 2,  /* a majority of the partition's copies */
	CH_CACHE_ALL = 3,     /* every copy */
};
#define CH_CACHE_NX 1u      /* only if absent */
#define CH_CACHE_XX 2u      /* only if present */
#define CH_CACHE_KEEPTTL 4u /* keep the present entry's ttl (ttl_ms must be 0) */
#define CH_CACHE_GET 8u     /* answer the value it replaced: ch_cache_getset only */

/* The operations of a CronReq (clusterctl cron, libchorus's ch_cron_*). */
enum ch_cron_op {
	CH_CRON_ADD = 1,
	CH_CRON_LIST = 2,
	CH_CRON_SHOW = 3,
	CH_CRON_RM = 4,
	CH_CRON_PAUSE = 5,
	CH_CRON_RESUME = 6,
	CH_CRON_TRIGGER = 7,
	CH_CRON_BACKFILL = 8,
};

/* The operations of a VotersReq (clusterctl voters). */
enum ch_voters_op {
	CH_VOTERS_LIST = 0,
	CH_VOTERS_ADD = 1,
	CH_VOTERS_REMOVE = 2,
};

/* Names an error code ("timeout", "wrong cluster secret", ...). Never NULL. */
const char *ch_strerror(int code);

enum ch_task_state {
	CH_TASK_UNKNOWN = 0,
	CH_TASK_QUEUED = 1,
	CH_TASK_RUNNING = 2,
	CH_TASK_SUCCEEDED = 3,
	CH_TASK_FAILED = 4,
	CH_TASK_TIMED_OUT = 5,
	CH_TASK_CANCELLED = 6,
	CH_TASK_LOST = 7,
};
/* "queued", "running", ...; "unknown" for anything else. */
const char *ch_task_state_name(int state);
/* Parses a state name; returns CH_TASK_UNKNOWN when it is not one. */
int ch_task_state_parse(const char *name);
/* 1 when the state is terminal (succeeded .. lost). */
int ch_task_state_is_final(int state);

enum ch_restart {
	CH_RESTART_TEMPORARY = 0, /* never retried */
	CH_RESTART_TRANSIENT = 1, /* retried after crash or timeout */
};

struct ch_task_opts {
	uint32_t timeout_ms;      /* 0 = node default */
	int restart;              /* enum ch_restart */
	uint32_t max_attempts;    /* transient: 0 = node default */
	uint32_t backoff_ms;      /* transient: first retry delay, 0 = default */
	const char *const *argv;  /* exec handler: NULL-terminated argv */
	/* Cluster placement: run only on a member having every one of these
	 * tags (NULL-terminated; NULL or empty = anywhere; at most
	 * CH_REQUIRE_COUNT_MAX, none ""). A single submit with tags may leave
	 * the node it was sent to; a fan-out applies them to every task. When
	 * no alive member has them all, the task fails naming the tags. */
	const char *const *require;
	/* Idempotency key (Oban's unique jobs, Celery's task ids): a submit
	 * or fan-out with a key the node has seen within its result retention
	 * time is not run again; it gets the first one's id (a submit with a
	 * wait waits on that task). NULL: libchorus still makes every request
	 * its own key (this client's random id and the request's id), so a
	 * request resent after a lost session or a node restart never runs
	 * twice. 1..CH_KEY_BYTES_MAX bytes; keys of applications and of
	 * libchorus never collide. */
	const char *key;
};
#define CH_REQUIRE_COUNT_MAX 16
#define CH_KEY_BYTES_MAX 200

/* The outcome of one task. Owned by the library: free with ch_result_free. */
struct ch_result {
	uint64_t task_id;
	int state;                /* enum ch_task_state */
	uint8_t *output;
	size_t output_len;
	int exit_code;
	char *error;              /* "" when none */
	uint32_t attempts;
	char *node;
	char *handler;
	uint64_t submitted_ms, started_ms, finished_ms; /* unix ms, 0 = never */
	uint64_t batch_id;
	uint32_t batch_index;
};
void ch_result_free(struct ch_result *r);

typedef struct ch_client ch_client;

struct ch_client_options {
	uint32_t timeout_ms;      /* connect and per-call default; 0 = 5000 */
	uint32_t contexts;        /* concurrent requests; 0 = 16 */
	size_t frame_bytes_max;   /* 0 = 16 MiB */
};

/* Connects to a node at `addr` (e.g. "tcp://127.0.0.1:7400") using the
 * cluster secret in `secret_file`, and completes the handshake. On success
 * *out owns a client to release with ch_client_close. `opts` may be NULL. */
int ch_client_connect(ch_client **out, const char *addr, const char *secret_file,
                      const struct ch_client_options *opts, char *err, size_t err_len);
/* Call once no other thread is inside a blocking call on c, and never from
 * an async callback. Pending async requests are aborted: each callback runs
 * (with CH_ERR_CLOSED) before ch_client_close returns. */
void ch_client_close(ch_client *c);

/* Fire-and-forget: journals the task on the node and returns its id. */
int ch_submit(ch_client *c, const char *handler, const void *payload, size_t payload_len,
              const struct ch_task_opts *opts, uint64_t *task_id, char *err, size_t err_len);

/* Submit and wait up to wait_ms for the result. On CH_OK *result is set; it
 * may hold a non-final state if the wait ran out (the task goes on). */
int ch_submit_await(ch_client *c, const char *handler, const void *payload, size_t payload_len,
                    const struct ch_task_opts *opts, uint32_t wait_ms,
                    struct ch_result **result, char *err, size_t err_len);

/* Waits up to wait_ms for a task; *result as for ch_submit_await. */
int ch_await(ch_client *c, uint64_t task_id, uint32_t wait_ms, struct ch_result **result,
             char *err, size_t err_len);

/* Current state without waiting. */
int ch_task_status(ch_client *c, uint64_t task_id, struct ch_result **result, char *err,
                   size_t err_len);

int ch_cancel(ch_client *c, uint64_t task_id, int *state_after, char *err, size_t err_len);
/* Cancels every unfinished task of a fan-out (on its coordinator, the node
 * asked when it was submitted); *cancelled (optional) gets how many.
 * CH_ERR_NOT_FOUND: no such batch on this node. */
int ch_cancel_batch(ch_client *c, uint64_t batch_id, uint32_t *cancelled, char *err,
                    size_t err_len);

/* Fan-out (Task.async_stream / await_many): one task per payload, at most
 * max_concurrency running at once (0 = no limit), all finished or timed out
 * by deadline_ms (0 = none). results[i] belongs to payloads[i]; each failure
 * is reported in its own result. `progress`, if given, is called as results
 * arrive (done, total). Free with ch_results_free(results, n). */
struct ch_map_opts {
	uint32_t max_concurrency;
	uint32_t deadline_ms;
	void (*progress)(void *arg, uint32_t done, uint32_t total);
	void *progress_arg;
};
int ch_map(ch_client *c, const char *handler, const void *const *payloads, const size_t *lens,
           uint32_t n, const struct ch_task_opts *opts, const struct ch_map_opts *mopts,
           struct ch_result ***results, char *err, size_t err_len);
void ch_results_free(struct ch_result **results, uint32_t n);

/* Streamed fan-out (Elixir's Task.async_stream): any number of tasks, fed
 * lazily, with bounded memory on the client and on the node it is sent to
 * (the coordinator). The coordinator holds at most `window` unfinished
 * tasks of the batch (with `unordered`, results not yet taken count too);
 * payloads are sent in chunks as it has room, and results come back in
 * input order (or, unordered, as they finish). Results are journaled on
 * the coordinator, so after losing it a program can re-attach to the batch
 * by its id (ch_batch_attach). One stream is used by one thread at a time.
 *
 *   ch_map_stream_open(c, "echo", NULL, NULL, &s, err, len);
 *   while (more input) {
 *       while ((rc = ch_map_stream_push(s, p, n, err, len)) == CH_ERR_FULL)
 *           take one: ch_map_stream_next(s, 30000, &r, err, len);
 *       ...
 *   }
 *   ch_map_stream_close_input(s, err, len);
 *   while (ch_map_stream_next(s, 30000, &r, err, len) == CH_OK && r) ...
 *   ch_map_stream_free(s);
 */
typedef struct ch_map_stream ch_map_stream;

struct ch_stream_opts {
	uint32_t max_concurrency; /* tasks of the batch running at once; 0 = no limit */
	uint32_t deadline_ms;     /* every task finished or timed out by then; 0 = none */
	uint32_t window;          /* unfinished tasks the coordinator holds; 0 = its default */
	int unordered;            /* results as they finish, each with its batch_index */
	uint32_t chunk_tasks_max; /* payloads per chunk sent; 0 = 1000 */
};

/* Opens a streamed batch of `handler` tasks (opts apply to every task;
 * both opts and sopts may be NULL). On CH_OK *out owns the stream: free it
 * with ch_map_stream_free. */
int ch_map_stream_open(ch_client *c, const char *handler, const struct ch_task_opts *opts,
                       const struct ch_stream_opts *sopts, ch_map_stream **out, char *err,
                       size_t err_len);
/* The batch's id (what ch_batch_attach and `clusterctl wait --batch` take). */
uint64_t ch_map_stream_batch_id(const ch_map_stream *s);
/* Tasks the coordinator has accepted so far. */
uint32_t ch_map_stream_submitted(const ch_map_stream *s);
/* Adds one task (the payload is copied). CH_ERR_FULL: the coordinator's
 * window and this stream's chunk are full, nothing was taken: take a result
 * with ch_map_stream_next and push again. CH_ERR_TOO_LARGE: the payload
 * alone does not fit a chunk. CH_ERR_CLOSED: the batch takes no more
 * tasks (its deadline passed, or its coordinator restarted): push no more,
 * the results of what it took still come from ch_map_stream_next. Other
 * codes: the coordinator could not be reached (re-attach by id). */
int ch_map_stream_push(ch_map_stream *s, const void *payload, size_t len, char *err,
                       size_t err_len);
/* No more input: the batch's total is what was pushed. The remaining
 * payloads and the close are sent by ch_map_stream_next as room allows. */
int ch_map_stream_close_input(ch_map_stream *s, char *err, size_t err_len);
/* The next result, waiting up to wait_ms for it (sending pending payloads
 * as the window frees). CH_OK with *result set (free with ch_result_free;
 * batch_index says which input it belongs to), or CH_OK with *result NULL
 * when the stream is over (input closed and every result taken). When the
 * node closed the batch before it took every payload pushed, the end is
 * reported once as CH_ERR_CLOSED (saying how many were not taken), then as
 * CH_OK with NULL.
 * CH_ERR_TIMEOUT: none within wait_ms; call again. With CH_WAIT_FOREVER it
 * waits until a result or the end, so CH_ERR_TIMEOUT then means the
 * coordinator did not answer. */
#define CH_WAIT_FOREVER UINT32_MAX
int ch_map_stream_next(ch_map_stream *s, uint32_t wait_ms, struct ch_result **result, char *err,
                       size_t err_len);
/* Releases the stream (the batch goes on running on the node). */
void ch_map_stream_free(ch_map_stream *s);
/* Re-attaches to a batch by id, e.g. after its coordinator restarted: a
 * stream that takes no input and gives the results from from_index on, in
 * input order, until the batch's input is closed and every result given. */
int ch_batch_attach(ch_client *c, uint64_t batch_id, uint32_t from_index, ch_map_stream **out,
                    char *err, size_t err_len);

/* Lists tasks, newest first. state = CH_TASK_UNKNOWN for any. */
int ch_list(ch_client *c, int state, uint32_t limit, struct ch_result ***results, uint32_t *n,
            char *err, size_t err_len);

/* Node status as a JSON object (malloc'd, caller frees): node_id, name,
 * version, listen, started_ms, now_ms, task counters, handlers, pools, peers
 * (bad-frame counters), "tags" (this node's own tags, an array of strings),
 * "members" (the node's membership view, objects as for ch_members_json),
 * and the election as this node sees it: "raft_role" ("follower",
 * "candidate", "leader"; "" when this node is not a voter), "raft_term",
 * "raft_leader" (the leader's name, "" = none known), "raft_commit" (the
 * commit index), "raft_voters" (names, an array of strings) and
 * "schedules" (how many the cluster holds). */
int ch_status_json(ch_client *c, char **json, char *err, size_t err_len);

/* The node's metrics in the Prometheus text format (version 0.0.4), as its
 * HTTP listener serves them on /metrics (docs/metrics.md lists every
 * family). *text is malloc'd, the caller frees it. */
int ch_metrics(ch_client *c, char **text, char *err, size_t err_len);

/* The membership view of the node asked, as a JSON array (malloc'd, caller
 * frees), one object per member it knows, itself included:
 *   {"id": "<32 hex>", "name": "n1", "addr": "tcp://127.0.0.1:7601",
 *    "state": "alive"|"suspect"|"dead"|"left", "incarnation": 3,
 *    "tags": ["gpu"], "capacity": 4, "load": 0,
 *    "since_ms": <unix ms of the last state change>, "self": true|false,
 *    "protocol_version": 1}
 * A node with no peers answers a one-element array (itself). */
int ch_members_json(ch_client *c, char **json, char *err, size_t err_len);
/* The fan-outs the node coordinates, as a JSON array (malloc'd, the
 * caller frees): the running ones, then the most recently finished (the
 * node keeps 100), each newest first, at most limit (0 = 50). Each is
 * {"batch_id", "total", "done", "succeeded", "failed", "timed_out",
 * "cancelled", "lost", "running", "queued", "submitted_ms", "finished_ms"
 * (0 while running), "state" ("running", "done", "cancelled"), "handler",
 * "input_open"} (docs/http.md: GET /api/fanouts is the same). */
int ch_fanouts_json(ch_client *c, uint32_t limit, char **json, char *err, size_t err_len);

/* The node's cache overview as JSON (malloc'd, the caller frees): {"stats":
 * [per cache, as `clusterctl --json cache stats`], "partitions":
 * {"partitions", "replicas", "epoch", "primary", "owned", "moving" (this
 * node's counts), "map": [[owner member names of partition 0, primary
 * first], ...]}} (docs/http.md: GET /api/cache is the same). */
int ch_cache_overview_json(ch_client *c, char **json, char *err, size_t err_len);

/* ------------------------------------------------------------------ */
/* Events: what happened in the cluster, as the node asked saw it.
 *
 * Each node keeps its recent events in memory (a ring of the last 1024; a
 * restart empties it and seqs start again from 1) - docs/events.md. One
 * page, as a JSON object (malloc'd, caller frees):
 *   {"node": "n1", "node_id": "<32 hex>", "started_ms": <unix ms of the
 *    node's start>, "first_seq": <oldest held>, "last_seq": <newest>,
 *    "events": [{"seq": 7, "wall_ms": <unix ms>, "kind": "member",
 *                "subject": "n2", "message": "suspect (was alive)"}, ...]}
 * the events with seq > after, oldest first, at most max (0: the node's
 * page size, 256; fewer when they would not fit one frame). kind is one of
 * member, leader, task_failed, task_timed_out, task_lost, pool_degraded,
 * pool_recovered, schedule_skipped, partitions_moved, frames_refused,
 * node_started, node_draining. An `after` older than first_seq gets the
 * page from first_seq (the asker lost some events: the first seq it gets
 * is not after + 1).
 *
 * wait_ms > 0 (at most CH_EVENTS_WAIT_MAX_MS; more is cut to it) waits on
 * the node until an event after `after` exists, else answers an empty page
 * when the wait ends. An `after` beyond last_seq is answered at once: the
 * asker saw another run of the node (compare started_ms). The client's
 * timeout counts on top of wait_ms. */
#define CH_EVENTS_WAIT_MAX_MS 30000u
int ch_events_json(ch_client *c, uint64_t after, uint32_t wait_ms, uint32_t max, char **json,
                   char *err, size_t err_len);

/* ------------------------------------------------------------------ */
/* Schedules (cron) and the voters that replicate them.
 *
 * Schedules live in the cluster's replicated state (Raft among the voters):
 * any node takes these calls and forwards them to the leader. A change
 * (add, remove, pause, resume, trigger, backfill) returns once it is
 * committed. While there is no leader (an election takes about a second)
 * the node answers CH_ERR_NOT_LEADER; every ch_cron_* and ch_voters_* call
 * then retries, with a backoff of 100 ms doubling to 1 s, until the
 * client's timeout (ch_client_options.timeout_ms) has passed since the call
 * began, and returns CH_ERR_NOT_LEADER only if no leader answered by then.
 * Other errors are not retried (CH_ERR_TIMEOUT: the change may or may not
 * have committed; ch_cron_show tells). */

/* What to do when an occurrence comes while a run of the schedule is not
 * done (Temporal's overlap policies). */
enum ch_overlap {
	CH_OVERLAP_SKIP = 0,         /* skip it (recorded in the history); the default */
	CH_OVERLAP_BUFFER_ONE = 1,   /* at most one waits for the running one */
	CH_OVERLAP_BUFFER_ALL = 2,   /* all wait, in order */
	CH_OVERLAP_CANCEL_OTHER = 3, /* the running one is cancelled */
	CH_OVERLAP_ALLOW_ALL = 4,    /* runs side by side */
};
/* "skip", "buffer_one", "buffer_all", "cancel_other", "allow_all";
 * "unknown" for anything else. */
const char *ch_overlap_name(int overlap);
/* Parses a policy name (a '-' for a '_' is fine); -1 when it is not one. */
int ch_overlap_parse(const char *name);

#define CH_CRON_NAME_BYTES_MAX 64     /* letters, digits, '-', '_' and '.' */
#define CH_CRON_NOTE_BYTES_MAX 256
#define CH_CRON_HISTORY_DEFAULT 20    /* ch_cron_show's limit 0 */

/* A schedule to add: the task template and when to run it. Pointers are
 * read during the call only. Zero fields mean the node's defaults. */
struct ch_cron_spec {
	const char *name;         /* required: 1..CH_CRON_NAME_BYTES_MAX of [A-Za-z0-9._-] */
	/* required: 5 or 6 cron fields, a macro (@daily), or "@every 90s"
	 * (see `clusterctl help cron`) */
	const char *expr;
	const char *tz;           /* IANA zone the fields are read in; NULL or "" = UTC */
	const char *handler;      /* required */
	const void *payload;
	size_t payload_len;
	/* each run's task options (timeout, restart, argv, require, ...);
	 * key must be NULL: every occurrence is keyed by the cluster itself,
	 * so it runs once however often its dispatch is retried */
	struct ch_task_opts task;
	int overlap;              /* enum ch_overlap */
	/* occurrences missed by more than this (no leader, no majority) are
	 * skipped as one recorded range; 0 = the node's default (1 min);
	 * otherwise 1 s to 7 days */
	uint64_t catchup_ms;
	int64_t start_s, end_s;   /* unix seconds: no run before / after; 0 = none */
	uint32_t max_runs;        /* then the schedule ends; 0 = no limit */
	uint64_t jitter_ms;       /* each run later by a fixed [0, jitter) per occurrence; <= 1 h */
	int pause_on_failure;     /* a run that does not succeed pauses the schedule */
	const char *on;           /* NULL or "" = placement, "tag:NAME" = a member with the tag,
	                           * "all" = every member alive (one task each) */
};

/* One occurrence in a schedule's history. */
struct ch_cron_run {
	int64_t scheduled_s;      /* the occurrence (unix s) */
	uint64_t fired_ms;        /* when the leader fired it (unix ms); 0 = not fired (skipped) */
	char *node;               /* the member whose journal holds its task; "" = none */
	uint64_t task_id;         /* 0 until dispatched */
	/* "fired", "dispatched", "buffered", "skipped", or the task's final
	 * state ("succeeded", "failed", ...) */
	char *outcome;
	char *why;                /* "" or why (a skip's reason, a failure's error) */
};

/* A schedule as the cluster holds it. Owned by the library: free with
 * ch_cron_info_free (one) or ch_cron_infos_free (an array). Strings are
 * never NULL ("" when unset). */
struct ch_cron_info {
	char *name, *expr, *tz, *handler, *on;
	uint8_t *payload;         /* NUL-terminated for convenience; payload_len is exact */
	size_t payload_len;
	uint32_t timeout_ms;      /* the task options of each run */
	int restart;              /* enum ch_restart */
	uint32_t max_attempts, backoff_ms;
	char **argv;              /* argv_count entries */
	uint32_t argv_count;
	char **require;           /* require_count tags */
	uint32_t require_count;
	int overlap;              /* enum ch_overlap */
	uint64_t catchup_ms;
	int64_t start_s, end_s;
	uint32_t max_runs;
	uint64_t jitter_ms;
	int pause_on_failure;
	int paused;
	/* the pause's note; for a schedule the node cannot evaluate (a zone
	 * it lacks) the reason */
	char *note;
	uint32_t runs;            /* occurrences fired so far */
	int64_t next_s;           /* next occurrence (unix s), 0 = none (ended) */
	int64_t last_s;           /* the latest occurrence decided, 0 = none */
	struct ch_cron_run *history; /* newest first; history_count entries */
	uint32_t history_count;
};
void ch_cron_info_free(struct ch_cron_info *info);
void ch_cron_infos_free(struct ch_cron_info **infos, uint32_t n);

/* The change calls below take an optional `info`: when not NULL, on CH_OK
 * *info receives the schedule as committed (free with ch_cron_info_free). */

/* Adds a schedule. CH_ERR_INVALID (with the node's reason in err) for a bad
 * spec or a name already taken, CH_ERR_FULL at the cluster's limit. */
int ch_cron_add(ch_client *c, const struct ch_cron_spec *spec, struct ch_cron_info **info,
                char *err, size_t err_len);
/* Removes a schedule (runs under way go on). CH_ERR_NOT_FOUND: no such name. */
int ch_cron_remove(ch_client *c, const char *name, char *err, size_t err_len);
/* Pauses a schedule: occurrences that come while paused are skipped
 * (recorded). note (NULL = none, at most CH_CRON_NOTE_BYTES_MAX) says why. */
int ch_cron_pause(ch_client *c, const char *name, const char *note, struct ch_cron_info **info,
                  char *err, size_t err_len);
int ch_cron_resume(ch_client *c, const char *name, struct ch_cron_info **info, char *err,
                   size_t err_len);
/* Fires one extra run now. *info's history[0] is that run. A trigger whose
 * answer was lost (CH_ERR_TIMEOUT, or CH_ERR_NOT_LEADER when the leader
 * failed after proposing it) may still have fired: check ch_cron_show
 * before triggering again. */
int ch_cron_trigger(ch_client *c, const char *name, struct ch_cron_info **info, char *err,
                    size_t err_len);
/* Fires the occurrences of [from_s, to_s] (unix s, to_s not in the future;
 * at most 1000 of them) with their own overlap policy (enum ch_overlap). */
int ch_cron_backfill(ch_client *c, const char *name, int64_t from_s, int64_t to_s, int overlap,
                     struct ch_cron_info **info, char *err, size_t err_len);
/* Every schedule, in name order, without history. *infos (n entries) is
 * the caller's: free with ch_cron_infos_free(*infos, *n). */
int ch_cron_list(ch_client *c, struct ch_cron_info ***infos, uint32_t *n, char *err,
                 size_t err_len);
/* One schedule with at most `limit` (0 = CH_CRON_HISTORY_DEFAULT) of its
 * newest history entries. CH_ERR_NOT_FOUND: no such name. */
int ch_cron_show(ch_client *c, const char *name, uint32_t limit, struct ch_cron_info **info,
                 char *err, size_t err_len);

/* The voters: the members that hold the Raft log. Owned by the library:
 * free with ch_voters_free. */
struct ch_voter {
	char *id;                 /* 32 hex */
	char *name;               /* "?" when the asked node does not know the member */
	char *addr;
	int alive;                /* as the asked node's membership sees it */
	int leader;
};
struct ch_voters {
	struct ch_voter *voters;
	uint32_t count;
	uint64_t term;            /* the asked node's current term */
	uint64_t commit_index;
};
void ch_voters_free(struct ch_voters *v);
/* The voters as the asked node knows them (not forwarded to the leader). */
int ch_voters_list(ch_client *c, struct ch_voters **out, char *err, size_t err_len);
/* Makes a member (by name, or a hex id prefix of at least 8 digits) a
 * voter, or no longer one; returns once the change is committed. One change
 * at a time (CH_ERR_FULL: another is not committed yet). Removing is refused
 * (CH_ERR_INVALID) when it would leave no alive majority; a voter gone
 * from the membership is removed by its full 32-digit id. `out` may be
 * NULL; otherwise it receives the voters after the change (a second call,
 * to the node asked). */
int ch_voters_add(ch_client *c, const char *member, struct ch_voters **out, char *err,
                  size_t err_len);
int ch_voters_remove(ch_client *c, const char *member, struct ch_voters **out, char *err,
                     size_t err_len);

/* ------------------------------------------------------------------ */
/* The cache: named caches partitioned over the members and replicated
 * (issue #12, node/svc/cache_svc.c). Any node takes these calls and routes
 * each key to its partition's primary, which answers once the consistency
 * asked is met. Every call may fail with CH_ERR_NOT_FOUND when the nodes
 * have no cache of the name asked (their config's [cache NAME] sections).
 *
 * Keys and values are bytes (any content). A key has 1 byte or more
 * (CH_ERR_INVALID for an empty one, checked before anything is sent); the
 * most a key or a value may have is the node's setting (key_bytes_max,
 * value_bytes_max: CH_ERR_TOO_LARGE beyond it), and a request never exceeds
 * the client's frame_bytes_max (CH_ERR_TOO_LARGE before it is sent).
 *
 * Routing and failures. The node asked forwards a request to the key's
 * primary under its own partition map; a primary that no longer leads the
 * partition (the members changed and the maps differ for a moment) answers
 * CH_ERR_MOVED and applies nothing. Every ch_cache_* call retries that, at
 * most CH_CACHE_MOVED_TRIES times in all, 25 ms apart and doubling, within
 * the client's timeout (ch_client_options.timeout_ms) since the call began;
 * then it returns CH_ERR_MOVED. CH_ERR_UNAVAILABLE (too few replicas alive
 * for the consistency asked) and CH_ERR_TIMEOUT (the replicas did not
 * answer in time) are returned as they are, never retried: a write that
 * fails with them may have been applied at the primary and some replicas
 * (as in Dynamo; the replicas converge to the newest version); ch_cache_get
 * tells. CH_ERR_FULL: the cache is at its memory or entry limit with
 * nothing to evict, or the node has too many requests waiting for peers.
 *
 * Threading and memory: as for every call of this header (any thread; a
 * buffer handed out is the caller's). Values handed out are malloc'd and
 * NUL-terminated for convenience (the length is exact): free them with
 * free(). Calls that take several keys (ch_cache_mget, ch_cache_mset) are
 * loops of single calls: not atomic, each key answered by its own primary. */

/* The names of the consistency levels (enum ch_cache_consistency, at the
 * top): "default", "one", "quorum", "all"; "unknown" for anything else. */
const char *ch_cache_consistency_name(int consistency);
/* Parses a level's name (any case); -1 when it is not one. */
int ch_cache_consistency_parse(const char *name);

/* Which cache, and how many replicas. A NULL opts means all defaults. */
struct ch_cache_opts {
	const char *cache;        /* NULL or "" = "default"; at most CH_CACHE_NAME_BYTES_MAX */
	int consistency;          /* enum ch_cache_consistency */
};
#define CH_CACHE_NAME_BYTES_MAX 48  /* a name is [a-z0-9_.-], as the node's config */
/* ch_cache_get_or_compute: the longest a key's primary waits for a compute
 * (its task is then cancelled), and the least time it allows a task to
 * wait for a worker on top of its time limits (it allows as long as the
 * task may run, when that is longer). */
#define CH_CACHE_COMPUTE_WAIT_MS_MAX 600000u
#define CH_CACHE_COMPUTE_QUEUE_MS 30000u
#define CH_CACHE_MOVED_TRIES 6
#define CH_CACHE_MULTI_KEYS_MAX 65536 /* keys of one ch_cache_mget / ch_cache_mset */

/* A value's version: the hybrid logical clock of its write and the writer's
 * node id (last writer wins). hlc 0 = none. */
struct ch_cache_version {
	uint64_t hlc;
	uint8_t node[16];
};

/* A byte string handed out by the library (data malloc'd and NUL-terminated,
 * len exact; data NULL for "none", e.g. a miss of ch_cache_mget). */
struct ch_bytes {
	void *data;
	size_t len;
};
/* Frees an array of n of them and their data. NULL is a no-op. */
void ch_bytes_free(struct ch_bytes *v, size_t n);

/* Reads a key. CH_OK: *value (malloc'd, free() it) and *value_len; when
 * given, *version and *ttl_ms (milliseconds left, -1 = no expiry).
 * CH_ERR_NOT_FOUND on a miss (absent or expired): *value NULL. */
int ch_cache_get(ch_client *c, const struct ch_cache_opts *opts, const void *key, size_t key_len,
                 void **value, size_t *value_len, struct ch_cache_version *version,
                 int64_t *ttl_ms, char *err, size_t err_len);

/* Writes a key. ttl_ms > 0: it expires after that long; 0: the cache's
 * default time to live (with CH_CACHE_KEEPTTL, the key's own). flags:
 * CH_CACHE_NX or CH_CACHE_XX (not both), CH_CACHE_KEEPTTL; CH_CACHE_GET is
 * refused here (see ch_cache_getset). if_version (NULL = none) makes it a
 * compare-and-set: written only if the key's version is that one. A
 * condition that does not hold is no error: CH_OK with *applied 0 (applied
 * may be NULL); otherwise *applied is 1. */
int ch_cache_put(ch_client *c, const struct ch_cache_opts *opts, const void *key, size_t key_len,
                 const void *value, size_t value_len, int64_t ttl_ms, uint32_t flags,
                 const struct ch_cache_version *if_version, int *applied, char *err,
                 size_t err_len);

/* ch_cache_put that also hands back the value it replaced (Redis's SET ...
 * GET): *old (malloc'd, free() it) is NULL when the key was absent. */
int ch_cache_getset(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                    size_t key_len, const void *value, size_t value_len, int64_t ttl_ms,
                    uint32_t flags, void **old, size_t *old_len, int *applied, char *err,
                    size_t err_len);

/* Deletes a key (a tombstone, so an older write replicated late cannot
 * bring it back); *existed (may be NULL) is 1 when it was there. */
int ch_cache_del(ch_client *c, const struct ch_cache_opts *opts, const void *key, size_t key_len,
                 int *existed, char *err, size_t err_len);

/* *exists is 1 when the key is present (not expired). */
int ch_cache_exists(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                    size_t key_len, int *exists, char *err, size_t err_len);

/* Sets a key's time to live (ttl_ms > 0). *applied (may be NULL) is 0 when
 * the key is absent (nothing done). */
int ch_cache_expire(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                    size_t key_len, int64_t ttl_ms, int *applied, char *err, size_t err_len);

/* Removes a key's time to live. *applied (may be NULL) is 1 when there was
 * one to remove. */
int ch_cache_persist(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                     size_t key_len, int *applied, char *err, size_t err_len);

/* The time left to a key: *ttl_ms >= 0 milliseconds, -1 when it does not
 * expire, -2 when it is absent (CH_OK either way, as Redis's PTTL). */
int ch_cache_ttl(ch_client *c, const struct ch_cache_opts *opts, const void *key, size_t key_len,
                 int64_t *ttl_ms, char *err, size_t err_len);

/* Adds delta (negative: subtracts) to the integer a key holds as decimal
 * text, atomically at its primary; an absent key counts as 0. *result
 * (may be NULL) is the new value. CH_ERR_INVALID (the node's reason in err)
 * when the value is not a 64-bit integer or the sum overflows. */
int ch_cache_incr(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                  size_t key_len, int64_t delta, int64_t *result, char *err, size_t err_len);

/* Reads and deletes a key in one step; as ch_cache_get (CH_ERR_NOT_FOUND
 * on a miss). */
int ch_cache_getdel(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                    size_t key_len, void **value, size_t *value_len, char *err, size_t err_len);

/* An isolated update (ConCache's `isolated`, an Agent per key): the key's
 * primary holds a lock for it, so updates of one key through this call run
 * one after another, cluster-wide. fn sees the value held (found 0: none;
 * value valid during the call only) and answers what to do:
 *   CH_CACHE_UPDATE_SET     store *new_value (malloc'd; freed by the
 *                           library) of *new_len bytes, with *ttl_ms (0:
 *                           the cache's default; preset to 0),
 *   CH_CACHE_UPDATE_DELETE  delete the key,
 *   CH_CACHE_UPDATE_KEEP    change nothing (the lock is let go),
 *   or a negative CH_ERR_*: change nothing, and the call returns it.
 * lease_ms (0: 5,000) bounds how long the lock is held if this process
 * dies between the read and the write; at most 60,000. A plain write
 * (put, del, incr) does not wait for the lock; an update it raced with is
 * refused rather than applied over it, and the call begins again (fn runs
 * again), as it does when the lease ran out or the primary changed: no
 * update is lost. Waiting for the lock, or beginning again, goes on within
 * the client's timeout (CH_ERR_FULL after it, or after
 * CH_CACHE_UPDATE_TRIES refusals). *outcome (may be NULL) gets the
 * action applied. */
enum ch_cache_update_action {
	CH_CACHE_UPDATE_KEEP = 0,
	CH_CACHE_UPDATE_SET = 1,
	CH_CACHE_UPDATE_DELETE = 2,
};
#define CH_CACHE_UPDATE_TRIES 16
#define CH_CACHE_UPDATE_LEASE_MS_MAX 60000u
typedef int (*ch_cache_update_fn)(void *ud, const void *value, size_t value_len, int found,
                                  void **new_value, size_t *new_len, int64_t *ttl_ms);
int ch_cache_update(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                    size_t key_len, uint32_t lease_ms, ch_cache_update_fn fn, void *ud,
                    int *outcome, char *err, size_t err_len);

/* Reads n keys (at most CH_CACHE_MULTI_KEYS_MAX), one ch_cache_get each.
 * On CH_OK *values is an array of n (free with ch_bytes_free(*values, n)):
 * values[i] belongs to keys[i], data NULL for a miss. Any other error
 * fails the call and hands nothing out. */
int ch_cache_mget(ch_client *c, const struct ch_cache_opts *opts, const void *const *keys,
                  const size_t *key_lens, size_t n, struct ch_bytes **values, char *err,
                  size_t err_len);

/* Writes n keys (at most CH_CACHE_MULTI_KEYS_MAX) with one ttl_ms (as for
 * ch_cache_put), one ch_cache_put each, in order. It stops at the first
 * error: *written (may be NULL) says how many were written before it. */
int ch_cache_mset(ch_client *c, const struct ch_cache_opts *opts, const void *const *keys,
                  const size_t *key_lens, const void *const *values, const size_t *value_lens,
                  size_t n, int64_t ttl_ms, size_t *written, char *err, size_t err_len);

/* Get-or-compute (ConCache's get_or_store, cluster-wide): the key's value,
 * or, when it holds none, the output of one `handler` task (payload and
 * task_opts as for ch_submit; NULL task_opts = the node's defaults) that
 * the key's primary runs for it, stored with ttl_ms (as ch_cache_put's:
 * 0 = the cache's default) and handed to every caller of that key that
 * came while it ran: the task runs once however many callers, on whichever
 * nodes. On CH_OK: *value (malloc'd, free() it), *value_len, *computed
 * (may be NULL) 1 when the value is a compute's output, 0 when the key held
 * it already (or a write made while the task ran, which is kept: the value
 * is stored only if the key is still absent), and *version when given
 * (hlc 0 when the primary could not tell).
 *
 * A task that fails, crashes, is cancelled or lost: CH_ERR_TASK_FAILED for
 * every waiting caller, with the task's error in err; one that times out
 * (or outlasts the primary's wait, when it is cancelled): CH_ERR_TIMEOUT.
 * Nothing is stored then, and the next call runs a new task. Other errors:
 * CH_ERR_INVALID (no handler, a negative ttl_ms, task_opts->key set: the
 * primary names each compute's task itself), CH_ERR_UNKNOWN_HANDLER and
 * CH_ERR_DENIED as for ch_submit, CH_ERR_TOO_LARGE (a payload over the
 * nodes' value_bytes_max, or an output over it: then not stored),
 * CH_ERR_FULL (the primary runs [cache] compute_max computes, or
 * compute_waiters_max callers wait on this key already, or the node the
 * call went to has 32 get-or-compute requests in flight to the key's
 * primary: callers of one request through one node share one), and those of
 * ch_cache_put for the write of the value (CH_ERR_UNAVAILABLE,
 * CH_ERR_TIMEOUT: the value may be stored at the primary then).
 *
 * Time: the call waits for the compute: with task_opts->timeout_ms set and
 * no retries, at most twice that (at least that plus
 * CH_CACHE_COMPUTE_QUEUE_MS, for the wait for a worker) plus twice the
 * client's timeout; otherwise up to CH_CACHE_COMPUTE_WAIT_MS_MAX (the
 * primary gives a compute up by then, cancelling its task) plus twice the
 * client's timeout. CH_ERR_MOVED is retried within that time. A failed
 * journal commit on the primary (a full disk) is CH_ERR_STORAGE at once. */
int ch_cache_get_or_compute(ch_client *c, const struct ch_cache_opts *opts, const void *key,
                            size_t key_len, const char *handler, const void *payload,
                            size_t payload_len, const struct ch_task_opts *task_opts,
                            int64_t ttl_ms, void **value, size_t *value_len, int *computed,
                            struct ch_cache_version *version, char *err, size_t err_len);

/* One step of a scan over the cache's keys, cluster-wide (Redis's SCAN):
 * start with cursor 0, go on with *next until it is 0. The scan walks the
 * members one after the other, each giving the keys of the partitions it
 * leads: while the members do not change, a key present the whole time is
 * returned at least once (more often, or not at all, if they do); pattern (NULL or "" = every key) is a Redis glob (*, ?, [a-z], [^a],
 * backslash escapes); count (0 = the node's default, 10) is a hint of how
 * many keys to look at, so a step may return none and still not be the
 * last. On CH_OK *keys is an array of *n (free with ch_bytes_free(*keys,
 * *n)). A cursor the cluster never handed out is CH_ERR_INVALID. */
int ch_cache_scan(ch_client *c, const struct ch_cache_opts *opts, uint64_t cursor,
                  const char *pattern, uint32_t count, uint64_t *next, struct ch_bytes **keys,
                  size_t *n, char *err, size_t err_len);

/* One cache on one node, as that node counts it. */
struct ch_cache_stats {
	char *cache;
	char *node;                /* the member's name */
	uint64_t entries;
	uint64_t memory_bytes;
	uint64_t hits, misses;
	uint64_t evictions;        /* under the cache's memory or entry limit (LRU) */
	uint64_t expirations;
	uint64_t hints_pending;    /* writes held for a replica that is down */
	uint64_t tombstones;       /* deletes not yet collected */
	uint32_t partitions_primary, partitions_replica, partitions_moving;
};
/* Frees an array of n of them. NULL is a no-op. */
void ch_cache_stats_free(struct ch_cache_stats *v, size_t n);
/* The counters of the node asked (not forwarded): of every cache (cache
 * NULL or "") or of one. On CH_OK *out is an array of *n (free with
 * ch_cache_stats_free). CH_ERR_NOT_FOUND: no cache of that name. */
int ch_cache_stats(ch_client *c, const char *cache, struct ch_cache_stats **out, size_t *n,
                   char *err, size_t err_len);

/* Removes every entry of the cache, on every member. When a member does
 * not answer, the call fails with its error (CH_ERR_TIMEOUT, ...); the
 * members that did answer are flushed all the same. */
int ch_cache_flush(ch_client *c, const struct ch_cache_opts *opts, char *err, size_t err_len);

/* The cache's entries, cluster-wide: every member counts those of the
 * partitions it leads, so each entry counts once. */
int ch_cache_dbsize(ch_client *c, const struct ch_cache_opts *opts, uint64_t *entries, char *err,
                    size_t err_len);

/* Async: the callback gets the error code and the result (owned by the
 * callback, free with ch_result_free; NULL on error). Returns 0 when the
 * request was sent; the callback then runs exactly once. */
typedef void (*ch_result_cb)(void *arg, int code, struct ch_result *result, const char *err);
int ch_submit_async(ch_client *c, const char *handler, const void *payload, size_t payload_len,
                    const struct ch_task_opts *opts, uint32_t wait_ms, ch_result_cb cb, void *arg);

/* Writes a new random cluster secret to `path` with mode 0600. Fails if the
 * file exists. */
int ch_keygen(const char *path, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
