#include "engine/trainer.h"

#include <cmath>
#include <sstream>

#include "engine/error.h"
#include "engine/optimizer.h"
#include "model/init.h"

namespace unipool {

Trainer::Trainer(const Config& c)
    : config(c),
      layout(make_layout(c.model)),
      model(layout, c.loss, c.train.micro_batch, c.model.seq_len),
      exp_avg(layout.arena_size, 0.0f),
      exp_avg_sq(layout.arena_size, 0.0f),
      inputs_(static_cast<size_t>(c.train.micro_batch) * c.model.seq_len),
      targets_(inputs_.size()) {
  init_parameters(layout, model.params(), c.train.seed);
}

StepResult Trainer::train_step(const BatchSource& next_batch) {
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
  r.grad_norm = global_grad_norm(layout, model.grads());
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
  adamw_step(layout, model.params(), model.grads(), exp_avg.data(), exp_avg_sq.data(), next, r.lr,
             clip_factor(r.grad_norm, config.optim.grad_clip), config.optim);
  step = next;
  return r;
}

double Trainer::evaluate(const BatchSource& next_batch, int batches) {
  double sum = 0;
  for (int b = 0; b < batches; ++b) {
    next_batch(inputs_.data(), targets_.data());
    sum += model.forward(inputs_.data(), targets_.data(), /*train=*/false).lm;
  }
  return sum / batches;
}

}  // namespace unipool
