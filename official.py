"""NVIDIA's pix2pixHD files, read into this project's networks.

The official networks are ``nn.Sequential`` lists, so the keys of their checkpoints are positions
(``model.17.conv_block.1.weight``, ``model1_1.4.weight``, ``scale0_layer2.0.weight``) where ours
are names (``residual.block2.conv1.weight``). The correspondence is a fact of the two layouts,
spelled out layer by layer below; the numerics are the same, so a converted checkpoint computes
exactly what it computed in the official code.

This lives apart from ``networks.py`` because it is compatibility, not the paper: a student who
copies ``networks.py`` needs none of it. The layout knowledge is here: the key map, and the
options a checkpoint was trained with, read back from its shapes (``options_from_shapes``), so
that a checkpoint of another configuration is refused with the flags that would fit it. The run
folders of the official trainer (opt.txt, iter.txt, the pickled clusters) are read by
``official_folder.py``, on top of this.
"""

import re

from torch import nn

from networks import GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator


class LayoutMismatch(ValueError):
    """An official state_dict that does not fit the network: ``keys`` are the keys that differ
    (missing, unexpected, or of another shape)."""

    def __init__(self, message, keys):
        super().__init__(message)
        self.keys = keys


def load_official_state_dict(model, state_dict):
    """Load a state_dict saved by the official pix2pixHD code into one of our networks.

    ``model`` is a ``GlobalGenerator``, ``LocalEnhancer``, ``Encoder`` or
    ``MultiscaleDiscriminator`` built with the checkpoint's options (for the released
    label2city_1024p generator: ``define_G('local', 36, ngf=32)``; for label2city_512p:
    ``define_G('global', 36)``). Keys are converted (``convert_official_state_dict``) and loaded
    strictly, so a checkpoint of another configuration fails with the keys or shapes that differ.
    """
    model.load_state_dict(convert_official_state_dict(model, state_dict), strict=True)
    return model


def convert_official_state_dict(model, state_dict):
    """Rename the official keys of ``state_dict`` to ``model``'s keys; check keys and shapes.

    The official networks are ``nn.Sequential`` lists, so their keys are positions: in G1 the stem
    conv is ``model.1``, downsampling convs ``model.4, 7, ...`` (each followed by norm and ReLU),
    then one index per residual block (``model.16.conv_block.1`` and ``.5`` are its two convs), the
    transposed convs, and the output conv. ``official_key_map`` spells out that correspondence.
    Raises ``ValueError`` listing missing or unexpected keys, or the first shape that differs.
    """
    names = official_key_map(model)  # official prefix -> our prefix
    ours = model.state_dict()
    converted, unexpected = {}, []
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix not in names:
            unexpected.append(key)
            continue
        converted[f"{names[prefix]}.{leaf}"] = value
    missing = [k for k in ours if k not in converted]
    if missing or unexpected:
        raise LayoutMismatch(
            f"official checkpoint does not fit this {type(model).__name__}: "
            f"missing keys {first_keys(missing)}, unexpected keys {first_keys(unexpected)}; "
            "build the network with the options it was trained with (the released "
            "label2city_1024p: define_G('local', 36, ngf=32); label2city_512p: "
            "define_G('global', 36))", missing + unexpected)
    differ = [k for k, v in converted.items() if tuple(v.shape) != tuple(ours[k].shape)]
    if differ:
        key = differ[0]
        more = f" and {len(differ) - 1} more keys" if len(differ) > 1 else ""
        raise LayoutMismatch(
            f"official checkpoint does not fit this {type(model).__name__}: shapes differ at "
            f"{key}: checkpoint "
            f"{tuple(converted[key].shape)}, network {tuple(ours[key].shape)}{more}: the network "
            "was built for another number of input channels (labels, boundary map, features) or "
            "another width", differ)
    return converted


def official_key_map(model):
    """{official module prefix: our module prefix} for every layer with weights in ``model``."""
    if isinstance(model, LocalEnhancer):
        names = global_generator_keys(model.G1, "model", "G1.")
        for n, G2 in enumerate(model.enhancers, start=1):
            names.update(enhancer_keys(G2, f"model{n}_1", f"model{n}_2", f"enhancers.{n - 1}."))
        return names
    if isinstance(model, GlobalGenerator):  # also the Encoder, which has the same layout
        return global_generator_keys(model, "model", "")
    if isinstance(model, MultiscaleDiscriminator):
        # Official 'scale{s}' counts from the coarsest image: scale num_D-1 is our D1 (= D[0]).
        num_D = len(model.D)
        return {f"scale{s}_layer{j}.0": f"D.{num_D - 1 - s}.layers.{j}.conv"
                for s in range(num_D) for j in range(len(model.D[0].layers))}
    raise TypeError(f"no official layout is known for {type(model).__name__}")


def global_generator_keys(G1, theirs, ours):
    n_down, n_blocks = len(G1.front) - 1, len(G1.residual)
    # Official Sequential: [pad, conv, norm, relu] + n_down * [conv, norm, relu]
    #                      + n_blocks * [ResnetBlock] + n_down * [convT, norm, relu]
    #                      + [pad, conv, tanh]
    names = {f"{theirs}.1": f"{ours}front.stem.conv"}
    for i in range(n_down):
        names[f"{theirs}.{4 + 3 * i}"] = f"{ours}front.down{i + 1}.conv"
    first_block = 4 + 3 * n_down
    names.update(residual_keys(theirs, first_block, f"{ours}residual", n_blocks))
    first_up = first_block + n_blocks
    for i in range(n_down):
        names[f"{theirs}.{first_up + 3 * i}"] = f"{ours}back.up{i + 1}.conv"
    if not isinstance(G1.output, nn.Identity):
        names[f"{theirs}.{first_up + 3 * n_down + 1}"] = f"{ours}output.conv"
    return names


def enhancer_keys(G2, front, rest, ours):
    # Official model{n}_1: [pad, conv7, norm, relu, conv3 stride 2, norm, relu]
    # Official model{n}_2: n_blocks * [ResnetBlock] + [convT, norm, relu] (+ [pad, conv7, tanh])
    n_blocks = len(G2.residual)
    names = {f"{front}.1": f"{ours}front.stem.conv", f"{front}.4": f"{ours}front.down1.conv",
             f"{rest}.{n_blocks}": f"{ours}back.up1.conv"}
    names.update(residual_keys(rest, 0, f"{ours}residual", n_blocks))
    if not isinstance(G2.output, nn.Identity):
        names[f"{rest}.{n_blocks + 4}"] = f"{ours}output.conv"
    return names


def residual_keys(theirs, first, ours, n_blocks):
    # Official conv_block: [pad, conv, norm, relu, pad, conv, norm]: convs at positions 1 and 5.
    names = {}
    for b in range(n_blocks):
        names[f"{theirs}.{first + b}.conv_block.1"] = f"{ours}.block{b + 1}.conv1"
        names[f"{theirs}.{first + b}.conv_block.5"] = f"{ours}.block{b + 1}.conv2"
    return names


def first_keys(keys, n=6):
    if not keys:
        return "none"
    more = f" ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# ---------------------------------------------------------------------------------------------
# The options an official checkpoint was trained with, read from its shapes
# ---------------------------------------------------------------------------------------------

def options_from_shapes(G=None, D=None, E=None, label_nc=35):
    """The architecture options (the official names) under which networks have the shapes of the
    official state_dicts ``G``, ``D``, ``E`` (any may be None). Every width, depth and count is
    in the shapes; only how G's input channels split into label channels, the boundary map and
    instance features is not, so ``label_nc`` (the official default 35) resolves it, and D's input
    (labels + boundary + image) or E's output (the features), when given, pin it down."""
    options = {}
    if E is not None:
        E_opts = generator_shapes(E)
        options.update(feat_num=E_opts["output_nc"], nef=E_opts["ngf"],
                       n_downsample_E=E_opts["n_downsample_global"])
    if D is not None:
        options.update(discriminator_shapes(D))
    if G is not None:
        G_opts = generator_shapes(G)
        G_in = G_opts.pop("input_nc")
        options.update(G_opts)
        if "D_input_nc" in options:  # D reads labels, boundary map and image
            label_and_boundary = options.pop("D_input_nc") - options["output_nc"]
        elif "feat_num" in options:  # E's features are the rest of G's input
            label_and_boundary = G_in - options["feat_num"]
        else:  # G alone: one extra channel is the boundary map, more are features too
            extra = G_in - (label_nc or 3)
            label_and_boundary = G_in if extra <= 1 else G_in - extra + 1
        split_channels(options, G_in, label_and_boundary, label_nc)
    if options.get("output_nc") == 3:  # the default: no flag needed
        del options["output_nc"]
    return {k: options[k] for k in SHAPE_OPTIONS if k in options}


SHAPE_OPTIONS = ["netG", "ngf", "n_downsample_global", "n_blocks_global", "n_local_enhancers",
                 "n_blocks_local", "label_nc", "no_instance", "instance_feat", "feat_num", "nef",
                 "n_downsample_E", "num_D", "n_layers_D", "ndf", "output_nc"]


def split_channels(options, G_in, label_and_boundary, label_nc):
    labels = label_nc or 3  # label_nc 0: an RGB label picture
    boundary = label_and_boundary - labels
    if boundary not in (0, 1):  # another label set: assume the boundary map, as the default
        labels, boundary = label_and_boundary - 1, 1
        label_nc = labels
    options.update(label_nc=label_nc, no_instance=boundary == 0)
    features = G_in - label_and_boundary
    options["instance_feat"] = features > 0
    if features > 0:
        options["feat_num"] = features


def generator_shapes(state_dict):
    """netG, ngf, depths and channels of an official G (or of E, a G without blocks)."""
    enhancers = sorted({int(m.group(1)) for k in state_dict
                        if (m := re.match(r"model(\d+)_1\.", k))})
    G1 = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    if "1.weight" not in G1:
        raise LayoutMismatch("not an official generator or encoder: no model.1.weight", [])
    n = len(enhancers)
    up_and_down = [k for k, v in G1.items()
                   if k.endswith(".weight") and "conv_block" not in k and v.shape[-1] == 3]
    options = {"netG": "local" if n else "global", "ngf": G1["1.weight"].shape[0] // 2 ** n,
               "n_downsample_global": len(up_and_down) // 2,
               "n_blocks_global": len({k.split(".")[0] for k in G1 if ".conv_block." in k}),
               "input_nc": G1["1.weight"].shape[1]}
    last = {k: v for k, v in state_dict.items()
            if k.startswith(f"model{n}_2." if n else "model.") and k.endswith(".weight")}
    output = max(last, key=lambda k: int(k.split(".")[1]))
    options["output_nc"] = last[output].shape[0]
    if n:
        blocks = {k.split(".")[1] for k in state_dict
                  if k.startswith("model1_2.") and "conv_block" in k}
        options.update(n_local_enhancers=n, n_blocks_local=len(blocks))
    return options


def discriminator_shapes(state_dict):
    """num_D, n_layers_D, ndf and the input channels of an official multi-scale D."""
    layers = {(int(m.group(1)), int(m.group(2))) for k in state_dict
              if (m := re.match(r"scale(\d+)_layer(\d+)\.", k))}
    if not layers or "scale0_layer0.0.weight" not in state_dict:
        raise LayoutMismatch("not an official discriminator: no scale0_layer0.0.weight", [])
    first = state_dict["scale0_layer0.0.weight"]
    return {"num_D": len({s for s, _ in layers}),
            "n_layers_D": len({j for s, j in layers if s == 0}) - 2,
            "ndf": first.shape[0], "D_input_nc": first.shape[1]}


def as_flags(options):
    """Options -> the command-line flags that ask for them (official names)."""
    flags = []
    for name, value in options.items():
        if value is True:
            flags.append(f"--{name}")
        elif value is not False:
            flags.append(f"--{name} {value}")
    return " ".join(flags)
