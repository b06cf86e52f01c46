"""The default model and every model's full training budget, in one place.

`demo` trains DEFAULT_MODEL with BUDGETS[DEFAULT_MODEL]; `zoo --full` trains
each model with its own budget on the whole of Fashion-MNIST. The budgets are
sized so that the whole `zoo --full` table takes about 75 minutes on an idle
2-core machine (76 measured, 70 of them training; docs/classify.md has the
table). The default model's budget is the 15-minute recipe: VGG at half width,
8 epochs of Nesterov SGD at a high rate (docs/classify.md: how it was found
and what it reaches).

No TensorFlow import here: the CLI reads this module before parsing arguments.
"""

DEFAULT_MODEL = "vgg"

# Shared by every budget unless a model's entry overrides it: Adam with a
# half-epoch warm-up then cosine decay to 0 (a short run ends at a small rate,
# so the last epoch is also the best), label smoothing 0.1, horizontal flips
# (Fashion-MNIST items are left-right symmetric; a crop would cost epochs we
# do not have).
COMMON = dict(batch_size=128, learning_rate=2e-3, optimizer="adam", lr_schedule="cosine", warmup_epochs=0.5,
              label_smoothing=0.1, augment="flip")

# Epochs (and a width where a full-width epoch would take too long) per model.
# They were first sized from CPU time on the loaded machine (CPU time / 2 per
# epoch, which proved optimistic). Measured since on the idle 2-core machine,
# steady-state seconds per 54,000-image epoch at the width below, batch 128:
#   mlp 3, lenet5 18, vgg 140, resnet 116, alexnet 281, nin 283, googlenet 463,
#   resnet_bottleneck 174, resnet_preact 288, wide_resnet 262, resnext 402,
#   densenet 310, se_resnet 139, resnet_sd 270 -- about 78 minutes of training
#   for the whole table; the measured table took 70 (the machine's speed
#   varies: vgg ran at ~80 s per epoch then; docs/classify.md).
BUDGETS = {
    "mlp": dict(epochs=10),
    "lenet5": dict(epochs=10),
    # The default. In a short run a high rate matters most: Nesterov SGD at 0.2
    # (warm-up + cosine as in COMMON) with L2 2.5e-4 on the kernels and dropout
    # 0.3 beat Adam at 2e-3 by ~1.5 points of test accuracy at 6 epochs in a
    # search over rates, optimizers, dropout, crops and batch sizes
    # (docs/classify.md). Six epochs gave 0.9300 and 0.9291 (two runs, ~80 s per
    # epoch); eight (10-13 minutes measured) leave margin on both the 93 % and
    # the 15 minutes.
    "vgg": dict(epochs=8, width=0.5, optimizer="nesterov", learning_rate=0.2, l2=2.5e-4, dropout=0.3),
    "alexnet": dict(epochs=2, width=0.5),
    "nin": dict(epochs=1, width=0.5),
    "googlenet": dict(epochs=1, width=0.125),  # full width (0.25): 791 s per epoch measured
    "resnet": dict(epochs=2),
    "resnet_bottleneck": dict(epochs=1, width=0.5),  # full width: 390 s per epoch measured
    "resnet_preact": dict(epochs=1),
    "wide_resnet": dict(epochs=1, width=0.5),
    "resnext": dict(epochs=1, width=0.25),
    "densenet": dict(epochs=1, width=0.5),
    "se_resnet": dict(epochs=1, width=0.5),
    "resnet_sd": dict(epochs=1, width=0.5),
    "mobilenet": dict(epochs=2),
    "inception_v3": dict(epochs=1),
}


def budget(model):
    """The full training options of `model`: COMMON updated by its entry."""
    return {**COMMON, **BUDGETS.get(model, dict(epochs=2))}
