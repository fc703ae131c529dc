#include "support/kernel/test_datapath.hpp"

#include <poll.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "support/privileges.hpp"
#include "trustfence/datapath/format.hpp"

namespace trustfence::testing::kernel {
namespace fs = std::filesystem;
using datapath::Event;

Result<EventLog> EventLog::open(const datapath::Datapath& dp) {
  auto events = std::make_unique<std::vector<Event>>();
  auto reader = dp.events([sink = events.get()](const Event& ev) { sink->push_back(ev); });
  if (!reader) return std::unexpected(reader.error());
  return EventLog(std::move(events), std::move(*reader));
}

Result<void> EventLog::drain() {
  auto n = reader_.poll(0);
  if (!n) return std::unexpected(n.error());
  return {};
}

Result<bool> EventLog::wait_until(const std::function<bool(const EventLog&)>& done,
                                  std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (auto ok = drain(); !ok) return std::unexpected(ok.error());
    if (done(*this)) return true;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    // Closes come without a wake-up: poll in short slices.
    auto slice = std::min<long>(left.count(), datapath::kEventPollMs);
    auto n = reader_.poll(static_cast<int>(slice));
    if (!n) return std::unexpected(n.error());
  }
}

Result<bool> EventLog::wait_for(tf_event_kind kind, std::uint64_t cookie,
                                std::chrono::milliseconds timeout) {
  return wait_until([&](const EventLog& log) { return log.find(kind, cookie).has_value(); },
                    timeout);
}

std::optional<Event> EventLog::find(tf_event_kind kind, std::uint64_t cookie) const {
  for (const auto& ev : *events_)
    if (ev.kind == kind && ev.cookie == cookie) return ev;
  return std::nullopt;
}

std::size_t EventLog::count(tf_event_kind kind) const {
  std::size_t n = 0;
  for (const auto& ev : *events_) n += ev.kind == kind;
  return n;
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void TestDatapath::SetUp() {
  TF_REQUIRE_ROOT();
  sweep_stale_test_leftovers();
  auto cgroup = TestCgroup::create();
  ASSERT_TRUE(cgroup.has_value()) << cgroup.error().message;
  cgroup_.emplace(std::move(*cgroup));
  pin_dir_ = (fs::path("/sys/fs/bpf") / unique_test_name()).string();
}

void TestDatapath::TearDown() {
  datapath_.reset();
  if (!pin_dir_.empty() && fs::exists(pin_dir_)) {
    auto gone = datapath::Datapath::uninstall(pin_dir_);
    EXPECT_TRUE(gone.has_value()) << "uninstall in TearDown: " << gone.error().message;
    // A test may have planted pins uninstall does not know; leave nothing.
    std::error_code ec;
    fs::remove_all(pin_dir_, ec);
  }
  if (cgroup_) {
    auto removed = cgroup_->remove();
    EXPECT_TRUE(removed.has_value()) << removed.error().message;
    cgroup_.reset();
  }
}

datapath::DatapathOptions TestDatapath::options() const {
  datapath::DatapathOptions opts;
  opts.cgroup = cgroup_->path();
  opts.pin_dir = pin_dir_;
  return opts;
}

Result<void> TestDatapath::open() { return open(options()); }

Result<void> TestDatapath::open(const datapath::DatapathOptions& opts) {
  datapath_.reset();
  auto dp = datapath::Datapath::open(opts);
  if (!dp) return std::unexpected(dp.error());
  datapath_.emplace(std::move(*dp));
  return {};
}

Result<bool> TestDatapath::decide(std::uint64_t cookie, tf_verdict verdict, tf_reason reason) {
  // The agent's path: write the verdict, then resend what ALLOW released.
  datapath::VerdictUpdate update;
  update.verdict = verdict;
  update.reason = reason;
  update.decided_ns = datapath::monotonic_ns();
  const std::pair<datapath::Cookie, datapath::VerdictUpdate> one{cookie, update};
  auto applied = datapath_->apply_verdicts(std::span(&one, 1));
  if (!applied) return std::unexpected(applied.error());
  return *applied == 1;
}

Result<bool> TestDatapath::allow(std::uint64_t cookie, tf_reason reason) {
  return decide(cookie, TF_VERDICT_ALLOW, reason);
}

Result<bool> TestDatapath::deny(std::uint64_t cookie, tf_reason reason) {
  return decide(cookie, TF_VERDICT_DENY, reason);
}

}  // namespace trustfence::testing::kernel
