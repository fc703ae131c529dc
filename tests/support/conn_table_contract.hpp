#pragma once

// The contract every ConnTable keeps, as a typed test suite: the in-memory
// fake (unit tier) and BpfConnTable over a real map (bpf tier) must both pass
// it, so tests written against the fake hold for the kernel table.
//
// Instantiate it with a harness type H:
//
//   struct H {
//     static constexpr std::size_t kCapacity = ...;
//     void SetUp();  // may GTEST_SKIP() or fail fatally
//     // A fresh, empty table; nullptr (after ADD_FAILURE) when it cannot.
//     std::unique_ptr<trustfence::datapath::ConnTable> make_table();
//     // Play tf_sockops on the table make_table returned.
//     void kernel_insert(trustfence::datapath::Cookie cookie, const tf_conn& conn);
//     void kernel_close(trustfence::datapath::Cookie cookie);
//   };
//   INSTANTIATE_TYPED_TEST_SUITE_P(Fake, ConnTableContract, ::testing::Types<H>);

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "trustfence/abi.h"
#include "trustfence/datapath/conn_table.hpp"

namespace trustfence::testing {

// A connection as tf_sockops records it, every field distinct and non-zero
// so a field written by mistake shows up. seed varies the values.
inline tf_conn kernel_conn(std::uint32_t seed) {
  tf_conn conn{};
  conn.tuple.family = AF_INET6;
  for (std::uint32_t i = 0; i < 4; ++i) {
    conn.tuple.local_addr[i] = 0x0a000000u + seed * 16 + i;
    conn.tuple.remote_addr[i] = 0xc0a80000u + seed * 16 + i;
  }
  conn.tuple.local_port = static_cast<__u16>(40000 + seed);
  conn.tuple.remote_port = 443;
  conn.cgroup_id = 0x1000 + seed;
  conn.created_ns = 1'000'000'000ULL * (seed + 1);
  conn.decided_ns = 0;
  conn.peer_id = 0;
  conn.peer_trust_domain = 0;
  conn.generation = 0;
  conn.verdict = TF_VERDICT_PENDING;
  conn.reason = TF_REASON_NONE;
  conn.direction = seed % 2 ? TF_DIRECTION_INBOUND : TF_DIRECTION_OUTBOUND;
  conn.flags = TF_CONN_F_RTO_LOWERED;
  return conn;
}

// Field-by-field comparison, so a failure names the field; then the bytes,
// so nothing a field list forgot (padding included) slips through.
inline void expect_same_conn(const tf_conn& actual, const tf_conn& expected) {
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(actual.tuple.local_addr[i], expected.tuple.local_addr[i])
        << "local_addr[" << i << "]";
    EXPECT_EQ(actual.tuple.remote_addr[i], expected.tuple.remote_addr[i])
        << "remote_addr[" << i << "]";
  }
  EXPECT_EQ(actual.tuple.local_port, expected.tuple.local_port);
  EXPECT_EQ(actual.tuple.remote_port, expected.tuple.remote_port);
  EXPECT_EQ(actual.tuple.family, expected.tuple.family);
  EXPECT_EQ(actual.cgroup_id, expected.cgroup_id);
  EXPECT_EQ(actual.created_ns, expected.created_ns);
  EXPECT_EQ(actual.decided_ns, expected.decided_ns);
  EXPECT_EQ(actual.peer_id, expected.peer_id);
  EXPECT_EQ(actual.peer_trust_domain, expected.peer_trust_domain);
  EXPECT_EQ(actual.generation, expected.generation);
  EXPECT_EQ(actual.verdict, expected.verdict);
  EXPECT_EQ(actual.reason, expected.reason);
  EXPECT_EQ(actual.direction, expected.direction);
  EXPECT_EQ(actual.flags, expected.flags);
  EXPECT_EQ(std::memcmp(&actual, &expected, sizeof(tf_conn)), 0) << "tf_conn bytes differ";
}

template <typename Harness>
class ConnTableContract : public ::testing::Test {
 protected:
  void SetUp() override {
    harness_.SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    table_ = harness_.make_table();
    ASSERT_NE(table_, nullptr);
  }

  datapath::ConnTable& table() { return *table_; }
  void kernel_insert(datapath::Cookie cookie, const tf_conn& conn) {
    harness_.kernel_insert(cookie, conn);
  }
  void kernel_close(datapath::Cookie cookie) { harness_.kernel_close(cookie); }

  std::optional<tf_conn> must_lookup(datapath::Cookie cookie) {
    auto found = table_->lookup(cookie);
    EXPECT_TRUE(found.has_value()) << found.error().message;
    return found ? *found : std::nullopt;
  }
  std::size_t entry_count() {
    auto all = table_->snapshot();
    EXPECT_TRUE(all.has_value()) << all.error().message;
    return all ? all->size() : 0;
  }

  Harness harness_;
  std::unique_ptr<datapath::ConnTable> table_;
};

TYPED_TEST_SUITE_P(ConnTableContract);

constexpr datapath::Cookie kCookieA = 0x0001'0000'0000'002aULL;
constexpr datapath::Cookie kCookieB = 0x0001'0000'0000'002bULL;

inline datapath::VerdictUpdate allow_update() {
  return {.verdict = TF_VERDICT_ALLOW,
          .reason = TF_REASON_ALIAS_DOMAIN,
          .peer_id = 7,
          .peer_trust_domain = 3,
          .generation = 5,
          .decided_ns = 123'456'789'012ULL};
}

TYPED_TEST_P(ConnTableContract, LookupReturnsTheKernelEntry) {
  this->kernel_insert(kCookieA, kernel_conn(1));
  this->kernel_insert(kCookieB, kernel_conn(2));

  auto found = this->must_lookup(kCookieA);
  ASSERT_TRUE(found.has_value());
  expect_same_conn(*found, kernel_conn(1));
}

TYPED_TEST_P(ConnTableContract, LookupOfAnUnknownCookieIsEmptyNotAnError) {
  this->kernel_insert(kCookieA, kernel_conn(1));

  auto found = this->table().lookup(kCookieB);
  ASSERT_TRUE(found.has_value()) << found.error().message;
  EXPECT_FALSE(found->has_value());
}

TYPED_TEST_P(ConnTableContract, SetVerdictWritesOnlyTheDecisionFields) {
  const tf_conn before = kernel_conn(3);
  this->kernel_insert(kCookieA, before);

  auto written = this->table().set_verdict(kCookieA, allow_update());
  ASSERT_TRUE(written.has_value()) << written.error().message;
  EXPECT_TRUE(*written);

  tf_conn expected = before;
  expected.verdict = TF_VERDICT_ALLOW;
  expected.reason = TF_REASON_ALIAS_DOMAIN;
  expected.peer_id = 7;
  expected.peer_trust_domain = 3;
  expected.generation = 5;
  expected.decided_ns = 123'456'789'012ULL;
  auto after = this->must_lookup(kCookieA);
  ASSERT_TRUE(after.has_value());
  expect_same_conn(*after, expected);
}

TYPED_TEST_P(ConnTableContract, SetVerdictTouchesNoOtherEntry) {
  this->kernel_insert(kCookieA, kernel_conn(1));
  this->kernel_insert(kCookieB, kernel_conn(2));

  ASSERT_TRUE(this->table().set_verdict(kCookieA, allow_update()).value_or(false));

  auto other = this->must_lookup(kCookieB);
  ASSERT_TRUE(other.has_value());
  expect_same_conn(*other, kernel_conn(2));
}

TYPED_TEST_P(ConnTableContract, ALaterVerdictReplacesAnEarlierOne) {
  this->kernel_insert(kCookieA, kernel_conn(1));
  ASSERT_TRUE(this->table().set_verdict(kCookieA, allow_update()).value_or(false));

  datapath::VerdictUpdate revoke{.verdict = TF_VERDICT_DENY,
                                 .reason = TF_REASON_REVOKED,
                                 .peer_id = 7,
                                 .peer_trust_domain = 3,
                                 .generation = 6,
                                 .decided_ns = 223'456'789'012ULL};
  ASSERT_TRUE(this->table().set_verdict(kCookieA, revoke).value_or(false));

  auto after = this->must_lookup(kCookieA);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->verdict, TF_VERDICT_DENY);
  EXPECT_EQ(after->reason, TF_REASON_REVOKED);
  EXPECT_EQ(after->generation, 6u);
  EXPECT_EQ(after->decided_ns, 223'456'789'012ULL);
}

TYPED_TEST_P(ConnTableContract, SetVerdictOnAMissingCookieReturnsFalseAndCreatesNothing) {
  this->kernel_insert(kCookieA, kernel_conn(1));

  auto written = this->table().set_verdict(kCookieB, allow_update());
  ASSERT_TRUE(written.has_value()) << written.error().message;
  EXPECT_FALSE(*written);

  auto found = this->table().lookup(kCookieB);
  ASSERT_TRUE(found.has_value()) << found.error().message;
  EXPECT_FALSE(found->has_value()) << "set_verdict created an entry";
  EXPECT_EQ(this->entry_count(), 1u);
}

TYPED_TEST_P(ConnTableContract, SetVerdictAfterTheSocketClosedReturnsFalse) {
  this->kernel_insert(kCookieA, kernel_conn(1));
  this->kernel_close(kCookieA);

  auto written = this->table().set_verdict(kCookieA, allow_update());
  ASSERT_TRUE(written.has_value()) << written.error().message;
  EXPECT_FALSE(*written);
  EXPECT_EQ(this->entry_count(), 0u) << "a closed socket was resurrected";
}

TYPED_TEST_P(ConnTableContract, SnapshotOfAnEmptyTableIsEmpty) {
  auto all = this->table().snapshot();
  ASSERT_TRUE(all.has_value()) << all.error().message;
  EXPECT_TRUE(all->empty());
}

TYPED_TEST_P(ConnTableContract, SnapshotReturnsEveryEntryExactlyOnce) {
  constexpr std::uint32_t kEntries = 300;
  std::map<datapath::Cookie, std::uint32_t> inserted;
  for (std::uint32_t i = 0; i < kEntries; ++i) {
    // Spread cookies over the key space so hash buckets differ.
    datapath::Cookie cookie = 0x9e37'79b9'7f4a'7c15ULL * (i + 1);
    inserted[cookie] = i;
    this->kernel_insert(cookie, kernel_conn(i));
  }

  auto all = this->table().snapshot();
  ASSERT_TRUE(all.has_value()) << all.error().message;
  EXPECT_EQ(all->size(), kEntries);
  std::set<datapath::Cookie> seen;
  for (const auto& [cookie, conn] : *all) {
    EXPECT_TRUE(seen.insert(cookie).second) << "cookie " << cookie << " seen twice";
    auto it = inserted.find(cookie);
    ASSERT_NE(it, inserted.end()) << "cookie " << cookie << " was never inserted";
    expect_same_conn(conn, kernel_conn(it->second));
  }
  EXPECT_EQ(seen.size(), inserted.size());
}

TYPED_TEST_P(ConnTableContract, EraseRemovesAnEntryOnceThenReportsItAbsent) {
  this->kernel_insert(kCookieA, kernel_conn(1));
  this->kernel_insert(kCookieB, kernel_conn(2));

  auto first = this->table().erase(kCookieA);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  EXPECT_TRUE(*first);
  auto second = this->table().erase(kCookieA);
  ASSERT_TRUE(second.has_value()) << second.error().message;
  EXPECT_FALSE(*second);

  EXPECT_FALSE(this->must_lookup(kCookieA).has_value());
  EXPECT_TRUE(this->must_lookup(kCookieB).has_value()) << "erase removed another entry";
}

TYPED_TEST_P(ConnTableContract, EraseOfAnUnknownCookieReturnsFalse) {
  this->kernel_insert(kCookieA, kernel_conn(1));

  auto erased = this->table().erase(kCookieB);
  ASSERT_TRUE(erased.has_value()) << erased.error().message;
  EXPECT_FALSE(*erased);
  EXPECT_EQ(this->entry_count(), 1u);
}

TYPED_TEST_P(ConnTableContract, CapacityIsTheTableSize) {
  EXPECT_EQ(this->table().capacity(), TypeParam::kCapacity);
}

REGISTER_TYPED_TEST_SUITE_P(ConnTableContract, LookupReturnsTheKernelEntry,
                            LookupOfAnUnknownCookieIsEmptyNotAnError,
                            SetVerdictWritesOnlyTheDecisionFields, SetVerdictTouchesNoOtherEntry,
                            ALaterVerdictReplacesAnEarlierOne,
                            SetVerdictOnAMissingCookieReturnsFalseAndCreatesNothing,
                            SetVerdictAfterTheSocketClosedReturnsFalse,
                            SnapshotOfAnEmptyTableIsEmpty, SnapshotReturnsEveryEntryExactlyOnce,
                            EraseRemovesAnEntryOnceThenReportsItAbsent,
                            EraseOfAnUnknownCookieReturnsFalse, CapacityIsTheTableSize);

}  // namespace trustfence::testing
