// `unipool eval` and `unipool sample` (engine/evaluate.h).
#include "engine/evaluate.h"

#include "engine/backends.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/tokenize.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "base/error.h"
#include "base/fsutil.h"
#include "engine/train.h"
#include "model/generator.h"
#include "model/layout.h"
#include "model/model.h"

#if __has_include("data/gpt2_tokenizer.h")
#include "data/gpt2_tokenizer.h"
#define UNIPOOL_HAVE_GPT2_TOKENIZER 1
#endif

namespace unipool {

namespace {

// The ckpt-STEP directory named by `path`: the directory itself when it holds state.json, else the
// newest checkpoint of a run directory.
std::string resolve_checkpoint(const std::string& path) {
  check(!path.empty(), "--checkpoint: no checkpoint given");
  check(path_exists(path), "checkpoint '" + path + "' does not exist");
  if (path_exists(path + "/state.json")) return path;
  const std::string latest = latest_checkpoint(path);
  check(!latest.empty(), "'" + path +
                             "' is not a checkpoint (no state.json) and holds no ckpt-STEP "
                             "checkpoint");
  return latest;
}

struct LoadedCheckpoint {
  std::string dir;
  int step = -1;
  Config config;
};

// state.json's config (+ overrides), validated.
LoadedCheckpoint read_checkpoint(const std::string& path, const std::vector<std::string>& overrides,
                                 bool check_data) {
  LoadedCheckpoint ck;
  ck.dir = resolve_checkpoint(path);
  const nlohmann::json state = read_checkpoint_state(ck.dir);
  ck.step = state["step"].get<int>();
  ck.config = checkpoint_config(ck.dir, state, overrides, check_data);
  check(path_exists(ck.dir + "/model.safetensors"),
        "checkpoint '" + ck.dir + "' has no model.safetensors");
  return ck;
}

void set_threads(const Config& c) {
  if (c.train.threads > 0) omp_set_num_threads(c.train.threads);
}

data::Split parse_split_name(const std::string& s) {
  if (s == "valid") return data::Split::valid;
  if (s == "test") return data::Split::test;
  if (s == "train") return data::Split::train;
  throw Error("--split: '" + s + "' is not one of valid, test, train");
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

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

// Σ over `batches` micro-batches of the mean LM loss (like TrainerOn::evaluate: the caller divides
// by batches), with the checkpoint's weights on backend B.
template <class B>
double evaluation_sum(const Layout& layout, const Config& c, const std::string& dir,
                      data::Loader& loader, int batches) {
  const int Bsz = c.train.micro_batch, T = c.model.seq_len;
  Model<B> model(layout, c.loss, Bsz, T);
  std::vector<float> weights(layout.arena_size);
  load_weights(dir + "/model.safetensors", layout, weights.data());
  model.params_from_host(weights.data());
  std::vector<int32_t> inputs(static_cast<size_t>(Bsz) * T), targets(inputs.size());
  double sum = 0;
  for (int b = 0; b < batches; ++b) {
    loader.next_batch(Bsz, inputs.data(), targets.data());
    sum += model.forward(inputs.data(), targets.data(), /*train=*/false).lm;
  }
  return sum;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// eval

EvalResult run_eval(const EvalOptions& o) {
  const data::Split split = parse_split_name(o.split);
  check(o.batches >= 0, "--batches: must be >= 0 (0 = train.eval_batches)");
  const LoadedCheckpoint ck = read_checkpoint(o.checkpoint, o.overrides, /*check_data=*/true);
  const Config& c = ck.config;
  set_threads(c);
  const int batches = o.batches > 0 ? o.batches : c.train.eval_batches;
  check(batches >= 1, "--batches: train.eval_batches is 0; give --batches N");

  // The same loader as the training loop's validation (engine/train.cpp), from its first sample.
  data::LoaderSpec spec;
  spec.blend = c.data.train;
  spec.format = data::parse_shard_format(c.data.format);
  spec.split = c.data.split;
  spec.seq_len = c.model.seq_len;
  spec.vocab_size = c.model.vocab_size;
  spec.seed = c.train.seed;
  data::Loader loader(spec, split);

  const Layout layout = make_layout(c.model);
  const int B = c.train.micro_batch, T = c.model.seq_len;
  const BackendKind backend = select_backend(c);  // train.backend: the GPU when there is one
  std::printf(
      "unipool eval | %s (step %d) | %s, %d layers, d %d | %s split, %d batches of %d x %d "
      "tokens | %s\n",
      ck.dir.c_str(), ck.step, name_of(c.model.ffn), c.model.n_layer, c.model.d_model,
      data::split_name(split), batches, B, T, backend_banner(backend).c_str());
  std::fflush(stdout);

  const auto t0 = Clock::now();
  const double sum = on_backend(backend, [&](auto b) {
    return evaluation_sum<typename decltype(b)::type>(layout, c, ck.dir, loader, batches);
  });
  EvalResult r;
  r.checkpoint = ck.dir;
  r.loss = sum / batches;
  r.tokens = static_cast<int64_t>(batches) * B * T;
  const char* label = split == data::Split::valid ? "val" : data::split_name(split);
  std::printf("%s loss %.4f | ppl %.2f | %lld tokens | %.1f s\n", label, r.loss, std::exp(r.loss),
              static_cast<long long>(r.tokens), seconds_since(t0));
  std::fflush(stdout);
  return r;
}

// ---------------------------------------------------------------------------------------------
// sample

std::vector<std::string> run_sample(const SampleOptions& o) {
  check(o.tokens >= 0, "--tokens: must be >= 0");
  check(o.samples >= 1, "--samples: must be >= 1");
  check(std::isfinite(o.temperature) && o.temperature >= 0,
        "--temperature: must be >= 0 (0 = greedy)");
  check(o.top_k >= 0, "--top-k: must be >= 0 (0 = the whole vocabulary)");
  const LoadedCheckpoint ck = read_checkpoint(o.checkpoint, {}, /*check_data=*/false);
  const Config& c = ck.config;
  set_threads(c);
  const TextCodec codec = make_codec(o.tokenizer, c.model);

  std::vector<int32_t> prompt = codec.encode(o.prompt);
  if (prompt.empty()) prompt.push_back(codec.eod);  // an empty prompt starts a new document
  check(static_cast<int>(prompt.size()) <= c.model.seq_len,
        "--prompt: " + std::to_string(prompt.size()) + " tokens, more than model.seq_len = " +
            std::to_string(c.model.seq_len) + " (the model's context)");

  const Layout layout = make_layout(c.model);
  std::vector<float> params(layout.arena_size, 0.0f);
  load_weights(ck.dir + "/model.safetensors", layout, params.data());
  Generator generator(layout, params.data());
  Sampler sampler(o.seed);

  std::printf(
      "unipool sample | %s (step %d) | %s, %d layers, d %d | %s tokenizer | temperature "
      "%g, top-k %d, seed %llu | %d threads\n",
      ck.dir.c_str(), ck.step, name_of(c.model.ffn), c.model.n_layer, c.model.d_model,
      codec.name.c_str(), o.temperature, o.top_k, static_cast<unsigned long long>(o.seed),
      omp_get_max_threads());
  if (static_cast<int>(prompt.size()) + o.tokens > c.model.seq_len) {
    std::printf(
        "note: prompt + tokens exceed model.seq_len = %d; the context window slides (the "
        "last %d tokens are re-read when it is full)\n",
        c.model.seq_len, c.model.seq_len / 2);
  }
  std::fflush(stdout);

  std::vector<std::string> texts;
  double total_seconds = 0;
  int64_t total_tokens = 0;
  for (int s = 0; s < o.samples; ++s) {
    std::printf("--- sample %d/%d\n%s", s + 1, o.samples, o.prompt.c_str());
    std::fflush(stdout);
    std::string text = o.prompt;
    const auto t0 = Clock::now();
    generate(generator, sampler, prompt, o.tokens, o.temperature, o.top_k, [&](int32_t id) {
      const std::string piece = codec.decode(id);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      text += piece;
    });
    total_seconds += seconds_since(t0);
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

}  // namespace unipool
