#pragma once

// The kernel tier's fixture: a fresh cgroup v2 and a unique pin directory
// per test, the real datapath loaded and attached to that cgroup, and an
// uninstall in TearDown whatever happened in the test.

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/kernel/cgroup.hpp"
#include "trustfence/datapath/datapath.hpp"
#include "trustfence/datapath/events.hpp"

namespace trustfence::testing::kernel {

// Records every tf_events record; waits on the ring buffer's descriptor,
// so a wait ends as soon as the event it needs is there.
class EventLog {
 public:
  static Result<EventLog> open(const datapath::Datapath& dp);

  // Consumes what is ready without waiting.
  Result<void> drain();
  // Polls the ring buffer until done(events()) or the timeout.
  Result<bool> wait_until(const std::function<bool(const EventLog&)>& done,
                          std::chrono::milliseconds timeout);
  Result<bool> wait_for(tf_event_kind kind, std::uint64_t cookie,
                        std::chrono::milliseconds timeout);

  const std::vector<datapath::Event>& events() const { return *events_; }
  std::optional<datapath::Event> find(tf_event_kind kind, std::uint64_t cookie) const;
  std::size_t count(tf_event_kind kind) const;

 private:
  EventLog(std::unique_ptr<std::vector<datapath::Event>> events, datapath::EventReader reader)
      : events_(std::move(events)), reader_(std::move(reader)) {}

  std::unique_ptr<std::vector<datapath::Event>> events_;  // stable for the callback
  datapath::EventReader reader_;
};

// For kernel state no descriptor reports (map entries, counters): checks
// pred every millisecond until it holds or the timeout passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

class TestDatapath : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // The fixture's cgroup and pin directory, everything else default.
  datapath::DatapathOptions options() const;
  Result<void> open();
  Result<void> open(const datapath::DatapathOptions& options);
  // Drops the Datapath object only: pins and links stay, as when the agent
  // stops or restarts.
  void close() { datapath_.reset(); }

  datapath::Datapath& dp() { return *datapath_; }
  datapath::ConnTable& conns() { return datapath_->conns(); }
  const TestCgroup& cgroup() const { return *cgroup_; }
  const std::string& pin_dir() const { return pin_dir_; }

  // Moves this process into the test cgroup until the result is dropped.
  Result<CgroupMembership> enter_cgroup() const { return CgroupMembership::enter(*cgroup_); }

  Result<tf_stats> stats() const { return datapath_->stats(); }
  // Through Datapath::apply_verdicts, as the agent does.
  Result<bool> decide(std::uint64_t cookie, tf_verdict verdict, tf_reason reason);
  Result<bool> allow(std::uint64_t cookie, tf_reason reason = TF_REASON_LOCAL_DOMAIN);
  Result<bool> deny(std::uint64_t cookie, tf_reason reason = TF_REASON_DOMAIN_NOT_ALLOWED);

 private:
  std::optional<TestCgroup> cgroup_;
  std::string pin_dir_;
  std::optional<datapath::Datapath> datapath_;
};

}  // namespace trustfence::testing::kernel
