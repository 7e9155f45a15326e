// The CUDA backend's slot. This build compiles it whenever nvcc is present (CI compiles it without
// a GPU); the kernels of the op list arrive with the CUDA backend issue. For now it answers whether
// a device is present, and runs one trivial kernel so that tests can check the toolchain end to
// end.
#pragma once

namespace unipool::cuda {

// Number of usable CUDA devices (0 when the driver or a device is missing; never throws).
int device_count();

// Fills out[0..n) with value on the device and copies it back; returns false without a device.
bool fill_on_device(float* out, int n, float value);

}  // namespace unipool::cuda
