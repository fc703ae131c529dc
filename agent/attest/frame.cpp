#include "trustfence/attest/frame.hpp"

#include <sys/socket.h>

#include <fmt/format.h>
#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include "trustfence/common/verdict.hpp"

namespace trustfence::attest {
namespace {

using identity::SpiffeId;

// The largest payload the encoder can make must fit under the cap, so a
// valid message is never refused for its size.
constexpr std::size_t kTupleSize = 1 + 16 + 2 + 16 + 2;
constexpr std::size_t kMaxRequestPayload = 8 + kTupleSize + 2 + SpiffeId::kMaxLength;
constexpr std::size_t kMaxResponsePayload = 8 + 2 + SpiffeId::kMaxLength + 1 + 1;
static_assert(kMaxRequestPayload <= kMaxPayloadSize);
static_assert(kMaxResponsePayload <= kMaxPayloadSize);
static_assert(kMaxPayloadSize <= 0xffff, "payload length is a u16 on the wire");
static_assert(std::to_underlying(Violation::kCount) == 11, "name every violation");

constexpr std::array<std::uint8_t, 12> kV4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// A named rejection; becomes an Error at the API edge.
struct Rejection {
  Violation violation;
  std::string detail;
};

template <typename T>
using Decoded = std::expected<T, Rejection>;

std::unexpected<Rejection> reject(Violation violation, std::string detail) {
  return std::unexpected(Rejection{violation, std::move(detail)});
}

Error to_error(const Rejection& r) {
  Errc code =
      r.violation == Violation::kUnsupportedVersion ? Errc::kUnsupported : Errc::kInvalidArgument;
  return Error{
      code, fmt::format("attestation frame rejected ({}): {}", to_string(r.violation), r.detail)};
}

class Writer {
 public:
  void u8(std::uint8_t v) { out_.push_back(v); }
  void u16(std::uint16_t v) {
    u8(static_cast<std::uint8_t>(v >> 8));
    u8(static_cast<std::uint8_t>(v));
  }
  void u32(std::uint32_t v) {
    u16(static_cast<std::uint16_t>(v >> 16));
    u16(static_cast<std::uint16_t>(v));
  }
  void u64(std::uint64_t v) {
    u32(static_cast<std::uint32_t>(v >> 32));
    u32(static_cast<std::uint32_t>(v));
  }
  void bytes(std::span<const std::uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void string(std::string_view s) {
    u16(static_cast<std::uint16_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  std::vector<std::uint8_t>& out() { return out_; }

 private:
  std::vector<std::uint8_t> out_;
};

// Reads a payload front to back; every read is bounds-checked.
class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> in) : in_(in) {}

  Decoded<std::uint64_t> uint(std::size_t width, std::string_view field) {
    if (in_.size() < width) {
      return reject(
          Violation::kTruncatedPayload,
          fmt::format("payload ends inside {} ({} of {} bytes)", field, in_.size(), width));
    }
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < width; ++i) v = (v << 8) | in_[i];
    in_ = in_.subspan(width);
    return v;
  }
  Decoded<std::span<const std::uint8_t>> bytes(std::size_t n, std::string_view field) {
    if (in_.size() < n) {
      return reject(Violation::kTruncatedPayload,
                    fmt::format("payload ends inside {} ({} of {} bytes)", field, in_.size(), n));
    }
    auto b = in_.first(n);
    in_ = in_.subspan(n);
    return b;
  }
  Decoded<void> finish() const {
    if (!in_.empty()) {
      return reject(Violation::kTrailingPayload,
                    fmt::format("{} bytes after the last field", in_.size()));
    }
    return {};
  }

 private:
  std::span<const std::uint8_t> in_;
};

void write_tuple(Writer& w, const ConnTuple& t) {
  w.u8(std::to_underlying(t.family));
  w.bytes(t.local_addr);
  w.u16(t.local_port);
  w.bytes(t.remote_addr);
  w.u16(t.remote_port);
}

bool is_v4_mapped(const Address& a) {
  return std::equal(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), a.begin());
}

Decoded<Address> read_address(Reader& r, Family family, std::string_view field) {
  auto b = r.bytes(16, field);
  if (!b) return std::unexpected(b.error());
  Address a;
  std::ranges::copy(*b, a.begin());
  if (family == Family::kIpv4 && !is_v4_mapped(a)) {
    return reject(Violation::kBadAddress,
                  fmt::format("{} of an IPv4 tuple is not v4-mapped (::ffff:a.b.c.d)", field));
  }
  return a;
}

Decoded<ConnTuple> read_tuple(Reader& r) {
  auto family = r.uint(1, "family");
  if (!family) return std::unexpected(family.error());
  ConnTuple t;
  if (*family == std::to_underlying(Family::kIpv4)) {
    t.family = Family::kIpv4;
  } else if (*family == std::to_underlying(Family::kIpv6)) {
    t.family = Family::kIpv6;
  } else {
    return reject(Violation::kBadFamily, fmt::format("family {} is neither 4 nor 6", *family));
  }
  auto local_addr = read_address(r, t.family, "local address");
  if (!local_addr) return std::unexpected(local_addr.error());
  auto local_port = r.uint(2, "local port");
  if (!local_port) return std::unexpected(local_port.error());
  auto remote_addr = read_address(r, t.family, "remote address");
  if (!remote_addr) return std::unexpected(remote_addr.error());
  auto remote_port = r.uint(2, "remote port");
  if (!remote_port) return std::unexpected(remote_port.error());
  t.local_addr = *local_addr;
  t.local_port = static_cast<std::uint16_t>(*local_port);
  t.remote_addr = *remote_addr;
  t.remote_port = static_cast<std::uint16_t>(*remote_port);
  return t;
}

// A length-prefixed SPIFFE ID; an empty string is none when optional.
Decoded<std::optional<SpiffeId>> read_spiffe_id(Reader& r, bool optional) {
  auto len = r.uint(2, "SPIFFE ID length");
  if (!len) return std::unexpected(len.error());
  if (*len > SpiffeId::kMaxLength) {
    return reject(Violation::kInvalidSpiffeId,
                  fmt::format("SPIFFE ID of {} bytes, over {}", *len, SpiffeId::kMaxLength));
  }
  if (*len == 0 && optional) return std::nullopt;
  auto b = r.bytes(*len, "SPIFFE ID");
  if (!b) return std::unexpected(b.error());
  std::string_view text(reinterpret_cast<const char*>(b->data()), b->size());
  auto id = SpiffeId::parse(text);
  if (!id) return reject(Violation::kInvalidSpiffeId, id.error().message);
  return std::optional<SpiffeId>(std::move(*id));
}

Decoded<Message> read_request(Reader& r) {
  auto request_id = r.uint(8, "request id");
  if (!request_id) return std::unexpected(request_id.error());
  auto tuple = read_tuple(r);
  if (!tuple) return std::unexpected(tuple.error());
  auto id = read_spiffe_id(r, false);
  if (!id) return std::unexpected(id.error());
  return AttestRequest{*request_id, *tuple, std::move(**id)};
}

Decoded<Message> read_response(Reader& r) {
  auto request_id = r.uint(8, "request id");
  if (!request_id) return std::unexpected(request_id.error());
  auto id = read_spiffe_id(r, true);
  if (!id) return std::unexpected(id.error());
  auto verdict_byte = r.uint(1, "verdict");
  if (!verdict_byte) return std::unexpected(verdict_byte.error());
  // A response carries a decision: pending is not one.
  auto verdict = verdict_from_byte(static_cast<unsigned>(*verdict_byte));
  if (!verdict || *verdict == TF_VERDICT_PENDING) {
    return reject(Violation::kBadVerdict,
                  fmt::format("verdict {} is neither allow nor deny", *verdict_byte));
  }
  auto reason_byte = r.uint(1, "reason");
  if (!reason_byte) return std::unexpected(reason_byte.error());
  auto reason = reason_from_byte(static_cast<unsigned>(*reason_byte));
  if (!reason) {
    return reject(Violation::kBadReason,
                  fmt::format("reason {} is outside the closed set (< {})", *reason_byte,
                              std::to_underlying(TF_REASON_COUNT)));
  }
  return AttestResponse{*request_id, std::move(*id), *verdict, *reason};
}

template <typename T>
Decoded<Message> read_nonce(Reader& r) {
  auto nonce = r.uint(8, "nonce");
  if (!nonce) return std::unexpected(nonce.error());
  return T{*nonce};
}

struct Header {
  MessageType type;
  std::size_t payload_size;
};

// Needs kFrameHeaderSize bytes.
Decoded<Header> read_header(std::span<const std::uint8_t> in) {
  Reader r(in.first(kFrameHeaderSize));
  auto magic = *r.uint(4, "magic");
  auto version = *r.uint(1, "version");
  auto type = *r.uint(1, "type");
  auto length = *r.uint(2, "payload length");
  if (magic != kFrameMagic) {
    return reject(Violation::kBadMagic,
                  fmt::format("magic {:#010x}, want {:#010x}", magic, kFrameMagic));
  }
  if (version != kFrameVersion) {
    return reject(Violation::kUnsupportedVersion,
                  fmt::format("version {}, this agent speaks {}", version, kFrameVersion));
  }
  if (type < std::to_underlying(MessageType::kAttestRequest) ||
      type > std::to_underlying(MessageType::kPong)) {
    return reject(Violation::kUnknownType, fmt::format("message type {}", type));
  }
  if (length > kMaxPayloadSize) {
    return reject(Violation::kOversize, fmt::format("payload of {} bytes, over the {}-byte cap",
                                                    length, kMaxPayloadSize));
  }
  return Header{static_cast<MessageType>(type), static_cast<std::size_t>(length)};
}

Decoded<Message> read_payload(MessageType type, std::span<const std::uint8_t> payload) {
  Reader r(payload);
  Decoded<Message> message = reject(Violation::kUnknownType, "unreachable");
  switch (type) {
    case MessageType::kAttestRequest:
      message = read_request(r);
      break;
    case MessageType::kAttestResponse:
      message = read_response(r);
      break;
    case MessageType::kPing:
      message = read_nonce<Ping>(r);
      break;
    case MessageType::kPong:
      message = read_nonce<Pong>(r);
      break;
  }
  if (!message) return message;
  if (auto end = r.finish(); !end) return std::unexpected(end.error());
  return message;
}

MessageType type_of(const Message& message) {
  return std::visit(
      [](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, AttestRequest>) return MessageType::kAttestRequest;
        if constexpr (std::is_same_v<T, AttestResponse>) return MessageType::kAttestResponse;
        if constexpr (std::is_same_v<T, Ping>) return MessageType::kPing;
        if constexpr (std::is_same_v<T, Pong>) return MessageType::kPong;
      },
      message);
}

void write_payload(Writer& w, const Message& message) {
  std::visit(
      [&w](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, AttestRequest>) {
          w.u64(m.request_id);
          write_tuple(w, m.tuple);
          w.string(m.workload_id.str());
        } else if constexpr (std::is_same_v<T, AttestResponse>) {
          w.u64(m.request_id);
          w.string(m.workload_id ? m.workload_id->str() : std::string());
          w.u8(static_cast<std::uint8_t>(m.verdict));
          w.u8(static_cast<std::uint8_t>(m.reason));
        } else {
          w.u64(m.nonce);
        }
      },
      message);
}

}  // namespace

ConnTuple ConnTuple::mirrored() const {
  return ConnTuple{family, remote_addr, remote_port, local_addr, local_port};
}

Result<ConnTuple> from_abi(const tf_tuple& tuple) {
  ConnTuple t;
  auto copy = [&](const __u32(&words)[4], Address& out) {
    if (t.family == Family::kIpv6) {
      std::memcpy(out.data(), words, out.size());
    } else {
      std::ranges::copy(kV4MappedPrefix, out.begin());
      std::memcpy(out.data() + kV4MappedPrefix.size(), &words[0], 4);
    }
  };
  if (tuple.family == AF_INET) {
    t.family = Family::kIpv4;
  } else if (tuple.family == AF_INET6) {
    t.family = Family::kIpv6;
  } else {
    return fail(Errc::kInvalidArgument,
                fmt::format("connection tuple of address family {}, neither AF_INET nor AF_INET6",
                            tuple.family));
  }
  copy(tuple.local_addr, t.local_addr);
  copy(tuple.remote_addr, t.remote_addr);
  t.local_port = tuple.local_port;
  t.remote_port = tuple.remote_port;
  // An IPv4 connection of a dual-stack socket ([::] server) is reported
  // with v4-mapped IPv6 addresses; its other end may be a plain IPv4
  // socket. One connection, one wire form: IPv4.
  auto mapped = [](const Address& a) {
    return std::equal(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), a.begin());
  };
  if (t.family == Family::kIpv6 && mapped(t.local_addr) && mapped(t.remote_addr))
    t.family = Family::kIpv4;
  return t;
}

tf_tuple to_abi(const ConnTuple& t) {
  tf_tuple out{};
  auto copy = [&](const Address& in, __u32(&words)[4]) {
    if (t.family == Family::kIpv6) {
      std::memcpy(words, in.data(), in.size());
    } else {
      std::memcpy(&words[0], in.data() + kV4MappedPrefix.size(), 4);
    }
  };
  out.family = t.family == Family::kIpv6 ? AF_INET6 : AF_INET;
  copy(t.local_addr, out.local_addr);
  copy(t.remote_addr, out.remote_addr);
  out.local_port = t.local_port;
  out.remote_port = t.remote_port;
  return out;
}

std::string_view to_string(Violation violation) {
  switch (violation) {
    case Violation::kBadMagic:
      return "bad-magic";
    case Violation::kUnsupportedVersion:
      return "unsupported-version";
    case Violation::kUnknownType:
      return "unknown-type";
    case Violation::kOversize:
      return "oversize";
    case Violation::kTruncatedPayload:
      return "truncated-payload";
    case Violation::kTrailingPayload:
      return "trailing-payload";
    case Violation::kInvalidSpiffeId:
      return "invalid-spiffe-id";
    case Violation::kBadFamily:
      return "bad-family";
    case Violation::kBadAddress:
      return "bad-address";
    case Violation::kBadVerdict:
      return "bad-verdict";
    case Violation::kBadReason:
      return "bad-reason";
    case Violation::kCount:
      break;
  }
  return "unknown";
}

std::vector<std::uint8_t> encode(const Message& message) {
  Writer w;
  w.u32(kFrameMagic);
  w.u8(kFrameVersion);
  w.u8(std::to_underlying(type_of(message)));
  w.u16(0);  // payload length, patched below
  write_payload(w, message);
  auto& out = w.out();
  std::size_t payload_size = out.size() - kFrameHeaderSize;
  out[6] = static_cast<std::uint8_t>(payload_size >> 8);
  out[7] = static_cast<std::uint8_t>(payload_size);
  return std::move(out);
}

Result<Message> decode_frame(std::span<const std::uint8_t> frame) {
  if (frame.size() < kFrameHeaderSize) {
    return std::unexpected(to_error(
        {Violation::kTruncatedPayload, fmt::format("{} bytes, shorter than the {}-byte header",
                                                   frame.size(), kFrameHeaderSize)}));
  }
  auto header = read_header(frame);
  if (!header) return std::unexpected(to_error(header.error()));
  std::size_t want = kFrameHeaderSize + header->payload_size;
  if (frame.size() != want) {
    Violation v = frame.size() < want ? Violation::kTruncatedPayload : Violation::kTrailingPayload;
    return std::unexpected(
        to_error({v, fmt::format("frame of {} bytes, header says {}", frame.size(), want)}));
  }
  auto message = read_payload(header->type, frame.subspan(kFrameHeaderSize));
  if (!message) return std::unexpected(to_error(message.error()));
  return std::move(*message);
}

Result<std::optional<Message>> FrameDecoder::fail_with(Violation violation, Error error) {
  violation_ = violation;
  error_ = std::move(error);
  buffer_.clear();
  buffer_.shrink_to_fit();
  return std::unexpected(*error_);
}

Result<std::optional<Message>> FrameDecoder::next(std::span<const std::uint8_t>& input) {
  if (error_) return std::unexpected(*error_);
  if (buffer_.capacity() == 0) buffer_.reserve(kMaxFrameSize);  // never grows past the cap
  while (!input.empty()) {
    std::size_t want = frame_size_ != 0 ? frame_size_ : kFrameHeaderSize;
    std::size_t take = std::min(want - buffer_.size(), input.size());
    buffer_.insert(buffer_.end(), input.begin(), input.begin() + static_cast<std::ptrdiff_t>(take));
    input = input.subspan(take);
    if (buffer_.size() < want) break;
    if (frame_size_ == 0) {
      auto header = read_header(buffer_);
      if (!header) {
        return fail_with(header.error().violation, to_error(header.error()));
      }
      type_ = header->type;
      frame_size_ = kFrameHeaderSize + header->payload_size;
      if (buffer_.size() < frame_size_) continue;
    }
    auto message = read_payload(type_, std::span(buffer_).subspan(kFrameHeaderSize));
    buffer_.clear();
    frame_size_ = 0;
    if (!message) {
      return fail_with(message.error().violation, to_error(message.error()));
    }
    return std::optional<Message>(std::move(*message));
  }
  return std::optional<Message>();
}

}  // namespace trustfence::attest
