// The reduction step of the NCCL transport's reduce-scatter (engine/comm_nccl.cpp): every rank's
// copy of this rank's shard, received side by side, added in rank order on the device.
//
// Host-only: includable from g++-compiled .cpp files (the kernel is in comm_sum.cu).
#pragma once
#include <cstdint>

namespace unipool::cuda {

// out[i] = ((in[0·n + i] + in[1·n + i]) + in[2·n + i]) + … + in[(ranks−1)·n + i] for i < n:
// in [ranks, n] holds rank r's values in row r, out [n] (device pointers, not overlapping). The
// additions are in rank order, in fp32, one element at a time: the same bits as the host loop
// `s = in[i]; for r in 1..ranks-1: s += in[r·n + i]`. Asynchronous on stream().
void sum_in_rank_order(float* out, const float* in, int ranks, int64_t n);

}  // namespace unipool::cuda
