#include "trustfence/datapath/datapath.hpp"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "tf_datapath.skel.h"
#include "trustfence/datapath/host.hpp"
#include "trustfence/datapath/netns.hpp"

namespace trustfence::datapath {
namespace fs = std::filesystem;
namespace {

constexpr std::array<const char*, 6> kMapPins = {"tf_conns", "tf_events",   "tf_exempt",
                                                 "tf_stats", "tf_overflow", "tf_meta"};
constexpr std::array<const char*, 3> kLinkPins = {"tf_sockops_link", "tf_egress_link",
                                                  "tf_ingress_link"};

// Given to libbpf when the kernel config is unreadable, which would
// otherwise fail the load: CONFIG_HZ 0 leaves RTO floors alone.
constexpr const char* kNoKernelConfig = "CONFIG_HZ=0\n";

tf_meta expected_meta() {
  tf_meta meta{};
  meta.magic = TF_ABI_MAGIC;
  meta.abi_version = TF_ABI_VERSION;
  meta.conn_size = sizeof(tf_conn);
  meta.event_size = sizeof(tf_event);
  meta.stats_size = sizeof(tf_stats);
  return meta;
}

std::string cleanup_hint(const std::string& pin_dir) {
  return "; if no agent of another version still needs them, remove them with `trustfence agent "
         "--uninstall --pin-dir " +
         pin_dir + "` (or `rm -r " + pin_dir + "`) and start again";
}

bool any_pin_exists(const std::string& pin_dir) {
  for (const char* name : kMapPins)
    if (fs::exists(fs::path(pin_dir) / name)) return true;
  for (const char* name : kLinkPins)
    if (fs::exists(fs::path(pin_dir) / name)) return true;
  return false;
}

// Pins in pin_dir must have been made by this ABI, or we would misread them.
Result<PinState> check_pins(const std::string& pin_dir) {
  if (!any_pin_exists(pin_dir)) return PinState::kFresh;
  auto meta_path = (fs::path(pin_dir) / "tf_meta").string();
  if (!fs::exists(meta_path))
    return fail(Errc::kIncompatible, "pinned maps in " + pin_dir +
                                         " have no tf_meta: they were made by an unknown, older "
                                         "trustfence" +
                                         cleanup_hint(pin_dir));
  auto fd = open_pinned(meta_path);
  if (!fd) return std::unexpected(fd.error());
  auto info = map_info(fd->get());
  if (!info) return std::unexpected(info.error());
  if (info->value_size != sizeof(tf_meta) || info->key_size != sizeof(__u32))
    return fail(Errc::kIncompatible,
                "pinned tf_meta in " + pin_dir + " has another layout" + cleanup_hint(pin_dir));
  tf_meta found{};
  __u32 zero = 0;
  if (bpf_map_lookup_elem(fd->get(), &zero, &found) != 0)
    return fail_errno("reading pinned tf_meta", errno);
  tf_meta want = expected_meta();
  if (found.magic != want.magic)
    return fail(Errc::kIncompatible, "pinned maps in " + pin_dir + " were not made by trustfence" +
                                         cleanup_hint(pin_dir));
  if (found.abi_version != want.abi_version || found.conn_size != want.conn_size ||
      found.event_size != want.event_size || found.stats_size != want.stats_size)
    return fail(Errc::kIncompatible, "pinned maps in " + pin_dir + " use ABI version " +
                                         std::to_string(found.abi_version) + ", this agent uses " +
                                         std::to_string(want.abi_version) + cleanup_hint(pin_dir));
  return PinState::kReused;
}

using LinkPtr = std::unique_ptr<bpf_link, Datapath::LinkDeleter>;

// Attaches prog to the cgroup through a pinned link, or, when a link is
// already pinned there, swaps prog in behind it without a gap.
Result<void> attach_pinned(bpf_program* prog, int cgroup_fd, std::uint64_t cgroup_id,
                           const std::string& pin_path) {
  const std::string name = bpf_program__name(prog);
  if (fs::exists(pin_path)) {
    LinkPtr link(bpf_link__open(pin_path.c_str()));
    if (!link) return fail_errno("opening pinned link " + pin_path, errno);
    bpf_link_info info{};
    __u32 len = sizeof(info);
    if (int err = bpf_obj_get_info_by_fd(bpf_link__fd(link.get()), &info, &len); err != 0)
      return fail_errno("reading pinned link " + pin_path, -err);
    if (info.type != BPF_LINK_TYPE_CGROUP || info.cgroup.cgroup_id != cgroup_id)
      return fail(Errc::kIncompatible,
                  "pinned link " + pin_path + " attaches " + name + " to cgroup id " +
                      std::to_string(info.cgroup.cgroup_id) +
                      ", not to the configured cgroup (id " + std::to_string(cgroup_id) + ")" +
                      cleanup_hint(fs::path(pin_path).parent_path()));
    if (int err = bpf_link__update_program(link.get(), prog); err != 0)
      return fail_errno("replacing " + name + " behind " + pin_path, -err);
    return {};
  }
  LinkPtr link(bpf_program__attach_cgroup(prog, cgroup_fd));
  if (!link) return fail_errno("attaching " + name + " to the cgroup", errno);
  if (int err = bpf_link__pin(link.get(), pin_path.c_str()); err != 0)
    return fail_errno("pinning " + name + " link at " + pin_path, -err);
  return {};
}

// A walk costs ~2 ms whatever the netns (the TCP hash is host-wide unless
// tcp_child_ehash_entries gave the netns its own): past this many netns in
// one batch, TCP's own 200 ms probe is as quick as the walks would be.
constexpr std::size_t kMaxForeignWalksPerBatch = 64;

// An iterator walks the TCP sockets of the netns of the thread that makes
// it (bpf_iter_init_seq_net takes current's netns when the fd is created),
// whichever thread reads it.
Result<UniqueFd> make_resend_iterator(int link_fd) {
  UniqueFd iter(bpf_iter_create(link_fd));
  if (!iter) return fail_errno("creating the tf_resend_held iterator", errno);
  return iter;
}

// Reading the iterator runs tf_resend_held over every TCP socket of its netns.
Result<void> drain_resend_iterator(int iter_fd) {
  char buf[64];
  for (;;) {
    ssize_t n = ::read(iter_fd, buf, sizeof(buf));
    if (n == 0) return {};
    if (n < 0 && errno != EINTR) return fail_errno("running tf_resend_held", errno);
  }
}

// Still in tf_resend: no walk has met the socket yet.
bool still_listed(int resend_fd, Cookie cookie) {
  std::uint8_t mark = 0;
  return bpf_map_lookup_elem(resend_fd, &cookie, &mark) == 0;
}

// The netns to walk for some listed sockets: those of their cgroups'
// processes, except the ones walked already.
struct ResendPlan {
  bool own = false;
  std::vector<std::pair<NetnsMember, std::vector<Cookie>>> foreign;
};

ResendPlan plan_resend(NetnsResolver& netns, int conns_fd, std::span<const Cookie> cookies,
                       NetnsResolver::Freshness freshness, const std::vector<NetnsIno>& walked) {
  auto was_walked = [&](NetnsIno ino) {
    return std::find(walked.begin(), walked.end(), ino) != walked.end();
  };
  ResendPlan plan;
  std::unordered_map<std::uint64_t, CgroupNetns> located;
  for (Cookie cookie : cookies) {
    tf_conn conn{};
    if (bpf_map_lookup_elem(conns_fd, &cookie, &conn) != 0) continue;  // closed
    auto [it, first] = located.try_emplace(conn.cgroup_id);
    if (first) it->second = netns.locate(conn.cgroup_id, freshness);
    const CgroupNetns& where = it->second;
    if (where.unknown() && freshness == NetnsResolver::Freshness::kCached) netns.count_unresolved();
    if (where.own || where.unknown()) plan.own = true;
    for (const auto& member : where.foreign) {
      if (was_walked(member.ino)) continue;
      auto slot = std::find_if(plan.foreign.begin(), plan.foreign.end(),
                               [&](const auto& f) { return f.first.ino == member.ino; });
      if (slot == plan.foreign.end()) slot = plan.foreign.insert(slot, {member, {}});
      slot->second.push_back(cookie);
    }
  }
  if (was_walked(netns.own())) plan.own = false;
  return plan;
}

// Pushes the sockets listed in tf_resend from the netns they live in: the
// agent's own (the fast path), then each other one with a listed socket.
Result<void> push_listed(NetnsResolver& netns, int link_fd, int resend_fd, int conns_fd,
                         std::span<const Cookie> batch) {
  std::vector<NetnsIno> walked;
  std::size_t foreign_walks = 0;
  std::optional<Error> failed;  // the first netns that could not be walked
  auto walk = [&](const ResendPlan& plan) -> Result<void> {
    if (plan.own) {
      auto iter = make_resend_iterator(link_fd);
      if (!iter) return std::unexpected(iter.error());
      if (auto ok = drain_resend_iterator(iter->get()); !ok) return ok;
      walked.push_back(netns.own());
    }
    for (const auto& [member, cookies] : plan.foreign) {
      if (foreign_walks == kMaxForeignWalksPerBatch) break;
      ++foreign_walks;
      auto iter = netns.make_in(member, [link_fd] { return make_resend_iterator(link_fd); });
      if (!iter) {
        // Gone (kNotFound): listed afresh below. Anything else: the others
        // are still worth walking.
        if (iter.error().code != Errc::kNotFound && !failed) failed = iter.error();
        continue;
      }
      walked.push_back(member.ino);
      if (auto ok = drain_resend_iterator(iter->get()); !ok) return ok;
      netns.count_foreign_walk(static_cast<std::uint64_t>(std::count_if(
          cookies.begin(), cookies.end(), [&](Cookie c) { return !still_listed(resend_fd, c); })));
    }
    return {};
  };
  if (auto ok =
          walk(plan_resend(netns, conns_fd, batch, NetnsResolver::Freshness::kCached, walked));
      !ok)
    return ok;
  // Open sockets no walk met: their cgroup's processes have moved since it
  // was listed (a pod restarted, a pid was reused). List them again (at
  // most once a second per cgroup) and walk where they are now.
  std::vector<Cookie> missed;
  for (Cookie cookie : batch)
    if (still_listed(resend_fd, cookie)) missed.push_back(cookie);
  if (!missed.empty()) {
    auto ok =
        walk(plan_resend(netns, conns_fd, missed, NetnsResolver::Freshness::kRefresh, walked));
    if (!ok) return ok;
  }
  if (failed) return std::unexpected(*failed);
  return {};
}

}  // namespace

tf_stats sum_stats(const std::vector<tf_stats>& per_cpu) {
  tf_stats total{};
  for (const auto& cpu : per_cpu) {
    for (int d = 0; d < TF_PACKET_DIR_COUNT; ++d)
      for (int a = 0; a < TF_ACTION_COUNT; ++a)
        for (int r = 0; r < TF_REASON_COUNT; ++r) total.packets[d][a][r] += cpu.packets[d][a][r];
    for (int c = 0; c < TF_COUNTER_COUNT; ++c) total.counters[c] += cpu.counters[c];
  }
  return total;
}

void Datapath::LinkDeleter::operator()(bpf_link* link) const { bpf_link__destroy(link); }

void Datapath::SkeletonDeleter::operator()(tf_datapath* skel) const { tf_datapath__destroy(skel); }

// The thread that runs tf_resend_held for the loop: the walk costs the
// same for one socket as for thousands, so everything queued while one
// walk ran goes into the next.
class Datapath::ResendThread {
 public:
  explicit ResendThread(Datapath& dp) : dp_(dp), thread_([this] { run(); }) {}
  ~ResendThread() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  void push(std::vector<Cookie> cookies) {
    {
      std::lock_guard lock(mutex_);
      queued_.insert(queued_.end(), cookies.begin(), cookies.end());
    }
    wake_.notify_all();
  }

  void wait_idle() {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [this] { return queued_.empty() && !busy_; });
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
      if (stopping_) return;
      auto batch = std::exchange(queued_, {});
      busy_ = true;
      lock.unlock();
      if (auto ok = dp_.resend_held(batch); !ok)
        spdlog::error("pushing held payload: {}", ok.error().message);
      lock.lock();
      busy_ = false;
      idle_.notify_all();
    }
  }

  Datapath& dp_;  // the Datapath owning this thread: its address is stable while it runs
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::vector<Cookie> queued_;
  bool busy_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

void Datapath::ResendThreadDeleter::operator()(ResendThread* thread) const { delete thread; }

void Datapath::wait_for_resends() {
  if (resend_thread_) resend_thread_->wait_idle();
}

Datapath::Datapath(Datapath&&) noexcept = default;
Datapath& Datapath::operator=(Datapath&&) noexcept = default;
Datapath::~Datapath() = default;

Result<Datapath> Datapath::open(const DatapathOptions& options) {
  auto cgroup = resolve_cgroup(options.cgroup);
  if (!cgroup) return std::unexpected(cgroup.error());
  auto cg_id = datapath::cgroup_id(*cgroup);
  if (!cg_id) return std::unexpected(cg_id.error());
  if (auto ok = prepare_pin_dir(options.pin_dir); !ok) return std::unexpected(ok.error());
  // One agent per pin-dir: two would race to swap programs and split the
  // events between them.
  UniqueFd lock(::open(options.pin_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!lock) return fail_errno("pin-dir: opening " + options.pin_dir, errno);
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0)
    return fail(errno == EWOULDBLOCK ? Errc::kPermissionDenied : errc_from_errno(errno),
                "pin-dir: " + options.pin_dir +
                    " is in use by another running agent (one agent per pin-dir)");
  auto pins = check_pins(options.pin_dir);
  if (!pins) return std::unexpected(pins.error());

  Datapath dp;
  dp.pin_lock_ = std::move(lock);
  dp.cgroup_path_ = *cgroup;
  dp.cgroup_id_ = *cg_id;
  dp.pin_state_ = *pins;
  auto netns = NetnsResolver::open(dp.cgroup_path_);
  if (!netns) return std::unexpected(netns.error());
  dp.netns_ = std::move(*netns);
  if (!dp.netns_->can_enter())
    spdlog::warn(
        "without CAP_SYS_ADMIN the agent cannot enter other network namespaces: sockets of pods "
        "with their own netns, once denied, are dropped but not reset, and their held first "
        "segment waits for TCP's 200 ms timer");

  std::uint32_t max_conns = options.max_connections;
  if (dp.pin_state_ == PinState::kReused) {
    // A pinned table keeps its size; resizing needs an uninstall.
    auto fd = open_pinned((fs::path(options.pin_dir) / "tf_conns").string());
    if (!fd) return std::unexpected(fd.error());
    auto info = map_info(fd->get());
    if (!info) return std::unexpected(info.error());
    max_conns = info->max_entries;
  }
  if (max_conns == 0) return fail(Errc::kInvalidArgument, "max-connections must be at least 1");

  // Without TCP_BPF_RTO_MIN, or without the kernel config to read CONFIG_HZ
  // from (floors are jiffies), pending sockets keep the netns floor.
  const KernelFeatures& features = kernel_features();
  const bool lower_rto = features.rto_min_sockopt && features.kernel_config;
  // The resend iterator needs Linux 5.15+; without it, load the rest and
  // let TCP's own timers resend held payload.
  int load_err = 0;
  for (bool with_resend : {true, false}) {
    LIBBPF_OPTS(bpf_object_open_opts, open_opts, .pin_root_path = options.pin_dir.c_str(),
                .kconfig = features.kernel_config ? nullptr : kNoKernelConfig);
    dp.skel_.reset(tf_datapath__open_opts(&open_opts));
    if (!dp.skel_) return fail_errno("opening the BPF object", errno);
    auto* skel = dp.skel_.get();
    skel->rodata->tf_config.mode = static_cast<__u8>(options.mode);
    skel->rodata->tf_config.untracked_verdict = static_cast<__u8>(options.untracked_verdict);
    skel->rodata->tf_config.pending_rto_min_us = lower_rto ? options.pending_rto_min_us : 0;
    skel->rodata->tf_config.default_rto_min_us = default_rto_min_us();
    if (int err = bpf_map__set_max_entries(skel->maps.tf_conns, max_conns); err != 0)
      return fail_errno("sizing tf_conns", -err);
    bpf_program__set_autoload(skel->progs.tf_resend_held, with_resend);
    load_err = tf_datapath__load(skel);
    if (load_err == 0) break;
  }
  if (load_err != 0) {
    // An old kernel is better told by what it lacks than by the verifier.
    if (auto ok = check_kernel_features(); !ok) return std::unexpected(ok.error());
    return fail(errc_from_errno(-load_err),
                describe_errno("loading the BPF programs (run with --log-level debug for the "
                               "verifier's log)",
                               -load_err));
  }
  auto* skel = dp.skel_.get();
  if (bpf_program__autoload(skel->progs.tf_resend_held)) {
    dp.resend_link_.reset(bpf_program__attach_iter(skel->progs.tf_resend_held, nullptr));
    if (!dp.resend_link_) return fail_errno("attaching the tf_resend_held iterator", errno);
  }
  if (auto missing = describe_missing(features, dp.resend_link_ != nullptr); !missing.empty()) {
    static std::once_flag logged;  // once per process, not on every reload
    std::call_once(logged, [&] { spdlog::warn("{}", missing); });
  }

  if (dp.pin_state_ == PinState::kFresh) {
    __u32 zero = 0;
    tf_meta meta = expected_meta();
    if (bpf_map_update_elem(bpf_map__fd(skel->maps.tf_meta), &zero, &meta, BPF_ANY) != 0)
      return fail_errno("writing tf_meta", errno);
  }

  UniqueFd cgroup_fd(::open(dp.cgroup_path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cgroup_fd) return fail_errno("cgroup: opening " + dp.cgroup_path_, errno);
  struct Attach {
    bpf_program* prog;
    const char* pin;
  };
  const std::array<Attach, 3> attaches = {{{skel->progs.tf_sockops, kLinkPins[0]},
                                           {skel->progs.tf_egress, kLinkPins[1]},
                                           {skel->progs.tf_ingress, kLinkPins[2]}}};
  for (const auto& a : attaches) {
    auto ok = attach_pinned(a.prog, cgroup_fd.get(), dp.cgroup_id_,
                            (fs::path(options.pin_dir) / a.pin).string());
    if (!ok) return std::unexpected(ok.error());
  }

  auto conns = TypedMap<Cookie, tf_conn>::borrow(skel->maps.tf_conns);
  if (!conns) return std::unexpected(conns.error());
  dp.conns_ = std::make_unique<BpfConnTable>(std::move(*conns));
  auto stats = PerCpuArray<tf_stats>::borrow(skel->maps.tf_stats);
  if (!stats) return std::unexpected(stats.error());
  dp.stats_.emplace(std::move(*stats));
  auto exempt = TypedMap<tf_exempt_key, std::uint8_t>::borrow(skel->maps.tf_exempt);
  if (!exempt) return std::unexpected(exempt.error());
  dp.exempt_.emplace(std::move(*exempt));
  if (auto ok = dp.set_exemptions(options.exemptions); !ok) return std::unexpected(ok.error());
  return dp;
}

Result<std::size_t> Datapath::apply_verdicts(
    std::span<const std::pair<Cookie, VerdictUpdate>> verdicts) {
  std::vector<Cookie> allowed;
  std::size_t applied = 0;
  for (const auto& [cookie, update] : verdicts) {
    auto present = conns_->set_verdict(cookie, update);
    if (!present) return std::unexpected(present.error());
    if (!*present) continue;
    ++applied;
    if (update.verdict == TF_VERDICT_ALLOW) allowed.push_back(cookie);
  }
  // After the verdicts, never before: see tf_allowed_meanwhile().
  std::vector<Cookie> held;
  int held_fd = bpf_map__fd(skel_->maps.tf_held);
  for (Cookie cookie : allowed)
    if (bpf_map_delete_elem(held_fd, &cookie) == 0) held.push_back(cookie);
  if (held.empty()) return applied;
  if (!resend_thread_) resend_thread_.reset(new ResendThread(*this));
  resend_thread_->push(std::move(held));
  return applied;
}

Result<void> Datapath::resend_held(std::span<const Cookie> cookies) {
  if (!resend_link_ || cookies.empty()) return {};
  const int map_fd = bpf_map__fd(skel_->maps.tf_resend);
  const int conns_fd = bpf_map__fd(skel_->maps.tf_conns);
  const int link_fd = bpf_link__fd(resend_link_.get());
  while (!cookies.empty()) {
    auto batch = cookies.first(std::min<std::size_t>(cookies.size(), TF_MAX_RESEND_BATCH));
    cookies = cookies.subspan(batch.size());
    const std::uint8_t mark = 1;
    for (Cookie cookie : batch)
      if (bpf_map_update_elem(map_fd, &cookie, &mark, BPF_ANY) != 0)
        return fail_errno("queueing a resend in tf_resend", errno);
    auto pushed = push_listed(*netns_, link_fd, map_fd, conns_fd, batch);
    // Sockets that closed meanwhile were never visited: forget them.
    for (Cookie cookie : batch) bpf_map_delete_elem(map_fd, &cookie);
    if (!pushed) return pushed;
  }
  return {};
}

Result<void> Datapath::set_exemptions(const std::vector<Exemption>& exemptions) {
  std::vector<tf_exempt_key> stale;
  auto walked = exempt_->for_each_key([&](const tf_exempt_key& key) {
    bool wanted = std::any_of(exemptions.begin(), exemptions.end(), [&](const Exemption& ex) {
      return std::memcmp(&ex.key, &key, sizeof(key)) == 0;
    });
    if (!wanted) stale.push_back(key);
  });
  if (!walked) return walked;
  for (const auto& key : stale)
    if (auto gone = exempt_->erase(key); !gone) return std::unexpected(gone.error());
  if (exemptions.size() > TF_MAX_EXEMPTIONS)
    return fail(Errc::kInvalidArgument, "exempt: " + std::to_string(exemptions.size()) +
                                            " rules, at most " + std::to_string(TF_MAX_EXEMPTIONS) +
                                            " are supported");
  for (const auto& ex : exemptions)
    if (auto ok = exempt_->update(ex.key, 1); !ok)
      return fail(ok.error().code, "exempt '" + ex.text + "': " + ok.error().message);
  return {};
}

Result<tf_stats> Datapath::stats() const {
  auto per_cpu = stats_->lookup(0);
  if (!per_cpu) return std::unexpected(per_cpu.error());
  return sum_stats(*per_cpu);
}

Result<EventReader> Datapath::events(EventReader::Callback callback) const {
  return EventReader::open(bpf_map__fd(skel_->maps.tf_events), std::move(callback));
}

std::vector<std::uint32_t> Datapath::program_ids() const {
  std::vector<std::uint32_t> ids;
  for (bpf_program* prog :
       {skel_->progs.tf_sockops, skel_->progs.tf_egress, skel_->progs.tf_ingress}) {
    bpf_prog_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0) ids.push_back(info.id);
  }
  return ids;
}

Result<void> Datapath::uninstall(const std::string& pin_dir) {
  UniqueFd lock(::open(pin_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!lock) {
    if (errno == ENOENT) return {};
    return fail_errno("pin-dir: opening " + pin_dir, errno);
  }
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0)
    return fail(Errc::kPermissionDenied,
                "pin-dir: " + pin_dir + " is in use by a running agent; stop it first");
  // Links first: removing their pins detaches the programs. The kernel
  // frees an unpinned link from a workqueue, so wait until it is gone:
  // the caller is told "detached" only when it is true.
  std::vector<__u32> link_ids;
  for (const char* name : kLinkPins) {
    auto path = fs::path(pin_dir) / name;
    UniqueFd link(bpf_obj_get(path.c_str()));
    if (!link) continue;
    bpf_link_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(link.get(), &info, &len) == 0) link_ids.push_back(info.id);
  }
  std::vector<std::string> names(kLinkPins.begin(), kLinkPins.end());
  names.insert(names.end(), kMapPins.begin(), kMapPins.end());
  for (const auto& name : names) {
    auto path = fs::path(pin_dir) / name;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return fail_errno("removing pin " + path.string(), errno);
  }
  if (::rmdir(pin_dir.c_str()) != 0 && errno != ENOENT)
    return fail_errno("removing " + pin_dir + " (holds pins trustfence did not make?)", errno);
  for (__u32 id : link_ids) {
    constexpr int kAttempts = 500;  // 10 ms apart: 5 s
    int attempt = 0;
    for (; attempt < kAttempts; ++attempt) {
      UniqueFd still(bpf_link_get_fd_by_id(id));
      if (!still) break;
      ::usleep(10'000);
    }
    if (attempt == kAttempts)
      return fail(Errc::kIo, "link " + std::to_string(id) +
                                 " is still attached 5 s after its pin was removed: another "
                                 "process holds it open (see `bpftool link show id " +
                                 std::to_string(id) + "`)");
  }
  return {};
}

Result<PinnedMaps> PinnedMaps::open(const std::string& pin_dir) {
  auto state = check_pins(pin_dir);
  if (!state) return std::unexpected(state.error());
  if (*state == PinState::kFresh)
    return fail(Errc::kNotFound, "no trustfence maps are pinned in " + pin_dir +
                                     " (is the agent installed with this pin-dir?)");
  PinnedMaps maps;
  auto conns_fd = open_pinned((fs::path(pin_dir) / "tf_conns").string());
  if (!conns_fd) return std::unexpected(conns_fd.error());
  auto conns = TypedMap<Cookie, tf_conn>::adopt(std::move(*conns_fd), "tf_conns");
  if (!conns) return std::unexpected(conns.error());
  maps.conns = std::make_unique<BpfConnTable>(std::move(*conns));
  auto stats_fd = open_pinned((fs::path(pin_dir) / "tf_stats").string());
  if (!stats_fd) return std::unexpected(stats_fd.error());
  auto stats = PerCpuArray<tf_stats>::adopt(std::move(*stats_fd), "tf_stats");
  if (!stats) return std::unexpected(stats.error());
  maps.stats.emplace(std::move(*stats));
  return maps;
}

}  // namespace trustfence::datapath
