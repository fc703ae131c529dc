#pragma once

// The sockaddr of an api-socket path, shared by the server and the client.

#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <string>

#include "trustfence/common/result.hpp"

namespace trustfence::api {

inline Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // sun_path needs its terminating NUL; a leading NUL would be the abstract
  // namespace, which file permissions do not protect.
  if (path.empty() || path.size() >= sizeof(addr.sun_path) || path.find('\0') != std::string::npos)
    return fail(Errc::kInvalidArgument, "api-socket '" + path + "': a path of 1.." +
                                            std::to_string(sizeof(addr.sun_path) - 1) +
                                            " bytes is needed");
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

}  // namespace trustfence::api
