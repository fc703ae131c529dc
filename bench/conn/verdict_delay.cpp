// Delay from ALLOW to held data reaching the peer.
//
// Per sample: a client connects over loopback and sends a 64-byte request
// at once; the datapath tracks the sockets in the test cgroup as PENDING
// and holds the request back. After a random 1-20 ms the tool writes ALLOW
// for every pending socket of the connection (cookies from SO_COOKIE on the
// sockets it owns) and measures from the moment it starts writing them to
// the server's recv() of the first byte.
//
// Verdicts are written two ways, interleaved:
//   apply_verdicts   Datapath::apply_verdicts, the agent's path: the verdict,
//                    then the tf_resend_held iterator pushes held frames
//   set_verdict      conns().set_verdict alone: TCP's own timers resend
//
// Four cases, because they exercise different TCP timers:
//   both pending     client and server sockets in the cgroup
//   server pending   only the server (client socket created outside, like a
//                    peer without a datapath): the server's ingress drops the
//                    request, the client resends on its own RTO / loss probe
//   client pending   only the client (listener created outside): the
//                    client's egress drops the request locally, so it never
//                    counts as sent and waits on the probe timer
//   server pending, client allowed first
//                    the client is tracked but allowed before it sends (its
//                    peer decided first), so its RTO floor was lowered by
//                    tf_sockops: shows what that floor buys the sender

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support.hpp"
#include "trustfence/datapath/format.hpp"

namespace trustfence::bench {
namespace {

namespace dp = trustfence::datapath;

constexpr int kDeliveryTimeoutMs = 5000;
constexpr double kStallMs = 200.0;

struct Options {
  std::uint64_t samples = 200;
  std::uint64_t seed = 1;
  std::uint64_t idle_connections = 8'000;  // for the resend-cost figure
};

Result<Options> parse_options(int argc, char** argv) {
  auto args = Args::parse(argc, argv, {"samples", "seed", "idle-connections"}, {"smoke"});
  if (!args) return std::unexpected(args.error());
  Options opt;
  if (args->flag("smoke")) opt = Options{10, 1, 500};
  auto samples = args->number("samples", opt.samples);
  if (!samples) return std::unexpected(samples.error());
  auto seed = args->number("seed", opt.seed);
  if (!seed) return std::unexpected(seed.error());
  auto idle = args->number("idle-connections", opt.idle_connections);
  if (!idle) return std::unexpected(idle.error());
  if (*samples == 0) return fail(Errc::kInvalidArgument, "--samples must be at least 1");
  opt.samples = *samples;
  opt.seed = *seed;
  opt.idle_connections = *idle;
  return opt;
}

struct Case {
  const char* name;
  bool client_pending;
  bool server_pending;
  bool client_allowed_first = false;
};
constexpr Case kCases[] = {
    {"both pending", true, true},
    {"server pending only", false, true},
    {"client pending only", true, false},
    {"server pending, client allowed first", true, true, true},
};
constexpr int kCaseCount = 4;

struct Method {
  const char* name;
  bool resend;  // apply_verdicts (verdict + resend) or set_verdict alone
};
constexpr Method kMethods[] = {{"apply_verdicts", true}, {"set_verdict", false}};
constexpr int kMethodCount = 2;

struct Series {
  std::vector<double> delays_ms;  // verdict write begins -> first byte received
  std::vector<double> totals_ms;  // request sent -> first byte received
  std::vector<double> write_us;   // how long writing the verdicts took
  std::uint64_t timeouts = 0;     // nothing arrived within kDeliveryTimeoutMs
  std::uint64_t not_held = 0;     // data was there before the verdict
  std::uint64_t not_tracked = 0;  // a socket in the cgroup had no PENDING entry
};

// Sockets made ahead of time, in or out of the cgroup: a socket keeps the
// cgroup it was created in, whoever connects it later.
struct Pools {
  Listener inside_listener, outside_listener;
  std::vector<UniqueFd> inside_clients, outside_clients;
};

Result<std::vector<UniqueFd>> make_sockets(std::size_t n) {
  std::vector<UniqueFd> fds;
  for (std::size_t i = 0; i < n; ++i) {
    auto fd = tcp_socket();
    if (!fd) return std::unexpected(fd.error());
    if (auto ok = set_nodelay(fd->get()); !ok) return std::unexpected(ok.error());
    fds.push_back(std::move(*fd));
  }
  return fds;
}

Result<Pools> make_pools(TestCgroup& cgroup, std::size_t inside, std::size_t outside) {
  Pools p;
  {
    auto in = CgroupMembership::enter(cgroup);
    if (!in) return std::unexpected(in.error());
    auto l = listen_loopback(64);
    if (!l) return std::unexpected(l.error());
    p.inside_listener = std::move(*l);
    auto clients = make_sockets(inside);
    if (!clients) return std::unexpected(clients.error());
    p.inside_clients = std::move(*clients);
  }
  auto l = listen_loopback(64);
  if (!l) return std::unexpected(l.error());
  p.outside_listener = std::move(*l);
  auto clients = make_sockets(outside);
  if (!clients) return std::unexpected(clients.error());
  p.outside_clients = std::move(*clients);
  return p;
}

// The cookie of a socket in the cgroup, counted when it is not tracked
// PENDING (the sample would measure nothing).
Result<std::uint64_t> pending_cookie(dp::Datapath& datapath, int fd, Series& out) {
  auto cookie = socket_cookie(fd);
  if (!cookie) return std::unexpected(cookie.error());
  auto conn = datapath.conns().lookup(*cookie);
  if (!conn) return std::unexpected(conn.error());
  if (!conn->has_value() || (*conn)->verdict != TF_VERDICT_PENDING) ++out.not_tracked;
  return *cookie;
}

dp::VerdictUpdate allow_update() {
  dp::VerdictUpdate allow;
  allow.verdict = TF_VERDICT_ALLOW;
  allow.reason = TF_REASON_LOCAL_DOMAIN;
  allow.decided_ns = dp::monotonic_ns();
  return allow;
}

Result<void> write_allow(dp::Datapath& datapath, const std::vector<std::uint64_t>& cookies,
                         bool resend) {
  if (resend) {
    std::vector<std::pair<dp::Cookie, dp::VerdictUpdate>> verdicts;
    for (std::uint64_t cookie : cookies) verdicts.emplace_back(cookie, allow_update());
    auto applied = datapath.apply_verdicts(verdicts);
    if (!applied) return std::unexpected(applied.error());
    return {};
  }
  for (std::uint64_t cookie : cookies) {
    auto written = datapath.conns().set_verdict(cookie, allow_update());
    if (!written) return std::unexpected(written.error());
  }
  return {};
}

Result<void> run_sample(dp::Datapath& datapath, const Case& c, const Method& m, Pools& pools,
                        std::mt19937_64& rng, Series& out) {
  auto& pool = c.client_pending ? pools.inside_clients : pools.outside_clients;
  if (pool.empty()) return fail(Errc::kIo, "client socket pool exhausted");
  UniqueFd client = std::move(pool.back());
  pool.pop_back();
  const Listener& listener = c.server_pending ? pools.inside_listener : pools.outside_listener;
  if (auto ok = connect_loopback(client.get(), listener.port); !ok) return ok;

  std::vector<std::uint64_t> pending;
  if (c.client_pending) {
    auto cookie = pending_cookie(datapath, client.get(), out);
    if (!cookie) return std::unexpected(cookie.error());
    if (c.client_allowed_first) {
      if (auto ok = write_allow(datapath, {*cookie}, m.resend); !ok) return ok;
    } else {
      pending.push_back(*cookie);
    }
  }
  const char request[64] = "GET / (held until ALLOW)";
  const std::uint64_t sent_at = dp::monotonic_ns();
  if (::send(client.get(), request, sizeof(request), 0) != sizeof(request))
    return fail_errno("sending the request", errno);
  auto server = accept_within(listener.fd.get(), 2000);
  if (!server) return std::unexpected(server.error());
  if (c.server_pending) {
    auto cookie = pending_cookie(datapath, server->get(), out);
    if (!cookie) return std::unexpected(cookie.error());
    pending.push_back(*cookie);
  }

  std::uniform_int_distribution<int> wait_us(1'000, 20'000);
  std::this_thread::sleep_for(std::chrono::microseconds(wait_us(rng)));
  char byte = 0;
  if (::recv(server->get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 1) ++out.not_held;
  // Timed from the start of the write: apply_verdicts resends held frames
  // inside the call, so data may arrive before it returns.
  const std::uint64_t allowed_at = dp::monotonic_ns();
  if (auto ok = write_allow(datapath, pending, m.resend); !ok) return ok;
  out.write_us.push_back(static_cast<double>(dp::monotonic_ns() - allowed_at) / 1e3);
  if (!wait_readable(server->get(), kDeliveryTimeoutMs) ||
      ::recv(server->get(), &byte, 1, 0) != 1) {
    ++out.timeouts;
    return {};
  }
  const std::uint64_t arrived_at = dp::monotonic_ns();
  out.delays_ms.push_back(static_cast<double>(arrived_at - allowed_at) / 1e6);
  out.totals_ms.push_back(static_cast<double>(arrived_at - sent_at) / 1e6);
  (void)set_abortive_close(client.get());  // no TIME_WAIT left behind
  return {};
}

void print_series(const Case& c, const Method& m, Series& s) {
  auto& d = s.delays_ms;
  std::sort(d.begin(), d.end());
  std::sort(s.totals_ms.begin(), s.totals_ms.end());
  std::sort(s.write_us.begin(), s.write_us.end());
  auto stalls = std::count_if(d.begin(), d.end(), [](double ms) { return ms >= kStallMs; });
  auto seconds = std::count_if(d.begin(), d.end(), [](double ms) { return ms >= 1000.0; });
  bool meets = percentile(d, 50) < 10.0 && stalls == 0 && s.timeouts == 0;
  std::printf("  %-37s %-14s %4zu %7.2f %7.2f %7.2f %7.2f %5ld %4ld %7.2f %6.0f  %s\n", c.name,
              m.name, d.size(), percentile(d, 50), percentile(d, 90), percentile(d, 99),
              d.empty() ? 0.0 : d.back(), static_cast<long>(stalls), static_cast<long>(seconds),
              percentile(s.totals_ms, 50), percentile(s.write_us, 50),
              meets ? "meets target" : "MISSES target");
  if (s.timeouts || s.not_held || s.not_tracked)
    std::printf(
        "  %-52s anomalies: %llu never delivered within %d ms, %llu not held before "
        "ALLOW, %llu not tracked PENDING\n",
        "", static_cast<unsigned long long>(s.timeouts), kDeliveryTimeoutMs,
        static_cast<unsigned long long>(s.not_held),
        static_cast<unsigned long long>(s.not_tracked));
}

void print_counters(const tf_stats& stats) {
  auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  const auto& drops = stats.packets;
  std::printf(
      "  datapath counters: payload segments held: egress %llu, ingress %llu; RTO floor lowered "
      "%llu,\n    restored %llu, refused by the kernel %llu\n",
      u(drops[TF_PACKET_EGRESS][TF_ACTION_DROP][TF_REASON_PENDING]),
      u(drops[TF_PACKET_INGRESS][TF_ACTION_DROP][TF_REASON_PENDING]),
      u(stats.counters[TF_COUNTER_RTO_LOWERED]), u(stats.counters[TF_COUNTER_RTO_RESTORED]),
      u(stats.counters[TF_COUNTER_RTO_UNSUPPORTED]));
}

// apply_verdicts runs its iterator over every TCP socket of the network
// namespace: time one call (two cookies) with few sockets, then with
// `idle` more established connections (created outside the cgroup).
Result<void> print_resend_cost(dp::Datapath& datapath, TestCgroup& cgroup, std::uint64_t idle) {
  std::vector<std::uint64_t> cookies;
  UniqueFd client, server;
  Listener listener;
  {
    auto in = CgroupMembership::enter(cgroup);
    if (!in) return std::unexpected(in.error());
    auto l = listen_loopback(64);
    if (!l) return std::unexpected(l.error());
    listener = std::move(*l);
    auto c = tcp_socket();
    if (!c) return std::unexpected(c.error());
    client = std::move(*c);
  }
  if (auto ok = connect_loopback(client.get(), listener.port); !ok) return ok;
  auto s = accept_within(listener.fd.get(), 2000);
  if (!s) return std::unexpected(s.error());
  server = std::move(*s);
  for (int fd : {client.get(), server.get()}) {
    auto cookie = socket_cookie(fd);
    if (!cookie) return std::unexpected(cookie.error());
    cookies.push_back(*cookie);
  }
  auto time_calls = [&]() -> Result<double> {
    std::vector<double> us;
    for (int i = 0; i < 21; ++i) {
      const std::uint64_t start = dp::monotonic_ns();
      if (auto ok = write_allow(datapath, cookies, true); !ok) return std::unexpected(ok.error());
      us.push_back(static_cast<double>(dp::monotonic_ns() - start) / 1e3);
    }
    return spread(us).median;
  };
  auto few = time_calls();
  if (!few) return std::unexpected(few.error());

  auto idle_listener = listen_loopback(4096);
  if (!idle_listener) return std::unexpected(idle_listener.error());
  if (auto ok = raise_fd_limit(2 * idle + 256); !ok) return ok;
  std::vector<UniqueFd> held;
  held.reserve(2 * idle);
  for (std::uint64_t i = 0; i < idle && !stop_requested(); ++i) {
    auto c = tcp_socket();
    if (!c) return std::unexpected(c.error());
    if (auto ok = set_abortive_close(c->get()); !ok) return ok;
    if (auto ok = connect_loopback(c->get(), idle_listener->port); !ok) return ok;
    auto a = accept_within(idle_listener->fd.get(), 2000);
    if (!a) return std::unexpected(a.error());
    held.push_back(std::move(*c));
    held.push_back(std::move(*a));
  }
  auto many = time_calls();
  if (!many) return std::unexpected(many.error());
  std::printf(
      "  apply_verdicts for 2 cookies takes %.0f us (median of 21) with this run's few sockets, "
      "%.0f us with\n    %llu idle established connections (%llu more TCP sockets) in the "
      "network namespace: its resend\n    iterator visits every TCP socket of the namespace on "
      "each call\n",
      *few, *many, static_cast<unsigned long long>(idle),
      static_cast<unsigned long long>(2 * idle));
  return {};
}

Result<void> run(const Options& opt) {
  constexpr std::size_t kSeries = kCaseCount * kMethodCount;
  if (auto ok = raise_fd_limit(2 * kSeries * opt.samples + 1024); !ok) return ok;
  auto cgroup = TestCgroup::create(kNamePrefix);
  if (!cgroup) return std::unexpected(cgroup.error());
  dp::DatapathOptions options;
  options.cgroup = cgroup->path();
  auto attached = AttachedDatapath::attach(options);
  if (!attached) return std::unexpected(attached.error());
  std::size_t inside = 0, outside = 0;
  for (const Case& c : kCases) (c.client_pending ? inside : outside) += kMethodCount * opt.samples;
  auto pools = make_pools(*cgroup, inside, outside);
  if (!pools) return std::unexpected(pools.error());

  std::printf(
      "== delay from ALLOW to held data reaching the peer (target p50 < 10 ms, no sample "
      ">= 200 ms) ==\n");
  std::printf(
      "%llu samples per case and method, interleaved; ALLOW written 1-20 ms (uniform, seed %llu) "
      "after the\nclient sent a 64-byte request; delay from the start of the verdict write to the "
      "server's recv() of the first byte.\napply_verdicts = the agent's path (verdict, then the "
      "resend "
      "iterator pushes held frames%s);\nset_verdict = the verdict alone, TCP's timers resend. "
      "pending_rto_min_us = %u (default).\n",
      static_cast<unsigned long long>(opt.samples), static_cast<unsigned long long>(opt.seed),
      attached->get().resend_supported() ? "" : " -- NOT SUPPORTED on this kernel",
      options.pending_rto_min_us);
  std::fflush(stdout);

  std::mt19937_64 rng(opt.seed);
  Series results[kCaseCount][kMethodCount];
  for (std::uint64_t i = 0; i < opt.samples && !stop_requested(); ++i) {
    for (int ci = 0; ci < kCaseCount; ++ci) {
      for (int step = 0; step < kMethodCount; ++step) {
        int mi = (i + ci) % 2 ? kMethodCount - 1 - step : step;
        auto ok =
            run_sample(attached->get(), kCases[ci], kMethods[mi], *pools, rng, results[ci][mi]);
        if (!ok)
          return fail(ok.error().code, std::string(kCases[ci].name) + " / " + kMethods[mi].name +
                                           ": " + ok.error().message);
      }
    }
  }
  if (stop_requested()) return fail(Errc::kIo, "interrupted");

  std::printf("\n  %-37s %-14s %4s %7s %7s %7s %7s %5s %4s %7s %6s\n", "case", "verdict write", "n",
              "p50", "p90", "p99", "max", ">=200", ">=1s", "sent->", "write");
  std::printf("  %-37s %-14s %4s %7s %7s %7s %7s %5s %4s %7s %6s\n", "", "", "", "ms", "ms", "ms",
              "ms", "ms", "", "rcv p50", "us p50");
  for (int mi = 0; mi < kMethodCount; ++mi)
    for (int ci = 0; ci < kCaseCount; ++ci) print_series(kCases[ci], kMethods[mi], results[ci][mi]);
  for (int ci = 0; ci < kCaseCount; ++ci) {
    const auto& d = results[ci][0].delays_ms;
    auto stalls = std::count_if(d.begin(), d.end(), [](double ms) { return ms >= kStallMs; });
    std::printf(
        "  RESULT ALLOW->data, %s (agent path): p50 %.2f ms, p99 %.2f ms, max %.2f ms, "
        "%ld of %zu >= 200 ms\n",
        kCases[ci].name, percentile(d, 50), percentile(d, 99), d.empty() ? 0.0 : d.back(),
        static_cast<long>(stalls), d.size());
  }
  auto stats = attached->get().stats();
  if (!stats) return std::unexpected(stats.error());
  print_counters(*stats);
  pools->inside_clients.clear();
  pools->outside_clients.clear();
  if (opt.idle_connections > 0) {
    if (auto ok = print_resend_cost(attached->get(), *cgroup, opt.idle_connections); !ok) return ok;
  }
  std::printf("\n");
  return {};
}

}  // namespace
}  // namespace trustfence::bench

int main(int argc, char** argv) {
  using namespace trustfence::bench;
  return bench_main(argc, argv, parse_options, run);
}
