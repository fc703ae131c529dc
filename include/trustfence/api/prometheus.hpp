#pragma once

// Prometheus text exposition format 0.0.4, built from values the agent
// already holds: no registry, no global state. The agent builds one
// Exposition per scrape and serves its text().
//
//   Exposition out;
//   out.counter("trustfence_verdicts_total", "Verdicts written.", {{"verdict", "allow"}}, 12);
//   out.counter("trustfence_verdicts_total", "Verdicts written.", {{"verdict", "deny"}}, 3);
//   out.gauge("trustfence_connections", "Tracked connections.", {}, 5);
//   out.histogram("trustfence_attestation_duration_seconds", "Attestation latency.", {}, latency);
//   std::string body = out.text();
//
// Families. Samples of one metric name form one family, printed as one group
// with its `# HELP` (omitted when help is empty; `\` and newline escaped) and
// `# TYPE` once, in the order the families were first added, however the
// samples were interleaved.
//
// Names. Metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
// [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__" (reserved); a histogram
// may not carry a label "le". Names come from code, not from input, so a bad
// one is a programming error: in a debug build (NDEBUG undefined) it fails an
// assert; in a release build the sample is skipped, nothing of it is printed
// and skipped() counts it. The same holds for a name reused with another
// type or help text, a series (name and label set) added twice, a histogram
// whose bounds or counts are malformed, and a family whose sample names
// collide with another's (counter `x_count` beside histogram `x`). Label
// values are free text, escaped (`\\`, `\"`, `\n`). The `_total` suffix of
// counters and the unit suffix (`_seconds`) are the caller's to choose.
//
// Values. Integers are printed exactly (every digit of a uint64); doubles in
// the shortest form that reads back as the same double, laid out as the Go
// client prints them (fixed for exponents -4..5, else scientific: "0.0005",
// "0.1", "1e-05", "1.5e+06"), so `le` values match other exporters';
// infinities and NaN as "+Inf", "-Inf" and "NaN".

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

namespace trustfence::api {

// One label of a sample. Views: they must outlive only the call they are
// passed to.
struct Label {
  std::string_view name;
  std::string_view value;
};

// The labels of one sample: `{}`, `{{"verdict", "allow"}, {"reason", "x"}}`,
// or a span/vector of Label built at run time. Does not own the labels.
class LabelList {
 public:
  LabelList() = default;
  LabelList(std::initializer_list<Label> labels) : labels_(labels.begin(), labels.size()) {}
  LabelList(std::span<const Label> labels) : labels_(labels) {}
  LabelList(const std::vector<Label>& labels) : labels_(labels) {}

  std::span<const Label> span() const { return labels_; }

 private:
  std::span<const Label> labels_;
};

// A sample value: any integer exactly, or a double.
class SampleValue {
 public:
  template <std::integral T>
  SampleValue(T value) {  // NOLINT(google-explicit-constructor): values read as numbers
    if constexpr (std::is_signed_v<T>)
      value_ = static_cast<std::int64_t>(value);
    else
      value_ = static_cast<std::uint64_t>(value);
  }
  template <std::floating_point T>
  SampleValue(T value) : value_(static_cast<double>(value)) {}  // NOLINT

  // As the exposition prints it: "42", "0.25", "+Inf", "NaN".
  std::string str() const;

 private:
  std::variant<std::int64_t, std::uint64_t, double> value_;
};

// Attestation latency as a histogram with fixed bounds, 0.25 ms to 5 s:
// from a same-node answer to a peer behind a slow WAN link. A plain value:
// the agent keeps one per thing it times and exports it with
// Exposition::histogram. Observations are counted in integer nanoseconds, so
// the bucket an observation lands in is exact.
class LatencyHistogram {
 public:
  static constexpr std::size_t kBuckets = 14;
  // Upper bounds (inclusive, `le`) of the finite buckets.
  static constexpr std::array<std::chrono::nanoseconds, kBuckets> kBounds = {
      std::chrono::microseconds(250),  std::chrono::microseconds(500),
      std::chrono::milliseconds(1),    std::chrono::milliseconds(2),
      std::chrono::milliseconds(5),    std::chrono::milliseconds(10),
      std::chrono::milliseconds(25),   std::chrono::milliseconds(50),
      std::chrono::milliseconds(100),  std::chrono::milliseconds(250),
      std::chrono::milliseconds(500),  std::chrono::milliseconds(1000),
      std::chrono::milliseconds(2500), std::chrono::milliseconds(5000)};

  // A negative duration (a clock that stepped) counts as zero.
  void observe(std::chrono::nanoseconds duration);

  // Non-cumulative: counts()[i] is the number of observations in
  // (kBounds[i-1], kBounds[i]]; the last element, index kBuckets, those above
  // the highest bound. The form Exposition::histogram takes.
  std::span<const std::uint64_t> counts() const { return counts_; }
  std::uint64_t count() const { return count_; }
  std::chrono::nanoseconds sum() const { return sum_; }  // saturates
  double sum_seconds() const;
  // kBounds in seconds, the Prometheus base unit: 0.00025 ... 5.
  static std::span<const double> bounds_seconds();

 private:
  std::array<std::uint64_t, kBuckets + 1> counts_{};
  std::uint64_t count_ = 0;
  std::chrono::nanoseconds sum_{0};
};

class Exposition {
 public:
  enum class Type { kCounter, kGauge, kHistogram };

  void counter(std::string_view name, std::string_view help, LabelList labels, SampleValue value);
  void gauge(std::string_view name, std::string_view help, LabelList labels, SampleValue value);

  // One histogram series from NON-cumulative counts: counts[i] observations
  // in (bounds[i-1], bounds[i]], counts[bounds.size()] the observations above
  // the last bound, so counts.size() == bounds.size() + 1. bounds are finite
  // and strictly increasing (the +Inf bucket is implied). Printed as
  // cumulative `name_bucket{...,le="b"}` lines ending with le="+Inf", then
  // `name_sum` and `name_count` (the total of counts).
  void histogram(std::string_view name, std::string_view help, LabelList labels,
                 std::span<const double> bounds, std::span<const std::uint64_t> counts,
                 SampleValue sum);
  // In seconds (name it `..._seconds`).
  void histogram(std::string_view name, std::string_view help, LabelList labels,
                 const LatencyHistogram& latency);

  // The exposition, every line ending in '\n'; empty without samples.
  std::string text() const;

  // Samples dropped as programming errors (release builds; see above).
  std::size_t skipped() const { return skipped_; }

  static bool valid_metric_name(std::string_view name);
  static bool valid_label_name(std::string_view name);

 private:
  struct Family {
    std::string name;
    std::string help;
    Type type;
    std::string samples;                     // rendered lines
    std::unordered_set<std::string> series;  // canonical label sets seen
  };

  // The family to append a sample to, or nullptr (and skipped_ counted) when
  // the sample is a programming error.
  Family* accept(std::string_view name, std::string_view help, Type type, LabelList labels,
                 std::string& rendered_labels);
  void reject(std::string_view why);

  std::vector<Family> families_;
  std::unordered_map<std::string, std::size_t> index_;  // family name -> families_
  // Every name a sample line may start with (x, or x_bucket, x_sum and
  // x_count for a histogram x), so two families cannot print the same one.
  std::unordered_set<std::string> sample_names_;
  std::size_t skipped_ = 0;
};

std::string_view to_string(Exposition::Type type);

// `\` `"` and newline escaped, as a label value is written between quotes.
std::string escape_label_value(std::string_view value);

}  // namespace trustfence::api
