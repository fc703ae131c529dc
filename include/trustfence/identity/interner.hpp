#pragma once

// SPIFFE IDs and trust domains as the small numbers the kernel stores
// (tf_conn.peer_id, tf_conn.peer_trust_domain). A number is a hash of the
// text, so it is the same across agent restarts for the entries the pinned
// maps keep; a collision moves to the next free number. 0 means none.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace trustfence::identity {

class Interner {
 public:
  // At most this many distinct strings: beyond, intern() returns 0 (shown
  // as an unknown identity) rather than grow without bound.
  static constexpr std::size_t kMaxEntries = 1 << 20;

  std::uint32_t intern(std::string_view text);
  // Called with each text interned for the first time (to persist it).
  void on_new(std::function<void(std::string_view)> listener) { listener_ = std::move(listener); }
  std::optional<std::string> name(std::uint32_t id) const;
  std::size_t size() const { return names_.size(); }

 private:
  std::unordered_map<std::string, std::uint32_t> ids_;
  std::unordered_map<std::uint32_t, std::string> names_;
  std::function<void(std::string_view)> listener_;
};

}  // namespace trustfence::identity
