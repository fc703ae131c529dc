// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * trustfence datapath: tf_sockops tracks every TCP connection of the
 * enforced cgroup by socket cookie; tf_egress and tf_ingress enforce the
 * verdict the agent writes for it. The entry programs stay thin; the logic
 * lives in lib/.
 */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

#include "lib/enforce.bpf.h"
#include "lib/resend.bpf.h"
#include "lib/track.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("sockops")
int tf_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		tf_connecting(skops);
		break;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		/* Children inherit it before their handshake's RTT sample. */
		tf_lower_rto_floor(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		tf_track(skops, TF_DIRECTION_OUTBOUND);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		tf_track(skops, TF_DIRECTION_INBOUND);
		break;
	case BPF_SOCK_OPS_RTT_CB:
	case BPF_SOCK_OPS_RTO_CB:
		tf_verdict_callback(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			tf_untrack(skops);
		break;
	default:
		break;
	}
	return 1;
}

SEC("cgroup_skb/egress")
int tf_egress(struct __sk_buff *skb)
{
	return tf_enforce(skb, TF_PACKET_EGRESS);
}

SEC("cgroup_skb/ingress")
int tf_ingress(struct __sk_buff *skb)
{
	return tf_enforce(skb, TF_PACKET_INGRESS);
}

SEC("iter/tcp")
int tf_resend_held(struct bpf_iter__tcp *ctx)
{
	return tf_resend_visit(ctx->sk_common);
}
