"""Claims about official.py: NVIDIA's checkpoints load into our readable modules and compute
exactly what they computed in the official layout.

The tests build the networks the way NVIDIA's code lays them out (one ``nn.Sequential`` per
network, indices as keys) from the facts in ``tests/official_checkpoint_layout.json``, fill them
with random weights, load those weights into our modules through ``load_official_state_dict``
and check both compute the same, and that the parameter counts and key sets equal the layout
file's.
"""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from networks import Encoder, GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator
from official import convert_official_state_dict, load_official_state_dict

# The keys, shapes and parameter counts of the official networks (a copy of the team's
# ../shared/official_checkpoint_layout.json, kept beside the tests so that CI checks them).
LAYOUT = Path(__file__).resolve().parent / "official_checkpoint_layout.json"


# --------------------------------------------------------------------------------------------
# Official layout: parameter counts, key conversion, and the same forward pass
# --------------------------------------------------------------------------------------------

OFFICIAL_CONFIGS = {
    "G_local_1024p": lambda: LocalEnhancer(36, 3, ngf=32),
    "G_global_512p": lambda: GlobalGenerator(36, 3, ngf=64),
    "G_local_1024p_feat": lambda: LocalEnhancer(39, 3, ngf=32),
    "G_global_512p_feat": lambda: GlobalGenerator(39, 3, ngf=64),
    "E": lambda: Encoder(3, feat_num=3, nef=16, n_downsample=4),
    "D_numD2": lambda: MultiscaleDiscriminator(39, ndf=64, n_layers=3, num_D=2),
    "D_numD3": lambda: MultiscaleDiscriminator(39, ndf=64, n_layers=3, num_D=3),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_parameter_counts_and_converted_keys_equal_the_official_layout(name):
    layout = json.loads(LAYOUT.read_text())["networks"][name]
    with torch.device("meta"):  # full-size networks without allocating 700 MB
        model = OFFICIAL_CONFIGS[name]()
        official = {key: torch.empty(shape) for key, shape in layout["keys"]}
    assert sum(p.numel() for p in model.parameters()) == layout["parameters"]
    converted = convert_official_state_dict(model, official)
    ours = model.state_dict()
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)


def test_conversion_rejects_a_checkpoint_of_another_configuration_listing_keys():
    layout = json.loads(LAYOUT.read_text())["networks"]["G_local_1024p"]
    with torch.device("meta"):
        model = GlobalGenerator(36, 3, ngf=64)
        official = {key: torch.empty(shape) for key, shape in layout["keys"]}
    expected = r"unexpected keys model1_1\.1\.weight.*define_G\('local', 36, ngf=32\)"
    with pytest.raises(ValueError, match=expected):
        load_official_state_dict(model, official)


def test_conversion_rejects_wrong_shapes_naming_the_key():
    G = GlobalGenerator(36, ngf=4, n_downsample=1, n_blocks=1)
    official = official_global(37, 3, 4, 1, 1).state_dict()
    with pytest.raises(ValueError, match=r"front\.stem\.conv\.weight.*\(4, 37, 7, 7\)"):
        load_official_state_dict(G, official)


# The official layout, written from the facts in the layout file's notes: positions in Sequentials.

class OfficialResnetBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c))

    def forward(self, x):
        return x + self.conv_block(x)


def official_global_layers(input_nc, output_nc, ngf, n_down, n_blocks, with_output=True):
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), nn.InstanceNorm2d(ngf),
              nn.ReLU(True)]
    for i in range(n_down):
        c = ngf * 2 ** i
        layers += [nn.Conv2d(c, 2 * c, 3, 2, 1), nn.InstanceNorm2d(2 * c), nn.ReLU(True)]
    layers += [OfficialResnetBlock(ngf * 2 ** n_down) for _ in range(n_blocks)]
    for i in range(n_down):
        c = ngf * 2 ** (n_down - i)
        layers += [nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1),
                   nn.InstanceNorm2d(c // 2), nn.ReLU(True)]
    if with_output:
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
    return layers


class official_global(nn.Module):
    def __init__(self, input_nc, output_nc, ngf, n_down, n_blocks):
        super().__init__()
        self.model = nn.Sequential(*official_global_layers(input_nc, output_nc, ngf, n_down,
                                                           n_blocks))

    def forward(self, x):
        return self.model(x)


class official_local(nn.Module):
    def __init__(self, input_nc, output_nc, ngf, n_down, n_blocks, n_local, n_blocks_local):
        super().__init__()
        self.n_local = n_local
        self.model = nn.Sequential(*official_global_layers(
            input_nc, output_nc, ngf * 2 ** n_local, n_down, n_blocks, with_output=False))
        for n in range(1, n_local + 1):
            c = ngf * 2 ** (n_local - n)
            front = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, c, 7), nn.InstanceNorm2d(c),
                     nn.ReLU(True), nn.Conv2d(c, 2 * c, 3, 2, 1), nn.InstanceNorm2d(2 * c),
                     nn.ReLU(True)]
            rest = [OfficialResnetBlock(2 * c) for _ in range(n_blocks_local)]
            rest += [nn.ConvTranspose2d(2 * c, c, 3, 2, 1, output_padding=1),
                     nn.InstanceNorm2d(c), nn.ReLU(True)]
            if n == n_local:
                rest += [nn.ReflectionPad2d(3), nn.Conv2d(c, output_nc, 7), nn.Tanh()]
            setattr(self, f"model{n}_1", nn.Sequential(*front))
            setattr(self, f"model{n}_2", nn.Sequential(*rest))
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x):
        pyramid = [x]
        for _ in range(self.n_local):
            pyramid.append(self.down(pyramid[-1]))
        out = self.model(pyramid[-1])
        for n in range(1, self.n_local + 1):
            x_n = pyramid[self.n_local - n]
            out = getattr(self, f"model{n}_2")(getattr(self, f"model{n}_1")(x_n) + out)
        return out


class official_multiscale_D(nn.Module):
    def __init__(self, input_nc, ndf, n_layers, num_D):
        super().__init__()
        self.num_D, self.n_layers = num_D, n_layers
        for s in range(num_D):
            nf = ndf
            layers = [[nn.Conv2d(input_nc, nf, 4, 2, 2), nn.LeakyReLU(0.2, True)]]
            for j in range(1, n_layers + 1):
                prev, nf = nf, min(nf * 2, 512)
                layers.append([nn.Conv2d(prev, nf, 4, 2 if j < n_layers else 1, 2),
                               nn.InstanceNorm2d(nf), nn.LeakyReLU(0.2, True)])
            layers.append([nn.Conv2d(nf, 1, 4, 1, 2)])
            for j, layer in enumerate(layers):
                setattr(self, f"scale{s}_layer{j}", nn.Sequential(*layer))
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x):
        result = []
        for i in range(self.num_D):  # full resolution first, through scale num_D - 1
            feats, h = [], x
            for j in range(self.n_layers + 2):
                h = getattr(self, f"scale{self.num_D - 1 - i}_layer{j}")(h)
                feats.append(h)
            result.append(feats)
            x = self.down(x)
        return result


def _randomised(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def test_converted_official_global_generator_computes_the_same_image():
    official = _randomised(official_global(6, 3, 4, 2, 2))
    ours = load_official_state_dict(GlobalGenerator(6, 3, 4, 2, 2), official.state_dict())
    x = torch.randn(2, 6, 32, 48)
    torch.testing.assert_close(ours(x), official(x))


@pytest.mark.parametrize("n_local", [1, 2])
def test_converted_official_local_enhancer_computes_the_same_image(n_local):
    official = _randomised(official_local(6, 3, 4, 2, 1, n_local, 2))
    ours = LocalEnhancer(6, 3, 4, n_downsample_global=2, n_blocks_global=1,
                         n_local_enhancers=n_local, n_blocks_local=2)
    load_official_state_dict(ours, official.state_dict())
    x = torch.randn(1, 6, 64, 64)
    torch.testing.assert_close(ours(x), official(x))


def test_converted_official_encoder_computes_the_same_features():
    official = _randomised(official_global(3, 3, 4, 2, 0))  # the official E: G1 without blocks
    ours = load_official_state_dict(Encoder(3, 3, nef=4, n_downsample=2), official.state_dict())
    x = torch.randn(1, 3, 16, 16)
    inst = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    inst[..., :8] = 26001
    features = official(x)
    left, right = features[..., :8].mean(dim=(2, 3), keepdim=True), features[..., 8:].mean(
        dim=(2, 3), keepdim=True)                       # the two instances' means, by hand
    expected = torch.cat([left.expand(-1, -1, 16, 8), right.expand(-1, -1, 16, 8)], dim=3)
    torch.testing.assert_close(ours(x, inst), expected)


@pytest.mark.parametrize("num_D", [2, 3])
def test_converted_official_discriminator_computes_the_same_features(num_D):
    official = _randomised(official_multiscale_D(5, 4, 3, num_D))
    ours = load_official_state_dict(MultiscaleDiscriminator(5, 4, 3, num_D), official.state_dict())
    x = torch.randn(1, 5, 64, 64)
    for ours_k, official_k in zip(ours(x), official(x), strict=True):
        for a, b in zip(ours_k, official_k, strict=True):
            torch.testing.assert_close(a, b)
