// Host memory for the CPU backend: the buffer type and its zeroing.
//
// A std::vector<float>(n) zeroes its n values on the calling thread, and for a fresh multi-GB
// buffer that is mostly the kernel's page faults (clearing each new page): the 182M presets hold
// four 3.1 GB arrays (weights, gradients, two AdamW moments), 12 s of single-threaded faults on a
// 2-core VM before anything else ran. HostArray<U> is a std::vector whose elements are left
// uninitialised when it is sized; CpuBackend::alloc then zeroes it with zero_fill, which splits
// large buffers over the OpenMP threads, so each thread touches (and faults in) its own share of
// the pages. The result is the same zeroed buffer; only who writes the zeros changes.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace unipool::cpu {

// std::allocator, except that a value-initialising construct() (vector(n), resize(n)) leaves a
// trivial element uninitialised; every other construct() forwards as usual.
template <class U>
struct UninitAllocator : std::allocator<U> {
  template <class V>
  struct rebind {
    using other = UninitAllocator<V>;
  };
  UninitAllocator() = default;
  template <class V>
  UninitAllocator(const UninitAllocator<V>&) noexcept {}
  template <class V>
  void construct(V* p) noexcept(std::is_nothrow_default_constructible_v<V>) {
    ::new (static_cast<void*>(p)) V;  // default-initialised: no zeroing for trivial V
  }
  template <class V, class... Args>
  void construct(V* p, Args&&... args) {
    ::new (static_cast<void*>(p)) V(std::forward<Args>(args)...);
  }
};

template <class U>
using HostArray = std::vector<U, UninitAllocator<U>>;

// p[0, n) = 0. Buffers of at least kParallelZeroBytes are cut into fixed 1 MiB chunks shared out
// statically among the threads (first touch in parallel); smaller ones are one memset.
constexpr size_t kParallelZeroBytes = size_t(8) << 20;

template <class U>
void zero_fill(U* p, size_t n) {
  static_assert(std::is_trivially_copyable_v<U>, "zero_fill writes bytes");
  const size_t bytes = n * sizeof(U);
  if (bytes < kParallelZeroBytes) {
    std::fill(p, p + n, U(0));
    return;
  }
  constexpr size_t kChunk = (size_t(1) << 20) / sizeof(U);  // elements per chunk
  const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t begin = size_t(c) * kChunk;
    const size_t end = std::min(n, begin + kChunk);
    std::fill(p + begin, p + end, U(0));
  }
}

}  // namespace unipool::cpu
