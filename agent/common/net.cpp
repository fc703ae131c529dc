#include "trustfence/common/net.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <optional>

namespace trustfence::net {
namespace {

constexpr std::uint8_t kV4Prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::unexpected<Error> bad(std::string_view text, const std::string& why) {
  return fail(Errc::kInvalidArgument, "'" + std::string(text) + "': " + why);
}

std::optional<unsigned> parse_number(std::string_view text, unsigned max) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > max)
    return std::nullopt;
  return value;
}

}  // namespace

Result<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.size() >= INET6_ADDRSTRLEN) return bad(text, "not an IPv4 or IPv6 address");
  std::string s(text);
  AddressBytes bytes{};
  if (inet_pton(AF_INET, s.c_str(), bytes.data() + 12) == 1) {
    std::memcpy(bytes.data(), kV4Prefix, sizeof(kV4Prefix));
    return IpAddress(bytes);
  }
  if (inet_pton(AF_INET6, s.c_str(), bytes.data()) == 1) return IpAddress(bytes);
  return bad(text, "not an IPv4 or IPv6 address");
}

IpAddress IpAddress::from_words(const std::uint32_t words[4], int family) {
  AddressBytes bytes{};
  if (family == AF_INET) {
    std::memcpy(bytes.data(), kV4Prefix, sizeof(kV4Prefix));
    std::memcpy(bytes.data() + 12, &words[0], 4);
  } else {
    std::memcpy(bytes.data(), words, 16);
  }
  return IpAddress(bytes);
}

bool IpAddress::is_v4() const { return std::memcmp(bytes_.data(), kV4Prefix, 12) == 0; }

std::string IpAddress::str() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (is_v4())
    inet_ntop(AF_INET, bytes_.data() + 12, buf, sizeof(buf));
  else
    inet_ntop(AF_INET6, bytes_.data(), buf, sizeof(buf));
  return buf;
}

Result<Cidr> Cidr::parse(std::string_view text) {
  auto slash = text.find('/');
  auto ip = IpAddress::parse(text.substr(0, slash));
  if (!ip) return bad(text, "not a CIDR (address/prefix)");
  // The prefix counts bits of the address as written: ::ffff:10.0.0.0/104
  // is 10.0.0.0/8, though both are held as IPv4.
  bool v4_text = text.substr(0, slash).find(':') == std::string_view::npos;
  unsigned max = v4_text ? 32 : 128;
  unsigned prefix = max;
  if (slash != std::string_view::npos) {
    auto parsed = parse_number(text.substr(slash + 1), max);
    if (!parsed) return bad(text, "prefix length must be 0.." + std::to_string(max));
    prefix = *parsed;
  }
  unsigned bits = (v4_text ? 96 : 0) + prefix;
  AddressBytes bytes = ip->bytes();
  for (unsigned bit = bits; bit < 128; ++bit) bytes[bit / 8] &= ~(0x80u >> (bit % 8));
  return Cidr(IpAddress::from_bytes(bytes), bits);
}

bool Cidr::contains(const IpAddress& address) const {
  const auto& a = address.bytes();
  const auto& b = base_.bytes();
  unsigned full = bits_ / 8;
  if (std::memcmp(a.data(), b.data(), full) != 0) return false;
  if (bits_ % 8 == 0) return true;
  std::uint8_t mask = static_cast<std::uint8_t>(0xff00u >> (bits_ % 8));
  return (a[full] & mask) == (b[full] & mask);
}

std::string Cidr::str() const {
  return base_.str() + "/" + std::to_string(base_.is_v4() ? bits_ - 96 : bits_);
}

Result<SocketAddress> SocketAddress::parse(std::string_view text) {
  std::string_view host, port;
  if (text.starts_with('[')) {
    auto close = text.find("]:");
    if (close == std::string_view::npos) return bad(text, "expected [IPv6]:PORT");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad(text, "expected HOST:PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return bad(text, "an IPv6 address goes in brackets: [fd00::1]:7400");
  }
  auto ip = IpAddress::parse(host);
  if (!ip) return bad(text, "'" + std::string(host) + "' is not an IPv4 or IPv6 address");
  auto number = parse_number(port, 65535);
  if (!number || *number == 0) return bad(text, "port must be 1..65535");
  return SocketAddress(*ip, static_cast<std::uint16_t>(*number));
}

socklen_t SocketAddress::to_sockaddr(sockaddr_storage& out) const {
  std::memset(&out, 0, sizeof(out));
  if (ip_.is_v4()) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&out);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port_);
    std::memcpy(&sin->sin_addr, ip_.bytes().data() + 12, 4);
    return sizeof(sockaddr_in);
  }
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&out);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(port_);
  std::memcpy(&sin6->sin6_addr, ip_.bytes().data(), 16);
  return sizeof(sockaddr_in6);
}

std::string SocketAddress::str() const {
  return (ip_.is_v4() ? ip_.str() : "[" + ip_.str() + "]") + ":" + std::to_string(port_);
}

}  // namespace trustfence::net
