#pragma once

#include <cstdint>
#include <string>

#include "trustfence/abi.h"

namespace trustfence::datapath {

// "10.0.0.1:80" or "[fd00::1]:80"; IPv4-mapped IPv6 shown as IPv4.
std::string local_endpoint(const tf_tuple& tuple);
std::string remote_endpoint(const tf_tuple& tuple);

// Nanoseconds of CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
std::uint64_t monotonic_ns();

}  // namespace trustfence::datapath
