#pragma once

// Destroys one TCP socket through NETLINK_SOCK_DIAG SOCK_DESTROY, as
// `ss -K` does: the kernel aborts it (its owner's pending and next calls fail
// with ECONNABORTED) and resets the peer, so an application whose connection
// was denied sees the failure at once instead of waiting on payload the
// datapath holds back or drops.

#include <cstdint>

#include "trustfence/abi.h"
#include "trustfence/common/result.hpp"
#include "trustfence/datapath/netns.hpp"

namespace trustfence::datapath {

// Destroys the TCP socket whose own view of the connection is `tuple`
// (local = its source) in the calling thread's network namespace, but only if its
// socket cookie is `cookie`: a tuple reused by a newer connection, or a
// listener on the local port, is never hit.
//
// true: destroyed. false: no such socket (any more), e.g. it closed first.
// Errors name what is missing: kPermissionDenied without CAP_NET_ADMIN,
// kUnsupported on a kernel built without CONFIG_INET_DIAG_DESTROY,
// kInvalidArgument for a family other than AF_INET / AF_INET6.
//
// A kernel without tcp_diag (CONFIG_INET_TCP_DIAG) answers every request
// with ENOENT, which reads as false here.
Result<bool> destroy_socket(const tf_tuple& tuple, std::uint64_t cookie);

// The same for a tracked connection, in whichever netns its socket lives:
// the agent's own first (the fast path), then the netns of the processes of
// its cgroup (conn.cgroup_id), entered from a short-lived thread. A socket
// whose netns cannot be found (its cgroup has no process left) is counted
// as unresolved and reads as false: the datapath still drops its traffic.
Result<bool> destroy_socket(NetnsResolver& netns, std::uint64_t cookie, const tf_conn& conn);

}  // namespace trustfence::datapath
