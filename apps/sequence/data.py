"""Data of the sequence app: Debian `fortunes` quotes and generated dates.

Fortunes
  `load_fortunes()` reads the quote files of the Debian `fortunes` package
  (one file per category, quotes separated by lines holding a single `%`)
  and splits them into train / validation / test with a fixed rule: a
  quote's split is decided by the CRC32 of its text, so the split does not
  depend on the seed, the order of the files or the categories asked for.
  Vectorization is `keras.layers.TextVectorization`, at character level
  (`char_vectorizer`, for the language model) and word level
  (`word_vectorizer`, for the classifier).

Dates
  `make_dates()` writes real dates in varied human formats and locales with
  Babel's CLDR data (`babel.dates.format_date`: "March 4, 2021",
  "4 mars 2021", "04.03.21", "2021年3月4日" ...); the target is ISO 8601
  ("2021-03-04").
"""

import datetime
import os
import random
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from core.errors import UserError

FORTUNES_DIR = os.environ.get("FORTUNES_DIR", "/usr/share/games/fortunes")
# Topically distinct categories for the classifier (the largest files overlap:
# "cookie" and "miscellaneous" hold a bit of everything).
CLASS_CATEGORIES = ("computers", "food", "politics", "science", "songs-poems", "startrek")
_CONTROL = re.compile(r".\x08|[\x00-\x08\x0b-\x1f\x7f]")  # overstrike (x BS y) and control characters


@dataclass
class Fortunes:
    categories: list
    train: list = field(default_factory=list)  # (text, label index) pairs
    val: list = field(default_factory=list)
    test: list = field(default_factory=list)

    def texts(self, split):
        return [t for t, _ in getattr(self, split)]

    def labels(self, split):
        return np.array([y for _, y in getattr(self, split)], dtype=np.int32)


def fortune_categories(directory=FORTUNES_DIR):
    if not os.path.isdir(directory):
        raise UserError(f"no fortunes in {directory}; install the Debian package 'fortunes' (make debian)")
    return sorted(n for n in os.listdir(directory)
                  if not n.endswith((".dat", ".u8")) and os.path.isfile(os.path.join(directory, n)))


def read_quotes(category, directory=FORTUNES_DIR):
    """The quotes of one category file, cleaned of overstrike and control characters."""
    path = os.path.join(directory, category)
    if not os.path.isfile(path):
        raise UserError(f"unknown fortunes category '{category}'; choose from: "
                        f"{', '.join(fortune_categories(directory))}")
    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read()
    quotes = []
    for quote in re.split(r"^%\s*$", raw, flags=re.M):
        quote = _CONTROL.sub("", quote.replace("\t", "    ")).strip("\n")
        if quote.strip():
            quotes.append(quote)
    return quotes


def split_of(text, fractions=(0.8, 0.1)):
    """'train', 'val' or 'test' for a quote, fixed by the CRC32 of its text."""
    bucket = (zlib.crc32(text.encode("utf-8")) % 1000) / 1000.0
    if bucket < fractions[0]:
        return "train"
    return "val" if bucket < fractions[0] + fractions[1] else "test"


def load_fortunes(categories=CLASS_CATEGORIES, directory=FORTUNES_DIR, limit=None):
    """Quotes of `categories` (None: all files) with their category index,
    split 80/10/10 by content hash; duplicates (the same text under two
    categories) are dropped. `limit` caps each split."""
    categories = list(categories or fortune_categories(directory))
    result, seen = Fortunes(categories=categories), set()
    for label, category in enumerate(categories):
        for quote in read_quotes(category, directory):
            if quote in seen:
                continue
            seen.add(quote)
            getattr(result, split_of(quote)).append((quote, label))
    for split in ("train", "val", "test"):
        pairs = getattr(result, split)
        pairs.sort(key=lambda p: zlib.crc32(p[0].encode("utf-8")))  # a fixed, category-mixed order
        if limit:
            del pairs[limit:]
    return result


def lm_corpus(fortunes, split, max_chars=None):
    """One long text: the split's quotes joined by blank-line separators ("\\n\\n")."""
    text = "\n\n".join(fortunes.texts(split)) + "\n\n"
    return text[:max_chars] if max_chars else text


# --------------------------------------------------------------- vectorization
def char_vectorizer(texts, max_chars=None):
    """Character-level `TextVectorization` (no standardization: case and
    punctuation are part of the language model's job). Index 0 is padding,
    1 the out-of-vocabulary character."""
    import keras
    import tensorflow as tf

    vectorizer = keras.layers.TextVectorization(standardize=None, split="character", output_mode="int",
                                                name="char_vectorizer")
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(list(texts)).batch(256))
    return vectorizer


def word_vectorizer(texts, max_tokens=20000, sequence_length=128):
    """Word-level `TextVectorization`: lower case, punctuation stripped, the
    `max_tokens` most frequent words, padded/truncated to `sequence_length`."""
    import keras
    import tensorflow as tf

    vectorizer = keras.layers.TextVectorization(max_tokens=max_tokens, output_mode="int",
                                                output_sequence_length=sequence_length, name="word_vectorizer")
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(list(texts)).batch(256))
    return vectorizer


# ------------------------------------------------------------------------ dates
DATE_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "sv_SE", "pl_PL")
DATE_FORMATS = ("short", "medium", "long", "full", "d MMMM y", "MMM d, y", "dd.MM.yyyy", "d/M/yy", "EEE, d MMM y",
                "MMMM d y", "y-MM-dd", "dd MMM yyyy", "d. MMMM y", "EEEE d MMMM y")
DATE_START, DATE_END = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)


def human_date(date, locale, pattern):
    from babel.dates import format_date

    return format_date(date, format=pattern, locale=locale)


def make_dates(n, seed=0, locales=DATE_LOCALES, formats=DATE_FORMATS):
    """`n` (human text, ISO date) pairs for random dates in 1950-2049, each
    written in a random CLDR locale and format. Two-digit years ("d/M/yy",
    some short formats) are read in the window 1950-2049 (the POSIX pivot),
    which is the date range. Numeric dates are day-first everywhere except
    en_US, whose month-first short form ("3/4/21") would make "3/4/21" mean
    two dates; en_US therefore writes its medium form instead of the short."""
    rng = random.Random(seed)
    span = (DATE_END - DATE_START).days
    pairs = []
    for _ in range(n):
        date = DATE_START + datetime.timedelta(days=rng.randrange(span + 1))
        locale, pattern = rng.choice(locales), rng.choice(formats)
        if locale == "en_US" and pattern in ("short", "d/M/yy"):
            pattern = "medium"
        pairs.append((human_date(date, locale, pattern), date.isoformat()))
    return pairs


def date_splits(n_train=20000, n_val=1000, n_test=1000, seed=0):
    """Fixed train/val/test date sets (disjoint seeds; repeats across sets are possible but rare)."""
    return (make_dates(n_train, seed=seed), make_dates(n_val, seed=seed + 10_000),
            make_dates(n_test, seed=seed + 20_000))
