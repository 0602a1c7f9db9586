/*
 * sim.c - deterministic simulator of SWIM membership (node/core/swim.c).
 *
 * Runs N nodes in one process, each with its own `struct swim`, on a virtual
 * clock and a virtual network (latency, loss, duplication, partitions). One
 * seed drives everything: the network, the node ids and every node's PRNG
 * seed, so a failing run replays exactly from the seed it prints.
 *
 * The event queue is a binary heap of (time, insertion order) so equal
 * times are processed in a fixed order. Each node has at most one live
 * tick event, scheduled at swim_next_deadline_ms(); superseded ticks stay
 * in the heap and are skipped when popped. Messages are deep-copied into
 * one allocation each when sent (the shell's "encoding") and rebuilt into a
 * `struct swim_msg` on delivery.
 *
 * Scenarios (asserted invariants; exit 1 with the seed on violation):
 *   detect     a killed node is declared dead by every alive member;
 *              measures detection and dissemination times
 *   partition  two halves split until each declares the other dead, then
 *              heal; every view converges to the full alive set
 *   loss       no live member is declared dead at 5% and 10% message loss
 *              (20% is measured and reported only)
 *   join       nodes join through one seed that comes up late (backoff)
 *   leave      a leaving node is marked left, never dead, by everyone
 *   restart    a killed node restarts with the same id and a higher
 *              incarnation, rejoins through a seed, is alive everywhere
 * plus messages per member per period, which must stay flat in N.
 *
 * Usage: chorus_sim [--ci] [--big] [--seed S] [--scenario NAME --n N [--loss PCT]] [-v]
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/swim.h"

#define PERIOD_MS 200
#define PROBE_TIMEOUT_MS 100

/* ---- PRNG (splitmix64 seeding xoshiro256**) ---- */

struct rng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

static uint32_t rng_below(struct rng *r, uint32_t n) { return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32); }
/* true with probability ppm / 1,000,000 */
static int rng_chance_ppm(struct rng *r, uint32_t ppm) { return rng_below(r, 1000000) < ppm; }

/* ---- wire copies of messages ---- */

struct wire {
	uint8_t type, join;
	uint16_t proto_version;
	uint32_t seq;
	uint8_t from[SWIM_ID_BYTES], target[SWIM_ID_BYTES];
	const char *from_addr, *target_addr;
	uint32_t update_count, state_count;
	struct swim_update *u; /* update_count piggybacked, then state_count states */
};

static size_t str_bytes(const char *p) { return p ? strlen(p) + 1 : 0; }

static size_t update_extra(const struct swim_update *u)
{
	size_t n = str_bytes(u->name) + str_bytes(u->addr) + u->tag_count * sizeof(char *);
	for (uint8_t i = 0; i < u->tag_count; i++) n += str_bytes(u->tags[i]);
	return n;
}

static char *copy_str(char **area, const char *p)
{
	if (!p) return NULL;
	size_t l = strlen(p) + 1;
	char *d = *area;
	memcpy(d, p, l);
	*area += l;
	return d;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p) {
		fprintf(stderr, "sim: out of memory (%zu bytes)\n", n);
		exit(2);
	}
	return p;
}

static struct wire *wire_pack(const struct swim_msg *m)
{
	uint32_t total = m->update_count + m->state_count;
	size_t extra = str_bytes(m->from_addr) + str_bytes(m->target_addr);
	for (uint32_t i = 0; i < m->update_count; i++) extra += update_extra(&m->updates[i]);
	for (uint32_t i = 0; i < m->state_count; i++) extra += update_extra(&m->states[i]);
	size_t head = sizeof(struct wire) + total * sizeof(struct swim_update);
	struct wire *w = xmalloc(head + extra);
	char *area = (char *)w + head;
	w->type = m->type;
	w->join = m->join;
	w->proto_version = m->proto_version;
	w->seq = m->seq;
	memcpy(w->from, m->from, SWIM_ID_BYTES);
	memcpy(w->target, m->target, SWIM_ID_BYTES);
	w->update_count = m->update_count;
	w->state_count = m->state_count;
	w->u = (struct swim_update *)(void *)(w + 1);
	/* tag pointer arrays first (pointer-aligned), strings after */
	char **ptr_area = (char **)(void *)area;
	size_t ptrs = 0;
	for (uint32_t i = 0; i < total; i++) {
		const struct swim_update *src = i < m->update_count ? &m->updates[i] : &m->states[i - m->update_count];
		ptrs += src->tag_count;
	}
	char *sarea = area + ptrs * sizeof(char *);
	w->from_addr = copy_str(&sarea, m->from_addr);
	w->target_addr = copy_str(&sarea, m->target_addr);
	for (uint32_t i = 0; i < total; i++) {
		const struct swim_update *src = i < m->update_count ? &m->updates[i] : &m->states[i - m->update_count];
		struct swim_update *d = &w->u[i];
		*d = *src;
		d->name = copy_str(&sarea, src->name);
		d->addr = copy_str(&sarea, src->addr);
		if (src->tag_count) {
			char **tp = ptr_area;
			ptr_area += src->tag_count;
			for (uint8_t t = 0; t < src->tag_count; t++) tp[t] = copy_str(&sarea, src->tags[t]);
			d->tags = (const char *const *)tp;
		} else {
			d->tags = NULL;
		}
	}
	return w;
}

static struct swim_msg scratch_msg;

static const struct swim_msg *wire_unpack(const struct wire *w)
{
	struct swim_msg *m = &scratch_msg;
	m->type = w->type;
	m->join = w->join;
	m->proto_version = w->proto_version;
	m->seq = w->seq;
	memcpy(m->from, w->from, SWIM_ID_BYTES);
	memcpy(m->target, w->target, SWIM_ID_BYTES);
	m->from_addr = w->from_addr;
	m->target_addr = w->target_addr;
	m->update_count = w->update_count;
	memcpy(m->updates, w->u, w->update_count * sizeof(struct swim_update));
	m->state_count = w->state_count;
	m->states = w->state_count ? w->u + w->update_count : NULL;
	return m;
}

/* ---- the event queue: a binary heap ordered by (time, order) ---- */

enum { EV_TICK = 1, EV_DELIVER = 2 };

struct event {
	uint64_t time_ms;
	uint64_t order;
	uint32_t kind, node;
	struct wire *w;
};

struct heap {
	struct event *e;
	size_t len, cap;
	uint64_t order;
};

static int ev_less(const struct event *a, const struct event *b)
{
	return a->time_ms < b->time_ms || (a->time_ms == b->time_ms && a->order < b->order);
}

static void heap_push(struct heap *h, struct event ev)
{
	if (h->len == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 1024;
		h->e = realloc(h->e, h->cap * sizeof(*h->e));
		if (!h->e) {
			fprintf(stderr, "sim: out of memory (heap)\n");
			exit(2);
		}
	}
	ev.order = h->order++;
	size_t i = h->len++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!ev_less(&ev, &h->e[p])) break;
		h->e[i] = h->e[p];
		i = p;
	}
	h->e[i] = ev;
}

static struct event heap_pop(struct heap *h)
{
	struct event top = h->e[0], last = h->e[--h->len];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->len) break;
		if (c + 1 < h->len && ev_less(&h->e[c + 1], &h->e[c])) c++;
		if (!ev_less(&h->e[c], &last)) break;
		h->e[i] = h->e[c];
		i = c;
	}
	if (h->len) h->e[i] = last;
	return top;
}

/* ---- the simulated cluster ---- */

struct node {
	struct swim *s;
	int up;
	uint64_t tick_at;
	uint8_t side;
	uint8_t id[SWIM_ID_BYTES];
	char name[24], addr[24];
	uint32_t last_incarnation; /* "persisted" by the sim on kill */
	uint64_t killed_at;        /* 0 = not killed */
	uint64_t first_suspect_at, first_dead_at;
	uint32_t dead_by;          /* dead events about this node from others */
	uint32_t left_by;
	int falsely_dead;          /* declared dead while up */
};

struct sim {
	struct rng rng;
	uint64_t seed;
	uint32_t n;
	struct node *nodes;
	struct heap heap;
	uint64_t now;
	/* network */
	uint32_t loss_ppm, dup_ppm;
	int partitioned;
	/* measurements */
	uint64_t sent;
	uint64_t false_dead_events;
	uint32_t false_dead_members;
	int verbose;
	uint32_t trace; /* node index + 1 whose view changes are printed (SIM_TRACE) */
};

static struct sim G;
static const char *const TAGS_A[] = {"zone-a", "ssd"};
static const char *const TAGS_B[] = {"zone-b"};

static uint32_t node_of_id(const uint8_t *id)
{
	uint32_t i;
	memcpy(&i, id + 8, 4);
	return i;
}

static uint32_t node_of_addr(const char *addr)
{
	if (strncmp(addr, "s:", 2) != 0) return UINT32_MAX;
	char *end;
	unsigned long v = strtoul(addr + 2, &end, 10);
	return *end || v >= G.n ? UINT32_MAX : (uint32_t)v;
}

static void resched(uint32_t i)
{
	struct node *nd = &G.nodes[i];
	if (!nd->up) return;
	uint64_t d = swim_next_deadline_ms(nd->s);
	if (d == UINT64_MAX) return;
	if (d < G.now) d = G.now;
	if (d < nd->tick_at) {
		nd->tick_at = d;
		heap_push(&G.heap, (struct event){.time_ms = d, .kind = EV_TICK, .node = i});
	}
}

static uint32_t latency_ms(void)
{
	/* LAN-like: mostly 1-3 ms, a 10% tail up to 23 ms */
	uint32_t l = 1 + rng_below(&G.rng, 3);
	if (rng_below(&G.rng, 10) == 0) l += rng_below(&G.rng, 21);
	return l;
}

static void fx_send(void *ctx, const char *addr, const struct swim_msg *m)
{
	struct node *src = ctx;
	uint32_t dst = node_of_addr(addr);
	G.sent++;
	if (dst == UINT32_MAX) return;
	if (G.partitioned && src->side != G.nodes[dst].side) return;
	if (rng_chance_ppm(&G.rng, G.loss_ppm)) return;
	int copies = 1 + rng_chance_ppm(&G.rng, G.dup_ppm);
	for (int c = 0; c < copies; c++) {
		struct event ev = {.time_ms = G.now + latency_ms(), .kind = EV_DELIVER, .node = dst, .w = wire_pack(m)};
		heap_push(&G.heap, ev);
	}
}

static void fx_event(void *ctx, int event, const struct swim_member *m, int old_state)
{
	struct node *obs = ctx;
	(void)obs;
	uint32_t subj = node_of_id(m->id);
	if (subj >= G.n) return;
	struct node *sn = &G.nodes[subj];
	if (G.trace == subj + 1)
		fprintf(stderr, "t=%" PRIu64 " %s sees %s %s inc %u (event %d, was %s)\n", G.now, obs->name, sn->name,
		        swim_state_name(m->state), m->incarnation, event, swim_state_name(old_state));
	if (event == SWIM_EV_STATE) {
		if (m->state == SWIM_SUSPECT && sn->killed_at && !sn->first_suspect_at) sn->first_suspect_at = G.now;
		if (m->state == SWIM_DEAD && old_state != SWIM_DEAD) {
			sn->dead_by++;
			if (sn->killed_at && !sn->first_dead_at) sn->first_dead_at = G.now;
			if (sn->up && !G.partitioned) {
				G.false_dead_events++;
				if (!sn->falsely_dead) G.false_dead_members++;
				sn->falsely_dead = 1;
				if (G.verbose)
					fprintf(stderr, "t=%" PRIu64 " %s declared %s dead (inc %u)\n", G.now, obs->name, sn->name,
					        m->incarnation);
			}
		}
		if (m->state == SWIM_LEFT) sn->left_by++;
	}
}

static struct swim_config node_config(uint32_t i)
{
	struct node *nd = &G.nodes[i];
	struct swim_config c;
	swim_config_defaults(&c);
	memcpy(c.id, nd->id, SWIM_ID_BYTES);
	c.name = nd->name;
	c.addr = nd->addr;
	if (i % 2) {
		c.tags = TAGS_A;
		c.tag_count = 2;
	} else {
		c.tags = TAGS_B;
		c.tag_count = 1;
	}
	c.capacity = 4;
	c.seed = rng_next(&G.rng);
	c.period_ms = PERIOD_MS;
	c.probe_timeout_ms = PROBE_TIMEOUT_MS;
	c.members_max = 16384;
	c.reap_after_ms = 150 * PERIOD_MS;
	c.incarnation = nd->last_incarnation ? nd->last_incarnation + 1 : 0;
	return c;
}

static void node_start(uint32_t i)
{
	struct node *nd = &G.nodes[i];
	struct swim_config c = node_config(i);
	struct swim_effects fx = {.ctx = nd, .send = fx_send, .event = fx_event};
	char err[128];
	if (swim_create(&nd->s, &c, &fx, G.now, err, sizeof err) != 0) {
		fprintf(stderr, "sim: swim_create: %s\n", err);
		exit(2);
	}
	nd->up = 1;
	nd->tick_at = UINT64_MAX;
}

static void node_kill(uint32_t i)
{
	struct node *nd = &G.nodes[i];
	nd->last_incarnation = swim_self_incarnation(nd->s);
	swim_destroy(nd->s);
	nd->s = NULL;
	nd->up = 0;
	nd->killed_at = G.now;
	nd->tick_at = UINT64_MAX;
}

static void run_until(uint64_t t);
static void run_periods(uint32_t p);

static void sim_init(uint32_t n, uint64_t seed)
{
	memset(&G.heap, 0, sizeof G.heap);
	int verbose = G.verbose;
	memset(&G, 0, sizeof G);
	G.verbose = verbose;
	G.seed = seed;
	if (getenv("SIM_TRACE")) G.trace = (uint32_t)strtoul(getenv("SIM_TRACE"), NULL, 10) + 1;
	rng_seed(&G.rng, seed);
	G.n = n;
	G.now = 1000000; /* non-zero start, like a real clock */
	G.nodes = calloc(n, sizeof(*G.nodes));
	if (!G.nodes) exit(2);
	for (uint32_t i = 0; i < n; i++) {
		struct node *nd = &G.nodes[i];
		uint64_t r = rng_next(&G.rng);
		memcpy(nd->id, &r, 8);
		memcpy(nd->id + 8, &i, 4);
		memcpy(nd->id + 12, "SIM!", 4);
		snprintf(nd->name, sizeof nd->name, "n%u", i);
		snprintf(nd->addr, sizeof nd->addr, "s:%u", i);
		nd->tick_at = UINT64_MAX;
	}
}

/* The update a node would gossip about itself right after start. */
static struct swim_update node_update(uint32_t j)
{
	struct node *nd = &G.nodes[j];
	struct swim_update u = {0};
	memcpy(u.id, nd->id, SWIM_ID_BYTES);
	memcpy(u.from, nd->id, SWIM_ID_BYTES);
	u.state = SWIM_ALIVE;
	u.incarnation = 0;
	u.name = nd->name;
	u.addr = nd->addr;
	u.tags = j % 2 ? TAGS_A : TAGS_B;
	u.tag_count = j % 2 ? 2 : 1;
	u.capacity = 4;
	u.proto_version = SWIM_PROTO_VERSION;
	return u;
}

/* Every node starts knowing every other as alive (steady state). The
 * core spreads its first probe over the first period by itself. */
static void sim_bootstrap_all(void)
{
	for (uint32_t i = 0; i < G.n; i++) node_start(i);
	for (uint32_t i = 0; i < G.n; i++) {
		for (uint32_t j = 0; j < G.n; j++) {
			if (i == j) continue;
			struct swim_update u = node_update(j);
			if (swim_add_member(G.nodes[i].s, G.now, &u) != 0) {
				fprintf(stderr, "sim: bootstrap failed\n");
				exit(2);
			}
		}
		resched(i);
	}
	run_periods(1);
}

static void sim_free(void)
{
	while (G.heap.len) {
		struct event ev = heap_pop(&G.heap);
		free(ev.w);
	}
	free(G.heap.e);
	for (uint32_t i = 0; i < G.n; i++) swim_destroy(G.nodes[i].s);
	free(G.nodes);
	G.nodes = NULL;
	G.heap.e = NULL;
}

static void fail_check(int rc, const char *what)
{
	if (rc != 0) {
		fprintf(stderr, "sim: %s returned %d (a message the core built was refused)\n", what, rc);
		exit(1);
	}
}

/* Runs every event up to and including time t. */
static void run_until(uint64_t t)
{
	while (G.heap.len && G.heap.e[0].time_ms <= t) {
		struct event ev = heap_pop(&G.heap);
		G.now = ev.time_ms;
		struct node *nd = &G.nodes[ev.node];
		if (ev.kind == EV_TICK) {
			if (!nd->up || ev.time_ms != nd->tick_at) continue;
			nd->tick_at = UINT64_MAX;
			swim_tick(nd->s, G.now);
			resched(ev.node);
		} else {
			if (nd->up) {
				fail_check(swim_on_message(nd->s, G.now, wire_unpack(ev.w)), "swim_on_message");
				resched(ev.node);
			}
			free(ev.w);
		}
	}
	G.now = t;
}

static void run_periods(uint32_t p) { run_until(G.now + (uint64_t)p * PERIOD_MS); }

/* ---- failures ---- */

struct failure {
	char scenario[16];
	uint32_t n;
	uint64_t seed;
	uint32_t loss_pct;
	char why[256];
};
static int g_failed;

static void failf(const char *scenario, uint32_t n, uint32_t loss_pct, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	fprintf(stderr, "FAIL scenario=%s n=%u seed=%" PRIu64 ": %s\n", scenario, n, G.seed, why);
	fprintf(stderr, "  reproduce: chorus_sim --scenario %s --n %u --seed %" PRIu64, scenario, n, G.seed);
	if (loss_pct) fprintf(stderr, " --loss %u", loss_pct);
	fprintf(stderr, "\n");
	g_failed = 1;
}

/* ---- views ---- */

/* Does node `obs` hold `subj` in a state within mask (bit 31 = unknown)? */
static int view_is(uint32_t obs, uint32_t subj, unsigned mask)
{
	const struct swim_member *m = swim_find(G.nodes[obs].s, G.nodes[subj].id);
	if (!m) return (mask >> 31) & 1;
	return (mask >> m->state) & 1;
}

#define GONE ((1u << SWIM_DEAD) | (1u << SWIM_LEFT) | (1u << 31))

static int all_up_see(uint32_t subj, unsigned mask)
{
	for (uint32_t o = 0; o < G.n; o++)
		if (G.nodes[o].up && o != subj && !view_is(o, subj, mask)) return 0;
	return 1;
}

/* Every up node sees exactly the up nodes as alive (and nothing else live). */
static int views_converged(void)
{
	uint32_t up = 0;
	for (uint32_t i = 0; i < G.n; i++) up += G.nodes[i].up;
	for (uint32_t o = 0; o < G.n; o++) {
		if (!G.nodes[o].up) continue;
		struct swim *s = G.nodes[o].s;
		if (swim_count(s, SWIM_ALIVE) != up || swim_count(s, SWIM_SUSPECT) != 0) return 0;
	}
	for (uint32_t o = 0; o < G.n; o++) {
		if (!G.nodes[o].up) continue;
		for (uint32_t j = 0; j < G.n; j++)
			if (G.nodes[j].up && !view_is(o, j, 1u << SWIM_ALIVE)) return 0;
	}
	return 1;
}

/* ---- statistics ---- */

#define SAMPLES_MAX 256
struct samples {
	double v[SAMPLES_MAX];
	uint32_t n;
};

static void sample_add(struct samples *s, double v)
{
	if (s->n < SAMPLES_MAX) s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* nearest-rank percentile */
static double pct(struct samples *s, double p)
{
	if (!s->n) return -1;
	qsort(s->v, s->n, sizeof(double), cmp_double);
	uint32_t r = (uint32_t)(p / 100.0 * s->n + 0.999999);
	if (r < 1) r = 1;
	if (r > s->n) r = s->n;
	return s->v[r - 1];
}

static uint32_t ilog2_ceil(uint32_t n)
{
	uint32_t e = 0;
	while ((1u << e) < n) e++;
	return e;
}

static uint64_t derive_seed(uint64_t seed, uint32_t scenario, uint32_t n, uint32_t run)
{
	uint64_t x = seed ^ ((uint64_t)scenario << 56) ^ ((uint64_t)n << 24) ^ run;
	splitmix64(&x);
	return splitmix64(&x);
}

/* ---- scenario: detect a killed node (a) and messages per period (d) ---- */

struct detect_result {
	struct samples first_suspect, detect, dissem, total;
	double msgs_per_member_period;
};

static int sc_detect(uint32_t n, uint64_t seed, uint32_t kills, struct detect_result *res)
{
	sim_init(n, seed);
	G.loss_ppm = 10000; /* 1% */
	G.dup_ppm = 10000;
	sim_bootstrap_all();
	run_periods(3);
	uint64_t sent0 = G.sent, t0 = G.now;
	run_periods(10);
	res->msgs_per_member_period = (double)(G.sent - sent0) / n / ((double)(G.now - t0) / PERIOD_MS);
	uint32_t victims[64];
	if (kills > 64) kills = 64;
	if (kills > n / 2) kills = n / 2 ? n / 2 : 1;
	for (uint32_t k = 0; k < kills; k++) {
		uint32_t v;
		do v = rng_below(&G.rng, n);
		while (!G.nodes[v].up);
		victims[k] = v;
		node_kill(v);
		run_periods(3);
	}
	int ok = 1;
	uint32_t done = 0, limit = 400;
	uint64_t all_dead_at[64] = {0};
	for (uint32_t p = 0; p < limit && done < kills; p++) {
		run_periods(1);
		for (uint32_t k = 0; k < kills; k++) {
			if (all_dead_at[k]) continue;
			if (all_up_see(victims[k], GONE)) {
				all_dead_at[k] = G.now;
				done++;
			}
		}
	}
	for (uint32_t k = 0; k < kills; k++) {
		struct node *v = &G.nodes[victims[k]];
		if (!all_dead_at[k]) {
			failf("detect", n, 0, "%s was not declared dead by every alive member within %u periods", v->name,
			      limit);
			ok = 0;
			continue;
		}
		double per = PERIOD_MS;
		sample_add(&res->first_suspect, (double)(v->first_suspect_at - v->killed_at) / per);
		sample_add(&res->detect, (double)(v->first_dead_at - v->killed_at) / per);
		sample_add(&res->dissem, (double)(all_dead_at[k] - v->first_dead_at) / per);
		sample_add(&res->total, (double)(all_dead_at[k] - v->killed_at) / per);
	}
	if (G.false_dead_members) {
		failf("detect", n, 0, "%u live member(s) declared dead at 1%% loss", G.false_dead_members);
		ok = 0;
	}
	sim_free();
	return ok;
}

/* ---- scenario: partition and heal (b) ---- */

static int sc_partition(uint32_t n, uint64_t seed, double *heal_periods, double *split_periods)
{
	sim_init(n, seed);
	G.loss_ppm = 10000;
	sim_bootstrap_all();
	run_periods(5);
	for (uint32_t i = 0; i < n; i++) G.nodes[i].side = (uint8_t)rng_below(&G.rng, 2);
	G.nodes[0].side = 0;
	G.nodes[1].side = 1; /* both halves non-empty */
	G.partitioned = 1;
	uint64_t t_split = G.now;
	/* until each side sees the whole other side gone (or a cap under reap_after) */
	uint32_t cap = 120, p;
	for (p = 0; p < cap; p++) {
		run_periods(1);
		/* cheap count check first, the full O(N^2) check only when it passes */
		uint32_t side_size[2] = {0, 0};
		for (uint32_t i = 0; i < n; i++) side_size[G.nodes[i].side]++;
		int split = 1;
		for (uint32_t o = 0; o < n && split; o++) {
			struct swim *s = G.nodes[o].s;
			uint32_t gone = swim_count(s, SWIM_DEAD) + swim_count(s, SWIM_LEFT) + (n - swim_member_count(s));
			if (gone < side_size[1 - G.nodes[o].side]) split = 0;
		}
		for (uint32_t o = 0; o < n && split; o++)
			for (uint32_t j = 0; j < n && split; j++)
				if (G.nodes[o].side != G.nodes[j].side && !view_is(o, j, GONE)) split = 0;
		if (split) break;
	}
	*split_periods = (double)(G.now - t_split) / PERIOD_MS;
	G.partitioned = 0;
	uint64_t t_heal = G.now;
	int ok = 0;
	uint32_t limit = 600;
	for (p = 0; p < limit; p++) {
		run_periods(1);
		if (views_converged()) {
			ok = 1;
			break;
		}
	}
	*heal_periods = (double)(G.now - t_heal) / PERIOD_MS;
	if (!ok) {
		uint32_t worst = UINT32_MAX;
		for (uint32_t o = 0; o < n; o++) {
			uint32_t a = swim_count(G.nodes[o].s, SWIM_ALIVE);
			if (a < worst) worst = a;
		}
		failf("partition", n, 0, "views did not converge within %u periods of the heal (smallest alive view %u/%u)",
		      limit, worst, n);
	}
	sim_free();
	return ok;
}

/* ---- scenario: false positives under loss (c) ---- */

static int sc_loss(uint32_t n, uint64_t seed, uint32_t loss_pct, uint32_t periods, uint32_t *false_members,
                   int assert_zero)
{
	sim_init(n, seed);
	G.loss_ppm = loss_pct * 10000;
	G.dup_ppm = 10000;
	sim_bootstrap_all();
	run_periods(periods);
	*false_members = G.false_dead_members;
	if (G.verbose) {
		uint64_t probes = 0, failed = 0, suspected = 0, refuted = 0, dead = 0, dropped = 0, q = 0, lhm = 0,
		         nm = 0;
		for (uint32_t i = 0; i < n; i++) {
			const struct swim_stats *st = swim_stats(G.nodes[i].s);
			probes += st->probes;
			failed += st->probes_failed;
			suspected += st->suspected;
			refuted += st->refuted;
			dead += st->declared_dead;
			dropped += st->updates_dropped;
			nm += st->nacks_missed;
			q += swim_queued_updates(G.nodes[i].s);
			lhm += swim_lhm(G.nodes[i].s);
		}
		fprintf(stderr,
		        "probes %" PRIu64 " failed %" PRIu64 " suspected(events) %" PRIu64 " refuted %" PRIu64
		        " dead(events) %" PRIu64 " dropped %" PRIu64 " nacks_missed %" PRIu64 " avg queue %.1f avg lhm %.2f\n",
		        probes, failed, suspected, refuted, dead, dropped, nm, (double)q / n, (double)lhm / n);
	}
	int ok = 1;
	if (assert_zero && G.false_dead_members) {
		failf("loss", n, loss_pct, "%u live member(s) declared dead at %u%% loss", G.false_dead_members, loss_pct);
		ok = 0;
	}
	sim_free();
	return ok;
}

/* ---- scenario: join through a seed that comes up late (backoff) ---- */

static int sc_join(uint32_t n, uint64_t seed, double *converge_periods)
{
	sim_init(n, seed);
	G.loss_ppm = 10000;
	const char *seeds[1] = {"s:0"};
	uint64_t t0 = G.now;
	/* every node but the seed starts within the first 2 periods and joins */
	for (uint32_t i = 1; i < n; i++) {
		run_until(t0 + rng_below(&G.rng, 2 * PERIOD_MS));
		node_start(i);
		if (swim_join(G.nodes[i].s, G.now, seeds, 1) != 0) exit(2);
		resched(i);
	}
	/* the seed comes up 6 periods late: the joiners must be retrying */
	run_until(t0 + 6 * PERIOD_MS);
	node_start(0);
	resched(0);
	int ok = 0;
	uint32_t limit = 600, p;
	for (p = 0; p < limit; p++) {
		run_periods(1);
		if (views_converged()) {
			ok = 1;
			break;
		}
	}
	*converge_periods = (double)(G.now - t0) / PERIOD_MS - 6;
	if (!ok) failf("join", n, 0, "views did not converge within %u periods after the seed came up", limit);
	for (uint32_t i = 1; i < n && ok; i++) {
		if (swim_stats(G.nodes[i].s)->join_attempts < 2) {
			failf("join", n, 0, "%s joined without retrying although the seed was down", G.nodes[i].name);
			ok = 0;
		}
	}
	sim_free();
	return ok;
}

/* ---- scenario: graceful leave ---- */

static int sc_leave(uint32_t n, uint64_t seed, double *periods_out)
{
	sim_init(n, seed);
	G.loss_ppm = 10000;
	sim_bootstrap_all();
	run_periods(5);
	uint32_t v = rng_below(&G.rng, n);
	uint64_t t0 = G.now;
	swim_leave(G.nodes[v].s, G.now);
	resched(v);
	int ok = 0, stopped = 0;
	for (uint32_t p = 0; p < 300; p++) {
		run_periods(1);
		if (!stopped && swim_leave_done(G.nodes[v].s)) {
			G.nodes[v].last_incarnation = swim_self_incarnation(G.nodes[v].s);
			swim_destroy(G.nodes[v].s);
			G.nodes[v].s = NULL;
			G.nodes[v].up = 0;
			stopped = 1;
		}
		if (stopped && all_up_see(v, 1u << SWIM_LEFT)) {
			ok = 1;
			break;
		}
	}
	*periods_out = (double)(G.now - t0) / PERIOD_MS;
	if (!ok) failf("leave", n, 0, "a left member was not marked left by everyone (stopped=%d)", stopped);
	if (G.nodes[v].dead_by) {
		failf("leave", n, 0, "a left member was declared dead %u time(s)", G.nodes[v].dead_by);
		ok = 0;
	}
	sim_free();
	return ok;
}

/* ---- scenario: restart with the same id ---- */

static int sc_restart(uint32_t n, uint64_t seed, double *periods_out)
{
	sim_init(n, seed);
	G.loss_ppm = 10000;
	sim_bootstrap_all();
	run_periods(5);
	uint32_t v = 1 + rng_below(&G.rng, n - 1);
	node_kill(v);
	int ok = 0;
	for (uint32_t p = 0; p < 400 && !ok; p++) {
		run_periods(1);
		ok = all_up_see(v, GONE);
	}
	if (!ok) {
		failf("restart", n, 0, "the killed member was not declared dead");
		sim_free();
		return 0;
	}
	uint32_t dead_inc = G.nodes[v].last_incarnation;
	uint64_t t0 = G.now;
	node_start(v); /* incarnation = persisted + 1 */
	const char *seeds[1] = {"s:0"};
	if (swim_join(G.nodes[v].s, G.now, seeds, 1) != 0) exit(2);
	resched(v);
	ok = 0;
	for (uint32_t p = 0; p < 400 && !ok; p++) {
		run_periods(1);
		ok = views_converged();
	}
	*periods_out = (double)(G.now - t0) / PERIOD_MS;
	if (!ok) failf("restart", n, 0, "the restarted member is not alive in every view");
	if (ok && swim_self_incarnation(G.nodes[v].s) <= dead_inc) {
		failf("restart", n, 0, "restarted incarnation %u is not above %u", swim_self_incarnation(G.nodes[v].s),
		      dead_inc);
		ok = 0;
	}
	sim_free();
	return ok;
}

/* ---- driver ---- */

enum { SC_DETECT = 1, SC_PARTITION, SC_LOSS, SC_JOIN, SC_LEAVE, SC_RESTART };

static int scenario_id(const char *name)
{
	static const char *names[] = {"", "detect", "partition", "loss", "join", "leave", "restart"};
	for (int i = 1; i < 7; i++)
		if (!strcmp(name, names[i])) return i;
	return 0;
}

struct row {
	uint32_t n;
	struct detect_result d;
	uint32_t fp[3];
	int have_partition;
	double heal, split;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void print_table(struct row *rows, uint32_t count)
{
	printf("\n| N | detect p50 / p99 | dead everywhere p50 / p99 | dissemination p50 / p99 (3*log2 N) | "
	       "msgs/member/period | false positives 5%% / 10%% / 20%% loss | partition heal |\n");
	printf("|---|---|---|---|---|---|---|\n");
	for (uint32_t i = 0; i < count; i++) {
		struct row *r = &rows[i];
		double d50 = pct(&r->d.detect, 50), d99 = pct(&r->d.detect, 99);
		double t50 = pct(&r->d.total, 50), t99 = pct(&r->d.total, 99);
		double s50 = pct(&r->d.dissem, 50), s99 = pct(&r->d.dissem, 99);
		printf("| %u | %.1f / %.1f | %.1f / %.1f | %.1f / %.1f (%u) | %.2f | %u / %u / %u | ", r->n, d50, d99, t50,
		       t99, s50, s99, 3 * ilog2_ceil(r->n), r->d.msgs_per_member_period, r->fp[0], r->fp[1], r->fp[2]);
		if (r->have_partition) printf("%.0f periods (split %.0f) |\n", r->heal, r->split);
		else printf("- |\n");
	}
	printf("\nTimes in protocol periods (%d ms). detect = kill to first `dead`; dead everywhere = kill to "
	       "the last alive member marking it dead; dissemination = first `dead` to last. Samples per N: "
	       "see docs/membership.md.\n",
	       PERIOD_MS);
}

static void usage(void)
{
	printf("usage: chorus_sim [--ci] [--big] [--seed S] [-v]\n"
	       "       chorus_sim --scenario detect|partition|loss|join|leave|restart --n N --seed S [--loss PCT]\n"
	       "  --ci     asserting scenarios for N = 10, 100, 1000 and the table (exit 1 on a violation)\n"
	       "  --big    also N = 10,000 in the table (needs ~16 GB of memory and minutes)\n"
	       "  --seed   top-level seed (default 1); every failure prints the seed to reproduce it\n");
}

int main(int argc, char **argv)
{
	uint64_t seed = 1;
	int big = 0;
	const char *scenario = NULL;
	uint32_t one_n = 100, loss_pct = 10;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--ci")) {
			/* the default run is the CI run */
		} else if (!strcmp(argv[i], "--big")) {
			big = 1;
		} else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			seed = strtoull(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--scenario") && i + 1 < argc) {
			scenario = argv[++i];
		} else if (!strcmp(argv[i], "--n") && i + 1 < argc) {
			one_n = (uint32_t)strtoul(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--loss") && i + 1 < argc) {
			loss_pct = (uint32_t)strtoul(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "-v")) {
			G.verbose = 1;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage();
			return 0;
		} else {
			usage();
			return 2;
		}
	}
	if (one_n < 2 || one_n > 16384 || loss_pct > 100) {
		usage();
		return 2;
	}

	if (scenario) {
		/* replay one scenario with the exact seed a failure printed */
		double x, y;
		uint32_t fp;
		struct detect_result d = {0};
		switch (scenario_id(scenario)) {
		case SC_DETECT:
			sc_detect(one_n, seed, one_n >= 1000 ? 10 : one_n >= 100 ? 2 : 1, &d);
			for (uint32_t k = 0; k < d.detect.n; k++)
				printf("kill %u: first suspect %.1f, first dead %.1f, dissemination %.1f, dead everywhere %.1f "
				       "periods\n",
				       k, d.first_suspect.v[k], d.detect.v[k], d.dissem.v[k], d.total.v[k]);
			printf("messages/member/period %.2f\n", d.msgs_per_member_period);
			break;
		case SC_PARTITION: sc_partition(one_n, seed, &x, &y); break;
		case SC_LOSS: sc_loss(one_n, seed, loss_pct, 100, &fp, loss_pct <= 10); break;
		case SC_JOIN: sc_join(one_n, seed, &x); break;
		case SC_LEAVE: sc_leave(one_n, seed, &x); break;
		case SC_RESTART: sc_restart(one_n, seed, &x); break;
		default: usage(); return 2;
		}
		printf("%s n=%u seed=%" PRIu64 ": %s\n", scenario, one_n, seed, g_failed ? "FAILED" : "ok");
		return g_failed ? 1 : 0;
	}

	double t_start = now_s();
	uint32_t sizes[4] = {10, 100, 1000, 10000};
	uint32_t size_count = big ? 4 : 3;
	struct row rows[4];
	memset(rows, 0, sizeof rows);
	printf("chorus_sim seed=%" PRIu64 " period=%d ms probe_timeout=%d ms\n", seed, PERIOD_MS, PROBE_TIMEOUT_MS);
	for (uint32_t si = 0; si < size_count; si++) {
		uint32_t n = sizes[si];
		struct row *r = &rows[si];
		r->n = n;
		double t = now_s();
		/* (a)+(d): detection samples */
		uint32_t runs = n <= 10 ? 10 : n <= 100 ? 5 : 1;
		uint32_t kills = n <= 10 ? 1 : n <= 100 ? 2 : 10;
		for (uint32_t run = 0; run < runs; run++) {
			struct detect_result d = {0};
			sc_detect(n, derive_seed(seed, SC_DETECT, n, run), kills, &d);
			for (uint32_t k = 0; k < d.detect.n; k++) {
				sample_add(&r->d.first_suspect, d.first_suspect.v[k]);
				sample_add(&r->d.detect, d.detect.v[k]);
				sample_add(&r->d.dissem, d.dissem.v[k]);
				sample_add(&r->d.total, d.total.v[k]);
			}
			if (run == 0) r->d.msgs_per_member_period = d.msgs_per_member_period;
		}
		if (n >= 1000) {
			double s99 = pct(&r->d.dissem, 99);
			if (s99 > 3.0 * ilog2_ceil(n))
				failf("detect", n, 0, "dissemination p99 %.1f periods over 3*log2(N) = %u", s99, 3 * ilog2_ceil(n));
		}
		/* (c): false positives */
		uint32_t losses[3] = {5, 10, 20};
		for (int li = 0; li < 3; li++)
			sc_loss(n, derive_seed(seed, SC_LOSS, n, losses[li]), losses[li], n >= 10000 ? 40 : 100, &r->fp[li],
			        losses[li] <= 10);
		/* (b): partition heal, and the membership life cycle */
		if (n <= 1000) {
			r->have_partition = 1;
			sc_partition(n, derive_seed(seed, SC_PARTITION, n, 0), &r->heal, &r->split);
		}
		if (n <= 100) {
			double x;
			sc_join(n, derive_seed(seed, SC_JOIN, n, 0), &x);
			printf("N=%u join via a late seed: all views full %.0f periods after the seed came up\n", n, x);
			sc_leave(n, derive_seed(seed, SC_LEAVE, n, 0), &x);
			printf("N=%u leave: everyone marked it left after %.0f periods\n", n, x);
			sc_restart(n, derive_seed(seed, SC_RESTART, n, 0), &x);
			printf("N=%u restart: alive in every view %.0f periods after the restart\n", n, x);
		}
		printf("N=%u done in %.1f s\n", n, now_s() - t);
		fflush(stdout);
	}
	/* (d): messages per member per period stay flat in N */
	double lo = 1e9, hi = 0;
	for (uint32_t i = 0; i < size_count; i++) {
		double m = rows[i].d.msgs_per_member_period;
		if (m < lo) lo = m;
		if (m > hi) hi = m;
	}
	if (hi > 1.5 * lo) {
		G.seed = seed;
		failf("detect", 0, 0, "messages per member per period not flat in N: %.2f .. %.2f", lo, hi);
	}
	print_table(rows, size_count);
	printf("\nchorus_sim: %s in %.1f s (seed %" PRIu64 ")\n", g_failed ? "FAILED" : "all invariants held",
	       now_s() - t_start, seed);
	return g_failed ? 1 : 0;
}
