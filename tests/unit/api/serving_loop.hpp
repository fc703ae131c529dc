#pragma once

// An api::Server on a socket in a fresh temporary directory, served by an
// EventLoop on its own thread, for the API and CLI tests. The loop is only
// touched from its thread: stop() wakes it through a pipe and joins, after
// which the test thread may read (or destroy) the server.

#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "trustfence/api/server.hpp"
#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"
#include "trustfence/runtime/event_loop.hpp"

namespace trustfence::testing {

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "tf-api-XXXXXX").string();
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

class ServingLoop {
 public:
  static Result<std::unique_ptr<ServingLoop>> start(const config::ApiConfig& config,
                                                    api::Server::Handler handler,
                                                    api::ServerLimits limits = {}) {
    auto loop = runtime::EventLoop::create();
    if (!loop) return std::unexpected(loop.error());
    std::unique_ptr<ServingLoop> serving(new ServingLoop(std::move(*loop)));
    auto server = api::Server::start(serving->loop_, config, std::move(handler), limits);
    if (!server) return std::unexpected(server.error());
    serving->server_ = std::move(*server);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("pipe2", errno);
    serving->wake_read_.reset(fds[0]);
    serving->wake_write_.reset(fds[1]);
    ServingLoop* self = serving.get();
    if (auto ok = self->loop_.add(self->wake_read_.get(), EPOLLIN,
                                  [self](std::uint32_t) { self->loop_.stop(); });
        !ok)
      return std::unexpected(ok.error());
    serving->thread_ =
        std::thread([self] { self->result_ = self->loop_.run(std::chrono::seconds(1)); });
    return serving;
  }

  ~ServingLoop() {
    stop();
    server_.reset();  // before the loop it is registered with
  }

  void stop() {
    if (!thread_.joinable()) return;
    char byte = 0;
    (void)::write(wake_write_.get(), &byte, 1);
    thread_.join();
  }

  // Only after stop(), or from the handler.
  api::Server& server() { return *server_; }
  void destroy_server() { server_.reset(); }
  const Result<void>& result() const { return result_; }

 private:
  explicit ServingLoop(runtime::EventLoop loop) : loop_(std::move(loop)) {}

  runtime::EventLoop loop_;
  std::unique_ptr<api::Server> server_;
  UniqueFd wake_read_;
  UniqueFd wake_write_;
  std::thread thread_;
  Result<void> result_;
};

}  // namespace trustfence::testing
