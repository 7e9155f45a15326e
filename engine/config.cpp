// Config loading: defaults ← file ← --set overrides, then typed conversion and validation.
#include "engine/config.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "engine/error.h"

namespace unipool {

using json = nlohmann::json;

namespace {

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The json value at a dotted key, for messages.
std::string describe(const json& v) {
  std::string s = v.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

int get_int(const json& section, const std::string& section_name, const char* key) {
  const json& v = section.at(key);
  const std::string name = section_name + "." + key;
  if (v.is_number_integer() || v.is_number_unsigned()) {
    const long long x = v.get<long long>();
    check(x >= -2147483647LL && x <= 2147483647LL, name + ": " + describe(v) + " is out of range");
    return static_cast<int>(x);
  }
  if (v.is_number_float()) {
    const double x = v.get<double>();
    check(std::floor(x) == x && std::fabs(x) < 2147483647.0,
          name + ": expected an integer, got " + describe(v));
    return static_cast<int>(x);
  }
  throw Error(name + ": expected an integer, got " + describe(v));
}

uint64_t get_u64(const json& section, const std::string& section_name, const char* key) {
  const json& v = section.at(key);
  const std::string name = section_name + "." + key;
  check(v.is_number_unsigned() || (v.is_number_integer() && v.get<long long>() >= 0),
        name + ": expected a non-negative integer, got " + describe(v));
  return v.get<uint64_t>();
}

double get_double(const json& section, const std::string& section_name, const char* key) {
  const json& v = section.at(key);
  check(v.is_number(), section_name + "." + key + ": expected a number, got " + describe(v));
  const double x = v.get<double>();
  check(std::isfinite(x), section_name + "." + key + ": must be finite");
  return x;
}

bool get_bool(const json& section, const std::string& section_name, const char* key) {
  const json& v = section.at(key);
  check(v.is_boolean(), section_name + "." + key + ": expected true or false, got " + describe(v));
  return v.get<bool>();
}

std::string get_string(const json& section, const std::string& section_name, const char* key) {
  const json& v = section.at(key);
  check(v.is_string(), section_name + "." + key + ": expected a string, got " + describe(v));
  return v.get<std::string>();
}

// Copies `src` over `dst`, key by key; every key of src must exist in dst (the defaults tree).
void merge_known(json& dst, const json& src, const std::string& prefix) {
  check(src.is_object(), (prefix.empty() ? std::string("config") : prefix) +
                             ": expected a JSON object, got " + describe(src));
  for (auto it = src.begin(); it != src.end(); ++it) {
    const std::string name = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it.key() == "//" || it.key().rfind("_comment", 0) == 0) continue;  // comments allowed
    check(dst.contains(it.key()), "unknown config key '" + name + "'");
    json& target = dst[it.key()];
    if (target.is_object()) {
      merge_known(target, it.value(), name);
    } else {
      target = it.value();
    }
  }
}

// Applies one "a.b.c=value" override.
void apply_override(json& tree, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  check(eq != std::string::npos && eq > 0, "--set expects key=value, got '" + assignment + "'");
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;  // not JSON: take it as a string
  json* node = &tree;
  size_t start = 0;
  while (true) {
    const size_t dot = key.find('.', start);
    const std::string part =
        key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    check(node->is_object() && node->contains(part), "unknown config key '" + key + "' (in --set)");
    node = &(*node)[part];
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  check(!node->is_object(), "--set " + key + ": is a section, set one of its keys");
  *node = value;
}

}  // namespace

json config_defaults() {
  const Config c;
  json j = c.to_json();
  j["loss"]["aux_coeff"] = nullptr;       // 0.01 for moe, 0 otherwise
  j["loss"]["pool_aux_coeff"] = nullptr;  // 0.01 for unipool, 0 otherwise
  j["optim"]["warmup_steps"] = nullptr;   // 1% of train.steps
  return j;
}

json Config::to_json() const {
  json j;
  j["model"] = {{"vocab_size", model.vocab_size},
                {"vocab_multiple", model.vocab_multiple},
                {"seq_len", model.seq_len},
                {"n_layer", model.n_layer},
                {"d_model", model.d_model},
                {"n_head", model.n_head},
                {"n_kv_head", model.n_kv_head},
                {"ffn_hidden", model.ffn_hidden},
                {"norm_eps", model.norm_eps},
                {"rope_base", model.rope_base},
                {"init_std", model.init_std},
                {"ffn", model.ffn},
                {"experts_per_layer", model.experts_per_layer},
                {"pool_size", model.pool_size},
                {"pool_group", model.pool_group},
                {"top_k", model.top_k},
                {"router", model.router},
                {"router_renorm", model.router_renorm},
                {"router_share", model.router_share}};
  j["loss"] = {{"aux_coeff", loss.aux_coeff},
               {"pool_aux_coeff", loss.pool_aux_coeff},
               {"z_loss_coeff", loss.z_loss_coeff}};
  j["optim"] = {{"lr", optim.lr},
                {"min_lr", optim.min_lr},
                {"warmup_steps", optim.warmup_steps},
                {"weight_decay", optim.weight_decay},
                {"beta1", optim.beta1},
                {"beta2", optim.beta2},
                {"eps", optim.eps},
                {"grad_clip", optim.grad_clip}};
  j["train"] = {{"steps", train.steps},           {"micro_batch", train.micro_batch},
                {"grad_accum", train.grad_accum}, {"seed", train.seed},
                {"eval_every", train.eval_every}, {"eval_batches", train.eval_batches},
                {"ckpt_every", train.ckpt_every}, {"ckpt_keep", train.ckpt_keep},
                {"out_dir", train.out_dir},       {"backend", train.backend},
                {"log_every", train.log_every},   {"threads", train.threads}};
  json blend = json::array();
  for (const auto& [w, p] : data.train) blend.push_back(json::array({w, p}));
  j["data"] = {{"train", blend}, {"format", data.format}, {"split", data.split}};
  return j;
}

Config load_config(const json& file_json, const std::vector<std::string>& overrides,
                   bool check_data) {
  json tree = config_defaults();
  if (!file_json.is_null()) merge_known(tree, file_json, "");
  for (const auto& o : overrides) apply_override(tree, o);

  Config c;
  const json& m = tree["model"];
  c.model.vocab_size = get_int(m, "model", "vocab_size");
  c.model.vocab_multiple = get_int(m, "model", "vocab_multiple");
  c.model.seq_len = get_int(m, "model", "seq_len");
  c.model.n_layer = get_int(m, "model", "n_layer");
  c.model.d_model = get_int(m, "model", "d_model");
  c.model.n_head = get_int(m, "model", "n_head");
  c.model.n_kv_head = get_int(m, "model", "n_kv_head");
  c.model.ffn_hidden = get_int(m, "model", "ffn_hidden");
  c.model.norm_eps = get_double(m, "model", "norm_eps");
  c.model.rope_base = get_double(m, "model", "rope_base");
  c.model.init_std = get_double(m, "model", "init_std");
  c.model.ffn = get_string(m, "model", "ffn");
  c.model.experts_per_layer = get_int(m, "model", "experts_per_layer");
  c.model.pool_size = get_int(m, "model", "pool_size");
  c.model.pool_group = get_int(m, "model", "pool_group");
  c.model.top_k = get_int(m, "model", "top_k");
  c.model.router = get_string(m, "model", "router");
  c.model.router_renorm = get_bool(m, "model", "router_renorm");
  c.model.router_share = get_int(m, "model", "router_share");

  const json& l = tree["loss"];
  c.loss.aux_coeff = l["aux_coeff"].is_null() ? (c.model.ffn == "moe" ? 0.01 : 0.0)
                                              : get_double(l, "loss", "aux_coeff");
  c.loss.pool_aux_coeff = l["pool_aux_coeff"].is_null() ? (c.model.ffn == "unipool" ? 0.01 : 0.0)
                                                        : get_double(l, "loss", "pool_aux_coeff");
  c.loss.z_loss_coeff = get_double(l, "loss", "z_loss_coeff");

  const json& o = tree["optim"];
  c.optim.lr = get_double(o, "optim", "lr");
  c.optim.min_lr = get_double(o, "optim", "min_lr");
  c.optim.weight_decay = get_double(o, "optim", "weight_decay");
  c.optim.beta1 = get_double(o, "optim", "beta1");
  c.optim.beta2 = get_double(o, "optim", "beta2");
  c.optim.eps = get_double(o, "optim", "eps");
  c.optim.grad_clip = get_double(o, "optim", "grad_clip");

  const json& t = tree["train"];
  c.train.steps = get_int(t, "train", "steps");
  c.train.micro_batch = get_int(t, "train", "micro_batch");
  c.train.grad_accum = get_int(t, "train", "grad_accum");
  c.train.seed = get_u64(t, "train", "seed");
  c.train.eval_every = get_int(t, "train", "eval_every");
  c.train.eval_batches = get_int(t, "train", "eval_batches");
  c.train.ckpt_every = get_int(t, "train", "ckpt_every");
  c.train.ckpt_keep = get_int(t, "train", "ckpt_keep");
  c.train.out_dir = get_string(t, "train", "out_dir");
  c.train.backend = get_string(t, "train", "backend");
  c.train.log_every = get_int(t, "train", "log_every");
  c.train.threads = get_int(t, "train", "threads");
  c.optim.warmup_steps =
      o["warmup_steps"].is_null() ? c.train.steps / 100 : get_int(o, "optim", "warmup_steps");

  const json& d = tree["data"];
  check(d["train"].is_array(),
        "data.train: expected a list of [weight, prefix] pairs, got " + describe(d["train"]));
  for (const json& entry : d["train"]) {
    check(entry.is_array() && entry.size() == 2 && entry[0].is_number() && entry[1].is_string(),
          "data.train: each entry must be [weight, \"prefix\"], got " + describe(entry));
    c.data.train.emplace_back(entry[0].get<double>(), entry[1].get<std::string>());
  }
  c.data.format = get_string(d, "data", "format");
  c.data.split = get_string(d, "data", "split");

  validate_config(c, check_data);
  return c;
}

void validate_config(const Config& c, bool check_data) {
  const ModelConfig& m = c.model;
  auto positive = [](int v, const char* key) {
    check(v >= 1, std::string(key) + ": must be >= 1, got " + std::to_string(v));
  };
  positive(m.vocab_size, "model.vocab_size");
  positive(m.vocab_multiple, "model.vocab_multiple");
  positive(m.seq_len, "model.seq_len");
  positive(m.n_layer, "model.n_layer");
  positive(m.d_model, "model.d_model");
  positive(m.n_head, "model.n_head");
  positive(m.n_kv_head, "model.n_kv_head");
  positive(m.ffn_hidden, "model.ffn_hidden");
  positive(m.top_k, "model.top_k");
  positive(m.router_share, "model.router_share");
  positive(m.experts_per_layer, "model.experts_per_layer");
  positive(m.pool_size, "model.pool_size");
  check(m.norm_eps > 0, "model.norm_eps: must be > 0");
  check(m.rope_base > 1, "model.rope_base: must be > 1");
  check(m.init_std > 0, "model.init_std: must be > 0");
  check(m.d_model % m.n_head == 0, "model.n_head: d_model " + std::to_string(m.d_model) +
                                       " is not divisible by n_head " + std::to_string(m.n_head));
  check(m.n_head % m.n_kv_head == 0, "model.n_kv_head: n_head " + std::to_string(m.n_head) +
                                         " is not divisible by n_kv_head " +
                                         std::to_string(m.n_kv_head));
  check(m.head_dim() % 2 == 0,
        "model.n_head: head dim " + std::to_string(m.head_dim()) + " must be even for RoPE");
  check(m.ffn == "dense" || m.ffn == "moe" || m.ffn == "unipool",
        "model.ffn: must be dense, moe or unipool, got '" + m.ffn + "'");
  check(m.router == "softmax" || m.router == "norm",
        "model.router: must be softmax or norm, got '" + m.router + "'");
  check(m.pool_group >= 0, "model.pool_group: must be >= 0 (0 = one global pool)");
  if (m.ffn == "unipool") {
    check(m.n_layer % m.pool_layers() == 0,
          "model.pool_group: n_layer " + std::to_string(m.n_layer) +
              " is not divisible by pool_group " + std::to_string(m.pool_group));
  }
  if (m.is_moe()) {
    const char* width_key = m.ffn == "unipool" ? "model.pool_size" : "model.experts_per_layer";
    check(m.top_k <= m.router_width(), std::string("model.top_k: k = ") + std::to_string(m.top_k) +
                                           " exceeds the " + std::to_string(m.router_width()) +
                                           " experts of " + width_key);
    check(m.top_k <= 64, "model.top_k: at most 64 experts per token are supported, got " +
                             std::to_string(m.top_k));
    check(m.n_layer % m.router_share == 0,
          "model.router_share: n_layer " + std::to_string(m.n_layer) +
              " is not divisible by router_share " + std::to_string(m.router_share));
    check(!(m.router_renorm && m.router == "norm"),
          "model.router_renorm: renormalisation is not defined for the NormRouter (router = norm)");
  } else {
    check(m.router_share == 1, "model.router_share: a dense model has no router to share");
  }
  const LossConfig& l = c.loss;
  check(l.aux_coeff >= 0, "loss.aux_coeff: must be >= 0");
  check(l.pool_aux_coeff >= 0, "loss.pool_aux_coeff: must be >= 0");
  check(l.z_loss_coeff >= 0, "loss.z_loss_coeff: must be >= 0");
  check(l.pool_aux_coeff == 0 || m.ffn == "unipool",
        "loss.pool_aux_coeff: a pool loss needs model.ffn = unipool (got '" + m.ffn + "')");
  check(m.is_moe() || (l.aux_coeff == 0 && l.z_loss_coeff == 0),
        "loss.aux_coeff: balancing losses need an MoE model (model.ffn = dense)");

  const OptimConfig& o = c.optim;
  check(o.lr >= 0, "optim.lr: must be >= 0, got " + std::to_string(o.lr));
  check(o.min_lr >= 0, "optim.min_lr: must be >= 0, got " + std::to_string(o.min_lr));
  check(o.min_lr <= o.lr, "optim.min_lr: must not exceed optim.lr");
  check(o.warmup_steps >= 0, "optim.warmup_steps: must be >= 0");
  check(o.weight_decay >= 0, "optim.weight_decay: must be >= 0");
  check(o.beta1 >= 0 && o.beta1 < 1, "optim.beta1: must be in [0, 1)");
  check(o.beta2 >= 0 && o.beta2 < 1, "optim.beta2: must be in [0, 1)");
  check(o.eps > 0, "optim.eps: must be > 0");
  check(o.grad_clip >= 0, "optim.grad_clip: must be >= 0 (0 disables clipping)");

  const TrainConfig& t = c.train;
  positive(t.steps, "train.steps");
  positive(t.micro_batch, "train.micro_batch");
  positive(t.grad_accum, "train.grad_accum");
  check(t.eval_every >= 0, "train.eval_every: must be >= 0 (0 disables evaluation)");
  check(t.eval_every == 0 || t.eval_batches >= 1, "train.eval_batches: must be >= 1");
  check(t.ckpt_every >= 0, "train.ckpt_every: must be >= 0 (0 disables checkpoints)");
  positive(t.ckpt_keep, "train.ckpt_keep");
  positive(t.log_every, "train.log_every");
  check(t.threads >= 0, "train.threads: must be >= 0 (0 = all cores)");
  check(!t.out_dir.empty(), "train.out_dir: must not be empty");
  check(t.backend == "cpu" || t.backend == "cuda" || t.backend == "auto",
        "train.backend: must be cpu, cuda or auto, got '" + t.backend + "'");

  const DataConfig& d = c.data;
  check(d.format == "megatron" || d.format == "llmc",
        "data.format: must be megatron or llmc, got '" + d.format + "'");
  {
    std::stringstream ss(d.split);
    std::string part;
    int parts = 0;
    double total = 0;
    while (std::getline(ss, part, ',')) {
      char* end = nullptr;
      const double v = std::strtod(part.c_str(), &end);
      check(!part.empty() && end && *end == '\0' && v >= 0 && std::isfinite(v),
            "data.split: expected up to three non-negative numbers like \"969,30,1\", got '" +
                d.split + "'");
      total += v;
      ++parts;
    }
    check(parts >= 1 && parts <= 3 && total > 0,
          "data.split: expected up to three non-negative numbers like \"969,30,1\", got '" +
              d.split + "'");
  }
  if (check_data) {
    check(!d.train.empty(), "data.train: no training data given (a list of [weight, prefix])");
    for (const auto& [w, p] : d.train) {
      check(w > 0 && std::isfinite(w), "data.train: weight of '" + p + "' must be > 0");
      if (d.format == "megatron") {
        check(file_exists(p + ".idx"), "data.train: missing file '" + p + ".idx'");
        check(file_exists(p + ".bin"), "data.train: missing file '" + p + ".bin'");
      } else {
        check(file_exists(p), "data.train: missing file '" + p + "'");
      }
    }
  }
}

json read_config_file(const std::string& path_or_preset) {
  std::string path = path_or_preset;
  if (!file_exists(path)) {
    // A preset name: configs/NAME.json next to the source tree or in the current directory.
    for (const std::string& dir : {std::string("configs/"), std::string(UNIPOOL_CONFIG_DIR "/")}) {
      if (file_exists(dir + path_or_preset + ".json")) {
        path = dir + path_or_preset + ".json";
        break;
      }
    }
  }
  std::ifstream in(path);
  check(in.good(), "--config: cannot open '" + path_or_preset +
                       "' (not a file, and no preset configs/" + path_or_preset + ".json)");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
  check(!j.is_discarded(), "--config: '" + path + "' is not valid JSON");
  return j;
}

}  // namespace unipool
