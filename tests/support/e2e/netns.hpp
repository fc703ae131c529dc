#pragma once

// Named network namespaces (the `ip netns` ones, bind-mounted under
// /var/run/netns) for the e2e tier: entering one from a helper thread, so
// the test process itself never moves, and looking at its TCP listeners.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"

namespace trustfence::testing::e2e {

using std::chrono::milliseconds;

// Prefix of every netns, cgroup and pin directory the e2e tier makes,
// followed by the creating pid (see kernel::unique_test_name), so a later
// run can sweep what a killed one left.
inline constexpr std::string_view kE2ePrefix = "tf-e2e-";

inline constexpr std::string_view kNetnsDir = "/var/run/netns";

// An fd of the named netns, for setns(CLONE_NEWNET).
Result<UniqueFd> open_netns(const std::string& name);

// Runs fn on a short-lived thread that entered the netns (empty name: this
// one) and returns its result. Only that thread moves, so the caller stays
// where it is; sockets fn creates keep the netns for their whole life, and
// /proc/thread-self/net and /proc/sys/net seen from fn are the netns's.
Result<void> in_netns(const std::string& name, const std::function<Result<void>()>& fn);

// Whether a TCP socket listens on port, on any address, IPv4 or IPv6, in
// the netns (empty: this one). Reads /proc, so it opens no connection that
// an agent under test would have to account for.
Result<bool> tcp_listening(const std::string& netns, std::uint16_t port);

}  // namespace trustfence::testing::e2e
