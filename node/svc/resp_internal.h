/*
 * resp_internal.h - what the two files of the RESP front door share (not
 * for other modules): its bounds, its state (the service, connections,
 * reply slots, cache calls, copied commands), and the functions one file
 * calls in the other. resp_svc.c holds the service (listener, connections,
 * reading and parsing, the queue of replies, cache calls and their MOVED
 * retries, ordering, writing, closing, status, start/stop); resp_exec.c
 * the commands (each one translated into CacheReqs, multi-key replies
 * assembled, AUTH/HELLO/SELECT/INFO/CLIENT/COMMAND/CONFIG, MULTI/EXEC).
 */
#ifndef CHORUS_SVC_RESP_INTERNAL_H
#define CHORUS_SVC_RESP_INTERNAL_H

#include "svc/resp_svc.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "chorus.h"
#include "config.h"
#include "core/cstore.h"
#include "core/resp.h"
#include "core/resp_cmd.h"
#include "io/log.h"
#include "lib/arena.h"
#include "lib/err.h"
#include "svc/ports.h"
#include "svc/service.h"

/* What INFO and HELLO say: a Redis 7.0 for clients that check versions. */
#define REDIS_VERSION_TEXT "7.0.0-chorus"

#define CONN_REPLIES_MAX 1024u    /* replies queued per connection; then reading pauses */
#define CONN_READ_BYTES 16384u    /* room asked of the parser per read */
#define CONN_READS_PER_POLL 16    /* fairness between connections */
#define ACCEPTS_PER_POLL 64
#define AUTH_FAILURES_MAX 10u     /* failed AUTH/HELLO AUTH, then the connection closes */
#define MULTI_COMMANDS_MAX 100000u
#define KEYS_TRACKED_MAX 64u      /* more keys: ordered like a whole-cache command */
#define CLIENT_NAME_BYTES_MAX 128u
#define OUT_KEEP_BYTES ((size_t)64 * 1024) /* an emptied output buffer above this is freed */
#define SLOT_BUF_KEEP_BYTES ((size_t)4096)
#define FREE_SLOTS_MAX 4096u
#define DRAIN_GRACE_MS 1000u      /* drain: owed answers awaited this long past the cache's */
#define LISTEN_BACKLOG 511
#define ERR_TEXT_BYTES 200u
#define ADDR_TEXT_BYTES 64u
#define LOG_EVERY_MS 10000u
#define IDLE_CHECK_MS 1000u
#define PATTERN_STACK_BYTES 512u
/* CH_ERR_MOVED (maps differ for a moment; nothing was applied) is retried
 * as libchorus does (docs/cache-client.md): 6 tries, 25 ms apart, doubling
 * to 400 ms. A Redis client would not retry it. */
#define MOVED_TRIES 6u
#define MOVED_RETRY_MS_FIRST 25u
#define MOVED_RETRY_MS_MAX 400u

struct slot;
struct conn;
struct resp_svc;

/* One cache call's callback argument: the slot and which of its calls.
 * A call still unanswered when submit() returns keeps its request, packed,
 * so that CH_ERR_MOVED can be retried (see retry_due, resp_svc.c). */
struct sub {
	struct slot *slot;
	uint32_t index;
	uint8_t *req;             /* packed CacheReq (owned), NULL = none kept */
	size_t req_bytes;
	uint32_t tries;           /* MOVED answers retried so far */
	uint64_t retry_at_ms;     /* while on the retry list */
	struct sub *retry_next;
	bool fake_moved;          /* test hook: answer MOVED when due */
};

/* MGET: one value as it came back. */
struct mval {
	char *data; /* owned */
	size_t len;
	bool found;
};

typedef void (*slot_reply_fn)(struct slot *s, uint32_t index, int code,
                              const Chorus__CacheResp *r, const char *err);
typedef void (*slot_finish_fn)(struct slot *s, struct resp_out *o);

/* One reply owed, in the connection's queue (or on the free list). */
struct slot {
	struct slot *next;
	struct conn *conn;
	struct resp_out buf;      /* the reply while an earlier one is not out yet */
	slot_reply_fn on_reply;   /* each call's answer */
	slot_finish_fn finish;    /* multi-key: the assembled reply once all answered */
	struct sub one;           /* a single call's argument */
	struct sub *subs;         /* multi-key: one per call (owned) */
	struct mval *vals;        /* MGET (owned) */
	uint32_t waiting;         /* calls not answered yet */
	uint32_t count;           /* calls made (multi-key) */
	int64_t acc;              /* DEL / EXISTS: the sum */
	int aux;                  /* per command: TTL unit, INFO sections, ... */
	int err_code;             /* multi-key: the first failure */
	char err_text[ERR_TEXT_BYTES];
	bool done;
	/* what the calls touch while they wait (see can_run, resp_svc.c) */
	bool writes, whole_db;
	uint32_t key_count;
	uint64_t key_hash;        /* key_count == 1 */
	uint64_t *key_hashes;     /* key_count > 1 (owned) */
};

/* A command copied aside: deferred (it must wait) or queued by MULTI. */
struct dcmd {
	struct dcmd *next;
	struct resp_arg *argv; /* into this allocation */
	uint32_t argc;
	size_t bytes;          /* on the wire */
	size_t size;           /* of this allocation */
};

struct conn {
	struct conn *prev, *next;  /* the live list, or the dead list */
	struct resp_svc *svc;
	int fd;                    /* -1 once closed */
	uint64_t id;
	char addr[ADDR_TEXT_BYTES], laddr[ADDR_TEXT_BYTES];
	struct resp_reader rd;
	struct resp_out out;
	struct slot *head, *tail;  /* replies owed, in order */
	uint32_t slot_count;
	uint32_t calls;            /* cache callbacks still to come */
	uint32_t waiting_slots;    /* slots with calls outstanding */
	struct dcmd *dq_head, *dq_tail; /* deferred commands, run first */
	uint32_t dq_count;
	struct dcmd *mq_head, *mq_tail; /* MULTI's queue */
	uint32_t mq_count;
	size_t mq_bytes;
	bool in_multi, multi_dirty;
	bool authed;
	uint32_t auth_failures;
	uint32_t db;
	const char *cache;         /* the selected cache's name (the port's) */
	char *name;                /* CLIENT SETNAME (owned), NULL = none */
	const char *last_cmd;
	uint64_t created_ms, active_ms; /* monotonic */
	bool kick;     /* something changed: process and flush at the next pass */
	bool eof;      /* the client closed its side: finish, flush, close */
	bool closing;  /* QUIT, a protocol error, the AUTH cap: flush, then close */
	bool kill;     /* close now, without flushing (output limit, socket error) */
	bool dead;     /* closed, waiting for callbacks */
	const char *kill_why;
};

struct resp_svc {
	struct host *host;
	const struct config *cfg;
	const struct config_resp *rc;
	const struct cache_port *cache;
	int listen_fd;
	char listen_addr[sizeof(((struct config_resp *)0)->listen) + 8]; /* bound, "" = off */
	uint16_t listen_port;
	struct resp_limits limits;
	bool has_password;
	uint8_t pw_key[crypto_generichash_KEYBYTES];
	uint8_t pw_hash[crypto_generichash_BYTES];
	const char *db0;           /* the cache of db 0 */
	struct conn *conns, *dead;
	uint32_t conn_count;
	uint64_t next_id;
	struct conn **polled;      /* poll_fds' order, for on_poll */
	uint32_t polled_count, polled_cap;
	bool listen_polled;
	int poll_budget;           /* fds the host offered at the last poll */
	struct conn *current;      /* the connection being processed */
	struct slot *free_slots;
	uint32_t free_slot_count;
	bool kick;                 /* a connection needs a pass */
	struct sub *retries;       /* calls answered MOVED, to submit again */
	struct sub *submitting;    /* the call inside submit() now */
	const Chorus__CacheReq *submitting_req; /* its request (a MOVED answered inside submit() is retried) */
	bool submit_answered;      /* ... and it was answered in there */
	uint32_t test_moved;       /* CHORUS_TEST_RESP_MOVED: calls answered MOVED first */
	bool draining;
	bool stopped;              /* stop() ran; freed with its last dead connection */
	uint64_t drain_started_ms;
	uint64_t idle_checked_ms;
	Chorus__CacheResp absent;  /* a miss, for calls that answer CH_ERR_NOT_FOUND */
	/* counters (INFO, status) */
	uint64_t connections_received, rejected, commands, errors, auth_failures;
	uint64_t protocol_errors, output_closed, idle_closed, deferred, moved_retries;
};

/* ---- resp_svc.c: the service and its connections ---- */

uint64_t resp_mono_ms(const struct resp_svc *s);
int64_t resp_wall_ms(const struct resp_svc *s);
/* Error replies, each counted in the service's errors. */
void resp_err_text(struct conn *c, struct resp_out *o, const char *text);
void resp_err_fmt(struct conn *c, struct resp_out *o, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void resp_err_cmd(struct conn *c, struct resp_out *o, enum resp_cmd_err e, const char *name,
             const struct resp_arg *detail);
/* The queue of replies owed (see resp_svc.c). */
struct slot *resp_slot_push(struct conn *c);
struct resp_out *resp_slot_out(struct slot *sl);
void resp_conn_advance(struct conn *c);
struct resp_out *resp_sync_out(struct conn *c);
void resp_slot_track(struct conn *c, struct slot *sl, const struct resp_cmd_info *ci,
                const struct resp_command *cmd);
/* One cache call for sub, answered through sub->slot's on_reply. */
void resp_call(struct conn *c, struct sub *sub, const Chorus__CacheReq *req);

/* ---- resp_exec.c: the commands ---- */

/* A copy of cmd in one allocation (the caller owns it: free()), NULL when
 * out of memory. */
struct dcmd *resp_dcmd_new(const struct resp_command *cmd);
void resp_dcmd_list_free(struct dcmd **head, struct dcmd **tail);
void resp_multi_reset(struct conn *c);
void resp_run_command(struct conn *c, const struct resp_command *cmd);

#endif /* CHORUS_SVC_RESP_INTERNAL_H */
