// The CUDA slot: compiled whenever nvcc is found. On a machine with a GPU it runs a kernel end to
// end; without one it says so and skips.
#include <cstdio>
#include <vector>

#include "tests/catch.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"

TEST_CASE("cuda slot: a kernel runs on the device", "[cuda]") {
  if (unipool::cuda::device_count() == 0) {
#ifdef UNIPOOL_CATCH3
    SKIP("no CUDA device present: GPU tests skipped");
#else
    WARN("no CUDA device present: GPU tests skipped");
    std::printf("SKIPPED: no CUDA device present: GPU tests skipped\n");
    return;
#endif
  }
  std::vector<float> out(1000, -1.0f);
  REQUIRE(unipool::cuda::fill_on_device(out.data(), static_cast<int>(out.size()), 2.5f));
  for (float v : out) REQUIRE(v == 2.5f);
}
#else
TEST_CASE("cuda slot: not built (no nvcc at configure time)", "[cuda]") {
  WARN("the CUDA backend was not compiled (nvcc not found): GPU tests skipped");
}
#endif
