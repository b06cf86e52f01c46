"""Region proposals by selective search (Uijlings, van de Sande, Gevers & Smeulders 2013).

Before the RPN learned where objects are, R-CNN (Girshick et al. 2014) took its ~2,000
boxes per image from selective search, a bottom-up grouping with no learning at all:

1. Over-segment the image into small regions (Felzenszwalb & Huttenlocher's graph
   segmentation, `skimage.segmentation.felzenszwalb`).
2. Repeatedly merge the two *neighbouring* regions that are most similar, until one
   region covers the image. The similarity is a sum of cues in [0, 1]:
     colour  sum_k min(h_i[k], h_j[k])   overlap of L1-normalised intensity histograms
     size    1 - (|r_i| + |r_j|) / |image|      small regions merge first, so big ones
                                                 do not swallow everything early
     fill    1 - (|box(r_i u r_j)| - |r_i| - |r_j|) / |image|
                                                 regions that fill each other's gaps
   The merged region's histogram is the size-weighted mean of the two, its box the union.
3. Every region ever formed (initial and merged) proposes its bounding box. Several
   strategies (segmentation scales, similarity sets) are pooled for diversity; boxes are
   ranked by hierarchy level (the whole image first) times a random number, as in the
   paper, so that each strategy's large regions come early and duplicates are dropped.

The scenes are gray, so the colour cue is an intensity histogram; the paper's texture
cue (gradient histograms) is left out.
"""

import numpy as np

HISTOGRAM_BINS = 25                  # per channel, as in the paper
SCALES = (30, 100, 300)              # felzenszwalb `scale` (larger: bigger initial regions)
SIMILARITIES = (("colour", "size", "fill"), ("size", "fill"))
MIN_SIDE = 6                         # boxes thinner than this are no object of these scenes


class Region:
    """A region of the hierarchy: pixel count, bounding box [x0, y0, x1, y1) and histogram."""

    __slots__ = ("size", "box", "histogram")

    def __init__(self, size, box, histogram):
        self.size, self.box, self.histogram = size, box, histogram

    def merged(self, other):
        size = self.size + other.size
        box = np.concatenate([np.minimum(self.box[:2], other.box[:2]), np.maximum(self.box[2:], other.box[2:])])
        histogram = (self.size * self.histogram + other.size * other.histogram) / size
        return Region(size, box, histogram)


def initial_segmentation(image, scale, sigma=0.8, min_size=None):
    """Felzenszwalb's graph-based over-segmentation of a gray image (H, W): labels (H, W) 0..n-1."""
    from skimage.segmentation import felzenszwalb

    min_size = scale // 2 if min_size is None else min_size
    return felzenszwalb(np.asarray(image, np.float64) / 255.0, scale=scale, sigma=sigma, min_size=min_size,
                        channel_axis=None)


def initial_regions(image, labels):
    """The Region of each label and the set of neighbouring label pairs (4-connectivity)."""
    count = int(labels.max()) + 1
    bins = np.minimum((np.asarray(image, np.float64) * HISTOGRAM_BINS / 256.0).astype(int), HISTOGRAM_BINS - 1)
    histograms = np.zeros((count, HISTOGRAM_BINS))
    np.add.at(histograms, (labels.ravel(), bins.ravel()), 1.0)
    sizes = histograms.sum(axis=1)
    rows, cols = np.indices(labels.shape)
    x0, y0 = np.full(count, labels.shape[1]), np.full(count, labels.shape[0])
    x1, y1 = np.zeros(count, int), np.zeros(count, int)
    np.minimum.at(x0, labels.ravel(), cols.ravel())
    np.minimum.at(y0, labels.ravel(), rows.ravel())
    np.maximum.at(x1, labels.ravel(), cols.ravel() + 1)
    np.maximum.at(y1, labels.ravel(), rows.ravel() + 1)
    regions = [Region(sizes[k], np.array([x0[k], y0[k], x1[k], y1[k]], np.float64), histograms[k] / sizes[k])
               for k in range(count)]
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    differ = a != b
    low, high = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
    pairs = {(int(code // count), int(code % count)) for code in np.unique(low * count + high)}
    return regions, pairs


def similarity(r, s, image_area, cues=SIMILARITIES[0]):
    """The sum of the chosen cues (each in [0, 1]) between regions r and s."""
    total = 0.0
    if "colour" in cues:
        total += float(np.minimum(r.histogram, s.histogram).sum())
    if "size" in cues:
        total += 1.0 - (r.size + s.size) / image_area
    if "fill" in cues:
        box = np.concatenate([np.minimum(r.box[:2], s.box[:2]), np.maximum(r.box[2:], s.box[2:])])
        total += 1.0 - ((box[2] - box[0]) * (box[3] - box[1]) - r.size - s.size) / image_area
    return total


def hierarchical_grouping(image, labels, cues=SIMILARITIES[0]):
    """Merge neighbouring regions, most similar pair first, until one is left.

    Returns (regions, merges): every region in order of creation (the initial ones, then
    one per merge) and the merges as (i, j, new) indices into `regions`.
    """
    regions, pairs = initial_regions(image, labels)
    image_area = float(labels.size)
    neighbours = {k: set() for k in range(len(regions))}
    for i, j in pairs:
        neighbours[i].add(j)
        neighbours[j].add(i)
    similarities = {(i, j): similarity(regions[i], regions[j], image_area, cues) for i, j in pairs}
    merges = []
    while similarities:
        i, j = max(similarities, key=similarities.get)
        new = len(regions)
        regions.append(regions[i].merged(regions[j]))
        merges.append((i, j, new))
        # The two regions leave the graph; the new one takes over their neighbours.
        neighbours[new] = (neighbours.pop(i) | neighbours.pop(j)) - {i, j}
        for k in neighbours[new]:
            neighbours[k] -= {i, j}
            neighbours[k].add(new)
        similarities = {pair: value for pair, value in similarities.items() if i not in pair and j not in pair}
        for k in neighbours[new]:
            similarities[(k, new)] = similarity(regions[k], regions[new], image_area, cues)
    return regions, merges


def selective_search(image, *, scales=SCALES, similarities=SIMILARITIES, max_proposals=None, seed=0):
    """Proposal boxes (N, 4) xyxy float32 of a gray image (H, W) or (H, W, 1), best-ranked first."""
    image = np.asarray(image)
    image = image[..., 0] if image.ndim == 3 else image
    rng = np.random.default_rng(seed)
    boxes, ranks = [], []
    for scale in scales:
        labels = initial_segmentation(image, scale)
        for cues in similarities:
            regions, _ = hierarchical_grouping(image, labels, cues)
            # Level 1 = the last region formed (the whole image), growing towards the initial regions.
            levels = len(regions) - np.arange(len(regions))
            boxes.append(np.stack([r.box for r in regions]))
            ranks.append(levels * rng.uniform(size=len(regions)))
    boxes, ranks = np.concatenate(boxes), np.concatenate(ranks)
    boxes = boxes[np.argsort(ranks, kind="stable")]
    sides = boxes[:, 2:] - boxes[:, :2]
    boxes = boxes[(sides >= MIN_SIDE).all(axis=1)]
    _, first = np.unique(boxes, axis=0, return_index=True)  # drop duplicates, keep the best-ranked copy
    boxes = boxes[np.sort(first)]
    return boxes[:max_proposals].astype(np.float32)


def proposal_recall(proposals, scenes, threshold=0.5, counts=None):
    """Share of the scenes' objects whose best IoU with the first n proposals of their image is
    >= threshold, for each n in `counts` (default: all proposals). `proposals`: a list of (N_i, 4)."""
    from apps.detect.boxes import iou_matrix

    longest = max((len(p) for p in proposals), default=0)
    counts = [longest] if counts is None else list(counts)
    found = np.zeros(len(counts))
    total = 0
    for boxes, truth, n in zip(proposals, scenes["boxes"], scenes["num_objects"]):
        n = int(n)
        total += n
        if not n or not len(boxes):
            continue
        iou = iou_matrix(np.asarray(boxes, np.float32), truth[:n])  # (N, n)
        for c, count in enumerate(counts):
            found[c] += (iou[:count].max(axis=0, initial=0.0) >= threshold).sum() if count else 0
    return found / max(total, 1)
