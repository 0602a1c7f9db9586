/*
 * config.c - chorusd settings: defaults, then the INI file (libinih), then
 * environment variables (CHORUS_<FLAG>, for containers), then command-line
 * flags (getopt_long); each source overrides the one before.
 *
 * Owns struct config and the strings it holds (lists of plugins, exec
 * allow entries and pool handlers). Every value is checked where it is
 * read, so an error names its source: "chorus.conf:12: unknown key
 * 'wrkers' in [node]" or "--workers: '0' is out of range 1..256".
 *
 * Subtle parts:
 *  - inih does not tell the handler which line it is on, and its return
 *    value is only the first bad line. We feed it through our own line
 *    reader (ini_parse_stream), which counts lines, so handler errors carry
 *    their own line; a syntax error inih found earlier wins.
 *  - inih's line buffer is fixed (200 bytes in Debian's build); the reader
 *    refuses a longer line instead of letting inih split it silently.
 *  - --config is found in a first getopt pass, so the file is applied
 *    before every other flag wherever --config appears on the line.
 *  - Repeatable flags (--plugin, --exec-allow) replace the file's list on
 *    first use and append after; --pool NAME replaces that pool only.
 *  - The environment is read through the flag table: --data-dir is
 *    CHORUS_DATA_DIR, and a variable goes through the same code as its
 *    flag, so the two cannot disagree on what a value means. CHORUS_CONFIG
 *    names the file when --config does not. An empty variable is unset (a
 *    compose file's `CHORUS_SEEDS: ${SEEDS:-}`); --pool has no variable (its
 *    value holds commas, the list separator).
 *  - A wildcard listen address (tcp://0.0.0.0:P, tcp://[::]:P) cannot be
 *    reached by other nodes, so unless --advertise is given the node
 *    advertises tcp://HOSTNAME:P: in a container the host name is one that
 *    the container network resolves (each replica's own), see
 *    docs/deploy.md. A name that does not resolve here, or resolves to
 *    loopback only (Debian's 127.0.1.1) while a seed is elsewhere, is
 *    likely not one other hosts can dial: config_advertise_risk says so,
 *    for a WARN at start, without refusing (we cannot see their resolver).
 */
#include "config.h"

#include "core/raft.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chorus.h"
#include "io/log.h"
#include "io/store.h"

#define CONFIG_WORKERS_MAX 256
#define CONFIG_PREFETCH_MAX 64
#define CONFIG_NAMED_POOLS_MAX (CONFIG_POOLS_MAX - 1) /* the default pool is one more */
#define CONFIG_POOL_NAME_BYTES_MAX 31
#define CONFIG_FRAME_BYTES_MIN ((size_t)1 << 10)
#define CONFIG_FRAME_BYTES_MAX ((size_t)1 << 30)
#define CONFIG_OUTPUT_BYTES_MAX ((size_t)1 << 30)
#define CONFIG_ATTEMPTS_MAX 1000
#define CONFIG_INTENSITY_MAX 100000
/* The node purges at now - result_ttl: a TTL beyond the epoch would wrap. */
#define CONFIG_RESULT_TTL_MS_MAX (3650ull * 24 * 60 * 60 * 1000)
#define CONFIG_WHY_BYTES 200

/* ---- value parsers ---- */

/* Decimal digits only (no sign, no spaces); 0 or -1 (empty, junk, overflow). */
static int parse_digits(const char *s, const char **end, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;
	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		uint64_t d = (uint64_t)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*end = p;
	*out = v;
	return 0;
}

int config_parse_duration_ms(const char *s, uint64_t *ms)
{
	if (!s)
		return -1;
	const char *end;
	uint64_t v, mult;
	if (parse_digits(s, &end, &v) != 0)
		return -1;
	if (*end == '\0' || strcmp(end, "ms") == 0)
		mult = 1;
	else if (strcmp(end, "s") == 0)
		mult = 1000;
	else if (strcmp(end, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		mult = 60 * 60 * 1000;
	else
		return -1;
	if (v > UINT64_MAX / mult)
		return -1;
	*ms = v * mult;
	return 0;
}

int config_parse_size(const char *s, size_t *bytes)
{
	if (!s)
		return -1;
	const char *end;
	uint64_t v;
	unsigned shift;
	if (parse_digits(s, &end, &v) != 0)
		return -1;
	if (*end == '\0')
		shift = 0;
	else if (end[1] != '\0')
		return -1;
	else if (*end == 'k' || *end == 'K')
		shift = 10;
	else if (*end == 'm' || *end == 'M')
		shift = 20;
	else if (*end == 'g' || *end == 'G')
		shift = 30;
	else
		return -1;
	if (v > (UINT64_MAX >> shift) || (v << shift) > SIZE_MAX)
		return -1;
	*bytes = (size_t)(v << shift);
	return 0;
}

int config_parse_hostport(const char *s, char *host, size_t host_len, uint16_t *port)
{
	if (!s || !*s)
		return -1;
	const char *colon;
	const char *h = s;
	size_t hn;
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -1;
		h = s + 1;
		hn = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || memchr(s, ':', (size_t)(colon - s)))
			return -1; /* an IPv6 address needs its brackets */
		hn = (size_t)(colon - s);
	}
	if (hn == 0 || hn >= host_len)
		return -1;
	for (size_t i = 0; i < hn; i++)
		if (h[i] == ' ' || h[i] == '\t' || h[i] == '/' || h[i] == '[' || h[i] == ']')
			return -1;
	const char *end;
	uint64_t p;
	if (parse_digits(colon + 1, &end, &p) != 0 || *end != '\0' || p < 1 || p > 65535)
		return -1;
	memcpy(host, h, hn);
	host[hn] = '\0';
	*port = (uint16_t)p;
	return 0;
}

int config_host_is_loopback(const char *host)
{
	if (strcmp(host, "localhost") == 0)
		return 1;
	struct in_addr a4;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	struct in6_addr a6;
	if (inet_pton(AF_INET6, host, &a6) == 1) {
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (memcmp(a6.s6_addr, mapped, 12) == 0)
			return a6.s6_addr[12] == 127;
		static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
		return memcmp(a6.s6_addr, one, 16) == 0;
	}
	return 0;
}

/* Pretty forms for --help: "1h", "10s", "250ms", "16M". */
static void fmt_duration(char *buf, size_t len, uint64_t ms)
{
	if (ms == 0)
		snprintf(buf, len, "0");
	else if (ms % 3600000 == 0)
		snprintf(buf, len, "%lluh", (unsigned long long)(ms / 3600000));
	else if (ms % 60000 == 0)
		snprintf(buf, len, "%llum", (unsigned long long)(ms / 60000));
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(buf, len, "%llums", (unsigned long long)ms);
}

static void fmt_size(char *buf, size_t len, size_t bytes)
{
	static const char units[] = {'G', 'M', 'k'};
	for (int i = 0; i < 3; i++) {
		size_t unit = (size_t)1 << (10 * (3 - i));
		if (bytes >= unit && bytes % unit == 0) {
			snprintf(buf, len, "%zu%c", bytes / unit, units[i]);
			return;
		}
	}
	snprintf(buf, len, "%zu", bytes);
}

static int why(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int why(char *buf, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, CONFIG_WHY_BYTES, fmt, ap);
	va_end(ap);
	return -1;
}

static int set_u32(const char *v, uint32_t lo, uint32_t hi, uint32_t *out, char *w)
{
	const char *end;
	uint64_t n;
	if (parse_digits(v, &end, &n) != 0 || *end != '\0')
		return why(w, "'%s' is not a number", v);
	if (n < lo || n > hi)
		return why(w, "'%s' is out of range %u..%u", v, lo, hi);
	*out = (uint32_t)n;
	return 0;
}

static int set_duration(const char *v, uint64_t lo, uint64_t hi, uint64_t *out, char *w)
{
	uint64_t ms = 0;
	if (config_parse_duration_ms(v, &ms) != 0)
		return why(w, "'%s' is not a duration (e.g. 250ms, 5s, 2m, 1h)", v);
	if (ms < lo || ms > hi)
		return why(w, "'%s' is out of range %llums..%llums", v, (unsigned long long)lo,
			   (unsigned long long)hi);
	*out = ms;
	return 0;
}

static int set_duration32(const char *v, uint64_t lo, uint32_t *out, char *w)
{
	uint64_t ms = 0;
	if (set_duration(v, lo, UINT32_MAX, &ms, w) != 0)
		return -1;
	*out = (uint32_t)ms;
	return 0;
}

static int set_size(const char *v, size_t lo, size_t hi, size_t *out, char *w)
{
	size_t n = 0;
	if (config_parse_size(v, &n) != 0)
		return why(w, "'%s' is not a size (e.g. 512, 64k, 16M, 1G)", v);
	if (n < lo || n > hi) {
		char a[32], b[32];
		fmt_size(a, sizeof(a), lo);
		fmt_size(b, sizeof(b), hi);
		return why(w, "'%s' is out of range %s..%s", v, a, b);
	}
	*out = n;
	return 0;
}

static int set_string(const char *v, char *dst, size_t cap, int empty_ok, char *w)
{
	size_t n = strlen(v);
	if (n == 0 && !empty_ok)
		return why(w, "must not be empty");
	if (n >= cap)
		return why(w, "longer than %zu bytes", cap - 1);
	memcpy(dst, v, n + 1);
	return 0;
}

static int name_ok(const char *s, size_t max, const char *extra)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return 0;
	for (const char *p = s; *p; p++) {
		int c = (unsigned char)*p;
		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr(extra, c))
			continue;
		return 0;
	}
	return 1;
}

static int set_listen(const char *v, char *dst, size_t cap, char *w)
{
	static const char *const schemes[] = {"tcp://", "ipc://", "inproc://"};
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		size_t n = strlen(schemes[i]);
		if (strncmp(v, schemes[i], n) == 0 && v[n] != '\0')
			return set_string(v, dst, cap, 0, w);
	}
	return why(w, "'%s' is not a tcp://, ipc:// or inproc:// address", v);
}

/* ---- lists ---- */

static void list_free(char **items, uint32_t *count)
{
	for (uint32_t i = 0; i < *count; i++) {
		free(items[i]);
		items[i] = NULL;
	}
	*count = 0;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = '\0';
	return s;
}

enum list_kind { LIST_PLAIN, LIST_ABSOLUTE_PATH };

/* Appends the comma-separated entries of v to items (leaving one NULL slot
 * at the end). On error nothing is appended. */
static int list_append(const char *v, char **items, uint32_t *count, enum list_kind kind, char *w)
{
	char *copy = strdup(v);
	if (!copy)
		return why(w, "out of memory");
	uint32_t added = 0;
	int rc = 0;
	char *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *item = trim(tok);
		if (*item == '\0') {
			rc = why(w, "empty entry in list '%s'", v);
			break;
		}
		if (kind == LIST_ABSOLUTE_PATH && item[0] != '/') {
			rc = why(w, "'%s' is not an absolute path", item);
			break;
		}
		if (strlen(item) >= CONFIG_PATH_MAX) {
			rc = why(w, "'%.40s...' is longer than %d bytes", item, CONFIG_PATH_MAX - 1);
			break;
		}
		if (*count + added >= CONFIG_LIST_MAX - 1) {
			rc = why(w, "more than %d entries", CONFIG_LIST_MAX - 1);
			break;
		}
		char *dup = strdup(item);
		if (!dup) {
			rc = why(w, "out of memory");
			break;
		}
		items[*count + added++] = dup;
	}
	free(copy);
	if (rc != 0) {
		for (uint32_t i = 0; i < added; i++) {
			free(items[*count + i]);
			items[*count + i] = NULL;
		}
		return rc;
	}
	*count += added;
	items[*count] = NULL;
	return 0;
}

/* Replaces a list with the entries of v ("" clears it). */
static int list_set(const char *v, char **items, uint32_t *count, enum list_kind kind, char *w)
{
	char *fresh[CONFIG_LIST_MAX] = {0};
	uint32_t fresh_count = 0;
	if (list_append(v, fresh, &fresh_count, kind, w) != 0)
		return -1;
	list_free(items, count);
	memcpy(items, fresh, sizeof(fresh));
	*count = fresh_count;
	return 0;
}

/* ---- pools ---- */

static struct config_pool *pool_find(struct config *c, const char *name)
{
	for (uint32_t i = 0; i < c->pool_count; i++)
		if (strcmp(c->pools[i].name, name) == 0)
			return &c->pools[i];
	return NULL;
}

static struct config_pool *pool_get(struct config *c, const char *name, char *w)
{
	if (!name_ok(name, CONFIG_POOL_NAME_BYTES_MAX, "_-")) {
		why(w, "pool name '%s' is not 1..%d of [a-z0-9_-]", name, CONFIG_POOL_NAME_BYTES_MAX);
		return NULL;
	}
	if (strcmp(name, "default") == 0) {
		why(w, "pool name 'default' is reserved (the default pool is sized by workers)");
		return NULL;
	}
	struct config_pool *p = pool_find(c, name);
	if (p)
		return p;
	if (c->pool_count >= CONFIG_NAMED_POOLS_MAX) {
		why(w, "more than %d pools", CONFIG_NAMED_POOLS_MAX);
		return NULL;
	}
	p = &c->pools[c->pool_count++];
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->workers = 1;
	return p;
}

/* Sets a pool's handlers; a handler may be in one pool only. */
static int pool_set_handlers(struct config *c, struct config_pool *pool, const char *v, char *w)
{
	char *fresh[CONFIG_LIST_MAX] = {0};
	uint32_t n = 0;
	if (list_append(v, fresh, &n, LIST_PLAIN, w) != 0)
		return -1;
	int rc = 0;
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		for (uint32_t j = 0; j < i; j++)
			if (strcmp(fresh[i], fresh[j]) == 0)
				rc = why(w, "handler '%s' listed twice", fresh[i]);
		for (uint32_t p = 0; p < c->pool_count && rc == 0; p++) {
			struct config_pool *other = &c->pools[p];
			if (other == pool)
				continue;
			for (uint32_t h = 0; h < other->handler_count; h++)
				if (strcmp(other->handlers[h], fresh[i]) == 0)
					rc = why(w, "handler '%s' is already in pool '%s'", fresh[i],
						 other->name);
		}
	}
	if (rc != 0) {
		list_free(fresh, &n);
		return rc;
	}
	list_free(pool->handlers, &pool->handler_count);
	memcpy(pool->handlers, fresh, sizeof(fresh));
	pool->handler_count = n;
	return 0;
}

/* ---- the keys ---- */

static int set_node_key(struct config *c, const char *name, const char *v, char *w)
{
	if (strcmp(name, "name") == 0) {
		if (!name_ok(v, sizeof(c->name) - 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ._-"))
			return why(w, "'%s' is not 1..%zu of [A-Za-z0-9._-]", v, sizeof(c->name) - 1);
		return set_string(v, c->name, sizeof(c->name), 0, w);
	}
	if (strcmp(name, "listen") == 0)
		return set_listen(v, c->listen, sizeof(c->listen), w);
	if (strcmp(name, "data_dir") == 0)
		return set_string(v, c->data_dir, sizeof(c->data_dir), 0, w);
	if (strcmp(name, "secret") == 0)
		return set_string(v, c->secret_file, sizeof(c->secret_file), 1, w);
	if (strcmp(name, "workers") == 0)
		return set_u32(v, 1, CONFIG_WORKERS_MAX, &c->workers, w);
	if (strcmp(name, "prefetch") == 0)
		return set_u32(v, 1, CONFIG_PREFETCH_MAX, &c->prefetch, w);
	if (strcmp(name, "log_level") == 0) {
		int l = log_level_parse(v);
		if (l < 0)
			return why(w, "'%s' is not one of debug, info, warn, error", v);
		c->log_level = l;
		return 0;
	}
	if (strcmp(name, "log_format") == 0) {
		if (strcmp(v, "text") == 0)
			c->log_json = 0;
		else if (strcmp(v, "json") == 0)
			c->log_json = 1;
		else
			return why(w, "'%s' is not one of text, json", v);
		return 0;
	}
	if (strcmp(name, "synchronous") == 0) {
		int s = store_sync_parse(v);
		if (s < 0)
			return why(w, "'%s' is not one of off, normal, full, extra", v);
		c->synchronous = s;
		return 0;
	}
	if (strcmp(name, "journal_check") == 0) {
		if (strcmp(v, "on") == 0)
			c->journal_check = 1;
		else if (strcmp(v, "off") == 0)
			c->journal_check = 0;
		else
			return why(w, "'%s' is not one of on, off", v);
		return 0;
	}
	if (strcmp(name, "frame_bytes_max") == 0)
		return set_size(v, CONFIG_FRAME_BYTES_MIN, CONFIG_FRAME_BYTES_MAX, &c->frame_bytes_max, w);
	if (strcmp(name, "result_ttl") == 0)
		return set_duration(v, 0, CONFIG_RESULT_TTL_MS_MAX, &c->result_ttl_ms, w);
	if (strcmp(name, "queue_max") == 0)
		return set_u32(v, 1, UINT32_MAX, &c->queue_max, w);
	if (strcmp(name, "default_timeout") == 0)
		return set_duration32(v, 0, &c->default_timeout_ms, w);
	if (strcmp(name, "shutdown_grace") == 0)
		return set_duration32(v, 0, &c->shutdown_grace_ms, w);
	if (strcmp(name, "plugins") == 0)
		return list_set(v, c->plugins, &c->plugin_count, LIST_PLAIN, w);
	return why(w, "unknown key '%s' in [node]", name);
}

static int set_tasks_key(struct config *c, const char *name, const char *v, char *w)
{
	if (strcmp(name, "max_attempts") == 0)
		return set_u32(v, 1, CONFIG_ATTEMPTS_MAX, &c->max_attempts, w);
	if (strcmp(name, "backoff") == 0)
		return set_duration32(v, 0, &c->backoff_ms, w);
	if (strcmp(name, "backoff_max") == 0)
		return set_duration32(v, 0, &c->backoff_max_ms, w);
	if (strcmp(name, "output_max") == 0)
		return set_size(v, 1, CONFIG_OUTPUT_BYTES_MAX, &c->output_max, w);
	return why(w, "unknown key '%s' in [tasks]", name);
}

static int set_supervisor_key(struct config *c, const char *name, const char *v, char *w)
{
	if (strcmp(name, "intensity") == 0)
		return set_u32(v, 0, CONFIG_INTENSITY_MAX, &c->intensity, w);
	if (strcmp(name, "period") == 0)
		return set_duration32(v, 1, &c->period_ms, w);
	return why(w, "unknown key '%s' in [supervisor]", name);
}

/* Tags: [a-z0-9_.:-]{1,31}, at most CONFIG_TAGS_MAX, no duplicates. */
static int set_tags(struct config *c, const char *v, char *w)
{
	char *fresh[CONFIG_LIST_MAX] = {0};
	uint32_t n = 0;
	if (*v && list_append(v, fresh, &n, LIST_PLAIN, w) != 0)
		return -1;
	int rc = 0;
	if (n > CONFIG_TAGS_MAX)
		rc = why(w, "more than %d tags", CONFIG_TAGS_MAX);
	for (uint32_t i = 0; i < n && rc == 0; i++) {
		if (!name_ok(fresh[i], 31, "_.:-"))
			rc = why(w, "tag '%s' is not 1..31 of [a-z0-9_.:-]", fresh[i]);
		for (uint32_t j = 0; j < i && rc == 0; j++)
			if (strcmp(fresh[i], fresh[j]) == 0)
				rc = why(w, "tag '%s' listed twice", fresh[i]);
	}
	if (rc != 0) {
		list_free(fresh, &n);
		return rc;
	}
	list_free(c->tags, &c->tag_count);
	memcpy(c->tags, fresh, sizeof(c->tags));
	c->tag_count = n;
	return 0;
}

static int set_cluster_key(struct config *c, const char *name, const char *v, char *w)
{
	if (strcmp(name, "seeds") == 0) {
		char *fresh[CONFIG_LIST_MAX] = {0};
		uint32_t n = 0;
		if (*v && list_append(v, fresh, &n, LIST_PLAIN, w) != 0)
			return -1;
		for (uint32_t i = 0; i < n; i++) {
			char tmp[256];
			if (set_listen(fresh[i], tmp, sizeof(tmp), w) != 0) {
				list_free(fresh, &n);
				return -1;
			}
		}
		if (n > 16) {
			list_free(fresh, &n);
			return why(w, "more than 16 seeds");
		}
		list_free(c->seeds, &c->seed_count);
		memcpy(c->seeds, fresh, sizeof(fresh));
		c->seed_count = n;
		return 0;
	}
	if (strcmp(name, "tags") == 0)
		return set_tags(c, v, w);
	if (strcmp(name, "advertise") == 0) {
		if (*v == '\0') {
			c->advertise[0] = '\0';
			return 0;
		}
		return set_listen(v, c->advertise, sizeof(c->advertise), w);
	}
	if (strcmp(name, "gossip_period") == 0) {
		uint64_t ms = 0;
		if (set_duration(v, 20, 60000, &ms, w) != 0)
			return -1;
		c->gossip_period_ms = (uint32_t)ms;
		return 0;
	}
	if (strcmp(name, "probe_timeout") == 0)
		return set_duration32(v, 0, &c->probe_timeout_ms, w);
	if (strcmp(name, "reap_after") == 0)
		return set_duration32(v, 1000, &c->reap_after_ms, w);
	if (strcmp(name, "voters") == 0) {
		char *fresh[CONFIG_LIST_MAX] = {0};
		uint32_t n = 0;
		if (*v && list_append(v, fresh, &n, LIST_PLAIN, w) != 0)
			return -1;
		int rc = 0;
		if (n > 9)
			rc = why(w, "voters: at most 9 (Raft voters)");
		for (uint32_t i = 0; i < n && rc == 0; i++)
			for (uint32_t j = 0; j < i && rc == 0; j++)
				if (strcmp(fresh[i], fresh[j]) == 0)
					rc = why(w, "voters: '%s' listed twice", fresh[i]);
		if (rc != 0) {
			list_free(fresh, &n);
			return rc;
		}
		list_free(c->voters, &c->voter_count);
		memcpy(c->voters, fresh, sizeof(fresh));
		c->voter_count = n;
		return 0;
	}
	if (strcmp(name, "voters_target") == 0)
		return set_u32(v, 1, 9, &c->voters_target, w);
	if (strcmp(name, "election_timeout") == 0) {
		uint64_t ms = 0;
		if (set_duration(v, 50, 60000, &ms, w) != 0)
			return -1;
		c->election_timeout_ms = (uint32_t)ms;
		return 0;
	}
	if (strcmp(name, "raft_snapshot_entries") == 0)
		return set_u32(v, 16, RAFT_LOG_ENTRIES_MAX / 2, &c->raft_snapshot_entries, w);
	if (strcmp(name, "voter_dead") == 0) {
		uint64_t ms = 0;
		if (set_duration(v, 1000, 86400000, &ms, w) != 0)
			return -1;
		c->voter_dead_ms = (uint32_t)ms;
		return 0;
	}
	if (strcmp(name, "bootstrap") == 0) {
		if (strcmp(v, "on") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
			c->bootstrap = 1;
		else if (strcmp(v, "off") == 0 || strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
			c->bootstrap = 0;
		else
			return why(w, "bootstrap: on or off, not '%s'", v);
		return 0;
	}
	return why(w, "unknown key '%s' in [cluster]", name);
}

static struct config_cache *cache_get(struct config *c, const char *name, char *w)
{
	if (!name_ok(name, CONFIG_CACHE_NAME_BYTES_MAX, "_-.")) {
		why(w, "cache name '%s' is not 1..%d of [a-z0-9_-.]", name, CONFIG_CACHE_NAME_BYTES_MAX);
		return NULL;
	}
	for (uint32_t i = 0; i < c->cache_count; i++)
		if (strcmp(c->caches[i].name, name) == 0)
			return &c->caches[i];
	if (c->cache_count >= CONFIG_CACHES_MAX) {
		why(w, "more than %d caches", CONFIG_CACHES_MAX);
		return NULL;
	}
	struct config_cache *k = &c->caches[c->cache_count++];
	memset(k, 0, sizeof(*k));
	snprintf(k->name, sizeof(k->name), "%s", name);
	k->db = -1;
	k->consistency = 2;
	return k;
}

static int set_consistency(const char *v, int *out, char *w)
{
	if (strcmp(v, "one") == 0)
		*out = 1;
	else if (strcmp(v, "quorum") == 0)
		*out = 2;
	else if (strcmp(v, "all") == 0)
		*out = 3;
	else
		return why(w, "consistency: one, quorum or all, not '%s'", v);
	return 0;
}

/* [cache] persist: off, on (DATA_DIR/cache.db) or an absolute path. A
 * relative path would depend on the directory chorusd was started from. */
static int set_cache_persist(struct config *c, const char *v, char *w)
{
	if (strcmp(v, "off") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0 ||
	    strcmp(v, "0") == 0) {
		c->cache_persist = 0;
		c->cache_persist_path[0] = '\0';
		return 0;
	}
	if (strcmp(v, "on") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
	    strcmp(v, "1") == 0) {
		c->cache_persist = 1;
		c->cache_persist_path[0] = '\0';
		return 0;
	}
	size_t n = strlen(v);
	if (v[0] != '/' || v[n - 1] == '/')
		return why(w, "persist: off, on or the absolute path of the snapshot file, not '%s'", v);
	/* the snapshot is written beside it as PATH.tmp, a bad one kept as PATH.bad-MS */
	if (n + 32 >= sizeof(c->cache_persist_path))
		return why(w, "persist: the path is longer than %zu bytes",
		           sizeof(c->cache_persist_path) - 33);
	memcpy(c->cache_persist_path, v, n + 1);
	c->cache_persist = 1;
	return 0;
}

static int set_cache_key(struct config *c, const char *section, const char *name, const char *v,
                         char *w)
{
	if (strcmp(section, "cache") == 0) {
		if (strcmp(name, "partitions") == 0)
			return set_u32(v, 1, 65535, &c->cache_partitions, w);
		if (strcmp(name, "replicas") == 0)
			return set_u32(v, 1, 8, &c->cache_replicas, w);
		if (strcmp(name, "memory_max") == 0)
			return set_size(v, 1 << 20, (size_t)1 << 40, &c->cache_memory_max, w);
		if (strcmp(name, "key_bytes_max") == 0)
			return set_size(v, 16, 1 << 20, &c->cache_key_bytes_max, w);
		if (strcmp(name, "value_bytes_max") == 0)
			return set_size(v, 16, 64u << 20, &c->cache_value_bytes_max, w);
		if (strcmp(name, "timeout") == 0)
			return set_duration32(v, 10, &c->cache_timeout_ms, w);
		if (strcmp(name, "persist") == 0)
			return set_cache_persist(c, v, w);
		if (strcmp(name, "persist_interval") == 0) {
			uint64_t ms = 0;
			if (set_duration(v, 0, CONFIG_PERSIST_INTERVAL_MS_MAX, &ms, w) != 0)
				return -1;
			if (ms != 0 && ms < CONFIG_PERSIST_INTERVAL_MS_MIN)
				return why(w, "persist_interval: 0 (at shutdown only) or at least %ums, "
				              "not '%s'", CONFIG_PERSIST_INTERVAL_MS_MIN, v);
			c->cache_persist_interval_ms = ms;
			return 0;
		}
		if (strcmp(name, "persist_stop_timeout") == 0)
			return set_duration(v, CONFIG_PERSIST_STOP_TIMEOUT_MS_MIN,
			                    CONFIG_PERSIST_STOP_TIMEOUT_MS_MAX,
			                    &c->cache_persist_stop_timeout_ms, w);
		if (strcmp(name, "compute_max") == 0)
			return set_u32(v, 1, 65536, &c->cache_compute_max, w);
		if (strcmp(name, "compute_waiters_max") == 0)
			return set_u32(v, 1, 65536, &c->cache_compute_waiters_max, w);
		return why(w, "unknown key '%s' in [cache]", name);
	}
	char cname[64];
	snprintf(cname, sizeof(cname), "%s", section + 6);
	struct config_cache *k = cache_get(c, trim(cname), w);
	if (!k)
		return -1;
	if (strcmp(name, "db") == 0) {
		uint32_t db = 0;
		if (set_u32(v, 0, 1023, &db, w) != 0)
			return -1;
		k->db = (int32_t)db;
		return 0;
	}
	if (strcmp(name, "ttl") == 0)
		return set_duration(v, 0, 10ull * 365 * 86400 * 1000, &k->ttl_ms, w);
	if (strcmp(name, "memory_max") == 0)
		return set_size(v, 1 << 20, (size_t)1 << 40, &k->memory_max, w);
	if (strcmp(name, "entries_max") == 0) {
		uint32_t n = 0;
		if (set_u32(v, 1, UINT32_MAX, &n, w) != 0)
			return -1;
		k->entries_max = n;
		return 0;
	}
	if (strcmp(name, "touch_on_read") == 0) {
		if (strcmp(v, "on") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
			k->touch_on_read = 1;
		else if (strcmp(v, "off") == 0 || strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
			k->touch_on_read = 0;
		else
			return why(w, "touch_on_read: on or off, not '%s'", v);
		return 0;
	}
	if (strcmp(name, "consistency") == 0)
		return set_consistency(v, &k->consistency, w);
	return why(w, "unknown key '%s' in [%s]", name, section);
}

static int set_bool(const char *v, int *out, char *w)
{
	if (strcmp(v, "true") == 0 || strcmp(v, "on") == 0 || strcmp(v, "yes") == 0 ||
	    strcmp(v, "1") == 0)
		*out = 1;
	else if (strcmp(v, "false") == 0 || strcmp(v, "off") == 0 || strcmp(v, "no") == 0 ||
	         strcmp(v, "0") == 0)
		*out = 0;
	else
		return why(w, "'%s' is not one of true, false", v);
	return 0;
}

static int set_resp_key(struct config *c, const char *name, const char *v, char *w)
{
	struct config_resp *r = &c->resp;
	if (strcmp(name, "listen") == 0) {
		char host[256];
		uint16_t port;
		if (*v == '\0') {
			r->listen[0] = '\0'; /* off */
			return 0;
		}
		if (config_parse_hostport(v, host, sizeof(host), &port) != 0)
			return why(w, "'%s' is not HOST:PORT (e.g. 127.0.0.1:6380, [::1]:6380)", v);
		return set_string(v, r->listen, sizeof(r->listen), 0, w);
	}
	if (strcmp(name, "password") == 0)
		return set_string(v, r->password, sizeof(r->password), 1, w);
	if (strcmp(name, "password_file") == 0)
		return set_string(v, r->password_file, sizeof(r->password_file), 1, w);
	if (strcmp(name, "allow_open") == 0)
		return set_bool(v, &r->allow_open, w);
	if (strcmp(name, "max_clients") == 0)
		return set_u32(v, 1, CONFIG_RESP_CLIENTS_MAX, &r->clients_max, w);
	if (strcmp(name, "bulk_bytes_max") == 0)
		return set_size(v, 16, (size_t)1 << 30, &r->bulk_bytes_max, w);
	if (strcmp(name, "multibulk_count_max") == 0)
		return set_u32(v, 1, INT32_MAX, &r->multibulk_count_max, w);
	if (strcmp(name, "query_bytes_max") == 0)
		return set_size(v, 1024, (size_t)4 << 30, &r->query_bytes_max, w);
	if (strcmp(name, "inline_bytes_max") == 0)
		return set_size(v, 64, (size_t)64 << 20, &r->inline_bytes_max, w);
	if (strcmp(name, "output_bytes_max") == 0)
		return set_size(v, 1024, (size_t)4 << 30, &r->output_bytes_max, w);
	if (strcmp(name, "idle_timeout") == 0)
		return set_duration32(v, 0, &r->idle_timeout_ms, w);
	return why(w, "unknown key '%s' in [resp]", name);
}

static int set_http_key(struct config *c, const char *name, const char *v, char *w)
{
	struct config_http *hc = &c->http;
	if (strcmp(name, "listen") == 0) {
		char host[256];
		uint16_t port;
		if (*v == '\0') {
			hc->listen[0] = '\0'; /* off */
			return 0;
		}
		if (config_parse_hostport(v, host, sizeof(host), &port) != 0)
			return why(w, "'%s' is not HOST:PORT (e.g. 127.0.0.1:7480, [::1]:7480)", v);
		return set_string(v, hc->listen, sizeof(hc->listen), 0, w);
	}
	if (strcmp(name, "auth") == 0) {
		if (strcmp(v, "open") == 0)
			hc->auth_all = 0;
		else if (strcmp(v, "all") == 0)
			hc->auth_all = 1;
		else
			return why(w, "'%s' is not one of open, all", v);
		return 0;
	}
	if (strcmp(name, "request_timeout") == 0)
		return set_duration32(v, 100, &hc->request_timeout_ms, w);
	if (strcmp(name, "max_connections") == 0)
		return set_u32(v, 1, CONFIG_HTTP_CONNECTIONS_MAX, &hc->connections_max, w);
	return why(w, "unknown key '%s' in [http]", name);
}

/* [http] as a whole: reading is open only on loopback, so a listener other
 * hosts can reach must ask every request for the token. */
static int http_check(const struct config_http *hc, char *w)
{
	if (!hc->listen[0])
		return 0;
	char host[256];
	uint16_t port;
	if (config_parse_hostport(hc->listen, host, sizeof(host), &port) != 0)
		return why(w, "http listen '%s' is not HOST:PORT", hc->listen);
	if (!config_host_is_loopback(host) && !hc->auth_all)
		return why(w, "the HTTP listener %s is not a loopback address: anyone who reaches "
		              "it could read the cluster's state, and there is no TLS. Use "
		              "--http-auth all ([http] auth = all) so that every request needs the "
		              "token (clusterctl http-token), or listen on 127.0.0.1", hc->listen);
	return 0;
}

static int set_key(struct config *c, const char *section, const char *name, const char *v,
		   char *w)
{
	if (strcmp(section, "http") == 0)
		return set_http_key(c, name, v, w);
	if (strcmp(section, "cache") == 0 ||
	    (strncmp(section, "cache", 5) == 0 && (section[5] == ' ' || section[5] == '\t')))
		return set_cache_key(c, section, name, v, w);
	if (strcmp(section, "cluster") == 0)
		return set_cluster_key(c, name, v, w);
	if (strcmp(section, "resp") == 0)
		return set_resp_key(c, name, v, w);
	if (strcmp(section, "node") == 0)
		return set_node_key(c, name, v, w);
	if (strcmp(section, "tasks") == 0)
		return set_tasks_key(c, name, v, w);
	if (strcmp(section, "supervisor") == 0)
		return set_supervisor_key(c, name, v, w);
	if (strcmp(section, "exec") == 0) {
		if (strcmp(name, "allow") == 0)
			return list_set(v, c->exec_allow, &c->exec_allow_count, LIST_ABSOLUTE_PATH, w);
		return why(w, "unknown key '%s' in [exec]", name);
	}
	if (strncmp(section, "pool", 4) == 0 && (section[4] == ' ' || section[4] == '\t')) {
		char pname[64];
		snprintf(pname, sizeof(pname), "%s", section + 5);
		struct config_pool *p = pool_get(c, trim(pname), w);
		if (!p)
			return -1;
		if (strcmp(name, "workers") == 0)
			return set_u32(v, 1, CONFIG_WORKERS_MAX, &p->workers, w);
		if (strcmp(name, "handlers") == 0)
			return pool_set_handlers(c, p, v, w);
		return why(w, "unknown key '%s' in [%s]", name, section);
	}
	if (section[0] == '\0')
		return why(w, "key '%s' is outside of a [section]", name);
	return why(w, "unknown section [%s]", section);
}

/* [resp] as a whole. A listener on an address other hosts can reach, with
 * no password, is refused unless allow_open says it is meant: the cache's
 * data would be open to the network (Redis's protected-mode, made a start
 * error rather than a per-connection refusal). */
static int resp_check(const struct config_resp *r, char *w)
{
	if (r->password[0] && r->password_file[0])
		return why(w, "[resp] has both password and password_file: keep one");
	if (r->query_bytes_max < r->bulk_bytes_max)
		return why(w, "[resp] query_bytes_max is below bulk_bytes_max: a largest argument "
		              "could never arrive");
	if (!r->listen[0])
		return 0;
	char host[256];
	uint16_t port;
	if (config_parse_hostport(r->listen, host, sizeof(host), &port) != 0)
		return why(w, "resp listen '%s' is not HOST:PORT", r->listen);
	if (!config_host_is_loopback(host) && !r->password[0] && !r->password_file[0] &&
	    !r->allow_open)
		return why(w, "the RESP listener %s is not a loopback address and has no password: "
		              "anyone who reaches it could read and change the cache. Set [resp] "
		              "password (or password_file), or allow_open = true if the network is "
		              "trusted", r->listen);
	return 0;
}

/* An absolute path as its components, with empty and "." ones left out
 * ("//", "/./", a trailing '/'); ".." is left as it is: the cache service
 * compares real paths at start. */
static void path_tidy(const char *in, char *out, size_t out_len)
{
	size_t n = 0;
	const char *p = in;
	while (*p) {
		while (*p == '/')
			p++;
		const char *part = p;
		while (*p && *p != '/')
			p++;
		size_t len = (size_t)(p - part);
		if (len == 0 || (len == 1 && part[0] == '.'))
			continue;
		if (n + len + 2 > out_len)
			break;
		out[n++] = '/';
		memcpy(out + n, part, len);
		n += len;
	}
	if (n == 0)
		out[n++] = '/';
	out[n] = '\0';
}

/* [cache] persist = PATH must not name the node's own files: the journal
 * and the identity live in the data dir, and a snapshot is written over
 * PATH (by a rename) and a file there that is not one is refused. In the
 * data dir only cache.db (what persist = on means) may be the snapshot. */
static int persist_path_check(const struct config *c, char *w)
{
	if (!c->cache_persist || !c->cache_persist_path[0] || c->data_dir[0] != '/')
		return 0;
	char dir[CONFIG_PATH_MAX], path[CONFIG_PATH_MAX];
	path_tidy(c->data_dir, dir, sizeof(dir));
	path_tidy(c->cache_persist_path, path, sizeof(path));
	size_t n = strlen(dir);
	if (strncmp(path, dir, n) != 0 || (n > 1 && path[n] != '/' && path[n] != '\0'))
		return 0; /* elsewhere (or a sibling such as DATA_DIR-2) */
	const char *rest = path[n] == '\0' ? "" : path + (n > 1 ? n + 1 : 1);
	if (strcmp(rest, "cache.db") == 0)
		return 0;
	return why(w, "[cache] persist = %s is inside the data dir, beside the journal: name a "
	              "file elsewhere, or persist = on (DATA_DIR/cache.db)", c->cache_persist_path);
}

/* Checks that need the whole configuration. */
static int config_check(const struct config *c, char *w)
{
	/* RESP SELECT indexes: distinct ("default" has 0 unless moved) */
	for (uint32_t i = 1; i < c->cache_count; i++)
		for (uint32_t j = 0; j < i; j++)
			if (c->caches[i].db >= 0 && c->caches[i].db == c->caches[j].db)
				return why(w, "caches '%s' and '%s' both have db %d (set [cache %s] db)",
				           c->caches[j].name, c->caches[i].name, c->caches[i].db,
				           c->caches[j].name);
	for (uint32_t i = 0; i < c->pool_count; i++)
		if (c->pools[i].handler_count == 0)
			return why(w, "pool '%s' has no handlers", c->pools[i].name);
	if (c->probe_timeout_ms && c->probe_timeout_ms >= c->gossip_period_ms)
		return why(w, "probe_timeout (%ums) must be below gossip_period (%ums)",
			   c->probe_timeout_ms, c->gossip_period_ms);
	if (c->cache_persist_interval_ms && !c->cache_persist)
		return why(w, "[cache] persist_interval is set but persist is off: set persist = on "
		              "(or a path), or remove persist_interval");
	if (persist_path_check(c, w) != 0)
		return -1;
	if (c->backoff_ms > c->backoff_max_ms)
		return why(w, "backoff (%ums) is above backoff_max (%ums)", c->backoff_ms,
			   c->backoff_max_ms);
	if (http_check(&c->http, w) != 0)
		return -1;
	return resp_check(&c->resp, w);
}

/* ---- the file ---- */

struct cfg_parse {
	struct config *c;
	FILE *fp;
	int next_line;      /* line number of the next line to read */
	int cur_line;       /* line inih is working on */
	int error_line;     /* first line with an error we found, 0 = none */
	char error[CONFIG_WHY_BYTES];
};

static void cfg_error(struct cfg_parse *p, const char *reason)
{
	if (p->error_line)
		return; /* keep the first */
	p->error_line = p->cur_line;
	snprintf(p->error, sizeof(p->error), "%s", reason);
}

static char *cfg_reader(char *str, int num, void *stream)
{
	struct cfg_parse *p = stream;
	if (p->error_line)
		return NULL; /* stop at the first error: later ones would only confuse */
	char *r = fgets(str, num, p->fp);
	if (!r)
		return NULL;
	p->cur_line = p->next_line;
	size_t n = strlen(r);
	if (n > 0 && r[n - 1] == '\n') {
		p->next_line++;
		return r;
	}
	int ch = fgetc(p->fp);
	if (ch == EOF)
		return r; /* last line without a newline */
	ungetc(ch, p->fp);
	char reason[CONFIG_WHY_BYTES];
	snprintf(reason, sizeof(reason), "line longer than %d bytes", num - 3);
	cfg_error(p, reason);
	return NULL;
}

static int cfg_handler(void *user, const char *section, const char *name, const char *value)
{
	struct cfg_parse *p = user;
	char w[CONFIG_WHY_BYTES];
	if (set_key(p->c, section, name, value ? value : "", w) != 0) {
		cfg_error(p, w);
		return 0;
	}
	return 1;
}

int config_load_file(struct config *c, const char *path, char *err, size_t err_len)
{
	struct cfg_parse p = {.c = c, .next_line = 1};
	p.fp = fopen(path, "r");
	if (!p.fp) {
		snprintf(err, err_len, "config file %s: %s", path, strerror(errno));
		return -1;
	}
	int ret = ini_parse_stream(cfg_reader, &p, cfg_handler, &p);
	int read_error = ferror(p.fp);
	fclose(p.fp);
	if (p.error_line && (ret <= 0 || ret >= p.error_line)) {
		snprintf(err, err_len, "%s:%d: %s", path, p.error_line, p.error);
		return -1;
	}
	if (ret > 0) {
		snprintf(err, err_len, "%s:%d: syntax error (want [section] or key = value)", path, ret);
		return -1;
	}
	if (ret < 0 || read_error) {
		snprintf(err, err_len, "config file %s: %s", path,
			 read_error ? "read error" : "out of memory");
		return -1;
	}
	char w[CONFIG_WHY_BYTES];
	if (config_check(c, w) != 0) {
		snprintf(err, err_len, "%s: %s", path, w);
		return -1;
	}
	return 0;
}

/* ---- defaults, flags, usage ---- */

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	char host[256];
	if (gethostname(host, sizeof(host)) == 0 && host[0]) {
		host[sizeof(host) - 1] = '\0';
		snprintf(c->name, sizeof(c->name), "%.63s", host);
	} else {
		snprintf(c->name, sizeof(c->name), "node");
	}
	snprintf(c->listen, sizeof(c->listen), "tcp://127.0.0.1:7400");
	snprintf(c->data_dir, sizeof(c->data_dir), "./chorus-data");
	c->workers = 2;
	c->prefetch = 2;
	c->log_level = LOG_INFO;
	c->log_json = 0;
	c->synchronous = STORE_SYNC_NORMAL;
	c->journal_check = 1;
	c->frame_bytes_max = (size_t)16 << 20;
	c->result_ttl_ms = 60ull * 60 * 1000;
	c->queue_max = 1000000;
	c->default_timeout_ms = 0;
	c->shutdown_grace_ms = 10 * 1000;
	c->max_attempts = 3;
	c->backoff_ms = 100;
	c->backoff_max_ms = 30 * 1000;
	c->output_max = (size_t)1 << 20;
	c->intensity = 10;
	c->period_ms = 5 * 1000;
	c->gossip_period_ms = 1000;
	c->probe_timeout_ms = 0;
	c->voters_target = 3;
	c->election_timeout_ms = 500;
	c->raft_snapshot_entries = 8192;
	c->cache_count = 1;
	memset(&c->caches[0], 0, sizeof(c->caches[0]));
	snprintf(c->caches[0].name, sizeof(c->caches[0].name), "default");
	c->caches[0].db = 0;
	c->caches[0].consistency = 2;
	c->cache_partitions = 271;
	c->cache_replicas = 3;
	c->cache_memory_max = (size_t)256 << 20;
	c->cache_key_bytes_max = 64u << 10;
	c->cache_value_bytes_max = 8u << 20;
	c->cache_timeout_ms = 2000;
	c->cache_persist_stop_timeout_ms = CONFIG_PERSIST_STOP_TIMEOUT_MS_DEFAULT;
	c->cache_compute_max = 1024;
	c->cache_compute_waiters_max = 1024;
	c->voter_dead_ms = 30000;
	c->bootstrap = -1; /* decided at start: a node without seeds starts a cluster */
	c->resp.clients_max = 256;
	c->resp.bulk_bytes_max = (size_t)64 << 20;
	c->resp.multibulk_count_max = 1024 * 1024;
	c->resp.query_bytes_max = (size_t)128 << 20;
	c->resp.inline_bytes_max = (size_t)64 << 10;
	c->resp.output_bytes_max = (size_t)64 << 20;
	c->resp.idle_timeout_ms = 0;
	c->http.request_timeout_ms = 10000;
	c->http.connections_max = 128;
	c->reap_after_ms = 60 * 1000;
}

void config_free(struct config *c)
{
	list_free(c->exec_allow, &c->exec_allow_count);
	list_free(c->plugins, &c->plugin_count);
	list_free(c->seeds, &c->seed_count);
	list_free(c->tags, &c->tag_count);
	list_free(c->voters, &c->voter_count);
	for (uint32_t i = 0; i < c->pool_count; i++)
		list_free(c->pools[i].handlers, &c->pools[i].handler_count);
	c->pool_count = 0;
}

enum {
	OPT_CONFIG = 256,
	OPT_DATA_DIR,
	OPT_LISTEN,
	OPT_SECRET,
	OPT_WORKERS,
	OPT_PREFETCH,
	OPT_NAME,
	OPT_PLUGIN,
	OPT_EXEC_ALLOW,
	OPT_LOG_LEVEL,
	OPT_LOG_FORMAT,
	OPT_SYNCHRONOUS,
	OPT_JOURNAL_CHECK,
	OPT_FRAME_MAX,
	OPT_RESULT_TTL,
	OPT_QUEUE_MAX,
	OPT_TIMEOUT,
	OPT_SHUTDOWN_GRACE,
	OPT_POOL,
	OPT_SEEDS,
	OPT_TAGS,
	OPT_ADVERTISE,
	OPT_GOSSIP_PERIOD,
	OPT_VOTERS_TARGET,
	OPT_ELECTION_TIMEOUT,
	OPT_RAFT_SNAPSHOT_ENTRIES,
	OPT_BOOTSTRAP,
	OPT_VOTERS,
	OPT_RESP,
	OPT_HTTP,
	OPT_HTTP_AUTH,
};

static const struct option config_options[] = {
	{"config", required_argument, NULL, OPT_CONFIG},
	{"data-dir", required_argument, NULL, OPT_DATA_DIR},
	{"listen", required_argument, NULL, OPT_LISTEN},
	{"secret", required_argument, NULL, OPT_SECRET},
	{"workers", required_argument, NULL, OPT_WORKERS},
	{"prefetch", required_argument, NULL, OPT_PREFETCH},
	{"name", required_argument, NULL, OPT_NAME},
	{"plugin", required_argument, NULL, OPT_PLUGIN},
	{"exec-allow", required_argument, NULL, OPT_EXEC_ALLOW},
	{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	{"log-format", required_argument, NULL, OPT_LOG_FORMAT},
	{"synchronous", required_argument, NULL, OPT_SYNCHRONOUS},
	{"journal-check", required_argument, NULL, OPT_JOURNAL_CHECK},
	{"frame-max", required_argument, NULL, OPT_FRAME_MAX},
	{"result-ttl", required_argument, NULL, OPT_RESULT_TTL},
	{"queue-max", required_argument, NULL, OPT_QUEUE_MAX},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"shutdown-grace", required_argument, NULL, OPT_SHUTDOWN_GRACE},
	{"pool", required_argument, NULL, OPT_POOL},
	{"seeds", required_argument, NULL, OPT_SEEDS},
	{"tags", required_argument, NULL, OPT_TAGS},
	{"advertise", required_argument, NULL, OPT_ADVERTISE},
	{"gossip-period", required_argument, NULL, OPT_GOSSIP_PERIOD},
	{"voters-target", required_argument, NULL, OPT_VOTERS_TARGET},
	{"election-timeout", required_argument, NULL, OPT_ELECTION_TIMEOUT},
	{"raft-snapshot-entries", required_argument, NULL, OPT_RAFT_SNAPSHOT_ENTRIES},
	{"bootstrap", required_argument, NULL, OPT_BOOTSTRAP},
	{"voters", required_argument, NULL, OPT_VOTERS},
	{"resp", required_argument, NULL, OPT_RESP},
	{"http", required_argument, NULL, OPT_HTTP},
	{"http-auth", required_argument, NULL, OPT_HTTP_AUTH},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0},
};

/* Flags that are [node] keys under another name. */
static const char *flag_key(int opt)
{
	switch (opt) {
	case OPT_DATA_DIR: return "data_dir";
	case OPT_LISTEN: return "listen";
	case OPT_SECRET: return "secret";
	case OPT_WORKERS: return "workers";
	case OPT_PREFETCH: return "prefetch";
	case OPT_NAME: return "name";
	case OPT_LOG_LEVEL: return "log_level";
	case OPT_LOG_FORMAT: return "log_format";
	case OPT_SYNCHRONOUS: return "synchronous";
	case OPT_JOURNAL_CHECK: return "journal_check";
	case OPT_FRAME_MAX: return "frame_bytes_max";
	case OPT_RESULT_TTL: return "result_ttl";
	case OPT_QUEUE_MAX: return "queue_max";
	case OPT_TIMEOUT: return "default_timeout";
	case OPT_SHUTDOWN_GRACE: return "shutdown_grace";
	default: return NULL;
	}
}

/* --pool NAME:WORKERS:handler1,handler2 */
static int set_pool_flag(struct config *c, const char *v, char *w)
{
	char buf[CONFIG_PATH_MAX];
	if (strlen(v) >= sizeof(buf))
		return why(w, "too long");
	strcpy(buf, v);
	char *workers = strchr(buf, ':');
	char *handlers = workers ? strchr(workers + 1, ':') : NULL;
	if (!handlers)
		return why(w, "'%s' is not NAME:WORKERS:handler1,handler2", v);
	*workers++ = '\0';
	*handlers++ = '\0';
	uint32_t n = 0;
	if (set_u32(workers, 1, CONFIG_WORKERS_MAX, &n, w) != 0)
		return -1;
	struct config_pool *p = pool_get(c, buf, w);
	if (!p)
		return -1;
	if (pool_set_handlers(c, p, handlers, w) != 0)
		return -1;
	p->workers = n;
	return 0;
}

static const char *option_name(int opt)
{
	for (const struct option *o = config_options; o->name; o++)
		if (o->val == opt)
			return o->name;
	return "?";
}

/* Lists a source has set so far: a source's first --plugin or
 * --exec-allow replaces the list an earlier source gave, later ones add. */
struct list_state {
	int plugins_set; /* --plugin / --exec-allow: the first use replaces the list */
	int allow_set;
};

/* Applies one option's value (a flag's argument or its variable's value).
 * 0, or -1 with the reason in w. */
static int config_apply(struct config *c, int opt, const char *v, struct list_state *ls, char *w)
{
	switch (opt) {
	case OPT_PLUGIN:
		if (!ls->plugins_set++)
			list_free(c->plugins, &c->plugin_count);
		return list_append(v, c->plugins, &c->plugin_count, LIST_PLAIN, w);
	case OPT_EXEC_ALLOW:
		if (!ls->allow_set++)
			list_free(c->exec_allow, &c->exec_allow_count);
		return list_append(v, c->exec_allow, &c->exec_allow_count, LIST_ABSOLUTE_PATH, w);
	case OPT_POOL:
		return set_pool_flag(c, v, w);
	case OPT_SEEDS:
		return set_cluster_key(c, "seeds", v, w);
	case OPT_TAGS:
		return set_cluster_key(c, "tags", v, w);
	case OPT_ADVERTISE:
		return set_cluster_key(c, "advertise", v, w);
	case OPT_GOSSIP_PERIOD:
		return set_cluster_key(c, "gossip_period", v, w);
	case OPT_VOTERS_TARGET:
		return set_cluster_key(c, "voters_target", v, w);
	case OPT_ELECTION_TIMEOUT:
		return set_cluster_key(c, "election_timeout", v, w);
	case OPT_RAFT_SNAPSHOT_ENTRIES:
		return set_cluster_key(c, "raft_snapshot_entries", v, w);
	case OPT_BOOTSTRAP:
		return set_cluster_key(c, "bootstrap", v, w);
	case OPT_VOTERS:
		return set_cluster_key(c, "voters", v, w);
	case OPT_RESP:
		return set_resp_key(c, "listen", v, w);
	case OPT_HTTP:
		return set_http_key(c, "listen", v, w);
	case OPT_HTTP_AUTH:
		return set_http_key(c, "auth", v, w);
	default: {
		const char *key = flag_key(opt);
		if (!key)
			return why(w, "unexpected option %d", opt);
		return set_node_key(c, key, v, w);
	}
	}
}

/* "data-dir" -> "CHORUS_DATA_DIR". */
static void env_name(const char *flag, char *out, size_t len)
{
	size_t n = (size_t)snprintf(out, len, "CHORUS_");
	for (const char *p = flag; *p && n + 1 < len; p++)
		out[n++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
	out[n] = '\0';
}

/* Options that take no variable: the file itself (CHORUS_CONFIG is read
 * before the file), --pool (commas in its value), --help, --version. */
static int env_skipped(int opt)
{
	return opt == OPT_CONFIG || opt == OPT_POOL || opt == 'h' || opt == 'V';
}

/* Applies every CHORUS_<FLAG> variable that is set and not empty, in the
 * order of the flag table. Records their names in c->env_used. */
static int config_load_env(struct config *c, char *err, size_t err_len)
{
	char w[CONFIG_WHY_BYTES];
	size_t used = 0;
	c->env_used[0] = '\0';
	for (const struct option *o = config_options; o->name; o++) {
		if (env_skipped(o->val))
			continue;
		char name[64];
		env_name(o->name, name, sizeof(name));
		const char *v = getenv(name);
		if (!v || !*v)
			continue;
		struct list_state ls = {0}; /* a variable replaces the file's list */
		if (config_apply(c, o->val, v, &ls, w) != 0) {
			snprintf(err, err_len, "environment %s: %s", name, w);
			return -1;
		}
		int n = snprintf(c->env_used + used, sizeof(c->env_used) - used, "%s%s",
				 used ? " " : "", name);
		if (n > 0 && (size_t)n < sizeof(c->env_used) - used)
			used += (size_t)n;
	}
	return 0;
}

/* Whether a tcp:// listen address binds every interface ("0.0.0.0", "::",
 * "*" or no host), and its port. */
static int listen_is_wildcard(const char *listen, char *port, size_t port_len)
{
	static const char scheme[] = "tcp://";
	if (strncmp(listen, scheme, sizeof(scheme) - 1) != 0)
		return 0;
	const char *host = listen + sizeof(scheme) - 1;
	const char *colon = strrchr(host, ':');
	if (!colon || colon[1] == '\0')
		return 0;
	size_t hn = (size_t)(colon - host);
	static const char *const wild[] = {"", "0.0.0.0", "*", "[::]", "::", "[::0]"};
	for (size_t i = 0; i < sizeof(wild) / sizeof(wild[0]); i++)
		if (strlen(wild[i]) == hn && strncmp(host, wild[i], hn) == 0) {
			snprintf(port, port_len, "%s", colon + 1);
			return 1;
		}
	return 0;
}

int config_resolve_advertise(struct config *c, const char *hostname, char *err, size_t err_len)
{
	char port[16];
	c->advertise_auto = 0;
	if (c->advertise[0] || !listen_is_wildcard(c->listen, port, sizeof(port)))
		return 0;
	if (!hostname || !*hostname) {
		snprintf(err, err_len, "listen address %s is a wildcard, which other nodes cannot "
			 "reach, and the host name is unknown: set --advertise", c->listen);
		return -1;
	}
	int n = snprintf(c->advertise, sizeof(c->advertise), "tcp://%s:%s", hostname, port);
	if (n < 0 || (size_t)n >= sizeof(c->advertise)) {
		c->advertise[0] = '\0';
		snprintf(err, err_len, "host name too long for an address: set --advertise");
		return -1;
	}
	c->advertise_auto = 1;
	return 0;
}

const char *config_host_kind_name(enum config_host_kind k)
{
	switch (k) {
	case CONFIG_HOST_UNRESOLVED:
		return "unresolved";
	case CONFIG_HOST_LOOPBACK:
		return "loopback";
	case CONFIG_HOST_ROUTABLE:
		return "routable";
	}
	return "?";
}

static int sockaddr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_LOOPBACK(a))
			return 1;
		return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
	}
	return 0;
}

enum config_host_kind config_host_resolve(const char *host)
{
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_socktype = SOCK_STREAM;
	if (!host || !*host || getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
		return CONFIG_HOST_UNRESOLVED;
	enum config_host_kind kind = CONFIG_HOST_LOOPBACK;
	for (const struct addrinfo *a = res; a; a = a->ai_next)
		if (!sockaddr_is_loopback(a->ai_addr)) {
			kind = CONFIG_HOST_ROUTABLE;
			break;
		}
	freeaddrinfo(res);
	return kind;
}

/* The host of a tcp://HOST:PORT address, brackets of an IPv6 literal
 * removed; 0, or -1 for another scheme or no port. */
static int tcp_addr_host(const char *addr, char *host, size_t host_len)
{
	static const char scheme[] = "tcp://";
	if (strncmp(addr, scheme, sizeof(scheme) - 1) != 0)
		return -1;
	const char *h = addr + sizeof(scheme) - 1;
	const char *colon = strrchr(h, ':');
	if (!colon)
		return -1;
	size_t n = (size_t)(colon - h);
	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	if (n >= host_len)
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	return 0;
}

int config_advertise_risk(const struct config *c, enum config_host_kind (*resolve)(const char *host),
			  char *msg, size_t msg_len)
{
	char host[256];
	if (!c->advertise_auto || tcp_addr_host(c->advertise, host, sizeof(host)) != 0)
		return 0;
	enum config_host_kind kind = resolve(host);
	if (kind == CONFIG_HOST_UNRESOLVED) {
		snprintf(msg, msg_len, "advertising %s, but the host name '%s' does not resolve on "
			 "this host: other nodes may not reach this one under it; set --advertise "
			 "(CHORUS_ADVERTISE) to an address they can dial", c->advertise, host);
		return 1;
	}
	if (kind != CONFIG_HOST_LOOPBACK)
		return 0;
	/* loopback here: harmless when the whole cluster is on this host, so
	 * only a seed elsewhere makes it a risk (the first node of a cluster,
	 * with no seeds, cannot tell) */
	for (uint32_t i = 0; i < c->seed_count; i++) {
		char seed_host[256];
		if (tcp_addr_host(c->seeds[i], seed_host, sizeof(seed_host)) != 0 ||
		    resolve(seed_host) != CONFIG_HOST_ROUTABLE)
			continue;
		snprintf(msg, msg_len, "advertising %s, but the host name '%s' resolves only to "
			 "loopback addresses on this host (as Debian's /etc/hosts line 127.0.1.1 "
			 "does), while seed %s is not on loopback: nodes on other hosts may not "
			 "reach this one under that name; set --advertise (CHORUS_ADVERTISE) to an "
			 "address they can dial", c->advertise, host, c->seeds[i]);
		return 1;
	}
	return 0;
}

int config_load(struct config *c, int argc, char **argv, char *err, size_t err_len)
{
	const char *shortopts = ":hV";
	int help = 0, version = 0;
	const char *config_path = NULL;
	const char *config_from = "--config";

	/* pass 1: --config (and --help/--version) before anything else */
	opterr = 0;
	optind = 0;
	for (int opt; (opt = getopt_long(argc, argv, shortopts, config_options, NULL)) != -1;) {
		if (opt == OPT_CONFIG)
			config_path = optarg;
		else if (opt == 'h')
			help = 1;
		else if (opt == 'V')
			version = 1;
	}
	if (help) {
		config_usage(stdout);
		return 1;
	}
	if (version) {
		printf("chorusd %s (protocol %d)\n", CH_VERSION_STRING, CH_PROTOCOL_VERSION);
		return 1;
	}
	if (!config_path) {
		const char *v = getenv("CHORUS_CONFIG");
		if (v && *v) {
			config_path = v;
			config_from = "CHORUS_CONFIG";
		}
	}
	if (config_path) {
		if (set_string(config_path, c->config_file, sizeof(c->config_file), 0,
			       (char[CONFIG_WHY_BYTES]){0}) != 0) {
			snprintf(err, err_len, "%s: path longer than %d bytes", config_from,
				 CONFIG_PATH_MAX - 1);
			return -1;
		}
		if (config_load_file(c, config_path, err, err_len) != 0)
			return -1;
	}

	/* then the environment, overriding the file */
	if (config_load_env(c, err, err_len) != 0)
		return -1;

	/* pass 2: every other flag, overriding both */
	struct list_state ls = {0};
	char w[CONFIG_WHY_BYTES];
	opterr = 0;
	optind = 0;
	for (int opt; (opt = getopt_long(argc, argv, shortopts, config_options, NULL)) != -1;) {
		switch (opt) {
		case OPT_CONFIG:
		case 'h': /* handled in pass 1 */
		case 'V':
			continue;
		case ':':
			snprintf(err, err_len, "option '%s' needs a value (see --help)", argv[optind - 1]);
			return -1;
		case '?':
			if (optopt)
				snprintf(err, err_len, "unknown option '-%c' (see --help)", optopt);
			else
				snprintf(err, err_len, "unknown option '%s' (see --help)",
					 argv[optind - 1]);
			return -1;
		}
		if (config_apply(c, opt, optarg, &ls, w) != 0) {
			snprintf(err, err_len, "--%s: %s", option_name(opt), w);
			return -1;
		}
	}
	if (optind < argc) {
		snprintf(err, err_len, "unexpected argument '%s' (see --help)", argv[optind]);
		return -1;
	}
	if (config_check(c, w) != 0) {
		snprintf(err, err_len, "%s", w);
		return -1;
	}
	char host[256];
	if (gethostname(host, sizeof(host)) != 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	return config_resolve_advertise(c, host, err, err_len);
}

void config_usage(FILE *out)
{
	struct config d;
	config_defaults(&d);
	char ttl[32], timeout[32], grace[32], frame[32];
	fmt_duration(ttl, sizeof(ttl), d.result_ttl_ms);
	fmt_duration(timeout, sizeof(timeout), d.default_timeout_ms);
	fmt_duration(grace, sizeof(grace), d.shutdown_grace_ms);
	fmt_size(frame, sizeof(frame), d.frame_bytes_max);
	char gossip[32];
	fmt_duration(gossip, sizeof(gossip), d.gossip_period_ms);
	fprintf(out,
		"Usage: chorusd [options]\n"
		"Runs one node of a Chorus task cluster.\n"
		"\n"
		"Settings come from, each overriding the one before: the defaults, the config\n"
		"file, environment variables, the flags. Every flag but --pool is also a\n"
		"variable: --some-flag VALUE is CHORUS_SOME_FLAG=VALUE (e.g. CHORUS_NAME,\n"
		"CHORUS_LISTEN, CHORUS_ADVERTISE, CHORUS_SEEDS, CHORUS_DATA_DIR, CHORUS_SECRET,\n"
		"CHORUS_RESP, CHORUS_HTTP, CHORUS_HTTP_AUTH; lists comma-separated);\n"
		"an empty variable counts as unset.\n"
		"Durations: 250ms, 5s, 2m, 1h or plain milliseconds. Sizes: 512, 64k, 16M, 1G.\n"
		"\n"
		"  --config FILE         INI file read first (see chorus.conf.example); without\n"
		"                        this flag, the file CHORUS_CONFIG names, if set\n"
		"  --name NAME           node name (default: the host name, here '%s')\n"
		"  --listen URL          tcp://, ipc:// or inproc:// address (default %s)\n"
		"  --data-dir DIR        journal and secret live here, created 0700 (default %s)\n"
		"  --secret FILE         cluster secret (default DATA_DIR/secret, created if missing)\n"
		"  --workers N           worker processes of the default pool, 1..%d (default %u)\n"
		"  --prefetch N          tasks queued per worker ahead, 1..%d (default %u)\n"
		"  --pool NAME:WORKERS:handler1,handler2\n"
		"                        a named pool running only those handlers (repeatable,\n"
		"                        at most %d; NAME is [a-z0-9_-], not 'default')\n"
		"  --plugin PATH         handler plugin (.so) to load (repeatable; replaces the file's list)\n"
		"  --exec-allow PATH     absolute path the exec handler may run (repeatable;\n"
		"                        replaces the file's list; default: none, exec refused)\n"
		"  --timeout DUR         default task timeout, 0 = none (default %s)\n"
		"  --queue-max N         unfinished tasks held before refusing (default %u)\n"
		"  --result-ttl DUR      keep finished tasks in the journal this long (default %s)\n"
		"  --frame-max SIZE      largest frame accepted, 1k..1G (default %s)\n"
		"  --synchronous MODE    journal durability: off|normal|full|extra (default %s)\n"
		"  --journal-check on|off  run sqlite's quick_check on the journal at start and\n"
		"                        refuse to start when it fails (default on)\n"
		"  --shutdown-grace DUR  on SIGTERM, wait this long for running tasks (default %s)\n"
		"  --seeds URL,URL       other nodes to join through (default: none, a one-node\n"
		"                        cluster); unreachable seeds are retried with backoff\n"
		"  --tags TAG,TAG        this node's tags, matched by tasks' --require (max %d)\n"
		"  --advertise URL       address other nodes reach us at (default: --listen; when\n"
		"                        that is a wildcard like tcp://0.0.0.0:7400, the host\n"
		"                        name: tcp://HOSTNAME:7400)\n"
		"  --gossip-period DUR   SWIM protocol period, 20ms..60s (default %s)\n"
		"  --voters-target N     Raft voters the leader grows the set to, from the alive\n"
		"                        members, 1..9 (default 3)\n"
		"  --election-timeout DUR  Raft's minimum election timeout, 50ms..60s (default 500ms)\n"
		"  --raft-snapshot-entries N  snapshot the schedules and compact the Raft log\n"
		"                        after N applied entries, 16..2097152 (default 8192)\n"
		"  --bootstrap on|off    start a new voter set here (default: on when no --seeds)\n"
		"  --voters NAME,NAME    pin the voter set to these members (default: grown to\n"
		"                        --voters-target from the alive members)\n"
		"  --resp HOST:PORT      serve the cache over the Redis protocol (RESP2) here\n"
		"                        (default: off). A non-loopback address needs [resp]\n"
		"                        password or password_file, or allow_open = true\n"
		"  --http HOST:PORT      serve /metrics, the dashboard and the JSON API here\n"
		"                        (default: off; docs/http.md)\n"
		"  --http-auth open|all  open: on a loopback address reading is open and\n"
		"                        changes need the token (clusterctl http-token); all:\n"
		"                        every request needs it. A non-loopback --http needs\n"
		"                        all (default open)\n"
		"  --log-level LEVEL     debug|info|warn|error (default %s)\n"
		"  --log-format FORMAT   text|json (default %s)\n"
		"  -h, --help            print this help and exit\n"
		"  -V, --version         print the version and exit\n"
		"\n"
		"Retries ([tasks]), supervision ([supervisor]) and probe_timeout / reap_after /\n"
		"voter_dead ([cluster]) are set in the config file, and so are the RESP\n"
		"listener's password and limits ([resp]: password, password_file, allow_open,\n"
		"max_clients (default 256, at most %d), bulk_bytes_max, multibulk_count_max,\n"
		"query_bytes_max, inline_bytes_max, output_bytes_max, idle_timeout), and the\n"
		"HTTP listener's request_timeout (default 10s) and max_connections (default\n"
		"128, at most %d) ([http]).\n",
		d.name, d.listen, d.data_dir, CONFIG_WORKERS_MAX, d.workers, CONFIG_PREFETCH_MAX,
		d.prefetch, CONFIG_NAMED_POOLS_MAX, timeout, d.queue_max, ttl, frame,
		store_sync_name(d.synchronous), grace, CONFIG_TAGS_MAX, gossip,
		log_level_name(d.log_level),
		d.log_json ? "json" : "text", CONFIG_RESP_CLIENTS_MAX, CONFIG_HTTP_CONNECTIONS_MAX);
	config_free(&d);
}
