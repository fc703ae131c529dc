#pragma once

// A private temporary directory (files to serve, configs, certificates),
// removed with everything in it when the owner goes.

#include <string>
#include <string_view>

#include "trustfence/common/result.hpp"

namespace trustfence::testing::e2e {

// "tf-e2e-<pid>-": temporary files and directories start with it, so
// sweep_stale_e2e_leftovers can tell those of dead runs.
std::string temp_name_prefix();

class TempDir {
 public:
  // mkdtemp under the system temp directory, named temp_name_prefix()dir-*.
  static Result<TempDir> create();

  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();  // a failure to remove is a warning on stderr

  const std::string& path() const { return path_; }
  // path()/name
  std::string file(const std::string& name) const { return path_ + "/" + name; }

  // Writes (replaces) path()/name, returning its path.
  Result<std::string> write(const std::string& name, std::string_view content) const;

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  void remove();

  std::string path_;
};

}  // namespace trustfence::testing::e2e
