"""Vision encoders: frames -> patch features, behind one interface."""

from lightning_viper.encoders.base import VisionEncoder
from lightning_viper.encoders.clip import ClipEncoder
from lightning_viper.encoders.siglip import SiglipEncoder, siglip_so400m

__all__ = ["ClipEncoder", "SiglipEncoder", "VisionEncoder", "siglip_so400m"]
