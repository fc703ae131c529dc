#include "trustfence/tls/svid_verifier.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "support/test_ca.hpp"

namespace {

using namespace std::chrono_literals;
using trustfence::identity::TrustDomain;
using trustfence::test::CertSpec;
using trustfence::test::chain_of;
using trustfence::test::Issued;
using trustfence::test::kCaKeyUsage;
using trustfence::test::kLeafKeyUsage;
using trustfence::test::kNoKeyUsage;
using trustfence::test::leaf_spec;
using trustfence::test::TestCa;
using trustfence::test::TimePoint;
using trustfence::test::Validity;
using trustfence::tls::Bundle;
using trustfence::tls::BundleSet;
using trustfence::tls::Chain;
using trustfence::tls::SvidVerifier;

constexpr const char* kTeamA = "team-a.gke.local";
constexpr const char* kTeamB = "team-b.eks.local";
constexpr const char* kIdA = "spiffe://team-a.gke.local/ns/finance/sa/api";
constexpr const char* kIdB = "spiffe://team-b.eks.local/ns/auth/sa/auth";

TrustDomain td(const char* name) { return TrustDomain::parse(name).value(); }

// Two clusters, each with its own root and intermediate; team-c has a CA
// but no bundle here; team-d has a bundle that trusts nothing.
struct World {
  TimePoint now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  TestCa root_a = TestCa::root(kTeamA);
  TestCa intermediate_a = root_a.intermediate("team-a intermediate");
  TestCa root_b = TestCa::root(kTeamB);
  TestCa intermediate_b = root_b.intermediate("team-b intermediate");
  TestCa root_c = TestCa::root("team-c.local");
  BundleSet bundles;

  World() {
    add(kTeamA, root_a);
    add(kTeamB, root_b);
    EXPECT_TRUE(bundles.add(Bundle{td("team-d.local"), {}, std::nullopt, std::nullopt}));
  }
  void add(const char* name, const TestCa& root) {
    Chain authorities;
    authorities.push_back(root.share());
    EXPECT_TRUE(bundles.add(Bundle{td(name), std::move(authorities), std::nullopt, std::nullopt}));
  }

  // leaf from team-a's intermediate, presented with it
  Chain chain_a(const CertSpec& spec) const {
    const Issued leaf = intermediate_a.issue(spec);
    return chain_of({leaf.cert.get(), intermediate_a.cert()});
  }
  Validity window(std::chrono::seconds from, std::chrono::seconds to) const {
    return Validity{now + from, now + to};
  }
};

const World& world() {
  static const auto* instance = new World();
  return *instance;
}

CertSpec with(const char* uri, std::function<void(CertSpec&)> change) {
  CertSpec spec = leaf_spec(uri);
  change(spec);
  return spec;
}

struct VerifyCase {
  std::string name;
  std::function<Chain(const World&)> chain;
  tf_reason reason;         // TF_REASON_NONE: verifies
  std::string detail_part;  // part of the failure detail, naming the step
};

void PrintTo(const VerifyCase& c, std::ostream* os) { *os << c.name; }

class Verify : public ::testing::TestWithParam<VerifyCase> {};

TEST_P(Verify, GivesTheNamedReasonOfTheFirstFailingStep) {
  const World& w = world();
  const SvidVerifier verifier(w.bundles, [&w] { return w.now; });
  const auto result = verifier.verify(GetParam().chain(w));
  if (GetParam().reason == TF_REASON_NONE) {
    ASSERT_TRUE(result.has_value()) << result.error().detail;
    return;
  }
  ASSERT_FALSE(result.has_value()) << result->id.str();
  EXPECT_EQ(result.error().reason, GetParam().reason) << result.error().detail;
  EXPECT_NE(result.error().detail.find(GetParam().detail_part), std::string::npos)
      << result.error().detail;
}

const VerifyCase kCases[] = {
    // Accepted.
    {"LeafAndIntermediate", [](const World& w) { return w.chain_a(leaf_spec(kIdA)); },
     TF_REASON_NONE, ""},
    {"LeafIssuedByTheRoot",
     [](const World& w) {
       const Issued leaf = w.root_a.issue(leaf_spec(kIdA));
       return chain_of({leaf.cert.get()});
     },
     TF_REASON_NONE, ""},
    {"DnsSansBesideTheUriSan",
     [](const World& w) {
       return w.chain_a(with(kIdA, [](CertSpec& s) { s.dns_names = {"api.finance.svc"}; }));
     },
     TF_REASON_NONE, ""},
    {"TeamBLeafAgainstTeamBBundle",
     [](const World& w) {
       const Issued leaf = w.intermediate_b.issue(leaf_spec(kIdB));
       return chain_of({leaf.cert.get(), w.intermediate_b.cert()});
     },
     TF_REASON_NONE, ""},

    // Chain present, leaf first.
    {"EmptyChain", [](const World&) { return Chain{}; }, TF_REASON_INVALID_SVID, "chain:"},
    {"WrongOrderIntermediateFirst",
     [](const World& w) {
       const Issued leaf = w.intermediate_a.issue(leaf_spec(kIdA));
       return chain_of({w.intermediate_a.cert(), leaf.cert.get()});
     },
     TF_REASON_INVALID_SVID, "leaf SAN"},

    // Exactly one URI SAN.
    {"NoSanAtAll",
     [](const World& w) { return w.chain_a(with(kIdA, [](CertSpec& s) { s.uris = {}; })); },
     TF_REASON_INVALID_SVID, "no subjectAltName"},
    {"DnsSanOnly",
     [](const World& w) {
       return w.chain_a(with(kIdA, [](CertSpec& s) {
         s.uris = {};
         s.dns_names = {"api.finance.svc"};
       }));
     },
     TF_REASON_INVALID_SVID, "0 URI SANs"},
    {"TwoUriSans",
     [](const World& w) {
       return w.chain_a(with(kIdA, [](CertSpec& s) { s.uris.push_back(kIdB); }));
     },
     TF_REASON_INVALID_SVID, "2 URI SANs"},
    {"TwoUriSansSameDomain",
     [](const World& w) {
       return w.chain_a(
           with(kIdA, [](CertSpec& s) { s.uris.push_back("spiffe://team-a.gke.local/ns/x"); }));
     },
     TF_REASON_INVALID_SVID, "2 URI SANs"},

    // A valid SPIFFE ID with a non-root path.
    {"NotSpiffeScheme",
     [](const World& w) { return w.chain_a(leaf_spec("https://team-a.gke.local/ns/x")); },
     TF_REASON_INVALID_SVID, "leaf SPIFFE ID"},
    {"UppercaseTrustDomain",
     [](const World& w) { return w.chain_a(leaf_spec("spiffe://Team-A.gke.local/ns/x")); },
     TF_REASON_INVALID_SVID, "leaf SPIFFE ID"},
    {"TrailingSlash",
     [](const World& w) { return w.chain_a(leaf_spec("spiffe://team-a.gke.local/ns/x/")); },
     TF_REASON_INVALID_SVID, "leaf SPIFFE ID"},
    {"RootPathId", [](const World& w) { return w.chain_a(leaf_spec("spiffe://team-a.gke.local")); },
     TF_REASON_INVALID_SVID, "trust domain's own ID"},

    // Leaf not a CA, digitalSignature, no keyCertSign / cRLSign.
    {"LeafIsACa",
     [](const World& w) { return w.chain_a(with(kIdA, [](CertSpec& s) { s.is_ca = true; })); },
     TF_REASON_INVALID_SVID, "is a CA"},
    {"LeafWithoutKeyUsage",
     [](const World& w) {
       return w.chain_a(with(kIdA, [](CertSpec& s) { s.key_usage = kNoKeyUsage; }));
     },
     TF_REASON_INVALID_SVID, "no keyUsage"},
    {"LeafWithoutDigitalSignature",
     [](const World& w) {
       return w.chain_a(with(kIdA, [](CertSpec& s) { s.key_usage = KU_KEY_ENCIPHERMENT; }));
     },
     TF_REASON_INVALID_SVID, "lacks digitalSignature"},
    {"LeafWithKeyCertSign",
     [](const World& w) {
       return w.chain_a(
           with(kIdA, [](CertSpec& s) { s.key_usage = kLeafKeyUsage | KU_KEY_CERT_SIGN; }));
     },
     TF_REASON_INVALID_SVID, "keyCertSign"},
    {"LeafWithCrlSign",
     [](const World& w) {
       return w.chain_a(with(kIdA, [](CertSpec& s) { s.key_usage = kLeafKeyUsage | KU_CRL_SIGN; }));
     },
     TF_REASON_INVALID_SVID, "cRLSign"},
    // The order is the spec's: a CA leaf with two URIs fails on the URIs.
    {"SeveralUrisWinsOverCaLeaf",
     [](const World& w) {
       return w.chain_a(with(kIdA, [](CertSpec& s) {
         s.is_ca = true;
         s.uris.push_back(kIdB);
       }));
     },
     TF_REASON_INVALID_SVID, "2 URI SANs"},

    // The bundle of the leaf's own trust domain.
    {"NoBundleForTheDomain",
     [](const World& w) {
       const Issued leaf = w.root_c.issue(leaf_spec("spiffe://team-c.local/ns/x"));
       return chain_of({leaf.cert.get()});
     },
     TF_REASON_NO_BUNDLE, "team-c.local"},
    // no-bundle comes before the chain: an untrusted chain still says no-bundle
    {"NoBundleBeforeChain",
     [](const World& w) { return w.chain_a(leaf_spec("spiffe://team-c.local/ns/x")); },
     TF_REASON_NO_BUNDLE, "bundle:"},

    // Chains to that bundle only; intermediates are CAs.
    {"SpoofTeamAIntermediateClaimsTeamB", [](const World& w) { return w.chain_a(leaf_spec(kIdB)); },
     TF_REASON_BAD_CHAIN, "team-b.eks.local"},
    {"SpoofTeamARootClaimsTeamB",
     [](const World& w) {
       const Issued leaf = w.root_a.issue(leaf_spec(kIdB));
       return chain_of({leaf.cert.get()});
     },
     TF_REASON_BAD_CHAIN, "chain:"},
    {"EmptyBundleTrustsNothing",
     [](const World& w) { return w.chain_a(leaf_spec("spiffe://team-d.local/ns/x")); },
     TF_REASON_BAD_CHAIN, "chain:"},
    {"MissingIntermediate",
     [](const World& w) {
       const Issued leaf = w.intermediate_a.issue(leaf_spec(kIdA));
       return chain_of({leaf.cert.get()});
     },
     TF_REASON_BAD_CHAIN, "chain:"},
    {"IntermediateNotACa",
     [](const World& w) {
       CertSpec spec = with("spiffe://team-a.gke.local/ns/fake-ca",
                            [](CertSpec& s) { s.key_usage = kCaKeyUsage | KU_DIGITAL_SIGNATURE; });
       const TestCa not_ca(w.intermediate_a.issue(spec));
       const Issued leaf = not_ca.issue(leaf_spec(kIdA));
       return chain_of({leaf.cert.get(), not_ca.cert(), w.intermediate_a.cert()});
     },
     TF_REASON_BAD_CHAIN, "not a CA"},
    {"IntermediateWithoutBasicConstraints",
     [](const World& w) {
       CertSpec spec = with(kIdA, [](CertSpec& s) {
         s.basic_constraints = false;
         s.key_usage = kCaKeyUsage;
         s.uris = {};
       });
       const TestCa not_ca(w.root_a.issue(spec));
       const Issued leaf = not_ca.issue(leaf_spec(kIdA));
       return chain_of({leaf.cert.get(), not_ca.cert()});
     },
     TF_REASON_BAD_CHAIN, "not a CA"},
    {"ForgedIssuerName",
     [](const World& w) {
       // Same subject name as team-a's intermediate, another key.
       const TestCa forged = w.root_c.intermediate("team-a intermediate");
       const Issued leaf = forged.issue(leaf_spec(kIdA));
       return chain_of({leaf.cert.get(), w.intermediate_a.cert()});
     },
     TF_REASON_BAD_CHAIN, "chain:"},
    {"SelfSignedLeaf",
     [](const World&) {
       const Issued leaf = trustfence::test::mint(leaf_spec(kIdA), nullptr);
       return chain_of({leaf.cert.get()});
     },
     TF_REASON_BAD_CHAIN, "chain:"},

    // Valid at the injected clock's time.
    {"ExpiredLeaf", [](const World& w) { return w.chain_a(leaf_spec(kIdA, w.window(-48h, -1s))); },
     TF_REASON_EXPIRED, "expired at"},
    {"NotYetValidLeaf",
     [](const World& w) { return w.chain_a(leaf_spec(kIdA, w.window(10s, 48h))); },
     TF_REASON_EXPIRED, "not valid before"},
    {"ExpiredIntermediate",
     [](const World& w) {
       const TestCa old = w.root_a.intermediate("old intermediate", w.window(-48h, -1h));
       const Issued leaf = old.issue(leaf_spec(kIdA, w.window(-47h, 48h)));
       return chain_of({leaf.cert.get(), old.cert()});
     },
     TF_REASON_EXPIRED, "certificate 1"},
    // A spoof that is also expired is a spoof: the chain is checked first.
    {"ExpiredSpoofIsBadChain",
     [](const World& w) { return w.chain_a(leaf_spec(kIdB, w.window(-48h, -1s))); },
     TF_REASON_BAD_CHAIN, "chain:"},
};

INSTANTIATE_TEST_SUITE_P(Table, Verify, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return info.param.name; });

TEST(Verify, ReturnsTheIdAndTheEarliestNotAfter) {
  const World& w = world();
  const SvidVerifier verifier(w.bundles, [&w] { return w.now; });
  const auto result = verifier.verify(w.chain_a(leaf_spec(kIdA, w.window(-1h, 2h))));
  ASSERT_TRUE(result.has_value()) << result.error().detail;
  EXPECT_EQ(result->id.str(), kIdA);
  EXPECT_EQ(result->not_after, w.now + 2h);
}

TEST(Verify, UsesTheInjectedClockNotTheSystemClock) {
  const World& w = world();
  const Chain chain = w.chain_a(leaf_spec(kIdA, w.window(-1h, 2h)));
  EXPECT_TRUE(SvidVerifier(w.bundles, [&w] { return w.now; }).verify(chain));
  const auto later = SvidVerifier(w.bundles, [&w] { return w.now + 3h; }).verify(chain);
  ASSERT_FALSE(later.has_value());
  EXPECT_EQ(later.error().reason, TF_REASON_EXPIRED);
  const auto earlier = SvidVerifier(w.bundles, [&w] { return w.now - 2h; }).verify(chain);
  ASSERT_FALSE(earlier.has_value());
  EXPECT_EQ(earlier.error().reason, TF_REASON_EXPIRED);
}

TEST(Verify, AnyAuthorityOfTheBundleIsATrustAnchor) {
  const World& w = world();
  BundleSet bundles;
  Chain authorities;
  authorities.push_back(w.intermediate_a.share());  // not the root
  ASSERT_TRUE(bundles.add(Bundle{td(kTeamA), std::move(authorities), std::nullopt, std::nullopt}));
  const SvidVerifier verifier(bundles, [&w] { return w.now; });
  const auto result = verifier.verify(w.chain_a(leaf_spec(kIdA)));
  ASSERT_TRUE(result.has_value()) << result.error().detail;
  // ... and only those: team-a's root issued this one directly.
  const Issued leaf = w.root_a.issue(leaf_spec(kIdA));
  const auto other = verifier.verify(chain_of({leaf.cert.get()}));
  ASSERT_FALSE(other.has_value());
  EXPECT_EQ(other.error().reason, TF_REASON_BAD_CHAIN);
}

TEST(Verify, ChainLongerThanTheLimitIsInvalid) {
  const World& w = world();
  const SvidVerifier verifier(w.bundles, [&w] { return w.now; });
  Chain chain = w.chain_a(leaf_spec(kIdA));
  while (chain.size() <= trustfence::tls::kMaxChainLength) {
    chain.push_back(trustfence::tls::share(w.intermediate_a.cert()));
  }
  const auto result = verifier.verify(chain);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().reason, TF_REASON_INVALID_SVID);
}

}  // namespace
