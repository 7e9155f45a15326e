#include "engine/backends.h"

#include <omp.h>

#include <cstdio>
#include <cstdlib>

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
  // How idle threads wait (engine/main.cpp's default: GOMP_SPINCOUNT 1000).
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  const std::string wait = policy != nullptr ? std::string("OMP_WAIT_POLICY ") + policy
                           : spin != nullptr ? std::string("GOMP_SPINCOUNT ") + spin
                                             : std::string("libgomp's default wait");
  std::snprintf(buf, sizeof buf, "backend cpu, %d threads (%s)", omp_get_max_threads(),
                wait.c_str());
  return buf;
}

namespace {

// MemAvailable of /proc/meminfo in bytes, or -1 when it cannot be read.
double host_memory_available() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return -1;
  char line[256];
  double kib = -1;
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
  }
  std::fclose(f);
  return kib < 0 ? -1 : kib * 1024.0;
}

std::string gib(double bytes) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(1 << 30));
  return buf;
}

// MiB below 1 GiB, else GiB.
std::string mib_or_gib(double bytes) {
  if (bytes >= double(1 << 30)) return gib(bytes);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / double(1 << 20));
  return buf;
}

}  // namespace

std::string describe_parts(const MemoryNeed& n) {
  const std::pair<const char*, double> parts[] = {
      {"weights", n.weight_bytes},         {"gradients", n.gradient_bytes},
      {"optimizer", n.optimizer_bytes},    {"bf16 copy", n.copy_bytes},
      {"activations", n.activation_bytes}, {"other", n.other_bytes}};
  std::string text;
  double total = 0;
  for (const auto& [name, bytes] : parts) {
    if (bytes <= 0) continue;
    text += (text.empty() ? "" : " + ") + std::string(name) + " " + mib_or_gib(bytes);
    total += bytes;
  }
  return text + " = " + mib_or_gib(total);
}

void check_memory(const MemoryNeed& need, const Config& c, BackendKind backend,
                  const char* command) {
  const std::string parts =
      " (" + describe_parts(need) + "; parameters: " + std::to_string(need.parameters) + ", " +
      gib(need.arena_bytes) +
      " per fp32 copy, sized by model.vocab_size, model.d_model, model.ffn_hidden, "
      "model.n_layer and the experts; activations for train.micro_batch " +
      std::to_string(c.train.micro_batch) + " × model.seq_len " + std::to_string(c.model.seq_len) +
      ", train.recompute " + name_of(c.train.recompute) + ")";
  const double host = host_memory_available();
  check(host < 0 || need.host_bytes <= host,
        std::string(command) + " needs about " + gib(need.host_bytes) + " of host memory" + parts +
            ", and " + gib(host) +
            " is available: reduce the model, train.micro_batch or model.seq_len");
#ifdef UNIPOOL_HAVE_CUDA
  if (backend == BackendKind::cuda) {
    const cuda::DeviceInfo info = cuda::device_info();
    check(need.device_bytes <= double(info.free_bytes),
          std::string(command) + " needs about " + gib(need.device_bytes) + " of GPU memory" +
              parts + ", and the GPU (" + info.name + ") has " + gib(double(info.free_bytes)) +
              " free: reduce the model, train.micro_batch or model.seq_len, set "
              "train.recompute, or shard the optimizer over more GPUs (train.zero = 1)");
  }
#endif
  (void)backend;
}

size_t device_bytes(BackendKind backend) {
#ifdef UNIPOOL_HAVE_CUDA
  if (backend == BackendKind::cuda) return cuda::allocated_bytes();
#endif
  (void)backend;
  return 0;
}

}  // namespace unipool
