"""Model: the AC-GAN networks, sampling and checkpoints."""
