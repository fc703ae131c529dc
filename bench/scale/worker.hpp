#pragma once

// The helper processes of the scale benchmark: forked from it, each inside
// an e2e node's network namespace (and, for workloads, a cgroup), driven
// over a socketpair with one text line per command and one line per answer
// ("ok ..." or "err <why>").
//
//   pairs   holds same-node TCP connections: both ends in the worker, on
//           loopback, so both sockets are tracked in the worker's cgroup
//           ("open N" adds N connections, "drop N" closes the N newest,
//           "close" closes them all)
//   server  accepts on a port and closes each connection when its client
//           does (the server end of the connection-rate runs)
//   peer    a simulated peer agent (fake_peer.cpp): real channels to the
//           agent, real attestation requests for the connections it makes

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"

namespace trustfence::bench::scale {

// Connections one pairs worker holds: two descriptors each under the hard
// RLIMIT_NOFILE (20,000 on the development machines, where root lacks
// CAP_SYS_RESOURCE to raise it), with room for the listener and control.
inline constexpr std::uint64_t kPairsPerWorker = 9'900;

class Worker {
 public:
  // The child's life: control is its end of the socketpair; the return
  // value is its exit code.
  using Body = std::function<int(int control)>;

  // fork; the child enters netns (a name under /var/run/netns; empty: stay)
  // and cgroup (a cgroup v2 directory; empty: stay), then runs body.
  static Result<Worker> start(std::string name, const std::string& netns, const std::string& cgroup,
                              Body body);

  Worker(Worker&& other) noexcept;
  Worker& operator=(Worker&&) = delete;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker();  // SIGKILL and reap

  // Sends one command line and waits for the answer line: its text after
  // "ok" ("" when bare); "err ..." or no answer within timeout is an error.
  Result<std::string> ask(const std::string& command, std::chrono::milliseconds timeout);
  // ask() in two halves, to run one command on several workers at once.
  Result<void> send(const std::string& command);
  Result<std::string> reply(const std::string& command, std::chrono::milliseconds timeout);

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

 private:
  Worker(std::string name, pid_t pid, UniqueFd control)
      : name_(std::move(name)), pid_(pid), control_(std::move(control)) {}

  std::string name_;
  pid_t pid_ = -1;
  UniqueFd control_;
  std::string buffer_;  // answer bytes read past the last line
};

// Child side: one line from a blocking control socket (without '\n');
// empty on EOF.
std::string read_command(int control);
void answer(int control, const std::string& line);

// "key=value" fields of an answer, as numbers (missing: fallback).
double field(const std::string& answer, const std::string& key, double fallback = 0);

// Worker bodies (holders.cpp).
int pairs_main(int control);
int server_main(int control, std::uint16_t port);

}  // namespace trustfence::bench::scale
