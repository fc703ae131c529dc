#include "support/test_ca.hpp"

#include <openssl/pem.h>
#include <openssl/rand.h>

#include <atomic>
#include <stdexcept>

namespace trustfence::test {
namespace {

using tls::Asn1BitStringPtr;
using tls::BasicConstraintsPtr;
using tls::BioPtr;
using tls::GeneralNamesPtr;
using tls::X509ExtensionPtr;
using tls::X509Ptr;

// Test scaffolding: a failure here is a broken test, not an input to handle.
void require(bool ok, const char* what) {
  if (!ok)
    throw std::runtime_error(std::string("test CA: ") + what + ": " + tls::take_openssl_error());
}

void set_time(ASN1_TIME* field, TimePoint when) {
  require(ASN1_TIME_set(field, std::chrono::system_clock::to_time_t(when)) != nullptr,
          "setting a validity time");
}

void add_names(GENERAL_NAMES* names, int type, const std::vector<std::string>& values) {
  for (const std::string& value : values) {
    GENERAL_NAME* name = GENERAL_NAME_new();
    ASN1_IA5STRING* text = ASN1_IA5STRING_new();
    require(name != nullptr && text != nullptr &&
                ASN1_STRING_set(text, value.data(), static_cast<int>(value.size())) == 1,
            "building a SAN");
    GENERAL_NAME_set0_value(name, type, text);
    require(sk_GENERAL_NAME_push(names, name) > 0, "adding a SAN");
  }
}

void add_extensions(X509* cert, X509* issuer, const CertSpec& spec) {
  if (spec.basic_constraints) {
    BasicConstraintsPtr constraints(BASIC_CONSTRAINTS_new());
    require(constraints != nullptr, "basicConstraints");
    constraints->ca = spec.is_ca ? 0xff : 0;
    require(X509_add1_ext_i2d(cert, NID_basic_constraints, constraints.get(), 1, 0) == 1,
            "adding basicConstraints");
  }
  if (spec.key_usage != kNoKeyUsage) {
    Asn1BitStringPtr usage(ASN1_BIT_STRING_new());
    require(usage != nullptr, "keyUsage");
    for (int bit = 0; bit < 9; ++bit) {
      // KU_* bits are numbered from the most significant bit of the first byte.
      const unsigned mask = bit < 8 ? 0x80u >> bit : 0x8000u;
      if (spec.key_usage & mask) require(ASN1_BIT_STRING_set_bit(usage.get(), bit, 1) == 1, "KU");
    }
    require(X509_add1_ext_i2d(cert, NID_key_usage, usage.get(), 1, 0) == 1, "adding keyUsage");
  }
  if (!spec.uris.empty() || !spec.dns_names.empty()) {
    GeneralNamesPtr names(GENERAL_NAMES_new());
    require(names != nullptr, "subjectAltName");
    add_names(names.get(), GEN_URI, spec.uris);
    add_names(names.get(), GEN_DNS, spec.dns_names);
    require(X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, 0) == 1,
            "adding subjectAltName");
  }
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, issuer, cert, nullptr, nullptr, 0);
  for (const auto& [nid, value] : {std::pair{NID_subject_key_identifier, "hash"},
                                   std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    X509ExtensionPtr extension(X509V3_EXT_conf_nid(nullptr, &context, nid, value));
    require(extension != nullptr && X509_add_ext(cert, extension.get(), -1) == 1,
            "adding a key identifier");
  }
}

void set_serial(X509* cert) {
  static std::atomic<std::uint32_t> counter{1};
  std::uint32_t random = 0;
  require(RAND_bytes(reinterpret_cast<unsigned char*>(&random), sizeof random) == 1, "RAND");
  const std::uint64_t serial =
      (static_cast<std::uint64_t>(random & 0x7fffffff) << 32) | counter.fetch_add(1);
  require(ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert), serial) == 1, "serial");
}

CertSpec ca_spec(const std::string& name, Validity validity) {
  CertSpec spec;
  spec.common_name = name;
  spec.is_ca = true;
  spec.key_usage = kCaKeyUsage;
  spec.validity = validity;
  return spec;
}

}  // namespace

tls::EvpPkeyPtr make_p256_key() {
  tls::EvpPkeyPtr key(EVP_EC_gen("P-256"));
  require(key != nullptr, "generating a P-256 key");
  return key;
}

Issued mint(const CertSpec& spec, const Issued* issuer, tls::EvpPkeyPtr key) {
  if (!key) key = make_p256_key();
  X509Ptr cert(X509_new());
  require(cert != nullptr && X509_set_version(cert.get(), X509_VERSION_3) == 1, "X509_new");
  set_serial(cert.get());
  X509_NAME* subject = X509_get_subject_name(cert.get());
  require(X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8,
                                     reinterpret_cast<const unsigned char*>("trustfence tests"), -1,
                                     -1, 0) == 1 &&
              X509_NAME_add_entry_by_txt(
                  subject, "CN", MBSTRING_UTF8,
                  reinterpret_cast<const unsigned char*>(spec.common_name.c_str()), -1, -1, 0) == 1,
          "subject");
  X509* signer = issuer != nullptr ? issuer->cert.get() : cert.get();
  EVP_PKEY* signing_key = issuer != nullptr ? issuer->key.get() : key.get();
  require(X509_set_issuer_name(cert.get(), X509_get_subject_name(signer)) == 1, "issuer");
  set_time(X509_getm_notBefore(cert.get()), spec.validity.not_before);
  set_time(X509_getm_notAfter(cert.get()), spec.validity.not_after);
  require(X509_set_pubkey(cert.get(), key.get()) == 1, "public key");
  add_extensions(cert.get(), signer, spec);
  require(X509_sign(cert.get(), signing_key, EVP_sha256()) > 0, "signing");
  // Round-trip through DER so no value cached while building survives:
  // tests see exactly what a peer would send.
  const std::string der = to_der(cert.get());
  const auto* cursor = reinterpret_cast<const unsigned char*>(der.data());
  X509Ptr parsed(d2i_X509(nullptr, &cursor, static_cast<long>(der.size())));
  require(parsed != nullptr, "re-reading the minted certificate");
  return Issued{std::move(parsed), std::move(key)};
}

std::string Issued::pem() const { return to_pem(cert.get()); }

TestCa TestCa::root(const std::string& name, Validity validity) {
  return TestCa(mint(ca_spec(name + " root", validity), nullptr));
}

TestCa TestCa::intermediate(const std::string& name, Validity validity) const {
  return TestCa(mint(ca_spec(name, validity), &issued_));
}

Issued TestCa::issue(const CertSpec& spec) const { return mint(spec, &issued_); }

tls::X509Ptr TestCa::share() const { return tls::share(cert()); }

CertSpec leaf_spec(const std::string& uri, Validity validity) {
  CertSpec spec;
  spec.common_name = "leaf";
  spec.uris = {uri};
  spec.validity = validity;
  return spec;
}

tls::Chain chain_of(std::initializer_list<X509*> certs) {
  tls::Chain chain;
  for (X509* cert : certs) chain.push_back(tls::share(cert));
  return chain;
}

std::string to_pem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  require(bio != nullptr && PEM_write_bio_X509(bio.get(), cert) == 1, "writing PEM");
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(length));
}

std::string to_pem(const tls::Chain& chain) {
  std::string pem;
  for (const tls::X509Ptr& cert : chain) pem += to_pem(cert.get());
  return pem;
}

std::string to_pem(EVP_PKEY* key) {
  tls::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

std::string to_der(X509* cert) {
  unsigned char* data = nullptr;
  const int length = i2d_X509(cert, &data);
  const tls::OpensslBuffer<unsigned char> owned(data);
  require(length > 0, "writing DER");
  return std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(length));
}

}  // namespace trustfence::test
