r"""The objective of pix2pixHD (Wang et al., CVPR 2018): the terms of eq. (2) to (5).

Sec. 3.2 ("Improved adversarial loss") builds the objective in three steps. The conditional GAN
loss of eq. (2) is played by G against each discriminator D_k; with the multi-scale
discriminators it becomes eq. (3), the sum over k = 1, 2, 3 (``gan_loss``); the feature-matching
loss of eq. (4) compares D_k's intermediate features of the real and the synthesized pair
(``feature_matching_loss``); and eq. (5) adds the two with the weight lambda = 10. The
implementation details of sec. 4 add a VGG perceptual loss with the same weight (``VGGLoss``),
which the paper reports slightly improves the results.

Eq. (5), the sum of all terms as the training step computes it, is stated once, in
``train.compute_losses``, which calls these functions.

Every discriminator output here is what ``networks.MultiscaleDiscriminator`` returns: a list over
the scales D1, D2, ... of lists of feature maps, the last of which is the (B, 1, H', W') prediction
map. Losses are pure functions of their inputs; nothing is cached between calls. This file
imports only torch and torchvision, so it can be copied on its own (Python 3.10 or newer).
"""

import os

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


GAN_MODES = ("lsgan", "vanilla", "hinge")


# ---------------------------------------------------------------------------------------------
# The adversarial loss, eq. (2) and (3)
# ---------------------------------------------------------------------------------------------

def gan_loss(predictions, target_is_real, mode="lsgan", for_discriminator=True):
    r"""The multi-scale adversarial loss, eq. (3): L_GAN of eq. (2) on every scale D_k, summed.

    The paper writes the conditional GAN loss with the cross-entropy of the original GAN, eq. (2),

    .. math::

        \mathcal{L}_{GAN}(G, D_k) = \mathbb{E}_{(s,x)}[\log D_k(s, x)]
                                  + \mathbb{E}_{s}[\log(1 - D_k(s, G(s)))],

    and with three discriminators the game of eq. (3),

    .. math::

        \min_G \max_{D_1, D_2, D_3} \sum_{k=1,2,3} \mathcal{L}_{GAN}(G, D_k),

    whose sum over k is this function's; the min and the max are the two steps of
    ``train.update``. Sec. 4 then trains with the least-squares loss of LSGAN instead of the
    cross-entropy. For one prediction map ``d`` of N patch scores, the loss is a mean over the N
    patches:

    * ``"lsgan"`` (default, the paper):  mean((d - t)^2) with t = 1 for real, 0 for fake;
    * ``"vanilla"``: mean(BCE(sigmoid(d), t)), computed from the logits for stability (the
      official code puts a sigmoid in D and uses BCELoss, which is the same function);
    * ``"hinge"``: for D, mean(relu(1 - d)) on real and mean(relu(1 + d)) on fake; for G,
      -mean(d). Not in the paper; offered because later work (SPADE) trains with it.

    For LSGAN and vanilla, G's loss is D's loss on the synthesized pair with the *real* target
    (the non-saturating form), so ``for_discriminator`` only matters for the hinge loss.

    Choices the paper leaves open, as the official code does them: only the last element of each
    scale's list (the prediction map) enters this loss; the losses of the scales are summed, not
    averaged; and the training step halves D's loss, ``loss_D = 0.5 * (loss_D_real +
    loss_D_fake)``, in ``train.compute_losses``.

    Args:
        predictions: list over scales of lists of feature maps, as ``MultiscaleDiscriminator``
            returns.
        target_is_real: True for the real pair (s, x), False for the synthesized pair (s, G(s)).
        mode: "lsgan", "vanilla" or "hinge".
        for_discriminator: False when the loss is G's; G's hinge loss exists only with
            ``target_is_real=True``.

    Returns:
        A scalar fp32 tensor.
    """
    if mode not in GAN_MODES:
        raise ValueError(f"gan_loss: mode {mode!r} is not one of {', '.join(GAN_MODES)}")
    if mode == "hinge" and not for_discriminator and not target_is_real:
        raise ValueError("gan_loss: the generator's hinge loss is -mean(D(s, G(s))); "
                         "call it with target_is_real=True")
    if torch.is_tensor(predictions[0]):
        # One D's list of feature maps would otherwise be read as one scale per feature map.
        raise TypeError("gan_loss: predictions must be a list over scales of lists of feature "
                        "maps; wrap a single discriminator's output in a list")

    loss = 0.0
    for features in predictions:
        # The prediction maps are 1-channel and small, so computing in fp32 costs nothing and
        # keeps the loss accurate under mixed precision.
        d = features[-1].float()                                          # (B, 1, H', W')
        if mode == "lsgan":
            loss = loss + F.mse_loss(d, torch.full_like(d, float(target_is_real)))
        elif mode == "vanilla":
            loss = loss + F.binary_cross_entropy_with_logits(
                d, torch.full_like(d, float(target_is_real)))
        elif not for_discriminator:
            loss = loss - d.mean()
        elif target_is_real:
            loss = loss + F.relu(1.0 - d).mean()
        else:
            loss = loss + F.relu(1.0 + d).mean()
    return loss


# ---------------------------------------------------------------------------------------------
# The feature-matching loss, eq. (4)
# ---------------------------------------------------------------------------------------------

def feature_matching_loss(fake_features, real_features, lambda_feat=10.0):
    r"""\lambda times L_FM of eq. (4), averaged over the scales D_k, with the official weights.

    Eq. (4) compares the features that D_k extracts from the real pair and from the
    synthesized one, layer by layer:

    .. math::

        \mathcal{L}_{FM}(G, D_k) = \mathbb{E}_{(s,x)} \sum_{i=1}^{T} \frac{1}{N_i}
            \big\| D_k^{(i)}(s, x) - D_k^{(i)}(s, G(s)) \big\|_1,

    where D_k^{(i)} is the i-th layer of D_k, N_i its number of elements and T the number of
    layers; the 1/N_i makes each term a mean absolute difference.

    Choices the paper leaves open, as the official code does them:

    * the T layers are all of D_k's outputs but the last (the prediction map), that is
      n_layers_D + 1 feature maps;
    * each layer is weighted by 4 / (n_layers_D + 1), so the weights of one scale add up to 4,
      and each scale by 1 / num_D, so the loss is an average over the scales, not the sum over k
      that eq. (5) writes;
    * the real features are constants: G's gradient must not reach D's view of the real pair.

    So the value is

        lambda_feat * sum_k sum_i (1 / num_D) * (4 / (n_layers_D + 1))
                                  * mean|D_k^(i)(s, G(s)) - D_k^(i)(s, x)|.

    Against eq. (5) with lambda = 10, the weight each scale's term actually gets is
    lambda_feat * 4 / num_D: 40/3 per D_k with three scales, where each layer counts 10/3.

    Args:
        fake_features: D's output on (s, G(s)): a list over scales of lists of feature maps.
        real_features: D's output on (s, x), the same structure.
        lambda_feat: lambda of eq. (5), 10 in the paper (sec. 4).

    Returns:
        A scalar tensor.
    """
    num_D = len(fake_features)
    D_weight = 1.0 / num_D
    loss = 0.0
    for fake, real in zip(fake_features, real_features, strict=True):
        n_layers_D = len(fake) - 2        # D_k returns n_layers_D + 2 maps, the last the prediction
        feat_weight = 4.0 / (n_layers_D + 1)
        for fake_i, real_i in zip(fake[:-1], real[:-1], strict=True):
            loss = loss + D_weight * feat_weight * F.l1_loss(fake_i, real_i.detach())
    return lambda_feat * loss


# ---------------------------------------------------------------------------------------------
# The VGG perceptual loss
# ---------------------------------------------------------------------------------------------

# VGG19 layers compared by the loss: (name, end of its slice of ``vgg19().features``, weight).
# The slice of each layer starts where the previous one ended; the weights are the official ones.
VGG_LAYERS = (
    ("relu1_1", 2, 1 / 32),
    ("relu2_1", 7, 1 / 16),
    ("relu3_1", 12, 1 / 8),
    ("relu4_1", 21, 1 / 4),
    ("relu5_1", 30, 1.0),
)

# Statistics of the ImageNet images VGG19 was trained on, for the opt-in ``imagenet_normalize``.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGLoss(nn.Module):
    r"""\lambda L_VGG, the perceptual loss sec. 4 adds to the objective (Johnson et al., 2016).

    .. math::

        \mathcal{L}_{VGG}(x, G(s)) = \sum_{i=1}^{5} w_i \, \frac{1}{M_i}
            \big\| \phi_i(G(s)) - \phi_i(x) \big\|_1,

    where phi_i is VGG19 up to relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1, M_i its number of
    elements, and w = (1/32, 1/16, 1/8, 1/4, 1). The paper (sec. 4, implementation details)
    names the loss and its weight lambda = 10; the layers, their weights and the L1 distance are
    the official code's.

    Input normalisation, which the paper does not mention: the official code feeds G's output
    and the photo, both in [-1, 1], to VGG as they are, although the ImageNet VGG19 was trained on
    images normalised by the ImageNet mean and standard deviation. The default keeps the official
    numerics (the trained models were made with them); ``imagenet_normalize=True`` maps [-1, 1]
    to the input VGG19 expects, ((x + 1) / 2 - mean) / std.

    VGG is a fixed measuring instrument: its parameters are frozen, it is put in eval mode (its
    layers hold no dropout or batch norm, so a later ``.train()`` changes nothing) and kept in
    fp32, and its forward runs with autocast disabled, so that under mixed-precision training the
    perceptual loss is still computed from fp32 tensors. On Ampere and newer GPUs cuDNN computes
    fp32 convolutions in TF32 by default (``torch.backends.cudnn.allow_tf32``, as for the
    official code), with a 10-bit mantissa; set it False for full fp32 arithmetic, at a cost in
    speed. Only the layers up to relu5_1 are kept.

    Args:
        vgg: a torchvision VGG19 or its ``.features``; when None, ``load_vgg19()`` supplies the
            ImageNet one (tests pass a randomly initialised one).
        lambda_vgg: lambda, the weight eq. (5) gives L_FM, which sec. 4 also gives this term:
            10 (the official code uses lambda_feat for both).
        imagenet_normalize: False (official) feeds [-1, 1] images as they are; True normalises
            them as ImageNet images first.
    """

    def __init__(self, vgg=None, lambda_vgg=10.0, imagenet_normalize=False):
        super().__init__()
        if vgg is None:
            vgg = load_vgg19()
        features = getattr(vgg, "features", vgg)
        self.slices = nn.ModuleList()
        start = 0
        for _, end, _ in VGG_LAYERS:
            self.slices.append(features[start:end])
            start = end
        self.slices.float().eval().requires_grad_(False)
        self.weights = tuple(weight for _, _, weight in VGG_LAYERS)
        self.lambda_vgg = lambda_vgg
        self.imagenet_normalize = imagenet_normalize
        # Non-persistent: they follow the module's device but are no part of its state_dict.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def phi(self, x):
        """The five feature maps phi_1(x) .. phi_5(x), relu1_1 to relu5_1; x: (B, 3, H, W) fp32."""
        if self.imagenet_normalize:
            x = ((x + 1) / 2 - self.mean) / self.std
        features = []
        for layers in self.slices:
            x = layers(x)             # (B, 3, H, W) -> (B, 64, H, W) ... -> (B, 512, H/16, W/16)
            features.append(x)
        return features

    def forward(self, x, y):
        """lambda_vgg * L_VGG between x = G(s) (gets gradients) and the photo y (a constant)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            # The photo's features are constants: no graph is kept for them.
            with torch.no_grad():
                phi_y = self.phi(y.float())
            phi_x = self.phi(x.float())
            loss = sum(w * F.l1_loss(fx, fy) for w, fx, fy in zip(self.weights, phi_x, phi_y))
        return self.lambda_vgg * loss


class VGGWeightsMissing(RuntimeError):
    """The ImageNet VGG19 weights are not in the local torch hub cache (never downloaded here)."""


def load_vgg19():
    """torchvision's VGG19 with ImageNet weights (IMAGENET1K_V1), read from the local cache only.

    torchvision would download a missing file; on a machine without internet that hangs or fails
    with a network error deep in urllib. So the file is looked up first where torchvision keeps
    it, ``<torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth``, and when it is absent the error says
    where to put it and where to get it.
    """
    weights = torchvision.models.VGG19_Weights.IMAGENET1K_V1
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if not os.path.isfile(path):
        raise VGGWeightsMissing(
            f"VGG19 ImageNet weights not found at {path}: download {weights.url} to that path")
    return torchvision.models.vgg19(weights=weights)
