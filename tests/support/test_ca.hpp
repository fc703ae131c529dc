#pragma once

// An in-memory certificate authority for tests, fuzzing and benchmarks:
// EC P-256 keys and certificates minted at run time, never checked in.
//
//   auto root = TestCa::root("team-a.gke.local");
//   auto intermediate = root.intermediate();
//   auto leaf = intermediate.issue(leaf_spec("spiffe://team-a.gke.local/ns/x/sa/y"));
//   tls::Chain chain = chain_of({leaf.cert.get(), intermediate.cert()});
//   std::string pem = to_pem(chain);

#include <chrono>
#include <initializer_list>
#include <string>
#include <vector>

#include "trustfence/tls/openssl.hpp"

namespace trustfence::test {

using TimePoint = std::chrono::system_clock::time_point;

// Default validity: from an hour ago to thirty days ahead of now.
struct Validity {
  TimePoint not_before = std::chrono::system_clock::now() - std::chrono::hours(1);
  TimePoint not_after = std::chrono::system_clock::now() + std::chrono::hours(24 * 30);
};

// OpenSSL KU_* bits; kNoKeyUsage leaves the extension out.
inline constexpr unsigned kNoKeyUsage = 0;
inline constexpr unsigned kLeafKeyUsage = KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT;
inline constexpr unsigned kCaKeyUsage = KU_KEY_CERT_SIGN | KU_CRL_SIGN;

struct CertSpec {
  std::string common_name = "trustfence test";
  std::vector<std::string> uris;       // URI SANs, in order
  std::vector<std::string> dns_names;  // DNS SANs
  bool is_ca = false;
  bool basic_constraints = true;  // false: no basicConstraints extension at all
  unsigned key_usage = kLeafKeyUsage;
  Validity validity;
};

// A certificate and its private key.
struct Issued {
  tls::X509Ptr cert;
  tls::EvpPkeyPtr key;

  std::string pem() const;
};

// A CA that can issue certificates; roots sign themselves.
class TestCa {
 public:
  // A self-signed root CA ("<trust domain> root"), optionally with a
  // SPIFFE trust-domain URI SAN as SPIRE writes it.
  static TestCa root(const std::string& name, Validity validity = {});

  // A CA signed by this one.
  TestCa intermediate(const std::string& name = "intermediate", Validity validity = {}) const;
  // Any certificate signed by this CA, a CA too if spec.is_ca.
  Issued issue(const CertSpec& spec) const;

  X509* cert() const { return issued_.cert.get(); }
  EVP_PKEY* key() const { return issued_.key.get(); }
  std::string pem() const { return issued_.pem(); }
  tls::X509Ptr share() const;

  explicit TestCa(Issued issued) : issued_(std::move(issued)) {}

 private:
  Issued issued_;
};

tls::EvpPkeyPtr make_p256_key();
// A certificate for spec's key (a fresh one if key is null), signed by
// issuer (self-signed if issuer is null).
Issued mint(const CertSpec& spec, const Issued* issuer, tls::EvpPkeyPtr key = nullptr);

// A CertSpec for an ordinary X.509-SVID leaf with one URI SAN.
CertSpec leaf_spec(const std::string& uri, Validity validity = {});

// The certificates in order, each shared (X509_up_ref).
tls::Chain chain_of(std::initializer_list<X509*> certs);
std::string to_pem(X509* cert);
std::string to_pem(const tls::Chain& chain);
// An unencrypted PKCS#8 private key in PEM.
std::string to_pem(EVP_PKEY* key);
std::string to_der(X509* cert);

}  // namespace trustfence::test
