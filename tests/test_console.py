"""A console a person can read: a stage's output has no TensorFlow start-up lines and one progress bar per
training, its errors still stand out, and GENLAB_VERBOSE=1 brings the per-epoch lines back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from genlab.runtime import console

NOISY = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
         "I0000 00:00:1796156636.646922   18517 port.cc:153] oneDNN custom operations are on. You may see ...",
         "I0000 00:00:1796156636.647912   18517 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
         "GPU will not be used.",
         "E0000 00:00:1796156361.842219    4381 node_def_util.cc:682] NodeDef mentions attribute "
         "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset; ...>"]
CUDA = "E0000 00:00:1796156361.8 4381 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error (303)"

# a stage in miniature: the real run_stage, a real training (keras, tf.data), then the user's mistake
STAGE = textwrap.dedent("""
    import genlab.stages  # first, as `python -m genlab.stages.<stage>` imports it
    import numpy as np
    from genlab.training import fit
    from genlab.data.sources import DataError
    from genlab.models.registry import build_model
    from genlab.config.params import FAMILY_PARAMS
    from genlab.runtime.stage import run_stage

    def main(argv):
        config = FAMILY_PARAMS["autoencoder"](family="autoencoder", hidden_units=(8,), latent_dim=2)
        model = build_model(config, (8, 8))
        images = np.random.default_rng(0).random((64, 8, 8)).astype("float32")
        fit.fit(model, images, images[:16], epochs=3, batch_size=16, name="tiny")
        raise DataError("data/raw/mine.npz: NaN pixels in 3 images")

    run_stage(main)
""")


def test_the_noise_is_recognised_and_nothing_else():
    noise = console.noise_pattern(gpu_present=False)
    assert all(noise.search(line) for line in NOISY + [CUDA])
    assert not noise.search("E0000 12:00 cuda_executor.cc:1] out of memory allocating 8 GiB")
    assert not noise.search("error (DataError): data/raw/mine.npz: NaN pixels")
    assert not console.noise_pattern(gpu_present=True).search(CUDA)  # with a GPU, a failed CUDA start is news


def run(script: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL",
                                                                                  console.VERBOSE_ENV)}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=environment | env)


def test_a_stage_shows_a_progress_bar_and_its_error_without_tensorflow_noise():
    done = run(STAGE)
    assert done.returncode == 2
    assert "error (DataError): data/raw/mine.npz: NaN pixels in 3 images" in done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert not [line for line in lines if console.noise_pattern().search(line)]
    assert not [line for line in lines if line.startswith(("I0000", "W0000", "E0000", "Epoch "))]
    verbose = run(STAGE, GENLAB_VERBOSE="1")
    assert verbose.returncode == 2 and "error (DataError)" in verbose.stderr
    assert "Epoch 3/3" in verbose.stdout  # Keras's own lines, on request


def test_links_open_the_runs_table_in_the_model_training_view():
    from genlab import tracking

    assert tracking.runs_url("http://127.0.0.1:5000/", "7") == \
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"


def test_make_run_keeps_dvc_s_stage_names_warnings_and_errors_and_leaves_out_its_routine():
    routine = ["> python -m genlab.stages.train vae --data data/prepared --out models/vae", "",
               "Updating lock file 'dvc.lock'", "Generating lock file 'dvc.lock'",
               "Use `dvc push` to send your updates to remote storage."]
    kept = ["Running stage 'train@vae':", "Stage 'prepare' didn't change, skipping",
            "vae: 200 epochs in 31.7s, val loss 23.7", "ERROR: failed to reproduce 'train@vae': failed to run",
            "WARNING: 'data/raw' is empty."]
    assert all(console.DVC_ROUTINE.search(line) for line in routine)
    assert not any(console.DVC_ROUTINE.search(line) for line in kept)


def test_make_run_s_dvc_wrapper_returns_dvc_s_exit_status(tmp_path):
    script = "import sys; from genlab.runtime import console; sys.exit(console.dvc(sys.argv[1:]))"
    outside = subprocess.run([sys.executable, "-c", script, "status"], cwd=tmp_path, capture_output=True, text=True)
    assert outside.returncode != 0 and "not inside of a DVC repository" in outside.stderr  # DVC's error, shown
    assert subprocess.run([sys.executable, "-c", script, "--version"], capture_output=True).returncode == 0


def test_the_summary_cuts_a_long_answer_at_a_clause():
    from genlab.runtime.summary import shortened

    assert shortened("**Best sample quality: vae** (vae): FID 4.5.") == "Best sample quality: vae (vae): FID 4.5."
    long = "Class balance: " + "; ".join(f"model_{index} (+0.{index:03d})" for index in range(40))
    cut = shortened(long, width=80)
    assert len(cut) <= 84 and cut.endswith(" ...") and long.startswith(cut.removesuffix(" ..."))
