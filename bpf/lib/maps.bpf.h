/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps and load-time configuration every program shares. */
#ifndef TF_MAPS_BPF_H
#define TF_MAPS_BPF_H

#include <bpf/bpf_helpers.h>

#include "trustfence/abi.h"

/* Set by the agent between open and load. */
const volatile struct tf_datapath_config tf_config = {
	.mode = TF_MODE_ENFORCE,
	.untracked_verdict = TF_VERDICT_ALLOW,
	.pending_rto_min_us = 0,
	.default_rto_min_us = 200000,
};

/* Pinned by name so verdicts and enforcement outlive the agent process. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TF_DEFAULT_MAX_CONNS);
	__type(key, __u64); /* socket cookie */
	__type(value, struct tf_conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tf_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, TF_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TF_MAX_EXEMPTIONS);
	__type(key, struct tf_exempt_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tf_exempt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tf_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tf_stats SEC(".maps");

/*
 * Sockets tf_sockops could not record because tf_conns was full. Their
 * traffic is denied (reason table-full) rather than left to the untracked
 * fallback: flooding the table must not open a way around verification.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tf_overflow SEC(".maps");

/*
 * Pending sockets whose payload was held back at egress: only they need a
 * push once allowed (bpf/lib/resend.bpf.h). LRU: an entry whose socket
 * closed before its verdict ages out.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TF_MAX_RESEND_BATCH);
	__type(key, __u64); /* socket cookie */
	__type(value, __u8);
} tf_held SEC(".maps");

/* Written once by the agent that created the pins; read by its successors. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tf_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tf_meta SEC(".maps");

#endif /* TF_MAPS_BPF_H */
