/*
 * rng.h - the one PRNG of the cores: xoshiro256** seeded through splitmix64
 * (Blackman & Vigna, "Scrambled linear pseudorandom number generators",
 * 2021).
 *
 * Cores never call rand() or read /dev/urandom: each owns a struct rng
 * seeded by its caller, so the simulator replays a run from one seed. Not
 * for cryptography (libsodium's randombytes is used for keys and ids).
 */
#ifndef CHORUS_LIB_RNG_H
#define CHORUS_LIB_RNG_H

#include <stdint.h>

struct rng {
	uint64_t s[4];
};

/* Seeds the generator; any seed (0 included) gives a valid state. */
void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_next(struct rng *r);
/* Uniform in [0, n) for n >= 1 (Lemire's multiply-shift; n = 0 gives 0). */
uint32_t rng_below(struct rng *r, uint32_t n);
/* One splitmix64 step: a good 64-bit mix for seeds and hashes. */
uint64_t rng_splitmix64(uint64_t *state);

#endif
