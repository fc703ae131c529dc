#pragma once

// The attestation protocol of one node agent. For each new connection of
// the enforced cgroup it finds the agent at the other end and the two
// exchange an attestation bound to that exact connection:
//
//  - the agent holding the active (client) socket sends its 4-tuple and the
//    local workload's SPIFFE ID over its persistent channel to the peer
//    agent (the remote address on the listen port, or a `peer` route);
//  - the responder accepts it only if it holds the mirrored passive socket
//    (waiting a short bounded time for it to appear), only from the agent
//    that answers for the client's address, and only for an identity of
//    that agent's own trust domain; it decides with its policy and answers
//    with its workload's identity and its decision;
//  - the initiator checks the answer the same way and decides with its own
//    policy; a denial by either side denies.
//
// A socket whose peer agent cannot be reached is decided by
// peer-authentication (strict: no-peer-agent; permissive:
// plaintext-permissive); one not attested within attestation-timeout is
// denied (attestation-timeout); a peer agent whose SVID fails verification
// denies with the verification's reason (bad-chain, expired, ...).
// Connections between two sockets of this node are decided locally.
//
// Decisions are collected and taken by the runtime once per loop round, so
// they reach the kernel in one batch.

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "trustfence/abi.h"
#include "trustfence/attest/channel.hpp"
#include "trustfence/attest/frame.hpp"
#include "trustfence/attest/workloads.hpp"
#include "trustfence/config/config.hpp"
#include "trustfence/datapath/conn_table.hpp"
#include "trustfence/identity/interner.hpp"
#include "trustfence/policy/policy.hpp"
#include "trustfence/runtime/event_loop.hpp"

namespace trustfence::attest {

// One verdict for the kernel, with what the log line needs.
struct Decided {
  datapath::Cookie cookie;
  // The socket closed before its verdict (the other side was faster): the
  // verdict is for the record only, not for the kernel.
  bool closed = false;
  tf_conn conn;  // as tracked, before the verdict
  datapath::VerdictUpdate update;
  std::string peer;    // SPIFFE ID, or empty
  std::string detail;  // why, for the operator
  // A reload found verdict and reason standing: only the generation is new.
  // For the kernel alone (no history, counter or log line; peer and detail
  // are left empty).
  bool refresh = false;
};

struct AttestorLimits {
  std::size_t max_accepted_channels = 4096;
  std::size_t max_handshakes = 64;             // accepted channels mid-handshake
  std::size_t max_handshakes_per_source = 16;  // from one address
  std::size_t max_parked_requests = 65536;     // waiting for their socket
  std::chrono::milliseconds min_backoff{200};
  std::chrono::milliseconds max_backoff{1000};
  // A peer agent ready this recently that now refuses is restarting: its
  // connections wait for it (within their attestation deadline).
  std::chrono::milliseconds restart_grace{10'000};
  ChannelLimits channel;
};

class Attestor {
 public:
  struct Options {
    config::AttestationConfig attestation;
    policy::PolicyRules rules;
    std::uint32_t generation = 1;
    // Audit mode never drops, here included: the peer is told ALLOW (with
    // our would-be reason) so it does not cut what we only report.
    bool audit = false;
    AttestorLimits limits;
    // Writes the decisions made so far to the kernel: called before an
    // answer goes out, so the peer's payload released by our answer never
    // meets our socket still pending.
    std::function<void()> write_decisions;
  };

  Attestor(runtime::EventLoop& loop, tls::TlsContext& client, tls::TlsContext& server,
           identity::Interner& interner, WorkloadIdentities& workloads, Options options);
  ~Attestor();
  Attestor(const Attestor&) = delete;
  Attestor& operator=(const Attestor&) = delete;

  // From tf_events (or a table scan after a restart or lost events).
  void on_new(datapath::Cookie cookie, const tf_conn& conn);
  // Returns the connection as the attestor last knew it when it had
  // decided it already (the close may have overtaken the verdict's write).
  std::optional<tf_conn> on_close(datapath::Cookie cookie);
  bool tracks(datapath::Cookie cookie) const { return conns_.contains(cookie); }

  // A new configuration (a reload). Later decisions use it, every channel
  // is closed so the next ones use the new SVID and bundles, and every open
  // allowed connection is decided again: one no longer allowed is revoked
  // (DENY, revoked); one whose peer's trust domain lost an authority from
  // its bundle keeps its verdict only if its peer agent still verifies (a
  // fresh channel to it); the rest take the new generation. The contexts
  // and workloads must outlive the attestor or the next reconfigure.
  void reconfigure(Options options, tls::TlsContext& client, tls::TlsContext& server,
                   WorkloadIdentities& workloads,
                   const std::set<identity::TrustDomain>& weakened_domains);

  // A connection accepted on the listen socket.
  void accept(UniqueFd fd, const net::SocketAddress& from);

  // Verdicts made since the last call.
  std::vector<Decided> take_decisions() { return std::exchange(decided_, {}); }
  // Destroys channels that closed this round (never from their callbacks).
  void collect();

  nlohmann::json stats() const;

 private:
  struct Conn {
    tf_conn conn;
    ConnTuple local;
    bool decided = false;
    bool closed = false;  // kept until decided or its deadline
    std::optional<runtime::EventLoop::TimerId> deadline;
  };
  struct PeerSlot {
    std::unique_ptr<Channel> channel;
    std::vector<datapath::Cookie> waiting_outbound;  // requests to send once ready
    std::vector<datapath::Cookie> waiting_inbound;   // need to know the peer has an agent
    std::optional<tls::ClientSession> session;
    std::chrono::milliseconds backoff{0};
    runtime::SteadyClock::time_point retry_at{};
    std::optional<CloseReason> last_failure;  // while backing off
    // When it was last ready: a peer agent that refuses connections soon
    // after is restarting, not absent.
    std::optional<runtime::SteadyClock::time_point> last_ready;
    // Allowed connections that stand only if this peer agent still
    // verifies against the reloaded bundles.
    std::vector<datapath::Cookie> revalidating;
  };
  struct Inflight {
    datapath::Cookie cookie;
    std::uint64_t channel_id;
    net::SocketAddress agent;
  };
  struct Parked {
    std::uint64_t channel_id;
    AttestRequest request;
    runtime::EventLoop::TimerId timer;
  };

  net::SocketAddress route(const net::IpAddress& remote) const;
  bool is_local_address(const net::IpAddress& address);

  void start_outbound(datapath::Cookie cookie, Conn& conn);
  void start_inbound(datapath::Cookie cookie, Conn& conn);
  PeerSlot& slot_for(const net::SocketAddress& agent);
  void connect(const net::SocketAddress& agent, PeerSlot& slot);
  void send_request(PeerSlot& slot, const net::SocketAddress& agent, datapath::Cookie cookie);

  void on_channel_ready(const net::SocketAddress& agent, Channel& channel);
  void on_channel_closed(const net::SocketAddress& agent, Channel& channel,
                         const CloseReason& reason);
  void on_accepted_closed(Channel& channel, const CloseReason& reason);
  void on_message(Channel& channel, Message&& message);
  void handle_request(Channel& channel, const AttestRequest& request);
  void answer(Channel& channel, const AttestRequest& request, datapath::Cookie cookie);
  void handle_response(Channel& channel, const AttestResponse& response);

  void decide_same_node(datapath::Cookie outbound, datapath::Cookie inbound);
  void decide_from_failure(datapath::Cookie cookie, const CloseReason& reason);
  void decide(datapath::Cookie cookie, tf_verdict verdict, tf_reason reason,
              const std::optional<identity::SpiffeId>& peer, std::string detail);
  void decide_by_policy(datapath::Cookie cookie, const identity::SpiffeId& peer,
                        std::string detail);
  // Re-decides an already allowed connection (reload).
  void redecide(datapath::Cookie cookie, tf_verdict verdict, tf_reason reason, std::string detail);
  void redecide(datapath::Cookie cookie, Conn& conn, tf_verdict verdict, tf_reason reason,
                std::string detail);
  Conn* pending(datapath::Cookie cookie);
  void forget(datapath::Cookie cookie);
  Channel* channel_by_id(std::uint64_t id);

  runtime::EventLoop& loop_;
  tls::TlsContext* client_;
  tls::TlsContext* server_;
  identity::Interner& interner_;
  WorkloadIdentities* workloads_;
  Options options_;
  policy::Policy policy_;

  std::unordered_map<datapath::Cookie, Conn> conns_;
  std::map<ConnTuple, datapath::Cookie> by_tuple_;  // our own view of each socket
  std::map<net::SocketAddress, PeerSlot> peers_;
  std::unordered_map<std::uint64_t, Inflight> inflight_;  // by request id
  std::uint64_t next_request_id_ = 1;
  std::unordered_map<std::uint64_t, std::unique_ptr<Channel>> accepted_;  // by channel id
  std::multimap<ConnTuple, Parked> parked_;  // by the socket they wait for
  std::vector<std::unique_ptr<Channel>> closed_;
  std::vector<Decided> decided_;
  std::set<net::IpAddress> local_addresses_;
  runtime::SteadyClock::time_point local_addresses_at_{};

  struct Counters {
    std::uint64_t requests_sent = 0;
    std::uint64_t requests_served = 0;
    std::uint64_t responses = 0;
    std::uint64_t decided_locally = 0;
    std::uint64_t foreign_vouching = 0;  // an agent vouched outside its domain
    std::uint64_t wrong_agent = 0;       // a request from an agent not answering for the client
    std::uint64_t unmatched_requests = 0;
    std::uint64_t handshakes_refused = 0;                 // over the handshake caps
    std::uint64_t revoked = 0;                            // allowed, then no longer (reload)
    std::map<std::string, std::uint64_t> channel_closes;  // by CloseReason kind
  } counters_;
};

}  // namespace trustfence::attest
