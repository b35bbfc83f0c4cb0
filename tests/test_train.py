"""Claims about train.py: the training procedure of sec. 3.2 runs in every configuration, resumes
exactly, scales to several processes, learns, and fails with one-line messages.

Runs go through the command line (``train.main(argv)`` in this process; ``torchrun`` and nothing
else in a subprocess) on tiny synthetic cities at 64x32 with tiny widths, on the CPU.
"""

import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import data
import losses
import networks
import runs
import synthetic_city
import train
import train_machinery
from conftest import assert_same_tensors

REPO = Path(__file__).resolve().parents[1]

# A G1 of 2 downsamplings and 1 block, 2 PatchGANs of width 8: a few hundredths of a second per
# iteration at 64x32. Every run is on the CPU, in fp32 unless it says otherwise.
TINY = ["--loadSize", "64", "--ngf", "8", "--n_downsample_global", "2", "--n_blocks_global", "1",
        "--ndf", "8", "--num_D", "2", "--no_vgg_loss", "--num_workers", "0", "--device", "cpu",
        "--print_freq", "1", "--display_freq", "1", "--seed", "0"]


@pytest.fixture(scope="session")
def city(tmp_path_factory):
    """Three training scenes of the synthetic city at 64x32 (an epoch is three iterations)."""
    return synthetic_city.make_synthetic_city(tmp_path_factory.mktemp("city") / "city", n_train=3,
                                              n_test=1, width=64, height=32, seed=0)


def run(city, ckpt, *extra, name="run"):
    return train.main(["--dataroot", str(city), "--checkpoints_dir", str(ckpt), "--name", name,
                       *TINY, *extra])


def exit_code_and_message(capsys, argv):
    """The exit code and train.py's own lines on stderr (the progress bar also writes there);
    no traceback may appear."""
    with pytest.raises(SystemExit) as stopped:
        train.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = re.split(r"[\r\n]", err)
    return stopped.value.code, [line for line in lines if line.startswith("train.py:")]






def cpu_processes(amp=False):
    """One process on the CPU: what ``train.start_processes`` gives without torchrun."""
    return train_machinery.Processes(rank=0, world_size=1, device=torch.device("cpu"), use_amp=amp,
                           dtype=torch.bfloat16)


# --------------------------------------------------------------------------------------------
# The training procedure runs in every configuration
# --------------------------------------------------------------------------------------------

def test_global_run_writes_checkpoint_samples_and_logs(city, tmp_path):
    out = run(city, tmp_path, "--max_iters", "2")
    assert out["iteration"] == 2
    run_dir = tmp_path / "run"
    ckpt = runs.load_checkpoint(run_dir / "latest.pt")
    assert set(ckpt) == {"G", "D", "E", "optimizer_G", "optimizer_D", "scaler", "epoch",
                         "iteration", "epoch_iter", "world_size", "image_pool", "rng",
                         "class_pixels", "opt"}
    assert (ckpt["epoch"], ckpt["iteration"], ckpt["epoch_iter"], ckpt["E"]) == (1, 2, 2, None)
    assert not any(k.startswith("module.") for k in ckpt["G"])
    assert_same_tensors(ckpt["G"], out["G"].state_dict())
    # G's input: 35 one-hot channels + the boundary map; D's: those + the RGB image.
    assert ckpt["G"]["front.stem.conv.weight"].shape[1] == 36
    assert ckpt["D"]["D.0.layers.0.conv.weight"].shape[1] == 39
    rows = (run_dir / "loss_log.csv").read_text().splitlines()
    assert rows[0].split(",")[:7] == ["epoch", "iteration", *train.LOSS_NAMES]
    assert len(rows) == 3 and all(math.isfinite(float(v)) for v in rows[2].split(",")[2:7])
    samples = sorted((run_dir / "samples").glob("*.png"))
    assert len(samples) == 2 and Image.open(samples[0]).size == (3 * 64, 32)
    assert (run_dir / "loss_plot.png").stat().st_size > 0
    assert json.loads((run_dir / "opt.json").read_text())["ngf"] == 8


def test_local_enhancer_starts_from_the_global_G1_and_keeps_it_fixed_for_niter_fix_global(
        city, tmp_path, capsys):
    run(city, tmp_path, "--max_iters", "2", name="global")
    G1 = runs.load_checkpoint(tmp_path / "global" / "latest.pt")["G"]
    # The local run's G1 is ngf * 2 wide: ngf 4 here, as ngf 32 around a 64-wide G1 in the paper.
    run(city, tmp_path, "--netG", "local", "--ngf", "4", "--load_pretrain",
        str(tmp_path / "global"), "--niter_fix_global", "1", "--save_epoch_freq", "1",
        "--max_iters", "4", name="local")
    out = capsys.readouterr().out
    assert "G1 and 2 of the 2 D_k (from the coarsest) loaded from" in out
    assert "Now also finetuning global generator" in out
    after_epoch_1 = runs.load_checkpoint(tmp_path / "local" / "epoch_1.pt")["G"]
    after_epoch_2 = runs.load_checkpoint(tmp_path / "local" / "latest.pt")["G"]
    kept = [k for k in G1 if not k.startswith("output.")]
    assert kept and all(torch.equal(after_epoch_1[f"G1.{k}"], G1[k]) for k in kept)
    assert not all(torch.equal(after_epoch_2[f"G1.{k}"], G1[k]) for k in kept)
    # G2's own layers trained in epoch 1.
    fresh = networks.define_G("local", 36, ngf=4, n_downsample_global=2, n_blocks_global=1)
    assert not torch.equal(after_epoch_1["enhancers.0.front.stem.conv.weight"],
                           fresh.state_dict()["enhancers.0.front.stem.conv.weight"])


@pytest.mark.parametrize("theirs, ours", [(2, 3), (3, 3), (3, 2)])
def test_load_pretrain_matches_the_discriminators_from_the_coarsest_scale(theirs, ours):
    """The official D names its scales from the coarsest and loads them by name. In the paper's
    recipe, G1 trains at 1024x512 with 2 D_k and G at 2048x1024 with 3: then every loaded D_k
    judges the absolute resolution it learned on, and the new finest scale starts fresh."""
    torch.manual_seed(0)
    pretrained = networks.define_D(39, 8, 3, theirs)
    D = networks.define_D(39, 8, 3, ours)
    fresh = {k: v.clone() for k, v in D.state_dict().items()}
    loaded = train.load_discriminators_from_the_coarsest(D, pretrained.state_dict())
    assert loaded == min(theirs, ours)
    # D_k sees the input downsampled k times (k = 0 the finest); the 1024p input is twice the
    # 512p one, so, when one scale is added, ours[k] sees what theirs[k - 1] saw.
    H = 1024
    for k in range(ours):
        k_theirs = k - (ours - theirs)
        weights = D.D[k].state_dict()
        if 0 <= k_theirs < theirs:
            assert_same_tensors(weights, pretrained.D[k_theirs].state_dict())
            if ours == theirs + 1:
                assert (2 * H) >> k == H >> k_theirs  # the same absolute resolution
        else:
            assert_same_tensors(weights, {n: fresh[f"D.{k}.{n}"] for n in weights})


def test_instance_feat_trains_encoder_jointly_with_G(city, tmp_path):
    extra = ["--instance_feat", "--nef", "4", "--n_downsample_E", "2", "--max_iters", "2"]
    run(city, tmp_path, *extra)
    ckpt = runs.load_checkpoint(tmp_path / "run" / "latest.pt")
    opt = train.build_parser().parse_args(["--dataroot", str(city), *TINY, *extra])
    torch.manual_seed(0)
    G0, _, E0 = runs.build_networks(opt)
    assert ckpt["G"]["front.stem.conv.weight"].shape[1] == 36 + 3  # + feat_num features
    assert ckpt["D"]["D.0.layers.0.conv.weight"].shape[1] == 39  # D never sees the features
    assert set(ckpt["E"]) == set(E0.state_dict())
    assert not torch.equal(ckpt["E"]["front.stem.conv.weight"], E0.front.stem.conv.weight)
    n_G, n_E = len(list(G0.parameters())), len(list(E0.parameters()))
    assert len(ckpt["optimizer_G"]["param_groups"][0]["params"]) == n_G + n_E


def test_no_instance_drops_the_boundary_channel(city, tmp_path):
    run(city, tmp_path, "--no_instance", "--max_iters", "2")
    ckpt = runs.load_checkpoint(tmp_path / "run" / "latest.pt")
    assert ckpt["G"]["front.stem.conv.weight"].shape[1] == 35
    assert ckpt["D"]["D.0.layers.0.conv.weight"].shape[1] == 38


def test_gan_mode_hinge_reaches_every_adversarial_term(city, tmp_path, monkeypatch):
    modes, gan_loss = [], losses.gan_loss

    def recording(predictions, target_is_real, mode="lsgan", **kwargs):
        modes.append(mode)
        return gan_loss(predictions, target_is_real, mode, **kwargs)

    monkeypatch.setattr(losses, "gan_loss", recording)
    out = run(city, tmp_path, "--gan_mode", "hinge", "--max_iters", "2")
    assert out["iteration"] == 2
    assert modes == ["hinge"] * 6  # G's term, D's real and fake terms, in each iteration


def test_label_nc_0_trains_image_to_image_from_train_A_to_train_B(tmp_path):
    root = tmp_path / "edges"
    rng = np.random.default_rng(0)
    for folder in ("train_A", "train_B"):
        (root / folder).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i}.png")
    run(root, tmp_path, "--label_nc", "0", "--no_instance", "--max_iters", "2")
    ckpt = runs.load_checkpoint(tmp_path / "run" / "latest.pt")
    assert ckpt["G"]["front.stem.conv.weight"].shape[1] == 3
    assert ckpt["D"]["D.0.layers.0.conv.weight"].shape[1] == 6
    assert len(list((tmp_path / "run" / "samples").glob("*.png"))) == 2


def test_no_dataroot_trains_on_the_synthetic_city_with_cpu_sized_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # A smaller city than the real default, to keep the test fast; the path is the same.
    monkeypatch.setattr(synthetic_city, "make_synthetic_city", functools.partial(
        synthetic_city.make_synthetic_city, n_train=2, n_test=1, width=64, height=32))
    train.main(["--ngf", "8", "--loadSize", "64", "--num_workers", "0", "--device", "cpu",
                "--no_vgg_loss", "--max_iters", "1"])
    assert (tmp_path / "datasets" / "synthetic_city" / "train_label").is_dir()
    opt = json.loads((tmp_path / "checkpoints" / "synthetic_city" / "opt.json").read_text())
    assert opt["ngf"] == 8 and opt["loadSize"] == 64  # set on the command line: kept
    assert opt["num_D"] == train.SYNTHETIC_DEFAULTS["num_D"] == 2  # not set: the CPU size
    assert opt["n_downsample_global"] == train.SYNTHETIC_DEFAULTS["n_downsample_global"]


def test_bf16_autocast_on_cpu_runs_an_iteration_with_finite_losses(city, tmp_path, capsys):
    run(city, tmp_path, "--amp", "--max_iters", "1")
    assert "autocast bfloat16" in capsys.readouterr().out
    row = (tmp_path / "run" / "loss_log.csv").read_text().splitlines()[1].split(",")
    assert all(math.isfinite(float(v)) for v in row[2:7])
    G = runs.load_checkpoint(tmp_path / "run" / "latest.pt")["G"]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in G.values())


# --------------------------------------------------------------------------------------------
# Resuming is exact; several processes stay identical
# --------------------------------------------------------------------------------------------

def test_one_iteration_equals_the_official_order_with_its_three_discriminator_forwards():
    """train.py runs D once on [synthesized, real] and feeds both losses from it; the official
    code runs D on the detached synthesized pair, the real pair and the synthesized pair, with
    one plain backward per loss. Same losses and the same gradients for G and D, in fp32."""
    opt = train.build_parser().parse_args(
        ["--label_nc", "5", "--ngf", "8", "--n_downsample_global", "2", "--n_blocks_global", "1",
         "--ndf", "8", "--num_D", "2"])
    torch.manual_seed(0)
    G, D, _ = runs.build_networks(opt)
    G_ref, D_ref, _ = runs.build_networks(opt)
    G_ref.load_state_dict(G.state_dict())
    D_ref.load_state_dict(D.state_dict())
    s = torch.randint(0, 5, (2, 1, 32, 64))
    inst = torch.randint(0, 3, (2, 1, 32, 64))
    x = torch.rand(2, 3, 32, 64) * 2 - 1

    def adam(net):
        return torch.optim.Adam(net.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))

    procs = cpu_processes()
    state = train.TrainingState(G, D, None, opt, procs)
    train.set_learning_networks(state, opt, procs, fix_global=False)
    _, terms = train.compute_losses(G, D, None, s, inst, x, opt, None, state.pool,
                                    procs.autocast())
    train.update(terms, state, procs)

    s_in = data.generator_input(s, inst, 5, False)
    fake = G_ref(s_in)
    loss_D_fake = losses.gan_loss(D_ref(torch.cat([s_in, fake.detach()], 1)), False)
    pred_real = D_ref(torch.cat([s_in, x], 1))
    loss_D_real = losses.gan_loss(pred_real, True)
    pred_fake = D_ref(torch.cat([s_in, fake], 1))
    loss_G = (losses.gan_loss(pred_fake, True, for_discriminator=False)
              + losses.feature_matching_loss(pred_fake, pred_real, 10.0))
    loss_D = 0.5 * (loss_D_fake + loss_D_real)
    optimizer_G, optimizer_D = adam(G_ref), adam(D_ref)
    optimizer_G.zero_grad()
    loss_G.backward()
    optimizer_G.step()
    optimizer_D.zero_grad()
    loss_D.backward()
    optimizer_D.step()

    torch.testing.assert_close(terms["G"], loss_G, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["D"], loss_D, rtol=1e-5, atol=1e-6)
    # Gradients, not the weights after the step: the bias of a conv followed by instance norm
    # has a gradient that is zero up to rounding, and Adam turns rounding into a full lr step.
    for net, ref in ((G, G_ref), (D, D_ref)):
        for (name, p), p_ref in zip(net.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_autocast_gives_the_fp32_losses_within_bf16_tolerance():
    """The same networks and batch under bf16 autocast and in fp32: every loss term agrees to
    a few bf16 roundings (8 bits of mantissa: 0.4% each)."""
    opt = train.build_parser().parse_args(
        ["--label_nc", "5", "--ngf", "8", "--n_downsample_global", "2", "--n_blocks_global", "1",
         "--ndf", "8", "--num_D", "2"])
    torch.manual_seed(0)
    G, D, _ = runs.build_networks(opt)
    vgg = losses.VGGLoss(torchvision.models.vgg19())  # random weights: the cost is the same
    s = torch.randint(0, 5, (1, 1, 32, 64))
    inst = torch.randint(0, 3, (1, 1, 32, 64))
    x = torch.rand(1, 3, 32, 64) * 2 - 1
    pool = train_machinery.ImagePool(0, 0)
    _, fp32 = train.compute_losses(G, D, None, s, inst, x, opt, vgg, pool,
                                   torch.autocast("cpu", enabled=False))
    _, bf16 = train.compute_losses(G, D, None, s, inst, x, opt, vgg, pool,
                                   torch.autocast("cpu", dtype=torch.bfloat16))
    for name in train.LOSS_NAMES:
        assert bf16[name].dtype == torch.float32, name
        torch.testing.assert_close(bf16[name], fp32[name], rtol=0.03, atol=1e-3, msg=name)


def test_resume_is_bit_for_bit(city, tmp_path):
    # Crosses an epoch boundary (3 scenes), with lr decay from epoch 2, random flips, the image
    # pool, and E; the resumed half loads its data in a worker process.
    extra = ["--niter", "0", "--niter_decay", "2", "--pool_size", "2", "--instance_feat",
             "--nef", "4", "--n_downsample_E", "2"]
    run(city, tmp_path, *extra, "--max_iters", "4", name="straight")
    run(city, tmp_path, *extra, "--max_iters", "2", name="resumed")
    run(city, tmp_path, *extra, "--max_iters", "4", "--continue_train", "--num_workers", "1",
        name="resumed")
    a = runs.load_checkpoint(tmp_path / "straight" / "latest.pt")
    b = runs.load_checkpoint(tmp_path / "resumed" / "latest.pt")
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"]) == (2, 4)
    assert a["optimizer_G"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    for key in ("G", "D", "E", "optimizer_G", "optimizer_D", "image_pool"):
        assert_same_tensors(a[key], b[key])
    assert a["optimizer_G"]["param_groups"] == b["optimizer_G"]["param_groups"]


def test_ddp_with_two_processes_keeps_identical_weights(city, tmp_path):
    """torchrun --nproc_per_node=2 on the CPU (gloo), with E and a local enhancer whose G1 stays
    fixed for the first epoch (2 iterations per process: 3 scenes over 2 processes): each rank
    dumps the weights it ended with; they agree, G1 did not move in epoch 1 and did in epoch 2."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(textwrap.dedent(f"""
        import os, sys
        import torch
        sys.path.insert(0, {str(REPO)!r})
        import train
        out = train.main(sys.argv[1:])
        torch.save({{"G": out["G"].state_dict(), "D": out["D"].state_dict(),
                    "E": out["E"].state_dict()}},
                   os.path.join({str(tmp_path)!r}, f"rank{{os.environ['RANK']}}.pt"))
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(launcher), "--dataroot", str(city), "--checkpoints_dir", str(tmp_path),
         "--name", "ddp", *TINY, "--netG", "local", "--ngf", "4", "--niter_fix_global", "1",
         "--instance_feat", "--nef", "4", "--n_downsample_E", "2", "--save_epoch_freq", "1",
         "--max_iters", "3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert_same_tensors(rank0, rank1)
    saved = runs.load_checkpoint(tmp_path / "ddp" / "latest.pt")  # written by rank 0 only
    assert_same_tensors(saved["G"], rank0["G"])
    assert (saved["epoch"], saved["iteration"]) == (2, 3)
    torch.manual_seed(0)
    fresh_G, _, fresh_E = runs.build_networks(saved["opt"])
    epoch_1 = runs.load_checkpoint(tmp_path / "ddp" / "epoch_1.pt")
    G1 = [k for k in fresh_G.state_dict() if k.startswith("G1.")]
    assert all(torch.equal(epoch_1["G"][k], fresh_G.state_dict()[k]) for k in G1)  # fixed
    assert not all(torch.equal(rank0["G"][k], fresh_G.state_dict()[k]) for k in G1)
    assert not torch.equal(epoch_1["G"]["enhancers.0.front.stem.conv.weight"],
                           fresh_G.state_dict()["enhancers.0.front.stem.conv.weight"])
    assert not torch.equal(epoch_1["E"]["front.stem.conv.weight"],
                           fresh_E.state_dict()["front.stem.conv.weight"])


# --------------------------------------------------------------------------------------------
# It learns
# --------------------------------------------------------------------------------------------

def test_training_brings_synthesized_photos_close_to_the_real_ones(city, tmp_path):
    out = run(city, tmp_path, "--no_flip", "--max_iters", "300", "--print_freq", "100",
              "--display_freq", "1000", "--save_latest_freq", "1000")
    dataset = data.PairedDataset(str(city), load_size=64, no_flip=True, size_multiple=4)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    s_in = data.generator_input(batch["label"], batch["inst"], 35)
    opt = train.build_parser().parse_args(["--dataroot", str(city), *TINY])
    torch.manual_seed(0)
    G_start, _, _ = runs.build_networks(opt)
    with torch.no_grad():
        before = (G_start(s_in) - batch["image"]).abs().mean().item()
        after = (out["G"](s_in) - batch["image"]).abs().mean().item()
    assert after < 0.6 * before, (before, after)  # seeded: 0.42 -> 0.18 here


# --------------------------------------------------------------------------------------------
# Faults and bad input
# --------------------------------------------------------------------------------------------

def test_failed_save_leaves_the_previous_latest_loadable(city, tmp_path, monkeypatch, capsys):
    run(city, tmp_path, "--max_iters", "2")
    latest = tmp_path / "run" / "latest.pt"
    before = latest.read_bytes()

    def save_half_then_fail(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    code, err = exit_code_and_message(capsys, [
        "--dataroot", str(city), "--checkpoints_dir", str(tmp_path), "--name", "run", *TINY,
        "--continue_train", "--max_iters", "4"])
    assert code == 1 and len(err) == 1 and "could not write" in err[0]
    assert latest.read_bytes() == before
    assert runs.load_checkpoint(latest)["iteration"] == 2
    assert [p.name for p in (tmp_path / "run").glob(".*tmp")] == []


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_checkpoint(
        city, tmp_path, monkeypatch, capsys):
    run(city, tmp_path, "--max_iters", "2")
    latest = tmp_path / "run" / "latest.pt"
    before = latest.read_bytes()
    monkeypatch.setattr(losses, "gan_loss",  # nan, attached to D's output as a real loss is
                        lambda predictions, *a, **k: predictions[0][-1].mean() * float("nan"))
    code, err = exit_code_and_message(capsys, [
        "--dataroot", str(city), "--checkpoints_dir", str(tmp_path), "--name", "run", *TINY,
        "--continue_train", "--max_iters", "4", "--save_latest_freq", "1"])
    assert code == 1 and len(err) == 1 and "non-finite loss" in err[0]
    assert latest.read_bytes() == before


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                          (signal.SIGUSR1, 138)])
def test_ctrl_c_or_sigterm_finishes_the_iteration_saves_and_exits(city, tmp_path, monkeypatch,
                                                                  capsys, signum, code):
    """Ctrl-C, and SIGTERM: what Slurm, docker stop, Kubernetes and timeout send first, and what
    torchrun passes on to its processes."""
    calls, gan_loss = [], losses.gan_loss

    def signal_in_iteration_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # three GAN losses per iteration: this is iteration 2's first
            signal.raise_signal(signum)
        return gan_loss(*args, **kwargs)

    monkeypatch.setattr(losses, "gan_loss", signal_in_iteration_2)
    exit_code, err = exit_code_and_message(capsys, [
        "--dataroot", str(city), "--checkpoints_dir", str(tmp_path), "--name", "run", *TINY,
        "--max_iters", "10", "--save_latest_freq", "100"])
    assert exit_code == code
    ckpt = runs.load_checkpoint(tmp_path / "run" / "latest.pt")
    assert (ckpt["iteration"], ckpt["epoch_iter"]) == (2, 2)


def test_non_finite_gradient_of_a_finite_loss_stops_before_the_step(city, tmp_path, monkeypatch,
                                                                   capsys):
    """bf16 has no gradient scaler to catch it: an inf gradient must not reach the weights, nor
    a checkpoint saved right after."""
    run(city, tmp_path, "--amp", "--max_iters", "2")
    latest = tmp_path / "run" / "latest.pt"
    before = latest.read_bytes()
    compute_gradients = train.compute_gradients

    def with_an_inf_gradient(terms, params_G, params_D, *args):
        compute_gradients(terms, params_G, params_D, *args)
        params_G[0].grad[0] = float("inf")

    monkeypatch.setattr(train, "compute_gradients", with_an_inf_gradient)
    code, err = exit_code_and_message(capsys, [
        "--dataroot", str(city), "--checkpoints_dir", str(tmp_path), "--name", "run", *TINY,
        "--amp", "--continue_train", "--max_iters", "4", "--save_latest_freq", "1"])
    assert code == 1 and len(err) == 1 and "non-finite gradient at epoch 1, iteration 3" in err[0]
    assert latest.read_bytes() == before


def test_unwritable_checkpoints_dir_is_reported_before_training(city, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = exit_code_and_message(capsys, [
        "--dataroot", str(city), "--checkpoints_dir", str(blocker), *TINY, "--max_iters", "1"])
    assert code == 2 and len(err) == 1 and "--checkpoints_dir" in err[0]


def test_missing_dataroot_says_how_to_get_cityscapes_or_use_the_synthetic_city(tmp_path, capsys):
    code, err = exit_code_and_message(capsys, [
        "--dataroot", str(tmp_path / "cityscapes"), "--checkpoints_dir", str(tmp_path), *TINY])
    assert code == 2 and len(err) == 1
    assert "cityscapes-dataset.com" in err[0] and "synthetic city" in err[0]
    assert not (tmp_path / "label2city").exists()


def test_bad_image_read_in_a_worker_is_one_line(city, tmp_path, capsys):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(city), str(broken)], check=True)
    last_photo = sorted((broken / "train_img").iterdir())[-1]
    last_photo.write_bytes(b"not a png")
    code, err = exit_code_and_message(capsys, [
        "--dataroot", str(broken), "--checkpoints_dir", str(tmp_path), *TINY,
        "--num_workers", "1", "--no_flip", "--max_iters", "3"])
    assert code == 2 and len(err) == 1 and last_photo.name in err[0], err


def test_continue_train_with_another_ngf_is_refused_naming_ngf(city, tmp_path, capsys):
    run(city, tmp_path, "--max_iters", "1")
    code, err = exit_code_and_message(capsys, [
        "--dataroot", str(city), "--checkpoints_dir", str(tmp_path), "--name", "run", *TINY,
        "--ngf", "16", "--continue_train"])
    assert code == 2 and len(err) == 1 and "ngf (checkpoint 8, now 16)" in err[0]


def test_resuming_a_run_that_reached_max_iters_trains_no_further(city, tmp_path, capsys):
    run(city, tmp_path, "--max_iters", "2")
    before = runs.load_checkpoint(tmp_path / "run" / "latest.pt")
    out = run(city, tmp_path, "--max_iters", "2", "--continue_train")
    assert out["iteration"] == 2
    assert_same_tensors(runs.load_checkpoint(tmp_path / "run" / "latest.pt")["G"], before["G"])


def test_mid_epoch_resume_with_another_batch_size_is_refused(city, tmp_path, capsys):
    run(city, tmp_path, "--max_iters", "1")
    code, err = exit_code_and_message(capsys, [
        "--dataroot", str(city), "--checkpoints_dir", str(tmp_path), "--name", "run", *TINY,
        "--batchSize", "2", "--continue_train"])
    assert code == 2 and len(err) == 1 and "--batchSize 1" in err[0] and "mid-epoch" in err[0]


def test_load_pretrain_of_a_file_not_written_by_train_py_is_one_line(city, tmp_path, capsys):
    official = tmp_path / "latest_net_G.pth"
    torch.save({"model.1.weight": torch.zeros(1)}, official)
    code, err = exit_code_and_message(capsys, [
        "--dataroot", str(city), "--checkpoints_dir", str(tmp_path), "--name", "local", *TINY,
        "--netG", "local", "--ngf", "4", "--load_pretrain", str(official)])
    assert code == 2 and len(err) == 1 and "not a checkpoint written by train.py" in err[0]


def test_missing_vgg_weights_stop_a_real_run_before_training(city, tmp_path, monkeypatch, capsys):
    def missing():
        raise losses.VGGWeightsMissing("VGG19 weights missing: put them at X")

    monkeypatch.setattr(losses, "load_vgg19", missing)
    argv = ["--dataroot", str(city), "--checkpoints_dir", str(tmp_path), *TINY]
    argv.remove("--no_vgg_loss")
    code, err = exit_code_and_message(capsys, argv)
    assert code == 2 and err == ["train.py: VGG19 weights missing: put them at X; or pass "
                                 "--no_vgg_loss to train without the VGG loss"]
    assert not (tmp_path / "label2city" / "latest.pt").exists()


# --------------------------------------------------------------------------------------------
# Command line and schedule
# --------------------------------------------------------------------------------------------

def test_help_names_the_paper_defaults(capsys):
    with pytest.raises(SystemExit) as stopped:
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert stopped.value.code == 0
    assert "paper: 3; official script: 2" in text and "PER PROCESS" in text


def test_an_option_given_at_its_default_value_counts_as_set():
    assert train.explicit_options(["--ngf", "64", "--no_flip"]) == {"ngf", "no_flip"}


def test_learning_rate_is_constant_for_niter_then_decays_linearly_as_the_official_code():
    opt = train.build_parser().parse_args(["--niter", "3", "--niter_decay", "4", "--lr", "1.0"])
    official, lr = [], opt.lr
    for epoch in range(1, 8):  # the official loop: decay after each epoch past niter
        official.append(lr)
        if epoch > opt.niter:
            lr -= opt.lr / opt.niter_decay
    assert [train.learning_rate(opt, e) for e in range(1, 8)] == pytest.approx(official)
    assert official == pytest.approx([1, 1, 1, 1, 0.75, 0.5, 0.25])
