#include "trustfence/datapath/datapath.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace {

using trustfence::datapath::sum_stats;

TEST(SumStats, AddsEveryCounterAcrossCpus) {
  std::vector<tf_stats> per_cpu(3);
  for (std::size_t cpu = 0; cpu < per_cpu.size(); ++cpu) {
    auto& s = per_cpu[cpu];
    s.packets[TF_PACKET_EGRESS][TF_ACTION_PASS][TF_REASON_LOCAL_DOMAIN] = 10 * (cpu + 1);
    s.packets[TF_PACKET_INGRESS][TF_ACTION_DROP][TF_REASON_PENDING] = cpu + 1;
    s.packets[TF_PACKET_INGRESS][TF_ACTION_AUDIT][TF_REASON_UNTRACKED] = 100;
    s.counters[TF_COUNTER_CONN_TRACKED] = 1000 * (cpu + 1);
    s.counters[TF_COUNTER_RTO_UNSUPPORTED] = 7;
  }

  tf_stats total = sum_stats(per_cpu);

  EXPECT_EQ(total.packets[TF_PACKET_EGRESS][TF_ACTION_PASS][TF_REASON_LOCAL_DOMAIN], 60u);
  EXPECT_EQ(total.packets[TF_PACKET_INGRESS][TF_ACTION_DROP][TF_REASON_PENDING], 6u);
  EXPECT_EQ(total.packets[TF_PACKET_INGRESS][TF_ACTION_AUDIT][TF_REASON_UNTRACKED], 300u);
  EXPECT_EQ(total.packets[TF_PACKET_EGRESS][TF_ACTION_DROP][TF_REASON_PENDING], 0u)
      << "egress and ingress were mixed up";
  EXPECT_EQ(total.counters[TF_COUNTER_CONN_TRACKED], 6000u);
  EXPECT_EQ(total.counters[TF_COUNTER_RTO_UNSUPPORTED], 21u);
  EXPECT_EQ(total.counters[TF_COUNTER_CONN_CLOSED], 0u);
}

TEST(SumStats, ReachesTheLastCellOfEveryArray) {
  std::vector<tf_stats> per_cpu(2);
  for (auto& s : per_cpu) {
    s.packets[TF_PACKET_DIR_COUNT - 1][TF_ACTION_COUNT - 1][TF_REASON_COUNT - 1] = 1;
    s.counters[TF_COUNTER_COUNT - 1] = 2;
  }
  tf_stats total = sum_stats(per_cpu);
  EXPECT_EQ(total.packets[TF_PACKET_DIR_COUNT - 1][TF_ACTION_COUNT - 1][TF_REASON_COUNT - 1], 2u);
  EXPECT_EQ(total.counters[TF_COUNTER_COUNT - 1], 4u);
}

TEST(SumStats, OfNoCpusIsAllZero) {
  tf_stats total = sum_stats({});
  const tf_stats zero{};
  EXPECT_EQ(std::memcmp(&total, &zero, sizeof(tf_stats)), 0);
}

}  // namespace
