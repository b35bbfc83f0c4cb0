"""Issue 11, "nothing lost, nothing silently wrong", beside the table of test_bad_input.py: what
a run keeps when it is replaced, stopped or meets a bad file, and what inference and manipulation
say when the input is not what the model knows.

Everything goes through the command lines (``main(argv)`` in this process) on a tiny synthetic
city of 3 training scenes and 1 test scene at 64x32, with tiny networks, on the CPU.
"""

import re
import signal
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data.distributed import DistributedSampler

import infer
import losses
import manipulate
import runs
import synthetic_city
import train
from conftest import assert_same_tensors, tree

SEED = 0
TINY = ["--loadSize", "64", "--ngf", "8", "--n_downsample_global", "2", "--n_blocks_global", "1",
        "--ndf", "8", "--num_D", "2", "--nef", "8", "--no_vgg_loss", "--num_workers", "0",
        "--device", "cpu", "--print_freq", "1", "--display_freq", "1", "--seed", str(SEED)]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return synthetic_city.make_synthetic_city(tmp_path_factory.mktemp("city") / "city",
                                              n_train=3, n_test=1, width=64, height=32, seed=SEED)


def train_argv(city, ckpt, *extra, name="run"):
    return ["--dataroot", str(city), "--checkpoints_dir", str(ckpt), "--name", name, *TINY,
            *map(str, extra)]


def run(main, argv, capsys, script):
    """``main(argv)`` as ``script`` on the command line -> (exit code, stdout, stderr lines that
    are not a progress bar). No traceback may appear."""
    saved, sys.argv = sys.argv, [script]
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in re.split(r"[\r\n]", err)
             if line.strip() and not re.search(r"\|\s*\d+/\d+ \[", line)]
    return code, out, lines








# ---------------------------------------------------------------------------------------------
# Training: nothing lost
# ---------------------------------------------------------------------------------------------

def test_forgotten_continue_train_keeps_the_run_and_start_over_moves_it_aside_whole(
        city, tmp_path, capsys):
    train.main(train_argv(city, tmp_path, "--max_iters", 2))
    run_dir = tmp_path / "run"
    before = tree(run_dir)

    code, _, err = run(train.main, train_argv(city, tmp_path, "--max_iters", 4), capsys,
                       "train.py")
    assert code == 2 and len(err) == 1
    assert f"{run_dir} already holds a run (latest.pt at iteration 2, epoch 1)" in err[0]
    assert tree(run_dir) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    code, out, _ = run(train.main, train_argv(city, tmp_path, "--max_iters", 1, "--start_over"),
                       capsys, "train.py")
    assert code == 0
    [aside] = tmp_path.glob("run.replaced-*")
    assert f"--start_over: the earlier run is kept in {aside}" in out
    assert tree(aside) == before  # the whole old folder, latest.pt byte for byte
    assert runs.load_checkpoint(aside / "latest.pt")["iteration"] == 2

    # The new run started at iteration 0: it is the first iteration of a fresh run, exactly.
    fresh = train.main(train_argv(city, tmp_path / "fresh", "--max_iters", 1))
    new = runs.load_checkpoint(run_dir / "latest.pt")
    assert (new["epoch"], new["iteration"], new["epoch_iter"]) == (1, 1, 1)
    assert_same_tensors(new["G"], fresh["G"].state_dict())
    assert [row.split(",")[1] for row in
            (run_dir / "loss_log.csv").read_text().splitlines()[1:]] == ["1"]


def test_sigterm_mid_run_saves_and_the_resumed_run_ends_bit_for_bit_as_a_straight_one(
        city, tmp_path, monkeypatch, capsys):
    # With an image pool, whose history and random draws must resume too.
    extra = ["--pool_size", 2]
    train.main(train_argv(city, tmp_path, *extra, "--max_iters", 4, name="straight"))

    calls, gan_loss = [], losses.gan_loss

    def sigterm_in_iteration_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # three GAN losses per iteration: iteration 2's first
            signal.raise_signal(signal.SIGTERM)
        return gan_loss(*args, **kwargs)

    monkeypatch.setattr(losses, "gan_loss", sigterm_in_iteration_2)
    code, _, err = run(train.main, train_argv(city, tmp_path, *extra, "--max_iters", 4,
                                              "--save_latest_freq", 100, name="stopped"),
                       capsys, "train.py")
    assert code == 143 and any("SIGTERM" in line for line in err)
    stopped = runs.load_checkpoint(tmp_path / "stopped" / "latest.pt")
    assert (stopped["iteration"], stopped["epoch_iter"]) == (2, 2)

    monkeypatch.setattr(losses, "gan_loss", gan_loss)
    train.main(train_argv(city, tmp_path, *extra, "--continue_train", "--max_iters", 4,
                          name="stopped"))
    a = runs.load_checkpoint(tmp_path / "straight" / "latest.pt")
    b = runs.load_checkpoint(tmp_path / "stopped" / "latest.pt")
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"]) == (2, 4)
    for key in ("G", "D", "optimizer_G", "optimizer_D", "image_pool"):
        assert_same_tensors(a[key], b[key])
    assert a["optimizer_G"]["param_groups"] == b["optimizer_G"]["param_groups"]


def test_a_bad_file_mid_epoch_stops_with_one_line_and_keeps_the_iterations_done(
        city, tmp_path, capsys):
    # Epoch 1's order, as train.py draws it; the scene at position k > 0 gets a broken photo
    # (not scene 0: train.py reads that one before it starts, to check the split).
    sampler = DistributedSampler(range(3), num_replicas=1, rank=0, shuffle=True, seed=SEED)
    sampler.set_epoch(1)
    order = list(sampler)
    k = next(k for k in range(1, 3) if order[k] != 0)
    broken = tmp_path / "broken"
    synthetic_city.make_synthetic_city(broken, n_train=3, n_test=1, width=64, height=32,
                                       seed=SEED)
    photo = sorted((broken / "train_img").iterdir())[order[k]]
    good = photo.read_bytes()
    photo.write_bytes(good[:len(good) // 2])

    code, _, err = run(train.main, train_argv(broken, tmp_path, "--max_iters", 4), capsys,
                       "train.py")
    assert code == 2 and len(err) == 1 and err[0].startswith("train.py: ")
    assert f"{photo}: cannot read this image" in err[0]
    saved = runs.load_checkpoint(tmp_path / "run" / "latest.pt")
    assert (saved["epoch"], saved["iteration"], saved["epoch_iter"]) == (1, k, k)

    photo.write_bytes(good)  # fixed: the run goes on from there
    out = train.main(train_argv(broken, tmp_path, "--continue_train", "--max_iters", 4))
    assert (out["epoch"], out["iteration"]) == (2, 4)


def test_leftover_temporary_checkpoints_are_removed_when_the_run_resumes(city, tmp_path):
    train.main(train_argv(city, tmp_path, "--max_iters", 1))
    run_dir = tmp_path / "run"
    leftovers = [run_dir / ".latest.pt.12345.tmp", run_dir / ".epoch_1.pt.999.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a checkpoint from a process killed mid-save")
    (run_dir / ".notes").write_text("the user's own file")
    train.main(train_argv(city, tmp_path, "--continue_train", "--max_iters", 2))
    assert not any(path.exists() for path in leftovers)
    assert (run_dir / ".notes").read_text() == "the user's own file"
    assert runs.load_checkpoint(run_dir / "latest.pt")["iteration"] == 2


# ---------------------------------------------------------------------------------------------
# Inference and manipulation: nothing silently wrong
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(city, tmp_path_factory):
    """Runs of 2 iterations in one checkpoints folder: 'plain'; 'feat' and 'other' (instance
    features, two seeds: two models) and 'half' (instance features, trained at --loadSize 32
    on the 64x32 scenes, so its maps are half the files' size), each encoded."""
    ckpt = tmp_path_factory.mktemp("models")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, extra in [("plain", []), ("feat", ["--instance_feat"]),
                            ("other", ["--instance_feat", "--seed", "1"]),
                            ("half", ["--instance_feat", "--loadSize", "32"])]:
            train.main(train_argv(city, ckpt, "--max_iters", 2, "--print_freq", 1000,
                                  "--display_freq", 1000, *extra, name=name))
            if "--instance_feat" in extra:
                manipulate.main(["encode", "--name", name, "--checkpoints_dir", str(ckpt),
                                 "--device", "cpu", "--dataroot", str(city)])
    finally:
        torch.set_num_threads(threads)
    return ckpt


def test_restyle_at_reads_the_pixel_in_the_label_map_file(city, models, capsys, tmp_path):
    """'half' sees the 64x32 scenes at 32x16: --at X,Y is a pixel of the 64x32 file, as an
    image viewer shows it. The pixel chosen is a car's in the file, and outside the 32x16 map,
    so reading it in the map's own coordinates would fail."""
    inst_file = sorted((city / "test_inst").iterdir())[0]
    ids = np.asarray(Image.open(inst_file), dtype=np.int64)  # (32, 64)
    model = infer.load_model(models / "half" / "latest.pt")
    shown = infer.inference_dataset(model.opt, city, "test")[0]["inst"][0]
    assert shown.shape == (16, 32)
    # A car pixel whose 2x2 block in the file is that car: whatever the half-size map keeps
    # of the block, it is the car.
    x, y = next((x, y) for y in range(31) for x in range(63)
                if ids[y, x] // 1000 == 26 and (ids[y:y + 2, x:x + 2] == ids[y, x]).all()
                and not (x < 32 and y < 16 and shown[y, x] == ids[y, x]))
    car = int(ids[y, x])
    code, out, err = run(manipulate.main, [
        "restyle", "--name", "half", "--checkpoints_dir", models, "--device", "cpu",
        "--dataroot", city, "--index", 0, "--at", f"{x},{y}", "--cluster", 0,
        "--out", tmp_path / "restyled.png"], capsys, "manipulate.py")
    assert code == 0, err
    assert re.search(rf"^instance {car} \(car, \d+ px\) -> cluster 0", out, re.M), out


def test_infer_names_the_classes_never_seen_in_training_with_their_share(city, models, capsys,
                                                                         tmp_path):
    label = np.asarray(Image.open(sorted((city / "test_label").iterdir())[0]), dtype=np.uint8)
    inst = np.asarray(Image.open(sorted((city / "test_inst").iterdir())[0]), dtype=np.uint16)
    seen = runs.load_checkpoint(models / "plain" / "latest.pt")["class_pixels"]
    assert seen[33] == 0  # the synthetic city has no bicycles
    label, inst = label.copy(), inst.copy()
    label[:8, :8] = inst[:8, :8] = 33  # a bicycle: 64 of the 2048 pixels
    Image.fromarray(label).save(tmp_path / "label.png")
    Image.fromarray(inst).save(tmp_path / "inst.png")
    code, out, _ = run(infer.main, [
        "--name", "plain", "--checkpoints_dir", models, "--device", "cpu",
        "--label", tmp_path / "label.png", "--inst", tmp_path / "inst.png",
        "--out", tmp_path / "out.png"], capsys, "infer.py")
    assert code == 0
    notes = [line for line in out.splitlines()
             if line.startswith("note: classes never seen in training")]
    assert len(notes) == 1
    assert "33 bicycle (3.1% of the map)" in notes[0]
    assert Image.open(tmp_path / "out.png").size == (64, 32)


@pytest.mark.parametrize("program", ["infer", "manipulate"])
def test_allow_other_clusters_lets_another_models_cluster_file_through_with_a_note(
        city, models, capsys, tmp_path, program):
    other = models / "other" / "clusters.npz"
    model_flags = ["--name", "feat", "--checkpoints_dir", models, "--device", "cpu",
                   "--cluster_file", other]
    if program == "infer":
        main, script = infer.main, "infer.py"
        argv = [*model_flags, "--feature_source", "clusters",
                "--label", sorted((city / "test_label").iterdir())[0],
                "--inst", sorted((city / "test_inst").iterdir())[0]]
    else:
        main, script = manipulate.main, "manipulate.py"
        argv = ["restyle", *model_flags, "--dataroot", city, "--index", 0, "--instance", "car:0"]
    code, _, err = run(main, argv + ["--out", tmp_path / "out.png"], capsys, script)
    assert code == 2 and len(err) == 1 and "--allow_other_clusters" in err[0]

    code, out, err = run(main, argv + ["--out", tmp_path / "out.png", "--allow_other_clusters"],
                         capsys, script)
    assert code == 0 and err == []
    assert re.search(rf"^note: cluster file {re.escape(str(other))} was made for another model "
                     r"\(encoder [0-9a-f]{16}\); used as --allow_other_clusters asks$", out, re.M)
    assert (tmp_path / "out.png").is_file()
