#include "engine/checkpoint.h"

#include <algorithm>
#include <dirent.h>
#include <unistd.h>
#include <vector>

#include "base/error.h"
#include "base/fsutil.h"
#include "engine/safetensors.h"

namespace unipool {

namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::vector<TensorRef> arena_tensors(const Layout& layout, const float* arena,
                                     const std::string& prefix) {
  std::vector<TensorRef> refs;
  for (const ParamTensor& t : layout.tensors)
    refs.push_back({prefix + t.name, t.shape, arena + t.offset});
  return refs;
}

// Copies every layout tensor (named prefix + name) out of a safetensors file, exactly.
void load_arena(const SafetensorsFile& file, const std::string& path, const Layout& layout,
                float* arena, const std::string& prefix) {
  for (const ParamTensor& t : layout.tensors) {
    const auto it = file.tensors.find(prefix + t.name);
    check(it != file.tensors.end(), path + ": missing tensor '" + prefix + t.name + "'");
    check(it->second.shape == t.shape, path + ": tensor '" + prefix + t.name + "' has shape " +
                                           shape_string(it->second.shape) + ", the model expects " +
                                           shape_string(t.shape));
    std::copy(it->second.data.begin(), it->second.data.end(), arena + t.offset);
  }
  for (const auto& [name, tensor] : file.tensors) {
    const bool known = name.rfind(prefix, 0) == 0 && layout.find(name.substr(prefix.size())) >= 0;
    check(known, path + ": unexpected tensor '" + name + "' (not part of this model's layout)");
  }
}

}  // namespace

int checkpoint_step(const std::string& dir) {
  const size_t slash = dir.find_last_of('/');
  const std::string base = slash == std::string::npos ? dir : dir.substr(slash + 1);
  if (base.rfind("ckpt-", 0) != 0 || base.size() == 5) return -1;
  for (size_t i = 5; i < base.size(); ++i)
    if (base[i] < '0' || base[i] > '9') return -1;
  return std::stoi(base.substr(5));
}

static std::vector<std::pair<int, std::string>> list_checkpoints(const std::string& out_dir) {
  std::vector<std::pair<int, std::string>> found;
  DIR* dir = opendir(out_dir.c_str());
  if (!dir) return found;
  while (dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    const int step = checkpoint_step(name);
    if (step >= 0 && path_exists(out_dir + "/" + name + "/state.json"))
      found.emplace_back(step, out_dir + "/" + name);
  }
  closedir(dir);
  std::sort(found.begin(), found.end());
  return found;
}

std::string latest_checkpoint(const std::string& out_dir) {
  const auto found = list_checkpoints(out_dir);
  return found.empty() ? std::string() : found.back().second;
}

std::string save_checkpoint(const std::string& out_dir, int step, int keep, const Layout& layout,
                            const float* params, const float* exp_avg, const float* exp_avg_sq,
                            const nlohmann::json& state) {
  make_dirs(out_dir);
  const std::string final_dir = out_dir + "/ckpt-" + std::to_string(step);
  const std::string tmp_dir = final_dir + ".tmp-" + std::to_string(getpid());
  remove_tree(tmp_dir);
  make_dirs(tmp_dir);
  write_safetensors(tmp_dir + "/model.safetensors", arena_tensors(layout, params, ""),
                    {{"format", "unipool"}, {"step", std::to_string(step)}});
  std::vector<TensorRef> moments = arena_tensors(layout, exp_avg, "exp_avg.");
  for (const TensorRef& r : arena_tensors(layout, exp_avg_sq, "exp_avg_sq.")) moments.push_back(r);
  write_safetensors(tmp_dir + "/optimizer.safetensors", moments, {{"step", std::to_string(step)}});
  write_file_atomic(tmp_dir + "/state.json", state.dump(1) + "\n");
  fsync_path(tmp_dir);
  // An older checkpoint of the same step (a rerun after resuming earlier) is moved aside first.
  const std::string old_dir = final_dir + ".old-" + std::to_string(getpid());
  const bool replacing = path_exists(final_dir);
  if (replacing) publish_dir(final_dir, old_dir);
  publish_dir(tmp_dir, final_dir);
  if (replacing) remove_tree(old_dir);
  // Keep the newest `keep`.
  auto found = list_checkpoints(out_dir);
  for (size_t i = 0; i + keep < found.size(); ++i) remove_tree(found[i].second);
  return final_dir;
}

nlohmann::json read_checkpoint_state(const std::string& dir) {
  check(path_exists(dir + "/state.json"), "'" + dir + "' is not a checkpoint (no state.json)");
  nlohmann::json state = nlohmann::json::parse(read_file(dir + "/state.json"), nullptr, false);
  check(!state.is_discarded() && state.is_object(), dir + "/state.json: not valid JSON");
  check(state.contains("format_version") && state["format_version"].is_number_integer(),
        dir + "/state.json: missing format_version");
  const int version = state["format_version"].get<int>();
  check(version == kStateFormatVersion,
        dir + "/state.json: format_version " + std::to_string(version) + ", this build reads " +
            std::to_string(kStateFormatVersion) + " (a checkpoint of another unipool version)");
  check(state.contains("step") && state["step"].is_number_integer() && state.contains("config") &&
            state["config"].is_object(),
        dir + "/state.json: missing step or config");
  return state;
}

nlohmann::json make_checkpoint_state(int step, int64_t tokens, const Config& config,
                                     const nlohmann::json& train_data_position,
                                     const nlohmann::json& model_state) {
  nlohmann::json state = {
      {"format_version", kStateFormatVersion},
      {"step", step},
      {"tokens", tokens},
      {"config", config.to_json()},
      {"data", {{"train", train_data_position}}},
      {"rng",
       {{"seed", config.train.seed},
        {"note",
         "no random numbers are drawn after initialisation; the data order is a function of the "
         "seed and the data position"}}}};
  for (auto it = model_state.begin(); it != model_state.end(); ++it) state[it.key()] = it.value();
  return state;
}

Config checkpoint_config(const std::string& dir, const nlohmann::json& state,
                         const std::vector<std::string>& overrides, bool check_data) {
  try {
    return load_config(state.at("config"), overrides, check_data);
  } catch (const Error& e) {
    throw Error(dir + "/state.json: config: " + e.what());
  }
}

OpenedCheckpoint open_checkpoint(const std::string& path, const std::vector<std::string>& overrides,
                                 bool check_data) {
  check(!path.empty(), "no checkpoint given");
  check(path_exists(path), "checkpoint '" + path + "' does not exist");
  OpenedCheckpoint ck;
  ck.dir = path;
  if (!path_exists(path + "/state.json")) {
    ck.dir = latest_checkpoint(path);
    check(!ck.dir.empty(), "'" + path +
                               "' is not a checkpoint (no state.json) and holds no ckpt-STEP "
                               "checkpoint");
  }
  ck.state = read_checkpoint_state(ck.dir);
  ck.step = ck.state["step"].get<int>();
  ck.config = checkpoint_config(ck.dir, ck.state, overrides, check_data);
  check(path_exists(ck.dir + "/model.safetensors"),
        "checkpoint '" + ck.dir + "' has no model.safetensors");
  return ck;
}

void check_same_model(const OpenedCheckpoint& ck, const Config& config, const std::string& what) {
  const nlohmann::json theirs = ck.config.to_json()["model"];
  const nlohmann::json ours = config.to_json()["model"];
  for (auto it = ours.begin(); it != ours.end(); ++it) {
    check(theirs[it.key()] == it.value(),
          what + ": model." + it.key() + " of the checkpoint (" + theirs[it.key()].dump() +
              ") differs from this run's (" + it.value().dump() + ")");
  }
}

void load_checkpoint(const std::string& dir, const Layout& layout, float* params, float* exp_avg,
                     float* exp_avg_sq) {
  load_weights(dir + "/model.safetensors", layout, params);
  const std::string opt_path = dir + "/optimizer.safetensors";
  const SafetensorsFile opt = read_safetensors(opt_path);
  SafetensorsFile first, second;
  for (const auto& [name, t] : opt.tensors) {
    if (name.rfind("exp_avg_sq.", 0) == 0) {
      second.tensors[name] = t;
    } else {
      first.tensors[name] = t;
    }
  }
  load_arena(first, opt_path, layout, exp_avg, "exp_avg.");
  load_arena(second, opt_path, layout, exp_avg_sq, "exp_avg_sq.");
}

void load_weights(const std::string& path, const Layout& layout, float* params) {
  check(path_exists(path), "cannot open weights '" + path + "': No such file or directory");
  load_arena(read_safetensors(path), path, layout, params, "");
}

}  // namespace unipool
