// SpiffeId::parse and TrustDomain::parse on arbitrary bytes: never crash,
// and whatever parses is already canonical and re-parses to itself.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "trustfence/identity/spiffe_id.hpp"

using trustfence::identity::SpiffeId;
using trustfence::identity::TrustDomain;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void fuzz_id(std::string_view input) {
  auto id = SpiffeId::parse(input);
  if (!id) {
    check(!id.error().message.empty());
    return;
  }
  std::string s = id->str();
  check(s == input);  // the parser accepts only the canonical form
  check(s.size() <= SpiffeId::kMaxLength);
  auto again = SpiffeId::parse(s);
  check(again.has_value() && *again == *id);
  check(id->member_of(id->trust_domain()));
  check(id->has_workload_path() == !id->path().empty());
  auto td = TrustDomain::parse(id->trust_domain().name());
  check(td.has_value() && *td == id->trust_domain());
}

void fuzz_domain(std::string_view input) {
  auto td = TrustDomain::parse(input);
  if (!td) {
    check(!td.error().message.empty());
    return;
  }
  check(td->name() == input && input.size() <= TrustDomain::kMaxLength);
  auto id = SpiffeId::parse(td->id_string());
  check(id.has_value() && id->trust_domain() == *td && !id->has_workload_path());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  fuzz_id(input);
  fuzz_domain(input);
  return 0;
}
