// Reload re-decisions of the attestor, without channels: connections
// decided before (as after a restart) are decided again by reconfigure().
// A verdict that stands only takes the new generation (a refresh, nothing
// for history or logs); a revoked one is a full decision.

#include "trustfence/attest/attestor.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "support/test_ca.hpp"
#include "trustfence/tls/bundle.hpp"
#include "trustfence/tls/svid_verifier.hpp"
#include "trustfence/tls/tls_stream.hpp"
#include "trustfence/tls/verify_cache.hpp"

namespace trustfence::attest {
namespace {

using identity::SpiffeId;
using identity::TrustDomain;

constexpr const char* kTeamA = "team-a.gke.local";
constexpr const char* kTeamB = "team-b.eks.local";
constexpr const char* kAgentId = "spiffe://team-a.gke.local/node/agent-1";

policy::PolicyRules rules(bool alias_b) {
  policy::PolicyRules r{
      .trust_domain = TrustDomain::parse(kTeamA).value(), .aliases = {}, .allow = {}, .deny = {}};
  if (alias_b) r.aliases.push_back(TrustDomain::parse(kTeamB).value());
  return r;
}

class AttestorReload : public ::testing::Test {
 protected:
  AttestorReload() {
    tls::Chain authorities;
    authorities.push_back(ca_.share());
    EXPECT_TRUE(bundles_.add(tls::Bundle{TrustDomain::parse(kTeamA).value(), std::move(authorities),
                                         std::nullopt, std::nullopt}));
    test::Issued leaf = ca_.issue(test::leaf_spec(kAgentId));
    identity_.emplace(
        tls::make_tls_identity(test::chain_of({leaf.cert.get()}), std::move(leaf.key)).value());
    client_.emplace(
        tls::TlsContext::create(tls::Role::kClient, *identity_, cache_, verifier_).value());
    server_.emplace(
        tls::TlsContext::create(tls::Role::kServer, *identity_, cache_, verifier_).value());
    attestor_.emplace(loop_, *client_, *server_, interner_, workloads_, options(1, true));
  }

  Attestor::Options options(std::uint32_t generation, bool alias_b) {
    return {.attestation = {},
            .rules = rules(alias_b),
            .generation = generation,
            .audit = false,
            .limits = {},
            .write_decisions = {}};
  }

  // An open connection allowed before, from peer (on a remote node).
  void allowed(datapath::Cookie cookie, const std::string& peer) {
    auto id = SpiffeId::parse(peer).value();
    auto decision = policy::Policy(rules(true)).decide(id);
    ASSERT_EQ(decision.verdict, TF_VERDICT_ALLOW);
    tf_conn conn{};
    conn.tuple.family = AF_INET;
    ::inet_pton(AF_INET, "10.0.0.1", &conn.tuple.local_addr[0]);
    ::inet_pton(AF_INET, "10.0.0.2", &conn.tuple.remote_addr[0]);
    conn.tuple.local_port = static_cast<std::uint16_t>(40000 + cookie);
    conn.tuple.remote_port = 443;
    conn.direction = TF_DIRECTION_OUTBOUND;
    conn.verdict = TF_VERDICT_ALLOW;
    conn.reason = decision.reason;
    conn.peer_id = interner_.intern(id.str());
    conn.peer_trust_domain = interner_.intern(id.trust_domain().name());
    conn.generation = 1;
    attestor_->on_new(cookie, conn);
  }

  std::map<datapath::Cookie, Decided> reload(bool alias_b) {
    attestor_->reconfigure(options(2, alias_b), *client_, *server_, workloads_, {});
    std::map<datapath::Cookie, Decided> by_cookie;
    for (auto& d : attestor_->take_decisions()) by_cookie.emplace(d.cookie, std::move(d));
    return by_cookie;
  }

  test::TestCa ca_ = test::TestCa::root(kTeamA);
  tls::BundleSet bundles_;
  tls::SvidVerifier verifier_{bundles_, [] { return std::chrono::system_clock::now(); }};
  tls::VerifyCache cache_{verifier_};
  std::optional<tls::TlsIdentity> identity_;
  std::optional<tls::TlsContext> client_;
  std::optional<tls::TlsContext> server_;
  runtime::EventLoop loop_ = runtime::EventLoop::create().value();
  identity::Interner interner_;
  WorkloadIdentities workloads_{SpiffeId::parse(kAgentId).value(), {}};
  std::optional<Attestor> attestor_;
};

TEST_F(AttestorReload, AVerdictThatStandsOnlyTakesTheNewGeneration) {
  allowed(1, "spiffe://team-a.gke.local/ns/web");
  allowed(2, "spiffe://team-a.gke.local/ns/web");
  allowed(3, "spiffe://team-b.eks.local/ns/api");
  auto decided = reload(true);
  ASSERT_EQ(decided.size(), 3u);
  for (const auto& [cookie, d] : decided) {
    EXPECT_TRUE(d.refresh) << cookie;
    EXPECT_EQ(d.update.verdict, TF_VERDICT_ALLOW) << cookie;
    EXPECT_EQ(d.update.generation, 2u) << cookie;
    EXPECT_EQ(d.update.peer_id, d.conn.peer_id) << cookie;
    EXPECT_EQ(d.update.reason, static_cast<tf_reason>(d.conn.reason)) << cookie;
    EXPECT_TRUE(d.peer.empty() && d.detail.empty()) << cookie;
  }
  EXPECT_EQ(attestor_->stats()["attestation"]["revoked"], 0);
}

TEST_F(AttestorReload, ARevokedConnectionIsAFullDecisionAndStaysRevoked) {
  allowed(1, "spiffe://team-a.gke.local/ns/web");
  allowed(2, "spiffe://team-b.eks.local/ns/api");
  allowed(3, "spiffe://team-b.eks.local/ns/api");
  auto decided = reload(false);  // the alias goes
  ASSERT_EQ(decided.size(), 3u);
  EXPECT_TRUE(decided.at(1).refresh);
  for (datapath::Cookie cookie : {2, 3}) {
    const auto& d = decided.at(cookie);
    EXPECT_FALSE(d.refresh) << cookie;
    EXPECT_EQ(d.update.verdict, TF_VERDICT_DENY) << cookie;
    EXPECT_EQ(d.update.reason, TF_REASON_REVOKED) << cookie;
    EXPECT_EQ(d.update.generation, 2u) << cookie;
    EXPECT_EQ(d.peer, "spiffe://team-b.eks.local/ns/api") << cookie;
    EXPECT_NE(d.detail.find("no longer allowed"), std::string::npos) << d.detail;
  }
  EXPECT_EQ(attestor_->stats()["attestation"]["revoked"], 2);
  // Revoked is final: the next reload, alias back or not, leaves them alone.
  auto again = reload(true);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(again.at(1).refresh);
}

}  // namespace
}  // namespace trustfence::attest
