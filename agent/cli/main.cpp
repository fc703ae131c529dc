// trustfence: the node agent and its operator commands.

#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include <cstdarg>
#include <iostream>
#include <string>
#include <vector>

#include "cli_commands.hpp"

namespace {

int libbpf_to_spdlog(enum libbpf_print_level level, const char* format, va_list args) {
  // The verifier's log arrives in one call and may run to megabytes.
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (n <= 0) return n;
  std::string text(static_cast<std::size_t>(n) + 1, '\0');
  vsnprintf(text.data(), text.size(), format, args);
  text.resize(static_cast<std::size_t>(n));
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (level == LIBBPF_WARN)
    spdlog::warn("libbpf: {}", text);
  else
    spdlog::debug("libbpf: {}", text);
  return n;
}

void usage(std::ostream& out) {
  out << "usage: trustfence <command> [options]\n\n"
         "  agent --config FILE [--key value ...]   run the node agent\n"
         "  agent --uninstall [--config FILE | --pin-dir DIR]\n"
         "                                          detach the programs, remove the pins\n"
         "  conns [--json] [--verdict allow|deny|pending] [--peer-trust-domain TD] [--closed]\n"
         "                                          per-connection verdicts\n"
         "  conn COOKIE [--json]                    one connection\n"
         "  conn LOCAL REMOTE [--json]              one connection by its endpoints\n"
         "  stats [--json]                          datapath and agent counters\n"
         "  watch [--json] [--denials] [--history] [--count N]\n"
         "                                          live stream of the agent's verdicts\n"
         "      conns, conn and stats ask the running agent (--api-socket PATH, or the\n"
         "      api-socket of --config FILE); without one they read the pinned maps\n"
         "      (--pin-dir DIR), where peer identities are unknown.\n"
         "  id check SPIFFE_ID                      validate an ID: its trust domain and path\n"
         "  cert check --config FILE --chain PEM [--json]\n"
         "                                          the verdict the agent would give that peer\n\n"
         "`trustfence agent --help` lists every configuration key.\n";
}

}  // namespace

int main(int argc, char** argv) {
  libbpf_set_print(libbpf_to_spdlog);
  if (argc < 2) {
    usage(std::cerr);
    return 2;
  }
  std::string command = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "agent") return trustfence::cli::agent_command(args);
  if (command == "conns") return trustfence::cli::conns_command(args);
  if (command == "conn") return trustfence::cli::conn_command(args);
  if (command == "stats") return trustfence::cli::stats_command(args);
  if (command == "watch") return trustfence::cli::watch_command(args);
  if (command == "cert") return trustfence::cli::cert_command(args);
  if (command == "id") return trustfence::cli::id_command(args);
  if (command == "-h" || command == "--help" || command == "help") {
    usage(std::cout);
    return 0;
  }
  std::cerr << "trustfence: unknown command '" << command << "'\n";
  usage(std::cerr);
  return 2;
}
