#include "results.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>

#include "support.hpp"

namespace trustfence::bench {
namespace {

std::string first_value(const char* path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) != 0) continue;
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    return value;
  }
  return "unknown";
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

std::string utc_now() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// JSON has no NaN or infinity: a ratio over a zero baseline is null.
nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

}  // namespace

nlohmann::json machine_json() {
  utsname u{};
  ::uname(&u);
  std::string memory = first_value("/proc/meminfo", "MemTotal");
  if (auto kb = std::strtoull(memory.c_str(), nullptr, 10); kb > 0) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(kb) / (1024.0 * 1024.0));
    memory = buf;
  }
  return {{"cpu", first_value("/proc/cpuinfo", "model name")},
          {"cores", ::sysconf(_SC_NPROCESSORS_ONLN)},
          {"kernel", std::string(u.release)},
          {"memory", memory},
          {"load_start", load_average()}};
}

void finish_machine_json(nlohmann::json& machine) { machine["load_end"] = load_average(); }

nlohmann::json spread_json(const std::vector<double>& reps) {
  if (reps.empty()) return nullptr;
  Spread s = spread(reps);
  nlohmann::json all = nlohmann::json::array();
  for (double v : reps) all.push_back(number(v));
  return {
      {"median", number(s.median)}, {"min", number(s.min)}, {"max", number(s.max)}, {"reps", all}};
}

nlohmann::json metric_json(const Metric& m) {
  nlohmann::json out = {{"name", m.name}, {"unit", m.unit}};
  out["baseline"] = spread_json(m.baseline);
  out["value"] = spread_json(m.value);
  std::vector<double> ratios, deltas;
  if (m.baseline.size() == m.value.size()) {
    for (std::size_t i = 0; i < m.value.size(); ++i) {
      ratios.push_back(m.baseline[i] != 0 ? m.value[i] / m.baseline[i] : NAN);
      deltas.push_back(m.value[i] - m.baseline[i]);
    }
  }
  ratios.erase(std::remove_if(ratios.begin(), ratios.end(), [](double r) { return std::isnan(r); }),
               ratios.end());
  out["ratio"] = spread_json(ratios);
  out["delta"] = spread_json(deltas);
  if (m.pooled_value) {
    out["value"]["median"] = number(*m.pooled_value);
    out["value"]["pooled"] = true;
    if (m.pooled_baseline && !out["baseline"].is_null()) {
      out["baseline"]["median"] = number(*m.pooled_baseline);
      out["baseline"]["pooled"] = true;
      if (!out["ratio"].is_null() && *m.pooled_baseline != 0)
        out["ratio"]["median"] = number(*m.pooled_value / *m.pooled_baseline);
      if (!out["delta"].is_null()) out["delta"]["median"] = *m.pooled_value - *m.pooled_baseline;
    }
  }
  out["target"] = m.target ? nlohmann::json(*m.target) : nlohmann::json();
  out["met"] = m.met ? nlohmann::json(*m.met) : nlohmann::json();
  return out;
}

nlohmann::json scenario_json(const std::string& scenario, std::uint64_t repetitions) {
  return {{"scenario", scenario},
          {"date", utc_now()},
          {"machine", machine_json()},
          {"repetitions", repetitions},
          {"metrics", nlohmann::json::array()}};
}

Result<void> write_json(const std::string& path, const nlohmann::json& document) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) return fail_errno("writing " + tmp, errno);
    out << document.dump(2) << "\n";
    if (!out) return fail_errno("writing " + tmp, errno);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return fail_errno("renaming " + tmp, errno);
  return {};
}

}  // namespace trustfence::bench
