#pragma once

// A simulated peer node agent, run as a worker (worker.hpp) inside an e2e
// node. Peer agents are simulated because a thousand real agents (each a
// datapath, a cgroup and a process) do not fit on one machine; what the
// agent under test sees is real all the same: the project's own channels
// (attest::Channel over tls::TlsStream, TLS 1.3 mutual authentication,
// versioned frames), one distinct X.509-SVID of the peer trust domain per
// channel, and attestation requests for real TCP connections.
//
// Commands (one line each, answered with one line):
//   channels N
//       keeps channels 0..N-1 open (closes the others): "ok"
//   wait TIMEOUT_MS
//       until every channel is ready (or the timeout):
//       "ok ready=R wanted=W connects=C closes=K"
//   rate IP:PORT PER_SECOND SECONDS
//       (the primary peer) opens PER_SECOND connections a second to
//       IP:PORT for SECONDS, each attested over channel 0 as the agent of
//       this node would (the client's 4-tuple and workload ID), and closes
//       each with a reset once the answer came: "ok made=N allowed=A
//       denied=D unanswered=U seconds=S p50_us=.. p99_us=.."
//   quit
//
// Channels are opened at most kMaxHandshakes at a time, under the agent's
// caps on accepted channels mid-handshake (64 in all, 16 per source
// address), and opened again 200 ms after one closes (the agent closes
// every channel on a reload). The primary peer also listens on the agent
// port, for the channel the agent opens to learn that this node has an
// agent.

#include <cstddef>
#include <functional>
#include <string>

#include "support/test_ca.hpp"

namespace trustfence::bench::scale {

// Channels one peer process may have mid-handshake at once.
inline constexpr std::size_t kMaxHandshakes = 12;

struct PeerOptions {
  std::string agent;                 // "10.231.0.1:7400"
  std::string self_ip;               // this node's IPv4, the clients' address
  std::string trust_domain;          // the peer trust domain (team-b.eks.local)
  std::string own_bundle;            // its CA, PEM
  std::string agent_domain;          // the agent's trust domain
  std::string agent_bundle;          // its CA, PEM
  std::size_t channels = 1;          // node SVIDs minted: the most channels it opens
  std::size_t initial_channels = 1;  // channels kept open from the start
  std::size_t first_svid = 0;        // node SVIDs are numbered across the peers
  bool primary = false;              // listens on 7400, attests rate connections
  // A node SVID (leaf signed by the peer domain's CA) for index i.
  std::function<test::Issued(std::size_t i)> mint;
};

int peer_main(int control, const PeerOptions& options);

}  // namespace trustfence::bench::scale
