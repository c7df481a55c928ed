"""DeepSpeed-backed training state shared by every trained role."""
