"""Training: the GAN training loop (pretrain and finetune)."""
