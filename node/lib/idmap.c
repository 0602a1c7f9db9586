/*
 * idmap.c - open-addressing id map (see idmap.h).
 *
 * Backward-shift deletion (Knuth 6.4, algorithm R) keeps every probe
 * sequence contiguous, so a look-up stops at the first empty slot and the
 * table never fills with tombstones.
 */
#include "lib/idmap.h"

#include <assert.h>
#include <stdlib.h>

#define IDMAP_CAP_MIN 16

static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

void idmap_init(struct idmap *m)
{
	m->slots = NULL;
	m->cap = 0;
	m->count = 0;
}

void idmap_free(struct idmap *m)
{
	free(m->slots);
	idmap_init(m);
}

static struct idmap_slot *find(const struct idmap *m, uint64_t id)
{
	if (!m->cap)
		return NULL;
	uint64_t mask = m->cap - 1;
	for (uint64_t i = mix(id) & mask;; i = (i + 1) & mask) {
		struct idmap_slot *s = &m->slots[i];
		if (s->id == id)
			return s;
		if (s->id == 0)
			return NULL;
	}
}

void *idmap_get(const struct idmap *m, uint64_t id)
{
	assert(id != 0);
	struct idmap_slot *s = find(m, id);
	return s ? s->value : NULL;
}

static void place(struct idmap_slot *slots, uint64_t cap, uint64_t id, void *value)
{
	uint64_t mask = cap - 1;
	uint64_t i = mix(id) & mask;
	while (slots[i].id != 0)
		i = (i + 1) & mask;
	slots[i].id = id;
	slots[i].value = value;
}

static int grow(struct idmap *m)
{
	uint64_t cap = m->cap ? m->cap * 2 : IDMAP_CAP_MIN;
	struct idmap_slot *ns = calloc(cap, sizeof(*ns));
	if (!ns)
		return -1;
	for (uint64_t i = 0; i < m->cap; i++)
		if (m->slots[i].id)
			place(ns, cap, m->slots[i].id, m->slots[i].value);
	free(m->slots);
	m->slots = ns;
	m->cap = cap;
	return 0;
}

int idmap_put(struct idmap *m, uint64_t id, void *value)
{
	assert(id != 0 && value != NULL);
	struct idmap_slot *s = find(m, id);
	if (s) {
		s->value = value;
		return 0;
	}
	if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != 0)
		return -1;
	place(m->slots, m->cap, id, value);
	m->count++;
	return 0;
}

void *idmap_del(struct idmap *m, uint64_t id)
{
	assert(id != 0);
	struct idmap_slot *s = find(m, id);
	if (!s)
		return NULL;
	void *value = s->value;
	uint64_t mask = m->cap - 1;
	uint64_t hole = (uint64_t)(s - m->slots);
	for (uint64_t j = (hole + 1) & mask; m->slots[j].id; j = (j + 1) & mask) {
		uint64_t home = mix(m->slots[j].id) & mask;
		/* move j back into the hole unless its home lies cyclically in
		 * (hole, j]: then the hole is not on its probe path */
		int keep = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
		if (!keep) {
			m->slots[hole] = m->slots[j];
			hole = j;
		}
	}
	m->slots[hole].id = 0;
	m->slots[hole].value = NULL;
	assert(m->count > 0);
	m->count--;
	return value;
}

void idmap_iter_init(const struct idmap *m, struct idmap_iter *it)
{
	/* Start just below an empty slot and walk downwards, cyclically. A
	 * deletion at slot i shifts entries back from the run of slots above
	 * i, which ends at the next empty slot, at the latest at `start`: all
	 * of them were visited already, so nothing is skipped or seen twice. */
	it->start = 0;
	it->step = 0;
	for (uint64_t i = 0; i < m->cap; i++) {
		if (m->slots[i].id == 0) {
			it->start = i;
			break;
		}
	}
}

void *idmap_iter_next(const struct idmap *m, struct idmap_iter *it, uint64_t *id)
{
	while (it->step < m->cap) {
		uint64_t i = (it->start + m->cap - 1 - it->step) & (m->cap - 1);
		it->step++;
		if (m->slots[i].id) {
			if (id)
				*id = m->slots[i].id;
			return m->slots[i].value;
		}
	}
	return NULL;
}
