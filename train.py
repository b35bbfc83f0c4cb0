r"""Training pix2pixHD (Wang et al., CVPR 2018): the procedure of sec. 3.2, the objective, eq. (5).

Coarse to fine (sec. 3.2): first the global generator G1 alone, at half the final resolution
(``--netG global``); then the local enhancer G2 around it (``--netG local --load_pretrain <the G1
run>``), whose own layers learn for ``--niter_fix_global`` epochs while G1 stays fixed, before all
of G is fine-tuned together. On Cityscapes at 2048x1024, as the official scripts::

    python train.py --dataroot ./cityscapes --name label2city_512p --loadSize 1024
    python train.py --dataroot ./cityscapes --name label2city_1024p --netG local --ngf 32 \
        --loadSize 2048 --niter_fix_global 20 --load_pretrain checkpoints/label2city_512p

Each iteration computes every term of eq. (5) (``compute_losses``), then takes one Adam step for G
(with E when instance features are on) and one for the D_k (``update``). Adam's lr 0.0002 and
beta1 0.5, and the schedule (constant for ``niter`` epochs, then a linear decay to 0 over
``niter_decay`` epochs), are the official code's defaults. ``train`` is the whole procedure, in
one screen; what it calls for setting up, resuming, several GPUs, stopping and logging follows it.

Several GPUs: ``torchrun --nproc_per_node=N train.py ...``. Without ``--dataroot`` it trains a
CPU-sized model on the synthetic city (``synthetic_city.py``).
"""

import argparse
import math
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import data
import evaluate
import losses
import official_folder
import runs
from runs import RunStopped, UserError
from train_machinery import (ImagePool, Outputs, StopRequest, average_gradients,
                             check_iteration, check_options, checkpoint_to_resume, epoch_batches,
                             restore, rng_state, start_processes, synthetic_city_once,
                             training_data)

LOSS_NAMES = ["G_GAN", "G_GAN_Feat", "G_VGG", "D_real", "D_fake"]  # the official names

# With no --dataroot and no runs.OFFICIAL_DATAROOT: the synthetic city at 256x128 and a model
# that learns it on 2 CPU cores in minutes. Only the options the user did not set change.
SYNTHETIC_DEFAULTS = dict(name="synthetic_city", loadSize=256, fineSize=256, ngf=32,
                          n_downsample_global=3, n_blocks_global=3, ndf=32, num_D=2,
                          niter=10, niter_decay=10, num_workers=0, display_freq=100,
                          print_freq=50, save_latest_freq=500, save_epoch_freq=5)


def train(opt, stop=None):
    """Train as the options ``opt`` say; ``stop`` (a ``StopRequest``) asks the loop to save and
    stop. Returns the trained networks (unwrapped), the counters, and why it stopped early
    (None, "max_iters" or "interrupted")."""
    stop = stop if stop is not None else StopRequest()
    synthetic = opt.dataroot is None
    procs = start_processes(opt)
    check_options(opt, synthetic)
    resume = checkpoint_to_resume(opt)
    if synthetic:
        opt.dataroot = synthetic_city_once(runs.SYNTHETIC_CITY, procs)
    dataset, sampler = training_data(opt, procs)
    n_batches = math.ceil(len(sampler) / opt.batchSize)        # per epoch, in each process
    vgg_loss = perceptual_loss(opt, procs, synthetic)
    state = build_state(opt, procs, resume, len(dataset))
    out = Outputs(opt, procs, state, resumed=resume is not None, loss_names=LOSS_NAMES)
    out.announce(len(dataset), n_batches)
    n_epochs = opt.niter + opt.niter_decay
    state.stop = "max_iters" if reached_max_iters(opt, state) else None
    while state.epoch <= n_epochs and state.stop is None:
        coarse_to_fine(state, opt, procs)
        lr = set_learning_rate(state, opt)
        with out.progress_bar(state, n_batches, n_epochs):
            for s, inst, x, feat in epoch_batches(dataset, sampler, state, opt, procs):
                fake, terms = compute_losses(state.G_train, state.D, state.E_train, s, inst, x,
                                             opt, vgg_loss, state.pool, procs.autocast(), feat)
                values, stop_requested = update(terms, state, procs, stop.requested)
                del terms  # what is left of D's graph on the real pair, before the next forward
                state.iteration += 1
                state.epoch_iter += 1
                out.after_iteration(state, values, lr, s[0], fake[0], x[0])
                if stop_requested:
                    state.stop = "interrupted"
                elif reached_max_iters(opt, state):
                    state.stop = "max_iters"
                if state.stop is not None:
                    break
        out.end_epoch(state, complete=state.epoch_iter >= n_batches)
        if state.epoch_iter >= n_batches and state.stop is None:
            state.epoch, state.epoch_iter = state.epoch + 1, 0
    out.finish(state)
    return {"G": state.G, "D": state.D, "E": state.E, "epoch": state.epoch,
            "iteration": state.iteration, "stopped": state.stop}


# ---------------------------------------------------------------------------------------------
# One iteration: eq. (5), then the two updates
# ---------------------------------------------------------------------------------------------

def compute_losses(G, D, E, s, inst, x, opt, vgg_loss, pool, autocast, feat=None):
    r"""Every term of the objective for one batch: eq. (5) with the perceptual term of sec. 4,

    .. math::
        \min_G \Big( \big( \max_{D_1, D_2, D_3} \sum_{k=1}^{3} \mathcal{L}_{GAN}(G, D_k) \big)
                     + \lambda \sum_{k=1}^{3} \mathcal{L}_{FM}(G, D_k)
                     + \lambda \, \mathcal{L}_{VGG}(G) \Big), \qquad \lambda = 10,

    as the official code computes it: G (and E) minimise
    ``G = G_GAN + G_GAN_Feat + G_VGG`` (L_GAN of the synthesized pair with the real target, eq. 3;
    lambda L_FM, eq. 4, averaged over the scales; lambda L_VGG), and the D_k maximise eq. (3) by
    minimising ``D = 0.5 (D_fake + D_real)``.

    ``s`` label ids and ``inst`` instance ids (B, 1, H, W), ``x`` real photos (B, 3, H, W);
    ``feat`` the precomputed features of --load_features (then there is no E). Returns the
    synthesized images and a dict of those terms (the official names,
    ``LOSS_NAMES``) and their sums ``G`` and ``D``, scalars still attached to their graphs.
    """
    gan_mode = "vanilla" if opt.no_lsgan else opt.gan_mode
    zero = torch.zeros((), device=x.device)
    with autocast:
        s_in = data.generator_input(s, inst, opt.label_nc, opt.no_instance)  # (B, label_nc+1, H, W)
        if E is not None:
            feat = E(x, runs.feature_regions(opt, s, inst))                 # (B, feat_num, H, W)
        G_in = torch.cat([s_in, feat], dim=1) if feat is not None else s_in
        fake = G(G_in)                                                      # (B, 3, H, W)
        fake_pair, real_pair = torch.cat([s_in, fake], dim=1), torch.cat([s_in, x], dim=1)
        # Without an image pool, one forward of the synthesized pair serves both losses: D(s, G(s))
        # has the values, and gives the D_k's weights the gradient, of D(s, G(s) detached), so the
        # official code's third forward (of the detached pair) is redundant. With a pool, D's
        # synthesized pairs come from the history and need their own forward.
        pred_fake, pred_real = D(fake_pair), D(real_pair)
        pred_fake_D = pred_fake if pool.size == 0 else D(pool.query(s_in, fake.detach()))
        terms = {
            "G_GAN": losses.gan_loss(pred_fake, True, gan_mode, for_discriminator=False),
            "G_GAN_Feat": (zero if opt.no_ganFeat_loss else
                           losses.feature_matching_loss(pred_fake, pred_real, opt.lambda_feat)),
            "G_VGG": vgg_loss(fake, x) if vgg_loss is not None else zero,
            "D_real": losses.gan_loss(pred_real, True, gan_mode),
            "D_fake": losses.gan_loss(pred_fake_D, False, gan_mode),
        }
    terms["G"] = terms["G_GAN"] + terms["G_GAN_Feat"] + terms["G_VGG"]
    terms["D"] = 0.5 * (terms["D_fake"] + terms["D_real"])
    return fake, terms


def update(terms, state, procs, stop_requested=False):
    """One round of the min-max game: the D_k's gradients from loss_D and G's (and E's) from
    loss_G, both from the same forward, then the check of ``check_iteration``, then one Adam step
    each. Returns the losses for the log (averaged over processes) and whether any process was
    asked to stop."""
    compute_gradients(terms, state.params_G, state.params_D, state.scaler, procs.world_size)
    values, stop = check_iteration(terms, LOSS_NAMES, state, procs, stop_requested)
    state.scaler.step(state.optimizer_G)
    state.scaler.step(state.optimizer_D)
    state.scaler.update()
    return values, stop


def compute_gradients(terms, params_G, params_D, scaler, world_size=1):
    """Each backward fills only its own networks' gradients (``inputs``): loss_D does not reach G
    through the synthesized pair, and loss_G does not fill the D_k's gradients, exactly as with
    the official code's detached pair and frozen D. loss_D goes first because its backward runs
    only through D, so what it keeps of the graph for loss_G is small; loss_G's backward runs
    through G as well and frees it all. One gradient scaler serves both (it scales with fp16
    only). Under torchrun DDP has averaged G's gradients during backward; D's are averaged here."""
    for p in params_G + params_D:
        p.grad = None
    scaler.scale(terms["D"]).backward(inputs=params_D, retain_graph=True)
    scaler.scale(terms["G"]).backward(inputs=params_G)
    if world_size > 1:
        average_gradients(params_D, world_size)


# ---------------------------------------------------------------------------------------------
# The procedure of sec. 3.2: what learns when, and at which rate
# ---------------------------------------------------------------------------------------------

def coarse_to_fine(state, opt, procs):
    """At the start of each epoch: for the first ``niter_fix_global`` epochs of a --netG local
    run, only the local enhancer G2 learns, around the G1 loaded with --load_pretrain; from the
    next epoch on, all of G. Nothing to do for G1 alone."""
    fix_global = fixes_global(opt, state.epoch)
    if fix_global != state.global_fixed:
        set_learning_networks(state, opt, procs, fix_global)
        procs.say("------------ Now also finetuning global generator -----------")


def fixes_global(opt, epoch):
    return opt.netG == "local" and epoch <= opt.niter_fix_global


def set_learning_networks(state, opt, procs, fix_global):
    """Which weights of G learn, with a fresh Adam over them and E, as the official code. With
    ``fix_global`` only the outermost (finest) enhancer learns, the official ``model{n}``: G1,
    and the coarser enhancers when there are several, are frozen, so they get no gradients at
    all (also none to all-reduce under torchrun). DDP averages the gradients of the weights that
    learn when it is built, so under torchrun G (and E) are wrapped again."""
    state.G.requires_grad_(not fix_global)
    if fix_global:
        state.G.enhancers[-1].requires_grad_(True)
    state.params_G = [p for p in state.G.parameters() if p.requires_grad]
    state.params_G += list(state.E.parameters()) if state.E is not None else []
    state.optimizer_G = adam(state.params_G, opt)
    state.global_fixed = fix_global
    if procs.distributed:
        devices = [procs.device] if procs.device.type == "cuda" else None
        state.G_train = DistributedDataParallel(state.G, device_ids=devices)
        if state.E is not None:
            state.E_train = DistributedDataParallel(state.E, device_ids=devices)


def adam(params, opt):
    """Adam with lr 0.0002 and beta1 0.5 (beta2 0.999), the official defaults. ``fused``: one
    kernel updates every tensor, instead of a Python loop of per-tensor operations; the same
    update up to rounding, and 5x faster on a CPU for the 183M weights of the 512p G."""
    return torch.optim.Adam(params, lr=opt.lr, betas=(opt.beta1, 0.999), fused=True)


def learning_rate(opt, epoch):
    """lr for ``epoch`` (1-based): constant for ``niter`` epochs, then linear decay. The official
    code subtracts lr / niter_decay after each epoch past niter, so the last epoch runs at
    lr / niter_decay and the next would run at 0."""
    if opt.niter_decay <= 0:
        return opt.lr
    return opt.lr * (1.0 - max(0, epoch - 1 - opt.niter) / opt.niter_decay)


def set_learning_rate(state, opt):
    lr = learning_rate(opt, state.epoch)
    for group in state.optimizer_G.param_groups + state.optimizer_D.param_groups:
        group["lr"] = lr
    return lr


def load_pretrained(G, D, E, path):
    """--load_pretrain: G1 (and E, when both runs have one) from a --netG global run, and its
    D_k, as the official code; the run is a folder of ours or of NVIDIA's trainer
    (``official_folder``), or our .pt file. Returns how many of D's scales were loaded.

    The official discriminator names its scales from the coarsest (``scale0`` sees the most
    downsampled pair) and loads weights by name, so a run with more scales receives the loaded
    D_k on its coarse scales, and its new finest scale starts fresh. In the paper's recipe (G1 at
    1024x512 with 2 scales, then G at 2048x1024 with 3) each loaded D_k therefore judges the same
    absolute resolution it learned on: the paper's "add a discriminator at the finest level".
    Here ``D.D[0]`` is the finest, so the loaded D_k are matched counting from the coarsest end;
    a D_k whose shape differs (another --ndf or label set) keeps its fresh weights."""
    path = Path(path)
    file = runs.checkpoint_file(path) if path.is_dir() else path
    if path.is_dir() and official_folder.is_official_run(path):  # NVIDIA's latest_net_G.pth
        file = official_folder.weights_file(path, "latest", "G")
        pretrained = official_folder.pretrained_weights(path)
    elif not file.is_file():
        raise UserError(f"--load_pretrain {path}: no checkpoint at {file}; pass the folder of "
                        "a --netG global run (checkpoints/NAME) or its .pt file")
    else:
        pretrained = runs.load_checkpoint(file)
    try:
        if hasattr(G, "load_global_generator"):
            G.load_global_generator(pretrained["G"])
        else:
            G.load_state_dict(pretrained["G"])
        if E is not None and pretrained.get("E") is not None:
            E.load_state_dict(pretrained["E"])
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise UserError(
            f"--load_pretrain {file}: its G does not fit this G1 ({first}); the global run must "
            "have the same --label_nc, --no_instance, --instance_feat, --n_downsample_global, "
            "--n_blocks_global, and --ngf equal to this run's --ngf * 2^n_local_enhancers"
        ) from None
    if pretrained["D"] is None:
        return 0
    return load_discriminators_from_the_coarsest(D, pretrained["D"])


def load_discriminators_from_the_coarsest(D, state_dict):
    """Load the D_k of ``state_dict`` (a MultiscaleDiscriminator with any number of scales) into
    ``D``, the coarsest onto the coarsest; returns how many scales were loaded."""
    theirs = 1 + max(int(k.split(".")[1]) for k in state_dict)
    ours = len(D.D)
    loaded = 0
    for k in range(ours):
        k_theirs = k - (ours - theirs)  # the same distance from the coarsest scale
        if k_theirs < 0 or k_theirs >= theirs:
            continue
        prefix = f"D.{k_theirs}."
        weights = {key[len(prefix):]: v for key, v in state_dict.items() if key.startswith(prefix)}
        own = D.D[k].state_dict()
        if weights.keys() == own.keys() and all(v.shape == own[n].shape
                                                for n, v in weights.items()):
            D.D[k].load_state_dict(weights)
            loaded += 1
    return loaded


def reached_max_iters(opt, state):
    return opt.max_iters is not None and state.iteration >= opt.max_iters


# ---------------------------------------------------------------------------------------------
# Setting up: the VGG loss, the networks and their optimizers, a resumed run
# ---------------------------------------------------------------------------------------------

def perceptual_loss(opt, procs, synthetic):
    """The VGG loss, or None with --no_vgg_loss. Its ImageNet weights cannot always be
    downloaded: missing, they stop a real run, and only turn the loss off for the synthetic
    city."""
    if opt.no_vgg_loss:
        return None
    try:
        vgg = losses.VGGLoss(lambda_vgg=opt.lambda_feat).to(procs.device)
        if opt.output_nc == 1:  # a grey photo is the RGB photo of three equal channels
            return lambda fake, x: vgg(fake.expand(-1, 3, -1, -1), x.expand(-1, 3, -1, -1))
        return vgg
    except losses.VGGWeightsMissing as err:
        if not synthetic:
            raise UserError(f"{err}; or pass --no_vgg_loss to train without the VGG loss") from None
        procs.say(f"VGG loss off for the synthetic city: {err}")
        opt.no_vgg_loss = True
        return None


class TrainingState:
    """What the loop changes and a checkpoint holds: G, D and E (``G_train``/``E_train`` are what
    the forward pass calls, their DDP wrappers under torchrun), the weights that learn, both
    optimizers, the gradient scaler, the image pool and the counters."""

    def __init__(self, G, D, E, opt, procs):
        self.G, self.D, self.E, self.G_train, self.E_train = G, D, E, G, E
        self.params_D = list(D.parameters())
        self.optimizer_D = adam(self.params_D, opt)
        self.scaler = torch.amp.GradScaler(procs.device.type,
                                           enabled=procs.use_amp and procs.dtype == torch.float16)
        # Under torchrun each process has its own pool, but only rank 0's is saved: a resumed
        # multi-process run with --pool_size > 0 goes on from rank 0's history on every rank.
        self.pool = ImagePool(opt.pool_size, seed=opt.seed + procs.rank,
                              binary_labels=opt.label_nc > 0)
        self.epoch, self.epoch_iter, self.iteration, self.stop = 1, 0, 0, None
        self.params_G = self.optimizer_G = self.global_fixed = None
        # Pixels of each class this process has trained on (all processes' in a checkpoint).
        self.class_pixels = (torch.zeros(opt.label_nc, dtype=torch.int64) if opt.label_nc > 0
                             else None)

    def checkpoint(self, opt, world_size, class_pixels):
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "E": self.E.state_dict() if self.E is not None else None,
                "optimizer_G": self.optimizer_G.state_dict(),
                "optimizer_D": self.optimizer_D.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "iteration": self.iteration, "epoch_iter": self.epoch_iter,
                "world_size": world_size, "image_pool": self.pool.state_dict(),
                "rng": rng_state(), "class_pixels": class_pixels, "opt": vars(opt)}


def build_state(opt, procs, resume, n_images):
    """G, D and E initialised from --seed (then --load_pretrain), or the resumed run's state;
    on this process's device; under torchrun every process starts from rank 0's D."""
    torch.manual_seed(opt.seed)
    G, D, E = runs.build_networks(opt)
    if opt.verbose and procs.is_main:
        runs.describe_networks({"G": G, "D": D, "E": E})
    if opt.load_pretrain and resume is None:
        loaded = load_pretrained(G, D, E, opt.load_pretrain)
        procs.say(f"G1 and {loaded} of the {len(D.D)} D_k (from the coarsest) loaded from "
                  f"{opt.load_pretrain}")
    elif opt.load_pretrain:
        procs.say(f"--load_pretrain ignored: resuming {resume['path']}, which already holds G1")
    state = TrainingState(G.to(procs.device), D.to(procs.device),
                          E.to(procs.device) if E is not None else None, opt, procs)
    # the optimizers of the stage the run is in (a resumed run: the stage its checkpoint was in)
    set_learning_networks(state, opt, procs, fixes_global(opt, resume["epoch"] if resume else 1))
    if resume is not None:
        restore(state, resume, opt, procs, n_images)
    if procs.distributed:
        for tensor in D.state_dict().values():
            dist.broadcast(tensor, src=0)
    if fixes_global(opt, state.epoch):
        epochs = "epoch" if opt.niter_fix_global == 1 else "epochs"
        procs.say(f"Only training the local enhancer G2 (G1 fixed) for {opt.niter_fix_global} "
                  f"{epochs}")
    return state


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    """Parse ``argv``, train, and return what ``train`` returns. Errors end the process with one
    line on stderr: exit code 2 for a user error, 1 for a run that had to stop, 130 (Ctrl-C) or
    143 (SIGTERM) after a requested stop, once the checkpoint is saved."""
    argv = sys.argv[1:] if argv is None else list(argv)
    opt = build_parser().parse_args(argv)
    given = explicit_options(argv)
    choose_dataroot(opt, given)
    if opt.debug:  # the official --debug: one short epoch, shown at every iteration
        opt.display_freq = opt.print_freq = opt.niter = 1
        opt.niter_decay, opt.max_dataset_size = 0, min(opt.max_dataset_size or 10, 10)
    failure = None  # (message, exit code), reported once the error's traceback is gone
    try:
        runs.resolve_run_options(opt, "train.py", distributed=True)
        if opt.n_clusters is not None:
            raise UserError("--n_clusters is K of the K-means after training: pass it to "
                            "`python manipulate.py encode --n_clusters K`; train.py does not "
                            "cluster")
        with StopRequest() as stop:
            if opt.continue_train:  # an official run's own options, where the command is silent
                official_folder.adopt_options(opt, explicit_options(argv))
            result = train(opt, stop)
    except (UserError, data.DataError) as err:
        failure = runs.error_line(err), 2
    except RunStopped as err:
        failure = runs.error_line(err), 1
    except OSError as err:  # writing a sample, the loss log, the plot or opt.json
        failure = (f"{runs.error_line(err)}; free disk space or choose another --checkpoints_dir, "
                   "then resume with --continue_train", 1)
    except KeyboardInterrupt:
        failure = "interrupted twice: stopped without saving; the last checkpoint is kept", 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if failure is not None:
        runs.fail("train.py", *failure)
    if result["stopped"] == "interrupted":
        sys.exit(stop.exit_code)
    return result


def choose_dataroot(opt, given):
    """No --dataroot: ./datasets/cityscapes when it exists (the official default), else the
    synthetic city with its CPU-sized defaults for the options not ``given``. The first line
    printed says which."""
    if opt.dataroot is not None:
        return
    say = print if int(os.environ.get("RANK", "0")) == 0 else (lambda *a: None)
    if Path(runs.OFFICIAL_DATAROOT).is_dir():
        opt.dataroot = runs.OFFICIAL_DATAROOT
        say(f"No --dataroot: training on {runs.OFFICIAL_DATAROOT}, the official default")
        return
    say(f"No --dataroot and no {runs.OFFICIAL_DATAROOT}: training on the synthetic city")
    for name, value in SYNTHETIC_DEFAULTS.items():
        if name not in given:
            setattr(opt, name, value)


def build_parser():
    p = runs.CommandLine(
        prog="train.py",
        description="Train pix2pixHD (Wang et al., CVPR 2018). Flags are the official ones, and "
                    "so are the defaults shown, which are also the paper's unless a help line "
                    "says otherwise.",
        epilog="Without --dataroot: ./datasets/cityscapes when it exists (the official "
               "default); else writes the synthetic city to %s (once) and trains a "
               "CPU-sized model on it with these defaults, unless set on the command line: %s. "
               "Its VGG loss is on when the VGG19 ImageNet weights are in the torch hub cache, "
               "else off (with a real --dataroot, missing weights stop the run). Multi-GPU: "
               "torchrun --nproc_per_node=N train.py ..." % (runs.SYNTHETIC_CITY, ", ".join(
                   f"--{k} {v}" for k, v in SYNTHETIC_DEFAULTS.items())),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    runs.add_run_options(p, name_default="label2city",
                         seed_help="seed of the weights, the data order and the augmentation")
    runs.add_official_run_options(p)

    add_data_options(p)
    runs.add_model_options(p)

    g = p.add_argument_group("training")
    g.add_argument("--niter", type=runs.whole(0), default=100, help="epochs at the initial lr")
    g.add_argument("--niter_decay", type=runs.whole(0), default=100,
                   help="epochs of linear lr decay to 0 after niter")
    g.add_argument("--lr", type=runs.real(0, above=True), default=0.0002, help="Adam learning rate")
    g.add_argument("--beta1", type=runs.real(0, 1, below=True), default=0.5,
                   help="Adam beta1 (beta2 is 0.999)")
    g.add_argument("--lambda_feat", type=runs.real(0), default=10.0,
                   help="lambda, the weight of feature matching and VGG losses (paper, sec. 4: 10)")
    g.add_argument("--no_ganFeat_loss", action="store_true",
                   help="drop the feature matching loss L_FM (eq. 4)")
    g.add_argument("--no_vgg_loss", action="store_true", help="drop the VGG perceptual loss")
    g.add_argument("--no_lsgan", action="store_true",
                   help="the original GAN loss (BCE) instead of LSGAN (paper: LSGAN)")
    g.add_argument("--gan_mode", default="lsgan", choices=losses.GAN_MODES,
                   help="the adversarial loss: lsgan (paper), vanilla (BCE, as --no_lsgan), or "
                        "hinge (ours; not in the paper)")
    g.add_argument("--pool_size", type=runs.whole(0), default=0,
                   help="history of synthesized pairs shown to D; 0 = none (official: 0)")
    g.add_argument("--niter_fix_global", type=runs.whole(0), default=0,
                   help="with --netG local: epochs that train only G2's layers, G1 fixed")
    g.add_argument("--load_pretrain", default="",
                   help="a --netG global run whose G1 and D_k start this run: its folder (ours, "
                        "or one written by the official code) or our .pt file")
    g.add_argument("--start_over", action="store_true",
                   help="start a new run where checkpoints_dir/name already holds one, moving "
                        "the old folder aside to name.replaced-DATE (nothing is deleted)")
    g.add_argument("--continue_train", action="store_true",
                   help="resume where checkpoints_dir/name/latest.pt (or epoch_N.pt with "
                        "--which_epoch N) stopped: the same batches, random states and "
                        "schedule; bit for bit on the CPU, numerically close on CUDA. A folder "
                        "written by the official code goes on from its latest_net_*.pth and "
                        "iter.txt, with its opt.txt's architecture, and a fresh Adam")
    g.add_argument("--max_iters", type=runs.whole(1), default=None,
                   help="stop (and save) when the iteration count reaches N, counting the "
                        "iterations before a --continue_train")
    g.add_argument("--debug", action="store_true",
                   help="as the official flag: 1 epoch of at most 10 images, a log line and a "
                        "sample at every iteration")
    g.add_argument("--n_clusters", type=int, default=None,
                   help="official base option, for encoding: manipulate.py encode --n_clusters")
    g.add_argument("--deterministic", action="store_true",
                   help="on CUDA: PyTorch's deterministic kernels and no cuDNN autotuning, so a "
                        "rerun repeats itself except for ReflectionPad2d's backward, which has no "
                        "deterministic CUDA kernel (the CPU is deterministic without it)")

    evaluate.add_validation_options(p)
    add_output_options(p)
    return p


def add_data_options(p):
    g = p.add_argument_group("data")
    g.add_argument("--dataroot", default=None,
                   help="dataset root: pix2pixHD layout (train_label/, train_inst/, train_img/) or "
                        "the Cityscapes download (gtFine/, leftImg8bit/); none: "
                        f"{runs.OFFICIAL_DATAROOT} if it exists, else the synthetic city")
    g.add_argument("--phase", default="train", help="the split to train on")
    g.add_argument("--label_nc", type=runs.whole(0), default=35,
                   help="number of label ids (Cityscapes: 35); 0 reads RGB inputs from train_A/")
    g.add_argument("--no_instance", action="store_true",
                   help="no instance maps: drop the boundary channel (paper uses instance maps)")
    g.add_argument("--loadSize", type=runs.whole(1), default=1024,
                   help="scale images to this width (paper: 1024 for G1, 2048 for G1+G2)")
    g.add_argument("--fineSize", type=runs.whole(1), default=512,
                   help="crop size for the *_crop modes")
    g.add_argument("--resize_or_crop", default="scale_width",
                   choices=data.RESIZE_OR_CROP, help="preprocessing (official names)")
    g.add_argument("--no_flip", action="store_true", help="no random horizontal flip")
    g.add_argument("--batchSize", type=runs.whole(1), default=1,
                   help="batch size PER PROCESS (with torchrun: per GPU); paper: 1")
    g.add_argument("--num_workers", "--nThreads", type=runs.whole(0), default=2,
                   help="data loading processes per training process (official name: nThreads)")
    g.add_argument("--serial_batches", action="store_true",
                   help="the images in order every epoch, not shuffled")
    g.add_argument("--max_dataset_size", type=runs.whole(1), default=None,
                   help="train on the first N images (by file name) only")


def add_output_options(p):
    g = p.add_argument_group("output")
    g.add_argument("--display_freq", type=runs.whole(1), default=100,
                   help="iterations between sample grids (label | synthesized | real)")
    g.add_argument("--print_freq", type=runs.whole(1), default=100,
                   help="iterations between log lines and rows of loss_log.csv")
    g.add_argument("--save_latest_freq", type=runs.whole(1), default=1000,
                   help="iterations between saves of latest.pt")
    g.add_argument("--save_epoch_freq", type=runs.whole(1), default=10,
                   help="epochs between saves of epoch_N.pt")
    g.add_argument("--no_html", action="store_true",
                   help="no web/index.html (a page of the sample grids, newest first)")
    g.add_argument("--display_winsize", type=runs.whole(1), default=512,
                   help="width in pixels of each sample on web/index.html")
    g.add_argument("--tf_log", action="store_true",
                   help="TensorBoard scalars and samples in checkpoints_dir/name/logs "
                        "(pip install tensorboard)")


def explicit_options(argv):
    """Names of the options given on the command line: parsed again into a namespace that
    already holds a marker for every option, which argparse then only replaces for the options
    it reads (so an option set to its default value still counts as set)."""
    parser, unset = build_parser(), object()
    marked = argparse.Namespace(**{name: unset for name in vars(parser.parse_args([]))})
    return {k for k, v in vars(parser.parse_args(argv, marked)).items() if v is not unset}


if __name__ == "__main__":
    main()
