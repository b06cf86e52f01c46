"""One worker of the recipe search for the 15-minute Fashion-MNIST target (see README.md).

A PyTorch mirror of apps/classify's `vgg` and `resnet` (conv-BN-ReLU, He-normal
kernels, Keras' BN momentum 0.99 / epsilon 1e-3, Adam epsilon 1e-7, linear
warm-up then cosine decay per step, label smoothing, flips, the seed's 6,000
validation images held out), run on a lent GPU so that ~60 recipes take
minutes instead of days; it is not part of the suite and nothing imports it.
Usage: python search.py CONFIGS_JSON RESULTS_JSONL (driver.py calls it).
"""
import functools
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.backends.cudnn.benchmark = True


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def ch(c, w):
    return max(2, int(round(c * w)))


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, stride=1, k=3):
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), bn(cout), nn.ReLU(inplace=True))


class VGG(nn.Module):
    def __init__(self, width=0.5, dropout=0.5, widths=(32, 64, 128), convs=2, fc=256):
        super().__init__()
        layers, cin = [], 1
        for f in widths:
            for _ in range(convs):
                layers.append(ConvBN(cin, ch(f, width)))
                cin = ch(f, width)
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * 9, ch(fc, width))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(ch(fc, width), 10)

    def forward(self, x):
        x = self.features(x).permute(0, 2, 3, 1).flatten(1)
        return self.out(self.drop(F.relu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = bn(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = bn(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet(nn.Module):
    def __init__(self, width=1.0, blocks=1, widths=(16, 32, 64), dropout=0.0):
        super().__init__()
        ws = [ch(w, width) for w in widths]
        layers, cin = [ConvBN(1, ws[0])], ws[0]
        for s, w in enumerate(ws):
            for b in range(blocks):
                layers.append(Block(cin, w, 2 if s > 0 and b == 0 else 1))
                cin = w
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(cin, 10)

    def forward(self, x):
        return self.out(self.drop(self.features(x).mean((2, 3))))


def init(m):
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    elif isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)


def augment(x, flip, crop, gen):
    n = x.shape[0]
    if flip:
        mask = torch.rand(n, device=x.device, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if crop:
        p = crop
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), device=x.device, generator=gen)
        dx = torch.randint(0, 2 * p + 1, (n,), device=x.device, generator=gen)
        r = torch.arange(28, device=x.device)
        rows = (dy[:, None] + r[None])[:, :, None]
        cols = (dx[:, None] + r[None])[:, None, :]
        x = padded[torch.arange(n, device=x.device)[:, None, None], 0, rows, cols][:, None]
    return x


def accuracy(model, x, y):
    """Accuracy, and accuracy of the image and its mirror image's averaged probabilities."""
    model.eval()
    correct = correct_tta = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            logits = model(x[i:i + 1000])
            correct += (logits.argmax(1) == y[i:i + 1000]).sum().item()
            both = logits.softmax(1) + model(x[i:i + 1000].flip(3)).softmax(1)
            correct_tta += (both.argmax(1) == y[i:i + 1000]).sum().item()
    model.train()
    return correct / len(x), correct_tta / len(x)


@functools.lru_cache(maxsize=1)
def fashion_mnist():
    """(train images, train labels, test images, test labels), read once per worker."""
    d = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist") + "/"
    return tuple(idx(d + name) for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))


def run(cfg):
    seed = cfg.get("seed", 0)
    torch.manual_seed(seed)
    dev = "cuda"
    xtr, ytr, xte, yte = fashion_mnist()
    order = np.random.default_rng(seed).permutation(60000)
    nval = 0 if cfg.get("full_train") else 6000
    val, tr = order[:nval], order[nval:]
    to = lambda a: torch.tensor(a, dtype=torch.float32, device=dev)[:, None] / 255.0
    X, Y = to(xtr[tr]), torch.tensor(ytr[tr], dtype=torch.long, device=dev)
    XV, YV = to(xtr[val]), torch.tensor(ytr[val], dtype=torch.long, device=dev)
    XT, YT = to(xte), torch.tensor(yte, dtype=torch.long, device=dev)
    kind = cfg["model"]
    opts = cfg.get("opts", {})
    model = (VGG if kind == "vgg" else ResNet)(**opts).to(dev)
    model.apply(init)
    params = sum(p.numel() for p in model.parameters())
    bs, epochs, lr = cfg.get("batch", 128), cfg["epochs"], cfg.get("lr", 2e-3)
    steps_per_epoch = math.ceil(len(X) / bs)
    total = steps_per_epoch * epochs
    warm = int(cfg.get("warmup", 0.5) * steps_per_epoch)
    if cfg.get("opt", "adam") == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7, weight_decay=cfg.get("wd", 0.0))
    elif cfg["opt"] == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, eps=1e-7, weight_decay=cfg.get("wd", 0.05))
    else:  # weight_decay adds wd * w to every gradient, as the app's --l2 wd / 2 does on the kernels
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                              weight_decay=cfg.get("wd", 5e-4))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.get("smoothing", 0.1))
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    start = time.time()
    curve = []  # (test accuracy, with flip averaging) after each epoch
    for epoch in range(epochs):
        perm = torch.randperm(len(X), device=dev, generator=gen)
        for i in range(steps_per_epoch):
            b = perm[i * bs:(i + 1) * bs]
            x = augment(X[b], cfg.get("flip", True), cfg.get("crop", 0), gen)
            loss = loss_fn(model(x), Y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        curve.append(accuracy(model, XT, YT))
    test, test_tta = curve[-1]
    valacc = accuracy(model, XV, YV)[0] if nval else None
    return dict(cfg=cfg, params=params, test=test, test_tta=test_tta, val=valacc,
                curve=[round(plain, 4) for plain, _ in curve], gpu_s=round(time.time() - start, 1))


if __name__ == "__main__":
    configs = json.loads(sys.argv[1])
    with open(sys.argv[2], "a") as f:
        for cfg in configs:
            try:
                result = run(cfg)
            except Exception as e:  # keep the batch going
                result = dict(cfg=cfg, error=repr(e))
            print(json.dumps(result), flush=True)
            f.write(json.dumps(result) + "\n")
            f.flush()
