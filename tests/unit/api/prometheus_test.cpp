// The Prometheus text exposition (format 0.0.4) as golden strings: families,
// escaping, histograms, values, and what a bad name does.

#include "trustfence/api/prometheus.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace trustfence::api {
namespace {

using namespace std::chrono_literals;

TEST(PrometheusExposition, GroupsFamiliesInTheOrderFirstAdded) {
  Exposition out;
  out.counter("tf_verdicts_total", "Verdicts written.", {{"verdict", "allow"}}, 12);
  out.gauge("tf_connections", "Tracked connections.", {}, 5);
  out.counter("tf_verdicts_total", "Verdicts written.", {{"verdict", "deny"}}, 3);
  out.gauge("tf_up", "", {}, true);
  EXPECT_EQ(out.text(),
            "# HELP tf_verdicts_total Verdicts written.\n"
            "# TYPE tf_verdicts_total counter\n"
            "tf_verdicts_total{verdict=\"allow\"} 12\n"
            "tf_verdicts_total{verdict=\"deny\"} 3\n"
            "# HELP tf_connections Tracked connections.\n"
            "# TYPE tf_connections gauge\n"
            "tf_connections 5\n"
            "# TYPE tf_up gauge\n"
            "tf_up 1\n");
  EXPECT_EQ(out.skipped(), 0u);
}

TEST(PrometheusExposition, EmptyWithoutSamples) { EXPECT_EQ(Exposition().text(), ""); }

TEST(PrometheusExposition, KeepsLabelOrderAndTakesRuntimeLabels) {
  std::vector<Label> labels = {{"reason", "id-denied"}, {"direction", "inbound"}};
  Exposition out;
  out.counter("tf_denials_total", "Denials.", labels, 2);
  EXPECT_EQ(out.text(),
            "# HELP tf_denials_total Denials.\n"
            "# TYPE tf_denials_total counter\n"
            "tf_denials_total{reason=\"id-denied\",direction=\"inbound\"} 2\n");
}

TEST(PrometheusExposition, EscapesLabelValuesAndHelp) {
  Exposition out;
  out.gauge("tf_peer", "Peer \"agent\" state.\nOne line per peer; C:\\ is a path.",
            {{"id", "spiffe://a/\"x\"\\y\nz"}, {"empty", ""}}, 1);
  EXPECT_EQ(out.text(),
            "# HELP tf_peer Peer \"agent\" state.\\nOne line per peer; C:\\\\ is a path.\n"
            "# TYPE tf_peer gauge\n"
            "tf_peer{id=\"spiffe://a/\\\"x\\\"\\\\y\\nz\",empty=\"\"} 1\n");
}

TEST(PrometheusExposition, EscapeLabelValueTable) {
  struct Case {
    std::string in;
    std::string out;
  };
  const Case cases[] = {
      {"plain", "plain"},
      {"a\\b", "a\\\\b"},
      {"say \"hi\"", "say \\\"hi\\\""},
      {"two\nlines", "two\\nlines"},
      {"tab\tcr\r", "tab\tcr\r"},  // only \, " and newline are escaped
      {"\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9"},
  };
  for (const auto& c : cases) EXPECT_EQ(escape_label_value(c.in), c.out) << c.in;
}

TEST(PrometheusExposition, HistogramBucketsAreCumulativeWithInf) {
  const double bounds[] = {0.5, 1, 2.5};
  const std::uint64_t counts[] = {1, 0, 2, 3};  // per bucket, last above 2.5
  Exposition out;
  out.histogram("tf_wait_seconds", "Wait.", {{"peer", "b"}}, bounds, counts, 12.75);
  out.histogram("tf_wait_seconds", "Wait.", {{"peer", "c"}}, bounds,
                std::vector<std::uint64_t>{0, 0, 0, 0}, 0);
  EXPECT_EQ(out.text(),
            "# HELP tf_wait_seconds Wait.\n"
            "# TYPE tf_wait_seconds histogram\n"
            "tf_wait_seconds_bucket{peer=\"b\",le=\"0.5\"} 1\n"
            "tf_wait_seconds_bucket{peer=\"b\",le=\"1\"} 1\n"
            "tf_wait_seconds_bucket{peer=\"b\",le=\"2.5\"} 3\n"
            "tf_wait_seconds_bucket{peer=\"b\",le=\"+Inf\"} 6\n"
            "tf_wait_seconds_sum{peer=\"b\"} 12.75\n"
            "tf_wait_seconds_count{peer=\"b\"} 6\n"
            "tf_wait_seconds_bucket{peer=\"c\",le=\"0.5\"} 0\n"
            "tf_wait_seconds_bucket{peer=\"c\",le=\"1\"} 0\n"
            "tf_wait_seconds_bucket{peer=\"c\",le=\"2.5\"} 0\n"
            "tf_wait_seconds_bucket{peer=\"c\",le=\"+Inf\"} 0\n"
            "tf_wait_seconds_sum{peer=\"c\"} 0\n"
            "tf_wait_seconds_count{peer=\"c\"} 0\n");
}

TEST(PrometheusExposition, HistogramWithOnlyTheInfBucket) {
  Exposition out;
  out.histogram("tf_h", "", {}, std::span<const double>(), std::vector<std::uint64_t>{4}, 2);
  EXPECT_EQ(out.text(),
            "# TYPE tf_h histogram\n"
            "tf_h_bucket{le=\"+Inf\"} 4\n"
            "tf_h_sum 2\n"
            "tf_h_count 4\n");
}

TEST(PrometheusExposition, ValuesAsPrometheusSpellsThem) {
  struct Case {
    SampleValue value;
    std::string text;
  };
  const Case cases[] = {
      {0, "0"},
      {-7, "-7"},
      {std::numeric_limits<std::uint64_t>::max(), "18446744073709551615"},
      {std::numeric_limits<std::int64_t>::min(), "-9223372036854775808"},
      {std::uint64_t{9007199254740993}, "9007199254740993"},  // 2^53 + 1: no double rounding
      {false, "0"},
      {1.0, "1"},
      {0.1, "0.1"},
      {12.75, "12.75"},
      {-0.5, "-0.5"},
      {0.0005, "0.0005"},  // Go's 'g' layout: fixed down to 1e-4 ...
      {0.0001, "0.0001"},
      {1e-5, "1e-05"},         // ... scientific below
      {123456.5, "123456.5"},  // fixed below 1e6 ...
      {1e6, "1e+06"},          // ... scientific from there, as Go prints it
      {1234567.0, "1.234567e+06"},
      {1e20, "1e+20"},
      {1.0 / 3, "0.3333333333333333"},  // shortest text that reads back exactly
      {std::numeric_limits<double>::max(), "1.7976931348623157e+308"},
      {std::numeric_limits<double>::infinity(), "+Inf"},
      {-std::numeric_limits<double>::infinity(), "-Inf"},
      {std::numeric_limits<double>::quiet_NaN(), "NaN"},
  };
  for (const auto& c : cases) EXPECT_EQ(c.value.str(), c.text);
}

TEST(PrometheusExposition, SpecialValuesInSamples) {
  Exposition out;
  out.gauge("tf_g", "", {{"k", "inf"}}, std::numeric_limits<double>::infinity());
  out.gauge("tf_g", "", {{"k", "-inf"}}, -std::numeric_limits<double>::infinity());
  out.gauge("tf_g", "", {{"k", "nan"}}, std::nan(""));
  EXPECT_EQ(out.text(),
            "# TYPE tf_g gauge\n"
            "tf_g{k=\"inf\"} +Inf\n"
            "tf_g{k=\"-inf\"} -Inf\n"
            "tf_g{k=\"nan\"} NaN\n");
}

TEST(PrometheusNames, MetricNameTable) {
  struct Case {
    const char* name;
    bool valid;
  };
  const Case cases[] = {
      {"tf_verdicts_total", true},
      {"_x", true},
      {":ns:rule", true},
      {"a1", true},
      {"Up", true},
      {"", false},
      {"1a", false},
      {"a-b", false},
      {"a b", false},
      {"a.b", false},
      {"é", false},
      {"a{b}", false},
      {"__reserved_ok", true},  // only label names reserve "__"
  };
  for (const auto& c : cases) EXPECT_EQ(Exposition::valid_metric_name(c.name), c.valid) << c.name;
}

TEST(PrometheusNames, LabelNameTable) {
  struct Case {
    const char* name;
    bool valid;
  };
  const Case cases[] = {
      {"verdict", true},   {"_x", true},   {"le", true},  // only histograms reserve le
      {"a1", true},        {"", false},    {"1a", false},  {"a:b", false},
      {"__name__", false}, {"__x", false}, {"a-b", false},
  };
  for (const auto& c : cases) EXPECT_EQ(Exposition::valid_label_name(c.name), c.valid) << c.name;
}

// A programming error: asserts in a debug build; in a release build the
// sample is skipped, nothing of it printed, and skipped() counts it.
TEST(PrometheusNames, ProgrammingErrorsAssertInDebugAndSkipInRelease) {
  const double bounds[] = {1, 2};
  const double unsorted[] = {2, 1};
  const double with_inf[] = {1, std::numeric_limits<double>::infinity()};
  const std::uint64_t three[] = {1, 2, 3};
  const std::uint64_t two[] = {1, 2};
  struct Case {
    const char* what;
    std::function<void(Exposition&)> add;
  };
  const Case cases[] = {
      {"bad metric name", [](Exposition& o) { o.counter("tf-x", "", {}, 1); }},
      {"bad label name",
       [](Exposition& o) {
         o.counter("tf_x", "", {{"a-b", "v"}}, 1);
       }},
      {"reserved label",
       [](Exposition& o) {
         o.counter("tf_x", "", {{"__name__", "v"}}, 1);
       }},
      {"label twice",
       [](Exposition& o) {
         o.counter("tf_x", "", {{"a", "1"}, {"a", "2"}}, 1);
       }},
      {"le on a histogram",
       [&](Exposition& o) {
         o.histogram("tf_h", "", {{"le", "1"}}, bounds, three, 0);
       }},
      {"counts not bounds + 1",
       [&](Exposition& o) { o.histogram("tf_h", "", {}, bounds, two, 0); }},
      {"bounds not increasing",
       [&](Exposition& o) { o.histogram("tf_h", "", {}, unsorted, three, 0); }},
      {"infinite bound", [&](Exposition& o) { o.histogram("tf_h", "", {}, with_inf, three, 0); }},
      {"type changed",
       [](Exposition& o) {
         o.gauge("tf_base_total", "Base.", {{"k", "b"}}, 1);
       }},
      {"help changed",
       [](Exposition& o) {
         o.counter("tf_base_total", "Other.", {{"k", "b"}}, 1);
       }},
      {"series twice",
       [](Exposition& o) {
         o.counter("tf_base_total", "Base.", {{"k", "a"}}, 2);
       }},
      {"sample name of a histogram",
       [](Exposition& o) { o.counter("tf_base_hist_count", "", {}, 1); }},
      {"histogram over a counter's samples",
       [&](Exposition& o) { o.histogram("tf_base", "", {}, bounds, three, 0); }},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    Exposition out;
    out.counter("tf_base_total", "Base.", {{"k", "a"}}, 1);
    out.histogram("tf_base_hist", "", {}, bounds, three, 0);
    out.counter("tf_base_sum", "", {}, 1);
    const std::string before = out.text();
#ifdef NDEBUG
    c.add(out);
    EXPECT_EQ(out.skipped(), 1u);
    EXPECT_EQ(out.text(), before);
    // The exposition stays usable.
    out.gauge("tf_after", "", {}, 1);
    EXPECT_EQ(out.text(), before + "# TYPE tf_after gauge\ntf_after 1\n");
#else
    EXPECT_DEATH(c.add(out), "prometheus exposition");
#endif
  }
}

TEST(PrometheusLatencyHistogram, BucketsAreInclusiveUpperBounds) {
  LatencyHistogram h;
  h.observe(250us);        // le 0.00025: bounds are inclusive
  h.observe(250us + 1ns);  // next bucket
  h.observe(-3ms);         // a stepped clock counts as zero
  h.observe(5s);           // the last finite bucket
  h.observe(5s + 1ns);     // above every bound
  h.observe(std::chrono::hours(1));
  ASSERT_EQ(h.counts().size(), LatencyHistogram::kBuckets + 1);
  EXPECT_EQ(h.counts()[0], 2u);
  EXPECT_EQ(h.counts()[1], 1u);
  EXPECT_EQ(h.counts()[LatencyHistogram::kBuckets - 1], 1u);
  EXPECT_EQ(h.counts()[LatencyHistogram::kBuckets], 2u);
  EXPECT_EQ(h.count(), 6u);
  EXPECT_EQ(h.sum(), 250us + 250us + 1ns + 5s + 5s + 1ns + std::chrono::hours(1));
}

TEST(PrometheusLatencyHistogram, SumSaturates) {
  LatencyHistogram h;
  h.observe(std::chrono::nanoseconds::max());
  h.observe(1s);
  EXPECT_EQ(h.sum(), std::chrono::nanoseconds::max());
  EXPECT_EQ(h.count(), 2u);
}

TEST(PrometheusLatencyHistogram, ExportsInSeconds) {
  LatencyHistogram h;
  h.observe(800us);
  h.observe(3ms);
  h.observe(3ms);
  h.observe(7s);
  Exposition out;
  out.histogram("tf_attestation_duration_seconds", "Attestation latency.",
                {{"direction", "outbound"}}, h);
  const std::string l = "tf_attestation_duration_seconds_bucket{direction=\"outbound\",le=";
  EXPECT_EQ(out.text(),
            "# HELP tf_attestation_duration_seconds Attestation latency.\n"
            "# TYPE tf_attestation_duration_seconds histogram\n" +
                l + "\"0.00025\"} 0\n" + l + "\"0.0005\"} 0\n" + l + "\"0.001\"} 1\n" + l +
                "\"0.002\"} 1\n" + l + "\"0.005\"} 3\n" + l + "\"0.01\"} 3\n" + l +
                "\"0.025\"} 3\n" + l + "\"0.05\"} 3\n" + l + "\"0.1\"} 3\n" + l + "\"0.25\"} 3\n" +
                l + "\"0.5\"} 3\n" + l + "\"1\"} 3\n" + l + "\"2.5\"} 3\n" + l + "\"5\"} 3\n" + l +
                "\"+Inf\"} 4\n" +
                "tf_attestation_duration_seconds_sum{direction=\"outbound\"} 7.0068\n"
                "tf_attestation_duration_seconds_count{direction=\"outbound\"} 4\n");
}

}  // namespace
}  // namespace trustfence::api
