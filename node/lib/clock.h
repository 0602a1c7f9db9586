/*
 * clock.h - the two times every core is given.
 *
 * The loop reads both clocks once per iteration and hands the pair to every
 * core and service; no core reads a clock itself (ARCHITECTURE.md).
 *   mono_ms  CLOCK_MONOTONIC: every timeout, deadline, backoff, suspicion
 *            and election timer. A step of the wall clock (NTP, an operator's
 *            `date -s`) never moves it, so it cannot expire every deadline
 *            at once.
 *   wall_ms  CLOCK_REALTIME: what users see (submitted/started/finished
 *            times, member "since", cron). May step in either direction.
 */
#ifndef CHORUS_LIB_CLOCK_H
#define CHORUS_LIB_CLOCK_H

#include <stdint.h>

struct now {
	uint64_t mono_ms;
	uint64_t wall_ms;
};

/* Reads both clocks (the shell's only way to get the time). */
struct now clock_read(void);
uint64_t clock_mono_ms(void);
uint64_t clock_wall_ms(void);
/* Monotonic nanoseconds, for measuring short durations (request latency). */
uint64_t clock_mono_ns(void);

#endif
