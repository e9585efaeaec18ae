"""The flat metric names of an evaluation: one home, read by metrics.json, MLflow, Dagster metadata, the floors
and the champion gate.

Conventions (every name is a valid MLflow metric key):
- ``NAME`` is the generated covers' value over all genres; ``NAME/GENRE`` the value for one genre.
- ``heldout/NAME`` (and ``heldout/NAME/GENRE``) is the same metric computed on the real held-out (test split)
  covers in place of generated ones, judged against the same reference (the train split) in the same way, so
  every generated value has the real covers' own value beside it.
- Distances follow ``frechet``'s rule: ``fid``/``kid`` only on Inception features, ``fd_{features}`` /
  ``kd_{features}`` on any other (e.g. ``fd_genre_classifier``).
"""

from __future__ import annotations

HELDOUT_PREFIX = "heldout/"

GENRE_ACCURACY = "genre_accuracy"  # the independent classifier's accuracy on the intended genre
D_GENRE_ACCURACY = "d_genre_accuracy"  # the discriminator's own genre head (the seed reported 94.6% / 22.8%)
PRECISION = "precision"  # Kynkaanniemi et al. 2019, k-NN manifolds of the reference features
RECALL = "recall"
DENSITY = "density"  # Naeem et al. 2020
COVERAGE = "coverage"
DIVERSITY = "diversity"  # within-genre mean pairwise feature distance over the real covers' (1.0 = as varied)
MS_SSIM = "ms_ssim"  # within-genre mean MS-SSIM of pairs (higher = more alike; compare with heldout/ms_ssim)
NEAR_COPY_SHARE = "near_copy_share"  # share closer to a training cover than almost any real test cover is
NN_DISTANCE_MEDIAN = "nn_distance_median"  # median distance to the nearest training cover

# The Frechet distance's names on the two feature spaces the pipeline uses (frechet.frechet_metric_name's rule);
# the champion gate's automatic primary metric is the first of them present.
FID = "fid"
FD_GENRE_CLASSIFIER = "fd_genre_classifier"

# Every metric reported overall, per genre and for the held-out covers beside the generated ones (the
# distances, named after their features, come on top: see ``frechet``).
JUDGED = (
    GENRE_ACCURACY,
    D_GENRE_ACCURACY,
    PRECISION,
    RECALL,
    DENSITY,
    COVERAGE,
    DIVERSITY,
    MS_SSIM,
    NEAR_COPY_SHARE,
    NN_DISTANCE_MEDIAN,
)

GENERATED_COUNT = "generated_count"
HELDOUT_COUNT = "heldout_count"
REFERENCE_COUNT = "reference_count"


def heldout(name: str) -> str:
    """The real held-out covers' value of metric ``name``."""
    return HELDOUT_PREFIX + name


def per_genre(name: str, genre: str) -> str:
    """Metric ``name`` restricted to one genre."""
    return f"{name}/{genre}"
