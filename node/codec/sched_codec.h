/*
 * sched_codec.h - schedules on the wire: `struct sched_spec` <-> CronSpec,
 * `struct sched_cmd` <-> SchedCmd (a Raft entry's data). The only code
 * that maps them; pure (no I/O, no logging).
 *
 * A spec's task template is a packed TaskSpec built from CronSpec's
 * handler, payload and options (the schedule core keeps it opaque).
 */
#ifndef CHORUS_CODEC_SCHED_CODEC_H
#define CHORUS_CODEC_SCHED_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/sched.h"
#include "proto/chorus.pb-c.h"

/* CronSpec -> spec (spec->task allocated: sched_spec_free). 0, or
 * ERR_INVALID with err (a field over its size) / ERR_NOMEM. */
int sched_spec_from_pb(const Chorus__CronSpec *pb, struct sched_spec *spec, char *err,
                       size_t err_len);
/* spec -> CronSpec; *task_out is the unpacked template (free it with
 * chorus__task_spec__free_unpacked after use; pb borrows from it and
 * from spec). 0, or ERR_PROTOCOL when the template does not unpack. */
int sched_spec_to_pb(const struct sched_spec *spec, Chorus__CronSpec *pb,
                     Chorus__TaskSpec **task_out);

/* What a decoded command owns and lends to it: an ADD's spec (its task
 * allocated), a FIRE's targets. The caller's (a stack variable serves);
 * released with sched_cmd_store_free, on every path. */
struct sched_cmd_store {
	struct sched_spec spec;
	uint8_t targets[SCHED_ACTIVE_MAX][SCHED_ID_BYTES];
};

/* cmd -> bytes (malloc'd). 0 or ERR_NOMEM/ERR_PROTOCOL (n_targets over
 * SCHED_ACTIVE_MAX among others). */
int sched_cmd_encode(const struct sched_cmd *c, uint8_t **bytes, size_t *len);
/* bytes -> cmd, which borrows from *store (c->spec, c->targets). Targets
 * are refused unless each is SCHED_ID_BYTES and there are at most
 * SCHED_ACTIVE_MAX. 0 or ERR_PROTOCOL; either way *store is set up for
 * sched_cmd_store_free. */
int sched_cmd_decode(const uint8_t *bytes, size_t len, struct sched_cmd *c,
                     struct sched_cmd_store *store);
void sched_cmd_store_free(struct sched_cmd_store *store);

/* Snapshots of the schedules (Raft log compaction, node/core/raft.h):
 * every schedule's applied state (spec, pause and note, runs, watermarks,
 * active runs, buffer, history, backfill in progress; sched_export), never
 * the leader's volatile plan nor what a node derives (the parsed
 * expression, the zone, `broken`). The bytes are a SchedSnapshot message
 * (proto/chorus.proto), schedules in name order, always ending with its
 * `end` (the count): a snapshot cut short is refused, wherever the cut.
 * The same table packs to the same bytes. Both directions hold one
 * schedule's protobuf structs at a time, not the whole message's.
 *
 * pack: 0 with *bytes (malloc'd, *len bytes; an empty table packs too),
 * ERR_NOMEM, or ERR_PROTOCOL when a template is not a packed TaskSpec
 * (every applied ADD's is: sched_spec_from_pb made it).
 * load: a NEW table from bytes (resolve_tz as sched_create's); the caller
 * swaps it for its old one. A schedule whose zone or expression does not
 * resolve here is kept and marked broken, as apply does. The loaded table
 * plans as the original would after sched_leader_reset (every schedule
 * due at once). Bytes that do not unpack, another version, or a limit of
 * sched.h broken (sizes, counts, duplicate names): NULL with err; nothing
 * half-built is returned. */
int sched_snapshot_pack(const struct sched *s, uint8_t **bytes, size_t *len);
struct sched *sched_snapshot_load(const uint8_t *bytes, size_t len, sched_tz_fn resolve_tz,
                                  void *tz_ctx, char *err, size_t err_len);

#endif
