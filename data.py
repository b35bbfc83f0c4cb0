"""The data path of pix2pixHD (Wang et al., CVPR 2018): sec. 3.3 and all that comes before G.

pix2pixHD conditions the generator on a semantic label map s and, when instance maps are used, on
the boundary map of sec. 3.3 ("Using instance maps"): a binary map that is 1 wherever a pixel's
object instance id differs from one of its 4 neighbours. The generator input is

    G input = concat( one_hot(s) (label_nc channels),  B(I) (1 channel) [, E(x, I) (feat_num)] )

where I is the instance map and E(x, I) the instance features of sec. 3.4 (``networks.Encoder``).

What is inside, in reading order:

* ``PairedDataset``: (label map, instance map, photo) triplets from a dataset root in the
  pix2pixHD layout (``train_label/ train_inst/ train_img/``) or in the layout of the Cityscapes
  download (``gtFine/ leftImg8bit/``), detected automatically and paired by the Cityscapes stem
  ``city_sequence_frame``; ``label_nc 0`` reads RGB inputs (``train_A/ -> train_B/``). Preprocessing
  as the official code: scale the width to ``load_size``, optional random crop, random flip,
  nearest-neighbour for ids and bicubic for photos, photos in [-1, 1].
* ``one_hot``, ``instance_boundaries`` (the boundary map of sec. 3.3) and ``generator_input``.
* ``DataError``: every problem with a user's files, as one line naming the path and the fix.
* The Cityscapes classes and palette (``CITYSCAPES_CLASSES``, ``class_name``, ``colorize_label``),
  ``instance_class`` (the class of a Cityscapes instance id), ``tensor_to_image``,
  ``label_to_image``, ``save_image``.
* ``make_synthetic_city``: a small city rendered from its own label maps, with every instance's true
  appearance style recorded in ``styles.json``; the quick-start data and the ground truth against
  which the encoder + K-means of sec. 3.4 is checked. ``python data.py synth ROOT`` writes it.
* Helpers after that: file discovery and pairing (``pairing_stem``), reading and checking,
  the transforms, the scene renderer.

Label conventions (Cityscapes): label maps hold label ids 0..33 (``label_nc`` 35); instance maps
hold the label id for "stuff" pixels (road, sky, ...) and ``label_id * 1000 + k`` for the k-th
object of a class (cars, people). This file imports only torch, numpy and PIL.
"""

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class DataError(Exception):
    """A problem with the user's data, said in one line that names the path and the fix."""


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------

RESIZE_OR_CROP = ("none", "resize_and_crop", "scale_width", "scale_width_and_crop")


class PairedDataset(torch.utils.data.Dataset):
    """(label map s, instance map I, photo x) triplets of one split (``phase``) of a dataset root.

    Layouts, detected in this order (``label_nc`` > 0):
      pix2pixHD   ROOT/{phase}_label/, ROOT/{phase}_inst/, ROOT/{phase}_img/
      Cityscapes  ROOT/gtFine/{phase}/{city}/*_gtFine_labelIds.png, *_gtFine_instanceIds.png,
                  ROOT/leftImg8bit/{phase}/{city}/*_leftImg8bit.png
    and with ``label_nc`` 0 (RGB inputs, e.g. edges -> photo): ROOT/{phase}_A/ -> ROOT/{phase}_B/,
    instance maps from ROOT/{phase}_inst/ unless ``no_instance``.

    Files pair by stem, the file name without its extension and Cityscapes suffix
    (``aachen_000000_000019`` for ``aachen_000000_000019_gtFine_labelIds.png``, ``a`` for
    ``a.jpg``). The official code pairs the i-th file of each sorted folder, which silently
    mismatches a whole split when one photo is missing or extra. A split without photos (a test
    split) is allowed: its items have ``has_image`` False and an all-zero ``image``.

    Preprocessing (official ``get_params`` / ``get_transform``), the same random draw for s, I, x:
      1. ``scale_width``*: width -> ``load_size``, height -> int(load_size * H / W);
         ``resize_and_crop``: -> load_size x load_size; ``none``: kept;
      2. ``*_crop``: a fine_size x fine_size crop, random when ``is_train``, central otherwise;
      3. each side rounded to the nearest multiple of ``size_multiple`` (G's total downsampling).
         The official code does this for ``none`` only; we always do, as G needs it;
      4. a horizontal flip with probability 1/2 when ``is_train`` and not ``no_flip``.
    Label and instance maps are resized with nearest neighbour (ids must not blend), photos (and RGB
    inputs) bicubically. Random numbers come from torch's global generator, which a DataLoader
    seeds per worker.

    ``__getitem__`` -> dict:
      ``label``  (1, H, W) int64 ids, or (3, H, W) float in [-1, 1] when ``label_nc`` is 0;
      ``inst``   (1, H, W) int64 instance ids (zeros when ``no_instance``);
      ``image``  (3, H, W) float32 in [-1, 1], x / 127.5 - 1 (zeros when ``has_image`` is False);
      ``has_image`` bool;  ``path`` the label map's path.
    """

    def __init__(self, root, phase="train", label_nc=35, no_instance=False, load_size=1024,
                 fine_size=512, resize_or_crop="scale_width", no_flip=False, size_multiple=16,
                 is_train=True):
        if resize_or_crop not in RESIZE_OR_CROP:
            raise ValueError(f"resize_or_crop {resize_or_crop!r}: choose one of {RESIZE_OR_CROP}")
        self.root, self.phase, self.label_nc = Path(root), phase, label_nc
        self.no_instance, self.load_size, self.fine_size = no_instance, load_size, fine_size
        self.resize_or_crop, self.no_flip = resize_or_crop, no_flip
        self.size_multiple, self.is_train = size_multiple, is_train
        self.layout, labels, insts, images = discover(self.root, phase, label_nc, no_instance)
        self.stems = sorted(labels)
        self.label_paths = [labels[s] for s in self.stems]
        self.inst_paths = [insts[s] for s in self.stems] if insts is not None else None
        self.image_paths = [images[s] for s in self.stems] if images is not None else None

    def __len__(self):
        return len(self.stems)

    def __getitem__(self, index):
        label, inst, image = read_triplet(
            self.label_paths[index], self.inst_paths[index] if self.inst_paths else None,
            self.image_paths[index] if self.image_paths else None, self.label_nc,
            self.draw_geometry)
        H, W = label.shape[-2:]
        return {"label": label,
                "inst": inst if inst is not None else torch.zeros(1, H, W, dtype=torch.int64),
                "image": image if image is not None else torch.zeros(3, H, W),
                "has_image": image is not None, "path": str(self.label_paths[index])}

    def draw_geometry(self, size):
        """This dataset's random draw for an input of ``size``: see ``draw_geometry``."""
        return draw_geometry(size, self.resize_or_crop, self.load_size, self.fine_size,
                             self.size_multiple, self.is_train, self.no_flip)


def draw_geometry(size, resize_or_crop, load_size, fine_size, size_multiple, is_train=False,
                  no_flip=True):
    """The draw shared by s, I and x of one sample, for an input of ``size`` (W, H):
    (resize_to, crop_box or None, final_size, flip). Random crop and flip only when training."""
    W, H = size
    if resize_or_crop == "resize_and_crop":
        W, H = load_size, load_size
    elif resize_or_crop.startswith("scale_width"):
        W, H = load_size, int(load_size * H / W)  # int(), as the official scale_width
    resize_to = (W, H)
    box = None
    if resize_or_crop.endswith("crop"):
        w, h = min(fine_size, W), min(fine_size, H)  # never a crop past the border
        if is_train:
            x0 = int(torch.randint(0, W - w + 1, ()))
            y0 = int(torch.randint(0, H - h + 1, ()))
        else:
            x0, y0 = (W - w) // 2, (H - h) // 2
        box, W, H = (x0, y0, x0 + w, y0 + h), w, h
    m = size_multiple
    final_size = (max(m, int(round(W / m) * m)), max(m, int(round(H / m) * m)))
    flip = is_train and not no_flip and bool(torch.rand(()) < 0.5)
    return resize_to, box, final_size, flip


def read_triplet(label_path, inst_path, image_path, label_nc, geometry_of):
    """One sample from its files: (label, inst or None, image or None) as tensors, the label map
    (1, H, W) int64 ids (or (3, H, W) in [-1, 1] when ``label_nc`` is 0), the instance map
    (1, H, W) int64 ids, the photo (3, H, W) in [-1, 1]. Each file is read and checked, and all
    three get the same resize, crop and flip, ``geometry_of(label map size)``."""
    s = read_image(label_path)
    s = check_label_map(s, label_path, label_nc) if label_nc > 0 else s.convert("RGB")
    inst = image = None
    if inst_path is not None:
        inst = read_instance_map(inst_path)
        check_same_size(label_path, s, inst_path, inst)
    if image_path is not None:
        image = read_image(image_path).convert("RGB")
        check_same_size(label_path, s, image_path, image)

    geometry = geometry_of(s.size)
    if label_nc > 0:
        s = transform(s, geometry, Image.NEAREST)
        label = torch.from_numpy(np.asarray(s, dtype=np.int64)).unsqueeze(0)     # (1, H, W)
    else:
        # RGB inputs are pictures, resized like photos (official: same transform as x)
        label = to_tensor(transform(s, geometry, Image.BICUBIC))                 # (3, H, W)
    if inst is not None:
        inst = transform(inst, geometry, Image.NEAREST)
        inst = torch.from_numpy(np.asarray(inst, dtype=np.int64)).unsqueeze(0)   # (1, H, W)
    if image is not None:
        image = to_tensor(transform(image, geometry, Image.BICUBIC))             # (3, H, W)
    return label, inst, image


# ---------------------------------------------------------------------------------------------
# Generator input: one-hot label map + boundary map (sec. 3.3)
# ---------------------------------------------------------------------------------------------

def one_hot(label, label_nc):
    """One-hot label map: (B, 1, H, W) ids -> (B, label_nc, H, W) float, 1 in channel s[b, 0, y, x].

    An id >= label_nc is a ValueError naming the largest id (on CUDA the official ``scatter_`` dies
    with a device-side assert that names nothing).
    """
    label = label.long()
    smallest, largest = (int(v) for v in torch.aminmax(label))  # one host sync for both
    if largest >= label_nc:
        raise ValueError(f"label id {largest} >= label_nc {label_nc}: the label map holds ids up "
                         f"to {largest}; pass --label_nc {largest + 1} (or more)")
    if smallest < 0:
        raise ValueError(f"negative label id {smallest}: label maps hold ids 0..label_nc-1")
    B, _, H, W = label.shape
    return torch.zeros(B, label_nc, H, W, device=label.device).scatter_(1, label, 1.0)


def instance_boundaries(inst):
    """Boundary map B(I) of sec. 3.3: (B, 1, H, W) ids -> (B, 1, H, W) float.

        B[y, x] = 1  if  I[y, x] != I[y', x'] for a 4-neighbour (y', x'), else 0

    Both pixels of every horizontal or vertical change are marked, as in the official
    ``get_edges``: an edge is two pixels wide, one on each side of the boundary.
    """
    edge = torch.zeros_like(inst, dtype=torch.bool)
    horizontal = inst[..., :, 1:] != inst[..., :, :-1]  # (B, 1, H, W-1): differs from its left
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    vertical = inst[..., 1:, :] != inst[..., :-1, :]    # (B, 1, H-1, W): differs from above
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    return edge.float()


def generator_input(label, inst, label_nc, no_instance=False):
    """concat(one_hot(s), B(I)): (B, label_nc + 1, H, W); (B, label_nc, H, W) when ``no_instance``.

    With ``label_nc`` 0 the label is already a picture, (B, 3, H, W) in [-1, 1], and is used as is
    (with B(I) appended when instances are used). The instance features E(x, I) of sec. 3.4 are
    concatenated after this by the caller, which owns E.
    """
    s = one_hot(label, label_nc) if label_nc > 0 else label.float()
    if no_instance:
        return s
    return torch.cat([s, instance_boundaries(inst).to(s.dtype)], dim=1)


# ---------------------------------------------------------------------------------------------
# Cityscapes classes, palette, and tensor <-> image
# ---------------------------------------------------------------------------------------------

# (name, colour) by Cityscapes label id (cityscapesScripts labels.py). Id 34 does not exist in
# Cityscapes (-1 "license plate" is left out): with label_nc 35 its one-hot channel stays empty.
CITYSCAPES_CLASSES = [
    ("unlabeled", (0, 0, 0)), ("ego vehicle", (0, 0, 0)), ("rectification border", (0, 0, 0)),
    ("out of roi", (0, 0, 0)), ("static", (0, 0, 0)), ("dynamic", (111, 74, 0)),
    ("ground", (81, 0, 81)), ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)),
    ("parking", (250, 170, 160)), ("rail track", (230, 150, 140)), ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)), ("fence", (190, 153, 153)), ("guard rail", (180, 165, 180)),
    ("bridge", (150, 100, 100)), ("tunnel", (150, 120, 90)), ("pole", (153, 153, 153)),
    ("polegroup", (153, 153, 153)), ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)), ("vegetation", (107, 142, 35)), ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)), ("person", (220, 20, 60)), ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)), ("truck", (0, 0, 70)), ("bus", (0, 60, 100)), ("caravan", (0, 0, 90)),
    ("trailer", (0, 0, 110)), ("train", (0, 80, 100)), ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)), ("unused", (0, 0, 0)),
]

# the label ids the synthetic city uses
ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN = 7, 8, 11, 17, 20
VEGETATION, SKY, PERSON, CAR = 21, 23, 24, 26


def class_name(label_id):
    """Cityscapes name of a label id ('car' for 26); 'class N' outside the Cityscapes ids."""
    if 0 <= label_id < len(CITYSCAPES_CLASSES):
        return CITYSCAPES_CLASSES[label_id][0]
    return f"class {label_id}"


def instance_class(inst_id):
    """Label id of a Cityscapes instance id: 26003 (the 4th car) -> 26; stuff ids are label ids."""
    return inst_id // 1000 if inst_id >= 1000 else inst_id


def colorize_label(label):
    """Label ids (1, H, W) or (H, W) -> (3, H, W) uint8 in the Cityscapes colours. Ids beyond the
    Cityscapes set (other label sets) get fixed pseudo-random colours."""
    ids = label.long().cpu().reshape(label.shape[-2:])                          # (H, W)
    palette = [rgb for _, rgb in CITYSCAPES_CLASSES]
    extra = max(0, int(ids.max()) + 1 - len(palette))
    palette = torch.tensor(palette + np.random.default_rng(0).integers(0, 256, (extra, 3)).tolist(),
                           dtype=torch.uint8)
    return palette[ids].permute(2, 0, 1)                                        # (3, H, W)


def tensor_to_image(t):
    """(3, H, W) in [-1, 1] -> RGB PIL image; the exact inverse of the dataset's x / 127.5 - 1."""
    t = ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(t.permute(1, 2, 0).numpy())


def label_to_image(label, label_nc):
    """A label map as an RGB PIL image: (1, H, W) ids in the Cityscapes colours, or, when
    ``label_nc`` is 0, the (3, H, W) RGB input in [-1, 1] itself."""
    if label_nc == 0:
        return tensor_to_image(label)
    return Image.fromarray(colorize_label(label).permute(1, 2, 0).numpy())


def save_image(t, path):
    """Save a (3, H, W) tensor in [-1, 1] as an image file (parent folders made as needed)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tensor_to_image(t).save(path)


# ---------------------------------------------------------------------------------------------
# The synthetic city
# ---------------------------------------------------------------------------------------------

# The appearance modes of the synthetic city: for each class, styles far apart in RGB, so that an
# encoder + K-means (sec. 3.4) that works must find them. Stuff classes draw one style per image
# (their instance id is the label id), objects one per instance.
SYNTH_STYLES = {
    ROAD: {"asphalt": (70, 70, 76), "cobblestone": (150, 118, 88)},
    SIDEWALK: {"grey paving": (172, 172, 168), "red paving": (190, 128, 118)},
    BUILDING: {"concrete": (128, 130, 136), "brick": (160, 72, 52), "sandstone": (216, 196, 150)},
    POLE: {"grey": (105, 105, 110)},
    TRAFFIC_SIGN: {"blue": (30, 80, 205), "yellow": (236, 200, 30)},
    VEGETATION: {"summer": (58, 128, 42), "autumn": (178, 112, 32)},
    SKY: {"clear": (110, 165, 232), "overcast": (196, 202, 210)},
    PERSON: {"green": (40, 150, 60), "orange": (235, 130, 30), "purple": (120, 50, 165)},
    CAR: {"red": (205, 30, 30), "blue": (30, 70, 205), "white": (236, 236, 236),
          "black": (28, 28, 32)},
}


def make_synthetic_city(root, n_train=200, n_test=20, width=256, height=128, seed=0):
    """Write a synthetic city to ``root`` in the pix2pixHD layout; returns ``Path(root)``.

    Each scene: sky, buildings of varied heights with windows, trees, poles with traffic signs, a
    road in perspective between two sidewalks, cars (instances 26000 + k) on the road and people
    (24000 + k) on the sidewalks, labelled with Cityscapes ids. Photos are rendered from the labels
    with per-class textures, one style per image for stuff and one per object (``SYNTH_STYLES``).

    Files: {phase}_label/STEM_gtFine_labelIds.png (uint8), {phase}_inst/STEM_gtFine_instanceIds.png
    (16-bit), {phase}_img/STEM_leftImg8bit.png, with STEM = synth_000000_000019 (train) or
    synthtest_000000_000019 (test); and styles.json:
        {"styles": {"26": {"class": "car", "names": [...], "rgb": [[r, g, b], ...]}, ...},
         STEM: {"26000": "red", "7": "asphalt", ...}, ...}
    which gives every instance id of every instance map its true style.

    Deterministic: scene i of a split depends only on (seed, split, i), and the bytes written are
    the same on every run.
    """
    root = Path(root)
    styles = {"styles": {str(c): {"class": class_name(c), "names": list(table),
                                  "rgb": [list(rgb) for rgb in table.values()]}
                         for c, table in SYNTH_STYLES.items()}}
    for split, (phase, city, n) in enumerate([("train", "synth", n_train),
                                               ("test", "synthtest", n_test)]):
        folders = [root / f"{phase}_{kind}" for kind in ("label", "inst", "img")]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, split, i])
            label, inst, photo, instance_styles = render_scene(rng, width, height)
            stem = f"{city}_{i:06d}_000019"
            Image.fromarray(label).save(folders[0] / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(inst.astype(np.uint16)).save(  # 16-bit, as Cityscapes
                folders[1] / f"{stem}_gtFine_instanceIds.png")
            Image.fromarray(photo).save(folders[2] / f"{stem}_leftImg8bit.png")
            styles[stem] = {str(k): v for k, v in instance_styles.items()}
    (root / "styles.json").write_text(json.dumps(styles, indent=1))
    return root


# ---------------------------------------------------------------------------------------------
# Helpers: finding and pairing files
# ---------------------------------------------------------------------------------------------

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
CITYSCAPES_SUFFIX = re.compile(r"_(?:gtFine|gtCoarse)_[A-Za-z]+$|_leftImg8bit$")


def pairing_stem(path):
    """The file stem without its Cityscapes suffix: 'aachen_000000_000019' for
    aachen_000000_000019_gtFine_labelIds.png and _leftImg8bit.png; 'a' for a.png."""
    return CITYSCAPES_SUFFIX.sub("", Path(path).stem)


def discover(root, phase, label_nc, no_instance):
    """-> (layout, labels, insts, images): {stem: path} each; insts None when ``no_instance``,
    images None when the split has no photos. Raises DataError for every pairing problem."""
    if not root.is_dir():
        raise DataError(
            f"dataroot {root} does not exist: get Cityscapes from "
            "https://www.cityscapes-dataset.com (gtFine_trainvaltest.zip and "
            "leftImg8bit_trainvaltest.zip, unzipped into one folder) "
            "and pass that folder, or run `python train.py` with no --dataroot to train on the "
            "synthetic city")
    any_image = (None, None, None)  # folder layouts: every image file counts
    if label_nc == 0:
        layout, patterns = "image-to-image", any_image
        label_dir, inst_dir, image_dir = (root / f"{phase}_{k}" for k in ("A", "inst", "B"))
    elif (root / f"{phase}_label").is_dir():
        layout, patterns = "pix2pixHD", any_image
        label_dir, inst_dir, image_dir = (root / f"{phase}_{k}" for k in ("label", "inst", "img"))
    elif (root / "gtFine" / phase).is_dir():
        # labels and instance maps share gtFine/{phase}/{city}/; the name says which is which
        layout = "cityscapes"
        patterns = ("*_gtFine_labelIds.png", "*_gtFine_instanceIds.png", "*_leftImg8bit.png")
        label_dir = inst_dir = root / "gtFine" / phase
        image_dir = root / "leftImg8bit" / phase
    else:
        raise layout_error(root, phase, label_nc)
    if not label_dir.is_dir():
        raise layout_error(root, phase, label_nc)

    labels = index_folder(label_dir, patterns[0])
    if not labels:
        raise DataError(f"{label_dir} holds no label maps ({patterns[0] or 'image files'}); put "
                        "the label maps there or point --dataroot elsewhere")
    insts = None
    if not no_instance:
        insts = index_folder(inst_dir, patterns[1]) if inst_dir.is_dir() else {}
        check_all_paired(labels, insts, inst_dir, "instance map",
                         "add them, or pass --no_instance to train without instance maps")
    images = index_folder(image_dir, patterns[2]) if image_dir.is_dir() else {}
    if images:  # no photos at all is a split to synthesize from; some missing is a mistake
        check_all_paired(labels, images, image_dir, "photo",
                         "add the photos or remove those labels")
    return layout, labels, insts, images or None


def index_folder(folder, pattern):
    """{pairing stem: path} of the images under ``folder`` (recursively), matching ``pattern``
    when given; two files with one stem are an error (which one is meant?)."""
    if pattern:
        files = sorted(folder.rglob(pattern))
    else:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
    index = {}
    for path in files:
        stem = pairing_stem(path)
        if stem in index:
            raise DataError(f"{index[stem]} and {path} both pair as '{stem}': keep one of them")
        index[stem] = path
    return index


def check_all_paired(labels, others, folder, what, fix):
    missing = [stem for stem in labels if stem not in others]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(f"{len(missing)} of {len(labels)} label maps have no {what} in {folder} "
                        f"({shown}): {fix}")


def layout_error(root, phase, label_nc):
    if label_nc == 0:
        looked = f"{root / f'{phase}_A'}/ and {root / f'{phase}_B'}/ (label_nc 0: RGB inputs)"
        hint = (f"; {phase}_label/ is there: pass --label_nc 35 (or your label count) for ids"
                if (root / f"{phase}_label").is_dir() else "")
    else:
        looked = (f"{root / f'{phase}_label'}/ (pix2pixHD layout) and {root / 'gtFine' / phase}/ "
                  f"with {root / 'leftImg8bit' / phase}/ (Cityscapes download)")
        hint = (f"; {phase}_A/ is there: pass --label_nc 0 for RGB inputs"
                if (root / f"{phase}_A").is_dir() else "")
    present = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())[:8]
    return DataError(f"{root}: no '{phase}' split found: looked for {looked}; found "
                     f"{' '.join(present) or 'no folders'}{hint}; point --dataroot at the folder "
                     "that holds them")


# ---------------------------------------------------------------------------------------------
# Helpers: reading, checking and transforming images
# ---------------------------------------------------------------------------------------------

def read_image(path):
    """PIL image, fully decoded, or a DataError naming the file."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        reason = " ".join(str(err).split())  # one line
        raise DataError(f"{path}: cannot read this image ({reason}); replace or re-download "
                        "the file") from None
    return image


def check_label_map(image, path, label_nc):
    """A label map of ids < label_nc (mode L, P, I or I;16). A grey map saved as RGB is accepted;
    a colour-coded one (Cityscapes *_color.png) is explained."""
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image)[..., :3]
        if not (rgb == rgb[..., :1]).all():
            raise DataError(f"{path} is an RGB colour image where label ids are expected: use the "
                            "*_labelIds.png maps (not *_color.png), or --label_nc 0 for RGB inputs")
        image = image.getchannel(0)
    elif image.mode in ("LA", "PA"):  # grey or palette ids with an alpha channel: the ids
        image = image.getchannel(0)
    elif image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise DataError(f"{path}: a label map of PIL mode {image.mode} cannot hold label ids; save "
                        "it as an 8-bit or 16-bit greyscale PNG of ids 0..label_nc-1")
    largest = image.getextrema()[1]
    if largest >= label_nc:
        raise DataError(f"{path}: label id {largest} >= label_nc {label_nc}; pass --label_nc "
                        f"{largest + 1} (or more) if your label set has that many classes "
                        "(Cityscapes *_labelIds.png need 35)")
    return image


def read_instance_map(path):
    """Instance ids as a 32-bit PIL image (mode I), which PIL resizes and flips like any other."""
    ids = np.asarray(read_image(path))
    if ids.ndim != 2:
        raise DataError(f"{path} is a colour image where instance ids are expected: use the "
                        "*_instanceIds.png maps (16-bit ids), or pass --no_instance")
    return Image.fromarray(ids.astype(np.int32))


def check_same_size(label_path, label, other_path, other):
    if label.size != other.size:
        raise DataError(f"{label_path} is {label.size[0]}x{label.size[1]} but {other_path} is "
                        f"{other.size[0]}x{other.size[1]}: a label map and its "
                        "photo / instance map must be the same size; re-export one of them")


def transform(image, geometry, resample):
    """Apply a ``draw_geometry`` draw: resize, crop, round to the multiple, flip."""
    resize_to, box, final_size, flip = geometry
    if image.size != resize_to:
        image = image.resize(resize_to, resample)
    if box is not None:
        image = image.crop(box)
    if image.size != final_size:
        image = image.resize(final_size, resample)
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image


def to_tensor(image):
    """RGB PIL image -> (3, H, W) float32 in [-1, 1]: (x / 255 - 0.5) / 0.5, the official
    ToTensor + Normalize."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32))  # (H, W, 3)
    x = x.permute(2, 0, 1)                                       # (3, H, W)
    return (x / 255 - 0.5) / 0.5


# ---------------------------------------------------------------------------------------------
# Helpers: rendering one scene of the synthetic city
# ---------------------------------------------------------------------------------------------

def render_scene(rng, W, H):
    """One scene -> (label (H, W) uint8, inst (H, W) int32, photo (H, W, 3) uint8,
    {instance id: style name} for every id in ``inst``). Vectorised over pixels; the only Python
    loops are over the handful of buildings, trees, poles and objects."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)              # (H, W) pixel coordinates
    horizon = H * rng.uniform(0.42, 0.52)
    cx = W * rng.uniform(0.4, 0.6)                              # the road's vanishing point
    depth = np.clip((yy - horizon) / (H - horizon), 0, None)    # 0 at the horizon, 1 at the bottom

    def road_half_width(t):
        return W * (0.03 + 0.55 * t)

    # ---- stuff: sky, buildings, ground (road between sidewalks), trees, poles and signs
    label = np.full((H, W), SKY, np.uint8)
    widths = W * rng.uniform(0.08, 0.2, size=13)                 # 13 x 0.08 W > W: all columns
    rights = np.cumsum(widths)                                   # right edge of each building
    tops = horizon - H * rng.uniform(0.12, 0.4, size=len(widths))
    tops[rng.random(len(widths)) < 0.12] = horizon                # a gap between buildings
    column = np.searchsorted(rights, xx[0], side="right")       # (W,) building of each column
    lefts = rights[column] - widths[column]                      # (W,)
    building = (yy >= tops[column]) & (yy < horizon)
    label[building] = BUILDING
    ground = yy >= horizon
    label[ground] = SIDEWALK
    label[ground & (np.abs(xx - cx) < road_half_width(depth))] = ROAD
    for _ in range(rng.integers(1, 4)):                          # trees along the far kerbs
        rx, ry = W * rng.uniform(0.03, 0.07), H * rng.uniform(0.07, 0.14)
        tx, ty = W * rng.uniform(0, 1), horizon - ry - H * rng.uniform(0.0, 0.08)
        crown = ((xx - tx) / rx) ** 2 + ((yy - ty) / ry) ** 2 < 1
        trunk = (np.abs(xx - tx) < max(1.0, 0.12 * rx)) & (yy >= ty) & (yy < horizon + 0.2 * ry)
        label[crown | trunk] = VEGETATION                        # Cityscapes: trunks are vegetation
    for _ in range(rng.integers(1, 4)):                          # poles at the kerb, some signed
        t = rng.uniform(0.1, 0.8)
        bottom, height = horizon + t * (H - horizon), H * (0.25 + 0.35 * t)
        x = cx + rng.choice([-1, 1]) * (road_half_width(t) + W * 0.02 * (0.3 + t))
        w = max(1, round(1 + 3 * t))
        x0 = round(x - w / 2)
        label[(xx >= x0) & (xx < x0 + w) & (yy >= bottom - height) & (yy < bottom)] = POLE
        if rng.random() < 0.6:
            label[(np.abs(xx - (x0 + w / 2)) < 2.5 * w) & (yy >= bottom - height)
                  & (yy < bottom - height + 4 * w)] = TRAFFIC_SIGN
    stuff_styles = {c: rng.choice(list(SYNTH_STYLES[c])) for c in
                    (ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN, VEGETATION, SKY)}

    # ---- stuff photo: the style's colour per class, then a texture per class
    colour = np.zeros((256, 3), np.float32)
    for c, style in stuff_styles.items():
        colour[c] = np.add(SYNTH_STYLES[c][style], rng.uniform(-8, 8, 3))
    photo = colour[label]                                        # (H, W, 3)
    shade = np.ones((H, W), np.float32)
    sky = label == SKY
    if stuff_styles[SKY] == "clear":
        shade[sky] = (0.8 + 0.25 * yy / horizon)[sky]            # lighter towards the horizon
    else:
        shade[sky] = (1 + 0.08 * smooth_noise(rng, H, W, 16))[sky]  # clouds
    tone = rng.uniform(0.85, 1.1, len(widths))[column]           # (W,) one tone per building
    shade[building] = np.broadcast_to(tone, (H, W))[building]
    windows = (building & ((xx - lefts) % 8 >= 3) & ((xx - lefts) % 8 < 6)
               & ((yy - tops[column]) % 10 >= 4) & ((yy - tops[column]) % 10 < 8))
    road = label == ROAD
    if stuff_styles[ROAD] == "cobblestone":                      # stones of random brightness
        row = (yy // 4).astype(int)                              # stones 6 x 4 px, rows offset
        col = ((xx + 3 * (row % 2)) // 6).astype(int)
        stones = rng.uniform(0.85, 1.15, (row.max() + 1, col.max() + 1))[row, col]
        mortar = (yy % 4 == 0) | ((xx + 3 * (row % 2)) % 6 == 0)
        shade[road] = (stones * np.where(mortar, 0.85, 1.0))[road]
    else:                                                        # asphalt: a dashed centre line
        # dashes shorten with distance: 40 / (distance below the horizon) alternates parity
        dash = np.floor(40 / (yy - horizon + 4)) % 2 == 0
        dashes = (np.abs(xx - cx) < 0.5 + 1.5 * depth) & dash
        photo[road & dashes] = (220, 220, 215)
    sidewalk = label == SIDEWALK
    shade[sidewalk & ((yy % 6 == 0) | (xx % 10 == 0))] = 0.85   # paving joints
    foliage = label == VEGETATION
    shade[foliage] = (1 + 0.25 * smooth_noise(rng, H, W, 4))[foliage]
    photo = photo * shade[..., None]
    photo[windows] = (45, 55, 70)

    # ---- objects: cars on the road, people on the sidewalks, drawn far to near
    objects = []                                                 # (bottom, class, x0, w, h, style)
    for _ in range(rng.integers(2, 6)):
        t = rng.uniform(0.15, 1.0)
        w = W * (0.07 + 0.28 * t)
        xc = cx + rng.uniform(-0.7, 0.7) * road_half_width(t)
        objects.append((horizon + t * (H - horizon), CAR, xc - w / 2, w, 0.6 * w,
                        rng.choice(list(SYNTH_STYLES[CAR]))))
    for _ in range(rng.integers(1, 5)):
        t = rng.uniform(0.05, 0.9)
        h = H * (0.1 + 0.45 * t)
        kerb_distance = W * rng.uniform(0.03, 0.25) * (0.3 + t)
        xc = cx + rng.choice([-1, 1]) * (road_half_width(t) + kerb_distance)
        objects.append((horizon + t * (H - horizon), PERSON, xc - 0.19 * h, 0.38 * h, h,
                        rng.choice(list(SYNTH_STYLES[PERSON]))))
    objects = keep_mostly_visible(sorted(objects, key=lambda o: o[0]))
    inst = label.astype(np.int32)
    styles = {}
    count = {CAR: 0, PERSON: 0}
    for bottom, c, x0, w, h, style in objects:
        u, v = (xx - x0) / w, (yy - (bottom - h)) / h            # (H, W) coordinates in the box
        body_colour = np.add(SYNTH_STYLES[c][style], rng.uniform(-10, 10, 3))
        if c == CAR:
            parts = [(box(u, v, 0, 1, 0.4, 0.88) | box(u, v, 0.15, 0.85, 0, 0.4),
                      body_colour * (1.12 - 0.3 * v)[..., None]),         # lighter roof
                     (box(u, v, 0.22, 0.78, 0.08, 0.34), 0.2 * body_colour + (40, 46, 58)),  # glass
                     (box(u, v, 0.08, 0.28, 0.8, 1) | box(u, v, 0.72, 0.92, 0.8, 1), (22, 22, 22))]
        else:
            head = ((u - 0.5) / 0.22) ** 2 + ((v - 0.1) / 0.1) ** 2 < 1
            parts = [(head, (224, 180, 150)),
                     (box(u, v, 0.1, 0.9, 0.18, 0.62), body_colour * (1.05 - 0.2 * v)[..., None]),
                     (box(u, v, 0.2, 0.45, 0.62, 1) | box(u, v, 0.55, 0.8, 0.62, 1), (45, 45, 60))]
        mask = np.logical_or.reduce([m for m, _ in parts])
        if not mask.any():
            continue
        inst_id = c * 1000 + count[c]
        count[c] += 1
        label[mask], inst[mask] = c, inst_id
        for part, rgb in parts:                                  # rgb: (3,) or (H, W, 3)
            photo[part] = np.broadcast_to(rgb, photo.shape)[part]
        styles[inst_id] = str(style)

    # ---- film grain and the day's light; styles of what is left visible
    photo = photo + rng.normal(0, 4, (H, W, 1)) + rng.normal(0, 2, (H, W, 3))
    photo = np.clip(np.round(photo * rng.uniform(0.93, 1.07)), 0, 255).astype(np.uint8)
    present = np.unique(inst).tolist()
    styles.update({c: str(s) for c, s in stuff_styles.items() if c in present})
    return label, inst, photo, {k: styles[k] for k in present}


def box(u, v, u0, u1, v0, v1):
    """Pixels whose box coordinates (u, v) lie in [u0, u1) x [v0, v1)."""
    return (u >= u0) & (u < u1) & (v >= v0) & (v < v1)


def keep_mostly_visible(objects):
    """Drop objects (sorted far to near) whose box the nearer objects would hide by more than
    15%: every object keeps most of its body, so its pixels show its style."""
    kept = []
    for i, (bottom, c, x0, w, h, style) in enumerate(objects):
        hidden = 0.0
        for b2, _, x2, w2, h2, _ in objects[i + 1:]:
            dx = min(x0 + w, x2 + w2) - max(x0, x2)
            dy = min(bottom, b2) - max(bottom - h, b2 - h2)
            hidden += max(dx, 0) * max(dy, 0)
        if hidden <= 0.15 * w * h:
            kept.append(objects[i])
    return kept


def smooth_noise(rng, H, W, cell):
    """(H, W) low-frequency noise, about N(0, 1): a coarse grid of cells ``cell`` px wide,
    bilinearly upsampled."""
    coarse = rng.standard_normal((H // cell + 2, W // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((W, H), Image.BILINEAR))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description="pix2pixHD data tools")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("synth", help="write the synthetic city (pix2pixHD layout)")
    p.add_argument("root", help="folder to write (made if absent)")
    p.add_argument("--n_train", type=int, default=200, help="training scenes (default 200)")
    p.add_argument("--n_test", type=int, default=20, help="test scenes (default 20)")
    p.add_argument("--width", type=int, default=256, help="scene width in pixels (default 256)")
    p.add_argument("--height", type=int, default=128, help="scene height in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes")
    opt = parser.parse_args(argv)
    start = time.perf_counter()
    make_synthetic_city(opt.root, opt.n_train, opt.n_test, opt.width, opt.height, opt.seed)
    print(f"wrote {opt.n_train} training and {opt.n_test} test scenes of {opt.width}x{opt.height} "
          f"to {opt.root} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
