// CUDA matrix products (kernels/cuda/matmul.cu) against the CPU oracle (kernels/cpu/matmul.h, run
// in double on the very inputs the GPU reads: bf16-rounded where the GPU reads bf16). Without a
// device the tests skip.
//
// Every "=" output is poisoned with NaN before the call, every "+=" output starts from random
// values; every op runs twice and the two results must be bitwise identical.
//
// Tolerances, with S = the same product over absolute values (Σ_k |a_ik·b_kj|, plus |initial value|
// for "+=" outputs), computed on the host by the CPU op on |inputs|:
//   bf16 outputs (fp32 accumulation, one rounding to bf16):
//       |gpu − cpu| <= 4e-3·|cpu| + 5e-4·S + 1e-6
//     (4e-3 > 2^-8, bf16's relative rounding bound; 5e-4·S covers fp32 / tensor-core
//     accumulation error, ~K·2^-23·S at worst, with margin, yet one dropped or doubled term of a
//     K <= ~768 sum is ~S/K >= 1.3e-3·S and fails)
//   fp32 outputs (weight gradients, router logits):  |gpu − cpu| <= 1e-5·|cpu| + 2e-4·S + 1e-6
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/catch.h"
#include "tests/cuda_test_util.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "base/error.h"
#include "kernels/cpu/ops.h"

namespace {

namespace cpu = unipool::cpu;
namespace cuda = unipool::cuda;
using namespace unipool::test;
using DVec = std::vector<double>;

// The CPU oracle runs in double: v, and |v| (the sums over absolute values), as doubles.
DVec to_double(const FVec& v) {
  return DVec(v.begin(), v.end());
}
DVec abs_double(const FVec& v) {
  return to_double(abs_of(v));
}

constexpr double kBf16Rel = 4e-3, kBf16Sum = 5e-4;
constexpr double kF32Rel = 1e-5, kF32Sum = 2e-4;

// |got − want| <= rel·|want| + rel_sum·sum_abs + 1e-6 for every element (NaN fails).
void expect_matches(const FVec& got, const DVec& want, const DVec& sum_abs, double rel,
                    double rel_sum, const char* what) {
  REQUIRE(got.size() == want.size());
  REQUIRE(sum_abs.size() == want.size());
  int failures = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    const double tol = rel * std::fabs(want[i]) + rel_sum * sum_abs[i] + 1e-6;
    if (!(err <= tol)) {
      if (failures < 5)
        UNSCOPED_INFO(what << "[" << i << "]: gpu " << got[i] << " cpu " << want[i]);
      ++failures;
    }
    if (err == err) worst = std::max(worst, err / tol);
  }
  INFO(what << ": " << failures << " of " << got.size()
            << " elements out of tolerance, worst error/tolerance " << worst);
  CHECK(failures == 0);
}

// ---- dense products -----------------------------------------------------------------------------
struct DenseShape {
  int I, O;
};
// Tile-friendly, wide-K, and sizes that are not multiples of 8 (odd leading dimensions).
constexpr DenseShape kDenseShapes[] = {{64, 192}, {768, 96}, {100, 36}};
constexpr int kDenseRows[] = {1, 37, 300};

}  // namespace

TEST_CASE("cuda matmul_forward and matmul_backward_input match the CPU op, bitwise reproducible",
          "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  uint32_t seed = 100;
  for (const DenseShape s : kDenseShapes) {
    for (const int N : kDenseRows) {
      const int I = s.I, O = s.O;
      const FVec in = bf16_values(size_t(N) * I, ++seed);
      const FVec W = bf16_values(size_t(O) * I, ++seed);
      const FVec dOut = bf16_values(size_t(N) * O, ++seed);
      DeviceBuffer<bf16> d_in = upload_bf16(in), d_W = upload_bf16(W), d_dOut = upload_bf16(dOut);
      for (const bool accumulate : {false, true}) {
        INFO("N " << N << " I " << I << " O " << O << " accumulate " << accumulate);
        const FVec out0 = bf16_values(size_t(N) * O, ++seed, 4.0);
        const FVec dIn0 = bf16_values(size_t(N) * I, ++seed, 4.0);

        // CPU oracle in double on the same inputs, and the sums over absolute values.
        DVec want_out = accumulate ? to_double(out0) : DVec(out0.size(), 0.0);
        DVec sum_out = accumulate ? abs_double(out0) : DVec(out0.size(), 0.0);
        cpu::matmul_forward(want_out.data(), to_double(in).data(), to_double(W).data(), N, I, O,
                            accumulate);
        cpu::matmul_forward(sum_out.data(), abs_double(in).data(), abs_double(W).data(), N, I, O,
                            accumulate);
        DVec want_dIn = accumulate ? to_double(dIn0) : DVec(dIn0.size(), 0.0);
        DVec sum_dIn = accumulate ? abs_double(dIn0) : DVec(dIn0.size(), 0.0);
        cpu::matmul_backward_input(want_dIn.data(), to_double(dOut).data(), to_double(W).data(), N,
                                   I, O, accumulate);
        cpu::matmul_backward_input(sum_dIn.data(), abs_double(dOut).data(), abs_double(W).data(), N,
                                   I, O, accumulate);

        std::vector<bf16> first_out, first_dIn;
        for (int run = 0; run < 2; ++run) {
          DeviceBuffer<bf16> d_out = accumulate ? upload_bf16(out0) : poisoned_bf16(out0.size());
          cuda::matmul_forward(d_out.data(), d_in.data(), d_W.data(), N, I, O, accumulate);
          DeviceBuffer<bf16> d_dIn = accumulate ? upload_bf16(dIn0) : poisoned_bf16(dIn0.size());
          cuda::matmul_backward_input(d_dIn.data(), d_dOut.data(), d_W.data(), N, I, O, accumulate);
          const std::vector<bf16> out = d_out.to_host(), dIn = d_dIn.to_host();
          if (run == 0) {
            expect_matches(from_bf16(out), want_out, sum_out, kBf16Rel, kBf16Sum, "out");
            expect_matches(from_bf16(dIn), want_dIn, sum_dIn, kBf16Rel, kBf16Sum, "dIn");
            first_out = out;
            first_dIn = dIn;
          } else {
            CHECK(bitwise_equal(out, first_out));
            CHECK(bitwise_equal(dIn, first_dIn));
          }
        }
      }
    }
  }
}

TEST_CASE("cuda matmul_backward_weight accumulates into fp32 like the CPU op, bitwise reproducible",
          "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  uint32_t seed = 200;
  for (const DenseShape s : kDenseShapes) {
    for (const int N : kDenseRows) {
      const int I = s.I, O = s.O;
      INFO("N " << N << " I " << I << " O " << O);
      const FVec in = bf16_values(size_t(N) * I, ++seed);
      const FVec dOut = bf16_values(size_t(N) * O, ++seed);
      const FVec dW0 = random_floats(size_t(O) * I, ++seed, 4.0);
      DeviceBuffer<bf16> d_in = upload_bf16(in), d_dOut = upload_bf16(dOut);
      DVec want = to_double(dW0), sum_abs = abs_double(dW0);
      cpu::matmul_backward_weight(want.data(), to_double(dOut).data(), to_double(in).data(), N, I,
                                  O);
      cpu::matmul_backward_weight(sum_abs.data(), abs_double(dOut).data(), abs_double(in).data(), N,
                                  I, O);
      FVec first;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<float> d_dW(dW0);
        cuda::matmul_backward_weight(d_dW.data(), d_dOut.data(), d_in.data(), N, I, O);
        const FVec dW = d_dW.to_host();
        if (run == 0) {
          expect_matches(dW, want, sum_abs, kF32Rel, kF32Sum, "dW");
          first = dW;
        } else {
          CHECK(bitwise_equal(dW, first));
        }
      }
    }
  }
}

TEST_CASE("cuda dense matmuls with empty sizes: N = 0 is a no-op, an empty sum writes zeros",
          "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const int I = 64, O = 32;
  const FVec sentinel = bf16_values(size_t(4) * O, 1);
  DeviceBuffer<bf16> d_in = upload_bf16(FVec(size_t(4) * I, 1.0f)),
                     d_W = upload_bf16(FVec(size_t(O) * I, 1.0f));
  DeviceBuffer<bf16> d_out = upload_bf16(sentinel);
  cuda::matmul_forward(d_out.data(), d_in.data(), d_W.data(), 0, I, O, false);
  cuda::matmul_backward_input(d_out.data(), d_in.data(), d_W.data(), 0, O, I, false);
  CHECK(download(d_out) == sentinel);
  DeviceBuffer<float> d_dW(FVec(size_t(O) * I, 3.0f));
  cuda::matmul_backward_weight(d_dW.data(), d_in.data(), d_in.data(), 0, I, O);
  CHECK(d_dW.to_host() == FVec(size_t(O) * I, 3.0f));
  // I = 0: out[4,O] = empty sum = 0 (overwrite), += leaves it alone.
  cuda::matmul_forward(d_out.data(), d_in.data(), d_W.data(), 4, 0, O, true);
  CHECK(download(d_out) == sentinel);
  cuda::matmul_forward(d_out.data(), d_in.data(), d_W.data(), 4, 0, O, false);
  CHECK(download(d_out) == FVec(sentinel.size(), 0.0f));
}

namespace {

// ---- router logits ------------------------------------------------------------------------------
struct RouterShape {
  int N, d, R;
};
// N = 2500 spans three 1024-token chunks of the dWr reduction; d and R include non-tile sizes.
constexpr RouterShape kRouterShapes[] = {
    {1, 128, 8}, {37, 200, 96}, {300, 768, 20}, {2500, 128, 128}, {1030, 1024, 8}};

}  // namespace

TEST_CASE("cuda router_logits forward and backward match the CPU op, bitwise reproducible",
          "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  uint32_t seed = 300;
  for (const RouterShape s : kRouterShapes) {
    const int N = s.N, d = s.d, R = s.R;
    INFO("N " << N << " d " << d << " R " << R);
    const FVec xn = bf16_values(size_t(N) * d, ++seed);    // bf16 on the GPU
    const FVec Wr = random_floats(size_t(R) * d, ++seed);  // fp32 master weights
    const FVec dz = random_floats(size_t(N) * R, ++seed);
    const FVec dxn0 = bf16_values(size_t(N) * d, ++seed, 4.0);
    const FVec dWr0 = random_floats(size_t(R) * d, ++seed, 4.0);
    DeviceBuffer<bf16> d_xn = upload_bf16(xn);
    DeviceBuffer<float> d_Wr(Wr), d_dz(dz);

    DVec want_z(size_t(N) * R), sum_z(size_t(N) * R);
    cpu::router_logits_forward(want_z.data(), to_double(xn).data(), to_double(Wr).data(), N, d, R);
    cpu::router_logits_forward(sum_z.data(), abs_double(xn).data(), abs_double(Wr).data(), N, d, R);
    DVec want_dxn = to_double(dxn0), want_dWr = to_double(dWr0);
    cpu::router_logits_backward(want_dxn.data(), want_dWr.data(), to_double(dz).data(),
                                to_double(xn).data(), to_double(Wr).data(), N, d, R);
    DVec sum_dxn = abs_double(dxn0), sum_dWr = abs_double(dWr0);
    cpu::router_logits_backward(sum_dxn.data(), sum_dWr.data(), abs_double(dz).data(),
                                abs_double(xn).data(), abs_double(Wr).data(), N, d, R);

    FVec first_z, first_dWr;
    std::vector<bf16> first_dxn;
    for (int run = 0; run < 2; ++run) {
      DeviceBuffer<float> d_z = poisoned_floats(size_t(N) * R);
      cuda::router_logits_forward(d_z.data(), d_xn.data(), d_Wr.data(), N, d, R);
      DeviceBuffer<bf16> d_dxn = upload_bf16(dxn0);
      DeviceBuffer<float> d_dWr(dWr0);
      cuda::router_logits_backward(d_dxn.data(), d_dWr.data(), d_dz.data(), d_xn.data(),
                                   d_Wr.data(), N, d, R);
      const FVec z = d_z.to_host(), dWr = d_dWr.to_host();
      const std::vector<bf16> dxn = d_dxn.to_host();
      if (run == 0) {
        expect_matches(z, want_z, sum_z, kF32Rel, kF32Sum, "z");
        expect_matches(from_bf16(dxn), want_dxn, sum_dxn, kBf16Rel, kBf16Sum, "dxn");
        expect_matches(dWr, want_dWr, sum_dWr, kF32Rel, kF32Sum, "dWr");
        first_z = z;
        first_dxn = dxn;
        first_dWr = dWr;
      } else {
        CHECK(bitwise_equal(z, first_z));
        CHECK(bitwise_equal(dxn, first_dxn));
        CHECK(bitwise_equal(dWr, first_dWr));
      }
    }
  }
}

namespace {

// ---- grouped products ---------------------------------------------------------------------------
// Per-expert row counts in the style of top-k dispatch: N tokens each pick k distinct experts among
// the active ones (every third expert is never picked: empty), with a skewed preference.
std::vector<int32_t> topk_style_counts(int N, int k, int E, uint32_t seed) {
  std::vector<int> active;
  for (int e = 0; e < E; ++e) {
    if (e % 3 != 1) active.push_back(e);
  }
  REQUIRE(int(active.size()) >= k);
  std::mt19937 gen(seed);
  std::vector<double> weight(active.size());
  for (size_t a = 0; a < active.size(); ++a) weight[a] = 1.0 + double(a % 5);
  std::discrete_distribution<int> pick(weight.begin(), weight.end());
  std::vector<int32_t> counts(size_t(E), 0);
  for (int t = 0; t < N; ++t) {
    std::vector<int> chosen;
    while (int(chosen.size()) < k) {
      const int e = active[size_t(pick(gen))];
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    for (int e : chosen) ++counts[size_t(e)];
  }
  return counts;
}

std::vector<int32_t> one_expert_counts(int E, int expert, int rows) {
  std::vector<int32_t> counts(size_t(E), 0);
  counts[size_t(expert)] = rows;
  return counts;
}

struct Split {
  std::string name;
  std::vector<int32_t> counts;
};

std::vector<Split> splits_for(int E) {
  std::vector<Split> s;
  if (E > 8) {
    s.push_back({"top-2 of 300 tokens", topk_style_counts(300, 2, E, 7)});
  } else {
    s.push_back({"top-2 of 600 tokens", topk_style_counts(600, 2, E, 7)});
  }
  s.push_back({"top-1 of 37 tokens", topk_style_counts(37, 1, E, 8)});
  s.push_back({"one token", topk_style_counts(1, 1, E, 9)});
  s.push_back({"all 300 rows in a middle expert", one_expert_counts(E, E / 2, 300)});
  s.push_back({"all 130 rows in expert 0", one_expert_counts(E, 0, 130)});
  s.push_back({"all 64 rows in the last expert", one_expert_counts(E, E - 1, 64)});
  return s;
}

struct GroupedShape {
  int I, O;
};
// 40 and 72: multiples of 8 with k-step and column-tile tails.
constexpr GroupedShape kGroupedShapes[] = {{64, 192}, {768, 96}, {40, 72}};

}  // namespace

TEST_CASE("cuda grouped matmuls match the CPU op for E = 96 and E = 8, bitwise reproducible",
          "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  uint32_t seed = 400;
  for (const int E : {96, 8}) {
    for (const GroupedShape s : kGroupedShapes) {
      const int I = s.I, O = s.O;
      const FVec W = bf16_values(size_t(E) * O * I, ++seed);
      const DVec W_d = to_double(W), W_abs = abs_double(W);
      DeviceBuffer<bf16> d_W = upload_bf16(W);
      for (const Split& split : splits_for(E)) {
        const std::vector<int32_t> off = offsets_from_counts(split.counts);
        const int rows = off[size_t(E)];
        INFO("E " << E << " I " << I << " O " << O << " split: " << split.name << " (rows " << rows
                  << ")");
        const FVec in = bf16_values(size_t(rows) * I, ++seed);
        const FVec dOut = bf16_values(size_t(rows) * O, ++seed);
        const FVec dW0 = random_floats(size_t(E) * O * I, ++seed, 4.0);
        DeviceBuffer<bf16> d_in = upload_bf16(in), d_dOut = upload_bf16(dOut);
        DeviceBuffer<int32_t> d_off(off);

        DVec want_out(size_t(rows) * O), sum_out(size_t(rows) * O);
        cpu::grouped_matmul_forward(want_out.data(), to_double(in).data(), W_d.data(), off.data(),
                                    rows, E, I, O);
        cpu::grouped_matmul_forward(sum_out.data(), abs_double(in).data(), W_abs.data(), off.data(),
                                    rows, E, I, O);
        DVec want_dIn(size_t(rows) * I), sum_dIn(size_t(rows) * I);
        cpu::grouped_matmul_backward_input(want_dIn.data(), to_double(dOut).data(), W_d.data(),
                                           off.data(), rows, E, I, O);
        cpu::grouped_matmul_backward_input(sum_dIn.data(), abs_double(dOut).data(), W_abs.data(),
                                           off.data(), rows, E, I, O);
        DVec want_dW = to_double(dW0), sum_dW = abs_double(dW0);
        cpu::grouped_matmul_backward_weight(want_dW.data(), to_double(dOut).data(),
                                            to_double(in).data(), off.data(), rows, E, I, O);
        cpu::grouped_matmul_backward_weight(sum_dW.data(), abs_double(dOut).data(),
                                            abs_double(in).data(), off.data(), rows, E, I, O);

        std::vector<bf16> first_out, first_dIn;
        FVec first_dW;
        for (int run = 0; run < 2; ++run) {
          DeviceBuffer<bf16> d_out = poisoned_bf16(size_t(rows) * O);
          cuda::grouped_matmul_forward(d_out.data(), d_in.data(), d_W.data(), d_off.data(), rows, E,
                                       I, O);
          DeviceBuffer<bf16> d_dIn = poisoned_bf16(size_t(rows) * I);
          cuda::grouped_matmul_backward_input(d_dIn.data(), d_dOut.data(), d_W.data(), d_off.data(),
                                              rows, E, I, O);
          DeviceBuffer<float> d_dW(dW0);
          cuda::grouped_matmul_backward_weight(d_dW.data(), d_dOut.data(), d_in.data(),
                                               d_off.data(), rows, E, I, O);
          const std::vector<bf16> out = d_out.to_host(), dIn = d_dIn.to_host();
          const FVec dW = d_dW.to_host();
          if (run == 0) {
            expect_matches(from_bf16(out), want_out, sum_out, kBf16Rel, kBf16Sum, "out");
            expect_matches(from_bf16(dIn), want_dIn, sum_dIn, kBf16Rel, kBf16Sum, "dIn");
            expect_matches(dW, want_dW, sum_dW, kF32Rel, kF32Sum, "dW");
            // Experts without rows keep their gradient bit for bit.
            int touched = 0;
            for (int e = 0; e < E; ++e) {
              if (split.counts[size_t(e)] != 0) continue;
              const size_t base = size_t(e) * O * I;
              if (std::memcmp(dW.data() + base, dW0.data() + base, sizeof(float) * O * I) != 0) {
                ++touched;
              }
            }
            CHECK(touched == 0);
            first_out = out;
            first_dIn = dIn;
            first_dW = dW;
          } else {
            CHECK(bitwise_equal(out, first_out));
            CHECK(bitwise_equal(dIn, first_dIn));
            CHECK(bitwise_equal(dW, first_dW));
          }
        }
      }
    }
  }
}

TEST_CASE("cuda grouped matmuls: zero rows is a no-op, I or O not a multiple of 8 is an error",
          "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const int E = 4, I = 16, O = 24;
  DeviceBuffer<int32_t> d_zero(std::vector<int32_t>(E + 1, 0));
  DeviceBuffer<bf16> d_W = upload_bf16(FVec(size_t(E) * O * I, 1.0f));
  // big enough for any [8, ≤24]
  DeviceBuffer<bf16> d_rows = upload_bf16(FVec(size_t(8) * O, 2.0f));
  DeviceBuffer<float> d_dW(FVec(size_t(E) * O * I, 3.0f));
  cuda::grouped_matmul_forward(d_rows.data(), d_rows.data(), d_W.data(), d_zero.data(), 0, E, I, O);
  cuda::grouped_matmul_backward_input(d_rows.data(), d_rows.data(), d_W.data(), d_zero.data(), 0, E,
                                      I, O);
  cuda::grouped_matmul_backward_weight(d_dW.data(), d_rows.data(), d_rows.data(), d_zero.data(), 0,
                                       E, I, O);
  CHECK(download(d_rows) == FVec(size_t(8) * O, 2.0f));
  CHECK(d_dW.to_host() == FVec(size_t(E) * O * I, 3.0f));

  CHECK_THROWS_AS(cuda::grouped_matmul_forward(d_rows.data(), d_rows.data(), d_W.data(),
                                               d_zero.data(), 0, E, 12, O),
                  unipool::Error);
  CHECK_THROWS_AS(cuda::grouped_matmul_backward_input(d_rows.data(), d_rows.data(), d_W.data(),
                                                      d_zero.data(), 0, E, I, 20),
                  unipool::Error);
  CHECK_THROWS_AS(cuda::grouped_matmul_backward_weight(d_dW.data(), d_rows.data(), d_rows.data(),
                                                       d_zero.data(), 0, E, 4, O),
                  unipool::Error);
  CHECK_THROWS_AS(cuda::grouped_matmul_forward(d_rows.data() + 1, d_rows.data(), d_W.data(),
                                               d_zero.data(), 0, E, I, O),
                  unipool::Error);  // a row buffer that is not 16-byte aligned
}

#endif  // UNIPOOL_HAVE_CUDA
