#include "trustfence/config/config.hpp"

#include <sys/stat.h>
#include <sys/un.h>
#include <boost/program_options.hpp>
#include <charconv>

#include <cerrno>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

namespace po = boost::program_options;

namespace trustfence::config {
namespace {

po::options_description key_descriptions() {
  using Strings = std::vector<std::string>;
  po::options_description keys("Configuration keys (in the file as `key = value`, or as --key)");
  auto key = keys.add_options();
  key("cgroup", po::value<std::string>(),
      "cgroup v2 to enforce: absolute, or relative to the cgroup v2 mount");
  key("pin-dir", po::value<std::string>()->default_value(datapath::kDefaultPinDir),
      "bpffs directory where maps and links are pinned");
  key("mode", po::value<std::string>()->default_value("enforce"), "enforce | audit");
  key("untracked-fallback", po::value<std::string>()->default_value("allow"),
      "verdict for connections established before the datapath: allow | deny");
  key("exempt", po::value<Strings>()->composing(),
      "CIDR[:port] never held, e.g. 10.96.0.10/32:53 (repeatable)");
  key("pending-rto-min-us",
      po::value<std::string>()->default_value(std::to_string(datapath::kDefaultPendingRtoMinUs)),
      "retransmission floor of pending sockets in microseconds (0 leaves it alone)");
  key("max-connections",
      po::value<std::string>()->default_value(std::to_string(TF_DEFAULT_MAX_CONNS)),
      "capacity of the connection table");
  key("trust-domain", po::value<std::string>(), "this node's trust domain, e.g. team-a.gke.local");
  key("trust-domain-alias", po::value<Strings>()->composing(),
      "a trust domain accepted as a whole, equivalent to the local one for rules (repeatable)");
  key("trust-bundle", po::value<Strings>()->composing(),
      "TRUST_DOMAIN:PATH of a PEM or SPIFFE bundle (.json) file (repeatable)");
  key("svid-cert", po::value<std::string>(), "this agent's X.509-SVID chain, leaf first (PEM)");
  key("svid-key", po::value<std::string>(), "the SVID's private key (PEM)");
  key("allow-id", po::value<Strings>()->composing(),
      "SPIFFE ID, or prefix ending in /*, accepted from a domain otherwise not (repeatable)");
  key("deny-id", po::value<Strings>()->composing(),
      "SPIFFE ID, or prefix ending in /*, always denied (repeatable)");
  key("listen", po::value<std::string>()->default_value(kDefaultListen),
      "IP:PORT of the attestation channel; [::] also accepts IPv4");
  key("peer", po::value<Strings>()->composing(),
      "CIDR:HOST:PORT of the agent answering for CIDR's addresses (repeatable; default: the "
      "remote address on the listen port)");
  key("peer-authentication", po::value<std::string>()->default_value("strict"),
      "a peer with no agent: strict (deny, no-peer-agent) | permissive (allow as plaintext)");
  key("attestation-timeout", po::value<std::string>()->default_value("2s"),
      "deny a connection not attested within this time: e.g. 2s, 500ms (100ms..60s)");
  key("workload-id", po::value<Strings>()->composing(),
      "CGROUP_PATH:SPIFFE_ID vouched for on behalf of that cgroup's sockets (repeatable; "
      "default: the agent's own SVID ID)");
  key("api-socket", po::value<std::string>()->default_value(kDefaultApiSocket),
      "Unix socket of the query API (mode 0600, or 0660 with api-socket-group)");
  key("api-socket-group", po::value<std::string>(), "group allowed to query the API besides root");
  key("metrics", po::value<std::string>(),
      "IP:PORT serving Prometheus /metrics, /healthz and /readyz over HTTP (default: off)");
  key("log-format", po::value<std::string>()->default_value("text"),
      "text | json (one JSON object per line)");
  key("log-level", po::value<std::string>()->default_value("info"),
      "trace | debug | info | warn | error");
  return keys;
}

// Digits only: no sign, no spaces, no wrap-around.
std::optional<std::uint32_t> parse_uint(const std::string& text) {
  std::uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

inline constexpr std::size_t kMaxConfigBytes = 1 << 20;

bool is_key_name(std::string_view key) {
  return !key.empty() &&
         key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string_view::npos;
}

std::string_view trim(std::string_view text) {
  auto b = text.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  auto e = text.find_last_not_of(" \t\r");
  return text.substr(b, e - b + 1);
}

// Every line blank, a comment, or `key = value` with a plain key name:
// Boost.Program_options is handed nothing else (it formats its errors by
// substituting placeholders into option names, which a name containing
// one turns into an endless loop).
Result<void> check_lines(const std::string& file, const std::string& text) {
  std::istringstream lines(text);
  std::string line;
  for (int n = 1; std::getline(lines, line); ++n) {
    std::string_view body = line;
    body = trim(body.substr(0, body.find('#')));
    if (body.empty()) continue;
    auto where = file + ":" + std::to_string(n) + ": ";
    auto eq = body.find('=');
    if (eq == std::string_view::npos)
      return fail(Errc::kInvalidArgument, where + "expected `key = value`");
    if (!is_key_name(trim(body.substr(0, eq))))
      return fail(Errc::kInvalidArgument,
                  where + "not a configuration key (keys are lowercase words joined by '-')");
  }
  return {};
}

// The config file's text: a readable regular file, bounded in size,
// well-formed. Read once; parsing and error locations work on the text.
Result<std::string> read_config(const std::string& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    if (errno == ENOENT) return fail(Errc::kNotFound, "config: " + file + " does not exist");
    return fail_errno("config: cannot read " + file, errno);
  }
  if (!S_ISREG(st.st_mode))
    return fail(Errc::kInvalidArgument, "config: " + file + " is not a regular file");
  std::ifstream in(file, std::ios::binary);
  if (!in) return fail_errno("config: cannot read " + file, errno);
  std::string text(kMaxConfigBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxConfigBytes)
    return fail(Errc::kInvalidArgument, "config: " + file + " is larger than " +
                                            std::to_string(kMaxConfigBytes) + " bytes");
  if (auto ok = check_lines(file, text); !ok) return std::unexpected(ok.error());
  return text;
}

// Flags get the same treatment as keys before Boost sees them.
Result<void> check_flags(const std::vector<std::string>& args) {
  for (const auto& arg : args) {
    if (!arg.starts_with("--")) continue;
    auto name = std::string_view(arg).substr(2);
    name = name.substr(0, name.find('='));
    if (!is_key_name(name))
      return fail(Errc::kInvalidArgument, "unknown option '" + arg.substr(0, 64) + "'");
  }
  return {};
}

// key -> (value -> line) of a config file, to point errors at a line.
using LineIndex = std::map<std::string, std::multimap<std::string, int>>;

LineIndex index_lines(const std::string& text) {
  LineIndex index;
  std::istringstream lines(text);
  std::string line;
  for (int n = 1; std::getline(lines, line); ++n) {
    std::string_view body = line;
    body = body.substr(0, body.find('#'));
    auto eq = body.find('=');
    if (eq == std::string_view::npos) continue;
    index[std::string(trim(body.substr(0, eq)))].emplace(std::string(trim(body.substr(eq + 1))), n);
  }
  return index;
}

// "file:line: " for a Boost error that quotes a key or a whole line.
std::string locate(const std::string& file, const std::string& text, const std::string& what) {
  if (file.empty()) return "";
  std::istringstream lines(text);
  std::string line;
  for (int n = 1; std::getline(lines, line); ++n) {
    std::string_view body = line;
    auto eq = body.find('=');
    auto key = eq == std::string_view::npos ? std::string_view() : trim(body.substr(0, eq));
    bool quoted_line = !line.empty() && what.find("'" + line + "'") != std::string::npos;
    bool quoted_key = !key.empty() && what.find("'" + std::string(key) + "'") != std::string::npos;
    if (quoted_line || quoted_key) return file + ":" + std::to_string(n) + ": ";
  }
  return file + ": ";
}

class Validator {
 public:
  Validator(std::string file, LineIndex lines) : file_(std::move(file)), lines_(std::move(lines)) {}

  std::unexpected<Error> bad(const std::string& key, const std::string& value,
                             const std::string& why) const {
    return fail(Errc::kInvalidArgument, where(key, value) + key + " = " + value + ": " + why);
  }
  // The first line of a key in the file, else its flag.
  std::string where_key(const std::string& key) const {
    auto k = lines_.find(key);
    if (k == lines_.end() || k->second.empty()) return "--" + key + ": ";
    int line = k->second.begin()->second;
    for (const auto& entry : k->second) line = std::min(line, entry.second);
    return file_ + ":" + std::to_string(line) + ": ";
  }
  std::string where(const std::string& key, const std::string& value) const {
    // The file's line when the value came from the file, else the flag.
    auto k = lines_.find(key);
    if (k == lines_.end()) return "--" + key + ": ";
    auto v = k->second.find(value);
    if (v == k->second.end()) return "--" + key + ": ";
    return file_ + ":" + std::to_string(v->second) + ": ";
  }

 private:
  std::string file_;
  LineIndex lines_;
};

std::vector<std::string> strings(const po::variables_map& vm, const char* key) {
  return vm.count(key) ? vm[key].as<std::vector<std::string>>() : std::vector<std::string>{};
}

Result<void> check_readable(const Validator& check, const char* key, const std::string& path) {
  std::ifstream in(path);
  if (!in) return check.bad(key, path, describe_errno("cannot read the file", errno));
  return {};
}

Result<std::optional<IdentityConfig>> load_identity(const po::variables_map& vm,
                                                    const Validator& check) {
  if (!vm.count("trust-domain")) {
    for (const char* key :
         {"trust-domain-alias", "trust-bundle", "svid-cert", "svid-key", "allow-id", "deny-id"})
      if (vm.count(key))
        return fail(Errc::kInvalidArgument,
                    check.where_key(key) + std::string(key) + " needs trust-domain to be set");
    return std::optional<IdentityConfig>{};
  }
  auto local_text = vm["trust-domain"].as<std::string>();
  auto local = identity::TrustDomain::parse(local_text);
  if (!local) return check.bad("trust-domain", local_text, local.error().message);
  IdentityConfig id{.rules = {.trust_domain = *local, .aliases = {}, .allow = {}, .deny = {}},
                    .bundles = {},
                    .svid_cert = {},
                    .svid_key = {}};
  for (const auto& text : strings(vm, "trust-domain-alias")) {
    auto alias = identity::TrustDomain::parse(text);
    if (!alias) return check.bad("trust-domain-alias", text, alias.error().message);
    if (*alias == *local)
      return check.bad("trust-domain-alias", text, "is the local trust domain itself");
    id.rules.aliases.push_back(*alias);
  }
  for (const char* key : {"allow-id", "deny-id"}) {
    for (const auto& text : strings(vm, key)) {
      auto pattern = policy::IdPattern::parse(text);
      if (!pattern) return check.bad(key, text, pattern.error().message);
      (std::string_view(key) == "allow-id" ? id.rules.allow : id.rules.deny).push_back(*pattern);
    }
  }
  for (const auto& text : strings(vm, "trust-bundle")) {
    auto colon = text.find(':');
    if (colon == std::string::npos || colon + 1 == text.size())
      return check.bad("trust-bundle", text, "expected TRUST_DOMAIN:PATH");
    auto td = identity::TrustDomain::parse(std::string_view(text).substr(0, colon));
    if (!td) return check.bad("trust-bundle", text, td.error().message);
    for (const auto& known : id.bundles)
      if (known.trust_domain == *td)
        return check.bad("trust-bundle", text, "a second bundle for " + td->name());
    std::string path = text.substr(colon + 1);
    if (auto bundle = tls::load_bundle(*td, path); !bundle)
      return check.bad("trust-bundle", text, bundle.error().message);
    id.bundles.push_back({*td, path});
  }
  policy::Policy policy(id.rules);
  for (const auto& td : policy.accepted_domains()) {
    bool has_bundle = std::any_of(id.bundles.begin(), id.bundles.end(),
                                  [&](const BundleSource& b) { return b.trust_domain == td; });
    if (has_bundle) continue;
    // Point at the key that made the domain accepted.
    std::string key = td == *local ? "trust-domain" : "trust-domain-alias";
    std::string value = td.name();
    if (td != *local &&
        std::find(id.rules.aliases.begin(), id.rules.aliases.end(), td) == id.rules.aliases.end()) {
      key = "allow-id";
      for (const auto& p : id.rules.allow)
        if (p.trust_domain() == td) value = p.text();
    }
    return check.bad(
        key, value,
        "no trust-bundle for " + td.name() + " (add trust-bundle = " + td.name() + ":PATH)");
  }
  if (vm.count("svid-cert") != vm.count("svid-key"))
    return fail(Errc::kInvalidArgument,
                check.where_key(vm.count("svid-cert") ? "svid-cert" : "svid-key") +
                    "svid-cert and svid-key go together");
  if (vm.count("svid-cert")) {
    id.svid_cert = vm["svid-cert"].as<std::string>();
    id.svid_key = vm["svid-key"].as<std::string>();
    if (auto ok = check_readable(check, "svid-cert", id.svid_cert); !ok)
      return std::unexpected(ok.error());
    if (auto ok = check_readable(check, "svid-key", id.svid_key); !ok)
      return std::unexpected(ok.error());
  }
  return std::optional<IdentityConfig>(std::move(id));
}

// "2s", "500ms": whole numbers only.
std::optional<std::chrono::milliseconds> parse_duration(const std::string& text) {
  std::string_view digits = text;
  std::uint32_t scale = 0;
  if (digits.ends_with("ms")) {
    digits.remove_suffix(2);
    scale = 1;
  } else if (digits.ends_with("s")) {
    digits.remove_suffix(1);
    scale = 1000;
  } else {
    return std::nullopt;
  }
  auto value = parse_uint(std::string(digits));
  if (!value || *value > 3'600'000) return std::nullopt;
  return std::chrono::milliseconds(std::uint64_t{*value} * scale);
}

Result<PeerRoute> parse_peer_route(const std::string& text) {
  // CIDR:HOST:PORT. The CIDR ends at the first ':' after its '/'.
  auto slash = text.find('/');
  auto colon = slash == std::string::npos ? std::string::npos : text.find(':', slash);
  if (colon == std::string::npos)
    return fail(Errc::kInvalidArgument, "expected CIDR:HOST:PORT, e.g. 10.8.0.0/24:10.0.0.5:7400");
  auto cidr = net::Cidr::parse(std::string_view(text).substr(0, colon));
  if (!cidr) return std::unexpected(cidr.error());
  auto agent = net::SocketAddress::parse(std::string_view(text).substr(colon + 1));
  if (!agent) return std::unexpected(agent.error());
  return PeerRoute{*cidr, *agent, text};
}

Result<AttestationConfig> load_attestation(const po::variables_map& vm, const Validator& check,
                                           const std::optional<IdentityConfig>& identity) {
  AttestationConfig out;
  auto listen_text = vm["listen"].as<std::string>();
  auto listen = net::SocketAddress::parse(listen_text);
  if (!listen) return check.bad("listen", listen_text, listen.error().message);
  out.listen = *listen;
  for (const auto& text : strings(vm, "peer")) {
    auto route = parse_peer_route(text);
    if (!route) return check.bad("peer", text, route.error().message);
    out.peers.push_back(*route);
  }
  auto mode = vm["peer-authentication"].as<std::string>();
  if (mode == "strict")
    out.peer_authentication = PeerAuthentication::kStrict;
  else if (mode == "permissive")
    out.peer_authentication = PeerAuthentication::kPermissive;
  else
    return check.bad("peer-authentication", mode, "must be strict or permissive");
  auto timeout_text = vm["attestation-timeout"].as<std::string>();
  auto timeout = parse_duration(timeout_text);
  if (!timeout || *timeout < std::chrono::milliseconds(100) ||
      *timeout > std::chrono::milliseconds(60'000))
    return check.bad("attestation-timeout", timeout_text,
                     "must be a duration from 100ms to 60s, e.g. 2s or 500ms");
  out.timeout = *timeout;
  for (const auto& text : strings(vm, "workload-id")) {
    auto split = text.find(":spiffe://");
    if (split == std::string::npos || split == 0)
      return check.bad("workload-id", text, "expected CGROUP_PATH:spiffe://...");
    auto id = identity::SpiffeId::parse(std::string_view(text).substr(split + 1));
    if (!id) return check.bad("workload-id", text, id.error().message);
    if (!identity) return check.bad("workload-id", text, "needs trust-domain to be set");
    if (!id->member_of(identity->rules.trust_domain))
      return check.bad(
          "workload-id", text,
          "an agent vouches only for its own trust domain " + identity->rules.trust_domain.name());
    if (!id->has_workload_path())
      return check.bad("workload-id", text, "a workload ID needs a path");
    out.workloads.push_back({text.substr(0, split), *id});
  }
  return out;
}

}  // namespace

Result<tls::BundleSet> load_bundles(const IdentityConfig& identity) {
  tls::BundleSet set;
  for (const auto& source : identity.bundles) {
    auto bundle = tls::load_bundle(source.trust_domain, source.path);
    if (!bundle)
      return fail(bundle.error().code, "trust-bundle = " + source.trust_domain.name() + ":" +
                                           source.path + ": " + bundle.error().message);
    if (auto ok = set.add(std::move(*bundle)); !ok) return std::unexpected(ok.error());
  }
  return set;
}

std::string describe_keys() {
  std::ostringstream out;
  out << key_descriptions();
  return out.str();
}

Result<Config> load(const std::vector<std::string>& args) {
  po::options_description cli("Options");
  cli.add_options()("config", po::value<std::string>(), "configuration file");
  cli.add(key_descriptions());
  po::variables_map vm;
  Config config;
  std::string text;
  if (auto ok = check_flags(args); !ok) return std::unexpected(ok.error());
  try {
    po::store(po::command_line_parser(args).options(cli).run(), vm);
    if (vm.count("config")) {
      config.file = vm["config"].as<std::string>();
      auto read = read_config(config.file);
      if (!read) return std::unexpected(read.error());
      text = std::move(*read);
      std::istringstream in(text);
      po::store(po::parse_config_file(in, key_descriptions(), false), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return fail(Errc::kInvalidArgument, locate(config.file, text, e.what()) + e.what());
  }

  Validator check(config.file, config.file.empty() ? LineIndex{} : index_lines(text));
  auto& dp = config.datapath;
  if (!vm.count("cgroup"))
    return fail(Errc::kInvalidArgument,
                (config.file.empty() ? std::string() : config.file + ": ") +
                    "cgroup: required (the cgroup v2 whose connections are enforced)");
  dp.cgroup = vm["cgroup"].as<std::string>();
  dp.pin_dir = vm["pin-dir"].as<std::string>();
  if (dp.pin_dir.empty() || dp.pin_dir.front() != '/')
    return check.bad("pin-dir", dp.pin_dir, "must be an absolute path on a bpffs");

  auto mode = vm["mode"].as<std::string>();
  if (mode == "enforce")
    dp.mode = TF_MODE_ENFORCE;
  else if (mode == "audit")
    dp.mode = TF_MODE_AUDIT;
  else
    return check.bad("mode", mode, "must be enforce or audit");

  auto fallback = vm["untracked-fallback"].as<std::string>();
  if (fallback == "allow")
    dp.untracked_verdict = TF_VERDICT_ALLOW;
  else if (fallback == "deny")
    dp.untracked_verdict = TF_VERDICT_DENY;
  else
    return check.bad("untracked-fallback", fallback, "must be allow or deny");

  if (vm.count("exempt")) {
    for (const auto& text : vm["exempt"].as<std::vector<std::string>>()) {
      auto ex = datapath::Exemption::parse(text);
      if (!ex)
        return fail(Errc::kInvalidArgument, check.where("exempt", text) + ex.error().message);
      dp.exemptions.push_back(*ex);
    }
  }
  auto rto = vm["pending-rto-min-us"].as<std::string>();
  auto rto_us = parse_uint(rto);
  if (!rto_us || (*rto_us != 0 && (*rto_us < 1000 || *rto_us > 200'000)))
    return check.bad("pending-rto-min-us", rto, "must be 0 (off) or between 1000 and 200000");
  dp.pending_rto_min_us = *rto_us;
  auto max_conns = vm["max-connections"].as<std::string>();
  auto max_conns_value = parse_uint(max_conns);
  if (!max_conns_value || *max_conns_value < 16 || *max_conns_value > (1u << 24))
    return check.bad("max-connections", max_conns, "must be between 16 and 16777216");
  dp.max_connections = *max_conns_value;

  auto identity = load_identity(vm, check);
  if (!identity) return std::unexpected(identity.error());
  config.identity = std::move(*identity);
  auto attestation = load_attestation(vm, check, config.identity);
  if (!attestation) return std::unexpected(attestation.error());
  config.attestation = std::move(*attestation);
  config.api.socket = vm["api-socket"].as<std::string>();
  if (config.api.socket.empty() || config.api.socket.front() != '/')
    return check.bad("api-socket", config.api.socket, "must be an absolute path");
  if (config.api.socket.size() >= sizeof(sockaddr_un{}.sun_path))
    return check.bad("api-socket", config.api.socket, "is longer than a Unix socket path may be");
  if (vm.count("api-socket-group")) config.api.group = vm["api-socket-group"].as<std::string>();
  if (vm.count("metrics")) {
    auto text = vm["metrics"].as<std::string>();
    auto address = net::SocketAddress::parse(text);
    if (!address) return check.bad("metrics", text, address.error().message);
    config.api.metrics = *address;
  }

  config.log_level = vm["log-level"].as<std::string>();
  static const std::array<std::string_view, 5> levels = {"trace", "debug", "info", "warn", "error"};
  if (std::find(levels.begin(), levels.end(), config.log_level) == levels.end())
    return check.bad("log-level", config.log_level, "must be trace, debug, info, warn or error");
  config.log_format = vm["log-format"].as<std::string>();
  if (config.log_format != "text" && config.log_format != "json")
    return check.bad("log-format", config.log_format, "must be text or json");
  return config;
}

Result<ClientPaths> load_client_paths(const std::vector<std::string>& args) {
  po::options_description cli("Options");
  cli.add_options()("config", po::value<std::string>(), "configuration file")(
      "pin-dir", po::value<std::string>()->default_value(datapath::kDefaultPinDir), "")(
      "api-socket", po::value<std::string>()->default_value(kDefaultApiSocket), "");
  po::variables_map vm;
  if (auto ok = check_flags(args); !ok) return std::unexpected(ok.error());
  try {
    po::store(po::command_line_parser(args).options(cli).allow_unregistered().run(), vm);
    if (vm.count("config")) {
      auto text = read_config(vm["config"].as<std::string>());
      if (!text) return std::unexpected(text.error());
      std::istringstream in(*text);
      po::store(po::parse_config_file(in, cli, true), vm);
    }
  } catch (const po::error& e) {
    return fail(Errc::kInvalidArgument, e.what());
  }
  return ClientPaths{vm["pin-dir"].as<std::string>(), vm["api-socket"].as<std::string>()};
}

}  // namespace trustfence::config
