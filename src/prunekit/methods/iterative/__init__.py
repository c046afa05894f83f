"""The `iterative` method: prune in steps, fine-tune after each, stop before an accuracy-drop budget is exceeded."""
