// SPIFFE IDs and trust domains as the small numbers the kernel stores: a
// hash of the text, so the same across agent restarts.

#include "trustfence/identity/interner.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace trustfence::identity {
namespace {

// The reference FNV-1a: the ids are this hash of the text.
std::uint32_t fnv1a(std::string_view text) {
  std::uint32_t hash = 2166136261u;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 16777619u;
  }
  return hash;
}

// Two texts of one FNV-1a hash, found by a birthday search over random
// hex names (mt19937_64 seeded 1, after 66681 tries).
constexpr const char* kCollidingA = "spiffe://team-a.gke.local/w/8990aa778e356338";
constexpr const char* kCollidingB = "spiffe://team-a.gke.local/w/133fe8ec3ddf3d56";

TEST(Interner, EmptyTextIsZeroAndNotStored) {
  Interner interner;
  EXPECT_EQ(interner.intern(""), 0u);
  EXPECT_EQ(interner.size(), 0u);
  EXPECT_EQ(interner.name(0), std::nullopt);
}

TEST(Interner, SameTextSameIdAndNameRoundTrips) {
  Interner interner;
  const std::string texts[] = {
      "spiffe://team-a.gke.local/ns/web/sa/curl",
      "spiffe://team-a.gke.local/ns/web/sa/curl2",
      "spiffe://team-b.eks.local/ns/web/sa/curl",
      "team-a.gke.local",
      "team-b.eks.local",
      "x",
  };
  std::set<std::uint32_t> ids;
  for (const auto& text : texts) {
    const std::uint32_t id = interner.intern(text);
    EXPECT_NE(id, 0u) << text;
    EXPECT_EQ(interner.intern(text), id) << text;
    EXPECT_EQ(interner.intern(std::string_view(text)), id) << text;
    EXPECT_EQ(interner.name(id), text);
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), std::size(texts)) << "distinct texts, distinct ids";
  EXPECT_EQ(interner.size(), std::size(texts));
}

TEST(Interner, UnknownIdHasNoName) {
  Interner interner;
  const std::uint32_t id = interner.intern("spiffe://team-a.gke.local/ns/web/sa/curl");
  EXPECT_EQ(interner.name(id + 1), std::nullopt);
  EXPECT_EQ(interner.name(0), std::nullopt);
}

// The kernel's pinned maps outlive the agent: a restarted agent must give
// the same text the same number, whatever order it sees texts in.
TEST(Interner, IdsAreAStableHashAcrossInstancesAndOrders) {
  const std::string texts[] = {"spiffe://team-a.gke.local/ns/web/sa/curl",
                               "spiffe://team-b.eks.local/node/agent-2", "team-a.gke.local"};
  Interner first;
  Interner second;
  for (const auto& text : texts) first.intern(text);
  for (auto it = std::rbegin(texts); it != std::rend(texts); ++it) second.intern(*it);
  for (const auto& text : texts) {
    EXPECT_EQ(first.intern(text), second.intern(text)) << text;
    EXPECT_EQ(first.intern(text), fnv1a(text)) << text;
  }
  // Pinned values (FNV-1a 32), so a change of hash shows up here.
  Interner fresh;
  EXPECT_EQ(fresh.intern("a"), 0xe40c292cu);
  EXPECT_EQ(fresh.intern("foobar"), 0xbf9cf968u);
}

TEST(Interner, ACollisionMovesToTheNextFreeNumber) {
  const std::string a = kCollidingA;
  const std::string b = kCollidingB;
  const std::uint32_t hash = fnv1a(a);
  ASSERT_EQ(fnv1a(b), hash);
  ASSERT_NE(hash + 1, 0u);

  Interner interner;
  EXPECT_EQ(interner.intern(a), hash);
  EXPECT_EQ(interner.intern(b), hash + 1);
  EXPECT_EQ(interner.intern(a), hash);
  EXPECT_EQ(interner.intern(b), hash + 1);
  EXPECT_EQ(interner.name(hash), a);
  EXPECT_EQ(interner.name(hash + 1), b);

  // First come, first served: the other order swaps the numbers.
  Interner reversed;
  EXPECT_EQ(reversed.intern(b), hash);
  EXPECT_EQ(reversed.intern(a), hash + 1);
}

// A million entries: the slowest test here (seconds), the cap being a
// constant.
TEST(Interner, BeyondTheCapNewTextsGetZero) {
  Interner interner;
  std::size_t zeros = 0;
  for (std::size_t i = 0; i < Interner::kMaxEntries; ++i)
    zeros += interner.intern("w/" + std::to_string(i)) == 0;
  ASSERT_EQ(zeros, 0u);
  ASSERT_EQ(interner.size(), Interner::kMaxEntries);

  EXPECT_EQ(interner.intern("spiffe://team-a.gke.local/one/too/many"), 0u);
  EXPECT_EQ(interner.size(), Interner::kMaxEntries);
  // Texts already known keep their numbers.
  const std::uint32_t known = interner.intern("w/0");
  EXPECT_NE(known, 0u);
  EXPECT_EQ(interner.name(known), "w/0");
  const std::string last = "w/" + std::to_string(Interner::kMaxEntries - 1);
  EXPECT_EQ(interner.name(interner.intern(last)), last);
}

}  // namespace
}  // namespace trustfence::identity
