"""PairRanker training: pair sampling, losses, augmentation, LoRA, the trainer and compact exports."""
