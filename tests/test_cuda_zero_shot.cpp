// Zero-shot scoring on the GPU: the target_is_argmax op (kernels/cuda/crossentropy.cu) against the
// CPU op on the same bf16-rounded logits (exact: both compare the same values), and Model::score
// on the GPU against the GPU's own forward + token_losses and against the CPU model's score.
// Without a device (or without nvcc) the tests skip.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "tests/catch.h"
#include "tests/cuda_test_util.h"

#ifdef UNIPOOL_HAVE_CUDA
#include "kernels/cpu/ops.h"
#include "model/init.h"
#include "model/layout.h"
#include "model/model.h"

namespace {

namespace cuda = unipool::cuda;
namespace cpu = unipool::cpu;
using namespace unipool;
using namespace unipool::test;

}  // namespace

TEST_CASE("cuda target_is_argmax equals the CPU op, ties and padding included", "[cuda][tasks]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  const int rows = 61, V = 1000, ld = 1024;
  FVec logits = bf16_values(size_t(rows) * ld, 11, 4.0);
  std::mt19937 gen(3);
  std::vector<int32_t> targets(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    float* x = logits.data() + int64_t(r) * ld;
    float top = x[0];
    int arg = 0;
    for (int i = 1; i < V; ++i)
      if (x[i] > top) top = x[i], arg = i;
    for (int i = V; i < ld; ++i) x[i] = 100.f;  // padding: never a token
    const int t = int(gen() % uint32_t(V));
    switch (r % 4) {
      case 0:
        targets[size_t(r)] = arg;
        break;  // greedy
      case 1:   // tied with a column on its left: not greedy
        targets[size_t(r)] = std::max(t, 1);
        x[targets[size_t(r)]] = top;
        x[targets[size_t(r)] - 1] = top;
        break;
      case 2:  // tied with a column on its right: greedy
        targets[size_t(r)] = std::min(t, V - 2);
        x[targets[size_t(r)]] = top + 1;
        x[targets[size_t(r)] + 1] = top + 1;
        break;
      default:
        targets[size_t(r)] = t;  // usually not greedy
    }
  }
  logits = round_to_bf16(logits);  // top + 1 as bf16 (equal values stay equal)
  std::vector<int32_t> want(static_cast<size_t>(rows));
  cpu::target_is_argmax(want.data(), logits.data(), targets.data(), rows, V, ld);
  DeviceBuffer<bf16> d_logits = upload_bf16(logits);
  DeviceBuffer<int32_t> d_targets(targets), d_greedy = poisoned_ints(size_t(rows));
  cuda::target_is_argmax(d_greedy.data(), d_logits.data(), d_targets.data(), rows, V, ld);
  CHECK(d_greedy.to_host() == want);
  for (int r = 0; r < 3; ++r) CHECK(want[size_t(r)] == (r == 1 ? 0 : 1));
}

TEST_CASE("cuda Model::score equals the forward's token losses and the CPU model's score",
          "[cuda][tasks]") {
  UNIPOOL_SKIP_WITHOUT_GPU();
  ModelConfig m;
  m.vocab_size = 300;
  m.vocab_multiple = 64;
  m.seq_len = 16;
  m.n_layer = 2;
  m.d_model = 64;
  m.n_head = 2;
  m.n_kv_head = 1;
  m.ffn_hidden = 96;
  m.ffn = FfnKind::dense;
  const Layout layout = make_layout(m);
  std::vector<float> weights(layout.arena_size);
  init_parameters(layout, weights.data(), 5);
  const int B = 3, T = 16, N = B * T;
  std::mt19937 gen(9);
  std::vector<int32_t> inputs(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
  for (int i = 0; i < N; ++i) {
    inputs[size_t(i)] = int32_t(gen() % 300);
    targets[size_t(i)] = int32_t(gen() % 300);
  }
  const std::vector<int32_t> positions = {0, 5, 15, 16, 17, 30, 33, 46, 47};
  std::vector<int32_t> chosen;
  for (int32_t p : positions) chosen.push_back(targets[size_t(p)]);
  const int n = int(positions.size());

  Model<CudaBackend> gpu(layout, LossConfig{}, B, T);
  gpu.params_from_host(weights.data());
  gpu.forward(inputs.data(), targets.data(), /*train=*/false);
  const std::vector<float> all = gpu.token_losses();
  std::vector<float> losses(static_cast<size_t>(n)), cpu_losses(static_cast<size_t>(n));
  std::vector<int32_t> greedy(static_cast<size_t>(n)), cpu_greedy(static_cast<size_t>(n));
  gpu.score(inputs.data(), positions.data(), chosen.data(), n, losses.data(), greedy.data());
  CpuModel<float> host(layout, LossConfig{}, B, T);
  host.params_from_host(weights.data());
  host.score(inputs.data(), positions.data(), chosen.data(), n, cpu_losses.data(),
             cpu_greedy.data());
  for (int i = 0; i < n; ++i) {
    INFO("position " << positions[size_t(i)]);
    CHECK(losses[size_t(i)] == Approx(all[size_t(positions[size_t(i)])]).margin(2e-2));
    CHECK(losses[size_t(i)] == Approx(cpu_losses[size_t(i)]).margin(5e-2));
    CHECK((greedy[size_t(i)] == 0 || greedy[size_t(i)] == 1));
  }
}

#endif
