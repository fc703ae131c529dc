/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking for tf_sockops: entries and events by socket cookie. */
#ifndef TF_TRACK_BPF_H
#define TF_TRACK_BPF_H

#include "exempt.bpf.h"
#include "maps.bpf.h"
#include "net.bpf.h"
#include "rto.bpf.h"
#include "stats.bpf.h"

/*
 * A wake-up costs the kernel far more than the record: wake the agent only
 * for what it must act on now, a connection awaiting its verdict. Closes
 * and exempt connections wait for the agent's next read (it reads on a
 * short timer), unless the ring is half full. The wake-up is forced: the
 * adaptive one is skipped whenever unread records precede this one, which
 * the records published without a wake-up make the common case.
 */
static __always_inline __u64 tf_wakeup_flags(bool urgent)
{
	if (urgent)
		return BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_query(&tf_events, BPF_RB_AVAIL_DATA) >
	    TF_EVENTS_BYTES / 2)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void tf_emit(__u64 cookie, enum tf_event_kind kind,
				    const struct tf_conn *conn)
{
	struct tf_event *ev = bpf_ringbuf_reserve(&tf_events, sizeof(*ev), 0);

	if (!ev) {
		tf_count(TF_COUNTER_EVENTS_LOST);
		return;
	}
	ev->cookie = cookie;
	ev->timestamp_ns = bpf_ktime_get_ns();
	ev->kind = kind;
	__builtin_memset(ev->_pad, 0, sizeof(ev->_pad));
	__builtin_memcpy(&ev->conn, conn, sizeof(*conn));
	bpf_ringbuf_submit(
		ev, tf_wakeup_flags(kind == TF_EVENT_NEW &&
				    conn->verdict == TF_VERDICT_PENDING));
}

/*
 * Every address field is read, whatever the family, before any branch on
 * it: otherwise clang merges the IPv4 and IPv6 paths into one load through
 * a computed context pointer, which the verifier refuses.
 */
static __always_inline void tf_fill_tuple(const struct bpf_sock_ops *skops,
					  struct tf_tuple *t)
{
	__u32 local4 = skops->local_ip4, remote4 = skops->remote_ip4;
	__u32 local6[4] = {skops->local_ip6[0], skops->local_ip6[1],
			   skops->local_ip6[2], skops->local_ip6[3]};
	__u32 remote6[4] = {skops->remote_ip6[0], skops->remote_ip6[1],
			    skops->remote_ip6[2], skops->remote_ip6[3]};

	asm volatile("" ::: "memory");
	t->family = skops->family;
	t->local_port = (__u16)skops->local_port;
	t->remote_port = (__u16)bpf_ntohl(skops->remote_port);
	if (t->family == AF_INET) {
		t->local_addr[0] = local4;
		t->remote_addr[0] = remote4;
		return;
	}
	__builtin_memcpy(t->local_addr, local6, sizeof(local6));
	__builtin_memcpy(t->remote_addr, remote6, sizeof(remote6));
}

static __always_inline bool tf_tuple_exempt(const struct tf_tuple *t)
{
	__u32 remote[4];

	if (t->family == AF_INET)
		tf_v4_mapped(remote, t->remote_addr[0]);
	else
		__builtin_memcpy(remote, t->remote_addr, sizeof(remote));
	return tf_is_exempt(remote, t->remote_port, t->local_port);
}

/*
 * Callbacks we need: close always (or the entry would outlive its socket);
 * RTT and RTO while the floor is lowered, to restore it once decided.
 */
static __always_inline int tf_set_callbacks(struct bpf_sock_ops *skops,
					    bool watch_verdict)
{
	int flags = BPF_SOCK_OPS_STATE_CB_FLAG;

	if (watch_verdict &&
	    !bpf_sock_ops_cb_flags_set(skops, flags | BPF_SOCK_OPS_RTT_CB_FLAG |
						      BPF_SOCK_OPS_RTO_CB_FLAG))
		return 0;
	return bpf_sock_ops_cb_flags_set(skops, flags);
}

static __always_inline void tf_mark_overflow(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	tf_count(TF_COUNTER_TABLE_FULL);
	if (sk)
		bpf_sk_storage_get(&tf_overflow, sk, 0,
				   BPF_SK_STORAGE_GET_F_CREATE);
}

static __always_inline void tf_track(struct bpf_sock_ops *skops,
				     enum tf_direction direction)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct tf_conn conn = {};

	tf_fill_tuple(skops, &conn.tuple);
	conn.direction = direction;
	conn.created_ns = bpf_ktime_get_ns();
	struct tcp_sock *tp = tf_tcp_sock(skops);

	if (tp)
		conn.cgroup_id =
			tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup->kn->id;
	if (tf_tuple_exempt(&conn.tuple)) {
		conn.verdict = TF_VERDICT_ALLOW;
		conn.reason = TF_REASON_EXEMPT;
		conn.decided_ns = conn.created_ns;
		tf_count(TF_COUNTER_CONN_EXEMPT);
		tf_restore_rto_floor(skops); /* lowered by its listener */
	} else {
		if (tf_lower_rto_floor(skops))
			conn.flags |= TF_CONN_F_RTO_LOWERED;
		if (conn.flags & TF_CONN_F_RTO_LOWERED &&
		    tf_set_linear_timeouts(skops))
			conn.flags |= TF_CONN_F_LINEAR_RTO;
	}
	if (bpf_map_update_elem(&tf_conns, &cookie, &conn, BPF_NOEXIST)) {
		tf_mark_overflow(skops);
		return;
	}
	if (tf_set_callbacks(skops, conn.flags & TF_CONN_F_RTO_LOWERED)) {
		/* Without the close callback the entry would go stale. */
		bpf_map_delete_elem(&tf_conns, &cookie);
		tf_mark_overflow(skops);
		return;
	}
	tf_count(TF_COUNTER_CONN_TRACKED);
	tf_emit(cookie, TF_EVENT_NEW, &conn);
}

/*
 * Before the handshake measures the first RTT: a floor lowered only at
 * establishment would not shorten the timeout computed from that sample.
 */
static __always_inline void tf_connecting(struct bpf_sock_ops *skops)
{
	struct tf_tuple tuple = {};

	tf_fill_tuple(skops, &tuple);
	if (!tf_tuple_exempt(&tuple))
		tf_lower_rto_floor(skops);
}

/* Once decided, put the RTO floor back and stop the per-ACK callbacks. */
static __always_inline void tf_verdict_callback(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct tf_conn *conn = bpf_map_lookup_elem(&tf_conns, &cookie);

	if (!conn) {
		tf_set_callbacks(skops, false);
		return;
	}
	if (conn->verdict == TF_VERDICT_PENDING)
		return;
	if (conn->flags & TF_CONN_F_RTO_LOWERED)
		tf_restore_rto_floor(skops);
	if (conn->flags & TF_CONN_F_LINEAR_RTO)
		tf_clear_linear_timeouts(skops);
	conn->flags &= ~(TF_CONN_F_RTO_LOWERED | TF_CONN_F_LINEAR_RTO);
	tf_set_callbacks(skops, false);
}

static __always_inline void tf_untrack(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct tf_conn *conn = bpf_map_lookup_elem(&tf_conns, &cookie);
	struct tf_conn last;

	if (!conn)
		return;
	__builtin_memcpy(&last, conn, sizeof(last));
	if (bpf_map_delete_elem(&tf_conns, &cookie))
		return;
	tf_count(TF_COUNTER_CONN_CLOSED);
	tf_emit(cookie, TF_EVENT_CLOSE, &last);
}

#endif /* TF_TRACK_BPF_H */
