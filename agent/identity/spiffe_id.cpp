// SPIFFE ID parsing, strict to the SPIFFE ID standard (SPIFFE-ID.md of the
// SPIFFE standards). Nothing is normalised: an input either is already
// in the one canonical form or is rejected with the rule it breaks.

#include "trustfence/identity/spiffe_id.hpp"

#include <fmt/format.h>

namespace trustfence::identity {
namespace {

constexpr std::string_view kScheme = "spiffe://";

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_trust_domain_char(char c) { return is_lower_alnum(c) || c == '.' || c == '-' || c == '_'; }
bool is_path_char(char c) { return is_trust_domain_char(c) || is_upper(c); }

// A character as an operator can read it in a log, even a control byte.
std::string show(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x21 && u < 0x7f) return fmt::format("'{}'", c);
  if (c == ' ') return "a space";
  return fmt::format("byte 0x{:02x}", u);
}

std::unexpected<Error> invalid(std::string message) {
  return fail(Errc::kInvalidArgument, std::move(message));
}

// Rules that hold anywhere in an ID; checked first so the message names
// the URI feature at fault rather than a character class.
Result<void> check_uri_features(std::string_view rest) {
  if (rest.find('%') != rest.npos)
    return invalid("percent-encoding is not allowed in a SPIFFE ID (found '%')");
  if (rest.find('?') != rest.npos) return invalid("a SPIFFE ID must not have a query ('?...')");
  if (rest.find('#') != rest.npos) return invalid("a SPIFFE ID must not have a fragment ('#...')");
  return {};
}

Result<void> check_authority(std::string_view authority) {
  if (authority.empty()) return invalid("a SPIFFE ID must have a trust domain (spiffe://<domain>)");
  if (authority.find('@') != authority.npos)
    return invalid("a SPIFFE ID must not have userinfo ('user@') before the trust domain");
  if (authority.front() == '[')
    return invalid("an IPv6 literal ('[...]') is not a valid trust domain");
  if (authority.find(':') != authority.npos)
    return invalid("a SPIFFE ID must not have a port (':<port>') after the trust domain");
  return {};
}

// path_at: where the path starts in the ID, so messages point at the byte.
Result<void> check_path(std::string_view path, std::size_t path_at) {
  if (path.empty()) return {};
  std::size_t start = 1;  // path[0] == '/'
  for (;;) {
    std::size_t end = path.find('/', start);
    std::string_view segment = path.substr(start, end == path.npos ? path.npos : end - start);
    if (segment.empty()) {
      if (end == path.npos) return invalid("a SPIFFE ID must not end with '/'");
      return invalid(fmt::format("a SPIFFE ID path must not have empty segments ('//' at byte {})",
                                 path_at + start - 1));
    }
    if (segment == "." || segment == "..")
      return invalid(fmt::format("a SPIFFE ID path must not have '{}' segments", segment));
    for (std::size_t i = 0; i < segment.size(); ++i) {
      if (!is_path_char(segment[i]))
        return invalid(fmt::format(
            "SPIFFE ID path segments may only contain letters, digits, '.', '-' and '_' "
            "(found {} at byte {})",
            show(segment[i]), path_at + start + i));
    }
    if (end == path.npos) return {};
    start = end + 1;
  }
}

}  // namespace

Result<TrustDomain> TrustDomain::parse(std::string_view name) {
  if (name.empty()) return invalid("a trust domain must not be empty");
  if (name.size() > kMaxLength)
    return invalid(fmt::format("a trust domain may be at most {} bytes long (this one is {})",
                               kMaxLength, name.size()));
  if (name.starts_with(kScheme) || name.find("://") != name.npos)
    return invalid("a trust domain is a bare name such as example.org, not a URI");
  if (name.front() == '[') return invalid("an IPv6 literal ('[...]') is not a valid trust domain");
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (is_trust_domain_char(c)) continue;
    if (is_upper(c))
      return invalid(
          fmt::format("a trust domain must be lowercase (found {} at byte {} of the trust domain); "
                      "uppercase is not folded",
                      show(c), i));
    if (c == '%') return invalid("percent-encoding is not allowed in a trust domain (found '%')");
    if (c == ':')
      return invalid("a trust domain must not have a port or be an IPv6 address (found ':')");
    if (c == '@') return invalid("a trust domain must not have userinfo (found '@')");
    return invalid(
        fmt::format("a trust domain may only contain a-z, 0-9, '.', '-' and '_' (found {} at byte "
                    "{} of the trust domain)",
                    show(c), i));
  }
  return TrustDomain(std::string(name));
}

std::string TrustDomain::id_string() const { return std::string(kScheme) + name_; }

Result<SpiffeId> SpiffeId::parse(std::string_view uri) {
  if (uri.empty()) return invalid("a SPIFFE ID must not be empty");
  if (uri.size() > kMaxLength)
    return invalid(fmt::format("a SPIFFE ID may be at most {} bytes long (this one is {})",
                               kMaxLength, uri.size()));
  if (!uri.starts_with(kScheme)) {
    auto sep = uri.find("://");
    if (sep == uri.npos) return invalid("a SPIFFE ID must start with the scheme 'spiffe://'");
    std::string_view scheme = uri.substr(0, sep);
    bool spiffe_any_case = scheme.size() == 6;
    for (std::size_t i = 0; spiffe_any_case && i < 6; ++i)
      spiffe_any_case = (scheme[i] | 0x20) == "spiffe"[i];
    if (spiffe_any_case) return invalid("the SPIFFE ID scheme must be exactly 'spiffe', lowercase");
    bool printable = scheme.size() <= 16;
    for (char c : scheme) printable = printable && c > 0x20 && c < 0x7f;
    if (!printable) return invalid("the scheme of a SPIFFE ID must be 'spiffe'");
    return invalid(fmt::format("the scheme of a SPIFFE ID must be 'spiffe', not '{}'", scheme));
  }
  std::string_view rest = uri.substr(kScheme.size());
  if (auto ok = check_uri_features(rest); !ok) return std::unexpected(ok.error());

  std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == rest.npos ? std::string_view{} : rest.substr(slash);
  if (auto ok = check_authority(authority); !ok) return std::unexpected(ok.error());
  auto td = TrustDomain::parse(authority);
  if (!td) return std::unexpected(td.error());
  if (auto ok = check_path(path, kScheme.size() + authority.size()); !ok)
    return std::unexpected(ok.error());
  return SpiffeId(std::move(*td), std::string(path));
}

std::string SpiffeId::str() const { return trust_domain_.id_string() + path_; }

}  // namespace trustfence::identity
