// The deterministic, resumable blended loader; the sampling rules are in loader.h.
#include "data/loader.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <set>

#include "engine/error.h"

namespace unipool::data {

namespace {

// splitmix64 (Steele, Lea, Flood 2014): the finaliser as a 64-bit mixer, and the generator.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

struct SplitMix64 {
  uint64_t state;
  uint64_t next() { return mix64(state += kGolden); }
  // uniform in [0, n), n >= 1, unbiased: reject the lowest (2^64 mod n) values
  uint64_t below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }
};

// The permutation seed of (seed, dataset, split, epoch): each value is folded in through the mixer.
uint64_t permutation_seed(uint64_t seed, uint64_t dataset, uint64_t split, uint64_t epoch) {
  uint64_t h = mix64(seed ^ 0x756e69706f6f6c31ull);  // "unipool1"
  for (uint64_t v : {dataset, split, epoch}) h = mix64(h ^ mix64(v + kGolden));
  return h;
}

// FNV-1a over 64-bit words, for the files' fingerprints.
struct Fnv1a {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 0x100000001b3ull;
    }
  }
};

std::string fingerprint(const TokenFile& f) {
  Fnv1a h;
  h.add(static_cast<uint64_t>(f.num_tokens()));
  h.add(static_cast<uint64_t>(f.num_documents()));
  h.add(static_cast<uint64_t>(f.itemsize()));
  const int64_t n = f.num_tokens();  // >= 1: empty files are rejected on open
  for (int64_t k = 0; k <= 256; ++k) h.add(static_cast<uint32_t>(f.token(k * (n - 1) / 256)));
  for (int64_t k = 0; k <= 64 && f.num_documents() > 0; ++k) {
    h.add(static_cast<uint64_t>(f.document_begin(k * (f.num_documents() - 1) / 64)));
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

Loader::Loader(const LoaderSpec& spec, Split split) : spec_(spec), split_(split) {
  check(!spec.blend.empty(), "data loader: the blend has no datasets");
  check(spec.seq_len >= 1,
        "data loader: seq_len must be >= 1, got " + std::to_string(spec.seq_len));
  check(spec.vocab_size >= 1,
        "data loader: vocab_size must be >= 1, got " + std::to_string(spec.vocab_size));
  split_weights_ = parse_split(spec.split);
  const int64_t T = spec.seq_len;
  const int s = static_cast<int>(split);

  double weight_sum = 0;
  std::string why_empty;  // per dataset, for the error when no dataset has samples
  for (const auto& [weight, path] : spec.blend) {
    check(std::isfinite(weight) && weight > 0,
          "data loader: blend weight " + std::to_string(weight) + " for " + path + " must be > 0");
    Dataset ds{TokenFile::open(path, spec.format)};
    const int64_t ndocs = ds.file.num_documents();
    const std::array<int64_t, 4> idx = split_indices(split_weights_, ndocs);
    for (int p = 0; p < 3; ++p) {
      if (idx[p] == idx[p + 1]) {
        warn_once(ds.file.name() + ": split \"" + spec.split + "\" gives the " +
                  split_name(Split(p)) + " part no documents (of " + std::to_string(ndocs) + ")" +
                  (split_weights_[p] == 0 ? ", as its weight is 0" : ""));
      }
    }
    ds.doc_lo = idx[s];
    ds.doc_hi = idx[s + 1];
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
    datasets_.push_back(std::move(ds));
  }
  check(weight_sum > 0, std::string("data loader: no samples for the ") + split_name(split) +
                            " split in any dataset of the blend (split \"" + spec.split +
                            "\", seq_len " + std::to_string(T) + ")" + why_empty);
  for (Dataset& ds : datasets_) ds.weight /= weight_sum;
  buf_.resize(static_cast<size_t>(T) + 1);
}

int64_t Loader::num_samples() const {
  int64_t n = 0;
  for (const Dataset& ds : datasets_) n += ds.num_samples;
  return n;
}

int Loader::pick_dataset() const {
  // Megatron's blending: the dataset furthest behind its share, weight * (j + 1) - drawn.
  int best = -1;
  double best_error = 0;
  const double j1 = static_cast<double>(drawn_total_ + 1);
  for (size_t d = 0; d < datasets_.size(); ++d) {
    const Dataset& ds = datasets_[d];
    if (ds.num_samples == 0) continue;
    const double error = ds.weight * j1 - static_cast<double>(ds.drawn);
    if (best < 0 || error > best_error) {
      best = static_cast<int>(d);
      best_error = error;
    }
  }
  return best;  // >= 0: the constructor guarantees one dataset with samples
}

void Loader::ensure_permutation(Dataset& ds, size_t index) {
  if (ds.perm_epoch == static_cast<int64_t>(ds.epoch)) return;
  const size_t n = static_cast<size_t>(ds.num_samples);
  ds.perm.resize(n);
  std::iota(ds.perm.begin(), ds.perm.end(), 0u);
  SplitMix64 rng{permutation_seed(spec_.seed, index, static_cast<uint64_t>(split_), ds.epoch)};
  for (size_t i = n; i > 1; --i) {  // Fisher–Yates: swap slot i-1 with a uniform slot in [0, i)
    const size_t j = static_cast<size_t>(rng.below(i));
    std::swap(ds.perm[i - 1], ds.perm[j]);
  }
  ds.perm_epoch = static_cast<int64_t>(ds.epoch);
}

void Loader::read_sample(Dataset& ds, int64_t sample) {
  const int64_t T = spec_.seq_len;
  const int64_t begin = ds.tok_lo + sample * T;
  ds.file.read_tokens(begin, T + 1, buf_.data());
  for (int64_t i = 0; i <= T; ++i) {
    const int32_t t = buf_[static_cast<size_t>(i)];
    if (t < 0 || t >= spec_.vocab_size) {
      throw Error(ds.file.token_path() + ": token id " + std::to_string(t) + " at token " +
                  std::to_string(begin + i) + (t < 0 ? " is negative" : " >= vocab_size ") +
                  (t < 0 ? std::string() : std::to_string(spec_.vocab_size)));
    }
  }
}

void Loader::next_batch(int batch, int32_t* inputs, int32_t* targets) {
  check(batch >= 0, "data loader: batch must be >= 0, got " + std::to_string(batch));
  const size_t T = static_cast<size_t>(spec_.seq_len);
  for (int b = 0; b < batch; ++b) {
    const int d = pick_dataset();
    Dataset& ds = datasets_[static_cast<size_t>(d)];
    ensure_permutation(ds, static_cast<size_t>(d));
    read_sample(ds, ds.perm[static_cast<size_t>(ds.pos)]);
    std::memcpy(inputs + b * T, buf_.data(), T * sizeof(int32_t));
    std::memcpy(targets + b * T, buf_.data() + 1, T * sizeof(int32_t));
    ++ds.drawn;
    ++drawn_total_;
    if (++ds.pos == ds.num_samples) {  // pass exhausted: the next epoch gets a new permutation
      ds.pos = 0;
      ++ds.epoch;
    }
  }
}

void Loader::reset() {
  for (Dataset& ds : datasets_) {
    ds.epoch = 0;
    ds.pos = 0;
    ds.drawn = 0;
  }
  drawn_total_ = 0;
}

// ----------------------------------------------------------------------------------------------
// state

nlohmann::json Loader::state() const {
  nlohmann::json dss = nlohmann::json::array();
  for (size_t d = 0; d < datasets_.size(); ++d) {
    const Dataset& ds = datasets_[d];
    dss.push_back({{"name", ds.file.name()},
                   {"weight", spec_.blend[d].first},
                   {"num_tokens", ds.file.num_tokens()},
                   {"num_documents", ds.file.num_documents()},
                   {"documents", {ds.doc_lo, ds.doc_hi}},
                   {"num_samples", ds.num_samples},
                   {"fingerprint", ds.fingerprint},
                   {"epoch", ds.epoch},
                   {"position", ds.pos}});
  }
  return {{"kind", "unipool.data.Loader"},
          {"version", 1},
          {"split", split_name(split_)},
          {"split_spec", spec_.split},
          {"format", shard_format_name(spec_.format)},
          {"seed", spec_.seed},
          {"seq_len", spec_.seq_len},
          {"samples_drawn", drawn_total_},
          {"datasets", dss}};
}

void Loader::restore(const nlohmann::json& st) {
  const std::string what = "data loader state: ";
  struct Position {
    uint64_t epoch;
    int64_t pos;
  };
  std::vector<Position> positions;
  int64_t drawn_total = 0;
  try {
    check(st.is_object() && st.value("kind", "") == "unipool.data.Loader" &&
              st.at("version").get<int>() == 1,
          what + "not a unipool data loader state (version 1)");
    auto mismatch = [&](const std::string& field, const std::string& mine,
                        const std::string& theirs) {
      throw Error(what + "does not match this loader: " + field + " is " + mine +
                  ", the state has " + theirs);
    };
    if (st.at("split").get<std::string>() != split_name(split_)) {
      mismatch("split", split_name(split_), st.at("split").get<std::string>());
    }
    if (st.at("format").get<std::string>() != shard_format_name(spec_.format)) {
      mismatch("format", shard_format_name(spec_.format), st.at("format").get<std::string>());
    }
    if (st.at("seed").get<uint64_t>() != spec_.seed) {
      mismatch("seed", std::to_string(spec_.seed), st.at("seed").dump());
    }
    if (st.at("seq_len").get<int>() != spec_.seq_len) {
      mismatch("seq_len", std::to_string(spec_.seq_len), st.at("seq_len").dump());
    }
    const nlohmann::json& dss = st.at("datasets");
    if (!dss.is_array() || dss.size() != datasets_.size()) {
      mismatch("the number of datasets", std::to_string(datasets_.size()),
               std::to_string(dss.size()));
    }
    int64_t sum = 0;
    for (size_t d = 0; d < datasets_.size(); ++d) {
      const Dataset& ds = datasets_[d];
      const nlohmann::json& j = dss[d];
      const std::string who = "dataset " + std::to_string(d) + " (" + ds.file.name() + ") ";
      auto same_int = [&](const char* key, int64_t mine) {
        const int64_t theirs = j.at(key).get<int64_t>();
        if (theirs != mine)
          mismatch(who + key, std::to_string(mine), std::to_string(theirs) + " (different data?)");
      };
      same_int("num_tokens", ds.file.num_tokens());
      same_int("num_documents", ds.file.num_documents());
      same_int("num_samples", ds.num_samples);
      const nlohmann::json docs = j.at("documents");
      if (docs != nlohmann::json({ds.doc_lo, ds.doc_hi})) {
        mismatch(who + "split documents",
                 "[" + std::to_string(ds.doc_lo) + ", " + std::to_string(ds.doc_hi) + ")",
                 docs.dump());
      }
      if (j.at("fingerprint").get<std::string>() != ds.fingerprint) {
        mismatch(who + "content fingerprint", ds.fingerprint,
                 j.at("fingerprint").get<std::string>() + " (different data?)");
      }
      if (j.at("weight").get<double>() != spec_.blend[d].first) {
        mismatch(who + "blend weight", std::to_string(spec_.blend[d].first), j.at("weight").dump());
      }
      const int64_t epoch = j.at("epoch").get<int64_t>();
      const int64_t pos = j.at("position").get<int64_t>();
      const bool ok = epoch >= 0 && pos >= 0 &&
                      (ds.num_samples == 0 ? epoch == 0 && pos == 0 : pos < ds.num_samples);
      check(ok, what + who + "has an invalid position: epoch " + std::to_string(epoch) +
                    ", position " + std::to_string(pos) + " of " + std::to_string(ds.num_samples) +
                    " samples");
      positions.push_back({static_cast<uint64_t>(epoch), pos});
      sum += epoch * ds.num_samples + pos;
    }
    drawn_total = st.at("samples_drawn").get<int64_t>();
    check(drawn_total == sum, what + "samples_drawn " + std::to_string(drawn_total) +
                                  " does not equal the sum over the datasets' positions " +
                                  std::to_string(sum));
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + "malformed: " + e.what());
  }
  // everything checked: apply
  for (size_t d = 0; d < datasets_.size(); ++d) {
    Dataset& ds = datasets_[d];
    ds.epoch = positions[d].epoch;
    ds.pos = positions[d].pos;
    ds.drawn = static_cast<int64_t>(ds.epoch) * ds.num_samples + ds.pos;
  }
  drawn_total_ = drawn_total;
}

}  // namespace unipool::data
