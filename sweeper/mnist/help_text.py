"""The words of `python -m sweeper.train --help` and of the README's config tables: one line for every config group
option, key, environment variable, `hydra.sweeper` key and example. sweeper/mnist/help.py renders them, and refuses
an option or key of the config without a line here."""
APP = "python -m sweeper.train"

# ---------------------------------------------------------------------------------------------------- the source
# group -> what it changes, its keys, and one line per option (in the order shown after the default)
GROUPS = {
    "model": dict(about="the network", keys="`width` (conv channels), `dropout`", options={
        "reference": "the seed's shape: 3×3 conv–BN–ReLU–dropout blocks, maxpool, a 1×1 transition, GAP, FC; "
                     "8,780 params at width 10",
        "slim": "narrower and deeper, with a 1×1 transition after each stage; 8,770 params at width 16",
        "lean": "`slim` without the FC after GAP: its last 3×3 conv gives the 10 class maps that GAP averages; "
                "4,660 params at width 12 (where `slim` has 5,020)",
    }),
    "augment": dict(about="the random augmentation of training images: one batched `affine_grid` + `grid_sample` "
                          "on the training device, random per sample",
                    keys="`pre_rotate`, `degrees`, `translate`, `scale`, `shear`", options={
        "affine": "one affine, milder than the seed's (±7°, shift 0.08, scale 0.9–1.1, shear 5°)",
        "none": "no augmentation, only normalisation",
        "seed": "the seed's `RandomRotation(7)` then `RandomAffine(7, translate=0.1, scale=(0.8, 1.2), shear=10)`",
        "rotate": "rotation only, ±10°",
    }),
    "optimizer": dict(about="the optimizer (its `_target_`, a `torch.optim` class)",
                      keys="`lr` (the peak under OneCycle), `momentum`/`nesterov` or `betas`, `weight_decay`",
                      options={
        "sgd": "SGD, Nesterov momentum 0.9, lr 0.2 (the seed's recipe: lr 0.01 with `scheduler=step`)",
        "adamw": "AdamW, lr 0.003, weight decay 0.01",
    }),
    "scheduler": dict(about="the learning-rate schedule",
                      keys="`pct_start`, `div_factor`, `final_div_factor` / `step_size` (epochs), `gamma` / "
                           "`eta_min`", options={
        "onecycle": "OneCycleLR over the whole run, stepped per batch; `optimizer.lr` is the peak",
        "step": "the seed's StepLR: the lr times `gamma` every `step_size` epochs",
        "cosine": "cosine decay from `optimizer.lr` to `eta_min` over the whole run, stepped per batch",
        "none": "a constant lr",
    }),
    "experiment": dict(about="a whole recipe, added on top of the defaults: `+experiment=NAME`", keys="any",
                       add=True, options={
        "smallest": "the smallest net the hunt confirmed: `slim` at width 12, 5,020 params, 15 epochs, "
                    "≥ 99.4 % on seeds 0, 1 and 2",
    }),
    "hparams_search": dict(about="a search: an Optuna study through the `mnist_optuna` sweeper, each of its trials "
                                 "one run of the trial",
                           keys="`hydra.sweeper.*`", options={
        "budget": "maximise final test accuracy over model family, width, dropout, augment, scheduler, optimizer, "
                  "lr, batch size and epochs (8, 10 or 12); TPE, a pruner of the worst 10 %, 20 trials, 2 at a time",
        "smallest": "the fewest parameters that still reach `budget.target_acc`: minimise the param count with "
                    "`final_test_acc ≥ target` (on the worst seed) as a constraint; each hit confirmed on two more "
                    "seeds; the space narrowed down by the hunt ([The smallest net](#the-smallest-net))",
        "pareto": "accuracy vs parameters, multi-objective (NSGA-II); `optimization_results.yaml` holds the "
                  "Pareto set",
    }),
    "hydra/launcher": dict(about="where a sweep's trials run ([Run on a cluster](#run-on-a-cluster)); without "
                                 "one, in processes on this machine", keys="`hydra.launcher.*`", options={
        "ray_cluster": "Ray tasks on a running cluster: `hydra.launcher.ray.init.address=HEAD:6379`",
        "slurm": "SLURM jobs through submitit, one trial each; set `hydra.launcher.partition`",
    }),
    "hydra/help": dict(about="the page `--help` prints", keys="", options={
        "mnist": "this one, written by `python -m sweeper.mnist.help` from `sweeper/mnist/help.py`",
        "default": "Hydra's own, with the composed config",
    }),
}
TRIAL_GROUPS = ["model", "augment", "optimizer", "scheduler", "experiment"]
OTHER_GROUPS = ["hydra/launcher", "hydra/help"]
NOT_IN_CONF = {"hydra/help": {"default"}}   # options Hydra itself provides

# the trial's other keys: (keys, meaning); the defaults come from conf/train.yaml
KEYS = [
    (["trainer.epochs"], "must be in [1, `budget.max_epochs`]"),
    (["trainer.batch_size"], "images per training step"),
    (["trainer.threads"], "torch threads per process (two OpenMP threads collapse under any concurrent load on "
                          "small CPUs)"),
    (["trainer.precision"], "`auto` (bf16 autocast on CUDA and on CPUs with bf16 units, else fp32), `fp32`, `bf16` "
                            "(on a CPU without bf16 units — no `avx512_bf16` or `amx_bf16` in `/proc/cpuinfo` — it "
                            "is emulated, about 3.7× slower than fp32 where measured, and the trial logs one warning "
                            "line saying so)"),
    (["trainer.compile"], "`torch.compile` the model (for GPUs; nothing gained on a 2-core CPU). On CUDA its "
                          "kernels go into the captured step, or, without one, mode `reduce-overhead`"),
    (["trainer.cuda_graph"], "`auto` (on for CUDA), `true` (CUDA only), `false`: capture the whole training step "
                             "once in a CUDA graph and replay it ([GPU](#gpu)); never on CPU"),
    (["device"], "`auto` (cuda, then mps, then cpu), `cpu`, `cuda`, `mps`"),
    (["seed"], "same config + seed on CPU → identical losses and accuracies; on CUDA the same data order, weights "
               "and random draws, numbers equal only within GPU rounding ([GPU](#gpu))"),
    (["data.root"], "folder holding `MNIST/raw/*-ubyte`"),
    (["data.download"], "download into `data.root` when files are missing"),
    (["data.train_subset", "data.test_subset"], "an int trains/tests on a seeded random subset (quick runs, tests)"),
    (["budget.max_params", "budget.max_epochs", "budget.target_acc"], "the goal"),
]

# the environment variables conf/train.yaml reads (`${oc.env:VAR,...}`): the key each sets comes from the config
ENV = {
    "MNIST_ROOT": "the folder that holds `MNIST/raw/*-ubyte` (torchvision's layout); where the files are missing "
                  "and `data.download=true`, they are downloaded there",
    "SWEEPER_PRECISION": "`fp32` turns bf16 autocast off for every run (and test)",
}

# hydra.sweeper.KEY -> one line; the defaults, and the sampler and pruner options, come from the plugin's config
SWEEPER_KEYS = {
    "sampler": "Optuna's: `hydra/sweeper/sampler={samplers}`; each takes `seed`",
    "pruner": "stops hopeless trials: `hydra/sweeper/pruner={pruners}`",
    "direction": "`minimize` or `maximize`; a list means several objectives",
    "study_name": "the study's name (the searches name their sweep dir after it)",
    "storage": "an SQLAlchemy URL or a journal file: the same command then resumes the study",
    "n_trials": "the study's total: a re-run continues up to it",
    "n_jobs": "trials at once, each in a process of its own",
    "max_failure_rate": "stop (exit 1) once failed trials exceed this fraction of `n_trials`",
    "params": "the space in Hydra's sweep grammar: `choice`, `range`, `interval`, `tag(log, ...)`",
    "custom_search_space": "`module.fn`, called as `fn(cfg, trial)` to suggest more params",
    "policy": "`module.Class` judging each trial; null: the task's value (searches: MnistPolicy)",
    "objectives": "one name per direction (with MnistPolicy: `metrics.json` fields)",
    "stop_after_hits": "stop once this many trials meet all three budget constraints",
    "require_target": "make `final_test_acc ≥ budget.target_acc` a constraint",
    "accept_changes": "resume a stored study although its search space or fixed overrides changed",
    "prune_guard": "a trial whose latest reported value is at or beyond this is never pruned",
    "confirm_seeds": "a hit runs again on seeds +1 … +K and counts only if every run hits",
    "heartbeat_interval": "seconds between a running trial's heartbeats in an RDB storage; null: none",
    "grace_period": "silent seconds before a trial is failed and re-queued (null: twice the interval)",
    "storage_timeout": "seconds a sweep waits out a storage that is down or locked, then stops (exit 1)",
    "cuda_mps": "trials share a GPU through CUDA MPS: `auto` (`n_jobs` > 1 on CUDA), `true`, `false`",
    "trial_timeout": "seconds: a trial running longer is stopped and failed; null: no limit",
    "gpus": "worker i gets GPU i mod n: `auto` (on CUDA), a list (`[0, 2]`), or null",
    "enqueue": "param dicts run first, once per study (as `enqueue_trial`): what worked before",
}

EXAMPLES = [
    ("a quick smoke run on 2,000 images", f"{APP} data.train_subset=2000 data.test_subset=1000 trainer.epochs=1"),
    ("the seed's own recipe", f"{APP} augment=seed scheduler=step optimizer.lr=0.01 optimizer.nesterov=false "
                              f"trainer.epochs=12"),
    ("a 40-trial budget search, one trial at a time",
     f"{APP} --multirun hparams_search=budget hydra.sweeper.n_trials=40 hydra.sweeper.n_jobs=1"),
]
