/*
 * raft_codec.h - the Raft wire codec: `struct raft_msg` <-> protobuf
 * `RaftMsg` (proto/chorus.proto). The only code that maps Raft messages to
 * the wire; the node's shell and the simulator (tests/sim/driver_raft.c)
 * both go through it.
 *
 * Pure: no I/O, no clock, no logging. Errors are lib/err.h codes.
 *
 * raft_codec_encode() packs a message to bytes the caller owns (free()).
 * raft_codec_decode() unpacks bytes into a `struct raft_in` that owns what
 * the message points to (its entries borrow the unpacked protobuf's data);
 * raft_in_release() frees it (safe on a zeroed or failed raft_in).
 * Validation here is the wire's: ids of 16 bytes, at most
 * RAFT_APPEND_ENTRIES_MAX entries, each at most RAFT_ENTRY_BYTES_MAX; the
 * rest (types, terms, ranges) is raft_step()'s, which refuses with
 * ERR_PROTOCOL.
 */
#ifndef CHORUS_CODEC_RAFT_CODEC_H
#define CHORUS_CODEC_RAFT_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/raft.h"
#include "proto/chorus.pb-c.h"

struct raft_in {
	struct raft_msg msg;
	struct raft_entry *entries;
	Chorus__RaftMsg *pb;
};

int raft_codec_encode(const struct raft_msg *m, uint8_t **bytes, size_t *len);
/* Fills pb (and its entry arrays, allocated: raft_codec_pb_free) from m;
 * pb borrows m's ids and entry data. */
int raft_codec_to_pb(const struct raft_msg *m, Chorus__RaftMsg *pb);
void raft_codec_pb_free(Chorus__RaftMsg *pb);
int raft_codec_from_pb(struct raft_in *in, Chorus__RaftMsg *pb);
int raft_codec_decode(struct raft_in *in, const uint8_t *bytes, size_t len);
void raft_in_release(struct raft_in *in);

#endif
