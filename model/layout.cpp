#include "model/layout.h"

#include <cmath>

#include "base/error.h"

namespace unipool {

namespace {

// The arena holds at most 2^58 elements: its bytes times the four arenas of a run (weights,
// gradients, two AdamW moments) fit a signed 64-bit size with room to spare.
constexpr int64_t kMaxArenaElements = int64_t(1) << 58;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

struct Builder {
  Layout& layout;
  int add(const std::string& name, std::vector<int64_t> shape, InitKind init, double std) {
    ParamTensor t;
    t.name = name;
    // Sizes in 64 bits with overflow checks: an absurd config is an error naming the tensor.
    int64_t numel = 1;
    for (int64_t dim : shape)
      if (__builtin_mul_overflow(numel, dim, &numel) || numel > kMaxArenaElements)
        numel = kMaxArenaElements + 1;
    check(numel <= kMaxArenaElements && layout.arena_size <= kMaxArenaElements - numel,
          "model: the parameters do not fit in 2^58 elements (tensor " + name + " " +
              shape_text(shape) + "): reduce model.vocab_size, model.d_model, " +
              "model.ffn_hidden, model.n_layer or the number of experts");
    t.numel = numel;
    t.decay = shape.size() >= 2;
    t.shape = std::move(shape);
    t.init = init;
    t.init_std = std;
    t.offset = layout.arena_size;
    layout.arena_size += (t.numel + kArenaAlign - 1) / kArenaAlign * kArenaAlign;
    layout.tensors.push_back(std::move(t));
    return static_cast<int>(layout.tensors.size()) - 1;
  }
};

}  // namespace

Layout make_layout(const ModelConfig& c) {
  Layout layout;
  layout.config = c;
  Builder b{layout};
  const int64_t d = c.d_model, F = c.ffn_hidden, Vp = c.padded_vocab(), L = c.n_layer;
  const double std0 = c.init_std;
  const double std_out =
      c.init_std / std::sqrt(2.0 * L);  // Wo and W2 (docs/model.md §Initialisation)

  layout.tok_embeddings = b.add("tok_embeddings.weight", {Vp, d}, InitKind::normal, std0);
  layout.layers.resize(L);
  for (int l = 0; l < L; ++l) {
    LayerView& v = layout.layers[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    v.attn_norm = b.add(p + "attn_norm.weight", {d}, InitKind::ones, 0);
    v.wqkv = b.add(p + "attn.wqkv.weight", {c.qkv_width(), d}, InitKind::normal, std0);
    v.wo = b.add(p + "attn.wo.weight", {d, d}, InitKind::normal, std_out);
    v.ffn_norm = b.add(p + "ffn_norm.weight", {d}, InitKind::ones, 0);
    if (c.ffn == FfnKind::dense) {
      v.w13 = b.add(p + "ffn.w13.weight", {2 * F, d}, InitKind::normal, std0);
      v.w2 = b.add(p + "ffn.w2.weight", {d, F}, InitKind::normal, std_out);
    } else if (c.ffn == FfnKind::moe) {
      const int64_t E = c.experts_per_layer;
      v.w13 = b.add(p + "experts.w13", {E, 2 * F, d}, InitKind::normal, std0);
      v.w2 = b.add(p + "experts.w2", {E, d, F}, InitKind::normal, std_out);
      v.bank_experts = c.experts_per_layer;
    }
  }
  if (c.ffn == FfnKind::unipool) {
    const int N = c.pool_layers(), M = c.pool_size;
    for (int g = 0; g < c.n_pools(); ++g) {
      const std::string p = "pools." + std::to_string(g) + ".";
      const int w13 = b.add(p + "w13", {M, 2 * F, d}, InitKind::normal, std0);
      const int w2 = b.add(p + "w2", {M, d, F}, InitKind::normal, std_out);
      layout.tensors[w13].uses = layout.tensors[w2].uses = N;
      for (int l = g * N; l < (g + 1) * N; ++l) {
        layout.layers[l].w13 = w13;
        layout.layers[l].w2 = w2;
        layout.layers[l].bank_experts = M;
        layout.layers[l].pool = g;
      }
    }
  }
  if (c.is_moe()) {
    const int B = c.router_share;
    for (int r = 0; r < c.n_routers(); ++r) {
      const std::string p = "routers." + std::to_string(r) + ".";
      const int w = b.add(p + "weight", {c.router_width(), d}, InitKind::normal, std0);
      layout.tensors[w].uses = B;
      int s = -1, bias = -1;
      if (c.router == RouterKind::norm) {
        s = b.add(p + "scale", {}, InitKind::ones, 0);
        layout.tensors[s].uses = B;
      }
      if (c.expert_bias) {
        bias = b.add(p + "expert_bias", {c.router_width()}, InitKind::zeros, 0);
        layout.tensors[bias].uses = B;
        layout.tensors[bias].trained = false;
      }
      for (int l = r * B; l < (r + 1) * B; ++l) {
        layout.layers[l].router = w;
        layout.layers[l].router_scale = s;
        layout.layers[l].router_id = r;
        layout.layers[l].expert_bias = bias;
      }
    }
  }
  layout.final_norm = b.add("norm.weight", {d}, InitKind::ones, 0);
  layout.output = b.add("output.weight", {Vp, d}, InitKind::normal, std0);
  for (const ParamTensor& t : layout.tensors)
    if (t.trained) layout.optimizer_table.push_back(TensorSpan{t.offset, t.numel, t.decay});
  return layout;
}

int Layout::find(const std::string& name) const {
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].name == name) return static_cast<int>(i);
  return -1;
}

int64_t Layout::num_parameters() const {
  int64_t n = 0;
  for (const auto& t : tensors)
    if (t.trained) n += t.numel;
  return n;
}

int64_t Layout::active_parameters(bool include_routers) const {
  const ModelConfig& c = config;
  const int64_t expert = 3LL * c.d_model * c.ffn_hidden;
  int64_t n = tensors[tok_embeddings].numel + tensors[final_norm].numel + tensors[output].numel;
  for (const LayerView& v : layers) {
    n += tensors[v.attn_norm].numel + tensors[v.wqkv].numel + tensors[v.wo].numel +
         tensors[v.ffn_norm].numel;
    n += v.bank_experts == 0 ? expert : c.top_k * expert;
    if (include_routers && v.router >= 0) {
      n += tensors[v.router].numel + (v.router_scale >= 0 ? 1 : 0);
    }
  }
  return n;
}

double Layout::flops_per_token() const {
  const ModelConfig& c = config;
  const double matmul_params = static_cast<double>(active_parameters(/*include_routers=*/true)) -
                               static_cast<double>(tensors[tok_embeddings].numel);
  return 6.0 * matmul_params + 6.0 * c.n_layer * c.d_model * static_cast<double>(c.seq_len);
}

}  // namespace unipool
