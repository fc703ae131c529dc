#pragma once

// Tests that need root skip without it, except in CI (CI=true), where a
// missing privilege is a failure: the tiers must really run there.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

namespace trustfence::testing {

inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string_view(ci) == "true";
}

}  // namespace trustfence::testing

#define TF_REQUIRE_ROOT()                                                 \
  do {                                                                    \
    if (::geteuid() != 0) {                                               \
      if (::trustfence::testing::in_ci()) FAIL() << "CI=true needs root"; \
      GTEST_SKIP() << "needs root (set CI=true to make this a failure)";  \
    }                                                                     \
  } while (0)
