#include "engine/trainer.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <type_traits>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "base/json_fields.h"
#include "engine/optimizer.h"
#include "engine/routing_analysis.h"
#include "model/init.h"

namespace unipool {

namespace {

// The tensors of `table` cut to [shard.begin, shard.end), offsets counted from shard.begin: the
// optimizer ops then run on this rank's part of the arena (pointers advanced by shard.begin).
TensorTable cut_to_shard(const TensorTable& table, const Shard& shard) {
  TensorTable cut;
  for (const TensorSpan& t : table) {
    const int64_t begin = std::max(t.offset, shard.begin);
    const int64_t end = std::min(t.offset + t.numel, shard.end);
    if (begin < end) cut.push_back(TensorSpan{begin - shard.begin, end - begin, t.decay});
  }
  return cut;
}

Communicator& comm_or_single(Communicator* given, std::unique_ptr<Communicator>& own) {
  if (given != nullptr) return *given;
  own = make_single_process_communicator();
  return *own;
}

}  // namespace

template <class B>
TrainerOn<B>::TrainerOn(const Config& c, Communicator* given_comm)
    : config(c),
      layout(make_layout(c.model)),
      comm(comm_or_single(given_comm, own_comm_)),
      shard(comm.my_shard(layout.arena_size)),
      model(layout, c.loss, c.train.micro_batch, c.model.seq_len, /*kv_cache_len=*/0,
            c.train.recompute),
      exp_avg(B::template alloc<Param>(size_t(sharded() ? shard.size() : layout.arena_size),
                                       "AdamW first moments")),
      exp_avg_sq(B::template alloc<Param>(exp_avg.size(), "AdamW second moments")),
      shard_table_(cut_to_shard(layout.optimizer_table, shard)),
      inputs_(static_cast<size_t>(c.train.micro_batch) * c.model.seq_len),
      targets_(inputs_.size()) {
  check(comm.size() == 1 || comm.on_device() == B::kWeightCopy,
        std::string("trainer: the ") + comm.transport() + " transport cannot move the " + B::kName +
            " backend's gradients (GPU ranks need NCCL, CPU ranks MPI)");
  B::zero(exp_avg.data(), exp_avg.size());
  B::zero(exp_avg_sq.data(), exp_avg_sq.size());
  if constexpr (std::is_same_v<B, CpuBackend<Param>>) {
    init_parameters(layout, model.params(), c.train.seed);  // host memory already: in place
  } else {
    // (not zeroed first: init_parameters writes every element)
    const std::unique_ptr<Param[]> init(new Param[size_t(layout.arena_size)]);
    init_parameters(layout, init.get(), c.train.seed);
    model.params_from_host(init.get());
  }
  if (c.model.lock.enabled) lock.emplace(c);
  lr_plan.steps = c.train.steps;
}

template <class B>
void TrainerOn<B>::apply_lock_schedule() {
  if (!lock) return;
  const LockRouting next = lock->routing(step);
  const LockRouting& now = model.lock_routing();
  if (next.alpha != now.alpha || next.locked != now.locked || next.sets != now.sets)
    model.set_lock_routing(next);
  model.set_entropy_coeff(lock->entropy_coeff(step));
}

template <class B>
StepResult TrainerOn<B>::train_step(const BatchSource& next_batch) {
  const int accum = config.train.grad_accum, ranks = comm.size();
  StepResult r;
  model.zero_grads();
  // The objective is the mean over micro-batches and ranks: each micro-batch's gradient is formed
  // with weight 1/(accum·ranks), so the sum over ranks below is the mean.
  const double loss_scale = 1.0 / (double(accum) * ranks);
  apply_lock_schedule();
  // The step's routing health (zero-gate shares, experts used) is counted in the forwards and read
  // back with their losses.
  const bool moe = config.model.is_moe();
  model.reset_routing_stats();
  model.collect_routing_stats = moe;
  for (int micro = 0; micro < accum; ++micro) {
    next_batch(inputs_.data(), targets_.data());
    const Losses losses =
        model.forward(inputs_.data(), targets_.data(), /*train=*/true, loss_scale);
    model.backward();
    r.loss += losses.lm / accum;
    r.aux_loss += losses.aux / accum;
  }
  model.collect_routing_stats = false;

  // The gradient sum: this rank's shard of the arena ← Σ over ranks, in rank order. Then the
  // global norm from every rank's share of Σ g², added in rank order with the losses.
  // Every collective of the step is timed into r.comm_seconds.
  const auto timed = [&r](auto&& collective) {
    const Stopwatch t;
    collective();
    r.comm_seconds += t.seconds();
  };
  auto phase = model.profile.scope("grad reduce");
  timed([&] { comm.reduce_scatter_sum(model.grads(), layout.arena_size); });
  phase.next("grad norm");
  // The routing counts ride along in the same sum (exact integers well below 2^53).
  std::vector<double> sums = {r.loss, r.aux_loss,
                              B::grad_sum_squares(shard_table_, model.grads() + shard.begin)};
  if (moe) {
    const std::vector<int64_t> stats = model.routing_stats();
    sums.insert(sums.end(), stats.begin(), stats.end());
    sums.push_back(double(model.routing_stats_tokens()));
  }
  timed([&] { comm.all_reduce_sum(sums.data(), int(sums.size())); });
  r.loss = sums[0] / ranks;
  r.aux_loss = sums[1] / ranks;
  r.grad_norm = std::sqrt(sums[2]);
  if (moe) {
    const int L = config.model.n_layer, R = config.model.router_width();
    for (int l = 0; l < L; ++l) {
      const analysis::LayerStats st =
          analysis::layer_stats(sums.data() + 3 + size_t(l) * (1 + 2 * R), R, sums.back());
      r.zero_gate.push_back(st.zero_gate);
      r.experts_used.push_back(st.experts_used);
    }
  }

  const int next = step + 1;
  if (!std::isfinite(r.loss) || !std::isfinite(r.aux_loss) || !std::isfinite(r.grad_norm)) {
    std::ostringstream msg;
    msg << "step " << next << ": "
        << (!std::isfinite(r.loss)       ? "loss"
            : !std::isfinite(r.aux_loss) ? "aux loss"
                                         : "gradient norm")
        << " is not finite (loss " << r.loss << ", aux " << r.aux_loss << ", grad norm "
        << r.grad_norm << "); stopping before the update, the weights of step " << step
        << " are unchanged";
    throw Error(msg.str());
  }
  r.lr = learning_rate(config.optim, lr_plan, next);
  const AdamWParams adamw =
      adamw_params(config.optim, next, r.lr, clip_factor(r.grad_norm, config.optim.grad_clip));
  if (!sharded()) {
    // ZeRO-0: every rank gets the whole sum and updates the whole arena (replicated state).
    phase.next("grad all-gather");
    timed([&] { comm.all_gather(model.grads(), layout.arena_size); });
    phase.next("adamw");
    B::adamw_step(layout.optimizer_table, model.params(), model.grads(), exp_avg.data(),
                  exp_avg_sq.data(), model.weight_copy(), adamw);
  } else {
    // ZeRO-1: each rank updates its shard (elementwise, so each element gets exactly the update
    // ZeRO-0 gives it), then every rank gathers the others' new weights.
    phase.next("adamw");
    auto* copy = model.weight_copy();
    B::adamw_step(shard_table_, model.params() + shard.begin, model.grads() + shard.begin,
                  exp_avg.data(), exp_avg_sq.data(), copy == nullptr ? nullptr : copy + shard.begin,
                  adamw);
    if (comm.size() > 1) {
      phase.next("weight all-gather");
      timed([&] { comm.all_gather(model.params(), layout.arena_size); });
      if (copy != nullptr) model.refresh_weight_copy();
    }
  }
  if (config.model.expert_bias) {
    // Aux-free balancing: every router's bias moves by the load of the whole step (all
    // micro-batches, all ranks, all layers sharing the router), the same on every rank.
    phase.next("expert bias");
    std::vector<double> loads = model.router_loads();
    timed([&] { comm.all_reduce_sum(loads.data(), int(loads.size())); });
    model.update_expert_bias(loads, config.loss.bias_update_rate);
  }
  step = next;
  return r;
}

template <class B>
double TrainerOn<B>::evaluate(const BatchSource& next_batch, int batches) {
  double sum = 0;  // Σ loss over the micro-batches this rank evaluated
  model.reset_routing_stats();
  model.collect_routing_stats = true;
  for (int first = 0; first < batches; first += comm.size()) {
    if (first + comm.rank() >= batches) break;  // the last round may not need every rank
    next_batch(inputs_.data(), targets_.data());
    sum += model.forward(inputs_.data(), targets_.data(), /*train=*/false).lm;
  }
  model.collect_routing_stats = false;
  // The loss and the routing statistics, summed over ranks (exact integers well below 2^53).
  const std::vector<int64_t> stats = model.routing_stats();
  eval_routing_.assign(stats.begin(), stats.end());
  eval_routing_.push_back(double(model.routing_stats_tokens()));
  eval_routing_.push_back(sum);
  comm.all_reduce_sum(eval_routing_.data(), int(eval_routing_.size()));
  sum = eval_routing_.back();
  eval_routing_.pop_back();
  return sum / batches;
}

template <class B>
nlohmann::json TrainerOn<B>::routing_health() const {
  const ModelConfig& c = config.model;
  if (!c.is_moe() || eval_routing_.empty()) return nlohmann::json::object();
  const int L = c.n_layer, R = c.router_width(), W = 1 + 2 * R;
  const double tokens = eval_routing_.back();
  nlohmann::json layers = nlohmann::json::array();
  std::vector<analysis::Counts> slots;
  for (int l = 0; l < L; ++l) {
    const analysis::LayerStats s =
        analysis::layer_stats(eval_routing_.data() + size_t(l) * W, R, tokens);
    layers.push_back({{"zero_gate", s.zero_gate},
                      {"experts_used", s.experts_used},
                      {"imbalance", analysis::imbalance(s.slots)},
                      {"entropy_bits", analysis::entropy_bits(s.slots)}});
    slots.push_back(s.slots);
  }
  // Dead experts: of a pool, those no layer of the pool sent a token to; of a layer's own
  // experts (vanilla MoE), those the layer sent none.
  const int dead = analysis::dead_experts(slots, c.has_pools() ? c.pool_layers() : 1);
  return {{"layers", layers}, {"dead_experts", dead}};
}

template <class B>
LockCurriculum::Decision TrainerOn<B>::lock_after_evaluation(double val_loss) {
  if (!lock) return {};
  const ModelConfig& c = config.model;
  const int L = c.n_layer, M = c.router_width(), W = 1 + 2 * M;
  check(!eval_routing_.empty(), "trainer: lock_after_evaluation needs an evaluate() first");
  // Rank 0 decides (the partition is solved once) and hands every rank the new state; an error
  // there (a broken lock) reaches every rank.
  std::string envelope;
  LockCurriculum::Decision decision;
  if (comm.rank() == 0) {
    std::vector<std::vector<double>> counts(static_cast<size_t>(L));
    for (int l = 0; l < L; ++l) {  // slots per expert: the top-k's picks (shadow = actual, docs)
      const double* slots = eval_routing_.data() + size_t(l) * W + 1;
      counts[size_t(l)].assign(slots, slots + M);
    }
    nlohmann::json message;
    try {
      decision = lock->after_evaluation(step, val_loss, counts);
      message = {{"state", lock->to_json()}, {"stop", decision.stop}};
    } catch (const Error& e) {
      message = {{"error", e.what()}};
    }
    envelope = dump_json(message);
  }
  const nlohmann::json message = nlohmann::json::parse(comm.broadcast_string(envelope, 0));
  if (message.contains("error")) throw Error(message["error"].get<std::string>());
  if (comm.rank() != 0) {
    lock->from_json(message["state"], step);
    decision.stop = message["stop"].get<std::string>();
  }
  return decision;
}

template <class B>
typename TrainerOn<B>::HostState TrainerOn<B>::gather_state() {
  const bool root = comm.rank() == 0;
  Param* params = model.params();
  if constexpr (B::kWeightCopy) {  // device memory: a host copy (every rank: scatter_state's
                                   // buffer)
    host_params_ = model.params_to_host();
    params = host_params_.data();
  }
  if (!sharded()) {  // ZeRO-0: rank 0's own moments are the whole state
    if (!root) return {params, nullptr, nullptr};
    if constexpr (!B::kWeightCopy) return {params, exp_avg.data(), exp_avg_sq.data()};
    host_exp_avg_.resize(exp_avg.size());
    host_exp_avg_sq_.resize(exp_avg_sq.size());
    B::download(host_exp_avg_.data(), exp_avg.data(), exp_avg.size());
    B::download(host_exp_avg_sq_.data(), exp_avg_sq.data(), exp_avg_sq.size());
    return {params, host_exp_avg_.data(), host_exp_avg_sq_.data()};
  }
  // ZeRO-1: every rank's shard of the moments, gathered to rank 0.
  std::vector<Param> mine_m(exp_avg.size()), mine_v(exp_avg_sq.size());
  B::download(mine_m.data(), exp_avg.data(), mine_m.size());
  B::download(mine_v.data(), exp_avg_sq.data(), mine_v.size());
  const size_t whole = root ? size_t(layout.arena_size) : 0;
  host_exp_avg_.assign(whole, Param(0));
  host_exp_avg_sq_.assign(whole, Param(0));
  comm.gather_shards(mine_m.data(), host_exp_avg_.data(), layout.arena_size, 0);
  comm.gather_shards(mine_v.data(), host_exp_avg_sq_.data(), layout.arena_size, 0);
  if (!root) return {params, nullptr, nullptr};
  return {params, host_exp_avg_.data(), host_exp_avg_sq_.data()};
}

template <class B>
void TrainerOn<B>::scatter_state() {
  const bool root = comm.rank() == 0;
  if (comm.size() == 1 && !B::kWeightCopy) return;  // the state was written in place
  // Weights: rank 0's everywhere.
  const size_t arena = size_t(layout.arena_size);
  Param* params = model.params();
  if constexpr (B::kWeightCopy) {
    check(host_params_.size() == arena, "trainer: scatter_state without gather_state");
    params = host_params_.data();
  }
  comm.broadcast(params, arena * sizeof(Param), 0);
  if constexpr (B::kWeightCopy) model.params_from_host(params);
  // Moments: the whole of rank 0's (ZeRO-0), or each rank's shard of them (ZeRO-1).
  if (!sharded()) {
    if constexpr (!B::kWeightCopy) {  // in place
      comm.broadcast(exp_avg.data(), exp_avg.size() * sizeof(Param), 0);
      comm.broadcast(exp_avg_sq.data(), exp_avg_sq.size() * sizeof(Param), 0);
      return;
    }
    host_exp_avg_.resize(exp_avg.size());  // rank 0's holds the values
    host_exp_avg_sq_.resize(exp_avg_sq.size());
    comm.broadcast(host_exp_avg_.data(), host_exp_avg_.size() * sizeof(Param), 0);
    comm.broadcast(host_exp_avg_sq_.data(), host_exp_avg_sq_.size() * sizeof(Param), 0);
    B::upload(exp_avg.data(), host_exp_avg_.data(), exp_avg.size());
    B::upload(exp_avg_sq.data(), host_exp_avg_sq_.data(), exp_avg_sq.size());
    return;
  }
  std::vector<Param> mine_m(exp_avg.size()), mine_v(exp_avg_sq.size());
  comm.scatter_shards(root ? host_exp_avg_.data() : nullptr, mine_m.data(), layout.arena_size, 0);
  comm.scatter_shards(root ? host_exp_avg_sq_.data() : nullptr, mine_v.data(), layout.arena_size,
                      0);
  B::upload(exp_avg.data(), mine_m.data(), mine_m.size());
  B::upload(exp_avg_sq.data(), mine_v.data(), mine_v.size());
}

template <class B>
nlohmann::json TrainerOn<B>::export_state() {
  nlohmann::json state = model.export_state();
  state["schedule"] = lr_plan.to_json();
  if (lock) state["lock"] = lock->to_json();  // the same on every rank
  if (!state.contains("pool_loss")) return state;
  const std::vector<std::string> all = comm.gather_strings(dump_json(state["pool_loss"]), 0);
  if (comm.rank() != 0) return nlohmann::json::object();
  nlohmann::json ranks = nlohmann::json::array();
  for (const std::string& s : all) ranks.push_back(nlohmann::json::parse(s));
  state["pool_loss"]["ranks"] = ranks;
  return state;
}

template <class B>
void TrainerOn<B>::import_state(const nlohmann::json& state) {
  if (lock) {
    check(state.contains("lock"),
          "checkpoint state: missing lock (the run was not trained with lock.enabled; start it "
          "afresh or take its weights with --init-from)");
    lock->from_json(state["lock"], step);
  } else {
    check(!state.contains("lock"),
          "checkpoint state: the run was trained with UniPool-lock; resume it with lock.enabled "
          "= true");
  }
  if (!state.contains("pool_loss") || !state["pool_loss"].contains("ranks")) {
    model.import_state(state);  // (or an error naming the missing key)
    return;
  }
  const nlohmann::json& saved = state["pool_loss"]["ranks"];
  check(saved.is_array() && !saved.empty(),
        "checkpoint state: pool_loss.ranks must be a non-empty list (one ĝ per rank)");
  nlohmann::json mine = state;
  mine["pool_loss"] = saved[size_t(comm.rank()) % saved.size()];
  model.import_state(mine);
}

template <class B>
std::unique_ptr<TrainerOn<B>> make_trainer_telling(const Config& c, Communicator& comm) {
  const bool root = comm.rank() == 0;
  const Layout layout = make_layout(c.model);
  if (root) {
    std::printf("start-up: allocating and initialising %.1fM parameters (seed %llu) ...",
                layout.num_parameters() / 1e6, static_cast<unsigned long long>(c.train.seed));
    std::fflush(stdout);
  }
  const Stopwatch start_up;
  auto trainer = std::make_unique<TrainerOn<B>>(c, &comm);
  if (root) std::printf(" done in %.1f s\n", start_up.seconds());
  return trainer;
}

template class TrainerOn<CpuBackend<float>>;
template std::unique_ptr<TrainerOn<CpuBackend<float>>> make_trainer_telling(const Config&,
                                                                            Communicator&);
#ifdef UNIPOOL_HAVE_CUDA
template class TrainerOn<CudaBackend>;
template std::unique_ptr<TrainerOn<CudaBackend>> make_trainer_telling(const Config&, Communicator&);
#endif

}  // namespace unipool
