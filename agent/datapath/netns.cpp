#include "trustfence/datapath/netns.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <system_error>
#include <thread>

#include "trustfence/datapath/host.hpp"

namespace trustfence::datapath {
namespace {

// Directories looked at when cgroup ids cannot be opened by handle.
constexpr std::size_t kMaxCgroupsWalked = 65'536;

std::string describe(const NetnsMember& member) {
  return "netns net:[" + std::to_string(member.ino) + "] (through pid " +
         std::to_string(member.pid) + ")";
}

Result<NetnsIno> netns_at(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fail_errno("reading " + path, errno);
  return static_cast<NetnsIno>(st.st_ino);
}

Result<std::string> read_bounded(int fd, std::size_t max) {
  std::string text(max, '\0');
  std::size_t used = 0;
  while (used < max) {
    ssize_t n = ::read(fd, text.data() + used, max - used);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("reading cgroup.procs", errno);
    }
    used += static_cast<std::size_t>(n);
  }
  text.resize(used);
  return text;
}

// Depth-first search below dir for the cgroup directory whose inode (its
// kernfs id) is id; budget bounds the directories opened.
UniqueFd find_cgroup(int dir, std::uint64_t id, std::size_t& budget) {
  int dup = ::fcntl(dir, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return {};
  DIR* stream = ::fdopendir(dup);
  if (!stream) {
    ::close(dup);
    return {};
  }
  std::unique_ptr<DIR, int (*)(DIR*)> owner(stream, ::closedir);
  std::vector<std::string> children;
  while (dirent* entry = ::readdir(stream)) {
    if (entry->d_type != DT_DIR || entry->d_name[0] == '.') continue;
    if (entry->d_ino == id)
      return UniqueFd(::openat(dir, entry->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    children.emplace_back(entry->d_name);
  }
  owner.reset();
  for (const auto& name : children) {
    if (budget == 0) return {};
    --budget;
    UniqueFd child(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!child) continue;
    if (auto found = find_cgroup(child.get(), id, budget)) return found;
  }
  return {};
}

}  // namespace

Result<NetnsIno> current_netns() { return netns_at("/proc/thread-self/ns/net"); }

std::vector<pid_t> parse_pids(std::string_view procs, std::size_t max) {
  std::vector<pid_t> pids;
  while (pids.size() < max) {
    auto newline = procs.find('\n');
    if (newline == std::string_view::npos) break;  // none, or a line a bounded read cut
    auto line = procs.substr(0, newline);
    procs.remove_prefix(newline + 1);
    pid_t pid = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), pid);
    if (ec == std::errc() && end == line.data() + line.size() && pid > 0) pids.push_back(pid);
  }
  return pids;
}

Result<std::unique_ptr<NetnsResolver>> NetnsResolver::open(const std::string& cgroup_path) {
  auto own = current_netns();
  if (!own) return std::unexpected(own.error());
  UniqueFd root(::open(cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return fail_errno("cgroup: opening " + cgroup_path, errno);
  // The handle type cgroup ids are opened with (FILEID_KERNFS), read from
  // the filesystem rather than assumed.
  struct {
    file_handle handle;
    std::uint64_t id;
  } fh{};
  fh.handle.handle_bytes = sizeof(fh.id);
  int mount_id = 0;
  if (::name_to_handle_at(root.get(), "", &fh.handle, &mount_id, AT_EMPTY_PATH) != 0)
    return fail_errno("cgroup: reading the file handle of " + cgroup_path, errno);
  auto caps = effective_capabilities();
  const bool can_enter = caps && (*caps & (std::uint64_t{1} << CAP_SYS_ADMIN)) != 0;
  return std::unique_ptr<NetnsResolver>(
      new NetnsResolver(*own, can_enter, std::move(root), fh.handle.handle_type));
}

UniqueFd NetnsResolver::open_cgroup(std::uint64_t cgroup_id) const {
  struct {
    file_handle handle;
    std::uint64_t id;
  } fh{};
  fh.handle.handle_bytes = sizeof(fh.id);
  fh.handle.handle_type = handle_type_;
  std::memcpy(fh.handle.f_handle, &cgroup_id, sizeof(cgroup_id));
  UniqueFd dir(
      ::open_by_handle_at(cgroup_root_.get(), &fh.handle, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir || errno != EPERM) return dir;
  // Without CAP_DAC_READ_SEARCH: look for it below the enforced cgroup.
  std::size_t budget = kMaxCgroupsWalked;
  return find_cgroup(cgroup_root_.get(), cgroup_id, budget);
}

CgroupNetns NetnsResolver::list(std::uint64_t cgroup_id) const {
  CgroupNetns where;
  UniqueFd dir = open_cgroup(cgroup_id);
  if (!dir) return where;  // gone, or not below the enforced cgroup
  UniqueFd procs(::openat(dir.get(), "cgroup.procs", O_RDONLY | O_CLOEXEC));
  if (!procs) return where;
  auto text = read_bounded(procs.get(), kMaxProcsBytes);
  if (!text) return where;
  for (pid_t pid : parse_pids(*text, kMaxPidsScanned)) {
    auto ino = netns_at("/proc/" + std::to_string(pid) + "/ns/net");
    if (!ino) continue;  // exited meanwhile
    if (*ino == own_) {
      where.own = true;
      continue;
    }
    bool seen = std::any_of(where.foreign.begin(), where.foreign.end(),
                            [&](const NetnsMember& m) { return m.ino == *ino; });
    if (!seen && can_enter_ && where.foreign.size() < kMaxNetnsPerCgroup)
      where.foreign.push_back({pid, *ino});
  }
  return where;
}

CgroupNetns NetnsResolver::locate(std::uint64_t cgroup_id, Freshness freshness) {
  const auto now = Clock::now();
  {
    std::lock_guard lock(mutex_);
    if (auto it = cgroups_.find(cgroup_id); it != cgroups_.end()) {
      if (freshness == Freshness::kCached || now - it->second.listed < kRefreshAfter) {
        it->second.used = now;
        return it->second.where;
      }
    }
  }
  // Outside the lock: it reads /proc, and the other thread may be waiting.
  auto where = list(cgroup_id);
  lookups_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  if (!cgroups_.contains(cgroup_id) && cgroups_.size() >= kMaxCgroups) forget_oldest();
  cgroups_[cgroup_id] = Entry{where, now, now};
  return where;
}

void NetnsResolver::forget_oldest() {
  auto oldest =
      std::min_element(cgroups_.begin(), cgroups_.end(),
                       [](const auto& a, const auto& b) { return a.second.used < b.second.used; });
  if (oldest == cgroups_.end()) return;
  cgroups_.erase(oldest);
  evicted_.fetch_add(1, std::memory_order_relaxed);
}

Result<UniqueFd> NetnsResolver::make_in(const NetnsMember& member,
                                        const std::function<Result<UniqueFd>()>& make) {
  auto gone = [&](std::string why) -> Result<UniqueFd> {
    enter_failed_.fetch_add(1, std::memory_order_relaxed);
    // Whatever cached this member is stale: list those cgroups afresh.
    std::lock_guard lock(mutex_);
    std::erase_if(cgroups_, [&](const auto& entry) {
      const auto& foreign = entry.second.where.foreign;
      return std::find(foreign.begin(), foreign.end(), member) != foreign.end();
    });
    return fail(Errc::kNotFound, "entering " + describe(member) + ": " + why);
  };
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, member.pid, 0)));
  if (!pidfd) {
    if (errno == ESRCH) return gone("the process exited");
    return fail_errno("entering " + describe(member) + ": pidfd_open", errno);
  }
  Result<UniqueFd> made = fail(Errc::kIo, "entering " + describe(member) + ": not run");
  int setns_err = 0;
  NetnsIno found = 0;
  try {
    // The thread ends inside the netns: nothing else ever runs on it.
    std::thread worker([&] {
      if (::setns(pidfd.get(), CLONE_NEWNET) != 0) {
        setns_err = errno;
        return;
      }
      auto now = current_netns();
      if (!now) {
        made = std::unexpected(now.error());
        return;
      }
      found = *now;
      if (found == member.ino) made = make();
    });
    worker.join();
  } catch (const std::system_error& e) {
    return fail(Errc::kIo, "entering " + describe(member) + ": starting a thread: " + e.what());
  }
  if (setns_err == ESRCH) return gone("the process exited");
  if (setns_err != 0)
    return fail_errno("entering " + describe(member) +
                          " (setns needs CAP_SYS_ADMIN, and /proc of the host's pid namespace)",
                      setns_err);
  if (found != 0 && found != member.ino)
    return gone("the process is in net:[" + std::to_string(found) + "] now");
  entered_.fetch_add(1, std::memory_order_relaxed);
  return made;
}

void NetnsResolver::count_foreign_walk(std::uint64_t pushed) {
  foreign_walks_.fetch_add(1, std::memory_order_relaxed);
  foreign_pushed_.fetch_add(pushed, std::memory_order_relaxed);
}

NetnsCounters NetnsResolver::counters() const {
  auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  NetnsCounters c;
  c.lookups = get(lookups_);
  c.unresolved = get(unresolved_);
  c.entered = get(entered_);
  c.enter_failed = get(enter_failed_);
  c.evicted = get(evicted_);
  c.foreign_walks = get(foreign_walks_);
  c.foreign_pushed = get(foreign_pushed_);
  c.foreign_destroyed = get(foreign_destroyed_);
  return c;
}

}  // namespace trustfence::datapath
