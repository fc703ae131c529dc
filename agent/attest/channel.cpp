#include "trustfence/attest/channel.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

namespace trustfence::attest {
namespace {

// Records read per readiness event before other channels get their turn.
constexpr int kReadBudget = 64;

std::uint64_t next_channel_id() {
  static std::uint64_t next = 1;
  return next++;
}

void set_nodelay(int fd) {
  int one = 1;
  // Attestations are small and latency-bound; a failure only costs latency.
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

std::string_view to_string(CloseReason::Kind kind) {
  switch (kind) {
    case CloseReason::Kind::kConnectFailed:
      return "connect-failed";
    case CloseReason::Kind::kPeerRejected:
      return "peer-rejected";
    case CloseReason::Kind::kHandshakeFailed:
      return "handshake-failed";
    case CloseReason::Kind::kViolation:
      return "protocol-violation";
    case CloseReason::Kind::kTimeout:
      return "timeout";
    case CloseReason::Kind::kOverflow:
      return "overflow";
    case CloseReason::Kind::kPeerClosed:
      return "peer-closed";
    case CloseReason::Kind::kShutdown:
      return "shutdown";
  }
  return "unknown";
}

Channel::Channel(runtime::EventLoop& loop, const net::SocketAddress& remote, Callbacks callbacks,
                 ChannelLimits limits)
    : loop_(loop),
      remote_(remote),
      callbacks_(std::move(callbacks)),
      limits_(limits),
      id_(next_channel_id()) {}

Channel::~Channel() {
  if (deadline_) loop_.cancel(*deadline_);
  if (frame_timer_) loop_.cancel(*frame_timer_);
  if (resume_read_) loop_.cancel(*resume_read_);
  if (peer_expiry_) loop_.cancel(*peer_expiry_);
  if (watched_fd_ >= 0) loop_.remove(watched_fd_);
}

Result<std::unique_ptr<Channel>> Channel::connect(runtime::EventLoop& loop,
                                                  tls::TlsContext& context,
                                                  const net::SocketAddress& peer,
                                                  std::optional<tls::ClientSession> resume,
                                                  Callbacks callbacks, ChannelLimits limits) {
  std::unique_ptr<Channel> channel(new Channel(loop, peer, std::move(callbacks), limits));
  sockaddr_storage addr{};
  socklen_t len = peer.to_sockaddr(addr);
  UniqueFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("channel to " + peer.str() + ": socket", errno);
  set_nodelay(fd.get());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 && errno != EINPROGRESS)
    return fail_errno("channel to " + peer.str() + ": connect", errno);
  channel->context_ = &context;
  channel->resume_ = std::move(resume);
  channel->connecting_fd_ = std::move(fd);
  channel->watched_fd_ = channel->connecting_fd_.get();
  channel->interest_ = EPOLLOUT;
  Channel* self = channel.get();
  if (auto ok = loop.add(channel->watched_fd_, EPOLLOUT,
                         [self](std::uint32_t events) { self->on_events(events); });
      !ok) {
    channel->watched_fd_ = -1;
    return std::unexpected(ok.error());
  }
  channel->arm_handshake_deadline("no connection and handshake");
  return channel;
}

Result<std::unique_ptr<Channel>> Channel::accept(runtime::EventLoop& loop, tls::TlsContext& context,
                                                 UniqueFd fd, const net::SocketAddress& from,
                                                 Callbacks callbacks, ChannelLimits limits) {
  std::unique_ptr<Channel> channel(new Channel(loop, from, std::move(callbacks), limits));
  set_nodelay(fd.get());
  int raw = fd.get();
  auto stream = tls::TlsStream::create(context, std::move(fd));
  if (!stream) return std::unexpected(stream.error());
  channel->stream_.emplace(std::move(*stream));
  channel->state_ = State::kHandshaking;
  channel->watched_fd_ = raw;
  channel->interest_ = EPOLLIN;
  Channel* self = channel.get();
  if (auto ok = loop.add(raw, EPOLLIN, [self](std::uint32_t events) { self->on_events(events); });
      !ok) {
    channel->watched_fd_ = -1;
    return std::unexpected(ok.error());
  }
  channel->arm_handshake_deadline("handshake not finished");
  return channel;
}

void Channel::arm_handshake_deadline(const char* what) {
  deadline_ = loop_.after(limits_.handshake_timeout, [this, what] {
    deadline_.reset();
    close(
        {CloseReason::Kind::kTimeout,
         std::string(what) + " within " + std::to_string(limits_.handshake_timeout.count()) + " ms",
         {}});
  });
}

std::optional<tls::ClientSession> Channel::session() const {
  if (!stream_) return std::nullopt;
  return stream_->session();
}

void Channel::on_events(std::uint32_t events) {
  switch (state_) {
    case State::kConnecting:
      finish_connect();
      return;
    case State::kHandshaking:
      drive_handshake();
      return;
    case State::kReady:
      if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) read_frames();
      if (state_ == State::kReady && (events & EPOLLOUT)) flush();
      return;
    case State::kClosed:
      return;
  }
}

void Channel::finish_connect() {
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(connecting_fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == EINPROGRESS || err == EALREADY) return;
  if (err != 0) {
    close({CloseReason::Kind::kConnectFailed,
           describe_errno("connect to " + remote_.str(), err),
           {}});
    return;
  }
  auto stream =
      tls::TlsStream::create(*context_, std::move(connecting_fd_), resume_ ? &*resume_ : nullptr);
  resume_.reset();  // a session is offered once
  if (!stream) {
    close({CloseReason::Kind::kHandshakeFailed, stream.error().message, {}});
    return;
  }
  stream_.emplace(std::move(*stream));
  state_ = State::kHandshaking;
  drive_handshake();
}

void Channel::drive_handshake() {
  switch (stream_->handshake()) {
    case tls::TlsStream::Status::kDone:
      state_ = State::kReady;
      was_ready_ = true;
      if (deadline_) loop_.cancel(*deadline_);
      deadline_.reset();
      arm_peer_expiry();
      update_interest();
      if (callbacks_.on_ready) callbacks_.on_ready(*this);
      if (state_ == State::kReady) read_frames();
      return;
    case tls::TlsStream::Status::kWantRead:
      interest_ = EPOLLIN;
      loop_.modify(watched_fd_, interest_);
      return;
    case tls::TlsStream::Status::kWantWrite:
      interest_ = EPOLLIN | EPOLLOUT;
      loop_.modify(watched_fd_, interest_);
      return;
    case tls::TlsStream::Status::kFailed:
      if (stream_->verify_failure())
        close({CloseReason::Kind::kPeerRejected, stream_->verify_failure()->detail,
               stream_->verify_failure()});
      else
        close({CloseReason::Kind::kHandshakeFailed, stream_->error(), {}});
      return;
  }
}

void Channel::read_frames() {
  std::array<std::uint8_t, 16 * 1024> buffer;
  for (int round = 0; round < kReadBudget; ++round) {
    auto result = stream_->read(buffer);
    switch (result.status) {
      case tls::TlsStream::IoStatus::kOk: {
        std::span<const std::uint8_t> input(buffer.data(), result.bytes);
        while (!input.empty()) {
          auto next = decoder_.next(input);
          if (!next) {
            close({CloseReason::Kind::kViolation, next.error().message, {}});
            return;
          }
          if (!*next) break;
          received_any_ = true;
          // The limit is per frame: the next one begun gets its own.
          if (frame_timer_) loop_.cancel(*frame_timer_);
          frame_timer_.reset();
          if (callbacks_.on_message) callbacks_.on_message(*this, std::move(**next));
          if (state_ != State::kReady) return;
        }
        break;
      }
      case tls::TlsStream::IoStatus::kWantRead:
        arm_frame_timer();
        return;
      case tls::TlsStream::IoStatus::kWantWrite:
        interest_ |= EPOLLOUT;
        loop_.modify(watched_fd_, interest_);
        return;
      case tls::TlsStream::IoStatus::kClosed:
        close({CloseReason::Kind::kPeerClosed, "peer closed the channel", {}});
        return;
      case tls::TlsStream::IoStatus::kFailed:
        // TLS 1.3: a server that rejects our certificate says so on our
        // first read after the handshake.
        close({received_any_ ? CloseReason::Kind::kPeerClosed : CloseReason::Kind::kHandshakeFailed,
               stream_->error(), stream_->verify_failure()});
        return;
    }
  }
  arm_frame_timer();
  // Budget spent: decrypted records may wait inside OpenSSL, where epoll
  // cannot see them; come back after the other ready descriptors.
  if (stream_->pending_read() && !resume_read_) {
    resume_read_ = loop_.after(std::chrono::milliseconds(0), [this] {
      resume_read_.reset();
      if (state_ == State::kReady) read_frames();
    });
  }
}

// A channel never outlives the SVID its peer authenticated with: closed
// then, the next one is a fresh handshake with the peer's rotated SVID.
void Channel::arm_peer_expiry() {
  const tls::VerifiedSvid* svid = peer();
  if (!svid) return;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      svid->not_after - std::chrono::system_clock::now());
  // Timers are steady-clock: bounded so a wall-clock jump is caught within a day.
  left = std::clamp(left, std::chrono::milliseconds(0), std::chrono::milliseconds(86'400'000));
  peer_expiry_ = loop_.after(left, [this] {
    peer_expiry_.reset();
    if (peer() && peer()->not_after > std::chrono::system_clock::now()) {
      arm_peer_expiry();
      return;
    }
    close({CloseReason::Kind::kShutdown, "the peer's SVID expired: re-keying", {}});
  });
}

void Channel::arm_frame_timer() {
  if (decoder_.buffered() == 0) {
    if (frame_timer_) loop_.cancel(*frame_timer_);
    frame_timer_.reset();
    return;
  }
  if (frame_timer_) return;
  frame_timer_ = loop_.after(limits_.frame_timeout, [this] {
    frame_timer_.reset();
    close({CloseReason::Kind::kTimeout,
           "a frame stalled half-sent (" + std::to_string(decoder_.buffered()) + " bytes)",
           {}});
  });
}

bool Channel::send(const Message& message) {
  if (state_ != State::kReady) return false;
  auto frame = encode(message);
  if (output_.size() - output_offset_ + frame.size() > limits_.max_output_bytes) {
    close(
        {CloseReason::Kind::kOverflow,
         "peer does not read: " + std::to_string(output_.size() - output_offset_) + " bytes queued",
         {}});
    return false;
  }
  output_.insert(output_.end(), frame.begin(), frame.end());
  flush();
  return state_ == State::kReady;
}

void Channel::flush() {
  while (output_offset_ < output_.size()) {
    auto result = stream_->write(std::span<const std::uint8_t>(output_.data() + output_offset_,
                                                               output_.size() - output_offset_));
    if (result.status == tls::TlsStream::IoStatus::kOk) {
      output_offset_ += result.bytes;
      continue;
    }
    if (result.status == tls::TlsStream::IoStatus::kWantWrite ||
        result.status == tls::TlsStream::IoStatus::kWantRead)
      break;
    close({CloseReason::Kind::kPeerClosed, "write failed: " + stream_->error(), {}});
    return;
  }
  if (output_offset_ == output_.size()) {
    output_.clear();
    output_offset_ = 0;
  } else if (output_offset_ > 64 * 1024) {
    // Only the unsent tail is kept; it starts with the bytes a retried TLS
    // write must see again.
    output_.erase(output_.begin(), output_.begin() + static_cast<std::ptrdiff_t>(output_offset_));
    output_offset_ = 0;
  }
  update_interest();
}

void Channel::update_interest() {
  if (state_ != State::kReady) return;
  std::uint32_t wanted = EPOLLIN | (output_offset_ < output_.size() ? EPOLLOUT : 0u);
  if (wanted == interest_) return;
  interest_ = wanted;
  loop_.modify(watched_fd_, interest_);
}

void Channel::close(CloseReason reason) {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  for (auto* timer : {&deadline_, &frame_timer_, &resume_read_, &peer_expiry_}) {
    if (*timer) loop_.cancel(**timer);
    timer->reset();
  }
  if (watched_fd_ >= 0) loop_.remove(watched_fd_);
  watched_fd_ = -1;
  if (stream_ && reason.kind == CloseReason::Kind::kShutdown) stream_->shutdown();
  output_.clear();
  output_offset_ = 0;
  // The owner learns who the peer was (peer(), session()) before the
  // stream goes.
  if (callbacks_.on_closed) callbacks_.on_closed(*this, reason);
  stream_.reset();
  connecting_fd_.reset();
}

}  // namespace trustfence::attest
