"""The default model and every model's full training budget, in one place.

`demo` trains DEFAULT_MODEL with BUDGETS[DEFAULT_MODEL]; `zoo --full` trains
each model with its own budget on the whole of Fashion-MNIST. The budgets are
sized from measured CPU time per training image, so that the whole `zoo --full`
table takes about an hour on an idle 2-core machine (docs/classify.md has the
measurements); the default model's budget is the best recipe measured for
the 15-minute target (92.1 % Fashion-MNIST test accuracy, but in about 31 minutes
on an idle machine: 188 s per epoch; the 93 %-in-15-minutes goal is not reached
yet, see docs/classify.md).

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

# Epochs (and a width where a full-width epoch would eat the hour) per model.
# Measured CPU seconds per training image (full width, batch 128, on the
# loaded 2-core machine) as seconds per 54,000-image epoch on an idle one
# (CPU time / 2 -- about 3x optimistic: vgg width 0.5 then measured 188 s per
# epoch idle), with the forward multiply-accumulates per 28x28 image:
#   mlp 11 s (0.2 M MACs), lenet5 18 s (0.4 M), vgg 220 s (29.5 M; width 0.5:
#   see docs/classify.md), resnet 106 s (9.4 M), alexnet 373 s (80.7 M),
#   nin 429 s (91.3 M), googlenet 791 s (70.8 M), resnet_bottleneck 390 s
#   (26.1 M); the others estimated from their MACs (resnet_preact 20.3 M,
#   wide_resnet 127 M, densenet 33.6 M, se_resnet 20.4 M, resnet_sd 31.3 M)
#   at ~15 s per M MACs (batch-norm-heavy nets pay more than their MACs) and,
#   for ResNeXt (grouped convolutions, slow on CPU), the reduced-budget table.
BUDGETS = {
    "mlp": dict(epochs=10),
    "lenet5": dict(epochs=10),
    "vgg": dict(epochs=10, width=0.5),  # the default: 92.1 % test in ~31 idle minutes (docs/classify.md)
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
}


def budget(model):
    """The full training options of `model`: COMMON updated by its entry."""
    return {**COMMON, **BUDGETS.get(model, dict(epochs=2))}
