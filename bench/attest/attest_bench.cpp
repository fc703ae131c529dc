// Issue 4's figures, in one run, side by side (see README, Benchmarks):
//
//   time to first byte of a new connection (connect, 1-byte request, 1-byte
//   reply) without enforcement, with enforcement and a warm channel, and
//   with a cold channel (both agents restarted before each sample);
//   new connections per second with every connection attested and allowed,
//   as a ratio to no enforcement, and against the same client and server
//   behind a pair of Debian's stunnel mTLS proxies.
//
// Two e2e nodes (network namespaces): the client runs in node 0, the server
// in node 1, both this binary re-executed as a workload (workload.hpp) in
// the node's netns and cgroup: the agent's enforced cgroup when enforcing,
// a plain test cgroup otherwise. Order of the phases:
//
//   1. no agents: TTFB, then rate (round 1)
//   2. agents on both nodes (team-a.gke.local and team-b.eks.local aliasing
//      each other): warm TTFB, rate (checked against the agents' stats),
//      then cold TTFB
//   3. no agents: rate (round 2); the baseline rate is the mean of both
//      rounds, which bracket the enforced one
//   4. no agents, through stunnel: rate, then TTFB
//
// Figures are printed against their targets; nothing here fails on a
// number. The exit code is non-zero only when something did not run
// (a workload failed, a connection failed, an agent denied one).

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "stunnel.hpp"
#include "support.hpp"
#include "support/e2e/child.hpp"
#include "support/e2e/cluster.hpp"
#include "support/e2e/netns.hpp"
#include "support/e2e/temp_dir.hpp"
#include "support/e2e/topology.hpp"
#include "support/kernel/cgroup.hpp"
#include "support/process.hpp"
#include "workload.hpp"

namespace trustfence::bench::attest {
namespace {

namespace e2e = testing::e2e;
using json = nlohmann::json;
using std::chrono::milliseconds;

constexpr std::uint16_t kServerPort = 9000;
constexpr std::uint16_t kStunnelClientPort = 9001;
constexpr std::uint16_t kStunnelTlsPort = 9443;
constexpr std::size_t kClientNode = 0;
constexpr std::size_t kServerNode = 1;

// Targets of issue 4, over the baseline.
constexpr double kWarmP50TargetMs = 1;
constexpr double kWarmP99TargetMs = 5;
constexpr double kColdP50TargetMs = 5;
constexpr double kRateRatioTarget = 0.8;
constexpr double kStunnelFactorTarget = 30;

struct Options {
  std::uint64_t ttfb_samples = 200;
  std::uint64_t warmup = 5;
  std::uint64_t cold_samples = 20;
  std::uint64_t threads = 4;
  double seconds = 3.0;
  bool smoke = false;
  std::string keep_logs;  // a directory for the agents' logs and stats
};

Result<Options> parse_options(int argc, char** argv) {
  // --keep-logs DIR is a path, which Args has no getter for: taken out here.
  std::string keep_logs;
  std::vector<char*> rest(argv, argv + argc);
  for (auto it = rest.begin() + 1; it != rest.end(); ++it) {
    if (std::string_view(*it) != "--keep-logs") continue;
    if (it + 1 == rest.end()) return fail(Errc::kInvalidArgument, "--keep-logs needs a directory");
    keep_logs = *(it + 1);
    rest.erase(it, it + 2);
    break;
  }
  auto args = Args::parse(static_cast<int>(rest.size()), rest.data(),
                          {"samples", "cold-samples", "threads", "seconds"}, {"smoke"});
  if (!args) return std::unexpected(args.error());
  Options opt;
  if (args->flag("smoke")) opt = Options{10, 2, 2, 4, 0.5, true, {}};
  opt.keep_logs = keep_logs;
  auto samples = args->number("samples", opt.ttfb_samples);
  if (!samples) return std::unexpected(samples.error());
  auto cold = args->number("cold-samples", opt.cold_samples);
  if (!cold) return std::unexpected(cold.error());
  auto threads = args->number("threads", opt.threads);
  if (!threads) return std::unexpected(threads.error());
  auto seconds = args->real("seconds", opt.seconds);
  if (!seconds) return std::unexpected(seconds.error());
  if (*samples == 0 || *cold == 0 || *threads == 0)
    return fail(Errc::kInvalidArgument, "--samples, --cold-samples and --threads must be >= 1");
  opt.ttfb_samples = *samples;
  opt.cold_samples = *cold;
  opt.threads = *threads;
  opt.seconds = *seconds;
  return opt;
}

// --- figures ---------------------------------------------------------------

struct Ttfb {
  std::vector<double> sorted_ms;
  std::uint64_t errors = 0;
  std::string first_error;

  double p(double q) const { return percentile(sorted_ms, q); }
  double max() const { return sorted_ms.empty() ? 0 : sorted_ms.back(); }
  long stalls() const {
    return std::count_if(sorted_ms.begin(), sorted_ms.end(),
                         [](double ms) { return ms >= kStallUs / 1e3; });
  }
  void add(const Ttfb& other) {
    sorted_ms.insert(sorted_ms.end(), other.sorted_ms.begin(), other.sorted_ms.end());
    std::sort(sorted_ms.begin(), sorted_ms.end());
    if (errors == 0) first_error = other.first_error;
    errors += other.errors;
  }
};

struct Rate {
  std::uint64_t connections = 0;
  double seconds = 0;
  std::uint64_t errors = 0;
  std::string first_error;
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
  std::uint64_t stalls = 0;

  double per_second() const { return seconds > 0 ? connections / seconds : 0; }
};

std::string ms(double value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), value < 10 ? "%.2f" : "%.1f", value);
  return buf;
}

std::string describe(const Ttfb& t) {
  return ms(t.p(50)) + " / " + ms(t.p(99)) + " / " + ms(t.max()) + " ms, " +
         std::to_string(t.stalls()) + " >= 200 ms, n=" + std::to_string(t.sorted_ms.size());
}

// Something did not run cleanly: reported at the end, exit code 1.
std::vector<std::string> g_problems;

void check_errors(const std::string& phase, std::uint64_t errors, const std::string& first) {
  if (errors == 0) return;
  g_problems.push_back(phase + ": " + std::to_string(errors) +
                       " connection(s) failed, first: " + first);
  std::printf("  WARNING %s: %llu connection(s) failed (first: %s)\n", phase.c_str(),
              static_cast<unsigned long long>(errors), first.c_str());
}

// --- workloads -------------------------------------------------------------

// Where the client (node 0) and the server (node 1) run.
struct Placement {
  std::string client_cgroup;
  std::string server_cgroup;
};

struct Bench {
  Options opt;
  std::string self;  // this binary, re-executed as the workloads
  const e2e::Topology& topology;
  const e2e::TempDir& dir;
  const e2e::Cluster& cluster_a;
  const e2e::Cluster& cluster_b;
};

Result<e2e::Child> start_server(const Bench& b, const std::string& cgroup) {
  auto child = e2e::spawn({.netns = b.topology.node(kServerNode),
                           .cgroup = cgroup,
                           .argv = {b.self, "serve", std::to_string(kServerPort)}});
  if (!child) return std::unexpected(child.error());
  if (auto ok = e2e::wait_for_tcp_listen(b.topology.node(kServerNode), kServerPort,
                                         e2e::kReadyTimeout, &*child);
      !ok)
    return fail(ok.error().code, "the server: " + ok.error().message);
  return std::move(*child);
}

// Kills the TIME_WAIT sockets of both nodes (`ss -K`), so a phase does not
// inherit the previous one's: tf_resend_held walks the host's whole TCP
// hash table, so every socket on the host, in any netns, slows the agents
// down, and a 3 s baseline round leaves ~40,000 of them for 60 s.
Result<void> flush_time_wait(const Bench& b) {
  for (std::size_t node : {kClientNode, kServerNode}) {
    auto result = e2e::run_in(
        {.netns = b.topology.node(node), .argv = {"ss", "-K", "-t", "-n", "state", "time-wait"}});
    if (!result) return std::unexpected(result.error());
    if (result->exit_code != 0)
      return fail(Errc::kIo, "ss -K state time-wait in " + b.topology.node(node) + " exited with " +
                                 std::to_string(result->exit_code) + ": " + result->err);
  }
  return {};
}

// Runs `client ARGS...` in node 0 and parses the JSON line it prints.
Result<json> run_client(const Bench& b, const std::string& cgroup, std::vector<std::string> args,
                        milliseconds timeout) {
  if (auto ok = flush_time_wait(b); !ok) return std::unexpected(ok.error());
  args.insert(args.begin(), {b.self, "client"});
  auto result =
      e2e::run_in({.netns = b.topology.node(kClientNode), .cgroup = cgroup, .argv = args}, timeout);
  if (!result) return std::unexpected(result.error());
  if (result->exit_code != 0)
    return fail(Errc::kIo, testing::join_argv(args) + " exited with " +
                               std::to_string(result->exit_code) + ": " + result->err);
  try {
    return json::parse(result->out);
  } catch (const json::exception& e) {
    return fail(Errc::kIo,
                "the client printed no JSON (" + std::string(e.what()) + "): " + result->out);
  }
}

Result<Ttfb> measure_ttfb(const Bench& b, const std::string& cgroup, const std::string& target,
                          std::uint64_t samples, std::uint64_t warmup) {
  const auto timeout = milliseconds(30'000 + (samples + warmup) * (kIoTimeoutSeconds * 1000 + 100));
  auto out = run_client(b, cgroup,
                        {"ttfb", target, std::to_string(samples), std::to_string(warmup)}, timeout);
  if (!out) return std::unexpected(out.error());
  Ttfb t;
  try {
    for (double us : out->at("samples_us")) t.sorted_ms.push_back(us / 1e3);
    t.errors = out->at("errors").get<std::uint64_t>();
    t.first_error = out->at("first_error").get<std::string>();
  } catch (const json::exception& e) {
    return fail(Errc::kIo, std::string("the client's ttfb JSON: ") + e.what());
  }
  std::sort(t.sorted_ms.begin(), t.sorted_ms.end());
  return t;
}

Result<Rate> measure_rate(const Bench& b, const std::string& cgroup, const std::string& target) {
  const auto timeout = milliseconds(60'000 + static_cast<long>(b.opt.seconds * 1000));
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%g", b.opt.seconds);
  auto out =
      run_client(b, cgroup, {"rate", target, std::to_string(b.opt.threads), seconds}, timeout);
  if (!out) return std::unexpected(out.error());
  Rate r;
  try {
    r.connections = out->at("connections").get<std::uint64_t>();
    r.seconds = out->at("seconds").get<double>();
    r.errors = out->at("errors").get<std::uint64_t>();
    r.first_error = out->at("first_error").get<std::string>();
    r.p50_ms = out->at("p50_us").get<double>() / 1e3;
    r.p99_ms = out->at("p99_us").get<double>() / 1e3;
    r.max_ms = out->at("max_us").get<double>() / 1e3;
    r.stalls = out->at("stalls").get<std::uint64_t>();
  } catch (const json::exception& e) {
    return fail(Errc::kIo, std::string("the client's rate JSON: ") + e.what());
  }
  return r;
}

void print_rate(const char* name, const Rate& r) {
  std::printf(
      "  %-34s %8.0f conn/s  (%llu in %.2f s; per connection p50 %s, "
      "p99 %s, max %s ms; %llu >= 200 ms)\n",
      name, r.per_second(), static_cast<unsigned long long>(r.connections), r.seconds,
      ms(r.p50_ms).c_str(), ms(r.p99_ms).c_str(), ms(r.max_ms).c_str(),
      static_cast<unsigned long long>(r.stalls));
}

// --- agents ----------------------------------------------------------------

using Agents = std::vector<std::unique_ptr<e2e::AgentNode>>;

// node 0: team-a.gke.local, node 1: team-b.eks.local, each aliasing the other.
Result<Agents> start_agents(const Bench& b) {
  Agents agents;
  const e2e::Cluster* clusters[] = {&b.cluster_a, &b.cluster_b};
  for (std::size_t node : {kClientNode, kServerNode}) {
    e2e::AgentSpec spec;
    spec.name = "node" + std::to_string(node);
    spec.node = node;
    spec.cluster = clusters[node];
    spec.bundles = {&b.cluster_a, &b.cluster_b};
    spec.config = {"trust-domain-alias = " + clusters[1 - node]->trust_domain()};
    auto agent = e2e::AgentNode::start(b.topology, spec, b.dir, TF_CLI_PATH);
    if (!agent) return std::unexpected(agent.error());
    agents.push_back(std::move(*agent));
  }
  return agents;
}

Result<json> agent_stats(const e2e::AgentNode& agent) {
  auto result = testing::run_command({TF_CLI_PATH, "stats", "--json", "--api-socket",
                                      agent.api_socket(), "--pin-dir", agent.pin_dir()});
  if (!result) return std::unexpected(result.error());
  if (result->exit_code != 0)
    return fail(Errc::kIo, agent.name() + ": trustfence stats failed: " + result->err);
  try {
    return json::parse(result->out);
  } catch (const json::exception& e) {
    return fail(Errc::kIo, agent.name() + ": trustfence stats printed no JSON: " + e.what());
  }
}

// What the agents' stats and logs say about a stretch of connections.
struct AgentCounters {
  std::uint64_t tracked = 0;          // counters.conn_tracked
  std::uint64_t requests_sent = 0;    // attestation requests for our outbound sockets
  std::uint64_t responses = 0;        // answers received to them
  std::uint64_t requests_served = 0;  // requests answered for a peer
  std::uint64_t pending_drops = 0;    // payload held until the verdict
  std::uint64_t deny_drops = 0;       // packets dropped for any other reason
  std::uint64_t allow_lines = 0;      // "allow ..." decisions in the debug log
  std::uint64_t deny_lines = 0;       // "deny ..." decisions
  std::size_t log_size = 0;
};

std::uint64_t number_at(const json& j, std::initializer_list<const char*> path) {
  const json* at = &j;
  for (const char* key : path) {
    if (!at->is_object() || !at->contains(key)) return 0;
    at = &(*at)[key];
  }
  return at->is_number_unsigned() ? at->get<std::uint64_t>() : 0;
}

// Counts decision lines the agent logs at debug level (AgentSpec writes
// log-level = debug): "... allow outbound ..." / "... deny inbound ...".
std::uint64_t count_decisions(const std::string& log, std::size_t from,
                              const std::string& verdict) {
  std::uint64_t n = 0;
  for (const char* dir : {"outbound", "inbound"}) {
    const std::string needle = verdict + " " + dir + " ";
    for (auto at = log.find(needle, from); at != std::string::npos; at = log.find(needle, at + 1))
      ++n;
  }
  return n;
}

Result<AgentCounters> read_counters(const e2e::AgentNode& agent, std::size_t log_from) {
  auto stats = agent_stats(agent);
  if (!stats) return std::unexpected(stats.error());
  AgentCounters c;
  c.tracked = number_at(*stats, {"counters", "conn_tracked"});
  c.requests_sent = number_at(*stats, {"attestation", "requests_sent"});
  c.responses = number_at(*stats, {"attestation", "responses"});
  c.requests_served = number_at(*stats, {"attestation", "requests_served"});
  if (auto packets = stats->find("packets"); packets != stats->end() && packets->is_object()) {
    for (const auto& [dir, actions] : packets->items()) {
      if (!actions.contains("drop")) continue;
      for (const auto& [reason, n] : actions["drop"].items())
        (reason == "pending" ? c.pending_drops : c.deny_drops) += n.get<std::uint64_t>();
    }
  }
  auto log = agent.log();
  if (!log) return std::unexpected(log.error());
  c.allow_lines = count_decisions(*log, log_from, "allow");
  c.deny_lines = count_decisions(*log, log_from, "deny");
  c.log_size = log->size();
  return c;
}

AgentCounters operator-(const AgentCounters& a, const AgentCounters& b) {
  return {a.tracked - b.tracked,
          a.requests_sent - b.requests_sent,
          a.responses - b.responses,
          a.requests_served - b.requests_served,
          a.pending_drops - b.pending_drops,
          a.deny_drops - b.deny_drops,
          a.allow_lines,  // already counted from the mark on
          a.deny_lines,
          a.log_size};
}

// Polls until both agents logged a decision for every connection made (they
// log just after writing the verdicts), at most a few seconds.
Result<std::vector<AgentCounters>> settle_counters(const Agents& agents,
                                                   const std::vector<AgentCounters>& before,
                                                   std::uint64_t connections) {
  std::vector<AgentCounters> delta(agents.size());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    bool settled = true;
    for (std::size_t i = 0; i < agents.size(); ++i) {
      auto now = read_counters(*agents[i], before[i].log_size);
      if (!now) return std::unexpected(now.error());
      delta[i] = *now - before[i];
      settled = settled && delta[i].allow_lines + delta[i].deny_lines >= connections;
    }
    if (settled || std::chrono::steady_clock::now() > deadline) return delta;
    std::this_thread::sleep_for(milliseconds(100));
  }
}

// The outbound channel of node 0's agent to node 1: "ready", "none", ...
std::string channel_state(const e2e::AgentNode& agent) {
  auto stats = agent_stats(agent);
  if (!stats) return "unknown (" + stats.error().message + ")";
  for (const auto& c : stats->value("channels", json::array()))
    if (c.value("side", "") == "outbound")
      return c.value("state", "?") + (c.value("resumed", false) ? " (resumed session)" : "");
  return "none";
}

// Copies each agent's log and its stats JSON into dir, for a look at where
// the time went (log-level = debug: a line per event and per verdict).
void keep_logs(const Agents& agents, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  for (const auto& agent : agents) {
    auto log = agent->log();
    auto stats = agent_stats(*agent);
    std::ofstream(dir + "/" + agent->name() + ".log") << (log ? *log : log.error().message);
    std::ofstream(dir + "/" + agent->name() + "-stats.json")
        << (stats ? stats->dump(2) : stats.error().message) << "\n";
  }
  std::printf("  agent logs and stats kept in %s\n", dir.c_str());
}

// --- phases ----------------------------------------------------------------

struct Figures {
  Ttfb baseline, warm, cold, stunnel;
  Rate baseline_rate[2], enforced_rate, stunnel_rate;
  std::vector<AgentCounters> rate_check;
  std::string warm_channel;
  std::string stunnel_version;

  double baseline_per_second() const {
    return (baseline_rate[0].per_second() + baseline_rate[1].per_second()) / 2;
  }
};

Result<void> phase_baseline_ttfb_and_rate(const Bench& b, const Placement& plain,
                                          const std::string& target, Figures& f) {
  std::printf("-- no agents (plain cgroups)\n");
  auto server = start_server(b, plain.server_cgroup);
  if (!server) return std::unexpected(server.error());
  auto ttfb = measure_ttfb(b, plain.client_cgroup, target, b.opt.ttfb_samples, b.opt.warmup);
  if (!ttfb) return std::unexpected(ttfb.error());
  f.baseline = std::move(*ttfb);
  std::printf("  %-34s %s\n", "TTFB p50 / p99 / max", describe(f.baseline).c_str());
  check_errors("baseline TTFB", f.baseline.errors, f.baseline.first_error);
  auto rate = measure_rate(b, plain.client_cgroup, target);
  if (!rate) return std::unexpected(rate.error());
  f.baseline_rate[0] = *rate;
  print_rate("rate, round 1", *rate);
  check_errors("baseline rate", rate->errors, rate->first_error);
  return {};
}

Result<void> phase_enforced(const Bench& b, const std::string& target, Figures& f) {
  std::printf("-- agents on both nodes (workloads in the enforced cgroups)\n");
  auto agents = start_agents(b);
  if (!agents) return std::unexpected(agents.error());
  const Placement enforced{(*agents)[kClientNode]->cgroup(), (*agents)[kServerNode]->cgroup()};
  // Declared after the agents: stopped first, so the cgroups can go.
  auto server = start_server(b, enforced.server_cgroup);
  if (!server) return std::unexpected(server.error());

  auto warm = measure_ttfb(b, enforced.client_cgroup, target, b.opt.ttfb_samples, b.opt.warmup);
  if (!warm) return std::unexpected(warm.error());
  f.warm = std::move(*warm);
  f.warm_channel = channel_state(*(*agents)[kClientNode]);
  std::printf("  %-34s %s (channel node0 -> node1: %s)\n", "warm TTFB p50 / p99 / max",
              describe(f.warm).c_str(), f.warm_channel.c_str());
  check_errors("warm TTFB", f.warm.errors, f.warm.first_error);

  std::vector<AgentCounters> before;
  for (const auto& agent : *agents) {
    auto log = agent->log();
    auto c = read_counters(*agent, log ? log->size() : 0);
    if (!c) return std::unexpected(c.error());
    before.push_back(*c);
  }
  auto rate = measure_rate(b, enforced.client_cgroup, target);
  if (!rate) return std::unexpected(rate.error());
  f.enforced_rate = *rate;
  print_rate("rate, every connection attested", *rate);
  check_errors("enforced rate", rate->errors, rate->first_error);
  auto delta = settle_counters(*agents, before, rate->connections);
  if (!delta) return std::unexpected(delta.error());
  f.rate_check = *delta;
  for (std::size_t i = 0; i < delta->size(); ++i) {
    const auto& d = (*delta)[i];
    std::printf(
        "    node%zu agent: %llu tracked, %llu allow / %llu deny decisions logged, "
        "%llu requests sent, %llu responses, %llu served; packets held (pending drops) "
        "%llu, dropped otherwise %llu\n",
        i, static_cast<unsigned long long>(d.tracked),
        static_cast<unsigned long long>(d.allow_lines),
        static_cast<unsigned long long>(d.deny_lines),
        static_cast<unsigned long long>(d.requests_sent),
        static_cast<unsigned long long>(d.responses),
        static_cast<unsigned long long>(d.requests_served),
        static_cast<unsigned long long>(d.pending_drops),
        static_cast<unsigned long long>(d.deny_drops));
    const auto n = rate->connections;
    if (d.deny_lines != 0 || d.deny_drops != 0)
      g_problems.push_back("node" + std::to_string(i) +
                           "'s agent denied connections or dropped "
                           "packets during the rate run");
    // Every connection made has one socket on each node, each decided once.
    if (d.allow_lines < n || d.allow_lines > n + n / 20 + 10)
      g_problems.push_back("node" + std::to_string(i) + "'s agent logged " +
                           std::to_string(d.allow_lines) + " allow decisions for " +
                           std::to_string(n) + " connections");
  }

  for (std::uint64_t i = 0; i < b.opt.cold_samples && !stop_requested(); ++i) {
    for (auto& agent : *agents)
      if (auto ok = agent->restart({}); !ok) return ok;
    auto cold = measure_ttfb(b, enforced.client_cgroup, target, 1, 0);
    if (!cold) return std::unexpected(cold.error());
    f.cold.add(*cold);
  }
  std::printf("  %-34s %s (both agents restarted before each)\n", "cold TTFB p50 / p99 / max",
              describe(f.cold).c_str());
  check_errors("cold TTFB", f.cold.errors, f.cold.first_error);
  server->terminate();
  if (!b.opt.keep_logs.empty()) keep_logs(*agents, b.opt.keep_logs);
  return {};
}

Result<void> phase_baseline_rate_and_stunnel(const Bench& b, const Placement& plain,
                                             const std::string& target, Figures& f) {
  std::printf("-- no agents again\n");
  auto server = start_server(b, plain.server_cgroup);
  if (!server) return std::unexpected(server.error());
  auto rate = measure_rate(b, plain.client_cgroup, target);
  if (!rate) return std::unexpected(rate.error());
  f.baseline_rate[1] = *rate;
  print_rate("rate, round 2", *rate);
  check_errors("baseline rate (round 2)", rate->errors, rate->first_error);

  std::printf("-- through stunnel (%s), no agents\n", f.stunnel_version.c_str());
  auto pair = StunnelPair::start(b.topology, b.dir,
                                 {.client_cluster = &b.cluster_a,
                                  .server_cluster = &b.cluster_b,
                                  .client_cgroup = plain.client_cgroup,
                                  .server_cgroup = plain.server_cgroup,
                                  .client_port = kStunnelClientPort,
                                  .tls_port = kStunnelTlsPort,
                                  .server_port = kServerPort});
  if (!pair) return std::unexpected(pair.error());
  const std::string via_stunnel = "127.0.0.1:" + std::to_string(kStunnelClientPort);
  auto srate = measure_rate(b, plain.client_cgroup, via_stunnel);
  if (!srate) return fail(srate.error().code, srate.error().message + "\n" + pair->logs());
  f.stunnel_rate = *srate;
  print_rate("rate through stunnel", *srate);
  check_errors("stunnel rate", srate->errors, srate->first_error);
  auto sttfb = measure_ttfb(b, plain.client_cgroup, via_stunnel, b.opt.ttfb_samples, b.opt.warmup);
  if (!sttfb) return fail(sttfb.error().code, sttfb.error().message + "\n" + pair->logs());
  f.stunnel = std::move(*sttfb);
  std::printf("  %-34s %s\n", "TTFB through stunnel", describe(f.stunnel).c_str());
  check_errors("stunnel TTFB", f.stunnel.errors, f.stunnel.first_error);
  return {};
}

// --- the table -------------------------------------------------------------

void row(const std::string& figure, const std::string& value, const std::string& target,
         std::optional<bool> met) {
  std::printf("  %-46s %-30s %-12s %s\n", figure.c_str(), value.c_str(), target.c_str(),
              met ? (*met ? "met" : "MISSED") : "");
}

std::string delta_ms(double value) { return (value >= 0 ? "+" : "") + ms(value) + " ms"; }

void print_table(const Figures& f, const Options& opt) {
  std::printf("\n== results%s ==\n", opt.smoke ? " (smoke: tiny samples, figures are rough)" : "");
  row("figure", "value", "target", std::nullopt);
  row("TTFB, no agents p50 / p99 / max",
      ms(f.baseline.p(50)) + " / " + ms(f.baseline.p(99)) + " / " + ms(f.baseline.max()) + " ms",
      "baseline", std::nullopt);
  row("TTFB, warm channel p50 / p99 / max",
      ms(f.warm.p(50)) + " / " + ms(f.warm.p(99)) + " / " + ms(f.warm.max()) + " ms", "",
      std::nullopt);
  row("TTFB, cold channel p50 / p99 / max",
      ms(f.cold.p(50)) + " / " + ms(f.cold.p(99)) + " / " + ms(f.cold.max()) + " ms", "",
      std::nullopt);
  const double warm50 = f.warm.p(50) - f.baseline.p(50);
  const double warm99 = f.warm.p(99) - f.baseline.p(99);
  const double cold50 = f.cold.p(50) - f.baseline.p(50);
  row("  warm p50 over the baseline", delta_ms(warm50), "<= +1 ms", warm50 <= kWarmP50TargetMs);
  row("  warm p99 over the baseline", delta_ms(warm99), "<= +5 ms", warm99 <= kWarmP99TargetMs);
  row("  cold p50 over the baseline", delta_ms(cold50), "<= +5 ms", cold50 <= kColdP50TargetMs);
  const auto stalls =
      static_cast<std::uint64_t>(f.warm.stalls() + f.cold.stalls()) + f.enforced_rate.stalls;
  const auto enforced_count =
      f.warm.sorted_ms.size() + f.cold.sorted_ms.size() + f.enforced_rate.connections;
  row("  connections >= 200 ms (warm, cold, rate)",
      std::to_string(stalls) + " of " + std::to_string(enforced_count), "none", stalls == 0);
  const double base = f.baseline_per_second();
  char value[96];
  std::snprintf(value, sizeof(value), "%.0f / %.0f = %.3f", f.enforced_rate.per_second(), base,
                base > 0 ? f.enforced_rate.per_second() / base : 0);
  row("conn/s, every connection attested / none", value, ">= 0.8",
      base > 0 && f.enforced_rate.per_second() / base >= kRateRatioTarget);
  std::snprintf(value, sizeof(value), "  (no agents: %.0f and %.0f)",
                f.baseline_rate[0].per_second(), f.baseline_rate[1].per_second());
  row("", value, "", std::nullopt);
  const double s = f.stunnel_rate.per_second();
  std::snprintf(value, sizeof(value), "%.0f / %.0f = %.1fx", f.enforced_rate.per_second(), s,
                s > 0 ? f.enforced_rate.per_second() / s : 0);
  row("conn/s, trustfence / stunnel pair", value, ">= 30x",
      s > 0 && f.enforced_rate.per_second() / s >= kStunnelFactorTarget);
  std::snprintf(value, sizeof(value), "%.0f / %.0f = %.3f", s, base, base > 0 ? s / base : 0);
  row("  (conn/s, stunnel / none)", value, "", std::nullopt);
  row("TTFB through stunnel p50 / p99", ms(f.stunnel.p(50)) + " / " + ms(f.stunnel.p(99)) + " ms",
      "context", std::nullopt);
  std::printf(
      "  (TTFB: connect() to the reply byte, sequential, client node 0 -> server node 1 over "
      "veth; rate: %llu client threads x %.1f s; the baseline rate is the mean of two rounds "
      "around the enforced one)\n",
      static_cast<unsigned long long>(opt.threads), opt.seconds);
}

// "0.52 0.61 0.70": other work on the host moves every figure here.
std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

Result<std::string> self_path() {
  std::error_code ec;
  auto path = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return fail(Errc::kIo, "reading /proc/self/exe: " + ec.message());
  return path.string();
}

Result<void> run(const Options& opt) {
  if (::geteuid() != 0)
    return fail(Errc::kPermissionDenied,
                "needs root (network namespaces, cgroups, BPF programs of the agents)");
  Figures f;
  auto version = StunnelPair::version();
  if (!version) return std::unexpected(version.error());
  f.stunnel_version = *version;
  auto self = self_path();
  if (!self) return std::unexpected(self.error());
  auto topology = e2e::Topology::create(2);
  if (!topology) return std::unexpected(topology.error());
  auto dir = e2e::TempDir::create();
  if (!dir) return std::unexpected(dir.error());
  const e2e::Cluster cluster_a("team-a.gke.local");
  const e2e::Cluster cluster_b("team-b.eks.local");
  const Bench b{opt, *self, *topology, *dir, cluster_a, cluster_b};
  auto plain_client = testing::kernel::TestCgroup::create(e2e::kE2ePrefix);
  if (!plain_client) return std::unexpected(plain_client.error());
  auto plain_server = testing::kernel::TestCgroup::create(e2e::kE2ePrefix);
  if (!plain_server) return std::unexpected(plain_server.error());
  const Placement plain{plain_client->path(), plain_server->path()};
  const std::string target = topology->ipv4_endpoint(kServerNode, kServerPort);

  std::printf("== trustfence attestation: time to first byte and connection rate%s ==\n",
              opt.smoke ? " (smoke)" : "");
  std::printf(
      "client in node 0 (%s), server %s in node 1; %llu TTFB samples (+%llu warm-up), "
      "%llu cold, rate %llu threads x %.1f s\n",
      topology->ipv4(kClientNode).c_str(), target.c_str(),
      static_cast<unsigned long long>(opt.ttfb_samples),
      static_cast<unsigned long long>(opt.warmup),
      static_cast<unsigned long long>(opt.cold_samples),
      static_cast<unsigned long long>(opt.threads), opt.seconds);
  std::printf("%u CPUs, load average %s at the start\n", std::thread::hardware_concurrency(),
              load_average().c_str());
  std::fflush(stdout);

  if (auto ok = phase_baseline_ttfb_and_rate(b, plain, target, f); !ok) return ok;
  std::fflush(stdout);
  if (auto ok = phase_enforced(b, target, f); !ok) return ok;
  std::fflush(stdout);
  if (auto ok = phase_baseline_rate_and_stunnel(b, plain, target, f); !ok) return ok;
  if (stop_requested()) return fail(Errc::kIo, "interrupted");
  print_table(f, opt);
  std::printf("  load average %s at the end\n", load_average().c_str());
  if (!g_problems.empty()) {
    std::string all;
    for (const auto& p : g_problems) all += "\n  " + p;
    return fail(Errc::kIo, "the run was not clean:" + all);
  }
  return {};
}

}  // namespace
}  // namespace trustfence::bench::attest

int main(int argc, char** argv) {
  using namespace trustfence::bench::attest;
  if (argc >= 2) {
    const std::string sub = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    if (sub == "serve") return serve_main(args);
    if (sub == "client") return client_main(args);
  }
  return trustfence::bench::bench_main(argc, argv, parse_options, run);
}
