// Plain types the op lists of both backends share (kernels/cpu/ops.h, kernels/cuda/ops.h). They
// carry data only: the kernels know nothing of configs, layouts or models.
#pragma once
#include <cstdint>
#include <vector>

namespace unipool {

// One tensor of a parameter arena as the optimizer sees it: elements [offset, offset + numel),
// weight-decayed or not. A model hands its optimizer the table of all its tensors, each once
// (model/layout.h builds it), so a tensor shared by several layers is updated once.
// T itself, in a context that takes no part in template deduction, so that nullptr may be passed
// for an optional T* argument of a templated op (std::type_identity_t before C++20).
template <typename T>
struct NonDeducedType {
  using type = T;
};
template <typename T>
using NonDeduced = typename NonDeducedType<T>::type;

struct TensorSpan {
  int64_t offset = 0;
  int64_t numel = 0;
  bool decay = false;
};
using TensorTable = std::vector<TensorSpan>;

// The scalars of one AdamW step (docs/model.md §Objective and optimizer).
struct AdamWParams {
  int step = 1;   // 1-based optimizer step (bias corrections)
  double lr = 0;  // this step's learning rate
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0;  // decoupled: θ ← θ·(1 − lr·wd) on tensors with decay
  double grad_scale = 1;    // multiplies every gradient first (the clip factor)
};

}  // namespace unipool
