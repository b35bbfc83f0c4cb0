"""Claims about the official options (NVIDIA's options/base_options.py, train_options.py,
test_options.py): each is accepted with the official meaning, or refused in one line that says
what to do instead; and what they do is real: crops, channels, normalization, dropout, the data
order and size, the HTML page, TensorBoard, the default dataset root.

Runs go through the command lines on tiny synthetic cities at 64x32, on the CPU.
"""

import contextlib
import csv
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import data
import infer
import manipulate
import runs
import synthetic_city
import train
import train_machinery
from conftest import run_command

TINY = ["--loadSize", "64", "--ngf", "8", "--n_downsample_global", "2", "--n_blocks_global", "1",
        "--ndf", "8", "--num_D", "1", "--no_vgg_loss", "--nThreads", "0", "--gpu_ids", "-1",
        "--print_freq", "1", "--display_freq", "1", "--seed", "0", "--max_iters", "2"]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return synthetic_city.make_synthetic_city(tmp_path_factory.mktemp("city") / "city", n_train=3,
                                              n_test=1, width=64, height=32, seed=0)


def train_run(capsys, city, ckpt, *extra, name="run"):
    return run_command(train.main, ["--dataroot", city, "--checkpoints_dir", ckpt, "--name", name,
                                    *TINY, *extra], capsys)


# The options of NVIDIA's options/base_options.py, train_options.py and test_options.py.
OFFICIAL_BASE = """name gpu_ids checkpoints_dir model norm use_dropout data_type verbose fp16
    local_rank batchSize loadSize fineSize label_nc input_nc output_nc dataroot resize_or_crop
    serial_batches no_flip nThreads max_dataset_size display_winsize tf_log netG ngf
    n_downsample_global n_blocks_global n_blocks_local n_local_enhancers niter_fix_global
    no_instance instance_feat label_feat feat_num load_features n_downsample_E nef
    n_clusters""".split()
OFFICIAL_TRAIN = """display_freq print_freq save_latest_freq save_epoch_freq no_html debug
    continue_train load_pretrain which_epoch phase niter niter_decay beta1 lr num_D n_layers_D ndf
    lambda_feat no_ganFeat_loss no_vgg_loss no_lsgan pool_size""".split()
OFFICIAL_TEST = """ntest results_dir aspect_ratio phase which_epoch how_many cluster_path
    use_encoded_image export_onnx engine onnx""".split()


def known_flags(parser):
    return {flag[2:] for action in parser._actions for flag in action.option_strings}


def test_every_official_option_is_known_to_train_and_infer():
    """Each is accepted with its meaning or refused in one line (the tests below); none is an
    unknown flag. (--export_onnx is the ONNX export, which another part of this work adds.)"""
    assert set(OFFICIAL_BASE + OFFICIAL_TRAIN) - known_flags(train.build_parser()) == set()
    assert set(OFFICIAL_BASE + OFFICIAL_TEST) - known_flags(infer.build_parser()) <= {
        "export_onnx"}


# --------------------------------------------------------------------------------------------
# Device and precision: --gpu_ids, --fp16, --data_type, and the flags that cannot apply
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, device, amp", [
    ([], "auto", None),
    (["--gpu_ids", "-1"], "cpu", None),
    (["--fp16"], "auto", True),
    (["--data_type", "16"], "auto", True),
    (["--data_type", "32"], "auto", False),
    (["--gpu_ids", "-1", "--fp16", "--amp"], "cpu", True),
])
def test_gpu_ids_fp16_and_data_type_mean_device_and_autocast(argv, device, amp):
    opt = train.build_parser().parse_args(argv)
    runs.resolve_run_options(opt, "train.py", distributed=True)
    assert (opt.device, opt.amp) == (device, amp)


@pytest.mark.parametrize("argv, message", [
    (["--gpu_ids", "0,1,2,3", "--batchSize", "8"],
     "torchrun --nproc_per_node 4 train.py ... without --gpu_ids (CUDA_VISIBLE_DEVICES=0,1,2,3 "
     "picks them); the official --batchSize 8 over 4 GPUs is --batchSize 2"),
    (["--data_type", "8"], "--data_type 8: convolutions do not compute in 8-bit integers"),
    (["--fp16", "--data_type", "32"], "--fp16 and --data_type 32 contradict each other"),
    (["--fp16", "--no-amp"], "--fp16 and --no-amp contradict each other"),
    (["--gpu_ids", "-1", "--device", "cuda"], "--gpu_ids -1 and --device cuda contradict"),
    (["--gpu_ids", "x"], "--gpu_ids x: expects GPU numbers like 0 or 0,1, or -1 for the CPU"),
    (["--model", "ui"], "--model ui: only pix2pixHD is here"),
    (["--n_clusters", "20"], "manipulate.py encode --n_clusters K"),
])
def test_official_flags_that_cannot_apply_are_one_line(argv, message, city, tmp_path, capsys):
    code, _, err = run_command(train.main, ["--dataroot", city, "--checkpoints_dir", tmp_path,
                                            *argv], capsys)
    assert code == 2 and message in err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_id_without_cuda_points_to_the_cpu(city, tmp_path, capsys):
    code, _, err = run_command(train.main, ["--dataroot", city, "--checkpoints_dir", tmp_path,
                                            "--gpu_ids", "0"], capsys)
    assert code == 2 and "no such CUDA device here (0 visible); --gpu_ids -1 for the CPU" in err


@pytest.mark.parametrize("flag, message", [
    ("--ntest", "--how_many N"), ("--engine", "TensorRT"), ("--onnx", "TensorRT"),
    ("--tf_log", "train.py --tf_log"), ("--n_clusters", "manipulate.py encode --n_clusters"),
    ("--niter_fix_global", "a training option")])
def test_official_test_flags_that_cannot_apply_are_one_line(flag, message, city, capsys):
    code, _, err = run_command(infer.main, ["--name", "x", "--dataroot", city, flag], capsys)
    assert code == 2 and err.startswith(f"infer.py: {flag}: ") and message in err


def test_nthreads_is_num_workers():
    assert train.build_parser().parse_args(["--nThreads", "3"]).num_workers == 3
    assert infer.build_parser().parse_args(["--nThreads", "3"]).num_workers == 3


# --------------------------------------------------------------------------------------------
# Data: --resize_or_crop crop, --serial_batches, --max_dataset_size, channels
# --------------------------------------------------------------------------------------------

def test_crop_takes_finesize_crops_of_the_image_at_its_own_size():
    """The official 'crop' (the 12 GB 1024p recipe): no resize, a random fineSize square, which
    moves with the draw; at test time the whole image ('none')."""
    boxes = set()
    for seed in range(8):
        torch.manual_seed(seed)
        resize_to, box, final, _ = data.draw_geometry((64, 32), "crop", 1024, 16, 4, True)
        assert resize_to == (64, 32) and final == (16, 16)
        assert box[2] - box[0] == box[3] - box[1] == 16 and 0 <= box[0] <= 48
        boxes.add(box)
    assert len(boxes) > 1
    assert infer.inference_resize_or_crop(type("O", (), {"resize_or_crop": "crop"})) == "none"


def training_order(city, *flags):
    opt = train.build_parser().parse_args(["--dataroot", str(city), *flags])
    procs = train_machinery.Processes(0, 1, torch.device("cpu"), False, torch.float32)
    dataset, sampler = train_machinery.training_data(opt, procs)
    orders = []
    for epoch in (1, 2, 3):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    return dataset, orders


def test_serial_batches_keep_the_file_order_and_max_dataset_size_the_first_files(city):
    dataset, orders = training_order(city, "--loadSize", "64", "--serial_batches",
                                     "--max_dataset_size", "2")
    all_stems = sorted(data.pairing_stem(p) for p in (city / "train_label").iterdir())
    assert dataset.dataset.dataset.stems == all_stems[:2]
    assert orders == [[0, 1]] * 3
    _, shuffled = training_order(city, "--loadSize", "64")
    assert any(order != [0, 1, 2] for order in shuffled)


def test_a_16_bit_grey_photo_keeps_its_16_bits(tmp_path):
    depth = (np.arange(8 * 4, dtype=np.uint16).reshape(4, 8) * 2000)
    Image.fromarray(depth).save(tmp_path / "d.png")
    picture = data.read_picture(Image.open(tmp_path / "d.png"), tmp_path / "d.png", 1,
                                "output_nc")
    x = data.to_tensor(picture)
    assert x.shape == (1, 4, 8)
    assert torch.allclose(x[0], torch.from_numpy(depth / 65535 * 2 - 1).float(), atol=1e-6)


def test_a_photo_with_other_channels_than_output_nc_is_refused():
    with pytest.raises(data.DataError, match="has 3 channels .* but output_nc is 1") as err:
        data.read_picture(Image.new("RGB", (8, 4)), "x.png", 1, "output_nc")
    assert err.value.fix == ("output_nc", 3)


def with_photos(city, tmp_path, mode):
    """A copy of ``city`` whose photos are converted to PIL ``mode``."""
    root = tmp_path / f"city_{mode}"
    for folder in ("train_label", "train_inst", "test_label", "test_inst"):
        (root / folder).mkdir(parents=True)
        for f in (city / folder).iterdir():
            (root / folder / f.name).write_bytes(f.read_bytes())
    for folder in ("train_img", "test_img"):
        (root / folder).mkdir()
        for f in (city / folder).iterdir():
            Image.open(f).convert(mode).save(root / folder / f.name)
    return root


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGBA", 4)])
def test_grey_and_rgba_photos_train_and_infer(mode, channels, city, tmp_path, capsys):
    root = with_photos(city, tmp_path, mode)
    code, _, err = train_run(capsys, root, tmp_path / "ck", "--output_nc", str(channels))
    assert code == 0, err
    saved = runs.load_checkpoint(tmp_path / "ck" / "run" / "latest.pt")
    assert saved["G"]["output.conv.weight"].shape[0] == channels
    assert saved["D"]["D.0.layers.0.conv.weight"].shape[1] == 36 + channels
    code, _, err = run_command(infer.main, ["--name", "run", "--checkpoints_dir", tmp_path / "ck",
                                            "--dataroot", root, "--results_dir", tmp_path / "r",
                                            "--gpu_ids", "-1", "--nThreads", "0"], capsys)
    assert code == 0, err
    out = Image.open(next((tmp_path / "r" / "run" / "test_latest" / "images").glob(
        "*_synthesized.png")))
    assert (out.mode, out.size) == (mode, (64, 32))
    files = [next((root / f"test_{k}").iterdir()) for k in ("label", "inst", "img")]
    code, _, err = run_command(infer.main, [
        "--name", "run", "--checkpoints_dir", tmp_path / "ck", "--gpu_ids", "-1", "--label",
        files[0], "--inst", files[1], "--image", files[2], "--out", tmp_path / "one.png"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "one.png").tobytes() == out.tobytes()  # as the split gave
    code, _, err = train_run(capsys, city, tmp_path / "ck", "--output_nc", str(channels),
                             name="rgb")  # RGB photos, other output_nc: refused, with the fix
    assert code == 2 and "has 3 channels (PIL mode RGB)" in err and "--output_nc 3" in err


def test_label_nc_0_reads_an_input_picture_of_input_nc_channels(city, tmp_path, capsys):
    """--label_nc 0 --input_nc 1: grey input pictures (train_A/) to RGB photos (train_B/); an RGB
    input with --input_nc 1 is refused, naming the fix."""
    root = tmp_path / "pictures"
    for phase in ("train", "test"):
        for side, mode in (("A", "L"), ("B", "RGB")):
            (root / f"{phase}_{side}").mkdir(parents=True)
            for f in (city / f"{phase}_img").iterdir():
                Image.open(f).convert(mode).save(root / f"{phase}_{side}" / f.name)
    code, _, err = train_run(capsys, root, tmp_path / "ck", "--label_nc", "0", "--input_nc", "1",
                             "--no_instance")
    assert code == 0, err
    saved = runs.load_checkpoint(tmp_path / "ck" / "run" / "latest.pt")
    assert saved["G"]["front.stem.conv.weight"].shape[1] == 1
    code, _, err = run_command(infer.main, ["--name", "run", "--checkpoints_dir", tmp_path / "ck",
                                            "--dataroot", root, "--results_dir", tmp_path / "r",
                                            "--gpu_ids", "-1", "--nThreads", "0"], capsys)
    assert code == 0, err
    label = Image.open(next((tmp_path / "r" / "run" / "test_latest" / "images").glob(
        "*_label.png")))
    assert label.mode == "L"  # the input picture itself, as it was read
    for f in (root / "train_A").iterdir():
        Image.open(f).convert("RGB").save(f)
    code, _, err = train_run(capsys, root, tmp_path / "ck", "--label_nc", "0", "--input_nc", "1",
                             "--no_instance", name="rgb")
    assert code == 2 and "has 3 channels (PIL mode RGB) but input_nc is 1" in err
    assert "or pass --input_nc 3" in err


# --------------------------------------------------------------------------------------------
# Networks: --norm batch, --use_dropout; older checkpoints
# --------------------------------------------------------------------------------------------

def opts(**changes):
    opt = train.build_parser().parse_args(["--ngf", "8", "--n_downsample_global", "2",
                                           "--n_blocks_global", "1", "--ndf", "8", "--num_D", "1",
                                           "--instance_feat", "--nef", "4"])
    vars(opt).update(changes)
    return opt


def test_norm_batch_puts_batch_norm_in_G_D_and_E_initialised_as_the_official_code():
    torch.manual_seed(0)
    nets = runs.build_networks(opts(norm="batch"))
    defaults = runs.build_networks(opts())
    for net, default in zip(nets, defaults):
        norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        n_instance = sum(isinstance(m, torch.nn.InstanceNorm2d) for m in default.modules())
        assert len(norms) == n_instance > 0
        assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules())
        assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)
        assert all(m.weight.std() > 0 and abs(m.weight.mean() - 1) < 0.1 for m in norms)


def test_use_dropout_drops_half_in_training_and_nothing_in_eval():
    torch.manual_seed(0)
    G = runs.build_networks(opts(use_dropout=True))[0]
    plain = runs.build_networks(opts())[0]
    assert plain.state_dict().keys() == G.state_dict().keys()  # dropout has no weights
    plain.load_state_dict(G.state_dict())
    x = torch.randn(1, 36 + 3, 32, 64)
    G.eval(), plain.eval()
    assert torch.equal(G(x), plain(x))
    G.train()
    torch.manual_seed(1)
    a = G(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, G(x))
    block = G.residual.block1
    h = block.relu(block.norm1(block.conv1(block.pad1(torch.randn(1, 32, 8, 16)))))
    kept = (block.dropout(h) != 0) & (h != 0)
    assert 0.3 < kept.float().sum() / (h != 0).float().sum() < 0.7


def test_a_checkpoint_from_before_the_new_options_resumes_with_their_defaults(city, tmp_path,
                                                                               capsys):
    assert train_run(capsys, city, tmp_path, "--max_iters", "1")[0] == 0
    path = tmp_path / "run" / "latest.pt"
    saved = torch.load(path, weights_only=True)
    for k in runs.ARCHITECTURE_DEFAULTS:
        del saved["opt"][k]
    torch.save(saved, path)
    code, _, err = train_run(capsys, city, tmp_path, "--continue_train")
    assert code == 0, err
    assert runs.load_checkpoint(path)["iteration"] == 2


# --------------------------------------------------------------------------------------------
# Features: --label_feat
# --------------------------------------------------------------------------------------------

def test_label_feat_gives_one_feature_per_class_region(city, tmp_path, capsys):
    code, _, err = train_run(capsys, city, tmp_path, "--label_feat", "--nef", "4",
                             "--n_downsample_E", "2")
    assert code == 0, err
    model = infer.load_model(tmp_path / "run" / "latest.pt")
    most_cars = 0
    for item in infer.inference_dataset(model.opt, city, "train"):
        label, inst = item["label"][None], item["inst"][None]
        features = infer.instance_feature_map(model, runs.feature_regions(model.opt, label, inst),
                                              "encoded", item["image"][None])
        for c in label.unique():
            inside = features[0][:, label[0, 0] == c]               # (feat_num, pixels)
            assert torch.allclose(inside, inside[:, :1].expand_as(inside), atol=1e-6)
        cars = inst[(inst >= 26000) & (inst < 27000)].unique()
        most_cars = max(most_cars, len(cars))
    assert most_cars >= 2  # several cars in one map got one feature, not one each
    flags = ["--name", "run", "--checkpoints_dir", tmp_path, "--gpu_ids", "-1"]
    code, out, err = run_command(manipulate.main, ["encode", *flags, "--dataroot", city], capsys)
    assert code == 0, err
    clusters = infer.load_clusters(tmp_path / "run" / "clusters.npz")
    assert all(c < 1000 for c in clusters)  # one entry per class, keyed by the label id
    code, _, err = run_command(infer.main, [*flags, "--dataroot", city, "--feature_source",
                                            "clusters", "--results_dir", tmp_path / "r",
                                            "--nThreads", "0"], capsys)
    assert code == 0, err


# --------------------------------------------------------------------------------------------
# Output: the HTML page, TensorBoard, --debug, --verbose, the default dataset root
# --------------------------------------------------------------------------------------------

def test_tensorboard_events_hold_the_logged_losses_and_the_samples(city, tmp_path, capsys):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is not installed (pip install tensorboard)")
    code, _, err = train_run(capsys, city, tmp_path, "--tf_log", "--display_winsize", "100")
    assert code == 0, err
    events = event_accumulator.EventAccumulator(str(tmp_path / "run" / "logs"),
                                                size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    with open(tmp_path / "run" / "loss_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for name in train.LOSS_NAMES:
        logged = events.Scalars(name)
        assert [e.step for e in logged] == [int(r["iteration"]) for r in rows] == [1, 2]
        assert [e.value for e in logged] == pytest.approx([float(r[name]) for r in rows],
                                                          rel=1e-5)
    for tag in ("input_label", "synthesized_image", "real_image"):
        images = events.Images(tag)
        assert [i.step for i in images] == [1, 2]
        assert (images[0].width, images[0].height) == (64, 32)
    page = (tmp_path / "run" / "web" / "index.html").read_text()
    grids = sorted(p.name for p in (tmp_path / "run" / "samples").glob("*.png"))
    assert page.index(grids[1]) < page.index(grids[0])  # newest first
    assert page.count('width="300"') == 2


def test_tf_log_without_tensorboard_is_one_line_before_anything_is_written(
        city, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    code, _, err = train_run(capsys, city, tmp_path, "--tf_log")
    assert code == 2 and "--tf_log needs TensorBoard: pip install tensorboard" in err
    assert not (tmp_path / "run").exists()


def test_debug_is_one_short_epoch_shown_at_every_iteration_with_batch_norm_and_dropout(
        city, tmp_path, capsys):
    code, out, err = run_command(train.main, [
        "--dataroot", city, "--checkpoints_dir", tmp_path, "--name", "run", *TINY[:-2],
        "--display_freq", "100", "--debug", "--no_html", "--verbose", "--norm", "batch",
        "--use_dropout"], capsys)
    assert code == 0, err
    saved = runs.load_checkpoint(tmp_path / "run" / "latest.pt")
    assert saved["G"]["residual.block1.norm1.running_mean"].abs().sum() > 0  # batch norm ran
    assert (saved["epoch"], saved["iteration"]) == (1, 3)  # 3 images, one epoch, then done
    assert len(list((tmp_path / "run" / "samples").glob("*.png"))) == 3
    assert not (tmp_path / "run" / "web").exists()
    n_G = sum(p.numel() for p in runs.build_networks(saved["opt"])[0].parameters())
    assert f"G: {n_G:,} parameters" in out and "GlobalGenerator(" in out


def test_without_dataroot_the_official_cityscapes_folder_is_used_and_said_first(
        city, tmp_path, capsys):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "cityscapes").symlink_to(city)
    with contextlib.chdir(tmp_path):
        code, out, err = run_command(train.main, [*TINY, "--max_iters", "1"], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == ("No --dataroot: training on ./datasets/cityscapes, the "
                                   "official default")
    assert "on ./datasets/cityscapes: 3 images" in out


def test_without_dataroot_or_cityscapes_folder_the_synthetic_city_is_said_first(
        city, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runs, "SYNTHETIC_CITY", str(city))  # already written, tiny
    with contextlib.chdir(tmp_path):
        code, out, err = run_command(train.main, [*TINY, "--max_iters", "1"], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == ("No --dataroot and no ./datasets/cityscapes: training on the "
                                   "synthetic city")


def test_infer_aspect_ratio_stretches_and_architecture_flags_must_be_the_models(
        city, tmp_path, capsys):
    assert train_run(capsys, city, tmp_path, "--max_iters", "1")[0] == 0
    flags = ["--name", "run", "--checkpoints_dir", tmp_path, "--dataroot", city, "--gpu_ids",
             "-1", "--results_dir", tmp_path / "r", "--nThreads", "0"]
    code, _, err = run_command(infer.main, [*flags, "--aspect_ratio", "2", "--ngf", "8"], capsys)
    assert code == 0, err
    images = tmp_path / "r" / "run" / "test_latest" / "images"
    assert {Image.open(f).size for f in images.iterdir()} == {(128, 32)}  # label, fake, real
    code, _, err = run_command(infer.main, [*flags, "--netG", "local", "--ngf", "32"], capsys)
    assert code == 2 and "was trained with netG global (given: local), ngf 8 (given: 32)" in err
