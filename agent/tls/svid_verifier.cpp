#include "trustfence/tls/svid_verifier.hpp"

#include <openssl/err.h>

#include <ctime>
#include <optional>
#include <utility>

namespace trustfence::tls {
namespace {

using TimePoint = std::chrono::system_clock::time_point;

std::unexpected<VerifyFailure> reject(tf_reason reason, std::string detail) {
  return std::unexpected(VerifyFailure{reason, std::move(detail)});
}

std::optional<TimePoint> to_time_point(const ASN1_TIME* time) {
  std::tm tm{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) return std::nullopt;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string format_time(const ASN1_TIME* time) {
  std::tm tm{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) return "an unreadable time";
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// Step 1: a chain, leaf first, within bounds.
std::optional<VerifyFailure> check_chain_present(const Chain& chain) {
  if (chain.empty())
    return VerifyFailure{TF_REASON_INVALID_SVID, "chain: no certificate presented"};
  if (chain.size() > kMaxChainLength) {
    return VerifyFailure{TF_REASON_INVALID_SVID, "chain: " + std::to_string(chain.size()) +
                                                     " certificates, more than the limit of " +
                                                     std::to_string(kMaxChainLength)};
  }
  for (const X509Ptr& cert : chain) {
    if (!cert) return VerifyFailure{TF_REASON_INVALID_SVID, "chain: holds an empty certificate"};
  }
  return std::nullopt;
}

// Step 2: exactly one URI SAN; other SAN types may come with it.
Result<std::string> single_uri_san(X509* leaf) {
  int found = 0;
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, &found, nullptr)));
  ERR_clear_error();
  if (!names) {
    if (found == -2) return fail(Errc::kInvalidArgument, "several subjectAltName extensions");
    if (found >= 0) return fail(Errc::kInvalidArgument, "malformed subjectAltName extension");
    return fail(Errc::kInvalidArgument, "no subjectAltName extension, so no URI SAN");
  }
  std::optional<std::string> uri;
  int uris = 0;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type != GEN_URI) continue;
    ++uris;
    const ASN1_IA5STRING* value = name->d.uniformResourceIdentifier;
    uri.emplace(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                static_cast<std::size_t>(ASN1_STRING_length(value)));
  }
  if (uris != 1) {
    return fail(Errc::kInvalidArgument,
                std::to_string(uris) + " URI SANs, an X.509-SVID has exactly one");
  }
  return *uri;
}

// Step 4: an end-entity signing certificate.
std::optional<std::string> check_leaf_usage(X509* leaf) {
  const std::uint32_t flags = X509_get_extension_flags(leaf);
  if (flags & EXFLAG_INVALID) return "has malformed or duplicate X.509 extensions";
  if (flags & EXFLAG_CA) return "is a CA (basicConstraints CA:TRUE)";
  const std::uint32_t usage = X509_get_key_usage(leaf);
  if (usage == UINT32_MAX) return "has no keyUsage extension (needs digitalSignature)";
  if (!(usage & KU_DIGITAL_SIGNATURE)) return "keyUsage lacks digitalSignature";
  if (usage & KU_KEY_CERT_SIGN) return "keyUsage has keyCertSign";
  if (usage & KU_CRL_SIGN) return "keyUsage has cRLSign";
  return std::nullopt;
}

bool is_validity_error(int error) {
  return error == X509_V_ERR_CERT_HAS_EXPIRED || error == X509_V_ERR_CERT_NOT_YET_VALID;
}

}  // namespace

SvidVerifier::SvidVerifier(const BundleSet& bundles, Clock clock)
    : bundles_(bundles), clock_(std::move(clock)) {}

VerifyResult SvidVerifier::verify(const Chain& chain) const {
  if (auto failure = check_chain_present(chain)) return std::unexpected(std::move(*failure));
  X509* leaf = chain.front().get();

  auto uri = single_uri_san(leaf);
  if (!uri) return reject(TF_REASON_INVALID_SVID, "leaf SAN: " + uri.error().message);

  auto id = identity::SpiffeId::parse(*uri);
  if (!id) return reject(TF_REASON_INVALID_SVID, "leaf SPIFFE ID: " + id.error().message);
  if (!id->has_workload_path()) {
    return reject(TF_REASON_INVALID_SVID,
                  "leaf SPIFFE ID: " + id->str() + " is a trust domain's own ID, not a workload's");
  }

  if (auto problem = check_leaf_usage(leaf)) {
    return reject(TF_REASON_INVALID_SVID, "leaf: " + *problem);
  }

  // The leaf's own trust domain picks the bundle; nothing else may.
  X509_STORE* store = bundles_.store(id->trust_domain());
  if (store == nullptr) {
    return reject(TF_REASON_NO_BUNDLE,
                  "bundle: none for trust domain " + id->trust_domain().name());
  }

  X509StackPtr untrusted(sk_X509_new_null());
  if (!untrusted) return reject(TF_REASON_BAD_CHAIN, "chain: out of memory");
  for (std::size_t i = 1; i < chain.size(); ++i) {
    if (!(X509_get_extension_flags(chain[i].get()) & EXFLAG_CA)) {
      return reject(TF_REASON_BAD_CHAIN, "chain: certificate " + std::to_string(i) +
                                             " is not a CA (intermediates must be)");
    }
    if (sk_X509_push(untrusted.get(), chain[i].get()) <= 0) {
      return reject(TF_REASON_BAD_CHAIN, "chain: out of memory");
    }
  }

  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store, leaf, untrusted.get()) != 1) {
    ERR_clear_error();
    return reject(TF_REASON_BAD_CHAIN, "chain: cannot set up verification");
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_time(param, std::chrono::system_clock::to_time_t(clock_()));
  X509_VERIFY_PARAM_set_depth(param, static_cast<int>(kMaxChainLength));
  // Every authority of a bundle is a trust anchor, root or not (as in
  // go-spiffe): a bundle may hold an intermediate of an upstream CA.
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);

  const int verified = X509_verify_cert(ctx.get());
  ERR_clear_error();
  if (verified != 1) {
    const int error = X509_STORE_CTX_get_error(ctx.get());
    const int depth = X509_STORE_CTX_get_error_depth(ctx.get());
    const std::string at = " (certificate " + std::to_string(depth) + ")";
    if (is_validity_error(error)) {
      X509* cert = X509_STORE_CTX_get_current_cert(ctx.get());
      const bool expired = error == X509_V_ERR_CERT_HAS_EXPIRED;
      const ASN1_TIME* bound = cert == nullptr ? nullptr
                               : expired       ? X509_get0_notAfter(cert)
                                               : X509_get0_notBefore(cert);
      return reject(TF_REASON_EXPIRED, std::string("validity: ") +
                                           (expired ? "expired at " : "not valid before ") +
                                           format_time(bound) + at);
    }
    return reject(TF_REASON_BAD_CHAIN, "chain: does not verify against the bundle of " +
                                           id->trust_domain().name() + ": " +
                                           X509_verify_cert_error_string(error) + at);
  }

  // Earliest expiry of the verified path, trust anchor included.
  std::optional<TimePoint> not_after;
  STACK_OF(X509)* path = X509_STORE_CTX_get0_chain(ctx.get());
  for (int i = 0; i < sk_X509_num(path); ++i) {
    const auto expiry = to_time_point(X509_get0_notAfter(sk_X509_value(path, i)));
    if (!expiry) return reject(TF_REASON_BAD_CHAIN, "chain: unreadable notAfter");
    if (!not_after || *expiry < *not_after) not_after = expiry;
  }
  if (!not_after) return reject(TF_REASON_BAD_CHAIN, "chain: verified path is empty");
  return VerifiedSvid{std::move(*id), *not_after};
}

}  // namespace trustfence::tls
