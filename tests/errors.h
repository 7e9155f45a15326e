// Two helpers for tests that look at error messages: the message an Error carries, and a substring
// test. Shared by every test file that checks messages (one definition: they are inline).
#pragma once
#include <functional>
#include <string>

#include "base/error.h"

namespace unipool::test {

// The message of the unipool::Error that f throws, or "<no error>".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const unipool::Error& e) {
    return e.what();
  }
  return "<no error>";
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace unipool::test
