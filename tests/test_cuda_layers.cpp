// CUDA layer ops (kernels/cuda/layers.cu) against the CPU oracle (kernels/cpu/layers.h, T = float,
// run on the same bf16-rounded inputs). Without a device (or without nvcc) the tests skip.
//
// Every "=" output is poisoned with NaN before the call, so an element the kernel forgets fails.
// Tolerances (bf16 rounds to 8 significand bits, relative error <= 2^-9 ≈ 2e-3):
//   - bf16 outputs: |gpu − cpu| <= 4e-3·max(|cpu|, scale) + 1e-6, scale = the same expression over
//     absolute values where terms can cancel (rmsnorm dx, swiglu dg);
//   - fp32 sums (rstd, row_dot, rmsnorm dw): 1e-5 relative to the sum over absolute values (fp32 on
//     the GPU vs double on the CPU);
//   - exact where the GPU does the CPU's float operations and rounds once: embedding forward,
//     scale_rows (gpu == bf16(cpu)), embedding backward (the same fp32 additions in token order).
// Outputs of every reduction are also compared bitwise between two runs, and between the vector
// path and the scalar path (pointers shifted by one element).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tests/catch.h"
#include "tests/cuda_test_util.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cpu/ops.h"

namespace {

namespace cuda = unipool::cuda;
namespace cpu = unipool::cpu;
using namespace unipool::test;

constexpr int kRowCounts[] = {37, 301};    // not multiples of the warp/block/chunk sizes
constexpr int kWidths[] = {768, 96, 100};  // vector path (768, 96: partial warp), scalar path (100)
constexpr double kBf16Rtol = 4e-3;         // 2 × the bf16 rounding
constexpr double kSumRtol = 1e-5;          // fp32 vs double sums, relative to Σ|terms|

// Tokens in [0, V): about a third drawn from {0..9} (many repeats), the rest uniform; includes V-1.
std::vector<int32_t> random_tokens(int N, int V, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> all(0, V - 1), few(0, 9);
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (int i = 0; i < N; ++i) t[size_t(i)] = i % 3 == 0 ? few(gen) : all(gen);
  if (N > 0) t[size_t(N / 2)] = V - 1;
  return t;
}

// Runs the GPU embedding backward from dE0 twice (bitwise equal) and compares with the CPU op:
// the same fp32 additions in token order, so bitwise equal to it too.
void check_embedding_backward(const std::vector<int32_t>& tokens, int V, int d, uint32_t seed) {
  const int N = int(tokens.size());
  const FVec dE0 = random_floats(size_t(V) * d, seed, 0.5);
  const FVec dout = bf16_values(size_t(N) * d, seed + 1);
  DeviceBuffer<int32_t> d_tokens(tokens);
  DeviceBuffer<bf16> d_dout = upload_bf16(dout);
  DeviceBuffer<float> d_dE(dE0);
  FVec run[2];
  for (int r = 0; r < 2; ++r) {
    d_dE.copy_from_host(dE0);
    cuda::embedding_backward(d_dE.data(), d_dout.data(), d_tokens.data(), N, d);
    run[r] = d_dE.to_host();
  }
  CHECK(bitwise_equal(run[0], run[1]));

  FVec dE_ref = dE0;
  cpu::embedding_backward(dE_ref.data(), dout.data(), tokens.data(), N, d);
  FVec dE_scale = abs_of(dE0);
  const FVec dout_abs = abs_of(dout);
  cpu::embedding_backward(dE_scale.data(), dout_abs.data(), tokens.data(), N, d);
  expect_close(run[0], dE_ref, "dE", 1e-6, 1e-7, &dE_scale);
  CHECK(bitwise_equal(run[0], dE_ref));
}

}  // namespace

TEST_CASE("cuda embedding forward and backward match the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const int V = 1000;
  for (int N : {1000, 37, 1}) {
    for (int d : kWidths) {
      INFO("N " << N << " d " << d);
      const std::vector<int32_t> tokens = random_tokens(N, V, 11u + uint32_t(N + d));
      const FVec E = random_floats(size_t(V) * d, 1);
      DeviceBuffer<int32_t> d_tokens(tokens);
      DeviceBuffer<float> d_E(E);

      // forward: a copy rounded to bf16, so exact.
      DeviceBuffer<bf16> d_out = poisoned_bf16(size_t(N) * d);
      cuda::embedding_forward(d_out.data(), d_tokens.data(), d_E.data(), N, d);
      FVec out_ref(size_t(N) * d);
      cpu::embedding_forward(out_ref.data(), tokens.data(), E.data(), N, d);
      CHECK(bitwise_equal(download(d_out), round_to_bf16(out_ref)));

      // backward (+=) from random dE values.
      check_embedding_backward(tokens, V, d, 2u + uint32_t(d));
    }
  }
  SECTION("N = 0 is a no-op") {
    DeviceBuffer<float> d_dE(FVec(8, 1.5f));
    cuda::embedding_forward(nullptr, nullptr, d_dE.data(), 0, 8);
    cuda::embedding_backward(d_dE.data(), nullptr, nullptr, 0, 8);
    CHECK(d_dE.to_host() == FVec(8, 1.5f));
  }
}

TEST_CASE("cuda embedding backward with heavy token repeats is exact and reproducible", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  SECTION("one token everywhere (a single run of 3000)") {
    check_embedding_backward(std::vector<int32_t>(3000, 7), 50, 96, 61);
  }
  SECTION("runs longer than a warp's 32-position batch, interleaved") {
    std::vector<int32_t> tokens(4099);
    for (size_t t = 0; t < tokens.size(); ++t) {
      tokens[t] = t % 5 == 0 ? 3 : t % 7 == 0 ? 63 : int32_t((t * 2654435761u) % 64);
    }
    check_embedding_backward(tokens, 64, 768, 62);
    check_embedding_backward(tokens, 64, 100, 63);
  }
  SECTION("the training shape N = 16384, d = 768, V = 50304") {
    const int N = 16384, V = 50304;
    std::vector<int32_t> tokens = random_tokens(N, V, 64);
    for (int t = 0; t < N; t += 19) tokens[size_t(t)] = 198;  // a frequent token (5%)
    check_embedding_backward(tokens, V, 768, 65);
  }
  SECTION("scalar path (unaligned pointers) gives the vector path's bits") {
    const int N = 700, V = 40, d = 768;
    const std::vector<int32_t> tokens = random_tokens(N, V, 66);
    const FVec dE0 = random_floats(size_t(V) * d, 67);
    const FVec dout = bf16_values(size_t(N) * d, 68);
    DeviceBuffer<int32_t> d_tokens(tokens);
    DeviceBuffer<bf16> d_dout = upload_bf16(dout);
    DeviceBuffer<float> d_dE(dE0);
    cuda::embedding_backward(d_dE.data(), d_dout.data(), d_tokens.data(), N, d);
    DeviceBuffer<bf16> s_dout = shifted_copy(to_bf16(dout));
    DeviceBuffer<float> s_dE = shifted_copy(dE0);
    cuda::embedding_backward(s_dE.data() + 1, s_dout.data() + 1, d_tokens.data(), N, d);
    CHECK(bitwise_equal(unshift(s_dE.to_host()), d_dE.to_host()));
  }
}

TEST_CASE("cuda rmsnorm forward matches the CPU op (also in place)", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const double eps = 1e-5;
  for (int N : {37, 301, 1}) {
    for (int d : kWidths) {
      INFO("N " << N << " d " << d);
      const FVec x = bf16_values(size_t(N) * d, 21u + uint32_t(N), 2.0);
      const FVec w = random_floats(size_t(d), 22, 1.5);
      FVec out_ref(x.size()), rstd_ref(static_cast<size_t>(N));
      cpu::rmsnorm_forward(out_ref.data(), rstd_ref.data(), x.data(), w.data(), N, d, eps);

      DeviceBuffer<bf16> d_x = upload_bf16(x);
      DeviceBuffer<float> d_w(w);
      DeviceBuffer<bf16> d_out = poisoned_bf16(x.size());
      DeviceBuffer<float> d_rstd = poisoned_floats(size_t(N));
      cuda::rmsnorm_forward(d_out.data(), d_rstd.data(), d_x.data(), d_w.data(), N, d, eps);
      const FVec out = download(d_out), rstd = d_rstd.to_host();
      expect_close(out, out_ref, "out", kBf16Rtol, 1e-6);
      expect_close(rstd, rstd_ref, "rstd", kSumRtol, 0);

      // out aliases x: the same bits.
      d_rstd = poisoned_floats(size_t(N));
      cuda::rmsnorm_forward(d_x.data(), d_rstd.data(), d_x.data(), d_w.data(), N, d, eps);
      CHECK(bitwise_equal(download(d_x), out));
      CHECK(bitwise_equal(d_rstd.to_host(), rstd));

      // scalar path (unaligned x and out): the same bits.
      DeviceBuffer<bf16> s_x = shifted_copy(to_bf16(x));
      d_rstd = poisoned_floats(size_t(N));
      cuda::rmsnorm_forward(s_x.data() + 1, d_rstd.data(), s_x.data() + 1, d_w.data(), N, d, eps);
      CHECK(bitwise_equal(from_bf16(unshift(s_x.to_host())), out));
      CHECK(bitwise_equal(d_rstd.to_host(), rstd));
    }
  }
}

TEST_CASE("cuda rmsnorm backward matches the CPU op and is bitwise reproducible", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const double eps = 1e-5;
  for (int N : {37, 301, 1}) {
    for (int d : kWidths) {
      INFO("N " << N << " d " << d);
      const FVec x = bf16_values(size_t(N) * d, 31u + uint32_t(N), 2.0);
      const FVec w = random_floats(size_t(d), 32, 1.5);
      const FVec dout = bf16_values(size_t(N) * d, 33);
      const FVec dx0 = bf16_values(size_t(N) * d, 34, 0.5);
      const FVec dw0 = random_floats(size_t(d), 35, 0.5);
      FVec out(x.size()), rstd(static_cast<size_t>(N));
      cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, d, eps);

      FVec dx_ref = dx0, dw_ref = dw0;
      cpu::rmsnorm_backward(dx_ref.data(), dw_ref.data(), dout.data(), x.data(), w.data(),
                            rstd.data(), N, d);
      // Scales: dx = dx0 + rstd·g·w − x·rstd³·S/d, each term in absolute value; dw over |terms|.
      FVec dx_scale(x.size());
      for (int t = 0; t < N; ++t) {
        const size_t r = size_t(t) * size_t(d);
        double sabs = 0;
        for (int i = 0; i < d; ++i) sabs += std::fabs(double(dout[r + i]) * w[i] * x[r + i]);
        const double rs = rstd[size_t(t)];
        for (int i = 0; i < d; ++i) {
          dx_scale[r + i] =
              float(std::fabs(dx0[r + i]) + rs * std::fabs(double(dout[r + i]) * w[i]) +
                    std::fabs(x[r + i]) * rs * rs * rs * sabs / d);
        }
      }
      FVec dw_scale = abs_of(dw0), dx_unused(x.size(), 0.f);
      const FVec dout_abs = abs_of(dout), x_abs = abs_of(x);
      cpu::rmsnorm_backward(dx_unused.data(), dw_scale.data(), dout_abs.data(), x_abs.data(),
                            w.data(), rstd.data(), N, d);

      DeviceBuffer<bf16> d_x = upload_bf16(x), d_dout = upload_bf16(dout);
      DeviceBuffer<float> d_w(w), d_rstd(rstd), d_dw(dw0);
      DeviceBuffer<bf16> d_dx = upload_bf16(dx0);
      FVec dx_run[2], dw_run[2];
      for (int run = 0; run < 2; ++run) {
        d_dx.copy_from_host(to_bf16(dx0));
        d_dw.copy_from_host(dw0);
        cuda::rmsnorm_backward(d_dx.data(), d_dw.data(), d_dout.data(), d_x.data(), d_w.data(),
                               d_rstd.data(), N, d);
        dx_run[run] = download(d_dx);
        dw_run[run] = d_dw.to_host();
      }
      CHECK(bitwise_equal(dx_run[0], dx_run[1]));
      CHECK(bitwise_equal(dw_run[0], dw_run[1]));
      expect_close(dx_run[0], dx_ref, "dx", kBf16Rtol, 1e-6, &dx_scale);
      expect_close(dw_run[0], dw_ref, "dw", kSumRtol, 1e-6, &dw_scale);

      // scalar path (unaligned dx, dout, x): the same bits.
      DeviceBuffer<bf16> s_x = shifted_copy(to_bf16(x)), s_dout = shifted_copy(to_bf16(dout));
      DeviceBuffer<bf16> s_dx = shifted_copy(to_bf16(dx0));
      d_dw.copy_from_host(dw0);
      cuda::rmsnorm_backward(s_dx.data() + 1, d_dw.data(), s_dout.data() + 1, s_x.data() + 1,
                             d_w.data(), d_rstd.data(), N, d);
      CHECK(bitwise_equal(from_bf16(unshift(s_dx.to_host())), dx_run[0]));
      CHECK(bitwise_equal(d_dw.to_host(), dw_run[0]));
    }
  }
}

TEST_CASE("cuda swiglu forward and backward match the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int N : kRowCounts) {
    for (int F : kWidths) {
      INFO("N " << N << " F " << F);
      const FVec h13 = bf16_values(size_t(N) * 2 * F, 41u + uint32_t(N), 3.0);
      const FVec da = bf16_values(size_t(N) * F, 42);
      FVec a_ref(size_t(N) * F), dh13_ref(h13.size());
      cpu::swiglu_forward(a_ref.data(), h13.data(), N, F);
      cpu::swiglu_backward(dh13_ref.data(), da.data(), h13.data(), N, F);
      // dg = da·v·σ·(1 + g·(1 − σ)) can cancel: its scale is the same over absolute values.
      FVec dh13_scale = abs_of(dh13_ref);
      for (int t = 0; t < N; ++t) {
        for (int i = 0; i < F; ++i) {
          const double g = h13[size_t(t) * 2 * F + i], v = h13[size_t(t) * 2 * F + F + i];
          const double sig = 1.0 / (1.0 + std::exp(-g));
          dh13_scale[size_t(t) * 2 * F + i] =
              float(std::fabs(da[size_t(t) * F + i] * v * sig) * (1.0 + std::fabs(g) * (1 - sig)));
        }
      }

      DeviceBuffer<bf16> d_h13 = upload_bf16(h13), d_da = upload_bf16(da);
      DeviceBuffer<bf16> d_a = poisoned_bf16(a_ref.size()), d_dh13 = poisoned_bf16(h13.size());
      cuda::swiglu_forward(d_a.data(), d_h13.data(), N, F);
      cuda::swiglu_backward(d_dh13.data(), d_da.data(), d_h13.data(), N, F);
      expect_close(download(d_a), a_ref, "a", kBf16Rtol, 1e-6);
      expect_close(download(d_dh13), dh13_ref, "dh13", kBf16Rtol, 1e-6, &dh13_scale);
    }
  }
}

TEST_CASE("cuda scale_rows and row_dot match the CPU ops", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int rows : {37, 301, 1}) {
    for (int cols : kWidths) {
      INFO("rows " << rows << " cols " << cols);
      const FVec a = bf16_values(size_t(rows) * cols, 51u + uint32_t(rows));
      const FVec b = bf16_values(size_t(rows) * cols, 52);
      const FVec s = random_floats(size_t(rows), 53, 2.0);
      FVec scaled_ref(a.size()), dot_ref(static_cast<size_t>(rows)),
          dot_scale(static_cast<size_t>(rows));
      cpu::scale_rows(scaled_ref.data(), a.data(), s.data(), rows, cols);
      cpu::row_dot(dot_ref.data(), a.data(), b.data(), rows, cols);
      const FVec a_abs = abs_of(a), b_abs = abs_of(b);
      cpu::row_dot(dot_scale.data(), a_abs.data(), b_abs.data(), rows, cols);

      DeviceBuffer<bf16> d_a = upload_bf16(a), d_b = upload_bf16(b);
      DeviceBuffer<float> d_s(s);
      DeviceBuffer<bf16> d_scaled = poisoned_bf16(a.size());
      DeviceBuffer<float> d_dot = poisoned_floats(size_t(rows));
      cuda::scale_rows(d_scaled.data(), d_a.data(), d_s.data(), rows, cols);
      cuda::row_dot(d_dot.data(), d_a.data(), d_b.data(), rows, cols);
      // scale_rows: one fp32 product, rounded once: exactly bf16(cpu).
      CHECK(bitwise_equal(download(d_scaled), round_to_bf16(scaled_ref)));
      const FVec dot = d_dot.to_host();
      expect_close(dot, dot_ref, "row_dot", kSumRtol, 1e-6, &dot_scale);

      // row_dot through the scalar path (unaligned a, b): the same bits.
      DeviceBuffer<bf16> s_a = shifted_copy(to_bf16(a)), s_b = shifted_copy(to_bf16(b));
      d_dot = poisoned_floats(size_t(rows));
      cuda::row_dot(d_dot.data(), s_a.data() + 1, s_b.data() + 1, rows, cols);
      CHECK(bitwise_equal(d_dot.to_host(), dot));

      // in place: out aliases in
      cuda::scale_rows(d_a.data(), d_a.data(), d_s.data(), rows, cols);
      CHECK(bitwise_equal(download(d_a), round_to_bf16(scaled_ref)));
    }
  }
  SECTION("row_dot over 0 columns is 0") {
    DeviceBuffer<float> d_dot = poisoned_floats(5);
    cuda::row_dot(d_dot.data(), nullptr, nullptr, 5, 0);
    CHECK(d_dot.to_host() == FVec(5, 0.f));
  }
}

TEST_CASE("cuda CUDA_CHECK throws unipool::Error naming the call", "[cuda]") {
  // Needs no device: a failing status is turned into an exception with file, line and message.
  try {
    CUDA_CHECK(cudaErrorInvalidValue);
    FAIL("CUDA_CHECK did not throw");
  } catch (const unipool::Error& e) {
    CHECK_THAT(std::string(e.what()), HasSubstring("test_cuda_layers.cpp"));
    CHECK_THAT(std::string(e.what()), HasSubstring(cudaGetErrorString(cudaErrorInvalidValue)));
  }
}

#else
TEST_CASE("cuda layer ops: not built (no nvcc at configure time)", "[cuda]") {
  WARN("the CUDA backend was not compiled (nvcc not found): GPU layer tests skipped");
}
#endif
