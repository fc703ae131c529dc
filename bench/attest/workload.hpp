#pragma once

// The benchmark's workloads, run as subcommands of the benchmark binary
// itself so they are real processes inside a node's netns and cgroup:
//
//   tf_bench_attest serve PORT
//       listens on 0.0.0.0:PORT; for each connection: read 1 byte, write
//       1 byte, close (one epoll loop, never blocking on one connection)
//   tf_bench_attest http PORT
//       listens on 0.0.0.0:PORT, an HTTP/1.1 keep-alive responder for wrk:
//       one thread per connection, a bounded request buffer; every request
//       (headers up to the blank line, no body) gets the same small 200
//       response if it is a GET, 400 and close otherwise
//   tf_bench_attest client ttfb IP:PORT SAMPLES WARMUP
//       sequential connections; prints {"samples_us": [...], ...}: from just
//       before connect() to the reply byte read (WARMUP first, not recorded)
//   tf_bench_attest client rate IP:PORT THREADS SECONDS
//       THREADS loops of connect, 1-byte request, 1-byte reply, close, for
//       SECONDS; prints {"connections": n, "seconds": s, ...}
//
// The client waits for the server's close before closing, so TIME_WAIT
// lands on the server's node and the client's ephemeral ports never run
// out. Each figure the client prints is JSON on one line of stdout.

#include <string>
#include <vector>

namespace trustfence::bench::attest {

// A connection with no reply within this long counts as failed.
inline constexpr int kIoTimeoutSeconds = 5;
// Samples at or above it are a retransmission stall (the kernel's minimum
// RTO is 200 ms).
inline constexpr double kStallUs = 200'000;

// `serve ...` and `client ...`: the process's exit code.
int serve_main(const std::vector<std::string>& args);
// `http PORT`: the process's exit code.
int http_main(const std::vector<std::string>& args);
int client_main(const std::vector<std::string>& args);

}  // namespace trustfence::bench::attest
