// The CUDA op list: the same ops, names, argument order and semantics as kernels/cpu (see the CPU
// headers for the math of each), so that model/model.cpp runs unchanged on either backend
// (model/backend.h binds the names). Every pointer is a DEVICE pointer; every launcher is
// asynchronous on cuda::stream() and throws unipool::Error when the launch fails.
//
// Precision (docs/model.md §Numerics by backend): activations and the weights the GEMMs read are
// bf16; every reduction accumulates in fp32; master weights, weight gradients, router math (logits,
// scores, gates), the norms' statistics and the losses are fp32.
//   Act    = bf16    activations and activation gradients        (CPU: T)
//   Float  = float   router values, rstd, lse, per-token losses   (CPU: T)
//   Param  = float   master weights and weight gradients          (CPU: T)
//   Weight = bf16    the copy of the weights the GEMMs read        (CPU: T, the master itself)
//
// DETERMINISM: no float atomics anywhere. Every output element is written by one thread (or one
// fixed reduction tree), every sum runs in an order fixed by the shapes alone; where a sum spans
// thread blocks, blocks write partials into op-owned Scratch and a second pass adds them in a fixed
// order. Same inputs + same GPU kind = bitwise the same outputs.
//
// "+=" outputs accumulate into what is there, "=" outputs are fully overwritten.
//
// Host-only header: includable from g++-compiled .cpp files.
#pragma once
#include <cstdint>

#include "kernels/cuda/runtime.h"
#include "kernels/op_types.h"

namespace unipool::cuda {

// ---- layers (kernels/cuda/layers.cu; CPU: kernels/cpu/layers.h) --------------------------------
// out[t,:] = E[tokens[t],:]                                   out [N,d] =, E [V,d]
void embedding_forward(bf16* out, const int32_t* tokens, const float* E, int N, int d);
// dE[v,:] += Σ_{t: tokens[t]=v} dout[t,:]                      dE [V,d] +=, summed in token order
void embedding_backward(float* dE, const bf16* dout, const int32_t* tokens, int N, int d);
// rstd[t] = 1/sqrt(mean x[t,:]² + eps); out = x·rstd·w          out [N,d] = (may alias x), rstd [N]
// =
void rmsnorm_forward(bf16* out, float* rstd, const bf16* x, const float* w, int N, int d,
                     double eps);
// dx [N,d] +=, dw [d] += (see kernels/cpu/layers.h)
void rmsnorm_backward(bf16* dx, float* dw, const bf16* dout, const bf16* x, const float* w,
                      const float* rstd, int N, int d);
// a = silu(g)·v, h13 row = [g | v]                             a [N,F] =
void swiglu_forward(bf16* a, const bf16* h13, int N, int F);
// dh13 = [dg | dv]                                             dh13 [N,2F] =
void swiglu_backward(bf16* dh13, const bf16* da, const bf16* h13, int N, int F);
// out[r,:] = scale[r]·in[r,:]                                  out [rows,cols] = (may alias in)
void scale_rows(bf16* out, const bf16* in, const float* scale, int rows, int cols);
// out[r] = <a[r,:], b[r,:]>                                    out [rows] =
void row_dot(float* out, const bf16* a, const bf16* b, int rows, int cols);

// ---- attention (kernels/cuda/attention.cu; CPU: kernels/cpu/attention.h) -----------------------
// qkv [B·T, (nh + 2·nkv)·hd]: rotate q and k in place; cos/sin tables [T, hd/2] (computed on the
// host by cpu::rope_tables, uploaded once).
void rope_forward(bf16* qkv, const float* cos_table, const float* sin_table, int B, int T, int nh,
                  int nkv, int hd);
void rope_backward(bf16* dqkv, const float* cos_table, const float* sin_table, int B, int T, int nh,
                   int nkv, int hd);
// Causal GQA flash attention, the T×T matrix never materialised.  out [B·T, nh·hd] =, lse [B,nh,T]
// =
void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int nh, int nkv,
                       int hd);
// dqkv [B·T, (nh+2·nkv)·hd] = (dK, dV summed over a KV head's query heads in a fixed order)
void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                        const float* lse, int B, int T, int nh, int nkv, int hd);
// Decoding: ONE query row per head (q [nh·hd], after RoPE, at position Tlen−1) against a cache of
// Tlen rows (row s of keys/values at k + s·ld, v + s·ld) → out [nh·hd] =; scratch: at least
// nh·(Tlen + 16) floats. One block per head, fp32 scores and sums in a fixed order.
void attention_decode(bf16* out, const bf16* q, const bf16* k, const bf16* v, int ld, int Tlen,
                      int nh, int nkv, int hd, float* scratch);

// ---- matrix products (kernels/cuda/matmul.cu; CPU: kernels/cpu/matmul.h) -----------------------
// cuBLASLt, bf16 inputs, fp32 accumulation, one algorithm fixed per shape (chosen once, cached),
// a fixed workspace.
// out[N,O] (+)= in[N,I] · W[O,I]ᵀ
void matmul_forward(bf16* out, const bf16* in, const bf16* W, int N, int I, int O, bool accumulate);
// dIn[N,I] (+)= dOut[N,O] · W[O,I]
void matmul_backward_input(bf16* dIn, const bf16* dOut, const bf16* W, int N, int I, int O,
                           bool accumulate);
// dW[O,I] += dOut[N,O]ᵀ · in[N,I]    (fp32 gradient buffer)
void matmul_backward_weight(float* dW, const bf16* dOut, const bf16* in, int N, int I, int O);

// Router logits in fp32 from the fp32 master router weights (handwritten, small R):
// z[N,R] = xn[N,d] · Wr[R,d]ᵀ
void router_logits_forward(float* z, const bf16* xn, const float* Wr, int N, int d, int R);
// dxn[N,d] += dz · Wr;   dWr[R,d] += dzᵀ · xn     (dWr summed over tokens in a fixed order)
void router_logits_backward(bf16* dxn, float* dWr, const float* dz, const bf16* xn, const float* Wr,
                            int N, int d, int R);

// Expert GEMMs over all experts of a layer in one launch, with device-side offsets: the rows
// [offsets[e], offsets[e+1]) of the expert-major buffers belong to expert e, whose weight is
// W + e·O·I ([O,I]). rows = offsets[E] = N·k (the total is known on the host; the split is not).
// Any split works, including experts with no rows and one expert with all rows.
// out[r,:] = in[r,:] · W_eᵀ                                    out [rows,O] =
void grouped_matmul_forward(bf16* out, const bf16* in, const bf16* W, const int32_t* offsets,
                            int rows, int E, int I, int O);
// dIn[r,:] = dOut[r,:] · W_e                                   dIn [rows,I] =
void grouped_matmul_backward_input(bf16* dIn, const bf16* dOut, const bf16* W,
                                   const int32_t* offsets, int rows, int E, int I, int O);
// dW_e += Σ_{r of e} dOut[r,:]ᵀ in[r,:]  (rows in order)       dW [E,O,I] +=
void grouped_matmul_backward_weight(float* dW, const bf16* dOut, const bf16* in,
                                    const int32_t* offsets, int rows, int E, int I, int O);

// ---- routers, top-k, balancing losses (kernels/cuda/router.cu; CPU: kernels/cpu/router.h) -------
void softmax_forward(float* s, const float* z, int N, int E);                     // s =
void softmax_backward(float* dz, const float* ds, const float* s, int N, int E);  // dz =
void sigmoid_forward(float* s, const float* z, int N, int E);  // s = 1/(1+exp(−z))
void sigmoid_backward(float* dz, const float* ds, const float* s, int N, int E);  // dz = ds·s(1−s)
// s = relu(u)·σ·c, u = z/||z||; norm[t] = ||z[t,:]||; sigma: one fp32 value on the device
void norm_router_forward(float* s, float* norm, const float* z, const float* sigma, double c, int N,
                         int E);
// dz =, dsigma [1] += (summed over tokens in a fixed order)
void norm_router_backward(float* dz, float* dsigma, const float* ds, const float* z,
                          const float* norm, const float* sigma, double c, int N, int E);
// ids [N,k] =, gates [N,k] = (chosen on s + bias, bias [E] or null; ties → lowest index; gates are
// the chosen s; renorm divides by their sum)
void topk_forward(int32_t* ids, float* gates, const float* s, const float* bias, int N, int E,
                  int k, bool renorm);
// ds [N,E] +=
void topk_backward(float* ds, const float* dgates, const int32_t* ids, const float* gates,
                   const float* s, int N, int E, int k, bool renorm);
// counts [E] = number of slots routed to each expert
void expert_counts(int32_t* counts, const int32_t* ids, int N, int k, int E);
// loss [1] = coeff · Σ_i weight[i] · Σ_t s[t,i]
void balance_loss_forward(float* loss, const float* s, const float* weight, double coeff, int N,
                          int E);
// ds[t,i] += coeff · weight[i]
void balance_loss_backward(float* ds, const float* weight, double coeff, int N, int E);
// loss [1] = coeff · mean_t logsumexp(z[t,:])²
void z_loss_forward(float* loss, const float* z, double coeff, int N, int E);
// stats [1 + 2E] int32 += (tokens with all k gates 0; slots per expert; slots with a nonzero gate)
void routing_stats(int32_t* stats, const int32_t* ids, const float* gates, int N, int k, int E);
// loss [1] = coeff·(H(q) − log_target)², q = the column means of s·support normalised; weight [E] =
// its gradient on every row of s (support [E] on the device: 1 visible, 0 hidden, or null)
void entropy_loss_forward(float* loss, float* weight, const float* s, const float* support,
                          double coeff, double log_target, int N, int E);
// dz +=
void z_loss_backward(float* dz, const float* z, double coeff, int N, int E);
// Balancing-term bookkeeping on the device (no host synchronisation):
// out[i] = float(counts[i])
void counts_to_float(float* out, const int32_t* counts, int E);
// y[i] += a · x[i]
void axpy(float* y, const float* x, double a, int n);
// running[i] += counts[i]; when finish: ghat[i] = running[i] / layers, running[i] = 0
void pool_counts_update(float* running, float* ghat, const int32_t* counts, bool finish, int layers,
                        int E);
// UniPool-lock column ops (elementwise, one thread per element, no atomics):
// x [N,E] *= scale [E], column by column (in place; one fp32 multiply, as the CPU op)
void scale_columns(float* x, const float* scale, int N, int E);
// out [N,K] = in[:, cols]: out[t,j] = in[t, cols[j]]   (1 <= K <= E; cols [K] on the device, not
// checked: a column outside [0, E) reads as 0)
void select_columns_forward(float* out, const float* in, const int32_t* cols, int N, int E, int K);
// din [N,E] = +0 except din[t, cols[j]] = dout[t,j]   (cols distinct, not checked; a column
// outside [0, E) is skipped)
void select_columns_backward(float* din, const float* dout, const int32_t* cols, int N, int E,
                             int K);
// ids [n] = table[ids[n]] (in place; ids must lie in [0, K) for a table [K]: not checked)
void map_ids(int32_t* ids, const int32_t* table, int64_t n);

// ---- dispatch (kernels/cuda/dispatch.cu; CPU: kernels/cpu/dispatch.h) --------------------------
// Stable counting sort of the N·k slots by expert on the device: offsets [E+1] =, row_slot [N·k] =,
// slot_row [N·k] =. Ids are not checked (they come from topk_forward).
void dispatch_plan(int32_t* offsets, int32_t* row_slot, int32_t* slot_row, const int32_t* ids,
                   int N, int k, int E);
// dst[r,:] = src[row_slot[r]/k,:]                              dst [N·k,d] =
void gather_rows(bf16* dst, const bf16* src, const int32_t* row_slot, int N, int k, int d);
// dst[t,:] (+)= Σ_j src[slot_row[t·k+j],:], in slot order, fp32 sum, one rounding to bf16
void sum_slot_rows(bf16* dst, const bf16* src, const int32_t* slot_row, int N, int k, int d,
                   bool accumulate);
void slot_to_row_values(float* row_vals, const float* slot_vals, const int32_t* row_slot, int n);
void row_to_slot_values(float* slot_vals, const float* row_vals, const int32_t* row_slot, int n);

// ---- LM head loss (kernels/cuda/crossentropy.cu; CPU: kernels/cpu/crossentropy.h) --------------
// losses [rows] = logsumexp(logits[r,:]) − logits[r,targets[r]]  (fp32 math over bf16 logits);
// when dloss != 0 the logits are overwritten in place by (softmax − onehot)·dloss (bf16).
void crossentropy_forward_backward(float* losses, bf16* logits, const int32_t* targets, int rows,
                                   int V, double dloss);
// greedy [rows] = 1 where targets[r] is the argmax of logits[r, 0:V) (the lowest index among equal
// maxima, compared in bf16 as stored), else 0; logits [rows, ld], ld >= V. A target outside
// [0, V) gives 0.
void target_is_argmax(int32_t* greedy, const bf16* logits, const int32_t* targets, int rows, int V,
                      int ld);

// ---- optimizer (kernels/cuda/optimizer.cu; CPU: kernels/cpu/optimizer.h) -----------------------
// Σ g² over every tensor of the table: per tensor, fixed chunks whose squares are summed in
// double by a fixed tree, chunk partials then added in a fixed order. Waits for the result (one
// host sync).
double grad_sum_squares(const TensorTable& tensors, const float* grads);
// AdamW on every tensor of the table (as kernels/cpu/optimizer.h), fp32 master weights and
// moments; when copy is not null it also writes the bf16 copy of every updated weight (copy has
// the arena's layout).
void adamw_step(const TensorTable& tensors, float* params, const float* grads, float* m, float* v,
                bf16* copy, const AdamWParams& optim);
// dst[i] = bf16(src[i])  (the weight copy, after loading or initialising the master weights)
void float_to_bf16_copy(bf16* dst, const float* src, int64_t n);
// dst[i] = float(src[i])   (tests and checkpoints read activations this way)
void bf16_to_float_copy(float* dst, const bf16* src, int64_t n);

}  // namespace unipool::cuda
