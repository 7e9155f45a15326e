// Config loading: defaults ← file ← --set overrides, then typed conversion and validation, all
// driven by one key table (kKeys below): a key is declared once, with its name, its JSON type and
// its rule; its default is the initialiser of its struct member (engine/config.h, model/config.h).
#include "engine/config.h"
#include "model/layout.h"
#include "base/json_depth.h"
#include "base/json_fields.h"

#include <climits>
#include <cmath>
#include <fstream>
#include <iterator>
#include <functional>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include "base/error.h"

namespace unipool {

using json = nlohmann::json;

namespace {

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// ---- typed conversion from JSON: each throws an Error naming the key ---------------------------
void from_json_value(const json& v, const std::string& name, int* out) {
  if (v.is_number_integer() || v.is_number_unsigned()) {
    const long long x =
        v.is_number_unsigned()
            ? static_cast<long long>(std::min<uint64_t>(v.get<uint64_t>(), uint64_t(1) << 62))
            : v.get<long long>();
    check(x >= -2147483647LL && x <= 2147483647LL,
          name + ": " + describe_json(v) + " is out of range");
    *out = static_cast<int>(x);
    return;
  }
  if (v.is_number_float()) {
    const double x = v.get<double>();
    check(std::floor(x) == x && std::fabs(x) < 2147483647.0,
          name + ": expected an integer, got " + describe_json(v));
    *out = static_cast<int>(x);
    return;
  }
  throw Error(name + ": expected an integer, got " + describe_json(v));
}
void from_json_value(const json& v, const std::string& name, uint64_t* out) {
  check(v.is_number_unsigned() || (v.is_number_integer() && v.get<long long>() >= 0),
        name + ": expected a non-negative integer, got " + describe_json(v));
  *out = v.get<uint64_t>();
}
void from_json_value(const json& v, const std::string& name, double* out) {
  check(v.is_number(), name + ": expected a number, got " + describe_json(v));
  *out = v.get<double>();
  check(std::isfinite(*out), name + ": must be finite");
}
void from_json_value(const json& v, const std::string& name, bool* out) {
  check(v.is_boolean(), name + ": expected true or false, got " + describe_json(v));
  *out = v.get<bool>();
}
void from_json_value(const json& v, const std::string& name, std::string* out) {
  check(v.is_string(), name + ": expected a string, got " + describe_json(v));
  *out = v.get<std::string>();
}
// The enums (FfnKind, RouterKind, BackendKind): a string naming one of their values.
template <class Kind, class = decltype(name_of(Kind{}))>
void from_json_value(const json& v, const std::string& name, Kind* out) {
  check(v.is_string(), name + ": expected a string, got " + describe_json(v));
  check(parse_kind(v.get<std::string>(), out),
        name + ": unknown value '" + v.get<std::string>() + "'");
}
void from_json_value(const json& v, const std::string& name,
                     std::vector<std::pair<double, std::string>>* out) {
  check(v.is_array(),
        name + ": expected a list of [weight, prefix] pairs, got " + describe_json(v));
  out->clear();
  for (const json& entry : v) {
    check(entry.is_array() && entry.size() == 2 && entry[0].is_number() && entry[1].is_string(),
          name + ": each entry must be [weight, \"prefix\"], got " + describe_json(entry));
    out->emplace_back(entry[0].get<double>(), entry[1].get<std::string>());
  }
}

template <class T>
json to_json_value(const T& x) {
  if constexpr (std::is_enum_v<T>) {
    return name_of(x);
  } else if constexpr (std::is_same_v<T, std::vector<std::pair<double, std::string>>>) {
    json blend = json::array();
    for (const auto& [w, p] : x) blend.push_back(json::array({w, p}));
    return blend;
  } else {
    return x;
  }
}

// ---- per-key rules: "" when the value is fine, else what is wrong
// ----------------------------------
template <class T>
using Rule = std::function<std::string(const T&, const Config&)>;

Rule<int> in_range(int lo, int hi) {
  return [lo, hi](const int& v, const Config&) {
    return v >= lo && v <= hi ? std::string()
                              : "must be in " + std::to_string(lo) + ".." + std::to_string(hi) +
                                    ", got " + std::to_string(v);
  };
}
Rule<int> at_least(int lo, const char* note = "") {
  return [lo, note](const int& v, const Config&) {
    return v >= lo ? std::string()
                   : "must be >= " + std::to_string(lo) + note + ", got " + std::to_string(v);
  };
}
Rule<double> non_negative(const char* note = "") {
  return [note](const double& v, const Config&) {
    return v >= 0 ? std::string()
                  : "must be >= 0" + std::string(note) + ", got " + std::to_string(v);
  };
}
Rule<double> positive() {
  return [](const double& v, const Config&) {
    return v > 0 ? std::string() : "must be > 0, got " + std::to_string(v);
  };
}
Rule<double> unit_interval() {  // [0, 1)
  return [](const double& v, const Config&) {
    return v >= 0 && v < 1 ? std::string() : "must be in [0, 1), got " + std::to_string(v);
  };
}
Rule<double> open_unit_interval() {  // (0, 1)
  return [](const double& v, const Config&) {
    return v > 0 && v < 1 ? std::string() : "must be in (0, 1), got " + std::to_string(v);
  };
}
Rule<std::string> one_of(std::vector<std::string> allowed) {
  return [allowed](const std::string& v, const Config&) {
    for (const std::string& a : allowed)
      if (v == a) return std::string();
    std::string list;
    for (size_t i = 0; i < allowed.size(); ++i)
      list += (i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ") + allowed[i];
    return "must be " + list + ", got '" + v + "'";
  };
}
std::string split_rule(const std::string& split, const Config&) {
  std::stringstream ss(split);
  std::string part;
  int parts = 0;
  double total = 0;
  bool ok = true;
  while (std::getline(ss, part, ',')) {
    char* end = nullptr;
    const double v = std::strtod(part.c_str(), &end);
    ok = ok && !part.empty() && end && *end == '\0' && v >= 0 && std::isfinite(v);
    total += v;
    ++parts;
  }
  ok = ok && parts >= 1 && parts <= 3 && total > 0;
  return ok ? std::string()
            : "expected up to three non-negative numbers like \"969,30,1\", got '" + split + "'";
}

// ---- the key table
// --------------------------------------------------------------------------------- One row per
// key: its dotted name, the JSON conversions of its member, its rule, and (for the three keys whose
// default depends on other keys) how that default is derived when the value is null.
struct Key {
  std::string name;
  std::function<json(const Config&)> get;
  std::function<void(Config&, const json&)> set;   // type conversion (Error names the key)
  std::function<std::string(const Config&)> rule;  // "" or what is wrong
  std::function<void(Config&)> derive;             // non-null: the default is derived
};

template <class T>
Key key(const char* name, T& (*field)(Config&), Rule<T> rule = {},
        std::function<void(Config&)> derive = {}) {
  Key k;
  k.name = name;
  k.get = [field](const Config& c) { return to_json_value(field(const_cast<Config&>(c))); };
  k.set = [field, n = k.name](Config& c, const json& v) { from_json_value(v, n, &field(c)); };
  if (rule) {
    k.rule = [field, rule](const Config& c) { return rule(field(const_cast<Config&>(c)), c); };
  }
  k.derive = std::move(derive);
  return k;
}

// A field accessor, written as a captureless lambda so it converts to T& (*)(Config&).
#define UNIPOOL_FIELD(type, path) +[](Config& c) -> type& { return c.path; }

const std::vector<Key>& key_table() {
  static const std::vector<Key> keys = [] {
    std::vector<Key> t;
    // model.*: docs/model.md defines each
    t.push_back(key("model.vocab_size", UNIPOOL_FIELD(int, model.vocab_size), at_least(1)));
    t.push_back(key("model.vocab_multiple", UNIPOOL_FIELD(int, model.vocab_multiple), at_least(1)));
    t.push_back(key("model.seq_len", UNIPOOL_FIELD(int, model.seq_len), at_least(1)));
    // (the layout holds a few tensors per layer: 4096 layers bound its size before it is built)
    t.push_back(key("model.n_layer", UNIPOOL_FIELD(int, model.n_layer), in_range(1, 4096)));
    t.push_back(key("model.d_model", UNIPOOL_FIELD(int, model.d_model), at_least(1)));
    t.push_back(key("model.n_head", UNIPOOL_FIELD(int, model.n_head), at_least(1)));
    t.push_back(key("model.n_kv_head", UNIPOOL_FIELD(int, model.n_kv_head), at_least(1)));
    t.push_back(key("model.ffn_hidden", UNIPOOL_FIELD(int, model.ffn_hidden), at_least(1)));
    t.push_back(key("model.norm_eps", UNIPOOL_FIELD(double, model.norm_eps), positive()));
    t.push_back(key("model.rope_base", UNIPOOL_FIELD(double, model.rope_base),
                    Rule<double>([](const double& v, const Config&) {
                      return v > 1 ? std::string() : "must be > 1, got " + std::to_string(v);
                    })));
    t.push_back(key("model.init_std", UNIPOOL_FIELD(double, model.init_std), positive()));
    t.push_back(key("model.ffn", UNIPOOL_FIELD(FfnKind, model.ffn)));
    t.push_back(
        key("model.experts_per_layer", UNIPOOL_FIELD(int, model.experts_per_layer), at_least(1)));
    t.push_back(key("model.pool_size", UNIPOOL_FIELD(int, model.pool_size), at_least(1)));
    t.push_back(key("model.pool_group", UNIPOOL_FIELD(int, model.pool_group),
                    at_least(0, " (0 = one global pool)")));
    t.push_back(key("model.top_k", UNIPOOL_FIELD(int, model.top_k), at_least(1)));
    t.push_back(key("model.router", UNIPOOL_FIELD(RouterKind, model.router)));
    t.push_back(key("model.router_renorm", UNIPOOL_FIELD(bool, model.router_renorm)));
    t.push_back(key("model.router_share", UNIPOOL_FIELD(int, model.router_share), at_least(1)));
    t.push_back(key("model.expert_bias", UNIPOOL_FIELD(bool, model.expert_bias)));
    // loss.*
    t.push_back(
        key("loss.aux_coeff", UNIPOOL_FIELD(double, loss.aux_coeff), non_negative(),
            [](Config& c) { c.loss.aux_coeff = c.model.ffn == FfnKind::moe ? 0.01 : 0.0; }));
    t.push_back(key(
        "loss.pool_aux_coeff", UNIPOOL_FIELD(double, loss.pool_aux_coeff), non_negative(),
        [](Config& c) { c.loss.pool_aux_coeff = c.model.ffn == FfnKind::unipool ? 0.01 : 0.0; }));
    t.push_back(key("loss.z_loss_coeff", UNIPOOL_FIELD(double, loss.z_loss_coeff), non_negative()));
    t.push_back(
        key("loss.bias_update_rate", UNIPOOL_FIELD(double, loss.bias_update_rate), non_negative()));
    // lock.*: UniPool-lock (docs/model.md §UniPool-lock); the rules across keys are in
    // validate_lock
    t.push_back(key("lock.enabled", UNIPOOL_FIELD(bool, model.lock.enabled)));
    t.push_back(key("lock.lock_fraction", UNIPOOL_FIELD(double, model.lock.lock_fraction),
                    open_unit_interval()));
    t.push_back(key("lock.anneal_fraction", UNIPOOL_FIELD(double, model.lock.anneal_fraction),
                    open_unit_interval()));
    t.push_back(key("lock.entropy_warmup_fraction",
                    UNIPOOL_FIELD(double, model.lock.entropy_warmup_fraction),
                    open_unit_interval()));
    t.push_back(
        key("lock.entropy_coeff", UNIPOOL_FIELD(double, model.lock.entropy_coeff), non_negative()));
    t.push_back(
        key("lock.entropy_target", UNIPOOL_FIELD(int, model.lock.entropy_target), at_least(1)));
    t.push_back(key("lock.coverage", UNIPOOL_FIELD(double, model.lock.coverage),
                    Rule<double>([](const double& v, const Config&) {
                      return v > 0 && v <= 1 ? std::string()
                                             : "must be in (0, 1], got " + std::to_string(v);
                    })));
    t.push_back(key("lock.max_val_loss_excess",
                    UNIPOOL_FIELD(double, model.lock.max_val_loss_excess), non_negative()));
    t.push_back(key("lock.loss_excess_consecutive",
                    UNIPOOL_FIELD(int, model.lock.loss_excess_consecutive), at_least(1)));
    t.push_back(key("lock.ema_lookback", UNIPOOL_FIELD(int, model.lock.ema_lookback), at_least(1)));
    t.push_back(key("lock.ema_alpha", UNIPOOL_FIELD(double, model.lock.ema_alpha),
                    Rule<double>([](const double& v, const Config&) {
                      return v > 0 && v <= 1 ? std::string()
                                             : "must be in (0, 1], got " + std::to_string(v);
                    })));
    t.push_back(key("lock.compact", UNIPOOL_FIELD(bool, model.lock.compact)));
    // optim.*
    t.push_back(key("optim.lr", UNIPOOL_FIELD(double, optim.lr), non_negative()));
    t.push_back(key("optim.min_lr", UNIPOOL_FIELD(double, optim.min_lr),
                    Rule<double>([](const double& v, const Config& c) {
                      if (v < 0) return "must be >= 0, got " + std::to_string(v);
                      return v <= c.optim.lr ? std::string() : "must not exceed optim.lr";
                    })));
    t.push_back(key("optim.warmup_steps", UNIPOOL_FIELD(int, optim.warmup_steps), at_least(0),
                    [](Config& c) { c.optim.warmup_steps = c.train.steps / 100; }));
    t.push_back(key("optim.schedule", UNIPOOL_FIELD(LrSchedule, optim.schedule)));
    t.push_back(key("optim.decay_steps", UNIPOOL_FIELD(int, optim.decay_steps),
                    Rule<int>([](const int& v, const Config& c) {
                      if (c.optim.schedule != LrSchedule::wsd)
                        return v == 0 ? std::string()
                                      : std::string("is used by optim.schedule = wsd only");
                      if (v < 1) return "must be >= 1 with optim.schedule = wsd, got " +
                                        std::to_string(v);
                      return v <= c.train.steps - c.optim.warmup_steps
                                 ? std::string()
                                 : "must not exceed train.steps - optim.warmup_steps (" +
                                       std::to_string(c.train.steps - c.optim.warmup_steps) + ")";
                    })));
    t.push_back(
        key("optim.weight_decay", UNIPOOL_FIELD(double, optim.weight_decay), non_negative()));
    t.push_back(key("optim.beta1", UNIPOOL_FIELD(double, optim.beta1), unit_interval()));
    t.push_back(key("optim.beta2", UNIPOOL_FIELD(double, optim.beta2), unit_interval()));
    t.push_back(key("optim.eps", UNIPOOL_FIELD(double, optim.eps), positive()));
    t.push_back(key("optim.grad_clip", UNIPOOL_FIELD(double, optim.grad_clip),
                    non_negative(" (0 disables clipping)")));
    // train.*
    t.push_back(key("train.steps", UNIPOOL_FIELD(int, train.steps), at_least(1)));
    t.push_back(key("train.micro_batch", UNIPOOL_FIELD(int, train.micro_batch), at_least(1)));
    t.push_back(key("train.grad_accum", UNIPOOL_FIELD(int, train.grad_accum), at_least(1)));
    t.push_back(key("train.seed", UNIPOOL_FIELD(uint64_t, train.seed)));
    t.push_back(key("train.eval_every", UNIPOOL_FIELD(int, train.eval_every),
                    at_least(0, " (0 disables evaluation)")));
    t.push_back(key("train.eval_batches", UNIPOOL_FIELD(int, train.eval_batches),
                    Rule<int>([](const int& v, const Config& c) {
                      return c.train.eval_every == 0 || v >= 1 ? std::string() : "must be >= 1";
                    })));
    t.push_back(key("train.ckpt_every", UNIPOOL_FIELD(int, train.ckpt_every),
                    at_least(0, " (0 disables checkpoints)")));
    t.push_back(key("train.ckpt_keep", UNIPOOL_FIELD(int, train.ckpt_keep), at_least(1)));
    t.push_back(key("train.out_dir", UNIPOOL_FIELD(std::string, train.out_dir),
                    Rule<std::string>([](const std::string& v, const Config&) {
                      return v.empty() ? std::string("must not be empty") : std::string();
                    })));
    t.push_back(key("train.backend", UNIPOOL_FIELD(BackendKind, train.backend)));
    t.push_back(key("train.log_every", UNIPOOL_FIELD(int, train.log_every), at_least(1)));
    t.push_back(
        key("train.threads", UNIPOOL_FIELD(int, train.threads), at_least(0, " (0 = all cores)")));
    t.push_back(key("train.zero", UNIPOOL_FIELD(int, train.zero), in_range(0, 1)));
    t.push_back(key("train.recompute", UNIPOOL_FIELD(Recompute, train.recompute)));
    t.push_back(key("train.zero_gate_warning", UNIPOOL_FIELD(double, train.zero_gate_warning),
                    Rule<double>([](const double& v, const Config&) {
                      return v >= 0 && v <= 1 ? std::string()
                                              : "must be in [0, 1] (0: never), got " +
                                                    std::to_string(v);
                    })));
    t.push_back(
        key("train.comm_timeout_s", UNIPOOL_FIELD(double, train.comm_timeout_s), positive()));
    // data.*: docs/data.md
    using Blend = std::vector<std::pair<double, std::string>>;
    t.push_back(key("data.train", UNIPOOL_FIELD(Blend, data.train)));
    t.push_back(key("data.valid", UNIPOOL_FIELD(Blend, data.valid)));
    t.push_back(
        key("data.format", UNIPOOL_FIELD(std::string, data.format), one_of({"megatron", "llmc"})));
    t.push_back(
        key("data.split", UNIPOOL_FIELD(std::string, data.split), Rule<std::string>(split_rule)));
    return t;
  }();
  return keys;
}
#undef UNIPOOL_FIELD

// The JSON node of a dotted key in a tree (created when absent).
json& node_at(json& tree, const std::string& dotted) {
  json* node = &tree;
  size_t start = 0;
  for (;;) {
    const size_t dot = dotted.find('.', start);
    node =
        &(*node)[dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start)];
    if (dot == std::string::npos) return *node;
    start = dot + 1;
  }
}

bool is_comment_key(const std::string& k) {
  return k == "//" || k.rfind("_comment", 0) == 0;
}

// Copies `src` over `dst`, key by key; every key of src must exist in dst (the defaults tree).
void merge_known(json& dst, const json& src, const std::string& prefix) {
  check(src.is_object(), (prefix.empty() ? std::string("config") : prefix) +
                             ": expected a JSON object, got " + describe_json(src));
  for (auto it = src.begin(); it != src.end(); ++it) {
    const std::string name = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (is_comment_key(it.key())) continue;
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
  check_json_depth(text, "--set " + key);
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

// Merges `over` onto `base`: objects key by key, anything else replaced (the "base" mechanism).
void merge_over(json& base, const json& over) {
  for (auto it = over.begin(); it != over.end(); ++it) {
    if (it.value().is_object() && base.contains(it.key()) && base[it.key()].is_object()) {
      merge_over(base[it.key()], it.value());
    } else {
      base[it.key()] = it.value();
    }
  }
}

std::string resolve_config_path(const std::string& path_or_preset) {
  if (file_exists(path_or_preset)) return path_or_preset;
  // A preset name: configs/NAME.json next to the source tree or in the current directory.
  for (const std::string& dir : preset_directories())
    if (file_exists(dir + path_or_preset + ".json")) return dir + path_or_preset + ".json";
  throw Error("--config: cannot open '" + path_or_preset + "' (not a file, and no preset configs/" +
              path_or_preset + ".json)");
}

json read_config_chain(const std::string& path_or_preset, std::set<std::string>& visiting) {
  const std::string path = resolve_config_path(path_or_preset);
  check(visiting.insert(path).second,
        "--config: '" + path + "' is its own base (a cycle of \"base\")");
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "--config: cannot open '" + path + "'");
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  check_json_depth(text, "--config: '" + path + "'");
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
  check(!j.is_discarded(), "--config: '" + path + "' is not valid JSON");
  check(j.is_object(), "--config: '" + path + "' must hold a JSON object");
  if (!j.contains("base")) return j;
  check(j["base"].is_string(), path + ": \"base\" must name a preset or a file");
  json merged = read_config_chain(j["base"].get<std::string>(), visiting);
  j.erase("base");
  for (auto it = merged.begin(); it != merged.end();)  // the base's comments are not this file's
    it = is_comment_key(it.key()) ? merged.erase(it) : std::next(it);
  merge_over(merged, j);
  return merged;
}

}  // namespace

std::vector<std::string> config_keys() {
  std::vector<std::string> names;
  for (const Key& k : key_table()) names.push_back(k.name);
  return names;
}

json config_defaults() {
  const Config c;
  json j = c.to_json();
  for (const Key& k : key_table())
    if (k.derive) node_at(j, k.name) = nullptr;  // the default depends on other keys
  return j;
}

json Config::to_json() const {
  json j = json::object();
  for (const Key& k : key_table()) node_at(j, k.name) = k.get(*this);
  return j;
}

Config load_config(const json& file_json, const std::vector<std::string>& overrides,
                   bool check_data) {
  json tree = config_defaults();
  if (!file_json.is_null()) merge_known(tree, file_json, "");
  const json file_ffn = node_at(tree, "model.ffn");
  for (const auto& o : overrides) apply_override(tree, o);
  // The defaults of a variant follow the variant (docs/config.md §Resolution): the file chose its
  // balancing losses for its own model.ffn, so a --set that changes model.ffn gives them back their
  // derived defaults, except those a --set gives too.
  if (node_at(tree, "model.ffn") != file_ffn) {
    for (const char* name : {"loss.aux_coeff", "loss.pool_aux_coeff"}) {
      bool set_too = false;
      for (const auto& o : overrides) set_too = set_too || o.substr(0, o.find('=')) == name;
      if (!set_too) node_at(tree, name) = nullptr;
    }
  }

  Config c;
  for (const Key& k : key_table()) {
    const json& v = node_at(tree, k.name);
    if (!(v.is_null() && k.derive)) k.set(c, v);
  }
  for (const Key& k : key_table())  // derived defaults read the other keys, so they come last
    if (k.derive && node_at(tree, k.name).is_null()) k.derive(c);
  validate_config(c, check_data);
  return c;
}

// UniPool-lock's preconditions (the reference's validate_progressive_args and validate_config):
// each names the key to change.
static void validate_lock(const Config& c) {
  const ModelConfig& m = c.model;
  const LockConfig& lk = m.lock;
  const std::string why = "lock.enabled: UniPool-lock needs ";
  check(m.ffn == FfnKind::unipool,
        why + "model.ffn = unipool, got '" + std::string(name_of(m.ffn)) + "'");
  check(m.pool_layers() == m.n_layer,
        why + "one global pool (model.pool_group = 0), got " + std::to_string(m.pool_group));
  check(m.router == RouterKind::norm,
        why + "the NormRouter (model.router = norm), got '" + std::string(name_of(m.router)) + "'");
  check(m.router_share == 1,
        why + "a router per layer (model.router_share = 1), got " + std::to_string(m.router_share));
  check(!m.expert_bias, why + "model.expert_bias = false");
  check(c.loss.aux_coeff == 0, why + "loss.aux_coeff = 0 (the pool loss balances), got " +
                                   std::to_string(c.loss.aux_coeff));
  check(c.loss.pool_aux_coeff > 0, why + "loss.pool_aux_coeff > 0");
  check(m.n_layer >= 2, why + "at least 2 layers (model.n_layer)");
  check(m.pool_size % m.n_layer == 0,
        "model.pool_size: UniPool-lock gives each of the " + std::to_string(m.n_layer) +
            " layers pool_size / n_layer experts; " + std::to_string(m.pool_size) +
            " is not a multiple of n_layer");
  const int K = m.pool_size / m.n_layer;
  check(m.top_k <= K, "model.top_k: UniPool-lock routes inside a layer's K = " + std::to_string(K) +
                          " experts, so top_k must be <= K, got " + std::to_string(m.top_k));
  check(lk.anneal_fraction < lk.lock_fraction,
        "lock.anneal_fraction: must be smaller than lock.lock_fraction (the anneal ends at the "
        "lock)");
  check(lk.entropy_warmup_fraction <= lk.lock_fraction - lk.anneal_fraction,
        "lock.entropy_warmup_fraction: the warm-up must end before the anneal starts "
        "(<= lock_fraction - anneal_fraction)");
  check(lk.entropy_target <= K, "lock.entropy_target: must be <= K = " + std::to_string(K) +
                                    " (unreachable after the lock), got " +
                                    std::to_string(lk.entropy_target));
  const LockSchedule s = lock_schedule(c);
  check(s.anneal_steps >= 1, "lock.anneal_fraction: " + std::to_string(lk.anneal_fraction) +
                                 " of train.steps = " + std::to_string(c.train.steps) +
                                 " rounds to no step");
  check(s.freeze >= 1, "lock.lock_fraction: the freeze falls on step " + std::to_string(s.freeze) +
                           "; it must come after step 0 (raise lock_fraction or train.steps)");
  check(s.lock < c.train.steps, "lock.lock_fraction: the lock at step " + std::to_string(s.lock) +
                                    " must come before the last step " +
                                    std::to_string(c.train.steps));
  check(c.train.eval_every > 0,
        "train.eval_every: UniPool-lock chooses the partition at a validation; evaluation must "
        "be on");
  for (const auto& [name, at] : {std::pair<const char*, int>{"freeze", s.freeze}, {"lock", s.lock}})
    check(at % c.train.eval_every == 0, "train.eval_every: " + std::to_string(c.train.eval_every) +
                                            " does not divide the " + name + " step " +
                                            std::to_string(at) +
                                            " (UniPool-lock's transitions happen at "
                                            "validations)");
}

LockSchedule lock_schedule(const Config& c) {
  const LockConfig& lk = c.model.lock;
  // Python's round() (the reference's): to the nearest, halves to even (0.5 → 0, 1.5 → 2).
  const auto boundary = [&](double fraction) {
    return static_cast<int>(std::nearbyint(fraction * c.train.steps));
  };
  LockSchedule s;
  s.lock = boundary(lk.lock_fraction);
  s.anneal_steps = boundary(lk.anneal_fraction);
  s.freeze = s.lock - s.anneal_steps;
  s.warmup = boundary(lk.entropy_warmup_fraction);
  return s;
}

void validate_config(const Config& c, bool check_data) {
  for (const Key& k : key_table()) {
    if (!k.rule) continue;
    const std::string problem = k.rule(c);
    check(problem.empty(), k.name + ": " + problem);
  }
  // Rules across keys.
  const ModelConfig& m = c.model;
  check(m.d_model % m.n_head == 0, "model.n_head: d_model " + std::to_string(m.d_model) +
                                       " is not divisible by n_head " + std::to_string(m.n_head));
  check(m.n_head % m.n_kv_head == 0, "model.n_kv_head: n_head " + std::to_string(m.n_head) +
                                         " is not divisible by n_kv_head " +
                                         std::to_string(m.n_kv_head));
  check(m.head_dim() % 2 == 0,
        "model.n_head: head dim " + std::to_string(m.head_dim()) + " must be even for RoPE");
  if (m.has_pools()) {
    check(m.n_layer % m.pool_layers() == 0,
          "model.pool_group: n_layer " + std::to_string(m.n_layer) +
              " is not divisible by pool_group " + std::to_string(m.pool_group));
  }
  if (m.is_moe()) {
    const char* width_key = m.has_pools() ? "model.pool_size" : "model.experts_per_layer";
    check(m.top_k <= m.router_width(), std::string("model.top_k: k = ") + std::to_string(m.top_k) +
                                           " exceeds the " + std::to_string(m.router_width()) +
                                           " experts of " + width_key);
    check(m.top_k <= 64, "model.top_k: at most 64 experts per token are supported, got " +
                             std::to_string(m.top_k));
    check(m.n_layer % m.router_share == 0,
          "model.router_share: n_layer " + std::to_string(m.n_layer) +
              " is not divisible by router_share " + std::to_string(m.router_share));
    check(!(m.router_renorm && m.router == RouterKind::norm),
          "model.router_renorm: renormalisation is not defined for the NormRouter (router = norm)");
    check(!(m.router_renorm && m.router == RouterKind::sigmoid),
          "model.router_renorm: the sigmoid router renormalises its gates whenever top_k > 1 "
          "(leave router_renorm false)");
  } else {
    check(m.router_share == 1, "model.router_share: a dense model has no router to share");
  }
  // Sizes, in 64 bits: every count the engine indexes with a 32-bit int must fit one (vocabulary,
  // widths, the rows of a micro-batch), and the parameters must fit the arena (make_layout).
  const int64_t Vp =
      (int64_t(m.vocab_size) + m.vocab_multiple - 1) / m.vocab_multiple * m.vocab_multiple;
  check(Vp <= INT32_MAX, "model.vocab_size: " + std::to_string(m.vocab_size) +
                             " rounded up to a multiple of model.vocab_multiple (" +
                             std::to_string(m.vocab_multiple) + ") is " + std::to_string(Vp) +
                             ", more than 2^31 - 1");
  check((int64_t(m.n_head) + 2 * int64_t(m.n_kv_head)) * m.head_dim() <= INT32_MAX,
        "model.n_kv_head: the attention width (n_head + 2 n_kv_head) · head_dim is more than "
        "2^31 - 1");
  check(2 * int64_t(m.ffn_hidden) <= INT32_MAX,
        "model.ffn_hidden: " + std::to_string(m.ffn_hidden) + " is more than 2^30 - 1");
  const int64_t rows = int64_t(c.train.micro_batch) * m.seq_len * (m.is_moe() ? m.top_k : 1);
  check(rows <= INT32_MAX, std::string("train.micro_batch: micro_batch × model.seq_len") +
                               (m.is_moe() ? " × model.top_k" : "") + " = " + std::to_string(rows) +
                               " rows, more than 2^31 - 1");
  make_layout(m);  // Error naming the tensor when the parameters do not fit

  const LossConfig& l = c.loss;
  check(l.pool_aux_coeff == 0 || m.has_pools(),
        std::string("loss.pool_aux_coeff: a pool loss needs model.ffn = unipool (got '") +
            name_of(m.ffn) + "')");
  check(m.is_moe() || (l.aux_coeff == 0 && l.z_loss_coeff == 0),
        "loss.aux_coeff: balancing losses need an MoE model (model.ffn = dense)");
  check(m.is_moe() || !m.expert_bias, "model.expert_bias: a dense model has no router to bias");

  if (m.lock.enabled) validate_lock(c);

  const DataConfig& d = c.data;
  // Each blend's weights; with check_data, its files.
  auto check_blend = [&](const std::vector<std::pair<double, std::string>>& blend,
                         const std::string& key) {
    for (const auto& [w, p] : blend) {
      check(w > 0 && std::isfinite(w), key + ": weight of '" + p + "' must be > 0");
      if (!check_data) continue;
      const std::string missing = missing_token_file(p, d.format);
      check(missing.empty(), key + ": missing file '" + missing + "'");
    }
  };
  if (check_data)
    check(!d.train.empty(), "data.train: no training data given (a list of [weight, prefix])");
  check_blend(d.train, "data.train");
  check_blend(d.valid, "data.valid");
}

std::string missing_token_file(const std::string& prefix, const std::string& format) {
  if (format != "megatron") return file_exists(prefix) ? "" : prefix;
  for (const char* ext : {".idx", ".bin"})
    if (!file_exists(prefix + ext)) return prefix + ext;
  return "";
}

std::vector<std::string> preset_directories() {
  return {"configs/", UNIPOOL_CONFIG_DIR "/"};
}

json read_config_file(const std::string& path_or_preset) {
  std::set<std::string> visiting;
  return read_config_chain(path_or_preset, visiting);
}

}  // namespace unipool
