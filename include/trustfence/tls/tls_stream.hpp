#pragma once

// The TLS layer of the agents' channel: TLS 1.3 with mutual authentication
// over a connected socket the caller owns the events of (epoll), each end
// authenticated by its X.509-SVID.
//
//  - Peers are verified by our VerifyCache / SvidVerifier (the leaf's own
//    trust-domain bundle, the spec's order, named reasons), never by
//    OpenSSL's default path building, and never by hostname.
//  - Resumption: a client keeps a ClientSession (the ticket together with
//    the identity it verified) and offers it on its next connection to the
//    same peer; the server puts the client's verified identity into its
//    stateless ticket. Either end refuses a session whose identity expired
//    or that was verified under another bundle generation.
//  - Non-blocking throughout: every call returns at once with what it needs
//    next (readable / writable); nothing throws. Sockets are written with
//    MSG_NOSIGNAL, so a peer that went away is an error, not a SIGPIPE.
//  - Bounded: OpenSSL holds at most one TLS record (16 KiB of plaintext) per
//    direction and at most SSL_MAX_CERT_LIST_DEFAULT (100 KiB) of handshake
//    message; a client keeps only the newest ticket. Nothing else buffers.
//
//   auto stream = TlsStream::create(context, std::move(fd), cached_session);
//   // on each readiness event, until kDone or kFailed:
//   switch (stream->handshake()) { ... }

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"
#include "trustfence/identity/spiffe_id.hpp"
#include "trustfence/tls/openssl.hpp"
#include "trustfence/tls/svid_verifier.hpp"
#include "trustfence/tls/verify_cache.hpp"

namespace trustfence::tls {

inline constexpr std::size_t kMaxKeyBytes = 64 * 1024;

// Our own SVID: the certificate chain we present (leaf first) and its key.
struct TlsIdentity {
  Chain chain;
  EvpPkeyPtr key;
};

// Checks the chain is non-empty and the key belongs to its leaf.
Result<TlsIdentity> make_tls_identity(Chain chain, EvpPkeyPtr key);
// PEM files: the chain leaf first (bounded by kMaxChainBytes), an
// unencrypted private key (bounded by kMaxKeyBytes). Errors name the file,
// never the key's content.
Result<TlsIdentity> load_tls_identity(const std::string& cert_path, const std::string& key_path);

enum class Role { kClient, kServer };

// A session a client may offer on its next connection to the same peer,
// with what the full handshake established about that peer. Holds a
// resumption secret: never log or persist it. A connection dropped
// without close_notify does not spoil it; still, prefer the fresh one
// each resumed connection hands out (tickets reused are linkable).
struct ClientSession {
  SslSessionPtr session;
  VerifiedSvid peer;
  std::uint64_t bundle_generation = 0;
};

namespace detail {
struct ContextState;
struct ConnectionState;
}  // namespace detail

// One side's configuration, shared by its streams. Holds references to
// cache and verifier (cache must sit in front of that verifier): both must
// outlive the context and every stream made from it. A new bundle set
// means a new verifier, cache and context.
class TlsContext {
 public:
  static Result<TlsContext> create(Role role, const TlsIdentity& identity, VerifyCache& cache,
                                   const SvidVerifier& verifier);

  TlsContext(TlsContext&&) noexcept;
  TlsContext& operator=(TlsContext&&) noexcept;
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  ~TlsContext();

  Role role() const;

 private:
  friend class TlsStream;
  TlsContext(SslCtxPtr ctx, std::shared_ptr<detail::ContextState> state);

  SslCtxPtr ctx_;
  std::shared_ptr<detail::ContextState> state_;
};

// One TLS connection over a connected stream socket it owns.
class TlsStream {
 public:
  enum class Status { kDone, kWantRead, kWantWrite, kFailed };
  enum class IoStatus { kOk, kWantRead, kWantWrite, kClosed, kFailed };
  struct IoResult {
    IoStatus status;
    std::size_t bytes;  // > 0 only with kOk
  };

  // fd: a connected SOCK_STREAM socket (blocking or not: every call is
  // MSG_DONTWAIT). resume: a client's cached session, offered only if its
  // peer has not expired and its bundle generation is the verifier's
  // current one; servers take none.
  static Result<TlsStream> create(TlsContext& context, UniqueFd fd,
                                  const ClientSession* resume = nullptr);

  TlsStream(TlsStream&&) noexcept;
  TlsStream& operator=(TlsStream&&) noexcept;
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;
  ~TlsStream();

  // Call until kDone or kFailed, again whenever the fd is ready as asked.
  // TLS 1.3 lets a client finish before the server has checked the
  // client's certificate: a rejection then arrives as kFailed from the
  // client's first read(). Treat the peer as established only after it
  // has sent something.
  Status handshake();

  // After kDone: the peer's verified identity (from its certificate, or
  // from the session when resumed); nullptr before.
  const VerifiedSvid* peer() const;
  bool resumed() const;
  // Client, after kDone: the newest session the server issued, to offer on
  // the next connection. TLS 1.3 sends tickets after the handshake, so one
  // is there once read() has run after kDone.
  std::optional<ClientSession> session() const;

  // After kFailed: why our verification rejected the peer's certificate,
  // if that was the cause (a missing certificate is invalid-svid).
  const std::optional<VerifyFailure>& verify_failure() const;
  // After kFailed: one line for an operator; no key material.
  const std::string& error() const;

  // kOk with bytes > 0, or what to wait for (kWantWrite too: answering a
  // key update may need the socket writable); kClosed on the peer's
  // close_notify. A peer that closes without close_notify is kFailed (the
  // data may be truncated).
  IoResult read(std::span<std::uint8_t> buffer);
  // Partial writes: kOk reports how many bytes were taken (maybe fewer
  // than given; send the rest next). After kWantWrite/kWantRead nothing
  // was taken, but OpenSSL may already hold part of the data encrypted:
  // the next write must start with the same bytes (the buffer may move
  // and may be longer, never shorter).
  IoResult write(std::span<const std::uint8_t> data);
  // Best effort close_notify; never waits for the peer's.
  void shutdown();

  int fd() const { return fd_.get(); }
  // Decrypted bytes are waiting: read() returns data without the fd
  // becoming readable again.
  bool pending_read() const;

 private:
  TlsStream(UniqueFd fd, std::unique_ptr<detail::ConnectionState> state, SslPtr ssl);
  IoResult io_failure(int ssl_result);
  void record_failure(int ssl_error);

  // Declaration order is destruction order, reversed: the SSL goes first,
  // then the state its callbacks point to, then the socket it writes to.
  UniqueFd fd_;
  std::unique_ptr<detail::ConnectionState> state_;
  SslPtr ssl_;
};

// What a server puts into its session tickets to know the client on
// resumption without its certificate. Exposed for tests.
struct TicketIdentity {
  identity::SpiffeId id;
  std::chrono::system_clock::time_point not_after;  // second precision
  std::uint64_t bundle_generation = 0;
};

inline constexpr std::size_t kMaxTicketIdentityBytes =
    1 + 8 + 8 + 2 + identity::SpiffeId::kMaxLength;

std::string encode_ticket_identity(const TicketIdentity& identity);
// Strict: exact length, known version, a SPIFFE ID with a workload path.
std::optional<TicketIdentity> decode_ticket_identity(std::span<const std::uint8_t> data);

}  // namespace trustfence::tls
