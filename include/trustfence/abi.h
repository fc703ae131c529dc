/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one ABI shared by the kernel programs (bpf/) and the agent (agent/).
 * Every struct, enum and size that crosses the user/kernel boundary is
 * declared here and nowhere else. Strings never enter the kernel: SPIFFE IDs
 * and trust domains are interned by the agent into small numbers.
 *
 * Bump TF_ABI_VERSION on any change to a pinned map's key, value or meaning:
 * the agent refuses pinned maps of another version rather than misread them.
 */
#ifndef TRUSTFENCE_ABI_H
#define TRUSTFENCE_ABI_H

#if defined(__bpf__)
/* vmlinux.h, included first by every kernel program, provides __u8..__u64. */
#else
#include <linux/types.h>
#endif

#define TF_ABI_VERSION 1u
#define TF_ABI_MAGIC 0x74666e63u /* "tfnc" */

/* Default capacity of tf_conns; the agent may raise it at load time. */
#define TF_DEFAULT_MAX_CONNS 65536u
/* Bytes of the tf_events ring buffer (a power of two, page multiple). */
#define TF_EVENTS_BYTES (1u << 21)
/* Cookies the agent may ask tf_resend_held to push in one pass. */
#define TF_MAX_RESEND_BATCH 4096u
/* Capacity of the tf_exempt LPM trie. */
#define TF_MAX_EXEMPTIONS 1024u

enum tf_verdict {
  TF_VERDICT_PENDING = 0,
  TF_VERDICT_ALLOW = 1,
  TF_VERDICT_DENY = 2,
  TF_VERDICT_COUNT
};

/*
 * The closed set of reasons, shared by kernel, agent, API and metrics.
 * TF_REASON_NONE marks a connection no one has decided yet.
 * TF_REASON_PENDING and TF_REASON_UNTRACKED are datapath reasons: payload
 * held while awaiting a verdict, and traffic of a connection the datapath
 * never saw established (handled by the untracked fallback).
 * TF_REASON_TABLE_FULL denies a socket tf_conns had no room for.
 */
enum tf_reason {
  TF_REASON_NONE = 0,
  TF_REASON_LOCAL_DOMAIN,
  TF_REASON_ALIAS_DOMAIN,
  TF_REASON_ALLOWED_ID,
  TF_REASON_PLAINTEXT_PERMISSIVE,
  TF_REASON_EXEMPT,
  TF_REASON_DOMAIN_NOT_ALLOWED,
  TF_REASON_ID_DENIED,
  TF_REASON_BAD_CHAIN,
  TF_REASON_EXPIRED,
  TF_REASON_INVALID_SVID,
  TF_REASON_NO_BUNDLE,
  TF_REASON_NO_PEER_AGENT,
  TF_REASON_ATTESTATION_TIMEOUT,
  TF_REASON_REVOKED,
  TF_REASON_PENDING,
  TF_REASON_UNTRACKED,
  TF_REASON_TABLE_FULL,
  TF_REASON_COUNT
};

/* Which end opened the connection, seen from the tracked socket. */
enum tf_direction {
  TF_DIRECTION_OUTBOUND = 1, /* active open: connect() */
  TF_DIRECTION_INBOUND = 2,  /* passive open: accept() */
};

/* Direction of one packet through cgroup_skb. */
enum tf_packet_dir { TF_PACKET_EGRESS = 0, TF_PACKET_INGRESS = 1, TF_PACKET_DIR_COUNT };

/* What the datapath did with one packet. */
enum tf_action {
  TF_ACTION_PASS = 0,
  TF_ACTION_DROP = 1,
  TF_ACTION_AUDIT = 2, /* audit mode: would have dropped, passed */
  TF_ACTION_COUNT
};

enum tf_mode {
  TF_MODE_ENFORCE = 0,
  TF_MODE_AUDIT = 1,
};

/* Connection-level counters (as opposed to per-packet ones). */
enum tf_counter {
  TF_COUNTER_CONN_TRACKED = 0,
  TF_COUNTER_CONN_EXEMPT,
  TF_COUNTER_CONN_CLOSED,
  TF_COUNTER_TABLE_FULL,  /* tf_conns had no room: connection denied */
  TF_COUNTER_EVENTS_LOST, /* tf_events had no room: agent missed one */
  TF_COUNTER_RTO_LOWERED,
  TF_COUNTER_RTO_RESTORED,
  TF_COUNTER_RTO_UNSUPPORTED, /* kernel refused TCP_BPF_RTO_MIN */
  TF_COUNTER_COUNT
};

/* tf_conn.flags */
#define TF_CONN_F_RTO_LOWERED (1u << 0) /* RTO floor lowered while pending */
#define TF_CONN_F_LINEAR_RTO (1u << 1)  /* linear timeouts on while pending */

/*
 * A connection's endpoints. Addresses in network byte order; an IPv4
 * address sits in word 0 with the rest zero. Ports in host byte order.
 */
struct tf_tuple {
  __u32 local_addr[4];
  __u32 remote_addr[4];
  __u16 local_port;
  __u16 remote_port;
  __u8 family; /* AF_INET or AF_INET6 */
  __u8 _pad[3];
};

/*
 * tf_conns value, keyed by socket cookie (__u64). Created PENDING by
 * tf_sockops on establishment; verdict, reason, peer ids, generation and
 * decided_ns are written by the agent; removed by tf_sockops on close.
 */
struct tf_conn {
  struct tf_tuple tuple;
  __u64 cgroup_id;
  __u64 created_ns;        /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
  __u64 decided_ns;        /* 0 while pending */
  __u32 peer_id;           /* interned SPIFFE ID, 0 = none */
  __u32 peer_trust_domain; /* interned trust domain, 0 = none */
  __u32 generation;        /* config generation that decided it, 0 = none */
  __u8 verdict;            /* enum tf_verdict */
  __u8 reason;             /* enum tf_reason */
  __u8 direction;          /* enum tf_direction */
  __u8 flags;              /* TF_CONN_F_* */
};

enum tf_event_kind {
  TF_EVENT_NEW = 1,
  TF_EVENT_CLOSE = 2,
};

/* One record on the tf_events ring buffer: the entry as it was. */
struct tf_event {
  __u64 cookie;
  __u64 timestamp_ns;
  __u8 kind; /* enum tf_event_kind */
  __u8 _pad[7];
  struct tf_conn conn;
};

/*
 * tf_exempt LPM trie key. data = port (network order, 0 = any port) then
 * the address as IPv6 (IPv4 as ::ffff:a.b.c.d); prefixlen counts the 16
 * port bits plus the address prefix.
 */
struct tf_exempt_key {
  __u32 prefixlen;
  __u16 port;
  __u8 addr[16];
  __u8 _pad[2];
};
#define TF_EXEMPT_PORT_BITS 16u

/* tf_stats: one per-CPU value. */
struct tf_stats {
  __u64 packets[TF_PACKET_DIR_COUNT][TF_ACTION_COUNT][TF_REASON_COUNT];
  __u64 counters[TF_COUNTER_COUNT];
};

/* Load-time configuration of the programs (rodata). */
struct tf_datapath_config {
  __u8 mode;              /* enum tf_mode */
  __u8 untracked_verdict; /* TF_VERDICT_ALLOW or TF_VERDICT_DENY */
  __u8 _pad[2];
  __u32 pending_rto_min_us; /* 0 = leave the RTO floor alone */
  __u32 default_rto_min_us; /* the netns's floor, restored once decided */
};

/* tf_meta: one entry describing who made the pinned maps. */
struct tf_meta {
  __u32 magic;
  __u32 abi_version;
  __u32 conn_size;
  __u32 event_size;
  __u32 stats_size;
  __u32 _pad;
};

#ifdef __cplusplus
#include <type_traits>
static_assert(sizeof(struct tf_tuple) == 40, "tf_tuple layout");
static_assert(sizeof(struct tf_conn) == 80, "tf_conn layout");
static_assert(sizeof(struct tf_event) == 104, "tf_event layout");
static_assert(sizeof(struct tf_exempt_key) == 24, "tf_exempt_key layout");
static_assert(sizeof(struct tf_datapath_config) == 12, "config layout");
static_assert(sizeof(struct tf_meta) == 24, "tf_meta layout");
static_assert(std::is_trivially_copyable_v<struct tf_conn>);
static_assert(std::is_trivially_copyable_v<struct tf_event>);
static_assert(std::is_trivially_copyable_v<struct tf_stats>);
#endif

#endif /* TRUSTFENCE_ABI_H */
