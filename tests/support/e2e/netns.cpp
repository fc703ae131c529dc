#include "support/e2e/netns.hpp"

#include <fcntl.h>
#include <sched.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>

namespace trustfence::testing::e2e {
namespace {

constexpr unsigned kTcpListen = 0x0A;

// Scans one /proc/net/tcp{,6} table for a LISTEN entry on port.
Result<bool> table_lists_listener(const std::string& path, std::uint16_t port) {
  std::ifstream in(path);
  if (!in) return fail_errno("reading " + path, errno);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    if (!(fields >> slot >> local >> remote >> state)) continue;
    auto colon = local.rfind(':');
    if (colon == std::string::npos) continue;
    if (std::stoul(state, nullptr, 16) == kTcpListen &&
        std::stoul(local.substr(colon + 1), nullptr, 16) == port)
      return true;
  }
  return false;
}

}  // namespace

Result<UniqueFd> open_netns(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos)
    return fail(Errc::kInvalidArgument, "netns name \"" + name + "\" is not a plain name");
  auto path = std::string(kNetnsDir) + "/" + name;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("opening netns " + path, errno);
  return fd;
}

Result<void> in_netns(const std::string& name, const std::function<Result<void>()>& fn) {
  if (name.empty()) return fn();
  auto ns = open_netns(name);
  if (!ns) return std::unexpected(ns.error());
  Result<void> result;
  try {
    // The thread ends inside the netns; nothing else ever runs on it.
    std::thread worker([&] {
      if (::setns(ns->get(), CLONE_NEWNET) != 0) {
        result = fail_errno("entering netns " + name, errno);
        return;
      }
      result = fn();
    });
    worker.join();
  } catch (const std::system_error& e) {
    return fail(Errc::kIo,
                std::string("starting a thread to enter netns ") + name + ": " + e.what());
  }
  return result;
}

Result<bool> tcp_listening(const std::string& netns, std::uint16_t port) {
  bool listening = false;
  auto scanned = in_netns(netns, [&]() -> Result<void> {
    // thread-self: /proc/self/net would show the main thread's netns.
    for (const char* table : {"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"}) {
      auto found = table_lists_listener(table, port);
      if (!found) return std::unexpected(found.error());
      listening = listening || *found;
    }
    return {};
  });
  if (!scanned) return std::unexpected(scanned.error());
  return listening;
}

}  // namespace trustfence::testing::e2e
