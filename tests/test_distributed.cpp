// Data-parallel training through the real launcher (docs/distributed.md): `mpiexec --oversubscribe
// -np N unipool train ...`, one OpenMP thread per rank, on the small configs of the training tests.
//   - 2 ranks twice: bitwise identical losses, validation losses, weights, moments; ZeRO-1 = ZeRO-0
//     bitwise; 3 ranks give other numbers (the comparison has teeth);
//   - 2 ranks × grad_accum 1 against 1 rank × grad_accum 2 (the same samples, pool loss off since
//     ĝ is per rank): losses, norms and weights equal up to fp32 rounding (bounds below);
//   - a 2-rank run stopped by SIGTERM to ONE rank: both stop after the same step with a checkpoint;
//     resumed at 2 ranks it ends bitwise as the uninterrupted run; at 1 and 3 ranks it trains on
//     from the same data position with a continuous loss;
//   - a rank started with another config, a rank that fails to start, and a rank that stops
//     responding each end the whole run with a clear message within a time limit.
// Skipped (with a warning) when this build has no MPI or the GPL-3 corpus is missing.
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/fsutil.h"
#include "engine/checkpoint.h"
#include "engine/safetensors.h"
#include "model/layout.h"
#include "data/loader.h"
#include "engine/trainer.h"
#include "engine/train.h"
#include "tests/catch.h"
#include "tests/small_config.h"
#include "tests/tempdir.h"
#include "tests/train_fixtures.h"

using namespace unipool;
using namespace unipool::test;
using json = nlohmann::json;

namespace {

#ifdef UNIPOOL_MPIEXEC
constexpr const char* kMpiexec = UNIPOOL_MPIEXEC;
#else
constexpr const char* kMpiexec = "";
#endif

#define REQUIRE_MPI()                                                           \
  if (std::string(kMpiexec).empty()) {                                          \
    WARN("skipped: this build has no MPI (install OpenMPI: scripts/setup.sh)"); \
    return;                                                                     \
  }

// The environment of every launch: one thread per rank, and mpiexec allowed to run as root (CI).
const std::string kEnv =
    "OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
    "OMPI_MCA_rmaps_base_oversubscribe=1 PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe ";

std::string quoted(const std::string& s) {
  return "'" + s + "'";
}

// `mpiexec -np N unipool ARGS` (or an MPMD line given whole), at most `limit` seconds.
std::string launch_line(int ranks, const std::string& args) {
  return kEnv + quoted(kMpiexec) + " --oversubscribe -np " + std::to_string(ranks) + " " +
         quoted(UNIPOOL_BINARY) + " " + args;
}

// The config file of a run: the small config of `ffn` into out_dir, with `edit` applied.
template <class Edit>
std::string config_file(const TempDir& tmp, const std::string& corpus, const std::string& name,
                        FfnKind ffn, Edit edit) {
  Config c = small_config(ffn, corpus, tmp / name);
  c.train.threads = 1;
  c.train.eval_every = 3;
  c.train.eval_batches = 3;  // not a multiple of the rank count: the last round is partial
  c.train.ckpt_every = 6;
  c.train.ckpt_keep = 10;
  edit(c);
  const std::string path = tmp / (name + ".json");
  write_file_atomic(path, c.to_json().dump(2));
  return path;
}

// Trains `config` on `ranks` ranks; the run must succeed.
void train_ranks(int ranks, const std::string& config, const std::string& scratch,
                 const std::string& extra = "") {
  const Outcome o =
      run_shell(launch_line(ranks, "train --config " + quoted(config) + extra), scratch, 120);
  INFO("stdout:\n" << o.out << "\nstderr:\n" << o.err);
  REQUIRE(o.status == 0);
}

void require_same_file(const std::string& a, const std::string& b) {
  INFO(a << " vs " << b);
  REQUIRE(path_exists(a));
  REQUIRE(path_exists(b));
  CHECK(read_file(a) == read_file(b));
}

// The largest |a − b| over the tensors of two model.safetensors.
double max_weight_difference(const std::string& a, const std::string& b, double* largest_weight) {
  const SafetensorsFile fa = read_safetensors(a), fb = read_safetensors(b);
  double worst = 0, largest = 0;
  for (const auto& [name, t] : fa.tensors) {
    const SafeTensor& u = fb.tensors.at(name);
    REQUIRE(u.data.size() == t.data.size());
    for (size_t i = 0; i < t.data.size(); ++i) {
      worst = std::max(worst, std::fabs(double(t.data[i]) - double(u.data[i])));
      largest = std::max(largest, std::fabs(double(t.data[i])));
    }
  }
  *largest_weight = largest;
  return worst;
}

// Processes whose command line starts with the unipool binary and contains `needle` (the ranks
// of one run, told apart by their config path), from /proc (no procps needed).
std::vector<pid_t> rank_processes(const std::string& needle) {
  std::vector<pid_t> pids;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return pids;
  while (const dirent* e = ::readdir(proc)) {
    const pid_t pid = pid_t(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::string cmdline;
    try {
      cmdline = read_file("/proc/" + std::string(e->d_name) + "/cmdline");
    } catch (...) {
      continue;
    }
    for (char& ch : cmdline)
      if (ch == '\0') ch = ' ';
    if (cmdline.rfind(std::string(UNIPOOL_BINARY) + " train", 0) == 0 &&
        cmdline.find(needle) != std::string::npos)
      pids.push_back(pid);
  }
  ::closedir(proc);
  std::sort(pids.begin(), pids.end());
  return pids;
}

// `line` in the background through sh (stdout/stderr to scratch); returns the shell's pid.
pid_t spawn_shell(const std::string& line, const std::string& scratch) {
  make_dirs(scratch);
  const std::string cmd = "exec sh -c " + quoted(line) + " >" + quoted(scratch + "/stdout.txt") +
                          " 2>" + quoted(scratch + "/stderr.txt");
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// A 2-rank training of `config` (writing into out_dir) started in the background once it has
// logged `min_steps` steps; returns the launcher's pid, and the ranks' pids in *ranks.
pid_t start_two_ranks(const std::string& config, const std::string& out_dir,
                      const std::string& scratch, size_t min_steps, std::vector<pid_t>* ranks) {
  const pid_t launcher = spawn_shell(launch_line(2, "train --config " + quoted(config)), scratch);
  const bool training = wait_until(
      [&] {
        *ranks = rank_processes(config);
        return ranks->size() == 2 && path_exists(out_dir + "/metrics.jsonl") &&
               train_lines(out_dir, true).size() >= min_steps;
      },
      60);
  INFO("stderr:\n"
       << (path_exists(scratch + "/stderr.txt") ? read_file(scratch + "/stderr.txt")
                                                : std::string()));
  REQUIRE(training);
  return launcher;
}

}  // namespace

TEST_CASE("2 ranks: bitwise reproducible, ZeRO-1 = ZeRO-0 bitwise, checkpoints hold every rank's ĝ",
          "[mpi]") {
  REQUIRE_MPI();
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const auto none = [](Config&) {};
  const std::string a = config_file(tmp, corpus, "a", FfnKind::unipool, none);
  const std::string b = config_file(tmp, corpus, "b", FfnKind::unipool, none);
  const std::string z =
      config_file(tmp, corpus, "z", FfnKind::unipool, [](Config& c) { c.train.zero = 1; });
  const std::string three = config_file(tmp, corpus, "three", FfnKind::unipool, none);
  train_ranks(2, a, tmp / "a-log");
  train_ranks(2, b, tmp / "b-log");
  train_ranks(2, z, tmp / "z-log");
  train_ranks(3, three, tmp / "three-log");
  CHECK(contains(read_file(tmp / "a-log/stdout.txt"), "ranks: 2 (MPI)"));
  CHECK(contains(read_file(tmp / "z-log/stdout.txt"), "ZeRO-1: sharded over 2 ranks"));

  const auto ref = train_lines(tmp / "a");
  REQUIRE(ref.size() == 6);
  for (const char* run : {"b", "z"}) {
    INFO("run " << run << " vs run a");
    const auto lines = train_lines(tmp / run);
    REQUIRE(lines.size() == ref.size());
    for (const auto& [step, j] : ref) {
      INFO("step " << step);
      CHECK(j.at("ranks") == 2);
      for (const char* key : {"loss", "aux_loss", "grad_norm", "tokens"})
        CHECK(lines.at(step).at(key).get<double>() == j.at(key).get<double>());
    }
    CHECK(val_losses(tmp / run) == val_losses(tmp / "a"));
    // The evaluation lines' routing health (counts summed over the ranks) too.
    const auto routing_of = [&](const std::string& dir) {
      std::vector<json> r;
      for (const json& j : read_jsonl(dir + "/metrics.jsonl"))
        if (j.contains("val_loss")) r.push_back(j.at("routing"));
      return r;
    };
    CHECK(routing_of(tmp / run) == routing_of(tmp / "a"));
    CHECK(routing_of(tmp / "a").at(0).at("layers").size() == 2);
    // One process evaluating the final weights on the same 3 validation micro-batches counts what
    // the 2 ranks counted together (the ranks' counts are summed, not one rank's reported).
    Config one = load_config(read_config_file(a), {}, false);
    Trainer trainer(one);
    const double val = evaluate_weights(trainer, one, tmp / "a/ckpt-6/model.safetensors", 3);
    CHECK(val == Approx(val_losses(tmp / "a").at(6)).epsilon(1e-6));
    CHECK(trainer.routing_health() == routing_of(tmp / "a").at(1));
    REQUIRE(val_losses(tmp / run).size() == 2);
    for (const char* f : kCkptFiles)
      if (std::string(f) != "state.json")
        require_same_file(tmp / (std::string(run) + "/ckpt-6/" + f),
                          tmp / ("a/ckpt-6/" + std::string(f)));
  }
  // Global batch = ranks × micro_batch × grad_accum sequences of 32 tokens.
  CHECK(ref.at(6).at("tokens").get<int64_t>() == 6 * 2 * 4 * 2 * 32);
  const json state = json::parse(read_file(tmp / "a/ckpt-6/state.json"));
  REQUIRE(state.at("pool_loss").at("ranks").size() == 2);
  CHECK(state["pool_loss"]["ghat"] == state["pool_loss"]["ranks"][0]["ghat"]);
  CHECK(state["pool_loss"]["ranks"][0]["ghat"] != state["pool_loss"]["ranks"][1]["ghat"]);
  CHECK(json::parse(read_file(tmp / "z/ckpt-6/state.json")).at("pool_loss") ==
        state.at("pool_loss"));
  // Teeth: 3 ranks take other batches, so other losses and weights.
  CHECK(train_lines(tmp / "three").at(2).at("loss") != ref.at(2).at("loss"));
  CHECK(read_file(tmp / "three/ckpt-6/model.safetensors") !=
        read_file(tmp / "a/ckpt-6/model.safetensors"));
}

TEST_CASE("2 ranks through UniPool-lock's phases: one decision for all, resumed bit for bit",
          "[mpi][lock]") {
  REQUIRE_MPI();
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  // 24 steps; the freeze after step 6, the lock after step 12 (tests/test_lock_train.cpp's run).
  const auto lock_run = [](Config& c) {
    c.train.steps = 24;
    c.train.eval_every = 2;
    c.train.ckpt_every = 4;
    c.model.top_k = 2;
    c.model.lock.enabled = true;
    c.model.lock.lock_fraction = 0.5;
    c.model.lock.anneal_fraction = 0.25;
    c.model.lock.entropy_warmup_fraction = 0.125;
    c.model.lock.entropy_target = 2;
  };
  const std::string full = config_file(tmp, corpus, "full", FfnKind::unipool, lock_run);
  train_ranks(2, full, tmp / "full-log");
  const json state = json::parse(read_file(tmp / "full/ckpt-24/state.json"));
  CHECK(state["lock"]["phase"] == "locked");
  CHECK(state["lock"]["partition"].size() == 2);
  CHECK(state["pool_loss"]["ranks"].size() == 2);
  for (const json& j : read_jsonl(tmp / "full/metrics.jsonl")) {
    if (!j.contains("val_loss")) continue;
    const int step = j["step"];
    INFO("step " << step);
    CHECK(j["lock"].value("event", "") == (step == 6 ? "freeze" : step == 12 ? "lock" : ""));
    if (step > 12) CHECK(j["lock"]["off_mask_routes"] == 0.0);
  }
  // Resumed in the anneal at 2 ranks: the same run.
  const std::string again = config_file(tmp, corpus, "again", FfnKind::unipool, lock_run);
  train_ranks(2, again, tmp / "again-log", " --resume " + quoted(tmp / "full/ckpt-8"));
  require_same_file(tmp / "again/ckpt-24/model.safetensors",
                    tmp / "full/ckpt-24/model.safetensors");
  CHECK(json::parse(read_file(tmp / "again/ckpt-24/state.json"))["lock"] == state["lock"]);
}

TEST_CASE("2 ranks x grad_accum 1 = 1 rank x grad_accum 2 up to fp32 rounding", "[mpi]") {
  REQUIRE_MPI();
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  // moe-bias: aux-free routing, whose bias update needs the loads of all ranks (with a rank's own
  // loads the ranks' biases, and so their models, would part).
  for (const char* variant_name : {"unipool", "moe", "moe-bias"}) {
    const std::string variant = variant_name;
    const FfnKind ffn = variant == "unipool" ? FfnKind::unipool : FfnKind::moe;
    DYNAMIC_SECTION(variant) {
      const auto pool_off = [&](Config& c) {
        c.loss.pool_aux_coeff = 0;  // ĝ is per rank: the pool loss would differ by design
        c.train.eval_batches = 4;
        if (variant == "moe-bias") {
          c.model.router = RouterKind::sigmoid;
          c.model.expert_bias = true;
          c.loss.aux_coeff = 0;
          c.loss.bias_update_rate = 0.01;
        }
      };
      const std::string two = config_file(tmp, corpus, variant + "-two", ffn, [&](Config& c) {
        pool_off(c);
        c.train.grad_accum = 1;
      });
      const std::string one = config_file(tmp, corpus, variant + "-one", ffn, [&](Config& c) {
        pool_off(c);
        c.train.grad_accum = 2;
      });
      train_ranks(2, two, tmp / (variant + "-two-log"));
      train_ranks(1, one, tmp / (variant + "-one-log"));
      const auto a = train_lines(tmp / (variant + "-two")),
                 b = train_lines(tmp / (variant + "-one"));
      REQUIRE(a.size() == 6);
      REQUIRE(b.size() == 6);
      // Bounds: the two runs add the same terms in another order (the micro-batch gradients are
      // summed by the ranks' reduce-scatter instead of accumulated in one buffer), a relative
      // difference of a few fp32 ulps (~1e-7) per step that AdamW carries on; over 6 steps the
      // losses stay within 1e-5 relative, the weights within 1e-5 absolute (lr 3e-3).
      for (int step = 1; step <= 6; ++step) {
        INFO("step " << step);
        CHECK(a.at(step).at("tokens") == b.at(step).at("tokens"));
        for (const char* key : {"loss", "aux_loss", "grad_norm"}) {
          const double x = a.at(step).at(key), y = b.at(step).at(key);
          INFO(key << ": 2 ranks " << x << ", 1 rank " << y);
          CHECK(std::fabs(x - y) <= 1e-5 * std::max(1.0, std::fabs(y)));
        }
      }
      const auto va = val_losses(tmp / (variant + "-two")),
                 vb = val_losses(tmp / (variant + "-one"));
      REQUIRE(va.size() == 2);
      for (const auto& [step, v] : vb) CHECK(std::fabs(va.at(step) - v) <= 1e-5 * v);
      double largest = 0;
      const double diff =
          max_weight_difference(tmp / (variant + "-two/ckpt-6/model.safetensors"),
                                tmp / (variant + "-one/ckpt-6/model.safetensors"), &largest);
      INFO("largest weight " << largest << ", largest difference " << diff);
      CHECK(diff <= 1e-5);
      CHECK(largest > 0.01);  // the weights are not trivially equal
    }
  }
}

TEST_CASE(
    "a 2-rank run stopped by a signal to one rank resumes at 2 ranks bit-exactly, at 1 and 3 "
    "ranks from the same data position",
    "[mpi]") {
  REQUIRE_MPI();
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const int steps = 1000;
  const auto long_run = [&](Config& c) {
    c.train.steps = steps;
    c.train.eval_every = 0;
    c.train.ckpt_every = steps;
    c.train.ckpt_keep = 2;
  };
  const std::string full = config_file(tmp, corpus, "full", FfnKind::unipool, long_run);
  train_ranks(2, full, tmp / "full-log");

  // The same run, SIGTERM to rank 1 only, once it is training.
  const std::string cut = config_file(tmp, corpus, "cut", FfnKind::unipool, long_run);
  std::vector<pid_t> ranks;
  const pid_t launcher = start_two_ranks(cut, tmp / "cut", tmp / "cut-log", 100, &ranks);
  // Rank 1 is the second process started (pids grow), a guess that does not matter: either
  // rank's signal must stop both.
  ::kill(ranks[1], SIGTERM);
  const int status = wait_for_child(launcher);
  const std::string out = read_file(tmp / "cut-log/stdout.txt");
  const std::string err = read_file(tmp / "cut-log/stderr.txt");
  INFO("stdout:\n" << out << "\nstderr:\n" << err);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  const std::string ckpt = latest_checkpoint(tmp / "cut");
  REQUIRE(!ckpt.empty());
  const json stopped = json::parse(read_file(ckpt + "/state.json"));
  const int stop_step = stopped.at("step");
  REQUIRE(stop_step < steps);
  CHECK(contains(err, "stopped by"));
  CHECK(contains(out, "checkpoint"));

  // At 2 ranks: the continuation is the uninterrupted run, bit for bit.
  const std::string again = config_file(tmp, corpus, "again", FfnKind::unipool, long_run);
  train_ranks(2, again, tmp / "again-log", " --resume " + quoted(ckpt));
  const std::string last = "/ckpt-" + std::to_string(steps) + "/";
  require_same_file(tmp / ("again" + last + "model.safetensors"),
                    tmp / ("full" + last + "model.safetensors"));
  require_same_file(tmp / ("again" + last + "optimizer.safetensors"),
                    tmp / ("full" + last + "optimizer.safetensors"));
  const auto full_lines = train_lines(tmp / "full");
  const auto again_lines = train_lines(tmp / "again");
  for (int step = stop_step + 1; step <= steps; step += 37)
    CHECK(again_lines.at(step).at("loss") == full_lines.at(step).at("loss"));

  // At 1 and 3 ranks: the same data position, the loss goes on from where it was.
  const auto position = [](const json& state) {
    return state.at("data").at("train").at("samples_drawn").get<int64_t>();
  };
  const int64_t stop_position = position(stopped);
  CHECK(stop_position == int64_t(stop_step) * 2 * 4 * 2);  // steps × ranks × batch × accum
  for (int ranks_now : {1, 3}) {
    const std::string name = "resumed-at-" + std::to_string(ranks_now);
    const std::string cfg = config_file(tmp, corpus, name, FfnKind::unipool, [&](Config& c) {
      long_run(c);
      c.train.steps = stop_step + 4;
      c.train.ckpt_every = stop_step + 4;
    });
    train_ranks(ranks_now, cfg, tmp / (name + "-log"), " --resume " + quoted(ckpt));
    const json end = json::parse(
        read_file(tmp / (name + "/ckpt-" + std::to_string(stop_step + 4) + "/state.json")));
    INFO(name);
    CHECK(position(end) == stop_position + int64_t(4) * ranks_now * 4 * 2);
    CHECK(end.at("tokens").get<int64_t>() ==
          stopped.at("tokens").get<int64_t>() + int64_t(4) * ranks_now * 4 * 2 * 32);
    CHECK(end.at("pool_loss").at("ranks").size() == size_t(ranks_now));
    // Continuous: the first resumed step's loss is near the interrupted run's last one, far from
    // the untrained model's (ln 257 ≈ 5.55).
    const auto lines = train_lines(tmp / name);
    const double before = full_lines.at(stop_step).at("loss"),
                 after = lines.at(stop_step + 1).at("loss");
    INFO("loss before " << before << ", after " << after << ", at step 1 "
                        << full_lines.at(1).at("loss").get<double>());
    CHECK(std::fabs(after - before) < 0.5);
    CHECK(full_lines.at(1).at("loss").get<double>() - before > 1.0);  // it had learned
  }
}

TEST_CASE(
    "a rank with another config, a rank that fails to start or stops responding: a clear "
    "error within a time limit",
    "[mpi]") {
  REQUIRE_MPI();
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const std::string cfg = config_file(tmp, corpus, "run", FfnKind::dense,
                                      [](Config& c) { c.train.comm_timeout_s = 5; });
  const std::string exe = quoted(UNIPOOL_BINARY);

  SECTION("another config on rank 1") {
    const std::string line = kEnv + quoted(kMpiexec) + " --oversubscribe -np 1 " + exe +
                             " train --config " + quoted(cfg) + " : -np 1 " + exe +
                             " train --config " + quoted(cfg) + " --set train.seed=7";
    const Stopwatch took;
    const Outcome o = run_shell(line, tmp / "mismatch", 60);
    INFO("stdout:\n" << o.out << "\nstderr:\n" << o.err);
    CHECK(o.status != 0);
    CHECK(took.seconds() < 30);
    CHECK(contains(o.err, "rank 1: its config differs from rank 0's"));
    CHECK(!path_exists(tmp / "run/metrics.jsonl"));
  }
  SECTION("rank 1 fails to start (its config file is missing)") {
    const std::string line = kEnv + quoted(kMpiexec) + " --oversubscribe -np 1 " + exe +
                             " train --config " + quoted(cfg) + " : -np 1 " + exe +
                             " train --config " + quoted(tmp / "missing.json");
    const Stopwatch took;
    const Outcome o = run_shell(line, tmp / "missing", 60);
    INFO("stdout:\n" << o.out << "\nstderr:\n" << o.err);
    CHECK(o.status != 0);
    CHECK(took.seconds() < 30);
    CHECK(contains(o.err, "missing.json"));
  }
  SECTION("rank 1 stops responding (SIGSTOP): rank 0 times out") {
    const std::string slow = config_file(tmp, corpus, "slow", FfnKind::dense, [](Config& c) {
      c.train.comm_timeout_s = 3;
      c.train.steps = 100000;
      c.train.eval_every = 0;
      c.train.ckpt_every = 0;
    });
    std::vector<pid_t> ranks;
    const pid_t launcher = start_two_ranks(slow, tmp / "slow", tmp / "stuck", 1, &ranks);
    const Stopwatch took;
    ::kill(ranks[1], SIGSTOP);
    const int status = wait_for_child(launcher);
    for (pid_t p : ranks) ::kill(p, SIGKILL);  // (gone already when the launcher ended them)
    const std::string err = read_file(tmp / "stuck/stderr.txt");
    INFO("stderr:\n" << err);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) != 0);
    CHECK(took.seconds() < 30);
    CHECK(contains(err, "did not complete within 3 s"));
  }
}

TEST_CASE(
    "srun without MPI: CPU ranks are refused with a message, a batch script's plain command "
    "is one process",
    "[mpi]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const std::string cfg = config_file(tmp, corpus, "run", FfnKind::dense, [](Config& c) {
    c.train.steps = 2;
    c.train.eval_every = 0;
    c.train.ckpt_every = 0;
  });
  const std::string exe = quoted(UNIPOOL_BINARY);
  // A task of `srun -n 2` (the variables srun sets) that has no MPI environment.
  const Outcome srun_task = run_shell(
      "SLURM_STEP_NUM_TASKS=2 SLURM_NTASKS=2 SLURM_PROCID=0 "
      "SLURM_LOCALID=0 " +
          exe + " train --config " + quoted(cfg),
      tmp / "srun", 60);
  INFO("stderr:\n" << srun_task.err);
  CHECK(srun_task.status == 1);
  CHECK(contains(srun_task.err, "this process is one of 2 ranks"));
  CHECK(!path_exists(tmp / "run/metrics.jsonl"));
  // In a batch script (SLURM_NTASKS set for the job, no step): one process, it trains.
  const Outcome batch = run_shell(
      "SLURM_NTASKS=4 SLURM_JOB_ID=7 " + exe + " train --config " + quoted(cfg), tmp / "batch", 60);
  INFO("stderr:\n" << batch.err);
  CHECK(batch.status == 0);
  CHECK(train_lines(tmp / "run").size() == 2);
}

TEST_CASE("unipool bench under mpiexec: rank 0 reports global tok/s and the communication time",
          "[mpi]") {
  REQUIRE_MPI();
  TempDir tmp;
  const Outcome o =
      run_shell(launch_line(2,
                            "bench --config tiny --set model.vocab_size=512 --set model.seq_len=64 "
                            "--set train.micro_batch=2 --set train.threads=1 --steps 2 --warmup 1"),
                tmp / "bench", 120);
  INFO("stdout:\n" << o.out << "\nstderr:\n" << o.err);
  REQUIRE(o.status == 0);
  CHECK(contains(o.out, "ranks: 2 (MPI), ZeRO-0 | 256 tokens per step over all ranks"));
  CHECK(contains(o.out, "communication:"));
  // Only rank 0 prints: one result line.
  size_t results = 0;
  for (size_t at = o.out.find("result:"); at != std::string::npos;
       at = o.out.find("result:", at + 1))
    ++results;
  CHECK(results == 1);
}
