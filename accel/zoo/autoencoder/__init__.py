"""CMS HGCAL ECON-T-style autoencoder (variant 8x8_c8_S2): 48 trigger cells -> 16-value latent.

``geometry`` models the hexagonal module, ``data`` generates synthetic showers,
``accel.training.autoencoder`` trains it; ``weights/`` holds the shipped integer
encoder weights, the float decoder and the quality metrics.
"""
