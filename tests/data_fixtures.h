// Fixtures of the token-file and loader tests (tests/test_shards.cpp, tests/test_loader.cpp): the
// worked example of docs/data.md §Token files (and tests/errors.h); the path of a zero-shot task
// file under tests/fixtures/tasks (tests/test_tasks.cpp, tests/test_zero_shot.cpp).
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "tests/errors.h"  // error_of, contains

namespace unipool::test {

// The first n bytes as lower-case hex (to compare files with the byte listings of docs/data.md).
inline std::string hex(const std::vector<uint8_t>& bytes, size_t n) {
  std::string s;
  char b[3];
  for (size_t i = 0; i < n && i < bytes.size(); ++i) {
    std::snprintf(b, sizeof(b), "%02x", bytes[i]);
    s += b;
  }
  return s;
}

// The worked example of docs/data.md §Token files (Megatron): three GPT-2 documents with the EOD
// appended.
inline const std::vector<std::vector<int32_t>> kExampleDocs = {
    {15496, 995, 0, 50256},
    {464, 2068, 7586, 21831, 13, 50256},
    {600, 1388, 3419, 1391, 1441, 657, 26, 1782, 50256}};

// tests/fixtures/tasks/NAME in the source tree (small files in each task's format).
inline std::string task_fixture(const std::string& name) {
  return std::string(UNIPOOL_SOURCE_DIR) + "/tests/fixtures/tasks/" + name;
}

}  // namespace unipool::test
