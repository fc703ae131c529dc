// id check: validates a SPIFFE ID offline, with the rule it breaks.

#include <iostream>

#include "cli_commands.hpp"
#include "trustfence/identity/spiffe_id.hpp"

namespace trustfence::cli {
namespace {

void id_usage(std::ostream& out) { out << "usage: trustfence id check SPIFFE_ID\n"; }

}  // namespace

int id_command(const std::vector<std::string>& args) {
  if (args.size() == 1 && (args[0] == "-h" || args[0] == "--help")) {
    id_usage(std::cout);
    return 0;
  }
  if (args.size() != 2 || args[0] != "check") {
    id_usage(std::cerr);
    return 2;
  }
  auto id = identity::SpiffeId::parse(args[1]);
  if (!id) {
    std::cout << "invalid SPIFFE ID: " << id.error().message << "\n";
    return 1;
  }
  std::cout << "trust domain: " << id->trust_domain().name() << "\n"
            << "path: "
            << (id->has_workload_path() ? id->path() : "(none: the ID of the trust domain itself)")
            << "\n";
  return 0;
}

}  // namespace trustfence::cli
