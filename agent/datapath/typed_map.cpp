#include "trustfence/datapath/typed_map.hpp"

#include <fcntl.h>

namespace trustfence::datapath {

Result<MapInfo> map_info(int fd) {
  bpf_map_info info{};
  __u32 len = sizeof(info);
  if (int err = bpf_obj_get_info_by_fd(fd, &info, &len); err != 0)
    return fail_errno("reading BPF map info", -err);
  return MapInfo{info.type, info.key_size, info.value_size, info.max_entries, info.name};
}

Result<UniqueFd> dup_fd(int fd, std::string_view what) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0)
    return fail_errno(std::string("duplicating descriptor of ") + std::string(what), errno);
  return UniqueFd(copy);
}

Result<UniqueFd> open_pinned(const std::string& path) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return fail_errno("opening pinned " + path, errno);
  return UniqueFd(fd);
}

}  // namespace trustfence::datapath
