#pragma once

// The loaded datapath: programs attached to the enforced cgroup through
// pinned BPF links, maps pinned under pin_dir. Opening it again (a restart
// or an upgrade) reuses the pinned maps and swaps the programs behind the
// pinned links, so enforcement and verdicts never lapse.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "trustfence/abi.h"
#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"
#include "trustfence/datapath/conn_table.hpp"
#include "trustfence/datapath/events.hpp"
#include "trustfence/datapath/exemption.hpp"
#include "trustfence/datapath/netns.hpp"
#include "trustfence/datapath/typed_map.hpp"

struct tf_datapath;
struct bpf_link;

namespace trustfence::datapath {

inline constexpr const char* kDefaultPinDir = "/sys/fs/bpf/trustfence";
// Lowest RTO floor worth asking for: the kernel refuses under 2 jiffies.
inline constexpr std::uint32_t kDefaultPendingRtoMinUs = 10'000;

struct DatapathOptions {
  std::string cgroup;  // absolute, or relative to the cgroup v2 mount
  std::string pin_dir = kDefaultPinDir;
  tf_mode mode = TF_MODE_ENFORCE;
  tf_verdict untracked_verdict = TF_VERDICT_ALLOW;
  std::uint32_t pending_rto_min_us = kDefaultPendingRtoMinUs;
  std::uint32_t max_connections = TF_DEFAULT_MAX_CONNS;
  std::vector<Exemption> exemptions;
};

// Sums per-CPU tf_stats.
tf_stats sum_stats(const std::vector<tf_stats>& per_cpu);

// What an open found in pin_dir.
enum class PinState { kFresh, kReused };

class Datapath {
 public:
  static Result<Datapath> open(const DatapathOptions& options);
  // Detaches the programs and removes every pin under pin_dir.
  static Result<void> uninstall(const std::string& pin_dir);

  struct LinkDeleter {
    void operator()(bpf_link* link) const;
  };

  Datapath(Datapath&&) noexcept;
  Datapath& operator=(Datapath&&) noexcept;
  ~Datapath();

  ConnTable& conns() { return *conns_; }
  // Where tracked sockets live, for acting on them in their own netns
  // (destroy_socket, resend_held). Thread-safe.
  NetnsResolver& netns() { return *netns_; }

  // Writes verdicts, then has the payload that allowed sockets had held
  // back at egress (listed in tf_held) pushed out at once, instead of
  // leaving it to TCP's retransmission timer. The push walks every TCP
  // socket of the host (~2 ms), so it runs on the resend thread, which
  // takes everything queued during its previous walk in one go: the caller
  // never waits for it. Returns how many connections were still there to
  // take their verdict.
  Result<std::size_t> apply_verdicts(std::span<const std::pair<Cookie, VerdictUpdate>> verdicts);
  // Pushes the pending frames of these sockets now, on this thread (see
  // bpf/lib/resend.bpf.h), from the netns each lives in: the agent's own,
  // or that of its cgroup's processes (see netns.hpp). One walk per netns
  // per 4,096 sockets; sockets no walk met are looked up again once.
  Result<void> resend_held(std::span<const Cookie> cookies);
  // Waits until the resend thread has pushed everything queued so far.
  void wait_for_resends();
  // False on kernels without TCP socket iterators that may set options.
  bool resend_supported() const { return resend_link_ != nullptr; }
  Result<tf_stats> stats() const;
  Result<EventReader> events(EventReader::Callback callback) const;
  Result<void> set_exemptions(const std::vector<Exemption>& exemptions);

  PinState pin_state() const { return pin_state_; }
  std::uint64_t cgroup_id() const { return cgroup_id_; }
  const std::string& cgroup_path() const { return cgroup_path_; }
  // Program ids, for benchmarks reading kernel BPF stats.
  std::vector<std::uint32_t> program_ids() const;

 private:
  struct SkeletonDeleter {
    void operator()(tf_datapath* skel) const;
  };

  Datapath() = default;

  UniqueFd pin_lock_;  // flock on pin_dir, held while we run
  std::unique_ptr<tf_datapath, SkeletonDeleter> skel_;
  std::unique_ptr<bpf_link, LinkDeleter> resend_link_;  // not pinned: per agent
  std::unique_ptr<NetnsResolver> netns_;
  class ResendThread;
  struct ResendThreadDeleter {
    void operator()(ResendThread* thread) const;
  };
  // Declared after what it uses, so it is joined before they go.
  std::unique_ptr<ResendThread, ResendThreadDeleter> resend_thread_;
  std::unique_ptr<ConnTable> conns_;
  std::optional<PerCpuArray<tf_stats>> stats_;
  std::optional<TypedMap<tf_exempt_key, std::uint8_t>> exempt_;
  PinState pin_state_ = PinState::kFresh;
  std::uint64_t cgroup_id_ = 0;
  std::string cgroup_path_;
};

// Read-only view of a pinned datapath (agent not running): for the CLI.
struct PinnedMaps {
  std::unique_ptr<BpfConnTable> conns;
  std::optional<PerCpuArray<tf_stats>> stats;

  static Result<PinnedMaps> open(const std::string& pin_dir);
};

}  // namespace trustfence::datapath
