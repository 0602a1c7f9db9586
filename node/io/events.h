/*
 * events.h - the node's recent cluster events: a bounded ring, newest
 * overwriting oldest, each with a sequence number that only grows while the
 * node runs (it starts again from 1 at a restart; readers tell restarts
 * apart by the node's start time, host_started_wall_ms).
 *
 * Writers: services, through host_event() (svc/service.h). Readers: the
 * events request (`clusterctl events`) and the HTTP service (/api/events
 * and the dashboard), which subscribe to be told of each new event.
 *
 * Threading: loop thread only. Pure: no I/O, the caller gives the time.
 */
#ifndef CHORUS_IO_EVENTS_H
#define CHORUS_IO_EVENTS_H

#include <stdint.h>

#define EVENTS_RING 1024
#define EVENT_KIND_BYTES 24
#define EVENT_SUBJECT_BYTES 128
#define EVENT_MESSAGE_BYTES 256
#define EVENTS_SUBSCRIBERS_MAX 8
/* Default rate limit: events of one kind per wall-clock second (a storm of
 * task failures must not push everything else out of the ring). */
#define EVENTS_RATE_DEFAULT 20
#define EVENTS_RATE_KINDS 16

struct event {
	uint64_t seq;     /* 1, 2, ... */
	uint64_t wall_ms; /* when it was reported */
	char kind[EVENT_KIND_BYTES];       /* "member", "leader", "task_failed", ... */
	char subject[EVENT_SUBJECT_BYTES]; /* a member, task id, pool, schedule */
	char message[EVENT_MESSAGE_BYTES]; /* one line for people */
};

struct events;

/* capacity 0 = EVENTS_RING. NULL when out of memory. */
struct events *events_create(uint32_t capacity);
void events_destroy(struct events *ev);

/* Adds an event (strings cut to their fields, bytes below 0x20 turned to
 * spaces so a line stays a line); returns its seq, or 0 when the kind is
 * over its rate this second (the event is only counted: see events_flush). */
uint64_t events_add(struct events *ev, uint64_t wall_ms, const char *kind, const char *subject,
                    const char *message);

/* At most per_sec events of one kind in one wall-clock second (0: no
 * limit; EVENTS_RATE_DEFAULT after events_create). Kinds beyond
 * EVENTS_RATE_KINDS distinct ones are not limited. */
void events_set_rate(struct events *ev, uint32_t per_sec);

/* For every kind whose limited second is over with events left out: adds
 * one summary event of that kind, subject "", "N more KIND events ...".
 * (The next event of such a kind adds its summary first too.) Call about
 * once a second. Returns how many summaries it added. */
uint32_t events_flush(struct events *ev, uint64_t wall_ms);

/* Events left out by the rate limit since the start. */
uint64_t events_suppressed(const struct events *ev);

/* The oldest held and the newest seq (0, 0 when none yet). */
uint64_t events_first_seq(const struct events *ev);
uint64_t events_last_seq(const struct events *ev);

/* Up to max events with seq > after, oldest first, into out (pointers into
 * the ring: valid until the next events_add). Returns how many. An `after`
 * older than the ring starts at the oldest held (the reader lost some:
 * it can tell from the first seq it gets). */
uint32_t events_since(const struct events *ev, uint64_t after, const struct event **out,
                      uint32_t max);

/* fn(arg, event) runs after each events_add, in subscription order.
 * -1 when EVENTS_SUBSCRIBERS_MAX are taken. */
int events_subscribe(struct events *ev, void (*fn)(void *arg, const struct event *e), void *arg);
void events_unsubscribe(struct events *ev, void (*fn)(void *arg, const struct event *e), void *arg);

#endif
