#pragma once

// The connection table: socket cookie -> tf_conn. The agent reads entries
// the kernel created and writes verdicts into them; it never creates one
// (a verdict for a socket that closed meanwhile is simply dropped).

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "trustfence/abi.h"
#include "trustfence/common/result.hpp"
#include "trustfence/datapath/typed_map.hpp"

namespace trustfence::datapath {

using Cookie = std::uint64_t;

struct VerdictUpdate {
  tf_verdict verdict = TF_VERDICT_PENDING;
  tf_reason reason = TF_REASON_NONE;
  std::uint32_t peer_id = 0;
  std::uint32_t peer_trust_domain = 0;
  std::uint32_t generation = 0;
  std::uint64_t decided_ns = 0;
};

// Writes the decision fields of update into conn, leaving the rest alone.
void apply(const VerdictUpdate& update, tf_conn& conn);

class ConnTable {
 public:
  virtual ~ConnTable() = default;

  virtual Result<std::optional<tf_conn>> lookup(Cookie cookie) const = 0;
  // False when the connection is gone (closed before the verdict).
  virtual Result<bool> set_verdict(Cookie cookie, const VerdictUpdate& update) = 0;
  virtual Result<std::vector<std::pair<Cookie, tf_conn>>> snapshot() const = 0;
  // For entries whose socket is known to be gone; false when absent.
  virtual Result<bool> erase(Cookie cookie) = 0;
  virtual std::size_t capacity() const = 0;
};

// The table in the kernel (tf_conns).
class BpfConnTable final : public ConnTable {
 public:
  explicit BpfConnTable(TypedMap<Cookie, tf_conn> map) : map_(std::move(map)) {}

  Result<std::optional<tf_conn>> lookup(Cookie cookie) const override;
  Result<bool> set_verdict(Cookie cookie, const VerdictUpdate& update) override;
  Result<std::vector<std::pair<Cookie, tf_conn>>> snapshot() const override;
  Result<bool> erase(Cookie cookie) override;
  std::size_t capacity() const override { return map_.max_entries(); }

 private:
  TypedMap<Cookie, tf_conn> map_;
};

}  // namespace trustfence::datapath
