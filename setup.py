"""lapseg: JAX/Flax decoders that recover full resolution from coarse features."""

import setuptools

# Every package lapseg imports. Minimum versions are those the test suite runs against where
# lapseg uses their newer APIs (jax.set_mesh/AxisType, flax linen of 0.12, grain's top-level
# `grain.MapDataset`/`grain.checkpoint`, orbax's `args` API, tfds ArrayRecord data sources).
RUNTIME = [
    "jax>=0.10",
    "flax>=0.12",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12",
    "tensorflow-datasets>=4.9.10",
    "grain>=0.2.18",
    "numpy",
    "scipy",  # partial eigensolver for the PCA fits (lapseg.bases)
    "ml_dtypes",  # bfloat16 tensors in .safetensors files
    "chex",
    "ml_collections",
    "absl-py",
    "etils",
    "pillow",
    "safetensors",
    "huggingface_hub>=0.34",  # hf://ORG/REPO backbone weights (lapseg.backbones.hub); `hf` CLI
    "tensorboardX",  # TensorBoard event files without TensorFlow (always written)
    "flatbuffers",  # jax.export's serialization (`lapseg export`, lapseg.export)
]

setuptools.setup(
    name="lapseg",
    version="0.1.0",
    description="Semantic-segmentation decoders (FCN, LRR, RefineNet, PSPNet, ICNet, GCN, "
    "DUpsampling, DSRL) in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["lapseg", "lapseg.*"]),
    install_requires=RUNTIME,
    extras_require={
        # Never torch here: parity tests skip without it, CI installs it separately.
        "test": ["pytest", "pytest-xdist", "nbclient", "nbformat", "ipykernel", "matplotlib"],
        "torch": ["torch"],
        "tf": ["tensorflow"],
    },
    entry_points={"console_scripts": ["lapseg=lapseg.cli:main"]},
)
