"""The networks of pix2pixHD (Wang et al., CVPR 2018), sections 3.2 and 3.4 of the paper.

pix2pixHD synthesizes a photo from a semantic label map with a conditional GAN whose pieces are:

* the coarse-to-fine generator G = {G1, G2} (sec. 3.2, fig. 2):
    - ``GlobalGenerator`` G1, a residual encoder-decoder made of a front-end G1^(F), a stack of
      residual blocks G1^(R) and a back-end G1^(B), working at half the output resolution;
    - ``LocalEnhancer`` G2, which wraps G1 and adds its own front-end G2^(F), residual blocks G2^(R)
      and back-end G2^(B) at full resolution. The input of G2^(R) is the element-wise sum of the
      G2^(F) feature map and the last feature map of G1^(B);
* the multi-scale discriminators D1, D2, D3 (sec. 3.2): ``NLayerDiscriminator`` is one 70x70
  PatchGAN, ``MultiscaleDiscriminator`` runs one per level of an image pyramid and returns every
  intermediate feature map, which the feature-matching loss (eq. 4, ``losses.py``) needs;
* the instance feature encoder E (sec. 3.4): ``Encoder``, an encoder-decoder followed by
  ``instance_average_pool``, which gives every pixel the mean feature of its object instance.

Numerics follow the official implementation: instance norm without affine parameters (``norm``
"batch" gives batch norm with them, the official ``--norm batch``), reflection padding, ReLU in G and E, LeakyReLU(0.2) in D, 4x4 kernels with padding 2 in D, and weights drawn
from N(0, 0.02); a network built here equals the official one of the same options bit for bit,
and NVIDIA's checkpoints load into it (``official.py`` maps their keys). This file imports only
torch, so it can be copied on its own.
"""

from collections import OrderedDict

import torch
from torch import nn


# ---------------------------------------------------------------------------------------------
# Building blocks shared by G1, G2 and E
# ---------------------------------------------------------------------------------------------

NORMS = ("instance", "batch")


def normalization(kind, channels):
    """``"instance"`` (the paper's): instance norm without affine parameters; ``"batch"``: batch
    norm with them, as the official ``--norm batch``."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def stem(in_channels, out_channels, norm="instance"):
    """7x7 convolution with reflection padding, normalization, ReLU: the first layer of G1, G2,
    E."""
    return nn.Sequential(OrderedDict(
        pad=nn.ReflectionPad2d(3),
        conv=nn.Conv2d(in_channels, out_channels, kernel_size=7),
        norm=normalization(norm, out_channels),
        relu=nn.ReLU(inplace=True),
    ))


def downsample(in_channels, out_channels, norm="instance"):
    """Stride-2 3x3 convolution: (B, C, H, W) -> (B, C', H/2, W/2)."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
        norm=normalization(norm, out_channels),
        relu=nn.ReLU(inplace=True),
    ))


def upsample(in_channels, out_channels, norm="instance"):
    """Stride-2 3x3 transposed convolution: (B, C, H, W) -> (B, C', 2H, 2W).

    ``output_padding=1`` makes the output exactly twice the input size, as in the official code.
    """
    return nn.Sequential(OrderedDict(
        conv=nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1,
                                output_padding=1),
        norm=normalization(norm, out_channels),
        relu=nn.ReLU(inplace=True),
    ))


def output_layer(in_channels, out_channels):
    """7x7 convolution to the output channels and tanh, so images land in [-1, 1]."""
    return nn.Sequential(OrderedDict(
        pad=nn.ReflectionPad2d(3),
        conv=nn.Conv2d(in_channels, out_channels, kernel_size=7),
        tanh=nn.Tanh(),
    ))


class ResnetBlock(nn.Module):
    """Residual block of G^(R): x + conv(relu(norm(conv(x)))), 3x3 convs, reflection padding.

    With ``dropout`` (the official ``--use_dropout``), dropout with p = 0.5 between the two
    convolutions, where the official block puts it. The paper does not use it, and the official
    code never passes the flag on to G, so there it has no effect.
    """

    def __init__(self, channels, norm="instance", dropout=False):
        super().__init__()
        self.pad1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3)
        self.norm1 = normalization(norm, channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.5) if dropout else nn.Identity()
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3)
        self.norm2 = normalization(norm, channels)

    def forward(self, x):
        h = self.dropout(self.relu(self.norm1(self.conv1(self.pad1(x)))))
        return x + self.norm2(self.conv2(self.pad2(h)))


def residual_blocks(channels, n_blocks, norm="instance", dropout=False):
    return nn.Sequential(OrderedDict(
        (f"block{b + 1}", ResnetBlock(channels, norm, dropout)) for b in range(n_blocks)))


# ---------------------------------------------------------------------------------------------
# G1: the global generator
# ---------------------------------------------------------------------------------------------

class GlobalGenerator(nn.Module):
    r"""G1, the global generator network (sec. 3.2, fig. 2 of the paper).

    .. math:: G_1(x) = \mathrm{output}\big(G_1^{(B)}(G_1^{(R)}(G_1^{(F)}(x)))\big)

    * ``front`` G1^(F): a 7x7 stem of ``ngf`` channels, then ``n_downsample`` stride-2 convolutions,
      each doubling the width: (B, C_in, H, W) -> (B, ngf 2^n, H/2^n, W/2^n).
    * ``residual`` G1^(R): ``n_blocks`` residual blocks at that width.
    * ``back`` G1^(B): ``n_downsample`` stride-2 transposed convolutions halving the width, back to
      (B, ngf, H, W).
    * ``output``: a 7x7 convolution to ``output_nc`` channels followed by tanh (tanh is its last
      layer, applied once), so the image lies in [-1, 1].

    The paper trains G1 on 1024x512 images; the official defaults are ngf 64, 4 downsamplings and
    9 residual blocks (about 182.5 M parameters for a 36-channel input).

    With ``with_output=False`` the output layer is an identity and ``forward`` returns the last
    feature map of G1^(B): this is how the local enhancer G2 uses G1. ``norm`` and ``dropout``:
    see ``normalization`` and ``ResnetBlock``.
    """

    def __init__(self, input_nc, output_nc=3, ngf=64, n_downsample=4, n_blocks=9,
                 with_output=True, norm="instance", dropout=False):
        super().__init__()
        widths = [ngf * 2 ** i for i in range(n_downsample + 1)]  # ngf, 2 ngf, ..., ngf 2^n
        self.front = nn.Sequential(OrderedDict(
            [("stem", stem(input_nc, ngf, norm))]
            + [(f"down{i + 1}", downsample(widths[i], widths[i + 1], norm))
               for i in range(n_downsample)]))
        self.residual = residual_blocks(widths[-1], n_blocks, norm, dropout)
        self.back = nn.Sequential(OrderedDict(
            (f"up{i + 1}", upsample(widths[n_downsample - i], widths[n_downsample - i - 1], norm))
            for i in range(n_downsample)))
        self.output = output_layer(ngf, output_nc) if with_output else nn.Identity()

    def forward(self, x):
        # (B, C_in, H, W) -> (B, ngf 2^n, H/2^n, W/2^n) -> same -> (B, ngf, H, W) -> (B, 3, H, W)
        return self.output(self.back(self.residual(self.front(x))))


# ---------------------------------------------------------------------------------------------
# G2: the local enhancer
# ---------------------------------------------------------------------------------------------

class EnhancerBlock(nn.Module):
    r"""One local enhancer network G2 at one resolution (sec. 3.2).

    .. math:: G_2(x, f) = G_2^{(B)}\big(G_2^{(R)}(G_2^{(F)}(x) + f)\big)

    where f is the last feature map of the coarser generator (G1^(B), or the previous enhancer).
    ``front`` G2^(F): 7x7 stem of ``ngf`` channels, one stride-2 convolution to 2 ngf channels, so
    its output has exactly the size and width of f. ``residual`` G2^(R): residual blocks at 2 ngf.
    ``back`` G2^(B): one transposed convolution back to ngf channels at full resolution. Only the
    finest enhancer has an ``output`` layer (7x7 conv + tanh).
    """

    def __init__(self, input_nc, ngf, n_blocks, output_nc=None, norm="instance", dropout=False):
        super().__init__()
        self.front = nn.Sequential(OrderedDict(stem=stem(input_nc, ngf, norm),
                                               down1=downsample(ngf, 2 * ngf, norm)))
        self.residual = residual_blocks(2 * ngf, n_blocks, norm, dropout)
        self.back = nn.Sequential(OrderedDict(up1=upsample(2 * ngf, ngf, norm)))
        self.output = output_layer(ngf, output_nc) if output_nc else nn.Identity()

    def forward(self, x, f):
        # x: (B, C_in, H, W); f: (B, 2 ngf, H/2, W/2) -> (B, ngf, H, W), or (B, 3, H, W) if last
        return self.output(self.back(self.residual(self.front(x) + f)))


def image_pyramid_downsample():
    """3x3 average pooling, stride 2, padding 1, not counting the padding: the official way both
    the generator's input pyramid and the discriminators' image pyramid are made."""
    return nn.AvgPool2d(kernel_size=3, stride=2, padding=1, count_include_pad=False)


class LocalEnhancer(nn.Module):
    r"""The coarse-to-fine generator G = {G1, G2} (sec. 3.2, fig. 2).

    The input x is downsampled ``n_local_enhancers`` times by 2. G1 (here ``G1``, without its output
    layer) runs on the coarsest input; each enhancer in ``enhancers`` then adds the features of its
    own, twice finer, input to the features coming from below:

    .. math:: f_0 = G_1^{(B)}(G_1^{(R)}(G_1^{(F)}(x_N))), \quad
              f_n = G_{2,n}(x_{N-n}, f_{n-1}), \qquad x_0 = x

    and the last ``f_N`` is the image. The paper uses one enhancer (1024x512 -> 2048x1024) and notes
    that more can be stacked for higher resolutions. Widths follow the official code: G1 is
    ``ngf * 2^N`` wide and enhancer n is ``ngf * 2^(N-n)`` wide, so the released 1024p model
    (ngf 32, N = 1) has a 64-wide G1.
    """

    def __init__(self, input_nc, output_nc=3, ngf=32, n_downsample_global=4, n_blocks_global=9,
                 n_local_enhancers=1, n_blocks_local=3, norm="instance", dropout=False):
        super().__init__()
        if n_local_enhancers < 1:
            raise ValueError("LocalEnhancer needs n_local_enhancers >= 1; use GlobalGenerator "
                             "for 0")
        n = n_local_enhancers
        self.G1 = GlobalGenerator(input_nc, output_nc, ngf * 2 ** n, n_downsample_global,
                                  n_blocks_global, with_output=False, norm=norm, dropout=dropout)
        self.enhancers = nn.ModuleList(
            EnhancerBlock(input_nc, ngf * 2 ** (n - k), n_blocks_local,
                          output_nc if k == n else None, norm, dropout)
            for k in range(1, n + 1))
        self.downsample = image_pyramid_downsample()

    def forward(self, x):
        pyramid = [x]  # x_0 = x (full resolution), x_k downsampled k times
        for _ in self.enhancers:
            pyramid.append(self.downsample(pyramid[-1]))
        f = self.G1(pyramid[-1])
        for k, G2 in enumerate(self.enhancers, start=1):
            f = G2(pyramid[-1 - k], f)
        return f

    def load_global_generator(self, state_dict):
        """Load a trained ``GlobalGenerator``'s state_dict into G1, the first step of the paper's
        coarse-to-fine training: G1 is trained alone, then G2 is trained around it. G1's own output
        layer is not part of G2, so its keys are dropped; any other mismatch is an error."""
        kept = {k: v for k, v in state_dict.items() if not k.startswith("output.")}
        self.G1.load_state_dict(kept, strict=True)


# ---------------------------------------------------------------------------------------------
# D_k: PatchGAN discriminators at several scales
# ---------------------------------------------------------------------------------------------

class NLayerDiscriminator(nn.Module):
    r"""One PatchGAN discriminator D_k (sec. 3.2; Isola et al. 2017).

    ``layers[0]``: 4x4 conv, stride 2, LeakyReLU(0.2), no norm. ``layers[1..n_layers-1]``: 4x4
    conv, stride 2, instance norm, LeakyReLU, width doubling up to 512. ``layers[n_layers]``: the
    same with stride 1. ``layers[n_layers+1]``: 4x4 conv, stride 1, to one channel, no activation
    (LSGAN needs none). With n_layers = 3 each output pixel sees a 70x70 patch of the input.

    ``forward`` returns the output of every layer, the last being the (B, 1, H', W') prediction map:
    the feature-matching loss of eq. (4) compares the others between real and synthesized pairs.
    The padding of 2 (the official ``ceil((4 - 1) / 2)``) makes each map one pixel larger than a
    padding of 1 would; it does not change the receptive field.
    """

    def __init__(self, input_nc, ndf=64, n_layers=3, norm="instance"):
        super().__init__()
        widths = [min(ndf * 2 ** j, 512) for j in range(n_layers + 1)]
        layers = [self._layer(input_nc, widths[0], stride=2, norm=None)]
        for j in range(1, n_layers + 1):
            layers.append(self._layer(widths[j - 1], widths[j], stride=2 if j < n_layers else 1,
                                      norm=norm))
        layers.append(nn.Sequential(OrderedDict(
            conv=nn.Conv2d(widths[-1], 1, kernel_size=4, stride=1, padding=2))))
        self.layers = nn.ModuleList(layers)

    @staticmethod
    def _layer(in_channels, out_channels, stride, norm):
        parts = [("conv", nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=stride,
                                    padding=2))]
        if norm is not None:
            parts.append(("norm", normalization(norm, out_channels)))
        parts.append(("act", nn.LeakyReLU(0.2, inplace=True)))
        return nn.Sequential(OrderedDict(parts))

    def forward(self, x):
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    r"""The multi-scale discriminators D1, D2, D3 (sec. 3.2), the players of eq. (3), which
    ``losses.gan_loss`` states and sums.

    D_k is an ``NLayerDiscriminator`` with its own weights that sees the (label, image) pair
    downsampled k - 1 times by 2: D1 has the finest view and guides details, D3 the coarsest with
    the widest context. ``D[k - 1]`` holds D_k, and ``forward`` returns the list of D_k's features
    in the same order. The paper uses 3 scales; the official training script passes 2. (The
    official code names its scales from the coarsest, ``scale{num_D - 1 - k}`` for our ``D[k]``,
    which matters when weights move between runs of different num_D: see ``official.py`` and
    ``train.load_pretrained``.)
    """

    def __init__(self, input_nc, ndf=64, n_layers=3, num_D=3, norm="instance"):
        super().__init__()
        self.D = nn.ModuleList(NLayerDiscriminator(input_nc, ndf, n_layers, norm)
                               for _ in range(num_D))
        self.downsample = image_pyramid_downsample()

    def forward(self, x):
        outputs = []
        for k, D_k in enumerate(self.D):
            if k > 0:
                x = self.downsample(x)  # (B, C, H, W) -> (B, C, H/2, W/2)
            outputs.append(D_k(x))
        return outputs


# ---------------------------------------------------------------------------------------------
# E: the instance-level feature encoder and instance-wise average pooling
# ---------------------------------------------------------------------------------------------

def instance_average_pool(features, inst):
    r"""Instance-wise average pooling (sec. 3.4): every pixel gets the mean feature of its instance.

    .. math:: \bar f(p) = \frac{1}{|I(p)|} \sum_{q \in I(p)} f(q)

    where I(p) is the set of pixels of the same image with the same instance id as pixel p.

    ``features``: (B, C, H, W) float; ``inst``: (B, 1, H, W) integer instance ids (any values, as
    Cityscapes' ``label * 1000 + k``). Returns a tensor shaped like ``features``.

    Written as one scatter-add over all pixels of the batch into a table indexed by instance id,
    so its cost does not grow with the number of instances and it synchronises with the host once
    (to size the table), where the official code loops in Python over instances and channels. Ids
    are small in practice (Cityscapes' are below 34,000), so the table is indexed by the id itself
    and no sort is needed; ids spread wider than the image has pixels are first renumbered 0..n-1
    with ``torch.unique`` (a sort) to keep the table small. Sums are taken in float32, so bf16/fp16
    features under autocast are averaged accurately. Gradients flow to ``features``.
    """
    B, C, H, W = features.shape
    ids = inst.reshape(B, H * W).long()
    lo, hi = torch.aminmax(ids)
    span = int(hi - lo) + 1  # the one host synchronisation: the size of each image's table
    if span <= H * W:
        ids = ids - lo
    else:
        unique_ids, ids = torch.unique(ids, return_inverse=True)
        span = unique_ids.numel()
    # Row b of the table holds image b's instances, so equal ids in two images stay apart.
    index = (ids + span * torch.arange(B, device=ids.device).unsqueeze(1)).reshape(-1)  # (B*H*W,)
    values = features.transpose(0, 1).reshape(C, B * H * W).float()
    sums = torch.zeros(C, B * span, device=features.device).index_add(1, index, values)
    counts = torch.bincount(index, minlength=B * span).clamp(min=1)  # unused ids: avoid 0/0
    means = (sums / counts).to(features.dtype)  # (C, B * span)
    return means[:, index].reshape(C, B, H, W).transpose(0, 1)


class Encoder(GlobalGenerator):
    r"""The instance feature encoder E (sec. 3.4).

    .. math:: E(y, I)(p) = \frac{1}{|I(p)|} \sum_{q \in I(p)} \hat E(y)(q)

    \hat E is an encoder-decoder with the same front-end / back-end shape as G1 and no residual
    blocks (the official code builds it the same way): a 7x7 stem of ``nef`` channels,
    ``n_downsample`` stride-2 convolutions, as many transposed convolutions, and a 7x7 convolution
    to ``feat_num`` channels with tanh. Its output is averaged over each instance of the instance
    map I, so each object carries one low-dimensional feature vector (3 in the paper, sec. 4) that
    the generator reads as extra input channels. E is trained jointly with G; at test time its
    features are replaced by K-means cluster centres to choose an object's style
    (``manipulate.py``).
    """

    def __init__(self, input_nc=3, feat_num=3, nef=16, n_downsample=4, norm="instance"):
        super().__init__(input_nc, feat_num, nef, n_downsample, n_blocks=0, norm=norm)

    def forward(self, image, inst):
        # (B, 3, H, W), (B, 1, H, W) -> (B, feat_num, H, W), constant inside each instance
        return instance_average_pool(super().forward(image), inst)


# ---------------------------------------------------------------------------------------------
# Constructors with the official initialisation
# ---------------------------------------------------------------------------------------------

def init_weights(module):
    """Official initialisation: every (transposed) convolution weight ~ N(0, 0.02), biases keep
    PyTorch's default; batch norm scales ~ N(1, 0.02) and shifts 0. Instance norm here has no
    parameters."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def define_G(netG, input_nc, output_nc=3, ngf=64, n_downsample_global=4, n_blocks_global=9,
             n_local_enhancers=1, n_blocks_local=3, norm="instance", dropout=False):
    """G1 alone (``netG='global'``) or the full coarse-to-fine G (``netG='local'``), initialised."""
    if netG == "global":
        G = GlobalGenerator(input_nc, output_nc, ngf, n_downsample_global, n_blocks_global,
                            norm=norm, dropout=dropout)
    elif netG == "local":
        G = LocalEnhancer(input_nc, output_nc, ngf, n_downsample_global, n_blocks_global,
                          n_local_enhancers, n_blocks_local, norm, dropout)
    else:
        raise ValueError(f"netG must be 'global' or 'local', got {netG!r}")
    return init_weights(G)


def define_D(input_nc, ndf=64, n_layers_D=3, num_D=3, norm="instance"):
    return init_weights(MultiscaleDiscriminator(input_nc, ndf, n_layers_D, num_D, norm))


def define_E(input_nc=3, feat_num=3, nef=16, n_downsample_E=4, norm="instance"):
    return init_weights(Encoder(input_nc, feat_num, nef, n_downsample_E, norm))
