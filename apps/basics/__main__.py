"""Command line: python -m apps.basics {perceptron,backprop,optimizers,initialization,activations,
regularization,pretraining,numerics,normalization,learning_rate,clipping,relu_bias,capacity,convolution,
all,demo} [--small] [--run DIR] [--seed N]

Each experiment writes its PNG files into its run folder (--run DIR, default runs/basics/<experiment>/;
for all and demo, --run DIR is the root: DIR/<experiment>/), prints a short table and the PNG paths.
"""

import argparse
import importlib
import os
import time

from core.errors import UserError, run_cli

EXPERIMENTS = {
    "perceptron": "Rosenblatt's rule: converges on separable data, not on XOR; an MLP solves XOR",
    "backprop": "NumPy backpropagation checked against tf.GradientTape and finite differences; trains on digits",
    "optimizers": "SGD ... AMSGrad from their update equations, checked against Keras; Rosenbrock/Beale, Fashion-MNIST",
    "initialization": "zero / small random / Xavier / He in deep tanh and ReLU MLPs: activation, gradient statistics",
    "activations": "sign ... SELU: curves, derivatives, dying ReLU, accuracy comparison",
    "regularization": "none / L2 / L1 / dropout / early stopping on a small training set",
    "pretraining": "greedy layer-wise autoencoder pre-training vs direct training of a deep MLP",
    "numerics": "naive vs max-subtracted softmax and log-sum-exp: overflow to inf/NaN and its fix",
    "normalization": "input standardization with training statistics; batch norm from its equations vs Keras, "
                     "with and without BN in a deep sigmoid MLP",
    "learning_rate": "learning-rate sweep (slow ... diverged) and full-batch vs mini-batch vs per-example SGD",
    "clipping": "gradient clipping by global norm in an exploding deep network",
    "relu_bias": "zero vs small positive bias in ReLU layers: units never active on the data",
    "capacity": "universal approximation, depth vs width, training/validation error vs model and data size",
    "convolution": "hand-designed kernels, convolution backward pass from scratch, output sizes and receptive fields",
    "degradation": "deeper plain nets train worse (higher training loss), residual ones do not (He et al. 2016)",
    "ablation": "AlexNet-style convnet with conv / fully connected layers removed (Krizhevsky 2012, Zeiler & Fergus)",
}
RUNS = os.path.join("runs", "basics")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.basics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [*EXPERIMENTS.items(), ("all", "run every experiment (add --small for a quick demo)"),
                            ("demo", "every experiment at the small size (same as: all --small)")]:
        p = commands.add_parser(name, help=help_text, description=help_text)
        where = f"{RUNS}/<experiment>; DIR/<experiment> for each" if name in ("all", "demo") else f"{RUNS}/{name}"
        p.add_argument("--run", default=None, metavar="DIR",
                       help=f"the run folder for its PNG files (default: {where})")
        p.add_argument("--small", action="store_true", help="reduced size: seconds instead of minutes (default: off)")
        p.add_argument("--seed", type=int, default=0, help="random seed, an integer >= 0 (default: 0)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        raise UserError(f"--seed must be an integer >= 0, got {args.seed}")
    return args


def run_experiment(name, *, run=None, small=False, seed=0):
    """Run one experiment by name into its run folder `run` (default runs/basics/<name>); returns its results
    dict (with the PNG paths under 'pngs')."""
    from core import training

    training.set_seed(seed)
    module = importlib.import_module(f"apps.basics.{name}")
    print(f"== {name}: {EXPERIMENTS[name]}")
    return module.run(folder=run, small=small, seed=seed)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    if args.command in ("all", "demo"):
        small = args.small or args.command == "demo"
        pngs = []
        for name in EXPERIMENTS:
            run = os.path.join(args.run, name) if args.run else None
            pngs += run_experiment(name, run=run, small=small, seed=args.seed)["pngs"]
            print()
        print(f"{args.command} finished in {time.time() - start:.0f} s; PNG files:")
        for png in pngs:
            print(f"  {png}")
    else:
        run_experiment(args.command, run=args.run, small=args.small, seed=args.seed)
        print(f"{args.command} finished in {time.time() - start:.0f} s")


if __name__ == "__main__":
    run_cli(main, prog="apps.basics")
