/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The per-packet decision of tf_egress and tf_ingress. */
#ifndef TF_ENFORCE_BPF_H
#define TF_ENFORCE_BPF_H

#include "exempt.bpf.h"
#include "maps.bpf.h"
#include "net.bpf.h"
#include "stats.bpf.h"

#define TF_SKB_PASS 1
#define TF_SKB_DROP 0

/*
 * The socket cookie of a packet. A test run's dummy socket has a cookie
 * nobody can predict, so the bpf test tier builds these same sources with
 * TF_COOKIE_FROM_MARK defined and picks each case's connection by skb->mark.
 * Production builds never define it.
 */
static __always_inline __u64 tf_socket_cookie(struct __sk_buff *skb)
{
#ifdef TF_COOKIE_FROM_MARK
	return skb->mark;
#else
	return bpf_get_socket_cookie(skb);
#endif
}

static __always_inline int tf_pass(enum tf_packet_dir dir, __u32 reason)
{
	tf_count_packet(dir, TF_ACTION_PASS, reason);
	return TF_SKB_PASS;
}

/* Drops in enforce mode; in audit mode counts the would-drop and passes. */
static __always_inline int tf_drop(enum tf_packet_dir dir, __u32 reason)
{
	if (tf_config.mode == TF_MODE_AUDIT) {
		tf_count_packet(dir, TF_ACTION_AUDIT, reason);
		return TF_SKB_PASS;
	}
	tf_count_packet(dir, TF_ACTION_DROP, reason);
	return TF_SKB_DROP;
}

/* Control segments carry no payload: SYN, pure ACK, FIN, RST. */
static __always_inline bool tf_is_control(const struct tf_segment *seg,
					  int parsed)
{
	return parsed == 0 && seg->is_tcp && seg->payload_len == 0;
}

/*
 * Holding payload at egress leaves it to TCP's probe timer (200 ms), so the
 * socket is listed in tf_held for the agent to push once allowed. The agent
 * writes the verdict, then reads tf_held; we list the socket, then read the
 * verdict again: whichever comes second sees the other, so a payload is
 * either pushed by the agent or passes here, never left to the timer.
 */
static __always_inline bool tf_allowed_meanwhile(__u64 cookie)
{
	__u8 one = 1;
	struct tf_conn *now;

	bpf_map_update_elem(&tf_held, &cookie, &one, BPF_ANY);
	now = bpf_map_lookup_elem(&tf_conns, &cookie);
	return now && now->verdict == TF_VERDICT_ALLOW;
}

/* Awaiting a verdict: control segments pass, payload is held back (TCP
 * resends it once the verdict allows it, so nothing is lost). */
static __always_inline int tf_hold(struct __sk_buff *skb,
				   enum tf_packet_dir dir, __u64 cookie)
{
	struct tf_segment seg;
	int parsed = tf_parse_segment(skb, &seg);

	if (tf_is_control(&seg, parsed))
		return tf_pass(dir, TF_REASON_PENDING);
	if (dir == TF_PACKET_EGRESS && tf_config.mode == TF_MODE_ENFORCE &&
	    tf_allowed_meanwhile(cookie))
		return tf_pass(dir, TF_REASON_PENDING);
	return tf_drop(dir, TF_REASON_PENDING);
}

static __always_inline int tf_deny(struct __sk_buff *skb,
				   enum tf_packet_dir dir, __u32 reason)
{
	struct tf_segment seg;
	int parsed = tf_parse_segment(skb, &seg);

	/* A reset carries no data and tells the other end at once. */
	if (tf_is_control(&seg, parsed) && (seg.tcp_flags & TF_TCP_FLAG_RST))
		return tf_pass(dir, reason);
	return tf_drop(dir, reason);
}

/*
 * A socket whose handshake is still under way is not yet in tf_conns; one in
 * TIME_WAIT has left it. Neither predates the datapath, so neither takes the
 * untracked fallback: their control segments pass, payload never does.
 */
static __always_inline bool tf_sock_transient(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return false;
	switch (sk->state) {
	case BPF_TCP_SYN_SENT:
	case BPF_TCP_SYN_RECV:
	case BPF_TCP_LISTEN:
	case BPF_TCP_NEW_SYN_RECV:
	case BPF_TCP_TIME_WAIT:
		return true;
	default:
		return false;
	}
}

/* tf_sockops saw this socket established but had no room to record it. */
static __always_inline bool tf_sock_overflowed(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return false;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return false;
	return bpf_sk_storage_get(&tf_overflow, sk, 0, 0) != NULL;
}

/* Traffic of a socket tf_conns does not know. */
static __always_inline int tf_untracked(struct __sk_buff *skb,
					enum tf_packet_dir dir)
{
	struct tf_segment seg;
	int parsed = tf_parse_segment(skb, &seg);

	if (parsed == 0 && !seg.is_tcp)
		return TF_SKB_PASS; /* TCP only; other protocols untouched */
	if (parsed == 0) {
		const __u32 *remote =
			dir == TF_PACKET_EGRESS ? seg.daddr : seg.saddr;
		__u16 rport = dir == TF_PACKET_EGRESS ? seg.dport : seg.sport;
		__u16 lport = dir == TF_PACKET_EGRESS ? seg.sport : seg.dport;

		if (tf_is_exempt(remote, rport, lport))
			return tf_pass(dir, TF_REASON_EXEMPT);
	}
	if (tf_sock_transient(skb)) {
		if (tf_is_control(&seg, parsed))
			return tf_pass(dir, TF_REASON_PENDING);
		return tf_drop(dir, TF_REASON_PENDING);
	}
	if (tf_sock_overflowed(skb))
		return tf_deny(skb, dir, TF_REASON_TABLE_FULL);
	if (tf_config.untracked_verdict == TF_VERDICT_ALLOW)
		return tf_pass(dir, TF_REASON_UNTRACKED);
	return tf_deny(skb, dir, TF_REASON_UNTRACKED);
}

static __always_inline int tf_enforce(struct __sk_buff *skb,
				      enum tf_packet_dir dir)
{
	__u64 cookie = tf_socket_cookie(skb);
	struct tf_conn *conn = bpf_map_lookup_elem(&tf_conns, &cookie);

	if (!conn)
		return tf_untracked(skb, dir);
	__u8 verdict = conn->verdict;
	__u32 reason = conn->reason;

	if (verdict == TF_VERDICT_ALLOW)
		return tf_pass(dir, reason);
	if (verdict == TF_VERDICT_DENY)
		return tf_deny(skb, dir, reason);
	return tf_hold(skb, dir, cookie);
}

#endif /* TF_ENFORCE_BPF_H */
