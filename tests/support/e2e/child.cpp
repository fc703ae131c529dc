#include "support/e2e/child.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "support/e2e/netns.hpp"
#include "support/e2e/temp_dir.hpp"

extern char** environ;

namespace trustfence::testing::e2e {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// What the child reports through the exec pipe when a step before exec
// fails; the parent names the step.
enum class Step : int { kProcessGroup, kNetns, kCgroup, kStdio, kWorkingDirectory, kExec };

const char* step_name(Step step) {
  switch (step) {
    case Step::kProcessGroup:
      return "becoming a process group leader";
    case Step::kNetns:
      return "entering the netns";
    case Step::kCgroup:
      return "moving into the cgroup";
    case Step::kStdio:
      return "redirecting stdio";
    case Step::kWorkingDirectory:
      return "changing the working directory";
    case Step::kExec:
      return "exec";
  }
  return "?";
}

struct Report {
  Step step;
  int err;
};

// Everything the child needs, prepared before fork: after it only
// async-signal-safe calls are allowed (the test process has threads).
struct Prepared {
  std::string program;
  std::vector<std::string> argv;
  std::vector<std::string> env;
  UniqueFd netns;
  UniqueFd cgroup_procs;
  UniqueFd stdin_fd;
  UniqueFd stdout_fd;
  UniqueFd stderr_fd;
  std::string stdout_path;
  std::string stderr_path;
  std::vector<std::string> owned_files;
};

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

std::vector<std::string> merged_environment(
    const std::vector<std::pair<std::string, std::string>>& additions) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    auto key = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& [k, v] : additions) replaced = replaced || k == key;
    if (!replaced) env.emplace_back(entry);
  }
  for (const auto& [k, v] : additions) env.push_back(k + "=" + v);
  return env;
}

std::string env_value(const std::vector<std::string>& env, std::string_view key) {
  for (const auto& entry : env)
    if (entry.size() > key.size() && entry.starts_with(key) && entry[key.size()] == '=')
      return entry.substr(key.size() + 1);
  return {};
}

// A temporary output file, O_CLOEXEC: dup2 in the child clears the flag.
Result<std::pair<UniqueFd, std::string>> temp_output(std::string_view stream) {
  auto pattern =
      (fs::temp_directory_path() / (temp_name_prefix() + "out-" + std::string(stream) + "-XXXXXX"))
          .string();
  UniqueFd fd(::mkostemp(pattern.data(), O_CLOEXEC));
  if (!fd) return fail_errno("creating a temporary file for " + std::string(stream), errno);
  return std::pair{std::move(fd), pattern};
}

Result<UniqueFd> open_output(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return fail_errno("opening " + path + " for output", errno);
  return fd;
}

Result<void> prepare_output(Prepared& p) {
  if (p.stdout_path.empty()) {
    auto temp = temp_output("stdout");
    if (!temp) return std::unexpected(temp.error());
    p.stdout_fd = std::move(temp->first);
    p.stdout_path = temp->second;
    p.owned_files.push_back(p.stdout_path);
  } else {
    auto fd = open_output(p.stdout_path);
    if (!fd) return std::unexpected(fd.error());
    p.stdout_fd = std::move(*fd);
  }
  if (p.stderr_path == p.stdout_path) return {};  // merged: the child dup2s stdout
  if (p.stderr_path.empty()) {
    auto temp = temp_output("stderr");
    if (!temp) return std::unexpected(temp.error());
    p.stderr_fd = std::move(temp->first);
    p.stderr_path = temp->second;
    p.owned_files.push_back(p.stderr_path);
  } else {
    auto fd = open_output(p.stderr_path);
    if (!fd) return std::unexpected(fd.error());
    p.stderr_fd = std::move(*fd);
  }
  return {};
}

Result<Prepared> prepare(const SpawnOptions& options) {
  if (options.argv.empty()) return fail(Errc::kInvalidArgument, "spawn: empty argv");
  Prepared p;
  p.argv = options.argv;
  p.env = merged_environment(options.env);
  auto program = find_program(options.argv[0], env_value(p.env, "PATH"));
  if (!program) return std::unexpected(program.error());
  p.program = *program;
  if (!options.netns.empty()) {
    auto ns = open_netns(options.netns);
    if (!ns) return std::unexpected(ns.error());
    p.netns = std::move(*ns);
  }
  if (!options.cgroup.empty()) {
    auto procs = options.cgroup + "/cgroup.procs";
    p.cgroup_procs.reset(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
    if (!p.cgroup_procs) return fail_errno("opening " + procs, errno);
  }
  p.stdin_fd.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!p.stdin_fd) return fail_errno("opening /dev/null", errno);
  p.stdout_path = options.stdout_path;
  p.stderr_path = options.stderr_path;
  if (auto ok = prepare_output(p); !ok) return std::unexpected(ok.error());
  return p;
}

[[noreturn]] void child_fail(int report_fd, Step step) {
  Report report{step, errno};
  (void)!::write(report_fd, &report, sizeof(report));
  ::_exit(127);
}

// In the forked child: async-signal-safe calls only.
[[noreturn]] void run_child(const Prepared& p, pid_t parent, int report_fd, char* const* argv,
                            char* const* envp, const char* cwd) {
  if (::setpgid(0, 0) != 0) child_fail(report_fd, Step::kProcessGroup);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
  // The test process may block or ignore signals; the program starts clean.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD}) ::sigaction(sig, &dfl, nullptr);

  if (p.netns && ::setns(p.netns.get(), CLONE_NEWNET) != 0) child_fail(report_fd, Step::kNetns);
  if (p.cgroup_procs && ::write(p.cgroup_procs.get(), "0", 1) != 1)
    child_fail(report_fd, Step::kCgroup);
  int err_fd = p.stderr_fd ? p.stderr_fd.get() : p.stdout_fd.get();
  if (::dup2(p.stdin_fd.get(), STDIN_FILENO) < 0 || ::dup2(p.stdout_fd.get(), STDOUT_FILENO) < 0 ||
      ::dup2(err_fd, STDERR_FILENO) < 0)
    child_fail(report_fd, Step::kStdio);
  if (cwd != nullptr && ::chdir(cwd) != 0) child_fail(report_fd, Step::kWorkingDirectory);
  ::execve(p.program.c_str(), argv, envp);
  child_fail(report_fd, Step::kExec);
}

// SIGKILL is prompt but asynchronous; a process stuck in the kernel longer
// than this is reported by whoever trips over it (cgroup rmdir: EBUSY).
constexpr milliseconds kGroupExitTimeout{2'000};

// Whether a process other than the leader, alive or exiting but not yet a
// zombie, is in process group pgid (scans /proc: there is no group query).
bool group_has_others(pid_t pgid) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (std::stol(name) == pgid) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;  // exited meanwhile
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 1));
    char state = 0;
    long ppid = 0, pgrp = 0;
    if (fields >> state >> ppid >> pgrp && pgrp == pgid && state != 'Z' && state != 'X')
      return true;
  }
  return false;
}

void wait_until_only_leader_left(pid_t pgid, Clock::time_point deadline) {
  while (group_has_others(pgid) && Clock::now() < deadline) std::this_thread::sleep_for(2ms);
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail_errno("reading " + path, errno);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

Result<std::string> find_program(const std::string& name, const std::string& path_env) {
  if (name.find('/') != std::string::npos) return name;
  std::string path = path_env;
  if (path.empty()) {
    const char* own = std::getenv("PATH");
    path = own != nullptr ? own : "/usr/local/bin:/usr/bin:/bin";
  }
  std::istringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    auto candidate = (fs::path(dir.empty() ? "." : dir) / name).string();
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return fail(Errc::kNotFound,
              "program " + name + " not found in PATH (scripts/setup.sh installs the e2e tools)");
}

Result<Child> spawn(const SpawnOptions& options) {
  auto prepared = prepare(options);
  if (!prepared) return std::unexpected(prepared.error());
  Prepared& p = *prepared;
  auto argv = pointers(p.argv);
  auto envp = pointers(p.env);
  const char* cwd = options.working_directory.empty() ? nullptr : options.working_directory.c_str();

  int report_pipe[2];
  if (::pipe2(report_pipe, O_CLOEXEC) != 0) return fail_errno("pipe2", errno);
  UniqueFd report_read(report_pipe[0]);
  UniqueFd report_write(report_pipe[1]);

  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork", errno);
  if (pid == 0) run_child(p, parent, report_write.get(), argv.data(), envp.data(), cwd);

  Child child;
  child.pid_ = pid;
  child.description_ = join_argv(options.argv);
  child.stdout_path_ = p.stdout_path;
  child.stderr_path_ = p.stderr_fd ? p.stderr_path : p.stdout_path;
  child.owned_files_ = std::move(p.owned_files);
  // Also here: kill_group must work even before the child ran setpgid.
  ::setpgid(pid, pid);
  child.pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));

  // EOF on the pipe: exec closed it (O_CLOEXEC), the program runs.
  report_write.reset();
  Report report{};
  ssize_t n = 0;
  do {
    n = ::read(report_read.get(), &report, sizeof(report));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(report))) {
    child.reap_blocking();
    std::string where;
    if (!options.netns.empty()) where += " in netns " + options.netns;
    if (!options.cgroup.empty()) where += " in cgroup " + options.cgroup;
    return fail_errno("spawning " + child.description_ + where + ": " + step_name(report.step),
                      report.err);
  }
  return child;
}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::move(other.pidfd_)),
      exit_code_(other.exit_code_),
      description_(std::move(other.description_)),
      stdout_path_(std::move(other.stdout_path_)),
      stderr_path_(std::move(other.stderr_path_)),
      owned_files_(std::exchange(other.owned_files_, {})) {}

Child& Child::operator=(Child&& other) noexcept {
  if (this != &other) {
    release();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::move(other.pidfd_);
    exit_code_ = other.exit_code_;
    description_ = std::move(other.description_);
    stdout_path_ = std::move(other.stdout_path_);
    stderr_path_ = std::move(other.stderr_path_);
    owned_files_ = std::exchange(other.owned_files_, {});
  }
  return *this;
}

Child::~Child() { release(); }

void Child::release() {
  reap_blocking();
  pid_ = -1;
  pidfd_.reset();
  for (const auto& file : owned_files_) ::unlink(file.c_str());
  owned_files_.clear();
}

void Child::kill_group(int signal) const {
  // Only while the leader is unreaped: until then its pid, and so the group
  // id, cannot name anybody else.
  if (pid_ <= 0 || exit_code_) return;
  if (::kill(-pid_, signal) != 0) ::kill(pid_, signal);
}

void Child::reap_blocking() {
  if (pid_ <= 0 || exit_code_) return;
  // Whatever the leader started dies with it, and is gone (out of its
  // cgroup, off its ports) before we return. The leader, unreaped until
  // then, keeps the group id from naming anybody else meanwhile.
  kill_group(SIGKILL);
  wait_until_only_leader_left(pid_, Clock::now() + kGroupExitTimeout);
  int status = 0;
  pid_t r = 0;
  do {
    r = ::waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  exit_code_ = r == pid_ ? decode_status(status) : -1;
}

bool Child::running() {
  if (pid_ <= 0 || exit_code_) return false;
  // WNOWAIT: look without reaping, so the group can still be killed safely.
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    // Reaped elsewhere (waitpid(-1)): its pid may name someone else now.
    exit_code_ = -1;
    return false;
  }
  if (info.si_pid == 0) return true;
  reap_blocking();
  return false;
}

Result<int> Child::wait(milliseconds timeout) {
  if (pid_ <= 0) return fail(Errc::kInvalidArgument, "waiting for a Child that was moved from");
  auto deadline = Clock::now() + timeout;
  while (running()) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      return fail(Errc::kIo, description_ + ": still running after " +
                                 std::to_string(timeout.count()) + " ms");
    if (pidfd_) {
      pollfd pfd{pidfd_.get(), POLLIN, 0};
      ::poll(&pfd, 1, static_cast<int>(left.count()));
    } else {
      std::this_thread::sleep_for(std::min<milliseconds>(left, 10ms));
    }
  }
  return *exit_code_;
}

void Child::terminate(milliseconds grace) {
  if (!running()) return;
  kill_group(SIGTERM);
  (void)wait(grace);
  reap_blocking();  // SIGKILL first if it is still there
}

Result<std::string> Child::read_stdout() const { return read_file(stdout_path_); }

Result<std::string> Child::read_stderr() const {
  if (stderr_path_ == stdout_path_) return std::string();  // merged into stdout
  return read_file(stderr_path_);
}

Result<CommandResult> run_in(const SpawnOptions& options, milliseconds timeout) {
  auto child = spawn(options);
  if (!child) return std::unexpected(child.error());
  auto code = child->wait(timeout);
  if (!code) {
    child->terminate(1'000ms);
    auto err = child->read_stderr();
    return fail(Errc::kIo, code.error().message + ", killed; stderr: " + (err ? *err : "?"));
  }
  CommandResult result;
  result.exit_code = *code;
  auto out = child->read_stdout();
  if (!out) return std::unexpected(out.error());
  auto err = child->read_stderr();
  if (!err) return std::unexpected(err.error());
  result.out = std::move(*out);
  result.err = std::move(*err);
  return result;
}

Result<void> wait_for_tcp_listen(const std::string& netns, std::uint16_t port, milliseconds timeout,
                                 Child* server) {
  auto deadline = Clock::now() + timeout;
  const std::string where =
      "TCP port " + std::to_string(port) + (netns.empty() ? std::string() : " in netns " + netns);
  for (;;) {
    auto listening = tcp_listening(netns, port);
    if (!listening) return std::unexpected(listening.error());
    if (*listening) return {};
    if (server != nullptr && !server->running()) {
      auto err = server->read_stderr();
      return fail(Errc::kIo, server->description() + " exited with " +
                                 std::to_string(server->exit_code().value_or(-1)) +
                                 " before listening on " + where +
                                 "; stderr: " + (err ? *err : "?"));
    }
    if (Clock::now() >= deadline)
      return fail(Errc::kIo, "nothing listens on " + where + " after " +
                                 std::to_string(timeout.count()) + " ms");
    std::this_thread::sleep_for(20ms);
  }
}

}  // namespace trustfence::testing::e2e
