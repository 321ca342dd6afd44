"""Model plugins: any PyTorch classifier becomes a :class:`RobustModel` with an input contract."""

from .loaders import MODEL_LOADERS, MODEL_PLUGINS, LoadOptions, ModelLoader, load_model, model_loader, prefixes
from .wrapper import ModelInfo, RobustModel

__all__ = ["MODEL_LOADERS", "MODEL_PLUGINS", "LoadOptions", "ModelLoader", "model_loader", "prefixes", "ModelInfo", "RobustModel", "load_model"]
