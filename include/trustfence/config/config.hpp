#pragma once

// The agent's configuration: an INI file (Boost.Program_options syntax)
// whose every key is also a --flag; flags win over the file. Validated once
// here; the rest of the code sees plain values. Errors name the key and,
// for the file, the line.

#include <optional>
#include <string>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/datapath/datapath.hpp"
#include "trustfence/identity/spiffe_id.hpp"
#include "trustfence/policy/policy.hpp"
#include "trustfence/tls/bundle.hpp"

namespace trustfence::config {

// trust-bundle = TRUST_DOMAIN:PATH
struct BundleSource {
  identity::TrustDomain trust_domain;
  std::string path;
};

// Who we are and whom we accept; present when trust-domain is configured.
// Every accepted domain (local, aliases, allow-id domains) has a bundle.
struct IdentityConfig {
  policy::PolicyRules rules;
  std::vector<BundleSource> bundles;
  std::string svid_cert;  // leaf first, then intermediates (may be empty)
  std::string svid_key;
};

struct Config {
  std::string file;  // where it came from, empty for flags only
  datapath::DatapathOptions datapath;
  std::optional<IdentityConfig> identity;
  std::string log_level = "info";
};

// args: the command line after the subcommand, e.g. {"--config", "f.conf"}.
Result<Config> load(const std::vector<std::string>& args);

// Loads every configured bundle into one set (a store per trust domain).
Result<tls::BundleSet> load_bundles(const IdentityConfig& identity);

// Only the pin directory: --pin-dir, else the pin-dir key of --config FILE,
// else the default. For commands that read the pinned maps.
Result<std::string> load_pin_dir(const std::vector<std::string>& args);

// Help text of every key, for `trustfence agent --help`.
std::string describe_keys();

}  // namespace trustfence::config
