/*
 * test_swim.c - unit tests of the SWIM membership core (node/core/swim.c).
 *
 * A tiny in-test network: each test node is a `struct swim` whose send
 * effect deep-copies messages into a FIFO outbox (the core's strings are
 * only valid during the call). deliver() hands queued messages to the node
 * owning the address ("t:<index>"), through a per-test filter that may drop
 * a message. Time is a plain `now` that the tests advance themselves, always
 * to the core's own next deadline or a computed instant, never by sleeping.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "core/swim.h"

#define NODES_MAX 12
#define OUTBOX_MAX 4096
#define EVENTS_MAX 256

/* ---- deep copies of messages ---- */

struct copy {
	int src, dst; /* node indexes; dst -1 = unknown address */
	struct swim_msg m;
	struct swim_update *states;
	char *strs[2 + 2 * (SWIM_PIGGYBACK_MAX + 64)];
	int nstr;
	char addr[SWIM_ADDR_BYTES_MAX];
};

static const char *keep(struct copy *c, const char *p)
{
	if (!p) return NULL;
	assert_true(c->nstr < (int)(sizeof c->strs / sizeof c->strs[0]));
	c->strs[c->nstr] = strdup(p);
	return c->strs[c->nstr++];
}

/* Test messages carry no tags (the tests that use tags check members, not messages). */
static void keep_update(struct copy *c, struct swim_update *d, const struct swim_update *s)
{
	*d = *s;
	d->name = keep(c, s->name);
	d->addr = keep(c, s->addr);
	d->tags = NULL;
	d->tag_count = 0;
}

static void copy_free(struct copy *c)
{
	for (int i = 0; i < c->nstr; i++) free(c->strs[i]);
	free(c->states);
	free(c);
}

/* ---- the test network ---- */

struct tnode {
	struct swim *s;
	int index;
	char addr[16];
	uint8_t id[SWIM_ID_BYTES];
};

struct ev {
	int observer, event, old_state, state;
	uint8_t id[SWIM_ID_BYTES];
	uint32_t incarnation;
};

static struct {
	struct tnode nodes[NODES_MAX];
	int count;
	struct copy *outbox[OUTBOX_MAX];
	int out_len;
	uint64_t now;
	int (*drop)(const struct copy *c); /* NULL = deliver everything */
	struct ev events[EVENTS_MAX];
	int ev_count;
} T;

static int addr_node(const char *addr)
{
	if (strncmp(addr, "t:", 2) != 0) return -1;
	int i = atoi(addr + 2);
	return i >= 0 && i < T.count && T.nodes[i].s ? i : -1;
}

static void fx_send(void *ctx, const char *addr, const struct swim_msg *m)
{
	struct tnode *n = ctx;
	assert_true(T.out_len < OUTBOX_MAX);
	struct copy *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->src = n->index;
	c->dst = addr_node(addr);
	snprintf(c->addr, sizeof c->addr, "%s", addr);
	c->m = *m;
	c->m.from_addr = keep(c, m->from_addr);
	c->m.target_addr = keep(c, m->target_addr);
	for (uint32_t i = 0; i < m->update_count; i++) keep_update(c, &c->m.updates[i], &m->updates[i]);
	if (m->state_count) {
		c->states = calloc(m->state_count, sizeof(*c->states));
		assert_non_null(c->states);
		assert_true(m->state_count <= 64);
		for (uint32_t i = 0; i < m->state_count; i++) keep_update(c, &c->states[i], &m->states[i]);
		c->m.states = c->states;
	}
	T.outbox[T.out_len++] = c;
}

static void fx_event(void *ctx, int event, const struct swim_member *m, int old_state)
{
	struct tnode *n = ctx;
	if (T.ev_count >= EVENTS_MAX) return;
	struct ev *e = &T.events[T.ev_count++];
	e->observer = n->index;
	e->event = event;
	e->old_state = old_state;
	e->state = m->state;
	e->incarnation = m->incarnation;
	memcpy(e->id, m->id, SWIM_ID_BYTES);
}

static void base_config(struct swim_config *c, int i)
{
	swim_config_defaults(c);
	c->period_ms = 200;
	c->probe_timeout_ms = 100;
	c->seed = 1000 + i;
	c->capacity = 4;
	c->reap_after_ms = 10000;
	c->push_pull_periods = 0; /* tests that want it turn it on */
}

static struct tnode *mk_cfg(struct swim_config *c)
{
	int i = T.count++;
	assert_true(i < NODES_MAX);
	struct tnode *n = &T.nodes[i];
	n->index = i;
	snprintf(n->addr, sizeof n->addr, "t:%d", i);
	memset(n->id, 0, SWIM_ID_BYTES);
	n->id[0] = (uint8_t)(i + 1);
	n->id[15] = 0xAB;
	memcpy(c->id, n->id, SWIM_ID_BYTES);
	char name[16];
	snprintf(name, sizeof name, "node%d", i);
	c->name = name;
	c->addr = n->addr;
	struct swim_effects fx = {.ctx = n, .send = fx_send, .event = fx_event};
	char err[128];
	assert_int_equal(swim_create(&n->s, c, &fx, T.now, err, sizeof err), 0);
	return n;
}

static struct tnode *mk(void)
{
	struct swim_config c;
	base_config(&c, T.count);
	return mk_cfg(&c);
}

static struct swim_update update_of(const struct tnode *n, uint8_t state, uint32_t inc)
{
	struct swim_update u = {0};
	memcpy(u.id, n->id, SWIM_ID_BYTES);
	memcpy(u.from, n->id, SWIM_ID_BYTES);
	u.state = state;
	u.incarnation = inc;
	u.addr = n->addr;
	u.name = "x";
	u.proto_version = SWIM_PROTO_VERSION;
	return u;
}

/* a learns b as alive (bootstrap, no gossip) */
static void know(struct tnode *a, struct tnode *b)
{
	struct swim_update u = update_of(b, SWIM_ALIVE, swim_self_incarnation(b->s));
	assert_int_equal(swim_add_member(a->s, T.now, &u), 0);
}

static void know_all(void)
{
	for (int i = 0; i < T.count; i++)
		for (int j = 0; j < T.count; j++)
			if (i != j) know(&T.nodes[i], &T.nodes[j]);
}

static void clear_outbox(void)
{
	for (int i = 0; i < T.out_len; i++) copy_free(T.outbox[i]);
	T.out_len = 0;
}

/* Delivers everything queued (and what that produces), rounds bounded. */
static void deliver(void)
{
	for (int round = 0; round < 32 && T.out_len; round++) {
		struct copy *batch[OUTBOX_MAX];
		int n = T.out_len;
		memcpy(batch, T.outbox, n * sizeof(batch[0]));
		T.out_len = 0;
		for (int i = 0; i < n; i++) {
			struct copy *c = batch[i];
			if (!(T.drop && T.drop(c)) && c->dst >= 0 && T.nodes[c->dst].s)
				assert_int_equal(swim_on_message(T.nodes[c->dst].s, T.now, &c->m), 0);
			copy_free(c);
		}
	}
}

/* Advances time to t, ticking every node at each of its deadlines and
 * delivering messages at once (zero latency). */
static void run_to(uint64_t t)
{
	for (int guard = 0; guard < 100000; guard++) {
		uint64_t next = UINT64_MAX;
		for (int i = 0; i < T.count; i++)
			if (T.nodes[i].s) {
				uint64_t d = swim_next_deadline_ms(T.nodes[i].s);
				if (d < next) next = d;
			}
		if (next > t) break;
		if (next > T.now) T.now = next;
		for (int i = 0; i < T.count; i++)
			if (T.nodes[i].s && swim_next_deadline_ms(T.nodes[i].s) <= T.now) swim_tick(T.nodes[i].s, T.now);
		deliver();
	}
	T.now = t;
	deliver();
}

static int g_dead, g_cut_a, g_cut_b, join_count;

static int setup(void **state)
{
	(void)state;
	memset(&T, 0, sizeof T);
	T.now = 100000;
	g_dead = g_cut_a = g_cut_b = -1;
	join_count = 0;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	clear_outbox();
	for (int i = 0; i < T.count; i++) swim_destroy(T.nodes[i].s);
	return 0;
}

static const struct swim_member *view(struct tnode *a, struct tnode *b) { return swim_find(a->s, b->id); }

static int count_sent(int src, int type)
{
	(void)src;
	int n = 0;
	for (int i = 0; i < T.out_len; i++)
		if (T.outbox[i]->src == src && T.outbox[i]->m.type == type) n++;
	return n;
}

/* ---- drop filters ---- */

/* g_dead: messages to or from this node are lost */
static int drop_dead(const struct copy *c) { return c->dst == g_dead || c->src == g_dead; }
/* g_cut_a, g_cut_b: the direct link between them is cut */
static int drop_cut(const struct copy *c)
{
	return (c->src == g_cut_a && c->dst == g_cut_b) || (c->src == g_cut_b && c->dst == g_cut_a);
}
static int drop_all(const struct copy *c)
{
	(void)c;
	return 1;
}

/* ---- tests ---- */

static void ping_is_answered_with_ack(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk();
	know_all();
	/* the first probe happens within the first period */
	uint64_t d = swim_next_deadline_ms(a->s);
	assert_true(d < T.now + 200);
	T.now = d;
	swim_tick(a->s, T.now);
	assert_int_equal(count_sent(0, SWIM_MSG_PING), 1);
	assert_memory_equal(T.outbox[0]->m.target, b->id, SWIM_ID_BYTES);
	deliver(); /* ping -> b, ack -> a */
	assert_int_equal(swim_stats(b->s)->sent[SWIM_MSG_ACK], 1);
	assert_int_equal(swim_stats(a->s)->received[SWIM_MSG_ACK], 1);
	run_to(T.now + 1000);
	assert_int_equal(swim_stats(a->s)->probes_failed, 0);
	assert_int_equal(swim_stats(a->s)->sent[SWIM_MSG_PING_REQ], 0);
	assert_int_equal(view(a, b)->state, SWIM_ALIVE);
	assert_true(swim_stats(a->s)->probes >= 5);
}

static void indirect_probe_success_avoids_suspicion(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk();
	mk();
	know_all();
	g_cut_a = a->index;
	g_cut_b = b->index;
	T.drop = drop_cut;
	run_to(T.now + 2000);
	const struct swim_stats *st = swim_stats(a->s);
	assert_true(st->sent[SWIM_MSG_PING_REQ] > 0);
	assert_true(st->probes_indirect_ok > 0);
	assert_int_equal(st->probes_failed, 0);
	assert_int_equal(view(a, b)->state, SWIM_ALIVE);
	assert_int_equal(view(b, a)->state, SWIM_ALIVE);
	assert_int_equal(st->suspected, 0);
}

static void suspect_then_dead_after_the_timeout(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk();
	know_all();
	g_dead = b->index;
	T.drop = drop_dead;
	/* one failed probe (it starts within the first period): suspect at the end of its period */
	run_to(T.now + 400);
	assert_int_equal(view(a, b)->state, SWIM_SUSPECT);
	uint64_t since = view(a, b)->state_change_ms;
	/* N = 2: min = alpha*1*period = 800 ms. A cluster this small cannot
	 * produce k independent confirmations (N - 2 < k), so, as memberlist
	 * does, the suspicion lasts the minimum (Lifeguard §4) */
	run_to(since + 799);
	assert_int_equal(view(a, b)->state, SWIM_SUSPECT);
	run_to(since + 800);
	assert_int_equal(view(a, b)->state, SWIM_DEAD);
	int saw_suspect = 0, saw_dead = 0;
	for (int i = 0; i < T.ev_count; i++) {
		if (T.events[i].observer != a->index || T.events[i].event != SWIM_EV_STATE) continue;
		if (T.events[i].state == SWIM_SUSPECT) saw_suspect = 1;
		if (T.events[i].state == SWIM_DEAD) saw_dead = saw_suspect;
	}
	assert_true(saw_dead);
	assert_int_equal(swim_stats(a->s)->declared_dead, 1);
}

static void confirmations_shorten_the_suspicion(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk(), *c = mk(), *d = mk();
	know_all();
	g_dead = b->index; /* nothing refutes */
	T.drop = drop_dead;
	/* a hears "b suspect" first from c (the origin), then confirmed by d
	 * and two more members: K = 3 independent confirmations */
	struct swim_msg m = {0};
	m.type = SWIM_MSG_GOSSIP;
	m.from_addr = c->addr;
	memcpy(m.from, c->id, SWIM_ID_BYTES);
	m.update_count = 1;
	m.updates[0] = update_of(b, SWIM_SUSPECT, 0);
	uint8_t confirmers[4][SWIM_ID_BYTES];
	memcpy(confirmers[0], c->id, SWIM_ID_BYTES);
	memcpy(confirmers[1], d->id, SWIM_ID_BYTES);
	memcpy(confirmers[2], d->id, SWIM_ID_BYTES);
	confirmers[2][3] = 0x51;
	memcpy(confirmers[3], d->id, SWIM_ID_BYTES);
	confirmers[3][3] = 0x52;
	uint64_t since = T.now;
	for (int i = 0; i < 4; i++) {
		memcpy(m.updates[0].from, confirmers[i], SWIM_ID_BYTES);
		assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
		/* a repeated confirmation does not count twice */
		assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	}
	clear_outbox();
	/* N = 4: min = alpha*1*period = 800 ms; fully confirmed: the minimum,
	 * not the unconfirmed 4800 ms (Lifeguard §4) */
	run_to(since + 799);
	assert_int_equal(view(a, b)->state, SWIM_SUSPECT);
	run_to(since + 800);
	assert_int_equal(view(a, b)->state, SWIM_DEAD);
}

static void suspicion_is_refuted_with_a_higher_incarnation(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk();
	know_all();
	/* b hears it is suspected at its own incarnation */
	struct swim_msg m = {0};
	m.type = SWIM_MSG_GOSSIP;
	m.from_addr = a->addr;
	memcpy(m.from, a->id, SWIM_ID_BYTES);
	m.update_count = 1;
	m.updates[0] = update_of(b, SWIM_SUSPECT, 0);
	memcpy(m.updates[0].from, a->id, SWIM_ID_BYTES);
	assert_int_equal(swim_on_message(b->s, T.now, &m), 0);
	assert_int_equal(swim_self_incarnation(b->s), 1);
	assert_int_equal(swim_lhm(b->s), 1); /* Lifeguard §3: refuting costs health */
	assert_int_equal(swim_stats(b->s)->refuted, 1);
	/* an older suspicion does not bump again */
	assert_int_equal(swim_on_message(b->s, T.now, &m), 0);
	assert_int_equal(swim_self_incarnation(b->s), 1);
	/* a suspects b (told by a third member); b's refutation reaches a on the next exchange */
	m.from[5] = 0x33;
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(view(a, b)->state, SWIM_SUSPECT);
	run_to(T.now + 400);
	assert_int_equal(view(a, b)->state, SWIM_ALIVE);
	assert_int_equal(view(a, b)->incarnation, 1);
}

static void dead_rumour_about_self_is_refuted_above_it(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk();
	know_all();
	/* a restarted node whose persisted incarnation was lost hears its old death */
	struct swim_msg m = {0};
	m.type = SWIM_MSG_GOSSIP;
	m.from_addr = b->addr;
	memcpy(m.from, b->id, SWIM_ID_BYTES);
	m.update_count = 1;
	m.updates[0] = update_of(a, SWIM_DEAD, 5);
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(swim_self_incarnation(a->s), 6);
	assert_int_equal(swim_self(a->s)->state, SWIM_ALIVE);
	/* a restart with a persisted incarnation starts above it */
	struct swim_config c;
	base_config(&c, 7);
	c.incarnation = 9;
	struct tnode *r = mk_cfg(&c);
	assert_int_equal(swim_self_incarnation(r->s), 9);
}

static void left_member_is_marked_left_not_dead(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk(), *c = mk();
	know_all();
	assert_int_equal(swim_leave(b->s, T.now), 0);
	assert_int_equal(swim_self(b->s)->state, SWIM_LEFT);
	assert_int_equal(swim_self_incarnation(b->s), 1);
	run_to(T.now + 3000);
	assert_true(swim_leave_done(b->s));
	assert_int_equal(view(a, b)->state, SWIM_LEFT);
	assert_int_equal(view(c, b)->state, SWIM_LEFT);
	for (int i = 0; i < T.ev_count; i++)
		if (!memcmp(T.events[i].id, b->id, SWIM_ID_BYTES)) assert_int_not_equal(T.events[i].state, SWIM_DEAD);
	assert_int_equal(swim_stats(a->s)->declared_dead, 0);
	/* a left member is not probed */
	uint64_t pings = swim_stats(b->s)->received[SWIM_MSG_PING];
	run_to(T.now + 2000);
	assert_int_equal(swim_stats(b->s)->received[SWIM_MSG_PING], pings);
	/* and dead rumours cannot override left at the same incarnation */
	struct swim_msg m = {0};
	m.type = SWIM_MSG_GOSSIP;
	m.from_addr = c->addr;
	memcpy(m.from, c->id, SWIM_ID_BYTES);
	m.update_count = 1;
	m.updates[0] = update_of(b, SWIM_DEAD, 1);
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(view(a, b)->state, SWIM_LEFT);
}

static void gossip_precedence_follows_incarnation_then_state(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk(), *c = mk();
	know_all();
	struct swim_msg m = {0};
	m.type = SWIM_MSG_GOSSIP;
	m.from_addr = c->addr;
	memcpy(m.from, c->id, SWIM_ID_BYTES);
	m.update_count = 1;
	/* dead at the same incarnation beats alive */
	m.updates[0] = update_of(b, SWIM_DEAD, 0);
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(view(a, b)->state, SWIM_DEAD);
	/* alive at the same incarnation does not revive */
	m.updates[0] = update_of(b, SWIM_ALIVE, 0);
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(view(a, b)->state, SWIM_DEAD);
	/* a higher incarnation does (rejoin) */
	m.updates[0] = update_of(b, SWIM_ALIVE, 1);
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(view(a, b)->state, SWIM_ALIVE);
	assert_int_equal(view(a, b)->incarnation, 1);
	/* a stale suspicion (lower incarnation) is ignored */
	m.updates[0] = update_of(b, SWIM_SUSPECT, 0);
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(view(a, b)->state, SWIM_ALIVE);
	/* an unknown member is only introduced by an alive update */
	struct swim_update u = update_of(b, SWIM_SUSPECT, 3);
	u.id[1] = 0x77;
	m.updates[0] = u;
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_null(swim_find(a->s, u.id));
	m.updates[0].state = SWIM_ALIVE;
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_non_null(swim_find(a->s, u.id));
}

static void push_pull_merges_by_incarnation_and_state(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk(), *x = mk(), *y = mk(), *z = mk(), *w = mk(), *v = mk();
	know_all();
	struct swim_msg g = {0};
	g.type = SWIM_MSG_GOSSIP;
	g.from_addr = b->addr;
	memcpy(g.from, b->id, SWIM_ID_BYTES);
	g.update_count = 2;
	g.updates[0] = update_of(x, SWIM_ALIVE, 3);
	g.updates[1] = update_of(z, SWIM_DEAD, 1);
	assert_int_equal(swim_on_message(a->s, T.now, &g), 0);
	assert_int_equal(view(a, z)->state, SWIM_DEAD);
	clear_outbox();

	struct swim_update st[6];
	st[0] = update_of(x, SWIM_ALIVE, 5);   /* higher incarnation wins */
	st[1] = update_of(y, SWIM_SUSPECT, 0); /* suspect beats alive at equal incarnation */
	st[2] = update_of(z, SWIM_ALIVE, 1);   /* alive does not beat dead at equal incarnation */
	st[3] = update_of(w, SWIM_DEAD, 0);    /* remote dead is only a suspicion here */
	st[4] = update_of(v, SWIM_LEFT, 0);    /* left is taken as left */
	st[5] = update_of(b, SWIM_ALIVE, 0);
	struct swim_msg m = {0};
	m.type = SWIM_MSG_PUSH_PULL;
	m.from_addr = b->addr;
	memcpy(m.from, b->id, SWIM_ID_BYTES);
	m.states = st;
	m.state_count = 6;
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(view(a, x)->state, SWIM_ALIVE);
	assert_int_equal(view(a, x)->incarnation, 5);
	assert_int_equal(view(a, y)->state, SWIM_SUSPECT);
	assert_int_equal(view(a, z)->state, SWIM_DEAD);
	assert_int_equal(view(a, w)->state, SWIM_SUSPECT);
	assert_int_equal(view(a, v)->state, SWIM_LEFT);
	/* the reply carries a's whole view, itself included */
	assert_int_equal(T.out_len, 1);
	const struct swim_msg *r = &T.outbox[0]->m;
	assert_int_equal(r->type, SWIM_MSG_PUSH_PULL_REPLY);
	assert_int_equal(T.outbox[0]->dst, b->index);
	assert_int_equal(r->state_count, swim_member_count(a->s));
	int has_self = 0;
	for (uint32_t i = 0; i < r->state_count; i++) has_self |= !memcmp(r->states[i].id, a->id, SWIM_ID_BYTES);
	assert_true(has_self);
}

static void retransmit_limit_bounds_how_often_an_update_is_sent(void **state)
{
	(void)state;
	struct tnode *a = mk();
	for (int i = 0; i < 9; i++) mk();
	know_all();
	/* N = 10: limit = 4 * ceil(log10(11)) = 8 */
	assert_int_equal(swim_retransmit_limit(a->s), 8);
	const char *tags[] = {"gpu"};
	assert_int_equal(swim_set_meta(a->s, T.now, 8, 3, tags, 1), 0);
	assert_int_equal(swim_self_incarnation(a->s), 1);
	assert_int_equal(swim_self(a->s)->load, 3);
	/* drive a's sends with pings from others and count its own update */
	int carried = 0;
	for (int k = 0; k < 40; k++) {
		struct tnode *p = &T.nodes[1 + k % 9];
		struct swim_msg m = {0};
		m.type = SWIM_MSG_PING;
		m.seq = (uint32_t)k;
		m.from_addr = p->addr;
		memcpy(m.from, p->id, SWIM_ID_BYTES);
		assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
		for (int i = 0; i < T.out_len; i++) {
			const struct swim_msg *o = &T.outbox[i]->m;
			assert_true(o->update_count <= 24);
			for (uint32_t u = 0; u < o->update_count; u++)
				if (!memcmp(o->updates[u].id, a->id, SWIM_ID_BYTES) && o->updates[u].incarnation == 1) carried++;
		}
		clear_outbox();
	}
	assert_int_equal(carried, 8);
	assert_int_equal(swim_queued_updates(a->s), 0);
}

static void piggyback_and_update_queue_are_bounded(void **state)
{
	(void)state;
	struct swim_config c;
	base_config(&c, 0);
	c.piggyback_max = 3;
	c.updates_max = 5;
	struct tnode *a = mk_cfg(&c);
	struct tnode *b = mk();
	know(a, b);
	/* 10 new members gossiped to a: the queue keeps at most 5 */
	struct swim_msg m = {0};
	m.type = SWIM_MSG_GOSSIP;
	m.from_addr = b->addr;
	memcpy(m.from, b->id, SWIM_ID_BYTES);
	char addrs[10][16];
	for (int i = 0; i < 10; i++) {
		struct swim_update u = update_of(b, SWIM_ALIVE, 0);
		u.id[2] = (uint8_t)(i + 1);
		snprintf(addrs[i], sizeof addrs[i], "t:%d", 100 + i);
		u.addr = addrs[i];
		m.updates[m.update_count++] = u;
	}
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(swim_member_count(a->s), 12);
	assert_int_equal(swim_queued_updates(a->s), 5);
	assert_true(swim_stats(a->s)->updates_dropped >= 5);
	/* each message carries at most piggyback_max */
	struct swim_msg p = {0};
	p.type = SWIM_MSG_PING;
	p.from_addr = b->addr;
	memcpy(p.from, b->id, SWIM_ID_BYTES);
	assert_int_equal(swim_on_message(a->s, T.now, &p), 0);
	assert_int_equal(T.out_len, 1);
	assert_int_equal(T.outbox[0]->m.update_count, 3);
}

static void members_max_refuses_new_members(void **state)
{
	(void)state;
	struct swim_config c;
	base_config(&c, 0);
	c.members_max = 3;
	struct tnode *a = mk_cfg(&c);
	struct tnode *b = mk(), *d = mk(), *e = mk();
	know(a, b);
	know(a, d);
	struct swim_update u = update_of(e, SWIM_ALIVE, 0);
	assert_int_equal(swim_add_member(a->s, T.now, &u), ERR_FULL);
	assert_int_equal(swim_member_count(a->s), 3);
	assert_int_equal(swim_stats(a->s)->members_refused, 1);
	/* a dead member makes room: the oldest dead one is forgotten */
	struct swim_update dd = update_of(b, SWIM_DEAD, 0);
	assert_int_equal(swim_add_member(a->s, T.now, &dd), 0);
	assert_int_equal(view(a, b)->state, SWIM_DEAD);
	assert_int_equal(swim_add_member(a->s, T.now, &u), 0);
	assert_null(view(a, b));
	assert_non_null(view(a, e));
}

static uint64_t join_times[32];
static int record_joins(const struct copy *c)
{
	if (c->m.type == SWIM_MSG_PUSH_PULL && c->m.join && join_count < 32) join_times[join_count++] = T.now;
	return c->dst < 0; /* unknown addresses: lost */
}

static void join_retries_with_backoff_until_a_seed_answers(void **state)
{
	(void)state;
	struct swim_config c;
	base_config(&c, 0);
	c.join_backoff_ms = 200;
	c.join_backoff_max_ms = 1600;
	struct tnode *a = mk_cfg(&c);
	join_count = 0;
	T.drop = record_joins;
	const char *seeds[] = {"t:5", a->addr}; /* own address is skipped */
	uint64_t t0 = T.now;
	assert_int_equal(swim_join(a->s, T.now, seeds, 2), 0);
	assert_true(swim_joining(a->s));
	deliver();
	run_to(t0 + 5000);
	/* sends at 0, 200, 600, 1400, 3000 (doubling), then capped at +1600: 4600 */
	assert_int_equal(join_count, 6);
	uint64_t expect[] = {0, 200, 600, 1400, 3000, 4600};
	for (int i = 0; i < 6; i++) assert_int_equal(join_times[i] - t0, expect[i]);
	assert_true(swim_joining(a->s));
	/* the seed comes up at t:1 ... as node index 1, but a was told t:5: use a
	 * second joiner that points at a live seed instead */
	struct tnode *seed = mk();
	const char *s2[] = {seed->addr};
	assert_int_equal(swim_join(a->s, T.now, s2, 1), 0);
	deliver();
	assert_false(swim_joining(a->s));
	assert_non_null(view(a, seed));
	assert_non_null(view(seed, a));
	int before = join_count;
	run_to(T.now + 5000);
	assert_int_equal(join_count, before); /* no more join attempts */
	/* no seeds: a one-member cluster, not joining */
	struct tnode *solo = mk();
	assert_int_equal(swim_join(solo->s, T.now, NULL, 0), 0);
	assert_false(swim_joining(solo->s));
	assert_int_equal(swim_member_count(solo->s), 1);
}

static void dead_members_are_reaped_after_the_configured_time(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk();
	know_all();
	struct swim_update d = update_of(b, SWIM_DEAD, 0);
	assert_int_equal(swim_add_member(a->s, T.now, &d), 0);
	uint64_t since = view(a, b)->state_change_ms;
	g_dead = b->index;
	T.drop = drop_dead;
	run_to(since + 9999);
	assert_non_null(view(a, b));
	run_to(since + 10000);
	assert_null(view(a, b));
	int reaped = 0;
	for (int i = 0; i < T.ev_count; i++) reaped |= T.events[i].event == SWIM_EV_REAP;
	assert_true(reaped);
	assert_int_equal(swim_member_count(a->s), 1);
}

static void local_health_rises_on_failed_probes_and_falls_on_success(void **state)
{
	(void)state;
	struct tnode *a = NULL;
	for (int i = 0; i < 3; i++) {
		struct swim_config c;
		base_config(&c, i);
		c.suspicion_alpha = 100; /* nobody is declared dead during the test */
		struct tnode *n = mk_cfg(&c);
		if (!a) a = n;
	}
	know_all();
	assert_int_equal(swim_lhm(a->s), 0);
	/* a is cut off from everybody: every probe fails and the relay never
	 * nacks, so each failed probe raises the multiplier (Lifeguard §3) */
	T.drop = drop_all;
	run_to(T.now + 3000);
	uint32_t high = swim_lhm(a->s);
	assert_true(high >= 3);
	assert_true(high <= 8);
	/* the protocol period stretches to period*(LHM+1) */
	uint64_t d0 = swim_next_deadline_ms(a->s), probes = swim_stats(a->s)->probes;
	run_to(T.now + 200 * (high + 1) + 1);
	assert_true(swim_next_deadline_ms(a->s) > d0);
	assert_true(swim_stats(a->s)->probes - probes <= 2);
	/* healed: successful probes bring it back to zero */
	T.drop = NULL;
	run_to(T.now + 30000);
	assert_int_equal(swim_lhm(a->s), 0);
	assert_true(swim_stats(a->s)->probes_failed >= 3);
}

static void invalid_messages_are_refused(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk();
	know_all();
	struct swim_msg m = {0};
	m.type = SWIM_MSG_GOSSIP;
	m.from_addr = b->addr;
	/* zero sender id */
	assert_int_equal(swim_on_message(a->s, T.now, &m), ERR_PROTOCOL);
	memcpy(m.from, b->id, SWIM_ID_BYTES);
	m.type = 99;
	assert_int_equal(swim_on_message(a->s, T.now, &m), ERR_PROTOCOL);
	m.type = SWIM_MSG_GOSSIP;
	m.update_count = SWIM_PIGGYBACK_MAX + 1;
	assert_int_equal(swim_on_message(a->s, T.now, &m), ERR_PROTOCOL);
	m.update_count = 1;
	m.updates[0] = update_of(b, 7, 0); /* no such state */
	assert_int_equal(swim_on_message(a->s, T.now, &m), ERR_PROTOCOL);
	m.updates[0] = update_of(b, SWIM_ALIVE, 0);
	m.updates[0].addr = ""; /* alive but unreachable */
	assert_int_equal(swim_on_message(a->s, T.now, &m), ERR_PROTOCOL);
	char longname[SWIM_NAME_BYTES_MAX + 8];
	memset(longname, 'n', sizeof longname - 1);
	longname[sizeof longname - 1] = 0;
	m.updates[0] = update_of(b, SWIM_ALIVE, 0);
	m.updates[0].name = longname;
	assert_int_equal(swim_on_message(a->s, T.now, &m), ERR_PROTOCOL);
	m.updates[0] = update_of(b, SWIM_ALIVE, UINT32_MAX);
	assert_int_equal(swim_on_message(a->s, T.now, &m), ERR_PROTOCOL);
	m.updates[0] = update_of(b, SWIM_ALIVE, 0);
	m.updates[0].tag_count = SWIM_TAGS_MAX + 1;
	assert_int_equal(swim_on_message(a->s, T.now, &m), ERR_PROTOCOL);
	m.update_count = 0;
	m.state_count = 1; /* states on a non-push-pull message */
	assert_int_equal(swim_on_message(a->s, T.now, &m), ERR_PROTOCOL);
	m.state_count = 0;
	m.type = SWIM_MSG_PING_REQ; /* no target */
	assert_int_equal(swim_on_message(a->s, T.now, &m), ERR_PROTOCOL);
	assert_int_equal(swim_stats(a->s)->invalid, 10);
	assert_int_equal(swim_member_count(a->s), 2);
	assert_int_equal(T.out_len, 0);
}

static void bad_config_is_refused(void **state)
{
	(void)state;
	struct swim_config c;
	struct swim *s = NULL;
	struct swim_effects fx = {.send = fx_send};
	char err[128];
	base_config(&c, 0);
	c.addr = "t:0";
	assert_int_equal(swim_create(&s, &c, &fx, 0, err, sizeof err), ERR_INVALID); /* zero id */
	assert_non_null(strstr(err, "id"));
	c.id[0] = 1;
	c.probe_timeout_ms = c.period_ms;
	assert_int_equal(swim_create(&s, &c, &fx, 0, err, sizeof err), ERR_INVALID);
	base_config(&c, 0);
	c.id[0] = 1;
	c.addr = "t:0";
	c.piggyback_max = SWIM_PIGGYBACK_MAX + 1;
	assert_int_equal(swim_create(&s, &c, &fx, 0, err, sizeof err), ERR_INVALID);
	assert_null(s);
}

static void relays_are_bounded(void **state)
{
	(void)state;
	struct swim_config c;
	base_config(&c, 0);
	c.relays_max = 1;
	struct tnode *a = mk_cfg(&c);
	struct tnode *b = mk(), *t = mk();
	know_all();
	T.drop = drop_all;
	struct swim_msg m = {0};
	m.type = SWIM_MSG_PING_REQ;
	m.seq = 7;
	m.from_addr = b->addr;
	memcpy(m.from, b->id, SWIM_ID_BYTES);
	memcpy(m.target, t->id, SWIM_ID_BYTES);
	m.target_addr = t->addr;
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(swim_on_message(a->s, T.now, &m), 0);
	assert_int_equal(swim_stats(a->s)->relays_refused, 1);
	assert_int_equal(count_sent(a->index, SWIM_MSG_PING), 1);
	/* the relay nacks the origin when the target stays silent (Lifeguard §3) */
	clear_outbox();
	T.now += 80;
	swim_tick(a->s, T.now);
	assert_int_equal(count_sent(a->index, SWIM_MSG_NACK), 1);
	for (int i = 0; i < T.out_len; i++) {
		if (T.outbox[i]->m.type != SWIM_MSG_NACK) continue;
		assert_int_equal(T.outbox[i]->dst, b->index);
		assert_int_equal(T.outbox[i]->m.seq, 7);
	}
}

static int accept_odd(void *ctx, const struct swim_member *m)
{
	(void)ctx;
	return m->id[0] % 2 == 1;
}

static void pick_two_returns_distinct_alive_members(void **state)
{
	(void)state;
	struct tnode *a = mk();
	for (int i = 0; i < 5; i++) mk();
	know_all();
	struct swim_update d = update_of(&T.nodes[2], SWIM_DEAD, 0);
	assert_int_equal(swim_add_member(a->s, T.now, &d), 0);
	for (int k = 0; k < 50; k++) {
		const struct swim_member *x, *y;
		assert_int_equal(swim_pick_two(a->s, 0, NULL, NULL, &x, &y), 2);
		assert_ptr_not_equal(x, y);
		assert_int_equal(x->state, SWIM_ALIVE);
		assert_int_equal(y->state, SWIM_ALIVE);
		assert_memory_not_equal(x->id, a->id, SWIM_ID_BYTES);
		/* odd first id byte: nodes 0, 2, 4 -> node 2 is dead, node 0 is self */
		uint32_t n = swim_pick_two(a->s, 1, accept_odd, NULL, &x, &y);
		assert_int_equal(n, 2);
		assert_true(x->id[0] % 2 == 1 && y->id[0] % 2 == 1);
	}
}

static void metadata_and_tags_travel_with_alive(void **state)
{
	(void)state;
	struct tnode *a = mk(), *b = mk();
	know_all();
	const char *tags[] = {"gpu", "zone-a"};
	assert_int_equal(swim_set_meta(b->s, T.now, 16, 5, tags, 2), 0);
	const char *bad[] = {NULL};
	assert_int_equal(swim_set_meta(b->s, T.now, 16, 5, bad, 1), ERR_INVALID);
	/* fake-network copies drop tags: hand a the update directly */
	struct swim_update u = update_of(b, SWIM_ALIVE, swim_self_incarnation(b->s));
	u.capacity = 16;
	u.load = 5;
	u.tags = tags;
	u.tag_count = 2;
	assert_int_equal(swim_add_member(a->s, T.now, &u), 0);
	const struct swim_member *m = view(a, b);
	assert_int_equal(m->capacity, 16);
	assert_int_equal(m->load, 5);
	assert_int_equal(m->tag_count, 2);
	assert_string_equal(m->tags[0], "gpu");
	assert_string_equal(m->tags[1], "zone-a");
	assert_string_equal(m->addr, b->addr);
	uint32_t cur = 0, n = 0;
	while (swim_next_member(a->s, &cur)) n++;
	assert_int_equal(n, 2);
	assert_string_equal(swim_state_name(SWIM_LEFT), "left");
	assert_string_equal(swim_msg_type_name(SWIM_MSG_PING_REQ), "ping_req");
}

/* A counting interner: one block per distinct content, held by reference. */
struct ientry {
	char *block;
	int refs;
	char key[256];
};
static struct ientry g_intern[16];
static int g_intern_gets, g_intern_puts;

static const char *const *intern_get(void *ctx, const char *name, const char *addr, const char *const *tags,
                                     uint8_t tag_count, const char **name_out, const char **addr_out)
{
	(void)ctx;
	char key[256];
	int kl = snprintf(key, sizeof key, "%s|%s", name, addr);
	for (uint8_t i = 0; i < tag_count; i++) kl += snprintf(key + kl, sizeof key - (size_t)kl, "|%s", tags[i]);
	g_intern_gets++;
	struct ientry *e = NULL;
	for (int i = 0; i < 16 && !e; i++)
		if (g_intern[i].refs && !strcmp(g_intern[i].key, key)) e = &g_intern[i];
	if (!e) {
		for (int i = 0; i < 16 && !e; i++)
			if (!g_intern[i].refs) e = &g_intern[i];
		assert_non_null(e);
		size_t ptrs = tag_count * sizeof(char *), nl = strlen(name) + 1, al = strlen(addr) + 1, tl = 0;
		for (uint8_t i = 0; i < tag_count; i++) tl += strlen(tags[i]) + 1;
		e->block = malloc(ptrs + nl + al + tl);
		assert_non_null(e->block);
		char *p = e->block + ptrs;
		memcpy(p, name, nl);
		memcpy(p + nl, addr, al);
		p += nl + al;
		for (uint8_t i = 0; i < tag_count; i++) {
			((char **)(void *)e->block)[i] = p;
			size_t l = strlen(tags[i]) + 1;
			memcpy(p, tags[i], l);
			p += l;
		}
		snprintf(e->key, sizeof e->key, "%s", key);
	}
	e->refs++;
	*name_out = e->block + tag_count * sizeof(char *);
	*addr_out = *name_out + strlen(name) + 1;
	return (const char *const *)(void *)e->block;
}

static void intern_put(void *ctx, const char *const *block)
{
	(void)ctx;
	g_intern_puts++;
	for (int i = 0; i < 16; i++) {
		if (g_intern[i].refs && (const char *const *)(void *)g_intern[i].block == block) {
			if (--g_intern[i].refs == 0) free(g_intern[i].block);
			return;
		}
	}
	fail_msg("put of a block the interner never gave out");
}

static void interner_shares_member_strings_and_gets_every_block_back(void **state)
{
	(void)state;
	static const struct swim_interner in = {.get = intern_get, .put = intern_put};
	memset(g_intern, 0, sizeof g_intern);
	g_intern_gets = g_intern_puts = 0;
	struct swim_config c;
	for (int i = 0; i < 3; i++) {
		base_config(&c, i);
		c.interner = &in;
		mk_cfg(&c);
	}
	know_all();
	struct tnode *a = &T.nodes[0], *b = &T.nodes[1], *x = &T.nodes[2];
	/* a and x hold b through the same block */
	assert_ptr_equal(view(a, b)->name, view(x, b)->name);
	assert_string_equal(view(a, b)->addr, b->addr);
	/* new metadata: a fresh block, the old one given back */
	const char *tags[] = {"gpu"};
	struct swim_update u = update_of(b, SWIM_ALIVE, 7);
	u.tags = tags;
	u.tag_count = 1;
	assert_int_equal(swim_add_member(a->s, T.now, &u), 0);
	assert_int_equal(view(a, b)->tag_count, 1);
	assert_string_equal(view(a, b)->tags[0], "gpu");
	assert_ptr_not_equal(view(a, b)->name, view(x, b)->name);
	run_to(T.now + 2000);
	for (int i = 0; i < T.count; i++) {
		swim_destroy(T.nodes[i].s);
		T.nodes[i].s = NULL;
	}
	assert_true(g_intern_gets > 0);
	assert_int_equal(g_intern_gets, g_intern_puts);
	for (int i = 0; i < 16; i++) assert_int_equal(g_intern[i].refs, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(ping_is_answered_with_ack, setup, teardown),
		cmocka_unit_test_setup_teardown(indirect_probe_success_avoids_suspicion, setup, teardown),
		cmocka_unit_test_setup_teardown(suspect_then_dead_after_the_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(confirmations_shorten_the_suspicion, setup, teardown),
		cmocka_unit_test_setup_teardown(suspicion_is_refuted_with_a_higher_incarnation, setup, teardown),
		cmocka_unit_test_setup_teardown(dead_rumour_about_self_is_refuted_above_it, setup, teardown),
		cmocka_unit_test_setup_teardown(left_member_is_marked_left_not_dead, setup, teardown),
		cmocka_unit_test_setup_teardown(gossip_precedence_follows_incarnation_then_state, setup, teardown),
		cmocka_unit_test_setup_teardown(push_pull_merges_by_incarnation_and_state, setup, teardown),
		cmocka_unit_test_setup_teardown(retransmit_limit_bounds_how_often_an_update_is_sent, setup, teardown),
		cmocka_unit_test_setup_teardown(piggyback_and_update_queue_are_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(members_max_refuses_new_members, setup, teardown),
		cmocka_unit_test_setup_teardown(join_retries_with_backoff_until_a_seed_answers, setup, teardown),
		cmocka_unit_test_setup_teardown(dead_members_are_reaped_after_the_configured_time, setup, teardown),
		cmocka_unit_test_setup_teardown(local_health_rises_on_failed_probes_and_falls_on_success, setup, teardown),
		cmocka_unit_test_setup_teardown(invalid_messages_are_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_config_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(relays_are_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(pick_two_returns_distinct_alive_members, setup, teardown),
		cmocka_unit_test_setup_teardown(metadata_and_tags_travel_with_alive, setup, teardown),
		cmocka_unit_test_setup_teardown(interner_shares_member_strings_and_gets_every_block_back, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
