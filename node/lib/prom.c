/*
 * prom.c - Prometheus text format builder (see prom.h).
 * Placeholder until the metrics work lands: declares nothing.
 */
#include "lib/prom.h"

#include <stdlib.h>
#include <string.h>

void prom_init(struct prom *p) { memset(p, 0, sizeof(*p)); }
void prom_free(struct prom *p)
{
	for (size_t i = 0; i < p->n_names; i++)
		free(p->names[i]);
	free(p->names);
	free(p->buf);
	memset(p, 0, sizeof(*p));
}
void prom_family(struct prom *p, const char *name, enum prom_type type, const char *help)
{
	(void)p; (void)name; (void)type; (void)help;
}
void prom_sample(struct prom *p, const char *name, double value, ...)
{
	(void)p; (void)name; (void)value;
}
void prom_histogram(struct prom *p, const char *name, const double *le, const uint64_t *counts,
                    size_t n, uint64_t over, double sum, ...)
{
	(void)p; (void)name; (void)le; (void)counts; (void)n; (void)over; (void)sum;
}
const char *prom_text(const struct prom *p, size_t *len)
{
	if (len)
		*len = p->len;
	return p->buf ? p->buf : "";
}
