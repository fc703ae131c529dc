#include "trustfence/common/result.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace {

using trustfence::Errc;

struct ErrnoCase {
  int err;
  Errc code;
};

class ErrcFromErrno : public ::testing::TestWithParam<ErrnoCase> {};

TEST_P(ErrcFromErrno, MapsToTheErrcAnOperatorActsOn) {
  EXPECT_EQ(trustfence::errc_from_errno(GetParam().err), GetParam().code)
      << std::strerror(GetParam().err);
}

INSTANTIATE_TEST_SUITE_P(Table, ErrcFromErrno,
                         ::testing::Values(ErrnoCase{EPERM, Errc::kPermissionDenied},
                                           ErrnoCase{EACCES, Errc::kPermissionDenied},
                                           ErrnoCase{ENOENT, Errc::kNotFound},
                                           ErrnoCase{EINVAL, Errc::kInvalidArgument},
                                           ErrnoCase{EOPNOTSUPP, Errc::kUnsupported},
                                           ErrnoCase{ENOSYS, Errc::kUnsupported},
                                           ErrnoCase{EIO, Errc::kIo}, ErrnoCase{E2BIG, Errc::kIo},
                                           ErrnoCase{EBADF, Errc::kIo}));

TEST(DescribeErrno, NamesWhatFailedAndWhy) {
  EXPECT_EQ(trustfence::describe_errno("opening /x", ENOENT),
            std::string("opening /x: ") + std::strerror(ENOENT));
}

TEST(FailErrno, CarriesTheMappedCodeAndTheDescription) {
  trustfence::Result<int> result = trustfence::fail_errno("pinning tf_conns", EACCES);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, Errc::kPermissionDenied);
  EXPECT_EQ(result.error().message, std::string("pinning tf_conns: ") + std::strerror(EACCES));
}

TEST(Fail, CarriesCodeAndMessageUnchanged) {
  trustfence::Result<void> result = trustfence::fail(Errc::kIncompatible, "ABI 0 in tf_meta");
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code, Errc::kIncompatible);
  EXPECT_EQ(result.error().message, "ABI 0 in tf_meta");
}

}  // namespace
