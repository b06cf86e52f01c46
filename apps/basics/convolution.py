"""Experiment: convolution by hand — kernels, the backward pass, sizes and receptive fields.

What a convolutional layer computes (deep-learning "convolution" is cross-correlation; no kernel flip):

  y[i, j, o] = b[o] + Σ_{u, v, c} x[i·S + u, j·S + v, c] · w[u, v, c, o]

Hand-designed kernels: Sobel (Sobel & Feldman 1968) estimates ∂/∂x and ∂/∂y, a box or Gaussian blur
averages, a Gabor kernel (a Gaussian times a cosine; Daugman 1985) responds to one orientation and
spatial frequency — the filters the first layer of a trained CNN resembles.

Backward pass of y = x ⋆ w (stride 1, no padding) for a loss L with upstream gradient g = ∂L/∂y:

  ∂L/∂w[u, v, c, o] = Σ_{i, j} x[i + u, j + v, c] · g[i, j, o]        (x cross-correlated with g)
  ∂L/∂x             = g, zero-padded by F - 1 on every side, cross-correlated with the kernel flipped
                      by 180° (rot180 w[u, v, c, o] = w[F-1-u, F-1-v, c, o]) and its in/out channels swapped:
                      a "full" convolution with the true, flipped kernel
  ∂L/∂b[o]          = Σ_{i, j} g[i, j, o]

Sizes: an N×N input, F×F kernel, padding P, stride S gives (N - F + 2P)/S + 1 outputs per side; a
layer has F·F·C_in·C_out weights + C_out biases (a 5×5 kernel on an RGB image: 5·5·3 = 75 weights per
filter). The receptive field of L stacked F×F layers grows as r_l = r_{l-1} + (F - 1)·Π_{k<l} S_k, so
three 3×3 layers of stride 1 see 7×7 — the same as one 7×7 layer, with 3·(9C²) instead of 49C² weights
(Simonyan & Zisserman 2015, "Very deep convolutional networks").
"""

import os

import numpy as np

from apps.basics.common import experiment_folder, print_table, save

# --- hand-designed kernels ----------------------------------------------------------------------------------

def gabor(size=15, sigma=3.0, theta=0.0, wavelength=6.0):
    """Real Gabor kernel: exp(-(x'² + y'²)/(2σ²)) · cos(2π x'/λ), x' along the direction θ; zero mean."""
    r = np.arange(size) - size // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    x_rot = xx * np.cos(theta) + yy * np.sin(theta)
    y_rot = -xx * np.sin(theta) + yy * np.cos(theta)
    kernel = np.exp(-(x_rot ** 2 + y_rot ** 2) / (2 * sigma ** 2)) * np.cos(2 * np.pi * x_rot / wavelength)
    return kernel - kernel.mean()  # no response to a flat region


def kernels():
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64) / 8
    r = np.arange(9) - 4
    gauss = np.exp(-r ** 2 / (2 * 2.0 ** 2))
    return {"sobel x (∂/∂x)": sobel_x, "sobel y (∂/∂y)": sobel_x.T, "box blur 5x5": np.full((5, 5), 1 / 25),
            "gaussian blur σ=2": np.outer(gauss, gauss) / gauss.sum() ** 2,
            "gabor 0°": gabor(theta=0.0), "gabor 45°": gabor(theta=np.pi / 4), "gabor 90°": gabor(theta=np.pi / 2)}


def apply_kernels(image, kernel_dict):
    """Each 2-D kernel applied to a grey image with tf.nn.conv2d ('SAME' padding): {name: response}."""
    import tensorflow as tf

    x = tf.constant(image[None, :, :, None], tf.float32)
    return {name: tf.nn.conv2d(x, tf.constant(k[:, :, None, None], tf.float32), 1, "SAME").numpy()[0, :, :, 0]
            for name, k in kernel_dict.items()}


# --- forward and backward pass from scratch ------------------------------------------------------------------

def correlate(x, w):
    """Valid cross-correlation, stride 1: x (H, W, C), w (F, F, C, O) -> (H-F+1, W-F+1, O)."""
    f = w.shape[0]
    h, wd = x.shape[0] - f + 1, x.shape[1] - f + 1
    out = np.zeros((h, wd, w.shape[3]), x.dtype)
    for u in range(f):
        for v in range(f):
            out += x[u:u + h, v:v + wd, :] @ w[u, v]  # (h, wd, C) @ (C, O)
    return out


def conv_backward(x, w, g):
    """(∂L/∂x, ∂L/∂w, ∂L/∂b) of y = correlate(x, w) + b given g = ∂L/∂y, by the equations above."""
    f = w.shape[0]
    grad_w = np.zeros_like(w)
    for u in range(f):
        for v in range(f):
            patch = x[u:u + g.shape[0], v:v + g.shape[1], :]  # the inputs that met w[u, v]
            grad_w[u, v] = np.tensordot(patch, g, axes=([0, 1], [0, 1]))  # (C, O)
    padded = np.pad(g, ((f - 1, f - 1), (f - 1, f - 1), (0, 0)))
    flipped = w[::-1, ::-1].transpose(0, 1, 3, 2)  # rot180, channels (O, C): maps g's O channels back to C
    return correlate(padded, flipped), grad_w, g.sum(axis=(0, 1))


def gradient_check(shape=(7, 6, 3), f=3, out_channels=4, seed=0, eps=1e-6):
    """Largest relative error of the scratch gradients against tf.GradientTape (float64) and central finite
    differences, for L = Σ r ⊙ (x ⋆ w + b) with a random r (so that g = r)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=shape), rng.normal(size=(f, f, shape[2], out_channels))
    b = rng.normal(size=out_channels)
    r = rng.normal(size=(shape[0] - f + 1, shape[1] - f + 1, out_channels))
    ours = conv_backward(x, w, r)

    tx, tw, tb = (tf.Variable(a) for a in (x, w, b))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(r * (tf.nn.conv2d(tx[None], tw, 1, "VALID")[0] + tb))
    tape_grads = [g.numpy() for g in tape.gradient(loss, [tx, tw, tb])]

    def loss_of(x_, w_, b_):
        return float(np.sum(r * (correlate(x_, w_) + b_)))

    numeric = []
    for i, a in enumerate((x, w, b)):
        grad = np.zeros_like(a)
        for index in np.ndindex(a.shape):
            plus, minus = [list((x, w, b)) for _ in range(2)]
            plus[i], minus[i] = a.copy(), a.copy()
            plus[i][index] += eps
            minus[i][index] -= eps
            grad[index] = (loss_of(*plus) - loss_of(*minus)) / (2 * eps)
        numeric.append(grad)

    def rel(a, b_):
        return float(np.max(np.abs(a - b_)) / max(np.max(np.abs(b_)), 1e-300))

    return {"vs_tape": [rel(o, t) for o, t in zip(ours, tape_grads)],
            "vs_finite_differences": [rel(o, n) for o, n in zip(ours, numeric)],
            "forward_vs_tf": rel(correlate(x, w), tf.nn.conv2d(x[None], w, 1, "VALID").numpy()[0])}


# --- sizes, parameters, receptive fields ---------------------------------------------------------------------

def output_size(n, f, p=0, s=1):
    """(N - F + 2P)/S + 1 (integer division: a window that does not fit is dropped, as Keras does)."""
    return (n - f + 2 * p) // s + 1


def conv_parameters(f, c_in, c_out):
    return f * f * c_in * c_out + c_out


def keras_conv(n, f, p, s, c_in, c_out):
    """Output side and parameter count of ZeroPadding2D(p) + Conv2D(c_out, f, strides=s) in Keras."""
    import keras

    model = keras.Sequential([keras.Input((n, n, c_in)), keras.layers.ZeroPadding2D(p),
                              keras.layers.Conv2D(c_out, f, strides=s)])
    return model.output_shape[1], model.count_params()


def receptive_field(layers):
    """r after layers [(F, S), ...]: r += (F - 1) · product of the earlier strides."""
    r, jump = 1, 1
    for f, s in layers:
        r += (f - 1) * jump
        jump *= s
    return r


def measured_receptive_field(layers, n=41):
    """Side of the input region that moves the centre output of a Keras stack (all-ones kernels, no
    nonlinearity): the inputs with a non-zero gradient of that output."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((n, n, 1))] + [
        keras.layers.Conv2D(1, f, strides=s, kernel_initializer="ones", use_bias=False) for f, s in layers])
    x = tf.Variable(tf.zeros((1, n, n, 1)))
    with tf.GradientTape() as tape:
        y = model(x)
        centre = y[0, y.shape[1] // 2, y.shape[2] // 2, 0]
    moved = np.argwhere(tape.gradient(centre, x).numpy()[0, :, :, 0] != 0)
    return int(moved[:, 0].max() - moved[:, 0].min() + 1), int(moved[:, 1].max() - moved[:, 1].min() + 1)


ARITHMETIC_CASES = [  # (N, F, P, S, C_in, C_out)
    (32, 5, 0, 1, 3, 1), (32, 5, 2, 1, 3, 10), (227, 11, 0, 4, 3, 96), (7, 3, 0, 2, 1, 1), (7, 3, 1, 2, 1, 1),
    (28, 3, 1, 1, 16, 32), (224, 7, 3, 2, 3, 64)]
STACKS = {"3x3": [(3, 1)], "3x3 x2": [(3, 1)] * 2, "3x3 x3": [(3, 1)] * 3, "3x3 x5": [(3, 1)] * 5,
          "7x7": [(7, 1)], "3x3/2 then 3x3 x2": [(3, 2), (3, 1), (3, 1)]}


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt
    from skimage import data

    folder = experiment_folder(folder, "convolution")
    image = data.camera().astype(np.float32) / 255.0
    if small:
        image = image[::2, ::2]
    responses = apply_kernels(image, kernels())

    check = gradient_check(seed=seed)
    print_table("convolution backward pass from scratch (x 7x6x3, w 3x3x3x4, float64): largest relative error",
                ["against", "∂L/∂x", "∂L/∂w", "∂L/∂b"],
                [["tf.GradientTape", *check["vs_tape"]], ["finite differences", *check["vs_finite_differences"]]])
    print(f"forward pass vs tf.nn.conv2d: {check['forward_vs_tf']:.2g}")

    rows = []
    for n, f, p, s, c_in, c_out in ARITHMETIC_CASES:
        side, params = keras_conv(n, f, p, s, c_in, c_out)
        rows.append([f"{n}x{n}x{c_in}", f, p, s, c_out, output_size(n, f, p, s), side,
                     conv_parameters(f, c_in, c_out), params])
    print_table("output size (N - F + 2P)/S + 1 and parameters F·F·C_in·C_out + C_out, against Keras",
                ["input", "F", "P", "S", "filters", "formula size", "Keras size", "formula params", "Keras params"],
                rows)
    fields = {name: (receptive_field(layers), measured_receptive_field(layers)) for name, layers in STACKS.items()}
    print_table("receptive field of stacked convolutions: formula vs the inputs that move the centre output",
                ["stack (F/stride)", "formula", "measured"], [[k, r, f"{m[0]}x{m[1]}"] for k, (r, m) in fields.items()])

    fig, axes = plt.subplots(2, 4, figsize=(16, 8.5))
    axes = axes.ravel()
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("skimage camera", fontsize=9)
    for ax, (name, response) in zip(axes[1:], responses.items()):
        limit = np.percentile(np.abs(response), 99.5)
        if "blur" in name:
            ax.imshow(response, cmap="gray")
        else:
            ax.imshow(response, cmap="RdBu_r", vmin=-limit, vmax=limit)
        inset = ax.inset_axes([0.0, 0.0, 0.22, 0.22])
        inset.imshow(kernels()[name], cmap="RdBu_r")
        inset.set_xticks([])
        inset.set_yticks([])
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")
    png = save(fig, os.path.join(folder, "kernels.png"))
    print(f"wrote {png}")
    return {"gradient_check": check, "arithmetic": rows, "receptive_fields": fields, "pngs": [png]}
