// The three matrix products of a linear layer y = x·Wᵀ (W stored [out, in] like SPEC.md's tensors),
// written once on top of gemm (kernels/cpu/gemm.h).
#pragma once
#include "kernels/cpu/gemm.h"

namespace unipool::cpu {

// out[N,O] (+)= in[N,I] · W[O,I]ᵀ
template <typename T>
void matmul_forward(T* out, const T* in, const T* W, int N, int I, int O, bool accumulate = false) {
  gemm<T>(false, true, N, O, I, in, I, W, I, accumulate, out, O);
}

// dIn[N,I] (+)= dOut[N,O] · W[O,I]
template <typename T>
void matmul_backward_input(T* dIn, const T* dOut, const T* W, int N, int I, int O,
                           bool accumulate = false) {
  gemm<T>(false, false, N, I, O, dOut, O, W, I, accumulate, dIn, I);
}

// dW[O,I] += dOut[N,O]ᵀ · in[N,I]   (weight gradients always accumulate: shared weights and
// micro-batches add into one buffer, zeroed once per optimizer step)
template <typename T>
void matmul_backward_weight(T* dW, const T* dOut, const T* in, int N, int I, int O) {
  gemm<T>(true, false, O, I, N, dOut, O, in, I, true, dW, I);
}

}  // namespace unipool::cpu
