/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Network constants vmlinux.h lacks, and the little packet parsing we do. */
#ifndef TF_NET_BPF_H
#define TF_NET_BPF_H

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET	     2
#define AF_INET6     10
#define SOL_TCP	     6
#define ETH_P_IP     0x0800
#define ETH_P_IPV6   0x86DD
#define IPPROTO_TCP_ 6

#define TF_TCP_FLAG_RST 0x04

/* IPv6 extension headers we step over to find TCP (bounded walk). */
#define TF_MAX_IPV6_EXT 4

/* What the datapath needs of one TCP segment. */
struct tf_segment {
	__u32 saddr[4]; /* IPv6 layout; IPv4 as ::ffff:a.b.c.d */
	__u32 daddr[4];
	__u16 sport; /* host order */
	__u16 dport;
	__u32 payload_len;
	__u8 tcp_flags;
	bool is_tcp;
};

static __always_inline void tf_v4_mapped(__u32 out[4], __u32 v4)
{
	out[0] = 0;
	out[1] = 0;
	out[2] = bpf_htonl(0x0000ffff);
	out[3] = v4;
}

static __always_inline bool tf_ipv6_is_ext(__u8 nexthdr)
{
	/* hop-by-hop, routing, fragment, destination options */
	return nexthdr == 0 || nexthdr == 43 || nexthdr == 44 || nexthdr == 60;
}

/* Reads the TCP header at l4 and fills ports, flags and payload length. */
static __always_inline int tf_parse_tcp(struct __sk_buff *skb, __u32 l4,
					struct tf_segment *seg)
{
	struct tcphdr th;

	if (bpf_skb_load_bytes(skb, l4, &th, sizeof(th)) < 0)
		return -1;
	__u32 hdr_len = (__u32)th.doff * 4;
	if (hdr_len < sizeof(th) || l4 + hdr_len > skb->len)
		return -1;
	seg->sport = bpf_ntohs(th.source);
	seg->dport = bpf_ntohs(th.dest);
	seg->tcp_flags = ((__u8 *)&th)[13];
	seg->payload_len = skb->len - l4 - hdr_len;
	seg->is_tcp = true;
	return 0;
}

/*
 * cgroup_skb data starts at the network header. Returns 0 with is_tcp set
 * for a well-formed TCP segment, 0 with is_tcp clear for anything else, and
 * -1 for a truncated or malformed header (the caller treats it as payload).
 */
static __always_inline int tf_parse_segment(struct __sk_buff *skb,
					    struct tf_segment *seg)
{
	seg->is_tcp = false;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.protocol != IPPROTO_TCP_)
			return 0;
		if (ip.ihl < 5 || (ip.frag_off & bpf_htons(0x3fff)))
			return -1; /* fragments carry payload, never control */
		tf_v4_mapped(seg->saddr, ip.saddr);
		tf_v4_mapped(seg->daddr, ip.daddr);
		return tf_parse_tcp(skb, (__u32)ip.ihl * 4, seg);
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		__u32 off = sizeof(ip6);

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return -1;
		__builtin_memcpy(seg->saddr, &ip6.saddr, 16);
		__builtin_memcpy(seg->daddr, &ip6.daddr, 16);
		__u8 nexthdr = ip6.nexthdr;
#pragma unroll
		for (int i = 0; i < TF_MAX_IPV6_EXT; i++) {
			if (!tf_ipv6_is_ext(nexthdr))
				break;
			if (nexthdr == 44)
				return -1; /* fragment: treat as payload */
			__u8 ext[2];

			if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
				return -1;
			nexthdr = ext[0];
			off += ((__u32)ext[1] + 1) * 8;
		}
		if (nexthdr != IPPROTO_TCP_)
			return tf_ipv6_is_ext(nexthdr) ? -1 : 0;
		return tf_parse_tcp(skb, off, seg);
	}
	return 0;
}

#endif /* TF_NET_BPF_H */
