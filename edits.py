r"""Semantic edits of a label map and its instance map: the manipulations the paper's title
promises (sec. 3.3: instance maps enable "removing/adding objects and changing the object
category"; sec. 3.4: "select an object instance and easily change its appearance"; Fig. 1).

G reads only the label map s, the boundary map B(I) of the instance map I and the instance
features F (sec. 3.4): an edit is a change of (s, I, F), and G redraws the photo,

.. math:: \hat x' = G\big(s' \oplus B(I') \oplus F'\big).

The maps follow the Cityscapes conventions of ``data.py``: ``label`` (H, W) label ids;
``inst`` (H, W) the label id on stuff pixels (road, sky) and ``class * 1000 + k`` for the k-th
object of a class. Objects are the Cityscapes classes with instances (``THINGS``: person to
bicycle); every other class is stuff. The features are kept as a table {instance id: (feat_num,)
vector}, not as a map, so that they follow the instances through an edit;
``infer.table_feature_map`` paints them into F when G runs. Every function takes numpy arrays or torch tensors (H, W),
leaves its inputs untouched and returns new numpy int64 arrays; an edit that cannot be done
raises ``EditError`` saying why. The browser editor (``editor.py``) is a thin layer over these.
"""

import numpy as np
import torch

import data
import infer

# Cityscapes classes with instances (hasInstances in cityscapesScripts' labels.py): person,
# rider, car, truck, bus, caravan, trailer, train, motorcycle, bicycle.
THINGS = frozenset(range(24, 34))
MAX_PER_CLASS = 1000  # ids class * 1000 + k need k < 1000


class EditError(ValueError):
    """An edit that cannot be done, in one line that says why."""


def is_thing(label_id):
    return int(label_id) in THINGS


def maps(label, inst):
    """Copies of (label, inst) as (H, W) int64 numpy arrays, checked to match."""
    label = np.array(np.asarray(label), dtype=np.int64).reshape(np.shape(label)[-2:])
    inst = np.array(np.asarray(inst), dtype=np.int64).reshape(np.shape(inst)[-2:])
    if label.shape != inst.shape:
        raise EditError(f"label map {label.shape} and instance map {inst.shape} differ in size")
    return label, inst


def instance_mask(inst, instance_id):
    mask = inst == instance_id
    if not mask.any():
        raise EditError(f"no instance {instance_id} in the map")
    return mask


def new_instance_id(inst, c):
    """An id for a new object of class ``c``: c * 1000 + (the largest k of that class in the map
    + 1), or c * 1000 when it has none, so it never collides with an id present."""
    ids = np.unique(inst)
    ks = ids[(ids >= c * 1000) & (ids < (c + 1) * 1000)] - c * 1000
    k = int(ks.max()) + 1 if len(ks) else 0
    if k >= MAX_PER_CLASS:
        raise EditError(f"class {c} ({data.class_name(c)}) already has an instance {c}999; "
                        "Cityscapes ids hold at most 1000 objects of a class")
    return c * 1000 + k


def relabel(label, inst, instance_id, new_class):
    """Instance (or stuff region) ``instance_id`` becomes class ``new_class``: an object gets a
    fresh id of its new class (a car becomes a truck), a stuff region the stuff id, which is the
    label id and merges with that class's pixels (a road becomes grass). -> (label, inst, new id).
    """
    label, inst = maps(label, inst)
    mask = instance_mask(inst, instance_id)
    new_class = int(new_class)
    if new_class < 0:
        raise EditError(f"class {new_class}: label ids are 0 or more")
    if new_class == data.instance_class(instance_id):
        raise EditError(f"instance {instance_id} is already of class {new_class} "
                        f"({data.class_name(new_class)})")
    new_id = new_instance_id(inst, new_class) if is_thing(new_class) else new_class
    label[mask], inst[mask] = new_class, new_id
    return label, inst, new_id


def remove(label, inst, instance_id):
    """Remove an object: its pixels take the stuff class most common along its border (the
    4-neighbours outside it; ties go to the smaller label id), and its id disappears. When no
    stuff touches it (a car inside a crowd of cars), the border grows outward one pixel at a
    time until it meets stuff. -> (label, inst, the filling class)."""
    label, inst = maps(label, inst)
    mask = instance_mask(inst, instance_id)
    stuff = (inst < 1000) & ~np.isin(label, list(THINGS)) & ~mask
    if not stuff.any():
        raise EditError(f"instance {instance_id}: the map has no stuff around it to fill it with")
    grown = mask
    while True:
        ring = dilate(grown) & ~grown
        border = label[ring & stuff]
        if len(border):
            break
        grown = grown | ring
    fill = int(np.bincount(border).argmax())
    label[mask], inst[mask] = fill, fill
    return label, inst, fill


def dilate(mask):
    """A boolean (H, W) mask grown by its 4-neighbours."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def paste(label, inst, src_label, src_inst, src_id, at, scale=1.0, flip=False):
    """Add an object: instance ``src_id`` of another (or the same) map (src_label, src_inst),
    mirrored left-right when ``flip``, scaled by ``scale`` (nearest neighbour), its bounding
    box centred on pixel ``at`` = (x, y) and clipped to the map, drawn over what is there. It
    keeps its class and gets a fresh id of it. -> (label, inst, new id)."""
    label, inst = maps(label, inst)
    src_label, src_inst = maps(src_label, src_inst)
    if src_id < 1000:
        raise EditError(f"instance {src_id} is stuff ({data.class_name(src_id)}); paste takes "
                        "objects (ids class * 1000 + k), paint draws stuff")
    if not scale > 0:
        raise EditError(f"scale {scale}: must be above 0")
    shape = object_shape(instance_mask(src_inst, src_id), scale, flip)
    placed = place(shape, at, label.shape)
    if not placed.any():
        raise EditError(f"at {at}: the object would land outside the {label.shape[1]}x"
                        f"{label.shape[0]} map")
    c = data.instance_class(src_id)
    new_id = new_instance_id(inst, c)
    label[placed], inst[placed] = c, new_id
    return label, inst, new_id


def object_shape(mask, scale=1.0, flip=False):
    """An object's mask cropped to its bounding box, flipped and scaled (nearest neighbour:
    output pixel i reads input pixel floor((i + 0.5) / scale))."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    if flip:
        crop = crop[:, ::-1]
    h, w = (max(1, round(n * scale)) for n in crop.shape)
    rows = np.minimum(((np.arange(h) + 0.5) / scale).astype(int), crop.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) / scale).astype(int), crop.shape[1] - 1)
    return crop[rows][:, cols]


def place(shape, at, size):
    """A (h, w) mask put into an (H, W) map with its centre pixel (h // 2, w // 2) on
    ``at`` = (x, y); what falls outside the map is cut off."""
    H, W = size
    h, w = shape.shape
    top, left = int(at[1]) - h // 2, int(at[0]) - w // 2
    placed = np.zeros((H, W), bool)
    y0, y1, x0, x1 = max(top, 0), min(top + h, H), max(left, 0), min(left + w, W)
    if y0 < y1 and x0 < x1:
        placed[y0:y1, x0:x1] = shape[y0 - top:y1 - top, x0 - left:x1 - left]
    return placed


def paint(label, inst, region, stuff_class):
    """Paint a stuff class over ``region`` (an (H, W) bool mask, from ``brush`` or ``box``):
    those pixels get label and instance id ``stuff_class``; objects keep their other pixels.
    -> (label, inst)."""
    label, inst = maps(label, inst)
    stuff_class = int(stuff_class)
    if is_thing(stuff_class) or stuff_class < 0:
        raise EditError(f"class {stuff_class} ({data.class_name(stuff_class)}) has instances; "
                        "paint draws stuff, add objects by pasting one")
    region = np.asarray(region, dtype=bool)
    if not region.any():
        raise EditError("the region to paint is empty (outside the map?)")
    label[region], inst[region] = stuff_class, stuff_class
    return label, inst


def brush(size, x, y, radius):
    """The (H, W) pixels whose centres lie within ``radius`` of pixel (x, y)'s centre."""
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    return (xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2


def box(size, x0, y0, x1, y1):
    """The (H, W) pixels of columns x0..x1 and rows y0..y1 (inclusive, any corner order)."""
    (x0, x1), (y0, y1) = sorted((x0, x1)), sorted((y0, y1))
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)


# ---------------------------------------------------------------------------------------------
# Instance features as a table (sec. 3.4)
# ---------------------------------------------------------------------------------------------

def feature_table(features, inst):
    """{instance id: (feat_num,) float32 tensor} from an instance-pooled feature map F (1,
    feat_num, H, W) (E's output, or cluster centres painted in) and its instance map (.., H, W):
    one vector per instance, read at its first pixel, since F is constant inside an instance."""
    ids, inverse = torch.unique(torch.as_tensor(np.asarray(inst)).reshape(-1),
                                return_inverse=True)
    pixels = torch.arange(len(inverse))
    first = torch.full((len(ids),), len(inverse)).scatter_reduce(0, inverse, pixels, "amin")
    vectors = features[0].reshape(features.shape[1], -1)[:, first.to(features.device)]
    return dict(zip(ids.tolist(), vectors.T.float().cpu()))


def complete(table, inst, clusters, feat_num, generator):
    """The table with an entry for every id of ``inst`` (ids no longer present dropped): a new
    instance gets a centre of its class drawn with ``generator`` (as
    ``infer.sample_cluster_features`` does), or zeros when its class has no clusters."""
    present = np.unique(np.asarray(inst)).tolist()
    out = {i: table[i] for i in present if i in table}
    for i in present:
        if i not in out:
            out[i] = draw_centre(clusters, data.instance_class(i), feat_num, generator)
    return out


def draw_centre(clusters, c, feat_num, generator):
    if not clusters or c not in clusters:
        return torch.zeros(feat_num)
    centres = torch.as_tensor(clusters[c], dtype=torch.float32)
    return centres[torch.randint(len(centres), (1,), generator=generator)[0]]


def restyle(table, instance_id, centre):
    """Sec. 3.4's edit: the instance's feature set to ``centre`` (a cluster centre, (feat_num,));
    every other instance keeps its own."""
    if instance_id not in table:
        raise EditError(f"no instance {instance_id} in the map")
    return {**table, instance_id: torch.as_tensor(centre, dtype=torch.float32)}


def diverse(inst, clusters, feat_num, seed):
    """Diverse results for one label map (sec. 3.4): every instance drawn from its class's
    clusters with a seeded generator, the draws of ``infer.py --feature_source clusters --seed
    SEED`` (``infer.sample_cluster_features``); classes without clusters get zeros."""
    inst = torch.as_tensor(np.asarray(inst)).reshape(1, 1, *np.shape(inst)[-2:])
    F, _ = infer.sample_cluster_features(inst, clusters or {}, feat_num,
                                         torch.Generator().manual_seed(seed))
    return feature_table(F, inst)
