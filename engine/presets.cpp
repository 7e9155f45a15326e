#include "engine/presets.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fsutil.h"
#include "engine/config.h"
#include "model/layout.h"

namespace unipool {

namespace {

// The NAME of every NAME.json in dir (none when dir does not exist).
std::vector<std::string> json_files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const std::string& name : list_directory(dir))
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0)
      names.push_back(name.substr(0, name.size() - 5));
  return names;
}

}  // namespace

std::string first_sentence(const std::string& text) {
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '.') continue;
    if (i + 1 == text.size()) return text.substr(0, i + 1);
    if (text[i + 1] == ' ' &&
        (i + 2 == text.size() || std::isupper(static_cast<unsigned char>(text[i + 2]))))
      return text.substr(0, i + 1);
  }
  return text;
}

std::vector<PresetInfo> list_presets() {
  std::vector<PresetInfo> presets;
  std::set<std::string> seen;
  for (const std::string& dir : preset_directories()) {
    for (const std::string& name : json_files_in(dir)) {
      if (!seen.insert(name).second) continue;
      PresetInfo p;
      p.name = name;
      p.path = dir + name + ".json";
      try {
        // The comment is the file's own (read_config_file drops the base's).
        const nlohmann::json file = read_config_file(p.path);
        if (file.contains("_comment") && file["_comment"].is_string())
          p.summary = first_sentence(file["_comment"].get<std::string>());
        const Config c = load_config(file, {}, /*check_data=*/false);
        const Layout layout = make_layout(c.model);
        p.ffn = name_of(c.model.ffn);
        p.n_layer = c.model.n_layer;
        p.d_model = c.model.d_model;
        p.parameters = layout.num_parameters();
        p.active = layout.active_parameters(false);
      } catch (const Error& e) {
        p.error = e.what();
      }
      presets.push_back(std::move(p));
    }
  }
  std::sort(presets.begin(), presets.end(),
            [](const PresetInfo& a, const PresetInfo& b) { return a.name < b.name; });
  return presets;
}

void run_presets() {
  const std::vector<PresetInfo> presets = list_presets();
  check(!presets.empty(), "presets: no configs/*.json found (looked in configs/ and " +
                              preset_directories().back() + ")");
  std::printf("%-30s %-8s %-10s %9s %9s  %s\n", "preset (--config NAME)", "ffn", "shape", "params",
              "active", "about");
  for (const PresetInfo& p : presets) {
    if (!p.error.empty()) {
      std::printf("%-30s does not load: %s\n", p.name.c_str(), p.error.c_str());
      continue;
    }
    const std::string shape = "L" + std::to_string(p.n_layer) + " d" + std::to_string(p.d_model);
    std::printf("%-30s %-8s %-10s %8.1fM %8.1fM  %s\n", p.name.c_str(), p.ffn.c_str(),
                shape.c_str(), p.parameters / 1e6, p.active / 1e6, p.summary.c_str());
  }
  std::printf("(%zu presets: configs/NAME.json; docs/config.md describes them)\n", presets.size());
}

}  // namespace unipool
