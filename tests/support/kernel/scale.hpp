#pragma once

// The connection counts of the heavy churn tests, scaled by TF_TEST_SCALE
// (a fraction in (0, 1], default 1): scripts/vm-test.sh lowers it under
// software emulation, where ten thousand attested connections would not fit
// CI's time. The test still runs, with fewer connections, and says so.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace trustfence::testing {

inline double test_scale() {
  const char* text = std::getenv("TF_TEST_SCALE");
  if (text == nullptr || *text == '\0') return 1.0;
  char* end = nullptr;
  double scale = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(scale > 0.0) || scale > 1.0) return 1.0;
  return scale;
}

// full * TF_TEST_SCALE, at least `floor`; prints the reduction when there is one.
inline int scaled_count(int full, int floor = 100) {
  const double scale = test_scale();
  if (scale >= 1.0) return full;
  int count = std::max(floor, static_cast<int>(std::lround(full * scale)));
  count = std::min(count, full);
  std::printf("[ scale    ] %d of %d connections (TF_TEST_SCALE=%g)\n", count, full, scale);
  return count;
}

}  // namespace trustfence::testing
