// CPU router-logit and grouped (per-expert) matrix products (kernels/cpu/matmul.h): values against
// naive loops written out here, every backward against central differences in double, splits with
// empty experts and with one expert holding every row, the checks on offsets, and full overwrite of
// "=" outputs.
#include <cmath>
#include <cstdint>
#include <vector>

#include "base/error.h"
#include "kernels/cpu/ops.h"
#include "tests/catch.h"
#include "tests/fd.h"

namespace cpu = unipool::cpu;
using unipool::test::all_finite;
using unipool::test::check_gradient;
using unipool::test::nan_vector;
using unipool::test::offsets_from_counts;
using unipool::test::random_vector;
using unipool::test::to_float;
using unipool::test::Vec;
using unipool::test::weighted_sum;

namespace {

// The splits every grouped test runs: empty experts first, inside and last; one expert with all
// rows (in the middle, then first, then last); a single expert.
const std::vector<std::vector<int32_t>> kSplits = {
    {0, 3, 0, 5, 1, 0, 2, 0},  // empty experts everywhere, rows = 11
    {0, 0, 9, 0},              // one expert with all rows
    {7, 0, 0},                 // ... the first one
    {0, 0, 6},                 // ... the last one
    {5},                       // a single expert
};

// out[r,o] = Σ_i in[r,i] · W[e(r),o,i], written as plain loops over experts and rows.
Vec naive_grouped_forward(const Vec& in, const Vec& W, const std::vector<int32_t>& off, int I,
                          int O) {
  const int E = int(off.size()) - 1;
  Vec out(static_cast<size_t>(off[E]) * O, 0.0);
  for (int e = 0; e < E; ++e) {
    for (int r = off[e]; r < off[e + 1]; ++r) {
      for (int o = 0; o < O; ++o) {
        double s = 0;
        for (int i = 0; i < I; ++i) s += in[size_t(r) * I + i] * W[(size_t(e) * O + o) * I + i];
        out[size_t(r) * O + o] = s;
      }
    }
  }
  return out;
}

// dIn[r,i] = Σ_o dOut[r,o] · W[e(r),o,i]
Vec naive_grouped_backward_input(const Vec& dOut, const Vec& W, const std::vector<int32_t>& off,
                                 int I, int O) {
  const int E = int(off.size()) - 1;
  Vec dIn(static_cast<size_t>(off[E]) * I, 0.0);
  for (int e = 0; e < E; ++e) {
    for (int r = off[e]; r < off[e + 1]; ++r) {
      for (int i = 0; i < I; ++i) {
        double s = 0;
        for (int o = 0; o < O; ++o) s += dOut[size_t(r) * O + o] * W[(size_t(e) * O + o) * I + i];
        dIn[size_t(r) * I + i] = s;
      }
    }
  }
  return dIn;
}

// dW[e,o,i] = dW0[e,o,i] + Σ_{r of e} dOut[r,o] · in[r,i]
Vec naive_grouped_backward_weight(Vec dW, const Vec& dOut, const Vec& in,
                                  const std::vector<int32_t>& off, int I, int O) {
  const int E = int(off.size()) - 1;
  for (int e = 0; e < E; ++e) {
    for (int o = 0; o < O; ++o) {
      for (int i = 0; i < I; ++i) {
        double s = 0;
        for (int r = off[e]; r < off[e + 1]; ++r)
          s += dOut[size_t(r) * O + o] * in[size_t(r) * I + i];
        dW[(size_t(e) * O + o) * I + i] += s;
      }
    }
  }
  return dW;
}

void check_near(const Vec& got, const Vec& want, const char* what) {
  REQUIRE(got.size() == want.size());
  int failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= 1e-12 * (1 + std::fabs(want[i])))) {
      if (failures < 5)
        UNSCOPED_INFO(what << "[" << i << "]: got " << got[i] << " want " << want[i]);
      ++failures;
    }
  }
  CHECK(failures == 0);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
TEST_CASE("router_logits forward is xn·Wrᵀ and backward matches finite differences", "[matmul]") {
  const int N = 7, d = 13, R = 5;
  Vec xn = random_vector(size_t(N) * d, 1);
  Vec Wr = random_vector(size_t(R) * d, 2);
  const Vec Rz = random_vector(size_t(N) * R, 3);

  Vec z = nan_vector<double>(size_t(N) * R);
  cpu::router_logits_forward(z.data(), xn.data(), Wr.data(), N, d, R);
  for (int t = 0; t < N; ++t) {
    for (int r = 0; r < R; ++r) {
      double s = 0;
      for (int i = 0; i < d; ++i) s += xn[size_t(t) * d + i] * Wr[size_t(r) * d + i];
      CHECK(z[size_t(t) * R + r] == Approx(s).epsilon(1e-13));
    }
  }

  // "+=": start both gradients from known values and subtract them afterwards.
  Vec dxn(xn.size(), 0.5), dWr(Wr.size(), -0.25);
  cpu::router_logits_backward(dxn.data(), dWr.data(), Rz.data(), xn.data(), Wr.data(), N, d, R);
  for (double& v : dxn) v -= 0.5;
  for (double& v : dWr) v += 0.25;
  auto loss = [&] {
    cpu::router_logits_forward(z.data(), xn.data(), Wr.data(), N, d, R);
    return weighted_sum(z, Rz);
  };
  check_gradient(loss, xn, dxn, "dxn", 1000000, 1e-6, 1e-9);
  check_gradient(loss, Wr, dWr, "dWr", 1000000, 1e-6, 1e-9);
}

TEST_CASE("grouped matmuls equal a per-expert loop, including empty and all-row experts",
          "[matmul]") {
  const int I = 6, O = 5;
  uint32_t seed = 10;
  for (const auto& counts : kSplits) {
    const std::vector<int32_t> off = offsets_from_counts(counts);
    const int E = int(counts.size()), rows = off[E];
    INFO("E " << E << " rows " << rows);
    const Vec in = random_vector(size_t(rows) * I, ++seed);
    const Vec W = random_vector(size_t(E) * O * I, ++seed);
    const Vec dOut = random_vector(size_t(rows) * O, ++seed);
    const Vec dW0 = random_vector(W.size(), ++seed);

    Vec out = nan_vector<double>(size_t(rows) * O);  // "=": every row written
    cpu::grouped_matmul_forward(out.data(), in.data(), W.data(), off.data(), rows, E, I, O);
    check_near(out, naive_grouped_forward(in, W, off, I, O), "out");

    Vec dIn = nan_vector<double>(size_t(rows) * I);
    cpu::grouped_matmul_backward_input(dIn.data(), dOut.data(), W.data(), off.data(), rows, E, I,
                                       O);
    check_near(dIn, naive_grouped_backward_input(dOut, W, off, I, O), "dIn");

    Vec dW = dW0;  // "+=": empty experts keep dW0 exactly (checked by the naive loop: + 0)
    cpu::grouped_matmul_backward_weight(dW.data(), dOut.data(), in.data(), off.data(), rows, E, I,
                                        O);
    check_near(dW, naive_grouped_backward_weight(dW0, dOut, in, off, I, O), "dW");
    for (int e = 0; e < E; ++e) {
      if (counts[size_t(e)] != 0) continue;
      for (int j = 0; j < O * I; ++j) {
        CHECK(dW[size_t(e) * O * I + j] == dW0[size_t(e) * O * I + j]);
      }
    }
  }
}

TEST_CASE("grouped matmul backwards match finite differences", "[matmul]") {
  const int I = 5, O = 4;
  uint32_t seed = 40;
  for (const auto& counts : kSplits) {
    const std::vector<int32_t> off = offsets_from_counts(counts);
    const int E = int(counts.size()), rows = off[E];
    INFO("E " << E << " rows " << rows);
    Vec in = random_vector(size_t(rows) * I, ++seed);
    Vec W = random_vector(size_t(E) * O * I, ++seed);
    const Vec Rout = random_vector(size_t(rows) * O, ++seed);

    Vec out(size_t(rows) * O);
    auto loss = [&] {
      cpu::grouped_matmul_forward(out.data(), in.data(), W.data(), off.data(), rows, E, I, O);
      return weighted_sum(out, Rout);
    };
    Vec dIn(in.size());
    cpu::grouped_matmul_backward_input(dIn.data(), Rout.data(), W.data(), off.data(), rows, E, I,
                                       O);
    Vec dW(W.size(), 0.0);
    cpu::grouped_matmul_backward_weight(dW.data(), Rout.data(), in.data(), off.data(), rows, E, I,
                                        O);
    check_gradient(loss, in, dIn, "dIn", 1000000, 1e-6, 1e-9);
    check_gradient(loss, W, dW, "dW", 1000000, 1e-6, 1e-9);
  }
}

TEST_CASE("grouped matmuls in float fully overwrite '=' outputs", "[matmul]") {
  const std::vector<int32_t> off = offsets_from_counts({0, 37, 0, 0, 12, 1, 0});
  const int E = 7, rows = off[E], I = 24, O = 40;
  const std::vector<float> in = to_float(random_vector(size_t(rows) * I, 60));
  const std::vector<float> W = to_float(random_vector(size_t(E) * O * I, 61));
  const std::vector<float> dOut = to_float(random_vector(size_t(rows) * O, 62));
  auto out = nan_vector<float>(size_t(rows) * O);
  cpu::grouped_matmul_forward(out.data(), in.data(), W.data(), off.data(), rows, E, I, O);
  CHECK(all_finite(out));
  auto dIn = nan_vector<float>(size_t(rows) * I);
  cpu::grouped_matmul_backward_input(dIn.data(), dOut.data(), W.data(), off.data(), rows, E, I, O);
  CHECK(all_finite(dIn));
  auto z = nan_vector<float>(size_t(rows) * O);
  cpu::router_logits_forward(z.data(), in.data(), W.data(), rows, I, O);
  CHECK(all_finite(z));
}

TEST_CASE("grouped matmuls reject bad offsets", "[matmul]") {
  const int I = 2, O = 3, E = 3, rows = 4;
  std::vector<double> in(size_t(rows) * I, 1.0), W(size_t(E) * O * I, 1.0), out(size_t(rows) * O);
  std::vector<double> dW(W.size(), 0.0), dOut(out.size(), 1.0), dIn(in.size());
  const std::vector<std::vector<int32_t>> bad = {
      {1, 2, 3, 4},  // does not start at 0
      {0, 3, 2, 4},  // decreases
      {0, 1, 2, 3},  // ends before rows
      {0, 1, 2, 5},  // ends after rows
  };
  for (const auto& off : bad) {
    CHECK_THROWS_AS(
        cpu::grouped_matmul_forward(out.data(), in.data(), W.data(), off.data(), rows, E, I, O),
        unipool::Error);
    CHECK_THROWS_AS(cpu::grouped_matmul_backward_input(dIn.data(), dOut.data(), W.data(),
                                                       off.data(), rows, E, I, O),
                    unipool::Error);
    CHECK_THROWS_AS(cpu::grouped_matmul_backward_weight(dW.data(), dOut.data(), in.data(),
                                                        off.data(), rows, E, I, O),
                    unipool::Error);
  }
  // Nothing was written by the rejected calls.
  for (double v : dW) CHECK(v == 0.0);
  // Zero rows and E = 0 are valid no-ops.
  const std::vector<int32_t> empty = {0};
  cpu::grouped_matmul_forward(out.data(), in.data(), W.data(), empty.data(), 0, 0, I, O);
  cpu::grouped_matmul_backward_weight(dW.data(), dOut.data(), in.data(), empty.data(), 0, 0, I, O);
  for (double v : dW) CHECK(v == 0.0);
}
