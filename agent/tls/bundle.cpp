#include "trustfence/tls/bundle.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "trustfence/common/unique_fd.hpp"

namespace trustfence::tls {
namespace {

using nlohmann::json;

// Deeper nesting than a JWK Set ever needs is refused before it costs memory.
constexpr int kMaxJsonDepth = 16;

// Text taken from untrusted input into an error message: bounded, printable.
std::string printable(std::string_view text, std::size_t max = 64) {
  std::string out;
  for (char c : text.substr(0, max)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (text.size() > max) out += "...";
  return out;
}

bool only_whitespace(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

// One DER certificate, all of it: trailing bytes are an error.
X509Ptr parse_der(const unsigned char* data, std::size_t size) {
  if (size > static_cast<std::size_t>(std::numeric_limits<long>::max())) return nullptr;
  const unsigned char* cursor = data;
  X509Ptr cert(d2i_X509(nullptr, &cursor, static_cast<long>(size)));
  ERR_clear_error();
  if (cert && cursor != data + size) return nullptr;
  return cert;
}

// PEM CERTIFICATE blocks, in order. Text outside the blocks is allowed (as
// openssl x509 -text writes it); a block of another type, or a damaged
// one, is an error.
Result<Chain> parse_pem_certificates(std::string_view pem, std::size_t max_bytes,
                                     std::size_t max_count, std::string_view what) {
  const std::string prefix(what);
  if (pem.size() > max_bytes) {
    return fail(Errc::kInvalidArgument, prefix + ": " + std::to_string(pem.size()) +
                                            " bytes, more than the limit of " +
                                            std::to_string(max_bytes));
  }
  if (only_whitespace(pem)) return fail(Errc::kInvalidArgument, prefix + ": empty");

  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return fail(Errc::kIo, prefix + ": out of memory");
  Chain chain;
  for (std::size_t block = 1;; ++block) {
    char* raw_name = nullptr;
    char* raw_header = nullptr;
    unsigned char* raw_data = nullptr;
    long length = 0;
    ERR_clear_error();
    const int read = PEM_read_bio(bio.get(), &raw_name, &raw_header, &raw_data, &length);
    OpensslBuffer<char> name(raw_name);
    OpensslBuffer<char> header(raw_header);
    OpensslBuffer<unsigned char> data(raw_data);
    if (read == 0) {
      const bool no_more = ERR_GET_REASON(ERR_peek_last_error()) == PEM_R_NO_START_LINE;
      const std::string reason = take_openssl_error();
      if (no_more && block > 1) break;
      if (no_more) return fail(Errc::kInvalidArgument, prefix + ": not PEM (no BEGIN line)");
      return fail(Errc::kInvalidArgument,
                  prefix + ": PEM block " + std::to_string(block) + " is damaged (" + reason + ")");
    }
    const std::string where = prefix + ": PEM block " + std::to_string(block);
    if (block > max_count) {
      return fail(Errc::kInvalidArgument,
                  prefix + ": more than " + std::to_string(max_count) + " certificates");
    }
    if (std::strcmp(name.get(), PEM_STRING_X509) != 0) {
      return fail(Errc::kInvalidArgument,
                  where + " is a \"" + printable(name.get()) + "\", not a CERTIFICATE");
    }
    if (header != nullptr && header.get()[0] != '\0') {
      return fail(Errc::kInvalidArgument, where + " has PEM headers (encrypted?)");
    }
    X509Ptr cert = parse_der(data.get(), static_cast<std::size_t>(length));
    if (!cert) return fail(Errc::kInvalidArgument, where + " is not a DER X.509 certificate");
    chain.push_back(std::move(cert));
  }
  return chain;
}

// Strict RFC 4648 base64 (the JWK x5c alphabet): padded, no whitespace.
std::optional<std::vector<unsigned char>> decode_base64(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0) return std::nullopt;
  static constexpr auto kTable = [] {
    std::array<signed char, 256> table{};
    table.fill(-1);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) table[static_cast<unsigned char>(alphabet[i])] = i;
    return table;
  }();
  std::size_t padding = 0;
  if (text.back() == '=') padding = text[text.size() - 2] == '=' ? 2 : 1;
  std::vector<unsigned char> out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    std::uint32_t group = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      int value = kTable[static_cast<unsigned char>(c)];
      if (c == '=' && last && j >= 4 - padding) value = 0;
      if (value < 0) return std::nullopt;
      group = group << 6 | static_cast<std::uint32_t>(value);
    }
    const std::size_t bytes = last ? 3 - padding : 3;
    for (std::size_t j = 0; j < bytes; ++j) out.push_back(group >> (16 - 8 * j) & 0xff);
  }
  return out;
}

bool known_kty(const std::string& kty) { return kty == "EC" || kty == "RSA" || kty == "OKP"; }

// A non-negative JSON integer, if it is one.
std::optional<std::uint64_t> non_negative_integer(const json& value) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0) {
    return static_cast<std::uint64_t>(value.get<std::int64_t>());
  }
  return std::nullopt;
}

// One "x509-svid" key: its single x5c certificate, or nothing if its kty is
// one we do not know (ignored, as unknown uses are).
Result<std::optional<X509Ptr>> parse_x509_svid_key(const json& key, const std::string& where) {
  const auto kty = key.find("kty");
  if (kty == key.end()) return fail(Errc::kInvalidArgument, where + ".kty: missing");
  if (!kty->is_string()) return fail(Errc::kInvalidArgument, where + ".kty: not a string");
  if (!known_kty(kty->get<std::string>())) return std::optional<X509Ptr>{};

  const auto x5c = key.find("x5c");
  if (x5c == key.end()) return fail(Errc::kInvalidArgument, where + ".x5c: missing");
  if (!x5c->is_array()) return fail(Errc::kInvalidArgument, where + ".x5c: not an array");
  if (x5c->size() != 1) {
    return fail(Errc::kInvalidArgument, where + ".x5c: " + std::to_string(x5c->size()) +
                                            " certificates, an x509-svid key has exactly one");
  }
  const json& encoded = (*x5c)[0];
  if (!encoded.is_string()) return fail(Errc::kInvalidArgument, where + ".x5c[0]: not a string");
  const auto der = decode_base64(encoded.get_ref<const std::string&>());
  if (!der) return fail(Errc::kInvalidArgument, where + ".x5c[0]: not valid base64");
  X509Ptr cert = parse_der(der->data(), der->size());
  if (!cert) {
    return fail(Errc::kInvalidArgument, where + ".x5c[0]: not a DER X.509 certificate");
  }
  return std::optional<X509Ptr>(std::move(cert));
}

Result<json> parse_json(std::string_view text, const std::string& prefix) {
  bool too_deep = false;
  const json::parser_callback_t limit_depth = [&](int depth, json::parse_event_t, json&) {
    if (depth > kMaxJsonDepth) too_deep = true;
    return !too_deep;
  };
  try {
    json document = json::parse(text.begin(), text.end(), limit_depth);
    if (too_deep) {
      return fail(Errc::kInvalidArgument,
                  prefix + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth));
    }
    return document;
  } catch (const json::parse_error& e) {
    return fail(Errc::kInvalidArgument,
                prefix + ": not valid JSON (at byte " + std::to_string(e.byte) + ")");
  } catch (const json::exception&) {
    return fail(Errc::kInvalidArgument, prefix + ": not valid JSON");
  }
}

Result<std::string> read_bounded(const std::string& path, std::size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("opening bundle " + path, errno);
  std::string content;
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return fail_errno("reading bundle " + path, errno);
    if (got == 0) break;
    content.append(buffer, static_cast<std::size_t>(got));
    if (content.size() > max_bytes) {
      return fail(Errc::kInvalidArgument, "bundle " + path + ": larger than the limit of " +
                                              std::to_string(max_bytes) + " bytes");
    }
  }
  return content;
}

}  // namespace

Result<Chain> parse_pem_chain(std::string_view pem) {
  return parse_pem_certificates(pem, kMaxChainBytes, kMaxChainLength, "certificate chain");
}

Result<Bundle> parse_pem_bundle(const identity::TrustDomain& td, std::string_view pem) {
  auto authorities = parse_pem_certificates(pem, kMaxBundleBytes, kMaxBundleAuthorities,
                                            "PEM bundle for " + td.name());
  if (!authorities) return std::unexpected(std::move(authorities.error()));
  return Bundle{td, std::move(*authorities), std::nullopt, std::nullopt};
}

Result<Bundle> parse_spiffe_bundle(const identity::TrustDomain& td, std::string_view text) {
  const std::string prefix = "SPIFFE bundle for " + td.name();
  if (text.size() > kMaxBundleBytes) {
    return fail(Errc::kInvalidArgument, prefix + ": larger than the limit of " +
                                            std::to_string(kMaxBundleBytes) + " bytes");
  }
  auto document = parse_json(text, prefix);
  if (!document) return std::unexpected(std::move(document.error()));
  if (!document->is_object()) return fail(Errc::kInvalidArgument, prefix + ": not a JSON object");

  Bundle bundle{td, {}, std::nullopt, std::nullopt};
  if (const auto sequence = document->find("spiffe_sequence"); sequence != document->end()) {
    bundle.sequence = non_negative_integer(*sequence);
    if (!bundle.sequence) {
      return fail(Errc::kInvalidArgument, prefix + ": spiffe_sequence: not a non-negative integer");
    }
  }
  if (const auto hint = document->find("spiffe_refresh_hint"); hint != document->end()) {
    const auto seconds = non_negative_integer(*hint);
    if (!seconds ||
        *seconds > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return fail(Errc::kInvalidArgument,
                  prefix + ": spiffe_refresh_hint: not a non-negative integer of seconds");
    }
    bundle.refresh_hint = static_cast<std::int64_t>(*seconds);
  }

  const auto keys = document->find("keys");
  if (keys == document->end()) return fail(Errc::kInvalidArgument, prefix + ": no \"keys\" array");
  if (!keys->is_array()) return fail(Errc::kInvalidArgument, prefix + ": keys: not an array");
  for (std::size_t i = 0; i < keys->size(); ++i) {
    const json& key = (*keys)[i];
    const std::string where = prefix + ": keys[" + std::to_string(i) + "]";
    if (!key.is_object()) return fail(Errc::kInvalidArgument, where + ": not a JSON object");
    const auto use = key.find("use");
    if (use == key.end()) continue;  // not an X.509 authority; JWT keys are not ours either
    if (!use->is_string()) return fail(Errc::kInvalidArgument, where + ".use: not a string");
    if (use->get_ref<const std::string&>() != "x509-svid") continue;

    auto cert = parse_x509_svid_key(key, where);
    if (!cert) return std::unexpected(std::move(cert.error()));
    if (!*cert) continue;
    if (bundle.authorities.size() == kMaxBundleAuthorities) {
      return fail(
          Errc::kInvalidArgument,
          prefix + ": more than " + std::to_string(kMaxBundleAuthorities) + " X.509 authorities");
    }
    bundle.authorities.push_back(std::move(**cert));
  }
  return bundle;
}

Result<Bundle> load_bundle(const identity::TrustDomain& td, const std::string& path) {
  auto content = read_bounded(path, kMaxBundleBytes);
  if (!content) return std::unexpected(std::move(content.error()));
  const bool is_json = path.size() >= 5 && path.ends_with(".json");
  auto bundle = is_json ? parse_spiffe_bundle(td, *content) : parse_pem_bundle(td, *content);
  if (!bundle) {
    return fail(bundle.error().code, "bundle " + path + ": " + bundle.error().message);
  }
  return bundle;
}

std::uint64_t BundleSet::next_generation() {
  static std::atomic<std::uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed) + 1;
}

Result<void> BundleSet::add(Bundle bundle) {
  const std::string& name = bundle.trust_domain.name();
  X509StorePtr store(X509_STORE_new());
  if (!store) return fail(Errc::kIo, "creating the X509 store for " + name + ": out of memory");
  for (std::size_t i = 0; i < bundle.authorities.size(); ++i) {
    X509* cert = bundle.authorities[i].get();
    if (cert == nullptr || X509_STORE_add_cert(store.get(), cert) != 1) {
      return fail(Errc::kInvalidArgument, "bundle for " + name + ": authority " +
                                              std::to_string(i) + " cannot be added (" +
                                              take_openssl_error() + ")");
    }
  }
  identity::TrustDomain td = bundle.trust_domain;
  entries_.insert_or_assign(std::move(td), Entry{std::move(bundle), std::move(store)});
  generation_ = next_generation();
  return {};
}

const Bundle* BundleSet::find(const identity::TrustDomain& td) const {
  const auto it = entries_.find(td);
  return it == entries_.end() ? nullptr : &it->second.bundle;
}

X509_STORE* BundleSet::store(const identity::TrustDomain& td) const {
  const auto it = entries_.find(td);
  return it == entries_.end() ? nullptr : it->second.store.get();
}

std::vector<identity::TrustDomain> BundleSet::domains() const {
  std::vector<identity::TrustDomain> out;
  for (const auto& [td, entry] : entries_) out.push_back(td);
  return out;
}

}  // namespace trustfence::tls
