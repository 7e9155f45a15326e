// The parameter layout: every tensor's name (docs/run-directory.md §Tensor names), shape, offset in
// the arena, whether it is weight-decayed, how it is initialised, and which layers use it. Computed
// once from the config.
//
// Master weights, gradients and both Adam moments are arenas with this same layout, so a tensor
// shared by several layers (a UniPool pool, a PathMoE router) is ONE entry: every layer that uses
// it accumulates into the same gradient slice, and clipping, weight decay, AdamW and checkpoints
// see it once because they walk this table.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/op_types.h"
#include "model/config.h"

namespace unipool {

enum class InitKind { normal, ones, zeros };

struct ParamTensor {
  std::string name;  // checkpoint name (docs/run-directory.md), e.g. "layers.3.attn.wqkv.weight"
  std::vector<int64_t> shape;  // row-major, [out, in] for linear weights
  int64_t offset = 0;          // first element in the arena (aligned to kArenaAlign)
  int64_t numel = 0;
  bool decay = false;  // AdamW weight decay: tensors of rank >= 2
  InitKind init = InitKind::normal;
  double init_std = 0;  // for InitKind::normal
  int uses = 1;         // how many layers read it (> 1: shared pool or router)
  // false: state kept in the arena and the checkpoints but not trained (the routers' expert bias):
  // no gradient, not in the optimizer table, not counted as a parameter.
  bool trained = true;
};

// What layer l reads: indices into Layout::tensors.
struct LayerView {
  int attn_norm = -1, wqkv = -1, wo = -1, ffn_norm = -1;
  int w13 = -1, w2 = -1;  // dense [2F,d]/[d,F]; moe/unipool: expert bank [n,2F,d]/[n,d,F]
  int bank_experts = 0;   // experts in the bank (0: dense FFN)
  int router = -1;        // routers.R.weight [width, d] (shared by a block of B layers)
  int router_scale = -1;  // routers.R.scale [] (NormRouter)
  int router_id = -1;     // R = l / B
  int expert_bias = -1;   // routers.R.expert_bias [width] (model.expert_bias; not trained)
  int pool = -1;          // unipool: pool group G = l / N
};

struct Layout {
  ModelConfig config;
  std::vector<ParamTensor> tensors;
  std::vector<LayerView> layers;
  int tok_embeddings = -1, final_norm = -1, output = -1;
  int64_t arena_size = 0;       // floats, including alignment padding between tensors
  TensorTable optimizer_table;  // every trained tensor once as (offset, numel, decay): what the
                                // optimizer ops walk (kernels/op_types.h)

  const ParamTensor& operator[](int i) const { return tensors[i]; }
  int find(const std::string& name) const;  // -1 when absent

  int64_t num_parameters()
      const;  // every distinct trained parameter once (the totals of docs/model.md §Paper presets)
  // Parameters one token touches: embeddings + attention + norms + k experts per layer
  // (+ the layer's router when include_routers). docs/model.md: 182,471,424 for the 182M UniPool.
  int64_t active_parameters(bool include_routers) const;
  // Training FLOPs per token: 6 × (active matmul parameters incl. LM head and routers, excl. the
  // input embedding) + 6·L·d·T for attention (the llm.c / PaLM count).
  double flops_per_token() const;
};

constexpr int64_t kArenaAlign = 16;  // floats: 64-byte aligned tensor starts

Layout make_layout(const ModelConfig& config);

}  // namespace unipool
