// CUDA elementwise / row ops: the device versions of kernels/cpu/layers.h (token embedding,
// RMSNorm, SwiGLU, scale_rows, row_dot). Same names and argument orders as the CPU ops, in
// namespace unipool::cuda, fp32 in and out (bf16 activations arrive with the GEMM work), every
// pointer a DEVICE pointer, plus the stream as the last argument. Launchers are asynchronous on
// `stream` and throw unipool::Error when a launch fails.
//
// DETERMINISM: no float atomics. Every output element is written by one thread, and every sum runs
// in a fixed order that depends only on the shapes (never on scheduling), so results are bitwise
// the same run to run on one GPU kind:
//   - sums inside a row (rmsnorm rstd, rmsnorm dx's Σ, row_dot): one warp per row, lane l takes
//     elements l, l+32, ... in order, then a fixed xor-shuffle tree;
//   - embedding dE: each dE element is summed by one thread over its tokens in token order;
//   - rmsnorm dw: partials over fixed chunks of kNormRowChunk rows (each in row order) into a
//     caller-owned scratch, then the partials in chunk order.
// Reductions accumulate in fp32 (SPEC §2), so results match the CPU oracle (which accumulates in
// double) to float rounding, not bitwise.
//
// "+=" outputs accumulate into what is there, "=" outputs are fully overwritten.
//
// This header is includable from g++-compiled .cpp files: no device code here.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/error.h"

namespace unipool::cuda {

// Throws unipool::Error naming the failing call, file:line and the CUDA error string.
inline void check_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  if (err != cudaSuccess) {
    throw Error(std::string(file) + ":" + std::to_string(line) + ": CUDA call " + expr +
                " failed: " + cudaGetErrorString(err));
  }
}

}  // namespace unipool::cuda

#define CUDA_CHECK(expr) ::unipool::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)

namespace unipool::cuda {

// Rows per chunk of rmsnorm_backward's dw partials (as kernels/cpu/layers.h kNormRowChunk).
constexpr int kNormRowChunk = 128;

// ---------------------------------------------------------------------------------------------------
// Embedding.  tokens [N] in [0, V) (not checked), E [V,d], out [N,d].
//   forward:  out[t,:] = E[tokens[t],:]
//   backward: dE[v,:] += Σ_{t: tokens[t] = v} dout[t,:]   (each element summed in token order by
//   one
//             thread: deterministic, no atomics)
void embedding_forward(float* out, const int32_t* tokens, const float* E, int N, int d,
                       cudaStream_t stream);
void embedding_backward(float* dE, const float* dout, const int32_t* tokens, int N, int d,
                        cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------
// RMSNorm.  x, out, dout, dx [N,d]; w, dw [d]; rstd [N].
//   forward:  rstd[t] = 1/sqrt(mean_i x[t,i]² + eps);  out[t,i] = x[t,i]·rstd[t]·w[i]  (out may
//             alias x)
//   backward: dx[t,j] += rstd·(dout[t,j]·w[j] − x[t,j]·rstd²·(Σ_i dout[t,i]·w[i]·x[t,i])/d)
//             dw[i]   += Σ_t dout[t,i]·x[t,i]·rstd[t]
// scratch: a device buffer of at least rmsnorm_backward_scratch_floats(N, d) floats, owned by the
// caller, contents ignored and overwritten (the per-chunk dw partials, [ceil(N/128), d]).
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int d,
                     double eps, cudaStream_t stream);
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int N, int d, float* scratch, cudaStream_t stream);

// Floats of scratch rmsnorm_backward needs: ceil(N / kNormRowChunk) · d.
constexpr int64_t rmsnorm_backward_scratch_floats(int N, int d) {
  return N <= 0 || d <= 0 ? 0 : int64_t((N + kNormRowChunk - 1) / kNormRowChunk) * d;
}

// ---------------------------------------------------------------------------------------------------
// SwiGLU activation.  h13 [N,2F]: row t is [g (F) | v (F)]; a, da [N,F]; dh13 [N,2F].
//   forward:  a = silu(g)·v,  silu(g) = g·σ(g),  σ(g) = 1/(1+exp(−g))
//   backward: dg = da·v·σ(g)·(1 + g·(1 − σ(g))),  dv = da·silu(g);   dh13 = [dg | dv] (overwritten)
void swiglu_forward(float* a, const float* h13, int N, int F, cudaStream_t stream);
void swiglu_backward(float* dh13, const float* da, const float* h13, int N, int F,
                     cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------
// Row helpers.  (Backward of scale_rows: d in = scale_rows(dout, scale), d scale = row_dot(dout,
// in). Backward of row_dot: d a = scale_rows(b, dout), d b = scale_rows(a, dout).)
// scale_rows: out[r,:] = scale[r]·in[r,:]      in, out [rows, cols]; out may alias in.
void scale_rows(float* out, const float* in, const float* scale, int rows, int cols,
                cudaStream_t stream);
// row_dot: out[r] = <a[r,:], b[r,:]>      a, b [rows, cols]; out [rows] (fp32, one warp per row).
void row_dot(float* out, const float* a, const float* b, int rows, int cols, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------
// DeviceBuffer<T>: n elements of device memory (cudaMalloc / cudaFree), move-only. For tests and
// simple callers; copies are synchronous.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n_ > 0) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), n_ * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    copy_from_host(host);
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);  // never throws from a destructor
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), n_(o.n_) {
    o.ptr_ = nullptr;
    o.n_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_ != nullptr) cudaFree(ptr_);
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
      CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
    }
  }
  // device → host (waits for all prior work on the device).
  std::vector<T> to_host() const {
    std::vector<T> host(n_);
    if (n_ > 0) {
      CUDA_CHECK(cudaDeviceSynchronize());
      CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    }
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

}  // namespace unipool::cuda
