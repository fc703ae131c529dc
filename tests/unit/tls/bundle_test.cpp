#include "trustfence/tls/bundle.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "support/test_ca.hpp"

namespace {

using trustfence::Errc;
using trustfence::identity::TrustDomain;
using trustfence::test::TestCa;
using trustfence::test::to_der;
using trustfence::tls::Bundle;
using trustfence::tls::BundleSet;
using trustfence::tls::Chain;

TrustDomain td(const char* name) { return TrustDomain::parse(name).value(); }

struct Fixtures {
  TestCa root = TestCa::root("team-a.gke.local");
  TestCa other = TestCa::root("team-a.gke.local second");
  TestCa intermediate = root.intermediate();
  std::string root_pem = root.pem();
  std::string chain_pem = root.intermediate().pem() + root_pem;
  std::string root_b64 = base64(to_der(root.cert()));
  std::string other_b64 = base64(to_der(other.cert()));

  static std::string base64(const std::string& der) {
    std::string out(4 * ((der.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(der.data()),
                                  static_cast<int>(der.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
  }
};

const Fixtures& fx() {
  static const auto* instance = new Fixtures();
  return *instance;
}

// Replaces every "$A" with the root's base64 DER, "$B" with another root's.
std::string expand(std::string text) {
  for (const auto& [mark, value] : {std::pair{"$A", &fx().root_b64}, {"$B", &fx().other_b64}}) {
    for (auto at = text.find(mark); at != std::string::npos; at = text.find(mark)) {
      text.replace(at, 2, *value);
    }
  }
  return text;
}

// ---- PEM chains ----

struct PemCase {
  std::string name;
  std::function<std::string()> pem;
  std::size_t certificates;  // 0: an error
  std::string error_part;
};

void PrintTo(const PemCase& c, std::ostream* os) { *os << c.name; }

class PemChain : public ::testing::TestWithParam<PemCase> {};

TEST_P(PemChain, ParsesCertificatesOrNamesTheDefect) {
  const auto chain = trustfence::tls::parse_pem_chain(GetParam().pem());
  if (GetParam().certificates == 0) {
    ASSERT_FALSE(chain.has_value()) << chain->size();
    EXPECT_EQ(chain.error().code, Errc::kInvalidArgument);
    EXPECT_NE(chain.error().message.find(GetParam().error_part), std::string::npos)
        << chain.error().message;
  } else {
    ASSERT_TRUE(chain.has_value()) << chain.error().message;
    EXPECT_EQ(chain->size(), GetParam().certificates);
  }
}

std::string damage_base64(std::string pem) {
  pem[pem.find('\n') + 5] = '*';
  return pem;
}

std::string pem_block(const char* type, const std::string& body) {
  return std::string("-----BEGIN ") + type + "-----\n" + body + "\n-----END " + type + "-----\n";
}

const PemCase kPemCases[] = {
    {"OneCertificate", [] { return fx().root_pem; }, 1, ""},
    {"TwoCertificates", [] { return fx().chain_pem; }, 2, ""},
    {"TextAroundBlocks", [] { return "subject: x\n" + fx().chain_pem + "trailer\n"; }, 2, ""},
    {"Empty", [] { return std::string(); }, 0, "empty"},
    {"OnlyWhitespace", [] { return std::string(" \n\t\n"); }, 0, "empty"},
    {"Garbage", [] { return std::string("\x01\x02 not a certificate at all"); }, 0, "not PEM"},
    {"DerNotPem", [] { return to_der(fx().root.cert()); }, 0, "not PEM"},
    {"PrivateKeyBlock", [] { return pem_block("PRIVATE KEY", "AAAA"); }, 0, "not a CERTIFICATE"},
    {"KeyAfterCertificate", [] { return fx().root_pem + pem_block("EC PRIVATE KEY", "AAAA"); }, 0,
     "PEM block 2"},
    {"DamagedBase64", [] { return damage_base64(fx().root_pem); }, 0, "PEM block 1"},
    {"NotDer", [] { return pem_block("CERTIFICATE", "aGVsbG8gd29ybGQ="); }, 0,
     "not a DER X.509 certificate"},
    {"DerWithTrailingBytes",
     [] {
       const std::string der = to_der(fx().root.cert()) + "xx";
       return pem_block("CERTIFICATE", Fixtures::base64(der));
     },
     0, "not a DER X.509 certificate"},
    {"MissingEndLine", [] { return fx().root_pem.substr(0, fx().root_pem.find("-----END")); }, 0,
     "PEM block 1"},
    {"TooManyCertificates",
     [] {
       std::string pem;
       for (std::size_t i = 0; i <= trustfence::tls::kMaxChainLength; ++i) pem += fx().root_pem;
       return pem;
     },
     0, "more than 16"},
    {"TooManyBytes",
     [] { return fx().root_pem + std::string(trustfence::tls::kMaxChainBytes, '\n'); }, 0, "limit"},
};

INSTANTIATE_TEST_SUITE_P(Table, PemChain, ::testing::ValuesIn(kPemCases),
                         [](const auto& info) { return info.param.name; });

TEST(PemBundle, HoldsEveryAuthority) {
  const auto bundle = trustfence::tls::parse_pem_bundle(td("team-a.gke.local"), fx().chain_pem);
  ASSERT_TRUE(bundle.has_value()) << bundle.error().message;
  EXPECT_EQ(bundle->trust_domain.name(), "team-a.gke.local");
  EXPECT_EQ(bundle->authorities.size(), 2u);
  EXPECT_FALSE(bundle->sequence.has_value());
}

TEST(PemBundle, EmptyIsAnErrorNamingTheDomain) {
  const auto bundle = trustfence::tls::parse_pem_bundle(td("team-a.gke.local"), "");
  ASSERT_FALSE(bundle.has_value());
  EXPECT_NE(bundle.error().message.find("team-a.gke.local"), std::string::npos);
}

// ---- SPIFFE bundles (JWK Set) ----

struct JsonCase {
  std::string name;
  std::string json;  // "$A"/"$B" expand to base64 DER certificates
  bool ok;
  std::size_t authorities = 0;
  std::optional<std::uint64_t> sequence = std::nullopt;
  std::optional<std::int64_t> refresh_hint = std::nullopt;
  std::string error_part = "";
};

void PrintTo(const JsonCase& c, std::ostream* os) { *os << c.name; }

class SpiffeBundle : public ::testing::TestWithParam<JsonCase> {};

TEST_P(SpiffeBundle, ParsesAuthoritiesOrNamesTheKeyAndField) {
  const JsonCase& c = GetParam();
  const auto bundle = trustfence::tls::parse_spiffe_bundle(td("team-a.gke.local"), expand(c.json));
  if (!c.ok) {
    ASSERT_FALSE(bundle.has_value());
    EXPECT_EQ(bundle.error().code, Errc::kInvalidArgument);
    EXPECT_NE(bundle.error().message.find(c.error_part), std::string::npos)
        << bundle.error().message;
    EXPECT_NE(bundle.error().message.find("team-a.gke.local"), std::string::npos);
    return;
  }
  ASSERT_TRUE(bundle.has_value()) << bundle.error().message;
  EXPECT_EQ(bundle->authorities.size(), c.authorities);
  EXPECT_EQ(bundle->sequence, c.sequence);
  EXPECT_EQ(bundle->refresh_hint, c.refresh_hint);
}

const JsonCase kJsonCases[] = {
    {"OneAuthority", R"({"keys":[{"use":"x509-svid","kty":"EC","x5c":["$A"]}]})", true, 1},
    {"TwoAuthorities",
     R"({"keys":[{"use":"x509-svid","kty":"EC","x5c":["$A"]},
                 {"use":"x509-svid","kty":"EC","x5c":["$B"]}]})",
     true, 2},
    {"SequenceAndRefreshHintKept",
     R"({"spiffe_sequence":42,"spiffe_refresh_hint":300,
         "keys":[{"use":"x509-svid","kty":"EC","x5c":["$A"],"crv":"P-256","x":"..","y":".."}]})",
     true, 1, 42, 300},
    {"NoKeysTrustsNothing", R"({"keys":[]})", true, 0},
    {"JwtKeyIgnored",
     R"({"keys":[{"use":"jwt-svid","kty":"EC","kid":"k1","crv":"P-256","x":"AA","y":"AA"},
                 {"use":"x509-svid","kty":"EC","x5c":["$A"]}]})",
     true, 1},
    {"UnknownUseIgnored", R"({"keys":[{"use":"something-else","kty":"EC","x5c":[7]}]})", true, 0},
    {"UnknownKtyIgnored", R"({"keys":[{"use":"x509-svid","kty":"oct","k":"AA"}]})", true, 0},
    {"MissingUseIgnored", R"({"keys":[{"kty":"EC","x5c":["$A"]}]})", true, 0},
    {"RsaKty", R"({"keys":[{"use":"x509-svid","kty":"RSA","x5c":["$A"]}]})", true, 1},
    {"UnknownTopLevelMembersIgnored", R"({"keys":[],"extra":{"a":[1,2]}})", true, 0},

    {"MalformedJson", R"({"keys":[)", false, 0, {}, {}, "not valid JSON"},
    {"EmptyText", "", false, 0, {}, {}, "not valid JSON"},
    {"TrailingGarbage", R"({"keys":[]} x)", false, 0, {}, {}, "not valid JSON"},
    {"NotAnObject", R"([{"keys":[]}])", false, 0, {}, {}, "not a JSON object"},
    {"NoKeys", R"({"spiffe_sequence":1})", false, 0, {}, {}, "no \"keys\""},
    {"KeysNotAnArray", R"({"keys":{}})", false, 0, {}, {}, "keys: not an array"},
    {"KeyNotAnObject", R"({"keys":["x"]})", false, 0, {}, {}, "keys[0]: not a JSON object"},
    {"UseNotAString", R"({"keys":[{"use":1}]})", false, 0, {}, {}, "keys[0].use: not a string"},
    {"KtyMissing",
     R"({"keys":[{"use":"x509-svid","x5c":["$A"]}]})",
     false,
     0,
     {},
     {},
     "keys[0].kty: missing"},
    {"KtyNotAString",
     R"({"keys":[{"use":"x509-svid","kty":2,"x5c":["$A"]}]})",
     false,
     0,
     {},
     {},
     "keys[0].kty: not a string"},
    {"X5cMissing",
     R"({"keys":[{"use":"x509-svid","kty":"EC"}]})",
     false,
     0,
     {},
     {},
     "keys[0].x5c: missing"},
    {"X5cNotAnArray",
     R"({"keys":[{"use":"x509-svid","kty":"EC","x5c":"$A"}]})",
     false,
     0,
     {},
     {},
     "keys[0].x5c: not an array"},
    {"X5cEmpty",
     R"({"keys":[{"use":"x509-svid","kty":"EC","x5c":[]}]})",
     false,
     0,
     {},
     {},
     "keys[0].x5c: 0 certificates"},
    {"X5cTwoCertificates",
     R"({"keys":[{"use":"x509-svid","kty":"EC","x5c":["$A","$B"]}]})",
     false,
     0,
     {},
     {},
     "keys[0].x5c: 2 certificates"},
    {"X5cEntryNotAString",
     R"({"keys":[{"use":"x509-svid","kty":"EC","x5c":[1]}]})",
     false,
     0,
     {},
     {},
     "keys[0].x5c[0]: not a string"},
    {"BadBase64InSecondKey",
     R"({"keys":[{"use":"x509-svid","kty":"EC","x5c":["$A"]},
                 {"use":"x509-svid","kty":"EC","x5c":["$A!"]}]})",
     false,
     0,
     {},
     {},
     "keys[1].x5c[0]: not valid base64"},
    {"Base64UrlAlphabet",
     R"({"keys":[{"use":"x509-svid","kty":"EC","x5c":["ab-_"]}]})",
     false,
     0,
     {},
     {},
     "keys[0].x5c[0]: not valid base64"},
    {"Base64WithNewline",
     R"({"keys":[{"use":"x509-svid","kty":"EC","x5c":["$A\n"]}]})",
     false,
     0,
     {},
     {},
     "keys[0].x5c[0]: not valid base64"},
    {"Base64NotDer",
     R"({"keys":[{"use":"x509-svid","kty":"EC","x5c":["aGVsbG8="]}]})",
     false,
     0,
     {},
     {},
     "keys[0].x5c[0]: not a DER X.509 certificate"},
    {"SequenceNegative",
     R"({"spiffe_sequence":-1,"keys":[]})",
     false,
     0,
     {},
     {},
     "spiffe_sequence"},
    {"SequenceString", R"({"spiffe_sequence":"1","keys":[]})", false, 0, {}, {}, "spiffe_sequence"},
    {"RefreshHintFloat",
     R"({"spiffe_refresh_hint":1.5,"keys":[]})",
     false,
     0,
     {},
     {},
     "spiffe_refresh_hint"},
    {"RefreshHintTooLarge",
     R"({"spiffe_refresh_hint":18446744073709551615,"keys":[]})",
     false,
     0,
     {},
     {},
     "spiffe_refresh_hint"},
    {"NestedTooDeep",
     R"({"keys":[],"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]})",
     false,
     0,
     {},
     {},
     "nested deeper"},
};

INSTANTIATE_TEST_SUITE_P(Table, SpiffeBundle, ::testing::ValuesIn(kJsonCases),
                         [](const auto& info) { return info.param.name; });

TEST(SpiffeBundleLimits, MoreBytesThanTheLimitIsAnError) {
  const std::string big =
      R"({"keys":[],"pad":")" + std::string(trustfence::tls::kMaxBundleBytes, 'a') + R"("})";
  const auto bundle = trustfence::tls::parse_spiffe_bundle(td("team-a.gke.local"), big);
  ASSERT_FALSE(bundle.has_value());
  EXPECT_NE(bundle.error().message.find("limit"), std::string::npos);
}

// ---- Files ----

class BundleFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/tf-bundle-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }
  std::string dir_;
};

TEST_F(BundleFile, PemByDefault) {
  const auto bundle =
      trustfence::tls::load_bundle(td("team-a.gke.local"), write("team-a.pem", fx().chain_pem));
  ASSERT_TRUE(bundle.has_value()) << bundle.error().message;
  EXPECT_EQ(bundle->authorities.size(), 2u);
}

TEST_F(BundleFile, JsonSuffixIsASpiffeBundle) {
  const auto bundle = trustfence::tls::load_bundle(
      td("team-a.gke.local"), write("team-a.json", expand(R"({"spiffe_sequence":3,"keys":[
        {"use":"x509-svid","kty":"EC","x5c":["$A"]}]})")));
  ASSERT_TRUE(bundle.has_value()) << bundle.error().message;
  EXPECT_EQ(bundle->authorities.size(), 1u);
  EXPECT_EQ(bundle->sequence, 3u);
}

TEST_F(BundleFile, ErrorsNameTheFile) {
  const std::string missing = dir_ + "/missing.pem";
  const auto absent = trustfence::tls::load_bundle(td("team-a.gke.local"), missing);
  ASSERT_FALSE(absent.has_value());
  EXPECT_EQ(absent.error().code, Errc::kNotFound);
  EXPECT_NE(absent.error().message.find(missing), std::string::npos) << absent.error().message;

  const std::string bad = write("bad.json", R"({"keys":[{"use":"x509-svid","kty":"EC"}]})");
  const auto malformed = trustfence::tls::load_bundle(td("team-a.gke.local"), bad);
  ASSERT_FALSE(malformed.has_value());
  EXPECT_NE(malformed.error().message.find(bad), std::string::npos) << malformed.error().message;
  EXPECT_NE(malformed.error().message.find("keys[0].x5c"), std::string::npos);
}

TEST_F(BundleFile, LargerThanTheLimitIsRefused) {
  const std::string path =
      write("huge.pem", fx().root_pem + std::string(trustfence::tls::kMaxBundleBytes, '\n'));
  const auto bundle = trustfence::tls::load_bundle(td("team-a.gke.local"), path);
  ASSERT_FALSE(bundle.has_value());
  EXPECT_NE(bundle.error().message.find("limit"), std::string::npos);
}

// ---- BundleSet ----

Bundle bundle_of(const char* name, const TestCa& ca) {
  Chain authorities;
  authorities.push_back(ca.share());
  return Bundle{td(name), std::move(authorities), std::nullopt, std::nullopt};
}

int objects_in(X509_STORE* store) { return sk_X509_OBJECT_num(X509_STORE_get0_objects(store)); }

TEST(BundleSetTest, OneStorePerDomainNeverMerged) {
  BundleSet set;
  ASSERT_TRUE(set.add(bundle_of("team-a.gke.local", fx().root)));
  ASSERT_TRUE(set.add(bundle_of("team-b.eks.local", fx().other)));
  EXPECT_EQ(set.size(), 2u);
  X509_STORE* a = set.store(td("team-a.gke.local"));
  X509_STORE* b = set.store(td("team-b.eks.local"));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  EXPECT_EQ(objects_in(a), 1);
  EXPECT_EQ(objects_in(b), 1);
  EXPECT_EQ(set.store(td("team-c.local")), nullptr);
  EXPECT_EQ(set.find(td("team-c.local")), nullptr);
  ASSERT_NE(set.find(td("team-a.gke.local")), nullptr);
  EXPECT_EQ(set.find(td("team-a.gke.local"))->authorities.size(), 1u);
}

TEST(BundleSetTest, AddReplacesTheDomainsBundleAndChangesTheGeneration) {
  BundleSet set;
  const auto empty = set.generation();
  ASSERT_TRUE(set.add(bundle_of("team-a.gke.local", fx().root)));
  const auto first = set.generation();
  EXPECT_NE(first, empty);
  Bundle replacement = bundle_of("team-a.gke.local", fx().other);
  replacement.authorities.push_back(fx().root.share());
  ASSERT_TRUE(set.add(std::move(replacement)));
  EXPECT_NE(set.generation(), first);
  EXPECT_EQ(set.size(), 1u);
  EXPECT_EQ(objects_in(set.store(td("team-a.gke.local"))), 2);
}

TEST(BundleSetTest, NoTwoSetsShareAGeneration) {
  BundleSet one;
  BundleSet two;
  EXPECT_NE(one.generation(), two.generation());
}

}  // namespace
