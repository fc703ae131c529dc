#include "trustfence/datapath/conn_table.hpp"

#include <unordered_set>

namespace trustfence::datapath {

void apply(const VerdictUpdate& update, tf_conn& conn) {
  conn.verdict = static_cast<__u8>(update.verdict);
  conn.reason = static_cast<__u8>(update.reason);
  conn.peer_id = update.peer_id;
  conn.peer_trust_domain = update.peer_trust_domain;
  conn.generation = update.generation;
  conn.decided_ns = update.decided_ns;
}

Result<std::optional<tf_conn>> BpfConnTable::lookup(Cookie cookie) const {
  return map_.lookup(cookie);
}

Result<bool> BpfConnTable::set_verdict(Cookie cookie, const VerdictUpdate& update) {
  auto current = map_.lookup(cookie);
  if (!current) return std::unexpected(current.error());
  if (!*current) return false;
  tf_conn conn = **current;
  apply(update, conn);
  // Existing-only: a socket that closed meanwhile must not be resurrected.
  auto written = map_.update(cookie, conn, Update::kExistingOnly);
  if (written) return true;
  if (written.error().code == Errc::kNotFound) return false;
  return std::unexpected(written.error());
}

Result<std::vector<std::pair<Cookie, tf_conn>>> BpfConnTable::snapshot() const {
  std::vector<std::pair<Cookie, tf_conn>> entries;
  // A walk restarts when its cursor is deleted under it: keep each key once.
  std::vector<Cookie> keys;
  std::unordered_set<Cookie> seen;
  auto walked = map_.for_each_key([&](const Cookie& key) {
    if (seen.insert(key).second) keys.push_back(key);
  });
  if (!walked) return std::unexpected(walked.error());
  entries.reserve(keys.size());
  for (Cookie key : keys) {
    auto conn = map_.lookup(key);
    if (!conn) return std::unexpected(conn.error());
    if (*conn) entries.emplace_back(key, **conn);
  }
  return entries;
}

Result<bool> BpfConnTable::erase(Cookie cookie) { return map_.erase(cookie); }

}  // namespace trustfence::datapath
