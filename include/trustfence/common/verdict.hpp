#pragma once

// Names of the ABI's closed sets (verdicts, reasons, directions), one place,
// shared by logs, the CLI, the API and metrics.

#include <optional>
#include <string_view>

#include "trustfence/abi.h"

namespace trustfence {

std::string_view to_string(tf_verdict verdict);
std::string_view to_string(tf_reason reason);
std::string_view to_string(tf_direction direction);
std::string_view to_string(tf_action action);
std::string_view to_string(tf_packet_dir dir);
std::string_view to_string(tf_counter counter);

std::optional<tf_verdict> verdict_from_string(std::string_view name);
std::optional<tf_reason> reason_from_string(std::string_view name);

// Bytes from the kernel are checked before they become enum values.
std::optional<tf_verdict> verdict_from_byte(unsigned value);
std::optional<tf_reason> reason_from_byte(unsigned value);

}  // namespace trustfence
