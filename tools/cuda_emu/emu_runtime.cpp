// The host half of the CUDA emulator: the CUDA runtime API calls the project makes, implemented
// on the CPU so nothing needs libcudart or a driver. Device memory is host memory (allocated at
// the exact size, 256-byte aligned, poisoned with 0xFF = NaN for floats and bf16, -1 for
// integers; under ASan a byte past the end is reported). Every "asynchronous" operation runs at
// once on the calling thread, in order, so the stream is always idle when a call returns.
//
// What it checks: pointers given as device memory lie inside one cudaMalloc allocation (memcpy,
// memset, cuBLASLt and CUB operands, cp.async sources), cudaMemcpy kinds match where the
// pointers live, cudaFree gets a pointer from cudaMalloc, launches and library calls use a stream
// from cudaStreamCreate* (not the legacy default stream 0), and a synchronous cudaMemcpy/cudaMemset
// (legacy default stream) does not run while work on a non-blocking stream is unsynchronized.
//
// What it does NOT model: host code reading device memory directly works here (it would crash on
// the GPU); pinned memory, multiple devices, peer access, graphs, asynchronous errors.
//
// Environment: EMU_DEVICES=0 makes cudaGetDeviceCount report no device (the tests' skip path);
// EMU_DEVICE_MEMORY=<bytes> (default 80 GiB) makes cudaMalloc fail beyond that total.
#include <cstdarg>
#include <cstdint>
#include <ctime>
#include <map>
#include <set>
#include <string>

#include "emu_cuda.h"

namespace emu {
namespace {

std::map<uintptr_t, size_t>& allocations() {
  static auto* m = new std::map<uintptr_t, size_t>;  // never destroyed: static destructors free
  return *m;
}
size_t g_allocated = 0;

size_t device_memory_bytes() {
  static const size_t bytes = [] {
    const char* s = getenv("EMU_DEVICE_MEMORY");
    return s != nullptr && *s != '\0' ? size_t(std::strtoull(s, nullptr, 10))
                                      : size_t(80) << 30;
  }();
  return bytes;
}

// The allocation holding p, or nullptr.
const std::pair<const uintptr_t, size_t>* find_allocation(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto& m = allocations();
  auto it = m.upper_bound(a);
  if (it == m.begin()) return nullptr;
  --it;
  if (a >= it->first + std::max<size_t>(it->second, 1)) return nullptr;
  return &*it;
}

struct StreamState {
  unsigned flags = 0;
  uint64_t work = 0;    // operations enqueued so far
  uint64_t synced = 0;  // operations known complete to the host (stream or event sync)
  bool pending() const { return work > synced; }
};
std::map<cudaStream_t, StreamState>& streams() {
  static auto* m = new std::map<cudaStream_t, StreamState>;
  return *m;
}

bool is_device(const void* p) {
  return find_allocation(p) != nullptr;
}

// A synchronous call on the legacy default stream does not wait for non-blocking streams.
void check_sync_call(const char* what) {
  for (const auto& [s, st] : streams()) {
    if ((st.flags & cudaStreamNonBlocking) != 0 && st.pending())
      fail("%s on the legacy default stream while work on the non-blocking stream %p is not "
           "synchronized: on the GPU the two do not wait for each other (use the Async call on "
           "that stream, or synchronize it first)",
           what, static_cast<void*>(s));
  }
}

cudaError_t g_last_error = cudaSuccess;

}  // namespace

void check_device_range(const void* p, size_t bytes, const char* what) {
  if (bytes == 0) return;
  const auto* alloc = find_allocation(p);
  if (alloc == nullptr)
    fail("%s: %s %p is not device memory (no cudaMalloc allocation holds it)", kernel_name(), what,
         p);
  const auto a = reinterpret_cast<uintptr_t>(p);
  if (a + bytes > alloc->first + alloc->second)
    fail("%s: %s [%p, +%zu bytes) runs %zu bytes past the end of its %zu-byte allocation",
         kernel_name(), what, p, bytes, size_t(a + bytes - alloc->first - alloc->second),
         alloc->second);
}

void check_stream(cudaStream_t s, const char* what) {
  if (s == nullptr)
    fail("%s: runs on the legacy default stream 0; every op must run on cuda::stream()", what);
  if (streams().count(s) == 0)
    fail("%s: stream %p was not created by cudaStreamCreate* (or was destroyed)", what,
         static_cast<void*>(s));
}

void note_stream_work(cudaStream_t s) {
  auto it = streams().find(s);
  if (it != streams().end()) ++it->second.work;
}

}  // namespace emu

using emu::fail;

// ---- the CUDA runtime API ---------------------------------------------------------------------------
extern "C" {

cudaError_t cudaGetDeviceCount(int* n) {
  static const bool none = [] {
    const char* s = getenv("EMU_DEVICES");
    return s != nullptr && std::string(s) == "0";
  }();
  if (none) {
    *n = 0;
    emu::g_last_error = cudaErrorNoDevice;  // sticky, like the real runtime without a device
    return cudaErrorNoDevice;
  }
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  return d == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::g_last_error;
  emu::g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() {
  return emu::g_last_error;
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorMemoryAllocation:
      return "out of memory (emulated)";
    case cudaErrorNoDevice:
      return "no CUDA-capable device is detected (emulated)";
    default:
      return "emulated CUDA error";
  }
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
    default:
      return "cudaErrorUnknown";
  }
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "CPU emulation of an H100 (tools/cuda_emu)");
  p->totalGlobalMem = emu::device_memory_bytes();
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = 227 * 1024;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->maxThreadsPerMultiProcessor = 2048;
  p->l2CacheSize = 50 * 1024 * 1024;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = 132;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = 227 * 1024;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *value = 32;
      return cudaSuccess;
    default:
      fail("cudaDeviceGetAttribute(%d) is not emulated: add it to tools/cuda_emu/emu_runtime.cpp",
           int(attr));
  }
}

// ---- streams and synchronization ----------------------------------------------------------------------
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  static uintptr_t next = 0x5000;
  *s = reinterpret_cast<cudaStream_t>(next += 0x10);
  emu::StreamState st;
  st.flags = flags;
  emu::streams()[*s] = st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  return cudaStreamCreateWithFlags(s, cudaStreamDefault);
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (emu::streams().erase(s) != 1) fail("cudaStreamDestroy of an unknown stream");
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (s == nullptr) {
    for (auto& [k, st] : emu::streams())
      if ((st.flags & cudaStreamNonBlocking) == 0) st.synced = st.work;
    return cudaSuccess;
  }
  emu::check_stream(s, "cudaStreamSynchronize");
  auto& st = emu::streams()[s];
  st.synced = st.work;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  for (auto& [k, st] : emu::streams()) st.synced = st.work;
  return cudaSuccess;
}

// ---- memory ----------------------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (emu::g_allocated + bytes > emu::device_memory_bytes()) {
    *p = nullptr;
    emu::g_last_error = cudaErrorMemoryAllocation;
    return cudaErrorMemoryAllocation;
  }
  void* q = nullptr;
  if (posix_memalign(&q, 256, std::max<size_t>(bytes, 1)) != 0) {
    *p = nullptr;
    emu::g_last_error = cudaErrorMemoryAllocation;
    return cudaErrorMemoryAllocation;
  }
  std::memset(q, 0xFF, bytes);
  emu::allocations()[reinterpret_cast<uintptr_t>(q)] = bytes;
  emu::g_allocated += bytes;
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (p == nullptr) return cudaSuccess;
  auto& m = emu::allocations();
  auto it = m.find(reinterpret_cast<uintptr_t>(p));
  if (it == m.end()) fail("cudaFree(%p): not a pointer cudaMalloc returned (or freed twice)", p);
  emu::g_allocated -= it->second;
  m.erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *total_bytes = emu::device_memory_bytes();
  *free_bytes = *total_bytes - emu::g_allocated;
  return cudaSuccess;
}

static void check_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, const char* what) {
  if (n == 0) return;
  const bool dd = emu::is_device(dst), sd = emu::is_device(src);
  switch (kind) {
    case cudaMemcpyHostToDevice:
      emu::check_device_range(dst, n, what);
      if (sd) fail("%s HostToDevice: the source %p is device memory", what, src);
      break;
    case cudaMemcpyDeviceToHost:
      emu::check_device_range(src, n, what);
      if (dd) fail("%s DeviceToHost: the destination %p is device memory", what, dst);
      break;
    case cudaMemcpyDeviceToDevice:
      emu::check_device_range(dst, n, what);
      emu::check_device_range(src, n, what);
      break;
    case cudaMemcpyHostToHost:
      if (dd || sd) fail("%s HostToHost with a device pointer", what);
      break;
    default:  // cudaMemcpyDefault: inferred from the pointers
      if (dd) emu::check_device_range(dst, n, what);
      if (sd) emu::check_device_range(src, n, what);
      break;
  }
  const auto d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
  if (d < s + n && s < d + n && dst != src)
    fail("%s: source and destination overlap (undefined for cudaMemcpy)", what);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t s) {
  emu::check_stream(s, "cudaMemcpyAsync");
  check_copy(dst, src, n, kind, "cudaMemcpyAsync");
  if (n > 0) std::memmove(dst, src, n);
  emu::note_stream_work(s);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  emu::check_sync_call("cudaMemcpy");
  check_copy(dst, src, n, kind, "cudaMemcpy");
  if (n > 0) std::memmove(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) {
  emu::check_stream(s, "cudaMemsetAsync");
  emu::check_device_range(p, n, "cudaMemsetAsync");
  std::memset(p, v, n);
  emu::note_stream_work(s);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  emu::check_sync_call("cudaMemset");
  emu::check_device_range(p, n, "cudaMemset");
  std::memset(p, v, n);
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* fn, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value > 227 * 1024) return cudaErrorInvalidValue;
    emu::set_max_dyn_smem(fn, value);
  }
  return cudaSuccess;
}

// ---- events (timing by the host clock) ----------------------------------------------------------------
struct EmuEvent {
  double seconds = -1;  // -1: never recorded
  cudaStream_t stream = nullptr;
  uint64_t work = 0;  // the stream's operations before the record
};
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = reinterpret_cast<cudaEvent_t>(new EmuEvent);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  return cudaEventCreate(e);
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<EmuEvent*>(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  emu::check_stream(s, "cudaEventRecord");
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  EmuEvent* ev = reinterpret_cast<EmuEvent*>(e);
  ev->seconds = double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  ev->stream = s;
  ev->work = emu::streams()[s].work;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  const EmuEvent* ev = reinterpret_cast<EmuEvent*>(e);
  if (ev->seconds < 0) return cudaSuccess;  // never recorded: returns at once, like the real one
  auto it = emu::streams().find(ev->stream);
  if (it != emu::streams().end()) it->second.synced = std::max(it->second.synced, ev->work);
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  const double ta = reinterpret_cast<EmuEvent*>(a)->seconds;
  const double tb = reinterpret_cast<EmuEvent*>(b)->seconds;
  if (ta < 0 || tb < 0) return cudaErrorInvalidResourceHandle;
  *ms = float(1000.0 * (tb - ta));
  return cudaSuccess;
}

}  // extern "C"
