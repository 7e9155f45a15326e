#!/usr/bin/env python3
"""Pictures of unipool runs (`unipool plot RUN_DIR... [--out DIR] [--format png|svg]`).

Reads each run directory's metrics.jsonl and, when there is one, the probe.json of its newest
checkpoint (`unipool probe` writes it), and writes into --out (default: the first run directory's
plots/):

  loss.<fmt>         training loss (thin) and validation loss (dots) of every run, overlaid
  utilisation.<fmt>  per probed run: the layer x expert share of each layer's tokens (heatmap), and
                     below it every expert's share of all tokens against the uniform line
                     (the UniPool paper's Figure 3)
  entropy.<fmt>      routing entropy per layer (bits) of every probed run, with each run's maximum
  paths.<fmt>        path coverage: the share of tokens on the K most frequent paths, against K

Debian's python3-matplotlib (scripts/setup.sh installs it); nothing else. docs/analysis.md says what
each measure is.
"""
import argparse
import json
import math
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
except ImportError:
    sys.exit("unipool plot: needs matplotlib for " + sys.executable +
             " (Debian: apt-get install python3-matplotlib)")


def read_metrics(run):
    path = os.path.join(run, "metrics.jsonl")
    train, val = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                j = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if "loss" in j:
                train.append((j["step"], j["loss"]))
            if "val_loss" in j:
                val.append((j["step"], j["val_loss"]))
    return train, val


def newest_probe(run):
    """The newest probe.json of the run (written last: the run's own, `unipool probe --checkpoint
    RUN`, or a checkpoint's), else None."""
    candidates = [os.path.join(run, "probe.json")]
    for name in os.listdir(run):
        if name.startswith("ckpt-") and name[5:].isdigit():
            candidates.append(os.path.join(run, name, "probe.json"))
    found = [(os.path.getmtime(p), p) for p in candidates if os.path.exists(p)]
    return max(found)[1] if found else None


def label_of(run):
    return os.path.basename(os.path.normpath(run))


def finish(fig, ax, out, xlabel, ylabel, title):
    """Labels, grid and legend of a one-panel figure, then the file."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_loss(runs, out):
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, run in enumerate(runs):
        train, val = read_metrics(run)
        color = "C%d" % (i % 10)
        if train:
            ax.plot([s for s, _ in train], [x for _, x in train], color=color, alpha=0.5,
                    linewidth=1, label=label_of(run) + " train")
        if val:
            ax.plot([s for s, _ in val], [x for _, x in val], "o-", color=color, markersize=4,
                    linewidth=1.5, label=label_of(run) + " validation")
    finish(fig, ax, out, "step", "loss (nats per token)", "training and validation loss")


def plot_utilisation(probes, out):
    fig, axes = plt.subplots(2, len(probes), figsize=(6 * len(probes), 7), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]})
    for col, (name, p) in enumerate(probes):
        counts = [layer["counts"] for layer in p["layers"]]
        shares = []
        for row in counts:
            total = float(sum(row)) or 1.0
            shares.append([c / total for c in row])
        width = len(counts[0])
        top = axes[0][col]
        image = top.imshow(shares, aspect="auto", cmap="viridis", interpolation="nearest")
        top.set_title("%s: share of each layer's tokens" % name)
        top.set_ylabel("layer")
        top.set_xlabel("expert")
        top.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=top, fraction=0.046, pad=0.02)
        aggregate = [sum(row[e] for row in counts) for e in range(width)]
        total = float(sum(aggregate)) or 1.0
        bottom = axes[1][col]
        bottom.bar(range(width), [a / total for a in aggregate], width=1.0, color="C0")
        bottom.axhline(1.0 / width, color="C3", linestyle="--", label="uniform 1/%d" % width)
        bottom.set_xlim(-0.5, width - 0.5)
        bottom.set_xlabel("expert")
        bottom.set_ylabel("share of all tokens")
        bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_entropy(probes, out):
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, p) in enumerate(probes):
        entropy = [layer["entropy_bits"] for layer in p["layers"]]
        width = len(p["layers"][0]["counts"])
        color = "C%d" % (i % 10)
        ax.plot(range(len(entropy)), entropy, "o-", color=color, label=name)
        ax.axhline(math.log2(width), color=color, linestyle=":", linewidth=1,
                   label="%s: log2(%d), uniform" % (name, width))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finish(fig, ax, out, "layer", "routing entropy (bits)", "routing entropy per layer")


def plot_paths(probes, out):
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, p) in enumerate(probes):
        curve = p["paths"]["top_share"]
        ax.plot([c["k"] for c in curve], [c["share"] for c in curve], "o-", color="C%d" % (i % 10),
                label="%s (%d distinct paths, %d tokens)" % (name, p["paths"]["distinct"],
                                                            p["paths"]["tokens"]))
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    finish(fig, ax, out, "K most frequent paths", "share of tokens",
           "path coverage (a path: a token's top-1 expert per layer)")


def main(argv):
    parser = argparse.ArgumentParser(prog="unipool plot", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories (train.out_dir)")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/plots of the first run)")
    parser.add_argument("--format", default="png", choices=["png", "svg"])
    args = parser.parse_args(argv)
    for run in args.runs:
        if not os.path.exists(os.path.join(run, "metrics.jsonl")):
            sys.exit("unipool plot: %s has no metrics.jsonl (not a run directory)" % run)
    out = args.out or os.path.join(args.runs[0], "plots")
    os.makedirs(out, exist_ok=True)
    written = []
    path = os.path.join(out, "loss." + args.format)
    plot_loss(args.runs, path)
    written.append(path)
    probes = []
    for run in args.runs:
        p = newest_probe(run)
        if p:
            with open(p) as f:
                probes.append((label_of(run), json.load(f)))
        else:
            print("unipool plot: %s has no probe.json (run `unipool probe --checkpoint %s`): "
                  "loss only" % (run, run))
    if probes:
        for name, fn in (("utilisation", plot_utilisation), ("entropy", plot_entropy),
                         ("paths", plot_paths)):
            path = os.path.join(out, name + "." + args.format)
            fn(probes, path)
            written.append(path)
    for path in written:
        print("written: " + path)


if __name__ == "__main__":
    main(sys.argv[1:])
