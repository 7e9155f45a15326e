// CPU dispatch ops (kernels/cpu/dispatch.h): the (expert, token) plan, gather and slot sums (each
// other's adjoint), the slot/row value permutations, "=" outputs overwritten. GPU twin:
// tests/test_cuda_dispatch.cpp.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/catch.h"
#include "tests/fd.h"

namespace cpu = unipool::cpu;
using unipool::test::all_finite;
using unipool::test::Ids;
using unipool::test::nan_vector;
using unipool::test::random_ids;
using unipool::test::random_vector;
using unipool::test::to_float;
using unipool::test::Vec;
using unipool::test::check_gradient;
using unipool::test::weighted_sum;

namespace {

// Every dispatch_plan invariant of dispatch.h for one ids array.
void check_plan(const Ids& ids, int N, int k, int E) {
  const int n = N * k;
  Ids offsets(E + 1, -7), row_slot(n, -7), slot_row(n, -7);
  cpu::dispatch_plan(offsets.data(), row_slot.data(), slot_row.data(), ids.data(), N, k, E);
  Ids counts(E);
  cpu::expert_counts(counts.data(), ids.data(), N, k, E);
  REQUIRE(offsets[0] == 0);
  REQUIRE(offsets[E] == n);
  for (int e = 0; e < E; ++e) {
    CHECK(offsets[e + 1] - offsets[e] == counts[e]);
    for (int r = offsets[e]; r < offsets[e + 1]; ++r) {
      CHECK(ids[row_slot[r]] == e);                                      // the right expert
      if (r > offsets[e]) CHECK(row_slot[r - 1] / k < row_slot[r] / k);  // token order, stable
    }
  }
  std::vector<char> seen(n, 0);
  for (int r = 0; r < n; ++r) {
    REQUIRE(row_slot[r] >= 0);
    REQUIRE(row_slot[r] < n);
    seen[row_slot[r]] = 1;
    CHECK(slot_row[row_slot[r]] == r);  // inverse permutations
  }
  CHECK(std::count(seen.begin(), seen.end(), 1) == n);
  for (int slot = 0; slot < n; ++slot) CHECK(row_slot[slot_row[slot]] == slot);
}

}  // namespace

TEST_CASE("dispatch_plan: offsets, (expert, token) order, inverse permutations", "[dispatch]") {
  const int E = 96;
  SECTION("random routing, k = 1 and k = 2, many empty experts") {
    for (int k : {1, 2}) {
      const int N = 40;
      const Ids ids = random_ids(N, k, E, 45 + k);
      Ids counts(E);
      cpu::expert_counts(counts.data(), ids.data(), N, k, E);
      CHECK(std::count(counts.begin(), counts.end(), 0) > 0);
      check_plan(ids, N, k, E);
    }
    check_plan(random_ids(1000, 2, E, 47), 1000, 2, E);
  }
  SECTION("one expert receives every token") {
    check_plan(Ids(64, 95), 64, 1, E);
    Ids ids = random_ids(64, 2, E - 1, 48);  // experts 0..94, then expert 95 in one slot per token
    for (int t = 0; t < 64; ++t) ids[size_t(t) * 2 + (t % 2)] = 95;
    check_plan(ids, 64, 2, E);
    Ids offsets(E + 1), row_slot(128), slot_row(128);
    cpu::dispatch_plan(offsets.data(), row_slot.data(), slot_row.data(), ids.data(), 64, 2, E);
    CHECK(offsets[E] - offsets[E - 1] == 64);
  }
  SECTION("hand-checked example") {
    // tokens: 0 → (2, 0), 1 → (0, 1), 2 → (2, 1); E = 3
    const Ids ids = {2, 0, 0, 1, 2, 1};
    Ids offsets(4), row_slot(6), slot_row(6);
    cpu::dispatch_plan(offsets.data(), row_slot.data(), slot_row.data(), ids.data(), 3, 2, 3);
    CHECK(offsets == Ids{0, 2, 4, 6});
    CHECK(row_slot == Ids{1, 2, 3, 5, 0, 4});
    CHECK(slot_row == Ids{4, 0, 1, 2, 5, 3});
  }
  SECTION("bad ids throw") {
    const Ids ids = {0, -1};
    Ids offsets(E + 1), row_slot(2), slot_row(2);
    CHECK_THROWS(
        cpu::dispatch_plan(offsets.data(), row_slot.data(), slot_row.data(), ids.data(), 1, 2, E));
  }
}

TEST_CASE("gather_rows and sum_slot_rows are each other's adjoint", "[dispatch]") {
  const int N = 9, k = 2, E = 5, d = 7;
  const Ids ids = random_ids(N, k, E, 49);
  Ids offsets(E + 1), row_slot(N * k), slot_row(N * k);
  cpu::dispatch_plan(offsets.data(), row_slot.data(), slot_row.data(), ids.data(), N, k, E);

  Vec x = random_vector(size_t(N) * d, 50);
  Vec Y = random_vector(size_t(N) * k * d, 51);
  Vec gx(Y.size()), sy(x.size());
  cpu::gather_rows(gx.data(), x.data(), row_slot.data(), N, k, d);
  cpu::sum_slot_rows(sy.data(), Y.data(), slot_row.data(), N, k, d, false);
  for (int r = 0; r < N * k; ++r) {
    for (int i = 0; i < d; ++i) CHECK(gx[size_t(r) * d + i] == x[size_t(row_slot[r] / k) * d + i]);
  }
  CHECK(weighted_sum(gx, Y) == Approx(weighted_sum(x, sy)).epsilon(1e-14));

  // Slot order, accumulate and overwrite, bitwise.
  Vec acc = random_vector(x.size(), 52), acc0 = acc;
  cpu::sum_slot_rows(acc.data(), Y.data(), slot_row.data(), N, k, d, true);
  for (int t = 0; t < N; ++t) {
    for (int i = 0; i < d; ++i) {
      const double y0 = Y[size_t(slot_row[t * k]) * d + i],
                   y1 = Y[size_t(slot_row[t * k + 1]) * d + i];
      CHECK(acc[size_t(t) * d + i] == (acc0[size_t(t) * d + i] + y0) + y1);
      CHECK(sy[size_t(t) * d + i] == y0 + y1);
    }
  }

  // Finite differences, each way.
  const Vec Rg = random_vector(Y.size(), 53), Rs = random_vector(x.size(), 54);
  Vec dx(x.size()), dY(Y.size());
  cpu::sum_slot_rows(dx.data(), Rg.data(), slot_row.data(), N, k, d, false);
  cpu::gather_rows(dY.data(), Rs.data(), row_slot.data(), N, k, d);
  check_gradient(
      [&] {
        cpu::gather_rows(gx.data(), x.data(), row_slot.data(), N, k, d);
        return weighted_sum(gx, Rg);
      },
      x, dx, "d src (gather_rows)");
  check_gradient(
      [&] {
        cpu::sum_slot_rows(sy.data(), Y.data(), slot_row.data(), N, k, d, false);
        return weighted_sum(sy, Rs);
      },
      Y, dY, "d src (sum_slot_rows)");
}

TEST_CASE("slot/row value permutations are inverse", "[dispatch]") {
  const int N = 13, k = 2, E = 4;
  const Ids ids = random_ids(N, k, E, 55);
  Ids offsets(E + 1), row_slot(N * k), slot_row(N * k);
  cpu::dispatch_plan(offsets.data(), row_slot.data(), slot_row.data(), ids.data(), N, k, E);
  const Vec slot_vals = random_vector(size_t(N) * k, 56);
  Vec row_vals(slot_vals.size()), back(slot_vals.size());
  cpu::slot_to_row_values(row_vals.data(), slot_vals.data(), row_slot.data(), N * k);
  for (int r = 0; r < N * k; ++r) CHECK(row_vals[r] == slot_vals[row_slot[r]]);
  cpu::row_to_slot_values(back.data(), row_vals.data(), row_slot.data(), N * k);
  CHECK(back == slot_vals);
}

TEST_CASE("'=' outputs of the dispatch ops are fully overwritten", "[dispatch]") {
  const int N = 41, E = 12, k = 2, d = 9;
  const Ids ids = random_ids(N, k, E, 59);
  Ids offsets(E + 1, -1), row_slot(N * k, -1), slot_row(N * k, -1);
  cpu::dispatch_plan(offsets.data(), row_slot.data(), slot_row.data(), ids.data(), N, k, E);
  CHECK(std::all_of(offsets.begin(), offsets.end(), [](int32_t v) { return v >= 0; }));
  CHECK(std::all_of(row_slot.begin(), row_slot.end(), [](int32_t v) { return v >= 0; }));
  CHECK(std::all_of(slot_row.begin(), slot_row.end(), [](int32_t v) { return v >= 0; }));

  const std::vector<float> x = to_float(random_vector(size_t(N) * d, 60));
  auto gx = nan_vector<float>(size_t(N) * k * d);
  cpu::gather_rows(gx.data(), x.data(), row_slot.data(), N, k, d);
  CHECK(all_finite(gx));
  auto sy = nan_vector<float>(size_t(N) * d);
  cpu::sum_slot_rows(sy.data(), gx.data(), slot_row.data(), N, k, d, false);
  CHECK(all_finite(sy));

  const std::vector<float> vals = to_float(random_vector(size_t(N) * k, 61));
  auto rv = nan_vector<float>(vals.size()), sv = nan_vector<float>(vals.size());
  cpu::slot_to_row_values(rv.data(), vals.data(), row_slot.data(), N * k);
  cpu::row_to_slot_values(sv.data(), rv.data(), row_slot.data(), N * k);
  CHECK(all_finite(rv));
  CHECK(all_finite(sv));
}

