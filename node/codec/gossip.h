/*
 * gossip.h - the SWIM wire codec: `struct swim_msg` <-> protobuf `Gossip`
 * (proto/chorus.proto). The only code that maps membership messages to the
 * wire; node/io/cluster.c and the simulator (tests/sim/driver_swim.c) both
 * go through it.
 *
 * Pure: no I/O, no clock, no logging. Errors are lib/err.h codes.
 *
 * Encoding. gossip_to_pb() fills a Chorus__Gossip whose fields *borrow* the
 * swim_msg's memory (ids, strings, tag arrays): valid while the swim_msg is,
 * i.e. inside the core's send effect; embed it in an Envelope and pack it
 * there. gossip_encode() packs it to bytes the caller owns (free()).
 *
 * Decoding. Validation is what the shell did before this codec existed
 * (cluster_on_gossip): sender id 16 bytes, target id empty or 16 bytes,
 * type and proto_version in range, at most SWIM_PIGGYBACK_MAX updates and
 * states_max states; per update: id 16 bytes, from empty or 16 bytes, state
 * at most SWIM_LEFT, proto_version and tag count in range. A bad message is
 * ERR_PROTOCOL. Everything else (string lengths, zero ids, incarnations, a
 * message type the core does not know, which fields a type needs) is
 * checked by swim_on_message(), which refuses with ERR_PROTOCOL too.
 *
 * A decoded message lives in a `struct gossip_in`:
 *   - gossip_from_pb() borrows the Chorus__Gossip: msg's strings and tag
 *     arrays point into it, so it must outlive the gossip_in.
 *   - gossip_decode() unpacks bytes itself and owns the result.
 * Either way gossip_in_release() frees what the gossip_in owns (the states
 * array, and the unpacked protobuf after gossip_decode); it is safe on a
 * zeroed or failed gossip_in. On an error nothing is left to release.
 *
 * Threading: none; no globals.
 */
#ifndef CHORUS_CODEC_GOSSIP_H
#define CHORUS_CODEC_GOSSIP_H

#include <stddef.h>
#include <stdint.h>

#include "core/swim.h"
#include "proto/chorus.pb-c.h"

/* Default bound on push-pull states (= swim_config.members_max default). */
#define GOSSIP_STATES_MAX 16384u
/* Bytes accepted by gossip_decode (the link's default frame cap, 16 MiB). */
#define GOSSIP_BYTES_MAX (16u << 20)

/* A Chorus__Gossip ready to pack, borrowing from one swim_msg. */
struct gossip_pb {
	Chorus__Gossip g;
	Chorus__SwimUpdate ups[SWIM_PIGGYBACK_MAX];
	Chorus__SwimUpdate *upp[SWIM_PIGGYBACK_MAX];
	Chorus__SwimUpdate *sts;   /* state_count, owned (calloc) */
	Chorus__SwimUpdate **stp;  /* owned */
};

/* Fills out from m (see above for what it borrows). 0, ERR_INVALID (more
 * than SWIM_PIGGYBACK_MAX updates, or states without an array) or
 * ERR_NOMEM. Call gossip_pb_release() after packing, also on error. */
int gossip_to_pb(struct gossip_pb *out, const struct swim_msg *m);
void gossip_pb_release(struct gossip_pb *p);

/* Packs m into *bytes (malloc'd, caller frees) of *len bytes. 0,
 * ERR_INVALID or ERR_NOMEM (then *bytes = NULL). */
int gossip_encode(const struct swim_msg *m, uint8_t **bytes, size_t *len);

struct gossip_in {
	struct swim_msg msg;        /* hand this to swim_on_message() */
	struct swim_update *states; /* owned: msg.state_count entries */
	Chorus__Gossip *unpacked;   /* owned after gossip_decode(), else NULL */
};

/* Maps g (borrowed, must outlive out) to out->msg. 0, ERR_PROTOCOL or
 * ERR_NOMEM; at most states_max states (0 = GOSSIP_STATES_MAX). */
int gossip_from_pb(struct gossip_in *out, const Chorus__Gossip *g, uint32_t states_max);

/* Unpacks len bytes and maps them. 0, ERR_TOO_LARGE (len over
 * GOSSIP_BYTES_MAX), ERR_PROTOCOL (not a Gossip, or invalid as above) or
 * ERR_NOMEM. */
int gossip_decode(struct gossip_in *out, const uint8_t *bytes, size_t len, uint32_t states_max);

void gossip_in_release(struct gossip_in *in);

#endif
