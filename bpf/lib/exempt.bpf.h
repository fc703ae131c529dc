/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Exemptions: traffic that must never be held (the agents' own channel, DNS,
 * the API server, SPIRE). A rule is a CIDR of the remote end plus an
 * optional port that may be either end's port, so one rule covers both
 * directions of a service.
 */
#ifndef TF_EXEMPT_BPF_H
#define TF_EXEMPT_BPF_H

#include "maps.bpf.h"
#include "net.bpf.h"

static __always_inline bool tf_exempt_match(const __u32 remote[4], __u16 port)
{
	struct tf_exempt_key key = {
		.prefixlen = TF_EXEMPT_PORT_BITS + 128,
		.port = bpf_htons(port),
	};

	__builtin_memcpy(key.addr, remote, 16);
	return bpf_map_lookup_elem(&tf_exempt, &key) != NULL;
}

/* remote: IPv6 layout (IPv4 mapped); ports in host order. */
static __always_inline bool tf_is_exempt(const __u32 remote[4],
					 __u16 remote_port, __u16 local_port)
{
	return tf_exempt_match(remote, remote_port) ||
	       tf_exempt_match(remote, local_port) ||
	       tf_exempt_match(remote, 0);
}

#endif /* TF_EXEMPT_BPF_H */
