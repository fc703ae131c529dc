// The attestation channel's frame decoder on arbitrary bytes, fed in chunks
// whose sizes the input chooses: never crash, never buffer past the cap,
// stay failed after a violation, and whatever decodes re-encodes to exactly
// the bytes it came from.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "trustfence/attest/frame.hpp"

using trustfence::attest::decode_frame;
using trustfence::attest::encode;
using trustfence::attest::FrameDecoder;
using trustfence::attest::kMaxFrameSize;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// The first byte picks the chunk size (1..256), so byte-at-a-time and larger
// reads are both explored; the rest is the stream.
void fuzz_stream(std::span<const std::uint8_t> data) {
  if (data.empty()) return;
  std::size_t chunk = std::size_t{data[0]} + 1;
  std::span<const std::uint8_t> stream = data.subspan(1);
  std::span<const std::uint8_t> rest = stream;
  std::size_t decoded_bytes = 0;  // bytes of the stream accounted for by messages
  FrameDecoder decoder;
  while (!rest.empty() && !decoder.failed()) {
    auto in = rest.first(std::min(chunk, rest.size()));
    rest = rest.subspan(in.size());
    while (!in.empty()) {
      auto got = decoder.next(in);
      check(decoder.buffered() <= kMaxFrameSize);
      if (!got) {
        check(decoder.failed() && !got.error().message.empty());
        check(decoder.buffered() == 0);
        break;
      }
      if (!*got) continue;
      std::vector<std::uint8_t> again = encode(**got);
      check(again.size() <= kMaxFrameSize);
      check(decoded_bytes + again.size() <= stream.size());
      check(std::equal(again.begin(), again.end(), stream.begin() + decoded_bytes));
      auto whole = decode_frame(again);
      check(whole.has_value() && *whole == **got);
      decoded_bytes += again.size();
    }
  }
  if (decoder.failed()) {
    std::span<const std::uint8_t> more = stream;
    auto after = decoder.next(more);
    check(!after.has_value() && more.size() == stream.size());
  } else {
    check(decoded_bytes + decoder.buffered() == stream.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> input(data, size);
  fuzz_stream(input);
  // The whole input as one frame must agree with the decoder's view of it.
  auto whole = decode_frame(input);
  if (whole) {
    std::vector<std::uint8_t> again = encode(*whole);
    check(std::equal(again.begin(), again.end(), input.begin(), input.end()));
  }
  return 0;
}
