#pragma once

// Asks the running agent one question over its api-socket (the protocol is
// described in server.hpp): one request line out, one reply line back.

#include <chrono>
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include "trustfence/common/result.hpp"

namespace trustfence::api {

// Every tracked connection fits many times over; a runaway peer does not.
inline constexpr std::size_t kMaxReplyBytes = 64 * 1024 * 1024;
inline constexpr int kMaxReplyDepth = 64;
inline constexpr std::chrono::milliseconds kDefaultCallTimeout{5000};

// Blocks at most about timeout in all (connect, write, read). Errors:
//   kNotFound          no agent is running there (no socket file, or nothing
//                      listening on it); the message names the path;
//   kPermissionDenied  the socket file or the agent refused this caller;
//   kInvalidArgument   socket_path cannot be a Unix socket address;
//   kIo                timeout, a broken, oversized or non-JSON reply, or
//                      the agent's {"error": ...} (its message, as is).
Result<nlohmann::json> call(const std::string& socket_path, const nlohmann::json& request,
                            std::chrono::milliseconds timeout = kDefaultCallTimeout);

}  // namespace trustfence::api
