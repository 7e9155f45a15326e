#include "engine/backends.h"

#include <omp.h>

#include <cstdio>

#include "base/error.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace unipool {

BackendKind select_backend(const Config& c) {
  if (c.train.threads > 0) omp_set_num_threads(c.train.threads);
  bool have_gpu = false;
#ifdef UNIPOOL_HAVE_CUDA
  have_gpu = cuda::device_count() > 0;
#endif
  switch (c.train.backend) {
    case BackendKind::cuda:
#ifndef UNIPOOL_HAVE_CUDA
      throw Error(
          "train.backend: 'cuda' is not available in this build (nvcc was not found when it was "
          "configured); use cpu or auto");
#endif
      check(have_gpu,
            "train.backend: 'cuda' needs a CUDA device, and none was found; use cpu or auto");
      return BackendKind::cuda;
    case BackendKind::automatic:
      return have_gpu ? BackendKind::cuda : BackendKind::cpu;
    case BackendKind::cpu:
      return BackendKind::cpu;
  }
  return BackendKind::cpu;
}

std::string backend_banner(BackendKind backend) {
  char buf[512];
#ifdef UNIPOOL_HAVE_CUDA
  if (backend == BackendKind::cuda) {
    const cuda::DeviceInfo info = cuda::device_info();
    std::snprintf(buf, sizeof buf, "backend cuda (%s, %.1f GiB)", info.name.c_str(),
                  double(info.total_bytes) / (1 << 30));
    return buf;
  }
#endif
  (void)backend;
  std::snprintf(buf, sizeof buf, "backend cpu, %d threads", omp_get_max_threads());
  return buf;
}

size_t device_bytes(BackendKind backend) {
#ifdef UNIPOOL_HAVE_CUDA
  if (backend == BackendKind::cuda) return cuda::allocated_bytes();
#endif
  (void)backend;
  return 0;
}

}  // namespace unipool
