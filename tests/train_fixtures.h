// Fixtures of the end-to-end training tests (tests/test_train.cpp, tests/test_run_directory.cpp): a
// byte-encoded corpus cut from /usr/share/common-licenses/GPL-3 (the cases that need it skip with a
// warning when it is missing), readers of metrics.jsonl and of a run directory, and the `unipool`
// binary run as a child process.
#pragma once
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/fsutil.h"
#include "data/loader.h"
#include "data/shards.h"
#include "data/tokenize.h"
#include "engine/checkpoint.h"
#include "engine/safetensors.h"
#include "engine/train.h"
#include "engine/trainer.h"
#include "tests/catch.h"
#include "tests/errors.h"  // error_of, contains
#include "tests/small_config.h"
#include "tests/tempdir.h"

namespace unipool::test {

using json = nlohmann::json;

inline const char* const kGplPath = "/usr/share/common-licenses/GPL-3";

// A text (GPL-3 by default) cut at blank lines into paragraph documents, byte-encoded with EOD
// appended. Returns false (nothing written) when the file is missing.
inline bool write_gpl_corpus(const std::string& prefix, const std::string& source = kGplPath) {
  if (!path_exists(source)) return false;
  const std::string text = read_file(source);
  std::vector<std::vector<int32_t>> docs;
  std::istringstream in(text);
  std::string line, paragraph;
  auto flush = [&]() {
    if (!paragraph.empty()) docs.push_back(data::encode_bytes(paragraph));
    paragraph.clear();
  };
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      flush();
    } else {
      paragraph += line + "\n";
    }
  }
  flush();
  REQUIRE(docs.size() > 30);
  data::write_megatron(prefix, docs);
  return true;
}

#define REQUIRE_CORPUS(prefix)                                                  \
  if (!::unipool::test::write_gpl_corpus(prefix)) {                             \
    WARN("skipped: " << ::unipool::test::kGplPath                               \
                     << " is missing (the training tests use it as a corpus)"); \
    return;                                                                     \
  }

// Every line of a JSON-lines file. A file still being written (`live`) may end in a line the writer
// has not finished: that one is left out; in a finished file every line must parse.
inline std::vector<json> read_jsonl(const std::string& path, bool live = false) {
  std::vector<json> out;
  std::string text = read_file(path);
  const size_t last_newline = text.find_last_of('\n');
  if (live) text.erase(last_newline == std::string::npos ? 0 : last_newline + 1);
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    out.push_back(json::parse(line));
  }
  return out;
}

// The training lines (those with "loss") of metrics.jsonl, by step; `live` as in read_jsonl.
inline std::map<int, json> train_lines(const std::string& out_dir, bool live = false) {
  std::map<int, json> lines;
  for (const json& j : read_jsonl(out_dir + "/metrics.jsonl", live))
    if (j.contains("loss")) lines[j.at("step").get<int>()] = j;
  return lines;
}

inline std::map<int, double> val_losses(const std::string& out_dir) {
  std::map<int, double> v;
  for (const json& j : read_jsonl(out_dir + "/metrics.jsonl"))
    if (j.contains("val_loss")) v[j.at("step").get<int>()] = j.at("val_loss").get<double>();
  return v;
}

inline std::vector<std::string> checkpoint_dirs(const std::string& out_dir) {
  std::vector<std::string> found;
  for (const std::string& n : list_directory(out_dir))
    if (n.rfind("ckpt-", 0) == 0) found.push_back(n);
  return found;
}

// Names anywhere under path that look like leftovers of an atomic write (".tmp", ".old").
inline std::vector<std::string> leftovers(const std::string& path) {
  std::vector<std::string> bad;
  for (const std::string& n : list_directory(path)) {
    if (n.find(".tmp") != std::string::npos || n.find(".old") != std::string::npos)
      bad.push_back(path + "/" + n);
    for (const std::string& sub : leftovers(path + "/" + n)) bad.push_back(sub);
  }
  return bad;
}

inline const char* const kCkptFiles[] = {"model.safetensors", "optimizer.safetensors",
                                         "state.json"};

inline void copy_checkpoint(const std::string& from, const std::string& to) {
  make_dirs(to);
  for (const char* f : kCkptFiles) write_file_atomic(to + "/" + f, read_file(from + "/" + f));
}

struct Outcome {
  int status;
  std::string out, err;
};

// The metrics.jsonl event lines of one kind ("resume", "zero_gate_warning", ...), in order.
inline std::vector<json> events_of(const std::string& out_dir, const std::string& kind) {
  std::vector<json> events;
  for (const json& j : read_jsonl(out_dir + "/metrics.jsonl"))
    if (j.value("event", "") == kind) events.push_back(j);
  return events;
}

// The arena's tensors under their checkpoint names (write_safetensors: a weights file for
// --init-from).
inline std::vector<TensorRef> arena_refs(const Layout& layout, const float* arena) {
  std::vector<TensorRef> refs;
  for (const ParamTensor& t : layout.tensors) refs.push_back({t.name, t.shape, arena + t.offset});
  return refs;
}

// Runs `c` resumed from checkpoint directory `ckpt` (--resume CKPT) into out_dir; returns the
// config it ran.
inline Config resume_into(Config c, const std::string& out_dir, const std::string& ckpt) {
  c.train.out_dir = out_dir;
  TrainOptions opt;
  opt.resume = true;
  opt.resume_dir = ckpt;
  run_train(c, opt);
  return c;
}

// `trainer` (of config c, one process) given the weights of a model.safetensors, then evaluated on
// the first `batches` micro-batches of the training loop's evaluation data (validation_spec:
// data.valid, or the valid part of the split); returns the mean loss (routing_health() then
// describes the same forwards).
inline double evaluate_weights(Trainer& trainer, const Config& c, const std::string& model_file,
                               int batches) {
  const auto host = trainer.gather_state();
  load_weights(model_file, trainer.layout, host.params);
  trainer.scatter_state();
  data::Loader valid(validation_spec(c), data::Split::valid);
  return trainer.evaluate(
      [&](int32_t* in, int32_t* tg) { valid.next_batch(c.train.micro_batch, in, tg); }, batches);
}

// A config file tmp/NAME for `unipool train --config`: the small dense config
// (tests/small_config.h) training on `corpus` into out_dir for `steps` steps, a checkpoint every
// `ckpt_every`.
inline std::string write_config(const TempDir& tmp, const std::string& corpus,
                                const std::string& out_dir, int steps, int ckpt_every,
                                const std::string& name = "config.json") {
  Config c = small_config(FfnKind::dense, corpus, out_dir);
  c.train.steps = steps;
  c.train.ckpt_every = ckpt_every;
  c.train.ckpt_keep = 10;
  const std::string path = tmp / name;
  write_file_atomic(path, c.to_json().dump(2));
  return path;
}

// A shell command line, stdout and stderr captured in scratch/stdout.txt and scratch/stderr.txt.
// limit_s > 0: killed after that many seconds (coreutils' timeout).
inline Outcome run_shell(const std::string& line, const std::string& scratch, int limit_s = 0) {
  make_dirs(scratch);
  const std::string out = scratch + "/stdout.txt", err = scratch + "/stderr.txt";
  std::string cmd = "( " + line + " ) >'" + out + "' 2>'" + err + "'";
  if (limit_s > 0) {
    std::string escaped;  // the whole line inside sh -c '...'
    for (char ch : cmd) escaped += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    cmd = "timeout -s KILL " + std::to_string(limit_s) + " sh -c '" + escaped + "'";
  }
  const int raw = std::system(cmd.c_str());
  Outcome o;
  o.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  o.out = path_exists(out) ? read_file(out) : "";
  o.err = path_exists(err) ? read_file(err) : "";
  return o;
}

// `unipool ARGS` through the shell, stdout and stderr captured; shell_prefix runs first in the
// same shell (e.g. "ulimit -f 64;").
inline Outcome run_binary(const std::string& args, const std::string& scratch,
                          const std::string& shell_prefix = "") {
  return run_shell(shell_prefix + " OMP_NUM_THREADS=2 '" + UNIPOOL_BINARY + "' " + args, scratch);
}

// `unipool ARGS` started in the background (fork + exec, stdout and stderr to the files named);
// wait_for_child() reaps it and returns its raw wait status.
inline pid_t spawn_binary(const std::vector<std::string>& args, const std::string& out_path,
                          const std::string& err_path) {
  std::vector<std::string> argv_s = {UNIPOOL_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0 || err < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) ::_exit(127);
    std::vector<char*> argv;
    for (std::string& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::setenv("OMP_NUM_THREADS", "2", 1);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

inline int wait_for_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  return status;
}

// Polls `ready` every millisecond for up to `seconds`; returns whether it became true.
template <class Ready>
bool wait_until(Ready ready, double seconds) {
  for (int i = 0; i < int(seconds * 1000); ++i) {
    if (ready()) return true;
    ::usleep(1000);
  }
  return ready();
}

}  // namespace unipool::test
