/*
 * prom.h - builds the Prometheus text exposition format (version 0.0.4):
 * https://prometheus.io/docs/instrumenting/exposition_formats/
 *
 * A family is declared once (# HELP and # TYPE), then its samples follow.
 * Names follow Prometheus's conventions: chorus_ prefix, base units
 * (_seconds, _bytes), counters end in _total. Label values are escaped
 * (backslash, double quote, newline); a value that is not valid UTF-8 has
 * its bad bytes replaced. Families must not repeat (a second
 * prom_family with a name already used is ignored and counted in
 * p->errors, which the unit tests assert is 0).
 *
 * Labels are given as a NULL-terminated list of name, value pairs:
 *   prom_family(p, "chorus_tasks_total", PROM_COUNTER, "Tasks by final state.");
 *   prom_sample(p, "chorus_tasks_total", 12, "state", "succeeded", NULL);
 *
 * Refused (not written, p->errors incremented): a name or label name that
 * is not a valid Prometheus name, a sample whose name is not the current
 * family's (for a histogram: the family's with _bucket, _sum or _count),
 * a histogram whose bounds do not ascend, a sample before any family.
 * Values: integers print as integers, others in the shortest form that
 * reads back exactly, NaN and +Inf/-Inf as Prometheus spells them.
 *
 * Pure: no I/O. Out of memory sets p->oom (the text is then incomplete and
 * the caller answers an error).
 */
#ifndef CHORUS_LIB_PROM_H
#define CHORUS_LIB_PROM_H

#include <stddef.h>
#include <stdint.h>

enum prom_type { PROM_COUNTER, PROM_GAUGE, PROM_HISTOGRAM };

struct prom {
	char *buf;
	size_t len, cap;
	int oom;
	uint32_t errors;
	/* the families declared so far (their names), to refuse repeats */
	char **names;
	size_t n_names, cap_names;
	/* the family samples go to now: a sample of another family (or
	 * after a refused declaration) is refused and counted in errors,
	 * since the format wants a family's samples together under it */
	const char *cur_name; /* one of names[], NULL = none */
	enum prom_type cur_type;
};

void prom_init(struct prom *p);
void prom_free(struct prom *p);

/* # HELP and # TYPE for name. */
void prom_family(struct prom *p, const char *name, enum prom_type type, const char *help);

/* One sample line: name{labels} value. name is the family's (or, for a
 * histogram, the family's with _bucket/_sum/_count). */
void prom_sample(struct prom *p, const char *name, double value, ...);

/* A whole histogram series of the family `name`: n buckets with upper
 * bounds le[i] (ascending, in the family's unit) and counts[i] the
 * observations in (le[i-1], le[i]] (not cumulative: the builder sums them),
 * plus the +Inf bucket (over = observations above le[n-1]), _sum and
 * _count. Labels as for prom_sample. */
void prom_histogram(struct prom *p, const char *name, const double *le, const uint64_t *counts,
                    size_t n, uint64_t over, double sum, ...);

/* A histogram's counters as a service keeps them between scrapes:
 * counts[i] for (le[i-1], le[i]], counts[n] above le[n-1]. Written with
 *   prom_histogram(p, name, le, h.counts, n, h.counts[n], h.sum, labels...). */
#define PROM_HIST_BUCKETS_MAX 24
struct prom_hist {
	uint64_t counts[PROM_HIST_BUCKETS_MAX + 1];
	double sum;
};
void prom_hist_observe(struct prom_hist *h, const double *le, size_t n, double v);

/* Bounds for durations in seconds, 1 ms .. 5 min (tasks, lateness). */
#define PROM_SECONDS_BUCKETS 16
extern const double prom_seconds_le[PROM_SECONDS_BUCKETS];

/* The text so far (NUL-terminated; "" when empty). */
const char *prom_text(const struct prom *p, size_t *len);

#endif
