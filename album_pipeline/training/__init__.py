"""Training: packed-data loading and the GAN training loop (pretrain and finetune)."""
