"""NVIDIA's run folders: what the official pix2pixHD trainer leaves in ``checkpoints_dir/name``,
read so that its runs can be continued, fine-tuned, encoded and restyled here.

An official run folder holds, for each save (``latest``, or an epoch number):

* ``{epoch}_net_G.pth``, ``{epoch}_net_D.pth`` and, with instance features, ``{epoch}_net_E.pth``:
  plain state_dicts in the official key layout, which ``official.py`` converts;
* ``iter.txt``: the epoch, and the images done in it, when ``latest`` was saved: two integers
  written by ``np.savetxt(..., delimiter=',', fmt='%d')`` (``epoch + 1, 0`` after a whole epoch);
* ``opt.txt``: every option of the run, ``name: value`` lines between ``------------ Options
  -------------`` and ``-------------- End ----------------``. The values are read as the
  literals Python printed (True, 35, 0.0002, [0], text), never evaluated;
* after ``encode_features.py``, ``features_clustered_010.npy``: the K-means centres as a pickled
  dict {label: (K, feat_num) array}. Unpickling a file can run any code it holds, so it is read
  only when the user says the file is trusted, then converted once to this project's ``.npz``.

Not in the folder: the optimizers' state, the image pool, the random states and the learning
rate reached. The official trainer saves none of them and restarts Adam (and the learning rate,
at --lr) on --continue_train; a continued official run here also starts Adam afresh, and takes
the learning rate of its epoch from the schedule (``train.learning_rate``).
"""

import argparse
import re
from pathlib import Path

import numpy as np
import torch

import official
import runs
from runs import UserError

OPTIONS_FILE, ITER_FILE = "opt.txt", "iter.txt"
PICKLED_CLUSTERS = "features_clustered_010.npy"  # encode_features.py's name, for K = 10

# The official defaults of the options that shape the networks (options/base_options.py and
# train_options.py; num_D is 2 there, 3 in the paper and in train.py), and of the data geometry.
OFFICIAL_DEFAULTS = dict(
    label_nc=35, no_instance=False, netG="global", ngf=64, n_downsample_global=4,
    n_blocks_global=9, n_local_enhancers=1, n_blocks_local=3, num_D=2, n_layers_D=3, ndf=64,
    instance_feat=False, feat_num=3, nef=16, n_downsample_E=4, input_nc=3, output_nc=3,
    loadSize=1024, fineSize=512, resize_or_crop="scale_width")



def weights_file(run_dir, which_epoch, net):
    """``run_dir/{which_epoch}_net_{net}.pth``, the official name (net: G, D or E)."""
    return Path(run_dir) / f"{which_epoch}_net_{net}.pth"


def is_official_run(run_dir, which_epoch="latest"):
    """``run_dir`` holds NVIDIA's ``{which_epoch}_net_G.pth`` and no checkpoint of ours for
    ``which_epoch`` (a continued official run writes ours beside theirs; ours is then newer)."""
    return (weights_file(run_dir, which_epoch, "G").is_file()
            and not runs.checkpoint_file(run_dir, which_epoch).is_file())


# ---------------------------------------------------------------------------------------------
# What the folder says: options, counters, weights
# ---------------------------------------------------------------------------------------------

def read_options(run_dir):
    """opt.txt as {name: value}, each value parsed as a literal (``literal``); None when the
    folder has no opt.txt (a released model's folder holds latest_net_G.pth alone)."""
    path = Path(run_dir) / OPTIONS_FILE
    if not path.is_file():
        return None
    options = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip() or line.startswith("---"):
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip().isidentifier():
            raise UserError(f"{path}, line {number}: {line.strip()[:60]!r} is not a 'name: value' "
                            "line of the official opt.txt; repair it, or remove the file to read "
                            "the options from the weights' shapes")
        options[name.strip()] = literal(value.strip())
    return options


def literal(text):
    """One opt.txt value as Python printed it: True, False, None, an int, a float (also inf), a
    list of ints (gpu_ids: [0, 1]), or else the text itself."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if re.fullmatch(r"\[\s*(-?\d+\s*(,\s*-?\d+\s*)*)?\]", text):
        return [int(v) for v in re.findall(r"-?\d+", text)]
    return text


def read_iter(run_dir):
    """(epoch, images done in it) from iter.txt, where ``latest`` was saved."""
    path = Path(run_dir) / ITER_FILE
    if not path.is_file():
        raise UserError(f"--continue_train: {path} not found, so where the official run stopped "
                        "is unknown; pass --which_epoch N to go on after the epoch_N files "
                        "(N_net_G.pth)")
    values = [v for v in re.split(r"[,\s]+", path.read_text(errors="replace").strip()) if v]
    if len(values) != 2 or not all(v.isdigit() for v in values) or int(values[0]) < 1:
        raise UserError(f"{path}: expected two integers (epoch, images done in it), as the "
                        f"official train.py writes, got {' '.join(values)[:40]!r}")
    return int(values[0]), int(values[1])


def read_run(run_dir, which_epoch="latest", nets="GDE", label_nc=35):
    """(options, {net: official state_dict}) of an official run: the options from opt.txt over
    the official defaults, or, without opt.txt, from the weights' shapes (``label_nc`` splits G's
    input channels, see ``official.options_from_shapes``), checked; the state_dicts of the
    networks in ``nets`` whose file exists (G's must)."""
    run_dir = Path(run_dir)
    states = {}
    for net in nets:
        file = weights_file(run_dir, which_epoch, net)
        if file.is_file():
            states[net] = read_state_dict(file)
    if "G" not in states:
        raise UserError(f"{weights_file(run_dir, which_epoch, 'G')} not found; check --name, "
                        "--checkpoints_dir and --which_epoch")
    written = read_options(run_dir)
    if written is None:
        shapes = shape_options(states, label_nc)
        if shapes is None:
            raise UserError(f"{weights_file(run_dir, which_epoch, 'G')}: not an official "
                            "pix2pixHD generator (no model.1.weight)")
        print(f"note: {run_dir} has no {OPTIONS_FILE}: options read from the weights' shapes: "
              f"{official.as_flags(shapes)}")
        written = shapes
    return checked_options({**OFFICIAL_DEFAULTS, **written}, run_dir / OPTIONS_FILE), states


def read_state_dict(file):
    state = runs.read_weights(file)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{file}: not a state_dict of tensors, as the official code saves; check "
                        "the file")
    return state


def checked_options(options, path):
    """``options`` with those that shape the networks checked for their kind; the rest (any
    other official option) pass through under their official names."""
    if options.get("norm", "instance") != "instance":  # batch norm's weights and statistics
        raise UserError(f"{path}: norm {options['norm']}: official.py maps the official "
                        "networks with instance norm only; such a run cannot be loaded")
    if options.get("use_dropout"):
        # The official --use_dropout never reaches G (define_G does not pass it on): the run's
        # G has no dropout, and is loaded as it is.
        print(f"note: {path}: use_dropout True, but the official code never gave its G dropout; "
              "loaded without (use_dropout False)")
        options["use_dropout"] = False
    for name, default in OFFICIAL_DEFAULTS.items():
        value = options[name]
        fits = (isinstance(value, bool) if isinstance(default, bool) else
                isinstance(value, int) and not isinstance(value, bool) and value >= 0
                if isinstance(default, int) else isinstance(value, str))
        if not fits or (name == "netG" and value not in ("global", "local")):
            raise UserError(f"{path}: {name}: {value!r} is not a value the official code "
                            f"accepts for it (default {default})")
    return options


def shape_options(states, label_nc):
    """``official.options_from_shapes`` of the state_dicts, or None when they are not
    official networks."""
    try:
        return official.options_from_shapes(states.get("G"), states.get("D"), states.get("E"),
                                            label_nc)
    except (official.LayoutMismatch, KeyError, ValueError, IndexError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------
# Networks from the folder
# ---------------------------------------------------------------------------------------------

def load_networks(run_dir, which_epoch, options, states):
    """(G, D or None, E or None) built with ``options`` (``runs.build_networks``) and loaded with
    the official weights in ``states``; a network whose shapes differ is one UserError with the
    flags that fit (``mismatch``)."""
    G, D, E = runs.build_networks(argparse.Namespace(**options))
    for net, model in (("G", G), ("D", D), ("E", E)):
        if model is not None and net in states:
            file = weights_file(run_dir, which_epoch, net)
            try:
                model.load_state_dict(official.convert_official_state_dict(model, states[net]))
            except official.LayoutMismatch as err:
                raise UserError(mismatch(file, err, states, options["label_nc"])) from None
    return G, D if "D" in states else None, E if "E" in states else None


def mismatch(file, err, states, label_nc):
    """One line: the file, the keys that differ (a few, then a count), and the flags under which
    the networks would have the file's shapes."""
    fit = shape_options(states, label_nc)
    fix = (f"the flags that fit its shapes: {official.as_flags(fit)}" if fit else
           "it is not an official pix2pixHD network")
    return (f"{file} does not fit the networks of these options: {len(err.keys)} keys differ "
            f"({official.first_keys(err.keys, 4)}); {fix}")


def open_run(run_dir, which_epoch="latest", label_nc=35):
    """(G, E or None, options) for synthesis and manipulation: an official run's generator and
    encoder, and its options (a namespace, official names) for the data geometry."""
    options, states = read_run(run_dir, which_epoch, nets="GE", label_nc=label_nc)
    G, _, E = load_networks(run_dir, which_epoch, options, states)
    return G, E, argparse.Namespace(**options)


def pretrained_weights(run_dir, label_nc=35):
    """--load_pretrain of an official run folder: {'G', 'D', 'E'} state_dicts of its ``latest``
    networks in our keys (None for a network it lacks), built with the folder's own options."""
    options, states = read_run(run_dir, "latest", label_nc=label_nc)
    G, D, E = load_networks(run_dir, "latest", options, states)
    return {"G": G.state_dict(), "D": D.state_dict() if D is not None else None,
            "E": E.state_dict() if E is not None else None}


# ---------------------------------------------------------------------------------------------
# --continue_train of an official run
# ---------------------------------------------------------------------------------------------

def adopt_options(opt, given):
    """--continue_train of an official run: every option that shapes the networks and is not on
    the command line (``given``) is taken from the run (its opt.txt, else its shapes), since the
    official defaults differ from ours (num_D 2); one given with another value is refused."""
    run_dir = Path(opt.checkpoints_dir) / opt.name
    if not is_official_run(run_dir, opt.which_epoch):
        return
    options = read_options(run_dir)
    if options is None:
        options, _ = read_run(run_dir, opt.which_epoch, label_nc=opt.label_nc)
    options = checked_options({**OFFICIAL_DEFAULTS, **options}, run_dir / OPTIONS_FILE)
    differ = [n for n in runs.ARCHITECTURE_OPTIONS
              if n in options and getattr(opt, n, None) != options[n]]
    conflicts = [n for n in differ if n in given]
    if conflicts:
        raise UserError(
            f"--continue_train: {run_dir} was trained with "
            + ", ".join(f"{n} {options[n]} (now {getattr(opt, n)})" for n in conflicts)
            + "; pass the run's values or drop those flags")
    for name in differ:
        setattr(opt, name, options[name])
    if differ:
        print(f"--continue_train of NVIDIA's run {run_dir}: from its options "
              + ", ".join(f"{n} {options[n]}" for n in differ))


def resume_state(opt, run_dir):
    """What ``train_machinery.restore_official`` needs to go on with an official run: G, D (and
    E) in our keys, for the networks of ``opt``; the epoch and the images done in it (iter.txt for
    ``latest``, the epoch after N for ``--which_epoch N``); the batch size it counted them in."""
    which = opt.which_epoch
    if which != "latest" and not str(which).isdigit():
        raise UserError(f"--which_epoch {which}: 'latest' or an epoch number")
    options, states = read_run(run_dir, which, label_nc=opt.label_nc)
    needed = ["D"] + (["E"] if runs.has_encoder(opt) else [])
    for net in needed:
        if net not in states:
            raise UserError(f"--continue_train: {weights_file(run_dir, which, net)} not found "
                            f"(it holds {', '.join(sorted(states))}); to start a new run from "
                            "its G1 use --load_pretrain")
    G, D, E = load_networks(run_dir, which, {**options, **vars(opt)}, states)
    epoch, images = read_iter(run_dir) if which == "latest" else (int(which) + 1, 0)
    return {"official": True, "path": weights_file(run_dir, which, "G"), "G": G.state_dict(),
            "D": D.state_dict(), "E": E.state_dict() if E is not None else None,
            "epoch": epoch, "images_done": images}


# ---------------------------------------------------------------------------------------------
# The official cluster file
# ---------------------------------------------------------------------------------------------

def read_pickled_clusters(path, trusted, feat_num):
    """{class id: (K, feat_num) float32 tensor} from the official ``features_clustered_010.npy``
    (``np.save`` of a dict, so a pickle), only when ``trusted``."""
    if not trusted:
        raise UserError(f"{path} is the official cluster file, a pickle, and reading a pickle "
                        "can run any code it holds: pass --trust_pickle if it comes from a source "
                        "you trust (it is converted once to this project's .npz), or make the "
                        "clusters here with `python manipulate.py encode`")
    try:
        loaded = np.load(path, allow_pickle=True, encoding="latin1")
        table = loaded.item() if loaded.dtype == object and loaded.shape == () else None
    except (OSError, ValueError, EOFError, ImportError, AttributeError, TypeError) as err:
        raise UserError(f"{path}: not readable as the official cluster file "
                        f"({runs.error_line(err)})") from None
    if not isinstance(table, dict):
        raise UserError(f"{path}: not the official cluster file (a dict label -> centres)")
    clusters = {}
    for label, centres in table.items():
        centres = np.asarray(centres)
        if not isinstance(label, (int, np.integer)) or centres.ndim != 2 or (
                centres.shape[1] != feat_num):
            raise UserError(f"{path}: class {label!r} holds centres of shape {centres.shape}, "
                            f"not (K, {feat_num}) for this model's feat_num {feat_num}")
        clusters[int(label)] = torch.from_numpy(centres.astype(np.float32))
    return clusters
