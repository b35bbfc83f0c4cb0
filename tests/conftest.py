"""Shared by every test file: the repository root on the import path, one PyTorch thread,
``run_command``, comparisons of folders and of tensors, and the one tiny model with instance
features that the manipulation, synthetic-city and evaluation tests measure."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import manipulate  # noqa: E402  (after the path insert)
import synthetic_city  # noqa: E402
import train  # noqa: E402

TINY_FEAT = ["--loadSize", "64", "--ngf", "8", "--n_downsample_global", "2",
             "--n_blocks_global", "1", "--ndf", "8", "--num_D", "1", "--nef", "8",
             "--no_vgg_loss", "--num_workers", "0", "--device", "cpu", "--print_freq", "1000",
             "--display_freq", "1000", "--seed", "0"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors compute fastest on one thread, and far faster than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_command(main, argv, capsys):
    """A command's ``main(argv)`` run in this process -> (exit code, stdout, stderr). Whatever
    goes wrong, the user must see a message, never a traceback."""
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def tree(root):
    """Every file (its bytes) and folder (None) under ``root``, by relative path."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(Path(root).rglob("*"))}


def tensors(state, prefix=""):
    """Every tensor in a nested state (state_dicts, optimizer states), by path."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    items = (state.items() if isinstance(state, dict) else
             enumerate(state) if isinstance(state, (list, tuple)) else [])
    out = {}
    for k, v in items:
        out.update(tensors(v, f"{prefix}/{k}"))
    return out


def assert_same_tensors(a, b):
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


@pytest.fixture(scope="session")
def feature_run(tmp_path_factory):
    """A synthetic city of 24 training and 3 test scenes at 64x32 (true styles in styles.json),
    a tiny G + E trained on it with --instance_feat for 150 iterations, and ``manipulate.py
    encode`` (the official size threshold): the paths and the flags that load the run."""
    city = synthetic_city.make_synthetic_city(tmp_path_factory.mktemp("feature_city") / "city",
                                              n_train=24, n_test=3, width=64, height=32, seed=0)
    ckpt = tmp_path_factory.mktemp("checkpoints")
    train.main(["--dataroot", str(city), "--checkpoints_dir", str(ckpt), "--name", "feat",
                "--instance_feat", "--max_iters", "150", *TINY_FEAT])
    flags = ["--name", "feat", "--checkpoints_dir", str(ckpt), "--device", "cpu"]
    manipulate.main(["encode", *flags, "--dataroot", str(city)])
    return {"city": city, "ckpt": ckpt, "flags": flags, "clusters": ckpt / "feat" / "clusters.npz"}
