"""Claims about networks.py: shapes, sizes, receptive field, pooling, and the official layout.

The official-equivalence tests build the networks the way NVIDIA's code lays them out (one
``nn.Sequential`` per network, indices as keys) from the facts in
``tests/official_checkpoint_layout.json``, fill them with random weights, load those weights
into our readable modules through ``load_official_state_dict`` and check both compute the same.
"""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from networks import (Encoder, GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator,
                      NLayerDiscriminator, convert_official_state_dict, define_D, define_E,
                      define_G, instance_average_pool, load_official_state_dict)

# The keys, shapes and parameter counts of the official networks (a copy of the team's
# ../shared/official_checkpoint_layout.json, kept beside the tests so that CI checks them).
LAYOUT = Path(__file__).resolve().parent / "official_checkpoint_layout.json"


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(32, 64), (64, 64), (48, 80)])
def test_global_generator_keeps_input_size_and_outputs_tanh_range(size):
    G1 = define_G("global", 5, ngf=4, n_downsample_global=3, n_blocks_global=2)
    y = G1(torch.randn(2, 5, *size))
    assert y.shape == (2, 3, *size)
    assert y.abs().max() <= 1


def test_global_generator_bottleneck_is_ngf_times_2_to_the_n_at_1_over_2_to_the_n():
    G1 = GlobalGenerator(5, ngf=4, n_downsample=3, n_blocks=1)
    h = G1.front(torch.randn(1, 5, 32, 64))
    assert h.shape == (1, 32, 4, 8)


def test_local_enhancer_runs_G1_at_half_resolution_and_outputs_full_resolution():
    G = LocalEnhancer(5, ngf=4, n_downsample_global=2, n_blocks_global=1, n_blocks_local=1)
    seen = {}
    G.G1.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].shape, out=o.shape))
    y = G(torch.randn(1, 5, 32, 64))
    assert y.shape == (1, 3, 32, 64)
    assert seen["inp"] == (1, 5, 16, 32)
    assert seen["out"] == (1, 8, 16, 32)  # G1 is ngf * 2 wide, summed with G2^(F)'s 2 ngf


def test_two_local_enhancers_give_4x_the_resolution_of_G1():
    G = LocalEnhancer(5, ngf=4, n_downsample_global=2, n_blocks_global=1, n_local_enhancers=2,
                      n_blocks_local=1)
    seen = {}
    G.G1.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].shape))
    assert G(torch.randn(1, 5, 64, 64)).shape == (1, 3, 64, 64)
    assert seen["inp"] == (1, 5, 16, 16)
    assert [type(e.output).__name__ for e in G.enhancers] == ["Identity", "Sequential"]


def test_G2_input_is_elementwise_sum_of_G2_front_and_G1_features():
    G = LocalEnhancer(5, ngf=4, n_downsample_global=2, n_blocks_global=1, n_blocks_local=1).eval()
    x = torch.randn(1, 5, 32, 32)
    seen = {}
    G.enhancers[0].residual.register_forward_hook(lambda m, i, o: seen.update(sum=i[0]))
    G(x)
    expected = G.enhancers[0].front(x) + G.G1(G.downsample(x))
    torch.testing.assert_close(seen["sum"], expected)


def test_multiscale_discriminator_returns_every_layer_of_every_scale():
    D = MultiscaleDiscriminator(7, ndf=8, n_layers=3, num_D=3)
    out = D(torch.randn(2, 7, 64, 128))
    assert len(out) == 3 and all(len(f) == 5 for f in out)
    assert [f.shape[1] for f in out[0]] == [8, 16, 32, 64, 1]
    # D1 sees the full image, D2 half of it, D3 a quarter: the prediction maps shrink accordingly.
    assert [f[0].shape[-2:] for f in out] == [(33, 65), (17, 33), (9, 17)]


def test_discriminator_width_is_capped_at_512():
    D = NLayerDiscriminator(3, ndf=256, n_layers=3)
    assert [layer.conv.out_channels for layer in D.layers] == [256, 512, 512, 512, 1]


def test_multiscale_discriminators_have_independent_weights():
    D = define_D(7, ndf=8, num_D=3)
    w = [d.layers[0].conv.weight for d in D.D]
    assert not torch.equal(w[0], w[1]) and w[0].data_ptr() != w[1].data_ptr()


def _receptive_field(convs):
    r = 1
    for conv in reversed(convs):
        r = (r - 1) * conv.stride[0] + conv.kernel_size[0]
    return r


def test_receptive_field_is_70():
    D = NLayerDiscriminator(3, ndf=8, n_layers=3)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert _receptive_field(convs) == 70

    # The same measured: with instance norm (which mixes the whole image) taken out, the gradient of
    # one central output pixel reaches exactly a 70x70 window of the input.
    for layer in D.layers:
        if hasattr(layer, "norm"):
            layer.norm = nn.Identity()
    nn.init.constant_(D.layers[0].conv.weight, 0.01)
    x = torch.randn(1, 3, 160, 160, requires_grad=True)
    pred = D(x)[-1]
    pred[0, 0, pred.shape[2] // 2, pred.shape[3] // 2].backward()
    reached = x.grad[0].abs().sum(0) > 0
    rows, cols = reached.any(1).nonzero(), reached.any(0).nonzero()
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70


# --------------------------------------------------------------------------------------------
# Instance-wise average pooling and the encoder
# --------------------------------------------------------------------------------------------

def _naive_instance_mean(features, inst):
    out = torch.empty_like(features)
    for b in range(features.shape[0]):
        for i in inst[b].unique():
            mask = inst[b, 0] == i
            for c in range(features.shape[1]):
                out[b, c][mask] = features[b, c][mask].mean()
    return out


# Ids close together take the table-by-id path; Cityscapes-like ids on a tiny map (spread wider
# than the map has pixels) take the renumbering path.
@pytest.mark.parametrize("seed,ids", [(0, [7, 26001, 26002, 24000, 11]), (1, [3, 0, 9, 4, 5]),
                                      (2, [-2, 40, 7, 8, 100])])
def test_instance_average_pool_equals_naive_per_instance_mean(seed, ids):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 4, 17, 23, generator=g, dtype=torch.float64)
    inst = torch.tensor(ids)[torch.randint(0, 5, (3, 1, 17, 23), generator=g)]
    torch.testing.assert_close(instance_average_pool(features, inst),
                               _naive_instance_mean(features, inst))


def test_instance_average_pool_keeps_same_id_in_two_images_apart():
    features = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    inst = torch.full((2, 1, 2, 2), 26001)
    assert torch.equal(instance_average_pool(features, inst), features)


def test_instance_average_pool_gradient_spreads_evenly_over_the_instance():
    features = torch.randn(1, 1, 2, 3, requires_grad=True)
    inst = torch.tensor([[[[1, 1, 1], [2, 2, 1]]]])
    instance_average_pool(features, inst)[0, 0, 0, 0].backward()
    # The pooled value at (0, 0) is the mean of instance 1's four pixels.
    expected = torch.tensor([[[[0.25, 0.25, 0.25], [0.0, 0.0, 0.25]]]])
    torch.testing.assert_close(features.grad, expected)


def test_encoder_output_is_constant_inside_each_instance():
    E = define_E(feat_num=3, nef=4, n_downsample_E=2)
    inst = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    inst[..., 4:10, 3:12] = 26001
    f = E(torch.randn(1, 3, 16, 16), inst)
    assert f.shape == (1, 3, 16, 16)
    for i in (0, 26001):
        values = f[0][:, inst[0, 0] == i]
        assert torch.allclose(values, values[:, :1].expand_as(values))


# --------------------------------------------------------------------------------------------
# Initialisation and coarse-to-fine loading
# --------------------------------------------------------------------------------------------

def test_conv_weights_are_initialised_from_normal_0_002():
    G = define_G("global", 36, ngf=16, n_downsample_global=2, n_blocks_global=2)
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.Conv2d)])
    assert abs(w.mean().item()) < 1e-3
    assert abs(w.std().item() - 0.02) < 1e-3


def test_local_enhancer_loads_a_trained_global_generator_into_G1():
    G1 = define_G("global", 5, ngf=8, n_downsample_global=2, n_blocks_global=1)
    G = define_G("local", 5, ngf=4, n_downsample_global=2, n_blocks_global=1, n_blocks_local=1)
    G.load_global_generator(G1.state_dict())
    for key, value in G.G1.state_dict().items():
        assert torch.equal(value, G1.state_dict()[key])
    x = torch.randn(1, 5, 16, 16)
    G1.output = nn.Identity()
    torch.testing.assert_close(G.G1(x), G1(x))


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
    with pytest.raises(ValueError, match=r"unexpected keys model1_1\.1\.weight.*--netG local"):
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
    torch.testing.assert_close(ours(x, inst), _naive_instance_mean(official(x), inst))


@pytest.mark.parametrize("num_D", [2, 3])
def test_converted_official_discriminator_computes_the_same_features(num_D):
    official = _randomised(official_multiscale_D(5, 4, 3, num_D))
    ours = load_official_state_dict(MultiscaleDiscriminator(5, 4, 3, num_D), official.state_dict())
    x = torch.randn(1, 5, 64, 64)
    for ours_k, official_k in zip(ours(x), official(x), strict=True):
        for a, b in zip(ours_k, official_k, strict=True):
            torch.testing.assert_close(a, b)
