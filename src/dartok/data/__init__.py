"""Datasets for dartok and the registry that names them.

* :mod:`.registry`: :func:`register_dataset`, :func:`dataset_info`, :func:`list_datasets`,
  :func:`create_dataset`, :func:`build_dataset` (a run's datasets from its options),
  :func:`infer_dataset`.
* :mod:`.folder`: your own images: ImageFolder layout, class map, held-out split, stratified
  subsets, :func:`~.folder.load_image` (16-bit images, unreadable files named).
* :mod:`.fashion_mnist`: the Fashion-MNIST IDX reader, Fashion-MNIST, Cluttered Fashion-MNIST.
* :mod:`.seg_folder`: your segmentation data (``images/`` + ``annotations/`` label PNGs, 255 = ignore).
* :mod:`.video`: Moving Cluttered Fashion-MNIST, :class:`VideoFolderDataset`.
* :mod:`.transforms`: batches to a model's input size, PIL transforms for timm datasets.

Importing the package registers the built-in datasets. ``dartok.data`` keeps every name the
former ``dartok/data.py`` module exported.
"""
from .registry import (  # noqa: F401
    DataConfig,
    DatasetInfo,
    build_dataset,
    create_dataset,
    dataset_info,
    infer_dataset,
    list_datasets,
    num_classes_of,
    register_dataset,
    square_side,
    unregister_dataset,
)
from .fashion_mnist import (  # noqa: F401
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    ClutteredFashionMNIST,
    ClutteredFashionMNISTSegmentation,
    FashionMNISTDataset,
    load_fashion_mnist,
    read_idx,
)
from . import seg_folder, video  # noqa: F401,E402  (register your segmentation folders and the video datasets)
from .seg_folder import IGNORE_INDEX, SegmentationFolder  # noqa: F401,E402
from .video import MovingClutteredFashionMNIST, VideoFolderDataset, create_video_dataset  # noqa: F401,E402

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES",
    "ClutteredFashionMNIST",
    "ClutteredFashionMNISTSegmentation",
    "FashionMNISTDataset",
    "create_dataset",
    "load_fashion_mnist",
    "read_idx",
    # registry
    "DataConfig",
    "DatasetInfo",
    "build_dataset",
    "dataset_info",
    "infer_dataset",
    "list_datasets",
    "register_dataset",
    "unregister_dataset",
    # segmentation
    "IGNORE_INDEX",
    "SegmentationFolder",
    # video
    "MovingClutteredFashionMNIST",
    "VideoFolderDataset",
    "create_video_dataset",
]
