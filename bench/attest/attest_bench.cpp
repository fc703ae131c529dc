// Scenarios 2-4 of the benchmark (issue 7) and the in-place half of
// scenario 1, each against the same run without trustfence:
//
//   rate     connections per second (connect, 1-byte request, 1-byte reply,
//            close; THREADS client threads): no enforcement, trustfence with
//            a warm channel, trustfence with cold peers (both agents
//            restarted just before, so the window starts with the channel
//            handshake), a stunnel mTLS pair, an haproxy mTLS pair
//   ttfb     time to first byte of a new connection, sequential: the same
//            paths, cold peers sample by sample (both agents restarted
//            before each); connections >= 200 ms and the TCP segments the
//            two nodes retransmitted (/proc/net/snmp in each netns)
//   bulk     iperf3, 1 and 8 streams, client and server in their nodes'
//            enforced cgroups, against plain cgroups; iperf3 through a
//            stunnel pair for reference (the proxies encrypt, trustfence
//            does not)
//   http     HTTP/1.1 keep-alive requests per second and latency
//            percentiles, Debian's wrk in node 0 against this binary's
//            `http` responder in node 1: no enforcement, trustfence with a
//            warm channel, a stunnel and an haproxy mTLS pair; figures for
//            context, no target
//   inplace  ns per packet of the attached tf_egress / tf_ingress during
//            an iperf3 run, from the kernel's BPF statistics, against an
//            empty program attached to the baseline's cgroups the same way
//
// Two e2e nodes (network namespaces over a bridge), each with its agent
// running throughout (team-a.gke.local and team-b.eks.local, aliasing each
// other). The baseline puts client and server into plain cgroups of the
// same nodes, outside the enforced ones, so a repetition switches between
// with and without trustfence without restarting anything: A B C ..., then
// the reverse, repetition after repetition. The workloads are this binary
// re-executed inside the nodes (workload.hpp).
//
// Figures are printed against their targets and, with --json-dir, written
// as bench/results files (bench/conn/results.hpp); nothing here fails on a
// number. The exit code is non-zero only when something did not run (a
// workload failed, a connection failed, an agent dropped a packet for
// anything but a pending verdict).

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "haproxy.hpp"
#include "inplace.hpp"
#include "results.hpp"
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

constexpr std::size_t kClientNode = 0;
constexpr std::size_t kServerNode = 1;
// node 1: the workload server in the plain cgroup and in the enforced one
constexpr std::uint16_t kPlainServerPort = 9000;
constexpr std::uint16_t kEnforcedServerPort = 9100;
// node 0 loopback -> node 1 TLS port -> node 1 loopback server
constexpr std::uint16_t kStunnelClientPort = 9001, kStunnelTlsPort = 9443;
constexpr std::uint16_t kHaproxyClientPort = 9002, kHaproxyTlsPort = 9444;
constexpr std::uint16_t kIperfStunnelClientPort = 9003, kIperfStunnelTlsPort = 9445;
constexpr std::uint16_t kPlainIperfPort = 5201, kEnforcedIperfPort = 5202;
// node 1: the HTTP responder, plain and enforced; its proxy pairs
constexpr std::uint16_t kPlainHttpPort = 8080, kEnforcedHttpPort = 8180;
constexpr std::uint16_t kHttpStunnelClientPort = 9004, kHttpStunnelTlsPort = 9446;
constexpr std::uint16_t kHttpHaproxyClientPort = 9005, kHttpHaproxyTlsPort = 9447;
// wrk's threads and connections (keep-alive, one request in flight each)
constexpr int kWrkThreads = 2, kWrkConnections = 16;

// Targets of issues 4 and 7, over the baseline.
constexpr double kWarmP50TargetMs = 1;
constexpr double kWarmP99TargetMs = 5;
constexpr double kColdP50TargetMs = 5;
constexpr double kRateRatioTarget = 0.8;
constexpr double kStunnelFactorTarget = 30;
constexpr double kBulkRatioTarget = 0.99;
constexpr double kPacketDeltaTargetNs = 10;

const std::vector<std::string> kScenarios = {"rate", "ttfb", "bulk", "http", "inplace"};

struct Options {
  std::uint64_t reps = 5;
  std::uint64_t ttfb_samples = 1000;  // per path and repetition
  std::uint64_t cold_samples = 4;     // per repetition, an agent restart each
  std::uint64_t warmup = 5;
  std::uint64_t threads = 4;
  double seconds = 2.0;             // per rate window
  std::uint64_t bulk_seconds = 3;   // per iperf3 run (iperf3 takes whole seconds)
  std::set<std::string> scenarios;  // empty: all
  std::string json_dir;
  std::string keep_logs;  // the agents' logs and stats, at the end
  bool smoke = false;

  bool wants(const std::string& s) const { return scenarios.empty() || scenarios.contains(s); }
};

Result<Options> parse_options(int argc, char** argv) {
  auto args = Args::parse(argc, argv,
                          {"reps", "samples", "cold-samples", "threads", "seconds", "bulk-seconds",
                           "scenarios", "json-dir", "keep-logs"},
                          {"smoke"});
  if (!args) return std::unexpected(args.error());
  Options opt;
  if (args->flag("smoke")) {
    opt.reps = 2;
    opt.ttfb_samples = 20;
    opt.cold_samples = 1;
    opt.warmup = 2;
    opt.seconds = 0.5;
    opt.bulk_seconds = 1;
    opt.smoke = true;
  }
  for (auto [name, field] :
       {std::pair{"reps", &opt.reps}, std::pair{"samples", &opt.ttfb_samples},
        std::pair{"cold-samples", &opt.cold_samples}, std::pair{"threads", &opt.threads},
        std::pair{"bulk-seconds", &opt.bulk_seconds}}) {
    auto n = args->number(name, *field);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) return fail(Errc::kInvalidArgument, std::string("--") + name + " must be >= 1");
    *field = *n;
  }
  auto seconds = args->real("seconds", opt.seconds);
  if (!seconds) return std::unexpected(seconds.error());
  opt.seconds = *seconds;
  std::stringstream list(args->text("scenarios", ""));
  for (std::string s; std::getline(list, s, ',');) {
    if (std::find(kScenarios.begin(), kScenarios.end(), s) == kScenarios.end())
      return fail(Errc::kInvalidArgument,
                  "--scenarios: unknown scenario '" + s + "' (rate, ttfb, bulk, http, inplace)");
    opt.scenarios.insert(s);
  }
  opt.json_dir = args->text("json-dir", "");
  opt.keep_logs = args->text("keep-logs", "");
  return opt;
}

// --- paths -----------------------------------------------------------------

// How a client in node 0 reaches the server in node 1.
enum class Path { kNone, kWarm, kCold, kStunnel, kHaproxy };

const char* key(Path p) {
  switch (p) {
    case Path::kNone:
      return "none";
    case Path::kWarm:
      return "warm";
    case Path::kCold:
      return "cold";
    case Path::kStunnel:
      return "stunnel";
    case Path::kHaproxy:
      return "haproxy";
  }
  return "?";
}

const char* label(Path p) {
  switch (p) {
    case Path::kNone:
      return "no enforcement";
    case Path::kWarm:
      return "trustfence, warm channel";
    case Path::kCold:
      return "trustfence, cold peers";
    case Path::kStunnel:
      return "stunnel mTLS pair";
    case Path::kHaproxy:
      return "haproxy mTLS pair";
  }
  return "?";
}

bool enforced(Path p) { return p == Path::kWarm || p == Path::kCold; }

using Agents = std::vector<std::unique_ptr<e2e::AgentNode>>;

// Everything the scenarios share, set up once.
struct Lab {
  Options opt;
  std::string self;  // this binary, re-executed as the workloads
  const e2e::Topology& topology;
  std::string plain_client, plain_server;  // cgroups outside the enforced ones
  Agents& agents;

  std::string client_cgroup(Path p) const {
    return enforced(p) ? agents[kClientNode]->cgroup() : plain_client;
  }
  std::string endpoint(Path p) const {
    switch (p) {
      case Path::kNone:
        return topology.ipv4_endpoint(kServerNode, kPlainServerPort);
      case Path::kWarm:
      case Path::kCold:
        return topology.ipv4_endpoint(kServerNode, kEnforcedServerPort);
      case Path::kStunnel:
        return "127.0.0.1:" + std::to_string(kStunnelClientPort);
      case Path::kHaproxy:
        return "127.0.0.1:" + std::to_string(kHaproxyClientPort);
    }
    return {};
  }
  // The HTTP responder behind path p (kCold is not measured).
  std::string http_url(Path p) const {
    switch (p) {
      case Path::kNone:
        return "http://" + topology.ipv4_endpoint(kServerNode, kPlainHttpPort) + "/";
      case Path::kWarm:
      case Path::kCold:
        return "http://" + topology.ipv4_endpoint(kServerNode, kEnforcedHttpPort) + "/";
      case Path::kStunnel:
        return "http://127.0.0.1:" + std::to_string(kHttpStunnelClientPort) + "/";
      case Path::kHaproxy:
        return "http://127.0.0.1:" + std::to_string(kHttpHaproxyClientPort) + "/";
    }
    return {};
  }
};

// A repetition's order: forward, then reversed, so no path always goes first.
template <typename T>
std::vector<T> order(std::vector<T> items, std::uint64_t rep) {
  if (rep % 2) std::reverse(items.begin(), items.end());
  return items;
}

// --- problems --------------------------------------------------------------

void check_errors(const std::string& what, std::uint64_t errors, const std::string& first) {
  if (errors == 0) return;
  problem(what + ": " + std::to_string(errors) + " connection(s) failed, first: " + first);
}

// --- the workload client ---------------------------------------------------

// Kills the TIME_WAIT sockets of both nodes (`ss -K`), so a run does not
// inherit the previous one's: tf_resend_held walks the host's whole TCP
// hash table, so every socket on the host slows the agents down, and a
// rate window leaves tens of thousands of them for 60 s.
Result<void> flush_time_wait(const Lab& lab) {
  for (std::size_t node : {kClientNode, kServerNode}) {
    auto result = e2e::run_in(
        {.netns = lab.topology.node(node), .argv = {"ss", "-K", "-t", "-n", "state", "time-wait"}});
    if (!result) return std::unexpected(result.error());
    if (result->exit_code != 0)
      return fail(Errc::kIo, "ss -K state time-wait in " + lab.topology.node(node) +
                                 " exited with " + std::to_string(result->exit_code) + ": " +
                                 result->err);
  }
  return {};
}

// Runs ARGV in node 0 (in cgroup), after TIME_WAIT is flushed; what it
// printed, if it exited 0.
Result<std::string> run_client(const Lab& lab, const std::string& cgroup,
                               const std::vector<std::string>& argv, milliseconds timeout) {
  if (auto ok = flush_time_wait(lab); !ok) return std::unexpected(ok.error());
  auto result = e2e::run_in(
      {.netns = lab.topology.node(kClientNode), .cgroup = cgroup, .argv = argv}, timeout);
  if (!result) return std::unexpected(result.error());
  if (result->exit_code != 0)
    return fail(Errc::kIo, testing::join_argv(argv) + " exited with " +
                               std::to_string(result->exit_code) + ": " + result->err +
                               result->out.substr(0, 2000));
  return std::move(result->out);
}

// Runs ARGV in node 0 (in cgroup) and parses the JSON it prints.
Result<json> run_json(const Lab& lab, const std::string& cgroup, std::vector<std::string> argv,
                      milliseconds timeout) {
  auto out = run_client(lab, cgroup, argv, timeout);
  if (!out) return std::unexpected(out.error());
  try {
    return json::parse(*out);
  } catch (const json::exception& e) {
    return fail(Errc::kIo, testing::join_argv(argv) + " printed no JSON (" + std::string(e.what()) +
                               "): " + out->substr(0, 2000));
  }
}

struct Ttfb {
  std::vector<double> ms;  // one per connection, in order
  std::uint64_t errors = 0;
  std::string first_error;
};

Result<Ttfb> measure_ttfb(const Lab& lab, Path p, std::uint64_t samples, std::uint64_t warmup) {
  const auto timeout = milliseconds(30'000 + (samples + warmup) * (kIoTimeoutSeconds * 1000 + 100));
  auto out = run_json(lab, lab.client_cgroup(p),
                      {lab.self, "client", "ttfb", lab.endpoint(p), std::to_string(samples),
                       std::to_string(warmup)},
                      timeout);
  if (!out) return std::unexpected(out.error());
  Ttfb t;
  try {
    for (double us : out->at("samples_us")) t.ms.push_back(us / 1e3);
    t.errors = out->at("errors").get<std::uint64_t>();
    t.first_error = out->at("first_error").get<std::string>();
  } catch (const json::exception& e) {
    return fail(Errc::kIo, std::string("the client's ttfb JSON: ") + e.what());
  }
  return t;
}

struct Rate {
  std::uint64_t connections = 0;
  double seconds = 0;
  std::uint64_t errors = 0;
  std::string first_error;
  std::uint64_t stalls = 0;
  double per_second() const { return seconds > 0 ? connections / seconds : 0; }
};

Result<Rate> measure_rate(const Lab& lab, Path p) {
  const auto timeout = milliseconds(60'000 + static_cast<long>(lab.opt.seconds * 1000));
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%g", lab.opt.seconds);
  auto out = run_json(
      lab, lab.client_cgroup(p),
      {lab.self, "client", "rate", lab.endpoint(p), std::to_string(lab.opt.threads), seconds},
      timeout);
  if (!out) return std::unexpected(out.error());
  Rate r;
  try {
    r.connections = out->at("connections").get<std::uint64_t>();
    r.seconds = out->at("seconds").get<double>();
    r.errors = out->at("errors").get<std::uint64_t>();
    r.first_error = out->at("first_error").get<std::string>();
    r.stalls = out->at("stalls").get<std::uint64_t>();
  } catch (const json::exception& e) {
    return fail(Errc::kIo, std::string("the client's rate JSON: ") + e.what());
  }
  return r;
}

// Restarts both agents: their channel and session tickets are gone, the
// pinned verdicts and programs stay.
Result<void> restart_agents(const Lab& lab) {
  for (auto& agent : lab.agents)
    if (auto ok = agent->restart({}); !ok) return ok;
  return {};
}

// A few connections, not recorded: the channel (or the proxies' sessions)
// is up before a warm measurement, whatever ran before it.
Result<void> warm_up(const Lab& lab, Path p) {
  auto t = measure_ttfb(lab, p, 1, lab.opt.warmup);
  if (!t) return std::unexpected(t.error());
  check_errors(std::string("warm-up, ") + label(p), t->errors, t->first_error);
  return {};
}

// TCP segments retransmitted so far by both nodes (RetransSegs of each
// netns's /proc/net/snmp).
Result<std::uint64_t> retransmitted(const Lab& lab) {
  std::uint64_t total = 0;
  for (std::size_t node : {kClientNode, kServerNode}) {
    auto result =
        e2e::run_in({.netns = lab.topology.node(node), .argv = {"cat", "/proc/net/snmp"}});
    if (!result) return std::unexpected(result.error());
    std::istringstream in(result->out);
    std::vector<std::string> header;
    bool found = false;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("Tcp:", 0) != 0) continue;
      std::istringstream fields(line.substr(4));
      std::vector<std::string> words{std::istream_iterator<std::string>(fields), {}};
      if (header.empty()) {
        header = words;
        continue;
      }
      auto at = std::find(header.begin(), header.end(), "RetransSegs");
      if (at == header.end() || static_cast<std::size_t>(at - header.begin()) >= words.size())
        break;
      total += std::stoull(words[at - header.begin()]);
      found = true;
    }
    if (!found)
      return fail(Errc::kIo, "no Tcp RetransSegs in /proc/net/snmp of " + lab.topology.node(node));
  }
  return total;
}

// --- results ---------------------------------------------------------------

std::vector<double> sorted(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v;
}

double median_of(const std::vector<double>& v) { return spread(v).median; }

std::vector<double> ratios(const std::vector<double>& value, const std::vector<double>& base) {
  std::vector<double> out;
  for (std::size_t i = 0; i < value.size() && i < base.size(); ++i)
    if (base[i] != 0) out.push_back(value[i] / base[i]);
  return out;
}

// Up to ~300 points of a CDF (milliseconds, fraction at or below), every
// point of the top 1 %: enough for a plot, small enough to commit.
json cdf_points(const std::vector<double>& unsorted) {
  auto v = sorted(unsorted);
  json points = json::array();
  const std::size_t n = v.size();
  const std::size_t tail = n - std::min<std::size_t>(n, std::max<std::size_t>(n / 100, 20));
  const std::size_t step = std::max<std::size_t>(1, tail / 280);
  for (std::size_t i = 0; i < n; ++i)
    if (i >= tail || i % step == 0 || i + 1 == n)
      points.push_back({v[i], static_cast<double>(i + 1) / n});
  return points;
}

std::string fixed(double v, int decimals) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

// One table row per metric, from the JSON about to be written.
void print_metrics(const json& doc) {
  std::printf("\n  %-58s %12s %12s %22s  %-28s %s\n", "metric", "baseline", "value",
              "ratio median (min-max)", "target", "");
  for (const auto& m : doc["metrics"]) {
    auto median = [&](const char* k) {
      return m[k].is_null() || m[k]["median"].is_null()
                 ? std::string("-")
                 : fixed(m[k]["median"].get<double>(), m[k]["median"].get<double>() < 10 ? 3 : 1);
    };
    std::string ratio = "-";
    if (!m["ratio"].is_null())
      ratio = fixed(m["ratio"]["median"].get<double>(), 3) + " (" +
              fixed(m["ratio"]["min"].get<double>(), 3) + "-" +
              fixed(m["ratio"]["max"].get<double>(), 3) + ")";
    std::string unit = m["unit"].get<std::string>();
    std::printf("  %-58s %12s %12s %22s  %-28s %s\n",
                (m["name"].get<std::string>() + " [" + unit + "]").c_str(),
                median("baseline").c_str(), median("value").c_str(), ratio.c_str(),
                m["target"].is_null() ? "" : m["target"].get<std::string>().c_str(),
                m["met"].is_null() ? "" : (m["met"].get<bool>() ? "met" : "MISSED"));
  }
  std::fflush(stdout);
}

Result<void> finish(const Lab& lab, json doc, const std::string& file) {
  finish_machine_json(doc["machine"]);
  print_metrics(doc);
  if (lab.opt.json_dir.empty()) return {};
  std::error_code ec;
  std::filesystem::create_directories(lab.opt.json_dir, ec);
  return write_json(lab.opt.json_dir + "/" + file, doc);
}

json scenario_doc(const Lab& lab, const std::string& name, const std::string& method) {
  json doc = scenario_json(name, lab.opt.reps);
  doc["method"] = method;
  if (lab.opt.smoke) doc["smoke"] = true;
  return doc;
}

// --- scenario 2: connection rate -------------------------------------------

Result<void> scenario_rate(const Lab& lab) {
  std::printf("\n== scenario 2: connection rate (%llu threads x %g s per window, %llu reps) ==\n",
              static_cast<unsigned long long>(lab.opt.threads), lab.opt.seconds,
              static_cast<unsigned long long>(lab.opt.reps));
  const std::vector<Path> paths = {Path::kNone, Path::kWarm, Path::kCold, Path::kStunnel,
                                   Path::kHaproxy};
  std::map<Path, std::vector<double>> rates, stalls;
  for (std::uint64_t rep = 0; rep < lab.opt.reps && !stop_requested(); ++rep) {
    std::printf("  rep %llu:", static_cast<unsigned long long>(rep + 1));
    for (Path p : order(paths, rep)) {
      auto ready = p == Path::kCold ? restart_agents(lab) : warm_up(lab, p);
      if (!ready) return ready;
      auto r = measure_rate(lab, p);
      if (!r) return fail(r.error().code, std::string(label(p)) + ": " + r.error().message);
      check_errors(std::string("rate, ") + label(p), r->errors, r->first_error);
      rates[p].push_back(r->per_second());
      stalls[p].push_back(static_cast<double>(r->stalls));
      std::printf(" %s %.0f", key(p), r->per_second());
    }
    std::printf(" conn/s\n");
    std::fflush(stdout);
  }
  if (stop_requested()) return fail(Errc::kIo, "interrupted");

  json doc = scenario_doc(
      lab, "conn_rate",
      "connect, 1-byte request, 1-byte reply, close; " + std::to_string(lab.opt.threads) +
          " client threads in node 0, server in node 1 (veth over a bridge); each path one "
          "window per repetition, in alternating order; ratio per repetition");
  for (Path p : {Path::kWarm, Path::kCold, Path::kStunnel, Path::kHaproxy}) {
    Metric m{.name = std::string("conn/s, ") + label(p),
             .unit = "conn/s",
             .baseline = rates[Path::kNone],
             .value = rates[p]};
    if (p == Path::kWarm) {
      m.target = ">= 0.8 x no enforcement";
      m.met = median_of(ratios(rates[p], rates[Path::kNone])) >= kRateRatioTarget;
    }
    doc["metrics"].push_back(metric_json(m));
  }
  doc["metrics"].push_back(
      metric_json({.name = "conn/s, trustfence warm vs stunnel",
                   .unit = "conn/s",
                   .baseline = rates[Path::kStunnel],
                   .value = rates[Path::kWarm],
                   .target = ">= 30 x stunnel",
                   .met = median_of(ratios(rates[Path::kWarm], rates[Path::kStunnel])) >=
                          kStunnelFactorTarget}));
  doc["metrics"].push_back(metric_json({.name = "conn/s, trustfence warm vs haproxy",
                                        .unit = "conn/s",
                                        .baseline = rates[Path::kHaproxy],
                                        .value = rates[Path::kWarm]}));
  std::vector<double> enforced_stalls;
  double total_stalls = 0;
  for (std::size_t i = 0; i < stalls[Path::kWarm].size(); ++i) {
    enforced_stalls.push_back(stalls[Path::kWarm][i] + stalls[Path::kCold][i]);
    total_stalls += enforced_stalls.back();
  }
  doc["metrics"].push_back(metric_json({.name = "connections >= 200 ms, warm + cold windows",
                                        .unit = "connections",
                                        .baseline = stalls[Path::kNone],
                                        .value = enforced_stalls,
                                        .target = "none",
                                        .met = total_stalls == 0}));
  return finish(lab, std::move(doc), "conn_rate.json");
}

// --- scenario 3: time to first byte ----------------------------------------

Result<void> scenario_ttfb(const Lab& lab) {
  std::printf(
      "\n== scenario 3: time to first byte (%llu samples per path and rep, %llu cold, %llu "
      "reps) ==\n",
      static_cast<unsigned long long>(lab.opt.ttfb_samples),
      static_cast<unsigned long long>(lab.opt.cold_samples),
      static_cast<unsigned long long>(lab.opt.reps));
  const std::vector<Path> paths = {Path::kNone, Path::kWarm, Path::kCold, Path::kStunnel,
                                   Path::kHaproxy};
  std::map<Path, std::vector<double>> pooled;
  std::map<Path, std::vector<std::vector<double>>> per_rep;
  std::map<Path, std::vector<double>> retrans_per_1000, stalls;
  for (std::uint64_t rep = 0; rep < lab.opt.reps && !stop_requested(); ++rep) {
    std::printf("  rep %llu: p50", static_cast<unsigned long long>(rep + 1));
    for (Path p : order(paths, rep)) {
      Ttfb t;
      std::uint64_t retrans = 0;
      const std::uint64_t samples = p == Path::kCold ? lab.opt.cold_samples : lab.opt.ttfb_samples;
      if (p != Path::kCold)
        if (auto ok = warm_up(lab, p); !ok) return ok;
      // Cold: both agents restarted before every sample; warm: one run.
      for (std::uint64_t i = 0; i < (p == Path::kCold ? samples : 1); ++i) {
        if (p == Path::kCold)
          if (auto ok = restart_agents(lab); !ok) return ok;
        auto before = retransmitted(lab);
        if (!before) return std::unexpected(before.error());
        auto got = measure_ttfb(lab, p, p == Path::kCold ? 1 : samples, 0);
        if (!got) return fail(got.error().code, std::string(label(p)) + ": " + got.error().message);
        auto after = retransmitted(lab);
        if (!after) return std::unexpected(after.error());
        retrans += *after - *before;
        t.ms.insert(t.ms.end(), got->ms.begin(), got->ms.end());
        if (t.errors == 0) t.first_error = got->first_error;
        t.errors += got->errors;
      }
      check_errors(std::string("TTFB, ") + label(p), t.errors, t.first_error);
      pooled[p].insert(pooled[p].end(), t.ms.begin(), t.ms.end());
      stalls[p].push_back(static_cast<double>(
          std::count_if(t.ms.begin(), t.ms.end(), [](double ms) { return ms >= kStallUs / 1e3; })));
      retrans_per_1000[p].push_back(t.ms.empty() ? 0 : 1000.0 * retrans / t.ms.size());
      per_rep[p].push_back(sorted(t.ms));
      std::printf(" %s %.3f", key(p), percentile(per_rep[p].back(), 50));
    }
    std::printf(" ms\n");
    std::fflush(stdout);
  }
  if (stop_requested()) return fail(Errc::kIo, "interrupted");

  json doc = scenario_doc(
      lab, "ttfb",
      "sequential connections from node 0 to node 1: connect() to the 1-byte reply; cold: both "
      "agents restarted before each sample; the median column is the percentile over all "
      "samples pooled, min-max the range of the per-repetition percentiles");
  auto pct = [&](Path p, double q) {
    std::vector<double> v;
    for (const auto& rep : per_rep[p]) v.push_back(percentile(rep, q));
    return v;
  };
  const auto none_sorted = sorted(pooled[Path::kNone]);
  for (Path p : {Path::kWarm, Path::kCold, Path::kStunnel, Path::kHaproxy}) {
    const auto mine = sorted(pooled[p]);
    for (double q : {50.0, 99.0, 99.9}) {
      const std::string qname = q == 50 ? "p50" : q == 99 ? "p99" : "p999";
      Metric m{.name = "TTFB " + qname + ", " + label(p),
               .unit = "ms",
               .baseline = pct(Path::kNone, q),
               .value = pct(p, q),
               .pooled_baseline = percentile(none_sorted, q),
               .pooled_value = percentile(mine, q)};
      const double delta = percentile(mine, q) - percentile(none_sorted, q);
      if (p == Path::kWarm && q == 50) {
        m.target = "<= no enforcement + 1 ms";
        m.met = delta <= kWarmP50TargetMs;
      } else if (p == Path::kWarm && q == 99) {
        m.target = "<= no enforcement + 5 ms";
        m.met = delta <= kWarmP99TargetMs;
      } else if (p == Path::kCold && q == 50) {
        m.target = "<= no enforcement + 5 ms (issue 4)";
        m.met = delta <= kColdP50TargetMs;
      }
      doc["metrics"].push_back(metric_json(m));
    }
  }
  for (Path p : {Path::kWarm, Path::kCold}) {
    double total = 0;
    for (double s : stalls[p]) total += s;
    doc["metrics"].push_back(metric_json({.name = std::string("connections >= 200 ms, ") + label(p),
                                          .unit = "connections",
                                          .baseline = stalls[Path::kNone],
                                          .value = stalls[p],
                                          .target = "none",
                                          .met = total == 0}));
  }
  for (Path p : {Path::kWarm, Path::kCold})
    doc["metrics"].push_back(metric_json(
        {.name = std::string("TCP segments retransmitted per 1000 connections, ") + label(p),
         .unit = "segments",
         .baseline = retrans_per_1000[Path::kNone],
         .value = retrans_per_1000[p]}));
  doc["samples"] = json::object();
  doc["cdf"] = json::object();
  for (Path p : paths) {
    doc["samples"][key(p)] = pooled[p].size();
    doc["cdf"][key(p)] = {{"label", label(p)}, {"points", cdf_points(pooled[p])}};
  }
  return finish(lab, std::move(doc), "ttfb.json");
}

// --- scenario 4: bulk throughput -------------------------------------------

struct Bulk {
  std::string name;    // JSON and table
  std::string cgroup;  // the client's
  std::string host;
  std::uint16_t port;
  int streams;
};

struct BulkResult {
  double gbps = 0;
  double retransmits = 0;
};

Result<BulkResult> run_iperf(const Lab& lab, const Bulk& b) {
  auto out = run_json(lab, b.cgroup,
                      {"iperf3", "-c", b.host, "-p", std::to_string(b.port), "-t",
                       std::to_string(lab.opt.bulk_seconds), "-P", std::to_string(b.streams), "-J"},
                      milliseconds(60'000 + lab.opt.bulk_seconds * 1000));
  if (!out) return std::unexpected(out.error());
  try {
    if (out->contains("error"))
      return fail(Errc::kIo, "iperf3 (" + b.name + "): " + out->at("error").get<std::string>());
    const auto& end = out->at("end");
    return BulkResult{end.at("sum_received").at("bits_per_second").get<double>() / 1e9,
                      end.at("sum_sent").value("retransmits", 0.0)};
  } catch (const json::exception& e) {
    return fail(Errc::kIo, "iperf3 (" + b.name + ") JSON: " + e.what());
  }
}

Result<void> scenario_bulk(const Lab& lab) {
  std::printf("\n== scenario 4: bulk throughput, iperf3 (%llu s per run, %llu reps) ==\n",
              static_cast<unsigned long long>(lab.opt.bulk_seconds),
              static_cast<unsigned long long>(lab.opt.reps));
  const std::string server_ip = lab.topology.ipv4(kServerNode);
  const std::string tf_client = lab.agents[kClientNode]->cgroup();
  const std::vector<Bulk> runs = {
      {"none-1", lab.plain_client, server_ip, kPlainIperfPort, 1},
      {"trustfence-1", tf_client, server_ip, kEnforcedIperfPort, 1},
      {"none-8", lab.plain_client, server_ip, kPlainIperfPort, 8},
      {"trustfence-8", tf_client, server_ip, kEnforcedIperfPort, 8},
      {"stunnel-1", lab.plain_client, "127.0.0.1", kIperfStunnelClientPort, 1},
  };
  std::map<std::string, std::vector<double>> gbps, retrans;
  for (std::uint64_t rep = 0; rep < lab.opt.reps && !stop_requested(); ++rep) {
    std::printf("  rep %llu:", static_cast<unsigned long long>(rep + 1));
    for (const Bulk& b : order(runs, rep)) {
      auto r = run_iperf(lab, b);
      if (!r) return std::unexpected(r.error());
      gbps[b.name].push_back(r->gbps);
      retrans[b.name].push_back(r->retransmits);
      std::printf(" %s %.2f", b.name.c_str(), r->gbps);
    }
    std::printf(" Gbit/s\n");
    std::fflush(stdout);
  }
  if (stop_requested()) return fail(Errc::kIo, "interrupted");

  json doc = scenario_doc(
      lab, "bulk",
      "iperf3 -t " + std::to_string(lab.opt.bulk_seconds) +
          " from node 0 to node 1 (veth over a bridge), receiver's rate; trustfence: client "
          "and server in their nodes' enforced cgroups, both agents running; baseline: plain "
          "cgroups of the same nodes. trustfence does not encrypt: the stunnel figure is "
          "encrypted traffic, for reference");
  for (int streams : {1, 8}) {
    const std::string n = std::to_string(streams);
    const auto& base = gbps["none-" + n];
    const auto& tf = gbps["trustfence-" + n];
    doc["metrics"].push_back(
        metric_json({.name = "iperf3 " + n + (streams == 1 ? " stream" : " streams") +
                             ", trustfence (no encryption)",
                     .unit = "Gbit/s",
                     .baseline = base,
                     .value = tf,
                     .target = ">= 0.99 x no enforcement",
                     .met = median_of(ratios(tf, base)) >= kBulkRatioTarget}));
  }
  doc["metrics"].push_back(metric_json({.name = "iperf3 1 stream, stunnel mTLS pair (encrypts)",
                                        .unit = "Gbit/s",
                                        .baseline = gbps["none-1"],
                                        .value = gbps["stunnel-1"]}));
  for (int streams : {1, 8}) {
    const std::string n = std::to_string(streams);
    doc["metrics"].push_back(metric_json(
        {.name = "iperf3 " + n + (streams == 1 ? " stream" : " streams") + ", TCP retransmits",
         .unit = "segments",
         .baseline = retrans["none-" + n],
         .value = retrans["trustfence-" + n]}));
  }
  return finish(lab, std::move(doc), "bulk.json");
}

// --- HTTP keep-alive, wrk --------------------------------------------------

struct Wrk {
  double requests_per_second = 0;
  std::map<int, double> latency_ms;  // 50, 75, 90, 99
  std::uint64_t errors = 0;          // socket errors and non-2xx/3xx responses
  std::string first_error;
};

// "123.45us", "1.20ms", "2.00s", "1.50m" -> milliseconds; < 0 if not a time.
double wrk_time_ms(const std::string& text) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    return -1;
  }
  const std::string unit = text.substr(used);
  if (unit == "us") return v / 1e3;
  if (unit == "ms") return v;
  if (unit == "s") return v * 1e3;
  if (unit == "m") return v * 60e3;
  if (unit == "h") return v * 3600e3;
  return -1;
}

// What `wrk --latency` prints: "Requests/sec:", the "Latency Distribution"
// lines ("     50%  412.00us"), "Socket errors: connect 0, read 0, write 0,
// timeout 0" and "Non-2xx or 3xx responses: N" (only when there were any).
Result<Wrk> parse_wrk(const std::string& out) {
  Wrk w;
  bool have_rate = false, in_latency = false;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> f{std::istream_iterator<std::string>(words), {}};
    if (f.empty()) continue;
    if (f[0] == "Latency" && f.size() >= 2 && f[1] == "Distribution") {
      in_latency = true;
      continue;
    }
    if (in_latency && f.size() == 2 && f[0].size() > 1 && f[0].back() == '%') {
      const double ms = wrk_time_ms(f[1]);
      if (ms < 0) return fail(Errc::kIo, "wrk: unexpected latency line '" + line + "'");
      w.latency_ms[std::stoi(f[0])] = ms;
      continue;
    }
    in_latency = false;
    if (f[0] == "Requests/sec:" && f.size() == 2) {
      w.requests_per_second = std::stod(f[1]);
      have_rate = true;
    } else if (f[0] == "Socket" && f.size() >= 2 && f[1] == "errors:") {
      for (std::size_t i = 2; i + 1 < f.size(); i += 2) {
        const auto n = std::stoull(f[i + 1]);
        if (n != 0 && w.first_error.empty()) w.first_error = line;
        w.errors += n;
      }
    } else if (line.find("Non-2xx or 3xx responses:") != std::string::npos) {
      const auto n = std::stoull(f.back());
      if (n != 0 && w.first_error.empty()) w.first_error = line;
      w.errors += n;
    }
  }
  for (int q : {50, 75, 90, 99})
    if (!w.latency_ms.contains(q))
      return fail(Errc::kIo,
                  "wrk printed no " + std::to_string(q) + "% latency: " + out.substr(0, 2000));
  if (!have_rate) return fail(Errc::kIo, "wrk printed no Requests/sec: " + out.substr(0, 2000));
  return w;
}

// wrk takes whole seconds.
std::uint64_t http_seconds(const Lab& lab) {
  return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(lab.opt.seconds)));
}

Result<Wrk> run_wrk(const Lab& lab, Path p) {
  const std::vector<std::string> argv = {"wrk",
                                         "-t" + std::to_string(kWrkThreads),
                                         "-c" + std::to_string(kWrkConnections),
                                         "-d" + std::to_string(http_seconds(lab)) + "s",
                                         "--latency",
                                         lab.http_url(p)};
  auto out =
      run_client(lab, lab.client_cgroup(p), argv, milliseconds(60'000 + http_seconds(lab) * 1000));
  if (!out) return std::unexpected(out.error());
  try {
    return parse_wrk(*out);
  } catch (const std::exception& e) {
    return fail(Errc::kIo, "wrk's output (" + std::string(e.what()) + "): " + out->substr(0, 2000));
  }
}

Result<void> scenario_http(const Lab& lab) {
  std::printf("\n== HTTP keep-alive: wrk -t%d -c%d, %llu s per run (%llu reps) ==\n", kWrkThreads,
              kWrkConnections, static_cast<unsigned long long>(http_seconds(lab)),
              static_cast<unsigned long long>(lab.opt.reps));
  const std::vector<Path> paths = {Path::kNone, Path::kWarm, Path::kStunnel, Path::kHaproxy};
  std::map<Path, std::vector<double>> rps;
  std::map<Path, std::map<int, std::vector<double>>> latency;
  for (std::uint64_t rep = 0; rep < lab.opt.reps && !stop_requested(); ++rep) {
    std::printf("  rep %llu:", static_cast<unsigned long long>(rep + 1));
    for (Path p : order(paths, rep)) {
      // The channel between the nodes is up before the warm run.
      if (p == Path::kWarm)
        if (auto ok = warm_up(lab, p); !ok) return ok;
      auto w = run_wrk(lab, p);
      if (!w) return fail(w.error().code, std::string(label(p)) + ": " + w.error().message);
      check_errors(std::string("HTTP, ") + label(p), w->errors, w->first_error);
      rps[p].push_back(w->requests_per_second);
      for (const auto& [q, ms] : w->latency_ms) latency[p][q].push_back(ms);
      std::printf(" %s %.0f req/s p50 %.3f ms", key(p), w->requests_per_second, w->latency_ms[50]);
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  if (stop_requested()) return fail(Errc::kIo, "interrupted");

  json doc = scenario_doc(
      lab, "http",
      "wrk -t" + std::to_string(kWrkThreads) + " -c" + std::to_string(kWrkConnections) + " -d" +
          std::to_string(http_seconds(lab)) +
          "s --latency (HTTP/1.1 keep-alive, GET, a 3-byte 200 response) from node 0 to the "
          "benchmark's HTTP responder in node 1 (one thread per connection); trustfence: "
          "client and server in the enforced cgroups, channel warm; the proxies carry the "
          "same keep-alive connections over mTLS; latency percentiles are wrk's, per run; "
          "for context, no target");
  for (Path p : {Path::kWarm, Path::kStunnel, Path::kHaproxy}) {
    doc["metrics"].push_back(metric_json({.name = std::string("HTTP requests/s, ") + label(p),
                                          .unit = "req/s",
                                          .baseline = rps[Path::kNone],
                                          .value = rps[p]}));
    for (int q : {50, 75, 90, 99})
      doc["metrics"].push_back(
          metric_json({.name = "HTTP latency p" + std::to_string(q) + ", " + label(p),
                       .unit = "ms",
                       .baseline = latency[Path::kNone][q],
                       .value = latency[p][q]}));
  }
  return finish(lab, std::move(doc), "http.json");
}

// --- scenario 1, in place --------------------------------------------------

Result<void> scenario_inplace(const Lab& lab) {
  std::printf(
      "\n== scenario 1 in place: kernel BPF statistics during iperf3, 1 stream (%llu s per run, "
      "%llu reps) ==\n",
      static_cast<unsigned long long>(lab.opt.bulk_seconds),
      static_cast<unsigned long long>(lab.opt.reps));
  // The agents' programs as attached now (a restart swaps in new ones).
  std::vector<std::uint32_t> tf_egress, tf_ingress;
  for (const auto& agent : lab.agents) {
    for (auto [type, ids] : {std::pair{BPF_CGROUP_INET_EGRESS, &tf_egress},
                             std::pair{BPF_CGROUP_INET_INGRESS, &tf_ingress}}) {
      auto got = attached_programs(agent->cgroup(), type);
      if (!got) return std::unexpected(got.error());
      ids->insert(ids->end(), got->begin(), got->end());
    }
  }
  auto empty = EmptyPrograms::attach({lab.plain_client, lab.plain_server});
  if (!empty) return std::unexpected(empty.error());
  auto stats_on = enable_run_time_stats();
  if (!stats_on) return std::unexpected(stats_on.error());

  const std::string server_ip = lab.topology.ipv4(kServerNode);
  const std::vector<Bulk> runs = {
      {"empty", lab.plain_client, server_ip, kPlainIperfPort, 1},
      {"trustfence", lab.agents[kClientNode]->cgroup(), server_ip, kEnforcedIperfPort, 1},
  };
  std::map<std::string, std::vector<double>> egress_ns, ingress_ns, packets;
  for (std::uint64_t rep = 0; rep < lab.opt.reps && !stop_requested(); ++rep) {
    std::printf("  rep %llu:", static_cast<unsigned long long>(rep + 1));
    for (const Bulk& b : order(runs, rep)) {
      const bool tf = b.name == "trustfence";
      const auto& eg = tf ? tf_egress : empty->egress();
      const auto& in = tf ? tf_ingress : empty->ingress();
      auto eg0 = run_totals(eg), in0 = run_totals(in);
      if (!eg0 || !in0) return std::unexpected(eg0 ? in0.error() : eg0.error());
      auto r = run_iperf(lab, b);
      if (!r) return std::unexpected(r.error());
      auto eg1 = run_totals(eg), in1 = run_totals(in);
      if (!eg1 || !in1) return std::unexpected(eg1 ? in1.error() : eg1.error());
      const RunTotals e = *eg1 - *eg0, i = *in1 - *in0;
      if (e.runs == 0 || i.runs == 0)
        return fail(Errc::kIo, "the " + b.name + " programs did not run during iperf3");
      egress_ns[b.name].push_back(e.ns_per_run());
      ingress_ns[b.name].push_back(i.ns_per_run());
      packets[b.name].push_back(static_cast<double>(e.runs + i.runs));
      std::printf(" %s egress %.1f ingress %.1f ns (%llu runs)", b.name.c_str(), e.ns_per_run(),
                  i.ns_per_run(), static_cast<unsigned long long>(e.runs + i.runs));
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  if (stop_requested()) return fail(Errc::kIo, "interrupted");

  json doc = scenario_doc(
      lab, "packet_inplace",
      "run_time_ns / run_cnt of the attached programs (BPF_ENABLE_STATS) over an iperf3 run "
      "of " +
          std::to_string(lab.opt.bulk_seconds) +
          " s, both nodes; baseline: an empty cgroup_skb program attached the same way (cgroup "
          "link, egress and ingress) to the plain cgroups, measured under the same traffic, "
          "so the statistics' own cost cancels; GSO segments count as one run");
  for (auto [name, series] :
       {std::pair{"tf_egress", &egress_ns}, std::pair{"tf_ingress", &ingress_ns}}) {
    const auto& base = (*series)["empty"];
    const auto& tf = (*series)["trustfence"];
    std::vector<double> delta;
    for (std::size_t i = 0; i < tf.size(); ++i) delta.push_back(tf[i] - base[i]);
    doc["metrics"].push_back(metric_json({.name = std::string(name) + " in place (BPF stats)",
                                          .unit = "ns/packet",
                                          .baseline = base,
                                          .value = tf,
                                          .target = "<= empty + 10 ns",
                                          .met = median_of(delta) <= kPacketDeltaTargetNs}));
  }
  doc["metrics"].push_back(metric_json({.name = "program runs per iperf3 run (both directions)",
                                        .unit = "runs",
                                        .baseline = packets["empty"],
                                        .value = packets["trustfence"]}));
  return finish(lab, std::move(doc), "packet_inplace.json");
}

// --- setup -----------------------------------------------------------------

// node 0: team-a.gke.local, node 1: team-b.eks.local, each aliasing the other.
Result<Agents> start_agents(const e2e::Topology& topology, const e2e::TempDir& dir,
                            const e2e::Cluster& a, const e2e::Cluster& b) {
  Agents agents;
  const e2e::Cluster* clusters[] = {&a, &b};
  for (std::size_t node : {kClientNode, kServerNode}) {
    e2e::AgentSpec spec;
    spec.name = "node" + std::to_string(node);
    spec.node = node;
    spec.cluster = clusters[node];
    spec.bundles = {&a, &b};
    spec.config = {"trust-domain-alias = " + clusters[1 - node]->trust_domain()};
    spec.log_level = "info";  // as deployed: no line per verdict
    auto agent = e2e::AgentNode::start(topology, spec, dir, TF_CLI_PATH);
    if (!agent) return std::unexpected(agent.error());
    agents.push_back(std::move(*agent));
  }
  return agents;
}

Result<e2e::Child> start_server(const e2e::Topology& topology, const std::string& cgroup,
                                std::vector<std::string> argv, std::uint16_t port) {
  auto child = e2e::spawn({.netns = topology.node(kServerNode), .cgroup = cgroup, .argv = argv});
  if (!child) return std::unexpected(child.error());
  if (auto ok =
          e2e::wait_for_tcp_listen(topology.node(kServerNode), port, e2e::kReadyTimeout, &*child);
      !ok)
    return fail(ok.error().code, testing::join_argv(argv) + ": " + ok.error().message);
  return std::move(*child);
}

// Packets the agents dropped for anything but a pending verdict: a run
// meant to allow everything must have none.
void check_agents(const Agents& agents) {
  for (const auto& agent : agents) {
    auto stats = agent->stats();
    if (!stats) {
      problem(agent->name() + ": stats: " + stats.error().message);
      continue;
    }
    std::uint64_t dropped = 0;
    for (const auto& [dir, actions] : stats->value("packets", json::object()).items())
      if (actions.contains("drop"))
        for (const auto& [reason, n] : actions["drop"].items())
          if (reason != "pending" && n.is_number_unsigned()) dropped += n.get<std::uint64_t>();
    if (dropped != 0)
      problem(agent->name() + "'s datapath dropped " + std::to_string(dropped) +
              " packets for a reason other than a pending verdict");
  }
}

void keep_logs(const Agents& agents, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  for (const auto& agent : agents) {
    auto log = agent->log();
    auto stats = agent->stats();
    std::ofstream(dir + "/" + agent->name() + ".log") << (log ? *log : log.error().message);
    std::ofstream(dir + "/" + agent->name() + "-stats.json")
        << (stats ? stats->dump(2) : stats.error().message) << "\n";
  }
  std::printf("agent logs and stats kept in %s\n", dir.c_str());
}

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
  auto stunnel_line = stunnel_version();
  if (!stunnel_line) return std::unexpected(stunnel_line.error());
  auto haproxy_line = haproxy_version();
  if (!haproxy_line) return std::unexpected(haproxy_line.error());
  if (auto iperf = e2e::find_program("iperf3"); !iperf)
    return fail(Errc::kIo, "iperf3 is not installed (scripts/bench.sh installs it)");
  if (opt.wants("http"))
    if (auto wrk = e2e::find_program("wrk"); !wrk)
      return fail(Errc::kIo, "wrk is not installed (scripts/bench.sh installs it)");
  auto self = self_path();
  if (!self) return std::unexpected(self.error());

  auto topology = e2e::Topology::create(2);
  if (!topology) return std::unexpected(topology.error());
  auto dir = e2e::TempDir::create();
  if (!dir) return std::unexpected(dir.error());
  const e2e::Cluster cluster_a("team-a.gke.local");
  const e2e::Cluster cluster_b("team-b.eks.local");
  auto plain_client = testing::kernel::TestCgroup::create(e2e::kE2ePrefix);
  if (!plain_client) return std::unexpected(plain_client.error());
  auto plain_server = testing::kernel::TestCgroup::create(e2e::kE2ePrefix);
  if (!plain_server) return std::unexpected(plain_server.error());
  auto agents = start_agents(*topology, *dir, cluster_a, cluster_b);
  if (!agents) return std::unexpected(agents.error());
  const std::string tf_server = (*agents)[kServerNode]->cgroup();
  const std::string tf_client = (*agents)[kClientNode]->cgroup();

  // Declared after the agents and cgroups: stopped first, so those can go.
  std::vector<e2e::Child> servers;
  for (auto [cgroup, port] : {std::pair{plain_server->path(), kPlainServerPort},
                              std::pair{tf_server, kEnforcedServerPort}}) {
    auto s = start_server(*topology, cgroup, {*self, "serve", std::to_string(port)}, port);
    if (!s) return std::unexpected(s.error());
    servers.push_back(std::move(*s));
  }
  for (auto [cgroup, port] : {std::pair{plain_server->path(), kPlainIperfPort},
                              std::pair{tf_server, kEnforcedIperfPort}}) {
    auto s = start_server(*topology, cgroup, {"iperf3", "-s", "-p", std::to_string(port)}, port);
    if (!s) return std::unexpected(s.error());
    servers.push_back(std::move(*s));
  }
  if (opt.wants("http")) {
    for (auto [cgroup, port] : {std::pair{plain_server->path(), kPlainHttpPort},
                                std::pair{tf_server, kEnforcedHttpPort}}) {
      auto s = start_server(*topology, cgroup, {*self, "http", std::to_string(port)}, port);
      if (!s) return std::unexpected(s.error());
      servers.push_back(std::move(*s));
    }
  }
  auto plan = [&](const char* name, std::uint16_t client_port, std::uint16_t tls_port,
                  std::uint16_t server_port) {
    return ProxyPlan{.name = name,
                     .client_cluster = &cluster_a,
                     .server_cluster = &cluster_b,
                     .client_cgroup = plain_client->path(),
                     .server_cgroup = plain_server->path(),
                     .client_port = client_port,
                     .tls_port = tls_port,
                     .server_port = server_port};
  };
  auto stunnel = start_stunnel_pair(
      *topology, *dir, plan("stunnel", kStunnelClientPort, kStunnelTlsPort, kPlainServerPort));
  if (!stunnel) return std::unexpected(stunnel.error());
  auto stunnel_iperf = start_stunnel_pair(
      *topology, *dir,
      plan("stunnel-iperf", kIperfStunnelClientPort, kIperfStunnelTlsPort, kPlainIperfPort));
  if (!stunnel_iperf) return std::unexpected(stunnel_iperf.error());
  auto haproxy = start_haproxy_pair(
      *topology, *dir, plan("haproxy", kHaproxyClientPort, kHaproxyTlsPort, kPlainServerPort));
  if (!haproxy) return std::unexpected(haproxy.error());
  std::optional<ProxyPair> stunnel_http, haproxy_http;
  if (opt.wants("http")) {
    auto s = start_stunnel_pair(
        *topology, *dir,
        plan("stunnel-http", kHttpStunnelClientPort, kHttpStunnelTlsPort, kPlainHttpPort));
    if (!s) return std::unexpected(s.error());
    stunnel_http.emplace(std::move(*s));
    auto h = start_haproxy_pair(
        *topology, *dir,
        plan("haproxy-http", kHttpHaproxyClientPort, kHttpHaproxyTlsPort, kPlainHttpPort));
    if (!h) return std::unexpected(h.error());
    haproxy_http.emplace(std::move(*h));
  }

  const Lab lab{opt, *self, *topology, plain_client->path(), plain_server->path(), *agents};
  std::printf("== trustfence benchmark, scenarios 1 (in place) to 4 and 7 (HTTP)%s ==\n",
              opt.smoke ? " (smoke: tiny samples, rough figures)" : "");
  std::printf(
      "client in node 0 (%s), server in node 1 (%s); agents running throughout; %s; %s\n"
      "%u CPUs, load average %s at the start\n",
      topology->ipv4(kClientNode).c_str(), topology->ipv4(kServerNode).c_str(),
      stunnel_line->c_str(), haproxy_line->c_str(), std::thread::hardware_concurrency(),
      load_average().c_str());
  std::fflush(stdout);

  const std::vector<std::pair<std::string, Result<void> (*)(const Lab&)>> scenarios = {
      {"rate", scenario_rate},
      {"ttfb", scenario_ttfb},
      {"bulk", scenario_bulk},
      {"http", scenario_http},
      {"inplace", scenario_inplace}};
  for (const auto& [name, fn] : scenarios) {
    if (!opt.wants(name)) continue;
    if (auto ok = fn(lab); !ok) {
      std::string logs = stunnel->logs() + stunnel_iperf->logs() + haproxy->logs();
      if (stunnel_http) logs += stunnel_http->logs();
      if (haproxy_http) logs += haproxy_http->logs();
      return fail(ok.error().code, "scenario " + name + ": " + ok.error().message +
                                       (logs.empty() ? "" : "\nproxy logs:\n" + logs));
    }
  }
  check_agents(*agents);
  if (!opt.keep_logs.empty()) keep_logs(*agents, opt.keep_logs);
  std::printf("\nload average %s at the end\n", load_average().c_str());
  return problems_verdict();
}

}  // namespace
}  // namespace trustfence::bench::attest

int main(int argc, char** argv) {
  using namespace trustfence::bench::attest;
  if (argc >= 2) {
    const std::string sub = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    if (sub == "serve") return serve_main(args);
    if (sub == "http") return http_main(args);
    if (sub == "client") return client_main(args);
  }
  return trustfence::bench::bench_main(argc, argv, parse_options, run);
}
