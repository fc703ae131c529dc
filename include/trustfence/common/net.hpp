#pragma once

// IP addresses, CIDRs and socket addresses as values, parsed strictly from
// the text of a config key. Every address is held as 16 bytes in network
// order, IPv4 as ::ffff:a.b.c.d, the layout of tf_tuple and the wire.

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "trustfence/common/result.hpp"

namespace trustfence::net {

using AddressBytes = std::array<std::uint8_t, 16>;

class IpAddress {
 public:
  // "10.0.0.1" or "fd00::1" (no brackets).
  static Result<IpAddress> parse(std::string_view text);
  static IpAddress from_bytes(const AddressBytes& bytes) { return IpAddress(bytes); }
  // tf_tuple's layout: IPv4 in word 0 when family is AF_INET.
  static IpAddress from_words(const std::uint32_t words[4], int family);

  const AddressBytes& bytes() const { return bytes_; }
  bool is_v4() const;
  int family() const { return is_v4() ? AF_INET : AF_INET6; }
  std::string str() const;  // "10.0.0.1", "fd00::1"

  auto operator<=>(const IpAddress&) const = default;

 private:
  explicit IpAddress(const AddressBytes& bytes) : bytes_(bytes) {}
  AddressBytes bytes_{};
};

class Cidr {
 public:
  // "10.0.0.0/8", "fd00::/64", or one address ("10.0.0.1" = /32).
  static Result<Cidr> parse(std::string_view text);
  bool contains(const IpAddress& address) const;
  unsigned prefix_bits() const { return bits_; }  // of the 128-bit form
  std::string str() const;

 private:
  Cidr(IpAddress base, unsigned bits) : base_(base), bits_(bits) {}
  IpAddress base_;
  unsigned bits_;
};

class SocketAddress {
 public:
  // "10.0.0.1:7400" or "[fd00::1]:7400"; the port 1..65535.
  static Result<SocketAddress> parse(std::string_view text);
  SocketAddress(IpAddress ip, std::uint16_t port) : ip_(ip), port_(port) {}

  const IpAddress& ip() const { return ip_; }
  std::uint16_t port() const { return port_; }
  // For connect()/bind(): sockaddr_in for IPv4, sockaddr_in6 otherwise.
  socklen_t to_sockaddr(sockaddr_storage& out) const;
  std::string str() const;

  auto operator<=>(const SocketAddress&) const = default;

 private:
  IpAddress ip_;
  std::uint16_t port_;
};

}  // namespace trustfence::net
