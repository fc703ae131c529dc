#include "pin_dir_option.hpp"

#include <fstream>

#include "trustfence/datapath/datapath.hpp"

namespace trustfence::cli {

Result<std::string> pin_dir_from(const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    bool has_value = i + 1 < args.size();
    if (args[i] == "--pin-dir") {
      if (!has_value) return fail(Errc::kInvalidArgument, "--pin-dir needs a directory");
      return args[i + 1];
    }
    if (args[i] == "--config") {
      if (!has_value) return fail(Errc::kInvalidArgument, "--config needs a file");
      std::ifstream in(args[i + 1]);
      if (!in) return fail_errno("config: cannot read " + args[i + 1], errno);
      std::string line;
      while (std::getline(in, line)) {
        auto eq = line.find('=');
        if (eq == std::string::npos) continue;
        auto key = line.substr(0, eq);
        key.erase(0, key.find_first_not_of(" \t"));
        key.erase(key.find_last_not_of(" \t") + 1);
        if (key != "pin-dir") continue;
        auto value = line.substr(eq + 1);
        value = value.substr(0, value.find('#'));
        value.erase(0, value.find_first_not_of(" \t"));
        value.erase(value.find_last_not_of(" \t\r") + 1);
        return value;
      }
    }
  }
  return std::string(datapath::kDefaultPinDir);
}

}  // namespace trustfence::cli
