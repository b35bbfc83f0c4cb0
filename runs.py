"""What a training run leaves on disk, read back alike by training and by inference.

A run is the folder ``checkpoints_dir/name/``. Each of its checkpoints (``latest.pt``,
``epoch_N.pt``) is one file with everything needed to go on or to synthesize: the weights of G, D
and E, both optimizers, the gradient scaler, the counters, the random states, and the options the
run was started with. Those options rebuild the networks, so ``infer.py`` and ``manipulate.py``
read a run without the trainer, and ``train.py`` resumes one bit for bit on the CPU.

Also here, because every command needs them the same way: where a run computes (CPU or CUDA), in
which autocast dtype, the command-line flags that name a run, and how a mistake reaches the user:
one line that names the file or the flag, and an exit code.
"""

import argparse
import contextlib
import difflib
import errno
import hashlib
import math
import os
import pickle
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

import data
import networks


class UserError(Exception):
    """A mistake in the command line or the files: reported as one line, exit code 2."""


class RunStopped(Exception):
    """The run cannot go on (a non-finite loss, a checkpoint that cannot be written): one line,
    exit code 1."""


# Where the data is when no --dataroot is given, for training and inference alike: Cityscapes
# where the official code looks for it, else the synthetic city that train.py writes.
OFFICIAL_DATAROOT = "./datasets/cityscapes"
SYNTHETIC_CITY = "./datasets/synthetic_city"

# The options that give G, D and E their shapes: a checkpoint's own values rebuild its networks,
# and a resumed run must use them.
ARCHITECTURE_OPTIONS = ["label_nc", "no_instance", "netG", "ngf", "n_downsample_global",
                        "n_blocks_global", "n_local_enhancers", "n_blocks_local", "num_D",
                        "n_layers_D", "ndf", "instance_feat", "feat_num", "nef", "n_downsample_E",
                        "input_nc", "output_nc", "norm", "use_dropout", "label_feat",
                        "load_features"]

# What the architecture options added later mean in a checkpoint written before them.
ARCHITECTURE_DEFAULTS = {"input_nc": 3, "output_nc": 3, "norm": "instance", "use_dropout": False,
                         "label_feat": False, "load_features": False}


class CommandLine(argparse.ArgumentParser):
    """argparse whose mistakes are one line that names the flag (no usage block), exit code 2;
    an unknown flag gets the known ones it resembles."""

    def error(self, message):
        unknown = message.partition("unrecognized arguments: ")[2].split()
        known = [s for a in self._actions for s in a.option_strings]
        close = [m for u in unknown if u.startswith("-")
                 for m in difflib.get_close_matches(u.split("=")[0], known, n=1)]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        print(f"{self.prog}: {message}{hint}; see --help", file=sys.stderr)
        sys.exit(2)


def run_name(text):
    """An argparse type: a run's name, a folder of its own under --checkpoints_dir."""
    if text.strip() in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} is no run name: the run's files would land "
                                         "in --checkpoints_dir itself or above it; name the run")
    return text


def whole(minimum):
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value
    return parse


def real(minimum, maximum=math.inf, above=False, below=False):
    """An argparse type: a finite number in [minimum, maximum], the ends excluded with ``above``
    (> minimum) or ``below`` (< maximum)."""
    low, high = "(" if above else "[", ")" if below else "]"
    allowed = f"in {low}{minimum}, {maximum}{high}" if maximum < math.inf else (
        f"{'above' if above else 'at least'} {minimum}")

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects a number, got {text!r}") from None
        if not (math.isfinite(value) and (value > minimum if above else value >= minimum)
                and (value < maximum if below else value <= maximum)):
            raise argparse.ArgumentTypeError(f"must be a number {allowed}, got {text}")
        return value
    return parse


def add_run_options(parser, seed_help, name_default=None):
    """The flags that name a run and say where it computes, declared once for every command."""
    g = parser.add_argument_group("run")
    g.add_argument("--name", default=name_default, type=run_name,
                   help="run name: its files are in checkpoints_dir/name/")
    g.add_argument("--checkpoints_dir", default="./checkpoints", help="where runs are saved")
    g.add_argument("--which_epoch", default="latest",
                   help="which checkpoint: 'latest' (latest.pt) or an epoch number N (epoch_N.pt)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when available")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (autocast): bf16, or fp16 on GPUs without native bf16; "
                        "default: on with CUDA, off on the CPU")
    g.add_argument("--seed", type=whole(0), default=0, help=seed_help)
    return g


def add_official_run_options(parser):
    """The official code's flags for the device and the precision, and the two it has for
    launchers and printing, read by ``resolve_run_options``."""
    g = parser.add_argument_group("official flags for the device and precision")
    g.add_argument("--gpu_ids", default=None,
                   help="official: one GPU id (N: cuda:N) or -1 for the CPU; several GPUs run "
                        "as one process each under torchrun")
    g.add_argument("--fp16", action="store_true", help="official: autocast, as --amp")
    g.add_argument("--data_type", type=int, default=None, choices=[8, 16, 32],
                   help="official: 16 is autocast (as --amp), 32 full precision (as --no-amp)")
    g.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help="set by python -m torch.distributed.launch; torchrun sets LOCAL_RANK")
    g.add_argument("--model", default="pix2pixHD", help="official: pix2pixHD, the only model")
    g.add_argument("--verbose", action="store_true",
                   help="print the networks and their parameter counts")
    return g


def resolve_run_options(opt, program, distributed=False):
    """The official flags of ``add_official_run_options`` said in this project's terms, in
    place: --gpu_ids as --device (and the GPU), --fp16 and --data_type as --amp. A UserError
    for what cannot apply, naming what to do instead. ``program`` is the command's file name;
    ``distributed``: it runs under torchrun on several GPUs (train.py)."""
    if opt.model != "pix2pixHD":
        raise UserError(f"--model {opt.model}: only pix2pixHD is here (the official 'ui' model "
                        "is their interactive editor: use manipulate.py restyle)")
    if opt.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(opt.local_rank))
    if opt.data_type == 8:
        raise UserError("--data_type 8: convolutions do not compute in 8-bit integers (the "
                        "official model.type(torch.uint8) cannot run); use --data_type 16 "
                        "(autocast) or 32")
    wants = {"--fp16": True if opt.fp16 else None,
             f"--data_type {opt.data_type}": {16: True, 32: False}.get(opt.data_type),
             "--amp" if opt.amp else "--no-amp": opt.amp}
    given = {flag: v for flag, v in wants.items() if v is not None}
    if len(set(given.values())) > 1:
        raise UserError(f"{' and '.join(given)} contradict each other: full precision or "
                        "autocast? pass one")
    if given:
        opt.amp = next(iter(given.values()))
    if opt.gpu_ids is not None:
        resolve_gpu_ids(opt, program, distributed)


def resolve_gpu_ids(opt, program, distributed):
    """--gpu_ids -1: the CPU; N: CUDA device N (the official torch.cuda.set_device); several:
    refused with the torchrun command that runs them, one process per GPU."""
    try:
        ids = [int(i) for i in opt.gpu_ids.split(",")]
    except ValueError:
        raise UserError(f"--gpu_ids {opt.gpu_ids}: expects GPU numbers like 0 or 0,1, or -1 for "
                        "the CPU") from None
    ids = [i for i in ids if i >= 0]  # the official parser drops negative ids
    device = "cuda" if ids else "cpu"
    if opt.device not in ("auto", device):
        raise UserError(f"--gpu_ids {opt.gpu_ids} and --device {opt.device} contradict each "
                        "other; pass one")
    if len(ids) > 1 and not distributed:
        raise UserError(f"--gpu_ids {opt.gpu_ids}: {program} runs on one GPU: "
                        f"pass one id, such as --gpu_ids {ids[0]}")
    if len(ids) > 1:
        n, batch = len(ids), getattr(opt, "batchSize", 1)
        per_gpu = (f"the official --batchSize {batch} over {n} GPUs is --batchSize {batch // n}"
                   if batch % n == 0 else "--batchSize is per GPU")
        raise UserError(
            f"--gpu_ids {opt.gpu_ids}: several GPUs run as one process each here (DDP, not the "
            f"official DataParallel): torchrun --nproc_per_node {n} {program} "
            f"... without --gpu_ids (CUDA_VISIBLE_DEVICES={','.join(map(str, ids))} picks "
            f"them); {per_gpu}")
    opt.device = device
    if ids and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(f"--gpu_ids {opt.gpu_ids} under torchrun: each process takes the GPU "
                        "of its LOCAL_RANK; drop --gpu_ids (CUDA_VISIBLE_DEVICES picks the GPUs)")
    if ids:
        if not torch.cuda.is_available() or ids[0] >= torch.cuda.device_count():
            raise UserError(f"--gpu_ids {opt.gpu_ids}: no such CUDA device here "
                            f"({torch.cuda.device_count()} visible); --gpu_ids -1 for the CPU")
        torch.cuda.set_device(ids[0])


def describe_networks(networks_by_name):
    """--verbose: each network and its number of parameters, as the official print_network."""
    for name, net in networks_by_name.items():
        if net is not None:
            print(net)
            print(f"{name}: {sum(p.numel() for p in net.parameters()):,} parameters")


def add_model_options(parser, given_only=False):
    """The flags of ARCHITECTURE_OPTIONS that shape G, D and E (the official names and defaults,
    which are the paper's unless a help line says otherwise). ``given_only``: no defaults, so
    only the flags on the command line are set (a trained model has its own values)."""
    g = parser.add_argument_group("model")
    g.add_argument("--netG", default="global", choices=["global", "local"],
                   help="global: G1 alone; local: G1 inside the local enhancer G2 (sec. 3.2)")
    g.add_argument("--ngf", type=whole(1), default=64,
                   help="width of G's first layer (paper: 64 for G1; 32 for G2, whose G1 is 2x)")
    g.add_argument("--n_downsample_global", type=whole(0), default=4, help="downsamplings in G1")
    g.add_argument("--n_blocks_global", type=whole(0), default=9, help="residual blocks in G1")
    g.add_argument("--n_local_enhancers", type=whole(1), default=1, help="number of G2 stages")
    g.add_argument("--n_blocks_local", type=whole(0), default=3, help="residual blocks per G2")
    g.add_argument("--num_D", type=whole(1), default=3,
                   help="discriminators D_k at different scales (paper: 3; official script: 2)")
    g.add_argument("--n_layers_D", type=whole(1), default=3,
                   help="layers of each PatchGAN D_k (3 gives the 70x70 receptive field)")
    g.add_argument("--ndf", type=whole(1), default=64, help="width of D_k's first layer")
    g.add_argument("--instance_feat", action="store_true",
                   help="train the instance feature encoder E and feed its features to G "
                        "(sec. 3.4)")
    g.add_argument("--feat_num", type=whole(1), default=3,
                   help="features per instance from E (paper, sec. 4: 3)")
    g.add_argument("--nef", type=whole(1), default=16, help="width of E's first layer")
    g.add_argument("--n_downsample_E", type=whole(0), default=4, help="downsamplings in E")
    g.add_argument("--label_feat", action="store_true",
                   help="E's features averaged over each class region of the label map instead "
                        "of each instance (official option; not in the paper)")
    g.add_argument("--load_features", action="store_true",
                   help="G's features read from precomputed maps in dataroot/<phase>_feat/ "
                        "(manipulate.py precompute) instead of E, which is then not trained: the "
                        "official 1024p recipe with features")
    g.add_argument("--input_nc", type=whole(1), default=3,
                   help="channels of the input picture with --label_nc 0 (1: grey, 4: RGBA)")
    g.add_argument("--output_nc", type=whole(1), default=3,
                   help="channels of the photo G makes (1: grey or depth, 2: grey+alpha, 4: RGBA)")
    g.add_argument("--norm", default="instance", choices=networks.NORMS,
                   help="normalization in G, D and E (paper: instance)")
    g.add_argument("--use_dropout", action="store_true",
                   help="dropout (p 0.5) in G's residual blocks (the official code accepts the "
                        "flag but never uses it)")
    if given_only:  # absent from the namespace unless given (argparse's SUPPRESS)
        for action in parser._actions:
            if action.dest in ARCHITECTURE_OPTIONS:
                action.default = argparse.SUPPRESS
    return g


def given_architecture(opt):
    """{option: value} of the architecture flags given on a command line that declares them
    without defaults (``add_model_options(given_only=True)``)."""
    return {k: v for k, v in vars(opt).items() if k in ARCHITECTURE_OPTIONS}


def check_architecture(given, saved, source):
    """The architecture flags a user ``given`` (a dict) for a trained model must be its own
    (``saved``): they describe it, as in the official test scripts, and cannot change it."""
    saved = vars(architecture(saved))
    differ = [k for k in ARCHITECTURE_OPTIONS if k in given and given[k] != saved.get(k)]
    if differ:
        raise UserError(f"{source} was trained with " + ", ".join(
            f"{k} {saved.get(k)} (given: {given[k]})" for k in differ)
            + "; drop those flags: a trained model brings its own")


def architecture(opt):
    """The options ``opt`` (a namespace or a checkpoint's ``opt`` dict) as a namespace, with the
    values of ``ARCHITECTURE_DEFAULTS`` for options an older checkpoint does not have."""
    values = dict(vars(opt) if isinstance(opt, argparse.Namespace) else opt)
    return argparse.Namespace(**{**ARCHITECTURE_DEFAULTS, **values})


def uses_features(opt):
    """G reads feat_num feature channels: per instance (--instance_feat) or per class region
    (--label_feat)."""
    return bool(opt.instance_feat or getattr(opt, "label_feat", False))


def has_encoder(opt):
    """E exists: features are used and not read from precomputed maps (--load_features)."""
    return uses_features(opt) and not getattr(opt, "load_features", False)


def feature_regions(opt, label, inst):
    """The map E averages over and cluster centres fill: the instance map, or the label map
    with --label_feat (every class region is one "instance", its id the class)."""
    return label if getattr(opt, "label_feat", False) else inst


# ---------------------------------------------------------------------------------------------
# Networks from options
# ---------------------------------------------------------------------------------------------

def build_networks(opt):
    """(G, D, E or None) for the options ``opt`` (a namespace or the ``opt`` dict of a checkpoint),
    initialised N(0, 0.02). G reads the label map (one-hot, or RGB when label_nc is 0), the
    instance boundary map unless no_instance, and feat_num feature channels with instance_feat or
    label_feat (from E, or from precomputed maps with load_features, when there is no E). D
    reads the label map, the boundary map and an image, not the features (as the official
    code)."""
    opt = architecture(opt)
    label_channels = ((opt.label_nc if opt.label_nc > 0 else opt.input_nc)
                      + (0 if opt.no_instance else 1))
    G = networks.define_G(opt.netG, label_channels + (opt.feat_num if uses_features(opt) else 0),
                          opt.output_nc, opt.ngf, opt.n_downsample_global, opt.n_blocks_global,
                          opt.n_local_enhancers, opt.n_blocks_local, opt.norm, opt.use_dropout)
    D = networks.define_D(label_channels + opt.output_nc, opt.ndf, opt.n_layers_D, opt.num_D,
                          opt.norm)
    E = (networks.define_E(opt.output_nc, opt.feat_num, opt.nef, opt.n_downsample_E, opt.norm)
         if has_encoder(opt) else None)
    return G, D, E


def fingerprint(module):
    """A short hash of a network's weights: which model a file derived from it (a cluster file)
    was made for."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def size_multiple(opt):
    """G's total downsampling (and E's, with instance features): every side of an input must be
    a multiple of it, so that the upsampling path gives back the input's size."""
    n = opt.n_downsample_global + (opt.n_local_enhancers if opt.netG == "local" else 0)
    return 2 ** (max(n, opt.n_downsample_E) if has_encoder(opt) else n)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def checkpoint_file(run_dir, which_epoch="latest"):
    """``run_dir/latest.pt``, or ``run_dir/epoch_N.pt`` for ``which_epoch`` N."""
    return Path(run_dir) / ("latest.pt" if which_epoch == "latest" else f"epoch_{which_epoch}.pt")


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
            raise RunStopped(f"could not write {path} ({error_line(err)}); the previous "
                             f"{path.name}, if any, is intact") from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict written by train.py: G, D, E (None without instance_feat),
    optimizer_G, optimizer_D, scaler, epoch, iteration, epoch_iter, world_size, image_pool, rng,
    opt. It holds only tensors and plain values, so it loads with ``weights_only=True``. A file
    that is not one (truncated, or something else) is a one-line UserError."""
    checkpoint = read_weights(path, map_location)
    if not isinstance(checkpoint, dict) or not {"G", "D", "opt"} <= checkpoint.keys():
        raise UserError(f"{path} is not a checkpoint written by train.py; for NVIDIA's "
                        "latest_net_G.pth pass the folder that holds it (--name, or "
                        "--load_pretrain FOLDER), or use infer.py --official_checkpoint")
    return checkpoint


def read_weights(path, map_location="cpu"):
    """``torch.load`` of a file of tensors (``weights_only``), or a UserError naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable checkpoint ({reason}); it may be truncated or "
                        "another kind of file: download or train it again") from None


# ---------------------------------------------------------------------------------------------
# Device and precision
# ---------------------------------------------------------------------------------------------

def pick_device(choice):
    """--device auto|cpu|cuda -> "cuda" or "cpu"; cuda asked for but absent is a UserError."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def autocast_dtype(device_type):
    """The dtype autocast computes in: bf16 (no loss scaling needed) on the CPU and on GPUs that
    compute it natively (Ampere and later); fp16, with a gradient scaler, on older GPUs, which
    would only emulate bf16, slowly."""
    if device_type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.float16
    return torch.bfloat16


def autocast(device, enabled):
    """``torch.autocast`` on ``device`` in ``autocast_dtype``; does nothing when not enabled."""
    return torch.autocast(device.type, dtype=autocast_dtype(device.type), enabled=enabled)


# ---------------------------------------------------------------------------------------------
# Where a command writes, checked before it works
# ---------------------------------------------------------------------------------------------

def check_output_folder(folder, flag, given=None):
    """``folder``, or the nearest folder above it that exists, takes a new file; nothing is
    created yet (a later check may still fail). A UserError naming ``flag`` and the value the
    user ``given`` (the folder itself by default) otherwise."""
    folder = existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(existing))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"{flag} {given or folder}: cannot write there ({existing}: "
                        f"{err.strerror or err}); choose a writable place") from None


def check_output_image(path, flag):
    """``path`` can become an image file: an image extension PIL writes, not a folder, in a
    writable place."""
    path = Path(path)
    if path.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"{flag} {path}: not an image file name; end it in .png (or .jpg, ...)")
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name such as {path / 'out.png'}")
    check_output_folder(path.parent, flag, given=path)


# ---------------------------------------------------------------------------------------------
# Errors on the command line
# ---------------------------------------------------------------------------------------------

# The command-line flag of each PairedDataset argument a DataError can name as its fix, in
# train.py; commands that read a trained model take fewer of them from the user (the rest are
# the model's own).
DATA_FLAGS = {"root": "--dataroot", "label_nc": "--label_nc", "no_instance": "--no_instance",
              "load_size": "--loadSize", "input_nc": "--input_nc", "output_nc": "--output_nc",
              "load_features": "--load_features"}


def error_line(err, flags=DATA_FLAGS):
    """The user's message of an error as one line. A ``data.DataError`` gets the flag that fixes
    it, when the command has it (``flags``); an error a DataLoader worker passed on (as text,
    with its traceback) is cut to its own message, the last line after the exception's class
    name."""
    if isinstance(err, OSError) and err.strerror:
        what = ("the disk is full (no space left on device)" if err.errno == errno.ENOSPC
                else err.strerror)
        return f"{err.filename or 'a file'}: {what}"
    if isinstance(err, data.DataError) and err.fix is not None:
        argument, value = err.fix
        if argument not in flags:
            return f"{err.problem} ({argument} is the model's own: give data that fits it)"
        flag = flags[argument]
        remedy = {True: f"or pass {flag}", None: f"check {flag}"}.get(value,
                                                                    f"or pass {flag} {value}")
        return f"{err.problem}; {remedy}"
    lines = str(err).strip().splitlines() or [type(err).__name__]
    if len(lines) > 1 and "Traceback" in str(err):
        return lines[-1].split(": ", 1)[-1]
    return " ".join(line.strip() for line in lines)


def fail(program, err, code, flags=DATA_FLAGS):
    """One line on stderr, then exit with ``code``. Under torchrun every process says it, with
    its rank: an error may come from one process's share of the data only."""
    rank = f"rank {os.environ['RANK']}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    print(f"{program}: {rank}{error_line(err, flags)}", file=sys.stderr)
    sys.exit(code)


class CommandLineErrors(torch.utils.data.Dataset):
    """A dataset whose DataErrors come out as UserErrors already in the command line's words.
    DataLoader workers pass an exception on as its text alone, which would lose the flag that
    fixes it, so the words are chosen where the error happens."""

    def __init__(self, dataset, flags=DATA_FLAGS):
        self.dataset, self.flags = dataset, flags

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except data.DataError as err:
            raise UserError(error_line(err, self.flags)) from None
