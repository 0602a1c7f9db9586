/*
 * sched.c - the schedules' state machine (sched.h has the contract). The
 * subtle parts:
 *   - `last_s` is a watermark: every scheduled occurrence at or before it
 *     is decided (fired, buffered or skipped). Apply moves it forward only;
 *     triggers and backfills never move it;
 *   - the leader's plan runs from max(last_s, planned_s): planned_s and the
 *     planned_* counters are what it proposed and is not applied yet,
 *     volatile, reset when leadership changes;
 *   - each entry has a timer (wall ms) in a heap: the plan visits only the
 *     entries due, so 100,000 schedules cost nothing between occurrences;
 *   - a snapshot (sched_export, sched_import) carries the applied state
 *     only: import derives the rest as ADD's apply does (expression, zone,
 *     broken) and starts the plan as sched_leader_reset leaves it (every
 *     entry due at once), so the loaded table plans as the original would
 *     under a new leader;
 *   - an `all` schedule's occurrence is one FIRE with its members: the
 *     watermark and the repeated-FIRE check are per occurrence (scheduled_s,
 *     kind), the runs (active slots, history lines) per member, and
 *     DISPATCHED/DONE name the member (scheduled_s, kind, target).
 */
#include "core/sched.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tasks.h"
#include "lib/err.h"
#include "lib/rng.h"
#include "lib/timerheap.h"

#define SKIP_COUNT_MAX 100000 /* occurrences counted in one skipped range */

struct sched_entry {
	struct sched_spec spec;
	struct cron_expr expr;
	const struct tz *zone;
	int broken;
	char broken_why[160];
	int paused;
	char note[SCHED_NOTE_BYTES_MAX + 1];
	uint32_t runs;
	int64_t last_s;
	int64_t resume_s;            /* occurrences up to here came while paused */
	struct sched_occ *active;    /* SCHED_ACTIVE_MAX, allocated at the first run */
	uint32_t n_active;
	int64_t buffer[SCHED_BUFFER_MAX];
	uint32_t n_buffer;
	struct sched_occ *hist;      /* SCHED_HISTORY_MAX, allocated at the first decision */
	uint32_t hist_head, hist_n;  /* hist[hist_head] is the oldest */
	/* backfill in progress: occurrences of (bf_next_s, bf_to_s] */
	int64_t bf_from_s, bf_next_s, bf_to_s;
	uint8_t bf_overlap;
	uint32_t bf_fired;
	/* the leader's, volatile */
	int64_t planned_s;
	uint32_t planned_fires, planned_buffers;
	int planned_buffer_fire;
	int64_t planned_bf_s;
	struct timer due;            /* wall ms of the next planning visit */
};

struct sched {
	struct sched_entry **v;      /* by name */
	uint32_t n, cap;
	uint64_t task_bytes;         /* the templates, all schedules */
	struct timerheap due;
	sched_tz_fn resolve_tz;
	void *tz_ctx;
	/* the leader's: the targets of the last plan's `all` FIREs */
	uint8_t plan_targets[SCHED_ACTIVE_MAX][SCHED_ID_BYTES];
	uint32_t n_plan_targets;
};

const char *sched_overlap_name(int overlap)
{
	switch (overlap) {
	case SCHED_OVERLAP_SKIP: return "skip";
	case SCHED_OVERLAP_BUFFER_ONE: return "buffer_one";
	case SCHED_OVERLAP_BUFFER_ALL: return "buffer_all";
	case SCHED_OVERLAP_CANCEL_OTHER: return "cancel_other";
	case SCHED_OVERLAP_ALLOW_ALL: return "allow_all";
	default: return "?";
	}
}

int sched_overlap_parse(const char *name)
{
	for (int i = SCHED_OVERLAP_SKIP; i <= SCHED_OVERLAP_ALLOW_ALL; i++)
		if (strcmp(name, sched_overlap_name(i)) == 0)
			return i;
	return -1;
}

void sched_occurrence_key(const char *name, int64_t scheduled_s, uint8_t kind, char *buf,
                          size_t len)
{
	static const char *const KINDS[] = {"", ":trigger", ":backfill", ""};
	snprintf(buf, len, "cron:%s:%lld%s", name, (long long)scheduled_s, KINDS[kind & 3]);
}

void sched_spec_free(struct sched_spec *spec)
{
	if (!spec)
		return;
	free(spec->task);
	spec->task = NULL;
	spec->task_len = 0;
}

/* ---- lookups ---- */

static int find_pos(const struct sched *s, const char *name, uint32_t *pos)
{
	uint32_t lo = 0, hi = s->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->v[mid]->spec.name, name);
		if (c == 0) {
			*pos = mid;
			return 1;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*pos = lo;
	return 0;
}

static struct sched_entry *find(const struct sched *s, const char *name)
{
	uint32_t pos;
	return find_pos(s, name, &pos) ? s->v[pos] : NULL;
}

/* Every alive member runs each occurrence. */
static int on_all(const struct sched_entry *e)
{
	return strcmp(e->spec.on, "all") == 0;
}

static int id_is_zero(const uint8_t id[SCHED_ID_BYTES])
{
	for (uint32_t i = 0; i < SCHED_ID_BYTES; i++)
		if (id[i])
			return 0;
	return 1;
}

/* The run of occurrence (occ, kind) on target; an all-zero target (a
 * command of an older version) matches any of the occurrence's runs. */
static int run_matches(const struct sched_occ *o, int64_t occ, uint8_t kind,
                       const uint8_t target[SCHED_ID_BYTES])
{
	return o->scheduled_s == occ && o->kind == kind &&
	       (id_is_zero(target) || memcmp(o->target, target, SCHED_ID_BYTES) == 0);
}

struct sched *sched_create(sched_tz_fn resolve_tz, void *tz_ctx)
{
	struct sched *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->resolve_tz = resolve_tz;
	s->tz_ctx = tz_ctx;
	timerheap_init(&s->due);
	return s;
}

static void entry_free(struct sched_entry *e)
{
	sched_spec_free(&e->spec);
	free(e->active);
	free(e->hist);
	free(e);
}

/* The arrays a schedule needs once it runs: an idle schedule costs only
 * its spec. 0, or ERR_NOMEM (the command is then not applied here). */
static int entry_arrays(struct sched_entry *e)
{
	if (!e->hist)
		e->hist = calloc(SCHED_HISTORY_MAX, sizeof(*e->hist));
	if (!e->active)
		e->active = calloc(SCHED_ACTIVE_MAX, sizeof(*e->active));
	return e->hist && e->active ? 0 : ERR_NOMEM;
}

void sched_destroy(struct sched *s)
{
	if (!s)
		return;
	timerheap_free(&s->due); /* touches the armed timers: before their entries go */
	for (uint32_t i = 0; i < s->n; i++)
		entry_free(s->v[i]);
	free(s->v);
	free(s);
}

uint32_t sched_count(const struct sched *s)
{
	return s->n;
}

/* ---- time ---- */

static int64_t catchup_s(const struct sched_entry *e)
{
	uint64_t ms = e->spec.catchup_ms ? e->spec.catchup_ms : SCHED_CATCHUP_DEFAULT_MS;
	return (int64_t)(ms / 1000);
}

/* The first occurrence strictly after `after`, within start/end; 0 none. */
static int64_t next_after(const struct sched_entry *e, int64_t after)
{
	if (e->broken)
		return 0;
	if (e->spec.start_s && after < e->spec.start_s - 1)
		after = e->spec.start_s - 1;
	int64_t next = 0;
	int rc;
	if (e->expr.kind == CRON_KIND_EVERY)
		rc = cron_next_every(&e->expr, e->spec.start_s ? e->spec.start_s : 0, after, &next);
	else
		rc = cron_next(&e->expr, e->zone ? e->zone : tz_utc(), after, &next);
	if (rc != 0)
		return 0;
	if (e->spec.end_s && next > e->spec.end_s)
		return 0;
	return next;
}

/* The occurrence's fixed jitter, ms in [0, jitter_ms): every leader agrees. */
static uint64_t jitter_ms(const struct sched_entry *e, int64_t occ)
{
	if (!e->spec.jitter_ms)
		return 0;
	uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)occ;
	for (const char *p = e->spec.name; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	return rng_splitmix64(&h) % e->spec.jitter_ms;
}

/* ---- checks ---- */

static int name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > SCHED_NAME_BYTES_MAX)
		return 0;
	for (const char *p = name; *p; p++) {
		char ch = *p;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '-' || ch == '_' || ch == '.'))
			return 0;
	}
	return 1;
}

int sched_check_add(const struct sched *s, const struct sched_spec *spec, char *err,
                    size_t err_len)
{
	if (!name_ok(spec->name)) {
		snprintf(err, err_len,
		         "name: 1 to %d characters of letters, digits, '-', '_' and '.'",
		         SCHED_NAME_BYTES_MAX);
		return ERR_INVALID;
	}
	if (find(s, spec->name)) {
		snprintf(err, err_len, "a schedule named \"%s\" exists", spec->name);
		return ERR_INVALID;
	}
	if (s->n >= SCHED_COUNT_MAX) {
		snprintf(err, err_len, "%u schedules: the limit", SCHED_COUNT_MAX);
		return ERR_FULL;
	}
	if (s->task_bytes + spec->task_len > SCHED_TASK_BYTES_TOTAL_MAX) {
		snprintf(err, err_len,
		         "the task templates of all schedules would take %" PRIu64
		         " bytes: the limit is %u (remove schedules, or keep payloads elsewhere)",
		         s->task_bytes + spec->task_len, SCHED_TASK_BYTES_TOTAL_MAX);
		return ERR_FULL;
	}
	struct cron_expr ex;
	char why[200];
	if (cron_parse(spec->expr, &ex, why, sizeof(why)) != 0) {
		snprintf(err, err_len, "%s", why);
		return ERR_INVALID;
	}
	if (spec->tz[0] && ex.kind == CRON_KIND_FIELDS && s->resolve_tz) {
		const struct tz *z = NULL;
		if (s->resolve_tz(s->tz_ctx, spec->tz, &z, why, sizeof(why)) != 0) {
			snprintf(err, err_len, "%s", why);
			return ERR_INVALID;
		}
	}
	if (spec->catchup_ms > SCHED_CATCHUP_MAX_MS) {
		snprintf(err, err_len, "catch-up window: at most 7 days");
		return ERR_INVALID;
	}
	if (spec->catchup_ms && spec->catchup_ms < 1000) {
		snprintf(err, err_len, "catch-up window: at least 1 s");
		return ERR_INVALID;
	}
	if (spec->jitter_ms > SCHED_JITTER_MAX_MS) {
		snprintf(err, err_len, "jitter: at most 1 hour");
		return ERR_INVALID;
	}
	if (ex.kind == CRON_KIND_EVERY && spec->jitter_ms >= (uint64_t)ex.every_s * 1000) {
		snprintf(err, err_len, "jitter: must be shorter than the interval");
		return ERR_INVALID;
	}
	if (spec->start_s && spec->end_s && spec->end_s < spec->start_s) {
		snprintf(err, err_len, "end time before start time");
		return ERR_INVALID;
	}
	if (spec->overlap > SCHED_OVERLAP_ALLOW_ALL) {
		snprintf(err, err_len, "overlap: unknown policy");
		return ERR_INVALID;
	}
	if (spec->task_len == 0 || spec->task_len > SCHED_TASK_BYTES_MAX) {
		snprintf(err, err_len, "task: 1 to %u bytes", SCHED_TASK_BYTES_MAX);
		return ERR_INVALID;
	}
	if (spec->on[0] && strcmp(spec->on, "all") != 0 && strncmp(spec->on, "tag:", 4) != 0) {
		snprintf(err, err_len, "on: \"all\", \"tag:NAME\" or nothing (placement)");
		return ERR_INVALID;
	}
	return 0;
}

/* ---- history ---- */

static struct sched_occ *hist_push(struct sched_entry *e)
{
	uint32_t slot;
	if (e->hist_n < SCHED_HISTORY_MAX) {
		slot = (e->hist_head + e->hist_n) % SCHED_HISTORY_MAX;
		e->hist_n++;
	} else {
		slot = e->hist_head;
		e->hist_head = (e->hist_head + 1) % SCHED_HISTORY_MAX;
	}
	struct sched_occ *o = &e->hist[slot];
	memset(o, 0, sizeof(*o));
	return o;
}

static struct sched_occ *hist_find(struct sched_entry *e, int64_t occ, uint8_t kind,
                                   const uint8_t target[SCHED_ID_BYTES])
{
	if (!e->hist)
		return NULL;
	for (uint32_t i = 0; i < e->hist_n; i++) {
		struct sched_occ *o = &e->hist[(e->hist_head + e->hist_n - 1 - i) % SCHED_HISTORY_MAX];
		if (o->fired_ms && run_matches(o, occ, kind, target))
			return o;
	}
	return NULL;
}

const struct sched_occ *sched_history(const struct sched *s, const char *name, uint32_t i)
{
	const struct sched_entry *e = find(s, name);
	if (!e || !e->hist || i >= e->hist_n)
		return NULL;
	return &e->hist[(e->hist_head + e->hist_n - 1 - i) % SCHED_HISTORY_MAX];
}

/* ---- apply ---- */

static void arm_now(struct sched *s, struct sched_entry *e)
{
	(void)timerheap_set(&s->due, &e->due, 0); /* reserved at insert: cannot fail */
}

static struct sched_occ *active_find(struct sched_entry *e, int64_t occ, uint8_t kind,
                                     const uint8_t target[SCHED_ID_BYTES])
{
	for (uint32_t i = 0; i < e->n_active; i++)
		if (run_matches(&e->active[i], occ, kind, target))
			return &e->active[i];
	return NULL;
}

/* The expression and zone, as this node reads them. A node that cannot use
 * them keeps the schedule (the log is the same everywhere) but will not fire
 * it as leader. ADD's apply and sched_import share it. */
static void entry_resolve(struct sched *s, struct sched_entry *e)
{
	char why[200];
	if (cron_parse(e->spec.expr, &e->expr, why, sizeof(why)) != 0) {
		e->broken = 1;
		snprintf(e->broken_why, sizeof(e->broken_why), "%.159s", why);
	} else if (e->spec.tz[0] && e->expr.kind == CRON_KIND_FIELDS) {
		snprintf(why, sizeof(why), "zone \"%.64s\": not known here", e->spec.tz);
		if (!s->resolve_tz || s->resolve_tz(s->tz_ctx, e->spec.tz, &e->zone, why, sizeof(why)) != 0) {
			e->broken = 1;
			snprintf(e->broken_why, sizeof(e->broken_why), "%.159s", why);
		}
	}
}

/* A new entry holding a copy of sp, with room made for it in the table
 * and the timer heap (so inserting it cannot fail); NULL on ENOMEM. */
static struct sched_entry *entry_new(struct sched *s, const struct sched_spec *sp)
{
	struct sched_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->spec = *sp;
	e->spec.task = malloc(sp->task_len ? sp->task_len : 1);
	if (!e->spec.task || timerheap_reserve(&s->due, s->n + 1) != 0) {
		entry_free(e);
		return NULL;
	}
	if (sp->task_len)
		memcpy(e->spec.task, sp->task, sp->task_len);
	if (s->n == s->cap) {
		uint32_t cap = s->cap ? s->cap * 2 : 16;
		struct sched_entry **v = realloc(s->v, cap * sizeof(*v));
		if (!v) {
			entry_free(e);
			return NULL;
		}
		s->v = v;
		s->cap = cap;
	}
	return e;
}

/* pos from find_pos; room made by entry_new */
static void table_insert(struct sched *s, uint32_t pos, struct sched_entry *e)
{
	assert(s->n < s->cap && pos <= s->n);
	memmove(&s->v[pos + 1], &s->v[pos], (s->n - pos) * sizeof(*s->v));
	s->v[pos] = e;
	s->n++;
	s->task_bytes += e->spec.task_len;
}

static int apply_add(struct sched *s, const struct sched_cmd *c, char *err, size_t err_len)
{
	const struct sched_spec *sp = c->spec;
	uint32_t pos;
	if (!sp || find_pos(s, sp->name, &pos)) {
		snprintf(err, err_len, "a schedule named \"%s\" exists", sp ? sp->name : "?");
		return ERR_INVALID;
	}
	if (s->n >= SCHED_COUNT_MAX || sp->task_len > SCHED_TASK_BYTES_MAX) {
		snprintf(err, err_len, "over the limits");
		return ERR_FULL;
	}
	struct sched_entry *e = entry_new(s, sp);
	if (!e)
		return ERR_NOMEM;
	entry_resolve(s, e);
	/* occurrences after its creation, or from its start */
	e->last_s = (int64_t)(c->wall_ms / 1000);
	if (e->spec.start_s && e->spec.start_s - 1 > e->last_s)
		e->last_s = e->spec.start_s - 1;
	e->planned_s = e->last_s;
	table_insert(s, pos, e);
	arm_now(s, e);
	return 0;
}

/* 1 when c names an occurrence already fired (a proposal made twice: a
 * leader re-planning after a failed propose, a client retrying a trigger
 * across a leader change): applying it again would run it twice */
static int fire_repeated(const struct sched_entry *e, const struct sched_cmd *c)
{
	for (uint32_t i = 0; i < e->n_active; i++)
		if (e->active[i].scheduled_s == c->scheduled_s && e->active[i].kind == c->kind)
			return 1;
	for (uint32_t i = 0; i < e->hist_n; i++) {
		const struct sched_occ *o = &e->hist[(e->hist_head + i) % SCHED_HISTORY_MAX];
		if (o->fired_ms && o->scheduled_s == c->scheduled_s && o->kind == c->kind)
			return 1;
	}
	switch (c->kind) {
	case SCHED_FIRE_SCHEDULED:
		return c->scheduled_s <= e->last_s;
	case SCHED_FIRE_BACKFILL:
		return c->scheduled_s <= e->bf_next_s;
	case SCHED_FIRE_BUFFERED:
		return !e->n_buffer || e->buffer[0] != c->scheduled_s;
	default:
		return 0;
	}
}

static void apply_fire(struct sched *s, struct sched_entry *e, const struct sched_cmd *c)
{
	if (fire_repeated(e, c)) {
		if (c->kind != SCHED_FIRE_BUFFERED && e->planned_fires)
			e->planned_fires--;
		if (c->kind == SCHED_FIRE_BUFFERED)
			e->planned_buffer_fire = 0;
		return;
	}
	if (c->kind == SCHED_FIRE_SCHEDULED) {
		if (c->scheduled_s > e->last_s)
			e->last_s = c->scheduled_s;
	} else if (c->kind == SCHED_FIRE_BUFFERED) {
		if (e->n_buffer && e->buffer[0] == c->scheduled_s) {
			memmove(&e->buffer[0], &e->buffer[1], (e->n_buffer - 1) * sizeof(e->buffer[0]));
			e->n_buffer--;
		}
		e->planned_buffer_fire = 0;
	} else if (c->kind == SCHED_FIRE_BACKFILL) {
		if (c->scheduled_s > e->bf_next_s)
			e->bf_next_s = c->scheduled_s;
		e->bf_fired++;
	}
	if (c->kind != SCHED_FIRE_BUFFERED && e->planned_fires)
		e->planned_fires--;
	assert(c->targets || c->n_targets == 0);
	if (c->n_targets && e->n_active + c->n_targets > SCHED_ACTIVE_MAX) {
		/* one run per member does not fit beside the runs not done: the
		 * occurrence is decided all the same, skipped (some members
		 * only would be a choice nobody made) */
		struct sched_occ *o = hist_push(e);
		o->scheduled_s = o->to_s = c->scheduled_s;
		o->count = 1;
		o->kind = c->kind;
		o->outcome = -1;
		snprintf(o->why, sizeof(o->why), "skipped: %u runs do not fit beside the %u not done",
		         c->n_targets, e->n_active);
		arm_now(s, e);
		return;
	}
	e->runs++; /* occurrences, not members */
	struct sched_occ o = {0};
	o.scheduled_s = c->scheduled_s;
	o.fired_ms = c->wall_ms ? c->wall_ms : 1;
	o.kind = c->kind;
	o.outcome = TASK_QUEUED;
	snprintf(o.why, sizeof(o.why), "%s", c->kind == SCHED_FIRE_TRIGGER    ? "triggered"
	                                     : c->kind == SCHED_FIRE_BACKFILL ? "backfill"
	                                     : c->kind == SCHED_FIRE_BUFFERED ? "buffered"
	                                                                      : "");
	uint32_t n_runs = c->n_targets ? c->n_targets : 1;
	for (uint32_t i = 0; i < n_runs; i++) {
		memcpy(o.target, c->n_targets ? c->targets[i] : c->target, SCHED_ID_BYTES);
		/* a member listed twice runs once: two runs could not be told
		 * apart by DISPATCHED and DONE */
		int twice = 0;
		for (uint32_t k = 0; k < i && !twice; k++)
			twice = memcmp(c->targets[k], o.target, SCHED_ID_BYTES) == 0;
		if (twice)
			continue;
		if (e->n_active == SCHED_ACTIVE_MAX) {
			/* one target only (checked above for several): the oldest
			 * stops being watched (its task goes on) */
			assert(c->n_targets == 0);
			memmove(&e->active[0], &e->active[1], (SCHED_ACTIVE_MAX - 1) * sizeof(e->active[0]));
			e->n_active--;
		}
		e->active[e->n_active++] = o;
		*hist_push(e) = o;
	}
	assert(e->n_active <= SCHED_ACTIVE_MAX);
	arm_now(s, e);
}

int sched_apply(struct sched *s, const struct sched_cmd *c, char *err, size_t err_len)
{
	if (err_len)
		err[0] = '\0';
	if (c->op == SCHED_OP_ADD)
		return apply_add(s, c, err, err_len);
	uint32_t pos;
	if (!find_pos(s, c->name, &pos)) {
		snprintf(err, err_len, "no schedule named \"%s\"", c->name);
		return ERR_NOT_FOUND;
	}
	struct sched_entry *e = s->v[pos];
	if (c->op != SCHED_OP_RM && c->op != SCHED_OP_PAUSE && c->op != SCHED_OP_RESUME &&
	    entry_arrays(e) != 0) {
		snprintf(err, err_len, "out of memory");
		return ERR_NOMEM;
	}
	switch (c->op) {
	case SCHED_OP_RM:
		timerheap_cancel(&s->due, &e->due);
		s->task_bytes -= e->spec.task_len;
		entry_free(e);
		memmove(&s->v[pos], &s->v[pos + 1], (s->n - pos - 1) * sizeof(*s->v));
		s->n--;
		return 0;
	case SCHED_OP_PAUSE:
		e->paused = 1;
		snprintf(e->note, sizeof(e->note), "%s", c->note);
		return 0;
	case SCHED_OP_RESUME:
		if (e->paused) {
			e->paused = 0;
			e->note[0] = '\0';
			/* what came while paused is skipped (and recorded) */
			int64_t now_s = (int64_t)(c->wall_ms / 1000);
			if (now_s > e->resume_s)
				e->resume_s = now_s;
		}
		arm_now(s, e);
		return 0;
	case SCHED_OP_FIRE:
		apply_fire(s, e, c);
		return 0;
	case SCHED_OP_SKIP: {
		if (c->to_s <= e->last_s)
			return 0; /* decided already */
		e->last_s = c->to_s;
		struct sched_occ *o = hist_push(e);
		o->scheduled_s = c->from_s;
		o->to_s = c->to_s;
		o->count = c->count;
		o->outcome = -1;
		snprintf(o->why, sizeof(o->why), "%.95s", c->note);
		arm_now(s, e);
		return 0;
	}
	case SCHED_OP_BUFFER: {
		if (c->scheduled_s <= e->last_s) {
			if (e->planned_buffers)
				e->planned_buffers--;
			return 0; /* decided already */
		}
		e->last_s = c->scheduled_s;
		if (e->planned_buffers)
			e->planned_buffers--;
		if (e->n_buffer < SCHED_BUFFER_MAX)
			e->buffer[e->n_buffer++] = c->scheduled_s;
		struct sched_occ *o = hist_push(e);
		o->scheduled_s = c->scheduled_s;
		o->outcome = -2;
		snprintf(o->why, sizeof(o->why), "buffered: a run is not done");
		arm_now(s, e);
		return 0;
	}
	case SCHED_OP_DISPATCHED: {
		/* the run: the one named, or (no target) the occurrence's first
		 * active one, the same in the history */
		uint8_t who[SCHED_ID_BYTES];
		memcpy(who, c->target, SCHED_ID_BYTES);
		struct sched_occ *a = active_find(e, c->scheduled_s, c->kind, who);
		if (a) {
			a->task_id = c->task_id;
			a->dispatched = 1;
			memcpy(who, a->target, SCHED_ID_BYTES);
		}
		struct sched_occ *h = hist_find(e, c->scheduled_s, c->kind, who);
		if (h) {
			h->task_id = c->task_id;
			h->dispatched = 1;
		}
		return 0;
	}
	case SCHED_OP_DONE: {
		uint8_t who[SCHED_ID_BYTES]; /* as DISPATCHED */
		memcpy(who, c->target, SCHED_ID_BYTES);
		struct sched_occ *a = active_find(e, c->scheduled_s, c->kind, who);
		if (a) {
			memcpy(who, a->target, SCHED_ID_BYTES);
			uint32_t i = (uint32_t)(a - e->active);
			memmove(&e->active[i], &e->active[i + 1],
			        (e->n_active - i - 1) * sizeof(e->active[0]));
			e->n_active--;
		}
		struct sched_occ *h = hist_find(e, c->scheduled_s, c->kind, who);
		if (h) {
			h->done = 1;
			h->outcome = c->outcome;
			h->task_id = c->task_id ? c->task_id : h->task_id;
			if (c->note[0])
				snprintf(h->why, sizeof(h->why), "%.95s", c->note);
		}
		if (e->spec.pause_on_failure && c->outcome != TASK_SUCCEEDED && !e->paused) {
			e->paused = 1;
			snprintf(e->note, sizeof(e->note), "paused: the run of %lld ended %s",
			         (long long)c->scheduled_s, task_state_name(c->outcome));
		}
		arm_now(s, e);
		return 0;
	}
	case SCHED_OP_BACKFILL:
		/* the same range again (a retried request): nothing new */
		if (e->bf_to_s == c->to_s && e->bf_from_s == c->from_s)
			return 0;
		/* a new range replaces one in progress */
		e->bf_from_s = c->from_s;
		e->bf_next_s = c->from_s - 1;
		e->bf_to_s = c->to_s;
		e->bf_overlap = c->kind;
		e->bf_fired = 0;
		e->planned_bf_s = e->bf_next_s;
		arm_now(s, e);
		return 0;
	default:
		snprintf(err, err_len, "unknown command %u", c->op);
		return ERR_INVALID;
	}
}

/* ---- the leader's plan ---- */

static struct sched_cmd *emit(struct sched_cmd *out, uint32_t *n, uint32_t max, uint8_t op,
                              const struct sched_entry *e, uint64_t now_ms)
{
	if (*n >= max)
		return NULL;
	struct sched_cmd *c = &out[(*n)++];
	memset(c, 0, sizeof(*c));
	c->op = op;
	snprintf(c->name, sizeof(c->name), "%s", e->spec.name);
	c->wall_ms = now_ms;
	return c;
}

/* Counts the occurrences in (after, to] (at most SKIP_COUNT_MAX) and
 * returns the last one counted. */
static uint32_t count_range(const struct sched_entry *e, int64_t first, int64_t to,
                            int64_t *last)
{
	uint32_t n = 0;
	int64_t o = first;
	*last = first;
	while (o && o <= to && n < SKIP_COUNT_MAX) {
		n++;
		*last = o;
		o = next_after(e, o);
	}
	return n;
}

/* A FIRE's runs: on the leader, or (`all`) on every member it knows alive. */
static void fire_on(const struct sched *s, const struct sched_entry *e, const uint8_t *self,
                    struct sched_cmd *c)
{
	memcpy(c->target, self, SCHED_ID_BYTES);
	if (on_all(e)) {
		assert(s->n_plan_targets >= 1 && s->n_plan_targets <= SCHED_ACTIVE_MAX);
		c->targets = s->plan_targets;
		c->n_targets = s->n_plan_targets;
	}
}

/* Plans one entry; returns 0 when out is full (visit again at once). */
static int plan_entry(struct sched *s, struct sched_entry *e, uint64_t now_ms,
                      const uint8_t *self, struct sched_cmd *out, uint32_t *n, uint32_t max)
{
	int64_t now_s = (int64_t)(now_ms / 1000);
	if (e->broken)
		return 1;
	/* a buffered occurrence whose turn has come */
	if (!e->paused && e->n_buffer && e->n_active == 0 && e->planned_fires == 0 &&
	    !e->planned_buffer_fire) {
		struct sched_cmd *c = emit(out, n, max, SCHED_OP_FIRE, e, now_ms);
		if (!c)
			return 0;
		c->kind = SCHED_FIRE_BUFFERED;
		c->scheduled_s = e->buffer[0];
		fire_on(s, e, self, c);
		e->planned_buffer_fire = 1;
	}
	/* a backfill in progress */
	if (e->bf_to_s && !e->paused) {
		int64_t from = e->planned_bf_s > e->bf_next_s ? e->planned_bf_s : e->bf_next_s;
		while (e->bf_fired + e->planned_fires < SCHED_BACKFILL_MAX) {
			int64_t o = next_after(e, from);
			if (!o || o > e->bf_to_s) {
				break;
			}
			/* skip overlap: one at a time, each after the last is done */
			if (e->bf_overlap == SCHED_OVERLAP_SKIP && (e->n_active || e->planned_fires))
				break;
			struct sched_cmd *c = emit(out, n, max, SCHED_OP_FIRE, e, now_ms);
			if (!c)
				return 0;
			c->kind = SCHED_FIRE_BACKFILL;
			c->scheduled_s = o;
			fire_on(s, e, self, c);
			e->planned_fires++;
			e->planned_bf_s = from = o;
		}
	}
	if (e->paused)
		return 1;
	for (;;) {
		int64_t base = e->planned_s > e->last_s ? e->planned_s : e->last_s;
		int64_t o = next_after(e, base);
		if (!o)
			return 1; /* no more: ended, or never again */
		if (e->spec.max_runs && e->runs + e->planned_fires >= e->spec.max_runs)
			return 1;
		if (o <= e->resume_s) {
			/* came while paused */
			struct sched_cmd *c = emit(out, n, max, SCHED_OP_SKIP, e, now_ms);
			if (!c)
				return 0;
			int64_t last;
			c->from_s = o;
			c->count = count_range(e, o, e->resume_s, &last);
			c->to_s = last > e->resume_s ? last : e->resume_s;
			snprintf(c->note, sizeof(c->note), "skipped: the schedule was paused");
			e->planned_s = c->to_s;
			continue;
		}
		uint64_t fire_ms = (uint64_t)o * 1000 + jitter_ms(e, o);
		if (fire_ms > now_ms) {
			(void)timerheap_set(&s->due, &e->due, fire_ms);
			return 1;
		}
		if (now_s - o > catchup_s(e)) {
			/* missed by more than the catch-up window: one recorded range */
			struct sched_cmd *c = emit(out, n, max, SCHED_OP_SKIP, e, now_ms);
			if (!c)
				return 0;
			int64_t last;
			int64_t limit = now_s - catchup_s(e);
			c->from_s = o;
			c->count = count_range(e, o, limit, &last);
			c->to_s = last;
			snprintf(c->note, sizeof(c->note),
			         "skipped: missed by more than the catch-up window (%llds)",
			         (long long)catchup_s(e));
			e->planned_s = last;
			continue;
		}
		int busy = e->n_active + e->planned_fires > 0;
		uint32_t width = on_all(e) ? s->n_plan_targets : 1;
		uint8_t op = SCHED_OP_FIRE;
		const char *why = NULL;
		switch (e->spec.overlap) {
		case SCHED_OVERLAP_SKIP:
			if (busy) {
				op = SCHED_OP_SKIP;
				why = "skipped: overlap (a run is not done)";
			}
			break;
		case SCHED_OVERLAP_ALLOW_ALL:
			/* runs not done, each planned FIRE and this one: `width`
			 * runs each (apply skips what does not fit all the same) */
			if (e->n_active + (e->planned_fires + 1) * width > SCHED_ACTIVE_MAX) {
				op = SCHED_OP_SKIP;
				why = "skipped: overlap (64 runs not done)";
			}
			break;
		case SCHED_OVERLAP_BUFFER_ONE:
		case SCHED_OVERLAP_BUFFER_ALL:
			if (busy || e->n_buffer + e->planned_buffers) {
				uint32_t cap = e->spec.overlap == SCHED_OVERLAP_BUFFER_ONE ? 1 : SCHED_BUFFER_MAX;
				if (e->n_buffer + e->planned_buffers >= cap) {
					op = SCHED_OP_SKIP;
					why = "skipped: overlap (the buffer is full)";
				} else {
					op = SCHED_OP_BUFFER;
				}
			}
			break;
		case SCHED_OVERLAP_CANCEL_OTHER:
			break; /* fired; the shell cancels the running one */
		default:
			break;
		}
		struct sched_cmd *c = emit(out, n, max, op, e, now_ms);
		if (!c)
			return 0;
		c->scheduled_s = o;
		if (op == SCHED_OP_FIRE) {
			c->kind = SCHED_FIRE_SCHEDULED;
			fire_on(s, e, self, c);
			e->planned_fires++;
		} else if (op == SCHED_OP_SKIP) {
			c->from_s = c->to_s = o;
			c->count = 1;
			snprintf(c->note, sizeof(c->note), "%s", why);
		} else {
			e->planned_buffers++;
		}
		e->planned_s = o;
	}
}

uint32_t sched_plan(struct sched *s, uint64_t now_wall_ms, const uint8_t self[SCHED_ID_BYTES],
                    const uint8_t (*members)[SCHED_ID_BYTES], uint32_t n_members,
                    struct sched_cmd *out, uint32_t max)
{
	if (max > SCHED_PLAN_MAX)
		max = SCHED_PLAN_MAX;
	assert(members || n_members == 0);
	/* `all`'s targets: the leader always (it may not list itself), then
	 * each other member once, up to the active slots of one schedule */
	memcpy(s->plan_targets[0], self, SCHED_ID_BYTES);
	s->n_plan_targets = 1;
	for (uint32_t i = 0; i < n_members && s->n_plan_targets < SCHED_ACTIVE_MAX; i++) {
		int known = 0;
		for (uint32_t k = 0; k < s->n_plan_targets && !known; k++)
			known = memcmp(s->plan_targets[k], members[i], SCHED_ID_BYTES) == 0;
		if (!known)
			memcpy(s->plan_targets[s->n_plan_targets++], members[i], SCHED_ID_BYTES);
	}
	uint32_t n = 0;
	struct timer *t;
	while (n < max && (t = timerheap_pop_due(&s->due, now_wall_ms)) != NULL) {
		struct sched_entry *e = timer_owner(t, struct sched_entry, due);
		if (!plan_entry(s, e, now_wall_ms, self, out, &n, max)) {
			arm_now(s, e); /* out is full: again next call */
			break;
		}
	}
	return n;
}

/* Forgets what this entry's leader planned and not applied; due at once. */
static void entry_plan_reset(struct sched *s, struct sched_entry *e)
{
	e->planned_s = e->last_s;
	e->planned_fires = e->planned_buffers = 0;
	e->planned_buffer_fire = 0;
	e->planned_bf_s = e->bf_next_s;
	arm_now(s, e);
}

void sched_leader_reset(struct sched *s)
{
	for (uint32_t i = 0; i < s->n; i++)
		entry_plan_reset(s, s->v[i]);
}

uint64_t sched_next_plan_ms(const struct sched *s)
{
	return timerheap_next_ms(&s->due);
}

const struct sched_occ *sched_next_active(const struct sched *s, uint64_t *cursor,
                                          const char **name, const struct sched_spec **spec)
{
	uint64_t i = *cursor >> 8, k = *cursor & 0xff;
	while (i < s->n) {
		const struct sched_entry *e = s->v[i];
		if (k < e->n_active) {
			*cursor = (i << 8) | (k + 1);
			*name = e->spec.name;
			*spec = &e->spec;
			return &e->active[k];
		}
		i++;
		k = 0;
	}
	*cursor = (uint64_t)s->n << 8;
	return NULL;
}

int sched_view(const struct sched *s, const char *name, struct sched_view *v)
{
	const struct sched_entry *e = find(s, name);
	if (!e)
		return ERR_NOT_FOUND;
	memset(v, 0, sizeof(*v));
	v->spec = &e->spec;
	v->paused = e->paused;
	v->note = e->note;
	v->broken = e->broken;
	v->broken_why = e->broken_why;
	v->runs = e->runs;
	v->last_s = e->last_s;
	v->n_active = e->n_active;
	v->n_buffer = e->n_buffer;
	if (!e->paused && !(e->spec.max_runs && e->runs >= e->spec.max_runs)) {
		int64_t base = e->last_s > e->resume_s ? e->last_s : e->resume_s;
		v->next_s = next_after(e, base);
	}
	return 0;
}

const char *sched_next_name(const struct sched *s, uint32_t *cursor)
{
	if (*cursor >= s->n)
		return NULL;
	return s->v[(*cursor)++]->spec.name;
}

/* ---- export and import (snapshots) ---- */

int sched_export(const struct sched *s, uint32_t i, struct sched_state *out)
{
	if (i >= s->n)
		return ERR_NOT_FOUND;
	const struct sched_entry *e = s->v[i];
	memset(out, 0, sizeof(*out));
	out->spec = &e->spec;
	out->paused = e->paused;
	out->note = e->note;
	out->runs = e->runs;
	out->last_s = e->last_s;
	out->resume_s = e->resume_s;
	out->active = e->active;
	out->n_active = e->n_active;
	out->buffer = e->buffer;
	out->n_buffer = e->n_buffer;
	/* the ring, oldest first: from hist_head to the end of the array, then
	 * from its start */
	assert(e->hist_n <= SCHED_HISTORY_MAX && e->hist_head < SCHED_HISTORY_MAX);
	uint32_t first = e->hist_n;
	if (e->hist_head + first > SCHED_HISTORY_MAX)
		first = SCHED_HISTORY_MAX - e->hist_head;
	out->hist[0] = e->hist ? &e->hist[e->hist_head] : NULL;
	out->n_hist[0] = first;
	out->hist[1] = e->hist;
	out->n_hist[1] = e->hist_n - first;
	out->bf_from_s = e->bf_from_s;
	out->bf_next_s = e->bf_next_s;
	out->bf_to_s = e->bf_to_s;
	out->bf_overlap = e->bf_overlap;
	out->bf_fired = e->bf_fired;
	return 0;
}

static int occs_check(const struct sched_occ *o, uint32_t n, const char *what, char *err,
                      size_t err_len)
{
	if (n && !o) {
		snprintf(err, err_len, "%s: %u occurrences and no array", what, n);
		return ERR_INVALID;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (!memchr(o[i].why, '\0', sizeof(o[i].why))) {
			snprintf(err, err_len, "%s %u: the reason is not terminated within %zu bytes", what,
			         i, sizeof(o[i].why));
			return ERR_INVALID;
		}
		if (o[i].dispatched > 1 || o[i].done > 1) {
			snprintf(err, err_len, "%s %u: dispatched and done are 0 or 1", what, i);
			return ERR_INVALID;
		}
	}
	return 0;
}

/* Everything sched_import copies, against sched.h's bounds. */
static int state_check(const struct sched_state *st, char *err, size_t err_len)
{
	const struct sched_spec *sp = st->spec;
	if (!sp) {
		snprintf(err, err_len, "no spec");
		return ERR_INVALID;
	}
	if (!memchr(sp->name, '\0', sizeof(sp->name)) || !memchr(sp->expr, '\0', sizeof(sp->expr)) ||
	    !memchr(sp->tz, '\0', sizeof(sp->tz)) || !memchr(sp->on, '\0', sizeof(sp->on))) {
		snprintf(err, err_len, "spec: a string is not terminated within its bound");
		return ERR_INVALID;
	}
	if (sp->task_len > SCHED_TASK_BYTES_MAX || (sp->task_len && !sp->task)) {
		snprintf(err, err_len, "%s: task template: at most %u bytes", sp->name,
		         SCHED_TASK_BYTES_MAX);
		return ERR_INVALID;
	}
	if (sp->overlap > SCHED_OVERLAP_ALLOW_ALL) {
		snprintf(err, err_len, "%s: overlap: unknown policy %u", sp->name, sp->overlap);
		return ERR_INVALID;
	}
	if (st->note && strnlen(st->note, SCHED_NOTE_BYTES_MAX + 1) > SCHED_NOTE_BYTES_MAX) {
		snprintf(err, err_len, "%s: note: longer than %d bytes", sp->name, SCHED_NOTE_BYTES_MAX);
		return ERR_INVALID;
	}
	if (st->n_active > SCHED_ACTIVE_MAX) {
		snprintf(err, err_len, "%s: %u runs not done, at most %d", sp->name, st->n_active,
		         SCHED_ACTIVE_MAX);
		return ERR_INVALID;
	}
	if (st->n_buffer > SCHED_BUFFER_MAX || (st->n_buffer && !st->buffer)) {
		snprintf(err, err_len, "%s: %u buffered occurrences, at most %d", sp->name, st->n_buffer,
		         SCHED_BUFFER_MAX);
		return ERR_INVALID;
	}
	if (st->n_hist[0] > SCHED_HISTORY_MAX || st->n_hist[1] > SCHED_HISTORY_MAX - st->n_hist[0]) {
		snprintf(err, err_len, "%s: history: at most %d", sp->name, SCHED_HISTORY_MAX);
		return ERR_INVALID;
	}
	char what[SCHED_NAME_BYTES_MAX + 16];
	snprintf(what, sizeof(what), "%s: active", sp->name);
	if (occs_check(st->active, st->n_active, what, err, err_len) != 0)
		return ERR_INVALID;
	snprintf(what, sizeof(what), "%s: history", sp->name);
	if (occs_check(st->hist[0], st->n_hist[0], what, err, err_len) != 0 ||
	    occs_check(st->hist[1], st->n_hist[1], what, err, err_len) != 0)
		return ERR_INVALID;
	return 0;
}

int sched_import(struct sched *s, const struct sched_state *st, char *err, size_t err_len)
{
	if (err_len)
		err[0] = '\0';
	int rc = state_check(st, err, err_len);
	if (rc != 0)
		return rc;
	const struct sched_spec *sp = st->spec;
	uint32_t pos;
	if (find_pos(s, sp->name, &pos)) {
		snprintf(err, err_len, "a schedule named \"%s\" exists", sp->name);
		return ERR_INVALID;
	}
	if (s->n >= SCHED_COUNT_MAX) {
		snprintf(err, err_len, "%u schedules: the limit", SCHED_COUNT_MAX);
		return ERR_FULL;
	}
	struct sched_entry *e = entry_new(s, sp);
	uint32_t n_hist = st->n_hist[0] + st->n_hist[1];
	if (!e || ((st->n_active || n_hist) && entry_arrays(e) != 0)) {
		if (e)
			entry_free(e);
		snprintf(err, err_len, "out of memory");
		return ERR_NOMEM;
	}
	e->paused = st->paused ? 1 : 0;
	snprintf(e->note, sizeof(e->note), "%s", st->note ? st->note : "");
	e->runs = st->runs;
	e->last_s = st->last_s;
	e->resume_s = st->resume_s;
	if (st->n_active)
		memcpy(e->active, st->active, st->n_active * sizeof(*e->active));
	e->n_active = st->n_active;
	if (st->n_buffer)
		memcpy(e->buffer, st->buffer, st->n_buffer * sizeof(*e->buffer));
	e->n_buffer = st->n_buffer;
	/* the ring starts over at 0, oldest first: the same history */
	if (st->n_hist[0])
		memcpy(e->hist, st->hist[0], st->n_hist[0] * sizeof(*e->hist));
	if (st->n_hist[1])
		memcpy(e->hist + st->n_hist[0], st->hist[1], st->n_hist[1] * sizeof(*e->hist));
	e->hist_head = 0;
	e->hist_n = n_hist;
	e->bf_from_s = st->bf_from_s;
	e->bf_next_s = st->bf_next_s;
	e->bf_to_s = st->bf_to_s;
	e->bf_overlap = st->bf_overlap;
	e->bf_fired = st->bf_fired;
	entry_resolve(s, e);
	table_insert(s, pos, e);
	entry_plan_reset(s, e);
	assert(e->n_active <= SCHED_ACTIVE_MAX && e->n_buffer <= SCHED_BUFFER_MAX);
	assert(e->hist_n <= SCHED_HISTORY_MAX && timer_armed(&e->due));
	return 0;
}
