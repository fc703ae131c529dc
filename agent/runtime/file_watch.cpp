#include "trustfence/runtime/file_watch.hpp"

#include <sys/inotify.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <filesystem>

namespace trustfence::runtime {

namespace fs = std::filesystem;

Result<std::unique_ptr<FileWatch>> FileWatch::start(EventLoop& loop,
                                                    const std::vector<std::string>& files,
                                                    std::chrono::milliseconds quiet,
                                                    std::function<void()> on_change) {
  std::unique_ptr<FileWatch> watch(new FileWatch(loop, quiet, std::move(on_change)));
  watch->inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!watch->inotify_) return fail_errno("inotify_init1", errno);
  std::map<std::string, int> by_dir;
  for (const auto& file : files) {
    fs::path path = fs::absolute(file).lexically_normal();
    std::string dir = path.parent_path().string();
    auto it = by_dir.find(dir);
    if (it == by_dir.end()) {
      int wd = ::inotify_add_watch(
          watch->inotify_.get(), dir.c_str(),
          IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB | IN_MODIFY);
      if (wd < 0) return fail_errno("watching " + dir, errno);
      it = by_dir.emplace(dir, wd).first;
    }
    watch->names_[it->second].insert(path.filename().string());
    // Kubernetes flips this symlink to publish a new version of every file.
    watch->names_[it->second].insert("..data");
  }
  FileWatch* self = watch.get();
  if (auto ok =
          loop.add(watch->inotify_.get(), EPOLLIN, [self](std::uint32_t) { self->on_readable(); });
      !ok)
    return std::unexpected(ok.error());
  return watch;
}

FileWatch::~FileWatch() {
  if (pending_) loop_.cancel(*pending_);
  if (inotify_) loop_.remove(inotify_.get());
}

void FileWatch::on_readable() {
  alignas(inotify_event) std::array<char, 16 * 1024> buffer;
  bool relevant = false;
  for (;;) {
    ssize_t n = ::read(inotify_.get(), buffer.data(), buffer.size());
    if (n <= 0) break;
    for (ssize_t at = 0; at + static_cast<ssize_t>(sizeof(inotify_event)) <= n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buffer.data() + at);
      at += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      if (ev->mask & IN_Q_OVERFLOW) {
        relevant = true;  // lost track: assume the worst
        continue;
      }
      if (ev->len == 0) continue;
      auto it = names_.find(ev->wd);
      if (it != names_.end() && it->second.contains(std::string(ev->name))) relevant = true;
    }
  }
  if (!relevant) return;
  if (pending_) loop_.cancel(*pending_);
  pending_ = loop_.after(quiet_, [this] {
    pending_.reset();
    on_change_();
  });
}

}  // namespace trustfence::runtime
