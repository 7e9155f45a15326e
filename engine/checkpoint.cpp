#include "engine/checkpoint.h"
#include "base/json_depth.h"
#include "base/json_fields.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <ctime>
#include <set>
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

namespace {

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// "<digits>" with 1..10 digits and a value <= INT32_MAX, else -1 (no exception, no overflow).
int64_t parse_step(const std::string& digits) {
  if (digits.empty() || digits.size() > 10) return -1;
  int64_t v = 0;
  for (char ch : digits) {
    if (ch < '0' || ch > '9') return -1;
    v = v * 10 + (ch - '0');
  }
  return v <= INT32_MAX ? v : -1;
}

// A leftover of a checkpoint write: "ckpt-STEP.tmp-PID" (being filled) or "ckpt-STEP.old-PID" (a
// checkpoint of the same step moved aside while its replacement is published). Returns false for
// any other name.
bool parse_leftover(const std::string& name, int64_t* step, bool* old, int64_t* pid) {
  if (name.rfind("ckpt-", 0) != 0) return false;
  const size_t dot = name.find('.', 5);
  if (dot == std::string::npos) return false;
  const std::string kind = name.substr(dot, 5);
  if (kind != ".tmp-" && kind != ".old-") return false;
  *step = parse_step(name.substr(5, dot - 5));
  *pid = parse_step(name.substr(dot + 5));
  *old = kind == ".old-";
  return *step >= 0 && *pid >= 0;
}

}  // namespace

int checkpoint_step(const std::string& dir) {
  const std::string base = base_name(dir);
  if (base.rfind("ckpt-", 0) != 0) return -1;
  return static_cast<int>(parse_step(base.substr(5)));
}

// The checkpoints of out_dir, oldest first. An entry named like a checkpoint that is not one (a
// step out of range, no state.json, not a directory) is ignored with a warning (once per name);
// write leftovers (.tmp-PID, .old-PID) are recover_run_directory's.
static std::vector<std::pair<int, std::string>> list_checkpoints(const std::string& out_dir) {
  static std::set<std::string> warned;
  std::vector<std::pair<int, std::string>> found;
  for (const std::string& name : list_directory(out_dir)) {
    if (name.rfind("ckpt-", 0) != 0) continue;
    const std::string path = out_dir + "/" + name;
    int64_t leftover_step = 0, pid = 0;
    bool old = false;
    if (parse_leftover(name, &leftover_step, &old, &pid)) continue;
    const int step = checkpoint_step(name);
    if (step >= 0 && path_exists(path + "/state.json")) {
      found.emplace_back(step, path);
    } else if (warned.insert(path).second) {
      std::fprintf(stderr,
                   "warning: ignoring '%s': not a checkpoint (a checkpoint is ckpt-STEP, STEP "
                   "0..%d, holding state.json)\n",
                   path.c_str(), INT32_MAX);
    }
  }
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
  try {
    make_dirs(tmp_dir);
    write_safetensors(tmp_dir + "/model.safetensors", arena_tensors(layout, params, ""),
                      {{"format", "unipool"}, {"step", std::to_string(step)}});
    std::vector<TensorRef> moments = arena_tensors(layout, exp_avg, "exp_avg.");
    for (const TensorRef& r : arena_tensors(layout, exp_avg_sq, "exp_avg_sq."))
      moments.push_back(r);
    write_safetensors(tmp_dir + "/optimizer.safetensors", moments,
                      {{"step", std::to_string(step)}});
    write_file_atomic(tmp_dir + "/state.json", dump_json(state, 1) + "\n");
    fsync_path(tmp_dir);
  } catch (...) {
    remove_tree_quietly(tmp_dir);  // a failed write (a full disk) leaves no half checkpoint
    throw;
  }
  // An older checkpoint of the same step (a rerun after resuming earlier) is moved aside first;
  // recover_run_directory() puts it back if the process dies before the new one is in place.
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

std::vector<std::string> recover_run_directory(const std::string& out_dir) {
  std::vector<std::string> done;
  const int64_t own = getpid();
  for (const std::string& name : list_directory(out_dir)) {
    const std::string path = out_dir + "/" + name;
    int64_t step = 0, pid = 0;
    bool old = false;
    if (parse_leftover(name, &step, &old, &pid)) {
      if (pid == own) continue;
      const std::string final_dir = out_dir + "/ckpt-" + std::to_string(step);
      if (old && !path_exists(final_dir)) {  // died between moving it aside and the replacement
        publish_dir(path, final_dir);
        done.push_back("restored " + final_dir + " from " + name);
      } else {
        remove_tree(path);
        done.push_back("removed " + path + (old ? " (replaced)" : " (incomplete)"));
      }
      continue;
    }
    // write_file_atomic's temp files (metrics.jsonl, config.json).
    const int64_t writer = atomic_temp_owner(name);
    if (writer >= 0 && writer != own) {
      remove_tree(path);
      done.push_back("removed " + path + " (incomplete)");
    }
  }
  return done;
}

namespace {

// A new directory out_dir/PREFIX-<UTC time> (-2, -3, ... when taken): where things are moved aside.
std::string make_stamped_dir(const std::string& out_dir, const std::string& prefix) {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &utc);
  std::string dest = out_dir + "/" + prefix + "-" + stamp;
  for (int n = 2; path_exists(dest); ++n)
    dest = out_dir + "/" + prefix + "-" + stamp + "-" + std::to_string(n);
  make_dirs(dest);
  return dest;
}

}  // namespace

std::string abandon_checkpoints_after(const std::string& out_dir, int step) {
  std::vector<std::pair<int, std::string>> newer;
  for (const auto& found : list_checkpoints(out_dir))
    if (found.first > step) newer.push_back(found);
  if (newer.empty()) return "";
  const std::string dest = make_stamped_dir(out_dir, "abandoned");
  for (const auto& [s, path] : newer) publish_dir(path, dest + "/" + base_name(path));
  return dest;
}

namespace {

// What a run directory holds besides its lock file.
std::vector<std::string> run_directory_entries(const std::string& out_dir) {
  std::vector<std::string> held;
  for (const std::string& name : list_directory(out_dir))
    if (name != ".lock") held.push_back(name);
  return held;
}

}  // namespace

void check_fresh_run_directory(const std::string& out_dir, bool overwrite) {
  const std::vector<std::string> held = run_directory_entries(out_dir);
  if (held.empty() || overwrite) return;
  std::string names;
  for (size_t i = 0; i < held.size() && i < 4; ++i) names += (i ? ", " : "") + held[i];
  if (held.size() > 4) names += ", ... (" + std::to_string(held.size()) + " entries)";
  throw Error("train.out_dir '" + out_dir + "' is not empty (" + names +
              "): continue its run with --resume, choose another train.out_dir, or pass "
              "--overwrite to move what it holds into " + out_dir + "/replaced-<UTC time>/");
}

std::string move_run_aside(const std::string& out_dir) {
  const std::vector<std::string> held = run_directory_entries(out_dir);
  if (held.empty()) return "";
  const std::string dest = make_stamped_dir(out_dir, "replaced");
  for (const std::string& name : held) move_path(out_dir + "/" + name, dest + "/" + name);
  return dest;
}

nlohmann::json read_checkpoint_state(const std::string& dir) {
  const std::string file = dir + "/state.json";
  check(path_exists(file), "'" + dir + "' is not a checkpoint (no state.json)");
  const std::string text = read_file(file);
  check_json_depth(text, file);
  nlohmann::json state = nlohmann::json::parse(text, nullptr, false);
  check(!state.is_discarded() && state.is_object(), file + ": not valid JSON");
  const int64_t version = json_int(state, "format_version", 0, INT32_MAX, file);
  check(version == kStateFormatVersion,
        file + ": format_version " + std::to_string(version) + ", this build reads " +
            std::to_string(kStateFormatVersion) + " (a checkpoint of another unipool version)");
  // Every field this build reads, checked here with its range (the loader position and the
  // model's state are checked by their readers).
  json_int(state, "step", 0, INT32_MAX, file);
  json_int(state, "tokens", 0, INT64_MAX, file);
  check(json_at(state, "config", file).is_object(), file + ": \"config\" must be an object");
  check(json_at(state, "data", file).is_object(), file + ": \"data\" must be an object");
  json_at(state.at("data"), "train", file + ": data");
  const int step = state.at("step").get<int>();
  const int named = checkpoint_step(dir);
  check(named < 0 || named == step, file + ": step " + std::to_string(step) +
                                        " does not match the directory name (step " +
                                        std::to_string(named) + ")");
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
          what + ": model." + it.key() + " of the checkpoint (" + describe_json(theirs[it.key()]) +
              ") differs from this run's (" + describe_json(it.value()) + ")");
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
