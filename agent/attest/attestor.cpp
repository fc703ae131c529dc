#include "trustfence/attest/attestor.hpp"

#include <ifaddrs.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "trustfence/common/verdict.hpp"
#include "trustfence/datapath/format.hpp"

namespace trustfence::attest {
namespace {

using Kind = CloseReason::Kind;

bool is_loopback(const net::IpAddress& address) {
  const auto& b = address.bytes();
  if (address.is_v4()) return b[12] == 127;
  return std::all_of(b.begin(), b.begin() + 15, [](std::uint8_t x) { return x == 0; }) &&
         b[15] == 1;
}

}  // namespace

Attestor::Attestor(runtime::EventLoop& loop, tls::TlsContext& client, tls::TlsContext& server,
                   identity::Interner& interner, WorkloadIdentities& workloads, Options options)
    : loop_(loop),
      client_(&client),
      server_(&server),
      interner_(interner),
      workloads_(&workloads),
      options_(std::move(options)),
      policy_(options_.rules) {}

Attestor::~Attestor() {
  for (auto& [cookie, conn] : conns_)
    if (conn.deadline) loop_.cancel(*conn.deadline);
  for (auto& [tuple, parked] : parked_) loop_.cancel(parked.timer);
}

// --- connections -----------------------------------------------------------

void Attestor::on_new(datapath::Cookie cookie, const tf_conn& tracked) {
  if (conns_.contains(cookie)) return;
  auto local = from_abi(tracked.tuple);
  if (!local) {
    spdlog::warn("cookie {}: {}", cookie, local.error().message);
    return;
  }
  auto [it, inserted] = conns_.emplace(cookie, Conn{tracked, *local, false, false, std::nullopt});
  by_tuple_[*local] = cookie;
  Conn& conn = it->second;
  if (tracked.verdict != TF_VERDICT_PENDING) {
    conn.decided = true;  // exempt, or decided before a restart
    return;
  }
  auto timeout = options_.attestation.timeout;
  conn.deadline = loop_.after(timeout, [this, cookie, timeout] {
    if (auto* c = pending(cookie)) {
      c->deadline.reset();
      if (c->closed) {  // gone, and nobody ever told us about it
        forget(cookie);
        return;
      }
      decide(cookie, TF_VERDICT_DENY, TF_REASON_ATTESTATION_TIMEOUT, std::nullopt,
             "not attested within " + std::to_string(timeout.count()) + " ms");
    }
  });
  if (tracked.direction == TF_DIRECTION_OUTBOUND)
    start_outbound(cookie, conn);
  else
    start_inbound(cookie, conn);
}

std::optional<tf_conn> Attestor::on_close(datapath::Cookie cookie) {
  auto it = conns_.find(cookie);
  if (it == conns_.end()) return std::nullopt;
  // A socket the other side cut before we decided (its agent was faster)
  // still gets its verdict, for the record: kept until then or its deadline.
  if (!it->second.decided && it->second.deadline) {
    it->second.closed = true;
    return std::nullopt;
  }
  std::optional<tf_conn> known;
  if (it->second.decided) known = it->second.conn;
  forget(cookie);
  return known;
}

void Attestor::forget(datapath::Cookie cookie) {
  auto it = conns_.find(cookie);
  if (it == conns_.end()) return;
  if (it->second.deadline) loop_.cancel(*it->second.deadline);
  auto t = by_tuple_.find(it->second.local);
  if (t != by_tuple_.end() && t->second == cookie) by_tuple_.erase(t);
  conns_.erase(it);
}

Attestor::Conn* Attestor::pending(datapath::Cookie cookie) {
  auto it = conns_.find(cookie);
  if (it == conns_.end() || it->second.decided) return nullptr;
  return &it->second;
}

void Attestor::start_outbound(datapath::Cookie cookie, Conn& conn) {
  auto other = by_tuple_.find(conn.local.mirrored());
  if (other != by_tuple_.end()) {
    decide_same_node(cookie, other->second);
    return;
  }
  auto remote = net::IpAddress::from_bytes(conn.local.remote_addr);
  // A server on this node: its socket's event pairs them (or the deadline).
  if (is_local_address(remote)) return;
  auto agent = route(remote);
  PeerSlot& slot = slot_for(agent);
  if (slot.channel && slot.channel->ready()) {
    send_request(slot, agent, cookie);
  } else if (!slot.channel && slot.last_failure && runtime::SteadyClock::now() < slot.retry_at) {
    decide_from_failure(cookie, *slot.last_failure);
  } else {
    slot.waiting_outbound.push_back(cookie);
    connect(agent, slot);
  }
}

void Attestor::start_inbound(datapath::Cookie cookie, Conn& conn) {
  auto other = by_tuple_.find(conn.local.mirrored());
  if (other != by_tuple_.end()) {
    decide_same_node(other->second, cookie);
    return;
  }
  // The request may have come first.
  if (auto p = parked_.find(conn.local); p != parked_.end()) {
    Parked parked = std::move(p->second);
    parked_.erase(p);
    loop_.cancel(parked.timer);
    if (Channel* channel = channel_by_id(parked.channel_id))
      answer(*channel, parked.request, cookie);
    return;
  }
  auto remote = net::IpAddress::from_bytes(conn.local.remote_addr);
  if (is_local_address(remote)) return;
  // The client's agent will send the attestation over its own channel; our
  // channel to it tells promptly whether it has an agent at all and
  // whether its SVID holds.
  auto agent = route(remote);
  PeerSlot& slot = slot_for(agent);
  if (slot.channel && slot.channel->ready()) return;
  if (!slot.channel && slot.last_failure && runtime::SteadyClock::now() < slot.retry_at) {
    decide_from_failure(cookie, *slot.last_failure);
    return;
  }
  slot.waiting_inbound.push_back(cookie);
  connect(agent, slot);
}

net::SocketAddress Attestor::route(const net::IpAddress& remote) const {
  for (const auto& route : options_.attestation.peers)
    if (route.cidr.contains(remote)) return route.agent;
  return net::SocketAddress(remote, options_.attestation.listen.port());
}

bool Attestor::is_local_address(const net::IpAddress& address) {
  if (is_loopback(address)) return true;
  if (local_addresses_.contains(address)) return true;
  auto now = runtime::SteadyClock::now();
  if (now - local_addresses_at_ < std::chrono::seconds(1)) return false;
  local_addresses_at_ = now;
  local_addresses_.clear();
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return false;
  for (ifaddrs* ifa = list; ifa; ifa = ifa->ifa_next) {
    if (!ifa->ifa_addr) continue;
    std::uint32_t words[4] = {};
    if (ifa->ifa_addr->sa_family == AF_INET) {
      words[0] = reinterpret_cast<sockaddr_in*>(ifa->ifa_addr)->sin_addr.s_addr;
      local_addresses_.insert(net::IpAddress::from_words(words, AF_INET));
    } else if (ifa->ifa_addr->sa_family == AF_INET6) {
      std::memcpy(words, &reinterpret_cast<sockaddr_in6*>(ifa->ifa_addr)->sin6_addr, 16);
      local_addresses_.insert(net::IpAddress::from_words(words, AF_INET6));
    }
  }
  ::freeifaddrs(list);
  return local_addresses_.contains(address);
}

// --- channels we open --------------------------------------------------------

Attestor::PeerSlot& Attestor::slot_for(const net::SocketAddress& agent) { return peers_[agent]; }

void Attestor::connect(const net::SocketAddress& agent, PeerSlot& slot) {
  if (slot.channel) return;  // connecting already
  Channel::Callbacks callbacks{
      .on_ready = [this, agent](Channel& channel) { on_channel_ready(agent, channel); },
      .on_message = [this](Channel& channel,
                           Message&& message) { on_message(channel, std::move(message)); },
      .on_closed = [this, agent](
                       Channel& channel,
                       const CloseReason& reason) { on_channel_closed(agent, channel, reason); },
  };
  auto channel = Channel::connect(loop_, *client_, agent, std::exchange(slot.session, std::nullopt),
                                  std::move(callbacks), options_.limits.channel);
  if (!channel) {
    CloseReason reason{Kind::kConnectFailed, channel.error().message, {}};
    spdlog::warn("channel to {}: {}", agent.str(), reason.detail);
    slot.last_failure = reason;
    slot.retry_at = runtime::SteadyClock::now() + options_.limits.min_backoff;
    for (auto cookie : std::exchange(slot.waiting_outbound, {}))
      decide_from_failure(cookie, reason);
    for (auto cookie : std::exchange(slot.waiting_inbound, {})) decide_from_failure(cookie, reason);
    return;
  }
  slot.channel = std::move(*channel);
}

void Attestor::on_channel_ready(const net::SocketAddress& agent, Channel& channel) {
  PeerSlot& slot = peers_[agent];
  slot.backoff = std::chrono::milliseconds(0);
  slot.last_failure.reset();
  slot.last_ready = runtime::SteadyClock::now();
  spdlog::info("channel to {} ready: peer {}{}", agent.str(), channel.peer()->id.str(),
               channel.resumed() ? " (resumed)" : "");
  slot.waiting_inbound.clear();  // their attestations come from the peer
  if (!slot.revalidating.empty())
    spdlog::info("peer agent {} still verifies: {} connections keep their verdict",
                 channel.peer()->id.str(), slot.revalidating.size());
  slot.revalidating.clear();
  for (auto cookie : std::exchange(slot.waiting_outbound, {}))
    if (pending(cookie)) send_request(slot, agent, cookie);
}

void Attestor::send_request(PeerSlot& slot, const net::SocketAddress& agent,
                            datapath::Cookie cookie) {
  Conn* conn = pending(cookie);
  if (!conn) return;
  std::uint64_t id = next_request_id_++;
  inflight_.emplace(id, Inflight{cookie, slot.channel->id(), agent});
  ++counters_.requests_sent;
  slot.channel->send(AttestRequest{id, conn->local, workloads_->lookup(conn->conn.cgroup_id)});
}

void Attestor::on_channel_closed(const net::SocketAddress& agent, Channel& channel,
                                 const CloseReason& reason) {
  ++counters_.channel_closes[std::string(to_string(reason.kind))];
  PeerSlot& slot = peers_[agent];
  // TLS 1.3: a client is "ready" before the server checked its SVID, and
  // learns of a rejection on its first read (kHandshakeFailed).
  bool was_ready = channel.was_ready() && reason.kind != Kind::kHandshakeFailed &&
                   reason.kind != Kind::kPeerRejected;
  if (auto session = channel.session()) slot.session = std::move(session);
  if (slot.channel.get() == &channel) closed_.push_back(std::move(slot.channel));

  // Requests in flight on it are sent again on a new channel; their
  // deadlines still bound them.
  std::vector<datapath::Cookie> resend;
  for (auto it = inflight_.begin(); it != inflight_.end();) {
    if (it->second.channel_id == channel.id()) {
      resend.push_back(it->second.cookie);
      it = inflight_.erase(it);
    } else {
      ++it;
    }
  }
  if (was_ready && reason.kind != Kind::kViolation && reason.kind != Kind::kOverflow) {
    spdlog::info("channel to {} closed ({}: {}); reconnecting", agent.str(), to_string(reason.kind),
                 reason.detail);
    for (auto cookie : resend) slot.waiting_outbound.push_back(cookie);
    if (!slot.waiting_outbound.empty()) connect(agent, slot);
    return;
  }
  // Refused, reset mid-handshake, timed out: a peer agent ready moments ago
  // is restarting, not absent. (One that rejects our SVID now waits out the
  // deadline instead of failing at once; a verification failure of its own
  // SVID still denies at once.)
  bool restarting = reason.kind != Kind::kPeerRejected && reason.kind != Kind::kViolation &&
                    reason.kind != Kind::kOverflow && slot.last_ready &&
                    runtime::SteadyClock::now() - *slot.last_ready < options_.limits.restart_grace;
  if (restarting) {
    // Its connections keep waiting (their deadlines still bound them).
    for (auto cookie : resend) slot.waiting_outbound.push_back(cookie);
    spdlog::info("peer agent {} refuses connections: restarting? retrying in {} ms", agent.str(),
                 options_.limits.min_backoff.count());
    loop_.after(options_.limits.min_backoff, [this, agent] {
      PeerSlot& s = peers_[agent];
      if (!s.waiting_outbound.empty() || !s.waiting_inbound.empty()) connect(agent, s);
    });
    return;
  }
  spdlog::warn("channel to {} failed ({}: {})", agent.str(), to_string(reason.kind), reason.detail);
  slot.backoff =
      std::clamp(slot.backoff * 2, options_.limits.min_backoff, options_.limits.max_backoff);
  slot.retry_at = runtime::SteadyClock::now() + slot.backoff;
  slot.last_failure = reason;
  for (auto cookie : resend) decide_from_failure(cookie, reason);
  for (auto cookie : std::exchange(slot.waiting_outbound, {})) decide_from_failure(cookie, reason);
  for (auto cookie : std::exchange(slot.waiting_inbound, {})) decide_from_failure(cookie, reason);
  auto revalidating = std::exchange(slot.revalidating, {});
  if (reason.kind == Kind::kPeerRejected) {
    for (auto cookie : revalidating)
      redecide(cookie, TF_VERDICT_DENY, TF_REASON_REVOKED,
               "peer agent no longer verifies: " + reason.detail);
  } else if (!revalidating.empty()) {
    spdlog::warn("could not re-verify peer agent {} ({}); {} connections keep their verdict",
                 agent.str(), reason.detail, revalidating.size());
  }
}

// --- channels peers open -----------------------------------------------------

void Attestor::accept(UniqueFd fd, const net::SocketAddress& from) {
  std::size_t handshaking = 0, from_source = 0;
  for (const auto& [id, channel] : accepted_) {
    if (channel->state() != Channel::State::kHandshaking) continue;
    ++handshaking;
    if (channel->remote().ip() == from.ip()) ++from_source;
  }
  // Closing at once keeps a flood of handshakes from taking the loop away
  // from the channels already established.
  if (accepted_.size() >= options_.limits.max_accepted_channels ||
      handshaking >= options_.limits.max_handshakes ||
      from_source >= options_.limits.max_handshakes_per_source) {
    ++counters_.handshakes_refused;
    spdlog::debug("refused a channel from {}: handshake limits reached", from.str());
    return;
  }
  Channel::Callbacks callbacks{
      .on_ready =
          [this](Channel& channel) {
            spdlog::info("channel from {} ready: peer {}{}", channel.remote().str(),
                         channel.peer()->id.str(), channel.resumed() ? " (resumed)" : "");
            // That agent is up (again): stop backing off from it.
            for (auto& [agent, slot] : peers_) {
              if (agent.ip() != channel.remote().ip() || !slot.last_failure) continue;
              slot.last_failure.reset();
              slot.backoff = std::chrono::milliseconds(0);
            }
          },
      .on_message = [this](Channel& channel,
                           Message&& message) { on_message(channel, std::move(message)); },
      .on_closed = [this](Channel& channel,
                          const CloseReason& reason) { on_accepted_closed(channel, reason); },
  };
  auto channel = Channel::accept(loop_, *server_, std::move(fd), from, std::move(callbacks),
                                 options_.limits.channel);
  if (!channel) {
    spdlog::warn("channel from {}: {}", from.str(), channel.error().message);
    return;
  }
  auto id = (*channel)->id();
  accepted_.emplace(id, std::move(*channel));
}

void Attestor::on_accepted_closed(Channel& channel, const CloseReason& reason) {
  ++counters_.channel_closes[std::string(to_string(reason.kind))];
  if (reason.kind == Kind::kPeerClosed || reason.kind == Kind::kShutdown)
    spdlog::debug("channel from {} closed: {}", channel.remote().str(), reason.detail);
  else
    spdlog::warn("channel from {} closed ({}: {})", channel.remote().str(), to_string(reason.kind),
                 reason.detail);
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (it->second.channel_id == channel.id()) {
      loop_.cancel(it->second.timer);
      it = parked_.erase(it);
    } else {
      ++it;
    }
  }
  auto it = accepted_.find(channel.id());
  if (it != accepted_.end()) {
    closed_.push_back(std::move(it->second));
    accepted_.erase(it);
  }
}

Channel* Attestor::channel_by_id(std::uint64_t id) {
  if (auto it = accepted_.find(id); it != accepted_.end() && it->second->ready())
    return it->second.get();
  for (auto& [agent, slot] : peers_)
    if (slot.channel && slot.channel->id() == id && slot.channel->ready())
      return slot.channel.get();
  return nullptr;
}

void Attestor::collect() { closed_.clear(); }

// --- messages ----------------------------------------------------------------

void Attestor::on_message(Channel& channel, Message&& message) {
  if (auto* request = std::get_if<AttestRequest>(&message)) {
    handle_request(channel, *request);
  } else if (auto* response = std::get_if<AttestResponse>(&message)) {
    handle_response(channel, *response);
  } else if (auto* ping = std::get_if<Ping>(&message)) {
    channel.send(Pong{ping->nonce});
  }
}

void Attestor::handle_request(Channel& channel, const AttestRequest& request) {
  const auto& peer_td = channel.peer()->id.trust_domain();
  auto refuse = [&](tf_reason reason) {
    channel.send(AttestResponse{request.request_id, std::nullopt, TF_VERDICT_DENY, reason});
  };
  if (!request.workload_id.member_of(peer_td)) {
    ++counters_.foreign_vouching;
    spdlog::warn("agent {} ({}) vouched for {}, outside its trust domain: refused",
                 channel.peer()->id.str(), channel.remote().str(), request.workload_id.str());
    auto local = by_tuple_.find(request.tuple.mirrored());
    if (local != by_tuple_.end() && pending(local->second))
      decide(local->second, TF_VERDICT_DENY, TF_REASON_BAD_CHAIN, request.workload_id,
             "agent " + channel.peer()->id.str() + " vouched outside its trust domain");
    refuse(TF_REASON_BAD_CHAIN);
    return;
  }
  // Only the agent answering for the client's address may attest for it.
  auto client = net::IpAddress::from_bytes(request.tuple.local_addr);
  if (route(client).ip() != channel.remote().ip()) {
    ++counters_.wrong_agent;
    spdlog::warn("agent {} at {} attested for a client at {}, which it does not answer for",
                 channel.peer()->id.str(), channel.remote().ip().str(), client.str());
    refuse(TF_REASON_BAD_CHAIN);
    return;
  }
  auto local = by_tuple_.find(request.tuple.mirrored());
  if (local != by_tuple_.end() && conns_.at(local->second).conn.direction == TF_DIRECTION_INBOUND) {
    answer(channel, request, local->second);
    return;
  }
  // Our end may not be established yet: wait for its event, bounded.
  if (parked_.size() >= options_.limits.max_parked_requests) {
    ++counters_.unmatched_requests;
    refuse(TF_REASON_ATTESTATION_TIMEOUT);
    return;
  }
  auto wait = std::min(options_.attestation.timeout, std::chrono::milliseconds(1000));
  auto key = request.tuple.mirrored();
  auto channel_id = channel.id();
  auto request_id = request.request_id;
  auto timer = loop_.after(wait, [this, key, channel_id, request_id] {
    auto range = parked_.equal_range(key);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second.channel_id != channel_id || it->second.request.request_id != request_id)
        continue;
      AttestRequest request = it->second.request;
      parked_.erase(it);
      Channel* c = channel_by_id(channel_id);
      // No new socket came: the closed one it names gets its verdict.
      auto local = by_tuple_.find(key);
      if (c && local != by_tuple_.end() &&
          conns_.at(local->second).conn.direction == TF_DIRECTION_INBOUND) {
        answer(*c, request, local->second);
        return;
      }
      ++counters_.unmatched_requests;
      if (c)
        c->send(AttestResponse{request_id, std::nullopt, TF_VERDICT_DENY,
                               TF_REASON_ATTESTATION_TIMEOUT});
      return;
    }
  });
  parked_.emplace(key, Parked{channel_id, request, timer});
}

void Attestor::answer(Channel& channel, const AttestRequest& request, datapath::Cookie cookie) {
  ++counters_.requests_served;
  const auto cgroup_id = conns_.at(cookie).conn.cgroup_id;
  if (!conns_.at(cookie).decided)
    decide_by_policy(cookie, request.workload_id, "attested by agent " + channel.peer()->id.str());
  // Our verdict as written: just now (the entry may be gone if the socket
  // closed meanwhile), or before (e.g. timed out).
  tf_verdict verdict = TF_VERDICT_DENY;
  tf_reason reason = TF_REASON_ATTESTATION_TIMEOUT;
  if (auto it = conns_.find(cookie); it != conns_.end() && it->second.decided) {
    verdict = static_cast<tf_verdict>(it->second.conn.verdict);
    reason = static_cast<tf_reason>(it->second.conn.reason);
  } else {
    for (auto d = decided_.rbegin(); d != decided_.rend(); ++d) {
      if (d->cookie != cookie) continue;
      verdict = d->update.verdict;
      reason = d->update.reason;
      break;
    }
  }
  if (options_.audit) verdict = TF_VERDICT_ALLOW;
  if (options_.write_decisions) options_.write_decisions();
  channel.send(AttestResponse{request.request_id, workloads_->lookup(cgroup_id), verdict, reason});
}

void Attestor::handle_response(Channel& channel, const AttestResponse& response) {
  auto it = inflight_.find(response.request_id);
  if (it == inflight_.end() || it->second.channel_id != channel.id()) return;
  auto cookie = it->second.cookie;
  inflight_.erase(it);
  ++counters_.responses;
  if (!pending(cookie)) return;
  const auto& peer_agent = channel.peer()->id;
  if (!response.workload_id) {
    decide(cookie, TF_VERDICT_DENY,
           response.reason == TF_REASON_NONE ? TF_REASON_ATTESTATION_TIMEOUT : response.reason,
           std::nullopt, "agent " + peer_agent.str() + " holds no such connection");
    return;
  }
  if (!response.workload_id->member_of(peer_agent.trust_domain())) {
    ++counters_.foreign_vouching;
    decide(cookie, TF_VERDICT_DENY, TF_REASON_BAD_CHAIN, response.workload_id,
           "agent " + peer_agent.str() + " vouched outside its trust domain");
    return;
  }
  auto decision = policy_.decide(response.workload_id);
  if (decision.verdict == TF_VERDICT_ALLOW && response.verdict == TF_VERDICT_DENY) {
    decide(cookie, TF_VERDICT_DENY, response.reason, response.workload_id,
           "denied by the peer's agent " + peer_agent.str());
    return;
  }
  decide(cookie, decision.verdict, decision.reason, response.workload_id,
         decision.matched_rule.empty() ? "attested by agent " + peer_agent.str()
                                       : decision.matched_rule);
}

// --- decisions -----------------------------------------------------------------

void Attestor::decide_same_node(datapath::Cookie outbound, datapath::Cookie inbound) {
  Conn* out = pending(outbound);
  Conn* in = pending(inbound);
  ++counters_.decided_locally;
  // Copy the IDs: lookup may rescan and the Conn pointers stay valid.
  auto server_id = workloads_->lookup(conns_.at(inbound).conn.cgroup_id);
  auto client_id = workloads_->lookup(conns_.at(outbound).conn.cgroup_id);
  if (out) decide_by_policy(outbound, server_id, "same node");
  if (in) decide_by_policy(inbound, client_id, "same node");
}

void Attestor::decide_by_policy(datapath::Cookie cookie, const identity::SpiffeId& peer,
                                std::string detail) {
  auto decision = policy_.decide(peer);
  if (!decision.matched_rule.empty()) detail += "; " + decision.matched_rule;
  decide(cookie, decision.verdict, decision.reason, peer, std::move(detail));
}

void Attestor::decide_from_failure(datapath::Cookie cookie, const CloseReason& reason) {
  if (!pending(cookie)) return;
  switch (reason.kind) {
    case Kind::kConnectFailed:
      if (options_.attestation.peer_authentication == config::PeerAuthentication::kPermissive)
        decide(cookie, TF_VERDICT_ALLOW, TF_REASON_PLAINTEXT_PERMISSIVE, std::nullopt,
               "no peer agent (" + reason.detail + "), permissive");
      else
        decide(cookie, TF_VERDICT_DENY, TF_REASON_NO_PEER_AGENT, std::nullopt,
               "no peer agent: " + reason.detail);
      return;
    case Kind::kPeerRejected:
      decide(cookie, TF_VERDICT_DENY, reason.verify ? reason.verify->reason : TF_REASON_BAD_CHAIN,
             std::nullopt, "peer agent's SVID rejected: " + reason.detail);
      return;
    default:
      decide(cookie, TF_VERDICT_DENY, TF_REASON_ATTESTATION_TIMEOUT, std::nullopt,
             "no attestation channel (" + std::string(to_string(reason.kind)) + ": " +
                 reason.detail + ")");
      return;
  }
}

void Attestor::decide(datapath::Cookie cookie, tf_verdict verdict, tf_reason reason,
                      const std::optional<identity::SpiffeId>& peer, std::string detail) {
  Conn* conn = pending(cookie);
  if (!conn) return;
  conn->decided = true;
  if (conn->deadline) loop_.cancel(*conn->deadline);
  conn->deadline.reset();
  datapath::VerdictUpdate update{
      .verdict = verdict,
      .reason = reason,
      .peer_id = peer ? interner_.intern(peer->str()) : 0,
      .peer_trust_domain = peer ? interner_.intern(peer->trust_domain().name()) : 0,
      .generation = options_.generation,
      .decided_ns = datapath::monotonic_ns(),
  };
  decided_.push_back(Decided{cookie, conn->closed, conn->conn, update, peer ? peer->str() : "",
                             std::move(detail)});
  conn->conn.verdict = static_cast<std::uint8_t>(verdict);
  conn->conn.reason = static_cast<std::uint8_t>(reason);
  conn->conn.peer_id = update.peer_id;
  conn->conn.peer_trust_domain = update.peer_trust_domain;
  if (conn->closed) forget(cookie);
}

// --- reload --------------------------------------------------------------------

void Attestor::reconfigure(Options options, tls::TlsContext& client, tls::TlsContext& server,
                           WorkloadIdentities& workloads,
                           const std::set<identity::TrustDomain>& weakened_domains) {
  options_ = std::move(options);
  policy_ = policy::Policy(options_.rules);
  client_ = &client;
  server_ = &server;
  workloads_ = &workloads;
  // New channels for the new SVID and bundles; requests in flight on the
  // old ones are sent again on the new.
  for (auto& [agent, slot] : peers_) {
    slot.session.reset();
    slot.last_failure.reset();
    slot.backoff = std::chrono::milliseconds(0);
    if (slot.channel) slot.channel->close({Kind::kShutdown, "configuration reloaded", {}});
  }
  std::vector<std::uint64_t> accepted_ids;
  for (const auto& [id, channel] : accepted_) accepted_ids.push_back(id);
  for (auto id : accepted_ids)
    if (auto it = accepted_.find(id); it != accepted_.end())
      it->second->close({Kind::kShutdown, "configuration reloaded", {}});

  // Pointers stay valid: nothing below erases an open decided connection
  // (only closed pending ones, when a connect fails at once).
  std::vector<std::pair<datapath::Cookie, Conn*>> allowed;
  allowed.reserve(conns_.size());
  for (auto& [cookie, conn] : conns_)
    if (conn.decided && !conn.closed && conn.conn.verdict == TF_VERDICT_ALLOW)
      allowed.emplace_back(cookie, &conn);
  decided_.reserve(decided_.size() + allowed.size());
  bool strict = options_.attestation.peer_authentication == config::PeerAuthentication::kStrict;
  // Many connections share a peer: its policy is decided once per reload.
  struct PeerVerdict {
    bool known = false;  // its name is known here and parses
    bool allowed = false;
    tf_reason reason = TF_REASON_NONE;
    bool weakened = false;
    std::string revoked;  // why, when no longer allowed
  };
  std::unordered_map<std::uint32_t, PeerVerdict> by_peer;
  for (auto [cookie, conn_ptr] : allowed) {
    Conn& conn = *conn_ptr;
    auto reason = static_cast<tf_reason>(conn.conn.reason);
    if (reason == TF_REASON_EXEMPT) continue;
    if (reason == TF_REASON_PLAINTEXT_PERMISSIVE) {
      if (strict)
        redecide(cookie, conn, TF_VERDICT_DENY, TF_REASON_REVOKED,
                 "peer-authentication is strict now and the peer has no agent");
      else
        redecide(cookie, conn, TF_VERDICT_ALLOW, reason, "still permissive");
      continue;
    }
    auto [entry, fresh] = by_peer.try_emplace(conn.conn.peer_id);
    PeerVerdict& verdict = entry->second;
    if (fresh) {
      auto name = interner_.name(conn.conn.peer_id);
      auto peer = name ? identity::SpiffeId::parse(*name)
                       : Result<identity::SpiffeId>(std::unexpected(Error{Errc::kNotFound, ""}));
      if (peer) {
        auto decision = policy_.decide(*peer);
        verdict.known = true;
        verdict.allowed = decision.verdict == TF_VERDICT_ALLOW;
        verdict.reason = decision.reason;
        verdict.weakened = weakened_domains.contains(peer->trust_domain());
        if (!verdict.allowed)
          verdict.revoked = peer->str() + " is no longer allowed (" +
                            std::string(trustfence::to_string(decision.reason)) + ")";
      }
    }
    if (!verdict.known) {
      // Decided before this agent started: the name is not known here.
      spdlog::warn("cookie {}: peer identity unknown to this agent; verdict kept", cookie);
      continue;
    }
    if (!verdict.allowed) {
      redecide(cookie, conn, TF_VERDICT_DENY, TF_REASON_REVOKED, verdict.revoked);
      continue;
    }
    redecide(cookie, conn, TF_VERDICT_ALLOW, verdict.reason, "still allowed");
    if (verdict.weakened) {
      auto agent = route(net::IpAddress::from_bytes(conn.local.remote_addr));
      PeerSlot& slot = slot_for(agent);
      slot.revalidating.push_back(cookie);
      connect(agent, slot);
    }
  }
}

void Attestor::redecide(datapath::Cookie cookie, tf_verdict verdict, tf_reason reason,
                        std::string detail) {
  auto it = conns_.find(cookie);
  if (it == conns_.end() || it->second.closed) return;
  redecide(cookie, it->second, verdict, reason, std::move(detail));
}

void Attestor::redecide(datapath::Cookie cookie, Conn& conn, tf_verdict verdict, tf_reason reason,
                        std::string detail) {
  if (conn.conn.verdict == TF_VERDICT_DENY) return;  // revoked already
  datapath::VerdictUpdate update{
      .verdict = verdict,
      .reason = reason,
      .peer_id = conn.conn.peer_id,
      .peer_trust_domain = conn.conn.peer_trust_domain,
      .generation = options_.generation,
      .decided_ns = datapath::monotonic_ns(),
  };
  // Standing as it was: the new generation only, without what a change
  // carries for the operator (peer name, detail, history).
  if (conn.conn.verdict == static_cast<std::uint8_t>(verdict) &&
      conn.conn.reason == static_cast<std::uint8_t>(reason)) {
    decided_.push_back(Decided{.cookie = cookie,
                               .closed = false,
                               .conn = conn.conn,
                               .update = update,
                               .peer = {},
                               .detail = {},
                               .refresh = true});
    return;
  }
  if (verdict == TF_VERDICT_DENY) ++counters_.revoked;
  decided_.push_back(Decided{cookie, false, conn.conn, update,
                             interner_.name(conn.conn.peer_id).value_or(""), std::move(detail)});
  conn.conn.verdict = static_cast<std::uint8_t>(verdict);
  conn.conn.reason = static_cast<std::uint8_t>(reason);
}

// --- stats ---------------------------------------------------------------------

nlohmann::json Attestor::stats() const {
  nlohmann::json channels = nlohmann::json::array();
  auto describe_channel = [](const Channel& c, const char* side) {
    static constexpr const char* kStates[] = {"connecting", "handshaking", "ready", "closed"};
    return nlohmann::json{{"side", side},
                          {"remote", c.remote().str()},
                          {"state", kStates[static_cast<int>(c.state())]},
                          {"peer_id", c.peer() ? nlohmann::json(c.peer()->id.str()) : nullptr},
                          {"resumed", c.resumed()}};
  };
  for (const auto& [agent, slot] : peers_) {
    if (slot.channel) {
      channels.push_back(describe_channel(*slot.channel, "outbound"));
    } else if (slot.last_failure) {
      channels.push_back({{"side", "outbound"},
                          {"remote", agent.str()},
                          {"state", "backoff"},
                          {"last_failure", std::string(to_string(slot.last_failure->kind)) + ": " +
                                               slot.last_failure->detail}});
    }
  }
  for (const auto& [id, channel] : accepted_)
    channels.push_back(describe_channel(*channel, "inbound"));
  std::size_t pending_count = 0;
  for (const auto& [cookie, conn] : conns_) pending_count += conn.decided ? 0 : 1;
  return {
      {"channels", channels},
      {"attestation",
       {{"pending", pending_count},
        {"in_flight", inflight_.size()},
        {"parked_requests", parked_.size()},
        {"requests_sent", counters_.requests_sent},
        {"requests_served", counters_.requests_served},
        {"responses", counters_.responses},
        {"decided_locally", counters_.decided_locally},
        {"foreign_vouching", counters_.foreign_vouching},
        {"wrong_agent", counters_.wrong_agent},
        {"unmatched_requests", counters_.unmatched_requests},
        {"handshakes_refused", counters_.handshakes_refused},
        {"revoked", counters_.revoked},
        {"generation", options_.generation},
        {"channel_closes", counters_.channel_closes}}},
  };
}

}  // namespace trustfence::attest
