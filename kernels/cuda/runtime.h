// The CUDA runtime pieces every CUDA op and the CUDA backend share: error checking, bf16 host
// conversions, device buffers (the only place device memory is allocated, so its total can be
// reported), per-op scratch that is sized on first use, and the context that holds the
// process-wide state (the stream all ops run on, the cuBLASLt workspace, every op's scratch).
//
// Host-only: includable from g++-compiled .cpp files (no device code here).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "base/error.h"

namespace unipool::cuda {

using bf16 = __nv_bfloat16;

// Throws unipool::Error naming the failing call, file:line and the CUDA error string.
inline void check_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  if (err != cudaSuccess) {
    throw Error(std::string(file) + ":" + std::to_string(line) + ": CUDA call " + expr +
                " failed: " + cudaGetErrorString(err));
  }
}

}  // namespace unipool::cuda

#define CUDA_CHECK(expr) ::unipool::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)
// After a kernel launch: a bad configuration is reported at once, naming the kernel.
#define CUDA_CHECK_LAUNCH(name) \
  ::unipool::cuda::check_cuda(cudaGetLastError(), "launch of " name, __FILE__, __LINE__)

namespace unipool::cuda {

// Number of usable CUDA devices (0 when the driver or a device is missing; never throws).
int device_count();

// Makes `device` the current device of this thread (cudaSetDevice): one rank per GPU, the rank's
// local_rank. Error when the node has no such device (more ranks on this node than GPUs). Call it
// before anything else touches the GPU: context()'s stream lives on the device current at its
// creation.
void select_device(int device);

// The current device's name and memory (free: what cudaMemGetInfo reports now).
struct DeviceInfo {
  std::string name;
  size_t total_bytes = 0;
  size_t free_bytes = 0;
};
DeviceInfo device_info();

// The stream every op of the backend is enqueued on: context().stream (below). All op launchers
// are asynchronous on it; synchronize() waits for everything enqueued.
cudaStream_t stream();
void synchronize();

// bf16 <-> float on the host, bit-exact with the device conversions (round to nearest even;
// NaN stays NaN).
inline float bf16_to_float(bf16 x) {
  uint16_t bits;
  std::memcpy(&bits, &x, 2);
  const uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t bits;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    bits = uint16_t((u >> 16) | 0x40u);  // quiet NaN
  } else {
    bits = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  bf16 x;
  std::memcpy(static_cast<void*>(&x), &bits, 2);
  return x;
}

// Bytes of device memory currently held by DeviceBuffers and Scratch, and the largest total seen.
size_t allocated_bytes();
size_t peak_allocated_bytes();

// Raw allocation used by DeviceBuffer and Scratch. Running out of memory throws unipool::Error
// saying how much was asked, for what, how much is held and how much the device has free.
void* device_alloc(size_t bytes, const char* what);
void device_free(void* p, size_t bytes);

// DeviceBuffer<T>: n elements of device memory, move-only. Copies to and from the host are
// synchronous on stream() (they wait for the work enqueued before them).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n, const char* what = "buffer") : n_(n) {
    if (n_ > 0) ptr_ = static_cast<T*>(device_alloc(n_ * sizeof(T), what));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    copy_from_host(host);
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) device_free(ptr_, n_ * sizeof(T));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), n_(o.n_) {
    o.ptr_ = nullptr;
    o.n_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_ != nullptr) device_free(ptr_, n_ * sizeof(T));
      ptr_ = o.ptr_;
      n_ = o.n_;
      o.ptr_ = nullptr;
      o.n_ = 0;
    }
    return *this;
  }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return n_; }

  // host → device; host.size() must equal size().
  void copy_from_host(const std::vector<T>& host) {
    check(host.size() == n_, "DeviceBuffer::copy_from_host: host has " +
                                 std::to_string(host.size()) + " elements, buffer " +
                                 std::to_string(n_));
    if (n_ > 0) {
      CUDA_CHECK(
          cudaMemcpyAsync(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice, stream()));
      synchronize();
    }
  }
  // device → host (waits for all work enqueued before it).
  std::vector<T> to_host() const {
    std::vector<T> host(n_);
    if (n_ > 0) {
      CUDA_CHECK(
          cudaMemcpyAsync(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost, stream()));
      synchronize();
    }
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// Scratch: device memory an op owns for its intermediate values (e.g. per-chunk partial sums).
// get(bytes) grows it when asked for more than it holds (only on the first step of a run: the
// shapes never change after that) and returns it; contents are undefined. Growing waits for the
// stream first, so work still reading the old memory finishes before it is freed.
class Scratch {
 public:
  explicit Scratch(const char* what) : what_(what) {}
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get(size_t bytes);
  template <typename T>
  T* get_as(size_t n) {
    return static_cast<T*>(get(n * sizeof(T)));
  }

 private:
  const char* what_;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// The CUDA context: every piece of process-wide CUDA state the ops share, in one object — the
// stream all ops are enqueued on, the cuBLASLt workspace, and each op's scratch, named after the op
// that owns it (sized by that op's first call; the shapes never change after the first step). The
// CUDA backend runs on one context, context(), created on first use (which creates the stream) and
// destroyed at exit. State that later capabilities add (a communication stream for data
// parallelism, its events) joins it here.
struct Context {
  Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  cudaStream_t stream = nullptr;                                         // never destroyed
  Scratch lt_workspace{"cuBLASLt workspace (32 MiB)"};                   // matmul.cu
  Scratch router_dw_partials{"router_logits_backward dWr partials"};     // matmul.cu
  Scratch attention_delta{"attention_backward D = rowsum(dout * out)"};  // attention.cu
  Scratch dispatch_counts{"dispatch_plan per-(expert, chunk) counts"};   // dispatch.cu
  Scratch rmsnorm_dw_partials{"rmsnorm_backward dw partials"};           // layers.cu
  Scratch embedding_sort{"embedding_backward token sort"};               // layers.cu
  Scratch norm_router_partials{"norm_router_backward dsigma partials"};  // router.cu
  Scratch balance_partials{"balance_loss_forward partials"};             // router.cu
  Scratch z_loss_partials{"z_loss_forward partials"};                    // router.cu
  Scratch entropy_columns{"entropy_loss_forward column sums"};           // router.cu
  Scratch grad_norm_partials{"grad_sum_squares partials"};               // optimizer.cu
  Scratch chunk_table{"optimizer chunk table"};                          // optimizer.cu
  std::vector<unsigned char> chunk_table_host;  // the bytes chunk_table holds (optimizer.cu)
};

// The CUDA backend's context.
Context& context();

// Asynchronous memory helpers on stream() (n elements; pointers are device pointers unless named
// host). The backend's generic memory moves are these.
void memset_zero(void* dst, size_t bytes);
void memcpy_device(void* dst, const void* src, size_t bytes);
void memcpy_to_device(void* dst, const void* host_src, size_t bytes);  // waits until done
void memcpy_to_host(void* host_dst, const void* src, size_t bytes);    // waits until done
// The GPU's clock for model/profile.h: a mark is a CUDA event recorded on stream(); events are
// pooled and reused, seconds() waits for the later one.
class EventClock {
 public:
  using Mark = cudaEvent_t;
  EventClock() = default;
  ~EventClock();
  EventClock(const EventClock&) = delete;
  EventClock& operator=(const EventClock&) = delete;
  Mark mark();
  double seconds(Mark a, Mark b);
  void release(Mark m) { free_.push_back(m); }

 private:
  std::vector<cudaEvent_t> free_, all_;
};

// out[i] = value (n floats): the smallest end-to-end check that kernels run.
void fill(float* out, int n, float value);

}  // namespace unipool::cuda
