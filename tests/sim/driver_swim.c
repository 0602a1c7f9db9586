/*
 * driver_swim.c - SWIM membership as a simulator driver (see driver_swim.h).
 *
 * Owns: the per-node adapter (core + persisted incarnation), the send and
 * event effects, the string interner shared by every node of a world, and
 * the world's record of who declared whom suspect or dead.
 *
 * The draw order from the run PRNG is the old SWIM-only simulator's (ids
 * at world creation, a core seed at each start, then the network's), so
 * a seed replays the same runs it did before the split.
 */
#include "driver_swim.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/gossip.h"
#include "lib/err.h"

static const char *const TAGS_A[] = {"zone-a", "ssd"};
static const char *const TAGS_B[] = {"zone-b"};

/* ---- the interner: one block per distinct (name, addr, tags) ---- */

struct ientry {
	struct ientry *next;
	uint64_t hash;
	uint32_t refs, bytes;
	uint8_t tag_count;
	/* the block follows, pointer-aligned: [tag pointers][name][addr][tags] */
};

struct interner {
	struct ientry **b;
	uint64_t buckets, count, bytes;
};

static char *entry_block(struct ientry *e) { return (char *)(e + 1); }

static uint64_t fnv(uint64_t h, const char *p)
{
	for (; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
	return (h ^ 0xff) * 0x100000001b3ULL; /* the NUL separates fields */
}

static uint64_t content_hash(const char *name, const char *addr, const char *const *tags, uint8_t tag_count)
{
	uint64_t h = fnv(fnv(0xcbf29ce484222325ULL, name), addr);
	for (uint8_t i = 0; i < tag_count; i++) h = fnv(h, tags[i]);
	return h ^ tag_count;
}

static int entry_is(struct ientry *e, const char *name, const char *addr, const char *const *tags,
                    uint8_t tag_count)
{
	if (e->tag_count != tag_count) return 0;
	char *blk = entry_block(e);
	const char *n = blk + tag_count * sizeof(char *);
	const char *a = n + strlen(n) + 1;
	if (strcmp(n, name) || strcmp(a, addr)) return 0;
	for (uint8_t i = 0; i < tag_count; i++)
		if (strcmp(((char **)(void *)blk)[i], tags[i])) return 0;
	return 1;
}

static void interner_grow(struct interner *in)
{
	uint64_t nb = in->buckets ? in->buckets * 2 : 1024;
	struct ientry **b = calloc(nb, sizeof(*b));
	if (!b) return; /* longer chains, still correct */
	for (uint64_t i = 0; i < in->buckets; i++) {
		struct ientry *e = in->b[i];
		while (e) {
			struct ientry *next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
			e = next;
		}
	}
	free(in->b);
	in->b = b;
	in->buckets = nb;
}

static const char *const *intern_get(void *ctx, const char *name, const char *addr, const char *const *tags,
                                     uint8_t tag_count, const char **name_out, const char **addr_out)
{
	struct interner *in = ctx;
	uint64_t h = content_hash(name, addr, tags, tag_count);
	if (in->count >= in->buckets) interner_grow(in);
	if (!in->buckets) return NULL;
	struct ientry *e = in->b[h & (in->buckets - 1)];
	while (e && !(e->hash == h && entry_is(e, name, addr, tags, tag_count))) e = e->next;
	if (!e) {
		size_t ptrs = tag_count * sizeof(char *), nl = strlen(name) + 1, al = strlen(addr) + 1, tl = 0;
		for (uint8_t i = 0; i < tag_count; i++) tl += strlen(tags[i]) + 1;
		e = malloc(sizeof(*e) + ptrs + nl + al + tl);
		if (!e) return NULL;
		e->hash = h;
		e->refs = 0;
		e->bytes = (uint32_t)(sizeof(*e) + ptrs + nl + al + tl);
		e->tag_count = tag_count;
		char *blk = entry_block(e), *p = blk + ptrs;
		memcpy(p, name, nl);
		memcpy(p + nl, addr, al);
		p += nl + al;
		for (uint8_t i = 0; i < tag_count; i++) {
			size_t l = strlen(tags[i]) + 1;
			memcpy(p, tags[i], l);
			((char **)(void *)blk)[i] = p;
			p += l;
		}
		e->next = in->b[h & (in->buckets - 1)];
		in->b[h & (in->buckets - 1)] = e;
		in->count++;
		in->bytes += e->bytes;
	}
	e->refs++;
	*name_out = entry_block(e) + tag_count * sizeof(char *);
	*addr_out = *name_out + strlen(*name_out) + 1;
	return (const char *const *)(void *)entry_block(e);
}

static void intern_put(void *ctx, const char *const *block)
{
	struct interner *in = ctx;
	struct ientry *e = (struct ientry *)(void *)((char *)(void *)block - sizeof(struct ientry));
	assert(e->refs > 0);
	if (--e->refs) return;
	struct ientry **pp = &in->b[e->hash & (in->buckets - 1)];
	while (*pp != e) pp = &(*pp)->next;
	*pp = e->next;
	in->count--;
	in->bytes -= e->bytes;
	free(e);
}

void swim_world_interned(const struct swim_world *w, uint64_t *blocks, uint64_t *bytes)
{
	*blocks = w->in->count;
	*bytes = w->in->bytes;
}

/* ---- the per-node adapter ---- */

struct swim_node {
	struct swim_world *w;
	uint32_t node;
	struct swim *s;
	uint32_t written_inc; /* last incarnation written to the disk */
	int64_t skew_ms;      /* wall - mono at the last call (wall_clock_bug only) */
};

/* The time the core is given: its node's monotonic clock. */
static uint64_t core_time(struct swim_node *sn, struct now now)
{
	sn->skew_ms = (int64_t)now.wall_ms - (int64_t)now.mono_ms;
	return sn->w->wall_clock_bug ? now.wall_ms : now.mono_ms;
}

static uint32_t node_of_id(const uint8_t *id)
{
	uint32_t i;
	memcpy(&i, id + 8, 4);
	return i;
}

static uint32_t node_of_addr(const struct swim_world *w, const char *addr)
{
	if (strncmp(addr, "s:", 2) != 0) return UINT32_MAX;
	char *end;
	unsigned long v = strtoul(addr + 2, &end, 10);
	return *end || v >= w->n ? UINT32_MAX : (uint32_t)v;
}

/* chorusd persists the incarnation whenever it changes; so does the driver */
static void persist_incarnation(struct swim_node *sn)
{
	uint32_t inc = swim_self_incarnation(sn->s);
	if (inc == sn->written_inc) return;
	uint8_t b[4] = {(uint8_t)inc, (uint8_t)(inc >> 8), (uint8_t)(inc >> 16), (uint8_t)(inc >> 24)};
	if (sim_disk_write(sn->w->sim, sn->node, "incarnation", b, sizeof b) == 0) {
		sn->written_inc = inc;
		(void)sim_disk_fsync(sn->w->sim, sn->node);
	}
}

static void fx_send(void *ctx, const char *addr, const struct swim_msg *m)
{
	struct swim_node *sn = ctx;
	uint8_t *bytes;
	size_t len;
	int rc = gossip_encode(m, &bytes, &len);
	if (rc) {
		sim_fail(sn->w->sim, "gossip_encode: %s", err_name(rc));
		return;
	}
	sim_send(sn->w->sim, sn->node, node_of_addr(sn->w, addr), bytes, len);
	free(bytes);
}

static void fx_event(void *ctx, int event, const struct swim_member *m, int old_state)
{
	struct swim_node *obs = ctx;
	struct swim_world *w = obs->w;
	uint32_t subj = node_of_id(m->id);
	if (subj >= w->n) return;
	struct swim_sim_node *sn = &w->nodes[subj];
	uint64_t now = sim_now(w->sim);
	if (w->trace == subj + 1)
		fprintf(stderr, "t=%" PRIu64 " n%u sees %s %s inc %u (event %d, was %s)\n", now, obs->node, sn->name,
		        swim_state_name(m->state), m->incarnation, event, swim_state_name(old_state));
	if (event != SWIM_EV_STATE) return;
	int whole = !sim_net_cut_any(w->sim), up = sim_node_up(w->sim, subj);
	if (m->state == SWIM_SUSPECT) {
		if (sn->killed_at && !sn->first_suspect_at) sn->first_suspect_at = now;
		if (up && whole) w->false_suspect_events++;
	}
	if (m->state == SWIM_DEAD && old_state != SWIM_DEAD) {
		sn->dead_by++;
		if (up) {
			w->dead_of_up_events++;
			/* Counted while the cut lasts. After the heal the isolated
			 * node's stale verdicts (it could hear nobody's answers)
			 * reach the others and may show a member dead until it
			 * refutes with a higher incarnation (SWIM §4.2): expected,
			 * and convergence is checked separately. */
			if (w->isolated != UINT32_MAX && obs->node != w->isolated && subj != w->isolated)
				w->collateral_dead_events++;
		}
		if (sn->killed_at && !sn->first_dead_at) sn->first_dead_at = now;
		if (up && whole) {
			w->false_dead_events++;
			if (!sn->falsely_dead) w->false_dead_members++;
			sn->falsely_dead = 1;
			if (sim_run_info(w->sim)->verbose)
				fprintf(stderr, "t=%" PRIu64 " n%u declared %s dead (inc %u)\n", now, obs->node, sn->name,
				        m->incarnation);
		}
	}
	if (m->state == SWIM_LEFT) sn->left_by++;
}

static void *drv_create(struct sim *s, uint32_t node, struct now now)
{
	struct swim_world *w = sim_driver_ctx(s);
	struct swim_sim_node *nd = &w->nodes[node];
	struct swim_node *sn = calloc(1, sizeof(*sn));
	if (!sn) return NULL;
	sn->w = w;
	sn->node = node;
	struct swim_config c;
	swim_config_defaults(&c);
	memcpy(c.id, nd->id, SWIM_ID_BYTES);
	c.name = nd->name;
	c.addr = nd->addr;
	c.tags = node % 2 ? TAGS_A : TAGS_B;
	c.tag_count = node % 2 ? 2 : 1;
	c.capacity = 4;
	c.seed = rng_next(sim_rng(s));
	c.period_ms = SWIM_SIM_PERIOD_MS;
	c.probe_timeout_ms = SWIM_SIM_PROBE_TIMEOUT_MS;
	c.members_max = w->members_max;
	c.reap_after_ms = (w->reap_after_periods ? w->reap_after_periods : 150) * SWIM_SIM_PERIOD_MS;
	c.interner = &w->interner;
	/* restart: one above what survived on the disk */
	uint8_t b[4];
	int got = sim_disk_read(s, node, "incarnation", b, sizeof b);
	if (got == 4) c.incarnation = ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24) + 1;
	struct swim_effects fx = {.ctx = sn, .send = fx_send, .event = fx_event};
	char err[128];
	if (swim_create(&sn->s, &c, &fx, core_time(sn, now), err, sizeof err) != 0) {
		fprintf(stderr, "sim: swim_create: %s\n", err);
		free(sn);
		return NULL;
	}
	sn->written_inc = got == 4 ? c.incarnation - 1 : UINT32_MAX;
	persist_incarnation(sn);
	return sn;
}

static void drv_destroy(void *core)
{
	struct swim_node *sn = core;
	swim_destroy(sn->s);
	free(sn);
}

static uint64_t drv_next_deadline(void *core)
{
	struct swim_node *sn = core;
	uint64_t d = swim_next_deadline_ms(sn->s);
	if (!sn->w->wall_clock_bug || d == UINT64_MAX) return d;
	return (uint64_t)((int64_t)d - sn->skew_ms); /* back to node monotonic */
}

static void drv_tick(void *core, struct now now)
{
	struct swim_node *sn = core;
	/* SWIM runs on monotonic time only (wall_clock_bug: the mistake the
	 * clockjump scenario exists to catch) */
	swim_tick(sn->s, core_time(sn, now));
	persist_incarnation(sn);
}

static int drv_on_message(void *core, struct now now, uint32_t from, const uint8_t *bytes, size_t len)
{
	(void)from;
	struct swim_node *sn = core;
	struct gossip_in in;
	int rc = gossip_decode(&in, bytes, len, sn->w->members_max);
	if (rc) return rc;
	rc = swim_on_message(sn->s, core_time(sn, now), &in.msg);
	gossip_in_release(&in);
	persist_incarnation(sn);
	return rc;
}

const struct sim_driver sim_driver_swim = {
	.name = "swim",
	.create = drv_create,
	.destroy = drv_destroy,
	.next_deadline_ms = drv_next_deadline,
	.tick = drv_tick,
	.on_message = drv_on_message,
};

/* ---- the world ---- */

struct swim_world *swim_world_new(const struct sim_run *run, uint32_t members_max)
{
	struct swim_world *w = calloc(1, sizeof(*w));
	struct interner *in = calloc(1, sizeof(*in));
	if (!w || !in) exit(2);
	w->n = run->n;
	w->members_max = members_max ? members_max : 16384;
	w->in = in;
	w->interner = (struct swim_interner){.ctx = in, .get = intern_get, .put = intern_put};
	w->isolated = UINT32_MAX;
	w->was_isolated = UINT32_MAX;
	w->wall_clock_bug = getenv("SIM_SWIM_WALL_CLOCK_BUG") != NULL;
	if (getenv("SIM_TRACE")) w->trace = (uint32_t)strtoul(getenv("SIM_TRACE"), NULL, 10) + 1;
	w->sim = sim_create(&sim_driver_swim, w, run);
	w->nodes = calloc(w->n, sizeof(*w->nodes));
	if (!w->nodes) exit(2);
	for (uint32_t i = 0; i < w->n; i++) {
		struct swim_sim_node *nd = &w->nodes[i];
		uint64_t r = rng_next(sim_rng(w->sim));
		memcpy(nd->id, &r, 8);
		memcpy(nd->id + 8, &i, 4);
		memcpy(nd->id + 12, "SIM!", 4);
		snprintf(nd->name, sizeof nd->name, "n%u", i);
		snprintf(nd->addr, sizeof nd->addr, "s:%u", i);
	}
	return w;
}

void swim_world_free(struct swim_world *w)
{
	sim_destroy(w->sim); /* destroys the cores, which give their strings back */
	assert(w->in->count == 0);
	free(w->in->b);
	free(w->in);
	free(w->nodes);
	free(w);
}

struct swim *swim_world_core(const struct swim_world *w, uint32_t node)
{
	struct swim_node *sn = sim_node_core(w->sim, node);
	return sn ? sn->s : NULL;
}

void swim_world_start(struct swim_world *w, uint32_t node)
{
	(void)sim_node_start(w->sim, node); /* the caller pokes (after a join, say) */
}

void swim_world_kill(struct swim_world *w, uint32_t node)
{
	struct swim_sim_node *nd = &w->nodes[node];
	nd->last_incarnation = swim_self_incarnation(swim_world_core(w, node));
	sim_node_crash(w->sim, node);
	nd->killed_at = sim_now(w->sim);
}

int swim_world_join(struct swim_world *w, uint32_t node, uint32_t seed_node)
{
	struct swim_node *sn = sim_node_core(w->sim, node);
	const char *seeds[1] = {w->nodes[seed_node].addr};
	int rc = swim_join(sn->s, core_time(sn, sim_node_clock(w->sim, node)), seeds, 1);
	persist_incarnation(sn);
	sim_node_poke(w->sim, node);
	return rc;
}

void swim_world_leave(struct swim_world *w, uint32_t node)
{
	struct swim_node *sn = sim_node_core(w->sim, node);
	(void)swim_leave(sn->s, core_time(sn, sim_node_clock(w->sim, node)));
	persist_incarnation(sn);
	sim_node_poke(w->sim, node);
}

void swim_world_bootstrap_all(struct swim_world *w)
{
	for (uint32_t i = 0; i < w->n; i++)
		if (sim_node_start(w->sim, i) != 0) return;
	for (uint32_t i = 0; i < w->n; i++) {
		struct swim *s = swim_world_core(w, i);
		uint64_t now = core_time(sim_node_core(w->sim, i), sim_node_clock(w->sim, i));
		for (uint32_t j = 0; j < w->n; j++) {
			if (i == j) continue;
			struct swim_sim_node *nd = &w->nodes[j];
			struct swim_update u = {0};
			memcpy(u.id, nd->id, SWIM_ID_BYTES);
			memcpy(u.from, nd->id, SWIM_ID_BYTES);
			u.state = SWIM_ALIVE;
			u.name = nd->name;
			u.addr = nd->addr;
			u.tags = j % 2 ? TAGS_A : TAGS_B;
			u.tag_count = j % 2 ? 2 : 1;
			u.capacity = 4;
			u.proto_version = SWIM_PROTO_VERSION;
			if (swim_add_member(s, now, &u) != 0) {
				sim_fail(w->sim, "bootstrap: swim_add_member refused member %u at node %u", j, i);
				return;
			}
		}
		sim_node_poke(w->sim, i);
	}
	sim_run_for(w->sim, SWIM_SIM_PERIOD_MS);
}

int swim_world_view_is(const struct swim_world *w, uint32_t obs, uint32_t subj, unsigned mask)
{
	const struct swim_member *m = swim_find(swim_world_core(w, obs), w->nodes[subj].id);
	if (!m) return (mask >> 31) & 1;
	return (mask >> m->state) & 1;
}

int swim_world_all_up_see(const struct swim_world *w, uint32_t subj, unsigned mask)
{
	for (uint32_t o = 0; o < w->n; o++)
		if (sim_node_up(w->sim, o) && o != subj && !swim_world_view_is(w, o, subj, mask)) return 0;
	return 1;
}

int swim_world_converged(const struct swim_world *w)
{
	uint32_t up = 0;
	for (uint32_t i = 0; i < w->n; i++) up += (uint32_t)sim_node_up(w->sim, i);
	for (uint32_t o = 0; o < w->n; o++) {
		if (!sim_node_up(w->sim, o)) continue;
		struct swim *s = swim_world_core(w, o);
		if (swim_count(s, SWIM_ALIVE) != up || swim_count(s, SWIM_SUSPECT) != 0) return 0;
	}
	for (uint32_t o = 0; o < w->n; o++) {
		if (!sim_node_up(w->sim, o)) continue;
		for (uint32_t j = 0; j < w->n; j++)
			if (sim_node_up(w->sim, j) && !swim_world_view_is(w, o, j, 1u << SWIM_ALIVE)) return 0;
	}
	return 1;
}
