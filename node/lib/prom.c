/*
 * prom.c - Prometheus text format builder (see prom.h).
 *
 * The text grows in one buffer (doubling); once an allocation fails the
 * builder stops writing and sets oom, so a caller checks one flag at the
 * end. Everything a scraper would choke on (a bad name, a sample outside
 * its family, a repeated family, histogram bounds out of order) is refused
 * here and counted, so a bug in one service's metrics() costs its lines,
 * not the whole scrape.
 */
#include "lib/prom.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
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

/* ---- the buffer ---- */

static int reserve(struct prom *p, size_t more)
{
	if (p->oom)
		return -1;
	if (p->len + more + 1 <= p->cap)
		return 0;
	size_t cap = p->cap ? p->cap : 4096;
	while (cap < p->len + more + 1) {
		if (cap > SIZE_MAX / 2) {
			p->oom = 1;
			return -1;
		}
		cap *= 2;
	}
	char *b = realloc(p->buf, cap);
	if (!b) {
		p->oom = 1;
		return -1;
	}
	p->buf = b;
	p->cap = cap;
	return 0;
}

static void put(struct prom *p, const char *s, size_t n)
{
	if (reserve(p, n) != 0)
		return;
	memcpy(p->buf + p->len, s, n);
	p->len += n;
	p->buf[p->len] = '\0';
}

static void puts_(struct prom *p, const char *s) { put(p, s, strlen(s)); }

/* ---- names and values ---- */

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metrics; labels without ':' and not the
 * reserved __ prefix. */
static int name_ok(const char *s, int label)
{
	if (!s || !*s)
		return 0;
	if (label && s[0] == '_' && s[1] == '_')
		return 0;
	for (const char *c = s; *c; c++) {
		int alpha = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_';
		int digit = *c >= '0' && *c <= '9';
		if (!alpha && !(digit && c != s) && !(*c == ':' && !label))
			return 0;
	}
	return 1;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if none:
 * overlongs, surrogates and code points above U+10FFFF are invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned cp, min;
	if (c < 0x80)
		return 1;
	if ((c & 0xE0) == 0xC0) {
		len = 2, cp = c & 0x1F, min = 0x80;
	} else if ((c & 0xF0) == 0xE0) {
		len = 3, cp = c & 0x0F, min = 0x800;
	} else if ((c & 0xF8) == 0xF0) {
		len = 4, cp = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

/* Escapes backslash and newline (and the double quote in label values);
 * invalid UTF-8 bytes become U+FFFD. */
static void put_escaped(struct prom *p, const char *s, int quote)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n = strlen(s);
	size_t i = 0;
	while (i < n) {
		size_t run = i;
		while (run < n && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '\\' &&
		       !(quote && u[run] == '"'))
			run++;
		if (run > i) {
			put(p, s + i, run - i);
			i = run;
			continue;
		}
		unsigned char c = u[i];
		if (c == '\\') {
			puts_(p, "\\\\");
			i++;
		} else if (c == '\n') {
			puts_(p, "\\n");
			i++;
		} else if (c == '"') {
			puts_(p, "\\\"");
			i++;
		} else if (c < 0x80) {
			put(p, s + i, 1); /* other controls are legal, kept as they are */
			i++;
		} else {
			size_t l = utf8_len(u + i, n - i);
			if (l) {
				put(p, s + i, l);
				i += l;
			} else {
				puts_(p, "\xEF\xBF\xBD");
				i++;
			}
		}
	}
}

/* Shortest text that reads back as v; integers without a fraction. */
static void fmt_value(char *out, size_t out_len, double v)
{
	if (isnan(v)) {
		snprintf(out, out_len, "NaN");
	} else if (isinf(v)) {
		snprintf(out, out_len, v > 0 ? "+Inf" : "-Inf");
	} else if (v == floor(v) && fabs(v) < 9007199254740992.0) {
		snprintf(out, out_len, "%.0f", v);
	} else {
		for (int prec = 6; prec <= 17; prec++) {
			snprintf(out, out_len, "%.*g", prec, v);
			if (strtod(out, NULL) == v)
				break;
		}
	}
}

static void put_value(struct prom *p, double v)
{
	char b[40];
	fmt_value(b, sizeof(b), v);
	puts_(p, b);
}

/* {name="value",...} from the NULL-terminated pairs in ap, plus le when
 * given. -1 (nothing written) on a bad label name. */
static int labels_check(va_list ap)
{
	va_list cp;
	va_copy(cp, ap);
	int ok = 1;
	for (const char *k; (k = va_arg(cp, const char *));) {
		const char *v = va_arg(cp, const char *);
		if (!name_ok(k, 1) || strcmp(k, "le") == 0 || !v)
			ok = 0;
	}
	va_end(cp);
	return ok ? 0 : -1;
}

static void put_labels(struct prom *p, va_list ap, const char *le)
{
	va_list cp;
	va_copy(cp, ap);
	int n = 0;
	for (const char *k; (k = va_arg(cp, const char *));) {
		const char *v = va_arg(cp, const char *);
		puts_(p, n++ ? "," : "{");
		puts_(p, k);
		puts_(p, "=\"");
		put_escaped(p, v, 1);
		puts_(p, "\"");
	}
	va_end(cp);
	if (le) {
		puts_(p, n++ ? "," : "{");
		puts_(p, "le=\"");
		puts_(p, le);
		puts_(p, "\"");
	}
	if (n)
		puts_(p, "}");
}

/* ---- families and samples ---- */

static const char *TYPE_NAMES[] = {"counter", "gauge", "histogram"};

void prom_family(struct prom *p, const char *name, enum prom_type type, const char *help)
{
	p->cur_name = NULL;
	if (!name_ok(name, 0) || (unsigned)type > PROM_HISTOGRAM) {
		p->errors++;
		return;
	}
	for (size_t i = 0; i < p->n_names; i++) {
		if (strcmp(p->names[i], name) == 0) {
			p->errors++;
			return;
		}
	}
	if (p->oom)
		return;
	if (p->n_names == p->cap_names) {
		size_t cap = p->cap_names ? p->cap_names * 2 : 64;
		char **v = realloc(p->names, cap * sizeof(*v));
		if (!v) {
			p->oom = 1;
			return;
		}
		p->names = v;
		p->cap_names = cap;
	}
	char *copy = strdup(name);
	if (!copy) {
		p->oom = 1;
		return;
	}
	p->names[p->n_names++] = copy;
	p->cur_name = copy;
	p->cur_type = type;
	puts_(p, "# HELP ");
	puts_(p, name);
	puts_(p, " ");
	put_escaped(p, help ? help : "", 0);
	puts_(p, "\n# TYPE ");
	puts_(p, name);
	puts_(p, " ");
	puts_(p, TYPE_NAMES[type]);
	puts_(p, "\n");
}

/* Whether name is a sample name of the current family. */
static int belongs(const struct prom *p, const char *name)
{
	if (!p->cur_name || !name)
		return 0;
	size_t n = strlen(p->cur_name);
	if (strncmp(name, p->cur_name, n) != 0)
		return 0;
	const char *rest = name + n;
	if (p->cur_type != PROM_HISTOGRAM)
		return *rest == '\0';
	return strcmp(rest, "_bucket") == 0 || strcmp(rest, "_sum") == 0 ||
	       strcmp(rest, "_count") == 0;
}

void prom_sample(struct prom *p, const char *name, double value, ...)
{
	va_list ap;
	va_start(ap, value);
	if (!belongs(p, name) || labels_check(ap) != 0) {
		p->errors++;
	} else {
		puts_(p, name);
		put_labels(p, ap, NULL);
		puts_(p, " ");
		put_value(p, value);
		puts_(p, "\n");
	}
	va_end(ap);
}

void prom_histogram(struct prom *p, const char *name, const double *le, const uint64_t *counts,
                    size_t n, uint64_t over, double sum, ...)
{
	va_list ap;
	va_start(ap, sum);
	int ok = p->cur_name && p->cur_type == PROM_HISTOGRAM && name &&
	         strcmp(name, p->cur_name) == 0 && labels_check(ap) == 0 && (n == 0 || (le && counts));
	for (size_t i = 0; ok && i < n; i++)
		if (!isfinite(le[i]) || (i > 0 && !(le[i] > le[i - 1])))
			ok = 0;
	if (!ok) {
		p->errors++;
		va_end(ap);
		return;
	}
	size_t nl = strlen(name);
	char *sname = malloc(nl + sizeof("_bucket"));
	if (!sname) {
		p->oom = 1;
		va_end(ap);
		return;
	}
	memcpy(sname, name, nl);
	memcpy(sname + nl, "_bucket", sizeof("_bucket"));
	uint64_t cum = 0;
	char b[40];
	for (size_t i = 0; i <= n; i++) {
		cum += i < n ? counts[i] : over;
		if (i < n)
			fmt_value(b, sizeof(b), le[i]);
		else
			snprintf(b, sizeof(b), "+Inf");
		puts_(p, sname);
		put_labels(p, ap, b);
		puts_(p, " ");
		put_value(p, (double)cum);
		puts_(p, "\n");
	}
	memcpy(sname + nl, "_sum", sizeof("_sum"));
	puts_(p, sname);
	put_labels(p, ap, NULL);
	puts_(p, " ");
	put_value(p, sum);
	puts_(p, "\n");
	memcpy(sname + nl, "_count", sizeof("_count"));
	puts_(p, sname);
	put_labels(p, ap, NULL);
	puts_(p, " ");
	put_value(p, (double)cum);
	puts_(p, "\n");
	free(sname);
	va_end(ap);
}

const double prom_seconds_le[PROM_SECONDS_BUCKETS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
};

void prom_hist_observe(struct prom_hist *h, const double *le, size_t n, double v)
{
	if (n > PROM_HIST_BUCKETS_MAX)
		n = PROM_HIST_BUCKETS_MAX;
	size_t b = 0;
	while (b < n && v > le[b])
		b++;
	h->counts[b]++;
	h->sum += v;
}

const char *prom_text(const struct prom *p, size_t *len)
{
	if (len)
		*len = p->len;
	return p->buf ? p->buf : "";
}
