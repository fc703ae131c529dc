#pragma once

// Wire format of the agent-to-agent attestation channel, and an incremental
// decoder for its byte stream. Channel input is hostile until proven
// otherwise: every size is capped, every field is checked on decode, and a
// decoder that saw one bad byte stays failed so the channel gets closed.
//
// A frame is a fixed header then the payload, integers in network byte order:
//
//   magic u32 "tfat" | version u8 | type u8 | payload length u16 | payload
//
// Payloads (strings are a u16 length then that many bytes, no terminator):
//
//   attest-request   request_id u64, tuple, workload SPIFFE ID (string)
//   attest-response  request_id u64, workload SPIFFE ID (string, empty =
//                    none), verdict u8, reason u8
//   ping, pong       nonce u64
//
//   tuple = family u8 (4 or 6), local addr [16], local port u16,
//           remote addr [16], remote port u16; IPv4 as v4-mapped IPv6.

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "trustfence/abi.h"
#include "trustfence/common/result.hpp"
#include "trustfence/identity/spiffe_id.hpp"

namespace trustfence::attest {

inline constexpr std::uint32_t kFrameMagic = 0x74666174;  // "tfat"
inline constexpr std::uint8_t kFrameVersion = 1;
inline constexpr std::size_t kFrameHeaderSize = 8;
// Total frame size, header included: the most a decoder ever buffers.
inline constexpr std::size_t kMaxFrameSize = 8192;
inline constexpr std::size_t kMaxPayloadSize = kMaxFrameSize - kFrameHeaderSize;

enum class MessageType : std::uint8_t {
  kAttestRequest = 1,
  kAttestResponse = 2,
  kPing = 3,
  kPong = 4,
};

// Wire values, not the host's AF_* numbers.
enum class Family : std::uint8_t {
  kIpv4 = 4,
  kIpv6 = 6,
};

using Address = std::array<std::uint8_t, 16>;

// A connection's endpoints as one side sees them, the wire twin of tf_tuple.
// Addresses are in network byte order, IPv4 as ::ffff:a.b.c.d; ports in host
// byte order here and network byte order on the wire.
struct ConnTuple {
  Family family = Family::kIpv4;
  Address local_addr{};
  std::uint16_t local_port = 0;
  Address remote_addr{};
  std::uint16_t remote_port = 0;

  // The same connection seen from the other end: local and remote swapped.
  ConnTuple mirrored() const;

  auto operator<=>(const ConnTuple&) const = default;
};

// Builds the wire tuple of a datapath tuple; fails on a family that is
// neither AF_INET nor AF_INET6.
Result<ConnTuple> from_abi(const tf_tuple& tuple);
tf_tuple to_abi(const ConnTuple& tuple);

// "This is my socket's 4-tuple and the workload behind it; do you hold the
// other end?" Sent by the agent holding the active (client) socket.
struct AttestRequest {
  std::uint64_t request_id = 0;
  ConnTuple tuple;  // as the sender sees it
  identity::SpiffeId workload_id;

  bool operator==(const AttestRequest&) const = default;
};

// The responder's own decision on the connection of request_id.
struct AttestResponse {
  std::uint64_t request_id = 0;
  std::optional<identity::SpiffeId> workload_id;  // none: no workload found
  tf_verdict verdict = TF_VERDICT_DENY;           // ALLOW or DENY, never PENDING
  tf_reason reason = TF_REASON_NONE;

  bool operator==(const AttestResponse&) const = default;
};

struct Ping {
  std::uint64_t nonce = 0;
  bool operator==(const Ping&) const = default;
};

struct Pong {
  std::uint64_t nonce = 0;
  bool operator==(const Pong&) const = default;
};

using Message = std::variant<AttestRequest, AttestResponse, Ping, Pong>;

// Every way a frame can be rejected, one name each, for logs and counters.
enum class Violation : std::uint8_t {
  kBadMagic,
  kUnsupportedVersion,
  kUnknownType,
  kOversize,
  kTruncatedPayload,
  kTrailingPayload,
  kInvalidSpiffeId,
  kBadFamily,
  kBadAddress,
  kBadVerdict,
  kBadReason,
  kCount
};

std::string_view to_string(Violation violation);

// One complete frame. The message must be valid as decode checks it
// (verdict ALLOW or DENY, reason of the closed set, IPv4 addresses
// v4-mapped); the identity types are valid by construction.
std::vector<std::uint8_t> encode(const Message& message);

// Decodes exactly one whole frame, header included; bytes before or after
// it are an error.
Result<Message> decode_frame(std::span<const std::uint8_t> frame);

// Splits a byte stream into messages, whatever its chunking. Holds at most
// one partial frame (<= kMaxFrameSize bytes); after the first violation it
// stays failed and consumes nothing more.
class FrameDecoder {
 public:
  // Consumes bytes from the front of input until one message is complete
  // (returned) or input is exhausted (nullopt). Call again while input is not
  // empty: one chunk may hold several frames.
  Result<std::optional<Message>> next(std::span<const std::uint8_t>& input);

  bool failed() const { return violation_.has_value(); }
  std::optional<Violation> violation() const { return violation_; }
  // Bytes of a frame begun but not finished: a peer stalled here is timed out.
  std::size_t buffered() const { return buffer_.size(); }

 private:
  Result<std::optional<Message>> fail_with(Violation violation, Error error);

  std::vector<std::uint8_t> buffer_;
  std::size_t frame_size_ = 0;             // 0 until the header is in
  MessageType type_ = MessageType::kPing;  // of the frame being read, once its header is in
  std::optional<Violation> violation_;
  std::optional<Error> error_;
};

}  // namespace trustfence::attest
