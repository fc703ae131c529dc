#pragma once

// One agent-to-agent channel: a TLS 1.3 mutual-auth stream carrying
// attestation frames, driven by the agent's event loop. Input is hostile
// until proven otherwise: a frame violation, an output backlog over its cap,
// a handshake or a frame that stalls, all close the channel, and only it.
//
// Callbacks run on the loop thread. After on_closed the channel does
// nothing more; its owner destroys it (not from inside the callback: the
// channel is still on the stack).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trustfence/attest/frame.hpp"
#include "trustfence/common/net.hpp"
#include "trustfence/common/result.hpp"
#include "trustfence/runtime/event_loop.hpp"
#include "trustfence/tls/tls_stream.hpp"

namespace trustfence::attest {

struct ChannelLimits {
  std::chrono::milliseconds handshake_timeout{3000};  // connect + TLS handshake
  std::chrono::milliseconds frame_timeout{5000};      // a frame begun must end within
  std::size_t max_output_bytes = 4 * 1024 * 1024;     // queued, not yet written
};

// Why a channel ended, for the decision about its waiting connections,
// for logs and for counters.
struct CloseReason {
  enum class Kind {
    kConnectFailed,    // no agent there: refused, unreachable, no answer
    kPeerRejected,     // we rejected the peer's SVID (verify says why)
    kHandshakeFailed,  // any other TLS failure (the peer rejected us, ...)
    kViolation,        // a malformed, oversized or unknown frame
    kTimeout,          // stalled in the handshake or mid-frame
    kOverflow,         // the peer does not read what we send
    kPeerClosed,
    kShutdown,  // we closed it
  };
  Kind kind;
  std::string detail;
  std::optional<tls::VerifyFailure> verify;  // with kPeerRejected
};

std::string_view to_string(CloseReason::Kind kind);

class Channel {
 public:
  enum class State { kConnecting, kHandshaking, kReady, kClosed };

  struct Callbacks {
    std::function<void(Channel&)> on_ready;
    std::function<void(Channel&, Message&&)> on_message;
    std::function<void(Channel&, const CloseReason&)> on_closed;
  };

  // Initiator: non-blocking connect to the peer agent, then the handshake.
  static Result<std::unique_ptr<Channel>> connect(runtime::EventLoop& loop,
                                                  tls::TlsContext& context,
                                                  const net::SocketAddress& peer,
                                                  std::optional<tls::ClientSession> resume,
                                                  Callbacks callbacks, ChannelLimits limits = {});
  // Acceptor: a socket accept() returned.
  static Result<std::unique_ptr<Channel>> accept(runtime::EventLoop& loop, tls::TlsContext& context,
                                                 UniqueFd fd, const net::SocketAddress& from,
                                                 Callbacks callbacks, ChannelLimits limits = {});

  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  ~Channel();

  State state() const { return state_; }
  bool ready() const { return state_ == State::kReady; }
  // It was ready once (also after it closed): a working channel that
  // dropped, not one that never came up.
  bool was_ready() const { return was_ready_; }
  // The far end's address (the peer agent we dialled, or where an accepted
  // channel came from).
  const net::SocketAddress& remote() const { return remote_; }
  // The peer's verified identity once ready.
  const tls::VerifiedSvid* peer() const { return stream_ ? stream_->peer() : nullptr; }
  bool resumed() const { return stream_ && stream_->resumed(); }
  std::optional<tls::ClientSession> session() const;
  std::uint64_t id() const { return id_; }

  // Queues one frame; false when the channel is not ready or its output
  // backlog is full (the channel is then closed as kOverflow).
  bool send(const Message& message);
  void close(CloseReason reason);

 private:
  Channel(runtime::EventLoop& loop, const net::SocketAddress& remote, Callbacks callbacks,
          ChannelLimits limits);

  void on_events(std::uint32_t events);
  void finish_connect();
  void drive_handshake();
  void read_frames();
  void flush();
  void update_interest();
  void arm_frame_timer();
  void arm_handshake_deadline(const char* what);
  void arm_peer_expiry();

  runtime::EventLoop& loop_;
  net::SocketAddress remote_;
  Callbacks callbacks_;
  ChannelLimits limits_;
  std::uint64_t id_;
  State state_ = State::kConnecting;
  UniqueFd connecting_fd_;              // until connect completes
  tls::TlsContext* context_ = nullptr;  // for the stream made after connect
  std::optional<tls::ClientSession> resume_;
  std::optional<tls::TlsStream> stream_;
  int watched_fd_ = -1;
  std::uint32_t interest_ = 0;
  FrameDecoder decoder_;
  std::vector<std::uint8_t> output_;
  std::size_t output_offset_ = 0;
  bool received_any_ = false;
  bool was_ready_ = false;
  std::optional<runtime::EventLoop::TimerId> deadline_;     // handshake
  std::optional<runtime::EventLoop::TimerId> frame_timer_;  // a frame begun
  std::optional<runtime::EventLoop::TimerId> resume_read_;  // read budget spent
  std::optional<runtime::EventLoop::TimerId> peer_expiry_;  // the peer's SVID notAfter
};

}  // namespace trustfence::attest
