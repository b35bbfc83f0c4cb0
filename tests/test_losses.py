"""Claims about the objective of sec. 3.2 (losses.py), checked on tiny tensors by hand."""

import math
import os

import pytest
import torch
import torchvision

import losses


# ---------------------------------------------------------------------------------------------
# GAN loss, eq. (2)
# ---------------------------------------------------------------------------------------------

# Two scales with known prediction maps; the intermediate feature maps hold values that would
# change every result if the loss looked at them instead of the last element.
D1_PRED = [0.5, 1.0, 0.0, 2.0]
D2_PRED = [-1.0]


def two_scale_output():
    d1 = torch.tensor(D1_PRED).view(1, 1, 2, 2)
    d2 = torch.tensor(D2_PRED).view(1, 1, 1, 1)
    decoy = torch.full((1, 4, 2, 2), 100.0)
    return [[decoy, d1], [decoy, decoy, d2]]


def mean(values):
    return sum(values) / len(values)


def test_lsgan_is_mse_to_one_and_zero_summed_over_scales():
    real = mean([(p - 1) ** 2 for p in D1_PRED]) + mean([(p - 1) ** 2 for p in D2_PRED])
    fake = mean([p ** 2 for p in D1_PRED]) + mean([p ** 2 for p in D2_PRED])
    assert (real, fake) == (0.5625 + 4.0, 1.3125 + 1.0)
    assert losses.gan_loss(two_scale_output(), True).item() == pytest.approx(real)
    assert losses.gan_loss(two_scale_output(), False).item() == pytest.approx(fake)
    # G's LSGAN loss is D's loss on the synthesized pair with the real target.
    assert losses.gan_loss(two_scale_output(), True, for_discriminator=False).item() == \
        pytest.approx(real)


def test_vanilla_gan_is_cross_entropy_of_sigmoid_summed_over_scales():
    def sigmoid(p):
        return 1 / (1 + math.exp(-p))
    real = sum(mean([-math.log(sigmoid(p)) for p in pred]) for pred in (D1_PRED, D2_PRED))
    fake = sum(mean([-math.log(1 - sigmoid(p)) for p in pred]) for pred in (D1_PRED, D2_PRED))
    assert losses.gan_loss(two_scale_output(), True, "vanilla").item() == pytest.approx(real)
    assert losses.gan_loss(two_scale_output(), False, "vanilla").item() == pytest.approx(fake)
    assert losses.gan_loss(two_scale_output(), True, "vanilla",
                           for_discriminator=False).item() == pytest.approx(real)


def test_hinge_discriminator_and_generator_losses():
    # D: relu(1 - d) on real, relu(1 + d) on fake; G: -d. Means per scale, summed over scales.
    d_real = mean([0.5, 0.0, 1.0, 0.0]) + 2.0
    d_fake = mean([1.5, 2.0, 1.0, 3.0]) + 0.0
    g = -mean(D1_PRED) + 1.0
    assert (d_real, d_fake, g) == (2.375, 1.875, 0.125)
    assert losses.gan_loss(two_scale_output(), True, "hinge").item() == pytest.approx(d_real)
    assert losses.gan_loss(two_scale_output(), False, "hinge").item() == pytest.approx(d_fake)
    assert losses.gan_loss(two_scale_output(), True, "hinge",
                           for_discriminator=False).item() == pytest.approx(g)


def test_gan_loss_rejects_what_it_cannot_mean():
    with pytest.raises(ValueError, match="not one of lsgan, vanilla, hinge"):
        losses.gan_loss(two_scale_output(), True, "wgan")
    with pytest.raises(ValueError, match="target_is_real=True"):
        losses.gan_loss(two_scale_output(), False, "hinge", for_discriminator=False)
    # One D's output (a list of tensors) would silently be read as one scale per feature map.
    with pytest.raises(TypeError, match="list over scales"):
        losses.gan_loss(two_scale_output()[0], True)


def test_gan_loss_is_fp32_under_bf16_autocast_and_reaches_the_prediction_map():
    d1 = torch.tensor(D1_PRED).view(1, 1, 2, 2).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = losses.gan_loss([[d1]], True, "hinge", for_discriminator=False)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.equal(d1.grad, torch.full_like(d1, -0.25))  # d(-mean d)/dd over 4 patches


# ---------------------------------------------------------------------------------------------
# Feature matching, eq. (4)
# ---------------------------------------------------------------------------------------------

def constant_features(values, sizes, requires_grad=False):
    """One D's output: constant maps of the given sizes, so each L1 mean is a known difference."""
    return [torch.full((2, c, h, h), v, requires_grad=requires_grad)
            for v, (c, h) in zip(values, sizes)]


# n_layers_D = 2: three intermediate maps, then the (B, 1, H', W') prediction.
SIZES = [(4, 8), (8, 4), (16, 3), (1, 2)]


def test_feature_matching_matches_eq4_with_official_weights():
    fake = [constant_features([1.0, 2.0, -1.0, 50.0], SIZES),
            constant_features([0.0, 0.5, 3.0, -50.0], SIZES)]
    real = [constant_features([0.0, 2.5, 1.0, 0.0], SIZES),
            constant_features([1.0, 0.5, 0.0, 0.0], SIZES)]
    # num_D = 2 -> 1/2 per scale; n_layers_D = 2 -> 4/3 per layer; the prediction map is left out.
    l1 = [1.0, 0.5, 2.0] + [1.0, 0.0, 3.0]
    expected = 10.0 * sum(0.5 * 4 / 3 * d for d in l1)
    assert expected == pytest.approx(50.0)
    assert losses.feature_matching_loss(fake, real).item() == pytest.approx(expected)
    assert losses.feature_matching_loss(fake, real, lambda_feat=1.0).item() == \
        pytest.approx(expected / 10)


def test_feature_matching_layer_weight_follows_discriminator_depth():
    # One scale of n_layers_D = 3 (five maps): weight 4/4 = 1 per layer, 1/1 per scale.
    sizes = [(2, 8), (2, 4), (2, 2), (2, 2), (1, 2)]
    fake = [constant_features([1.0, 1.0, 1.0, 1.0, 9.0], sizes)]
    real = [constant_features([0.0, 0.0, 0.0, 0.0, 0.0], sizes)]
    assert losses.feature_matching_loss(fake, real, lambda_feat=1.0).item() == pytest.approx(4.0)


def test_feature_matching_gradient_reaches_fake_features_only():
    fake = [constant_features([1.0, 2.0, -1.0, 50.0], SIZES, requires_grad=True)]
    real = [constant_features([0.0, 2.5, 1.0, 0.0], SIZES, requires_grad=True)]
    losses.feature_matching_loss(fake, real).backward()
    assert all(r.grad is None for r in real[0])
    # d/dfake of lambda * (4/3) * mean|fake - real| = lambda * (4/3) * sign(fake - real) / N.
    for f, r in zip(fake[0][:-1], real[0][:-1]):
        expected = 10.0 * 4 / 3 * torch.sign(f - r).detach() / f.numel()
        assert torch.allclose(f.grad, expected)
    assert fake[0][-1].grad is None


# ---------------------------------------------------------------------------------------------
# VGG perceptual loss
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return torchvision.models.vgg19(weights=None)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    # 32x32 is the smallest size that reaches relu5_1 (after four 2x2 max pools) with 2x2 maps.
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    return x, y


def vgg_loss_by_hand(vgg, x, y, lambda_vgg=10.0):
    """Walks vgg.features layer by layer and reads relu1_1, relu2_1, ... by their indices."""
    relu_index = {1: 1 / 32, 6: 1 / 16, 11: 1 / 8, 20: 1 / 4, 29: 1.0}
    total = 0.0
    with torch.no_grad():
        for index, layer in enumerate(vgg.features[:30]):
            x, y = layer(x.clone()), layer(y.clone())
            if index in relu_index:
                assert isinstance(layer, torch.nn.ReLU)
                total += relu_index[index] * (x - y).abs().mean().item()
    return lambda_vgg * total


def test_vgg_loss_matches_weighted_l1_of_relu_features(vgg, images):
    x, y = images
    expected = vgg_loss_by_hand(vgg, x, y)
    assert expected > 0
    assert losses.VGGLoss(vgg)(x, y).item() == pytest.approx(expected, rel=1e-5)
    # Accepts the whole network or its .features, and lambda_vgg scales the loss.
    assert losses.VGGLoss(vgg.features, lambda_vgg=1.0)(x, y).item() == \
        pytest.approx(expected / 10, rel=1e-5)


def test_vgg_loss_is_zero_for_identical_images(vgg, images):
    x, _ = images
    assert losses.VGGLoss(vgg)(x, x.clone()).item() == 0.0


def test_vgg_loss_trains_the_generator_not_vgg(vgg, images):
    x, y = images
    x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
    vgg_loss = losses.VGGLoss(vgg)
    vgg_loss(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert y.grad is None
    assert all(p.grad is None and not p.requires_grad for p in vgg_loss.parameters())


def test_vgg_loss_runs_in_fp32_under_bf16_autocast(vgg, images):
    x, y = images
    x = x.bfloat16()
    vgg_loss = losses.VGGLoss(vgg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = vgg_loss(x, y)
    assert loss.dtype == torch.float32
    # Equal to the fp32 computation on the same inputs: bf16 convolutions would be ~1% off.
    assert loss.item() == pytest.approx(vgg_loss_by_hand(vgg, x.float(), y), rel=1e-5)


def test_vgg_imagenet_normalize_maps_minus_one_one_to_imagenet_statistics(vgg, images):
    x, y = images
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = vgg_loss_by_hand(vgg, ((x + 1) / 2 - mean) / std, ((y + 1) / 2 - mean) / std)
    normalized = losses.VGGLoss(vgg, imagenet_normalize=True)(x, y).item()
    assert normalized == pytest.approx(expected, rel=1e-5)
    assert normalized != pytest.approx(losses.VGGLoss(vgg)(x, y).item(), rel=1e-3)


# ---------------------------------------------------------------------------------------------
# load_vgg19: local torch hub cache only
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def test_missing_vgg_weights_give_one_line_error_with_path_and_url(hub_dir):
    """The file to download, where to get it and where to put it; which flag trains without it
    is the command line's to say (train.py does)."""
    path = os.path.join(str(hub_dir), "checkpoints", "vgg19-dcbb9e9d.pth")
    for make in (losses.load_vgg19, losses.VGGLoss):
        with pytest.raises(losses.VGGWeightsMissing) as err:
            make()
        message = str(err.value)
        assert isinstance(err.value, RuntimeError)
        assert "\n" not in message
        assert path in message and "https://download.pytorch.org/models/vgg19" in message
        assert "--" not in message
        assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert not hub_dir.exists()  # nothing was downloaded or created


def test_cached_vgg_weights_are_loaded_through_torchvision_weights_api(hub_dir, monkeypatch):
    (hub_dir / "checkpoints").mkdir(parents=True)
    (hub_dir / "checkpoints" / "vgg19-dcbb9e9d.pth").touch()
    calls = []
    monkeypatch.setattr(torchvision.models, "vgg19", lambda **kwargs: calls.append(kwargs))
    losses.load_vgg19()
    assert calls == [{"weights": torchvision.models.VGG19_Weights.IMAGENET1K_V1}]
