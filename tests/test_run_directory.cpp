// The run directory's safety (docs/failure.md): the lock that keeps a second `unipool train` out
// (base/fsutil.h DirLock), stop signals that end a run after a step with a checkpoint
// (engine/train.cpp), the clean-up of interrupted checkpoint writes and the branch a resume from an
// older checkpoint makes (engine/checkpoint.cpp), and names that only look like checkpoints. The
// cases run the real binary on a byte-encoded GPL-3 corpus (tests/train_fixtures.h).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fsutil.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/train.h"
#include "tests/catch.h"
#include "tests/small_config.h"
#include "tests/tempdir.h"
#include "tests/train_fixtures.h"

using namespace unipool;
using namespace unipool::test;  // tests/train_fixtures.h, tests/errors.h, small_config, TempDir

TEST_CASE("checkpoint_step parses ckpt-STEP with range checks", "[run-dir]") {
  CHECK(checkpoint_step("ckpt-0") == 0);
  CHECK(checkpoint_step("a/b/ckpt-7") == 7);
  CHECK(checkpoint_step("ckpt-2147483647") == INT32_MAX);
  CHECK(checkpoint_step("ckpt-2147483648") == -1);
  CHECK(checkpoint_step("ckpt-99999999999") == -1);
  CHECK(checkpoint_step("ckpt-") == -1);
  CHECK(checkpoint_step("ckpt-12a") == -1);
  CHECK(checkpoint_step("ckpt--4") == -1);
  CHECK(checkpoint_step("ckpt-3.tmp-77") == -1);
  CHECK(checkpoint_step("model-3") == -1);
}

TEST_CASE("a run directory has one writer: a second train fails at once naming the holder",
          "[run-dir]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const std::string out = tmp / "run";
  const std::string cfg = write_config(tmp, corpus, out, 2, 2);
  REQUIRE(run_binary("train --config '" + cfg + "'", tmp.path).status == 0);
  {
    const DirLock held = DirLock::acquire(out, "the test");
    REQUIRE(held.active());
    const Outcome second = run_binary("train --config '" + cfg + "' --set train.steps=3 --resume",
                                      tmp.path);
    INFO(second.out << second.err);
    CHECK(second.status != 0);
    CHECK(contains(second.err, "in use by another process"));
    CHECK(contains(second.err, "pid " + std::to_string(::getpid())));
    CHECK(checkpoint_dirs(out) == std::vector<std::string>{"ckpt-2"});  // nothing written
    // In-process too: the lock is per open file, so it holds against this process's own run.
    Config c = small_config(FfnKind::dense, corpus, out);
    c.train.steps = 3;
    TrainOptions resume;
    resume.resume = true;
    CHECK(contains(error_of([&] { run_train(c, resume); }), "in use by another process"));
    // Readers do not take the lock.
    const Outcome eval = run_binary("eval --checkpoint '" + out + "' --batches 1", tmp.path);
    INFO(eval.out << eval.err);
    CHECK(eval.status == 0);
    const Outcome sample = run_binary("sample --checkpoint '" + out + "' --tokens 3", tmp.path);
    INFO(sample.out << sample.err);
    CHECK(sample.status == 0);
  }
  // Released (by the holder's exit as well: the kernel drops a flock with the last descriptor).
  const Outcome third =
      run_binary("train --config '" + cfg + "' --set train.steps=3 --resume", tmp.path);
  INFO(third.out << third.err);
  CHECK(third.status == 0);
}

TEST_CASE("a stop signal ends the run after its step with a checkpoint, exit 128 + signal",
          "[run-dir]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  for (const int sig : {SIGTERM, SIGINT, SIGUSR1}) {
    DYNAMIC_SECTION("signal " << sig) {
      const std::string out = tmp / ("run" + std::to_string(sig));
      const std::string cfg = write_config(tmp, corpus, out, 100000, 0);  // no periodic checkpoint
      const pid_t pid =
          spawn_binary({"train", "--config", cfg}, tmp / "stdout.txt", tmp / "stderr.txt");
      const bool running = wait_until(
          [&] { return path_exists(out + "/metrics.jsonl") && train_lines(out, true).size() >= 2; }, 120);
      ::kill(pid, sig);
      const int status = wait_for_child(pid);
      const std::string err = read_file(tmp / "stderr.txt");
      INFO(read_file(tmp / "stdout.txt") << err);
      REQUIRE(running);
      REQUIRE(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 128 + sig);
      CHECK(contains(err, "stop requested"));
      CHECK(contains(err, "stopped by SIG"));
      const auto lines = train_lines(out);
      REQUIRE(!lines.empty());
      const int last = lines.rbegin()->first;
      CHECK(checkpoint_dirs(out) == std::vector<std::string>{"ckpt-" + std::to_string(last)});
      CHECK(contains(err, "ckpt-" + std::to_string(last)));
      CHECK(leftovers(out).empty());
      if (sig == SIGTERM) {  // the checkpoint continues the run
        const Outcome resumed = run_binary("train --config '" + cfg + "' --set train.steps=" +
                                               std::to_string(last + 2) + " --resume",
                                           tmp.path);
        INFO(resumed.out << resumed.err);
        CHECK(resumed.status == 0);
        CHECK(train_lines(out).size() == size_t(last + 2));
      }
    }
  }
}

// The second signal must arrive while the first is being honoured (during a step): the step here
// takes a while (grad_accum 16 on a wider model) and the second signal is sent as soon as the
// first one's message appears. Should the run still win the race (finish the step and its
// checkpoint in between), the case is tried again, up to three times.
TEST_CASE("a second stop signal ends the process at once", "[run-dir]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  Config c = small_config(FfnKind::dense, corpus, tmp / "run");
  c.model.d_model = 128;
  c.model.n_head = 4;
  c.model.ffn_hidden = 256;
  c.train.grad_accum = 16;
  c.train.steps = 100000;
  const std::string cfg = tmp / "slow.json";
  write_file_atomic(cfg, c.to_json().dump(2));
  bool aborted = false;
  std::string log;
  for (int attempt = 0; attempt < 3 && !aborted; ++attempt) {
    remove_tree(tmp / "run");
    const pid_t pid =
        spawn_binary({"train", "--config", cfg}, tmp / "stdout.txt", tmp / "stderr.txt");
    wait_until([&] { return path_exists(tmp / "run/metrics.jsonl"); }, 120);
    ::kill(pid, SIGINT);
    wait_until([&] { return contains(read_file(tmp / "stderr.txt"), "stop requested"); }, 30);
    ::kill(pid, SIGINT);
    const int status = wait_for_child(pid);
    aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGINT;
    log += "attempt " + std::to_string(attempt) + ": status " + std::to_string(status) + "\n" +
           read_file(tmp / "stderr.txt");
  }
  INFO(log);
  CHECK(aborted);
}

TEST_CASE("leftovers of interrupted checkpoint writes are cleaned up, and a failed write leaves none",
          "[run-dir]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const std::string out = tmp / "run";
  const std::string cfg = write_config(tmp, corpus, out, 4, 2);
  REQUIRE(run_binary("train --config '" + cfg + "'", tmp.path).status == 0);
  REQUIRE(checkpoint_dirs(out) == (std::vector<std::string>{"ckpt-2", "ckpt-4"}));

  SECTION("a writer that died mid-way: restored, removed, said") {
    // Died while replacing ckpt-2 (moved aside, replacement not yet in place), while filling
    // ckpt-6, and while writing metrics.jsonl.
    publish_dir(out + "/ckpt-2", out + "/ckpt-2.old-999999");
    make_dirs(out + "/ckpt-6.tmp-999999");
    write_file_atomic(out + "/ckpt-6.tmp-999999/model.safetensors", "half a file");
    write_file_atomic(out + "/metrics.jsonl.tmp.999999", "{\"step\": 9");
    const Outcome o =
        run_binary("train --config '" + cfg + "' --set train.steps=6 --resume", tmp.path);
    INFO(o.out << o.err);
    CHECK(o.status == 0);
    CHECK(contains(o.out, "restored " + out + "/ckpt-2"));
    CHECK(contains(o.out, "removed " + out + "/ckpt-6.tmp-999999"));
    CHECK(contains(o.out, "removed " + out + "/metrics.jsonl.tmp.999999"));
    CHECK(checkpoint_dirs(out) == (std::vector<std::string>{"ckpt-2", "ckpt-4", "ckpt-6"}));
    CHECK(leftovers(out).empty());
    CHECK(json::parse(read_file(out + "/ckpt-2/state.json")).at("step") == 2);
  }
  SECTION("a write that fails (file size limit, as a full disk) removes its temp directory") {
    const std::string out2 = tmp / "run2";
    const std::string cfg2 = write_config(tmp, corpus, out2, 2, 1, "config2.json");
    // 40 blocks: config.json and metrics.jsonl fit, model.safetensors does not.
    const Outcome o = run_binary("train --config '" + cfg2 + "'", tmp.path,
                                 "ulimit -f 40; trap '' XFSZ;");
    INFO(o.out << o.err);
    CHECK(o.status != 0);
    CHECK(contains(o.err, "File too large"));
    CHECK(checkpoint_dirs(out2).empty());
    CHECK(leftovers(out2).empty());
  }
}

TEST_CASE("resuming from an older checkpoint moves the newer ones aside and records the change",
          "[run-dir]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const std::string out = tmp / "run";
  const std::string cfg = write_config(tmp, corpus, out, 6, 2);
  REQUIRE(run_binary("train --config '" + cfg + "'", tmp.path).status == 0);
  const auto first = train_lines(out);
  REQUIRE(first.size() == 6);

  const Outcome o = run_binary(
      "train --config '" + cfg + "' --set optim.lr=0.002 --resume '" + out + "/ckpt-2'", tmp.path);
  INFO(o.out << o.err);
  REQUIRE(o.status == 0);
  CHECK(contains(o.out, "optim.lr changed from"));
  CHECK(contains(o.out, "moved to " + out + "/abandoned-"));
  std::string abandoned;
  for (const std::string& n : list_directory(out))
    if (n.rfind("abandoned-", 0) == 0) abandoned = out + "/" + n;
  REQUIRE(!abandoned.empty());
  CHECK(checkpoint_dirs(abandoned) == (std::vector<std::string>{"ckpt-4", "ckpt-6"}));
  const auto old_branch = train_lines(abandoned);  // the abandoned branch's metrics went along
  CHECK(old_branch.size() == 4);
  CHECK(old_branch.begin()->first == 3);
  CHECK(old_branch.at(3) == first.at(3));

  // One history in the run directory: steps 1, 2 of the first run, then the new branch.
  const auto now = train_lines(out);
  CHECK(now.size() == 6);
  CHECK(now.at(2) == first.at(2));
  CHECK(now.at(3).at("lr") != first.at(3).at("lr"));
  CHECK(checkpoint_dirs(out) == (std::vector<std::string>{"ckpt-2", "ckpt-4", "ckpt-6"}));
  const std::vector<json> events = events_of(out, "resume");
  REQUIRE(events.size() == 1);
  CHECK(events[0].at("step") == 2);
  CHECK(events[0].at("checkpoint") == out + "/ckpt-2");
  CHECK(events[0].at("changed").at("optim.lr").at(1) == 0.002);
  CHECK(!events[0].at("changed").contains("optim.min_lr"));
  // A plain --resume now continues the new branch: it is at its last step.
  const Outcome again =
      run_binary("train --config '" + cfg + "' --set optim.lr=0.002 --resume", tmp.path);
  CHECK(again.status != 0);
  CHECK(contains(again.err, "the checkpoint is at step 6"));
}

TEST_CASE("names that look like checkpoints but are not are ignored with a warning", "[run-dir]") {
  TempDir tmp;
  const std::string corpus = tmp / "gpl";
  REQUIRE_CORPUS(corpus);
  const std::string out = tmp / "run";
  const std::string cfg = write_config(tmp, corpus, out, 2, 1);
  REQUIRE(run_binary("train --config '" + cfg + "'", tmp.path).status == 0);
  make_dirs(out + "/ckpt-99999999999");
  write_file_atomic(out + "/ckpt-99999999999/state.json", "{}");
  make_dirs(out + "/ckpt-x1");
  write_file_atomic(out + "/ckpt-12abc", "a file");
  CHECK(latest_checkpoint(out) == out + "/ckpt-2");
  const Outcome resumed =
      run_binary("train --config '" + cfg + "' --set train.steps=3 --resume", tmp.path);
  INFO(resumed.out << resumed.err);
  CHECK(resumed.status == 0);
  CHECK(contains(resumed.err, "ignoring '" + out + "/ckpt-99999999999'"));
  CHECK(contains(resumed.err, "ignoring '" + out + "/ckpt-x1'"));
  CHECK(latest_checkpoint(out) == out + "/ckpt-3");
  CHECK(run_binary("eval --checkpoint '" + out + "' --batches 1", tmp.path).status == 0);
  CHECK(run_binary("sample --checkpoint '" + out + "' --tokens 2", tmp.path).status == 0);
}
