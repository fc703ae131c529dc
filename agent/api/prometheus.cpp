#include "trustfence/api/prometheus.hpp"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

namespace trustfence::api {
namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string escape_help(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  return b > std::numeric_limits<std::uint64_t>::max() - a
             ? std::numeric_limits<std::uint64_t>::max()
             : a + b;
}

// `{a="1",b="2"}` in the caller's order, or "" without labels; extra (the
// histogram's le) goes last.
std::string render_labels(std::span<const Label> labels, std::string_view extra_name = {},
                          std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return {};
  std::string out = "{";
  auto append = [&out](std::string_view name, std::string_view value) {
    if (out.size() > 1) out += ',';
    out.append(name);
    out += "=\"";
    out += escape_label_value(value);
    out += '"';
  };
  for (const Label& label : labels) append(label.name, label.value);
  if (!extra_name.empty()) append(extra_name, extra_value);
  out += '}';
  return out;
}

// The label set independent of the order it was given in, to find a series
// added twice.
std::string canonical_series(std::span<const Label> labels) {
  std::vector<Label> sorted(labels.begin(), labels.end());
  std::ranges::sort(sorted, {}, &Label::name);
  return render_labels(sorted);
}

void append_sample(std::string& out, std::string_view name, std::string_view suffix,
                   std::string_view labels, const SampleValue& value) {
  out.append(name);
  out.append(suffix);
  out.append(labels);
  out += ' ';
  out += value.str();
  out += '\n';
}

// The shortest text that reads back as d, laid out as Go's
// strconv.FormatFloat(d, 'g', -1, 64), which the Prometheus client libraries
// print with: fixed for exponents -4..5 ("0.0005", "123456.5"), otherwise
// scientific ("1e-05", "1.234567e+06"). The same bound then prints as the
// same `le` label value whichever client wrote it.
std::string format_double(double d) {
  char buf[64];
  auto sci = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string_view text(buf, static_cast<std::size_t>(sci.ptr - buf));
  int exponent = 0;
  std::string_view digits = text.substr(text.find('e') + 1);
  if (digits.front() == '+') digits.remove_prefix(1);
  std::from_chars(digits.data(), digits.data() + digits.size(), exponent);
  if (exponent < -4 || exponent >= 6) return std::string(text);
  auto fixed = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::fixed);
  return std::string(buf, fixed.ptr);
}

constexpr std::array<double, LatencyHistogram::kBuckets> kBoundsSeconds = [] {
  std::array<double, LatencyHistogram::kBuckets> seconds{};
  for (std::size_t i = 0; i < seconds.size(); ++i)
    seconds[i] = static_cast<double>(LatencyHistogram::kBounds[i].count()) / 1e9;
  return seconds;
}();

}  // namespace

std::string SampleValue::str() const {
  char buf[64];
  std::to_chars_result result{};
  if (const auto* i = std::get_if<std::int64_t>(&value_)) {
    result = std::to_chars(buf, buf + sizeof(buf), *i);
  } else if (const auto* u = std::get_if<std::uint64_t>(&value_)) {
    result = std::to_chars(buf, buf + sizeof(buf), *u);
  } else {
    double d = std::get<double>(value_);
    if (std::isnan(d)) return "NaN";
    if (std::isinf(d)) return d > 0 ? "+Inf" : "-Inf";
    return format_double(d);
  }
  return std::string(buf, result.ptr);
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string_view to_string(Exposition::Type type) {
  switch (type) {
    case Exposition::Type::kCounter:
      return "counter";
    case Exposition::Type::kGauge:
      return "gauge";
    case Exposition::Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void LatencyHistogram::observe(std::chrono::nanoseconds duration) {
  if (duration.count() < 0) duration = std::chrono::nanoseconds(0);
  auto bucket = std::ranges::lower_bound(kBounds, duration) - kBounds.begin();
  ++counts_[static_cast<std::size_t>(bucket)];
  ++count_;
  auto room = std::chrono::nanoseconds::max() - sum_;
  sum_ = duration > room ? std::chrono::nanoseconds::max() : sum_ + duration;
}

double LatencyHistogram::sum_seconds() const { return static_cast<double>(sum_.count()) / 1e9; }

std::span<const double> LatencyHistogram::bounds_seconds() { return kBoundsSeconds; }

bool Exposition::valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  if (!is_alpha(name[0]) && name[0] != '_' && name[0] != ':') return false;
  return std::ranges::all_of(
      name, [](char c) { return is_alpha(c) || is_digit(c) || c == '_' || c == ':'; });
}

bool Exposition::valid_label_name(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  if (!is_alpha(name[0]) && name[0] != '_') return false;
  return std::ranges::all_of(name, [](char c) { return is_alpha(c) || is_digit(c) || c == '_'; });
}

void Exposition::reject([[maybe_unused]] std::string_view why) {
  ++skipped_;
#ifndef NDEBUG
  std::fprintf(stderr, "prometheus exposition: %.*s\n", static_cast<int>(why.size()), why.data());
  assert(!"prometheus exposition: programming error (see the line above)");
#endif
}

Exposition::Family* Exposition::accept(std::string_view name, std::string_view help, Type type,
                                       LabelList labels, std::string& rendered_labels) {
  const std::string metric(name);
  if (!valid_metric_name(name)) {
    reject("invalid metric name '" + metric + "'");
    return nullptr;
  }
  for (const Label& label : labels.span()) {
    if (!valid_label_name(label.name) || (type == Type::kHistogram && label.name == "le")) {
      reject(metric + ": invalid label name '" + std::string(label.name) + "'");
      return nullptr;
    }
  }
  std::string series = canonical_series(labels.span());
  for (std::size_t i = 1; i < labels.span().size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (labels.span()[i].name == labels.span()[j].name) {
        reject(metric + ": label '" + std::string(labels.span()[i].name) + "' given twice");
        return nullptr;
      }
    }
  }

  Family* family = nullptr;
  if (auto it = index_.find(metric); it != index_.end()) {
    family = &families_[it->second];
    if (family->type != type || family->help != help) {
      reject(metric + ": added again with another type or help");
      return nullptr;
    }
  } else {
    std::vector<std::string> names;
    if (type == Type::kHistogram)
      names = {metric + "_bucket", metric + "_sum", metric + "_count"};
    else
      names = {metric};
    for (const auto& sample_name : names) {
      if (sample_names_.contains(sample_name)) {
        reject(metric + ": sample name " + sample_name + " already printed by another family");
        return nullptr;
      }
    }
    if (sample_names_.contains(metric)) {  // a histogram x after a counter x
      reject(metric + ": already the name of another family's samples");
      return nullptr;
    }
    sample_names_.insert(names.begin(), names.end());
    sample_names_.insert(metric);
    index_.emplace(metric, families_.size());
    family = &families_.emplace_back(Family{metric, std::string(help), type, {}, {}});
  }
  if (!family->series.insert(series).second) {
    reject(metric + series + ": series added twice");
    return nullptr;
  }
  rendered_labels = render_labels(labels.span());
  return family;
}

void Exposition::counter(std::string_view name, std::string_view help, LabelList labels,
                         SampleValue value) {
  std::string rendered;
  if (Family* family = accept(name, help, Type::kCounter, labels, rendered))
    append_sample(family->samples, name, "", rendered, value);
}

void Exposition::gauge(std::string_view name, std::string_view help, LabelList labels,
                       SampleValue value) {
  std::string rendered;
  if (Family* family = accept(name, help, Type::kGauge, labels, rendered))
    append_sample(family->samples, name, "", rendered, value);
}

void Exposition::histogram(std::string_view name, std::string_view help, LabelList labels,
                           std::span<const double> bounds, std::span<const std::uint64_t> counts,
                           SampleValue sum) {
  // Checked before accept(), so a malformed histogram claims no family.
  if (counts.size() != bounds.size() + 1) {
    reject(std::string(name) + ": " + std::to_string(counts.size()) + " counts for " +
           std::to_string(bounds.size()) + " bounds (want bounds + 1)");
    return;
  }
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
      reject(std::string(name) + ": bounds must be finite and strictly increasing");
      return;
    }
  }
  std::string rendered;
  Family* family = accept(name, help, Type::kHistogram, labels, rendered);
  if (family == nullptr) return;
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= bounds.size(); ++i) {
    cumulative = saturating_add(cumulative, counts[i]);
    std::string le = i < bounds.size() ? SampleValue(bounds[i]).str() : "+Inf";
    append_sample(family->samples, name, "_bucket", render_labels(labels.span(), "le", le),
                  cumulative);
  }
  append_sample(family->samples, name, "_sum", rendered, sum);
  append_sample(family->samples, name, "_count", rendered, cumulative);
}

void Exposition::histogram(std::string_view name, std::string_view help, LabelList labels,
                           const LatencyHistogram& latency) {
  histogram(name, help, labels, LatencyHistogram::bounds_seconds(), latency.counts(),
            latency.sum_seconds());
}

std::string Exposition::text() const {
  std::string out;
  for (const Family& family : families_) {
    if (!family.help.empty()) {
      out += "# HELP ";
      out += family.name;
      out += ' ';
      out += escape_help(family.help);
      out += '\n';
    }
    out += "# TYPE ";
    out += family.name;
    out += ' ';
    out += to_string(family.type);
    out += '\n';
    out += family.samples;
  }
  return out;
}

}  // namespace trustfence::api
