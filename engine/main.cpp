// unipool: one binary, one subcommand per job. Start reading here, then engine/train.cpp.
#include <omp.h>

#include <cstdio>
#include <new>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "data/inspect.h"
#include "data/tokenize.h"
#include "engine/config.h"
#include "base/error.h"
#include "engine/evaluate.h"
#include "engine/train.h"

using namespace unipool;

namespace unipool {
void run_tokenizer_bench(const std::vector<std::string>& files,
                         int threads);  // tools/bench_tokenizer.cpp
}

int main(int argc, char** argv) {
  CLI::App app{"unipool: pretraining engine for dense, MoE, UniPool and PathMoE language models"};
  app.require_subcommand(1);

  // unipool train --config FILE [--set key=value]... [--resume [DIR]] [--init-from FILE]
  CLI::App* train =
      app.add_subcommand("train", "train a model (config: a JSON file or a preset in configs/)");
  std::string config_path;
  std::vector<std::string> overrides;
  TrainOptions train_options;
  std::string resume_value = "\x01";
  train
      ->add_option("--config", config_path,
                   "config file, or a preset name from configs/ (e.g. tiny)")
      ->required();
  train->add_option("--set", overrides,
                    "override a config key: --set train.steps=100 (repeatable)");
  train
      ->add_option("--resume", resume_value,
                   "continue from a checkpoint directory (alone: the newest in train.out_dir)")
      ->expected(0, 1);
  train->add_option("--init-from", train_options.init_from,
                    "start from these weights (a model.safetensors with the tensor names of docs/run-directory.md)");

  // unipool bench --config FILE [--set ...] [--steps N] [--warmup N]
  CLI::App* bench =
      app.add_subcommand("bench", "time training steps on random tokens: tok/s and GFLOP/s");
  BenchOptions bench_options;
  bench->add_option("--config", config_path, "config file or preset name")->required();
  bench->add_option("--set", overrides, "override a config key (repeatable)");
  bench->add_option("--steps", bench_options.steps, "timed steps")->check(CLI::PositiveNumber);
  bench->add_option("--warmup", bench_options.warmup, "untimed steps first")
      ->check(CLI::NonNegativeNumber);

  // unipool tokenize --out PREFIX [--format megatron|llmc|both] [--tokenizer gpt2|bytes] INPUT...
  CLI::App* tokenize = app.add_subcommand(
      "tokenize", "text files / JSONL → Megatron .bin/.idx and llm.c .bin shards");
  data::TokenizeOptions tok;
  bool no_shuffle = false;
  tokenize
      ->add_option("--out", tok.out_prefix,
                   "output prefix: PREFIX.bin/.idx (megatron), PREFIX_{train,val,test}.bin (llmc)")
      ->required();
  tokenize->add_option("--format", tok.format, "megatron, llmc or both");
  tokenize->add_option("--tokenizer", tok.tokenizer,
                       "gpt2 (GPT-2 BPE, vocabulary 50257) or bytes (vocabulary 257)");
  tokenize->add_option("--tokenizer-dir", tok.tokenizer_dir,
                       "GPT-2 vocabulary files (default data_cache/tokenizer/gpt2)");
  tokenize->add_option("--split", tok.split,
                       "train,valid,test document weights (Megatron's --split)");
  tokenize->add_option("--threads", tok.threads, "encoding threads (0: all cores)")
      ->check(CLI::NonNegativeNumber);
  tokenize->add_option("--doc-separator", tok.doc_separator,
                       "a line that separates documents inside plain-text files (e.g. %)");
  tokenize->add_option("--shuffle-seed", tok.shuffle_seed, "seed of the document shuffle");
  tokenize->add_flag("--no-shuffle", no_shuffle, "keep the input order of the documents");
  tokenize->add_flag("--quiet", tok.quiet, "no progress lines");
  tokenize
      ->add_option("inputs", tok.inputs,
                   "files or directories (.jsonl: one {\"text\": ...} per line)")
      ->required();

  // unipool inspect FILE_OR_PREFIX [--vocab-size N] [-n N]
  CLI::App* inspect = app.add_subcommand(
      "inspect", "validate a token shard, print a summary, decode its first tokens");
  data::InspectOptions insp;
  inspect->add_option("path", insp.path, "a Megatron prefix (or its .bin/.idx) or an llm.c .bin")
      ->required();
  inspect->add_option("--format", insp.format, "auto, megatron or llmc");
  inspect->add_option("--vocab-size", insp.vocab_size, "token ids must be below this (0: 50257)")
      ->check(CLI::NonNegativeNumber);
  inspect->add_option("--decode-tokens,-n", insp.decode_tokens, "how many leading tokens to decode")
      ->check(CLI::NonNegativeNumber);
  inspect->add_option("--tokenizer", insp.tokenizer, "auto, gpt2, bytes or none");
  inspect->add_option("--tokenizer-dir", insp.tokenizer_dir, "GPT-2 vocabulary files");

  // unipool eval --checkpoint DIR [--set key=value]... [--batches N] [--split valid|test|train]
  CLI::App* eval = app.add_subcommand("eval", "validation loss and perplexity of a checkpoint");
  EvalOptions eval_options;
  eval->add_option("--checkpoint", eval_options.checkpoint,
                   "a ckpt-STEP directory, or a run directory (its newest)")
      ->required();
  eval->add_option("--set", eval_options.overrides,
                   "override a key of the checkpoint's config (e.g. data.train)");
  eval->add_option("--batches", eval_options.batches,
                   "micro-batches to evaluate (0: train.eval_batches)")
      ->check(CLI::NonNegativeNumber);
  eval->add_option("--split", eval_options.split, "valid, test or train");

  // unipool sample --checkpoint DIR --prompt TEXT [--tokens N] [--temperature T] [--top-k K]
  // [--seed S]
  CLI::App* sample =
      app.add_subcommand("sample", "generate text from a checkpoint (KV-cached, CPU)");
  SampleOptions sample_options;
  int sample_threads = 1;
  sample
      ->add_option("--checkpoint", sample_options.checkpoint,
                   "a ckpt-STEP directory, or a run directory")
      ->required();
  sample->add_option("--prompt", sample_options.prompt,
                     "the text to continue (empty: start a new document)");
  sample->add_option("--tokens", sample_options.tokens, "new tokens per sample")
      ->check(CLI::PositiveNumber);
  sample->add_option("--temperature", sample_options.temperature, "0 = greedy")
      ->check(CLI::NonNegativeNumber);
  sample
      ->add_option("--top-k", sample_options.top_k,
                   "sample among the k most likely tokens (0 = all)")
      ->check(CLI::NonNegativeNumber);
  sample->add_option("--seed", sample_options.seed, "same seed + same checkpoint = same text");
  sample->add_option("--samples", sample_options.samples, "how many samples")
      ->check(CLI::PositiveNumber);
  sample->add_option("--tokenizer", sample_options.tokenizer, "auto, bytes or gpt2");
  sample
      ->add_option("--threads", sample_threads,
                   "CPU threads (one token at a time: 1 is usually fastest)")
      ->check(CLI::PositiveNumber);

  // unipool bench-tokenizer [--threads N] FILE...   (scripts/bench_tokenizer.sh compares with
  // tiktoken)
  CLI::App* bench_tok =
      app.add_subcommand("bench-tokenizer", "GPT-2 tokenizer speed (MB/s) on text files");
  std::vector<std::string> bench_tok_files;
  int bench_tok_threads = 1;
  bench_tok->add_option("--threads", bench_tok_threads, "encoding threads")
      ->check(CLI::PositiveNumber);
  bench_tok->add_option("files", bench_tok_files, "text files")->required();

  CLI11_PARSE(app, argc, argv);
  try {
    if (train->parsed()) {
      if (train->count("--resume") > 0) {
        train_options.resume = true;
        train_options.resume_dir = resume_value == "\x01" ? "" : resume_value;
      }
      check(!(train_options.resume && !train_options.init_from.empty()),
            "--resume and --init-from cannot be combined (a checkpoint already holds the weights)");
      const Config config =
          load_config(read_config_file(config_path), overrides, /*check_data=*/true);
      run_train(config, train_options);
    } else if (tokenize->parsed()) {
      tok.shuffle = !no_shuffle;
      data::run_tokenize(tok);
    } else if (inspect->parsed()) {
      data::run_inspect(insp);
    } else if (eval->parsed()) {
      run_eval(eval_options);
    } else if (sample->parsed()) {
      omp_set_num_threads(sample_threads);
      run_sample(sample_options);
    } else if (bench_tok->parsed()) {
      run_tokenizer_bench(bench_tok_files, bench_tok_threads);
    } else if (bench->parsed()) {
      const Config config =
          load_config(read_config_file(config_path), overrides, /*check_data=*/false);
      run_bench(config, bench_options);
    }
  } catch (const Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr,
                 "error: out of memory allocating the model, its optimizer state or activations "
                 "(reduce train.micro_batch, model.seq_len or the model size)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
