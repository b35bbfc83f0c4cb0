"""Speed and memory of pix2pixHD's hot paths, on the current device (not collected by pytest).

    python tests/benchmark.py                  # every case, prints a markdown table
    python tests/benchmark.py --cases infer    # only the cases whose name contains 'infer'

Cases (issue 6), batch 1, 35 Cityscapes labels + the instance boundary channel:

* ``train_512p_*``: one full training iteration (G step with GAN + feature matching + VGG, then D
  step, Adam) of the official label2city_512p configuration: global generator, ngf 64, 4
  downsamplings, 9 residual blocks, 2 discriminators with ndf 64; at 256x128 and 512x256.
* ``train_1024p_*``: the same for label2city_1024p (local enhancer, ngf 32) at 512x256.
* ``infer_1024p_*``: the 1024p generator alone, under ``torch.inference_mode``.
* ``encode_pool`` / ``pool_loop``: the encoder E and its instance-wise average pooling on a real
  Cityscapes instance map at 1024x512, against the per-instance loop of the official code;
  ``draw_clusters``: filling every instance with a cluster centre of its class.

Each case runs in its own process, so that its peak memory is its own: resident set size on CPU,
``torch.cuda.max_memory_allocated`` on CUDA. Every case with ``amp`` in its name runs under
autocast (bf16 on CPU and on GPUs that support it, else fp16). VGG19 is randomly initialised, as
the ImageNet weights change nothing about the cost. Times are the median and minimum of
``--repeats`` timed runs after ``--warmup`` untimed ones. Results also go to ``benchmark.json``.
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import data  # noqa: E402  (after the path insert)
import infer  # noqa: E402
import losses  # noqa: E402
import networks  # noqa: E402
import runs  # noqa: E402
import train  # noqa: E402
import train_machinery  # noqa: E402

CITYSCAPES_SAMPLE = ROOT.parent / "shared" / "data" / "cityscapes_sample"
LABEL_NC = 35


# ---------------------------------------------------------------------------------------------
# Cases: each returns a function running one timed unit of work
# ---------------------------------------------------------------------------------------------

def case_train(device, amp, size, netG, official_order=False):
    """One iteration of train.py (``train.compute_losses`` then ``train.update``, which includes
    the check of the gradients before the step) at the official configuration of ``netG``; with
    ``official_order``, the official code's iteration instead: three D forwards (the detached
    synthesized pair, the real pair, the synthesized pair) and a plain backward per loss
    (loss_G's also fills D's gradients, which are then zeroed) and an unfused Adam, for
    comparison on the same machine."""
    w, h = size
    ngf = ["--ngf", "32"] if netG == "local" else []
    opt = train.build_parser().parse_args(["--netG", netG, *ngf, "--num_D", "2"])
    G, D, _ = runs.build_networks(opt)
    G, D = G.to(device), D.to(device)
    vgg_loss = losses.VGGLoss(torchvision.models.vgg19()).to(device)
    procs = train_machinery.Processes(0, 1, device, amp, runs.autocast_dtype(device.type))
    state = train.TrainingState(G, D, None, opt, procs)
    train.set_learning_networks(state, opt, procs, fix_global=False)
    # the official code's Adam: a Python loop over the weight tensors
    optimizer_G, optimizer_D = (torch.optim.Adam(net.parameters(), lr=opt.lr,
                                                 betas=(opt.beta1, 0.999)) for net in (G, D))
    scaler = state.scaler
    s_in = random_generator_input(device, h, w)
    s = s_in[:, :LABEL_NC].argmax(1, keepdim=True)
    inst = s.clone()
    x = torch.rand(1, 3, h, w, device=device) * 2 - 1

    def run():
        _, terms = train.compute_losses(G, D, None, s, inst, x, opt, vgg_loss, state.pool,
                                        procs.autocast())
        train.update(terms, state, procs)

    def run_official_order():
        with runs.autocast(device, amp):
            s_in = data.generator_input(s, inst, LABEL_NC, False)
            fake = G(s_in)
            loss_D_fake = losses.gan_loss(D(torch.cat([s_in, fake.detach()], 1)), False)
            pred_real = D(torch.cat([s_in, x], 1))
            loss_D_real = losses.gan_loss(pred_real, True)
            pred_fake = D(torch.cat([s_in, fake], 1))
            loss_G = (losses.gan_loss(pred_fake, True, for_discriminator=False)
                      + losses.feature_matching_loss(pred_fake, pred_real) + vgg_loss(fake, x))
        optimizer_G.zero_grad()
        scaler.scale(loss_G).backward()
        scaler.step(optimizer_G)
        optimizer_D.zero_grad()
        scaler.scale(0.5 * (loss_D_fake + loss_D_real)).backward()
        scaler.step(optimizer_D)
        scaler.update()

    return run_official_order if official_order else run


def case_draw_clusters(device):
    """Every instance of the real map filled with a random cluster centre of its class (10
    centres of 3 features for each class present), as ``infer.py --feature_source clusters``."""
    inst = cityscapes_instance_map(device)
    classes = {data.instance_class(int(i)) for i in torch.unique(inst)}
    clusters = {c: torch.randn(10, 3) for c in classes}
    generator = torch.Generator().manual_seed(0)
    return lambda: infer.sample_cluster_features(inst, clusters, 3, generator)


def case_infer(device, amp, size, netG="local"):
    w, h = size
    G = networks.define_G(netG, LABEL_NC + 1, ngf=32 if netG == "local" else 64).to(device).eval()
    x = random_generator_input(device, h, w)

    def run():
        with torch.inference_mode(), runs.autocast(device, amp):
            return G(x)
    return run


def case_encode_pool(device, amp):
    inst = cityscapes_instance_map(device)
    E = networks.define_E().to(device)
    photo = torch.rand(1, 3, *inst.shape[-2:], device=device) * 2 - 1

    def run():
        with torch.no_grad(), runs.autocast(device, amp):
            return E(photo, inst)
    return run


def case_pool(device, amp, loop):
    inst = cityscapes_instance_map(device)
    features = torch.randn(1, 3, *inst.shape[-2:], device=device)
    pool = per_instance_loop if loop else networks.instance_average_pool
    return lambda: pool(features, inst)


def per_instance_loop(features, inst):
    """The official code's pooling: a Python loop over instances (and channels), for comparison."""
    out = features.clone()
    for i in torch.unique(inst):
        where = (inst == i).nonzero()  # (n, 4): b, c, y, x; one host sync per instance
        for c in range(features.shape[1]):
            values = features[where[:, 0], where[:, 1] + c, where[:, 2], where[:, 3]]
            out[where[:, 0], where[:, 1] + c, where[:, 2], where[:, 3]] = values.mean()
    return out


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def random_generator_input(device, h, w, seed=0):
    """A one-hot label map of blobs + a boundary channel, (1, 36, h, w): real-looking sparsity."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, LABEL_NC, (1, 1, max(h // 32, 1), max(w // 32, 1)), generator=g)
    label = torch.nn.functional.interpolate(coarse.float(), size=(h, w), mode="nearest").long()
    x = torch.zeros(1, LABEL_NC + 1, h, w)
    x.scatter_(1, label, 1.0)
    return x.to(device)


def cityscapes_instance_map(device, size=(1024, 512)):
    """The first real Cityscapes instance map at 1024x512 when the sample is present, else a
    synthetic map with the same number of instances (25) in blocks."""
    files = sorted((CITYSCAPES_SAMPLE / "train_inst").glob("*.png"))
    if files:
        from PIL import Image
        img = Image.open(files[0]).resize(size, Image.NEAREST)
        inst = torch.from_numpy(np.array(img, dtype=np.int64))
    else:
        w, h = size
        blocks = torch.arange(25).view(5, 5) + 26000
        inst = blocks.repeat_interleave(h // 5 + 1, 0)[:h].repeat_interleave(w // 5 + 1, 1)[:, :w]
    return inst.view(1, 1, *inst.shape).to(device)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(run, device, warmup, repeats):
    for _ in range(warmup):
        run()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_mb": peak_mb}


CASES = {
    "train_512p_256x128_fp32": lambda d: case_train(d, False, (256, 128), "global"),
    "train_512p_256x128_fp32_official_order": lambda d: case_train(d, False, (256, 128), "global",
                                                                   official_order=True),
    "train_512p_256x128_amp": lambda d: case_train(d, True, (256, 128), "global"),
    "train_512p_512x256_fp32": lambda d: case_train(d, False, (512, 256), "global"),
    "train_512p_512x256_fp32_official_order": lambda d: case_train(d, False, (512, 256), "global",
                                                                   official_order=True),
    "train_512p_512x256_amp": lambda d: case_train(d, True, (512, 256), "global"),
    "train_1024p_512x256_fp32": lambda d: case_train(d, False, (512, 256), "local"),
    "train_1024p_512x256_fp32_official_order": lambda d: case_train(d, False, (512, 256), "local",
                                                                    official_order=True),
    "train_1024p_512x256_amp": lambda d: case_train(d, True, (512, 256), "local"),
    "infer_1024p_1024x512_fp32": lambda d: case_infer(d, False, (1024, 512)),
    "infer_1024p_1024x512_amp": lambda d: case_infer(d, True, (1024, 512)),
    "infer_1024p_2048x1024_fp32": lambda d: case_infer(d, False, (2048, 1024)),
    "infer_1024p_2048x1024_amp": lambda d: case_infer(d, True, (2048, 1024)),
    "encode_pool_1024x512": lambda d: case_encode_pool(d, False),
    "pool_1024x512": lambda d: case_pool(d, False, loop=False),
    "pool_loop_1024x512": lambda d: case_pool(d, False, loop=True),
    "draw_clusters_1024x512": lambda d: case_draw_clusters(d),
}


def run_case(name, device, warmup, repeats):
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train.py: fixed sizes, autotuned kernels
    result = measure(CASES[name](device), device, warmup, repeats)
    print(json.dumps({"case": name, **result}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="", help="run only cases whose name contains this")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmark.json"))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if args.case:
        return run_case(args.case, device, args.warmup, args.repeats)

    env = {"torch": torch.__version__, "device": device_name(device),
           "threads": torch.get_num_threads(), "python": platform.python_version()}
    print(f"torch {env['torch']}, {env['device']}, {env['threads']} threads, "
          f"{args.repeats} timed runs after {args.warmup} warm-up")
    rows = []
    for name in (n for n in CASES if args.cases in n):
        out = subprocess.run(
            [sys.executable, __file__, "--case", name, "--device", device.type,
             "--warmup", str(args.warmup), "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(row_text(rows[-1]), flush=True)
    print()
    print(markdown_table(rows))
    Path(args.out).write_text(json.dumps({"env": env, "results": rows}, indent=1))


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


def row_text(r):
    return (f"{r['case']}: median {r['median_s']:.3f} s, min {r['min_s']:.3f} s, "
            f"peak {r['peak_mb']:.0f} MB")


def markdown_table(rows):
    lines = ["| case | median (s) | min (s) | peak memory (MB) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['median_s']:.4f} | {r['min_s']:.4f} | {r['peak_mb']:.0f} |"
              for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
