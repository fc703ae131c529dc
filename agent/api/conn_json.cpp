#include "trustfence/api/conn_json.hpp"

#include "trustfence/common/verdict.hpp"
#include "trustfence/datapath/format.hpp"

namespace trustfence::api {
namespace {

using json = nlohmann::json;

json name_or_null(std::uint32_t id, const NameOf& names) {
  if (id == 0 || !names) return nullptr;
  auto name = names(id);
  return name ? json(*name) : json(nullptr);
}

std::string verdict_name(std::uint8_t byte) {
  auto verdict = verdict_from_byte(byte);
  return verdict ? std::string(to_string(*verdict)) : "invalid";
}

std::string direction_name(std::uint8_t byte) {
  // Bytes from the kernel are checked before they become enum values.
  if (byte != TF_DIRECTION_INBOUND && byte != TF_DIRECTION_OUTBOUND) return "invalid";
  return std::string(to_string(static_cast<tf_direction>(byte)));
}

}  // namespace

json conn_json(datapath::Cookie cookie, const tf_conn& conn, std::uint64_t now_ns,
               const NameOf& names) {
  auto reason = reason_from_byte(conn.reason);
  return json{
      {"cookie", cookie},
      {"direction", direction_name(conn.direction)},
      {"local", datapath::local_endpoint(conn.tuple)},
      {"remote", datapath::remote_endpoint(conn.tuple)},
      {"peer_id", name_or_null(conn.peer_id, names)},
      {"peer_trust_domain", name_or_null(conn.peer_trust_domain, names)},
      {"verdict", verdict_name(conn.verdict)},
      {"reason", reason ? std::string(to_string(*reason)) : "invalid"},
      {"age_ms", now_ns > conn.created_ns ? (now_ns - conn.created_ns) / 1'000'000 : 0},
      {"cgroup_id", conn.cgroup_id},
      {"generation", conn.generation},
  };
}

json datapath_stats_json(const tf_stats& total,
                         const std::vector<std::pair<datapath::Cookie, tf_conn>>& entries,
                         std::size_t capacity) {
  json packets = json::object();
  for (int d = 0; d < TF_PACKET_DIR_COUNT; ++d)
    for (int a = 0; a < TF_ACTION_COUNT; ++a)
      for (int r = 0; r < TF_REASON_COUNT; ++r)
        if (auto n = total.packets[d][a][r]; n != 0)
          packets[std::string(to_string(static_cast<tf_packet_dir>(d)))][std::string(to_string(
              static_cast<tf_action>(a)))][std::string(to_string(static_cast<tf_reason>(r)))] = n;
  json counters = json::object();
  for (int c = 0; c < TF_COUNTER_COUNT; ++c)
    counters[std::string(to_string(static_cast<tf_counter>(c)))] = total.counters[c];
  json by_verdict = json::object();
  for (const auto& [cookie, conn] : entries) {
    auto name = verdict_name(conn.verdict);
    by_verdict[name] = by_verdict.value(name, std::uint64_t{0}) + 1;
  }
  return json{{"packets", std::move(packets)},
              {"counters", std::move(counters)},
              {"connections",
               {{"tracked", entries.size()},
                {"capacity", capacity},
                {"by_verdict", std::move(by_verdict)}}}};
}

}  // namespace trustfence::api
