#include "trustfence/datapath/events.hpp"

#include <cstring>

namespace trustfence::datapath {

Result<Event> decode_event(const void* data, std::size_t size) {
  if (size != sizeof(tf_event))
    return fail(Errc::kIncompatible, "tf_events record of " + std::to_string(size) +
                                         " bytes, expected " + std::to_string(sizeof(tf_event)));
  tf_event raw;
  std::memcpy(&raw, data, sizeof(raw));
  if (raw.kind != TF_EVENT_NEW && raw.kind != TF_EVENT_CLOSE)
    return fail(Errc::kIncompatible,
                "tf_events record of unknown kind " + std::to_string(raw.kind));
  if (raw.conn.verdict >= TF_VERDICT_COUNT || raw.conn.reason >= TF_REASON_COUNT ||
      (raw.conn.direction != TF_DIRECTION_OUTBOUND && raw.conn.direction != TF_DIRECTION_INBOUND))
    return fail(Errc::kIncompatible,
                "tf_events record with out-of-range verdict, reason or direction");
  return Event{static_cast<tf_event_kind>(raw.kind), raw.cookie, raw.timestamp_ns, raw.conn};
}

int EventReader::on_sample(void* ctx, void* data, std::size_t size) {
  auto* state = static_cast<State*>(ctx);
  auto event = decode_event(data, size);
  if (!event) {
    ++state->malformed;
    return 0;
  }
  state->callback(*event);
  return 0;
}

Result<EventReader> EventReader::open(int ringbuf_fd, Callback callback) {
  auto state = std::make_unique<State>();
  state->callback = std::move(callback);
  ring_buffer* rb = ring_buffer__new(ringbuf_fd, &EventReader::on_sample, state.get(), nullptr);
  if (!rb) return fail_errno("opening the tf_events ring buffer", errno);
  return EventReader(std::move(state), std::unique_ptr<ring_buffer, Deleter>(rb));
}

Result<int> EventReader::poll(int timeout_ms) {
  int woken = ring_buffer__poll(rb_.get(), timeout_ms);
  if (woken < 0 && woken != -EINTR) return fail_errno("polling tf_events", -woken);
  // Records published without a wake-up are read here too.
  int rest = ring_buffer__consume(rb_.get());
  if (rest < 0) return fail_errno("reading tf_events", -rest);
  return (woken < 0 ? 0 : woken) + rest;
}

int EventReader::epoll_fd() const { return ring_buffer__epoll_fd(rb_.get()); }

}  // namespace trustfence::datapath
