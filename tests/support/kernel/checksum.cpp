#include "support/kernel/checksum.hpp"

#include <array>
#include <fstream>

#include <cstdio>
#include <stdexcept>

namespace trustfence::testing::kernel {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("EVP_DigestInit_ex(sha256) failed");
}

void Sha256::update(std::span<const std::byte> data) {
  if (EVP_DigestUpdate(ctx_.get(), data.data(), data.size()) != 1)
    throw std::runtime_error("EVP_DigestUpdate failed");
}

std::string Sha256::hex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (EVP_DigestFinal_ex(ctx_.get(), digest, &len) != 1)
    throw std::runtime_error("EVP_DigestFinal_ex failed");
  std::string out;
  out.reserve(len * 2);
  char byte[3];
  for (unsigned i = 0; i < len; ++i) {
    std::snprintf(byte, sizeof(byte), "%02x", digest[i]);
    out += byte;
  }
  return out;
}

std::string Sha256::of(std::span<const std::byte> data) {
  Sha256 sha;
  sha.update(data);
  return sha.hex();
}

std::string Sha256::of_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  Sha256 sha;
  std::array<char, 64 * 1024> buffer;
  while (in.read(buffer.data(), buffer.size()) || in.gcount() > 0)
    sha.update(std::as_bytes(std::span(buffer.data(), static_cast<std::size_t>(in.gcount()))));
  return sha.hex();
}

}  // namespace trustfence::testing::kernel
