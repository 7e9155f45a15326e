// The CUDA runtime: compiled whenever nvcc is found. On a machine with a GPU it runs a kernel end
// to end and checks the bf16 host conversions against the device's; without one it says so and
// skips.
#include <cmath>
#include <string>
#include <cstdio>
#include <limits>
#include <vector>

#include "engine/config.h"
#include "base/error.h"
#include "engine/backends.h"
#include "engine/train.h"
#include "tests/catch.h"
#include "tests/cuda_test_util.h"

#ifdef UNIPOOL_HAVE_CUDA
TEST_CASE("cuda runtime: a kernel runs on the device", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  unipool::cuda::DeviceBuffer<float> d(1000);
  unipool::cuda::fill(d.data(), 1000, 2.5f);
  for (float v : d.to_host()) REQUIRE(v == 2.5f);
}

TEST_CASE("cuda runtime: host bf16 conversions equal the device's", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  std::vector<float> x = unipool::test::random_floats(4096, 7, 3.0);
  x.push_back(0.0f);
  x.push_back(-0.0f);
  x.push_back(1e-40f);  // denormal
  x.push_back(3.0e38f);
  x.push_back(std::numeric_limits<float>::infinity());
  unipool::cuda::DeviceBuffer<float> d_x(x);
  unipool::cuda::DeviceBuffer<unipool::cuda::bf16> d_b(x.size());
  unipool::cuda::float_to_bf16_copy(d_b.data(), d_x.data(), int64_t(x.size()));
  const std::vector<unipool::cuda::bf16> b = d_b.to_host();
  for (size_t i = 0; i < x.size(); ++i) {
    INFO("x = " << x[i]);
    REQUIRE(unipool::cuda::bf16_to_float(b[i]) ==
            unipool::cuda::bf16_to_float(unipool::cuda::float_to_bf16(x[i])));
  }
}
// train.backend: cuda runs on the GPU or fails clearly; auto takes the GPU when there is one.
TEST_CASE("backend selection: cuda without a device is a clear error, auto falls back to the CPU",
          "[cuda][config]") {
  unipool::Config c;
  c.train.backend = unipool::BackendKind::cuda;
  if (unipool::cuda::device_count() == 0) {
    try {
      unipool::select_backend(c);
      FAIL("train.backend=cuda without a device must throw");
    } catch (const unipool::Error& e) {
      CHECK_THAT(std::string(e.what()), HasSubstring("needs a CUDA device"));
    }
    c.train.backend = unipool::BackendKind::automatic;
    CHECK(unipool::select_backend(c) == unipool::BackendKind::cpu);
  } else {
    CHECK(unipool::select_backend(c) == unipool::BackendKind::cuda);
    c.train.backend = unipool::BackendKind::automatic;
    CHECK(unipool::select_backend(c) == unipool::BackendKind::cuda);
  }
  c.train.backend = unipool::BackendKind::cpu;
  CHECK(unipool::select_backend(c) == unipool::BackendKind::cpu);
}
#else
TEST_CASE("cuda runtime: not built (no nvcc at configure time)", "[cuda]") {
  WARN("the CUDA backend was not compiled (nvcc not found): GPU tests skipped");
}
#endif
