// libFuzzer target: the config loader (engine/config.h) as `unipool train --config FILE --set ...`
// drives it, with check_data false.
//
// Input: the config file's bytes, then optionally a NUL and the `--set` assignments ("key=value"),
// NUL-separated (at most 8; a config file holds no NUL, an assignment may hold a newline).
// The file is written to the process's scratch directory and read with read_config_file (a "base"
// may name a preset of configs/ or a file), then load_config applies the assignments.
// A config that loads must also be writable and re-loadable, as a run's config.json and a
// checkpoint's state.json config are: dump_json(to_json()) never throws, parses, loads again with
// no error and gives the same JSON text.
// Expected outcome for a bad input: unipool::Error. std::bad_alloc is a finding: validating a
// config of a few bytes must not take gigabytes (fuzz_util.h).
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/json_fields.h"
#include "engine/config.h"
#include "fuzz/fuzz_util.h"

using namespace unipool;
using namespace unipool::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = scratch("config.json");
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  write_bytes(path, std::string_view(input).substr(0, nul));
  std::vector<std::string> overrides;
  if (nul != std::string::npos) {
    size_t start = nul + 1;
    while (overrides.size() < 8) {
      const size_t end = input.find('\0', start);
      overrides.push_back(input.substr(start, end == std::string::npos ? end : end - start));
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }

  nlohmann::json file;
  Config config;
  if (!guard([&] { file = read_config_file(path); })) return 0;
  if (!guard([&] { config = load_config(file, overrides, /*check_data=*/false); })) return 0;

  // Written as train writes config.json (and checkpoint.cpp the state's config), read back.
  const std::string text = dump_json(config.to_json(), 2);
  const nlohmann::json again = nlohmann::json::parse(text);
  Config reloaded;
  must("the config as written does not load again", [&] {
    reloaded = load_config(again, {}, /*check_data=*/false);
  });
  FUZZ_ASSERT(dump_json(reloaded.to_json(), 2) == text);
  return 0;
}
