/*
 * sched.h - the cluster's schedules as a replicated state machine: cron and
 * interval schedules, the occurrences the leader decided (fired or
 * skipped), the tasks they became, and their history.
 *
 * Pure. Every node applies the same commands in Raft log order
 * (sched_apply) and so holds the same schedules. Only the leader plans
 * (sched_plan): it turns due occurrences into FIRE and SKIP commands that it
 * proposes; nothing is dispatched before its FIRE is committed and applied,
 * so an occurrence is decided once, by a quorum, and a leader that cannot
 * reach a majority decides nothing (issue #11, "exactly once").
 *
 * Planning is idempotent across leaders: what is decided is in the applied
 * state (`last_s`, the latest occurrence decided, and the occurrences
 * fired and not done); what a leader proposed but is not applied yet is
 * volatile (`planned_s`) and forgotten when leadership changes
 * (sched_leader_reset), so a new leader re-plans from the applied state,
 * never repeating an applied occurrence and never dropping one inside the
 * catch-up window.
 *
 * Policies (Temporal's names):
 *   overlap    when an occurrence comes while a run of the schedule is not
 *              done: skip (default; recorded as skipped), buffer_one (keep
 *              at most one waiting), buffer_all (keep them all, up to
 *              SCHED_BUFFER_MAX), cancel_other (fire, and the running one
 *              is cancelled), allow_all (fire; at most SCHED_ACTIVE_MAX
 *              side by side, then skipped);
 *   catch-up   occurrences missed by more than catchup_ms (leader down, a
 *              partition without majority) are skipped in one recorded
 *              range; newer ones fire in order, at most SCHED_PLAN_MAX per
 *              call;
 *   on         "" (placement: the task goes to the leader's journal),
 *              "tag:NAME" (likewise, the task needing the tag) or "all":
 *              one FIRE decides the occurrence for every member alive at
 *              that moment, one run (active slot, history line, task) per
 *              member; overlap counts any member's run; an occurrence
 *              whose runs do not fit in SCHED_ACTIVE_MAX beside the runs
 *              not done is skipped, recorded; runs and max_runs count
 *              occurrences, not members;
 *   start/end, max_runs, jitter (a fixed offset per occurrence in
 *   [0, jitter_ms), from a hash of name and time: every leader agrees),
 *   pause (with a note) and resume (what came while paused is skipped and
 *   recorded), pause_on_failure, trigger (an extra occurrence now) and
 *   backfill (the occurrences of a past range, with their own overlap).
 *
 * Time: wall clock, unix seconds for occurrences and ms for decisions, as
 * the leader's command carries it (apply never reads a clock).
 *
 * Threading: none.
 */
#ifndef CHORUS_CORE_SCHED_H
#define CHORUS_CORE_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "core/cron.h"
#include "core/tz.h"

#define SCHED_ID_BYTES 16
#define SCHED_NAME_BYTES_MAX 64
#define SCHED_EXPR_BYTES_MAX 256
#define SCHED_TZ_BYTES_MAX 64
#define SCHED_NOTE_BYTES_MAX 256
#define SCHED_ON_BYTES_MAX 72
#define SCHED_TASK_BYTES_MAX (64u * 1024u) /* the task template (handler, payload, options) */
#define SCHED_COUNT_MAX 100000
/* the templates of all schedules together: with full histories (2.8 KiB a
 * schedule) a snapshot stays under RAFT_SNAPSHOT_BYTES_MAX */
#define SCHED_TASK_BYTES_TOTAL_MAX (128u * 1024u * 1024u)
#define SCHED_HISTORY_MAX 64          /* per schedule, newest kept */
#define SCHED_ACTIVE_MAX 64           /* fired, not done, per schedule */
#define SCHED_BUFFER_MAX 64           /* buffer_all's waiting occurrences */
#define SCHED_PLAN_MAX 256            /* commands one sched_plan call returns at most */
#define SCHED_CATCHUP_DEFAULT_MS 60000u
#define SCHED_CATCHUP_MAX_MS (7ull * 24 * 3600 * 1000)
#define SCHED_JITTER_MAX_MS (3600ull * 1000)
#define SCHED_BACKFILL_MAX 1000       /* occurrences one backfill may fire */

enum sched_overlap {
	SCHED_OVERLAP_SKIP = 0,
	SCHED_OVERLAP_BUFFER_ONE = 1,
	SCHED_OVERLAP_BUFFER_ALL = 2,
	SCHED_OVERLAP_CANCEL_OTHER = 3,
	SCHED_OVERLAP_ALLOW_ALL = 4,
};
const char *sched_overlap_name(int overlap);
/* -1 when unknown */
int sched_overlap_parse(const char *name);

enum sched_op {
	SCHED_OP_ADD = 1,
	SCHED_OP_RM = 2,
	SCHED_OP_PAUSE = 3,
	SCHED_OP_RESUME = 4,
	SCHED_OP_FIRE = 5,       /* an occurrence becomes a task on `target` */
	SCHED_OP_SKIP = 6,       /* occurrences [from_s, to_s] (count of them) are skipped, why */
	SCHED_OP_BUFFER = 7,     /* the occurrence waits for the running one */
	SCHED_OP_DISPATCHED = 8, /* its task exists: task_id on target */
	SCHED_OP_DONE = 9,       /* its task ended: outcome */
	SCHED_OP_BACKFILL = 10,  /* fire the occurrences of [from_s, to_s] */
};

enum sched_fire_kind {
	SCHED_FIRE_SCHEDULED = 0,
	SCHED_FIRE_TRIGGER = 1,  /* clusterctl cron trigger: an extra run now */
	SCHED_FIRE_BACKFILL = 2,
	SCHED_FIRE_BUFFERED = 3, /* a buffered occurrence, its turn come */
};

struct sched_spec {
	char name[SCHED_NAME_BYTES_MAX + 1];
	char expr[SCHED_EXPR_BYTES_MAX + 1];
	char tz[SCHED_TZ_BYTES_MAX + 1];      /* "" = UTC */
	char on[SCHED_ON_BYTES_MAX + 1];      /* "" = placement */
	uint8_t overlap;
	uint8_t pause_on_failure;
	uint64_t catchup_ms;                  /* 0 = SCHED_CATCHUP_DEFAULT_MS */
	int64_t start_s, end_s;               /* 0 = none */
	uint32_t max_runs;                    /* 0 = no limit */
	uint64_t jitter_ms;
	uint8_t *task;                        /* the task template, opaque here (a packed TaskSpec) */
	uint32_t task_len;
};

/* One replicated command. Strings are copied by sched_apply. */
struct sched_cmd {
	uint8_t op;
	uint8_t kind;                         /* FIRE: enum sched_fire_kind; BACKFILL: its overlap */
	struct sched_spec *spec;              /* ADD: not owned */
	char name[SCHED_NAME_BYTES_MAX + 1];
	char note[SCHED_NOTE_BYTES_MAX + 1];  /* PAUSE: the note; SKIP/DONE: why */
	int64_t scheduled_s;                  /* FIRE, BUFFER, DISPATCHED, DONE */
	int64_t from_s, to_s;                 /* SKIP, BACKFILL */
	uint32_t count;                       /* SKIP: occurrences in the range */
	uint64_t wall_ms;                     /* when the leader decided it */
	/* FIRE: the node that journals the task (n_targets == 0), or the
	 * leader that decided it. DISPATCHED, DONE: the run's node; all zero
	 * (entries of older versions) matches the occurrence's first run. */
	uint8_t target[SCHED_ID_BYTES];
	/* FIRE of an `all` schedule: one run per target (no duplicates, at
	 * most SCHED_ACTIVE_MAX); borrowed, not owned. 0: `target` alone. */
	const uint8_t (*targets)[SCHED_ID_BYTES];
	uint32_t n_targets;
	uint64_t task_id;                     /* DISPATCHED, DONE */
	int outcome;                          /* DONE: a TASK_* final state */
};

/* An occurrence fired and not done, or one of the history. */
struct sched_occ {
	int64_t scheduled_s;
	uint64_t fired_ms;                    /* 0: never fired (skipped) */
	uint8_t target[SCHED_ID_BYTES];
	uint64_t task_id;                     /* 0 until dispatched */
	uint8_t kind;                         /* enum sched_fire_kind */
	uint8_t dispatched, done;
	int outcome;                          /* TASK_* when done; -1 skipped; -2 buffered */
	uint32_t count;                       /* skipped: occurrences in the range */
	int64_t to_s;                         /* skipped: the range's end */
	char why[96];
};

struct sched_entry;

struct sched_view {
	const struct sched_spec *spec;
	int paused;
	const char *note;
	int broken;                           /* expression or zone unusable here */
	const char *broken_why;
	uint32_t runs;
	int64_t last_s;                       /* latest occurrence decided */
	int64_t next_s;                       /* next occurrence, 0 = none */
	uint32_t n_active, n_buffer;
};

/* Resolves a zone name for apply (the shell reads tzdata once per zone).
 * 0 and *zone (kept for the process's life), or an ERR_* with err. */
typedef int (*sched_tz_fn)(void *ctx, const char *name, const struct tz **zone, char *err,
                           size_t err_len);

struct sched;

struct sched *sched_create(sched_tz_fn resolve_tz, void *tz_ctx);
void sched_destroy(struct sched *s);

/* Checks a spec as the leader does before proposing ADD: name, expression
 * (cron_parse's message), zone, ranges. 0 or ERR_INVALID with err;
 * ERR_FULL at SCHED_COUNT_MAX; ERR_INVALID "exists" for a taken name. */
int sched_check_add(const struct sched *s, const struct sched_spec *spec, char *err,
                    size_t err_len);

/* Applies one committed command (every node, log order). Deterministic:
 * a command that does not apply (unknown schedule, a duplicate name) is
 * ignored and says why in err (returns ERR_NOT_FOUND / ERR_INVALID). */
int sched_apply(struct sched *s, const struct sched_cmd *c, char *err, size_t err_len);

/* Leader: the commands to propose at now_wall_ms (at most max, <=
 * SCHED_PLAN_MAX), self = the leader's id (FIRE's target), members = the
 * members it knows alive (self among them or not; duplicates ignored; the
 * first SCHED_ACTIVE_MAX - 1 others kept), the targets of an `all`
 * schedule's FIREs: self first, then the others in the given order. Those
 * FIREs' `targets` point into s, valid until the next sched_plan or
 * sched_destroy: propose (encode) them before planning again. Returns how
 * many. A planned occurrence is not planned again until applied or until
 * sched_leader_reset. */
uint32_t sched_plan(struct sched *s, uint64_t now_wall_ms, const uint8_t self[SCHED_ID_BYTES],
                    const uint8_t (*members)[SCHED_ID_BYTES], uint32_t n_members,
                    struct sched_cmd *out, uint32_t max);
/* Leadership changed (won or lost): forget what was planned, not applied. */
void sched_leader_reset(struct sched *s);
/* Wall ms of the next planning work (UINT64_MAX: none), for the loop. */
uint64_t sched_next_plan_ms(const struct sched *s);

/* The occurrences fired and not done, across schedules: *cursor = 0 first;
 * NULL at the end. The leader dispatches those not dispatched and watches
 * the others. */
const struct sched_occ *sched_next_active(const struct sched *s, uint64_t *cursor,
                                          const char **name, const struct sched_spec **spec);

/* Lookups for the shell and clusterctl. */
int sched_view(const struct sched *s, const char *name, struct sched_view *v);
uint32_t sched_count(const struct sched *s);
/* Schedules in name order: *cursor = 0 first; NULL name at the end. */
const char *sched_next_name(const struct sched *s, uint32_t *cursor);
/* History, newest first: i = 0 .. count-1; NULL past the end. */
const struct sched_occ *sched_history(const struct sched *s, const char *name, uint32_t i);

/* ---- export and import, for snapshots (node/codec/sched_codec.c) ----
 *
 * One schedule's applied state: everything sched_apply built, nothing of
 * the leader's volatile plan and nothing a node derives by itself (the
 * parsed expression, the zone, `broken`: import resolves them as ADD's
 * apply does). Pointers are borrowed: from the table after sched_export
 * (valid until the next sched_apply or sched_destroy); from the caller for
 * sched_import (copied).
 *
 * The history is in order, oldest first, in two spans (the table keeps a
 * ring): hist[0][0 .. n_hist[0]), then hist[1][0 .. n_hist[1]). Import
 * takes any split of it. */
struct sched_state {
	const struct sched_spec *spec;        /* name, expr, tz, on NUL-terminated in their arrays */
	int paused;
	const char *note;                     /* NUL-terminated, <= SCHED_NOTE_BYTES_MAX */
	uint32_t runs;
	int64_t last_s;                       /* the watermark */
	int64_t resume_s;
	const struct sched_occ *active;       /* n_active <= SCHED_ACTIVE_MAX, oldest first */
	uint32_t n_active;
	const int64_t *buffer;                /* n_buffer <= SCHED_BUFFER_MAX, in order */
	uint32_t n_buffer;
	const struct sched_occ *hist[2];      /* n_hist[0] + n_hist[1] <= SCHED_HISTORY_MAX */
	uint32_t n_hist[2];
	int64_t bf_from_s, bf_next_s, bf_to_s; /* a backfill in progress (bf_to_s 0: none) */
	uint8_t bf_overlap;
	uint32_t bf_fired;
};

/* The i-th schedule in name order (0 .. sched_count - 1). 0, or
 * ERR_NOT_FOUND past the end. */
int sched_export(const struct sched *s, uint32_t i, struct sched_state *out);

/* Adds a schedule with state st, as if the commands that built it had been
 * applied here: the expression and zone are resolved as ADD's apply does
 * (one that does not resolve here is kept and marked broken), the leader's
 * plan starts as sched_leader_reset leaves it, and the schedule is due for
 * planning at once. Every field is checked first: a string not terminated
 * within its bound, a count over its limit or a NULL array with a count,
 * a template over SCHED_TASK_BYTES_MAX: ERR_INVALID; a taken name:
 * ERR_INVALID "exists"; SCHED_COUNT_MAX schedules: ERR_FULL; ERR_NOMEM.
 * On error, with err, the table is unchanged. */
int sched_import(struct sched *s, const struct sched_state *st, char *err, size_t err_len);

/* The idempotency key of an occurrence's task: "cron:NAME:SCHEDULED_S"
 * (the same for each member's run of an `all` schedule: a key is unique
 * within one journal, and each run goes to its member's own). */
void sched_occurrence_key(const char *name, int64_t scheduled_s, uint8_t kind, char *buf,
                          size_t len);

void sched_spec_free(struct sched_spec *spec); /* task only: the struct is the caller's */

#endif
