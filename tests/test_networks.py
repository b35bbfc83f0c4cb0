"""Claims about networks.py: shapes, sizes, the receptive field, the instance pooling, the
initialisation and the coarse-to-fine loading. (That these networks are the official ones, bit
for bit, is test_official.py's claim.)"""

import pytest
import torch

from torch import nn

from networks import (GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator,
                      NLayerDiscriminator, define_D, define_E, define_G, instance_average_pool)


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
