// parse_spiffe_bundle on arbitrary bytes: never crash, every rejection
// named, and a bundle that parses is within bounds and loads into a
// BundleSet.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "trustfence/tls/bundle.hpp"

using trustfence::identity::TrustDomain;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const TrustDomain td = TrustDomain::parse("team-a.gke.local").value();
  auto bundle = trustfence::tls::parse_spiffe_bundle(
      td, std::string_view(reinterpret_cast<const char*>(data), size));
  if (!bundle) {
    check(!bundle.error().message.empty());
    return 0;
  }
  check(bundle->trust_domain == td);
  check(bundle->authorities.size() <= trustfence::tls::kMaxBundleAuthorities);
  for (const auto& cert : bundle->authorities) check(cert != nullptr);
  check(!bundle->refresh_hint || *bundle->refresh_hint >= 0);

  trustfence::tls::BundleSet set;
  check(set.add(std::move(*bundle)).has_value());
  check(set.store(td) != nullptr);
  return 0;
}
