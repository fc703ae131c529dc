// parse_pem_chain on arbitrary bytes, then SvidVerifier::verify (directly
// and through a VerifyCache) against a fixed bundle set minted once at
// startup: never crash, every rejection named, and anything that verifies
// is a workload of a domain we hold a bundle for.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "support/test_ca.hpp"
#include "trustfence/tls/bundle.hpp"
#include "trustfence/tls/svid_verifier.hpp"
#include "trustfence/tls/verify_cache.hpp"

using trustfence::identity::TrustDomain;
using trustfence::test::TestCa;
using trustfence::tls::Bundle;
using trustfence::tls::BundleSet;
using trustfence::tls::SvidVerifier;
using trustfence::tls::VerifyCache;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

struct Harness {
  std::chrono::system_clock::time_point now = std::chrono::system_clock::now();
  TestCa root = TestCa::root("team-a.gke.local");
  TestCa intermediate = root.intermediate();
  BundleSet bundles;
  SvidVerifier verifier{bundles, [this] { return now; }};
  VerifyCache cache{verifier, 64};

  Harness() {
    trustfence::tls::Chain authorities;
    authorities.push_back(root.share());
    check(bundles
              .add(Bundle{TrustDomain::parse("team-a.gke.local").value(), std::move(authorities),
                          std::nullopt, std::nullopt})
              .has_value());
    check(bundles.add(Bundle{TrustDomain::parse("team-b.eks.local").value(), {}, {}, {}})
              .has_value());
    // The success path works, or every "no" below means nothing.
    const auto leaf =
        intermediate.issue(trustfence::test::leaf_spec("spiffe://team-a.gke.local/ns/x/sa/y"));
    check(verifier.verify(trustfence::test::chain_of({leaf.cert.get(), intermediate.cert()}))
              .has_value());
  }
};

Harness& harness() {
  static auto* instance = new Harness();
  return *instance;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Harness& h = harness();
  const auto chain =
      trustfence::tls::parse_pem_chain(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!chain) {
    check(!chain.error().message.empty());
    return 0;
  }
  check(!chain->empty() && chain->size() <= trustfence::tls::kMaxChainLength);

  const auto direct = h.verifier.verify(*chain);
  const auto cached = h.cache.verify(*chain);
  check(direct.has_value() == cached.has_value());
  if (!direct) {
    check(!direct.error().detail.empty());
    check(direct.error().reason == cached.error().reason);
    return 0;
  }
  check(direct->id == cached->id && direct->not_after == cached->not_after);
  check(h.bundles.find(direct->id.trust_domain()) != nullptr);
  check(direct->id.has_workload_path());
  return 0;
}
