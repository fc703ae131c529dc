// Hold until verdict: payload sent while a connection is PENDING is dropped
// by the datapath and resent by TCP once the verdict is ALLOW, so a
// multi-megabyte stream arrives complete and byte-exact. Also prints how
// long after the ALLOW the first held byte arrived: a figure, not an
// assertion. TCP resends held payload on a timer that starts near 200 ms
// and doubles, so the figure depends on where the ALLOW falls in that
// cycle: holds of 10 ms (a fast attestation), 200 ms and 500 ms show it.

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdio>
#include <thread>

#include "support/kernel/assert_ok.hpp"
#include "support/kernel/checksum.hpp"
#include "support/kernel/socket.hpp"
#include "support/kernel/test_datapath.hpp"
#include "support/privileges.hpp"

namespace trustfence::testing::kernel {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kStreamBytes = 8 * 1024 * 1024;

// Where the payload is held: at the client's egress (both ends PENDING), or
// at the server's ingress (the client already ALLOW, as when only the
// receiving node runs an agent or its verdict comes first).
enum class HoldAt { kClientEgress, kServerIngress };

struct HoldCase {
  int family;
  HoldAt at;
  milliseconds hold;  // from the first held segment to the ALLOW
};

std::string case_name(const HoldCase& c) {
  return std::string(family_name(c.family)) +
         (c.at == HoldAt::kClientEgress ? "_ClientEgressHeld_" : "_ServerIngressHeld_") +
         std::to_string(c.hold.count()) + "ms";
}

// Sends the stream from its own thread (the window fills while the data is
// held), then half-closes. On scope exit, shuts the socket down so a sender
// stuck behind a failed receiver wakes up, and joins.
class Sender {
 public:
  Sender(int fd, std::span<const std::byte> data)
      : fd_(fd), thread_([this, data] {
          result_ = send_all(fd_, data, kStreamTimeout);
          if (result_) ::shutdown(fd_, SHUT_WR);
        }) {}
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;
  ~Sender() {
    if (!thread_.joinable()) return;
    abort();
    thread_.join();
  }

  Result<void> join() {
    if (thread_.joinable()) thread_.join();
    return result_;
  }
  // Wakes a sender waiting for room that will never come.
  void abort() { ::shutdown(fd_, SHUT_RDWR); }

 private:
  int fd_;
  Result<void> result_;
  std::thread thread_;  // last: starts once the members it uses exist
};

class HoldTest : public TestDatapath, public ::testing::WithParamInterface<HoldCase> {};

TEST_P(HoldTest, PendingThenAllowDeliversAMultiMegabyteStreamByteExact) {
  TF_REQUIRE_ROOT();
  const auto [family, at, hold] = GetParam();
  TF_ASSERT_OK(open());
  TF_ASSERT_OK_AND_ASSIGN(auto inside, enter_cgroup());
  TF_ASSERT_OK_AND_ASSIGN(auto listener, listen_loopback(family));
  TF_ASSERT_OK_AND_ASSIGN(auto port, local_endpoint(listener.get()));
  TF_ASSERT_OK_AND_ASSIGN(auto pair, connect_pair(family, listener.get(), port.port));
  TF_ASSERT_OK(inside.leave());

  if (at == HoldAt::kServerIngress) {
    TF_ASSERT_OK_AND_ASSIGN(bool a, allow(pair.client_cookie));
    ASSERT_TRUE(a);
  }
  const auto data = random_bytes(kStreamBytes, 0x7f0c);
  const auto expected = Sha256::of(data);
  const auto held_at = at == HoldAt::kClientEgress ? TF_PACKET_EGRESS : TF_PACKET_INGRESS;
  auto held_drops = [&] {
    auto s = stats();
    return s ? s->packets[held_at][TF_ACTION_DROP][TF_REASON_PENDING] : 0;
  };
  const auto drops_before = held_drops();

  Sender sender(pair.client.get(), data);
  ASSERT_TRUE(wait_until([&] { return held_drops() > drops_before; }, kIoTimeout))
      << "no payload was held at the " << (held_at == TF_PACKET_EGRESS ? "egress" : "ingress");
  // The hold itself: the verdict comes this late. Not a synchronization.
  std::this_thread::sleep_for(hold);
  TF_ASSERT_OK_AND_ASSIGN(bool early, data_arrives_within(pair.server.get(), 0ms));
  EXPECT_FALSE(early) << "payload of a PENDING connection got through";

  auto allowed_at = Clock::now();
  TF_ASSERT_OK_AND_ASSIGN(bool server_allowed, allow(pair.server_cookie));
  ASSERT_TRUE(server_allowed);
  if (at == HoldAt::kClientEgress) {
    TF_ASSERT_OK_AND_ASSIGN(bool client_allowed, allow(pair.client_cookie));
    ASSERT_TRUE(client_allowed);
  }

  Sha256 received;
  std::optional<Clock::time_point> first_byte;
  auto total = recv_until_eof(pair.server.get(), [&](std::span<const std::byte> chunk) {
    if (!first_byte) first_byte = Clock::now();
    received.update(chunk);
  });
  auto done_at = Clock::now();
  if (!total) sender.abort();
  auto sent = sender.join();
  ASSERT_TRUE(sent.has_value()) << sent.error().message;
  ASSERT_TRUE(total.has_value()) << total.error().message;
  EXPECT_EQ(*total, kStreamBytes);
  EXPECT_EQ(received.hex(), expected) << "the stream arrived altered";

  ASSERT_TRUE(first_byte.has_value());
  auto to_first = std::chrono::duration<double, std::milli>(*first_byte - allowed_at).count();
  auto to_all = std::chrono::duration<double, std::milli>(done_at - allowed_at).count();
  std::printf("[ hold     ] %-30s first byte %7.1f ms after ALLOW, all %zu MiB after %7.1f ms\n",
              case_name(GetParam()).c_str(), to_first, kStreamBytes >> 20, to_all);
  RecordProperty("allow_to_first_byte_us", static_cast<int>(to_first * 1000));
  RecordProperty("allow_to_last_byte_us", static_cast<int>(to_all * 1000));
}

std::vector<HoldCase> hold_cases() {
  std::vector<HoldCase> cases;
  for (int family : {AF_INET, AF_INET6})
    for (HoldAt at : {HoldAt::kClientEgress, HoldAt::kServerIngress})
      for (milliseconds hold : {10ms, 200ms, 500ms}) cases.push_back({family, at, hold});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Loopback, HoldTest, ::testing::ValuesIn(hold_cases()),
                         [](const auto& info) { return case_name(info.param); });

}  // namespace
}  // namespace trustfence::testing::kernel
