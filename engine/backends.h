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
  double activation_bytes = 0;              // activations, caches and scratch (Model)
  int64_t parameters = 0;
};

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
  const bool decode = w == Workload::sample;
  n.activation_bytes = double(Model<B>::planned_activation_bytes(
      layout, c.loss, decode ? 1 : c.train.micro_batch, decode ? 1 : c.model.seq_len,
      decode ? c.model.seq_len : 0, w == Workload::train ? c.train.recompute : Recompute::none));
  const double moments = c.train.zero == 1 ? 2.0 / ranks : 2.0;
  const double arenas = w == Workload::train  ? 2 + moments + (B::kWeightCopy && ranks > 1 ? 1 : 0)
                        : w == Workload::eval ? 2
                                              : 1;
  if (B::kWeightCopy) {  // the GPU: arenas, the bf16 copy, activations; host staging
    n.device_bytes = n.arena_bytes * (arenas + 0.5) + n.activation_bytes + double(32 << 20);
    n.host_bytes = n.arena_bytes * (w == Workload::train ? 3 : 1);
  } else {  // the CPU: arenas, one host array staged in (initial or loaded weights), activations
    n.host_bytes = n.arena_bytes * (arenas + 1) + n.activation_bytes;
  }
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
