/*
 * events.c - the ring of recent cluster events (see events.h).
 */
#include "io/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct subscriber {
	void (*fn)(void *arg, const struct event *e);
	void *arg;
};

/* One kind's count in the current wall-clock second. */
struct rate_slot {
	char kind[EVENT_KIND_BYTES]; /* "" = free */
	uint64_t second;             /* wall_ms / 1000 of the count */
	uint32_t count;              /* events of the kind in that second */
	uint64_t left_out;           /* of them, over the rate (not yet summarised) */
};

struct events {
	struct event *ring;
	uint32_t capacity;
	uint64_t last; /* seq of the newest; 0 = none */
	uint32_t rate; /* per kind per second, 0 = none */
	uint64_t suppressed;
	struct rate_slot slots[EVENTS_RATE_KINDS];
	struct subscriber subs[EVENTS_SUBSCRIBERS_MAX];
};

struct events *events_create(uint32_t capacity)
{
	struct events *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return NULL;
	ev->capacity = capacity ? capacity : EVENTS_RING;
	ev->rate = EVENTS_RATE_DEFAULT;
	ev->ring = calloc(ev->capacity, sizeof(*ev->ring));
	if (!ev->ring) {
		free(ev);
		return NULL;
	}
	return ev;
}

void events_destroy(struct events *ev)
{
	if (!ev)
		return;
	free(ev->ring);
	free(ev);
}

/* Copies s into a field of n bytes: cut, control bytes as spaces. */
static void field_set(char *dst, size_t n, const char *s)
{
	size_t i = 0;
	for (; s && s[i] != '\0' && i + 1 < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		dst[i] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
	}
	dst[i] = '\0';
	/* never end in the middle of a UTF-8 sequence: drop a cut one */
	if (s && s[i] != '\0') {
		size_t j = i;
		while (j > 0 && ((unsigned char)dst[j - 1] & 0xc0) == 0x80)
			j--;
		if (j > 0 && ((unsigned char)dst[j - 1] & 0x80)) {
			unsigned char lead = (unsigned char)dst[j - 1];
			size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
			if (i - (j - 1) < need)
				dst[j - 1] = '\0';
		}
	}
}

/* Into the ring, then to the subscribers. */
static uint64_t ring_put(struct events *ev, uint64_t wall_ms, const char *kind, const char *subject,
                         const char *message)
{
	uint64_t seq = ++ev->last;
	struct event *e = &ev->ring[(seq - 1) % ev->capacity];
	e->seq = seq;
	e->wall_ms = wall_ms;
	field_set(e->kind, sizeof(e->kind), kind);
	field_set(e->subject, sizeof(e->subject), subject);
	field_set(e->message, sizeof(e->message), message);
	for (int i = 0; i < EVENTS_SUBSCRIBERS_MAX; i++)
		if (ev->subs[i].fn)
			ev->subs[i].fn(ev->subs[i].arg, e);
	return seq;
}

/* The summary of a second whose events of one kind were cut short. */
static void summarise(struct events *ev, struct rate_slot *r, uint64_t wall_ms)
{
	if (r->left_out == 0)
		return;
	char msg[EVENT_MESSAGE_BYTES];
	snprintf(msg, sizeof(msg),
	         "and %llu more %s event(s) in that second, not recorded (at most %u a second)",
	         (unsigned long long)r->left_out, r->kind, ev->rate);
	r->left_out = 0;
	ring_put(ev, wall_ms, r->kind, "", msg);
}

/* The slot of kind (taking a free one), NULL when the table is full. The
 * kind compared is the one cut to its field, as stored. */
static struct rate_slot *rate_slot(struct events *ev, const char *kind)
{
	char k[EVENT_KIND_BYTES];
	field_set(k, sizeof(k), kind);
	struct rate_slot *free_slot = NULL;
	for (int i = 0; i < EVENTS_RATE_KINDS; i++) {
		if (ev->slots[i].kind[0] == '\0') {
			if (!free_slot)
				free_slot = &ev->slots[i];
		} else if (strcmp(ev->slots[i].kind, k) == 0) {
			return &ev->slots[i];
		}
	}
	if (free_slot) {
		memcpy(free_slot->kind, k, sizeof(k));
		free_slot->second = UINT64_MAX;
	}
	return free_slot;
}

uint64_t events_add(struct events *ev, uint64_t wall_ms, const char *kind, const char *subject,
                    const char *message)
{
	struct rate_slot *r = ev->rate && kind && kind[0] ? rate_slot(ev, kind) : NULL;
	if (r) {
		uint64_t second = wall_ms / 1000;
		/* != rather than >: a wall clock set back starts a new second too */
		if (r->second != second) {
			summarise(ev, r, wall_ms);
			r->second = second;
			r->count = 0;
		}
		if (++r->count > ev->rate) {
			r->left_out++;
			ev->suppressed++;
			return 0;
		}
	}
	return ring_put(ev, wall_ms, kind, subject, message);
}

void events_set_rate(struct events *ev, uint32_t per_sec)
{
	ev->rate = per_sec;
}

uint32_t events_flush(struct events *ev, uint64_t wall_ms)
{
	uint32_t n = 0;
	for (int i = 0; i < EVENTS_RATE_KINDS; i++) {
		struct rate_slot *r = &ev->slots[i];
		if (r->kind[0] && r->left_out && r->second != wall_ms / 1000) {
			summarise(ev, r, wall_ms);
			n++;
		}
	}
	return n;
}

uint64_t events_suppressed(const struct events *ev)
{
	return ev->suppressed;
}

uint64_t events_last_seq(const struct events *ev)
{
	return ev->last;
}

uint64_t events_first_seq(const struct events *ev)
{
	if (ev->last == 0)
		return 0;
	return ev->last > ev->capacity ? ev->last - ev->capacity + 1 : 1;
}

uint32_t events_since(const struct events *ev, uint64_t after, const struct event **out,
                      uint32_t max)
{
	uint64_t first = events_first_seq(ev);
	if (first == 0 || after >= ev->last)
		return 0;
	uint64_t seq = after + 1 < first ? first : after + 1;
	uint32_t n = 0;
	for (; seq <= ev->last && n < max; seq++)
		out[n++] = &ev->ring[(seq - 1) % ev->capacity];
	return n;
}

int events_subscribe(struct events *ev, void (*fn)(void *arg, const struct event *e), void *arg)
{
	for (int i = 0; i < EVENTS_SUBSCRIBERS_MAX; i++) {
		if (!ev->subs[i].fn) {
			ev->subs[i] = (struct subscriber){fn, arg};
			return 0;
		}
	}
	return -1;
}

void events_unsubscribe(struct events *ev, void (*fn)(void *arg, const struct event *e), void *arg)
{
	for (int i = 0; i < EVENTS_SUBSCRIBERS_MAX; i++)
		if (ev->subs[i].fn == fn && ev->subs[i].arg == arg)
			ev->subs[i] = (struct subscriber){0};
}
