/*
 * driver_cache.c - the cache's replication protocol as a simulator driver
 * (see driver_cache.h for what a node does and what is modelled).
 *
 * Owns: the per-node miniature of node/svc/cache_svc.c and cache_sync.c
 * (routing, the primary's writes and quorum reads, the replica side,
 * anti-entropy, hints), its requests (a slot table with per-link limits and
 * timeouts, as the cluster service's peer requests), the membership model,
 * and the world the scenarios inspect. Decisions are crepl's; this file
 * carries them out, as the service does, so that what is simulated is the
 * protocol and not a second version of it.
 *
 * Requests: an id is (generation << 16 | slot). A reply names its request;
 * one for a slot since reused (it timed out) is dropped, as rpc.c drops a
 * late answer. A request whose reply never comes times out: every callback
 * runs exactly once unless the node crashes, which frees everything without
 * calling back (the process is gone).
 */
#include "driver_cache.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chorus.h"
#include "lib/err.h"

struct cnode;

typedef void (*creq_fn)(struct cnode *n, void *arg, int code, const Chorus__Envelope *reply);

struct creq {
	uint32_t gen;                 /* 0 = free */
	uint32_t to;
	uint64_t deadline_ms;         /* node monotonic */
	creq_fn cb;                   /* NULL: no answer wanted (repairs, pushes) */
	void *arg;
	uint32_t live_pos;
};

enum { COP_FORWARD = 1, COP_WRITE, COP_READ };

struct cop;

struct cop_slot {
	struct cop *o;
	uint32_t node;
	bool answered, found;
	struct cstore_version v;
};

/* An operation waiting for peers: cache_svc.c's struct op. */
struct cop {
	struct cop *next, *prev;
	struct cnode *n;
	int kind;
	csim_reply_fn cb;
	void *arg;
	bool answered;
	uint64_t started_ms;          /* node monotonic */
	struct crepl_quorum q;
	uint32_t asked, failed, want0; /* the old arithmetic (SIM_CACHE_BUG=accounting) */
	/* a write: the entry as sent (packed, for hints) and the answer */
	uint8_t *entry;
	size_t entry_len;
	Chorus__CacheResp resp;
	Chorus__CacheVersion resp_v;
	uint8_t resp_node[CPLACE_ID_BYTES];
	/* a read */
	uint8_t *key;
	size_t key_len;
	bool have_newest;
	Chorus__CacheEntry *newest;   /* owned (entry_dup) */
	struct cop_slot slots[CPLACE_OWNERS_MAX];
	uint32_t n_slots;
};

/* An owned CacheEntry in one block (entry_dup). */
struct owned_entry {
	Chorus__CacheEntry e;
	Chorus__CacheVersion v;
	uint8_t node[CPLACE_ID_BYTES];
	/* key, then value */
};

struct hint_batch {
	struct hint_batch *next, *prev;
	struct crepl_hint *h[CSIM_HINTS_BATCH];
	uint32_t n;
};

struct ae_out {
	struct cnode *n;
	uint32_t k;
	Chorus__CacheEntry *ents[CSIM_AE_BATCH]; /* owned (entry_dup) */
	uint32_t count;
};

struct parked {
	struct parked *next, *prev;
	struct cnode *n;
	uint32_t from;
	uint64_t id;
};

struct cnode {
	struct cache_world *w;
	uint32_t node;
	struct cstore *st;
	struct hlc hlc;
	struct cplace_map map;
	bool have_map;
	uint32_t owners_seen_max;
	uint32_t view;                /* members believed in (bit per node) */
	uint32_t view_next;
	uint64_t view_at;             /* node mono of a pending view change; 0 = none */
	uint64_t map_changed_ms;
	bool serving, seeded;
	/* requests */
	struct creq reqs[CSIM_REQS_MAX];
	uint32_t free_slots[CSIM_REQS_MAX], n_free;
	uint32_t live[CSIM_REQS_MAX], n_live;
	uint32_t link[CSIM_NODES_MAX];
	uint32_t gen;
	/* operations */
	struct cop *ops;
	/* anti-entropy */
	struct {
		uint64_t next_ms;
		int phase;                /* 0 idle, 1 digests out, 2 pushing, 3 pushes out */
		uint32_t outstanding;
		struct crepl_ae round;
		struct ae_out out[CREPL_AE_PEERS_MAX];
		uint64_t cursor;
		uint64_t rounds;
		uint64_t started_ms;      /* virtual */
	} ae;
	uint64_t settle_until;
	/* hints */
	struct crepl_hints hints;
	uint64_t next_hints_ms;
	struct hint_batch *batches;
	struct parked *parked;        /* forwarded requests not answered yet */
};

#define TRACE(w, p, ...)                                                                                    \
	do {                                                                                                \
		if ((w)->trace && (w)->trace == (uint32_t)(p) + 1) {                                            \
			printf("t=%" PRIu64 " p%u ", sim_now((w)->sim), (unsigned)(p));                             \
			printf(__VA_ARGS__);                                                                        \
			printf("\n");                                                                               \
		}                                                                                               \
	} while (0)

static const char *owners_str(const struct cache_world *w, const struct cplace_map *m, uint32_t p, char *buf)
{
	char *o = buf;
	for (uint8_t k = 0; k < m->owner_count; k++)
		o += sprintf(o, "%s%u", k ? "," : "", cache_world_node_of(w, cplace_owner_id(m, (uint16_t)p, k)));
	return buf;
}

static struct cache_world *world_of(struct sim *s)
{
	return sim_driver_ctx(s);
}

static uint64_t mono(const struct cnode *n)
{
	return sim_node_clock(n->w->sim, n->node).mono_ms;
}

static uint64_t wall(const struct cnode *n)
{
	return sim_node_clock(n->w->sim, n->node).wall_ms;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p) {
		fprintf(stderr, "sim: out of memory\n");
		exit(2);
	}
	return p;
}

/* ---- entries ---- */

static void entry_from_item(const struct cstore_item *it, Chorus__CacheEntry *e, Chorus__CacheVersion *vpb,
                            uint8_t *node)
{
	chorus__cache_entry__init(e);
	chorus__cache_version__init(vpb);
	e->key.data = (uint8_t *)it->key;
	e->key.len = it->key_bytes;
	if (!it->tombstone) {
		e->value.data = (uint8_t *)it->value;
		e->value.len = it->value_bytes;
	}
	vpb->hlc = it->version.hlc;
	memcpy(node, it->version.node, CPLACE_ID_BYTES);
	vpb->node.data = node;
	vpb->node.len = CPLACE_ID_BYTES;
	e->version = vpb;
	e->expire_ms = (int64_t)it->expire_ms;
	e->tombstone = it->tombstone;
	e->partition = it->partition;
}

/* An entry from the wire as an item (pointers into e), or ERR_PROTOCOL:
 * cache_entry_apply's checks. */
static int item_from_entry(const Chorus__CacheEntry *e, struct cstore_item *it)
{
	if (!e->version || e->version->node.len != CPLACE_ID_BYTES || e->partition >= CSIM_PARTITIONS ||
	    e->key.len == 0)
		return ERR_PROTOCOL;
	memset(it, 0, sizeof(*it));
	it->key = e->key.data;
	it->key_bytes = (uint32_t)e->key.len;
	it->value = e->tombstone ? NULL : e->value.data;
	it->value_bytes = e->tombstone ? 0 : (uint32_t)e->value.len;
	it->version.hlc = e->version->hlc;
	memcpy(it->version.node, e->version->node.data, CPLACE_ID_BYTES);
	it->expire_ms = e->tombstone ? 0 : (uint64_t)(e->expire_ms > 0 ? e->expire_ms : 0);
	it->tombstone = e->tombstone;
	it->partition = (uint16_t)e->partition;
	return 0;
}

static Chorus__CacheEntry *entry_dup_item(const struct cstore_item *it)
{
	size_t vlen = it->tombstone ? 0 : it->value_bytes;
	struct owned_entry *o = xcalloc(1, sizeof(*o) + it->key_bytes + vlen);
	uint8_t *key = (uint8_t *)(o + 1);
	memcpy(key, it->key, it->key_bytes);
	if (vlen)
		memcpy(key + it->key_bytes, it->value, vlen);
	struct cstore_item copy = *it;
	copy.key = key;
	copy.value = vlen ? key + it->key_bytes : NULL;
	entry_from_item(&copy, &o->e, &o->v, o->node);
	return &o->e;
}

static Chorus__CacheEntry *entry_dup(const Chorus__CacheEntry *e)
{
	struct cstore_item it;
	if (item_from_entry(e, &it) != 0)
		return NULL;
	return entry_dup_item(&it);
}

static int version_of(const Chorus__CacheEntry *e, struct cstore_version *v)
{
	if (!e || !e->version || e->version->node.len != CPLACE_ID_BYTES)
		return ERR_PROTOCOL;
	v->hlc = e->version->hlc;
	memcpy(v->node, e->version->node.data, CPLACE_ID_BYTES);
	return 0;
}

/* The replica's rule (cache_entry_apply): drift, then last writer wins. */
static int entry_apply(struct cnode *n, const Chorus__CacheEntry *e)
{
	struct cstore_item it;
	if (item_from_entry(e, &it) != 0)
		return ERR_PROTOCOL;
	uint64_t refused = n->hlc.refused_count;
	int rc = crepl_apply(&n->hlc, n->st, &it, wall(n));
	TRACE(n->w, it.partition, "node %u applies %.*s %" PRIu64 "%s: %d", n->node, (int)it.key_bytes,
	      (const char *)it.key, it.version.hlc >> 16, it.tombstone ? " (tombstone)" : "", rc);
	if (n->hlc.refused_count != refused)
		n->w->refused_drift++;
	return rc;
}

/* ---- the wire ---- */

static void frame_send(struct cnode *n, uint32_t to, Chorus__Envelope *env, uint64_t id)
{
	env->version = 1;
	env->sender.data = n->w->ids[n->node];
	env->sender.len = CPLACE_ID_BYTES;
	env->request_id = id;
	size_t len = chorus__envelope__get_packed_size(env);
	uint8_t *buf = xcalloc(1, len);
	chorus__envelope__pack(env, buf);
	sim_send(n->w->sim, n->node, to, buf, len);
	free(buf);
}

static void req_release(struct cnode *n, uint32_t slot)
{
	struct creq *r = &n->reqs[slot];
	assert(r->gen && n->link[r->to] > 0);
	n->link[r->to]--;
	uint32_t pos = r->live_pos, last = n->live[--n->n_live];
	n->live[pos] = last;
	n->reqs[last].live_pos = pos;
	r->gen = 0;
	n->free_slots[n->n_free++] = slot;
}

/* The cluster service's peer request: 0, or CH_ERR_FULL (the link has
 * link_max requests out) / CH_ERR_UNREACHABLE; cb is then never called. */
static int req_send(struct cnode *n, uint32_t to, Chorus__Envelope *env, uint32_t timeout_ms, creq_fn cb,
                    void *arg)
{
	struct cache_world *w = n->w;
	if (to >= w->n || to == n->node)
		return CH_ERR_UNREACHABLE;
	if (n->link[to] >= w->link_max || n->n_free == 0) {
		w->send_full++;
		return CH_ERR_FULL;
	}
	uint32_t slot = n->free_slots[--n->n_free];
	struct creq *r = &n->reqs[slot];
	if (++n->gen == 0)
		n->gen = 1;
	r->gen = n->gen;
	r->to = to;
	r->deadline_ms = mono(n) + timeout_ms;
	r->cb = cb;
	r->arg = arg;
	r->live_pos = n->n_live;
	n->live[n->n_live++] = slot;
	n->link[to]++;
	frame_send(n, to, env, (uint64_t)r->gen << 16 | slot);
	return 0;
}

static void repl_env(Chorus__Envelope *env, Chorus__CacheRepl *m)
{
	chorus__envelope__init(env);
	env->body_case = CHORUS__ENVELOPE__BODY_CACHE_REPL;
	env->cache_repl = m;
}

static void reply_error(struct cnode *n, uint32_t to, uint64_t id, int code, const char *msg)
{
	Chorus__Error e = CHORUS__ERROR__INIT;
	e.code = code;
	e.message = (char *)msg;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_ERROR;
	env.error = &e;
	frame_send(n, to, &env, id);
}

/* ---- membership and the map ---- */

static uint32_t node_bit(uint32_t i)
{
	return 1u << i;
}

uint32_t cache_world_node_of(const struct cache_world *w, const uint8_t *id)
{
	for (uint32_t i = 0; i < w->n; i++)
		if (memcmp(w->ids[i], id, CPLACE_ID_BYTES) == 0)
			return i;
	return SIM_NONE;
}

/* map_refresh: the map from the members believed in (and self). */
static void map_refresh(struct cnode *n)
{
	struct cache_world *w = n->w;
	uint32_t set = n->view | node_bit(n->node);
	uint8_t ids[CSIM_NODES_MAX][CPLACE_ID_BYTES];
	uint32_t k = 0;
	uint64_t epoch = 0x9e3779b97f4a7c15ull;
	for (uint32_t i = 0; i < w->n; i++)
		if (set & node_bit(i))
			memcpy(ids[k++], w->ids[i], CPLACE_ID_BYTES);
	/* any digest of the set does: the ids are sorted inside the map */
	for (uint32_t i = 0; i < w->n; i++)
		if (set & node_bit(i)) {
			uint64_t x = epoch ^ ((uint64_t)w->ids[i][0] << 8 | w->ids[i][15]) ^ ((uint64_t)i << 32);
			epoch = rng_splitmix64(&x);
		}
	if (n->have_map && epoch == n->map.epoch)
		return;
	struct cplace_params params;
	cplace_params_default(&params);
	params.partition_count = CSIM_PARTITIONS;
	params.owner_count = CSIM_OWNERS;
	struct cplace_map fresh;
	if (cplace_map_build(&fresh, &params, epoch, (const uint8_t(*)[CPLACE_ID_BYTES])ids, k) != 0) {
		sim_fail(w->sim, "node %u: cannot build a map of %u members", n->node, k);
		return;
	}
	if (n->have_map)
		cplace_map_free(&n->map);
	n->map = fresh;
	n->have_map = true;
	if (fresh.owner_count > n->owners_seen_max)
		n->owners_seen_max = fresh.owner_count;
	n->map_changed_ms = mono(n);
	n->settle_until = crepl_settle_until(n->ae.rounds, 1);
	if (w->trace) {
		char b[64];
		TRACE(w, w->trace - 1, "node %u map of %u members: owners %s", n->node, k,
		      owners_str(w, &n->map, w->trace - 1, b));
	}
	uint64_t soon = mono(n) + CSIM_AE_AFTER_MAP_MS;
	if (n->ae.next_ms > soon)
		n->ae.next_ms = soon;
}

static bool serving(struct cnode *n)
{
	if (n->serving)
		return true;
	if (!n->seeded || (n->map.member_count > 1 && mono(n) >= n->map_changed_ms + CSIM_GOSSIP_MS))
		n->serving = true;
	return n->serving;
}

static bool settling(const struct cnode *n)
{
	return n->ae.rounds < n->settle_until && !(n->w->bugs & CSIM_BUG_NO_SETTLE);
}

/* ---- operations ---- */

static struct cop *op_new(struct cnode *n, int kind, csim_reply_fn cb, void *arg)
{
	struct cop *o = xcalloc(1, sizeof(*o));
	o->n = n;
	o->kind = kind;
	o->cb = cb;
	o->arg = arg;
	o->started_ms = mono(n);
	chorus__cache_resp__init(&o->resp);
	o->next = n->ops;
	if (n->ops)
		n->ops->prev = o;
	n->ops = o;
	return o;
}

static void op_free(struct cop *o)
{
	struct cnode *n = o->n;
	if (o->prev)
		o->prev->next = o->next;
	else
		n->ops = o->next;
	if (o->next)
		o->next->prev = o->prev;
	free(o->entry);
	free(o->key);
	free(o->newest);
	free(o);
}

static void op_maybe_free(struct cop *o)
{
	if (o->answered && o->q.outstanding == 0)
		op_free(o);
}

static void op_answer(struct cop *o, int code, const Chorus__CacheResp *resp)
{
	if (o->answered)
		return;
	o->answered = true;
	o->cb(o->arg, code, resp);
}

/* The verdict, or (SIM_CACHE_BUG=accounting) the arithmetic cache_svc.c
 * had: need counted down, "asked - failed < need" in unsigned numbers,
 * where failed also counted sends that never went and asked counted
 * answers already in. */
static enum crepl_verdict op_verdict(const struct cop *o)
{
	if (!(o->n->w->bugs & CSIM_BUG_ACCOUNTING))
		return crepl_quorum_verdict(&o->q);
	uint32_t need = o->q.need, seen = o->q.seen;
	if (need == 0 && (seen >= o->want0 || o->q.outstanding == 0))
		return CREPL_DONE;
	if (o->asked - o->failed < need)
		return CREPL_FAIL;
	return CREPL_WAIT;
}

static void op_sent(struct cop *o, bool sent)
{
	crepl_quorum_sent(&o->q, sent);
	if (sent)
		o->asked++;
	else
		o->failed++;
}

static void op_came_back(struct cop *o, bool good)
{
	crepl_quorum_answer(&o->q, good);
	if (!good)
		o->failed++;
}

/* ---- hints ---- */

static void hint_add(struct cnode *n, uint32_t to, const struct cop *o)
{
	if (!o->entry || !o->entry_len)
		return;
	if (crepl_hints_add(&n->hints, n->w->ids[to], 0, o->entry, o->entry_len) == 0)
		n->w->hints_added++;
}

static void hints_cb(struct cnode *n, void *arg, int code, const Chorus__Envelope *reply)
{
	struct hint_batch *b = arg;
	bool ok = code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP;
	if (ok)
		n->w->hints_delivered += b->n;
	crepl_hints_done(&n->hints, b->h, b->n, ok);
	if (b->prev)
		b->prev->next = b->next;
	else
		n->batches = b->next;
	if (b->next)
		b->next->prev = b->prev;
	free(b);
}

static int hint_member(void *ctx, const uint8_t *id)
{
	struct cnode *n = ctx;
	return n->have_map && cplace_member_find(&n->map, id) >= 0;
}

static void hints_replay(struct cnode *n)
{
	for (struct crepl_hint *h = NULL; (h = crepl_hints_next(&n->hints, h, hint_member, n)) != NULL;) {
		uint32_t to = cache_world_node_of(n->w, h->to);
		struct hint_batch *b = xcalloc(1, sizeof(*b));
		struct crepl_hint *group[CSIM_HINTS_BATCH];
		uint32_t k = crepl_hints_gather(&n->hints, h, group, CSIM_HINTS_BATCH);
		Chorus__CacheEntry *ents[CSIM_HINTS_BATCH];
		for (uint32_t i = 0; i < k; i++) {
			ents[b->n] = chorus__cache_entry__unpack(NULL, group[i]->len, group[i]->entry);
			if (ents[b->n])
				b->h[b->n++] = group[i];
		}
		Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
		m.cache = "default";
		m.epoch = n->map.epoch;
		m.entries = ents;
		m.n_entries = b->n;
		Chorus__Envelope env;
		repl_env(&env, &m);
		int rc = b->n && to != SIM_NONE ? req_send(n, to, &env, CSIM_TIMEOUT_MS, hints_cb, b) : -1;
		for (uint32_t i = 0; i < b->n; i++)
			chorus__cache_entry__free_unpacked(ents[i], NULL);
		if (rc != 0) {
			free(b);
			continue;
		}
		crepl_hints_sent(b->h, b->n);
		b->next = n->batches;
		if (b->next)
			b->next->prev = b;
		n->batches = b;
	}
}

/* ---- the primary: writes ---- */

static void write_ack_cb(struct cnode *n, void *arg, int code, const Chorus__Envelope *reply)
{
	struct cop_slot *sl = arg;
	struct cop *o = sl->o;
	bool ok = code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP;
	sl->answered = true;
	op_came_back(o, ok);
	if (!ok) {
		if (code == CH_ERR_TIMEOUT)
			n->w->timeouts++;
		hint_add(n, sl->node, o);
	}
	if (!o->answered) {
		enum crepl_verdict v = op_verdict(o);
		if (v == CREPL_DONE)
			op_answer(o, 0, &o->resp);
		else if (v == CREPL_FAIL)
			op_answer(o, code == CH_ERR_TIMEOUT ? CH_ERR_TIMEOUT : CH_ERR_UNAVAILABLE, NULL);
	}
	op_maybe_free(o);
}

/* replicate(): the entry at key as now held goes to the replicas. */
static void replicate(struct cnode *n, uint16_t p, const uint8_t *key, size_t key_len, int consistency,
                      const Chorus__CacheResp *resp, csim_reply_fn cb, void *arg)
{
	uint32_t owners = n->map.owner_count;
	if (owners <= 1) {
		cb(arg, 0, resp);
		return;
	}
	uint32_t need = crepl_replicas_needed(owners, consistency);
	struct cop *o = op_new(n, COP_WRITE, cb, arg);
	crepl_quorum_init(&o->q, need, need);
	o->want0 = need;
	o->resp = *resp;
	if (resp->version) {
		o->resp_v = *resp->version;
		memcpy(o->resp_node, resp->version->node.data, CPLACE_ID_BYTES);
		o->resp_v.node.data = o->resp_node;
		o->resp.version = &o->resp_v;
	}
	struct cstore_item it;
	if (cstore_peek(n->st, key, key_len, wall(n), &it) != 0) {
		op_answer(o, 0, &o->resp);
		op_maybe_free(o);
		return;
	}
	Chorus__CacheEntry e;
	Chorus__CacheVersion vpb;
	uint8_t node[CPLACE_ID_BYTES];
	entry_from_item(&it, &e, &vpb, node);
	o->entry_len = chorus__cache_entry__get_packed_size(&e);
	o->entry = xcalloc(1, o->entry_len);
	chorus__cache_entry__pack(&e, o->entry);
	Chorus__CacheEntry *ents[1] = {&e};
	Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
	m.cache = "default";
	m.epoch = n->map.epoch;
	m.entries = ents;
	m.n_entries = 1;
	Chorus__Envelope env;
	repl_env(&env, &m);
	for (uint8_t k = 1; k < owners; k++) {
		uint32_t to = cache_world_node_of(n->w, cplace_owner_id(&n->map, p, k));
		struct cop_slot *sl = &o->slots[o->n_slots];
		memset(sl, 0, sizeof(*sl));
		sl->o = o;
		sl->node = to;
		bool sent = req_send(n, to, &env, CSIM_TIMEOUT_MS, write_ack_cb, sl) == 0;
		if (sent)
			o->n_slots++;
		op_sent(o, sent);
		if (!sent)
			hint_add(n, to, o);
	}
	n->w->writes++;
	enum crepl_verdict v = op_verdict(o);
	if (v == CREPL_DONE)
		op_answer(o, 0, &o->resp);
	else if (v == CREPL_FAIL)
		op_answer(o, CH_ERR_UNAVAILABLE, NULL);
	op_maybe_free(o);
}

static void primary_write(struct cnode *n, const Chorus__CacheReq *req, uint16_t p, int consistency,
                          csim_reply_fn cb, void *arg)
{
	uint64_t now = wall(n);
	Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
	Chorus__CacheVersion vpb = CHORUS__CACHE_VERSION__INIT;
	uint8_t vnode[CPLACE_ID_BYTES];
	resp.epoch = n->map.epoch;
	int rc = 0;
	bool changed = true;
	struct cstore_version v;
	for (int attempt = 0; attempt < 2; attempt++) {
		v.hlc = hlc_now(&n->hlc, now);
		memcpy(v.node, n->w->ids[n->node], CPLACE_ID_BYTES);
		if (req->op == CHORUS__CACHE_OP__CACHE_PUT) {
			struct cstore_put put;
			memset(&put, 0, sizeof(put));
			put.key = req->key.data;
			put.key_bytes = req->key.len;
			put.value = req->value.data;
			put.value_bytes = req->value.len;
			put.version = v;
			put.partition = p;
			rc = cstore_put(n->st, &put, now, NULL);
			resp.applied = rc == 0;
		} else {
			bool existed = false;
			rc = cstore_delete(n->st, req->key.data, req->key.len, &v, p, now, &existed, NULL);
			resp.integer = existed ? 1 : 0;
			resp.applied = existed;
			changed = existed;
		}
		if (rc != CSTORE_STALE)
			break;
		/* what is held is newer than this node's clock (written by
		 * another primary before a map change): the clock moves past it */
		struct cstore_item held;
		if (cstore_peek(n->st, req->key.data, req->key.len, now, &held) == 0) {
			uint64_t merged;
			(void)hlc_update(&n->hlc, now, held.version.hlc, &merged);
		}
	}
	if (rc != 0) {
		cb(arg, rc == CSTORE_STALE ? CH_ERR_INTERNAL : CH_ERR_FULL, NULL);
		return;
	}
	vpb.hlc = v.hlc;
	memcpy(vnode, v.node, CPLACE_ID_BYTES);
	vpb.node.data = vnode;
	vpb.node.len = CPLACE_ID_BYTES;
	resp.version = &vpb;
	if (!changed) {
		cb(arg, 0, &resp);
		return;
	}
	replicate(n, p, req->key.data, req->key.len, consistency, &resp, cb, arg);
}

/* ---- the primary: quorum reads ---- */

static void read_answer(struct cop *o)
{
	struct cnode *n = o->n;
	if (o->have_newest) {
		if (entry_apply(n, o->newest) == 0)
			n->w->repairs++;
		struct cstore_version nv;
		if (version_of(o->newest, &nv) == 0) {
			Chorus__CacheEntry *ents[1] = {o->newest};
			Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
			m.cache = "default";
			m.epoch = n->map.epoch;
			m.entries = ents;
			m.n_entries = 1;
			Chorus__Envelope env;
			repl_env(&env, &m);
			for (uint32_t i = 0; i < o->n_slots; i++) {
				const struct cop_slot *sl = &o->slots[i];
				if (sl->answered && crepl_read_needs_repair(sl->found, &sl->v, &nv) &&
				    req_send(n, sl->node, &env, CSIM_TIMEOUT_MS, NULL, NULL) == 0)
					n->w->repairs++;
			}
		}
	}
	Chorus__CacheResp resp = CHORUS__CACHE_RESP__INIT;
	Chorus__CacheVersion vpb;
	uint8_t node[CPLACE_ID_BYTES];
	Chorus__CacheEntry e;
	struct cstore_item it;
	resp.epoch = n->map.epoch;
	if (cstore_peek(n->st, o->key, o->key_len, wall(n), &it) == 0) {
		entry_from_item(&it, &e, &vpb, node);
		resp.version = &vpb;
		resp.found = !it.tombstone;
		if (!it.tombstone) {
			resp.value.data = (uint8_t *)it.value;
			resp.value.len = it.value_bytes;
		}
	}
	op_answer(o, 0, &resp);
}

static void read_cb(struct cnode *n, void *arg, int code, const Chorus__Envelope *reply)
{
	struct cop_slot *sl = arg;
	struct cop *o = sl->o;
	(void)n;
	bool ok = code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP;
	if (ok && !o->answered) {
		const Chorus__CacheReplResp *r = reply->cache_repl_resp;
		struct cstore_version v;
		sl->answered = true;
		sl->found = r->found && r->entry && version_of(r->entry, &v) == 0;
		if (sl->found) {
			sl->v = v;
			struct cstore_version cur;
			bool have = o->have_newest && version_of(o->newest, &cur) == 0;
			if (crepl_read_newer(have, &cur, &v)) {
				Chorus__CacheEntry *copy = entry_dup(r->entry);
				if (copy) {
					free(o->newest);
					o->newest = copy;
					o->have_newest = true;
				}
			}
		}
	}
	op_came_back(o, ok);
	if (!o->answered) {
		enum crepl_verdict v = op_verdict(o);
		if (v == CREPL_DONE)
			read_answer(o);
		else if (v == CREPL_FAIL)
			op_answer(o, code == CH_ERR_TIMEOUT ? CH_ERR_TIMEOUT : CH_ERR_UNAVAILABLE, NULL);
	}
	op_maybe_free(o);
}

static void primary_read(struct cnode *n, const Chorus__CacheReq *req, uint16_t p, int consistency,
                         csim_reply_fn cb, void *arg)
{
	uint32_t need = crepl_replicas_needed(n->map.owner_count, consistency);
	n->w->reads++;
	struct cop *o = op_new(n, COP_READ, cb, arg);
	o->key = xcalloc(1, req->key.len);
	memcpy(o->key, req->key.data, req->key.len);
	o->key_len = req->key.len;
	if (need == 0) {
		read_answer(o);
		op_maybe_free(o);
		return;
	}
	bool settle = settling(n);
	if (settle)
		n->w->settle_reads++;
	uint32_t all = crepl_read_need(n->map.owner_count, need, settle, false);
	if (n->w->bugs & CSIM_BUG_SETTLE_HOPE) {
		crepl_quorum_init(&o->q, need, all); /* as it was: hope for every owner, need a quorum */
	} else {
		crepl_quorum_init(&o->q, all, all);
		need = all;
	}
	o->want0 = all;
	struct cstore_item it;
	if (cstore_peek(n->st, o->key, o->key_len, wall(n), &it) == 0) {
		o->newest = entry_dup_item(&it);
		o->have_newest = true;
	}
	Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
	m.cache = "default";
	m.epoch = n->map.epoch;
	m.read = 1;
	m.read_key.data = o->key;
	m.read_key.len = o->key_len;
	Chorus__Envelope env;
	repl_env(&env, &m);
	for (uint8_t k = 1; k < n->map.owner_count; k++) {
		uint32_t to = cache_world_node_of(n->w, cplace_owner_id(&n->map, p, k));
		struct cop_slot *sl = &o->slots[o->n_slots];
		memset(sl, 0, sizeof(*sl));
		sl->o = o;
		sl->node = to;
		bool sent = req_send(n, to, &env, CSIM_TIMEOUT_MS, read_cb, sl) == 0;
		if (sent)
			o->n_slots++;
		op_sent(o, sent);
	}
	if (op_verdict(o) == CREPL_FAIL)
		op_answer(o, CH_ERR_UNAVAILABLE, NULL);
	op_maybe_free(o);
}

/* ---- routing ---- */

static void forward_cb(struct cnode *n, void *arg, int code, const Chorus__Envelope *reply)
{
	struct cop *o = arg;
	(void)n;
	op_came_back(o, code == 0);
	if (code != 0)
		op_answer(o, code, NULL);
	else if (reply->body_case == CHORUS__ENVELOPE__BODY_ERROR)
		op_answer(o, reply->error->code ? reply->error->code : CH_ERR_PROTOCOL, NULL);
	else if (reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_RESP)
		op_answer(o, 0, reply->cache_resp);
	else
		op_answer(o, CH_ERR_PROTOCOL, NULL);
	op_maybe_free(o);
}

static void node_submit(struct cnode *n, const Chorus__CacheReq *req, csim_reply_fn cb, void *arg)
{
	if (!n->have_map || n->map.member_count == 0) {
		cb(arg, CH_ERR_UNAVAILABLE, NULL);
		return;
	}
	if (!serving(n)) {
		n->w->moved++;
		cb(arg, CH_ERR_MOVED, NULL);
		return;
	}
	uint16_t p = cplace_partition(req->key.data, req->key.len, n->map.partition_count);
	const uint8_t *primary = cplace_owner_id(&n->map, p, 0);
	if (memcmp(primary, n->w->ids[n->node], CPLACE_ID_BYTES) != 0) {
		if (req->forwarded) {
			n->w->moved++;
			cb(arg, CH_ERR_MOVED, NULL);
			return;
		}
		struct cop *o = op_new(n, COP_FORWARD, cb, arg);
		crepl_quorum_init(&o->q, 1, 1);
		Chorus__CacheReq copy = *req;
		copy.forwarded = 1;
		copy.epoch = n->map.epoch;
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		env.body_case = CHORUS__ENVELOPE__BODY_CACHE;
		env.cache = &copy;
		int rc = req_send(n, cache_world_node_of(n->w, primary), &env, 2 * CSIM_TIMEOUT_MS, forward_cb, o);
		op_sent(o, rc == 0);
		if (rc != 0)
			op_answer(o, rc, NULL);
		else
			n->w->forwards++;
		op_maybe_free(o);
		return;
	}
	int consistency = req->consistency ? (int)req->consistency : CREPL_QUORUM;
	if (!(n->w->bugs & CSIM_BUG_ALONE) && !crepl_copies_enough(consistency, n->map.owner_count, n->owners_seen_max)) {
		cb(arg, CH_ERR_UNAVAILABLE, NULL);
		return;
	}
	if (req->op == CHORUS__CACHE_OP__CACHE_GET)
		primary_read(n, req, p, consistency, cb, arg);
	else
		primary_write(n, req, p, consistency, cb, arg);
}

/* A forwarded request's answer goes back to the node that sent it, with
 * its request id: parked on the node (freed with it if it crashes first),
 * as rpc_park does. */
static void peer_reply(void *arg, int code, const Chorus__CacheResp *resp)
{
	struct parked *pk = arg;
	struct cnode *n = pk->n;
	if (code != 0) {
		reply_error(n, pk->from, pk->id, code, ch_strerror(code));
	} else {
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		env.body_case = CHORUS__ENVELOPE__BODY_CACHE_RESP;
		env.cache_resp = (Chorus__CacheResp *)resp;
		frame_send(n, pk->from, &env, pk->id);
	}
	if (pk->prev)
		pk->prev->next = pk->next;
	else
		n->parked = pk->next;
	if (pk->next)
		pk->next->prev = pk->prev;
	free(pk);
}

static void handle_forwarded(struct cnode *n, uint32_t from, uint64_t id, const Chorus__CacheReq *req)
{
	struct parked *pk = xcalloc(1, sizeof(*pk));
	pk->n = n;
	pk->from = from;
	pk->id = id;
	pk->next = n->parked;
	if (pk->next)
		pk->next->prev = pk;
	n->parked = pk;
	node_submit(n, req, peer_reply, pk);
}

/* ---- the replica side ---- */

static void handle_repl(struct cnode *n, uint32_t from, uint64_t id, const Chorus__CacheRepl *m)
{
	if (n->have_map && !(n->w->bugs & CSIM_BUG_EPOCH_DEAF))
		n->settle_until = crepl_settle_on_epoch(n->settle_until, n->ae.rounds, 1, n->map.epoch, m->epoch);
	Chorus__CacheReplResp resp = CHORUS__CACHE_REPL_RESP__INIT;
	uint32_t refused = 0;
	for (size_t i = 0; i < m->n_entries; i++) {
		int rc = entry_apply(n, m->entries[i]);
		if (rc == 0)
			resp.applied++;
		else if (!crepl_apply_held(rc))
			refused++;
	}
	if (refused && !(n->w->bugs & CSIM_BUG_ACK_REFUSED)) {
		reply_error(n, from, id, CH_ERR_INVALID, "entries not held here");
		return;
	}
	if (m->sync && n->have_map && m->epoch != n->map.epoch && !(n->w->bugs & CSIM_BUG_OTHER_MAP)) {
		reply_error(n, from, id, CH_ERR_MOVED, "another partition map");
		return;
	}
	uint32_t differ[CSIM_PARTITIONS];
	if (m->sync && m->n_sync_partitions == m->n_sync_digests && m->n_sync_partitions <= CSIM_PARTITIONS) {
		cstore_tick(n->st, wall(n), 2000);
		resp.n_differ = crepl_ae_differ(n->st, CSIM_PARTITIONS, m->sync_partitions, m->sync_digests,
		                                m->n_sync_partitions, differ);
		resp.differ = differ;
	}
	Chorus__CacheEntry e;
	Chorus__CacheVersion vpb;
	uint8_t node[CPLACE_ID_BYTES];
	struct cstore_item it;
	if (m->read && m->read_key.len && cstore_peek(n->st, m->read_key.data, m->read_key.len, wall(n), &it) == 0) {
		entry_from_item(&it, &e, &vpb, node);
		resp.entry = &e;
		resp.found = 1;
	}
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP;
	env.cache_repl_resp = &resp;
	frame_send(n, from, &env, id);
}

/* ---- anti-entropy ---- */

static void ae_out_clear(struct ae_out *b)
{
	for (uint32_t i = 0; i < b->count; i++)
		free(b->ents[i]);
	b->count = 0;
}

static void ae_clear(struct cnode *n)
{
	for (uint32_t k = 0; k < CREPL_AE_PEERS_MAX; k++)
		ae_out_clear(&n->ae.out[k]);
	crepl_ae_clear(&n->ae.round);
}

/* The handover rule as it was: equal digests only, no re-check
 * (SIM_CACHE_BUG=handover-old). */
static bool droppable_old(const struct cnode *n, uint32_t p)
{
	const struct crepl_ae *ae = &n->ae.round;
	const struct cplace_map *m = &n->map;
	int me = cplace_member_find(m, n->w->ids[n->node]);
	if (ae->epoch != m->epoch || me < 0 || cplace_rank(m, (uint16_t)p, (uint32_t)me) >= 0)
		return false;
	struct cstore_partition_stats ps;
	if (cstore_partition_stats(n->st, (uint16_t)p, &ps) != 0 || ps.entries + ps.tombstones == 0)
		return false;
	for (uint8_t r = 0; r < m->owner_count; r++) {
		const uint8_t *o = cplace_owner_id(m, (uint16_t)p, r);
		bool equal = false;
		for (uint32_t k = 0; k < ae->peer_count; k++)
			if (memcmp(ae->peers[k].id, o, CPLACE_ID_BYTES) == 0)
				equal = ae->peers[k].answered && ae->peers[k].equal &&
				        ((ae->peers[k].equal[p / 8] >> (p % 8)) & 1);
		if (!equal)
			return false;
	}
	return true;
}

static void ae_finish(struct cnode *n)
{
	struct cache_world *w = n->w;
	for (uint32_t p = 0; n->have_map && p < n->map.partition_count; p++) {
		struct cstore_partition_stats ps;
		if ((w->bugs & CSIM_BUG_DROP_RACE) && n->ae.round.digest && p < n->ae.round.partition_count &&
		    cstore_partition_stats(n->st, (uint16_t)p, &ps) == 0)
			n->ae.round.digest[p] = ps.digest; /* the re-check sees no change */
		bool drop = w->bugs & CSIM_BUG_HANDOVER_OLD ? droppable_old(n, p)
		                                             : crepl_ae_droppable(&n->ae.round, &n->map, n->st, p);
		if (!drop)
			continue;
		TRACE(w, p, "node %u drops it (round from t=%" PRIu64 ")", n->node, n->ae.started_ms);
		if (w->on_drop)
			w->on_drop(w->hook_ctx, n->node, p);
		uint64_t cur = 0, removed = 0;
		do {
			if (cstore_partition_drop(n->st, (uint16_t)p, cur, 1u << 20, &cur, &removed) != 0)
				break;
			w->dropped_entries += removed;
		} while (cur);
		w->dropped_partitions++;
	}
	/* a round the map changed under hands over at the next, 300 ms on */
	uint64_t next = n->ae.round.epoch == n->map.epoch ? CSIM_AE_PERIOD_MS : CSIM_AE_AFTER_MAP_MS;
	ae_clear(n);
	n->ae.phase = 0;
	n->ae.rounds++;
	w->ae_rounds++;
	n->ae.next_ms = mono(n) + next;
}

/* The pass is over (or cut short): the round ends once its pushes are
 * back. */
static void ae_end(struct cnode *n)
{
	if (n->ae.outstanding) {
		n->ae.phase = 3;
		return;
	}
	ae_finish(n);
}

static void ae_push_cb(struct cnode *n, void *arg, int code, const Chorus__Envelope *reply)
{
	struct ae_out *pe = arg;
	n->ae.outstanding--;
	if (n->w->trace)
		TRACE(n->w, n->w->trace - 1, "node %u round: push to node %u came back (code %d, body %d)", n->node,
		      cache_world_node_of(n->w, n->ae.round.peers[pe->k].id), code, reply ? (int)reply->body_case : -1);
	crepl_ae_push_done(&n->ae.round, pe->k,
	                   code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP);
	if (n->ae.outstanding == 0 && n->ae.phase == 3)
		ae_finish(n);
}

static void ae_push_start(struct cnode *n)
{
	if (!crepl_ae_push_any(&n->ae.round) || n->ae.round.epoch != n->map.epoch) {
		ae_finish(n);
		return;
	}
	n->ae.phase = 2;
	n->ae.cursor = 0;
}

static void ae_digest_cb(struct cnode *n, void *arg, int code, const Chorus__Envelope *reply)
{
	struct ae_out *pe = arg;
	n->ae.outstanding--;
	if (code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP)
		crepl_ae_answer(&n->ae.round, pe->k, reply->cache_repl_resp->differ,
		                reply->cache_repl_resp->n_differ);
	else if (code == 0 && reply && reply->body_case == CHORUS__ENVELOPE__BODY_ERROR &&
	         reply->error->code == CH_ERR_MOVED)
		crepl_ae_answer_other_map(&n->ae.round, pe->k);
	if (n->w->trace) {
		uint32_t p = n->w->trace - 1, k = pe->k;
		const struct crepl_ae_peer *pp = &n->ae.round.peers[k];
		TRACE(n->w, p, "node %u round: node %u answered (code %d): %s", n->node,
		      cache_world_node_of(n->w, pp->id), code,
		      pp->equal && (pp->equal[p / 8] >> (p % 8) & 1)     ? "equal"
		      : pp->differ && (pp->differ[p / 8] >> (p % 8) & 1) ? "differs"
		                                                         : "not offered");
	}
	if (n->ae.outstanding == 0 && n->ae.phase == 1)
		ae_push_start(n);
}

static void ae_start(struct cnode *n)
{
	if (!n->have_map || n->map.member_count < 2 || cplace_member_find(&n->map, n->w->ids[n->node]) < 0)
		return;
	TRACE(n->w, n->w->trace ? n->w->trace - 1 : 0, "node %u starts a round", n->node);
	ae_clear(n);
	n->ae.phase = 1;
	n->ae.started_ms = sim_now(n->w->sim);
	cstore_tick(n->st, wall(n), 2000);
	(void)crepl_ae_plan(&n->ae.round, &n->map, n->w->ids[n->node], n->st);
	uint32_t parts[CSIM_PARTITIONS];
	uint64_t digests[CSIM_PARTITIONS];
	for (uint32_t k = 0; k < n->ae.round.peer_count; k++) {
		struct ae_out *pe = &n->ae.out[k];
		pe->n = n;
		pe->k = k;
		uint32_t cnt = crepl_ae_offer(&n->ae.round, k, parts, digests);
		Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
		m.cache = "default";
		m.epoch = n->map.epoch;
		m.sync = 1;
		m.sync_partitions = parts;
		m.n_sync_partitions = cnt;
		m.sync_digests = digests;
		m.n_sync_digests = cnt;
		Chorus__Envelope env;
		repl_env(&env, &m);
		uint32_t to = cache_world_node_of(n->w, n->ae.round.peers[k].id);
		if (req_send(n, to, &env, CSIM_TIMEOUT_MS, ae_digest_cb, pe) == 0)
			n->ae.outstanding++;
		else
			crepl_ae_unsent(&n->ae.round, k);
	}
	if (n->ae.outstanding == 0)
		ae_push_start(n);
}

static void ae_visit(void *arg, const struct cstore_item *it)
{
	struct cnode *n = arg;
	for (uint32_t k = 0; k < n->ae.round.peer_count; k++) {
		struct ae_out *b = &n->ae.out[k];
		if (!crepl_ae_wants(&n->ae.round, k, it->partition))
			continue;
		if (b->count == CSIM_AE_BATCH) {
			crepl_ae_skipped(&n->ae.round, k, it->partition); /* the next round sends it */
			continue;
		}
		b->ents[b->count++] = entry_dup_item(it);
		TRACE(n->w, it->partition, "node %u pushes %.*s %" PRIu64 " to node %u", n->node, (int)it->key_bytes,
		      (const char *)it->key, it->version.hlc >> 16, cache_world_node_of(n->w, n->ae.round.peers[k].id));
	}
}

static void ae_step(struct cnode *n)
{
	uint64_t next = 0;
	if (n->ae.round.epoch != n->map.epoch ||
	    cstore_replication_scan(n->st, n->ae.cursor, 4096, wall(n), ae_visit, n, &next) != 0) {
		ae_end(n);
		return;
	}
	for (uint32_t k = 0; k < n->ae.round.peer_count; k++) {
		struct ae_out *b = &n->ae.out[k];
		if (!b->count)
			continue;
		Chorus__CacheRepl m = CHORUS__CACHE_REPL__INIT;
		m.cache = "default";
		m.epoch = n->map.epoch;
		m.entries = b->ents;
		m.n_entries = b->count;
		Chorus__Envelope env;
		repl_env(&env, &m);
		uint32_t to = cache_world_node_of(n->w, n->ae.round.peers[k].id);
		int rc = req_send(n, to, &env, CSIM_TIMEOUT_MS, ae_push_cb, b);
		crepl_ae_push_sent(&n->ae.round, k, rc == 0);
		if (rc == 0) {
			n->w->ae_pushed += b->count;
			n->ae.outstanding++;
		}
		ae_out_clear(b);
	}
	n->ae.cursor = next;
	if (next == 0) {
		crepl_ae_pass_done(&n->ae.round);
		ae_end(n);
	}
}

/* ---- the driver ---- */

static void *cache_create(struct sim *s, uint32_t node, struct now now)
{
	struct cache_world *w = world_of(s);
	struct cnode *n = xcalloc(1, sizeof(*n));
	n->w = w;
	n->node = node;
	struct cstore_config sc;
	memset(&sc, 0, sizeof(sc));
	uint64_t x = sim_derive_seed(sim_run_info(s)->seed, 77, node, w->lives[node]);
	for (int i = 0; i < 2; i++) {
		uint64_t r = rng_splitmix64(&x);
		memcpy(sc.hash_key + 8 * i, &r, 8);
	}
	sc.partition_count = CSIM_PARTITIONS;
	sc.expire_to_tombstone = true;
	if (cstore_create(&sc, &n->st) != 0) {
		free(n);
		return NULL;
	}
	hlc_init(&n->hlc, w->bugs & CSIM_BUG_DRIFT0 ? 0 : CREPL_DRIFT_MS);
	crepl_hints_init(&n->hints, 100000, 64u << 20);
	for (uint32_t i = 0; i < CSIM_REQS_MAX; i++)
		n->free_slots[i] = CSIM_REQS_MAX - 1 - i;
	n->n_free = CSIM_REQS_MAX;
	n->seeded = (w->seeded & node_bit(node)) != 0;
	n->view = n->seeded ? 0 : w->truth;
	n->ae.next_ms = now.mono_ms + CSIM_AE_PERIOD_MS;
	n->next_hints_ms = now.mono_ms + CSIM_HINTS_PERIOD_MS;
	return n; /* its map: cache_world_start, once it is up */
}

static void cache_destroy(void *core)
{
	struct cnode *n = core;
	while (n->ops) {
		struct cop *o = n->ops;
		n->ops = o->next;
		free(o->entry);
		free(o->key);
		free(o->newest);
		free(o);
	}
	while (n->batches) {
		struct hint_batch *b = n->batches;
		n->batches = b->next;
		free(b);
	}
	while (n->parked) {
		struct parked *pk = n->parked;
		n->parked = pk->next;
		free(pk);
	}
	crepl_hints_clear(&n->hints);
	ae_clear(n);
	if (n->have_map)
		cplace_map_free(&n->map);
	cstore_destroy(n->st);
	free(n);
}

static uint64_t cache_next_deadline(void *core)
{
	struct cnode *n = core;
	uint64_t next = UINT64_MAX;
	for (uint32_t i = 0; i < n->n_live; i++) {
		const struct creq *r = &n->reqs[n->live[i]];
		if (r->deadline_ms < next)
			next = r->deadline_ms;
	}
	if (n->view_at && n->view_at < next)
		next = n->view_at;
	if (n->ae.phase == 2)
		return mono(n);
	if (n->ae.phase == 0 && n->ae.next_ms < next)
		next = n->ae.next_ms;
	if (n->hints.head && n->next_hints_ms < next)
		next = n->next_hints_ms;
	return next;
}

static void cache_tick(void *core, struct now now)
{
	struct cnode *n = core;
	/* requests whose time is up: one at a time, since a callback may send */
	for (;;) {
		uint32_t due = UINT32_MAX;
		for (uint32_t i = 0; i < n->n_live && due == UINT32_MAX; i++)
			if (n->reqs[n->live[i]].deadline_ms <= now.mono_ms)
				due = n->live[i];
		if (due == UINT32_MAX)
			break;
		creq_fn cb = n->reqs[due].cb;
		void *arg = n->reqs[due].arg;
		req_release(n, due);
		if (cb)
			cb(n, arg, CH_ERR_TIMEOUT, NULL);
	}
	if (n->view_at && now.mono_ms >= n->view_at) {
		n->view = n->view_next;
		n->view_at = 0;
		map_refresh(n);
	}
	if (n->hints.head && now.mono_ms >= n->next_hints_ms) {
		n->next_hints_ms = now.mono_ms + CSIM_HINTS_PERIOD_MS;
		hints_replay(n);
	}
	if (n->ae.phase == 0 && now.mono_ms >= n->ae.next_ms) {
		n->ae.next_ms = now.mono_ms + CSIM_AE_PERIOD_MS;
		ae_start(n);
	} else if (n->ae.phase == 2) {
		ae_step(n);
	}
}

static int cache_on_message(void *core, struct now now, uint32_t from, const uint8_t *bytes, size_t len)
{
	struct cnode *n = core;
	(void)now;
	if (len > CSIM_FRAME_BYTES_MAX)
		return -1;
	Chorus__Envelope *env = chorus__envelope__unpack(NULL, len, bytes);
	if (!env)
		return -1;
	int rc = 0;
	if (env->sender.len != CPLACE_ID_BYTES || cache_world_node_of(n->w, env->sender.data) != from) {
		rc = -2;
		goto out;
	}
	switch (env->body_case) {
	case CHORUS__ENVELOPE__BODY_CACHE_REPL:
		handle_repl(n, from, env->request_id, env->cache_repl);
		break;
	case CHORUS__ENVELOPE__BODY_CACHE:
		handle_forwarded(n, from, env->request_id, env->cache);
		break;
	case CHORUS__ENVELOPE__BODY_CACHE_REPL_RESP:
	case CHORUS__ENVELOPE__BODY_CACHE_RESP:
	case CHORUS__ENVELOPE__BODY_ERROR: {
		uint32_t slot = (uint32_t)(env->request_id & 0xffff);
		uint32_t gen = (uint32_t)(env->request_id >> 16);
		if (slot >= CSIM_REQS_MAX || n->reqs[slot].gen != gen || gen == 0 || n->reqs[slot].to != from)
			break; /* it timed out: late answers are dropped */
		creq_fn cb = n->reqs[slot].cb;
		void *arg = n->reqs[slot].arg;
		req_release(n, slot);
		if (cb)
			cb(n, arg, 0, env);
		break;
	}
	default:
		rc = -3;
		break;
	}
out:
	chorus__envelope__free_unpacked(env, NULL);
	return rc;
}

const struct sim_driver sim_driver_cache = {
	.name = "cache",
	.create = cache_create,
	.destroy = cache_destroy,
	.next_deadline_ms = cache_next_deadline,
	.tick = cache_tick,
	.on_message = cache_on_message,
};

/* ---- the world ---- */

static uint32_t bugs_from_env(void)
{
	const char *e = getenv("SIM_CACHE_BUG");
	uint32_t b = 0;
	if (!e)
		return 0;
	if (strstr(e, "drift0"))
		b |= CSIM_BUG_DRIFT0;
	if (strstr(e, "ack-refused"))
		b |= CSIM_BUG_ACK_REFUSED;
	if (strstr(e, "accounting"))
		b |= CSIM_BUG_ACCOUNTING;
	if (strstr(e, "drop-race"))
		b |= CSIM_BUG_DROP_RACE;
	if (strstr(e, "settle-hope"))
		b |= CSIM_BUG_SETTLE_HOPE;
	if (strstr(e, "epoch-deaf"))
		b |= CSIM_BUG_EPOCH_DEAF;
	if (strstr(e, "other-map"))
		b |= CSIM_BUG_OTHER_MAP;
	if (strstr(e, "alone"))
		b |= CSIM_BUG_ALONE;
	if (strstr(e, "handover-old"))
		b |= CSIM_BUG_HANDOVER_OLD;
	if (strstr(e, "no-settle"))
		b |= CSIM_BUG_NO_SETTLE;
	return b;
}

struct cache_world *cache_world_new(const struct sim_run *run, uint32_t n)
{
	assert(n >= 1 && n <= CSIM_NODES_MAX);
	struct cache_world *w = xcalloc(1, sizeof(*w));
	w->n = n;
	w->link_max = CSIM_LINK_MAX;
	w->bugs = bugs_from_env();
	if (getenv("SIM_CACHE_TRACE"))
		w->trace = (uint32_t)strtoul(getenv("SIM_CACHE_TRACE"), NULL, 10) + 1;
	struct sim_run r = *run;
	r.n = n;
	w->sim = sim_create(&sim_driver_cache, w, &r);
	struct rng *rng = sim_rng(w->sim);
	for (uint32_t i = 0; i < n; i++) {
		for (int k = 0; k < CPLACE_ID_BYTES; k += 8) {
			uint64_t x = rng_next(rng);
			memcpy(w->ids[i] + k, &x, 8);
		}
		w->ids[i][15] = (uint8_t)i; /* distinct whatever the draws */
		/* NTP-synced wall clocks: within +-100 ms of each other */
		struct now t = sim_node_clock(w->sim, i);
		int64_t offset = (int64_t)t.wall_ms - (int64_t)sim_now(w->sim);
		int64_t want = 1700000000000LL + (int64_t)rng_below(rng, 201) - 100;
		sim_clock_jump(w->sim, i, want - offset);
	}
	return w;
}

void cache_world_free(struct cache_world *w)
{
	if (!w)
		return;
	sim_destroy(w->sim);
	free(w);
}

static struct cnode *node_of(const struct cache_world *w, uint32_t node)
{
	return sim_node_up(w->sim, node) ? sim_node_core(w->sim, node) : NULL;
}

void cache_world_start(struct cache_world *w, uint32_t node, uint64_t join_ms)
{
	w->lives[node]++;
	w->started_at[node] = sim_now(w->sim);
	if (sim_node_start(w->sim, node) != 0)
		return;
	struct cnode *n = sim_node_core(w->sim, node);
	map_refresh(n);
	if (n->seeded) {
		n->view_next = w->truth;
		n->view_at = mono(n) + (join_ms ? join_ms : 1);
	}
	sim_node_poke(w->sim, node);
}

void cache_world_crash(struct cache_world *w, uint32_t node)
{
	if (!sim_node_up(w->sim, node))
		return;
	w->downs[node]++;
	sim_node_crash(w->sim, node);
}

void cache_world_view(struct cache_world *w, uint32_t nodes, uint32_t view, uint64_t min_ms, uint64_t max_ms)
{
	struct rng *rng = sim_rng(w->sim);
	for (uint32_t i = 0; i < w->n; i++) {
		struct cnode *n = node_of(w, i);
		if (!n || !(nodes & node_bit(i)))
			continue;
		n->view_next = view;
		n->view_at = mono(n) + min_ms + rng_below(rng, (uint32_t)(max_ms - min_ms + 1));
		if (n->view_at == 0)
			n->view_at = 1;
		sim_node_poke(w->sim, i);
	}
}

void cache_world_members(struct cache_world *w, uint32_t truth, uint64_t min_ms, uint64_t max_ms)
{
	w->truth = truth;
	cache_world_view(w, (1u << w->n) - 1, truth, min_ms, max_ms);
}

void cache_world_submit(struct cache_world *w, uint32_t node, const Chorus__CacheReq *req, csim_reply_fn cb,
                        void *arg)
{
	struct cnode *n = node_of(w, node);
	assert(n);
	node_submit(n, req, cb, arg);
	sim_node_poke(w->sim, node);
}

struct cstore *cache_world_store(const struct cache_world *w, uint32_t node)
{
	struct cnode *n = node_of(w, node);
	return n ? n->st : NULL;
}

const struct cplace_map *cache_world_map(const struct cache_world *w, uint32_t node)
{
	struct cnode *n = node_of(w, node);
	return n && n->have_map ? &n->map : NULL;
}

uint32_t cache_world_view_of(const struct cache_world *w, uint32_t node)
{
	struct cnode *n = node_of(w, node);
	return n ? n->view | node_bit(node) : 0;
}

bool cache_world_serving(const struct cache_world *w, uint32_t node)
{
	struct cnode *n = node_of(w, node);
	return n && serving(n);
}

bool cache_world_settling(const struct cache_world *w, uint32_t node)
{
	struct cnode *n = node_of(w, node);
	return n && n->ae.rounds < n->settle_until;
}

uint32_t cache_world_ops_open(const struct cache_world *w, uint32_t node, uint64_t older_than_ms)
{
	struct cnode *n = node_of(w, node);
	uint32_t k = 0;
	for (const struct cop *o = n ? n->ops : NULL; o; o = o->next)
		if (!o->answered && o->started_ms + older_than_ms <= mono(n))
			k++;
	return k;
}

uint64_t cache_world_hints(const struct cache_world *w, uint32_t node)
{
	struct cnode *n = node_of(w, node);
	return n ? n->hints.count : 0;
}

uint64_t cache_world_wall(const struct cache_world *w, uint32_t node)
{
	return sim_node_clock(w->sim, node).wall_ms;
}
