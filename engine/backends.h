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

namespace unipool {

// Resolves train.backend (auto = cuda when this build has CUDA and a device is present) and sets
// the CPU thread count (train.threads). Returns cpu or cuda; cuda without a device is an Error.
BackendKind select_backend(const Config& config);

// One line naming the backend: the GPU's name and memory, or the CPU thread count.
std::string backend_banner(BackendKind backend);

// Device memory the process holds now (GPU), 0 on the CPU.
size_t device_bytes(BackendKind backend);

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
