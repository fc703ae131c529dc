#pragma once

// What the connection benchmarks share: the kernel tier's test cgroup the
// process moves in and out of (sockets keep the cgroup they were created
// in), the datapath attached under a pin directory of its own, loopback
// sockets, kernel memory counters, figures (median and spread,
// percentiles), and main().
//
// Everything a benchmark creates is owned by an RAII value and undone on
// destruction, so an error or a SIGINT/SIGTERM (which only sets a flag the
// loops check) still leaves no cgroup, pin or socket behind. A run killed
// outright leaves "tf-bench-conn-<pid>-<n>" names that
// scripts/bench-datapath.sh sweeps once <pid> is gone.

#include <sys/resource.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/kernel/cgroup.hpp"
#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"
#include "trustfence/datapath/datapath.hpp"

namespace trustfence::bench {

// Prefix of every cgroup and pin directory the benchmarks create, followed
// by the creating pid (testing::kernel::unique_test_name(kNamePrefix)).
inline constexpr std::string_view kNamePrefix = "tf-bench-conn-";

// SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process, so
// destructors still run; blocking calls return EINTR and loops look here.
void install_stop_handlers();
bool stop_requested();

// Raises RLIMIT_NOFILE (soft and, as root, hard) to at least `wanted`.
Result<void> raise_fd_limit(rlim_t wanted);

// The kernel tier's test cgroup (tests/support/kernel/cgroup.hpp); the
// benchmarks create theirs with TestCgroup::create(kNamePrefix).
using testing::kernel::CgroupMembership;
using testing::kernel::TestCgroup;

// The datapath attached to a cgroup under a unique pin directory; closed,
// detached and unpinned on destruction.
class AttachedDatapath {
 public:
  // options.pin_dir is replaced by a fresh unique directory.
  static Result<AttachedDatapath> attach(datapath::DatapathOptions options);

  AttachedDatapath(AttachedDatapath&& other) noexcept;
  AttachedDatapath& operator=(AttachedDatapath&&) = delete;
  AttachedDatapath(const AttachedDatapath&) = delete;
  ~AttachedDatapath();

  datapath::Datapath& get() { return *datapath_; }
  const std::string& pin_dir() const { return pin_dir_; }
  // A descriptor of one of the pinned maps (tf_conns, tf_events, ...).
  Result<UniqueFd> open_map(std::string_view name) const;

 private:
  AttachedDatapath(datapath::Datapath datapath, std::string pin_dir)
      : datapath_(std::move(datapath)), pin_dir_(std::move(pin_dir)) {}

  std::optional<datapath::Datapath> datapath_;
  std::string pin_dir_;
};

// --- loopback sockets ------------------------------------------------------

// A listener on 127.0.0.1 with a kernel-chosen port.
struct Listener {
  UniqueFd fd;
  std::uint16_t port = 0;
};
Result<Listener> listen_loopback(int backlog);
Result<UniqueFd> tcp_socket();
Result<void> connect_loopback(int fd, std::uint16_t port);
// Waits up to timeout_ms for a connection on the listener.
Result<UniqueFd> accept_within(int listener, int timeout_ms);
Result<std::uint64_t> socket_cookie(int fd);
// close() then sends a reset and leaves no TIME_WAIT behind.
Result<void> set_abortive_close(int fd);
Result<void> set_nodelay(int fd);
// True when fd became readable within timeout_ms.
bool wait_readable(int fd, int timeout_ms);

// --- kernel memory ---------------------------------------------------------

// /proc/meminfo, in bytes, by field name.
Result<std::map<std::string, std::uint64_t>> read_meminfo();

// Kernel memory that BPF maps, programs and sockets can occupy and that is
// never reclaimed: unreclaimable slab (large kmallocs included), per-CPU
// allocations, vmalloc (where large BPF maps live), kernel stacks and page
// tables. Reclaimable slab (dentries, socket inodes) is left out: BPF
// allocates nothing reclaimable, and it varies by tens of MB between
// identical runs of 50,000 connections.
struct KernelMemory {
  std::uint64_t slab = 0;  // SUnreclaim
  std::uint64_t percpu = 0;
  std::uint64_t vmalloc = 0;
  std::uint64_t other = 0;  // KernelStack + PageTables
  std::uint64_t total() const { return slab + percpu + vmalloc + other; }
};
Result<KernelMemory> kernel_memory();
KernelMemory operator-(const KernelMemory& a, const KernelMemory& b);

// The "memlock:" line of /proc/self/fdinfo/<fd>: what the kernel reports
// a BPF map uses (bpf_map_memory_usage()).
Result<std::uint64_t> map_memlock(int fd);

// --- BPF program statistics ------------------------------------------------

// Kernel-kept run count and run time of one program (counted only while
// run-time statistics are enabled).
struct ProgRunStats {
  std::string name;
  std::uint64_t run_count = 0;
  std::uint64_t run_time_ns = 0;
};
Result<ProgRunStats> prog_run_stats(std::uint32_t prog_id);

// Enables BPF run-time statistics for as long as the returned descriptor
// is open (BPF_ENABLE_STATS), without touching the global sysctl.
Result<UniqueFd> enable_run_time_stats();

// --- figures ---------------------------------------------------------------

struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;
};
Spread spread(std::vector<double> values);
// values must be sorted; p in [0, 100]; nearest rank.
double percentile(const std::vector<double>& sorted, double p);

// "12.3 (11.9-12.8)"
std::string format_spread(const Spread& s, int precision);

// --- command line ----------------------------------------------------------

// --name value and --flag options; anything else is an error naming it.
class Args {
 public:
  static Result<Args> parse(int argc, char** argv, const std::vector<std::string>& valued,
                            const std::vector<std::string>& flags);
  bool flag(std::string_view name) const;
  Result<std::uint64_t> number(std::string_view name, std::uint64_t fallback) const;
  Result<double> real(std::string_view name, double fallback) const;
  std::string text(std::string_view name, const std::string& fallback) const;

 private:
  std::map<std::string, std::string, std::less<>> values_;
};

// "error: <message>" on stderr and exit code 1.
int report_failure(const Error& error);

// Something that did not run cleanly: printed at once ("  PROBLEM: ..."),
// and the run fails at the end (problems_verdict).
void problem(const std::string& what);
// Ok, or one error listing every problem() of the run.
Result<void> problems_verdict();

// A benchmark's main: stop handlers installed, then parse(argc, argv)
// (Result<Options>) and run(options) (Result<void>); the first error is
// reported as report_failure does.
template <typename Parse, typename Run>
int bench_main(int argc, char** argv, Parse parse, Run run) {
  install_stop_handlers();
  auto options = parse(argc, argv);
  if (!options) return report_failure(options.error());
  if (auto ok = run(*options); !ok) return report_failure(ok.error());
  return 0;
}

}  // namespace trustfence::bench
