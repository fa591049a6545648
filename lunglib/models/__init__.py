"""Models: the course CNN, the U-Net, hand-made outline features, saved bundles, shipped models.

Importing this package is cheap; Keras loads when a model builder is first used.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "bundle": ["BUNDLE_FORMAT_VERSION", "BundleFormatError", "bundle_paths", "load_bundle",
                   "save_bundle"],
        "cnn": [
            "HEADS", "build_cnn", "convolutionalize", "feature_size", "max_conv_layers",
            "output_stride",
        ],
        "features": ["FEATURE_NAMES", "outline_features"],
        "pretrained": ["PRETRAINED_MODELS", "WEIGHTS_DIR", "load_pretrained", "model_card"],
        "unet": ["build_unet", "dice_bce_loss", "dice_coef", "iou_coef", "resize_unet"],
    },
)
