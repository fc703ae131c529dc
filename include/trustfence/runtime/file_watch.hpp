#pragma once

// Calls back when any of a set of files changes: edited in place, replaced
// by a rename, or swapped the way Kubernetes updates a mounted ConfigMap or
// Secret (a "..data" symlink flip). Watches the files' directories with
// inotify, so a file replaced by a new inode is still seen; bursts are
// coalesced into one call after a quiet period.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"
#include "trustfence/runtime/event_loop.hpp"

namespace trustfence::runtime {

class FileWatch {
 public:
  static Result<std::unique_ptr<FileWatch>> start(EventLoop& loop,
                                                  const std::vector<std::string>& files,
                                                  std::chrono::milliseconds quiet,
                                                  std::function<void()> on_change);
  ~FileWatch();
  FileWatch(const FileWatch&) = delete;
  FileWatch& operator=(const FileWatch&) = delete;

 private:
  FileWatch(EventLoop& loop, std::chrono::milliseconds quiet, std::function<void()> on_change)
      : loop_(loop), quiet_(quiet), on_change_(std::move(on_change)) {}
  void on_readable();

  EventLoop& loop_;
  std::chrono::milliseconds quiet_;
  std::function<void()> on_change_;
  UniqueFd inotify_;
  std::map<int, std::set<std::string>> names_;  // watch descriptor -> file names in it
  std::optional<EventLoop::TimerId> pending_;
};

}  // namespace trustfence::runtime
