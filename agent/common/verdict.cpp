#include "trustfence/common/verdict.hpp"

#include <array>

namespace trustfence {
namespace {

constexpr std::array<std::string_view, TF_VERDICT_COUNT> kVerdicts = {"pending", "allow", "deny"};

constexpr std::array<std::string_view, TF_REASON_COUNT> kReasons = {
    "none",
    "local-domain",
    "alias-domain",
    "allowed-id",
    "plaintext-permissive",
    "exempt",
    "domain-not-allowed",
    "id-denied",
    "bad-chain",
    "expired",
    "invalid-svid",
    "no-bundle",
    "no-peer-agent",
    "attestation-timeout",
    "revoked",
    "pending",
    "untracked",
    "table-full",
};
static_assert(kReasons.size() == TF_REASON_COUNT, "a name for every tf_reason");

constexpr std::array<std::string_view, TF_ACTION_COUNT> kActions = {"pass", "drop", "audit"};
constexpr std::array<std::string_view, TF_PACKET_DIR_COUNT> kPacketDirs = {"egress", "ingress"};
constexpr std::array<std::string_view, TF_COUNTER_COUNT> kCounters = {
    "conn_tracked", "conn_exempt", "conn_closed",  "table_full",
    "events_lost",  "rto_lowered", "rto_restored", "rto_unsupported",
};

template <typename Enum, std::size_t N>
std::string_view name_of(const std::array<std::string_view, N>& names, Enum value) {
  auto index = static_cast<std::size_t>(value);
  return index < N ? names[index] : std::string_view("unknown");
}

template <typename Enum, std::size_t N>
std::optional<Enum> find_name(const std::array<std::string_view, N>& names, std::string_view name) {
  for (std::size_t i = 0; i < N; ++i)
    if (names[i] == name) return static_cast<Enum>(i);
  return std::nullopt;
}

}  // namespace

std::string_view to_string(tf_verdict verdict) { return name_of(kVerdicts, verdict); }
std::string_view to_string(tf_reason reason) { return name_of(kReasons, reason); }
std::string_view to_string(tf_action action) { return name_of(kActions, action); }
std::string_view to_string(tf_packet_dir dir) { return name_of(kPacketDirs, dir); }
std::string_view to_string(tf_counter counter) { return name_of(kCounters, counter); }

std::string_view to_string(tf_direction direction) {
  switch (direction) {
    case TF_DIRECTION_OUTBOUND:
      return "outbound";
    case TF_DIRECTION_INBOUND:
      return "inbound";
  }
  return "unknown";
}

std::optional<tf_verdict> verdict_from_string(std::string_view name) {
  return find_name<tf_verdict>(kVerdicts, name);
}
std::optional<tf_reason> reason_from_string(std::string_view name) {
  return find_name<tf_reason>(kReasons, name);
}

std::optional<tf_verdict> verdict_from_byte(unsigned value) {
  if (value >= TF_VERDICT_COUNT) return std::nullopt;
  return static_cast<tf_verdict>(value);
}
std::optional<tf_reason> reason_from_byte(unsigned value) {
  if (value >= TF_REASON_COUNT) return std::nullopt;
  return static_cast<tf_reason>(value);
}

}  // namespace trustfence
