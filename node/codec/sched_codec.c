/*
 * sched_codec.c - see sched_codec.h.
 */
#include "codec/sched_codec.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

static int copy_str(char *dst, size_t cap, const char *src, const char *field, char *err,
                    size_t err_len)
{
	size_t n = src ? strlen(src) : 0;
	if (n >= cap) {
		if (err)
			snprintf(err, err_len, "%s: longer than %zu bytes", field, cap - 1);
		return ERR_INVALID;
	}
	memcpy(dst, src ? src : "", n + 1);
	return 0;
}

int sched_spec_from_pb(const Chorus__CronSpec *pb, struct sched_spec *spec, char *err,
                       size_t err_len)
{
	memset(spec, 0, sizeof(*spec));
	if (copy_str(spec->name, sizeof(spec->name), pb->name, "name", err, err_len) ||
	    copy_str(spec->expr, sizeof(spec->expr), pb->expr, "expression", err, err_len) ||
	    copy_str(spec->tz, sizeof(spec->tz), pb->tz, "zone", err, err_len) ||
	    copy_str(spec->on, sizeof(spec->on), pb->on, "on", err, err_len))
		return ERR_INVALID;
	if ((int)pb->overlap < 0 || (int)pb->overlap > (int)SCHED_OVERLAP_ALLOW_ALL) {
		snprintf(err, err_len, "overlap: unknown policy %d", (int)pb->overlap);
		return ERR_INVALID;
	}
	spec->overlap = (uint8_t)pb->overlap;
	spec->pause_on_failure = pb->pause_on_failure;
	spec->catchup_ms = pb->catchup_ms;
	spec->start_s = pb->start_s;
	spec->end_s = pb->end_s;
	spec->max_runs = pb->max_runs;
	spec->jitter_ms = pb->jitter_ms;
	if (!pb->handler || !pb->handler[0]) {
		snprintf(err, err_len, "handler: missing");
		return ERR_INVALID;
	}
	Chorus__TaskSpec ts = CHORUS__TASK_SPEC__INIT;
	ts.handler = pb->handler;
	ts.payload = pb->payload;
	ts.opts = pb->opts;
	size_t n = chorus__task_spec__get_packed_size(&ts);
	if (n > SCHED_TASK_BYTES_MAX) {
		snprintf(err, err_len, "task: %zu bytes, at most %u", n, SCHED_TASK_BYTES_MAX);
		return ERR_INVALID;
	}
	spec->task = malloc(n ? n : 1);
	if (!spec->task)
		return ERR_NOMEM;
	chorus__task_spec__pack(&ts, spec->task);
	spec->task_len = (uint32_t)n;
	return 0;
}

int sched_spec_to_pb(const struct sched_spec *spec, Chorus__CronSpec *pb,
                     Chorus__TaskSpec **task_out)
{
	chorus__cron_spec__init(pb);
	*task_out = chorus__task_spec__unpack(NULL, spec->task_len, spec->task);
	if (!*task_out)
		return ERR_PROTOCOL;
	pb->name = (char *)spec->name;
	pb->expr = (char *)spec->expr;
	pb->tz = (char *)spec->tz;
	pb->on = (char *)spec->on;
	pb->handler = (*task_out)->handler;
	pb->payload = (*task_out)->payload;
	pb->opts = (*task_out)->opts;
	pb->overlap = (Chorus__Overlap)spec->overlap;
	pb->catchup_ms = spec->catchup_ms;
	pb->start_s = spec->start_s;
	pb->end_s = spec->end_s;
	pb->max_runs = spec->max_runs;
	pb->jitter_ms = spec->jitter_ms;
	pb->pause_on_failure = spec->pause_on_failure;
	return 0;
}

int sched_cmd_encode(const struct sched_cmd *c, uint8_t **bytes, size_t *len)
{
	Chorus__SchedCmd pb = CHORUS__SCHED_CMD__INIT;
	Chorus__CronSpec spb;
	Chorus__TaskSpec *task = NULL;
	ProtobufCBinaryData targets[SCHED_ACTIVE_MAX];
	if (c->n_targets > SCHED_ACTIVE_MAX || (c->n_targets && !c->targets))
		return ERR_PROTOCOL;
	for (uint32_t i = 0; i < c->n_targets; i++) {
		targets[i].data = (uint8_t *)c->targets[i];
		targets[i].len = SCHED_ID_BYTES;
	}
	pb.targets = targets;
	pb.n_targets = c->n_targets;
	pb.op = c->op;
	pb.name = (char *)c->name;
	pb.note = (char *)c->note;
	pb.scheduled_s = c->scheduled_s;
	pb.wall_ms = c->wall_ms;
	pb.target.data = (uint8_t *)c->target;
	pb.target.len = SCHED_ID_BYTES;
	pb.task_id = c->task_id;
	pb.outcome = (uint32_t)c->outcome;
	pb.kind = c->kind;
	pb.count = c->count;
	pb.from_s = c->from_s;
	pb.to_s = c->to_s;
	if (c->op == SCHED_OP_ADD) {
		if (!c->spec || sched_spec_to_pb(c->spec, &spb, &task) != 0)
			return ERR_PROTOCOL;
		pb.spec = &spb;
	}
	size_t n = chorus__sched_cmd__get_packed_size(&pb);
	uint8_t *b = malloc(n ? n : 1);
	if (!b) {
		if (task)
			chorus__task_spec__free_unpacked(task, NULL);
		return ERR_NOMEM;
	}
	chorus__sched_cmd__pack(&pb, b);
	if (task)
		chorus__task_spec__free_unpacked(task, NULL);
	*bytes = b;
	*len = n;
	return 0;
}

void sched_cmd_store_free(struct sched_cmd_store *store)
{
	sched_spec_free(&store->spec);
}

int sched_cmd_decode(const uint8_t *bytes, size_t len, struct sched_cmd *c,
                     struct sched_cmd_store *store)
{
	memset(c, 0, sizeof(*c));
	memset(&store->spec, 0, sizeof(store->spec));
	struct sched_spec *spec_store = &store->spec;
	Chorus__SchedCmd *pb = chorus__sched_cmd__unpack(NULL, len, bytes);
	if (!pb)
		return ERR_PROTOCOL;
	int rc = 0;
	int targets_ok = pb->n_targets <= SCHED_ACTIVE_MAX;
	for (size_t i = 0; i < pb->n_targets && targets_ok; i++)
		targets_ok = pb->targets[i].len == SCHED_ID_BYTES;
	if (pb->op < SCHED_OP_ADD || pb->op > SCHED_OP_BACKFILL || pb->kind > 255 || !targets_ok ||
	    (pb->target.len && pb->target.len != SCHED_ID_BYTES) ||
	    copy_str(c->name, sizeof(c->name), pb->name, "name", NULL, 0) ||
	    copy_str(c->note, sizeof(c->note), pb->note, "note", NULL, 0)) {
		rc = ERR_PROTOCOL;
		goto out;
	}
	c->op = (uint8_t)pb->op;
	c->kind = (uint8_t)pb->kind;
	c->scheduled_s = pb->scheduled_s;
	c->wall_ms = pb->wall_ms;
	if (pb->target.len)
		memcpy(c->target, pb->target.data, SCHED_ID_BYTES);
	c->task_id = pb->task_id;
	c->outcome = (int)pb->outcome;
	c->from_s = pb->from_s;
	c->to_s = pb->to_s;
	c->count = pb->count;
	for (size_t i = 0; i < pb->n_targets; i++)
		memcpy(store->targets[i], pb->targets[i].data, SCHED_ID_BYTES);
	if (pb->n_targets) {
		c->targets = store->targets;
		c->n_targets = (uint32_t)pb->n_targets;
	}
	if (c->op == SCHED_OP_ADD) {
		char err[128];
		if (!pb->spec || sched_spec_from_pb(pb->spec, spec_store, err, sizeof(err)) != 0) {
			sched_spec_free(spec_store);
			rc = ERR_PROTOCOL;
			goto out;
		}
		snprintf(c->name, sizeof(c->name), "%s", spec_store->name);
		c->spec = spec_store;
	}
out:
	chorus__sched_cmd__free_unpacked(pb, NULL);
	return rc;
}

/* ---- snapshots ----
 *
 * A SchedSnapshot is written and read one schedule at a time: the top
 * level (version, the schedules, the end) is framed here, each SchedState
 * is packed and unpacked by protobuf-c. So only one schedule's protobuf
 * structs exist at once, however large the table (100,000 schedules with
 * full histories unpack to gigabytes as one message). The bytes are those
 * protobuf-c would write for the whole message: fields in number order,
 * the end always present. */

#define SCHED_SNAPSHOT_VERSION 1u

/* tags: field number << 3 | wire type (0 varint, 2 length-delimited) */
#define TAG_VERSION ((1u << 3) | 0u)
#define TAG_SCHEDULE ((2u << 3) | 2u)
#define TAG_END ((3u << 3) | 2u)
#define VARINT_BYTES_MAX 10

struct outbuf {
	uint8_t *b;
	size_t len, cap;
};

static int out_reserve(struct outbuf *o, size_t more)
{
	if (more <= o->cap - o->len)
		return 0;
	size_t cap = o->cap ? o->cap : 4096;
	while (cap - o->len < more) {
		if (cap > SIZE_MAX / 2)
			return ERR_NOMEM;
		cap *= 2;
	}
	uint8_t *b = realloc(o->b, cap);
	if (!b)
		return ERR_NOMEM;
	o->b = b;
	o->cap = cap;
	return 0;
}

/* room reserved by the caller */
static void out_varint(struct outbuf *o, uint64_t v)
{
	while (v >= 0x80) {
		o->b[o->len++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	o->b[o->len++] = (uint8_t)v;
}

/* Per-schedule protobuf structs, reused from one schedule to the next. */
struct pack_scratch {
	Chorus__SchedOcc occ[SCHED_ACTIVE_MAX + SCHED_HISTORY_MAX];
	Chorus__SchedOcc *active[SCHED_ACTIVE_MAX];
	Chorus__SchedOcc *hist[SCHED_HISTORY_MAX];
};

static const uint8_t ZERO_ID[SCHED_ID_BYTES];

static void occ_to_pb(const struct sched_occ *o, Chorus__SchedOcc *pb)
{
	chorus__sched_occ__init(pb);
	pb->scheduled_s = o->scheduled_s;
	pb->fired_ms = o->fired_ms;
	if (memcmp(o->target, ZERO_ID, SCHED_ID_BYTES) != 0) {
		pb->target.data = (uint8_t *)o->target;
		pb->target.len = SCHED_ID_BYTES;
	}
	pb->task_id = o->task_id;
	pb->kind = o->kind;
	pb->dispatched = o->dispatched;
	pb->done = o->done;
	pb->outcome = o->outcome;
	pb->count = o->count;
	pb->to_s = o->to_s;
	pb->why = (char *)o->why;
}

/* pb borrows from st and from *task (free it after packing, also on error) */
static int state_to_pb(const struct sched_state *st, Chorus__SchedState *pb,
                       Chorus__CronSpec *spb, Chorus__TaskSpec **task, struct pack_scratch *sc)
{
	chorus__sched_state__init(pb);
	if (sched_spec_to_pb(st->spec, spb, task) != 0)
		return ERR_PROTOCOL;
	pb->spec = spb;
	pb->paused = st->paused ? 1 : 0;
	pb->note = (char *)st->note;
	pb->runs = st->runs;
	pb->last_s = st->last_s;
	pb->resume_s = st->resume_s;
	uint32_t k = 0;
	for (uint32_t i = 0; i < st->n_active; i++) {
		occ_to_pb(&st->active[i], &sc->occ[k]);
		sc->active[i] = &sc->occ[k++];
	}
	pb->n_active = st->n_active;
	pb->active = sc->active;
	pb->n_buffer = st->n_buffer;
	pb->buffer = (int64_t *)st->buffer;
	uint32_t h = 0;
	for (int span = 0; span < 2; span++)
		for (uint32_t i = 0; i < st->n_hist[span]; i++) {
			occ_to_pb(&st->hist[span][i], &sc->occ[k]);
			sc->hist[h++] = &sc->occ[k++];
		}
	pb->n_history = h;
	pb->history = sc->hist;
	pb->bf_from_s = st->bf_from_s;
	pb->bf_next_s = st->bf_next_s;
	pb->bf_to_s = st->bf_to_s;
	pb->bf_overlap = st->bf_overlap;
	pb->bf_fired = st->bf_fired;
	return 0;
}

int sched_snapshot_pack(const struct sched *s, uint8_t **bytes, size_t *len)
{
	*bytes = NULL;
	*len = 0;
	struct outbuf o = {0};
	struct pack_scratch *sc = malloc(sizeof(*sc));
	int rc = sc ? out_reserve(&o, 1 + VARINT_BYTES_MAX) : ERR_NOMEM;
	if (rc == 0) {
		o.b[o.len++] = TAG_VERSION;
		out_varint(&o, SCHED_SNAPSHOT_VERSION);
	}
	uint32_t n = sched_count(s);
	for (uint32_t i = 0; rc == 0 && i < n; i++) {
		struct sched_state st;
		rc = sched_export(s, i, &st);
		assert(rc == 0);
		Chorus__SchedState pb;
		Chorus__CronSpec spb;
		Chorus__TaskSpec *task = NULL;
		rc = state_to_pb(&st, &pb, &spb, &task, sc);
		if (rc == 0) {
			size_t size = chorus__sched_state__get_packed_size(&pb);
			rc = out_reserve(&o, 1 + VARINT_BYTES_MAX + size);
			if (rc == 0) {
				o.b[o.len++] = TAG_SCHEDULE;
				out_varint(&o, size);
				size_t wrote = chorus__sched_state__pack(&pb, o.b + o.len);
				assert(wrote == size);
				o.len += wrote;
			}
		}
		if (task)
			chorus__task_spec__free_unpacked(task, NULL);
	}
	if (rc == 0) {
		Chorus__SchedSnapshotEnd end = CHORUS__SCHED_SNAPSHOT_END__INIT;
		end.count = n;
		size_t size = chorus__sched_snapshot_end__get_packed_size(&end);
		rc = out_reserve(&o, 1 + VARINT_BYTES_MAX + size);
		if (rc == 0) {
			o.b[o.len++] = TAG_END;
			out_varint(&o, size);
			o.len += chorus__sched_snapshot_end__pack(&end, o.b + o.len);
		}
	}
	free(sc);
	if (rc != 0) {
		free(o.b);
		return rc;
	}
	*bytes = o.b;
	*len = o.len;
	return 0;
}

/* One top-level field of the snapshot's bytes. */
struct field {
	uint32_t num;
	uint8_t wire;
	uint64_t v;             /* varint */
	const uint8_t *p;       /* length-delimited */
	size_t n;
};

static int read_varint(const uint8_t *b, size_t len, size_t *off, uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned shift = 0; shift < 7 * VARINT_BYTES_MAX; shift += 7) {
		if (*off >= len)
			return -1;
		uint8_t c = b[(*off)++];
		x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

/* The field at *off, moving past it; -1 when the bytes end inside it or
 * it is not a protobuf field (groups are refused). */
static int read_field(const uint8_t *b, size_t len, size_t *off, struct field *f)
{
	uint64_t tag;
	if (read_varint(b, len, off, &tag) != 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
		return -1;
	memset(f, 0, sizeof(*f));
	f->num = (uint32_t)(tag >> 3);
	f->wire = (uint8_t)(tag & 7);
	switch (f->wire) {
	case 0:
		return read_varint(b, len, off, &f->v);
	case 1:
	case 5: {
		size_t n = f->wire == 1 ? 8 : 4;
		if (len - *off < n)
			return -1;
		*off += n;
		return 0;
	}
	case 2: {
		uint64_t n;
		if (read_varint(b, len, off, &n) != 0 || n > len - *off)
			return -1;
		f->p = b + *off;
		f->n = (size_t)n;
		*off += (size_t)n;
		return 0;
	}
	default:
		return -1;
	}
}

/* Per-schedule plain-C state, reused from one schedule to the next. */
struct load_scratch {
	struct sched_spec spec;
	struct sched_occ active[SCHED_ACTIVE_MAX];
	struct sched_occ hist[SCHED_HISTORY_MAX];
	int64_t buffer[SCHED_BUFFER_MAX];
};

static int occ_from_pb(const Chorus__SchedOcc *pb, struct sched_occ *o, char *err,
                       size_t err_len)
{
	memset(o, 0, sizeof(*o));
	if (pb->target.len && pb->target.len != SCHED_ID_BYTES) {
		snprintf(err, err_len, "target: %zu bytes, not %d", pb->target.len, SCHED_ID_BYTES);
		return ERR_INVALID;
	}
	if (pb->kind > UINT8_MAX) {
		snprintf(err, err_len, "kind %u: unknown", pb->kind);
		return ERR_INVALID;
	}
	if (copy_str(o->why, sizeof(o->why), pb->why, "reason", err, err_len) != 0)
		return ERR_INVALID;
	o->scheduled_s = pb->scheduled_s;
	o->fired_ms = pb->fired_ms;
	if (pb->target.len)
		memcpy(o->target, pb->target.data, SCHED_ID_BYTES);
	o->task_id = pb->task_id;
	o->kind = (uint8_t)pb->kind;
	o->dispatched = pb->dispatched ? 1 : 0;
	o->done = pb->done ? 1 : 0;
	o->outcome = pb->outcome;
	o->count = pb->count;
	o->to_s = pb->to_s;
	return 0;
}

/* pb -> st, pointing into sc and pb; sc->spec.task allocated (free it
 * also on error). */
static int state_from_pb(const Chorus__SchedState *pb, struct load_scratch *sc,
                         struct sched_state *st, char *err, size_t err_len)
{
	memset(st, 0, sizeof(*st));
	memset(&sc->spec, 0, sizeof(sc->spec));
	if (!pb->spec) {
		snprintf(err, err_len, "no spec");
		return ERR_INVALID;
	}
	int rc = sched_spec_from_pb(pb->spec, &sc->spec, err, err_len);
	if (rc != 0)
		return rc;
	if (pb->n_active > SCHED_ACTIVE_MAX || pb->n_buffer > SCHED_BUFFER_MAX ||
	    pb->n_history > SCHED_HISTORY_MAX) {
		snprintf(err, err_len,
		         "%zu runs not done, %zu buffered, %zu in history: at most %d, %d and %d",
		         pb->n_active, pb->n_buffer, pb->n_history, SCHED_ACTIVE_MAX, SCHED_BUFFER_MAX,
		         SCHED_HISTORY_MAX);
		return ERR_INVALID;
	}
	if (pb->bf_overlap > UINT8_MAX) {
		snprintf(err, err_len, "backfill overlap %u: unknown", pb->bf_overlap);
		return ERR_INVALID;
	}
	for (size_t i = 0; i < pb->n_active; i++)
		if ((rc = occ_from_pb(pb->active[i], &sc->active[i], err, err_len)) != 0)
			return rc;
	for (size_t i = 0; i < pb->n_history; i++)
		if ((rc = occ_from_pb(pb->history[i], &sc->hist[i], err, err_len)) != 0)
			return rc;
	if (pb->n_buffer)
		memcpy(sc->buffer, pb->buffer, pb->n_buffer * sizeof(sc->buffer[0]));
	st->spec = &sc->spec;
	st->paused = pb->paused ? 1 : 0;
	st->note = pb->note;
	st->runs = pb->runs;
	st->last_s = pb->last_s;
	st->resume_s = pb->resume_s;
	st->active = sc->active;
	st->n_active = (uint32_t)pb->n_active;
	st->buffer = sc->buffer;
	st->n_buffer = (uint32_t)pb->n_buffer;
	st->hist[0] = sc->hist;
	st->n_hist[0] = (uint32_t)pb->n_history;
	st->bf_from_s = pb->bf_from_s;
	st->bf_next_s = pb->bf_next_s;
	st->bf_to_s = pb->bf_to_s;
	st->bf_overlap = (uint8_t)pb->bf_overlap;
	st->bf_fired = pb->bf_fired;
	return 0;
}

/* The framing, before anything is built: every field whole, the version
 * known, the end present and counting the schedules there are. */
static int snapshot_scan(const uint8_t *bytes, size_t len, uint32_t *count, char *err,
                         size_t err_len)
{
	uint64_t version = 0, n = 0, end_count = 0;
	int has_version = 0, has_end = 0;
	size_t off = 0;
	while (off < len) {
		struct field f;
		size_t at = off;
		if (read_field(bytes, len, &off, &f) != 0) {
			snprintf(err, err_len, "snapshot: malformed or cut short at byte %zu of %zu", at, len);
			return ERR_PROTOCOL;
		}
		int known = f.num == 1 || f.num == 2 || f.num == 3;
		if (known && f.wire != (f.num == 1 ? 0 : 2)) {
			snprintf(err, err_len, "snapshot: field %u with wire type %u at byte %zu", f.num,
			         f.wire, at);
			return ERR_PROTOCOL;
		}
		if (f.num == 1) {
			version = f.v;
			has_version = 1;
		} else if (f.num == 2) {
			if (++n > SCHED_COUNT_MAX) {
				snprintf(err, err_len, "snapshot: more than %u schedules", SCHED_COUNT_MAX);
				return ERR_INVALID;
			}
		} else if (f.num == 3) {
			Chorus__SchedSnapshotEnd *end = chorus__sched_snapshot_end__unpack(NULL, f.n, f.p);
			if (!end) {
				snprintf(err, err_len, "snapshot: its end does not unpack");
				return ERR_PROTOCOL;
			}
			end_count = end->count;
			has_end = 1;
			chorus__sched_snapshot_end__free_unpacked(end, NULL);
		}
	}
	if (!has_version || version != SCHED_SNAPSHOT_VERSION) {
		snprintf(err, err_len, "snapshot: version %llu%s, this node reads %u",
		         (unsigned long long)version, has_version ? "" : " (none)",
		         SCHED_SNAPSHOT_VERSION);
		return ERR_PROTOCOL;
	}
	if (!has_end) {
		snprintf(err, err_len, "snapshot: %llu schedules and no end: cut short",
		         (unsigned long long)n);
		return ERR_PROTOCOL;
	}
	if (end_count != n) {
		snprintf(err, err_len, "snapshot: %llu schedules, its end says %llu", (unsigned long long)n,
		         (unsigned long long)end_count);
		return ERR_PROTOCOL;
	}
	*count = (uint32_t)n;
	return 0;
}

struct sched *sched_snapshot_load(const uint8_t *bytes, size_t len, sched_tz_fn resolve_tz,
                                  void *tz_ctx, char *err, size_t err_len)
{
	if (err_len)
		err[0] = '\0';
	if (!bytes && len) {
		snprintf(err, err_len, "snapshot: no bytes");
		return NULL;
	}
	uint32_t count;
	if (snapshot_scan(bytes, len, &count, err, err_len) != 0)
		return NULL;
	struct sched *s = sched_create(resolve_tz, tz_ctx);
	struct load_scratch *sc = malloc(sizeof(*sc));
	if (!s || !sc) {
		snprintf(err, err_len, "snapshot: out of memory");
		goto fail;
	}
	size_t off = 0;
	uint32_t i = 0;
	while (off < len) {
		struct field f;
		int rc = read_field(bytes, len, &off, &f);
		assert(rc == 0); /* scanned */
		(void)rc;
		if (f.num != 2)
			continue;
		char why[256] = "";
		Chorus__SchedState *pb = chorus__sched_state__unpack(NULL, f.n, f.p);
		if (!pb) {
			snprintf(err, err_len, "snapshot: schedule %u does not unpack", i);
			goto fail;
		}
		struct sched_state st;
		rc = state_from_pb(pb, sc, &st, why, sizeof(why));
		if (rc == 0)
			rc = sched_import(s, &st, why, sizeof(why));
		if (rc != 0)
			snprintf(err, err_len, "snapshot: schedule %u (\"%.64s\"): %s", i,
			         pb->spec && pb->spec->name ? pb->spec->name : "", why);
		sched_spec_free(&sc->spec);
		chorus__sched_state__free_unpacked(pb, NULL);
		if (rc != 0)
			goto fail;
		i++;
	}
	assert(i == count && sched_count(s) == count);
	free(sc);
	return s;
fail:
	free(sc);
	sched_destroy(s);
	return NULL;
}
