#include "trustfence/common/verdict.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace {

using trustfence::reason_from_byte;
using trustfence::reason_from_string;
using trustfence::to_string;
using trustfence::verdict_from_byte;
using trustfence::verdict_from_string;

template <typename Enum>
struct Named {
  Enum value;
  std::string_view name;
};

// The names are a contract (DESIGN.md: API, metrics, `conns --json`).
const std::vector<Named<tf_verdict>> kVerdicts = {
    {TF_VERDICT_PENDING, "pending"}, {TF_VERDICT_ALLOW, "allow"}, {TF_VERDICT_DENY, "deny"}};

const std::vector<Named<tf_reason>> kReasons = {
    {TF_REASON_NONE, "none"},
    {TF_REASON_LOCAL_DOMAIN, "local-domain"},
    {TF_REASON_ALIAS_DOMAIN, "alias-domain"},
    {TF_REASON_ALLOWED_ID, "allowed-id"},
    {TF_REASON_PLAINTEXT_PERMISSIVE, "plaintext-permissive"},
    {TF_REASON_EXEMPT, "exempt"},
    {TF_REASON_DOMAIN_NOT_ALLOWED, "domain-not-allowed"},
    {TF_REASON_ID_DENIED, "id-denied"},
    {TF_REASON_BAD_CHAIN, "bad-chain"},
    {TF_REASON_EXPIRED, "expired"},
    {TF_REASON_INVALID_SVID, "invalid-svid"},
    {TF_REASON_NO_BUNDLE, "no-bundle"},
    {TF_REASON_NO_PEER_AGENT, "no-peer-agent"},
    {TF_REASON_ATTESTATION_TIMEOUT, "attestation-timeout"},
    {TF_REASON_REVOKED, "revoked"},
    {TF_REASON_PENDING, "pending"},
    {TF_REASON_UNTRACKED, "untracked"},
    {TF_REASON_TABLE_FULL, "table-full"},
};

const std::vector<Named<tf_direction>> kDirections = {{TF_DIRECTION_OUTBOUND, "outbound"},
                                                      {TF_DIRECTION_INBOUND, "inbound"}};

// Every value of enum E from 0 to count-1, with its name.
template <typename E>
std::vector<std::string_view> names_of_all(int count) {
  std::vector<std::string_view> names;
  for (int i = 0; i < count; ++i) names.push_back(to_string(static_cast<E>(i)));
  return names;
}

void expect_distinct_and_known(const std::vector<std::string_view>& names, const char* what) {
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < names.size(); ++i) {
    EXPECT_FALSE(names[i].empty()) << what << " " << i << " has an empty name";
    EXPECT_NE(names[i], "unknown") << what << " " << i << " has no name";
    EXPECT_TRUE(seen.insert(names[i]).second) << what << " name '" << names[i] << "' repeats";
  }
}

TEST(VerdictNames, EveryVerdictHasItsContractName) {
  ASSERT_EQ(kVerdicts.size(), static_cast<std::size_t>(TF_VERDICT_COUNT));
  for (const auto& [value, name] : kVerdicts) EXPECT_EQ(to_string(value), name);
}

TEST(VerdictNames, EveryReasonHasItsContractName) {
  ASSERT_EQ(kReasons.size(), static_cast<std::size_t>(TF_REASON_COUNT));
  for (const auto& [value, name] : kReasons) EXPECT_EQ(to_string(value), name);
}

TEST(VerdictNames, EveryDirectionHasItsContractName) {
  for (const auto& [value, name] : kDirections) EXPECT_EQ(to_string(value), name);
  EXPECT_EQ(to_string(static_cast<tf_direction>(0)), "unknown");
  EXPECT_EQ(to_string(static_cast<tf_direction>(3)), "unknown");
}

TEST(VerdictNames, EveryEnumValueHasADistinctName) {
  expect_distinct_and_known(names_of_all<tf_verdict>(TF_VERDICT_COUNT), "tf_verdict");
  expect_distinct_and_known(names_of_all<tf_reason>(TF_REASON_COUNT), "tf_reason");
  expect_distinct_and_known(names_of_all<tf_action>(TF_ACTION_COUNT), "tf_action");
  expect_distinct_and_known(names_of_all<tf_counter>(TF_COUNTER_COUNT), "tf_counter");
  expect_distinct_and_known(names_of_all<tf_packet_dir>(TF_PACKET_DIR_COUNT), "tf_packet_dir");
}

TEST(VerdictNames, ValuesPastTheEndAreUnknown) {
  EXPECT_EQ(to_string(static_cast<tf_verdict>(TF_VERDICT_COUNT)), "unknown");
  EXPECT_EQ(to_string(static_cast<tf_reason>(TF_REASON_COUNT)), "unknown");
  EXPECT_EQ(to_string(static_cast<tf_action>(TF_ACTION_COUNT)), "unknown");
  EXPECT_EQ(to_string(static_cast<tf_counter>(TF_COUNTER_COUNT)), "unknown");
  EXPECT_EQ(to_string(static_cast<tf_packet_dir>(TF_PACKET_DIR_COUNT)), "unknown");
  EXPECT_EQ(to_string(static_cast<tf_reason>(255)), "unknown");
}

TEST(VerdictNames, EveryReasonRoundTripsThroughItsName) {
  for (int i = 0; i < TF_REASON_COUNT; ++i) {
    auto reason = static_cast<tf_reason>(i);
    EXPECT_EQ(reason_from_string(to_string(reason)), reason) << to_string(reason);
  }
}

TEST(VerdictNames, EveryVerdictRoundTripsThroughItsName) {
  for (int i = 0; i < TF_VERDICT_COUNT; ++i) {
    auto verdict = static_cast<tf_verdict>(i);
    EXPECT_EQ(verdict_from_string(to_string(verdict)), verdict) << to_string(verdict);
  }
}

TEST(VerdictNames, NamesThatAreNotInTheSetAreRejected) {
  for (std::string_view name : {"", "unknown", "ALLOW", "allow ", "Allow", "accept", "allowed"})
    EXPECT_EQ(verdict_from_string(name), std::nullopt) << "'" << name << "'";
  for (std::string_view name :
       {"", "unknown", "LOCAL-DOMAIN", "local_domain", "local-domain ", "spoof", "bad-chain\n"})
    EXPECT_EQ(reason_from_string(name), std::nullopt) << "'" << name << "'";
}

TEST(VerdictBytes, InRangeBytesBecomeTheirEnumValue) {
  for (unsigned b = 0; b < TF_VERDICT_COUNT; ++b)
    EXPECT_EQ(verdict_from_byte(b), static_cast<tf_verdict>(b));
  for (unsigned b = 0; b < TF_REASON_COUNT; ++b)
    EXPECT_EQ(reason_from_byte(b), static_cast<tf_reason>(b));
}

TEST(VerdictBytes, OutOfRangeBytesAreRejected) {
  for (unsigned b : {unsigned{TF_VERDICT_COUNT}, 4u, 0x7fu, 0xffu, 0x100u, ~0u})
    EXPECT_EQ(verdict_from_byte(b), std::nullopt) << b;
  for (unsigned b : {unsigned{TF_REASON_COUNT}, 19u, 0x7fu, 0xffu, 0x100u, ~0u})
    EXPECT_EQ(reason_from_byte(b), std::nullopt) << b;
}

}  // namespace
