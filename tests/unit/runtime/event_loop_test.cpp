// The agent's event loop over real pipes: descriptor callbacks, one-shot
// timers, round-end hooks, and callbacks that change the loop under it.

#include "trustfence/runtime/event_loop.hpp"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trustfence/common/unique_fd.hpp"

namespace trustfence::runtime {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;

// A pipe; readable once poke() wrote a byte, until drain().
struct Pipe {
  Pipe() {
    int fds[2] = {-1, -1};
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    read_end.reset(fds[0]);
    write_end.reset(fds[1]);
  }
  void poke() const { EXPECT_EQ(::write(write_end.get(), "x", 1), 1); }
  void drain() const {
    char buffer[64];
    while (::read(read_end.get(), buffer, sizeof(buffer)) > 0) {
    }
  }
  int fd() const { return read_end.get(); }

  UniqueFd read_end;
  UniqueFd write_end;
};

class EventLoopTest : public ::testing::Test {
 protected:
  EventLoopTest() : loop_(EventLoop::create().value()) {
    loop_.on_round_end([this] { ++rounds_; });
  }

  // Runs until a callback stops the loop; a safety timer fails the test
  // rather than hang it.
  void run(std::chrono::milliseconds limit = 5s) {
    bool expired = false;
    auto guard = loop_.after(limit, [&] {
      expired = true;
      loop_.stop();
    });
    ASSERT_TRUE(loop_.run(100ms).has_value());
    loop_.cancel(guard);
    EXPECT_FALSE(expired) << "the loop was not stopped within " << limit.count() << " ms";
  }

  EventLoop loop_;
  int rounds_ = 0;
};

TEST_F(EventLoopTest, ReadyDescriptorCallbackFiresWithItsEvents) {
  Pipe pipe;
  std::uint32_t seen = 0;
  ASSERT_TRUE(loop_
                  .add(pipe.fd(), EPOLLIN,
                       [&](std::uint32_t events) {
                         seen = events;
                         pipe.drain();
                         loop_.stop();
                       })
                  .has_value());
  EXPECT_EQ(loop_.watched(), 1u);
  pipe.poke();
  run();
  EXPECT_TRUE(seen & EPOLLIN);
}

TEST_F(EventLoopTest, ModifyChangesTheEventsWatched) {
  Pipe pipe;
  std::vector<std::uint32_t> seen;
  // The write end of an empty pipe is writable at once.
  ASSERT_TRUE(loop_
                  .add(pipe.write_end.get(), 0,
                       [&](std::uint32_t events) {
                         seen.push_back(events);
                         loop_.stop();
                       })
                  .has_value());
  ASSERT_TRUE(loop_.modify(pipe.write_end.get(), EPOLLOUT).has_value());
  run();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_TRUE(seen[0] & EPOLLOUT);
}

TEST_F(EventLoopTest, AddAndModifyErrorsAreValues) {
  Pipe pipe;
  auto unwatched = loop_.modify(pipe.fd(), EPOLLIN);
  ASSERT_FALSE(unwatched.has_value());
  EXPECT_EQ(unwatched.error().code, Errc::kNotFound);

  ASSERT_TRUE(loop_.add(pipe.fd(), EPOLLIN, [](std::uint32_t) {}).has_value());
  EXPECT_FALSE(loop_.add(pipe.fd(), EPOLLIN, [](std::uint32_t) {}).has_value()) << "twice";
  EXPECT_FALSE(loop_.add(-1, EPOLLIN, [](std::uint32_t) {}).has_value());
  EXPECT_EQ(loop_.watched(), 1u);
  loop_.remove(pipe.fd());
  loop_.remove(pipe.fd());  // a second remove is harmless
  EXPECT_EQ(loop_.watched(), 0u);
}

TEST_F(EventLoopTest, ACallbackRemovingItselfIsNotCalledAgain) {
  Pipe pipe;
  auto calls = std::make_shared<int>(0);
  // The callback owns state it uses after removing itself.
  ASSERT_TRUE(loop_
                  .add(pipe.fd(), EPOLLIN,
                       [this, &pipe, calls](std::uint32_t) {
                         loop_.remove(pipe.fd());
                         ++*calls;  // still alive: remove() from inside is safe
                       })
                  .has_value());
  pipe.poke();  // never drained: level-triggered, it would fire every round
  loop_.after(50ms, [this] { loop_.stop(); });
  run();
  EXPECT_EQ(*calls, 1);
  EXPECT_EQ(loop_.watched(), 0u);
  EXPECT_GT(rounds_, 1);
}

// Two descriptors ready in one round: whichever runs first removes the
// other, which must then not be called for the event already collected.
TEST_F(EventLoopTest, ADescriptorRemovedByAnEarlierCallbackInTheRoundIsSkipped) {
  Pipe a, b;
  std::vector<int> called;
  auto add = [&](Pipe* self, Pipe* other, int which) {
    ASSERT_TRUE(loop_
                    .add(self->fd(), EPOLLIN,
                         [&called, this, self, other, which](std::uint32_t) {
                           called.push_back(which);
                           loop_.remove(other->fd());
                           self->drain();
                         })
                    .has_value());
  };
  add(&a, &b, 1);
  add(&b, &a, 2);
  a.poke();
  b.poke();
  loop_.after(50ms, [this] { loop_.stop(); });
  run();
  ASSERT_EQ(called.size(), 1u) << "the removed descriptor was called";
  EXPECT_EQ(loop_.watched(), 1u);
}

// Removed and re-added (the same fd number, maybe another file) within the
// round: the event collected for the old registration goes to nobody; the
// new one is called from the next round on.
TEST_F(EventLoopTest, ADescriptorReAddedInTheRoundGetsOnlyNewEvents) {
  Pipe a, b;
  int removed_in_round = -1;
  std::vector<int> new_callback_rounds;
  int old_calls = 0;
  auto add = [&](Pipe* self, Pipe* other) {
    ASSERT_TRUE(loop_
                    .add(self->fd(), EPOLLIN,
                         [&, self, other](std::uint32_t) {
                           if (removed_in_round >= 0) {
                             ++old_calls;
                             return;
                           }
                           removed_in_round = rounds_;
                           loop_.remove(other->fd());
                           ASSERT_TRUE(loop_
                                           .add(other->fd(), EPOLLIN,
                                                [&, other](std::uint32_t) {
                                                  new_callback_rounds.push_back(rounds_);
                                                  other->drain();
                                                  loop_.stop();
                                                })
                                           .has_value());
                           self->drain();
                         })
                    .has_value());
  };
  add(&a, &b);
  add(&b, &a);
  a.poke();
  b.poke();
  run();
  EXPECT_EQ(old_calls, 0);
  ASSERT_EQ(new_callback_rounds.size(), 1u);
  EXPECT_GT(new_callback_rounds[0], removed_in_round);
}

TEST_F(EventLoopTest, TimersFireInDeadlineOrder) {
  const auto start = SteadyClock::now();
  std::vector<std::string> fired;
  loop_.after(30ms, [&] {
    fired.push_back("30ms");
    loop_.stop();
  });
  loop_.after(10ms, [&] { fired.push_back("10ms"); });
  loop_.after(20ms, [&] { fired.push_back("20ms"); });
  loop_.after(0ms, [&] { fired.push_back("0ms"); });
  EXPECT_EQ(loop_.timers(), 4u);
  run();
  EXPECT_THAT(fired, ElementsAre("0ms", "10ms", "20ms", "30ms"));
  EXPECT_GE(SteadyClock::now() - start, 30ms);
  EXPECT_EQ(loop_.timers(), 0u);
}

TEST_F(EventLoopTest, TimerIdsAreNeverReused) {
  const auto first = loop_.after(1h, [] {});
  loop_.cancel(first);
  const auto second = loop_.after(1h, [] {});
  EXPECT_NE(first, second);
  loop_.cancel(second);
}

TEST_F(EventLoopTest, ACancelledTimerDoesNotFire) {
  bool cancelled_fired = false;
  const auto id = loop_.after(10ms, [&] { cancelled_fired = true; });
  loop_.after(40ms, [this] { loop_.stop(); });
  loop_.cancel(id);
  EXPECT_EQ(loop_.timers(), 1u);
  run();
  EXPECT_FALSE(cancelled_fired);
  loop_.cancel(id);      // twice
  loop_.cancel(999999);  // never issued
}

// Both due in the same round: the first cancels the second.
TEST_F(EventLoopTest, ATimerCancelledByAnEarlierOneInTheSameRoundDoesNotFire) {
  bool second_fired = false;
  EventLoop::TimerId second = 0;
  loop_.after(0ms, [&] { loop_.cancel(second); });
  second = loop_.after(0ms, [&] { second_fired = true; });
  loop_.after(30ms, [this] { loop_.stop(); });
  run();
  EXPECT_FALSE(second_fired);
}

TEST_F(EventLoopTest, ATimerCancellingItselfIsHarmless) {
  EventLoop::TimerId self = 0;
  int calls = 0;
  self = loop_.after(0ms, [&] {
    ++calls;
    loop_.cancel(self);
    loop_.stop();
  });
  run();
  EXPECT_EQ(calls, 1);
}

// A zero-delay timer added from a timer callback waits for the next round,
// so a callback re-arming itself cannot starve the descriptors.
TEST_F(EventLoopTest, AZeroDelayTimerAddedByATimerRunsNextRound) {
  int armed_in = -1;
  int ran_in = -1;
  loop_.after(0ms, [&] {
    armed_in = rounds_;
    loop_.after(0ms, [&] {
      ran_in = rounds_;
      loop_.stop();
    });
  });
  run();
  EXPECT_EQ(ran_in, armed_in + 1);
}

TEST_F(EventLoopTest, ATimerReArmingItselfDoesNotStarveDescriptors) {
  Pipe pipe;
  int ticks = 0;
  std::function<void()> tick = [&] {
    ++ticks;
    loop_.after(0ms, tick);
  };
  loop_.after(0ms, tick);
  ASSERT_TRUE(loop_.add(pipe.fd(), EPOLLIN, [&](std::uint32_t) { loop_.stop(); }).has_value());
  pipe.poke();
  run();
  EXPECT_LE(ticks, rounds_ + 1);
}

TEST_F(EventLoopTest, RoundEndHooksRunAfterDescriptorsAndTimersInOrder) {
  Pipe pipe;
  std::vector<std::string> log;
  ASSERT_TRUE(loop_
                  .add(pipe.fd(), EPOLLIN,
                       [&](std::uint32_t) {
                         log.push_back("fd");
                         pipe.drain();
                       })
                  .has_value());
  loop_.after(0ms, [&] { log.push_back("timer"); });
  loop_.on_round_end([&] { log.push_back("end 1"); });
  loop_.on_round_end([&] {
    log.push_back("end 2");
    loop_.stop();
  });
  pipe.poke();
  run();
  EXPECT_THAT(log, ElementsAre("fd", "timer", "end 1", "end 2"));
}

// An idle loop still ends rounds, at most max_wait apart.
TEST_F(EventLoopTest, RoundEndHooksRunWhenNothingIsReady) {
  int idle_rounds = 0;
  loop_.on_round_end([&] {
    if (++idle_rounds == 3) loop_.stop();
  });
  const auto start = SteadyClock::now();
  ASSERT_TRUE(loop_.run(5ms).has_value());
  EXPECT_EQ(idle_rounds, 3);
  EXPECT_LT(SteadyClock::now() - start, 2s);
}

// stop() ends the round early: later ready descriptors and due timers wait
// for the next run(), which dispatches them.
TEST_F(EventLoopTest, StopLeavesTheRestOfTheRoundForTheNextRun) {
  Pipe a, b;
  int fd_calls = 0;
  bool stop_on_fd = true;
  for (Pipe* p : {&a, &b}) {
    ASSERT_TRUE(loop_
                    .add(p->fd(), EPOLLIN,
                         [&, p](std::uint32_t) {
                           ++fd_calls;
                           p->drain();
                           if (stop_on_fd) loop_.stop();
                         })
                    .has_value());
  }
  bool timer_fired = false;
  loop_.after(0ms, [&] { timer_fired = true; });
  a.poke();
  b.poke();
  run();
  EXPECT_EQ(fd_calls, 1);
  EXPECT_FALSE(timer_fired);
  EXPECT_EQ(loop_.timers(), 1u);

  stop_on_fd = false;
  loop_.on_round_end([this] { loop_.stop(); });
  run();
  EXPECT_EQ(fd_calls, 2);
  EXPECT_TRUE(timer_fired);
}

TEST_F(EventLoopTest, StopFromATimerReturnsFromRun) {
  bool later_fired = false;
  loop_.after(0ms, [this] { loop_.stop(); });
  loop_.after(0ms, [&] { later_fired = true; });
  run();
  EXPECT_FALSE(later_fired) << "a due timer after stop() ran in the same round";
  loop_.after(20ms, [this] { loop_.stop(); });
  run();
  EXPECT_TRUE(later_fired);
}

TEST_F(EventLoopTest, WaitsNoLongerThanTheNextTimer) {
  const auto start = SteadyClock::now();
  loop_.after(20ms, [this] { loop_.stop(); });
  ASSERT_TRUE(loop_.run(10s).has_value());
  const auto elapsed = SteadyClock::now() - start;
  EXPECT_GE(elapsed, 20ms);
  EXPECT_LT(elapsed, 2s);
}

TEST_F(EventLoopTest, AMovedLoopKeepsItsRegistrations) {
  Pipe pipe;
  bool fired = false;
  EventLoop other = EventLoop::create().value();
  ASSERT_TRUE(other.add(pipe.fd(), EPOLLIN, [&](std::uint32_t) { fired = true; }).has_value());
  EventLoop moved = std::move(other);
  moved.on_round_end([&] {
    if (fired) moved.stop();
  });
  moved.after(5s, [&] { moved.stop(); });
  pipe.poke();
  ASSERT_TRUE(moved.run(100ms).has_value());
  EXPECT_TRUE(fired);
  EXPECT_EQ(moved.watched(), 1u);
}

}  // namespace
}  // namespace trustfence::runtime
