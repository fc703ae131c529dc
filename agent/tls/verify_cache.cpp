#include "trustfence/tls/verify_cache.hpp"

#include <cstring>
#include <vector>

namespace trustfence::tls {
namespace {

const EVP_MD* sha256() {
  // Fetched once: an implicit fetch on every digest costs a lock and a lookup.
  static const EvpMdPtr md(EVP_MD_fetch(nullptr, "SHA256", nullptr));
  return md.get();
}

}  // namespace

Result<ChainFingerprint> fingerprint(const Chain& chain) {
  if (chain.empty()) return fail(Errc::kInvalidArgument, "fingerprint of an empty chain");
  thread_local std::vector<unsigned char> der;
  der.clear();
  for (const X509Ptr& cert : chain) {
    const int length = cert ? i2d_X509(cert.get(), nullptr) : -1;
    if (length <= 0) return fail(Errc::kInvalidArgument, "fingerprint: unencodable certificate");
    const std::size_t offset = der.size();
    der.resize(offset + static_cast<std::size_t>(length));
    unsigned char* cursor = der.data() + offset;
    if (i2d_X509(cert.get(), &cursor) != length) {
      return fail(Errc::kInvalidArgument, "fingerprint: unencodable certificate");
    }
  }
  ChainFingerprint digest{};
  unsigned int digest_length = 0;
  const EVP_MD* md = sha256();
  if (md == nullptr ||
      EVP_Digest(der.data(), der.size(), digest.data(), &digest_length, md, nullptr) != 1 ||
      digest_length != digest.size()) {
    return fail(Errc::kIo, "fingerprint: SHA-256 unavailable");
  }
  return digest;
}

std::size_t VerifyCache::FingerprintHash::operator()(const ChainFingerprint& key) const {
  std::size_t hash;
  std::memcpy(&hash, key.data(), sizeof hash);  // already uniformly distributed
  return hash;
}

VerifyCache::VerifyCache(const SvidVerifier& verifier, std::size_t max_entries)
    : verifier_(verifier),
      max_entries_(max_entries == 0 ? 1 : max_entries),
      generation_(verifier.bundles().generation()) {}

VerifyResult VerifyCache::verify(const Chain& chain) {
  const auto key = fingerprint(chain);
  if (!key) return verifier_.verify(chain);  // the verifier names what is wrong with it
  const auto now = verifier_.now();
  const std::uint64_t generation = verifier_.bundles().generation();
  {
    std::lock_guard lock(mutex_);
    if (generation != generation_) {
      entries_.clear();
      recency_.clear();
      generation_ = generation;
    }
    if (const auto it = entries_.find(*key); it != entries_.end()) {
      const Entry& entry = it->second;
      if (now <= entry.svid.not_after && now >= entry.verified_at) {
        recency_.splice(recency_.begin(), recency_, entry.recency);
        ++stats_.hits;
        return entry.svid;
      }
      recency_.erase(entry.recency);
      entries_.erase(it);
    }
    ++stats_.misses;
  }
  VerifyResult result = verifier_.verify(chain);
  if (result) store(*key, *result, now, generation);
  return result;
}

void VerifyCache::store(const ChainFingerprint& key, const VerifiedSvid& svid,
                        std::chrono::system_clock::time_point now, std::uint64_t generation) {
  std::lock_guard lock(mutex_);
  if (generation != generation_) return;  // the bundles changed while we verified
  if (const auto it = entries_.find(key); it != entries_.end()) {
    it->second.svid = svid;
    it->second.verified_at = now;
    return;
  }
  if (entries_.size() >= max_entries_) {
    entries_.erase(recency_.back());
    recency_.pop_back();
  }
  recency_.push_front(key);
  entries_.emplace(key, Entry{svid, now, recency_.begin()});
}

std::size_t VerifyCache::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

VerifyCache::Stats VerifyCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace trustfence::tls
