#include "trustfence/tls/tls_stream.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <utility>

#include "trustfence/common/verdict.hpp"

namespace trustfence::tls {
namespace detail {

struct ContextState {
  Role role;
  VerifyCache& cache;
  const SvidVerifier& verifier;
};

// Everything OpenSSL's callbacks learn about one connection. Heap-allocated
// so its address, stored in the SSL, survives moves of the TlsStream.
struct ConnectionState {
  std::shared_ptr<const ContextState> context;

  // A full handshake: our verdict on the certificate the peer presented.
  std::optional<VerifiedSvid> verified;
  std::uint64_t verified_generation = 0;
  std::optional<VerifyFailure> verify_failure;

  // Server: the client as its accepted ticket names it.
  std::optional<TicketIdentity> ticket_peer;
  // Client: the peer of the session we offered; the newest ticket issued.
  std::optional<VerifiedSvid> offered_peer;
  std::uint64_t offered_generation = 0;
  SslSessionPtr newest_session;

  // Settled by the handshake.
  std::optional<VerifiedSvid> peer;
  std::uint64_t peer_generation = 0;
  bool done = false;
  bool resumed = false;
  bool failed = false;
  bool shutdown_sent = false;
  std::string error;
};

}  // namespace detail

namespace {

using detail::ConnectionState;
using detail::ContextState;
using TimePoint = std::chrono::system_clock::time_point;

constexpr std::uint8_t kTicketVersion = 1;
constexpr std::size_t kTicketHeaderBytes = 1 + 8 + 8 + 2;
// Names the application whose tickets these are; OpenSSL refuses to
// resume a session made under another context id.
constexpr unsigned char kSessionContext[] = "trustfence-channel-v1";

// --- files -----------------------------------------------------------------

// Read straight into one preallocated buffer so a key leaves no copies in
// freed memory; the caller cleanses it.
Result<std::string> read_bounded(const std::string& what, const std::string& path,
                                 std::size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("opening " + what + " " + path, errno);
  std::string content(max_bytes + 1, '\0');
  std::size_t size = 0;
  while (size < content.size()) {
    const ssize_t got = ::read(fd.get(), content.data() + size, content.size() - size);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      OPENSSL_cleanse(content.data(), content.size());
      return fail_errno("reading " + what + " " + path, errno);
    }
    if (got == 0) break;
    size += static_cast<std::size_t>(got);
  }
  if (size > max_bytes) {
    OPENSSL_cleanse(content.data(), content.size());
    return fail(Errc::kInvalidArgument, what + " " + path + ": larger than the limit of " +
                                            std::to_string(max_bytes) + " bytes");
  }
  content.resize(size);  // shrinking keeps the buffer in place
  return content;
}

// Never prompt on a terminal for a passphrase: encrypted keys are refused.
int no_passphrase(char*, int, int, void*) { return -1; }

Result<EvpPkeyPtr> parse_private_key(const std::string& pem) {
  if (pem.size() > static_cast<std::size_t>(INT_MAX)) {
    return fail(Errc::kInvalidArgument, "private key too large");
  }
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return fail(Errc::kIo, "private key: out of memory");
  if (pem.find("ENCRYPTED") != std::string::npos) {
    return fail(Errc::kUnsupported, "encrypted private keys are not supported");
  }
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  // The error text names the failing step only; it never quotes the input.
  const std::string reason = take_openssl_error();
  if (!key) {
    return fail(Errc::kInvalidArgument,
                "no unencrypted PEM private key" + (reason.empty() ? "" : " (" + reason + ")"));
  }
  return key;
}

// --- a socket BIO that never blocks and never raises SIGPIPE ------------------

int fd_of(BIO* bio) { return static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(bio))); }

int socket_write(BIO* bio, const char* data, int length) {
  BIO_clear_retry_flags(bio);
  for (;;) {
    const ssize_t sent =
        ::send(fd_of(bio), data, static_cast<std::size_t>(length), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent >= 0) return static_cast<int>(sent);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
    return -1;
  }
}

int socket_read(BIO* bio, char* data, int length) {
  BIO_clear_retry_flags(bio);
  for (;;) {
    const ssize_t got = ::recv(fd_of(bio), data, static_cast<std::size_t>(length), MSG_DONTWAIT);
    if (got > 0) return static_cast<int>(got);
    if (got == 0) {
      // Lets OpenSSL tell a truncating close from a retry.
      BIO_set_flags(bio, BIO_FLAGS_IN_EOF);
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(bio);
    return -1;
  }
}

long socket_ctrl(BIO* bio, int command, long, void* pointer) {
  switch (command) {
    case BIO_CTRL_FLUSH:
      return 1;  // nothing is buffered here
    case BIO_CTRL_EOF:
      return BIO_test_flags(bio, BIO_FLAGS_IN_EOF) != 0 ? 1 : 0;
    case BIO_C_GET_FD:
      if (pointer != nullptr) *static_cast<int*>(pointer) = fd_of(bio);
      return fd_of(bio);
    default:
      return 0;  // no kTLS, no pending bytes, nothing else to control
  }
}

int socket_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

const BIO_METHOD* socket_method() {
  static const BioMethodPtr method = [] {
    BioMethodPtr made(BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                   "trustfence socket"));
    if (made && BIO_meth_set_write(made.get(), socket_write) == 1 &&
        BIO_meth_set_read(made.get(), socket_read) == 1 &&
        BIO_meth_set_ctrl(made.get(), socket_ctrl) == 1 &&
        BIO_meth_set_create(made.get(), socket_create) == 1) {
      return made;
    }
    return BioMethodPtr();
  }();
  return method.get();
}

// --- callbacks ------------------------------------------------------------------

int connection_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

ConnectionState* connection_of(const SSL* ssl) {
  return ssl == nullptr ? nullptr
                        : static_cast<ConnectionState*>(SSL_get_ex_data(ssl, connection_index()));
}

// Who the peer is once the handshake got this far: the certificate we
// verified, or on resumption what the session recorded (with the bundle
// generation it was verified under).
std::optional<std::pair<VerifiedSvid, std::uint64_t>> settled_peer(const SSL* ssl,
                                                                   const ConnectionState& conn) {
  if (SSL_session_reused(ssl) == 1) {
    if (conn.context->role == Role::kServer && conn.ticket_peer) {
      return std::pair{VerifiedSvid{conn.ticket_peer->id, conn.ticket_peer->not_after},
                       conn.ticket_peer->bundle_generation};
    }
    if (conn.context->role == Role::kClient && conn.offered_peer) {
      return std::pair{*conn.offered_peer, conn.offered_generation};
    }
    return std::nullopt;
  }
  if (conn.verified) return std::pair{*conn.verified, conn.verified_generation};
  return std::nullopt;
}

// The chain as the peer presented it: the leaf, then its untrusted extras
// (OpenSSL's untrusted stack starts with the leaf itself).
Chain presented_chain(X509_STORE_CTX* store_ctx) {
  Chain chain;
  X509* leaf = X509_STORE_CTX_get0_cert(store_ctx);
  if (leaf == nullptr) return chain;
  chain.push_back(share(leaf));
  STACK_OF(X509)* untrusted = X509_STORE_CTX_get0_untrusted(store_ctx);
  const int count = untrusted == nullptr ? 0 : sk_X509_num(untrusted);
  for (int i = 0; i < count; ++i) {
    X509* cert = sk_X509_value(untrusted, i);
    if (i == 0 && (cert == leaf || X509_cmp(cert, leaf) == 0)) continue;
    chain.push_back(share(cert));
  }
  return chain;
}

// The X.509 error OpenSSL turns into the alert the peer receives.
int x509_error_for(tf_reason reason) {
  switch (reason) {
    case TF_REASON_EXPIRED:
      return X509_V_ERR_CERT_HAS_EXPIRED;  // certificate_expired
    case TF_REASON_BAD_CHAIN:
    case TF_REASON_NO_BUNDLE:
      return X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;  // unknown_ca
    default:
      return X509_V_ERR_APPLICATION_VERIFICATION;  // handshake_failure
  }
}

// Replaces OpenSSL's path building: the peer is verified by our verifier
// against its own trust domain's bundle only.
int verify_peer(X509_STORE_CTX* store_ctx, void*) {
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  ConnectionState* conn = connection_of(ssl);
  if (conn == nullptr) {
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  try {
    const Chain chain = presented_chain(store_ctx);
    // Read before verifying: if the bundles change meanwhile, the session
    // carries the older generation and is never offered again.
    const std::uint64_t generation = conn->context->verifier.bundles().generation();
    VerifyResult result = conn->context->cache.verify(chain);
    if (!result) {
      X509_STORE_CTX_set_error(store_ctx, x509_error_for(result.error().reason));
      conn->verify_failure = std::move(result.error());
      return 0;
    }
    conn->verified = std::move(*result);
    conn->verified_generation = generation;
    X509_STORE_CTX_set_error(store_ctx, X509_V_OK);
    return 1;
  } catch (...) {
    conn->verify_failure =
        VerifyFailure{TF_REASON_INVALID_SVID, "verification failed: out of memory"};
    X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_OUT_OF_MEM);
    return 0;
  }
}

// Server: the ticket carries who the client is, so a resumption (which has
// no certificate) still knows its peer.
int generate_ticket(SSL* ssl, void*) {
  ConnectionState* conn = connection_of(ssl);
  SSL_SESSION* session = SSL_get0_session(ssl);
  if (conn == nullptr || session == nullptr) return 0;
  try {
    const auto peer = settled_peer(ssl, *conn);
    if (!peer) {
      // A ticket without an identity is never accepted back.
      return SSL_SESSION_set1_ticket_appdata(session, nullptr, 0);
    }
    const std::string data =
        encode_ticket_identity(TicketIdentity{peer->first.id, peer->first.not_after, peer->second});
    return SSL_SESSION_set1_ticket_appdata(session, data.data(), data.size());
  } catch (...) {
    return 0;
  }
}

SSL_TICKET_RETURN decrypt_ticket(SSL* ssl, SSL_SESSION* session, const unsigned char*, size_t,
                                 SSL_TICKET_STATUS status, void*) {
  switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW:
      break;
    case SSL_TICKET_FATAL_ERR_MALLOC:
    case SSL_TICKET_FATAL_ERR_OTHER:
      return SSL_TICKET_RETURN_ABORT;
    default:  // none, empty, or not ours (an older context's key): full handshake
      return SSL_TICKET_RETURN_IGNORE_RENEW;
  }
  ConnectionState* conn = connection_of(ssl);
  void* data = nullptr;
  std::size_t length = 0;
  if (conn == nullptr || session == nullptr ||
      SSL_SESSION_get0_ticket_appdata(session, &data, &length) != 1 || data == nullptr ||
      length > kMaxTicketIdentityBytes) {
    return SSL_TICKET_RETURN_IGNORE_RENEW;
  }
  try {
    auto identity = decode_ticket_identity({static_cast<const std::uint8_t*>(data), length});
    const SvidVerifier& verifier = conn->context->verifier;
    if (!identity || identity->bundle_generation != verifier.bundles().generation() ||
        verifier.now() > identity->not_after) {
      return SSL_TICKET_RETURN_IGNORE_RENEW;
    }
    conn->ticket_peer = std::move(*identity);
    // Renew: each ticket is offered once, the client keeps the newest.
    return SSL_TICKET_RETURN_USE_RENEW;
  } catch (...) {
    return SSL_TICKET_RETURN_IGNORE_RENEW;
  }
}

// A copy no SSL uses as its own session. OpenSSL marks a connection's
// session unresumable when the SSL is freed without close_notify (TLS 1.2's
// rule); TLS 1.3 has no such rule, and this channel reconnects precisely
// after broken connections.
SslSessionPtr private_copy(SSL_SESSION* session) {
  return SslSessionPtr(session == nullptr ? nullptr : SSL_SESSION_dup(session));
}

// Client: keep only the newest ticket, so a chatty server cannot make us
// hold more than one.
int keep_session(SSL* ssl, SSL_SESSION* session) {
  ConnectionState* conn = connection_of(ssl);
  if (conn == nullptr || SSL_SESSION_is_resumable(session) != 1) return 0;
  if (SslSessionPtr copy = private_copy(session)) conn->newest_session = std::move(copy);
  return 0;  // OpenSSL keeps its reference
}

Result<void> openssl_check(bool ok, const std::string& what) {
  if (ok) return {};
  const std::string reason = take_openssl_error();
  return fail(Errc::kInvalidArgument,
              "TLS context: " + what + (reason.empty() ? "" : ": " + reason));
}

Result<void> use_identity(SSL_CTX* ctx, const TlsIdentity& identity) {
  if (identity.chain.empty() || !identity.chain.front() || !identity.key) {
    return fail(Errc::kInvalidArgument, "TLS context: the identity has no certificate or no key");
  }
  if (auto ok = openssl_check(SSL_CTX_use_certificate(ctx, identity.chain.front().get()) == 1,
                              "using the certificate");
      !ok) {
    return ok;
  }
  for (std::size_t i = 1; i < identity.chain.size(); ++i) {
    if (auto ok = openssl_check(
            identity.chain[i] && SSL_CTX_add1_chain_cert(ctx, identity.chain[i].get()) == 1,
            "adding chain certificate " + std::to_string(i));
        !ok) {
      return ok;
    }
  }
  if (auto ok = openssl_check(SSL_CTX_use_PrivateKey(ctx, identity.key.get()) == 1 &&
                                  SSL_CTX_check_private_key(ctx) == 1,
                              "the key does not match the certificate");
      !ok) {
    return ok;
  }
  return {};
}

bool offerable(const ClientSession& session, const SvidVerifier& verifier) {
  return session.session && SSL_SESSION_is_resumable(session.session.get()) == 1 &&
         SSL_SESSION_get_protocol_version(session.session.get()) == TLS1_3_VERSION &&
         session.bundle_generation == verifier.bundles().generation() &&
         verifier.now() <= session.peer.not_after;
}

void put_u64(std::string& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

std::uint64_t get_u64(const std::uint8_t* in) {
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | in[i];
  return value;
}

}  // namespace

// --- identity -------------------------------------------------------------------

Result<TlsIdentity> make_tls_identity(Chain chain, EvpPkeyPtr key) {
  if (chain.empty()) return fail(Errc::kInvalidArgument, "no certificate");
  if (chain.size() > kMaxChainLength) {
    return fail(Errc::kInvalidArgument, std::to_string(chain.size()) +
                                            " certificates, more than the limit of " +
                                            std::to_string(kMaxChainLength));
  }
  for (const X509Ptr& cert : chain) {
    if (!cert) return fail(Errc::kInvalidArgument, "the chain holds an empty certificate");
  }
  if (!key) return fail(Errc::kInvalidArgument, "no private key");
  ERR_clear_error();
  const bool matches = X509_check_private_key(chain.front().get(), key.get()) == 1;
  ERR_clear_error();
  if (!matches) {
    return fail(Errc::kInvalidArgument, "the private key does not match the leaf certificate");
  }
  return TlsIdentity{std::move(chain), std::move(key)};
}

Result<TlsIdentity> load_tls_identity(const std::string& cert_path, const std::string& key_path) {
  auto pem = read_bounded("certificate", cert_path, kMaxChainBytes);
  if (!pem) return std::unexpected(std::move(pem.error()));
  auto chain = parse_pem_chain(*pem);
  if (!chain) {
    return fail(chain.error().code, "certificate " + cert_path + ": " + chain.error().message);
  }
  auto key_pem = read_bounded("private key", key_path, kMaxKeyBytes);
  if (!key_pem) return std::unexpected(std::move(key_pem.error()));
  auto key = parse_private_key(*key_pem);
  OPENSSL_cleanse(key_pem->data(), key_pem->size());
  if (!key) return fail(key.error().code, "private key " + key_path + ": " + key.error().message);
  auto identity = make_tls_identity(std::move(*chain), std::move(*key));
  if (!identity) {
    return fail(identity.error().code, "certificate " + cert_path + " and key " + key_path + ": " +
                                           identity.error().message);
  }
  return identity;
}

// --- ticket identity ------------------------------------------------------------

std::string encode_ticket_identity(const TicketIdentity& identity) {
  const std::string id = identity.id.str();
  const auto seconds =
      std::chrono::floor<std::chrono::seconds>(identity.not_after.time_since_epoch()).count();
  std::string out;
  out.reserve(kTicketHeaderBytes + id.size());
  out.push_back(static_cast<char>(kTicketVersion));
  put_u64(out, identity.bundle_generation);
  put_u64(out, static_cast<std::uint64_t>(seconds));
  out.push_back(static_cast<char>((id.size() >> 8) & 0xff));
  out.push_back(static_cast<char>(id.size() & 0xff));
  out += id;
  return out;
}

std::optional<TicketIdentity> decode_ticket_identity(std::span<const std::uint8_t> data) {
  if (data.size() < kTicketHeaderBytes || data.size() > kMaxTicketIdentityBytes) {
    return std::nullopt;
  }
  if (data[0] != kTicketVersion) return std::nullopt;
  const std::uint64_t generation = get_u64(&data[1]);
  const auto seconds = static_cast<std::int64_t>(get_u64(&data[9]));
  const std::size_t id_length = (std::size_t{data[17]} << 8) | data[18];
  if (id_length == 0 || data.size() != kTicketHeaderBytes + id_length) return std::nullopt;
  // Bound the time so the conversion to the clock's unit cannot overflow.
  constexpr std::int64_t kMaxSeconds = std::int64_t{1} << 40;
  if (seconds < 0 || seconds > kMaxSeconds) return std::nullopt;
  const std::string_view text(reinterpret_cast<const char*>(data.data() + kTicketHeaderBytes),
                              id_length);
  auto id = identity::SpiffeId::parse(text);
  if (!id || !id->has_workload_path() || id->str() != text) return std::nullopt;
  return TicketIdentity{std::move(*id), TimePoint(std::chrono::seconds(seconds)), generation};
}

// --- context --------------------------------------------------------------------

TlsContext::TlsContext(SslCtxPtr ctx, std::shared_ptr<detail::ContextState> state)
    : ctx_(std::move(ctx)), state_(std::move(state)) {}
TlsContext::TlsContext(TlsContext&&) noexcept = default;
TlsContext& TlsContext::operator=(TlsContext&&) noexcept = default;
TlsContext::~TlsContext() = default;

Role TlsContext::role() const { return state_->role; }

Result<TlsContext> TlsContext::create(Role role, const TlsIdentity& identity, VerifyCache& cache,
                                      const SvidVerifier& verifier) {
  ERR_clear_error();
  const bool server = role == Role::kServer;
  SslCtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  if (!ctx) return fail(Errc::kIo, "TLS context: cannot create (" + take_openssl_error() + ")");
  SSL_CTX* raw = ctx.get();

  if (auto ok = openssl_check(SSL_CTX_set_min_proto_version(raw, TLS1_3_VERSION) == 1 &&
                                  SSL_CTX_set_max_proto_version(raw, TLS1_3_VERSION) == 1,
                              "TLS 1.3 unavailable");
      !ok) {
    return std::unexpected(std::move(ok.error()));
  }
  SSL_CTX_set_mode(raw, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (auto ok = use_identity(raw, identity); !ok) return std::unexpected(std::move(ok.error()));

  auto state = std::make_shared<detail::ContextState>(detail::ContextState{role, cache, verifier});
  // Mutual authentication; the peer's chain goes to verify_peer instead of
  // OpenSSL's path building against a store (we have one per domain).
  SSL_CTX_set_verify(
      raw, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_cert_verify_callback(raw, verify_peer, nullptr);

  if (server) {
    // Stateless tickets only: no server-side cache to bound or to expire.
    SSL_CTX_set_session_cache_mode(raw, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(raw, 1);  // one channel per peer needs one ticket
    if (auto ok = openssl_check(
            SSL_CTX_set_session_id_context(raw, kSessionContext, sizeof kSessionContext - 1) == 1 &&
                SSL_CTX_set_session_ticket_cb(raw, generate_ticket, decrypt_ticket, nullptr) == 1,
            "session tickets");
        !ok) {
      return std::unexpected(std::move(ok.error()));
    }
  } else {
    // The caller caches sessions per peer (ClientSession); OpenSSL keeps none.
    SSL_CTX_set_session_cache_mode(raw, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(raw, keep_session);
  }
  return TlsContext(std::move(ctx), std::move(state));
}

// --- stream ---------------------------------------------------------------------

TlsStream::TlsStream(UniqueFd fd, std::unique_ptr<detail::ConnectionState> state, SslPtr ssl)
    : fd_(std::move(fd)), state_(std::move(state)), ssl_(std::move(ssl)) {}
TlsStream::TlsStream(TlsStream&&) noexcept = default;
TlsStream& TlsStream::operator=(TlsStream&&) noexcept = default;
TlsStream::~TlsStream() = default;

Result<TlsStream> TlsStream::create(TlsContext& context, UniqueFd fd, const ClientSession* resume) {
  if (!context.ctx_ || !context.state_)
    return fail(Errc::kInvalidArgument, "TLS stream: no context");
  if (!fd) return fail(Errc::kInvalidArgument, "TLS stream: no socket");
  int type = 0;
  socklen_t type_length = sizeof type;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &type_length) != 0) {
    return fail_errno("TLS stream: checking the socket", errno);
  }
  if (type != SOCK_STREAM) return fail(Errc::kInvalidArgument, "TLS stream: not a stream socket");
  const ContextState& shared = *context.state_;
  if (resume != nullptr && shared.role == Role::kServer) {
    return fail(Errc::kInvalidArgument, "TLS stream: only a client resumes a session");
  }

  ERR_clear_error();
  const BIO_METHOD* method = socket_method();
  if (method == nullptr) return fail(Errc::kIo, "TLS stream: cannot create the socket BIO method");
  SslPtr ssl(SSL_new(context.ctx_.get()));
  BioPtr bio(BIO_new(method));
  if (!ssl || !bio) return fail(Errc::kIo, "TLS stream: out of memory");
  BIO_set_data(bio.get(), reinterpret_cast<void*>(static_cast<std::intptr_t>(fd.get())));
  SSL_set_bio(ssl.get(), bio.get(), bio.get());  // one BIO both ways: one reference
  bio.release();

  auto state = std::make_unique<ConnectionState>();
  state->context = context.state_;
  if (SSL_set_ex_data(ssl.get(), connection_index(), state.get()) != 1) {
    return fail(Errc::kIo, "TLS stream: cannot attach the connection state");
  }
  if (shared.role == Role::kServer) {
    SSL_set_accept_state(ssl.get());
  } else {
    SSL_set_connect_state(ssl.get());
    const SslSessionPtr offered = resume != nullptr && offerable(*resume, shared.verifier)
                                      ? private_copy(resume->session.get())
                                      : nullptr;
    if (offered && SSL_set_session(ssl.get(), offered.get()) == 1) {
      state->offered_peer = resume->peer;
      state->offered_generation = resume->bundle_generation;
    }
  }
  ERR_clear_error();
  return TlsStream(std::move(fd), std::move(state), std::move(ssl));
}

TlsStream::Status TlsStream::handshake() {
  if (!ssl_ || !state_ || state_->failed) return Status::kFailed;
  if (state_->done) return Status::kDone;
  ERR_clear_error();
  errno = 0;
  const int result = SSL_do_handshake(ssl_.get());
  if (result != 1) {
    const IoResult io = io_failure(result);
    if (io.status == IoStatus::kWantRead) return Status::kWantRead;
    if (io.status == IoStatus::kWantWrite) return Status::kWantWrite;
    return Status::kFailed;  // io_failure recorded why
  }
  auto settled = settled_peer(ssl_.get(), *state_);
  if (!settled) {
    state_->failed = true;
    state_->error = "TLS handshake completed without a verified peer";
    return Status::kFailed;
  }
  state_->resumed = SSL_session_reused(ssl_.get()) == 1;
  state_->peer = std::move(settled->first);
  state_->peer_generation = settled->second;
  state_->done = true;
  return Status::kDone;
}

const VerifiedSvid* TlsStream::peer() const {
  return state_ && state_->done && !state_->failed && state_->peer ? &*state_->peer : nullptr;
}

bool TlsStream::resumed() const { return state_ && state_->done && state_->resumed; }

std::optional<ClientSession> TlsStream::session() const {
  if (!state_ || !state_->done || state_->failed || !state_->peer || !state_->newest_session ||
      state_->context->role != Role::kClient) {
    return std::nullopt;
  }
  SSL_SESSION* session = state_->newest_session.get();
  if (SSL_SESSION_up_ref(session) != 1) return std::nullopt;
  return ClientSession{SslSessionPtr(session), *state_->peer, state_->peer_generation};
}

const std::optional<VerifyFailure>& TlsStream::verify_failure() const {
  static const std::optional<VerifyFailure> kNone;
  return state_ ? state_->verify_failure : kNone;
}

const std::string& TlsStream::error() const {
  static const std::string kMovedFrom = "TLS stream moved from";
  return state_ ? state_->error : kMovedFrom;
}

TlsStream::IoResult TlsStream::read(std::span<std::uint8_t> buffer) {
  if (!ssl_ || !state_ || state_->failed) return {IoStatus::kFailed, 0};
  if (!state_->done) {
    state_->failed = true;
    state_->error = "TLS read before the handshake completed";
    return {IoStatus::kFailed, 0};
  }
  if (buffer.empty()) return {IoStatus::kOk, 0};
  ERR_clear_error();
  errno = 0;
  std::size_t got = 0;
  const int result = SSL_read_ex(ssl_.get(), buffer.data(), buffer.size(), &got);
  if (result == 1) return {IoStatus::kOk, got};
  return io_failure(result);
}

TlsStream::IoResult TlsStream::write(std::span<const std::uint8_t> data) {
  if (!ssl_ || !state_ || state_->failed) return {IoStatus::kFailed, 0};
  if (!state_->done) {
    state_->failed = true;
    state_->error = "TLS write before the handshake completed";
    return {IoStatus::kFailed, 0};
  }
  if (data.empty()) return {IoStatus::kOk, 0};
  ERR_clear_error();
  errno = 0;
  std::size_t written = 0;
  const int result = SSL_write_ex(ssl_.get(), data.data(), data.size(), &written);
  if (result == 1) return {IoStatus::kOk, written};
  return io_failure(result);
}

void TlsStream::shutdown() {
  if (!ssl_ || !state_ || !state_->done || state_->failed || state_->shutdown_sent) return;
  state_->shutdown_sent = true;
  ERR_clear_error();
  SSL_shutdown(ssl_.get());  // sends close_notify if the socket takes it
  ERR_clear_error();
}

bool TlsStream::pending_read() const { return ssl_ && SSL_pending(ssl_.get()) > 0; }

TlsStream::IoResult TlsStream::io_failure(int ssl_result) {
  const int saved_errno = errno;
  const int error = SSL_get_error(ssl_.get(), ssl_result);
  switch (error) {
    case SSL_ERROR_WANT_READ:
      return {IoStatus::kWantRead, 0};
    case SSL_ERROR_WANT_WRITE:
      return {IoStatus::kWantWrite, 0};
    case SSL_ERROR_ZERO_RETURN:
      if (state_->done) return {IoStatus::kClosed, 0};
      break;
    default:
      break;
  }
  errno = saved_errno;
  record_failure(error);
  return {IoStatus::kFailed, 0};
}

void TlsStream::record_failure(int ssl_error) {
  const int saved_errno = errno;
  state_->failed = true;
  const std::string phase = state_->done ? "" : " during the handshake";
  const unsigned long code = ERR_peek_error();
  const bool ssl_reason = ERR_GET_LIB(code) == ERR_LIB_SSL;
  if (state_->verify_failure) {
    const VerifyFailure& failure = *state_->verify_failure;
    state_->error = "peer certificate rejected (" + std::string(to_string(failure.reason)) +
                    "): " + failure.detail;
  } else if (ssl_reason && ERR_GET_REASON(code) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    state_->verify_failure =
        VerifyFailure{TF_REASON_INVALID_SVID, "chain: no certificate presented"};
    state_->error = "peer certificate rejected (invalid-svid): the peer presented none";
  } else if ((ssl_reason && ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
             (ssl_error == SSL_ERROR_SYSCALL && saved_errno == 0) ||
             ssl_error == SSL_ERROR_ZERO_RETURN) {
    state_->error = state_->done ? "peer closed the connection without close_notify"
                                 : "peer closed the connection during the handshake";
  } else if (ssl_error == SSL_ERROR_SYSCALL) {
    state_->error = describe_errno("TLS socket" + phase, saved_errno);
  } else if (ssl_reason && ERR_GET_REASON(code) >= SSL_AD_REASON_OFFSET) {
    // OpenSSL files a received alert as a reason past this offset.
    state_->error = "TLS" + phase + ": the peer refused us (" + take_openssl_error() + ")";
  } else {
    const std::string reason = take_openssl_error();
    state_->error = "TLS" + phase + ": " + (reason.empty() ? "unknown error" : reason);
  }
  ERR_clear_error();
}

}  // namespace trustfence::tls
