// libFuzzer target: a checkpoint's state.json (engine/checkpoint.h), read as `--resume`, `eval` and
// `sample` read it, and what the resume then feeds it to.
//
// Input: the bytes of state.json, written into SCRATCH/ckpt-7/ (with an empty model.safetensors:
// open_checkpoint only checks that it exists; weights are fuzz_safetensors' business). Then, as
// engine/train.cpp's restore() does:
//   open_checkpoint (read_checkpoint_state: format_version, step against the directory name,
//   tokens, config, data.train; checkpoint_config: the config over today's defaults);
//   check_same_model against the fixed run config (the tiny preset, fuzz_util.h);
//   the fixed Loader's restore() with data.train, then one batch from the restored position;
//   the fixed model's import_state (the tiny preset is UniPool: the pool loss's ĝ).
// Each step is tried even when the one before refused the state (its own Error), so that a state
// of another model still reaches the loader and import_state.
// Expected outcome for a bad input: unipool::Error. std::bad_alloc is a finding (fuzz_util.h): the
// state's numbers are positions and counts, never sizes.
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fsutil.h"
#include "base/json_fields.h"
#include "data/loader.h"
#include "data/shards.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "fuzz/fuzz_util.h"
#include "model/layout.h"
#include "model/model.h"

using namespace unipool;
using namespace unipool::fuzz;

namespace {

struct Fixture {
  std::string dir = scratch("ckpt-7");
  Config config;
  Layout layout;
  std::unique_ptr<Model<CpuBackend<float>>> model;
  std::unique_ptr<data::Loader> loader;

  Fixture() {
    const std::string shard = scratch("shard");
    data::write_megatron(shard, fixed_documents());
    config = load_config(read_config_file("tiny"), fixed_config_overrides(), false);
    layout = make_layout(config.model);
    model = std::make_unique<Model<CpuBackend<float>>>(layout, config.loss, 1,
                                                       config.model.seq_len);
    loader = std::make_unique<data::Loader>(fixed_loader_spec(shard), data::Split::train);
    make_dirs(dir);
    write_bytes(dir + "/model.safetensors", "");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fx;
  write_bytes(fx.dir + "/state.json", data, size);

  OpenedCheckpoint ck;
  if (!guard([&] { ck = open_checkpoint(fx.dir, {}, /*check_data=*/false); })) return 0;
  // What read_checkpoint_state promises its callers (they index without checking).
  FUZZ_ASSERT(ck.state.is_object());
  FUZZ_ASSERT(ck.step == 7 && ck.state.at("step").get<int64_t>() == 7);
  FUZZ_ASSERT(ck.state.at("config").is_object() && ck.state.at("data").is_object());
  FUZZ_ASSERT(ck.state.at("data").contains("train"));

  guard([&] { check_same_model(ck, fx.config, "--resume"); });

  // The loader, at the start, restored to the state's position, then one batch.
  fx.loader->reset();
  guard([&] {
    const nlohmann::json& position = ck.state.at("data").at("train");
    fx.loader->restore(position);
    FUZZ_ASSERT(fx.loader->samples_drawn() == position.at("samples_drawn").get<int64_t>());
    const int T = fx.loader->seq_len();
    std::vector<int32_t> in(static_cast<size_t>(T)), tg(in.size());
    fx.loader->next_batch(1, in.data(), tg.data());
    for (int t = 0; t < T; ++t) FUZZ_ASSERT(in[size_t(t)] >= 0 && in[size_t(t)] < 50257);
    // and its state as a new checkpoint would write it restores too
    const nlohmann::json again = nlohmann::json::parse(dump_json(fx.loader->state(), 1));
    must("the loader's own state does not restore", [&] { fx.loader->restore(again); });
  });

  // The model's own state (the pool loss's counts): all or nothing, and it round-trips.
  guard([&] {
    fx.model->import_state(ck.state);
    const PoolLossState pool = fx.model->pool_state();
    for (const auto* rows : {&pool.ghat, &pool.running})
      for (const auto& row : *rows)
        for (const double x : row) FUZZ_ASSERT(x >= 0 && std::isfinite(x));
    const nlohmann::json exported = nlohmann::json::parse(dump_json(fx.model->export_state(), 1));
    must("the model's exported state does not import", [&] { fx.model->import_state(exported); });
  });
  return 0;
}
