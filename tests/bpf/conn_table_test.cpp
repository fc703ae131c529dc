// BpfConnTable over a real BPF hash map must keep the ConnTable contract the
// in-memory fake keeps (tests/support/conn_table_contract.hpp), and TypedMap
// must refuse a map whose key or value size is not its types'.

#include "trustfence/datapath/conn_table.hpp"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "support/conn_table_contract.hpp"
#include "support/privileges.hpp"
#include "trustfence/common/unique_fd.hpp"
#include "trustfence/datapath/typed_map.hpp"

namespace {

using trustfence::Errc;
using trustfence::UniqueFd;
using trustfence::datapath::BpfConnTable;
using trustfence::datapath::ConnTable;
using trustfence::datapath::Cookie;
using trustfence::datapath::TypedMap;

// A map shaped like tf_conns; -1 (errno set) when the kernel refuses.
int create_conns_map(unsigned key_size, unsigned value_size, unsigned max_entries) {
  return bpf_map_create(BPF_MAP_TYPE_HASH, "tf_conns", key_size, value_size, max_entries, nullptr);
}

// The agent's view (a TypedMap adopted from the map) and the kernel's (a
// second descriptor of the same map, written with raw map calls as
// tf_sockops writes it).
class BpfHarness {
 public:
  static constexpr std::size_t kCapacity = 1024;

  void SetUp() {
    TF_REQUIRE_ROOT();
    int fd = create_conns_map(sizeof(__u64), sizeof(tf_conn), kCapacity);
    ASSERT_GE(fd, 0) << "bpf_map_create: " << std::strerror(errno);
    map_fd_.reset(fd);
  }

  std::unique_ptr<ConnTable> make_table() {
    int copy = ::fcntl(map_fd_.get(), F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
      ADD_FAILURE() << "dup: " << std::strerror(errno);
      return nullptr;
    }
    auto map = TypedMap<Cookie, tf_conn>::adopt(UniqueFd(copy), "tf_conns");
    if (!map) {
      ADD_FAILURE() << map.error().message;
      return nullptr;
    }
    return std::make_unique<BpfConnTable>(std::move(*map));
  }

  void kernel_insert(Cookie cookie, const tf_conn& conn) {
    __u64 key = cookie;
    ASSERT_EQ(bpf_map_update_elem(map_fd_.get(), &key, &conn, BPF_NOEXIST), 0)
        << "cookie " << cookie << ": " << std::strerror(errno);
  }

  void kernel_close(Cookie cookie) {
    __u64 key = cookie;
    ASSERT_EQ(bpf_map_delete_elem(map_fd_.get(), &key), 0)
        << "cookie " << cookie << ": " << std::strerror(errno);
  }

 private:
  UniqueFd map_fd_;
};

}  // namespace

namespace trustfence::testing {
INSTANTIATE_TYPED_TEST_SUITE_P(Bpf, ConnTableContract, ::testing::Types<BpfHarness>);
}  // namespace trustfence::testing

namespace {

struct SizeCase {
  const char* name;
  unsigned key_size;
  unsigned value_size;
};

void PrintTo(const SizeCase& c, std::ostream* os) { *os << c.name; }

class TypedMapAdoptSizes : public ::testing::TestWithParam<SizeCase> {};

TEST_P(TypedMapAdoptSizes, RefusesAMapOfOtherKeyOrValueSize) {
  TF_REQUIRE_ROOT();
  const SizeCase& c = GetParam();
  int fd = create_conns_map(c.key_size, c.value_size, 16);
  ASSERT_GE(fd, 0) << "bpf_map_create: " << std::strerror(errno);

  auto map = TypedMap<Cookie, tf_conn>::adopt(UniqueFd(fd), "tf_conns");
  ASSERT_FALSE(map.has_value()) << "adopted a " << c.key_size << "/" << c.value_size << " map";
  EXPECT_EQ(map.error().code, Errc::kIncompatible);
  const std::string& message = map.error().message;
  EXPECT_NE(message.find("tf_conns"), std::string::npos) << message;
  EXPECT_NE(message.find(std::to_string(c.key_size) + "/" + std::to_string(c.value_size)),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("expected 8/" + std::to_string(sizeof(tf_conn))), std::string::npos)
      << message;
}

INSTANTIATE_TEST_SUITE_P(Table, TypedMapAdoptSizes,
                         ::testing::Values(SizeCase{"value_of_an_older_abi", 8,
                                                    static_cast<unsigned>(sizeof(tf_conn) + 8)},
                                           SizeCase{"value_one_byte_long", 8, sizeof(tf_conn) + 1},
                                           SizeCase{"narrow_key", 4, sizeof(tf_conn)},
                                           SizeCase{"both_wrong", 16, 96}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(TypedMapAdopt, AcceptsAMapOfItsSizesAndReportsItsCapacity) {
  TF_REQUIRE_ROOT();
  int fd = create_conns_map(sizeof(__u64), sizeof(tf_conn), 64);
  ASSERT_GE(fd, 0) << "bpf_map_create: " << std::strerror(errno);

  auto map = TypedMap<Cookie, tf_conn>::adopt(UniqueFd(fd), "tf_conns");
  ASSERT_TRUE(map.has_value()) << map.error().message;
  EXPECT_EQ(map->max_entries(), 64u);
  EXPECT_EQ(map->name(), "tf_conns");
}

TEST(BpfConnTable, AFullTableStillTakesVerdictsForItsEntries) {
  TF_REQUIRE_ROOT();
  int fd = create_conns_map(sizeof(__u64), sizeof(tf_conn), 2);
  ASSERT_GE(fd, 0) << "bpf_map_create: " << std::strerror(errno);
  UniqueFd kernel(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
  auto map = TypedMap<Cookie, tf_conn>::adopt(UniqueFd(fd), "tf_conns");
  ASSERT_TRUE(map.has_value()) << map.error().message;
  BpfConnTable table(std::move(*map));
  for (__u64 cookie : {1ULL, 2ULL}) {
    tf_conn conn = trustfence::testing::kernel_conn(static_cast<std::uint32_t>(cookie));
    ASSERT_EQ(bpf_map_update_elem(kernel.get(), &cookie, &conn, BPF_NOEXIST), 0);
  }

  auto written = table.set_verdict(3, {.verdict = TF_VERDICT_ALLOW});
  ASSERT_TRUE(written.has_value()) << written.error().message;
  EXPECT_FALSE(*written);
  auto decided = table.set_verdict(2, {.verdict = TF_VERDICT_DENY, .reason = TF_REASON_BAD_CHAIN});
  ASSERT_TRUE(decided.has_value()) << decided.error().message;
  EXPECT_TRUE(*decided) << "a full table refused a verdict for an existing entry";
}

}  // namespace
