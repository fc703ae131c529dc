// One agent-to-agent channel over real loopback TCP and TLS 1.3 with SVIDs
// minted at test time; both ends (and any hostile client) on one event loop
// run in the test thread. Hostile input must close its own channel and
// leave a good one on the same loop working.

#include "trustfence/attest/channel.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "support/test_ca.hpp"
#include "trustfence/common/verdict.hpp"
#include "trustfence/tls/bundle.hpp"
#include "trustfence/tls/svid_verifier.hpp"
#include "trustfence/tls/verify_cache.hpp"

namespace trustfence::attest {
namespace {

using namespace std::chrono_literals;
using identity::SpiffeId;
using identity::TrustDomain;
using runtime::EventLoop;
using runtime::SteadyClock;
using test::leaf_spec;
using test::TestCa;
using ::testing::HasSubstr;
using tls::ClientSession;
using tls::Role;
using tls::TlsContext;
using tls::TlsIdentity;
using tls::TlsStream;
using Kind = CloseReason::Kind;
using Bytes = std::vector<std::uint8_t>;

constexpr const char* kTeamA = "team-a.gke.local";
constexpr const char* kTeamB = "team-b.eks.local";
constexpr const char* kAcceptorId = "spiffe://team-a.gke.local/node/agent-1";
constexpr const char* kInitiatorId = "spiffe://team-b.eks.local/node/agent-2";

// One agent's trust: both domains' bundles, the real clock, a cache.
// Not movable: the verifier and the cache refer to the members before them.
struct Trust {
  explicit Trust(const std::vector<std::pair<const char*, const TestCa*>>& roots) {
    for (const auto& [name, root] : roots) {
      tls::Chain authorities;
      authorities.push_back(root->share());
      EXPECT_TRUE(bundles.add(tls::Bundle{TrustDomain::parse(name).value(), std::move(authorities),
                                          std::nullopt, std::nullopt}));
    }
  }
  Trust(const Trust&) = delete;

  tls::BundleSet bundles;
  tls::SvidVerifier verifier{bundles, [] { return std::chrono::system_clock::now(); }};
  tls::VerifyCache cache{verifier};
};

TlsIdentity identity_from(const TestCa& issuer, const std::string& id, bool with_issuer) {
  test::Issued leaf = issuer.issue(leaf_spec(id));
  tls::Chain chain = with_issuer ? test::chain_of({leaf.cert.get(), issuer.cert()})
                                 : test::chain_of({leaf.cert.get()});
  return tls::make_tls_identity(std::move(chain), std::move(leaf.key)).value();
}

// team-a (the acceptor's domain) by its root, team-b (the initiator's) by an
// intermediate; team-c has a CA and no bundle anywhere.
struct World {
  TestCa root_a = TestCa::root(kTeamA);
  TestCa root_b = TestCa::root(kTeamB);
  TestCa intermediate_b = root_b.intermediate("team-b intermediate");
  TestCa root_c = TestCa::root("team-c.local");
};

// What one end of a channel saw.
struct End {
  Channel::Callbacks callbacks() {
    return {
        [this](Channel& channel) {
          ready = true;
          if (on_ready) on_ready(channel);
        },
        [this](Channel&, Message&& message) { messages.push_back(std::move(message)); },
        [this](Channel&, const CloseReason& reason) {
          closed = reason;
          closed_at = SteadyClock::now();
        },
    };
  }
  bool open() const { return channel && channel->ready() && !closed; }

  std::unique_ptr<Channel> channel;
  std::function<void(Channel&)> on_ready;
  bool ready = false;
  std::vector<Message> messages;
  std::optional<CloseReason> closed;
  SteadyClock::time_point closed_at;
};

std::string describe(const std::optional<CloseReason>& reason) {
  if (!reason) return "open";
  return std::string(to_string(reason->kind)) + ": " + reason->detail;
}

UniqueFd tcp_socket() { return UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)); }

// A listening socket on 127.0.0.1 and an ephemeral port.
UniqueFd listen_on_loopback(net::SocketAddress& bound) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(fd);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(::listen(fd.get(), 16), 0);
  socklen_t length = sizeof(addr);
  EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &length), 0);
  bound = net::SocketAddress(net::IpAddress::parse("127.0.0.1").value(), ntohs(addr.sin_port));
  return fd;
}

// A blocking connect: loopback completes it in the listener's backlog,
// whether or not the loop has accepted yet.
UniqueFd plain_connect(const net::SocketAddress& to, int receive_buffer = 0) {
  UniqueFd fd = tcp_socket();
  if (receive_buffer > 0) {
    EXPECT_EQ(
        ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer)), 0);
  }
  sockaddr_storage addr{};
  socklen_t length = to.to_sockaddr(addr);
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), length), 0)
      << std::strerror(errno);
  return fd;
}

void send_raw(int fd, const Bytes& bytes) {
  EXPECT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

Bytes text_bytes(const std::string& text) { return Bytes(text.begin(), text.end()); }

ConnTuple tuple_v4() {
  return {Family::kIpv4, net::IpAddress::parse("10.0.1.2").value().bytes(), 40112,
          net::IpAddress::parse("10.0.2.3").value().bytes(), 8080};
}

// About 1.5 KiB on the wire.
AttestRequest big_request() {
  return {1, tuple_v4(),
          SpiffeId::parse("spiffe://team-a.gke.local/" + std::string(1500, 'w')).value()};
}

// A TLS client driven by hand on the test's loop through the TlsStream API:
// it completes the handshake, then does only what the test makes it do.
class RawTlsClient {
 public:
  RawTlsClient(EventLoop& loop, TlsContext& context, const net::SocketAddress& to,
               bool reads = true, int receive_buffer = 0)
      : loop_(loop), reads_(reads) {
    auto stream = TlsStream::create(context, plain_connect(to, receive_buffer));
    if (!stream) {
      ADD_FAILURE() << stream.error().message;
      return;
    }
    stream_.emplace(std::move(*stream));
    fd_ = stream_->fd();
    EXPECT_TRUE(
        loop_.add(fd_, EPOLLIN | EPOLLOUT, [this](std::uint32_t events) { on_events(events); }));
  }
  ~RawTlsClient() { stop_watching(); }
  RawTlsClient(const RawTlsClient&) = delete;

  bool done() const { return done_; }
  bool ended() const { return ended_; }
  int fd() const { return fd_; }

  // Application data through TLS: a frame as a well-behaved agent would
  // send it, or bytes no agent would.
  void write(const Bytes& bytes) {
    std::size_t offset = 0;
    for (int tries = 0; offset < bytes.size() && tries < 1000; ++tries) {
      auto wrote = stream_->write({bytes.data() + offset, bytes.size() - offset});
      ASSERT_NE(wrote.status, TlsStream::IoStatus::kFailed) << stream_->error();
      if (wrote.status == TlsStream::IoStatus::kOk) offset += wrote.bytes;
    }
    ASSERT_EQ(offset, bytes.size());
  }

 private:
  void on_events(std::uint32_t events) {
    if (!done_) {
      switch (stream_->handshake()) {
        case TlsStream::Status::kDone:
          done_ = true;
          (void)loop_.modify(fd_, reads_ ? EPOLLIN : 0u);
          break;
        case TlsStream::Status::kWantRead:
          (void)loop_.modify(fd_, EPOLLIN);
          break;
        case TlsStream::Status::kWantWrite:
          (void)loop_.modify(fd_, EPOLLIN | EPOLLOUT);
          break;
        case TlsStream::Status::kFailed:
          end();
          break;
      }
      return;
    }
    if (events & (EPOLLERR | EPOLLHUP)) return end();
    std::uint8_t buffer[4096];
    for (;;) {
      auto got = stream_->read(buffer);
      if (got.status == TlsStream::IoStatus::kOk) continue;
      if (got.status == TlsStream::IoStatus::kClosed || got.status == TlsStream::IoStatus::kFailed)
        end();
      return;
    }
  }
  void end() {
    ended_ = true;
    stop_watching();
  }
  void stop_watching() {
    if (fd_ >= 0) loop_.remove(fd_);
    fd_ = -1;
  }

  EventLoop& loop_;
  bool reads_;
  std::optional<TlsStream> stream_;
  int fd_ = -1;
  bool done_ = false;
  bool ended_ = false;
};

class ChannelTest : public ::testing::Test {
 protected:
  ChannelTest() {
    loop_.on_round_end([this] {
      if (until_ && until_()) loop_.stop();
    });
    listen_fd_ = listen_on_loopback(listen_address_);
    EXPECT_TRUE(loop_.add(listen_fd_.get(), EPOLLIN, [this](std::uint32_t) { accept_all(); }));
  }

  static TlsContext context(Role role, const TlsIdentity& identity, Trust& trust) {
    auto context = TlsContext::create(role, identity, trust.cache, trust.verifier);
    EXPECT_TRUE(context.has_value()) << context.error().message;
    return std::move(context).value();
  }

  // Runs the loop until done() holds after a round, or limit passes
  // (a timer stops it); returns done().
  bool run_until(std::function<bool()> done, std::chrono::milliseconds limit = 5s) {
    if (done()) return true;
    until_ = std::move(done);
    auto guard = loop_.after(limit, [this] { loop_.stop(); });
    auto ran = loop_.run(50ms);
    EXPECT_TRUE(ran.has_value()) << ran.error().message;
    loop_.cancel(guard);
    bool result = until_();
    until_ = nullptr;
    return result;
  }
  // Runs the loop for a while whatever happens.
  void run_for(std::chrono::milliseconds duration) {
    run_until([] { return false; }, duration);
  }

  std::unique_ptr<End> connect(std::optional<ClientSession> resume = std::nullopt,
                               ChannelLimits limits = {}) {
    return connect_to(listen_address_, std::move(resume), limits);
  }
  std::unique_ptr<End> connect_to(const net::SocketAddress& to,
                                  std::optional<ClientSession> resume = std::nullopt,
                                  ChannelLimits limits = {}) {
    auto end = std::make_unique<End>();
    auto channel = Channel::connect(loop_, *initiator_context_, to, std::move(resume),
                                    end->callbacks(), limits);
    EXPECT_TRUE(channel.has_value()) << channel.error().message;
    if (channel) end->channel = std::move(*channel);
    return end;
  }

  // The newest channel the listener accepted.
  End* accepted() { return accepted_.empty() ? nullptr : accepted_.back().get(); }
  bool accepted_closed() { return accepted() && accepted()->closed.has_value(); }

  // A connected pair of channels, both ready.
  std::unique_ptr<End> ready_pair(End*& acceptor) {
    auto initiator = connect();
    const std::size_t before = accepted_.size();
    EXPECT_TRUE(run_until([&] {
      return initiator->ready && accepted_.size() > before && accepted()->ready;
    })) << "initiator: "
        << describe(initiator->closed);
    acceptor = accepted();
    return initiator;
  }

  // One ping each way arrives: the pair still works.
  void expect_exchanges(End& initiator, End& acceptor) {
    static std::uint64_t nonce = 1000;
    const std::uint64_t mine = ++nonce;
    const std::size_t to_acceptor = acceptor.messages.size();
    const std::size_t to_initiator = initiator.messages.size();
    ASSERT_TRUE(initiator.channel->send(Ping{mine})) << describe(initiator.closed);
    ASSERT_TRUE(acceptor.channel->send(Pong{mine})) << describe(acceptor.closed);
    ASSERT_TRUE(run_until([&] {
      return acceptor.messages.size() > to_acceptor && initiator.messages.size() > to_initiator;
    }));
    EXPECT_EQ(acceptor.messages.back(), Message(Ping{mine}));
    EXPECT_EQ(initiator.messages.back(), Message(Pong{mine}));
    EXPECT_TRUE(initiator.open()) << describe(initiator.closed);
    EXPECT_TRUE(acceptor.open()) << describe(acceptor.closed);
  }

  void accept_all() {
    for (;;) {
      sockaddr_in from{};
      socklen_t length = sizeof(from);
      int raw = ::accept4(listen_fd_.get(), reinterpret_cast<sockaddr*>(&from), &length,
                          SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (raw < 0) return;
      UniqueFd fd(raw);
      if (on_accepted_fd_) on_accepted_fd_(fd.get());
      std::uint32_t words[4] = {from.sin_addr.s_addr, 0, 0, 0};
      const net::SocketAddress remote(net::IpAddress::from_words(words, AF_INET),
                                      ntohs(from.sin_port));
      auto end = std::make_unique<End>();
      auto channel = Channel::accept(loop_, *acceptor_context_, std::move(fd), remote,
                                     end->callbacks(), acceptor_limits_);
      EXPECT_TRUE(channel.has_value()) << channel.error().message;
      if (channel) end->channel = std::move(*channel);
      accepted_.push_back(std::move(end));
    }
  }

  // Declaration order is teardown order reversed: channels go before the
  // loop and the contexts they use.
  World world_;
  Trust acceptor_trust_{{{kTeamA, &world_.root_a}, {kTeamB, &world_.root_b}}};
  Trust initiator_trust_{{{kTeamA, &world_.root_a}, {kTeamB, &world_.root_b}}};
  std::optional<TlsContext> acceptor_context_{
      context(Role::kServer, identity_from(world_.root_a, kAcceptorId, false), acceptor_trust_)};
  std::optional<TlsContext> initiator_context_{context(
      Role::kClient, identity_from(world_.intermediate_b, kInitiatorId, true), initiator_trust_)};
  EventLoop loop_ = EventLoop::create().value();
  std::function<bool()> until_;
  net::SocketAddress listen_address_{net::IpAddress::parse("127.0.0.1").value(), 1};
  UniqueFd listen_fd_;
  ChannelLimits acceptor_limits_;
  std::function<void(int)> on_accepted_fd_;
  std::vector<std::unique_ptr<End>> accepted_;
};

// --- established channels ---------------------------------------------------------

TEST_F(ChannelTest, BothEndsBecomeReadyAndSeeEachOthersSpiffeId) {
  auto initiator = connect();
  EXPECT_EQ(initiator->channel->state(), Channel::State::kConnecting);
  EXPECT_EQ(initiator->channel->peer(), nullptr);
  ASSERT_TRUE(run_until([&] { return initiator->ready && accepted() && accepted()->ready; }))
      << describe(initiator->closed);
  End& acceptor = *accepted();

  EXPECT_EQ(initiator->channel->state(), Channel::State::kReady);
  EXPECT_EQ(acceptor.channel->state(), Channel::State::kReady);
  ASSERT_NE(initiator->channel->peer(), nullptr);
  ASSERT_NE(acceptor.channel->peer(), nullptr);
  EXPECT_EQ(initiator->channel->peer()->id, SpiffeId::parse(kAcceptorId).value());
  EXPECT_EQ(acceptor.channel->peer()->id, SpiffeId::parse(kInitiatorId).value());
  EXPECT_FALSE(initiator->channel->resumed());
  EXPECT_FALSE(acceptor.channel->resumed());
  EXPECT_EQ(initiator->channel->remote(), listen_address_);
  EXPECT_EQ(acceptor.channel->remote().ip(), net::IpAddress::parse("127.0.0.1").value());
  EXPECT_NE(initiator->channel->id(), acceptor.channel->id());
  EXPECT_FALSE(initiator->closed.has_value());
  EXPECT_FALSE(acceptor.closed.has_value());
}

TEST_F(ChannelTest, MessagesBothWaysArriveInOrder) {
  End* acceptor = nullptr;
  auto initiator = ready_pair(acceptor);
  ASSERT_NE(acceptor, nullptr);

  // More records than one readiness event reads: the rest must still come.
  constexpr std::uint64_t kCount = 500;
  std::vector<Message> to_acceptor, to_initiator;
  to_acceptor.push_back(AttestRequest{
      7, tuple_v4(), SpiffeId::parse("spiffe://team-b.eks.local/ns/web/sa/curl").value()});
  to_initiator.push_back(
      AttestResponse{7, SpiffeId::parse("spiffe://team-a.gke.local/ns/api/sa/srv").value(),
                     TF_VERDICT_ALLOW, TF_REASON_NONE});
  for (std::uint64_t i = 0; i < kCount; ++i) {
    to_acceptor.emplace_back(std::in_place_type<Ping>, i);
    to_initiator.emplace_back(std::in_place_type<Pong>, i);
  }
  for (const auto& message : to_acceptor) ASSERT_TRUE(initiator->channel->send(message));
  for (const auto& message : to_initiator) ASSERT_TRUE(acceptor->channel->send(message));

  ASSERT_TRUE(run_until([&] {
    return acceptor->messages.size() >= to_acceptor.size() &&
           initiator->messages.size() >= to_initiator.size();
  })) << acceptor->messages.size()
      << " and " << initiator->messages.size() << " arrived; " << describe(acceptor->closed) << "; "
      << describe(initiator->closed);
  EXPECT_TRUE(acceptor->messages == to_acceptor);
  EXPECT_TRUE(initiator->messages == to_initiator);
  EXPECT_TRUE(initiator->open());
  EXPECT_TRUE(acceptor->open());
}

TEST_F(ChannelTest, MessagesSentFromOnReadyArrive) {
  auto initiator = std::make_unique<End>();
  initiator->on_ready = [](Channel& channel) { EXPECT_TRUE(channel.send(Ping{42})); };
  auto channel = Channel::connect(loop_, *initiator_context_, listen_address_, std::nullopt,
                                  initiator->callbacks());
  ASSERT_TRUE(channel.has_value()) << channel.error().message;
  initiator->channel = std::move(*channel);
  ASSERT_TRUE(run_until([&] { return accepted() && !accepted()->messages.empty(); }));
  EXPECT_EQ(accepted()->messages.front(), Message(Ping{42}));
}

TEST_F(ChannelTest, ASecondConnectionResumesWithTheFirstsSession) {
  std::optional<ClientSession> session;
  {
    End* acceptor = nullptr;
    auto first = ready_pair(acceptor);
    ASSERT_NE(acceptor, nullptr);
    expect_exchanges(*first, *acceptor);  // the tickets are read on the way
    ASSERT_TRUE(run_until([&] { return first->channel->session().has_value(); }));
    session = first->channel->session();
    first->channel->close({Kind::kShutdown, "test", {}});
  }
  ASSERT_TRUE(session.has_value());
  EXPECT_EQ(session->peer.id, SpiffeId::parse(kAcceptorId).value());

  auto second = connect(std::move(session));
  ASSERT_TRUE(run_until([&] {
    return second->ready && accepted_.size() == 2 && accepted()->ready;
  })) << describe(second->closed);
  End& acceptor = *accepted();
  EXPECT_TRUE(second->channel->resumed());
  EXPECT_TRUE(acceptor.channel->resumed());
  ASSERT_NE(second->channel->peer(), nullptr);
  ASSERT_NE(acceptor.channel->peer(), nullptr);
  EXPECT_EQ(second->channel->peer()->id, SpiffeId::parse(kAcceptorId).value());
  EXPECT_EQ(acceptor.channel->peer()->id, SpiffeId::parse(kInitiatorId).value());
  expect_exchanges(*second, acceptor);
}

TEST_F(ChannelTest, OurShutdownIsThePeersPeerClosed) {
  End* acceptor = nullptr;
  auto initiator = ready_pair(acceptor);
  ASSERT_NE(acceptor, nullptr);
  initiator->channel->close({Kind::kShutdown, "agent stopping", {}});
  ASSERT_TRUE(initiator->closed.has_value());
  EXPECT_EQ(initiator->closed->kind, Kind::kShutdown);
  EXPECT_EQ(initiator->channel->state(), Channel::State::kClosed);
  EXPECT_EQ(initiator->channel->peer(), nullptr);
  EXPECT_FALSE(initiator->channel->send(Ping{1}));
  ASSERT_TRUE(run_until([&] { return acceptor->closed.has_value(); }));
  EXPECT_EQ(acceptor->closed->kind, Kind::kPeerClosed) << describe(acceptor->closed);
  EXPECT_FALSE(acceptor->channel->send(Ping{1}));

  // Closing again reports nothing more.
  const auto first_reason = initiator->closed->detail;
  initiator->channel->close({Kind::kTimeout, "again", {}});
  EXPECT_EQ(initiator->closed->detail, first_reason);
}

TEST_F(ChannelTest, SendingBeforeReadyIsRefused) {
  auto initiator = connect();
  EXPECT_FALSE(initiator->channel->send(Ping{1}));
  EXPECT_FALSE(initiator->closed.has_value()) << "a refused early send does not close";
  ASSERT_TRUE(run_until([&] { return initiator->ready; }));
}

// --- peers we do not trust ----------------------------------------------------------

struct RejectionCase {
  std::string name;
  std::function<TlsIdentity(const World&)> initiator;
  std::function<TlsIdentity(const World&)> acceptor;
  Role rejected_by;
  tf_reason reason;
};

void PrintTo(const RejectionCase& c, std::ostream* os) { *os << c.name; }

class ChannelRejects : public ChannelTest, public ::testing::WithParamInterface<RejectionCase> {};

TEST_P(ChannelRejects, ThePeerWithABadSvid) {
  const RejectionCase& c = GetParam();
  initiator_context_.emplace(context(Role::kClient, c.initiator(world_), initiator_trust_));
  acceptor_context_.emplace(context(Role::kServer, c.acceptor(world_), acceptor_trust_));
  auto initiator = connect();
  ASSERT_TRUE(run_until([&] { return initiator->closed && accepted_closed(); }))
      << "initiator: " << describe(initiator->closed)
      << "; acceptor: " << (accepted() ? describe(accepted()->closed) : "none");
  End& acceptor = *accepted();

  End& rejecting = c.rejected_by == Role::kServer ? acceptor : *initiator;
  End& rejected = c.rejected_by == Role::kServer ? *initiator : acceptor;
  EXPECT_EQ(rejecting.closed->kind, Kind::kPeerRejected) << describe(rejecting.closed);
  ASSERT_TRUE(rejecting.closed->verify.has_value()) << describe(rejecting.closed);
  EXPECT_EQ(rejecting.closed->verify->reason, c.reason)
      << trustfence::to_string(rejecting.closed->verify->reason);
  EXPECT_FALSE(rejecting.ready) << "the rejecting end reported a peer it refused";
  EXPECT_FALSE(rejecting.closed->detail.empty());
  EXPECT_EQ(rejected.closed->kind, Kind::kHandshakeFailed) << describe(rejected.closed);
  EXPECT_FALSE(rejected.closed->verify.has_value());
}

INSTANTIATE_TEST_SUITE_P(
    Table, ChannelRejects,
    ::testing::Values(
        // Claims team-b, minted by team-a's CA: checked against team-b's bundle.
        RejectionCase{"SpoofedInitiator",
                      [](const World& w) { return identity_from(w.root_a, kInitiatorId, false); },
                      [](const World& w) { return identity_from(w.root_a, kAcceptorId, false); },
                      Role::kServer, TF_REASON_BAD_CHAIN},
        RejectionCase{
            "InitiatorFromAnUntrustedCaOfTheSameName",
            [](const World&) { return identity_from(TestCa::root(kTeamB), kInitiatorId, false); },
            [](const World& w) { return identity_from(w.root_a, kAcceptorId, false); },
            Role::kServer, TF_REASON_BAD_CHAIN},
        RejectionCase{"InitiatorOfADomainWithoutBundle",
                      [](const World& w) {
                        return identity_from(w.root_c, "spiffe://team-c.local/node/agent-3", false);
                      },
                      [](const World& w) { return identity_from(w.root_a, kAcceptorId, false); },
                      Role::kServer, TF_REASON_NO_BUNDLE},
        RejectionCase{
            "SpoofedAcceptor",
            [](const World& w) { return identity_from(w.intermediate_b, kInitiatorId, true); },
            [](const World& w) { return identity_from(w.intermediate_b, kAcceptorId, true); },
            Role::kClient, TF_REASON_BAD_CHAIN}),
    [](const auto& info) { return info.param.name; });

TEST_F(ChannelTest, ASpoofedPeerIsRejectedAsBadChain) {
  initiator_context_.emplace(
      context(Role::kClient, identity_from(world_.root_a, kInitiatorId, false), initiator_trust_));
  auto initiator = connect();
  ASSERT_TRUE(run_until([&] { return initiator->closed && accepted_closed(); }));
  ASSERT_TRUE(accepted()->closed->verify.has_value());
  EXPECT_EQ(trustfence::to_string(accepted()->closed->verify->reason), "bad-chain");
  EXPECT_EQ(to_string(accepted()->closed->kind), "peer-rejected");
}

// --- no agent there -----------------------------------------------------------------

TEST_F(ChannelTest, ConnectToAClosedPortFailsPromptly) {
  // Bound and not listening: the port is ours, and refuses connections.
  UniqueFd holder = tcp_socket();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(holder.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t length = sizeof(addr);
  ASSERT_EQ(::getsockname(holder.get(), reinterpret_cast<sockaddr*>(&addr), &length), 0);
  const net::SocketAddress closed(net::IpAddress::parse("127.0.0.1").value(), ntohs(addr.sin_port));

  const auto start = SteadyClock::now();
  ChannelLimits limits;
  limits.handshake_timeout = 10s;  // not what ends it
  auto end = connect_to(closed, std::nullopt, limits);
  ASSERT_TRUE(end->channel);
  ASSERT_TRUE(run_until([&] { return end->closed.has_value(); }, 3s));
  EXPECT_EQ(end->closed->kind, Kind::kConnectFailed) << describe(end->closed);
  EXPECT_THAT(end->closed->detail, HasSubstr(closed.str()));
  EXPECT_FALSE(end->ready);
  EXPECT_LT(end->closed_at - start, 1s);
}

// A listener that never speaks: the initiator gives up after its limit.
TEST_F(ChannelTest, InitiatorTimesOutOnASilentListener) {
  net::SocketAddress silent_address = listen_address_;
  UniqueFd silent = listen_on_loopback(silent_address);
  ChannelLimits limits;
  limits.handshake_timeout = 200ms;
  const auto start = SteadyClock::now();
  auto end = connect_to(silent_address, std::nullopt, limits);
  ASSERT_TRUE(run_until([&] { return end->closed.has_value(); }));
  EXPECT_EQ(end->closed->kind, Kind::kTimeout) << describe(end->closed);
  EXPECT_GE(end->closed_at - start, 200ms);
  EXPECT_LT(end->closed_at - start, 3s);
}

// --- hostile input closes only its channel -------------------------------------------

struct PlainGarbage {
  const char* name;
  Bytes bytes;  // empty: close at once
};

void PrintTo(const PlainGarbage& c, std::ostream* os) { *os << c.name; }

class ChannelPlainGarbage : public ChannelTest,
                            public ::testing::WithParamInterface<PlainGarbage> {};

TEST_P(ChannelPlainGarbage, BeforeTheHandshakeClosesOnlyThatChannel) {
  End* good_acceptor = nullptr;
  auto good = ready_pair(good_acceptor);
  ASSERT_NE(good_acceptor, nullptr);

  UniqueFd hostile = plain_connect(listen_address_);
  if (GetParam().bytes.empty())
    hostile.reset();
  else
    send_raw(hostile.get(), GetParam().bytes);
  ASSERT_TRUE(run_until([&] { return accepted_.size() == 2 && accepted_closed(); }));
  EXPECT_EQ(accepted()->closed->kind, Kind::kHandshakeFailed) << describe(accepted()->closed);
  EXPECT_FALSE(accepted()->ready);
  expect_exchanges(*good, *good_acceptor);
}

Bytes repeated(std::uint8_t byte, std::size_t count) { return Bytes(count, byte); }

INSTANTIATE_TEST_SUITE_P(
    Table, ChannelPlainGarbage,
    ::testing::Values(PlainGarbage{"Http", text_bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
                      PlainGarbage{"Zeros", repeated(0, 64)},
                      PlainGarbage{"OversizedRecordHeader",
                                   Bytes{0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3}},
                      PlainGarbage{"AFrameWithoutTls", encode(Ping{1})},
                      PlainGarbage{"CloseAtOnce", Bytes{}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(ChannelTest, GarbageAfterTheHandshakeClosesOnlyThatChannel) {
  End* good_acceptor = nullptr;
  auto good = ready_pair(good_acceptor);
  ASSERT_NE(good_acceptor, nullptr);

  RawTlsClient hostile(loop_, *initiator_context_, listen_address_);
  ASSERT_TRUE(
      run_until([&] { return hostile.done() && accepted_.size() == 2 && accepted()->ready; }));
  send_raw(hostile.fd(), text_bytes("not a TLS record, not a frame"));
  ASSERT_TRUE(run_until([&] { return accepted_closed(); }));
  EXPECT_EQ(accepted()->closed->kind, Kind::kHandshakeFailed) << describe(accepted()->closed);
  expect_exchanges(*good, *good_acceptor);
}

struct BadFrame {
  const char* name;
  std::function<void(Bytes&)> damage;  // of an encoded ping
  const char* violation;
};

void PrintTo(const BadFrame& c, std::ostream* os) { *os << c.name; }

class ChannelBadFrames : public ChannelTest, public ::testing::WithParamInterface<BadFrame> {};

// Over a good TLS session from a trusted peer: a valid ping arrives, then
// the bad frame closes the channel as a violation, and only it.
TEST_P(ChannelBadFrames, CloseThatChannelAsAViolation) {
  End* good_acceptor = nullptr;
  auto good = ready_pair(good_acceptor);
  ASSERT_NE(good_acceptor, nullptr);

  RawTlsClient hostile(loop_, *initiator_context_, listen_address_);
  ASSERT_TRUE(
      run_until([&] { return hostile.done() && accepted_.size() == 2 && accepted()->ready; }));
  End& victim = *accepted();
  Bytes bytes = encode(Ping{1});
  Bytes bad = bytes;
  GetParam().damage(bad);
  bytes.insert(bytes.end(), bad.begin(), bad.end());
  hostile.write(bytes);
  ASSERT_TRUE(run_until([&] { return victim.closed.has_value(); }));
  EXPECT_EQ(victim.closed->kind, Kind::kViolation) << describe(victim.closed);
  EXPECT_THAT(victim.closed->detail, HasSubstr(GetParam().violation));
  ASSERT_EQ(victim.messages.size(), 1u);
  EXPECT_EQ(victim.messages[0], Message(Ping{1}));
  expect_exchanges(*good, *good_acceptor);
  EXPECT_TRUE(run_until([&] { return hostile.ended(); })) << "the hostile client was not cut off";
}

void set_u16(Bytes& bytes, std::size_t at, std::uint16_t value) {
  bytes[at] = static_cast<std::uint8_t>(value >> 8);
  bytes[at + 1] = static_cast<std::uint8_t>(value);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ChannelBadFrames,
    ::testing::Values(
        BadFrame{"BadMagic", [](Bytes& b) { b[0] = 'X'; }, "bad-magic"},
        BadFrame{"UnsupportedVersion", [](Bytes& b) { b[4] = 2; }, "unsupported-version"},
        BadFrame{"UnknownType", [](Bytes& b) { b[5] = 99; }, "unknown-type"},
        BadFrame{"Oversized", [](Bytes& b) { set_u16(b, 6, 0xffff); }, "oversize"},
        BadFrame{"JustOverTheCap",
                 [](Bytes& b) { set_u16(b, 6, static_cast<std::uint16_t>(kMaxPayloadSize + 1)); },
                 "oversize"},
        BadFrame{"TrailingPayload",
                 [](Bytes& b) {
                   b.push_back(0);
                   set_u16(b, 6, static_cast<std::uint16_t>(b.size() - kFrameHeaderSize));
                 },
                 "trailing-payload"}),
    [](const auto& info) { return std::string(info.param.name); });

// --- stalls -------------------------------------------------------------------------

struct Stall {
  const char* name;
  Bytes bytes;  // sent in plain TCP, then nothing
};

void PrintTo(const Stall& c, std::ostream* os) { *os << c.name; }

class ChannelHandshakeStalls : public ChannelTest, public ::testing::WithParamInterface<Stall> {};

TEST_P(ChannelHandshakeStalls, TimeOutAfterTheHandshakeLimit) {
  acceptor_limits_.handshake_timeout = 200ms;
  const auto start = SteadyClock::now();
  UniqueFd silent = plain_connect(listen_address_);
  if (!GetParam().bytes.empty()) send_raw(silent.get(), GetParam().bytes);
  ASSERT_TRUE(run_until([&] { return accepted_closed(); }));
  EXPECT_EQ(accepted()->closed->kind, Kind::kTimeout) << describe(accepted()->closed);
  EXPECT_GE(accepted()->closed_at - start, 200ms);
  EXPECT_LT(accepted()->closed_at - start, 3s);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ChannelHandshakeStalls,
    ::testing::Values(Stall{"SendsNothing", {}},
                      // A record header promising a ClientHello that never comes.
                      Stall{"HalfAClientHello", Bytes{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(ChannelTest, AHalfSentFrameTimesOut) {
  acceptor_limits_.frame_timeout = 200ms;
  End* good_acceptor = nullptr;
  auto good = ready_pair(good_acceptor);
  ASSERT_NE(good_acceptor, nullptr);

  RawTlsClient hostile(loop_, *initiator_context_, listen_address_);
  ASSERT_TRUE(
      run_until([&] { return hostile.done() && accepted_.size() == 2 && accepted()->ready; }));
  End& victim = *accepted();
  Bytes frame = encode(Ping{9});
  frame.resize(kFrameHeaderSize + 3);
  const auto start = SteadyClock::now();
  hostile.write(frame);
  ASSERT_TRUE(run_until([&] { return victim.closed.has_value(); }));
  EXPECT_EQ(victim.closed->kind, Kind::kTimeout) << describe(victim.closed);
  EXPECT_THAT(victim.closed->detail, HasSubstr("stalled"));
  EXPECT_GE(victim.closed_at - start, 200ms);
  EXPECT_LT(victim.closed_at - start, 3s);
  EXPECT_TRUE(victim.messages.empty());
  expect_exchanges(*good, *good_acceptor);
}

// A frame finished in time disarms the timer: the channel outlives it.
TEST_F(ChannelTest, AFrameFinishedInTimeDoesNotTimeOut) {
  acceptor_limits_.frame_timeout = 200ms;
  RawTlsClient slow(loop_, *initiator_context_, listen_address_);
  ASSERT_TRUE(run_until([&] { return slow.done() && accepted() && accepted()->ready; }));
  End& acceptor = *accepted();
  const Bytes frame = encode(Ping{9});
  slow.write(Bytes(frame.begin(), frame.begin() + 5));
  run_for(100ms);
  slow.write(Bytes(frame.begin() + 5, frame.end()));
  ASSERT_TRUE(run_until([&] { return !acceptor.messages.empty(); }));
  EXPECT_EQ(acceptor.messages[0], Message(Ping{9}));
  run_for(300ms);
  EXPECT_FALSE(acceptor.closed.has_value()) << describe(acceptor.closed);
}

// The limit is per frame: a busy peer whose every read ends mid-frame, each
// frame finishing well within the limit, is not cut off.
TEST_F(ChannelTest, FramesStraddlingReadsEachWithinTheLimitDoNotTimeOut) {
  acceptor_limits_.frame_timeout = 200ms;
  RawTlsClient busy(loop_, *initiator_context_, listen_address_);
  ASSERT_TRUE(run_until([&] { return busy.done() && accepted() && accepted()->ready; }));
  End& acceptor = *accepted();
  constexpr std::uint64_t kFrames = 16;  // 40 ms apart: 600 ms in all
  std::vector<Bytes> frames;
  for (std::uint64_t i = 0; i < kFrames; ++i) frames.push_back(encode(Ping{i}));
  const std::size_t half = frames[0].size() / 2;
  busy.write(Bytes(frames[0].begin(), frames[0].begin() + half));
  for (std::uint64_t i = 1; i < kFrames; ++i) {
    run_for(40ms);
    // The rest of frame i - 1, and the start of frame i.
    Bytes chunk(frames[i - 1].begin() + half, frames[i - 1].end());
    chunk.insert(chunk.end(), frames[i].begin(), frames[i].begin() + half);
    busy.write(chunk);
  }
  run_for(40ms);
  EXPECT_FALSE(acceptor.closed.has_value()) << describe(acceptor.closed);
  EXPECT_EQ(acceptor.messages.size(), kFrames - 1);
}

// --- a peer that does not read ------------------------------------------------------

TEST_F(ChannelTest, APeerThatNeverReadsOverflows) {
  acceptor_limits_.max_output_bytes = 16 * 1024;
  // Small kernel buffers both ways, so the backlog builds in the channel.
  on_accepted_fd_ = [](int fd) {
    int small = 4096;
    EXPECT_EQ(::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  };
  End* good_acceptor = nullptr;
  auto good = ready_pair(good_acceptor);
  ASSERT_NE(good_acceptor, nullptr);

  RawTlsClient idle(loop_, *initiator_context_, listen_address_, /*reads=*/false,
                    /*receive_buffer=*/4096);
  ASSERT_TRUE(run_until([&] { return idle.done() && accepted_.size() == 2 && accepted()->ready; }));
  End& victim = *accepted();
  const AttestRequest big = big_request();
  int sent = 0;
  while (sent < 100'000 && victim.channel->send(big)) ++sent;
  ASSERT_TRUE(victim.closed.has_value()) << sent << " frames queued without overflow";
  EXPECT_EQ(victim.closed->kind, Kind::kOverflow) << describe(victim.closed);
  EXPECT_THAT(victim.closed->detail, HasSubstr("does not read"));
  EXPECT_GT(sent, 0);
  EXPECT_FALSE(victim.channel->send(Ping{1}));
  expect_exchanges(*good, *good_acceptor);
}

// The backlog drains once the peer reads: a burst bigger than the socket
// buffers but within the cap arrives whole.
TEST_F(ChannelTest, ABacklogWithinTheCapDrains) {
  on_accepted_fd_ = [](int fd) {
    int small = 4096;
    EXPECT_EQ(::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  };
  End* acceptor = nullptr;
  auto initiator = ready_pair(acceptor);
  ASSERT_NE(acceptor, nullptr);
  const AttestRequest big = big_request();
  constexpr int kCount = 400;  // ~600 KiB
  for (int i = 0; i < kCount; ++i) ASSERT_TRUE(acceptor->channel->send(big)) << i;
  ASSERT_TRUE(run_until([&] { return initiator->messages.size() == kCount; }))
      << initiator->messages.size() << "; " << describe(acceptor->closed);
  EXPECT_TRUE(acceptor->open());
}

// --- names --------------------------------------------------------------------------

TEST(CloseReasonKind, EveryKindHasItsName) {
  const std::pair<Kind, const char*> names[] = {
      {Kind::kConnectFailed, "connect-failed"},
      {Kind::kPeerRejected, "peer-rejected"},
      {Kind::kHandshakeFailed, "handshake-failed"},
      {Kind::kViolation, "protocol-violation"},
      {Kind::kTimeout, "timeout"},
      {Kind::kOverflow, "overflow"},
      {Kind::kPeerClosed, "peer-closed"},
      {Kind::kShutdown, "shutdown"},
  };
  for (const auto& [kind, name] : names) EXPECT_EQ(to_string(kind), name);
}

// A channel never outlives the SVID its peer authenticated with: the end
// that verified it closes it then, so the next channel is a handshake with
// the peer's rotated SVID.
TEST_F(ChannelTest, ClosesWhenThePeersSvidExpires) {
  test::Validity brief;
  brief.not_after = std::chrono::system_clock::now() + std::chrono::seconds(2);
  test::Issued leaf = world_.intermediate_b.issue(leaf_spec(kInitiatorId, brief));
  auto identity = tls::make_tls_identity(
      test::chain_of({leaf.cert.get(), world_.intermediate_b.cert()}), std::move(leaf.key));
  ASSERT_TRUE(identity.has_value()) << identity.error().message;
  initiator_context_.emplace(context(Role::kClient, *identity, initiator_trust_));
  End* acceptor = nullptr;
  auto initiator = ready_pair(acceptor);
  ASSERT_NE(acceptor, nullptr);
  ASSERT_TRUE(run_until([&] { return acceptor->closed.has_value(); }, 5s))
      << "the acceptor kept a channel past its peer's SVID";
  EXPECT_EQ(acceptor->closed->kind, Kind::kShutdown) << describe(acceptor->closed);
  EXPECT_NE(acceptor->closed->detail.find("expired"), std::string::npos);
  EXPECT_TRUE(run_until([&] { return initiator->closed.has_value(); }, 2s));
}

}  // namespace
}  // namespace trustfence::attest
