"""FusionReID model: backbones (``model.backbones``), fusion modules (``model.fusion``), heads, builder."""
from .backbones import WeightsError
from .build import build_model
from .fusion import HeterogenousTransmissionModule, LocalRefinementUnit, MutualFusionUnit, SharedEncodingUnit
from .fusion_reid import FEATURE_NAMES, FusionReID
from .heads import FeatureOutput, HeadOutput
from .pooling import GeneralizedMeanPooling

__all__ = ["FEATURE_NAMES", "FeatureOutput", "FusionReID", "GeneralizedMeanPooling", "HeadOutput",
           "HeterogenousTransmissionModule", "LocalRefinementUnit", "MutualFusionUnit", "SharedEncodingUnit",
           "WeightsError", "build_model"]
