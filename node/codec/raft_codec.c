/*
 * raft_codec.c - see raft_codec.h.
 */
#include "codec/raft_codec.h"

#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

int raft_codec_to_pb(const struct raft_msg *m, Chorus__RaftMsg *pb)
{
	chorus__raft_msg__init(pb);
	pb->type = m->type;
	pb->from.data = (uint8_t *)m->from.b;
	pb->from.len = RAFT_ID_BYTES;
	pb->to.data = (uint8_t *)m->to.b;
	pb->to.len = RAFT_ID_BYTES;
	pb->term = m->term;
	pb->last_index = m->last_index;
	pb->last_term = m->last_term;
	pb->granted = m->granted;
	pb->success = m->success;
	pb->match_index = m->match_index;
	pb->prev_index = m->prev_index;
	pb->prev_term = m->prev_term;
	pb->commit = m->commit;
	pb->snap_index = m->snap.index;
	pb->snap_term = m->snap.term;
	pb->snap_voters.data = (uint8_t *)m->snap.voters;
	pb->snap_voters.len = (size_t)m->snap.n_voters * RAFT_ID_BYTES;
	pb->snap_total = m->snap_total;
	pb->snap_offset = m->snap_offset;
	pb->snap_chunk.data = (uint8_t *)m->chunk;
	pb->snap_chunk.len = m->chunk_len;
	if (m->n_entries) {
		Chorus__RaftEntry *ents = calloc(m->n_entries, sizeof(*ents));
		Chorus__RaftEntry **ptrs = calloc(m->n_entries, sizeof(*ptrs));
		if (!ents || !ptrs) {
			free(ents);
			free(ptrs);
			return ERR_NOMEM;
		}
		for (uint32_t i = 0; i < m->n_entries; i++) {
			const struct raft_entry *e = &m->entries[i];
			chorus__raft_entry__init(&ents[i]);
			ents[i].term = e->term;
			ents[i].index = e->index;
			ents[i].type = e->type;
			ents[i].data.data = e->data;
			ents[i].data.len = e->len;
			ptrs[i] = &ents[i];
		}
		pb->entries = ptrs;
		pb->n_entries = m->n_entries;
	}
	return 0;
}

void raft_codec_pb_free(Chorus__RaftMsg *pb)
{
	if (pb->n_entries) {
		free(pb->entries[0]); /* the array of structs, allocated at once */
		free(pb->entries);
	}
	pb->entries = NULL;
	pb->n_entries = 0;
}

int raft_codec_encode(const struct raft_msg *m, uint8_t **bytes, size_t *len)
{
	Chorus__RaftMsg pb;
	int rc = raft_codec_to_pb(m, &pb);
	if (rc != 0)
		return rc;
	size_t n = chorus__raft_msg__get_packed_size(&pb);
	uint8_t *b = malloc(n ? n : 1);
	if (!b) {
		raft_codec_pb_free(&pb);
		return ERR_NOMEM;
	}
	chorus__raft_msg__pack(&pb, b);
	raft_codec_pb_free(&pb);
	*bytes = b;
	*len = n;
	return 0;
}

int raft_codec_from_pb(struct raft_in *in, Chorus__RaftMsg *pb)
{
	struct raft_msg *m = &in->msg;
	if (pb->from.len != RAFT_ID_BYTES || pb->to.len != RAFT_ID_BYTES || pb->type > 255 ||
	    pb->n_entries > RAFT_APPEND_ENTRIES_MAX)
		return ERR_PROTOCOL;
	m->type = (uint8_t)pb->type;
	memcpy(m->from.b, pb->from.data, RAFT_ID_BYTES);
	memcpy(m->to.b, pb->to.data, RAFT_ID_BYTES);
	m->term = pb->term;
	m->last_index = pb->last_index;
	m->last_term = pb->last_term;
	m->granted = pb->granted;
	m->success = pb->success;
	m->match_index = pb->match_index;
	m->prev_index = pb->prev_index;
	m->prev_term = pb->prev_term;
	m->commit = pb->commit;
	if (pb->snap_voters.len % RAFT_ID_BYTES ||
	    pb->snap_voters.len / RAFT_ID_BYTES > RAFT_VOTERS_MAX ||
	    pb->snap_chunk.len > RAFT_SNAPSHOT_CHUNK_BYTES)
		return ERR_PROTOCOL;
	m->snap.index = pb->snap_index;
	m->snap.term = pb->snap_term;
	m->snap.n_voters = (uint32_t)(pb->snap_voters.len / RAFT_ID_BYTES);
	if (pb->snap_voters.len)
		memcpy(m->snap.voters, pb->snap_voters.data, pb->snap_voters.len);
	m->snap_total = pb->snap_total;
	m->snap_offset = pb->snap_offset;
	m->chunk_len = (uint32_t)pb->snap_chunk.len;
	m->chunk = pb->snap_chunk.data;
	if (pb->n_entries) {
		in->entries = calloc(pb->n_entries, sizeof(*in->entries));
		if (!in->entries)
			return ERR_NOMEM;
		for (size_t i = 0; i < pb->n_entries; i++) {
			const Chorus__RaftEntry *e = pb->entries[i];
			if (e->data.len > RAFT_ENTRY_BYTES_MAX || e->type > 255)
				return ERR_PROTOCOL;
			in->entries[i].term = e->term;
			in->entries[i].index = e->index;
			in->entries[i].type = (uint8_t)e->type;
			in->entries[i].len = (uint32_t)e->data.len;
			in->entries[i].data = e->data.data;
		}
		m->entries = in->entries;
		m->n_entries = (uint32_t)pb->n_entries;
	}
	return 0;
}

int raft_codec_decode(struct raft_in *in, const uint8_t *bytes, size_t len)
{
	memset(in, 0, sizeof(*in));
	in->pb = chorus__raft_msg__unpack(NULL, len, bytes);
	if (!in->pb)
		return ERR_PROTOCOL;
	int rc = raft_codec_from_pb(in, in->pb);
	if (rc != 0)
		raft_in_release(in);
	return rc;
}

void raft_in_release(struct raft_in *in)
{
	free(in->entries);
	if (in->pb)
		chorus__raft_msg__free_unpacked(in->pb, NULL);
	memset(in, 0, sizeof(*in));
}
