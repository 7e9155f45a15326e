// unipool: one binary, one subcommand per job. Each add_*_command below declares one subcommand's
// options and what it runs; main() registers them all and reports errors. Start reading here, then
// engine/train.cpp.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "base/error.h"
#include "data/inspect.h"
#include "data/tokenize.h"
#include "engine/bench.h"
#include "engine/comm.h"
#include "engine/config.h"
#include "engine/eval.h"
#include "engine/plot.h"
#include "engine/presets.h"
#include "engine/probe.h"
#include "engine/sample.h"
#include "engine/train.h"
#include "engine/zero_shot.h"
#include "unipool_version.h"  // generated at build time: UNIPOOL_VERSION, UNIPOOL_COMMIT

using namespace unipool;

namespace {

// A subcommand's options live as long as the app: the callback that runs it holds them.
template <class Options>
std::shared_ptr<Options> options_for(CLI::App* command, void (*run)(Options&)) {
  auto options = std::make_shared<Options>();
  command->callback([options, run] { run(*options); });
  return options;
}

// unipool train --config FILE [--set key=value]... [--resume [DIR]] [--init-from FILE]
void add_train_command(CLI::App& app) {
  struct Options {
    std::string config;
    std::vector<std::string> overrides;
    TrainOptions train;
    std::string resume = "\x01";  // --resume's value; "\x01": given without one
    CLI::App* command = nullptr;
  };
  CLI::App* cmd =
      app.add_subcommand("train", "train a model (config: a JSON file or a preset in configs/)");
  auto o = options_for<Options>(cmd, [](Options& o) {
    if (o.command->count("--resume") > 0) {
      o.train.resume = true;
      o.train.resume_dir = o.resume == "\x01" ? "" : o.resume;
    }
    check(!(o.train.resume && !o.train.init_from.empty()),
          "--resume and --init-from cannot be combined (a checkpoint already holds the weights)");
    check(!(o.train.resume && o.train.overwrite),
          "--resume and --overwrite cannot be combined (a resumed run continues the one there)");
    run_train(load_config(read_config_file(o.config), o.overrides, /*check_data=*/true), o.train);
  });
  o->command = cmd;
  cmd->add_option("--config", o->config, "config file, or a preset name from configs/ (e.g. tiny)")
      ->required();
  cmd->add_option("--set", o->overrides,
                  "override a config key: --set train.steps=100 (repeatable)");
  cmd->add_option("--resume", o->resume,
                  "continue from a checkpoint directory (alone: the newest in train.out_dir)")
      ->expected(0, 1)
      ->default_str("");  // (its "\x01" marks "given alone", not a default)
  cmd->add_option("--init-from", o->train.init_from,
                  "start from these weights (a model.safetensors with the tensor names of "
                  "docs/run-directory.md)");
  cmd->add_flag("--overwrite", o->train.overwrite,
                "a fresh run into a train.out_dir that is not empty: move what it holds aside "
                "into train.out_dir/replaced-<UTC time>/ (without it: refused)");
}

// unipool bench --config FILE [--set ...] [--steps N] [--warmup N]
void add_bench_command(CLI::App& app) {
  struct Options {
    std::string config;
    std::vector<std::string> overrides;
    BenchOptions bench;
  };
  CLI::App* cmd =
      app.add_subcommand("bench", "time training steps on random tokens: tok/s and GFLOP/s");
  auto o = options_for<Options>(cmd, [](Options& o) {
    run_bench(load_config(read_config_file(o.config), o.overrides, /*check_data=*/false), o.bench);
  });
  cmd->add_option("--config", o->config, "config file or preset name")->required();
  cmd->add_option("--set", o->overrides, "override a config key (repeatable)");
  cmd->add_option("--steps", o->bench.steps, "timed steps")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", o->bench.warmup, "untimed steps first")
      ->check(CLI::NonNegativeNumber);
}

// unipool tokenize --out PREFIX [--format megatron|llmc|both] [--tokenizer gpt2|bytes] INPUT...
void add_tokenize_command(CLI::App& app) {
  struct Options {
    data::TokenizeOptions tokenize;
    bool no_shuffle = false;
  };
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "text / JSONL (.zst, .gz, stdin) → Megatron .bin/.idx and llm.c .bin shards");
  auto o = options_for<Options>(cmd, [](Options& o) {
    o.tokenize.shuffle = !o.no_shuffle;
    data::run_tokenize(o.tokenize);
  });
  data::TokenizeOptions& tok = o->tokenize;
  cmd->add_option("--out", tok.out_prefix,
                  "output prefix: PREFIX.bin/.idx (megatron), PREFIX_{train,val,test}.bin (llmc)")
      ->required();
  cmd->add_option("--format", tok.format, "megatron, llmc or both");
  cmd->add_option("--tokenizer", tok.tokenizer,
                  "gpt2 (GPT-2 BPE, vocabulary 50257) or bytes (vocabulary 257)");
  cmd->add_option("--tokenizer-dir", tok.tokenizer_dir,
                  "GPT-2 vocabulary files (default data_cache/tokenizer/gpt2)");
  cmd->add_option("--split", tok.split, "train,valid,test document weights (Megatron's --split)");
  cmd->add_option("--threads", tok.threads, "encoding threads (0: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--doc-separator", tok.doc_separator,
                  "a line that separates documents inside plain-text files (e.g. %)");
  cmd->add_option("--json-key", tok.json_key,
                  "the JSONL field that holds the text (Megatron's --json-keys; default text)");
  cmd->add_option("--stdin-format", tok.stdin_format,
                  "what standard input (-) holds: jsonl (default) or text");
  cmd->add_flag("--allow-binary", tok.allow_binary,
                "encode input that is not UTF-8 text (NUL bytes, binaries) instead of refusing it");
  cmd->add_option("--shuffle-seed", tok.shuffle_seed, "seed of the document shuffle");
  cmd->add_flag("--no-shuffle", o->no_shuffle,
                "keep the input order of the documents (megatron output is then written "
                "straight out, with no temporary spool)");
  cmd->add_flag("--quiet", tok.quiet, "no progress lines");
  cmd->add_option("inputs", tok.inputs,
                  "files, directories or - (standard input): .jsonl, .jsonl.zst, .jsonl.gz (one "
                  "{\"text\": ...} per line), other files plain text (.zst/.gz decompressed)")
      ->required();
}

// unipool inspect FILE_OR_PREFIX [--vocab-size N] [-n N]
void add_inspect_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "inspect", "validate a token shard, print a summary, decode its first tokens");
  auto o =
      options_for<data::InspectOptions>(cmd, [](data::InspectOptions& o) { data::run_inspect(o); });
  cmd->add_option("path", o->path, "a Megatron prefix (or its .bin/.idx) or an llm.c .bin")
      ->required();
  cmd->add_option("--format", o->format, "auto, megatron or llmc");
  cmd->add_option("--vocab-size", o->vocab_size, "token ids must be below this (0: 50257)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--decode-tokens,-n", o->decode_tokens, "how many leading tokens to decode")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--tokenizer", o->tokenizer, "auto, gpt2, bytes or none");
  cmd->add_option("--tokenizer-dir", o->tokenizer_dir, "GPT-2 vocabulary files");
}

// unipool eval --checkpoint DIR [--set key=value]... [--batches N]
//              [--split valid|test|train | --data PREFIX]
// unipool eval --checkpoint DIR --task NAME --data FILE [--limit N] [--out FILE]
//              [--per-example FILE]
void add_eval_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "eval", "validation loss and perplexity of a checkpoint, or its zero-shot task accuracy");
  auto o = options_for<EvalOptions>(cmd, [](EvalOptions& o) {
    if (!o.task.empty()) {
      run_zero_shot(o);
      return;
    }
    check(o.limit == 0 && o.out.empty() && o.per_example.empty(),
          "--limit, --out and --per-example go with --task NAME");
    run_eval(o);
  });
  cmd->add_option("--checkpoint", o->checkpoint,
                  "a ckpt-STEP directory, or a run directory (its newest)")
      ->required();
  cmd->add_option("--set", o->overrides,
                  "override a key of the checkpoint's config (e.g. data.train)");
  cmd->add_option("--batches", o->batches, "micro-batches to evaluate (0: train.eval_batches)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--split", o->split, "valid, test or train");
  cmd->add_option("--task", o->task,
                  "zero-shot task: hellaswag, arc_easy, arc_challenge, piqa, winogrande, lambada, "
                  "race or multiple_choice (docs/evaluation.md)");
  cmd->add_option("--data", o->data,
                  "with --task: the task's file (JSON lines in its published layout); without: a "
                  "token file (Megatron PREFIX or llm.c .bin, data.format) evaluated whole, in "
                  "order");
  cmd->add_option("--limit", o->limit, "score the first N examples (0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--out", o->out, "write the results JSON here");
  cmd->add_option("--per-example", o->per_example,
                  "write each example's log-likelihoods here (JSON lines)");
}

// unipool probe --checkpoint DIR [--batches N] [--seed S] [--out FILE] [--set key=value]...
//               [--task NAME --data FILE [--limit N]]
void add_probe_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "probe", "where a checkpoint's tokens go: routing measures and perturbations (probe.json)");
  auto o = options_for<ProbeOptions>(cmd, [](ProbeOptions& o) { run_probe(o); });
  cmd->add_option("--checkpoint", o->checkpoint,
                  "a ckpt-STEP directory, or a run directory (its newest)")
      ->required();
  cmd->add_option("--batches", o->batches,
                  "validation micro-batches probed (as many more choose the \"matched\" experts)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", o->seed, "seed of the random routing and the shuffles");
  cmd->add_option("--out", o->out, "the JSON file (default: <checkpoint>/probe.json)");
  cmd->add_option("--task", o->task,
                  "also score this zero-shot task under each random routing (docs/evaluation.md)");
  cmd->add_option("--data", o->data, "the task's file");
  cmd->add_option("--limit", o->limit, "the task's first N examples (0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--set", o->overrides,
                  "override a key of the checkpoint's config (e.g. train.backend=cpu)");
}

// unipool plot RUN_DIR... [--out DIR] [--format png|svg]
void add_plot_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "plot", "pictures of runs: loss curves, expert utilisation, entropy, path coverage");
  auto o = options_for<PlotOptions>(cmd, [](PlotOptions& o) { run_plot(o); });
  cmd->add_option("runs", o->runs, "run directories (train.out_dir)")->required();
  cmd->add_option("--out", o->out, "output directory (default: <first run>/plots)");
  cmd->add_option("--format", o->format, "png or svg");
}

// unipool sample --checkpoint DIR --prompt TEXT [--tokens N] [--temperature T] [--top-k K]
// [--seed S]
void add_sample_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("sample", "generate text from a checkpoint (KV-cached)");
  auto o = options_for<SampleOptions>(cmd, [](SampleOptions& o) { run_sample(o); });
  cmd->add_option("--checkpoint", o->checkpoint, "a ckpt-STEP directory, or a run directory")
      ->required();
  cmd->add_option("--set", o->overrides,
                  "override a key of the checkpoint's config (e.g. train.backend=cpu)");
  cmd->add_option("--prompt", o->prompt, "the text to continue (empty: start a new document)");
  cmd->add_option("--tokens", o->tokens, "new tokens per sample")->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", o->temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", o->top_k, "sample among the k most likely tokens (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", o->seed, "same seed + same checkpoint = same text");
  cmd->add_option("--samples", o->samples, "how many samples")->check(CLI::PositiveNumber);
  cmd->add_option("--tokenizer", o->tokenizer, "auto, bytes or gpt2");
  cmd->add_option("--threads", o->threads, "CPU threads (0: the checkpoint's train.threads)")
      ->check(CLI::NonNegativeNumber);
}

// unipool bench-tokenizer [--threads N] FILE...   (scripts/bench_tokenizer.sh compares with
// tiktoken)
void add_bench_tokenizer_command(CLI::App& app) {
  struct Options {
    std::vector<std::string> files;
    int threads = 1;
  };
  CLI::App* cmd =
      app.add_subcommand("bench-tokenizer", "GPT-2 tokenizer speed (MB/s) on text files");
  auto o = options_for<Options>(cmd, [](Options& o) { run_tokenizer_bench(o.files, o.threads); });
  cmd->add_option("--threads", o->threads, "encoding threads")->check(CLI::PositiveNumber);
  cmd->add_option("files", o->files, "text files")->required();
}

// unipool presets
void add_presets_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "presets", "list the presets of configs/ (what --config NAME takes): model, size, purpose");
  cmd->callback([] { run_presets(); });
}

// Prints the error; in a run of several ranks, then ends them all (the others may be waiting for
// this one in a collective that will never complete).
int report(const char* message) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: %s\n", message);
  abort_world_after_error(1);
  return 1;
}

}  // namespace

// OpenMP threads spin a short while at a barrier, then sleep, unless the environment says
// otherwise (GOMP_SPINCOUNT=1000). libgomp's default spins long: `unipool bench --config tiny` on 2
// cores fell to 200-600 tok/s beside one busy process; passive waiting (sleep at once) holds up
// there but halves the uncontended speed of small models (many short parallel regions). A short
// spin keeps both: ~6,500 tok/s alone (active 7,100, passive 2,900) and ~3,300 beside a busy
// process (passive 3,400, active 2,600) (docs/benchmarks.md §OpenMP on a shared machine). The wait
// changes no result. libgomp reads these variables when it loads, before main(): so set it and
// start again (on failure, go on with the defaults).
static void short_spin_by_default(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  ::setenv("GOMP_SPINCOUNT", "1000", 1);
  ::execv("/proc/self/exe", argv);
}

int main(int argc, char** argv) {
  short_spin_by_default(argv);
  CLI::App app{"unipool: pretraining engine for dense, MoE, UniPool and PathMoE language models"};
  app.require_subcommand(1);
  app.set_version_flag(
      "--version", std::string("unipool ") + UNIPOOL_VERSION + " (commit " + UNIPOOL_COMMIT + ")");
  app.option_defaults()->always_capture_default();  // --help shows every option's default
  add_train_command(app);
  add_bench_command(app);
  add_tokenize_command(app);
  add_inspect_command(app);
  add_eval_command(app);
  add_sample_command(app);
  add_probe_command(app);
  add_plot_command(app);
  add_bench_tokenizer_command(app);
  add_presets_command(app);
  for (CLI::App* command : app.get_subcommands([](CLI::App*) { return true; }))
    for (CLI::Option* option : command->get_options([](CLI::Option*) { return true; }))
      if (option->get_default_str() == "[]") option->default_str("");  // an empty list says nothing
  try {
    app.parse(argc, argv);  // runs the chosen subcommand's callback
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const RunStopped& e) {  // a stop signal, after a checkpoint: 128 + signal, as a shell
    std::fflush(stdout);           // every rank stopped after the same step: no abort
    std::fprintf(stderr, "error: %s\n", e.what());
    return 128 + e.signal;
  } catch (const Error& e) {
    return report(e.what());
  } catch (const std::bad_alloc&) {
    return report(
        "out of memory allocating the model, its optimizer state or activations (reduce "
        "train.micro_batch, model.seq_len or the model size)");
  } catch (const std::exception& e) {
    return report(e.what());
  }
  return 0;
}
