// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The floor the per-packet benchmark measures against: a cgroup_skb program
 * that passes everything and does nothing else.
 */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup_skb/egress")
int tf_empty_skb(struct __sk_buff *skb)
{
	return 1;
}
