"""``python -m album_pipeline.training`` (under torchrun or alone): see ``album_pipeline.training.entry``."""

from album_pipeline.training.entry import main

if __name__ == "__main__":
    raise SystemExit(main())
