// watch: a live stream of the running agent's verdicts, one line each (or
// one JSON object per line). The agent keeps its recent decisions with
// sequence numbers; watch polls for the ones after the last it printed and
// says when it fell so far behind that some were dropped.

#include <nlohmann/json.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "cli_commands.hpp"
#include "trustfence/api/client.hpp"
#include "trustfence/config/config.hpp"

namespace trustfence::cli {
namespace {

using json = nlohmann::json;

constexpr auto kPollInterval = std::chrono::milliseconds(200);

struct WatchArgs {
  bool json = false;
  bool denials_only = false;
  bool history = false;
  std::uint64_t count = 0;  // 0: until interrupted
  std::vector<std::string> paths;
};

int usage_error(const std::string& message) {
  std::cerr << "trustfence watch: " << message
            << "\nusage: trustfence watch [--json] [--denials] [--history] [--count N] "
               "[--api-socket PATH | --config FILE]\n";
  return 2;
}

std::string text(const json& event, const char* key) {
  auto it = event.find(key);
  if (it == event.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

void print(const json& event, bool as_json) {
  if (as_json) {
    std::cout << event.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  } else {
    std::printf("%-5s %-9s %-24s %-24s %-20s %s%s\n", text(event, "verdict").c_str(),
                text(event, "direction").c_str(), text(event, "local").c_str(),
                text(event, "remote").c_str(), text(event, "reason").c_str(),
                text(event, "peer_id").c_str(),
                event.value("closed", false) ? " (closed before the verdict)" : "");
  }
  std::cout.flush();
}

}  // namespace

int watch_command(const std::vector<std::string>& argv) {
  WatchArgs args;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const auto& a = argv[i];
    if (a == "--json") {
      args.json = true;
    } else if (a == "--denials") {
      args.denials_only = true;
    } else if (a == "--history") {
      args.history = true;
    } else if (a == "--count" || a == "--api-socket" || a == "--config" || a == "--pin-dir") {
      if (i + 1 >= argv.size()) return usage_error(a + " needs a value");
      const auto& v = argv[++i];
      if (a == "--count") {
        auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), args.count);
        if (ec != std::errc() || end != v.data() + v.size() || args.count == 0)
          return usage_error("--count '" + v + "' is not a positive number");
      } else {
        args.paths.insert(args.paths.end(), {a, v});
      }
    } else {
      return usage_error("unexpected argument " + a);
    }
  }
  auto paths = config::load_client_paths(args.paths);
  if (!paths) {
    std::cerr << "trustfence watch: " << paths.error().message << "\n";
    return 2;
  }
  std::optional<std::uint64_t> after;
  std::uint64_t printed = 0;
  for (;;) {
    auto reply =
        api::call(paths->api_socket, {{"command", "events"}, {"after", after.value_or(0)}});
    if (!reply) {
      std::cerr << "trustfence watch: " << reply.error().message << "\n";
      return 1;
    }
    if (!reply->contains("events") || !(*reply)["events"].is_array() ||
        !(*reply)["next"].is_number_unsigned()) {
      std::cerr << "trustfence watch: the agent on " << paths->api_socket << " sent no events\n";
      return 1;
    }
    bool first = !after.has_value();
    if (auto missed = reply->value("missed", std::uint64_t{0}); missed > 0)
      std::cerr << "trustfence watch: " << missed << " verdicts were dropped before we read them\n";
    if (!first || args.history) {
      for (const auto& event : (*reply)["events"]) {
        if (args.denials_only && event.value("verdict", "") != "deny") continue;
        print(event, args.json);
        if (args.count && ++printed >= args.count) return 0;
      }
    }
    after = (*reply)["next"].get<std::uint64_t>();
    std::this_thread::sleep_for(kPollInterval);
  }
}

}  // namespace trustfence::cli
