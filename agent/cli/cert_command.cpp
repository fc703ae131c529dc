// cert check: the verdict the agent would give a peer presenting this chain.

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli_commands.hpp"
#include "trustfence/common/verdict.hpp"
#include "trustfence/config/config.hpp"
#include "trustfence/policy/policy.hpp"
#include "trustfence/tls/bundle.hpp"
#include "trustfence/tls/svid_verifier.hpp"

namespace trustfence::cli {
namespace {

constexpr int kAllow = 0;
constexpr int kDeny = 1;
constexpr int kBadInput = 2;

int bad_input(const std::string& message) {
  std::cerr << "trustfence cert check: " << message << "\n";
  return kBadInput;
}

Result<std::string> read_chain_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail_errno("--chain: cannot read " + path, errno);
  std::string text(tls::kMaxChainBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return fail_errno("--chain: reading " + path, errno);
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > tls::kMaxChainBytes)
    return fail(Errc::kInvalidArgument, "--chain: " + path + " is larger than " +
                                            std::to_string(tls::kMaxChainBytes) + " bytes");
  return text;
}

}  // namespace

int cert_command(const std::vector<std::string>& args) {
  if (args.empty() || args[0] != "check")
    return bad_input("usage: trustfence cert check --config FILE --chain PEM [--json]");
  std::vector<std::string> rest;
  std::string chain_path;
  bool json = false;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--json") {
      json = true;
    } else if (args[i] == "--chain") {
      if (i + 1 >= args.size()) return bad_input("--chain needs a PEM file");
      chain_path = args[++i];
    } else {
      rest.push_back(args[i]);
    }
  }
  if (chain_path.empty()) return bad_input("--chain PEM is required");
  auto config = config::load(rest);
  if (!config) return bad_input(config.error().message);
  if (!config->identity)
    return bad_input("config: trust-domain is required to decide about a peer");
  auto bundles = config::load_bundles(*config->identity);
  if (!bundles) return bad_input(bundles.error().message);
  auto text = read_chain_file(chain_path);
  if (!text) return bad_input(text.error().message);
  auto chain = tls::parse_pem_chain(*text);
  if (!chain) return bad_input("--chain: " + chain_path + ": " + chain.error().message);

  tls::SvidVerifier verifier(*bundles, [] { return std::chrono::system_clock::now(); });
  policy::Policy policy(config->identity->rules);
  auto verified = verifier.verify(*chain);
  policy::Decision decision;
  std::string detail;
  std::optional<identity::SpiffeId> peer;
  if (verified) {
    peer = verified->id;
    decision = policy.decide(peer);
  } else {
    decision = {TF_VERDICT_DENY, verified.error().reason, ""};
    detail = verified.error().detail;
  }

  if (json) {
    nlohmann::json out = {
        {"verdict", std::string(to_string(decision.verdict))},
        {"reason", std::string(to_string(decision.reason))},
        {"peer_id", peer ? nlohmann::json(peer->str()) : nlohmann::json(nullptr)},
        {"peer_trust_domain",
         peer ? nlohmann::json(peer->trust_domain().name()) : nlohmann::json(nullptr)},
        {"matched_rule", decision.matched_rule},
        {"detail", detail},
    };
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << "verdict: " << to_string(decision.verdict) << "\n"
              << "reason: " << to_string(decision.reason) << "\n";
    if (peer)
      std::cout << "peer: " << peer->str() << "\n"
                << "peer trust domain: " << peer->trust_domain().name() << "\n";
    if (!decision.matched_rule.empty()) std::cout << "rule: " << decision.matched_rule << "\n";
    if (!detail.empty()) std::cout << "detail: " << detail << "\n";
  }
  return decision.verdict == TF_VERDICT_ALLOW ? kAllow : kDeny;
}

}  // namespace trustfence::cli
