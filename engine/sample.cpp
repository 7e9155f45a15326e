// `unipool sample` (engine/sample.h): a checkpoint's weights in the KV-cached generator, a seeded
// sampler, and the tokenizer that turns the prompt into ids and the ids back into text.
#include "engine/sample.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>

#include "base/clock.h"
#include "base/error.h"
#include "data/tokenize.h"
#include "engine/backends.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/lock.h"
#include "engine/text_codec.h"
#include "model/generator.h"
#include "model/layout.h"

namespace unipool {

namespace {

// The samples, printed as they are drawn, on backend B.
template <class B>
std::vector<std::string> sample_on(const Layout& layout, const std::vector<float>& params,
                                   const LockRouting& lock, const std::vector<int32_t>& prompt,
                                   const TextCodec& codec, const SampleOptions& o) {
  GeneratorOn<B> generator(layout, params.data(), lock);
  Sampler sampler(o.seed);
  std::vector<std::string> texts;
  double total_seconds = 0;
  int64_t total_tokens = 0;
  for (int s = 0; s < o.samples; ++s) {
    std::printf("--- sample %d/%d\n%s", s + 1, o.samples, o.prompt.c_str());
    std::fflush(stdout);
    std::string text = o.prompt;
    const Stopwatch time;
    generate(generator, sampler, prompt, o.tokens, o.temperature, o.top_k, [&](int32_t id) {
      const std::string piece = codec.decode(id);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      text += piece;
    });
    total_seconds += time.seconds();
    total_tokens += o.tokens;
    std::printf("\n");
    texts.push_back(std::move(text));
  }
  std::printf("---\n%lld tokens in %.2f s | %.1f tok/s | %.2f ms/token (prompt %zu tokens)\n",
              static_cast<long long>(total_tokens), total_seconds,
              total_tokens / std::max(total_seconds, 1e-9),
              1e3 * total_seconds / std::max<int64_t>(total_tokens, 1), prompt.size());
  std::fflush(stdout);
  return texts;
}

}  // namespace

std::vector<std::string> run_sample(const SampleOptions& o) {
  check(o.tokens >= 0, "--tokens: must be >= 0");
  check(o.samples >= 1, "--samples: must be >= 1");
  check(std::isfinite(o.temperature) && o.temperature >= 0,
        "--temperature: must be >= 0 (0 = greedy)");
  check(o.top_k >= 0, "--top-k: must be >= 0 (0 = the whole vocabulary)");
  check(o.threads >= 0, "--threads: must be >= 0 (0 = the checkpoint's train.threads)");
  const OpenedCheckpoint ck = open_checkpoint(o.checkpoint, o.overrides, /*check_data=*/false);
  const Config& c = ck.config;
  struct ThreadCount {  // the caller's CPU thread count, restored at the end
    const int saved = omp_get_max_threads();
    ~ThreadCount() { omp_set_num_threads(saved); }
  } thread_count;
  // train.backend (the GPU when there is one) and train.threads; --threads overrides the latter.
  const BackendKind backend = select_backend(c);
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const TextCodec codec = make_codec(o.tokenizer, c.model);

  std::vector<int32_t> prompt = codec.encode(o.prompt);
  if (prompt.empty()) prompt.push_back(codec.eod);  // an empty prompt starts a new document
  check(static_cast<int>(prompt.size()) <= c.model.seq_len,
        "--prompt: " + std::to_string(prompt.size()) + " tokens, more than model.seq_len = " +
            std::to_string(c.model.seq_len) + " (the model's context)");

  const Layout layout = make_layout(c.model);
  std::vector<float> params(layout.arena_size, 0.0f);
  load_weights(ck.dir + "/model.safetensors", layout, params.data());
  const LockRouting lock = checkpoint_lock_routing(c, ck.state);  // UniPool-lock's sets

  std::printf(
      "unipool sample | %s (step %d) | %s, %d layers, d %d | %s tokenizer | temperature "
      "%g, top-k %d, seed %llu | %s\n",
      ck.dir.c_str(), ck.step, name_of(c.model.ffn), c.model.n_layer, c.model.d_model,
      codec.name.c_str(), o.temperature, o.top_k, static_cast<unsigned long long>(o.seed),
      backend_banner(backend).c_str());
  if (static_cast<int>(prompt.size()) + o.tokens > c.model.seq_len) {
    std::printf(
        "note: prompt + tokens exceed model.seq_len = %d; the context window slides (the "
        "last %d tokens are re-read when it is full)\n",
        c.model.seq_len, c.model.seq_len / 2);
  }
  std::fflush(stdout);
  return on_backend(backend, [&](auto b) {
    using B = typename decltype(b)::type;
    check_memory(memory_need<B>(c, layout, Workload::sample), c, backend, "unipool sample");
    return sample_on<B>(layout, params, lock, prompt, codec, o);
  });
}

}  // namespace unipool
