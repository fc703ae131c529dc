#include "trustfence/datapath/netns.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using trustfence::datapath::current_netns;
using trustfence::datapath::parse_pids;

struct PidsCase {
  const char* name;
  std::string text;
  std::size_t max;
  std::vector<pid_t> want;
};

class ParsePidsTest : public ::testing::TestWithParam<PidsCase> {};

TEST_P(ParsePidsTest, ReadsWholeLinesOfPositivePids) {
  const auto& c = GetParam();
  EXPECT_EQ(parse_pids(c.text, c.max), c.want);
}

INSTANTIATE_TEST_SUITE_P(
    CgroupProcs, ParsePidsTest,
    ::testing::Values(PidsCase{"Empty", "", 64, {}},
                      PidsCase{"Some", "1\n42\n31337\n", 64, {1, 42, 31337}},
                      PidsCase{"CappedAtMax", "1\n2\n3\n4\n", 2, {1, 2}},
                      // A bounded read may stop mid-line: that pid is not whole.
                      PidsCase{"LastLineCutShort", "7\n8\n12", 64, {7, 8}},
                      PidsCase{"Junk", "x\n-3\n0\n5 \n 6\n\n9\n", 64, {9}},
                      PidsCase{"Overflow", "99999999999999999999\n10\n", 64, {10}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(CurrentNetns, IsThisProcessNetns) {
  auto here = current_netns();
  ASSERT_TRUE(here.has_value()) << here.error().message;
  EXPECT_NE(*here, 0u);
}

}  // namespace
