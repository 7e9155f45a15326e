// `unipool presets`: the configs a --config NAME can name (configs/*.json, docs/config.md
// §Presets), each with its model and the first sentence of its "_comment".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace unipool {

struct PresetInfo {
  std::string name;     // what --config takes (the file name without .json)
  std::string path;     // the file
  std::string summary;  // the first sentence of its "_comment" ("" when it has none)
  std::string ffn;      // model.ffn after the preset's base chain and the defaults
  int n_layer = 0, d_model = 0;
  int64_t parameters = 0, active = 0;  // layout totals (active: one token's, without routers)
  std::string error;                   // non-empty: the preset does not load (what is wrong)
};

// Every preset of preset_directories() (engine/config.h), sorted by name; a name found in two
// directories is the first one's, as --config resolves it.
std::vector<PresetInfo> list_presets();

// The first sentence of a comment: up to the first ". " (or "." at the end) that is followed by
// an upper-case letter or the end; the whole text when there is none.
std::string first_sentence(const std::string& text);

// Prints list_presets() as a table.
void run_presets();

}  // namespace unipool
