// Test fixtures on disk: a fresh directory under /tmp per test, and whole-file reads.
#pragma once
#include <stdlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/catch.h"

namespace unipool::test {

// A fresh directory /tmp/unipool_test_XXXXXX, removed with everything in it at the end of the scope
// (kept when the environment variable KEEP_TMP is set, for debugging).
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/unipool_test_XXXXXX";
    const char* p = ::mkdtemp(tmpl);
    REQUIRE(p != nullptr);
    path = p;
  }
  ~TempDir() {
    if (std::getenv("KEEP_TMP")) return;
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path + "/" + name; }
  std::string operator/(const std::string& name) const { return file(name); }
};

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)),
                              std::istreambuf_iterator<char>());
}

}  // namespace unipool::test
