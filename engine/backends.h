// Picking the backend a run computes on (train.backend) and running templated code on it: the one
// place that knows which backends this build has.
//
//   const BackendKind b = select_backend(config);          // cpu or cuda (auto resolved)
//   on_backend(b, [&](auto backend) {                      // backend: BackendTag<B>
//     using B = typename decltype(backend)::type;          // CpuBackend<float> or CudaBackend
//     TrainerOn<B> trainer(config); ...
//   });
#pragma once
#include <cstddef>
#include <string>
#include <utility>

#include "engine/config.h"
#include "model/backend.h"
#include "model/layout.h"
#include "model/model.h"

namespace unipool {

// Resolves train.backend (auto = cuda when this build has CUDA and a device is present) and sets
// the CPU thread count (train.threads). Returns cpu or cuda; cuda without a device is an Error.
BackendKind select_backend(const Config& config);

// One line naming the backend: the GPU's name and memory, or the CPU thread count.
std::string backend_banner(BackendKind backend);

// Device memory the process holds now (GPU), 0 on the CPU.
size_t device_bytes(BackendKind backend);

// The memory a command needs, estimated from the config before anything is allocated, so that an
// absurd config is refused with numbers instead of dying in the allocator or the OOM killer
// (docs/failure.md §Memory). Sizes in double: an absurd plan does not overflow.
enum class Workload { train, eval, sample };
struct MemoryNeed {
  double host_bytes = 0, device_bytes = 0;  // in total, on each side
  double arena_bytes = 0;                   // one fp32 copy of the parameters
  int64_t parameters = 0;
  // The parts on the side that computes (the GPU, or the host for the CPU backend):
  double weight_bytes = 0;      // fp32 master weights
  double gradient_bytes = 0;    // fp32 gradients
  double optimizer_bytes = 0;   // AdamW moments (this rank's shard under ZeRO-1)
  double copy_bytes = 0;        // the GPU's bf16 weight copy
  double activation_bytes = 0;  // activations, caches and scratch (Model)
  double other_bytes = 0;       // cuBLASLt workspace, NCCL staging, host staging of the weights
};

// "weights 2.9 GiB + gradients 2.9 GiB + optimizer 5.8 GiB + … = 13.1 GiB" (the non-zero parts).
std::string describe_parts(const MemoryNeed& need);

// On backend B: the parameter arenas a workload holds (training: weights, gradients, two AdamW
// moments, or their 1/ranks shard under ZeRO-1, and with several GPU ranks NCCL's receive buffer
// of the gradient sum; eval: weights and gradients; sample: weights), the GPU's bf16 weight copy
// and cuBLASLt workspace, the host copies that staging and checkpoints make, and the activations
// of exactly the Model the workload builds. Per rank.
template <class B>
MemoryNeed memory_need(const Config& c, const Layout& layout, Workload w, int ranks = 1) {
  MemoryNeed n;
  n.parameters = layout.num_parameters();
  n.arena_bytes = double(layout.arena_size) * sizeof(float);
  const bool decode = w == Workload::sample, train = w == Workload::train;
  n.activation_bytes = double(Model<B>::planned_activation_bytes(
      layout, c.loss, decode ? 1 : c.train.micro_batch, decode ? 1 : c.model.seq_len,
      decode ? c.model.seq_len : 0, train ? c.train.recompute : Recompute::none));
  n.weight_bytes = n.arena_bytes;
  n.gradient_bytes = w == Workload::sample ? 0 : n.arena_bytes;
  n.optimizer_bytes = train ? n.arena_bytes * (c.train.zero == 1 ? 2.0 / ranks : 2.0) : 0;
  if (B::kWeightCopy) {  // the GPU; the host stages the weights and moments for checkpoints
    n.copy_bytes = n.arena_bytes / 2;
    n.other_bytes = double(32 << 20) + (train && ranks > 1 ? double(320 << 20) : 0.0);
    n.host_bytes = n.arena_bytes * (train ? 3 : 1);
  } else {  // the CPU: plus one host array staged in (initial or loaded weights)
    n.other_bytes = n.arena_bytes;
  }
  const double total = n.weight_bytes + n.gradient_bytes + n.optimizer_bytes + n.copy_bytes +
                       n.activation_bytes + n.other_bytes;
  (B::kWeightCopy ? n.device_bytes : n.host_bytes) = total;
  return n;
}

// Error when the need exceeds what is available: MemAvailable of /proc/meminfo for the host (not
// checked when unreadable), the device's free memory for the GPU. The message names the keys that
// size the parameters and the activations, and the numbers.
void check_memory(const MemoryNeed& need, const Config& c, BackendKind backend,
                  const char* command);

template <class B>
struct BackendTag {
  using type = B;
};

// Calls fn(BackendTag<B>{}) with B the engine backend of `backend` (from select_backend).
template <class Fn>
decltype(auto) on_backend(BackendKind backend, Fn&& fn) {
#ifdef UNIPOOL_HAVE_CUDA
  if (backend == BackendKind::cuda) return std::forward<Fn>(fn)(BackendTag<CudaBackend>{});
#endif
  return std::forward<Fn>(fn)(BackendTag<CpuBackend<float>>{});
}

}  // namespace unipool
