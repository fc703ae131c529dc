#pragma once

// How much slower than a development machine this one does work, from
// TF_TEST_SLOWDOWN (a factor >= 1, default 1): scripts/vm-test.sh sets it
// under software emulation (TCG), where an agent takes seconds to start.
// Only deadlines that model the time a machine needs to do something
// (an agent to come back and attest, a reload to land, a process to end)
// are scaled with it; never a duration whose value a test asserts.

#include <chrono>
#include <cstdlib>

namespace trustfence::testing::e2e {

inline double test_slowdown() {
  const char* text = std::getenv("TF_TEST_SLOWDOWN");
  if (text == nullptr || *text == '\0') return 1.0;
  char* end = nullptr;
  double factor = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(factor >= 1.0) || factor > 100.0) return 1.0;
  return factor;
}

// duration * TF_TEST_SLOWDOWN, in milliseconds.
template <typename Rep, typename Period>
std::chrono::milliseconds slowed(std::chrono::duration<Rep, Period> duration) {
  auto ms = std::chrono::duration<double, std::milli>(duration).count() * test_slowdown();
  return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(ms));
}

}  // namespace trustfence::testing::e2e
