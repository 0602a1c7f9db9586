/*
 * sched_svc.c - the schedule service: Raft among the voters (node/core/raft.c
 * over the peer links, its log in DATA_DIR/raft.db, io/raftlog.c), the
 * schedules replicated through it (node/core/sched.c), the voter set grown
 * and healed by the leader (as Consul's autopilot), and the requests
 * `cron` and `voters`.
 *
 * The Raft cycle (raft_cycle): take a ready, make its persistent part
 * durable (raft.db, synchronous = full: its own fsync, whatever the task
 * journal's setting), then send its messages, then apply its committed
 * entries, then advance. Entries are schedule commands (SchedCmd) and voter
 * changes. Only after a FIRE is applied does the leader dispatch it: the
 * occurrence's task is submitted to the journal of the node the FIRE names
 * (the leader that decided it; for `on: all`, each member it names gets its
 * own run in its own journal) under the key "cron:NAME:TIME", so a
 * dispatch retried by a new leader finds the same task; its id comes back
 * as a DISPATCHED command, and its end as DONE.
 *
 * Requests reach any node; a node that is not the leader forwards them to
 * the leader it knows over the peer link and relays the answer (a request
 * that came from a peer is not forwarded again: CH_ERR_NOT_LEADER).
 * A change is answered once its entry is applied (committed by a majority).
 */
#include "svc/sched_svc.h"

#include "svc/sched_internal.h"

/* ---- small helpers ---- */

uint64_t sched_mono_ms(struct sched_svc *s)
{
	return host_now(s->host)->mono_ms;
}

uint64_t sched_wall_ms(struct sched_svc *s)
{
	return host_now(s->host)->wall_ms;
}

int sched_tz_resolve(void *ctx, const char *name, const struct tz **zone, char *err,
                      size_t err_len)
{
	struct sched_svc *s = ctx;
	return tzcache_get(s->tz, name, zone, err, err_len);
}

const char *sched_member_name(struct sched_svc *s, const struct raft_id *id, char *buf,
                               size_t len)
{
	struct peer_info pi;
	if (s->peers && s->peers->find(s->peers->ctx, id->b, &pi)) {
		snprintf(buf, len, "%s", pi.name);
		return buf;
	}
	char hex[33];
	sodium_bin2hex(hex, sizeof(hex), id->b, 8);
	snprintf(buf, len, "%s", hex);
	return buf;
}

uint64_t sched_occ_key(const char *name, int64_t occ, uint8_t kind,
                       const uint8_t target[SCHED_ID_BYTES])
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (const char *p = name; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	for (uint32_t i = 0; i < SCHED_ID_BYTES; i++) /* each member's run of `all` */
		h = (h ^ target[i]) * 0x100000001b3ull;
	h ^= (uint64_t)occ * 0x9e3779b97f4a7c15ull;
	h ^= (uint64_t)kind << 56;
	return h ? h : 1;
}

struct track *sched_track_get(struct sched_svc *s, uint64_t key, int create)
{
	if (!s->tracks) {
		s->tracks_cap = 1024;
		s->tracks = calloc(s->tracks_cap, sizeof(*s->tracks));
		if (!s->tracks)
			return NULL;
	}
	uint32_t mask = s->tracks_cap - 1;
	for (uint32_t i = 0, j = (uint32_t)key & mask; i < s->tracks_cap; i++, j = (j + 1) & mask) {
		if (s->tracks[j].key == key)
			return &s->tracks[j];
		if (s->tracks[j].key == 0) {
			if (!create)
				return NULL;
			s->tracks[j].key = key;
			return &s->tracks[j];
		}
	}
	return NULL; /* full: cleared when leadership changes */
}

void sched_tracks_clear(struct sched_svc *s)
{
	if (s->tracks)
		memset(s->tracks, 0, s->tracks_cap * sizeof(*s->tracks));
}

/* ---- proposing ---- */

int sched_propose_cmd(struct sched_svc *s, const struct sched_cmd *c, uint64_t *index)
{
	uint8_t *bytes = NULL;
	size_t len = 0;
	int rc = sched_cmd_encode(c, &bytes, &len);
	if (rc != 0)
		return rc;
	rc = raft_propose(s->raft, sched_mono_ms(s), bytes, (uint32_t)len, index);
	free(bytes);
	return rc;
}

/* ---- answers ---- */

static void fill_info(struct sched_svc *s, const char *name, Chorus__CronInfo *ci,
                      Chorus__CronSpec *cs, Chorus__TaskSpec **task, struct arena *a,
                      uint32_t history)
{
	struct sched_view v;
	chorus__cron_info__init(ci);
	*task = NULL;
	if (sched_view(s->sched, name, &v) != 0)
		return;
	if (sched_spec_to_pb(v.spec, cs, task) == 0)
		ci->spec = cs;
	ci->paused = v.paused;
	ci->note = v.broken ? (char *)v.broken_why : (char *)v.note;
	ci->runs = v.runs;
	ci->next_s = v.next_s;
	ci->last_s = v.last_s;
	if (!history)
		return;
	uint32_t n = 0;
	while (n < history && sched_history(s->sched, name, n))
		n++;
	if (!n)
		return;
	Chorus__CronRun **runs = arena_alloc(a, n * sizeof(*runs));
	Chorus__CronRun *rv = arena_alloc(a, n * sizeof(*rv));
	if (!runs || !rv)
		return;
	for (uint32_t i = 0; i < n; i++) {
		const struct sched_occ *o = sched_history(s->sched, name, i);
		chorus__cron_run__init(&rv[i]);
		rv[i].scheduled_s = o->scheduled_s;
		rv[i].fired_ms = o->fired_ms;
		rv[i].task_id = o->task_id;
		char *buf = arena_alloc(a, 64);
		if (buf) {
			struct raft_id id;
			memcpy(id.b, o->target, RAFT_ID_BYTES);
			if (o->fired_ms)
				sched_member_name(s, &id, buf, 64);
			else
				buf[0] = '\0';
			rv[i].node = buf;
		}
		const char *outcome;
		if (o->outcome == -1)
			outcome = "skipped";
		else if (o->outcome == -2)
			outcome = "buffered";
		else if (o->done)
			outcome = task_state_name(o->outcome);
		else if (o->dispatched)
			outcome = "dispatched";
		else
			outcome = "fired";
		rv[i].outcome = (char *)outcome;
		char *why = arena_alloc(a, 160);
		if (why) {
			if (o->outcome == -1 && o->count > 1)
				snprintf(why, 160, "%s (%u occurrences to %lld)", o->why, o->count,
				         (long long)o->to_s);
			else
				snprintf(why, 160, "%s", o->why);
			rv[i].why = why;
		}
		runs[i] = &rv[i];
	}
	ci->history = runs;
	ci->n_history = n;
}

static void reply_schedule(struct sched_svc *s, struct rpc_call *c, const char *name,
                           uint32_t history)
{
	struct arena a = {0};
	Chorus__CronResp resp = CHORUS__CRON_RESP__INIT;
	Chorus__CronInfo ci;
	Chorus__CronSpec cs;
	Chorus__TaskSpec *task = NULL;
	Chorus__CronInfo *cp = &ci;
	if (name && name[0]) {
		fill_info(s, name, &ci, &cs, &task, &a, history);
		if (ci.spec) {
			resp.schedules = &cp;
			resp.n_schedules = 1;
		}
	}
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_CRON_RESP, cron_resp, &resp);
	if (task)
		chorus__task_spec__free_unpacked(task, NULL);
	arena_free(&a);
}

static void reply_list(struct sched_svc *s, struct rpc_call *c)
{
	struct arena a = {0};
	uint32_t n = sched_count(s->sched);
	if (n > LIST_MAX)
		n = LIST_MAX;
	Chorus__CronResp resp = CHORUS__CRON_RESP__INIT;
	Chorus__CronInfo **pv = arena_alloc(&a, (n ? n : 1) * sizeof(*pv));
	Chorus__CronInfo *iv = arena_alloc(&a, (n ? n : 1) * sizeof(*iv));
	Chorus__CronSpec *sv = arena_alloc(&a, (n ? n : 1) * sizeof(*sv));
	Chorus__TaskSpec **tv = arena_alloc(&a, (n ? n : 1) * sizeof(*tv));
	if (!pv || !iv || !sv || !tv) {
		arena_free(&a);
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	uint32_t cursor = 0, k = 0;
	for (const char *name; k < n && (name = sched_next_name(s->sched, &cursor));) {
		fill_info(s, name, &iv[k], &sv[k], &tv[k], &a, 0);
		pv[k] = &iv[k];
		k++;
	}
	resp.schedules = pv;
	resp.n_schedules = k;
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_CRON_RESP, cron_resp, &resp);
	for (uint32_t i = 0; i < k; i++)
		if (tv[i])
			chorus__task_spec__free_unpacked(tv[i], NULL);
	arena_free(&a);
}

/* ---- pending calls: answered when their entry applies ---- */

static void pending_cancel(void *arg, struct rpc_call *c)
{
	struct sched_svc *s = arg;
	for (struct pending **pp = &s->pending; *pp; pp = &(*pp)->next) {
		if ((*pp)->call == c) {
			struct pending *p = *pp;
			*pp = p->next;
			free(p);
			s->n_pending--;
			return;
		}
	}
}

static void pend(struct sched_svc *s, struct rpc_call *c, uint64_t index, int op, const char *name)
{
	struct pending *p = calloc(1, sizeof(*p));
	if (!p || s->n_pending >= PENDING_MAX) {
		free(p);
		rpc_reply_error(c, CH_ERR_FULL, "too many changes waiting to commit: retry");
		return;
	}
	struct rpc_call *pc = rpc_park(c, pending_cancel, s);
	if (!pc) {
		free(p);
		return;
	}
	struct raft_status st;
	raft_status(s->raft, &st);
	p->call = pc;
	p->index = index;
	p->term = st.term;
	p->op = op;
	snprintf(p->name, sizeof(p->name), "%s", name ? name : "");
	p->next = s->pending;
	s->pending = p;
	s->n_pending++;
}

/* Entry `index` (of `term`) applied: its waiters are answered; a waiter
 * whose entry was replaced by another leader's learns it was lost. */
static void pending_applied(struct sched_svc *s, uint64_t index, uint64_t term, int rc,
                            const char *why)
{
	for (struct pending **pp = &s->pending; *pp;) {
		struct pending *p = *pp;
		if (p->index != index) {
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		s->n_pending--;
		if (p->term != term)
			rpc_reply_error(p->call, CH_ERR_NOT_LEADER,
			                "the leader changed before the change committed: retry");
		else if (rc != 0)
			rpc_reply_error(p->call, rc == ERR_NOT_FOUND ? CH_ERR_NOT_FOUND : CH_ERR_INVALID,
			                "%s", why);
		else if (p->op == CH_CRON_RM || p->op == 0)
			reply_schedule(s, p->call, NULL, 0);
		else
			reply_schedule(s, p->call, p->name, p->op == CH_CRON_TRIGGER ? 1 : 0);
		free(p);
	}
}

static void pending_fail_all(struct sched_svc *s, const char *why)
{
	while (s->pending) {
		struct pending *p = s->pending;
		s->pending = p->next;
		rpc_reply_error(p->call, CH_ERR_NOT_LEADER, "%s", why);
		free(p);
	}
	s->n_pending = 0;
}

/* ---- the Raft cycle ---- */

static void apply_entry(struct sched_svc *s, const struct raft_entry *e)
{
	char err[256] = "";
	int rc = 0;
	if (e->type == RAFT_ENTRY_DATA) {
		struct sched_cmd c;
		struct sched_cmd_store store;
		const struct sched_spec *spec = &store.spec;
		rc = sched_cmd_decode(e->data, e->len, &c, &store);
		if (rc != 0) {
			log_limited(LOG_ERROR, "sched", "bad-entry", 10000,
			            "raft entry %" PRIu64 " is not a schedule command: skipped", e->index);
			snprintf(err, sizeof(err), "undecodable entry");
		} else {
			rc = sched_apply(s->sched, &c, err, sizeof(err));
			if (rc == 0 && s->leader && c.op == SCHED_OP_FIRE)
				s->next_duty_ms = 0; /* dispatched in this iteration */
			if (rc == 0 && c.op == SCHED_OP_ADD)
				log_info("sched", "schedule %s added: '%s'%s%s", c.name, spec->expr,
				         spec->tz[0] ? " in " : "", spec->tz);
			else if (rc == 0 && c.op == SCHED_OP_RM)
				log_info("sched", "schedule %s removed", c.name);
			/* the leader decided it: one event in the cluster, not one
			 * per voter, and none when the log is replayed at a start */
			if (rc == 0 && s->leader && c.op == SCHED_OP_SKIP)
				host_event(s->host, "schedule_skipped", c.name,
				           "%u occurrence(s) skipped: %s", c.count, c.note);
			/* cancel_other: the leader cancels the runs going on */
			if (rc == 0 && s->leader && c.op == SCHED_OP_FIRE && s->submit) {
				struct sched_view v;
				if (sched_view(s->sched, c.name, &v) == 0 &&
				    v.spec->overlap == SCHED_OVERLAP_CANCEL_OTHER) {
					uint64_t cur = 0;
					const char *nm;
					const struct sched_spec *sp;
					for (const struct sched_occ *o;
					     (o = sched_next_active(s->sched, &cur, &nm, &sp));)
						if (strcmp(nm, c.name) == 0 && o->dispatched &&
						    o->scheduled_s != c.scheduled_s &&
						    memcmp(o->target, s->self.b, RAFT_ID_BYTES) == 0)
							s->submit->cancel(s->submit->ctx, o->task_id);
				}
			}
		}
		sched_cmd_store_free(&store);
	} else if (e->type == RAFT_ENTRY_CONFIG) {
		char names[512] = "";
		size_t off = 0;
		for (uint32_t i = 0; i < e->len / RAFT_ID_BYTES && off < sizeof(names) - 40; i++) {
			struct raft_id id;
			memcpy(id.b, e->data + i * RAFT_ID_BYTES, RAFT_ID_BYTES);
			char nb[64];
			off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s", i ? ", " : "",
			                        sched_member_name(s, &id, nb, sizeof(nb)));
		}
		log_info("raft", "voters are now: %s", names);
	}
	pending_applied(s, e->index, e->term, rc, err);
}

static void send_msg(struct sched_svc *s, const struct raft_msg *m)
{
	if (!s->peers)
		return;
	Chorus__RaftMsg pb;
	if (raft_codec_to_pb(m, &pb) != 0)
		return;
	pb.from_addr = (char *)(s->cfg->advertise[0] ? s->cfg->advertise : s->cfg->listen);
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_RAFT;
	env.raft = &pb;
	(void)s->peers->request(s->peers->ctx, m->to.b, &env, RAFT_SEND_TIMEOUT_MS, NULL, NULL);
	raft_codec_pb_free(&pb);
}

/* A stop the node cannot recover from by retrying: say why once, stop. */
static void raft_fatal(struct sched_svc *s, const char *why)
{
	s->fatal = 1;
	log_error("raft", "fatal: %s: stopping the node", why);
	host_request_stop(s->host);
}

/* The leader's snapshot, whole and loaded (before anything of it was
 * persisted or acknowledged: one that cannot load here stops the node
 * with its log as it was): it replaces the schedule table. */
static struct sched *load_snapshot(struct sched_svc *s, const struct raft_snapshot *sn)
{
	char err[256];
	struct sched *fresh = sched_snapshot_load(sn->data, (size_t)sn->len, sched_tz_resolve, s, err,
	                                          sizeof(err));
	if (!fresh) {
		char why[400];
		snprintf(why, sizeof(why),
		         "the leader's snapshot at index %" PRIu64 " does not load here (%s); nothing "
		         "of it was stored",
		         sn->at.index, err);
		raft_fatal(s, why);
	}
	return fresh;
}

static void restore_snapshot(struct sched_svc *s, const struct raft_snapshot *sn,
                             struct sched *fresh)
{
	sched_destroy(s->sched);
	s->sched = fresh;
	sched_tracks_clear(s);
	s->next_duty_ms = 0;
	log_info("raft", "installed the leader's snapshot at index %" PRIu64 " (%" PRIu64
	         " bytes, %u schedules)",
	         sn->at.index, sn->len, sched_count(fresh));
}

/* Compaction: once snapshot_entries entries were applied past the last
 * snapshot, the schedule table is packed, the core drops its log up to
 * keep entries before it, and raft.db stores the snapshot and deletes the
 * entries (one fsynced transaction). A failure keeps the longer log on
 * disk, which is still a correct state to restart from. */
static void maybe_compact(struct sched_svc *s)
{
	struct raft_status st;
	raft_status(s->raft, &st);
	/* the pack costs time in proportion to the table: its interval grows
	 * with it (two entries per schedule at least), and each node adds its
	 * own jitter so that the voters do not all pause at once */
	uint64_t every = s->cfg->raft_snapshot_entries;
	if (every < 2ull * sched_count(s->sched))
		every = 2ull * sched_count(s->sched);
	every += s->snapshot_jitter;
	if (s->fatal || !every || st.applied_index < st.snapshot_index + every ||
	    st.applied_index < s->snapshot_retry_at)
		return;
	/* a failure below is not tried again before another interval */
	s->snapshot_retry_at = st.applied_index + every;
	uint8_t *bytes = NULL;
	size_t len = 0;
	if (sched_snapshot_pack(s->sched, &bytes, &len) != 0) {
		log_limited(LOG_ERROR, "raft", "snapshot", 10000, "cannot pack the schedules: out of memory");
		return;
	}
	struct raft_point base;
	int rc = raft_snapshot_take(s->raft, st.applied_index, bytes, len, every / 8, &base);
	if (rc == ERR_BUSY) {
		s->snapshot_retry_at = st.applied_index + 64; /* a follower fetches the last one */
		return;
	}
	if (rc != 0) {
		log_limited(LOG_ERROR, "raft", "snapshot", 10000, "snapshot at %" PRIu64 " refused: %s",
		            st.applied_index, err_name(rc));
		return;
	}
	rc = raftlog_compact(s->log, raft_snapshot_get(s->raft), &base);
	if (rc != 0 && raftlog_broken(s->log)) {
		char why[400];
		snprintf(why, sizeof(why), "the raft log cannot go on (%s)", raftlog_last_error(s->log));
		raft_fatal(s, why);
		return;
	}
	if (rc != 0) {
		log_limited(LOG_ERROR, "raft", "compact", 10000,
		            "cannot store the snapshot at %" PRIu64 " (%s): the log stays long",
		            st.applied_index, raftlog_last_error(s->log));
		return;
	}
	s->snapshots++;
	log_debug("raft", "snapshot at %" PRIu64 " (%zu bytes); log from %" PRIu64, st.applied_index,
	          len, base.index + 1);
}

static void raft_cycle(struct sched_svc *s)
{
	for (int rounds = 0; rounds < 64 && raft_has_ready(s->raft); rounds++) {
		struct raft_ready rd;
		raft_ready(s->raft, &rd);
		struct sched *fresh = NULL;
		if (rd.snapshot && !(fresh = load_snapshot(s, rd.snapshot)))
			return;
		if (rd.hard_changed || rd.truncate_from || rd.n_append || rd.snapshot) {
			if (s->fatal || sched_mono_ms(s) < s->persist_retry_ms) {
				sched_destroy(fresh);
				return;
			}
			int prc = raftlog_persist(s->log, &rd);
			if (prc != 0 && (raftlog_broken(s->log) || prc == ERR_INVALID)) {
				s->fatal = 1;
				/* a retry cannot help: an I/O error left the file in
				 * doubt, or the ready breaks Raft (a bug). Stop here
				 * rather than vote or acknowledge from a broken log. */
				log_error("raft", "fatal: the raft log cannot go on (%s): stopping the node",
				          raftlog_last_error(s->log));
				host_request_stop(s->host);
				sched_destroy(fresh);
				return;
			}
			if (prc != 0) {
				/* nothing is sent or applied before it is durable;
				 * tried again in 100 ms, not in a spin */
				s->persist_failures++;
				s->persist_retry_ms = sched_mono_ms(s) + 100;
				log_limited(LOG_ERROR, "raft", "persist", 10000,
				            "cannot make the raft log durable (%s): retrying",
				            raftlog_last_error(s->log));
				sched_destroy(fresh);
				return;
			}
		}
		for (uint32_t i = 0; i < rd.n_msgs; i++)
			send_msg(s, &rd.msgs[i]);
		if (rd.snapshot)
			restore_snapshot(s, rd.snapshot, fresh);
		for (uint32_t i = 0; i < rd.n_apply; i++)
			apply_entry(s, &rd.apply[i]);
		raft_advance(s->raft, &rd);
		maybe_compact(s);
	}
	struct raft_status st;
	raft_status(s->raft, &st);
	int leader = st.role == RAFT_LEADER;
	if (leader)
		memcpy(s->last_heard, st.heard_ago_ms, sizeof(s->last_heard));
	if (st.has_leader && (!s->ev_has_leader || !raft_id_eq(&st.leader, &s->ev_leader))) {
		char nb[64];
		host_event(s->host, "leader", sched_member_name(s, &st.leader, nb, sizeof(nb)),
		           "leader for term %" PRIu64 "%s", st.term, leader ? " (this node)" : "");
		s->ev_leader = st.leader;
		s->ev_has_leader = 1;
	}
	if (leader != s->leader || (leader && st.term != s->leader_term)) {
		sched_leader_reset(s->sched);
		sched_tracks_clear(s);
		if (leader)
			log_info("raft", "elected leader for term %" PRIu64 " (%u voter(s))", st.term,
			         st.voter_count);
		else {
			char why[400] = "";
			size_t off = 0;
			for (uint32_t v = 0; v < st.voter_count && off < sizeof(why) - 80; v++) {
				char nb[64];
				off += (size_t)snprintf(why + off, sizeof(why) - off, "%s%s heard %" PRIu64
				                        " ms ago", v ? ", " : "",
				                        sched_member_name(s, &st.voters[v], nb, sizeof(nb)),
				                        s->last_heard[v]);
			}
			log_info("raft", "no longer the leader (term %" PRIu64 "; last: %s)", st.term, why);
			host_event(s->host, "leader", host_config(s->host)->name,
			           "this node is no longer the leader (term %" PRIu64 ")", st.term);
		}
		if (!leader)
			pending_fail_all(s, "this node stopped being the leader before the change "
			                    "committed: retry");
		s->leader = leader;
		s->leader_term = st.term;
		s->next_duty_ms = 0;
	}
}

/* ---- requests ---- */

/* A request forwarded to the leader. Kept on the service's list until its
 * answer comes: a node that stops first frees what is left (the cluster
 * drops its pending answers at stop without calling back). */
struct fwd_ctx {
	struct sched_svc *s;
	struct rpc_call *call;
	struct fwd_ctx *prev, *next;
};

static struct fwd_ctx *fwd_new(struct sched_svc *s)
{
	struct fwd_ctx *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->s = s;
	f->next = s->fwd_head;
	if (s->fwd_head)
		s->fwd_head->prev = f;
	s->fwd_head = f;
	return f;
}

static void fwd_free(struct fwd_ctx *f)
{
	struct sched_svc *s = f->s;
	if (f->prev)
		f->prev->next = f->next;
	else
		s->fwd_head = f->next;
	if (f->next)
		f->next->prev = f->prev;
	free(f);
}

static void fwd_cancel(void *arg, struct rpc_call *c)
{
	struct fwd_ctx *f = arg;
	(void)c;
	f->call = NULL; /* the answer has nowhere to go */
}

static void fwd_cb(void *arg, int code, const Chorus__Envelope *reply, const char *err)
{
	struct fwd_ctx *f = arg;
	if (f->call) {
		if (code != 0 || !reply)
			rpc_reply_error(f->call, code ? code : CH_ERR_INTERNAL, "the leader: %s",
			                err && *err ? err : ch_strerror(code));
		else {
			/* rpc_reply fills in the header: on a copy, the reply
			 * belongs to its unpacker */
			Chorus__Envelope copy = *reply;
			rpc_reply(f->call, &copy);
		}
	}
	fwd_free(f);
}

/* Not the leader: forward c to the one we know. Returns 1 when c was
 * handled (forwarded or refused), 0 when this node leads. */
static int forward_if_follower(struct sched_svc *s, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct raft_status st;
	raft_status(s->raft, &st);
	if (st.role == RAFT_LEADER && st.leader_ready)
		return 0;
	if (st.role == RAFT_LEADER) {
		/* elected, not yet caught up with what is committed: its
		 * schedules may lag; the client retries in a moment */
		rpc_reply_error(c, CH_ERR_NOT_LEADER, "the leader is catching up: retry shortly");
		return 1;
	}
	if (!st.has_leader || (c->role & RPC_ROLE_PEER)) {
		rpc_reply_error(c, CH_ERR_NOT_LEADER, "%s",
		                st.has_leader ? "not the leader (the request was forwarded already)"
		                              : "no leader elected yet: retry shortly");
		return 1;
	}
	struct fwd_ctx *f = fwd_new(s);
	if (!f) {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return 1;
	}
	f->call = rpc_park(c, fwd_cancel, f);
	if (!f->call) {
		fwd_free(f);
		return 1;
	}
	int rc = s->peers->request(s->peers->ctx, st.leader.b, env, FORWARD_TIMEOUT_MS, fwd_cb, f);
	if (rc != 0) {
		rpc_reply_error(f->call, CH_ERR_NOT_LEADER, "cannot reach the leader: %s", ch_strerror(rc));
		fwd_free(f);
	}
	return 1;
}

static int propose_or_refuse(struct sched_svc *s, struct rpc_call *c, const struct sched_cmd *cmd,
                             int op)
{
	uint64_t index = 0;
	int rc = sched_propose_cmd(s, cmd, &index);
	if (rc != 0) {
		rpc_reply_error(c, rc == ERR_DENIED ? CH_ERR_NOT_LEADER : err_to_public(rc),
		                "cannot propose the change (%s)", err_name(rc));
		return -1;
	}
	pend(s, c, index, op, cmd->name);
	return 0;
}

static void handle_cron(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct sched_svc *s = svc;
	const Chorus__CronReq *m = env->cron;
	if (forward_if_follower(s, c, env))
		return;
	char err[300];
	struct sched_cmd cmd = {0};
	uint8_t targets[SCHED_ACTIVE_MAX][SCHED_ID_BYTES]; /* a trigger's, `all` */
	cmd.wall_ms = sched_wall_ms(s);
	const char *name = m->name ? m->name : "";
	if (m->op != CH_CRON_ADD && m->op != CH_CRON_LIST) {
		if (!name[0] || strlen(name) > SCHED_NAME_BYTES_MAX) {
			rpc_reply_error(c, CH_ERR_INVALID, "a schedule name is needed");
			return;
		}
		struct sched_view v;
		if (sched_view(s->sched, name, &v) != 0) {
			rpc_reply_error(c, CH_ERR_NOT_FOUND, "no schedule named \"%s\"", name);
			return;
		}
	}
	snprintf(cmd.name, sizeof(cmd.name), "%s", name);
	switch (m->op) {
	case CH_CRON_LIST:
		reply_list(s, c);
		return;
	case CH_CRON_SHOW:
		reply_schedule(s, c, name, m->limit ? m->limit : HISTORY_DEFAULT);
		return;
	case CH_CRON_ADD: {
		if (!m->spec) {
			rpc_reply_error(c, CH_ERR_INVALID, "cron add without a schedule");
			return;
		}
		struct sched_spec spec;
		int rc = sched_spec_from_pb(m->spec, &spec, err, sizeof(err));
		if (rc == 0 && strcmp(spec.on, "all") == 0 && m->spec->opts &&
		    m->spec->opts->n_require) {
			/* a task that requires tags goes where placement puts it,
			 * not to the member whose journal holds it */
			snprintf(err, sizeof(err), "on: \"all\" runs on every member: it does not go "
			                           "with --require");
			rc = ERR_INVALID;
		}
		if (rc == 0)
			rc = sched_check_add(s->sched, &spec, err, sizeof(err));
		if (rc != 0) {
			sched_spec_free(&spec);
			log_limited(LOG_WARN, "sched", "add-refused", 10000, "cron add refused: %s", err);
			rpc_reply_error(c, rc == ERR_FULL ? CH_ERR_FULL : CH_ERR_INVALID, "%s", err);
			return;
		}
		cmd.op = SCHED_OP_ADD;
		cmd.spec = &spec;
		snprintf(cmd.name, sizeof(cmd.name), "%s", spec.name);
		(void)propose_or_refuse(s, c, &cmd, m->op);
		sched_spec_free(&spec);
		return;
	}
	case CH_CRON_RM:
		cmd.op = SCHED_OP_RM;
		break;
	case CH_CRON_PAUSE:
		cmd.op = SCHED_OP_PAUSE;
		snprintf(cmd.note, sizeof(cmd.note), "%s", m->note ? m->note : "");
		break;
	case CH_CRON_RESUME:
		cmd.op = SCHED_OP_RESUME;
		break;
	case CH_CRON_TRIGGER: {
		cmd.op = SCHED_OP_FIRE;
		cmd.kind = SCHED_FIRE_TRIGGER;
		/* the client names the trigger's second, so that its retry
		 * (after a leader change) is the same trigger, run once; a
		 * second far from ours is not trusted */
		int64_t now_s = (int64_t)(cmd.wall_ms / 1000);
		cmd.scheduled_s = m->from_s > now_s - 3600 && m->from_s < now_s + 3600 ? m->from_s : now_s;
		memcpy(cmd.target, s->self.b, RAFT_ID_BYTES);
		struct sched_view v;
		if (sched_view(s->sched, name, &v) == 0 && strcmp(v.spec->on, "all") == 0) {
			cmd.n_targets = sched_alive_members(s, targets, SCHED_ACTIVE_MAX);
			cmd.targets = targets;
		}
		break;
	}
	case CH_CRON_BACKFILL:
		if (m->from_s <= 0 || m->to_s < m->from_s || m->to_s > (int64_t)(cmd.wall_ms / 1000)) {
			rpc_reply_error(c, CH_ERR_INVALID,
			                "backfill: --from must be before --to, and --to not in the future");
			return;
		}
		if ((int)m->overlap < 0 || (int)m->overlap > SCHED_OVERLAP_ALLOW_ALL) {
			rpc_reply_error(c, CH_ERR_INVALID, "backfill: unknown overlap policy");
			return;
		}
		cmd.op = SCHED_OP_BACKFILL;
		cmd.kind = (uint8_t)m->overlap;
		cmd.from_s = m->from_s;
		cmd.to_s = m->to_s;
		break;
	default:
		rpc_reply_error(c, CH_ERR_INVALID, "unknown cron operation %u", m->op);
		return;
	}
	(void)propose_or_refuse(s, c, &cmd, m->op);
}

static void handle_voters(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct sched_svc *s = svc;
	const Chorus__VotersReq *m = env->voters;
	struct raft_status st;
	raft_status(s->raft, &st);
	if (m->op != CH_VOTERS_LIST) {
		if (forward_if_follower(s, c, env))
			return;
		/* a member by name or hex id */
		struct peer_info members[256];
		uint32_t n = s->peers->members(s->peers->ctx, members, 256);
		const struct peer_info *who = NULL;
		char hex[33];
		for (uint32_t i = 0; i < n && !who; i++) {
			sodium_bin2hex(hex, sizeof(hex), members[i].id, RAFT_ID_BYTES);
			if (m->member && (strcmp(members[i].name, m->member) == 0 ||
			                  (strlen(m->member) >= 8 && strncmp(hex, m->member, strlen(m->member)) == 0)))
				who = &members[i];
		}
		struct raft_id id;
		if (!who && m->op == CH_VOTERS_REMOVE && m->member && strlen(m->member) == 32 &&
		    sodium_hex2bin(id.b, RAFT_ID_BYTES, m->member, 32, NULL, NULL, NULL) == 0) {
			/* a voter gone from the membership, by its full id */
		} else if (!who) {
			rpc_reply_error(c, CH_ERR_NOT_FOUND, "no member named \"%s\"", m->member ? m->member : "");
			return;
		} else {
			memcpy(id.b, who->id, RAFT_ID_BYTES);
		}
		if (m->op == CH_VOTERS_ADD && who && !who->alive) {
			rpc_reply_error(c, CH_ERR_INVALID, "%s is not alive: a voter must be", who->name);
			return;
		}
		if (m->op == CH_VOTERS_REMOVE) {
			/* removing a live voter must leave a majority of the voters alive */
			/* alive: it answered the leader within an election
			 * timeout, and SWIM does not hold it suspect or dead */
			uint32_t alive_left = 0;
			for (uint32_t v = 0; v < st.voter_count; v++) {
				if (raft_id_eq(&st.voters[v], &id))
					continue;
				int alive = raft_id_eq(&st.voters[v], &s->self);
				for (uint32_t i = 0; i < n && !alive; i++)
					if (memcmp(members[i].id, st.voters[v].b, RAFT_ID_BYTES) == 0)
						alive = members[i].alive &&
						        st.heard_ago_ms[v] < s->cfg->election_timeout_ms;
				alive_left += (uint32_t)alive;
			}
			uint32_t after = st.voter_count - 1;
			if (after == 0 || alive_left < after / 2 + 1) {
				rpc_reply_error(c, CH_ERR_INVALID,
				                "removing it would leave %u alive of %u voters: no majority",
				                alive_left, after);
				return;
			}
		}
		uint64_t index = 0;
		int rc = raft_change_voter(s->raft, sched_mono_ms(s), &id, m->op == CH_VOTERS_ADD, &index);
		if (rc == ERR_FULL) {
			rpc_reply_error(c, CH_ERR_FULL, "another voter change is not committed yet: retry");
			return;
		}
		if (rc != 0) {
			rpc_reply_error(c, rc == ERR_DENIED ? CH_ERR_NOT_LEADER : CH_ERR_INVALID, "%s",
			                m->op == CH_VOTERS_ADD ? "already a voter" : "not a voter");
			return;
		}
		pend(s, c, index, 0, NULL);
		return;
	}
	struct arena a = {0};
	Chorus__VotersResp resp = CHORUS__VOTERS_RESP__INIT;
	Chorus__VoterInfo **pv = arena_alloc(&a, (st.voter_count ? st.voter_count : 1) * sizeof(*pv));
	Chorus__VoterInfo *vv = arena_alloc(&a, (st.voter_count ? st.voter_count : 1) * sizeof(*vv));
	if (!pv || !vv) {
		arena_free(&a);
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	for (uint32_t v = 0; v < st.voter_count; v++) {
		chorus__voter_info__init(&vv[v]);
		char *hex = arena_alloc(&a, 33);
		char *nm = arena_alloc(&a, 128);
		char *ad = arena_alloc(&a, 256);
		if (!hex || !nm || !ad)
			break;
		sodium_bin2hex(hex, 33, st.voters[v].b, RAFT_ID_BYTES);
		struct peer_info pi;
		int known = s->peers->find(s->peers->ctx, st.voters[v].b, &pi);
		snprintf(nm, 128, "%s", known ? pi.name : "?");
		snprintf(ad, 256, "%s", known ? pi.addr : "");
		vv[v].id = hex;
		vv[v].name = nm;
		vv[v].addr = ad;
		vv[v].alive = known && pi.alive;
		vv[v].leader = st.has_leader && raft_id_eq(&st.leader, &st.voters[v]);
		pv[v] = &vv[v];
	}
	resp.voters = pv;
	resp.n_voters = st.voter_count;
	resp.term = st.term;
	resp.commit_index = st.commit_index;
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_VOTERS_RESP, voters_resp, &resp);
	arena_free(&a);
}

static void handle_raft(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct sched_svc *s = svc;
	struct raft_in in;
	memset(&in, 0, sizeof(in));
	int rc = raft_codec_from_pb(&in, env->raft);
	if (rc == 0 && c->peer_id && memcmp(in.msg.from.b, c->peer_id, RAFT_ID_BYTES) != 0)
		rc = ERR_DENIED; /* a member speaks only for itself */
	if (rc == 0 && env->raft->from_addr && env->raft->from_addr[0])
		s->peers->hint(s->peers->ctx, in.msg.from.b, env->raft->from_addr);
	if (rc == 0)
		rc = raft_step(s->raft, sched_mono_ms(s), &in.msg);
	free(in.entries);
	if (rc != 0) {
		log_limited(LOG_WARN, "raft", "bad-msg", 10000, "refused a raft message (%s)",
		            err_name(rc));
		rpc_reply_error(c, rc == ERR_DENIED ? CH_ERR_DENIED : CH_ERR_PROTOCOL,
		                "raft message refused");
		return;
	}
	Chorus__RaftAck ack = CHORUS__RAFT_ACK__INIT;
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_RAFT_ACK, raft_ack, &ack);
}

static const struct req_spec REQUESTS[] = {
	{CHORUS__ENVELOPE__BODY_RAFT, "raft", handle_raft, RPC_ROLE_PEER, 0},
	{CHORUS__ENVELOPE__BODY_CRON, "cron", handle_cron, RPC_ROLE_CLIENT | RPC_ROLE_PEER,
	 REQ_REFUSE_DRAINING | REQ_MAY_PARK},
	{CHORUS__ENVELOPE__BODY_VOTERS, "voters", handle_voters, RPC_ROLE_CLIENT | RPC_ROLE_PEER,
	 REQ_MAY_PARK},
};

/* ---- the service ---- */

static int svc_start(void *svc, struct host *h, const struct now *now, char *err, size_t err_len)
{
	struct sched_svc *s = svc;
	s->host = h;
	s->cfg = host_config(h);
	memcpy(s->self.b, host_node_id(h), RAFT_ID_BYTES);
	for (size_t i = 0; i < sizeof(REQUESTS) / sizeof(REQUESTS[0]); i++)
		if (dispatch_register(host_dispatch(h), &REQUESTS[i], s) != 0) {
			snprintf(err, err_len, "request %s registered twice", REQUESTS[i].name);
			return -1;
		}
	s->peers = host_port_get(h, PORT_PEERS);
	s->submit = host_port_get(h, PORT_TASK_SUBMIT);
	if (!s->peers || !s->submit) {
		snprintf(err, err_len, "the schedule service needs the cluster and tasks services");
		return -1;
	}
	s->tz = tzcache_new(NULL);
	s->sched = sched_create(sched_tz_resolve, s);
	if (!s->tz || !s->sched) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	char why[1024];
	if (raftlog_open(&s->log, s->cfg->data_dir, why, sizeof(why)) != 0) {
		snprintf(err, err_len, "raft log: %s", why);
		return -1;
	}
	struct raft_hard hard;
	struct raft_point base;
	struct raft_snapshot snap;
	const struct raft_entry *entries = NULL;
	uint32_t n = 0;
	if (raftlog_load(s->log, &hard, &base, &snap, &entries, &n) != 0) {
		snprintf(err, err_len, "raft log: %s", raftlog_last_error(s->log));
		return -1;
	}
	/* the voter set before any config entry: decided once, kept */
	struct raft_id voters0[1];
	uint32_t n0 = 0;
	uint8_t buf[RAFT_ID_BYTES];
	size_t blen = 0;
	int rc = raftlog_meta_get(s->log, "voters0", buf, sizeof(buf), &blen);
	if (rc == 0) {
		if (blen == RAFT_ID_BYTES) {
			memcpy(voters0[0].b, buf, RAFT_ID_BYTES);
			n0 = 1;
		}
	} else {
		int bootstrap = s->cfg->bootstrap == 1 || (s->cfg->bootstrap < 0 && s->cfg->seed_count == 0);
		if (n > 0 || hard.term > 0)
			bootstrap = 0; /* it has been part of a cluster */
		if (bootstrap) {
			voters0[0] = s->self;
			n0 = 1;
		}
		if (raftlog_meta_put(s->log, "voters0", n0 ? voters0[0].b : buf, n0 ? RAFT_ID_BYTES : 0) != 0) {
			snprintf(err, err_len, "raft log: %s", raftlog_last_error(s->log));
			return -1;
		}
		log_info("raft", "%s", bootstrap ? "no seeds: this node starts the voter set"
		                                 : "joining: the leader adds this node as a voter when "
		                                   "the set needs one");
	}
	uint32_t e_ms = s->cfg->election_timeout_ms;
	struct raft_config rc_cfg = {
	    .self = s->self,
	    .election_ms = e_ms,
	    .heartbeat_ms = e_ms / 5 ? e_ms / 5 : 1,
	    .seed = randombytes_random() | (uint64_t)randombytes_random() << 32,
	};
	if (base.index == 0) {
		base.n_voters = n0;
		memcpy(base.voters, voters0, n0 * sizeof(voters0[0]));
	}
	if (snap.at.index) {
		/* the schedules as of the snapshot; the entries after it are
		 * applied again as the log commits */
		struct sched *fresh = sched_snapshot_load(snap.data, (size_t)snap.len, sched_tz_resolve, s,
		                                          why, sizeof(why));
		if (!fresh) {
			snprintf(err, err_len, "raft log: the snapshot at index %" PRIu64 " does not load (%s)",
			         snap.at.index, why);
			return -1;
		}
		sched_destroy(s->sched);
		s->sched = fresh;
	}
	s->raft = raft_create(&rc_cfg, &hard, &base, snap.at.index ? &snap : NULL, entries, n,
	                      now->mono_ms);
	s->snapshot_jitter = randombytes_uniform(s->cfg->raft_snapshot_entries / 4 + 1);
	raftlog_release_loaded(s->log); /* the core holds its own copy */
	if (!s->raft) {
		snprintf(err, err_len, "raft log: cannot rebuild the state (%u entries)", n);
		return -1;
	}
	if (n)
		log_info("raft", "%u log entries, term %" PRIu64, n, hard.term);
	return 0;
}

static uint64_t svc_next_deadline(void *svc)
{
	struct sched_svc *s = svc;
	if (!s->raft)
		return UINT64_MAX;
	if (s->fatal)
		return UINT64_MAX;
	if (raft_has_ready(s->raft))
		return s->persist_retry_ms > sched_mono_ms(s) ? s->persist_retry_ms : 0;
	uint64_t next = raft_next_deadline(s->raft);
	struct raft_status rs;
	raft_status(s->raft, &rs);
	if (s->leader && rs.leader_ready && !host_draining(s->host)) {
		if (s->next_duty_ms < next)
			next = s->next_duty_ms;
		uint64_t plan_wall = sched_next_plan_ms(s->sched);
		if (plan_wall != UINT64_MAX) {
			uint64_t w = sched_wall_ms(s), m = sched_mono_ms(s);
			uint64_t at = plan_wall <= w ? m : m + (plan_wall - w);
			if (at < next)
				next = at;
		}
	}
	return next;
}

static void svc_tick(void *svc, const struct now *now)
{
	struct sched_svc *s = svc;
	raft_tick(s->raft, now->mono_ms);
	raft_cycle(s);
	struct raft_status rs;
	raft_status(s->raft, &rs);
	/* a new leader decides only once it has applied every entry before
	 * its term: until then its schedules may lag what is committed */
	if (s->leader && rs.leader_ready && !host_draining(s->host)) {
		sched_plan_and_propose(s);
		if (now->mono_ms >= s->next_duty_ms) {
			s->next_duty_ms = now->mono_ms + DUTY_PERIOD_MS;
			sched_dispatch_and_watch(s);
			if (now->mono_ms >= s->next_autopilot_ms) {
				s->next_autopilot_ms = now->mono_ms + AUTOPILOT_PERIOD_MS;
				sched_autopilot(s);
			}
		}
		raft_cycle(s);
	}
}

static void svc_after_commit(void *svc, int committed, const struct now *now)
{
	struct sched_svc *s = svc;
	(void)now;
	/* the occurrences' tasks are journaled now (or, the commit failed,
	 * forgotten: their tracks let the dispatch run again in a second) */
	if (committed && s->leader)
		for (uint32_t i = 0; i < s->n_confirm; i++)
			sched_propose_dispatched(s, s->confirm[i].name, &s->confirm[i].occ, s->confirm[i].task_id);
	s->n_confirm = 0;
	/* messages that arrived this iteration: answered now, not next time */
	raft_cycle(s);
}

static void svc_drain(void *svc, const struct now *now)
{
	struct sched_svc *s = svc;
	(void)now;
	pending_fail_all(s, "the node is shutting down: retry on another node");
}

static int svc_drained(void *svc, const struct now *now)
{
	(void)svc;
	(void)now;
	return 1;
}

static void svc_status(void *svc, Chorus__StatusResp *st, struct arena *a)
{
	struct sched_svc *s = svc;
	if (!s->raft)
		return;
	struct raft_status rs;
	raft_status(s->raft, &rs);
	int voter = 0;
	for (uint32_t v = 0; v < rs.voter_count && !voter; v++)
		voter = raft_id_eq(&rs.voters[v], &s->self);
	st->raft_role = voter ? (char *)raft_role_name(rs.role) : "";
	st->raft_term = rs.term;
	st->raft_commit = rs.commit_index;
	st->raft_snapshot = rs.snapshot_index;
	st->raft_first = rs.first_index;
	char *leader = arena_alloc(a, 64);
	if (leader) {
		if (rs.has_leader)
			sched_member_name(s, &rs.leader, leader, 64);
		else
			leader[0] = '\0';
		st->raft_leader = leader;
	}
	char **names = arena_alloc(a, (rs.voter_count ? rs.voter_count : 1) * sizeof(*names));
	if (names) {
		for (uint32_t v = 0; v < rs.voter_count; v++) {
			names[v] = arena_alloc(a, 64);
			if (!names[v])
				return;
			sched_member_name(s, &rs.voters[v], names[v], 64);
		}
		st->raft_voters = names;
		st->n_raft_voters = rs.voter_count;
	}
	st->schedules = sched_count(s->sched);
}

/* The election and the schedules (docs/metrics.md). */
static void svc_metrics(void *svc, struct prom *p)
{
	struct sched_svc *s = svc;
	if (!s->raft)
		return;
	struct raft_status rs;
	raft_status(s->raft, &rs);
	int voter = 0;
	for (uint32_t v = 0; v < rs.voter_count && !voter; v++)
		voter = raft_id_eq(&rs.voters[v], &s->self);
	prom_family(p, "chorus_raft_term", PROM_GAUGE, "The Raft term this node is in.");
	prom_sample(p, "chorus_raft_term", (double)rs.term, NULL);
	prom_family(p, "chorus_raft_is_leader", PROM_GAUGE, "1 when this node is the Raft leader.");
	prom_sample(p, "chorus_raft_is_leader", rs.role == RAFT_LEADER ? 1 : 0, NULL);
	prom_family(p, "chorus_raft_leader", PROM_GAUGE,
	            "The leader this node knows (1, labelled with its name); none when unknown.");
	if (rs.has_leader) {
		char leader[64];
		sched_member_name(s, &rs.leader, leader, sizeof(leader));
		prom_sample(p, "chorus_raft_leader", 1, "leader", leader, NULL);
	}
	prom_family(p, "chorus_raft_voter", PROM_GAUGE, "1 when this node is a voter.");
	prom_sample(p, "chorus_raft_voter", voter, NULL);
	prom_family(p, "chorus_raft_voters", PROM_GAUGE, "Voters in the configuration this node holds.");
	prom_sample(p, "chorus_raft_voters", rs.voter_count, NULL);
	prom_family(p, "chorus_raft_commit_index", PROM_GAUGE, "The Raft commit index known here.");
	prom_sample(p, "chorus_raft_commit_index", (double)rs.commit_index, NULL);
	prom_family(p, "chorus_raft_applied_index", PROM_GAUGE, "The last Raft entry applied here.");
	prom_sample(p, "chorus_raft_applied_index", (double)rs.applied_index, NULL);
	prom_family(p, "chorus_raft_last_index", PROM_GAUGE, "The last Raft entry held here.");
	prom_sample(p, "chorus_raft_last_index", (double)rs.last_index, NULL);
	prom_family(p, "chorus_schedules", PROM_GAUGE, "Schedules the cluster holds (as applied here).");
	prom_sample(p, "chorus_schedules", sched_count(s->sched), NULL);
	prom_family(p, "chorus_schedule_fires_total", PROM_COUNTER,
	            "Occurrences this node fired as leader.");
	prom_sample(p, "chorus_schedule_fires_total", (double)s->fired, NULL);
	prom_family(p, "chorus_schedule_skipped_total", PROM_COUNTER,
	            "Occurrences this node skipped as leader (overlap, missed while down, paused).");
	prom_sample(p, "chorus_schedule_skipped_total", (double)s->skipped, NULL);
	prom_family(p, "chorus_schedule_lateness_seconds", PROM_HISTOGRAM,
	            "Fire time minus due time of the occurrences this node fired as leader.");
	prom_histogram(p, "chorus_schedule_lateness_seconds", prom_seconds_le, s->lateness.counts,
	               PROM_SECONDS_BUCKETS, s->lateness.counts[PROM_SECONDS_BUCKETS], s->lateness.sum,
	               NULL);
}

static void svc_stop(void *svc)
{
	struct sched_svc *s = svc;
	while (s->pending) {
		struct pending *p = s->pending;
		s->pending = p->next;
		free(p);
	}
	while (s->fwd_head)
		fwd_free(s->fwd_head); /* forwards whose answer never came */
	raft_destroy(s->raft);
	sched_destroy(s->sched);
	tzcache_free(s->tz);
	raftlog_close(s->log);
	free(s->tracks);
	free(s);
}

static const struct service_ops SCHED_OPS = {
	.name = "sched",
	.start = svc_start,
	.next_deadline = svc_next_deadline,
	.tick = svc_tick,
	.after_commit = svc_after_commit,
	.drain = svc_drain,
	.drained = svc_drained,
	.status = svc_status,
	.metrics = svc_metrics,
	.stop = svc_stop,
};

int sched_svc_register(struct host *h)
{
	struct sched_svc *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	if (host_register(h, &SCHED_OPS, s) != 0) {
		free(s);
		return -1;
	}
	return 0;
}
