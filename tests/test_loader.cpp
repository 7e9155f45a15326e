// The data loader (data/loader.h, data/loader.cpp) over token files: split strings and Megatron's
// get_split_indices, the sample layout (T+1 consecutive stream tokens), the seeded order, exact
// resumption from a saved state and its checks, blending, disjoint splits, the vocab_size check,
// background prefetch and data-parallel ranks. The token files themselves: tests/test_shards.cpp.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/shards.h"
#include "tests/catch.h"
#include "tests/data_fixtures.h"
#include "tests/tempdir.h"

using unipool::test::contains;
using unipool::test::error_of;
using unipool::test::kExampleDocs;
using unipool::test::TempDir;

using namespace unipool::data;

namespace {

// ---- fixtures ---------------------------------------------------------------------------------

// A single-document stream whose tokens are their positions (plus offset), so a sample reveals
// where it was read from.
std::vector<int32_t> positions(int n, int offset = 0) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = offset + i;
  return t;
}

// Draws n samples of loader L (one per next_batch call); each is inputs followed by targets.
std::vector<std::vector<int32_t>> draw(Loader& L, int n, int batch = 1) {
  const size_t T = static_cast<size_t>(L.seq_len());
  std::vector<std::vector<int32_t>> out;
  std::vector<int32_t> in(batch * T), tg(batch * T);
  for (int i = 0; i < n; ++i) {
    L.next_batch(batch, in.data(), tg.data());
    for (int b = 0; b < batch; ++b) {
      std::vector<int32_t> s(in.begin() + b * T, in.begin() + (b + 1) * T);
      s.insert(s.end(), tg.begin() + b * T, tg.begin() + (b + 1) * T);
      out.push_back(s);
    }
  }
  return out;
}

}  // namespace

// ---- split arithmetic --------------------------------------------------------------------------

TEST_CASE("data: split strings and Megatron's get_split_indices", "[data][loader]") {
  using A = std::array<int64_t, 4>;
  CHECK(split_indices(parse_split("969,30,1"), 1000) == A{0, 969, 999, 1000});
  CHECK(split_indices(parse_split("1,1,0"), 4) == A{0, 2, 4, 4});
  CHECK(split_indices(parse_split("1,1"), 5) ==
        A{0, 3, 5, 5});  // round(2.5) = 2 (half to even), then +1
  CHECK(split_indices(parse_split("1,1,1"), 2) == A{0, 0, 1, 2});
  CHECK(split_indices(parse_split("969,30,1"), 10) == A{0, 10, 10, 10});
  CHECK(split_indices(parse_split("0,1,1"), 3)[1] == 0);  // clamped (Megatron would give -1)
  CHECK(split_indices(parse_split("100"), 7) == A{0, 7, 7, 7});
  CHECK(parse_split(" 3, 1 ")[0] == 0.75);
  CHECK(contains(error_of([] { parse_split(""); }), "empty part"));
  CHECK(contains(error_of([] { parse_split("1,2,3,4"); }), "more than 3 parts"));
  CHECK(contains(error_of([] { parse_split("1,-1"); }), "negative"));
  CHECK(contains(error_of([] { parse_split("1,x"); }), "not a number"));
  CHECK(contains(error_of([] { parse_split("1,,1"); }), "empty part"));
  CHECK(contains(error_of([] { parse_split("0,0,0"); }), "all parts are 0"));
  CHECK(contains(error_of([] { parse_split("nan"); }), "not a number"));
}

// ---- the loader --------------------------------------------------------------------------------

TEST_CASE("data: loader samples are T+1 consecutive stream tokens, one pass visits each once",
          "[data][loader]") {
  TempDir dir;
  // 10 documents of 100 tokens whose values are their stream positions: samples cross documents
  std::vector<std::vector<int32_t>> docs;
  for (int d = 0; d < 10; ++d) docs.push_back(positions(100, 100 * d));
  write_megatron(dir.file("pos"), docs);
  LoaderSpec spec;
  spec.blend = {{1.0, dir.file("pos")}};
  spec.split = "1";
  spec.seq_len = 16;
  Loader L(spec, Split::train);
  REQUIRE(L.num_samples() == (1000 - 1) / 16);  // 62
  std::set<int32_t> starts;
  for (const auto& s : draw(L, 62)) {
    const int32_t start = s[0];
    CHECK(start % 16 == 0);  // sample i starts at token i*T
    for (int t = 0; t < 16; ++t) {
      REQUIRE(s[t] == start + t);           // inputs: tokens [iT, iT+T)
      REQUIRE(s[16 + t] == start + t + 1);  // targets: inputs shifted by one
    }
    starts.insert(start);
  }
  // every sample exactly once, so sample i's last target (iT+T) is sample i+1's first input
  CHECK(starts.size() == 62);
  CHECK(*starts.rbegin() == 61 * 16);
  // batches are the same samples as single draws, laid out batch-major
  Loader a(spec, Split::train), b(spec, Split::train);
  CHECK(draw(a, 4, 5) == draw(b, 20, 1));
}

TEST_CASE("data: loader order is a seeded shuffle", "[data][loader]") {
  TempDir dir;
  write_megatron(dir.file("pos"), {positions(2000)});
  LoaderSpec spec;
  spec.blend = {{1.0, dir.file("pos")}};
  spec.split = "1";
  spec.seq_len = 8;
  Loader a(spec, Split::train), b(spec, Split::train);
  const auto sa = draw(a, 50), sb = draw(b, 50);
  CHECK(sa == sb);
  spec.seed = 99;
  Loader c(spec, Split::train);
  CHECK(draw(c, 50) != sa);
  // shuffled, not in stream order
  bool in_order = true;
  for (size_t i = 0; i < sa.size(); ++i) in_order = in_order && sa[i][0] == int32_t(8 * i);
  CHECK(!in_order);
  // reset goes back to the first sample
  a.reset();
  CHECK(draw(a, 50) == sa);
}

TEST_CASE("data: a restored loader continues exactly, across epoch boundaries", "[data][loader]") {
  TempDir dir;
  write_megatron(dir.file("a"), {positions(60)});  // 7 samples at T = 8
  write_llmc(dir.file("c.llmc"),
             positions(45, 1000));  // llm.c is read below through its own loader
  write_megatron(dir.file("b"), {positions(45, 1000)});  // 5 samples
  LoaderSpec spec;
  spec.blend = {{2.0, dir.file("a")}, {1.0, dir.file("b")}};
  spec.split = "1";
  spec.seq_len = 8;
  Loader ref(spec, Split::train);
  const auto expected = draw(ref, 40, 3);  // 120 samples: many epochs of both datasets
  for (int k : {0, 1, 2, 3, 5, 8, 13, 21, 30}) {
    Loader a(spec, Split::train);
    draw(a, k, 3);
    const std::string saved = a.state().dump();  // through JSON text, as a checkpoint would
    Loader b(spec, Split::train);
    draw(b, 2, 3);  // a restored loader's own past does not matter
    b.restore(nlohmann::json::parse(saved));
    CHECK(b.samples_drawn() == 3 * k);
    const auto rest = draw(b, 40 - k, 3);
    INFO("restored after " << k << " batches");
    CHECK(std::equal(rest.begin(), rest.end(), expected.begin() + 3 * k));
  }
  // an epoch gets a new permutation: the second pass of dataset a is not a replay of the first
  std::vector<int32_t> pass1, pass2;
  {
    LoaderSpec one = spec;
    one.blend = {{1.0, dir.file("a")}};
    Loader a(one, Split::train);
    for (const auto& s : draw(a, 7)) pass1.push_back(s[0]);
    for (const auto& s : draw(a, 7)) pass2.push_back(s[0]);
    CHECK(std::set<int32_t>(pass2.begin(), pass2.end()).size() == 7);
    CHECK(pass1 != pass2);
  }
  // llm.c files resume the same way
  LoaderSpec l = spec;
  l.format = ShardFormat::llmc;
  l.blend = {{1.0, dir.file("c.llmc")}};
  Loader la(l, Split::train), lb(l, Split::train);
  draw(la, 6);
  lb.restore(la.state());
  CHECK(draw(la, 9) == draw(lb, 9));
}

TEST_CASE("data: restore rejects a state from another spec or other data", "[data][loader]") {
  TempDir dir;
  std::vector<std::vector<int32_t>> docs;
  for (int d = 0; d < 10; ++d) docs.push_back(positions(10, 10 * d));
  write_megatron(dir.file("a"), docs);
  LoaderSpec spec;
  spec.blend = {{1.0, dir.file("a")}};
  spec.split = "8,2,0";
  spec.seq_len = 4;
  nlohmann::json st;
  std::vector<std::vector<int32_t>> continuation;
  {  // (gone before the files are rewritten below: its prefetch thread may be reading them)
    Loader a(spec, Split::train);
    draw(a, 3);
    st = a.state();
    continuation = draw(a, 5);
  }

  LoaderSpec other = spec;
  other.seed = 5;
  Loader b(other, Split::train);
  CHECK(contains(error_of([&] { b.restore(st); }), "seed"));
  other = spec;
  other.seq_len = 5;
  Loader c(other, Split::train);
  CHECK(contains(error_of([&] { c.restore(st); }), "seq_len"));
  Loader v(spec, Split::valid);
  CHECK(contains(error_of([&] { v.restore(st); }), "split is valid, the state has train"));
  // same size, different content
  for (auto& doc : docs) doc[3] += 1000;
  write_megatron(dir.file("a"), docs);
  Loader d(spec, Split::train);
  CHECK(contains(error_of([&] { d.restore(st); }), "fingerprint"));
  // different size
  docs.push_back(positions(20));
  write_megatron(dir.file("a"), docs);
  Loader e(spec, Split::train);
  CHECK(contains(error_of([&] { e.restore(st); }), "num_tokens"));
  // garbage
  CHECK(contains(error_of([&] { e.restore(nlohmann::json{{"kind", 3}}); }), "data loader state"));
  auto bad = st;
  bad["datasets"][0]["position"] = 1000;
  docs.pop_back();
  for (auto& doc : docs) doc[3] -= 1000;
  write_megatron(dir.file("a"), docs);
  Loader f(spec, Split::train);
  CHECK(contains(error_of([&] { f.restore(bad); }), "invalid position"));
  f.restore(st);  // the original still fits
  CHECK(draw(f, 5) == continuation);
}

TEST_CASE("data: blend of weights 3:1 draws 300:100 of 400", "[data][loader]") {
  TempDir dir;
  write_megatron(dir.file("x"), {positions(1500)});         // tokens < 1500
  write_megatron(dir.file("y"), {positions(1500, 20000)});  // tokens >= 20000
  LoaderSpec spec;
  spec.blend = {{3.0, dir.file("x")}, {1.0, dir.file("y")}};
  spec.split = "1";
  spec.seq_len = 8;  // 187 samples each: dataset x goes into its second epoch
  Loader L(spec, Split::train);
  int from_x = 0, j = 0;
  for (const auto& s : draw(L, 100, 4)) {
    from_x += s[0] < 20000;
    ++j;
    REQUIRE(std::abs(from_x - 0.75 * j) <= 1.0);  // never more than one sample off its share
  }
  CHECK(std::abs(from_x - 300) <= 1);
  CHECK(L.num_samples() == 2 * 187);
}

TEST_CASE("data: splits are disjoint contiguous document ranges", "[data][loader]") {
  TempDir dir;
  // document d: between 5 and 15 copies of the token d, so every token names its document
  std::vector<std::vector<int32_t>> docs;
  for (int d = 0; d < 100; ++d) docs.push_back(std::vector<int32_t>(5 + d % 11, d));
  write_megatron(dir.file("docs"), docs);
  LoaderSpec spec;
  spec.blend = {{1.0, dir.file("docs")}};
  spec.split = "80,20,0";
  spec.seq_len = 4;
  auto seen = [&](Split split) {
    Loader L(spec, split);
    std::set<int32_t> ids;
    for (const auto& s : draw(L, static_cast<int>(L.num_samples()))) ids.insert(s.begin(), s.end());
    return ids;
  };
  const auto train = seen(Split::train), valid = seen(Split::valid);
  CHECK(*train.begin() == 0);
  CHECK(*train.rbegin() == 79);  // documents [0, 80)
  CHECK(*valid.begin() == 80);   // documents [80, 100)
  CHECK(*valid.rbegin() == 99);
  CHECK(train.size() == 80);
  CHECK(valid.size() == 20);
  CHECK(contains(error_of([&] { Loader l(spec, Split::test); }), "no samples for the test split"));

  // "1,1,0" on 4 documents: 2 and 2
  write_megatron(dir.file("four"), {std::vector<int32_t>(20, 0), std::vector<int32_t>(20, 1),
                                    std::vector<int32_t>(20, 2), std::vector<int32_t>(20, 3)});
  spec.blend = {{1.0, dir.file("four")}};
  spec.split = "1,1,0";
  CHECK(seen(Split::train) == std::set<int32_t>{0, 1});
  CHECK(seen(Split::valid) == std::set<int32_t>{2, 3});

  // an empty valid part: a train loader works, a valid loader is an error
  spec.split = "1,0,0";
  Loader train_only(spec, Split::train);
  CHECK(train_only.num_samples() == 79 / 4);
  const std::string msg = error_of([&] { Loader l(spec, Split::valid); });
  INFO(msg);
  CHECK(contains(msg, "no samples for the valid split"));
  CHECK(contains(msg, "four"));
}

TEST_CASE("data: the loader checks every token against vocab_size", "[data][loader]") {
  TempDir dir;
  write_megatron(dir.file("ex"), kExampleDocs);
  LoaderSpec spec;
  spec.blend = {{1.0, dir.file("ex")}};
  spec.split = "1";
  spec.seq_len = 4;
  spec.vocab_size = 1000;  // 15496 and friends are out of range
  Loader L(spec, Split::train);
  std::vector<int32_t> in(4), tg(4);
  const std::string msg = error_of([&] {
    for (int i = 0; i < 4; ++i) L.next_batch(1, in.data(), tg.data());
  });
  INFO(msg);
  CHECK(contains(msg, dir.file("ex.bin")));
  CHECK(contains(msg, "token id"));
  CHECK(contains(msg, ">= vocab_size 1000"));
  // the full GPT-2 vocabulary accepts them
  spec.vocab_size = 50257;
  Loader ok(spec, Split::train);
  CHECK(draw(ok, 4).size() == 4);
  // a 2-document blend where one file has too few tokens for this split is left out, not an error
  write_megatron(dir.file("tiny"), {{1, 2}});
  spec.blend = {{1.0, dir.file("ex")}, {1.0, dir.file("tiny")}};
  Loader blended(spec, Split::train);
  CHECK(blended.num_samples() == (19 - 1) / 4);
}

// ---- the loader: prefetch and data-parallel ranks ----------------------------------------------

namespace {

// A 2:1 blend of two small files (7 and 5 samples at T = 8), so that a few batches cross many
// epoch boundaries; prefetch as given.
LoaderSpec small_blend(const TempDir& dir, bool prefetch) {
  write_megatron(dir.file("a"), {positions(60)});
  write_megatron(dir.file("b"), {positions(45, 1000)});
  LoaderSpec spec;
  spec.blend = {{2.0, dir.file("a")}, {1.0, dir.file("b")}};
  spec.split = "1";
  spec.seq_len = 8;
  spec.prefetch = prefetch;
  return spec;
}

}  // namespace

TEST_CASE("data: prefetch returns exactly the samples of synchronous reads", "[data][loader]") {
  TempDir dir;
  const LoaderSpec spec = small_blend(dir, true);
  LoaderSpec sync = spec;
  sync.prefetch = false;
  CHECK(LoaderSpec().prefetch);  // on by default
  Loader on(spec, Split::train), off(sync, Split::train);
  CHECK(draw(on, 40, 3) == draw(off, 40, 3));  // 120 samples: many epochs of both datasets
  CHECK(on.state() == off.state());
  // another batch size drops the prefetched batch and reads the right one; 0 draws nothing
  for (int b : {1, 4, 4, 0, 2, 7, 7, 7, 1, 0, 1}) {
    INFO("batch " << b);
    CHECK(draw(on, 2, b) == draw(off, 2, b));
  }
  CHECK(on.samples_drawn() == off.samples_drawn());
  on.reset();  // cancels the prefetch and prefetches the first batch again
  off.reset();
  CHECK(on.samples_drawn() == 0);
  CHECK(draw(on, 10, 5) == draw(off, 10, 5));
  CHECK(on.state() == off.state());
}

TEST_CASE("data: with prefetch, state() is the position after the batches handed out",
          "[data][loader]") {
  TempDir dir;
  const LoaderSpec spec = small_blend(dir, true);
  LoaderSpec sync = spec;
  sync.prefetch = false;
  Loader ref(sync, Split::train);
  const auto expected = draw(ref, 30, 3);
  for (int k : {0, 1, 2, 7, 13, 29}) {
    INFO("after " << k << " batches");
    Loader a(spec, Split::train), s(sync, Split::train);
    draw(a, k, 3);
    draw(s, k, 3);
    CHECK(a.samples_drawn() == 3 * k);  // not counting the batch prefetched meanwhile
    CHECK(a.state() == s.state());
    const std::string saved = a.state().dump();
    Loader b(spec, Split::train);
    draw(b, 2, 3);  // b has a prefetch in flight (or done) for its own position: restore drops it
    b.restore(nlohmann::json::parse(saved));
    CHECK(b.samples_drawn() == 3 * k);
    const auto rest = draw(b, 30 - k, 3);
    CHECK(std::equal(rest.begin(), rest.end(), expected.begin() + 3 * k));
    CHECK(draw(a, 30 - k, 3) == rest);  // and the saved loader goes on unchanged
  }
}

TEST_CASE("data: ranks take consecutive disjoint slices of one global batch", "[data][loader]") {
  TempDir dir;
  write_megatron(dir.file("x"), {positions(2000)});        // 249 samples at T = 8
  write_megatron(dir.file("y"), {positions(900, 10000)});  // 112 samples
  LoaderSpec spec;
  spec.blend = {{3.0, dir.file("x")}, {1.0, dir.file("y")}};
  spec.split = "1";
  spec.seq_len = 8;
  spec.prefetch = false;
  Loader ref(spec, Split::train);
  const auto global = draw(ref, 400, 1);  // the global sequence, one sample at a time
  const int B = 4;
  for (int W : {2, 3}) {
    for (bool prefetch : {true, false}) {
      INFO("world_size " << W << ", prefetch " << prefetch);
      std::vector<std::unique_ptr<Loader>> ranks;
      for (int r = 0; r < W; ++r) {
        LoaderSpec s = spec;
        s.rank = r;
        s.world_size = W;
        s.prefetch = prefetch;
        ranks.push_back(std::make_unique<Loader>(s, Split::train));
      }
      const int steps = 240 / (W * B);  // 240 samples: no dataset wraps (x gets 180 of them)
      std::vector<std::vector<int32_t>> joint;
      std::set<int32_t> starts;
      for (int step = 0; step < steps; ++step) {
        for (int r = 0; r < W; ++r) {
          for (const auto& s : draw(*ranks[r], 1, B)) {
            joint.push_back(s);
            starts.insert(s[0]);
          }
          CHECK(ranks[r]->samples_drawn() == int64_t(step + 1) * W * B);  // the global position
        }
      }
      CHECK(std::equal(joint.begin(), joint.end(), global.begin()));  // rank-major per step
      CHECK(starts.size() == joint.size());                           // disjoint
      // the state is the global position: the same on every rank, and a W = 1 loader's
      ref.reset();
      draw(ref, steps, W * B);
      for (int r = 0; r < W; ++r) CHECK(ranks[r]->state() == ref.state());
      // any rank's state resumes any world size: 2 ranks of batch 6 go on from the same place
      const int64_t g = int64_t(steps) * W * B;
      for (int r = 0; r < 2; ++r) {
        LoaderSpec s = spec;
        s.rank = r;
        s.world_size = 2;
        s.prefetch = prefetch;
        Loader other(s, Split::train);
        other.restore(ranks[W - 1]->state());
        const auto got = draw(other, 2, 6);  // global samples g + 12j + 6r + [0, 6), j = 0, 1
        for (int j = 0; j < 2; ++j) {
          CHECK(std::equal(got.begin() + 6 * j, got.begin() + 6 * j + 6,
                           global.begin() + g + 12 * j + 6 * r));
        }
      }
    }
  }
  // rank and world_size are checked
  auto bad = [&](int rank, int world_size) {
    LoaderSpec s = spec;
    s.rank = rank;
    s.world_size = world_size;
    return error_of([&] { Loader l(s, Split::train); });
  };
  CHECK(contains(bad(2, 2), "rank must be in [0, world_size = 2), got 2"));
  CHECK(contains(bad(-1, 2), "rank must be in [0, world_size = 2), got -1"));
  CHECK(contains(bad(0, 0), "world_size must be >= 1, got 0"));
}

TEST_CASE("data: a bad token met while prefetching is thrown by the call that returns it",
          "[data][loader]") {
  TempDir dir;
  LoaderSpec spec;
  spec.blend = {{1.0, dir.file("t")}};
  spec.split = "1";
  spec.seq_len = 8;
  spec.vocab_size = 1000;
  spec.prefetch = false;
  // the 32nd sample of the shuffled order (in the 16th batch of 2) gets a token >= vocab_size; the
  // order does not depend on the tokens, only on the number of samples
  std::vector<int32_t> tokens = positions(400);  // 49 samples
  write_megatron(dir.file("t"), {tokens});
  int32_t bad_start = 0;
  {
    Loader probe(spec, Split::train);
    bad_start = draw(probe, 32)[31][0];
  }
  tokens[static_cast<size_t>(bad_start + 3)] = 5000;
  write_megatron(dir.file("t"), {tokens});
  const std::string want = dir.file("t.bin") + ": token id 5000 at token " +
                           std::to_string(bad_start + 3) + " >= vocab_size 1000";

  for (bool prefetch : {false, true}) {
    INFO("prefetch " << prefetch);
    spec.prefetch = prefetch;
    Loader L(spec, Split::train);
    std::vector<int32_t> in(16), tg(16);
    for (int i = 0; i < 15; ++i) L.next_batch(2, in.data(), tg.data());  // batches 0..14 are fine
    // with prefetch, batch 15 was read in the background meanwhile: give it time to fail there
    if (prefetch) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::vector<int32_t> before = in;
    CHECK(error_of([&] { L.next_batch(2, in.data(), tg.data()); }) == want);
    CHECK(in == before);             // nothing written
    CHECK(L.samples_drawn() == 30);  // nor drawn: the same call fails again
    CHECK(error_of([&] { L.next_batch(2, in.data(), tg.data()); }) == want);
    CHECK(L.samples_drawn() == 30);
    L.next_batch(1, in.data(), tg.data());  // sample 30 is fine, sample 31 the bad one
    CHECK(error_of([&] { L.next_batch(1, in.data(), tg.data()); }) == want);
    L.reset();  // a prefetch that would fail is dropped with the batch it belonged to
    CHECK(draw(L, 15, 2).size() == 30);
  }
}

TEST_CASE("data: a loader with a prefetch in flight is destroyed, moved and reset cleanly",
          "[data][loader]") {
  TempDir dir;
  std::vector<int32_t> big = positions(1 << 18);
  for (int32_t& t : big) t %= 50000;
  write_megatron(dir.file("big"), {big});
  LoaderSpec spec;
  spec.blend = {{1.0, dir.file("big")}};
  spec.split = "1";
  spec.seq_len = 512;
  std::vector<int32_t> in(64 * 512), tg(in.size());
  for (int i = 0; i < 20; ++i) {
    Loader L(spec, Split::train);
    L.next_batch(64, in.data(), tg.data());  // the next 64 samples are being read as L dies
  }
  {
    Loader L(spec, Split::train);
    L.next_batch(64, in.data(), tg.data());
    L.reset();  // cancels, and prefetches the first batch again
  }
  {
    Loader unused(spec, Split::train);  // no thread was ever started
  }
  LoaderSpec sync = spec;
  sync.prefetch = false;
  Loader ref(sync, Split::train);
  const auto expected = draw(ref, 4, 16);
  Loader a(spec, Split::train);
  const auto first = draw(a, 1, 16);
  Loader b(std::move(a));  // the prefetch thread moves along with the loader's state
  auto got = draw(b, 3, 16);
  got.insert(got.begin(), first.begin(), first.end());
  CHECK(got == expected);
}
