/*
 * events.c - the ring of recent cluster events (see events.h).
 */
#include "io/events.h"

#include <stdlib.h>
#include <string.h>

struct subscriber {
	void (*fn)(void *arg, const struct event *e);
	void *arg;
};

struct events {
	struct event *ring;
	uint32_t capacity;
	uint64_t last; /* seq of the newest; 0 = none */
	struct subscriber subs[EVENTS_SUBSCRIBERS_MAX];
};

struct events *events_create(uint32_t capacity)
{
	struct events *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return NULL;
	ev->capacity = capacity ? capacity : EVENTS_RING;
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

uint64_t events_add(struct events *ev, uint64_t wall_ms, const char *kind, const char *subject,
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
