#pragma once

// Frames for BPF_PROG_TEST_RUN on cgroup_skb programs: a 14-byte Ethernet
// header (the kernel takes skb->protocol from it and strips it, so the
// program sees data from the IP header on), IPv4 or IPv6, then TCP or UDP.
// Headers are well formed (lengths, checksums, DF on IPv4) unless a case
// asks for a defect by name: a truncated or malformed TCP header.
//
//   auto frame = PacketBuilder::tcp({"10.1.0.1", 40000}, {"10.2.0.2", 443})
//                    .flags(kTcpAck | kTcpPsh).payload(100).build();

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace trustfence::testing {

inline constexpr std::uint8_t kTcpFin = 0x01;
inline constexpr std::uint8_t kTcpSyn = 0x02;
inline constexpr std::uint8_t kTcpRst = 0x04;
inline constexpr std::uint8_t kTcpPsh = 0x08;
inline constexpr std::uint8_t kTcpAck = 0x10;

inline constexpr std::size_t kEthernetHeaderBytes = 14;
inline constexpr std::size_t kTcpHeaderBytes = 20;
inline constexpr std::size_t kUdpHeaderBytes = 8;

struct Endpoint {
  std::string address;  // IPv4 or IPv6 literal
  std::uint16_t port = 0;
};

class PacketBuilder {
 public:
  static PacketBuilder tcp(Endpoint src, Endpoint dst) {
    return PacketBuilder(IPPROTO_TCP, std::move(src), std::move(dst));
  }
  static PacketBuilder udp(Endpoint src, Endpoint dst) {
    return PacketBuilder(IPPROTO_UDP, std::move(src), std::move(dst));
  }

  PacketBuilder& flags(std::uint8_t tcp_flags) {
    tcp_flags_ = tcp_flags;
    return *this;
  }
  PacketBuilder& payload(std::size_t bytes) {
    payload_bytes_ = bytes;
    return *this;
  }
  // IPv6 only: an 8-byte hop-by-hop options header (PadN) before L4.
  PacketBuilder& hop_by_hop() {
    hop_by_hop_ = true;
    return *this;
  }
  // The first fragment of a larger datagram: IPv4 with more-fragments set,
  // IPv6 with a fragment header (after hop-by-hop, if any).
  PacketBuilder& fragment() {
    fragment_ = true;
    return *this;
  }
  // Defect: the frame ends after this many bytes of the L4 header (no
  // payload); the IP length fields agree with the short frame.
  PacketBuilder& truncate_l4(std::size_t bytes) {
    truncated_l4_bytes_ = bytes;
    return *this;
  }
  // Defect: a TCP data offset (in 32-bit words) that disagrees with the
  // 20-byte header actually sent.
  PacketBuilder& tcp_data_offset(std::uint8_t words) {
    tcp_data_offset_ = words;
    return *this;
  }

  std::vector<std::uint8_t> build() const {
    bool v6 = family_ == AF_INET6;
    if (hop_by_hop_ && !v6) throw std::invalid_argument("packet: hop-by-hop needs IPv6");
    std::vector<std::uint8_t> l4 = transport();
    if (truncated_l4_bytes_ && *truncated_l4_bytes_ < l4.size()) l4.resize(*truncated_l4_bytes_);
    std::vector<std::uint8_t> ip = v6 ? ipv6_header(l4.size()) : ipv4_header(l4.size());

    // Ethernet: locally administered MACs, then the EtherType.
    std::vector<std::uint8_t> frame(kEthernetHeaderBytes + ip.size() + l4.size(), 0);
    frame[0] = 0x02;
    frame[5] = 0x02;
    frame[6] = 0x02;
    frame[11] = 0x01;
    put16(frame, 12, v6 ? 0x86dd : 0x0800);
    std::copy(ip.begin(), ip.end(), frame.begin() + kEthernetHeaderBytes);
    std::copy(l4.begin(), l4.end(), frame.begin() + kEthernetHeaderBytes + ip.size());
    return frame;
  }

 private:
  PacketBuilder(std::uint8_t protocol, Endpoint src, Endpoint dst)
      : protocol_(protocol), src_port_(src.port), dst_port_(dst.port) {
    family_ = parse_address(src.address, src_addr_);
    if (parse_address(dst.address, dst_addr_) != family_)
      throw std::invalid_argument("packet: " + src.address + " and " + dst.address +
                                  " are not of one address family");
  }

  static int parse_address(const std::string& text, std::uint8_t (&out)[16]) {
    if (inet_pton(AF_INET, text.c_str(), out) == 1) return AF_INET;
    if (inet_pton(AF_INET6, text.c_str(), out) == 1) return AF_INET6;
    throw std::invalid_argument("packet: '" + text + "' is not an IPv4 or IPv6 address");
  }

  static void put16(std::vector<std::uint8_t>& out, std::size_t at, std::uint16_t value) {
    out[at] = static_cast<std::uint8_t>(value >> 8);
    out[at + 1] = static_cast<std::uint8_t>(value);
  }

  // RFC 1071 ones' complement sum, folded, not yet inverted.
  static std::uint32_t sum16(const std::uint8_t* data, std::size_t len, std::uint32_t sum = 0) {
    for (std::size_t i = 0; i + 1 < len; i += 2) sum += (data[i] << 8) | data[i + 1];
    if (len % 2) sum += data[len - 1] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum;
  }

  std::size_t address_bytes() const { return family_ == AF_INET6 ? 16 : 4; }

  std::vector<std::uint8_t> transport() const {
    std::vector<std::uint8_t> l4;
    if (protocol_ == IPPROTO_TCP) {
      l4.assign(kTcpHeaderBytes, 0);
      put16(l4, 0, src_port_);
      put16(l4, 2, dst_port_);
      put16(l4, 4, 0x1000);                                // sequence number
      put16(l4, 10, (tcp_flags_ & kTcpAck) ? 0x2000 : 0);  // acknowledgment number
      l4[12] = static_cast<std::uint8_t>(tcp_data_offset_.value_or(5) << 4);
      l4[13] = tcp_flags_;
      put16(l4, 14, 65535);  // window
    } else {
      l4.assign(kUdpHeaderBytes, 0);
      put16(l4, 0, src_port_);
      put16(l4, 2, dst_port_);
      put16(l4, 4, static_cast<std::uint16_t>(kUdpHeaderBytes + payload_bytes_));
    }
    for (std::size_t i = 0; i < payload_bytes_; ++i) l4.push_back(static_cast<std::uint8_t>(i));

    // Checksum over the pseudo-header (addresses, protocol, L4 length) and L4.
    std::uint32_t sum = sum16(src_addr_, address_bytes());
    sum = sum16(dst_addr_, address_bytes(), sum);
    sum += protocol_ + static_cast<std::uint32_t>(l4.size());
    sum = sum16(l4.data(), l4.size(), sum);
    std::uint16_t check = static_cast<std::uint16_t>(~sum);
    put16(l4, protocol_ == IPPROTO_TCP ? 16 : 6, check);
    return l4;
  }

  std::vector<std::uint8_t> ipv4_header(std::size_t l4_bytes) const {
    std::vector<std::uint8_t> ip(20, 0);
    ip[0] = 0x45;
    put16(ip, 2, static_cast<std::uint16_t>(ip.size() + l4_bytes));
    // DF, as Linux sets on TCP; or the first fragment (more fragments).
    put16(ip, 6, fragment_ ? 0x2000 : 0x4000);
    ip[8] = 64;
    ip[9] = protocol_;
    std::copy(src_addr_, src_addr_ + 4, ip.begin() + 12);
    std::copy(dst_addr_, dst_addr_ + 4, ip.begin() + 16);
    put16(ip, 10, static_cast<std::uint16_t>(~sum16(ip.data(), ip.size())));
    return ip;
  }

  std::vector<std::uint8_t> ipv6_header(std::size_t l4_bytes) const {
    std::size_t ext_bytes = (hop_by_hop_ ? 8 : 0) + (fragment_ ? 8 : 0);
    std::vector<std::uint8_t> ip(40 + ext_bytes, 0);
    ip[0] = 0x60;
    ip[7] = 64;
    std::copy(src_addr_, src_addr_ + 16, ip.begin() + 8);
    std::copy(dst_addr_, dst_addr_ + 16, ip.begin() + 24);
    std::size_t next_header_at = 6;
    std::size_t at = 40;
    if (hop_by_hop_) {
      // Length in 8-byte units beyond the first 8 (0); options: one PadN
      // of 4 bytes filling the 8.
      ip[next_header_at] = 0;
      next_header_at = at;
      ip[at + 2] = 1;
      ip[at + 3] = 4;
      at += 8;
    }
    if (fragment_) {
      // Offset 0 with more fragments to come: the first fragment.
      ip[next_header_at] = 44;
      next_header_at = at;
      put16(ip, at + 2, 0x0001);
      ip[at + 7] = 1;  // identification
      at += 8;
    }
    ip[next_header_at] = protocol_;
    put16(ip, 4, static_cast<std::uint16_t>(ext_bytes + l4_bytes));
    return ip;
  }

  std::uint8_t protocol_;
  int family_ = AF_INET;
  std::uint8_t src_addr_[16] = {};
  std::uint8_t dst_addr_[16] = {};
  std::uint16_t src_port_;
  std::uint16_t dst_port_;
  std::uint8_t tcp_flags_ = kTcpAck;
  std::size_t payload_bytes_ = 0;
  bool hop_by_hop_ = false;
  bool fragment_ = false;
  std::optional<std::size_t> truncated_l4_bytes_;
  std::optional<std::uint8_t> tcp_data_offset_;
};

}  // namespace trustfence::testing
