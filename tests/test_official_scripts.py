"""Claims for users of NVIDIA's pix2pixHD: every line of the official ``scripts/train_*.sh`` and
``scripts/test_*.sh`` runs here, through the real command lines, and ends in a checkpoint or an
image; the multi-GPU lines, which one process cannot run, are refused with the torchrun command
that runs them, and that command works.

``SCRIPTS`` is the table of the official lines, verbatim (NVIDIA/pix2pixHD ``scripts/``), and
``HERE`` says which command of this project runs each official program. Every line runs in a
folder where ``./datasets/cityscapes`` holds a tiny synthetic city, so the official default
--dataroot finds it, with the flags of ``tiny_flags`` appended (later flags win in argparse):
small sizes, two iterations, the CPU. README.md's table "official command -> here" is this table.
"""

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import infer
import manipulate
import runs
import synthetic_city
import train
from conftest import run_command

REPO = Path(__file__).resolve().parents[1]

# script -> its lines (the official scripts' comments left out). test_1024p_feat.sh writes
# "---netG", which the official argparse rejects too; its intended "--netG" is run.
SCRIPTS = {
    "train_512p.sh": ["python train.py --name label2city_512p"],
    "train_512p_feat.sh": ["python train.py --name label2city_512p_feat --instance_feat"],
    "train_512p_fp16.sh": [
        "python -m torch.distributed.launch train.py --name label2city_512p --fp16"],
    "train_512p_multigpu.sh": [
        "python train.py --name label2city_512p --batchSize 8 --gpu_ids 0,1,2,3,4,5,6,7"],
    "train_512p_fp16_multigpu.sh": [
        "python -m torch.distributed.launch train.py --name label2city_512p --batchSize 8 "
        "--gpu_ids 0,1,2,3,4,5,6,7 --fp16"],
    "train_1024p_12G.sh": [
        "python train.py --name label2city_1024p --netG local --ngf 32 --num_D 3 "
        "--load_pretrain checkpoints/label2city_512p/ --niter_fix_global 20 "
        "--resize_or_crop crop --fineSize 1024"],
    "train_1024p_24G.sh": [
        "python train.py --name label2city_1024p --netG local --ngf 32 --num_D 3 "
        "--load_pretrain checkpoints/label2city_512p/ --niter 50 --niter_decay 50 "
        "--niter_fix_global 10 --resize_or_crop none"],
    "train_1024p_feat_12G.sh": [
        "python precompute_feature_maps.py --name label2city_512p_feat",
        "python train.py --name label2city_1024p_feat --netG local --ngf 32 --num_D 3 "
        "--load_pretrain checkpoints/label2city_512p_feat/ --niter_fix_global 20 "
        "--resize_or_crop crop --fineSize 896 --instance_feat --load_features"],
    "train_1024p_feat_24G.sh": [
        "python precompute_feature_maps.py --name label2city_512p_feat",
        "python train.py --name label2city_1024p_feat --netG local --ngf 32 --num_D 3 "
        "--load_pretrain checkpoints/label2city_512p_feat/ --niter 50 --niter_decay 50 "
        "--niter_fix_global 10 --resize_or_crop none --instance_feat --load_features"],
    "test_512p.sh": ["python test.py --name label2city_512p"],
    "test_1024p.sh": ["python test.py --name label2city_1024p --netG local --ngf 32 "
                      "--resize_or_crop none"],
    "test_512p_feat.sh": ["python encode_features.py --name label2city_512p_feat",
                          "python test.py --name label2city_512p_feat --instance_feat"],
    "test_1024p_feat.sh": [
        "python encode_features.py --name label2city_1024p_feat --netG local --ngf 32 "
        "--resize_or_crop none",
        "python test.py --name label2city_1024p_feat --netG local --ngf 32 --resize_or_crop none "
        "--instance_feat"],
}

# The official program -> this project's command line. The multi-GPU lines are refused by
# train.py with the torchrun command of ``EQUIVALENTS``.
HERE = {
    "python train.py": "python train.py",
    "python -m torch.distributed.launch train.py": "python -m torch.distributed.launch train.py",
    "python test.py": "python infer.py",
    "python precompute_feature_maps.py": "python manipulate.py precompute",
    "python encode_features.py": "python manipulate.py encode --dataroot ./datasets/cityscapes",
}

# The runs each script needs, made by the scripts named (label2city_1024p_feat has no E: it
# learned from precomputed maps, so its test split's features are precomputed by the E of
# label2city_512p_feat, where the official encode_features.py would load an E that the run
# never saved).
NEEDS = {"train_1024p_12G.sh": ["train_512p.sh"], "train_1024p_24G.sh": ["train_512p.sh"],
         "train_1024p_feat_12G.sh": ["train_512p_feat.sh"],
         "train_1024p_feat_24G.sh": ["train_512p_feat.sh"],
         "test_512p.sh": ["train_512p.sh"], "test_1024p.sh": ["train_1024p_24G.sh"],
         "test_512p_feat.sh": ["train_512p_feat.sh"],
         "test_1024p_feat.sh": ["train_1024p_feat_24G.sh"]}
REPLACED = {  # official line -> the line that runs here instead, and why
    "python encode_features.py --name label2city_1024p_feat --netG local --ngf 32 "
    "--resize_or_crop none":
        "python manipulate.py precompute --name label2city_512p_feat --phase test",
}
EQUIVALENTS = {
    "train_512p_multigpu.sh": "torchrun --nproc_per_node 8 train.py --name label2city_512p "
                              "--batchSize 1",
    "train_512p_fp16_multigpu.sh": "torchrun --nproc_per_node 8 train.py --name label2city_512p "
                                   "--batchSize 1 --fp16",
}


def here(line):
    """The command that runs the official ``line`` here."""
    line = REPLACED.get(line, line)
    for official, ours in sorted(HERE.items(), key=lambda kv: -len(kv[0])):
        if line.startswith(official + " "):
            return ours + line[len(official):]
    return line


def tiny_flags(command):
    """The small sizes a test needs, appended to a command (the official values stay before
    them): a 32x16 G1 (64x32 for a local enhancer around it), two iterations, the CPU."""
    args = shlex.split(command)
    local = "local" in args
    device = [] if "--gpu_ids" in args else ["--gpu_ids", "-1"]  # the official ids stay
    model = (["--ngf", "4"] if local else []) if "infer.py" in command else []
    if "train.py" in command:
        return ["--loadSize", "32", "--fineSize", "32", "--ngf", "4" if local else "8",
                "--n_downsample_global", "2", "--n_blocks_global", "1", "--n_blocks_local", "1",
                "--ndf", "8", "--nef", "4", "--n_downsample_E", "2", "--no_vgg_loss",
                "--nThreads", "0", *device, "--max_iters", "2", "--print_freq", "1",
                "--display_freq", "1", "--seed", "0"]
    return [*model, *device, "--nThreads", "0"] if "infer.py" in command else device


def run_line(command, cwd, capsys):
    """One command line of this project, in ``cwd``: in this process, or, for a launcher, in a
    subprocess. Returns (exit code, output)."""
    args = shlex.split(command) + tiny_flags(command)
    if args[:3] == ["python", "-m", "torch.distributed.launch"]:
        script = str(REPO / args[3])
        done = subprocess.run([sys.executable, "-m", "torch.distributed.launch", script,
                               *args[4:]], cwd=cwd, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return done.returncode, done.stdout + done.stderr
    main = {"train.py": train.main, "infer.py": infer.main,
            "manipulate.py": manipulate.main}[args[1]]
    with contextlib.chdir(cwd):
        code, out, err = run_command(main, args[2:], capsys)
    return code, out + err


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """./datasets/cityscapes of a folder: 3 training and 1 test scene of the synthetic city at
    64x32, in the pix2pixHD layout the official code reads."""
    root = tmp_path_factory.mktemp("official") / "base"
    synthetic_city.make_synthetic_city(root / "datasets" / "cityscapes", n_train=3, n_test=1,
                                       width=64, height=32, seed=0)
    return root


@pytest.fixture(scope="module")
def script_runs(city, tmp_path_factory):
    """Runs a script (and those it needs, each once) in its own copy of the folder of the
    scripts it needs; returns (folder, [(command, exit code, output) per line])."""
    done = {}

    def run_script(name, capsys):
        if name in done:
            return done[name]
        folder = tmp_path_factory.mktemp(name.replace(".", "_"))
        shutil.copytree(city, folder, dirs_exist_ok=True)
        for needed in NEEDS.get(name, []):
            shutil.copytree(run_script(needed, capsys)[0], folder, dirs_exist_ok=True)
        done[name] = folder, [(here(line), *run_line(here(line), folder, capsys))
                              for line in SCRIPTS[name]]
        return done[name]
    return run_script


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s not in EQUIVALENTS])
def test_official_script_runs_here(script, script_runs, capsys):
    folder, results = script_runs(script, capsys)
    for command, code, output in results:
        assert code == 0, f"{command}: {output[-2000:]}"
    last = here(SCRIPTS[script][-1])
    name = re.search(r"--name (\S+)", last).group(1)
    if "train.py" in last:
        saved = runs.load_checkpoint(folder / "checkpoints" / name / "latest.pt")
        assert saved["iteration"] == 2
        for flag, value in re.findall(r"--(\w+) (\d+|local|crop|none)\b", last):
            if flag not in ("ngf", "fineSize"):  # the two that tiny_flags replaces
                assert str(saved["opt"][flag]) == value, flag  # the official value was used
    else:
        images = sorted((folder / "results" / name / "test_latest" / "images").glob(
            "*_synthesized.png"))
        assert len(images) == 1


def test_precomputed_feature_maps_are_read_by_load_features(script_runs, capsys):
    """The 12G feature recipe: precompute writes one map per training label map at its size,
    and the 1024p run with --load_features has no E of its own."""
    folder, _ = script_runs("train_1024p_feat_12G.sh", capsys)
    maps = sorted((folder / "datasets" / "cityscapes" / "train_feat").glob("*.png"))
    assert len(maps) == 3
    saved = runs.load_checkpoint(folder / "checkpoints" / "label2city_1024p_feat" / "latest.pt")
    assert saved["E"] is None and saved["opt"]["load_features"]


@pytest.mark.parametrize("script", list(EQUIVALENTS))
def test_multi_gpu_lines_are_refused_with_their_torchrun_command(script, city, tmp_path,
                                                                   capsys):
    """One process cannot drive 8 GPUs here (DDP, one process per GPU): the line is refused in
    one line that gives the torchrun command, with the batch size per GPU."""
    shutil.copytree(city, tmp_path, dirs_exist_ok=True)
    line = here(SCRIPTS[script][0])
    code, output = run_line(line, tmp_path, capsys)
    launched = "torch.distributed.launch" in line  # the launcher reports a failed child as 1
    assert code == (1 if launched else 2) and not (tmp_path / "checkpoints").exists()
    assert "torchrun --nproc_per_node 8 train.py ... without --gpu_ids" in output
    assert "the official --batchSize 8 over 8 GPUs is --batchSize 1" in output


def test_the_torchrun_equivalent_of_the_fp16_multi_gpu_line_trains(city, tmp_path):
    """EQUIVALENTS' fp16 line, on 2 CPU processes (gloo) instead of 8 GPUs: autocast (bf16 on
    the CPU) and a checkpoint of the 2 iterations."""
    shutil.copytree(city, tmp_path, dirs_exist_ok=True)
    command = EQUIVALENTS["train_512p_fp16_multigpu.sh"].replace("8", "2")
    args = shlex.split(command) + tiny_flags("train.py")
    args = [a for a in args if a not in ("--gpu_ids", "-1")]  # each process takes its rank's
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           *args[1:3], str(REPO / "train.py"), *args[4:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "in each of 2 processes, on cpu, autocast bfloat16" in done.stdout
    saved = runs.load_checkpoint(tmp_path / "checkpoints" / "label2city_512p" / "latest.pt")
    assert saved["world_size"] == 2 and saved["iteration"] == 2


def test_readme_table_lists_every_official_line():
    """README.md's table "official command -> here" has one row per official line, with the
    command that runs it here."""
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", readme, flags=re.M)
    table = dict(rows)
    for script, lines in SCRIPTS.items():
        for line in lines:
            assert line in table, line
            expected = EQUIVALENTS.get(script, here(line))
            assert table[line] == expected, line
