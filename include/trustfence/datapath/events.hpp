#pragma once

// Consumer of tf_events: hands each well-formed record to a callback as a
// typed Event; a record of the wrong size or kind is counted and skipped.

#include <bpf/libbpf.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "trustfence/abi.h"
#include "trustfence/common/result.hpp"

namespace trustfence::datapath {

// How often a reader should poll for records that came without a wake-up.
inline constexpr int kEventPollMs = 100;

struct Event {
  tf_event_kind kind;
  std::uint64_t cookie;
  std::uint64_t timestamp_ns;
  tf_conn conn;
};

// Validates one raw ring-buffer record.
Result<Event> decode_event(const void* data, std::size_t size);

class EventReader {
 public:
  using Callback = std::function<void(const Event&)>;

  static Result<EventReader> open(int ringbuf_fd, Callback callback);

  // Waits at most timeout_ms for a wake-up, then consumes every record
  // ready; returns the count. Only connections awaiting a verdict wake the
  // reader: closes and exempt connections are read by the next poll, so
  // poll on a short timeout (see kEventPollMs).
  Result<int> poll(int timeout_ms);
  // An epoll-able descriptor, readable when records are ready.
  int epoll_fd() const;
  std::uint64_t malformed() const { return state_->malformed; }

 private:
  struct State {
    Callback callback;
    std::uint64_t malformed = 0;
  };
  struct Deleter {
    void operator()(ring_buffer* rb) const { ring_buffer__free(rb); }
  };
  static int on_sample(void* ctx, void* data, std::size_t size);

  EventReader(std::unique_ptr<State> state, std::unique_ptr<ring_buffer, Deleter> rb)
      : state_(std::move(state)), rb_(std::move(rb)) {}

  std::unique_ptr<State> state_;  // stable address for libbpf's ctx
  std::unique_ptr<ring_buffer, Deleter> rb_;
};

}  // namespace trustfence::datapath
