// Stand-in for <mma.h> (nvcuda::wmma; gen.py replaces the include with this header): the WMMA
// subset the kernels use, bf16/fp16 × bf16/fp16 → fp32, 16×16×16 tiles.
//
// What it emulates: fragment<matrix_a|matrix_b|accumulator, 16, 16, 16, T, layout>,
// fill_fragment, load_matrix_sync (row_major / col_major), mma_sync, store_matrix_sync
// (mem_row_major / mem_col_major). Every call is warp-synchronous: all 32 lanes must reach it
// (a divergent call deadlocks or is reported). Lane 0 holds the whole tile and does the work;
// the other lanes' fragments stay empty. The product sums k in order in fp32 (products of bf16
// are exact in fp32).
//
// What it checks: the pointer is 32-byte aligned (256-bit, as the CUDA guide requires) and ldm a
// multiple of 16 bytes; the whole warp calls.
//
// What it does NOT model: the per-lane fragment layout (fragment.x[] / num_elements are not
// provided: a kernel that touches fragment elements directly needs them added), the tensor
// core's summation order and precision, other shapes (m32n8k16, m8n32k16), tf32/int8/fp64.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>
#include <type_traits>

namespace nvcuda {
namespace wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the WMMA emulation supports 16x16x16 only");
  float v[16][16];  // the whole tile (valid in lane 0)
};

inline float to_float(float x) { return x; }
inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
inline float to_float(__half x) { return __half2float(x); }

inline void check_pointer(const void* p, unsigned ldm, size_t elem, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (size_t(ldm) * elem) % 16 != 0)
    ::emu::fail("%s: wmma::%s: pointer %p must be 32-byte aligned and ldm %u a multiple of 16 "
                "bytes",
                ::emu::kernel_name(), what, p, ldm);
}

template <class Use, int M, int N, int K, class T, class Layout, class P>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ldm) {
  static_assert(!std::is_same<Use, accumulator>::value,
                "accumulator loads (with a layout_t) are not emulated");
  check_pointer(p, ldm, sizeof(P), "load_matrix_sync");
  ::emu::warp_converge("wmma::load_matrix_sync");
  if (::emu::lane() != 0) return;
  const bool row = std::is_same<Layout, row_major>::value;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r][c] = to_float(row ? p[r * ldm + c] : p[c * ldm + r]);
}

// The product works on the fragments only (thread-local data): not worth instrumenting.
template <class A, class B, class C>
__attribute__((no_sanitize("address", "undefined"))) void mma_sync(C& d, const A& a, const B& b, const C& c) {
  ::emu::warp_converge("wmma::mma_sync");
  if (::emu::lane() != 0) return;
  float t[16][16];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float s = c.v[m][n];
      for (int k = 0; k < 16; ++k) s += a.v[m][k] * b.v[k][n];  // exact products: = fma
      t[m][n] = s;
    }
  std::memcpy(d.v, t, sizeof t);
}

template <class F>
void fill_fragment(F& f, float x) {
  ::emu::warp_converge("wmma::fill_fragment");
  for (auto& row : f.v)
    for (float& e : row) e = x;
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  check_pointer(p, ldm, 4, "store_matrix_sync");
  ::emu::warp_converge("wmma::store_matrix_sync");
  if (::emu::lane() != 0) return;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      if (layout == mem_row_major)
        p[m * ldm + n] = f.v[m][n];
      else
        p[n * ldm + m] = f.v[m][n];
    }
}

}  // namespace wmma
}  // namespace nvcuda
