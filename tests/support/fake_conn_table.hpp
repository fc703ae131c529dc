#pragma once

// An in-memory ConnTable for unprivileged tests. Through the ConnTable
// interface it behaves like BpfConnTable (it passes the same contract suite,
// tests/support/conn_table_contract.hpp); entries are created and removed only
// through kernel_insert / kernel_close, which play tf_sockops.

#include <cstddef>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "trustfence/abi.h"
#include "trustfence/common/result.hpp"
#include "trustfence/datapath/conn_table.hpp"

namespace trustfence::testing {

class FakeConnTable final : public datapath::ConnTable {
 public:
  explicit FakeConnTable(std::size_t capacity = TF_DEFAULT_MAX_CONNS) : capacity_(capacity) {}

  // What tf_sockops does on establishment (BPF_NOEXIST into a bounded hash):
  // false when the cookie is already tracked or the table is full.
  bool kernel_insert(datapath::Cookie cookie, const tf_conn& conn) {
    if (entries_.size() >= capacity_ || entries_.contains(cookie)) return false;
    entries_.emplace(cookie, conn);
    return true;
  }

  // What tf_sockops does on close; false when the cookie was not tracked.
  bool kernel_close(datapath::Cookie cookie) { return entries_.erase(cookie) == 1; }

  // While set, every call through the ConnTable interface fails with this
  // error, as map accesses do when the kernel refuses them.
  void fail_with(std::optional<Error> error) { failure_ = std::move(error); }

  std::size_t size() const { return entries_.size(); }

  Result<std::optional<tf_conn>> lookup(datapath::Cookie cookie) const override {
    if (failure_) return std::unexpected(*failure_);
    auto it = entries_.find(cookie);
    if (it == entries_.end()) return std::optional<tf_conn>{};
    return it->second;
  }

  Result<bool> set_verdict(datapath::Cookie cookie,
                           const datapath::VerdictUpdate& update) override {
    if (failure_) return std::unexpected(*failure_);
    auto it = entries_.find(cookie);
    if (it == entries_.end()) return false;
    datapath::apply(update, it->second);
    return true;
  }

  Result<std::vector<std::pair<datapath::Cookie, tf_conn>>> snapshot() const override {
    if (failure_) return std::unexpected(*failure_);
    return std::vector<std::pair<datapath::Cookie, tf_conn>>(entries_.begin(), entries_.end());
  }

  Result<bool> erase(datapath::Cookie cookie) override {
    if (failure_) return std::unexpected(*failure_);
    return entries_.erase(cookie) == 1;
  }

  std::size_t capacity() const override { return capacity_; }

 private:
  std::size_t capacity_;
  std::map<datapath::Cookie, tf_conn> entries_;
  std::optional<Error> failure_;
};

}  // namespace trustfence::testing
