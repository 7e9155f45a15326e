// CUDA MoE dispatch (kernels/cuda/dispatch.cu) against the CPU oracle (kernels/cpu/dispatch.h).
// Without a device the tests skip.
//
// Everything here is exact, so every comparison is bitwise:
//   - dispatch_plan is integer work: offsets, row_slot and slot_row must equal the CPU's stable
//     counting sort element for element (uniform routing, one expert receiving every slot, experts
//     with no slots, N·k from 1 to 65536·4, not multiples of the 1024-slot chunks, E = 8, 96, 128,
//     1024, k = 1, 2, 4, N = 0);
//   - gather_rows and the value permutations are copies;
//   - sum_slot_rows adds the bf16 values in fp32 in slot order and rounds once, which is exactly
//     the CPU op on the same (bf16) values in float followed by one rounding to bf16.
// "=" outputs are poisoned before each call; each op runs twice and must give the same bits.
#include <algorithm>
#include <cstdint>
#include <cstring>
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

struct Plan {
  Ids offsets, row_slot, slot_row;
};

Plan cpu_plan(const Ids& ids, int N, int k, int E) {
  Plan p{Ids(size_t(E) + 1), Ids(ids.size()), Ids(ids.size())};
  cpu::dispatch_plan(p.offsets.data(), p.row_slot.data(), p.slot_row.data(), ids.data(), N, k, E);
  return p;
}

// Runs the device plan twice (poisoned outputs each time), checks the two runs are equal and
// returns the first.
Plan gpu_plan(const Ids& ids, int N, int k, int E) {
  DeviceBuffer<int32_t> d_ids(ids.empty() ? Ids{0} : ids);
  Plan first;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<int32_t> d_offsets = poisoned_ints(size_t(E) + 1);
    DeviceBuffer<int32_t> d_row_slot = poisoned_ints(std::max<size_t>(ids.size(), 1));
    DeviceBuffer<int32_t> d_slot_row = poisoned_ints(std::max<size_t>(ids.size(), 1));
    cuda::dispatch_plan(d_offsets.data(), d_row_slot.data(), d_slot_row.data(), d_ids.data(), N, k,
                        E);
    Plan p{d_offsets.to_host(), d_row_slot.to_host(), d_slot_row.to_host()};
    p.row_slot.resize(ids.size());
    p.slot_row.resize(ids.size());
    if (run == 0) {
      first = p;
    } else {
      CHECK(p.offsets == first.offsets);
      CHECK(p.row_slot == first.row_slot);
      CHECK(p.slot_row == first.slot_row);
    }
  }
  return first;
}

void check_plan_equal(const Ids& ids, int N, int k, int E) {
  const Plan want = cpu_plan(ids, N, k, E);
  const Plan got = gpu_plan(ids, N, k, E);
  CHECK(count_mismatches(got.offsets, want.offsets, "offsets") == 0);
  CHECK(count_mismatches(got.row_slot, want.row_slot, "row_slot") == 0);
  CHECK(count_mismatches(got.slot_row, want.slot_row, "slot_row") == 0);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
TEST_CASE("cuda dispatch: dispatch_plan equals the CPU's stable counting sort", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  SECTION("uniform random routing") {
    struct Case {
      int N, k, E;
    };
    const Case cases[] = {{1, 1, 8},     {1, 2, 96},      {37, 2, 8},     {1000, 1, 96},
                          {1000, 2, 96}, {1000, 4, 96},   {513, 2, 8},    {4099, 4, 8},
                          {5000, 2, 96}, {16384, 2, 128}, {65536, 4, 96}, {3000, 2, 1024}};
    for (const Case& c : cases) {
      INFO("N " << c.N << " k " << c.k << " E " << c.E);
      check_plan_equal(random_ids(c.N, c.k, c.E, 201u + uint32_t(c.N + c.k + c.E)), c.N, c.k, c.E);
    }
  }
  SECTION("one expert receives every slot") {
    for (int E : {8, 96}) {
      for (int k : {1, 2, 4}) {
        for (int e : {0, E - 1}) {
          INFO("E " << E << " k " << k << " expert " << e);
          const int N = 3001;  // 3001·k slots: several chunks, the last one partial
          check_plan_equal(Ids(size_t(N) * k, e), N, k, E);
        }
      }
    }
    // One expert in one slot of every token, the other slot uniform (E = 96, k = 2).
    Ids ids = random_ids(2500, 2, 95, 202);
    for (int t = 0; t < 2500; ++t) ids[size_t(t) * 2 + (t % 2)] = 95;
    check_plan_equal(ids, 2500, 2, 96);
  }
  SECTION("experts with no slots") {
    for (int k : {1, 2, 4}) {
      INFO("k " << k);
      check_plan_equal(random_ids(2100, k, 5, 203u + uint32_t(k)), 2100, k, 96);  // 91 empty
      // Only odd experts.
      Ids ids = random_ids(1500, k, 48, 204u + uint32_t(k));
      for (int32_t& e : ids) e = 2 * e + 1;
      check_plan_equal(ids, 1500, k, 96);
    }
  }
  SECTION("no tokens") {
    const Plan got = gpu_plan(Ids{}, 0, 2, 96);
    CHECK(got.offsets == Ids(97, 0));
  }
  SECTION("limits") {
    DeviceBuffer<int32_t> d(16);
    CHECK_THROWS(cuda::dispatch_plan(d.data(), d.data(), d.data(), d.data(), 1, 1, 100000));
    CHECK_THROWS(cuda::dispatch_plan(d.data(), d.data(), d.data(), d.data(), 1, 1, 0));
  }
}

// ---------------------------------------------------------------------------------------------------
TEST_CASE("cuda dispatch: gather_rows and sum_slot_rows equal the CPU ops bitwise", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  struct Case {
    int N, k, E, d;
    int offset;  // elements added to the device pointers: 1 defeats the 16-byte vector path
  };
  const Case cases[] = {{37, 1, 8, 768, 0},   {37, 2, 8, 768, 0},   {301, 4, 96, 256, 0},
                        {1, 2, 96, 64, 0},    {300, 2, 96, 100, 0}, {45, 4, 8, 8, 0},
                        {301, 2, 96, 256, 1}, {50, 1, 8, 3, 0}};
  for (const Case& c : cases) {
    const int N = c.N, k = c.k, E = c.E, d = c.d, n = N * k;
    INFO("N " << N << " k " << k << " E " << E << " d " << d << " offset " << c.offset);
    const Ids ids = random_ids(N, k, E, 211u + uint32_t(N + k + d));
    const Plan plan = cpu_plan(ids, N, k, E);
    DeviceBuffer<int32_t> d_row_slot(plan.row_slot), d_slot_row(plan.slot_row);
    const size_t off = size_t(c.offset);

    // gather: a copy of rows.
    const FVec x = bf16_values(size_t(N) * d, 212u + uint32_t(N));
    FVec xg_ref(size_t(n) * d);
    cpu::gather_rows(xg_ref.data(), x.data(), plan.row_slot.data(), N, k, d);
    DeviceBuffer<bf16> d_x = shifted_copy(to_bf16(x), off);
    FVec first;
    for (int run = 0; run < 2; ++run) {
      DeviceBuffer<bf16> d_xg = poisoned_bf16(size_t(n) * d + off);
      cuda::gather_rows(d_xg.data() + off, d_x.data() + off, d_row_slot.data(), N, k, d);
      const FVec xg = from_bf16(unshift(d_xg.to_host(), off));
      if (run == 0) {
        CHECK(bitwise_equal(xg, xg_ref));
        first = xg;
      } else {
        CHECK(bitwise_equal(xg, first));
      }
    }

    // sum_slot_rows, overwrite and accumulate: the CPU's float sums rounded once to bf16.
    const FVec y = bf16_values(size_t(n) * d, 213u + uint32_t(N), 2.0);
    const FVec acc0 = bf16_values(size_t(N) * d, 214u + uint32_t(N));
    DeviceBuffer<bf16> d_y = shifted_copy(to_bf16(y), off);
    for (bool accumulate : {false, true}) {
      INFO("accumulate " << accumulate);
      FVec out_ref = accumulate ? acc0 : FVec(size_t(N) * d, 0.0f);
      cpu::sum_slot_rows(out_ref.data(), y.data(), plan.slot_row.data(), N, k, d, accumulate);
      out_ref = round_to_bf16(out_ref);
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<bf16> d_out =
            accumulate ? shifted_copy(to_bf16(acc0), off) : poisoned_bf16(size_t(N) * d + off);
        cuda::sum_slot_rows(d_out.data() + off, d_y.data() + off, d_slot_row.data(), N, k, d,
                            accumulate);
        const FVec out = from_bf16(unshift(d_out.to_host(), off));
        if (run == 0) {
          CHECK(bitwise_equal(out, out_ref));
          first = out;
        } else {
          CHECK(bitwise_equal(out, first));
        }
      }
    }
  }
}

TEST_CASE("cuda dispatch: slot_to_row_values and row_to_slot_values equal the CPU ops", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  for (int k : {1, 2, 4}) {
    for (int N : {1, 37, 3001}) {
      const int E = 96, n = N * k;
      INFO("N " << N << " k " << k);
      const Ids ids = random_ids(N, k, E, 221u + uint32_t(N + k));
      const Plan plan = cpu_plan(ids, N, k, E);
      const FVec slot_vals = random_floats(size_t(n), 222u + uint32_t(N));
      FVec row_ref(static_cast<size_t>(n)), back_ref(static_cast<size_t>(n));
      cpu::slot_to_row_values(row_ref.data(), slot_vals.data(), plan.row_slot.data(), n);
      cpu::row_to_slot_values(back_ref.data(), row_ref.data(), plan.row_slot.data(), n);
      DeviceBuffer<int32_t> d_row_slot(plan.row_slot);
      DeviceBuffer<float> d_slot_vals(slot_vals), d_row_ref(row_ref);
      for (int run = 0; run < 2; ++run) {
        DeviceBuffer<float> d_row = poisoned_floats(size_t(n)), d_back = poisoned_floats(size_t(n));
        cuda::slot_to_row_values(d_row.data(), d_slot_vals.data(), d_row_slot.data(), n);
        cuda::row_to_slot_values(d_back.data(), d_row_ref.data(), d_row_slot.data(), n);
        CHECK(bitwise_equal(d_row.to_host(), row_ref));
        CHECK(bitwise_equal(d_back.to_host(), back_ref));
      }
      CHECK(bitwise_equal(back_ref, slot_vals));
    }
  }
}

// The device plan feeds the row moves: a whole dispatch → combine round trip on the device (plan,
// gather, sum with k = 2) equals the CPU's.
TEST_CASE("cuda dispatch: device plan then gather and combine equal the CPU pipeline", "[cuda]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const int N = 2049, k = 2, E = 96, d = 128;
  const Ids ids = random_ids(N, k, E, 231);
  const Plan plan = cpu_plan(ids, N, k, E);
  const FVec x = bf16_values(size_t(N) * d, 232);
  FVec xg(size_t(N) * k * d), out_ref(size_t(N) * d);
  cpu::gather_rows(xg.data(), x.data(), plan.row_slot.data(), N, k, d);
  cpu::sum_slot_rows(out_ref.data(), xg.data(), plan.slot_row.data(), N, k, d, false);
  out_ref = round_to_bf16(out_ref);  // x + x per element: exact in fp32, then rounded

  DeviceBuffer<int32_t> d_ids(ids), d_offsets = poisoned_ints(E + 1),
                                    d_row_slot = poisoned_ints(size_t(N) * k),
                                    d_slot_row = poisoned_ints(size_t(N) * k);
  DeviceBuffer<bf16> d_x = upload_bf16(x), d_xg = poisoned_bf16(size_t(N) * k * d),
                     d_out = poisoned_bf16(size_t(N) * d);
  cuda::dispatch_plan(d_offsets.data(), d_row_slot.data(), d_slot_row.data(), d_ids.data(), N, k,
                      E);
  cuda::gather_rows(d_xg.data(), d_x.data(), d_row_slot.data(), N, k, d);
  cuda::sum_slot_rows(d_out.data(), d_xg.data(), d_slot_row.data(), N, k, d, false);
  CHECK(d_offsets.to_host() == plan.offsets);
  CHECK(bitwise_equal(download(d_xg), xg));
  CHECK(bitwise_equal(download(d_out), out_ref));
}

#endif  // UNIPOOL_HAVE_CUDA
