// The presets in configs/: every one resolves (its "base" chain included) and validates, a base is
// merged under the file that names it, and a cycle of bases or a missing base is a clear Error.
#include <filesystem>
#include <fstream>
#include <string>

#include "engine/config.h"
#include "base/error.h"
#include "tests/catch.h"
#include "tests/tempdir.h"

using namespace unipool;
using json = nlohmann::json;

namespace {

// The message of the Error that read_config_file throws for `path` ("" when none is thrown).
std::string read_error(const std::string& path) {
  try {
    (void)read_config_file(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  REQUIRE(f.good());
  f << text;
}

}  // namespace

TEST_CASE("every preset in configs/ loads and validates", "[config]") {
  int presets = 0;
  for (const auto& entry : std::filesystem::directory_iterator(UNIPOOL_SOURCE_DIR "/configs")) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    const std::string path = entry.path().string();
    INFO(path);
    ++presets;
    json resolved;
    std::string error;
    try {
      resolved = read_config_file(path);
      const Config config = load_config(resolved, {}, /*check_data=*/false);
      CHECK(config.model.n_layer > 0);
    } catch (const std::exception& e) {
      error = e.what();
    }
    CHECK(error == "");
    CHECK(resolved.is_object());
    CHECK_FALSE(resolved.contains("base"));
  }
  CHECK(presets > 0);
}

TEST_CASE("a preset's base is resolved, its keys merged over it", "[config]") {
  const json moe_json = read_config_file(UNIPOOL_SOURCE_DIR "/configs/moe-182m.json");
  CHECK_FALSE(moe_json.contains("base"));
  const Config moe = load_config(moe_json, {}, /*check_data=*/false);
  CHECK(moe.model.ffn == FfnKind::moe);         // the file's
  CHECK(moe.model.experts_per_layer == 8);      // the file's
  CHECK(moe.loss.aux_coeff == 0.01);            // the file's
  CHECK(moe.model.d_model == 768);              // the base's (dense-182m)
  CHECK(moe.model.n_kv_head == 4);              // the base's
  CHECK(moe.train.steps == 60000);              // the base's
  CHECK(moe.train.out_dir == "runs/moe-182m");  // the file's, over the base's
  REQUIRE(moe.data.train.size() == 30);         // the base's list, whole
  CHECK(moe.data.train[0].second == "data_cache/pile_gpt2/00_text_document");
  CHECK(moe.data.train[29].second == "data_cache/pile_gpt2/29_text_document");

  // Two levels: pathmoe-182m over moe-182m over dense-182m.
  const Config path = load_config(read_config_file(UNIPOOL_SOURCE_DIR "/configs/pathmoe-182m.json"),
                                  {}, /*check_data=*/false);
  CHECK(path.model.ffn == FfnKind::moe);  // moe-182m's
  CHECK(path.model.top_k == 2);           // the file's, over moe-182m's 1
  CHECK(path.model.router_share == 4);    // the file's
  CHECK(path.loss.aux_coeff == 0);        // the file's, over moe-182m's 0.01
  CHECK(path.model.d_model == 768);       // dense-182m's
  CHECK(path.data.train.size() == 30);    // dense-182m's
  CHECK(path.train.out_dir == "runs/pathmoe-182m");
}

TEST_CASE("a base cycle and a missing base are clear errors", "[config]") {
  const test::TempDir dir;
  const std::string a = dir / "a.json";
  const std::string b = dir / "b.json";
  write_file(a, "{\"base\": \"" + b + "\"}\n");
  write_file(b, "{\"base\": \"" + a + "\"}\n");
  CHECK_THAT(read_error(a), HasSubstring("cycle"));
  CHECK_THAT(read_error(b), HasSubstring("cycle"));

  const std::string self = dir / "self.json";
  write_file(self, "{\"base\": \"" + self + "\"}\n");
  CHECK_THAT(read_error(self), HasSubstring("cycle"));

  const std::string missing = dir / "missing.json";
  write_file(missing, "{\"base\": \"no-such-preset-xyz\", \"train\": {\"steps\": 3}}\n");
  CHECK_THAT(read_error(missing), HasSubstring("no-such-preset-xyz"));
}
