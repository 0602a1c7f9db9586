/*
 * sched_duties.c - the schedule leader's duties (see sched_svc.c for the
 * service): planning due occurrences into proposals, dispatching each
 * fired occurrence's task under its key once the FIRE is committed,
 * watching runs to their end (DISPATCHED and DONE), and the voters'
 * autopilot. Runs on the leader only, from the service's tick.
 */
#include "svc/sched_internal.h"

/* ---- the leader's duties ---- */

void sched_propose_done(struct sched_svc *s, const char *name, const struct sched_occ *o,
                         int outcome, const char *why)
{
	struct sched_cmd c = {0};
	c.op = SCHED_OP_DONE;
	snprintf(c.name, sizeof(c.name), "%s", name);
	c.scheduled_s = o->scheduled_s;
	c.kind = o->kind;
	memcpy(c.target, o->target, SCHED_ID_BYTES); /* which member's run */
	c.task_id = o->task_id;
	c.outcome = outcome;
	c.wall_ms = sched_wall_ms(s);
	snprintf(c.note, sizeof(c.note), "%s", why ? why : "");
	(void)sched_propose_cmd(s, &c, NULL);
}

void sched_propose_dispatched(struct sched_svc *s, const char *name, const struct sched_occ *o,
                               uint64_t task_id)
{
	struct sched_cmd c = {0};
	c.op = SCHED_OP_DISPATCHED;
	snprintf(c.name, sizeof(c.name), "%s", name);
	c.scheduled_s = o->scheduled_s;
	c.kind = o->kind;
	memcpy(c.target, o->target, SCHED_ID_BYTES);
	c.task_id = task_id;
	c.wall_ms = sched_wall_ms(s);
	(void)sched_propose_cmd(s, &c, NULL);
}

/* The occurrence's task, from the template and the schedule's `on`
 * (tag:NAME: placement runs it on a member with that tag). What is added to
 * the unpacked template is ours and is taken back before it is freed. */
struct occ_task {
	Chorus__TaskSpec *t;
	Chorus__TaskOptions opts;       /* used when the template has none */
	Chorus__TaskOptions *orig_opts;
	char **orig_req;
	size_t orig_n;
	char **req;
	char *tag;
};

static int occ_task_make(const struct sched_spec *sp, struct occ_task *ot)
{
	memset(ot, 0, sizeof(*ot));
	ot->t = chorus__task_spec__unpack(NULL, sp->task_len, sp->task);
	if (!ot->t)
		return -1;
	if (strncmp(sp->on, "tag:", 4) != 0)
		return 0;
	ot->orig_opts = ot->t->opts;
	if (!ot->t->opts) {
		chorus__task_options__init(&ot->opts);
		ot->t->opts = &ot->opts;
	}
	Chorus__TaskOptions *o = ot->t->opts;
	ot->orig_req = o->require;
	ot->orig_n = o->n_require;
	ot->req = malloc((o->n_require + 1) * sizeof(*ot->req));
	ot->tag = strdup(sp->on + 4);
	if (!ot->req || !ot->tag)
		return -1;
	memcpy(ot->req, o->require, o->n_require * sizeof(*ot->req));
	ot->req[o->n_require] = ot->tag;
	o->require = ot->req;
	o->n_require++;
	return 0;
}

static void occ_task_free(struct occ_task *ot)
{
	if (ot->t) {
		if (ot->req) {
			ot->t->opts->require = ot->orig_req;
			ot->t->opts->n_require = ot->orig_n;
		}
		ot->t->opts = ot->orig_opts ? ot->orig_opts : (ot->req || ot->tag ? NULL : ot->t->opts);
		chorus__task_spec__free_unpacked(ot->t, NULL);
	}
	free(ot->req);
	free(ot->tag);
	memset(ot, 0, sizeof(*ot));
}

struct remote_ctx {
	struct sched_svc *s;
	uint64_t key;
	uint64_t term;
	char name[SCHED_NAME_BYTES_MAX + 1];
	struct sched_occ occ;
	int watch; /* 0: a dispatch, 1: a watch */
};

static void remote_cb(void *arg, int code, const Chorus__Envelope *reply, const char *err)
{
	struct remote_ctx *rc = arg;
	struct sched_svc *s = rc->s;
	struct track *t = sched_track_get(s, rc->key, 0);
	if (t)
		t->inflight = 0;
	struct raft_status st;
	raft_status(s->raft, &st);
	if (st.role != RAFT_LEADER || st.term != rc->term) {
		free(rc);
		return;
	}
	if (code != 0 || !reply) {
		log_limited(LOG_WARN, "sched", "remote", 10000, "schedule %s: %s: %s", rc->name,
		            rc->watch ? "cannot learn how its run went" : "cannot dispatch its run",
		            err ? err : ch_strerror(code));
		free(rc);
		return;
	}
	if (!rc->watch && reply->body_case == CHORUS__ENVELOPE__BODY_SUBMIT_RESP)
		sched_propose_dispatched(s, rc->name, &rc->occ, reply->submit_resp->task_id);
	else if (!rc->watch && reply->body_case == CHORUS__ENVELOPE__BODY_ERROR &&
	         reply->error->code != CH_ERR_FULL && reply->error->code != CH_ERR_STORAGE &&
	         reply->error->code != CH_ERR_SHUTTING_DOWN && reply->error->code != CH_ERR_TIMEOUT) {
		/* refused for good (a handler it lacks, ...): the run failed */
		char why[200];
		snprintf(why, sizeof(why), "its node refused it: %s",
		         reply->error->message ? reply->error->message : "");
		sched_propose_done(s, rc->name, &rc->occ, TASK_FAILED, why);
	}
	else if (rc->watch && reply->body_case == CHORUS__ENVELOPE__BODY_AWAIT_RESP &&
	         reply->await_resp->result) {
		int state = (int)reply->await_resp->result->state;
		if (task_state_is_final(state))
			sched_propose_done(s, rc->name, &rc->occ, state, "");
	} else if (rc->watch && reply->body_case == CHORUS__ENVELOPE__BODY_ERROR &&
	           reply->error->code == CH_ERR_NOT_FOUND) {
		sched_propose_done(s, rc->name, &rc->occ, TASK_LOST, "its task is gone from its node");
	}
	free(rc);
}

static void remote_ask(struct sched_svc *s, const char *name, const struct sched_occ *o,
                       const struct sched_spec *sp, struct track *t)
{
	struct remote_ctx *rc = calloc(1, sizeof(*rc));
	if (!rc)
		return;
	struct raft_status st;
	raft_status(s->raft, &st);
	rc->s = s;
	rc->key = t->key;
	rc->term = st.term;
	snprintf(rc->name, sizeof(rc->name), "%s", name);
	rc->occ = *o;
	rc->watch = o->dispatched;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	Chorus__AwaitReq ar = CHORUS__AWAIT_REQ__INIT;
	Chorus__SubmitReq sr = CHORUS__SUBMIT_REQ__INIT;
	struct occ_task ot;
	memset(&ot, 0, sizeof(ot));
	char key[160];
	if (o->dispatched) {
		ar.task_id = o->task_id;
		env.body_case = CHORUS__ENVELOPE__BODY_AWAIT;
		env.await = &ar;
	} else {
		if (occ_task_make(sp, &ot) != 0) {
			occ_task_free(&ot);
			free(rc);
			return;
		}
		sched_occurrence_key(name, o->scheduled_s, o->kind, key, sizeof(key));
		sr.task = ot.t;
		sr.idempotency_key.data = (uint8_t *)key;
		sr.idempotency_key.len = strlen(key);
		env.body_case = CHORUS__ENVELOPE__BODY_SUBMIT;
		env.submit = &sr;
	}
	int rcode = s->peers->request(s->peers->ctx, o->target, &env, REMOTE_ASK_TIMEOUT_MS, remote_cb,
	                              rc);
	occ_task_free(&ot);
	if (rcode != 0) {
		free(rc);
		return;
	}
	t->inflight = 1;
}

/* Keeps only the tracks of occurrences still active (seen, n of them),
 * in a table sized for them: done occurrences leave no track behind. */
static void tracks_keep(struct sched_svc *s, const uint64_t *seen, uint32_t n)
{
	uint32_t cap = 1024;
	while (cap < 2 * n && cap < TRACK_MAX)
		cap *= 2;
	struct track *old = s->tracks;
	uint32_t old_cap = s->tracks_cap;
	struct track *nt = calloc(cap, sizeof(*nt));
	if (!nt)
		return; /* keep the old one */
	s->tracks = nt;
	s->tracks_cap = cap;
	for (uint32_t i = 0; i < old_cap; i++) {
		if (!old[i].key)
			continue;
		int keep = 0;
		for (uint32_t k = 0; k < n && !keep; k++)
			keep = seen[k] == old[i].key;
		if (keep) {
			struct track *t = sched_track_get(s, old[i].key, 1);
			if (t)
				*t = old[i];
		}
	}
	free(old);
}

void sched_dispatch_and_watch(struct sched_svc *s)
{
	uint64_t now = sched_mono_ms(s);
	uint64_t cur = 0;
	const char *name;
	const struct sched_spec *sp;
	uint32_t budget = 256;
	uint32_t n_seen = 0, cap_seen = 0;
	uint64_t *seen = NULL;
	int complete = 1;
	for (const struct sched_occ *o; (o = sched_next_active(s->sched, &cur, &name, &sp));) {
		if (!budget) {
			complete = 0;
			break;
		}
		uint64_t key = sched_occ_key(name, o->scheduled_s, o->kind, o->target);
		if (n_seen == cap_seen) {
			cap_seen = cap_seen ? cap_seen * 2 : 64;
			uint64_t *ns = realloc(seen, cap_seen * sizeof(*seen));
			if (!ns) {
				complete = 0;
				break;
			}
			seen = ns;
		}
		seen[n_seen++] = key;
		struct track *t = sched_track_get(s, key, 1);
		if (!t || t->inflight)
			continue;
		/* a proposal this state has not applied yet: wait for it (or
		 * propose again after a second: it may have been lost) */
		if (t->proposed && t->dispatched_seen == o->dispatched && now < t->retry_ms)
			continue;
		if (!t->proposed && now < t->retry_ms)
			continue;
		t->proposed = 0;
		budget--;
		int mine = memcmp(o->target, s->self.b, RAFT_ID_BYTES) == 0;
		if (mine && !o->dispatched) {
			char key[160], err[256];
			sched_occurrence_key(name, o->scheduled_s, o->kind, key, sizeof(key));
			struct occ_task ot;
			uint64_t id = 0;
			int rc = CH_ERR_PROTOCOL;
			snprintf(err, sizeof(err), "the schedule's task template does not decode");
			if (occ_task_make(sp, &ot) == 0)
				rc = s->submit->submit(s->submit->ctx, ot.t, key, &id, err, sizeof(err));
			occ_task_free(&ot);
			if (rc == 0 && s->n_confirm < sizeof(s->confirm) / sizeof(s->confirm[0])) {
				snprintf(s->confirm[s->n_confirm].name, sizeof(s->confirm[0].name), "%s", name);
				s->confirm[s->n_confirm].occ = *o;
				s->confirm[s->n_confirm].task_id = id;
				s->n_confirm++;
				t->proposed = 1;
				t->dispatched_seen = o->dispatched;
				t->retry_ms = now + 1000;
			} else if (rc == 0) {
				t->retry_ms = now + 100; /* the confirm list is full: next time */
			} else if (rc == CH_ERR_FULL || rc == CH_ERR_STORAGE || rc == CH_ERR_SHUTTING_DOWN) {
				t->retry_ms = now + REMOTE_RETRY_MS;
				log_limited(LOG_WARN, "sched", "dispatch", 10000,
				            "schedule %s: its run of %lld waits: %s", name,
				            (long long)o->scheduled_s, err);
			} else {
				/* the template cannot become a task here (a handler this
				 * node lacks, ...): the run ends failed, with the reason */
				sched_propose_done(s, name, o, TASK_FAILED, err);
				t->proposed = 1;
				t->dispatched_seen = o->dispatched;
				t->retry_ms = now + 1000;
			}
		} else if (mine) {
			int state = s->submit->state(s->submit->ctx, o->task_id);
			if (state < 0)
				sched_propose_done(s, name, o, TASK_LOST, "its task is gone from the journal");
			else if (task_state_is_final(state))
				sched_propose_done(s, name, o, state, "");
			else
				continue; /* looked at again next duty */
			t->proposed = 1;
			t->dispatched_seen = o->dispatched;
			t->retry_ms = now + 1000;
		} else {
			struct peer_info pi;
			int alive = s->peers->find(s->peers->ctx, o->target, &pi) && pi.alive;
			uint64_t age_ms = sched_wall_ms(s) > o->fired_ms ? sched_wall_ms(s) - o->fired_ms : 0;
			if (!alive && o->dispatched) {
				/* its node died (SWIM) while the run was going: as any
				 * task placed on a member that dies, it is lost (its
				 * node, if it comes back, may still finish it) */
				char why[160];
				snprintf(why, sizeof(why), "its node %s died while it ran",
				         s->peers->find(s->peers->ctx, o->target, &pi) ? pi.name : "(gone)");
				sched_propose_done(s, name, o, TASK_LOST, why);
				t->proposed = 1;
				t->dispatched_seen = o->dispatched;
				t->retry_ms = now + 1000;
			} else if (!alive && !o->dispatched && age_ms > SCHED_CATCHUP_DEFAULT_MS) {
				sched_propose_done(s, name, o, TASK_LOST,
				                   "its node went away before its dispatch was confirmed");
				t->proposed = 1;
				t->dispatched_seen = o->dispatched;
				t->retry_ms = now + 1000;
			} else if (alive) {
				remote_ask(s, name, o, sp, t);
				t->retry_ms = now + REMOTE_RETRY_MS;
			} else {
				t->retry_ms = now + REMOTE_RETRY_MS;
			}
		}
	}
	/* a complete pass: forget the occurrences that are done (small tables
	 * are not worth the rebuild) */
	if (complete && s->tracks && (n_seen * 4 < s->tracks_cap || n_seen * 2 > s->tracks_cap))
		tracks_keep(s, seen, n_seen);
	free(seen);
}

uint32_t sched_alive_members(struct sched_svc *s, uint8_t (*ids)[SCHED_ID_BYTES], uint32_t max)
{
	if (!max)
		return 0;
	struct peer_info members[256];
	uint32_t n_members = s->peers ? s->peers->members(s->peers->ctx, members, 256) : 0;
	memcpy(ids[0], s->self.b, SCHED_ID_BYTES);
	uint32_t n = 1;
	for (uint32_t i = 0; i < n_members && n < max; i++)
		if (members[i].alive && !members[i].self &&
		    memcmp(members[i].id, s->self.b, SCHED_ID_BYTES) != 0)
			memcpy(ids[n++], members[i].id, SCHED_ID_BYTES);
	return n;
}

void sched_plan_and_propose(struct sched_svc *s)
{
	uint64_t now = sched_wall_ms(s);
	if (sched_next_plan_ms(s->sched) > now)
		return; /* nothing due: the membership is not even read */
	struct sched_cmd cmds[64];
	/* `all` schedules run on the members alive now: the FIREs carry them
	 * (encoded by sched_propose_cmd before the next plan) */
	uint8_t members[SCHED_ACTIVE_MAX][SCHED_ID_BYTES];
	uint32_t n_members = sched_alive_members(s, members, SCHED_ACTIVE_MAX);
	uint32_t n = sched_plan(s->sched, now, s->self.b, members, n_members, cmds, 64);
	for (uint32_t i = 0; i < n; i++) {
		int rc = sched_propose_cmd(s, &cmds[i], NULL);
		if (rc == 0)
			sched_metrics_decided(s, &cmds[i]);
		if (rc != 0) {
			log_limited(LOG_ERROR, "sched", "propose", 10000,
			            "cannot propose the schedule's decision (%s): planned again",
			            err_name(rc));
			sched_leader_reset(s->sched);
			return;
		}
	}
}

/* Consul's autopilot, one change at a time: grow the voters from the
 * alive members up to the target; replace a voter dead for voter_dead. */
void sched_autopilot(struct sched_svc *s)
{
	struct raft_status st;
	raft_status(s->raft, &st);
	uint64_t now = sched_mono_ms(s);
	struct peer_info members[256];
	uint32_t n = s->peers ? s->peers->members(s->peers->ctx, members, 256) : 0;
	/* voters gone: since when */
	struct raft_id dead_now[RAFT_VOTERS_MAX];
	uint32_t n_dead_now = 0;
	for (uint32_t v = 0; v < st.voter_count; v++) {
		int alive = raft_id_eq(&st.voters[v], &s->self);
		for (uint32_t i = 0; i < n && !alive; i++)
			if (memcmp(members[i].id, st.voters[v].b, RAFT_ID_BYTES) == 0)
				alive = members[i].alive;
		if (!alive)
			dead_now[n_dead_now++] = st.voters[v];
	}
	/* keep the first time each was seen dead */
	uint32_t k = 0;
	for (uint32_t i = 0; i < s->n_dead; i++)
		for (uint32_t j = 0; j < n_dead_now; j++)
			if (raft_id_eq(&s->dead[i].id, &dead_now[j]))
				s->dead[k++] = s->dead[i];
	s->n_dead = k;
	for (uint32_t j = 0; j < n_dead_now; j++) {
		int known = 0;
		for (uint32_t i = 0; i < s->n_dead && !known; i++)
			known = raft_id_eq(&s->dead[i].id, &dead_now[j]);
		if (!known && s->n_dead < RAFT_VOTERS_MAX) {
			s->dead[s->n_dead].id = dead_now[j];
			s->dead[s->n_dead].since_ms = now;
			s->n_dead++;
		}
	}
	/* --voters pins the set: only those names are candidates, voters not
	 * named leave (one change at a time), the dead are not replaced */
	uint32_t pinned = s->cfg->voter_count;
	if (pinned) {
		for (uint32_t v = 0; v < st.voter_count; v++) {
			char nb[64];
			struct peer_info vi;
			if (!raft_id_eq(&st.voters[v], &s->self) &&
			    !s->peers->find(s->peers->ctx, st.voters[v].b, &vi))
				continue; /* its name is not known yet: never removed blind */
			sched_member_name(s, &st.voters[v], nb, sizeof(nb));
			int named = 0;
			for (uint32_t k2 = 0; k2 < pinned && !named; k2++)
				named = strcmp(s->cfg->voters[k2], nb) == 0;
			if (!named && st.voter_count > 1) {
				uint64_t idx;
				if (raft_change_voter(s->raft, now, &st.voters[v], 0, &idx) == 0)
					log_info("raft", "voter %s is not in --voters: removed", nb);
				return;
			}
		}
	}
	/* a candidate: alive, not a voter, first by name */
	const struct peer_info *cand = NULL;
	for (uint32_t i = 0; i < n; i++) {
		if (!members[i].alive)
			continue;
		if (pinned) {
			int named = 0;
			for (uint32_t k2 = 0; k2 < pinned && !named; k2++)
				named = strcmp(s->cfg->voters[k2], members[i].name) == 0;
			if (!named)
				continue;
		}
		int voter = 0;
		for (uint32_t v = 0; v < st.voter_count && !voter; v++)
			voter = memcmp(st.voters[v].b, members[i].id, RAFT_ID_BYTES) == 0;
		if (!voter && (!cand || strcmp(members[i].name, cand->name) < 0))
			cand = &members[i];
	}
	/* the other alive members follow the log as learners: they learn the
	 * leader (so they forward requests) and hold the schedules */
	struct raft_id learners[RAFT_LEARNERS_MAX];
	uint32_t n_learners = 0;
	for (uint32_t i = 0; i < n && n_learners < RAFT_LEARNERS_MAX; i++)
		if (members[i].alive && !members[i].self)
			memcpy(learners[n_learners++].b, members[i].id, RAFT_ID_BYTES);
	raft_set_learners(s->raft, learners, n_learners);
	uint32_t target = pinned ? pinned : s->cfg->voters_target;
	char nb[64];
	for (uint32_t i = 0; i < s->n_dead; i++) {
		if (pinned || now - s->dead[i].since_ms < s->cfg->voter_dead_ms ||
		    raft_id_eq(&s->dead[i].id, &s->self))
			continue;
		/* removing a dead voter never loses the majority: the rest keep
		 * committing; do it when there is a replacement or a surplus */
		if (st.voter_count > 1 && (cand || st.voter_count > target)) {
			uint64_t idx;
			if (raft_change_voter(s->raft, now, &s->dead[i].id, 0, &idx) == 0)
				log_info("raft", "voter %s dead for %u s: removed", sched_member_name(s, &s->dead[i].id, nb, sizeof(nb)),
				         s->cfg->voter_dead_ms / 1000);
			return;
		}
	}
	if (cand && st.voter_count < target) {
		struct raft_id id;
		memcpy(id.b, cand->id, RAFT_ID_BYTES);
		/* only a member that follows the log as a learner and has caught
		 * up is promoted: a voter far behind (a big snapshot to fetch)
		 * would hold up every commit that needs it for a majority */
		uint64_t match = 0, ago = 0;
		if (raft_learner_progress(s->raft, &id, &match, &ago) != 0 ||
		    match < st.commit_index || ago >= s->cfg->election_timeout_ms)
			return;
		uint64_t idx;
		char name[64];
		snprintf(name, sizeof(name), "%s", cand->name);
		if (raft_change_voter(s->raft, now, &id, 1, &idx) == 0)
			log_info("raft", "adding %s as a voter (%u of %u)", name, st.voter_count + 1, target);
	}
}

/* A decision proposed as leader, for the metrics. */
void sched_metrics_decided(struct sched_svc *s, const struct sched_cmd *c)
{
	if (c->op == SCHED_OP_FIRE) {
		s->fired++;
		int64_t late_ms = (int64_t)c->wall_ms - c->scheduled_s * 1000;
		prom_hist_observe(&s->lateness, prom_seconds_le, PROM_SECONDS_BUCKETS,
		                  late_ms > 0 ? (double)late_ms / 1000.0 : 0.0);
	} else if (c->op == SCHED_OP_SKIP) {
		s->skipped += c->count;
	}
}
