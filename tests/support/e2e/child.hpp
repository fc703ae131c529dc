#pragma once

// Programs run *inside* an e2e node: a child enters a named netns and a
// cgroup v2 before it execs, without a shell, so what it runs sees exactly
// the node a test built and is tracked like a workload of that node.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/process.hpp"
#include "trustfence/common/result.hpp"
#include "trustfence/common/unique_fd.hpp"

namespace trustfence::testing::e2e {

using std::chrono::milliseconds;

// Generous: a loaded 2-core CI machine must never trip these on a pass.
inline constexpr milliseconds kReadyTimeout{20'000};
inline constexpr milliseconds kTerminateGrace{5'000};

// Meant for designated initializers; the {} keep GCC's
// -Wmissing-field-initializers quiet about the members left out.
struct SpawnOptions {
  std::string netns{};              // `ip netns` name; empty: this process's netns
  std::string cgroup{};             // cgroup v2 directory; empty: this process's cgroup
  std::vector<std::string> argv{};  // argv[0] without a '/' is looked up in PATH
  // Set in the child's environment on top of (or replacing) this process's.
  std::vector<std::pair<std::string, std::string>> env{};
  // Where stdout and stderr go (truncated); empty: a temporary file the
  // Child owns and removes. The same path for both merges them.
  std::string stdout_path{};
  std::string stderr_path{};
  std::string working_directory{};  // empty: this process's
};

// argv[0] of a program: itself when it holds a '/', else the first
// executable of that name in PATH (this process's when path_env is empty).
Result<std::string> find_program(const std::string& name, const std::string& path_env = {});

// A spawned process and its process group: it leads one, so terminate and
// the destructor also reach what it started, and once it exits what is left
// of its group is killed and waited for (a server's helpers must not keep a
// test cgroup busy or a port bound). It runs with SIGKILL as its
// parent-death signal, so a crashed test leaves no server behind — which
// ties it to the *thread* that spawned it: spawn from the test's own thread.
class Child {
 public:
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();  // SIGKILL to the group, then reaps

  pid_t pid() const { return pid_; }
  // "argv..." for failure messages.
  const std::string& description() const { return description_; }

  // False once it exited (then reaped; exit_code() tells how).
  bool running();
  // The exit status, or 128 + the signal that killed it (as a shell tells
  // it). An error when it is still running at the timeout; it keeps running.
  Result<int> wait(milliseconds timeout = kReadyTimeout);
  std::optional<int> exit_code() const { return exit_code_; }
  // SIGTERM to the group, SIGKILL after grace; reaps.
  void terminate(milliseconds grace = kTerminateGrace);

  // What it wrote so far.
  Result<std::string> read_stdout() const;
  Result<std::string> read_stderr() const;
  const std::string& stdout_path() const { return stdout_path_; }
  const std::string& stderr_path() const { return stderr_path_; }

 private:
  friend Result<Child> spawn(const SpawnOptions& options);
  Child() = default;

  void kill_group(int signal) const;
  void reap_blocking();
  void release();

  pid_t pid_ = -1;
  UniqueFd pidfd_;
  std::optional<int> exit_code_;
  std::string description_;
  std::string stdout_path_;
  std::string stderr_path_;
  std::vector<std::string> owned_files_;  // temporary outputs, removed with the Child
};

// fork; the child enters the netns (setns), moves itself into the cgroup
// (writes "0" to cgroup.procs), takes /dev/null as stdin, then execs. A
// failure of any of these comes back here as an error naming the step.
Result<Child> spawn(const SpawnOptions& options);

// Runs to completion and returns exit code (as Child::wait tells it) and
// output. Still running at the timeout: killed, and an error with what it
// had written to stderr.
Result<CommandResult> run_in(const SpawnOptions& options, milliseconds timeout = kCommandTimeout);

// Polls until a TCP socket listens on port in netns (empty: this one). When
// server is given and exits first, fails at once with its exit code and
// stderr instead of waiting out the timeout.
Result<void> wait_for_tcp_listen(const std::string& netns, std::uint16_t port,
                                 milliseconds timeout = kReadyTimeout, Child* server = nullptr);

}  // namespace trustfence::testing::e2e
