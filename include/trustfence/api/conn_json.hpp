#pragma once

// The JSON shapes of the query API, one place, so the agent's answers and
// the CLI's fallback (reading the pinned maps) print the same documents.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "trustfence/abi.h"
#include "trustfence/datapath/conn_table.hpp"

namespace trustfence::api {

// Interned id -> SPIFFE ID or trust domain string; nullopt when unknown.
// The kernel only holds the numbers; only the agent knows the names.
using NameOf = std::function<std::optional<std::string>(std::uint32_t id)>;

// One connection row, the contract of `trustfence conns --json`:
//   cookie, direction ("inbound"/"outbound"), local, remote ("ip:port"),
//   peer_id, peer_trust_domain (string, or null when none or unknown),
//   verdict ("pending"/"allow"/"deny"), reason, age_ms, cgroup_id,
//   generation.
// names may be empty (no agent): every peer is then null.
nlohmann::json conn_json(datapath::Cookie cookie, const tf_conn& conn, std::uint64_t now_ns,
                         const NameOf& names);

// The datapath part of `trustfence stats --json`:
//   {"packets":    {dir: {action: {reason: n}}} (non-zero cells only),
//    "counters":   {name: n},
//    "connections":{"tracked": n, "capacity": n, "by_verdict": {verdict: n}}}
// The agent adds its own top-level sections next to these.
nlohmann::json datapath_stats_json(const tf_stats& total,
                                   const std::vector<std::pair<datapath::Cookie, tf_conn>>& entries,
                                   std::size_t capacity);

}  // namespace trustfence::api
