/* test_cluster_gossip.c - the shell's gossip decoding (node/io/cluster.c):
 * malformed Gossip bodies from a peer are refused and change nothing; a
 * well-formed push-pull from a new member adds it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <nng/nng.h>

#include "chorus.h"
#include "core/swim.h"
#include "io/cluster.h"
#include "proto/seal.h"
#include "lib/arena.h"
#include "lib/clock.h"

/* monotonic and wall clocks far apart, as on a real machine */
static const struct now T1000 = {1000, 1700000000000};
static const struct now T2000 = {2000, 1700000001000};

static void wake_nop(void *arg)
{
	(void)arg;
}

static struct cluster *start(void)
{
	static const uint8_t id[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	static const uint8_t secret[32] = {7};
	struct seal_keyring *kr = seal_keyring_from_secrets(secret, 1);
	assert_non_null(kr);
	struct cluster_config cc = {
		.node_id = id,
		.name = "self",
		.addr = "tcp://127.0.0.1:9",
		.keyring = kr,
		.capacity = 4,
		.incarnation = 1,
		.seed = 42,
		.period_ms = 200,
		.reap_after_ms = 60000,
		.frame_bytes_max = 1 << 20,
		.wake = wake_nop,
	};
	struct cluster *c = NULL;
	char err[256] = "";
	assert_int_equal(cluster_start(&c, &cc, &T1000, err, sizeof(err)), 0);
	assert_non_null(c);
	seal_keyring_free(kr); /* the cluster holds its own reference */
	return c;
}

static uint8_t peer_id[16] = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9};

/* A push-pull carrying the peer's own alive state. */
static void fill_push_pull(Chorus__Gossip *g, Chorus__SwimUpdate *u, Chorus__SwimUpdate **up)
{
	chorus__gossip__init(g);
	chorus__swim_update__init(u);
	u->id.data = peer_id;
	u->id.len = 16;
	u->incarnation = 1;
	u->state = SWIM_ALIVE;
	u->proto_version = SWIM_PROTO_VERSION;
	u->capacity = 4;
	u->name = (char *)"peer";
	u->addr = (char *)"tcp://127.0.0.1:10";
	*up = u;
	g->type = SWIM_MSG_PUSH_PULL;
	g->proto_version = SWIM_PROTO_VERSION;
	g->from.data = peer_id;
	g->from.len = 16;
	g->from_addr = (char *)"tcp://127.0.0.1:10";
	g->n_states = 1;
	g->states = up;
}

static void malformed_gossip_is_refused_and_changes_nothing(void **state)
{
	(void)state;
	struct cluster *c = start();
	const struct swim *sw = cluster_swim(c);
	Chorus__Gossip g;
	Chorus__SwimUpdate u, *up;

	fill_push_pull(&g, &u, &up);
	g.from.len = 3; /* a sender id of the wrong size */
	assert_int_equal(cluster_on_gossip(c, &g, &T2000), CH_ERR_PROTOCOL);

	fill_push_pull(&g, &u, &up);
	u.id.len = 15; /* a member id of the wrong size */
	assert_int_equal(cluster_on_gossip(c, &g, &T2000), CH_ERR_PROTOCOL);

	fill_push_pull(&g, &u, &up);
	u.state = 9; /* no such state */
	assert_int_equal(cluster_on_gossip(c, &g, &T2000), CH_ERR_PROTOCOL);

	fill_push_pull(&g, &u, &up);
	g.n_updates = SWIM_PIGGYBACK_MAX + 1; /* over the piggyback bound */
	Chorus__SwimUpdate *many[SWIM_PIGGYBACK_MAX + 1];
	for (int i = 0; i <= SWIM_PIGGYBACK_MAX; i++)
		many[i] = &u;
	g.updates = many;
	assert_int_equal(cluster_on_gossip(c, &g, &T2000), CH_ERR_PROTOCOL);

	fill_push_pull(&g, &u, &up);
	u.n_tags = SWIM_TAGS_MAX + 1; /* too many tags */
	char *tags[SWIM_TAGS_MAX + 1];
	for (int i = 0; i <= SWIM_TAGS_MAX; i++)
		tags[i] = (char *)"t";
	u.tags = tags;
	assert_int_equal(cluster_on_gossip(c, &g, &T2000), CH_ERR_PROTOCOL);

	assert_int_equal(swim_member_count(sw), 1);
	assert_int_equal(cluster_incarnation(c), 1);
	cluster_stop(c);
}

static void push_pull_from_a_new_member_adds_it(void **state)
{
	(void)state;
	struct cluster *c = start();
	Chorus__Gossip g;
	Chorus__SwimUpdate u, *up;
	fill_push_pull(&g, &u, &up);
	assert_int_equal(cluster_on_gossip(c, &g, &T2000), 0);
	const struct swim_member *m = swim_find(cluster_swim(c), peer_id);
	assert_non_null(m);
	assert_int_equal(m->state, SWIM_ALIVE);
	assert_string_equal(m->name, "peer");
	Chorus__MemberInfo **mi = NULL;
	size_t n = 0;
	struct arena a = {0};
	assert_int_equal(cluster_members(c, &a, &T2000, &mi, &n), 0);
	assert_int_equal(n, 2);
	int selves = 0;
	for (size_t i = 0; i < n; i++)
		selves += mi[i]->self;
	assert_int_equal(selves, 1);
	/* since_ms is wall time: 1 s before "now" on the wall clock */
	for (size_t i = 0; i < n; i++)
		if (!mi[i]->self)
			assert_int_equal(mi[i]->since_ms, T2000.wall_ms);
	arena_free(&a);
	cluster_stop(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(malformed_gossip_is_refused_and_changes_nothing),
		cmocka_unit_test(push_pull_from_a_new_member_adds_it),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	nng_fini(); /* nng's threads, so valgrind sees nothing left */
	return rc;
}
