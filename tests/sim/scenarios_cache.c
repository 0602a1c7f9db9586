/*
 * scenarios_cache.c - the cache's replication protocol under the simulator
 * (driver_cache.h: what a node does and what is modelled).
 *
 * Clients (four to six) each run one request at a time against a
 * random up node: PUT (unique values), DEL and GET on a few dozen keys, at
 * QUORUM (one in ten at ALL), retrying CH_ERR_MOVED elsewhere. An oracle
 * keeps every acknowledged write (its version, when the client saw the
 * answer, its partition's owners in the primary's map then, and how often
 * each had crashed by then). Invariants:
 *
 *   (a) durability and visibility: a QUORUM-acknowledged write W (ALL
 *       counts) is never lost while at most one of its partition's owners
 *       (at the write or since) failed (crashed or left) since W: some up
 *       node holds W or a newer version of its key (checked every 250 ms
 *       and at each crash); and, on the
 *       same condition, every successful QUORUM read that started after W
 *       was acknowledged returns W's version or a newer one. (With two
 *       owners failed, W may sit on one node until anti-entropy copies it
 *       back; with one failed and a join or leave since, its copies may
 *       sit on non-owners until a round hands them over (within 8 s of the
 *       change): such misses are counted, not failed.) Only reads that start
 *       while a split brain is in force (both sides of a long partition
 *       rebuilt their maps without the other), or within a grace after it
 *       heals, are exempt: such a read may miss what the other side
 *       acknowledged, by design (docs/cache.md); after the grace (8 s)
 *       they are checked again, and against the writes acknowledged on
 *       either side. A value read must be the one written with that
 *       version (no phantom).
 *   (b) convergence: after healing, restarts and a quiet period with
 *       anti-entropy rounds, every node has the same map, the owners of
 *       each partition hold identical digests and no other node holds any
 *       of it (handovers finished); every key then reads back at QUORUM
 *       from a random node with at least its newest acknowledged version.
 *   (c) handover: a node drops a partition only when every owner of its
 *       map (up, not restarted during the round) holds each of the dropped
 *       entries or a newer version, and it is never the last copy.
 *   (d) liveness: a node answers every request it took within the
 *       forward timeout and a second (unless it crashed), and no operation
 *       is left open at the end.
 *
 * Scenarios: cache-writers, cache-crash, cache-partition, cache-join,
 * cache-leave, cache-skew, and cache-chaos (all of them at once, longer).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chorus.h"
#include "driver_cache.h"
#include "lib/err.h"

enum { SC_WRITERS = 201, SC_CRASH, SC_PARTITION, SC_JOIN, SC_LEAVE, SC_CHAOS, SC_SKEW };

#define KEYS_MAX 64
#define CLIENTS_MAX 8
#define CLIENT_GIVE_UP_MS (2 * CSIM_TIMEOUT_MS + 1000) /* (d) */
/* After a split brain heals, writes one side acknowledged reach the
 * other's owners by anti-entropy: maps merge within 1.5 s, and the round
 * that hands a partition over may first wait out a crashed member (2 s
 * for digests, 2 s for pushes) and start 300 ms later: about 6 s at worst.
 * With no grace 79 runs in 100 fail; 3 s failed 2 in 9,600 (a crash right
 * after the heal); 8 s none. */
#define SPLIT_GRACE_MS 8000
/* One owner of a write failed, then a join or leave took its partition
 * from the other: until that node's next anti-entropy round hands it over
 * (docs/cache.md, "The simulator", what is left), the only copies sit on
 * non-owners and QUORUM reads miss it. Such a miss is counted, not failed,
 * within this long after the membership change; later it fails. */
#define HANDOVER_GRACE_MS 8000
#define WINDOWS_MAX 64

struct wrec {
	struct cstore_version v;
	uint64_t acked_at;
	uint32_t owners;              /* bit per node: owners of its partition in the primary's map */
	uint32_t downs[CSIM_NODES_MAX];
	bool excused;                 /* lost, with two owners or more failed since: not required */
	bool tombstone;
	char value[40];               /* a PUT's (unique) value */
};

struct keyrec {
	struct wrec *w;
	uint32_t n, cap;
};

struct ctx;

struct client {
	struct ctx *x;
	uint32_t id;
	bool busy;                    /* an attempt is out */
	bool pending;                 /* an op waits for its (next) attempt */
	int op;                       /* CacheOp */
	uint32_t key;
	int consistency;
	char value[40];
	uint32_t seq;
	uint64_t next_at;             /* virtual ms of the next attempt or op */
	uint64_t attempt_at;
	uint32_t node, node_life;
	uint32_t attempts;
	uint32_t downs_at_attempt[CSIM_NODES_MAX]; /* failures so far when the attempt began */
};

struct window {
	uint64_t from, until;         /* reads started in [from, until) are not checked */
};

struct ctx {
	struct cache_world *w;
	struct sim *s;
	const struct sim_run *run;
	uint32_t key_count;
	char keys[KEYS_MAX][16];
	struct keyrec rec[KEYS_MAX];
	struct client clients[CLIENTS_MAX];
	uint32_t client_count;
	uint32_t usable;              /* nodes clients may pick (up, members) */
	bool quiet;                   /* no new operations */
	struct window windows[WINDOWS_MAX];
	uint32_t window_count;
	uint64_t split_open;          /* a split brain's window start, 0 = none */
	/* statistics */
	uint64_t ops, acked, write_errors, reads_ok, reads_checked, reads_exempt, read_errors, moved_retries;
	uint64_t excused, crashes;
	uint64_t unpromised;          /* reads that missed a write two of whose owners failed since */
	uint64_t handover_lag;        /* reads that missed a write one owner failure and a map change left on non-owners */
	uint64_t members_changed_at;  /* the last membership change (virtual ms) */
};

static uint32_t bit(uint32_t i)
{
	return 1u << i;
}

/* ---- the oracle ---- */

static uint64_t now_of(const struct ctx *x)
{
	return sim_now(x->s);
}

static void version_str(const struct cstore_version *v, char *out, size_t len)
{
	snprintf(out, len, "%" PRIu64 ".%u@n%u", v->hlc >> 16, (unsigned)(v->hlc & 0xffff),
	         (unsigned)v->node[15]);
}

/* The newest version of key held by an up node (hlc 0 = none); *holders
 * gets those holding at least `at_least` (may be NULL). */
static struct cstore_version held_max(const struct ctx *x, uint32_t key, const struct cstore_version *at_least,
                                      uint32_t *holders)
{
	struct cstore_version best;
	memset(&best, 0, sizeof(best));
	if (holders)
		*holders = 0;
	for (uint32_t i = 0; i < x->w->n; i++) {
		struct cstore *st = cache_world_store(x->w, i);
		struct cstore_item it;
		if (!st || cstore_peek(st, x->keys[key], strlen(x->keys[key]), cache_world_wall(x->w, i), &it) != 0)
			continue;
		if (cstore_version_cmp(&it.version, &best) > 0)
			best = it.version;
		if (holders && at_least && cstore_version_cmp(&it.version, at_least) >= 0)
			*holders |= bit(i);
	}
	return best;
}

/* The owners of key's partition in any up node's map now (bit per node). */
static uint32_t owners_now(const struct ctx *x, uint32_t key)
{
	uint32_t owners = 0;
	for (uint32_t i = 0; i < x->w->n; i++) {
		const struct cplace_map *m = cache_world_map(x->w, i);
		if (!m)
			continue;
		uint16_t p = cplace_partition(x->keys[key], strlen(x->keys[key]), m->partition_count);
		for (uint8_t k = 0; k < m->owner_count; k++)
			owners |= bit(cache_world_node_of(x->w, cplace_owner_id(m, p, k)));
	}
	return owners;
}

/* Failures (crashes, leaves) since r of the owners of its partition, at
 * the write or now: "at most one of the owners failed since the write"
 * counts a node that became an owner (and a holder) later too. */
static uint32_t failed_since(const struct ctx *x, uint32_t key, const struct wrec *r)
{
	uint32_t owners = r->owners | owners_now(x, key), k = 0;
	for (uint32_t i = 0; i < x->w->n; i++)
		if ((owners & bit(i)) && x->w->downs[i] > r->downs[i])
			k++;
	return k;
}

/* (a), durability: every acknowledged write of every key is held by an up
 * node (it or newer), or its loss is excused by two failures. */
static int check_durable(struct sim *s, void *ctx, uint32_t node, char *why, size_t why_bytes)
{
	struct ctx *x = ctx;
	(void)s;
	(void)node;
	for (uint32_t k = 0; k < x->key_count; k++) {
		struct keyrec *kr = &x->rec[k];
		if (!kr->n)
			continue;
		struct cstore_version best = held_max(x, k, NULL, NULL);
		for (uint32_t j = 0; j < kr->n; j++) {
			struct wrec *r = &kr->w[j];
			if (r->excused || cstore_version_cmp(&best, &r->v) >= 0)
				continue;
			uint32_t f = failed_since(x, k, r);
			if (f >= 2) {
				r->excused = true;
				x->excused++;
				continue;
			}
			char a[48], b[48];
			version_str(&r->v, a, sizeof(a));
			version_str(&best, b, sizeof(b));
			snprintf(why, why_bytes,
			         "acknowledged write %s of %s (at t=%" PRIu64 ", owners 0x%x) is held by no up node "
			         "(newest held %s) though only %u of its owners failed since",
			         a, x->keys[k], r->acked_at, r->owners, best.hlc ? b : "none", f);
			return 1;
		}
	}
	return 0;
}

static bool exempt(const struct ctx *x, uint64_t t)
{
	if (x->split_open && t >= x->split_open)
		return true;
	for (uint32_t i = 0; i < x->window_count; i++)
		if (t >= x->windows[i].from && t < x->windows[i].until)
			return true;
	return false;
}

/* The owners of key's partition in the map of the primary that served a
 * read taken at node (the primary in node's map; bit per node). */
static uint32_t owners_for_read(const struct ctx *x, uint32_t node, uint32_t key)
{
	const struct cplace_map *m = cache_world_map(x->w, node);
	if (!m)
		return 0;
	uint16_t p = cplace_partition(x->keys[key], strlen(x->keys[key]), m->partition_count);
	uint32_t primary = cache_world_node_of(x->w, cplace_owner_id(m, p, 0));
	const struct cplace_map *pm = primary != SIM_NONE ? cache_world_map(x->w, primary) : NULL;
	if (pm)
		m = pm;
	uint32_t owners = 0;
	for (uint8_t k = 0; k < m->owner_count; k++)
		owners |= bit(cache_world_node_of(x->w, cplace_owner_id(m, p, k)));
	return owners;
}

/* (a), visibility: a read's answer against every write acknowledged
 * before the read started. */
static void check_read(struct ctx *x, const struct client *c, const Chorus__CacheResp *resp)
{
	struct cstore_version got;
	memset(&got, 0, sizeof(got));
	if (resp->version && resp->version->node.len == CPLACE_ID_BYTES) {
		got.hlc = resp->version->hlc;
		memcpy(got.node, resp->version->node.data, CPLACE_ID_BYTES);
	}
	struct keyrec *kr = &x->rec[c->key];
	/* no phantom: a value comes back with the version it was written with */
	if (resp->found) {
		char v[48];
		snprintf(v, sizeof(v), "%.*s", (int)resp->value.len, (const char *)resp->value.data);
		if (v[0] != 'c') {
			sim_fail(x->s, "read of %s returned a value never written: \"%s\"", x->keys[c->key], v);
			return;
		}
		for (uint32_t j = 0; j < kr->n; j++)
			if (!kr->w[j].tombstone && strcmp(kr->w[j].value, v) == 0 &&
			    cstore_version_cmp(&kr->w[j].v, &got) != 0) {
				sim_fail(x->s, "read of %s returned \"%s\" with another version than it was written with",
				         x->keys[c->key], v);
				return;
			}
	}
	if (exempt(x, c->attempt_at)) {
		x->reads_exempt++;
		return;
	}
	x->reads_checked++;
	for (uint32_t j = 0; j < kr->n; j++) {
		struct wrec *r = &kr->w[j];
		if (r->excused || r->acked_at >= c->attempt_at || cstore_version_cmp(&got, &r->v) >= 0)
			continue;
		uint32_t holders = 0;
		(void)held_max(x, c->key, &r->v, &holders);
		if (failed_since(x, c->key, r) >= 2) {
			/* beyond the promise: kept on one node, it may be missed
			 * until anti-entropy copies it back (or lost, if none) */
			x->unpromised++;
			if (!holders) {
				r->excused = true;
				x->excused++;
			}
			continue;
		}
		if (failed_since(x, c->key, r) == 1 && x->members_changed_at > r->acked_at &&
		    c->attempt_at < x->members_changed_at + HANDOVER_GRACE_MS && holders &&
		    !(holders & owners_for_read(x, c->node, c->key))) {
			x->handover_lag++; /* the known window: see HANDOVER_GRACE_MS */
			continue;
		}
		char a[48], b[48];
		version_str(&r->v, a, sizeof(a));
		version_str(&got, b, sizeof(b));
		sim_fail(x->s,
		         "stale read: %s (partition %u) at QUORUM via node %u (started t=%" PRIu64 ") got %s, but %s was "
		         "acknowledged at t=%" PRIu64 " (owners 0x%x then; held now by 0x%x; %u owner(s) failed since)",
		         x->keys[c->key], cplace_partition(x->keys[c->key], strlen(x->keys[c->key]), CSIM_PARTITIONS),
		         c->node, c->attempt_at, got.hlc ? b : "nothing", a, r->acked_at, r->owners, holders,
		         failed_since(x, c->key, r));
		return;
	}
}

static void record_write(struct ctx *x, const struct client *c, const Chorus__CacheResp *resp)
{
	if (!resp || !resp->version || resp->version->node.len != CPLACE_ID_BYTES)
		return;
	if (c->op == CHORUS__CACHE_OP__CACHE_DEL && resp->integer == 0)
		return; /* nothing was there to delete: nothing replicated */
	struct keyrec *kr = &x->rec[c->key];
	if (kr->n == kr->cap) {
		kr->cap = kr->cap ? kr->cap * 2 : 16;
		kr->w = realloc(kr->w, kr->cap * sizeof(*kr->w));
		if (!kr->w)
			abort();
	}
	struct wrec *r = &kr->w[kr->n++];
	memset(r, 0, sizeof(*r));
	r->v.hlc = resp->version->hlc;
	memcpy(r->v.node, resp->version->node.data, CPLACE_ID_BYTES);
	r->acked_at = now_of(x);
	r->tombstone = c->op == CHORUS__CACHE_OP__CACHE_DEL;
	if (!r->tombstone)
		snprintf(r->value, sizeof(r->value), "%s", c->value);
	uint32_t primary = cache_world_node_of(x->w, r->v.node);
	const struct cplace_map *m = primary != SIM_NONE ? cache_world_map(x->w, primary) : NULL;
	if (!m) /* the primary crashed since it answered: the map its answer came through */
		m = cache_world_map(x->w, c->node);
	if (m) {
		uint16_t p = cplace_partition(x->keys[c->key], strlen(x->keys[c->key]), m->partition_count);
		for (uint8_t k = 0; k < m->owner_count; k++)
			r->owners |= bit(cache_world_node_of(x->w, cplace_owner_id(m, p, k)));
	}
	if (primary != SIM_NONE)
		r->owners |= bit(primary);
	/* failures counted from when the request began: the write happened
	 * after, and its primary may have crashed before the answer arrived */
	memcpy(r->downs, c->downs_at_attempt, sizeof(r->downs));
	x->acked++;
}

/* Whether up nodes other than `except` hold it->key at it->version or
 * newer (bit per node in *holders). */
static bool held_max_item(const struct ctx *x, const struct cstore_item *it, uint32_t except, uint32_t *holders)
{
	*holders = 0;
	for (uint32_t i = 0; i < x->w->n; i++) {
		struct cstore *st = i != except ? cache_world_store(x->w, i) : NULL;
		struct cstore_item held;
		if (st && cstore_peek(st, it->key, it->key_bytes, cache_world_wall(x->w, i), &held) == 0 &&
		    cstore_version_cmp(&held.version, &it->version) >= 0)
			*holders |= bit(i);
	}
	return *holders != 0;
}

/* (c): called by the driver before a node drops a partition: each entry
 * it drops is held (or newer) by every owner of its map (up, and not
 * restarted during the round), and is never the last copy. */
struct drop_scan {
	struct ctx *x;
	uint32_t dropper, partition;
	const struct cplace_map *m;
	int failed;
};

static void drop_visit(void *arg, const struct cstore_item *it)
{
	struct drop_scan *d = arg;
	struct ctx *x = d->x;
	if (d->failed)
		return;
	uint32_t holders = 0;
	(void)held_max_item(x, it, d->dropper, &holders);
	if (!holders) {
		char a[48];
		version_str(&it->version, a, sizeof(a));
		sim_fail(x->s, "node %u dropped partition %u holding the last copy of %.*s %s", d->dropper, d->partition,
		         (int)it->key_bytes, (const char *)it->key, a);
		d->failed = 1;
		return;
	}
	for (uint8_t k = 0; k < d->m->owner_count; k++) {
		uint32_t o = cache_world_node_of(x->w, cplace_owner_id(d->m, (uint16_t)d->partition, k));
		struct cstore *st = o != SIM_NONE ? cache_world_store(x->w, o) : NULL;
		if (!st || x->w->started_at[o] + 2 * CSIM_AE_PERIOD_MS + CSIM_TIMEOUT_MS > now_of(x))
			continue; /* down, or restarted during the round: it lost what it said */
		struct cstore_item held;
		if (cstore_peek(st, it->key, it->key_bytes, cache_world_wall(x->w, o), &held) == 0 &&
		    cstore_version_cmp(&held.version, &it->version) >= 0)
			continue;
		char a[48];
		version_str(&it->version, a, sizeof(a));
		sim_fail(x->s, "node %u dropped partition %u holding %.*s %s, which its owner node %u does not hold",
		         d->dropper, d->partition, (int)it->key_bytes, (const char *)it->key, a, o);
		d->failed = 1;
		return;
	}
}

static void on_drop(void *ctx, uint32_t node, uint32_t partition)
{
	struct ctx *x = ctx;
	struct drop_scan d = {.x = x, .dropper = node, .partition = partition, .m = cache_world_map(x->w, node)};
	struct cstore *st = cache_world_store(x->w, node);
	if (!d.m || !st)
		return;
	uint64_t cur = 0;
	do {
		if (cstore_partition_scan(st, (uint16_t)partition, cur, 1u << 20, cache_world_wall(x->w, node),
		                          drop_visit, &d, &cur) != 0)
			break;
	} while (cur && !d.failed);
}

/* ---- clients ---- */

static void client_done(void *arg, int code, const Chorus__CacheResp *resp)
{
	struct client *c = arg;
	struct ctx *x = c->x;
	if (!c->busy)
		return; /* cannot happen: a client waits for its attempt's answer or its node's crash */
	c->busy = false;
	struct rng *rng = sim_rng(x->s);
	if (code == CH_ERR_MOVED && c->attempts < 50) {
		/* libchorus and the RESP listener retry MOVED */
		x->moved_retries++;
		c->pending = true;
		c->next_at = now_of(x) + 20 + rng_below(rng, 80);
		return;
	}
	c->pending = false;
	c->next_at = now_of(x) + 5 + rng_below(rng, 30);
	if (c->op == CHORUS__CACHE_OP__CACHE_GET) {
		if (code != 0) {
			x->read_errors++;
			return;
		}
		x->reads_ok++;
		check_read(x, c, resp);
		return;
	}
	if (code != 0) {
		x->write_errors++;
		return;
	}
	record_write(x, c, resp);
}

static uint32_t pick_node(struct ctx *x)
{
	uint32_t cand[CSIM_NODES_MAX], k = 0;
	for (uint32_t i = 0; i < x->w->n; i++)
		if ((x->usable & bit(i)) && sim_node_up(x->s, i))
			cand[k++] = i;
	return k ? cand[rng_below(sim_rng(x->s), k)] : SIM_NONE;
}

static void client_attempt(struct ctx *x, struct client *c)
{
	uint32_t node = pick_node(x);
	if (node == SIM_NONE) {
		c->next_at = now_of(x) + 50;
		return;
	}
	Chorus__CacheReq req = CHORUS__CACHE_REQ__INIT;
	req.op = (Chorus__CacheOp)c->op;
	req.cache = "default";
	req.key.data = (uint8_t *)x->keys[c->key];
	req.key.len = strlen(x->keys[c->key]);
	if (c->op == CHORUS__CACHE_OP__CACHE_PUT) {
		req.value.data = (uint8_t *)c->value;
		req.value.len = strlen(c->value);
	}
	req.consistency = (Chorus__Consistency)c->consistency;
	c->busy = true;
	c->attempts++;
	c->node = node;
	c->node_life = x->w->lives[node];
	c->attempt_at = now_of(x);
	memcpy(c->downs_at_attempt, x->w->downs, sizeof(c->downs_at_attempt));
	cache_world_submit(x->w, node, &req, client_done, c);
}

static void client_new_op(struct ctx *x, struct client *c)
{
	struct rng *rng = sim_rng(x->s);
	uint32_t r = rng_below(rng, 100);
	c->op = r < 45 ? CHORUS__CACHE_OP__CACHE_PUT : r < 55 ? CHORUS__CACHE_OP__CACHE_DEL : CHORUS__CACHE_OP__CACHE_GET;
	/* a few hot keys take half the traffic: concurrent writers meet */
	c->key = rng_below(rng, 2) ? rng_below(rng, 4) : rng_below(rng, x->key_count);
	c->consistency = rng_below(rng, 10) == 0 ? CH_CACHE_ALL : CH_CACHE_QUORUM;
	snprintf(c->value, sizeof(c->value), "c%u-%u", c->id, ++c->seq);
	c->attempts = 0;
	c->pending = true;
	x->ops++;
	client_attempt(x, c);
}

/* One step of every client, and (d) for attempts out. */
static void clients_step(struct ctx *x)
{
	uint64_t now = now_of(x);
	for (uint32_t i = 0; i < x->client_count && !sim_failed(x->s); i++) {
		struct client *c = &x->clients[i];
		if (c->busy) {
			if (!sim_node_up(x->s, c->node) || x->w->lives[c->node] != c->node_life) {
				c->busy = false; /* its node crashed: the outcome is unknown */
				c->pending = false;
				c->next_at = now + 10;
			} else if (now > c->attempt_at + CLIENT_GIVE_UP_MS) {
				sim_fail(x->s, "liveness: node %u has not answered a %s of %s in %u ms", c->node,
				         c->op == CHORUS__CACHE_OP__CACHE_GET ? "GET" : c->op == CHORUS__CACHE_OP__CACHE_PUT ? "PUT" : "DEL",
				         x->keys[c->key], CLIENT_GIVE_UP_MS);
			}
			continue;
		}
		if (now < c->next_at)
			continue;
		if (c->pending)
			client_attempt(x, c);
		else if (!x->quiet)
			client_new_op(x, c);
	}
}

/* Runs ms of virtual time with the clients going, in 5 ms steps. */
static int run_load(struct ctx *x, uint64_t ms)
{
	uint64_t end = now_of(x) + ms;
	while (now_of(x) < end && !sim_failed(x->s)) {
		clients_step(x);
		if (sim_run_for(x->s, 5) != 0)
			break;
	}
	return sim_failed(x->s) ? -1 : 0;
}

/* ---- a run ---- */

static struct ctx *ctx_new(const struct sim_run *run, uint32_t n, uint32_t members, uint32_t clients)
{
	struct ctx *x = calloc(1, sizeof(*x));
	if (!x)
		abort();
	x->run = run;
	x->w = cache_world_new(run, n);
	x->s = x->w->sim;
	x->w->on_drop = on_drop;
	x->w->hook_ctx = x;
	x->key_count = 40;
	for (uint32_t k = 0; k < x->key_count; k++)
		snprintf(x->keys[k], sizeof(x->keys[k]), "k%u", k);
	x->client_count = clients;
	for (uint32_t i = 0; i < clients; i++) {
		x->clients[i].x = x;
		x->clients[i].id = i;
		x->clients[i].next_at = now_of(x) + 100 + i;
	}
	x->w->truth = members;
	x->usable = members;
	for (uint32_t i = 0; i < n; i++)
		if (members & bit(i))
			cache_world_start(x->w, i, 0);
	x->w->seeded = (1u << n) - 1; /* from now on every start joins through seeds */
	sim_check_add(x->s, "durable", check_durable, x, 250);
	sim_net_dup_ppm(x->s, 0);
	return x;
}

static void ctx_free(struct ctx *x)
{
	for (uint32_t k = 0; k < KEYS_MAX; k++)
		free(x->rec[k].w);
	cache_world_free(x->w);
	free(x);
}

/* The member set SWIM converges to changes; each node learns it after a
 * delay in [min_ms, max_ms]. */
static void members(struct ctx *x, uint32_t truth, uint64_t min_ms, uint64_t max_ms)
{
	cache_world_members(x->w, truth, min_ms, max_ms);
	x->members_changed_at = now_of(x);
}

static void crash(struct ctx *x, uint32_t node)
{
	cache_world_crash(x->w, node);
	x->crashes++;
	if (!sim_failed(x->s))
		(void)sim_check_all(x->s); /* durability right after a loss */
}

static void window_add(struct ctx *x, uint64_t from, uint64_t until)
{
	if (x->window_count < WINDOWS_MAX)
		x->windows[x->window_count++] = (struct window){from, until};
}

/* The end of every run: heal, restart, quiet, then (b), (d) and the final
 * read-back of (a). */
static void finish(struct ctx *x)
{
	struct sim *s = x->s;
	struct cache_world *w = x->w;
	if (sim_failed(s))
		return;
	sim_net_heal(s);
	sim_net_loss_ppm(s, 0);
	if (x->split_open) {
		window_add(x, x->split_open, now_of(x) + SPLIT_GRACE_MS);
		x->split_open = 0;
	}
	for (uint32_t i = 0; i < w->n; i++)
		if ((w->truth & bit(i)) && !sim_node_up(s, i))
			cache_world_start(w, i, 300);
	members(x, w->truth, 100, 1000);
	x->usable = w->truth;
	x->quiet = true;
	/* answers in flight come back; then anti-entropy goes round */
	(void)run_load(x, 3000);
	(void)run_load(x, 8 * CSIM_AE_PERIOD_MS);
	if (sim_failed(s))
		return;
	/* (d): nothing left open */
	for (uint32_t i = 0; i < w->n; i++)
		if (sim_node_up(s, i) && cache_world_ops_open(w, i, 0)) {
			sim_fail(s, "liveness: node %u has %u operation(s) never answered", i, cache_world_ops_open(w, i, 0));
			return;
		}
	/* (b): one map, owners equal, nobody else holding */
	const struct cplace_map *m0 = NULL;
	for (uint32_t i = 0; i < w->n; i++) {
		if (!sim_node_up(s, i))
			continue;
		const struct cplace_map *m = cache_world_map(w, i);
		if (!m0)
			m0 = m;
		if (!m || m->epoch != m0->epoch) {
			sim_fail(s, "convergence: node %u's map differs after the quiet period", i);
			return;
		}
	}
	for (uint32_t p = 0; m0 && p < m0->partition_count; p++) {
		uint64_t digest = 0;
		bool first = true;
		for (uint32_t i = 0; i < w->n; i++) {
			if (!sim_node_up(s, i))
				continue;
			struct cstore_partition_stats ps;
			if (cstore_partition_stats(cache_world_store(w, i), (uint16_t)p, &ps) != 0)
				continue;
			int rank = cplace_rank(m0, (uint16_t)p, (uint32_t)cplace_member_find(m0, w->ids[i]));
			if (rank < 0) {
				if (ps.entries + ps.tombstones) {
					sim_fail(s, "convergence: node %u still holds %" PRIu64 " entries of partition %u it does "
					            "not own",
					         i, ps.entries + ps.tombstones, p);
					return;
				}
				continue;
			}
			if (!first && ps.digest != digest) {
				sim_fail(s, "convergence: the owners of partition %u hold different digests", p);
				return;
			}
			digest = ps.digest;
			first = false;
		}
	}
	/* (a), once more: every key read back */
	for (uint32_t k = 0; k < x->key_count && !sim_failed(s); k++) {
		struct client *c = &x->clients[0];
		c->op = CHORUS__CACHE_OP__CACHE_GET;
		c->key = k;
		c->consistency = CH_CACHE_QUORUM;
		c->attempts = 0;
		c->pending = true;
		c->next_at = now_of(x);
		uint64_t end = now_of(x) + 10000;
		while ((c->pending || c->busy) && now_of(x) < end && !sim_failed(s)) {
			clients_step(x);
			(void)sim_run_for(s, 5);
		}
		if (c->pending || c->busy)
			sim_fail(s, "the final read of %s was not answered", x->keys[k]);
	}
}

static void report(const struct ctx *x)
{
	const struct cache_world *w = x->w;
	if (!x->run->verbose)
		return;
	printf("%s n=%u seed=%" PRIu64 ": %" PRIu64 " ops, %" PRIu64 " writes acked, %" PRIu64 " failed; %" PRIu64
	       " reads ok (%" PRIu64 " checked, %" PRIu64 " exempt), %" PRIu64 " failed; %" PRIu64 " MOVED retried; %" PRIu64
	       " crashes, %" PRIu64 " excused, %" PRIu64 " unpromised misses, %" PRIu64 " handover misses; repairs %" PRIu64 ", hints %" PRIu64 "/%" PRIu64 ", ae rounds %" PRIu64
	       " pushed %" PRIu64 ", dropped %" PRIu64 " partitions (%" PRIu64 " entries), settle reads %" PRIu64
	       ", sends full %" PRIu64 ", drift refusals %" PRIu64 ", %" PRIu64 " msgs\n",
	       x->run->scenario, w->n, x->run->seed, x->ops, x->acked, x->write_errors, x->reads_ok, x->reads_checked,
	       x->reads_exempt, x->read_errors, x->moved_retries, x->crashes, x->excused, x->unpromised, x->handover_lag, w->repairs,
	       w->hints_delivered, w->hints_added, w->ae_rounds, w->ae_pushed, w->dropped_partitions,
	       w->dropped_entries, w->settle_reads, w->send_full, w->refused_drift, sim_sent(w->sim));
}

/* What a CI row exercised, summed over its runs. */
static struct {
	uint64_t acked, checked, exempt, crashes, excused, unpromised, handover_lag, dropped, settle_reads, virtual_ms;
} g_sum;

static int done(struct ctx *x)
{
	finish(x);
	report(x);
	g_sum.acked += x->acked;
	g_sum.checked += x->reads_checked;
	g_sum.exempt += x->reads_exempt;
	g_sum.crashes += x->crashes;
	g_sum.excused += x->excused;
	g_sum.unpromised += x->unpromised;
	g_sum.handover_lag += x->handover_lag;
	g_sum.dropped += x->w->dropped_partitions;
	g_sum.settle_reads += x->w->settle_reads;
	g_sum.virtual_ms += now_of(x) - 1000000;
	int failed = sim_failed(x->s);
	ctx_free(x);
	return failed;
}

static uint32_t all(uint32_t n)
{
	return (1u << n) - 1;
}

/* ---- scenarios ---- */

static int sc_writers(const struct sim_run *run)
{
	struct ctx *x = ctx_new(run, run->n, all(run->n), 6);
	sim_net_loss_ppm(x->s, 10000);
	(void)run_load(x, 20000);
	return done(x);
}

/* One node at a time crashes (its memory is lost) and restarts after
 * 0.3-6 s; down more than 3 s, the others drop it from their maps first
 * (SWIM's verdict), and take it back once it rejoined. */
static void crash_cycle(struct ctx *x, uint64_t ms, bool detect)
{
	struct rng *rng = sim_rng(x->s);
	struct cache_world *w = x->w;
	uint64_t end = now_of(x) + ms;
	while (now_of(x) < end && !sim_failed(x->s)) {
		if (run_load(x, 3000 + rng_below(rng, 4000)) != 0)
			return;
		uint32_t victim = rng_below(rng, w->n);
		if (!sim_node_up(x->s, victim) || !(w->truth & bit(victim)))
			continue;
		crash(x, victim);
		uint64_t down = 300 + rng_below(rng, 5700);
		bool detected = detect && down > 3000;
		if (detected) {
			(void)run_load(x, 2500);
			members(x, w->truth & ~bit(victim), 200, 1500);
			x->usable = w->truth;
			(void)run_load(x, down - 2500);
		} else {
			(void)run_load(x, down);
		}
		if (sim_failed(x->s))
			return;
		cache_world_start(w, victim, 200 + rng_below(rng, 600));
		if (detected) {
			(void)run_load(x, 300 + rng_below(rng, 500));
			members(x, w->truth | bit(victim), 200, 1500);
		}
		x->usable = w->truth;
	}
}

static int sc_crash(const struct sim_run *run)
{
	struct ctx *x = ctx_new(run, run->n, all(run->n), 4);
	sim_net_loss_ppm(x->s, 10000);
	crash_cycle(x, 40000, true);
	return done(x);
}

/* A minority (1 or 2 nodes) is cut off both ways for 1-8 s; a cut longer
 * than 4 s is a split brain: after 2.5-3.5 s each side drops the other
 * from its view, and takes it back 0.2-1.5 s after the heal. */
static void partition_cycle(struct ctx *x, uint64_t ms)
{
	struct rng *rng = sim_rng(x->s);
	struct cache_world *w = x->w;
	uint64_t end = now_of(x) + ms;
	while (now_of(x) < end && !sim_failed(x->s)) {
		if (run_load(x, 2000 + rng_below(rng, 4000)) != 0)
			return;
		uint32_t side = 0, everyone = w->truth;
		uint32_t count = 1 + rng_below(rng, 2);
		for (uint32_t tries = 0; __builtin_popcount(side) < (int)count && tries < 50; tries++) {
			uint32_t i = rng_below(rng, w->n);
			if ((everyone & bit(i)) && sim_node_up(x->s, i))
				side |= bit(i);
		}
		for (uint32_t i = 0; i < w->n; i++)
			sim_net_group(x->s, i, (side & bit(i)) ? 1 : 0);
		sim_net_cut(x->s, 0, 1, 1);
		sim_net_cut(x->s, 1, 0, 1);
		uint64_t dur = 1000 + rng_below(rng, 7000);
		if (dur > 4000) {
			uint64_t detect = 2500 + rng_below(rng, 1000);
			(void)run_load(x, detect);
			x->split_open = now_of(x);
			cache_world_view(w, side, side, 0, 500);
			cache_world_view(w, everyone & ~side, everyone & ~side, 0, 500);
			x->members_changed_at = now_of(x);
			(void)run_load(x, dur - detect);
		} else {
			(void)run_load(x, dur);
		}
		if (sim_failed(x->s))
			return;
		sim_net_heal(x->s);
		if (x->split_open) {
			members(x, everyone, 200, 1500);
			window_add(x, x->split_open, now_of(x) + SPLIT_GRACE_MS);
			x->split_open = 0;
		}
	}
}

static int sc_partition(const struct sim_run *run)
{
	struct ctx *x = ctx_new(run, run->n, all(run->n), 4);
	partition_cycle(x, 40000);
	return done(x);
}

/* The last one or two nodes are not members at first; each joins under
 * load (partitions move to it), 12 s apart. Before half of the joins a
 * member restarts quickly (its memory lost, the others' maps unchanged):
 * until anti-entropy refills it, some writes have one copy fewer when the
 * joiner takes a partition over, which is what settling reads are for. */
static int sc_join(const struct sim_run *run)
{
	uint32_t n = run->n, joiners = n >= 5 ? 2 : 1;
	struct ctx *x = ctx_new(run, n, all(n - joiners), 4);
	struct rng *rng = sim_rng(x->s);
	sim_net_loss_ppm(x->s, 10000);
	(void)run_load(x, 6000);
	for (uint32_t j = n - joiners; j < n && !sim_failed(x->s); j++) {
		if (rng_below(rng, 2)) {
			uint32_t k = rng_below(rng, n - joiners);
			crash(x, k);
			(void)run_load(x, 300 + rng_below(rng, 700));
			cache_world_start(x->w, k, 200 + rng_below(rng, 300));
			(void)run_load(x, rng_below(rng, 1500));
		}
		cache_world_start(x->w, j, 300 + rng_below(rng, 500));
		(void)run_load(x, 200 + rng_below(rng, 400));
		members(x, x->w->truth | bit(j), 300, 1500);
		x->usable = x->w->truth;
		(void)run_load(x, 12000);
	}
	return done(x);
}

/* One or two nodes leave (stop: the cache is in memory, their copies go),
 * 12 s apart; the others learn it within 0.2-1 s. */
static int sc_leave(const struct sim_run *run)
{
	uint32_t n = run->n, leavers = n >= 5 ? 2 : 1;
	struct ctx *x = ctx_new(run, n, all(n), 4);
	struct rng *rng = sim_rng(x->s);
	sim_net_loss_ppm(x->s, 10000);
	(void)run_load(x, 6000);
	for (uint32_t j = 0; j < leavers && !sim_failed(x->s); j++) {
		uint32_t k = rng_below(rng, n);
		while (!(x->w->truth & bit(k)))
			k = (k + 1) % n;
		x->usable = x->w->truth & ~bit(k); /* clients leave it first, as a drained node */
		(void)run_load(x, 100);
		crash(x, k);
		members(x, x->w->truth & ~bit(k), 200, 1000);
		(void)run_load(x, 12000);
	}
	return done(x);
}

/* One node's wall clock runs 1.5 s ahead for 15 s (beyond the 500 ms
 * drift bound): the others refuse what it stamps, so its writes must fail
 * rather than be acknowledged on its copy alone; it crashes once
 * meanwhile. Then its clock is set right and everything converges. */
static int sc_skew(const struct sim_run *run)
{
	struct ctx *x = ctx_new(run, run->n, all(run->n), 4);
	struct rng *rng = sim_rng(x->s);
	sim_net_loss_ppm(x->s, 2000);
	uint32_t k = rng_below(rng, run->n);
	(void)run_load(x, 3000);
	sim_clock_jump(x->s, k, 1500);
	(void)run_load(x, 4000 + rng_below(rng, 4000));
	uint32_t victim = rng_below(rng, 2) ? k : rng_below(rng, run->n);
	crash(x, victim);
	(void)run_load(x, 300 + rng_below(rng, 1500));
	cache_world_start(x->w, victim, 200 + rng_below(rng, 400));
	(void)run_load(x, 6000);
	sim_clock_jump(x->s, k, -1500);
	(void)run_load(x, 5000);
	return done(x);
}

/* Everything at once, longer: crashes (with detection), splits, a join
 * and a leave, 0.5% loss. */
static int sc_chaos(const struct sim_run *run)
{
	uint32_t n = run->n < 4 ? 4 : run->n;
	struct ctx *x = ctx_new(run, n, all(n - 1), 5);
	struct rng *rng = sim_rng(x->s);
	sim_net_loss_ppm(x->s, 5000);
	for (int round = 0; round < 3 && !sim_failed(x->s); round++) {
		crash_cycle(x, 15000, true);
		partition_cycle(x, 15000);
		if (round == 0) {
			cache_world_start(x->w, n - 1, 300 + rng_below(rng, 500));
			(void)run_load(x, 500);
			members(x, all(n), 300, 1500);
			x->usable = x->w->truth;
		} else if (round == 1) {
			uint32_t k = rng_below(rng, n);
			x->usable = x->w->truth & ~bit(k);
			(void)run_load(x, 100);
			crash(x, k);
			members(x, x->w->truth & ~bit(k), 200, 1000);
		}
		(void)run_load(x, 8000);
	}
	return done(x);
}

static const struct sim_scenario SCENARIOS[] = {
    {"cache-writers", "concurrent QUORUM writers and readers, 1% loss: acknowledged writes read back", sc_writers},
    {"cache-crash", "one node at a time crashes (memory lost) and restarts; long downs change the map", sc_crash},
    {"cache-partition", "a minority cut off 1-8 s, split brain beyond 4 s, then healed: converges", sc_partition},
    {"cache-join", "one or two nodes join under load: partitions move, handovers drop only what arrived", sc_join},
    {"cache-leave", "one or two nodes leave under load: their partitions move to the others", sc_leave},
    {"cache-skew", "a wall clock 1.5 s ahead: what it stamps is refused, never acknowledged; one crash", sc_skew},
    {"cache-chaos", "crashes, splits, a join and a leave together, 0.5% loss (longer)", sc_chaos},
    {NULL, NULL, NULL},
};

static struct sim_run run_of(const char *scenario, uint32_t n, uint64_t seed)
{
	return (struct sim_run){.scenario = scenario, .n = n, .seed = seed};
}

static void cache_ci(uint64_t seed, int big)
{
	struct plan {
		const char *name;
		int (*fn)(const struct sim_run *);
		uint32_t id, n, runs, runs_big;
	} plan[] = {
	    {"cache-writers", sc_writers, SC_WRITERS, 3, 5, 200},   {"cache-writers", sc_writers, SC_WRITERS, 5, 5, 200},
	    {"cache-crash", sc_crash, SC_CRASH, 3, 8, 500},         {"cache-crash", sc_crash, SC_CRASH, 5, 8, 500},
	    {"cache-partition", sc_partition, SC_PARTITION, 5, 8, 500},
	    {"cache-join", sc_join, SC_JOIN, 4, 6, 300},            {"cache-join", sc_join, SC_JOIN, 5, 6, 500},
	    {"cache-leave", sc_leave, SC_LEAVE, 5, 6, 500},         {"cache-skew", sc_skew, SC_SKEW, 3, 6, 300},
	    {"cache-skew", sc_skew, SC_SKEW, 5, 3, 300},            {"cache-chaos", sc_chaos, SC_CHAOS, 5, 4, 500},
	};
	for (size_t i = 0; i < sizeof(plan) / sizeof(plan[0]); i++) {
		uint32_t runs = big ? plan[i].runs_big : plan[i].runs, failed = 0;
		memset(&g_sum, 0, sizeof(g_sum));
		for (uint32_t r = 0; r < runs; r++) {
			struct sim_run run = run_of(plan[i].name, plan[i].n, sim_derive_seed(seed, plan[i].id, plan[i].n, r));
			failed += (uint32_t)(plan[i].fn(&run) != 0);
		}
		printf("%s N=%u: %u runs (%.0f s simulated), %u failed: %" PRIu64 " writes acknowledged, %" PRIu64
		       " reads checked (%" PRIu64 " in split brains, exempt), %" PRIu64 " crashes/leaves, %" PRIu64
		       " writes lost and %" PRIu64 " missed by a read after two of their owners failed (not promised), %" PRIu64
		       " missed during a handover after one failure, %" PRIu64 " partitions handed over, %" PRIu64
		       " settling reads\n",
		       plan[i].name, plan[i].n, runs, (double)g_sum.virtual_ms / 1000.0, failed, g_sum.acked, g_sum.checked,
		       g_sum.exempt, g_sum.crashes, g_sum.excused, g_sum.unpromised, g_sum.handover_lag, g_sum.dropped,
		       g_sum.settle_reads);
		fflush(stdout);
	}
}

const struct sim_suite sim_suite_cache = {.driver = "cache", .scenarios = SCENARIOS, .ci = cache_ci};
