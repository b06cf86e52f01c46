"""The generative models by name.

Each builder takes the image shape, the number of classes and the run's
options (`config.TrainConfig` as a dict) and returns an uncompiled model; `FAMILY`
says how a model is trained and evaluated.
"""

from core.registry import Registry

MODELS = Registry("model")
FAMILY = {}


def _register(name, family):
    def decorator(builder):
        FAMILY[name] = family
        return MODELS.register(name)(builder)
    return decorator


@_register("ae", "autoencoder")
def _ae(image_shape, num_classes, o):
    from apps.generative import autoencoders
    return autoencoders.dense_ae(image_shape, o["latent_dim"])


@_register("conv_ae", "autoencoder")
def _conv_ae(image_shape, num_classes, o):
    from apps.generative import autoencoders
    return autoencoders.conv_ae(image_shape, o["latent_dim"])


@_register("linear_ae", "autoencoder")
def _linear_ae(image_shape, num_classes, o):
    from apps.generative import autoencoders
    return autoencoders.linear_ae(image_shape, o["latent_dim"])


@_register("sparse_ae", "autoencoder")
def _sparse_ae(image_shape, num_classes, o):
    from apps.generative import autoencoders
    return autoencoders.sparse_ae(image_shape, o["latent_dim"], target=o["sparsity_target"],
                                  weight=o["sparsity_weight"])


@_register("denoising_ae", "autoencoder")
def _denoising_ae(image_shape, num_classes, o):
    from apps.generative import autoencoders
    return autoencoders.denoising_ae(image_shape, o["latent_dim"], o["noise"], o["noise_level"])


@_register("vae", "vae")
def _vae(image_shape, num_classes, o):
    from apps.generative import vae
    return vae.build_vae(image_shape, o["latent_dim"], 0, o["likelihood"], o["kl"], seed=o["seed"])


@_register("cvae", "vae")
def _cvae(image_shape, num_classes, o):
    from apps.generative import vae
    return vae.build_vae(image_shape, o["latent_dim"], num_classes, o["likelihood"], o["kl"], seed=o["seed"])


def _gan(kind):
    def builder(image_shape, num_classes, o):
        from apps.generative import gan
        return gan.build_gan(kind, image_shape, o["latent_dim"], num_classes, loss=o["gan_loss"],
                             feature_matching=o["feature_matching"],
                             minibatch_discrimination=o["minibatch_discrimination"], critic_steps=o["critic_steps"])
    return builder


for _kind in ("gan", "dcgan", "cgan", "wgan_gp"):
    _register(_kind, "gan")(_gan(_kind))


@_register("cyclegan", "cyclegan")
def _cyclegan(image_shape, num_classes, o):
    from apps.generative import cyclegan
    return cyclegan.build_cyclegan(image_shape, cycle_weight=o["cycle_weight"])
