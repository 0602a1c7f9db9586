/*
 * timerheap.c - binary min-heap of intrusive timers (see timerheap.h).
 */
#include "lib/timerheap.h"

#include <assert.h>
#include <stdlib.h>

void timerheap_init(struct timerheap *h)
{
	h->v = NULL;
	h->count = h->cap = 0;
}

void timerheap_free(struct timerheap *h)
{
	for (uint32_t i = 0; i < h->count; i++)
		h->v[i]->pos = 0;
	free(h->v);
	timerheap_init(h);
}

static void put(struct timerheap *h, uint32_t i, struct timer *t)
{
	h->v[i] = t;
	t->pos = i + 1;
}

static void sift_up(struct timerheap *h, uint32_t i)
{
	struct timer *t = h->v[i];
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;
		if (h->v[parent]->at_ms <= t->at_ms)
			break;
		put(h, i, h->v[parent]);
		i = parent;
	}
	put(h, i, t);
}

static void sift_down(struct timerheap *h, uint32_t i)
{
	struct timer *t = h->v[i];
	for (;;) {
		uint32_t l = 2 * i + 1;
		if (l >= h->count)
			break;
		uint32_t c = l + 1 < h->count && h->v[l + 1]->at_ms < h->v[l]->at_ms ? l + 1 : l;
		if (t->at_ms <= h->v[c]->at_ms)
			break;
		put(h, i, h->v[c]);
		i = c;
	}
	put(h, i, t);
}

int timerheap_reserve(struct timerheap *h, uint32_t n)
{
	if (h->cap >= n)
		return 0;
	uint32_t cap = h->cap ? h->cap : 64;
	while (cap < n)
		cap = cap > UINT32_MAX / 2 ? n : cap * 2;
	struct timer **nv = realloc(h->v, (size_t)cap * sizeof(*nv));
	if (!nv)
		return -1;
	h->v = nv;
	h->cap = cap;
	return 0;
}

int timerheap_set(struct timerheap *h, struct timer *t, uint64_t at_ms)
{
	if (t->pos) {
		assert(t->pos <= h->count && h->v[t->pos - 1] == t);
		uint64_t old = t->at_ms;
		t->at_ms = at_ms;
		if (at_ms < old)
			sift_up(h, t->pos - 1);
		else
			sift_down(h, t->pos - 1);
		return 0;
	}
	if (h->count == h->cap) {
		uint32_t cap = h->cap ? h->cap * 2 : 64;
		struct timer **nv = realloc(h->v, cap * sizeof(*nv));
		if (!nv)
			return -1;
		h->v = nv;
		h->cap = cap;
	}
	t->at_ms = at_ms;
	put(h, h->count++, t);
	sift_up(h, h->count - 1);
	return 0;
}

void timerheap_cancel(struct timerheap *h, struct timer *t)
{
	if (!t->pos)
		return;
	uint32_t i = t->pos - 1;
	assert(i < h->count && h->v[i] == t);
	t->pos = 0;
	h->count--;
	if (i == h->count)
		return;
	struct timer *last = h->v[h->count];
	put(h, i, last);
	if (i > 0 && h->v[(i - 1) / 2]->at_ms > last->at_ms)
		sift_up(h, i);
	else
		sift_down(h, i);
}

struct timer *timerheap_peek(const struct timerheap *h)
{
	return h->count ? h->v[0] : NULL;
}

uint64_t timerheap_next_ms(const struct timerheap *h)
{
	return h->count ? h->v[0]->at_ms : UINT64_MAX;
}

struct timer *timerheap_pop_due(struct timerheap *h, uint64_t now_ms)
{
	if (!h->count || h->v[0]->at_ms > now_ms)
		return NULL;
	struct timer *t = h->v[0];
	timerheap_cancel(h, t);
	return t;
}
