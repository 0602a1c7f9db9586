/*
 * swim.h - cluster membership: a pure SWIM state machine with the Lifeguard
 * extensions.
 *
 * Owns this node's view of the cluster: every member it knows (id, name,
 * address, tags, capacity, load, protocol version, state and incarnation),
 * the failure detector (probe, indirect probe, suspicion), the dissemination
 * queue of membership updates, push-pull anti-entropy, joining via seed
 * addresses, graceful leave and reaping of dead members.
 *
 * Sources (cited in swim.c where each rule is applied):
 *   - SWIM: Das, Gupta, Motivala, "SWIM: Scalable Weakly-consistent
 *     Infection-style Process Group Membership Protocol", DSN 2002, §4
 *     (round-robin probe order, ping-req, suspicion, incarnations,
 *     piggybacked dissemination).
 *   - Lifeguard: Dadgar, Phillips, Currey, "Lifeguard: Local Health
 *     Awareness for More Accurate Failure Detection", HashiCorp 2018:
 *     §3 local health multiplier and nacks, §4 suspicion timeouts that
 *     shrink with independent confirmations, buddy system.
 *   - hashicorp/memberlist: retransmit limit, push-pull with dead softened
 *     to suspect, push-pull interval scaled with cluster size.
 *
 * Pure: no clock, no sockets, no threads, no libc PRNG. `now_ms` comes in with
 * every call and is the MONOTONIC clock (lib/clock.h `struct now`.mono_ms):
 * every timeout, suspicion and backoff runs on it, so a step of the wall
 * clock (NTP, `date -s`) cannot expire them all at once. The core still
 * never lets its own time go back if a caller hands it a smaller value.
 * Random numbers come from lib/rng.h (xoshiro256**) seeded by the caller
 * (swim_config.seed). Errors are lib/err.h codes (ERR_*), mapped to the
 * public CH_ERR_* codes by the shell. The core asks its caller to act
 * through `struct swim_effects`: send a message to an address, report a
 * member's change. node/codec/gossip.h maps `struct swim_msg` to the wire
 * (protobuf `Gossip`) and back.
 *
 * Metadata (capacity, load, tags, name, address) travels with `alive`
 * updates and is versioned by the incarnation: swim_set_meta() bumps the
 * incarnation (as memberlist's UpdateNode does). Only the member itself ever
 * bumps its incarnation, so a newer metadata update also proves life. The
 * shell should call swim_set_meta() on meaningful changes only (e.g. load
 * at most once a period), since every call is one update to disseminate.
 *
 * Bounds: members (members_max), piggybacked updates per message
 * (piggyback_max <= SWIM_PIGGYBACK_MAX), the update queue (updates_max),
 * pending indirect probes we relay for others (relays_max), seeds
 * (SWIM_SEEDS_MAX), string and tag sizes (SWIM_*_BYTES_MAX).
 *
 * Threading: none; one caller (the node's loop thread). Effects are called
 * synchronously from inside swim_* calls and must not call back into the
 * core. Pointers to members are valid until the next call into the core.
 */
#ifndef CHORUS_CORE_SWIM_H
#define CHORUS_CORE_SWIM_H

#include <stddef.h>
#include <stdint.h>

#define SWIM_ID_BYTES 16
#define SWIM_NAME_BYTES_MAX 64     /* including the NUL */
#define SWIM_ADDR_BYTES_MAX 128    /* including the NUL */
#define SWIM_TAG_BYTES_MAX 32      /* one tag, including the NUL */
#define SWIM_TAGS_MAX 8            /* tags per member */
#define SWIM_PIGGYBACK_MAX 32      /* updates carried by one message */
#define SWIM_SEEDS_MAX 16
#define SWIM_SUSPICION_K_MAX 8     /* Lifeguard K: confirmations counted */
#define SWIM_LHM_MAX 8             /* Lifeguard: local health multiplier 0..8 */
#define SWIM_PROTO_VERSION 1

/* Member states. The numeric order is the precedence at equal incarnation
 * (SWIM §4.2 plus memberlist): left > dead > suspect > alive. */
enum swim_state {
	SWIM_ALIVE = 0,
	SWIM_SUSPECT = 1,
	SWIM_DEAD = 2,
	SWIM_LEFT = 3,
};
const char *swim_state_name(int state);

enum swim_msg_type {
	SWIM_MSG_PING = 1,        /* direct probe; `target` = the id we mean to probe */
	SWIM_MSG_ACK = 2,         /* answer to PING (same seq), also relayed from ping-req */
	SWIM_MSG_PING_REQ = 3,    /* ask the receiver to probe `target` at `target_addr` for us */
	SWIM_MSG_NACK = 4,        /* Lifeguard §3: the relay got no ack from the target */
	SWIM_MSG_PUSH_PULL = 5,   /* full state; the receiver answers with its own full state */
	SWIM_MSG_PUSH_PULL_REPLY = 6,
	SWIM_MSG_GOSSIP = 7,      /* updates only, no answer (used by leave) */
};
#define SWIM_MSG_TYPE_COUNT 8
const char *swim_msg_type_name(int type);

/* One member's state as it travels: piggybacked on messages and listed in
 * push-pull. Strings are views: in messages handed out by the core they
 * point into the core's memory (valid during the send effect); in messages
 * handed in, into the caller's (valid during the call). NULL = "". */
struct swim_update {
	uint8_t id[SWIM_ID_BYTES];
	uint8_t from[SWIM_ID_BYTES];  /* suspect/dead: who said so (Lifeguard confirmations) */
	uint32_t incarnation;         /* < UINT32_MAX */
	uint8_t state;                /* enum swim_state */
	uint8_t tag_count;            /* <= SWIM_TAGS_MAX */
	uint16_t proto_version;
	uint32_t capacity;            /* worker slots */
	uint32_t load;                /* tasks held */
	const char *name;             /* < SWIM_NAME_BYTES_MAX */
	const char *addr;             /* < SWIM_ADDR_BYTES_MAX; where to reach the member */
	const char *const *tags;      /* tag_count strings, each < SWIM_TAG_BYTES_MAX */
};

/* A protocol message. Plain data; the shell maps it to protobuf. */
struct swim_msg {
	uint8_t type;                 /* enum swim_msg_type */
	uint16_t proto_version;
	uint32_t seq;                 /* PING/ACK/PING_REQ/NACK: probe sequence number */
	uint8_t from[SWIM_ID_BYTES];  /* sender */
	const char *from_addr;        /* where to answer */
	uint8_t target[SWIM_ID_BYTES];/* PING: expected receiver (zero = any); PING_REQ: member to probe */
	const char *target_addr;      /* PING_REQ only */
	uint8_t join;                 /* PUSH_PULL: the sender is joining */
	uint32_t update_count;        /* <= SWIM_PIGGYBACK_MAX */
	struct swim_update updates[SWIM_PIGGYBACK_MAX];
	/* PUSH_PULL and its reply: the sender's whole view (<= members_max). */
	uint32_t state_count;
	const struct swim_update *states;
};

/* A member as this node sees it. Read-only for callers. */
struct swim_member {
	uint8_t id[SWIM_ID_BYTES];
	uint32_t incarnation;
	uint8_t state;                /* enum swim_state */
	uint8_t tag_count;
	uint16_t proto_version;
	uint32_t capacity;
	uint32_t load;
	uint64_t state_change_ms;     /* local now_ms of the last state change */
	const char *name;             /* never NULL; owned by the core */
	const char *addr;
	const char *const *tags;      /* also the start of the one allocation holding the strings */
	/* private bookkeeping (swim.c) */
	uint32_t q_next, q_prev;      /* update queue bucket list / free list */
	uint32_t d_next, d_prev;      /* dead/left list in time order (reaping) */
	uint32_t susp;                /* index of the suspicion record, or UINT32_MAX */
	uint8_t transmits;            /* times the queued update was sent */
	uint8_t queued;               /* in the update queue */
	uint8_t used;                 /* slot holds a member */
	uint8_t in_dead_list;
};

/* Events reported through swim_effects.event. */
enum swim_event {
	SWIM_EV_JOIN = 1,    /* a new member (old_state is meaningless) */
	SWIM_EV_STATE = 2,   /* state changed from old_state to m->state */
	SWIM_EV_META = 3,    /* same state, newer incarnation (metadata may differ) */
	SWIM_EV_REAP = 4,    /* the member is forgotten after this call */
};

struct swim_effects {
	void *ctx;
	/* Send m to addr. m and every string it points to are valid only
	 * during the call; copy or encode before returning. */
	void (*send)(void *ctx, const char *addr, const struct swim_msg *m);
	/* Optional: a member other than ourselves changed. */
	void (*event)(void *ctx, int event, const struct swim_member *m, int old_state);
};

/* Optional sharing of member strings between cores in one process.
 *
 * Each member's name, address and tags live in one immutable block laid out
 * as [tag_count tag pointers][name][addr][tags...]; the block's start is
 * `swim_member.tags`. Without an interner every core mallocs its own block
 * per member: right for chorusd, which runs one core. The simulator runs N
 * cores that each hold the same N members, so N^2 copies of the same strings
 * (~60 bytes each with malloc's overhead); it hands every core one interner
 * and keeps one block per distinct (name, addr, tags).
 *
 * get: returns a block with that content laid out as above (name and addr
 *      returned through *name_out / *addr_out), or NULL when out of memory.
 *      The core treats it as read-only and gives it back with put.
 * put: the core no longer uses the block (reference counting is the
 *      interner's business).
 * The interner must outlive every core that uses it. Threading: called from
 * inside swim_* calls only. */
struct swim_interner {
	void *ctx;
	const char *const *(*get)(void *ctx, const char *name, const char *addr, const char *const *tags,
	                          uint8_t tag_count, const char **name_out, const char **addr_out);
	void (*put)(void *ctx, const char *const *block);
};

struct swim_config {
	/* identity of this node */
	uint8_t id[SWIM_ID_BYTES];    /* not all zero */
	const char *name;             /* copied */
	const char *addr;             /* copied; where others reach us */
	const char *const *tags;      /* copied */
	uint8_t tag_count;
	uint32_t capacity, load;
	uint16_t proto_version;       /* default SWIM_PROTO_VERSION */
	uint32_t incarnation;         /* start incarnation: last persisted + 1 on restart */
	uint64_t seed;                /* PRNG seed */

	uint32_t period_ms;           /* protocol period (SWIM T'); default 1000 */
	uint32_t probe_timeout_ms;    /* direct ping timeout; default 500 (< period) */
	uint32_t indirect_count;      /* k ping-req relays (SWIM §4.1); default 3 */
	uint32_t retransmit_mult;     /* lambda: retransmit limit = lambda*ceil(log10(N+1)); default 4 */
	uint32_t suspicion_alpha;     /* Lifeguard min timeout = alpha*log10(N)*period; default 4 */
	uint32_t suspicion_beta;      /* max timeout = beta*min; default 6 */
	uint32_t suspicion_k;         /* confirmations to reach min; default 2 (<= SWIM_SUSPICION_K_MAX) */
	uint32_t lhm_max;             /* local health multiplier cap; default 8 (<= SWIM_LHM_MAX) */
	uint32_t push_pull_periods;   /* M: push-pull every M periods; 0 = never; default 30 */
	uint8_t push_pull_scale;      /* scale M with log2(N/32) like memberlist; default 1 */
	uint32_t seed_push_pull_every;/* every n-th push-pull goes to a random seed (heals long
	                                 partitions after reaping); 0 = never; default 8 */
	uint32_t join_backoff_ms;     /* first join retry delay; default = period_ms */
	uint32_t join_backoff_max_ms; /* cap of the doubling; default 30000 */
	uint32_t reap_after_ms;       /* forget dead/left members after; default 30000 */
	uint32_t gossip_fanout;       /* leave: GOSSIP to this many members per period; default 3 */
	uint32_t piggyback_max;       /* updates per message; default 24 (<= SWIM_PIGGYBACK_MAX) */
	uint32_t members_max;         /* default 16384 */
	uint32_t updates_max;         /* update queue; default = members_max */
	uint32_t relays_max;          /* ping-reqs relayed at once; default 64 */
	uint8_t nack;                 /* Lifeguard nacks on ping-req; default 1 */
	const struct swim_interner *interner; /* optional (NULL: own copies); not copied */
};

/* Fills every field with its default (identity fields zero). */
void swim_config_defaults(struct swim_config *cfg);

struct swim;

/* Creates the state; the node is a one-member cluster (alive) until
 * swim_join() finds a seed. Returns 0 or ERR_INVALID (bad config, msg
 * in err if not NULL) / ERR_NOMEM. */
int swim_create(struct swim **out, const struct swim_config *cfg, const struct swim_effects *fx,
                uint64_t now_ms, char *err, size_t err_bytes);
void swim_destroy(struct swim *s);

/* Joins through seed addresses (copied; own address skipped; at most
 * SWIM_SEEDS_MAX): sends a PUSH_PULL(join) to every seed, retrying with a
 * doubling backoff capped at join_backoff_max_ms until one answers. With no
 * seeds the node stays a one-member cluster. The seeds are also used to
 * rejoin when every other member is gone. Returns 0 or ERR_INVALID. */
int swim_join(struct swim *s, uint64_t now_ms, const char *const *seed_addrs, uint32_t seed_count);
/* 1 while a join is in progress (no seed answered yet). */
int swim_joining(const struct swim *s);

/* A decoded message from a peer. Validates everything (bad input returns
 * ERR_PROTOCOL and changes nothing); 0 when handled (also when it was
 * ignored as stale or misdirected). */
int swim_on_message(struct swim *s, uint64_t now_ms, const struct swim_msg *m);

/* Time passes: probes, timeouts, suspicion expiry, push-pull, join
 * retries, reaping. Call at swim_next_deadline_ms() (calling more often
 * is harmless). */
void swim_tick(struct swim *s, uint64_t now_ms);
/* Earliest time swim_tick has something to do (never later than one
 * period ahead while running). */
uint64_t swim_next_deadline_ms(const struct swim *s);

/* Graceful leave (memberlist Leave): own state becomes `left` with a bumped
 * incarnation, sent at once to gossip_fanout members and then every period
 * until the update has been sent retransmit-limit times. Probing stops.
 * Others mark the node left, not dead. */
int swim_leave(struct swim *s, uint64_t now_ms);
/* 1 once the leave update has been fully retransmitted (safe to exit). */
int swim_leave_done(const struct swim *s);

/* Own metadata changed: bumps the incarnation and gossips it. Returns 0 or
 * ERR_INVALID (bad tags). */
int swim_set_meta(struct swim *s, uint64_t now_ms, uint32_t capacity, uint32_t load,
                  const char *const *tags, uint8_t tag_count);

/* Adds or updates a member without gossiping it (bootstrap from a known
 * view, e.g. the simulator's steady-state start or a persisted view). The
 * usual precedence rules apply. Returns 0, ERR_PROTOCOL (bad update) or
 * ERR_FULL (members_max reached). */
int swim_add_member(struct swim *s, uint64_t now_ms, const struct swim_update *u);

/* ---- accessors ---- */
const uint8_t *swim_self_id(const struct swim *s);
const struct swim_member *swim_self(const struct swim *s);
uint32_t swim_self_incarnation(const struct swim *s);
/* Members in a state (self included). */
uint32_t swim_count(const struct swim *s, int state);
/* All known members, self included. */
uint32_t swim_member_count(const struct swim *s);
const struct swim_member *swim_find(const struct swim *s, const uint8_t id[SWIM_ID_BYTES]);
/* Iteration: start with *cursor = 0; returns NULL at the end. */
const struct swim_member *swim_next_member(const struct swim *s, uint32_t *cursor);
/* Local health multiplier (Lifeguard §3), 0..lhm_max. */
uint32_t swim_lhm(const struct swim *s);
/* Power of two choices: up to two distinct random alive members (self
 * included when include_self) accepted by `accept` (NULL = all). Returns
 * how many were picked (0..2). */
uint32_t swim_pick_two(struct swim *s, int include_self,
                       int (*accept)(void *ctx, const struct swim_member *m), void *ctx,
                       const struct swim_member **a, const struct swim_member **b);
/* Current retransmit limit lambda*ceil(log10(N+1)). */
uint32_t swim_retransmit_limit(const struct swim *s);
/* Updates waiting in the dissemination queue. */
uint32_t swim_queued_updates(const struct swim *s);

struct swim_stats {
	uint64_t sent[SWIM_MSG_TYPE_COUNT];
	uint64_t received[SWIM_MSG_TYPE_COUNT];
	uint64_t invalid;            /* messages refused by validation */
	uint64_t probes, probes_failed, probes_indirect_ok;
	uint64_t suspected, declared_dead, refuted;
	uint64_t members_refused;    /* members_max reached */
	uint64_t updates_dropped;    /* update queue full */
	uint64_t relays_refused;     /* relays_max reached */
	uint64_t nacks_missed;
	uint64_t push_pulls, join_attempts;
};
const struct swim_stats *swim_stats(const struct swim *s);

#endif
