"""Turn user-facing specs into objects: models (`HF folder`, `timm:NAME`, `module:function`), checkpoints, data
(models.py), and the output folders of `prunekit prune` back into models (pruned.py: `load`, `load_pruned`).

Loading never unpickles: checkpoints are safetensors or `torch.load(weights_only=True)`; nothing is downloaded
(`timm:NAME` builds the architecture with random weights; load trained weights with a checkpoint).
"""

from prunekit.specs.models import (
    DATA_SPEC_FORMS,
    MODEL_SPEC_FORMS,
    LoadedModel,
    data_example_inputs,
    hf_example_inputs,
    load_data,
    load_model,
    load_weights,
    parse_shape,
    read_checkpoint,
)
from prunekit.specs.pruned import PRUNED_FOLDER, load, load_pruned, read_plan

__all__ = [
    "DATA_SPEC_FORMS", "MODEL_SPEC_FORMS", "PRUNED_FOLDER", "LoadedModel", "data_example_inputs",
    "hf_example_inputs", "load", "load_data", "load_model", "load_pruned", "load_weights", "parse_shape",
    "read_checkpoint", "read_plan",
]
