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
 * spaces so a line stays a line); returns its seq. */
uint64_t events_add(struct events *ev, uint64_t wall_ms, const char *kind, const char *subject,
                    const char *message);

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
