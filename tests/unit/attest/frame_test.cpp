#include "trustfence/attest/frame.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace {

using trustfence::Errc;
using trustfence::attest::Address;
using trustfence::attest::AttestRequest;
using trustfence::attest::AttestResponse;
using trustfence::attest::ConnTuple;
using trustfence::attest::decode_frame;
using trustfence::attest::encode;
using trustfence::attest::Family;
using trustfence::attest::FrameDecoder;
using trustfence::attest::kFrameHeaderSize;
using trustfence::attest::kMaxFrameSize;
using trustfence::attest::kMaxPayloadSize;
using trustfence::attest::Message;
using trustfence::attest::Ping;
using trustfence::attest::Pong;
using trustfence::attest::Violation;
using trustfence::identity::SpiffeId;

using Bytes = std::vector<std::uint8_t>;

SpiffeId id(const std::string& text) { return *SpiffeId::parse(text); }

// A SPIFFE ID of exactly n bytes.
std::string id_text_of(std::size_t n) {
  std::string text = "spiffe://team-a.gke.local/";
  return text + std::string(n - text.size(), 'w');
}

Address v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
  return Address{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d};
}

Address v6(const char* text) {
  Address a{};
  inet_pton(AF_INET6, text, a.data());
  return a;
}

ConnTuple tuple_v4() { return {Family::kIpv4, v4(10, 0, 1, 2), 40112, v4(10, 0, 2, 3), 8080}; }
ConnTuple tuple_v6() { return {Family::kIpv6, v6("fd00::1:2"), 40112, v6("fd00:ffff::2:3"), 443}; }

AttestRequest request_v4() {
  return {0x0102030405060708, tuple_v4(), id("spiffe://team-a.gke.local/ns/web/sa/curl")};
}
AttestResponse response_allow() {
  return {0x0102030405060708, id("spiffe://team-b.eks.local/ns/api/sa/srv"), TF_VERDICT_ALLOW,
          TF_REASON_ALIAS_DOMAIN};
}

// Feeds bytes in the given chunk sizes (cycled); returns every message, or
// the first error.
struct Fed {
  std::vector<Message> messages;
  std::optional<Violation> violation;
};

Fed feed(FrameDecoder& decoder, const Bytes& bytes, const std::function<std::size_t()>& chunk) {
  Fed fed;
  std::span<const std::uint8_t> rest(bytes);
  while (!rest.empty()) {
    auto in = rest.first(std::min(chunk(), rest.size()));
    rest = rest.subspan(in.size());
    while (!in.empty()) {
      auto got = decoder.next(in);
      if (!got) {
        fed.violation = decoder.violation();
        return fed;
      }
      if (*got) fed.messages.push_back(std::move(**got));
    }
  }
  return fed;
}

Fed feed_all(const Bytes& bytes) {
  FrameDecoder decoder;
  return feed(decoder, bytes, [&] { return bytes.size() + 1; });
}

// --- round trips -----------------------------------------------------------

struct RoundTripRow {
  std::string name;
  Message message;
  friend void PrintTo(const RoundTripRow& row, std::ostream* os) { *os << row.name; }
};

class RoundTrip : public testing::TestWithParam<RoundTripRow> {};

TEST_P(RoundTrip, DecodesToWhatWasEncoded) {
  const Message& message = GetParam().message;
  Bytes frame = encode(message);
  ASSERT_LE(frame.size(), kMaxFrameSize);
  auto whole = decode_frame(frame);
  ASSERT_TRUE(whole.has_value()) << whole.error().message;
  EXPECT_EQ(*whole, message);
  EXPECT_EQ(encode(*whole), frame);

  FrameDecoder decoder;
  Fed fed = feed(decoder, frame, [] { return 1; });
  ASSERT_FALSE(fed.violation.has_value()) << to_string(*fed.violation);
  ASSERT_EQ(fed.messages.size(), 1u);
  EXPECT_EQ(fed.messages[0], message);
  EXPECT_EQ(decoder.buffered(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    EveryType, RoundTrip,
    testing::ValuesIn(std::vector<RoundTripRow>{
        {"request_ipv4", request_v4()},
        {"request_ipv6", AttestRequest{7, tuple_v6(), id("spiffe://team-b.eks.local/ns/a")}},
        {"request_trust_domain_id", AttestRequest{0, tuple_v4(), id("spiffe://team-c.local")}},
        {"request_2048_byte_id",
         AttestRequest{~0ull, tuple_v6(), id(id_text_of(SpiffeId::kMaxLength))}},
        {"request_max_ports",
         AttestRequest{1,
                       {Family::kIpv4, v4(255, 255, 255, 255), 65535, v4(0, 0, 0, 0), 0},
                       id("spiffe://td/x")}},
        {"response_allow", response_allow()},
        {"response_deny_no_id",
         AttestResponse{9, std::nullopt, TF_VERDICT_DENY, TF_REASON_DOMAIN_NOT_ALLOWED}},
        {"response_last_reason", AttestResponse{9, std::nullopt, TF_VERDICT_DENY,
                                                static_cast<tf_reason>(TF_REASON_COUNT - 1)}},
        {"response_2048_byte_id", AttestResponse{3, id(id_text_of(SpiffeId::kMaxLength)),
                                                 TF_VERDICT_ALLOW, TF_REASON_LOCAL_DOMAIN}},
        {"ping", Ping{0xdeadbeefcafef00d}},
        {"pong", Pong{0}},
    }),
    [](const auto& info) { return info.param.name; });

TEST(Frame, HeaderIsNetworkByteOrder) {
  Bytes frame = encode(Ping{0x0102030405060708});
  EXPECT_EQ(frame, (Bytes{'t', 'f', 'a', 't', 1, 3, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(Frame, RequestLayout) {
  Bytes frame = encode(AttestRequest{1, tuple_v4(), id("spiffe://a/b")});
  Bytes want = {'t', 'f', 'a', 't', 1, 1, 0, 8 + 37 + 2 + 12};
  Bytes payload = {0, 0, 0, 0, 0, 0, 0, 1, 4};
  for (auto b : v4(10, 0, 1, 2)) payload.push_back(b);
  payload.insert(payload.end(), {40112 >> 8, 40112 & 0xff});
  for (auto b : v4(10, 0, 2, 3)) payload.push_back(b);
  payload.insert(payload.end(), {8080 >> 8, 8080 & 0xff, 0, 12});
  for (char c : std::string("spiffe://a/b")) payload.push_back(static_cast<std::uint8_t>(c));
  want.insert(want.end(), payload.begin(), payload.end());
  EXPECT_EQ(frame, want);
}

// --- chunking --------------------------------------------------------------

Bytes stream_of_every_type() {
  Bytes all;
  for (const Message& m : std::vector<Message>{
           request_v4(), response_allow(), Ping{1},
           AttestRequest{2, tuple_v6(), id(id_text_of(SpiffeId::kMaxLength))}, Pong{1},
           AttestResponse{2, std::nullopt, TF_VERDICT_DENY, TF_REASON_NO_BUNDLE}}) {
    Bytes f = encode(m);
    all.insert(all.end(), f.begin(), f.end());
  }
  return all;
}

TEST(FrameDecoder, SeveralFramesInOneChunk) {
  Fed fed = feed_all(stream_of_every_type());
  ASSERT_FALSE(fed.violation.has_value());
  ASSERT_EQ(fed.messages.size(), 6u);
  EXPECT_EQ(fed.messages[0], Message(request_v4()));
  EXPECT_EQ(fed.messages[1], Message(response_allow()));
  EXPECT_EQ(fed.messages[4], Message(Pong{1}));
}

TEST(FrameDecoder, ByteAtATime) {
  Bytes all = stream_of_every_type();
  FrameDecoder decoder;
  Fed fed = feed(decoder, all, [] { return 1; });
  ASSERT_FALSE(fed.violation.has_value());
  EXPECT_EQ(fed.messages, feed_all(all).messages);
}

TEST(FrameDecoder, RandomChunkingYieldsTheSameMessages) {
  Bytes all = stream_of_every_type();
  std::vector<Message> want = feed_all(all).messages;
  std::mt19937 rng(4);  // fixed seed: a failure reproduces
  for (int round = 0; round < 200; ++round) {
    std::uniform_int_distribution<std::size_t> size(1, 1 + round * 50);
    FrameDecoder decoder;
    Fed fed = feed(decoder, all, [&] { return size(rng); });
    ASSERT_FALSE(fed.violation.has_value()) << "round " << round;
    ASSERT_EQ(fed.messages, want) << "round " << round;
  }
}

TEST(FrameDecoder, PartialFrameStaysBufferedAndBounded) {
  Bytes frame = encode(request_v4());
  FrameDecoder decoder;
  std::span<const std::uint8_t> in(frame.data(), frame.size() - 1);
  auto got = decoder.next(in);
  ASSERT_TRUE(got.has_value());
  EXPECT_FALSE(got->has_value());
  EXPECT_TRUE(in.empty());
  EXPECT_EQ(decoder.buffered(), frame.size() - 1);
  std::span<const std::uint8_t> last(frame.data() + frame.size() - 1, 1);
  got = decoder.next(last);
  ASSERT_TRUE(got.has_value() && got->has_value());
  EXPECT_EQ(**got, Message(request_v4()));
}

TEST(FrameDecoder, StopsAfterEachMessageLeavingTheRest) {
  Bytes two = encode(Ping{1});
  Bytes second = encode(Pong{2});
  two.insert(two.end(), second.begin(), second.end());
  FrameDecoder decoder;
  std::span<const std::uint8_t> in(two);
  auto got = decoder.next(in);
  ASSERT_TRUE(got.has_value() && got->has_value());
  EXPECT_EQ(in.size(), second.size());
}

// --- violations ------------------------------------------------------------

void put16(Bytes& b, std::size_t at, std::size_t v) {
  b[at] = static_cast<std::uint8_t>(v >> 8);
  b[at + 1] = static_cast<std::uint8_t>(v);
}

// Sets the header's payload length to match the bytes after it.
Bytes fix_length(Bytes b) {
  put16(b, 6, b.size() - kFrameHeaderSize);
  return b;
}

Bytes with(Bytes b, std::size_t at, std::uint8_t v) {
  b[at] = v;
  return b;
}

Bytes header(std::uint8_t type, std::size_t length) {
  Bytes b = {'t', 'f', 'a', 't', 1, type, 0, 0};
  put16(b, 6, length);
  return b;
}

Bytes request_with_id(const std::string& text) {
  Bytes b = encode(request_v4());
  std::size_t id_at = kFrameHeaderSize + 8 + 37;
  b.resize(id_at);
  b.push_back(static_cast<std::uint8_t>(text.size() >> 8));
  b.push_back(static_cast<std::uint8_t>(text.size()));
  b.insert(b.end(), text.begin(), text.end());
  return fix_length(b);
}

Bytes response_with_id(const std::string& text) {
  Bytes b = header(2, 0);
  for (int i = 0; i < 8; ++i) b.push_back(0);
  b.push_back(static_cast<std::uint8_t>(text.size() >> 8));
  b.push_back(static_cast<std::uint8_t>(text.size()));
  b.insert(b.end(), text.begin(), text.end());
  b.push_back(TF_VERDICT_ALLOW);
  b.push_back(TF_REASON_LOCAL_DOMAIN);
  return fix_length(b);
}

// Offsets into an encoded request_v4() / response_allow().
constexpr std::size_t kFamilyAt = kFrameHeaderSize + 8;
constexpr std::size_t kLocalAddrAt = kFamilyAt + 1;
constexpr std::size_t kRemoteAddrAt = kLocalAddrAt + 18;

std::size_t response_verdict_at() { return encode(response_allow()).size() - 2; }

struct ViolationRow {
  std::string name;
  Bytes input;
  Violation violation;
  Errc code = Errc::kInvalidArgument;
  friend void PrintTo(const ViolationRow& row, std::ostream* os) { *os << row.name; }
};

class Violations : public testing::TestWithParam<ViolationRow> {};

TEST_P(Violations, AreNamedAndFinal) {
  const ViolationRow& row = GetParam();
  // Whole, then byte at a time: the same violation either way.
  for (std::size_t chunk : {row.input.size() + 1, std::size_t{1}}) {
    FrameDecoder decoder;
    Fed fed = feed(decoder, row.input, [&] { return chunk; });
    ASSERT_TRUE(fed.violation.has_value()) << "chunk " << chunk;
    EXPECT_EQ(*fed.violation, row.violation)
        << to_string(*fed.violation) << " != " << to_string(row.violation);
    EXPECT_TRUE(fed.messages.empty());
    EXPECT_EQ(decoder.buffered(), 0u);

    // Failed for good: even a valid frame afterwards is refused, unread.
    Bytes good = encode(Ping{1});
    std::span<const std::uint8_t> in(good);
    auto again = decoder.next(in);
    ASSERT_FALSE(again.has_value());
    EXPECT_EQ(again.error().code, row.code);
    EXPECT_NE(again.error().message.find(to_string(row.violation)), std::string::npos)
        << again.error().message;
    EXPECT_EQ(in.size(), good.size());
  }
  // A frame the header says is complete fails decode_frame the same way.
  auto whole = decode_frame(row.input);
  ASSERT_FALSE(whole.has_value());
  EXPECT_EQ(whole.error().code, row.code);
}

INSTANTIATE_TEST_SUITE_P(
    Hostile, Violations,
    testing::ValuesIn(std::vector<ViolationRow>{
        {"http_request", {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P'}, Violation::kBadMagic},
        {"tls_client_hello",
         {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc},
         Violation::kBadMagic},
        {"magic_last_byte", with(encode(Ping{1}), 3, 'u'), Violation::kBadMagic},
        {"version_0", with(encode(Ping{1}), 4, 0), Violation::kUnsupportedVersion,
         Errc::kUnsupported},
        {"version_2", with(encode(Ping{1}), 4, 2), Violation::kUnsupportedVersion,
         Errc::kUnsupported},
        {"type_0", with(encode(Ping{1}), 5, 0), Violation::kUnknownType},
        {"type_5", with(encode(Ping{1}), 5, 5), Violation::kUnknownType},
        {"type_255", with(encode(Ping{1}), 5, 255), Violation::kUnknownType},
        {"length_one_over_cap", header(3, kMaxPayloadSize + 1), Violation::kOversize},
        {"length_max_u16", header(3, 0xffff), Violation::kOversize},
        {"ping_empty", header(3, 0), Violation::kTruncatedPayload},
        {"ping_short", fix_length(Bytes{'t', 'f', 'a', 't', 1, 3, 0, 0, 1, 2, 3, 4, 5, 6, 7}),
         Violation::kTruncatedPayload},
        {"ping_trailing", fix_length([] {
           Bytes b = encode(Ping{1});
           b.insert(b.end(), {0, 0, 0, 0, 0, 0, 0, 0});
           return b;
         }()),
         Violation::kTrailingPayload},
        {"pong_trailing", fix_length([] {
           Bytes b = encode(Pong{1});
           b.push_back(0);
           return b;
         }()),
         Violation::kTrailingPayload},
        {"request_trailing", fix_length([] {
           Bytes b = encode(request_v4());
           b.push_back(0);
           return b;
         }()),
         Violation::kTrailingPayload},
        {"request_cut_in_tuple", fix_length([] {
           Bytes b = encode(request_v4());
           b.resize(kRemoteAddrAt + 3);
           return b;
         }()),
         Violation::kTruncatedPayload},
        {"request_id_longer_than_payload",
         [] {
           Bytes b = request_with_id("spiffe://a/b");
           b.pop_back();
           return fix_length(b);
         }(),
         Violation::kTruncatedPayload},
        {"request_empty_id", request_with_id(""), Violation::kInvalidSpiffeId},
        {"request_id_2049_bytes", request_with_id(id_text_of(SpiffeId::kMaxLength + 1)),
         Violation::kInvalidSpiffeId},
        {"request_id_not_spiffe", request_with_id("https://a/b"), Violation::kInvalidSpiffeId},
        {"request_id_uppercase_domain", request_with_id("spiffe://A/b"),
         Violation::kInvalidSpiffeId},
        {"request_id_nul", request_with_id(std::string("spiffe://a/b\0c", 14)),
         Violation::kInvalidSpiffeId},
        {"response_id_bad", response_with_id("spiffe://a/../b"), Violation::kInvalidSpiffeId},
        {"response_id_2049_bytes", response_with_id(id_text_of(SpiffeId::kMaxLength + 1)),
         Violation::kInvalidSpiffeId},
        {"family_0", with(encode(request_v4()), kFamilyAt, 0), Violation::kBadFamily},
        {"family_af_inet", with(encode(request_v4()), kFamilyAt, AF_INET), Violation::kBadFamily},
        {"family_af_inet6", with(encode(request_v4()), kFamilyAt, AF_INET6), Violation::kBadFamily},
        {"ipv4_local_not_mapped", with(encode(request_v4()), kLocalAddrAt + 10, 0),
         Violation::kBadAddress},
        {"ipv4_remote_not_mapped", with(encode(request_v4()), kRemoteAddrAt, 1),
         Violation::kBadAddress},
        {"verdict_pending", with(encode(response_allow()), response_verdict_at(), 0),
         Violation::kBadVerdict},
        {"verdict_count", with(encode(response_allow()), response_verdict_at(), TF_VERDICT_COUNT),
         Violation::kBadVerdict},
        {"verdict_255", with(encode(response_allow()), response_verdict_at(), 255),
         Violation::kBadVerdict},
        {"reason_count", with(encode(response_allow()), response_verdict_at() + 1, TF_REASON_COUNT),
         Violation::kBadReason},
        {"reason_255", with(encode(response_allow()), response_verdict_at() + 1, 255),
         Violation::kBadReason},
    }),
    [](const auto& info) { return info.param.name; });

TEST(FrameDecoder, GoodFramesBeforeAViolationAreDelivered) {
  Bytes stream = encode(Ping{1});
  Bytes bad = with(encode(Pong{2}), 4, 9);
  stream.insert(stream.end(), bad.begin(), bad.end());
  Fed fed = feed_all(stream);
  ASSERT_EQ(fed.messages.size(), 1u);
  EXPECT_EQ(fed.violation, Violation::kUnsupportedVersion);
}

TEST(Frame, EveryViolationHasAName) {
  for (int v = 0; v < static_cast<int>(Violation::kCount); ++v) {
    EXPECT_NE(to_string(static_cast<Violation>(v)), "unknown") << v;
  }
}

TEST(DecodeFrame, RefusesBytesAroundTheFrame) {
  Bytes frame = encode(Ping{1});
  frame.push_back(0);
  EXPECT_FALSE(decode_frame(frame).has_value());
  frame.resize(frame.size() - 2);
  EXPECT_FALSE(decode_frame(frame).has_value());
  EXPECT_FALSE(decode_frame(Bytes{'t', 'f'}).has_value());
}

// --- tuples ----------------------------------------------------------------

TEST(ConnTuple, MirroredSwapsEnds) {
  ConnTuple t = tuple_v6();
  ConnTuple m = t.mirrored();
  EXPECT_EQ(m.local_addr, t.remote_addr);
  EXPECT_EQ(m.local_port, t.remote_port);
  EXPECT_EQ(m.remote_addr, t.local_addr);
  EXPECT_EQ(m.remote_port, t.local_port);
  EXPECT_EQ(m.mirrored(), t);
}

TEST(ConnTuple, FromAbiIpv4IsV4Mapped) {
  tf_tuple abi{};
  abi.family = AF_INET;
  inet_pton(AF_INET, "10.0.1.2", &abi.local_addr[0]);
  inet_pton(AF_INET, "10.0.2.3", &abi.remote_addr[0]);
  abi.local_port = 40112;
  abi.remote_port = 8080;
  auto t = trustfence::attest::from_abi(abi);
  ASSERT_TRUE(t.has_value()) << t.error().message;
  EXPECT_EQ(*t, tuple_v4());
  tf_tuple back = trustfence::attest::to_abi(*t);
  EXPECT_EQ(std::memcmp(&back, &abi, sizeof abi), 0);
}

TEST(ConnTuple, FromAbiIpv6) {
  tf_tuple abi{};
  abi.family = AF_INET6;
  inet_pton(AF_INET6, "fd00::1:2", abi.local_addr);
  inet_pton(AF_INET6, "fd00:ffff::2:3", abi.remote_addr);
  abi.local_port = 40112;
  abi.remote_port = 443;
  auto t = trustfence::attest::from_abi(abi);
  ASSERT_TRUE(t.has_value()) << t.error().message;
  EXPECT_EQ(*t, tuple_v6());
  tf_tuple back = trustfence::attest::to_abi(*t);
  EXPECT_EQ(std::memcmp(&back, &abi, sizeof abi), 0);
}

// A [::] server's IPv4 connection: the same connection as the client's
// AF_INET socket sees it, mirrored.
TEST(ConnTuple, FromAbiDualStackIpv4IsTheIpv4Connection) {
  tf_tuple abi{};
  abi.family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:10.0.2.3", abi.local_addr);
  inet_pton(AF_INET6, "::ffff:10.0.1.2", abi.remote_addr);
  abi.local_port = 8080;
  abi.remote_port = 40112;
  auto t = trustfence::attest::from_abi(abi);
  ASSERT_TRUE(t.has_value()) << t.error().message;
  EXPECT_EQ(*t, tuple_v4().mirrored());
}

TEST(ConnTuple, FromAbiKeepsIpv6WhenOnlyOneEndLooksMapped) {
  tf_tuple abi{};
  abi.family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:10.0.2.3", abi.local_addr);
  inet_pton(AF_INET6, "fd00::1", abi.remote_addr);
  auto t = trustfence::attest::from_abi(abi);
  ASSERT_TRUE(t.has_value()) << t.error().message;
  EXPECT_EQ(t->family, trustfence::attest::Family::kIpv6);
}

TEST(ConnTuple, FromAbiRefusesOtherFamilies) {
  tf_tuple abi{};
  abi.family = AF_UNIX;
  auto t = trustfence::attest::from_abi(abi);
  ASSERT_FALSE(t.has_value());
  EXPECT_EQ(t.error().code, Errc::kInvalidArgument);
}

}  // namespace
