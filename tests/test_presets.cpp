// The presets in configs/: every one resolves (its "base" chain included) and validates, a base is
// merged under the file that names it, and a cycle of bases or a missing base is a clear Error.
// Every preset is the model of its row in configs/README.md: its shape and variant, its balancing
// losses, its parameter counts (checked three ways: the layout, a closed formula on the paper's
// shape, the numbers written here), and the paper presets share the paper's recipe.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/config.h"
#include "model/layout.h"
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

TEST_CASE("every preset writes its own run directory", "[config]") {
  // Two presets with one train.out_dir would train into (or resume from) each other's runs; a
  // preset with a base must set its own (tiny-bytes once wrote into runs/tiny).
  std::map<std::string, std::string> owner;  // out_dir -> preset
  for (const auto& entry : std::filesystem::directory_iterator(UNIPOOL_SOURCE_DIR "/configs")) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    const std::string name = entry.path().stem().string();
    INFO(name);
    const Config c = load_config(read_config_file(entry.path().string()), {}, false);
    const auto [it, fresh] = owner.emplace(c.train.out_dir, name);
    INFO("train.out_dir " << c.train.out_dir << " is also " << it->second << "'s");
    CHECK(fresh);
  }
  CHECK(owner.size() > 1);
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

namespace {

// What a preset builds, in the paper's terms: padded vocabulary, shape, FFN variant, router width
// (E experts per layer or M per pool; 0 for dense), top-k, layers per pool (0 = one global pool),
// layers per router, score function, renormalised gates, aux-free expert bias, UniPool-lock.
struct Arch {
  int64_t vp, L, d, nh, nkv, F;
  FfnKind ffn = FfnKind::dense;
  int64_t width = 0, k = 1, group = 0, share = 1;
  RouterKind router = RouterKind::softmax;
  bool renorm = false, bias = false, lock = false;
};

// The paper's shapes: V_p 51200 (50257 padded to 1024), 4 KV heads, F = 4d.
Arch paper(int64_t L, int64_t d, int64_t nh) {
  return Arch{51200, L, d, nh, 4, 4 * d};
}
const Arch k182 = paper(12, 768, 12), k469 = paper(24, 1024, 16), k650 = paper(36, 1024, 16),
           k830 = paper(48, 1024, 16), k978 = paper(24, 1536, 16);

Arch moe(Arch a, int64_t E, int64_t k = 1, RouterKind r = RouterKind::softmax) {
  a.ffn = FfnKind::moe, a.width = E, a.k = k, a.router = r;
  return a;
}
Arch unipool(Arch a, int64_t M, int64_t k = 1, int64_t group = 0, RouterKind r = RouterKind::norm) {
  a.ffn = FfnKind::unipool, a.width = M, a.k = k, a.group = group, a.router = r;
  return a;
}

Arch arch_of(const ModelConfig& m) {
  Arch a{m.padded_vocab(), m.n_layer, m.d_model, m.n_head, m.n_kv_head, m.ffn_hidden};
  a.ffn = m.ffn;
  if (m.is_moe()) {
    a.width = m.router_width(), a.k = m.top_k, a.share = m.router_share, a.router = m.router;
    a.renorm = m.router_renorm, a.bias = m.expert_bias, a.lock = m.lock.enabled;
    if (m.has_pools()) a.group = m.pool_group;
  }
  return a;
}

std::string describe(const Arch& a) {
  std::string s = "Vp " + std::to_string(a.vp) + " L " + std::to_string(a.L) + " d " +
                  std::to_string(a.d) + " nh " + std::to_string(a.nh) + " nkv " +
                  std::to_string(a.nkv) + " F " + std::to_string(a.F) + " " + name_of(a.ffn);
  if (a.ffn == FfnKind::dense) return s;
  return s + " width " + std::to_string(a.width) + " k " + std::to_string(a.k) + " group " +
         std::to_string(a.group) + " share " + std::to_string(a.share) + " router " +
         name_of(a.router) + (a.renorm ? " renorm" : "") + (a.bias ? " expert_bias" : "") +
         (a.lock ? " lock" : "");
}

// Parameter counts by the closed formula (docs/model.md §Paper presets), embeddings included:
// 2·V_p·d + d (embedding, LM head, final norm); per layer 2d (norms) + (n_h + 2·n_kv)·h_d·d (QKV)
// + d² (output projection); experts of 3·d·F (dense: one per layer; moe: E per layer; unipool:
// M per pool); L / B routers of width·d, plus one scale each for NormRouter. The expert bias is not
// trained and not counted. Active: k experts per layer (one for dense), no routers.
struct Counts {
  int64_t total, active;
};
Counts closed_form(const Arch& a) {
  const int64_t hd = a.d / a.nh, expert = 3 * a.d * a.F;
  const int64_t base =
      2 * a.vp * a.d + a.d + a.L * (2 * a.d + (a.nh + 2 * a.nkv) * hd * a.d + a.d * a.d);
  if (a.ffn == FfnKind::dense) return {base + a.L * expert, base + a.L * expert};
  const int64_t routers = a.L / a.share;
  const int64_t router_params = routers * (a.width * a.d + (a.router == RouterKind::norm ? 1 : 0));
  const int64_t banks = a.ffn == FfnKind::moe ? a.L : a.L / (a.group == 0 ? a.L : a.group);
  return {base + banks * a.width * expert + router_params, base + a.L * a.k * expert};
}

// One row per preset: what it builds, its Switch and pool loss coefficients, and its parameter
// counts (total: every distinct trained parameter once; active: routers left out).
// dense-182m's and unipool-182m's are SPEC's; the others follow from the closed formula, and all
// are checked below against the layout. configs/README.md shows the same table.
struct Row {
  const char* preset;
  Arch arch;
  double aux, pool_aux;
  int64_t total, active;
};

Arch with_share(Arch a, int64_t B, bool renorm) {
  a.share = B, a.renorm = renorm;
  return a;
}
Arch with_bias(Arch a) {
  a.bias = true;
  return a;
}
Arch with_lock(Arch a) {
  a.lock = true;
  return a;
}

const std::vector<Row>& rows() {
  using R = RouterKind;
  static const std::vector<Row> table = {
      // Paper Tab 2: dense, vanilla MoE (8E top-1), UniPool (M = 8L top-1) at every scale.
      {"dense-182m", k182, 0, 0, 182471424, 182471424},
      {"moe-182m", moe(k182, 8), 0.01, 0, 777087744, 182471424},
      {"unipool-182m", unipool(k182, 96), 0, 0.01, 777898764, 182471424},
      {"dense-469m", k469, 0, 0, 469812224, 469812224},
      {"moe-469m", moe(k469, 8), 0.01, 0, 2583938048, 469812224},
      {"unipool-469m", unipool(k469, 192), 0, 0.02, 2588460056, 469812224},
      {"dense-650m", k650, 0, 0, 652289024, 652289024},
      {"moe-650m", moe(k650, 8), 0.01, 0, 3823477760, 652289024},
      {"unipool-650m", unipool(k650, 288), 0, 0.02, 3833799716, 652289024},
      {"dense-830m", k830, 0, 0, 834765824, 834765824},
      {"moe-830m", moe(k830, 8), 0.01, 0, 5063017472, 834765824},
      {"unipool-830m", unipool(k830, 384), 0, 0.02, 5081498672, 834765824},
      {"dense-978m", k978, 0, 0, 978396672, 978396672},
      {"moe-978m", moe(k978, 8), 0.01, 0, 5735032320, 978396672},
      {"unipool-978m", unipool(k978, 192), 0, 0.02, 5741815320, 978396672},
      // Paper Fig 2a: reduced pools.
      {"unipool-182m-m64", unipool(k182, 64), 0, 0.01, 551111436, 182471424},
      {"unipool-182m-m48", unipool(k182, 48), 0, 0.01, 437717772, 182471424},
      {"unipool-469m-m128", unipool(k469, 128), 0, 0.02, 1781580824, 469812224},
      {"unipool-469m-m96", unipool(k469, 96), 0, 0.02, 1378141208, 469812224},
      {"unipool-469m-m64", unipool(k469, 64), 0, 0.02, 974701592, 469812224},
      {"unipool-650m-m144", unipool(k650, 144), 0, 0.02, 2016551972, 652289024},
      {"unipool-650m-m128", unipool(k650, 128), 0, 0.02, 1814635556, 652289024},
      {"unipool-650m-m96", unipool(k650, 96), 0, 0.02, 1410802724, 652289024},
      {"unipool-830m-m160", unipool(k830, 160), 0, 0.02, 2251916336, 834765824},
      {"unipool-830m-m128", unipool(k830, 128), 0, 0.02, 1847690288, 834765824},
      // Paper Tab 3 / Fig 2b: the fine-grained sweep, full-width experts.
      {"moe-182m-16e-top2", moe(k182, 16, 2), 0.01, 0, 1456638720, 267406080},
      {"moe-182m-32e-top4", moe(k182, 32, 4), 0.01, 0, 2815740672, 437275392},
      {"unipool-182m-m192-top2", unipool(k182, 192, 2), 0, 0.01, 1458260748, 267406080},
      {"unipool-182m-m384-top4", unipool(k182, 384, 4), 0, 0.01, 2818984716, 437275392},
      // Paper Tab 5: the 182M ablation.
      {"moe-182m-normrouter", moe(k182, 8, 1, R::norm), 0.01, 0, 777087756, 182471424},
      {"moe-182m-sigmoid-auxfree", with_bias(moe(k182, 8, 1, R::sigmoid)), 0, 0, 777087744,
       182471424},
      {"unipool-182m-softmax-layeraux", unipool(k182, 96, 1, 0, R::softmax), 0.01, 0, 777898752,
       182471424},
      {"unipool-182m-softmax-poolaux", unipool(k182, 96, 1, 0, R::softmax), 0, 0.01, 777898752,
       182471424},
      {"unipool-182m-g6", unipool(k182, 16, 1, 2), 0, 0.01, 777161484, 182471424},
      {"unipool-182m-g4", unipool(k182, 24, 1, 3), 0, 0.01, 777235212, 182471424},
      {"unipool-182m-g2", unipool(k182, 48, 1, 6), 0, 0.01, 777456396, 182471424},
      // UniPool-lock (the reference's ab70205 recipes; the parameters are UniPool's).
      {"unipool-lock-182m", with_lock(unipool(k182, 96)), 0, 0.01, 777898764, 182471424},
      {"unipool-lock-469m", with_lock(unipool(k469, 192)), 0, 0.02, 2588460056, 469812224},
      // Not UniPool-paper rows.
      {"pathmoe-182m", with_share(moe(k182, 8, 2), 4, true), 0, 0, 777032448, 267406080},
      {"pathmoe-unipool-182m", with_share(unipool(k182, 96), 4, false), 0, 0.01, 777235203,
       182471424},
      // The CPU demos: pool loss 1e-3 (and init_std 0.05) keep their NormRouters' gates alive.
      {"tiny", unipool(Arch{320, 4, 128, 4, 2, 256}, 32), 0, 0.001, 3441796, 672896},
      {"tiny-gpt2", unipool(Arch{50304, 4, 128, 4, 2, 256}, 32), 0, 0.001, 16237700, 13468800},
      {"tiny-bytes", unipool(Arch{320, 4, 128, 4, 2, 256}, 32), 0, 0.001, 3441796, 672896},
      {"bench-dense-124m", Arch{50304, 12, 768, 12, 12, 3072}, 0, 0, 190532352, 190532352},
      {"bench-dense-d256-l4", Arch{50304, 4, 256, 4, 4, 1024}, 0, 0, 29952256, 29952256},
  };
  return table;
}

Config load_preset(const std::string& name) {
  return load_config(read_config_file(std::string(UNIPOOL_SOURCE_DIR "/configs/") + name + ".json"),
                     {}, /*check_data=*/false);
}

bool is_paper_preset(const std::string& name) {
  return name.rfind("tiny", 0) != 0 && name.rfind("bench-", 0) != 0;
}

}  // namespace

TEST_CASE("every preset builds the model of its row: shape, variant, losses, parameters",
          "[config]") {
  std::set<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(UNIPOOL_SOURCE_DIR "/configs"))
    if (entry.is_regular_file() && entry.path().extension() == ".json")
      files.insert(entry.path().stem().string());
  std::set<std::string> listed;
  for (const Row& row : rows()) {
    INFO(row.preset);
    CHECK(listed.insert(row.preset).second);  // one row per preset
    CHECK(files.count(row.preset) == 1);      // the row's preset exists
    // The numbers written in the row are those of the row's shape (the closed formula).
    const Counts want = closed_form(row.arch);
    CHECK(want.total == row.total);
    CHECK(want.active == row.active);
    if (files.count(row.preset) == 0) continue;
    const Config c = load_preset(row.preset);
    CHECK(describe(arch_of(c.model)) == describe(row.arch));
    CHECK(c.loss.aux_coeff == row.aux);
    CHECK(c.loss.pool_aux_coeff == row.pool_aux);
    CHECK(c.loss.z_loss_coeff == 0);
    if (row.arch.bias) CHECK(c.loss.bias_update_rate == 0.001);
    // The layout the engine builds has the row's counts (the `unipool train` banner's numbers).
    const Layout layout = make_layout(c.model);
    CHECK(layout.num_parameters() == row.total);
    CHECK(layout.active_parameters(/*include_routers=*/false) == row.active);
    // ... and the closed formula holds on the preset's own shape, whatever it is.
    const Counts own = closed_form(arch_of(c.model));
    CHECK(layout.num_parameters() == own.total);
    CHECK(layout.active_parameters(false) == own.active);
  }
  for (const std::string& f : files) {
    INFO(f
         << ": a preset in configs/ with no row in tests/test_presets.cpp (and configs/README.md)");
    CHECK(listed.count(f) == 1);
  }
}

TEST_CASE("the paper presets share the paper recipe", "[config]") {
  for (const Row& row : rows()) {
    if (!is_paper_preset(row.preset)) continue;
    INFO(row.preset);
    const Config c = load_preset(row.preset);
    CHECK(c.model.vocab_size == 50257);
    CHECK(c.model.vocab_multiple == 1024);
    CHECK(c.model.seq_len == 1024);
    CHECK(c.model.norm_eps == 1e-5);
    CHECK(c.model.rope_base == 1e6);
    CHECK(c.model.init_std == 0.01);
    CHECK(c.optim.lr == 5e-4);
    CHECK(c.optim.min_lr == 5e-5);
    CHECK(c.optim.warmup_steps == 600);
    CHECK(c.optim.weight_decay == 0.01);
    CHECK(c.optim.beta1 == 0.9);
    CHECK(c.optim.beta2 == 0.999);
    CHECK(c.optim.eps == 1e-8);
    CHECK(c.optim.grad_clip == 1.0);
    CHECK(c.train.steps == 60000);
    CHECK(c.train.micro_batch * c.train.grad_accum == 512);  // the global batch on one rank
    // (the UniPool-lock scripts of the reference run micro-batches of 64)
    CHECK(c.train.micro_batch == (c.model.lock.enabled ? 64 : 16));
    CHECK(c.train.seed == 1234);
    CHECK(c.train.eval_every == 1000);
    CHECK(c.train.out_dir == std::string("runs/") + row.preset);
    CHECK(c.data.train.size() == 30);
    CHECK(c.data.split == "969,30,1");
  }
}

TEST_CASE("the paper sizes: names, the spec's totals, M = 8L, alpha_pool by scale", "[config]") {
  struct Size {
    const char* name;
    double millions;          // the size in the preset names
    double unipool_billions;  // unipool-spec.md §1's UniPool totals (paper Tab 6), rounded
    double active_millions;   // ... and its active parameters, rounded
  };
  const Size sizes[] = {{"182m", 182, 0.7779, 182.5},
                        {"469m", 469, 2.588, 469.8},
                        {"650m", 650, 3.834, 652.3},
                        {"830m", 830, 5.081, 834.8},
                        {"978m", 978, 5.742, 978.4}};
  for (const Size& s : sizes) {
    INFO(s.name);
    const Layout dense = make_layout(load_preset(std::string("dense-") + s.name).model);
    const Config uc = load_preset(std::string("unipool-") + s.name);
    const Layout uni = make_layout(uc.model);
    const Layout van = make_layout(load_preset(std::string("moe-") + s.name).model);
    const double d = double(dense.num_parameters());
    std::printf(
        "%s: dense %.1fM (%+.2f%% from the name), moe %.3fB, unipool %.3fB total, "
        "%.1fM active\n",
        s.name, d / 1e6, 100 * (d / (s.millions * 1e6) - 1), van.num_parameters() / 1e9,
        uni.num_parameters() / 1e9, uni.active_parameters(false) / 1e6);
    // The name is the dense model's size (and every 8E/top-1 variant's active size), within 1%.
    CHECK(std::abs(d / (s.millions * 1e6) - 1) < 0.01);
    CHECK(van.active_parameters(false) == dense.num_parameters());
    CHECK(uni.active_parameters(false) == dense.num_parameters());
    // The spec's rounded totals.
    CHECK(std::abs(uni.num_parameters() / 1e9 - s.unipool_billions) < 0.0006);
    CHECK(std::abs(uni.active_parameters(false) / 1e6 - s.active_millions) < 0.06);
    // M = 8L: the same expert parameters as vanilla 8E per layer.
    CHECK(uc.model.pool_size == 8 * uc.model.n_layer);
    CHECK(uc.loss.pool_aux_coeff == (std::string(s.name) == "182m" ? 0.01 : 0.02));
  }
}
