// The query API server on a real Unix socket, served by a real event loop
// on its own thread: framing, limits, timeouts, permissions, socket file.

#include "trustfence/api/server.hpp"

#include <gmock/gmock.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <vector>

#include "support/privileges.hpp"
#include "trustfence/api/client.hpp"
#include "unit/api/serving_loop.hpp"

namespace trustfence::testing {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using Clock = std::chrono::steady_clock;

constexpr gid_t kNobodyGid = 65534;
constexpr uid_t kNobodyUid = 65534;

json echo(const json& request) { return json{{"echo", request}}; }

UniqueFd connect_raw(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return {};
  return fd;
}

bool send_text(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

struct Received {
  std::string text;
  bool closed = false;  // EOF or reset seen before the deadline
};

// Everything until the server closes, or the deadline.
Received read_until_closed(int fd, milliseconds timeout = milliseconds(5000)) {
  Received out;
  auto deadline = Clock::now() + timeout;
  char buf[65536];
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return out;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) {
      out.closed = true;
      return out;
    }
    out.text.append(buf, static_cast<std::size_t>(n));
  }
}

// One raw exchange: bytes out, the whole answer back, parsed.
json ask_raw(const std::string& path, std::string_view bytes) {
  UniqueFd fd = connect_raw(path);
  if (!fd) return "connect failed";
  send_text(fd.get(), bytes);
  auto got = read_until_closed(fd.get());
  if (!got.closed) return "not closed";
  if (got.text.empty() || got.text.back() != '\n') return "no line: " + got.text;
  return json::parse(got.text, nullptr, false);
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    config_.socket = dir_ / "api.sock";
  }

  void serve(api::Server::Handler handler = echo, api::ServerLimits limits = {}) {
    auto serving = ServingLoop::start(config_, std::move(handler), limits);
    ASSERT_TRUE(serving) << serving.error().message;
    serving_ = std::move(*serving);
  }

  // Stops the loop so the counters may be read from this thread.
  const api::ServerStats& stopped_stats() {
    serving_->stop();
    return serving_->server().stats();
  }

  TempDir dir_;
  config::ApiConfig config_;
  std::unique_ptr<ServingLoop> serving_;
};

TEST_F(ServerTest, AnswersARequestAndCloses) {
  serve();
  auto reply = api::call(config_.socket, {{"command", "conns"}}, milliseconds(5000));
  ASSERT_TRUE(reply) << reply.error().message;
  EXPECT_EQ(*reply, (json{{"echo", {{"command", "conns"}}}}));

  json raw = ask_raw(config_.socket, "{\"command\":\"stats\"}\n");
  EXPECT_EQ(raw, (json{{"echo", {{"command", "stats"}}}}));
  EXPECT_EQ(stopped_stats().requests, 2u);
}

TEST_F(ServerTest, ServesRequestsOneAfterAnother) {
  serve();
  for (int i = 0; i < 2; ++i) {
    auto reply =
        api::call(config_.socket, {{"command", "conn"}, {"cookie", i}}, milliseconds(5000));
    ASSERT_TRUE(reply) << reply.error().message;
    EXPECT_EQ((*reply)["echo"]["cookie"], i);
  }
}

TEST_F(ServerTest, ARequestEndedByShutdownInsteadOfNewlineIsAnswered) {
  serve();
  UniqueFd fd = connect_raw(config_.socket);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_text(fd.get(), R"({"command":"conns"})"));
  ::shutdown(fd.get(), SHUT_WR);
  auto got = read_until_closed(fd.get());
  EXPECT_TRUE(got.closed);
  EXPECT_EQ(json::parse(got.text, nullptr, false), (json{{"echo", {{"command", "conns"}}}}));
}

struct BadRequest {
  std::string name;
  std::string bytes;
  std::string error;  // the reply's "error" starts with this
};

class ServerBadRequestTest : public ServerTest, public ::testing::WithParamInterface<BadRequest> {};

TEST_P(ServerBadRequestTest, GetsAnErrorAndTheServerKeepsServing) {
  serve();
  json reply = ask_raw(config_.socket, GetParam().bytes);
  ASSERT_TRUE(reply.is_object()) << reply.dump();
  ASSERT_TRUE(reply.contains("error")) << reply.dump();
  EXPECT_THAT(reply["error"].get<std::string>(), StartsWith(GetParam().error));

  auto good = api::call(config_.socket, {{"command", "conns"}}, milliseconds(5000));
  ASSERT_TRUE(good) << good.error().message;
  EXPECT_TRUE(good->contains("echo"));
}

INSTANTIATE_TEST_SUITE_P(
    Framing, ServerBadRequestTest,
    ::testing::Values(
        BadRequest{"garbage", "hello there\n", "request is not valid JSON"},
        BadRequest{"truncated", "{\"command\":\n", "request is not valid JSON"},
        BadRequest{"array", "[\"conns\"]\n", "request must be a JSON object"},
        BadRequest{"string", "\"conns\"\n", "request must be a JSON object"},
        BadRequest{"no_command", "{}\n", "request has no \"command\" string"},
        BadRequest{"command_not_string", "{\"command\":7}\n", "request has no \"command\" string"},
        BadRequest{
            "too_deep",
            "{\"command\":\"x\",\"a\":" + std::string(1000, '[') + std::string(1000, ']') + "}\n",
            "request nested deeper than"},
        BadRequest{"invalid_utf8", "{\"command\":\"\xff\"}\n", "request is not valid JSON"}),
    [](const auto& info) { return info.param.name; });

TEST_F(ServerTest, AHandlerThatThrowsBecomesAnErrorReply) {
  serve([](const json& request) -> json {
    if (request["command"] == "boom") throw std::runtime_error("kaboom");
    return echo(request);
  });
  auto reply = api::call(config_.socket, {{"command", "boom"}}, milliseconds(5000));
  ASSERT_FALSE(reply);
  EXPECT_THAT(reply.error().message, HasSubstr("kaboom"));
  EXPECT_TRUE(api::call(config_.socket, {{"command", "ok"}}, milliseconds(5000)));
}

TEST_F(ServerTest, AnOversizedRequestGetsAnErrorAndIsClosed) {
  serve();
  UniqueFd fd = connect_raw(config_.socket);
  ASSERT_TRUE(fd);
  // More than the cap, no newline; the server stops reading at the cap.
  std::string big = "{\"command\":\"" + std::string(api::kMaxRequestBytes + 100, 'a');
  send_text(fd.get(), big);  // may fail with EPIPE once the server closed
  auto got = read_until_closed(fd.get());
  EXPECT_TRUE(got.closed) << "still open";
  EXPECT_THAT(got.text, StartsWith("{\"error\":\"request too large"));
  EXPECT_EQ(stopped_stats().oversized, 1u);
}

TEST_F(ServerTest, ARequestOfExactlyTheCapIsServed) {
  serve();
  std::string prefix = "{\"command\":\"x\",\"pad\":\"";
  std::string suffix = "\"}\n";
  std::string line =
      prefix + std::string(api::kMaxRequestBytes - prefix.size() - suffix.size(), 'p') + suffix;
  ASSERT_EQ(line.size(), api::kMaxRequestBytes);
  json reply = ask_raw(config_.socket, line);
  EXPECT_TRUE(reply.contains("echo")) << reply.dump().substr(0, 200);
  EXPECT_THAT(ask_raw(config_.socket, "x" + line)["error"].get<std::string>(),
              StartsWith("request too large"));
}

TEST_F(ServerTest, AClientThatStallsMidRequestIsClosedAtTheTimeout) {
  EXPECT_EQ(api::kRequestTimeout, milliseconds(2000));
  api::ServerLimits limits;
  limits.request_timeout = milliseconds(300);
  serve(echo, limits);
  UniqueFd fd = connect_raw(config_.socket);
  ASSERT_TRUE(fd);
  auto started = Clock::now();
  ASSERT_TRUE(send_text(fd.get(), "{\"command\":"));
  auto got = read_until_closed(fd.get(), milliseconds(5000));
  auto waited = Clock::now() - started;
  EXPECT_TRUE(got.closed);
  EXPECT_THAT(got.text, HasSubstr("timeout"));
  EXPECT_GE(waited, milliseconds(250));
  EXPECT_LT(waited, milliseconds(3000));
  EXPECT_EQ(stopped_stats().timed_out, 1u);
}

TEST_F(ServerTest, TheClientOverTheLimitIsTurnedAwayWhileTheOthersAreServed) {
  serve();
  std::vector<UniqueFd> held;
  for (std::size_t i = 0; i < api::kMaxClients; ++i) {
    held.push_back(connect_raw(config_.socket));
    ASSERT_TRUE(held.back()) << "client " << i;
  }
  UniqueFd extra = connect_raw(config_.socket);
  ASSERT_TRUE(extra);
  auto turned_away = read_until_closed(extra.get(), milliseconds(3000));
  EXPECT_TRUE(turned_away.closed) << "the 33rd client was kept";
  EXPECT_THAT(turned_away.text, HasSubstr("busy"));

  for (auto& fd : held) ASSERT_TRUE(send_text(fd.get(), "{\"command\":\"conns\"}\n"));
  for (auto& fd : held) {
    auto got = read_until_closed(fd.get());
    EXPECT_TRUE(got.closed);
    EXPECT_THAT(got.text, HasSubstr("echo"));
  }
  const auto& stats = stopped_stats();
  EXPECT_EQ(stats.rejected_busy, 1u);
  EXPECT_EQ(stats.requests, api::kMaxClients);
}

TEST_F(ServerTest, ALargeReplyIsDeliveredWhole) {
  // Far beyond a socket buffer: the server must buffer and wait for EPOLLOUT.
  const std::string payload(8 * 1024 * 1024, 'z');
  serve([&payload](const json&) { return json{{"payload", payload}}; });
  auto reply = api::call(config_.socket, {{"command", "big"}}, milliseconds(10'000));
  ASSERT_TRUE(reply) << reply.error().message;
  EXPECT_EQ((*reply)["payload"].get<std::string>().size(), payload.size());
}

TEST_F(ServerTest, TheSocketIsPrivateAndRemovedWithTheServer) {
  config_.socket = dir_ / "run/trustfence/api.sock";  // directories made on demand
  serve();
  struct stat st {};
  ASSERT_EQ(::lstat(config_.socket.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  ASSERT_EQ(::stat((dir_ / "run/trustfence").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);

  serving_->stop();
  serving_->destroy_server();
  EXPECT_NE(::lstat(config_.socket.c_str(), &st), 0) << "socket file left behind";
}

TEST_F(ServerTest, ALiveSocketIsNotTaken) {
  serve();
  auto other_loop = runtime::EventLoop::create();
  ASSERT_TRUE(other_loop);
  auto second = api::Server::start(*other_loop, config_, echo);
  ASSERT_FALSE(second) << "a second server took a live socket";
  EXPECT_THAT(second.error().message, HasSubstr(config_.socket));
  auto reply = api::call(config_.socket, {{"command", "still-there"}}, milliseconds(5000));
  EXPECT_TRUE(reply) << reply.error().message;
}

TEST_F(ServerTest, AStaleSocketIsReplaced) {
  {
    // Bound but never listening: what a killed agent leaves behind.
    UniqueFd dead(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, config_.socket.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(dead.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  serve();
  EXPECT_TRUE(api::call(config_.socket, {{"command", "x"}}, milliseconds(5000)));
}

TEST_F(ServerTest, AFileThatIsNotASocketIsLeftAlone) {
  { std::ofstream(config_.socket) << "precious"; }
  auto loop = runtime::EventLoop::create();
  ASSERT_TRUE(loop);
  auto server = api::Server::start(*loop, config_, echo);
  ASSERT_FALSE(server);
  EXPECT_THAT(server.error().message, HasSubstr("not a socket"));
  std::ifstream in(config_.socket);
  std::string text;
  in >> text;
  EXPECT_EQ(text, "precious");
}

TEST_F(ServerTest, AnUnknownGroupIsNamed) {
  config_.group = "no-such-group-tf";
  auto loop = runtime::EventLoop::create();
  ASSERT_TRUE(loop);
  auto server = api::Server::start(*loop, config_, echo);
  ASSERT_FALSE(server);
  EXPECT_THAT(server.error().message, HasSubstr("no-such-group-tf"));
}

TEST_F(ServerTest, ATooLongPathIsRefused) {
  config_.socket = dir_ / std::string(200, 's');
  auto loop = runtime::EventLoop::create();
  ASSERT_TRUE(loop);
  auto server = api::Server::start(*loop, config_, echo);
  ASSERT_FALSE(server);
  EXPECT_EQ(server.error().code, Errc::kInvalidArgument);
}

// What a caller with other credentials gets: in a forked child that drops
// to them, with only async-signal-safe calls; the reply comes back on a pipe.
struct Caller {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;
};

std::string ask_as(const Caller& who, const std::string& path) {
  int out[2];
  if (::pipe(out) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(out[0]);
    if (::setgroups(who.groups.size(), who.groups.data()) != 0 ||
        ::setresgid(who.gid, who.gid, who.gid) != 0 || ::setresuid(who.uid, who.uid, who.uid) != 0)
      ::_exit(3);
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      const char msg[] = "connect refused";
      (void)!::write(out[1], msg, sizeof(msg) - 1);
      ::_exit(0);
    }
    const char request[] = "{\"command\":\"conns\"}\n";
    (void)!::send(fd, request, sizeof(request) - 1, MSG_NOSIGNAL);  // may be refused already
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof(buf))) > 0) (void)!::write(out[1], buf, n);
    ::_exit(0);
  }
  ::close(out[1]);
  UniqueFd reader(out[0]);
  std::string text;
  if (pid < 0) return "fork failed";
  auto got = read_until_closed(reader.get(), milliseconds(10'000));
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return "child failed, status " + std::to_string(status) + ": " + got.text;
  return got.text;
}

void open_up(const std::string& dir, const std::string& socket) {
  // The directory must be searchable and the file writable by the caller,
  // so that the server's own check is what stands in its way.
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(socket.c_str(), 0666), 0);
}

TEST_F(ServerTest, ACallerWithAnotherUidIsDenied) {
  TF_REQUIRE_ROOT();
  serve();
  ASSERT_NO_FATAL_FAILURE(open_up(dir_.path(), config_.socket));
  std::string reply = ask_as({kNobodyUid, kNobodyGid, {}}, config_.socket);
  EXPECT_THAT(reply, StartsWith("{\"error\":\"permission denied: uid 65534"));
  EXPECT_EQ(stopped_stats().denied, 1u);
}

TEST_F(ServerTest, MembersOfTheApiGroupMayAsk) {
  TF_REQUIRE_ROOT();
  config_.group = std::to_string(kNobodyGid);  // a bare gid, named or not
  serve();
  struct stat st {};
  ASSERT_EQ(::lstat(config_.socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, kNobodyGid);
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);

  constexpr uid_t kStranger = 12345;
  EXPECT_THAT(ask_as({kStranger, kNobodyGid, {}}, config_.socket), HasSubstr("\"echo\""))
      << "primary group";
  EXPECT_THAT(ask_as({kStranger, kStranger, {kNobodyGid}}, config_.socket), HasSubstr("\"echo\""))
      << "supplementary group";
  EXPECT_EQ(ask_as({kStranger, kStranger, {}}, config_.socket), "connect refused")
      << "the file mode keeps outsiders out";
  ASSERT_NO_FATAL_FAILURE(open_up(dir_.path(), config_.socket));
  EXPECT_THAT(ask_as({kStranger, kStranger, {}}, config_.socket),
              StartsWith("{\"error\":\"permission denied"))
      << "and so does the server";
  EXPECT_EQ(stopped_stats().denied, 1u);
}

struct StatusCase {
  std::string name;
  std::string text;
  std::optional<std::vector<gid_t>> groups;
};

class ProcStatusGroups : public ::testing::TestWithParam<StatusCase> {};

TEST_P(ProcStatusGroups, Parses) {
  EXPECT_EQ(api::groups_from_proc_status(GetParam().text), GetParam().groups);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ProcStatusGroups,
    ::testing::Values(StatusCase{"several",
                                 "Name:\tx\nGid:\t5\t5\t5\t5\nGroups:\t4 24 27 \nNStgid:\t1\n",
                                 std::vector<gid_t>{4, 24, 27}},
                      StatusCase{"none", "Name:\tx\nGroups:\t\nNStgid:\t1\n", std::vector<gid_t>{}},
                      StatusCase{"last_line", "Groups:\t7", std::vector<gid_t>{7}},
                      StatusCase{"missing", "Name:\tx\nGid:\t5\n", std::nullopt},
                      StatusCase{"not_at_line_start", "XGroups:\t1\n", std::nullopt},
                      StatusCase{"garbage", "Groups:\t1 two 3\n", std::nullopt},
                      StatusCase{"overflow", "Groups:\t99999999999999\n", std::nullopt}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace trustfence::testing
