#include "support/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "trustfence/common/unique_fd.hpp"

extern char** environ;

namespace trustfence::testing {
namespace {

using Clock = std::chrono::steady_clock;

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

Result<Pipe> make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail_errno("pipe2", errno);
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Reaps the child; kills it first when it outlived the deadline.
int reap(pid_t pid, bool kill_first) {
  if (kill_first) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Waits for the child to exit (it may close its output before it does).
bool exits_before(pid_t pid, Clock::time_point deadline) {
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return true;  // no pidfd support: fall back to a plain waitpid
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd pfd{pidfd.get(), POLLIN, 0};
    int n = ::poll(&pfd, 1, left.count() > 0 ? static_cast<int>(left.count()) : 0);
    if (n > 0) return true;
    if (n == 0 || errno != EINTR) return false;
  }
}

}  // namespace

std::string join_argv(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& arg : argv) out += (out.empty() ? "" : " ") + arg;
  return out;
}

Result<CommandResult> run_command(const std::vector<std::string>& argv,
                                  std::chrono::milliseconds timeout, Output output) {
  auto deadline = Clock::now() + timeout;
  const bool merged = output == Output::kMerged;
  auto out = make_pipe();
  if (!out) return std::unexpected(out.error());
  Pipe err;
  if (!merged) {
    auto made = make_pipe();
    if (!made) return std::unexpected(made.error());
    err = std::move(*made);
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out->write.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, merged ? out->write.get() : err.write.get(),
                                   STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return fail_errno("spawning " + argv[0], rc);
  out->write.reset();
  err.write.reset();

  CommandResult result;
  pollfd fds[2] = {{out->read.get(), POLLIN, 0}, {err.read.get(), POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  const int nfds = merged ? 1 : 2;
  int open_pipes = nfds;
  while (open_pipes > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      reap(pid, true);
      return fail(Errc::kIo, join_argv(argv) + ": still running after the timeout, killed");
    }
    int n = ::poll(fds, nfds, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) {
      reap(pid, true);
      return fail_errno("poll", errno);
    }
    for (int i = 0; i < nfds; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t r = ::read(fds[i].fd, buf, sizeof(buf));
      if (r > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(r));
      } else if (r == 0 || errno != EINTR) {
        fds[i].fd = -1;
        --open_pipes;
      }
    }
  }
  if (!exits_before(pid, deadline)) {
    reap(pid, true);
    return fail(Errc::kIo, join_argv(argv) + ": did not exit before the timeout, killed");
  }
  result.exit_code = reap(pid, false);
  return result;
}

}  // namespace trustfence::testing
