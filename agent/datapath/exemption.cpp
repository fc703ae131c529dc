#include "trustfence/datapath/exemption.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace trustfence::datapath {
namespace {

Result<unsigned> parse_number(std::string_view text, unsigned max, std::string_view what,
                              std::string_view rule) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > max)
    return fail(Errc::kInvalidArgument, "exempt '" + std::string(rule) + "': " + std::string(what) +
                                            " '" + std::string(text) +
                                            "' is not a number from 0 to " + std::to_string(max));
  return value;
}

}  // namespace

Result<Exemption> Exemption::parse(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return fail(Errc::kInvalidArgument, "exempt '" + std::string(text) + "': " + why);
  };
  std::string_view rest = text;
  std::string_view addr, prefix, port;
  if (rest.starts_with('[')) {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return bad("missing ']' after the IPv6 address");
    addr = rest.substr(1, close - 1);
    rest.remove_prefix(close + 1);
    if (rest.starts_with('/')) {
      auto colon = rest.find(':');
      prefix = rest.substr(1, colon == std::string_view::npos ? colon : colon - 1);
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon);
    }
    if (rest.starts_with(':')) {
      port = rest.substr(1);
      if (port.empty()) return bad("empty port after ':'");
    } else if (!rest.empty()) {
      return bad("unexpected '" + std::string(rest) + "'");
    }
  } else if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    addr = rest.substr(0, slash);
    auto after = rest.substr(slash + 1);
    auto colon = after.find(':');
    prefix = after.substr(0, colon);
    if (colon != std::string_view::npos) port = after.substr(colon + 1);
    if (colon != std::string_view::npos && port.empty()) return bad("empty port after ':'");
  } else if (std::count(rest.begin(), rest.end(), ':') == 1) {
    auto colon = rest.find(':');
    addr = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (port.empty()) return bad("empty port after ':'");
  } else {
    addr = rest;
  }

  Exemption ex;
  std::string addr_str(addr);
  unsigned char bytes[16] = {};
  unsigned addr_bits = 0;
  bool v4 = false;
  if (inet_pton(AF_INET, addr_str.c_str(), bytes + 12) == 1) {
    bytes[10] = bytes[11] = 0xff;
    addr_bits = 32;
    v4 = true;
  } else if (inet_pton(AF_INET6, addr_str.c_str(), bytes) == 1) {
    addr_bits = 128;
  } else {
    return bad("'" + addr_str + "' is not an IPv4 or IPv6 address");
  }
  unsigned prefix_len = addr_bits;
  if (!prefix.empty() || text.find('/') != std::string_view::npos) {
    auto parsed = parse_number(prefix, addr_bits, "prefix length", text);
    if (!parsed) return std::unexpected(parsed.error());
    prefix_len = *parsed;
  }
  unsigned port_value = 0;
  if (!port.empty()) {
    auto parsed = parse_number(port, 65535, "port", text);
    if (!parsed) return std::unexpected(parsed.error());
    port_value = *parsed;
  }
  // Clear the host bits so the canonical text and the trie key agree.
  unsigned total = (v4 ? 96 : 0) + prefix_len;
  for (unsigned bit = total; bit < 128; ++bit) bytes[bit / 8] &= ~(0x80u >> (bit % 8));

  ex.key.prefixlen = TF_EXEMPT_PORT_BITS + total;
  ex.key.port = htons(static_cast<std::uint16_t>(port_value));
  std::memcpy(ex.key.addr, bytes, sizeof(bytes));

  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? bytes + 12 : bytes, buf, sizeof(buf));
  std::string canonical = v4 ? buf : "[" + std::string(buf) + "]";
  canonical += "/" + std::to_string(prefix_len);
  if (port_value) canonical += ":" + std::to_string(port_value);
  ex.text = canonical;
  return ex;
}

}  // namespace trustfence::datapath
