/*
 * seal.h - sealed links: key files, roles, handshake, session keys and AEAD
 * frames.
 *
 * Owns the cryptography of every Chorus link (client<->node, node<->node).
 * Uses only libsodium's high-level constructions:
 *   - the cluster secret (32 bytes) never goes on the wire and is used only
 *     as a crypto_kdf master key. It yields one root key per role (client,
 *     node); each root yields the keys that MAC the handshake (crypto_auth)
 *     and mix the session keys. A client credential holds only client roots,
 *     so it can handshake as a client and never as a node (docs/protocol.md
 *     has the whole derivation tree);
 *   - a key id (4 bytes, derived from the client root, shown as 8 hex
 *     digits) names each key, so a node can hold two keys during a rotation
 *     and tell which one a HELLO uses;
 *   - a HELLO carries the role, the key id and the sender's wall-clock time,
 *     all under its MAC. The node refuses HELLOs outside SEAL_HELLO_SKEW_MS
 *     of its own clock and any HELLO whose MAC it saw within that window
 *     (struct seal_hello_guard), so a captured HELLO cannot be replayed;
 *   - per-session keys come from an ephemeral crypto_kx exchange, mixed with
 *     the role's mixing key (crypto_generichash keyed by it), one key per
 *     direction: a session has forward secrecy and records its role;
 *   - every data frame is sealed with crypto_aead_chacha20poly1305_ietf; the
 *     nonce is a per-direction 64-bit counter carried in the clear header,
 *     which is also the associated data. The receiver keeps a sliding replay
 *     window, so each frame stands alone: frames may arrive on any pipe, in
 *     any order within the window, and a replayed frame is refused;
 *   - a REJECT answering a data frame ("unknown session") is MAC'd with the
 *     client reject key of every key id the node holds, over the session id,
 *     the rejected frame's counter, the code and the reason; a client acts on
 *     it only if one MAC verifies. A REJECT answering a HELLO cannot be
 *     authenticated (the keys may differ) and is only a hint.
 *
 * Frame layout (all integers little-endian):
 *   off 0  u8   magic  0xC5
 *   off 1  u8   kind   (SEAL_KIND_*)
 *   off 2  u16  version (CH_PROTOCOL_VERSION)
 *   off 4  u32  reserved, 0
 *   off 8  u64  session_id   (0 for HELLO / REJECT)
 *   off 16 u64  counter      (0 for handshake frames)
 *   off 24 ...  body: protobuf Hello/Welcome/Reject, or AEAD(ciphertext||tag)
 *
 * Key material. A struct seal_keyring keeps its keys in one page from
 * sodium_malloc (guard pages around it, mlock'd and MADV_DONTDUMP as
 * libsodium does, read-only once loaded) and wipes it on the last
 * seal_keyring_free. The cluster secret itself is kept only while the roots
 * are derived. Where the kernel has MADV_WIPEONFORK (Linux 4.14+) the page is
 * marked with it too: a process forked from the node (a task worker) sees
 * zeros there, never the keys; workers never use the keyring. Without it
 * (seal_keyring_wipes_on_fork() == 0) a forked child holds a copy of the page
 * in its memory (not in a core dump) and must not use or free it.
 *
 * Reloading (key rotation). A keyring is reference counted and immutable
 * once loaded: a holder that reloads loads a new keyring, swaps its pointer,
 * and drops its reference to the old one (seal_keyring_free). Sessions never
 * point at a keyring (their keys are derived at the handshake), so sessions
 * made under a key that is no longer held live on until they end or are
 * dropped (struct seal_session records key_id; seal_keyring_has_id tells
 * whether it is still held). ch_client holds its own reference.
 *
 * Threading: a keyring is read-only and may be used by any number of threads
 * (ref/free are atomic). A struct seal_session or seal_hello_guard is not
 * locked; callers serialise use (the node uses them from its loop thread
 * only, the client under a mutex). seal_frame_open() and seal_frame_seal() do
 * not allocate.
 */
#ifndef CHORUS_SEAL_H
#define CHORUS_SEAL_H

#include <stddef.h>
#include <stdint.h>
#include <sodium.h>

#define SEAL_MAGIC 0xC5
#define SEAL_HEADER_BYTES 24
#define SEAL_TAG_BYTES crypto_aead_chacha20poly1305_ietf_ABYTES /* 16 */
#define SEAL_OVERHEAD_BYTES (SEAL_HEADER_BYTES + SEAL_TAG_BYTES)
#define SEAL_SECRET_BYTES 32
#define SEAL_ID_BYTES 16
#define SEAL_REPLAY_WINDOW 1024 /* frames; older counters are refused */
#define SEAL_FRAME_BYTES_DEFAULT (16u * 1024u * 1024u)
/* Handshake frames (HELLO, WELCOME, REJECT) are small; a longer one is
 * refused as SEAL_OVERSIZED before any decoding. */
#define SEAL_HANDSHAKE_BYTES_MAX 4096u
/* A REJECT reason longer than this is cut (at a UTF-8 character boundary). */
#define SEAL_REASON_BYTES_MAX 512u
/* Keys in one key file: the primary and one more accepted (rotation). */
#define SEAL_KEYS_MAX 2u
/* A key id as text: 8 hex digits and a NUL. */
#define SEAL_KEY_ID_HEX_BYTES 9u
/* A HELLO whose timestamp is further than this from the node's wall clock,
 * either way, is SEAL_STALE. Clocks of a cluster's machines must agree within
 * it (NTP does far better); it is also how long the node remembers a HELLO's
 * MAC to refuse its replay. */
#define SEAL_HELLO_SKEW_MS (5u * 60u * 1000u)
/* The node's HELLO guard size (seal_hello_guard_create) when not configured:
 * how many handshakes the node accepts per skew window. */
#define SEAL_HELLO_GUARD_ENTRIES_DEFAULT 8192u
/* The cap on seal_hello_guard_create's entries_max. */
#define SEAL_HELLO_GUARD_ENTRIES_MAX (1u << 20)

enum seal_kind {
	SEAL_KIND_HELLO = 1,
	SEAL_KIND_WELCOME = 2,
	SEAL_KIND_REJECT = 3,
	SEAL_KIND_DATA = 4,
};

/* A session's role: which key its HELLO was MAC'd with. */
enum seal_role {
	SEAL_ROLE_CLIENT = 1,
	SEAL_ROLE_NODE = 2,
};
const char *seal_role_name(int role); /* "client", "node", "unknown" */

/* Why a frame was refused; each is counted per peer by the node. */
enum seal_verdict {
	SEAL_OK = 0,
	SEAL_TRUNCATED = 1,  /* shorter than a header (+ tag) */
	SEAL_OVERSIZED = 2,  /* longer than the cap */
	SEAL_MALFORMED = 3,  /* bad magic/kind/version, undecodable handshake */
	SEAL_FORGED = 4,     /* handshake MAC wrong or key id unknown: peer lacks the key */
	SEAL_TAMPERED = 5,   /* AEAD tag check failed */
	SEAL_REPLAYED = 6,   /* counter already seen or too old; a HELLO seen before */
	SEAL_NO_SESSION = 7, /* data frame for a session this side does not know */
	SEAL_STALE = 8,      /* authentic HELLO whose time is outside SEAL_HELLO_SKEW_MS */
	SEAL_BUSY = 9,       /* authentic HELLO, but the HELLO guard is full */
	SEAL_WRONG_PEER = 10, /* authentic WELCOME from a member other than the expected one */
};
#define SEAL_VERDICT_COUNT 11
const char *seal_verdict_name(int verdict);

/* ---- keys ---- */

/* The keys of one cluster secret (or client credential) file; opaque. */
struct seal_keyring;

/* Reads a key file. Two formats, one key per line, at most SEAL_KEYS_MAX
 * lines (the first is the primary; empty lines are ignored):
 *   cluster secret:    64 hex characters (what seal_secret_generate writes)
 *   client credential: "chorus-client-v1 " and 64 hex characters (what
 *                      seal_client_credential_write writes)
 * The file must be a regular file and must not be readable or writable by
 * group or others. need_role SEAL_ROLE_NODE refuses a client credential;
 * SEAL_ROLE_CLIENT takes either. Returns the keyring (one reference, release
 * with seal_keyring_free), or NULL with a message naming the file in err. */
struct seal_keyring *seal_keyring_load(const char *path, int need_role, char *err,
                                       size_t err_len);
/* A keyring from count (1..SEAL_KEYS_MAX) secrets of 32 bytes each, laid end
 * to end, the primary first (tests, tools). NULL when out of memory, or when
 * count is out of range or two keys share an id. */
struct seal_keyring *seal_keyring_from_secrets(const uint8_t *secrets, uint32_t count);
/* The client credential of kr as a keyring: the same ids, client keys only
 * (tests; the file form is seal_client_credential_write). NULL: no memory. */
struct seal_keyring *seal_keyring_client_only(const struct seal_keyring *kr);
/* Takes one more reference (the count is not part of the keys, so a const
 * holder may share it); returns kr. */
struct seal_keyring *seal_keyring_ref(const struct seal_keyring *kr);
/* Drops a reference; the last one wipes and frees the keys. NULL is fine. */
void seal_keyring_free(struct seal_keyring *kr);

/* 1 if kr holds keys for the role (SEAL_ROLE_CLIENT: always). */
int seal_keyring_has_role(const struct seal_keyring *kr, int role);
/* The primary key's id (the one HELLOs and REJECT-checking start with). */
uint32_t seal_keyring_primary_id(const struct seal_keyring *kr);
/* Fills ids with the key ids, primary first; returns how many (1..2). */
uint32_t seal_keyring_ids(const struct seal_keyring *kr, uint32_t ids[SEAL_KEYS_MAX]);
/* 1 if kr holds the key with this id. */
int seal_keyring_has_id(const struct seal_keyring *kr, uint32_t key_id);
/* The key id as 8 lower-case hex digits (big-endian reading of the id). */
void seal_key_id_hex(uint32_t key_id, char out[SEAL_KEY_ID_HEX_BYTES]);
/* 1 if the key page is marked MADV_WIPEONFORK. */
int seal_keyring_wipes_on_fork(const struct seal_keyring *kr);
/* 1 if every key byte reads zero: what a forked child sees when
 * seal_keyring_wipes_on_fork(kr) (tests, and a worker's own assertion). */
int seal_keyring_is_zero(const struct seal_keyring *kr);

/* ---- the HTTP bearer token (docs/http.md) ----
 * token = kdf(client_root, id 5, "chorhttp"): a client credential gives the
 * same token as the cluster secret it was made from, and the token reveals
 * nothing of the link keys (another kdf context). */
#define SEAL_HTTP_TOKEN_BYTES 32u
void seal_http_token(const uint8_t client_root[SEAL_SECRET_BYTES],
                     uint8_t out[SEAL_HTTP_TOKEN_BYTES]);
/* The token of kr's key number index (0 = primary); -1 when out of range. */
int seal_keyring_http_token(const struct seal_keyring *kr, uint32_t index,
                            uint8_t out[SEAL_HTTP_TOKEN_BYTES]);
/* 1 if token is the HTTP token of any key of kr (rotation: both keys are
 * accepted), compared in constant time (sodium_memcmp); else 0. */
int seal_http_token_check(const struct seal_keyring *kr, const uint8_t token[SEAL_HTTP_TOKEN_BYTES]);

/* Writes a fresh random cluster secret (one line of hex, mode 0600,
 * O_EXCL). 0 or -1 + err. */
int seal_secret_generate(const char *path, char *err, size_t err_len);
/* Writes kr's client credential (one "chorus-client-v1 HEX" line per key,
 * primary first, mode 0600, O_EXCL). 0 or -1 + err. */
int seal_client_credential_write(const struct seal_keyring *kr, const char *path, char *err,
                                 size_t err_len);

/* ---- sessions ---- */

struct seal_replay {
	uint64_t highest;                       /* highest counter accepted */
	uint64_t bits[SEAL_REPLAY_WINDOW / 64]; /* bit i: highest - i seen */
};
/* Returns 1 if counter is new (and records it), 0 if replayed/too old. */
int seal_replay_check(struct seal_replay *w, uint64_t counter);

struct seal_session {
	uint64_t session_id;
	uint8_t rx_key[crypto_aead_chacha20poly1305_ietf_KEYBYTES];
	uint8_t tx_key[crypto_aead_chacha20poly1305_ietf_KEYBYTES];
	uint64_t tx_counter;        /* last counter sent */
	struct seal_replay rx_window;
	uint8_t peer_id[SEAL_ID_BYTES]; /* the other side's sender id (MAC'd) */
	uint8_t role;               /* enum seal_role of the initiator's HELLO */
	uint32_t key_id;            /* the key the handshake used */
};

/* The wall clock for HELLO timestamps and their freshness check, in ms since
 * the epoch: CLOCK_REALTIME read once per process (at the first call; every
 * keyring load makes one) and advanced by CLOCK_MONOTONIC since. So a step
 * of the wall clock after start-up (an operator's date, a VM resumed, NTP
 * stepping) changes no timestamp and no verdict: "a step of the wall clock
 * expires nothing" holds for handshakes too. NTP's slewing reaches
 * CLOCK_MONOTONIC as well, so the two stay together; a process started with a
 * clock already wrong by more than SEAL_HELLO_SKEW_MS keeps that error until
 * it restarts. Thread-safe. */
uint64_t seal_wall_ms(void);

/* ---- client (initiator) side ---- */
struct seal_initiator {
	uint8_t eph_pk[crypto_kx_PUBLICKEYBYTES];
	uint8_t eph_sk[crypto_kx_SECRETKEYBYTES];
	uint8_t self_id[SEAL_ID_BYTES];
	uint8_t hello_mac[crypto_auth_BYTES];
	uint8_t role;    /* as sent */
	uint32_t key_id; /* as sent: the keyring's primary then */
};

/* Builds a HELLO frame for `role` under kr's primary key, stamped with
 * now_wall_ms (the sender's CLOCK_REALTIME in ms), into out (malloc'd,
 * caller frees). Returns 0, or -1 when kr has no keys for the role (a client
 * credential asked for a node HELLO) or memory ran out; `in` is then wiped. */
int seal_hello_build(struct seal_initiator *in, const struct seal_keyring *kr, int role,
                     const uint8_t self_id[SEAL_ID_BYTES], uint64_t now_wall_ms, uint8_t **out,
                     size_t *out_len);
/* Checks a WELCOME (or REJECT) reply and fills the session (role and key id
 * as in the HELLO). Returns SEAL_OK, or a verdict; for a REJECT frame returns
 * SEAL_FORGED and copies the peer's reason into err. expected_peer (16 bytes,
 * or NULL for any) is the member the caller meant to reach: an authentic
 * WELCOME from another sender id is SEAL_WRONG_PEER (its id in err). On
 * SEAL_OK and SEAL_WRONG_PEER the ephemeral secret key in `in` is wiped, and
 * a second WELCOME to the same initiator is SEAL_REPLAYED. On other refusals
 * `in` is left intact (a forged reply must not end the handshake); a caller
 * giving up calls sodium_memzero(in, sizeof *in). kr must still hold the key
 * id of the HELLO (else SEAL_FORGED). */
int seal_welcome_accept(struct seal_initiator *in, const struct seal_keyring *kr,
                        const uint8_t *expected_peer, const uint8_t *frame, size_t len,
                        struct seal_session *out, char *err, size_t err_len);

/* ---- node (responder) side ---- */

/* Recent HELLO MACs, to refuse a replayed HELLO. Bounded: it holds at most
 * entries_max MACs, each until its HELLO's time leaves the skew window; when
 * all entries are in that window a new HELLO is SEAL_BUSY (in-window entries
 * are never evicted, or an attacker could flush one and replay it). Lookup
 * and insertion scan the table (entries_max compares of 8 bytes). */
struct seal_hello_guard;
/* entries_max: 1..SEAL_HELLO_GUARD_ENTRIES_MAX. NULL: no memory or bad size. */
struct seal_hello_guard *seal_hello_guard_create(uint32_t entries_max);
void seal_hello_guard_free(struct seal_hello_guard *g);
/* How many entries are still in the window at now_wall_ms. */
uint32_t seal_hello_guard_count(const struct seal_hello_guard *g, uint64_t now_wall_ms);

/* Checks a HELLO of either role against kr (which must hold node keys) and,
 * when it is good, builds the WELCOME (malloc'd into *reply) and fills a new
 * session with a random session id, the HELLO's role and key id. self_id
 * names this node; now_wall_ms is the node's CLOCK_REALTIME in ms. Checks,
 * in order: frame, decoding, key id (SEAL_FORGED if not held), MAC
 * (SEAL_FORGED), version, time (SEAL_STALE), guard (SEAL_REPLAYED or
 * SEAL_BUSY; only authentic fresh HELLOs enter it), key exchange. Returns
 * SEAL_OK or a verdict (then nothing is allocated). */
int seal_hello_accept(const struct seal_keyring *kr, struct seal_hello_guard *guard,
                      const uint8_t self_id[SEAL_ID_BYTES], uint64_t now_wall_ms,
                      const uint8_t *frame, size_t len, struct seal_session *out,
                      uint8_t **reply, size_t *reply_len);
/* Builds an unauthenticated REJECT frame (malloc'd), for answers to a HELLO.
 * reason is shown to the peer. 0 or -1 (no memory). */
int seal_reject_build(int code, const char *reason, uint8_t **out, size_t *out_len);
/* Builds an authenticated REJECT (malloc'd) answering the data frame
 * (session_id, counter): MAC'd with the client reject key of every key id in
 * kr. 0 or -1 (no memory). */
int seal_reject_build_auth(const struct seal_keyring *kr, uint64_t session_id, uint64_t counter,
                           int code, const char *reason, uint8_t **out, size_t *out_len);

/* ---- both sides ---- */

/* Checks a REJECT that answered our data frame (session_id, counter) against
 * the keys in kr. Returns SEAL_OK when one MAC verifies (*code gets the
 * CH_ERR_* code), SEAL_FORGED when none does (an unauthenticated REJECT:
 * ignore it), or a framing verdict. The reason (as sent, authentic or not) is
 * copied into reason when given. */
int seal_reject_check(const struct seal_keyring *kr, uint64_t session_id, uint64_t counter,
                      const uint8_t *frame, size_t len, int *code, char *reason,
                      size_t reason_len);

/* Parses the clear header: kind and session id. Returns SEAL_OK,
 * SEAL_TRUNCATED, SEAL_OVERSIZED (len > frame_bytes_max) or SEAL_MALFORMED. */
int seal_frame_peek(const uint8_t *frame, size_t len, size_t frame_bytes_max, int *kind,
                    uint64_t *session_id);
/* The counter of a frame that seal_frame_peek accepted. */
uint64_t seal_frame_counter(const uint8_t *frame);

/* Seals plaintext into out, which must hold len + SEAL_OVERHEAD_BYTES.
 * Advances s->tx_counter. */
void seal_frame_seal(struct seal_session *s, const uint8_t *plain, size_t len, uint8_t *out);

/* Opens a DATA frame in place: on SEAL_OK, *plain points into frame and
 * *plain_len is the plaintext length. The tag is verified before anything
 * else: a frame whose tag does not verify is SEAL_TAMPERED (libsodium wipes
 * its body bytes), whatever its counter. An authentic frame whose counter
 * the window has seen (a resend, or counter 0) is SEAL_REPLAYED, with
 * *plain set as for SEAL_OK; the window is updated only for new authentic
 * frames. No length cap is applied here (call seal_frame_peek with the
 * link's cap first). A frame for another session is SEAL_NO_SESSION. */
int seal_frame_open(struct seal_session *s, uint8_t *frame, size_t len, uint8_t **plain,
                    size_t *plain_len);

#endif
