// conns, conn, stats: ask the running agent over its api-socket. When no
// agent runs, read the pinned maps directly: verdicts survive the agent, but
// peer identities (names only the agent holds) are then null.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string_view>

#include "cli_commands.hpp"
#include "trustfence/api/client.hpp"
#include "trustfence/api/conn_json.hpp"
#include "trustfence/common/verdict.hpp"
#include "trustfence/config/config.hpp"
#include "trustfence/datapath/datapath.hpp"
#include "trustfence/datapath/format.hpp"
#include "trustfence/identity/spiffe_id.hpp"

namespace trustfence::cli {
namespace {

using datapath::Cookie;
using json = nlohmann::json;

enum class Command { kConns, kConn, kStats };

const char* name_of(Command command) {
  switch (command) {
    case Command::kConns:
      return "conns";
    case Command::kConn:
      return "conn";
    case Command::kStats:
      return "stats";
  }
  return "?";
}

struct CommonArgs {
  bool json = false;
  bool closed = false;                          // conns only
  std::optional<std::string> verdict;           // conns only
  std::optional<identity::TrustDomain> domain;  // conns only: --peer-trust-domain
  std::vector<std::string> positional;
  std::vector<std::string> paths;  // --config/--pin-dir/--api-socket and their values
};

Result<CommonArgs> split_args(const std::vector<std::string>& args, Command command) {
  CommonArgs out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string option = args[i];
    std::optional<std::string> value;
    if (auto eq = option.find('='); option.starts_with("--") && eq != std::string::npos) {
      value = option.substr(eq + 1);
      option.resize(eq);
    }
    auto take_value = [&]() -> Result<std::string> {
      if (value) return *value;
      if (i + 1 >= args.size()) return fail(Errc::kInvalidArgument, option + " needs a value");
      return args[++i];
    };
    bool conns = command == Command::kConns;
    if (!option.starts_with("--")) {
      out.positional.push_back(args[i]);
    } else if (option == "--json" && !value) {
      out.json = true;
    } else if (conns && option == "--closed" && !value) {
      out.closed = true;
    } else if (option == "--pin-dir" || option == "--config" || option == "--api-socket") {
      auto v = take_value();
      if (!v) return std::unexpected(v.error());
      out.paths.insert(out.paths.end(), {option, *v});
    } else if (conns && option == "--verdict") {
      auto v = take_value();
      if (!v) return std::unexpected(v.error());
      if (*v != "allow" && *v != "deny" && *v != "pending")
        return fail(Errc::kInvalidArgument, "--verdict must be allow, deny or pending");
      out.verdict = *v;
    } else if (conns && option == "--peer-trust-domain") {
      auto v = take_value();
      if (!v) return std::unexpected(v.error());
      auto td = identity::TrustDomain::parse(*v);
      if (!td) return fail(Errc::kInvalidArgument, "--peer-trust-domain: " + td.error().message);
      out.domain = std::move(*td);
    } else {
      return fail(Errc::kInvalidArgument, "unknown option " + args[i]);
    }
  }
  return out;
}

int report(const Error& error, Command command) {
  std::cerr << "trustfence " << name_of(command) << ": " << error.message << "\n";
  return error.code == Errc::kInvalidArgument ? 2 : 1;
}

// The agent's answer, or nullopt (after a note on stderr) when no agent
// runs and the pinned maps must do.
Result<std::optional<json>> ask_agent(const config::ClientPaths& paths, const json& request,
                                      Command command) {
  auto reply = api::call(paths.api_socket, request, api::kDefaultCallTimeout);
  if (reply) return std::optional<json>(std::move(*reply));
  if (reply.error().code != Errc::kNotFound) return std::unexpected(reply.error());
  std::cerr << "trustfence " << name_of(command) << ": no agent answers on " << paths.api_socket
            << "; reading the pinned maps in " << paths.pin_dir
            << " (peer identities need the agent)\n";
  return std::optional<json>();
}

std::string text_of(const json& row, const char* key) {
  auto it = row.find(key);
  if (it == row.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::uint64_t age_of(const json& row) {
  auto it = row.find("age_ms");
  return it != row.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

void print_table(const json& rows, bool with_state) {
  std::printf("%-20s %-9s %-24s %-24s ", "COOKIE", "DIRECTION", "LOCAL", "REMOTE");
  if (with_state) std::printf("%-6s ", "STATE");
  std::printf("%-8s %-20s %8s %s\n", "VERDICT", "REASON", "AGE_MS", "PEER_ID");
  for (const auto& r : rows) {
    std::printf("%-20s %-9s %-24s %-24s ", text_of(r, "cookie").c_str(),
                text_of(r, "direction").c_str(), text_of(r, "local").c_str(),
                text_of(r, "remote").c_str());
    if (with_state) std::printf("%-6s ", text_of(r, "state").c_str());
    std::printf("%-8s %-20s %8s %s\n", text_of(r, "verdict").c_str(), text_of(r, "reason").c_str(),
                text_of(r, "age_ms").c_str(), text_of(r, "peer_id").c_str());
  }
}

bool matches(const json& row, const CommonArgs& args) {
  if (args.verdict && text_of(row, "verdict") != *args.verdict) return false;
  if (args.domain) {
    // Parsed values, never strings: an odd spelling must not match.
    auto it = row.find("peer_trust_domain");
    if (it == row.end() || !it->is_string()) return false;
    auto td = identity::TrustDomain::parse(it->get<std::string>());
    if (!td || *td != *args.domain) return false;
  }
  return true;
}

Result<datapath::PinnedMaps> open_maps(const config::ClientPaths& paths) {
  return datapath::PinnedMaps::open(paths.pin_dir);
}

Result<json> rows_from_maps(const config::ClientPaths& paths) {
  auto maps = open_maps(paths);
  if (!maps) return std::unexpected(maps.error());
  auto entries = maps->conns->snapshot();
  if (!entries) return std::unexpected(entries.error());
  std::sort(entries->begin(), entries->end(),
            [](const auto& a, const auto& b) { return a.second.created_ns < b.second.created_ns; });
  auto now = datapath::monotonic_ns();
  json rows = json::array();
  for (const auto& [cookie, conn] : *entries) rows.push_back(api::conn_json(cookie, conn, now, {}));
  return rows;
}

Result<json> row_from_maps(const config::ClientPaths& paths, Cookie cookie) {
  auto maps = open_maps(paths);
  if (!maps) return std::unexpected(maps.error());
  auto conn = maps->conns->lookup(cookie);
  if (!conn) return std::unexpected(conn.error());
  if (!*conn) return fail(Errc::kNotFound, "no tracked connection " + std::to_string(cookie));
  return api::conn_json(cookie, **conn, datapath::monotonic_ns(), {});
}

// The connection whose endpoints print as local and remote.
Result<json> row_from_maps(const config::ClientPaths& paths, const std::string& local,
                           const std::string& remote) {
  auto rows = rows_from_maps(paths);
  if (!rows) return std::unexpected(rows.error());
  for (const auto& row : *rows)
    if (text_of(row, "local") == local && text_of(row, "remote") == remote) return row;
  return fail(Errc::kNotFound, "no tracked connection " + local + " -> " + remote);
}

Result<json> stats_from_maps(const config::ClientPaths& paths) {
  auto maps = open_maps(paths);
  if (!maps) return std::unexpected(maps.error());
  auto per_cpu = maps->stats->lookup(0);
  if (!per_cpu) return std::unexpected(per_cpu.error());
  auto entries = maps->conns->snapshot();
  if (!entries) return std::unexpected(entries.error());
  return api::datapath_stats_json(datapath::sum_stats(*per_cpu), *entries, maps->conns->capacity());
}

Error malformed(const config::ClientPaths& paths, const char* what) {
  return {Errc::kIo, "the agent on " + paths.api_socket + " sent no " + what};
}

Result<json> conns_rows(const CommonArgs& args, const config::ClientPaths& paths) {
  auto reply =
      ask_agent(paths, {{"command", "conns"}, {"include_closed", args.closed}}, Command::kConns);
  if (!reply) return std::unexpected(reply.error());
  if (!*reply) {
    if (args.closed)
      return fail(Errc::kNotFound,
                  "--closed: closed connections need the running agent (" + paths.api_socket + ")");
    return rows_from_maps(paths);
  }
  auto rows = (*reply)->find("connections");
  if (rows == (*reply)->end() || !rows->is_array() ||
      !std::all_of(rows->begin(), rows->end(), [](const json& r) { return r.is_object(); }))
    return std::unexpected(malformed(paths, "\"connections\" list of objects"));
  return std::move(*rows);
}

// `section.key value` for every leaf of a section the CLI has no layout for.
void print_flat(const std::string& prefix, const json& value) {
  if (value.is_object()) {
    for (const auto& [key, child] : value.items()) print_flat(prefix + "." + key, child);
    return;
  }
  std::string text = value.is_string() ? value.get<std::string>() : value.dump();
  std::printf("%s %s\n", prefix.c_str(), text.c_str());
}

unsigned long long count_of(const json& value) {
  return value.is_number_unsigned() ? value.get<unsigned long long>() : 0;
}

void print_stats(const json& out) {
  static constexpr std::string_view kDatapath[] = {"connections", "packets", "counters"};
  if (auto conns = out.find("connections"); conns != out.end() && conns->is_object()) {
    std::printf("connections: %llu tracked of %llu\n", count_of(conns->value("tracked", json())),
                count_of(conns->value("capacity", json())));
    if (auto v = conns->find("by_verdict"); v != conns->end() && v->is_object())
      for (const auto& [verdict, n] : v->items())
        std::printf("  %-10s %llu\n", verdict.c_str(), count_of(n));
  }
  if (auto packets = out.find("packets"); packets != out.end() && packets->is_object()) {
    std::printf("packets:\n");
    for (const auto& [dir, actions] : packets->items())
      for (const auto& [action, reasons] : actions.items())
        for (const auto& [reason, n] : reasons.items())
          std::printf("  %-8s %-6s %-22s %llu\n", dir.c_str(), action.c_str(), reason.c_str(),
                      count_of(n));
  }
  if (auto counters = out.find("counters"); counters != out.end() && counters->is_object()) {
    std::printf("counters:\n");
    for (const auto& [name, n] : counters->items())
      std::printf("  %-18s %llu\n", name.c_str(), count_of(n));
  }
  for (const auto& [section, value] : out.items())
    if (std::ranges::find(kDatapath, section) == std::end(kDatapath)) print_flat(section, value);
}

}  // namespace

int conns_command(const std::vector<std::string>& argv) {
  constexpr auto kCommand = Command::kConns;
  auto args = split_args(argv, kCommand);
  if (!args) return report(args.error(), kCommand);
  if (!args->positional.empty())
    return report({Errc::kInvalidArgument, "unexpected argument " + args->positional[0]}, kCommand);
  auto paths = config::load_client_paths(args->paths);
  if (!paths) return report(paths.error(), kCommand);
  auto rows = conns_rows(*args, *paths);
  if (!rows) return report(rows.error(), kCommand);
  json shown = json::array();
  for (auto& row : *rows)
    if (matches(row, *args)) shown.push_back(std::move(row));
  // Oldest first, whoever built the rows.
  std::stable_sort(shown.begin(), shown.end(),
                   [](const json& a, const json& b) { return age_of(a) > age_of(b); });
  if (args->json)
    std::cout << shown.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  else
    print_table(shown, args->closed);
  return 0;
}

int conn_command(const std::vector<std::string>& argv) {
  constexpr auto kCommand = Command::kConn;
  auto args = split_args(argv, kCommand);
  if (!args) return report(args.error(), kCommand);
  const auto& pos = args->positional;
  if (pos.empty() || pos.size() > 2)
    return report(
        {Errc::kInvalidArgument,
         "usage: trustfence conn COOKIE [--json]\n"
         "       trustfence conn LOCAL REMOTE [--json]   e.g. 10.0.0.1:80 10.0.0.2:41000"},
        kCommand);
  json request = {{"command", "conn"}};
  Cookie cookie = 0;
  if (pos.size() == 1) {
    const auto& text = pos[0];
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), cookie);
    if (ec != std::errc() || end != text.data() + text.size())
      return report({Errc::kInvalidArgument, "COOKIE '" + text + "' is not a number"}, kCommand);
    request["cookie"] = cookie;
  } else {
    request["local"] = pos[0];
    request["remote"] = pos[1];
  }
  auto paths = config::load_client_paths(args->paths);
  if (!paths) return report(paths.error(), kCommand);

  auto reply = ask_agent(*paths, request, kCommand);
  if (!reply) return report(reply.error(), kCommand);
  json row;
  if (*reply) {
    auto it = (*reply)->find("connection");
    if (it == (*reply)->end() || !it->is_object())
      return report(malformed(*paths, "\"connection\" object"), kCommand);
    row = std::move(*it);
  } else {
    auto from_maps =
        pos.size() == 1 ? row_from_maps(*paths, cookie) : row_from_maps(*paths, pos[0], pos[1]);
    if (!from_maps) return report(from_maps.error(), kCommand);
    row = std::move(*from_maps);
  }
  if (args->json)
    std::cout << row.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  else
    print_table(json::array({row}), row.contains("state"));
  return 0;
}

int stats_command(const std::vector<std::string>& argv) {
  constexpr auto kCommand = Command::kStats;
  auto args = split_args(argv, kCommand);
  if (!args) return report(args.error(), kCommand);
  if (!args->positional.empty())
    return report({Errc::kInvalidArgument, "unexpected argument " + args->positional[0]}, kCommand);
  auto paths = config::load_client_paths(args->paths);
  if (!paths) return report(paths.error(), kCommand);

  auto reply = ask_agent(*paths, {{"command", "stats"}}, kCommand);
  if (!reply) return report(reply.error(), kCommand);
  json out;
  if (*reply) {
    if (!(*reply)->is_object()) return report(malformed(*paths, "stats object"), kCommand);
    out = std::move(**reply);
  } else {
    auto from_maps = stats_from_maps(*paths);
    if (!from_maps) return report(from_maps.error(), kCommand);
    out = std::move(*from_maps);
  }
  if (args->json)
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  else
    print_stats(out);
  return 0;
}

}  // namespace trustfence::cli
