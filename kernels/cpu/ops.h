// The CPU op list: every op the model calls, declared once here with its shapes, in the same
// order, with the same names, argument order and semantics as the CUDA op list
// (kernels/cuda/ops.h). The definitions, with the math of each op (forward and backward side by
// side), are in the headers included at the end; docs/backward.md derives each backward.
//
// Every op is a template on the float type T: float for training, double for the
// finite-difference tests. Pointers are host memory, matrices row-major, "N rows" are tokens.
// "+=" outputs accumulate into what is there, "=" outputs are fully overwritten.
//
// DETERMINISM: results are bitwise the same whatever the number of OpenMP threads (each output
// element is written by one loop iteration, every sum runs in an order fixed by the shapes alone;
// see kernels/cpu/layers.h for the rules).
#pragma once
#include <cstdint>

#include "kernels/op_types.h"

namespace unipool::cpu {

// ---- layers (kernels/cpu/layers.h)
// ---------------------------------------------------------------- out[t,:] = E[tokens[t],:] out
// [N,d] =, E [V,d]
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* E, int N, int d);
// dE[v,:] += Σ_{t: tokens[t]=v} dout[t,:]                       dE [V,d] +=, in token order
template <typename T>
void embedding_backward(T* dE, const T* dout, const int32_t* tokens, int N, int d);
// rstd[t] = 1/sqrt(mean x[t,:]² + eps); out = x·rstd·w           out [N,d] = (may alias x), rstd
// [N] =
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, int N, int d, double eps);
// dx [N,d] +=, dw [d] +=
template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const T* rstd, int N,
                      int d);
// a = silu(g)·v, h13 row = [g | v]                              a [N,F] =
template <typename T>
void swiglu_forward(T* a, const T* h13, int N, int F);
// dh13 = [dg | dv]                                              dh13 [N,2F] =
template <typename T>
void swiglu_backward(T* dh13, const T* da, const T* h13, int N, int F);
// out[r,:] = scale[r]·in[r,:]                                   out [rows,cols] = (may alias in)
template <typename T>
void scale_rows(T* out, const T* in, const T* scale, int rows, int cols);
// out[r] = <a[r,:], b[r,:]>                                     out [rows] =
template <typename T>
void row_dot(T* out, const T* a, const T* b, int rows, int cols);

// ---- attention (kernels/cpu/attention.h)
// ------------------------------------------------------------ qkv [B·T, (nh + 2·nkv)·hd]: rotate q
// and k in place by the tables [T, hd/2] of rope_tables.
template <typename T>
void rope_forward(T* qkv, const T* cos_table, const T* sin_table, int B, int Tlen, int nh, int nkv,
                  int hd);
template <typename T>
void rope_backward(T* dqkv, const T* cos_table, const T* sin_table, int B, int Tlen, int nh,
                   int nkv, int hd);
// Causal GQA attention, the T×T matrix never materialised.   out [B·T, nh·hd] =, lse [B,nh,T] =
template <typename T>
void attention_forward(T* out, T* lse, const T* qkv, int B, int Tlen, int nh, int nkv, int hd);
// dqkv [B·T, (nh+2·nkv)·hd] = (dK, dV summed over a KV head's query heads in a fixed order)
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B,
                        int Tlen, int nh, int nkv, int hd);
// Decoding: ONE query row per head (q [nh·hd], after RoPE, at position Tlen−1) against a cache of
// Tlen rows (row s of keys/values at k + s·ld, v + s·ld) → out [nh·hd] =; scratch: at least
// nh·(Tlen + 16) elements
template <typename T>
void attention_decode(T* out, const T* q, const T* k, const T* v, int ld, int Tlen, int nh, int nkv,
                      int hd, T* scratch);

// ---- matrix products (kernels/cpu/matmul.h)
// --------------------------------------------------------- out[N,O] (+)= in[N,I] · W[O,I]ᵀ
template <typename T>
void matmul_forward(T* out, const T* in, const T* W, int N, int I, int O, bool accumulate = false);
// dIn[N,I] (+)= dOut[N,O] · W[O,I]
template <typename T>
void matmul_backward_input(T* dIn, const T* dOut, const T* W, int N, int I, int O,
                           bool accumulate = false);
// dW[O,I] += dOut[N,O]ᵀ · in[N,I]
template <typename T>
void matmul_backward_weight(T* dW, const T* dOut, const T* in, int N, int I, int O);
// Router logits z[N,R] = xn[N,d] · Wr[R,d]ᵀ (fp32 on the GPU, from the fp32 master weights)
template <typename T>
void router_logits_forward(T* z, const T* xn, const T* Wr, int N, int d, int R);
// dxn[N,d] += dz · Wr;   dWr[R,d] += dzᵀ · xn
template <typename T>
void router_logits_backward(T* dxn, T* dWr, const T* dz, const T* xn, const T* Wr, int N, int d,
                            int R);
// Expert GEMMs over an expert-major row buffer: rows [offsets[e], offsets[e+1]) use W + e·O·I.
// out[r,:] = in[r,:] · W_eᵀ                                      out [rows,O] =
template <typename T>
void grouped_matmul_forward(T* out, const T* in, const T* W, const int32_t* offsets, int rows,
                            int E, int I, int O);
// dIn[r,:] = dOut[r,:] · W_e                                     dIn [rows,I] =
template <typename T>
void grouped_matmul_backward_input(T* dIn, const T* dOut, const T* W, const int32_t* offsets,
                                   int rows, int E, int I, int O);
// dW_e += Σ_{r of e} dOut[r,:]ᵀ in[r,:]  (rows in order)         dW [E,O,I] +=
template <typename T>
void grouped_matmul_backward_weight(T* dW, const T* dOut, const T* in, const int32_t* offsets,
                                    int rows, int E, int I, int O);

// ---- routers, top-k, balancing terms (kernels/cpu/router.h)
// ------------------------------------------
template <typename T>
void softmax_forward(T* s, const T* z, int N, int E);  // s =
template <typename T>
void softmax_backward(T* dz, const T* ds, const T* s, int N, int E);  // dz =
// s = relu(u)·σ·c, u = z/(||z|| + 1e-8); norm[t] = ||z[t,:]||; sigma: one value
template <typename T>
void norm_router_forward(T* s, T* norm, const T* z, const T* sigma, double c, int N, int E);
// dz =, dsigma [1] +=
template <typename T>
void norm_router_backward(T* dz, T* dsigma, const T* ds, const T* z, const T* norm, const T* sigma,
                          double c, int N, int E);
// s = sigmoid(z); dz = ds · s · (1 − s)
template <typename T>
void sigmoid_forward(T* s, const T* z, int N, int E);
template <typename T>
void sigmoid_backward(T* dz, const T* ds, const T* s, int N, int E);
// ids [N,k] =, gates [N,k] = (chosen on s + bias, bias [E] or null; ties → lowest index; gates are
// the chosen s; renorm divides by their sum)
template <typename T>
void topk_forward(int32_t* ids, T* gates, const T* s, const NonDeduced<T>* bias, int N, int E,
                  int k, bool renorm);
// ds [N,E] +=
template <typename T>
void topk_backward(T* ds, const T* dgates, const int32_t* ids, const T* gates, const T* s, int N,
                   int E, int k, bool renorm);
// counts [E] = number of slots routed to each expert
inline void expert_counts(int32_t* counts, const int32_t* ids, int N, int k, int E);
// stats [1 + 2E] += (tokens with all k gates 0; slots per expert; slots with a nonzero gate)
template <typename T>
void routing_stats(int32_t* stats, const int32_t* ids, const T* gates, int N, int k, int E);
// loss [1] = coeff · Σ_i weight[i] · Σ_t s[t,i]
template <typename T>
void balance_loss_forward(T* loss, const T* s, const T* weight, double coeff, int N, int E);
// ds[t,i] += coeff · weight[i]
template <typename T>
void balance_loss_backward(T* ds, const T* weight, double coeff, int N, int E);
// loss [1] = coeff · mean_t logsumexp(z[t,:])²
template <typename T>
void z_loss_forward(T* loss, const T* z, double coeff, int N, int E);
// loss [1] = coeff·(H(q) − log_target)², q = the column means of s·support normalised; weight [E] =
// its gradient on every row of s (support [E]: 1 visible, 0 hidden, or null)
template <typename T>
void entropy_loss_forward(T* loss, T* weight, const T* s, const NonDeduced<T>* support,
                          double coeff, double log_target, int N, int E);
// dz +=
template <typename T>
void z_loss_backward(T* dz, const T* z, double coeff, int N, int E);
// out[i] = T(counts[i])
template <typename T>
void counts_to_float(T* out, const int32_t* counts, int E);
// y[i] += a · x[i]
template <typename T>
void axpy(T* y, const T* x, double a, int n);
// running[i] += counts[i]; when finish: ghat[i] = running[i] / layers, running[i] = 0
template <typename T>
void pool_counts_update(T* running, T* ghat, const int32_t* counts, bool finish, int layers, int E);
// UniPool-lock column ops. x [N,E] *= scale [E], column by column (in place)
template <typename T>
void scale_columns(T* x, const T* scale, int N, int E);
// out [N,K] = in[:, cols]: out[t,j] = in[t, cols[j]]   (cols [K] in [0, E), 1 <= K <= E)
template <typename T>
void select_columns_forward(T* out, const T* in, const int32_t* cols, int N, int E, int K);
// din [N,E] = +0 except din[t, cols[j]] = dout[t,j]  (cols distinct; the adjoint of the forward)
template <typename T>
void select_columns_backward(T* din, const T* dout, const int32_t* cols, int N, int E, int K);
// ids [n] = table[ids[n]] (in place; ids must lie in [0, K) for a table [K]: not checked)
inline void map_ids(int32_t* ids, const int32_t* table, int64_t n);

// ---- dispatch (kernels/cpu/dispatch.h)
// ------------------------------------------------------------- Stable counting sort of the N·k
// slots by expert: offsets [E+1] =, row_slot [N·k] =, slot_row [N·k] =.
inline void dispatch_plan(int32_t* offsets, int32_t* row_slot, int32_t* slot_row,
                          const int32_t* ids, int N, int k, int E);
// dst[r,:] = src[row_slot[r]/k,:]                               dst [N·k,d] =
template <typename T>
void gather_rows(T* dst, const T* src, const int32_t* row_slot, int N, int k, int d);
// dst[t,:] (+)= Σ_j src[slot_row[t·k+j],:], in slot order
template <typename T>
void sum_slot_rows(T* dst, const T* src, const int32_t* slot_row, int N, int k, int d,
                   bool accumulate);
template <typename T>
void slot_to_row_values(T* row_vals, const T* slot_vals, const int32_t* row_slot, int n);
template <typename T>
void row_to_slot_values(T* slot_vals, const T* row_vals, const int32_t* row_slot, int n);

// ---- LM head loss (kernels/cpu/crossentropy.h)
// ------------------------------------------------------- losses [rows] = logsumexp(logits[r,:]) −
// logits[r,targets[r]]; when dloss != 0 the logits are overwritten in place by (softmax −
// onehot)·dloss.
template <typename T>
void crossentropy_forward_backward(T* losses, T* logits, const int32_t* targets, int rows, int V,
                                   double dloss);
// greedy [rows] = 1 where targets[r] is the argmax of logits[r, 0:V) (the lowest index among equal
// maxima), else 0                                               logits [rows, ld], ld >= V
template <typename T>
void target_is_argmax(int32_t* greedy, const T* logits, const int32_t* targets, int rows, int V,
                      int ld);

// ---- optimizer (kernels/cpu/optimizer.h) -----------------------------------------------------
// Σ g² over every tensor of the table
template <typename T>
double grad_sum_squares(const TensorTable& tensors, const T* grads);
// AdamW on every tensor of the table; copy: null or an arena receiving the updated weights
template <typename T>
void adamw_step(const TensorTable& tensors, T* params, const T* grads, T* m, T* v, T* copy,
                const AdamWParams& optim);

// ---- host helpers of the CPU backend (not ops of the list)
// ------------------------------------------- RoPE tables [T, hd/2] (kernels/cpu/attention.h):
// computed on the host for both backends.
template <typename T>
void rope_tables(T* cos_table, T* sin_table, int Tlen, int hd, double base);
// The backend's host buffers: HostArray<U> (sized without zeroing) and zero_fill(p, n), which
// zeroes large buffers on all threads (kernels/cpu/memory.h).

}  // namespace unipool::cpu

#include "kernels/cpu/attention.h"
#include "kernels/cpu/crossentropy.h"
#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/layers.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/memory.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cpu/router.h"
