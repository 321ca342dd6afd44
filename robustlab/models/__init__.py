"""Model plugins: any PyTorch classifier becomes a :class:`RobustModel` with an input contract."""

from .loaders import MODEL_PLUGINS, PREFIXES, LoadOptions, load_model
from .wrapper import ModelInfo, RobustModel

__all__ = ["MODEL_PLUGINS", "PREFIXES", "LoadOptions", "ModelInfo", "RobustModel", "load_model"]
