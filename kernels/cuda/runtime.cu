// The CUDA runtime pieces of kernels/cuda/runtime.h: device query, the context and its stream,
// device memory accounting and scratch.
#include <algorithm>
#include <atomic>
#include <cstdio>

#include "kernels/cuda/runtime.h"

namespace unipool::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

void select_device(int device) {
  const int count = device_count();
  if (device < 0 || device >= count) {
    throw Error("CUDA device " + std::to_string(device) + " requested but this node has " +
                std::to_string(count) + " CUDA device" + (count == 1 ? "" : "s") +
                ": more ranks on this node than GPUs (one rank per GPU; CUDA_VISIBLE_DEVICES "
                "limits the devices a process sees)");
  }
  CUDA_CHECK(cudaSetDevice(device));
}

DeviceInfo device_info() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return DeviceInfo{prop.name, prop.totalGlobalMem, free_bytes};
}

Context::Context() {
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
}

Context& context() {
  static Context the_context;
  return the_context;
}

cudaStream_t stream() {
  return context().stream;
}

void synchronize() {
  CUDA_CHECK(cudaStreamSynchronize(stream()));
}

namespace {
std::atomic<size_t> g_allocated{0}, g_peak{0};
std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / 1048576.0);
  return buf;
}
}  // namespace

size_t allocated_bytes() {
  return g_allocated.load();
}
size_t peak_allocated_bytes() {
  return g_peak.load();
}

void* device_alloc(size_t bytes, const char* what) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error("out of GPU memory: " + std::string(what) + " needs " + mib(bytes) + " (" +
                cudaGetErrorString(err) + "); this run holds " + mib(allocated_bytes()) +
                ", the device has " + mib(free_b) + " free of " + mib(total_b) +
                ". Lower train.micro_batch or model.seq_len");
  }
  const size_t now = g_allocated.fetch_add(bytes) + bytes;
  size_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
  return p;
}

void device_free(void* p, size_t bytes) {
  if (p == nullptr) return;
  cudaFree(p);  // never throws: called from destructors
  g_allocated.fetch_sub(bytes);
}

Scratch::~Scratch() {
  device_free(ptr_, bytes_);
}

void* Scratch::get(size_t bytes) {
  if (bytes > bytes_) {
    if (ptr_ != nullptr) {
      synchronize();
      device_free(ptr_, bytes_);
      ptr_ = nullptr;
      bytes_ = 0;
    }
    ptr_ = device_alloc(bytes, what_);
    bytes_ = bytes;
  }
  return ptr_;
}

void memset_zero(void* dst, size_t bytes) {
  if (bytes > 0) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream()));
}
void memcpy_device(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
}
void memcpy_to_device(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream()));
  synchronize();
}
void memcpy_to_host(void* host_dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
  synchronize();
}

EventClock::~EventClock() {
  for (cudaEvent_t e : all_) cudaEventDestroy(e);  // never throws
}

cudaEvent_t EventClock::mark() {
  cudaEvent_t e = nullptr;
  if (free_.empty()) {
    CUDA_CHECK(cudaEventCreate(&e));
    all_.push_back(e);
  } else {
    e = free_.back();
    free_.pop_back();
  }
  CUDA_CHECK(cudaEventRecord(e, stream()));
  return e;
}

double EventClock::seconds(cudaEvent_t a, cudaEvent_t b) {
  CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  return ms / 1e3;
}

// out[i] = value: the smallest end-to-end check that kernels run (tests/test_cuda.cpp).
__global__ void fill_kernel(float* out, int n, float value) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = value;
}

void fill(float* out, int n, float value) {
  if (n <= 0) return;
  fill_kernel<<<(n + 255) / 256, 256, 0, stream()>>>(out, n, value);
  CUDA_CHECK_LAUNCH("fill_kernel");
}

}  // namespace unipool::cuda
