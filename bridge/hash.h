/*
 * bridge/hash.h — the hash of the tables a peer fills (per-address counts, login throttling, exclusive queue claims):
 * seeded at random, so that a peer cannot choose keys that all land in one bucket.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* A fresh random seed (OpenSSL's RAND_bytes; the clock if that fails, still unknown to a remote peer in practice). */
uint32_t hash_seed_new(void);

/* FNV-1a from `seed`, then murmur3's finaliser, so that every bit of the key reaches the low bits a bucket is taken from. */
uint32_t hash_seeded(uint32_t seed, const void *key, size_t len);
