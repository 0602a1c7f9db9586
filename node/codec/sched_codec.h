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

/* cmd -> bytes (malloc'd). 0 or ERR_NOMEM/ERR_PROTOCOL. */
int sched_cmd_encode(const struct sched_cmd *c, uint8_t **bytes, size_t *len);
/* bytes -> cmd; an ADD's spec is allocated into *spec_store (free with
 * sched_spec_free). 0 or ERR_PROTOCOL. */
int sched_cmd_decode(const uint8_t *bytes, size_t len, struct sched_cmd *c,
                     struct sched_spec *spec_store);

/* Snapshots of the schedules (Raft log compaction, node/core/raft.h):
 * every schedule's applied state (spec, pause and note, runs, watermarks,
 * active runs, buffer, history, backfill in progress), never the leader's
 * volatile plan. The bytes are a SchedSnapshot message (proto/chorus.proto).
 *
 * pack: 0 with *bytes (malloc'd, *len bytes; an empty table packs too) or
 * ERR_NOMEM.
 * load: a NEW table from bytes (resolve_tz as sched_create's); the caller
 * swaps it for its old one. A schedule whose zone or expression does not
 * resolve here is kept and marked broken, as apply does. Bytes that do not
 * unpack or break a limit of sched.h (sizes, counts, duplicate names) are
 * refused: NULL with err; nothing half-built is returned. */
int sched_snapshot_pack(const struct sched *s, uint8_t **bytes, size_t *len);
struct sched *sched_snapshot_load(const uint8_t *bytes, size_t len, sched_tz_fn resolve_tz,
                                  void *tz_ctx, char *err, size_t err_len);

#endif
