// A guard for JSON from outside the process (config files, --set values, state.json, safetensors
// headers, JSONL documents): its nesting depth is measured before nlohmann::json parses it. Parts
// of that library recurse once per level (a ~100,000-deep nest of objects overflows the stack and
// kills the process with SIGSEGV); no file unipool reads legitimately nests more than a few levels.
#pragma once
#include <string>
#include <string_view>

namespace unipool {

constexpr int kMaxJsonDepth = 512;

// The deepest nesting of [ and { in `text`. Brackets inside strings (escapes honoured) and inside
// // and /* */ comments (which config files may hold) do not count. Stops scanning once the depth
// exceeds `limit` and returns limit + 1.
int json_nesting_depth(std::string_view text, int limit = kMaxJsonDepth);

// Error "<what>: JSON nested more than 512 levels deep" when it is.
void check_json_depth(std::string_view text, const std::string& what);

}  // namespace unipool
