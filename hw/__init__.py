"""The product's code, one small module per idea; `common.py` (beside the notebooks) re-exports the public names.

    core        paths, errors, atomic writes, seeding, the device
    precision   the compute precision and memory layout per machine, the machine in words
    data        readers of Tiny ImageNet-200 and the moon set, in-memory sets, splits
    synthetic   stand-ins in the same on-disk layouts (the demo profile and the tests)
    augment     augmentation on whole batches of tensors
    models      the classifier, the U-Net, the U-Net on the classifier's backbone
    metrics     IoU / Dice / pixel accuracy, top-k, bootstrap intervals
    evaluation  the two tasks (targets, loss, metrics), a batch brought to the input, `predict`, `evaluate`
    training    TrainConfig, one training step, `fit`, the time estimate before it
    checkpoints self-describing checkpoints: save, load, preprocess
    pipeline    recipes per profile, the notebooks' set-up and their train-or-reuse step, final results
    plots       figures, tables and widgets for the notebooks
"""
