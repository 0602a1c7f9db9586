/*
 * seal.h - sealed links: handshake, session keys and AEAD frames.
 *
 * Owns the cryptography of every Chorus link (client<->node, node<->node).
 * Uses only libsodium's high-level constructions:
 *   - the cluster secret (32 bytes) never goes on the wire; an auth key
 *     derived from it (crypto_kdf) MACs the handshake (crypto_auth), so each
 *     side proves it holds the secret;
 *   - per-session keys come from an ephemeral crypto_kx exchange, mixed with
 *     the secret (crypto_generichash keyed by it), one key per direction;
 *   - every data frame is sealed with crypto_aead_chacha20poly1305_ietf; the
 *     nonce is a per-direction 64-bit counter carried in the clear header,
 *     which is also the associated data. The receiver keeps a sliding replay
 *     window, so each frame stands alone: frames may arrive on any pipe, in
 *     any order within the window, and a replayed frame is refused.
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
 * Threading: a struct seal_session is not locked; callers serialise use
 * (the node uses it from its loop thread only, the client under a mutex).
 * seal_frame_open() and seal_frame_seal() do not allocate.
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

enum seal_kind {
	SEAL_KIND_HELLO = 1,
	SEAL_KIND_WELCOME = 2,
	SEAL_KIND_REJECT = 3,
	SEAL_KIND_DATA = 4,
};

/* Why a frame was refused; each is counted per peer by the node. */
enum seal_verdict {
	SEAL_OK = 0,
	SEAL_TRUNCATED = 1,  /* shorter than a header (+ tag) */
	SEAL_OVERSIZED = 2,  /* longer than the cap */
	SEAL_MALFORMED = 3,  /* bad magic/kind/version, undecodable handshake */
	SEAL_FORGED = 4,     /* handshake MAC wrong: peer lacks the secret */
	SEAL_TAMPERED = 5,   /* AEAD tag check failed */
	SEAL_REPLAYED = 6,   /* counter already seen or too old */
	SEAL_NO_SESSION = 7, /* data frame for a session this side does not know */
};
const char *seal_verdict_name(int verdict);

/* The cluster secret and keys derived from it. */
struct seal_keyring {
	uint8_t secret[SEAL_SECRET_BYTES];
	uint8_t auth_key[crypto_auth_KEYBYTES];
};

/* Reads a secret file: 64 hex chars (optionally followed by whitespace), or
 * exactly 32 raw bytes. Returns 0, or -1 with a message in err. */
int seal_keyring_load(struct seal_keyring *kr, const char *path, char *err, size_t err_len);
/* Derives the auth key from 32 secret bytes. */
void seal_keyring_init(struct seal_keyring *kr, const uint8_t secret[SEAL_SECRET_BYTES]);
/* Writes a fresh random secret (hex, mode 0600, O_EXCL). 0 or -1 + err. */
int seal_secret_generate(const char *path, char *err, size_t err_len);

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
	uint8_t peer_id[SEAL_ID_BYTES];
};

/* ---- client (initiator) side ---- */
struct seal_initiator {
	uint8_t eph_pk[crypto_kx_PUBLICKEYBYTES];
	uint8_t eph_sk[crypto_kx_SECRETKEYBYTES];
	uint8_t self_id[SEAL_ID_BYTES];
	uint8_t hello_mac[crypto_auth_BYTES];
};

/* Builds a HELLO frame into out (malloc'd, caller frees). 0 or -1. */
int seal_hello_build(struct seal_initiator *in, const struct seal_keyring *kr,
                     const uint8_t self_id[SEAL_ID_BYTES], uint8_t **out, size_t *out_len);
/* Checks a WELCOME (or REJECT) reply and fills the session. Returns SEAL_OK,
 * or a verdict; for a REJECT frame returns SEAL_FORGED and copies the
 * peer's reason into err. On SEAL_OK the ephemeral secret key in `in` is
 * wiped, and a second WELCOME to the same initiator is SEAL_REPLAYED. On a
 * refusal `in` is left intact (a forged reply must not end the handshake);
 * a caller giving up calls sodium_memzero(in, sizeof *in). */
int seal_welcome_accept(struct seal_initiator *in, const struct seal_keyring *kr,
                        const uint8_t *frame, size_t len, struct seal_session *out,
                        char *err, size_t err_len);

/* ---- node (responder) side ---- */
/* Checks a HELLO and, when it is good, builds the WELCOME (malloc'd into
 * *reply) and fills a new session with a random session id. self_id names
 * this node. Returns SEAL_OK or a verdict (then nothing is allocated). */
int seal_hello_accept(const struct seal_keyring *kr, const uint8_t self_id[SEAL_ID_BYTES],
                      const uint8_t *frame, size_t len, struct seal_session *out,
                      uint8_t **reply, size_t *reply_len);
/* Builds a plaintext REJECT frame (malloc'd). reason is shown to the peer. */
int seal_reject_build(int code, const char *reason, uint8_t **out, size_t *out_len);

/* ---- both sides ---- */
/* Parses the clear header: kind and session id. Returns SEAL_OK,
 * SEAL_TRUNCATED, SEAL_OVERSIZED (len > frame_bytes_max) or SEAL_MALFORMED. */
int seal_frame_peek(const uint8_t *frame, size_t len, size_t frame_bytes_max, int *kind,
                    uint64_t *session_id);

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
