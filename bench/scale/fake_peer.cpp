#include "fake_peer.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "support.hpp"
#include "trustfence/attest/channel.hpp"
#include "trustfence/runtime/event_loop.hpp"
#include "trustfence/tls/bundle.hpp"
#include "trustfence/tls/svid_verifier.hpp"
#include "trustfence/tls/tls_stream.hpp"
#include "trustfence/tls/verify_cache.hpp"
#include "worker.hpp"

namespace trustfence::bench::scale {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using Kind = attest::CloseReason::Kind;

constexpr milliseconds kReopenDelay{200};
constexpr milliseconds kPumpInterval{10};
constexpr milliseconds kRateTick{2};
constexpr milliseconds kRateDrain{3000};
// The workload this node's agent vouches for in its requests.
constexpr const char* kClientWorkload = "/ns/scale/sa/client";

// The trust material of the simulated peers: both domains' bundles, our
// verifier and its cache, one client context per node SVID and a server
// context for the primary's listener. Declared in destruction order.
struct Trust {
  tls::BundleSet bundles;
  std::unique_ptr<tls::SvidVerifier> verifier;
  std::unique_ptr<tls::VerifyCache> cache;
  std::vector<std::unique_ptr<tls::TlsContext>> clients;
  std::unique_ptr<tls::TlsContext> server;
};

Result<void> add_bundle(tls::BundleSet& set, const std::string& td_name, const std::string& pem) {
  auto td = identity::TrustDomain::parse(td_name);
  if (!td) return std::unexpected(td.error());
  auto bundle = tls::parse_pem_bundle(*td, pem);
  if (!bundle) return std::unexpected(bundle.error());
  return set.add(std::move(*bundle));
}

Result<std::unique_ptr<Trust>> make_trust(const PeerOptions& opt) {
  auto trust = std::make_unique<Trust>();
  if (auto ok = add_bundle(trust->bundles, opt.trust_domain, opt.own_bundle); !ok)
    return std::unexpected(ok.error());
  if (auto ok = add_bundle(trust->bundles, opt.agent_domain, opt.agent_bundle); !ok)
    return std::unexpected(ok.error());
  trust->verifier = std::make_unique<tls::SvidVerifier>(
      trust->bundles, [] { return std::chrono::system_clock::now(); });
  trust->cache = std::make_unique<tls::VerifyCache>(*trust->verifier);
  for (std::size_t i = 0; i < opt.channels; ++i) {
    auto issued = opt.mint(opt.first_svid + i);
    tls::Chain chain;
    chain.push_back(std::move(issued.cert));
    auto identity = tls::make_tls_identity(std::move(chain), std::move(issued.key));
    if (!identity) return std::unexpected(identity.error());
    auto client =
        tls::TlsContext::create(tls::Role::kClient, *identity, *trust->cache, *trust->verifier);
    if (!client) return std::unexpected(client.error());
    trust->clients.push_back(std::make_unique<tls::TlsContext>(std::move(*client)));
    if (i == 0 && opt.primary) {
      auto server =
          tls::TlsContext::create(tls::Role::kServer, *identity, *trust->cache, *trust->verifier);
      if (!server) return std::unexpected(server.error());
      trust->server = std::make_unique<tls::TlsContext>(std::move(*server));
    }
  }
  return trust;
}

struct RateRun {
  net::SocketAddress target;
  double per_second = 0;
  double seconds = 0;
  Clock::time_point started{};
  Clock::time_point stop_making{};
  std::uint64_t made = 0, allowed = 0, denied = 0, failed = 0;
  std::string first_error{};
  std::vector<double> latency_us{};
  struct Pending {
    UniqueFd fd;
    Clock::time_point at;
  };
  std::unordered_map<std::uint64_t, Pending> inflight{};  // by request id
};

class Peer {
 public:
  Peer(const PeerOptions& opt, runtime::EventLoop& loop, Trust& trust, int control)
      : opt_(opt),
        loop_(loop),
        trust_(trust),
        control_(control),
        slots_(opt.channels),
        active_(std::min(opt.initial_channels, opt.channels)) {}

  Result<void> start() {
    auto agent = net::SocketAddress::parse(opt_.agent);
    if (!agent) return std::unexpected(agent.error());
    agent_.emplace(*agent);
    auto self = net::IpAddress::parse(opt_.self_ip);
    if (!self) return std::unexpected(self.error());
    self_.emplace(*self);
    auto workload = identity::SpiffeId::parse("spiffe://" + opt_.trust_domain + kClientWorkload);
    if (!workload) return std::unexpected(workload.error());
    workload_.emplace(*workload);
    if (opt_.primary) {
      if (auto ok = listen_for_agent(); !ok) return ok;
    }
    if (auto ok = loop_.add(control_, EPOLLIN, [this](std::uint32_t) { on_control(); }); !ok)
      return ok;
    loop_.on_round_end([this] { graveyard_.clear(); });
    pump();
    return {};
  }

 private:
  struct Slot {
    std::unique_ptr<attest::Channel> channel;
    Clock::time_point retry_at{};
  };

  // --- channels to the agent -------------------------------------------------

  void pump() {
    const auto now = Clock::now();
    std::size_t handshaking = 0;
    for (const auto& s : slots_)
      if (s.channel && !s.channel->ready()) ++handshaking;
    for (std::size_t i = 0; i < active_ && handshaking < kMaxHandshakes; ++i) {
      Slot& s = slots_[i];
      if (s.channel || now < s.retry_at) continue;
      open(i);
      ++handshaking;
    }
    loop_.after(kPumpInterval, [this] { pump(); });
  }

  void open(std::size_t i) {
    ++connects_;
    attest::Channel::Callbacks callbacks{
        .on_ready = [](attest::Channel&) {},
        .on_message = [this](attest::Channel&,
                             attest::Message&& message) { on_message(std::move(message)); },
        .on_closed = [this, i](attest::Channel&,
                               const attest::CloseReason& reason) { on_closed(i, reason); },
    };
    auto channel =
        attest::Channel::connect(loop_, *trust_.clients[i], *agent_, std::nullopt, callbacks);
    if (!channel) {
      slots_[i].retry_at = Clock::now() + kReopenDelay;
      return;
    }
    slots_[i].channel = std::move(*channel);
  }

  void on_closed(std::size_t i, const attest::CloseReason& reason) {
    ++closes_;
    if (reason.kind != Kind::kPeerClosed && reason.kind != Kind::kShutdown)
      last_close_ = std::string(attest::to_string(reason.kind)) + ": " + reason.detail;
    // Not destroyed from inside its own callback.
    graveyard_.push_back(std::move(slots_[i].channel));
    slots_[i].retry_at = Clock::now() + kReopenDelay;
    if (i == 0) fail_inflight("channel 0 closed");
  }

  std::size_t ready() const {
    return static_cast<std::size_t>(
        std::count_if(slots_.begin(), slots_.begin() + static_cast<std::ptrdiff_t>(active_),
                      [](const Slot& s) { return s.channel && s.channel->ready(); }));
  }

  // --- the agent's channel to us ---------------------------------------------

  Result<void> listen_for_agent() {
    listener_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(agent_->port());
    if (!listener_ ||
        ::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listener_.get(), 64) != 0)
      return fail_errno("listening on the agent port", errno);
    return loop_.add(listener_.get(), EPOLLIN, [this](std::uint32_t) { accept_agent(); });
  }

  void accept_agent() {
    for (;;) {
      sockaddr_in from{};
      socklen_t len = sizeof(from);
      UniqueFd fd(::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&from), &len,
                            SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (!fd) return;
      std::uint32_t words[4] = {from.sin_addr.s_addr, 0, 0, 0};
      net::SocketAddress remote(net::IpAddress::from_words(words, AF_INET), ntohs(from.sin_port));
      auto id = next_accepted_++;
      attest::Channel::Callbacks callbacks{
          .on_ready = [](attest::Channel&) {},
          .on_message =
              [](attest::Channel& channel, attest::Message&& message) {
                if (auto* ping = std::get_if<attest::Ping>(&message))
                  channel.send(attest::Pong{ping->nonce});
              },
          .on_closed =
              [this, id](attest::Channel&, const attest::CloseReason&) {
                if (auto it = accepted_.find(id); it != accepted_.end()) {
                  graveyard_.push_back(std::move(it->second));
                  accepted_.erase(it);
                }
              },
      };
      auto channel =
          attest::Channel::accept(loop_, *trust_.server, std::move(fd), remote, callbacks);
      if (channel) accepted_.emplace(id, std::move(*channel));
    }
  }

  // --- attested connections (rate runs) ----------------------------------------

  void on_message(attest::Message&& message) {
    auto* response = std::get_if<attest::AttestResponse>(&message);
    if (!response || !rate_) return;
    auto it = rate_->inflight.find(response->request_id);
    if (it == rate_->inflight.end()) return;
    auto us = std::chrono::duration<double, std::micro>(Clock::now() - it->second.at).count();
    rate_->latency_us.push_back(us);
    (response->verdict == TF_VERDICT_ALLOW ? rate_->allowed : rate_->denied) += 1;
    rate_->inflight.erase(it);  // closes the client with a reset
  }

  void fail_inflight(const std::string& why) {
    if (!rate_ || rate_->inflight.empty()) return;
    rate_->failed += rate_->inflight.size();
    if (rate_->first_error.empty()) rate_->first_error = why;
    rate_->inflight.clear();
  }

  Result<void> make_connection() {
    auto fd = tcp_socket();
    if (!fd) return std::unexpected(fd.error());
    if (auto ok = set_abortive_close(fd->get()); !ok) return ok;
    sockaddr_storage addr{};
    socklen_t len = rate_->target.to_sockaddr(addr);
    if (::connect(fd->get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
      return fail_errno("connect to " + rate_->target.str(), errno);
    sockaddr_in local{};
    socklen_t local_len = sizeof(local);
    if (::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&local), &local_len) != 0)
      return fail_errno("getsockname", errno);
    attest::ConnTuple tuple;
    tuple.family = attest::Family::kIpv4;
    tuple.local_addr = self_->bytes();
    tuple.local_port = ntohs(local.sin_port);
    tuple.remote_addr = rate_->target.ip().bytes();
    tuple.remote_port = rate_->target.port();
    Slot& primary = slots_[0];
    if (!primary.channel || !primary.channel->ready())
      return fail(Errc::kIo, "channel 0 is not ready");
    const std::uint64_t id = next_request_++;
    if (!primary.channel->send(attest::AttestRequest{id, tuple, *workload_}))
      return fail(Errc::kIo, "channel 0 refused the request");
    rate_->inflight.emplace(id, RateRun::Pending{std::move(*fd), Clock::now()});
    return {};
  }

  void rate_tick() {
    if (!rate_) return;
    const auto now = Clock::now();
    if (now < rate_->stop_making) {
      const double elapsed = std::chrono::duration<double>(now - rate_->started).count();
      const auto due = static_cast<std::uint64_t>(elapsed * rate_->per_second);
      while (rate_->made < due) {
        ++rate_->made;
        if (auto ok = make_connection(); !ok) {
          ++rate_->failed;
          if (rate_->first_error.empty()) rate_->first_error = ok.error().message;
        }
      }
    } else if (rate_->inflight.empty() || now > rate_->stop_making + kRateDrain) {
      finish_rate();
      return;
    }
    loop_.after(kRateTick, [this] { rate_tick(); });
  }

  void finish_rate() {
    const double seconds = std::chrono::duration<double>(Clock::now() - rate_->started).count();
    auto sorted = rate_->latency_us;
    std::sort(sorted.begin(), sorted.end());
    char line[512];
    std::snprintf(line, sizeof(line),
                  "ok made=%llu allowed=%llu denied=%llu unanswered=%llu failed=%llu seconds=%.3f "
                  "p50_us=%.0f p99_us=%.0f first_error=%s",
                  static_cast<unsigned long long>(rate_->made),
                  static_cast<unsigned long long>(rate_->allowed),
                  static_cast<unsigned long long>(rate_->denied),
                  static_cast<unsigned long long>(rate_->inflight.size()),
                  static_cast<unsigned long long>(rate_->failed), seconds, percentile(sorted, 50),
                  percentile(sorted, 99),
                  rate_->first_error.empty() ? "-" : rate_->first_error.c_str());
    rate_.reset();
    answer(control_, line);
  }

  // --- commands ----------------------------------------------------------------

  void on_control() {
    char chunk[256];
    ssize_t n = ::read(control_, chunk, sizeof(chunk));
    if (n <= 0) {
      loop_.stop();
      return;
    }
    input_.append(chunk, static_cast<std::size_t>(n));
    for (auto nl = input_.find('\n'); nl != std::string::npos; nl = input_.find('\n')) {
      std::string command = input_.substr(0, nl);
      input_.erase(0, nl + 1);
      run(command);
    }
  }

  void run(const std::string& command) {
    std::vector<std::string> words;
    for (std::size_t at = 0; at < command.size();) {
      auto end = command.find(' ', at);
      if (end == std::string::npos) end = command.size();
      words.push_back(command.substr(at, end - at));
      at = end + 1;
    }
    if (words.empty() || words[0] == "quit") {
      loop_.stop();
    } else if (words[0] == "channels" && words.size() == 2) {
      set_active(std::stoull(words[1]));
      answer(control_, "ok");
    } else if (words[0] == "wait" && words.size() == 2) {
      wait_until_ = Clock::now() + milliseconds(std::stoll(words[1]));
      check_wait();
    } else if (words[0] == "rate" && words.size() == 4 && opt_.primary && !rate_) {
      auto target = net::SocketAddress::parse(words[1]);
      if (!target) {
        answer(control_, "err " + target.error().message);
        return;
      }
      rate_.emplace(RateRun{*target});
      rate_->per_second = std::stod(words[2]);
      rate_->seconds = std::stod(words[3]);
      rate_->started = Clock::now();
      rate_->stop_making = rate_->started + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(rate_->seconds));
      rate_tick();
    } else {
      answer(control_, "err cannot run '" + command + "'");
    }
  }

  // Keeps channels 0..n-1 open (at most one per SVID minted); closes the rest.
  void set_active(std::size_t n) {
    active_ = std::min(n, slots_.size());
    for (std::size_t i = active_; i < slots_.size(); ++i)
      if (slots_[i].channel)
        slots_[i].channel->close({Kind::kShutdown, "fewer channels wanted", {}});
  }

  void check_wait() {
    if (!wait_until_) return;
    if (ready() == active_ || Clock::now() >= *wait_until_) {
      wait_until_.reset();
      answer(control_,
             "ok ready=" + std::to_string(ready()) + " wanted=" + std::to_string(active_) +
                 " connects=" + std::to_string(connects_) + " closes=" + std::to_string(closes_) +
                 " last_failure=" + (last_close_.empty() ? "-" : last_close_));
      return;
    }
    loop_.after(milliseconds(20), [this] { check_wait(); });
  }

  const PeerOptions& opt_;
  runtime::EventLoop& loop_;
  Trust& trust_;
  int control_;
  std::optional<net::SocketAddress> agent_;
  std::optional<net::IpAddress> self_;
  std::optional<identity::SpiffeId> workload_;
  std::vector<Slot> slots_;
  std::size_t active_ = 0;  // channels 0..active_-1 are kept open
  std::vector<std::unique_ptr<attest::Channel>> graveyard_;
  UniqueFd listener_;
  std::unordered_map<std::uint64_t, std::unique_ptr<attest::Channel>> accepted_;
  std::uint64_t next_accepted_ = 1;
  std::uint64_t next_request_ = 1;
  std::uint64_t connects_ = 0, closes_ = 0;
  std::string last_close_;
  std::string input_;
  std::optional<Clock::time_point> wait_until_;
  std::optional<RateRun> rate_;
};

}  // namespace

int peer_main(int control, const PeerOptions& options) {
  // Each attested connection holds one descriptor until its answer; the
  // channels one each.
  (void)raise_fd_limit(19'000);
  auto trust = make_trust(options);
  if (!trust) {
    answer(control, "err " + trust.error().message);
    return 1;
  }
  auto loop = runtime::EventLoop::create();
  if (!loop) {
    answer(control, "err " + loop.error().message);
    return 1;
  }
  Peer peer(options, *loop, **trust, control);
  if (auto ok = peer.start(); !ok) {
    answer(control, "err " + ok.error().message);
    return 1;
  }
  answer(control, "ok");
  auto ran = loop->run(milliseconds(100));
  return ran ? 0 : 1;
}

}  // namespace trustfence::bench::scale
