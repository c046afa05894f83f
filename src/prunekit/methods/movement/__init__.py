"""Movement pruning (Sanh, Wolf & Rush 2020): learned scores decide the mask while fine-tuning (hard or soft)."""
