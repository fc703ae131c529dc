#pragma once

// A cache of chains already verified, in front of an SvidVerifier: a chain
// presented again (same DER, byte for byte) is answered without OpenSSL.
//  - keyed by the SHA-256 of the chain's DER, leaf first;
//  - only successes are kept: a failure is verified again every time (a
//    not-yet-valid chain becomes valid, a missing bundle appears);
//  - an entry is never served past the earliest notAfter of its verified
//    path, nor when the clock went back before its verification;
//  - a change of the bundle set (its generation) empties the cache;
//  - at most max_entries entries, the least recently used evicted first.
// Thread-safe; verification itself runs outside the lock.

#include <array>
#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <unordered_map>

#include "trustfence/tls/openssl.hpp"
#include "trustfence/tls/svid_verifier.hpp"

namespace trustfence::tls {

using ChainFingerprint = std::array<unsigned char, 32>;

// SHA-256 over the DER of every certificate, leaf first.
Result<ChainFingerprint> fingerprint(const Chain& chain);

class VerifyCache {
 public:
  static constexpr std::size_t kMaxEntries = 4096;

  struct Stats {
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
  };

  explicit VerifyCache(const SvidVerifier& verifier, std::size_t max_entries = kMaxEntries);

  VerifyResult verify(const Chain& chain);

  std::size_t size() const;
  Stats stats() const;

 private:
  struct FingerprintHash {
    std::size_t operator()(const ChainFingerprint& key) const;
  };
  struct Entry {
    VerifiedSvid svid;
    std::chrono::system_clock::time_point verified_at;
    std::list<ChainFingerprint>::iterator recency;
  };

  void store(const ChainFingerprint& key, const VerifiedSvid& svid,
             std::chrono::system_clock::time_point now, std::uint64_t generation);

  const SvidVerifier& verifier_;
  const std::size_t max_entries_;
  mutable std::mutex mutex_;
  std::uint64_t generation_;
  std::unordered_map<ChainFingerprint, Entry, FingerprintHash> entries_;
  std::list<ChainFingerprint> recency_;  // most recent first
  Stats stats_;
};

}  // namespace trustfence::tls
