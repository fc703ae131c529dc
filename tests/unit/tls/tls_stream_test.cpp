#include "trustfence/tls/tls_stream.hpp"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "support/test_ca.hpp"

namespace {

using namespace std::chrono_literals;
using trustfence::UniqueFd;
using trustfence::identity::SpiffeId;
using trustfence::identity::TrustDomain;
using trustfence::test::CertSpec;
using trustfence::test::chain_of;
using trustfence::test::Issued;
using trustfence::test::leaf_spec;
using trustfence::test::TestCa;
using trustfence::test::TimePoint;
using trustfence::test::Validity;
using trustfence::tls::Bundle;
using trustfence::tls::BundleSet;
using trustfence::tls::Chain;
using trustfence::tls::ClientSession;
using trustfence::tls::decode_ticket_identity;
using trustfence::tls::encode_ticket_identity;
using trustfence::tls::make_tls_identity;
using trustfence::tls::Role;
using trustfence::tls::SslCtxPtr;
using trustfence::tls::SslPtr;
using trustfence::tls::SvidVerifier;
using trustfence::tls::TicketIdentity;
using trustfence::tls::TlsContext;
using trustfence::tls::TlsIdentity;
using trustfence::tls::TlsStream;
using trustfence::tls::VerifyCache;
using Status = TlsStream::Status;
using IoStatus = TlsStream::IoStatus;

constexpr const char* kTeamA = "team-a.gke.local";
constexpr const char* kTeamB = "team-b.eks.local";
constexpr const char* kServerId = "spiffe://team-a.gke.local/node/agent-1";
constexpr const char* kClientId = "spiffe://team-b.eks.local/node/agent-2";
constexpr int kMaxRounds = 200;

TrustDomain td(const char* name) { return TrustDomain::parse(name).value(); }

// One agent's view of trust: its bundles, a clock it controls, a cache.
// Not movable: the verifier and the cache refer to the members before them.
struct Trust {
  explicit Trust(TimePoint start) : now(start) {}
  Trust(const Trust&) = delete;

  void add(const char* name, const TestCa& root) {
    Chain authorities;
    authorities.push_back(root.share());
    ASSERT_TRUE(bundles.add(Bundle{td(name), std::move(authorities), std::nullopt, std::nullopt}));
  }

  TimePoint now;
  BundleSet bundles;
  SvidVerifier verifier{bundles, [this] { return now; }};
  VerifyCache cache{verifier};
};

std::pair<UniqueFd, UniqueFd> socket_pair() {
  int fds[2] = {-1, -1};
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

bool finished(Status status) { return status == Status::kDone || status == Status::kFailed; }

// Steps both ends in turn, as an epoll loop would, until both report true
// or the rounds run out.
void pump(const std::function<bool()>& one, const std::function<bool()>& other) {
  bool one_done = false;
  bool other_done = false;
  for (int round = 0; round < kMaxRounds && !(one_done && other_done); ++round) {
    if (!one_done) one_done = one();
    if (!other_done) other_done = other();
  }
}

struct Outcome {
  Status client = Status::kWantWrite;
  Status server = Status::kWantRead;
};

Outcome handshake(TlsStream& client, TlsStream& server) {
  Outcome outcome;
  pump([&] { return finished(outcome.client = client.handshake()); },
       [&] { return finished(outcome.server = server.handshake()); });
  return outcome;
}

// Reads until the stream fails or closes or the rounds run out; what TLS
// 1.3 makes of a client whose certificate the server refused after the
// client already finished.
IoStatus read_until_end(TlsStream& stream) {
  std::uint8_t buffer[256];
  IoStatus status = IoStatus::kWantRead;
  for (int round = 0; round < kMaxRounds; ++round) {
    status = stream.read(buffer).status;
    if (status == IoStatus::kFailed || status == IoStatus::kClosed) break;
  }
  return status;
}

// Reads what has arrived (the server's tickets) without expecting data.
void read_available(TlsStream& stream) {
  std::uint8_t buffer[256];
  for (int round = 0; round < 4; ++round) {
    if (stream.read(buffer).status != IoStatus::kOk) break;
  }
}

TlsIdentity identity_from(const TestCa& issuer, const CertSpec& spec, bool with_issuer) {
  Issued leaf = issuer.issue(spec);
  Chain chain =
      with_issuer ? chain_of({leaf.cert.get(), issuer.cert()}) : chain_of({leaf.cert.get()});
  return make_tls_identity(std::move(chain), std::move(leaf.key)).value();
}

struct Connection {
  TlsStream client;
  TlsStream server;
};

Connection connect(TlsContext& client, TlsContext& server, const ClientSession* resume = nullptr) {
  auto [client_fd, server_fd] = socket_pair();
  auto client_stream = TlsStream::create(client, std::move(client_fd), resume);
  auto server_stream = TlsStream::create(server, std::move(server_fd));
  EXPECT_TRUE(client_stream.has_value()) << client_stream.error().message;
  EXPECT_TRUE(server_stream.has_value()) << server_stream.error().message;
  return Connection{std::move(client_stream).value(), std::move(server_stream).value()};
}

// Two clusters with their own roots (team-b with an intermediate), and
// team-c that has a CA but no bundle anywhere. Both agents trust a and b.
struct World {
  TimePoint start = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  TestCa root_a = TestCa::root(kTeamA);
  TestCa root_b = TestCa::root(kTeamB);
  TestCa intermediate_b = root_b.intermediate("team-b intermediate");
  TestCa root_c = TestCa::root("team-c.local");

  std::unique_ptr<Trust> make_trust() const {
    auto trust = std::make_unique<Trust>(start);
    trust->add(kTeamA, root_a);
    trust->add(kTeamB, root_b);
    return trust;
  }
  // The server's SVID is issued by its root directly; the client's comes
  // with team-b's intermediate.
  TlsIdentity server_identity() const { return identity_from(root_a, leaf_spec(kServerId), false); }
  TlsIdentity client_identity() const {
    return identity_from(intermediate_b, leaf_spec(kClientId), true);
  }
};

class TlsStreamTest : public ::testing::Test {
 protected:
  TlsContext server_context(const TlsIdentity& identity) {
    auto context =
        TlsContext::create(Role::kServer, identity, server_trust_->cache, server_trust_->verifier);
    EXPECT_TRUE(context.has_value()) << context.error().message;
    return std::move(context).value();
  }
  TlsContext client_context(const TlsIdentity& identity, Trust& trust) {
    auto context = TlsContext::create(Role::kClient, identity, trust.cache, trust.verifier);
    EXPECT_TRUE(context.has_value()) << context.error().message;
    return std::move(context).value();
  }
  TlsContext server_context() { return server_context(server_identity_); }
  TlsContext client_context() { return client_context(client_identity_, *client_trust_); }

  // A full handshake that succeeds, and the session the client keeps.
  std::optional<ClientSession> first_session(TlsContext& client, TlsContext& server) {
    Connection first = connect(client, server);
    const Outcome outcome = handshake(first.client, first.server);
    EXPECT_EQ(outcome.client, Status::kDone) << first.client.error();
    EXPECT_EQ(outcome.server, Status::kDone) << first.server.error();
    EXPECT_FALSE(first.client.resumed());
    EXPECT_FALSE(first.server.resumed());
    read_available(first.client);
    return first.client.session();
  }

  // Whether both ends resume with session: the control that makes a later
  // refusal mean something. The session stays usable afterwards.
  bool resumes(TlsContext& client, TlsContext& server, const ClientSession& session) {
    Connection connection = connect(client, server, &session);
    const Outcome outcome = handshake(connection.client, connection.server);
    return outcome.client == Status::kDone && outcome.server == Status::kDone &&
           connection.client.resumed() && connection.server.resumed();
  }

  World world_;
  std::unique_ptr<Trust> server_trust_ = world_.make_trust();
  std::unique_ptr<Trust> client_trust_ = world_.make_trust();
  TlsIdentity server_identity_ = world_.server_identity();
  TlsIdentity client_identity_ = world_.client_identity();
};

// --- handshakes -------------------------------------------------------------------

struct HandshakeCase {
  std::string name;
  std::function<TlsIdentity(const World&)> client;
  std::function<TlsIdentity(const World&)> server;
  Role rejected_by;  // the end whose verification fails, if any
  tf_reason reason;  // TF_REASON_NONE: both ends succeed
  std::string detail_part;
};

void PrintTo(const HandshakeCase& c, std::ostream* os) { *os << c.name; }

class Handshake : public TlsStreamTest, public ::testing::WithParamInterface<HandshakeCase> {};

TEST_P(Handshake, EachEndVerifiesThePeerWithItsOwnDomainsBundle) {
  const HandshakeCase& c = GetParam();
  const TlsIdentity client_identity = c.client(world_);
  const TlsIdentity server_identity = c.server(world_);
  TlsContext server = server_context(server_identity);
  TlsContext client = client_context(client_identity, *client_trust_);
  Connection connection = connect(client, server);
  const Outcome outcome = handshake(connection.client, connection.server);

  if (c.reason == TF_REASON_NONE) {
    ASSERT_EQ(outcome.client, Status::kDone) << connection.client.error();
    ASSERT_EQ(outcome.server, Status::kDone) << connection.server.error();
    ASSERT_NE(connection.server.peer(), nullptr);
    ASSERT_NE(connection.client.peer(), nullptr);
    EXPECT_EQ(connection.server.peer()->id, SpiffeId::parse(kClientId).value());
    EXPECT_EQ(connection.client.peer()->id, SpiffeId::parse(kServerId).value());
    EXPECT_FALSE(connection.client.verify_failure().has_value());
    EXPECT_FALSE(connection.server.verify_failure().has_value());
    return;
  }
  TlsStream& rejecting = c.rejected_by == Role::kServer ? connection.server : connection.client;
  TlsStream& rejected = c.rejected_by == Role::kServer ? connection.client : connection.server;
  const Status rejecting_status = c.rejected_by == Role::kServer ? outcome.server : outcome.client;
  const Status rejected_status = c.rejected_by == Role::kServer ? outcome.client : outcome.server;

  ASSERT_EQ(rejecting_status, Status::kFailed);
  EXPECT_EQ(rejecting.peer(), nullptr);
  ASSERT_TRUE(rejecting.verify_failure().has_value()) << rejecting.error();
  EXPECT_EQ(rejecting.verify_failure()->reason, c.reason) << rejecting.verify_failure()->detail;
  EXPECT_NE(rejecting.verify_failure()->detail.find(c.detail_part), std::string::npos)
      << rejecting.verify_failure()->detail;
  EXPECT_NE(rejecting.error().find("peer certificate rejected"), std::string::npos)
      << rejecting.error();

  // The refused end learns of it from the alert: a TLS 1.3 client that
  // already finished sees it on its first read.
  if (rejected_status == Status::kDone) {
    EXPECT_EQ(read_until_end(rejected), IoStatus::kFailed);
  } else {
    EXPECT_EQ(rejected_status, Status::kFailed);
  }
  EXPECT_FALSE(rejected.error().empty());
  EXPECT_NE(rejected.error().find("alert"), std::string::npos) << rejected.error();
  EXPECT_FALSE(rejected.verify_failure().has_value());
}

TlsIdentity client_by_intermediate(const World& w) { return w.client_identity(); }
TlsIdentity server_by_root(const World& w) { return w.server_identity(); }

const HandshakeCase kHandshakeCases[] = {
    {"ClientLeafAndIntermediateServerLeafByRoot", client_by_intermediate, server_by_root,
     Role::kServer, TF_REASON_NONE, ""},
    {"ClientLeafByRootServerLeafAndIntermediate",
     [](const World& w) { return identity_from(w.root_b, leaf_spec(kClientId), false); },
     [](const World& w) {
       const TestCa intermediate = w.root_a.intermediate("team-a intermediate");
       return identity_from(intermediate, leaf_spec(kServerId), true);
     },
     Role::kServer, TF_REASON_NONE, ""},
    // Claims team-b, minted by team-a's CA: checked against team-b's bundle.
    {"SpoofedClientDomain",
     [](const World& w) { return identity_from(w.root_a, leaf_spec(kClientId), false); },
     server_by_root, Role::kServer, TF_REASON_BAD_CHAIN, ""},
    {"SpoofedServerDomain", client_by_intermediate,
     [](const World& w) { return identity_from(w.intermediate_b, leaf_spec(kServerId), true); },
     Role::kClient, TF_REASON_BAD_CHAIN, ""},
    {"ClientOfADomainWithoutBundle",
     [](const World& w) {
       return identity_from(w.root_c, leaf_spec("spiffe://team-c.local/node/agent-3"), false);
     },
     server_by_root, Role::kServer, TF_REASON_NO_BUNDLE, "team-c.local"},
    {"ServerOfADomainWithoutBundle", client_by_intermediate,
     [](const World& w) {
       return identity_from(w.root_c, leaf_spec("spiffe://team-c.local/node/agent-3"), false);
     },
     Role::kClient, TF_REASON_NO_BUNDLE, "team-c.local"},
    {"ExpiredClientLeaf",
     [](const World& w) {
       return identity_from(w.intermediate_b,
                            leaf_spec(kClientId, Validity{w.start - 2h, w.start - 1h}), true);
     },
     server_by_root, Role::kServer, TF_REASON_EXPIRED, ""},
    {"ExpiredServerLeaf", client_by_intermediate,
     [](const World& w) {
       return identity_from(w.root_a, leaf_spec(kServerId, Validity{w.start - 2h, w.start - 1h}),
                            false);
     },
     Role::kClient, TF_REASON_EXPIRED, ""},
    {"ClientWithTwoUriSans",
     [](const World& w) {
       CertSpec spec = leaf_spec(kClientId);
       spec.uris.push_back("spiffe://team-b.eks.local/node/other");
       return identity_from(w.intermediate_b, spec, true);
     },
     server_by_root, Role::kServer, TF_REASON_INVALID_SVID, "2 URI SANs"},
};

INSTANTIATE_TEST_SUITE_P(TlsStream, Handshake, ::testing::ValuesIn(kHandshakeCases),
                         [](const auto& info) { return info.param.name; });

// --- peers that are not like us -----------------------------------------------------

// A plain OpenSSL end, configured by the test, on its own socket.
struct RawPeer {
  SslCtxPtr ctx;
  SslPtr ssl;
  UniqueFd fd;

  // true once finished, either way
  bool step(int* result) {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl.get());
    if (r == 1) {
      *result = 1;
      return true;
    }
    const int error = SSL_get_error(ssl.get(), r);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return false;
    *result = -1;
    return true;
  }
};

RawPeer raw_peer(Role role, int max_version, const TlsIdentity* identity, UniqueFd fd) {
  RawPeer peer{
      SslCtxPtr(SSL_CTX_new(role == Role::kServer ? TLS_server_method() : TLS_client_method())),
      nullptr, std::move(fd)};
  SSL_CTX_set_max_proto_version(peer.ctx.get(), max_version);
  SSL_CTX_set_verify(peer.ctx.get(), SSL_VERIFY_NONE, nullptr);
  if (identity != nullptr) {
    EXPECT_EQ(SSL_CTX_use_certificate(peer.ctx.get(), identity->chain.front().get()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey(peer.ctx.get(), identity->key.get()), 1);
  }
  peer.ssl.reset(SSL_new(peer.ctx.get()));
  SSL_set_fd(peer.ssl.get(), peer.fd.get());
  if (role == Role::kServer) {
    SSL_set_accept_state(peer.ssl.get());
  } else {
    SSL_set_connect_state(peer.ssl.get());
  }
  return peer;
}

TEST_F(TlsStreamTest, ServerRefusesAClientWithoutCertificate) {
  TlsContext server = server_context();
  auto [client_fd, server_fd] = socket_pair();
  RawPeer client = raw_peer(Role::kClient, TLS1_3_VERSION, nullptr, std::move(client_fd));
  TlsStream stream = TlsStream::create(server, std::move(server_fd)).value();
  int raw_result = 0;
  Status status = Status::kWantRead;
  pump([&] { return client.step(&raw_result); },
       [&] { return finished(status = stream.handshake()); });
  ASSERT_EQ(status, Status::kFailed);
  ASSERT_TRUE(stream.verify_failure().has_value()) << stream.error();
  EXPECT_EQ(stream.verify_failure()->reason, TF_REASON_INVALID_SVID);
  EXPECT_EQ(stream.peer(), nullptr);
}

struct OldPeerCase {
  std::string name;
  Role our_role;
};

void PrintTo(const OldPeerCase& c, std::ostream* os) { *os << c.name; }

class OldPeer : public TlsStreamTest, public ::testing::WithParamInterface<OldPeerCase> {};

TEST_P(OldPeer, Tls12OnlyPeerIsRefused) {
  const Role ours = GetParam().our_role;
  const Role theirs = ours == Role::kServer ? Role::kClient : Role::kServer;
  TlsContext context = ours == Role::kServer ? server_context() : client_context();
  auto [our_fd, their_fd] = socket_pair();
  RawPeer peer = raw_peer(theirs, TLS1_2_VERSION, &client_identity_, std::move(their_fd));
  TlsStream stream = TlsStream::create(context, std::move(our_fd)).value();
  int raw_result = 0;
  Status status = Status::kWantRead;
  pump([&] { return finished(status = stream.handshake()); },
       [&] { return peer.step(&raw_result); });
  EXPECT_EQ(status, Status::kFailed);
  EXPECT_EQ(raw_result, -1);
  EXPECT_EQ(stream.peer(), nullptr);
  EXPECT_FALSE(stream.error().empty());
  EXPECT_FALSE(stream.verify_failure().has_value());
}

INSTANTIATE_TEST_SUITE_P(TlsStream, OldPeer,
                         ::testing::Values(OldPeerCase{"OurServer", Role::kServer},
                                           OldPeerCase{"OurClient", Role::kClient}),
                         [](const auto& info) { return info.param.name; });

struct GarbageCase {
  std::string name;
  std::vector<std::uint8_t> bytes;
};

void PrintTo(const GarbageCase& c, std::ostream* os) { *os << c.name; }

std::vector<std::uint8_t> random_bytes(std::size_t size, unsigned seed) {
  std::mt19937 generator(seed);
  std::vector<std::uint8_t> bytes(size);
  for (auto& byte : bytes) byte = static_cast<std::uint8_t>(generator());
  return bytes;
}

std::vector<std::uint8_t> text(const std::string& s) { return {s.begin(), s.end()}; }

const GarbageCase kGarbageCases[] = {
    {"RandomBytes", random_bytes(4096, 7)},
    {"PlainHttp", text("GET / HTTP/1.1\r\nHost: agent\r\n\r\n")},
    {"HandshakeRecordClaiming64KiB", {0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00, 0xff, 0xfb}},
    {"ZerosLargerThanARecord", std::vector<std::uint8_t>(64 * 1024, 0)},
    {"AlertRecordTruncated", {0x15, 0x03, 0x03, 0x00, 0x02, 0x02}},
};

class Garbage : public TlsStreamTest, public ::testing::WithParamInterface<GarbageCase> {
 protected:
  // Sends the garbage and closes, as a broken or hostile peer would.
  static void send_and_close(UniqueFd fd, const std::vector<std::uint8_t>& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd.get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<std::size_t>(n);
    }
  }
};

TEST_P(Garbage, FromAClientFailsTheServerHandshake) {
  TlsContext server = server_context();
  auto [client_fd, server_fd] = socket_pair();
  TlsStream stream = TlsStream::create(server, std::move(server_fd)).value();
  send_and_close(std::move(client_fd), GetParam().bytes);
  Status status = Status::kWantRead;
  pump([&] { return finished(status = stream.handshake()); }, [] { return true; });
  EXPECT_EQ(status, Status::kFailed);
  EXPECT_FALSE(stream.error().empty());
  EXPECT_FALSE(stream.verify_failure().has_value());
}

TEST_P(Garbage, FromAServerFailsTheClientHandshake) {
  TlsContext client = client_context();
  auto [client_fd, server_fd] = socket_pair();
  TlsStream stream = TlsStream::create(client, std::move(client_fd)).value();
  ASSERT_EQ(stream.handshake(), Status::kWantRead);  // the ClientHello is out
  send_and_close(std::move(server_fd), GetParam().bytes);
  Status status = Status::kWantRead;
  pump([&] { return finished(status = stream.handshake()); }, [] { return true; });
  EXPECT_EQ(status, Status::kFailed);
  EXPECT_FALSE(stream.error().empty());
}

TEST_P(Garbage, AfterTheHandshakeFailsTheRead) {
  TlsContext server = server_context();
  TlsContext client = client_context();
  Connection connection = connect(client, server);
  const Outcome outcome = handshake(connection.client, connection.server);
  ASSERT_EQ(outcome.server, Status::kDone) << connection.server.error();
  const auto& bytes = GetParam().bytes;
  ASSERT_GT(::send(connection.client.fd(), bytes.data(), bytes.size(), MSG_NOSIGNAL), 0);
  ::shutdown(connection.client.fd(), SHUT_WR);
  EXPECT_EQ(read_until_end(connection.server), IoStatus::kFailed);
  EXPECT_FALSE(connection.server.error().empty());
  // A failed stream stays failed, and says so without touching OpenSSL.
  std::uint8_t byte = 0;
  EXPECT_EQ(connection.server.write({&byte, 1}).status, IoStatus::kFailed);
  connection.server.shutdown();
}

INSTANTIATE_TEST_SUITE_P(TlsStream, Garbage, ::testing::ValuesIn(kGarbageCases),
                         [](const auto& info) { return info.param.name; });

TEST_F(TlsStreamTest, PeerClosingDuringTheHandshakeIsNamed) {
  TlsContext server = server_context();
  auto [client_fd, server_fd] = socket_pair();
  TlsStream stream = TlsStream::create(server, std::move(server_fd)).value();
  client_fd.reset();
  EXPECT_EQ(stream.handshake(), Status::kFailed);
  EXPECT_NE(stream.error().find("closed"), std::string::npos) << stream.error();
}

// --- resumption ------------------------------------------------------------------

TEST_F(TlsStreamTest, ResumedConnectionKnowsBothPeersWithoutCertificates) {
  TlsContext server = server_context();
  TlsContext client = client_context();
  const auto session = first_session(client, server);
  ASSERT_TRUE(session.has_value());
  ASSERT_TRUE(session->session);
  EXPECT_EQ(session->peer.id, SpiffeId::parse(kServerId).value());
  EXPECT_EQ(session->bundle_generation, client_trust_->bundles.generation());

  const auto server_checks = server_trust_->cache.stats();
  const auto client_checks = client_trust_->cache.stats();
  Connection second = connect(client, server, &*session);
  const Outcome outcome = handshake(second.client, second.server);
  ASSERT_EQ(outcome.client, Status::kDone) << second.client.error();
  ASSERT_EQ(outcome.server, Status::kDone) << second.server.error();
  EXPECT_TRUE(second.client.resumed());
  EXPECT_TRUE(second.server.resumed());
  ASSERT_NE(second.server.peer(), nullptr);
  ASSERT_NE(second.client.peer(), nullptr);
  EXPECT_EQ(second.server.peer()->id, SpiffeId::parse(kClientId).value());
  EXPECT_EQ(second.client.peer()->id, SpiffeId::parse(kServerId).value());
  EXPECT_EQ(second.client.peer()->not_after, session->peer.not_after);
  // No certificate was presented, so none was verified.
  EXPECT_EQ(server_trust_->cache.stats().hits + server_trust_->cache.stats().misses,
            server_checks.hits + server_checks.misses);
  EXPECT_EQ(client_trust_->cache.stats().hits + client_trust_->cache.stats().misses,
            client_checks.hits + client_checks.misses);

  // The keys work, and the resumed connection hands out a fresh session
  // that resumes again with the identity the ticket carried.
  const std::uint8_t hello[] = {'h', 'i'};
  ASSERT_EQ(second.server.write(hello).status, IoStatus::kOk);
  std::uint8_t buffer[16];
  TlsStream::IoResult got{IoStatus::kWantRead, 0};
  for (int round = 0; round < kMaxRounds && got.status != IoStatus::kOk; ++round) {
    got = second.client.read(buffer);
  }
  ASSERT_EQ(got.status, IoStatus::kOk);
  EXPECT_EQ(std::string(buffer, buffer + got.bytes), "hi");
  read_available(second.client);
  const auto renewed = second.client.session();
  ASSERT_TRUE(renewed.has_value());
  Connection third = connect(client, server, &*renewed);
  const Outcome again = handshake(third.client, third.server);
  ASSERT_EQ(again.server, Status::kDone) << third.server.error();
  ASSERT_EQ(again.client, Status::kDone) << third.client.error();
  EXPECT_TRUE(third.server.resumed());
  EXPECT_EQ(third.server.peer()->id, SpiffeId::parse(kClientId).value());
}

// The client's bundles were replaced: the session was verified under the
// old ones, so it is not offered; a full handshake verifies afresh.
TEST_F(TlsStreamTest, ClientDoesNotOfferASessionAfterItsBundlesChanged) {
  TlsContext server = server_context();
  const auto session = [&] {
    TlsContext client = client_context();
    auto kept = first_session(client, server);
    EXPECT_TRUE(kept && resumes(client, server, *kept));
    return kept;
  }();
  ASSERT_TRUE(session.has_value());
  auto reloaded = world_.make_trust();
  ASSERT_NE(reloaded->bundles.generation(), session->bundle_generation);
  TlsContext client = client_context(client_identity_, *reloaded);
  Connection second = connect(client, server, &*session);
  const Outcome outcome = handshake(second.client, second.server);
  ASSERT_EQ(outcome.client, Status::kDone) << second.client.error();
  ASSERT_EQ(outcome.server, Status::kDone) << second.server.error();
  EXPECT_FALSE(second.client.resumed());
  EXPECT_FALSE(second.server.resumed());
  EXPECT_EQ(reloaded->cache.stats().misses, 1u);
  EXPECT_EQ(second.client.peer()->id, SpiffeId::parse(kServerId).value());
  EXPECT_EQ(second.server.peer()->id, SpiffeId::parse(kClientId).value());
}

// The server's bundles changed after it issued the ticket: the ticket's
// generation is stale, so it falls back to a full handshake.
TEST_F(TlsStreamTest, ServerRefusesATicketFromAnotherBundleGeneration) {
  TlsContext server = server_context();
  TlsContext client = client_context();
  const auto session = first_session(client, server);
  ASSERT_TRUE(session.has_value());
  ASSERT_TRUE(resumes(client, server, *session));
  server_trust_->add(kTeamB, world_.root_b);  // same trust, new generation
  const auto misses = server_trust_->cache.stats().misses;
  Connection second = connect(client, server, &*session);
  const Outcome outcome = handshake(second.client, second.server);
  ASSERT_EQ(outcome.client, Status::kDone) << second.client.error();
  ASSERT_EQ(outcome.server, Status::kDone) << second.server.error();
  EXPECT_FALSE(second.client.resumed());
  EXPECT_FALSE(second.server.resumed());
  EXPECT_EQ(server_trust_->cache.stats().misses, misses + 1);
  EXPECT_EQ(second.server.peer()->id, SpiffeId::parse(kClientId).value());
  EXPECT_EQ(second.client.peer()->id, SpiffeId::parse(kServerId).value());
}

// The client's SVID expired since the ticket was issued: the server does
// not resume, verifies the certificate again and refuses it.
TEST_F(TlsStreamTest, ServerRefusesATicketWhoseIdentityExpired) {
  const TlsIdentity short_lived =
      identity_from(world_.intermediate_b,
                    leaf_spec(kClientId, Validity{world_.start - 1h, world_.start + 10min}), true);
  TlsContext server = server_context();
  TlsContext client = client_context(short_lived, *client_trust_);
  const auto session = first_session(client, server);
  ASSERT_TRUE(session.has_value());
  ASSERT_TRUE(resumes(client, server, *session));
  server_trust_->now = world_.start + 11min;
  Connection second = connect(client, server, &*session);
  const Outcome outcome = handshake(second.client, second.server);
  ASSERT_EQ(outcome.server, Status::kFailed);
  EXPECT_FALSE(second.server.resumed());
  ASSERT_TRUE(second.server.verify_failure().has_value()) << second.server.error();
  EXPECT_EQ(second.server.verify_failure()->reason, TF_REASON_EXPIRED);
}

// The server's SVID expired by the client's clock: the session is not
// offered, and the full handshake refuses the server.
TEST_F(TlsStreamTest, ClientDoesNotOfferASessionWhosePeerExpired) {
  TlsContext server = server_context();
  TlsContext client = client_context();
  const auto session = first_session(client, server);
  ASSERT_TRUE(session.has_value());
  ASSERT_TRUE(resumes(client, server, *session));
  client_trust_->now = session->peer.not_after + 1s;
  Connection second = connect(client, server, &*session);
  const Outcome outcome = handshake(second.client, second.server);
  ASSERT_EQ(outcome.client, Status::kFailed);
  EXPECT_FALSE(second.client.resumed());
  ASSERT_TRUE(second.client.verify_failure().has_value()) << second.client.error();
  EXPECT_EQ(second.client.verify_failure()->reason, TF_REASON_EXPIRED);
}

TEST_F(TlsStreamTest, ServerStreamsTakeNoSession) {
  TlsContext server = server_context();
  TlsContext client = client_context();
  const auto session = first_session(client, server);
  ASSERT_TRUE(session.has_value());
  auto [fd, other] = socket_pair();
  EXPECT_FALSE(TlsStream::create(server, std::move(fd), &*session).has_value());
}

struct TicketCase {
  std::string name;
  std::function<void(std::string&)> damage;
};

void PrintTo(const TicketCase& c, std::ostream* os) { *os << c.name; }

class TicketIdentityDecoding : public ::testing::TestWithParam<TicketCase> {
 protected:
  static TicketIdentity valid() {
    return TicketIdentity{SpiffeId::parse(kClientId).value(),
                          TimePoint(std::chrono::seconds(1'900'000'000)), 42};
  }
};

TEST(TlsStreamTicketIdentity, RoundTrips) {
  const TicketIdentity identity{SpiffeId::parse(kClientId).value(),
                                TimePoint(std::chrono::seconds(1'900'000'000)), 42};
  const std::string encoded = encode_ticket_identity(identity);
  const auto decoded = decode_ticket_identity(
      {reinterpret_cast<const std::uint8_t*>(encoded.data()), encoded.size()});
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->id, identity.id);
  EXPECT_EQ(decoded->not_after, identity.not_after);
  EXPECT_EQ(decoded->bundle_generation, 42u);
}

TEST_P(TicketIdentityDecoding, RefusesMalformedData) {
  std::string data = encode_ticket_identity(valid());
  GetParam().damage(data);
  EXPECT_FALSE(
      decode_ticket_identity({reinterpret_cast<const std::uint8_t*>(data.data()), data.size()})
          .has_value());
}

// Rewrites the ID and its length prefix (bytes 17..18).
std::function<void(std::string&)> with_id(const std::string& id) {
  return [id](std::string& data) {
    data.resize(19);
    data[17] = static_cast<char>(id.size() >> 8);
    data[18] = static_cast<char>(id.size() & 0xff);
    data += id;
  };
}

const TicketCase kTicketCases[] = {
    {"Empty", [](std::string& d) { d.clear(); }},
    {"HeaderOnly", [](std::string& d) { d.resize(19); }},
    {"UnknownVersion", [](std::string& d) { d[0] = 2; }},
    {"Truncated", [](std::string& d) { d.pop_back(); }},
    {"TrailingByte", [](std::string& d) { d.push_back('x'); }},
    {"LengthLongerThanData", [](std::string& d) { d[18] = static_cast<char>(d[18] + 1); }},
    {"NegativeTime", [](std::string& d) { d[9] = static_cast<char>(0x80); }},
    {"NotASpiffeId", with_id("https://team-b.eks.local/node/agent-2")},
    {"TrustDomainOnly", with_id("spiffe://team-b.eks.local")},
    {"UppercaseDomain", with_id("spiffe://Team-B.eks.local/node/agent-2")},
    {"EmbeddedNul", with_id(std::string("spiffe://team-b.eks.local/node\0/x", 33))},
    {"LongerThanAnyId", with_id("spiffe://team-b.eks.local/" + std::string(3000, 'a'))},
};

INSTANTIATE_TEST_SUITE_P(TlsStream, TicketIdentityDecoding, ::testing::ValuesIn(kTicketCases),
                         [](const auto& info) { return info.param.name; });

// --- data --------------------------------------------------------------------------

TEST_F(TlsStreamTest, OneMebibyteArrivesByteExactThroughPartialWritesAndReads) {
  TlsContext server = server_context();
  TlsContext client = client_context();
  Connection connection = connect(client, server);
  const Outcome outcome = handshake(connection.client, connection.server);
  ASSERT_EQ(outcome.client, Status::kDone) << connection.client.error();
  ASSERT_EQ(outcome.server, Status::kDone) << connection.server.error();
  // A small send buffer makes the socket push back often.
  const int small = 8 * 1024;
  ASSERT_EQ(::setsockopt(connection.client.fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);

  const std::vector<std::uint8_t> sent = random_bytes(1024 * 1024, 11);
  std::vector<std::uint8_t> received;
  received.reserve(sent.size());
  std::size_t offset = 0;
  bool pushed_back = false;
  bool saw_pending = false;
  constexpr std::size_t kWriteChunk = 100'000;  // several records per call
  std::uint8_t buffer[1000];                    // not a divisor of a record
  for (int round = 0; round < 100'000 && received.size() < sent.size(); ++round) {
    if (offset < sent.size()) {
      const std::size_t length = std::min(kWriteChunk, sent.size() - offset);
      const auto wrote = connection.client.write({sent.data() + offset, length});
      ASSERT_NE(wrote.status, IoStatus::kFailed) << connection.client.error();
      if (wrote.status == IoStatus::kOk) {
        pushed_back |= wrote.bytes < length;
        offset += wrote.bytes;
      } else {
        pushed_back = true;  // retried next round from the same offset
      }
    }
    for (;;) {
      const auto got = connection.server.read(buffer);
      ASSERT_NE(got.status, IoStatus::kFailed) << connection.server.error();
      if (got.status != IoStatus::kOk) break;
      received.insert(received.end(), buffer, buffer + got.bytes);
      saw_pending |= connection.server.pending_read();
    }
  }
  ASSERT_EQ(received.size(), sent.size());
  EXPECT_TRUE(received == sent);
  EXPECT_TRUE(pushed_back);
  EXPECT_TRUE(saw_pending);

  connection.client.shutdown();
  EXPECT_EQ(read_until_end(connection.server), IoStatus::kClosed);
}

TEST_F(TlsStreamTest, MovedStreamKeepsWorking) {
  TlsContext server = server_context();
  TlsContext client_ctx = client_context();
  Connection connection = connect(client_ctx, server);
  TlsStream client = std::move(connection.client);
  const Outcome outcome = handshake(client, connection.server);
  ASSERT_EQ(outcome.client, Status::kDone) << client.error();
  ASSERT_EQ(outcome.server, Status::kDone);
  EXPECT_EQ(connection.server.peer()->id, SpiffeId::parse(kClientId).value());
}

// --- identity files --------------------------------------------------------------

class TlsStreamIdentityFiles : public TlsStreamTest {
 protected:
  TlsStreamIdentityFiles() {
    char pattern[] = "/tmp/tls_stream_test.XXXXXX";
    dir_ = ::mkdtemp(pattern);
  }
  ~TlsStreamIdentityFiles() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& content) const {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << content;
    return path;
  }
  static std::string key_pem(EVP_PKEY* key, const EVP_CIPHER* cipher = nullptr) {
    trustfence::tls::BioPtr bio(BIO_new(BIO_s_mem()));
    static char passphrase[] = "secret passphrase";
    PEM_write_bio_PrivateKey(
        bio.get(), key, cipher, cipher ? reinterpret_cast<unsigned char*>(passphrase) : nullptr,
        cipher ? static_cast<int>(sizeof passphrase - 1) : 0, nullptr, nullptr);
    char* data = nullptr;
    const long length = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(length));
  }

  std::string dir_;
};

TEST_F(TlsStreamIdentityFiles, LoadsChainAndMatchingKey) {
  const Issued leaf = world_.intermediate_b.issue(leaf_spec(kClientId));
  const std::string cert =
      write("svid.pem",
            trustfence::test::to_pem(chain_of({leaf.cert.get(), world_.intermediate_b.cert()})));
  const std::string key = write("svid.key", key_pem(leaf.key.get()));
  const auto identity = trustfence::tls::load_tls_identity(cert, key);
  ASSERT_TRUE(identity.has_value()) << identity.error().message;
  EXPECT_EQ(identity->chain.size(), 2u);
  EXPECT_EQ(X509_cmp(identity->chain.front().get(), leaf.cert.get()), 0);
}

TEST_F(TlsStreamIdentityFiles, ErrorsNameTheFileAndNeverTheKey) {
  const Issued leaf = world_.root_a.issue(leaf_spec(kServerId));
  const Issued other = world_.root_a.issue(leaf_spec(kServerId));
  const std::string cert = write("svid.pem", trustfence::test::to_pem(leaf.cert.get()));
  const std::string key_text = key_pem(leaf.key.get());
  const std::string key = write("svid.key", key_text);
  const std::string other_key = write("other.key", key_pem(other.key.get()));
  const std::string encrypted = write("encrypted.key", key_pem(leaf.key.get(), EVP_aes_256_cbc()));
  const std::string garbage = write("garbage.pem", "not a certificate\n");
  const std::string huge = write("huge.key", std::string(trustfence::tls::kMaxKeyBytes + 1, 'A'));
  const std::string missing = dir_ + "/missing.pem";

  const struct {
    std::string cert;
    std::string key;
    std::string names;
  } cases[] = {
      {missing, key, missing},      {cert, missing, missing},     {garbage, key, garbage},
      {cert, other_key, other_key}, {cert, encrypted, encrypted}, {cert, huge, huge},
      {cert, garbage, garbage},
  };
  for (const auto& c : cases) {
    const auto identity = trustfence::tls::load_tls_identity(c.cert, c.key);
    ASSERT_FALSE(identity.has_value()) << c.cert << " " << c.key;
    EXPECT_NE(identity.error().message.find(c.names), std::string::npos)
        << identity.error().message;
    EXPECT_EQ(identity.error().message.find("PRIVATE KEY-----"), std::string::npos);
    EXPECT_EQ(identity.error().message.find(key_text.substr(40, 20)), std::string::npos);
  }
}

TEST(TlsStreamIdentity, KeyMustMatchTheLeaf) {
  const TestCa root = TestCa::root(kTeamA);
  const Issued leaf = root.issue(leaf_spec(kServerId));
  EXPECT_FALSE(make_tls_identity(chain_of({leaf.cert.get()}), trustfence::test::make_p256_key())
                   .has_value());
  EXPECT_FALSE(make_tls_identity(Chain{}, trustfence::test::make_p256_key()).has_value());
  EXPECT_FALSE(make_tls_identity(chain_of({leaf.cert.get()}), nullptr).has_value());
}

}  // namespace
