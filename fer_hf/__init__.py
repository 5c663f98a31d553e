"""fer-hf: facial-expression recognition on the Hugging Face stack.

Importing the package registers the FER CNN with the transformers Auto classes, so
`AutoModelForImageClassification.from_pretrained(folder)` and `pipeline("image-classification")`
load our models without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from .model.configuration_fer import FER2013_LABELS, FER_CNN_VARIANTS, FerConfig
from .model.image_processing_fer import FerImageProcessor
from .model.modeling_fer import FerCNNForImageClassification, FerCNNModel, FerCNNPreTrainedModel

AutoConfig.register(FerConfig.model_type, FerConfig, exist_ok=True)
AutoModelForImageClassification.register(FerConfig, FerCNNForImageClassification, exist_ok=True)
AutoImageProcessor.register(FerConfig, image_processor_classes={"pil": FerImageProcessor}, exist_ok=True)

# Saved folders carry these three files and an `auto_map`, so users without fer_hf can load them
# with `trust_remote_code=True`.
FerConfig.register_for_auto_class()
FerCNNForImageClassification.register_for_auto_class("AutoModelForImageClassification")
FerImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "FER2013_LABELS",
    "FER_CNN_VARIANTS",
    "FerCNNForImageClassification",
    "FerCNNModel",
    "FerCNNPreTrainedModel",
    "FerConfig",
    "FerImageProcessor",
]
