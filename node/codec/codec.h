/*
 * codec.h - the node's one mapping between its internal types and the wire
 * (proto/chorus.proto) for tasks, and between internal and public error
 * codes.
 *
 * Owns: err_to_public() (lib/err.h ERR_* -> chorus.h CH_ERR_*, applied
 * where a reply leaves the node); the task-state mapping (core enum
 * task_state = public enum ch_task_state = wire TaskState, checked by static
 * asserts in codec.c); task <-> TaskResult / TaskSpec / SubmitReq.
 *
 * Filled protobuf structs point into the task they were filled from: they
 * are valid while the task is and must not be freed with protobuf-c's
 * free_unpacked. Pure: no I/O. Threading: none.
 */
#ifndef CHORUS_CODEC_CODEC_H
#define CHORUS_CODEC_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "proto/chorus.pb-c.h"

struct task;

/* ERR_* (lib/err.h) -> CH_ERR_* (chorus.h). 0 stays 0; an unknown code
 * becomes CH_ERR_INTERNAL. */
int err_to_public(int err);

/* core task state <-> wire; an out-of-range wire state becomes
 * TASK_UNKNOWN. */
Chorus__TaskState codec_state_to_wire(int state);
int codec_state_from_wire(Chorus__TaskState s);

/* A task's outcome as a TaskResult (points into t). */
void codec_result_fill(Chorus__TaskResult *r, const struct task *t);

/* A task from a client's spec. opts may be NULL. The task owns copies of
 * everything; pool is the caller's pool index. NULL on ENOMEM. */
struct task *codec_task_from_spec(const char *handler, const uint8_t *payload, size_t payload_len,
                                  const Chorus__TaskOptions *opts, uint32_t pool);

/* A SubmitReq that runs one attempt of t on another member (the member runs
 * it as an ephemeral, temporary task and answers after wait_ms at most). */
struct codec_remote_submit {
	Chorus__TaskOptions opts;
	Chorus__TaskSpec spec;
	Chorus__SubmitReq req;
};
void codec_remote_submit_fill(struct codec_remote_submit *rs, const struct task *t,
                              const uint8_t origin[16], uint32_t wait_ms);

/* A placed attempt's key on the wire (SubmitReq.origin_attempt): the
 * attempt number (low 16 bits) and how many times it was placed since the
 * task was loaded (high 16 bits). */
uint32_t codec_origin_attempt(const struct task *t);

#endif
