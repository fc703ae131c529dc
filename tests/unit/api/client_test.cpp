// api::call against missing, dead, silent and real servers.

#include "trustfence/api/client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <cstring>

#include "unit/api/serving_loop.hpp"

namespace trustfence::testing {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using ::testing::HasSubstr;

UniqueFd bound_socket(const std::string& path, bool listening) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return {};
  if (listening && ::listen(fd.get(), 8) != 0) return {};
  return fd;
}

class CallTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string path_ = dir_ / "api.sock";
};

TEST_F(CallTest, NoSocketFileMeansNoAgent) {
  auto reply = api::call(path_, {{"command", "conns"}}, milliseconds(1000));
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().code, Errc::kNotFound);
  EXPECT_THAT(reply.error().message, HasSubstr(path_));
}

TEST_F(CallTest, ASocketNobodyListensOnMeansNoAgent) {
  UniqueFd dead = bound_socket(path_, false);
  ASSERT_TRUE(dead);
  auto reply = api::call(path_, {{"command", "conns"}}, milliseconds(1000));
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().code, Errc::kNotFound);
  EXPECT_THAT(reply.error().message, HasSubstr(path_));
}

TEST_F(CallTest, AnAgentThatNeverAnswersTimesOut) {
  UniqueFd silent = bound_socket(path_, true);  // accepts into the backlog, never replies
  ASSERT_TRUE(silent);
  auto started = std::chrono::steady_clock::now();
  auto reply = api::call(path_, {{"command", "conns"}}, milliseconds(300));
  auto waited = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().code, Errc::kIo);
  EXPECT_THAT(reply.error().message, HasSubstr("within 300 ms"));
  EXPECT_LT(waited, milliseconds(2000));
}

TEST_F(CallTest, AnErrorReplyBecomesAnErrorWithItsMessage) {
  config::ApiConfig config;
  config.socket = path_;
  auto serving = ServingLoop::start(config, [](const json&) {
    return json{{"error", "no tracked connection 42"}};
  });
  ASSERT_TRUE(serving) << serving.error().message;
  auto reply = api::call(path_, {{"command", "conn"}, {"cookie", 42}}, milliseconds(5000));
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().code, Errc::kIo);
  EXPECT_EQ(reply.error().message, "no tracked connection 42");
}

TEST_F(CallTest, AnAnswerThatIsNotAnObjectIsPassedOn) {
  config::ApiConfig config;
  config.socket = path_;
  auto serving = ServingLoop::start(config, [](const json&) { return json::array({1, 2}); });
  ASSERT_TRUE(serving) << serving.error().message;
  auto reply = api::call(path_, {{"command", "x"}}, milliseconds(5000));
  ASSERT_TRUE(reply) << reply.error().message;
  EXPECT_EQ(*reply, json::array({1, 2}));
}

TEST_F(CallTest, APathTooLongForAUnixSocketIsRefused) {
  auto reply = api::call(dir_ / std::string(200, 'x'), {{"command", "x"}}, milliseconds(100));
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().code, Errc::kInvalidArgument);
}

}  // namespace
}  // namespace trustfence::testing
