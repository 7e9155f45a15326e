// `unipool eval` (engine/eval.h): a checkpoint's weights, the training loop's validation loader,
// the mean LM loss.
#include "engine/eval.h"

#include <cmath>
#include <cstdio>

#include "base/clock.h"
#include "base/error.h"
#include "data/loader.h"
#include "engine/backends.h"
#include "engine/checkpoint.h"
#include "engine/lock.h"
#include "engine/train.h"
#include "model/layout.h"
#include "model/model.h"

namespace unipool {

namespace {

data::Split parse_split_name(const std::string& s) {
  if (s == "valid") return data::Split::valid;
  if (s == "test") return data::Split::test;
  if (s == "train") return data::Split::train;
  throw Error("--split: '" + s + "' is not one of valid, test, train");
}

// Σ over `batches` micro-batches of the mean LM loss (like TrainerOn::evaluate: the caller divides
// by batches), with the checkpoint's weights on backend B.
template <class B>
double evaluation_sum(const Layout& layout, const Config& c, const OpenedCheckpoint& ck,
                      data::Loader& loader, int batches) {
  const int Bsz = c.train.micro_batch, T = c.model.seq_len;
  Model<B> model(layout, c.loss, Bsz, T);
  std::vector<float> weights(layout.arena_size);
  load_weights(ck.dir + "/model.safetensors", layout, weights.data());
  model.params_from_host(weights.data());
  const LockRouting lock = checkpoint_lock_routing(c, ck.state);  // UniPool-lock's sets
  if (!lock.sets.empty()) model.set_lock_routing(lock);
  std::vector<int32_t> inputs(static_cast<size_t>(Bsz) * T), targets(inputs.size());
  double sum = 0;
  for (int b = 0; b < batches; ++b) {
    loader.next_batch(Bsz, inputs.data(), targets.data());
    sum += model.forward(inputs.data(), targets.data(), /*train=*/false).lm;
  }
  return sum;
}

}  // namespace

EvalResult run_eval(const EvalOptions& o) {
  const data::Split split = parse_split_name(o.split);
  check(o.batches >= 0, "--batches: must be >= 0 (0 = train.eval_batches)");
  const OpenedCheckpoint ck = open_checkpoint(o.checkpoint, o.overrides, /*check_data=*/true);
  const Config& c = ck.config;
  const BackendKind backend = select_backend(c);  // train.backend: the GPU when there is one
  const int batches = o.batches > 0 ? o.batches : c.train.eval_batches;
  check(batches >= 1, "--batches: train.eval_batches is 0; give --batches N");

  // The data, from its first sample: the training loop's validation loader (engine/train.cpp:
  // data.valid, or the valid part of data.train's split), another part of the split, or any
  // token file given with --data (whole, in order).
  data::LoaderSpec spec = split == data::Split::valid ? validation_spec(c) : loader_spec(c);
  std::string source = split == data::Split::valid && !c.data.valid.empty()
                           ? "data.valid"
                           : std::string(data::split_name(split)) + " split";
  if (!o.data.empty()) {
    check(o.split == "valid", "--data PREFIX is read whole: it does not take --split");
    const std::string missing = missing_token_file(o.data, c.data.format);
    check(missing.empty(), "--data: '" + o.data + "' is not a token file (no " + missing +
                               ", data.format " + c.data.format +
                               "); a zero-shot task's file goes with --task NAME");
    spec.blend = {{1.0, o.data}};
    spec.whole_files = true;
    source = o.data;
  }
  data::Loader loader(spec, split);
  const Layout layout = make_layout(c.model);
  const int B = c.train.micro_batch, T = c.model.seq_len;
  std::printf(
      "unipool eval | %s (step %d) | %s, %d layers, d %d | %s, %d batches of %d x %d tokens | "
      "%s\n",
      ck.dir.c_str(), ck.step, name_of(c.model.ffn), c.model.n_layer, c.model.d_model,
      source.c_str(), batches, B, T, backend_banner(backend).c_str());
  std::fflush(stdout);

  const Stopwatch time;
  const double sum = on_backend(backend, [&](auto b) {
    using B = typename decltype(b)::type;
    check_memory(memory_need<B>(c, layout, Workload::eval), c, backend, "unipool eval");
    return evaluation_sum<B>(layout, c, ck, loader, batches);
  });
  EvalResult r;
  r.checkpoint = ck.dir;
  r.loss = sum / batches;
  r.tokens = static_cast<int64_t>(batches) * B * T;
  const char* label = split == data::Split::valid ? "val" : data::split_name(split);
  std::printf("%s loss %.4f | ppl %.2f | %lld tokens | %.1f s\n", label, r.loss, std::exp(r.loss),
              static_cast<long long>(r.tokens), time.seconds());
  std::fflush(stdout);
  return r;
}

}  // namespace unipool
