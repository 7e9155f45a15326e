// Zero-shot downstream evaluation (`unipool eval --task`, docs/evaluation.md): the requests of a
// task file (engine/tasks.h) tokenised as lm-evaluation-harness tokenises them, scored in batches
// by the model's LM head on the continuation positions only (Model::score), and the harness's
// metrics with their standard errors.
//
// Tokenisation (the harness's loglikelihood()): trailing white space of the context moves to the
// front of the continuation; context and continuation are encoded separately; an empty context is
// the end-of-document token. A request is the last seq_len + 1 tokens of context + continuation
// (a long context is cut from the left); all but its last token are the model's inputs, and the
// positions of the continuation's tokens are scored.
//
// Batching: rows are independent under causal attention, so every choice of an example is one row
// of a forward, the choices of an example in the same forward, and a row is padded at its end
// (padding is never scored). Rows go to the shortest of a few lengths that holds them (seq_len,
// and down to seq_len/8 the powers of two and their 3/4, at least 16: for 1024, 128 192 256 384
// 512 768 1024), one model per length used, built one at a time; a forward holds about
// train.micro_batch · seq_len tokens. Only the continuation positions go through the LM head.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/checkpoint.h"
#include "engine/eval.h"
#include "engine/tasks.h"
#include "engine/text_codec.h"
#include "model/model.h"

namespace unipool {

// One choice's request in tokens.
struct TokenRequest {
  std::vector<int32_t> context, continuation;
};

// One choice's score: the summed natural-log likelihood of its continuation, the continuation's
// token count, and whether every continuation token is the argmax of its position's logits.
struct ChoiceScore {
  double loglik = 0;
  int tokens = 0;
  bool greedy = false;
};

// A task file read and tokenised.
struct LoadedTask {
  std::string task, path, sha256;  // sha256 of the whole file
  std::vector<TaskExample> examples;
  std::vector<std::vector<TokenRequest>> requests;  // [example][choice]
  int64_t truncated = 0;  // requests cut from the left to fit seq_len + 1 tokens
};

// Reads `path` (at most `limit` examples, 0: all) and tokenises it with `codec` for a model of
// seq_len. Error naming the file and the line for bad input, and for a continuation longer than
// seq_len tokens.
LoadedTask load_task(const std::string& task, const std::string& path, int limit,
                     const TextCodec& codec, int seq_len);

// The harness's tokenisation of one request (see the file comment).
TokenRequest tokenize_request(const TaskChoice& choice, const TextCodec& codec);

// The weights and routing a scorer runs with.
struct ScoringModel {
  Config config;  // the checkpoint's, overrides applied
  Layout layout;
  std::vector<float> weights;  // the fp32 arena
  LockRouting lock;            // UniPool-lock's sets (empty otherwise)
};
ScoringModel load_scoring_model(const OpenedCheckpoint& checkpoint);

struct ScoreOptions {
  int64_t batch_tokens = 0;  // tokens per forward (0: train.micro_batch · seq_len)
  std::vector<RoutingPerturbation> perturbations;  // for the probe (Model::set_routing_...)
  std::string progress;                            // the label of the progress lines ("": none)
};

// Every request's score, [example][choice], on backend B. The same scores on every thread count;
// between batchings they agree to rounding.
template <class B>
std::vector<std::vector<ChoiceScore>> score_requests(
    const ScoringModel& model, const std::vector<std::vector<TokenRequest>>& requests,
    const ScoreOptions& options);

// A mean and its standard error, the harness's mean_stderr: sample standard deviation / √n (NaN
// for n < 2).
struct Metric {
  double value = 0, stderr_ = 0;
};
Metric mean_with_stderr(const std::vector<double>& values);

// The index of the largest value, the first among equal ones (numpy.argmax).
int first_argmax(const std::vector<double>& values);

struct TaskMetrics {
  std::string task;
  int n = 0;
  // multiple choice: acc (argmax of loglik), acc_norm (of loglik / characters of the choice),
  // acc_per_token (of loglik / tokens: llm.c's HellaSwag "acc_norm", the least mean token loss).
  // lambada: acc = greedy match of the last word; acc_norm and acc_per_token are NaN.
  Metric acc, acc_norm, acc_per_token;
  double perplexity = 0;  // lambada: exp(−mean loglik) over examples (the harness's); else NaN
};
TaskMetrics task_metrics(const LoadedTask& task,
                         const std::vector<std::vector<ChoiceScore>>& scores);

// The results JSON: task, n, acc, acc_stderr, acc_norm, acc_norm_stderr, acc_per_token(_stderr),
// perplexity (lambada), data, data_sha256, harness (NaN → null).
nlohmann::json metrics_json(const TaskMetrics& metrics, const LoadedTask& task);

// One line of --per-example: {"index", "gold", "loglik": [..], "tokens": [..], "greedy": [..]}.
nlohmann::json example_json(int index, const TaskExample& example,
                            const std::vector<ChoiceScore>& scores);

// `unipool eval --task NAME --data FILE`: scores the file with the checkpoint on train.backend,
// prints a progress line and the metrics, writes options.out (results JSON, with the checkpoint)
// and options.per_example (JSON lines) when given. Returns the results JSON.
nlohmann::json run_zero_shot(const EvalOptions& options);

}  // namespace unipool
