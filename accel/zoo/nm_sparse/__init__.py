"""N:M sparse networks trained with bidirectional weight pruning (after SAT's BDWP).

``data`` holds scikit-learn's 8x8 handwritten digits with a seeded split,
``model`` the two integer networks (an MLP and a small CNN) as accel Graphs,
``accel.training.nm_sparse`` trains them; ``weights/`` holds the shipped integer
weights of every (net, pattern, method) row and ``metrics.json``.
"""
