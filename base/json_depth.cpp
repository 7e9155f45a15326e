#include "base/json_depth.h"

#include "base/error.h"

namespace unipool {

int json_nesting_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  const size_t n = text.size();
  for (size_t i = 0; i < n; ++i) {
    const char ch = text[i];
    if (ch == '"') {  // a string: skip to its closing quote
      for (++i; i < n && text[i] != '"'; ++i)
        if (text[i] == '\\') ++i;
    } else if (ch == '/' && i + 1 < n && text[i + 1] == '/') {  // a line comment
      while (i < n && text[i] != '\n') ++i;
    } else if (ch == '/' && i + 1 < n && text[i + 1] == '*') {  // a block comment
      for (i += 2; i + 1 < n && !(text[i] == '*' && text[i + 1] == '/'); ++i) {
      }
      ++i;
    } else if (ch == '[' || ch == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return limit + 1;
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

void check_json_depth(std::string_view text, const std::string& what) {
  check(json_nesting_depth(text) <= kMaxJsonDepth,
        what + ": JSON nested more than " + std::to_string(kMaxJsonDepth) + " levels deep");
}

}  // namespace unipool
