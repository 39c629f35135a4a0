"""A small CenterNet-style detector with deformable depthwise convolutions (after CoDeNet).

``data`` generates seeded synthetic detection images and their CenterNet
targets, ``model`` builds the integer network as an accel Graph (variants
``regular``, ``bilinear`` and ``square``), ``evaluate`` decodes its output and
scores AP50; ``accel.training.deform_det`` trains it. ``weights/`` holds the
shipped integer weights of each variant and ``metrics.json``.
"""
