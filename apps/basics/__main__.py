"""Command line: python -m apps.basics {perceptron,backprop,optimizers,initialization,activations,
regularization,pretraining,numerics,normalization,learning_rate,clipping,relu_bias,capacity,convolution,
all,demo} [--small] [--out runs/basics] [--seed 0]

Each experiment writes its PNG files under <out>/<experiment>/, prints a short table and the PNG paths.
"""

import argparse
import importlib
import time

from core.errors import run_cli

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
DEFAULT_OUT = "runs/basics"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.basics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [*EXPERIMENTS.items(), ("all", "run every experiment (add --small for a quick demo)"),
                            ("demo", "every experiment at the small size (same as: all --small)")]:
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--out", default=DEFAULT_OUT, help="root of the PNG folders (default: %(default)s)")
        p.add_argument("--small", action="store_true", help="reduced size: seconds instead of minutes")
        p.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run_experiment(name, *, out=DEFAULT_OUT, small=False, seed=0):
    """Run one experiment by name; returns its results dict (with the PNG paths under 'pngs')."""
    from core import training

    training.set_seed(seed)
    module = importlib.import_module(f"apps.basics.{name}")
    print(f"== {name}: {EXPERIMENTS[name]}")
    return module.run(out=out, small=small, seed=seed)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    if args.command in ("all", "demo"):
        small = args.small or args.command == "demo"
        pngs = []
        for name in EXPERIMENTS:
            pngs += run_experiment(name, out=args.out, small=small, seed=args.seed)["pngs"]
            print()
        print(f"{args.command} finished in {time.time() - start:.0f} s; PNG files:")
        for png in pngs:
            print(f"  {png}")
    else:
        run_experiment(args.command, out=args.out, small=args.small, seed=args.seed)
        print(f"{args.command} finished in {time.time() - start:.0f} s")


if __name__ == "__main__":
    run_cli(main, prog="apps.basics")
