#include "trustfence/common/result.hpp"

#include <cerrno>
#include <cstring>

namespace trustfence {

std::string describe_errno(std::string_view what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

Errc errc_from_errno(int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return Errc::kPermissionDenied;
    case ENOENT:
      return Errc::kNotFound;
    case EINVAL:
      return Errc::kInvalidArgument;
    case EOPNOTSUPP:
    case ENOSYS:
      return Errc::kUnsupported;
    default:
      return Errc::kIo;
  }
}

}  // namespace trustfence
