"""Everything the three notebooks share, in one import: `import common`.

The code lives in the small package `hw/` (one module per idea, listed in hw/__init__.py); this file only re-exports
its public names, so the notebooks, the tests and the scripts read `common.fit`, `common.unet`, ... The package
installs with `pip install .` (pyproject.toml) where a notebook runs outside this repository.
"""

from hw.core import (
    ROOT, INPUT_SIZE, DataError, CheckpointError, TrainingError, LANG_ENV, tr, data_root, shared_data, atomic_write,
    save_json, seed_everything, default_device, count_params, shown_path)  # noqa: F401
from hw.precision import (
    PRECISIONS, PRECISION_ENV, BF16_MIN_SPEEDUP, Precision, cpu_flags, cpu_name, native_bf16, machine,
    timed, evaluation_precision, compute_precision, environment)  # noqa: F401
from hw.data import (
    pil_to_rgb, resize, resize_uint8, tiny_folder, moon_folder, ImageSet, MaskSet, find_dataset,
    read_tiny_imagenet, read_moon, stratified_split, coverage_bins, MOON_SELECTION_FILE, moon_selection, moon_splits,
    BROKEN_BLACK, BROKEN_ROCK, MOON_TEST, MOON_VAL, MIN_MOON_FRAMES, MIN_IMAGES_PER_CLASS, data_places,
    missing_moon_error, load_datasets)  # noqa: F401
from hw.download import Archive, TINY_IMAGENET, download, tiny_imagenet_archive  # noqa: F401
from hw.synthetic import make_synthetic_tiny_imagenet, make_synthetic_moon  # noqa: F401
from hw.augment import (
    IMAGENET_MEAN, IMAGENET_STD, AugmentConfig, BatchAugment, preprocess_batch)  # noqa: F401
from hw.models import (
    BasicBlock, FlipTTA, ClassifierEncoder, UNetEncoder, AdaptedEncoder, BranchedEncoder, UNetDecoder,
    Classifier, SegmentationModel, unet, backbone_unet, load_backbone, with_weights, build_model)  # noqa: F401
from hw.metrics import (
    confusion_counts, seg_metrics, per_image_iou, micro_iou, paired_bootstrap_iou, topk_correct,
    best_threshold, bootstrap_iou, bootstrap_accuracy, ceiling_iou)  # noqa: F401
from hw.tasks import dice_loss, ClassificationTask, SegmentationTask  # noqa: F401
from hw.evaluation import (
    predict, evaluate, classification_results, segmentation_results, split_scores, held_out_scores,
    bn_refresh_probe)  # noqa: F401
from hw.training import (
    TrainConfig, run_key, train_step, to_device, fit, estimate_fit_time)  # noqa: F401
from hw.checkpoints import (
    CHECKPOINT_FORMAT, save_checkpoint, load_checkpoint, preprocess, weights_digest)  # noqa: F401
from hw.recipes import (
    CLASSIFIER_AUGMENT, NO_AUGMENT, BACKBONE_AUGMENT, LIGHT_AUGMENT, ModelRecipe, Recipe, CPU, PROFILES, NOTEBOOK_DATA,
    vary, recipe, resolve_profile)  # noqa: F401
from hw.pipeline import (
    Setup, setup, Runs, reusable, final_weights, train_or_reuse, fit_data, export_final, export_classifier,
    export_segmentation)  # noqa: F401
from hw.plots import (
    to_hwc, plot_history, plot_curves, plot_bars, plot_hist, plot_confusion, plot_top5, formatted, stage_table, signed,
    interval,
    report_formats, save_figure, show_images, overlay_errors, show_segmentation, LivePlot, caption, browse)  # noqa: F401
from hw import report  # noqa: F401,E402  (the notebooks' tables, figures and sentences)
