"""Model modules only: base presets, Decoupled LoRA Control, the two concatenation baselines, the plain base."""

from .concat import ChannelConcatTransformer, SpatialConcatTransformer
from .dlc import ControlLink, One4DTransformer, default_link_layers
from .factory import ARCHITECTURES, build_model, compile_repeated_blocks
from .presets import PRESETS, TEXT_TOKENS, build_base_transformer, cast_keeping_fp32_modules, preset_config
from .state import export_rgb_lora, load_trainable_state, save_trainable_state
from .wan_base import BASE_ARCHITECTURE, WanBaseModel

__all__ = [
    "PRESETS", "TEXT_TOKENS", "build_base_transformer", "cast_keeping_fp32_modules", "preset_config",
    "One4DTransformer", "ControlLink", "default_link_layers",
    "ChannelConcatTransformer", "SpatialConcatTransformer", "ARCHITECTURES", "build_model", "compile_repeated_blocks",
    "save_trainable_state", "load_trainable_state", "export_rgb_lora", "WanBaseModel", "BASE_ARCHITECTURE",
]
