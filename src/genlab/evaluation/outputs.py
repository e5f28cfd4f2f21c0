"""The files evaluate@<model> leaves in its folder for compare to line up, and the seed of the samples shown:
the interface between the two stages (a change here reruns both)."""

GRID_FILE = "grid_reconstructions.npy"  # the comparison's row for an encoder: the grid images rebuilt
SAMPLES_FILE = "grid_samples.npy"  # the comparison's row for a generator: samples from a fixed seed
RESTORATION_GRID_FILE = "restoration_grid.npz"  # per task: the grid images original, degraded, restored
RESTORATION_DETAILS_FILE = "restoration.json"  # every restoration measure, per class and subgroup included
SUMMARY_FILE = "summary.json"  # the model's run, family, likelihood kind, diagnosis and settings
SAMPLE_SEED = 0
