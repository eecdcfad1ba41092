"""The GPT model, the char dataset, the trainer and the presets (never imports evo)."""
