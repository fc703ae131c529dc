#include "trustfence/tls/verify_cache.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/test_ca.hpp"

namespace {

using namespace std::chrono_literals;
using trustfence::identity::TrustDomain;
using trustfence::test::chain_of;
using trustfence::test::Issued;
using trustfence::test::leaf_spec;
using trustfence::test::TestCa;
using trustfence::test::TimePoint;
using trustfence::test::Validity;
using trustfence::tls::Bundle;
using trustfence::tls::BundleSet;
using trustfence::tls::Chain;
using trustfence::tls::SvidVerifier;
using trustfence::tls::VerifyCache;

TrustDomain team_a() { return TrustDomain::parse("team-a.gke.local").value(); }

class VerifyCacheTest : public ::testing::Test {
 protected:
  VerifyCacheTest() { trust(root_); }

  void trust(const TestCa& root) {
    Chain authorities;
    authorities.push_back(root.share());
    ASSERT_TRUE(bundles_.add(Bundle{team_a(), std::move(authorities), std::nullopt, std::nullopt}));
  }
  Chain chain(const std::string& path, Validity validity) const {
    const Issued leaf =
        intermediate_.issue(leaf_spec("spiffe://team-a.gke.local" + path, validity));
    return chain_of({leaf.cert.get(), intermediate_.cert()});
  }
  Chain chain(const std::string& path = "/ns/x/sa/y") const {
    return chain(path, Validity{start_ - 1h, start_ + 24h});
  }

  TimePoint start_ = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  TimePoint now_ = start_;
  TestCa root_ = TestCa::root("team-a.gke.local");
  TestCa intermediate_ = root_.intermediate();
  BundleSet bundles_;
  SvidVerifier verifier_{bundles_, [this] { return now_; }};
};

TEST_F(VerifyCacheTest, SecondVerificationIsAHitWithTheSameResult) {
  VerifyCache cache(verifier_);
  const Chain presented = chain();
  const auto first = cache.verify(presented);
  const auto second = cache.verify(presented);
  ASSERT_TRUE(first.has_value()) << first.error().detail;
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->id, first->id);
  EXPECT_EQ(second->not_after, first->not_after);
  EXPECT_EQ(cache.stats().hits, 1u);
  EXPECT_EQ(cache.stats().misses, 1u);
}

TEST_F(VerifyCacheTest, SameDerParsedAgainIsTheSameKey) {
  VerifyCache cache(verifier_);
  const Chain presented = chain();
  ASSERT_TRUE(cache.verify(presented));
  const auto reparsed = trustfence::tls::parse_pem_chain(trustfence::test::to_pem(presented));
  ASSERT_TRUE(reparsed.has_value());
  ASSERT_TRUE(cache.verify(*reparsed));
  EXPECT_EQ(cache.stats().hits, 1u);
}

TEST_F(VerifyCacheTest, AnotherChainIsAMiss) {
  VerifyCache cache(verifier_);
  ASSERT_TRUE(cache.verify(chain("/ns/x/sa/one")));
  const auto other = cache.verify(chain("/ns/x/sa/two"));
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(other->id.path(), "/ns/x/sa/two");
  EXPECT_EQ(cache.stats().hits, 0u);
  EXPECT_EQ(cache.stats().misses, 2u);
  EXPECT_EQ(cache.size(), 2u);
}

TEST_F(VerifyCacheTest, FailuresAreNotCached) {
  VerifyCache cache(verifier_);
  const Chain not_yet = chain("/ns/x", Validity{start_ + 1h, start_ + 2h});
  const auto early = cache.verify(not_yet);
  ASSERT_FALSE(early.has_value());
  EXPECT_EQ(early.error().reason, TF_REASON_EXPIRED);
  EXPECT_EQ(cache.size(), 0u);
  now_ = start_ + 90min;
  EXPECT_TRUE(cache.verify(not_yet).has_value());
}

TEST_F(VerifyCacheTest, NeverServedPastNotAfter) {
  VerifyCache cache(verifier_);
  const Chain presented = chain("/ns/x", Validity{start_ - 1h, start_ + 10min});
  ASSERT_TRUE(cache.verify(presented));
  now_ = start_ + 10min;
  ASSERT_TRUE(cache.verify(presented));  // notAfter itself is still valid
  EXPECT_EQ(cache.stats().hits, 1u);
  now_ = start_ + 10min + 1s;
  const auto expired = cache.verify(presented);
  ASSERT_FALSE(expired.has_value());
  EXPECT_EQ(expired.error().reason, TF_REASON_EXPIRED);
  EXPECT_EQ(cache.stats().hits, 1u);
  EXPECT_EQ(cache.size(), 0u);
}

TEST_F(VerifyCacheTest, ClockGoingBackIsAMiss) {
  VerifyCache cache(verifier_);
  const Chain presented = chain();
  ASSERT_TRUE(cache.verify(presented));
  now_ = start_ - 2h;  // before the leaf's notBefore
  const auto result = cache.verify(presented);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().reason, TF_REASON_EXPIRED);
}

TEST_F(VerifyCacheTest, BoundedLeastRecentlyUsedFirst) {
  VerifyCache cache(verifier_, 2);
  const Chain one = chain("/one");
  const Chain two = chain("/two");
  const Chain three = chain("/three");
  ASSERT_TRUE(cache.verify(one));
  ASSERT_TRUE(cache.verify(two));
  ASSERT_TRUE(cache.verify(one));  // hit: "two" is now the least recently used
  ASSERT_TRUE(cache.verify(three));
  EXPECT_EQ(cache.size(), 2u);
  const auto before = cache.stats();
  ASSERT_TRUE(cache.verify(one));
  EXPECT_EQ(cache.stats().hits, before.hits + 1);
  ASSERT_TRUE(cache.verify(two));
  EXPECT_EQ(cache.stats().misses, before.misses + 1);
  EXPECT_EQ(cache.size(), 2u);
}

TEST_F(VerifyCacheTest, DefaultBoundIsTheConstant) {
  VerifyCache cache(verifier_);
  const Chain presented = chain();
  for (std::size_t i = 0; i < 3; ++i) ASSERT_TRUE(cache.verify(presented));
  EXPECT_LE(cache.size(), VerifyCache::kMaxEntries);
  static_assert(VerifyCache::kMaxEntries > 0);
}

TEST_F(VerifyCacheTest, BundleChangeInvalidatesEveryEntry) {
  VerifyCache cache(verifier_);
  const Chain presented = chain();
  ASSERT_TRUE(cache.verify(presented));
  ASSERT_TRUE(cache.verify(presented));
  EXPECT_EQ(cache.stats().hits, 1u);
  // Rotated: team-a now trusts another root only.
  trust(TestCa::root("team-a.gke.local rotated"));
  const auto result = cache.verify(presented);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().reason, TF_REASON_BAD_CHAIN);
  EXPECT_EQ(cache.stats().hits, 1u);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(Fingerprint, DiffersByChainAndOrder) {
  const TestCa root = TestCa::root("team-a.gke.local");
  const Issued leaf = root.issue(leaf_spec("spiffe://team-a.gke.local/x"));
  const auto leaf_only = trustfence::tls::fingerprint(chain_of({leaf.cert.get()}));
  const auto forward = trustfence::tls::fingerprint(chain_of({leaf.cert.get(), root.cert()}));
  const auto backward = trustfence::tls::fingerprint(chain_of({root.cert(), leaf.cert.get()}));
  ASSERT_TRUE(leaf_only && forward && backward);
  EXPECT_NE(*leaf_only, *forward);
  EXPECT_NE(*forward, *backward);
  EXPECT_EQ(*forward, *trustfence::tls::fingerprint(chain_of({leaf.cert.get(), root.cert()})));
  EXPECT_FALSE(trustfence::tls::fingerprint(Chain{}).has_value());
}

}  // namespace
