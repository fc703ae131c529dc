#pragma once

// SHA-256 (OpenSSL EVP) to prove a stream arrived byte-exact.

#include <openssl/evp.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>

namespace trustfence::testing::kernel {

class Sha256 {
 public:
  Sha256();
  void update(std::span<const std::byte> data);
  // Lowercase hex of the digest; the object is spent afterwards.
  std::string hex();

  static std::string of(std::span<const std::byte> data);
  // The digest of a file's bytes ("" when it cannot be read).
  static std::string of_file(const std::string& path);

 private:
  struct Deleter {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  std::unique_ptr<EVP_MD_CTX, Deleter> ctx_;
};

}  // namespace trustfence::testing::kernel
