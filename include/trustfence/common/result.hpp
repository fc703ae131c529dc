#pragma once

#include <expected>
#include <string>
#include <string_view>

namespace trustfence {

// What went wrong, coarsely, so callers can branch; the message is for an
// operator and names the key, file, path or capability at fault.
enum class Errc {
  kInvalidArgument,
  kNotFound,
  kPermissionDenied,
  kUnsupported,
  kIncompatible,
  kIo,
};

struct Error {
  Errc code;
  std::string message;
};

template <typename T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Errc code, std::string message) {
  return std::unexpected(Error{code, std::move(message)});
}

// "what: strerror(err)" for a failed system or libbpf call (err > 0).
std::string describe_errno(std::string_view what, int err);

// Maps an errno to the Errc an operator would act on.
Errc errc_from_errno(int err);

inline std::unexpected<Error> fail_errno(std::string_view what, int err) {
  return fail(errc_from_errno(err), describe_errno(what, err));
}

}  // namespace trustfence
