// Restart: the Datapath object goes away (agent stopped, crashed or being
// upgraded) but the pins stay, so programs stay attached through their
// pinned links and verdicts stay in the pinned tf_conns. Opening again
// reuses them. Uninstall detaches everything.

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <filesystem>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/socket.hpp"
#include "support/kernel/test_datapath.hpp"
#include "support/privileges.hpp"

namespace trustfence::testing::kernel {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr milliseconds kDropWindow = 500ms;

class RestartTest : public TestDatapath, public ::testing::WithParamInterface<int> {
 protected:
  // Fresh bytes from client to server: true when they arrived intact.
  void expect_flows(ConnectedPair& pair, const std::string& what) {
    SCOPED_TRACE(what);
    auto text = what + " #" + std::to_string(++messages_);
    TF_ASSERT_OK(send_all(pair.client.get(), text));
    TF_ASSERT_OK_AND_ASSIGN(auto got, recv_text(pair.server.get(), text.size()));
    EXPECT_EQ(got, text);
  }
  void expect_dropped(ConnectedPair& pair, const std::string& what) {
    SCOPED_TRACE(what);
    TF_ASSERT_OK(send_all(pair.client.get(), "must not arrive"));
    TF_ASSERT_OK_AND_ASSIGN(bool arrived, data_arrives_within(pair.server.get(), kDropWindow));
    EXPECT_FALSE(arrived) << "a DENY connection delivered";
  }
  void expect_verdict(datapath::ConnTable& table, std::uint64_t cookie, tf_verdict verdict,
                      tf_reason reason) {
    TF_ASSERT_OK_AND_ASSIGN(auto entry, table.lookup(cookie));
    ASSERT_TRUE(entry.has_value()) << "cookie " << cookie << " lost";
    EXPECT_EQ(entry->verdict, verdict) << "cookie " << cookie;
    EXPECT_EQ(entry->reason, reason) << "cookie " << cookie;
    EXPECT_EQ(entry->peer_id, 41u) << "cookie " << cookie;
    EXPECT_EQ(entry->generation, 3u) << "cookie " << cookie;
  }
  Result<bool> decide(std::uint64_t cookie, tf_verdict verdict, tf_reason reason) {
    datapath::VerdictUpdate update;
    update.verdict = verdict;
    update.reason = reason;
    update.peer_id = 41;
    update.peer_trust_domain = 7;
    update.generation = 3;
    update.decided_ns = 1;
    const std::pair<datapath::Cookie, datapath::VerdictUpdate> one{cookie, update};
    auto applied = dp().apply_verdicts(std::span(&one, 1));
    if (!applied) return std::unexpected(applied.error());
    return *applied == 1;
  }

 private:
  int messages_ = 0;
};

TEST_P(RestartTest, EntriesAndEnforcementSurviveTheAgentAndUninstallDetaches) {
  TF_REQUIRE_ROOT();
  const int family = GetParam();
  TF_ASSERT_OK(open());
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(family));
  TF_ASSERT_OK_AND_ASSIGN(auto port, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto denied, connect_pair(family, listener.get(), port.port));
  TF_ASSERT_OK_AND_ASSIGN(auto allowed, connect_pair(family, listener.get(), port.port));
  TF_ASSERT_OK_AND_ASSIGN(auto pending, connect_pair(family, listener.get(), port.port));

  // The denied connection's client is allowed, so what stops its bytes is
  // the server's DENY, not a PENDING hold.
  for (auto [cookie, verdict, reason] :
       {std::tuple{denied.client_cookie, TF_VERDICT_ALLOW, TF_REASON_LOCAL_DOMAIN},
        std::tuple{denied.server_cookie, TF_VERDICT_DENY, TF_REASON_DOMAIN_NOT_ALLOWED},
        std::tuple{allowed.client_cookie, TF_VERDICT_ALLOW, TF_REASON_LOCAL_DOMAIN},
        std::tuple{allowed.server_cookie, TF_VERDICT_ALLOW, TF_REASON_ALIAS_DOMAIN}}) {
    TF_ASSERT_OK_AND_ASSIGN(bool written, decide(cookie, verdict, reason));
    ASSERT_TRUE(written);
  }
  expect_flows(allowed, "first agent");
  expect_dropped(denied, "first agent");
  TF_ASSERT_OK_AND_ASSIGN(auto stats_before, stats());

  close();  // the agent stops: pins and links stay
  for (const char* pin :
       {"tf_conns", "tf_meta", "tf_sockops_link", "tf_egress_link", "tf_ingress_link"})
    EXPECT_TRUE(fs::exists(fs::path(pin_dir()) / pin)) << pin << " unpinned on close";
  TF_ASSERT_OK_AND_ASSIGN(unsigned attached, cgroup().attached_programs());
  EXPECT_EQ(attached, 3u) << "programs detached when the agent went away";
  expect_flows(allowed, "no agent");
  expect_dropped(denied, "no agent");
  {
    TF_ASSERT_OK_AND_ASSIGN(auto pinned, datapath::PinnedMaps::open(pin_dir()));
    expect_verdict(*pinned.conns, denied.server_cookie, TF_VERDICT_DENY,
                   TF_REASON_DOMAIN_NOT_ALLOWED);
    expect_verdict(*pinned.conns, allowed.server_cookie, TF_VERDICT_ALLOW, TF_REASON_ALIAS_DOMAIN);
  }
  // Tracking goes on with no agent: a new connection is recorded.
  TF_ASSERT_OK_AND_ASSIGN(auto meanwhile, connect_pair(family, listener.get(), port.port));
  TF_ASSERT_OK(inside.leave());

  TF_ASSERT_OK(open());
  EXPECT_EQ(dp().pin_state(), datapath::PinState::kReused);
  expect_verdict(conns(), denied.client_cookie, TF_VERDICT_ALLOW, TF_REASON_LOCAL_DOMAIN);
  expect_verdict(conns(), denied.server_cookie, TF_VERDICT_DENY, TF_REASON_DOMAIN_NOT_ALLOWED);
  expect_verdict(conns(), allowed.client_cookie, TF_VERDICT_ALLOW, TF_REASON_LOCAL_DOMAIN);
  expect_verdict(conns(), allowed.server_cookie, TF_VERDICT_ALLOW, TF_REASON_ALIAS_DOMAIN);
  for (std::uint64_t cookie : {pending.client_cookie, pending.server_cookie,
                               meanwhile.client_cookie, meanwhile.server_cookie}) {
    TF_ASSERT_OK_AND_ASSIGN(auto entry, conns().lookup(cookie));
    ASSERT_TRUE(entry.has_value()) << "cookie " << cookie;
    EXPECT_EQ(entry->verdict, TF_VERDICT_PENDING);
  }
  TF_ASSERT_OK_AND_ASSIGN(auto all, conns().snapshot());
  EXPECT_EQ(all.size(), 8u);
  TF_ASSERT_OK_AND_ASSIGN(attached, cgroup().attached_programs());
  EXPECT_EQ(attached, 3u) << "the reopen attached a second set instead of swapping";
  expect_flows(allowed, "second agent");
  expect_dropped(denied, "second agent");
  TF_ASSERT_OK_AND_ASSIGN(auto stats_after, stats());
  EXPECT_EQ(stats_after.counters[TF_COUNTER_CONN_TRACKED],
            stats_before.counters[TF_COUNTER_CONN_TRACKED] + 2)
      << "counters are pinned too and keep counting";

  close();
  TF_ASSERT_OK(datapath::Datapath::uninstall(pin_dir()));
  EXPECT_FALSE(fs::exists(pin_dir())) << "uninstall left " << pin_dir();
  // The kernel releases an unpinned link from a workqueue: detaching
  // follows the unlink shortly, not within it.
  EXPECT_TRUE(wait_until(
      [&] {
        auto n = cgroup().attached_programs();
        return n && *n == 0;
      },
      kIoTimeout))
      << "programs still attached after uninstall";
  // Nothing holds a PENDING connection any more.
  expect_flows(pending, "uninstalled");
  TF_ASSERT_OK(send_all(pending.server.get(), "back"));
  TF_ASSERT_OK_AND_ASSIGN(auto back, recv_text(pending.client.get(), 4));
  EXPECT_EQ(back, "back");
}

INSTANTIATE_TEST_SUITE_P(Loopback, RestartTest, ::testing::Values(AF_INET, AF_INET6),
                         [](const auto& info) { return std::string(family_name(info.param)); });

}  // namespace
}  // namespace trustfence::testing::kernel
