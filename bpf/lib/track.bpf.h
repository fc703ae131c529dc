/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking for tf_sockops: entries and events by socket cookie. */
#ifndef TF_TRACK_BPF_H
#define TF_TRACK_BPF_H

#include "exempt.bpf.h"
#include "maps.bpf.h"
#include "net.bpf.h"
#include "stats.bpf.h"

/* uapi bpf.h, stable since Linux 5.10; older kernels refuse it at run time. */
#define TF_TCP_BPF_RTO_MIN 1004

extern int CONFIG_HZ __kconfig __weak;

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
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline void tf_fill_tuple(const struct bpf_sock_ops *skops,
					  struct tf_tuple *t)
{
	t->family = skops->family;
	t->local_port = (__u16)skops->local_port;
	t->remote_port = (__u16)bpf_ntohl(skops->remote_port);
	if (skops->family == AF_INET) {
		t->local_addr[0] = skops->local_ip4;
		t->remote_addr[0] = skops->remote_ip4;
		return;
	}
	t->local_addr[0] = skops->local_ip6[0];
	t->local_addr[1] = skops->local_ip6[1];
	t->local_addr[2] = skops->local_ip6[2];
	t->local_addr[3] = skops->local_ip6[3];
	t->remote_addr[0] = skops->remote_ip6[0];
	t->remote_addr[1] = skops->remote_ip6[1];
	t->remote_addr[2] = skops->remote_ip6[2];
	t->remote_addr[3] = skops->remote_ip6[3];
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

static __always_inline struct tcp_sock *
tf_tcp_sock(const struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return NULL;
	return bpf_skc_to_tcp_sock(sk);
}

static __always_inline __u32 tf_jiffies_to_us(__u32 j)
{
	int hz = CONFIG_HZ;

	return hz > 0 ? j * (1000000u / (__u32)hz) : 0;
}

/*
 * Payload held back is resent on the retransmission timer, whose floor is
 * 200 ms by default: lower it while the connection is pending so the first
 * resend after the verdict comes quickly. The floor is restored once decided.
 */
static __always_inline void tf_lower_rto(struct bpf_sock_ops *skops,
					 struct tf_conn *conn)
{
	int rto_us = (int)tf_config.pending_rto_min_us;

	if (rto_us <= 0)
		return;
	struct tcp_sock *tp = tf_tcp_sock(skops);

	if (!tp)
		return;
	__u32 saved = tf_jiffies_to_us(tp->inet_conn.icsk_rto_min);

	if (!saved || (__u32)rto_us >= saved)
		return;
	if (bpf_setsockopt(skops, SOL_TCP, TF_TCP_BPF_RTO_MIN, &rto_us,
			   sizeof(rto_us))) {
		tf_count(TF_COUNTER_RTO_UNSUPPORTED);
		return;
	}
	conn->saved_rto_min_us = saved;
	conn->flags |= TF_CONN_F_RTO_LOWERED;
	tf_count(TF_COUNTER_RTO_LOWERED);
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
	} else {
		tf_lower_rto(skops, &conn);
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

/* Once decided, put the RTO floor back and stop the per-ACK callbacks. */
static __always_inline void tf_restore_rto(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct tf_conn *conn = bpf_map_lookup_elem(&tf_conns, &cookie);

	if (!conn) {
		tf_set_callbacks(skops, false);
		return;
	}
	if (conn->verdict == TF_VERDICT_PENDING)
		return;
	if (conn->flags & TF_CONN_F_RTO_LOWERED) {
		int saved = (int)conn->saved_rto_min_us;

		if (saved > 0 &&
		    !bpf_setsockopt(skops, SOL_TCP, TF_TCP_BPF_RTO_MIN, &saved,
				    sizeof(saved)))
			tf_count(TF_COUNTER_RTO_RESTORED);
		conn->flags &= ~TF_CONN_F_RTO_LOWERED;
	}
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
