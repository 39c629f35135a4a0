"""A small multi-task mixture-of-experts ViT (after M3ViT / Edge-MoE / I-ViT).

``data`` generates seeded synthetic scenes with per-pixel segmentation and
depth targets, ``model`` builds the integer graph of one task's static
pathway (task-level expert routing), ``evaluate`` scores mIoU, pixel accuracy
and depth RMSE; ``accel.training.moe_vit`` trains it. ``weights/`` holds the
shipped integer weights (``moe.npz``, and the dense baseline ``dense.npz``)
and ``metrics.json``.
"""
