#pragma once

// The results files every benchmark scenario writes (bench/results/*.json,
// read by bench/report/report.py):
//
//   {"scenario": NAME, "date": ISO-8601 UTC, "machine": {"cpu", "cores",
//    "kernel", "memory", "load_start", "load_end"}, "repetitions": N,
//    "metrics": [{"name", "unit", "baseline": SPREAD|null, "value": SPREAD,
//                 "ratio": SPREAD|null, "delta": SPREAD|null,
//                 "target": TEXT|null, "met": bool|null}], ...}
//
// SPREAD is {"median", "min", "max", "reps": [one value per repetition]}.
// The ratio and delta are taken repetition by repetition (value[i] /
// baseline[i], value[i] - baseline[i]): the pair ran back to back.

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "trustfence/common/result.hpp"

namespace trustfence::bench {

struct Metric {
  std::string name;
  std::string unit;
  std::vector<double> baseline;  // one per repetition; empty: no baseline
  std::vector<double> value;     // one per repetition
  std::optional<std::string> target = std::nullopt;
  std::optional<bool> met = std::nullopt;
  // The figure over all repetitions' samples pooled (percentiles), which
  // then stands in for the median of the per-repetition values.
  std::optional<double> pooled_baseline = std::nullopt;
  std::optional<double> pooled_value = std::nullopt;
};

// CPU model, cores, kernel, memory and load average, as the report states them.
nlohmann::json machine_json();
// Adds "load_end" to a machine_json() taken at the start.
void finish_machine_json(nlohmann::json& machine);
nlohmann::json spread_json(const std::vector<double>& reps);
nlohmann::json metric_json(const Metric& metric);
// The document without "metrics", which the caller adds metric by metric.
nlohmann::json scenario_json(const std::string& scenario, std::uint64_t repetitions);
// Writes it (pretty-printed) through a temporary file and a rename.
Result<void> write_json(const std::string& path, const nlohmann::json& document);

}  // namespace trustfence::bench
