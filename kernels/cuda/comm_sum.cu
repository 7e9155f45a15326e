// The rank-order sum of the NCCL reduce-scatter (kernels/cuda/comm_sum.h): the deterministic half
// of engine/comm_nccl.cpp's reduce_scatter_sum, whose all-to-all brings every rank's copy of a
// shard to the shard's owner.
//
// DETERMINISM: no atomics, no trees. Each element is its own sum, taken in rank order.
#include <cstdint>

#include "kernels/cuda/comm_sum.h"
#include "kernels/cuda/common.cuh"

namespace unipool::cuda {

namespace {

constexpr int kThreads = 256;

// ---------------------------------------------------------------------------------------------------
// Rank-order sum.  in [ranks, n] (row r: rank r's copy), out [n]. One thread per element,
// grid-stride:
//   out[i] = ((in[0·n + i] + in[1·n + i]) + in[2·n + i]) + … + in[(ranks−1)·n + i]
// Additions only (nothing for the compiler to contract into an FMA), in fp32, left to right.
__global__ void sum_in_rank_order_kernel(float* __restrict__ out, const float* __restrict__ in,
                                         int ranks, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float sum = in[i];
    for (int r = 1; r < ranks; ++r) sum += in[int64_t(r) * n + i];
    out[i] = sum;
  }
}

}  // namespace

void sum_in_rank_order(float* out, const float* in, int ranks, int64_t n) {
  if (n <= 0) return;
  check(ranks >= 1, "cuda::sum_in_rank_order: " + std::to_string(ranks) + " ranks");
  sum_in_rank_order_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream()>>>(out, in,
                                                                                       ranks, n);
  CUDA_CHECK_LAUNCH("sum_in_rank_order_kernel");
}

}  // namespace unipool::cuda
