#pragma once

// Exemptions: CIDR plus optional port, e.g. "10.96.0.10/32:53",
// "[fd00::1]:443", "fd00::/8", "127.0.0.1". A port matches either end of a
// connection with a remote address in the CIDR.

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "trustfence/abi.h"
#include "trustfence/common/result.hpp"

namespace trustfence::datapath {

struct Exemption {
  tf_exempt_key key{};  // ready for tf_exempt
  std::string text;     // canonical form, for logs

  static Result<Exemption> parse(std::string_view text);
  bool operator==(const Exemption& other) const { return text == other.text; }
};

}  // namespace trustfence::datapath
