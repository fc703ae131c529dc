// Connect-request-response rate over loopback (netperf TCP_CRR style: one
// transaction at a time; connect, 1-byte request, 1-byte response, the
// server closes first so TIME_WAIT lands on the server side and the client's
// ephemeral ports never run out), with client and server sockets in a test
// cgroup. Variants, interleaved round by round in alternating order:
//
//   detached         no datapath on the cgroup (the baseline)
//   exempt+drain     datapath attached; the server port is exempt, so
//                    tf_sockops decides ALLOW at establishment; a thread
//                    drains tf_events as the agent would
//   exempt           the same with nobody reading tf_events: once the ring
//                    is full, events are counted lost (isolates the cost of
//                    the programs from the ring buffer's wake-ups)
//   verdict writer   datapath attached, nothing exempt; a thread consumes
//                    tf_events through EventReader and writes ALLOW for
//                    every new cookie with Datapath::apply_verdicts, as the
//                    agent will (verdict, then held frames pushed at once);
//                    the client sends its request at once, held until then
//   ... no resend    the same writing with conns().set_verdict alone: a
//                    request dropped before the verdict waits on TCP timers
//
// Then one more exempt pass each with and without the event consumer,
// with the kernel's BPF run-time statistics on, to show how much of a
// transaction the programs take (not part of the ratios: the statistics
// cost two clock reads per program run).

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"
#include "trustfence/datapath/format.hpp"

namespace trustfence::bench {
namespace {

namespace dp = trustfence::datapath;

enum class Variant { kDetached, kExemptDrained, kExempt, kVerdictWriter, kVerdictNoResend };
constexpr Variant kVariants[] = {Variant::kDetached, Variant::kExemptDrained, Variant::kExempt,
                                 Variant::kVerdictWriter, Variant::kVerdictNoResend};
constexpr int kVariantCount = 5;

const char* describe(Variant v) {
  switch (v) {
    case Variant::kDetached:
      return "detached (baseline)";
    case Variant::kExemptDrained:
      return "attached, exempt, events drained";
    case Variant::kExempt:
      return "attached, exempt, events unread";
    case Variant::kVerdictWriter:
      return "attached, verdict writer";
    case Variant::kVerdictNoResend:
      return "attached, verdict writer, no resend";
  }
  return "?";
}

struct Options {
  // Many short rounds: a median of per-round ratios shrugs off the bursts
  // of other load a shared 2-CPU machine sees.
  double seconds = 1.5;
  std::uint64_t rounds = 9;
};

Result<Options> parse_options(int argc, char** argv) {
  auto args = Args::parse(argc, argv, {"seconds", "rounds"}, {"smoke"});
  if (!args) return std::unexpected(args.error());
  Options opt;
  if (args->flag("smoke")) opt = Options{0.3, 2};
  auto seconds = args->real("seconds", opt.seconds);
  if (!seconds) return std::unexpected(seconds.error());
  auto rounds = args->number("rounds", opt.rounds);
  if (!rounds) return std::unexpected(rounds.error());
  if (*rounds == 0) return fail(Errc::kInvalidArgument, "--rounds must be at least 1");
  opt.seconds = *seconds;
  opt.rounds = *rounds;
  return opt;
}

// Accepts, reads the 1-byte request, answers it and closes, until stopped.
class Server {
 public:
  explicit Server(const UniqueFd& listener) : listener_(listener), thread_([this] { serve(); }) {}
  ~Server() {
    stop_ = true;
    thread_.join();
  }
  std::uint64_t errors() const { return errors_; }

 private:
  void serve() {
    while (!stop_) {
      if (!wait_readable(listener_.get(), 50)) continue;
      UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn) continue;
      char byte = 0;
      bool served = false;
      while (!stop_ && !served) {
        if (!wait_readable(conn.get(), 50)) continue;
        served = ::recv(conn.get(), &byte, 1, 0) == 1 && ::send(conn.get(), &byte, 1, 0) == 1;
        if (!served) break;
      }
      if (!served && !stop_) ++errors_;
    }
  }

  const UniqueFd& listener_;  // owned by the caller, outlives the server
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> errors_{0};
  std::thread thread_;
};

// Consumes tf_events on its own thread. As a verdict writer it allows every
// new pending connection, as the agent will once it has decided: the new
// cookies of one poll are written as one batch.
class EventThread {
 public:
  enum class Writes { kNothing, kApplyVerdicts, kSetVerdict };

  static Result<std::unique_ptr<EventThread>> start(dp::Datapath& datapath, Writes writes) {
    auto self = std::unique_ptr<EventThread>(new EventThread(datapath, writes));
    EventThread* raw = self.get();
    auto reader = datapath.events([raw](const dp::Event& ev) { raw->on_event(ev); });
    if (!reader) return std::unexpected(reader.error());
    self->reader_.emplace(std::move(*reader));
    self->thread_ = std::thread([raw] {
      while (!raw->stop_) {
        (void)raw->reader_->poll(50);
        raw->write_batch();
      }
      (void)raw->reader_->poll(0);
    });
    return self;
  }
  ~EventThread() { stop(); }
  // Joins the thread after a last poll: every event so far is counted.
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::uint64_t events() const { return events_; }
  std::uint64_t verdicts() const { return verdicts_; }
  std::uint64_t verdict_failures() const { return verdict_failures_; }

 private:
  EventThread(dp::Datapath& datapath, Writes writes) : datapath_(datapath), writes_(writes) {}

  void on_event(const dp::Event& ev) {
    ++events_;
    if (writes_ == Writes::kNothing || ev.kind != TF_EVENT_NEW ||
        ev.conn.verdict != TF_VERDICT_PENDING)
      return;
    dp::VerdictUpdate allow;
    allow.verdict = TF_VERDICT_ALLOW;
    allow.reason = TF_REASON_LOCAL_DOMAIN;
    allow.decided_ns = dp::monotonic_ns();
    batch_.emplace_back(ev.cookie, allow);
  }

  void write_batch() {
    if (batch_.empty()) return;
    std::size_t written = 0;
    if (writes_ == Writes::kApplyVerdicts) {
      auto applied = datapath_.apply_verdicts(batch_);
      written = applied ? *applied : 0;
    } else {
      for (const auto& [cookie, update] : batch_) {
        auto set = datapath_.conns().set_verdict(cookie, update);
        written += set && *set;
      }
    }
    verdicts_ += written;
    verdict_failures_ += batch_.size() - written;
    batch_.clear();
  }

  dp::Datapath& datapath_;
  const Writes writes_;
  std::vector<std::pair<dp::Cookie, dp::VerdictUpdate>> batch_;
  std::optional<dp::EventReader> reader_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> events_{0}, verdicts_{0}, verdict_failures_{0};
  std::thread thread_;
};

struct RoundResult {
  double rate = 0;  // transactions per second
  std::vector<double> latencies_us;
};

// One client, one transaction at a time, for `seconds`.
Result<RoundResult> run_client(std::uint16_t port, double seconds) {
  RoundResult r;
  const std::uint64_t start = dp::monotonic_ns();
  const std::uint64_t deadline = start + static_cast<std::uint64_t>(seconds * 1e9);
  std::uint64_t now = start;
  std::uint64_t done = 0;
  const timeval timeout{5, 0};
  while (now < deadline && !stop_requested()) {
    auto fd = tcp_socket();
    if (!fd) return std::unexpected(fd.error());
    ::setsockopt(fd->get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    if (auto ok = connect_loopback(fd->get(), port); !ok) return std::unexpected(ok.error());
    char byte = 'q';
    if (::send(fd->get(), &byte, 1, 0) != 1) return fail_errno("sending the request", errno);
    if (::recv(fd->get(), &byte, 1, 0) != 1)
      return fail_errno("receiving the response (5 s timeout)", errno);
    if (::recv(fd->get(), &byte, 1, 0) != 0)
      return fail_errno("waiting for the server to close", errno);
    fd->reset();
    std::uint64_t end = dp::monotonic_ns();
    r.latencies_us.push_back(static_cast<double>(end - now) / 1e3);
    now = end;
    ++done;
  }
  r.rate = static_cast<double>(done) / (static_cast<double>(now - start) / 1e9);
  return r;
}

struct Diagnostics {
  std::uint64_t exempt_conns = 0;
  std::uint64_t tracked_conns = 0;
  std::uint64_t events = 0;
  std::uint64_t events_lost = 0;
  std::uint64_t verdicts = 0;
  std::uint64_t verdict_failures = 0;
  std::uint64_t pending_drops = 0;
  std::uint64_t transactions = 0;
};

Result<RoundResult> run_variant(Variant v, const TestCgroup& cgroup, std::uint16_t port,
                                double seconds, Diagnostics& diag) {
  if (v == Variant::kDetached) return run_client(port, seconds);
  dp::DatapathOptions options;
  options.cgroup = cgroup.path();
  const bool writer = v == Variant::kVerdictWriter || v == Variant::kVerdictNoResend;
  if (!writer) {
    auto exempt = dp::Exemption::parse("127.0.0.1/32:" + std::to_string(port));
    if (!exempt) return std::unexpected(exempt.error());
    options.exemptions.push_back(*exempt);
  }
  auto attached = AttachedDatapath::attach(options);
  if (!attached) return std::unexpected(attached.error());
  std::unique_ptr<EventThread> events;
  if (v != Variant::kExempt) {
    auto writes = v == Variant::kVerdictWriter     ? EventThread::Writes::kApplyVerdicts
                  : v == Variant::kVerdictNoResend ? EventThread::Writes::kSetVerdict
                                                   : EventThread::Writes::kNothing;
    auto started = EventThread::start(attached->get(), writes);
    if (!started) return std::unexpected(started.error());
    events = std::move(*started);
  }
  auto result = run_client(port, seconds);
  if (events) {
    events->stop();
    diag.events += events->events();
    diag.verdicts += events->verdicts();
    diag.verdict_failures += events->verdict_failures();
  }
  if (!result) return result;
  auto stats = attached->get().stats();
  if (!stats) return std::unexpected(stats.error());
  diag.exempt_conns += stats->counters[TF_COUNTER_CONN_EXEMPT];
  diag.tracked_conns += stats->counters[TF_COUNTER_CONN_TRACKED];
  diag.events_lost += stats->counters[TF_COUNTER_EVENTS_LOST];
  for (int d = 0; d < TF_PACKET_DIR_COUNT; ++d)
    diag.pending_drops += stats->packets[d][TF_ACTION_DROP][TF_REASON_PENDING];
  diag.transactions += result->latencies_us.size();
  return result;
}

void print_results(const std::vector<std::vector<RoundResult>>& rounds,
                   const Diagnostics (&diag)[kVariantCount], const Options& opt) {
  std::printf("\n  %-36s %-22s %-22s %-16s %s\n", "variant", "conn/s median (min-max)",
              "ratio to detached", "tx us p50 / p99", "tx >= 200 ms");
  std::vector<Spread> ratio_of(kVariantCount);
  for (int vi = 0; vi < kVariantCount; ++vi) {
    std::vector<double> rates, ratios, lat;
    for (const auto& round : rounds) {
      rates.push_back(round[vi].rate);
      ratios.push_back(round[vi].rate / round[0].rate);
      lat.insert(lat.end(), round[vi].latencies_us.begin(), round[vi].latencies_us.end());
    }
    std::sort(lat.begin(), lat.end());
    ratio_of[vi] = spread(ratios);
    auto stalled = std::count_if(lat.begin(), lat.end(), [](double us) { return us >= 200'000; });
    std::string ratio = vi == 0 ? "1 (by definition)" : format_spread(ratio_of[vi], 3);
    char tx[48];
    std::snprintf(tx, sizeof(tx), "%.0f / %.0f", percentile(lat, 50), percentile(lat, 99));
    std::printf("  %-36s %-22s %-22s %-16s %ld of %zu\n", describe(kVariants[vi]),
                format_spread(spread(rates), 0).c_str(), ratio.c_str(), tx,
                static_cast<long>(stalled), lat.size());
  }
  std::printf(
      "  (ratio: per round, variant rate / detached rate of the same round; %llu rounds "
      "of %.1f s per variant,\n  order alternating round by round)\n",
      static_cast<unsigned long long>(opt.rounds), opt.seconds);
  for (int vi : {1, 2})
    std::printf(
        "  RESULT CRR ratio attached/detached, every connection allowed (%s): %.3f "
        "(%.3f-%.3f); target >= 0.97: %s\n",
        vi == 1 ? "exempt, events drained" : "exempt, events unread", ratio_of[vi].median,
        ratio_of[vi].min, ratio_of[vi].max, ratio_of[vi].median >= 0.97 ? "meets it" : "MISSES it");
  for (int vi : {3, 4})
    std::printf(
        "  RESULT CRR ratio, a verdict-writer thread allowing each connection (%s): %.3f "
        "(%.3f-%.3f)\n",
        vi == 3 ? "apply_verdicts" : "set_verdict, no resend", ratio_of[vi].median,
        ratio_of[vi].min, ratio_of[vi].max);
  auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  const auto& ed = diag[1];
  const auto& e = diag[2];
  std::printf(
      "  exempt rounds: %llu of %llu sockets (2 per transaction) decided ALLOW/exempt by "
      "tf_sockops at\n    establishment; events lost with the ring drained: %llu, unread: %llu\n",
      u(ed.exempt_conns + e.exempt_conns), u(2 * (ed.transactions + e.transactions)),
      u(ed.events_lost), u(e.events_lost));
  for (int vi : {3, 4}) {
    const auto& w = diag[vi];
    std::printf(
        "  %s rounds: %llu transactions, %llu sockets tracked PENDING, %llu events\n    read, "
        "%llu ALLOW verdicts written (%llu found the socket gone or failed), %llu payload "
        "segments\n    held (dropped while pending)\n",
        describe(kVariants[vi]), u(w.transactions), u(w.tracked_conns), u(w.events), u(w.verdicts),
        u(w.verdict_failures), u(w.pending_drops));
  }
}

// Where the attached time goes: one more exempt pass (events drained) with
// the kernel's BPF run-time statistics on. They add two clock reads to every
// program run, so this pass stays out of the ratios.
Result<void> print_program_time(const TestCgroup& cgroup, std::uint16_t port, double seconds,
                                bool drain, double detached_us) {
  auto stats_on = enable_run_time_stats();
  if (!stats_on) return std::unexpected(stats_on.error());
  dp::DatapathOptions options;
  options.cgroup = cgroup.path();
  auto exempt = dp::Exemption::parse("127.0.0.1/32:" + std::to_string(port));
  if (!exempt) return std::unexpected(exempt.error());
  options.exemptions.push_back(*exempt);
  auto attached = AttachedDatapath::attach(options);
  if (!attached) return std::unexpected(attached.error());
  std::unique_ptr<EventThread> events;
  if (drain) {
    auto started = EventThread::start(attached->get(), EventThread::Writes::kNothing);
    if (!started) return std::unexpected(started.error());
    events = std::move(*started);
  }
  auto result = run_client(port, seconds);
  if (events) events->stop();
  if (!result) return std::unexpected(result.error());
  const double n = static_cast<double>(result->latencies_us.size());
  std::string parts;
  double total_ns = 0;
  for (std::uint32_t id : attached->get().program_ids()) {
    auto st = prog_run_stats(id);
    if (!st) return std::unexpected(st.error());
    double ns = static_cast<double>(st->run_time_ns) / n;
    total_ns += ns;
    char buf[160];
    std::snprintf(buf, sizeof(buf), "%s%s %.0f ns (%.1f runs x %.0f ns)", parts.empty() ? "" : ", ",
                  st->name.c_str(), ns, static_cast<double>(st->run_count) / n,
                  st->run_count ? static_cast<double>(st->run_time_ns) / st->run_count : 0.0);
    parts += buf;
  }
  std::printf(
      "  exempt, events %s: %.0f ns per transaction = %.1f%% of the detached median "
      "transaction (%.0f us)\n    %s\n",
      drain ? "drained" : "unread ", total_ns, 100.0 * total_ns / (detached_us * 1e3), detached_us,
      parts.c_str());
  return {};
}

Result<void> run(const Options& opt) {
  auto cgroup = TestCgroup::create(kNamePrefix);
  if (!cgroup) return std::unexpected(cgroup.error());
  // Every socket of the run (listener, accepted, clients) is created inside.
  auto inside = CgroupMembership::enter(*cgroup);
  if (!inside) return std::unexpected(inside.error());
  auto listener = listen_loopback(4096);
  if (!listener) return std::unexpected(listener.error());

  std::printf("== connect-request-response rate over loopback (target ratio >= 0.97) ==\n");
  std::printf(
      "one client, one transaction at a time: connect, 1-byte request, 1-byte response, server "
      "closes;\nclient and server sockets in the test cgroup %s.\n"
      "'exempt': the server port 127.0.0.1/32:%u is an Exemption, so tf_sockops decides ALLOW "
      "at\nestablishment for both ends (every connection allowed without waiting for anyone).\n"
      "'verdict writer': nothing exempt; a user-space thread reads tf_events (EventReader) and "
      "writes\nALLOW for each new cookie with Datapath::apply_verdicts, as the agent will ('no "
      "resend': with\nconns().set_verdict alone); the client sends its request at once and "
      "waits for nothing special,\nso this shows the cost of holding the first request until "
      "the verdict.\n",
      cgroup->path().c_str(), listener->port);
  std::fflush(stdout);

  Server server(listener->fd);
  std::vector<std::vector<RoundResult>> rounds;
  Diagnostics diag[kVariantCount];
  for (std::uint64_t round = 0; round < opt.rounds && !stop_requested(); ++round) {
    std::vector<RoundResult> results(kVariantCount);
    // Alternate the order (A B C D, D C B A, ...) so no variant always goes first.
    for (int step = 0; step < kVariantCount; ++step) {
      int vi = round % 2 ? kVariantCount - 1 - step : step;
      auto r = run_variant(kVariants[vi], *cgroup, listener->port, opt.seconds, diag[vi]);
      if (!r)
        return fail(r.error().code,
                    std::string(describe(kVariants[vi])) + ": " + r.error().message);
      results[vi] = std::move(*r);
    }
    if (stop_requested()) break;
    std::printf("  round %llu:", static_cast<unsigned long long>(round + 1));
    for (int vi = 0; vi < kVariantCount; ++vi) std::printf(" %.0f", results[vi].rate);
    std::printf(" conn/s\n");
    std::fflush(stdout);
    rounds.push_back(std::move(results));
  }
  if (stop_requested()) return fail(Errc::kIo, "interrupted");
  print_results(rounds, diag, opt);
  std::vector<double> detached_lat;
  for (const auto& round : rounds)
    detached_lat.insert(detached_lat.end(), round[0].latencies_us.begin(),
                        round[0].latencies_us.end());
  std::sort(detached_lat.begin(), detached_lat.end());
  std::printf(
      "  BPF program run time per transaction (kernel run-time stats on for one extra "
      "pass each;\n  they add two clock reads per run, so these passes stay out of the "
      "ratios):\n");
  for (bool drain : {true, false}) {
    if (auto ok = print_program_time(*cgroup, listener->port, opt.seconds, drain,
                                     percentile(detached_lat, 50));
        !ok)
      return ok;
  }
  if (server.errors() != 0)
    std::printf("  warning: the server saw %llu connections end without a request\n",
                static_cast<unsigned long long>(server.errors()));
  std::printf("\n");
  return {};
}

}  // namespace
}  // namespace trustfence::bench

int main(int argc, char** argv) {
  using namespace trustfence::bench;
  return bench_main(argc, argv, parse_options, run);
}
