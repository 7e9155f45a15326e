// Shared by the libFuzzer targets of fuzz/ and by fuzz/make_seeds.cpp: a per-process scratch
// directory, whole-file writes, a strict UTF-8 check, the fixed inputs several targets and their
// seeds must agree on (the shard the state.json target's loader reads, the loader spec), and
// FUZZ_ASSERT for the properties a target checks beyond "no crash".
//
// The contract every target enforces: for ANY input bytes, the code under test either succeeds or
// throws unipool::Error. A crash, an ASan/UBSan report, a leak, a timeout, an allocation past
// libFuzzer's -malloc_limit_mb (= -rss_limit_mb, 2048 MB in scripts/fuzz.sh) or any other exception
// escaping LLVMFuzzerTestOneInput is a finding. std::bad_alloc is deliberately not caught: every
// reader fuzzed here should allocate in proportion to its input (a file is validated against its
// size before anything is sized from its header, a config's sizes are bounded before anything is
// built from them), so a large allocation from a small input is a bug; libFuzzer
// ("out-of-memory (malloc(N))") or ASan ("allocator is out of memory") reports it before new
// could throw.
#pragma once
#include <fcntl.h>
#include <sanitizer/common_interface_defs.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cxxabi.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include "base/error.h"
#include "data/loader.h"
#include "data/shards.h"

// A property the target checks failed: print what and where, then trap (libFuzzer saves the input
// as a crash-* artifact).
#define FUZZ_ASSERT(cond)                                                                  \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      ::unipool::fuzz::report(std::string(__FILE__) + ":" + std::to_string(__LINE__) +    \
                              ": FUZZ_ASSERT(" #cond ") failed");                          \
      __builtin_trap();                                                                    \
    }                                                                                      \
  } while (0)

namespace unipool::fuzz {

// A fresh directory for this process's files, removed at normal exit (a crashed run leaves it
// behind: unipool_fuzz_XXXXXX, small). $UNIPOOL_FUZZ_TMP if set, else /dev/shm when writable (a
// tmpfs: the writers' fsyncs cost nothing), else $TMPDIR or /tmp.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::vector<std::string> bases;
    if (const char* e = std::getenv("UNIPOOL_FUZZ_TMP"); e && *e) bases.push_back(e);
    bases.push_back("/dev/shm");
    if (const char* e = std::getenv("TMPDIR"); e && *e) bases.push_back(e);
    bases.push_back("/tmp");
    for (const std::string& base : bases) {
      std::string tmpl = base + "/unipool_fuzz_XXXXXX";
      if (::mkdtemp(tmpl.data()) != nullptr) {
        static std::string made;
        made = tmpl;
        std::atexit([] {
          std::error_code ec;
          std::filesystem::remove_all(made, ec);
        });
        return tmpl;
      }
    }
    std::fprintf(stderr, "fuzz: cannot create a scratch directory\n");
    std::abort();
  }();
  return dir;
}

inline std::string scratch(const std::string& name) { return scratch_dir() + "/" + name; }

// Plain write (truncate + write), not atomic: the targets own their scratch files.
inline void write_bytes(const std::string& path, const void* data, size_t n) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(path.c_str());
    std::abort();
  }
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w <= 0) {
      std::perror(path.c_str());
      std::abort();
    }
    p += w;
    n -= size_t(w);
  }
  ::close(fd);
}
inline void write_bytes(const std::string& path, std::string_view s) {
  write_bytes(path, s.data(), s.size());
}

// Strict UTF-8 (Unicode §3.9 Table 3-7): no overlongs, no surrogates, nothing above U+10FFFF.
inline bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // the range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + len > n) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
    i += len;
  }
  return true;
}

// A line for the fuzzing log, written where the sanitizers write their reports (libFuzzer points
// them at its own copy of stderr, which survives -close_fd_mask=2; scripts/fuzz.sh closes the
// targets' stderr because the loader and the tokenizer warn once per input).
inline void report(const std::string& msg) {
  __sanitizer_report_error_summary(("fuzz: " + msg).c_str());
}

// Runs f(); returns true when it returned, false on unipool::Error (the expected outcome for bad
// input). Any other exception is named in the log and rethrown: nothing catches it above
// LLVMFuzzerTestOneInput, so std::terminate aborts and libFuzzer records the input as a crash.
template <class F>
bool guard(F&& f) {
  try {
    f();
    return true;
  } catch (const Error&) {
    return false;
  } catch (const std::exception& e) {
    int status = 0;
    char* name = abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status);
    report(std::string("an exception other than unipool::Error escaped: ") +
           (status == 0 && name ? name : typeid(e).name()) + ": " + e.what());
    std::free(name);
    throw;
  }
}

// Runs f(), which must not throw unipool::Error (a property of the code under test): an Error is
// named in the log, with `what`, and the input recorded as a crash.
template <class F>
void must(const char* what, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    report(std::string(what) + ": unexpected unipool::Error: " + e.what());
    __builtin_trap();
  }
}

// ---- fixed inputs shared by targets and seeds --------------------------------------------------

// The documents of the fixed Megatron shard (docs/data.md's worked example, GPT-2 ids, EOD last):
// fuzz_shards pairs fuzzed .idx files with its .bin; fuzz_checkpoint_state's loader reads it.
inline const std::vector<std::vector<int32_t>>& fixed_documents() {
  static const std::vector<std::vector<int32_t>> docs = {
      {15496, 995, 0, 50256},
      {464, 2068, 7586, 21831, 13, 50256},
      {600, 1388, 3419, 1391, 1441, 657, 26, 1782, 50256},
      {40, 1101, 257, 3797, 13, 50256},
      {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 50256}};
  return docs;
}

// The loader fuzz_checkpoint_state restores into (and make_seeds takes its state from): the fixed
// shard at `prefix`, seq_len 4, every document in the train split.
inline data::LoaderSpec fixed_loader_spec(const std::string& prefix) {
  data::LoaderSpec spec;
  spec.blend = {{1.0, prefix}};
  spec.format = data::ShardFormat::megatron;
  spec.split = "1";
  spec.seq_len = 4;
  spec.vocab_size = 50257;
  spec.seed = 1234;
  spec.prefetch = false;
  return spec;
}

// The config of the checkpoint-state target's model and of its seeds: the tiny preset (UniPool,
// so the state has a pool_loss) with seq_len and batch cut down.
inline std::vector<std::string> fixed_config_overrides() {
  return {"model.seq_len=4", "train.micro_batch=1"};
}

}  // namespace unipool::fuzz
