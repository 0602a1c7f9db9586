/*
 * test_gossip_codec.c - the SWIM wire codec (node/codec/gossip.c): messages
 * survive encode/decode unchanged; malformed input (wrong id sizes, too many
 * updates, states or tags, unknown states, out-of-range fields, truncated or
 * oversized bytes) is refused with ERR_PROTOCOL / ERR_TOO_LARGE and leaves
 * nothing to free.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "codec/gossip.h"
#include "lib/err.h"

static const char *const TAGS[] = {"zone-a", "ssd", "gpu"};

static void fill_update(struct swim_update *u, uint8_t k, uint8_t state)
{
	memset(u, 0, sizeof(*u));
	memset(u->id, k, SWIM_ID_BYTES);
	memset(u->from, k + 1, SWIM_ID_BYTES);
	u->incarnation = 1000u + k;
	u->state = state;
	u->proto_version = SWIM_PROTO_VERSION;
	u->capacity = 4u + k;
	u->load = k;
	u->name = k % 2 ? "node-odd" : "";
	u->addr = "tcp://10.0.0.1:7000";
	u->tag_count = (uint8_t)(k % 4);
	u->tags = u->tag_count ? TAGS : NULL;
}

static void fill_msg(struct swim_msg *m, uint8_t type, uint32_t updates)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
	m->proto_version = SWIM_PROTO_VERSION;
	m->seq = 0xdeadbeef;
	memset(m->from, 0x11, SWIM_ID_BYTES);
	m->from_addr = "tcp://10.0.0.2:7000";
	memset(m->target, 0x22, SWIM_ID_BYTES);
	m->target_addr = type == SWIM_MSG_PING_REQ ? "tcp://10.0.0.3:7000" : NULL;
	m->join = type == SWIM_MSG_PUSH_PULL;
	m->update_count = updates;
	for (uint32_t i = 0; i < updates; i++) fill_update(&m->updates[i], (uint8_t)(i + 1), (uint8_t)(i % 4));
}

static const char *s_or_empty(const char *p) { return p ? p : ""; }

static void assert_update_equal(const struct swim_update *a, const struct swim_update *b)
{
	assert_memory_equal(a->id, b->id, SWIM_ID_BYTES);
	assert_memory_equal(a->from, b->from, SWIM_ID_BYTES);
	assert_int_equal(a->incarnation, b->incarnation);
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->proto_version, b->proto_version);
	assert_int_equal(a->capacity, b->capacity);
	assert_int_equal(a->load, b->load);
	assert_string_equal(s_or_empty(a->name), s_or_empty(b->name));
	assert_string_equal(s_or_empty(a->addr), s_or_empty(b->addr));
	assert_int_equal(a->tag_count, b->tag_count);
	for (uint8_t i = 0; i < a->tag_count; i++) assert_string_equal(a->tags[i], b->tags[i]);
}

static void assert_msg_equal(const struct swim_msg *a, const struct swim_msg *b)
{
	assert_int_equal(a->type, b->type);
	assert_int_equal(a->proto_version, b->proto_version);
	assert_int_equal(a->seq, b->seq);
	assert_memory_equal(a->from, b->from, SWIM_ID_BYTES);
	assert_memory_equal(a->target, b->target, SWIM_ID_BYTES);
	assert_string_equal(s_or_empty(a->from_addr), s_or_empty(b->from_addr));
	assert_string_equal(s_or_empty(a->target_addr), s_or_empty(b->target_addr));
	assert_int_equal(a->join, b->join);
	assert_int_equal(a->update_count, b->update_count);
	for (uint32_t i = 0; i < a->update_count; i++) assert_update_equal(&a->updates[i], &b->updates[i]);
	assert_int_equal(a->state_count, b->state_count);
	for (uint32_t i = 0; i < a->state_count; i++) assert_update_equal(&a->states[i], &b->states[i]);
}

static void round_trip(const struct swim_msg *m)
{
	uint8_t *bytes;
	size_t len;
	assert_int_equal(gossip_encode(m, &bytes, &len), 0);
	struct gossip_in in;
	assert_int_equal(gossip_decode(&in, bytes, len, 0), 0);
	assert_msg_equal(m, &in.msg);
	gossip_in_release(&in);
	free(bytes);
}

static void every_message_type_survives_a_round_trip(void **state)
{
	(void)state;
	struct swim_msg m;
	for (uint8_t t = SWIM_MSG_PING; t < SWIM_MSG_TYPE_COUNT; t++) {
		fill_msg(&m, t, t == SWIM_MSG_GOSSIP ? 1 : 3);
		round_trip(&m);
	}
	fill_msg(&m, SWIM_MSG_ACK, 0); /* nothing piggybacked */
	round_trip(&m);
	fill_msg(&m, SWIM_MSG_PING, SWIM_PIGGYBACK_MAX); /* the bound itself */
	round_trip(&m);
}

static void push_pull_states_survive_a_round_trip(void **state)
{
	(void)state;
	enum { N = 300 };
	struct swim_update *states = calloc(N, sizeof(*states));
	assert_non_null(states);
	for (uint32_t i = 0; i < N; i++) fill_update(&states[i], (uint8_t)(i % 250 + 1), (uint8_t)(i % 4));
	struct swim_msg m;
	fill_msg(&m, SWIM_MSG_PUSH_PULL, 2);
	m.states = states;
	m.state_count = N;
	round_trip(&m);
	free(states);
}

static void pb_fields_borrow_the_message_and_decode_back(void **state)
{
	(void)state;
	struct swim_msg m;
	fill_msg(&m, SWIM_MSG_PING_REQ, 2);
	struct gossip_pb pb;
	assert_int_equal(gossip_to_pb(&pb, &m), 0);
	assert_ptr_equal(pb.g.from_addr, m.from_addr); /* borrowed, not copied */
	assert_int_equal(pb.g.n_updates, 2);
	struct gossip_in in;
	assert_int_equal(gossip_from_pb(&in, &pb.g, 0), 0);
	assert_null(in.unpacked);
	assert_msg_equal(&m, &in.msg);
	gossip_in_release(&in);
	gossip_pb_release(&pb);
	/* an encoder's own bound */
	m.update_count = SWIM_PIGGYBACK_MAX + 1;
	assert_int_equal(gossip_to_pb(&pb, &m), ERR_INVALID);
	gossip_pb_release(&pb);
	uint8_t *bytes = (uint8_t *)1;
	size_t len = 1;
	assert_int_equal(gossip_encode(&m, &bytes, &len), ERR_INVALID);
	assert_null(bytes);
}

/* ---- malformed input ---- */

/* A valid PUSH_PULL with one state, built as protobuf so tests can break it. */
struct bad {
	Chorus__Gossip g;
	Chorus__SwimUpdate u, *up[SWIM_PIGGYBACK_MAX + 2];
	uint8_t from[16], id[32]; /* id: room for ids too long on purpose */
};

static void bad_init(struct bad *b)
{
	memset(b->from, 7, 16);
	memset(b->id, 9, sizeof(b->id));
	chorus__gossip__init(&b->g);
	chorus__swim_update__init(&b->u);
	b->u.id.data = b->id;
	b->u.id.len = 16;
	b->u.state = SWIM_ALIVE;
	b->u.addr = (char *)"tcp://a:1";
	for (int i = 0; i < SWIM_PIGGYBACK_MAX + 2; i++) b->up[i] = &b->u;
	b->g.type = SWIM_MSG_PUSH_PULL;
	b->g.proto_version = SWIM_PROTO_VERSION;
	b->g.from.data = b->from;
	b->g.from.len = 16;
	b->g.from_addr = (char *)"tcp://b:1";
	b->g.n_states = 1;
	b->g.states = b->up;
}

/* Refused both as a borrowed protobuf and as packed bytes. */
static void assert_refused(struct bad *b, uint32_t states_max)
{
	struct gossip_in in;
	assert_int_equal(gossip_from_pb(&in, &b->g, states_max), ERR_PROTOCOL);
	assert_null(in.states);
	size_t n = chorus__gossip__get_packed_size(&b->g);
	uint8_t *buf = malloc(n);
	assert_non_null(buf);
	chorus__gossip__pack(&b->g, buf);
	assert_int_equal(gossip_decode(&in, buf, n, states_max), ERR_PROTOCOL);
	assert_null(in.unpacked);
	free(buf);
}

static void the_valid_baseline_is_accepted(void **state)
{
	(void)state;
	struct bad b;
	bad_init(&b);
	struct gossip_in in;
	assert_int_equal(gossip_from_pb(&in, &b.g, 0), 0);
	assert_int_equal(in.msg.state_count, 1);
	assert_int_equal(in.msg.states[0].state, SWIM_ALIVE);
	gossip_in_release(&in);
	gossip_in_release(&in); /* idempotent on a released gossip_in */
}

static void wrong_id_sizes_are_refused(void **state)
{
	(void)state;
	struct bad b;
	bad_init(&b);
	b.g.from.len = 3;
	assert_refused(&b, 0);
	bad_init(&b);
	b.g.from.len = 0; /* the sender must say who it is */
	assert_refused(&b, 0);
	bad_init(&b);
	b.g.target.data = b.id;
	b.g.target.len = 15;
	assert_refused(&b, 0);
	bad_init(&b);
	b.u.id.len = 17;
	assert_refused(&b, 0);
	bad_init(&b);
	b.u.from.data = b.id;
	b.u.from.len = 8;
	assert_refused(&b, 0);
}

static void too_many_updates_states_or_tags_are_refused(void **state)
{
	(void)state;
	struct bad b;
	bad_init(&b);
	b.g.n_updates = SWIM_PIGGYBACK_MAX + 1;
	b.g.updates = b.up;
	assert_refused(&b, 0);
	bad_init(&b);
	b.g.n_states = 3;
	assert_refused(&b, 2); /* over the receiver's states_max */
	bad_init(&b);
	char *tags[SWIM_TAGS_MAX + 1];
	for (int i = 0; i <= SWIM_TAGS_MAX; i++) tags[i] = (char *)"t";
	b.u.n_tags = SWIM_TAGS_MAX + 1;
	b.u.tags = tags;
	assert_refused(&b, 0);
}

static void bad_states_and_out_of_range_fields_are_refused(void **state)
{
	(void)state;
	struct bad b;
	bad_init(&b);
	b.u.state = SWIM_LEFT + 1;
	assert_refused(&b, 0);
	bad_init(&b);
	b.u.state = 0xffffffffu;
	assert_refused(&b, 0);
	bad_init(&b);
	b.u.proto_version = 70000;
	assert_refused(&b, 0);
	bad_init(&b);
	b.g.proto_version = 70000;
	assert_refused(&b, 0);
	bad_init(&b);
	b.g.type = 256;
	assert_refused(&b, 0);
	/* the same update in the piggyback list, not the states */
	bad_init(&b);
	b.u.state = 7;
	b.g.n_states = 0;
	b.g.states = NULL;
	b.g.n_updates = 1;
	b.g.updates = b.up;
	assert_refused(&b, 0);
}

static void truncated_garbage_and_oversized_bytes_are_refused(void **state)
{
	(void)state;
	struct swim_msg m;
	fill_msg(&m, SWIM_MSG_PING, 5);
	uint8_t *bytes;
	size_t len;
	assert_int_equal(gossip_encode(&m, &bytes, &len), 0);
	struct gossip_in in;
	/* every strict prefix either fails to unpack or fails validation
	 * (a prefix that ends between fields unpacks to a smaller message:
	 * then it must at least not crash, and be released cleanly) */
	int refused = 0;
	for (size_t cut = 0; cut < len; cut++) {
		int rc = gossip_decode(&in, bytes, cut, 0);
		assert_true(rc == 0 || rc == ERR_PROTOCOL);
		if (rc == 0) gossip_in_release(&in);
		else refused++;
	}
	assert_true(refused > (int)len / 2);
	assert_int_equal(gossip_decode(&in, bytes, 0, 0), ERR_PROTOCOL); /* no sender */
	uint8_t garbage[64];
	for (size_t i = 0; i < sizeof garbage; i++) garbage[i] = (uint8_t)(0xff - i * 7);
	assert_int_equal(gossip_decode(&in, garbage, sizeof garbage, 0), ERR_PROTOCOL);
	/* refused on the length alone, before reading a byte */
	assert_int_equal(gossip_decode(&in, bytes, (size_t)GOSSIP_BYTES_MAX + 1, 0), ERR_TOO_LARGE);
	free(bytes);
}

/* A message the core builds is accepted by another core after the codec. */
struct box {
	uint8_t *bytes;
	size_t len;
	int count;
};

static void box_send(void *ctx, const char *addr, const struct swim_msg *m)
{
	(void)addr;
	struct box *b = ctx;
	if (b->count++) return; /* keep the first */
	assert_int_equal(gossip_encode(m, &b->bytes, &b->len), 0);
}

static void a_core_accepts_what_the_codec_decodes(void **state)
{
	(void)state;
	struct box box = {0};
	struct swim_effects fx = {.ctx = &box, .send = box_send};
	struct swim_config c;
	swim_config_defaults(&c);
	memset(c.id, 1, SWIM_ID_BYTES);
	c.addr = "a:1";
	c.name = "a";
	c.tags = TAGS;
	c.tag_count = 2;
	c.period_ms = 200;
	c.probe_timeout_ms = 100;
	struct swim *a, *b;
	assert_int_equal(swim_create(&a, &c, &fx, 1000, NULL, 0), 0);
	memset(c.id, 2, SWIM_ID_BYTES);
	c.addr = "b:1";
	struct swim_effects fx_b = {.ctx = &box, .send = box_send};
	assert_int_equal(swim_create(&b, &c, &fx_b, 1000, NULL, 0), 0);
	const char *seeds[] = {"b:1"};
	assert_int_equal(swim_join(a, 1000, seeds, 1), 0); /* PUSH_PULL(join) with a's state */
	assert_non_null(box.bytes);
	struct gossip_in in;
	assert_int_equal(gossip_decode(&in, box.bytes, box.len, 0), 0);
	assert_int_equal(in.msg.type, SWIM_MSG_PUSH_PULL);
	assert_int_equal(swim_on_message(b, 1001, &in.msg), 0);
	gossip_in_release(&in);
	const struct swim_member *m = swim_find(b, swim_self_id(a));
	assert_non_null(m);
	assert_string_equal(m->addr, "a:1");
	assert_int_equal(m->tag_count, 2);
	assert_string_equal(m->tags[1], "ssd");
	free(box.bytes);
	swim_destroy(a);
	swim_destroy(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_message_type_survives_a_round_trip),
		cmocka_unit_test(push_pull_states_survive_a_round_trip),
		cmocka_unit_test(pb_fields_borrow_the_message_and_decode_back),
		cmocka_unit_test(the_valid_baseline_is_accepted),
		cmocka_unit_test(wrong_id_sizes_are_refused),
		cmocka_unit_test(too_many_updates_states_or_tags_are_refused),
		cmocka_unit_test(bad_states_and_out_of_range_fields_are_refused),
		cmocka_unit_test(truncated_garbage_and_oversized_bytes_are_refused),
		cmocka_unit_test(a_core_accepts_what_the_codec_decodes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
