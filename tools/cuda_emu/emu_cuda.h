// CPU emulation of the CUDA device side: force-included (g++ -include) into the host C++ that
// tools/cuda_emu/gen.py makes of each kernels/cuda/*.cu, so the REAL kernel sources run on the CPU.
//
// What it emulates: kernel launches (every thread of a block is a fiber; blocks run one after
// another), threadIdx/blockIdx/blockDim/gridDim, static and dynamic __shared__ memory (a fresh
// buffer per block, poisoned with 0xFF = NaN), __syncthreads, __syncwarp, the warp collectives
// (__shfl*_sync, __ballot_sync, __any/__all_sync, __match_any_sync: full warps and full masks
// only, anything else is reported), integer atomics, __ldg, the bit/conversion intrinsics the
// kernels use, and the launch limits (block and grid sizes, shared memory with and without
// cudaFuncSetAttribute, __launch_bounds__). Misuse is reported as "EMU ERROR: ..." and aborts:
// a collective in a partial warp or with lanes exited, lanes of one warp in different
// collectives, __syncthreads reached from different call sites (divergent barrier), a deadlock.
//
// What it does NOT emulate: the GPU's scheduling (threads switch only at barriers and warp
// collectives, so a missing barrier shows only when the emulated order happens to expose it: run
// once more with EMU_ORDER=reverse and EMU_ORDER=random); inter-block concurrency (blocks run one
// after another, so races between blocks are invisible); registers, occupancy, bank conflicts,
// timing; the floating point of the device (expf, sqrtf, rsqrtf, exp2f, ... are glibc's,
// correctly rounded or close to it, where the GPU's differ by an ulp or two; the fast intrinsics
// such as __expf are glibc's full-precision functions here, approximations on the GPU); device
// memory is plain host memory (emu_runtime.cpp). cuBLASLt (emu_cublaslt.cpp) and CUB (cub_emu.h)
// are replaced by host reference code.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <vector_functions.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---- CUDA keywords as host C++ ------------------------------------------------------------------
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __shared__
#undef __constant__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// __shared__ is rewritten by gen.py (shared_var below) and __constant__ is not emulated: one left
// over is an error at compile time.
#define __shared__ EMU_ERROR_shared_declaration_not_rewritten_by_gen_py
#define __constant__ EMU_ERROR_constant_memory_is_not_emulated

namespace emu {

// ---- the emulator's state and services (emu.cpp, emu_runtime.cpp) -------------------------------
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void warn_once(const char* key, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// The running CUDA thread (set by the scheduler at every switch; null outside a kernel).
struct ThreadRegs {
  uint3 tid;   // threadIdx
  int linear;  // x + y·blockDim.x + z·blockDim.x·blockDim.y
};
extern ThreadRegs* g_thread;
extern uint3 g_block_idx;
extern dim3 g_block_dim, g_grid_dim;
inline int lane() { return g_thread->linear % 32; }
inline int warp() { return g_thread->linear / 32; }
const char* kernel_name();

// Shared memory of the running block: the dynamic buffer, and one poisoned buffer per static
// __shared__ declaration (tag = the address of a static char unique to the declaration).
unsigned char* dyn_smem();
void* static_smem(const void* tag, size_t bytes, size_t align, const char* name);

void syncthreads(const char* call_site);
void syncwarp(unsigned mask);
// Warp exchange: every lane publishes v, waits for the warp, and reads lane src's value.
uint64_t warp_exchange(uint64_t v, int src_lane, unsigned mask, const char* what);
// Every lane publishes v, waits, and gets all 32 values.
void warp_gather(uint64_t v, uint64_t all[32], unsigned mask, const char* what);
// Every lane of the warp waits here (a warp-synchronous primitive such as a WMMA call): checks
// that the whole warp arrives, with no lane exited.
void warp_converge(const char* what);

// The host side of a launch: run(ctx) runs the kernel for the current thread.
void launch(const char* name, const void* fn, dim3 grid, dim3 block, size_t smem,
            cudaStream_t stream, void (*run)(const void* ctx), const void* ctx);
void check_launch_bounds(unsigned max_threads);
void set_max_dyn_smem(const void* fn, int bytes);

// Device memory bookkeeping (emu_runtime.cpp): p .. p+bytes must lie inside one cudaMalloc
// allocation, else EMU ERROR naming `what`.
void check_device_range(const void* p, size_t bytes, const char* what);
// The stream an emulated library call (cuBLASLt, CUB) runs on must be one cudaStreamCreate* made.
void check_stream(cudaStream_t s, const char* what);
// Marks that work was enqueued on the stream (for the check of synchronous copies).
void note_stream_work(cudaStream_t s);

// cp.async / ldmatrix / mma.sync (ptx_emu.inc emulates the attention kernels' PTX with these).
void cp_async(void* dst, const void* src, int bytes, bool valid);
void cp_commit();
void cp_wait(int n);
void ldmatrix_x4(uint32_t r[4], const void* row_address, bool trans);
void mma_m16n8k16_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);

// ---- launches (gen.py rewrites kernel<<<grid, block, smem, stream>>>(args) into this) ------------
// The arguments are converted to the kernel's parameter types once, as a launch does; every
// thread then gets its own copy of the parameters.
template <class... P>
struct KernelCall {
  void (*kernel)(P...);
  std::tuple<std::decay_t<P>...> params;
  template <size_t... I>
  void call(std::index_sequence<I...>) const {
    kernel(std::get<I>(params)...);
  }
  static void run(const void* self) {  // (short stack traces: two frames above the kernel)
    static_cast<const KernelCall*>(self)->call(std::index_sequence_for<P...>{});
  }
};

template <class... P, class... A>
void launch_kernel(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launch with the wrong number of arguments");
  const KernelCall<P...> call{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
  launch(name, reinterpret_cast<const void*>(kernel), grid, block, smem, stream,
         &KernelCall<P...>::run, &call);
}

template <class T>
inline uint64_t to_u64(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                "warp collectives of values up to 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
inline T from_u64(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

}  // namespace emu

// A static __shared__ declaration `__shared__ [__align__(A)] T name[dims];` becomes
// `static char name_emu_tag; auto& name = ::emu::shared_var<T[dims]>(&name_emu_tag, A, "name");`
// (gen.py): a reference to this block's poisoned buffer for the declaration (the tag's address
// identifies the declaration).
namespace emu {
template <class T>
T& shared_var(const void* tag, size_t align, const char* name) {
  return *static_cast<T*>(static_smem(tag, sizeof(T), std::max(align, alignof(T)), name));
}
}  // namespace emu

// ---- built-in variables ---------------------------------------------------------------------------
#define threadIdx (::emu::g_thread->tid)
#define blockIdx (static_cast<const uint3&>(::emu::g_block_idx))
#define blockDim (::emu::g_block_dim)
#define gridDim (::emu::g_grid_dim)
constexpr int warpSize = 32;

// ---- barriers and warp collectives ------------------------------------------------------------------
// The call site (file:line of the .cu, thanks to gen.py's #line, and a counter for two calls on one
// line) identifies the barrier, so threads of one block waiting at different __syncthreads() are
// reported.
#define EMU_STR2(x) #x
#define EMU_STR(x) EMU_STR2(x)
#define __syncthreads() \
  ::emu::syncthreads(__FILE__ ":" EMU_STR(__LINE__) " (call #" EMU_STR(__COUNTER__) ")")
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::emu::syncwarp(mask);
}

template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  if (width != 32) ::emu::fail("%s: __shfl_xor_sync width %d (only 32 is emulated)", ::emu::kernel_name(), width);
  return ::emu::from_u64<T>(
      ::emu::warp_exchange(::emu::to_u64(v), (::emu::lane() ^ lane_mask) & 31, mask, "__shfl_xor_sync"));
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  if (width != 32) ::emu::fail("%s: __shfl_sync width %d (only 32 is emulated)", ::emu::kernel_name(), width);
  return ::emu::from_u64<T>(::emu::warp_exchange(::emu::to_u64(v), src_lane & 31, mask, "__shfl_sync"));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  if (width != 32) ::emu::fail("%s: __shfl_up_sync width %d (only 32 is emulated)", ::emu::kernel_name(), width);
  const int l = ::emu::lane();
  const int src = l >= int(delta) ? l - int(delta) : l;  // lanes below delta keep their value
  return ::emu::from_u64<T>(::emu::warp_exchange(::emu::to_u64(v), src, mask, "__shfl_up_sync"));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  if (width != 32) ::emu::fail("%s: __shfl_down_sync width %d (only 32 is emulated)", ::emu::kernel_name(), width);
  const int l = ::emu::lane();
  const int src = l + int(delta) < 32 ? l + int(delta) : l;
  return ::emu::from_u64<T>(::emu::warp_exchange(::emu::to_u64(v), src, mask, "__shfl_down_sync"));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  uint64_t all[32];
  ::emu::warp_gather(pred ? 1 : 0, all, mask, "__ballot_sync");
  unsigned r = 0;
  for (int i = 0; i < 32; ++i)
    if (all[i] != 0) r |= 1u << i;
  return r;
}
inline int __any_sync(unsigned mask, int pred) {
  uint64_t all[32];
  ::emu::warp_gather(pred ? 1 : 0, all, mask, "__any_sync");
  for (int i = 0; i < 32; ++i)
    if (all[i] != 0) return 1;
  return 0;
}
inline int __all_sync(unsigned mask, int pred) {
  uint64_t all[32];
  ::emu::warp_gather(pred ? 1 : 0, all, mask, "__all_sync");
  for (int i = 0; i < 32; ++i)
    if (all[i] == 0) return 0;
  return 1;
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T v) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "__match_any_sync takes 32- or 64-bit values");
  uint64_t all[32];
  const uint64_t mine = ::emu::to_u64(v);
  ::emu::warp_gather(mine, all, mask, "__match_any_sync");
  unsigned r = 0;
  for (int i = 0; i < 32; ++i)
    if (all[i] == mine) r |= 1u << i;
  return r;
}

// ---- integer atomics (float atomics are forbidden by the project's determinism rule) -------------
// Fibers switch only at barriers, so a plain read-modify-write is atomic here; the __atomic
// builtins keep ThreadSanitizer (EMU_SAN=thread) from reporting the deliberate concurrency.
template <class T>
inline T atomicAdd(T* p, T v) {
  static_assert(std::is_integral<T>::value,
                "float atomicAdd: forbidden by the determinism rule (and not emulated)");
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
template <class T>
inline T atomicSub(T* p, T v) {
  static_assert(std::is_integral<T>::value, "integer atomics only");
  return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
}
template <class T>
inline T atomicMax(T* p, T v) {
  static_assert(std::is_integral<T>::value, "integer atomics only");
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
  static_assert(std::is_integral<T>::value, "integer atomics only");
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (old > v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
inline T atomicExch(T* p, T v) {
  static_assert(std::is_integral<T>::value, "integer atomics only");
  return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}
template <class T>
inline T atomicCAS(T* p, T expected, T desired) {
  static_assert(std::is_integral<T>::value, "integer atomics only");
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}

// ---- loads, bits, conversions, math -------------------------------------------------------------
// __ldg: the read-only path. Its address must be aligned to the type like any device access.
template <class T>
inline T __ldg(const T* p) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0)
    ::emu::fail("%s: __ldg of a %zu-byte type at misaligned address %p", ::emu::kernel_name(),
                alignof(T), static_cast<const void*>(p));
  return *p;
}
inline size_t __cvta_generic_to_shared(const void* p) {
  return reinterpret_cast<uintptr_t>(p);
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}

inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
inline double __longlong_as_double(long long x) { double f; std::memcpy(&f, &x, 8); return f; }
inline long long __double_as_longlong(double f) { long long x; std::memcpy(&x, &f, 8); return x; }

// Device math: glibc's (see the header comment). The intrinsics' reduced accuracy is not modelled.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : x > 1.f ? 1.f : x; }

// CUDA's global min/max overloads (device code calls them unqualified).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// cudaFuncSetAttribute on a kernel pointer (the runtime's template overload, without nvcc).
template <class R, class... A>
inline cudaError_t cudaFuncSetAttribute(R (*f)(A...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(f), attr, value);
}
