/*
 * gossip.c - struct swim_msg <-> protobuf Gossip (see gossip.h).
 *
 * The subtle part is ownership: encoding borrows the core's memory (the
 * protobuf struct is only packed, never freed by protobuf-c), decoding
 * borrows the unpacked protobuf (swim_update strings point into it). Ids
 * are fixed 16-byte fields on the wire as `bytes`; an empty `from` or
 * `target` means all zero, as the shell has always sent them.
 */
#include "codec/gossip.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

/* ---- encoding ---- */

static void update_to_pb(Chorus__SwimUpdate *pu, const struct swim_update *u)
{
	chorus__swim_update__init(pu);
	pu->id.data = (uint8_t *)u->id;
	pu->id.len = SWIM_ID_BYTES;
	pu->from.data = (uint8_t *)u->from;
	pu->from.len = SWIM_ID_BYTES;
	pu->incarnation = u->incarnation;
	pu->state = u->state;
	pu->proto_version = u->proto_version;
	pu->capacity = u->capacity;
	pu->load = u->load;
	/* protobuf-c packs a NULL string as absent; "" says the same thing */
	pu->name = (char *)(u->name ? u->name : "");
	pu->addr = (char *)(u->addr ? u->addr : "");
	pu->n_tags = u->tag_count;
	pu->tags = (char **)u->tags;
}

int gossip_to_pb(struct gossip_pb *out, const struct swim_msg *m)
{
	out->sts = NULL;
	out->stp = NULL;
	chorus__gossip__init(&out->g);
	if (m->update_count > SWIM_PIGGYBACK_MAX || (m->state_count && !m->states)) return ERR_INVALID;
	for (uint32_t i = 0; i < m->update_count; i++) {
		update_to_pb(&out->ups[i], &m->updates[i]);
		out->upp[i] = &out->ups[i];
	}
	if (m->state_count) {
		out->sts = calloc(m->state_count, sizeof(*out->sts));
		out->stp = calloc(m->state_count, sizeof(*out->stp));
		if (!out->sts || !out->stp) {
			gossip_pb_release(out);
			return ERR_NOMEM;
		}
		for (uint32_t i = 0; i < m->state_count; i++) {
			update_to_pb(&out->sts[i], &m->states[i]);
			out->stp[i] = &out->sts[i];
		}
	}
	Chorus__Gossip *g = &out->g;
	g->type = m->type;
	g->proto_version = m->proto_version;
	g->seq = m->seq;
	g->from.data = (uint8_t *)m->from;
	g->from.len = SWIM_ID_BYTES;
	g->from_addr = (char *)(m->from_addr ? m->from_addr : "");
	g->target.data = (uint8_t *)m->target;
	g->target.len = SWIM_ID_BYTES;
	g->target_addr = (char *)(m->target_addr ? m->target_addr : "");
	g->join = m->join ? 1 : 0;
	g->n_updates = m->update_count;
	g->updates = m->update_count ? out->upp : NULL;
	g->n_states = m->state_count;
	g->states = out->stp;
	return 0;
}

void gossip_pb_release(struct gossip_pb *p)
{
	free(p->sts);
	free(p->stp);
	p->sts = NULL;
	p->stp = NULL;
	p->g.n_states = 0;
	p->g.states = NULL;
}

int gossip_encode(const struct swim_msg *m, uint8_t **bytes, size_t *len)
{
	*bytes = NULL;
	*len = 0;
	struct gossip_pb pb;
	int rc = gossip_to_pb(&pb, m);
	if (rc) return rc;
	size_t n = chorus__gossip__get_packed_size(&pb.g);
	uint8_t *buf = malloc(n ? n : 1);
	if (!buf) {
		gossip_pb_release(&pb);
		return ERR_NOMEM;
	}
	size_t w = chorus__gossip__pack(&pb.g, buf);
	assert(w == n);
	gossip_pb_release(&pb);
	*bytes = buf;
	*len = w;
	return 0;
}

/* ---- decoding ---- */

static int id_field_ok(const ProtobufCBinaryData *b, int may_be_empty)
{
	return b->len == SWIM_ID_BYTES || (may_be_empty && b->len == 0);
}

static int update_from_pb(struct swim_update *u, const Chorus__SwimUpdate *pu)
{
	memset(u, 0, sizeof(*u));
	if (!pu || !id_field_ok(&pu->id, 0) || !id_field_ok(&pu->from, 1) || pu->n_tags > SWIM_TAGS_MAX ||
	    (pu->n_tags && !pu->tags) || pu->state > SWIM_LEFT || pu->proto_version > UINT16_MAX)
		return ERR_PROTOCOL;
	memcpy(u->id, pu->id.data, SWIM_ID_BYTES);
	if (pu->from.len) memcpy(u->from, pu->from.data, SWIM_ID_BYTES);
	u->incarnation = pu->incarnation;
	u->state = (uint8_t)pu->state;
	u->proto_version = (uint16_t)pu->proto_version;
	u->capacity = pu->capacity;
	u->load = pu->load;
	u->name = pu->name;
	u->addr = pu->addr;
	u->tag_count = (uint8_t)pu->n_tags;
	u->tags = (const char *const *)pu->tags;
	return 0;
}

int gossip_from_pb(struct gossip_in *out, const Chorus__Gossip *g, uint32_t states_max)
{
	memset(out, 0, sizeof(*out));
	if (!states_max) states_max = GOSSIP_STATES_MAX;
	if (!g || !id_field_ok(&g->from, 0) || !id_field_ok(&g->target, 1) || g->n_updates > SWIM_PIGGYBACK_MAX ||
	    g->n_states > states_max || (g->n_updates && !g->updates) || (g->n_states && !g->states) ||
	    g->type > UINT8_MAX || g->proto_version > UINT16_MAX)
		return ERR_PROTOCOL;
	struct swim_msg *m = &out->msg;
	m->type = (uint8_t)g->type;
	m->proto_version = (uint16_t)g->proto_version;
	m->seq = g->seq;
	memcpy(m->from, g->from.data, SWIM_ID_BYTES);
	m->from_addr = g->from_addr;
	if (g->target.len) memcpy(m->target, g->target.data, SWIM_ID_BYTES);
	m->target_addr = g->target_addr;
	m->join = g->join ? 1 : 0;
	for (size_t i = 0; i < g->n_updates; i++)
		if (update_from_pb(&m->updates[i], g->updates[i]) != 0) return ERR_PROTOCOL;
	m->update_count = (uint32_t)g->n_updates;
	if (g->n_states) {
		out->states = calloc(g->n_states, sizeof(*out->states));
		if (!out->states) return ERR_NOMEM;
		for (size_t i = 0; i < g->n_states; i++) {
			if (update_from_pb(&out->states[i], g->states[i]) != 0) {
				gossip_in_release(out);
				return ERR_PROTOCOL;
			}
		}
		m->state_count = (uint32_t)g->n_states;
		m->states = out->states;
	}
	return 0;
}

int gossip_decode(struct gossip_in *out, const uint8_t *bytes, size_t len, uint32_t states_max)
{
	memset(out, 0, sizeof(*out));
	if (len > GOSSIP_BYTES_MAX) return ERR_TOO_LARGE;
	/* protobuf-c reports a truncated or malformed buffer and a failed
	 * allocation alike (NULL): counted as a protocol error */
	Chorus__Gossip *g = chorus__gossip__unpack(NULL, len, bytes);
	if (!g) return ERR_PROTOCOL;
	int rc = gossip_from_pb(out, g, states_max);
	if (rc) {
		chorus__gossip__free_unpacked(g, NULL);
		return rc;
	}
	out->unpacked = g;
	return 0;
}

void gossip_in_release(struct gossip_in *in)
{
	free(in->states);
	if (in->unpacked) chorus__gossip__free_unpacked(in->unpacked, NULL);
	memset(in, 0, sizeof(*in));
}
