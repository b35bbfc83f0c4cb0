"""Claims about official_folder.py and onnx_export.py: a run folder written by NVIDIA's pix2pixHD
(``latest_net_G/D/E.pth``, ``iter.txt``, ``opt.txt``, ``features_clustered_010.npy``) of any
configuration is synthesized from, continued, fine-tuned from, encoded and restyled here; its
pickle is read only when trusted; a folder that does not fit is refused with the flags that
would; a trained G exports to ONNX that computes what PyTorch does, at any size.

The folders are written here as the official code writes them: its networks built in the
official layout from the layout facts (``test_official.py``), random weights saved with
``torch.save(net.state_dict())``, opt.txt in its ``name: value`` format, iter.txt with
``np.savetxt``.
"""

import argparse
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import data
import evaluate
import infer
import manipulate
import official
import official_folder
import runs
import synthetic_city
import train
from conftest import run_command, tree
from test_official import (LAYOUT, _randomised, official_global, official_local,
                           official_multiscale_D)

TINY_RUN = ["--no_vgg_loss", "--num_workers", "0", "--device", "cpu", "--print_freq", "1000",
            "--display_freq", "1000", "--seed", "0", "--loadSize", "64"]

# The official options of each configuration (the rest are the official defaults); tiny widths.
BASE = dict(label_nc=35, no_instance=False, netG="global", ngf=8, n_downsample_global=2,
            n_blocks_global=1, n_local_enhancers=1, n_blocks_local=1, num_D=2, n_layers_D=3,
            ndf=8, instance_feat=False, feat_num=3, nef=4, n_downsample_E=2)
CONFIGS = {
    "global": {},
    "local": dict(netG="local", ngf=4),
    "no_instance": dict(no_instance=True),
    "label_nc_0": dict(label_nc=0, no_instance=True),
    "instance_feat": dict(instance_feat=True),
    "label_feat": dict(label_feat=True),  # E averages over class regions, not instances
    "deeper_and_wider": dict(ngf=6, n_downsample_global=3, n_blocks_global=2, num_D=3,
                             n_layers_D=2, ndf=4),
}


def official_networks(options, seed=0):
    """NVIDIA's G, D (and E) of these options, in the official layout, random weights."""
    o = argparse.Namespace(**options)
    labels = (o.label_nc or 3) + (0 if o.no_instance else 1)
    features = o.instance_feat or getattr(o, "label_feat", False)
    G_in = labels + (o.feat_num if features else 0)
    if o.netG == "local":
        G = official_local(G_in, 3, o.ngf, o.n_downsample_global, o.n_blocks_global,
                           o.n_local_enhancers, o.n_blocks_local)
    else:
        G = official_global(G_in, 3, o.ngf, o.n_downsample_global, o.n_blocks_global)
    nets = {"G": _randomised(G, seed), "D": _randomised(
        official_multiscale_D(labels + 3, o.ndf, o.n_layers_D, o.num_D), seed + 1)}
    if features:  # the official E: G1's layout without residual blocks
        nets["E"] = _randomised(official_global(3, o.feat_num, o.nef, o.n_downsample_E, 0),
                                seed + 2)
    return nets


def write_official_run(folder, options, iter_txt=(2, 2), opt_txt=True):
    """An official run folder: latest_net_*.pth, iter.txt and opt.txt as NVIDIA's train.py
    writes them. Returns the official networks."""
    folder.mkdir(parents=True)
    nets = official_networks(options)
    for name, net in nets.items():
        torch.save(net.state_dict(), folder / f"latest_net_{name}.pth")
    if iter_txt is not None:
        np.savetxt(folder / "iter.txt", iter_txt, delimiter=",", fmt="%d")
    if opt_txt:
        every = {"name": folder.name, "gpu_ids": [0], "isTrain": True,
                 "max_dataset_size": float("inf"), "load_pretrain": "", "norm": "instance",
                 "dataroot": "./datasets/cityscapes/", "resize_or_crop": "scale_width",
                 "loadSize": 64, "fineSize": 32, "use_dropout": False, "label_feat": False,
                 **options}
        lines = [f"{k}: {v}" for k, v in sorted(every.items())]
        (folder / "opt.txt").write_text("------------ Options -------------\n" + "\n".join(lines)
                                        + "\n-------------- End ----------------\n")
    return nets


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """4 training and 1 test scene at 64x32, also with RGB label pictures (train_A/, train_B/)
    for label_nc 0."""
    root = synthetic_city.make_synthetic_city(tmp_path_factory.mktemp("city") / "city",
                                              n_train=4, n_test=1, width=64, height=32, seed=0)
    for phase in ("train", "test"):
        (root / f"{phase}_A").mkdir()
        (root / f"{phase}_B").mkdir()
        labels = sorted((root / f"{phase}_label").iterdir())
        for i, (label, photo) in enumerate(zip(labels, sorted((root / f"{phase}_img").iterdir()))):
            ids = torch.from_numpy(np.asarray(Image.open(label)).astype(np.int64))[None]
            data.label_to_image(ids, 35).save(root / f"{phase}_A" / f"{i}.png")
            Image.open(photo).save(root / f"{phase}_B" / f"{i}.png")
    return root


def generator_input(options, city):
    """G's input for the first test scene (with random features for E's channels)."""
    item = infer.inference_dataset(argparse.Namespace(**{
        **official_folder.OFFICIAL_DEFAULTS, **options, "loadSize": 64}), city)[0]
    x = data.generator_input(item["label"][None], item["inst"][None], options["label_nc"],
                             options["no_instance"])
    if options["instance_feat"] or options.get("label_feat"):
        x = torch.cat([x, torch.randn(1, options["feat_num"], *x.shape[-2:])], dim=1)
    return x


# ---------------------------------------------------------------------------------------------
# opt.txt and iter.txt
# ---------------------------------------------------------------------------------------------

def test_opt_txt_values_are_read_as_literals_and_never_evaluated(tmp_path):
    (tmp_path / "opt.txt").write_text(
        "------------ Options -------------\nbatchSize: 1\ngpu_ids: [0, 1]\nlr: 0.0002\n"
        "max_dataset_size: inf\nload_pretrain: \nno_instance: False\nnetG: local\n"
        "name: __import__('os').remove('x')\n-------------- End ----------------\n")
    options = official_folder.read_options(tmp_path)
    assert options == {"batchSize": 1, "gpu_ids": [0, 1], "lr": 0.0002,
                       "max_dataset_size": float("inf"), "load_pretrain": "",
                       "no_instance": False, "netG": "local",
                       "name": "__import__('os').remove('x')"}


def test_iter_txt_is_read_as_the_official_train_py_writes_it(tmp_path):
    np.savetxt(tmp_path / "iter.txt", (3, 120), delimiter=",", fmt="%d")
    assert official_folder.read_iter(tmp_path) == (3, 120)


# ---------------------------------------------------------------------------------------------
# Every configuration: synthesize, continue training
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_official_run_loads_and_computes_what_the_official_networks_compute(config, city,
                                                                              tmp_path):
    options = {**BASE, **CONFIGS[config]}
    nets = write_official_run(tmp_path / "run", options)
    model = infer.load_run(tmp_path / "run")
    x = generator_input(options, city)
    with torch.no_grad():
        torch.testing.assert_close(model.G(x), nets["G"](x))
        if options["instance_feat"] or options.get("label_feat"):
            photo = torch.rand(1, 3, 32, 64) * 2 - 1
            inst = torch.zeros(1, 1, 32, 64, dtype=torch.long)
            torch.testing.assert_close(  # one instance: E's output averaged over the image
                model.E(photo, inst), nets["E"](photo).mean(dim=(2, 3), keepdim=True).expand(
                    1, 3, 32, 64))
    assert model.opt.ngf == options["ngf"] and model.opt.netG == options["netG"]


def test_use_dropout_in_opt_txt_loads_without_dropout_as_the_official_g_had_none(city,
                                                                                tmp_path, capsys):
    """The official define_G never passes --use_dropout on: such a run's G has no dropout, and
    the same keys; loaded here, it computes what it computed there."""
    options = {**BASE, "use_dropout": True}
    nets = write_official_run(tmp_path / "run", options)
    model = infer.load_run(tmp_path / "run")
    assert "never gave its G dropout" in capsys.readouterr().out
    assert model.opt.use_dropout is False
    x = generator_input(options, city)
    model.G.train()  # where dropout would act
    with torch.no_grad():
        torch.testing.assert_close(model.G(x), nets["G"](x))


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_official_run_continues_training_from_its_iter_txt(config, city, tmp_path, capsys):
    """iter.txt (2, 2): epoch 2, 2 of its 4 images done, so iteration 4 + 2 = 6; two more
    iterations end epoch 2. The command names none of the run's architecture options: they
    come from its opt.txt (num_D 2 there, 3 by default here)."""
    options = {**BASE, **CONFIGS[config]}
    write_official_run(tmp_path / "run", options)
    label_nc = ["--label_nc", "0"] if options["label_nc"] == 0 else []
    code, out, err = run_command(train.main, [
        "--dataroot", city, "--checkpoints_dir", tmp_path, "--name", "run", *TINY_RUN,
        *label_nc, "--continue_train", "--max_iters", 8], capsys)
    assert code == 0, err
    assert "Resumed NVIDIA's" in out and "at epoch 2, iteration 6" in out
    assert "Adam starts afresh" in out
    checkpoint = runs.load_checkpoint(tmp_path / "run" / "latest.pt")
    assert (checkpoint["iteration"], checkpoint["epoch"]) == (8, 2)
    for name in runs.ARCHITECTURE_OPTIONS:
        assert checkpoint["opt"][name] == {**official_folder.OFFICIAL_DEFAULTS, **options}.get(
            name, runs.ARCHITECTURE_DEFAULTS.get(name)), name


def test_continuing_from_an_epoch_file_goes_on_after_that_epoch_with_its_weights(city, tmp_path,
                                                                                capsys):
    """--which_epoch 1 reads 1_net_*.pth, not latest_net_*: epoch 2 from its first image, so
    iteration 4 (4 images an epoch); the G that goes on is epoch 1's."""
    nets = write_official_run(tmp_path / "run", BASE)
    epoch1 = official_networks(BASE, seed=7)
    for name, net in epoch1.items():
        torch.save(net.state_dict(), tmp_path / "run" / f"1_net_{name}.pth")
    model = infer.load_run(tmp_path / "run", which_epoch="1")
    x = generator_input(BASE, city)
    with torch.no_grad():
        torch.testing.assert_close(model.G(x), epoch1["G"](x))
        assert not torch.allclose(model.G(x), nets["G"](x))
    code, out, err = run_command(train.main, [
        "--dataroot", city, "--checkpoints_dir", tmp_path, "--name", "run", *TINY_RUN,
        "--continue_train", "--which_epoch", "1", "--max_iters", 5], capsys)
    assert code == 0, err
    assert "at epoch 2, iteration 4 (0 images into epoch 2)" in out
    assert runs.load_checkpoint(tmp_path / "run" / "latest.pt")["iteration"] == 5


def test_evaluate_scores_an_official_folder_as_the_g_it_holds(city, tmp_path, capsys):
    """evaluate.py score --name of an official folder: the Table 1 numbers of its G, the same as
    scoring the loaded G directly."""
    write_official_run(tmp_path / "run", BASE)
    torch.manual_seed(0)
    evaluate.save_segmenter(evaluate.SmallSegmenter(input_size=(64, 32)).eval(),
                            tmp_path / "seg.pt2")
    code, _, err = run_command(evaluate.main, [
        "score", "--name", "run", "--checkpoints_dir", tmp_path, "--dataroot", city,
        "--segmenter", tmp_path / "seg.pt2", "--device", "cpu", "--json", tmp_path / "s.json"],
        capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "s.json").read_text())
    model = infer.load_run(tmp_path / "run")
    expected = evaluate.score_split(evaluate.model_synthesizer(model),
                                    infer.inference_dataset(model.opt, city, "test"),
                                    evaluate.load_segmenter(tmp_path / "seg.pt2"))
    assert report["images"] == 1
    assert (report["mIoU"], report["accuracy"]) == (expected["mIoU"], expected["accuracy"])


def test_continuing_with_a_flag_that_contradicts_opt_txt_is_refused(city, tmp_path, capsys):
    write_official_run(tmp_path / "run", BASE)
    code, _, err = run_command(train.main, [
        "--dataroot", city, "--checkpoints_dir", tmp_path, "--name", "run", *TINY_RUN,
        "--continue_train", "--ngf", 16], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "was trained with ngf 8 (now 16)" in err
    assert not (tmp_path / "run" / "latest.pt").exists()


def test_continuing_without_iter_txt_is_one_line_naming_which_epoch(city, tmp_path, capsys):
    write_official_run(tmp_path / "run", BASE, iter_txt=None)
    code, _, err = run_command(train.main, [
        "--dataroot", city, "--checkpoints_dir", tmp_path, "--name", "run", *TINY_RUN,
        "--continue_train"], capsys)
    assert code == 2 and "iter.txt not found" in err and "--which_epoch N" in err


def test_load_pretrain_of_an_official_global_run_starts_a_local_run(city, tmp_path, capsys):
    """The official recipe's second step from an official first step: G1 arrives unchanged (it
    is fixed for --niter_fix_global 1, so one iteration leaves it as loaded), and both official
    D_k, from the coarsest, of the three here."""
    nets = write_official_run(tmp_path / "g1", BASE)
    code, out, err = run_command(train.main, [
        "--dataroot", city, "--checkpoints_dir", tmp_path, "--name", "local", *TINY_RUN,
        "--netG", "local", "--ngf", 4, "--n_downsample_global", 2, "--n_blocks_global", 1,
        "--ndf", 8, "--num_D", 3, "--niter_fix_global", 1, "--load_pretrain", tmp_path / "g1",
        "--max_iters", 1], capsys)
    assert code == 0, err
    assert "G1 and 2 of the 3 D_k" in out
    G = infer.load_model(tmp_path / "local" / "latest.pt").G
    x = torch.randn(1, 36, 32, 64)
    with torch.no_grad():
        expected = nets["G"].model[:-3](x)  # the official G1 without its output layers
        torch.testing.assert_close(G.G1(x), expected)


def test_a_folder_that_does_not_fit_its_opt_txt_names_the_keys_and_the_flags_that_fit(
        tmp_path, capsys):
    nets = official_networks(BASE)
    write_official_run(tmp_path / "run", {**BASE, "ngf": 16})
    torch.save(nets["G"].state_dict(), tmp_path / "run" / "latest_net_G.pth")  # ngf 8 weights
    code, _, err = run_command(infer.main, [
        "--name", "run", "--checkpoints_dir", tmp_path, "--label", tmp_path / "x.png",
        "--out", tmp_path / "o.png", "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "latest_net_G.pth does not fit the networks of these options" in err
    assert "keys differ (front.stem.conv.weight" in err
    assert ("the flags that fit its shapes: --netG global --ngf 8 --n_downsample_global 2 "
            "--n_blocks_global 1 --label_nc 35\n") in err


def test_a_released_generator_folder_without_opt_txt_reads_its_options_from_the_shapes(
        city, tmp_path, capsys):
    """The official test script's line: test.py --name label2city_1024p --netG local --ngf 32
    (here tiny), with the released latest_net_G.pth alone in its folder."""
    options = {**BASE, **CONFIGS["local"]}
    nets = official_networks(options)
    (tmp_path / "released").mkdir()
    torch.save(nets["G"].state_dict(), tmp_path / "released" / "latest_net_G.pth")
    code, out, err = run_command(infer.main, [
        "--name", "released", "--checkpoints_dir", tmp_path, "--netG", "local", "--ngf", 4,
        "--resize_or_crop", "none", "--dataroot", city, "--results_dir", tmp_path / "results",
        "--num_workers", 0, "--device", "cpu"], capsys)
    assert code == 0, err
    assert "options read from the weights' shapes: --netG local --ngf 4" in out
    [synthesized] = (tmp_path / "results" / "released" / "test_latest" / "images").glob(
        "*_synthesized.png")
    assert Image.open(synthesized).size == (64, 32)


# ---------------------------------------------------------------------------------------------
# Instance features: the pickled cluster file, encode and restyle
# ---------------------------------------------------------------------------------------------

def test_the_pickled_cluster_file_is_read_only_with_trust_pickle_then_converted_once(
        city, tmp_path, capsys):
    write_official_run(tmp_path / "run", {**BASE, "instance_feat": True})
    centres = {7: np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]), 26: np.ones((1, 3))}
    np.save(tmp_path / "run" / "features_clustered_010.npy", centres)
    argv = ["--name", "run", "--checkpoints_dir", tmp_path, "--dataroot", city, "--device", "cpu",
            "--feature_source", "clusters", "--results_dir", tmp_path / "results",
            "--num_workers", 0]
    code, _, err = run_command(infer.main, argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "features_clustered_010.npy is the official cluster file, a pickle" in err
    assert "--trust_pickle" in err and not (tmp_path / "run" / "clusters.npz").exists()
    code, out, _ = run_command(infer.main, [*argv, "--trust_pickle"], capsys)
    assert code == 0 and "converted NVIDIA's" in out
    clusters = infer.load_clusters(tmp_path / "run" / "clusters.npz", 3, 35)
    assert sorted(clusters) == [7, 26]
    assert torch.equal(clusters[7], torch.tensor(centres[7], dtype=torch.float32))
    code, out, _ = run_command(infer.main, argv, capsys)  # the .npz now: no flag needed
    assert code == 0 and "converted" not in out


def test_an_untrusted_pickle_is_left_alone_when_e_encodes_the_photos(city, tmp_path, capsys):
    write_official_run(tmp_path / "run", {**BASE, "instance_feat": True})
    np.save(tmp_path / "run" / "features_clustered_010.npy", {26: np.ones((1, 3))})
    code, out, err = run_command(infer.main, [
        "--name", "run", "--checkpoints_dir", tmp_path, "--dataroot", city, "--device", "cpu",
        "--results_dir", tmp_path / "results", "--num_workers", 0], capsys)
    assert code == 0, err
    assert "synthesized 1 images" in out and not (tmp_path / "run" / "clusters.npz").exists()


def test_restyle_converts_the_official_pickle_when_trusted(city, tmp_path, capsys):
    write_official_run(tmp_path / "run", {**BASE, "instance_feat": True})
    np.save(tmp_path / "run" / "features_clustered_010.npy",
            {26: np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]])})
    argv = ["restyle", "--name", "run", "--checkpoints_dir", tmp_path, "--device", "cpu",
            "--dataroot", city, "--phase", "train", "--instance", "car:0", "--cluster", 1,
            "--out", tmp_path / "r.png"]
    code, _, err = run_command(manipulate.main, argv, capsys)
    assert code == 2 and "--trust_pickle" in err and not (tmp_path / "r.png").exists()
    code, out, err = run_command(manipulate.main, [*argv, "--trust_pickle"], capsys)
    assert code == 0, err
    assert "-> cluster 1 of 2" in out and (tmp_path / "r.png").exists()


def test_encode_and_restyle_an_official_run_with_an_encoder(city, tmp_path, capsys):
    """The official encode_features.py line (--name label2city_1024p_feat --netG local --ngf 32
    --resize_or_crop none) as manipulate.py encode: this project's cluster file, then a
    restyled car."""
    write_official_run(tmp_path / "run", {**BASE, **CONFIGS["local"], "instance_feat": True})
    flags = ["--name", "run", "--checkpoints_dir", tmp_path, "--device", "cpu"]
    code, out, err = run_command(manipulate.main, ["encode", *flags, "--dataroot", city,
                                                   "--min_area", 0], capsys)
    assert code == 0, err
    model = infer.load_run(tmp_path / "run")
    clusters = infer.load_clusters(tmp_path / "run" / "clusters.npz", 3, 35,
                                   runs.fingerprint(model.E))
    assert 26 in clusters  # the synthetic city's cars
    out_png = tmp_path / "restyled.png"
    code, out, err = run_command(manipulate.main, [
        "restyle", *flags, "--dataroot", city, "--phase", "train", "--instance", "car:0",
        "--out", out_png], capsys)
    assert code == 0, err
    assert Image.open(out_png).size == (2 * 64, 32) and "mean |change| inside" in out


# ---------------------------------------------------------------------------------------------
# ONNX export
# ---------------------------------------------------------------------------------------------

def test_onnx_export_equals_pytorch_at_the_traced_size_and_another(city, tmp_path, capsys):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    options = {**BASE, **CONFIGS["local"]}
    write_official_run(tmp_path / "run", options)
    path = tmp_path / "G.onnx"
    code, out, err = run_command(infer.main, [
        "--name", "run", "--checkpoints_dir", tmp_path, "--dataroot", city, "--device", "cpu",
        "--export_onnx", path], capsys)
    assert code == 0, err
    assert "64x32: max |ONNX Runtime - PyTorch|" in out and "32x16: max" in out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [x_in] = session.get_inputs()
    assert x_in.name == "x" and x_in.shape == ["B", 36, "H", "W"]  # dynamic, and an input
    G = infer.load_run(tmp_path / "run").G
    x = torch.randn(3, 36, 48, 80)  # a third size and another batch, never traced
    with torch.no_grad():
        expected = G(x)
    actual = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("network, flags", [
    ("G_local_1024p", "--netG local --ngf 32 --n_downsample_global 4 --n_blocks_global 9 "
                      "--n_local_enhancers 1 --n_blocks_local 3 --label_nc 35"),
    ("G_global_512p", "--netG global --ngf 64 --n_downsample_global 4 --n_blocks_global 9 "
                      "--label_nc 35"),
    ("G_global_512p_feat", "--netG global --ngf 64 --n_downsample_global 4 --n_blocks_global 9 "
                           "--label_nc 35 --instance_feat --feat_num 3"),
])
def test_the_released_layouts_read_back_as_their_official_flags(network, flags):
    layout = json.loads(LAYOUT.read_text())["networks"][network]
    with torch.device("meta"):
        state_dict = {key: torch.empty(shape) for key, shape in layout["keys"]}
    assert official.as_flags(official.options_from_shapes(G=state_dict)) == flags


# ---------------------------------------------------------------------------------------------
# Bad official folders: one line, exit code 2, the folder untouched
# ---------------------------------------------------------------------------------------------

def spoil_opt_txt(line, instead_of="ngf: 8"):
    def spoil(folder):
        text = (folder / "opt.txt").read_text()
        (folder / "opt.txt").write_text(text.replace(f"{instead_of}\n", f"{line}\n"))
    return spoil


def spoil_file(name, content):
    def spoil(folder):
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            np.save(folder / name, content, allow_pickle=True)
    return spoil


BAD_FOLDERS = {
    "a line of opt.txt that is not name: value": (
        spoil_opt_txt("this is no option"), "infer", r"opt\.txt, line \d+: .* not a 'name: value'"),
    "netG of opt.txt not global or local": (
        spoil_opt_txt("netG: medium", "netG: global"), "infer", r"netG: 'medium' is not a value the official"),
    "norm batch, a layout official.py does not map": (
        spoil_opt_txt("norm: batch", "norm: instance"), "infer", r"norm batch: official\.py maps .* instance norm"),
    "iter.txt not two integers": (
        spoil_file("iter.txt", b"epoch 3\n"), "train", r"iter\.txt: expected two integers"),
    "latest_net_G.pth an HTML page": (
        spoil_file("latest_net_G.pth", b"<html>404</html>"), "infer",
        r"latest_net_G\.pth: not a readable checkpoint"),
    "the pickled cluster file not a dict": (
        spoil_file("features_clustered_010.npy", np.array([1.0, 2.0])), "clusters",
        r"features_clustered_010\.npy: not the official cluster file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_a_bad_official_folder_is_one_line_and_stays_untouched(case, city, tmp_path, capsys):
    spoil, command, message = BAD_FOLDERS[case]
    write_official_run(tmp_path / "run", {**BASE, "instance_feat": True})
    spoil(tmp_path / "run")
    before = tree(tmp_path / "run")
    run_flags = ["--name", "run", "--checkpoints_dir", tmp_path, "--device", "cpu"]
    if command == "train":
        main, argv = train.main, ["--dataroot", city, *run_flags, *TINY_RUN[:-2],
                                  "--continue_train"]
    else:
        main, argv = infer.main, [*run_flags, "--dataroot", city, "--results_dir",
                                  tmp_path / "results", "--num_workers", 0]
        if command == "clusters":
            argv += ["--feature_source", "clusters", "--trust_pickle"]
    code, _, err = run_command(main, argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert tree(tmp_path / "run") == before
