#!/usr/bin/env bash
# The UniPool paper's routing findings at small scale (docs/findings.md): trains three MoE models of
# the same shape and active compute on the bundled corpus, probes them and draws them.
#
#   unipool    one pool of M = 8L experts shared by every layer, NormRouter, the pool loss (1e-2)
#   collapse   the same shared pool with a softmax router and the per-layer Switch loss (1e-2):
#              the paper's Table 5 row "shared + layer aux + softmax" and its Figure 3
#   vanilla    8 private experts per layer, softmax, Switch loss (1e-2): the baseline
#
# All top-1, so the active parameters are the same (one expert of F per token and layer); the pool
# holds as many experts as vanilla's layers together (M = 8L).
#
# Usage: experiments/routing_findings.sh [--gpu] [--steps N] [--out DIR]
#   (default)  CPU: L 8, d 128, F 512, T 256, 8 sequences a step, 800 steps (about 15 minutes a run
#              on the project's 2-core machine: 1.9K tokens/s, most of it the 50K-word LM head),
#              into runs/findings/
#   --gpu      one GPU for about an hour: L 12, d 512, F 2048, T 512, 32 sequences a step, 6000 steps
#              (backend cuda), into runs/findings-gpu/
#   --steps N  another number of steps; --out DIR another directory
# Then: each run's probe.json (`unipool probe`, 8 validation micro-batches) and the pictures of the
# three (`unipool plot`) in DIR/plots, and a summary table (DIR/summary.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

gpu=0
steps=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) gpu=1 ;;
    --steps) steps="$2"; shift ;;
    --out) out="$2"; shift ;;
    *) echo "routing_findings: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$gpu" = 1 ]; then
  L=12 d=512 heads=8 kv=4 F=2048 T=512 batch=32 backend=cuda
  steps="${steps:-6000}" out="${out:-runs/findings-gpu}" eval_every=500
else
  L=8 d=128 heads=4 kv=2 F=512 T=256 batch=8 backend=cpu
  steps="${steps:-800}" out="${out:-runs/findings}" eval_every=200
fi
M=$((8 * L))

[ -x build/unipool ] || scripts/setup.sh build unipool
[ -f data_cache/corpus/debian_text_document.bin ] || {
  scripts/fetch_tokenizer.sh
  scripts/prepare_corpus.sh --build-dir build
}

common=(--set model.n_layer=$L --set model.d_model=$d --set model.n_head=$heads
  --set model.n_kv_head=$kv --set model.ffn_hidden=$F --set model.seq_len=$T
  --set model.top_k=1 --set train.micro_batch=$batch --set train.steps=$steps
  --set train.eval_every=$eval_every --set train.eval_batches=8 --set train.ckpt_every=$steps
  --set train.ckpt_keep=1 --set train.backend=$backend --set train.log_every=100
  --set optim.warmup_steps=$((steps / 50)) --set optim.lr=0.002 --set optim.min_lr=0.0002
  --set model.init_std=0.01)

train() {  # NAME, then the variant's keys
  local name="$1"
  shift
  if [ -f "$out/$name/ckpt-$steps/state.json" ]; then
    echo "== $name: already trained ($out/$name)"
  else
    echo "== $name"
    build/unipool train --config tiny-gpt2 --overwrite "${common[@]}" --set train.out_dir="$out/$name" "$@"
  fi
  build/unipool probe --checkpoint "$out/$name" --batches 8 --seed 1234
}

train unipool --set model.ffn=unipool --set model.pool_size=$M --set model.router=norm \
  --set loss.pool_aux_coeff=0.01 --set loss.aux_coeff=0
train collapse --set model.ffn=unipool --set model.pool_size=$M --set model.router=softmax \
  --set loss.pool_aux_coeff=0 --set loss.aux_coeff=0.01
train vanilla --set model.ffn=moe --set model.experts_per_layer=8 --set model.router=softmax \
  --set loss.pool_aux_coeff=0 --set loss.aux_coeff=0.01

build/unipool plot "$out/unipool" "$out/collapse" "$out/vanilla" --out "$out/plots"

# The numbers next to each other (read from the probes).
/usr/bin/python3 - "$out" <<'EOF' | tee "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
print("%-9s %9s %9s %8s %11s %10s %9s %9s" % ("run", "val loss", "dead", "U/L", "entropy", "eff. exp.",
                                             "rand. Δ", "shuffle"))
for name in ("unipool", "collapse", "vanilla"):
    run = os.path.join(out, name)
    p = json.load(open(os.path.join(run, "probe.json")))
    layers = p["layers"]
    entropy = sum(l["entropy_bits"] for l in layers) / len(layers)
    effective = sum(l["effective_experts"] for l in layers) / len(layers)
    rand = p["random_probe_mean_delta"]
    delta = rand.get("matched", rand.get("layer"))
    print("%-9s %9.4f %9d %8.3f %11.2f %10.1f %+9.4f %+8.1f%%" % (
        name, p["val_loss"], p["dead_experts"], p["reuse"], entropy, effective, delta,
        100 * p["shuffle"]["ppl_change"]))
EOF
echo "routing_findings: done; pictures in $out/plots, numbers in $out/*/probe.json"
