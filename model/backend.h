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

#include "kernels/cpu/ops.h"
#include "model/profile.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#endif

namespace unipool {

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

  // Host buffers, zeroed by all threads (kernels/cpu/memory.h: a 3.1 GB array is seconds of
  // page faults).
  template <class U>
  using Array = cpu::HostArray<U>;
  template <class U>
  static Array<U> alloc(size_t n, const char*) {
    Array<U> a(n);  // not initialised yet
    cpu::zero_fill(a.data(), n);
    return a;
  }
  template <class U>
  static void zero(U* p, size_t n) {
    cpu::zero_fill(p, n);
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

  // The op list (kernels/cpu/ops.h), bound by name: B::op(...) is a direct call.
  // layers
  static constexpr auto& embedding_forward = cpu::embedding_forward<T>;
  static constexpr auto& embedding_backward = cpu::embedding_backward<T>;
  static constexpr auto& rmsnorm_forward = cpu::rmsnorm_forward<T>;
  static constexpr auto& rmsnorm_backward = cpu::rmsnorm_backward<T>;
  static constexpr auto& swiglu_forward = cpu::swiglu_forward<T>;
  static constexpr auto& swiglu_backward = cpu::swiglu_backward<T>;
  static constexpr auto& scale_rows = cpu::scale_rows<T>;
  static constexpr auto& row_dot = cpu::row_dot<T>;
  // attention
  static constexpr auto& rope_forward = cpu::rope_forward<T>;
  static constexpr auto& rope_backward = cpu::rope_backward<T>;
  static constexpr auto& attention_forward = cpu::attention_forward<T>;
  static constexpr auto& attention_backward = cpu::attention_backward<T>;
  static constexpr auto& attention_decode = cpu::attention_decode<T>;
  // matrix products
  static constexpr auto& matmul_forward = cpu::matmul_forward<T>;
  static constexpr auto& matmul_backward_input = cpu::matmul_backward_input<T>;
  static constexpr auto& matmul_backward_weight = cpu::matmul_backward_weight<T>;
  static constexpr auto& router_logits_forward = cpu::router_logits_forward<T>;
  static constexpr auto& router_logits_backward = cpu::router_logits_backward<T>;
  static constexpr auto& grouped_matmul_forward = cpu::grouped_matmul_forward<T>;
  static constexpr auto& grouped_matmul_backward_input = cpu::grouped_matmul_backward_input<T>;
  static constexpr auto& grouped_matmul_backward_weight = cpu::grouped_matmul_backward_weight<T>;
  // routers, top-k, balancing terms
  static constexpr auto& softmax_forward = cpu::softmax_forward<T>;
  static constexpr auto& softmax_backward = cpu::softmax_backward<T>;
  static constexpr auto& sigmoid_forward = cpu::sigmoid_forward<T>;
  static constexpr auto& sigmoid_backward = cpu::sigmoid_backward<T>;
  static constexpr auto& norm_router_forward = cpu::norm_router_forward<T>;
  static constexpr auto& norm_router_backward = cpu::norm_router_backward<T>;
  static constexpr auto& topk_forward = cpu::topk_forward<T>;
  static constexpr auto& topk_backward = cpu::topk_backward<T>;
  static constexpr auto& expert_counts = cpu::expert_counts;
  static constexpr auto& balance_loss_forward = cpu::balance_loss_forward<T>;
  static constexpr auto& balance_loss_backward = cpu::balance_loss_backward<T>;
  static constexpr auto& z_loss_forward = cpu::z_loss_forward<T>;
  static constexpr auto& routing_stats = cpu::routing_stats<T>;
  static constexpr auto& entropy_loss_forward = cpu::entropy_loss_forward<T>;
  static constexpr auto& z_loss_backward = cpu::z_loss_backward<T>;
  static constexpr auto& counts_to_float = cpu::counts_to_float<T>;
  static constexpr auto& axpy = cpu::axpy<T>;
  static constexpr auto& pool_counts_update = cpu::pool_counts_update<T>;
  // UniPool-lock column ops
  static constexpr auto& scale_columns = cpu::scale_columns<T>;
  static constexpr auto& select_columns_forward = cpu::select_columns_forward<T>;
  static constexpr auto& select_columns_backward = cpu::select_columns_backward<T>;
  static constexpr auto& map_ids = cpu::map_ids;
  // dispatch
  static constexpr auto& dispatch_plan = cpu::dispatch_plan;
  static constexpr auto& gather_rows = cpu::gather_rows<T>;
  static constexpr auto& sum_slot_rows = cpu::sum_slot_rows<T>;
  static constexpr auto& slot_to_row_values = cpu::slot_to_row_values<T>;
  static constexpr auto& row_to_slot_values = cpu::row_to_slot_values<T>;
  // LM head loss
  static constexpr auto& crossentropy_forward_backward = cpu::crossentropy_forward_backward<T>;
  static constexpr auto& target_is_argmax = cpu::target_is_argmax<T>;
  // optimizer
  static constexpr auto& grad_sum_squares = cpu::grad_sum_squares<T>;
  static constexpr auto& adamw_step = cpu::adamw_step<T>;
};

#ifdef UNIPOOL_HAVE_CUDA
// The GPU engine (docs/model.md §Numerics by backend): bf16 activations and GEMM weights, fp32
// everything else; memory is device memory. Every op runs on the backend's CUDA context
// (cuda::context(), kernels/cuda/runtime.h: its stream, cuBLASLt workspace and op scratch),
// asynchronously on its stream.
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

  // The op list (kernels/cuda/ops.h), bound by name with the CPU backend's names and order.
  // layers
  static constexpr auto& embedding_forward = cuda::embedding_forward;
  static constexpr auto& embedding_backward = cuda::embedding_backward;
  static constexpr auto& rmsnorm_forward = cuda::rmsnorm_forward;
  static constexpr auto& rmsnorm_backward = cuda::rmsnorm_backward;
  static constexpr auto& swiglu_forward = cuda::swiglu_forward;
  static constexpr auto& swiglu_backward = cuda::swiglu_backward;
  static constexpr auto& scale_rows = cuda::scale_rows;
  static constexpr auto& row_dot = cuda::row_dot;
  // attention
  static constexpr auto& rope_forward = cuda::rope_forward;
  static constexpr auto& rope_backward = cuda::rope_backward;
  static constexpr auto& attention_forward = cuda::attention_forward;
  static constexpr auto& attention_backward = cuda::attention_backward;
  static constexpr auto& attention_decode = cuda::attention_decode;
  // matrix products
  static constexpr auto& matmul_forward = cuda::matmul_forward;
  static constexpr auto& matmul_backward_input = cuda::matmul_backward_input;
  static constexpr auto& matmul_backward_weight = cuda::matmul_backward_weight;
  static constexpr auto& router_logits_forward = cuda::router_logits_forward;
  static constexpr auto& router_logits_backward = cuda::router_logits_backward;
  static constexpr auto& grouped_matmul_forward = cuda::grouped_matmul_forward;
  static constexpr auto& grouped_matmul_backward_input = cuda::grouped_matmul_backward_input;
  static constexpr auto& grouped_matmul_backward_weight = cuda::grouped_matmul_backward_weight;
  // routers, top-k, balancing terms
  static constexpr auto& softmax_forward = cuda::softmax_forward;
  static constexpr auto& softmax_backward = cuda::softmax_backward;
  static constexpr auto& sigmoid_forward = cuda::sigmoid_forward;
  static constexpr auto& sigmoid_backward = cuda::sigmoid_backward;
  static constexpr auto& norm_router_forward = cuda::norm_router_forward;
  static constexpr auto& norm_router_backward = cuda::norm_router_backward;
  static constexpr auto& topk_forward = cuda::topk_forward;
  static constexpr auto& topk_backward = cuda::topk_backward;
  static constexpr auto& expert_counts = cuda::expert_counts;
  static constexpr auto& balance_loss_forward = cuda::balance_loss_forward;
  static constexpr auto& balance_loss_backward = cuda::balance_loss_backward;
  static constexpr auto& z_loss_forward = cuda::z_loss_forward;
  static constexpr auto& routing_stats = cuda::routing_stats;
  static constexpr auto& entropy_loss_forward = cuda::entropy_loss_forward;
  static constexpr auto& z_loss_backward = cuda::z_loss_backward;
  static constexpr auto& counts_to_float = cuda::counts_to_float;
  static constexpr auto& axpy = cuda::axpy;
  static constexpr auto& pool_counts_update = cuda::pool_counts_update;
  // UniPool-lock column ops
  static constexpr auto& scale_columns = cuda::scale_columns;
  static constexpr auto& select_columns_forward = cuda::select_columns_forward;
  static constexpr auto& select_columns_backward = cuda::select_columns_backward;
  static constexpr auto& map_ids = cuda::map_ids;
  // dispatch
  static constexpr auto& dispatch_plan = cuda::dispatch_plan;
  static constexpr auto& gather_rows = cuda::gather_rows;
  static constexpr auto& sum_slot_rows = cuda::sum_slot_rows;
  static constexpr auto& slot_to_row_values = cuda::slot_to_row_values;
  static constexpr auto& row_to_slot_values = cuda::row_to_slot_values;
  // LM head loss
  static constexpr auto& crossentropy_forward_backward = cuda::crossentropy_forward_backward;
  static constexpr auto& target_is_argmax = cuda::target_is_argmax;
  // optimizer
  static constexpr auto& grad_sum_squares = cuda::grad_sum_squares;
  static constexpr auto& adamw_step = cuda::adamw_step;
  static constexpr auto& float_to_bf16_copy = cuda::float_to_bf16_copy;
};
#endif

}  // namespace unipool
