#include "trustfence/datapath/format.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstring>
#include <ctime>

namespace trustfence::datapath {
namespace {

std::string endpoint(std::uint8_t family, const __u32 addr[4], std::uint16_t port) {
  char buf[INET6_ADDRSTRLEN] = "?";
  bool mapped = family == AF_INET6 && addr[0] == 0 && addr[1] == 0 && addr[2] == htonl(0xffff);
  if (family == AF_INET || mapped) {
    inet_ntop(AF_INET, mapped ? &addr[3] : &addr[0], buf, sizeof(buf));
    return std::string(buf) + ":" + std::to_string(port);
  }
  if (family == AF_INET6) inet_ntop(AF_INET6, addr, buf, sizeof(buf));
  return "[" + std::string(buf) + "]:" + std::to_string(port);
}

}  // namespace

std::string local_endpoint(const tf_tuple& t) {
  return endpoint(t.family, t.local_addr, t.local_port);
}
std::string remote_endpoint(const tf_tuple& t) {
  return endpoint(t.family, t.remote_addr, t.remote_port);
}

std::uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL + ts.tv_nsec;
}

}  // namespace trustfence::datapath
