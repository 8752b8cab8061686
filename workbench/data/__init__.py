"""Image decoding rules and dataset readers (COCO instances, ImageFolder) plus the shapes generator."""

from __future__ import annotations

from workbench.data.coco import CocoAnnotation, CocoDataset, CocoImage, coco_annotation_to_mask, load_coco
from workbench.data.imagefolder import IMAGE_EXTENSIONS, ImageFolderDataset, is_image_file, load_imagefolder
from workbench.data.images import decode_image, format_pixel_count, read_image_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "CocoAnnotation",
    "CocoDataset",
    "CocoImage",
    "ImageFolderDataset",
    "coco_annotation_to_mask",
    "decode_image",
    "format_pixel_count",
    "is_image_file",
    "load_coco",
    "load_imagefolder",
    "read_image_size",
]
