#include "support.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace trustfence::bench {
namespace fs = std::filesystem;
namespace {

volatile std::sig_atomic_t g_stop = 0;

void on_stop_signal(int) { g_stop = 1; }

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

bool stop_requested() { return g_stop != 0; }

Result<void> raise_fd_limit(rlim_t wanted) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return fail_errno("getrlimit(RLIMIT_NOFILE)", errno);
  if (lim.rlim_cur >= wanted) return {};
  if (lim.rlim_max < wanted) lim.rlim_max = wanted;
  lim.rlim_cur = wanted;
  if (::setrlimit(RLIMIT_NOFILE, &lim) != 0)
    return fail_errno("raising RLIMIT_NOFILE to " + std::to_string(wanted) +
                          " (needs root, and fs.nr_open at least that high)",
                      errno);
  return {};
}

// --- AttachedDatapath ------------------------------------------------------

Result<AttachedDatapath> AttachedDatapath::attach(datapath::DatapathOptions options) {
  options.pin_dir =
      (fs::path("/sys/fs/bpf") / testing::kernel::unique_test_name(kNamePrefix)).string();
  auto dp = datapath::Datapath::open(options);
  if (!dp) {
    // A partial open may have pinned maps or links already.
    (void)datapath::Datapath::uninstall(options.pin_dir);
    return std::unexpected(dp.error());
  }
  return AttachedDatapath(std::move(*dp), options.pin_dir);
}

AttachedDatapath::AttachedDatapath(AttachedDatapath&& other) noexcept
    : datapath_(std::move(other.datapath_)), pin_dir_(std::exchange(other.pin_dir_, {})) {
  other.datapath_.reset();
}

AttachedDatapath::~AttachedDatapath() {
  if (pin_dir_.empty()) return;
  datapath_.reset();
  if (auto ok = datapath::Datapath::uninstall(pin_dir_); !ok)
    std::fprintf(stderr, "warning: %s\n", ok.error().message.c_str());
}

Result<UniqueFd> AttachedDatapath::open_map(std::string_view name) const {
  return datapath::open_pinned((fs::path(pin_dir_) / name).string());
}

// --- sockets ---------------------------------------------------------------

Result<UniqueFd> tcp_socket() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket(AF_INET, SOCK_STREAM)", errno);
  return fd;
}

Result<Listener> listen_loopback(int backlog) {
  auto fd = tcp_socket();
  if (!fd) return std::unexpected(fd.error());
  int one = 1;
  ::setsockopt(fd->get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  auto addr = loopback(0);
  if (::bind(fd->get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return fail_errno("bind 127.0.0.1:0", errno);
  if (::listen(fd->get(), backlog) != 0) return fail_errno("listen", errno);
  socklen_t len = sizeof(addr);
  if (::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return fail_errno("getsockname", errno);
  return Listener{std::move(*fd), ntohs(addr.sin_port)};
}

Result<void> connect_loopback(int fd, std::uint16_t port) {
  auto addr = loopback(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return fail_errno("connect to 127.0.0.1:" + std::to_string(port), errno);
  return {};
}

Result<UniqueFd> accept_within(int listener, int timeout_ms) {
  if (!wait_readable(listener, timeout_ms))
    return fail(Errc::kIo, "no connection to accept within " + std::to_string(timeout_ms) + " ms");
  UniqueFd fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (!fd) return fail_errno("accept", errno);
  return fd;
}

Result<std::uint64_t> socket_cookie(int fd) {
  std::uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) != 0)
    return fail_errno("getsockopt(SO_COOKIE)", errno);
  return cookie;
}

Result<void> set_abortive_close(int fd) {
  linger lin{1, 0};
  if (::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin)) != 0)
    return fail_errno("setsockopt(SO_LINGER)", errno);
  return {};
}

Result<void> set_nodelay(int fd) {
  int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
    return fail_errno("setsockopt(TCP_NODELAY)", errno);
  return {};
}

bool wait_readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

// --- kernel memory ---------------------------------------------------------

Result<std::map<std::string, std::uint64_t>> read_meminfo() {
  std::ifstream in("/proc/meminfo");
  if (!in) return fail_errno("reading /proc/meminfo", errno);
  std::map<std::string, std::uint64_t> fields;
  std::string name, unit;
  std::uint64_t value = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    unit.clear();
    if (!(words >> name >> value)) continue;
    words >> unit;
    if (!name.empty() && name.back() == ':') name.pop_back();
    fields[name] = unit == "kB" ? value * 1024 : value;
  }
  return fields;
}

Result<KernelMemory> kernel_memory() {
  auto info = read_meminfo();
  if (!info) return std::unexpected(info.error());
  auto field = [&](const char* name) -> std::uint64_t {
    auto it = info->find(name);
    return it == info->end() ? 0 : it->second;
  };
  KernelMemory mem;
  mem.slab = field("SUnreclaim");
  mem.percpu = field("Percpu");
  mem.vmalloc = field("VmallocUsed");
  mem.other = field("KernelStack") + field("PageTables");
  return mem;
}

KernelMemory operator-(const KernelMemory& a, const KernelMemory& b) {
  // Unsigned wrap-around is undone by the caller's signed casts.
  return KernelMemory{a.slab - b.slab, a.percpu - b.percpu, a.vmalloc - b.vmalloc,
                      a.other - b.other};
}

Result<std::uint64_t> map_memlock(int fd) {
  auto path = "/proc/self/fdinfo/" + std::to_string(fd);
  std::ifstream in(path);
  if (!in) return fail_errno("reading " + path, errno);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("memlock:", 0) == 0) return std::stoull(line.substr(8));
  }
  return fail(Errc::kUnsupported, path + " has no memlock line (not a BPF map?)");
}

// --- BPF program statistics ------------------------------------------------

Result<ProgRunStats> prog_run_stats(std::uint32_t prog_id) {
  UniqueFd fd(bpf_prog_get_fd_by_id(prog_id));
  if (!fd) return fail_errno("opening BPF program id " + std::to_string(prog_id), errno);
  bpf_prog_info info{};
  __u32 len = sizeof(info);
  if (int err = bpf_obj_get_info_by_fd(fd.get(), &info, &len); err != 0)
    return fail_errno("reading BPF program info", -err);
  return ProgRunStats{info.name, info.run_cnt, info.run_time_ns};
}

Result<UniqueFd> enable_run_time_stats() {
  UniqueFd fd(bpf_enable_stats(BPF_STATS_RUN_TIME));
  if (!fd) return fail_errno("enabling BPF run-time statistics (BPF_ENABLE_STATS)", errno);
  return fd;
}

// --- figures ---------------------------------------------------------------

Spread spread(std::vector<double> values) {
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  std::size_t n = values.size();
  double median = n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  return Spread{median, values.front(), values.back()};
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * sorted.size()));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

std::string format_spread(const Spread& s, int precision) {
  char buf[128];
  std::snprintf(buf, sizeof(buf), "%.*f (%.*f-%.*f)", precision, s.median, precision, s.min,
                precision, s.max);
  return buf;
}

// --- command line ----------------------------------------------------------

Result<Args> Args::parse(int argc, char** argv, const std::vector<std::string>& valued,
                         const std::vector<std::string>& flags) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
    }
    if (!arg.starts_with("--")) return fail(Errc::kInvalidArgument, "unexpected argument " + arg);
    std::string name = arg.substr(2);
    if (std::find(flags.begin(), flags.end(), name) != flags.end()) {
      args.values_[name] = "1";
    } else if (std::find(valued.begin(), valued.end(), name) != valued.end()) {
      if (value.empty()) {
        if (i + 1 >= argc) return fail(Errc::kInvalidArgument, arg + " needs a value");
        value = argv[++i];
      }
      args.values_[name] = value;
    } else {
      return fail(Errc::kInvalidArgument, "unknown option " + arg);
    }
  }
  return args;
}

bool Args::flag(std::string_view name) const { return values_.contains(name); }

Result<std::uint64_t> Args::number(std::string_view name, std::uint64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  std::uint64_t value = 0;
  const auto& text = it->second;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    return fail(Errc::kInvalidArgument,
                "--" + std::string(name) + ": '" + text + "' is not a whole number");
  return value;
}

Result<double> Args::real(std::string_view name, double fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  try {
    std::size_t used = 0;
    double value = std::stod(it->second, &used);
    if (used == it->second.size() && value > 0) return value;
  } catch (const std::exception&) {
  }
  return fail(Errc::kInvalidArgument,
              "--" + std::string(name) + ": '" + it->second + "' is not a positive number");
}

std::string Args::text(std::string_view name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int report_failure(const Error& error) {
  std::fprintf(stderr, "error: %s\n", error.message.c_str());
  return 1;
}

namespace {
std::vector<std::string> g_problems;
}  // namespace

void problem(const std::string& what) {
  g_problems.push_back(what);
  std::printf("  PROBLEM: %s\n", what.c_str());
  std::fflush(stdout);
}

Result<void> problems_verdict() {
  if (g_problems.empty()) return {};
  std::string all;
  for (const auto& p : g_problems) all += "\n  " + p;
  return fail(Errc::kIo, "the run was not clean:" + all);
}

}  // namespace trustfence::bench
