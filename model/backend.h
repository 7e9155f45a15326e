// The two backends the model runs on. A backend is a struct that names
//   - its number types: Act (activations and their gradients), Float (router values, norm
//     statistics, losses), Param (master weights, weight gradients, optimizer moments), Weight (the
//     weights as the GEMMs read them);
//   - its memory: Array<U> (an owning buffer), alloc / zero / copy, and upload / download between
//     the host and the backend's memory;
//   - the op list, bound by name to kernels/cpu (CpuBackend<T>) or kernels/cuda (CudaBackend) with
//     the same names, argument order and semantics.
// model/model.cpp is written once against these names: Model<CpuBackend<float>> is the CPU engine,
// Model<CpuBackend<double>> the finite-difference oracle, Model<CudaBackend> the GPU engine.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/optimizer.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/crossentropy.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/layers.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/router.h"
#include "model/profile.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#endif

namespace unipool {

// The op list, one line per op, for a backend whose ops live in namespace NS with template argument
// list TARGS (empty for CUDA). Each line binds Backend::op to the op itself (a constexpr reference
// to the function), so a call through the backend is a direct call.
#define UNIPOOL_BIND_OPS(NS, TARGS)                                                               \
  /* layers */                                                                                    \
  static constexpr auto& embedding_forward = NS::embedding_forward TARGS;                         \
  static constexpr auto& embedding_backward = NS::embedding_backward TARGS;                       \
  static constexpr auto& rmsnorm_forward = NS::rmsnorm_forward TARGS;                             \
  static constexpr auto& rmsnorm_backward = NS::rmsnorm_backward TARGS;                           \
  static constexpr auto& swiglu_forward = NS::swiglu_forward TARGS;                               \
  static constexpr auto& swiglu_backward = NS::swiglu_backward TARGS;                             \
  static constexpr auto& scale_rows = NS::scale_rows TARGS;                                       \
  static constexpr auto& row_dot = NS::row_dot TARGS;                                             \
  /* attention */                                                                                 \
  static constexpr auto& rope_forward = NS::rope_forward TARGS;                                   \
  static constexpr auto& rope_backward = NS::rope_backward TARGS;                                 \
  static constexpr auto& attention_forward = NS::attention_forward TARGS;                         \
  static constexpr auto& attention_backward = NS::attention_backward TARGS;                       \
  /* matrix products */                                                                           \
  static constexpr auto& matmul_forward = NS::matmul_forward TARGS;                               \
  static constexpr auto& matmul_backward_input = NS::matmul_backward_input TARGS;                 \
  static constexpr auto& matmul_backward_weight = NS::matmul_backward_weight TARGS;               \
  static constexpr auto& router_logits_forward = NS::router_logits_forward TARGS;                 \
  static constexpr auto& router_logits_backward = NS::router_logits_backward TARGS;               \
  static constexpr auto& grouped_matmul_forward = NS::grouped_matmul_forward TARGS;               \
  static constexpr auto& grouped_matmul_backward_input = NS::grouped_matmul_backward_input TARGS; \
  static constexpr auto& grouped_matmul_backward_weight =                                         \
      NS::grouped_matmul_backward_weight TARGS;                                                   \
  /* routers, top-k, balancing terms */                                                           \
  static constexpr auto& softmax_forward = NS::softmax_forward TARGS;                             \
  static constexpr auto& softmax_backward = NS::softmax_backward TARGS;                           \
  static constexpr auto& norm_router_forward = NS::norm_router_forward TARGS;                     \
  static constexpr auto& norm_router_backward = NS::norm_router_backward TARGS;                   \
  static constexpr auto& topk_forward = NS::topk_forward TARGS;                                   \
  static constexpr auto& topk_backward = NS::topk_backward TARGS;                                 \
  static constexpr auto& expert_counts = NS::expert_counts;                                       \
  static constexpr auto& balance_loss_forward = NS::balance_loss_forward TARGS;                   \
  static constexpr auto& balance_loss_backward = NS::balance_loss_backward TARGS;                 \
  static constexpr auto& z_loss_forward = NS::z_loss_forward TARGS;                               \
  static constexpr auto& z_loss_backward = NS::z_loss_backward TARGS;                             \
  static constexpr auto& counts_to_float = NS::counts_to_float TARGS;                             \
  static constexpr auto& axpy = NS::axpy TARGS;                                                   \
  static constexpr auto& pool_counts_update = NS::pool_counts_update TARGS;                       \
  /* dispatch */                                                                                  \
  static constexpr auto& dispatch_plan = NS::dispatch_plan;                                       \
  static constexpr auto& gather_rows = NS::gather_rows TARGS;                                     \
  static constexpr auto& sum_slot_rows = NS::sum_slot_rows TARGS;                                 \
  static constexpr auto& slot_to_row_values = NS::slot_to_row_values TARGS;                       \
  static constexpr auto& row_to_slot_values = NS::row_to_slot_values TARGS;                       \
  /* LM head loss */                                                                              \
  static constexpr auto& crossentropy_forward_backward = NS::crossentropy_forward_backward TARGS;

// The CPU reference: every number type is T (float for training, double for finite differences),
// the GEMMs read the master weights themselves, memory is host memory.
template <typename T>
struct CpuBackend {
  using Act = T;
  using Float = T;
  using Param = T;
  using Weight = T;
  static constexpr bool kWeightCopy = false;  // Weight is Param: no separate copy
  static constexpr const char* kName = "cpu";
  using Clock = WallClock;  // ops are synchronous: phases are timed by the wall clock

  template <class U>
  using Array = std::vector<U>;
  template <class U>
  static Array<U> alloc(size_t n, const char*) {
    return Array<U>(n);
  }
  template <class U>
  static void zero(U* p, size_t n) {
    std::fill(p, p + n, U(0));
  }
  template <class U>
  static void copy(U* dst, const U* src, size_t n) {
    std::copy(src, src + n, dst);
  }
  template <class U>
  static void upload(U* dst, const U* host, size_t n) {
    std::copy(host, host + n, dst);
  }
  template <class U>
  static void download(U* host, const U* src, size_t n) {
    std::copy(src, src + n, host);
  }

  UNIPOOL_BIND_OPS(cpu, <T>)

  // optimizer (engine/optimizer.h)
  static constexpr auto& global_grad_norm = unipool::global_grad_norm<T>;
  static constexpr auto& adamw_step = unipool::adamw_step<T>;
};

#ifdef UNIPOOL_HAVE_CUDA
// The GPU engine (SPEC.md §2): bf16 activations and GEMM weights, fp32 everything else; memory is
// device memory, every op is asynchronous on cuda::stream().
struct CudaBackend {
  using Act = cuda::bf16;
  using Float = float;
  using Param = float;
  using Weight = cuda::bf16;
  static constexpr bool kWeightCopy = true;  // AdamW writes the bf16 copy the GEMMs read
  static constexpr const char* kName = "cuda";
  using Clock = cuda::EventClock;  // phases are timed by CUDA events on the stream

  template <class U>
  using Array = cuda::DeviceBuffer<U>;
  template <class U>
  static Array<U> alloc(size_t n, const char* what) {
    return Array<U>(n, what);
  }
  template <class U>
  static void zero(U* p, size_t n) {
    cuda::memset_zero(p, n * sizeof(U));
  }
  template <class U>
  static void copy(U* dst, const U* src, size_t n) {
    cuda::memcpy_device(dst, src, n * sizeof(U));
  }
  template <class U>
  static void upload(U* dst, const U* host, size_t n) {
    cuda::memcpy_to_device(dst, host, n * sizeof(U));
  }
  template <class U>
  static void download(U* host, const U* src, size_t n) {
    cuda::memcpy_to_host(host, src, n * sizeof(U));
  }

  UNIPOOL_BIND_OPS(cuda, )

  static constexpr auto& global_grad_norm = cuda::global_grad_norm;
  static constexpr auto& adamw_step = cuda::adamw_step;
  static constexpr auto& float_to_bf16_copy = cuda::float_to_bf16_copy;
};
#endif

#undef UNIPOOL_BIND_OPS

}  // namespace unipool
