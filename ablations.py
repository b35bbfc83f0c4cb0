"""The paper's ablations, measured on the synthetic city with the Table 1 protocol of evaluate.py.

The paper claims what each piece of pix2pixHD does: the feature-matching loss (eq. 4) stabilises
training and improves the results, the multi-scale discriminators (sec. 3.2) give both global
consistency and fine detail, and the instance boundary map (sec. 3.3, fig. 4) separates adjacent
objects of one class. Here each piece is taken out in turn, at the same training budget, and the
synthesized test images are scored by the synthetic city's segmenter (mean IoU, pixel accuracy).
Every variant is trained from each of the same seeds, and the table gives the mean and the range
over the seeds: a GAN trained from another seed lands elsewhere, and a difference smaller than
that range says nothing. At this small scale a claim may not reproduce; the README says which do::

    python evaluate.py segmenter --dataroot datasets/synthetic_city --out checkpoints/segmenter.pt2
    python ablations.py --dataroot datasets/synthetic_city --segmenter checkpoints/segmenter.pt2

A run that already exists is resumed (and, done, only scored), so the script can be stopped and
run again.
"""

import argparse
import json
import time
from pathlib import Path

import data
import evaluate
import infer
import runs
import train
from runs import UserError

# (what, the run's name after the prefix, what is taken out as train.py flags); the first row
# is the paper's model.
VARIANTS = [
    ("all pieces (the paper)", "all", []),
    ("without feature matching (eq. 4)", "no_feature_matching", ["--no_ganFeat_loss"]),
    ("one discriminator scale instead of 3", "one_scale", ["--num_D", "1"]),
    ("without the instance boundary map (sec. 3.3)", "no_boundaries", ["--no_instance"]),
]

# A 128x64 model of the synthetic city: G1 with ngf 16, 3 downsamplings and 2 residual blocks.
MODEL = ["--loadSize", "128", "--fineSize", "128", "--ngf", "16", "--n_downsample_global", "3",
         "--n_blocks_global", "2", "--ndf", "16", "--num_D", "3", "--no_vgg_loss"]


def run_variant(suffix, extra, seed, opt):
    """Train one variant from ``seed`` (or resume it) to the budget; returns its run name and the
    seconds it took here (None for a run that was already done)."""
    run = f"{opt.prefix}_s{seed}_{suffix}"
    argv = ["--dataroot", opt.dataroot, "--checkpoints_dir", opt.checkpoints_dir, "--name", run,
            *MODEL, *extra, "--max_iters", str(opt.max_iters), "--seed", str(seed),
            "--num_workers", str(opt.num_workers), "--device", opt.device,
            "--print_freq", "500", "--display_freq", "1000"]
    latest = runs.checkpoint_file(Path(opt.checkpoints_dir) / run)
    if latest.is_file():
        if runs.load_checkpoint(latest)["iteration"] >= opt.max_iters:
            return run, None
        argv.append("--continue_train")
    start = time.perf_counter()
    train.main(argv)
    return run, time.perf_counter() - start


def score_variant(run, opt, segmenter):
    model = infer.load_model(runs.checkpoint_file(Path(opt.checkpoints_dir) / run),
                             runs.pick_device(opt.device))
    dataset = infer.inference_dataset(model.opt, opt.dataroot, "test")
    return evaluate.score_split(evaluate.model_synthesizer(model), dataset, segmenter)


def main(argv=None):
    opt = build_parser().parse_args(argv)
    try:
        segmenter = evaluate.load_segmenter(opt.segmenter, device=runs.pick_device(opt.device))
        rows = []
        for seed in opt.seeds:
            for name, suffix, extra in VARIANTS:
                run, seconds = run_variant(suffix, extra, seed, opt)
                report = score_variant(run, opt, segmenter)
                rows.append({"variant": name, "flags": " ".join(extra), "seed": seed,
                             "run": run, "seconds": seconds, **report})
                print(f"{name}, seed {seed}: mean IoU {report['mIoU']:.4f}, accuracy "
                      f"{report['accuracy']:.4f}")
    except (UserError, data.DataError) as err:
        runs.fail("ablations.py", err, 2, {"root": "--dataroot"})
    print_table(rows, opt.max_iters)
    if opt.json:
        Path(opt.json).write_text(json.dumps(rows, indent=2) + "\n")


def print_table(rows, max_iters):
    """One row per variant: mean and range over the seeds, and the training time of one run."""
    seeds = sorted({r["seed"] for r in rows})
    print(f"\n| variant ({max_iters} iterations, seeds {', '.join(map(str, seeds))}) | flags | "
          "mean IoU | accuracy | time per run (s) |")
    print("|---|---|---:|---:|---:|")
    for name, _, extra in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]
        cells = []
        for key in ("mIoU", "accuracy"):
            values = [r[key] for r in mine]
            cells.append(f"{sum(values) / len(values):.3f} ({min(values):.3f} to "
                         f"{max(values):.3f})" if len(values) > 1 else f"{values[0]:.3f}")
        timed = [r["seconds"] for r in mine if r["seconds"] is not None]
        seconds = f"{sum(timed) / len(timed):.0f}" if timed else "(trained before)"
        print(f"| {name} | {' '.join(extra) or '-'} | {cells[0]} | {cells[1]} | {seconds} |")


def seed_list(text):
    """An argparse type: comma-separated seeds, such as 0,1,2."""
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects seeds such as 0,1,2, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expects seeds of 0 or more, got {text!r}")
    return seeds


def build_parser():
    p = runs.CommandLine(prog="ablations.py", description=__doc__.split("\n")[0],
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataroot", required=True, help="the synthetic city")
    p.add_argument("--segmenter", required=True, help="its segmenter (evaluate.py segmenter)")
    p.add_argument("--checkpoints_dir", default="./checkpoints", help="where the runs go")
    p.add_argument("--prefix", default="ablation", help="the runs' names begin with it")
    p.add_argument("--max_iters", type=runs.whole(1), default=2000, help="the budget of each run")
    p.add_argument("--seeds", type=seed_list, default=[0, 1, 2],
                   help="every variant is trained from each of these seeds, comma-separated")
    p.add_argument("--num_workers", type=runs.whole(0), default=1, help="data loading processes")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when available")
    p.add_argument("--json", default=None, help="also write the table to this JSON file")
    return p


if __name__ == "__main__":
    main()
