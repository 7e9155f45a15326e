// The run configuration: every key of SPEC.md §4, loaded from a JSON file, overridden by
// `--set key=value`, and validated once. A bad key or value stops with an Error naming the key.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace unipool {

struct ModelConfig {
  int vocab_size = 50257;
  int vocab_multiple = 1024;
  int seq_len = 1024;
  int n_layer = 12;
  int d_model = 768;
  int n_head = 12;
  int n_kv_head = 4;
  int ffn_hidden = 3072;  // F: dense FFN width and each expert's width
  double norm_eps = 1e-5;
  double rope_base = 1e6;
  double init_std = 0.01;
  std::string ffn = "dense";  // dense | moe | unipool
  int experts_per_layer = 8;  // moe: E private experts per layer
  int pool_size = 96;         // unipool: M experts per pool
  int pool_group = 0;  // unipool: N adjacent layers share a pool; 0 = all layers (one global pool)
  int top_k = 1;
  std::string router = "softmax";  // softmax | norm (NormRouter)
  bool router_renorm = false;      // softmax router: renormalise the k gates
  int router_share = 1;  // B: layers bB..bB+B-1 share one router (PathMoE); 1 = independent

  int padded_vocab() const {
    return (vocab_size + vocab_multiple - 1) / vocab_multiple * vocab_multiple;
  }
  int head_dim() const { return d_model / n_head; }
  bool is_moe() const { return ffn != "dense"; }
  int router_width() const {
    return ffn == "unipool" ? pool_size : ffn == "moe" ? experts_per_layer : 0;
  }
  int pool_layers() const { return pool_group == 0 ? n_layer : pool_group; }  // N
  int n_pools() const { return ffn == "unipool" ? n_layer / pool_layers() : 0; }
  int n_routers() const { return is_moe() ? n_layer / router_share : 0; }
  int qkv_width() const { return (n_head + 2 * n_kv_head) * head_dim(); }
};

struct LossConfig {
  double aux_coeff = 0;       // per-layer Switch loss α (default 0.01 for moe, 0 for unipool)
  double pool_aux_coeff = 0;  // pool loss α_pool (default 0.01 for unipool)
  double z_loss_coeff = 0;
};

struct OptimConfig {
  double lr = 5e-4;
  double min_lr = 5e-5;
  int warmup_steps = 0;
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
  std::string backend = "auto";  // cpu | cuda | auto (cuda when a GPU is present)
  int log_every = 1;             // progress line every N steps (metrics.jsonl gets every step)
  int threads = 0;               // CPU threads; 0 = all cores
};

struct DataConfig {
  std::vector<std::pair<double, std::string>> train;  // blend: (weight, prefix or file)
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

// Reads a config file; `path_or_preset` may also be a preset name resolved in configs/.
nlohmann::json read_config_file(const std::string& path_or_preset);

// Validation alone (load_config calls it); throws Error naming the key.
void validate_config(const Config& config, bool check_data);

}  // namespace unipool
