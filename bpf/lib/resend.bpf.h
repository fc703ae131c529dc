/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Resending held payload at once. Payload a pending socket sent was dropped
 * at egress, a local drop: TCP then waits on its probe timer, whose floor is
 * 200 ms whatever the RTO floor says. Once the agent allows the connection
 * it lists the cookie in tf_resend and runs this TCP socket iterator, which
 * pushes the socket's pending frames (toggling TCP_NODELAY on pushes them,
 * as a user's setsockopt would), then puts TCP_NODELAY back.
 *
 * An iterator walks the TCP sockets of one netns only: the one its creator
 * was in when it made the iterator fd. The agent makes one in each netns
 * that has a listed socket (a pod's, entered from a short-lived thread).
 */
#ifndef TF_RESEND_BPF_H
#define TF_RESEND_BPF_H

#include "maps.bpf.h"
#include "net.bpf.h"

#define TF_TCP_NODELAY 1

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TF_MAX_RESEND_BATCH);
	__type(key, __u64); /* socket cookie */
	__type(value, __u8);
} tf_resend SEC(".maps");

static __always_inline void tf_push_pending(struct tcp_sock *tp)
{
	int nodelay = 0, on = 1;

	if (bpf_getsockopt(tp, SOL_TCP, TF_TCP_NODELAY, &nodelay,
			   sizeof(nodelay)))
		return;
	bpf_setsockopt(tp, SOL_TCP, TF_TCP_NODELAY, &on, sizeof(on));
	if (!nodelay)
		bpf_setsockopt(tp, SOL_TCP, TF_TCP_NODELAY, &nodelay,
			       sizeof(nodelay));
}

static __always_inline int tf_resend_visit(struct sock_common *skc)
{
	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);

	if (!tp)
		return 0;
	__u64 cookie = bpf_get_socket_cookie(tp);

	if (!bpf_map_lookup_elem(&tf_resend, &cookie))
		return 0;
	bpf_map_delete_elem(&tf_resend, &cookie);
	tf_push_pending(tp);
	return 0;
}

#endif /* TF_RESEND_BPF_H */
