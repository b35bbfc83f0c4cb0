"""The synthetic city: a small street-scene dataset rendered here, whose every answer is known.

Cityscapes needs a registration and a download; the synthetic city needs neither. Each scene is a
label map in Cityscapes ids (sky, buildings, trees, poles and signs, a road in perspective between
two sidewalks, cars on the road and people on the sidewalks), its instance map (cars 26000 + k,
people 24000 + k) and a photo painted from the label map. It is the data of the quick start
(``python train.py`` with no ``--dataroot``) and of the tests.

Its second purpose is to measure what only known answers allow. The photo paints every object in
one of a few appearance styles (a car is red, blue, white or black; a road asphalt or
cobblestone), drawn at random and recorded in ``styles.json``, but the label map does not say
which. Sec. 3.4 claims that the encoder E, trained with G, learns features from which K-means
recovers such modes; here that is a number: the purity and adjusted Rand index of the clusters
against the true styles, and how much a restyled car changes inside it against outside it
(``python synthetic_city.py evaluate``, the README's table).
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import data
import edits
import infer
import manipulate
import runs

# The Cityscapes label ids the synthetic city uses.
ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN = 7, 8, 11, 17, 20
VEGETATION, SKY, PERSON, CAR = 21, 23, 24, 26
STUFF = (ROAD, SIDEWALK, BUILDING, POLE, TRAFFIC_SIGN, VEGETATION, SKY)

# The appearance modes: for each class, styles far apart in RGB, so that an encoder + K-means
# (sec. 3.4) that works must find them. Stuff classes draw one style per image (their instance id
# is the label id), objects one per instance.
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

    Files: {phase}_label/STEM_gtFine_labelIds.png (uint8), {phase}_inst/STEM_gtFine_instanceIds.png
    (16-bit), {phase}_img/STEM_leftImg8bit.png, with STEM = synth_000000_000019 (train) or
    synthtest_000000_000019 (test); and styles.json:
        {"styles": {"26": {"class": "car", "names": [...], "rgb": [[r, g, b], ...]}, ...},
         STEM: {"26000": "red", "7": "asphalt", ...}, ...}
    which gives every instance id of every instance map its true style.

    The city is written beside ``root`` and renamed into place, so an interrupted write never
    leaves half a dataset; ``root`` must not exist yet (or be an empty folder). Deterministic:
    scene i of a split depends only on (seed, split, i), and the bytes are the same on every run.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} already exists; the synthetic city is written only to a "
                              "new (or empty) folder")
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an interrupted earlier write left
    styles = {"styles": {str(c): {"class": data.class_name(c), "names": list(table),
                                  "rgb": [list(rgb) for rgb in table.values()]}
                         for c, table in SYNTH_STYLES.items()}}
    for split, (phase, city, n) in enumerate([("train", "synth", n_train),
                                               ("test", "synthtest", n_test)]):
        folders = [partial / f"{phase}_{kind}" for kind in ("label", "inst", "img")]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label, inst, photo, instance_styles = render_scene(
                np.random.default_rng([seed, split, i]), width, height)
            stem = f"{city}_{i:06d}_000019"
            Image.fromarray(label).save(folders[0] / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(inst.astype(np.uint16)).save(  # 16-bit, as Cityscapes
                folders[1] / f"{stem}_gtFine_instanceIds.png")
            Image.fromarray(photo).save(folders[2] / f"{stem}_leftImg8bit.png")
            styles[stem] = {str(k): v for k, v in instance_styles.items()}
    (partial / "styles.json").write_text(json.dumps(styles, indent=1))
    if root.exists():
        root.rmdir()
    os.replace(partial, root)
    return root


# ---------------------------------------------------------------------------------------------
# Rendering one scene
# ---------------------------------------------------------------------------------------------

def render_scene(rng, W, H):
    """One scene -> (label (H, W) uint8, inst (H, W) int32, photo (H, W, 3) uint8,
    {instance id: style name} for every id in ``inst``). Vectorised over pixels; the only Python
    loops are over the handful of buildings, trees, poles and objects. Every random number comes
    from ``rng``, in a fixed order, so a seed fixes the scene."""
    street = Street(rng, W, H)
    stuff_styles = {c: rng.choice(list(SYNTH_STYLES[c])) for c in STUFF}
    photo = paint_stuff(rng, street, stuff_styles)
    objects = keep_mostly_visible(sorted(place_objects(rng, street), key=lambda o: o[0]))
    label, inst = street.label, street.label.astype(np.int32)
    styles = draw_objects(rng, objects, street, label, inst, photo)
    # film grain and the day's light
    photo = photo + rng.normal(0, 4, (H, W, 1)) + rng.normal(0, 2, (H, W, 3))
    photo = np.clip(np.round(photo * rng.uniform(0.93, 1.07)), 0, 255).astype(np.uint8)
    present = np.unique(inst).tolist()
    styles.update({c: str(s) for c, s in stuff_styles.items() if c in present})
    return label, inst, photo, {k: styles[k] for k in present}


class Street:
    """The stuff of one scene: its label map (sky, buildings, sidewalks, the road, trees, poles
    and signs) and the geometry the painting reuses: the horizon, the road's vanishing point
    ``cx`` and, per column, its building's left edge and top."""

    def __init__(self, rng, W, H):
        self.W, self.H = W, H
        self.yy, self.xx = np.mgrid[0:H, 0:W].astype(np.float32)    # (H, W) pixel coordinates
        yy, xx = self.yy, self.xx
        self.horizon = horizon = H * rng.uniform(0.42, 0.52)
        self.cx = W * rng.uniform(0.4, 0.6)                          # the road's vanishing point
        self.depth = np.clip((yy - horizon) / (H - horizon), 0, None)  # 0 at the horizon, 1 below
        self.label = np.full((H, W), SKY, np.uint8)
        widths = W * rng.uniform(0.08, 0.2, size=13)                 # 13 x 0.08 W > W: all columns
        rights = np.cumsum(widths)                                   # right edge of each building
        self.tops = horizon - H * rng.uniform(0.12, 0.4, size=len(widths))
        self.tops[rng.random(len(widths)) < 0.12] = horizon           # a gap between buildings
        self.column = np.searchsorted(rights, xx[0], side="right")  # (W,) building of each column
        self.lefts = rights[self.column] - widths[self.column]       # (W,)
        self.n_buildings = len(widths)
        self.building = (yy >= self.tops[self.column]) & (yy < horizon)
        self.label[self.building] = BUILDING
        ground = yy >= horizon
        self.label[ground] = SIDEWALK
        self.label[ground & (np.abs(xx - self.cx) < self.road_half_width(self.depth))] = ROAD
        self.add_trees(rng)
        self.add_poles(rng)

    def road_half_width(self, t):
        """Half the road's width at depth t (0 at the horizon, 1 at the bottom of the image)."""
        return self.W * (0.03 + 0.55 * t)

    def add_trees(self, rng):
        """One to three trees along the far kerbs (Cityscapes counts trunks as vegetation)."""
        W, H, yy, xx = self.W, self.H, self.yy, self.xx
        for _ in range(rng.integers(1, 4)):
            rx, ry = W * rng.uniform(0.03, 0.07), H * rng.uniform(0.07, 0.14)
            tx, ty = W * rng.uniform(0, 1), self.horizon - ry - H * rng.uniform(0.0, 0.08)
            crown = ((xx - tx) / rx) ** 2 + ((yy - ty) / ry) ** 2 < 1
            trunk = ((np.abs(xx - tx) < max(1.0, 0.12 * rx)) & (yy >= ty)
                     & (yy < self.horizon + 0.2 * ry))
            self.label[crown | trunk] = VEGETATION

    def add_poles(self, rng):
        """One to three poles at the kerb, some with a traffic sign on top."""
        W, H, yy, xx = self.W, self.H, self.yy, self.xx
        for _ in range(rng.integers(1, 4)):
            t = rng.uniform(0.1, 0.8)
            bottom, height = self.horizon + t * (H - self.horizon), H * (0.25 + 0.35 * t)
            x = self.cx + rng.choice([-1, 1]) * (self.road_half_width(t) + W * 0.02 * (0.3 + t))
            w = max(1, round(1 + 3 * t))
            x0 = round(x - w / 2)
            self.label[(xx >= x0) & (xx < x0 + w) & (yy >= bottom - height) & (yy < bottom)] = POLE
            if rng.random() < 0.6:
                self.label[(np.abs(xx - (x0 + w / 2)) < 2.5 * w) & (yy >= bottom - height)
                           & (yy < bottom - height + 4 * w)] = TRAFFIC_SIGN


def paint_stuff(rng, street, stuff_styles):
    """The photo of the stuff: each class in its style's colour, then a texture per class
    (clear or cloudy sky, building tones and windows, cobblestones or a dashed centre line,
    paving joints, foliage). -> (H, W, 3) float."""
    H, W, yy, xx, label = street.H, street.W, street.yy, street.xx, street.label
    colour = np.zeros((256, 3), np.float32)
    for c, style in stuff_styles.items():
        colour[c] = np.add(SYNTH_STYLES[c][style], rng.uniform(-8, 8, 3))
    photo = colour[label]                                        # (H, W, 3)
    shade = np.ones((H, W), np.float32)
    sky = label == SKY
    if stuff_styles[SKY] == "clear":
        shade[sky] = (0.8 + 0.25 * yy / street.horizon)[sky]     # lighter towards the horizon
    else:
        shade[sky] = (1 + 0.08 * smooth_noise(rng, H, W, 16))[sky]  # clouds
    tone = rng.uniform(0.85, 1.1, street.n_buildings)[street.column]  # (W,) one per building
    shade[street.building] = np.broadcast_to(tone, (H, W))[street.building]
    top = street.tops[street.column]
    windows = (street.building & ((xx - street.lefts) % 8 >= 3) & ((xx - street.lefts) % 8 < 6)
               & ((yy - top) % 10 >= 4) & ((yy - top) % 10 < 8))
    road = label == ROAD
    if stuff_styles[ROAD] == "cobblestone":                      # stones of random brightness
        row = (yy // 4).astype(int)                              # stones 6 x 4 px, rows offset
        col = ((xx + 3 * (row % 2)) // 6).astype(int)
        stones = rng.uniform(0.85, 1.15, (row.max() + 1, col.max() + 1))[row, col]
        mortar = (yy % 4 == 0) | ((xx + 3 * (row % 2)) % 6 == 0)
        shade[road] = (stones * np.where(mortar, 0.85, 1.0))[road]
    else:                                                        # asphalt: a dashed centre line
        # dashes shorten with distance: 40 / (distance below the horizon) alternates parity
        dash = np.floor(40 / (yy - street.horizon + 4)) % 2 == 0
        dashes = (np.abs(xx - street.cx) < 0.5 + 1.5 * street.depth) & dash
        photo[road & dashes] = (220, 220, 215)
    shade[(label == SIDEWALK) & ((yy % 6 == 0) | (xx % 10 == 0))] = 0.85   # paving joints
    foliage = label == VEGETATION
    shade[foliage] = (1 + 0.25 * smooth_noise(rng, H, W, 4))[foliage]
    photo = photo * shade[..., None]
    photo[windows] = (45, 55, 70)
    return photo


def place_objects(rng, street):
    """Two to five cars on the road and one to four people on the sidewalks, as
    (bottom, class, x0, width, height, style) boxes in perspective."""
    W, H, horizon, cx = street.W, street.H, street.horizon, street.cx
    objects = []
    for _ in range(rng.integers(2, 6)):
        t = rng.uniform(0.15, 1.0)
        w = W * (0.07 + 0.28 * t)
        xc = cx + rng.uniform(-0.7, 0.7) * street.road_half_width(t)
        objects.append((horizon + t * (H - horizon), CAR, xc - w / 2, w, 0.6 * w,
                        rng.choice(list(SYNTH_STYLES[CAR]))))
    for _ in range(rng.integers(1, 5)):
        t = rng.uniform(0.05, 0.9)
        h = H * (0.1 + 0.45 * t)
        kerb_distance = W * rng.uniform(0.03, 0.25) * (0.3 + t)
        xc = cx + rng.choice([-1, 1]) * (street.road_half_width(t) + kerb_distance)
        objects.append((horizon + t * (H - horizon), PERSON, xc - 0.19 * h, 0.38 * h, h,
                        rng.choice(list(SYNTH_STYLES[PERSON]))))
    return objects


def draw_objects(rng, objects, street, label, inst, photo):
    """Draw the objects far to near into ``label``, ``inst`` (ids class * 1000 + k) and
    ``photo``, in place; returns {instance id: style name}."""
    styles, count = {}, {CAR: 0, PERSON: 0}
    for bottom, c, x0, w, h, style in objects:
        u, v = (street.xx - x0) / w, (street.yy - (bottom - h)) / h  # (H, W) box coordinates
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
    return styles


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
# Measurements against the known styles
# ---------------------------------------------------------------------------------------------

def purity(assignment, truth):
    r"""Purity of a clustering: the fraction of points whose cluster's majority label is their own.

    .. math:: \mathrm{purity} = \frac{1}{N} \sum_k \max_j |c_k \cap t_j|

    1 is perfect, but more clusters than labels also reach 1 (all singletons do), so read it beside
    ``adjusted_rand_index``. ``assignment``, ``truth``: equal-length sequences of labels.
    """
    table = contingency_table(assignment, truth)
    return float(table.max(axis=1).sum() / table.sum())


def adjusted_rand_index(assignment, truth):
    r"""Adjusted Rand index (Hubert & Arabie 1985) between two partitions of the same points.

    .. math:: \mathrm{ARI} = \frac{\sum_{ij} \binom{n_{ij}}{2} - E}
              {\tfrac12 \big(\sum_i \binom{a_i}{2} + \sum_j \binom{b_j}{2}\big) - E},
              \qquad E = \sum_i \binom{a_i}{2} \sum_j \binom{b_j}{2} \Big/ \binom{N}{2}

    n_ij is the contingency table, a_i and b_j its row and column sums. 1 for the same partition
    (up to renaming), 0 in expectation for unrelated ones, negative below chance. When both
    partitions are trivial (one cluster, or all singletons, or fewer than two points) the ratio is
    0/0 and the answer 1, as in scikit-learn.
    """
    table = contingency_table(assignment, truth)

    def pairs(n):
        return (n * (n - 1) / 2).sum()

    if table.sum() < 2:  # no pair of points to agree or disagree about
        return 1.0
    index, rows, cols = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = rows * cols / pairs(table.sum(keepdims=True))
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def contingency_table(assignment, truth):
    """(clusters, true labels) float64 table of counts n_ij; labels may be numbers or strings."""
    _, a = np.unique(np.asarray(assignment), return_inverse=True)
    _, t = np.unique(np.asarray(truth), return_inverse=True)
    table = np.zeros((a.max() + 1, t.max() + 1))
    np.add.at(table, (a.ravel(), t.ravel()), 1)
    return table


def evaluate(model, dataroot, clusters, classes=("car", "road"), min_area=manipulate.MIN_AREA,
             seed=0, n_restyle=10, how_many=None):
    """Measure sec. 3.4 on a synthetic city (``styles.json`` gives every instance's true style):
    ``measure_clusters`` on the training split, then ``measure_restyle`` on the test split.
    Returns a dict of the numbers; ``print_evaluation`` prints them as the README's table."""
    styles_file = Path(dataroot) / "styles.json"
    if not styles_file.is_file():
        raise runs.UserError(f"{styles_file} not found: evaluate needs the true styles of a "
                             "synthetic city (python synthetic_city.py write ROOT)")
    styles = json.loads(styles_file.read_text())
    instances = manipulate.encode_split(model, dataroot, "train", how_many)
    return {"min_area": min_area,
            "clusters": {name: measure_clusters(instances, clusters, styles, name, min_area, seed)
                         for name in classes},
            "restyle": measure_restyle(model, dataroot, clusters, n_restyle, seed)}


def measure_clusters(instances, clusters, styles, class_name, min_area, seed):
    """For one class: purity and adjusted Rand index against the true styles of the cluster
    file's partition (each kept training instance assigned to its nearest centre, which is its
    K-means cluster), and of a fresh K-means with K = the number of true styles."""
    c = manipulate.class_id(class_name)
    kept = instances.area > min_area
    rows = [r for r in (kept & (instances.classes == c)).nonzero()[:, 0].tolist()
            if str(int(instances.ids[r])) in styles.get(instances.stems[r], {})]
    truth = [styles[instances.stems[r]][str(int(instances.ids[r]))] for r in rows]
    if not rows or c not in clusters:
        return {"instances": len(rows)}
    x = instances.features[rows]
    from_file = manipulate.nearest_cluster(x, clusters[c]).tolist()
    n_styles = len(set(truth))
    fresh = manipulate.kmeans(x, n_styles, torch.Generator().manual_seed(seed)).assignment.tolist()
    return {"instances": len(rows), "styles": n_styles, "K": len(clusters[c]),
            "purity": purity(from_file, truth), "ari": adjusted_rand_index(from_file, truth),
            "purity_k_styles": purity(fresh, truth),
            "ari_k_styles": adjusted_rand_index(fresh, truth),
            "majority": max(truth.count(t) for t in set(truth)) / len(truth)}


def measure_restyle(model, dataroot, clusters, n_restyle, seed):
    """For the largest car of each of the first ``n_restyle`` test images: the car drawn with the
    centre farthest from its encoded feature, and the mean absolute change inside the car,
    outside it, in the 8-pixel ring around it, and beyond (``manipulate.change_inside_outside``).
    None when there are no car clusters or no cars."""
    car = manipulate.class_id("car")
    if car not in clusters:
        return None
    dataset = infer.inference_dataset(model.opt, dataroot, "test")
    changes = []
    for i in range(min(n_restyle, len(dataset))):
        item = dataset[i]
        if not item["has_image"]:
            raise runs.UserError(f"--dataroot {dataroot}: the test split has no photos; evaluate "
                                 "restyles cars starting from E on the photo")
        label, inst = item["label"].unsqueeze(0), item["inst"].unsqueeze(0)
        cars = [d for d in manipulate.list_instances(inst) if d["class"] == car]
        if not cars:
            continue
        instance_id = max(cars, key=lambda d: d["pixels"])["id"]
        features = manipulate.base_features(model, inst, item["image"].unsqueeze(0), clusters, seed)
        k = manipulate.farthest_cluster(features, inst, instance_id, clusters[car])
        before, after = manipulate.restyle(model, label, inst, features, instance_id,
                                           clusters[car][k])
        changes.append(manipulate.change_inside_outside(before, after, inst == instance_id))
    if not changes:
        return None
    means = {k: float(np.nanmean([c[k] for c in changes])) for k in changes[0]}
    return {**means, "images": len(changes)}


def print_evaluation(report):
    print(f"K-means per class (instances with area > {report['min_area']} of a 1/32 block):")
    print("| class | instances | true styles | K | purity | ARI | purity (K = styles) | "
          "ARI (K = styles) | majority style |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in report["clusters"].items():
        if "purity" not in r:
            print(f"| {name} | {r['instances']} | - | no clusters | | | | | |")
            continue
        print(f"| {name} | {r['instances']} | {r['styles']} | {r['K']} | {r['purity']:.3f} | "
              f"{r['ari']:.3f} | {r['purity_k_styles']:.3f} | {r['ari_k_styles']:.3f} | "
              f"{r['majority']:.3f} |")
    r = report["restyle"]
    if r:
        print(f"Restyling the largest car of {r['images']} test images (farthest cluster), mean "
              f"|change| in 8-bit levels: inside {r['inside']:.2f}, outside {r['outside']:.2f} "
              f"(within 8 px of the car {r['near']:.2f}, beyond {r['far']:.2f})")


# ---------------------------------------------------------------------------------------------
# Measuring the editor's edits (edits.py) against the known styles
# ---------------------------------------------------------------------------------------------

EDITS = ("remove", "relabel", "paste")


def measure_edits(model, dataroot, clusters=None, n_images=10, seed=0, new_class=VEGETATION):
    """For the largest car of each of the first ``n_images`` test scenes, three edits (the car
    removed; relabelled to ``new_class``, a car become a hedge; the largest car of the next
    scene pasted where it stood there) and, for each: the mean |change| of G's image inside the
    edited region against outside it (``manipulate.change_inside_outside``), and whether the
    region looks like its new class, by the nearest of the reference colours of ``references``
    (every recorded (class, style) as the renderer paints it in the test photos). The features
    start as E's on the photo; a pasted car brings its own. -> {edit: averaged numbers}."""
    styles = json.loads((Path(dataroot) / "styles.json").read_text())
    dataset = infer.inference_dataset(model.opt, dataroot, "test")
    scenes = [s for s in (scene(model, dataset, i, styles) for i in range(len(dataset)))
              if s is not None][:n_images]
    if len(scenes) < 2:
        raise runs.UserError(f"--dataroot {dataroot}: the test split needs two scenes with cars "
                             "and photos to measure edits")
    references = reference_colours(dataset, styles)
    rows = {kind: [] for kind in EDITS}
    generator = torch.Generator().manual_seed(seed)
    for n, s in enumerate(scenes):
        for kind in EDITS:
            label, inst, table, region, expected, old = apply_edit(
                kind, s, scenes[(n + 1) % len(scenes)], new_class)
            if table is not None:
                table = edits.complete(table, inst, clusters, model.opt.feat_num, generator)
            after = draw(model, label, inst, table)
            rows[kind].append(edit_numbers(s["image"], after, region, expected, old, references))
    return {kind: average(r) for kind, r in rows.items()}


def scene(model, dataset, index, styles):
    """One test scene as the edits need it, or None without a photo or a car: its maps, E's
    feature table, G's image, its largest car and the recorded styles."""
    item = dataset[index]
    inst = item["inst"][0].numpy()
    cars = [int(i) for i in np.unique(inst) if i // 1000 == CAR]
    if not item["has_image"] or not cars:
        return None
    table = None
    if model.E is not None:
        F = infer.instance_feature_map(model, item["inst"][None], "encoded", item["image"][None])
        table = edits.feature_table(F, inst)
    label = item["label"][0].numpy()
    stem = dataset.stems[index]
    car = max(cars, key=lambda i: int((inst == i).sum()))
    return {"label": label, "inst": inst, "table": table, "car": car, "styles": styles[stem],
            "image": draw(model, label, inst, table), "style": styles[stem][str(car)]}


def apply_edit(kind, s, other, new_class):
    """(label, inst, feature table, edited region, (expected class, style or None), the
    region's class before the edit)."""
    label, inst, table, car = s["label"], s["inst"], s["table"], s["car"]
    if kind == "remove":
        label, inst, fill = edits.remove(label, inst, car)
        return label, inst, table, s["inst"] == car, (fill, s["styles"].get(str(fill))), CAR
    if kind == "relabel":
        label, inst, _ = edits.relabel(label, inst, car, new_class)
        return (label, inst, table, s["inst"] == car,
                (new_class, s["styles"].get(str(new_class))), CAR)
    at = centre_of(other["inst"] == other["car"])
    label, inst, new_id = edits.paste(label, inst, other["label"], other["inst"], other["car"], at)
    if table is not None:
        table = {**table, new_id: other["table"][other["car"]]}
    region = inst == new_id
    return (label, inst, table, region, (CAR, other["style"]),
            int(np.bincount(s["label"][region]).argmax()))


def centre_of(mask):
    """The pixel ``edits.place`` centres an object's bounding box on, to put it back where it
    was: (x0 + w // 2, y0 + h // 2)."""
    ys, xs = np.nonzero(mask)
    return (int(xs.min() + (xs.max() - xs.min() + 1) // 2),
            int(ys.min() + (ys.max() - ys.min() + 1) // 2))


def draw(model, label, inst, table):
    """G's image of the maps (and feature table) -> (1, 3, H, W) in [-1, 1] on the CPU."""
    label_t, inst_t = torch.from_numpy(label)[None, None], torch.from_numpy(inst)[None, None]
    F = None if table is None else infer.table_feature_map(inst_t, table, model.opt.feat_num)
    return infer.synthesize(model, label_t, inst_t, F).cpu()


def reference_colours(dataset, styles):
    """{(class, style): mean RGB (3,) in 8-bit levels} of every recorded instance's pixels in the
    split's photos: how the renderer paints each style, textures and shading included."""
    sums = {}
    for index in range(len(dataset)):
        item = dataset[index]
        if not item["has_image"]:
            continue
        inst = item["inst"][0]
        photo = (item["image"] + 1) * 127.5                              # (3, H, W)
        for key, style in styles[dataset.stems[index]].items():
            mask = inst == int(key)
            if mask.any():
                total, count = sums.get((data.instance_class(int(key)), style), (0, 0))
                sums[(data.instance_class(int(key)), style)] = (
                    total + photo[:, mask].sum(dim=1), count + int(mask.sum()))
    return {k: (total / count).numpy() for k, (total, count) in sums.items()}


def nearest_reference(rgb, references):
    """The (class, style) whose reference colour is nearest ``rgb`` (3,)."""
    return min(references, key=lambda k: float(((references[k] - rgb) ** 2).sum()))


def edit_numbers(before, after, region, expected, old_class, references):
    """One edit's numbers: the change inside / outside the region (8-bit levels), whether the
    region's mean colour is nearest a reference of the expected class (and style, when the
    scene records it), and, as the baseline, whether before the edit it was nearest the old
    class."""
    mask = torch.from_numpy(region)[None, None]
    change = manipulate.change_inside_outside(before, after, mask)
    mean = lambda x: ((x[0, :, region] + 1) * 127.5).mean(dim=1).numpy()  # noqa: E731
    got, was = nearest_reference(mean(after), references), nearest_reference(mean(before),
                                                                            references)
    c, style = expected
    numbers = {**change, "new_class": float(got[0] == c), "old_class_before": float(
        was[0] == old_class)}
    if style is not None:
        numbers["new_style"] = float(got == (c, style))
        numbers["distance"] = float(np.sqrt(((mean(after) - references[(c, style)]) ** 2).sum()))
    return numbers


def average(rows):
    keys = {k for r in rows for k in r}
    return {**{k: float(np.nanmean([r[k] for r in rows if k in r])) for k in keys},
            "images": len(rows), "with_style": sum("new_style" in r for r in rows)}


def print_edits(report, new_class=VEGETATION):
    print("| edit | images | change inside | outside | within 8 px | beyond | before: looks "
          "like its old class | after: looks like its new class | its recorded style (images) "
          "| colour distance to that style |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {"remove": "remove a car (filled with the stuff around it)",
             "relabel": f"relabel a car to {data.class_name(new_class)}",
             "paste": "paste the next scene's car (with its E feature, if the run has E)"}
    for kind, r in report.items():
        style = (f"{r['new_style']:.0%} ({r['with_style']})" if r["with_style"] else "-")
        distance = f"{r['distance']:.1f}" if r["with_style"] else "-"
        print(f"| {names[kind]} | {r['images']} | {r['inside']:.1f} | {r['outside']:.1f} | "
              f"{r['near']:.1f} | {r['far']:.1f} | {r['old_class_before']:.0%} | "
              f"{r['new_class']:.0%} | {style} | {distance} |")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def build_parser():
    p = runs.CommandLine(
        prog="synthetic_city.py",
        description="The synthetic city: write it, or measure a model trained on it with "
                    "--instance_feat against its true styles (pix2pixHD sec. 3.4).")
    commands = p.add_subparsers(dest="command", required=True)
    q = commands.add_parser("write", help="write a synthetic city (pix2pixHD layout)")
    q.add_argument("root", help="folder to write (must not exist yet)")
    q.add_argument("--n_train", type=runs.whole(1), default=200,
                   help="training scenes (default 200)")
    q.add_argument("--n_test", type=runs.whole(0), default=20, help="test scenes (default 20)")
    q.add_argument("--width", type=runs.whole(16), default=256,
                   help="scene width in pixels (default 256)")
    q.add_argument("--height", type=runs.whole(16), default=128,
                   help="scene height in pixels (default 128)")
    q.add_argument("--seed", type=runs.whole(0), default=0,
                   help="the same seed writes the same bytes")

    q = commands.add_parser("evaluate", help="purity / ARI vs the true styles, restyle change")
    manipulate.add_model_options(q)
    g = q.add_argument_group("measurement")
    g.add_argument("--dataroot", required=True, help="synthetic city root (with styles.json)")
    g.add_argument("--classes", default="car,road", help="classes to measure (car,road)")
    g.add_argument("--min_area", type=runs.real(0), default=manipulate.MIN_AREA,
                   help="instance size threshold, as for encode (0.5)")
    g.add_argument("--n_restyle", type=runs.whole(0), default=10,
                   help="test images for the restyle change (10)")
    g.add_argument("--how_many", type=runs.whole(1), default=None,
                   help="only the first N training images")
    g.add_argument("--json", default=None, help="also write the numbers to this JSON file")

    q = commands.add_parser("edits", help="the editor's remove / relabel / paste: change "
                                          "inside vs outside, does the region look its class")
    manipulate.add_model_options(q)
    g = q.add_argument_group("measurement")
    g.add_argument("--dataroot", required=True, help="synthetic city root (with styles.json)")
    g.add_argument("--n_images", type=runs.whole(2), default=10,
                   help="test scenes with cars to edit (10)")
    g.add_argument("--relabel_to", default="vegetation",
                   help="the class a relabelled car becomes (vegetation: a car becomes a hedge)")
    g.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return p


def main(argv=None):
    opt = build_parser().parse_args(argv)
    try:
        {"write": command_write, "evaluate": command_evaluate,
         "edits": command_edits}[opt.command](opt)
    except (runs.UserError, data.DataError) as err:
        runs.fail("synthetic_city.py", err, 2, {"root": "--dataroot"})


def command_write(opt):
    start = time.perf_counter()
    try:
        make_synthetic_city(opt.root, opt.n_train, opt.n_test, opt.width, opt.height, opt.seed)
    except OSError as err:
        raise runs.UserError(f"{opt.root}: {err.strerror or err}; choose a new folder") from None
    print(f"wrote {opt.n_train} training and {opt.n_test} test scenes of {opt.width}x{opt.height} "
          f"to {opt.root} in {time.perf_counter() - start:.1f} s")


def command_evaluate(opt):
    model, cluster_file = manipulate.open_model(opt)
    clusters = manipulate.read_clusters(opt, model, cluster_file)
    with torch.inference_mode():
        report = evaluate(model, opt.dataroot, clusters, opt.classes.split(","), opt.min_area,
                          opt.seed, opt.n_restyle, opt.how_many)
    print_evaluation(report)
    if opt.json:
        Path(opt.json).write_text(json.dumps(report, indent=2) + "\n")


def command_edits(opt):
    if not (Path(opt.dataroot) / "styles.json").is_file():
        raise runs.UserError(f"--dataroot {opt.dataroot}: no styles.json; edits are measured on "
                             "a synthetic city (python synthetic_city.py write ROOT)")
    new_class = manipulate.class_id(opt.relabel_to)
    model, cluster_file = manipulate.open_model(opt, need_encoder=False)
    clusters = manipulate.read_clusters(opt, model, cluster_file, optional=True)
    with torch.inference_mode():
        report = measure_edits(model, opt.dataroot, clusters, opt.n_images, opt.seed, new_class)
    print_edits(report, new_class)
    if opt.json:
        Path(opt.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
