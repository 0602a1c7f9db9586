/*
 * seal.c - sealed links: handshake, session keys and AEAD frames.
 *
 * Owns every cryptographic decision of a Chorus link; the contract and the
 * frame layout are in seal.h. Only libsodium's high-level constructions:
 *
 *   auth_key  = crypto_kdf_derive_from_key(32, id 1, "chorauth", secret)
 *   HELLO     mac = crypto_auth(auth_key, "chorus-hello-v1" || version(le32)
 *                                          || eph_pk || sender_id)
 *   WELCOME   mac = crypto_auth(auth_key, "chorus-welcome-v1" || hello mac
 *                                          || version(le32) || eph_pk
 *                                          || session_id(le64) || sender_id)
 *   keys      = crypto_kx_{client,server}_session_keys, each then mixed
 *               as crypto_generichash(32, key, key=secret)
 *   DATA      crypto_aead_chacha20poly1305_ietf, ad = the 24-byte header,
 *             nonce = 0x00000000 || counter(le64)
 *
 * The subtle parts:
 *   - The WELCOME MAC covers the client's HELLO MAC, so a WELCOME answers
 *     exactly one HELLO and cannot be replayed to another initiator.
 *   - Session keys need both the ephemeral exchange and the secret: someone
 *     who learns an auth key (or replays a handshake) still cannot read data.
 *   - The replay window (RFC 4303 §3.4.3 / WireGuard §5.4.6 style: highest
 *     counter + bitmap of the 1024 below it) is consulted before decryption
 *     but only updated after the tag verifies, so forged frames with huge
 *     counters cannot slide the window and poison it.
 *   - Counter 0 is reserved for handshake frames and never valid for data.
 */
#include "proto/seal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chorus.h"
#include "proto/chorus.pb-c.h"

#define KDF_CONTEXT "chorauth"
#define KDF_AUTH_SUBKEY_ID 1
#define HELLO_DOMAIN "chorus-hello-v1"
#define WELCOME_DOMAIN "chorus-welcome-v1"
#define DOMAIN_BYTES(d) (sizeof(d) - 1) /* without the NUL */
#define NONCE_BYTES crypto_aead_chacha20poly1305_ietf_NPUBBYTES
#define SESSION_KEY_BYTES crypto_aead_chacha20poly1305_ietf_KEYBYTES
/* A secret file is 64 hex chars plus whitespace, or 32 raw bytes; anything
 * longer than this is refused without reading further. */
#define SECRET_FILE_BYTES_MAX 256
#define REPLAY_WORDS (SEAL_REPLAY_WINDOW / 64)

_Static_assert(SEAL_REPLAY_WINDOW % 64 == 0, "replay window is whole 64-bit words");
_Static_assert(SESSION_KEY_BYTES == crypto_kx_SESSIONKEYBYTES, "kx keys are aead keys");
_Static_assert(crypto_auth_KEYBYTES >= crypto_kdf_BYTES_MIN &&
                   crypto_auth_KEYBYTES <= crypto_kdf_BYTES_MAX,
               "auth key derivable by crypto_kdf");
_Static_assert(SEAL_SECRET_BYTES == crypto_kdf_KEYBYTES, "secret is a kdf master key");
_Static_assert(DOMAIN_BYTES(KDF_CONTEXT) == crypto_kdf_CONTEXTBYTES, "kdf context size");
_Static_assert(NONCE_BYTES == 12, "ietf nonce");

/* libsodium refuses to initialise only when no secure random source exists;
 * going on would make every key predictable, so stop here. */
static void sodium_ready(void)
{
	if (sodium_init() < 0)
		abort();
}

static void set_err(char *err, size_t err_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
	if (err == NULL || err_len == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void header_write(uint8_t *out, int kind, uint64_t session_id, uint64_t counter)
{
	out[0] = SEAL_MAGIC;
	out[1] = (uint8_t)kind;
	put_le16(out + 2, CH_PROTOCOL_VERSION);
	put_le32(out + 4, 0);
	put_le64(out + 8, session_id);
	put_le64(out + 16, counter);
}

const char *seal_verdict_name(int verdict)
{
	switch (verdict) {
	case SEAL_OK: return "ok";
	case SEAL_TRUNCATED: return "truncated";
	case SEAL_OVERSIZED: return "oversized";
	case SEAL_MALFORMED: return "malformed";
	case SEAL_FORGED: return "forged";
	case SEAL_TAMPERED: return "tampered";
	case SEAL_REPLAYED: return "replayed";
	case SEAL_NO_SESSION: return "no-session";
	}
	return "unknown";
}

/* ---- keyring ---- */

void seal_keyring_init(struct seal_keyring *kr, const uint8_t secret[SEAL_SECRET_BYTES])
{
	assert(kr != NULL && secret != NULL);
	sodium_ready();
	if (kr->secret != secret)
		memmove(kr->secret, secret, SEAL_SECRET_BYTES);
	int rc = crypto_kdf_derive_from_key(kr->auth_key, sizeof kr->auth_key, KDF_AUTH_SUBKEY_ID,
	                                    KDF_CONTEXT, kr->secret);
	assert(rc == 0); /* fails only for sizes the static asserts rule out */
	(void)rc;
}

static int hex_value(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int is_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* 64 hex characters then only whitespace → 0 and 32 bytes in out. */
static int parse_hex_secret(const uint8_t *buf, size_t len, uint8_t out[SEAL_SECRET_BYTES])
{
	if (len < 2 * SEAL_SECRET_BYTES)
		return -1;
	for (size_t i = 2 * SEAL_SECRET_BYTES; i < len; i++)
		if (!is_space(buf[i]))
			return -1;
	for (size_t i = 0; i < SEAL_SECRET_BYTES; i++) {
		int hi = hex_value(buf[2 * i]);
		int lo = hex_value(buf[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)((hi << 4) | lo);
	}
	return 0;
}

int seal_keyring_load(struct seal_keyring *kr, const char *path, char *err, size_t err_len)
{
	assert(kr != NULL && path != NULL);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		set_err(err, err_len, "cannot read secret file %s: %s", path, strerror(errno));
		return -1;
	}
	/* One byte more than the cap tells "too long" apart from "exactly the cap". */
	uint8_t buf[SECRET_FILE_BYTES_MAX + 1];
	size_t len = 0;
	while (len < sizeof buf) {
		ssize_t n = read(fd, buf + len, sizeof buf - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			close(fd);
			sodium_memzero(buf, sizeof buf);
			set_err(err, err_len, "cannot read secret file %s: %s", path, strerror(e));
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);

	uint8_t secret[SEAL_SECRET_BYTES];
	int rc = -1;
	if (len <= SECRET_FILE_BYTES_MAX) {
		if (parse_hex_secret(buf, len, secret) == 0) {
			rc = 0;
		} else if (len == SEAL_SECRET_BYTES) {
			memcpy(secret, buf, SEAL_SECRET_BYTES);
			rc = 0;
		}
	}
	sodium_memzero(buf, sizeof buf);
	if (rc != 0) {
		set_err(err, err_len, "secret file %s: expected 64 hex characters", path);
		sodium_memzero(secret, sizeof secret);
		return -1;
	}
	seal_keyring_init(kr, secret);
	sodium_memzero(secret, sizeof secret);
	return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Makes the new directory entry durable, not only the file's bytes. */
static int fsync_parent_dir(const char *path)
{
	char *copy = strdup(path);
	if (copy == NULL) {
		errno = ENOMEM;
		return -1;
	}
	int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (dfd < 0)
		return -1;
	int rc = fsync(dfd);
	int e = errno;
	close(dfd);
	errno = e;
	return rc;
}

int seal_secret_generate(const char *path, char *err, size_t err_len)
{
	assert(path != NULL);
	sodium_ready();
	int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0) {
		set_err(err, err_len, "cannot create secret file %s: %s", path, strerror(errno));
		return -1;
	}
	uint8_t secret[SEAL_SECRET_BYTES];
	char hex[2 * SEAL_SECRET_BYTES + 2]; /* + newline + NUL */
	randombytes_buf(secret, sizeof secret);
	sodium_bin2hex(hex, sizeof hex, secret, sizeof secret);
	sodium_memzero(secret, sizeof secret);
	hex[2 * SEAL_SECRET_BYTES] = '\n';
	hex[2 * SEAL_SECRET_BYTES + 1] = '\0';

	/* The umask may only have narrowed 0600; fchmod makes the mode exact. */
	const char *step = "write";
	int rc = fchmod(fd, 0600);
	if (rc != 0)
		step = "chmod";
	if (rc == 0)
		rc = write_all(fd, hex, 2 * SEAL_SECRET_BYTES + 1);
	if (rc == 0) {
		rc = fsync(fd);
		step = "fsync";
	}
	int e = errno;
	sodium_memzero(hex, sizeof hex);
	if (close(fd) != 0 && rc == 0) {
		rc = -1;
		e = errno;
		step = "close";
	}
	if (rc == 0 && fsync_parent_dir(path) != 0) {
		rc = -1;
		e = errno;
		step = "fsync directory of";
	}
	if (rc != 0) {
		unlink(path); /* never leave a half-written secret behind */
		set_err(err, err_len, "cannot %s secret file %s: %s", step, path, strerror(e));
		return -1;
	}
	return 0;
}

/* ---- replay window ---- */

/* 1 when counter would be accepted; does not record it. */
static int replay_is_new(const struct seal_replay *w, uint64_t counter)
{
	if (counter == 0)
		return 0;
	if (counter > w->highest)
		return 1;
	uint64_t behind = w->highest - counter;
	if (behind >= SEAL_REPLAY_WINDOW)
		return 0;
	return !(w->bits[behind / 64] & (UINT64_C(1) << (behind % 64)));
}

static void replay_record(struct seal_replay *w, uint64_t counter)
{
	assert(replay_is_new(w, counter));
	if (counter > w->highest) {
		/* Slide: the bit for counter c moves from highest-c to counter-c. */
		uint64_t shift = counter - w->highest;
		if (shift >= SEAL_REPLAY_WINDOW) {
			memset(w->bits, 0, sizeof w->bits);
		} else {
			size_t words = (size_t)(shift / 64);
			unsigned bits = (unsigned)(shift % 64);
			for (size_t i = REPLAY_WORDS; i-- > 0;) {
				uint64_t v = 0;
				if (i >= words) {
					size_t src = i - words;
					v = w->bits[src] << bits;
					if (bits != 0 && src > 0)
						v |= w->bits[src - 1] >> (64 - bits);
				}
				w->bits[i] = v;
			}
		}
		w->highest = counter;
		w->bits[0] |= 1;
	} else {
		uint64_t behind = w->highest - counter;
		assert(behind < SEAL_REPLAY_WINDOW);
		w->bits[behind / 64] |= UINT64_C(1) << (behind % 64);
	}
	assert(!replay_is_new(w, counter));
}

int seal_replay_check(struct seal_replay *w, uint64_t counter)
{
	assert(w != NULL);
	if (!replay_is_new(w, counter))
		return 0;
	replay_record(w, counter);
	return 1;
}

/* ---- frames ---- */

int seal_frame_peek(const uint8_t *frame, size_t len, size_t frame_bytes_max, int *kind,
                    uint64_t *session_id)
{
	if (len < SEAL_HEADER_BYTES)
		return SEAL_TRUNCATED;
	if (len > frame_bytes_max)
		return SEAL_OVERSIZED;
	assert(frame != NULL);
	if (frame[0] != SEAL_MAGIC)
		return SEAL_MALFORMED;
	if (get_le16(frame + 2) != CH_PROTOCOL_VERSION)
		return SEAL_MALFORMED;
	int k = frame[1];
	if (k != SEAL_KIND_HELLO && k != SEAL_KIND_WELCOME && k != SEAL_KIND_REJECT &&
	    k != SEAL_KIND_DATA)
		return SEAL_MALFORMED;
	if (get_le32(frame + 4) != 0)
		return SEAL_MALFORMED;
	if (k == SEAL_KIND_DATA && len < SEAL_OVERHEAD_BYTES)
		return SEAL_TRUNCATED;
	if (kind != NULL)
		*kind = k;
	if (session_id != NULL)
		*session_id = get_le64(frame + 8);
	return SEAL_OK;
}

static void nonce_for(uint8_t nonce[NONCE_BYTES], uint64_t counter)
{
	memset(nonce, 0, 4);
	put_le64(nonce + 4, counter);
}

void seal_frame_seal(struct seal_session *s, const uint8_t *plain, size_t len, uint8_t *out)
{
	assert(s != NULL && out != NULL && (plain != NULL || len == 0));
	assert(s->session_id != 0);
	/* 2^64 frames is out of reach; wrapping would reuse a nonce. */
	assert(s->tx_counter < UINT64_MAX);
	s->tx_counter++;
	header_write(out, SEAL_KIND_DATA, s->session_id, s->tx_counter);
	uint8_t nonce[NONCE_BYTES];
	nonce_for(nonce, s->tx_counter);
	unsigned long long sealed_len = 0;
	crypto_aead_chacha20poly1305_ietf_encrypt(out + SEAL_HEADER_BYTES, &sealed_len, plain, len,
	                                          out, SEAL_HEADER_BYTES, NULL, nonce, s->tx_key);
	assert(sealed_len == len + SEAL_TAG_BYTES);
}

int seal_frame_open(struct seal_session *s, uint8_t *frame, size_t len, uint8_t **plain,
                    size_t *plain_len)
{
	assert(s != NULL && plain != NULL && plain_len != NULL);
	int kind = 0;
	uint64_t session_id = 0;
	int v = seal_frame_peek(frame, len, SIZE_MAX, &kind, &session_id);
	if (v != SEAL_OK)
		return v;
	if (kind != SEAL_KIND_DATA)
		return SEAL_MALFORMED;
	if (session_id == 0 || session_id != s->session_id)
		return SEAL_NO_SESSION;
	uint64_t counter = get_le64(frame + 16);
	/* The tag is checked first: a frame that does not verify is
	 * SEAL_TAMPERED whatever its counter, so an outsider who copies a
	 * session id and a counter from the wire (both in clear) cannot pass
	 * for a resend. Only then does the replay window speak. */
	uint8_t nonce[NONCE_BYTES];
	nonce_for(nonce, counter);
	unsigned long long opened_len = 0;
	uint8_t *body = frame + SEAL_HEADER_BYTES;
	if (crypto_aead_chacha20poly1305_ietf_decrypt(body, &opened_len, NULL, body,
	                                              len - SEAL_HEADER_BYTES, frame,
	                                              SEAL_HEADER_BYTES, nonce, s->rx_key) != 0)
		return SEAL_TAMPERED;
	assert(opened_len == len - SEAL_OVERHEAD_BYTES);
	*plain = body;
	*plain_len = (size_t)opened_len;
	if (!replay_is_new(&s->rx_window, counter))
		return SEAL_REPLAYED; /* authentic, but seen before (a resend) */
	replay_record(&s->rx_window, counter);
	return SEAL_OK;
}

/* ---- handshake ---- */

#define HELLO_MAC_INPUT_BYTES                                                                  \
	(DOMAIN_BYTES(HELLO_DOMAIN) + 4 + crypto_kx_PUBLICKEYBYTES + SEAL_ID_BYTES)
#define WELCOME_MAC_INPUT_BYTES                                                                \
	(DOMAIN_BYTES(WELCOME_DOMAIN) + crypto_auth_BYTES + 4 + crypto_kx_PUBLICKEYBYTES + 8 +     \
	 SEAL_ID_BYTES)

static void hello_mac_input(uint8_t out[HELLO_MAC_INPUT_BYTES], uint32_t version,
                            const uint8_t *eph_pk, const uint8_t *sender_id)
{
	uint8_t *p = out;
	memcpy(p, HELLO_DOMAIN, DOMAIN_BYTES(HELLO_DOMAIN));
	p += DOMAIN_BYTES(HELLO_DOMAIN);
	put_le32(p, version);
	p += 4;
	memcpy(p, eph_pk, crypto_kx_PUBLICKEYBYTES);
	p += crypto_kx_PUBLICKEYBYTES;
	memcpy(p, sender_id, SEAL_ID_BYTES);
	p += SEAL_ID_BYTES;
	assert(p == out + HELLO_MAC_INPUT_BYTES);
}

static void welcome_mac_input(uint8_t out[WELCOME_MAC_INPUT_BYTES], const uint8_t *hello_mac,
                              uint32_t version, const uint8_t *eph_pk, uint64_t session_id,
                              const uint8_t *sender_id)
{
	uint8_t *p = out;
	memcpy(p, WELCOME_DOMAIN, DOMAIN_BYTES(WELCOME_DOMAIN));
	p += DOMAIN_BYTES(WELCOME_DOMAIN);
	memcpy(p, hello_mac, crypto_auth_BYTES);
	p += crypto_auth_BYTES;
	put_le32(p, version);
	p += 4;
	memcpy(p, eph_pk, crypto_kx_PUBLICKEYBYTES);
	p += crypto_kx_PUBLICKEYBYTES;
	put_le64(p, session_id);
	p += 8;
	memcpy(p, sender_id, SEAL_ID_BYTES);
	p += SEAL_ID_BYTES;
	assert(p == out + WELCOME_MAC_INPUT_BYTES);
}

/* key' = BLAKE2b(key, keyed by the secret): the link needs both the
 * ephemeral exchange and the cluster secret. */
static void mix_with_secret(uint8_t out[SESSION_KEY_BYTES], const uint8_t key[SESSION_KEY_BYTES],
                            const struct seal_keyring *kr)
{
	int rc = crypto_generichash(out, SESSION_KEY_BYTES, key, SESSION_KEY_BYTES, kr->secret,
	                            sizeof kr->secret);
	assert(rc == 0);
	(void)rc;
}

/* Header + packed message, malloc'd. 0 or -1 (no memory). */
static int frame_build(int kind, uint64_t session_id, const ProtobufCMessage *msg, uint8_t **out,
                       size_t *out_len)
{
	size_t body_len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(SEAL_HEADER_BYTES + body_len);
	if (buf == NULL)
		return -1;
	header_write(buf, kind, session_id, 0);
	size_t packed = protobuf_c_message_pack(msg, buf + SEAL_HEADER_BYTES);
	assert(packed == body_len);
	(void)packed;
	*out = buf;
	*out_len = SEAL_HEADER_BYTES + body_len;
	return 0;
}

int seal_hello_build(struct seal_initiator *in, const struct seal_keyring *kr,
                     const uint8_t self_id[SEAL_ID_BYTES], uint8_t **out, size_t *out_len)
{
	assert(in != NULL && kr != NULL && self_id != NULL && out != NULL && out_len != NULL);
	sodium_ready();
	crypto_kx_keypair(in->eph_pk, in->eph_sk);
	memcpy(in->self_id, self_id, SEAL_ID_BYTES);
	uint8_t mac_in[HELLO_MAC_INPUT_BYTES];
	hello_mac_input(mac_in, CH_PROTOCOL_VERSION, in->eph_pk, in->self_id);
	crypto_auth(in->hello_mac, mac_in, sizeof mac_in, kr->auth_key);

	Chorus__Hello hello = CHORUS__HELLO__INIT;
	hello.version = CH_PROTOCOL_VERSION;
	hello.eph_pk.data = in->eph_pk;
	hello.eph_pk.len = sizeof in->eph_pk;
	hello.sender_id.data = in->self_id;
	hello.sender_id.len = sizeof in->self_id;
	hello.mac.data = in->hello_mac;
	hello.mac.len = sizeof in->hello_mac;
	if (frame_build(SEAL_KIND_HELLO, 0, &hello.base, out, out_len) != 0) {
		sodium_memzero(in->eph_sk, sizeof in->eph_sk);
		return -1;
	}
	return 0;
}

/* Common checks on a handshake frame's clear header. */
static int handshake_peek(const uint8_t *frame, size_t len, int *kind, uint64_t *session_id)
{
	int v = seal_frame_peek(frame, len, SEAL_HANDSHAKE_BYTES_MAX, kind, session_id);
	if (v != SEAL_OK)
		return v;
	if (get_le64(frame + 16) != 0)
		return SEAL_MALFORMED;
	return SEAL_OK;
}

int seal_hello_accept(const struct seal_keyring *kr, const uint8_t self_id[SEAL_ID_BYTES],
                      const uint8_t *frame, size_t len, struct seal_session *out,
                      uint8_t **reply, size_t *reply_len)
{
	assert(kr != NULL && self_id != NULL && out != NULL && reply != NULL && reply_len != NULL);
	sodium_ready();
	int kind = 0;
	uint64_t header_session = 0;
	int v = handshake_peek(frame, len, &kind, &header_session);
	if (v != SEAL_OK)
		return v;
	if (kind != SEAL_KIND_HELLO || header_session != 0)
		return SEAL_MALFORMED;

	Chorus__Hello *hello = chorus__hello__unpack(NULL, len - SEAL_HEADER_BYTES,
	                                             frame + SEAL_HEADER_BYTES);
	if (hello == NULL)
		return SEAL_MALFORMED;
	if (hello->eph_pk.len != crypto_kx_PUBLICKEYBYTES || hello->sender_id.len != SEAL_ID_BYTES ||
	    hello->mac.len != crypto_auth_BYTES) {
		chorus__hello__free_unpacked(hello, NULL);
		return SEAL_MALFORMED;
	}
	uint8_t mac_in[HELLO_MAC_INPUT_BYTES];
	hello_mac_input(mac_in, hello->version, hello->eph_pk.data, hello->sender_id.data);
	if (crypto_auth_verify(hello->mac.data, mac_in, sizeof mac_in, kr->auth_key) != 0) {
		chorus__hello__free_unpacked(hello, NULL);
		return SEAL_FORGED;
	}
	if (hello->version != CH_PROTOCOL_VERSION) {
		chorus__hello__free_unpacked(hello, NULL);
		return SEAL_MALFORMED;
	}

	uint8_t srv_pk[crypto_kx_PUBLICKEYBYTES], srv_sk[crypto_kx_SECRETKEYBYTES];
	uint8_t rx[SESSION_KEY_BYTES], tx[SESSION_KEY_BYTES];
	crypto_kx_keypair(srv_pk, srv_sk);
	int kx = crypto_kx_server_session_keys(rx, tx, srv_pk, srv_sk, hello->eph_pk.data);
	sodium_memzero(srv_sk, sizeof srv_sk);
	if (kx != 0) { /* a low-order client key: no shared secret */
		chorus__hello__free_unpacked(hello, NULL);
		return SEAL_MALFORMED;
	}

	struct seal_session s;
	memset(&s, 0, sizeof s);
	do
		randombytes_buf(&s.session_id, sizeof s.session_id);
	while (s.session_id == 0);
	mix_with_secret(s.rx_key, rx, kr);
	mix_with_secret(s.tx_key, tx, kr);
	sodium_memzero(rx, sizeof rx);
	sodium_memzero(tx, sizeof tx);
	memcpy(s.peer_id, hello->sender_id.data, SEAL_ID_BYTES);

	uint8_t welcome_mac[crypto_auth_BYTES];
	uint8_t wmac_in[WELCOME_MAC_INPUT_BYTES];
	welcome_mac_input(wmac_in, hello->mac.data, CH_PROTOCOL_VERSION, srv_pk, s.session_id,
	                  self_id);
	crypto_auth(welcome_mac, wmac_in, sizeof wmac_in, kr->auth_key);
	chorus__hello__free_unpacked(hello, NULL);

	Chorus__Welcome welcome = CHORUS__WELCOME__INIT;
	welcome.version = CH_PROTOCOL_VERSION;
	welcome.eph_pk.data = srv_pk;
	welcome.eph_pk.len = sizeof srv_pk;
	welcome.session_id = s.session_id;
	welcome.sender_id.data = (uint8_t *)self_id;
	welcome.sender_id.len = SEAL_ID_BYTES;
	welcome.mac.data = welcome_mac;
	welcome.mac.len = sizeof welcome_mac;
	if (frame_build(SEAL_KIND_WELCOME, s.session_id, &welcome.base, reply, reply_len) != 0) {
		/* Out of memory is not a verdict on the peer; the caller sees no
		 * reply and drops the handshake. */
		sodium_memzero(&s, sizeof s);
		return SEAL_MALFORMED;
	}
	*out = s;
	sodium_memzero(&s, sizeof s);
	return SEAL_OK;
}

int seal_reject_build(int code, const char *reason, uint8_t **out, size_t *out_len)
{
	assert(out != NULL && out_len != NULL);
	if (reason == NULL)
		reason = "";
	size_t reason_len = strlen(reason);
	if (reason_len > SEAL_REASON_BYTES_MAX) {
		reason_len = SEAL_REASON_BYTES_MAX;
		/* back off UTF-8 continuation bytes so the string stays valid */
		while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xC0) == 0x80)
			reason_len--;
	}
	char cut[SEAL_REASON_BYTES_MAX + 1];
	memcpy(cut, reason, reason_len);
	cut[reason_len] = '\0';

	Chorus__Reject rej = CHORUS__REJECT__INIT;
	/* the wire carries CH_ERR_* codes negated (proto/chorus.proto) */
	rej.code = code < 0 ? (uint32_t)(-(int64_t)code) : (uint32_t)code;
	rej.reason = cut;
	return frame_build(SEAL_KIND_REJECT, 0, &rej.base, out, out_len);
}

static int reject_read(const uint8_t *frame, size_t len, uint64_t header_session, char *err,
                       size_t err_len)
{
	if (header_session != 0)
		return SEAL_MALFORMED;
	Chorus__Reject *rej =
		chorus__reject__unpack(NULL, len - SEAL_HEADER_BYTES, frame + SEAL_HEADER_BYTES);
	if (rej == NULL)
		return SEAL_MALFORMED;
	set_err(err, err_len, "%s", rej->reason != NULL ? rej->reason : "");
	chorus__reject__free_unpacked(rej, NULL);
	return SEAL_FORGED;
}

int seal_welcome_accept(struct seal_initiator *in, const struct seal_keyring *kr,
                        const uint8_t *frame, size_t len, struct seal_session *out, char *err,
                        size_t err_len)
{
	assert(in != NULL && kr != NULL && out != NULL);
	sodium_ready();
	int kind = 0;
	uint64_t header_session = 0;
	int v = handshake_peek(frame, len, &kind, &header_session);
	if (v != SEAL_OK) {
		set_err(err, err_len, "handshake reply refused: %s", seal_verdict_name(v));
		return v;
	}
	if (kind == SEAL_KIND_REJECT) {
		v = reject_read(frame, len, header_session, err, err_len);
		if (v != SEAL_FORGED)
			set_err(err, err_len, "handshake reply refused: %s", seal_verdict_name(v));
		return v;
	}
	if (kind != SEAL_KIND_WELCOME) {
		set_err(err, err_len, "handshake reply refused: not a welcome");
		return SEAL_MALFORMED;
	}
	if (sodium_is_zero(in->eph_sk, sizeof in->eph_sk)) {
		set_err(err, err_len, "handshake already completed");
		return SEAL_REPLAYED;
	}

	Chorus__Welcome *w = chorus__welcome__unpack(NULL, len - SEAL_HEADER_BYTES,
	                                             frame + SEAL_HEADER_BYTES);
	if (w == NULL) {
		set_err(err, err_len, "handshake reply refused: undecodable welcome");
		return SEAL_MALFORMED;
	}
	v = SEAL_OK;
	if (w->eph_pk.len != crypto_kx_PUBLICKEYBYTES || w->sender_id.len != SEAL_ID_BYTES ||
	    w->mac.len != crypto_auth_BYTES || w->session_id == 0 ||
	    w->session_id != header_session) {
		v = SEAL_MALFORMED;
		set_err(err, err_len, "handshake reply refused: malformed welcome");
	}
	if (v == SEAL_OK) {
		uint8_t mac_in[WELCOME_MAC_INPUT_BYTES];
		welcome_mac_input(mac_in, in->hello_mac, w->version, w->eph_pk.data, w->session_id,
		                  w->sender_id.data);
		if (crypto_auth_verify(w->mac.data, mac_in, sizeof mac_in, kr->auth_key) != 0) {
			v = SEAL_FORGED;
			set_err(err, err_len, "handshake failed: the node does not hold this cluster secret");
		}
	}
	if (v == SEAL_OK && w->version != CH_PROTOCOL_VERSION) {
		v = SEAL_MALFORMED;
		set_err(err, err_len, "handshake reply refused: protocol version %u, want %u",
		        (unsigned)w->version, (unsigned)CH_PROTOCOL_VERSION);
	}
	uint8_t rx[SESSION_KEY_BYTES], tx[SESSION_KEY_BYTES];
	if (v == SEAL_OK &&
	    crypto_kx_client_session_keys(rx, tx, in->eph_pk, in->eph_sk, w->eph_pk.data) != 0) {
		v = SEAL_MALFORMED; /* a low-order server key: no shared secret */
		set_err(err, err_len, "handshake reply refused: bad ephemeral key");
	}
	if (v != SEAL_OK) {
		chorus__welcome__free_unpacked(w, NULL);
		return v;
	}

	struct seal_session s;
	memset(&s, 0, sizeof s);
	s.session_id = w->session_id;
	mix_with_secret(s.rx_key, rx, kr);
	mix_with_secret(s.tx_key, tx, kr);
	sodium_memzero(rx, sizeof rx);
	sodium_memzero(tx, sizeof tx);
	memcpy(s.peer_id, w->sender_id.data, SEAL_ID_BYTES);
	chorus__welcome__free_unpacked(w, NULL);
	sodium_memzero(in->eph_sk, sizeof in->eph_sk);
	*out = s;
	sodium_memzero(&s, sizeof s);
	return SEAL_OK;
}
