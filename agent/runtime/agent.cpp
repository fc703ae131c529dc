#include "trustfence/runtime/agent.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>

#include "trustfence/common/verdict.hpp"
#include "trustfence/datapath/format.hpp"
#include "trustfence/datapath/host.hpp"

namespace trustfence::runtime {
namespace {

void log_event(const datapath::Event& ev) {
  const auto& c = ev.conn;
  auto direction = to_string(static_cast<tf_direction>(c.direction));
  if (ev.kind == TF_EVENT_NEW) {
    spdlog::info("new {} {} -> {} cookie={} cgroup={} verdict={} reason={}", direction,
                 datapath::local_endpoint(c.tuple), datapath::remote_endpoint(c.tuple), ev.cookie,
                 c.cgroup_id, to_string(static_cast<tf_verdict>(c.verdict)),
                 to_string(static_cast<tf_reason>(c.reason)));
  } else {
    spdlog::info("close {} {} -> {} cookie={} verdict={} reason={} lived_ms={}", direction,
                 datapath::local_endpoint(c.tuple), datapath::remote_endpoint(c.tuple), ev.cookie,
                 to_string(static_cast<tf_verdict>(c.verdict)),
                 to_string(static_cast<tf_reason>(c.reason)),
                 (ev.timestamp_ns - c.created_ns) / 1'000'000);
  }
}

Result<UniqueFd> termination_signals() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return fail_errno("blocking signals", errno);
  int fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) return fail_errno("signalfd", errno);
  return UniqueFd(fd);
}

}  // namespace

Result<void> run_agent(const config::Config& config) {
  auto caps = datapath::effective_capabilities();
  if (!caps) return std::unexpected(caps.error());
  if (auto ok = datapath::check_capabilities(*caps); !ok) return ok;
  if (auto ok = datapath::check_kernel_features(); !ok) return ok;

  auto dp = datapath::Datapath::open(config.datapath);
  if (!dp) return std::unexpected(dp.error());
  spdlog::info("datapath {} on cgroup {} (id {}), pins in {}, mode {}",
               dp->pin_state() == datapath::PinState::kReused ? "resumed" : "installed",
               dp->cgroup_path(), dp->cgroup_id(), config.datapath.pin_dir,
               config.datapath.mode == TF_MODE_AUDIT ? "audit" : "enforce");

  auto events = dp->events(log_event);
  if (!events) return std::unexpected(events.error());
  auto signals = termination_signals();
  if (!signals) return std::unexpected(signals.error());

  UniqueFd epoll(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return fail_errno("epoll_create1", errno);
  for (int fd : {events->epoll_fd(), signals->get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return fail_errno("epoll_ctl", errno);
  }
  std::uint64_t malformed_seen = 0;
  for (;;) {
    epoll_event ready[4];
    int n = epoll_wait(epoll.get(), ready, 4, datapath::kEventPollMs);
    if (n < 0 && errno != EINTR) return fail_errno("epoll_wait", errno);
    for (int i = 0; i < n; ++i) {
      if (ready[i].data.fd == signals->get()) {
        spdlog::info("stopping; the datapath stays attached and keeps enforcing");
        return {};
      }
    }
    if (auto polled = events->poll(0); !polled) return std::unexpected(polled.error());
    if (events->malformed() != malformed_seen) {
      spdlog::warn("skipped {} malformed tf_events records", events->malformed() - malformed_seen);
      malformed_seen = events->malformed();
    }
  }
}

}  // namespace trustfence::runtime
