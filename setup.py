"""lapseg: JAX/Flax decoders that recover full resolution from coarse features."""

import setuptools

RUNTIME = [
    "jax>=0.10",
    "flax>=0.12",
    "optax",
    "orbax-checkpoint",
    "tensorflow-datasets",
    "grain",
    "numpy",
    "chex",
    "ml_collections",
    "pillow",
    "tensorboardX",  # TensorBoard event files without TensorFlow
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
