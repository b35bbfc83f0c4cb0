r"""Semantic manipulation with instance-level features (paper sec. 3.4): encode, cluster, restyle.

The generator of a model trained with ``--instance_feat`` reads, besides the label map, a
low-dimensional feature map F in which every object instance holds one vector: the output of the
encoder E on the real photo, averaged over the instance (``networks.Encoder``). Sec. 3.4 turns this
into a tool: after training, run E over all training images, collect one feature per instance, and
cluster the features of each class with K-means,

.. math:: \{\mu^c_1, .., \mu^c_K\} = \arg\min_{\mu} \sum_{i:\, c(i) = c}
          \min_k \lVert E(x, I)_i - \mu_k \rVert^2 ,

so that each centre \mu^c_k encodes one appearance mode of class c (a red car, a grey road). At
test time a user restyles one object by writing another centre into its pixels of F and running
G again; every other instance keeps its feature, so only that object should change.

What the paper leaves open, decided as in the official ``encode_features.py``: stuff classes (road,
sky) count as one instance per image, since their instance id is the label id; an instance is
clustered only when it covers more than half of a 1/32 block of its image (pixels / (H W / 32)
> 0.5: more than 8192 pixels at 1024x512, 128 at 128x64), so slivers of occluded objects do not
make modes; K = 10 per class (sec. 4), fewer when a class has fewer instances. The centres go to
an ``.npz`` of plain arrays (``infer.save_clusters``) where the official code pickled a dict into
an ``.npy``.

Usage (``python manipulate.py COMMAND --help``)::

    python manipulate.py encode  --name NAME --dataroot ROOT     # E + K-means -> clusters.npz
    python manipulate.py restyle --name NAME --dataroot ROOT --index 0 --instance car:0 --cluster 3
    python manipulate.py gallery --name NAME --dataroot ROOT --index 0 --instance car:0
    python manipulate.py restyle --name NAME --dataroot ROOT --index 0 --list
    python manipulate.py edit    --name NAME --dataroot ROOT     # the editor: a local web page
    python manipulate.py precompute --name NAME --dataroot ROOT  # E -> ROOT/train_feat/, for
                                                                 # train.py --load_features

How well the clusters find the true appearance modes is measured on the synthetic city, whose
styles are known: ``python synthetic_city.py evaluate``.
"""

import argparse
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import data
import infer
import runs
from runs import UserError

N_CLUSTERS = 10   # K per class: the paper's (sec. 4) and the official encode_features.py's
MIN_AREA = 0.5    # keep instances covering more than half of a 1/32 block of the image (official)
BLOCK_NUM = 32


# ---------------------------------------------------------------------------------------------
# K-means (sec. 3.4)
# ---------------------------------------------------------------------------------------------

class KMeansResult(NamedTuple):
    centers: torch.Tensor     # (K, D) float64
    assignment: torch.Tensor  # (N,) int64, the index of each point's centre
    inertia: float            # sum of squared distances of the points to their centres


def kmeans(x, k, generator=None, n_init=4, max_iter=300):
    r"""K-means of the rows of ``x`` (N, D): Lloyd's algorithm from k-means++ seeds.

    .. math:: \min_{\mu_1..\mu_K} \sum_{i=1}^{N} \min_k \lVert x_i - \mu_k \rVert^2

    Each of ``n_init`` restarts seeds K centres with greedy k-means++ (Arthur & Vassilvitskii
    2007; each new centre is the best of 2 + ln K candidates drawn with probability proportional
    to the squared distance to the nearest chosen centre, as scikit-learn, which the official code
    calls, does), then alternates assigning points to their nearest centre and moving each centre
    to the mean of its points until no assignment changes. The restart with the lowest inertia is
    kept. K is lowered to the number of distinct points when there are fewer. All randomness
    comes from ``generator`` (a CPU ``torch.Generator``), so a seed fixes the result. Runs on the
    CPU in float64: the inputs are a few thousand low-dimensional instance features.
    """
    x = x.detach().to("cpu", torch.float64)
    k = min(k, torch.unique(x, dim=0).shape[0])
    best = None
    for _ in range(n_init):
        result = lloyd(x, kmeans_plus_plus(x, k, generator), max_iter)
        if best is None or result.inertia < best.inertia:
            best = result
    return best


def kmeans_plus_plus(x, k, generator=None):
    """Greedy k-means++ seeding: (N, D) points -> (k, D) centres; k <= the distinct points."""
    n_trials = 2 + int(math.log(k))
    centers = x[torch.randint(len(x), (1,), generator=generator)]  # the first one: uniform
    d2 = squared_distances(x, centers)[:, 0]  # (N,) to the nearest chosen centre
    for _ in range(1, k):
        # Some d2 > 0 while fewer than k distinct points are chosen, so the weights are valid.
        candidates = torch.multinomial(d2 / d2.sum(), n_trials, replacement=True,
                                       generator=generator)
        d2_if_chosen = torch.minimum(d2, squared_distances(x, x[candidates]).T)  # (trials, N)
        best = d2_if_chosen.sum(dim=1).argmin()
        centers = torch.cat([centers, x[candidates[best]].unsqueeze(0)])
        d2 = d2_if_chosen[best]
    return centers


def lloyd(x, centers, max_iter=300):
    """Lloyd iterations from ``centers`` (K, D) until the assignment of ``x`` (N, D) is stable.

    A centre left without points jumps to the point farthest from its own centre (as
    scikit-learn), so K clusters come back.
    """
    k = len(centers)
    assignment = None
    for _ in range(max_iter):
        d2 = squared_distances(x, centers)  # (N, K)
        nearest = d2.argmin(dim=1)
        if assignment is not None and torch.equal(nearest, assignment):
            break
        assignment = nearest
        counts = torch.bincount(assignment, minlength=k)  # (K,)
        sums = torch.zeros_like(centers).index_add_(0, assignment, x)
        centers = sums / counts.clamp(min=1).unsqueeze(1)
        empty = (counts == 0).nonzero()[:, 0]
        if len(empty):
            own = d2.gather(1, assignment.unsqueeze(1))[:, 0]  # (N,) to the point's own centre
            centers[empty] = x[own.topk(len(empty)).indices]
    d2, assignment = squared_distances(x, centers).min(dim=1)
    return KMeansResult(centers, assignment, float(d2.sum()))


def squared_distances(x, centers):
    """(N, D), (K, D) -> (N, K) squared Euclidean distances, summed exactly (no x^2 - 2xy + y^2,
    whose cancellation would make nearly equal distances, and so assignments, noisy)."""
    return (x.unsqueeze(1) - centers.unsqueeze(0)).pow(2).sum(dim=-1)


# ---------------------------------------------------------------------------------------------
# Instance features of a split, and K-means per class
# ---------------------------------------------------------------------------------------------

class Instances(NamedTuple):
    """One row per instance of a split: which image and instance, its class, its E feature and
    its size. ``area`` is the pixel count over a 1/32 block of its image, the official measure."""
    stems: list                # image stem of each instance
    ids: torch.Tensor          # (N,) instance ids
    classes: torch.Tensor      # (N,) label ids
    features: torch.Tensor     # (N, feat_num) float32
    area: torch.Tensor         # (N,) pixels / (H W // 32)


def instance_vectors(feature_map, inst):
    """(1, C, H, W) instance-pooled feature map, (1, 1, H, W) ids -> (ids (n,), features (n, C),
    pixel counts (n,)), one row per instance in increasing id order. E's output is constant inside
    an instance; its mean is taken (the official code reads one pixel), which is the same value."""
    inst = inst.to(feature_map.device)
    ids, index, counts = torch.unique(inst.reshape(-1), return_inverse=True, return_counts=True)
    values = feature_map[0].reshape(feature_map.shape[1], -1).T.float()  # (H W, C)
    sums = torch.zeros(len(ids), values.shape[1], device=values.device).index_add_(0, index, values)
    return ids.cpu(), (sums / counts.unsqueeze(1)).cpu(), counts.cpu()


def encode_split(model, dataroot, phase="train", how_many=None):
    """Run E over every (photo, instance map) of ``dataroot``'s ``phase`` split, at the size G
    is run at test time; return every instance's feature as ``Instances``."""
    require_encoder(model)
    dataset = infer.inference_dataset(model.opt, dataroot, phase)
    stems, ids, features, area = [], [], [], []
    with torch.inference_mode():
        for i in range(len(dataset) if how_many is None else min(how_many, len(dataset))):
            item = dataset[i]
            if not item["has_image"]:
                raise UserError(f"--dataroot {dataroot}: the {phase} split has no photos, and E "
                                "needs them; use a split with photos")
            inst = runs.feature_regions(model.opt, item["label"], item["inst"]).unsqueeze(0)
            with runs.autocast(model.device, model.amp):
                feature_map = model.E(item["image"].unsqueeze(0).to(model.device),
                                      inst.to(model.device))
            i_ids, i_features, i_pixels = instance_vectors(feature_map, inst)
            H, W = inst.shape[-2:]
            stems += [dataset.stems[i]] * len(i_ids)
            ids.append(i_ids)
            features.append(i_features)
            area.append(i_pixels.double() / (H * W // BLOCK_NUM))
    ids = torch.cat(ids)
    return Instances(stems, ids, instance_classes(ids), torch.cat(features), torch.cat(area))


def instance_classes(ids):
    """``data.instance_class`` on a tensor of ids: id // 1000 for ids >= 1000, else the id."""
    return torch.where(ids >= 1000, ids // 1000, ids)


def cluster_classes(instances, n_clusters=N_CLUSTERS, min_area=MIN_AREA, seed=0):
    """K-means per class over the instances larger than ``min_area`` (sec. 3.4, official
    encode_features.py): K = ``n_clusters``, fewer when a class has fewer (distinct) instances.
    Returns ({class: (K, feat_num) centres}, {class: (K,) instances per cluster},
    {class: number of instances kept}). Classes are clustered in increasing order from one
    generator seeded with ``seed``, so the file is reproducible."""
    generator = torch.Generator().manual_seed(seed)
    kept = instances.area > min_area
    centers, counts, n_kept = {}, {}, {}
    for c in torch.unique(instances.classes).tolist():
        x = instances.features[kept & (instances.classes == c)]
        n_kept[c] = len(x)
        if len(x) == 0:
            continue
        result = kmeans(x, n_clusters, generator)
        centers[c] = result.centers.float()
        counts[c] = torch.bincount(result.assignment, minlength=len(result.centers))
    return centers, counts, n_kept


def nearest_cluster(features, centers):
    """(N, D) features, (K, D) centres -> (N,) index of the nearest centre."""
    return squared_distances(features.double(), centers.double()).argmin(dim=1)


# ---------------------------------------------------------------------------------------------
# Choosing an instance
# ---------------------------------------------------------------------------------------------

def list_instances(inst):
    """The instances of a (.., H, W) instance map as dicts {id, class, name, pixels}, by id."""
    ids, counts = torch.unique(inst.reshape(-1).cpu(), return_counts=True)
    return [{"id": i, "class": c, "name": data.class_name(c), "pixels": n}
            for i, c, n in zip(ids.tolist(), instance_classes(ids).tolist(), counts.tolist())]


def describe_instances(inst):
    """One line: '7 road 2301 px, 26000 car 190 px, ...'."""
    return ", ".join(f"{d['id']} {d['name']} {d['pixels']} px" for d in list_instances(inst))


def select_instance(inst, instance_id=None, instance=None, at=None, where="the map"):
    """The id of one instance of ``inst`` (.., H, W), chosen in exactly one way:

    * ``instance_id``: the id itself (26001 is the second car in Cityscapes numbering);
    * ``instance``: ``'car:2'``, a class name (or label id) and the 0-based index among that
      class's instances of this map, in increasing id order;
    * ``at``: an (x, y) pixel, in the coordinates of the map as synthesized (the command line's
      --at is in the file's, see ``parse_at``).

    A choice that does not exist raises UserError naming what the map holds (``where``).
    """
    if sum(v is not None for v in (instance_id, instance, at)) != 1:
        raise UserError("choose the instance one way: --instance_id ID, --instance CLASS:INDEX "
                        "or --at X,Y (--list shows the instances)")
    present = list_instances(inst)
    if instance_id is not None:
        if instance_id not in [d["id"] for d in present]:
            raise UserError(f"--instance_id {instance_id}: no such instance in {where}; it has "
                            f"{describe_instances(inst)}")
        return instance_id
    if at is not None:
        x, y = at
        H, W = inst.shape[-2:]
        if not (0 <= x < W and 0 <= y < H):
            raise UserError(f"--at {x},{y}: outside the {W}x{H} map of {where}")
        return int(inst.reshape(H, W)[y, x])
    name, _, index = instance.rpartition(":")
    if not name or not index.isdigit():
        raise UserError(f"--instance {instance}: write CLASS:INDEX, such as car:0")
    c = class_id(name)
    of_class = [d["id"] for d in present if d["class"] == c]
    if int(index) >= len(of_class):
        raise UserError(f"--instance {instance}: {where} has {len(of_class)} instance(s) of "
                        f"class {c} ({data.class_name(c)}); it has {describe_instances(inst)}")
    return of_class[int(index)]


def class_id(name):
    """A label id from a Cityscapes class name ('car') or a number ('26')."""
    if name.isdigit():
        return int(name)
    names = [n for n, _ in data.CITYSCAPES_CLASSES]
    if name not in names:
        raise UserError(f"unknown class {name!r}: use a label id or a Cityscapes class name "
                        f"({', '.join(sorted(set(names)))})")
    return names.index(name)


# ---------------------------------------------------------------------------------------------
# Restyling one instance
# ---------------------------------------------------------------------------------------------

def set_instance_feature(features, inst, instance_id, value):
    """F with instance ``instance_id``'s pixels set to ``value`` (feat_num,); others untouched.
    (B, feat_num, H, W), (B, 1, H, W) -> (B, feat_num, H, W)."""
    mask = inst.to(features.device) == instance_id  # (B, 1, H, W), broadcast over features
    return torch.where(mask, value.to(features).reshape(1, -1, 1, 1), features)


def restyle(model, label, inst, features, instance_id, value):
    """G before and after writing ``value`` into one instance's features:
    ((1, 3, H, W) before, (1, 3, H, W) after), both in [-1, 1]."""
    before = infer.synthesize(model, label, inst, features)
    after = infer.synthesize(model, label, inst,
                             set_instance_feature(features, inst, instance_id, value))
    return before, after


def change_inside_outside(before, after, mask, near=8):
    """Mean absolute change, in 8-bit levels (0..255) averaged over RGB, inside the instance
    ``mask`` (1, 1, H, W) bool, outside it, and outside split into the ring within ``near``
    pixels of the instance and the rest: how far G carries the change (its convolutions near
    the object; its instance normalisation, whose statistics span the whole image, everywhere)."""
    change = (after - before).abs().mean(dim=1, keepdim=True).cpu() * 127.5  # (1, 1, H, W)
    mask = mask.cpu()
    ring = F.max_pool2d(mask.float(), 2 * near + 1, stride=1, padding=near).bool() & ~mask

    def mean(m):
        return float(change[m].mean()) if m.any() else float("nan")

    return {"inside": mean(mask), "outside": mean(~mask), "near": mean(ring),
            "far": mean(~mask & ~ring)}


def farthest_cluster(features, inst, instance_id, centers):
    """Index of the centre (K, feat_num) farthest from the instance's current feature in F
    (1, feat_num, H, W): the most visible restyling."""
    current = features[0, :, inst[0, 0].to(features.device) == instance_id][:, 0].cpu()
    return int(squared_distances(current[None].double(), centers.double()).argmax())


def base_features(model, inst, image, clusters, seed):
    """F before any edit: E on the photo when there is one, else a seeded cluster draw."""
    source = "encoded" if image is not None else "clusters"
    return infer.instance_feature_map(model, inst, source, image, clusters,
                                      torch.Generator().manual_seed(seed))


def class_clusters(clusters, c, cluster_file):
    """The (K, feat_num) centres of class ``c``; a UserError names the classes that have some."""
    if c not in clusters:
        have = ", ".join(f"{k} {data.class_name(k)}" for k in sorted(clusters)) or "none"
        raise UserError(f"class {c} ({data.class_name(c)}) has no clusters in {cluster_file} "
                        f"(classes with clusters: {have}); choose an instance of another class")
    return clusters[c]


def gallery(model, label, inst, features, instance_id, centers):
    """One instance drawn with each of its class's K centres: a list of K (1, 3, H, W) images."""
    return [infer.synthesize(model, label, inst,
                             set_instance_feature(features, inst, instance_id, mu))
            for mu in centers]


def require_encoder(model):
    if model.E is None and model.opt.load_features:
        raise UserError(f"{model.source}: this checkpoint has no encoder E (it learned from "
                        "precomputed feature maps, --load_features): use the run whose E made "
                        "them")
    if model.E is None:
        raise UserError(f"{model.source}: this checkpoint has no encoder E (trained without "
                        "--instance_feat); train with --instance_feat to manipulate instances")


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------

def highlight(label, inst, instance_id, label_nc):
    """The colourised label map with the chosen instance lightened, as a PIL image."""
    picture = np.asarray(data.label_to_image(label[0], label_nc)).astype(np.float32)
    mask = (inst[0, 0] == instance_id).cpu().numpy()
    picture[mask] = 0.4 * picture[mask] + 0.6 * 255
    return Image.fromarray(picture.astype(np.uint8))


def grid(pictures, captions=None, columns=4):
    """PIL images of one size -> one grid image, with an optional caption on each."""
    W, H = pictures[0].size
    columns = min(columns, len(pictures))
    rows = math.ceil(len(pictures) / columns)
    sheet = Image.new("RGB", (columns * W, rows * H), "white")
    draw = ImageDraw.Draw(sheet)
    for i, picture in enumerate(pictures):
        x, y = (i % columns) * W, (i // columns) * H
        sheet.paste(picture, (x, y))
        if captions:
            box = draw.textbbox((x + 2, y + 1), captions[i])
            draw.rectangle(box, fill="black")
            draw.text((x + 2, y + 1), captions[i], fill="white")
    return sheet


def zoom(pictures, mask, margin=1.0, min_height=128):
    """Crop PIL images to the instance's bounding box grown by ``margin`` times its size on each
    side, enlarged (nearest) to at least ``min_height`` pixels: small objects become visible."""
    ys, xs = np.nonzero(mask)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    H, W = mask.shape
    box = (max(0, int(xs.min() - margin * w)), max(0, int(ys.min() - margin * h)),
           min(W, int(xs.max() + 1 + margin * w)), min(H, int(ys.max() + 1 + margin * h)))
    scale = max(1, math.ceil(min_height / (box[3] - box[1])))
    size = ((box[2] - box[0]) * scale, (box[3] - box[1]) * scale)
    return [p.crop(box).resize(size, Image.NEAREST) for p in pictures]


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def add_model_options(parser):
    """The run to load and its cluster file: shared by every command, here and in
    ``synthetic_city.py evaluate``."""
    g = runs.add_run_options(parser, seed_help="seed of K-means and of cluster draws")
    g.add_argument("--cluster_file", default=None,
                   help=f"K-means centres (default: checkpoints_dir/name/{infer.CLUSTER_FILE})")
    g.add_argument("--allow_other_clusters", action="store_true",
                   help="use a cluster file made for another model's encoder (refused otherwise)")
    infer.add_trust_pickle(g)


def add_map_options(parser):
    g = parser.add_argument_group("which map and which instance")
    g.add_argument("--label", default=None, help="a label map PNG")
    g.add_argument("--inst", default=None, help="its instance map PNG (16-bit ids)")
    g.add_argument("--image", default=None,
                   help="its photo: E gives the other instances' features (else a seeded "
                        "cluster draw)")
    g.add_argument("--dataroot", default=None, help="or a dataset root, with --phase, --index")
    g.add_argument("--phase", default="test", help="split of --dataroot")
    g.add_argument("--index", type=runs.whole(0), default=0, help="image number in the split")
    g.add_argument("--instance_id", type=runs.whole(0), default=None,
                   help="instance id, e.g. 26001")
    g.add_argument("--instance", default=None,
                   help="CLASS:INDEX, e.g. car:2, the third car of the map by increasing id")
    g.add_argument("--at", default=None,
                   help="X,Y: the instance under this pixel of the label map file (as an image "
                        "viewer shows it, before any resizing)")
    g.add_argument("--list", action="store_true",
                   help="print the map's instances (id, class, pixels) and stop")


def build_parser():
    p = runs.CommandLine(
        prog="manipulate.py",
        description="Semantic manipulation with instance features (pix2pixHD sec. 3.4): "
                    "encode + K-means, restyle one object, galleries, and the editor (Fig. 1).",
        epilog="restyle --list and gallery --list print the instances of a map (ids, class "
               "names, pixel counts). One-line errors exit with code 2.")
    commands = p.add_subparsers(dest="command", required=True)
    formatter = argparse.ArgumentDefaultsHelpFormatter

    q = commands.add_parser("encode", help="E over the training split, K-means per class",
                            formatter_class=formatter)
    add_model_options(q)
    g = q.add_argument_group("encoding")
    g.add_argument("--dataroot", required=True, help="dataset root of the training split")
    g.add_argument("--phase", default="train", help="split to encode")
    g.add_argument("--n_clusters", type=runs.whole(1), default=N_CLUSTERS,
                   help="K per class (paper: 10)")
    g.add_argument("--min_area", type=runs.real(0), default=MIN_AREA,
                   help="keep instances with pixels / (H W / 32) above this (official)")
    g.add_argument("--how_many", type=runs.whole(1), default=None,
                   help="encode only the first N images")

    q = commands.add_parser("precompute", help="E's feature maps of a split, for train.py "
                            "--load_features (the official precompute_feature_maps.py)",
                            formatter_class=formatter)
    add_model_options(q)
    g = q.add_argument_group("feature maps")
    g.add_argument("--dataroot", default="./datasets/cityscapes",
                   help="dataset root (the official default): maps go to <phase>_feat/")
    g.add_argument("--phase", default="train", help="split to encode")
    g.add_argument("--how_many", type=runs.whole(1), default=None,
                   help="only the first N images")

    q = commands.add_parser("restyle", help="redraw one instance with another cluster",
                            formatter_class=formatter)
    add_model_options(q)
    add_map_options(q)
    g = q.add_argument_group("output")
    g.add_argument("--cluster", type=runs.whole(0), default=None,
                   help="cluster index k of the instance's class (default: the centre farthest "
                        "from its current feature)")
    g.add_argument("--out", default=None,
                   help="before | after PNG (default results/NAME/restyle/STEM_ID_kK.png); the "
                        "changed-pixel mask goes beside it as *_mask.png")
    g.add_argument("--threshold", type=runs.real(0), default=32.0,
                   help="the mask marks pixels whose mean |change| exceeds this many 8-bit "
                        "levels")

    q = commands.add_parser("gallery", help="one instance with every cluster of its class",
                            formatter_class=formatter)
    add_model_options(q)
    add_map_options(q)
    g = q.add_argument_group("output")
    g.add_argument("--out", default=None,
                   help="grid PNG (default results/NAME/gallery/STEM_ID.png)")
    g.add_argument("--zoom", action="store_true", help="crop the tiles around the instance")
    g.add_argument("--columns", type=runs.whole(1), default=4, help="tiles per row")
    add_edit_command(commands, formatter)
    for q in commands.choices.values():
        runs.add_official_run_options(q)
    return p


def add_edit_command(commands, formatter):
    q = commands.add_parser("edit", help="the semantic editor: a local web page (Fig. 1)",
                            formatter_class=formatter)
    add_model_options(q)
    g = q.add_argument_group("the editor")
    g.add_argument("--dataroot", required=True, help="dataset root: its maps are edited, its "
                                                     "objects pasted")
    g.add_argument("--phase", default="test", help="split of --dataroot")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; another than 127.0.0.1 lets other machines in")
    g.add_argument("--port", type=runs.whole(0), default=8000, help="port (0: any free one)")
    g.add_argument("--out", default=None,
                   help="folder for saved edits (default results/NAME/edits)")
    g.add_argument("--latency", type=runs.whole(1), default=None,
                   help="instead of serving: time N edits of each kind on map 0 and print the "
                        "median edit-to-image milliseconds")


def main(argv=None):
    opt = build_parser().parse_args(argv)
    try:
        runs.resolve_run_options(opt, "manipulate.py")
        COMMANDS[opt.command](opt)
    except (UserError, data.DataError) as err:
        runs.fail("manipulate.py", err, 2, {"root": "--dataroot"})


def open_model(opt, need_encoder=True):
    if opt.name is None:
        raise UserError("--name: which run to load (checkpoints_dir/name/latest.pt)")
    run_dir = Path(opt.checkpoints_dir) / opt.name
    model = infer.load_run(run_dir, opt.which_epoch, runs.pick_device(opt.device), opt.amp)
    if getattr(opt, "verbose", False):  # synthetic_city.py evaluate has no --verbose
        runs.describe_networks({"G": model.G, "E": model.E})
    if need_encoder:
        require_encoder(model)
    if opt.command == "encode":
        return model, Path(opt.cluster_file or run_dir / infer.CLUSTER_FILE)
    return model, infer.cluster_file_to_read(opt.cluster_file, run_dir, model, opt.trust_pickle,
                                             needed=model.E is not None)


def read_clusters(opt, model, cluster_file, optional=False):
    """The run's cluster file, made for its E (unless --allow_other_clusters); with
    ``optional``, None for a run without E or without a cluster file."""
    if optional and (model.E is None or not (opt.cluster_file or cluster_file.is_file())):
        return None
    return infer.load_clusters(cluster_file, model.opt.feat_num, model.opt.label_nc,
                               runs.fingerprint(model.E), opt.allow_other_clusters)


def command_encode(opt):
    model, cluster_file = open_model(opt)
    runs.check_output_folder(cluster_file.parent, "--cluster_file")
    instances = encode_split(model, opt.dataroot, opt.phase, opt.how_many)
    centers, counts, n_kept = cluster_classes(instances, opt.n_clusters, opt.min_area, opt.seed)
    infer.save_clusters(cluster_file, centers, model.opt.feat_num, model.opt.label_nc, counts,
                        model_id=runs.fingerprint(model.E))
    print(f"{len(instances.ids)} instances in {len(set(instances.stems))} images; kept those "
          f"with more than {opt.min_area} of a 1/{BLOCK_NUM} block of the image:")
    for c in sorted(n_kept):
        total = int((instances.classes == c).sum())
        sizes = " ".join(str(n) for n in counts[c].tolist()) if c in counts else "-"
        print(f"  class {c:3d} {data.class_name(c):<16} {n_kept[c]:5d} of {total:5d} kept, "
              f"{len(centers.get(c, []))} clusters (sizes {sizes})")
    print(f"wrote {cluster_file}")


def command_precompute(opt):
    """E's features of every image of a split, as the official precompute_feature_maps.py: one
    RGB picture per label map in dataroot/<phase>_feat/, named by its stem, which train.py
    --load_features reads. E runs at the size the model was trained at; its map is brought to
    the label map file's own size with nearest neighbour (the official code doubles it, which
    is the same for its 1024x512 model of 2048x1024 Cityscapes)."""
    model, _ = open_model(opt)
    if model.opt.feat_num != 3:
        raise UserError(f"--name {opt.name}: E gives {model.opt.feat_num} features, and a feature "
                        "map is saved as an RGB picture of 3; precompute needs --feat_num 3")
    dataset = infer.inference_dataset(model.opt, opt.dataroot, opt.phase)
    out = Path(opt.dataroot) / f"{opt.phase}_feat"
    runs.check_output_folder(out, "--dataroot")
    n = len(dataset) if opt.how_many is None else min(opt.how_many, len(dataset))
    for i in range(n):
        item = dataset[i]
        if not item["has_image"]:
            raise UserError(f"--dataroot {opt.dataroot}: the {opt.phase} split has no photos, "
                            "and E needs them; use a split with photos")
        regions = runs.feature_regions(model.opt, item["label"], item["inst"])[None]
        with torch.inference_mode(), runs.autocast(model.device, model.amp):
            feature_map = model.E(item["image"][None].to(model.device), regions.to(model.device))
        W, H = Image.open(dataset.label_paths[i]).size
        feature_map = F.interpolate(feature_map.float(), size=(H, W), mode="nearest")
        out.mkdir(parents=True, exist_ok=True)
        path, tmp = out / f"{dataset.stems[i]}.png", out / f".{dataset.stems[i]}.png.tmp"
        data.tensor_to_image(feature_map[0]).save(tmp, format="PNG")
        os.replace(tmp, path)
    print(f"wrote {n} feature maps to {out}; train with --instance_feat --load_features")


def load_map(opt, model):
    """(label, inst, image or None, stem, label map file) of the map the command works on."""
    if opt.label is not None:
        if opt.inst is None:
            raise UserError("--label needs --inst: manipulation works on instances")
        label, inst, image = infer.load_inputs(opt.label, opt.inst, opt.image, model.opt)
        return label, inst, image, Path(opt.label).stem, opt.label
    if opt.dataroot is None:
        raise UserError("which map? pass --label L.png --inst I.png, or --dataroot ROOT --index i")
    dataset = infer.inference_dataset(model.opt, opt.dataroot, opt.phase)
    if not 0 <= opt.index < len(dataset):
        raise UserError(f"--index {opt.index}: the {opt.phase} split of {opt.dataroot} has "
                        f"{len(dataset)} images (0..{len(dataset) - 1})")
    item = dataset[opt.index]
    image = item["image"].unsqueeze(0) if item["has_image"] else None
    return (item["label"].unsqueeze(0), item["inst"].unsqueeze(0), image,
            dataset.stems[opt.index], item["path"])


def parse_at(text, label_file, opt):
    """--at X,Y, in the pixels of the label map file as the user sees it -> (x, y) in the map as
    synthesized, which may be resized (and cropped): the pixel that covers that point."""
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--at {text}: write X,Y in pixels, such as --at 120,64") from None
    W, H = Image.open(label_file).size
    if not (0 <= x < W and 0 <= y < H):
        raise UserError(f"--at {x},{y}: outside the {W}x{H} label map {label_file}")
    resize_to, box, final_size, _ = infer.inference_geometry((W, H), opt)
    u, v = (x + 0.5) * resize_to[0] / W, (y + 0.5) * resize_to[1] / H  # the pixel's centre
    if box is not None:
        u, v = u - box[0], v - box[1]
    w, h = (box[2] - box[0], box[3] - box[1]) if box is not None else resize_to
    if not (0 <= u < w and 0 <= v < h):
        raise UserError(f"--at {x},{y}: outside the central {w}x{h} crop of {label_file} that "
                        f"the model sees (--resize_or_crop {opt.resize_or_crop})")
    return int(u * final_size[0] / w), int(v * final_size[1] / h)


def prepare(opt):
    """Model, cluster file, map and chosen instance shared by restyle and gallery; None after
    --list."""
    if opt.out:
        runs.check_output_image(opt.out, "--out")
    else:
        runs.check_output_folder(Path("results") / str(opt.name), "--out (default: results/)")
    model, cluster_file = open_model(opt)
    if model.opt.label_feat:
        raise UserError(f"--name {opt.name} has one feature per class (--label_feat), not per "
                        "instance: draw its classes' clusters with infer.py --feature_source "
                        "clusters")
    label, inst, image, stem, label_file = load_map(opt, model)
    if opt.list:
        for d in list_instances(inst):
            print(f"{d['id']:6d}  {d['name']:<16} {d['pixels']:7d} px")
        return None
    at = parse_at(opt.at, label_file, model.opt) if opt.at else None
    instance_id = select_instance(inst, opt.instance_id, opt.instance, at, label_file)
    clusters = read_clusters(opt, model, cluster_file)
    c = data.instance_class(instance_id)
    centers = class_clusters(clusters, c, cluster_file)
    features = base_features(model, inst, image, clusters, opt.seed)
    return model, label, inst, stem, instance_id, c, centers, features


def command_restyle(opt):
    prepared = prepare(opt)
    if prepared is None:
        return
    model, label, inst, stem, instance_id, c, centers, features = prepared
    mask = inst == instance_id
    if opt.cluster is None:
        k = farthest_cluster(features, inst, instance_id, centers)
    elif not 0 <= opt.cluster < len(centers):
        raise UserError(f"--cluster {opt.cluster}: class {c} ({data.class_name(c)}) has "
                        f"{len(centers)} clusters (0..{len(centers) - 1})")
    else:
        k = opt.cluster
    with torch.inference_mode():
        before, after = restyle(model, label, inst, features, instance_id, centers[k])
    change = change_inside_outside(before, after, mask)
    out = Path(opt.out or Path("results") / opt.name / "restyle" / f"{stem}_{instance_id}_k{k}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    grid([data.tensor_to_image(before[0].cpu()), data.tensor_to_image(after[0].cpu())],
         columns=2).save(out)
    changed = (after - before).abs().mean(dim=1)[0].cpu() * 127.5 > opt.threshold  # (H, W)
    mask_path = out.with_name(out.stem + "_mask.png")
    Image.fromarray((changed.numpy() * 255).astype(np.uint8)).save(mask_path)
    print(f"instance {instance_id} ({data.class_name(c)}, {int(mask.sum())} px) -> cluster {k} of "
          f"{len(centers)}: mean |change| inside {change['inside']:.2f}, outside "
          f"{change['outside']:.2f} (within 8 px {change['near']:.2f}, beyond {change['far']:.2f}) "
          f"8-bit levels; {int(changed.sum())} pixels changed by more than {opt.threshold:g}")
    print(f"wrote {out} (before | after) and {mask_path}")


def command_gallery(opt):
    prepared = prepare(opt)
    if prepared is None:
        return
    model, label, inst, stem, instance_id, c, centers, features = prepared
    with torch.inference_mode():
        images = gallery(model, label, inst, features, instance_id, centers)
    pictures = [highlight(label, inst, instance_id, model.opt.label_nc)]
    pictures += [data.tensor_to_image(x[0].cpu()) for x in images]
    captions = [f"{instance_id} {data.class_name(c)}"]
    captions += [f"cluster {k}" for k in range(len(images))]
    if opt.zoom:
        pictures = zoom(pictures, (inst[0, 0] == instance_id).cpu().numpy())
    out = Path(opt.out or Path("results") / opt.name / "gallery" / f"{stem}_{instance_id}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    grid(pictures, captions, opt.columns).save(out)
    print(f"wrote {out}: instance {instance_id} ({data.class_name(c)}) with its class's "
          f"{len(centers)} clusters")


def command_edit(opt):
    """Serve the editor (editor.py) until Ctrl-C. A run without E edits labels only; one with E
    and no cluster file edits labels and pastes objects with their own features."""
    import editor  # the server's machinery, only for this command
    if opt.port > 65535:
        raise UserError(f"--port {opt.port}: ports are 0..65535 (0 picks a free one)")
    out = Path(opt.out or Path("results") / str(opt.name) / "edits")
    runs.check_output_folder(out, "--out")
    if not Path(opt.dataroot).is_dir():
        raise UserError(f"--dataroot {opt.dataroot}: no such folder; pass a dataset root")
    model, cluster_file = open_model(opt, need_encoder=False)
    clusters = read_clusters(opt, model, cluster_file, optional=True)
    session = editor.Editor(model, opt.dataroot, opt.phase, clusters, out, opt.seed)
    if opt.latency:
        H, W = session.state.label.shape
        times = editor.measure_latency(session, opt.latency)
        print(f"edit-to-image latency at {W}x{H} on {model.device} ({torch.get_num_threads()} "
              "threads), median of " f"{opt.latency}: " + ", ".join(
                  f"{kind} {ms:.0f} ms" for kind, ms in times.items()))
        return
    try:
        server = editor.serve(session, opt.host, opt.port, quiet=False)
    except OSError as err:
        raise UserError(f"--host {opt.host} --port {opt.port}: cannot listen there "
                        f"({err.strerror or err}); pass another --port (0 picks a free one)"
                        ) from None
    if session.styles_off():
        print(f"note: styles are off: {session.styles_off()}")
    print(f"editing {len(session.dataset)} maps of {opt.dataroot} ({opt.phase}); saved edits go "
          f"to {out}\nopen {editor.url(server)} in a browser (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()



COMMANDS = {"encode": command_encode, "precompute": command_precompute,
            "restyle": command_restyle, "gallery": command_gallery, "edit": command_edit}


if __name__ == "__main__":
    main()
