// Zero-shot downstream evaluation (engine/zero_shot.h): tokenise, batch by row length, score the
// continuation positions, the harness's metrics.
#include "engine/zero_shot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "base/clock.h"
#include "base/error.h"
#include "base/fsutil.h"
#include "base/json_fields.h"
#include "base/sha256.h"
#include "engine/backends.h"
#include "engine/lock.h"

namespace unipool {

namespace {

constexpr const char* kHarness = "lm-evaluation-harness v0.4.5";
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The row lengths a scorer builds models for, ascending: seq_len and below it down to seq_len/8
// the powers of two and their 3/4 (those >= 16): for 1024, 128 192 256 384 512 768 1024. A row
// then carries at most a third of padding.
std::vector<int> row_lengths(int seq_len) {
  std::vector<int> lengths = {seq_len};
  for (int t = seq_len / 2; t >= std::max(16, seq_len / 8); t /= 2) {
    lengths.push_back(t * 3 / 2);
    lengths.push_back(t);
  }
  std::reverse(lengths.begin(), lengths.end());
  return lengths;
}

// A request's model inputs: the last seq_len + 1 tokens of context + continuation minus the last.
int input_length(const TokenRequest& r, int seq_len) {
  return int(std::min<size_t>(r.context.size() + r.continuation.size(), size_t(seq_len) + 1)) - 1;
}

// "1 m 05 s" style durations for the progress line.
std::string seconds_text(double s) {
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.0f s", s);
  } else {
    std::snprintf(buf, sizeof buf, "%d m %02d s", int(s) / 60, int(s) % 60);
  }
  return buf;
}

// Progress lines "<label> | done/total examples | x examples/s | ETA": at most one every 2 s.
class Progress {
 public:
  Progress(std::string label, int total) : label_(std::move(label)), total_(total) {}
  void add(int examples) {
    done_ += examples;
    if (label_.empty() || (last_.seconds() < 2.0 && done_ < total_)) return;
    last_.restart();
    const double rate = done_ / std::max(time_.seconds(), 1e-9);
    std::printf("%s | %d/%d examples | %.1f examples/s | ETA %s\n", label_.c_str(), done_, total_,
                rate, seconds_text((total_ - done_) / std::max(rate, 1e-9)).c_str());
    std::fflush(stdout);
  }

 private:
  std::string label_;
  int total_, done_ = 0;
  Stopwatch time_, last_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Requests

TokenRequest tokenize_request(const TaskChoice& choice, const TextCodec& codec) {
  // _encode_pair: the context's trailing white space belongs to the continuation.
  const std::string context = python_strip(choice.context, /*left=*/false);
  const std::string continuation = choice.context.substr(context.size()) + choice.continuation;
  TokenRequest r;
  r.context = context.empty() ? std::vector<int32_t>{codec.eod} : codec.encode(context);
  r.continuation = codec.encode(continuation);
  return r;
}

LoadedTask load_task(const std::string& task, const std::string& path, int limit,
                     const TextCodec& codec, int seq_len) {
  check(limit >= 0, "--limit: must be >= 0 (0: every example)");
  LoadedTask t;
  t.task = task;
  t.path = path;
  t.examples = read_task_file(task, path, limit);
  const std::string bytes = read_file(path);
  t.sha256 = sha256_hex(bytes.data(), bytes.size());
  const int n = int(t.examples.size());
  t.requests.resize(size_t(n));
  std::vector<std::string> errors(static_cast<size_t>(n));
#pragma omp parallel for schedule(dynamic, 16)
  for (int i = 0; i < n; ++i) {
    const TaskExample& e = t.examples[size_t(i)];
    std::vector<TokenRequest>& out = t.requests[size_t(i)];
    try {
      for (size_t c = 0; c < e.choices.size(); ++c) {
        out.push_back(tokenize_request(e.choices[c], codec));
        const size_t cont = out.back().continuation.size();
        if (cont == 0 || cont > size_t(seq_len))
          throw Error(e.where + ": choice " + std::to_string(c) + "'s continuation is " +
                      std::to_string(cont) +
                      " tokens; it must be 1 to model.seq_len = " + std::to_string(seq_len));
      }
    } catch (const std::exception& x) {
      errors[size_t(i)] = x.what();
    }
  }
  for (const std::string& err : errors)
    if (!err.empty()) throw Error(err);
  for (const auto& choices : t.requests)
    for (const TokenRequest& r : choices)
      t.truncated += r.context.size() + r.continuation.size() > size_t(seq_len) + 1;
  return t;
}

ScoringModel load_scoring_model(const OpenedCheckpoint& ck) {
  ScoringModel m;
  m.config = ck.config;
  m.layout = make_layout(ck.config.model);
  m.weights.assign(m.layout.arena_size, 0.0f);
  load_weights(ck.dir + "/model.safetensors", m.layout, m.weights.data());
  m.lock = checkpoint_lock_routing(ck.config, ck.state);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Scoring

template <class B>
std::vector<std::vector<ChoiceScore>> score_requests(
    const ScoringModel& sm, const std::vector<std::vector<TokenRequest>>& requests,
    const ScoreOptions& o) {
  const Config& c = sm.config;
  const int T = c.model.seq_len, n = int(requests.size());
  const std::vector<int> lengths = row_lengths(T);
  // Each example goes to the shortest row length that holds all its choices.
  std::vector<std::vector<int>> of_length(lengths.size());
  for (int i = 0; i < n; ++i) {
    int need = 1;
    for (const TokenRequest& r : requests[size_t(i)]) need = std::max(need, input_length(r, T));
    const size_t b =
        size_t(std::lower_bound(lengths.begin(), lengths.end(), need) - lengths.begin());
    of_length[b].push_back(i);
  }
  const int64_t budget = o.batch_tokens > 0 ? o.batch_tokens : int64_t(c.train.micro_batch) * T;
  std::vector<std::vector<ChoiceScore>> scores(static_cast<size_t>(n));
  Progress progress(o.progress, n);

  for (size_t b = 0; b < lengths.size(); ++b) {
    const std::vector<int>& examples = of_length[b];
    if (examples.empty()) continue;
    const int Tb = lengths[b];
    int choices = 1;
    for (int i : examples) choices = std::max(choices, int(requests[size_t(i)].size()));
    const int rows = int(std::max<int64_t>(choices, budget / Tb));
    Config shape = c;  // the memory plan of this model's shape
    shape.train.micro_batch = rows;
    shape.model.seq_len = Tb;
    const BackendKind kind = B::kWeightCopy ? BackendKind::cuda : BackendKind::cpu;  // B's
    check_memory(memory_need<B>(shape, sm.layout, Workload::eval), shape, kind,
                 "unipool eval --task");
    Model<B> model(sm.layout, c.loss, rows, Tb);
    model.params_from_host(sm.weights.data());
    if (!sm.lock.sets.empty()) model.set_lock_routing(sm.lock);
    model.set_routing_perturbations(o.perturbations);

    std::vector<int32_t> inputs(size_t(rows) * Tb), positions, targets;
    std::vector<typename B::Float> losses(inputs.size());
    std::vector<int32_t> greedy(inputs.size());
    // One forward: the choices of examples [e0, e1) as rows 0, 1, ... (their continuation
    // positions scored), the scores summed per choice.
    auto run = [&](size_t e0, size_t e1) {
      std::fill(inputs.begin(), inputs.end(), 0);
      positions.clear();
      targets.clear();
      int row = 0;
      for (size_t e = e0; e < e1; ++e) {
        for (const TokenRequest& r : requests[size_t(examples[e])]) {
          std::vector<int32_t> seq(r.context);
          seq.insert(seq.end(), r.continuation.begin(), r.continuation.end());
          const int len = input_length(r, T);
          const int32_t* s = seq.data() + (seq.size() - size_t(len) - 1);
          std::copy(s, s + len, inputs.begin() + int64_t(row) * Tb);
          const int cont = int(r.continuation.size());
          for (int j = len - cont; j < len; ++j) {
            positions.push_back(row * Tb + j);
            targets.push_back(s[j + 1]);
          }
          ++row;
        }
      }
      const int count = int(positions.size());
      model.score(inputs.data(), positions.data(), targets.data(), count, losses.data(),
                  greedy.data());
      int k = 0;
      for (size_t e = e0; e < e1; ++e) {
        for (const TokenRequest& r : requests[size_t(examples[e])]) {
          ChoiceScore s;
          s.tokens = int(r.continuation.size());
          s.greedy = true;
          for (int j = 0; j < s.tokens; ++j, ++k) {
            s.loglik -= double(losses[size_t(k)]);
            s.greedy = s.greedy && greedy[size_t(k)] != 0;
          }
          scores[size_t(examples[e])].push_back(s);
        }
      }
      progress.add(int(e1 - e0));
    };
    size_t first = 0;
    int used = 0;
    for (size_t e = 0; e < examples.size(); ++e) {
      const int need = int(requests[size_t(examples[e])].size());
      if (used + need > rows) {
        run(first, e);
        first = e;
        used = 0;
      }
      used += need;
    }
    run(first, examples.size());
  }
  return scores;
}

template std::vector<std::vector<ChoiceScore>> score_requests<CpuBackend<float>>(
    const ScoringModel&, const std::vector<std::vector<TokenRequest>>&, const ScoreOptions&);
#ifdef UNIPOOL_HAVE_CUDA
template std::vector<std::vector<ChoiceScore>> score_requests<CudaBackend>(
    const ScoringModel&, const std::vector<std::vector<TokenRequest>>&, const ScoreOptions&);
#endif

// ---------------------------------------------------------------------------------------------
// Metrics

Metric mean_with_stderr(const std::vector<double>& v) {
  Metric m;
  const size_t n = v.size();
  if (n == 0) return Metric{kNaN, kNaN};
  double sum = 0;
  for (double x : v) sum += x;
  m.value = sum / double(n);
  if (n < 2) {
    m.stderr_ = kNaN;
    return m;
  }
  double squares = 0;
  for (double x : v) squares += (x - m.value) * (x - m.value);
  m.stderr_ = std::sqrt(squares / double(n - 1)) / std::sqrt(double(n));
  return m;
}

int first_argmax(const std::vector<double>& v) {
  int best = 0;
  for (int i = 1; i < int(v.size()); ++i)
    if (v[size_t(i)] > v[size_t(best)]) best = i;
  return best;
}

TaskMetrics task_metrics(const LoadedTask& t, const std::vector<std::vector<ChoiceScore>>& scores) {
  TaskMetrics m;
  m.task = t.task;
  m.n = int(scores.size());
  std::vector<double> acc, acc_norm, acc_per_token, loglik;
  for (size_t i = 0; i < scores.size(); ++i) {
    const std::vector<ChoiceScore>& s = scores[i];
    const TaskExample& e = t.examples[i];
    if (is_loglikelihood_task(t.task)) {
      acc.push_back(s[0].greedy ? 1.0 : 0.0);
      loglik.push_back(s[0].loglik);
      continue;
    }
    std::vector<double> ll, per_char, per_token;
    for (size_t c = 0; c < s.size(); ++c) {
      ll.push_back(s[c].loglik);
      per_char.push_back(s[c].loglik / double(e.choices[c].chars));
      per_token.push_back(s[c].loglik / double(s[c].tokens));
    }
    acc.push_back(first_argmax(ll) == e.gold ? 1.0 : 0.0);
    acc_norm.push_back(first_argmax(per_char) == e.gold ? 1.0 : 0.0);
    acc_per_token.push_back(first_argmax(per_token) == e.gold ? 1.0 : 0.0);
  }
  m.acc = mean_with_stderr(acc);
  m.acc_norm = mean_with_stderr(acc_norm);
  m.acc_per_token = mean_with_stderr(acc_per_token);
  m.perplexity = loglik.empty() ? kNaN : std::exp(-mean_with_stderr(loglik).value);
  return m;
}

namespace {
nlohmann::json number_or_null(double x) {
  return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr);
}
}  // namespace

nlohmann::json metrics_json(const TaskMetrics& m, const LoadedTask& t) {
  nlohmann::json j;
  j["task"] = m.task;
  j["n"] = m.n;
  j["acc"] = number_or_null(m.acc.value);
  j["acc_stderr"] = number_or_null(m.acc.stderr_);
  j["acc_norm"] = number_or_null(m.acc_norm.value);
  j["acc_norm_stderr"] = number_or_null(m.acc_norm.stderr_);
  j["acc_per_token"] = number_or_null(m.acc_per_token.value);
  j["acc_per_token_stderr"] = number_or_null(m.acc_per_token.stderr_);
  if (is_loglikelihood_task(m.task)) j["perplexity"] = number_or_null(m.perplexity);
  j["data"] = t.path;
  j["data_sha256"] = t.sha256;
  j["truncated_requests"] = t.truncated;
  j["harness"] = kHarness;
  return j;
}

nlohmann::json example_json(int index, const TaskExample& e, const std::vector<ChoiceScore>& s) {
  nlohmann::json loglik = nlohmann::json::array(), tokens = nlohmann::json::array(),
                 greedy = nlohmann::json::array();
  for (const ChoiceScore& c : s) {
    loglik.push_back(c.loglik);
    tokens.push_back(c.tokens);
    greedy.push_back(c.greedy);
  }
  return {{"index", index},
          {"gold", e.gold},
          {"loglik", loglik},
          {"tokens", tokens},
          {"greedy", greedy}};
}

// ---------------------------------------------------------------------------------------------
// The command

nlohmann::json run_zero_shot(const EvalOptions& o) {
  check(!o.data.empty(), "--task needs --data FILE (the task's file: docs/evaluation.md)");
  check(o.batches == 0 && o.split == "valid",
        "--batches and --split are for the validation loss; --task scores --data instead");
  check_task_name(o.task);
  const OpenedCheckpoint ck = open_checkpoint(o.checkpoint, o.overrides, /*check_data=*/false);
  const Config& c = ck.config;
  const BackendKind backend = select_backend(c);
  const TextCodec codec = make_codec("auto", c.model);
  const Stopwatch time;
  const LoadedTask task = load_task(o.task, o.data, o.limit, codec, c.model.seq_len);
  int64_t requests = 0;
  for (const auto& r : task.requests) requests += int64_t(r.size());
  std::printf(
      "unipool eval | %s (step %d) | %s, %d layers, d %d | %s: %zu examples, %lld requests "
      "(%lld cut to seq_len %d) from %s | %s tokenizer | %s\n",
      ck.dir.c_str(), ck.step, name_of(c.model.ffn), c.model.n_layer, c.model.d_model,
      o.task.c_str(), task.examples.size(), static_cast<long long>(requests),
      static_cast<long long>(task.truncated), c.model.seq_len, o.data.c_str(), codec.name.c_str(),
      backend_banner(backend).c_str());
  std::fflush(stdout);

  const ScoringModel model = load_scoring_model(ck);
  ScoreOptions so;
  so.progress = o.task;
  const auto scores = on_backend(backend, [&](auto b) {
    using B = typename decltype(b)::type;
    return score_requests<B>(model, task.requests, so);
  });
  const TaskMetrics m = task_metrics(task, scores);
  nlohmann::json j = metrics_json(m, task);
  j["checkpoint"] = ck.dir;
  j["step"] = ck.step;
  j["tokenizer"] = codec.name;
  j["seq_len"] = c.model.seq_len;

  const double seconds = time.seconds();
  if (is_loglikelihood_task(o.task)) {
    std::printf("%s | n %d | acc %.4f ± %.4f | perplexity %.3f | %.1f s (%.1f examples/s)\n",
                o.task.c_str(), m.n, m.acc.value, m.acc.stderr_, m.perplexity, seconds,
                m.n / std::max(seconds, 1e-9));
  } else {
    std::printf(
        "%s | n %d | acc %.4f ± %.4f | acc_norm %.4f ± %.4f | acc_per_token %.4f ± %.4f | %.1f s "
        "(%.1f examples/s)\n",
        o.task.c_str(), m.n, m.acc.value, m.acc.stderr_, m.acc_norm.value, m.acc_norm.stderr_,
        m.acc_per_token.value, m.acc_per_token.stderr_, seconds, m.n / std::max(seconds, 1e-9));
  }
  if (!o.out.empty()) {
    write_file_atomic(o.out, dump_json(j, 2) + "\n");
    std::printf("written: %s\n", o.out.c_str());
  }
  if (!o.per_example.empty()) {
    std::string lines;
    for (size_t i = 0; i < scores.size(); ++i)
      lines += dump_json(example_json(int(i), task.examples[i], scores[i])) + "\n";
    write_file_atomic(o.per_example, lines);
    std::printf("written: %s\n", o.per_example.c_str());
  }
  std::fflush(stdout);
  return j;
}

}  // namespace unipool
