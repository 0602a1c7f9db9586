/*
 * idmap.h - the one id hash table of the node: uint64 id -> pointer.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), ids spread by the splitmix64 finaliser (ids are mostly
 * sequential). Grows by doubling when 3/4 full, so it serves tables of any
 * size; the caller bounds the number of entries. Id 0 is reserved (empty
 * slot), values may not be NULL.
 *
 * Used for tasks and batches (node/core/tasks.c), sessions (node/io/rpc.c)
 * and placed attempts (node/io/cluster.c). Pure: no I/O, no clock.
 * Threading: none.
 */
#ifndef CHORUS_LIB_IDMAP_H
#define CHORUS_LIB_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct idmap_slot {
	uint64_t id; /* 0 = empty */
	void *value;
};

struct idmap {
	struct idmap_slot *slots;
	uint64_t cap;   /* power of two, 0 before the first put */
	uint64_t count;
};

void idmap_init(struct idmap *m);
void idmap_free(struct idmap *m); /* frees the table, not the values */
/* The value for id, or NULL. */
void *idmap_get(const struct idmap *m, uint64_t id);
/* Inserts or replaces. 0, or -1 on ENOMEM (the map is unchanged). */
int idmap_put(struct idmap *m, uint64_t id, void *value);
/* Removes id; returns its value, or NULL when absent. */
void *idmap_del(struct idmap *m, uint64_t id);
/* Iteration in no particular order: idmap_iter_init, then idmap_iter_next
 * until NULL. Deleting the entry just returned is allowed (every other
 * entry is still returned exactly once); inserting during iteration is not. */
struct idmap_iter {
	uint64_t start, step;
};
void idmap_iter_init(const struct idmap *m, struct idmap_iter *it);
void *idmap_iter_next(const struct idmap *m, struct idmap_iter *it, uint64_t *id);

#endif
