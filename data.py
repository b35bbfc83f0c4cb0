"""The data path of pix2pixHD (Wang et al., CVPR 2018): what comes before G, and sec. 3.3.

pix2pixHD conditions the generator on a semantic label map s and, when instance maps are used, on
the boundary map of sec. 3.3 ("Using instance maps", fig. 4): a binary map that is 1 wherever a
pixel's object instance id differs from one of its 4 neighbours. Two cars side by side are one
blob of "car" in s; the boundary map is what tells G where one ends. The generator input is

    G input = concat( one_hot(s) (label_nc channels),  B(I) (1 channel) [, E(x, I) (feat_num)] )

where I is the instance map and E(x, I) the instance features of sec. 3.4 (``networks.Encoder``),
which the caller, who owns E, appends.

Before that, the paired data: (label map, instance map, photo) triplets read from a dataset root
in the pix2pixHD layout or in the layout of the Cityscapes download, checked, and resized,
cropped and flipped as the official code does. Every problem with a user's files is a
``DataError`` that names the path.

Label conventions (Cityscapes): label maps hold label ids 0..33 (``label_nc`` 35); instance maps
hold the label id for "stuff" pixels (road, sky, ...) and ``label_id * 1000 + k`` for the k-th
object of a class (cars, people). This file imports only torch, numpy and PIL, so it can be copied
on its own.
"""

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class DataError(Exception):
    """A problem with the user's files, said in one line that names the path (``problem``).

    When an argument of ``PairedDataset`` would fix it, ``fix`` is (argument, value): ``value``
    the one to pass, True for a switch, None when the argument itself is wrong. A command line
    turns that into its own flag; here it reads "or set argument=value".
    """

    def __init__(self, problem, fix=None):
        super().__init__(problem)
        self.problem, self.fix = problem, fix

    def __str__(self):
        if self.fix is None:
            return self.problem
        argument, value = self.fix
        return self.problem + (f"; check {argument}" if value is None
                               else f"; or set {argument}={value!r}")


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
        raise ValueError(f"label id {largest} >= label_nc {label_nc}: one_hot has channels "
                         f"0..{label_nc - 1}, so label_nc must be at least {largest + 1}")
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
# The paired dataset: reading, checking, resizing
# ---------------------------------------------------------------------------------------------

RESIZE_OR_CROP = ("none", "resize_and_crop", "crop", "scale_width", "scale_width_and_crop")


class PairedDataset(torch.utils.data.Dataset):
    """(label map s, instance map I, photo x) triplets of one split (``phase``) of a dataset root.

    Layouts, detected in this order (``label_nc`` > 0):
      pix2pixHD   ROOT/{phase}_label/, ROOT/{phase}_inst/, ROOT/{phase}_img/
      Cityscapes  ROOT/gtFine/{phase}/{city}/*_gtFine_labelIds.png, *_gtFine_instanceIds.png,
                  ROOT/leftImg8bit/{phase}/{city}/*_leftImg8bit.png
    and with ``label_nc`` 0 (RGB inputs, e.g. edges -> photo): ROOT/{phase}_A/ -> ROOT/{phase}_B/,
    instance maps from ROOT/{phase}_inst/ unless ``no_instance``. With ``load_features``,
    precomputed feature maps (RGB pictures of E's features) from ROOT/{phase}_feat/.
    ``max_dataset_size`` keeps the first N label maps by stem.

    Photos have ``output_nc`` channels (inputs with ``label_nc`` 0, ``input_nc``): 3 reads any
    picture as RGB, as the official code; 1 (grey, 8 or 16 bits, e.g. depth), 2 (grey + alpha)
    and 4 (RGBA) need a file of exactly that many channels (``read_picture``).

    Files pair by stem, the file name without its extension and Cityscapes suffix
    (``aachen_000000_000019`` for ``aachen_000000_000019_gtFine_labelIds.png``, ``a`` for
    ``a.jpg``). The official code pairs the i-th file of each sorted folder, which silently
    mismatches a whole split when one photo is missing or extra. A split without photos (a test
    split) is allowed: its items have ``has_image`` False and an all-zero ``image``.

    Preprocessing (official ``get_params`` / ``get_transform``), the same random draw for s, I, x:
      1. ``scale_width``*: width -> ``load_size``, height -> int(load_size * H / W);
         ``resize_and_crop``: -> load_size x load_size; ``none`` and ``crop``: kept;
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
      ``image``  (output_nc, H, W) float32 in [-1, 1], x / 127.5 - 1 (zeros when ``has_image``
                 is False);
      ``has_image`` bool;  ``path`` the label map's path;
      ``feat``   with ``load_features``: (3, H, W) float32 in [-1, 1], resized like the label map.
    """

    def __init__(self, root, phase="train", label_nc=35, no_instance=False, load_size=1024,
                 fine_size=512, resize_or_crop="scale_width", no_flip=False, size_multiple=16,
                 is_train=True, input_nc=3, output_nc=3, load_features=False,
                 max_dataset_size=None):
        if resize_or_crop not in RESIZE_OR_CROP:
            raise ValueError(f"resize_or_crop {resize_or_crop!r}: choose one of {RESIZE_OR_CROP}")
        self.root, self.phase, self.label_nc = Path(root), phase, label_nc
        self.no_instance, self.load_size, self.fine_size = no_instance, load_size, fine_size
        self.resize_or_crop, self.no_flip = resize_or_crop, no_flip
        self.size_multiple, self.is_train = size_multiple, is_train
        self.input_nc, self.output_nc = input_nc, output_nc
        self.layout, labels, insts, images = discover(self.root, phase, label_nc, no_instance)
        self.stems = sorted(labels)[:max_dataset_size]
        self.label_paths = [labels[s] for s in self.stems]
        self.inst_paths = [insts[s] for s in self.stems] if insts is not None else None
        self.image_paths = [images[s] for s in self.stems] if images is not None else None
        self.feat_paths = None
        if load_features:
            feat_dir = self.root / f"{phase}_feat"
            feats = index_folder(feat_dir, None) if feat_dir.is_dir() else {}
            check_all_paired({s: labels[s] for s in self.stems}, feats, feat_dir,
                             "precomputed feature map", "precompute them (manipulate.py "
                             "precompute) or drop load_features", fix=("load_features", None))
            self.feat_paths = [feats[s] for s in self.stems]

    def __len__(self):
        return len(self.stems)

    def __getitem__(self, index):
        drawn = []  # (the label map's size, the geometry drawn for it), for the feature map

        def geometry(size):
            drawn.append((size, self.draw_geometry(size)))
            return drawn[-1][1]

        label, inst, image = read_triplet(
            self.label_paths[index], self.inst_paths[index] if self.inst_paths else None,
            self.image_paths[index] if self.image_paths else None, self.label_nc,
            geometry, self.input_nc, self.output_nc)
        H, W = label.shape[-2:]
        item = {"label": label,
                "inst": inst if inst is not None else torch.zeros(1, H, W, dtype=torch.int64),
                "image": image if image is not None else torch.zeros(self.output_nc, H, W),
                "has_image": image is not None, "path": str(self.label_paths[index])}
        if self.feat_paths is not None:
            item["feat"] = read_feature_map(self.feat_paths[index], self.label_paths[index],
                                            *drawn[0])
        return item

    def draw_geometry(self, size):
        """This dataset's random draw for an input of ``size``: see ``draw_geometry``."""
        return draw_geometry(size, self.resize_or_crop, self.load_size, self.fine_size,
                             self.size_multiple, self.is_train, self.no_flip)


def draw_geometry(size, resize_or_crop, load_size, fine_size, size_multiple, is_train=False,
                  no_flip=True):
    """The draw shared by s, I and x of one sample, for an input of ``size`` (W, H):
    (resize_to, crop_box or None, final_size, flip). Random crop and flip only when training.
    A ValueError when the resized (and cropped) input is smaller than ``size_multiple``."""
    W, H = size  # ``none`` and ``crop`` keep the file's size
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
    if min(W, H) < m:  # rounding up would stretch the image, silently
        raise ValueError(f"{size[0]}x{size[1]} resized to {W}x{H} is smaller than size_multiple "
                         f"{m}, the total downsampling of G, on one side")
    final_size = (max(m, int(round(W / m) * m)), max(m, int(round(H / m) * m)))
    flip = is_train and not no_flip and bool(torch.rand(()) < 0.5)
    return resize_to, box, final_size, flip


def read_triplet(label_path, inst_path, image_path, label_nc, geometry_of, input_nc=3,
                 output_nc=3):
    """One sample from its files: (label, inst or None, image or None) as tensors, the label map
    (1, H, W) int64 ids (or (input_nc, H, W) in [-1, 1] when ``label_nc`` is 0), the instance
    map (1, H, W) int64 ids, the photo (output_nc, H, W) in [-1, 1]. Each file is read and
    checked, and all three get the same resize, crop and flip, ``geometry_of(label map size)``."""
    s = read_image(label_path)
    if label_nc > 0:
        s = check_label_map(s, label_path, label_nc)
    elif input_nc == 3:
        s = check_rgb_input(s, label_path)
    else:
        s = read_picture(s, label_path, input_nc, "input_nc")
    inst = image = None
    if inst_path is not None:
        inst = read_instance_map(inst_path)
        check_same_size(label_path, s, inst_path, inst)
    if image_path is not None:
        image = read_picture(read_image(image_path), image_path, output_nc, "output_nc")
        check_same_size(label_path, s, image_path, image)

    try:
        geometry = geometry_of(s.size)
    except ValueError as err:
        raise DataError(f"{label_path}: {err}", fix=("load_size", None)) from None
    if label_nc > 0:
        s = transform(s, geometry, Image.NEAREST)
        label = torch.from_numpy(np.asarray(s, dtype=np.int64)).unsqueeze(0)     # (1, H, W)
    else:
        # RGB inputs are pictures, resized like photos (official: same transform as x)
        label = to_tensor(transform(s, geometry, Image.BICUBIC))        # (input_nc, H, W)
    if inst is not None:
        inst = transform(inst, geometry, Image.NEAREST)
        inst = torch.from_numpy(np.asarray(inst, dtype=np.int64)).unsqueeze(0)   # (1, H, W)
    if image is not None:
        image = to_tensor(transform(image, geometry, Image.BICUBIC))    # (output_nc, H, W)
    return label, inst, image


def read_feature_map(path, label_path, label_size, geometry):
    """A precomputed feature map (an RGB picture of E's features in [-1, 1], as the official
    precompute_feature_maps.py writes) -> (3, H, W) in [-1, 1], resized, cropped and flipped
    like its label map (``geometry``, drawn for ``label_size``), with nearest neighbour, as the
    official code: a feature is one value per instance and must not blend at the borders."""
    feat = read_image(path)
    check_lossless(feat, path, "feature map")
    feat = feat.convert("RGB")
    if feat.size != label_size:
        raise DataError(f"{label_path} is {label_size[0]}x{label_size[1]} but its feature map "
                        f"{path} is {feat.size[0]}x{feat.size[1]}: precompute the feature maps "
                        "at the size of the label maps (manipulate.py precompute --scale)")
    return to_tensor(transform(feat, geometry, Image.NEAREST))


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
    """(C, H, W) in [-1, 1] -> 8-bit PIL image (C 1: L, 2: LA, 3: RGB, 4: RGBA); the exact
    inverse of the dataset's x / 127.5 - 1."""
    t = ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if t.shape[0] == 1:
        return Image.fromarray(t[0].numpy())
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
        raise DataError(f"dataset root {root} does not exist (Cityscapes: unzip "
                        "gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from "
                        "https://www.cityscapes-dataset.com into one folder)", fix=("root", None))
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
        raise DataError(f"{label_dir} holds no label maps ({patterns[0] or 'image files'}): "
                        "put them there", fix=("root", None))
    insts = None
    if not no_instance:
        insts = index_folder(inst_dir, patterns[1]) if inst_dir.is_dir() else {}
        check_all_paired(labels, insts, inst_dir, "instance map", "add them",
                         fix=("no_instance", True))
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


def check_all_paired(labels, others, folder, what, remedy, fix=None):
    missing = [stem for stem in labels if stem not in others]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(f"{len(missing)} of {len(labels)} label maps have no {what} in {folder} "
                        f"({shown}): {remedy}", fix)


def layout_error(root, phase, label_nc):
    """No split where this label_nc looks; a split that another label_nc would read is named."""
    fix = ("root", None)
    if label_nc == 0:
        looked = f"{root / f'{phase}_A'}/ and {root / f'{phase}_B'}/ (label_nc 0: RGB inputs)"
        if (root / f"{phase}_label").is_dir():
            looked += f"; {phase}_label/ holds label ids (Cityscapes: 35 classes)"
            fix = ("label_nc", 35)
    else:
        looked = (f"{root / f'{phase}_label'}/ (pix2pixHD layout) and {root / 'gtFine' / phase}/ "
                  f"with {root / 'leftImg8bit' / phase}/ (Cityscapes download)")
        if (root / f"{phase}_A").is_dir():
            looked += f"; {phase}_A/ holds RGB inputs, which label_nc 0 reads"
            fix = ("label_nc", 0)
    present = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())[:8]
    return DataError(f"{root}: no '{phase}' split found: looked for {looked}; found "
                     f"{' '.join(present) or 'no folders'}", fix)


# ---------------------------------------------------------------------------------------------
# Helpers: reading, checking and transforming images
# ---------------------------------------------------------------------------------------------

def read_image(path):
    """PIL image, fully decoded, or a DataError naming the file."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        if Path(path).name.startswith("._"):
            raise DataError(f"{path} is a macOS AppleDouble file (metadata copied beside the "
                            "real image), not an image: delete the ._* files") from None
        reason = " ".join(str(err).split())  # one line
        raise DataError(f"{path}: cannot read this image ({reason}); replace or re-download "
                        "the file") from None
    return image


def check_label_map(image, path, label_nc):
    """A label map of ids 0..label_nc-1, decided by the file, never guessed: greyscale (mode L,
    I or I;16, or LA with its alpha ignored) holds ids; an RGB picture whose three channels are
    equal is a grey map saved as RGB. Refused with the reason: colours (Cityscapes *_color.png),
    palette images (their indices may be ids or colours), JPEG (lossy: compression changes ids
    at every edge), negative ids, and ids >= label_nc, where 255, the "ignore" id of many label
    sets, is named as such."""
    check_lossless(image, path, "label map")
    if image.mode in ("P", "PA"):
        raise DataError(f"{path} is a palette image: its pixels index a colour table, and the "
                        "indices may be class ids (as in PASCAL VOC) or stand for colours; save "
                        "the ids as a greyscale PNG (numpy.asarray(Image.open(path)) gives the "
                        "indices), or treat the colours as an RGB input with label_nc 0")
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image)[..., :3]
        if not (rgb == rgb[..., :1]).all():
            raise DataError(f"{path} is an RGB colour image where label ids are expected: use the "
                            "*_labelIds.png maps (not *_color.png); label_nc 0 reads RGB inputs",
                            fix=("label_nc", 0))
        image = image.getchannel(0)
    elif image.mode == "LA":  # grey ids with an alpha channel: the ids
        image = image.getchannel(0)
    elif image.mode not in ("L", "I", "I;16", "I;16B", "I;16L"):
        raise DataError(f"{path}: a label map of PIL mode {image.mode} cannot hold label ids; save "
                        "it as an 8-bit or 16-bit greyscale PNG of ids 0..label_nc-1")
    smallest, largest = image.getextrema()
    if smallest < 0:
        raise DataError(f"{path}: negative label id {smallest}; label ids are 0..label_nc-1")
    if largest == 255 and label_nc <= 255:
        raise DataError(f"{path}: label id 255 >= label_nc {label_nc}: 255 is the 'ignore' id of "
                        "many label sets (Cityscapes trainIds, PASCAL VOC borders); map it to a "
                        "class (Cityscapes ids: 0, unlabeled) before training, or, if it is a "
                        "class of yours, count it with label_nc 256")
    if largest >= label_nc:
        raise DataError(f"{path}: label id {largest} >= label_nc {label_nc}, so the label set "
                        f"has at least {largest + 1} classes (Cityscapes *_labelIds.png: 35)",
                        fix=("label_nc", largest + 1))
    return image


def read_instance_map(path):
    """Instance ids as a 32-bit PIL image (mode I), which PIL resizes and flips like any other.
    Colour, lossy (JPEG) and negative instance maps are refused with the reason."""
    image = read_image(path)
    check_lossless(image, path, "instance map")
    ids = np.asarray(image)
    if ids.ndim != 2 or image.mode in ("P", "PA"):
        raise DataError(f"{path} is a colour image where instance ids are expected: use the "
                        "*_instanceIds.png maps (16-bit ids)", fix=("no_instance", True))
    if ids.size and ids.min() < 0:
        raise DataError(f"{path}: negative instance id {ids.min()}; instance ids are label ids "
                        "for stuff and label_id * 1000 + k for objects")
    return Image.fromarray(ids.astype(np.int32))


def check_lossless(image, path, what):
    if image.format in ("JPEG", "MPO"):
        raise DataError(f"{path} is a JPEG: its lossy compression changes ids at every edge (an "
                        f"id between two others appears), so a {what} must be lossless: save "
                        "the ids as PNG")


def check_rgb_input(image, path):
    """With label_nc 0 the input is a picture (edges, a sketch, a map), read as RGB. A
    single-channel file there is refused: it may be a map of label ids, which label_nc > 0
    reads, or a grey picture, which is then saved as RGB; the file cannot say which."""
    if image.mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "1", "F"):
        raise DataError(f"{path} has one channel, but label_nc 0 reads RGB pictures: if it holds "
                        "label ids, give their number as label_nc; if it is a grey picture, save "
                        "it as RGB", fix=("label_nc", None))
    return image.convert("RGB")


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
    """PIL picture of C channels -> (C, H, W) float32 in [-1, 1]: (x / 255 - 0.5) / 0.5, the
    official ToTensor + Normalize; a 16-bit grey picture (mode F in [0, 1], as ``read_picture``
    makes it) is clamped to [0, 1] instead, as bicubic resizing may overshoot."""
    x = torch.from_numpy(np.array(image, dtype=np.float32))    # (H, W) or (H, W, C)
    x = x.reshape(*x.shape[:2], -1).permute(2, 0, 1)            # (C, H, W)
    if image.mode == "F":
        return (x.clamp(0, 1) - 0.5) / 0.5
    return (x / 255 - 0.5) / 0.5


# Channels of a picture in each PIL mode that can hold a photo.
MODE_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "LA": 2, "RGB": 3,
                 "YCbCr": 3, "RGBA": 4}


def read_picture(image, path, channels, argument):
    """A photo (or, with label_nc 0, an input picture) of ``channels`` channels. Three read any
    picture as RGB, as the official code (a grey photo becomes three equal channels, alpha is
    dropped). Otherwise the file must have exactly ``channels``: converting a colour photo to
    grey, or dropping an alpha or depth channel, would change the data silently. 16-bit grey
    stays 16-bit (as mode F, x / 65535); 8-bit is mode L. Float pictures (mode F) have no fixed
    range and CMYK is no RGBA, so both are refused."""
    if channels == 3:
        return image.convert("RGB")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA"
                              else "RGB")
    found = MODE_CHANNELS.get(image.mode)
    if found != channels:
        raise DataError(f"{path} has {found or 'an unknown number of'} channels (PIL mode "
                        f"{image.mode}) but {argument} is {channels}: save it with {channels} "
                        "channels", fix=(argument, found) if found else None)
    if image.mode.startswith("I"):
        return Image.fromarray(np.asarray(image, dtype=np.float32) / 65535)
    return image.convert({1: "L", 2: "LA", 4: "RGBA"}[channels])
