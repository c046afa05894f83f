"""`llm_depth`: drop whole transformer blocks whose input and output are most alike (angular distance)."""
