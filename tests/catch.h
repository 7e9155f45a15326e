// Catch2 2 (Debian) and Catch2 3 (the GPU machine) behind one include.
#pragma once
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#define UNIPOOL_CATCH3 1
#else
#include <catch2/catch.hpp>
#endif

#include <string>

#ifdef UNIPOOL_CATCH3
using Catch::Approx;
// CHECK_THAT(message, HasSubstring("key")): Catch2 3 renamed the string matcher.
inline auto HasSubstring(const std::string& s) {
  return Catch::Matchers::ContainsSubstring(s);
}
#else
inline auto HasSubstring(const std::string& s) {
  return Catch::Matchers::Contains(s);
}
#endif
