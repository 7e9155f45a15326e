// The unigram baseline of a split (data/unigram.h) on small shards whose entropy is known: the
// split's document range, the blend's weights, the windows of a long stream, the vocabulary check
// and a dataset too short for one sample.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/shards.h"
#include "data/unigram.h"
#include "tests/catch.h"
#include "tests/data_fixtures.h"
#include "tests/tempdir.h"

using unipool::test::contains;
using unipool::test::error_of;
using unipool::test::TempDir;

using namespace unipool::data;

namespace {

// n tokens cycling through 0, 1, ..., period - 1.
std::vector<int32_t> cycle(int n, int period, int offset = 0) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = offset + i % period;
  return t;
}

LoaderSpec spec_of(const std::vector<std::pair<double, std::string>>& blend, const char* split) {
  LoaderSpec spec;
  spec.blend = blend;
  spec.split = split;
  spec.seq_len = 8;
  spec.vocab_size = 100;
  return spec;
}

}  // namespace

TEST_CASE("unigram baseline: the entropy of a split's token frequencies", "[data][unigram]") {
  TempDir dir;
  // document 0: four tokens 25 times each (ln 4); document 1: token 7 only (0); the split "1,1"
  // puts document 0 in train and document 1 in valid
  write_megatron(dir.file("a"), {cycle(100, 4), std::vector<int32_t>(50, 7)});
  const LoaderSpec spec = spec_of({{1.0, dir.file("a")}}, "1,1");
  const UnigramBaseline train = unigram_baseline(spec, Split::train);
  CHECK(train.entropy == Approx(std::log(4.0)).epsilon(1e-12));
  CHECK(train.tokens == 100);
  CHECK(train.distinct == 4);
  CHECK(train.whole);
  const UnigramBaseline valid = unigram_baseline(spec, Split::valid);
  CHECK(valid.entropy == 0);
  CHECK(valid.tokens == 50);
  CHECK(valid.distinct == 1);
  // both documents in one split: tokens 0-3 25 of 150 times each, token 7 50 of 150 times
  const UnigramBaseline all = unigram_baseline(spec_of({{1.0, dir.file("a")}}, "1"), Split::train);
  const double q = 25.0 / 150, r = 50.0 / 150;
  CHECK(all.entropy == Approx(-(4 * q * std::log(q) + r * std::log(r))).epsilon(1e-12));
  CHECK(all.distinct == 5);
}

TEST_CASE("unigram baseline: a blend mixes its datasets by their weights", "[data][unigram]") {
  TempDir dir;
  // file a holds token 1 only, file b token 2 only, of different lengths: the weights 3 : 1, not
  // the lengths, give p = {3/4, 1/4}
  write_megatron(dir.file("a"), {std::vector<int32_t>(40, 1)});
  write_megatron(dir.file("b"), {std::vector<int32_t>(400, 2)});
  const UnigramBaseline u =
      unigram_baseline(spec_of({{3.0, dir.file("a")}, {1.0, dir.file("b")}}, "1"), Split::train);
  CHECK(u.entropy == Approx(-(0.75 * std::log(0.75) + 0.25 * std::log(0.25))).epsilon(1e-12));
  CHECK(u.tokens == 440);
  // a dataset with fewer than seq_len + 1 tokens in the split is left out, as the Loader does
  write_megatron(dir.file("short"), {std::vector<int32_t>(8, 3)});
  const UnigramBaseline v = unigram_baseline(
      spec_of({{3.0, dir.file("a")}, {1.0, dir.file("short")}}, "1"), Split::train);
  CHECK(v.entropy == 0);
  CHECK(v.tokens == 40);
}

TEST_CASE("unigram baseline: a long split is counted in windows", "[data][unigram]") {
  TempDir dir;
  write_megatron(dir.file("long"), {cycle(100000, 4, 10)});
  const LoaderSpec spec = spec_of({{1.0, dir.file("long")}}, "1");
  // 1024 windows of 4 tokens: each window holds the four tokens once, so the estimate is exact
  const UnigramBaseline u = unigram_baseline(spec, Split::train, 4096);
  CHECK_FALSE(u.whole);
  CHECK(u.tokens == 4096);
  CHECK(u.entropy == Approx(std::log(4.0)).epsilon(1e-12));
  CHECK(unigram_baseline(spec, Split::train).whole);
}

TEST_CASE("unigram baseline: tokens outside the vocabulary are an error", "[data][unigram]") {
  TempDir dir;
  write_megatron(dir.file("a"), {cycle(20, 4), {1, 2, 150, 3}});
  LoaderSpec spec = spec_of({{1.0, dir.file("a")}}, "1");
  const std::string e = error_of([&] { unigram_baseline(spec, Split::train); });
  CHECK(contains(e, dir.file("a")));
  CHECK(contains(e, "token id 150 at token 22 >= vocab_size 100"));  // the loader's words
  spec.vocab_size = 151;
  CHECK(unigram_baseline(spec, Split::train).distinct == 5);
  CHECK(contains(error_of([&] { unigram_baseline(spec, Split::valid); }), "no samples"));
}
