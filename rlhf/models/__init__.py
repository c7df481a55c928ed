"""Loading models from Hugging Face folders and the batched forwards every role shares."""
