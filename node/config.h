/*
 * config.h - chorusd settings: defaults, then an INI file (libinih), then
 * environment variables, then command-line flags (getopt_long). Later
 * sources override earlier ones.
 *
 * Every flag --some-flag except --pool can be given as the variable
 * CHORUS_SOME_FLAG (lists comma-separated); CHORUS_CONFIG names the file
 * when --config does not; an empty variable counts as unset.
 *
 * INI layout (see deploy/chorus.conf.example):
 *   [node]   name, listen, data_dir, secret, workers, prefetch, log_level,
 *            log_format, synchronous, journal_check, frame_bytes_max, result_ttl,
 *            queue_max, default_timeout, shutdown_grace, plugins (comma list)
 *   [tasks]  max_attempts, backoff, backoff_max, output_max
 *   [supervisor] intensity, period
 *   [exec]   allow (comma-separated absolute paths)
 *   [pool NAME] workers (default 1), handlers (comma list, at least one)
 *   [cache]  partitions, replicas, memory_max, key_bytes_max, value_bytes_max,
 *            timeout, persist (off, on or an absolute path), persist_interval,
 *            persist_stop_timeout
 *   [cache NAME] db, ttl, memory_max, entries_max, touch_on_read, consistency
 *   [resp]   listen, password, password_file, allow_open, max_clients,
 *            bulk_bytes_max, multibulk_count_max, query_bytes_max,
 *            inline_bytes_max, output_bytes_max, idle_timeout
 *   [http]   listen, auth (open|all), request_timeout, max_connections
 * Durations accept "250ms", "5s", "2m", "1h" or plain milliseconds.
 * Sizes accept "512", "64k", "16M", "1G" (bytes, binary units).
 * Unknown sections or keys and bad values are errors naming file:line.
 */
#ifndef CHORUS_CONFIG_H
#define CHORUS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_POOLS_MAX 16
#define CONFIG_LIST_MAX 64
#define CONFIG_PATH_MAX 1024
#define CONFIG_TAGS_MAX 8

struct config_pool {
	char name[32];
	uint32_t workers;
	char *handlers[CONFIG_LIST_MAX]; /* owned */
	uint32_t handler_count;
};

/* A named cache (issue #12): [cache NAME] sections. "default" exists
 * always (db 0 unless another cache takes it). */
#define CONFIG_CACHES_MAX 16
#define CONFIG_PERSIST_INTERVAL_MS_MIN 100u
#define CONFIG_PERSIST_INTERVAL_MS_MAX (7ull * 86400 * 1000)
#define CONFIG_PERSIST_STOP_TIMEOUT_MS_DEFAULT 60000u
#define CONFIG_PERSIST_STOP_TIMEOUT_MS_MIN 1000u
#define CONFIG_PERSIST_STOP_TIMEOUT_MS_MAX (24ull * 3600 * 1000)
#define CONFIG_CACHE_NAME_BYTES_MAX 48
struct config_cache {
	char name[CONFIG_CACHE_NAME_BYTES_MAX + 1];
	int32_t db;                 /* RESP SELECT index, -1 = none */
	uint64_t ttl_ms;            /* default TTL, 0 = none */
	size_t memory_max;          /* bytes held on this node, LRU above; 0 = [cache] memory_max */
	uint64_t entries_max;       /* 0 = no limit */
	int touch_on_read;          /* a hit renews the default TTL (ConCache) */
	int consistency;            /* 1 one, 2 quorum (default), 3 all */
};

/* [resp]: the Redis-protocol front door of the cache (svc/resp_svc.c). */
#define CONFIG_RESP_CLIENTS_MAX 448 /* the host polls 512 fds; the rest is for workers */
#define CONFIG_RESP_PASSWORD_BYTES_MAX 512
struct config_resp {
	char listen[256];             /* HOST:PORT; "" = no listener (default) */
	char password[CONFIG_RESP_PASSWORD_BYTES_MAX + 1]; /* "" = none */
	char password_file[CONFIG_PATH_MAX]; /* read at start, one line */
	int allow_open;               /* serve a non-loopback address without a password */
	uint32_t clients_max;         /* default 256 */
	size_t bulk_bytes_max;        /* one argument; default 64 MiB */
	uint32_t multibulk_count_max; /* arguments of one command; default 1,048,576 */
	size_t query_bytes_max;       /* received, not yet parsed; default 128 MiB */
	size_t inline_bytes_max;      /* an inline command line; default 64 KiB */
	size_t output_bytes_max;      /* replies not yet read by the client; default 64 MiB */
	uint32_t idle_timeout_ms;     /* close a client idle this long; 0 = never (default) */
};

/* [http]: the HTTP service (svc/http_svc.c, docs/http.md). */
#define CONFIG_HTTP_CONNECTIONS_MAX 256
struct config_http {
	char listen[256];             /* HOST:PORT; "" = no listener (default) */
	int auth_all;                 /* every request needs the token (--http-auth all) */
	uint32_t request_timeout_ms;  /* a request's head and body, and a stalled
	                                 answer; default 10 s */
	uint32_t connections_max;     /* default 128 */
};

struct config {
	char name[64];                 /* default: hostname */
	char listen[256];              /* default tcp://127.0.0.1:7400 */
	char data_dir[CONFIG_PATH_MAX];/* default ./chorus-data */
	char secret_file[CONFIG_PATH_MAX]; /* "" = DATA_DIR/secret, created if missing */
	char config_file[CONFIG_PATH_MAX];
	uint32_t workers;              /* default pool size; default 2 */
	uint32_t prefetch;             /* default 2 */
	int log_level;                 /* enum log_level */
	int log_json;
	int synchronous;               /* enum store_sync; default NORMAL */
	int journal_check;             /* quick_check the journal at start; default 1 */
	size_t frame_bytes_max;        /* default 16 MiB */
	uint64_t result_ttl_ms;        /* default 1 h */
	uint32_t queue_max;            /* default 1,000,000 */
	uint32_t default_timeout_ms;   /* default 0 = none */
	uint32_t shutdown_grace_ms;    /* default 10 s */
	uint32_t max_attempts;         /* transient default; default 3 */
	uint32_t backoff_ms;           /* default 100 */
	uint32_t backoff_max_ms;       /* default 30 s */
	size_t output_max;             /* default 1 MiB */
	uint32_t intensity;            /* default 10 */
	uint32_t period_ms;            /* default 5 s */
	char *exec_allow[CONFIG_LIST_MAX]; /* owned, NULL-terminated */
	uint32_t exec_allow_count;
	char *plugins[CONFIG_LIST_MAX];    /* owned */
	uint32_t plugin_count;
	struct config_pool pools[CONFIG_POOLS_MAX]; /* named pools (not "default") */
	uint32_t pool_count;

	/* [cluster]: membership (SWIM) and placement */
	char *seeds[CONFIG_LIST_MAX];  /* owned, NULL-terminated: addresses of other nodes */
	uint32_t seed_count;
	char *tags[CONFIG_TAGS_MAX + 1]; /* owned, NULL-terminated */
	uint32_t tag_count;
	char advertise[256];           /* address others reach us at; "" = listen */
	int advertise_auto;            /* advertise was made from the host name (a
	                                * wildcard listen address, no --advertise) */
	uint32_t gossip_period_ms;     /* SWIM protocol period; default 1 s */
	uint32_t probe_timeout_ms;     /* direct ping timeout; 0 = half the period */
	uint32_t reap_after_ms;        /* forget dead/left members after; default 60 s */

	/* election and schedules (issue #11) */
	uint32_t voters_target;        /* voters the leader grows the set to; default 3 */
	uint32_t election_timeout_ms;  /* Raft's minimum election timeout; default 500 ms */
	uint32_t raft_snapshot_entries; /* snapshot after this many applied entries; 8192 */
	uint32_t voter_dead_ms;        /* a voter dead this long is replaced; default 30 s */
	int bootstrap;                 /* 1: start a new cluster's voter set (default: when no seeds) */
	char *voters[CONFIG_LIST_MAX]; /* owned: --voters pins the set to these member names */
	uint32_t voter_count;

	/* the cache (issue #12): [cache] and [cache NAME] */
	struct config_cache caches[CONFIG_CACHES_MAX]; /* "default" first */
	uint32_t cache_count;
	uint32_t cache_partitions;     /* P, default 271 */
	uint32_t cache_replicas;       /* R (primary included), default 3 */
	size_t cache_memory_max;       /* per cache per node, default 256 MiB */
	size_t cache_key_bytes_max;    /* default 64 KiB */
	size_t cache_value_bytes_max;  /* default 8 MiB */
	uint32_t cache_timeout_ms;     /* replicas' answers, default 2 s */
	/* persistence (svc/cache_persist.c): off (default), or a snapshot file,
	 * DATA_DIR/cache.db for "on" or an absolute path */
	int cache_persist;
	char cache_persist_path[CONFIG_PATH_MAX]; /* "" = DATA_DIR/cache.db */
	uint64_t cache_persist_interval_ms; /* 0 = at shutdown only (default) */
	uint64_t cache_persist_stop_timeout_ms; /* the stop snapshot gives up after it; 60 s */
	uint32_t cache_compute_max;    /* get-or-compute tasks in flight per node, default 1024 */
	uint32_t cache_compute_waiters_max; /* callers waiting on one key's compute, default 1024 */

	struct config_resp resp;       /* [resp] and --resp */
	struct config_http http;       /* [http], --http and --http-auth */

	char env_used[1024];           /* names of the variables applied, space-separated (for the log) */
};

void config_defaults(struct config *c);
/* Parses argv (after defaults): reads the file (--config FILE, else
 * CHORUS_CONFIG), then the CHORUS_* variables, then the other flags, then
 * resolves the advertised address (config_resolve_advertise with this
 * host's name). Returns 0 to run, 1 when --help/--version was printed
 * (exit 0), or -1 with a message in err (exit 2). */
int config_load(struct config *c, int argc, char **argv, char *err, size_t err_len);
/* With no advertise set and a wildcard tcp:// listen address (0.0.0.0, [::],
 * *, or none), sets advertise to tcp://HOSTNAME:PORT and advertise_auto.
 * 0, or -1 with err when hostname is empty or too long. */
int config_resolve_advertise(struct config *c, const char *hostname, char *err, size_t err_len);

/* How a host name resolves on this host. */
enum config_host_kind {
	CONFIG_HOST_UNRESOLVED, /* no address */
	CONFIG_HOST_LOOPBACK,   /* loopback addresses only (127.0.0.0/8, ::1) */
	CONFIG_HOST_ROUTABLE,   /* at least one other address */
};
const char *config_host_kind_name(enum config_host_kind k);
/* getaddrinfo() on host (a name or a numeric address): blocks for as long
 * as the resolver takes (DNS timeouts included). */
enum config_host_kind config_host_resolve(const char *host);
/* The risk of an advertised address made from the host name
 * (advertise_auto), for a WARN line at start: the name does not resolve
 * here, or resolves to loopback only (Debian's /etc/hosts maps the host
 * name to 127.0.1.1) while a seed resolves to another address, so the
 * cluster spans hosts that will dial the name. resolve is
 * config_host_resolve (tests pass their own). Returns 1 with the warning
 * in msg, or 0 (nothing to say: advertise was given, or the name looks
 * reachable). */
int config_advertise_risk(const struct config *c, enum config_host_kind (*resolve)(const char *host),
			  char *msg, size_t msg_len);
/* Just the INI file (used by config_load and the tests). */
int config_load_file(struct config *c, const char *path, char *err, size_t err_len);
void config_free(struct config *c);
#include <stdio.h>
void config_usage(FILE *out);

/* "250ms" / "5s" / "2m" / "1h" / "1500" -> ms. 0 ok, -1 bad. */
int config_parse_duration_ms(const char *s, uint64_t *ms);
/* "512" / "64k" / "16M" / "1G" -> bytes. 0 ok, -1 bad. */
int config_parse_size(const char *s, size_t *bytes);
/* "HOST:PORT" (HOST a name, an IPv4 address or [IPv6]; PORT 1..65535) ->
 * host without brackets and port. 0 ok, -1 bad. */
int config_parse_hostport(const char *s, char *host, size_t host_len, uint16_t *port);
/* Whether host (as config_parse_hostport gives it) is a loopback address:
 * "localhost", 127.0.0.0/8, ::1 or ::ffff:127.x.y.z. */
int config_host_is_loopback(const char *host);

#endif
