#include "engine/trainer.h"

#include <cmath>
#include <sstream>

#include "base/error.h"
#include "engine/optimizer.h"
#include "model/init.h"

namespace unipool {

template <class B>
TrainerOn<B>::TrainerOn(const Config& c)
    : config(c),
      layout(make_layout(c.model)),
      model(layout, c.loss, c.train.micro_batch, c.model.seq_len),
      exp_avg(B::template alloc<Param>(layout.arena_size, "AdamW first moments")),
      exp_avg_sq(B::template alloc<Param>(layout.arena_size, "AdamW second moments")),
      inputs_(static_cast<size_t>(c.train.micro_batch) * c.model.seq_len),
      targets_(inputs_.size()) {
  B::zero(exp_avg.data(), exp_avg.size());
  B::zero(exp_avg_sq.data(), exp_avg_sq.size());
  std::vector<Param> init(layout.arena_size);
  init_parameters(layout, init.data(), c.train.seed);
  model.params_from_host(init.data());
}

template <class B>
StepResult TrainerOn<B>::train_step(const BatchSource& next_batch) {
  const int accum = config.train.grad_accum;
  StepResult r;
  model.zero_grads();
  for (int micro = 0; micro < accum; ++micro) {
    next_batch(inputs_.data(), targets_.data());
    const Losses losses =
        model.forward(inputs_.data(), targets_.data(), /*train=*/true, 1.0 / accum);
    model.backward();
    r.loss += losses.lm / accum;
    r.aux_loss += losses.aux / accum;
  }
  auto phase = model.profile.scope("grad norm");
  r.grad_norm = B::global_grad_norm(layout.optimizer_table, model.grads());
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
  r.lr = learning_rate(config.optim, config.train.steps, next);
  phase.next("adamw");
  B::adamw_step(
      layout.optimizer_table, model.params(), model.grads(), exp_avg.data(), exp_avg_sq.data(),
      model.weight_copy(),
      adamw_params(config.optim, next, r.lr, clip_factor(r.grad_norm, config.optim.grad_clip)));
  step = next;
  return r;
}

template <class B>
double TrainerOn<B>::evaluate(const BatchSource& next_batch, int batches) {
  double sum = 0;
  for (int b = 0; b < batches; ++b) {
    next_batch(inputs_.data(), targets_.data());
    sum += model.forward(inputs_.data(), targets_.data(), /*train=*/false).lm;
  }
  return sum / batches;
}

template <class B>
typename TrainerOn<B>::HostState TrainerOn<B>::host_state() {
  if constexpr (B::kWeightCopy) {  // device memory: stage host copies
    host_params_ = model.params_to_host();
    host_exp_avg_.resize(layout.arena_size);
    host_exp_avg_sq_.resize(layout.arena_size);
    B::download(host_exp_avg_.data(), exp_avg.data(), host_exp_avg_.size());
    B::download(host_exp_avg_sq_.data(), exp_avg_sq.data(), host_exp_avg_sq_.size());
    return {host_params_.data(), host_exp_avg_.data(), host_exp_avg_sq_.data()};
  } else {
    return {model.params(), exp_avg.data(), exp_avg_sq.data()};
  }
}

template <class B>
void TrainerOn<B>::commit_host_state() {
  if constexpr (B::kWeightCopy) {
    check(int64_t(host_params_.size()) == layout.arena_size,
          "trainer: commit_host_state without host_state");
    model.params_from_host(host_params_.data());
    B::upload(exp_avg.data(), host_exp_avg_.data(), host_exp_avg_.size());
    B::upload(exp_avg_sq.data(), host_exp_avg_sq_.data(), host_exp_avg_sq_.size());
  }
}

template class TrainerOn<CpuBackend<float>>;
#ifdef UNIPOOL_HAVE_CUDA
template class TrainerOn<CudaBackend>;
#endif

}  // namespace unipool
