// Helpers shared by the GPU tests (tests/test_cuda*.cpp): the skip when no device is present,
// random inputs rounded to bf16, uploads and downloads of bf16 data, poisoned outputs, copies
// shifted off 16-byte alignment (to reach the kernels' scalar paths) and the comparisons against
// the CPU oracle (bitwise_equal, random_ids and the rest of the shared helpers: tests/fd.h). A test
// file takes them all with `using namespace unipool::test;`.
//
// Tolerances for bf16 (8 significand bits, relative rounding error <= 2^-8 ≈ 3.9e-3): an output
// from bf16 inputs with fp32 accumulation and rounded once to bf16 is within ~4e-3 relative of the
// fp32 CPU op on the same (bf16-rounded) inputs; sums over many terms are compared relative to the
// same sum over absolute values (the CPU's double and the GPU's fp32 accumulation round
// differently).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tests/catch.h"
#include "tests/fd.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

#ifdef UNIPOOL_CATCH3
#define UNIPOOL_SKIP_WITHOUT_GPU()                     \
  if (unipool::cuda::device_count() == 0) {            \
    SKIP("no CUDA device present: GPU tests skipped"); \
  }
#else
#define UNIPOOL_SKIP_WITHOUT_GPU()                                       \
  if (unipool::cuda::device_count() == 0) {                              \
    WARN("no CUDA device present: GPU tests skipped");                   \
    std::printf("SKIPPED: no CUDA device present: GPU tests skipped\n"); \
    return;                                                              \
  }
#endif

namespace unipool::test {

using cuda::bf16;
using cuda::DeviceBuffer;
using FVec = std::vector<float>;

// The values of random_vector (tests/fd.h), as floats.
inline std::vector<float> random_floats(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(dist(gen));
  return v;
}

// Rounds every value to bf16 and back: the CPU oracle then sees exactly the GPU's inputs.
inline std::vector<float> round_to_bf16(std::vector<float> v) {
  for (float& x : v) x = cuda::bf16_to_float(cuda::float_to_bf16(x));
  return v;
}
inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = cuda::float_to_bf16(v[i]);
  return r;
}
inline std::vector<float> from_bf16(const std::vector<bf16>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = cuda::bf16_to_float(v[i]);
  return r;
}

// Random values already rounded to bf16 (what the GPU reads), uniform in [-scale, scale).
inline FVec bf16_values(size_t n, uint32_t seed, double scale = 1.0) {
  return round_to_bf16(random_floats(n, seed, scale));
}
// bf16 device copy of (bf16-exact) floats, and back.
inline DeviceBuffer<bf16> upload_bf16(const FVec& v) {
  return DeviceBuffer<bf16>(to_bf16(v));
}
inline FVec download(const DeviceBuffer<bf16>& b) {
  return from_bf16(b.to_host());
}

inline FVec abs_of(const FVec& v) {
  FVec r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = std::fabs(v[i]);
  return r;
}

// A device copy of v starting `shift` elements into its (256-byte aligned) buffer: with shift = 1
// the data is off 16-byte alignment, which forces a kernel's scalar path. Pass data() + shift to
// the op; unshift drops the leading elements of the buffer's host copy again.
template <typename T>
DeviceBuffer<T> shifted_copy(const std::vector<T>& v, size_t shift = 1) {
  std::vector<T> h(v.size() + shift);
  std::copy(v.begin(), v.end(), h.begin() + std::ptrdiff_t(shift));
  return DeviceBuffer<T>(h);
}
template <typename T>
std::vector<T> unshift(const std::vector<T>& h, size_t shift = 1) {
  return std::vector<T>(h.begin() + std::ptrdiff_t(shift), h.end());
}

// Device buffers filled with NaN: an element the kernel forgets to write fails the comparison.
inline DeviceBuffer<float> poisoned_floats(size_t n) {
  return DeviceBuffer<float>(std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()));
}
inline DeviceBuffer<bf16> poisoned_bf16(size_t n) {
  return DeviceBuffer<bf16>(
      to_bf16(std::vector<float>(n, std::numeric_limits<float>::quiet_NaN())));
}
inline DeviceBuffer<int32_t> poisoned_ints(size_t n) {
  return DeviceBuffer<int32_t>(std::vector<int32_t>(n, -123456789));
}

// |got − want| <= rtol·max(|want|, scale[i]) + atol for every element (NaN fails). Reports the
// first failures and the worst relative error.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                         const char* what, double rtol, double atol,
                         const std::vector<float>* scale = nullptr) {
  REQUIRE(got.size() == want.size());
  int failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double s = std::max(std::fabs(double(want[i])), scale ? double((*scale)[i]) : 0.0);
    const double err = std::fabs(double(got[i]) - double(want[i]));
    if (!(err <= rtol * s + atol)) {
      if (failures < 5)
        UNSCOPED_INFO(what << "[" << i << "]: gpu " << got[i] << " cpu " << want[i]);
      ++failures;
    }
  }
  INFO(what << ": " << failures << " of " << got.size() << " elements out of tolerance");
  CHECK(failures == 0);
}

// Number of elements where got != want (the first ones are reported), -1 when the sizes differ.
inline int count_mismatches(const Ids& got, const Ids& want, const char* what) {
  if (got.size() != want.size()) return -1;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && bad++ < 5) {
      UNSCOPED_INFO(what << "[" << i << "]: gpu " << got[i] << " cpu " << want[i]);
    }
  }
  return bad;
}

}  // namespace unipool::test

#endif  // UNIPOOL_HAVE_CUDA
