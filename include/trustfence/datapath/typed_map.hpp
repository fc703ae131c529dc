#pragma once

// Typed access to a BPF map: keys and values are ABI structs, never void*.
// A TypedMap owns its own descriptor (a dup of the skeleton's, or one
// opened from a pin), so it outlives neither more nor less than it should.

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>

#include <cerrno>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"

namespace trustfence::datapath {

enum class Update : unsigned long long {
  kAny = BPF_ANY,
  kCreateOnly = BPF_NOEXIST,
  kExistingOnly = BPF_EXIST,
};

// Properties of a map as the kernel reports them.
struct MapInfo {
  unsigned type = 0;
  unsigned key_size = 0;
  unsigned value_size = 0;
  unsigned max_entries = 0;
  std::string name;
};

Result<MapInfo> map_info(int fd);
Result<UniqueFd> dup_fd(int fd, std::string_view what);
Result<UniqueFd> open_pinned(const std::string& path);

// A map checked once, on construction, to have the key and value sizes of
// K and V; after that every access is typed.
template <typename K, typename V>
class TypedMap {
  static_assert(std::is_trivially_copyable_v<K> && std::is_trivially_copyable_v<V>);

 public:
  static Result<TypedMap> adopt(UniqueFd fd, std::string name) {
    auto info = map_info(fd.get());
    if (!info) return std::unexpected(info.error());
    if (info->key_size != sizeof(K) || info->value_size != sizeof(V)) {
      return fail(Errc::kIncompatible,
                  "map " + name + " has key/value size " + std::to_string(info->key_size) + "/" +
                      std::to_string(info->value_size) + ", expected " + std::to_string(sizeof(K)) +
                      "/" + std::to_string(sizeof(V)));
    }
    return TypedMap(std::move(fd), std::move(name), info->max_entries);
  }
  static Result<TypedMap> borrow(const bpf_map* map) {
    auto fd = dup_fd(bpf_map__fd(map), bpf_map__name(map));
    if (!fd) return std::unexpected(fd.error());
    return adopt(std::move(*fd), bpf_map__name(map));
  }

  Result<std::optional<V>> lookup(const K& key) const {
    V value{};
    if (bpf_map_lookup_elem(fd_.get(), &key, &value) == 0) return value;
    if (errno == ENOENT) return std::optional<V>{};
    return fail_errno("lookup in " + name_, errno);
  }

  Result<void> update(const K& key, const V& value, Update flag = Update::kAny) {
    if (bpf_map_update_elem(fd_.get(), &key, &value, static_cast<unsigned long long>(flag)) == 0)
      return {};
    return fail_errno("update of " + name_, errno);
  }

  // True when an entry was removed, false when there was none.
  Result<bool> erase(const K& key) {
    if (bpf_map_delete_elem(fd_.get(), &key) == 0) return true;
    if (errno == ENOENT) return false;
    return fail_errno("delete from " + name_, errno);
  }

  // Visits every key present when the walk reaches it. Entries added or
  // removed concurrently may or may not be seen; none is seen twice unless
  // the kernel restarts the walk after a concurrent delete of the cursor.
  Result<void> for_each_key(const std::function<void(const K&)>& visit) const {
    K key{}, next{};
    const K* cursor = nullptr;
    for (unsigned n = 0; n <= max_entries_; ++n) {
      if (bpf_map_get_next_key(fd_.get(), cursor, &next) != 0) {
        if (errno == ENOENT) return {};
        return fail_errno("walk of " + name_, errno);
      }
      visit(next);
      key = next;
      cursor = &key;
    }
    return {};
  }

  int fd() const { return fd_.get(); }
  const std::string& name() const { return name_; }
  unsigned max_entries() const { return max_entries_; }

 private:
  TypedMap(UniqueFd fd, std::string name, unsigned max_entries)
      : fd_(std::move(fd)), name_(std::move(name)), max_entries_(max_entries) {}

  UniqueFd fd_;
  std::string name_;
  unsigned max_entries_;
};

// A per-CPU array read as one value per possible CPU.
template <typename V>
class PerCpuArray {
  static_assert(std::is_trivially_copyable_v<V>);

 public:
  static Result<PerCpuArray> adopt(UniqueFd fd, std::string name) {
    auto info = map_info(fd.get());
    if (!info) return std::unexpected(info.error());
    if (info->type != BPF_MAP_TYPE_PERCPU_ARRAY || info->value_size != sizeof(V))
      return fail(Errc::kIncompatible, "map " + name + " is not a per-CPU array of " +
                                           std::to_string(sizeof(V)) + "-byte values");
    int cpus = libbpf_num_possible_cpus();
    if (cpus <= 0) return fail_errno("counting possible CPUs", -cpus);
    return PerCpuArray(std::move(fd), std::move(name), static_cast<unsigned>(cpus));
  }
  static Result<PerCpuArray> borrow(const bpf_map* map) {
    auto fd = dup_fd(bpf_map__fd(map), bpf_map__name(map));
    if (!fd) return std::unexpected(fd.error());
    return adopt(std::move(*fd), bpf_map__name(map));
  }

  Result<std::vector<V>> lookup(unsigned index) const {
    // Per-CPU values are laid out 8-byte aligned, one per possible CPU.
    static_assert(sizeof(V) % 8 == 0);
    std::vector<V> values(cpus_);
    if (bpf_map_lookup_elem(fd_.get(), &index, values.data()) != 0)
      return fail_errno("lookup in " + name_, errno);
    return values;
  }

 private:
  PerCpuArray(UniqueFd fd, std::string name, unsigned cpus)
      : fd_(std::move(fd)), name_(std::move(name)), cpus_(cpus) {}

  UniqueFd fd_;
  std::string name_;
  unsigned cpus_;
};

}  // namespace trustfence::datapath
