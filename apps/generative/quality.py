"""Sample quality measured with a classifier trained by this suite.

These are *not* the ImageNet FID / Inception Score: the features and class
probabilities come from a LeNet-5 (`apps.classify`) trained on the same
dataset as the generative model (a "judge"), so the numbers compare models
of this suite with each other on one dataset, nothing more.

  Fréchet distance  ||μ_r - μ_g||² + Tr(Σ_r + Σ_g - 2 (Σ_r Σ_g)^½) between
                    Gaussians fitted to the judge's penultimate features (f6, 84
                    units) of real and generated images (Heusel et al. 2017;
                    core.feature_metrics: finite for singular covariances)
  precision, recall improved precision and recall in the same features
                    (Kynkäänniemi et al. 2019): the share of samples inside the
                    real images' k-NN manifold (realism), and of real images
                    inside the samples' (coverage). Mean and covariance can be
                    close for noise blobs in the rough shape of clothes; the
                    share of samples that lie among real images is not.
  Inception-style   exp(E_x KL(p(y|x) || p(y))) with the judge's class
  score             probabilities (Salimans et al. 2016); between 1 and the
                    number of classes
  mode coverage     how many classes receive at least `min_share` of their fair
                    share (1/num_classes) of the samples, by the judge's argmax
"""

import os

import keras
import numpy as np

from core.feature_metrics import frechet_distance, precision_recall

FEATURE_LAYER = "f6"


def inception_score(probabilities, eps=1e-12):
    p = np.asarray(probabilities, np.float64)
    marginal = p.mean(axis=0, keepdims=True)
    kl = np.sum(p * (np.log(p + eps) - np.log(marginal + eps)), axis=1)
    return float(np.exp(kl.mean()))


def mode_coverage(probabilities, min_share=0.1):
    """(number of classes covered, counts per class)."""
    p = np.asarray(probabilities)
    num_classes = p.shape[1]
    counts = np.bincount(p.argmax(axis=1), minlength=num_classes)
    return int(np.sum(counts >= min_share * len(p) / num_classes)), counts


class Judge:
    """The suite's classifier as a feature extractor and class-probability model (inputs: [0, 1] images)."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.features = keras.Model(classifier.inputs, [classifier.get_layer(FEATURE_LAYER).output, classifier.output])

    def __call__(self, images01, batch_size=500):
        images = np.asarray(images01, np.float32) * 255.0  # the classifier takes raw pixels
        features, probabilities = self.features.predict(images, batch_size=batch_size, verbose=0)
        return features, probabilities

    def scores(self, generated01, real01, min_share=0.1):
        fake_features, fake_probs = self(generated01)
        real_features, real_probs = self(real01)
        covered, counts = mode_coverage(fake_probs, min_share)
        precision, recall = precision_recall(real_features, fake_features)
        return {"frechet_distance": frechet_distance(real_features, fake_features),
                "precision": precision, "recall": recall,
                "inception_score": inception_score(fake_probs),
                "real_inception_score": inception_score(real_probs),
                "modes_covered": covered, "num_classes": int(fake_probs.shape[1]),
                "class_counts": counts.tolist(), "num_samples": int(len(generated01))}


def judge_dir(dataset, root=os.path.join("runs", "generative")):
    return os.path.join(root, f"judge_{dataset.replace(':', '_')}")


def train_judge(dataset, *, run=None, epochs=3, limit=None, seed=0):
    """Train the LeNet-5 judge with the classify app into the run folder `run` (rerun resumes)."""
    from apps.classify import app as classify

    run = run or judge_dir(dataset)
    classify.train(model="lenet5", dataset=dataset, epochs=epochs, batch_size=128, run=run, seed=seed, limit=limit)
    report = classify.evaluate(run, limit=2000)
    return run, report


def load_judge(directory):
    """The judge for inference only (compile=False: its optimizer state is not needed)."""
    from core.errors import UserError
    from core.training import MODEL_FILE, load_model_file

    path = os.path.join(directory, MODEL_FILE)
    if not os.path.exists(path):
        raise UserError(f"no judge classifier in {directory}; run 'python -m apps.generative judge' first")
    classifier = load_model_file(path)  # a truncated zip, a foreign file, ...: one line
    try:
        return Judge(classifier)
    except ValueError as error:  # no FEATURE_LAYER: not a LeNet-5 of apps.classify
        raise UserError(f"{path} is not a judge classifier: {str(error).splitlines()[0][:200]}") from None
