"""NVIDIA's pix2pixHD files, read into this project's networks.

The official networks are ``nn.Sequential`` lists, so the keys of their checkpoints are positions
(``model.17.conv_block.1.weight``, ``model1_1.4.weight``, ``scale0_layer2.0.weight``) where ours
are names (``residual.block2.conv1.weight``). The correspondence is a fact of the two layouts,
spelled out layer by layer below; the numerics are the same, so a converted checkpoint computes
exactly what it computed in the official code.

This lives apart from ``networks.py`` because it is compatibility, not the paper: a student who
copies ``networks.py`` needs none of it, and everything about NVIDIA's files (released
generators, and the run folders of the official trainer) belongs together here.
"""

from torch import nn

from networks import GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator


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
        raise ValueError(
            f"official checkpoint does not fit this {type(model).__name__}: "
            f"missing keys {first_keys(missing)}, unexpected keys {first_keys(unexpected)}; "
            "build the network with the options it was trained with (the released "
            "label2city_1024p: define_G('local', 36, ngf=32); label2city_512p: "
            "define_G('global', 36))")
    for key, value in converted.items():
        if tuple(value.shape) != tuple(ours[key].shape):
            raise ValueError(
                f"official checkpoint shape mismatch at {key}: checkpoint {tuple(value.shape)}, "
                f"network {tuple(ours[key].shape)}: the network was built for another "
                "number of input channels (labels, boundary map, features) or another width")
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
