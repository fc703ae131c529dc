/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef TF_STATS_BPF_H
#define TF_STATS_BPF_H

#include "maps.bpf.h"

static __always_inline struct tf_stats *tf_stats_cpu(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&tf_stats, &zero);
}

static __always_inline void tf_count_packet(enum tf_packet_dir dir,
					    enum tf_action action, __u32 reason)
{
	struct tf_stats *s = tf_stats_cpu();

	if (reason >= TF_REASON_COUNT)
		reason = TF_REASON_NONE;
	if (s)
		s->packets[dir & 1][action][reason]++;
}

static __always_inline void tf_count(enum tf_counter counter)
{
	struct tf_stats *s = tf_stats_cpu();

	if (s)
		s->counters[counter]++;
}

#endif /* TF_STATS_BPF_H */
