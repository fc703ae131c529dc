#pragma once

// Log output: spdlog's text lines, or one JSON object per line
// ({"time":..,"level":..,"msg":..}) for log pipelines. Messages are
// escaped, so a hostile string (a peer's SPIFFE ID, a file name) cannot
// forge a field or a line.

#include <string>

namespace trustfence {

// format: "text" or "json"; level as spdlog names it.
void configure_logging(const std::string& format, const std::string& level);

// text as a JSON string body: quotes, backslashes and control characters
// escaped (\uXXXX), bytes >= 0x80 passed through.
std::string json_escape(std::string_view text);

}  // namespace trustfence
