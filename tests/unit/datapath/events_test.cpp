#include "trustfence/datapath/events.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

namespace {

using trustfence::Errc;
using trustfence::datapath::decode_event;

tf_event good_event() {
  tf_event ev{};
  ev.cookie = 0x0123'4567'89ab'cdefULL;
  ev.timestamp_ns = 987'654'321'000ULL;
  ev.kind = TF_EVENT_NEW;
  ev.conn.tuple.family = AF_INET;
  ev.conn.tuple.local_addr[0] = htonl(0x0a000001);
  ev.conn.tuple.remote_addr[0] = htonl(0x0a000002);
  ev.conn.tuple.local_port = 41000;
  ev.conn.tuple.remote_port = 8080;
  ev.conn.cgroup_id = 4242;
  ev.conn.created_ns = 987'654'000'000ULL;
  ev.conn.decided_ns = 0;
  ev.conn.peer_id = 0;
  ev.conn.generation = 0;
  ev.conn.verdict = TF_VERDICT_PENDING;
  ev.conn.reason = TF_REASON_NONE;
  ev.conn.direction = TF_DIRECTION_OUTBOUND;
  ev.conn.flags = TF_CONN_F_RTO_LOWERED;
  return ev;
}

std::vector<unsigned char> bytes_of(const tf_event& ev, std::size_t size = sizeof(tf_event)) {
  std::vector<unsigned char> bytes(size, 0);
  std::memcpy(bytes.data(), &ev, std::min(size, sizeof(ev)));
  return bytes;
}

TEST(DecodeEvent, AGoodRecordIsDecodedFieldByField) {
  const tf_event raw = good_event();
  auto bytes = bytes_of(raw);
  auto ev = decode_event(bytes.data(), bytes.size());
  ASSERT_TRUE(ev.has_value()) << ev.error().message;

  EXPECT_EQ(ev->kind, TF_EVENT_NEW);
  EXPECT_EQ(ev->cookie, 0x0123'4567'89ab'cdefULL);
  EXPECT_EQ(ev->timestamp_ns, 987'654'321'000ULL);
  EXPECT_EQ(ev->conn.tuple.family, AF_INET);
  EXPECT_EQ(ev->conn.tuple.local_addr[0], htonl(0x0a000001));
  EXPECT_EQ(ev->conn.tuple.remote_addr[0], htonl(0x0a000002));
  EXPECT_EQ(ev->conn.tuple.local_port, 41000);
  EXPECT_EQ(ev->conn.tuple.remote_port, 8080);
  EXPECT_EQ(ev->conn.cgroup_id, 4242u);
  EXPECT_EQ(ev->conn.created_ns, 987'654'000'000ULL);
  EXPECT_EQ(ev->conn.verdict, TF_VERDICT_PENDING);
  EXPECT_EQ(ev->conn.reason, TF_REASON_NONE);
  EXPECT_EQ(ev->conn.direction, TF_DIRECTION_OUTBOUND);
  EXPECT_EQ(ev->conn.flags, TF_CONN_F_RTO_LOWERED);
  EXPECT_EQ(std::memcmp(&ev->conn, &raw.conn, sizeof(tf_conn)), 0);
}

TEST(DecodeEvent, ACloseRecordCarriesTheLastVerdict) {
  tf_event raw = good_event();
  raw.kind = TF_EVENT_CLOSE;
  raw.conn.verdict = TF_VERDICT_DENY;
  raw.conn.reason = TF_REASON_COUNT - 1;  // the last reason in the set
  raw.conn.peer_id = 9;
  raw.conn.peer_trust_domain = 2;
  raw.conn.generation = 3;
  raw.conn.decided_ns = 987'654'100'000ULL;
  auto bytes = bytes_of(raw);
  auto ev = decode_event(bytes.data(), bytes.size());
  ASSERT_TRUE(ev.has_value()) << ev.error().message;
  EXPECT_EQ(ev->kind, TF_EVENT_CLOSE);
  EXPECT_EQ(ev->conn.verdict, TF_VERDICT_DENY);
  EXPECT_EQ(ev->conn.reason, TF_REASON_COUNT - 1);
  EXPECT_EQ(ev->conn.peer_id, 9u);
  EXPECT_EQ(ev->conn.peer_trust_domain, 2u);
  EXPECT_EQ(ev->conn.generation, 3u);
  EXPECT_EQ(ev->conn.decided_ns, 987'654'100'000ULL);
}

TEST(DecodeEvent, AnUnalignedRecordIsDecoded) {
  auto aligned = bytes_of(good_event());
  std::vector<unsigned char> buffer(aligned.size() + 1);
  std::memcpy(buffer.data() + 1, aligned.data(), aligned.size());
  auto ev = decode_event(buffer.data() + 1, aligned.size());
  ASSERT_TRUE(ev.has_value()) << ev.error().message;
  EXPECT_EQ(ev->cookie, good_event().cookie);
}

struct BadRecord {
  const char* name;
  std::vector<unsigned char> bytes;
  std::string why;  // fragment of the message
};

void PrintTo(const BadRecord& c, std::ostream* os) { *os << c.name; }

BadRecord with(const char* name, const char* why, void (*edit)(tf_event&)) {
  tf_event ev = good_event();
  edit(ev);
  return {name, bytes_of(ev), why};
}

class DecodeEventRejects : public ::testing::TestWithParam<BadRecord> {};

TEST_P(DecodeEventRejects, WithAnIncompatibleError) {
  const BadRecord& c = GetParam();
  auto ev = decode_event(c.bytes.data(), c.bytes.size());
  ASSERT_FALSE(ev.has_value()) << c.name << " was accepted";
  EXPECT_EQ(ev.error().code, Errc::kIncompatible);
  EXPECT_NE(ev.error().message.find(c.why), std::string::npos) << ev.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Table, DecodeEventRejects,
    ::testing::Values(
        BadRecord{"empty", {}, "0 bytes"},
        BadRecord{"one_byte_short", bytes_of(good_event(), sizeof(tf_event) - 1),
                  std::to_string(sizeof(tf_event) - 1) + " bytes"},
        BadRecord{"header_only", bytes_of(good_event(), offsetof(tf_event, conn)), "24 bytes"},
        // A longer record comes from another ABI: "wrong size" (events.hpp).
        BadRecord{"eight_bytes_long", bytes_of(good_event(), sizeof(tf_event) + 8),
                  std::to_string(sizeof(tf_event) + 8) + " bytes"},
        with("kind_zero", "unknown kind 0", [](tf_event& ev) { ev.kind = 0; }),
        with("kind_three", "unknown kind 3", [](tf_event& ev) { ev.kind = 3; }),
        with("kind_255", "unknown kind 255", [](tf_event& ev) { ev.kind = 255; }),
        with("verdict_past_end", "verdict",
             [](tf_event& ev) { ev.conn.verdict = TF_VERDICT_COUNT; }),
        with("verdict_255", "verdict", [](tf_event& ev) { ev.conn.verdict = 255; }),
        with("reason_past_end", "reason", [](tf_event& ev) { ev.conn.reason = TF_REASON_COUNT; }),
        with("reason_255", "reason", [](tf_event& ev) { ev.conn.reason = 255; })),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
