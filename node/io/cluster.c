/*
 * cluster.c - membership over sealed links and remote placement (see
 * cluster.h).
 *
 * Subtle parts:
 *  - SWIM effects run inside swim_* calls, which must not be re-entered:
 *    member deaths are only noted there (dead[]) and acted on in
 *    cluster_tick, where tasks placed on the dead member end `lost` (temporary)
 *    or go back to the queue (transient: placed again elsewhere).
 *  - A completion can arrive after its attempt was already given up (the
 *    member was declared dead, the task was cancelled): each placement is
 *    keyed by (task id, attempt) and a late completion that matches none is
 *    dropped, so no task is reported twice.
 *  - Links are libchorus clients opened lazily: a peer that is down costs a
 *    request that times out, never a blocked loop.
 */
#include "io/cluster.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "chorus.h"
#include "client_internal.h"
#include "core/placement.h"
#include "core/swim.h"
#include "core/tasks.h"
#include "io/log.h"
#include "codec/codec.h"
#include "codec/gossip.h"
#include "lib/err.h"
#include "lib/arena.h"
#include "lib/idmap.h"
#include "lib/rng.h"
#include "svc/ports.h"

#define LINKS_MAX 1024
#define LINK_CONTEXTS 256
#define DEAD_PENDING_MAX 256
/* after a start, tags nobody alive has mean "wait" for this many gossip
 * periods, not "fail": the members that have them are still being learnt */
#define STARTUP_SETTLE_PERIODS 10
#define CONFIG_SEEDS_JOIN_MAX 16
#define STATES_MAX 16384
#define RUN_WAIT_MS_MAX (24u * 3600u * 1000u)
#define RUN_EXTRA_MS 10000u
#define LINK_IDLE_MS 60000u
#define REFUSED_BACKOFF_MS 1000u
/* Attempts given up when their member was declared dead are remembered this
 * long (and at most GHOSTS_MAX of them): if the member was only paused or
 * cut off, its answer may still come, and it is the task's result. */
#define GHOST_TTL_MS (10u * 60u * 1000u)
#define GHOSTS_MAX 65536
/* Batched placement (PlaceReq): the attempts placed on one member in one
 * loop iteration leave in one frame of at most PLACE_FRAME_TASKS of them.
 * Credit per member: at most its slots (workers x prefetch, gossiped) of
 * attempts and PLACE_BYTES_INFLIGHT payload bytes outstanding; more go as
 * outcomes come back, so a member that stops answering gets no more work
 * and a member's death costs at most what it could hold. */
#define PLACE_FRAME_TASKS 1024u
#define PLACE_BYTES_INFLIGHT (8u << 20)

struct link {
	char addr[SWIM_ADDR_BYTES_MAX];
	uint8_t expect[SWIM_ID_BYTES]; /* the member meant there (placement links) */
	int has_expect;
	ch_client *cli;
	uint32_t inflight;     /* tasks placed there, not back */
	uint64_t bytes_inflight; /* their payload bytes */
	struct placed *out_head, *out_tail; /* to send (or ask again) in the next frame */
	int single;            /* an older node: one SubmitReq per attempt */
	uint64_t last_used_ms;
	uint64_t refusing_until_ms; /* it said full / shutting down: look elsewhere */
};

struct placed {
	uint64_t task_id;
	uint32_t attempt;
	uint32_t link;
	uint32_t wait_ms;
	/* a temporary task's attempt is sent only once the commit that
	 * journals it `running` is done (cluster_release_held): until then
	 * this copy of it waits here, NULL once sent */
	struct task *held;
	struct placed *held_next;
	int hold;              /* on the held list (waits for the commit) */
	int queued;            /* on its link's outbox (out_next) */
	int awaiting;          /* sent, answered pending: to be asked again */
	size_t bytes;          /* payload bytes (the link's bytes_inflight) */
	struct placed *out_next;
	uint8_t member[SWIM_ID_BYTES];
	char member_name[SWIM_NAME_BYTES_MAX];
};

/* An attempt given up for lost whose answer may still come. */
struct ghost {
	uint64_t task_id;
	uint32_t attempt;
	char member_name[SWIM_NAME_BYTES_MAX];
	uint64_t born_ms;
	struct ghost *next;   /* oldest first */
};

/* One PlaceReq in flight: the attempts it carries, in order. */
struct place_call {
	struct cluster *c;
	uint32_t n;
	struct {
		uint64_t task_id;
		uint32_t attempt;
	} items[];
};

struct completion {
	uint64_t task_id;
	uint32_t attempt;
	struct place_call *place; /* a PlaceReq's answer (then not task_id) */
	int code;
	int unsent;           /* never sent (held, then cancelled or unsendable) */
	char err[256];
	Chorus__Envelope *reply;
	struct completion *next;
};

/* A peer request of another service (cluster_peer_request): its answer,
 * handed back on the loop thread in cluster_tick. */
struct peer_reply {
	struct cluster *c;
	cluster_reply_fn cb;
	void *arg;
	int code;
	char err[256];
	Chorus__Envelope *reply;
	struct peer_reply *next;
};

struct run_arg {
	struct cluster *c;
	uint64_t task_id;
	uint32_t attempt;
};

struct cluster {
	struct swim *swim;
	uint8_t node_id[SWIM_ID_BYTES];
	struct seal_keyring *kr; /* one reference; links handshake as nodes */
	char name[SWIM_NAME_BYTES_MAX];
	char *tags[SWIM_TAGS_MAX + 1];
	uint32_t tag_count;
	char *seeds[SWIM_SEEDS_MAX];
	uint32_t seed_count;
	uint32_t capacity;
	uint32_t period_ms;
	uint64_t start_ms;     /* monotonic, when this node started */
	size_t frame_bytes_max;
	void (*wake)(void *);
	void *wake_arg;
	void (*member_event)(void *arg, const char *member, const char *message);
	void *event_arg;

	struct link links[LINKS_MAX];
	uint32_t link_count;

	struct idmap placed;   /* task id -> struct placed */
	struct placed *held_head; /* placed, not sent yet (held_next) */
	uint32_t out_count;    /* attempts on the links' outboxes */
	struct idmap ghosts;   /* task id -> struct ghost */
	struct ghost *ghost_head, *ghost_tail;

	pthread_mutex_t mu; /* completions, from nng threads */
	struct completion *done_head, *done_tail;
	struct peer_reply *pr_head, *pr_tail; /* under mu too */
	/* addresses other services learnt for members SWIM does not know (a
	 * Raft message's sender): used to reach them and to join through */
	struct {
		uint8_t id[SWIM_ID_BYTES];
		char addr[SWIM_ADDR_BYTES_MAX];
		uint64_t joined_ms;
	} hints[8];
	uint32_t hint_next;

	uint8_t dead[DEAD_PENDING_MAX][SWIM_ID_BYTES];
	uint32_t dead_count;
	int dead_overflow;
	/* members that became suspect, dead, left or were forgotten: the work
	 * they placed here and that has not started is handed back */
	uint8_t unreach[DEAD_PENDING_MAX][SWIM_ID_BYTES];
	uint32_t unreach_count;
	int unreach_overflow;

	struct rng rng;
	uint64_t now_ms;       /* monotonic, the latest a call brought */
	uint32_t last_load;
	uint64_t next_meta_ms, next_link_sweep_ms, next_join_log_ms;
	int joined_logged;

	struct placement_candidate *cand;
	const struct swim_member **cand_member;
	uint32_t cand_cap;
};

/* ---- links ---- */

/* Links are keyed by address and, for task placement, by the member meant
 * there: a placement link's handshake checks that the node that answers is
 * that member (its WELCOME names it, under the MAC), so a task's payload
 * never goes to whoever else sits at the address. Gossip links (expect =
 * NULL) need no such check: SWIM messages carry ids and the receiver binds
 * the sender to the session. */
static int link_find(const struct cluster *c, const char *addr, const uint8_t *expect)
{
	for (uint32_t i = 0; i < c->link_count; i++) {
		const struct link *l = &c->links[i];
		if (strcmp(l->addr, addr) != 0 || l->has_expect != (expect != NULL))
			continue;
		if (!expect || memcmp(l->expect, expect, SWIM_ID_BYTES) == 0)
			return (int)i;
	}
	return -1;
}

static int link_get(struct cluster *c, const char *addr, const uint8_t *expect, uint64_t now_ms)
{
	int i = link_find(c, addr, expect);
	if (i >= 0) {
		c->links[i].last_used_ms = now_ms;
		return i;
	}
	if (c->link_count >= LINKS_MAX || strlen(addr) >= SWIM_ADDR_BYTES_MAX)
		return -1;
	struct ch_client_options o = {
		.timeout_ms = 2000,
		.contexts = LINK_CONTEXTS,
		.frame_bytes_max = c->frame_bytes_max,
	};
	char err[256];
	struct link *l = &c->links[c->link_count];
	memset(l, 0, sizeof(*l));
	if (chi_client_open_lazy(&l->cli, addr, c->kr, SEAL_ROLE_NODE, expect, &o, err, sizeof(err)) !=
	    0) {
		log_limited(LOG_WARN, "cluster", addr, 10000, "cannot open a link to %s: %s", addr, err);
		return -1;
	}
	/* the node speaks as itself: the receiver binds gossip to this id */
	chi_client_set_self_id(l->cli, c->node_id);
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	if (expect) {
		l->has_expect = 1;
		memcpy(l->expect, expect, SWIM_ID_BYTES);
	}
	l->last_used_ms = now_ms;
	return (int)c->link_count++;
}

static void link_close(struct cluster *c, uint32_t i)
{
	assert(i < c->link_count);
	ch_client_close(c->links[i].cli);
	/* keep indexes of placements valid: only links with nothing placed
	 * are closed, and the last link moves into the hole */
	assert(c->links[i].inflight == 0 && !c->links[i].out_head);
	uint32_t last = c->link_count - 1;
	if (i != last) {
		c->links[i] = c->links[last];
		struct idmap_iter it;
		idmap_iter_init(&c->placed, &it);
		for (struct placed *p; (p = idmap_iter_next(&c->placed, &it, NULL));)
			if (p->link == last)
				p->link = i;
	}
	c->link_count--;
}

/* ---- SWIM messages over the links (node/codec/gossip.c maps them) ---- */

static void gossip_reply_cb(void *arg, int code, Chorus__Envelope *reply, const char *err)
{
	(void)arg;
	(void)code;
	(void)err;
	if (reply)
		chorus__envelope__free_unpacked(reply, NULL);
}

static void fx_send(void *ctx, const char *addr, const struct swim_msg *m)
{
	struct cluster *c = ctx;
	int li = link_get(c, addr, NULL, c->now_ms);
	if (li < 0)
		return;
	struct gossip_pb gp;
	if (gossip_to_pb(&gp, m) != 0) {
		gossip_pb_release(&gp);
		return;
	}
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_GOSSIP;
	env.gossip = &gp.g;
	uint32_t timeout = c->period_ms * 2 > 1000 ? c->period_ms * 2 : 1000;
	(void)chi_request_async(c->links[li].cli, &env, timeout, gossip_reply_cb, NULL);
	gossip_pb_release(&gp);
}

static void fx_event(void *ctx, int event, const struct swim_member *m, int old_state)
{
	struct cluster *c = ctx;
	char hex[SWIM_ID_BYTES * 2 + 1];
	sodium_bin2hex(hex, sizeof(hex), m->id, 8);
	switch (event) {
	case SWIM_EV_JOIN:
		log_info("cluster", "member %s (%s) joined at %s", m->name, hex, m->addr);
		break;
	case SWIM_EV_STATE:
		log_msg(m->state == SWIM_ALIVE || m->state == SWIM_LEFT ? LOG_INFO : LOG_WARN,
		        "cluster", "member %s (%s) %s -> %s", m->name, hex, swim_state_name(old_state),
		        swim_state_name(m->state));
		break;
	case SWIM_EV_REAP:
		log_info("cluster", "member %s (%s) forgotten", m->name, hex);
		break;
	default:
		return;
	}
	if (c->member_event && event != SWIM_EV_REAP) {
		char msg[160];
		if (event == SWIM_EV_JOIN)
			snprintf(msg, sizeof(msg), "joined (%s) at %s", swim_state_name(m->state),
			         m->addr);
		else
			snprintf(msg, sizeof(msg), "%s (was %s)", swim_state_name(m->state),
			         swim_state_name(old_state));
		c->member_event(c->event_arg, m->name, msg);
	}
	if ((event == SWIM_EV_STATE && m->state != SWIM_ALIVE) || event == SWIM_EV_REAP) {
		if (c->unreach_count < DEAD_PENDING_MAX)
			memcpy(c->unreach[c->unreach_count++], m->id, SWIM_ID_BYTES);
		else
			c->unreach_overflow = 1;
	}
	if ((event == SWIM_EV_STATE && (m->state == SWIM_DEAD || m->state == SWIM_LEFT)) ||
	    event == SWIM_EV_REAP) {
		if (c->dead_count < DEAD_PENDING_MAX)
			memcpy(c->dead[c->dead_count++], m->id, SWIM_ID_BYTES);
		else
			c->dead_overflow = 1;
	}
}

int cluster_on_gossip(struct cluster *c, const Chorus__Gossip *g, const struct now *now)
{
	c->now_ms = now->mono_ms;
	struct gossip_in in;
	int rc = gossip_from_pb(&in, g, STATES_MAX);
	if (rc == 0)
		rc = swim_on_message(c->swim, now->mono_ms, &in.msg);
	gossip_in_release(&in);
	if (rc != 0) {
		log_limited(LOG_WARN, "cluster", "bad-gossip", 10000,
		            "refused a malformed gossip message (%s)", err_name(rc));
		return CH_ERR_PROTOCOL;
	}
	return 0;
}

/* ---- placement ---- */

static struct placed *placed_get(const struct cluster *c, uint64_t task_id)
{
	return task_id ? idmap_get(&c->placed, task_id) : NULL;
}

int cluster_placed_remotely(const struct cluster *c, uint64_t task_id)
{
	return placed_get(c, task_id) != NULL;
}

static void run_reply_cb(void *arg, int code, Chorus__Envelope *reply, const char *err)
{
	struct run_arg *ra = arg;
	struct cluster *c = ra->c;
	struct completion *d = calloc(1, sizeof(*d));
	if (!d) {
		/* the attempt is given up when its member is seen dead, or by
		 * its timeout: nothing better to do without memory */
		if (reply)
			chorus__envelope__free_unpacked(reply, NULL);
		free(ra);
		return;
	}
	d->task_id = ra->task_id;
	d->attempt = ra->attempt;
	d->code = code;
	d->reply = reply;
	snprintf(d->err, sizeof(d->err), "%s", err ? err : "");
	free(ra);
	pthread_mutex_lock(&c->mu);
	if (c->done_tail)
		c->done_tail->next = d;
	else
		c->done_head = d;
	c->done_tail = d;
	pthread_mutex_unlock(&c->mu);
	c->wake(c->wake_arg);
}

static void done_push(struct cluster *c, struct completion *d)
{
	pthread_mutex_lock(&c->mu);
	if (c->done_tail)
		c->done_tail->next = d;
	else
		c->done_head = d;
	c->done_tail = d;
	pthread_mutex_unlock(&c->mu);
}

static void place_reply_cb(void *arg, int code, Chorus__Envelope *reply, const char *err)
{
	struct place_call *pc = arg;
	struct cluster *c = pc->c;
	struct completion *d = calloc(1, sizeof(*d));
	if (!d) {
		/* as run_reply_cb: given up with the member, or by its timeout */
		if (reply)
			chorus__envelope__free_unpacked(reply, NULL);
		free(pc);
		return;
	}
	d->place = pc;
	d->code = code;
	d->reply = reply;
	snprintf(d->err, sizeof(d->err), "%s", err ? err : "");
	done_push(c, d);
	c->wake(c->wake_arg);
}

static void peer_reply_cb(void *arg, int code, Chorus__Envelope *reply, const char *err)
{
	struct peer_reply *pr = arg;
	struct cluster *c = pr->c;
	pr->code = code;
	pr->reply = reply;
	snprintf(pr->err, sizeof(pr->err), "%s", err ? err : "");
	pthread_mutex_lock(&c->mu);
	if (c->pr_tail)
		c->pr_tail->next = pr;
	else
		c->pr_head = pr;
	c->pr_tail = pr;
	pthread_mutex_unlock(&c->mu);
	c->wake(c->wake_arg);
}

int cluster_peer_request(struct cluster *c, const uint8_t *id,
                         const Chorus__Envelope *env, uint32_t timeout_ms, cluster_reply_fn cb,
                         void *arg)
{
	/* any member whose address is known, dead ones included: SWIM's
	 * verdict lags a healed partition, and Raft must reach its voters as
	 * soon as the network does (a send to a node that is really gone just
	 * times out) */
	const struct swim_member *m = swim_find(c->swim, id);
	const char *addr = m && m->addr && m->addr[0] ? m->addr : NULL;
	if (m && m == swim_self(c->swim))
		return CH_ERR_UNREACHABLE;
	for (uint32_t i = 0; !addr && i < sizeof(c->hints) / sizeof(c->hints[0]); i++)
		if (c->hints[i].addr[0] && memcmp(c->hints[i].id, id, SWIM_ID_BYTES) == 0)
			addr = c->hints[i].addr;
	if (!addr)
		return CH_ERR_UNREACHABLE;
	int li = link_get(c, addr, id, c->now_ms);
	if (li < 0)
		return CH_ERR_UNREACHABLE;
	/* the link fills in the envelope's header (sender, request id):
	 * on a copy, so env (maybe a request being forwarded, owned by its
	 * unpacker) is never pointed into the link's memory */
	Chorus__Envelope copy = *env;
	if (!cb)
		return chi_request_async(c->links[li].cli, &copy, timeout_ms, gossip_reply_cb, NULL);
	struct peer_reply *pr = calloc(1, sizeof(*pr));
	if (!pr)
		return CH_ERR_NOMEM;
	pr->c = c;
	pr->cb = cb;
	pr->arg = arg;
	int rc = chi_request_async(c->links[li].cli, &copy, timeout_ms, peer_reply_cb, pr);
	if (rc != 0)
		free(pr);
	return rc;
}

void cluster_hint_peer(struct cluster *c, const uint8_t *id, const char *addr)
{
	if (!addr || !addr[0] || strlen(addr) >= SWIM_ADDR_BYTES_MAX)
		return;
	const struct swim_member *m = swim_find(c->swim, id);
	if (m && m->state != SWIM_DEAD && m->state != SWIM_LEFT)
		return; /* SWIM knows it alive: nothing to learn */
	uint32_t n = sizeof(c->hints) / sizeof(c->hints[0]);
	uint32_t slot = c->hint_next;
	for (uint32_t i = 0; i < n; i++)
		if (memcmp(c->hints[i].id, id, SWIM_ID_BYTES) == 0) {
			slot = i;
			break;
		}
	if (slot == c->hint_next)
		c->hint_next = (c->hint_next + 1) % n;
	int fresh = strcmp(c->hints[slot].addr, addr) != 0;
	memcpy(c->hints[slot].id, id, SWIM_ID_BYTES);
	snprintf(c->hints[slot].addr, sizeof(c->hints[slot].addr), "%s", addr);
	/* join through it (with the configured seeds), at most once a second
	 * per member: a node restarted without seeds finds the cluster again */
	if (!fresh && c->now_ms < c->hints[slot].joined_ms + 1000)
		return;
	c->hints[slot].joined_ms = c->now_ms;
	const char *seeds[CONFIG_SEEDS_JOIN_MAX];
	uint32_t k = 0;
	for (uint32_t i = 0; i < c->seed_count && k < CONFIG_SEEDS_JOIN_MAX - 1; i++)
		seeds[k++] = c->seeds[i];
	seeds[k++] = c->hints[slot].addr;
	(void)swim_join(c->swim, c->now_ms, seeds, k);
	log_limited(LOG_INFO, "cluster", "hint-join", 10000,
	            "learnt member %s from its raft message: joining through it", addr);
}

uint32_t cluster_peer_list(struct cluster *c, struct peer_info *out, uint32_t max)
{
	uint32_t n = 0, cursor = 0;
	const struct swim_member *self = swim_self(c->swim);
	for (const struct swim_member *m; n < max && (m = swim_next_member(c->swim, &cursor)) != NULL;) {
		memcpy(out[n].id, m->id, SWIM_ID_BYTES);
		out[n].name = m->name;
		out[n].addr = m->addr;
		out[n].alive = m->state == SWIM_ALIVE || m->state == SWIM_SUSPECT;
		out[n].self = m == self;
		n++;
	}
	return n;
}

int cluster_member_find(struct cluster *c, const uint8_t *id, struct peer_info *out)
{
	const struct swim_member *m = swim_find(c->swim, id);
	if (!m)
		return 0;
	memcpy(out->id, m->id, SWIM_ID_BYTES);
	out->name = m->name;
	out->addr = m->addr;
	out->alive = m->state == SWIM_ALIVE || m->state == SWIM_SUSPECT;
	out->self = m == swim_self(c->swim);
	return 1;
}

/* The answers to cluster_peer_request, on the loop thread. */
static void deliver_peer_replies(struct cluster *c)
{
	pthread_mutex_lock(&c->mu);
	struct peer_reply *pr = c->pr_head;
	c->pr_head = c->pr_tail = NULL;
	pthread_mutex_unlock(&c->mu);
	while (pr) {
		struct peer_reply *next = pr->next;
		pr->cb(pr->arg, pr->code, pr->reply, pr->err);
		if (pr->reply)
			chorus__envelope__free_unpacked(pr->reply, NULL);
		free(pr);
		pr = next;
	}
}

static int ensure_candidates(struct cluster *c, uint32_t n)
{
	if (n <= c->cand_cap)
		return 0;
	uint32_t cap = n < 16 ? 16 : n * 2;
	struct placement_candidate *nc = realloc(c->cand, cap * sizeof(*nc));
	if (!nc)
		return -1;
	c->cand = nc;
	const struct swim_member **nm = realloc((void *)c->cand_member, cap * sizeof(*nm));
	if (!nm)
		return -1;
	c->cand_member = nm;
	c->cand_cap = cap;
	return 0;
}

static char *tags_text(char *const *tags, uint32_t n)
{
	size_t len = 1;
	for (uint32_t i = 0; i < n; i++)
		len += strlen(tags[i]) + 2;
	char *s = malloc(len);
	if (!s)
		return NULL;
	s[0] = '\0';
	for (uint32_t i = 0; i < n; i++) {
		if (i)
			strcat(s, ", ");
		strcat(s, tags[i]);
	}
	return s;
}

static void held_unlink(struct cluster *c, struct placed *p);

/* Sends p's attempt of t. 0, or a CH_ERR_* (nothing was sent). */
static int send_attempt(struct cluster *c, struct placed *p, const struct task *t)
{
	struct codec_remote_submit rs;
	codec_remote_submit_fill(&rs, t, c->node_id, p->wait_ms);
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_SUBMIT;
	env.submit = &rs.req;
	struct run_arg *ra = malloc(sizeof(*ra));
	if (!ra)
		return CH_ERR_NOMEM;
	*ra = (struct run_arg){c, p->task_id, p->attempt};
	int rc = chi_request_async(c->links[p->link].cli, &env, p->wait_ms + RUN_EXTRA_MS, run_reply_cb,
	                           ra);
	if (rc != 0) {
		free(ra);
		log_limited(LOG_WARN, "cluster", c->links[p->link].addr, 10000,
		            "cannot send a task to %s (%s): %s", p->member_name, c->links[p->link].addr,
		            ch_strerror(rc));
	}
	return rc;
}

/* An attempt ends with `code` on the next tick; unsent: it was never sent
 * and ends as "not started" (placed again, no attempt charged; a cancelled
 * task ends cancelled). */
static void complete_later(struct cluster *c, struct placed *p, int code, int unsent,
                           const char *why)
{
	struct completion *d = calloc(1, sizeof(*d));
	if (!d)
		return; /* given up with the member, or by its timeout */
	d->task_id = p->task_id;
	d->attempt = p->attempt;
	d->code = code;
	d->unsent = unsent;
	snprintf(d->err, sizeof(d->err), "%s", why);
	done_push(c, d);
}

static void complete_unsent(struct cluster *c, struct placed *p, const char *why)
{
	complete_later(c, p, CH_ERR_FULL, 1, why);
}

static void outbox_push(struct cluster *c, struct placed *p)
{
	struct link *l = &c->links[p->link];
	assert(!p->queued);
	p->queued = 1;
	p->out_next = NULL;
	if (l->out_tail)
		l->out_tail->out_next = p;
	else
		l->out_head = p;
	l->out_tail = p;
	c->out_count++;
}

static struct placed *outbox_pop(struct cluster *c, struct link *l)
{
	struct placed *p = l->out_head;
	if (!p)
		return NULL;
	l->out_head = p->out_next;
	if (!l->out_head)
		l->out_tail = NULL;
	p->out_next = NULL;
	p->queued = 0;
	c->out_count--;
	return p;
}

/* Sends what a link's outbox holds: PlaceReq frames of at most
 * PLACE_FRAME_TASKS attempts and about half the frame cap (an older node:
 * one SubmitReq each). */
static void flush_link(struct cluster *c, uint32_t li)
{
	struct link *l = &c->links[li];
	while (l->out_head) {
		if (l->single) {
			struct placed *p = outbox_pop(c, l);
			struct task *t = p->held;
			p->held = NULL;
			if (!t)
				complete_later(c, p, CH_ERR_PROTOCOL, 0, "the member cannot be asked again");
			else if (send_attempt(c, p, t) != 0)
				complete_unsent(c, p, "could not be sent");
			task_free(t);
			continue;
		}
		uint32_t n = 0;
		size_t bytes = 0, cap = c->frame_bytes_max / 2;
		for (struct placed *p = l->out_head; p && n < PLACE_FRAME_TASKS; p = p->out_next) {
			size_t b = (p->held ? p->bytes + 256 : 0) + 64;
			if (n && bytes + b > cap)
				break;
			bytes += b;
			n++;
		}
		struct place_call *pc = malloc(sizeof(*pc) + n * sizeof(pc->items[0]));
		struct codec_remote_submit *rs = calloc(n, sizeof(*rs));
		Chorus__SubmitReq **items = calloc(n, sizeof(*items));
		struct placed **ps = calloc(n, sizeof(*ps));
		if (!pc || !rs || !items || !ps) {
			free(pc);
			free(rs);
			free(items);
			free(ps);
			for (struct placed *p; (p = outbox_pop(c, l));) {
				if (p->held)
					complete_unsent(c, p, "could not be sent: out of memory");
				else
					complete_later(c, p, CH_ERR_NOMEM, 0, "out of memory");
				task_free(p->held);
				p->held = NULL;
			}
			return;
		}
		pc->c = c;
		pc->n = n;
		uint32_t wait = 0;
		for (uint32_t i = 0; i < n; i++) {
			struct placed *p = ps[i] = outbox_pop(c, l);
			if (p->held) {
				codec_remote_submit_fill(&rs[i], p->held, c->node_id, p->wait_ms);
			} else {
				/* answered pending before: asked again, without the task */
				chorus__submit_req__init(&rs[i].req);
				rs[i].req.origin.data = c->node_id;
				rs[i].req.origin.len = SWIM_ID_BYTES;
				rs[i].req.origin_task = p->task_id;
				rs[i].req.wait_ms = p->wait_ms;
			}
			rs[i].req.origin_attempt = p->attempt;
			items[i] = &rs[i].req;
			pc->items[i].task_id = p->task_id;
			pc->items[i].attempt = p->attempt;
			if (p->wait_ms > wait)
				wait = p->wait_ms;
		}
		Chorus__PlaceReq pr = CHORUS__PLACE_REQ__INIT;
		pr.n_items = n;
		pr.items = items;
		Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
		env.body_case = CHORUS__ENVELOPE__BODY_PLACE;
		env.place = &pr;
		int rc = chi_request_async(l->cli, &env, wait + RUN_EXTRA_MS, place_reply_cb, pc);
		if (rc != 0) {
			free(pc);
			log_limited(LOG_WARN, "cluster", l->addr, 10000,
			            "cannot send %u task(s) to %s: %s", n, l->addr, ch_strerror(rc));
		}
		for (uint32_t i = 0; i < n; i++) {
			struct placed *p = ps[i];
			if (rc != 0 && p->held)
				complete_unsent(c, p, "could not be sent");
			else if (rc != 0)
				complete_later(c, p, rc, 0, "could not ask the member again");
			task_free(p->held);
			p->held = NULL;
			p->awaiting = 0;
		}
		free(rs);
		free(items);
		free(ps);
	}
}

static void flush_all(struct cluster *c)
{
	for (uint32_t i = 0; i < c->link_count && c->out_count; i++)
		flush_link(c, i);
}

static int send_run(struct cluster *c, struct task *t, const struct swim_member *m, int li)
{
	uint32_t wait = t->opts.timeout_ms ? t->opts.timeout_ms + 2000u : RUN_WAIT_MS_MAX;
	if (wait > RUN_WAIT_MS_MAX)
		wait = RUN_WAIT_MS_MAX;
	struct placed *p = calloc(1, sizeof(*p));
	if (!p)
		return -1;
	p->task_id = t->id;
	/* the key the member dedups by: the attempt, and which placement of
	 * it this is (an attempt handed back "not started" is placed again
	 * under the same attempt number, and must not meet the member's
	 * remembered answer to the first placement). After a restart the
	 * count starts again: the first placement of a recovered attempt
	 * meets its twin from before the crash, which is the point. */
	t->placements++;
	p->attempt = codec_origin_attempt(t);
	p->link = (uint32_t)li;
	p->wait_ms = wait;
	memcpy(p->member, m->id, SWIM_ID_BYTES);
	snprintf(p->member_name, sizeof(p->member_name), "%s", m->name);
	p->bytes = t->payload_len;
	/* a temporary task never starts twice: held until its `running` is
	 * journaled, so a coordinator crash before that commit finds it
	 * queued and no member has it. Any other attempt waits on its link's
	 * outbox for the iteration's frame (an older member: sent at once). */
	p->hold = t->opts.restart == TASK_RESTART_TEMPORARY && !t->ephemeral;
	if (p->hold || !c->links[li].single) {
		p->held = task_clone(t);
		if (!p->held) {
			free(p);
			return -1;
		}
	}
	/* recorded before it is sent, so an answer always finds it */
	assert(!placed_get(c, t->id));
	if (idmap_put(&c->placed, t->id, p) != 0) {
		task_free(p->held);
		free(p);
		return -1;
	}
	if (p->hold) {
		p->held_next = c->held_head;
		c->held_head = p;
	} else if (p->held) {
		outbox_push(c, p);
	} else if (send_attempt(c, p, t) != 0) {
		(void)idmap_del(&c->placed, t->id);
		free(p);
		return -1;
	}
	c->links[li].inflight++;
	c->links[li].bytes_inflight += p->bytes;
	return 0;
}

void cluster_release_held(struct cluster *c)
{
	struct placed *p = c->held_head;
	c->held_head = NULL;
	while (p) {
		struct placed *next = p->held_next;
		p->held_next = NULL;
		p->hold = 0;
		if (p->held)
			outbox_push(c, p);
		p = next;
	}
	flush_all(c);
}

int cluster_any_held(const struct cluster *c)
{
	return c->held_head != NULL || c->out_count > 0;
}

int cluster_place(struct cluster *c, struct task *t, uint32_t local_inflight,
                  const struct now *now)
{
	uint64_t now_ms = now->mono_ms;
	uint32_t n = swim_member_count(c->swim);
	if (ensure_candidates(c, n + 1) != 0)
		return -1;
	uint32_t k = 0, cursor = 0;
	const struct swim_member *self = swim_self(c->swim);
	for (const struct swim_member *m; (m = swim_next_member(c->swim, &cursor)) != NULL;) {
		if (m->state != SWIM_ALIVE)
			continue;
		struct placement_candidate *pc = &c->cand[k];
		pc->tags = m->tags;
		pc->tag_count = m->tag_count;
		if (m == self) {
			pc->capacity = c->capacity;
			pc->inflight = local_inflight;
			pc->load = 0;
		} else {
			int li = link_find(c, m->addr, m->id);
			const struct link *l = li >= 0 ? &c->links[li] : NULL;
			/* credit: the member's slots (what it holds, so what a
			 * death can cost stays bounded by them), and its bytes */
			pc->capacity = m->capacity;
			pc->load = m->load;
			pc->inflight = l ? l->inflight : 0;
			if (l && l->bytes_inflight &&
			    l->bytes_inflight + t->payload_len > PLACE_BYTES_INFLIGHT)
				pc->inflight = pc->capacity;
			/* a member that just refused work (draining, queue full)
			 * gets none for a moment, so a drain does not become a
			 * loop of refusals */
			if (li >= 0 && c->links[li].refusing_until_ms > now_ms)
				pc->inflight = pc->capacity;
		}
		c->cand_member[k++] = m;
	}
	const char *const *req = (const char *const *)t->require;
	int pick = placement_pick(c->cand, k, req, t->require_count, &c->rng);
	if (pick < 0) {
		/* just started (a restart recovering tasks): the members that
		 * have the tags may not be known yet; wait a little before
		 * saying none exists */
		int settling = swim_joining(c->swim) ||
		               now_ms < c->start_ms + STARTUP_SETTLE_PERIODS * (uint64_t)c->period_ms;
		/* a suspect member that has the tags may be alive (a probe lost
		 * under load): wait for SWIM's verdict rather than fail the task
		 * for good; suspects are never placed on, only counted here */
		uint32_t ks = k;
		if (!settling && !placement_satisfiable(c->cand, k, req, t->require_count)) {
			cursor = 0;
			for (const struct swim_member *m; (m = swim_next_member(c->swim, &cursor)) != NULL;) {
				if (m->state != SWIM_SUSPECT || ks >= n + 1)
					continue;
				c->cand[ks].tags = m->tags;
				c->cand[ks].tag_count = m->tag_count;
				c->cand[ks].capacity = m->capacity;
				ks++;
			}
		}
		if (!settling && !placement_satisfiable(c->cand + k, ks - k, req, t->require_count) &&
		    !placement_satisfiable(c->cand, k, req, t->require_count)) {
			char *tags = tags_text(t->require, t->require_count);
			char msg[512];
			snprintf(msg, sizeof(msg), "no alive member has the required tags: %s",
			         tags ? tags : "?");
			free(tags);
			free(t->error);
			t->error = strdup(msg);
			return 2;
		}
		return -1;
	}
	const struct swim_member *m = c->cand_member[pick];
	if (m == self)
		return 0;
	int li = link_get(c, m->addr, m->id, now_ms);
	if (li < 0 || send_run(c, t, m, li) != 0) {
		/* the member cannot be reached now: run it here if we can */
		return local_inflight < c->capacity ? 0 : -1;
	}
	char *name = strdup(m->name);
	if (name) {
		free(t->node);
		t->node = name;
	}
	return 1;
}

void cluster_kill(struct cluster *c, const struct task *t)
{
	struct placed *p = placed_get(c, t->id);
	if (!p)
		return;
	if (p->held) {
		/* never sent: it ends here, without a word to the member */
		held_unlink(c, p);
		complete_unsent(c, p, "cancelled before it was sent");
		return;
	}
	Chorus__CancelReq cr = CHORUS__CANCEL_REQ__INIT;
	cr.origin.data = c->node_id;
	cr.origin.len = SWIM_ID_BYTES;
	cr.origin_task = t->id;
	Chorus__Envelope env = CHORUS__ENVELOPE__INIT;
	env.body_case = CHORUS__ENVELOPE__BODY_CANCEL;
	env.cancel = &cr;
	(void)chi_request_async(c->links[p->link].cli, &env, 5000, gossip_reply_cb, NULL);
}

/* Hands one remote outcome to the task service. A member that refused the
 * attempt before running it (full, draining, or it answered "not started")
 * gets no new work for a moment, so a drain does not become a loop of
 * refusals. */
static void complete_as(struct cluster *c, const struct task_sink_port *sink, struct placed *p,
                        int code, const char *err, const Chorus__TaskResult *r, int unsent,
                        const struct now *now)
{
	int refused = !unsent && (code == CH_ERR_FULL || code == CH_ERR_SHUTTING_DOWN ||
	                          (r && codec_state_from_wire(r->state) == TASK_QUEUED));
	if (refused && p->link < c->link_count)
		c->links[p->link].refusing_until_ms = now->mono_ms + REFUSED_BACKOFF_MS;
	struct remote_outcome o = {
		.task_id = p->task_id,
		.code = code,
		.err = err,
		.result = r,
		.member_name = p->member_name,
	};
	if (sink)
		sink->outcome(sink->ctx, &o, now);
}

static void complete(struct cluster *c, const struct task_sink_port *sink, struct placed *p,
                     struct completion *d, const struct now *now)
{
	const Chorus__TaskResult *r = NULL;
	if (d->code == 0 && d->reply && d->reply->body_case == CHORUS__ENVELOPE__BODY_SUBMIT_RESP &&
	    d->reply->submit_resp)
		r = d->reply->submit_resp->result;
	complete_as(c, sink, p, d->code, d->err, r, d->unsent, now);
}

/* Takes p off the held list or its link's outbox, and drops its copy. */
static void held_unlink(struct cluster *c, struct placed *p)
{
	if (p->hold) {
		for (struct placed **pp = &c->held_head; *pp; pp = &(*pp)->held_next)
			if (*pp == p) {
				*pp = p->held_next;
				break;
			}
		p->hold = 0;
	}
	if (p->queued) {
		struct link *l = &c->links[p->link];
		struct placed *prev = NULL;
		for (struct placed *q = l->out_head; q; prev = q, q = q->out_next) {
			if (q != p)
				continue;
			if (prev)
				prev->out_next = p->out_next;
			else
				l->out_head = p->out_next;
			if (l->out_tail == p)
				l->out_tail = prev;
			break;
		}
		p->queued = 0;
		p->out_next = NULL;
		c->out_count--;
	}
	task_free(p->held);
	p->held = NULL;
}

static void placed_remove(struct cluster *c, struct placed *p)
{
	held_unlink(c, p);
	void *v = idmap_del(&c->placed, p->task_id);
	assert(v == p);
	(void)v;
	assert(c->links[p->link].inflight > 0);
	c->links[p->link].inflight--;
	c->links[p->link].bytes_inflight -= p->bytes;
	free(p);
}

static void ghost_drop_head(struct cluster *c)
{
	struct ghost *g = c->ghost_head;
	c->ghost_head = g->next;
	if (!c->ghost_head)
		c->ghost_tail = NULL;
	if (g->task_id && idmap_get(&c->ghosts, g->task_id) == g)
		(void)idmap_del(&c->ghosts, g->task_id);
	free(g);
}

static void ghost_add(struct cluster *c, const struct placed *p, uint64_t now_ms)
{
	if (c->ghosts.count >= GHOSTS_MAX && c->ghost_head)
		ghost_drop_head(c);
	struct ghost *g = calloc(1, sizeof(*g));
	if (!g)
		return; /* its late answer will be dropped, as it was before */
	g->task_id = p->task_id;
	g->attempt = p->attempt;
	snprintf(g->member_name, sizeof(g->member_name), "%s", p->member_name);
	g->born_ms = now_ms;
	struct ghost *old = idmap_get(&c->ghosts, g->task_id);
	if (old)
		old->task_id = 0; /* superseded: dropped from the list in time */
	if (idmap_put(&c->ghosts, g->task_id, g) != 0) {
		free(g);
		return;
	}
	if (c->ghost_tail)
		c->ghost_tail->next = g;
	else
		c->ghost_head = g;
	c->ghost_tail = g;
}

/* A PlaceReq's answer: each item ends, or (pending) is asked again in the
 * link's next frame. An older node that does not know PlaceReq ran none of
 * them: they are placed again, one SubmitReq each from now on. */
static void place_done(struct cluster *c, const struct task_sink_port *sink, struct completion *d,
                       const struct now *now)
{
	const struct place_call *pc = d->place;
	const Chorus__PlaceResp *r = NULL;
	if (d->code == 0 && d->reply && d->reply->body_case == CHORUS__ENVELOPE__BODY_PLACE_RESP)
		r = d->reply->place_resp;
	int old_peer = d->code == CH_ERR_PROTOCOL && strncmp(d->err, "unknown request type", 20) == 0;
	for (uint32_t i = 0; i < pc->n; i++) {
		uint64_t id = pc->items[i].task_id;
		uint32_t attempt = pc->items[i].attempt;
		struct placed *p = placed_get(c, id);
		if (p && (p->attempt != attempt || p->queued || p->hold))
			p = NULL; /* not this attempt, or not sent: nothing to do with it */
		const Chorus__PlaceItem *it = NULL;
		if (r && i < r->n_items && r->items[i]->origin_task == id &&
		    r->items[i]->origin_attempt == attempt)
			it = r->items[i];
		if (old_peer) {
			if (p) {
				if (!c->links[p->link].single)
					log_info("cluster", "member %s does not take tasks in batches (an older "
					                    "version): one request per task", p->member_name);
				c->links[p->link].single = 1;
				struct placed copy = *p;
				placed_remove(c, p);
				complete_as(c, sink, &copy, CH_ERR_FULL, "placed again", NULL, 1, now);
			}
			continue;
		}
		if (it && it->pending) {
			if (p) {
				p->awaiting = 1;
				outbox_push(c, p);
			}
			continue;
		}
		int code = d->code;
		const char *err = d->err;
		const Chorus__TaskResult *res = NULL;
		if (code == 0 && !it) {
			code = CH_ERR_PROTOCOL;
			err = "the member's answer left the task out";
		} else if (code == 0) {
			code = it->code;
			err = it->error ? it->error : "";
			res = code == 0 ? it->result : NULL;
		}
		if (p) {
			struct placed copy = *p;
			placed_remove(c, p);
			complete_as(c, sink, &copy, code, err, res, 0, now);
			continue;
		}
		struct ghost *g = idmap_get(&c->ghosts, id);
		if (g && g->task_id && g->attempt == attempt && code == 0 && res && sink &&
		    sink->late_outcome) {
			/* the member was paused or cut off, not dead: its answer */
			struct remote_outcome o = {
				.task_id = id,
				.code = 0,
				.err = "",
				.result = res,
				.member_name = g->member_name,
			};
			g->task_id = 0;
			(void)idmap_del(&c->ghosts, id);
			sink->late_outcome(sink->ctx, &o, now);
		}
	}
}

/* Tasks placed on members that died (or left, or were forgotten). */
static void fail_dead_members(struct cluster *c, const struct task_sink_port *sink,
                              const struct now *now)
{
	if (c->dead_count == 0 && !c->dead_overflow)
		return;
	struct idmap_iter it;
	idmap_iter_init(&c->placed, &it);
	for (struct placed *p; (p = idmap_iter_next(&c->placed, &it, NULL));) {
		{
			int gone = 0;
			if (c->dead_overflow) {
				const struct swim_member *m = swim_find(c->swim, p->member);
				gone = !m || m->state == SWIM_DEAD || m->state == SWIM_LEFT;
			} else {
				for (uint32_t i = 0; i < c->dead_count && !gone; i++)
					gone = memcmp(c->dead[i], p->member, SWIM_ID_BYTES) == 0;
			}
			if (gone && p->held) {
				/* never sent: placed again, no attempt charged */
				held_unlink(c, p);
				complete_unsent(c, p, "not sent: the member died first");
			} else if (gone) {
				char why[256];
				snprintf(why, sizeof(why), "node %s died while running it",
				         p->member_name);
				uint64_t id = p->task_id;
				ghost_add(c, p, now->mono_ms);
				placed_remove(c, p);
				if (sink)
					sink->member_lost(sink->ctx, id, why, now);
			}
		}
	}
	c->dead_count = 0;
	c->dead_overflow = 0;
}

void cluster_tick(struct cluster *c, const struct task_sink_port *sink, uint32_t load,
                  const struct now *now)
{
	uint64_t now_ms = now->mono_ms;
	c->now_ms = now_ms;
	swim_tick(c->swim, now_ms);

	pthread_mutex_lock(&c->mu);
	struct completion *d = c->done_head;
	c->done_head = c->done_tail = NULL;
	pthread_mutex_unlock(&c->mu);
	while (d) {
		struct completion *next = d->next;
		if (d->place) {
			place_done(c, sink, d, now);
			if (d->reply)
				chorus__envelope__free_unpacked(d->reply, NULL);
			free(d->place);
			free(d);
			d = next;
			continue;
		}
		struct placed *p = placed_get(c, d->task_id);
		struct ghost *g = p ? NULL : idmap_get(&c->ghosts, d->task_id);
		if (p && p->attempt == d->attempt) {
			struct placed copy = *p;
			placed_remove(c, p);
			complete(c, sink, &copy, d, now);
		} else if (g && g->task_id && g->attempt == d->attempt && d->code == 0 && d->reply &&
		           d->reply->body_case == CHORUS__ENVELOPE__BODY_SUBMIT_RESP &&
		           d->reply->submit_resp && sink && sink->late_outcome) {
			/* the member was paused or cut off, not dead: its answer */
			struct remote_outcome o = {
				.task_id = d->task_id,
				.code = 0,
				.err = "",
				.result = d->reply->submit_resp->result,
				.member_name = g->member_name,
			};
			g->task_id = 0; /* answered: dropped from the list in time */
			(void)idmap_del(&c->ghosts, d->task_id);
			sink->late_outcome(sink->ctx, &o, now);
		}
		if (d->reply)
			chorus__envelope__free_unpacked(d->reply, NULL);
		free(d);
		d = next;
	}
	fail_dead_members(c, sink, now);
	/* what the last iteration placed, and what was answered pending */
	flush_all(c);
	deliver_peer_replies(c);
	if (sink && sink->origin_unreachable) {
		if (c->unreach_overflow)
			sink->origin_unreachable(sink->ctx, NULL, now);
		else
			for (uint32_t i = 0; i < c->unreach_count; i++)
				sink->origin_unreachable(sink->ctx, c->unreach[i], now);
	}
	c->unreach_count = 0;
	c->unreach_overflow = 0;
	while (c->ghost_head && (!c->ghost_head->task_id ||
	                         c->ghost_head->born_ms + GHOST_TTL_MS < now_ms))
		ghost_drop_head(c);

	/* load (and so capacity) gossiped at most once a period, on change */
	if (now_ms >= c->next_meta_ms && load != c->last_load) {
		c->next_meta_ms = now_ms + c->period_ms;
		c->last_load = load;
		(void)swim_set_meta(c->swim, now_ms, c->capacity, load,
		                    (const char *const *)c->tags, (uint8_t)c->tag_count);
	}

	if (swim_joining(c->swim) && now_ms >= c->next_join_log_ms) {
		c->next_join_log_ms = now_ms + 10000;
		char list[512] = "";
		size_t off = 0;
		for (uint32_t i = 0; i < c->seed_count && off < sizeof(list) - 2; i++)
			off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "",
			                        c->seeds[i]);
		log_warn("cluster", "no seed has answered yet (%s): still trying, with backoff", list);
	} else if (!swim_joining(c->swim) && c->seed_count && !c->joined_logged) {
		c->joined_logged = 1;
		log_info("cluster", "joined: %u member(s) known", swim_member_count(c->swim));
	}

	/* close links to addresses that are no longer members */
	if (now_ms >= c->next_link_sweep_ms) {
		c->next_link_sweep_ms = now_ms + 10000;
		for (uint32_t i = 0; i < c->link_count;) {
			struct link *l = &c->links[i];
			int keep = l->inflight > 0 || l->last_used_ms + LINK_IDLE_MS > now_ms;
			for (uint32_t s = 0; s < c->seed_count && !keep; s++)
				keep = strcmp(c->seeds[s], l->addr) == 0;
			uint32_t cur = 0;
			for (const struct swim_member *m; !keep && (m = swim_next_member(c->swim, &cur));)
				keep = strcmp(m->addr, l->addr) == 0 && m->state != SWIM_DEAD &&
				       m->state != SWIM_LEFT;
			if (keep)
				i++;
			else
				link_close(c, i);
		}
	}
}

uint64_t cluster_next_deadline(const struct cluster *c)
{
	return swim_next_deadline_ms(c->swim);
}

void cluster_leave(struct cluster *c, const struct now *now)
{
	(void)swim_leave(c->swim, now->mono_ms);
}

int cluster_leave_done(const struct cluster *c)
{
	return swim_leave_done(c->swim) || swim_member_count(c->swim) <= 1;
}

uint32_t cluster_incarnation(const struct cluster *c)
{
	return swim_self_incarnation(c->swim);
}

const struct swim *cluster_swim(const struct cluster *c)
{
	return c->swim;
}

int cluster_members(const struct cluster *c, struct arena *a, const struct now *now,
                    Chorus__MemberInfo ***out, size_t *n)
{
	uint32_t count = swim_member_count(c->swim);
	Chorus__MemberInfo **v = arena_alloc(a, (count ? count : 1) * sizeof(*v));
	Chorus__MemberInfo *mi = arena_alloc(a, (count ? count : 1) * sizeof(*mi));
	char *ids = arena_alloc(a, (count ? count : 1) * (SWIM_ID_BYTES * 2 + 1));
	if (!v || !mi || !ids)
		return CH_ERR_NOMEM;
	const struct swim_member *self = swim_self(c->swim);
	uint32_t k = 0, cursor = 0;
	for (const struct swim_member *m; k < count && (m = swim_next_member(c->swim, &cursor));) {
		char *id = ids + (size_t)k * (SWIM_ID_BYTES * 2 + 1);
		chorus__member_info__init(&mi[k]);
		sodium_bin2hex(id, SWIM_ID_BYTES * 2 + 1, m->id, SWIM_ID_BYTES);
		mi[k].id = id;
		mi[k].name = (char *)m->name;
		mi[k].addr = (char *)m->addr;
		mi[k].state = (char *)swim_state_name(m->state);
		mi[k].incarnation = m->incarnation;
		mi[k].n_tags = m->tag_count;
		mi[k].tags = (char **)m->tags;
		mi[k].capacity = m->capacity;
		mi[k].load = m->load;
		/* the core keeps monotonic times; users see wall times */
		uint64_t ago = now->mono_ms > m->state_change_ms ? now->mono_ms - m->state_change_ms : 0;
		mi[k].since_ms = now->wall_ms > ago ? now->wall_ms - ago : 0;
		mi[k].self = m == self;
		mi[k].protocol_version = m->proto_version;
		v[k] = &mi[k];
		k++;
	}
	*out = v;
	*n = k;
	return 0;
}

int cluster_start(struct cluster **out, const struct cluster_config *cfg, const struct now *now,
                  char *err, size_t err_len)
{
	uint64_t now_ms = now->mono_ms;
	struct cluster *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, err_len, "out of memory");
		return CH_ERR_NOMEM;
	}
	pthread_mutex_init(&c->mu, NULL);
	idmap_init(&c->placed);
	idmap_init(&c->ghosts);
	memcpy(c->node_id, cfg->node_id, SWIM_ID_BYTES);
	c->kr = seal_keyring_ref(cfg->keyring);
	snprintf(c->name, sizeof(c->name), "%s", cfg->name);
	c->capacity = cfg->capacity;
	c->period_ms = cfg->period_ms;
	c->start_ms = now_ms;
	c->frame_bytes_max = cfg->frame_bytes_max;
	c->wake = cfg->wake;
	c->wake_arg = cfg->wake_arg;
	c->member_event = cfg->member_event;
	c->event_arg = cfg->event_arg;
	rng_seed(&c->rng, cfg->seed);
	int rc = 0;
	for (uint32_t i = 0; i < cfg->tag_count && i < SWIM_TAGS_MAX && rc == 0; i++)
		if (!(c->tags[c->tag_count++] = strdup(cfg->tags[i])))
			rc = CH_ERR_NOMEM;
	for (uint32_t i = 0; i < cfg->seed_count && i < SWIM_SEEDS_MAX && rc == 0; i++)
		if (!(c->seeds[c->seed_count++] = strdup(cfg->seeds[i])))
			rc = CH_ERR_NOMEM;
	if (rc == 0) {
		struct swim_config sc;
		swim_config_defaults(&sc);
		memcpy(sc.id, cfg->node_id, SWIM_ID_BYTES);
		sc.name = cfg->name;
		sc.addr = cfg->addr;
		sc.tags = (const char *const *)c->tags;
		sc.tag_count = (uint8_t)c->tag_count;
		sc.capacity = cfg->capacity;
		sc.load = 0;
		sc.incarnation = cfg->incarnation;
		sc.seed = cfg->seed;
		sc.period_ms = cfg->period_ms;
		sc.probe_timeout_ms = cfg->probe_timeout_ms ? cfg->probe_timeout_ms : cfg->period_ms / 2;
		sc.reap_after_ms = cfg->reap_after_ms;
		sc.join_backoff_ms = cfg->period_ms;
		sc.join_backoff_max_ms = 10000;
		struct swim_effects fx = {.ctx = c, .send = fx_send, .event = fx_event};
		rc = swim_create(&c->swim, &sc, &fx, now_ms, err, err_len);
	}
	/* a seed usually answers within a period or two: complain only when
	 * none has for a while */
	c->next_join_log_ms = now_ms + 5000;
	if (rc != 0) {
		if (!*err)
			snprintf(err, err_len, "cannot start membership: %s", err_name(rc));
		cluster_stop(c);
		return rc;
	}
	*out = c;
	return 0;
}

void cluster_set_keyring(struct cluster *c, const struct seal_keyring *kr)
{
	struct seal_keyring *old = c->kr;
	c->kr = seal_keyring_ref(kr);
	for (uint32_t i = 0; i < c->link_count; i++)
		chi_client_set_keyring(c->links[i].cli, c->kr);
	seal_keyring_free(old);
}

int cluster_join(struct cluster *c, const struct now *now)
{
	if (!c->seed_count)
		return 0;
	c->next_join_log_ms = now->mono_ms + 5000;
	return swim_join(c->swim, now->mono_ms, (const char *const *)c->seeds, c->seed_count);
}

void cluster_stop(struct cluster *c)
{
	if (!c)
		return;
	for (uint32_t i = 0; i < c->link_count; i++)
		ch_client_close(c->links[i].cli); /* pending callbacks run now */
	c->link_count = 0;
	for (struct peer_reply *pr = c->pr_head, *n; pr; pr = n) {
		n = pr->next;
		if (pr->reply)
			chorus__envelope__free_unpacked(pr->reply, NULL);
		free(pr);
	}
	struct completion *d = c->done_head;
	while (d) {
		struct completion *n = d->next;
		if (d->reply)
			chorus__envelope__free_unpacked(d->reply, NULL);
		free(d->place);
		free(d);
		d = n;
	}
	struct idmap_iter it;
	idmap_iter_init(&c->placed, &it);
	for (struct placed *p; (p = idmap_iter_next(&c->placed, &it, NULL));) {
		task_free(p->held);
		free(p);
	}
	idmap_free(&c->placed);
	while (c->ghost_head)
		ghost_drop_head(c);
	idmap_free(&c->ghosts);
	swim_destroy(c->swim);
	for (uint32_t i = 0; i < c->tag_count; i++)
		free(c->tags[i]);
	for (uint32_t i = 0; i < c->seed_count; i++)
		free(c->seeds[i]);
	free(c->cand);
	free((void *)c->cand_member);
	pthread_mutex_destroy(&c->mu);
	seal_keyring_free(c->kr);
	free(c);
}
