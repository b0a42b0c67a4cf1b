"""The names a user may choose from, in one torch-free place.

The CLI builds its `--help` from these before anything heavy is imported, and the engine checks its inputs
against the same tuples, so an option is added in one line. What each name means stays with the code that
implements it (named beside each).
"""

PROFILES = ("paper", "fast", "official")  # evaluate.PROFILES: what each profile sets
LPIPS_NETS = ("alex", "vgg")  # perceptual.weights.BACKBONE_FILES
RESIZE_POLICIES = ("stretch", "center-crop", "pad")  # data.transforms.fit_square
FEATURES = ("auto", "lpips", "inception", "eval-model")  # evaluate: features for FID and PRDC
PRDC_MODES = ("naeem", "ppa")  # metrics.prdc
CACHE_DTYPES = ("float32", "float16")  # evaluate: precision of the target embeddings
MAP_METHODS = ("umap", "pca")  # embedding_map.compute_map
NOISE_MODES = ("random", "const", "none")  # models.stylegan2 and models.stylegan2_ada synthesis noise
