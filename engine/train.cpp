// `unipool train`: the training loop. Read train_on() first: it is the whole run, in order —
// data, trainer, resume, then per step: train_step → metrics → progress → eval → checkpoint.
// The helpers above it each own one file or one line format of the run directory
// (docs/run-directory.md).
#include "engine/train.h"
#include "base/json_depth.h"
#include "base/json_fields.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>

#include "base/clock.h"
#include "base/error.h"
#include "base/fsutil.h"
#include "data/unigram.h"
#include "engine/backends.h"
#include "engine/checkpoint.h"
#include "engine/distributed.h"
#include "engine/routing_analysis.h"
#include "engine/trainer.h"

namespace unipool {

data::LoaderSpec loader_spec(const Config& c) {
  data::LoaderSpec spec;
  spec.blend = c.data.train;
  spec.format = data::parse_shard_format(c.data.format);
  spec.split = c.data.split;
  spec.seq_len = c.model.seq_len;
  spec.vocab_size = c.model.vocab_size;
  spec.seed = c.train.seed;
  return spec;
}

data::LoaderSpec validation_spec(const Config& c) {
  data::LoaderSpec spec = loader_spec(c);
  if (!c.data.valid.empty()) {
    spec.blend = c.data.valid;
    spec.whole_files = true;
  }
  return spec;
}

namespace {

// ---- stop signals (docs/failure.md §Signals) ----------------------------------------------------
// SIGINT (Ctrl-C), SIGTERM (Slurm's, before a job's time limit) and SIGUSR1 (the usual pre-emption
// warning) ask the run to stop: the handler only records the signal, the loop finishes the step in
// progress, writes a checkpoint and throws RunStopped. A second signal ends the process at once.
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal != 0) {  // the second one: the default action, now
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  g_stop_signal = sig;
  static const char msg[] =
      "\nunipool: stop requested: finishing this step, then a checkpoint (a second signal aborts "
      "at once)\n";
  const ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);  // async-signal-safe
  (void)ignored;
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "signal " + std::to_string(sig);
  }
}

// Installs the handlers for one run and puts the previous ones back afterwards.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // reads and writes in progress continue
    for (int i = 0; i < kCount; ++i) ::sigaction(kSignals[i], &sa, &previous_[i]);
  }
  ~StopSignals() {
    for (int i = 0; i < kCount; ++i) ::sigaction(kSignals[i], &previous_[i], nullptr);
    g_stop_signal = 0;
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int requested() const { return g_stop_signal; }

 private:
  static constexpr int kCount = 3;
  static constexpr int kSignals[kCount] = {SIGINT, SIGTERM, SIGUSR1};
  struct sigaction previous_[kCount];
};

// How this run continues an earlier one (--resume): written to metrics.jsonl as an event line.
struct ResumeInfo {
  std::string checkpoint;  // the ckpt-STEP directory resumed from ("": a fresh start)
  int step = 0;
  int64_t tokens = 0;                                 // tokens trained on before it (all ranks)
  double elapsed_s = 0;                               // the run's wall time before it
  nlohmann::json changed = nlohmann::json::object();  // "key": [checkpoint's value, this run's]
  std::vector<std::string> schedule_notes;            // how the learning rate continues
};

// The config keys ("optim.lr") whose values differ between two configs: key → [before, after].
nlohmann::json config_changes(const Config& before, const Config& after) {
  // flatten() names a value by its JSON pointer ("/optim/lr"; an array element "/data/train/0/1").
  auto dotted = [](const std::string& pointer) {
    std::string key = pointer.substr(1);
    std::replace(key.begin(), key.end(), '/', '.');
    return key;
  };
  const nlohmann::json a = before.to_json().flatten(), b = after.to_json().flatten();
  nlohmann::json changed = nlohmann::json::object();
  for (auto it = b.begin(); it != b.end(); ++it) {
    const auto other = a.find(it.key());
    const nlohmann::json old = other == a.end() ? nlohmann::json() : *other;
    if (old != it.value()) changed[dotted(it.key())] = {old, it.value()};
  }
  for (auto it = a.begin(); it != a.end(); ++it)
    if (!b.contains(it.key())) changed[dotted(it.key())] = {it.value(), nullptr};
  return changed;
}

// metrics.jsonl: one object per optimizer step (loss with 9 significant digits) and one per
// evaluation (docs/run-directory.md §metrics.jsonl). The file is created (or, on resume, cut back
// to the checkpoint's step) only when the first line is written, i.e. after the first step has
// succeeded: bad data (a token id >= vocab_size is found only when read) or a non-finite first
// loss leaves a previous run's files as they were. config.json is written at the same moment.
class MetricsLog {
 public:
  MetricsLog(const Config& config, const ResumeInfo& resume, bool overwrite)
      : config_(config),
        path_(config.train.out_dir + "/metrics.jsonl"),
        resume_(resume),
        overwrite_(overwrite) {}
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // extra: more keys of the line ("zero_gate", "experts_used"; "lock", "routing" for an
  // evaluation; a JSON object keeps them sorted). Every line ends with "time" (Unix seconds).
  void step(int step, const StepResult& r, int64_t tokens, double tok_per_s, double elapsed,
            int ranks, const nlohmann::json& extra) {
    write(
        "{\"step\": %d, \"loss\": %.9g, \"aux_loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, "
        "\"tokens\": %lld, \"tok_per_s\": %.1f, \"elapsed_s\": %.3f, \"ranks\": %d%s, "
        "\"time\": %.3f}\n",
        step, r.loss, r.aux_loss, r.lr, r.grad_norm, static_cast<long long>(tokens), tok_per_s,
        elapsed, ranks, more_keys(extra).c_str(), unix_time());
  }
  void eval(int step, double val_loss, const nlohmann::json& extra) {
    write("{\"step\": %d, \"val_loss\": %.9g, \"val_ppl\": %.6g%s, \"time\": %.3f}\n", step,
          val_loss, std::exp(val_loss), more_keys(extra).c_str(), unix_time());
  }
  // An event line ({"step", "event", ...}): a resume, a warning.
  void event(nlohmann::json line) {
    if (!file_) open();
    line["time"] = unix_time();
    file_->append(dump_json(line) + "\n");
  }

 private:
  static std::string more_keys(const nlohmann::json& extra) {
    std::string more;
    for (auto it = extra.begin(); it != extra.end(); ++it)
      more += ", \"" + it.key() + "\": " + dump_json(it.value());
    return more;
  }

  // One line, appended whole (AppendFile): a reader of the live file never sees half of it.
  template <class... Args>
  void write(const char* format, Args... args) {
    if (!file_) open();
    const int n = std::snprintf(nullptr, 0, format, args...);
    check(n >= 0, "cannot format a line of " + path_);
    std::string line(static_cast<size_t>(n) + 1, '\0');
    std::snprintf(line.data(), line.size(), format, args...);
    line.pop_back();
    file_->append(line);
  }

  // The first line of this run. A resume from an older checkpoint branches the run: the newer
  // checkpoints and the metrics lines of steps after it move into abandoned-<time>/ (said on the
  // console), so the directory holds one history; then the resume event line records where the
  // run continues from and which config keys changed.
  void open() {
    const std::string& out = config_.train.out_dir;
    make_dirs(out);
    if (!resume_.checkpoint.empty()) {
      const std::string abandoned = abandon_checkpoints_after(out, resume_.step);
      const std::string dropped = truncate_after(resume_.step);
      // Lines after the step with no checkpoint beyond it (a crash) are simply rewritten.
      if (!abandoned.empty()) {
        if (!dropped.empty()) write_file_atomic(abandoned + "/metrics.jsonl", dropped);
        std::printf("resume: the checkpoints after step %d and their metrics moved to %s\n",
                    resume_.step, abandoned.c_str());
      }
    } else {
      // A fresh run: with --overwrite, what the directory held moves aside now (the run has its
      // first good step; a run that fails before it leaves the directory as it was).
      const std::string aside = overwrite_ ? move_run_aside(out) : "";
      if (!aside.empty())
        std::printf("run directory: --overwrite: what %s held moved to %s\n", out.c_str(),
                    aside.c_str());
      write_file_atomic(path_, "");
    }
    write_file_atomic(out + "/config.json", dump_json(config_.to_json(), 2) + "\n");
    file_ = std::make_unique<AppendFile>(path_);
    if (!resume_.checkpoint.empty()) {
      event({{"step", resume_.step},
             {"event", "resume"},
             {"checkpoint", resume_.checkpoint},
             {"changed", resume_.changed},
             {"elapsed_s", resume_.elapsed_s}});
    }
  }

  // On resume: keep only the lines of steps <= the checkpoint's (this run rewrites the rest).
  // Returns the lines dropped.
  std::string truncate_after(int keep_through_step) {
    if (!path_exists(path_)) return "";
    std::istringstream in(read_file(path_));
    std::string line, kept, dropped;
    while (std::getline(in, line)) {
      const bool shallow = json_nesting_depth(line) <= kMaxJsonDepth;
      const auto j = shallow ? nlohmann::json::parse(line, nullptr, false) : nlohmann::json();
      const bool keep = shallow && !j.is_discarded() && j.is_object() && j.contains("step") &&
                        j["step"].is_number_integer() &&
                        j["step"].get<int64_t>() <= keep_through_step;
      (keep ? kept : dropped) += line + "\n";
    }
    write_file_atomic(path_, kept);
    return dropped;
  }

  const Config& config_;
  const std::string path_;
  const ResumeInfo resume_;
  const bool overwrite_;
  std::unique_ptr<AppendFile> file_;
};

// --resume: the trainer, the data position and the model's extra state from a checkpoint (the
// newest in train.out_dir unless a directory is named). --init-from: weights only. Rank 0 reads the
// files and hands every rank its part (weights, moments or their shard, ĝ): only rank 0 needs to
// see the run directory. Returns what was resumed (an empty checkpoint for a fresh start).
template <class B>
ResumeInfo restore(TrainerOn<B>& trainer, data::Loader& train_data, const Config& c,
                   const TrainOptions& options) {
  Communicator& comm = trainer.comm;
  const bool root = comm.rank() == 0;
  if (options.resume) {
    ResumeInfo info;
    std::string state_text;
    on_every_rank(comm, [&] {
      if (!root) return;
      std::string dir = options.resume_dir;
      if (dir.empty()) {
        dir = latest_checkpoint(c.train.out_dir);
        check(!dir.empty(),
              "--resume: no checkpoint found in train.out_dir '" + c.train.out_dir + "'");
      }
      const OpenedCheckpoint ck = open_checkpoint(dir, {}, /*check_data=*/false);
      check_same_model(ck, c, "--resume");
      check(ck.step < c.train.steps, "--resume: the checkpoint is at step " +
                                         std::to_string(ck.step) + ", train.steps is " +
                                         std::to_string(c.train.steps) + ": nothing to do");
      info.checkpoint = ck.dir;
      info.changed = config_changes(ck.config, c);
      state_text = dump_json(ck.state);
    });
    const nlohmann::json state = nlohmann::json::parse(comm.broadcast_string(state_text, 0));
    const auto host = trainer.gather_state();
    on_every_rank(comm, [&] {
      if (root)
        load_checkpoint(info.checkpoint, trainer.layout, host.params, host.exp_avg,
                        host.exp_avg_sq);
    });
    trainer.scatter_state();
    info.step = state.at("step").get<int>();
    info.tokens = state.at("tokens").get<int64_t>();
    info.elapsed_s = state.value("elapsed_s", 0.0);  // (absent in checkpoints before it existed)
    trainer.step = info.step;
    train_data.restore(state.at("data").at("train"));
    trainer.import_state(state);
    // The learning rate continues the checkpoint's schedule (engine/optimizer.h): a changed
    // train.steps re-plans the rest of the decay instead of jumping.
    const Config before = checkpoint_config(info.checkpoint, state, {}, /*check_data=*/false);
    const LrPlan saved = state.contains("schedule") ? LrPlan::from_json(state["schedule"])
                                                    : LrPlan{before.train.steps, 0, 0.0};
    trainer.lr_plan = continue_lr_plan(before.optim, saved, c.optim, c.train.steps, info.step,
                                       &info.schedule_notes);
    return info;
  }
  if (!options.init_from.empty()) {
    const auto host = trainer.gather_state();
    on_every_rank(comm, [&] {
      if (root) load_weights(options.init_from, trainer.layout, host.params);
    });
    trainer.scatter_state();
  }
  return ResumeInfo{};
}

template <class B>
void print_run_header(const TrainerOn<B>& trainer, const data::Loader& train_data,
                      BackendKind backend, int64_t tokens_per_step, const std::string& resumed,
                      const MemoryNeed& need) {
  const Config& c = trainer.config;
  const Layout& layout = trainer.layout;
  const int ranks = trainer.comm.size();
  std::printf(
      "unipool train | %s | %s, %d layers, d %d | %.2fM parameters (%.2fM active) | activations "
      "%.1f MiB (worst-case routing)",
      backend_banner(backend).c_str(), name_of(c.model.ffn), c.model.n_layer, c.model.d_model,
      layout.num_parameters() / 1e6, layout.active_parameters(false) / 1e6,
      trainer.model.activation_bytes() / 1048576.0);
  if (device_bytes(backend) > 0)
    std::printf(" | GPU memory %.1f MiB allocated at start-up", device_bytes(backend) / 1048576.0);
  std::printf("\nmemory per rank (%s, planned): %s\n", B::kWeightCopy ? "GPU" : "host",
              describe_parts(need).c_str());
  std::printf("ranks: %d (%s) | optimizer state %.1f MiB per rank (%s)\n", ranks,
              trainer.comm.transport(), trainer.optimizer_bytes() / 1048576.0,
              c.train.zero == 1
                  ? ("ZeRO-1: sharded over " + std::to_string(ranks) + " ranks").c_str()
                  : "ZeRO-0: replicated");
  std::printf(
      "data: %lld training samples of %d tokens | %lld tokens per step (%d ranks x %d x "
      "%d sequences) | %s\n",
      static_cast<long long>(train_data.num_samples()), c.model.seq_len,
      static_cast<long long>(tokens_per_step), ranks, c.train.micro_batch, c.train.grad_accum,
      resumed.empty() ? "fresh start" : ("resumed from " + resumed).c_str());
  std::fflush(stdout);
}

// UniPool-lock's transitions on the console (the details are in the evaluation line's "lock").
void print_lock_event(int step, const nlohmann::json& lock) {
  if (!lock.contains("event")) return;
  const auto& coverage =
      lock.contains("partition") ? lock["partition"]["coverage"] : lock["coverage"];
  double lowest = 1;
  for (const auto& x : coverage) lowest = std::min(lowest, x.get<double>());
  if (lock["event"] == "freeze") {
    std::printf(
        "step %5d | UniPool-lock: candidate sets chosen (%s), lowest layer coverage %.4f; "
        "the other experts fade out until the lock\n",
        step, lock["partition"]["status"].get<std::string>().c_str(), lowest);
  } else {
    std::printf(
        "step %5d | UniPool-lock: the sets are locked; each layer now routes inside its "
        "own experts\n",
        step);
  }
}

// The step's routing health on the progress line: per MoE layer the percentage of tokens with no
// expert (every chosen gate 0) and the experts that got a nonzero gate; for more than 8 layers
// the worst layer of each.
std::string describe_step_routing(const StepResult& r) {
  const size_t L = r.zero_gate.size();
  std::string zero, used;
  if (L <= 8) {
    for (size_t l = 0; l < L; ++l) {
      zero += (l ? "/" : "") + std::to_string(int(std::lround(100 * r.zero_gate[l])));
      used += (l ? "/" : "") + std::to_string(r.experts_used[l]);
    }
    return "zero-gate " + zero + "% | experts " + used;
  }
  const size_t worst = size_t(std::max_element(r.zero_gate.begin(), r.zero_gate.end()) -
                              r.zero_gate.begin());
  const size_t fewest = size_t(std::min_element(r.experts_used.begin(), r.experts_used.end()) -
                               r.experts_used.begin());
  return "zero-gate max " + std::to_string(int(std::lround(100 * r.zero_gate[worst]))) +
         "% (layer " + std::to_string(worst) + ") | experts min " +
         std::to_string(r.experts_used[fewest]) + " (layer " + std::to_string(fewest) + ")";
}

// Every `every` steps, and at the last step.
bool due(int step, int every, int last) {
  return every > 0 && (step % every == 0 || step == last);
}

// The whole run, on every rank (docs/distributed.md): rank 0 alone holds the run directory (its
// lock, metrics.jsonl, config.json, checkpoints) and prints; every rank trains on its slice of
// each global batch, and all of them take the same decisions (stop, evaluate, checkpoint) after
// the same step.
template <class B>
void train_on(const Config& c, const TrainOptions& options, BackendKind backend,
              Communicator& comm) {
  const bool root = comm.rank() == 0;
  const int ranks = comm.size();
  check_same_config_on_every_rank(comm, c);
  // The run directory is rank 0's until it exits (a second run on it fails at once), and the
  // leftovers of an interrupted writer are cleaned up.
  std::optional<DirLock> lock;
  on_every_rank(comm, [&] {
    if (!root) return;
    make_dirs(c.train.out_dir);
    lock.emplace(DirLock::acquire(c.train.out_dir, "train.out_dir"));
    for (const std::string& line : recover_run_directory(c.train.out_dir))
      std::printf("run directory: %s\n", line.c_str());
    // A fresh run never mixes with what the directory holds (docs/run-directory.md): refused
    // here, or with --overwrite moved aside at the first good step (MetricsLog).
    if (!options.resume) check_fresh_run_directory(c.train.out_dir, options.overwrite);
  });

  // Data first: a bad shard should stop the run before any work. Each rank reads its slice of
  // every global batch.
  data::LoaderSpec spec = loader_spec(c);
  spec.rank = comm.rank();
  spec.world_size = ranks;
  std::unique_ptr<data::Loader> train_data, valid_data;
  std::unique_ptr<TrainerOn<B>> trainer_owner;
  const MemoryNeed need = memory_need<B>(c, make_layout(c.model), Workload::train, ranks);
  on_every_rank(comm, [&] {
    train_data = std::make_unique<data::Loader>(spec, data::Split::train);
    if (c.train.eval_every > 0) {
      data::LoaderSpec held_out = validation_spec(c);
      held_out.rank = spec.rank;
      held_out.world_size = spec.world_size;
      valid_data = std::make_unique<data::Loader>(held_out, data::Split::valid);
    }
    check_memory(need, c, backend, "unipool train");
    trainer_owner = make_trainer_telling<B>(c, comm);
  });
  TrainerOn<B>& trainer = *trainer_owner;
  const ResumeInfo resumed = restore(trainer, *train_data, c, options);
  const int first_step = trainer.step, last_step = c.train.steps;
  const int64_t tokens_per_step =
      static_cast<int64_t>(ranks) * c.train.micro_batch * c.model.seq_len * c.train.grad_accum;
  // The unigram baseline (data/unigram.h): the loss of a model that knows only token frequencies.
  data::UnigramBaseline unigram;
  on_every_rank(comm, [&] {
    if (root) unigram = data::unigram_baseline(spec, data::Split::train);
  });
  if (root) {
    print_run_header(trainer, *train_data, backend, tokens_per_step, resumed.checkpoint, need);
    std::printf("data: unigram baseline %.4f nats per token (the entropy of the training split's "
                "token frequencies, %s %lld tokens)\n",
                unigram.entropy, unigram.whole ? "all" : "windows of",
                static_cast<long long>(unigram.tokens));
    for (auto it = resumed.changed.begin(); it != resumed.changed.end(); ++it)
      std::printf("resume: %s changed from %s to %s\n", it.key().c_str(),
                  describe_json(it.value()[0]).c_str(), describe_json(it.value()[1]).c_str());
    for (const std::string& note : resumed.schedule_notes) std::printf("resume: %s\n", note.c_str());
  }

  std::unique_ptr<MetricsLog> metrics;
  if (root) metrics = std::make_unique<MetricsLog>(c, resumed, options.overwrite);
  const StopSignals stop;
  auto next_train = [&](int32_t* in, int32_t* tg) {
    train_data->next_batch(c.train.micro_batch, in, tg);
  };
  auto next_valid = [&](int32_t* in, int32_t* tg) {
    valid_data->next_batch(c.train.micro_batch, in, tg);
  };
  std::string last_ckpt = resumed.checkpoint;
  std::vector<char> zero_gate_armed;  // per MoE layer: may warn (analysis::zero_gate_alarms)
  const Stopwatch run_time;
  while (trainer.step < last_step) {
    // One optimizer step. A non-finite loss stops the run (on every rank) before the update,
    // naming the checkpoint to resume from.
    const Stopwatch step_time;
    StepResult r;
    try {
      r = trainer.train_step(next_train);
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + ". Last good checkpoint: " +
                  (last_ckpt.empty() ? std::string("none written yet") : last_ckpt));
    }
    // A stop signal may reach some ranks only, or at different moments: the ranks agree on it
    // here, so that all of them stop after this same step.
    double stop_votes = stop.requested() != 0 ? 1.0 : 0.0;
    comm.all_reduce_sum(&stop_votes, 1);
    const int step = trainer.step;
    const double dt = step_time.seconds(), elapsed = run_time.seconds();
    const double tok_per_s = tokens_per_step / std::max(dt, 1e-9);
    const int64_t tokens = resumed.tokens + tokens_per_step * (step - first_step);
    if (root) {
      nlohmann::json routing = nlohmann::json::object();
      if (!r.zero_gate.empty()) {
        routing["zero_gate"] = r.zero_gate;
        routing["experts_used"] = r.experts_used;
      }
      metrics->step(step, r, tokens, tok_per_s, resumed.elapsed_s + elapsed, ranks, routing);
    }

    if (root && (due(step, c.train.log_every, last_step) || step == first_step + 1)) {
      const double eta = elapsed / (step - first_step) * (last_step - step);
      std::printf("step %5d/%d | loss %.4f | aux %.4f | lr %.2e | grad norm %.3f | %.0f tok/s",
                  step, last_step, r.loss, r.aux_loss, r.lr, r.grad_norm, tok_per_s);
      if (ranks > 1)
        std::printf(" (%.0f per rank, comm %.0f%%)", tok_per_s / ranks,
                    100.0 * r.comm_seconds / std::max(dt, 1e-9));
      if (!r.zero_gate.empty()) std::printf(" | %s", describe_step_routing(r).c_str());
      std::printf(" | ETA %s\n", format_duration(eta).c_str());
      std::fflush(stdout);
    }
    if (root)
      for (int layer : analysis::zero_gate_alarms(r.zero_gate, c.train.zero_gate_warning,
                                                  &zero_gate_armed)) {
        std::printf(
            "warning: step %d: MoE layer %d gives %.0f%% of its tokens no expert (every chosen "
            "gate is 0, so the layer adds nothing to them; train.zero_gate_warning = %g); "
            "docs/findings.md explains when this happens\n",
            step, layer, 100 * r.zero_gate[size_t(layer)], c.train.zero_gate_warning);
        std::fflush(stdout);
        metrics->event({{"step", step},
                        {"event", "zero_gate_warning"},
                        {"layer", layer},
                        {"zero_gate", r.zero_gate[size_t(layer)]},
                        {"threshold", c.train.zero_gate_warning}});
      }
    if (valid_data && due(step, c.train.eval_every, last_step)) {
      valid_data->reset();  // the same first eval_batches micro-batches every time
      const double val = trainer.evaluate(next_valid, c.train.eval_batches);
      const LockCurriculum::Decision lock_turn = trainer.lock_after_evaluation(val);
      if (root) {
        nlohmann::json extra = nlohmann::json::object();
        const nlohmann::json routing = trainer.routing_health();
        if (!routing.empty()) extra["routing"] = routing;
        if (!lock_turn.metrics.empty()) extra["lock"] = lock_turn.metrics;
        metrics->eval(step, val, extra);
        std::printf("step %5d/%d | val loss %.4f | val ppl %.2f", step, last_step, val,
                    std::exp(val));
        if (step == last_step) std::printf(" | unigram baseline %.4f", unigram.entropy);
        std::printf("\n");
        print_lock_event(step, lock_turn.metrics);
        std::fflush(stdout);
      }
      if (!lock_turn.stop.empty())
        throw Error(lock_turn.stop + ". Last good checkpoint: " +
                    (last_ckpt.empty() ? std::string("none written yet") : last_ckpt));
    }
    const bool stopping = stop_votes > 0;
    if (due(step, c.train.ckpt_every, last_step) || stopping) {
      nlohmann::json model_state = trainer.export_state();
      model_state["elapsed_s"] = resumed.elapsed_s + run_time.seconds();
      const auto host = trainer.gather_state();
      on_every_rank(comm, [&] {
        if (!root) return;
        const nlohmann::json state =
            make_checkpoint_state(step, tokens, c, train_data->state(), model_state);
        last_ckpt = save_checkpoint(c.train.out_dir, step, c.train.ckpt_keep, trainer.layout,
                                    host.params, host.exp_avg, host.exp_avg_sq, state);
        std::printf("step %5d/%d | checkpoint %s\n", step, last_step, last_ckpt.c_str());
        std::fflush(stdout);
      });
    }
    if (stopping && step < last_step) {
      const int sig = stop.requested();
      throw RunStopped(
          "stopped by " + (sig != 0 ? signal_name(sig) : std::string("a signal to another rank")) +
              " after step " + std::to_string(step) + " of " + std::to_string(last_step) +
              (root ? "; checkpoint " + last_ckpt + " written: continue with --resume"
                    : std::string()),
          sig != 0 ? sig : SIGTERM);
    }
  }
  if (root)
    std::printf("done: %d steps in %s\n", last_step - first_step,
                format_duration(run_time.seconds()).c_str());
}

}  // namespace

void run_train(const Config& c, const TrainOptions& options) {
  const BackendKind backend = select_backend(c);
  Communicator& comm = training_communicator(backend, c);
  on_backend(backend,
             [&](auto b) { train_on<typename decltype(b)::type>(c, options, backend, comm); });
}

}  // namespace unipool
