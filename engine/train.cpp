// The training loop: data → Trainer steps → metrics / evaluation / checkpoints.
#include "engine/train.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "data/loader.h"
#include "engine/checkpoint.h"
#include "base/error.h"
#include "base/fsutil.h"
#include "engine/backends.h"
#include "engine/trainer.h"

namespace unipool {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string format_duration(double s) {
  char buf[64];
  const long total = std::lround(s);
  if (total >= 3600) {
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", total / 3600, (total / 60) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ldm%02lds", total / 60, total % 60);
  }
  return buf;
}

// metrics.jsonl keeps one object per optimizer step; loss with 9 significant digits (docs/run-directory.md §metrics.jsonl).
std::string metrics_line(int step, const StepResult& r, int64_t tokens, double tok_per_s,
                         double elapsed) {
  char buf[512];
  std::snprintf(
      buf, sizeof buf,
      "{\"step\": %d, \"loss\": %.9g, \"aux_loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, "
      "\"tokens\": %lld, \"tok_per_s\": %.1f, \"elapsed_s\": %.3f}",
      step, r.loss, r.aux_loss, r.lr, r.grad_norm, static_cast<long long>(tokens), tok_per_s,
      elapsed);
  return buf;
}

// On resume, keep only the metrics of steps <= the checkpoint's step (a later run rewrites them).
void truncate_metrics(const std::string& path, int keep_through_step) {
  if (!path_exists(path)) return;
  std::istringstream in(read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("step") && j["step"].get<int>() <= keep_through_step)
      kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

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

}  // namespace

namespace {

template <class B>
void train_on(const Config& c, const TrainOptions& options, BackendKind backend) {
  const std::string& out = c.train.out_dir;

  // Data first: a bad shard should stop the run before any work.
  data::Loader train_data(loader_spec(c), data::Split::train);
  std::unique_ptr<data::Loader> valid_data;
  if (c.train.eval_every > 0)
    valid_data = std::make_unique<data::Loader>(loader_spec(c), data::Split::valid);

  TrainerOn<B> trainer(c);
  const Layout& layout = trainer.layout;
  std::string resumed_from;
  if (options.resume) {
    resumed_from = options.resume_dir.empty() ? latest_checkpoint(out) : options.resume_dir;
    check(!resumed_from.empty(), "--resume: no checkpoint found in train.out_dir '" + out + "'");
    // The model config is compared before any tensor is read, so that a checkpoint of another model
    // is refused naming the config key (not the first tensor whose shape differs). The checkpoint's
    // config is completed with today's defaults first: a key added since it was written is no
    // difference.
    const nlohmann::json state = read_checkpoint_state(resumed_from);
    const nlohmann::json theirs =
        checkpoint_config(resumed_from, state, {}, false).to_json()["model"];
    const nlohmann::json ours = c.to_json()["model"];
    for (auto it = ours.begin(); it != ours.end(); ++it) {
      check(theirs[it.key()] == it.value(),
            "--resume: model." + it.key() + " of the checkpoint (" + theirs[it.key()].dump() +
                ") differs from this run's (" + it.value().dump() + ")");
    }
    const auto host = trainer.host_state();
    load_checkpoint(resumed_from, layout, host.params, host.exp_avg, host.exp_avg_sq);
    trainer.commit_host_state();
    trainer.step = state["step"].get<int>();
    train_data.restore(state.at("data").at("train"));
    trainer.model.import_state(state);
    check(trainer.step < c.train.steps, "--resume: the checkpoint is at step " +
                                            std::to_string(trainer.step) + ", train.steps is " +
                                            std::to_string(c.train.steps) + ": nothing to do");
  } else if (!options.init_from.empty()) {
    load_weights(options.init_from, layout, trainer.host_state().params);
    trainer.commit_host_state();
  }

  // The run directory's files (metrics.jsonl, config.json) are written over only once the first
  // step has succeeded: bad data (a token id >= vocab_size is found only when read) or a non-finite
  // first loss leaves a previous run's files as they were.
  const std::string metrics_path = out + "/metrics.jsonl";
  std::FILE* metrics = nullptr;
  auto open_metrics = [&](int done_step) {
    make_dirs(out);
    if (options.resume) {
      truncate_metrics(metrics_path, done_step);
    } else {
      write_file_atomic(metrics_path, "");
    }
    write_file_atomic(out + "/config.json", c.to_json().dump(2) + "\n");
    metrics = std::fopen(metrics_path.c_str(), "a");
    check(metrics != nullptr, "cannot open " + metrics_path + " for appending");
  };

  const int64_t tokens_per_step =
      static_cast<int64_t>(c.train.micro_batch) * c.model.seq_len * c.train.grad_accum;
  std::printf(
      "unipool train | %s | %s, %d layers, d %d | %.2fM parameters (%.2fM active) | activations "
      "%.1f MiB (worst-case routing)",
      backend_banner(backend).c_str(), name_of(c.model.ffn), c.model.n_layer, c.model.d_model,
      layout.num_parameters() / 1e6, layout.active_parameters(false) / 1e6,
      trainer.model.activation_bytes() / 1048576.0);
  if (device_bytes(backend) > 0) {
    std::printf(" | GPU memory %.1f MiB allocated at start-up", device_bytes(backend) / 1048576.0);
  }
  std::printf("\n");
  std::printf("data: %lld training samples of %d tokens | %lld tokens per step | %s\n",
              static_cast<long long>(train_data.num_samples()), c.model.seq_len,
              static_cast<long long>(tokens_per_step),
              resumed_from.empty() ? "fresh start" : ("resumed from " + resumed_from).c_str());
  std::fflush(stdout);

  auto next_train = [&](int32_t* in, int32_t* tg) {
    train_data.next_batch(c.train.micro_batch, in, tg);
  };
  auto run_eval = [&]() {
    valid_data->reset();
    return trainer.evaluate(
        [&](int32_t* in, int32_t* tg) { valid_data->next_batch(c.train.micro_batch, in, tg); },
        c.train.eval_batches);
  };
  std::string last_ckpt = resumed_from;
  const auto t_start = Clock::now();
  const int first_step = trainer.step;
  while (trainer.step < c.train.steps) {
    const auto t0 = Clock::now();
    StepResult r;
    try {
      r = trainer.train_step(next_train);
    } catch (const Error& e) {
      if (metrics) std::fclose(metrics);
      throw Error(std::string(e.what()) + ". Last good checkpoint: " +
                  (last_ckpt.empty() ? std::string("none written yet") : last_ckpt));
    }
    const int step = trainer.step;
    const double dt = seconds_since(t0), elapsed = seconds_since(t_start);
    const double tok_per_s = tokens_per_step / std::max(dt, 1e-9);
    const double eta = elapsed / (step - first_step) * (c.train.steps - step);
    const std::string line = metrics_line(step, r, tokens_per_step * step, tok_per_s, elapsed);
    if (!metrics) open_metrics(first_step);
    std::fprintf(metrics, "%s\n", line.c_str());
    std::fflush(metrics);
    if (step % c.train.log_every == 0 || step == c.train.steps || step == first_step + 1) {
      std::printf(
          "step %5d/%d | loss %.4f | aux %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | ETA %s\n",
          step, c.train.steps, r.loss, r.aux_loss, r.lr, r.grad_norm, tok_per_s,
          format_duration(eta).c_str());
      std::fflush(stdout);
    }
    if (valid_data && (step % c.train.eval_every == 0 || step == c.train.steps)) {
      const double val = run_eval();
      std::fprintf(metrics, "{\"step\": %d, \"val_loss\": %.9g, \"val_ppl\": %.6g}\n", step, val,
                   std::exp(val));
      std::fflush(metrics);
      std::printf("step %5d/%d | val loss %.4f | val ppl %.2f\n", step, c.train.steps, val,
                  std::exp(val));
      std::fflush(stdout);
    }
    if (c.train.ckpt_every > 0 && (step % c.train.ckpt_every == 0 || step == c.train.steps)) {
      const nlohmann::json state = make_checkpoint_state(
          step, tokens_per_step * step, c, train_data.state(), trainer.model.export_state());
      const auto host = trainer.host_state();
      last_ckpt = save_checkpoint(out, step, c.train.ckpt_keep, layout, host.params, host.exp_avg,
                                  host.exp_avg_sq, state);
      std::printf("step %5d/%d | checkpoint %s\n", step, c.train.steps, last_ckpt.c_str());
      std::fflush(stdout);
    }
  }
  if (metrics) std::fclose(metrics);
  std::printf("done: %d steps in %s\n", c.train.steps - first_step,
              format_duration(seconds_since(t_start)).c_str());
}

}  // namespace

void run_train(const Config& c, const TrainOptions& options) {
  const BackendKind backend = select_backend(c);
  on_backend(backend, [&](auto b) { train_on<typename decltype(b)::type>(c, options, backend); });
}

}  // namespace unipool
