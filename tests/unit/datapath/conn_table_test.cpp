#include "trustfence/datapath/conn_table.hpp"

#include <gtest/gtest.h>

#include <memory>

#include "support/conn_table_contract.hpp"
#include "support/fake_conn_table.hpp"

namespace {

using trustfence::Errc;
using trustfence::Error;
using trustfence::datapath::ConnTable;
using trustfence::datapath::Cookie;
using trustfence::datapath::VerdictUpdate;
using trustfence::testing::FakeConnTable;
using trustfence::testing::kernel_conn;

class FakeHarness {
 public:
  static constexpr std::size_t kCapacity = 1024;

  void SetUp() {}
  std::unique_ptr<ConnTable> make_table() {
    auto table = std::make_unique<FakeConnTable>(kCapacity);
    fake_ = table.get();
    return table;
  }
  void kernel_insert(Cookie cookie, const tf_conn& conn) {
    ASSERT_TRUE(fake_->kernel_insert(cookie, conn)) << "cookie " << cookie;
  }
  void kernel_close(Cookie cookie) { ASSERT_TRUE(fake_->kernel_close(cookie)) << cookie; }

 private:
  FakeConnTable* fake_ = nullptr;
};

}  // namespace

namespace trustfence::testing {
INSTANTIATE_TYPED_TEST_SUITE_P(Fake, ConnTableContract, ::testing::Types<FakeHarness>);
}  // namespace trustfence::testing

namespace {

TEST(ApplyVerdict, WritesEveryDecisionFieldAndNothingElse) {
  tf_conn conn = kernel_conn(4);
  const tf_conn before = conn;
  VerdictUpdate update{.verdict = TF_VERDICT_DENY,
                       .reason = TF_REASON_DOMAIN_NOT_ALLOWED,
                       .peer_id = 11,
                       .peer_trust_domain = 12,
                       .generation = 13,
                       .decided_ns = 14};

  trustfence::datapath::apply(update, conn);

  tf_conn expected = before;
  expected.verdict = TF_VERDICT_DENY;
  expected.reason = TF_REASON_DOMAIN_NOT_ALLOWED;
  expected.peer_id = 11;
  expected.peer_trust_domain = 12;
  expected.generation = 13;
  expected.decided_ns = 14;
  trustfence::testing::expect_same_conn(conn, expected);
}

TEST(FakeConnTable, KernelInsertRefusesADuplicateCookieAndKeepsTheFirst) {
  FakeConnTable table(4);
  ASSERT_TRUE(table.kernel_insert(1, kernel_conn(1)));
  EXPECT_FALSE(table.kernel_insert(1, kernel_conn(2)));

  auto found = table.lookup(1);
  ASSERT_TRUE(found.has_value() && found->has_value());
  EXPECT_EQ((*found)->cgroup_id, kernel_conn(1).cgroup_id);
}

TEST(FakeConnTable, KernelInsertRefusesBeyondCapacity) {
  FakeConnTable table(2);
  EXPECT_EQ(table.capacity(), 2u);
  ASSERT_TRUE(table.kernel_insert(1, kernel_conn(1)));
  ASSERT_TRUE(table.kernel_insert(2, kernel_conn(2)));
  EXPECT_FALSE(table.kernel_insert(3, kernel_conn(3)));
  EXPECT_EQ(table.size(), 2u);

  ASSERT_TRUE(table.kernel_close(1));
  EXPECT_TRUE(table.kernel_insert(3, kernel_conn(3))) << "a closed entry frees its slot";
}

TEST(FakeConnTable, KernelCloseOfAnUntrackedCookieReturnsFalse) {
  FakeConnTable table;
  EXPECT_FALSE(table.kernel_close(9));
}

TEST(FakeConnTable, AnInjectedFailureFailsEveryCallUntilCleared) {
  FakeConnTable table;
  ASSERT_TRUE(table.kernel_insert(1, kernel_conn(1)));
  table.fail_with(Error{Errc::kIo, "lookup in tf_conns: Bad address"});

  auto looked = table.lookup(1);
  ASSERT_FALSE(looked.has_value());
  EXPECT_EQ(looked.error().code, Errc::kIo);
  EXPECT_EQ(looked.error().message, "lookup in tf_conns: Bad address");
  EXPECT_FALSE(table.set_verdict(1, VerdictUpdate{}).has_value());
  EXPECT_FALSE(table.snapshot().has_value());
  EXPECT_FALSE(table.erase(1).has_value());
  EXPECT_EQ(table.size(), 1u) << "a failed erase removed the entry";

  table.fail_with(std::nullopt);
  auto again = table.lookup(1);
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(again->has_value());
}

}  // namespace
