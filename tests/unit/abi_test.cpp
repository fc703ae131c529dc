// Pins the layout of every struct of include/trustfence/abi.h. The kernel
// programs are compiled from the same header with clang -target bpf; these
// offsets are what that compiler lays out (checked with offsetof under
// -target bpf), so a change here is an ABI change: bump TF_ABI_VERSION.

#include "trustfence/abi.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <string>
#include <vector>

namespace {

struct FieldLayout {
  std::string field;
  std::size_t offset;
  std::size_t size;
};

struct StructLayout {
  std::string name;
  std::size_t size;
  std::size_t align;
  std::vector<FieldLayout> fields;
};

#define TF_FIELD(type, field) \
  FieldLayout { #field, offsetof(type, field), sizeof(type::field) }

// What the compiler made of each struct, to set against the expectation.
std::vector<StructLayout> actual_layouts() {
  return {
      {"tf_tuple",
       sizeof(tf_tuple),
       alignof(tf_tuple),
       {TF_FIELD(tf_tuple, local_addr), TF_FIELD(tf_tuple, remote_addr),
        TF_FIELD(tf_tuple, local_port), TF_FIELD(tf_tuple, remote_port), TF_FIELD(tf_tuple, family),
        TF_FIELD(tf_tuple, _pad)}},
      {"tf_conn",
       sizeof(tf_conn),
       alignof(tf_conn),
       {TF_FIELD(tf_conn, tuple), TF_FIELD(tf_conn, cgroup_id), TF_FIELD(tf_conn, created_ns),
        TF_FIELD(tf_conn, decided_ns), TF_FIELD(tf_conn, peer_id),
        TF_FIELD(tf_conn, peer_trust_domain), TF_FIELD(tf_conn, generation),
        TF_FIELD(tf_conn, verdict), TF_FIELD(tf_conn, reason), TF_FIELD(tf_conn, direction),
        TF_FIELD(tf_conn, flags)}},
      {"tf_event",
       sizeof(tf_event),
       alignof(tf_event),
       {TF_FIELD(tf_event, cookie), TF_FIELD(tf_event, timestamp_ns), TF_FIELD(tf_event, kind),
        TF_FIELD(tf_event, _pad), TF_FIELD(tf_event, conn)}},
      {"tf_exempt_key",
       sizeof(tf_exempt_key),
       alignof(tf_exempt_key),
       {TF_FIELD(tf_exempt_key, prefixlen), TF_FIELD(tf_exempt_key, port),
        TF_FIELD(tf_exempt_key, addr), TF_FIELD(tf_exempt_key, _pad)}},
      {"tf_stats",
       sizeof(tf_stats),
       alignof(tf_stats),
       {TF_FIELD(tf_stats, packets), TF_FIELD(tf_stats, counters)}},
      {"tf_datapath_config",
       sizeof(tf_datapath_config),
       alignof(tf_datapath_config),
       {TF_FIELD(tf_datapath_config, mode), TF_FIELD(tf_datapath_config, untracked_verdict),
        TF_FIELD(tf_datapath_config, _pad), TF_FIELD(tf_datapath_config, pending_rto_min_us),
        TF_FIELD(tf_datapath_config, default_rto_min_us)}},
      {"tf_meta",
       sizeof(tf_meta),
       alignof(tf_meta),
       {TF_FIELD(tf_meta, magic), TF_FIELD(tf_meta, abi_version), TF_FIELD(tf_meta, conn_size),
        TF_FIELD(tf_meta, event_size), TF_FIELD(tf_meta, stats_size), TF_FIELD(tf_meta, _pad)}},
  };
}

#undef TF_FIELD

// The layout as clang -target bpf compiles it, written out by hand.
const std::vector<StructLayout> kExpected = {
    {"tf_tuple",
     40,
     4,
     {{"local_addr", 0, 16},
      {"remote_addr", 16, 16},
      {"local_port", 32, 2},
      {"remote_port", 34, 2},
      {"family", 36, 1},
      {"_pad", 37, 3}}},
    {"tf_conn",
     80,
     8,
     {{"tuple", 0, 40},
      {"cgroup_id", 40, 8},
      {"created_ns", 48, 8},
      {"decided_ns", 56, 8},
      {"peer_id", 64, 4},
      {"peer_trust_domain", 68, 4},
      {"generation", 72, 4},
      {"verdict", 76, 1},
      {"reason", 77, 1},
      {"direction", 78, 1},
      {"flags", 79, 1}}},
    {"tf_event",
     104,
     8,
     {{"cookie", 0, 8},
      {"timestamp_ns", 8, 8},
      {"kind", 16, 1},
      {"_pad", 17, 7},
      {"conn", 24, 80}}},
    {"tf_exempt_key",
     24,
     4,
     {{"prefixlen", 0, 4}, {"port", 4, 2}, {"addr", 6, 16}, {"_pad", 22, 2}}},
    // packets[2 directions][3 actions][18 reasons], counters[8].
    {"tf_stats", 928, 8, {{"packets", 0, 864}, {"counters", 864, 64}}},
    {"tf_datapath_config",
     12,
     4,
     {{"mode", 0, 1},
      {"untracked_verdict", 1, 1},
      {"_pad", 2, 2},
      {"pending_rto_min_us", 4, 4},
      {"default_rto_min_us", 8, 4}}},
    {"tf_meta",
     24,
     4,
     {{"magic", 0, 4},
      {"abi_version", 4, 4},
      {"conn_size", 8, 4},
      {"event_size", 12, 4},
      {"stats_size", 16, 4},
      {"_pad", 20, 4}}},
};

class AbiLayout : public ::testing::TestWithParam<StructLayout> {};

TEST_P(AbiLayout, MatchesTheKernelLayout) {
  const StructLayout& expected = GetParam();
  StructLayout actual;
  for (const auto& layout : actual_layouts())
    if (layout.name == expected.name) actual = layout;
  ASSERT_EQ(actual.name, expected.name) << "no such struct in the test's actual_layouts()";

  EXPECT_EQ(actual.size, expected.size) << "sizeof(" << expected.name << ")";
  EXPECT_EQ(actual.align, expected.align) << "alignof(" << expected.name << ")";
  ASSERT_EQ(actual.fields.size(), expected.fields.size());
  std::size_t covered = 0;
  for (std::size_t i = 0; i < expected.fields.size(); ++i) {
    const auto& want = expected.fields[i];
    const auto& got = actual.fields[i];
    ASSERT_EQ(got.field, want.field);
    EXPECT_EQ(got.offset, want.offset) << "offsetof(" << expected.name << ", " << want.field << ")";
    EXPECT_EQ(got.size, want.size) << "sizeof(" << expected.name << "::" << want.field << ")";
    // Fields follow one another with no hidden padding: every byte is named.
    EXPECT_EQ(got.offset, covered) << "implicit padding before " << want.field;
    covered = got.offset + got.size;
  }
  EXPECT_EQ(covered, actual.size) << "implicit padding at the end of " << expected.name;
}

INSTANTIATE_TEST_SUITE_P(Structs, AbiLayout, ::testing::ValuesIn(kExpected),
                         [](const auto& info) { return info.param.name; });

TEST(AbiLayout, EveryStructIsPinned) { EXPECT_EQ(actual_layouts().size(), kExpected.size()); }

TEST(AbiConstants, CountsThatSizeTheStatsArrays) {
  EXPECT_EQ(TF_VERDICT_COUNT, 3);
  EXPECT_EQ(TF_REASON_COUNT, 18);
  EXPECT_EQ(TF_ACTION_COUNT, 3);
  EXPECT_EQ(TF_PACKET_DIR_COUNT, 2);
  EXPECT_EQ(TF_COUNTER_COUNT, 8);
}

TEST(AbiConstants, ValuesStoredInPinnedMaps) {
  // Bytes of tf_conn and tf_event: changing one misreads old entries.
  EXPECT_EQ(TF_VERDICT_PENDING, 0);
  EXPECT_EQ(TF_VERDICT_ALLOW, 1);
  EXPECT_EQ(TF_VERDICT_DENY, 2);
  EXPECT_EQ(TF_DIRECTION_OUTBOUND, 1);
  EXPECT_EQ(TF_DIRECTION_INBOUND, 2);
  EXPECT_EQ(TF_EVENT_NEW, 1);
  EXPECT_EQ(TF_EVENT_CLOSE, 2);
  EXPECT_EQ(TF_MODE_ENFORCE, 0);
  EXPECT_EQ(TF_MODE_AUDIT, 1);
  EXPECT_EQ(TF_CONN_F_RTO_LOWERED, 1u);
  EXPECT_EQ(TF_EXEMPT_PORT_BITS, 16u);
  EXPECT_EQ(TF_ABI_MAGIC, 0x74666e63u);
}

TEST(AbiConstants, RingBufferSizeIsAPowerOfTwoPageMultiple) {
  EXPECT_EQ(TF_EVENTS_BYTES & (TF_EVENTS_BYTES - 1), 0u);
  EXPECT_EQ(TF_EVENTS_BYTES % 4096, 0u);
}

TEST(AbiConstants, ExemptKeyHoldsPortAndIpv6Address) {
  // An LPM trie matches at most (key size - prefixlen field) * 8 bits.
  EXPECT_GE((sizeof(tf_exempt_key) - sizeof(__u32)) * 8, TF_EXEMPT_PORT_BITS + 128);
}

}  // namespace
