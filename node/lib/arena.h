/*
 * arena.h - a bump allocator for short-lived, many-piece results (the
 * protobuf structs of one status answer): everything is freed at once.
 * Pure. Threading: none.
 */
#ifndef CHORUS_LIB_ARENA_H
#define CHORUS_LIB_ARENA_H

#include <stddef.h>

struct arena_block;
struct arena {
	struct arena_block *head;
};

/* Zeroed memory of n bytes (aligned for any type), or NULL on ENOMEM. */
void *arena_alloc(struct arena *a, size_t n);
char *arena_strdup(struct arena *a, const char *s);
void arena_free(struct arena *a);

#endif
