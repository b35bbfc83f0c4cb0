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
import os
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
import official
import official_folder
import runs
from runs import UserError

# The cluster file's default name beside the checkpoint (manipulate.py encode writes it).
CLUSTER_FILE = "clusters.npz"

# The data flags a user gives here; label_nc and no_instance are the model's own.
DATA_FLAGS = {"root": "--dataroot", "load_size": "--loadSize"}


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


def load_run(run_dir, which_epoch="latest", device="cpu", amp=None, label_nc=35):
    """G (and E) of the run folder ``run_dir``: one of train.py's (``load_model``), or one written
    by NVIDIA's train.py (``official_folder``: ``{which_epoch}_net_G.pth``, ``_net_E.pth``,
    its opt.txt). ``label_nc`` only splits G's input channels of an official folder without
    opt.txt (a released model's)."""
    if official_folder.is_official_run(run_dir, which_epoch):
        G, E, opt = official_folder.open_run(run_dir, which_epoch, label_nc)
        return _ready(G, E, opt, device, amp,
                      official_folder.weights_file(run_dir, which_epoch, "G"))
    return load_model(runs.checkpoint_file(run_dir, which_epoch), device, amp)


def load_official_model(path, netG=None, ngf=None, label_nc=35, device="cpu", amp=None):
    """Load a generator saved by NVIDIA's pix2pixHD (``latest_net_G.pth``, a plain state_dict with
    ``model.17.conv_block.1.weight``-style keys) through ``official.load_official_state_dict``.

    The released Cityscapes models: label2city_1024p is ``netG='local', ngf=32``, label2city_512p
    is ``netG='global', ngf=64``; both take 35 one-hot labels + the boundary map (36 channels), and
    otherwise have the official defaults (4 downsamplings, 9 residual blocks in G1; one local
    enhancer of 3 blocks). ``netG`` and ``ngf`` left None are read from the file's shapes, as are
    the depths. No encoder was released, so there are no instance features. The file is loaded
    with ``weights_only=True``: it holds tensors only.
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
    shapes = official_folder.shape_options({"G": state_dict}, label_nc) or {}
    netG = netG or shapes.get("netG", "local")
    opt = argparse.Namespace(**{
        **official_folder.OFFICIAL_DEFAULTS, **shapes, "label_nc": label_nc, "netG": netG,
        "ngf": ngf or shapes.get("ngf", 32 if netG == "local" else 64),
        # The official test scripts: 1024p runs at the file's size, 512p scales to 1024 wide.
        "resize_or_crop": "none" if netG == "local" else "scale_width"})
    G, _, _ = runs.build_networks(opt)
    try:
        official.load_official_state_dict(G, state_dict)
    except official.LayoutMismatch as err:
        fit = f"; the flags that fit its shapes: {official.as_flags(shapes)}" if shapes else ""
        raise UserError(f"--official_checkpoint {path}: {err}{fit}") from None
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
        if model.E is None:
            raise UserError(f"{model.source}: its run saved no encoder E (an official run trained "
                            "with --load_features); use --feature_source clusters")
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # atomic: a whole file or none
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to another suffix
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
# Instance features as a table (what the editor saves)
# ---------------------------------------------------------------------------------------------

def table_feature_map(inst, table, feat_num):
    """F from a table {instance id: (feat_num,) vector}: (1, 1, H, W) ids -> (1, feat_num, H, W)
    float32 on ``inst``'s device, every pixel holding its instance's vector."""
    ids, inverse = torch.unique(inst.reshape(-1).cpu(), return_inverse=True)
    missing = [i for i in ids.tolist() if i not in table]
    if missing:
        raise UserError(f"the instance features name no vector for instance(s) {missing}")
    rows = torch.stack([torch.as_tensor(table[i], dtype=torch.float32).reshape(feat_num)
                        for i in ids.tolist()])                           # (n, feat_num)
    H, W = inst.shape[-2:]
    features = rows[inverse].reshape(H, W, feat_num).permute(2, 0, 1)     # (feat_num, H, W)
    return features.unsqueeze(0).contiguous().to(inst.device)


def write_feature_table(file, table):
    """A feature table as ``.npz`` of plain arrays to a path or file object: ``ids`` (N,) int64
    and ``features`` (N, feat_num) float32, row i the vector of instance ids[i]."""
    ids = sorted(table)
    np.savez(file, ids=np.array(ids, dtype=np.int64),
             features=np.stack([np.asarray(torch.as_tensor(table[i]).cpu(), dtype=np.float32)
                                for i in ids]))


def load_feature_table(path, feat_num):
    """{instance id: (feat_num,) tensor} from ``write_feature_table``'s file; a file that is not
    one, or whose vectors are not ``feat_num`` long, is one UserError."""
    try:
        with np.load(path, allow_pickle=False) as f:
            ids, features = f["ids"], f["features"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"--features {path}: not a feature table saved by the editor "
                        f"({runs.error_line(err) or type(err).__name__})") from None
    if features.ndim != 2 or features.shape != (len(ids), feat_num):
        raise UserError(f"--features {path}: {features.shape} features for {len(ids)} "
                        f"instances, but this model reads {feat_num} per instance")
    return {int(i): torch.from_numpy(v) for i, v in zip(ids, features)}


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
              clusters=None, seed=0, feature_table=None):
    """Synthesize one label map from files and save it to ``out_path``; the instance features
    come from ``feature_table`` ({id: vector}, an edit saved by the editor) when given."""
    label, inst, image = load_inputs(label_path, inst_path, image_path, model.opt)
    note_unseen_classes(model, label, set())
    if feature_table is not None:
        features = table_feature_map(inst, feature_table, model.opt.feat_num)
    else:
        source = feature_source or ("encoded" if image is not None else "clusters")
        features = instance_feature_map(model, runs.feature_regions(model.opt, label, inst),
                                        source, image, clusters,
                                        torch.Generator().manual_seed(seed))
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
                        f"{runs.OFFICIAL_DATAROOT} if it exists, else {runs.SYNTHETIC_CITY} if "
                        "it exists")
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
    g.add_argument("--features", default=None,
                   help="with --label: the instance features of an edit saved by the editor "
                        "(STEM_features.npz from manipulate.py edit)")
    add_trust_pickle(g)


def add_output_options(p):
    g = p.add_argument_group("output")
    g.add_argument("--results_dir", default="./results",
                   help="pages go to results_dir/name/<phase>_<which_epoch>/")
    g.add_argument("--out", default=None, help="with --label: the output PNG")
    g.add_argument("--export_onnx", default=None, metavar="FILE",
                   help="write G as ONNX (dynamic height and width) instead of synthesizing, "
                        "checked against PyTorch with onnxruntime on the first label map of the "
                        "split (or --label) and on a crop of it; needs onnx, onnxruntime, "
                        "onnxscript")
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


def add_trust_pickle(group):
    group.add_argument("--trust_pickle", action="store_true",
                       help="read NVIDIA's features_clustered_010.npy, a pickle (which can run "
                            "code when read): only for a file from a source you trust; it is "
                            f"converted once to {CLUSTER_FILE}")


def add_official_options(parser):
    g = parser.add_argument_group("NVIDIA's generators and run folders")
    g.add_argument("--official_checkpoint", default=None,
                   help="NVIDIA's latest_net_G.pth instead of a run of ours (a whole official run "
                        "folder loads with --name, as ours do); --netG and --ngf: read from its "
                        "shapes unless given")
    g.add_argument("--label_nc", type=runs.whole(0), default=argparse.SUPPRESS,
                   help="number of label ids: the model's own (an official checkpoint or an "
                        "official run folder without opt.txt: 35)")
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
        for root, what in ((runs.OFFICIAL_DATAROOT, "the official default"),
                           (runs.SYNTHETIC_CITY, "the synthetic city")):
            if Path(root).is_dir():
                opt.dataroot = root
                print(f"No --dataroot: synthesizing from {root}, {what}")
                break


def run(opt):
    """The command: what to read and where to write are checked first, then G is loaded and
    runs over one label map (--label) or a split (--dataroot), or is exported (--export_onnx)."""
    out_dir = check_command(opt)
    model, run_dir = open_generator(opt)
    if opt.verbose:
        runs.describe_networks({"G": model.G, "E": model.E})
    source = opt.feature_source or default_feature_source(model, opt)
    clusters = table = None
    if opt.features is not None:
        if not model.opt.instance_feat:
            raise UserError(f"--features {opt.features}: this model was trained without "
                            "--instance_feat and reads no instance features; leave it out")
        table = load_feature_table(opt.features, model.opt.feat_num)
    elif runs.uses_features(model.opt) and source in (None, "clusters"):
        cluster_file = cluster_file_to_read(
            opt.cluster_file, run_dir, model, opt.trust_pickle,
            needed=source == "clusters" or opt.cluster_file is not None)
        if source == "clusters" or opt.cluster_file or Path(cluster_file).is_file():
            clusters = load_clusters(cluster_file, model.opt.feat_num, model.opt.label_nc,
                                     model_id(model), opt.allow_other_clusters)
    if opt.export_onnx:
        export_onnx(opt, model, clusters)
        return
    if opt.label is not None:
        run_files(model, opt.label, opt.inst, opt.image, opt.out, source, clusters, opt.seed,
                  table)
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


def model_id(model):
    """The fingerprint of the model's encoder, which a cluster file is made for (None without
    one: an official run trained with --load_features saved no E)."""
    return runs.fingerprint(model.E) if model.E is not None else None


def cluster_file_to_read(given, run_dir, model, trust_pickle, needed=True):
    """The .npz cluster file a command reads: --cluster_file, else clusters.npz in the run folder.
    NVIDIA's pickled cluster file (given as .npy, or features_clustered_010.npy in a run folder
    without clusters.npz) is converted once to an .npz beside it, with --trust_pickle only; when
    the clusters are not ``needed`` (E encodes the photos) and not trusted, it is left alone."""
    path = Path(given) if given else Path(run_dir) / CLUSTER_FILE
    pickled = path if path.suffix == ".npy" else None
    if given is None and not path.is_file():
        pickled = Path(run_dir) / official_folder.PICKLED_CLUSTERS
    if pickled is None or not pickled.is_file() or not (needed or trust_pickle):
        return path
    npz = pickled.with_suffix(".npz") if given else path
    clusters = official_folder.read_pickled_clusters(pickled, trust_pickle, model.opt.feat_num)
    runs.check_output_folder(npz.parent, "--cluster_file")
    save_clusters(npz, clusters, model.opt.feat_num, model.opt.label_nc, model_id=model_id(model))
    print(f"converted NVIDIA's {pickled} to {npz} ({len(clusters)} classes); later commands "
          "read it without --trust_pickle")
    return npz


def export_onnx(opt, model, clusters):
    """--export_onnx FILE: G on the CPU, exported and checked on a real label map (the first of
    the split, or --label) and on a crop of it, with the times of both runtimes."""
    import onnx_export

    runs.check_output_folder(Path(opt.export_onnx).parent, "--export_onnx")
    if opt.label is not None:
        label, inst, image = load_inputs(opt.label, opt.inst, opt.image, model.opt)
    else:
        item = inference_dataset(model.opt, opt.dataroot, opt.phase)[0]
        label, inst = item["label"][None], item["inst"][None]
        image = item["image"][None] if item["has_image"] else None
    model = _ready(model.G, model.E, model.opt, "cpu", False, model.source)
    x = data.generator_input(label, inst, model.opt.label_nc, model.opt.no_instance)
    features = instance_feature_map(
        model, runs.feature_regions(model.opt, label, inst),
        opt.feature_source or ("encoded" if image is not None else "clusters"), image, clusters,
        torch.Generator().manual_seed(opt.seed))
    if features is not None:
        x = torch.cat([x, features], dim=1)
    try:
        seconds = onnx_export.export(model.G, x, opt.export_onnx)
        checks = onnx_export.check(opt.export_onnx, model.G, [
            x, onnx_export.second_size(x, runs.size_multiple(model.opt))])
    except onnx_export.ExportFailed as err:
        raise UserError(str(err)) from None
    print(f"wrote {opt.export_onnx} in {seconds:.1f} s: input 'x' (B, {x.shape[1]}, H, W), G's "
          "input (one-hot labels, boundary map, features), output 'image' (B, 3, H, W) in [-1, 1]")
    for c in checks:
        print(f"  {c['size']}: max |ONNX Runtime - PyTorch| {c['max_abs_diff']:.2g} (tolerance "
              f"{onnx_export.TOLERANCE:g}); {c['onnxruntime_s'] * 1000:.1f} ms ONNX Runtime, "
              f"{c['pytorch_s'] * 1000:.1f} ms PyTorch (CPU, fastest of 5)")


def check_command(opt):
    """The inputs named and the outputs writable, before any work; returns the results folder
    of a split (None for one label map)."""
    if opt.official_checkpoint is None and opt.name is None:
        raise UserError("--name: which run to load (checkpoints_dir/name/latest.pt), or "
                        "--official_checkpoint PATH")
    if opt.features is not None and (opt.label is None or opt.inst is None
                                     or opt.feature_source is not None):
        raise UserError("--features is the feature table of one edited map: use it with --label "
                        "and --inst, and without --feature_source")
    if opt.label is not None:
        if opt.export_onnx:
            return None
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
    """(the model, the folder of its run or file), with --loadSize / --resize_or_crop where the
    command has them."""
    device = runs.pick_device(opt.device)
    given = runs.given_architecture(opt)
    if opt.official_checkpoint:
        run_dir = Path(opt.official_checkpoint).parent
        model = load_official_model(opt.official_checkpoint, given.get("netG"), given.get("ngf"),
                                    given.get("label_nc", 35), device=device, amp=opt.amp)
    else:
        run_dir = Path(opt.checkpoints_dir) / opt.name
        model = load_run(run_dir, opt.which_epoch, device, opt.amp, given.get("label_nc", 35))
        runs.check_architecture(given, model.opt, model.source)
    for option in ("loadSize", "fineSize", "resize_or_crop"):
        if getattr(opt, option, None) is not None:
            setattr(model.opt, option, getattr(opt, option))
    if model.opt.resize_or_crop not in data.RESIZE_OR_CROP:
        raise UserError(f"{model.source}: resize_or_crop {model.opt.resize_or_crop} is not one "
                        f"this code reads ({', '.join(data.RESIZE_OR_CROP)}); pass "
                        "--resize_or_crop")
    return model, run_dir


if __name__ == "__main__":
    main()
