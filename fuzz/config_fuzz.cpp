// Config text: whatever the file holds, loading it returns a Config or an
// error that names the file — never a crash. Bundle paths in the input may
// name any file; reading them is part of what is fuzzed.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "trustfence/config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/dev/shm/tf-config-fuzz-" + std::to_string(::getpid());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto config = trustfence::config::load({"--config", path});
  if (!config && config.error().message.find(path) == std::string::npos &&
      config.error().message.find("--") == std::string::npos)
    __builtin_trap();  // every error says where it comes from
  return 0;
}
