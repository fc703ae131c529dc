// X.509-SVID verifications per second of a leaf + intermediate chain on one
// core: SvidVerifier::verify alone (target >= 5,000/s) and through a
// VerifyCache that already holds the chain (target >= 500,000/s). The two
// variants are interleaved round by round, alternating which goes first,
// and each is reported as the median over rounds, with the ratio
// cache / no-cache. Figures, not a timed test: nothing fails on a number.
//
//   tf_bench_verify_rate [--rounds N] [--round-ms MS] [--smoke]

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "support/test_ca.hpp"
#include "trustfence/tls/bundle.hpp"
#include "trustfence/tls/svid_verifier.hpp"
#include "trustfence/tls/verify_cache.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using trustfence::test::TestCa;
using trustfence::tls::Bundle;
using trustfence::tls::BundleSet;
using trustfence::tls::Chain;
using trustfence::tls::SvidVerifier;
using trustfence::tls::VerifyCache;

constexpr double kTargetDirect = 5'000;
constexpr double kTargetCached = 500'000;

struct Options {
  int rounds = 9;
  int round_ms = 300;
};

bool parse_options(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--smoke") {
      options.rounds = 3;
      options.round_ms = 30;
    } else if ((arg == "--rounds" || arg == "--round-ms") && i + 1 < argc) {
      const int value = std::atoi(argv[++i]);
      if (value <= 0) return false;
      (arg == "--rounds" ? options.rounds : options.round_ms) = value;
    } else {
      return false;
    }
  }
  return true;
}

// Keeps the measurement on the core the process starts on.
void pin_to_current_cpu() {
  const int cpu = sched_getcpu();
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    std::fprintf(stderr, "verify_rate: cannot pin to cpu %d: %s\n", cpu, std::strerror(errno));
  }
}

// Verifications per second over about `duration`, checked in batches so
// the clock is read rarely.
template <typename Verify>
double rate(Verify&& verify, std::chrono::milliseconds duration) {
  constexpr int kBatch = 64;
  std::uint64_t done = 0;
  const auto start = Clock::now();
  const auto until = start + duration;
  auto now = start;
  do {
    for (int i = 0; i < kBatch; ++i) {
      if (!verify()) {
        std::fprintf(stderr, "verify_rate: the benchmark chain failed to verify\n");
        std::exit(1);
      }
    }
    done += kBatch;
    now = Clock::now();
  } while (now < until);
  return static_cast<double>(done) / std::chrono::duration<double>(now - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

const char* verdict(double value, double target) {
  return value >= target ? "meets it" : "MISSES it";
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (!parse_options(argc, argv, options)) {
    std::fprintf(stderr, "usage: %s [--rounds N] [--round-ms MS] [--smoke]\n", argv[0]);
    return 2;
  }
  pin_to_current_cpu();

  // A chain as a peer presents it: minted, written as PEM, parsed back.
  const TestCa root = TestCa::root("team-a.gke.local");
  const TestCa intermediate = root.intermediate("team-a intermediate");
  const auto leaf = intermediate.issue(
      trustfence::test::leaf_spec("spiffe://team-a.gke.local/ns/finance/sa/api"));
  auto chain = trustfence::tls::parse_pem_chain(leaf.pem() + intermediate.pem());
  if (!chain) {
    std::fprintf(stderr, "verify_rate: %s\n", chain.error().message.c_str());
    return 1;
  }
  BundleSet bundles;
  Chain authorities;
  authorities.push_back(root.share());
  auto added =
      bundles.add(Bundle{trustfence::identity::TrustDomain::parse("team-a.gke.local").value(),
                         std::move(authorities), std::nullopt, std::nullopt});
  if (!added) {
    std::fprintf(stderr, "verify_rate: %s\n", added.error().message.c_str());
    return 1;
  }
  const auto now = std::chrono::system_clock::now();
  const SvidVerifier verifier(bundles, [now] { return now; });
  VerifyCache cache(verifier);

  const auto direct = [&] { return verifier.verify(*chain).has_value(); };
  const auto cached = [&] { return cache.verify(*chain).has_value(); };
  const std::chrono::milliseconds round(options.round_ms);

  std::printf("== X.509-SVID verification rate, leaf + intermediate (EC P-256), one core ==\n");
  std::printf("  %d rounds of %d ms per variant, interleaved\n", options.rounds, options.round_ms);
  rate(direct, round / 4);  // warm-up: page faults, OpenSSL's lazy init
  rate(cached, round / 4);
  std::vector<double> direct_rates;
  std::vector<double> cached_rates;
  std::vector<double> ratios;
  for (int r = 0; r < options.rounds; ++r) {
    double d = 0;
    double c = 0;
    if (r % 2 == 0) {
      d = rate(direct, round);
      c = rate(cached, round);
    } else {
      c = rate(cached, round);
      d = rate(direct, round);
    }
    direct_rates.push_back(d);
    cached_rates.push_back(c);
    ratios.push_back(c / d);
    std::printf("  round %d: no cache %.0f/s, cache %.0f/s\n", r + 1, d, c);
  }
  const double direct_median = median(direct_rates);
  const double cached_median = median(cached_rates);
  std::printf("\n  %-10s %14s   %s\n", "variant", "verif/s median", "target");
  std::printf("  %-10s %14.0f   >= %.0f/s: %s\n", "no cache", direct_median, kTargetDirect,
              verdict(direct_median, kTargetDirect));
  std::printf("  %-10s %14.0f   >= %.0f/s: %s\n", "cache", cached_median, kTargetCached,
              verdict(cached_median, kTargetCached));
  std::printf("  ratio cache/no-cache: %.1fx (median of per-round ratios)\n", median(ratios));
  std::printf("  cache: %llu hits, %llu misses\n",
              static_cast<unsigned long long>(cache.stats().hits),
              static_cast<unsigned long long>(cache.stats().misses));
  return 0;
}
