"""Fine-tuning of an already pruned model (masks attached, or structurally smaller), optionally distilled."""
