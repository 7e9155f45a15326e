#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime.h>

namespace unipool::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

// out[i] = value
__global__ void fill_kernel(float* out, int n, float value) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = value;
}

bool fill_on_device(float* out, int n, float value) {
  if (device_count() == 0) return false;
  float* d = nullptr;
  if (cudaMalloc(&d, sizeof(float) * n) != cudaSuccess) return false;
  fill_kernel<<<(n + 255) / 256, 256>>>(d, n, value);
  const bool ok = cudaMemcpy(out, d, sizeof(float) * n, cudaMemcpyDeviceToHost) == cudaSuccess;
  cudaFree(d);
  return ok;
}

}  // namespace unipool::cuda
