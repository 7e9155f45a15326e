// unipool: one binary, one subcommand per job. Start reading here, then engine/train.cpp.
#include <cstdio>
#include <new>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "data/tokenize.h"
#include "engine/config.h"
#include "engine/error.h"
#include "engine/train.h"

using namespace unipool;

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
                    "start from these weights (a model.safetensors with SPEC tensor names)");

  // unipool bench --config FILE [--set ...] [--steps N] [--warmup N]
  CLI::App* bench =
      app.add_subcommand("bench", "time training steps on random tokens: tok/s and GFLOP/s");
  BenchOptions bench_options;
  bench->add_option("--config", config_path, "config file or preset name")->required();
  bench->add_option("--set", overrides, "override a config key (repeatable)");
  bench->add_option("--steps", bench_options.steps, "timed steps")->check(CLI::PositiveNumber);
  bench->add_option("--warmup", bench_options.warmup, "untimed steps first")
      ->check(CLI::NonNegativeNumber);

  // unipool tokenize --out PREFIX [--tokenizer bytes] [--doc-separator LINE] INPUT...
  CLI::App* tokenize =
      app.add_subcommand("tokenize", "text files / JSONL → Megatron .bin/.idx token shards");
  data::TokenizeOptions tok;
  tokenize->add_option("--out", tok.out_prefix, "output prefix: writes PREFIX.bin and PREFIX.idx")
      ->required();
  tokenize->add_option("--tokenizer", tok.tokenizer, "bytes (one token per byte, vocabulary 257)");
  tokenize->add_option("--doc-separator", tok.doc_separator,
                       "a line that separates documents inside plain-text files (e.g. %)");
  tokenize->add_option("--shuffle-seed", tok.shuffle_seed, "seed of the document shuffle");
  tokenize
      ->add_option("inputs", tok.inputs,
                   "files or directories (.jsonl: one {\"text\": ...} per line)")
      ->required();

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
      data::run_tokenize(tok);
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
