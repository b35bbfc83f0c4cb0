r"""Training pix2pixHD (Wang et al., CVPR 2018): the objective (eq. 5), the procedure (sec. 3.2).

The full objective (eq. 5), with the perceptual term the paper adds in sec. 3.2:

.. math::
    \min_G \Big( \big( \max_{D_1, D_2, D_3} \sum_{k=1}^{3} \mathcal{L}_{GAN}(G, D_k) \big)
                 + \lambda \sum_{k=1}^{3} \mathcal{L}_{FM}(G, D_k)
                 + \lambda \, \mathcal{L}_{VGG}(G) \Big), \qquad \lambda = 10

where each D_k sees the pair (label map s, image) at its own scale, the real pair (s, x) and the
synthesized pair (s, G(s)). As in the official code, each iteration computes every term first, then
takes one Adam step for G (with E when instance features are on) and one for the D_k:

    loss_G = L_GAN(D(s, G(s)) -> real) + L_FM + L_VGG
    loss_D = 0.5 * ( L_GAN(D(s, G(s) detached) -> fake) + L_GAN(D(s, x) -> real) )

The training procedure of sec. 3.2 is coarse to fine: first train the global generator G1 alone
(``--netG global``, at half resolution), then wrap it in the local enhancer G2
(``--netG local --load_pretrain <the G1 run>``), train G2's own layers for ``--niter_fix_global``
epochs while G1 stays fixed, then fine-tune all of G together. Cityscapes at 2048x1024, as the
official scripts::

    python train.py --dataroot ./cityscapes --name label2city_512p --loadSize 1024
    python train.py --dataroot ./cityscapes --name label2city_1024p --netG local --ngf 32 \
        --loadSize 2048 --niter_fix_global 20 --load_pretrain checkpoints/label2city_512p

Adam (lr 2e-4, beta1 0.5); the learning rate is constant for ``niter`` epochs, then decays linearly
to 0 over ``niter_decay`` epochs. Multi-GPU: ``torchrun --nproc_per_node=N train.py ...``.
Without ``--dataroot`` it trains a CPU-sized model on the synthetic city of ``data.py``.

Contents, in reading order:

* ``train``: setup, then the one training loop, with AMP, gradient scaling, DDP and checkpoints;
* ``compute_losses`` / ``update``: one iteration, every loss term, then the G and D steps;
* ``build_networks``, ``build_optimizer_G``, ``adam``, ``learning_rate``: G, D_k, E, their
  optimizers and schedule; ``pick_device``, ``amp_dtype``: where and in which precision;
* ``save_checkpoint`` / ``load_checkpoint``: one atomic file with everything needed to resume;
* helpers: ``ImagePool`` (history of synthesized pairs for D), ``EpochSeeded`` (data order and
  augmentation drawn from (seed, epoch, index), so a resumed run sees the same batches),
  ``StopRequest`` (Ctrl-C), and the outputs (sample grids, loss log and plot);
* ``main`` / ``build_parser``: the command line (official flag names), the synthetic-city
  defaults, one-line errors.
"""

import argparse
import contextlib
import csv
import json
import math
import os
import pickle
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import data
import losses
import networks

LOSS_NAMES = ["G_GAN", "G_GAN_Feat", "G_VGG", "D_real", "D_fake"]  # the official names

# Options that change the shape of G, D or E: a resumed run must use the checkpoint's values.
ARCHITECTURE_OPTIONS = ["label_nc", "no_instance", "netG", "ngf", "n_downsample_global",
                        "n_blocks_global", "n_local_enhancers", "n_blocks_local", "num_D",
                        "n_layers_D", "ndf", "instance_feat", "feat_num", "nef", "n_downsample_E"]

# With no --dataroot: the synthetic city at 256x128 and a model that learns it on 2 CPU cores in
# minutes. Only the options the user did not set change.
SYNTHETIC_CITY = "./datasets/synthetic_city"
SYNTHETIC_DEFAULTS = dict(name="synthetic_city", loadSize=256, fineSize=256, ngf=32,
                          n_downsample_global=3, n_blocks_global=3, ndf=32, num_D=2,
                          niter=10, niter_decay=10, num_workers=0, display_freq=100,
                          print_freq=50, save_latest_freq=500, save_epoch_freq=5)


class UserError(Exception):
    """A mistake in the command line or the files: reported as one line, exit code 2."""


class TrainingStopped(Exception):
    """The run cannot go on (non-finite loss, checkpoint not written): one line, exit code 1."""


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------

def train(opt, ctrl_c=None):
    """Train as ``opt`` says; ``ctrl_c`` (a ``StopRequest``) asks the loop to save and stop."""
    ctrl_c = ctrl_c if ctrl_c is not None else StopRequest()
    # ---- processes and device: one process per GPU under torchrun, else one process
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world_size > 1
    use_cuda = pick_device(opt.device) == "cuda"
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
        # Training batches share one size (Cityscapes' images do, and so do crops), so cuDNN's
        # search for the fastest convolution algorithms, made once per size, pays for itself.
        torch.backends.cudnn.benchmark = True
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    is_main = rank == 0
    say = print if is_main else (lambda *args, **kwargs: None)

    # ---- mixed precision: bf16 needs no loss scaling; fp16 gets one GradScaler for G and D
    use_amp = opt.amp if opt.amp is not None else use_cuda
    dtype = amp_dtype(device.type)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=use_amp)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and dtype == torch.float16)

    # ---- options and paths that cannot work, reported before anything is written
    synthetic = opt.dataroot is None
    if opt.no_lsgan and opt.gan_mode not in ("lsgan", "vanilla"):
        raise UserError(f"--no_lsgan and --gan_mode {opt.gan_mode} contradict each other; "
                        "pass only one")
    if opt.instance_feat and opt.no_instance:
        raise UserError("--instance_feat needs instance maps: drop --no_instance")
    if opt.netG == "local" and opt.n_local_enhancers < 1:
        raise UserError("--netG local needs --n_local_enhancers >= 1")
    if not synthetic and not Path(opt.dataroot).exists():
        raise UserError(
            f"--dataroot {opt.dataroot} does not exist: get Cityscapes from "
            "https://www.cityscapes-dataset.com (gtFine_trainvaltest.zip and "
            "leftImg8bit_trainvaltest.zip, unzipped into one folder) and pass that folder, or run "
            "without --dataroot to train on the synthetic city")
    run_dir = Path(opt.checkpoints_dir) / opt.name
    check_writable(run_dir)
    resume = None
    if opt.continue_train:
        resume_path = checkpoint_file(run_dir, opt.which_epoch)
        if not resume_path.is_file():
            raise UserError(f"--continue_train: {resume_path} not found; drop --continue_train "
                            "to start a new run, or check --name and --which_epoch")
        resume = load_checkpoint(resume_path)
        check_same_architecture(resume["opt"], opt, resume_path)

    # ---- data: the synthetic city when no --dataroot; validated here, in the main process
    if synthetic:
        opt.dataroot = SYNTHETIC_CITY
        if is_main and not (Path(SYNTHETIC_CITY) / "train_label").is_dir():
            say(f"Writing the synthetic city to {SYNTHETIC_CITY} (once) ...")
            make_synthetic_city(Path(SYNTHETIC_CITY))
        if distributed:
            dist.barrier()
    dataset = EpochSeeded(data.PairedDataset(
        opt.dataroot, "train", opt.label_nc, opt.no_instance, opt.loadSize, opt.fineSize,
        opt.resize_or_crop, opt.no_flip, size_multiple(opt), is_train=True), opt.seed)
    first = dataset[0]  # reads one triplet now, so a bad file is reported before training
    if not first["has_image"]:
        raise UserError(f"--dataroot {opt.dataroot}: the training split has no photos "
                        "(train_img/ or leftImg8bit/); training needs them")
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=opt.seed)
    batches_per_epoch = math.ceil(len(sampler) / opt.batchSize)

    # ---- the VGG loss needs ImageNet weights, which cannot be downloaded here: decide now
    vgg_loss = None
    if not opt.no_vgg_loss:
        try:
            vgg_loss = losses.VGGLoss(lambda_vgg=opt.lambda_feat).to(device)
        except losses.VGGWeightsMissing as err:
            if not synthetic:
                raise
            say(f"VGG loss off for the synthetic city: {one_line(err)}")
            opt.no_vgg_loss = True

    # ---- networks, optimizers, and the state of a resumed run
    torch.manual_seed(opt.seed)
    G, D, E = build_networks(opt)
    if opt.load_pretrain and resume is None:
        whole_D = load_pretrained(G, D, E, opt.load_pretrain)
        say(f"G1 and {'D' if whole_D else 'the D_k of matching shape'} loaded from "
            f"{opt.load_pretrain}")
    elif opt.load_pretrain:
        say(f"--load_pretrain ignored: resuming {resume_path}, which already holds G1")
    G, D = G.to(device), D.to(device)
    E = E.to(device) if E is not None else None
    # Under torchrun each process has its own pool, but only rank 0's is saved: a resumed
    # multi-process run with --pool_size > 0 continues from rank 0's history on every rank.
    pool = ImagePool(opt.pool_size, seed=opt.seed + rank)
    epoch, epoch_iter, iteration = 1, 0, 0
    if resume is not None:
        G.load_state_dict(resume["G"])
        D.load_state_dict(resume["D"])
        if E is not None:
            E.load_state_dict(resume["E"])
        epoch, epoch_iter, iteration = resume["epoch"], resume["epoch_iter"], resume["iteration"]
        if epoch_iter >= batches_per_epoch:  # saved at the end of an epoch
            epoch, epoch_iter = epoch + 1, 0
        elif epoch_iter > 0 and (resume["world_size"], resume["opt"]["batchSize"]) != (
                world_size, opt.batchSize):
            raise UserError(
                f"--continue_train: {resume_path} stopped mid-epoch with {resume['world_size']} "
                f"process(es) x --batchSize {resume['opt']['batchSize']}; resume with the same "
                "to see the same batches, or from an epoch_N.pt (--which_epoch N)")
    optimizer_G = build_optimizer_G(G, E, opt, only_enhancers=epoch <= opt.niter_fix_global)
    optimizer_D = adam(D.parameters(), opt)
    if resume is not None:
        try:
            optimizer_G.load_state_dict(resume["optimizer_G"])
            optimizer_D.load_state_dict(resume["optimizer_D"])
        except ValueError as err:
            raise UserError(f"--continue_train: the optimizer state in {resume_path} does not "
                            f"fit ({err}); resume with its --niter_fix_global") from None
        if resume["scaler"]:
            scaler.load_state_dict(resume["scaler"])
        pool.load_state_dict(resume["image_pool"])
        set_rng_state(resume["rng"])
        say(f"Resumed {resume_path} at epoch {epoch}, iteration {iteration}")
    if opt.netG == "local" and epoch <= opt.niter_fix_global:
        say(f"Only training the local enhancer G2 (G1 fixed) for {opt.niter_fix_global} epochs")

    # ---- DDP: gradients of G (and E) are averaged over processes during backward by
    # DistributedDataParallel, those of D by ``average_gradients`` after loss_D's backward. Every
    # process starts from rank 0's weights.
    G_raw, D_raw, E_raw = G, D, E
    if distributed:
        ddp_devices = [device] if use_cuda else None
        G = DistributedDataParallel(G, device_ids=ddp_devices)
        E = DistributedDataParallel(E, device_ids=ddp_devices) if E is not None else None
        for tensor in D.state_dict().values():
            dist.broadcast(tensor, src=0)
    params_G = list(G_raw.parameters()) + (list(E_raw.parameters()) if E_raw is not None else [])
    params_D = list(D_raw.parameters())

    # ---- outputs (rank 0 only)
    if is_main:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        (run_dir / "opt.json").write_text(json.dumps(vars(opt), indent=2) + "\n")
        start_loss_log(run_dir / "loss_log.csv", keep_until=iteration if resume else None)
        processes = f" in each of {world_size} processes" if distributed else ""
        precision = f", autocast {str(dtype).replace('torch.', '')}" if use_amp else ""
        say(f"Training {opt.netG} G on {opt.dataroot}: {len(dataset)} images, "
            f"{batches_per_epoch} iterations per epoch{processes}, on {device}{precision}; "
            f"samples in {run_dir / 'samples'}, checkpoints in {run_dir}")

    n_epochs = opt.niter + opt.niter_decay
    saved_at = iteration if resume is not None else -1  # iteration of the last save
    last_log, interval = time.time(), []

    def checkpoint():
        return {"G": G_raw.state_dict(), "D": D_raw.state_dict(),
                "E": E_raw.state_dict() if E_raw is not None else None,
                "optimizer_G": optimizer_G.state_dict(), "optimizer_D": optimizer_D.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "iteration": iteration,
                "epoch_iter": epoch_iter, "world_size": world_size,
                "image_pool": pool.state_dict(), "rng": rng_state(), "opt": vars(opt)}

    # why the run ends before its last epoch: "max_iters" or "interrupted"
    stop = "max_iters" if opt.max_iters is not None and iteration >= opt.max_iters else None
    while epoch <= n_epochs and stop is None:
        epoch_start, lr = time.time(), learning_rate(opt, epoch)
        for group in optimizer_G.param_groups + optimizer_D.param_groups:
            group["lr"] = lr
        # This epoch's order and augmentation come from (seed, epoch, index): resuming
        # mid-epoch only skips the batches already consumed.
        sampler.set_epoch(epoch)
        dataset.epoch = epoch
        order = list(sampler)[epoch_iter * opt.batchSize:]
        loader = DataLoader(dataset, batch_size=opt.batchSize, sampler=order,
                            num_workers=opt.num_workers, pin_memory=use_cuda,
                            worker_init_fn=ignore_ctrl_c)
        with tqdm(total=batches_per_epoch, initial=epoch_iter, disable=not is_main,
                  desc=f"epoch {epoch}/{n_epochs}", dynamic_ncols=True, leave=False) as bar:
            for batch in loader:
                s = batch["label"].to(device, non_blocking=True)     # (B, 1, H, W) label ids
                inst = batch["inst"].to(device, non_blocking=True)   # (B, 1, H, W) instance ids
                x = batch["image"].to(device, non_blocking=True)     # (B, 3, H, W) real photo

                # ---- every term of eq. (5) first, then the updates (the official order)
                fake, terms = compute_losses(G, D, E, s, inst, x, opt, vgg_loss, pool, autocast)

                # ---- the one host sync per iteration: losses (averaged over processes) for
                # the log, a non-finite loss stops before it reaches the weights, and every
                # process agrees on a Ctrl-C.
                report = torch.stack([*(terms[k] for k in LOSS_NAMES), torch.tensor(
                    float(ctrl_c.requested), device=device)]).detach().float()
                if distributed:
                    dist.all_reduce(report)
                    report[:-1] /= world_size
                *values, interrupted = report.tolist()
                values = dict(zip(LOSS_NAMES, values))
                if not all(math.isfinite(v) for v in values.values()):
                    raise TrainingStopped(
                        f"non-finite loss at epoch {epoch}, iteration {iteration + 1} "
                        f"({', '.join(f'{k} {v:.4g}' for k, v in values.items())}); stopped "
                        f"without saving, the last good checkpoint in {run_dir} is kept. Try a "
                        "lower --lr" + (" or --no-amp" if use_amp else ""))

                update(terms, optimizer_G, optimizer_D, scaler, params_G, params_D,
                       world_size if distributed else 1)
                del terms  # what is left of D's graph on the real pair, before the next forward
                iteration += 1
                epoch_iter += 1

                # ---- outputs and checkpoints
                interval.append(values)
                bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
                bar.update(1)
                if iteration % opt.print_freq == 0:
                    seconds = (time.time() - last_log) / len(interval)
                    means = {k: sum(v[k] for v in interval) / len(interval) for k in LOSS_NAMES}
                    if is_main:
                        bar.write(f"(epoch {epoch}, iteration {iteration}, {seconds:.3f} s/it, "
                                  f"lr {lr:.2e}) "
                                  + " ".join(f"{k} {v:.3f}" for k, v in means.items()))
                        append_loss_log(run_dir / "loss_log.csv", epoch, iteration, means, lr,
                                        seconds)
                    last_log, interval = time.time(), []
                if is_main and iteration % opt.display_freq == 0:
                    sample = run_dir / "samples" / f"epoch{epoch:03d}_iter{iteration:08d}.png"
                    save_sample_grid(sample, s[0], fake[0], x[0], opt.label_nc)
                if is_main and iteration % opt.save_latest_freq == 0:
                    save_checkpoint(checkpoint(), run_dir / "latest.pt")
                    saved_at = iteration
                if opt.max_iters is not None and iteration >= opt.max_iters:
                    stop = "max_iters"
                if interrupted:
                    stop = "interrupted"
                if stop is not None:
                    break

        if epoch_iter >= batches_per_epoch:  # the epoch is complete
            say(f"End of epoch {epoch}/{n_epochs}, iteration {iteration}, "
                f"{time.time() - epoch_start:.0f} s")
            if opt.netG == "local" and epoch == opt.niter_fix_global:
                # Fresh Adam state over all of G (and E), as the official code does.
                optimizer_G = build_optimizer_G(G_raw, E_raw, opt, only_enhancers=False)
                say("------------ Now also finetuning global generator -----------")
            if is_main:
                save_checkpoint(checkpoint(), run_dir / "latest.pt")
                if epoch % opt.save_epoch_freq == 0:
                    save_checkpoint(checkpoint(), run_dir / f"epoch_{epoch}.pt")
                plot_loss_log(run_dir / "loss_log.csv", run_dir / "loss_plot.png")
            saved_at = iteration
            if stop is None:
                epoch, epoch_iter = epoch + 1, 0

    if is_main:
        if saved_at != iteration:
            save_checkpoint(checkpoint(), run_dir / "latest.pt")
        plot_loss_log(run_dir / "loss_log.csv", run_dir / "loss_plot.png")
        say(f"Stopped at iteration {iteration} ({stop}); " if stop else "Done; ", end="")
        say(f"checkpoint {run_dir / 'latest.pt'}, samples in {run_dir / 'samples'}")
        if stop == "interrupted":
            say("Resume with the same command and --continue_train")
    if distributed:  # no process exits (which makes torchrun stop the others) before the save
        dist.barrier()
    if stop == "interrupted":
        sys.exit(130)
    return {"G": G_raw, "D": D_raw, "E": E_raw, "epoch": epoch, "iteration": iteration}


def compute_losses(G, D, E, s, inst, x, opt, vgg_loss, pool, autocast):
    """Every term of eq. (5) for one batch: label ids ``s`` and instance ids ``inst`` (B, 1, H, W),
    real photos ``x`` (B, 3, H, W). Returns the synthesized images and a dict of the official
    loss terms (``LOSS_NAMES``) plus their sums ``G`` (minimised by G and E) and ``D`` (by the
    D_k), each a scalar tensor still attached to its graph."""
    gan_mode = "vanilla" if opt.no_lsgan else opt.gan_mode
    zero = torch.zeros((), device=x.device)
    with autocast:
        # one-hot label map + instance boundary map: (B, label_nc + 1, H, W)
        s_in = data.generator_input(s, inst, opt.label_nc, opt.no_instance)
        G_in = torch.cat([s_in, E(x, inst)], dim=1) if E is not None else s_in
        fake = G(G_in)                                                 # (B, 3, H, W)
        fake_pair, real_pair = torch.cat([s_in, fake], dim=1), torch.cat([s_in, x], dim=1)

        # Each D_k sees the synthesized pair and the real pair. Without an image pool, one
        # forward of the synthesized pair serves both losses: D(s, G(s)) has the same values,
        # and the same gradient for the D_k's weights, as D(s, G(s) detached), so the official
        # code's third forward (of the detached pair) is redundant. With a pool, D's
        # synthesized pair comes from the history and needs its own forward. (Two forwards,
        # not one of the pair stacked as a batch: loss_G's backward then only runs through
        # the synthesized half.)
        pred_fake, pred_real = D(fake_pair), D(real_pair)
        pred_fake_D = pred_fake if pool.size == 0 else D(pool.query(fake_pair.detach()))
        terms = {
            "G_GAN": losses.gan_loss(pred_fake, True, gan_mode, for_discriminator=False),
            "G_GAN_Feat": (zero if opt.no_ganFeat_loss else
                           losses.feature_matching_loss(pred_fake, pred_real, opt.lambda_feat)),
            "G_VGG": vgg_loss(fake, x) if vgg_loss is not None else zero,
            "D_real": losses.gan_loss(pred_real, True, gan_mode),
            "D_fake": losses.gan_loss(pred_fake_D, False, gan_mode),
        }
    terms["G"] = terms["G_GAN"] + terms["G_GAN_Feat"] + terms["G_VGG"]
    terms["D"] = 0.5 * (terms["D_fake"] + terms["D_real"])
    return fake, terms


def update(terms, optimizer_G, optimizer_D, scaler, params_G, params_D, world_size=1):
    """The generator step and the discriminator step of one iteration; one gradient scaler for
    both (it only scales with fp16). Each backward fills only its own networks' gradients
    (``inputs``): loss_D does not reach G through the synthesized pair, and loss_G does not fill
    the D_k's gradients, exactly as with the official code's detached pair and frozen D.

    Both gradients are taken before either step, from the same forward, so the order of the steps
    does not matter; loss_D goes first because its backward only runs through D: what it must
    keep of the graph for loss_G (D on the synthesized pair) is small, while loss_G's backward
    runs through G as well and frees it all. ``params_G`` are all of G's (and E's) weights, also
    while only the local enhancer is optimised, as DDP needs."""
    for p in params_G + params_D:  # G1's too, while only the enhancers are optimised
        p.grad = None
    scaler.scale(terms["D"]).backward(inputs=params_D, retain_graph=True)
    scaler.scale(terms["G"]).backward(inputs=params_G)
    if world_size > 1:
        average_gradients(params_D, world_size)
    scaler.step(optimizer_G)
    scaler.step(optimizer_D)
    scaler.update()


def average_gradients(params, world_size):
    """Under torchrun: every process's gradients of ``params`` summed in one all-reduce and
    divided by the number of processes, what DistributedDataParallel does for G. D is not
    wrapped in DDP because one forward feeds two backward passes (loss_D, then loss_G)."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    for g, averaged in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(averaged.view_as(g))


# ---------------------------------------------------------------------------------------------
# Networks, optimizers, schedule
# ---------------------------------------------------------------------------------------------

def build_networks(opt):
    """(G, D, E or None) for the options ``opt`` (a namespace or the ``opt`` dict of a checkpoint),
    initialised N(0, 0.02). G's input: the label map (one-hot, or RGB when label_nc is 0), the
    instance boundary map unless --no_instance, and E's features with --instance_feat. D sees the
    label map, the boundary map and an image, not the features (as the official code)."""
    if isinstance(opt, dict):
        opt = argparse.Namespace(**opt)
    label_channels = (opt.label_nc if opt.label_nc > 0 else 3) + (0 if opt.no_instance else 1)
    G = networks.define_G(opt.netG, label_channels + (opt.feat_num if opt.instance_feat else 0),
                          3, opt.ngf, opt.n_downsample_global, opt.n_blocks_global,
                          opt.n_local_enhancers, opt.n_blocks_local)
    D = networks.define_D(label_channels + 3, opt.ndf, opt.n_layers_D, opt.num_D)
    E = (networks.define_E(3, opt.feat_num, opt.nef, opt.n_downsample_E)
         if opt.instance_feat else None)
    return G, D, E


def pick_device(choice):
    """--device auto|cpu|cuda -> "cuda" or "cpu"; cuda asked for but absent is a UserError."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def amp_dtype(device_type):
    """The autocast dtype: bf16 (no loss scaling needed) on the CPU and on GPUs that compute it
    natively (Ampere and later); fp16, with a gradient scaler, on older GPUs, which would only
    emulate bf16, slowly."""
    if device_type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.float16
    return torch.bfloat16


def size_multiple(opt):
    """G's total downsampling (and E's, with instance features): every side of an input must be
    a multiple of it, so that the upsampling path gives back the input's size."""
    n = opt.n_downsample_global + (opt.n_local_enhancers if opt.netG == "local" else 0)
    return 2 ** (max(n, opt.n_downsample_E) if opt.instance_feat else n)


def build_optimizer_G(G, E, opt, only_enhancers):
    """Adam over G and E. With ``only_enhancers`` (the first --niter_fix_global epochs of a local
    run) only the outermost (finest) enhancer is optimised, as the official code: G1, and the
    coarser enhancers when there are several, still get gradients but are not updated."""
    if only_enhancers and isinstance(G, networks.LocalEnhancer):
        params = list(G.enhancers[-1].parameters())
    else:
        params = list(G.parameters())
    if E is not None:
        params += list(E.parameters())
    return adam(params, opt)


def adam(params, opt):
    """Adam with the paper's lr and beta1 (beta2 0.999). ``fused``: one kernel updates every
    tensor, instead of a Python loop of per-tensor operations; the same update up to rounding,
    and 5x faster on a CPU for the 183M weights of the 512p G (0.12 s instead of 0.67 s)."""
    return torch.optim.Adam(params, lr=opt.lr, betas=(opt.beta1, 0.999), fused=True)


def learning_rate(opt, epoch):
    """lr for ``epoch`` (1-based): constant for ``niter`` epochs, then linear decay. The official
    code subtracts lr / niter_decay after each epoch past niter, so the last epoch runs at
    lr / niter_decay and the next would run at 0."""
    if opt.niter_decay <= 0:
        return opt.lr
    return opt.lr * (1.0 - max(0, epoch - 1 - opt.niter) / opt.niter_decay)


def load_pretrained(G, D, E, path):
    """--load_pretrain: G1 (and E, when both runs have one) from a --netG global run, and its
    D_k, as the official code; a D_k whose shape differs (another --num_D, --ndf or label set)
    keeps its fresh weights. Returns whether all of D was loaded."""
    path = Path(path)
    file = checkpoint_file(path) if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"--load_pretrain {path}: no checkpoint at {file}; pass the folder of "
                        "a --netG global run (checkpoints/NAME) or its .pt file")
    pretrained = load_checkpoint(file)
    try:
        if isinstance(G, networks.LocalEnhancer):
            G.load_global_generator(pretrained["G"])
        else:
            G.load_state_dict(pretrained["G"])
        if E is not None and pretrained.get("E") is not None:
            E.load_state_dict(pretrained["E"])
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise UserError(
            f"--load_pretrain {file}: its G does not fit this G1 ({first}); the global run must "
            "have the same --label_nc, --no_instance, --instance_feat, --n_downsample_global, "
            "--n_blocks_global, and --ngf equal to this run's --ngf * 2^n_local_enhancers"
        ) from None
    ours = D.state_dict()
    fitting = {k: v for k, v in pretrained["D"].items()
               if k in ours and ours[k].shape == v.shape}
    D.load_state_dict(fitting, strict=False)
    return len(fitting) == len(ours)


def check_same_architecture(saved, opt, path):
    differ = [k for k in ARCHITECTURE_OPTIONS if saved.get(k) != getattr(opt, k)]
    if differ:
        raise UserError(
            f"--continue_train: {path} was trained with different architecture options: "
            + ", ".join(f"{k} (checkpoint {saved.get(k)}, now {getattr(opt, k)})" for k in differ)
            + "; pass the checkpoint's values, or start a new run with another --name")


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def save_checkpoint(state, path):
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, flushed to
    disk, then renamed over ``path``. A crash or a failed write leaves the previous file intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, Exception):
            raise TrainingStopped(f"could not write {path} ({one_line(err)}); the previous "
                                  f"{path.name}, if any, is intact") from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def checkpoint_file(run_dir, which_epoch="latest"):
    """``run_dir/latest.pt``, or ``run_dir/epoch_N.pt`` for ``which_epoch`` N."""
    return Path(run_dir) / ("latest.pt" if which_epoch == "latest" else f"epoch_{which_epoch}.pt")


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict saved by train.py: G, D, E (None without --instance_feat),
    optimizer_G, optimizer_D, scaler, epoch, iteration, epoch_iter, world_size, image_pool, rng,
    opt. Holds only tensors and plain values, so it loads with ``weights_only=True``. A file that
    is not one (truncated, or something else) is a one-line UserError."""
    checkpoint = read_weights(path, map_location)
    if not isinstance(checkpoint, dict) or not {"G", "D", "opt"} <= checkpoint.keys():
        raise UserError(f"{path} is not a checkpoint written by train.py; for NVIDIA's "
                        "latest_net_G.pth use infer.py --official_checkpoint")
    return checkpoint


def read_weights(path, map_location="cpu"):
    """``torch.load`` of a file of tensors (``weights_only``), or a UserError naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable checkpoint ({reason}); it may be truncated or "
                        "another kind of file: download or train it again") from None


def rng_state():
    """Every random number generator's state, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate()}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def check_writable(run_dir):
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise UserError(f"--checkpoints_dir: cannot write to {run_dir} ({err.strerror or err}); "
                        "choose a writable folder with --checkpoints_dir") from None


# ---------------------------------------------------------------------------------------------
# Helpers of the loop
# ---------------------------------------------------------------------------------------------

class ImagePool:
    """History of synthesized (label, image) pairs shown to D (Shrivastava et al. 2017), as the
    official ImagePool: until ``size`` pairs are stored, each new pair is stored and used; then,
    with probability 1/2 a random stored pair is used and the new one takes its place. ``size``
    0 passes pairs through. Its random numbers and contents are part of the checkpoint."""

    def __init__(self, size, seed):
        self.size, self.pairs, self.random = size, [], random.Random(seed)

    def query(self, pairs):
        if self.size == 0:
            return pairs
        out = []
        for pair in pairs.detach().split(1):  # (1, C, H, W) each
            if len(self.pairs) < self.size:
                self.pairs.append(pair)
                out.append(pair)
            elif self.random.random() > 0.5:
                i = self.random.randrange(self.size)
                out.append(self.pairs[i].to(pair.device))  # stored on CPU after a resume
                self.pairs[i] = pair
            else:
                out.append(pair)
        return torch.cat(out)

    def state_dict(self):
        return {"pairs": [p.cpu() for p in self.pairs], "random": self.random.getstate()}

    def load_state_dict(self, state):
        self.pairs = list(state["pairs"])
        version, internal, gauss = state["random"]
        self.random.setstate((version, tuple(internal), gauss))


class EpochSeeded(Dataset):
    """A dataset whose sample ``index`` in epoch ``epoch`` is drawn with every random number
    generator seeded from (seed, epoch, index), whatever process loads it and whatever came
    before: the random crop and flip of a resumed run are those of an uninterrupted one. The
    global generators are restored afterwards."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed)
            torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's untouched
            try:
                return self.dataset[index]
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)


class StopRequest:
    """Ctrl-C asks the loop to stop after the current iteration, save and exit; a second Ctrl-C
    raises KeyboardInterrupt at once (nothing saved)."""

    def __init__(self):
        self.requested, self._previous = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this iteration, then saving (Ctrl-C again: quit without "
              "saving)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def ignore_ctrl_c(worker_id):
    """Data workers ignore Ctrl-C, so the main process can finish its iteration and save."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_synthetic_city(root):
    """Write the synthetic city next to ``root`` and rename it into place, so that an
    interrupted first run never leaves half a dataset behind."""
    partial = root.with_name(root.name + ".partial")
    data.make_synthetic_city(str(partial))
    os.replace(partial, root)


# ---------------------------------------------------------------------------------------------
# Outputs: sample grids, loss log, loss plot
# ---------------------------------------------------------------------------------------------

def save_sample_grid(path, s, fake, x, label_nc):
    """colourised label map | synthesized image | real photo, side by side, as a PNG."""
    panels = [data.label_to_image(s, label_nc), data.tensor_to_image(fake),
              data.tensor_to_image(x)]
    W, H = panels[0].size
    grid = Image.new("RGB", (3 * W, H))
    for i, panel in enumerate(panels):
        grid.paste(panel, (i * W, 0))
    grid.save(path)


def start_loss_log(path, keep_until=None):
    """A new loss_log.csv, or, when resuming, the old one without rows after the checkpoint."""
    rows = []
    if keep_until is not None and path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= keep_until]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "iteration", *LOSS_NAMES, "lr", "sec_per_iter"])
        writer.writeheader()
        writer.writerows(rows)


def append_loss_log(path, epoch, iteration, means, lr, seconds):
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow([epoch, iteration, *(f"{means[k]:.6g}" for k in LOSS_NAMES),
                                f"{lr:.6g}", f"{seconds:.4f}"])


def plot_loss_log(csv_path, png_path):
    """Generator and discriminator losses against iterations (matplotlib, no display needed)."""
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend state

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    iterations = [int(r["iteration"]) for r in rows]
    fig = Figure(figsize=(10, 4), tight_layout=True)
    for ax, names, title in zip(fig.subplots(1, 2), (LOSS_NAMES[:3], LOSS_NAMES[3:]),
                                ("generator", "discriminators")):
        for name in names:
            ax.plot(iterations, [float(r[name]) for r in rows], label=name)
        ax.set(title=title, xlabel="iteration")
        ax.legend()
    fig.savefig(png_path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    """Parse ``argv``, train, and return the trained (unwrapped) networks and counters as a dict
    ``{G, D, E, epoch, iteration}``. Errors end the process with one line on stderr: exit code 2
    for a user error, 1 for a run that had to stop, 130 after Ctrl-C (a checkpoint is saved)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    opt = build_parser().parse_args(argv)
    if opt.dataroot is None:
        given = explicit_options(argv)
        for name, value in SYNTHETIC_DEFAULTS.items():
            if name not in given:
                setattr(opt, name, value)
    try:
        with StopRequest() as ctrl_c:
            return train(opt, ctrl_c)
    except (UserError, data.DataError, losses.VGGWeightsMissing) as err:
        fail(err, 2)
    except TrainingStopped as err:
        fail(err, 1)
    except OSError as err:  # writing a sample, the loss log, the plot or opt.json
        fail(f"{err.filename or 'a file'}: {err.strerror or err}; free disk space or choose "
             "another --checkpoints_dir, then resume with --continue_train", 1)
    except KeyboardInterrupt:
        fail("interrupted twice: stopped without saving; the last checkpoint is kept", 130)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def build_parser():
    p = argparse.ArgumentParser(
        description="Train pix2pixHD (Wang et al., CVPR 2018). Flags are the official ones, and "
                    "so are the defaults shown, which are also the paper's unless a help line "
                    "says otherwise.",
        epilog="Without --dataroot: writes the synthetic city to %s (once) and trains a CPU-sized "
               "model on it with these defaults, unless set on the command line: %s. Its VGG loss is "
               "on when the VGG19 ImageNet weights are in the torch hub cache, else off (with a "
               "real --dataroot, missing weights stop the run). Multi-GPU: "
               "torchrun --nproc_per_node=N train.py ..." % (SYNTHETIC_CITY, ", ".join(
                   f"--{k} {v}" for k, v in SYNTHETIC_DEFAULTS.items())),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    g = p.add_argument_group("data")
    g.add_argument("--dataroot", default=None,
                   help="dataset root: pix2pixHD layout (train_label/, train_inst/, train_img/) or "
                        "the Cityscapes download (gtFine/, leftImg8bit/); none: the synthetic city")
    g.add_argument("--label_nc", type=int, default=35,
                   help="number of label ids (Cityscapes: 35); 0 reads RGB inputs from train_A/")
    g.add_argument("--no_instance", action="store_true",
                   help="no instance maps: drop the boundary channel (paper uses instance maps)")
    g.add_argument("--loadSize", type=int, default=1024,
                   help="scale images to this width (paper: 1024 for G1, 2048 for G1+G2)")
    g.add_argument("--fineSize", type=int, default=512, help="crop size for the *_crop modes")
    g.add_argument("--resize_or_crop", default="scale_width",
                   choices=data.RESIZE_OR_CROP, help="preprocessing (official names)")
    g.add_argument("--no_flip", action="store_true", help="no random horizontal flip")
    g.add_argument("--batchSize", type=int, default=1,
                   help="batch size PER PROCESS (with torchrun: per GPU); paper: 1")
    g.add_argument("--num_workers", type=int, default=2,
                   help="data loading processes per training process (official nThreads 2)")

    g = p.add_argument_group("model")
    g.add_argument("--netG", default="global", choices=["global", "local"],
                   help="global: G1 alone; local: G1 inside the local enhancer G2 (sec. 3.2)")
    g.add_argument("--ngf", type=int, default=64,
                   help="width of G's first layer (paper: 64 for G1; 32 for G2, whose G1 is 2x)")
    g.add_argument("--n_downsample_global", type=int, default=4, help="downsamplings in G1")
    g.add_argument("--n_blocks_global", type=int, default=9, help="residual blocks in G1")
    g.add_argument("--n_local_enhancers", type=int, default=1, help="number of G2 stages")
    g.add_argument("--n_blocks_local", type=int, default=3, help="residual blocks per G2")
    g.add_argument("--num_D", type=int, default=3,
                   help="discriminators D_k at different scales (paper: 3; official script: 2)")
    g.add_argument("--n_layers_D", type=int, default=3,
                   help="layers of each PatchGAN D_k (3 gives the 70x70 receptive field)")
    g.add_argument("--ndf", type=int, default=64, help="width of D_k's first layer")
    g.add_argument("--instance_feat", action="store_true",
                   help="train the instance feature encoder E and feed its features to G "
                        "(sec. 3.4)")
    g.add_argument("--feat_num", type=int, default=3, help="features per instance from E")
    g.add_argument("--nef", type=int, default=16, help="width of E's first layer")
    g.add_argument("--n_downsample_E", type=int, default=4, help="downsamplings in E")

    g = p.add_argument_group("training")
    g.add_argument("--niter", type=int, default=100, help="epochs at the initial lr")
    g.add_argument("--niter_decay", type=int, default=100,
                   help="epochs of linear lr decay to 0 after niter")
    g.add_argument("--lr", type=float, default=0.0002, help="Adam learning rate")
    g.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (beta2 is 0.999)")
    g.add_argument("--lambda_feat", type=float, default=10.0,
                   help="lambda, the weight of feature matching and VGG losses (paper: 10)")
    g.add_argument("--no_ganFeat_loss", action="store_true",
                   help="drop the feature matching loss L_FM (eq. 4)")
    g.add_argument("--no_vgg_loss", action="store_true", help="drop the VGG perceptual loss")
    g.add_argument("--no_lsgan", action="store_true",
                   help="the original GAN loss (BCE) instead of LSGAN (paper: LSGAN)")
    g.add_argument("--gan_mode", default="lsgan", choices=losses.GAN_MODES,
                   help="the adversarial loss: lsgan (paper), vanilla (BCE, as --no_lsgan), or "
                        "hinge (ours; not in the paper)")
    g.add_argument("--pool_size", type=int, default=0,
                   help="history of synthesized pairs shown to D; 0 = none (official: 0)")
    g.add_argument("--niter_fix_global", type=int, default=0,
                   help="with --netG local: epochs that train only G2's layers, G1 fixed")
    g.add_argument("--load_pretrain", default="",
                   help="a --netG global run (folder or .pt file) whose G1 starts --netG local")
    g.add_argument("--continue_train", action="store_true",
                   help="resume exactly where checkpoints_dir/name/latest.pt (or epoch_N.pt with "
                        "--which_epoch N) stopped")
    g.add_argument("--which_epoch", default="latest",
                   help="checkpoint to resume: 'latest' or an epoch number N (epoch_N.pt)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when available")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision; default on CUDA (bf16, or fp16 with a gradient scaler "
                        "where bf16 is unsupported), off on CPU (--amp: bf16)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, the data order and the augmentation")
    g.add_argument("--max_iters", type=int, default=None,
                   help="stop (and save) when the iteration count reaches N, counting the "
                        "iterations before a --continue_train")

    g = p.add_argument_group("output")
    g.add_argument("--name", default="label2city", help="run name: checkpoints_dir/name/")
    g.add_argument("--checkpoints_dir", default="./checkpoints", help="where runs are saved")
    g.add_argument("--display_freq", type=int, default=100,
                   help="iterations between sample grids (label | synthesized | real)")
    g.add_argument("--print_freq", type=int, default=100,
                   help="iterations between log lines and rows of loss_log.csv")
    g.add_argument("--save_latest_freq", type=int, default=1000,
                   help="iterations between saves of latest.pt")
    g.add_argument("--save_epoch_freq", type=int, default=10,
                   help="epochs between saves of epoch_N.pt")
    return p


def explicit_options(argv):
    """Names of the options given on the command line: parsed again into a namespace that
    already holds a marker for every option, which argparse then only replaces for the options
    it reads (so an option set to its default value still counts as set)."""
    parser, unset = build_parser(), object()
    marked = argparse.Namespace(**{name: unset for name in vars(parser.parse_args([]))})
    return {k for k, v in vars(parser.parse_args(argv, marked)).items() if v is not unset}


def fail(message, code):
    """One line on stderr and exit. Under torchrun every process says it, with its rank: an
    error may come from one process's share of the data only."""
    rank = f"rank {os.environ['RANK']}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    print(f"train.py: {rank}{one_line(message)}", file=sys.stderr)
    sys.exit(code)


def one_line(err):
    """The user's message of an error, also when a DataLoader worker re-raised it with its whole
    traceback (then the message is the last line, after the exception's class name)."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    if len(lines) > 1 and "Traceback" in str(err):
        return lines[-1].split(f"{type(err).__name__}: ", 1)[-1]
    return " ".join(line.strip() for line in lines)


if __name__ == "__main__":
    main()
