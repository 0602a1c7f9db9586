/*
 * host.c - the node's composition and event loop (see io/host.h and
 * svc/service.h, which documents the loop's order).
 *
 * Owns: the signalfd and the wake eventfd, the data dir lock, the journal
 * (store.c) and its per-iteration transaction, the transport (rpc.c), the
 * request table (dispatch.c), the node's identity and keyring, the
 * registered services and the ports between them, and the drain.
 */
#include "io/host.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "chorus.h"
#include "config.h"
#include "io/dispatch.h"
#include "io/events.h"
#include "io/ids.h"
#include "io/log.h"
#include "io/rpc.h"
#include "io/store.h"
#include "lib/arena.h"
#include "lib/clock.h"
#include "lib/prom.h"
#include "proto/seal.h"
#include "svc/service.h"

#define SERVICES_MAX 16
#define PORTS_MAX 16
#define POLLFDS_MAX 512
#define LOOP_IDLE_MS 100 /* the longest poll: worker restarts, drain checks */
#define JOURNAL_REMINDER_MS 30000 /* while commits fail: one reminder line per */

struct service {
	const struct service_ops *ops;
	void *svc;
	int started;
	int drain_started;
	int fd_first, fd_count; /* its range in the iteration's pollfds */
};

struct port {
	const char *name;
	void *port;
};

struct host {
	const struct config *cfg;
	int wake_fd, sig_fd, lock_fd;
	atomic_int wake_pending; /* host_wake wrote wake_fd; the loop has not read it */
	struct store *store;
	struct ids *ids;
	struct rpc *rpc;
	struct dispatch *dispatch;
	struct events *events; /* recent cluster events (io/events.h) */
	struct seal_keyring *kr; /* node keys (one reference) */
	uint8_t node_id[SEAL_ID_BYTES];
	char node_id_hex[SEAL_ID_BYTES * 2 + 1];
	uint64_t started_wall_ms;

	struct service services[SERVICES_MAX];
	uint32_t service_count;
	struct port ports[PORTS_MAX];
	uint32_t port_count;

	struct now now;  /* the iteration's */
	char secret_path[CONFIG_PATH_MAX + 16];
	/* commits failing (a full disk): logged once, reminded at a bounded
	 * rate, and when it clears */
	int journal_failing;
	uint64_t journal_failing_since_ms, journal_reminded_ms; /* monotonic */
	uint64_t journal_failed_count;
	int draining, closing;
	int failed; /* host_request_stop: the exit code is 1 */
	int drain_index; /* the service draining now (reverse order) */
};

/* ---- what services see ---- */

int host_register(struct host *h, const struct service_ops *ops, void *svc)
{
	if (h->service_count >= SERVICES_MAX || !ops || !ops->name)
		return -1;
	h->services[h->service_count++] = (struct service){.ops = ops, .svc = svc};
	return 0;
}

const struct config *host_config(const struct host *h) { return h->cfg; }
struct store *host_store(struct host *h) { return h->store; }
struct ids *host_ids(struct host *h) { return h->ids; }
struct dispatch *host_dispatch(struct host *h) { return h->dispatch; }
struct rpc *host_rpc(struct host *h) { return h->rpc; }
const uint8_t *host_node_id(const struct host *h) { return h->node_id; }
const char *host_node_id_hex(const struct host *h) { return h->node_id_hex; }
const struct seal_keyring *host_keyring(const struct host *h) { return h->kr; }
uint64_t host_started_wall_ms(const struct host *h) { return h->started_wall_ms; }
int host_draining(const struct host *h) { return h->draining; }
const struct now *host_now(const struct host *h) { return &h->now; }
int host_closing(const struct host *h) { return h->closing; }

void host_wake(void *arg)
{
	struct host *h = arg;
	/* One write per wake-up, not per completion: while a wake is pending
	 * (written, and the loop has not read it yet) whatever the caller
	 * posted before this call is taken by the iteration that wake starts
	 * (the loop clears the flag before it takes the posted work). Under
	 * load nng's threads complete many requests per iteration. */
	if (atomic_exchange_explicit(&h->wake_pending, 1, memory_order_acq_rel))
		return;
	uint64_t one = 1;
	ssize_t n = write(h->wake_fd, &one, sizeof(one));
	(void)n; /* EAGAIN: the counter is already non-zero, the loop wakes */
}

int host_port_set(struct host *h, const char *name, void *port)
{
	if (h->port_count >= PORTS_MAX || host_port_get(h, name))
		return -1;
	h->ports[h->port_count++] = (struct port){name, port};
	return 0;
}

void *host_port_get(const struct host *h, const char *name)
{
	for (uint32_t i = 0; i < h->port_count; i++)
		if (strcmp(h->ports[i].name, name) == 0)
			return h->ports[i].port;
	return NULL;
}

void host_status_fill(struct host *h, Chorus__StatusResp *st, struct arena *a)
{
	st->node_id = h->node_id_hex;
	st->name = (char *)h->cfg->name;
	st->version = (char *)CH_VERSION_STRING;
	st->listen = (char *)h->cfg->listen;
	st->started_ms = h->started_wall_ms;
	st->now_ms = clock_wall_ms();
	st->sessions = h->rpc ? rpc_session_count(h->rpc) : 0;
	st->n_tags = h->cfg->tag_count;
	st->tags = (char **)h->cfg->tags;
	Chorus__PeerCounters **pcs = NULL;
	size_t npc = 0;
	if (h->rpc && rpc_peer_counters(h->rpc, &pcs, &npc) == 0 && npc) {
		/* copied into the arena so one free releases everything */
		Chorus__PeerCounters **v = arena_alloc(a, npc * sizeof(*v));
		Chorus__PeerCounters *s = arena_alloc(a, npc * sizeof(*s));
		if (v && s) {
			for (size_t i = 0; i < npc; i++) {
				s[i] = *pcs[i];
				s[i].peer = arena_strdup(a, pcs[i]->peer);
				v[i] = &s[i];
			}
			st->n_peers = npc;
			st->peers = v;
		}
	}
	rpc_peer_counters_free(pcs, npc);
	/* the request table's counters */
	int cur = 0, n = 0;
	const char *name;
	while (dispatch_next_stats(h->dispatch, &cur, &name))
		n++;
	Chorus__RequestStats **rv = n ? arena_alloc(a, (size_t)n * sizeof(*rv)) : NULL;
	Chorus__RequestStats *rs = n ? arena_alloc(a, (size_t)n * sizeof(*rs)) : NULL;
	uint64_t *buckets = n ? arena_alloc(a, (size_t)n * DISPATCH_BUCKETS * sizeof(uint64_t)) : NULL;
	if (rv && rs && buckets) {
		cur = 0;
		int i = 0;
		for (const struct req_stats *s; (s = dispatch_next_stats(h->dispatch, &cur, &name));) {
			chorus__request_stats__init(&rs[i]);
			rs[i].name = (char *)name;
			rs[i].calls = s->calls;
			rs[i].errors = s->errors;
			rs[i].refused = s->refused;
			rs[i].latency_sum_us = s->latency_sum_us;
			memcpy(&buckets[i * DISPATCH_BUCKETS], s->latency_buckets,
			       sizeof(s->latency_buckets));
			rs[i].n_latency_buckets = DISPATCH_BUCKETS;
			rs[i].latency_buckets = &buckets[i * DISPATCH_BUCKETS];
			rv[i] = &rs[i];
			i++;
		}
		st->n_requests = (size_t)n;
		st->requests = rv;
	}
	/* sessions per key id, every key of the keyring listed */
	struct rpc_key_sessions ks[8];
	uint32_t nk = h->rpc ? rpc_key_sessions(h->rpc, ks, 8) : 0;
	uint32_t ids[SEAL_KEYS_MAX];
	uint32_t nids = seal_keyring_ids(h->kr, ids);
	for (uint32_t i = 0; i < nids && nk < 8; i++) {
		uint32_t k = 0;
		while (k < nk && ks[k].key_id != ids[i])
			k++;
		if (k == nk)
			ks[nk++] = (struct rpc_key_sessions){.key_id = ids[i]};
	}
	Chorus__KeySessions **kv = nk ? arena_alloc(a, nk * sizeof(*kv)) : NULL;
	Chorus__KeySessions *kp = nk ? arena_alloc(a, nk * sizeof(*kp)) : NULL;
	if (kv && kp) {
		for (uint32_t i = 0; i < nk; i++) {
			chorus__key_sessions__init(&kp[i]);
			char *hex = arena_alloc(a, SEAL_KEY_ID_HEX_BYTES);
			if (hex)
				seal_key_id_hex(ks[i].key_id, hex);
			kp[i].key_id = hex ? hex : (char *)"";
			kp[i].sessions = ks[i].sessions;
			kp[i].node_sessions = ks[i].node_sessions;
			kp[i].primary = ks[i].key_id == seal_keyring_primary_id(h->kr);
			kv[i] = &kp[i];
		}
		st->n_keys = nk;
		st->keys = kv;
	}
	for (uint32_t i = 0; i < h->service_count; i++)
		if (h->services[i].started && h->services[i].ops->status)
			h->services[i].ops->status(h->services[i].svc, st, a);
}

/* The host's own families: the node, the request table, the links'
 * refused frames and sessions, the journal (docs/metrics.md). */
static void host_metrics_own(struct host *h, struct prom *p)
{
	prom_family(p, "chorus_node_info", PROM_GAUGE, "This node: its id, name and version (always 1).");
	prom_sample(p, "chorus_node_info", 1, "node_id", h->node_id_hex, "name", h->cfg->name,
	            "version", CH_VERSION_STRING, NULL);
	prom_family(p, "chorus_node_start_time_seconds", PROM_GAUGE,
	            "When this node started, in seconds since the Unix epoch.");
	prom_sample(p, "chorus_node_start_time_seconds", (double)h->started_wall_ms / 1000.0, NULL);
	prom_family(p, "chorus_draining", PROM_GAUGE, "1 while the node drains (after SIGTERM).");
	prom_sample(p, "chorus_draining", h->draining ? 1 : 0, NULL);

	/* the request table: dispatch buckets are 2^(i+4) us, the last open */
	double le[DISPATCH_BUCKETS - 1];
	for (int i = 0; i < DISPATCH_BUCKETS - 1; i++)
		le[i] = (double)(UINT64_C(16) << i) / 1e6;
	static const struct {
		const char *name, *help;
		enum prom_type type;
	} req_families[] = {
		{"chorus_requests_total", "Requests taken, by request type.", PROM_COUNTER},
		{"chorus_request_errors_total", "Requests answered with an error, by request type.",
		 PROM_COUNTER},
		{"chorus_requests_refused_total",
		 "Requests refused before their handler (role, drain, not the leader), by type.",
		 PROM_COUNTER},
		{"chorus_request_duration_seconds",
		 "Time from taking a request to queueing its answer, by request type.", PROM_HISTOGRAM},
	};
	for (size_t f = 0; f < sizeof(req_families) / sizeof(req_families[0]); f++) {
		prom_family(p, req_families[f].name, req_families[f].type, req_families[f].help);
		int cur = 0;
		const char *name;
		for (const struct req_stats *s; (s = dispatch_next_stats(h->dispatch, &cur, &name));) {
			if (f == 0)
				prom_sample(p, req_families[f].name, (double)s->calls, "type", name, NULL);
			else if (f == 1)
				prom_sample(p, req_families[f].name, (double)s->errors, "type", name, NULL);
			else if (f == 2)
				prom_sample(p, req_families[f].name, (double)s->refused, "type", name, NULL);
			else
				prom_histogram(p, req_families[f].name, le, s->latency_buckets,
				               DISPATCH_BUCKETS - 1, s->latency_buckets[DISPATCH_BUCKETS - 1],
				               (double)s->latency_sum_us / 1e6, "type", name, NULL);
		}
	}

	/* refused frames by kind, summed over the peers */
	uint64_t forged = 0, tampered = 0, replayed = 0, truncated = 0, oversized = 0,
	         malformed = 0, unknown_session = 0, rate_limited = 0, stale = 0, busy = 0,
	         resent = 0, conn_refused = 0, conn_closed = 0;
	Chorus__PeerCounters **pcs = NULL;
	size_t npc = 0;
	if (h->rpc && rpc_peer_counters(h->rpc, &pcs, &npc) == 0) {
		for (size_t i = 0; i < npc; i++) {
			forged += pcs[i]->forged;
			tampered += pcs[i]->tampered;
			replayed += pcs[i]->replayed;
			truncated += pcs[i]->truncated;
			oversized += pcs[i]->oversized;
			malformed += pcs[i]->malformed;
			unknown_session += pcs[i]->unknown_session;
			rate_limited += pcs[i]->rate_limited;
			stale += pcs[i]->stale;
			busy += pcs[i]->busy;
			resent += pcs[i]->resent;
			conn_refused += pcs[i]->connections_refused;
			conn_closed += pcs[i]->connections_closed;
		}
	}
	rpc_peer_counters_free(pcs, npc);
	const struct {
		const char *kind;
		uint64_t n;
	} kinds[] = {
		{"forged", forged},       {"tampered", tampered},   {"replayed", replayed},
		{"truncated", truncated}, {"oversized", oversized}, {"malformed", malformed},
		{"unknown_session", unknown_session}, {"rate_limited", rate_limited},
		{"stale", stale},         {"busy", busy},
	};
	prom_family(p, "chorus_frames_refused_total", PROM_COUNTER,
	            "Frames refused by the sealed links, by why, summed over peers.");
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		prom_sample(p, "chorus_frames_refused_total", (double)kinds[i].n, "kind", kinds[i].kind,
		            NULL);
	prom_family(p, "chorus_frames_resent_total", PROM_COUNTER,
	            "Authentic resent requests answered again from the resend cache.");
	prom_sample(p, "chorus_frames_resent_total", (double)resent, NULL);
	prom_family(p, "chorus_connections_refused_total", PROM_COUNTER,
	            "Connections closed on arrival (over a connection cap).");
	prom_sample(p, "chorus_connections_refused_total", (double)conn_refused, NULL);
	prom_family(p, "chorus_connections_closed_total", PROM_COUNTER,
	            "Connections closed later (no handshake in time, refused frames, not reading).");
	prom_sample(p, "chorus_connections_closed_total", (double)conn_closed, NULL);

	/* sessions by role and key id, every key of the keyring listed */
	struct rpc_key_sessions ks[8];
	uint32_t nk = h->rpc ? rpc_key_sessions(h->rpc, ks, 8) : 0;
	uint32_t ids[SEAL_KEYS_MAX];
	uint32_t nids = seal_keyring_ids(h->kr, ids);
	for (uint32_t i = 0; i < nids && nk < 8; i++) {
		uint32_t k = 0;
		while (k < nk && ks[k].key_id != ids[i])
			k++;
		if (k == nk)
			ks[nk++] = (struct rpc_key_sessions){.key_id = ids[i]};
	}
	prom_family(p, "chorus_sessions", PROM_GAUGE,
	            "Live sealed-link sessions, by the peer's role and the key they were made with.");
	for (uint32_t i = 0; i < nk; i++) {
		char hex[SEAL_KEY_ID_HEX_BYTES];
		seal_key_id_hex(ks[i].key_id, hex);
		prom_sample(p, "chorus_sessions", ks[i].node_sessions, "role", "node", "key_id", hex, NULL);
		prom_sample(p, "chorus_sessions", ks[i].sessions - ks[i].node_sessions, "role", "client",
		            "key_id", hex, NULL);
	}
	prom_family(p, "chorus_key_primary", PROM_GAUGE,
	            "1 for the keyring's primary key, 0 for a key still accepted (rotation).");
	for (uint32_t i = 0; i < nk; i++) {
		char hex[SEAL_KEY_ID_HEX_BYTES];
		seal_key_id_hex(ks[i].key_id, hex);
		prom_sample(p, "chorus_key_primary", ks[i].key_id == seal_keyring_primary_id(h->kr),
		            "key_id", hex, NULL);
	}

	/* the journal */
	struct store_stats ss;
	store_stats_get(h->store, &ss);
	double cle[STORE_COMMIT_BUCKETS - 1];
	for (int i = 0; i < STORE_COMMIT_BUCKETS - 1; i++)
		cle[i] = (double)store_commit_bounds_us[i] / 1e6;
	prom_family(p, "chorus_journal_commit_seconds", PROM_HISTOGRAM,
	            "Journal (sqlite) commits that wrote rows: time to commit, fsync included.");
	prom_histogram(p, "chorus_journal_commit_seconds", cle, ss.commit_buckets,
	               STORE_COMMIT_BUCKETS - 1, ss.commit_buckets[STORE_COMMIT_BUCKETS - 1],
	               (double)ss.commit_sum_ns / 1e9, NULL);
	prom_family(p, "chorus_journal_commit_failures_total", PROM_COUNTER,
	            "Journal commits that failed (a full disk, an I/O error).");
	prom_sample(p, "chorus_journal_commit_failures_total", (double)ss.commit_failures, NULL);
	prom_family(p, "chorus_journal_bytes", PROM_GAUGE,
	            "Size of the journal on disk, by file (db: chorus.db, wal: its write-ahead log).");
	prom_sample(p, "chorus_journal_bytes", (double)ss.db_bytes, "file", "db", NULL);
	prom_sample(p, "chorus_journal_bytes", (double)ss.wal_bytes, "file", "wal", NULL);
	prom_family(p, "chorus_journal_failing", PROM_GAUGE, "1 while journal commits fail.");
	prom_sample(p, "chorus_journal_failing", h->journal_failing ? 1 : 0, NULL);
}

void host_metrics_fill(struct host *h, struct prom *p)
{
	host_metrics_own(h, p);
	for (uint32_t i = 0; i < h->service_count; i++)
		if (h->services[i].started && h->services[i].ops->metrics)
			h->services[i].ops->metrics(h->services[i].svc, p);
}

void host_event(struct host *h, const char *kind, const char *subject, const char *fmt, ...)
{
	if (!h->events)
		return;
	char msg[EVENT_MESSAGE_BYTES];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	events_add(h->events, clock_wall_ms(), kind, subject, msg);
}

struct events *host_events(struct host *h)
{
	return h->events;
}

/* ---- start-up ---- */

static int secret_setup(struct host *h, char *err, size_t err_len)
{
	char path[CONFIG_PATH_MAX + 16];
	const struct config *cfg = h->cfg;
	if (cfg->secret_file[0]) {
		snprintf(path, sizeof(path), "%s", cfg->secret_file);
	} else {
		snprintf(path, sizeof(path), "%s/secret", cfg->data_dir);
		struct stat stt;
		if (stat(path, &stt) != 0) {
			if (seal_secret_generate(path, err, err_len) != 0)
				return -1;
			log_info("link", "no cluster secret given: created %s (give it to clients with -k)",
			         path);
		}
	}
	snprintf(h->secret_path, sizeof(h->secret_path), "%s", path);
	/* a node needs the node keys: a client credential is refused here */
	h->kr = seal_keyring_load(path, SEAL_ROLE_NODE, err, err_len);
	if (!h->kr)
		return -1;
	uint32_t ids[SEAL_KEYS_MAX];
	uint32_t n = seal_keyring_ids(h->kr, ids);
	char hex[SEAL_KEYS_MAX][SEAL_KEY_ID_HEX_BYTES];
	for (uint32_t i = 0; i < n; i++)
		seal_key_id_hex(ids[i], hex[i]);
	log_info("link", "cluster secret: %s (key %s%s%s)", path, hex[0], n > 1 ? ", also accepting " : "",
	         n > 1 ? hex[1] : "");
	return 0;
}

/* The node's identity lives in DATA_DIR/node_id and in the journal's meta.
 * The file outlives a lost journal, so a journal younger than the identity
 * is noticed and said (the ids go on above the leased mark either way). */
static int node_identity(struct host *h, char *err, size_t err_len)
{
	const char *dir = h->cfg->data_dir;
	char file_hex[SEAL_ID_BYTES * 2 + 1] = "", db_hex[SEAL_ID_BYTES * 2 + 1] = "";
	int frc = ids_identity_get(dir, file_hex, sizeof(file_hex), err, err_len);
	if (frc != 0 && frc != CH_ERR_NOT_FOUND)
		return -1;
	int drc = store_meta_get(h->store, "node_id", db_hex, sizeof(db_hex));
	if (drc == 0 && (strlen(db_hex) != SEAL_ID_BYTES * 2 ||
	                 sodium_hex2bin(h->node_id, SEAL_ID_BYTES, db_hex, strlen(db_hex), NULL,
	                                NULL, NULL) != 0))
		drc = CH_ERR_INVALID;
	uint64_t task_mark, batch_mark;
	ids_marks(h->ids, &task_mark, &batch_mark);
	const char *hex;
	if (frc == 0) {
		hex = file_hex;
		if (store_created(h->store))
			log_warn("store", "the journal %s/chorus.db is new but this node's identity %s "
			                  "(%s/node_id) is older: the previous journal was lost or "
			                  "replaced, with its tasks and results; new task ids continue "
			                  "from %" PRIu64 ", above every id handed out before",
			         dir, file_hex, dir, task_mark);
		else if (drc == 0 && strcmp(db_hex, file_hex) != 0)
			log_warn("store", "the journal %s/chorus.db belongs to node %s, but this data "
			                  "dir's identity is %s: the journal was replaced; keeping the "
			                  "identity %s",
			         dir, db_hex, file_hex, file_hex);
	} else if (drc == 0) {
		hex = db_hex; /* a data dir from before node_id files: write it */
	} else {
		uint8_t id[SEAL_ID_BYTES];
		randombytes_buf(id, sizeof(id));
		sodium_bin2hex(file_hex, sizeof(file_hex), id, sizeof(id));
		hex = file_hex;
		if (ids_existed(h->ids))
			log_warn("store", "the journal %s/chorus.db and the node identity are new but "
			                  "task ids were handed out here before: new task ids continue "
			                  "from %" PRIu64,
			         dir, task_mark);
		else
			log_info("store", "new data dir %s: new journal, new node identity %s", dir, hex);
	}
	if (sodium_hex2bin(h->node_id, SEAL_ID_BYTES, hex, strlen(hex), NULL, NULL, NULL) != 0) {
		snprintf(err, err_len, "malformed node id %s", hex);
		return -1;
	}
	memcpy(h->node_id_hex, hex, SEAL_ID_BYTES * 2 + 1);
	if (frc != 0 && ids_identity_put(dir, hex, err, err_len) != 0)
		return -1;
	if (drc == 0 && strcmp(db_hex, hex) == 0)
		return 0;
	if (store_begin(h->store) != 0 || store_meta_put(h->store, "node_id", hex) != 0 ||
	    store_commit(h->store) != 0) {
		(void)store_rollback(h->store);
		snprintf(err, err_len, "cannot record the node id in the journal: %s",
		         store_last_error(h->store));
		return -1;
	}
	return 0;
}

static int signals_setup(struct host *h)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	h->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	return h->sig_fd < 0 ? -1 : 0;
}

/* ---- one iteration's pieces ---- */

/* One line when commits start failing, a reminder every
 * JOURNAL_REMINDER_MS while they do, one line when they work again: a full
 * disk must not write two lines per loop iteration forever. */
static void journal_note(struct host *h, int committed, const struct now *now)
{
	if (committed) {
		if (h->journal_failing && !store_tx_wrote(h->store))
			return; /* an empty commit: the disk may be as full as before */
		if (h->journal_failing)
			log_info("store", "journal commits work again after %.1f s (%" PRIu64
			                  " failed): failure cleared",
			         (double)(now->mono_ms - h->journal_failing_since_ms) / 1000.0,
			         h->journal_failed_count);
		h->journal_failing = 0;
		return;
	}
	if (!h->journal_failing) {
		h->journal_failing = 1;
		h->journal_failing_since_ms = h->journal_reminded_ms = now->mono_ms;
		h->journal_failed_count = 1;
		log_error("store", "journal commit failed (%s): requests that must be journaled are "
		                   "answered with a storage error and nothing new starts until a "
		                   "commit works again",
		          store_last_error(h->store));
		return;
	}
	h->journal_failed_count++;
	if (now->mono_ms - h->journal_reminded_ms >= JOURNAL_REMINDER_MS) {
		h->journal_reminded_ms = now->mono_ms;
		log_error("store", "journal commits still failing after %.0f s (%" PRIu64
		                   " failed; %s)",
		          (double)(now->mono_ms - h->journal_failing_since_ms) / 1000.0,
		          h->journal_failed_count, store_last_error(h->store));
	}
}

/* Writes what every service changed, commits, lets the services act on the
 * outcome, then sends the answers. */
static int commit_and_answer(struct host *h, const struct now *now)
{
	int rc = 0;
	store_set_quiet(h->store, 1); /* journal_note reports failures */
	for (uint32_t i = 0; i < h->service_count && rc == 0; i++)
		if (h->services[i].started && h->services[i].ops->flush)
			rc = h->services[i].ops->flush(h->services[i].svc, h->store);
	if (rc == 0)
		rc = store_commit(h->store);
	if (rc != 0)
		(void)store_rollback(h->store); /* a no-op when sqlite rolled back */
	store_set_quiet(h->store, 0);
	int committed = rc == 0;
	journal_note(h, committed, now);
	for (uint32_t i = 0; i < h->service_count; i++)
		if (h->services[i].started && h->services[i].ops->after_commit)
			h->services[i].ops->after_commit(h->services[i].svc, committed, now);
	if (h->rpc)
		rpc_send_outbox(h->rpc, committed);
	return rc;
}

void host_request_stop(struct host *h)
{
	if (h->draining)
		return;
	h->failed = 1;
	h->draining = 1;
	h->drain_index = (int)h->service_count - 1;
	dispatch_set_draining(h->dispatch, 1);
	log_info("node", "stopping on a fatal error: draining as on SIGTERM, then exit code 1");
}

static void start_drain(struct host *h, int signo)
{
	h->draining = 1;
	h->drain_index = (int)h->service_count - 1;
	dispatch_set_draining(h->dispatch, 1);
	log_info("node", "signal %d: draining (grace %u ms): no new tasks, waiting for running ones",
	         signo, h->cfg->shutdown_grace_ms);
}

/* SIGHUP: the key file is read again (rotation, as memberlist's keyring:
 * install a second key, make it primary, remove the old one). A file that
 * does not load keeps the keys in use, and says why. Sessions made with a
 * key no longer in the file are dropped (their peers handshake again with
 * a key they share); the services hear SIGHUP next (the cluster's links
 * take the new keys). */
static void keys_reload(struct host *h)
{
	char err[512] = "";
	struct seal_keyring *kr = seal_keyring_load(h->secret_path, SEAL_ROLE_NODE, err, sizeof(err));
	if (!kr) {
		log_error("link", "SIGHUP: keys not reloaded, the keys in use stay: %s", err);
		return;
	}
	uint32_t ids[SEAL_KEYS_MAX];
	uint32_t n = seal_keyring_ids(kr, ids);
	char hex[SEAL_KEYS_MAX][SEAL_KEY_ID_HEX_BYTES];
	for (uint32_t i = 0; i < n; i++)
		seal_key_id_hex(ids[i], hex[i]);
	struct seal_keyring *old = h->kr;
	h->kr = kr;
	uint32_t dropped = rpc_set_keyring(h->rpc, kr);
	seal_keyring_free(old);
	log_info("link", "SIGHUP: keys reloaded from %s: primary %s%s%s; %u session(s) made with a "
	                 "removed key dropped",
	         h->secret_path, hex[0], n > 1 ? ", also accepting " : "", n > 1 ? hex[1] : "",
	         dropped);
}

static void take_signals(struct host *h, const struct now *now)
{
	struct signalfd_siginfo si;
	while (read(h->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		int signo = (int)si.ssi_signo;
		if (signo == SIGTERM || signo == SIGINT) {
			if (!h->draining) {
				start_drain(h, signo);
			} else {
				log_warn("node", "second signal: stopping now");
				/* every service still draining stops waiting */
				for (int i = h->drain_index; i >= 0; i--)
					h->services[i].drain_started = 2;
			}
			continue;
		}
		if (signo == SIGHUP)
			keys_reload(h);
		for (uint32_t i = 0; i < h->service_count; i++)
			if (h->services[i].ops->on_signal)
				h->services[i].ops->on_signal(h->services[i].svc, signo, now);
	}
}

/* Services drain one at a time, last registered first. */
static void drain_advance(struct host *h, const struct now *now)
{
	while (h->drain_index >= 0) {
		struct service *s = &h->services[h->drain_index];
		if (!s->drain_started) {
			s->drain_started = 1;
			if (s->ops->drain)
				s->ops->drain(s->svc, now);
		}
		int hurry = s->drain_started == 2;
		if (!hurry && s->ops->drained && !s->ops->drained(s->svc, now))
			return;
		h->drain_index--;
	}
	h->closing = 1;
}

static uint64_t next_deadline(struct host *h)
{
	uint64_t next = UINT64_MAX;
	for (uint32_t i = 0; i < h->service_count; i++) {
		if (!h->services[i].ops->next_deadline)
			continue;
		uint64_t d = h->services[i].ops->next_deadline(h->services[i].svc);
		if (d < next)
			next = d;
	}
	return next;
}

static int loop(struct host *h)
{
	static struct pollfd fds[POLLFDS_MAX];
	for (;;) {
		uint64_t mono = clock_mono_ms();
		uint64_t next = next_deadline(h);
		int timeout = LOOP_IDLE_MS;
		if (next <= mono)
			timeout = 0;
		else if (next - mono < (uint64_t)timeout)
			timeout = (int)(next - mono);
		fds[0] = (struct pollfd){.fd = h->wake_fd, .events = POLLIN};
		fds[1] = (struct pollfd){.fd = h->sig_fd, .events = POLLIN};
		int nfds = 2;
		for (uint32_t i = 0; i < h->service_count; i++) {
			struct service *s = &h->services[i];
			s->fd_first = nfds;
			s->fd_count = s->ops->poll_fds ? s->ops->poll_fds(s->svc, fds + nfds,
			                                                    POLLFDS_MAX - nfds)
			                               : 0;
			nfds += s->fd_count;
		}
		int n = poll(fds, (nfds_t)nfds, timeout);
		if (n < 0 && errno != EINTR) {
			log_error("node", "poll: %s", strerror(errno));
			return 1;
		}
		h->now = clock_read();
		const struct now now = h->now;
		if (store_begin(h->store) != 0) {
			log_error("store", "cannot begin a transaction");
			return 1;
		}
		if (n > 0 && (fds[1].revents & POLLIN))
			take_signals(h, &now);
		if (n > 0 && (fds[0].revents & POLLIN)) {
			uint64_t v;
			ssize_t r = read(h->wake_fd, &v, sizeof(v));
			(void)r;
			/* read first, then clear: a host_wake after the clear writes
			 * again (the next poll wakes); one before it posted work
			 * this iteration takes below. Cleared the other way round,
			 * a write could be read with the flag still set, and the
			 * next post would not wake the loop. */
			atomic_store_explicit(&h->wake_pending, 0, memory_order_seq_cst);
		}
		rpc_take_ready(h->rpc, now.mono_ms);
		for (uint32_t i = 0; i < h->service_count; i++) {
			struct service *s = &h->services[i];
			if (!s->fd_count || !s->ops->on_poll)
				continue;
			int ready = 0;
			for (int k = 0; k < s->fd_count; k++)
				ready |= fds[s->fd_first + k].revents != 0;
			if (ready)
				s->ops->on_poll(s->svc, fds + s->fd_first, s->fd_count, &now);
		}
		for (uint32_t i = 0; i < h->service_count; i++)
			if (h->services[i].ops->tick)
				h->services[i].ops->tick(h->services[i].svc, &now);
		(void)commit_and_answer(h, &now);
		rpc_tick(h->rpc, now.mono_ms);
		if (h->draining) {
			drain_advance(h, &now);
			if (h->closing)
				return h->failed ? 1 : 0;
		}
	}
}

/* nng 1.5.2 can hang in nng_close while a connection is half set up
 * (nanomsg/nng#1813). By then the journal is closed and every answer sent,
 * so a stuck teardown ends the process instead of hanging it. */
static void teardown_stuck(int sig)
{
	(void)sig;
	static const char msg[] = "chorusd: shutdown stuck in the transport library: exiting\n";
	ssize_t n = write(2, msg, sizeof(msg) - 1);
	(void)n;
	_exit(0);
}

static void host_free(struct host *h)
{
	/* the durable part first: nothing below touches the journal */
	store_close(h->store);
	h->store = NULL;
	ids_close(h->ids);
	h->ids = NULL;
	signal(SIGALRM, teardown_stuck);
	alarm(10);
	/* the transport: parked calls are cancelled while their services
	 * still exist */
	rpc_destroy(h->rpc);
	h->rpc = NULL;
	for (int i = (int)h->service_count - 1; i >= 0; i--)
		if (h->services[i].ops->stop)
			h->services[i].ops->stop(h->services[i].svc);
	dispatch_destroy(h->dispatch);
	events_destroy(h->events);
	if (h->wake_fd >= 0)
		close(h->wake_fd);
	if (h->sig_fd >= 0)
		close(h->sig_fd);
	if (h->lock_fd >= 0)
		close(h->lock_fd);
	seal_keyring_free(h->kr);
	free(h);
}

int host_run(const struct config *cfg, int (*register_services)(struct host *h))
{
	char err[512] = "";
	if (sodium_init() < 0) {
		log_error("node", "libsodium failed to initialise");
		return 1;
	}
	struct host *h = calloc(1, sizeof(*h));
	if (!h)
		return 1;
	h->cfg = cfg;
	h->wake_fd = h->sig_fd = h->lock_fd = -1;
	h->started_wall_ms = clock_wall_ms();
	int code = 1;

	/* connections are capped by the transport (node/io/rpc.c), not by
	 * the soft descriptor limit, which is often 1,024 */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (signals_setup(h) != 0) {
		log_error("node", "cannot set up signals: %s", strerror(errno));
		goto out;
	}
	h->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (h->wake_fd < 0)
		goto out;
	/* every way start-up fails below ends in one line that says why */
	/* the data dir is ours before anything in it is read (the journal's
	 * WAL included: another chorusd may be writing it) */
	char lock_path[CONFIG_PATH_MAX + 8];
	snprintf(lock_path, sizeof(lock_path), "%s/lock", cfg->data_dir);
	if (store_make_dirs(cfg->data_dir) != 0) {
		log_error("node", "fatal: cannot open the journal: data dir %s: %s", cfg->data_dir,
		          strerror(errno));
		goto out;
	}
	h->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (h->lock_fd < 0 || flock(h->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		log_error("node", "data dir %s is in use by another chorusd (%s)", cfg->data_dir,
		          strerror(errno));
		goto out;
	}
	if (store_open(&h->store, cfg->data_dir, cfg->synchronous, err, sizeof(err)) != 0) {
		log_error("node", "fatal: cannot open the journal: %s", err);
		goto out;
	}
	if (cfg->journal_check) {
		char found[512];
		if (store_quick_check(h->store, found, sizeof(found)) != 0) {
			log_error("node", "fatal: the journal %s/chorus.db fails sqlite's quick_check "
			                  "(%s): refusing to start on a damaged journal; move chorus.db* "
			                  "aside (ids stay unique), or set journal_check = off",
			          cfg->data_dir, found);
			goto out;
		}
	} else {
		log_info("store", "journal_check = off: the journal was not checked at start");
	}
	if (ids_open(&h->ids, cfg->data_dir, err, sizeof(err)) != 0) {
		log_error("node", "fatal: %s", err);
		goto out;
	}
	if (node_identity(h, err, sizeof(err)) != 0) {
		log_error("node", "fatal: cannot record the node identity: %s", err);
		goto out;
	}
	if (secret_setup(h, err, sizeof(err)) != 0) {
		log_error("link", "%s", err);
		goto out;
	}
	h->dispatch = dispatch_create();
	h->events = events_create(0);
	if (!h->dispatch || !h->events || register_services(h) != 0) {
		log_error("node", "cannot register the services");
		goto out;
	}
	h->now = clock_read();
	struct now now = h->now;
	for (uint32_t i = 0; i < h->service_count; i++) {
		struct service *s = &h->services[i];
		err[0] = '\0';
		if (s->ops->start && s->ops->start(s->svc, h, &now, err, sizeof(err)) != 0) {
			log_error(s->ops->name, "%s", err[0] ? err : "cannot start");
			goto out;
		}
		s->started = 1;
	}
	/* what the services wrote while starting (recovery) */
	if (store_begin(h->store) != 0 || commit_and_answer(h, &now) != 0)
		goto out;

	/* the transport last: nng's threads start here, after workers forked */
	struct rpc_handler rh = dispatch_rpc_handler(h->dispatch);
	struct rpc_config rc = {
		.listen = cfg->listen,
		.frame_bytes_max = cfg->frame_bytes_max,
		.kr = h->kr,
		.node_id = h->node_id,
		.wake = host_wake,
		.wake_arg = h,
	};
	if (rpc_create(&h->rpc, &rc, &rh, err, sizeof(err)) != 0 ||
	    rpc_listen(h->rpc, err, sizeof(err)) != 0) {
		log_error("node", "%s", err);
		goto out;
	}
	log_info("node", "chorusd %s node %s (%s) listening on %s, data in %s, %u worker(s)",
	         CH_VERSION_STRING, cfg->name, h->node_id_hex, cfg->listen, cfg->data_dir,
	         cfg->workers);
	code = loop(h);
	/* the last iteration: closing, so every parked call is answered */
	h->closing = 1;
	h->now = now = clock_read();
	if (store_begin(h->store) == 0)
		(void)commit_and_answer(h, &now);
	if (code == 0)
		log_info("node", "stopped cleanly");
out:
	host_free(h);
	return code;
}
