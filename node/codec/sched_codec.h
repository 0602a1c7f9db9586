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

#endif
