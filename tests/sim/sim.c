/*
 * sim.c - the simulator's core: event heap, virtual clocks, virtual network,
 * virtual disks, invariant checks and failure reports (see sim.h).
 *
 * The event queue is a binary heap of (virtual time, insertion order). Each
 * node has at most one live tick event, at its core's next deadline; a tick
 * superseded by an earlier deadline stays in the heap and is skipped when
 * popped (its time no longer matches the node's tick_at).
 *
 * The network keeps the draw order the SWIM-only simulator had (cut check,
 * then loss, duplication, latency per copy, all from the one run PRNG), so
 * the same seed gives the same runs and the same table as before the split
 * into core and drivers.
 */
#include "sim.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EV_TICK = 1, EV_DELIVER = 2, EV_FSYNC = 3 };

struct event {
	uint64_t time_ms;
	uint64_t order;
	uint32_t kind, node, from;
	uint32_t len;
	void *p; /* DELIVER: the bytes; FSYNC: struct disk_sync */
};

struct record {
	char name[16];
	int cur_exists, dur_exists;
	uint32_t cur_len, dur_len;
	uint8_t cur[SIM_DISK_RECORD_BYTES_MAX], dur[SIM_DISK_RECORD_BYTES_MAX];
};

struct disk_sync {
	uint64_t id;
	uint32_t epoch;           /* the node's life it belongs to */
	uint32_t count;
	struct record snap[SIM_DISK_RECORDS_MAX];
};

struct node {
	void *core;
	int up;
	uint64_t tick_at;         /* virtual ms of the live tick event */
	uint64_t mono_base;       /* mono_ms = virtual + mono_base */
	int64_t wall_offset;      /* wall_ms = virtual + wall_offset */
	uint8_t group;
	uint32_t epoch;           /* bumped by every crash/stop */
	struct record disk[SIM_DISK_RECORDS_MAX];
	uint32_t records;
};

struct check {
	const char *name;
	sim_check_fn fn;
	void *ctx;
	uint64_t every_ms, next_ms;
};

struct sim {
	const struct sim_driver *d;
	void *driver_ctx;
	struct sim_run run;
	uint32_t n;
	struct node *nodes;
	struct rng rng, clock_rng, disk_rng;
	uint64_t now;
	/* the heap */
	struct event *e;
	size_t len, cap;
	uint64_t order;
	/* network */
	uint32_t loss_ppm, dup_ppm;
	uint8_t cut[SIM_GROUPS_MAX][SIM_GROUPS_MAX];
	int cuts;
	uint64_t sent, sent_bytes;
	/* disk */
	uint32_t fsync_min_ms, fsync_max_ms;
	uint64_t sync_seq;
	/* checks */
	struct check checks[SIM_CHECKS_MAX];
	uint32_t check_count;
	int failed;
};

static uint32_t g_failures;

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		fprintf(stderr, "sim: out of memory (%zu bytes)\n", n);
		exit(2);
	}
	return p;
}

/* ---- the event heap ---- */

static int ev_less(const struct event *a, const struct event *b)
{
	return a->time_ms < b->time_ms || (a->time_ms == b->time_ms && a->order < b->order);
}

static void heap_push(struct sim *s, struct event ev)
{
	if (s->len == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 1024;
		s->e = realloc(s->e, s->cap * sizeof(*s->e));
		if (!s->e) {
			fprintf(stderr, "sim: out of memory (event heap)\n");
			exit(2);
		}
	}
	ev.order = s->order++;
	size_t i = s->len++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!ev_less(&ev, &s->e[p])) break;
		s->e[i] = s->e[p];
		i = p;
	}
	s->e[i] = ev;
}

static struct event heap_pop(struct sim *s)
{
	struct event top = s->e[0], last = s->e[--s->len];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= s->len) break;
		if (c + 1 < s->len && ev_less(&s->e[c + 1], &s->e[c])) c++;
		if (!ev_less(&s->e[c], &last)) break;
		s->e[i] = s->e[c];
		i = c;
	}
	if (s->len) s->e[i] = last;
	return top;
}

static void event_free(struct event *ev)
{
	if (ev->kind == EV_DELIVER || ev->kind == EV_FSYNC) free(ev->p);
	ev->p = NULL;
}

/* ---- lifetime ---- */

struct sim *sim_create(const struct sim_driver *d, void *driver_ctx, const struct sim_run *run)
{
	assert(d && d->create && d->destroy && d->next_deadline_ms && d->tick && d->on_message);
	assert(run->n >= 1);
	struct sim *s = xmalloc(sizeof(*s));
	memset(s, 0, sizeof(*s));
	s->d = d;
	s->driver_ctx = driver_ctx;
	s->run = *run;
	s->n = run->n;
	rng_seed(&s->rng, run->seed);
	/* separate streams: clocks and disks never shift the network's draws */
	rng_seed(&s->clock_rng, run->seed ^ 0xc10c0c10c0c10c0cULL);
	rng_seed(&s->disk_rng, run->seed ^ 0xd15cd15cd15cd15cULL);
	s->now = 1000000; /* non-zero start, like a real clock */
	s->fsync_min_ms = 1;
	s->fsync_max_ms = 5;
	s->nodes = xmalloc((size_t)s->n * sizeof(*s->nodes));
	memset(s->nodes, 0, (size_t)s->n * sizeof(*s->nodes));
	for (uint32_t i = 0; i < s->n; i++) {
		struct node *nd = &s->nodes[i];
		nd->tick_at = UINT64_MAX;
		/* booted at different times: monotonic clocks disagree by hours */
		nd->mono_base = 1000000ULL * (1 + rng_below(&s->clock_rng, 100000));
		/* wall clocks within +-2 s of each other around 2023-11-14 */
		nd->wall_offset = 1700000000000LL + (int64_t)rng_below(&s->clock_rng, 4001) - 2000;
	}
	return s;
}

void sim_destroy(struct sim *s)
{
	if (!s) return;
	while (s->len) {
		struct event ev = heap_pop(s);
		event_free(&ev);
	}
	free(s->e);
	for (uint32_t i = 0; i < s->n; i++)
		if (s->nodes[i].core) s->d->destroy(s->nodes[i].core);
	free(s->nodes);
	free(s);
}

void *sim_driver_ctx(const struct sim *s) { return s->driver_ctx; }
const struct sim_run *sim_run_info(const struct sim *s) { return &s->run; }
uint32_t sim_n(const struct sim *s) { return s->n; }
struct rng *sim_rng(struct sim *s) { return &s->rng; }
uint64_t sim_now(const struct sim *s) { return s->now; }
uint64_t sim_sent(const struct sim *s) { return s->sent; }
uint64_t sim_sent_bytes(const struct sim *s) { return s->sent_bytes; }
int sim_failed(const struct sim *s) { return s->failed; }
uint32_t sim_failures(void) { return g_failures; }

/* ---- clocks ---- */

struct now sim_node_clock(const struct sim *s, uint32_t node)
{
	const struct node *nd = &s->nodes[node];
	struct now t = {.mono_ms = s->now + nd->mono_base, .wall_ms = (uint64_t)((int64_t)s->now + nd->wall_offset)};
	return t;
}

void sim_clock_jump(struct sim *s, uint32_t node, int64_t delta_ms)
{
	s->nodes[node].wall_offset += delta_ms;
}

/* ---- nodes ---- */

void sim_node_poke(struct sim *s, uint32_t node)
{
	struct node *nd = &s->nodes[node];
	if (!nd->up) return;
	uint64_t d = s->d->next_deadline_ms(nd->core);
	if (d == UINT64_MAX) return;
	d = d > nd->mono_base ? d - nd->mono_base : 0; /* node monotonic -> virtual */
	if (d < s->now) d = s->now;
	if (d < nd->tick_at) {
		nd->tick_at = d;
		heap_push(s, (struct event){.time_ms = d, .kind = EV_TICK, .node = node});
	}
}

int sim_node_start(struct sim *s, uint32_t node)
{
	struct node *nd = &s->nodes[node];
	assert(!nd->up);
	nd->core = s->d->create(s, node, sim_node_clock(s, node));
	if (!nd->core) {
		sim_fail(s, "%s: create failed for node %u", s->d->name, node);
		return -1;
	}
	nd->up = 1;
	nd->tick_at = UINT64_MAX;
	return 0;
}

static void node_down(struct sim *s, uint32_t node)
{
	struct node *nd = &s->nodes[node];
	assert(nd->up);
	s->d->destroy(nd->core);
	nd->core = NULL;
	nd->up = 0;
	nd->tick_at = UINT64_MAX;
	nd->epoch++; /* fsyncs in flight no longer count */
	/* what was not durable is gone */
	for (uint32_t r = 0; r < nd->records; r++) {
		struct record *rec = &nd->disk[r];
		rec->cur_exists = rec->dur_exists;
		rec->cur_len = rec->dur_len;
		memcpy(rec->cur, rec->dur, rec->dur_len);
	}
}

void sim_node_crash(struct sim *s, uint32_t node) { node_down(s, node); }
void sim_node_stop(struct sim *s, uint32_t node) { node_down(s, node); }
int sim_node_up(const struct sim *s, uint32_t node) { return s->nodes[node].up; }
void *sim_node_core(const struct sim *s, uint32_t node) { return s->nodes[node].core; }

/* ---- network ---- */

void sim_net_loss_ppm(struct sim *s, uint32_t ppm) { s->loss_ppm = ppm; }
void sim_net_dup_ppm(struct sim *s, uint32_t ppm) { s->dup_ppm = ppm; }

void sim_net_group(struct sim *s, uint32_t node, uint8_t group)
{
	assert(group < SIM_GROUPS_MAX);
	s->nodes[node].group = group;
}

uint8_t sim_net_group_of(const struct sim *s, uint32_t node) { return s->nodes[node].group; }

void sim_net_cut(struct sim *s, uint8_t from, uint8_t to, int cut)
{
	assert(from < SIM_GROUPS_MAX && to < SIM_GROUPS_MAX);
	s->cut[from][to] = cut ? 1 : 0;
	s->cuts = 0;
	for (int a = 0; a < SIM_GROUPS_MAX; a++)
		for (int b = 0; b < SIM_GROUPS_MAX; b++) s->cuts += s->cut[a][b];
}

void sim_net_heal(struct sim *s)
{
	memset(s->cut, 0, sizeof s->cut);
	s->cuts = 0;
	for (uint32_t i = 0; i < s->n; i++) s->nodes[i].group = 0;
}

int sim_net_cut_any(const struct sim *s) { return s->cuts != 0; }

int sim_net_reaches(const struct sim *s, uint32_t a, uint32_t b)
{
	return !s->cut[s->nodes[a].group][s->nodes[b].group];
}

static uint32_t latency_ms(struct sim *s)
{
	/* LAN-like: mostly 1-3 ms, a 10% tail up to 23 ms */
	uint32_t l = 1 + rng_below(&s->rng, 3);
	if (rng_below(&s->rng, 10) == 0) l += rng_below(&s->rng, 21);
	return l;
}

/* true with probability ppm / 1,000,000 */
static int chance_ppm(struct sim *s, uint32_t ppm) { return rng_below(&s->rng, 1000000) < ppm; }

void sim_send(struct sim *s, uint32_t from, uint32_t to, const uint8_t *bytes, size_t len)
{
	s->sent++;
	s->sent_bytes += len;
	if (to >= s->n) return; /* nobody at that address */
	if (s->cuts && !sim_net_reaches(s, from, to)) return;
	if (chance_ppm(s, s->loss_ppm)) return;
	int copies = 1 + chance_ppm(s, s->dup_ppm);
	assert(len <= UINT32_MAX);
	for (int c = 0; c < copies; c++) {
		uint8_t *copy = xmalloc(len);
		memcpy(copy, bytes, len);
		struct event ev = {.time_ms = s->now + latency_ms(s), .kind = EV_DELIVER, .node = to, .from = from,
		                   .len = (uint32_t)len, .p = copy};
		heap_push(s, ev);
	}
}

/* ---- disk ---- */

static struct record *record_find(const struct node *nd, const char *name)
{
	for (uint32_t r = 0; r < nd->records; r++)
		if (!strcmp(nd->disk[r].name, name)) return (struct record *)&nd->disk[r];
	return NULL;
}

int sim_disk_write(struct sim *s, uint32_t node, const char *name, const void *data, size_t len)
{
	struct node *nd = &s->nodes[node];
	if (strlen(name) >= sizeof nd->disk[0].name || len > SIM_DISK_RECORD_BYTES_MAX) {
		sim_fail(s, "disk write of %s (%zu bytes) over the simulator's limits", name, len);
		return -1;
	}
	struct record *rec = record_find(nd, name);
	if (!rec) {
		if (nd->records == SIM_DISK_RECORDS_MAX) {
			sim_fail(s, "more than %d disk records on node %u", SIM_DISK_RECORDS_MAX, node);
			return -1;
		}
		rec = &nd->disk[nd->records++];
		memset(rec, 0, sizeof(*rec));
		snprintf(rec->name, sizeof rec->name, "%s", name);
	}
	rec->cur_exists = 1;
	rec->cur_len = (uint32_t)len;
	memcpy(rec->cur, data, len);
	return 0;
}

int sim_disk_read(const struct sim *s, uint32_t node, const char *name, void *buf, size_t cap)
{
	const struct record *rec = record_find(&s->nodes[node], name);
	if (!rec || !rec->cur_exists) return -1;
	size_t n = rec->cur_len < cap ? rec->cur_len : cap;
	memcpy(buf, rec->cur, n);
	return (int)n;
}

void sim_disk_latency(struct sim *s, uint32_t min_ms, uint32_t max_ms)
{
	assert(min_ms <= max_ms);
	s->fsync_min_ms = min_ms;
	s->fsync_max_ms = max_ms;
}

uint64_t sim_disk_fsync(struct sim *s, uint32_t node)
{
	struct node *nd = &s->nodes[node];
	struct disk_sync *sy = xmalloc(sizeof(*sy));
	sy->id = ++s->sync_seq;
	sy->epoch = nd->epoch;
	sy->count = nd->records;
	memcpy(sy->snap, nd->disk, nd->records * sizeof(struct record));
	if (s->fsync_min_ms == UINT32_MAX) { /* a disk that never completes */
		uint64_t id = sy->id;
		free(sy);
		return id;
	}
	uint32_t lat = s->fsync_min_ms + rng_below(&s->disk_rng, s->fsync_max_ms - s->fsync_min_ms + 1);
	heap_push(s, (struct event){.time_ms = s->now + lat, .kind = EV_FSYNC, .node = node, .p = sy});
	return sy->id;
}

static void fsync_done(struct sim *s, uint32_t node, struct disk_sync *sy)
{
	struct node *nd = &s->nodes[node];
	if (sy->epoch != nd->epoch) return; /* the node crashed before the fsync completed */
	for (uint32_t r = 0; r < sy->count; r++) {
		struct record *rec = record_find(nd, sy->snap[r].name);
		assert(rec);
		rec->dur_exists = sy->snap[r].cur_exists;
		rec->dur_len = sy->snap[r].cur_len;
		memcpy(rec->dur, sy->snap[r].cur, rec->dur_len);
	}
	if (nd->up && s->d->synced) s->d->synced(nd->core, sy->id);
}

/* ---- invariants and failures ---- */

static void print_failure(const struct sim_run *run, const char *why)
{
	g_failures++;
	fprintf(stderr, "FAIL scenario=%s n=%u seed=%" PRIu64 ": %s\n", run->scenario, run->n, run->seed, why);
	fprintf(stderr, "  reproduce: chorus_sim --scenario %s --n %u --seed %" PRIu64, run->scenario, run->n,
	        run->seed);
	if (run->loss_pct) fprintf(stderr, " --loss %u", run->loss_pct);
	fprintf(stderr, "\n");
}

void sim_fail(struct sim *s, const char *fmt, ...)
{
	char why[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	if (s->failed) return; /* the first failure is the one to replay */
	s->failed = 1;
	char at[600];
	snprintf(at, sizeof at, "%s (t=%" PRIu64 " ms)", why, s->now);
	print_failure(&s->run, at);
}

void sim_fail_run(const struct sim_run *run, const char *fmt, ...)
{
	char why[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	print_failure(run, why);
}

void sim_check_add(struct sim *s, const char *name, sim_check_fn fn, void *ctx, uint64_t every_ms)
{
	assert(s->check_count < SIM_CHECKS_MAX);
	s->checks[s->check_count++] =
		(struct check){.name = name, .fn = fn, .ctx = ctx, .every_ms = every_ms, .next_ms = s->now + every_ms};
}

static int run_check(struct sim *s, struct check *c, uint32_t node)
{
	char why[400] = "";
	if (c->fn(s, c->ctx, node, why, sizeof why) == 0) return 0;
	sim_fail(s, "invariant %s: %s", c->name, why);
	return -1;
}

static void checks_after_step(struct sim *s, uint32_t node)
{
	for (uint32_t i = 0; i < s->check_count && !s->failed; i++) {
		struct check *c = &s->checks[i];
		if (c->every_ms == 0) {
			run_check(s, c, node);
		} else if (s->now >= c->next_ms) {
			c->next_ms = s->now + c->every_ms;
			run_check(s, c, SIM_NONE);
		}
	}
}

int sim_check_all(struct sim *s)
{
	for (uint32_t i = 0; i < s->check_count && !s->failed; i++) run_check(s, &s->checks[i], SIM_NONE);
	return s->failed ? -1 : 0;
}

/* ---- running ---- */

int sim_run_until(struct sim *s, uint64_t t)
{
	while (!s->failed && s->len && s->e[0].time_ms <= t) {
		struct event ev = heap_pop(s);
		s->now = ev.time_ms;
		struct node *nd = &s->nodes[ev.node];
		switch (ev.kind) {
		case EV_TICK:
			if (!nd->up || ev.time_ms != nd->tick_at) continue;
			nd->tick_at = UINT64_MAX;
			s->d->tick(nd->core, sim_node_clock(s, ev.node));
			sim_node_poke(s, ev.node);
			break;
		case EV_DELIVER:
			if (nd->up) {
				int rc = s->d->on_message(nd->core, sim_node_clock(s, ev.node), ev.from, ev.p, ev.len);
				if (rc) sim_fail(s, "%s: node %u refused a message from node %u (%d): a message a core built",
				                 s->d->name, ev.node, ev.from, rc);
				sim_node_poke(s, ev.node);
			}
			break;
		case EV_FSYNC:
			fsync_done(s, ev.node, ev.p);
			break;
		default:
			assert(0);
		}
		event_free(&ev);
		checks_after_step(s, ev.node);
	}
	if (!s->failed) s->now = t;
	return s->failed ? -1 : 0;
}

int sim_run_for(struct sim *s, uint64_t ms) { return sim_run_until(s, s->now + ms); }

/* ---- statistics ---- */

void sim_sample_add(struct sim_samples *s, double v)
{
	if (s->n < SIM_SAMPLES_MAX) s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double sim_pct(struct sim_samples *s, double p)
{
	if (!s->n) return -1;
	qsort(s->v, s->n, sizeof(double), cmp_double);
	uint32_t r = (uint32_t)(p / 100.0 * s->n + 0.999999);
	if (r < 1) r = 1;
	if (r > s->n) r = s->n;
	return s->v[r - 1];
}

uint64_t sim_derive_seed(uint64_t seed, uint32_t scenario, uint32_t n, uint32_t run)
{
	uint64_t x = seed ^ ((uint64_t)scenario << 56) ^ ((uint64_t)n << 24) ^ run;
	rng_splitmix64(&x);
	return rng_splitmix64(&x);
}
