#include "support/e2e/temp_dir.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <utility>

#include "support/e2e/netns.hpp"

namespace trustfence::testing::e2e {
namespace fs = std::filesystem;

std::string temp_name_prefix() {
  return std::string(kE2ePrefix) + std::to_string(::getpid()) + "-";
}

Result<TempDir> TempDir::create() {
  auto pattern = (fs::temp_directory_path() / (temp_name_prefix() + "dir-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr)
    return fail_errno("creating a temporary directory " + pattern, errno);
  return TempDir(pattern);
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

TempDir::~TempDir() { remove(); }

void TempDir::remove() {
  if (path_.empty()) return;
  std::error_code ec;
  fs::remove_all(path_, ec);
  if (ec) std::fprintf(stderr, "warning: removing %s: %s\n", path_.c_str(), ec.message().c_str());
  path_.clear();
}

Result<std::string> TempDir::write(const std::string& name, std::string_view content) const {
  auto path = file(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out) return fail_errno("writing " + path, errno ? errno : EIO);
  return path;
}

}  // namespace trustfence::testing::e2e
