// tf_egress and tf_ingress under BPF_PROG_TEST_RUN: packet in, verdict and
// tf_stats cell out. Each table row is one packet of one connection; every
// table runs through both programs, over IPv4 and over IPv6. The socket
// cookie of a packet is its skb mark (see support/prog_test_run.hpp).

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "support/packets.hpp"
#include "support/privileges.hpp"
#include "support/prog_test_run.hpp"
#include "trustfence/common/verdict.hpp"
#include "trustfence/datapath/exemption.hpp"

namespace trustfence::testing {
namespace {

using ::trustfence::to_string;  // next to testing::to_string(DatapathBuild)

constexpr std::uint32_t kPass = 1;
constexpr std::uint32_t kDrop = 0;

// The connection a packet belongs to, as tf_conns knows it.
struct Conn {
  bool tracked = false;
  tf_verdict verdict = TF_VERDICT_PENDING;
  tf_reason reason = TF_REASON_NONE;
};
constexpr Conn untracked() { return {}; }
constexpr Conn pending() { return {true, TF_VERDICT_PENDING, TF_REASON_NONE}; }
constexpr Conn allowed(tf_reason reason) { return {true, TF_VERDICT_ALLOW, reason}; }
constexpr Conn denied(tf_reason reason) { return {true, TF_VERDICT_DENY, reason}; }

// One packet's transport, and the defects a case may ask for.
struct Segment {
  std::uint8_t flags = kTcpAck;
  std::size_t payload = 0;
  bool udp = false;
  bool hop_by_hop = false;                  // IPv6 only
  bool fragment = false;                    // first fragment of a datagram
  std::optional<std::size_t> l4_bytes;      // truncated L4 header
  std::optional<std::uint8_t> data_offset;  // malformed TCP data offset
};
constexpr Segment tcp(std::uint8_t flags, std::size_t payload = 0) {
  Segment segment;
  segment.flags = flags;
  segment.payload = payload;
  return segment;
}
constexpr Segment truncated_after(std::size_t l4_bytes, Segment segment) {
  segment.l4_bytes = l4_bytes;
  return segment;
}
constexpr Segment with_data_offset(std::uint8_t words, Segment segment) {
  segment.data_offset = words;
  return segment;
}
constexpr Segment after_hop_by_hop(Segment segment) {
  segment.hop_by_hop = true;
  return segment;
}
constexpr Segment fragmented(Segment segment) {
  segment.fragment = true;
  return segment;
}
constexpr Segment udp(std::size_t payload) {
  Segment segment;
  segment.udp = true;
  segment.payload = payload;
  return segment;
}

constexpr Segment kSyn = tcp(kTcpSyn);
constexpr Segment kSynAck = tcp(kTcpSyn | kTcpAck);
constexpr Segment kPureAck = tcp(kTcpAck);
constexpr Segment kData = tcp(kTcpAck | kTcpPsh, 100);
constexpr Segment kOneByte = tcp(kTcpAck | kTcpPsh, 1);
constexpr Segment kFin = tcp(kTcpFin | kTcpAck);
constexpr Segment kFinData = tcp(kTcpFin | kTcpAck | kTcpPsh, 100);
constexpr Segment kRst = tcp(kTcpRst);
constexpr Segment kRstAck = tcp(kTcpRst | kTcpAck);
constexpr Segment kRstData = tcp(kTcpRst | kTcpAck, 20);
constexpr Segment kTruncated = truncated_after(12, kRst);  // ends before the flags
constexpr Segment kOffsetPastEnd = with_data_offset(15, kPureAck);
constexpr Segment kOffsetTooSmall = with_data_offset(4, kPureAck);
constexpr Segment kUdp = udp(48);

// What the program must return, and the one tf_stats cell it must count
// the packet in (none: the packet is none of the datapath's business).
struct Expect {
  std::uint32_t retval = kPass;
  std::optional<tf_action> action;
  tf_reason reason = TF_REASON_NONE;
};
constexpr Expect passes(tf_reason reason) { return {kPass, TF_ACTION_PASS, reason}; }
constexpr Expect drops(tf_reason reason) { return {kDrop, TF_ACTION_DROP, reason}; }
constexpr Expect audits(tf_reason reason) { return {kPass, TF_ACTION_AUDIT, reason}; }
constexpr Expect passes_uncounted() { return {kPass, std::nullopt, TF_REASON_NONE}; }

// The far end of the connection and our own port; our address is fixed.
struct Flow {
  const char* remote_v4;
  const char* remote_v6;
  std::uint16_t remote_port;
  std::uint16_t local_port;
};
constexpr Flow kServer{"10.2.0.2", "fd00:2::2", 443, 40000};

struct PacketCase {
  const char* description;
  Conn conn;
  Segment segment;
  Expect expect;
  Flow flow = kServer;
};

// --- tables ---------------------------------------------------------------

const PacketCase kAllowedCases[] = {
    {"payload passes", allowed(TF_REASON_LOCAL_DOMAIN), kData, passes(TF_REASON_LOCAL_DOMAIN)},
    {"SYN passes", allowed(TF_REASON_LOCAL_DOMAIN), kSyn, passes(TF_REASON_LOCAL_DOMAIN)},
    {"pure ACK passes", allowed(TF_REASON_LOCAL_DOMAIN), kPureAck, passes(TF_REASON_LOCAL_DOMAIN)},
    {"FIN passes", allowed(TF_REASON_LOCAL_DOMAIN), kFin, passes(TF_REASON_LOCAL_DOMAIN)},
    {"RST passes", allowed(TF_REASON_LOCAL_DOMAIN), kRst, passes(TF_REASON_LOCAL_DOMAIN)},
    {"counted under the agent's reason", allowed(TF_REASON_ALIAS_DOMAIN), kData,
     passes(TF_REASON_ALIAS_DOMAIN)},
    {"truncated header passes: allowed is not parsed", allowed(TF_REASON_ALLOWED_ID), kTruncated,
     passes(TF_REASON_ALLOWED_ID)},
    {"reason byte out of range counts as none", allowed(static_cast<tf_reason>(200)), kData,
     passes(TF_REASON_NONE)},
};

const PacketCase kDeniedCases[] = {
    {"payload drops", denied(TF_REASON_DOMAIN_NOT_ALLOWED), kData,
     drops(TF_REASON_DOMAIN_NOT_ALLOWED)},
    {"SYN drops", denied(TF_REASON_DOMAIN_NOT_ALLOWED), kSyn, drops(TF_REASON_DOMAIN_NOT_ALLOWED)},
    {"pure ACK drops", denied(TF_REASON_DOMAIN_NOT_ALLOWED), kPureAck,
     drops(TF_REASON_DOMAIN_NOT_ALLOWED)},
    {"FIN drops", denied(TF_REASON_DOMAIN_NOT_ALLOWED), kFin, drops(TF_REASON_DOMAIN_NOT_ALLOWED)},
    {"FIN with payload drops", denied(TF_REASON_DOMAIN_NOT_ALLOWED), kFinData,
     drops(TF_REASON_DOMAIN_NOT_ALLOWED)},
    {"RST passes", denied(TF_REASON_DOMAIN_NOT_ALLOWED), kRst,
     passes(TF_REASON_DOMAIN_NOT_ALLOWED)},
    {"RST+ACK passes", denied(TF_REASON_DOMAIN_NOT_ALLOWED), kRstAck,
     passes(TF_REASON_DOMAIN_NOT_ALLOWED)},
    {"RST carrying payload drops", denied(TF_REASON_DOMAIN_NOT_ALLOWED), kRstData,
     drops(TF_REASON_DOMAIN_NOT_ALLOWED)},
    {"truncated header drops, RST bit or not", denied(TF_REASON_DOMAIN_NOT_ALLOWED), kTruncated,
     drops(TF_REASON_DOMAIN_NOT_ALLOWED)},
    {"counted under the agent's reason", denied(TF_REASON_BAD_CHAIN), kData,
     drops(TF_REASON_BAD_CHAIN)},
};

const PacketCase kPendingCases[] = {
    {"SYN passes", pending(), kSyn, passes(TF_REASON_PENDING)},
    {"SYN+ACK passes", pending(), kSynAck, passes(TF_REASON_PENDING)},
    {"pure ACK passes", pending(), kPureAck, passes(TF_REASON_PENDING)},
    {"FIN passes", pending(), kFin, passes(TF_REASON_PENDING)},
    {"RST passes", pending(), kRst, passes(TF_REASON_PENDING)},
    {"payload is held", pending(), kData, drops(TF_REASON_PENDING)},
    {"one byte of payload is held", pending(), kOneByte, drops(TF_REASON_PENDING)},
    {"FIN with payload is held", pending(), kFinData, drops(TF_REASON_PENDING)},
    {"truncated header counts as payload", pending(), kTruncated, drops(TF_REASON_PENDING)},
    {"data offset past the end counts as payload", pending(), kOffsetPastEnd,
     drops(TF_REASON_PENDING)},
    {"data offset under 5 words counts as payload", pending(), kOffsetTooSmall,
     drops(TF_REASON_PENDING)},
    {"a fragment counts as payload, even a pure ACK's", pending(), fragmented(kPureAck),
     drops(TF_REASON_PENDING)},
};

const PacketCase kUntrackedAllowCases[] = {
    {"payload passes", untracked(), kData, passes(TF_REASON_UNTRACKED)},
    {"SYN passes", untracked(), kSyn, passes(TF_REASON_UNTRACKED)},
    {"pure ACK passes", untracked(), kPureAck, passes(TF_REASON_UNTRACKED)},
    {"RST passes", untracked(), kRst, passes(TF_REASON_UNTRACKED)},
    {"truncated header passes", untracked(), kTruncated, passes(TF_REASON_UNTRACKED)},
    {"UDP passes untouched and uncounted", untracked(), kUdp, passes_uncounted()},
};

const PacketCase kUntrackedDenyCases[] = {
    {"payload drops", untracked(), kData, drops(TF_REASON_UNTRACKED)},
    {"SYN drops", untracked(), kSyn, drops(TF_REASON_UNTRACKED)},
    {"pure ACK drops", untracked(), kPureAck, drops(TF_REASON_UNTRACKED)},
    {"FIN drops", untracked(), kFin, drops(TF_REASON_UNTRACKED)},
    {"RST passes", untracked(), kRst, passes(TF_REASON_UNTRACKED)},
    {"truncated header drops", untracked(), kTruncated, drops(TF_REASON_UNTRACKED)},
    {"UDP passes untouched and uncounted", untracked(), kUdp, passes_uncounted()},
};

// Exemption rules, one per family, installed for the exemption table; its
// fallback for untracked traffic is DENY so a miss shows.
struct Rule {
  const char* v4;
  const char* v6;
};
constexpr Rule kExemptRules[] = {
    {"10.2.0.0/16:53", "[fd00:2::]/32:53"},      // a service: the remote port
    {"10.3.0.0/16:7400", "[fd00:3::]/32:7400"},  // our listener: the local port
    {"10.4.0.0/16", "[fd00:4::]/32"},            // any port
};
constexpr Flow kDns{"10.2.0.53", "fd00:2::53", 53, 40000};
constexpr Flow kDnsAddressOtherPort{"10.2.0.53", "fd00:2::53", 80, 40000};
constexpr Flow kToOurListener{"10.3.0.3", "fd00:3::3", 50000, 7400};
constexpr Flow kToOurOtherPort{"10.3.0.3", "fd00:3::3", 50000, 7401};
constexpr Flow kApiServer{"10.4.0.4", "fd00:4::4", 6443, 40000};
constexpr Flow kOutsider{"10.9.0.9", "fd00:9::9", 53, 40000};

const PacketCase kExemptCases[] = {
    {"CIDR + remote port: payload passes", untracked(), kData, passes(TF_REASON_EXEMPT), kDns},
    {"CIDR + remote port: SYN passes", untracked(), kSyn, passes(TF_REASON_EXEMPT), kDns},
    {"CIDR + local port: payload passes", untracked(), kData, passes(TF_REASON_EXEMPT),
     kToOurListener},
    {"CIDR, any port: payload passes", untracked(), kData, passes(TF_REASON_EXEMPT), kApiServer},
    {"address outside every rule: fallback", untracked(), kData, drops(TF_REASON_UNTRACKED),
     kOutsider},
    {"rule's address, other remote port: fallback", untracked(), kData, drops(TF_REASON_UNTRACKED),
     kDnsAddressOtherPort},
    {"rule's address, other local port: fallback", untracked(), kData, drops(TF_REASON_UNTRACKED),
     kToOurOtherPort},
    {"truncated header is never exempt: fallback", untracked(), kTruncated,
     drops(TF_REASON_UNTRACKED), kDns},
    {"UDP to an exempt service: untouched, uncounted", untracked(), kUdp, passes_uncounted(), kDns},
};

// Audit mode, untracked fallback DENY: every would-drop passes and counts.
const PacketCase kAuditCases[] = {
    {"denied payload passes, counted audit", denied(TF_REASON_ID_DENIED), kData,
     audits(TF_REASON_ID_DENIED)},
    {"denied SYN passes, counted audit", denied(TF_REASON_ID_DENIED), kSyn,
     audits(TF_REASON_ID_DENIED)},
    {"denied RST passes, counted pass", denied(TF_REASON_ID_DENIED), kRst,
     passes(TF_REASON_ID_DENIED)},
    {"pending payload passes, counted audit", pending(), kData, audits(TF_REASON_PENDING)},
    {"pending truncated header passes, counted audit", pending(), kTruncated,
     audits(TF_REASON_PENDING)},
    {"pending pure ACK passes, counted pass", pending(), kPureAck, passes(TF_REASON_PENDING)},
    {"untracked payload passes, counted audit", untracked(), kData, audits(TF_REASON_UNTRACKED)},
    {"untracked RST passes, counted pass", untracked(), kRst, passes(TF_REASON_UNTRACKED)},
    {"allowed payload passes, counted pass", allowed(TF_REASON_LOCAL_DOMAIN), kData,
     passes(TF_REASON_LOCAL_DOMAIN)},
    {"untracked UDP: untouched, uncounted", untracked(), kUdp, passes_uncounted()},
};

// IPv6 only, untracked fallback DENY, kDns exempt: TCP found past a
// hop-by-hop options header.
const PacketCase kHopByHopCases[] = {
    {"pending: pure ACK passes", pending(), after_hop_by_hop(kPureAck), passes(TF_REASON_PENDING)},
    {"pending: payload is held", pending(), after_hop_by_hop(kData), drops(TF_REASON_PENDING)},
    {"pending: fragment header after it counts as payload", pending(),
     fragmented(after_hop_by_hop(kPureAck)), drops(TF_REASON_PENDING)},
    {"pending: FIN passes", pending(), after_hop_by_hop(kFin), passes(TF_REASON_PENDING)},
    {"denied: RST passes", denied(TF_REASON_NO_PEER_AGENT), after_hop_by_hop(kRst),
     passes(TF_REASON_NO_PEER_AGENT)},
    {"denied: pure ACK drops", denied(TF_REASON_NO_PEER_AGENT), after_hop_by_hop(kPureAck),
     drops(TF_REASON_NO_PEER_AGENT)},
    {"untracked: exempt service passes", untracked(), after_hop_by_hop(kData),
     passes(TF_REASON_EXEMPT), kDns},
    {"untracked: RST passes the fallback", untracked(), after_hop_by_hop(kRst),
     passes(TF_REASON_UNTRACKED)},
    {"untracked: payload drops", untracked(), after_hop_by_hop(kData), drops(TF_REASON_UNTRACKED)},
    {"untracked UDP: untouched, uncounted", untracked(), after_hop_by_hop(kUdp),
     passes_uncounted()},
};

// --- running a table ------------------------------------------------------

std::vector<std::uint8_t> frame_for(tf_packet_dir dir, int family, const Flow& flow,
                                    const Segment& segment) {
  bool v4 = family == AF_INET;
  Endpoint local{v4 ? "10.1.0.1" : "fd00:1::1", flow.local_port};
  Endpoint remote{v4 ? flow.remote_v4 : flow.remote_v6, flow.remote_port};
  // Egress leaves our socket for the remote end; ingress comes from it.
  const Endpoint& src = dir == TF_PACKET_EGRESS ? local : remote;
  const Endpoint& dst = dir == TF_PACKET_EGRESS ? remote : local;
  auto packet = segment.udp ? PacketBuilder::udp(src, dst) : PacketBuilder::tcp(src, dst);
  packet.flags(segment.flags).payload(segment.payload);
  if (segment.hop_by_hop) packet.hop_by_hop();
  if (segment.fragment) packet.fragment();
  if (segment.l4_bytes) packet.truncate_l4(*segment.l4_bytes);
  if (segment.data_offset) packet.tcp_data_offset(*segment.data_offset);
  return packet.build();
}

std::string cell_name(unsigned dir, unsigned action, unsigned reason) {
  return std::string(to_string(static_cast<tf_packet_dir>(dir))) + "/" +
         std::string(to_string(static_cast<tf_action>(action))) + "/" +
         std::string(to_string(static_cast<tf_reason>(reason)));
}

// Every tf_stats cell that moved, as "egress/drop/untracked +1".
std::vector<std::string> stats_changes(const tf_stats& before, const tf_stats& after) {
  std::vector<std::string> changes;
  auto note = [&](const std::string& name, __u64 from, __u64 to) {
    if (from != to) changes.push_back(name + " +" + std::to_string(to - from));
  };
  for (unsigned d = 0; d < TF_PACKET_DIR_COUNT; ++d)
    for (unsigned a = 0; a < TF_ACTION_COUNT; ++a)
      for (unsigned r = 0; r < TF_REASON_COUNT; ++r)
        note(cell_name(d, a, r), before.packets[d][a][r], after.packets[d][a][r]);
  for (unsigned c = 0; c < TF_COUNTER_COUNT; ++c)
    note("counter/" + std::string(to_string(static_cast<tf_counter>(c))), before.counters[c],
         after.counters[c]);
  return changes;
}

std::vector<std::string> expected_changes(tf_packet_dir dir, const Expect& expect) {
  if (!expect.action) return {};
  return {cell_name(dir, *expect.action, expect.reason) + " +1"};
}

std::string rule_for(const Rule& rule, int family) { return family == AF_INET ? rule.v4 : rule.v6; }

// Runs every case through one freshly loaded datapath. Each case has a
// cookie of its own, so cases do not see each other's connections.
void run_table(tf_packet_dir dir, int family, const TestDatapathOptions& options,
               std::span<const PacketCase> cases, std::span<const Rule> exemptions = {}) {
  auto dp = TestDatapath::open(options);
  ASSERT_TRUE(dp) << dp.error().message;
  for (const Rule& rule : exemptions) {
    auto parsed = datapath::Exemption::parse(rule_for(rule, family));
    ASSERT_TRUE(parsed) << parsed.error().message;
    ASSERT_TRUE(dp->exempt(parsed->key)) << parsed->text;
  }
  std::uint32_t next_cookie = 1;
  for (const PacketCase& c : cases) {
    SCOPED_TRACE(c.description);
    std::uint32_t cookie = next_cookie++;
    if (c.conn.tracked) {
      ASSERT_TRUE(dp->track(cookie, c.conn.verdict, c.conn.reason));
    }
    auto before = dp->stats();
    ASSERT_TRUE(before) << before.error().message;
    auto result = dp->run(dir, frame_for(dir, family, c.flow, c.segment), cookie);
    ASSERT_TRUE(result) << result.error().message;
    auto after = dp->stats();
    ASSERT_TRUE(after) << after.error().message;

    EXPECT_EQ(result->retval, c.expect.retval)
        << (c.expect.retval == kPass ? "expected to pass" : "expected to drop");
    EXPECT_EQ(stats_changes(*before, *after), expected_changes(dir, c.expect));
  }
}

using Path = std::tuple<tf_packet_dir, int>;  // program, address family

std::string path_name(const ::testing::TestParamInfo<Path>& info) {
  auto [dir, family] = info.param;
  return std::string(to_string(dir)) + (family == AF_INET ? "_ipv4" : "_ipv6");
}

class PacketVerdict : public ::testing::TestWithParam<Path> {
 protected:
  tf_packet_dir dir() const { return std::get<0>(GetParam()); }
  int family() const { return std::get<1>(GetParam()); }
};

TEST_P(PacketVerdict, AllowedConnectionPassesEverything) {
  TF_REQUIRE_ROOT();
  run_table(dir(), family(), {}, kAllowedCases);
}

TEST_P(PacketVerdict, DeniedConnectionDropsAllButReset) {
  TF_REQUIRE_ROOT();
  run_table(dir(), family(), {}, kDeniedCases);
}

TEST_P(PacketVerdict, PendingConnectionPassesControlHoldsPayload) {
  TF_REQUIRE_ROOT();
  run_table(dir(), family(), {}, kPendingCases);
}

TEST_P(PacketVerdict, UntrackedFollowsAllowFallback) {
  TF_REQUIRE_ROOT();
  run_table(dir(), family(), {.untracked_verdict = TF_VERDICT_ALLOW}, kUntrackedAllowCases);
}

TEST_P(PacketVerdict, UntrackedFollowsDenyFallback) {
  TF_REQUIRE_ROOT();
  run_table(dir(), family(), {.untracked_verdict = TF_VERDICT_DENY}, kUntrackedDenyCases);
}

TEST_P(PacketVerdict, ExemptionsPassUntrackedTraffic) {
  TF_REQUIRE_ROOT();
  run_table(dir(), family(), {.untracked_verdict = TF_VERDICT_DENY}, kExemptCases, kExemptRules);
}

TEST_P(PacketVerdict, AuditModeCountsButNeverDrops) {
  TF_REQUIRE_ROOT();
  run_table(dir(), family(), {.mode = TF_MODE_AUDIT, .untracked_verdict = TF_VERDICT_DENY},
            kAuditCases);
}

// The verdict is read per packet: writing it releases (or stops) the very
// next segment of the same socket.
TEST_P(PacketVerdict, NewVerdictAppliesToTheNextPacket) {
  TF_REQUIRE_ROOT();
  auto dp = TestDatapath::open();
  ASSERT_TRUE(dp) << dp.error().message;
  constexpr datapath::Cookie kCookie = 77;
  auto frame = frame_for(dir(), family(), kServer, kData);
  auto send = [&] {
    auto result = dp->run(dir(), frame, kCookie);
    EXPECT_TRUE(result) << result.error().message;
    return result ? result->retval : ~0u;
  };

  ASSERT_TRUE(dp->track(kCookie, TF_VERDICT_PENDING, TF_REASON_NONE));
  EXPECT_EQ(send(), kDrop) << "pending holds payload";
  ASSERT_TRUE(dp->track(kCookie, TF_VERDICT_ALLOW, TF_REASON_LOCAL_DOMAIN));
  EXPECT_EQ(send(), kPass) << "allowed releases it";
  ASSERT_TRUE(dp->track(kCookie, TF_VERDICT_DENY, TF_REASON_REVOKED));
  EXPECT_EQ(send(), kDrop) << "revoked stops it";
}

INSTANTIATE_TEST_SUITE_P(, PacketVerdict,
                         ::testing::Combine(::testing::Values(TF_PACKET_EGRESS, TF_PACKET_INGRESS),
                                            ::testing::Values(AF_INET, AF_INET6)),
                         path_name);

class Ipv6ExtensionHeaders : public ::testing::TestWithParam<tf_packet_dir> {};

TEST_P(Ipv6ExtensionHeaders, TcpIsFoundPastHopByHop) {
  TF_REQUIRE_ROOT();
  run_table(GetParam(), AF_INET6, {.untracked_verdict = TF_VERDICT_DENY}, kHopByHopCases,
            kExemptRules);
}

INSTANTIATE_TEST_SUITE_P(, Ipv6ExtensionHeaders,
                         ::testing::Values(TF_PACKET_EGRESS, TF_PACKET_INGRESS),
                         [](const auto& info) { return std::string(to_string(info.param)); });

// The harness itself: the mark picks the connection, and nothing is left
// under bpffs.
TEST(TestDatapath, TakesTheSocketCookieFromTheMark) {
  TF_REQUIRE_ROOT();
  auto dp = TestDatapath::open({.untracked_verdict = TF_VERDICT_DENY});
  ASSERT_TRUE(dp) << dp.error().message;
  EXPECT_EQ(dp->build(), DatapathBuild::kMarkCookie) << to_string(dp->build());
  ASSERT_TRUE(dp->track(5, TF_VERDICT_ALLOW, TF_REASON_LOCAL_DOMAIN));
  auto frame = frame_for(TF_PACKET_EGRESS, AF_INET, kServer, kData);
  auto tracked = dp->run(TF_PACKET_EGRESS, frame, 5);
  auto other = dp->run(TF_PACKET_EGRESS, frame, 6);
  ASSERT_TRUE(tracked && other);
  EXPECT_EQ(tracked->retval, kPass) << "mark 5 is the allowed connection";
  EXPECT_EQ(other->retval, kDrop) << "mark 6 is no connection: DENY fallback";
}

TEST(TestDatapath, PinsNothing) {
  TF_REQUIRE_ROOT();
  auto dp = TestDatapath::open();
  ASSERT_TRUE(dp) << dp.error().message;
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, dp->object()) {
    EXPECT_EQ(bpf_map__pin_path(map), nullptr) << bpf_map__name(map);
    EXPECT_FALSE(bpf_map__is_pinned(map)) << bpf_map__name(map);
  }
}

}  // namespace
}  // namespace trustfence::testing
