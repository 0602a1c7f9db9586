/*
 * seal.c - sealed links: key files, roles, handshake, session keys and AEAD
 * frames.
 *
 * Owns every cryptographic decision of a Chorus link; the contract and the
 * frame layout are in seal.h, the whole protocol in docs/protocol.md. Only
 * libsodium's high-level constructions. Key derivation (kdf = the
 * crypto_kdf_derive_from_key of libsodium, BLAKE2b underneath):
 *
 *   secret (32 bytes, cluster secret file; used only as a kdf master key)
 *     client_root = kdf(secret, id 1, "chorrole")   (a client credential)
 *     node_root   = kdf(secret, id 2, "chorrole")
 *   each role_root (also used only as a kdf master key):
 *     auth   = kdf(role_root, id 1, "chorlink")  MACs HELLO and WELCOME
 *     mix    = kdf(role_root, id 2, "chorlink")  mixes the session keys
 *     reject = kdf(client_root, id 3, "chorlink") MACs data-frame REJECTs
 *     key_id = le32(first 4 bytes of kdf(client_root, id 4, "chorlink", 16 bytes))
 *     http token = kdf(client_root, id 5, "chorhttp")  (docs/http.md)
 *
 *   HELLO    mac = crypto_auth(auth[role], "chorus-hello-v2" || version(le32)
 *                  || role(u8) || key_id(le32) || time_ms(le64) || eph_pk
 *                  || sender_id)
 *   WELCOME  mac = crypto_auth(auth[role], "chorus-welcome-v2" || hello mac
 *                  || version(le32) || eph_pk || session_id(le64) || sender_id)
 *   keys     = crypto_kx_{client,server}_session_keys, each then mixed as
 *              crypto_generichash(32, key, key=mix[role])
 *   REJECT   mac[k] = HMAC-SHA512-256(reject[k], "chorus-reject-v1"
 *                  || session_id(le64) || counter(le64) || code(le32)
 *                  || key_id(le32) || reason_len(le32) || reason)
 *   DATA     crypto_aead_chacha20poly1305_ietf, ad = the 24-byte header,
 *            nonce = 0x00000000 || counter(le64)
 *
 * The subtle parts:
 *   - No key is used for two purposes, and the secret is never a MAC key:
 *     every MAC and mixing key is its own kdf subkey.
 *   - The HELLO MAC covers the role and key id, so a client credential (which
 *     holds client roots only) cannot claim the node role, and nobody can
 *     move a HELLO from one key to another.
 *   - The WELCOME MAC covers the client's HELLO MAC, so a WELCOME answers
 *     exactly one HELLO and cannot be replayed to another initiator.
 *   - A HELLO is fresh: its time (under the MAC) is within SEAL_HELLO_SKEW_MS
 *     of the node's clock, and its MAC was not seen in that window (the
 *     guard). The guard admits only authentic fresh HELLOs, so an outsider
 *     cannot fill it.
 *   - Session keys need both the ephemeral exchange and the role's mixing
 *     key: someone who learns an auth key (or replays a handshake) still
 *     cannot read data, and a session is forward secret.
 *   - The replay window (RFC 4303 §3.4.3 / WireGuard §5.4.6 style: highest
 *     counter + bitmap of the 1024 below it) is consulted before decryption
 *     but only updated after the tag verifies, so forged frames with huge
 *     counters cannot slide the window and poison it.
 *   - Counter 0 is reserved for handshake frames and never valid for data.
 *   - Keys live in one sodium_malloc page (read-only after loading, and
 *     MADV_WIPEONFORK where the kernel has it); see seal.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MADV_WIPEONFORK */
#endif
#include "proto/seal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chorus.h"
#include "proto/chorus.pb-c.h"

#define KDF_ROLE_CONTEXT "chorrole"
#define KDF_LINK_CONTEXT "chorlink"
#define KDF_ROLE_CLIENT_ID 1
#define KDF_ROLE_NODE_ID 2
#define KDF_AUTH_ID 1
#define KDF_MIX_ID 2
#define KDF_REJECT_ID 3
#define KDF_KEY_ID_ID 4
#define KDF_HTTP_CONTEXT "chorhttp"
#define KDF_HTTP_TOKEN_ID 5
#define KEY_BYTES 32
#define HELLO_DOMAIN "chorus-hello-v2"
#define WELCOME_DOMAIN "chorus-welcome-v2"
#define REJECT_DOMAIN "chorus-reject-v1"
#define CLIENT_LINE_PREFIX "chorus-client-v1 "
#define DOMAIN_BYTES(d) (sizeof(d) - 1) /* without the NUL */
#define NONCE_BYTES crypto_aead_chacha20poly1305_ietf_NPUBBYTES
#define SESSION_KEY_BYTES crypto_aead_chacha20poly1305_ietf_KEYBYTES
/* A key file holds at most SEAL_KEYS_MAX lines of up to 81 characters plus
 * some blank space; anything longer than this is refused without reading
 * further. */
#define KEY_FILE_BYTES_MAX 512
#define REPLAY_WORDS (SEAL_REPLAY_WINDOW / 64)

_Static_assert(SEAL_REPLAY_WINDOW % 64 == 0, "replay window is whole 64-bit words");
_Static_assert(SESSION_KEY_BYTES == crypto_kx_SESSIONKEYBYTES, "kx keys are aead keys");
_Static_assert(crypto_auth_KEYBYTES == KEY_BYTES, "auth keys are 32 bytes");
_Static_assert(crypto_auth_BYTES == 32, "auth tags are 32 bytes");
_Static_assert(crypto_auth_hmacsha512256_KEYBYTES == KEY_BYTES, "reject keys are 32 bytes");
_Static_assert(KEY_BYTES >= crypto_kdf_BYTES_MIN && KEY_BYTES <= crypto_kdf_BYTES_MAX,
               "keys derivable by crypto_kdf");
_Static_assert(SEAL_SECRET_BYTES == crypto_kdf_KEYBYTES, "secret is a kdf master key");
_Static_assert(KEY_BYTES == crypto_kdf_KEYBYTES, "role roots are kdf master keys");
_Static_assert(crypto_generichash_KEYBYTES_MIN <= KEY_BYTES &&
                   KEY_BYTES <= crypto_generichash_KEYBYTES_MAX,
               "mixing keys are generichash keys");
_Static_assert(DOMAIN_BYTES(KDF_ROLE_CONTEXT) == crypto_kdf_CONTEXTBYTES, "kdf context size");
_Static_assert(DOMAIN_BYTES(KDF_LINK_CONTEXT) == crypto_kdf_CONTEXTBYTES, "kdf context size");
_Static_assert(DOMAIN_BYTES(KDF_HTTP_CONTEXT) == crypto_kdf_CONTEXTBYTES, "kdf context size");
_Static_assert(SEAL_HTTP_TOKEN_BYTES >= crypto_kdf_BYTES_MIN, "token derivable by crypto_kdf");
_Static_assert(NONCE_BYTES == 12, "ietf nonce");
_Static_assert(SEAL_STALE == 8 && SEAL_WRONG_PEER + 1 == SEAL_VERDICT_COUNT,
               "verdicts are appended, and counted");

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
	case SEAL_STALE: return "stale";
	case SEAL_BUSY: return "busy";
	case SEAL_WRONG_PEER: return "wrong-peer";
	}
	return "unknown";
}

const char *seal_role_name(int role)
{
	switch (role) {
	case SEAL_ROLE_CLIENT: return "client";
	case SEAL_ROLE_NODE: return "node";
	}
	return "unknown";
}

/* ---- the handshake's wall clock ---- */

static pthread_once_t wall_once = PTHREAD_ONCE_INIT;
static uint64_t wall_anchor_ms; /* CLOCK_REALTIME at the anchor */
static uint64_t mono_anchor_ms; /* CLOCK_MONOTONIC at the anchor */

static uint64_t clock_ms(clockid_t id)
{
	struct timespec ts;
	int rc = clock_gettime(id, &ts);
	assert(rc == 0); /* both clocks always exist on Linux */
	(void)rc;
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void wall_anchor(void)
{
	wall_anchor_ms = clock_ms(CLOCK_REALTIME);
	mono_anchor_ms = clock_ms(CLOCK_MONOTONIC);
}

uint64_t seal_wall_ms(void)
{
	pthread_once(&wall_once, wall_anchor);
	return wall_anchor_ms + (clock_ms(CLOCK_MONOTONIC) - mono_anchor_ms);
}

/* ---- keyring ---- */

struct role_keys {
	uint8_t auth[KEY_BYTES];
	uint8_t mix[KEY_BYTES];
};

/* One key of the file, as derived keys only (never the secret). */
struct key_slot {
	struct role_keys role[2]; /* [role - 1]; node keys zero in a credential */
	uint8_t reject[KEY_BYTES];
	uint8_t client_root[KEY_BYTES]; /* kept to write client credentials */
};

struct seal_keyring {
	atomic_uint refs;
	uint32_t key_count;
	uint32_t key_ids[SEAL_KEYS_MAX]; /* public: on the wire */
	int has_node;
	int wipes_on_fork;
	struct key_slot *keys; /* sodium_malloc'd page, read-only once built */
	size_t keys_bytes;     /* the whole page */
};

static void kdf(uint8_t *out, size_t out_len, uint64_t id, const char *ctx,
                const uint8_t master[KEY_BYTES])
{
	int rc = crypto_kdf_derive_from_key(out, out_len, id, ctx, master);
	assert(rc == 0); /* fails only for sizes the static asserts rule out */
	(void)rc;
}

static uint32_t key_id_of(const uint8_t client_root[KEY_BYTES])
{
	uint8_t raw[16];
	kdf(raw, sizeof raw, KDF_KEY_ID_ID, KDF_LINK_CONTEXT, client_root);
	uint32_t id = (uint32_t)raw[0] | (uint32_t)raw[1] << 8 | (uint32_t)raw[2] << 16 |
	              (uint32_t)raw[3] << 24;
	sodium_memzero(raw, sizeof raw);
	return id;
}

static void role_keys_fill(struct role_keys *rk, const uint8_t root[KEY_BYTES])
{
	kdf(rk->auth, sizeof rk->auth, KDF_AUTH_ID, KDF_LINK_CONTEXT, root);
	kdf(rk->mix, sizeof rk->mix, KDF_MIX_ID, KDF_LINK_CONTEXT, root);
}

/* A keyring for count keys with a writable, zeroed key page. */
static struct seal_keyring *keyring_new(uint32_t count, int has_node)
{
	assert(count >= 1 && count <= SEAL_KEYS_MAX);
	sodium_ready();
	struct seal_keyring *kr = calloc(1, sizeof *kr);
	if (kr == NULL)
		return NULL;
	(void)seal_wall_ms(); /* anchors the handshake clock at start-up */
	long page = sysconf(_SC_PAGESIZE);
	size_t bytes = page > 0 ? (size_t)page : 4096u;
	assert(SEAL_KEYS_MAX * sizeof(struct key_slot) <= bytes);
	/* A whole page: sodium_malloc then puts it page-aligned right before
	 * its guard page, with its canary on the page before, so madvise below
	 * covers the keys and nothing of libsodium's own. */
	kr->keys = sodium_malloc(bytes);
	if (kr->keys == NULL) {
		free(kr);
		return NULL;
	}
	sodium_memzero(kr->keys, bytes);
	kr->keys_bytes = bytes;
	kr->key_count = count;
	kr->has_node = has_node;
	atomic_init(&kr->refs, 1u);
	return kr;
}

static void keyring_destroy(struct seal_keyring *kr)
{
	if (kr->keys != NULL) {
		sodium_mprotect_readwrite(kr->keys);
		sodium_free(kr->keys); /* wipes the page first */
	}
	sodium_memzero(kr, sizeof *kr);
	free(kr);
}

/* Slot i from a client root and, for a cluster secret, the node root. */
static void keyring_fill(struct seal_keyring *kr, uint32_t i, const uint8_t client_root[KEY_BYTES],
                         const uint8_t *node_root)
{
	assert(i < kr->key_count && (node_root != NULL) == (kr->has_node != 0));
	struct key_slot *s = &kr->keys[i];
	memcpy(s->client_root, client_root, KEY_BYTES);
	role_keys_fill(&s->role[SEAL_ROLE_CLIENT - 1], client_root);
	kdf(s->reject, sizeof s->reject, KDF_REJECT_ID, KDF_LINK_CONTEXT, client_root);
	if (node_root != NULL)
		role_keys_fill(&s->role[SEAL_ROLE_NODE - 1], node_root);
	kr->key_ids[i] = key_id_of(client_root);
}

/* Slot i from a cluster secret. */
static void keyring_fill_secret(struct seal_keyring *kr, uint32_t i,
                                const uint8_t secret[SEAL_SECRET_BYTES])
{
	uint8_t roots[2][KEY_BYTES];
	kdf(roots[0], KEY_BYTES, KDF_ROLE_CLIENT_ID, KDF_ROLE_CONTEXT, secret);
	kdf(roots[1], KEY_BYTES, KDF_ROLE_NODE_ID, KDF_ROLE_CONTEXT, secret);
	keyring_fill(kr, i, roots[0], roots[1]);
	sodium_memzero(roots, sizeof roots);
}

/* Ends building: refuses two keys with one id, then makes the page
 * read-only and wiped in forked children. 0, or -1 (kr is then freed). */
static int keyring_seal(struct seal_keyring *kr)
{
	for (uint32_t i = 0; i < kr->key_count; i++)
		for (uint32_t j = i + 1; j < kr->key_count; j++)
			if (kr->key_ids[i] == kr->key_ids[j]) {
				keyring_destroy(kr);
				return -1;
			}
#ifdef MADV_WIPEONFORK
	kr->wipes_on_fork = madvise(kr->keys, kr->keys_bytes, MADV_WIPEONFORK) == 0;
#endif
	sodium_mprotect_readonly(kr->keys);
	return 0;
}

struct seal_keyring *seal_keyring_ref(const struct seal_keyring *ckr)
{
	assert(ckr != NULL);
	struct seal_keyring *kr = (struct seal_keyring *)ckr; /* only refs changes */
	unsigned before = atomic_fetch_add(&kr->refs, 1u);
	assert(before > 0);
	(void)before;
	return kr;
}

void seal_keyring_free(struct seal_keyring *kr)
{
	if (kr == NULL)
		return;
	unsigned before = atomic_fetch_sub(&kr->refs, 1u);
	assert(before > 0);
	if (before == 1)
		keyring_destroy(kr);
}

struct seal_keyring *seal_keyring_from_secrets(const uint8_t *secrets, uint32_t count)
{
	if (secrets == NULL || count < 1 || count > SEAL_KEYS_MAX)
		return NULL;
	struct seal_keyring *kr = keyring_new(count, 1);
	if (kr == NULL)
		return NULL;
	for (uint32_t i = 0; i < count; i++)
		keyring_fill_secret(kr, i, secrets + (size_t)i * SEAL_SECRET_BYTES);
	return keyring_seal(kr) == 0 ? kr : NULL;
}

struct seal_keyring *seal_keyring_client_only(const struct seal_keyring *src)
{
	assert(src != NULL);
	struct seal_keyring *kr = keyring_new(src->key_count, 0);
	if (kr == NULL)
		return NULL;
	for (uint32_t i = 0; i < src->key_count; i++)
		keyring_fill(kr, i, src->keys[i].client_root, NULL);
	return keyring_seal(kr) == 0 ? kr : NULL;
}

int seal_keyring_has_role(const struct seal_keyring *kr, int role)
{
	assert(kr != NULL);
	if (role == SEAL_ROLE_CLIENT)
		return 1;
	return role == SEAL_ROLE_NODE && kr->has_node;
}

uint32_t seal_keyring_primary_id(const struct seal_keyring *kr)
{
	assert(kr != NULL && kr->key_count >= 1);
	return kr->key_ids[0];
}

uint32_t seal_keyring_ids(const struct seal_keyring *kr, uint32_t ids[SEAL_KEYS_MAX])
{
	assert(kr != NULL && ids != NULL);
	memcpy(ids, kr->key_ids, kr->key_count * sizeof ids[0]);
	return kr->key_count;
}

/* The slot of key_id, or -1. */
static int keyring_find(const struct seal_keyring *kr, uint32_t key_id)
{
	for (uint32_t i = 0; i < kr->key_count; i++)
		if (kr->key_ids[i] == key_id)
			return (int)i;
	return -1;
}

void seal_http_token(const uint8_t client_root[SEAL_SECRET_BYTES],
                     uint8_t out[SEAL_HTTP_TOKEN_BYTES])
{
	sodium_ready();
	kdf(out, SEAL_HTTP_TOKEN_BYTES, KDF_HTTP_TOKEN_ID, KDF_HTTP_CONTEXT, client_root);
}

int seal_keyring_http_token(const struct seal_keyring *kr, uint32_t index,
                            uint8_t out[SEAL_HTTP_TOKEN_BYTES])
{
	if (kr == NULL || index >= kr->key_count)
		return -1;
	seal_http_token(kr->keys[index].client_root, out);
	return 0;
}

int seal_http_token_check(const struct seal_keyring *kr, const uint8_t token[SEAL_HTTP_TOKEN_BYTES])
{
	int ok = 0;
	for (uint32_t i = 0; kr != NULL && i < kr->key_count; i++) {
		uint8_t want[SEAL_HTTP_TOKEN_BYTES];
		seal_http_token(kr->keys[i].client_root, want);
		/* every key is compared, whatever the first gave */
		ok |= sodium_memcmp(want, token, SEAL_HTTP_TOKEN_BYTES) == 0;
		sodium_memzero(want, sizeof want);
	}
	return ok;
}

int seal_keyring_has_id(const struct seal_keyring *kr, uint32_t key_id)
{
	assert(kr != NULL);
	return keyring_find(kr, key_id) >= 0;
}

void seal_key_id_hex(uint32_t key_id, char out[SEAL_KEY_ID_HEX_BYTES])
{
	snprintf(out, SEAL_KEY_ID_HEX_BYTES, "%08x", (unsigned)key_id);
}

int seal_keyring_wipes_on_fork(const struct seal_keyring *kr)
{
	assert(kr != NULL);
	return kr->wipes_on_fork;
}

int seal_keyring_is_zero(const struct seal_keyring *kr)
{
	assert(kr != NULL);
	return sodium_is_zero((const unsigned char *)kr->keys, kr->keys_bytes);
}

/* ---- key files ---- */

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

/* Exactly 2 * KEY_BYTES hex characters → 0 and the bytes in out. */
static int parse_hex_key(const uint8_t *p, size_t len, uint8_t out[KEY_BYTES])
{
	if (len != 2 * KEY_BYTES)
		return -1;
	for (size_t i = 0; i < KEY_BYTES; i++) {
		int hi = hex_value(p[2 * i]);
		int lo = hex_value(p[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)((hi << 4) | lo);
	}
	return 0;
}

/* Everything loading touches, in guarded memory wiped on every path. */
struct load_scratch {
	uint8_t buf[KEY_FILE_BYTES_MAX + 1];
	uint8_t keys[SEAL_KEYS_MAX][KEY_BYTES];
};

enum line_kind { LINE_SECRET = 1, LINE_CLIENT = 2 };

/* Reads path into sc->buf after checking what it is. *len, or -1 + err. */
static int key_file_read(const char *path, struct load_scratch *sc, size_t *len, char *err,
                         size_t err_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		set_err(err, err_len, "cannot read key file %s: %s", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		set_err(err, err_len, "cannot read key file %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		set_err(err, err_len, "key file %s is not a regular file", path);
		close(fd);
		return -1;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		set_err(err, err_len,
		        "key file %s has mode %04o: group and others must have no access "
		        "(run: chmod 600 %s)",
		        path, (unsigned)(st.st_mode & 07777), path);
		close(fd);
		return -1;
	}
	size_t n = 0;
	while (n < sizeof sc->buf) {
		ssize_t r = read(fd, sc->buf + n, sizeof sc->buf - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			set_err(err, err_len, "cannot read key file %s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (n > KEY_FILE_BYTES_MAX) {
		set_err(err, err_len, "key file %s: longer than %d bytes, not a key file", path,
		        KEY_FILE_BYTES_MAX);
		return -1;
	}
	*len = n;
	return 0;
}

/* Splits the file into key lines: *count keys in sc->keys, all of one kind.
 * 0 or -1 + err. */
static int key_file_parse(const char *path, struct load_scratch *sc, size_t len,
                          uint32_t *count, enum line_kind *kind, char *err, size_t err_len)
{
	*count = 0;
	*kind = 0;
	size_t pos = 0;
	unsigned line_no = 0;
	while (pos < len) {
		size_t end = pos;
		while (end < len && sc->buf[end] != '\n')
			end++;
		line_no++;
		size_t a = pos, b = end;
		while (b > a && (sc->buf[b - 1] == ' ' || sc->buf[b - 1] == '\t' ||
		                 sc->buf[b - 1] == '\r'))
			b--;
		pos = end + 1;
		if (b == a)
			continue; /* blank line */
		if (*count == SEAL_KEYS_MAX) {
			set_err(err, err_len,
			        "key file %s: line %u: too many keys (at most %u: the primary, then "
			        "one more accepted during a rotation)",
			        path, line_no, SEAL_KEYS_MAX);
			return -1;
		}
		enum line_kind k = LINE_SECRET;
		size_t prefix = DOMAIN_BYTES(CLIENT_LINE_PREFIX);
		if (b - a > prefix && memcmp(sc->buf + a, CLIENT_LINE_PREFIX, prefix) == 0) {
			k = LINE_CLIENT;
			a += prefix;
		}
		if (parse_hex_key(sc->buf + a, b - a, sc->keys[*count]) != 0) {
			set_err(err, err_len,
			        "key file %s: line %u: expected 64 hex characters (a cluster secret "
			        "from clusterctl keygen)%s",
			        path, line_no,
			        k == LINE_CLIENT ? " after \"" CLIENT_LINE_PREFIX "\"" : "");
			return -1;
		}
		if (*kind != 0 && *kind != k) {
			set_err(err, err_len,
			        "key file %s: line %u: mixes cluster secrets and client credentials",
			        path, line_no);
			return -1;
		}
		*kind = k;
		(*count)++;
	}
	if (*count == 0) {
		set_err(err, err_len, "key file %s: no key in it (expected 64 hex characters)", path);
		return -1;
	}
	return 0;
}

struct seal_keyring *seal_keyring_load(const char *path, int need_role, char *err,
                                       size_t err_len)
{
	assert(path != NULL);
	assert(need_role == SEAL_ROLE_CLIENT || need_role == SEAL_ROLE_NODE);
	sodium_ready();
	struct load_scratch *sc = sodium_malloc(sizeof *sc);
	if (sc == NULL) {
		set_err(err, err_len, "key file %s: out of memory", path);
		return NULL;
	}
	size_t len = 0;
	uint32_t count = 0;
	enum line_kind kind = 0;
	struct seal_keyring *kr = NULL;
	if (key_file_read(path, sc, &len, err, err_len) != 0 ||
	    key_file_parse(path, sc, len, &count, &kind, err, err_len) != 0)
		goto out;
	if (kind == LINE_CLIENT && need_role == SEAL_ROLE_NODE) {
		set_err(err, err_len,
		        "%s is a client credential (clusterctl keygen --client): a node needs the "
		        "cluster secret itself",
		        path);
		goto out;
	}
	kr = keyring_new(count, kind == LINE_SECRET);
	if (kr == NULL) {
		set_err(err, err_len, "key file %s: out of memory", path);
		goto out;
	}
	for (uint32_t i = 0; i < count; i++) {
		if (kind == LINE_SECRET)
			keyring_fill_secret(kr, i, sc->keys[i]);
		else
			keyring_fill(kr, i, sc->keys[i], NULL);
	}
	if (keyring_seal(kr) != 0) {
		kr = NULL;
		set_err(err, err_len, "key file %s: its two keys are the same key", path);
	}
out:
	sodium_free(sc); /* wipes the file's bytes */
	return kr;
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


/* Creates path (O_EXCL, mode exactly 0600) holding text, synced with its
 * directory; never leaves a partial file behind. 0 or -1 + err. */
static int key_file_write(const char *path, const char *what, const char *text, size_t len,
                          char *err, size_t err_len)
{
	int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0) {
		set_err(err, err_len, "cannot create %s %s: %s", what, path, strerror(errno));
		return -1;
	}
	/* The umask may only have narrowed 0600; fchmod makes the mode exact. */
	const char *step = "write";
	int rc = fchmod(fd, 0600);
	if (rc != 0)
		step = "chmod";
	if (rc == 0)
		rc = write_all(fd, text, len);
	if (rc == 0) {
		rc = fsync(fd);
		step = "fsync";
	}
	int e = errno;
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
		unlink(path); /* never leave a half-written key behind */
		set_err(err, err_len, "cannot %s %s %s: %s", step, what, path, strerror(e));
		return -1;
	}
	return 0;
}

int seal_secret_generate(const char *path, char *err, size_t err_len)
{
	assert(path != NULL);
	sodium_ready();
	struct {
		uint8_t secret[SEAL_SECRET_BYTES];
		char hex[2 * SEAL_SECRET_BYTES + 2]; /* + newline + NUL */
	} *t = sodium_malloc(sizeof *t);
	if (t == NULL) {
		set_err(err, err_len, "cannot create secret file %s: out of memory", path);
		return -1;
	}
	randombytes_buf(t->secret, sizeof t->secret);
	sodium_bin2hex(t->hex, sizeof t->hex, t->secret, sizeof t->secret);
	t->hex[2 * SEAL_SECRET_BYTES] = '\n';
	t->hex[2 * SEAL_SECRET_BYTES + 1] = '\0';
	int rc = key_file_write(path, "secret file", t->hex, 2 * SEAL_SECRET_BYTES + 1, err,
	                        err_len);
	sodium_free(t);
	return rc;
}

#define CREDENTIAL_LINE_BYTES (DOMAIN_BYTES(CLIENT_LINE_PREFIX) + 2 * KEY_BYTES + 1)

int seal_client_credential_write(const struct seal_keyring *kr, const char *path, char *err,
                                 size_t err_len)
{
	assert(kr != NULL && path != NULL);
	char *text = sodium_malloc(SEAL_KEYS_MAX * CREDENTIAL_LINE_BYTES + 1);
	if (text == NULL) {
		set_err(err, err_len, "cannot create client credential %s: out of memory", path);
		return -1;
	}
	size_t len = 0;
	for (uint32_t i = 0; i < kr->key_count; i++) {
		memcpy(text + len, CLIENT_LINE_PREFIX, DOMAIN_BYTES(CLIENT_LINE_PREFIX));
		len += DOMAIN_BYTES(CLIENT_LINE_PREFIX);
		sodium_bin2hex(text + len, 2 * KEY_BYTES + 1, kr->keys[i].client_root, KEY_BYTES);
		len += 2 * KEY_BYTES;
		text[len++] = '\n';
	}
	assert(len <= SEAL_KEYS_MAX * CREDENTIAL_LINE_BYTES);
	int rc = key_file_write(path, "client credential", text, len, err, err_len);
	sodium_free(text);
	return rc;
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


uint64_t seal_frame_counter(const uint8_t *frame)
{
	assert(frame != NULL);
	return get_le64(frame + 16);
}

/* ---- HELLO guard ---- */

struct guard_entry {
	uint64_t expires_ms; /* the HELLO's time + SEAL_HELLO_SKEW_MS; 0 = free */
	uint64_t mac_head;   /* first 8 bytes of the MAC, to compare fast */
	uint8_t mac[crypto_auth_BYTES];
};

struct seal_hello_guard {
	uint32_t entries_max;
	struct guard_entry e[];
};

struct seal_hello_guard *seal_hello_guard_create(uint32_t entries_max)
{
	if (entries_max == 0 || entries_max > SEAL_HELLO_GUARD_ENTRIES_MAX)
		return NULL;
	struct seal_hello_guard *g =
		calloc(1, sizeof *g + (size_t)entries_max * sizeof(struct guard_entry));
	if (g == NULL)
		return NULL;
	g->entries_max = entries_max;
	return g;
}

void seal_hello_guard_free(struct seal_hello_guard *g)
{
	free(g);
}

uint32_t seal_hello_guard_count(const struct seal_hello_guard *g, uint64_t now_wall_ms)
{
	assert(g != NULL);
	uint32_t n = 0;
	for (uint32_t i = 0; i < g->entries_max; i++)
		if (g->e[i].expires_ms != 0 && g->e[i].expires_ms >= now_wall_ms)
			n++;
	return n;
}

/* Records an authentic, fresh HELLO's MAC. SEAL_OK, SEAL_REPLAYED (seen in
 * the window) or SEAL_BUSY (every entry still in the window). */
static int guard_admit(struct seal_hello_guard *g, const uint8_t mac[crypto_auth_BYTES],
                       uint64_t hello_ms, uint64_t now_wall_ms)
{
	uint64_t head = get_le64(mac);
	struct guard_entry *free_slot = NULL;
	for (uint32_t i = 0; i < g->entries_max; i++) {
		struct guard_entry *e = &g->e[i];
		if (e->expires_ms == 0 || e->expires_ms < now_wall_ms) {
			if (free_slot == NULL)
				free_slot = e;
			continue;
		}
		if (e->mac_head == head && sodium_memcmp(e->mac, mac, crypto_auth_BYTES) == 0)
			return SEAL_REPLAYED;
	}
	if (free_slot == NULL)
		return SEAL_BUSY;
	free_slot->expires_ms = hello_ms + SEAL_HELLO_SKEW_MS;
	assert(free_slot->expires_ms >= now_wall_ms);
	free_slot->mac_head = head;
	memcpy(free_slot->mac, mac, crypto_auth_BYTES);
	return SEAL_OK;
}

/* 1 when hello_ms is within the skew window of now_wall_ms, either way. */
static int hello_time_fresh(uint64_t hello_ms, uint64_t now_wall_ms)
{
	uint64_t gap = hello_ms > now_wall_ms ? hello_ms - now_wall_ms : now_wall_ms - hello_ms;
	return gap <= SEAL_HELLO_SKEW_MS;
}

/* ---- handshake ---- */

#define HELLO_MAC_INPUT_BYTES                                                                  \
	(DOMAIN_BYTES(HELLO_DOMAIN) + 4 + 1 + 4 + 8 + crypto_kx_PUBLICKEYBYTES + SEAL_ID_BYTES)
#define WELCOME_MAC_INPUT_BYTES                                                                \
	(DOMAIN_BYTES(WELCOME_DOMAIN) + crypto_auth_BYTES + 4 + crypto_kx_PUBLICKEYBYTES + 8 +     \
	 SEAL_ID_BYTES)

static int role_valid(uint32_t role)
{
	return role == SEAL_ROLE_CLIENT || role == SEAL_ROLE_NODE;
}

static const struct role_keys *role_keys_of(const struct seal_keyring *kr, int slot, int role)
{
	assert(slot >= 0 && (uint32_t)slot < kr->key_count && role_valid((uint32_t)role));
	return &kr->keys[slot].role[role - 1];
}

static void hello_mac_input(uint8_t out[HELLO_MAC_INPUT_BYTES], uint32_t version, uint8_t role,
                            uint32_t key_id, uint64_t time_ms, const uint8_t *eph_pk,
                            const uint8_t *sender_id)
{
	uint8_t *p = out;
	memcpy(p, HELLO_DOMAIN, DOMAIN_BYTES(HELLO_DOMAIN));
	p += DOMAIN_BYTES(HELLO_DOMAIN);
	put_le32(p, version);
	p += 4;
	*p++ = role;
	put_le32(p, key_id);
	p += 4;
	put_le64(p, time_ms);
	p += 8;
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

/* key' = BLAKE2b(key, keyed by the role's mixing key): the link needs both
 * the ephemeral exchange and the role's key. */
static void mix_session_key(uint8_t out[SESSION_KEY_BYTES], const uint8_t key[SESSION_KEY_BYTES],
                            const struct role_keys *rk)
{
	int rc = crypto_generichash(out, SESSION_KEY_BYTES, key, SESSION_KEY_BYTES, rk->mix,
	                            sizeof rk->mix);
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

int seal_hello_build(struct seal_initiator *in, const struct seal_keyring *kr, int role,
                     const uint8_t self_id[SEAL_ID_BYTES], uint64_t now_wall_ms, uint8_t **out,
                     size_t *out_len)
{
	assert(in != NULL && kr != NULL && self_id != NULL && out != NULL && out_len != NULL);
	sodium_ready();
	memset(in, 0, sizeof *in);
	if (!role_valid((uint32_t)role) || !seal_keyring_has_role(kr, role))
		return -1; /* a client credential never speaks as a node */
	crypto_kx_keypair(in->eph_pk, in->eph_sk);
	memcpy(in->self_id, self_id, SEAL_ID_BYTES);
	in->role = (uint8_t)role;
	in->key_id = kr->key_ids[0];
	uint8_t mac_in[HELLO_MAC_INPUT_BYTES];
	hello_mac_input(mac_in, CH_PROTOCOL_VERSION, in->role, in->key_id, now_wall_ms, in->eph_pk,
	                in->self_id);
	crypto_auth(in->hello_mac, mac_in, sizeof mac_in, role_keys_of(kr, 0, role)->auth);

	Chorus__Hello hello = CHORUS__HELLO__INIT;
	hello.version = CH_PROTOCOL_VERSION;
	hello.eph_pk.data = in->eph_pk;
	hello.eph_pk.len = sizeof in->eph_pk;
	hello.sender_id.data = in->self_id;
	hello.sender_id.len = sizeof in->self_id;
	hello.mac.data = in->hello_mac;
	hello.mac.len = sizeof in->hello_mac;
	hello.role = in->role;
	hello.key_id = in->key_id;
	hello.time_ms = now_wall_ms;
	if (frame_build(SEAL_KIND_HELLO, 0, &hello.base, out, out_len) != 0) {
		sodium_memzero(in, sizeof *in);
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

/* The checks of seal_hello_accept up to the key exchange, on a decoded
 * HELLO: the slot of its key in *slot. */
static int hello_check(const struct seal_keyring *kr, struct seal_hello_guard *guard,
                       uint64_t now_wall_ms, const Chorus__Hello *hello, int *slot)
{
	if (hello->eph_pk.len != crypto_kx_PUBLICKEYBYTES || hello->sender_id.len != SEAL_ID_BYTES ||
	    hello->mac.len != crypto_auth_BYTES || !role_valid(hello->role))
		return SEAL_MALFORMED;
	int i = keyring_find(kr, hello->key_id);
	if (i < 0 || !seal_keyring_has_role(kr, (int)hello->role))
		return SEAL_FORGED; /* a key this node does not hold */
	uint8_t mac_in[HELLO_MAC_INPUT_BYTES];
	hello_mac_input(mac_in, hello->version, (uint8_t)hello->role, hello->key_id, hello->time_ms,
	                hello->eph_pk.data, hello->sender_id.data);
	if (crypto_auth_verify(hello->mac.data, mac_in, sizeof mac_in,
	                       role_keys_of(kr, i, (int)hello->role)->auth) != 0)
		return SEAL_FORGED;
	if (hello->version != CH_PROTOCOL_VERSION)
		return SEAL_MALFORMED;
	if (!hello_time_fresh(hello->time_ms, now_wall_ms))
		return SEAL_STALE;
	int v = guard_admit(guard, hello->mac.data, hello->time_ms, now_wall_ms);
	if (v != SEAL_OK)
		return v;
	*slot = i;
	return SEAL_OK;
}

int seal_hello_accept(const struct seal_keyring *kr, struct seal_hello_guard *guard,
                      const uint8_t self_id[SEAL_ID_BYTES], uint64_t now_wall_ms,
                      const uint8_t *frame, size_t len, struct seal_session *out,
                      uint8_t **reply, size_t *reply_len)
{
	assert(kr != NULL && guard != NULL && self_id != NULL && out != NULL && reply != NULL &&
	       reply_len != NULL);
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
	int slot = -1;
	v = hello_check(kr, guard, now_wall_ms, hello, &slot);
	if (v != SEAL_OK) {
		chorus__hello__free_unpacked(hello, NULL);
		return v;
	}
	int role = (int)hello->role;
	const struct role_keys *rk = role_keys_of(kr, slot, role);

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
	mix_session_key(s.rx_key, rx, rk);
	mix_session_key(s.tx_key, tx, rk);
	sodium_memzero(rx, sizeof rx);
	sodium_memzero(tx, sizeof tx);
	memcpy(s.peer_id, hello->sender_id.data, SEAL_ID_BYTES);
	s.role = (uint8_t)role;
	s.key_id = hello->key_id;

	uint8_t welcome_mac[crypto_auth_BYTES];
	uint8_t wmac_in[WELCOME_MAC_INPUT_BYTES];
	welcome_mac_input(wmac_in, hello->mac.data, CH_PROTOCOL_VERSION, srv_pk, s.session_id,
	                  self_id);
	crypto_auth(welcome_mac, wmac_in, sizeof wmac_in, rk->auth);
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

/* ---- REJECT ---- */

/* Cuts reason to SEAL_REASON_BYTES_MAX at a UTF-8 boundary into cut. */
static void reason_cut(const char *reason, char cut[SEAL_REASON_BYTES_MAX + 1])
{
	if (reason == NULL)
		reason = "";
	size_t reason_len = strlen(reason);
	if (reason_len > SEAL_REASON_BYTES_MAX) {
		reason_len = SEAL_REASON_BYTES_MAX;
		/* back off UTF-8 continuation bytes so the string stays valid */
		while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xC0) == 0x80)
			reason_len--;
	}
	memcpy(cut, reason, reason_len);
	cut[reason_len] = '\0';
}

/* the wire carries CH_ERR_* codes negated (proto/chorus.proto) */
static uint32_t code_to_wire(int code)
{
	return code < 0 ? (uint32_t)(-(int64_t)code) : (uint32_t)code;
}

int seal_reject_build(int code, const char *reason, uint8_t **out, size_t *out_len)
{
	assert(out != NULL && out_len != NULL);
	char cut[SEAL_REASON_BYTES_MAX + 1];
	reason_cut(reason, cut);
	Chorus__Reject rej = CHORUS__REJECT__INIT;
	rej.code = code_to_wire(code);
	rej.reason = cut;
	return frame_build(SEAL_KIND_REJECT, 0, &rej.base, out, out_len);
}

static void reject_mac(uint8_t mac[crypto_auth_BYTES], const uint8_t key[KEY_BYTES],
                       uint64_t session_id, uint64_t counter, uint32_t wire_code, uint32_t key_id,
                       const char *reason)
{
	size_t reason_len = strlen(reason);
	assert(reason_len <= UINT32_MAX);
	uint8_t fixed[8 + 8 + 4 + 4 + 4];
	put_le64(fixed, session_id);
	put_le64(fixed + 8, counter);
	put_le32(fixed + 16, wire_code);
	put_le32(fixed + 20, key_id);
	put_le32(fixed + 24, (uint32_t)reason_len);
	crypto_auth_hmacsha512256_state st;
	crypto_auth_hmacsha512256_init(&st, key, KEY_BYTES);
	crypto_auth_hmacsha512256_update(&st, (const uint8_t *)REJECT_DOMAIN,
	                                 DOMAIN_BYTES(REJECT_DOMAIN));
	crypto_auth_hmacsha512256_update(&st, fixed, sizeof fixed);
	crypto_auth_hmacsha512256_update(&st, (const uint8_t *)reason, reason_len);
	crypto_auth_hmacsha512256_final(&st, mac);
	sodium_memzero(&st, sizeof st);
}

int seal_reject_build_auth(const struct seal_keyring *kr, uint64_t session_id, uint64_t counter,
                           int code, const char *reason, uint8_t **out, size_t *out_len)
{
	assert(kr != NULL && out != NULL && out_len != NULL);
	sodium_ready();
	char cut[SEAL_REASON_BYTES_MAX + 1];
	reason_cut(reason, cut);
	Chorus__Reject rej = CHORUS__REJECT__INIT;
	rej.code = code_to_wire(code);
	rej.reason = cut;
	rej.session_id = session_id;
	rej.counter = counter;
	Chorus__RejectMac macs[SEAL_KEYS_MAX];
	Chorus__RejectMac *macp[SEAL_KEYS_MAX];
	uint8_t tags[SEAL_KEYS_MAX][crypto_auth_BYTES];
	for (uint32_t i = 0; i < kr->key_count; i++) {
		chorus__reject_mac__init(&macs[i]);
		reject_mac(tags[i], kr->keys[i].reject, session_id, counter, rej.code, kr->key_ids[i],
		           cut);
		macs[i].key_id = kr->key_ids[i];
		macs[i].mac.data = tags[i];
		macs[i].mac.len = crypto_auth_BYTES;
		macp[i] = &macs[i];
	}
	rej.n_macs = kr->key_count;
	rej.macs = macp;
	return frame_build(SEAL_KIND_REJECT, 0, &rej.base, out, out_len);
}

/* The decoded REJECT of a frame, or NULL (a framing verdict in *v). */
static Chorus__Reject *reject_unpack(const uint8_t *frame, size_t len, int *v)
{
	int kind = 0;
	uint64_t header_session = 0;
	*v = handshake_peek(frame, len, &kind, &header_session);
	if (*v != SEAL_OK)
		return NULL;
	if (kind != SEAL_KIND_REJECT || header_session != 0) {
		*v = SEAL_MALFORMED;
		return NULL;
	}
	Chorus__Reject *rej =
		chorus__reject__unpack(NULL, len - SEAL_HEADER_BYTES, frame + SEAL_HEADER_BYTES);
	if (rej == NULL)
		*v = SEAL_MALFORMED;
	return rej;
}

int seal_reject_check(const struct seal_keyring *kr, uint64_t session_id, uint64_t counter,
                      const uint8_t *frame, size_t len, int *code, char *reason,
                      size_t reason_len)
{
	assert(kr != NULL && code != NULL);
	sodium_ready();
	int v = SEAL_OK;
	Chorus__Reject *rej = reject_unpack(frame, len, &v);
	if (rej == NULL)
		return v;
	const char *text = rej->reason != NULL ? rej->reason : "";
	set_err(reason, reason_len, "%s", text);
	v = SEAL_FORGED;
	/* Only a REJECT of this very frame counts, under a key we hold; the
	 * number of MACs is bounded so a peer cannot make us work for nothing. */
	if (rej->session_id == session_id && rej->counter == counter && session_id != 0 &&
	    rej->n_macs <= SEAL_KEYS_MAX && strlen(text) <= SEAL_REASON_BYTES_MAX) {
		for (size_t m = 0; m < rej->n_macs && v != SEAL_OK; m++) {
			const Chorus__RejectMac *rm = rej->macs[m];
			int i = keyring_find(kr, rm->key_id);
			if (i < 0 || rm->mac.len != crypto_auth_BYTES)
				continue;
			uint8_t want[crypto_auth_BYTES];
			reject_mac(want, kr->keys[i].reject, session_id, counter, rej->code, rm->key_id,
			           text);
			if (crypto_verify_32(want, rm->mac.data) == 0)
				v = SEAL_OK;
		}
	}
	if (v == SEAL_OK) {
		*code = rej->code <= (uint32_t)INT32_MAX ? -(int)rej->code : CH_ERR_INTERNAL;
	}
	chorus__reject__free_unpacked(rej, NULL);
	return v;
}

/* ---- WELCOME ---- */

static int reject_read(const uint8_t *frame, size_t len, char *err, size_t err_len)
{
	int v = SEAL_OK;
	Chorus__Reject *rej = reject_unpack(frame, len, &v);
	if (rej == NULL)
		return v;
	set_err(err, err_len, "%s", rej->reason != NULL ? rej->reason : "");
	chorus__reject__free_unpacked(rej, NULL);
	return SEAL_FORGED;
}

int seal_welcome_accept(struct seal_initiator *in, const struct seal_keyring *kr,
                        const uint8_t *expected_peer, const uint8_t *frame, size_t len,
                        struct seal_session *out, char *err, size_t err_len)
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
		v = reject_read(frame, len, err, err_len);
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
	int slot = keyring_find(kr, in->key_id);
	if (slot < 0 || !role_valid(in->role) || !seal_keyring_has_role(kr, in->role)) {
		set_err(err, err_len, "handshake failed: key %08x is no longer held",
		        (unsigned)in->key_id);
		return SEAL_FORGED;
	}
	const struct role_keys *rk = role_keys_of(kr, slot, in->role);

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
		if (crypto_auth_verify(w->mac.data, mac_in, sizeof mac_in, rk->auth) != 0) {
			v = SEAL_FORGED;
			set_err(err, err_len,
			        "handshake failed: the node does not hold this cluster key");
		}
	}
	if (v == SEAL_OK && w->version != CH_PROTOCOL_VERSION) {
		v = SEAL_MALFORMED;
		set_err(err, err_len, "handshake reply refused: protocol version %u, want %u",
		        (unsigned)w->version, (unsigned)CH_PROTOCOL_VERSION);
	}
	if (v == SEAL_OK && expected_peer != NULL &&
	    sodium_memcmp(expected_peer, w->sender_id.data, SEAL_ID_BYTES) != 0) {
		/* authentic, but another member answers at this address */
		char got[2 * SEAL_ID_BYTES + 1], want[2 * SEAL_ID_BYTES + 1];
		sodium_bin2hex(got, sizeof got, w->sender_id.data, SEAL_ID_BYTES);
		sodium_bin2hex(want, sizeof want, expected_peer, SEAL_ID_BYTES);
		set_err(err, err_len, "handshake reached member %s, expected member %s", got, want);
		chorus__welcome__free_unpacked(w, NULL);
		sodium_memzero(in->eph_sk, sizeof in->eph_sk);
		return SEAL_WRONG_PEER;
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
	mix_session_key(s.rx_key, rx, rk);
	mix_session_key(s.tx_key, tx, rk);
	sodium_memzero(rx, sizeof rx);
	sodium_memzero(tx, sizeof tx);
	memcpy(s.peer_id, w->sender_id.data, SEAL_ID_BYTES);
	s.role = in->role;
	s.key_id = in->key_id;
	chorus__welcome__free_unpacked(w, NULL);
	sodium_memzero(in->eph_sk, sizeof in->eph_sk);
	*out = s;
	sodium_memzero(&s, sizeof s);
	return SEAL_OK;
}
