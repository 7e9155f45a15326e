// The three matrix products of a linear layer y = x·Wᵀ (W stored [out, in] like the checkpoint tensors),
// written once on top of gemm (kernels/cpu/gemm.h); the router logits; and the grouped (per-expert)
// products over an expert-major row buffer.
#pragma once
// Part of the CPU op list: include kernels/cpu/ops.h (which declares every op), not this file.
#include <cstdint>
#include <string>

#include "base/error.h"
#include "kernels/cpu/gemm.h"

namespace unipool::cpu {

// out[N,O] (+)= in[N,I] · W[O,I]ᵀ
template <typename T>
void matmul_forward(T* out, const T* in, const T* W, int N, int I, int O, bool accumulate) {
  gemm<T>(false, true, N, O, I, in, I, W, I, accumulate, out, O);
}

// dIn[N,I] (+)= dOut[N,O] · W[O,I]
template <typename T>
void matmul_backward_input(T* dIn, const T* dOut, const T* W, int N, int I, int O,
                           bool accumulate) {
  gemm<T>(false, false, N, I, O, dOut, O, W, I, accumulate, dIn, I);
}

// dW[O,I] += dOut[N,O]ᵀ · in[N,I]   (weight gradients always accumulate: shared weights and
// micro-batches add into one buffer, zeroed once per optimizer step)
template <typename T>
void matmul_backward_weight(T* dW, const T* dOut, const T* in, int N, int I, int O) {
  gemm<T>(true, false, O, I, N, dOut, O, in, I, true, dW, I);
}

// ---- router logits ------------------------------------------------------------------------------
// The router is a linear layer without bias, kept apart because the CUDA backend computes it in
// fp32 from the fp32 master weights (the CPU is all T anyway).
// z[N,R] = xn[N,d] · Wr[R,d]ᵀ
template <typename T>
void router_logits_forward(T* z, const T* xn, const T* Wr, int N, int d, int R) {
  matmul_forward(z, xn, Wr, N, d, R);
}

// dxn[N,d] += dz[N,R] · Wr[R,d];   dWr[R,d] += dz[N,R]ᵀ · xn[N,d]
template <typename T>
void router_logits_backward(T* dxn, T* dWr, const T* dz, const T* xn, const T* Wr, int N, int d,
                            int R) {
  matmul_backward_weight(dWr, dz, xn, N, d, R);
  matmul_backward_input(dxn, dz, Wr, N, d, R, /*accumulate=*/true);
}

// ---- grouped (per-expert) products --------------------------------------------------------------
// The expert-major buffers (kernels/cpu/dispatch.h) hold rows = offsets[E] rows; rows
// [offsets[e], offsets[e+1]) belong to expert e, whose weight is W + e·O·I ([O,I]). Experts may own
// no rows. Each op is the plain product on every expert's row range in turn.

namespace detail {
// offsets [E+1] must start at 0, never decrease and end at rows; throws unipool::Error otherwise.
inline void check_group_offsets(const char* op, const int32_t* offsets, int rows, int E) {
  if (E < 0 || rows < 0) {
    throw Error(std::string(op) + ": negative size (rows " + std::to_string(rows) + ", E " +
                std::to_string(E) + ")");
  }
  if (offsets[0] != 0) {
    throw Error(std::string(op) + ": offsets[0] is " + std::to_string(offsets[0]) + ", not 0");
  }
  for (int e = 0; e < E; ++e) {
    if (offsets[e + 1] < offsets[e]) {
      throw Error(std::string(op) + ": offsets decrease at expert " + std::to_string(e) + " (" +
                  std::to_string(offsets[e]) + " then " + std::to_string(offsets[e + 1]) + ")");
    }
  }
  if (offsets[E] != rows) {
    throw Error(std::string(op) + ": offsets[E] is " + std::to_string(offsets[E]) + ", not rows " +
                std::to_string(rows));
  }
}
}  // namespace detail

// out[r,:] = in[r,:] · W_eᵀ for r of expert e                  in [rows,I], out [rows,O] =
template <typename T>
void grouped_matmul_forward(T* out, const T* in, const T* W, const int32_t* offsets, int rows,
                            int E, int I, int O) {
  detail::check_group_offsets("grouped_matmul_forward", offsets, rows, E);
  for (int e = 0; e < E; ++e) {
    const int r0 = offsets[e], n = offsets[e + 1] - offsets[e];
    if (n == 0) continue;
    matmul_forward(out + int64_t(r0) * O, in + int64_t(r0) * I, W + int64_t(e) * O * I, n, I, O);
  }
}

// dIn[r,:] = dOut[r,:] · W_e for r of expert e                 dOut [rows,O], dIn [rows,I] =
template <typename T>
void grouped_matmul_backward_input(T* dIn, const T* dOut, const T* W, const int32_t* offsets,
                                   int rows, int E, int I, int O) {
  detail::check_group_offsets("grouped_matmul_backward_input", offsets, rows, E);
  for (int e = 0; e < E; ++e) {
    const int r0 = offsets[e], n = offsets[e + 1] - offsets[e];
    if (n == 0) continue;
    matmul_backward_input(dIn + int64_t(r0) * I, dOut + int64_t(r0) * O, W + int64_t(e) * O * I, n,
                          I, O);
  }
}

// dW_e[O,I] += Σ_{r of e} dOut[r,:]ᵀ · in[r,:]                 dW [E,O,I] += (empty experts: +0)
template <typename T>
void grouped_matmul_backward_weight(T* dW, const T* dOut, const T* in, const int32_t* offsets,
                                    int rows, int E, int I, int O) {
  detail::check_group_offsets("grouped_matmul_backward_weight", offsets, rows, E);
  for (int e = 0; e < E; ++e) {
    const int r0 = offsets[e], n = offsets[e + 1] - offsets[e];
    if (n == 0) continue;
    matmul_backward_weight(dW + int64_t(e) * O * I, dOut + int64_t(r0) * O, in + int64_t(r0) * I, n,
                           I, O);
  }
}

}  // namespace unipool::cpu
