#pragma once

// Sockets in other network namespaces. In Kubernetes the agent runs in the
// host's netns while the pods it enforces each have their own, yet their
// cgroups lie under the enforced one, so the programs see their sockets.
// What the agent does *to* a socket through the kernel's per-netns
// interfaces (SOCK_DESTROY, the TCP socket iterator) only reaches the netns
// it is done from, so it has to be done from the socket's.
//
// The socket's netns is learnt from its cgroup (tf_conn.cgroup_id): the
// processes listed in that cgroup's cgroup.procs, and the netns inode of
// each (/proc/PID/ns/net). Only numbers are cached (cgroup id -> pid and
// netns inode), never an fd: an open netns (or a socket made in it) would
// keep a dead pod's namespace alive, and would cost one fd per pod. A netns
// is entered through a fresh pidfd on a short-lived thread, and its inode is
// checked once inside, so a pid that exited or was reused is noticed there
// (and the cgroup looked at again) instead of acting in the wrong netns.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"

namespace trustfence::datapath {

// A network namespace's inode number, as /proc/PID/ns/net shows it
// (net:[4026531840]): unique among living namespaces.
using NetnsIno = std::uint64_t;

// The netns the calling thread is in.
Result<NetnsIno> current_netns();

// The pids of a cgroup.procs text, at most max of them; anything that is not
// a positive decimal pid on its own line is skipped.
std::vector<pid_t> parse_pids(std::string_view procs, std::size_t max);

// A process of some cgroup and the netns it was seen in.
struct NetnsMember {
  pid_t pid = 0;
  NetnsIno ino = 0;
  friend bool operator==(const NetnsMember&, const NetnsMember&) = default;
};

// Where the processes of one cgroup live.
struct CgroupNetns {
  bool own = false;                  // at least one in the agent's netns
  std::vector<NetnsMember> foreign;  // one per other netns, at most kMaxNetnsPerCgroup
  // No process found that the agent can reach (the cgroup is empty or gone,
  // /proc shows another pid namespace, no CAP_SYS_ADMIN): the caller falls
  // back to the agent's netns.
  bool unknown() const { return !own && foreign.empty(); }
};

// What the agent did in other netns, for stats and tests. Monotonic.
struct NetnsCounters {
  std::uint64_t lookups = 0;            // cgroups whose processes were listed
  std::uint64_t unresolved = 0;         // sockets whose netns was not found: agent's netns used
  std::uint64_t entered = 0;            // times a thread entered another netns
  std::uint64_t enter_failed = 0;       // its process was gone or in another netns by then
  std::uint64_t evicted = 0;            // cache entries dropped to stay within bounds
  std::uint64_t foreign_walks = 0;      // tf_resend_held runs in another netns
  std::uint64_t foreign_pushed = 0;     // held sockets pushed there
  std::uint64_t foreign_destroyed = 0;  // denied sockets destroyed there
};

class NetnsResolver {
 public:
  // Cgroups remembered; the least recently used is forgotten beyond.
  static constexpr std::size_t kMaxCgroups = 4096;
  // Distinct netns kept per cgroup (a pod's containers share one).
  static constexpr std::size_t kMaxNetnsPerCgroup = 8;
  // Processes of a cgroup looked at, and the bytes of cgroup.procs read.
  static constexpr std::size_t kMaxPidsScanned = 64;
  static constexpr std::size_t kMaxProcsBytes = 16 * 1024;
  // A cgroup is listed again on a miss only if its answer is older.
  static constexpr std::chrono::milliseconds kRefreshAfter{1'000};

  // cgroup_path: the enforced cgroup (any cgroup v2 directory will do: it
  // names the filesystem cgroup ids are looked up in).
  static Result<std::unique_ptr<NetnsResolver>> open(const std::string& cgroup_path);

  NetnsResolver(const NetnsResolver&) = delete;
  NetnsResolver& operator=(const NetnsResolver&) = delete;

  NetnsIno own() const { return own_; }
  // False without CAP_SYS_ADMIN (setns): sockets of other netns are then
  // all unresolved, and the agent acts in its own netns only.
  bool can_enter() const { return can_enter_; }

  enum class Freshness {
    kCached,   // the cached answer, if any
    kRefresh,  // list the cgroup again unless its answer is fresher than kRefreshAfter
  };
  // Where the processes of the cgroup with this id live. Thread-safe.
  CgroupNetns locate(std::uint64_t cgroup_id, Freshness freshness = Freshness::kCached);

  // Runs make() on a short-lived thread that entered member's netns, after
  // checking it is still that netns, and returns the fd it made: a socket
  // or an iterator keeps the netns it was made in. The calling thread never
  // moves. kNotFound when the process is gone or in another netns now.
  Result<UniqueFd> make_in(const NetnsMember& member,
                           const std::function<Result<UniqueFd>()>& make);

  NetnsCounters counters() const;
  void count_unresolved() { unresolved_.fetch_add(1, std::memory_order_relaxed); }
  void count_foreign_walk(std::uint64_t pushed);
  void count_foreign_destroyed() { foreign_destroyed_.fetch_add(1, std::memory_order_relaxed); }

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    CgroupNetns where;
    Clock::time_point listed;
    Clock::time_point used;
  };

  NetnsResolver(NetnsIno own, bool can_enter, UniqueFd cgroup_root, int handle_type)
      : own_(own),
        can_enter_(can_enter),
        cgroup_root_(std::move(cgroup_root)),
        handle_type_(handle_type) {}

  CgroupNetns list(std::uint64_t cgroup_id) const;
  UniqueFd open_cgroup(std::uint64_t cgroup_id) const;
  void forget_oldest();  // mutex_ held

  const NetnsIno own_;
  const bool can_enter_;
  const UniqueFd cgroup_root_;  // a directory of the cgroup v2 mount
  const int handle_type_;       // of cgroup v2 file handles (FILEID_KERNFS)
  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, Entry> cgroups_;  // guarded by mutex_
  std::atomic<std::uint64_t> lookups_{0}, unresolved_{0}, entered_{0}, enter_failed_{0},
      evicted_{0}, foreign_walks_{0}, foreign_pushed_{0}, foreign_destroyed_{0};
};

}  // namespace trustfence::datapath
