// CUDA router ops (kernels/cuda/router.cu) against the CPU oracle (kernels/cpu/router.h, T =
// float). Without a device the tests skip.
//
// Every "=" output is poisoned (NaN, or -123456789 for ints) before the call, every "+=" output
// starts from random values; each op runs twice on the same inputs and must give bitwise equal
// results. Shapes: row counts not multiples of the 8 rows per block nor of the 64-row chunks of the
// scalar sums (1, 37, 1000, 4099), widths below, at and above the warp (8, 96, 200).
//
// Tolerances (all fp32 ops, no bf16 here). The GPU sums in fp32 by a lane/tree order, the CPU in
// double, and expf/logf differ from glibc's by an ulp or two, so values agree to ~1e-6 relative to
// the sum of the absolute values of their terms: we allow 1e-5 of that scale (the `scale` argument
// of expect_close, built per element below) plus 1e-7 absolute (probabilities around 1e-8). Exact
// results are compared bitwise: top-k ids (a selection), gates without renorm (copies), the integer
// counts and the elementwise bookkeeping (the same float/double operations as the CPU op).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tests/catch.h"
#include "tests/cuda_test_util.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cpu/ops.h"

namespace {

namespace cpu = unipool::cpu;
namespace cuda = unipool::cuda;
using namespace unipool::test;

constexpr double kRtol = 1e-5;
constexpr double kAtol = 1e-7;
constexpr int kRowCounts[] = {1, 37, 1000, 4099};
constexpr int kWidths[] = {8, 96, 200};

// Scores with many exact ties: values from {0, 1/6, …, 5/6}, and one row in 5 of NormRouter shape
// (about half the entries exactly 0). Row 0 is all zero (every choice is a tie).
FVec tied_scores(int N, int E, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> level(0, 5);
  FVec s(size_t(N) * E);
  for (int t = 0; t < N; ++t) {
    for (int i = 0; i < E; ++i) {
      float v = float(level(gen)) / 6.0f;
      if (t % 5 == 3 && (gen() & 1u)) v = 0.0f;
      s[size_t(t) * E + i] = t == 0 ? 0.0f : v;
    }
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
TEST_CASE("cuda router: softmax forward and backward match the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int N : kRowCounts) {
    for (int E : kWidths) {
      INFO("N " << N << " E " << E);
      FVec z = random_floats(size_t(N) * E, 101u + uint32_t(N + E), 4.0);
      z[0] = 80.0f;  // exp would overflow without the max subtraction
      const FVec ds = random_floats(z.size(), 102u + uint32_t(N));
      FVec s_ref(z.size()), dz_ref(z.size());
      cpu::softmax_forward(s_ref.data(), z.data(), N, E);
      cpu::softmax_backward(dz_ref.data(), ds.data(), s_ref.data(), N, E);

      DeviceBuffer<float> d_z(z), d_ds(ds), d_sref(s_ref);
      FVec s_first;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<float> d_s = poisoned_floats(z.size());
        cuda::softmax_forward(d_s.data(), d_z.data(), N, E);
        const FVec s = d_s.to_host();
        if (run == 0) {
          expect_close(s, s_ref, "s", kRtol, kAtol);
          s_first = s;
        } else {
          CHECK(bitwise_equal(s, s_first));
        }
      }
      // In place (s aliases z).
      DeviceBuffer<float> d_zs(z);
      cuda::softmax_forward(d_zs.data(), d_zs.data(), N, E);
      CHECK(bitwise_equal(d_zs.to_host(), s_first));

      // Backward on the CPU's s; scale_i = |s_i|·(|ds_i| + Σ_j |s_j·ds_j|).
      FVec scale(z.size());
      for (int t = 0; t < N; ++t) {
        double sd = 0;
        for (int i = 0; i < E; ++i)
          sd += std::fabs(s_ref[size_t(t) * E + i] * ds[size_t(t) * E + i]);
        for (int i = 0; i < E; ++i) {
          const size_t x = size_t(t) * E + i;
          scale[x] = float(std::fabs(s_ref[x]) * (std::fabs(ds[x]) + sd));
        }
      }
      FVec dz_first;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<float> d_dz = poisoned_floats(z.size());
        cuda::softmax_backward(d_dz.data(), d_ds.data(), d_sref.data(), N, E);
        const FVec dz = d_dz.to_host();
        if (run == 0) {
          expect_close(dz, dz_ref, "dz", kRtol, kAtol, &scale);
          dz_first = dz;
        } else {
          CHECK(bitwise_equal(dz, dz_first));
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
TEST_CASE("cuda router: NormRouter forward and backward match the CPU op, dsigma accumulates",
          "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const float sigma = 1.37f;
  const double c = 2.913;
  for (int N : kRowCounts) {
    for (int E : kWidths) {
      INFO("N " << N << " E " << E);
      FVec z = random_floats(size_t(N) * E, 111u + uint32_t(N + E), 2.0);
      if (N > 2) {
        for (int i = 0; i < E; ++i) z[size_t(2) * E + i] = 0.0f;  // n == 0: s = 0, dz = 0
      }
      const FVec ds = random_floats(z.size(), 112u + uint32_t(N));
      FVec s_ref(z.size()), norm_ref(static_cast<size_t>(N));
      cpu::norm_router_forward(s_ref.data(), norm_ref.data(), z.data(), &sigma, c, N, E);
      const float dsigma0 = 0.25f;
      FVec dz_ref(z.size());
      float dsigma_ref = dsigma0;
      cpu::norm_router_backward(dz_ref.data(), &dsigma_ref, ds.data(), z.data(), norm_ref.data(),
                                &sigma, c, N, E);

      DeviceBuffer<float> d_z(z), d_ds(ds), d_sigma(FVec{sigma}), d_norm_ref(norm_ref);
      FVec s_first, norm_first;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<float> d_s = poisoned_floats(z.size()), d_norm = poisoned_floats(size_t(N));
        cuda::norm_router_forward(d_s.data(), d_norm.data(), d_z.data(), d_sigma.data(), c, N, E);
        const FVec s = d_s.to_host(), norm = d_norm.to_host();
        if (run == 0) {
          expect_close(s, s_ref, "s", kRtol, kAtol);
          expect_close(norm, norm_ref, "norm", kRtol, kAtol);
          s_first = s;
          norm_first = norm;
        } else {
          CHECK(bitwise_equal(s, s_first));
          CHECK(bitwise_equal(norm, norm_first));
        }
      }
      if (N > 2) {
        for (int i = 0; i < E; ++i) CHECK(s_first[size_t(2) * E + i] == 0.0f);
      }

      // Backward. dz = gu − z·b: scale_i = σc/D·|ds_i| + |z_i|·σc·Q/(n·D²), Q = Σ_{z>0} |z·ds|;
      // dsigma: 0.25 + c·Σ_t Q_t/D_t.
      const double sc = double(sigma) * c;
      FVec scale(z.size(), 0.0f);
      double dsigma_scale = dsigma0;
      for (int t = 0; t < N; ++t) {
        const double n = norm_ref[size_t(t)], D = n + 1e-8;
        if (!(n > 0)) continue;
        double Q = 0;
        for (int i = 0; i < E; ++i) {
          const size_t x = size_t(t) * E + i;
          if (z[x] > 0) Q += std::fabs(double(z[x]) * ds[x]);
        }
        dsigma_scale += c * Q / D;
        for (int i = 0; i < E; ++i) {
          const size_t x = size_t(t) * E + i;
          scale[x] = float(sc / D * std::fabs(ds[x]) + std::fabs(z[x]) * sc * Q / (n * D * D));
        }
      }
      FVec dz_first;
      float dsigma_first = 0;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<float> d_dz = poisoned_floats(z.size()), d_dsigma(FVec{dsigma0});
        cuda::norm_router_backward(d_dz.data(), d_dsigma.data(), d_ds.data(), d_z.data(),
                                   d_norm_ref.data(), d_sigma.data(), c, N, E);
        const FVec dz = d_dz.to_host();
        const float dsigma = d_dsigma.to_host()[0];
        if (run == 0) {
          expect_close(dz, dz_ref, "dz", kRtol, kAtol, &scale);
          INFO("dsigma gpu " << dsigma << " cpu " << dsigma_ref);
          CHECK(std::fabs(double(dsigma) - dsigma_ref) <= kRtol * dsigma_scale + kAtol);
          CHECK(dsigma != dsigma0);  // it did accumulate something
          dz_first = dz;
          dsigma_first = dsigma;
        } else {
          CHECK(bitwise_equal(dz, dz_first));
          CHECK(std::memcmp(&dsigma, &dsigma_first, sizeof(float)) == 0);
        }
      }
      if (N > 2) {
        for (int i = 0; i < E; ++i) CHECK(dz_first[size_t(2) * E + i] == 0.0f);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
TEST_CASE("cuda router: sigmoid forward and backward match the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int N : kRowCounts) {
    for (int E : kWidths) {
      INFO("N " << N << " E " << E);
      FVec z = random_floats(size_t(N) * E, 111u + uint32_t(N + E), 6.0);
      z[0] = 90.0f;  // saturated tails
      z[z.size() - 1] = -90.0f;
      const FVec ds = random_floats(z.size(), 112u + uint32_t(N));
      FVec s_ref(z.size()), dz_ref(z.size());
      cpu::sigmoid_forward(s_ref.data(), z.data(), N, E);
      cpu::sigmoid_backward(dz_ref.data(), ds.data(), s_ref.data(), N, E);
      DeviceBuffer<float> d_z(z), d_ds(ds), d_sref(s_ref);
      FVec s_first, dz_first;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<float> d_s = poisoned_floats(z.size());
        cuda::sigmoid_forward(d_s.data(), d_z.data(), N, E);
        DeviceBuffer<float> d_dz = poisoned_floats(z.size());
        cuda::sigmoid_backward(d_dz.data(), d_ds.data(), d_sref.data(), N, E);
        const FVec s = d_s.to_host(), dz = d_dz.to_host();
        if (run == 0) {
          expect_close(s, s_ref, "s", kRtol, kAtol);
          expect_close(dz, dz_ref, "dz", kRtol, kAtol);
          s_first = s;
          dz_first = dz;
        } else {
          CHECK(bitwise_equal(s, s_first));
          CHECK(bitwise_equal(dz, dz_first));
        }
      }
      DeviceBuffer<float> d_zs(z);  // in place (s aliases z)
      cuda::sigmoid_forward(d_zs.data(), d_zs.data(), N, E);
      CHECK(bitwise_equal(d_zs.to_host(), s_first));
    }
  }
}

// ---------------------------------------------------------------------------------------------------
TEST_CASE("cuda router: top-k forward equals the CPU op, ties to the lower index", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  struct Shape {
    int N, E, k;
  };
  const Shape shapes[] = {{1, 8, 1},     {37, 8, 2},    {1000, 8, 8},  {4099, 96, 1},
                          {1000, 96, 2}, {37, 96, 4},   {1000, 96, 9}, {300, 200, 4},
                          {37, 128, 4},  {20, 1024, 3}, {5, 40, 40}};
  for (const Shape& sh : shapes) {
    for (int variant = 0; variant < 3; ++variant) {
      // 0: plain; 1: renorm; 2: an expert bias (levels of 1/12, so s + b ties too) and renorm
      const bool renorm = variant > 0, biased = variant == 2;
      const int N = sh.N, E = sh.E, k = sh.k;
      INFO("N " << N << " E " << E << " k " << k << " renorm " << renorm << " bias " << biased);
      const FVec s = tied_scores(N, E, 121u + uint32_t(N * 7 + E + k));
      FVec bias(static_cast<size_t>(E));
      for (int i = 0; i < E; ++i) bias[size_t(i)] = float((i * 5) % 7 - 3) / 12.0f;
      const float* b = biased ? bias.data() : nullptr;
      Ids ids_ref(size_t(N) * k);
      FVec gates_ref(size_t(N) * k);
      cpu::topk_forward(ids_ref.data(), gates_ref.data(), s.data(), b, N, E, k, renorm);
      DeviceBuffer<float> d_s(s), d_bias(bias);
      const float* d_b = biased ? d_bias.data() : nullptr;
      Ids ids_first;
      FVec gates_first;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<int32_t> d_ids = poisoned_ints(size_t(N) * k);
        DeviceBuffer<float> d_gates = poisoned_floats(size_t(N) * k);
        cuda::topk_forward(d_ids.data(), d_gates.data(), d_s.data(), d_b, N, E, k, renorm);
        const Ids ids = d_ids.to_host();
        const FVec gates = d_gates.to_host();
        if (run == 0) {
          CHECK(count_mismatches(ids, ids_ref, "ids") == 0);
          if (renorm) {
            expect_close(gates, gates_ref, "gates", 1e-6, 0.0);
          } else {
            CHECK(bitwise_equal(gates, gates_ref));  // copies of s
          }
          ids_first = ids;
          gates_first = gates;
        } else {
          CHECK(ids == ids_first);
          CHECK(bitwise_equal(gates, gates_first));
        }
      }
    }
  }
  // The hand-checked ties of the CPU test.
  const FVec s = {0.2f, 0.5f, 0.5f, 0.1f};
  DeviceBuffer<float> d_s(s);
  DeviceBuffer<int32_t> d_ids = poisoned_ints(2);
  DeviceBuffer<float> d_gates = poisoned_floats(2);
  cuda::topk_forward(d_ids.data(), d_gates.data(), d_s.data(), nullptr, 1, 4, 2, false);
  CHECK(d_ids.to_host() == Ids{1, 2});
  CHECK_THROWS(
      cuda::topk_forward(d_ids.data(), d_gates.data(), d_s.data(), nullptr, 1, 4, 5, false));
  CHECK_THROWS(
      cuda::topk_forward(d_ids.data(), d_gates.data(), d_s.data(), nullptr, 1, 4, 0, false));
}

TEST_CASE("cuda router: top-k backward matches the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int N : {1, 37, 1000}) {
    for (int E : {8, 96}) {
      for (int k : {1, 2, 4}) {
        for (bool renorm : {false, true}) {
          INFO("N " << N << " E " << E << " k " << k << " renorm " << renorm);
          FVec s = random_floats(size_t(N) * E, 131u + uint32_t(N + E + k));
          for (auto& v : s) v = std::fabs(v);
          if (N > 3) {
            for (int i = 0; i < E; ++i) s[size_t(3) * E + i] = 0.0f;  // zero sum: no gradient
          }
          Ids ids(size_t(N) * k);
          FVec gates(size_t(N) * k);
          cpu::topk_forward(ids.data(), gates.data(), s.data(), nullptr, N, E, k, renorm);
          const FVec dgates = random_floats(size_t(N) * k, 132u + uint32_t(k));
          const FVec ds0 = random_floats(s.size(), 133u + uint32_t(N), 0.5);
          FVec ds_ref = ds0;
          cpu::topk_backward(ds_ref.data(), dgates.data(), ids.data(), gates.data(), s.data(), N, E,
                             k, renorm);
          // scale: |ds0| + |the added term| (≤ (|dg| + Σ|g·dg|)/Σ s for renorm).
          FVec scale = abs_of(ds0);
          for (int t = 0; t < N; ++t) {
            double sum = 0, gdg = 0;
            for (int j = 0; j < k; ++j) {
              sum += s[size_t(t) * E + ids[size_t(t) * k + j]];
              gdg += std::fabs(double(gates[size_t(t) * k + j]) * dgates[size_t(t) * k + j]);
            }
            for (int j = 0; j < k; ++j) {
              const size_t x = size_t(t) * E + ids[size_t(t) * k + j];
              const double dg = std::fabs(dgates[size_t(t) * k + j]);
              scale[x] += float(renorm ? (sum > 0 ? (dg + gdg) / sum : 0.0) : dg);
            }
          }
          DeviceBuffer<float> d_s(s), d_gates(gates), d_dgates(dgates);
          DeviceBuffer<int32_t> d_ids(ids);
          FVec first;
          for (int run = 0; run < 2; ++run) {
            DeviceBuffer<float> d_ds(ds0);
            cuda::topk_backward(d_ds.data(), d_dgates.data(), d_ids.data(), d_gates.data(),
                                d_s.data(), N, E, k, renorm);
            const FVec ds = d_ds.to_host();
            if (run == 0) {
              expect_close(ds, ds_ref, "ds", kRtol, kAtol, &scale);
              first = ds;
            } else {
              CHECK(bitwise_equal(ds, first));
            }
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
TEST_CASE("cuda router: expert_counts equals the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  struct Case {
    int N, k, E;
    bool one_expert;
  };
  const Case cases[] = {{1, 1, 8, false},      {37, 2, 8, false},      {1000, 4, 96, false},
                        {65536, 4, 96, false}, {16384, 2, 128, false}, {5000, 1, 96, true},
                        {3001, 2, 8, true},    {100, 1, 1024, false}};
  for (const Case& cs : cases) {
    INFO("N " << cs.N << " k " << cs.k << " E " << cs.E << " one expert " << cs.one_expert);
    const Ids ids = cs.one_expert ? Ids(size_t(cs.N) * cs.k, cs.E - 1)
                                  : random_ids(cs.N, cs.k, cs.E, 141u + uint32_t(cs.N));
    Ids want(size_t(cs.E));
    cpu::expert_counts(want.data(), ids.data(), cs.N, cs.k, cs.E);
    DeviceBuffer<int32_t> d_ids(ids);
    for (int run = 0; run < 2; ++run) {
      DeviceBuffer<int32_t> d_counts = poisoned_ints(size_t(cs.E));
      cuda::expert_counts(d_counts.data(), d_ids.data(), cs.N, cs.k, cs.E);
      CHECK(d_counts.to_host() == want);
    }
  }
  // N = 0: all zero.
  DeviceBuffer<int32_t> d_counts = poisoned_ints(8), d_none(Ids{0});
  cuda::expert_counts(d_counts.data(), d_none.data(), 0, 2, 8);
  CHECK(d_counts.to_host() == Ids(8, 0));
  CHECK_THROWS(cuda::expert_counts(d_counts.data(), d_none.data(), 1, 1, 100000));
}

// ---------------------------------------------------------------------------------------------------
TEST_CASE("cuda router: balance loss forward and backward match the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const double coeff = 0.0123;
  for (int N : kRowCounts) {
    for (int E : kWidths) {
      INFO("N " << N << " E " << E);
      const FVec s = random_floats(size_t(N) * E, 151u + uint32_t(N + E));
      FVec weight = random_floats(size_t(E), 152u + uint32_t(E), 50.0);
      weight[0] = 3.0f;
      float loss_ref = 0;
      cpu::balance_loss_forward(&loss_ref, s.data(), weight.data(), coeff, N, E);
      double loss_scale = 0;
      for (int t = 0; t < N; ++t) {
        for (int i = 0; i < E; ++i) {
          loss_scale += std::fabs(double(weight[i]) * s[size_t(t) * E + i]);
        }
      }
      loss_scale *= coeff;

      DeviceBuffer<float> d_s(s), d_w(weight);
      float first = 0;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<float> d_loss = poisoned_floats(1);
        cuda::balance_loss_forward(d_loss.data(), d_s.data(), d_w.data(), coeff, N, E);
        const float loss = d_loss.to_host()[0];
        if (run == 0) {
          INFO("loss gpu " << loss << " cpu " << loss_ref);
          CHECK(std::fabs(double(loss) - loss_ref) <= kRtol * loss_scale + kAtol);
          first = loss;
        } else {
          CHECK(std::memcmp(&loss, &first, sizeof(float)) == 0);
        }
      }

      // Backward: the same double product and float add as the CPU op, so bitwise.
      const FVec ds0 = random_floats(s.size(), 153u + uint32_t(N));
      FVec ds_ref = ds0;
      cpu::balance_loss_backward(ds_ref.data(), weight.data(), coeff, N, E);
      DeviceBuffer<float> d_ds(ds0);
      cuda::balance_loss_backward(d_ds.data(), d_w.data(), coeff, N, E);
      CHECK(bitwise_equal(d_ds.to_host(), ds_ref));
    }
  }
  // N = 0: loss = coeff·0.
  DeviceBuffer<float> d_loss = poisoned_floats(1), d_w(FVec(8, 1.0f)), d_s(FVec(8, 1.0f));
  cuda::balance_loss_forward(d_loss.data(), d_s.data(), d_w.data(), coeff, 0, 8);
  CHECK(d_loss.to_host()[0] == 0.0f);
}

TEST_CASE("cuda router: z-loss forward and backward match the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const double coeff = 1e-3;
  for (int N : kRowCounts) {
    for (int E : kWidths) {
      INFO("N " << N << " E " << E);
      const FVec z = random_floats(size_t(N) * E, 161u + uint32_t(N + E), 6.0);
      float loss_ref = 0;
      cpu::z_loss_forward(&loss_ref, z.data(), coeff, N, E);
      DeviceBuffer<float> d_z(z);
      float first = 0;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<float> d_loss = poisoned_floats(1);
        cuda::z_loss_forward(d_loss.data(), d_z.data(), coeff, N, E);
        const float loss = d_loss.to_host()[0];
        if (run == 0) {
          INFO("loss gpu " << loss << " cpu " << loss_ref);
          CHECK(std::fabs(double(loss) - loss_ref) <= kRtol * std::fabs(loss_ref) + 1e-12);
          first = loss;
        } else {
          CHECK(std::memcmp(&loss, &first, sizeof(float)) == 0);
        }
      }

      const FVec dz0 = random_floats(z.size(), 162u + uint32_t(N), 1e-3);
      FVec dz_ref = dz0, term(z.size(), 0.0f);
      cpu::z_loss_backward(dz_ref.data(), z.data(), coeff, N, E);
      cpu::z_loss_backward(term.data(), z.data(), coeff, N, E);
      FVec scale = abs_of(dz0);
      for (size_t i = 0; i < scale.size(); ++i) scale[i] += std::fabs(term[i]);
      FVec dz_first;
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<float> d_dz(dz0);
        cuda::z_loss_backward(d_dz.data(), d_z.data(), coeff, N, E);
        const FVec dz = d_dz.to_host();
        if (run == 0) {
          expect_close(dz, dz_ref, "dz", kRtol, 1e-12, &scale);
          dz_first = dz;
        } else {
          CHECK(bitwise_equal(dz, dz_first));
        }
      }
    }
  }
  DeviceBuffer<float> d_loss = poisoned_floats(1), d_z(FVec(8, 1.0f));
  cuda::z_loss_forward(d_loss.data(), d_z.data(), coeff, 0, 8);
  CHECK(d_loss.to_host()[0] == 0.0f);
}

// ---------------------------------------------------------------------------------------------------
TEST_CASE("cuda router: the entropy term matches the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int N : kRowCounts) {
    for (int E : kWidths) {
      for (bool masked : {false, true}) {
        INFO("N " << N << " E " << E << " masked " << masked);
        FVec s = random_floats(size_t(N) * E, 131u + uint32_t(N + E));
        for (auto& v : s) v = std::fabs(v);
        FVec support(static_cast<size_t>(E), 1.0f);
        for (int i = 0; i < E; i += 3) support[size_t(i)] = 0.0f;
        FVec loss_ref(1), weight_ref(static_cast<size_t>(E));
        cpu::entropy_loss_forward(loss_ref.data(), weight_ref.data(), s.data(),
                                  masked ? support.data() : nullptr, 0.005, std::log(8.0), N, E);
        DeviceBuffer<float> d_s(s), d_support(support);
        FVec loss_first, weight_first;
        for (int run = 0; run < 2; ++run) {
          DeviceBuffer<float> d_loss = poisoned_floats(1), d_weight = poisoned_floats(size_t(E));
          cuda::entropy_loss_forward(d_loss.data(), d_weight.data(), d_s.data(),
                                     masked ? d_support.data() : nullptr, 0.005, std::log(8.0), N,
                                     E);
          const FVec loss = d_loss.to_host(), weight = d_weight.to_host();
          if (run == 0) {
            expect_close(loss, loss_ref, "loss", kRtol, kAtol);
            expect_close(weight, weight_ref, "weight", kRtol, 1e-9);
            loss_first = loss;
            weight_first = weight;
          } else {
            CHECK(bitwise_equal(loss, loss_first));
            CHECK(bitwise_equal(weight, weight_first));
          }
        }
      }
    }
  }
}

TEST_CASE("cuda router: routing_stats equals the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int N : kRowCounts) {
    for (int E : kWidths) {
      for (int k : {1, 2, 4}) {
        INFO("N " << N << " E " << E << " k " << k);
        std::mt19937 gen(uint32_t(N * 31 + E * 7 + k));
        Ids ids(size_t(N) * k);
        FVec gates(ids.size());
        for (size_t i = 0; i < ids.size(); ++i) {
          ids[i] = int32_t(gen() % uint32_t(E));
          gates[i] = gen() % 3 == 0 ? 0.0f : float(gen() % 100) / 100.0f;  // many zero gates
        }
        Ids ref(size_t(1 + 2 * E), 3);
        cpu::routing_stats(ref.data(), ids.data(), gates.data(), N, k, E);
        DeviceBuffer<int32_t> d_ids(ids), d_stats(Ids(size_t(1 + 2 * E), 3));
        DeviceBuffer<float> d_gates(gates);
        cuda::routing_stats(d_stats.data(), d_ids.data(), d_gates.data(), N, k, E);
        CHECK(d_stats.to_host() == ref);
      }
    }
  }
}

TEST_CASE("cuda router: counts_to_float, axpy and pool_counts_update equal the CPU ops", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int E : {1, 8, 96, 300}) {
    INFO("E " << E);
    const Ids counts1 = random_ids(E, 1, 4 * E + 1, 171u + uint32_t(E));  // values in [0, 4E]
    const Ids counts2 = random_ids(E, 1, 65537, 172u + uint32_t(E));
    DeviceBuffer<int32_t> d_c1(counts1), d_c2(counts2);

    FVec out_ref(static_cast<size_t>(E));
    cpu::counts_to_float(out_ref.data(), counts1.data(), E);
    DeviceBuffer<float> d_out = poisoned_floats(size_t(E));
    cuda::counts_to_float(d_out.data(), d_c1.data(), E);
    CHECK(bitwise_equal(d_out.to_host(), out_ref));

    const FVec x = random_floats(size_t(E), 173u + uint32_t(E), 10.0);
    const FVec y0 = random_floats(size_t(E), 174u + uint32_t(E), 10.0);
    FVec y_ref = y0;
    cpu::axpy(y_ref.data(), x.data(), 0.3, E);
    DeviceBuffer<float> d_x(x), d_y(y0);
    cuda::axpy(d_y.data(), d_x.data(), 0.3, E);
    CHECK(bitwise_equal(d_y.to_host(), y_ref));

    // Two layers of a pool of 3, then the last one (finish); ghat untouched before.
    FVec running_ref(size_t(E), 0.0f), ghat_ref(size_t(E), -1.0f);
    DeviceBuffer<float> d_running(running_ref), d_ghat(ghat_ref);
    cpu::pool_counts_update(running_ref.data(), ghat_ref.data(), counts1.data(), false, 3, E);
    cpu::pool_counts_update(running_ref.data(), ghat_ref.data(), counts2.data(), false, 3, E);
    cuda::pool_counts_update(d_running.data(), d_ghat.data(), d_c1.data(), false, 3, E);
    cuda::pool_counts_update(d_running.data(), d_ghat.data(), d_c2.data(), false, 3, E);
    CHECK(bitwise_equal(d_running.to_host(), running_ref));
    CHECK(bitwise_equal(d_ghat.to_host(), ghat_ref));
    cpu::pool_counts_update(running_ref.data(), ghat_ref.data(), counts1.data(), true, 3, E);
    cuda::pool_counts_update(d_running.data(), d_ghat.data(), d_c1.data(), true, 3, E);
    CHECK(bitwise_equal(d_running.to_host(), running_ref));
    CHECK(bitwise_equal(d_ghat.to_host(), ghat_ref));
    CHECK(running_ref == FVec(size_t(E), 0.0f));
  }
}

// ---------------------------------------------------------------------------------------------------
// UniPool-lock column ops: pure copies and single multiplies, so bitwise the CPU op's. Row counts
// include 0 (a no-op on empty buffers); widths not multiples of the warp (1, 45, 200).
TEST_CASE("cuda router: scale_columns equals the CPU op, scale 1 is the identity", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int N : {0, 1, 37, 1000}) {
    for (int E : {1, 8, 45, 96, 200}) {
      INFO("N " << N << " E " << E);
      const FVec x = random_floats(size_t(N) * E, 181u + uint32_t(N + E), 8.0);
      FVec scale = random_floats(size_t(E), 182u + uint32_t(E), 3.0);
      scale[0] = 1.0f;
      if (E > 2) scale[2] = 0.0f;
      FVec ref = x;
      cpu::scale_columns(ref.data(), scale.data(), N, E);
      DeviceBuffer<float> d_x(x), d_scale(scale);
      cuda::scale_columns(d_x.data(), d_scale.data(), N, E);
      CHECK(bitwise_equal(d_x.to_host(), ref));

      DeviceBuffer<float> d_y(x), d_ones(FVec(size_t(E), 1.0f));
      cuda::scale_columns(d_y.data(), d_ones.data(), N, E);
      CHECK(bitwise_equal(d_y.to_host(), x));
    }
  }
  DeviceBuffer<float> d_x(FVec(8, 1.0f)), d_scale(FVec(8, 2.0f));
  CHECK_THROWS_AS(cuda::scale_columns(d_x.data(), d_scale.data(), -1, 8), unipool::Error);
  CHECK_THROWS_AS(cuda::scale_columns(d_x.data(), d_scale.data(), 1, 0), unipool::Error);
}

TEST_CASE("cuda router: select_columns forward and backward equal the CPU ops", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int N : {0, 1, 37, 1000}) {
    for (int E : {1, 8, 45, 96, 200}) {
      for (int K : {1, (E + 1) / 2, E}) {
        INFO("N " << N << " E " << E << " K " << K);
        const uint32_t seed = 191u + uint32_t(N * 7 + E * 3 + K);
        const Ids cols = random_ids(1, K, E, seed);  // K distinct columns
        const FVec in = random_floats(size_t(N) * E, seed + 1, 5.0);
        FVec dout = random_floats(size_t(N) * K, seed + 2, 5.0);
        if (!dout.empty()) dout[0] = -0.0f;  // a selected -0 stays -0
        DeviceBuffer<int32_t> d_cols(cols);
        DeviceBuffer<float> d_in(in), d_dout(dout);

        auto out_ref = std::vector<float>(size_t(N) * K, std::numeric_limits<float>::quiet_NaN());
        cpu::select_columns_forward(out_ref.data(), in.data(), cols.data(), N, E, K);
        DeviceBuffer<float> d_out = poisoned_floats(size_t(N) * K);
        cuda::select_columns_forward(d_out.data(), d_in.data(), d_cols.data(), N, E, K);
        CHECK(bitwise_equal(d_out.to_host(), out_ref));

        auto din_ref = std::vector<float>(size_t(N) * E, std::numeric_limits<float>::quiet_NaN());
        cpu::select_columns_backward(din_ref.data(), dout.data(), cols.data(), N, E, K);
        for (int run = 0; run < 2; ++run) {  // poisoned with NaN, then with -0
          DeviceBuffer<float> d_din = run == 0 ? poisoned_floats(size_t(N) * E)
                                               : DeviceBuffer<float>(FVec(size_t(N) * E, -0.0f));
          cuda::select_columns_backward(d_din.data(), d_dout.data(), d_cols.data(), N, E, K);
          CHECK(bitwise_equal(d_din.to_host(), din_ref));  // +0 where not selected, as the CPU
        }

        // A forward may select a column more than once.
        std::mt19937 gen(seed + 3);
        Ids repeat(static_cast<size_t>(K));
        for (auto& c : repeat) c = int32_t(gen() % uint32_t(E));
        cpu::select_columns_forward(out_ref.data(), in.data(), repeat.data(), N, E, K);
        DeviceBuffer<int32_t> d_repeat(repeat);
        DeviceBuffer<float> d_out2 = poisoned_floats(size_t(N) * K);
        cuda::select_columns_forward(d_out2.data(), d_in.data(), d_repeat.data(), N, E, K);
        CHECK(bitwise_equal(d_out2.to_host(), out_ref));
      }
    }
  }
  DeviceBuffer<int32_t> d_cols(Ids{0, 1, 2});
  DeviceBuffer<float> d_a = poisoned_floats(12), d_b = poisoned_floats(12);
  for (int badK : {0, 5}) {
    CHECK_THROWS_AS(cuda::select_columns_forward(d_a.data(), d_b.data(), d_cols.data(), 2, 4, badK),
                    unipool::Error);
    CHECK_THROWS_AS(
        cuda::select_columns_backward(d_a.data(), d_b.data(), d_cols.data(), 2, 4, badK),
        unipool::Error);
  }
  CHECK_THROWS_AS(cuda::select_columns_forward(d_a.data(), d_b.data(), d_cols.data(), -1, 4, 3),
                  unipool::Error);
  CHECK_THROWS_AS(cuda::select_columns_backward(d_a.data(), d_b.data(), d_cols.data(), 2, 0, 3),
                  unipool::Error);
}

TEST_CASE("cuda router: map_ids equals the CPU op", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(37), int64_t(4099 * 3)}) {
    for (int K : {1, 45, 200}) {
      INFO("n " << n << " K " << K);
      std::mt19937 gen(uint32_t(n * 13 + K));
      Ids table(static_cast<size_t>(K)), ids(static_cast<size_t>(n));
      for (auto& v : table) v = int32_t(gen() % 100000u);
      for (auto& v : ids) v = int32_t(gen() % uint32_t(K));
      Ids ref = ids;
      cpu::map_ids(ref.data(), table.data(), n);
      DeviceBuffer<int32_t> d_ids(ids), d_table(table);
      cuda::map_ids(d_ids.data(), d_table.data(), n);
      CHECK(count_mismatches(d_ids.to_host(), ref, "ids") == 0);
    }
  }
  DeviceBuffer<int32_t> d_ids(Ids{0}), d_table(Ids{5});
  CHECK_THROWS_AS(cuda::map_ids(d_ids.data(), d_table.data(), -1), unipool::Error);
}

#endif  // UNIPOOL_HAVE_CUDA
