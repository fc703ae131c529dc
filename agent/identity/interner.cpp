#include "trustfence/identity/interner.hpp"

namespace trustfence::identity {
namespace {

// FNV-1a: stable across runs and builds, unlike std::hash.
std::uint32_t fnv1a(std::string_view text) {
  std::uint32_t hash = 2166136261u;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 16777619u;
  }
  return hash;
}

}  // namespace

std::uint32_t Interner::intern(std::string_view text) {
  if (text.empty()) return 0;
  if (auto it = ids_.find(std::string(text)); it != ids_.end()) return it->second;
  if (names_.size() >= kMaxEntries) return 0;
  std::uint32_t id = fnv1a(text);
  while (id == 0 || names_.contains(id)) ++id;
  ids_.emplace(text, id);
  names_.emplace(id, text);
  if (listener_) listener_(text);
  return id;
}

std::optional<std::string> Interner::name(std::uint32_t id) const {
  auto it = names_.find(id);
  if (it == names_.end()) return std::nullopt;
  return it->second;
}

}  // namespace trustfence::identity
