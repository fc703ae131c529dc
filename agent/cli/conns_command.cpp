// conns, conn, stats: read the pinned maps directly, so they answer whether
// or not the agent runs. Peer identities are shown as the agent's interned
// ids here; names need the agent.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <iostream>

#include "cli_commands.hpp"
#include "trustfence/common/verdict.hpp"
#include "trustfence/config/config.hpp"
#include "trustfence/datapath/datapath.hpp"
#include "trustfence/datapath/format.hpp"

namespace trustfence::cli {
namespace {

using datapath::Cookie;
using json = nlohmann::json;

struct CommonArgs {
  bool json = false;
  std::vector<std::string> positional;
  std::vector<std::string> rest;  // --pin-dir/--config and their values
};

Result<CommonArgs> split_args(const std::vector<std::string>& args) {
  CommonArgs out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json") {
      out.json = true;
    } else if (args[i] == "--pin-dir" || args[i] == "--config") {
      out.rest.push_back(args[i]);
      if (i + 1 < args.size()) out.rest.push_back(args[++i]);
    } else if (args[i].starts_with("--")) {
      return fail(Errc::kInvalidArgument, "unknown option " + args[i]);
    } else {
      out.positional.push_back(args[i]);
    }
  }
  return out;
}

json conn_json(Cookie cookie, const tf_conn& c, std::uint64_t now_ns) {
  auto verdict = verdict_from_byte(c.verdict);
  auto reason = reason_from_byte(c.reason);
  return json{
      {"cookie", cookie},
      {"direction", std::string(to_string(static_cast<tf_direction>(c.direction)))},
      {"local", datapath::local_endpoint(c.tuple)},
      {"remote", datapath::remote_endpoint(c.tuple)},
      {"peer_id", c.peer_id ? json(c.peer_id) : json(nullptr)},
      {"peer_trust_domain", c.peer_trust_domain ? json(c.peer_trust_domain) : json(nullptr)},
      {"verdict", verdict ? std::string(to_string(*verdict)) : "invalid"},
      {"reason", reason ? std::string(to_string(*reason)) : "invalid"},
      {"age_ms", now_ns > c.created_ns ? (now_ns - c.created_ns) / 1'000'000 : 0},
      {"cgroup_id", c.cgroup_id},
      {"generation", c.generation},
  };
}

void print_table(const json& rows) {
  std::printf("%-20s %-9s %-24s %-24s %-8s %-20s %8s\n", "COOKIE", "DIRECTION", "LOCAL", "REMOTE",
              "VERDICT", "REASON", "AGE_MS");
  for (const auto& r : rows) {
    std::printf("%-20llu %-9s %-24s %-24s %-8s %-20s %8llu\n",
                static_cast<unsigned long long>(r["cookie"].get<Cookie>()),
                r["direction"].get<std::string>().c_str(), r["local"].get<std::string>().c_str(),
                r["remote"].get<std::string>().c_str(), r["verdict"].get<std::string>().c_str(),
                r["reason"].get<std::string>().c_str(),
                static_cast<unsigned long long>(r["age_ms"].get<std::uint64_t>()));
  }
}

Result<datapath::PinnedMaps> open_maps(const CommonArgs& args) {
  auto paths = config::load_client_paths(args.rest);
  if (!paths) return std::unexpected(paths.error());
  return datapath::PinnedMaps::open(paths->pin_dir);
}

int report(const Error& error, const char* command) {
  std::cerr << "trustfence " << command << ": " << error.message << "\n";
  return error.code == Errc::kInvalidArgument ? 2 : 1;
}

}  // namespace

int conns_command(const std::vector<std::string>& argv) {
  auto args = split_args(argv);
  if (!args) return report(args.error(), "conns");
  auto maps = open_maps(*args);
  if (!maps) return report(maps.error(), "conns");
  auto entries = maps->conns->snapshot();
  if (!entries) return report(entries.error(), "conns");
  std::sort(entries->begin(), entries->end(),
            [](const auto& a, const auto& b) { return a.second.created_ns < b.second.created_ns; });
  auto now = datapath::monotonic_ns();
  json rows = json::array();
  for (const auto& [cookie, conn] : *entries) rows.push_back(conn_json(cookie, conn, now));
  if (args->json)
    std::cout << rows.dump(2) << "\n";
  else
    print_table(rows);
  return 0;
}

int conn_command(const std::vector<std::string>& argv) {
  auto args = split_args(argv);
  if (!args) return report(args.error(), "conn");
  if (args->positional.size() != 1)
    return report({Errc::kInvalidArgument, "usage: trustfence conn COOKIE [--json]"}, "conn");
  const auto& text = args->positional[0];
  Cookie cookie = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), cookie);
  if (ec != std::errc() || end != text.data() + text.size())
    return report({Errc::kInvalidArgument, "COOKIE '" + text + "' is not a number"}, "conn");
  auto maps = open_maps(*args);
  if (!maps) return report(maps.error(), "conn");
  auto conn = maps->conns->lookup(cookie);
  if (!conn) return report(conn.error(), "conn");
  if (!*conn) return report({Errc::kNotFound, "no tracked connection " + text}, "conn");
  json row = conn_json(cookie, **conn, datapath::monotonic_ns());
  if (args->json)
    std::cout << row.dump(2) << "\n";
  else
    print_table(json::array({row}));
  return 0;
}

int stats_command(const std::vector<std::string>& argv) {
  auto args = split_args(argv);
  if (!args) return report(args.error(), "stats");
  auto maps = open_maps(*args);
  if (!maps) return report(maps.error(), "stats");
  auto per_cpu = maps->stats->lookup(0);
  if (!per_cpu) return report(per_cpu.error(), "stats");
  tf_stats total = datapath::sum_stats(*per_cpu);
  auto entries = maps->conns->snapshot();
  if (!entries) return report(entries.error(), "stats");

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
  json verdicts = json::object();
  for (const auto& [cookie, conn] : *entries) {
    auto v = verdict_from_byte(conn.verdict);
    verdicts[v ? std::string(to_string(*v)) : "invalid"] =
        verdicts.value(v ? std::string(to_string(*v)) : "invalid", 0) + 1;
  }
  json out = {{"packets", packets},
              {"counters", counters},
              {"connections",
               {{"tracked", entries->size()},
                {"capacity", maps->conns->capacity()},
                {"by_verdict", verdicts}}}};
  if (args->json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("connections: %zu tracked of %zu\n", entries->size(), maps->conns->capacity());
  for (auto& [verdict, n] : verdicts.items())
    std::printf("  %-10s %llu\n", verdict.c_str(), n.get<unsigned long long>());
  std::printf("packets:\n");
  for (auto& [dir, actions] : packets.items())
    for (auto& [action, reasons] : actions.items())
      for (auto& [reason, n] : reasons.items())
        std::printf("  %-8s %-6s %-22s %llu\n", dir.c_str(), action.c_str(), reason.c_str(),
                    n.get<unsigned long long>());
  std::printf("counters:\n");
  for (auto& [name, n] : counters.items())
    std::printf("  %-18s %llu\n", name.c_str(), n.get<unsigned long long>());
  return 0;
}

}  // namespace trustfence::cli
