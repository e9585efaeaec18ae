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

# The architecture the measurements chose (BENCHMARKS.md, "Architectures"): the projection GAN with plain
# blocks, which trains as fast as the seed's network on an AVX2 CPU in fp32 (the residual blocks are 5x
# slower at these widths) and, on the demo's data and length, doubles precision and coverage (0.38 and 0.18
# of real against 0.18 and 0.07) with every genre recognised. `architecture=seed` (one setting away) trains
# the seed's AC-GAN instead, with the seed-only genre weights below.
_ARCHITECTURE = {"architecture": "projection", "blocks": "plain"}
# The techniques the ablations chose, in both stages: DiffAugment on everything D sees (issue 13: diversity
# 0.40 -> 0.59 of real for the seed, 3 seeds) with D's learning rate at G's. MSGAN's mode-seeking term, which
# issue 13 chose for the seed, is off: on the projection GAN it lowered precision from 0.38 to 0.26 of real and
# raised fd_genre_classifier from 5.5 to 10.3, painting texture that counts as variety.
_TECHNIQUES = {"augment": "color,translation,cutout", "lr_discriminator": 2e-4}

PROFILES: dict[str, dict] = {
    # Every stage at its Config defaults (5 genres x ~1,000 albums, 250k unlabelled images, 64x64, the seed's
    # widths), with the demo's architecture and techniques.
    "full": {
        "ops": {
            "pretrained_generator": {"config": {**_ARCHITECTURE, **_TECHNIQUES}},
            # The seed's genre weight as in the demo (below), for architecture=seed.
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
            # For architecture=seed: unlabelled covers have no genre, so pretraining learns covers in general;
            # binding styles to genre indices here left some runs with every style on the wrong genre.
            # 150 + 550 steps (45k images) keep the demo inside 10 minutes on a 2-core AVX2 CPU in fp32.
            "pretrained_generator": {
                "config": {
                    **_DEMO_GAN,
                    **_ARCHITECTURE,
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
                    # For architecture=seed (the projection GAN has no genre loss): AC-GAN's own weight. At the
                    # seed's 10 the genre term drowns the adversarial one and G draws one cover per genre; at 1,
                    # diversity 0.68 against 0.59 of real covers' (2 seeds, BENCHMARKS.md), genre accuracy 99%
                    # against 100%.
                    "fake_genre_weight_labelled": 0.0,
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
