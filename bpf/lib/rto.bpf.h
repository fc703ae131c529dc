/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The retransmission floor of pending sockets. Payload held at a receiver's
 * ingress is resent on the sender's retransmission timer, whose floor is
 * 200 ms by default: tf_sockops lowers it (TCP_BPF_RTO_MIN) while a
 * connection is pending so the first resend after the verdict comes
 * quickly, and puts the netns default back once decided. A floor that is
 * not the netns default was set on purpose (route metric, TCP_RTO_MIN_US)
 * and is left alone. Linear timeouts (TCP_THIN_LINEAR_TIMEOUTS) keep the
 * first six resends of a thin stream at that floor instead of doubling it,
 * so a verdict that takes tens of milliseconds is not paid twice.
 */
#ifndef TF_RTO_BPF_H
#define TF_RTO_BPF_H

#include "maps.bpf.h"
#include "net.bpf.h"
#include "stats.bpf.h"

/*
 * uapi bpf.h, since Linux 5.10. The agent probes for it (and for CONFIG_HZ)
 * at load and sets pending_rto_min_us to 0 without it; a refusal at run
 * time is still counted (TF_COUNTER_RTO_UNSUPPORTED).
 */
#define TF_TCP_BPF_RTO_MIN	    1004
#define TF_TCP_THIN_LINEAR_TIMEOUTS 16

extern int CONFIG_HZ __kconfig __weak;

enum tf_rto_floor {
	TF_RTO_FLOOR_OTHER,
	TF_RTO_FLOOR_DEFAULT,
	TF_RTO_FLOOR_LOWERED,
};

static __always_inline struct tcp_sock *
tf_tcp_sock(const struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return NULL;
	return bpf_skc_to_tcp_sock(sk);
}

/* As the kernel's usecs_to_jiffies: rounded up. */
static __always_inline __u32 tf_us_to_jiffies(__u32 us)
{
	int hz = CONFIG_HZ;

	if (hz <= 0)
		return 0;
	return (__u32)(((__u64)us * (__u32)hz + 999999) / 1000000);
}

static __always_inline enum tf_rto_floor
tf_rto_floor(const struct bpf_sock_ops *skops)
{
	struct tcp_sock *tp = tf_tcp_sock(skops);

	if (!tp)
		return TF_RTO_FLOOR_OTHER;
	__u32 floor = tp->inet_conn.icsk_rto_min;

	if (floor == tf_us_to_jiffies(tf_config.pending_rto_min_us))
		return TF_RTO_FLOOR_LOWERED;
	if (floor == tf_us_to_jiffies(tf_config.default_rto_min_us))
		return TF_RTO_FLOOR_DEFAULT;
	return TF_RTO_FLOOR_OTHER;
}

static __always_inline int tf_set_rto_floor(struct bpf_sock_ops *skops,
					    __u32 us)
{
	int value = (int)us;

	return bpf_setsockopt(skops, SOL_TCP, TF_TCP_BPF_RTO_MIN, &value,
			      sizeof(value));
}

/* Returns whether the socket's floor is now the lowered one. */
static __always_inline bool tf_lower_rto_floor(struct bpf_sock_ops *skops)
{
	__u32 pending = tf_config.pending_rto_min_us;

	if (!pending || pending >= tf_config.default_rto_min_us)
		return false;
	switch (tf_rto_floor(skops)) {
	case TF_RTO_FLOOR_LOWERED:
		return true;
	case TF_RTO_FLOOR_DEFAULT:
		if (tf_set_rto_floor(skops, pending)) {
			tf_count(TF_COUNTER_RTO_UNSUPPORTED);
			return false;
		}
		tf_count(TF_COUNTER_RTO_LOWERED);
		return true;
	default:
		return false;
	}
}

static __always_inline void tf_restore_rto_floor(struct bpf_sock_ops *skops)
{
	if (tf_rto_floor(skops) != TF_RTO_FLOOR_LOWERED)
		return;
	if (!tf_set_rto_floor(skops, tf_config.default_rto_min_us))
		tf_count(TF_COUNTER_RTO_RESTORED);
}

/* Returns whether linear timeouts were turned on (and so are ours to undo). */
static __always_inline bool tf_set_linear_timeouts(struct bpf_sock_ops *skops)
{
	int on = 0;

	if (bpf_getsockopt(skops, SOL_TCP, TF_TCP_THIN_LINEAR_TIMEOUTS, &on,
			   sizeof(on)) ||
	    on)
		return false;
	on = 1;
	return !bpf_setsockopt(skops, SOL_TCP, TF_TCP_THIN_LINEAR_TIMEOUTS, &on,
			       sizeof(on));
}

static __always_inline void tf_clear_linear_timeouts(struct bpf_sock_ops *skops)
{
	int off = 0;

	bpf_setsockopt(skops, SOL_TCP, TF_TCP_THIN_LINEAR_TIMEOUTS, &off,
		       sizeof(off));
}

#endif /* TF_RTO_BPF_H */
