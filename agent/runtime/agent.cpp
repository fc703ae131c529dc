#include "trustfence/runtime/agent.hpp"

#include <netinet/in.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

#include "trustfence/api/conn_json.hpp"
#include "trustfence/api/metrics_server.hpp"
#include "trustfence/api/prometheus.hpp"
#include "trustfence/api/server.hpp"
#include "trustfence/attest/attestor.hpp"
#include "trustfence/common/logging.hpp"
#include "trustfence/common/verdict.hpp"
#include "trustfence/datapath/format.hpp"
#include "trustfence/datapath/host.hpp"
#include "trustfence/datapath/sock_destroy.hpp"
#include "trustfence/runtime/acceptor.hpp"
#include "trustfence/runtime/event_loop.hpp"
#include "trustfence/runtime/file_watch.hpp"
#include "trustfence/runtime/node_identity.hpp"
#include "trustfence/tls/tls_stream.hpp"
#include "trustfence/tls/verify_cache.hpp"

namespace trustfence::runtime {
namespace {

// Closed connections kept for `trustfence conns --closed`.
constexpr std::size_t kClosedHistory = 1024;
// Denials logged one by one per second before they are summarized.
constexpr std::uint64_t kDenialLinesPerSecond = 100;
// Recent decisions kept for `trustfence watch`.
constexpr std::size_t kWatchHistory = 4096;
// How often the connection table is checked for events the ring lost.
constexpr std::chrono::milliseconds kReconcileInterval{1000};

// SIGINT and SIGTERM stop the agent, SIGHUP reloads its configuration.
Result<UniqueFd> agent_signals() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return fail_errno("blocking signals", errno);
  int fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) return fail_errno("signalfd", errno);
  return UniqueFd(fd);
}

Result<UniqueFd> listen_on(const net::SocketAddress& address) {
  sockaddr_storage addr{};
  socklen_t len = address.to_sockaddr(addr);
  UniqueFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("listen " + address.str() + ": socket", errno);
  int one = 1, zero = 0;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  // [::] takes IPv4 peers too.
  if (addr.ss_family == AF_INET6)
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
    return fail_errno("listen = " + address.str() + ": bind", errno);
  if (::listen(fd.get(), 512) != 0) return fail_errno("listen = " + address.str(), errno);
  return fd;
}

std::optional<net::SocketAddress> peer_address(const sockaddr_storage& addr) {
  std::uint32_t words[4] = {};
  if (addr.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&addr);
    words[0] = sin->sin_addr.s_addr;
    return net::SocketAddress(net::IpAddress::from_words(words, AF_INET), ntohs(sin->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    std::memcpy(words, &sin6->sin6_addr, 16);
    auto ip = net::IpAddress::from_words(words, AF_INET6);  // v4-mapped stays IPv4
    return net::SocketAddress(ip, ntohs(sin6->sin6_port));
  }
  return std::nullopt;
}

// What the agent did in workloads' own network namespaces, by name.
std::vector<std::pair<std::string, std::uint64_t>> netns_counters(
    const datapath::NetnsCounters& c) {
  return {{"lookups", c.lookups},       {"unresolved", c.unresolved},
          {"entered", c.entered},       {"enter_failed", c.enter_failed},
          {"evicted", c.evicted},       {"walks", c.foreign_walks},
          {"pushed", c.foreign_pushed}, {"destroyed", c.foreign_destroyed}};
}

// An agent inside the cgroup it enforces would hold its own channel's
// traffic: exempt the channel ports then, and only then (an exempt port is
// open to every workload of the cgroup).
void exempt_own_channel(config::Config& config) {
  if (!config.identity) return;
  auto own = datapath::own_cgroup();
  auto enforced = datapath::resolve_cgroup(config.datapath.cgroup);
  auto mount = datapath::cgroup2_mount();
  // In a cgroup namespace (a container) /proc/self/cgroup reads "0::/":
  // the agent's own cgroup cannot be told from the hierarchy's root.
  auto same = [](const std::string& a, const std::string& b) {
    return (std::filesystem::path(a) / "").lexically_normal() ==
           (std::filesystem::path(b) / "").lexically_normal();
  };
  if (own && enforced && mount && same(*own, *mount) && !same(*enforced, *mount))
    spdlog::warn(
        "cannot tell the agent's own cgroup (/proc/self/cgroup reads 0::/, a cgroup namespace?): "
        "if the agent runs inside the enforced cgroup {}, exempt its channel port explicitly "
        "(exempt = [::]/0:{})",
        *enforced, config.attestation.listen.port());
  if (!own || !enforced || !datapath::cgroup_contains(*enforced, *own)) return;
  std::set<std::uint16_t> ports = {config.attestation.listen.port()};
  for (const auto& route : config.attestation.peers) ports.insert(route.agent.port());
  for (auto port : ports) {
    auto rule = datapath::Exemption::parse("[::]/0:" + std::to_string(port));
    if (!rule) continue;
    config.datapath.exemptions.push_back(*rule);
    spdlog::warn(
        "the agent runs inside the cgroup it enforces ({}): port {} is exempt for every socket "
        "of it; run the agent outside the enforced cgroup to avoid that",
        *own, port);
  }
}

class NodeAgent {
 public:
  NodeAgent(config::Config config, std::vector<std::string> args,
            std::unique_ptr<datapath::Datapath> dp, EventLoop& loop)
      : config_(std::move(config)), args_(std::move(args)), dp_(std::move(dp)), loop_(loop) {}

  Result<void> start() {
    load_names();
    if (config_.identity) {
      auto id = load_node_identity(*config_.identity);
      if (!id) return std::unexpected(id.error());
      identity_ = std::make_unique<NodeIdentity>(std::move(*id));
      workloads_ = std::make_unique<attest::WorkloadIdentities>(identity_->agent_id,
                                                                config_.attestation.workloads);
      attestor_.emplace(
          loop_, *identity_->client, *identity_->server, interner_, *workloads_,
          attest::Attestor::Options{.attestation = config_.attestation,
                                    .rules = config_.identity->rules,
                                    .generation = 1,
                                    .audit = config_.datapath.mode == TF_MODE_AUDIT,
                                    .limits = {},
                                    .write_decisions = [this] { write_decisions(); }});
      auto listener = listen_on(config_.attestation.listen);
      if (!listener) return std::unexpected(listener.error());
      auto acceptor = Acceptor::start(loop_, std::move(*listener),
                                      "listen = " + config_.attestation.listen.str(),
                                      [this](UniqueFd channel, const sockaddr_storage& from) {
                                        if (auto address = peer_address(from))
                                          attestor_->accept(std::move(channel), *address);
                                      });
      if (!acceptor) return std::unexpected(acceptor.error());
      channel_acceptor_ = std::move(*acceptor);
      spdlog::info("attesting as {} on {} ({} peers, peer-authentication {}, timeout {} ms)",
                   identity_->agent_id.str(), config_.attestation.listen.str(),
                   config_.attestation.peers.size(),
                   config_.attestation.peer_authentication == config::PeerAuthentication::kStrict
                       ? "strict"
                       : "permissive",
                   config_.attestation.timeout.count());
    } else {
      spdlog::warn("no trust-domain configured: connections are tracked but nobody attests them");
    }

    if (auto ok = open_events(); !ok) return ok;

    auto api = api::Server::start(loop_, config_.api,
                                  [this](const nlohmann::json& request) { return serve(request); });
    if (!api) return std::unexpected(api.error());
    api_ = std::move(*api);
    spdlog::info("query API on {}", config_.api.socket);
    if (config_.api.metrics) {
      auto metrics = api::MetricsServer::start(
          loop_, *config_.api.metrics,
          {.metrics = [this] { return render_metrics(); },
           .ready = [this]() -> std::pair<bool, std::string> {
             if (!last_reload_error_.empty())
               return {true, "ready; the last reload was refused: " + last_reload_error_};
             return {true, "ready"};
           }});
      if (!metrics) return std::unexpected(metrics.error());
      metrics_ = std::move(*metrics);
      spdlog::info("metrics on http://{}/metrics", config_.api.metrics->str());
    }
    check_svid_expiry();

    loop_.on_round_end([this] {
      poll_events();
      write_decisions();
      if (attestor_) attestor_->collect();
      retired_.clear();  // old identities: their channels are closed by now
      retired_workloads_.clear();
    });
    reconcile();  // connections that arrived while no agent ran
    schedule_reconcile();
    watch_files();
    return {};
  }

  // SIGHUP, or a watched file changed: load the configuration again and
  // apply it, or keep the running one and say why.
  void reload(const char* trigger) {
    const auto started = SteadyClock::now();
    ++reloads_;
    auto outcome = try_reload();
    if (!outcome) {
      ++reload_failures_;
      last_reload_error_ = outcome.error().message;
      spdlog::error("reload ({}) refused, generation {} keeps running: {}", trigger, generation_,
                    outcome.error().message);
      return;
    }
    last_reload_error_.clear();
    // The open connections were decided again under the new generation;
    // written now rather than at the round's end, so the duration covers
    // them reaching the kernel (and the revoked ones being cut). Peers
    // re-verified because their bundle lost an authority answer later.
    const std::size_t applied = write_decisions();
    const auto took = SteadyClock::now() - started;
    reload_duration_.observe(took);
    last_reload_connections_ = applied;
    last_reload_duration_ = took;
    spdlog::info("reload ({}): generation {} in effect, applied to {} connections in {:.3f} ms",
                 trigger, generation_, applied,
                 std::chrono::duration<double, std::milli>(took).count());
  }

 private:
  Result<void> open_events() {
    auto events = dp_->events([this](const datapath::Event& ev) { on_event(ev); });
    if (!events) return std::unexpected(events.error());
    events_.emplace(std::move(*events));
    return loop_.add(events_->epoll_fd(), EPOLLIN, [this](std::uint32_t) { poll_events(); });
  }

  // Names of interned ids survive restarts in a file next to the API
  // socket, so connections decided before keep their peer identity.
  // Loaded bounded and checked (only valid SPIFFE IDs and trust domains);
  // ids are hashes of the names, so they come out the same.
  void load_names() {
    names_path_ = config_.api.socket + ".names";
    std::ifstream in(names_path_);
    std::string line;
    std::size_t loaded = 0;
    while (in && std::getline(in, line) && loaded < identity::Interner::kMaxEntries) {
      if (line.starts_with("spiffe://") ? !identity::SpiffeId::parse(line).has_value()
                                        : !identity::TrustDomain::parse(line).has_value())
        continue;
      interner_.intern(line);
      ++loaded;
    }
    names_out_.open(names_path_, std::ios::app);
    if (!names_out_)
      spdlog::warn("cannot write {}: peer names will not survive a restart", names_path_);
    // Written as they come: a kill -9 loses nothing already decided.
    interner_.on_new([this](std::string_view name) {
      if (names_out_) names_out_ << name << '\n' << std::flush;
    });
    if (config_.identity) {
      interner_.intern(config_.identity->rules.trust_domain.name());
      for (const auto& td : config_.identity->rules.aliases) interner_.intern(td.name());
    }
    if (loaded) spdlog::info("{} peer names restored from {}", loaded, names_path_);
  }

  void watch_files() {
    std::vector<std::string> files;
    if (!config_.file.empty()) files.push_back(config_.file);
    if (config_.identity) {
      for (const auto& bundle : config_.identity->bundles) files.push_back(bundle.path);
      files.push_back(config_.identity->svid_cert);
      files.push_back(config_.identity->svid_key);
    }
    if (files.empty()) return;
    auto watch = FileWatch::start(loop_, files, std::chrono::milliseconds(300),
                                  [this] { reload("file change"); });
    if (!watch) {
      spdlog::warn("not watching the configuration files ({}); reload with SIGHUP",
                   watch.error().message);
      return;
    }
    file_watch_ = std::move(*watch);
  }

  // What a running agent cannot take over: it would need a restart.
  static std::optional<std::string> needs_restart(const config::Config& a,
                                                  const config::Config& b) {
    if (a.datapath.cgroup != b.datapath.cgroup) return "cgroup";
    if (a.datapath.pin_dir != b.datapath.pin_dir) return "pin-dir";
    if (a.datapath.max_connections != b.datapath.max_connections) return "max-connections";
    if (!(a.attestation.listen == b.attestation.listen)) return "listen";
    if (a.api.socket != b.api.socket || a.api.group != b.api.group) return "api-socket";
    if (a.api.metrics != b.api.metrics) return "metrics";
    if (a.identity.has_value() != b.identity.has_value()) return "trust-domain (set or unset)";
    if (a.identity && a.identity->rules.trust_domain != b.identity->rules.trust_domain)
      return "trust-domain";
    return std::nullopt;
  }

  Result<void> try_reload() {
    auto next = config::load(args_);
    if (!next) return std::unexpected(next.error());
    exempt_own_channel(*next);
    if (auto key = needs_restart(config_, *next))
      return fail(Errc::kInvalidArgument, *key + " changed: that needs an agent restart");
    std::unique_ptr<NodeIdentity> identity;
    if (next->identity) {
      auto loaded = load_node_identity(*next->identity);
      if (!loaded) return std::unexpected(loaded.error());
      identity = std::make_unique<NodeIdentity>(std::move(*loaded));
    }
    if (auto ok = apply_datapath(next->datapath); !ok) return ok;

    ++generation_;
    configure_logging(next->log_format, next->log_level);
    if (identity) {
      auto weakened = weakened_domains(*identity_->bundles, *identity->bundles);
      for (const auto& td : weakened)
        spdlog::warn("trust bundle of {} lost an authority: its connections are re-verified",
                     td.name());
      auto workloads = std::make_unique<attest::WorkloadIdentities>(identity->agent_id,
                                                                    next->attestation.workloads);
      attestor_->reconfigure(
          attest::Attestor::Options{.attestation = next->attestation,
                                    .rules = next->identity->rules,
                                    .generation = generation_,
                                    .audit = next->datapath.mode == TF_MODE_AUDIT,
                                    .limits = {},
                                    .write_decisions = [this] { write_decisions(); }},
          *identity->client, *identity->server, *workloads, weakened);
      // The old identity stays until this round ends: closed channels were
      // made from it.
      retired_.push_back(std::move(identity_));
      retired_workloads_.push_back(std::move(workloads_));
      identity_ = std::move(identity);
      workloads_ = std::move(workloads);
    }
    config_ = std::move(*next);
    return {};
  }

  // One line per denial, but at most kDenialLinesPerSecond: a flood of
  // denials is summarized (counted in metrics either way).
  bool denial_log_allowed() {
    auto now = SteadyClock::now();
    if (now - denial_window_ >= std::chrono::seconds(1)) {
      if (denials_suppressed_)
        spdlog::warn(
            "{} more denials in the last second not logged one by one (see trustfence "
            "watch --denials and the metrics)",
            denials_suppressed_);
      denial_window_ = now;
      denial_lines_ = 0;
      denials_suppressed_ = 0;
    }
    if (denial_lines_ < kDenialLinesPerSecond) {
      ++denial_lines_;
      return true;
    }
    ++denials_suppressed_;
    return false;
  }

  // Our own SVID about to expire is an alarm: peers will refuse us then.
  void check_svid_expiry() {
    if (identity_) {
      auto left = identity_->svid_not_after - std::chrono::system_clock::now();
      auto minutes = std::chrono::duration_cast<std::chrono::minutes>(left).count();
      if (left <= std::chrono::seconds(0))
        spdlog::error("our SVID {} has EXPIRED: peers refuse our channels; rotate svid-cert",
                      identity_->agent_id.str());
      else if (left < std::chrono::hours(1))
        spdlog::warn("our SVID {} expires in {} minutes; rotate svid-cert (the agent reloads it)",
                     identity_->agent_id.str(), minutes);
    }
    loop_.after(std::chrono::seconds(60), [this] { check_svid_expiry(); });
  }

  std::string render_metrics() {
    api::Exposition out;
    auto entries = dp_->conns().snapshot();
    auto stats = dp_->stats();
    if (entries) {
      std::map<std::string, std::uint64_t> by_verdict = {{"pending", 0}, {"allow", 0}, {"deny", 0}};
      for (const auto& [cookie, conn] : *entries)
        if (auto v = verdict_from_byte(conn.verdict)) ++by_verdict[std::string(to_string(*v))];
      for (const auto& [verdict, n] : by_verdict)
        out.gauge("trustfence_connections", "Open tracked connections by verdict",
                  {{"verdict", verdict}}, n);
      out.gauge("trustfence_pending_connections", "Connections awaiting a verdict", {},
                by_verdict["pending"]);
      out.gauge("trustfence_conns_map_entries", "Entries in tf_conns", {}, entries->size());
    }
    out.gauge("trustfence_conns_map_capacity", "Capacity of tf_conns", {}, dp_->conns().capacity());
    if (stats) {
      for (int d = 0; d < TF_PACKET_DIR_COUNT; ++d)
        for (int a = 0; a < TF_ACTION_COUNT; ++a)
          for (int r = 0; r < TF_REASON_COUNT; ++r)
            if (auto n = stats->packets[d][a][r]; n != 0)
              out.counter("trustfence_packets_total",
                          "Packets through the datapath by direction, action and reason",
                          {{"direction", to_string(static_cast<tf_packet_dir>(d))},
                           {"action", to_string(static_cast<tf_action>(a))},
                           {"reason", to_string(static_cast<tf_reason>(r))}},
                          n);
      for (int c = 0; c < TF_COUNTER_COUNT; ++c)
        out.counter("trustfence_datapath_events_total", "Connection-level datapath counters",
                    {{"event", to_string(static_cast<tf_counter>(c))}}, stats->counters[c]);
    }
    for_each_decision_count([&](const std::string& verdict, const std::string& reason,
                                const std::string& td, std::uint64_t count) {
      out.counter("trustfence_decisions_total",
                  "Verdicts made by verdict, reason and peer trust domain (in audit mode the "
                  "denials are would-be denials)",
                  {{"verdict", verdict}, {"reason", reason}, {"peer_trust_domain", td}}, count);
    });
    out.histogram("trustfence_attestation_latency_seconds",
                  "From a connection's establishment to its verdict", {}, attestation_latency_);
    for (const auto& [event, n] : netns_counters(dp_->netns().counters()))
      out.counter("trustfence_netns_total",
                  "Socket destroys and held-payload pushes in workloads' own network namespaces",
                  {{"event", event}}, n);
    if (attestor_) {
      auto a = attestor_->stats();
      std::map<std::pair<std::string, std::string>, std::uint64_t> channels;
      for (const auto& c : a["channels"]) ++channels[{c.value("side", ""), c.value("state", "")}];
      for (const auto& [key, n] : channels)
        out.gauge("trustfence_channels", "Agent channels by side and state",
                  {{"side", key.first}, {"state", key.second}}, n);
      for (const auto& [kind, n] : a["attestation"]["channel_closes"].items())
        out.counter("trustfence_channel_closes_total", "Channels closed, by why", {{"kind", kind}},
                    n.get<std::uint64_t>());
      for (const char* name :
           {"requests_sent", "requests_served", "responses", "foreign_vouching", "wrong_agent",
            "unmatched_requests", "handshakes_refused", "revoked"}) {
        out.counter(std::string("trustfence_attestation_") + name + "_total",
                    "Attestation counter (see trustfence stats)", {},
                    a["attestation"][name].get<std::uint64_t>());
      }
    }
    out.gauge("trustfence_config_generation", "Configuration generation in effect", {},
              generation_);
    out.counter("trustfence_config_reloads_total", "Reloads attempted", {}, reloads_);
    out.counter("trustfence_config_reload_failures_total", "Reloads refused (invalid)", {},
                reload_failures_);
    out.histogram("trustfence_config_reload_duration_seconds",
                  "From a reload's start to every open connection's new verdict written", {},
                  reload_duration_);
    out.gauge("trustfence_config_last_reload_connections",
              "Connections the last applied reload decided again", {}, last_reload_connections_);
    out.gauge("trustfence_config_last_reload_ok", "1 unless the last reload was refused", {},
              last_reload_error_.empty() ? 1 : 0);
    auto unix_seconds = [](std::chrono::system_clock::time_point t) {
      return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
    };
    if (identity_) {
      out.gauge("trustfence_svid_expiry_timestamp_seconds", "notAfter of the agent's own SVID",
                {{"spiffe_id", identity_->agent_id.str()}},
                unix_seconds(identity_->svid_not_after));
      for (const auto& [td, not_after] : bundle_expiry(*identity_->bundles))
        out.gauge("trustfence_bundle_expiry_timestamp_seconds",
                  "Earliest notAfter among a trust domain's bundle authorities",
                  {{"trust_domain", td.name()}}, unix_seconds(not_after));
    }
    api::append_to(out, metrics_->stats());
    return out.text();
  }

  // Audit let denied connections run; enforcing now, they are cut the way
  // a fresh denial is, instead of hanging on dropped packets.
  void cut_denied() {
    auto entries = dp_->conns().snapshot();
    if (!entries) {
      spdlog::error("reading tf_conns: {}", entries.error().message);
      return;
    }
    std::size_t cut = 0;
    for (const auto& [cookie, conn] : *entries) {
      if (conn.verdict != TF_VERDICT_DENY) continue;
      if (auto destroyed = datapath::destroy_socket(dp_->netns(), cookie, conn);
          destroyed && *destroyed)
        ++cut;
    }
    if (cut) spdlog::warn("enforce mode: cut {} connections denied while auditing", cut);
  }

  // Exemptions change in place; a new mode, fallback or RTO floor needs the
  // programs loaded again, swapped behind the pinned links (as a restart).
  Result<void> apply_datapath(const datapath::DatapathOptions& next) {
    const auto& now = config_.datapath;
    if (next.mode != now.mode || next.untracked_verdict != now.untracked_verdict ||
        next.pending_rto_min_us != now.pending_rto_min_us) {
      loop_.remove(events_->epoll_fd());
      events_.reset();
      dp_.reset();  // releases the pin-dir lock; pinned links keep enforcing
      auto reopened = datapath::Datapath::open(next);
      if (!reopened) {
        auto back = datapath::Datapath::open(now);
        if (!back) {
          spdlog::critical("datapath: neither the new nor the old configuration loads: {}",
                           back.error().message);
          loop_.stop();
          return std::unexpected(back.error());
        }
        dp_ = std::make_unique<datapath::Datapath>(std::move(*back));
        (void)open_events();
        return std::unexpected(reopened.error());
      }
      dp_ = std::make_unique<datapath::Datapath>(std::move(*reopened));
      if (auto ok = open_events(); !ok) return ok;
      spdlog::info("datapath reloaded: mode {}", next.mode == TF_MODE_AUDIT ? "audit" : "enforce");
      if (now.mode == TF_MODE_AUDIT && next.mode == TF_MODE_ENFORCE) cut_denied();
      if (next.exemptions != now.exemptions) return dp_->set_exemptions(next.exemptions);
      return {};
    }
    if (next.exemptions != now.exemptions) return dp_->set_exemptions(next.exemptions);
    return {};
  }

  void poll_events() {
    if (auto polled = events_->poll(0); !polled)
      spdlog::error("tf_events: {}", polled.error().message);
    if (events_->malformed() != malformed_seen_) {
      spdlog::warn("skipped {} malformed tf_events records",
                   events_->malformed() - malformed_seen_);
      malformed_seen_ = events_->malformed();
    }
  }

  void on_event(const datapath::Event& ev) {
    if (ev.kind == TF_EVENT_NEW) {
      // Replayed from the pinned ring after a restart, already gone: its
      // tuple may belong to a newer connection by now.
      if (ev.conn.verdict == TF_VERDICT_PENDING) {
        if (auto present = dp_->conns().lookup(ev.cookie); present && !*present) return;
      }
      if (spdlog::should_log(spdlog::level::debug))
        spdlog::debug("new {} {} -> {} cookie={} cgroup={} verdict={}",
                      to_string(static_cast<tf_direction>(ev.conn.direction)),
                      datapath::local_endpoint(ev.conn.tuple),
                      datapath::remote_endpoint(ev.conn.tuple), ev.cookie, ev.conn.cgroup_id,
                      to_string(static_cast<tf_verdict>(ev.conn.verdict)));
      if (attestor_) attestor_->on_new(ev.cookie, ev.conn);
      return;
    }
    tf_conn conn = ev.conn;
    if (attestor_) {
      // Closed before our verdict reached the kernel: record the verdict.
      if (auto known = attestor_->on_close(ev.cookie); known && conn.verdict == TF_VERDICT_PENDING)
        conn = *known;
    }
    remember_closed(ev.cookie, conn, ev.timestamp_ns);
  }

  void remember_closed(datapath::Cookie cookie, const tf_conn& conn, std::uint64_t at_ns) {
    closed_.push_back({cookie, conn, at_ns});
    if (closed_.size() > kClosedHistory) closed_.pop_front();
  }

  // Verdicts to the kernel, denied sockets destroyed, one log line each.
  // Safe from inside channel callbacks (it closes no channel).
  // Returns how many verdicts it wrote (or recorded for closed sockets).
  std::size_t write_decisions() {
    if (!attestor_) return 0;
    auto decisions = attestor_->take_decisions();
    if (decisions.empty()) return 0;
    std::vector<std::pair<datapath::Cookie, datapath::VerdictUpdate>> batch;
    batch.reserve(decisions.size());
    for (const auto& d : decisions) {
      if (d.closed)
        record_closed_verdict(d.cookie, d.update);
      else
        batch.emplace_back(d.cookie, d.update);
    }
    if (!batch.empty()) {
      if (auto applied = dp_->apply_verdicts(batch); !applied)
        spdlog::error("writing {} verdicts: {}", batch.size(), applied.error().message);
    }
    // A reload's verdicts that stand carry nothing for the operator: only
    // changes are logged, counted and kept for `trustfence watch`.
    const bool debug = spdlog::should_log(spdlog::level::debug);
    for (auto& d : decisions) {
      if (d.refresh) continue;
      if (d.conn.verdict == TF_VERDICT_PENDING && d.update.decided_ns > d.conn.created_ns)
        attestation_latency_.observe(
            std::chrono::nanoseconds(d.update.decided_ns - d.conn.created_ns));
      report_decision(d, debug);
      remember_decision(std::move(d));
    }
    return decisions.size();
  }

  std::string verdict_line(const attest::Decided& d) const {
    return fmt::format(
        "{} {} {} -> {} cookie={} peer={} reason={}: {}", to_string(d.update.verdict),
        to_string(static_cast<tf_direction>(d.conn.direction)),
        datapath::local_endpoint(d.conn.tuple), datapath::remote_endpoint(d.conn.tuple), d.cookie,
        d.peer.empty() ? "-" : d.peer, to_string(d.update.reason), d.detail);
  }

  // A line per verdict at debug (formatted only then), per denial at
  // warning (rate-limited); a denied socket is destroyed when enforcing.
  void report_decision(const attest::Decided& d, bool debug) {
    if (d.update.verdict != TF_VERDICT_DENY) {
      if (debug) spdlog::debug("{}", verdict_line(d));
      return;
    }
    bool audit = config_.datapath.mode != TF_MODE_ENFORCE;
    if (denial_log_allowed())
      spdlog::warn("{}{}{}", audit ? "audit: would " : "", verdict_line(d),
                   d.closed ? " (already closed by the peer)" : "");
    if (audit || d.closed) return;
    // The application learns of the denial now, not at its next timeout.
    if (auto destroyed = datapath::destroy_socket(dp_->netns(), d.cookie, d.conn); !destroyed)
      spdlog::error("destroying denied socket {}: {}", d.cookie, destroyed.error().message);
  }

  // A verdict reached after the socket closed completes its history entry.
  void record_closed_verdict(datapath::Cookie cookie, const datapath::VerdictUpdate& update) {
    for (auto it = closed_.rbegin(); it != closed_.rend(); ++it) {
      if (it->cookie != cookie) continue;
      datapath::apply(update, it->conn);
      return;
    }
  }

  // Entries the events did not tell us about (agent restarted, ring full)
  // are picked up from the table itself; entries gone from it are closed.
  void reconcile() {
    auto entries = dp_->conns().snapshot();
    if (!entries) {
      spdlog::error("reading tf_conns: {}", entries.error().message);
      return;
    }
    std::size_t picked = 0;
    for (const auto& [cookie, conn] : *entries) {
      if (!attestor_ || attestor_->tracks(cookie) || conn.verdict != TF_VERDICT_PENDING) continue;
      attestor_->on_new(cookie, conn);
      ++picked;
    }
    if (picked) spdlog::info("picked up {} pending connections from tf_conns", picked);
  }

  void schedule_reconcile() {
    loop_.after(kReconcileInterval, [this] {
      auto stats = dp_->stats();
      if (stats && stats->counters[TF_COUNTER_EVENTS_LOST] != events_lost_seen_) {
        spdlog::warn("tf_events lost {} records; reconciling with tf_conns",
                     stats->counters[TF_COUNTER_EVENTS_LOST] - events_lost_seen_);
        events_lost_seen_ = stats->counters[TF_COUNTER_EVENTS_LOST];
        reconcile();
      }
      schedule_reconcile();
    });
  }

  nlohmann::json serve(const nlohmann::json& request) {
    auto command = request.value("command", "");
    auto now = datapath::monotonic_ns();
    api::NameOf names = [this](std::uint32_t id) { return interner_.name(id); };
    if (command == "conns") {
      bool include_closed = request.value("include_closed", false);
      auto entries = dp_->conns().snapshot();
      if (!entries) return {{"error", entries.error().message}};
      std::sort(entries->begin(), entries->end(), [](const auto& a, const auto& b) {
        return a.second.created_ns < b.second.created_ns;
      });
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& [cookie, conn] : *entries) {
        auto row = api::conn_json(cookie, conn, now, names);
        if (include_closed) row["state"] = "open";
        rows.push_back(std::move(row));
      }
      if (include_closed) {
        for (const auto& closed : closed_) {
          auto row = api::conn_json(closed.cookie, closed.conn, closed.at_ns, names);
          row["state"] = "closed";
          rows.push_back(std::move(row));
        }
      }
      return {{"connections", rows}};
    }
    if (command == "conn") return serve_conn(request, now, names);
    if (command == "events") return serve_events(request);
    if (command == "stats") {
      auto stats = dp_->stats();
      auto entries = dp_->conns().snapshot();
      if (!stats) return {{"error", stats.error().message}};
      if (!entries) return {{"error", entries.error().message}};
      auto out = api::datapath_stats_json(*stats, *entries, dp_->conns().capacity());
      if (attestor_) out.update(attestor_->stats());
      out["api"] = api::to_json(api_->stats());
      out["interned_names"] = interner_.size();
      out["netns"] = nlohmann::json::object();
      for (const auto& [event, n] : netns_counters(dp_->netns().counters()))
        out["netns"][event] = n;
      nlohmann::json decisions = nlohmann::json::array();
      for_each_decision_count([&](const std::string& verdict, const std::string& reason,
                                  const std::string& td, std::uint64_t count) {
        decisions.push_back(
            {{"verdict", verdict},
             {"reason", reason},
             {"peer_trust_domain", td.empty() ? nlohmann::json(nullptr) : nlohmann::json(td)},
             {"count", count}});
      });
      out["decisions"] = decisions;
      out["config"] = {{"generation", generation_},
                       {"reloads", reloads_},
                       {"reload_failures", reload_failures_},
                       {"last_reload_ms",
                        std::chrono::duration<double, std::milli>(last_reload_duration_).count()},
                       {"last_reload_connections", last_reload_connections_},
                       {"last_reload_error", last_reload_error_},
                       {"mode", config_.datapath.mode == TF_MODE_AUDIT ? "audit" : "enforce"}};
      if (identity_) {
        out["identity"] = {{"agent_id", identity_->agent_id.str()},
                           {"svid_not_after_unix", std::chrono::duration_cast<std::chrono::seconds>(
                                                       identity_->svid_not_after.time_since_epoch())
                                                       .count()}};
      }
      return out;
    }
    return {{"error", "unknown command '" + command + "' (conns, conn, events, stats)"}};
  }

  // By cookie, or by the endpoints as `conns` prints them (local, remote).
  nlohmann::json serve_conn(const nlohmann::json& request, std::uint64_t now,
                            const api::NameOf& names) {
    auto closed_row = [&](const Closed& closed) {
      auto row = api::conn_json(closed.cookie, closed.conn, closed.at_ns, names);
      row["state"] = "closed";
      return nlohmann::json{{"connection", row}};
    };
    if (request.contains("local") || request.contains("remote")) {
      if (!request.value("local", nlohmann::json()).is_string() ||
          !request.value("remote", nlohmann::json()).is_string())
        return {{"error", "conn: local and remote must both be IP:PORT strings"}};
      auto local = request["local"].get<std::string>();
      auto remote = request["remote"].get<std::string>();
      auto entries = dp_->conns().snapshot();
      if (!entries) return {{"error", entries.error().message}};
      for (const auto& [cookie, conn] : *entries)
        if (datapath::local_endpoint(conn.tuple) == local &&
            datapath::remote_endpoint(conn.tuple) == remote)
          return {{"connection", api::conn_json(cookie, conn, now, names)}};
      for (auto it = closed_.rbegin(); it != closed_.rend(); ++it)
        if (datapath::local_endpoint(it->conn.tuple) == local &&
            datapath::remote_endpoint(it->conn.tuple) == remote)
          return closed_row(*it);
      return {{"error", "no tracked connection " + local + " -> " + remote}};
    }
    if (!request.contains("cookie") || !request["cookie"].is_number_unsigned())
      return {{"error", "conn: cookie must be an unsigned number"}};
    auto cookie = request["cookie"].get<datapath::Cookie>();
    auto conn = dp_->conns().lookup(cookie);
    if (!conn) return {{"error", conn.error().message}};
    if (*conn) return {{"connection", api::conn_json(cookie, **conn, now, names)}};
    for (auto it = closed_.rbegin(); it != closed_.rend(); ++it)
      if (it->cookie == cookie) return closed_row(*it);
    return {{"error", "no tracked connection " + std::to_string(cookie)}};
  }

  // The verdicts made since sequence number `after` (for `trustfence
  // watch`, which polls): at most the last kWatchHistory are kept.
  nlohmann::json serve_events(const nlohmann::json& request) {
    std::uint64_t after = 0;
    if (request.contains("after")) {
      if (!request["after"].is_number_unsigned())
        return {{"error", "events: after must be an unsigned number"}};
      after = request["after"].get<std::uint64_t>();
    }
    nlohmann::json events = nlohmann::json::array();
    std::uint64_t oldest = watch_.empty() ? next_seq_ : watch_.front().seq;
    for (const auto& event : watch_)
      if (event.seq > after) events.push_back(watch_json(event));
    return {{"events", events},
            {"next", next_seq_ - 1},
            {"missed", after + 1 < oldest && after != 0 ? oldest - after - 1 : 0}};
  }

  struct WatchEvent {
    std::uint64_t seq;
    std::uint64_t time_ns;
    datapath::Cookie cookie;
    tf_conn conn;  // direction and endpoints
    tf_verdict verdict;
    tf_reason reason;
    std::uint32_t peer_trust_domain;
    std::string peer;
    std::string detail;
    bool closed;
  };

  nlohmann::json watch_json(const WatchEvent& e) const {
    auto td = interner_.name(e.peer_trust_domain);
    return {{"seq", e.seq},
            {"time_ns", e.time_ns},
            {"cookie", e.cookie},
            {"direction", std::string(to_string(static_cast<tf_direction>(e.conn.direction)))},
            {"local", datapath::local_endpoint(e.conn.tuple)},
            {"remote", datapath::remote_endpoint(e.conn.tuple)},
            {"verdict", std::string(to_string(e.verdict))},
            {"reason", std::string(to_string(e.reason))},
            {"peer_id", e.peer.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.peer)},
            {"peer_trust_domain", td ? nlohmann::json(*td) : nlohmann::json(nullptr)},
            {"detail", e.detail},
            {"closed", e.closed}};
  }

  // Kept as made; turned into JSON only when `watch` asks.
  void remember_decision(attest::Decided&& d) {
    watch_.push_back(WatchEvent{.seq = next_seq_++,
                                .time_ns = d.update.decided_ns,
                                .cookie = d.cookie,
                                .conn = d.conn,
                                .verdict = d.update.verdict,
                                .reason = d.update.reason,
                                .peer_trust_domain = d.update.peer_trust_domain,
                                .peer = std::move(d.peer),
                                .detail = std::move(d.detail),
                                .closed = d.closed});
    if (watch_.size() > kWatchHistory) watch_.pop_front();
    ++decisions_[{d.update.verdict, d.update.reason, d.update.peer_trust_domain}];
  }

  // Decisions by verdict, reason and peer trust domain, by name.
  template <typename F>
  void for_each_decision_count(F&& f) const {
    for (const auto& [key, count] : decisions_) {
      const auto& [verdict, reason, td] = key;
      f(std::string(to_string(verdict)), std::string(to_string(reason)),
        interner_.name(td).value_or(""), count);
    }
  }

  struct Closed {
    datapath::Cookie cookie;
    tf_conn conn;
    std::uint64_t at_ns;
  };

  config::Config config_;
  std::vector<std::string> args_;  // the command line, loaded again on reload
  std::unique_ptr<datapath::Datapath> dp_;
  EventLoop& loop_;
  identity::Interner interner_;
  std::string names_path_;
  std::ofstream names_out_;
  std::unique_ptr<NodeIdentity> identity_;
  std::unique_ptr<attest::WorkloadIdentities> workloads_;
  std::vector<std::unique_ptr<NodeIdentity>> retired_;
  std::vector<std::unique_ptr<attest::WorkloadIdentities>> retired_workloads_;
  std::unique_ptr<FileWatch> file_watch_;
  std::uint32_t generation_ = 1;
  std::uint64_t reloads_ = 0;
  std::uint64_t reload_failures_ = 0;
  std::string last_reload_error_;
  std::optional<attest::Attestor> attestor_;
  std::unique_ptr<Acceptor> channel_acceptor_;
  std::optional<datapath::EventReader> events_;
  std::unique_ptr<api::Server> api_;
  std::unique_ptr<api::MetricsServer> metrics_;
  api::LatencyHistogram attestation_latency_;
  api::LatencyHistogram reload_duration_;  // applied reloads
  std::size_t last_reload_connections_ = 0;
  SteadyClock::duration last_reload_duration_{};
  SteadyClock::time_point denial_window_{};
  std::uint64_t denial_lines_ = 0;
  std::uint64_t denials_suppressed_ = 0;
  std::deque<Closed> closed_;
  std::deque<WatchEvent> watch_;  // recent decisions, for `trustfence watch`
  std::uint64_t next_seq_ = 1;
  // Decisions since start by verdict, reason and peer trust domain (in
  // audit mode the denials are the would-denies).
  // Interned trust domain ids are named when asked.
  std::map<std::tuple<tf_verdict, tf_reason, std::uint32_t>, std::uint64_t> decisions_;
  std::uint64_t malformed_seen_ = 0;
  std::uint64_t events_lost_seen_ = 0;
};

}  // namespace

Result<void> run_agent(const config::Config& original, const std::vector<std::string>& args) {
  // A peer that goes away mid-write is an error on that channel, not a signal.
  ::signal(SIGPIPE, SIG_IGN);
  config::Config config = original;
  exempt_own_channel(config);
  auto caps = datapath::effective_capabilities();
  if (!caps) return std::unexpected(caps.error());
  if (auto ok = datapath::check_capabilities(*caps); !ok) return ok;
  if (auto ok = datapath::check_kernel_features(); !ok) return ok;

  auto dp = datapath::Datapath::open(config.datapath);
  if (!dp) return std::unexpected(dp.error());
  spdlog::info("datapath {} on cgroup {} (id {}), pins in {}, mode {}",
               dp->pin_state() == datapath::PinState::kReused ? "resumed" : "installed",
               dp->cgroup_path(), dp->cgroup_id(), config.datapath.pin_dir,
               config.datapath.mode == TF_MODE_AUDIT ? "audit" : "enforce");

  auto loop = EventLoop::create();
  if (!loop) return std::unexpected(loop.error());
  auto signals = agent_signals();
  if (!signals) return std::unexpected(signals.error());
  NodeAgent agent(std::move(config), args, std::make_unique<datapath::Datapath>(std::move(*dp)),
                  *loop);
  int signal_fd = signals->get();
  if (auto ok =
          loop->add(signal_fd, EPOLLIN,
                    [&](std::uint32_t) {
                      signalfd_siginfo info{};
                      while (::read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
                        if (info.ssi_signo == SIGHUP) {
                          agent.reload("SIGHUP");
                          continue;
                        }
                        spdlog::info("stopping; the datapath stays attached and keeps enforcing");
                        loop->stop();
                      }
                    });
      !ok)
    return ok;
  if (auto ok = agent.start(); !ok) return ok;
  return loop->run(std::chrono::milliseconds(datapath::kEventPollMs));
}

}  // namespace trustfence::runtime
