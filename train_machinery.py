"""The machinery behind train.py: processes and devices, the data order, stopping on a signal,
a resumed run's random states, and what a run writes as it goes.

None of it is in the paper. It is what lets a run of days on one or many GPUs be stopped at any
moment and resumed where it stopped, with the same batches and the same random numbers, and what
shows its progress: a log of the losses, a plot, sample grids and checkpoints.
"""

import atexit
import contextlib
import csv
import functools
import html
import multiprocessing
import json
import math
import os
import pickle
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import data
import evaluate
import infer
import official_folder
import runs
import synthetic_city
from runs import RunStopped, UserError


# ---------------------------------------------------------------------------------------------
# Processes (one per GPU under torchrun, or one), and what they agree on every iteration
# ---------------------------------------------------------------------------------------------

@dataclass
class Processes:
    """Where this process trains: its rank among ``world_size`` processes (torchrun), its device,
    and the autocast it trains under, the same on every process; ``exiting`` tells its data
    workers when it exits (``ignore_stop_signals``)."""
    rank: int
    world_size: int
    device: torch.device
    use_amp: bool
    dtype: torch.dtype
    exiting: object = None  # a multiprocessing.Event, set as this process exits

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.use_amp)

    def say(self, *args, **kwargs):
        if self.is_main:
            print(*args, **kwargs)


def start_processes(opt):
    """One process per GPU under torchrun (RANK, WORLD_SIZE, LOCAL_RANK), else one process: its
    device, the process group, and the autocast dtype they agree on."""
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device("cpu")
    if opt.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
        torch.use_deterministic_algorithms(True, warn_only=True)
    if runs.pick_device(opt.device) == "cuda":
        # one process: the current device, which --gpu_ids N sets
        device = torch.device("cuda", local_rank(world_size) if world_size > 1
                              else torch.cuda.current_device())
        torch.cuda.set_device(device)
        # cuDNN times its convolution algorithms once per input shape and keeps the fastest: it
        # pays when shapes repeat (one aspect ratio, or crops); with scale_width over images of
        # mixed aspect ratios each new height costs one search.
        torch.backends.cudnn.benchmark = not opt.deterministic
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    use_amp = opt.amp if opt.amp is not None else device.type == "cuda"
    dtype = runs.autocast_dtype(device.type)
    if world_size > 1 and use_amp:
        dtype = agree_on_autocast_dtype(dtype, device)
    exiting = multiprocessing.Event()
    atexit.register(exiting.set)
    return Processes(rank, world_size, device, use_amp, dtype, exiting)


def local_rank(world_size):
    """This process's GPU index on its machine; torchrun sets LOCAL_RANK."""
    if world_size > 1 and "LOCAL_RANK" not in os.environ:
        raise UserError(f"WORLD_SIZE is {world_size} but LOCAL_RANK is not set, so every process "
                        "would take cuda:0: start several GPUs with torchrun --nproc_per_node=N, "
                        "which sets both")
    return int(os.environ.get("LOCAL_RANK", "0"))


def agree_on_autocast_dtype(dtype, device):
    """Every process must compute in one dtype: fp16 gradients come scaled, bf16 ones do not, and
    averaging the two would be wrong. bf16 when every process's GPU has it natively, else fp16
    (with its gradient scaler) everywhere."""
    has_bf16 = torch.tensor(float(dtype == torch.bfloat16), device=device)
    dist.all_reduce(has_bf16, op=dist.ReduceOp.MIN)
    return torch.bfloat16 if has_bf16.item() == 1.0 else torch.float16


def check_iteration(terms, loss_names, state, procs, stop_requested):
    """The host synchronisation the loop itself asks for, once per iteration, between the
    gradients and the Adam steps (``data.one_hot`` and the instance pooling add small ones of
    their own): the losses named ``loss_names`` for the log, the size of the gradients and the
    stop request, in one tensor summed over processes. A non-finite loss or
    gradient stops the run here, before the Adam steps, so it never reaches the weights or a
    checkpoint. With fp16 the gradient scaler skips steps whose gradients overflow: those are
    expected, so the gradients are left to it."""
    device = procs.device
    grads = [p.grad for p in state.params_G + state.params_D if p.grad is not None]
    grad_norm = (torch.zeros((), device=device) if state.scaler.is_enabled()
                 else torch.nn.utils.get_total_norm(grads))
    report = torch.stack([*(terms[k].detach().float() for k in loss_names),
                          grad_norm.float(), torch.tensor(float(stop_requested), device=device)])
    if procs.distributed:
        dist.all_reduce(report)
        report[:len(loss_names)] /= procs.world_size
    *values, grad_norm, stop = report.tolist()
    values = dict(zip(loss_names, values))
    if not all(math.isfinite(v) for v in [*values.values(), grad_norm]):
        what = "loss" if not all(math.isfinite(v) for v in values.values()) else "gradient"
        raise RunStopped(
            f"non-finite {what} at epoch {state.epoch}, iteration {state.iteration + 1} "
            f"({', '.join(f'{k} {v:.4g}' for k, v in values.items())}, gradient norm "
            f"{grad_norm:.4g}); stopped before the update, the last good checkpoint is kept. "
            "Try a lower --lr" + (" or --no-amp" if procs.use_amp else ""))
    return values, stop > 0


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
# Options, a resumed run, and the data in the order it will see it
# ---------------------------------------------------------------------------------------------

def check_options(opt, synthetic):
    """Options that contradict each other, or a dataset root that does not exist: reported
    before anything is read or written. (Each option's own range is checked as it is parsed.)"""
    if opt.no_lsgan and opt.gan_mode not in ("lsgan", "vanilla"):
        raise UserError(f"--no_lsgan and --gan_mode {opt.gan_mode} contradict each other; "
                        "pass only one")
    if opt.instance_feat and opt.no_instance:
        raise UserError("--instance_feat needs instance maps: drop --no_instance")
    if opt.niter_fix_global and opt.netG != "local":
        raise UserError("--niter_fix_global keeps G1 fixed around a local enhancer: it needs "
                        "--netG local")
    if opt.val_freq and opt.load_features:
        raise UserError("--val_freq synthesizes the validation split with E's features, and a "
                        "--load_features run has no E to give them: drop --val_freq")
    if opt.val_freq and not opt.val_segmenter:
        raise UserError("--val_freq needs --val_segmenter, the segmenter that scores the split "
                        "(python evaluate.py segmenter writes one for the synthetic city)")
    if opt.start_over and opt.continue_train:
        raise UserError("--start_over and --continue_train contradict each other; pass only one")
    if opt.niter + opt.niter_decay < 1:
        raise UserError("--niter 0 --niter_decay 0 trains no epoch: give at least one")
    if opt.tf_log:
        check_tensorboard()
    check_feature_options(opt)
    check_image_size(opt)
    if not synthetic and Path(opt.dataroot).exists() and not Path(opt.dataroot).is_dir():
        raise UserError(f"--dataroot {opt.dataroot} is a file, not a dataset folder: pass the "
                        "folder that holds the dataset")
    if not synthetic and not Path(opt.dataroot).exists():
        raise UserError(
            f"--dataroot {opt.dataroot} does not exist: get Cityscapes from "
            "https://www.cityscapes-dataset.com (gtFine_trainvaltest.zip and "
            "leftImg8bit_trainvaltest.zip, unzipped into one folder) and pass that folder, or run "
            "without --dataroot to train on the synthetic city")


def check_feature_options(opt):
    """The official feature and channel options, in the combinations where they mean something."""
    if opt.label_feat and opt.label_nc == 0:
        raise UserError("--label_feat averages E's features over each class of a label map of "
                        "ids: it needs --label_nc > 0")
    if opt.load_features and not runs.uses_features(opt):
        raise UserError("--load_features feeds precomputed features to G: add --instance_feat "
                        "(or --label_feat), as the official 1024p feature recipe")
    if opt.load_features and opt.feat_num != 3:
        raise UserError(f"--load_features reads feature maps saved as RGB pictures (3 channels), "
                        f"but --feat_num is {opt.feat_num}: use --feat_num 3")
    if opt.input_nc != 3 and opt.label_nc != 0:
        raise UserError(f"--input_nc {opt.input_nc} counts the channels of an input picture, "
                        "which only --label_nc 0 reads; label maps of ids have one")
    if opt.output_nc not in data.MODE_CHANNELS.values() or (
            opt.label_nc == 0 and opt.input_nc not in data.MODE_CHANNELS.values()):
        raise UserError("--input_nc and --output_nc: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 "
                        "(RGBA), the pictures an image file holds")
    if opt.output_nc not in (1, 3) and not opt.no_vgg_loss:
        raise UserError(f"--output_nc {opt.output_nc}: the VGG loss reads RGB (or grey) "
                        "photos; add --no_vgg_loss")


def check_image_size(opt):
    """The image G trains on must hold G's (and E's) total downsampling, and a crop must fit in
    the resized image."""
    multiple = runs.size_multiple(opt)
    crop = opt.resize_or_crop.endswith("crop")
    if crop and opt.resize_or_crop != "crop" and opt.fineSize > opt.loadSize:
        raise UserError(f"--fineSize {opt.fineSize} is larger than --loadSize {opt.loadSize}: "
                        f"the {opt.resize_or_crop} crop would not fit; lower --fineSize")
    side, flag = (opt.fineSize, "--fineSize") if crop else (opt.loadSize, "--loadSize")
    if opt.resize_or_crop != "none" and side < multiple:
        raise UserError(f"{flag} {side} is smaller than {multiple}, the total downsampling of G "
                        f"(and E) with these options: raise {flag} or use fewer downsamplings")


def checkpoint_to_resume(opt):
    """With --continue_train, the checkpoint to go on from, checked against the options; None for
    a new run, which never replaces a run already in its folder unless --start_over (which keeps
    the old files aside). Either way the run folder must be writable."""
    run_dir = Path(opt.checkpoints_dir) / opt.name
    runs.check_output_folder(run_dir, "--checkpoints_dir")
    if not opt.continue_train:
        existing = existing_run(run_dir)
        if existing and not opt.start_over:
            raise UserError(f"{run_dir} already holds a run ({existing}): resume it with "
                            "--continue_train, start another with a new --name, or pass "
                            "--start_over to move its files aside and start again")
        return None
    path = runs.checkpoint_file(run_dir, opt.which_epoch)
    if official_folder.is_official_run(run_dir, opt.which_epoch):
        return official_folder.resume_state(opt, run_dir)
    if not path.is_file():
        raise UserError(f"--continue_train: {path} not found; drop --continue_train to start a "
                        "new run, or check --name and --which_epoch")
    resume = runs.load_checkpoint(path)
    saved = vars(runs.architecture(resume["opt"]))
    differ = [k for k in runs.ARCHITECTURE_OPTIONS if saved.get(k) != getattr(opt, k)]
    if differ:
        raise UserError(
            f"--continue_train: {path} was trained with different architecture options: "
            + ", ".join(f"{k} (checkpoint {saved.get(k)}, now {getattr(opt, k)})"
                        for k in differ)
            + "; pass the checkpoint's values, or start a new run with another --name")
    resume["path"] = path
    return resume


def existing_run(run_dir):
    """What the checkpoints in ``run_dir`` hold, in words ('latest.pt at iteration 1200, epoch
    3'); None when it holds none."""
    checkpoints = sorted(p.name for p in Path(run_dir).glob("*.pt"))
    if not checkpoints:
        official = sorted(p.name for p in Path(run_dir).glob("*_net_G.pth"))
        return f"NVIDIA's {', '.join(official)}" if official else None
    if "latest.pt" not in checkpoints:
        return ", ".join(checkpoints)
    try:  # mmap: only the counters are read, not gigabytes of weights
        latest = torch.load(Path(run_dir) / "latest.pt", map_location="cpu", weights_only=True,
                            mmap=True)
        return f"latest.pt at iteration {latest['iteration']}, epoch {latest['epoch']}"
    except (RuntimeError, OSError, ValueError, EOFError, KeyError, TypeError,
            pickle.UnpicklingError):
        return "latest.pt, unreadable"


def restore(state, resume, opt, procs, n_images):
    """Everything of ``resume`` into ``state``: weights, the optimizers (which ``state`` holds
    built for the stage the checkpoint was saved in), the scaler, the pool, the class counts, the
    counters and every random generator. Whether its epoch was complete is decided by its own
    batches: ``n_images`` over the processes and batch size it was saved with."""
    if resume.get("official"):
        return restore_official(state, resume, opt, procs, n_images)
    path = resume["path"]
    epoch, epoch_iter = resume["epoch"], resume["epoch_iter"]
    saved_layout = resume["world_size"], resume["opt"]["batchSize"]
    saved_batches = math.ceil(math.ceil(n_images / saved_layout[0]) / saved_layout[1])
    if 0 < epoch_iter < saved_batches and saved_layout != (procs.world_size, opt.batchSize):
        raise UserError(
            f"--continue_train: {path} stopped mid-epoch with {resume['world_size']} "
            f"process(es) x --batchSize {resume['opt']['batchSize']}; resume with the same "
            "to see the same batches, or from an epoch_N.pt (--which_epoch N)")
    state.G.load_state_dict(resume["G"])
    state.D.load_state_dict(resume["D"])
    if state.E is not None:
        state.E.load_state_dict(resume["E"])
    try:
        state.optimizer_G.load_state_dict(resume["optimizer_G"])
        state.optimizer_D.load_state_dict(resume["optimizer_D"])
    except ValueError as err:
        raise UserError(f"--continue_train: the optimizer state in {path} does not fit ({err}); "
                        "resume with its --niter_fix_global") from None
    if resume["scaler"]:
        state.scaler.load_state_dict(resume["scaler"])
    state.pool.load_state_dict(resume["image_pool"])
    if procs.is_main and resume.get("class_pixels") is not None:  # others count from 0: a sum
        state.class_pixels = resume["class_pixels"].clone()
    set_rng_state(resume["rng"])
    state.epoch, state.epoch_iter, state.iteration = epoch, epoch_iter, resume["iteration"]
    if epoch_iter >= saved_batches:  # saved at the end of an epoch
        state.epoch, state.epoch_iter = epoch + 1, 0
    procs.say(f"Resumed {path} at epoch {state.epoch}, iteration {state.iteration}")


def restore_official(state, resume, opt, procs, n_images):
    """An official run's weights and where it stopped into ``state``. Its iter.txt counts the
    images done in the epoch; the epoch goes on for the batches it had left (in this run's order,
    as the official code draws a new one). Its folder holds no optimizer state, image pool or
    random states (the official code saves none): Adam starts afresh, as the official
    --continue_train does, and the learning rate is the schedule's for the epoch."""
    state.G.load_state_dict(resume["G"])
    state.D.load_state_dict(resume["D"])
    if state.E is not None:
        state.E.load_state_dict(resume["E"])
    n_batches = math.ceil(math.ceil(n_images / procs.world_size) / opt.batchSize)
    done = math.ceil(resume["images_done"] / (procs.world_size * opt.batchSize))
    state.epoch, state.epoch_iter = resume["epoch"], done
    if done >= n_batches:  # the official code saved at the end of an epoch
        state.epoch, state.epoch_iter = state.epoch + 1, 0
    state.iteration = (state.epoch - 1) * n_batches + state.epoch_iter
    procs.say(f"Resumed NVIDIA's {resume['path']} at epoch {state.epoch}, iteration "
              f"{state.iteration} ({resume['images_done']} images into epoch {resume['epoch']}); "
              "its folder holds no optimizer state, so Adam starts afresh, as the official "
              "--continue_train does")


def training_data(opt, procs):
    """The training split of --dataroot, checked now by reading its first triplet, and the
    sampler that gives each process its share of each epoch."""
    dataset = EpochSeeded(runs.CommandLineErrors(data.PairedDataset(
        opt.dataroot, opt.phase, opt.label_nc, opt.no_instance, opt.loadSize, opt.fineSize,
        opt.resize_or_crop, opt.no_flip, runs.size_multiple(opt), is_train=True,
        input_nc=opt.input_nc, output_nc=opt.output_nc, load_features=opt.load_features,
        max_dataset_size=opt.max_dataset_size)), opt.seed)
    if not dataset[0]["has_image"]:
        raise UserError(f"--dataroot {opt.dataroot}: the training split has no photos "
                        f"({opt.phase}_img/ or leftImg8bit/); training needs them")
    # --serial_batches: the files in their sorted order every epoch, as the official flag
    sampler = DistributedSampler(dataset, num_replicas=procs.world_size, rank=procs.rank,
                                 shuffle=not opt.serial_batches, seed=opt.seed)
    return dataset, sampler


def synthetic_city_once(root, procs):
    """The synthetic city at ``root``, written by rank 0 the first time; returns ``root``."""
    root = Path(root)
    if procs.is_main and not (root / "train_label").is_dir():
        if root.exists() and any(root.iterdir()):
            raise UserError(f"{root} exists but holds no synthetic city (no train_label/): "
                            "remove it, or pass --dataroot")
        procs.say(f"Writing the synthetic city to {root} (once) ...")
        synthetic_city.make_synthetic_city(root)
    if procs.distributed:
        dist.barrier()
    return str(root)


def epoch_batches(dataset, sampler, state, opt, procs):
    """This epoch's batches for this process, on its device: label ids (B, 1, H, W), instance ids
    (B, 1, H, W), photos (B, output_nc, H, W), and the precomputed feature maps (B, 3, H, W)
    with --load_features, else None. Order and augmentation come from (seed, epoch, index), so
    a resumed epoch only skips the batches already consumed. The pixels of each class are counted
    on the way (``state.class_pixels``), so that inference can name the classes G never saw."""
    sampler.set_epoch(state.epoch)
    dataset.epoch = state.epoch
    order = list(sampler)[state.epoch_iter * opt.batchSize:]
    loader = DataLoader(dataset, batch_size=opt.batchSize, sampler=order,
                        num_workers=opt.num_workers, pin_memory=procs.device.type == "cuda",
                        worker_init_fn=functools.partial(ignore_stop_signals, procs.exiting))
    for batch in loader:
        if state.class_pixels is not None:  # on the CPU: no wait for the GPU
            state.class_pixels += torch.bincount(batch["label"].reshape(-1),
                                                 minlength=len(state.class_pixels))
        yield (batch["label"].to(procs.device, non_blocking=True),
               batch["inst"].to(procs.device, non_blocking=True),
               batch["image"].to(procs.device, non_blocking=True),
               batch["feat"].to(procs.device, non_blocking=True) if "feat" in batch else None)


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


# ---------------------------------------------------------------------------------------------
# The image pool of the official code
# ---------------------------------------------------------------------------------------------

class ImagePool:
    """History of synthesized pairs shown to D (Shrivastava et al. 2017), as the official
    ImagePool: until ``size`` pairs are stored, each new pair is stored and used; then, with
    probability 1/2, a random stored pair is used and the new one takes its place. ``size`` 0
    passes pairs through. Its random numbers and contents are part of the checkpoint.

    Each stored pair is its own compact copy (a view would keep its whole batch alive): the label
    channels, one-hot and boundary map, which are exactly 0 or 1 (``binary_labels``), as uint8,
    and the image in the dtype G made it in. With 35 labels that is 48 bytes a pixel instead of
    156 as one fp32 tensor (42 under bf16): 4.8 GB instead of 15.6 GB for 50 pairs at
    2048x1024. What D sees is the same, bit for bit."""

    def __init__(self, size, seed, binary_labels=True):
        self.size, self.pairs, self.random = size, [], random.Random(seed)
        self.binary_labels = binary_labels

    def query(self, labels, images):
        """(B, C, H, W) label channels and (B, 3, H, W) synthesized images -> the (B, C + 3, H, W)
        pairs D judges as synthesized this iteration, in the labels' dtype."""
        if self.size == 0:
            return torch.cat([labels, images], dim=1)
        out = []
        for pair in zip(labels.split(1), images.detach().split(1)):  # (1, C, H, W), (1, 3, H, W)
            pair = (pair[0].to(torch.uint8) if self.binary_labels else pair[0].clone(),
                    pair[1].clone())
            if len(self.pairs) < self.size:
                self.pairs.append(pair)
                out.append(pair)
            elif self.random.random() > 0.5:
                i = self.random.randrange(self.size)
                out.append(self.pairs[i])
                self.pairs[i] = pair
            else:
                out.append(pair)
        return torch.cat([torch.cat([label.to(labels), image.to(labels)], dim=1)
                          for label, image in out])  # on the labels' device after a resume

    def state_dict(self):
        return {"pairs": [(label.cpu(), image.cpu()) for label, image in self.pairs],
                "random": self.random.getstate()}

    def load_state_dict(self, state):
        self.pairs = [tuple(pair) for pair in state["pairs"]]
        version, internal, gauss = state["random"]
        self.random.setstate((version, tuple(internal), gauss))


# ---------------------------------------------------------------------------------------------
# Stopping on a signal; random states
# ---------------------------------------------------------------------------------------------

class StopRequest:
    """Ctrl-C (SIGINT), SIGTERM (what Slurm, docker stop, Kubernetes and timeout send before they
    kill, and what torchrun passes on) or SIGUSR1 (what Slurm's --signal sends ahead of a time
    limit) asks the loop to finish its iteration, save and exit with 128 + the signal's number
    (130, 143, 138); a second Ctrl-C quits at once without saving. Under torchrun the workers
    have torchrun's --shutdown_timeout (30 s by default) to save before it kills them."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.requested, self.exit_code, self._previous = False, 0, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self.exit_code = True, 128 + signum
            print(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving "
                  "(Ctrl-C again: quit without saving)", file=sys.stderr)

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)


def ignore_stop_signals(exiting, worker_id):
    """In each data worker: the stop signals are the main process's to act on (Slurm signals
    every process of a job, a terminal's Ctrl-C its whole process group), so the workers keep
    serving it while it finishes its iteration and saves. Only once the main process is exiting
    (``exiting`` is set) does SIGTERM end a worker: that is how multiprocessing stops them then."""
    for s in StopRequest.SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, functools.partial(end_if_exiting, exiting))


def end_if_exiting(exiting, signum, frame):
    if exiting.is_set():
        os._exit(0)


def rng_state():
    """Every random number generator's state, as tensors and plain values. CUDA's only when CUDA
    is in use: asking for it would start CUDA in a CPU run."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
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


# ---------------------------------------------------------------------------------------------
# Outputs: checkpoints, loss log and plot, sample grids, the progress bar
# ---------------------------------------------------------------------------------------------

class Outputs:
    """What the run writes, from rank 0 only: opt.json, the loss log (loss_log.csv, a console line
    every print_freq iterations, loss_plot.png), sample grids, and the checkpoints latest.pt and
    epoch_N.pt. Every process keeps the same counters, so all agree on when to log."""

    def __init__(self, opt, procs, state, resumed, loss_names):
        self.opt, self.procs, self.loss_names = opt, procs, loss_names
        self.run_dir = Path(opt.checkpoints_dir) / opt.name
        self.saved_at = state.iteration if resumed else -1  # iteration of the last save
        self.last_log, self.interval, self.bar = time.time(), [], None
        # Built first: a segmenter or split it cannot read stops the run before it writes.
        self.validation = Validation(opt, procs, self.run_dir) if opt.val_freq else None
        self.tensorboard = None
        if procs.is_main:
            self.set_aside_an_earlier_run()
            (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
            for leftover in self.run_dir.glob(".*.pt.*.tmp"):  # from a process killed mid-save
                leftover.unlink()
            (self.run_dir / "opt.json").write_text(json.dumps(vars(opt), indent=2) + "\n")
            keep_until = state.iteration if resumed else None
            start_log(self.run_dir / "loss_log.csv",
                      ["epoch", "iteration", *loss_names, "lr", "sec_per_iter"], keep_until)
            if self.validation is not None:
                start_log(self.validation.log, Validation.COLUMNS, keep_until)
            if opt.tf_log:
                self.tensorboard = tensorboard_writer(self.run_dir / "logs")

    def set_aside_an_earlier_run(self):
        """--start_over: the folder of an earlier run becomes NAME.replaced-DATE, kept whole."""
        if self.opt.start_over and existing_run(self.run_dir):
            aside = self.run_dir.with_name(
                f"{self.run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.run_dir, aside)
            self.procs.say(f"--start_over: the earlier run is kept in {aside}")

    def announce(self, n_images, n_batches):
        procs = self.procs
        processes = f" in each of {procs.world_size} processes" if procs.distributed else ""
        precision = (f", autocast {str(procs.dtype).replace('torch.', '')}" if procs.use_amp
                     else "")
        procs.say(f"Training {self.opt.netG} G on {self.opt.dataroot}: {n_images} images, "
                  f"{n_batches} iterations per epoch{processes}, on {procs.device}{precision}; "
                  f"samples in {self.run_dir / 'samples'}, checkpoints in {self.run_dir}")

    @contextlib.contextmanager
    def progress_bar(self, state, n_batches, n_epochs):
        """This epoch, in a progress bar (rank 0's) that closes also on an error. A data error
        mid-epoch (a bad file) keeps the iterations done: they are saved before it stops the run,
        from where a resumed run meets the same file again, once it is fixed."""
        self.epoch_start = time.time()
        self.bar = tqdm(total=n_batches, initial=state.epoch_iter, disable=not self.procs.is_main,
                        desc=f"epoch {state.epoch}/{n_epochs}", dynamic_ncols=True, leave=False)
        try:
            with self.bar:
                yield self.bar
        except (UserError, data.DataError):
            if state.iteration > max(self.saved_at, 0):
                self.save(state, "latest.pt", gather=False)
            raise

    def after_iteration(self, state, values, lr, s, fake, x):
        opt, it = self.opt, state.iteration
        self.interval.append(values)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
        self.bar.update(1)
        if it % opt.print_freq == 0:
            seconds = (time.time() - self.last_log) / len(self.interval)
            means = {k: sum(v[k] for v in self.interval) / len(self.interval)
                     for k in self.loss_names}
            if self.procs.is_main:
                losses = " ".join(f"{k} {v:.3f}" for k, v in means.items())
                self.bar.write(f"(epoch {state.epoch}, iteration {it}, {seconds:.3f} s/it, "
                               f"lr {lr:.2e}) {losses}")
                append_row(self.run_dir / "loss_log.csv", [state.epoch, it, *(
                    f"{v:.6g}" for v in means.values()), f"{lr:.6g}", f"{seconds:.4f}"])
                if self.tensorboard is not None:  # the official tags: the losses' names
                    for k, v in means.items():
                        self.tensorboard.add_scalar(k, v, it)
            self.last_log, self.interval = time.time(), []
        if self.procs.is_main and it % opt.display_freq == 0:
            self.show_samples(state, s, fake, x)
        if it % opt.save_latest_freq == 0:
            self.save(state, "latest.pt")

    def show_samples(self, state, s, fake, x):
        """A sample grid in samples/, and, as the official display: web/index.html (unless
        --no_html) and TensorBoard images (--tf_log, the official tags)."""
        opt, it = self.opt, state.iteration
        name = f"epoch{state.epoch:03d}_iter{it:08d}.png"
        save_sample_grid(self.run_dir / "samples" / name, s, fake, x, opt.label_nc)
        if not opt.no_html:
            write_samples_page(self.run_dir, opt.name, opt.display_winsize)
        if self.tensorboard is not None:
            panels = {"input_label": data.label_to_image(s, opt.label_nc),
                      "synthesized_image": data.tensor_to_image(fake),
                      "real_image": data.tensor_to_image(x)}
            for tag, picture in panels.items():
                self.tensorboard.add_image(tag, np.asarray(picture.convert("RGB")), it,
                                           dataformats="HWC")

    def end_epoch(self, state, complete):
        if not complete:
            return
        self.procs.say(f"End of epoch {state.epoch}/{self.opt.niter + self.opt.niter_decay}, "
                       f"iteration {state.iteration}, {time.time() - self.epoch_start:.0f} s")
        self.save(state, "latest.pt")
        if state.epoch % self.opt.save_epoch_freq == 0:
            self.save(state, f"epoch_{state.epoch}.pt")
        if self.validation is not None and state.epoch % self.opt.val_freq == 0:
            self.validation.score(state, self.bar, self.tensorboard)
        if self.procs.is_main:
            plot_loss_log(self.run_dir / "loss_log.csv", self.run_dir / "loss_plot.png")

    def save(self, state, name, gather=True):
        """Rank 0 writes ``name``; under torchrun the class counts of every process are summed
        first (``gather``: every process is here), which needs no other process when False."""
        class_pixels = state.class_pixels
        if gather and self.procs.distributed and class_pixels is not None:
            class_pixels = class_pixels.to(self.procs.device)
            dist.all_reduce(class_pixels)
            class_pixels = class_pixels.cpu()
        if self.procs.is_main:
            runs.save_checkpoint(state.checkpoint(self.opt, self.procs.world_size, class_pixels),
                                 self.run_dir / name)
        self.saved_at = state.iteration

    def finish(self, state):
        """The last save, the plot, and what to do next; under torchrun no process exits (which
        makes torchrun stop the others) before rank 0 has saved."""
        if self.saved_at != state.iteration:
            self.save(state, "latest.pt")
        if self.procs.is_main:
            plot_loss_log(self.run_dir / "loss_log.csv", self.run_dir / "loss_plot.png")
            how = (f"Stopped at iteration {state.iteration} ({state.stop}); " if state.stop
                   else "Done; ")
            print(f"{how}checkpoint {self.run_dir / 'latest.pt'}, samples in "
                  f"{self.run_dir / 'samples'}")
            if state.stop == "interrupted":
                print("Resume with the same command and --continue_train")
            if self.tensorboard is not None:
                self.tensorboard.close()
        if self.procs.distributed:
            dist.barrier()


class Validation:
    """--val_freq: every N epochs, the Table 1 score of G on a held-out split (``evaluate``: the
    segmenter's mean IoU and pixel accuracy against the split's label maps), in val_log.csv, on
    the console, in loss_plot.png and, with --tf_log, in TensorBoard, so that progress and
    overfitting show. Rank 0 scores; the other processes wait for it at their next collective."""

    COLUMNS = ["epoch", "iteration", "mIoU", "accuracy"]

    def __init__(self, opt, procs, run_dir):
        self.opt, self.procs, self.log = opt, procs, run_dir / "val_log.csv"
        if procs.is_main:
            self.segmenter = evaluate.load_segmenter(opt.val_segmenter, opt.val_segmenter_arch,
                                                     device=procs.device)
            self.dataset = runs.CommandLineErrors(infer.inference_dataset(
                opt, opt.dataroot, opt.val_phase))

    def score(self, state, bar, tensorboard=None):
        if not self.procs.is_main:
            return
        # G (and E) as infer.py runs them: in eval mode, so that dropout is off and batch norm
        # uses, and leaves untouched, its running statistics; train mode again afterwards.
        model = infer.Model(state.G, state.E, self.opt, self.procs.device, self.procs.use_amp,
                            "training")
        nets = [net for net in (state.G, state.E) if net is not None]
        for net in nets:
            net.eval()
        try:
            report = evaluate.score_split(evaluate.model_synthesizer(model), self.dataset,
                                          self.segmenter, how_many=self.opt.val_how_many)
        finally:
            for net in nets:
                net.train()
        append_row(self.log, [state.epoch, state.iteration, f"{report['mIoU']:.6g}",
                              f"{report['accuracy']:.6g}"])
        bar.write(f"(epoch {state.epoch}, iteration {state.iteration}) validation on "
                  f"{report['images']} {self.opt.val_phase} images: mean IoU "
                  f"{report['mIoU']:.4f}, accuracy {report['accuracy']:.4f}")
        if tensorboard is not None:  # --tf_log: beside the losses, by iteration
            for key in ("mIoU", "accuracy"):
                tensorboard.add_scalar(f"validation/{key}", report[key], state.iteration)


def save_sample_grid(path, s, fake, x, label_nc):
    """colourised label map | synthesized image | real photo, side by side, as a PNG."""
    panels = [data.label_to_image(s, label_nc), data.tensor_to_image(fake),
              data.tensor_to_image(x)]
    W, H = panels[0].size
    grid = Image.new("RGB", (3 * W, H))
    for i, panel in enumerate(panels):
        grid.paste(panel, (i * W, 0))
    grid.save(path)


def check_tensorboard():
    """--tf_log needs the tensorboard package, and only then: checked before the run writes."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tf_log needs TensorBoard: pip install tensorboard") from None
    return SummaryWriter


def tensorboard_writer(log_dir):
    """--tf_log: a TensorBoard writer (torch.utils.tensorboard) in ``log_dir``."""
    return check_tensorboard()(log_dir=str(log_dir))


def write_samples_page(run_dir, title, width):
    """web/index.html: every sample grid of samples/, newest first, each panel ``width`` pixels
    wide (--display_winsize), written atomically."""
    grids = sorted((Path(run_dir) / "samples").glob("*.png"), reverse=True)
    rows = "\n".join(f'<h3>{g.stem}</h3><img src="../samples/{g.name}" width="{3 * width}">'
                     for g in grids)
    page = Path(run_dir) / "web" / "index.html"
    page.parent.mkdir(exist_ok=True)
    tmp = page.with_name(".index.html.tmp")
    tmp.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
                   "</title></head><body>\n<p>label | synthesized | real</p>\n"
                   f"{rows}\n</body></html>\n")
    os.replace(tmp, page)


def start_log(path, columns, keep_until=None):
    """A new CSV log with ``columns``, or, when resuming, the old one without the rows after the
    checkpoint (iteration ``keep_until``)."""
    rows = []
    if keep_until is not None and path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= keep_until]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def append_row(path, values):
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(values)


def plot_loss_log(csv_path, png_path):
    """Generator (G_*) and discriminator (D_*) losses against iterations, and, when the run is
    validated (val_log.csv beside the loss log), the validation score (matplotlib, no display
    needed)."""
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend state

    rows, val_rows = read_rows(csv_path), read_rows(Path(csv_path).with_name("val_log.csv"))
    if not rows:
        return
    iterations = [int(r["iteration"]) for r in rows]
    names = [k for k in rows[0] if k not in ("epoch", "iteration", "lr", "sec_per_iter")]
    panels = 3 if val_rows else 2
    fig = Figure(figsize=(5 * panels, 4), tight_layout=True)
    axes = fig.subplots(1, panels)
    for ax, player, title in zip(axes, "GD", ("generator", "discriminators")):
        for name in (n for n in names if n.startswith(player)):
            ax.plot(iterations, [float(r[name]) for r in rows], label=name)
        ax.set(title=title, xlabel="iteration")
        ax.legend()
    if val_rows:
        for name in Validation.COLUMNS[2:]:
            axes[2].plot([int(r["iteration"]) for r in val_rows],
                         [float(r[name]) for r in val_rows], marker="o", label=name)
        axes[2].set(title="validation (segmentation score)", xlabel="iteration")
        axes[2].legend()
    fig.savefig(png_path)


def read_rows(path):
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
