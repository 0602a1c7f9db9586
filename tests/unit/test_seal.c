/*
 * test_seal.c - sealed links (proto/seal.c): handshake, frames, replay
 * window, keyring files.
 *
 * Several tests rebuild a MAC, a nonce or a key from the spec in seal.c's
 * top comment with raw libsodium calls, so the wire layout is pinned down
 * independently of the code under test. Randomised tests use a seeded
 * splitmix64; set SEAL_TEST_SEED to replay a failure (the seed is printed in
 * every failure message).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chorus.h"
#include "proto/chorus.pb-c.h"
#include "proto/seal.h"
#include "test_scale.h"

/* ---- helpers ---- */

/* A fixed time for handshakes built and checked here (ms since the epoch). */
#define NOW_MS UINT64_C(1700000000000)

static void secret_from_byte(uint8_t secret[SEAL_SECRET_BYTES], uint8_t b)
{
	for (size_t i = 0; i < SEAL_SECRET_BYTES; i++)
		secret[i] = (uint8_t)(b + i);
}

/* Keyrings by secret byte, made once and freed by the group teardown. */
static struct seal_keyring *kr_cache[256];

static const struct seal_keyring *kr_byte(uint8_t b)
{
	if (kr_cache[b] == NULL) {
		uint8_t secret[SEAL_SECRET_BYTES];
		secret_from_byte(secret, b);
		kr_cache[b] = seal_keyring_from_secrets(secret, 1);
		assert_non_null(kr_cache[b]);
	}
	return kr_cache[b];
}

static int group_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < 256; i++) {
		seal_keyring_free(kr_cache[i]);
		kr_cache[i] = NULL;
	}
	return 0;
}

/* The key derivation tree, computed here from docs/protocol.md. */
struct spec_keys {
	uint8_t root[2][32]; /* [role - 1] */
	uint8_t auth[2][32];
	uint8_t mix[2][32];
	uint8_t reject[32];
	uint32_t key_id;
};

static void spec_derive(struct spec_keys *k, uint8_t b)
{
	uint8_t secret[SEAL_SECRET_BYTES];
	secret_from_byte(secret, b);
	for (int r = 0; r < 2; r++) {
		assert_int_equal(crypto_kdf_derive_from_key(k->root[r], 32, (uint64_t)r + 1, "chorrole",
		                                            secret),
		                 0);
		assert_int_equal(crypto_kdf_derive_from_key(k->auth[r], 32, 1, "chorlink", k->root[r]),
		                 0);
		assert_int_equal(crypto_kdf_derive_from_key(k->mix[r], 32, 2, "chorlink", k->root[r]), 0);
	}
	assert_int_equal(crypto_kdf_derive_from_key(k->reject, 32, 3, "chorlink", k->root[0]), 0);
	uint8_t id[16];
	assert_int_equal(crypto_kdf_derive_from_key(id, 16, 4, "chorlink", k->root[0]), 0);
	k->key_id = (uint32_t)id[0] | (uint32_t)id[1] << 8 | (uint32_t)id[2] << 16 |
	            (uint32_t)id[3] << 24;
}

/* The pre-#9 call shapes, for the many tests that only need a client HELLO
 * at NOW_MS and a node without replay memory (each call gets a fresh
 * guard; the guard has its own tests). */
static int t_hello_build(struct seal_initiator *in, const struct seal_keyring *kr,
                         const uint8_t self_id[SEAL_ID_BYTES], uint8_t **out, size_t *out_len)
{
	return seal_hello_build(in, kr, SEAL_ROLE_CLIENT, self_id, NOW_MS, out, out_len);
}

static int t_hello_accept(const struct seal_keyring *kr, const uint8_t self_id[SEAL_ID_BYTES],
                          const uint8_t *frame, size_t len, struct seal_session *out,
                          uint8_t **reply, size_t *reply_len)
{
	struct seal_hello_guard *g = seal_hello_guard_create(4);
	assert_non_null(g);
	int v = seal_hello_accept(kr, g, self_id, NOW_MS, frame, len, out, reply, reply_len);
	seal_hello_guard_free(g);
	return v;
}

static int t_welcome_accept(struct seal_initiator *in, const struct seal_keyring *kr,
                            const uint8_t *frame, size_t len, struct seal_session *out, char *err,
                            size_t err_len)
{
	return seal_welcome_accept(in, kr, NULL, frame, len, out, err, err_len);
}

static void id_from_byte(uint8_t id[SEAL_ID_BYTES], uint8_t b)
{
	memset(id, b, SEAL_ID_BYTES);
}

struct link {
	struct seal_session client, server;
};

/* Runs a full handshake; returns the first verdict that is not SEAL_OK. */
static int handshake(const struct seal_keyring *kr_client, const struct seal_keyring *kr_server,
                     struct link *l)
{
	uint8_t cid[SEAL_ID_BYTES], sid[SEAL_ID_BYTES];
	id_from_byte(cid, 0xC1);
	id_from_byte(sid, 0x5E);
	struct seal_initiator in;
	uint8_t *hello = NULL, *welcome = NULL;
	size_t hello_len = 0, welcome_len = 0;
	assert_int_equal(t_hello_build(&in, kr_client, cid, &hello, &hello_len), 0);
	int v = t_hello_accept(kr_server, sid, hello, hello_len, &l->server, &welcome,
	                          &welcome_len);
	free(hello);
	if (v != SEAL_OK) {
		assert_null(welcome);
		return v;
	}
	char err[128] = "";
	v = t_welcome_accept(&in, kr_client, welcome, welcome_len, &l->client, err, sizeof err);
	free(welcome);
	return v;
}

static void link_up(struct link *l)
{
	const struct seal_keyring *kr = kr_byte(7);
	memset(l, 0, sizeof *l);
	assert_int_equal(handshake(kr, kr, l), SEAL_OK);
}

/* A sealed frame in its own exactly-sized allocation, so ASan sees any
 * read past its end. */
static uint8_t *seal_copy(struct seal_session *s, const void *plain, size_t len, size_t *frame_len)
{
	uint8_t *f = malloc(len + SEAL_OVERHEAD_BYTES);
	assert_non_null(f);
	seal_frame_seal(s, plain, len, f);
	*frame_len = len + SEAL_OVERHEAD_BYTES;
	return f;
}

static uint8_t *dup_bytes(const uint8_t *p, size_t len)
{
	uint8_t *d = malloc(len > 0 ? len : 1);
	assert_non_null(d);
	if (len > 0)
		memcpy(d, p, len);
	return d;
}

/* Opens a copy of frame (open works in place and may wipe on failure). */
static int open_copy(struct seal_session *s, const uint8_t *frame, size_t len)
{
	uint8_t *c = dup_bytes(frame, len);
	uint8_t *plain = NULL;
	size_t plain_len = 0;
	int v = seal_frame_open(s, c, len, &plain, &plain_len);
	free(c);
	return v;
}

static uint64_t le64_at(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void put_le64_at(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void write_header(uint8_t *h, int kind, uint64_t session_id, uint64_t counter)
{
	h[0] = SEAL_MAGIC;
	h[1] = (uint8_t)kind;
	h[2] = CH_PROTOCOL_VERSION & 0xFF;
	h[3] = CH_PROTOCOL_VERSION >> 8;
	memset(h + 4, 0, 4);
	put_le64_at(h + 8, session_id);
	put_le64_at(h + 16, counter);
}

static uint64_t test_seed(void)
{
	const char *s = getenv("SEAL_TEST_SEED");
	return s != NULL ? strtoull(s, NULL, 0) : UINT64_C(0x5EA1C0FFEE);
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* A fresh empty directory for file tests; removed by rm_tmpdir. */
static void make_tmpdir(char *dir, size_t len)
{
	snprintf(dir, len, "/tmp/test_seal.XXXXXX");
	assert_non_null(mkdtemp(dir));
}

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void rm_tmpdir(const char *dir, const char *const *names, size_t count)
{
	char path[512];
	for (size_t i = 0; i < count; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		unlink(path);
	}
	assert_int_equal(rmdir(dir), 0);
}

/* ---- names ---- */

static void verdict_names_are_stable(void **state)
{
	(void)state;
	assert_string_equal(seal_verdict_name(SEAL_OK), "ok");
	assert_string_equal(seal_verdict_name(SEAL_TRUNCATED), "truncated");
	assert_string_equal(seal_verdict_name(SEAL_OVERSIZED), "oversized");
	assert_string_equal(seal_verdict_name(SEAL_MALFORMED), "malformed");
	assert_string_equal(seal_verdict_name(SEAL_FORGED), "forged");
	assert_string_equal(seal_verdict_name(SEAL_TAMPERED), "tampered");
	assert_string_equal(seal_verdict_name(SEAL_REPLAYED), "replayed");
	assert_string_equal(seal_verdict_name(SEAL_NO_SESSION), "no-session");
	assert_string_equal(seal_verdict_name(SEAL_STALE), "stale");
	assert_string_equal(seal_verdict_name(SEAL_BUSY), "busy");
	assert_string_equal(seal_verdict_name(SEAL_WRONG_PEER), "wrong-peer");
	assert_int_equal(SEAL_VERDICT_COUNT, 11);
	assert_string_equal(seal_verdict_name(99), "unknown");
	assert_string_equal(seal_verdict_name(-1), "unknown");
}

/* ---- handshake ---- */

static void key_id_is_derived_from_the_client_root(void **state)
{
	(void)state;
	struct spec_keys k;
	spec_derive(&k, 3);
	assert_int_equal(seal_keyring_primary_id(kr_byte(3)), k.key_id);
	assert_int_not_equal(seal_keyring_primary_id(kr_byte(3)), seal_keyring_primary_id(kr_byte(4)));
	char hex[SEAL_KEY_ID_HEX_BYTES];
	seal_key_id_hex(0x0a0b0c0d, hex);
	assert_string_equal(hex, "0a0b0c0d");
	/* no two keys of the tree are equal: each has its own purpose */
	const uint8_t *all[] = {k.root[0], k.root[1], k.auth[0], k.auth[1], k.mix[0], k.mix[1],
	                        k.reject};
	for (size_t a = 0; a < 7; a++)
		for (size_t b = a + 1; b < 7; b++)
			assert_memory_not_equal(all[a], all[b], 32);
}

static void handshake_then_data_flows_both_ways(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	assert_true(l.client.session_id != 0);
	assert_true(l.client.session_id == l.server.session_id);
	assert_memory_equal(l.client.tx_key, l.server.rx_key, sizeof l.client.tx_key);
	assert_memory_equal(l.client.rx_key, l.server.tx_key, sizeof l.client.rx_key);
	assert_memory_not_equal(l.client.tx_key, l.client.rx_key, sizeof l.client.tx_key);
	uint8_t cid[SEAL_ID_BYTES], sid[SEAL_ID_BYTES];
	id_from_byte(cid, 0xC1);
	id_from_byte(sid, 0x5E);
	assert_memory_equal(l.server.peer_id, cid, SEAL_ID_BYTES);
	assert_memory_equal(l.client.peer_id, sid, SEAL_ID_BYTES);
	assert_int_equal(l.client.tx_counter, 0);
	assert_int_equal(l.server.tx_counter, 0);

	const char *msgs[] = {"submit echo", "", "a somewhat longer third message"};
	for (int i = 0; i < 3; i++) {
		size_t n = strlen(msgs[i]), flen = 0;
		/* client -> server */
		uint8_t *f = seal_copy(&l.client, msgs[i], n, &flen);
		uint8_t *plain = NULL;
		size_t plain_len = 99;
		assert_int_equal(seal_frame_open(&l.server, f, flen, &plain, &plain_len), SEAL_OK);
		assert_int_equal(plain_len, n);
		assert_ptr_equal(plain, f + SEAL_HEADER_BYTES);
		assert_memory_equal(plain, msgs[i], n);
		free(f);
		/* server -> client */
		f = seal_copy(&l.server, msgs[i], n, &flen);
		assert_int_equal(seal_frame_open(&l.client, f, flen, &plain, &plain_len), SEAL_OK);
		assert_int_equal(plain_len, n);
		assert_memory_equal(plain, msgs[i], n);
		free(f);
	}
	assert_int_equal(l.client.tx_counter, 3);
	assert_int_equal(l.server.rx_window.highest, 3);
}

static void a_frame_cannot_be_reflected_back_to_its_sender(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	size_t flen = 0;
	uint8_t *f = seal_copy(&l.client, "x", 1, &flen);
	assert_int_equal(open_copy(&l.client, f, flen), SEAL_TAMPERED);
	assert_int_equal(open_copy(&l.server, f, flen), SEAL_OK);
	free(f);
}

static void sessions_get_distinct_nonzero_ids(void **state)
{
	(void)state;
	const struct seal_keyring *kr = kr_byte(7);
	uint64_t ids[32];
	for (int i = 0; i < 32; i++) {
		struct link l;
		assert_int_equal(handshake(kr, kr, &l), SEAL_OK);
		assert_true(l.server.session_id != 0);
		ids[i] = l.server.session_id;
		for (int j = 0; j < i; j++)
			assert_true(ids[j] != ids[i]);
	}
}

static void initiator_ephemeral_secret_is_wiped_after_welcome(void **state)
{
	(void)state;
	const struct seal_keyring *kr = kr_byte(7);
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 1);
	struct seal_initiator in;
	struct seal_session srv, cli;
	uint8_t *hello, *welcome;
	size_t hello_len, welcome_len;
	assert_int_equal(t_hello_build(&in, kr, id, &hello, &hello_len), 0);
	assert_false(sodium_is_zero(in.eph_sk, sizeof in.eph_sk));
	assert_int_equal(t_hello_accept(kr, id, hello, hello_len, &srv, &welcome, &welcome_len),
	                 SEAL_OK);
	assert_int_equal(t_welcome_accept(&in, kr, welcome, welcome_len, &cli, NULL, 0), SEAL_OK);
	assert_true(sodium_is_zero(in.eph_sk, sizeof in.eph_sk));
	/* the same welcome again finds the handshake over */
	char err[128] = "";
	struct seal_session again;
	assert_int_equal(t_welcome_accept(&in, kr, welcome, welcome_len, &again, err, sizeof err),
	                 SEAL_REPLAYED);
	assert_true(strlen(err) > 0);
	free(hello);
	free(welcome);
}

static void client_without_the_secret_is_forged(void **state)
{
	(void)state;
	const struct seal_keyring *good = kr_byte(7);
	const struct seal_keyring *bad = kr_byte(8);
	struct link l;
	memset(&l, 0, sizeof l);
	assert_int_equal(handshake(bad, good, &l), SEAL_FORGED);
	/* nothing was filled in for the refused peer */
	assert_true(l.server.session_id == 0);
}

static void hello_mac_matches_spec(void **state)
{
	(void)state;
	const struct seal_keyring *kr = kr_byte(7);
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 0x42);
	struct seal_initiator in;
	uint8_t *hello;
	size_t hello_len;
	assert_int_equal(t_hello_build(&in, kr, id, &hello, &hello_len), 0);
	assert_int_equal(hello[0], SEAL_MAGIC);
	assert_int_equal(hello[1], SEAL_KIND_HELLO);
	assert_true(le64_at(hello + 8) == 0 && le64_at(hello + 16) == 0);
	Chorus__Hello *h =
		chorus__hello__unpack(NULL, hello_len - SEAL_HEADER_BYTES, hello + SEAL_HEADER_BYTES);
	assert_non_null(h);
	assert_int_equal(h->version, CH_PROTOCOL_VERSION);
	assert_int_equal(h->eph_pk.len, 32);
	assert_int_equal(h->sender_id.len, 16);
	assert_int_equal(h->mac.len, 32);
	assert_memory_equal(h->eph_pk.data, in.eph_pk, 32);
	assert_memory_equal(h->sender_id.data, id, 16);

	assert_int_equal(h->role, SEAL_ROLE_CLIENT);
	assert_true(h->time_ms == NOW_MS);
	struct spec_keys k;
	spec_derive(&k, 7);
	assert_int_equal(h->key_id, k.key_id);

	uint8_t msg[15 + 4 + 1 + 4 + 8 + 32 + 16];
	memcpy(msg, "chorus-hello-v2", 15);
	msg[15] = CH_PROTOCOL_VERSION;
	msg[16] = msg[17] = msg[18] = 0;
	msg[19] = SEAL_ROLE_CLIENT;
	msg[20] = (uint8_t)k.key_id;
	msg[21] = (uint8_t)(k.key_id >> 8);
	msg[22] = (uint8_t)(k.key_id >> 16);
	msg[23] = (uint8_t)(k.key_id >> 24);
	put_le64_at(msg + 24, NOW_MS);
	memcpy(msg + 32, in.eph_pk, 32);
	memcpy(msg + 64, id, 16);
	uint8_t mac[crypto_auth_BYTES];
	crypto_auth(mac, msg, sizeof msg, k.auth[SEAL_ROLE_CLIENT - 1]);
	assert_memory_equal(h->mac.data, mac, sizeof mac);
	assert_memory_equal(in.hello_mac, mac, sizeof mac);
	chorus__hello__free_unpacked(h, NULL);
	free(hello);
}

/* A WELCOME built by hand from the spec, MAC'd with the client auth key of
 * the secret made from byte b. */
static uint8_t *forge_welcome(uint8_t b, const uint8_t hello_mac[32],
                              const uint8_t srv_pk[32], uint64_t session_id,
                              const uint8_t srv_id[16], size_t *len)
{
	uint8_t msg[17 + 32 + 4 + 32 + 8 + 16];
	memcpy(msg, "chorus-welcome-v2", 17);
	memcpy(msg + 17, hello_mac, 32);
	msg[49] = CH_PROTOCOL_VERSION;
	msg[50] = msg[51] = msg[52] = 0;
	memcpy(msg + 53, srv_pk, 32);
	put_le64_at(msg + 85, session_id);
	memcpy(msg + 93, srv_id, 16);
	uint8_t mac[crypto_auth_BYTES];
	struct spec_keys k;
	spec_derive(&k, b);
	crypto_auth(mac, msg, sizeof msg, k.auth[SEAL_ROLE_CLIENT - 1]);

	Chorus__Welcome w = CHORUS__WELCOME__INIT;
	w.version = CH_PROTOCOL_VERSION;
	w.eph_pk.data = (uint8_t *)srv_pk;
	w.eph_pk.len = 32;
	w.session_id = session_id;
	w.sender_id.data = (uint8_t *)srv_id;
	w.sender_id.len = 16;
	w.mac.data = mac;
	w.mac.len = 32;
	size_t body = chorus__welcome__get_packed_size(&w);
	uint8_t *f = malloc(SEAL_HEADER_BYTES + body);
	assert_non_null(f);
	write_header(f, SEAL_KIND_WELCOME, session_id, 0);
	chorus__welcome__pack(&w, f + SEAL_HEADER_BYTES);
	*len = SEAL_HEADER_BYTES + body;
	return f;
}

/* A HELLO built by hand from the spec. mac_role: the role whose auth key
 * MACs it (0: the claimed role); key_id 0: the secret's own. */
struct spec_hello {
	uint8_t b;        /* secret byte */
	uint8_t role;     /* claimed */
	uint8_t mac_role; /* 0: role */
	uint32_t key_id;  /* 0: the secret's */
	uint32_t version;
	uint64_t time_ms;
	const uint8_t *pk, *id;
};

static size_t spec_hello_frame(const struct spec_hello *sh, uint8_t f[SEAL_HEADER_BYTES + 160])
{
	struct spec_keys k;
	spec_derive(&k, sh->b);
	uint32_t key_id = sh->key_id != 0 ? sh->key_id : k.key_id;
	uint8_t msg[15 + 4 + 1 + 4 + 8 + 32 + 16];
	memcpy(msg, "chorus-hello-v2", 15);
	for (int i = 0; i < 4; i++) {
		msg[15 + i] = (uint8_t)(sh->version >> (8 * i));
		msg[20 + i] = (uint8_t)(key_id >> (8 * i));
	}
	msg[19] = sh->role;
	put_le64_at(msg + 24, sh->time_ms);
	memcpy(msg + 32, sh->pk, 32);
	memcpy(msg + 64, sh->id, 16);
	uint8_t mac[32];
	int mac_role = sh->mac_role != 0 ? sh->mac_role : sh->role;
	assert_true(mac_role == 1 || mac_role == 2);
	crypto_auth(mac, msg, sizeof msg, k.auth[mac_role - 1]);
	Chorus__Hello h = CHORUS__HELLO__INIT;
	h.version = sh->version;
	h.eph_pk.data = (uint8_t *)sh->pk;
	h.eph_pk.len = 32;
	h.sender_id.data = (uint8_t *)sh->id;
	h.sender_id.len = 16;
	h.mac.data = mac;
	h.mac.len = 32;
	h.role = sh->role;
	h.key_id = key_id;
	h.time_ms = sh->time_ms;
	assert_true(chorus__hello__get_packed_size(&h) <= 160);
	write_header(f, SEAL_KIND_HELLO, 0, 0);
	return SEAL_HEADER_BYTES + chorus__hello__pack(&h, f + SEAL_HEADER_BYTES);
}

static void node_without_the_secret_is_forged(void **state)
{
	(void)state;
	const struct seal_keyring *good = kr_byte(7);
	uint8_t cid[SEAL_ID_BYTES], sid[SEAL_ID_BYTES];
	id_from_byte(cid, 1);
	id_from_byte(sid, 2);
	struct seal_initiator in;
	uint8_t *hello;
	size_t hello_len;
	assert_int_equal(t_hello_build(&in, good, cid, &hello, &hello_len), 0);
	free(hello);

	uint8_t spk[crypto_kx_PUBLICKEYBYTES], ssk[crypto_kx_SECRETKEYBYTES];
	crypto_kx_keypair(spk, ssk);
	const uint64_t session_id = UINT64_C(0x1122334455667788);
	struct seal_session cli;
	char err[256] = "";

	/* an impostor answers the genuine hello with its own key */
	size_t flen;
	uint8_t *f = forge_welcome(8, in.hello_mac, spk, session_id, sid, &flen);
	memset(&cli, 0, sizeof cli);
	assert_int_equal(t_welcome_accept(&in, good, f, flen, &cli, err, sizeof err),
	                 SEAL_FORGED);
	assert_true(strlen(err) > 0);
	assert_true(cli.session_id == 0);
	assert_false(sodium_is_zero(in.eph_sk, sizeof in.eph_sk)); /* still usable */
	free(f);

	/* the same welcome MAC'd with the real key: accepted, and the keys are
	 * the kx keys mixed with the secret as the spec says */
	f = forge_welcome(7, in.hello_mac, spk, session_id, sid, &flen);
	assert_int_equal(t_welcome_accept(&in, good, f, flen, &cli, err, sizeof err), SEAL_OK);
	free(f);
	assert_true(cli.session_id == session_id);
	assert_memory_equal(cli.peer_id, sid, SEAL_ID_BYTES);
	uint8_t srx[32], stx[32], want[32];
	assert_int_equal(crypto_kx_server_session_keys(srx, stx, spk, ssk, in.eph_pk), 0);
	struct spec_keys k;
	spec_derive(&k, 7);
	crypto_generichash(want, 32, srx, 32, k.mix[SEAL_ROLE_CLIENT - 1], 32);
	assert_memory_equal(cli.tx_key, want, 32);
	crypto_generichash(want, 32, stx, 32, k.mix[SEAL_ROLE_CLIENT - 1], 32);
	assert_memory_equal(cli.rx_key, want, 32);
	assert_memory_not_equal(cli.tx_key, srx, 32); /* the key really was mixed in */
	assert_int_equal(cli.role, SEAL_ROLE_CLIENT);
	assert_int_equal(cli.key_id, k.key_id);
}

static void welcome_for_another_hello_is_forged(void **state)
{
	(void)state;
	const struct seal_keyring *kr = kr_byte(7);
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 9);
	struct seal_initiator a, b;
	uint8_t *ha, *hb, *wa;
	size_t ha_len, hb_len, wa_len;
	assert_int_equal(t_hello_build(&a, kr, id, &ha, &ha_len), 0);
	assert_int_equal(t_hello_build(&b, kr, id, &hb, &hb_len), 0);
	struct seal_session srv, cli;
	assert_int_equal(t_hello_accept(kr, id, ha, ha_len, &srv, &wa, &wa_len), SEAL_OK);
	assert_int_equal(t_welcome_accept(&b, kr, wa, wa_len, &cli, NULL, 0), SEAL_FORGED);
	assert_int_equal(t_welcome_accept(&a, kr, wa, wa_len, &cli, NULL, 0), SEAL_OK);
	free(ha);
	free(hb);
	free(wa);
}

static void tampered_welcome_is_refused(void **state)
{
	(void)state;
	const struct seal_keyring *kr = kr_byte(7);
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 9);
	struct seal_initiator in;
	uint8_t *hello, *welcome;
	size_t hello_len, welcome_len;
	assert_int_equal(t_hello_build(&in, kr, id, &hello, &hello_len), 0);
	struct seal_session srv, cli;
	assert_int_equal(t_hello_accept(kr, id, hello, hello_len, &srv, &welcome, &welcome_len),
	                 SEAL_OK);
	/* every body byte flipped: refused (forged or undecodable), never accepted */
	for (size_t i = SEAL_HEADER_BYTES; i < welcome_len; i++) {
		uint8_t *c = dup_bytes(welcome, welcome_len);
		c[i] ^= 0x01;
		int v = t_welcome_accept(&in, kr, c, welcome_len, &cli, NULL, 0);
		assert_true(v == SEAL_FORGED || v == SEAL_MALFORMED);
		free(c);
	}
	/* the header's session id must agree with the body's */
	uint8_t *c = dup_bytes(welcome, welcome_len);
	c[8] ^= 0x01;
	assert_int_equal(t_welcome_accept(&in, kr, c, welcome_len, &cli, NULL, 0),
	                 SEAL_MALFORMED);
	free(c);
	assert_int_equal(t_welcome_accept(&in, kr, welcome, welcome_len, &cli, NULL, 0),
	                 SEAL_OK);
	free(hello);
	free(welcome);
}

static void garbage_hello_body_is_malformed(void **state)
{
	(void)state;
	const struct seal_keyring *kr = kr_byte(7);
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 9);
	struct seal_session srv;
	uint8_t *reply = NULL;
	size_t reply_len = 0;
	uint8_t f[SEAL_HEADER_BYTES + 128];

	/* undecodable protobuf */
	write_header(f, SEAL_KIND_HELLO, 0, 0);
	memset(f + SEAL_HEADER_BYTES, 0xFF, 64);
	assert_int_equal(t_hello_accept(kr, id, f, SEAL_HEADER_BYTES + 64, &srv, &reply,
	                                   &reply_len),
	                 SEAL_MALFORMED);
	/* empty body: decodes, but every field is missing */
	assert_int_equal(t_hello_accept(kr, id, f, SEAL_HEADER_BYTES, &srv, &reply, &reply_len),
	                 SEAL_MALFORMED);
	assert_null(reply);

	/* fields of the wrong length */
	uint8_t pk[33] = {0}, sender[17] = {0}, mac[33] = {0};
	const size_t lens[][3] = {{31, 16, 32}, {33, 16, 32}, {32, 15, 32}, {32, 17, 32},
	                          {32, 16, 31}, {32, 16, 33}, {0, 16, 32}};
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		Chorus__Hello h = CHORUS__HELLO__INIT;
		h.version = CH_PROTOCOL_VERSION;
		h.eph_pk.data = pk;
		h.eph_pk.len = lens[i][0];
		h.sender_id.data = sender;
		h.sender_id.len = lens[i][1];
		h.mac.data = mac;
		h.mac.len = lens[i][2];
		size_t body = chorus__hello__get_packed_size(&h);
		assert_true(body <= 128);
		chorus__hello__pack(&h, f + SEAL_HEADER_BYTES);
		assert_int_equal(t_hello_accept(kr, id, f, SEAL_HEADER_BYTES + body, &srv, &reply,
		                                   &reply_len),
		                 SEAL_MALFORMED);
	}

	/* a genuine hello in the wrong frame kind, or with handshake counter/session set */
	struct seal_initiator in;
	uint8_t *hello;
	size_t hello_len;
	assert_int_equal(t_hello_build(&in, kr, id, &hello, &hello_len), 0);
	const size_t poke[] = {1, 8, 16};
	const uint8_t val[] = {SEAL_KIND_WELCOME, 1, 1};
	for (size_t i = 0; i < 3; i++) {
		uint8_t *c = dup_bytes(hello, hello_len);
		c[poke[i]] = val[i];
		assert_int_equal(t_hello_accept(kr, id, c, hello_len, &srv, &reply, &reply_len),
		                 SEAL_MALFORMED);
		free(c);
	}
	assert_null(reply);
	assert_int_equal(t_hello_accept(kr, id, hello, hello_len, &srv, &reply, &reply_len),
	                 SEAL_OK);
	free(reply);
	free(hello);
}

static void hello_with_foreign_version_is_refused(void **state)
{
	(void)state;
	const struct seal_keyring *kr = kr_byte(7);
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 9);
	uint8_t pk[32], sk[32];
	crypto_kx_keypair(pk, sk);
	/* correctly MAC'd, but a protocol version we do not speak */
	struct spec_hello sh = {.b = 7, .role = SEAL_ROLE_CLIENT, .version = CH_PROTOCOL_VERSION + 1,
	                        .time_ms = NOW_MS, .pk = pk, .id = id};
	uint8_t f[SEAL_HEADER_BYTES + 160];
	size_t flen = spec_hello_frame(&sh, f);
	struct seal_session srv;
	uint8_t *reply = NULL;
	size_t reply_len = 0;
	assert_int_equal(t_hello_accept(kr, id, f, flen, &srv, &reply, &reply_len), SEAL_MALFORMED);
	assert_null(reply);
}

static void reject_reply_surfaces_its_reason(void **state)
{
	(void)state;
	const struct seal_keyring *kr = kr_byte(7);
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 9);
	struct seal_initiator in;
	uint8_t *hello, *rej;
	size_t hello_len, rej_len;
	assert_int_equal(t_hello_build(&in, kr, id, &hello, &hello_len), 0);
	assert_int_equal(seal_reject_build(CH_ERR_AUTH, "wrong cluster secret", &rej, &rej_len), 0);
	assert_int_equal(rej[1], SEAL_KIND_REJECT);
	assert_true(le64_at(rej + 8) == 0 && le64_at(rej + 16) == 0);
	Chorus__Reject *r =
		chorus__reject__unpack(NULL, rej_len - SEAL_HEADER_BYTES, rej + SEAL_HEADER_BYTES);
	assert_non_null(r);
	assert_int_equal(r->code, 6); /* CH_ERR_AUTH negated */
	chorus__reject__free_unpacked(r, NULL);

	char err[128] = "";
	struct seal_session cli;
	assert_int_equal(t_welcome_accept(&in, kr, rej, rej_len, &cli, err, sizeof err),
	                 SEAL_FORGED);
	assert_string_equal(err, "wrong cluster secret");
	/* a small err buffer gets a cut, terminated message */
	char small[6];
	assert_int_equal(t_welcome_accept(&in, kr, rej, rej_len, &cli, small, sizeof small),
	                 SEAL_FORGED);
	assert_string_equal(small, "wrong");
	free(rej);
	free(hello);
}

static void long_reject_reason_is_cut_at_a_character_boundary(void **state)
{
	(void)state;
	/* "é" is two bytes; an odd prefix puts the cap inside a character */
	char reason[SEAL_REASON_BYTES_MAX * 2];
	size_t n = 0;
	reason[n++] = 'x';
	while (n + 2 < sizeof reason) {
		reason[n++] = (char)0xC3;
		reason[n++] = (char)0xA9;
	}
	reason[n] = '\0';
	uint8_t *rej;
	size_t rej_len;
	assert_int_equal(seal_reject_build(-1, reason, &rej, &rej_len), 0);
	assert_true(rej_len <= SEAL_HANDSHAKE_BYTES_MAX);
	Chorus__Reject *r =
		chorus__reject__unpack(NULL, rej_len - SEAL_HEADER_BYTES, rej + SEAL_HEADER_BYTES);
	assert_non_null(r);
	size_t got = strlen(r->reason);
	assert_true(got <= SEAL_REASON_BYTES_MAX && got >= SEAL_REASON_BYTES_MAX - 1);
	assert_true(got % 2 == 1); /* 'x' + whole two-byte characters */
	assert_memory_equal(r->reason, reason, got);
	chorus__reject__free_unpacked(r, NULL);
	free(rej);
}

/* ---- data frames ---- */

static void data_frame_layout_matches_spec(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	size_t flen;
	uint8_t *f = seal_copy(&l.client, "payload", 7, &flen);
	assert_int_equal(flen, 7 + SEAL_OVERHEAD_BYTES);
	assert_int_equal(f[0], SEAL_MAGIC);
	assert_int_equal(f[1], SEAL_KIND_DATA);
	assert_int_equal(f[2] | (f[3] << 8), CH_PROTOCOL_VERSION);
	assert_true(f[4] == 0 && f[5] == 0 && f[6] == 0 && f[7] == 0);
	assert_true(le64_at(f + 8) == l.client.session_id);
	assert_true(le64_at(f + 16) == 1); /* the first frame is counter 1 */

	uint8_t nonce[12] = {0};
	put_le64_at(nonce + 4, 1);
	uint8_t out[7];
	unsigned long long out_len = 0;
	assert_int_equal(crypto_aead_chacha20poly1305_ietf_decrypt(
				 out, &out_len, NULL, f + SEAL_HEADER_BYTES, flen - SEAL_HEADER_BYTES,
				 f, SEAL_HEADER_BYTES, nonce, l.server.rx_key),
	                 0);
	assert_int_equal(out_len, 7);
	assert_memory_equal(out, "payload", 7);

	int kind = 0;
	uint64_t sid = 0;
	assert_int_equal(seal_frame_peek(f, flen, SEAL_FRAME_BYTES_DEFAULT, &kind, &sid), SEAL_OK);
	assert_int_equal(kind, SEAL_KIND_DATA);
	assert_true(sid == l.client.session_id);
	free(f);
}

static void every_flipped_byte_is_refused_and_window_stays_clean(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	size_t flen;
	uint8_t *f = seal_copy(&l.client, "hello world", 11, &flen);
	for (size_t i = 0; i < flen; i++) {
		uint8_t *c = dup_bytes(f, flen);
		/* 0x80 keeps a flipped counter non-zero, so it reaches the tag check */
		c[i] ^= 0x80;
		uint8_t *plain;
		size_t plain_len;
		int v = seal_frame_open(&l.server, c, flen, &plain, &plain_len);
		int want = i < 8 ? SEAL_MALFORMED          /* magic, kind, version, reserved */
		           : i < 16 ? SEAL_NO_SESSION      /* session id */
		                    : SEAL_TAMPERED;       /* counter, ciphertext, tag */
		if (v != want)
			fail_msg("byte %zu flipped: got %s, want %s", i, seal_verdict_name(v),
			         seal_verdict_name(want));
		free(c);
	}
	/* forged frames (one with a huge counter) did not move the window */
	assert_true(l.server.rx_window.highest == 0);
	assert_int_equal(open_copy(&l.server, f, flen), SEAL_OK);
	assert_true(l.server.rx_window.highest == 1);
	free(f);
}

static void replayed_frame_is_refused(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	size_t flen;
	uint8_t *f = seal_copy(&l.client, "once", 4, &flen);
	assert_int_equal(open_copy(&l.server, f, flen), SEAL_OK);
	assert_int_equal(open_copy(&l.server, f, flen), SEAL_REPLAYED);
	/* still refused after newer frames moved the window on */
	for (int i = 0; i < 10; i++) {
		size_t n;
		uint8_t *g = seal_copy(&l.client, "more", 4, &n);
		assert_int_equal(open_copy(&l.server, g, n), SEAL_OK);
		free(g);
	}
	assert_int_equal(open_copy(&l.server, f, flen), SEAL_REPLAYED);
	free(f);
}

#define BURST 300

static void out_of_order_within_window_is_accepted_once_each(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	uint8_t *frames[BURST];
	size_t lens[BURST];
	for (int i = 0; i < BURST; i++) {
		uint32_t v = (uint32_t)i;
		frames[i] = seal_copy(&l.client, &v, sizeof v, &lens[i]);
	}
	uint64_t rng = test_seed();
	int order[BURST];
	for (int i = 0; i < BURST; i++)
		order[i] = i;
	for (int i = BURST - 1; i > 0; i--) {
		int j = (int)(splitmix64(&rng) % (uint64_t)(i + 1));
		int t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (int k = 0; k < BURST; k++) {
		int i = order[k];
		uint8_t *c = dup_bytes(frames[i], lens[i]);
		uint8_t *plain;
		size_t plain_len;
		int v = seal_frame_open(&l.server, c, lens[i], &plain, &plain_len);
		if (v != SEAL_OK)
			fail_msg("frame %d (step %d, seed %llu): %s", i, k,
			         (unsigned long long)test_seed(), seal_verdict_name(v));
		uint32_t got;
		memcpy(&got, plain, sizeof got);
		assert_int_equal(got, (uint32_t)i);
		free(c);
	}
	for (int i = 0; i < BURST; i++) {
		assert_int_equal(open_copy(&l.server, frames[i], lens[i]), SEAL_REPLAYED);
		free(frames[i]);
	}
}

static void counter_older_than_window_is_refused(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	const int total = SEAL_REPLAY_WINDOW + 100;
	uint8_t **frames = calloc((size_t)total + 1, sizeof *frames);
	size_t *lens = calloc((size_t)total + 1, sizeof *lens);
	assert_non_null(frames);
	assert_non_null(lens);
	for (int c = 1; c <= total; c++)
		frames[c] = seal_copy(&l.client, "z", 1, &lens[c]);
	assert_int_equal(open_copy(&l.server, frames[total], lens[total]), SEAL_OK);
	int edge = total - (SEAL_REPLAY_WINDOW - 1);
	assert_int_equal(open_copy(&l.server, frames[edge - 1], lens[edge - 1]), SEAL_REPLAYED);
	assert_int_equal(open_copy(&l.server, frames[1], lens[1]), SEAL_REPLAYED);
	assert_int_equal(open_copy(&l.server, frames[edge], lens[edge]), SEAL_OK);
	for (int c = 1; c <= total; c++)
		free(frames[c]);
	free(frames);
	free(lens);
}

static void data_frame_with_counter_zero_is_refused(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	/* correctly sealed with the real key, but counter 0 is the handshake's */
	uint8_t f[SEAL_OVERHEAD_BYTES + 3];
	write_header(f, SEAL_KIND_DATA, l.client.session_id, 0);
	uint8_t nonce[12] = {0};
	unsigned long long clen;
	crypto_aead_chacha20poly1305_ietf_encrypt(f + SEAL_HEADER_BYTES, &clen,
	                                          (const uint8_t *)"abc", 3, f, SEAL_HEADER_BYTES,
	                                          NULL, nonce, l.client.tx_key);
	assert_int_equal(open_copy(&l.server, f, sizeof f), SEAL_REPLAYED);
	/* the same construction at counter 1 is accepted: only the counter differs */
	put_le64_at(f + 16, 1);
	put_le64_at(nonce + 4, 1);
	crypto_aead_chacha20poly1305_ietf_encrypt(f + SEAL_HEADER_BYTES, &clen,
	                                          (const uint8_t *)"abc", 3, f, SEAL_HEADER_BYTES,
	                                          NULL, nonce, l.client.tx_key);
	assert_int_equal(open_copy(&l.server, f, sizeof f), SEAL_OK);
}

/* The session id and counter travel in clear: a forger who copies them
 * from the wire must not pass for a resend (the node acts on resends). */
static void forged_frame_with_a_seen_counter_is_tampered_not_replayed(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	uint8_t real[SEAL_OVERHEAD_BYTES + 5];
	seal_frame_seal(&l.client, (const uint8_t *)"hello", 5, real);
	assert_int_equal(open_copy(&l.server, real, sizeof real), SEAL_OK);
	/* same header, made-up body and tag, of any length */
	for (size_t body = 0; body <= 64; body += 16) {
		uint8_t forged[SEAL_OVERHEAD_BYTES + 64];
		memcpy(forged, real, SEAL_HEADER_BYTES);
		randombytes_buf(forged + SEAL_HEADER_BYTES, body + SEAL_TAG_BYTES);
		assert_int_equal(open_copy(&l.server, forged, SEAL_OVERHEAD_BYTES + body), SEAL_TAMPERED);
	}
	/* the real bytes again: authentic, already seen, and readable */
	uint8_t *copy = dup_bytes(real, sizeof real);
	uint8_t *plain = NULL;
	size_t plain_len = 0;
	assert_int_equal(seal_frame_open(&l.server, copy, sizeof real, &plain, &plain_len),
	                 SEAL_REPLAYED);
	assert_int_equal(plain_len, 5);
	assert_memory_equal(plain, "hello", 5);
	free(copy);
}

static void frame_for_another_session_is_no_session(void **state)
{
	(void)state;
	struct link a, b;
	link_up(&a);
	link_up(&b);
	size_t flen;
	uint8_t *f = seal_copy(&a.client, "x", 1, &flen);
	assert_int_equal(open_copy(&b.server, f, flen), SEAL_NO_SESSION);
	assert_int_equal(open_copy(&a.server, f, flen), SEAL_OK);
	free(f);
}

static void handshake_frame_on_data_path_is_malformed(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	uint8_t *rej;
	size_t rej_len;
	assert_int_equal(seal_reject_build(CH_ERR_AUTH, "padding padding padding", &rej, &rej_len),
	                 0);
	assert_true(rej_len >= SEAL_OVERHEAD_BYTES);
	assert_int_equal(open_copy(&l.server, rej, rej_len), SEAL_MALFORMED);
	free(rej);
}

static void truncated_frames_of_every_length_are_refused(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	size_t flen;
	uint8_t *f = seal_copy(&l.client, NULL, 0, &flen);
	assert_int_equal(flen, SEAL_OVERHEAD_BYTES);
	for (size_t n = 0; n < SEAL_OVERHEAD_BYTES; n++) {
		uint8_t *c = dup_bytes(f, n);
		uint8_t *plain = NULL;
		size_t plain_len = 0;
		int v = seal_frame_open(&l.server, c, n, &plain, &plain_len);
		if (v != SEAL_TRUNCATED)
			fail_msg("length %zu: %s", n, seal_verdict_name(v));
		int kind;
		uint64_t sid;
		assert_int_equal(seal_frame_peek(c, n, SEAL_FRAME_BYTES_DEFAULT, &kind, &sid),
		                 SEAL_TRUNCATED);
		free(c);
	}
	/* handshake paths too */
	const struct seal_keyring *kr = kr_byte(7);
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 1);
	struct seal_initiator in;
	uint8_t *hello;
	size_t hello_len;
	assert_int_equal(t_hello_build(&in, kr, id, &hello, &hello_len), 0);
	for (size_t n = 0; n < SEAL_HEADER_BYTES; n++) {
		uint8_t *c = dup_bytes(hello, n);
		struct seal_session s;
		uint8_t *reply = NULL;
		size_t reply_len;
		assert_int_equal(t_hello_accept(kr, id, c, n, &s, &reply, &reply_len),
		                 SEAL_TRUNCATED);
		assert_int_equal(t_welcome_accept(&in, kr, c, n, &s, NULL, 0), SEAL_TRUNCATED);
		free(c);
	}
	/* a hello cut inside its body is undecodable, or (cut between fields)
	 * lacks what its MAC covers; never read past, never accepted */
	for (size_t n = SEAL_HEADER_BYTES + 1; n < hello_len; n++) {
		uint8_t *c = dup_bytes(hello, n);
		struct seal_session s;
		uint8_t *reply = NULL;
		size_t reply_len;
		int v = t_hello_accept(kr, id, c, n, &s, &reply, &reply_len);
		assert_true(v == SEAL_MALFORMED || v == SEAL_FORGED);
		assert_null(reply);
		free(c);
	}
	free(hello);
	free(f);
}

static void oversized_frames_are_refused(void **state)
{
	(void)state;
	struct link l;
	link_up(&l);
	uint8_t payload[100] = {0};
	size_t flen;
	uint8_t *f = seal_copy(&l.client, payload, sizeof payload, &flen);
	int kind;
	uint64_t sid;
	assert_int_equal(seal_frame_peek(f, flen, flen - 1, &kind, &sid), SEAL_OVERSIZED);
	assert_int_equal(seal_frame_peek(f, flen, flen, &kind, &sid), SEAL_OK);
	free(f);

	/* handshake frames have their own small cap */
	const struct seal_keyring *kr = kr_byte(7);
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 1);
	size_t big_len = SEAL_HANDSHAKE_BYTES_MAX + 1;
	uint8_t *big = calloc(1, big_len);
	assert_non_null(big);
	write_header(big, SEAL_KIND_HELLO, 0, 0);
	struct seal_session s;
	uint8_t *reply = NULL;
	size_t reply_len;
	assert_int_equal(t_hello_accept(kr, id, big, big_len, &s, &reply, &reply_len),
	                 SEAL_OVERSIZED);
	struct seal_initiator in;
	uint8_t *hello;
	size_t hello_len;
	assert_int_equal(t_hello_build(&in, kr, id, &hello, &hello_len), 0);
	big[1] = SEAL_KIND_WELCOME;
	assert_int_equal(t_welcome_accept(&in, kr, big, big_len, &s, NULL, 0), SEAL_OVERSIZED);
	free(hello);
	free(big);
}

static void bad_magic_version_kind_or_reserved_is_malformed(void **state)
{
	(void)state;
	uint8_t f[SEAL_OVERHEAD_BYTES];
	memset(f, 0, sizeof f);
	write_header(f, SEAL_KIND_DATA, 5, 1);
	int kind = -1;
	uint64_t sid = 0;
	assert_int_equal(seal_frame_peek(f, sizeof f, sizeof f, &kind, &sid), SEAL_OK);
	assert_int_equal(kind, SEAL_KIND_DATA);
	assert_true(sid == 5);

	struct {
		size_t off;
		uint8_t val;
	} bad[] = {
		{0, 0x00}, {0, 0xC4}, /* magic */
		{1, 0}, {1, 5}, {1, 0xFF}, /* kind */
		{2, CH_PROTOCOL_VERSION + 1}, {3, 1}, /* version */
		{4, 1}, {7, 0x80}, /* reserved */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		uint8_t c[sizeof f];
		memcpy(c, f, sizeof f);
		c[bad[i].off] = bad[i].val;
		assert_int_equal(seal_frame_peek(c, sizeof c, sizeof c, &kind, &sid), SEAL_MALFORMED);
	}
	/* kinds 1..4 are all known; NULL out-parameters are allowed */
	for (int k = SEAL_KIND_HELLO; k <= SEAL_KIND_DATA; k++) {
		f[1] = (uint8_t)k;
		assert_int_equal(seal_frame_peek(f, sizeof f, sizeof f, NULL, NULL), SEAL_OK);
	}
}

/* ---- replay window ---- */

static void replay_window_refuses_counter_zero(void **state)
{
	(void)state;
	struct seal_replay w;
	memset(&w, 0, sizeof w);
	assert_int_equal(seal_replay_check(&w, 0), 0);
	assert_int_equal(seal_replay_check(&w, 1), 1);
	assert_int_equal(seal_replay_check(&w, 0), 0);
}

static void replay_window_edges_1023_behind_accepted_1024_refused(void **state)
{
	(void)state;
	struct seal_replay w;
	memset(&w, 0, sizeof w);
	const uint64_t top = 5000;
	assert_int_equal(seal_replay_check(&w, top), 1);
	assert_int_equal(seal_replay_check(&w, top - SEAL_REPLAY_WINDOW), 0);
	assert_int_equal(seal_replay_check(&w, top - (SEAL_REPLAY_WINDOW - 1)), 1);
	assert_int_equal(seal_replay_check(&w, top - (SEAL_REPLAY_WINDOW - 1)), 0);
	assert_int_equal(seal_replay_check(&w, top), 0);
	assert_int_equal(seal_replay_check(&w, 1), 0);
	/* one step forward pushes the oldest seen counter out of the window */
	assert_int_equal(seal_replay_check(&w, top + 1), 1);
	assert_int_equal(seal_replay_check(&w, top - (SEAL_REPLAY_WINDOW - 2)), 1);
	assert_int_equal(seal_replay_check(&w, top - (SEAL_REPLAY_WINDOW - 1)), 0);
}

static void replay_window_jump_far_ahead_clears_bitmap(void **state)
{
	(void)state;
	struct seal_replay w;
	memset(&w, 0, sizeof w);
	for (uint64_t c = 1; c <= 2000; c++)
		assert_int_equal(seal_replay_check(&w, c), 1);
	const uint64_t jumps[] = {SEAL_REPLAY_WINDOW, SEAL_REPLAY_WINDOW + 1, 100000,
	                          UINT64_MAX / 2};
	for (size_t j = 0; j < sizeof jumps / sizeof jumps[0]; j++) {
		uint64_t old = w.highest;
		uint64_t top = old + jumps[j];
		assert_int_equal(seal_replay_check(&w, top), 1);
		/* only top itself is marked: old is exactly out of reach or further */
		assert_true(w.bits[0] == 1);
		for (size_t i = 1; i < SEAL_REPLAY_WINDOW / 64; i++)
			assert_true(w.bits[i] == 0);
		assert_int_equal(seal_replay_check(&w, old), 0);
		assert_int_equal(seal_replay_check(&w, top - (SEAL_REPLAY_WINDOW - 1)), 1);
		assert_int_equal(seal_replay_check(&w, top - 1), 1);
	}
}

static void replay_window_keeps_seen_bits_across_word_boundaries(void **state)
{
	(void)state;
	const uint64_t shifts[] = {1, 2, 63, 64, 65, 127, 128, 129, 500, 959, 960, 1000, 1022, 1023};
	for (size_t s = 0; s < sizeof shifts / sizeof shifts[0]; s++) {
		struct seal_replay w;
		memset(&w, 0, sizeof w);
		const uint64_t base = 10000;
		/* mark every third counter in the window below base */
		for (uint64_t c = base - (SEAL_REPLAY_WINDOW - 1); c <= base; c++)
			if (c % 3 == 0 || c == base)
				assert_int_equal(seal_replay_check(&w, c), 1);
		uint64_t top = base + shifts[s];
		assert_int_equal(seal_replay_check(&w, top), 1);
		for (uint64_t c = top - (SEAL_REPLAY_WINDOW - 1); c < top; c++) {
			int seen = c <= base && (c % 3 == 0 || c == base);
			struct seal_replay copy = w;
			if (seal_replay_check(&copy, c) != !seen)
				fail_msg("shift %llu: counter %llu seen=%d misjudged",
				         (unsigned long long)shifts[s], (unsigned long long)c, seen);
		}
	}
}

struct keyed {
	uint64_t key;
	uint64_t counter;
};

static int keyed_cmp(const void *a, const void *b)
{
	const struct keyed *x = a, *y = b;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return x->counter < y->counter ? -1 : (x->counter > y->counter);
}

/* Property: order counters c by c + r with r uniform in [0, 1023]. When c
 * arrives, any counter h already seen has h + r_h <= c + r_c, so
 * h - c <= 1023: every counter is inside the window and must be accepted
 * exactly once; a second pass in another order accepts none. */
static void replay_window_accepts_jittered_permutations_exactly_once(void **state)
{
	(void)state;
	const uint64_t seed = test_seed();
	uint64_t rng = seed;
	enum { COUNT_MAX = 256 };
	/* 10,000 trials; 1,000 under valgrind (test_scale.h) */
	const int trial_count = (int)test_scaled(10000, 1000);
	struct keyed perm[COUNT_MAX];
	for (int t = 0; t < trial_count; t++) {
		size_t count = 16 + (size_t)(splitmix64(&rng) % (COUNT_MAX - 16 + 1));
		uint64_t base = (t % 4 == 0) ? 1 : 1 + (splitmix64(&rng) >> 2);
		uint64_t jitter = 1 + splitmix64(&rng) % SEAL_REPLAY_WINDOW; /* r in [0, jitter) */
		for (size_t i = 0; i < count; i++) {
			perm[i].counter = base + i;
			perm[i].key = i + splitmix64(&rng) % jitter;
		}
		qsort(perm, count, sizeof perm[0], keyed_cmp);
		struct seal_replay w;
		memset(&w, 0, sizeof w);
		for (size_t i = 0; i < count; i++)
			if (seal_replay_check(&w, perm[i].counter) != 1)
				fail_msg("seed %llu trial %d: counter %llu refused (highest %llu)",
				         (unsigned long long)seed, t,
				         (unsigned long long)perm[i].counter,
				         (unsigned long long)w.highest);
		for (size_t i = 0; i < count; i++)
			perm[i].key = splitmix64(&rng);
		qsort(perm, count, sizeof perm[0], keyed_cmp);
		for (size_t i = 0; i < count; i++)
			if (seal_replay_check(&w, perm[i].counter) != 0)
				fail_msg("seed %llu trial %d: counter %llu accepted twice",
				         (unsigned long long)seed, t, (unsigned long long)perm[i].counter);
		assert_true(w.highest == base + count - 1);
	}
}

/* Property: on random streams with duplicates, stale counters and jumps of
 * every size, the window agrees with a plain model (a seen-set and a max). */
static void replay_window_matches_reference_model(void **state)
{
	(void)state;
	const uint64_t seed = test_seed();
	uint64_t rng = seed ^ UINT64_C(0xA5A5A5A5);
	enum { STREAMS = 40, STEPS = 4000, LIMIT = 1 << 20 };
	uint8_t *seen = malloc(LIMIT);
	assert_non_null(seen);
	for (int s = 0; s < STREAMS; s++) {
		memset(seen, 0, LIMIT);
		uint64_t max = 0;
		struct seal_replay w;
		memset(&w, 0, sizeof w);
		for (int step = 0; step < STEPS; step++) {
			uint64_t r = splitmix64(&rng);
			int64_t c;
			switch (r % 16) {
			case 0: c = (int64_t)max + 1023; break;
			case 1: c = (int64_t)max + 1024; break;
			case 2: c = (int64_t)max + 64 + (int64_t)((r >> 8) % 3) - 1; break;
			case 3: c = (int64_t)max + 1 + (int64_t)((r >> 8) % 3000); break;
			case 4: c = (int64_t)max - 1023; break;
			case 5: c = (int64_t)max - 1024; break;
			default: c = (int64_t)max - 1100 + (int64_t)((r >> 8) % 1140); break;
			}
			if (c < 0)
				c = (int64_t)((r >> 20) % 4); /* includes counter 0 */
			if (c >= LIMIT)
				break;
			uint64_t cu = (uint64_t)c;
			int want = cu != 0 && !seen[cu] && (cu > max || max - cu < SEAL_REPLAY_WINDOW);
			int got = seal_replay_check(&w, cu);
			if (got != want)
				fail_msg("seed %llu stream %d step %d: counter %llu (max %llu) got %d want %d",
				         (unsigned long long)seed, s, step, (unsigned long long)cu,
				         (unsigned long long)max, got, want);
			if (want) {
				seen[cu] = 1;
				if (cu > max)
					max = cu;
			}
			assert_true(w.highest == max);
		}
	}
	free(seen);
}

/* ---- secret files ---- */

static const char HEX64[] = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";

static void keyring_loads_hex_file(void **state)
{
	(void)state;
	char dir[64], path[128];
	make_tmpdir(dir, sizeof dir);
	const char *suffixes[] = {"", "\n", "  \r\n\t\n"};
	uint8_t want[SEAL_SECRET_BYTES];
	for (size_t i = 0; i < sizeof want; i++)
		want[i] = (uint8_t)i;
	struct seal_keyring *expect = seal_keyring_from_secrets(want, 1);
	assert_non_null(expect);
	for (size_t s = 0; s < 3; s++) {
		char text[128];
		snprintf(text, sizeof text, "%s%s", HEX64, suffixes[s]);
		snprintf(path, sizeof path, "%s/secret", dir);
		write_file(path, text, strlen(text));
		char err[256] = "";
		struct seal_keyring *kr = seal_keyring_load(path, SEAL_ROLE_NODE, err, sizeof err);
		assert_non_null(kr);
		assert_int_equal(seal_keyring_primary_id(kr), seal_keyring_primary_id(expect));
		assert_true(seal_keyring_has_role(kr, SEAL_ROLE_NODE));
		uint32_t ids[SEAL_KEYS_MAX];
		assert_int_equal(seal_keyring_ids(kr, ids), 1);
		seal_keyring_free(kr);
	}
	seal_keyring_free(expect);
	const char *names[] = {"secret"};
	rm_tmpdir(dir, names, 1);
}

/* A full handshake of `role` from client keyring c to node keyring n at
 * NOW_MS; returns the verdict, the node's session in *srv. */
static int handshake_as(const struct seal_keyring *c, const struct seal_keyring *n, int role,
                        struct seal_session *srv)
{
	uint8_t cid[SEAL_ID_BYTES], nid[SEAL_ID_BYTES];
	id_from_byte(cid, 0xC1);
	id_from_byte(nid, 0x5E);
	struct seal_initiator in;
	uint8_t *hello = NULL, *welcome = NULL;
	size_t hello_len = 0, welcome_len = 0;
	if (seal_hello_build(&in, c, role, cid, NOW_MS, &hello, &hello_len) != 0)
		return -1;
	int v = t_hello_accept(n, nid, hello, hello_len, srv, &welcome, &welcome_len);
	free(hello);
	if (v != SEAL_OK)
		return v;
	struct seal_session cli;
	v = seal_welcome_accept(&in, c, nid, welcome, welcome_len, &cli, NULL, 0);
	free(welcome);
	if (v == SEAL_OK) {
		assert_true(cli.session_id == srv->session_id);
		assert_int_equal(cli.role, srv->role);
		assert_int_equal(cli.key_id, srv->key_id);
		assert_memory_equal(cli.tx_key, srv->rx_key, 32);
	}
	return v;
}

static void two_key_file_accepts_both_ids(void **state)
{
	(void)state;
	char dir[64], path[128];
	make_tmpdir(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/secret", dir);
	uint8_t a[SEAL_SECRET_BYTES], b[SEAL_SECRET_BYTES];
	secret_from_byte(a, 0x21);
	secret_from_byte(b, 0x22);
	char ha[65], hb[65], text[160];
	sodium_bin2hex(ha, sizeof ha, a, sizeof a);
	sodium_bin2hex(hb, sizeof hb, b, sizeof b);
	snprintf(text, sizeof text, "%s\n\n%s\n", ha, hb);
	write_file(path, text, strlen(text));
	char err[256] = "";
	struct seal_keyring *node = seal_keyring_load(path, SEAL_ROLE_NODE, err, sizeof err);
	assert_non_null(node);
	uint32_t ids[SEAL_KEYS_MAX];
	assert_int_equal(seal_keyring_ids(node, ids), 2);
	assert_int_equal(ids[0], seal_keyring_primary_id(kr_byte(0x21)));
	assert_int_equal(ids[1], seal_keyring_primary_id(kr_byte(0x22)));
	assert_int_equal(seal_keyring_primary_id(node), ids[0]);
	assert_true(seal_keyring_has_id(node, ids[1]));
	assert_false(seal_keyring_has_id(node, seal_keyring_primary_id(kr_byte(0x23))));
	/* peers holding either key get a session, recorded under their key */
	struct seal_session srv;
	assert_int_equal(handshake_as(kr_byte(0x21), node, SEAL_ROLE_NODE, &srv), SEAL_OK);
	assert_int_equal(srv.key_id, ids[0]);
	assert_int_equal(handshake_as(kr_byte(0x22), node, SEAL_ROLE_CLIENT, &srv), SEAL_OK);
	assert_int_equal(srv.key_id, ids[1]);
	assert_int_equal(handshake_as(kr_byte(0x23), node, SEAL_ROLE_CLIENT, &srv), SEAL_FORGED);
	/* and the node's own HELLOs use the primary */
	assert_int_equal(handshake_as(node, kr_byte(0x21), SEAL_ROLE_NODE, &srv), SEAL_OK);
	assert_int_equal(handshake_as(node, kr_byte(0x22), SEAL_ROLE_NODE, &srv), SEAL_FORGED);
	seal_keyring_free(node);
	const char *names[] = {"secret"};
	rm_tmpdir(dir, names, 1);
}

static void keyring_refuses_bad_file(void **state)
{
	(void)state;
	char dir[64], path[128];
	make_tmpdir(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/bad", dir);
	char long_text[600];
	memset(long_text, 'a', sizeof long_text - 1);
	long_text[sizeof long_text - 1] = '\0';
	char trailing[128], non_hex[128], three[256], same[160], mixed[200], cred_short[128];
	snprintf(trailing, sizeof trailing, "%s x\n", HEX64);
	snprintf(non_hex, sizeof non_hex, "%s", HEX64);
	non_hex[10] = 'g';
	char hb[65];
	uint8_t b[SEAL_SECRET_BYTES];
	secret_from_byte(b, 0x40);
	sodium_bin2hex(hb, sizeof hb, b, sizeof b);
	snprintf(three, sizeof three, "%s\n%s\n%s\n", HEX64, hb, HEX64);
	snprintf(same, sizeof same, "%s\n%s\n", HEX64, HEX64);
	snprintf(mixed, sizeof mixed, "%s\nchorus-client-v1 %s\n", HEX64, hb);
	snprintf(cred_short, sizeof cred_short, "chorus-client-v1 %.62s\n", hb);
	uint8_t raw[SEAL_SECRET_BYTES];
	memset(raw, 0xF0, sizeof raw);
	char raw_text[SEAL_SECRET_BYTES + 1];
	memcpy(raw_text, raw, sizeof raw);
	raw_text[SEAL_SECRET_BYTES] = '\0';
	const struct {
		const char *text;
		const char *why;
	} bad[] = {
		{"", "no key in it"},
		{"\n \n", "no key in it"},
		{"abcdef\n", "line 1: expected 64 hex characters"},
		{HEX64 + 1, "line 1: expected 64 hex characters"}, /* 63 characters */
		{trailing, "line 1: expected 64 hex characters"},  /* junk after the key */
		{non_hex, "line 1: expected 64 hex characters"},
		{raw_text, "expected 64 hex characters"},           /* the old raw form */
		{long_text, "longer than 512 bytes"},
		{three, "line 3: too many keys"},
		{same, "the same key"},
		{mixed, "line 2: mixes cluster secrets and client credentials"},
		{cred_short, "after \"chorus-client-v1 \""},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		write_file(path, bad[i].text, strlen(bad[i].text));
		char err[256] = "";
		assert_null(seal_keyring_load(path, SEAL_ROLE_CLIENT, err, sizeof err));
		if (strstr(err, bad[i].why) == NULL || strstr(err, path) == NULL)
			fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err, bad[i].why);
	}
	const char *names[] = {"bad"};
	rm_tmpdir(dir, names, 1);
}

static void keyring_refuses_group_or_other_access(void **state)
{
	(void)state;
	char dir[64], path[128];
	make_tmpdir(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/secret", dir);
	write_file(path, HEX64, strlen(HEX64));
	const mode_t refused[] = {0640, 0604, 0620, 0602, 0660, 0644, 0610};
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		assert_int_equal(chmod(path, refused[i]), 0);
		char err[256] = "";
		assert_null(seal_keyring_load(path, SEAL_ROLE_NODE, err, sizeof err));
		char want[32];
		snprintf(want, sizeof want, "mode %04o", (unsigned)refused[i]);
		assert_non_null(strstr(err, want));
		assert_non_null(strstr(err, "chmod 600"));
		assert_non_null(strstr(err, path));
	}
	const mode_t fine[] = {0600, 0400};
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(chmod(path, fine[i]), 0);
		struct seal_keyring *kr = seal_keyring_load(path, SEAL_ROLE_NODE, NULL, 0);
		assert_non_null(kr);
		seal_keyring_free(kr);
	}
	assert_int_equal(chmod(path, 0600), 0);
	const char *names[] = {"secret"};
	rm_tmpdir(dir, names, 1);
}

static void keyring_reports_missing_file(void **state)
{
	(void)state;
	char err[256] = "";
	const char *path = "/nonexistent/chorus/secret";
	assert_null(seal_keyring_load(path, SEAL_ROLE_NODE, err, sizeof err));
	assert_string_equal(err, "cannot read key file /nonexistent/chorus/secret: "
	                         "No such file or directory");
	/* a directory is not a key file either */
	assert_null(seal_keyring_load("/tmp", SEAL_ROLE_NODE, err, sizeof err));
	assert_non_null(strstr(err, "key file /tmp is not a regular file"));
}

static void secret_generate_writes_0600_hex_and_refuses_overwrite(void **state)
{
	(void)state;
	char dir[64], path[128];
	make_tmpdir(dir, sizeof dir);
	snprintf(path, sizeof path, "%s/cluster.secret", dir);
	char err[256] = "";
	assert_int_equal(seal_secret_generate(path, err, sizeof err), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, 65);

	char text[66] = "";
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, text, sizeof text), 65);
	close(fd);
	assert_int_equal(text[64], '\n');
	for (int i = 0; i < 64; i++)
		assert_non_null(strchr("0123456789abcdef", text[i]));

	struct seal_keyring *kr = seal_keyring_load(path, SEAL_ROLE_NODE, err, sizeof err);
	assert_non_null(kr);

	/* a second generate leaves the first secret alone */
	assert_int_equal(seal_secret_generate(path, err, sizeof err), -1);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, strerror(EEXIST)));
	struct seal_keyring *again = seal_keyring_load(path, SEAL_ROLE_NODE, NULL, 0);
	assert_non_null(again);
	assert_int_equal(seal_keyring_primary_id(kr), seal_keyring_primary_id(again));

	/* two generated secrets differ */
	char path2[160];
	snprintf(path2, sizeof path2, "%s/other.secret", dir);
	assert_int_equal(seal_secret_generate(path2, NULL, 0), 0);
	struct seal_keyring *other = seal_keyring_load(path2, SEAL_ROLE_NODE, NULL, 0);
	assert_non_null(other);
	assert_int_not_equal(seal_keyring_primary_id(kr), seal_keyring_primary_id(other));
	struct seal_session srv;
	assert_int_equal(handshake_as(kr, other, SEAL_ROLE_CLIENT, &srv), SEAL_FORGED);

	/* and a missing directory is an error, not a crash */
	char path3[160];
	snprintf(path3, sizeof path3, "%s/no/such/dir", dir);
	assert_int_equal(seal_secret_generate(path3, err, sizeof err), -1);
	assert_non_null(strstr(err, "cannot create secret file"));
	seal_keyring_free(kr);
	seal_keyring_free(again);
	seal_keyring_free(other);

	const char *names[] = {"cluster.secret", "other.secret"};
	rm_tmpdir(dir, names, 2);
}

/* ---- roles, client credentials ---- */

static void role_keys_differ_and_a_credential_cannot_make_a_node_hello(void **state)
{
	(void)state;
	struct spec_keys k;
	spec_derive(&k, 7);
	assert_memory_not_equal(k.auth[0], k.auth[1], 32);
	assert_memory_not_equal(k.mix[0], k.mix[1], 32);
	struct seal_keyring *cred = seal_keyring_client_only(kr_byte(7));
	assert_non_null(cred);
	assert_false(seal_keyring_has_role(cred, SEAL_ROLE_NODE));
	assert_true(seal_keyring_has_role(cred, SEAL_ROLE_CLIENT));
	assert_int_equal(seal_keyring_primary_id(cred), k.key_id);
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 1);
	struct seal_initiator in;
	uint8_t *hello = (uint8_t *)&in;
	size_t hello_len = 0;
	assert_int_equal(seal_hello_build(&in, cred, SEAL_ROLE_NODE, id, NOW_MS, &hello, &hello_len),
	                 -1);
	assert_true(sodium_is_zero((const unsigned char *)&in, sizeof in));
	assert_int_equal(seal_hello_build(&in, kr_byte(7), 3, id, NOW_MS, &hello, &hello_len), -1);
	/* a client HELLO relabelled as a node one (MAC'd with the client key
	 * it holds) does not verify */
	uint8_t pk[32], sk[32];
	crypto_kx_keypair(pk, sk);
	struct spec_hello sh = {.b = 7, .role = SEAL_ROLE_NODE, .mac_role = SEAL_ROLE_CLIENT,
	                        .version = CH_PROTOCOL_VERSION, .time_ms = NOW_MS, .pk = pk,
	                        .id = id};
	uint8_t f[SEAL_HEADER_BYTES + 160];
	size_t flen = spec_hello_frame(&sh, f);
	struct seal_session srv;
	uint8_t *reply = NULL;
	size_t reply_len = 0;
	assert_int_equal(t_hello_accept(kr_byte(7), id, f, flen, &srv, &reply, &reply_len),
	                 SEAL_FORGED);
	assert_null(reply);
	/* the credential handshakes as a client, and the session says so */
	assert_int_equal(handshake_as(cred, kr_byte(7), SEAL_ROLE_CLIENT, &srv), SEAL_OK);
	assert_int_equal(srv.role, SEAL_ROLE_CLIENT);
	/* a credential as a node keyring: node HELLOs are refused */
	assert_int_equal(handshake_as(kr_byte(7), cred, SEAL_ROLE_NODE, &srv), SEAL_FORGED);
	seal_keyring_free(cred);
	assert_string_equal(seal_role_name(SEAL_ROLE_CLIENT), "client");
	assert_string_equal(seal_role_name(SEAL_ROLE_NODE), "node");
	assert_string_equal(seal_role_name(0), "unknown");
}

static void client_and_node_hellos_are_accepted_with_their_role(void **state)
{
	(void)state;
	struct seal_session srv;
	assert_int_equal(handshake_as(kr_byte(7), kr_byte(7), SEAL_ROLE_CLIENT, &srv), SEAL_OK);
	assert_int_equal(srv.role, SEAL_ROLE_CLIENT);
	assert_int_equal(srv.key_id, seal_keyring_primary_id(kr_byte(7)));
	assert_int_equal(handshake_as(kr_byte(7), kr_byte(7), SEAL_ROLE_NODE, &srv), SEAL_OK);
	assert_int_equal(srv.role, SEAL_ROLE_NODE);
	/* the two roles get different session keys from the same exchange
	 * shape: the role's mixing key is in them (checked by the spec test) */
}

static void hello_with_unknown_key_id_or_role_is_refused(void **state)
{
	(void)state;
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 1);
	uint8_t pk[32], sk[32];
	crypto_kx_keypair(pk, sk);
	struct seal_session srv;
	uint8_t *reply = NULL;
	size_t reply_len = 0;
	uint8_t f[SEAL_HEADER_BYTES + 160];
	/* MAC'd with our key, under a key id we do not hold */
	struct spec_hello sh = {.b = 7, .role = SEAL_ROLE_CLIENT, .key_id = 0x12345678,
	                        .version = CH_PROTOCOL_VERSION, .time_ms = NOW_MS, .pk = pk,
	                        .id = id};
	size_t flen = spec_hello_frame(&sh, f);
	assert_int_equal(t_hello_accept(kr_byte(7), id, f, flen, &srv, &reply, &reply_len),
	                 SEAL_FORGED);
	/* under our key id, MAC'd by another cluster's key */
	sh.b = 8;
	sh.key_id = seal_keyring_primary_id(kr_byte(7));
	flen = spec_hello_frame(&sh, f);
	assert_int_equal(t_hello_accept(kr_byte(7), id, f, flen, &srv, &reply, &reply_len),
	                 SEAL_FORGED);
	/* a role that does not exist */
	sh.b = 7;
	sh.key_id = 0;
	sh.role = 3;
	sh.mac_role = SEAL_ROLE_CLIENT;
	flen = spec_hello_frame(&sh, f);
	assert_int_equal(t_hello_accept(kr_byte(7), id, f, flen, &srv, &reply, &reply_len),
	                 SEAL_MALFORMED);
	/* and the spec-built HELLO itself is good */
	sh.role = SEAL_ROLE_CLIENT;
	sh.mac_role = 0;
	flen = spec_hello_frame(&sh, f);
	assert_int_equal(t_hello_accept(kr_byte(7), id, f, flen, &srv, &reply, &reply_len), SEAL_OK);
	free(reply);
}

/* ---- freshness ---- */

static int accept_at(struct seal_hello_guard *g, const uint8_t *f, size_t flen, uint64_t now_ms)
{
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 0x5E);
	struct seal_session srv;
	memset(&srv, 0, sizeof srv);
	uint8_t *reply = NULL;
	size_t reply_len = 0;
	int v = seal_hello_accept(kr_byte(7), g, id, now_ms, f, flen, &srv, &reply, &reply_len);
	assert_true((v == SEAL_OK) == (reply != NULL));
	assert_true(v == SEAL_OK || srv.session_id == 0);
	free(reply);
	return v;
}

static size_t hello_at(uint64_t time_ms, uint8_t f[SEAL_HEADER_BYTES + 160])
{
	static uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 0xC1);
	uint8_t pk[32], sk[32];
	crypto_kx_keypair(pk, sk);
	struct spec_hello sh = {.b = 7, .role = SEAL_ROLE_CLIENT, .version = CH_PROTOCOL_VERSION,
	                        .time_ms = time_ms, .pk = pk, .id = id};
	return spec_hello_frame(&sh, f);
}

static void hello_outside_the_skew_window_is_stale(void **state)
{
	(void)state;
	struct seal_hello_guard *g = seal_hello_guard_create(16);
	assert_non_null(g);
	uint8_t f[SEAL_HEADER_BYTES + 160];
	size_t n = hello_at(NOW_MS - SEAL_HELLO_SKEW_MS - 1, f);
	assert_int_equal(accept_at(g, f, n, NOW_MS), SEAL_STALE);
	n = hello_at(NOW_MS + SEAL_HELLO_SKEW_MS + 1, f);
	assert_int_equal(accept_at(g, f, n, NOW_MS), SEAL_STALE);
	n = hello_at(0, f);
	assert_int_equal(accept_at(g, f, n, NOW_MS), SEAL_STALE);
	n = hello_at(UINT64_MAX, f);
	assert_int_equal(accept_at(g, f, n, NOW_MS), SEAL_STALE);
	assert_int_equal(seal_hello_guard_count(g, NOW_MS), 0); /* none was admitted */
	n = hello_at(NOW_MS - SEAL_HELLO_SKEW_MS, f);
	assert_int_equal(accept_at(g, f, n, NOW_MS), SEAL_OK);
	n = hello_at(NOW_MS + SEAL_HELLO_SKEW_MS, f);
	assert_int_equal(accept_at(g, f, n, NOW_MS), SEAL_OK);
	/* a stale HELLO from another cluster is forged first: no oracle */
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 2);
	uint8_t pk[32], sk[32];
	crypto_kx_keypair(pk, sk);
	struct spec_hello sh = {.b = 8, .role = SEAL_ROLE_CLIENT,
	                        .key_id = seal_keyring_primary_id(kr_byte(7)),
	                        .version = CH_PROTOCOL_VERSION, .time_ms = 0, .pk = pk, .id = id};
	n = spec_hello_frame(&sh, f);
	assert_int_equal(accept_at(g, f, n, NOW_MS), SEAL_FORGED);
	assert_string_equal(seal_verdict_name(SEAL_STALE), "stale");
	seal_hello_guard_free(g);
}

static void replayed_hello_is_refused_and_never_yields_a_session(void **state)
{
	(void)state;
	struct seal_hello_guard *g = seal_hello_guard_create(16);
	assert_non_null(g);
	/* a real HELLO, captured */
	uint8_t id[SEAL_ID_BYTES];
	id_from_byte(id, 0xC1);
	struct seal_initiator in;
	uint8_t *hello = NULL;
	size_t hello_len = 0;
	assert_int_equal(seal_hello_build(&in, kr_byte(7), SEAL_ROLE_CLIENT, id, NOW_MS, &hello,
	                                  &hello_len),
	                 0);
	assert_int_equal(accept_at(g, hello, hello_len, NOW_MS), SEAL_OK);
	assert_int_equal(accept_at(g, hello, hello_len, NOW_MS + 1), SEAL_REPLAYED);
	assert_int_equal(accept_at(g, hello, hello_len, NOW_MS + SEAL_HELLO_SKEW_MS), SEAL_REPLAYED);
	/* once out of the window it is stale: never accepted again */
	assert_int_equal(accept_at(g, hello, hello_len, NOW_MS + SEAL_HELLO_SKEW_MS + 1),
	                 SEAL_STALE);
	assert_int_equal(seal_hello_guard_count(g, NOW_MS + SEAL_HELLO_SKEW_MS + 1), 0);
	/* the guard is per node: another node would accept it (documented) */
	struct seal_hello_guard *g2 = seal_hello_guard_create(1);
	assert_int_equal(accept_at(g2, hello, hello_len, NOW_MS), SEAL_OK);
	seal_hello_guard_free(g2);
	free(hello);
	seal_hello_guard_free(g);
}

static void hello_guard_is_bounded_and_never_evicts_in_window_entries(void **state)
{
	(void)state;
	assert_null(seal_hello_guard_create(0));
	assert_null(seal_hello_guard_create(SEAL_HELLO_GUARD_ENTRIES_MAX + 1));
	struct seal_hello_guard *g = seal_hello_guard_create(3);
	assert_non_null(g);
	uint8_t f[4][SEAL_HEADER_BYTES + 160];
	size_t n[4];
	for (int i = 0; i < 4; i++)
		n[i] = hello_at(NOW_MS + (uint64_t)i, f[i]);
	for (int i = 0; i < 3; i++)
		assert_int_equal(accept_at(g, f[i], n[i], NOW_MS), SEAL_OK);
	assert_int_equal(seal_hello_guard_count(g, NOW_MS), 3);
	/* full of entries still in the window: a new HELLO is refused... */
	assert_int_equal(accept_at(g, f[3], n[3], NOW_MS), SEAL_BUSY);
	/* ...and the old ones are still remembered */
	for (int i = 0; i < 3; i++)
		assert_int_equal(accept_at(g, f[i], n[i], NOW_MS), SEAL_REPLAYED);
	/* when the first leaves the window its place is free again */
	uint64_t later = NOW_MS + SEAL_HELLO_SKEW_MS + 1;
	assert_int_equal(seal_hello_guard_count(g, later), 2);
	assert_int_equal(accept_at(g, f[3], n[3], later), SEAL_OK);
	assert_int_equal(seal_hello_guard_count(g, later), 3);
	assert_int_equal(accept_at(g, f[1], n[1], later), SEAL_REPLAYED);
	assert_string_equal(seal_verdict_name(SEAL_BUSY), "busy");
	seal_hello_guard_free(g);
	seal_hello_guard_free(NULL);
}

/* ---- REJECTs ---- */

static void authenticated_reject_verifies_and_forgeries_do_not(void **state)
{
	(void)state;
	uint8_t two[2 * SEAL_SECRET_BYTES];
	secret_from_byte(two, 0x31);
	secret_from_byte(two + SEAL_SECRET_BYTES, 0x32);
	struct seal_keyring *node = seal_keyring_from_secrets(two, 2);
	assert_non_null(node);
	const uint64_t sid = UINT64_C(0xabcdef0123456789), ctr = 42;
	uint8_t *f = NULL;
	size_t flen = 0;
	assert_int_equal(seal_reject_build_auth(node, sid, ctr, CH_ERR_CLOSED, "unknown session", &f,
	                                        &flen),
	                 0);
	assert_int_equal(f[1], SEAL_KIND_REJECT);
	assert_true(le64_at(f + 8) == 0 && le64_at(f + 16) == 0);
	/* a client holding either key (credential or secret) verifies it */
	struct seal_keyring *cred_a = seal_keyring_client_only(kr_byte(0x31));
	const struct seal_keyring *holders[] = {cred_a, kr_byte(0x32), node};
	for (size_t i = 0; i < 3; i++) {
		int code = 0;
		char reason[64] = "";
		assert_int_equal(seal_reject_check(holders[i], sid, ctr, f, flen, &code, reason,
		                                   sizeof reason),
		                 SEAL_OK);
		assert_int_equal(code, CH_ERR_CLOSED);
		assert_string_equal(reason, "unknown session");
	}
	int code = 0;
	char reason[64] = "";
	/* another frame, another session, another cluster: not ours */
	assert_int_equal(seal_reject_check(cred_a, sid, ctr + 1, f, flen, &code, NULL, 0),
	                 SEAL_FORGED);
	assert_int_equal(seal_reject_check(cred_a, sid + 1, ctr, f, flen, &code, NULL, 0),
	                 SEAL_FORGED);
	assert_int_equal(seal_reject_check(kr_byte(0x33), sid, ctr, f, flen, &code, NULL, 0),
	                 SEAL_FORGED);
	free(f);
	/* every flipped body byte of a one-key REJECT is refused (with two
	 * keys, the MAC a client does not hold may change freely) */
	assert_int_equal(seal_reject_build_auth(kr_byte(0x31), sid, ctr, CH_ERR_CLOSED,
	                                        "unknown session", &f, &flen),
	                 0);
	for (size_t i = SEAL_HEADER_BYTES; i < flen; i++) {
		uint8_t *c = dup_bytes(f, flen);
		c[i] ^= 0x01;
		int v = seal_reject_check(cred_a, sid, ctr, c, flen, &code, NULL, 0);
		assert_int_not_equal(v, SEAL_OK);
		free(c);
	}
	free(f);
	/* an unauthenticated REJECT (what anyone can send) does not verify,
	 * but its reason is still readable for a log */
	assert_int_equal(seal_reject_build(CH_ERR_CLOSED, "unknown session", &f, &flen), 0);
	assert_int_equal(seal_reject_check(cred_a, sid, ctr, f, flen, &code, reason, sizeof reason),
	                 SEAL_FORGED);
	assert_string_equal(reason, "unknown session");
	free(f);
	/* a forgery naming the frame, with a MAC under a key it made up */
	Chorus__Reject rej = CHORUS__REJECT__INIT;
	Chorus__RejectMac m = CHORUS__REJECT_MAC__INIT;
	Chorus__RejectMac *mp = &m;
	uint8_t junk[32];
	randombytes_buf(junk, sizeof junk);
	m.key_id = seal_keyring_primary_id(cred_a);
	m.mac.data = junk;
	m.mac.len = 32;
	rej.code = 7;
	rej.reason = "unknown session";
	rej.session_id = sid;
	rej.counter = ctr;
	rej.n_macs = 1;
	rej.macs = &mp;
	uint8_t buf[SEAL_HEADER_BYTES + 256];
	write_header(buf, SEAL_KIND_REJECT, 0, 0);
	size_t blen = SEAL_HEADER_BYTES + chorus__reject__pack(&rej, buf + SEAL_HEADER_BYTES);
	assert_int_equal(seal_reject_check(cred_a, sid, ctr, buf, blen, &code, NULL, 0), SEAL_FORGED);
	/* not a REJECT at all */
	write_header(buf, SEAL_KIND_WELCOME, 0, 0);
	assert_int_equal(seal_reject_check(cred_a, sid, ctr, buf, blen, &code, NULL, 0),
	                 SEAL_MALFORMED);
	seal_keyring_free(cred_a);
	seal_keyring_free(node);
}

/* ---- expected peer ---- */

static void welcome_from_another_member_is_wrong_peer(void **state)
{
	(void)state;
	uint8_t cid[SEAL_ID_BYTES], nid[SEAL_ID_BYTES], meant[SEAL_ID_BYTES];
	id_from_byte(cid, 1);
	id_from_byte(nid, 2);
	id_from_byte(meant, 3);
	struct seal_initiator in;
	uint8_t *hello = NULL, *welcome = NULL;
	size_t hello_len = 0, welcome_len = 0;
	assert_int_equal(seal_hello_build(&in, kr_byte(7), SEAL_ROLE_NODE, cid, NOW_MS, &hello,
	                                  &hello_len),
	                 0);
	struct seal_session srv, cli;
	memset(&cli, 0, sizeof cli);
	assert_int_equal(t_hello_accept(kr_byte(7), nid, hello, hello_len, &srv, &welcome,
	                                &welcome_len),
	                 SEAL_OK);
	char err[160] = "";
	assert_int_equal(seal_welcome_accept(&in, kr_byte(7), meant, welcome, welcome_len, &cli, err,
	                                     sizeof err),
	                 SEAL_WRONG_PEER);
	assert_non_null(strstr(err, "expected member 03030303"));
	assert_non_null(strstr(err, "reached member 02020202"));
	assert_true(cli.session_id == 0);
	assert_true(sodium_is_zero(in.eph_sk, sizeof in.eph_sk)); /* the handshake is over */
	assert_string_equal(seal_verdict_name(SEAL_WRONG_PEER), "wrong-peer");
	free(hello);
	free(welcome);
}

/* ---- key memory ---- */

static void keyring_pages_are_wiped_in_a_forked_child(void **state)
{
	(void)state;
	struct seal_keyring *kr = seal_keyring_ref(kr_byte(0x51));
	assert_false(seal_keyring_is_zero(kr));
	if (!seal_keyring_wipes_on_fork(kr)) {
		seal_keyring_free(kr);
		skip(); /* a kernel without MADV_WIPEONFORK (before Linux 4.14) */
	}
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(seal_keyring_is_zero(kr) ? 0 : 1); /* what a task worker sees */
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_false(seal_keyring_is_zero(kr)); /* the node keeps its keys */
	seal_keyring_free(kr);                  /* one reference left: the cache's */
	assert_int_equal(seal_keyring_primary_id(kr_byte(0x51)), seal_keyring_primary_id(kr));
}

static void client_credential_file_holds_only_client_keys(void **state)
{
	(void)state;
	char dir[64], secret[128], cred[128], cred2[128];
	make_tmpdir(dir, sizeof dir);
	snprintf(secret, sizeof secret, "%s/secret", dir);
	snprintf(cred, sizeof cred, "%s/client.key", dir);
	snprintf(cred2, sizeof cred2, "%s/client2.key", dir);
	uint8_t a[SEAL_SECRET_BYTES], b[SEAL_SECRET_BYTES];
	secret_from_byte(a, 0x61);
	secret_from_byte(b, 0x62);
	char ha[65], hb[65], text[160];
	sodium_bin2hex(ha, sizeof ha, a, sizeof a);
	sodium_bin2hex(hb, sizeof hb, b, sizeof b);
	snprintf(text, sizeof text, "%s\n%s\n", ha, hb);
	write_file(secret, text, strlen(text));
	char err[256] = "";
	struct seal_keyring *node = seal_keyring_load(secret, SEAL_ROLE_NODE, err, sizeof err);
	assert_non_null(node);
	assert_int_equal(seal_client_credential_write(node, cred, err, sizeof err), 0);
	struct stat st;
	assert_int_equal(stat(cred, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	char body[256] = "";
	int fd = open(cred, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t got = read(fd, body, sizeof body - 1);
	close(fd);
	assert_int_equal(got, 2 * (17 + 64 + 1));
	assert_memory_equal(body, "chorus-client-v1 ", 17);
	/* neither secret is in it */
	assert_null(strstr(body, ha));
	assert_null(strstr(body, hb));
	/* never overwritten */
	assert_int_equal(seal_client_credential_write(node, cred, err, sizeof err), -1);
	assert_non_null(strstr(err, strerror(EEXIST)));

	struct seal_keyring *c = seal_keyring_load(cred, SEAL_ROLE_CLIENT, err, sizeof err);
	assert_non_null(c);
	assert_false(seal_keyring_has_role(c, SEAL_ROLE_NODE));
	uint32_t ids[SEAL_KEYS_MAX], nids[SEAL_KEYS_MAX];
	assert_int_equal(seal_keyring_ids(c, ids), 2);
	assert_int_equal(seal_keyring_ids(node, nids), 2);
	assert_memory_equal(ids, nids, sizeof ids);
	struct seal_session srv;
	assert_int_equal(handshake_as(c, node, SEAL_ROLE_CLIENT, &srv), SEAL_OK);
	assert_int_equal(handshake_as(c, node, SEAL_ROLE_NODE, &srv), -1);
	/* a credential of a credential is the same credential */
	assert_int_equal(seal_client_credential_write(c, cred2, err, sizeof err), 0);
	struct seal_keyring *c2 = seal_keyring_load(cred2, SEAL_ROLE_CLIENT, err, sizeof err);
	assert_non_null(c2);
	assert_int_equal(seal_keyring_primary_id(c2), ids[0]);
	/* a node refuses it, naming the command that makes one */
	assert_null(seal_keyring_load(cred, SEAL_ROLE_NODE, err, sizeof err));
	assert_non_null(strstr(err, "clusterctl keygen --client"));
	assert_non_null(strstr(err, cred));
	seal_keyring_free(c2);
	seal_keyring_free(c);
	seal_keyring_free(node);
	const char *names[] = {"secret", "client.key", "client2.key"};
	rm_tmpdir(dir, names, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(verdict_names_are_stable),
		cmocka_unit_test(key_id_is_derived_from_the_client_root),
		cmocka_unit_test(handshake_then_data_flows_both_ways),
		cmocka_unit_test(a_frame_cannot_be_reflected_back_to_its_sender),
		cmocka_unit_test(sessions_get_distinct_nonzero_ids),
		cmocka_unit_test(initiator_ephemeral_secret_is_wiped_after_welcome),
		cmocka_unit_test(client_without_the_secret_is_forged),
		cmocka_unit_test(hello_mac_matches_spec),
		cmocka_unit_test(node_without_the_secret_is_forged),
		cmocka_unit_test(welcome_for_another_hello_is_forged),
		cmocka_unit_test(tampered_welcome_is_refused),
		cmocka_unit_test(garbage_hello_body_is_malformed),
		cmocka_unit_test(hello_with_foreign_version_is_refused),
		cmocka_unit_test(reject_reply_surfaces_its_reason),
		cmocka_unit_test(long_reject_reason_is_cut_at_a_character_boundary),
		cmocka_unit_test(data_frame_layout_matches_spec),
		cmocka_unit_test(every_flipped_byte_is_refused_and_window_stays_clean),
		cmocka_unit_test(replayed_frame_is_refused),
		cmocka_unit_test(out_of_order_within_window_is_accepted_once_each),
		cmocka_unit_test(counter_older_than_window_is_refused),
		cmocka_unit_test(data_frame_with_counter_zero_is_refused),
		cmocka_unit_test(forged_frame_with_a_seen_counter_is_tampered_not_replayed),
		cmocka_unit_test(frame_for_another_session_is_no_session),
		cmocka_unit_test(handshake_frame_on_data_path_is_malformed),
		cmocka_unit_test(truncated_frames_of_every_length_are_refused),
		cmocka_unit_test(oversized_frames_are_refused),
		cmocka_unit_test(bad_magic_version_kind_or_reserved_is_malformed),
		cmocka_unit_test(replay_window_refuses_counter_zero),
		cmocka_unit_test(replay_window_edges_1023_behind_accepted_1024_refused),
		cmocka_unit_test(replay_window_jump_far_ahead_clears_bitmap),
		cmocka_unit_test(replay_window_keeps_seen_bits_across_word_boundaries),
		cmocka_unit_test(replay_window_accepts_jittered_permutations_exactly_once),
		cmocka_unit_test(replay_window_matches_reference_model),
		cmocka_unit_test(keyring_loads_hex_file),
		cmocka_unit_test(two_key_file_accepts_both_ids),
		cmocka_unit_test(keyring_refuses_group_or_other_access),
		cmocka_unit_test(role_keys_differ_and_a_credential_cannot_make_a_node_hello),
		cmocka_unit_test(client_and_node_hellos_are_accepted_with_their_role),
		cmocka_unit_test(hello_with_unknown_key_id_or_role_is_refused),
		cmocka_unit_test(hello_outside_the_skew_window_is_stale),
		cmocka_unit_test(replayed_hello_is_refused_and_never_yields_a_session),
		cmocka_unit_test(hello_guard_is_bounded_and_never_evicts_in_window_entries),
		cmocka_unit_test(authenticated_reject_verifies_and_forgeries_do_not),
		cmocka_unit_test(welcome_from_another_member_is_wrong_peer),
		cmocka_unit_test(keyring_pages_are_wiped_in_a_forked_child),
		cmocka_unit_test(client_credential_file_holds_only_client_keys),
		cmocka_unit_test(keyring_refuses_bad_file),
		cmocka_unit_test(keyring_reports_missing_file),
		cmocka_unit_test(secret_generate_writes_0600_hex_and_refuses_overwrite),
	};
	return cmocka_run_group_tests(tests, NULL, group_teardown);
}
