// The run configuration (docs/config.md): defaults ← a JSON file or preset ← `--set key=value`,
// validated once. Every key is declared once, in the key table of engine/config.cpp (its name, its
// JSON type, its rule; the default is the struct member's initialiser below). A bad key or value
// stops with an Error naming the key.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace unipool {

// train.backend: where the run computes.
enum class BackendKind {
  automatic,  // "auto": the GPU when one is present, else the CPU
  cpu,
  cuda
};
inline const char* name_of(BackendKind k) {
  switch (k) {
    case BackendKind::automatic:
      return "auto";
    case BackendKind::cpu:
      return "cpu";
    case BackendKind::cuda:
      return "cuda";
  }
  return "?";
}
inline bool parse_kind(const std::string& name, BackendKind* out) {
  for (BackendKind k : {BackendKind::automatic, BackendKind::cpu, BackendKind::cuda})
    if (name == name_of(k)) return *out = k, true;
  return false;
}

// optim.schedule: the learning rate's shape after the warmup (docs/config.md §Schedules).
enum class LrSchedule {
  cosine,    // half a cosine from optim.lr down to optim.min_lr at train.steps
  linear,    // a straight line from optim.lr down to optim.min_lr at train.steps
  constant,  // optim.lr to the end
  wsd        // warmup, stable at optim.lr, then a linear decay over optim.decay_steps to min_lr
};
inline const char* name_of(LrSchedule k) {
  switch (k) {
    case LrSchedule::cosine:
      return "cosine";
    case LrSchedule::linear:
      return "linear";
    case LrSchedule::constant:
      return "constant";
    case LrSchedule::wsd:
      return "wsd";
  }
  return "?";
}
inline bool parse_kind(const std::string& name, LrSchedule* out) {
  for (LrSchedule k : {LrSchedule::cosine, LrSchedule::linear, LrSchedule::constant, LrSchedule::wsd})
    if (name == name_of(k)) return *out = k, true;
  return false;
}

struct OptimConfig {
  double lr = 5e-4;
  double min_lr = 5e-5;
  int warmup_steps = 0;
  LrSchedule schedule = LrSchedule::cosine;
  int decay_steps = 0;  // wsd: the length of the final decay
  double weight_decay = 0.01;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double grad_clip = 1.0;
};

struct TrainConfig {
  int steps = 1000;
  int micro_batch = 16;  // sequences per micro-batch
  int grad_accum = 1;
  uint64_t seed = 1234;
  int eval_every = 0;  // 0 disables evaluation
  int eval_batches = 10;
  int ckpt_every = 0;  // 0 disables checkpoints
  int ckpt_keep = 3;
  std::string out_dir = "runs/default";
  BackendKind backend = BackendKind::automatic;
  int log_every = 1;            // progress line every N steps (metrics.jsonl gets every step)
  int threads = 0;              // CPU threads; 0 = all cores
  int zero = 0;                 // 0: optimizer state on every rank; 1: sharded over ranks (ZeRO-1)
  double comm_timeout_s = 600;  // a collective waiting longer than this stops the run
  Recompute recompute = Recompute::none;  // activations the backward recomputes
  double zero_gate_warning = 0.5;  // warn when a MoE layer's zero-gate share passes it (0: never)
};

struct DataConfig {
  std::vector<std::pair<double, std::string>> train;  // blend: (weight, prefix or file)
  std::vector<std::pair<double, std::string>> valid;  // held-out blend; empty: a split of train
  std::string format = "megatron";                    // megatron | llmc
  std::string split = "969,30,1";
};

struct Config {
  ModelConfig model;
  LossConfig loss;
  OptimConfig optim;
  TrainConfig train;
  DataConfig data;

  nlohmann::json to_json() const;
};

// The full key tree with default values (null where the default depends on other keys).
nlohmann::json config_defaults();

// Builds a Config from a JSON object (keys missing take defaults), applying `overrides`
// ("key=value", value parsed as JSON when valid JSON, else a string). Unknown keys, wrong types
// and invalid values throw Error naming the key. `check_data` also requires the data files to
// exist.
Config load_config(const nlohmann::json& file_json, const std::vector<std::string>& overrides,
                   bool check_data = true);

// Reads a config file; `path_or_preset` may also be a preset name resolved in configs/. A file
// with a top-level "base" (a preset name or a path) holds only its differences: the base is read
// first (recursively; a cycle is an Error) and the file's keys are merged over it, objects key by
// key, anything else (numbers, strings, lists such as data.train) replaced whole.
nlohmann::json read_config_file(const std::string& path_or_preset);

// Where preset names are looked up, in order: configs/ in the current directory, then the source
// tree's configs/ (a name found in both is the first one's).
std::vector<std::string> preset_directories();

// Every key's dotted name ("model.d_model", ...), in table order (docs/config.md lists them all).
std::vector<std::string> config_keys();

// UniPool-lock's steps, from lock.* and train.steps as the reference resolves them: each
// boundary is round(fraction · steps), halves to even as Python rounds; the freeze is the lock
// minus the anneal's length.
struct LockSchedule {
  int freeze = 0;        // the validation after this step chooses the candidate sets
  int lock = 0;          // the validation after this step locks them
  int anneal_steps = 0;  // lock − freeze
  int warmup = 0;        // β reaches lock.entropy_coeff at this step
};
LockSchedule lock_schedule(const Config& c);

// The first file of a token dataset that does not exist ("" when all do): PREFIX.idx and
// PREFIX.bin for data.format megatron, the file itself for llmc.
std::string missing_token_file(const std::string& prefix, const std::string& format);

// Validation alone (load_config calls it); throws Error naming the key.
void validate_config(const Config& config, bool check_data);

}  // namespace unipool
