"""Run-config presets: ``full`` is the seed's scale (the Config defaults), ``demo`` fits 2 CPU cores in minutes.

A profile is plain Dagster run config (``{"ops": {asset_name: {"config": {...}}}}``) so the same dictionaries
serve the CLI, the Dagster UI's launchpad and the tests.
"""

from __future__ import annotations

import copy
import json

# The demo's emulators serve this many albums per genre and these archives (see album_pipeline.testing.emulators).
DEMO_ALBUMS_PER_GENRE = 240
DEMO_RELEASE_GROUPS_PER_GENRE = 100
DEMO_ARCHIVE_LETTERS = ("a", "b")
DEMO_IMAGES_PER_ARCHIVE = 1500

# Tuned on the emulators' covers (BENCHMARKS.md): narrower networks, batch 64.
_DEMO_GAN = {
    "batch_size": 64,
    "lr_generator": 2e-4,
    "checkpoint_every": 100,
    "log_every": 50,
}

# The techniques the ablation chose (BENCHMARKS.md, "Training techniques"), in both stages: DiffAugment on
# everything D sees (diversity 0.40 -> 0.59 of real, 3 seeds) and, on top of it, MSGAN's mode-seeking term
# with D's learning rate at G's (coverage 0.017 -> 0.049 of real, fd_genre_classifier 13.0 -> 12.0, 3 seeds
# against 2; genre accuracy 97.6% against 98.7%). Augmentation is what lets D learn at G's rate without
# winning outright; without it the seed's 5e-5 was needed (BENCHMARKS.md, "How the demo preset was chosen").
_TECHNIQUES = {"augment": "color,translation,cutout", "mode_seeking_weight": 1.0, "lr_discriminator": 2e-4}

PROFILES: dict[str, dict] = {
    # Every stage at its Config defaults (5 genres x ~1,000 albums, 250k unlabelled images, 64x64, seed widths),
    # with the techniques the ablation chose.
    "full": {
        "ops": {
            "pretrained_generator": {"config": dict(_TECHNIQUES)},
            # The genre weight as in the demo (below): the seed's 10 draws one cover per genre.
            "finetuned_generator": {"config": {**_TECHNIQUES, "genre_loss_weight": 1.0}},
        }
    },
    "demo": {
        "ops": {
            "napster_covers": {
                "config": {"albums_per_genre": DEMO_ALBUMS_PER_GENRE, "api_requests_per_second": 20.0}
            },
            # MusicBrainz's real limit (1 request/s) holds in the demo too: about 20 s of searches (excluded
            # secondary types mean about 3 result pages a tag instead of 2).
            "musicbrainz_covers": {"config": {"albums_per_genre": DEMO_RELEASE_GROUPS_PER_GENRE}},
            "labeled_manifest": {"config": {"min_covers_per_genre": 100}},
            "omacir_archives": {"config": {"archives": list(DEMO_ARCHIVE_LETTERS), "max_images": 3000}},
            "unlabeled_manifest": {"config": {"max_images": 3000}},
            # Unlabelled covers have no genre, so pretraining learns covers in general; binding styles to
            # genre indices here left some runs with every style on the wrong genre (BENCHMARKS.md).
            # 150 + 550 steps (45k images) keep the demo inside 10 minutes on a 2-core AVX2 CPU in fp32.
            "pretrained_generator": {
                "config": {
                    **_DEMO_GAN,
                    **_TECHNIQUES,
                    "steps": 150,
                    "generator_width": 128,
                    "discriminator_width": 32,
                    "genre_loss_weight": 0.0,
                }
            },
            "finetuned_generator": {
                "config": {
                    **_DEMO_GAN,
                    **_TECHNIQUES,
                    "steps": 550,
                    "fake_genre_weight_labelled": 0.0,
                    # AC-GAN's own weight: at the seed's 10 the genre term drowns the adversarial one and G
                    # draws one cover per genre; at 1, diversity 0.68 against 0.59 of real covers' (2 seeds,
                    # BENCHMARKS.md), genre accuracy 99% against 100%.
                    "genre_loss_weight": 1.0,
                }
            },
            "genre_classifier": {"config": {"epochs": 8}},
            "generator_evaluation": {
                "config": {"samples_per_genre": 200, "feature_extractor": "genre_classifier"}
            },
        }
    },
}


def run_config_for(profile: str) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return copy.deepcopy(PROFILES[profile])


def uses_inception(run_config: dict) -> bool:
    evaluation = run_config.get("ops", {}).get("generator_evaluation", {}).get("config", {})
    return evaluation.get("feature_extractor", "inception") == "inception"


def apply_overrides(run_config: dict, overrides: list[str]) -> dict:
    """Set ``asset.field=value`` entries (value parsed as JSON, else kept as a string) on a run config."""
    for override in overrides:
        target, separator, raw_value = override.partition("=")
        asset, dot, field = target.partition(".")
        if not separator or not dot or not asset or not field:
            raise ValueError(f"override {override!r} is not of the form asset.field=value")
        try:
            value = json.loads(raw_value)
        except json.JSONDecodeError:
            value = raw_value
        run_config.setdefault("ops", {}).setdefault(asset, {}).setdefault("config", {})[field] = value
    return run_config
