// Issue 7, scenarios 5 (scale) and 6 (reload cost), in one run, with one
// real agent (node 0 of an e2e topology, its own cgroup, pins and API
// socket, tf_conns sized for the largest step):
//
//   up, at each step of N tracked connections (1k, 10k, 50k, 100k), with
//   the few (100) peer channels, as a fresh agent sees them:
//     - kernel memory per tracked connection: tf_conns memlock / capacity
//       (a preallocated hash: the cost is paid at load, whatever N), the
//       /proc/meminfo delta of loading the agent's datapath / capacity, and
//       the meminfo delta of the N connections themselves (their sockets
//       included, for context);
//     - agent VmRSS / VmHWM (RssAnon, RssFile);
//     - agent CPU (utime + stime of every thread, /proc/PID/stat) per 1,000
//       new connections a second: a paced run of connections from a peer
//       node, each attested over a channel (less the idle agent's CPU);
//   top: RSS and CPU with every (1,000) peer channel; reloads with the few
//     channels, then with all: SIGHUP after a config change that matches no
//     connection, timed by the agent ("applied to K connections in X ms",
//     the trustfence_config_reload_duration_seconds histogram), from the
//     signal to that log line as seen from outside, the agent's CPU
//     meanwhile, and checked in tf_conns (every allowed entry carries the
//     new generation); then a reload revoking one workload's share;
//   down: the same reloads at each smaller step.
//
// The N connections are same-node pairs: both ends in the enforced cgroup
// (workers hold them on loopback, a few thousand each), so N entries are
// N/2 TCP connections, each socket decided by policy with its peer's
// SPIFFE ID (workload-id per worker sub-cgroup) -- the state the agent
// keeps and re-decides on reload is that of an attested connection. The
// peers (fake_peer.hpp) are simulated, their channels and attestation real.
//
// Figures, not tests: nothing fails on a number; the exit code is non-zero
// only when something did not run (a worker failed, a connection was denied
// that should not be, the agent did not answer).

#include <signal.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fake_peer.hpp"
#include "support.hpp"
#include "support/e2e/child.hpp"
#include "support/e2e/cluster.hpp"
#include "support/e2e/netns.hpp"
#include "support/e2e/temp_dir.hpp"
#include "support/e2e/topology.hpp"
#include "support/kernel/cgroup.hpp"
#include "support/process.hpp"
#include "trustfence/abi.h"
#include "trustfence/datapath/conn_table.hpp"
#include "trustfence/datapath/typed_map.hpp"
#include "worker.hpp"

namespace trustfence::bench::scale {
namespace {

namespace e2e = testing::e2e;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kAgentNode = 0;
constexpr std::uint16_t kAgentPort = 7400;
constexpr std::uint16_t kRatePort = 9000;
constexpr const char* kAgentDomain = "team-a.gke.local";
constexpr const char* kPeerDomain = "team-b.eks.local";

// Targets of issue 7.
constexpr double kKernelBytesTarget = 100;
constexpr double kRssTargetMb = 30;
constexpr std::uint64_t kRssTargetConnections = 10'000;
constexpr std::size_t kRssTargetPeers = 100;
constexpr double kCpuTargetCores = 0.05;
constexpr double kReloadTargetMs = 1000;
constexpr std::uint64_t kReloadTargetConnections = 100'000;

constexpr milliseconds kChannelsTimeout{120'000};
constexpr milliseconds kDecidedTimeout{180'000};

struct Options {
  std::vector<std::uint64_t> steps{1'000, 10'000, 50'000, 100'000};
  std::size_t channels = 1000;     // peer channels at full strength
  std::size_t few_channels = 100;  // the RSS target's peer count
  std::size_t peer_nodes = 4;      // processes (and source addresses) simulating peers
  double rate = 1000;              // new connections a second in the CPU runs
  double rate_seconds = 5;
  double idle_seconds = 2;
  std::uint64_t reloads = 3;  // reloads per step
  bool smoke = false;
  std::string out;  // directory for scale.json and reload.json
};

Result<std::vector<std::uint64_t>> parse_steps(const std::string& text) {
  std::vector<std::uint64_t> steps;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    auto n = std::strtoull(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || n < 2)
      return fail(Errc::kInvalidArgument, "--steps: '" + item + "' is not a count >= 2");
    steps.push_back(n);
  }
  if (steps.empty()) return fail(Errc::kInvalidArgument, "--steps is empty");
  std::sort(steps.begin(), steps.end());
  return steps;
}

Result<Options> parse_options(int argc, char** argv) {
  // --out DIR and --steps LIST are not numbers, which Args has no getter
  // for: taken out here.
  std::vector<char*> rest(argv, argv + argc);
  std::string out, steps;
  for (const char* name : {"--out", "--steps"}) {
    for (auto it = rest.begin() + 1; it != rest.end(); ++it) {
      if (std::string_view(*it) != name) continue;
      if (it + 1 == rest.end())
        return fail(Errc::kInvalidArgument, std::string(name) + " needs a value");
      (std::string_view(name) == "--out" ? out : steps) = *(it + 1);
      rest.erase(it, it + 2);
      break;
    }
  }
  auto args = Args::parse(
      static_cast<int>(rest.size()), rest.data(),
      {"channels", "few-channels", "peer-nodes", "rate", "rate-seconds", "reloads"}, {"smoke"});
  if (!args) return std::unexpected(args.error());
  Options opt;
  if (args->flag("smoke")) {
    opt.steps = {500, 1'000};
    opt.channels = 10;
    opt.few_channels = 5;
    opt.peer_nodes = 2;
    opt.rate = 200;
    opt.rate_seconds = 1;
    opt.idle_seconds = 0.5;
    opt.reloads = 1;
    opt.smoke = true;
  }
  if (!steps.empty()) {
    auto parsed = parse_steps(steps);
    if (!parsed) return std::unexpected(parsed.error());
    opt.steps = *parsed;
  }
  opt.out = out;
  auto channels = args->number("channels", opt.channels);
  auto few = args->number("few-channels", opt.few_channels);
  auto nodes = args->number("peer-nodes", opt.peer_nodes);
  auto rate = args->real("rate", opt.rate);
  auto seconds = args->real("rate-seconds", opt.rate_seconds);
  auto reloads = args->number("reloads", opt.reloads);
  for (const auto* r : {&channels, &few, &nodes, &reloads})
    if (!*r) return std::unexpected(r->error());
  if (!rate) return std::unexpected(rate.error());
  if (!seconds) return std::unexpected(seconds.error());
  opt.channels = *channels;
  opt.few_channels = std::min<std::size_t>(*few, *channels);
  opt.peer_nodes = *nodes;
  opt.rate = *rate;
  opt.rate_seconds = *seconds;
  opt.reloads = *reloads;
  if (opt.peer_nodes == 0 || opt.peer_nodes > 100 || opt.channels < opt.peer_nodes ||
      opt.reloads == 0)
    return fail(Errc::kInvalidArgument,
                "--peer-nodes must be 1..100, --channels at least --peer-nodes, --reloads >= 1");
  return opt;
}

// --- the agent's process ---------------------------------------------------------

struct ProcSample {
  double rss_mb = 0, hwm_mb = 0;
  double anon_mb = 0, file_mb = 0;  // RssAnon (heap), RssFile (mapped binaries)
  double cpu_seconds = 0;           // utime + stime, every thread
};

Result<ProcSample> sample_process(pid_t pid) {
  ProcSample s;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:")) s.rss_mb = std::stod(line.substr(6)) / 1024;
    if (line.starts_with("VmHWM:")) s.hwm_mb = std::stod(line.substr(6)) / 1024;
    if (line.starts_with("RssAnon:")) s.anon_mb = std::stod(line.substr(8)) / 1024;
    if (line.starts_with("RssFile:")) s.file_mb = std::stod(line.substr(8)) / 1024;
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  auto close = text.rfind(')');
  if (s.rss_mb == 0 || close == std::string::npos)
    return fail(Errc::kIo, "cannot read /proc/" + std::to_string(pid) + " (the agent exited?)");
  std::istringstream fields(text.substr(close + 2));
  std::vector<std::string> f((std::istream_iterator<std::string>(fields)), {});
  // After "pid (comm) ": state is field 3, utime 14, stime 15.
  if (f.size() < 13) return fail(Errc::kIo, "short /proc/" + std::to_string(pid) + "/stat");
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  s.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / tick;
  return s;
}

class Agent {
 public:
  struct Setup {
    const e2e::Topology* topology;
    const e2e::TempDir* dir;
    std::string cgroup;
    std::uint64_t capacity;
    std::vector<std::string> workload_lines;
  };

  static Result<std::unique_ptr<Agent>> start(const Setup& setup, const e2e::Cluster& own,
                                              const e2e::Cluster& peer) {
    std::unique_ptr<Agent> agent(new Agent());
    agent->setup_ = setup;
    const auto& dir = *setup.dir;
    agent->pin_dir_ = "/sys/fs/bpf/" + testing::kernel::unique_test_name(e2e::kE2ePrefix);
    agent->api_socket_ = dir.file("agent-api.sock");
    agent->config_path_ = dir.file("agent.conf");
    agent->log_path_ = dir.file("agent.log");
    auto svid = own.issue(own.agent_id());
    for (auto [name, text] : {std::pair{"agent-svid.pem", test::to_pem(svid.cert.get())},
                              std::pair{"agent-svid.key", test::to_pem(svid.key.get())},
                              std::pair{"bundle-a.pem", own.bundle_pem()},
                              std::pair{"bundle-b.pem", peer.bundle_pem()}})
      if (auto ok = dir.write(name, text); !ok) return std::unexpected(ok.error());
    ::chmod(dir.file("agent-svid.key").c_str(), 0600);
    if (auto ok = agent->write_config({}); !ok) return std::unexpected(ok.error());
    auto child = e2e::spawn({.netns = setup.topology->node(kAgentNode),
                             .argv = {TF_CLI_PATH, "agent", "--config", agent->config_path_},
                             .stdout_path = agent->log_path_,
                             .stderr_path = agent->log_path_});
    if (!child) return std::unexpected(child.error());
    agent->child_.emplace(std::move(*child));
    if (auto ok = e2e::wait_for_tcp_listen(setup.topology->node(kAgentNode), kAgentPort,
                                           e2e::kReadyTimeout, &*agent->child_);
        !ok)
      return fail(ok.error().code, "the agent: " + ok.error().message + "\n" + agent->log_tail());
    const auto deadline = Clock::now() + e2e::kReadyTimeout;
    while (Clock::now() < deadline) {
      if (auto stats = agent->stats(); stats && stats->contains("channels")) return agent;
      std::this_thread::sleep_for(milliseconds(50));
    }
    return fail(Errc::kIo, "the agent's API did not answer\n" + agent->log_tail());
  }

  ~Agent() {
    child_.reset();  // SIGKILL to its group; pins stay until uninstalled
    testing::run_command({TF_CLI_PATH, "agent", "--uninstall", "--pin-dir", pin_dir_});
  }

  Result<void> write_config(const std::vector<std::string>& extra) {
    const auto& dir = *setup_.dir;
    std::string text = "# the scale benchmark's agent\n";
    text += "cgroup = " + setup_.cgroup + "\n";
    text += "pin-dir = " + pin_dir_ + "\n";
    text += "api-socket = " + api_socket_ + "\n";
    text += "max-connections = " + std::to_string(setup_.capacity) + "\n";
    text += "trust-domain = " + std::string(kAgentDomain) + "\n";
    text += "trust-domain-alias = " + std::string(kPeerDomain) + "\n";
    text += "trust-bundle = " + std::string(kAgentDomain) + ":" + dir.file("bundle-a.pem") + "\n";
    text += "trust-bundle = " + std::string(kPeerDomain) + ":" + dir.file("bundle-b.pem") + "\n";
    text += "svid-cert = " + dir.file("agent-svid.pem") + "\n";
    text += "svid-key = " + dir.file("agent-svid.key") + "\n";
    text += "log-level = info\n";  // as deployed: no line per verdict
    for (const auto& line : setup_.workload_lines) text += line + "\n";
    for (const auto& line : extra) text += line + "\n";
    // Written aside and renamed over: the file watch never reads half of it.
    auto written = dir.write("agent.conf.new", text);
    if (!written) return std::unexpected(written.error());
    if (::rename(written->c_str(), config_path_.c_str()) != 0)
      return fail_errno("rename over " + config_path_, errno);
    return {};
  }

  Result<json> stats() const {
    auto result =
        testing::run_command({TF_CLI_PATH, "stats", "--json", "--api-socket", api_socket_});
    if (!result) return std::unexpected(result.error());
    if (result->exit_code != 0) return fail(Errc::kIo, "trustfence stats: " + result->err);
    try {
      return json::parse(result->out);
    } catch (const json::exception& e) {
      return fail(Errc::kIo, std::string("trustfence stats printed no JSON: ") + e.what());
    }
  }

  // stats(), asked again while a busy agent answers late (each answer
  // walks tf_conns), for up to a minute.
  Result<json> patient_stats() const {
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    for (;;) {
      auto answer = stats();
      if (answer || Clock::now() > deadline) return answer;
    }
  }

  std::string log() const {
    std::ifstream in(log_path_);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }

  std::string log_tail() const {
    auto text = log();
    return "the agent's log ends:\n" +
           (text.size() > 3000 ? text.substr(text.size() - 3000) : text);
  }

  pid_t pid() const { return child_->pid(); }
  const std::string& pin_dir() const { return pin_dir_; }

 private:
  Agent() = default;
  Setup setup_;
  std::string pin_dir_, api_socket_, config_path_, log_path_;
  std::optional<e2e::Child> child_;
};

std::uint64_t number_at(const json& j, std::initializer_list<const char*> path) {
  const json* at = &j;
  for (const char* key : path) {
    if (!at->is_object() || !at->contains(key)) return 0;
    at = &(*at)[key];
  }
  return at->is_number_unsigned() ? at->get<std::uint64_t>() : 0;
}

// tf_conns read straight from its pin, independently of the agent.
struct TableCount {
  std::uint64_t entries = 0, allowed = 0, denied = 0, pending = 0;
  std::uint64_t allowed_at_generation = 0;  // decided by the generation asked about, or later
};

Result<TableCount> count_table(const std::string& pin_dir, std::uint32_t generation) {
  auto fd = datapath::open_pinned(pin_dir + "/tf_conns");
  if (!fd) return std::unexpected(fd.error());
  auto map = datapath::TypedMap<datapath::Cookie, tf_conn>::adopt(std::move(*fd), "tf_conns");
  if (!map) return std::unexpected(map.error());
  datapath::BpfConnTable table(std::move(*map));
  auto rows = table.snapshot();
  if (!rows) return std::unexpected(rows.error());
  TableCount c;
  for (const auto& [cookie, conn] : *rows) {
    ++c.entries;
    if (conn.verdict == TF_VERDICT_ALLOW) {
      ++c.allowed;
      // Or later: the file watch's own reload may have followed already.
      if (conn.generation >= generation) ++c.allowed_at_generation;
    } else if (conn.verdict == TF_VERDICT_DENY) {
      ++c.denied;
    } else {
      ++c.pending;
    }
  }
  return c;
}

Result<std::uint64_t> table_memlock(const std::string& pin_dir) {
  auto fd = datapath::open_pinned(pin_dir + "/tf_conns");
  if (!fd) return std::unexpected(fd.error());
  return map_memlock(fd->get());
}

// --- the run ---------------------------------------------------------------------

// An attested connection-rate run and the agent's CPU around it.
struct Cpu {
  double idle_cores = 0;
  double cores_per_1000 = 0, net_cores_per_1000 = 0;
  double achieved_rate = 0;
  std::uint64_t made = 0;
  double p50_ms = 0, p99_ms = 0;
};

// Reloads at one step: agent-timed, signal to log line, agent CPU.
struct Reloads {
  std::vector<double> ms, wall_ms, cpu_ms;
};

struct Step {
  std::uint64_t connections = 0;   // tracked entries, allowed
  double kernel_mb = 0;            // meminfo delta since the agent loaded (sockets included)
  ProcSample few;                  // with the few peer channels, on the way up
  Cpu cpu;                         // same
  std::optional<ProcSample> full;  // with every peer channel (the largest step)
  std::optional<Cpu> cpu_full;
  Reloads reload;                     // with every peer channel
  std::optional<Reloads> reload_few;  // the largest step, with the few channels
};

struct Revoke {
  double ms = 0, wall_ms = 0;
  std::uint64_t decided = 0, revoked = 0, expected = 0;
};

class Bench {
 public:
  Bench(const Options& opt, const e2e::Topology& topology, Agent& agent, std::vector<Worker>& peers,
        std::vector<Worker>& holders)
      : opt_(opt), topology_(topology), agent_(agent), peers_(peers), holders_(holders) {}

  // Every peer keeps its share of n channels open; waits until they are.
  Result<void> set_channels(std::size_t n) {
    for (std::size_t i = 0; i < peers_.size(); ++i) {
      if (auto ok = peers_[i].ask("channels " + std::to_string(share(n, i)), milliseconds(5000));
          !ok)
        return std::unexpected(ok.error());
    }
    return wait_channels(n);
  }

  Result<void> wait_channels(std::size_t n) {
    const std::string wait = "wait " + std::to_string(kChannelsTimeout.count());
    for (auto& p : peers_)
      if (auto ok = p.send(wait); !ok) return ok;
    std::size_t ready = 0;
    std::string detail;
    for (auto& p : peers_) {
      auto answer = p.reply(wait, kChannelsTimeout + milliseconds(5000));
      if (!answer) return std::unexpected(answer.error());
      ready += static_cast<std::size_t>(field(*answer, "ready"));
      if (field(*answer, "ready") < field(*answer, "wanted"))
        detail += "\n  " + p.name() + ": " + *answer;
    }
    if (ready < n) {
      auto stats = agent_.stats();
      return fail(
          Errc::kIo,
          std::to_string(ready) + " of " + std::to_string(n) +
              " peer channels came up; handshakes refused by the agent: " +
              (stats ? std::to_string(number_at(*stats, {"attestation", "handshakes_refused"}))
                     : "?") +
              detail);
    }
    return {};
  }

  // Tracked entries grow to n (pairs: n/2 connections over the workers).
  Result<void> grow_to(std::uint64_t n) {
    std::uint64_t want = n / 2;
    std::vector<std::pair<std::size_t, std::string>> asked;
    for (std::size_t w = 0; w < holders_.size() && want > 0; ++w) {
      std::uint64_t have = pairs_[w];
      std::uint64_t take = std::min(want, kPairsPerWorker);
      want -= take;
      if (take <= have) continue;
      std::string command = "open " + std::to_string(take - have);
      if (auto ok = holders_[w].send(command); !ok) return ok;
      asked.emplace_back(w, command);
      pairs_[w] = take;
    }
    for (auto& [w, command] : asked)
      if (auto ok = holders_[w].reply(command, milliseconds(300'000)); !ok)
        return std::unexpected(ok.error());
    return wait_decided(total_pairs() * 2);
  }

  std::uint64_t total_pairs() const {
    std::uint64_t n = 0;
    for (auto p : pairs_) n += p;
    return n;
  }
  std::uint64_t pairs_of(std::size_t w) const { return pairs_[w]; }

  // Polls the agent's stats every 250 ms until check(stats) says done (or
  // failed). A busy agent may answer late (each answer walks tf_conns), so
  // a failed ask is retried too. After kDecidedTimeout, late(stats) says
  // what was still missing.
  Result<void> poll_stats(const std::function<std::optional<Result<void>>(const json&)>& check,
                          const std::function<std::string(const json&)>& late) {
    const auto deadline = Clock::now() + kDecidedTimeout;
    for (;;) {
      auto stats = agent_.stats();
      if (stats) {
        if (auto done = check(*stats)) return *done;
      }
      if (Clock::now() > deadline) {
        if (!stats) return std::unexpected(stats.error());
        return fail(Errc::kIo, late(*stats));
      }
      std::this_thread::sleep_for(milliseconds(250));
    }
  }

  // Until the agent allowed every tracked entry (none pending).
  Result<void> wait_decided(std::uint64_t n) {
    auto allowed = [](const json& st) {
      return number_at(st, {"connections", "by_verdict", "allow"});
    };
    auto pending = [](const json& st) {
      return number_at(st, {"connections", "by_verdict", "pending"});
    };
    return poll_stats(
        [&](const json& st) -> std::optional<Result<void>> {
          if (auto denied = number_at(st, {"connections", "by_verdict", "deny"}); denied > 0)
            return fail(Errc::kIo, std::to_string(denied) + " connections denied while growing: " +
                                       st.value("decisions", json::array()).dump());
          if (allowed(st) >= n && pending(st) == 0) return Result<void>{};
          return std::nullopt;
        },
        [&](const json& st) {
          return "after " + std::to_string(kDecidedTimeout.count() / 1000) +
                 " s: " + std::to_string(allowed(st)) + " of " + std::to_string(n) +
                 " connections allowed, " + std::to_string(pending(st)) + " pending";
        });
  }

  // Tracked entries shrink to n: the newest pairs close first, from the
  // last worker back.
  Result<void> shrink_to(std::uint64_t n) {
    std::uint64_t excess = total_pairs() - std::min(total_pairs(), n / 2);
    for (std::size_t w = holders_.size(); w-- > 0 && excess > 0;) {
      std::uint64_t drop = std::min(excess, pairs_[w]);
      if (drop == 0) continue;
      if (auto ok = holders_[w].ask("drop " + std::to_string(drop), milliseconds(60'000)); !ok)
        return std::unexpected(ok.error());
      pairs_[w] -= drop;
      excess -= drop;
    }
    return wait_tracked(total_pairs() * 2);
  }

  // Until tf_conns holds exactly n entries, every one allowed.
  Result<void> wait_tracked(std::uint64_t n) {
    auto tracked = [](const json& st) { return number_at(st, {"connections", "tracked"}); };
    auto allowed = [](const json& st) {
      return number_at(st, {"connections", "by_verdict", "allow"});
    };
    return poll_stats(
        [&](const json& st) -> std::optional<Result<void>> {
          if (tracked(st) == n && allowed(st) == n) return Result<void>{};
          return std::nullopt;
        },
        [&](const json& st) {
          return "tf_conns holds " + std::to_string(tracked(st)) + " entries (" +
                 std::to_string(allowed(st)) + " allowed), expected " + std::to_string(n);
        });
  }

  // On the way up: kernel memory, RSS with the few channels, CPU.
  Result<void> measure_few(Step& s) {
    std::this_thread::sleep_for(milliseconds(500));  // deferred frees, RCU
    auto mem = kernel_memory();
    if (!mem) return std::unexpected(mem.error());
    s.kernel_mb = static_cast<double>(static_cast<std::int64_t>(mem->total() - loaded_.total())) /
                  (1024.0 * 1024.0);
    if (auto ok = set_channels(opt_.few_channels); !ok) return ok;
    std::this_thread::sleep_for(milliseconds(300));
    auto few = sample_process(agent_.pid());
    if (!few) return std::unexpected(few.error());
    s.few = *few;
    return measure_cpu(s.cpu, s.connections);
  }

  // At the top: RSS and CPU with every channel open.
  Result<void> measure_full(Step& s) {
    if (auto ok = set_channels(opt_.channels); !ok) return ok;
    std::this_thread::sleep_for(milliseconds(300));
    auto full = sample_process(agent_.pid());
    if (!full) return std::unexpected(full.error());
    s.full = *full;
    s.cpu_full.emplace();
    return measure_cpu(*s.cpu_full, s.connections);
  }

  Result<void> measure_cpu(Cpu& s, std::uint64_t connections) {
    auto before = sample_process(agent_.pid());
    if (!before) return std::unexpected(before.error());
    auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(opt_.idle_seconds));
    auto idle = sample_process(agent_.pid());
    if (!idle) return std::unexpected(idle.error());
    double idle_wall = std::chrono::duration<double>(Clock::now() - t0).count();
    s.idle_cores = (idle->cpu_seconds - before->cpu_seconds) / idle_wall;

    char command[128];
    std::snprintf(command, sizeof(command), "rate %s %g %g",
                  topology_.ipv4_endpoint(kAgentNode, kRatePort).c_str(), opt_.rate,
                  opt_.rate_seconds);
    auto t1 = Clock::now();
    auto start = sample_process(agent_.pid());
    if (!start) return std::unexpected(start.error());
    auto answer =
        peers_[0].ask(command, milliseconds(static_cast<long>(opt_.rate_seconds * 1000) + 60'000));
    if (!answer) return std::unexpected(answer.error());
    auto end = sample_process(agent_.pid());
    if (!end) return std::unexpected(end.error());
    double wall = std::chrono::duration<double>(Clock::now() - t1).count();
    double cpu = end->cpu_seconds - start->cpu_seconds;
    s.made = static_cast<std::uint64_t>(field(*answer, "made"));
    const auto allowed = static_cast<std::uint64_t>(field(*answer, "allowed"));
    s.achieved_rate = field(*answer, "made") / field(*answer, "seconds", 1);
    s.p50_ms = field(*answer, "p50_us") / 1000;
    s.p99_ms = field(*answer, "p99_us") / 1000;
    if (allowed == 0)
      return fail(Errc::kIo, "no connection of the rate run was allowed: " + *answer);
    // CPU seconds per connection x 1,000 = cores at 1,000 connections/s.
    s.cores_per_1000 = cpu / static_cast<double>(allowed) * 1000;
    s.net_cores_per_1000 =
        std::max(0.0, cpu - s.idle_cores * wall) / static_cast<double>(allowed) * 1000;
    if (allowed != s.made) problem("rate run at " + std::to_string(connections) + ": " + *answer);
    return {};
  }

  struct ReloadResult {
    double ms = 0, wall_ms = 0;
    double cpu_ms = 0;  // the agent's utime + stime meanwhile (10 ms ticks)
    std::uint64_t decided = 0;
    std::uint32_t generation = 0;
  };

  // Rewrites the config with extra lines, SIGHUPs the agent and waits for
  // its "reload (SIGHUP): generation G in effect, applied to K connections
  // in X ms" line; wall_ms is from just before the signal to the line seen.
  Result<ReloadResult> reload(const std::vector<std::string>& extra) {
    if (auto ok = agent_.write_config(extra); !ok) return std::unexpected(ok.error());
    // The file watch reloads on its own too, after its 300 ms debounce:
    // the signal comes first, and the watch's reload is waited out after.
    auto before = agent_.log().size();
    auto cpu_before = sample_process(agent_.pid());
    if (!cpu_before) return std::unexpected(cpu_before.error());
    const auto t0 = Clock::now();
    if (::kill(agent_.pid(), SIGHUP) != 0) return fail_errno("SIGHUP to the agent", errno);
    const std::string needle = "reload (SIGHUP): generation ";
    const auto deadline = t0 + std::chrono::seconds(120);
    for (;;) {
      auto log = agent_.log();
      auto at = log.find(needle, before);
      if (at != std::string::npos && log.find('\n', at) != std::string::npos) {
        const double wall = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        auto cpu_after = sample_process(agent_.pid());
        if (!cpu_after) return std::unexpected(cpu_after.error());
        auto line = log.substr(at, log.find('\n', at) - at);
        ReloadResult r;
        r.wall_ms = wall;
        r.cpu_ms = (cpu_after->cpu_seconds - cpu_before->cpu_seconds) * 1000;
        unsigned generation = 0;
        unsigned long long decided = 0;
        double ms = 0;
        if (std::sscanf(line.c_str(),
                        "reload (SIGHUP): generation %u in effect, applied to %llu connections "
                        "in %lf ms",
                        &generation, &decided, &ms) != 3)
          return fail(Errc::kIo, "unexpected reload line: " + line);
        r.generation = generation;
        r.decided = decided;
        r.ms = ms;
        wait_for_watch_reload(at);
        return r;
      }
      if (auto refused = log.find("reload (SIGHUP) refused", before); refused != std::string::npos)
        return fail(Errc::kIo, log.substr(refused, log.find('\n', refused) - refused));
      if (Clock::now() > deadline) return fail(Errc::kIo, "no reload line\n" + agent_.log_tail());
      std::this_thread::sleep_for(milliseconds(1));
    }
  }

  // The file watch saw the rewrite too and reloads once more after its
  // debounce: waited for (a few seconds at most), so it does not land in a
  // measurement.
  void wait_for_watch_reload(std::size_t from) {
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (Clock::now() < deadline) {
      auto log = agent_.log();
      auto at = log.find("reload (file change)", from);
      if (at != std::string::npos && log.find('\n', at) != std::string::npos) return;
      std::this_thread::sleep_for(milliseconds(20));
    }
  }

  // opt_.reloads reloads with `channels` peer channels open.
  Result<void> reload_step(Reloads& s, std::size_t channels) {
    for (std::uint64_t r = 0; r < opt_.reloads; ++r) {
      // A deny-id matching nobody: every open connection is decided again
      // and keeps its verdict under the new generation.
      auto result = reload({"deny-id = spiffe://" + std::string(kPeerDomain) +
                            "/ns/nobody/sa/reload-" + std::to_string(++reload_serial_)});
      if (!result) return std::unexpected(result.error());
      auto table = count_table(agent_.pin_dir(), result->generation);
      if (!table) return std::unexpected(table.error());
      if (table->allowed_at_generation != table->allowed || table->denied != 0)
        problem("after reload to generation " + std::to_string(result->generation) + ": " +
                std::to_string(table->allowed_at_generation) + " of " +
                std::to_string(table->allowed) + " allowed entries carry it, " +
                std::to_string(table->denied) + " denied");
      s.ms.push_back(result->ms);
      s.wall_ms.push_back(result->wall_ms);
      s.cpu_ms.push_back(result->cpu_ms);
      std::printf(
          "    reload %llu: generation %u applied to %llu connections in %.1f ms "
          "(signal to log line %.1f ms, agent CPU %.0f ms); tf_conns: %llu of %llu allowed at "
          "it\n",
          static_cast<unsigned long long>(r + 1), result->generation,
          static_cast<unsigned long long>(result->decided), result->ms, result->wall_ms,
          result->cpu_ms, static_cast<unsigned long long>(table->allowed_at_generation),
          static_cast<unsigned long long>(table->allowed));
      std::fflush(stdout);
      // The agent closed every channel: the peers open theirs again.
      if (auto ok = wait_channels(channels); !ok) return ok;
    }
    return {};
  }

  // A deny-id for the workload of holder 0: its connections are revoked
  // (DENY, reason revoked) and cut.
  Result<Revoke> revoke(std::size_t w) {
    Revoke out;
    auto before = agent_.patient_stats();
    if (!before) return std::unexpected(before.error());
    out.expected = pairs_[w] * 2;
    auto result = reload(
        {"deny-id = spiffe://" + std::string(kAgentDomain) + "/ns/scale/sa/w" + std::to_string(w)});
    if (!result) return std::unexpected(result.error());
    out.ms = result->ms;
    out.wall_ms = result->wall_ms;
    out.decided = result->decided;
    auto after = agent_.patient_stats();
    if (!after) return std::unexpected(after.error());
    out.revoked = number_at(*after, {"attestation", "revoked"}) -
                  number_at(*before, {"attestation", "revoked"});
    if (out.revoked != out.expected)
      problem("revoking w" + std::to_string(w) + ": " + std::to_string(out.revoked) +
              " revoked, expected " + std::to_string(out.expected));
    pairs_[w] = 0;
    if (auto ok = wait_tracked(total_pairs() * 2); !ok) return std::unexpected(ok.error());
    return out;
  }

  void set_loaded(const KernelMemory& loaded) { loaded_ = loaded; }
  void init_pairs() { pairs_.assign(holders_.size(), 0); }
  std::size_t share(std::size_t n, std::size_t i) const {
    return n / peers_.size() + (i < n % peers_.size() ? 1 : 0);
  }

 private:
  const Options& opt_;
  const e2e::Topology& topology_;
  Agent& agent_;
  std::vector<Worker>& peers_;
  std::vector<Worker>& holders_;
  std::vector<std::uint64_t> pairs_;
  KernelMemory loaded_;
  std::uint64_t reload_serial_ = 0;
};

// --- output ----------------------------------------------------------------------

std::string read_first(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(key)) {
      auto colon = line.find(':');
      auto value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      return value;
    }
  return "?";
}

json machine() {
  utsname u{};
  ::uname(&u);
  return {{"cpu", read_first("/proc/cpuinfo", "model name")},
          {"cores", std::thread::hardware_concurrency()},
          {"kernel", u.release},
          {"memory", read_first("/proc/meminfo", "MemTotal")}};
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string today() {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

json spread_json(const std::vector<double>& values) {
  if (values.empty()) return nullptr;
  auto s = spread(values);
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}};
}

json one(double v) { return {{"median", v}, {"min", v}, {"max", v}}; }

json metric(const std::string& name, const std::string& unit, json value, const std::string& target,
            std::optional<bool> met) {
  return {{"name", name},
          {"unit", unit},
          {"baseline", nullptr},
          {"value", value},
          {"ratio", nullptr},
          {"target", target},
          {"met", met ? json(*met) : json(nullptr)}};
}

json series(const std::string& name, const std::vector<std::pair<double, double>>& points) {
  json p = json::array();
  for (auto [x, y] : points) p.push_back({x, y});
  return {{"name", name}, {"points", p}};
}

// Least-squares slope of y over x.
double slope(const std::vector<std::pair<double, double>>& points) {
  double n = static_cast<double>(points.size()), sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (auto [x, y] : points) sx += x, sy += y, sxx += x * x, sxy += x * y;
  double d = n * sxx - sx * sx;
  return d == 0 ? 0 : (n * sxy - sx * sy) / d;
}

// "flat", "linear" or "superlinear": how y grows with x, from the slope of
// the last segment against the slope of the first (and the overall fit).
std::string growth(const std::vector<std::pair<double, double>>& points, double flat_below) {
  if (points.size() < 2) return "n/a";
  double overall = slope(points);
  if (std::abs(overall) * (points.back().first - points.front().first) < flat_below) return "flat";
  auto seg = [&](std::size_t i) {
    return (points[i + 1].second - points[i].second) / (points[i + 1].first - points[i].first);
  };
  double first = seg(0), last = seg(points.size() - 2);
  if (points.size() >= 3 && last > 1.5 * std::max(first, overall) && last > 0) return "superlinear";
  return "linear";
}

Result<void> write_json(const std::string& dir, const std::string& name, const json& doc) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::ofstream out(dir + "/" + name);
  out << doc.dump(2) << "\n";
  out.close();
  if (!out) return fail(Errc::kIo, "cannot write " + dir + "/" + name);
  std::printf("wrote %s/%s\n", dir.c_str(), name.c_str());
  return {};
}

struct Results {
  std::vector<Step> steps;
  std::uint64_t capacity = 0, memlock = 0;
  double load_kernel_bytes = 0;
  double base_rss_mb = 0;
  std::optional<Revoke> revoke;
};

void print_verdicts(const json& metrics) {
  for (const auto& m : metrics)
    if (!m["met"].is_null())
      std::printf("  %-78s %s\n", m["name"].get<std::string>().substr(0, 78).c_str(),
                  m["met"].get<bool>() ? "met" : "MISSED");
}

void report(const Options& opt, const Results& r, const json& mach) {
  const double memlock_per = static_cast<double>(r.memlock) / static_cast<double>(r.capacity);
  const double load_per = r.load_kernel_bytes / static_cast<double>(r.capacity);
  const Step& top = r.steps.back();
  std::vector<std::pair<double, double>> rss, hwm, kernel, cpu, cpu_net, reload_ms, reload_wall,
      reload_cpu;
  std::vector<double> cpus, nets;
  for (const auto& s : r.steps) {
    double n = static_cast<double>(s.connections);
    rss.emplace_back(n, s.few.rss_mb);
    hwm.emplace_back(n, s.few.hwm_mb);
    kernel.emplace_back(n, s.kernel_mb);
    cpu.emplace_back(n, s.cpu.cores_per_1000);
    cpu_net.emplace_back(n, s.cpu.net_cores_per_1000);
    cpus.push_back(s.cpu.cores_per_1000);
    nets.push_back(s.cpu.net_cores_per_1000);
    reload_ms.emplace_back(n, spread(s.reload.ms).median);
    reload_wall.emplace_back(n, spread(s.reload.wall_ms).median);
    reload_cpu.emplace_back(n, spread(s.reload.cpu_ms).median);
  }
  const std::string rss_growth = growth(rss, 1.0);
  const std::string cpu_growth = growth(cpu, 0.01);
  const std::string reload_growth = growth(reload_cpu, 20);
  const double rss_per_conn = slope(rss) * 1024 * 1024;
  const double kernel_per_conn = slope(kernel) * 1024 * 1024;
  const double per_channel_kb = opt.channels > opt.few_channels && top.full
                                    ? (top.full->rss_mb - top.few.rss_mb) * 1024 /
                                          static_cast<double>(opt.channels - opt.few_channels)
                                    : 0;
  const std::string few = std::to_string(opt.few_channels) + " peer channels";
  const std::string all = std::to_string(opt.channels) + " peer channels";

  json metrics = json::array();
  metrics.push_back(metric("kernel memory per tracked connection (tf_conns memlock / capacity)",
                           "B", one(memlock_per), "<= 100 B", memlock_per <= kKernelBytesTarget));
  metrics.push_back(
      metric("kernel memory per tracked connection (/proc/meminfo delta of loading the datapath / "
             "capacity; every map and program, an upper bound)",
             "B", one(load_per), "<= 100 B", load_per <= kKernelBytesTarget));
  metrics.push_back(metric("kernel memory per connection incl. its socket (meminfo slope, context)",
                           "B", one(kernel_per_conn), "context", std::nullopt));
  // The step nearest the target's 10,000 connections (smoke runs have none).
  const Step* at_target = &r.steps.front();
  for (const auto& s : r.steps)
    if (std::llabs(static_cast<long long>(s.connections - kRssTargetConnections)) <
        std::llabs(static_cast<long long>(at_target->connections - kRssTargetConnections)))
      at_target = &s;
  const bool exact =
      at_target->connections == kRssTargetConnections && opt.few_channels == kRssTargetPeers;
  metrics.push_back(
      metric("agent VmRSS at " + std::to_string(at_target->connections) + " connections / " + few,
             "MB", one(at_target->few.rss_mb), "<= 30 MB (10,000 connections / 100 peers)",
             exact ? std::optional<bool>(at_target->few.rss_mb <= kRssTargetMb) : std::nullopt));
  metrics.push_back(
      metric("agent VmRSS at " + std::to_string(top.connections) + " connections / " + few, "MB",
             one(top.few.rss_mb), "context", std::nullopt));
  if (top.full)
    metrics.push_back(
        metric("agent VmRSS at " + std::to_string(top.connections) + " connections / " + all, "MB",
               one(top.full->rss_mb), "context", std::nullopt));
  metrics.push_back(metric(
      "agent RssAnon (heap) at " + std::to_string(at_target->connections) + " connections / " + few,
      "MB", one(at_target->few.anon_mb), "context", std::nullopt));
  metrics.push_back(metric("agent VmRSS with no connection and no channel", "MB",
                           one(r.base_rss_mb), "context", std::nullopt));
  metrics.push_back(
      metric("agent RSS per tracked connection (slope over the steps, growth " + rss_growth + ")",
             "B", one(rss_per_conn), "context", std::nullopt));
  if (top.full)
    metrics.push_back(
        metric("agent RSS per peer channel", "KiB", one(per_channel_kb), "context", std::nullopt));
  metrics.push_back(metric("agent CPU per 1,000 new connections/s, attested, " + few +
                               " (over the steps; growth " + cpu_growth + ")",
                           "cores", spread_json(cpus), "<= 0.05 core",
                           spread(cpus).median <= kCpuTargetCores));
  metrics.push_back(metric("agent CPU per 1,000 new connections/s, less the idle agent's CPU",
                           "cores", spread_json(nets), "<= 0.05 core",
                           spread(nets).median <= kCpuTargetCores));
  if (top.cpu_full)
    metrics.push_back(metric("agent CPU per 1,000 new connections/s at " +
                                 std::to_string(top.connections) + " connections / " + all,
                             "cores", one(top.cpu_full->cores_per_1000), "<= 0.05 core",
                             top.cpu_full->cores_per_1000 <= kCpuTargetCores));

  json scale = {
      {"scenario", "scale"},
      {"date", today()},
      {"machine", mach},
      {"repetitions", 1},
      {"metrics", metrics},
      {"series",
       json::array({series("agent VmRSS MB vs tracked connections (" + few + ")", rss),
                    series("agent VmHWM MB vs tracked connections", hwm),
                    series("kernel memory MB since load (sockets incl.) vs connections", kernel),
                    series("agent cores per 1,000 conn/s vs connections", cpu),
                    series("agent cores per 1,000 conn/s less idle vs connections", cpu_net)})},
      {"load_average", load_average()},
      {"smoke", opt.smoke}};

  json rmetrics = json::array();
  for (const auto& s : r.steps) {
    const bool is_target = s.connections == kReloadTargetConnections;
    const std::string n = std::to_string(s.connections);
    auto verdict = [&](const std::vector<double>& v) {
      return is_target ? std::optional<bool>(spread(v).median <= kReloadTargetMs) : std::nullopt;
    };
    const std::string target = is_target ? "<= 1 s" : "context";
    auto add = [&](const Reloads& rl, const std::string& channels, bool judged) {
      const std::string what = "reload, " + n + " connections, " + channels + ": ";
      rmetrics.push_back(metric(what + "agent-timed (signal read to verdicts written)", "ms",
                                spread_json(rl.ms), judged ? target : "context",
                                judged ? verdict(rl.ms) : std::nullopt));
      rmetrics.push_back(metric(what + "kill(SIGHUP) to the agent's log line", "ms",
                                spread_json(rl.wall_ms), judged ? target : "context",
                                judged ? verdict(rl.wall_ms) : std::nullopt));
      rmetrics.push_back(metric(what + "agent CPU time (utime + stime) meanwhile", "ms",
                                spread_json(rl.cpu_ms), "context", std::nullopt));
    };
    add(s.reload, all, true);
    if (s.reload_few) add(*s.reload_few, few, false);
  }
  if (r.revoke)
    rmetrics.push_back(metric("reload revoking and cutting " + std::to_string(r.revoke->revoked) +
                                  " of " + std::to_string(r.revoke->decided) + " connections",
                              "ms", one(r.revoke->ms), "context", std::nullopt));
  json reload = {
      {"scenario", "reload"},
      {"date", today()},
      {"machine", mach},
      {"repetitions", opt.reloads},
      {"metrics", rmetrics},
      {"series", json::array({series("reload ms (agent) vs connections", reload_ms),
                              series("reload ms (signal to log line) vs connections", reload_wall),
                              series("reload agent CPU ms vs connections", reload_cpu)})},
      {"growth", reload_growth},
      {"load_average", load_average()},
      {"smoke", opt.smoke}};

  std::printf("\n== results%s ==\n", opt.smoke ? " (smoke: small counts, rough figures)" : "");
  std::printf("  tf_conns: capacity %llu, memlock %llu B = %.1f B per entry\n",
              static_cast<unsigned long long>(r.capacity),
              static_cast<unsigned long long>(r.memlock), memlock_per);
  std::printf("  meminfo delta of loading the datapath: %.1f MB = %.1f B per entry of capacity\n",
              r.load_kernel_bytes / 1048576, load_per);
  std::printf("  agent VmRSS with no connection and no channel: %.1f MB\n", r.base_rss_mb);
  std::printf("  %9s %10s %9s %9s %11s %11s %8s | %10s %10s %10s\n", "conns", "kernel MB", "RSS MB",
              "HWM MB", "cores/1k/s", "(net idle)", "rate/s", "reload ms", "(wall)", "(CPU ms)");
  for (const auto& s : r.steps)
    std::printf("  %9llu %10.1f %9.1f %9.1f %11.4f %11.4f %8.0f | %10.1f %10.1f %10.0f\n",
                static_cast<unsigned long long>(s.connections), s.kernel_mb, s.few.rss_mb,
                s.few.hwm_mb, s.cpu.cores_per_1000, s.cpu.net_cores_per_1000, s.cpu.achieved_rate,
                spread(s.reload.ms).median, spread(s.reload.wall_ms).median,
                spread(s.reload.cpu_ms).median);
  std::printf(
      "  (left: on the way up, %s, CPU from a %g/s x %g s attested run; right: reloads "
      "with %s, median of %llu)\n",
      few.c_str(), opt.rate, opt.rate_seconds, all.c_str(),
      static_cast<unsigned long long>(opt.reloads));
  if (top.reload_few)
    std::printf("  reload at %llu connections with %s: %.1f ms (wall %.1f, CPU %.0f ms)\n",
                static_cast<unsigned long long>(top.connections), few.c_str(),
                spread(top.reload_few->ms).median, spread(top.reload_few->wall_ms).median,
                spread(top.reload_few->cpu_ms).median);
  if (top.full && top.cpu_full)
    std::printf(
        "  at %llu connections / %s: RSS %.1f MB (%.1f KiB per extra channel), HWM %.1f "
        "MB, %.4f cores per 1,000 conn/s\n",
        static_cast<unsigned long long>(top.connections), all.c_str(), top.full->rss_mb,
        per_channel_kb, top.full->hwm_mb, top.cpu_full->cores_per_1000);
  std::printf("  growth: RSS %s (%.0f B per connection), CPU per connection %s, reload %s\n",
              rss_growth.c_str(), rss_per_conn, cpu_growth.c_str(), reload_growth.c_str());
  if (r.revoke)
    std::printf(
        "  revoking reload: %llu of %llu connections revoked and cut in %.1f ms "
        "(signal to log %.1f ms)\n",
        static_cast<unsigned long long>(r.revoke->revoked),
        static_cast<unsigned long long>(r.revoke->decided), r.revoke->ms, r.revoke->wall_ms);
  print_verdicts(metrics);
  print_verdicts(rmetrics);
  std::printf("  load average %s at the end\n", load_average().c_str());
  if (!opt.out.empty()) {
    if (auto ok = write_json(opt.out, "scale.json", scale); !ok) problem(ok.error().message);
    if (auto ok = write_json(opt.out, "reload.json", reload); !ok) problem(ok.error().message);
  }
}

std::uint64_t capacity_for(std::uint64_t top) {
  std::uint64_t want = top + top / 4 + 4096, c = 65'536;
  while (c < want) c *= 2;
  return c;
}

// --- setup -----------------------------------------------------------------------

// Sub-cgroups of the agent's cgroup, one per holder, removed last.
class SubCgroups {
 public:
  SubCgroups(const SubCgroups&) = delete;
  SubCgroups& operator=(const SubCgroups&) = delete;
  SubCgroups() = default;
  ~SubCgroups() {
    for (auto it = paths_.rbegin(); it != paths_.rend(); ++it) ::rmdir(it->c_str());
  }
  Result<std::string> add(const std::string& path) {
    if (::mkdir(path.c_str(), 0755) != 0) return fail_errno("mkdir " + path, errno);
    paths_.push_back(path);
    return path;
  }

 private:
  std::vector<std::string> paths_;
};

Result<void> run(const Options& opt) {
  if (::geteuid() != 0)
    return fail(Errc::kPermissionDenied,
                "needs root (network namespaces, cgroups, the agent's BPF programs)");
  const std::uint64_t top = opt.steps.back();
  const std::size_t holders_needed =
      static_cast<std::size_t>((top / 2 + kPairsPerWorker - 1) / kPairsPerWorker);
  const std::uint64_t capacity = capacity_for(top);
  std::printf("== trustfence scale and reload%s ==\n", opt.smoke ? " (smoke)" : "");
  std::printf("steps");
  for (auto n : opt.steps) std::printf(" %llu", static_cast<unsigned long long>(n));
  std::printf(
      " tracked connections (same-node pairs over %zu workers); %zu/%zu peer channels from "
      "%zu peer nodes; tf_conns capacity %llu; rate runs %g/s x %g s; %llu reloads a step\n",
      holders_needed, opt.few_channels, opt.channels, opt.peer_nodes,
      static_cast<unsigned long long>(capacity), opt.rate, opt.rate_seconds,
      static_cast<unsigned long long>(opt.reloads));
  std::printf("%u CPUs, load average %s at the start\n", std::thread::hardware_concurrency(),
              load_average().c_str());
  std::fflush(stdout);

  auto topology = e2e::Topology::create(1 + opt.peer_nodes);
  if (!topology) return std::unexpected(topology.error());
  auto dir = e2e::TempDir::create();
  if (!dir) return std::unexpected(dir.error());
  const e2e::Cluster cluster_a(kAgentDomain);
  const e2e::Cluster cluster_b(kPeerDomain);
  auto cgroup = testing::kernel::TestCgroup::create(e2e::kE2ePrefix);
  if (!cgroup) return std::unexpected(cgroup.error());
  SubCgroups subs;
  std::vector<std::string> workload_lines, holder_cgroups;
  for (std::size_t w = 0; w < holders_needed; ++w) {
    auto path = subs.add(cgroup->path() + "/w" + std::to_string(w));
    if (!path) return std::unexpected(path.error());
    holder_cgroups.push_back(*path);
    workload_lines.push_back("workload-id = " + *path + ":spiffe://" + kAgentDomain +
                             "/ns/scale/sa/w" + std::to_string(w));
  }

  Results results;
  results.capacity = capacity;
  auto before_load = kernel_memory();
  if (!before_load) return std::unexpected(before_load.error());
  auto agent = Agent::start({&*topology, &*dir, cgroup->path(), capacity, workload_lines},
                            cluster_a, cluster_b);
  if (!agent) return std::unexpected(agent.error());
  std::this_thread::sleep_for(milliseconds(500));
  auto loaded = kernel_memory();
  if (!loaded) return std::unexpected(loaded.error());
  results.load_kernel_bytes =
      static_cast<double>(static_cast<std::int64_t>(loaded->total() - before_load->total()));
  auto memlock = table_memlock((*agent)->pin_dir());
  if (!memlock) return std::unexpected(memlock.error());
  results.memlock = *memlock;
  auto base = sample_process((*agent)->pid());
  if (!base) return std::unexpected(base.error());
  results.base_rss_mb = base->rss_mb;

  // Workers: declared after the agent, so they go first.
  std::vector<Worker> peers, holders;
  const std::string agent_endpoint = topology->ipv4_endpoint(kAgentNode, kAgentPort);
  std::vector<PeerOptions> peer_options(opt.peer_nodes);
  std::size_t first_svid = 0;
  for (std::size_t i = 0; i < opt.peer_nodes; ++i) {
    PeerOptions& p = peer_options[i];
    p.agent = agent_endpoint;
    p.self_ip = topology->ipv4(1 + i);
    p.trust_domain = kPeerDomain;
    p.own_bundle = cluster_b.bundle_pem();
    p.agent_domain = kAgentDomain;
    p.agent_bundle = cluster_a.bundle_pem();
    p.channels = opt.channels / opt.peer_nodes + (i < opt.channels % opt.peer_nodes ? 1 : 0);
    p.initial_channels = i == 0 ? 1 : 0;
    p.first_svid = first_svid;
    first_svid += p.channels;
    p.primary = i == 0;
    p.mint = [&cluster_b](std::size_t n) {
      return cluster_b.issue("spiffe://" + std::string(kPeerDomain) + "/ns/trustfence/sa/node-" +
                             std::to_string(n));
    };
    const PeerOptions* po = &peer_options[i];
    auto worker = Worker::start("peer" + std::to_string(i + 1), topology->node(1 + i), "",
                                [po](int control) { return peer_main(control, *po); });
    if (!worker) return std::unexpected(worker.error());
    peers.push_back(std::move(*worker));
  }
  for (auto& p : peers)
    if (auto ok = p.reply("start", milliseconds(120'000)); !ok) return std::unexpected(ok.error());
  auto server = Worker::start("rate-server", topology->node(kAgentNode), cgroup->path(),
                              [](int control) { return server_main(control, kRatePort); });
  if (!server) return std::unexpected(server.error());
  if (auto ok = server->reply("start", milliseconds(10'000)); !ok)
    return std::unexpected(ok.error());
  for (std::size_t w = 0; w < holders_needed; ++w) {
    auto worker = Worker::start("pairs" + std::to_string(w), topology->node(kAgentNode),
                                holder_cgroups[w], [](int control) { return pairs_main(control); });
    if (!worker) return std::unexpected(worker.error());
    holders.push_back(std::move(*worker));
  }

  Bench bench(opt, *topology, **agent, peers, holders);
  bench.init_pairs();
  bench.set_loaded(*loaded);
  if (auto ok = bench.wait_channels(1); !ok) return ok;

  // Up: RSS, kernel memory and CPU at each step with the few channels, as
  // a fresh agent sees them (nothing reloaded, no more channels yet).
  for (auto n : opt.steps) {
    if (stop_requested()) return fail(Errc::kIo, "interrupted");
    Step s;
    s.connections = n / 2 * 2;
    std::printf("-- up to %llu tracked connections\n",
                static_cast<unsigned long long>(s.connections));
    std::fflush(stdout);
    auto t0 = Clock::now();
    if (auto ok = bench.grow_to(s.connections); !ok) return ok;
    std::printf("    grown and all allowed in %.1f s\n",
                std::chrono::duration<double>(Clock::now() - t0).count());
    if (auto ok = bench.measure_few(s); !ok) return ok;
    std::printf(
        "    kernel +%.1f MB since load; agent RSS %.1f MB (anon %.1f, file %.1f), HWM %.1f MB "
        "(%zu channels); "
        "idle %.4f cores; %llu attested at %.0f/s: %.4f cores per 1,000/s (p50 %.2f ms, "
        "p99 %.2f ms)\n",
        s.kernel_mb, s.few.rss_mb, s.few.anon_mb, s.few.file_mb, s.few.hwm_mb, opt.few_channels,
        s.cpu.idle_cores, static_cast<unsigned long long>(s.cpu.made), s.cpu.achieved_rate,
        s.cpu.cores_per_1000, s.cpu.p50_ms, s.cpu.p99_ms);
    std::fflush(stdout);
    results.steps.push_back(s);
  }
  // Top: every channel, then reloads; down: reloads at each smaller step.
  Step& peak = results.steps.back();
  std::printf("-- %llu tracked connections, %zu peer channels\n",
              static_cast<unsigned long long>(peak.connections), opt.channels);
  if (auto ok = bench.measure_full(peak); !ok) return ok;
  std::printf(
      "    agent RSS %.1f MB, HWM %.1f MB; %llu attested at %.0f/s: %.4f cores per "
      "1,000/s\n",
      peak.full->rss_mb, peak.full->hwm_mb, static_cast<unsigned long long>(peak.cpu_full->made),
      peak.cpu_full->achieved_rate, peak.cpu_full->cores_per_1000);
  // Reloads with the few channels, then with all: how much of a reload is
  // closing channels.
  std::printf("-- reloads at %llu tracked connections, %zu peer channels\n",
              static_cast<unsigned long long>(peak.connections), opt.few_channels);
  if (auto ok = bench.set_channels(opt.few_channels); !ok) return ok;
  peak.reload_few.emplace();
  if (auto ok = bench.reload_step(*peak.reload_few, opt.few_channels); !ok) return ok;
  std::printf("-- reloads at %llu tracked connections, %zu peer channels\n",
              static_cast<unsigned long long>(peak.connections), opt.channels);
  if (auto ok = bench.set_channels(opt.channels); !ok) return ok;
  if (auto ok = bench.reload_step(peak.reload, opt.channels); !ok) return ok;
  // One workload's share revoked at the top when there are several
  // workers (19,800 of 100,000 in the full run); else at the bottom.
  const bool revoke_at_top = holders.size() > 1;
  auto do_revoke = [&](std::size_t w) -> Result<void> {
    std::printf("-- revoking workload w%zu's connections\n", w);
    auto revoked = bench.revoke(w);
    if (!revoked) return std::unexpected(revoked.error());
    results.revoke = *revoked;
    return {};
  };
  if (revoke_at_top)
    if (auto ok = do_revoke(0); !ok) return ok;
  for (auto it = results.steps.rbegin() + 1; it != results.steps.rend(); ++it) {
    if (stop_requested()) return fail(Errc::kIo, "interrupted");
    std::printf("-- down to %llu tracked connections\n",
                static_cast<unsigned long long>(it->connections));
    if (auto ok = bench.shrink_to(it->connections); !ok) return ok;
    if (auto ok = bench.reload_step(it->reload, opt.channels); !ok) return ok;
  }
  if (!revoke_at_top)
    if (auto ok = do_revoke(0); !ok) return ok;

  report(opt, results, machine());
  for (auto& p : peers) (void)p.send("quit");
  return problems_verdict();
}

}  // namespace
}  // namespace trustfence::bench::scale

int main(int argc, char** argv) {
  using namespace trustfence::bench::scale;
  return trustfence::bench::bench_main(argc, argv, parse_options, run);
}
