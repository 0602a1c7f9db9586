/*
 * timerheap.h - the one timer structure of the node: a binary min-heap of
 * intrusive timers.
 *
 * An owner embeds `struct timer` in its object (a task's timeout, a parked
 * request's deadline, a batch's deadline) and recovers the object from the
 * timer with container_of-style arithmetic. Add, update and remove are
 * O(log n); the earliest timer is O(1). That replaces scanning every running
 * task and batch on each loop iteration.
 *
 * Times are whatever the owner uses (the cores use monotonic milliseconds).
 * Ties pop in no particular order. The heap's array grows by doubling.
 * Pure: no clock, no I/O. Threading: none.
 */
#ifndef CHORUS_LIB_TIMERHEAP_H
#define CHORUS_LIB_TIMERHEAP_H

#include <stddef.h>
#include <stdint.h>

struct timer {
	uint64_t at_ms;
	uint32_t pos; /* 1-based index in the heap; 0 = not armed (calloc'd = idle) */
};

struct timerheap {
	struct timer **v;
	uint32_t count, cap;
};

void timerheap_init(struct timerheap *h);
void timerheap_free(struct timerheap *h); /* the array only; timers are the owners' */

/* Arms t at at_ms, or moves it there if armed. 0, or -1 on ENOMEM (t is
 * then left as it was). */
int timerheap_set(struct timerheap *h, struct timer *t, uint64_t at_ms);
/* Makes room for n armed timers, so that timerheap_set cannot fail while at
 * most n are armed (a core reserves when it admits an owner, where it can
 * still refuse, instead of failing deep inside a state change). 0, or -1
 * on ENOMEM (the heap is unchanged). */
int timerheap_reserve(struct timerheap *h, uint32_t n);
/* Disarms t (no-op when not armed). */
void timerheap_cancel(struct timerheap *h, struct timer *t);
/* The earliest armed timer, or NULL. */
struct timer *timerheap_peek(const struct timerheap *h);
/* Its time, or UINT64_MAX when none is armed. */
uint64_t timerheap_next_ms(const struct timerheap *h);
/* Disarms and returns the earliest timer due at now_ms (at_ms <= now_ms),
 * or NULL. Loop on it to run every due timer. */
struct timer *timerheap_pop_due(struct timerheap *h, uint64_t now_ms);

static inline int timer_armed(const struct timer *t)
{
	return t->pos != 0;
}

#define timer_owner(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#endif
