// What TypedMap can be asked without privileges: descriptors that are not
// BPF maps are refused. Size checks against real maps are in the bpf tier.

#include "trustfence/datapath/typed_map.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "trustfence/abi.h"

namespace {

using trustfence::UniqueFd;
using trustfence::datapath::TypedMap;

TEST(TypedMap, AdoptRefusesADescriptorThatIsNotABpfMap) {
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(null.valid());
  auto map = TypedMap<std::uint64_t, tf_conn>::adopt(std::move(null), "tf_conns");
  EXPECT_FALSE(map.has_value());
}

TEST(TypedMap, AdoptRefusesAnEmptyDescriptor) {
  auto map = TypedMap<std::uint64_t, tf_conn>::adopt(UniqueFd(), "tf_conns");
  EXPECT_FALSE(map.has_value());
}

TEST(MapInfo, FailsOnADescriptorThatIsNotABpfObject) {
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(null.valid());
  auto info = trustfence::datapath::map_info(null.get());
  ASSERT_FALSE(info.has_value());
  EXPECT_NE(info.error().message.find("BPF map info"), std::string::npos) << info.error().message;
}

TEST(DupFd, CopiesAnOpenDescriptor) {
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(null.valid());
  auto copy = trustfence::datapath::dup_fd(null.get(), "null");
  ASSERT_TRUE(copy.has_value()) << copy.error().message;
  EXPECT_NE(copy->get(), null.get());
  EXPECT_GE(::fcntl(copy->get(), F_GETFD), 0);
  EXPECT_TRUE(::fcntl(copy->get(), F_GETFD) & FD_CLOEXEC);
}

TEST(DupFd, NamesWhatItCouldNotCopy) {
  auto copy = trustfence::datapath::dup_fd(-1, "tf_events");
  ASSERT_FALSE(copy.has_value());
  EXPECT_NE(copy.error().message.find("tf_events"), std::string::npos) << copy.error().message;
}

TEST(OpenPinned, NamesThePathItCouldNotOpen) {
  auto fd = trustfence::datapath::open_pinned("/nonexistent/trustfence/tf_conns");
  ASSERT_FALSE(fd.has_value());
  EXPECT_NE(fd.error().message.find("/nonexistent/trustfence/tf_conns"), std::string::npos)
      << fd.error().message;
}

}  // namespace
