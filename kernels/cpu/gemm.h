// The CPU matrix multiply. Every linear layer of the CPU backend (forward, input gradient, weight
// gradient) goes through this one function, so the CPU backend's speed is mostly this file's speed.
//
//   C[M,N] (+)= op(A)[M,K] · op(B)[K,N]        all matrices row-major
//
//   op(A) = A   (A stored [M,K], lda >= K)   or, when transA, Aᵀ (A stored [K,M], lda >= M)
//   op(B) = B   (B stored [K,N], ldb >= N)   or, when transB, Bᵀ (B stored [N,K], ldb >= K)
//   accumulate = false overwrites C, accumulate = true adds into C.
//   M, N or K may be 0: nothing is read; C is zeroed when K == 0 and !accumulate.
//
// The engine's three uses (a linear layer out = in · Wᵀ, W: [O, I]):
//   forward          out[n,O]  = in[n,I]    · W[O,I]ᵀ     gemm(false, true,  n, O, I, in, I, W, I,
//   false, out, O) input gradient   dIn[n,I]  = dOut[n,O]  · W[O,I]      gemm(false, false, n, I,
//   O, dOut, O, W, I, false, dIn, I) weight gradient  dW[O,I]  += dOut[n,O]ᵀ · in[n,I] gemm(true,
//   false, O, I, n, dOut, O, in, I, true, dW, I)
//
// DETERMINISM: the result is bitwise identical whatever the number of OpenMP threads and from run
// to run. Every element of C is the sum over k in a fixed order (k-blocks of a fixed size, in
// increasing order, each summed in increasing k); threads only split the set of output tiles among
// themselves (see gemm.cpp for the blocking scheme and the argument).
//
// float is the fast path (packed panels, AVX-512 micro-kernel, OpenMP over output tiles). double is
// a plain, serial-or-row-parallel loop meant for finite-difference tests, not for speed.
#pragma once

namespace unipool::cpu {

template <typename T>
void gemm(bool transA, bool transB, int M, int N, int K, const T* A, int lda, const T* B, int ldb,
          bool accumulate, T* C, int ldc);

extern template void gemm<float>(bool, bool, int, int, int, const float*, int, const float*, int,
                                 bool, float*, int);
extern template void gemm<double>(bool, bool, int, int, int, const double*, int, const double*, int,
                                  bool, double*, int);

}  // namespace unipool::cpu
