r"""Synthesis with a trained pix2pixHD generator, or with one of NVIDIA's released ones (paper
sec. 4 results; sec. 3.4 instance features at test time).

At test time the generator is all there is: the label map s becomes G's input (one-hot labels and
the instance boundary map, ``data.generator_input``) and G(s) is the photo. With instance features
(``--instance_feat``, sec. 3.4) G reads ``feat_num`` more channels, one low-dimensional feature per
object instance, which come either from the encoder E run on a real photo (``encoded``: the photo's
own styles) or from the K-means cluster centres that ``manipulate.py encode`` saved (``clusters``:
one centre of the instance's class drawn at random for each instance, as the official code does):

.. math:: \hat x = G\big(s \oplus B(I) \oplus F\big), \qquad
          F(p) = E(x, I)(p) \;\text{or}\; \mu^{c(I(p))}_{k(I(p))}

where B(I) is the boundary map of the instance map I, c(i) the class of instance i and k(i) a
cluster index drawn with a seeded generator.

Usage::

    python infer.py --name NAME --dataroot ROOT --phase test          # a whole split + index.html
    python infer.py --name NAME --label L.png --inst I.png --out O.png # one label map
    python infer.py --official_checkpoint checkpoints/label2city_1024p/latest_net_G.pth \
        --netG local --ngf 32 --dataroot ./cityscapes --phase test     # NVIDIA's 2048x1024 model
"""

import argparse
import html
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

import data
import networks
import official
import runs
from runs import UserError

# The cluster file's default name beside the checkpoint (manipulate.py encode writes it).
CLUSTER_FILE = "clusters.npz"

# The data flags a user gives here; label_nc and no_instance are the model's own.
DATA_FLAGS = {"root": "--dataroot", "load_size": "--loadSize"}

# With no --dataroot: the official default, else the synthetic city train.py writes.
OFFICIAL_DATAROOT = "./datasets/cityscapes"
SYNTHETIC_CITY = "./datasets/synthetic_city"


# ---------------------------------------------------------------------------------------------
# Models: ours and NVIDIA's
# ---------------------------------------------------------------------------------------------

@dataclass
class Model:
    """A generator G ready for inference, with the encoder E when it was trained with
    ``--instance_feat``, the training options ``opt`` (official flag names), where it runs
    (``amp``: under autocast), the file it came from, and, for our checkpoints, how many pixels
    of each class it trained on."""
    G: torch.nn.Module
    E: Optional[torch.nn.Module]
    opt: argparse.Namespace
    device: torch.device
    amp: bool
    source: str
    class_pixels: Optional[torch.Tensor] = None  # pixels of each class seen in training


def load_model(path, device="cpu", amp=None):
    """Load G (and E) from a checkpoint written by train.py (``checkpoints/NAME/latest.pt``).
    ``amp`` None means autocast on CUDA only (bf16 where supported, else fp16)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint there; train one with train.py --name "
                        f"{path.parent.name}, or check --name, --checkpoints_dir, --which_epoch")
    checkpoint = runs.load_checkpoint(path)
    opt = runs.architecture(checkpoint["opt"])
    G, _, E = runs.build_networks(opt)
    G.load_state_dict(checkpoint["G"])
    if E is not None:
        E.load_state_dict(checkpoint["E"])
    model = _ready(G, E, opt, device, amp, path)
    model.class_pixels = checkpoint.get("class_pixels")
    return model


def load_official_model(path, netG="local", ngf=32, label_nc=35, device="cpu", amp=None):
    """Load a generator saved by NVIDIA's pix2pixHD (``latest_net_G.pth``, a plain state_dict with
    ``model.17.conv_block.1.weight``-style keys) through ``official.load_official_state_dict``.

    The released Cityscapes models: label2city_1024p is ``netG='local', ngf=32``, label2city_512p
    is ``netG='global', ngf=64``; both take 35 one-hot labels + the boundary map (36 channels), and
    otherwise have the official defaults (4 downsamplings, 9 residual blocks in G1; one local
    enhancer of 3 blocks). No encoder was released, so there are no instance features. The file
    is loaded with ``weights_only=True``: it holds tensors only.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--official_checkpoint {path}: no such file; download latest_net_G.pth "
                        "of label2city_1024p from the official pix2pixHD README (see README.md)")
    state_dict = runs.read_weights(path)
    if isinstance(state_dict, dict) and {"G", "D", "opt"} <= state_dict.keys():
        raise UserError(f"--official_checkpoint {path} is a checkpoint written by this project's "
                        f"train.py, not NVIDIA's: load it with --name {path.parent.name} "
                        f"--checkpoints_dir {path.parent.parent}")
    opt = argparse.Namespace(
        label_nc=label_nc, no_instance=False, instance_feat=False, feat_num=3, netG=netG,
        ngf=ngf, n_downsample_global=4, n_blocks_global=9, n_local_enhancers=1,
        n_blocks_local=3, n_downsample_E=4,
        # The official test scripts: 1024p runs at the file's size, 512p scales to 1024 wide.
        loadSize=1024, fineSize=512, resize_or_crop="none" if netG == "local" else "scale_width")
    G = networks.define_G(netG, label_nc + 1, 3, ngf, opt.n_downsample_global,
                          opt.n_blocks_global, opt.n_local_enhancers, opt.n_blocks_local)
    try:
        official.load_official_state_dict(G, state_dict)
    except ValueError as err:
        raise UserError(f"--official_checkpoint {path}: {err}; label2city_1024p needs --netG local "
                        "--ngf 32, label2city_512p --netG global --ngf 64, both --label_nc 35"
                        ) from None
    return _ready(G, None, opt, device, amp, path)


def _ready(G, E, opt, device, amp, path):
    opt = runs.architecture(opt)
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    G = G.to(device).eval()
    E = E.to(device).eval() if E is not None else None
    return Model(G, E, opt, device, amp, str(path))


# ---------------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------------

@torch.inference_mode()
def synthesize(model, label, inst, features=None):
    r"""\hat x = G(s \oplus B(I) \oplus F): (B, 1, H, W) label ids (or (B, 3, H, W) RGB labels when
    label_nc is 0), (B, 1, H, W) instance ids, optional (B, feat_num, H, W) instance features ->
    (B, 3, H, W) float32 in [-1, 1] on the model's device. Runs without autograd (inference
    mode): nothing here is trained.
    """
    opt = model.opt
    label, inst = label.to(model.device), inst.to(model.device)
    x = data.generator_input(label, inst, opt.label_nc, opt.no_instance)  # (B, label_nc + 1, H, W)
    if runs.uses_features(opt):
        if features is None:
            raise ValueError("this G was trained with --instance_feat: pass the instance features")
        # (B, label_nc + 1, H, W) -> (B, label_nc + 1 + feat_num, H, W)
        x = torch.cat([x, features.to(model.device, x.dtype)], dim=1)
    with runs.autocast(model.device, model.amp):
        return model.G(x).float()


@torch.inference_mode()
def instance_feature_map(model, inst, source, image=None, clusters=None, generator=None,
                         noted=None):
    """F for G's extra channels: (B, feat_num, H, W), or None when G has no instance features.

    ``source='encoded'``: E(x, I) on the real photo ``image`` (B, 3, H, W), the photo's own styles.
    ``source='clusters'``: ``sample_cluster_features`` with ``clusters`` ({class id: (K, feat_num)})
    and ``generator``; classes without clusters get zeros and are named on stdout, once per class
    when the caller passes the same set ``noted`` for a whole split.
    """
    if not runs.uses_features(model.opt):
        return None
    if source == "encoded":
        if image is None:
            raise UserError("--feature_source encoded needs the real photo (--image, or a split "
                            "with photos); use --feature_source clusters with a cluster file")
        with runs.autocast(model.device, model.amp):
            return model.E(image.to(model.device), inst.to(model.device)).float()
    if clusters is None:
        raise UserError("--feature_source clusters needs a cluster file: make one with "
                        "`python manipulate.py encode --name NAME` or pass --cluster_file")
    features, missing = sample_cluster_features(inst, clusters, model.opt.feat_num, generator)
    noted = set() if noted is None else noted
    for c in sorted(set(missing) - noted):
        noted.add(c)
        print(f"note: class {c} ({data.class_name(c)}) has no clusters in the cluster file: its "
              "instances get zero features")
    return features.to(model.device)


def sample_cluster_features(inst, clusters, feat_num, generator=None):
    r"""Fill each instance with one cluster centre of its class, drawn uniformly at random.

    .. math:: F(p) = \mu^{c(i)}_{k_i}, \quad i = I(p), \quad k_i \sim U\{0, .., K_{c(i)} - 1\}

    ``inst`` (B, 1, H, W) instance ids (class = id // 1000 for ids >= 1000, else the id itself);
    ``clusters`` {class id: (K, feat_num) centres}. Draws are made in order of (image, instance
    id) from ``generator`` (a CPU ``torch.Generator``), so a seed fixes the result. Returns the
    (B, feat_num, H, W) float32 map on ``inst``'s device, and the sorted list of classes that
    had no clusters (their instances get zeros, where the official code left memory unset).
    """
    B, _, H, W = inst.shape
    ids = inst.reshape(B, H * W).long().cpu()
    span = int(ids.max()) + 1 if ids.numel() else 1
    # Keys (image, id) so that the same id in two images draws twice; sorted by torch.unique.
    keys, inverse = torch.unique(ids + span * torch.arange(B).unsqueeze(1), return_inverse=True)
    table = torch.zeros(len(keys), feat_num)  # one feature per (image, instance)
    missing = set()
    for row, key in enumerate(keys.tolist()):
        c = data.instance_class(key % span)
        if c not in clusters:
            missing.add(c)
            continue
        centres = torch.as_tensor(clusters[c], dtype=torch.float32)  # (K, feat_num)
        table[row] = centres[torch.randint(len(centres), (1,), generator=generator)[0]]
    features = table[inverse.reshape(-1)].reshape(B, H, W, feat_num).permute(0, 3, 1, 2)
    return features.contiguous().to(inst.device), sorted(missing)


def note_unseen_classes(model, label, noted):
    """One line naming the classes of ``label`` that G never trained on, with their share of the
    map's pixels: G has not learned them, so whatever it draws there is a guess. Each class is
    named once when the caller passes the same set ``noted`` for a whole split. Nothing is
    known for NVIDIA's checkpoints."""
    if model.class_pixels is None or model.opt.label_nc == 0:
        return
    seen = model.class_pixels > 0
    counts = torch.bincount(label.reshape(-1).cpu(), minlength=len(seen))[:len(seen)]
    unseen = [c for c in (counts > 0).logical_and(~seen).nonzero()[:, 0].tolist()
              if c not in noted]
    if unseen:
        noted.update(unseen)
        shares = ", ".join(f"{c} {data.class_name(c)} ({100 * int(counts[c]) / label.numel():.1f}%"
                           " of the map)" for c in unseen)
        print(f"note: classes never seen in training: {shares}; G has not learned them")


# ---------------------------------------------------------------------------------------------
# The cluster file
# ---------------------------------------------------------------------------------------------

def save_clusters(path, centers, feat_num, label_nc, counts=None, model_id=None):
    """Write K-means centres per class as ``.npz`` of plain arrays (loads with allow_pickle=False):
    ``feat_num``, ``label_nc``, ``class_ids`` (C,), per class ``centers_<id>`` (K, feat_num)
    and, when given, ``counts_<id>`` (K,) instances per cluster and ``model_id``, the
    fingerprint of the encoder whose features were clustered (``runs.fingerprint``). The
    official ``.npy`` of a dict needs pickle, which numpy refuses by default."""
    arrays = {"feat_num": np.array(feat_num), "label_nc": np.array(label_nc),
              "class_ids": np.array(sorted(centers), dtype=np.int64)}
    if model_id is not None:
        arrays["model_id"] = np.array(model_id)
    for c, mu in centers.items():
        arrays[f"centers_{c}"] = np.asarray(torch.as_tensor(mu).cpu(), dtype=np.float32)
        if counts is not None:
            arrays[f"counts_{c}"] = np.asarray(torch.as_tensor(counts[c]).cpu(), dtype=np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to another suffix
        np.savez(f, **arrays)


def load_clusters(path, feat_num=None, label_nc=None, model_id=None, allow_other_model=False):
    """{class id: (K, feat_num) float32 tensor} from ``save_clusters``' file. With ``feat_num`` /
    ``label_nc`` given, a file made for another encoder width or label set is refused; with
    ``model_id``, so is a file made for another encoder (its features mean something else),
    unless ``allow_other_model``. A file written without a model_id (by hand) is taken as it is.
    Unreadable files are one UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"cluster file {path} not found; make it with `python manipulate.py "
                        "encode --name NAME` or pass --cluster_file")
    try:
        with np.load(path, allow_pickle=False) as f:
            made_with = int(f["feat_num"]), int(f["label_nc"])
            made_for = str(f["model_id"]) if "model_id" in f.files else None
            clusters = {int(c): torch.from_numpy(f[f"centers_{c}"]) for c in f["class_ids"]}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"cluster file {path} is not one written by manipulate.py encode "
                        f"({runs.error_line(err) or type(err).__name__}); re-run `python "
                        "manipulate.py encode`") from None
    if (feat_num is not None and made_with[0] != feat_num) or (
            label_nc is not None and made_with[1] != label_nc):
        raise UserError(f"cluster file {path} was made with feat_num {made_with[0]}, label_nc "
                        f"{made_with[1]}, but this model has feat_num {feat_num}, label_nc "
                        f"{label_nc}; re-run `python manipulate.py encode` for this checkpoint")
    if model_id is not None and made_for is not None and made_for != model_id:
        if not allow_other_model:
            raise UserError(f"cluster file {path} was made for another model (encoder "
                            f"{made_for}, this checkpoint's is {model_id}): its centres mean "
                            "other features here; re-run `python manipulate.py encode`, or pass "
                            "--allow_other_clusters to use it anyway")
        print(f"note: cluster file {path} was made for another model (encoder {made_for}); "
              "used as --allow_other_clusters asks")
    return clusters


# ---------------------------------------------------------------------------------------------
# One label map from files
# ---------------------------------------------------------------------------------------------

def load_inputs(label_path, inst_path, image_path, opt):
    """(label, inst, image or None), batches of one, from files: a label map of ids (an RGB
    picture when label_nc is 0), an instance map of 16-bit ids or None, a photo or None, for the
    model of training options ``opt``. They are read, checked and resized exactly as
    ``inference_dataset`` does for a split (``data.read_triplet``). Without an instance map the
    label map doubles as one, so the boundary channel marks class boundaries."""
    label, inst, image = data.read_triplet(label_path, inst_path, image_path, opt.label_nc,
                                           lambda size: inference_geometry(size, opt),
                                           opt.input_nc, opt.output_nc)
    label = label[None]                                                  # (1, 1 or 3, H, W)
    if inst is not None:
        inst = inst[None]                                                # (1, 1, H, W)
    elif opt.label_nc > 0:
        inst = label.clone()
    else:
        inst = torch.zeros(1, 1, *label.shape[-2:], dtype=torch.long)
    return label, inst, image[None] if image is not None else None


def inference_geometry(size, opt):
    """The resize (and central crop) ``inference_dataset`` applies to an input of ``size``, with
    the model's options: ``data.draw_geometry``, no random crop, no flip."""
    return data.draw_geometry(size, inference_resize_or_crop(opt), opt.loadSize, opt.fineSize,
                              runs.size_multiple(opt))


def inference_dataset(opt, dataroot, phase="test", load_features=False):
    """``phase``'s split of ``dataroot`` at the size the model ``opt`` was trained at, never
    flipped; whole images after scale_width_and_crop and crop, a central crop after
    resize_and_crop; with ``load_features``, the split's precomputed feature maps."""
    return data.PairedDataset(dataroot, phase, opt.label_nc, opt.no_instance, opt.loadSize,
                              opt.fineSize, inference_resize_or_crop(opt), no_flip=True,
                              size_multiple=runs.size_multiple(opt), is_train=False,
                              input_nc=opt.input_nc, output_nc=opt.output_nc,
                              load_features=load_features)


def inference_resize_or_crop(opt):
    """Training's ``resize_or_crop`` without the random crop of scale_width_and_crop and crop
    (test images are synthesized whole, as the official test scripts do: the 1024p model
    trained on crops is tested with --resize_or_crop none). resize_and_crop keeps a central
    fineSize crop: data.py has no resize-only mode."""
    return {"scale_width_and_crop": "scale_width", "crop": "none"}.get(opt.resize_or_crop,
                                                                       opt.resize_or_crop)


# ---------------------------------------------------------------------------------------------
# The command line's work
# ---------------------------------------------------------------------------------------------

def run_dataset(model, dataroot, phase, out_dir, feature_source=None, clusters=None, seed=0,
                how_many=None, num_workers=0, aspect_ratio=1.0, page_width=None):
    """Synthesize every label map of ``dataroot``'s ``phase`` split into ``out_dir/images`` and
    write ``out_dir/index.html`` (its images ``page_width`` pixels wide when given; no page
    when False). ``aspect_ratio``: the official test option (``stretch``). Returns (number
    of images, images per second of synthesis)."""
    opt = model.opt
    dataset = inference_dataset(opt, dataroot, phase, feature_source == "precomputed")
    loader = DataLoader(runs.CommandLineErrors(dataset, DATA_FLAGS), batch_size=1,
                        num_workers=num_workers)
    images = Path(out_dir) / "images"
    images.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    rows, seconds, noted, unseen = [], 0.0, set(), set()
    for i, batch in enumerate(loader):
        if how_many is not None and i >= how_many:
            break
        stem = dataset.stems[i]
        has_image = bool(batch["has_image"][0])
        source = feature_source or ("encoded" if has_image else "clusters")
        note_unseen_classes(model, batch["label"], unseen)
        start = time.perf_counter()
        features = batch["feat"] if source == "precomputed" else instance_feature_map(
            model, runs.feature_regions(opt, batch["label"], batch["inst"]), source,
            batch["image"] if has_image else None, clusters, generator, noted)
        fake = synthesize(model, batch["label"], batch["inst"], features)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        seconds += time.perf_counter() - start
        row = {"stem": stem, "label": f"images/{stem}_label.png",
               "synthesized": f"images/{stem}_synthesized.png"}
        stretch(data.label_to_image(batch["label"][0], opt.label_nc), aspect_ratio).save(
            images / f"{stem}_label.png")
        stretch(data.tensor_to_image(fake[0]), aspect_ratio).save(
            images / f"{stem}_synthesized.png")
        if has_image:
            row["real"] = f"images/{stem}_real.png"
            stretch(data.tensor_to_image(batch["image"][0]), aspect_ratio).save(
                images / f"{stem}_real.png")
        rows.append(row)
    if page_width is not False:
        write_index_html(Path(out_dir) / "index.html", rows, title=str(out_dir), width=page_width)
    return len(rows), len(rows) / max(seconds, 1e-9)


def stretch(picture, aspect_ratio=1.0):
    """A result picture as the official --aspect_ratio saves it: wider by that factor when above
    1, taller by its inverse when below (bicubic, as theirs)."""
    if aspect_ratio == 1.0:
        return picture
    W, H = picture.size
    size = (round(W * aspect_ratio), H) if aspect_ratio > 1 else (W, round(H / aspect_ratio))
    return picture.resize(size, Image.BICUBIC)


def run_files(model, label_path, inst_path, image_path, out_path, feature_source=None,
              clusters=None, seed=0):
    """Synthesize one label map from files and save it to ``out_path``."""
    label, inst, image = load_inputs(label_path, inst_path, image_path, model.opt)
    note_unseen_classes(model, label, set())
    source = feature_source or ("encoded" if image is not None else "clusters")
    features = instance_feature_map(model, runs.feature_regions(model.opt, label, inst), source,
                                    image, clusters, torch.Generator().manual_seed(seed))
    fake = synthesize(model, label, inst, features)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    data.save_image(fake[0].cpu(), out_path)


def write_index_html(path, rows, title, width=None):
    """A results page: one table row per image, colourised label | synthesized | real photo,
    each ``width`` pixels wide (the official --display_winsize) or as wide as the page allows."""
    head = "<tr><th>image</th><th>label map</th><th>synthesized</th><th>real photo</th></tr>"
    size = f'width="{width}"' if width else 'style="max-width:100%"'
    cells = []
    for row in rows:
        imgs = "".join(
            f'<td><img src="{html.escape(row[k])}" {size}></td>' if k in row
            else "<td></td>" for k in ("label", "synthesized", "real"))
        cells.append(f"<tr><td>{html.escape(row['stem'])}</td>{imgs}</tr>")
    Path(path).write_text(
        f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1>\n<table>\n{head}\n" + "\n".join(cells)
        + "\n</table></body></html>\n")


def build_parser():
    p = runs.CommandLine(
        prog="infer.py",
        description="Synthesize photos from label maps with a trained pix2pixHD generator "
                    "(train.py) or NVIDIA's released one (--official_checkpoint). The official "
                    "test.py's flags are accepted with their meaning.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    runs.add_run_options(p, seed_help="seed of the cluster draws (--feature_source clusters)")
    runs.add_official_run_options(p)
    add_official_options(p)

    g = p.add_argument_group("data")
    g.add_argument("--dataroot", default=None,
                   help=f"dataset root (pix2pixHD or Cityscapes layout); default: "
                        f"{OFFICIAL_DATAROOT} if it exists, else {SYNTHETIC_CITY} if it exists")
    g.add_argument("--phase", default="test", help="split to synthesize")
    g.add_argument("--how_many", type=runs.whole(1), default=None,
                   help="stop after N images (all; the official test.py: 50)")
    g.add_argument("--max_dataset_size", type=runs.whole(1), default=None,
                   help="official: read only the first N images of the split")
    g.add_argument("--loadSize", type=runs.whole(1), default=None,
                   help="input width (scale_width) or size (resize); default: as trained, or "
                        "1024 for an official checkpoint with --netG global")
    g.add_argument("--fineSize", type=runs.whole(1), default=None,
                   help="the central crop of resize_and_crop; default: as trained")
    g.add_argument("--resize_or_crop", default=None,
                   choices=data.RESIZE_OR_CROP,
                   help="default: as trained without the crop; 'none' (the file's size) for an "
                        "official --netG local checkpoint")
    g.add_argument("--label", default=None, help="one label map PNG instead of --dataroot")
    g.add_argument("--inst", default=None, help="its instance map PNG (16-bit ids)")
    g.add_argument("--image", default=None, help="its photo, for --feature_source encoded")
    g.add_argument("--num_workers", "--nThreads", type=runs.whole(0), default=2,
                   help="data loading processes (official name: nThreads)")
    for flag in ("--serial_batches", "--no_flip"):
        g.add_argument(flag, action="store_true",
                       help="accepted as the official test.py, which forces it: test images "
                            "are read in order, never flipped")
    g.add_argument("--batchSize", type=runs.whole(1), default=1,
                   help="accepted as the official test.py, which forces 1: one image at a time")
    add_feature_options(p)
    add_output_options(p)
    return p


def add_feature_options(p):
    g = p.add_argument_group("instance features (sec. 3.4, models trained with --instance_feat)")
    g.add_argument("--feature_source", default=None,
                   choices=["encoded", "clusters", "precomputed"],
                   help="E on the real photo, a random cluster centre per instance, or the "
                        "split's <phase>_feat/ maps (manipulate.py precompute); default: encoded "
                        "when there is a photo and an E, precomputed for a --load_features "
                        "model whose split has them, else clusters")
    g.add_argument("--use_encoded_image", dest="feature_source", action="store_const",
                   const="encoded", help="official: --feature_source encoded")
    g.add_argument("--cluster_file", "--cluster_path", default=None,
                   help="K-means centres from manipulate.py encode "
                        f"(default: checkpoints_dir/name/{CLUSTER_FILE})")
    g.add_argument("--allow_other_clusters", action="store_true",
                   help="use a cluster file made for another model's encoder (refused otherwise)")


def add_output_options(p):
    g = p.add_argument_group("output")
    g.add_argument("--results_dir", default="./results",
                   help="pages go to results_dir/name/<phase>_<which_epoch>/")
    g.add_argument("--out", default=None, help="with --label: the output PNG")
    g.add_argument("--aspect_ratio", type=runs.real(0, above=True), default=1.0,
                   help="official: the saved images are this much wider (above 1) or taller "
                        "(below 1)")
    g.add_argument("--display_winsize", type=runs.whole(1), default=None,
                   help="width in pixels of the images on index.html (default: the page's)")
    g.add_argument("--no_html", action="store_true", help="no index.html, only the images")
    for flag, instead in REFUSED_TEST_FLAGS.items():
        g.add_argument(flag, nargs="?", const="", default=None, help=f"refused: {instead}")


# Official test.py flags that cannot apply here, and what to do instead.
REFUSED_TEST_FLAGS = {
    "--ntest": "the official test.py never reads it; --how_many N limits the images",
    "--engine": "TensorRT engines are not run here; synthesize with PyTorch (infer.py)",
    "--onnx": "TensorRT is not run here; synthesize with PyTorch (infer.py)",
    "--tf_log": "TensorBoard logs training (train.py --tf_log); infer.py writes index.html",
    "--n_clusters": "K is chosen when clustering: manipulate.py encode --n_clusters K",
    "--niter_fix_global": "a training option (G1 fixed for the first epochs): train.py",
}


def add_official_options(parser):
    g = parser.add_argument_group("NVIDIA's released generators")
    g.add_argument("--official_checkpoint", default=None,
                   help="NVIDIA's latest_net_G.pth instead of a run of ours; give its --netG/--ngf")
    g.add_argument("--label_nc", type=runs.whole(0), default=argparse.SUPPRESS,
                   help="number of label ids: the model's own (an official checkpoint: 35)")
    g.add_argument("--no_instance", action="store_true", default=argparse.SUPPRESS,
                   help="the model's own; given, it must be the model's")
    runs.add_model_options(parser, given_only=True)


def main(argv=None):
    opt = build_parser().parse_args(argv)
    try:
        resolve_test_options(opt)
        run(opt)
    except (UserError, data.DataError) as err:
        runs.fail("infer.py", err, 2, DATA_FLAGS)


def resolve_test_options(opt):
    """The official test.py's flags in this command's terms; the dataset root when none is
    given, said on the first line."""
    runs.resolve_run_options(opt, "infer.py")
    for flag, instead in REFUSED_TEST_FLAGS.items():
        if getattr(opt, flag[2:]) is not None:
            raise UserError(f"{flag}: {instead}")
    if opt.max_dataset_size is not None:
        opt.how_many = min(opt.how_many or opt.max_dataset_size, opt.max_dataset_size)
    if opt.dataroot is None and opt.label is None:
        for root, what in ((OFFICIAL_DATAROOT, "the official default"),
                           (SYNTHETIC_CITY, "the synthetic city")):
            if Path(root).is_dir():
                opt.dataroot = root
                print(f"No --dataroot: synthesizing from {root}, {what}")
                break


def run(opt):
    """The command: what to read and where to write are checked first, then G is loaded and
    runs over one label map (--label) or a split (--dataroot)."""
    out_dir = check_command(opt)
    model, run_dir = open_generator(opt)
    if opt.verbose:
        runs.describe_networks({"G": model.G, "E": model.E})
    source = opt.feature_source or default_feature_source(model, opt)
    clusters = None
    if runs.uses_features(model.opt) and source in (None, "clusters"):
        cluster_file = opt.cluster_file or (run_dir / CLUSTER_FILE)
        if source == "clusters" or opt.cluster_file or Path(cluster_file).is_file():
            clusters = load_clusters(cluster_file, model.opt.feat_num, model.opt.label_nc,
                                     runs.fingerprint(model.E) if model.E is not None else None,
                                     opt.allow_other_clusters)
    if opt.label is not None:
        run_files(model, opt.label, opt.inst, opt.image, opt.out, source, clusters, opt.seed)
        print(f"wrote {opt.out}")
        return
    n, per_second = run_dataset(model, opt.dataroot, opt.phase, out_dir, source,
                                clusters, opt.seed, opt.how_many, opt.num_workers,
                                opt.aspect_ratio, False if opt.no_html else opt.display_winsize)
    print(f"synthesized {n} images on {model.device}"
          f"{' with autocast' if model.amp else ''}: {per_second:.2f} images/s (G"
          f"{' and E' if model.E is not None else ''} only, without file I/O); "
          f"{'results page ' + str(out_dir / 'index.html') if not opt.no_html else out_dir}")


def default_feature_source(model, opt):
    """A model without E (trained with --load_features) reads the split's precomputed maps
    when it has them, else cluster centres; otherwise None: E on the photo when there is one."""
    if model.E is not None or not runs.uses_features(model.opt):
        return None
    if opt.dataroot and (Path(opt.dataroot) / f"{opt.phase}_feat").is_dir():
        return "precomputed"
    return "clusters"


def check_command(opt):
    """The inputs named and the outputs writable, before any work; returns the results folder
    of a split (None for one label map)."""
    if opt.official_checkpoint is None and opt.name is None:
        raise UserError("--name: which run to load (checkpoints_dir/name/latest.pt), or "
                        "--official_checkpoint PATH")
    if opt.label is not None:
        if opt.out is None:
            raise UserError("--label needs --out O.png, the file to write")
        if opt.feature_source == "precomputed":
            raise UserError("--feature_source precomputed reads a split's <phase>_feat/ maps: "
                            "pass --dataroot, or use encoded (with --image) or clusters")
        runs.check_output_image(opt.out, "--out")
        return None
    if opt.dataroot is None:
        raise UserError("nothing to synthesize: pass --dataroot ROOT (with --phase) or "
                        "--label L.png --out O.png")
    if not Path(opt.dataroot).is_dir():
        problem = "is a file, not a dataset folder" if Path(opt.dataroot).exists() else (
            "does not exist")
        raise UserError(f"--dataroot {opt.dataroot} {problem}; pass a dataset root")
    name = opt.name or Path(opt.official_checkpoint).parent.name or "official"
    out_dir = Path(opt.results_dir) / name / f"{opt.phase}_{opt.which_epoch}"
    runs.check_output_folder(out_dir, "--results_dir")
    return out_dir


def open_generator(opt):
    """(the model, its run folder or None for NVIDIA's), with --loadSize / --resize_or_crop."""
    device = runs.pick_device(opt.device)
    run_dir = None
    given = {k: v for k, v in vars(opt).items() if k in runs.ARCHITECTURE_OPTIONS}
    if opt.official_checkpoint:
        netG = given.get("netG", "local")
        ngf = given.get("ngf", 32 if netG == "local" else 64)
        model = load_official_model(opt.official_checkpoint, netG, ngf,
                                    given.get("label_nc", 35), device=device, amp=opt.amp)
    else:
        run_dir = Path(opt.checkpoints_dir) / opt.name
        path = runs.checkpoint_file(run_dir, opt.which_epoch)
        model = load_model(path, device, opt.amp)
        runs.check_architecture(given, model.opt, path)
    for option in ("loadSize", "fineSize", "resize_or_crop"):
        if getattr(opt, option) is not None:
            setattr(model.opt, option, getattr(opt, option))
    return model, run_dir


if __name__ == "__main__":
    main()
