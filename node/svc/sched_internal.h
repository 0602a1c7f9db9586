/*
 * sched_internal.h - what the schedule service's two files share: its
 * state, and the calls between sched_svc.c (the Raft cycle, requests, the
 * service's hooks) and sched_duties.c (the leader's duties: planning,
 * dispatch and watching of runs, the voters' autopilot).
 */
#ifndef CHORUS_SVC_SCHED_INTERNAL_H
#define CHORUS_SVC_SCHED_INTERNAL_H


#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "chorus.h"
#include "codec/codec.h"
#include "codec/raft_codec.h"
#include "codec/sched_codec.h"
#include "config.h"
#include "core/raft.h"
#include "core/sched.h"
#include "core/tasks.h"
#include "io/dispatch.h"
#include "io/log.h"
#include "io/raftlog.h"
#include "io/rpc.h"
#include "io/tzload.h"
#include "lib/arena.h"
#include "lib/err.h"
#include "lib/prom.h"
#include "svc/ports.h"
#include "svc/service.h"

#define DUTY_PERIOD_MS 100          /* leader: dispatch, watch, autopilot */
#define AUTOPILOT_PERIOD_MS 1000
#define REMOTE_RETRY_MS 1000        /* a dispatch or a watch asked of another node */
#define FORWARD_TIMEOUT_MS 10000
#define REMOTE_ASK_TIMEOUT_MS 2000  /* a dispatch or watch asked of the node that holds the run */
#define RAFT_SEND_TIMEOUT_MS 2000
#define PENDING_MAX 4096            /* client calls waiting for their entry */
#define TRACK_MAX 65536             /* occurrences with a request in flight */
#define LIST_MAX 1000               /* schedules in one list answer */
#define HISTORY_DEFAULT 20

struct pending {
	struct rpc_call *call;
	uint64_t index, term;
	int op;
	char name[SCHED_NAME_BYTES_MAX + 1];
	struct pending *next;
};

/* An occurrence the leader asked something about (a dispatch, a watch):
 * not asked again before retry_ms. */
struct track {
	uint64_t key;
	uint64_t retry_ms;
	int inflight;
	int proposed;   /* DISPATCHED or DONE proposed: not again until applied (or 1 s) */
	uint8_t dispatched_seen; /* what the state said when it was proposed */
};

struct fwd_ctx;

struct sched_svc {
	struct fwd_ctx *fwd_head; /* requests forwarded to the leader, unanswered */
	struct host *host;
	const struct config *cfg;
	struct raftlog *log;
	struct raft *raft;
	struct sched *sched;
	struct tzcache *tz;
	struct peers_port *peers;
	struct task_submit_port *submit;
	struct raft_id self;
	int leader;                     /* this node led after the last cycle */
	uint64_t leader_term;
	struct raft_id ev_leader;       /* the leader last reported as an event */
	int ev_has_leader;
	struct pending *pending;
	uint32_t n_pending;
	uint64_t next_duty_ms, next_autopilot_ms;
	struct {
		struct raft_id id;
		uint64_t since_ms;
	} dead[RAFT_VOTERS_MAX];
	uint32_t n_dead;
	struct track *tracks;           /* open addressing by key */
	uint32_t tracks_cap;
	uint64_t persist_failures;
	uint64_t snapshots;             /* taken here (compactions) */
	uint64_t snapshot_retry_at;     /* applied index before which no snapshot is tried */
	uint32_t snapshot_jitter;       /* this node's, so the voters do not pack together */
	uint64_t last_heard[RAFT_VOTERS_MAX]; /* as leader, the last cycle's view */
	/* occurrences submitted to this node's journal in this iteration: their
	 * DISPATCHED is proposed once the journal's commit has made the task
	 * real (a failed commit forgets the task: the dispatch is retried) */
	struct {
		char name[SCHED_NAME_BYTES_MAX + 1];
		struct sched_occ occ;
		uint64_t task_id;
	} confirm[256];
	uint32_t n_confirm;
	uint64_t persist_retry_ms;
	int fatal;
	/* metrics: this node's decisions as leader (FIREs and SKIPs it
	 * proposed), so the cluster's sum counts each occurrence once */
	struct prom_hist lateness;   /* fire time - due time, seconds */
	uint64_t fired, skipped;     /* skipped: occurrences */
};

/* ---- sched_duties.c (metrics) ---- */
void sched_metrics_decided(struct sched_svc *s, const struct sched_cmd *c);

/* ---- sched_svc.c ---- */
uint64_t sched_mono_ms(struct sched_svc *s);
uint64_t sched_wall_ms(struct sched_svc *s);
int sched_tz_resolve(void *ctx, const char *name, const struct tz **zone, char *err,
                     size_t err_len);
const char *sched_member_name(struct sched_svc *s, const struct raft_id *id, char *buf,
                              size_t len);
/* A run's track key: its occurrence and its member (`all` has several). */
uint64_t sched_occ_key(const char *name, int64_t occ, uint8_t kind,
                       const uint8_t target[SCHED_ID_BYTES]);
struct track *sched_track_get(struct sched_svc *s, uint64_t key, int create);
void sched_tracks_clear(struct sched_svc *s);
int sched_propose_cmd(struct sched_svc *s, const struct sched_cmd *c, uint64_t *index);

/* ---- sched_duties.c: the leader's ---- */
void sched_propose_done(struct sched_svc *s, const char *name, const struct sched_occ *o,
                        int outcome, const char *why);
void sched_propose_dispatched(struct sched_svc *s, const char *name, const struct sched_occ *o,
                              uint64_t task_id);
/* The targets of an `all` FIRE: this node first, then the other members
 * alive (or suspect) in the membership, at most max. Returns how many (>= 1
 * when max >= 1). */
uint32_t sched_alive_members(struct sched_svc *s, uint8_t (*ids)[SCHED_ID_BYTES], uint32_t max);
/* Turns due occurrences into proposals. */
void sched_plan_and_propose(struct sched_svc *s);
/* Dispatches fired occurrences, watches runs to their end. */
void sched_dispatch_and_watch(struct sched_svc *s);
/* Grows and heals the voter set; sets the learners. */
void sched_autopilot(struct sched_svc *s);

#endif
