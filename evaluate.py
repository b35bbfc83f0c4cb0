r"""Measuring what was synthesized: the paper's Table 1 protocol, FID, and both offline on the
synthetic city.

Table 1 of the paper scores synthesized images by how much of their label map a pretrained
semantic segmenter (PSPNet) recovers from them. The label maps of the Cityscapes validation split
go through G at 2048x1024, the segmenter runs on the images, and its predictions are compared with
the label maps: pixel accuracy, and the mean over the 19 Cityscapes evaluation classes of

.. math:: \mathrm{IoU}_c = \frac{TP_c}{TP_c + FP_c + FN_c},

label ids mapped to train ids as cityscapesScripts defines them, every other id ignored. The
paper reports 0.6389 mean IoU / 0.8310 accuracy for pix2pixHD, and 0.7857 / 0.9366 for the real
photos (the oracle: what the segmenter itself achieves). Later work reports FID, the Fréchet
distance between Gaussians fitted to Inception features of real and synthesized images,

.. math:: d^2 = \lVert \mu_r - \mu_s \rVert^2
               + \mathrm{Tr}\big(\Sigma_r + \Sigma_s - 2 (\Sigma_r \Sigma_s)^{1/2}\big),

computed here by pytorch-fid with the Inception weights every paper uses. FID depends on how many
images and at which size: the images are resized to 299x299 (bilinear) as pytorch-fid does, and
the number of images is reported with it.

Neither NVIDIA's segmenter nor the Inception weights can be downloaded everywhere: the user passes
their files. The synthetic city needs neither: a small segmenter trained on its real photos
(``train_segmenter``) runs the same protocol offline, and turns "the samples look recognisable"
into a number.
"""

import argparse
import contextlib
import json
import math
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from pytorch_fid.fid_score import calculate_frechet_distance
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3
from torch import nn

import data
import infer
import runs
from runs import UserError

IGNORE = 255  # the train id of every label id the evaluation leaves out
CITYSCAPES_LABEL_NC = 35  # Cityscapes label ids 0..33, as the official scripts' label_nc
EVAL_CLASSES = [label.name for label in sorted(CITYSCAPES_LABELS, key=lambda label: label.trainId)
                if 0 <= label.trainId < IGNORE]  # the 19 classes, by train id
INCEPTION_FILE = Path(FID_WEIGHTS_URL).name
SEGMENTER_ARCHS = ("exported", "torchscript", "deeplabv3_resnet50", "deeplabv3_resnet101",
                   "deeplabv3_mobilenet_v3_large", "fcn_resnet50", "fcn_resnet101")
SEGMENTER_METADATA = "segmenter.json"  # beside an exported segmenter: its input size and range


def cityscapes_train_ids():
    """(256,) int64 table: Cityscapes label id -> train id 0..18, IGNORE for the ids the
    evaluation leaves out (cityscapesScripts' label table)."""
    table = torch.full((256,), IGNORE, dtype=torch.int64)
    for label in CITYSCAPES_LABELS:
        if 0 <= label.id < 256 and 0 <= label.trainId < IGNORE:
            table[label.id] = label.trainId
    return table


# ---------------------------------------------------------------------------------------------
# The segmentation score
# ---------------------------------------------------------------------------------------------

def confusion_matrix(prediction, target, n_classes, ignore_index=IGNORE):
    """(n_classes, n_classes) int64 counts, rows the true class, columns the predicted one, over
    the pixels whose target is not ``ignore_index``. ``prediction`` and ``target``: train ids of
    one shape."""
    keep = target != ignore_index
    target, prediction = target[keep].long(), prediction[keep].long()
    if prediction.numel() and int(prediction.max()) >= n_classes:
        raise ValueError(f"predicted class {int(prediction.max())} >= n_classes {n_classes}")
    index = target * n_classes + prediction
    return torch.bincount(index.cpu(), minlength=n_classes ** 2).reshape(n_classes, n_classes)


def segmentation_scores(confusion):
    """Pixel accuracy and mean IoU from a confusion matrix, as the Cityscapes scripts compute them:
    IoU_c = TP / (TP + FP + FN); a class with none of the three (absent from the ground truth and
    never predicted) has no IoU (nan) and is left out of the mean, while a class predicted but
    absent from the ground truth has IoU 0."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(dim=0) + confusion.sum(dim=1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    total = confusion.sum()
    return {"mIoU": float(iou.nanmean()) if (union > 0).any() else math.nan,
            "accuracy": float(tp.sum() / total) if total > 0 else math.nan,
            "iou": [None if math.isnan(v) else v for v in iou.tolist()]}


class Segmenter:
    """A segmentation network as the protocol uses it: images in [-1, 1] at any size -> the train
    id of every pixel at that size. The network sees them resized (bilinear) to ``size`` (W, H),
    or as they are when None, and ImageNet-normalised when ``imagenet_normalize`` (torchvision's
    models) or in [-1, 1] otherwise (the synthetic city's). Its logits are resized back. ``net``
    is in eval mode already (an exported program was captured in it)."""

    def __init__(self, net, size=None, imagenet_normalize=False, device="cpu"):
        self.net, self.size, self.device = net.to(device), size, torch.device(device)
        self.imagenet_normalize = imagenet_normalize

    @torch.inference_mode()
    def __call__(self, images):
        x = images.to(self.device).float()
        if self.size is not None:
            x = F.interpolate(x, size=(self.size[1], self.size[0]), mode="bilinear",
                              align_corners=False)
        if self.imagenet_normalize:
            mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
            x = ((x + 1) / 2 - mean) / std
        logits = self.net(x)
        logits = logits["out"] if isinstance(logits, dict) else logits  # torchvision's models
        logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear",
                               align_corners=False)
        return logits.argmax(dim=1)                                     # (B, H, W)


def load_segmenter(path, arch="exported", size=None, normalize=None, device="cpu"):
    """A ``Segmenter`` from a file: a ``torch.export`` program (``arch`` 'exported', the .pt2
    ``save_segmenter`` writes, which says its own input size and range), a TorchScript module, or
    a torchvision segmentation model's state_dict for the 19 classes. ``size`` (W, H) and
    ``normalize`` ('imagenet' or 'none') override what the file says; torchvision's models expect
    ImageNet normalisation; any other file must be told."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--segmenter {path}: no such file; train one on the synthetic city with "
                        "`python evaluate.py segmenter`, or pass a segmenter's weights")
    declared = {}
    try:
        if arch == "exported":
            extra = {SEGMENTER_METADATA: ""}
            net = torch.export.load(str(path), extra_files=extra).module()
            declared = json.loads(extra[SEGMENTER_METADATA] or "{}")
        elif arch == "torchscript":
            with warnings.catch_warnings():  # TorchScript is deprecated; such files still exist
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location=device).eval()
        else:
            net = torchvision_segmenter(path, arch).eval()
            declared = {"input_normalization": "imagenet"}
    except (RuntimeError, ValueError, OSError, KeyError) as err:
        raise UserError(f"--segmenter {path}: not a {arch} file ({runs.error_line(err)}); say "
                        "what it holds with --segmenter_arch") from None
    normalize = normalize or declared.get("input_normalization")
    if normalize not in ("imagenet", "minus_one_to_one", "none"):
        raise UserError(f"--segmenter {path} does not say how its input is normalised: pass "
                        "--segmenter_normalize imagenet or none")
    return Segmenter(net, size or declared.get("input_size"), normalize == "imagenet", device)


def torchvision_segmenter(path, arch):
    net = getattr(torchvision.models.segmentation, arch)(
        weights=None, weights_backbone=None, num_classes=len(EVAL_CLASSES), aux_loss=True)
    state_dict = runs.read_weights(path)
    missing, unexpected = net.load_state_dict(state_dict, strict=False)
    if unexpected or [k for k in missing if not k.startswith("aux_classifier.")]:
        raise ValueError(f"the state_dict is not a {arch} for {len(EVAL_CLASSES)} classes "
                         f"(missing {len(missing)}, unexpected {len(unexpected)} keys)")
    return net


def save_segmenter(net, path):
    """A ``SmallSegmenter`` as a ``torch.export`` program (any batch size) with its input size
    and range beside it, for ``load_segmenter``."""
    width, height = net.input_size
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net.eval(), (torch.zeros(2, 3, height, width),),
                                  dynamic_shapes=({0: batch},))
    metadata = {"input_size": net.input_size, "input_normalization": net.input_normalization}
    torch.export.save(program, str(path), extra_files={SEGMENTER_METADATA: json.dumps(metadata)})


# ---------------------------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------------------------

class InceptionWeightsMissing(RuntimeError):
    """The FID Inception weights are not where they were looked for."""


def load_inception(weights=None, device="cpu"):
    """pytorch-fid's InceptionV3 with the FID weights, returning the 2048 pool features; from the
    file ``weights``, or else from the torch hub cache, where pytorch-fid keeps it. Never
    downloads: a missing file is an InceptionWeightsMissing naming what to download."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    path = Path(weights) if weights else cached
    if not path.is_file():
        raise InceptionWeightsMissing(
            f"FID Inception weights not found at {path}: download {FID_WEIGHTS_URL} there (or "
            "pass its path with --inception_weights)")
    with hub_cache_holding(path):
        net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return net.to(device).eval()


@contextlib.contextmanager
def hub_cache_holding(path):
    """pytorch-fid reads its weights from the torch hub cache only: a temporary cache holding a
    copy of ``path`` under the expected name, unless it is already the cached file."""
    cache = Path(torch.hub.get_dir())
    if path.resolve() == (cache / "checkpoints" / INCEPTION_FILE).resolve():
        yield
        return
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "checkpoints").mkdir()
        shutil.copyfile(path, Path(folder) / "checkpoints" / INCEPTION_FILE)
        torch.hub.set_dir(folder)
        try:
            yield
        finally:
            torch.hub.set_dir(str(cache))


class InceptionStatistics:
    """The mean and covariance of the Inception pool features of the images it is given."""

    def __init__(self, inception):
        self.inception, self.features = inception, []

    @torch.inference_mode()
    def add(self, images):
        """(B, 3, H, W) in [-1, 1]; pytorch-fid resizes them to 299x299, bilinearly."""
        device = next(self.inception.parameters()).device
        x = (images.to(device).float() + 1) / 2             # pytorch-fid takes [0, 1]
        self.features.append(self.inception(x)[0].flatten(1).double().cpu())

    def mean_and_covariance(self):
        features = torch.cat(self.features).numpy()
        if len(features) < 2:
            raise UserError("FID needs at least 2 images on each side")
        return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(a, b):
    """FID between two ``InceptionStatistics`` (or (mean, covariance) pairs), by pytorch-fid."""
    a = a.mean_and_covariance() if isinstance(a, InceptionStatistics) else a
    b = b.mean_and_covariance() if isinstance(b, InceptionStatistics) else b
    return float(calculate_frechet_distance(a[0], a[1], b[0], b[1]))


# ---------------------------------------------------------------------------------------------
# Scoring a split
# ---------------------------------------------------------------------------------------------

def score_split(synthesize, dataset, segmenter=None, inception=None, how_many=None):
    """The protocol over a split: each (label map, instance map, photo) of ``dataset`` gives an
    image ``synthesize(label, inst, photo)`` ((1, 3, H, W) in [-1, 1]; the photo itself for the
    oracle), scored by ``segmenter`` against the label map's train ids and, with ``inception``,
    by FID against the split's photos. Returns {images, mIoU, accuracy, iou, fid, seconds per
    image of synthesis, seconds per image in all (reading, synthesis and measuring)}."""
    train_ids = cityscapes_train_ids()
    confusion = torch.zeros(len(EVAL_CLASSES), len(EVAL_CLASSES), dtype=torch.int64)
    real = fake = None
    if inception is not None:
        real, fake = InceptionStatistics(inception), InceptionStatistics(inception)
    n = len(dataset) if how_many is None else min(how_many, len(dataset))
    seconds, begin = 0.0, time.perf_counter()
    for i in range(n):
        item = dataset[i]
        label, inst = item["label"][None], item["inst"][None]
        photo = item["image"][None] if item["has_image"] else None
        start = time.perf_counter()
        image = synthesize(label, inst, photo)
        seconds += time.perf_counter() - start
        if segmenter is not None:
            confusion += confusion_matrix(segmenter(image).cpu(), train_ids[label[:, 0]],
                                          len(EVAL_CLASSES))
        if inception is not None:
            if photo is None:
                raise UserError("FID compares with the real photos: this split has none")
            real.add(photo)
            fake.add(image)
    scores = segmentation_scores(confusion) if segmenter is not None else {}
    if inception is not None:
        scores["fid"] = frechet_distance(real, fake)
    return {"images": n, **scores, "seconds_per_image": seconds / max(n, 1),
            "seconds_per_image_in_all": (time.perf_counter() - begin) / max(n, 1)}


def model_synthesizer(model):
    """``synthesize`` for ``score_split`` from an ``infer.Model``: features from E on the photo
    for a model with instance features (the photo's own styles)."""
    def synthesize(label, inst, photo):
        regions = runs.feature_regions(model.opt, label, inst)
        features = infer.instance_feature_map(model, regions, "encoded", photo)
        return infer.synthesize(model, label, inst, features)
    return synthesize


def real_photos(label, inst, photo):
    """``synthesize`` for the oracle row: the real photo itself."""
    if photo is None:
        raise UserError("the oracle row scores the real photos: this split has none")
    return photo


# ---------------------------------------------------------------------------------------------
# The synthetic city's segmenter
# ---------------------------------------------------------------------------------------------

class SmallSegmenter(nn.Module):
    """A small U-Net for the synthetic city: three 3x3 conv blocks down (16, 32, 64 channels,
    max pooling between), two up (bilinear upsampling, the skip concatenated), and a 1x1
    convolution to the 19 classes. Its input is an image in [-1, 1], as G makes them, resized to
    ``input_size`` (W, H), the size it learned at; ``save_segmenter`` keeps both with it, so that
    ``load_segmenter`` needs no flags for it."""

    def __init__(self, input_size, n_classes=len(EVAL_CLASSES), width=16):
        super().__init__()
        self.input_normalization, self.input_size = "minus_one_to_one", list(input_size)
        w = [width, 2 * width, 4 * width]
        self.down1, self.down2, self.down3 = (conv_block(3, w[0]), conv_block(w[0], w[1]),
                                              conv_block(w[1], w[2]))
        self.up2, self.up1 = conv_block(w[2] + w[1], w[1]), conv_block(w[1] + w[0], w[0])
        self.head = nn.Conv2d(w[0], n_classes, kernel_size=1)

    def forward(self, x):
        d1 = self.down1(x)                                   # (B, 16, H, W)
        d2 = self.down2(F.max_pool2d(d1, 2))                 # (B, 32, H/2, W/2)
        d3 = self.down3(F.max_pool2d(d2, 2))                 # (B, 64, H/4, W/4)
        u2 = self.up2(torch.cat([resize(d3, d2), d2], dim=1))
        u1 = self.up1(torch.cat([resize(u2, d1), d1], dim=1))
        return self.head(u1)                                 # (B, 19, H, W)


def resize(x, like):
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def conv_block(in_channels, out_channels):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))


def train_segmenter(dataroot, epochs=30, load_size=128, batch_size=8, seed=0, say=print):
    """``SmallSegmenter`` trained on the real photos of ``dataroot``'s training split at
    ``load_size`` wide (random flips; Adam, lr 1e-3, cross-entropy over the train ids, ignored
    ids left out). Returns it in eval mode."""
    torch.manual_seed(seed)
    dataset = data.PairedDataset(dataroot, "train", load_size=load_size, size_multiple=4,
                                 no_flip=False, is_train=True)
    if dataset.image_paths is None:
        raise UserError(f"--dataroot {dataroot}: the training split has no photos to learn from")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    net = SmallSegmenter(input_size=dataset[0]["image"].shape[-1:-3:-1])
    train_ids = cityscapes_train_ids()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(1, epochs + 1):
        total = 0.0
        for batch in loader:
            loss = F.cross_entropy(net(batch["image"]), train_ids[batch["label"][:, 0]],
                                   ignore_index=IGNORE)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        say(f"segmenter epoch {epoch}/{epochs}: cross-entropy {total / len(loader):.4f}")
    return net.eval()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def build_parser():
    p = runs.CommandLine(
        prog="evaluate.py",
        description="Measure synthesized images as the paper's Table 1 does (a segmenter's mean "
                    "IoU and accuracy against the label maps), and by FID.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)
    q = commands.add_parser("segmenter", help="train the synthetic city's segmenter",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--dataroot", required=True, help="a synthetic city (or any dataset with "
                                                      "Cityscapes label ids and photos)")
    q.add_argument("--out", required=True, help="the .pt2 file to write (torch.export)")
    q.add_argument("--epochs", type=runs.whole(1), default=30, help="training epochs")
    q.add_argument("--loadSize", type=runs.whole(16), default=128, help="width it trains at")
    q.add_argument("--seed", type=runs.whole(0), default=0, help="seed of weights and order")

    q = commands.add_parser("score", help="Table 1 row (and FID) of a run, its untrained twin, "
                                          "or the real photos", formatter_class=argparse.
                            ArgumentDefaultsHelpFormatter)
    runs.add_run_options(q, seed_help="with --untrained: the seed of its weights")
    infer.add_official_options(q)
    g = q.add_argument_group("what to score")
    g.add_argument("--dataroot", required=True, help="dataset root")
    g.add_argument("--phase", default="test", help="split (the paper: Cityscapes' val)")
    g.add_argument("--how_many", type=runs.whole(1), default=None, help="only the first N images")
    g.add_argument("--real", action="store_true", help="the oracle row: the real photos")
    g.add_argument("--untrained", action="store_true",
                   help="the run's architecture at its initial weights (a baseline)")
    add_measure_options(q)
    return p


def add_measure_options(parser):
    g = parser.add_argument_group("how to measure")
    g.add_argument("--segmenter", default=None,
                   help="the segmenter's file (see --segmenter_arch)")
    g.add_argument("--segmenter_arch", default="exported", choices=SEGMENTER_ARCHS,
                   help="what --segmenter holds: a torch.export .pt2 (what `evaluate.py "
                        "segmenter` writes), a TorchScript file, or a torchvision model's weights")
    g.add_argument("--segmenter_size", default=None,
                   help="WxH the segmenter sees (the paper: 2048x1024); None: the image's size")
    g.add_argument("--segmenter_normalize", default=None, choices=["imagenet", "none"],
                   help="its input normalisation; None: what the file says")
    g.add_argument("--inception_weights", default=None,
                   help=f"{INCEPTION_FILE} for FID; None: the torch hub cache's")
    g.add_argument("--fid", action="store_true", help="also FID against the split's photos")
    g.add_argument("--json", default=None, help="also write the numbers to this JSON file")


def add_validation_options(parser):
    """train.py's flags for scoring G on a held-out split as it trains
    (``train_machinery.Validation``)."""
    g = parser.add_argument_group("validation (evaluate.py's Table 1 score, on a held-out split)")
    g.add_argument("--val_freq", type=runs.whole(0), default=0,
                   help="epochs between validations; 0: none")
    g.add_argument("--val_segmenter", default=None,
                   help="the segmenter that scores it (evaluate.py segmenter writes one for the "
                        "synthetic city)")
    g.add_argument("--val_segmenter_arch", default="exported", choices=SEGMENTER_ARCHS,
                   help="what --val_segmenter holds")
    g.add_argument("--val_phase", default="test", help="the held-out split")
    g.add_argument("--val_how_many", type=runs.whole(1), default=None,
                   help="score only its first N images")


def main(argv=None):
    opt = build_parser().parse_args(argv)
    try:
        if opt.command == "segmenter":
            command_segmenter(opt)
        else:
            command_score(opt)
    except (UserError, data.DataError, InceptionWeightsMissing) as err:
        runs.fail("evaluate.py", err, 2, {"root": "--dataroot"})


def command_segmenter(opt):
    runs.check_output_folder(Path(opt.out).parent, "--out", given=opt.out)
    start = time.perf_counter()
    net = train_segmenter(opt.dataroot, opt.epochs, opt.loadSize, seed=opt.seed)
    save_segmenter(net, opt.out)
    test_split = data.PairedDataset(opt.dataroot, "test", no_flip=True, is_train=False,
                                    resize_or_crop="none", size_multiple=4)
    oracle = score_split(real_photos, test_split, Segmenter(net, net.input_size))
    print(f"wrote {opt.out} in {time.perf_counter() - start:.0f} s; on the real test photos: "
          f"mean IoU {oracle['mIoU']:.4f}, accuracy {oracle['accuracy']:.4f}")


def command_score(opt):
    if opt.segmenter is None and not opt.fid:
        raise UserError("nothing to measure: pass --segmenter FILE, --fid, or both")
    model, synthesize, what = scored_images(opt)
    device = model.device
    segmenter = inception = None
    if opt.segmenter:
        segmenter = load_segmenter(opt.segmenter, opt.segmenter_arch,
                                   parse_size(opt.segmenter_size), opt.segmenter_normalize, device)
    if opt.fid:
        inception = load_inception(opt.inception_weights, device)
    report = score_split(synthesize, infer.inference_dataset(model.opt, opt.dataroot, opt.phase),
                         segmenter, inception, opt.how_many)
    print_report(what, report)
    if opt.json:
        Path(opt.json).write_text(json.dumps({"what": what, **report}, indent=2) + "\n")


def scored_images(opt):
    """(the model, the images to score, a name for them): a run's G (or NVIDIA's), its untrained
    twin (seeded with --seed), or the real photos read as the model reads its data."""
    if opt.official_checkpoint and opt.untrained:
        raise UserError("--untrained needs a run of ours (--name): an official checkpoint "
                        "has no recorded initialisation")
    if not opt.official_checkpoint and opt.name is None:
        raise UserError("--name: the run whose images (or whose data size, with --real) to "
                        "score, or --official_checkpoint PATH")
    model, _ = infer.open_generator(opt)
    if opt.official_checkpoint:
        opt.name = Path(opt.official_checkpoint).parent.name or "official"
    if opt.real:
        return model, real_photos, f"real photos ({opt.phase})"
    if opt.segmenter and model.opt.label_nc != CITYSCAPES_LABEL_NC:
        raise UserError(f"--segmenter: the protocol maps Cityscapes label ids (label_nc "
                        f"{CITYSCAPES_LABEL_NC}) to its 19 classes, but {opt.name} reads "
                        f"label_nc {model.opt.label_nc}; measure it with --fid only")
    if opt.untrained:
        torch.manual_seed(opt.seed)
        G, _, E = runs.build_networks(model.opt)
        model.G.load_state_dict(G.state_dict())
        if E is not None:
            model.E.load_state_dict(E.state_dict())
        return model, model_synthesizer(model), f"{opt.name}, untrained"
    return model, model_synthesizer(model), f"{opt.name}, {opt.which_epoch}"


def parse_size(text):
    if text is None:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--segmenter_size {text}: write WxH, such as 2048x1024") from None
    return width, height


def print_report(what, report):
    line = f"{what}: {report['images']} images"
    if "mIoU" in report:
        line += f", mean IoU {report['mIoU']:.4f}, accuracy {report['accuracy']:.4f}"
    if "fid" in report:
        line += f", FID {report['fid']:.2f} ({report['images']} images at 299x299)"
    print(line + f"; {report['seconds_per_image']:.3f} s per image to synthesize, "
                 f"{report['seconds_per_image_in_all']:.3f} s in all")


if __name__ == "__main__":
    main()
