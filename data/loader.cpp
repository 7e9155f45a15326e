// The deterministic, resumable blended loader; the sampling rules are in loader.h.
#include "data/loader.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <set>
#include <system_error>
#include <thread>

#include "base/error.h"
#include "base/json_fields.h"
#include "base/random.h"

namespace unipool::data {

namespace {

// The permutation seed of (seed, dataset, split, epoch): each value is folded in through the mixer.
uint64_t permutation_seed(uint64_t seed, uint64_t dataset, uint64_t split, uint64_t epoch) {
  uint64_t h = mix64(seed ^ 0x756e69706f6f6c31ull);  // "unipool1"
  for (uint64_t v : {dataset, split, epoch}) h = mix64(h ^ mix64(v + kSplitMixGamma));
  return h;
}

std::string fingerprint(const TokenFile& f) {
  Fnv1a h;
  h.add_u64(static_cast<uint64_t>(f.num_tokens()));
  h.add_u64(static_cast<uint64_t>(f.num_documents()));
  h.add_u64(static_cast<uint64_t>(f.itemsize()));
  const int64_t n = f.num_tokens();  // >= 1: empty files are rejected on open
  for (int64_t k = 0; k <= 256; ++k) h.add_u64(static_cast<uint32_t>(f.token(k * (n - 1) / 256)));
  for (int64_t k = 0; k <= 64 && f.num_documents() > 0; ++k) {
    h.add_u64(static_cast<uint64_t>(f.document_begin(k * (f.num_documents() - 1) / 64)));
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h.h));
  return hex;
}

// One warning per distinct message per process (train and valid Loaders open the same files).
void warn_once(const std::string& msg) {
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(msg).second) std::fprintf(stderr, "unipool: warning: %s\n", msg.c_str());
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

}  // namespace

const char* split_name(Split s) {
  switch (s) {
    case Split::train:
      return "train";
    case Split::valid:
      return "valid";
    case Split::test:
      return "test";
  }
  return "?";
}

// ----------------------------------------------------------------------------------------------
// split

std::array<double, 3> parse_split(const std::string& split) {
  const std::string what = "split \"" + split + "\": ";
  std::array<double, 3> w{0, 0, 0};
  size_t part = 0, start = 0;
  for (;;) {
    const size_t comma = split.find(',', start);
    const std::string field =
        trim(split.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    check(part < 3, what + "more than 3 parts (expected train,valid,test weights like 969,30,1)");
    check(!field.empty(),
          what + "empty part " + std::to_string(part + 1) + " (expected numbers like 969,30,1)");
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(field.c_str(), &end);
    check(*end == '\0' && errno == 0 && std::isfinite(v),
          what + "part \"" + field + "\" is not a number (expected numbers like 969,30,1)");
    check(v >= 0, what + "part " + field + " is negative (weights must be >= 0)");
    w[part++] = v;
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  const double sum = w[0] + w[1] + w[2];
  check(sum > 0, what + "all parts are 0");
  for (double& x : w) x /= sum;
  return w;
}

std::array<int64_t, 4> split_indices(const std::array<double, 3>& weights, int64_t num_documents) {
  // Megatron: idx = [0]; idx.append(idx[-1] + int(round(w * n))); then subtract the excess from
  // idx[1:]. Python's round is half-to-even, which is std::nearbyint in the default rounding mode.
  std::array<int64_t, 4> idx{0, 0, 0, 0};
  for (int p = 0; p < 3; ++p) {
    idx[p + 1] = idx[p] + static_cast<int64_t>(
                              std::nearbyint(weights[p] * static_cast<double>(num_documents)));
  }
  const int64_t diff = idx[3] - num_documents;
  for (int p = 1; p < 4; ++p) idx[p] -= diff;
  // Megatron can leave a boundary below its predecessor for tiny document counts and a weight of 0
  // (e.g. "0,1,1" on 3 documents gives [0,-1,1,3]); clamp so every part is a valid, maybe empty,
  // range.
  for (int p = 1; p < 4; ++p) idx[p] = std::min(std::max(idx[p], idx[p - 1]), num_documents);
  return idx;
}

// ----------------------------------------------------------------------------------------------
// Loader
//
// A batch is produced by produce(): from a start position (a Cursor) it steps over this rank's
// predecessors' samples, reads its own, steps over its successors' and records the end position,
// or the exception met. Without prefetch the caller's thread runs it; with prefetch the next one
// runs on the worker thread as soon as a batch has been handed out.
//
// Ownership (what keeps it free of data races): `datasets` and `spec` are read-only after
// construction. `cursor` (the committed position), `have_job`, `last_batch` belong to the caller's
// thread. `job` and `perms` belong to the worker from post() (which sets busy under mu) until the
// worker clears busy under mu, and to the caller's thread otherwise; the caller touches them only
// after wait() has seen !busy. cancel_requested is the one value both threads touch concurrently.

struct Loader::Impl {
  struct Dataset {  // one file of the blend; fixed after construction
    explicit Dataset(TokenFile f) : file(std::move(f)) {}
    TokenFile file;
    double weight = 0;  // normalised over the datasets with samples; 0 for a left-out one
    int64_t doc_lo = 0, doc_hi = 0;  // this split's documents [lo, hi)
    int64_t tok_lo = 0, tok_hi = 0;  // their tokens [lo, hi)
    int64_t num_samples = 0;
    std::string fingerprint;  // hash of sizes and a sample of the tokens
  };
  // A dataset's place: the next sample is perm(epoch)[pos]; drawn = epoch * num_samples + pos.
  struct Position {
    uint64_t epoch = 0;
    int64_t pos = 0;
    int64_t drawn = 0;
  };
  struct Cursor {  // the global position
    std::vector<Position> ds;
    int64_t drawn_total = 0;
  };
  struct Permutation {  // of [0, num_samples) for `epoch`, built lazily
    std::vector<uint32_t> order;
    int64_t epoch = -1;
  };
  struct Batch {  // one next_batch call's work and result
    int batch = 0;
    Cursor start, end;
    std::vector<int32_t> tokens;  // batch × (T + 1), sample-major
    std::exception_ptr error;
    bool cancelled = false;
  };

  Impl(const LoaderSpec& spec, Split split);
  ~Impl();

  int pick_dataset(const Cursor& c) const;  // Megatron's blending rule for sample c.drawn_total
  void advance(Cursor& c, int d) const;     // one sample of dataset d drawn
  const std::vector<uint32_t>& permutation(size_t d, uint64_t epoch);
  void read_sample(const Dataset& ds, int64_t sample, int32_t* out) const;  // T+1 checked tokens
  void produce(Batch& b);  // fills b from b.start; never throws (b.error)

  void next_batch(int batch, int32_t* inputs, int32_t* targets);
  void reset();
  void restore(const nlohmann::json& st);
  nlohmann::json state() const;
  void post(int batch);  // start producing the batch of `batch` samples at `cursor` on the worker
  void wait();           // until the worker is idle
  void cancel();         // drop the prefetched batch (stopping it if in flight)
  void worker_loop();

  LoaderSpec spec;
  Split split;
  std::array<double, 3> split_weights{};
  std::vector<Dataset> datasets;
  std::vector<Permutation> perms;  // per dataset
  Cursor cursor;                   // after the batches handed out
  int last_batch = 0;              // the batch size of the last next_batch call (0: none yet)
  bool prefetch = false;
  Batch job;
  bool have_job = false;  // job is posted to (or done by) the worker and starts at cursor

  std::thread worker;  // started by the first post()
  std::mutex mu;
  std::condition_variable cv;
  bool posted = false, busy = false, stop = false;  // guarded by mu
  std::atomic<bool> cancel_requested{false};
};

Loader::Impl::Impl(const LoaderSpec& spec_in, Split split_in) : spec(spec_in), split(split_in) {
  check(!spec.blend.empty(), "data loader: the blend has no datasets");
  check(spec.seq_len >= 1,
        "data loader: seq_len must be >= 1, got " + std::to_string(spec.seq_len));
  check(spec.vocab_size >= 1,
        "data loader: vocab_size must be >= 1, got " + std::to_string(spec.vocab_size));
  check(spec.world_size >= 1,
        "data loader: world_size must be >= 1, got " + std::to_string(spec.world_size));
  check(spec.rank >= 0 && spec.rank < spec.world_size,
        "data loader: rank must be in [0, world_size = " + std::to_string(spec.world_size) +
            "), got " + std::to_string(spec.rank));
  split_weights = parse_split(spec.split);
  const int64_t T = spec.seq_len;
  const int s = static_cast<int>(split);

  double weight_sum = 0;
  std::string why_empty;  // per dataset, for the error when no dataset has samples
  for (const auto& [weight, path] : spec.blend) {
    check(std::isfinite(weight) && weight > 0,
          "data loader: blend weight " + std::to_string(weight) + " for " + path + " must be > 0");
    Dataset ds{TokenFile::open(path, spec.format)};
    const int64_t ndocs = ds.file.num_documents();
    ds.doc_lo = 0;  // whole_files: every document
    ds.doc_hi = ndocs;
    if (!spec.whole_files) {
      const std::array<int64_t, 4> idx = split_indices(split_weights, ndocs);
      for (int p = 0; p < 3; ++p) {
        if (idx[p] == idx[p + 1]) {
          warn_once(ds.file.name() + ": split \"" + spec.split + "\" gives the " +
                    split_name(Split(p)) + " part no documents (of " + std::to_string(ndocs) + ")" +
                    (split_weights[p] == 0 ? ", as its weight is 0" : ""));
        }
      }
      ds.doc_lo = idx[s];
      ds.doc_hi = idx[s + 1];
    }
    ds.tok_lo = ds.doc_lo < ndocs ? ds.file.document_begin(ds.doc_lo) : ds.file.num_tokens();
    ds.tok_hi = ds.doc_hi > ds.doc_lo ? ds.file.document_end(ds.doc_hi - 1) : ds.tok_lo;
    const int64_t ntok = ds.tok_hi - ds.tok_lo;
    ds.num_samples = ntok >= 1 ? (ntok - 1) / T : 0;
    check(ds.num_samples <= int64_t(UINT32_MAX),
          ds.file.name() + ": " + std::to_string(ds.num_samples) + " samples in the " +
              split_name(split) + " split, more than the loader's limit of 2^32 - 1");
    ds.fingerprint = fingerprint(ds.file);
    if (ds.num_samples == 0) {
      const std::string why = ds.file.name() + ": " + std::to_string(ds.doc_hi - ds.doc_lo) +
                              " documents, " + std::to_string(ntok) + " tokens in the " +
                              split_name(split) + " split";
      why_empty += "; " + why;
      if (ntok > 0) {  // (a part with no documents was warned about above)
        warn_once(why + ", fewer than seq_len + 1 = " + std::to_string(T + 1) +
                  ": left out of the blend");
      }
    } else {
      ds.weight = weight;
      weight_sum += weight;
    }
    datasets.push_back(std::move(ds));
  }
  check(weight_sum > 0, std::string("data loader: no samples for the ") + split_name(split) +
                            " split in any dataset of the blend (split \"" + spec.split +
                            "\", seq_len " + std::to_string(T) + ")" + why_empty);
  for (Dataset& ds : datasets) ds.weight /= weight_sum;
  perms.resize(datasets.size());
  cursor.ds.resize(datasets.size());
  prefetch = spec.prefetch;
}

Loader::Impl::~Impl() {
  if (!worker.joinable()) return;
  cancel_requested = true;  // a batch in flight stops at its next sample
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
  }
  cv.notify_all();
  worker.join();
}

int Loader::Impl::pick_dataset(const Cursor& c) const {
  // Megatron's blending: the dataset furthest behind its share, weight * (j + 1) - drawn.
  int best = -1;
  double best_error = 0;
  const double j1 = static_cast<double>(c.drawn_total + 1);
  for (size_t d = 0; d < datasets.size(); ++d) {
    const Dataset& ds = datasets[d];
    if (ds.num_samples == 0) continue;
    // One rounding, as an explicit fma: the order must not depend on whether the compiler
    // contracts a*b - c (it does under -march=native with FMA, gcc's default -ffp-contract=fast);
    // this is the value those builds always computed, now on every build.
    const double error = std::fma(ds.weight, j1, -static_cast<double>(c.ds[d].drawn));
    if (best < 0 || error > best_error) {
      best = static_cast<int>(d);
      best_error = error;
    }
  }
  return best;  // >= 0: the constructor guarantees one dataset with samples
}

void Loader::Impl::advance(Cursor& c, int d) const {
  Position& p = c.ds[static_cast<size_t>(d)];
  ++p.drawn;
  ++c.drawn_total;
  if (++p.pos == datasets[static_cast<size_t>(d)].num_samples) {
    p.pos = 0;  // pass exhausted: the next epoch gets a new permutation
    ++p.epoch;
  }
}

const std::vector<uint32_t>& Loader::Impl::permutation(size_t d, uint64_t epoch) {
  Permutation& p = perms[d];
  if (p.epoch == static_cast<int64_t>(epoch)) return p.order;
  p.epoch = -1;  // (stays invalid if the allocation below throws)
  const size_t n = static_cast<size_t>(datasets[d].num_samples);
  p.order.resize(n);
  std::iota(p.order.begin(), p.order.end(), 0u);
  if (!spec.whole_files) {  // (a held-out set is read in order)
    SplitMix64 rng{permutation_seed(spec.seed, d, static_cast<uint64_t>(split), epoch)};
    shuffle(p.order.data(), n, rng);
  }
  p.epoch = static_cast<int64_t>(epoch);
  return p.order;
}

void Loader::Impl::read_sample(const Dataset& ds, int64_t sample, int32_t* out) const {
  const int64_t T = spec.seq_len;
  const int64_t begin = ds.tok_lo + sample * T;
  ds.file.read_tokens(begin, T + 1, out);
  for (int64_t i = 0; i <= T; ++i) {
    const int32_t t = out[i];
    if (t < 0 || t >= spec.vocab_size) {
      throw Error(ds.file.token_path() + ": token id " + std::to_string(t) + " at token " +
                  std::to_string(begin + i) + (t < 0 ? " is negative" : " >= vocab_size ") +
                  (t < 0 ? std::string() : std::to_string(spec.vocab_size)));
    }
  }
}

void Loader::Impl::produce(Batch& b) {
  b.error = nullptr;
  b.cancelled = false;
  try {
    const int64_t T1 = int64_t(spec.seq_len) + 1, B = b.batch;
    const int64_t before = int64_t(spec.rank) * B;
    const int64_t after = int64_t(spec.world_size - 1 - spec.rank) * B;
    Cursor c = b.start;
    b.tokens.resize(static_cast<size_t>(B * T1));
    for (int64_t i = 0; i < before; ++i) advance(c, pick_dataset(c));  // the lower ranks' samples
    for (int64_t i = 0; i < B; ++i) {
      if (cancel_requested.load()) {
        b.cancelled = true;
        return;
      }
      const int d = pick_dataset(c);
      const Position& p = c.ds[static_cast<size_t>(d)];
      const uint32_t sample =
          permutation(static_cast<size_t>(d), p.epoch)[static_cast<size_t>(p.pos)];
      read_sample(datasets[static_cast<size_t>(d)], sample, b.tokens.data() + i * T1);
      advance(c, d);
    }
    for (int64_t i = 0; i < after; ++i) advance(c, pick_dataset(c));  // the higher ranks' samples
    b.end = std::move(c);
  } catch (...) {
    b.error = std::current_exception();
  }
}

void Loader::Impl::worker_loop() {
  std::unique_lock<std::mutex> lock(mu);
  for (;;) {
    cv.wait(lock, [&] { return stop || posted; });
    if (stop) return;
    posted = false;
    lock.unlock();
    produce(job);  // job and perms are this thread's until busy is cleared
    lock.lock();
    busy = false;
    cv.notify_all();
  }
}

void Loader::Impl::post(int batch) {
  job.batch = batch;
  job.start = cursor;
  cancel_requested = false;
  if (!worker.joinable()) {
    try {
      worker = std::thread([this] { worker_loop(); });
    } catch (const std::system_error& e) {
      warn_once(std::string("data loader: cannot start the prefetch thread (") + e.what() +
                "): reading synchronously");
      prefetch = false;
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    posted = true;
    busy = true;
  }
  cv.notify_all();
  have_job = true;
}

void Loader::Impl::wait() {
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return !busy; });
}

void Loader::Impl::cancel() {
  if (!have_job) return;
  cancel_requested = true;
  wait();
  cancel_requested = false;
  have_job = false;
}

void Loader::Impl::next_batch(int batch, int32_t* inputs, int32_t* targets) {
  check(batch >= 0, "data loader: batch must be >= 0, got " + std::to_string(batch));
  if (batch == 0) return;                        // nothing drawn (a prefetch in flight stays valid)
  if (have_job && job.batch != batch) cancel();  // prefetched for another batch size
  if (have_job) {
    wait();
    have_job = false;
  } else {
    job.batch = batch;
    job.start = cursor;
    produce(job);
  }
  last_batch = batch;
  if (job.error) {  // the position stays where it was; a later call reads this batch again
    std::exception_ptr e = job.error;
    job.error = nullptr;
    std::rethrow_exception(e);
  }
  check(!job.cancelled, "data loader: internal error: a cancelled batch was handed out");
  const size_t T = static_cast<size_t>(spec.seq_len);
  for (size_t b = 0; b < static_cast<size_t>(batch); ++b) {
    const int32_t* sample = job.tokens.data() + b * (T + 1);
    std::memcpy(inputs + b * T, sample, T * sizeof(int32_t));
    std::memcpy(targets + b * T, sample + 1, T * sizeof(int32_t));
  }
  cursor = job.end;
  if (prefetch) post(batch);
}

void Loader::Impl::reset() {
  cancel();
  for (Position& p : cursor.ds) p = Position{};
  cursor.drawn_total = 0;
  if (prefetch && last_batch > 0) post(last_batch);
}

// ----------------------------------------------------------------------------------------------
// state

nlohmann::json Loader::Impl::state() const {
  nlohmann::json dss = nlohmann::json::array();
  for (size_t d = 0; d < datasets.size(); ++d) {
    const Dataset& ds = datasets[d];
    dss.push_back({{"name", ds.file.name()},
                   {"weight", spec.blend[d].first},
                   {"num_tokens", ds.file.num_tokens()},
                   {"num_documents", ds.file.num_documents()},
                   {"documents", {ds.doc_lo, ds.doc_hi}},
                   {"num_samples", ds.num_samples},
                   {"fingerprint", ds.fingerprint},
                   {"epoch", cursor.ds[d].epoch},
                   {"position", cursor.ds[d].pos}});
  }
  return {{"kind", "unipool.data.Loader"},
          {"version", 1},
          {"split", split_name(split)},
          {"split_spec", spec.whole_files ? std::string("whole files") : spec.split},
          {"format", shard_format_name(spec.format)},
          {"seed", spec.seed},
          {"seq_len", spec.seq_len},
          {"samples_drawn", cursor.drawn_total},
          {"datasets", dss}};
}

void Loader::Impl::restore(const nlohmann::json& st) {
  const std::string what = "data loader state";
  Cursor restored;
  check(st.is_object() && st.contains("kind") && st["kind"] == "unipool.data.Loader",
        what + ": not a unipool data loader state");
  check(json_int(st, "version", 0, INT32_MAX, what) == 1,
        what + ": version " + describe_json(st.at("version")) + ", this build reads 1");
  auto mismatch = [&](const std::string& field, const std::string& mine,
                      const std::string& theirs) {
    throw Error(what + ": does not match this loader: " + field + " is " + mine +
                ", the state has " + theirs);
  };
  const std::string their_split = json_string(st, "split", what);
  if (their_split != split_name(split)) mismatch("split", split_name(split), their_split);
  const std::string their_format = json_string(st, "format", what);
  if (their_format != shard_format_name(spec.format))
    mismatch("format", shard_format_name(spec.format), their_format);
  const uint64_t their_seed = json_uint64(st, "seed", what);
  if (their_seed != spec.seed)
    mismatch("seed", std::to_string(spec.seed), std::to_string(their_seed));
  const int64_t their_seq_len = json_int(st, "seq_len", 1, INT32_MAX, what);
  if (their_seq_len != spec.seq_len)
    mismatch("seq_len", std::to_string(spec.seq_len), std::to_string(their_seq_len));
  const nlohmann::json& dss = json_at(st, "datasets", what);
  if (!dss.is_array() || dss.size() != datasets.size()) {
    mismatch("the number of datasets", std::to_string(datasets.size()),
             dss.is_array() ? std::to_string(dss.size()) : describe_json(dss));
  }
  int64_t sum = 0;
  for (size_t d = 0; d < datasets.size(); ++d) {
    const Dataset& ds = datasets[d];
    const nlohmann::json& j = dss[d];
    const std::string who = "dataset " + std::to_string(d) + " (" + ds.file.name() + ")";
    const std::string where = what + ": " + who;
    auto same_int = [&](const char* key, int64_t mine) {
      const int64_t theirs = json_int(j, key, 0, INT64_MAX, where);
      if (theirs != mine)
        mismatch(who + " " + key, std::to_string(mine),
                 std::to_string(theirs) + " (different data?)");
    };
    same_int("num_tokens", ds.file.num_tokens());
    same_int("num_documents", ds.file.num_documents());
    same_int("num_samples", ds.num_samples);
    const nlohmann::json& docs = json_at(j, "documents", where);
    if (docs != nlohmann::json({ds.doc_lo, ds.doc_hi})) {
      mismatch(who + " split documents",
               "[" + std::to_string(ds.doc_lo) + ", " + std::to_string(ds.doc_hi) + ")",
               describe_json(docs));
    }
    const std::string fingerprint = json_string(j, "fingerprint", where);
    if (fingerprint != ds.fingerprint)
      mismatch(who + " content fingerprint", ds.fingerprint, fingerprint + " (different data?)");
    const double weight = json_number(j, "weight", where);
    if (weight != spec.blend[d].first)
      mismatch(who + " blend weight", std::to_string(spec.blend[d].first), describe_json(weight));
    // The position: epoch · num_samples + position samples drawn from this dataset, a number that
    // must fit (with the other datasets') in 64 bits.
    const int64_t n = std::max<int64_t>(ds.num_samples, 1);
    const int64_t epoch = json_int(j, "epoch", 0, INT64_MAX / n - 1, where);
    const int64_t pos = json_int(j, "position", 0, INT64_MAX, where);
    const bool ok = ds.num_samples == 0 ? epoch == 0 && pos == 0 : pos < ds.num_samples;
    check(ok, where + " has an invalid position: epoch " + std::to_string(epoch) + ", position " +
                  std::to_string(pos) + " of " + std::to_string(ds.num_samples) + " samples");
    const int64_t drawn = epoch * ds.num_samples + pos;
    check(sum <= INT64_MAX - drawn, where + ": the samples drawn overflow 64 bits");
    restored.ds.push_back({static_cast<uint64_t>(epoch), pos, drawn});
    sum += drawn;
  }
  restored.drawn_total = json_int(st, "samples_drawn", 0, INT64_MAX, what);
  check(restored.drawn_total == sum,
        what + ": samples_drawn " + std::to_string(restored.drawn_total) +
            " does not equal the sum over the datasets' positions " + std::to_string(sum));
  // everything checked: apply, and prefetch from the new position
  cancel();
  cursor = std::move(restored);
  if (prefetch && last_batch > 0) post(last_batch);
}

// ----------------------------------------------------------------------------------------------
// Loader: the public face

Loader::Loader(const LoaderSpec& spec, Split split) : impl_(std::make_unique<Impl>(spec, split)) {}
Loader::~Loader() = default;
Loader::Loader(Loader&&) noexcept = default;
Loader& Loader::operator=(Loader&&) noexcept = default;

void Loader::next_batch(int batch, int32_t* inputs, int32_t* targets) {
  impl_->next_batch(batch, inputs, targets);
}
nlohmann::json Loader::state() const {
  return impl_->state();
}
void Loader::restore(const nlohmann::json& state) {
  impl_->restore(state);
}
void Loader::reset() {
  impl_->reset();
}
int64_t Loader::num_samples() const {
  int64_t n = 0;
  for (const Impl::Dataset& ds : impl_->datasets) n += ds.num_samples;
  return n;
}
int64_t Loader::samples_drawn() const {
  return impl_->cursor.drawn_total;
}
int Loader::seq_len() const {
  return impl_->spec.seq_len;
}
Split Loader::split() const {
  return impl_->split;
}

}  // namespace unipool::data
