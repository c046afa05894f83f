"""Config of the `sparsegpt` method."""

from __future__ import annotations

from pydantic import Field, model_validator

from prunekit.errors import PrunekitError
from prunekit.llm.config import OneShotConfig


class SparseGPTConfig(OneShotConfig):
    """SparseGPT: masks chosen from w^2 / [H^-1]_cc per column block, remaining weights updated (OBS)."""

    blocksize: int = Field(
        128, ge=1, description="Columns per lazy-update block; unstructured masks are chosen per block."
    )
    percdamp: float = Field(
        0.01,
        gt=0.0,
        le=1.0,
        description="Hessian dampening as a fraction of mean(diag H); x10 retries on Cholesky failure.",
    )

    @model_validator(mode="after")
    def _blocksize_fits_nm(self) -> SparseGPTConfig:
        nm = self.nm
        if nm is not None and self.blocksize % nm.m:
            raise PrunekitError(f"blocksize {self.blocksize} must be a multiple of M={nm.m} for pattern {nm.name}")
        return self
