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
#include "model/generator.h"
#include "model/layout.h"

#if __has_include("data/gpt2_tokenizer.h")
#include "data/gpt2_tokenizer.h"
#define UNIPOOL_HAVE_GPT2_TOKENIZER 1
#endif

namespace unipool {

namespace {

// ---------------------------------------------------------------------------------------------
// Tokenizers for sampling: text → ids for the prompt, one id → its bytes for printing.

struct TextCodec {
  std::string name;
  int32_t eod = 0;
  std::function<std::vector<int32_t>(const std::string&)> encode;
  std::function<std::string(int32_t)> decode;  // one token; EOD as "<|endoftext|>"
};

const char* const kEndOfText = "<|endoftext|>";

TextCodec bytes_codec() {
  TextCodec t;
  t.name = "bytes";
  t.eod = data::kBytesEod;
  t.encode = [](const std::string& text) {
    std::vector<int32_t> ids;
    ids.reserve(text.size());
    for (unsigned char ch : text) ids.push_back(static_cast<int32_t>(ch));
    return ids;
  };
  // Raw bytes, valid UTF-8 or not: a multi-byte character arrives over several tokens.
  t.decode = [](int32_t id) {
    return id == data::kBytesEod ? std::string(kEndOfText) : std::string(1, static_cast<char>(id));
  };
  return t;
}

TextCodec gpt2_codec() {
#ifdef UNIPOOL_HAVE_GPT2_TOKENIZER
  using data::Gpt2Tokenizer;
  auto tok = std::make_shared<Gpt2Tokenizer>(Gpt2Tokenizer::load(Gpt2Tokenizer::default_dir()));
  TextCodec t;
  t.name = "gpt2";
  t.eod = Gpt2Tokenizer::kEot;
  t.encode = [tok](const std::string& text) { return tok->encode(text); };
  t.decode = [tok](int32_t id) {
    return id == Gpt2Tokenizer::kEot ? std::string(kEndOfText) : tok->decode(&id, 1);
  };
  return t;
#else
  throw Error(
      "the GPT-2 tokenizer is not built in (data/gpt2_tokenizer.h is missing in this build); "
      "sampling from a vocab_size 50257 model needs it");
#endif
}

TextCodec make_codec(const std::string& name, const ModelConfig& m) {
  std::string which = name;
  if (which == "auto") {
    if (m.vocab_size == data::kBytesVocab) {
      which = "bytes";
    } else if (m.vocab_size == 50257) {
      which = "gpt2";
    } else {
      throw Error("--tokenizer auto: no tokenizer has model.vocab_size " +
                  std::to_string(m.vocab_size) + " (bytes: 257, gpt2: 50257)");
    }
  }
  if (which == "bytes") {
    check(m.vocab_size == data::kBytesVocab, "--tokenizer bytes: the model's vocab_size is " +
                                                 std::to_string(m.vocab_size) +
                                                 ", the byte tokenizer's 257");
    return bytes_codec();
  }
  if (which == "gpt2") {
    check(m.vocab_size == 50257, "--tokenizer gpt2: the model's vocab_size is " +
                                     std::to_string(m.vocab_size) + ", GPT-2's 50257");
    return gpt2_codec();
  }
  throw Error("--tokenizer: '" + name + "' is not one of auto, bytes, gpt2");
}

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
