/*
 * events_svc.h - the events service: serves EventsReq (`clusterctl events`,
 * and the HTTP service's /api/events through a local call) from the node's
 * ring of recent events (io/events.h), and reports some events itself:
 * node_started, node_draining, and frames_refused (refused-frame counters
 * of a peer jumping over a threshold).
 *
 * An EventsReq asks for the events after `after`, at most `max`
 * (0 or more than EVENTS_PAGE_MAX: EVENTS_PAGE_MAX, and fewer when the
 * answer would not fit a frame). With wait_ms > 0 (at most
 * EVENTS_WAIT_MAX_MS) and nothing after `after` yet, the call is parked
 * until an event comes or the wait is over (an empty page). An `after`
 * beyond the newest seq (the asker saw an earlier run of this node, which
 * started again from seq 1) is answered at once, so the asker learns of the
 * restart from started_ms without waiting. While the node drains, every
 * parked call is answered and none is parked any more.
 */
#ifndef CHORUS_SVC_EVENTS_SVC_H
#define CHORUS_SVC_EVENTS_SVC_H

#include <stdint.h>

struct host;

#define EVENTS_PAGE_MAX 256
#define EVENTS_WAIT_MAX_MS 30000u
#define EVENTS_WAITERS_MAX 256 /* parked calls; beyond, answered at once */

/* refused frames: a peer's counter of one kind rising by more than
 * REFUSED_THRESHOLD between two looks REFUSED_WINDOW_MS apart is one
 * frames_refused event, at most one per peer and kind per REFUSED_QUIET_MS */
#define REFUSED_WINDOW_MS 10000u
#define REFUSED_THRESHOLD 100u
#define REFUSED_QUIET_MS 60000u
#define REFUSED_KINDS 11
#define REFUSED_PEERS_MAX 64
#define REFUSED_PEER_BYTES 64

/* The kinds watched, in the order of the counts given to refused_watch_step. */
extern const char *const refused_kind_names[REFUSED_KINDS];

struct refused_peer {
	char peer[REFUSED_PEER_BYTES];
	uint64_t last[REFUSED_KINDS];       /* the counts at the previous look */
	uint64_t evented_ms[REFUSED_KINDS]; /* when the last event of a kind was (0: never) */
	uint64_t seen_ms;                   /* the last look that found the peer */
};

/* Pure: the caller gives the counts and the time. */
struct refused_watch {
	struct refused_peer peers[REFUSED_PEERS_MAX];
	uint32_t n;
	uint64_t threshold, quiet_ms;
};

void refused_watch_init(struct refused_watch *w, uint64_t threshold, uint64_t quiet_ms);
/* One look at one peer's counts (cumulative since the node started); emit
 * runs for each kind over the threshold since the previous look. A peer not
 * seen before counts from 0. When the table is full, the peer seen longest
 * ago makes room. Returns how many emits ran. */
uint32_t refused_watch_step(struct refused_watch *w, const char *peer,
                            const uint64_t counts[REFUSED_KINDS], uint64_t now_ms,
                            void (*emit)(void *arg, const char *peer, const char *kind,
                                         uint64_t rise, uint64_t total),
                            void *arg);

int events_svc_register(struct host *h);

#endif
