/*
 * events_svc.c - the events service (see events_svc.h).
 *
 * A parked call is answered in after_commit, never from the ring's
 * subscriber callback: that runs inside whichever service reported the
 * event, in the middle of its work; the callback only notes that there is
 * news. Registered last, this service's after_commit runs after every
 * other's, so an event reported anywhere in an iteration is answered in the
 * same iteration.
 */
#include "svc/events_svc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chorus.h"
#include "config.h"
#include "io/dispatch.h"
#include "io/events.h"
#include "io/log.h"
#include "io/rpc.h"
#include "svc/service.h"

#define FLUSH_EVERY_MS 1000u
#define ANSWER_MARGIN_BYTES 1024u /* the envelope around the events */
/* A drain waits this long after answering the parked calls (node_draining
 * among them), so the answers leave before the node closes its links. */
#define DRAIN_LINGER_MS 200u

struct waiter {
	struct events_svc *s;
	struct rpc_call *call;
	uint64_t after;
	uint32_t max;
	uint64_t deadline_ms; /* monotonic */
	struct waiter *next, *prev;
};

struct events_svc {
	struct host *host;
	struct events *ev;
	int subscribed;
	int news; /* an event came since the waiters were last served */
	struct waiter *waiters;
	uint32_t waiter_count;
	uint64_t next_flush_ms, next_refused_ms;
	uint64_t drain_until_ms; /* 0: not draining */
	struct refused_watch refused;
};

const char *const refused_kind_names[REFUSED_KINDS] = {
	"forged",        "tampered",     "replayed",            "truncated",
	"oversized",     "malformed",    "unknown_session",     "rate_limited",
	"connections_refused", "stale", "busy",
};

/* ---- refused frames (pure) ---- */

void refused_watch_init(struct refused_watch *w, uint64_t threshold, uint64_t quiet_ms)
{
	memset(w, 0, sizeof(*w));
	w->threshold = threshold;
	w->quiet_ms = quiet_ms;
}

static struct refused_peer *refused_peer_get(struct refused_watch *w, const char *peer,
                                             uint64_t now_ms)
{
	for (uint32_t i = 0; i < w->n; i++)
		if (strncmp(w->peers[i].peer, peer, REFUSED_PEER_BYTES - 1) == 0)
			return &w->peers[i];
	struct refused_peer *p;
	if (w->n < REFUSED_PEERS_MAX) {
		p = &w->peers[w->n++];
	} else {
		p = &w->peers[0];
		for (uint32_t i = 1; i < w->n; i++)
			if (w->peers[i].seen_ms < p->seen_ms)
				p = &w->peers[i];
	}
	memset(p, 0, sizeof(*p));
	snprintf(p->peer, sizeof(p->peer), "%s", peer);
	p->seen_ms = now_ms;
	return p;
}

uint32_t refused_watch_step(struct refused_watch *w, const char *peer,
                            const uint64_t counts[REFUSED_KINDS], uint64_t now_ms,
                            void (*emit)(void *arg, const char *peer, const char *kind,
                                         uint64_t rise, uint64_t total),
                            void *arg)
{
	struct refused_peer *p = refused_peer_get(w, peer ? peer : "", now_ms);
	p->seen_ms = now_ms;
	uint32_t n = 0;
	for (int k = 0; k < REFUSED_KINDS; k++) {
		/* a counter below the last look: the peer's entry was remade */
		uint64_t rise = counts[k] >= p->last[k] ? counts[k] - p->last[k] : counts[k];
		p->last[k] = counts[k];
		if (rise <= w->threshold)
			continue;
		if (p->evented_ms[k] && now_ms - p->evented_ms[k] < w->quiet_ms)
			continue;
		p->evented_ms[k] = now_ms ? now_ms : 1;
		emit(arg, p->peer, refused_kind_names[k], rise, counts[k]);
		n++;
	}
	return n;
}

static void refused_emit(void *arg, const char *peer, const char *kind, uint64_t rise,
                         uint64_t total)
{
	struct events_svc *s = arg;
	host_event(s->host, "frames_refused", peer,
	           "%" PRIu64 " %s frame(s) refused from %s in the last %u s (%" PRIu64 " in all)",
	           rise, kind, peer, REFUSED_WINDOW_MS / 1000, total);
}

static void refused_look(struct events_svc *s, uint64_t now_ms)
{
	Chorus__PeerCounters **pc = NULL;
	size_t n = 0;
	if (!host_rpc(s->host) || rpc_peer_counters(host_rpc(s->host), &pc, &n) != 0)
		return;
	for (size_t i = 0; i < n; i++) {
		const Chorus__PeerCounters *c = pc[i];
		const uint64_t counts[REFUSED_KINDS] = {
			c->forged,       c->tampered,     c->replayed,
			c->truncated,    c->oversized,    c->malformed,
			c->unknown_session, c->rate_limited, c->connections_refused,
			c->stale,        c->busy,
		};
		(void)refused_watch_step(&s->refused, c->peer, counts, now_ms, refused_emit, s);
	}
	rpc_peer_counters_free(pc, n);
}

/* ---- answers ---- */

static void answer(struct events_svc *s, struct rpc_call *c, uint64_t after, uint32_t max)
{
	/* loop thread only: one answer at a time */
	static const struct event *got[EVENTS_PAGE_MAX];
	static Chorus__Event evs[EVENTS_PAGE_MAX];
	static Chorus__Event *evp[EVENTS_PAGE_MAX];
	uint32_t n = events_since(s->ev, after, got, max);
	size_t budget = 0, room = rpc_reply_bytes_max(host_rpc(s->host));
	room = room > ANSWER_MARGIN_BYTES ? room - ANSWER_MARGIN_BYTES : 0;
	uint32_t k = 0;
	for (; k < n; k++) {
		chorus__event__init(&evs[k]);
		evs[k].seq = got[k]->seq;
		evs[k].wall_ms = got[k]->wall_ms;
		evs[k].kind = (char *)got[k]->kind;
		evs[k].subject = (char *)got[k]->subject;
		evs[k].message = (char *)got[k]->message;
		/* a tag, a length and the event */
		budget += chorus__event__get_packed_size(&evs[k]) + 8;
		if (budget > room)
			break; /* the rest comes with the next page */
		evp[k] = &evs[k];
	}
	Chorus__EventsResp r = CHORUS__EVENTS_RESP__INIT;
	r.n_events = k;
	r.events = evp;
	r.first_seq = events_first_seq(s->ev);
	r.last_seq = events_last_seq(s->ev);
	r.node_id = (char *)host_node_id_hex(s->host);
	r.node = (char *)host_config(s->host)->name;
	r.started_ms = host_started_wall_ms(s->host);
	rpc_reply_body(c, CHORUS__ENVELOPE__BODY_EVENTS_RESP, events_resp, &r);
}

static void waiter_unlink(struct events_svc *s, struct waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		s->waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	s->waiter_count--;
}

static void waiter_cancelled(void *arg, struct rpc_call *c)
{
	struct waiter *w = arg;
	(void)c;
	waiter_unlink(w->s, w);
	free(w);
}

/* Answers the waiters with news, past their wait, or all (draining). */
static void serve(struct events_svc *s, uint64_t now_ms, int all)
{
	uint64_t last = events_last_seq(s->ev);
	for (struct waiter *w = s->waiters, *n; w; w = n) {
		n = w->next;
		if (all || last > w->after || now_ms >= w->deadline_ms) {
			waiter_unlink(s, w);
			answer(s, w->call, w->after, w->max);
			free(w);
		}
	}
	s->news = 0;
}

static void handle_events(void *svc, struct rpc_call *c, const Chorus__Envelope *env)
{
	struct events_svc *s = svc;
	const Chorus__EventsReq *rq = env->events;
	uint32_t max = rq->max == 0 || rq->max > EVENTS_PAGE_MAX ? EVENTS_PAGE_MAX : rq->max;
	uint32_t wait_ms = rq->wait_ms > EVENTS_WAIT_MAX_MS ? EVENTS_WAIT_MAX_MS : rq->wait_ms;
	uint64_t last = events_last_seq(s->ev);
	/* after > last: the asker saw another run of this node; tell it now */
	if (wait_ms == 0 || rq->after != last || s->drain_until_ms ||
	    s->waiter_count >= EVENTS_WAITERS_MAX) {
		answer(s, c, rq->after, max);
		return;
	}
	struct waiter *w = calloc(1, sizeof(*w));
	if (!w) {
		rpc_reply_error(c, CH_ERR_NOMEM, "out of memory");
		return;
	}
	w->s = s;
	w->after = rq->after;
	w->max = max;
	w->deadline_ms = host_now(s->host)->mono_ms + wait_ms;
	w->call = rpc_park(c, waiter_cancelled, w);
	if (!w->call) { /* answered with CH_ERR_NOMEM */
		free(w);
		return;
	}
	w->next = s->waiters;
	if (s->waiters)
		s->waiters->prev = w;
	s->waiters = w;
	s->waiter_count++;
}

static const struct req_spec EVENTS_REQUEST = {
	CHORUS__ENVELOPE__BODY_EVENTS, "events", handle_events, RPC_ROLE_CLIENT | RPC_ROLE_PEER,
	REQ_MAY_PARK,
};

/* ---- service ops ---- */

static void on_event(void *arg, const struct event *e)
{
	struct events_svc *s = arg;
	(void)e;
	s->news = 1;
}

static int svc_start(void *svc, struct host *h, const struct now *now, char *err, size_t err_len)
{
	struct events_svc *s = svc;
	s->ev = host_events(h);
	if (!s->ev) {
		snprintf(err, err_len, "the node has no event ring");
		return -1;
	}
	if (dispatch_register(host_dispatch(h), &EVENTS_REQUEST, s) != 0) {
		snprintf(err, err_len, "request events registered twice");
		return -1;
	}
	if (events_subscribe(s->ev, on_event, s) != 0) {
		snprintf(err, err_len, "no room for another events subscriber");
		return -1;
	}
	s->subscribed = 1;
	refused_watch_init(&s->refused, REFUSED_THRESHOLD, REFUSED_QUIET_MS);
	s->next_flush_ms = now->mono_ms + FLUSH_EVERY_MS;
	s->next_refused_ms = now->mono_ms + REFUSED_WINDOW_MS;
	const struct config *cfg = host_config(h);
	host_event(h, "node_started", cfg->name, "node %s (%.16s) started, listening on %s",
	           cfg->name, host_node_id_hex(h), cfg->listen);
	return 0;
}

static uint64_t svc_next_deadline(void *svc)
{
	struct events_svc *s = svc;
	if (s->news && s->waiters)
		return 0;
	uint64_t next = s->next_flush_ms < s->next_refused_ms ? s->next_flush_ms : s->next_refused_ms;
	if (s->drain_until_ms && s->drain_until_ms < next)
		next = s->drain_until_ms;
	for (struct waiter *w = s->waiters; w; w = w->next)
		if (w->deadline_ms < next)
			next = w->deadline_ms;
	return next;
}

static void svc_tick(void *svc, const struct now *now)
{
	struct events_svc *s = svc;
	if (now->mono_ms >= s->next_flush_ms) {
		s->next_flush_ms = now->mono_ms + FLUSH_EVERY_MS;
		(void)events_flush(s->ev, now->wall_ms);
	}
	if (now->mono_ms >= s->next_refused_ms) {
		s->next_refused_ms = now->mono_ms + REFUSED_WINDOW_MS;
		refused_look(s, now->mono_ms);
	}
}

static void svc_after_commit(void *svc, int committed, const struct now *now)
{
	struct events_svc *s = svc;
	(void)committed; /* the ring is not journaled: answers do not wait on it */
	/* from this service's drain on, not from SIGTERM: drain() reports
	 * node_draining first, and the parked calls should carry it */
	int all = s->drain_until_ms || host_closing(s->host);
	if (all || s->news || (s->waiters && now->mono_ms >= svc_next_deadline(s)))
		serve(s, now->mono_ms, all);
}

static void svc_drain(void *svc, const struct now *now)
{
	struct events_svc *s = svc;
	const struct config *cfg = host_config(s->host);
	host_event(s->host, "node_draining", cfg->name, "node %s is draining (SIGTERM)", cfg->name);
	serve(s, now->mono_ms, 1);
	s->drain_until_ms = now->mono_ms + DRAIN_LINGER_MS;
}

static int svc_drained(void *svc, const struct now *now)
{
	struct events_svc *s = svc;
	return now->mono_ms >= s->drain_until_ms;
}

static void svc_stop(void *svc)
{
	struct events_svc *s = svc;
	if (s->subscribed)
		events_unsubscribe(s->ev, on_event, s);
	/* parked calls were answered at closing; any left go with the rpc */
	while (s->waiters) {
		struct waiter *w = s->waiters;
		waiter_unlink(s, w);
		free(w);
	}
	free(s);
}

static const struct service_ops EVENTS_OPS = {
	.name = "events",
	.start = svc_start,
	.next_deadline = svc_next_deadline,
	.tick = svc_tick,
	.after_commit = svc_after_commit,
	.drain = svc_drain,
	.drained = svc_drained,
	.stop = svc_stop,
};

int events_svc_register(struct host *h)
{
	struct events_svc *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	s->host = h;
	if (host_register(h, &EVENTS_OPS, s) != 0) {
		free(s);
		return -1;
	}
	return 0;
}
