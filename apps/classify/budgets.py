"""The default model and every model's full training budget, as data: a few overrides of TrainConfig
(config.py) per model.

`train` and `demo` start from the chosen model's budget (by default DEFAULT_MODEL's: `make demo` and
`make classify` train the same recipe); `zoo --full` trains each model with its own budget on the whole of
Fashion-MNIST. How each number was measured is in docs/classify.md ("How the budgets were chosen").

No TensorFlow import here: the CLI reads this module before parsing arguments.
"""

DEFAULT_MODEL = "vgg"

# Shared by every budget unless a model's entry overrides it: Adam with a half-epoch warm-up then cosine
# decay to 0 (a short run ends at a small rate, so the last epoch is also the best), label smoothing 0.1,
# horizontal flips (Fashion-MNIST items are left-right symmetric; a crop costs epochs a short run lacks).
COMMON = dict(batch_size=128, learning_rate=2e-3, optimizer="adam", lr_schedule="cosine", warmup_epochs=0.5,
              label_smoothing=0.1, augment="flip")

# Epochs, and a width where a full-width epoch would take too long: no model gets much more than ~10
# minutes of training on the 2-core machine, so `zoo --full` compares architectures at one CPU budget.
BUDGETS = {
    "mlp": dict(epochs=10),
    "lenet5": dict(epochs=10),
    # The default, 93 % in 15 minutes; 8 epochs leave margin on both targets. Its recipe is the winner of
    # `python -m apps.classify search` on the validation split (apps/classify/search.py, docs/classify.md):
    # this one (Nesterov SGD at a high rate, L2, a lighter dropout than the model's own) predates that search
    # and is its first candidate; the search prints the line that replaces it.
    "vgg": dict(epochs=8, width=0.5, optimizer="nesterov", learning_rate=0.2, l2=2.5e-4, dropout=0.3),
    "alexnet": dict(epochs=2, width=0.5),
    "nin": dict(epochs=1, width=0.5),
    "googlenet": dict(epochs=1, width=0.125),
    "resnet": dict(epochs=2),
    "resnet_bottleneck": dict(epochs=1, width=0.5),
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
    """The training settings of `model` that replace TrainConfig's defaults: COMMON updated by its entry."""
    return {**COMMON, **BUDGETS.get(model, dict(epochs=2))}
